//! Pipeline text → statements. Flink DDL (`CREATE TABLE` with `WATERMARK`, `PRIMARY KEY ...
//! NOT ENFORCED`, `WITH`), `SET`, and window table functions are parsed here; queries are parsed
//! by sqlparser (DataFusion's parser) from the same token stream, so every error position is a
//! position in the pipeline file.

use std::collections::BTreeMap;

use datafusion::sql::sqlparser::ast::{BinaryOperator, Expr, Query};
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::parser::{Parser, ParserError};
use datafusion::sql::sqlparser::tokenizer::{Location, Span, Token, TokenWithSpan, Tokenizer};
use flowline_core::plan::WindowKind;
use flowline_core::{
    ColumnDef, ComputedColumn, ComputedExpr, Error, Result, TableDef, WatermarkDef,
};

use crate::types::{interval_ms, parse_column_type};

/// A parsed pipeline file.
#[derive(Debug, Clone)]
pub struct PipelineDef {
    /// `SET 'key' = 'value'` settings, keys lower-cased.
    pub settings: BTreeMap<String, String>,
    /// Line of each setting's `SET`, for error messages.
    pub setting_lines: BTreeMap<String, u64>,
    pub tables: Vec<TableDef>,
    /// Views and inserts, in file order.
    pub statements: Vec<Statement>,
    /// Window table function calls, replaced in the queries by references to `TvfCall::name`.
    pub tvfs: Vec<TvfCall>,
    /// `FOR SYSTEM_TIME AS OF` clauses, removed from the queries (which then hold plain joins).
    pub temporal: Vec<TemporalRef>,
}

/// `JOIN table FOR SYSTEM_TIME AS OF qualifier.column [AS] alias`: the join with `table` is
/// temporal, at the time in `column` of the other input. The query reads relation `name`
/// instead of `table` (a view of it), so the planner knows exactly which relation is joined
/// `AS OF`.
#[derive(Debug, Clone, PartialEq)]
pub struct TemporalRef {
    /// The generated relation in the query's place of `table`.
    pub name: String,
    pub table: String,
    pub column: String,
    pub line: u64,
    /// Index into [`PipelineDef::statements`] of the statement it appears in.
    pub statement: usize,
}

#[derive(Debug, Clone)]
pub enum Statement {
    View {
        name: String,
        query: Box<Query>,
        line: u64,
    },
    Insert {
        sink: String,
        query: Box<Query>,
        line: u64,
    },
}

impl Statement {
    pub fn line(&self) -> u64 {
        match self {
            Statement::View { line, .. } | Statement::Insert { line, .. } => *line,
        }
    }
}

/// `TABLE(TUMBLE(TABLE input, DESCRIPTOR(time_column), ...))`, as a generated relation `name`.
#[derive(Debug, Clone, PartialEq)]
pub struct TvfCall {
    pub name: String,
    pub input: String,
    pub time_column: String,
    pub kind: WindowKind,
    /// SESSION only: `PARTITION BY` columns; sessions are found per value of them.
    pub partition: Vec<String>,
    pub line: u64,
    /// Index into [`PipelineDef::statements`] of the statement it appears in.
    pub statement: usize,
}

impl PipelineDef {
    pub fn parse(text: &str) -> Result<PipelineDef> {
        let dialect = GenericDialect {};
        let tokens = Tokenizer::new(&dialect, text)
            .tokenize_with_location()
            .map_err(|e| Error::Syntax {
                message: e.message,
                line: e.location.line,
                column: e.location.column,
            })?;
        let mut def = PipelineDef {
            settings: BTreeMap::new(),
            setting_lines: BTreeMap::new(),
            tables: vec![],
            statements: vec![],
            tvfs: vec![],
            temporal: vec![],
        };
        let mut current = vec![];
        for tok in tokens {
            if tok.token == Token::SemiColon {
                def.statement(std::mem::take(&mut current))?;
            } else {
                current.push(tok);
            }
        }
        def.statement(current)?;
        Ok(def)
    }

    pub fn table(&self, name: &str) -> Option<&TableDef> {
        self.tables
            .iter()
            .find(|t| t.name.eq_ignore_ascii_case(name))
    }

    fn statement(&mut self, tokens: Vec<TokenWithSpan>) -> Result<()> {
        let Some(first) = tokens.iter().find(|t| !is_space(&t.token)).cloned() else {
            return Ok(());
        };
        let line = first.span.start.line;
        let tokens = crate::group_window::rewrite(tokens)?;
        let tokens = self.rewrite_tvfs(tokens)?;
        let tokens = self.rewrite_system_time(tokens)?;
        let mut p = Parser::new(&GenericDialect {}).with_tokens_with_locations(tokens);
        let loc = first.span.start;
        if p.parse_keyword(Keyword::SET) {
            let key = parse_key(&mut p).map_err(|e| syntax(e, loc))?;
            p.expect_token(&Token::Eq).map_err(|e| syntax(e, loc))?;
            let value = match p.next_token().token {
                Token::SingleQuotedString(s) | Token::Number(s, _) => s,
                Token::Word(w) => w.value,
                _ => return Err(syntax_at("expected a value after `=` in SET", loc)),
            };
            self.setting_lines.insert(key.to_ascii_lowercase(), line);
            self.settings.insert(key.to_ascii_lowercase(), value);
        } else if p.parse_keyword(Keyword::CREATE) {
            let _ = p.parse_keyword(Keyword::TEMPORARY);
            if p.parse_keyword(Keyword::TABLE) {
                let table = create_table(&mut p, line).map_err(|e| self.reloc(e, loc))?;
                if self.table(&table.name).is_some() {
                    return Err(Error::Plan(format!(
                        "line {line}: table `{}` is declared twice",
                        table.name
                    )));
                }
                self.tables.push(table);
            } else if p.parse_keyword(Keyword::VIEW) {
                let name = parse_name(&mut p).map_err(|e| syntax(e, loc))?;
                p.expect_keyword(Keyword::AS).map_err(|e| syntax(e, loc))?;
                let mut query = p.parse_query().map_err(|e| syntax(e, loc))?;
                name_field_accesses(&mut query);
                self.statements.push(Statement::View { name, query, line });
            } else if p.parse_keyword(Keyword::FUNCTION)
                || p.parse_keywords(&[Keyword::SYSTEM, Keyword::FUNCTION])
            {
                let _ = p.parse_keywords(&[Keyword::IF, Keyword::NOT, Keyword::EXISTS]);
                let name = parse_name(&mut p).map_err(|e| syntax(e, loc))?;
                p.expect_keyword(Keyword::AS).map_err(|e| syntax(e, loc))?;
                let class = match p.next_token().token {
                    Token::SingleQuotedString(s) => s,
                    _ => {
                        return Err(syntax_at(
                            "expected the function's class name in quotes",
                            loc,
                        ))
                    }
                };
                if p.parse_keyword(Keyword::LANGUAGE) {
                    let _ = p.next_token();
                }
                check_function(&name, &class, line)?;
            } else {
                let found = p.peek_token();
                return Err(syntax(
                    p.expected::<()>("TABLE, VIEW or FUNCTION after CREATE", found)
                        .unwrap_err(),
                    loc,
                ));
            }
        } else if p.parse_keywords(&[Keyword::INSERT, Keyword::INTO]) {
            let sink = parse_name(&mut p).map_err(|e| syntax(e, loc))?;
            let mut query = p.parse_query().map_err(|e| syntax(e, loc))?;
            name_field_accesses(&mut query);
            self.statements
                .push(Statement::Insert { sink, query, line });
        } else if p.parse_keywords(&[Keyword::BEGIN, Keyword::STATEMENT, Keyword::SET])
            || p.parse_keyword(Keyword::END)
        {
            // Flink's `BEGIN STATEMENT SET; ... END;`: every pipeline file already runs as one job.
        } else {
            let found = p.peek_token();
            return Err(syntax(
                p.expected::<()>(
                    "SET, CREATE TABLE, CREATE VIEW, CREATE FUNCTION, INSERT INTO or BEGIN \
                     STATEMENT SET",
                    found,
                )
                .unwrap_err(),
                loc,
            ));
        }
        let rest = p.peek_token();
        if rest.token != Token::EOF {
            return Err(syntax(
                p.expected::<()>("end of statement (`;`)", rest)
                    .unwrap_err(),
                loc,
            ));
        }
        Ok(())
    }

    fn reloc(&self, e: DdlError, loc: Location) -> Error {
        match e {
            DdlError::Parser(e) => syntax(e, loc),
            DdlError::Flowline(e) => e,
        }
    }

    /// Replaces each `TABLE(TUMBLE|HOP|...(...))` by a word token naming a generated relation.
    fn rewrite_tvfs(&mut self, tokens: Vec<TokenWithSpan>) -> Result<Vec<TokenWithSpan>> {
        let sig: Vec<usize> = (0..tokens.len())
            .filter(|&i| !is_space(&tokens[i].token))
            .collect();
        let mut out = Vec::with_capacity(tokens.len());
        let mut next = 0; // next index of `tokens` not yet copied
        let mut s = 0;
        while s < sig.len() {
            let at = |k: usize| sig.get(s + k).map(|&i| &tokens[i].token);
            let is_tvf = is_word(at(0), "TABLE")
                && at(1) == Some(&Token::LParen)
                && ["TUMBLE", "HOP", "CUMULATE", "SESSION"]
                    .iter()
                    .any(|w| is_word(at(2), w))
                && at(3) == Some(&Token::LParen);
            if !is_tvf {
                s += 1;
                continue;
            }
            let start = &tokens[sig[s]];
            let loc = start.span.start;
            let func = word(at(2)).unwrap_or_default().to_ascii_uppercase();
            // Find the closing parenthesis of the function call, then of TABLE(...).
            let mut depth = 0usize;
            let mut args: Vec<Vec<TokenWithSpan>> = vec![vec![]];
            let mut k = s + 3;
            loop {
                let Some(&i) = sig.get(k) else {
                    return Err(syntax_at(&format!("unclosed {func}(...)"), loc));
                };
                let t = &tokens[i];
                match t.token {
                    Token::LParen => {
                        depth += 1;
                        if depth > 1 {
                            args.last_mut().unwrap().push(t.clone());
                        }
                    }
                    Token::RParen => {
                        depth -= 1;
                        if depth == 0 {
                            break;
                        }
                        args.last_mut().unwrap().push(t.clone());
                    }
                    Token::Comma if depth == 1 => args.push(vec![]),
                    _ => args.last_mut().unwrap().push(t.clone()),
                }
                k += 1;
            }
            if sig.get(k + 1).map(|&i| &tokens[i].token) != Some(&Token::RParen) {
                return Err(syntax_at(
                    &format!("expected `)` closing TABLE({func}(...))"),
                    loc,
                ));
            }
            let end = sig[k + 1];
            let call = self.tvf_call(&func, args, loc)?;
            out.extend(tokens[next..sig[s]].iter().cloned());
            out.push(TokenWithSpan::new(
                Token::make_word(&call.name, None),
                Span::new(loc, tokens[end].span.end),
            ));
            self.tvfs.push(call);
            next = end + 1;
            s = sig.partition_point(|&i| i <= end);
        }
        out.extend(tokens[next..].iter().cloned());
        Ok(out)
    }

    /// Replaces each `table FOR SYSTEM_TIME AS OF [qualifier.]column [[AS] alias]` by
    /// `<generated relation> AS alias` (the alias defaulting to the table's name), recording it
    /// in [`PipelineDef::temporal`]; the binder makes the generated relation a view of `table`,
    /// so the planner finds exactly the relations joined `AS OF`.
    fn rewrite_system_time(&mut self, tokens: Vec<TokenWithSpan>) -> Result<Vec<TokenWithSpan>> {
        use datafusion::sql::sqlparser::keywords::{Keyword as K, RESERVED_FOR_TABLE_ALIAS};
        let sig: Vec<usize> = (0..tokens.len())
            .filter(|&i| !is_space(&tokens[i].token))
            .collect();
        let mut drop = vec![false; tokens.len()];
        let mut replace: BTreeMap<usize, Vec<Token>> = BTreeMap::new();
        let example =
            "`JOIN rates FOR SYSTEM_TIME AS OF o.order_time AS r ON o.currency = r.currency`";
        for s in 0..sig.len() {
            let at = |k: usize| sig.get(s + k).map(|&i| &tokens[i].token);
            if !(is_word(at(0), "FOR")
                && is_word(at(1), "SYSTEM_TIME")
                && is_word(at(2), "AS")
                && is_word(at(3), "OF"))
            {
                continue;
            }
            let loc = tokens[sig[s]].span.start;
            // The table name, right after JOIN (or FROM, or a comma).
            let before = |back: usize| s.checked_sub(back).map(|p| &tokens[sig[p]].token);
            let table = match (before(1), before(2)) {
                (Some(Token::Word(w)), Some(Token::Word(k)))
                    if k.quote_style.is_none() && matches!(k.keyword, K::JOIN | K::FROM) =>
                {
                    w.value.clone()
                }
                (Some(Token::Word(w)), Some(Token::Comma)) => w.value.clone(),
                _ => {
                    return Err(syntax_at(
                        &format!("FOR SYSTEM_TIME AS OF follows the joined table's name, and its alias comes after the clause: {example}"),
                        loc,
                    ))
                }
            };
            // The time: `column` or `qualifier.column`.
            let mut k = s + 4;
            let mut parts = vec![];
            loop {
                match at(k - s) {
                    Some(Token::Word(w)) => parts.push(w.value.clone()),
                    _ => {
                        return Err(syntax_at(
                            &format!("FOR SYSTEM_TIME AS OF takes a time column of the other input (its event time, or a column made by PROCTIME() in a view or subquery): {example}"),
                            loc,
                        ))
                    }
                }
                k += 1;
                if at(k - s) == Some(&Token::Period) {
                    k += 1;
                } else {
                    break;
                }
            }
            if at(k - s) == Some(&Token::LParen) {
                return Err(syntax_at(
                    "FOR SYSTEM_TIME AS OF takes a column, not a function call: select PROCTIME() AS pt in the other input (`FROM (SELECT *, PROCTIME() AS pt FROM orders) o`), then write `FOR SYSTEM_TIME AS OF o.pt`",
                    loc,
                ));
            }
            let mut a = k;
            let explicit_as = is_word(at(a - s), "AS");
            if explicit_as {
                a += 1;
            }
            let alias = match at(a - s) {
                Some(Token::Word(w))
                    if w.quote_style.is_some()
                        || !RESERVED_FOR_TABLE_ALIAS.contains(&w.keyword) =>
                {
                    Some(w.value.clone())
                }
                _ if explicit_as => {
                    return Err(syntax_at("expected an alias after AS", loc));
                }
                _ => None,
            };
            let column = parts.pop().unwrap_or_default();
            let qualifier = parts.pop();
            let name = format!("__flowline_as_of_{}", self.temporal.len());
            if qualifier.as_deref() == Some(alias.as_deref().unwrap_or(&table)) {
                return Err(syntax_at(
                    &format!("FOR SYSTEM_TIME AS OF `{}.{column}` names the joined table itself: the time is a column of the other input, {example}", qualifier.unwrap_or_default()),
                    loc,
                ));
            }
            for &i in &sig[s..k] {
                drop[i] = true;
            }
            let mut with = vec![Token::make_word(&name, None)];
            if alias.is_none() {
                with.push(Token::make_keyword("AS"));
                with.push(Token::make_word(&table, None));
            }
            replace.insert(sig[s - 1], with);
            self.temporal.push(TemporalRef {
                name,
                table,
                column,
                line: loc.line,
                statement: self.statements.len(),
            });
        }
        let mut out = Vec::with_capacity(tokens.len() + 2 * replace.len());
        for (i, t) in tokens.into_iter().enumerate() {
            if let Some(with) = replace.remove(&i) {
                for (n, token) in with.into_iter().enumerate() {
                    if n > 0 {
                        out.push(TokenWithSpan::new(
                            Token::Whitespace(
                                datafusion::sql::sqlparser::tokenizer::Whitespace::Space,
                            ),
                            t.span,
                        ));
                    }
                    out.push(TokenWithSpan::new(token, t.span));
                }
            } else if !drop[i] {
                out.push(t);
            }
        }
        Ok(out)
    }

    fn tvf_call(
        &self,
        func: &str,
        args: Vec<Vec<TokenWithSpan>>,
        loc: Location,
    ) -> Result<TvfCall> {
        let mut named: BTreeMap<String, Vec<TokenWithSpan>> = BTreeMap::new();
        let positional = match func {
            "TUMBLE" => ["DATA", "TIMECOL", "SIZE", "OFFSET"].as_slice(),
            "CUMULATE" => ["DATA", "TIMECOL", "STEP", "SIZE", "OFFSET"].as_slice(),
            "SESSION" => ["DATA", "TIMECOL", "GAP"].as_slice(),
            _ => ["DATA", "TIMECOL", "SLIDE", "SIZE", "OFFSET"].as_slice(),
        };
        for (i, arg) in args.into_iter().enumerate() {
            let sig: Vec<TokenWithSpan> = arg.into_iter().filter(|t| !is_space(&t.token)).collect();
            let (name, rest) = match (sig.first(), sig.get(1)) {
                (
                    Some(TokenWithSpan {
                        token: Token::Word(w),
                        ..
                    }),
                    Some(t),
                ) if t.token == Token::RArrow => (w.value.to_ascii_uppercase(), sig[2..].to_vec()),
                _ => match positional.get(i) {
                    Some(n) => (n.to_string(), sig),
                    None => return Err(syntax_at(&format!("too many arguments to {func}"), loc)),
                },
            };
            named.insert(name, rest);
        }
        let get = |n: &str| {
            named
                .get(n)
                .ok_or_else(|| syntax_at(&format!("{func} needs a {n} argument"), loc))
        };
        let data = get("DATA")?;
        // `TABLE name [PARTITION BY col | PARTITION BY (col, ...)]`
        let partition_at = data
            .iter()
            .position(|t| is_word(Some(&t.token), "PARTITION"))
            .unwrap_or(data.len());
        let mut partition = vec![];
        if partition_at < data.len() {
            if func != "SESSION" {
                return Err(syntax_at(
                    &format!("{func} takes no PARTITION BY (only SESSION does)"),
                    loc,
                ));
            }
            if !is_word(data.get(partition_at + 1).map(|t| &t.token), "BY") {
                return Err(syntax_at("expected `PARTITION BY column`", loc));
            }
            for t in &data[partition_at + 2..] {
                match &t.token {
                    Token::Word(w) => partition.push(w.value.clone()),
                    Token::LParen | Token::RParen | Token::Comma => {}
                    other => {
                        return Err(syntax_at(
                            &format!("unexpected `{other}` in PARTITION BY of {func}"),
                            t.span.start,
                        ))
                    }
                }
            }
            if partition.is_empty() {
                return Err(syntax_at("PARTITION BY needs a column", loc));
            }
        }
        let input = match data.first().map(|t| &t.token) {
            Some(t) if is_word(Some(t), "TABLE") => data[1..partition_at]
                .iter()
                .map(|t| match &t.token {
                    Token::Word(w) => w.value.clone(),
                    other => other.to_string(),
                })
                .collect::<String>(),
            _ => {
                return Err(syntax_at(
                    &format!("the first argument of {func} must be `TABLE name`"),
                    loc,
                ))
            }
        };
        let timecol = get("TIMECOL")?;
        let time_column = match timecol.iter().map(|t| &t.token).collect::<Vec<_>>()[..] {
            [d, Token::LParen, Token::Word(w), Token::RParen] if is_word(Some(d), "DESCRIPTOR") => {
                w.value.clone()
            }
            _ => {
                return Err(syntax_at(
                    &format!("the second argument of {func} must be `DESCRIPTOR(column)`"),
                    loc,
                ))
            }
        };
        let interval = |n: &str| -> Result<i64> {
            let toks = get(n)?.clone();
            let at = toks.first().map(|t| t.span.start).unwrap_or(loc);
            let expr = Parser::new(&GenericDialect {})
                .with_tokens_with_locations(toks)
                .parse_expr()
                .map_err(|e| syntax(e, at))?;
            match interval_ms(&expr) {
                Some(ms) if ms > 0 => Ok(ms),
                _ => Err(syntax_at(
                    &format!(
                        "{func} {n} must be a positive interval such as INTERVAL '1' HOUR, found `{expr}`"
                    ),
                    at,
                )),
            }
        };
        if named.contains_key("OFFSET") {
            return Err(Error::Unsupported {
                construct: format!("the OFFSET argument of {func} (line {})", loc.line),
                mode: "any".into(),
                hint: "windows are aligned to the Unix epoch".into(),
            });
        }
        let kind = if func == "TUMBLE" {
            WindowKind::Tumble {
                size: interval("SIZE")?,
            }
        } else if func == "SESSION" {
            WindowKind::Session {
                gap: interval("GAP")?,
            }
        } else if func == "CUMULATE" {
            let (step, size) = (interval("STEP")?, interval("SIZE")?);
            if size % step != 0 {
                return Err(syntax_at(
                    &format!(
                        "CUMULATE size ({size} ms) must be a multiple of its step ({step} ms)"
                    ),
                    loc,
                ));
            }
            WindowKind::Cumulate { step, size }
        } else {
            let (slide, size) = (interval("SLIDE")?, interval("SIZE")?);
            if size % slide != 0 {
                return Err(syntax_at(
                    &format!("HOP size ({size} ms) must be a multiple of its slide ({slide} ms)"),
                    loc,
                ));
            }
            WindowKind::Hop { size, slide }
        };
        Ok(TvfCall {
            name: format!("__flowline_window_{}", self.tvfs.len()),
            input,
            time_column,
            kind,
            partition,
            line: loc.line,
            statement: self.statements.len(),
        })
    }
}

enum DdlError {
    Parser(ParserError),
    Flowline(Error),
}

impl From<ParserError> for DdlError {
    fn from(e: ParserError) -> Self {
        DdlError::Parser(e)
    }
}

fn create_table(p: &mut Parser<'_>, line: u64) -> Result<TableDef, DdlError> {
    let _ = p.parse_keywords(&[Keyword::IF, Keyword::NOT, Keyword::EXISTS]);
    let name = parse_name(p)?;
    let mut table = TableDef {
        name: name.clone(),
        columns: vec![],
        computed: vec![],
        watermark: None,
        primary_key: vec![],
        options: BTreeMap::new(),
        line,
    };
    let user =
        |m: String| DdlError::Flowline(Error::Plan(format!("line {line}: table `{name}`: {m}")));
    let mut watermark: Option<(String, Expr)> = None;
    if p.consume_token(&Token::LParen) {
        loop {
            if is_word(Some(&p.peek_token().token), "WATERMARK") {
                p.next_token();
                p.expect_keyword(Keyword::FOR)?;
                let col = p.parse_identifier()?.value;
                p.expect_keyword(Keyword::AS)?;
                watermark = Some((col, p.parse_expr()?));
            } else if p.parse_keyword(Keyword::CONSTRAINT) || p.peek_keyword(Keyword::PRIMARY) {
                if !p.peek_keyword(Keyword::PRIMARY) {
                    p.parse_identifier()?;
                }
                p.expect_keywords(&[Keyword::PRIMARY, Keyword::KEY])?;
                p.expect_token(&Token::LParen)?;
                table.primary_key = p.parse_comma_separated(|p| Ok(p.parse_identifier()?.value))?;
                p.expect_token(&Token::RParen)?;
                let _ = p.parse_keywords(&[Keyword::NOT, Keyword::ENFORCED]);
            } else {
                let col = p.parse_identifier()?.value;
                if table
                    .columns
                    .iter()
                    .map(|c| &c.name)
                    .chain(table.computed.iter().map(|c| &c.name))
                    .any(|c| c.eq_ignore_ascii_case(&col))
                {
                    return Err(user(format!("column `{col}` is declared twice")));
                }
                let position = table.columns.len() + table.computed.len();
                if p.parse_keyword(Keyword::AS) {
                    let expr = p.parse_expr()?;
                    let expr = match &expr {
                        Expr::Function(f)
                            if f.name.to_string().eq_ignore_ascii_case("PROCTIME")
                                && f.args.to_string().trim_matches(['(', ')', ' ']).is_empty() =>
                        {
                            ComputedExpr::ProcTime
                        }
                        other => ComputedExpr::Sql(other.to_string()),
                    };
                    // `COMMENT '...'` after a computed column is accepted and ignored.
                    if p.parse_keyword(Keyword::COMMENT) {
                        p.parse_literal_string()?;
                    }
                    table.computed.push(ComputedColumn {
                        name: col,
                        expr,
                        position,
                    });
                } else {
                    let data_type = parse_column_type(p)?;
                    let mut nullable = true;
                    if p.parse_keywords(&[Keyword::NOT, Keyword::NULL]) {
                        nullable = false;
                    } else {
                        let _ = p.parse_keyword(Keyword::NULL);
                    }
                    if p.parse_keyword(Keyword::COMMENT) {
                        p.parse_literal_string()?;
                    }
                    table.columns.push(ColumnDef {
                        name: col,
                        data_type,
                        nullable,
                    });
                }
            }
            if p.consume_token(&Token::Comma) {
                continue;
            }
            p.expect_token(&Token::RParen)?;
            break;
        }
    }
    if p.parse_keyword(Keyword::COMMENT) {
        p.parse_literal_string()?;
    }
    if p.parse_keywords(&[Keyword::PARTITIONED, Keyword::BY]) {
        p.expect_token(&Token::LParen)?;
        let cols = p.parse_comma_separated(|p| Ok(p.parse_identifier()?.value))?;
        p.expect_token(&Token::RParen)?;
        table.options.insert("partition-by".into(), cols.join(","));
    }
    p.expect_keyword(Keyword::WITH)?;
    p.expect_token(&Token::LParen)?;
    loop {
        let key = parse_key(p)?.to_ascii_lowercase();
        p.expect_token(&Token::Eq)?;
        let value = match p.next_token() {
            TokenWithSpan {
                token: Token::SingleQuotedString(s) | Token::Number(s, _),
                ..
            } => s,
            other => p.expected("a quoted option value", other)?,
        };
        if table.options.insert(key.clone(), value).is_some() {
            return Err(user(format!("option '{key}' is given twice")));
        }
        if !p.consume_token(&Token::Comma) {
            break;
        }
    }
    p.expect_token(&Token::RParen)?;
    legacy_filesystem_options(&mut table.options).map_err(user)?;

    if let Some((column, expr)) = watermark {
        let physical = table
            .columns
            .iter()
            .find(|c| c.name.eq_ignore_ascii_case(&column));
        let computed = table
            .computed
            .iter()
            .find(|c| c.name.eq_ignore_ascii_case(&column));
        let column_name = match (physical, computed) {
            (Some(col), _) => {
                if !matches!(col.data_type, arrow::datatypes::DataType::Timestamp(..)) {
                    return Err(user(format!(
                        "WATERMARK FOR `{column}`: the column must be a TIMESTAMP, it is {}",
                        col.data_type
                    )));
                }
                col.name.clone()
            }
            (None, Some(c)) if c.expr == ComputedExpr::ProcTime => {
                return Err(user(format!(
                    "WATERMARK FOR `{column}`: `{column}` is a processing-time column \
                     (PROCTIME()); a watermark needs an event-time column"
                )))
            }
            // A computed column's type is checked when its source is opened.
            (None, Some(c)) => c.name.clone(),
            (None, None) => {
                return Err(user(format!(
                    "WATERMARK FOR `{column}`: no such column (columns: {})",
                    column_list(&table)
                )))
            }
        };
        let is_col = |e: &Expr| match e {
            Expr::Identifier(id) => id.value.eq_ignore_ascii_case(&column),
            _ => false,
        };
        let delay_ms = match &expr {
            e if is_col(e) => 0,
            Expr::BinaryOp {
                left,
                op: BinaryOperator::Minus,
                right,
            } if is_col(left) => interval_ms(right).filter(|ms| *ms >= 0).ok_or_else(|| {
                user(format!(
                    "watermark delay must be an interval such as INTERVAL '5' SECOND, found `{right}`"
                ))
            })?,
            other => {
                return Err(user(format!(
                    "unsupported watermark expression `{other}`: use `{column}` or `{column} - INTERVAL '5' SECOND`"
                )))
            }
        };
        table.watermark = Some(WatermarkDef {
            column: column_name,
            delay_ms,
        });
    }
    for key in &table.primary_key {
        if !table
            .columns
            .iter()
            .any(|c| c.name.eq_ignore_ascii_case(key))
        {
            return Err(user(format!("PRIMARY KEY column `{key}` is not declared")));
        }
    }
    Ok(table)
}

/// Names every unaliased `a.b` select item `b`, as Flink does. DataFusion would name a ROW field
/// access `table.a[b]`; a qualified column `t.b` is named `b` either way.
fn name_field_accesses(query: &mut Query) {
    use datafusion::sql::sqlparser::ast::{SelectItem, SetExpr, VisitMut, VisitorMut};
    use std::ops::ControlFlow;

    fn set_expr(body: &mut SetExpr) {
        match body {
            SetExpr::Select(select) => {
                // Only names that stay unique: `SELECT A.id, B.id` keeps DataFusion's
                // qualified names instead of two columns called `id`.
                let name = |item: &SelectItem| match item {
                    SelectItem::UnnamedExpr(Expr::CompoundIdentifier(parts)) => {
                        parts.last().map(|p| p.value.to_ascii_lowercase())
                    }
                    SelectItem::UnnamedExpr(Expr::Identifier(i)) => {
                        Some(i.value.to_ascii_lowercase())
                    }
                    SelectItem::ExprWithAlias { alias, .. } => {
                        Some(alias.value.to_ascii_lowercase())
                    }
                    _ => None,
                };
                let names: Vec<Option<String>> = select.projection.iter().map(name).collect();
                for (item, own) in select.projection.iter_mut().zip(&names) {
                    let unique = own.is_some() && names.iter().filter(|n| *n == own).count() == 1;
                    if !unique {
                        continue;
                    }
                    if let SelectItem::UnnamedExpr(Expr::CompoundIdentifier(parts)) = item {
                        if let Some(last) = parts.last().cloned() {
                            *item = SelectItem::ExprWithAlias {
                                expr: Expr::CompoundIdentifier(parts.clone()),
                                alias: last,
                            };
                        }
                    }
                }
            }
            SetExpr::SetOperation { left, right, .. } => {
                set_expr(left);
                set_expr(right);
            }
            SetExpr::Query(q) => set_expr(&mut q.body),
            _ => {}
        }
    }
    struct Namer;
    impl VisitorMut for Namer {
        type Break = ();
        fn pre_visit_query(&mut self, query: &mut Query) -> ControlFlow<()> {
            set_expr(&mut query.body);
            ControlFlow::Continue(())
        }
    }
    let _ = query.visit(&mut Namer);
}

/// Flink's legacy file options (`'connector.type' = 'filesystem'`, `'connector.path'`,
/// `'format.type'`, as in Nexmark q13) as a files table: `connector`, `path` (a `file://` URL
/// becomes its path) and `format`; the legacy CSV format has no header line.
fn legacy_filesystem_options(options: &mut BTreeMap<String, String>) -> Result<(), String> {
    if !options.contains_key("connector.type") {
        return Ok(());
    }
    if options.contains_key("connector") {
        return Err("give either 'connector' or the legacy 'connector.type', not both".into());
    }
    let kind = options.remove("connector.type").unwrap_or_default();
    if !kind.eq_ignore_ascii_case("filesystem") {
        return Err(format!(
            "legacy 'connector.type' = '{kind}' is not supported; only 'filesystem' is (or use 'connector' = 'files' | 'log' | ...)"
        ));
    }
    options.insert("connector".into(), "files".into());
    if let Some(path) = options.remove("connector.path") {
        let path = path.strip_prefix("file://").unwrap_or(&path).to_string();
        options.insert("path".into(), path);
    }
    if let Some(format) = options.remove("format.type") {
        if format.eq_ignore_ascii_case("csv") {
            options.entry("csv.header".into()).or_insert("false".into());
        }
        options.insert("format".into(), format.to_ascii_lowercase());
    }
    Ok(())
}

fn column_list(t: &TableDef) -> String {
    t.columns
        .iter()
        .map(|c| c.name.as_str())
        .chain(t.computed.iter().map(|c| c.name.as_str()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `'a.b'` or `a.b`.
fn parse_key(p: &mut Parser<'_>) -> Result<String, ParserError> {
    match p.peek_token().token {
        Token::SingleQuotedString(s) => {
            p.next_token();
            Ok(s)
        }
        _ => {
            let mut parts = vec![p.parse_identifier()?.value];
            while p.consume_token(&Token::Period) {
                parts.push(p.parse_identifier()?.value);
            }
            Ok(parts.join("."))
        }
    }
}

fn parse_name(p: &mut Parser<'_>) -> Result<String, ParserError> {
    let mut parts = vec![p.parse_identifier()?.value];
    while p.consume_token(&Token::Period) {
        parts.push(p.parse_identifier()?.value);
    }
    // Catalog and database qualifiers are accepted and ignored: a pipeline has one namespace.
    Ok(parts.pop().unwrap_or_default())
}

fn is_space(t: &Token) -> bool {
    matches!(t, Token::Whitespace(_))
}

fn word(t: Option<&Token>) -> Option<String> {
    match t {
        Some(Token::Word(w)) if w.quote_style.is_none() => Some(w.value.clone()),
        _ => None,
    }
}

fn is_word(t: Option<&Token>, w: &str) -> bool {
    word(t).is_some_and(|v| v.eq_ignore_ascii_case(w))
}

fn syntax_at(message: &str, loc: Location) -> Error {
    Error::Syntax {
        message: message.to_string(),
        line: loc.line,
        column: loc.column,
    }
}

/// Turns a sqlparser error into [`Error::Syntax`], taking the position from its message
/// (`... at Line: 3, Column: 14`) or else the statement start.
fn syntax(e: ParserError, fallback: Location) -> Error {
    let msg = match e {
        ParserError::ParserError(m) | ParserError::TokenizerError(m) => m,
        ParserError::RecursionLimitExceeded => "statement nested too deeply".to_string(),
    };
    if let Some(i) = msg.rfind(" at Line: ") {
        let pos = &msg[i + " at Line: ".len()..];
        let mut it = pos.split(", Column: ");
        let line = it.next().and_then(|l| l.trim().parse().ok());
        let column = it.next().and_then(|c| c.trim().parse().ok());
        if let (Some(line), Some(column)) = (line, column) {
            return Error::Syntax {
                message: msg[..i].to_string(),
                line,
                column,
            };
        }
    }
    Error::Syntax {
        message: msg,
        line: fallback.line,
        column: fallback.column,
    }
}

/// Java classes of user-defined functions whose behaviour Flowline has built in, with the
/// built-in's name: `CREATE FUNCTION <name> AS '<class>'` declares nothing new for these.
pub const BUILT_IN_UDFS: &[(&str, &str)] =
    &[("com.github.nexmark.flink.udf.CountChar", "count_char")];

/// `CREATE FUNCTION name AS 'class'`: accepted when the class is one Flowline has built in under
/// that name; anything else is an error (Flowline runs no JVM code).
fn check_function(name: &str, class: &str, line: u64) -> Result<()> {
    match BUILT_IN_UDFS.iter().find(|(c, _)| *c == class) {
        Some((_, built_in)) if built_in.eq_ignore_ascii_case(name) => Ok(()),
        Some((_, built_in)) => Err(Error::Plan(format!(
            "line {line}: function class '{class}' is built in as `{built_in}`; declare it under \
             that name (CREATE FUNCTION {built_in} AS '{class}')"
        ))),
        None => Err(Error::Plan(format!(
            "line {line}: CREATE FUNCTION `{name}` AS '{class}': Flowline cannot load Java \
             user-defined functions; the classes it has built in are {}",
            BUILT_IN_UDFS
                .iter()
                .map(|(c, n)| format!("'{c}' (as `{n}`)"))
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::datatypes::{DataType, Field, Fields, TimeUnit};

    const ORDERS: &str = "
-- a comment
SET 'execution.mode' = 'stream';
CREATE TABLE orders (
  order_id BIGINT NOT NULL,
  store_id VARCHAR,
  amount DECIMAL(10,2),
  event_time TIMESTAMP(3),
  WATERMARK FOR event_time AS event_time - INTERVAL '5' MINUTE,
  PRIMARY KEY (order_id) NOT ENFORCED
) WITH ('connector' = 'files', 'path' = 'data/orders/', 'format' = 'csv');
CREATE TABLE out WITH ('connector' = 'print');
INSERT INTO out
SELECT window_start, store_id, SUM(amount) AS revenue
FROM TABLE(TUMBLE(TABLE orders, DESCRIPTOR(event_time), INTERVAL '1' HOUR))
GROUP BY window_start, window_end, store_id;
";

    #[test]
    fn nested_types_and_computed_columns() {
        let def = PipelineDef::parse(
            "CREATE TABLE t (
               a ROW<x INT NOT NULL 'the x', y ROW<z STRING, w ARRAY<BIGINT>>>,
               b ROW(p DOUBLE, q INT ARRAY),
               ts AS TO_TIMESTAMP(raw) COMMENT 'event time',
               raw STRING,
               pt AS PROCTIME(),
               WATERMARK FOR ts AS ts - INTERVAL '1' SECOND
             ) WITH ('connector' = 'files', 'path' = 'x', 'format' = 'json');",
        )
        .unwrap();
        let t = def.table("t").unwrap();
        let names: Vec<&str> = t.columns.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["a", "b", "raw"]);
        let list =
            |t: DataType| DataType::List(std::sync::Arc::new(Field::new_list_field(t, true)));
        let inner = DataType::Struct(Fields::from(vec![
            Field::new("z", DataType::Utf8, true),
            Field::new("w", list(DataType::Int64), true),
        ]));
        assert_eq!(
            t.columns[0].data_type,
            DataType::Struct(Fields::from(vec![
                Field::new("x", DataType::Int32, false),
                Field::new("y", inner, true),
            ]))
        );
        assert_eq!(
            t.columns[1].data_type,
            DataType::Struct(Fields::from(vec![
                Field::new("p", DataType::Float64, true),
                Field::new("q", list(DataType::Int32), true),
            ]))
        );
        assert_eq!(
            t.computed,
            vec![
                ComputedColumn {
                    name: "ts".into(),
                    expr: ComputedExpr::Sql("TO_TIMESTAMP(raw)".into()),
                    position: 2
                },
                ComputedColumn {
                    name: "pt".into(),
                    expr: ComputedExpr::ProcTime,
                    position: 4
                },
            ]
        );
        assert_eq!(t.watermark.as_ref().unwrap().column, "ts");
        assert_eq!(t.watermark.as_ref().unwrap().delay_ms, 1000);

        // Unaliased `a.b` select items are named `b`, as in Flink.
        let def = PipelineDef::parse(
            "INSERT INTO o SELECT a.x, a.y.z, a.x AS renamed, s.t FROM t, (SELECT b.p FROM t) s;",
        )
        .unwrap();
        let Statement::Insert { query, .. } = &def.statements[0] else {
            panic!()
        };
        assert_eq!(
            query.to_string(),
            "SELECT a.x AS x, a.y.z AS z, a.x AS renamed, s.t AS t FROM t, (SELECT b.p AS p FROM t) s"
        );
    }

    #[test]
    fn parses_flink_ddl() {
        let def = PipelineDef::parse(ORDERS).unwrap();
        assert_eq!(def.settings["execution.mode"], "stream");
        let orders = def.table("orders").unwrap();
        assert_eq!(orders.columns.len(), 4);
        assert!(!orders.columns[0].nullable);
        assert_eq!(orders.columns[2].data_type, DataType::Decimal128(10, 2));
        assert_eq!(
            orders.columns[3].data_type,
            DataType::Timestamp(TimeUnit::Millisecond, None)
        );
        assert_eq!(
            orders.watermark,
            Some(WatermarkDef {
                column: "event_time".into(),
                delay_ms: 300_000
            })
        );
        assert_eq!(orders.primary_key, vec!["order_id"]);
        assert_eq!(orders.option("path"), Some("data/orders/"));
        assert_eq!(orders.line, 4);
        assert!(def.table("out").unwrap().columns.is_empty());
        assert_eq!(def.statements.len(), 1);
        assert_eq!(
            def.tvfs,
            vec![TvfCall {
                partition: vec![],
                name: "__flowline_window_0".into(),
                input: "orders".into(),
                time_column: "event_time".into(),
                kind: WindowKind::Tumble { size: 3_600_000 },
                line: 15,
                statement: 0,
            }]
        );
        let Statement::Insert { sink, query, line } = &def.statements[0] else {
            panic!()
        };
        assert_eq!(sink, "out");
        assert_eq!(*line, 13);
        assert!(query.to_string().contains("FROM __flowline_window_0"));
    }

    #[test]
    fn hop_takes_slide_then_size_and_named_args() {
        let def = PipelineDef::parse(
            "INSERT INTO o SELECT * FROM TABLE(HOP(TABLE t, DESCRIPTOR(ts), INTERVAL '5' MINUTE, INTERVAL '1' HOUR)) AS w;
             INSERT INTO o SELECT * FROM TABLE(TUMBLE(DATA => TABLE t, TIMECOL => DESCRIPTOR(ts), SIZE => INTERVAL '10' SECONDS))",
        )
        .unwrap();
        assert_eq!(
            def.tvfs[0].kind,
            WindowKind::Hop {
                size: 3_600_000,
                slide: 300_000
            }
        );
        assert_eq!(def.tvfs[1].kind, WindowKind::Tumble { size: 10_000 });
        assert_eq!(def.tvfs[1].statement, 1);
    }

    #[test]
    fn syntax_errors_have_file_positions() {
        let err =
            PipelineDef::parse("SET 'a' = 'b';\n\nINSERT INTO o SELEC x FROM t;").unwrap_err();
        match err {
            Error::Syntax { line, column, .. } => {
                assert_eq!(line, 3);
                assert_eq!(column, 15);
            }
            other => panic!("{other:?}"),
        }
        let err = PipelineDef::parse(
            "CREATE TABLE t (\n  a BIGINT,\n  b BIGINT BOGUS\n) WITH ('connector'='files')",
        )
        .unwrap_err();
        assert!(matches!(err, Error::Syntax { line: 3, .. }), "{err}");
        let err =
            PipelineDef::parse("CREATE TABLE t (a JSON) WITH ('connector'='files')").unwrap_err();
        assert!(err.to_string().contains("unsupported type"), "{err}");
    }

    /// The query text of statement `i`.
    fn query_text(def: &PipelineDef, i: usize) -> String {
        match &def.statements[i] {
            Statement::View { query, .. } | Statement::Insert { query, .. } => query.to_string(),
        }
    }

    #[test]
    fn for_system_time_as_of_becomes_a_generated_relation_per_clause() {
        let def = PipelineDef::parse(
            "INSERT INTO a SELECT * FROM o JOIN rates FOR SYSTEM_TIME AS OF o.ts AS r ON o.c = r.c;\n\
             INSERT INTO b SELECT * FROM o LEFT JOIN rates FOR SYSTEM_TIME AS OF o.pt ON o.c = rates.c;\n\
             INSERT INTO c SELECT * FROM o JOIN rates AS r ON o.c = r.c;\n\
             INSERT INTO d SELECT * FROM o JOIN rates FOR SYSTEM_TIME AS OF ts r FULL JOIN x ON true",
        )
        .unwrap();
        let refs: Vec<_> = def
            .temporal
            .iter()
            .map(|t| {
                (
                    t.name.as_str(),
                    t.table.as_str(),
                    t.column.as_str(),
                    t.statement,
                    t.line,
                )
            })
            .collect();
        assert_eq!(
            refs,
            vec![
                ("__flowline_as_of_0", "rates", "ts", 0, 1),
                ("__flowline_as_of_1", "rates", "pt", 1, 2),
                ("__flowline_as_of_2", "rates", "ts", 3, 4),
            ]
        );
        assert!(
            query_text(&def, 0).contains("JOIN __flowline_as_of_0 AS r ON"),
            "{}",
            query_text(&def, 0)
        );
        // Without an alias, the relation keeps the table's name for the query's references.
        assert!(
            query_text(&def, 1).contains("JOIN __flowline_as_of_1 AS rates ON"),
            "{}",
            query_text(&def, 1)
        );
        // A plain join of the same table stays a plain join.
        assert!(
            query_text(&def, 2).contains("JOIN rates AS r ON"),
            "{}",
            query_text(&def, 2)
        );
        // An alias without AS, then a keyword that is no alias.
        assert!(
            query_text(&def, 3).contains("JOIN __flowline_as_of_2 r FULL JOIN x"),
            "{}",
            query_text(&def, 3)
        );

        for (sql, message) in [
            (
                "INSERT INTO a SELECT * FROM o JOIN rates AS r FOR SYSTEM_TIME AS OF o.ts ON true",
                "its alias comes after the clause",
            ),
            (
                "INSERT INTO a SELECT * FROM o JOIN rates FOR SYSTEM_TIME AS OF PROCTIME() ON true",
                "not a function call",
            ),
            (
                "INSERT INTO a SELECT * FROM o JOIN rates FOR SYSTEM_TIME AS OF 5 ON true",
                "takes a time column",
            ),
            (
                "INSERT INTO a SELECT * FROM o JOIN rates FOR SYSTEM_TIME AS OF r.ts AS r ON true",
                "names the joined table itself",
            ),
        ] {
            let err = PipelineDef::parse(sql).unwrap_err();
            assert!(
                matches!(err, Error::Syntax { line: 1, .. }),
                "{sql}: {err:?}"
            );
            assert!(err.to_string().contains(message), "{sql}: {err}");
        }
    }

    #[test]
    fn legacy_group_windows_become_window_functions() {
        let def = PipelineDef::parse(
            "INSERT INTO o SELECT B.bidder, count(*) AS n,
                 SESSION_START(B.dateTime, INTERVAL '10' SECOND) AS s,
                 SESSION_END(B.dateTime, INTERVAL '10' SECOND) AS e
             FROM bid B
             GROUP BY B.bidder, SESSION(B.dateTime, INTERVAL '10' SECOND);
             INSERT INTO o SELECT HOP_END(ts, INTERVAL '1' MINUTE, INTERVAL '5' MINUTE), SUM(x)
             FROM t WHERE x > 0 GROUP BY HOP(ts, INTERVAL '1' MINUTE, INTERVAL '5' MINUTE)",
        )
        .unwrap();
        assert_eq!(def.tvfs[0].kind, WindowKind::Session { gap: 10_000 });
        assert_eq!(def.tvfs[0].input, "bid");
        assert_eq!(def.tvfs[0].time_column, "dateTime");
        assert_eq!(def.tvfs[0].partition, vec!["bidder"]);
        assert_eq!(
            def.tvfs[1].kind,
            WindowKind::Hop {
                slide: 60_000,
                size: 300_000
            }
        );
        let Statement::Insert { query, .. } = &def.statements[0] else {
            panic!()
        };
        let text = query.to_string();
        assert!(
            text.contains("GROUP BY B.bidder, window_start, window_end")
                && text.contains("window_start AS s")
                && text.contains("window_end AS e"),
            "{text}"
        );
        let err = PipelineDef::parse(
            "INSERT INTO o SELECT COUNT(*) FROM t WHERE x > 0\n GROUP BY SESSION(ts, INTERVAL '1' SECOND)",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("line 2") && err.contains("WHERE"), "{err}");
        let err = PipelineDef::parse(
            "INSERT INTO o SELECT COUNT(*) FROM t JOIN u ON t.a = u.a GROUP BY TUMBLE(ts, INTERVAL '1' SECOND)",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("one table or view"), "{err}");
    }

    #[test]
    fn create_function_accepts_only_built_in_classes() {
        PipelineDef::parse(
            "CREATE FUNCTION count_char AS 'com.github.nexmark.flink.udf.CountChar';",
        )
        .unwrap();
        let err = PipelineDef::parse("\nCREATE FUNCTION f AS 'com.acme.Udf' LANGUAGE JAVA;")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("line 2") && err.contains("cannot load Java") && err.contains("CountChar"),
            "{err}"
        );
        let err =
            PipelineDef::parse("CREATE FUNCTION cc AS 'com.github.nexmark.flink.udf.CountChar'")
                .unwrap_err()
                .to_string();
        assert!(err.contains("built in as `count_char`"), "{err}");
    }

    #[test]
    fn bad_watermarks_are_explained() {
        let err = PipelineDef::parse(
            "CREATE TABLE t (a BIGINT, WATERMARK FOR ts AS ts) WITH ('connector'='files')",
        )
        .unwrap_err();
        assert!(err.to_string().contains("no such column"), "{err}");
        let err = PipelineDef::parse(
            "CREATE TABLE t (a BIGINT, WATERMARK FOR a AS a) WITH ('connector'='files')",
        )
        .unwrap_err();
        assert!(err.to_string().contains("must be a TIMESTAMP"), "{err}");
    }

    #[test]
    fn session_windows_take_a_gap_and_an_optional_partition() {
        let def = PipelineDef::parse(
            "INSERT INTO o SELECT * FROM TABLE(SESSION(TABLE t PARTITION BY user_id, DESCRIPTOR(ts), INTERVAL '5' MINUTE));
             INSERT INTO o SELECT * FROM TABLE(SESSION(DATA => TABLE t PARTITION BY (a, b), TIMECOL => DESCRIPTOR(ts), GAP => INTERVAL '10' SECOND));
             INSERT INTO o SELECT * FROM TABLE(SESSION(TABLE t, DESCRIPTOR(ts), INTERVAL '1' SECOND))",
        )
        .unwrap();
        assert_eq!(def.tvfs[0].kind, WindowKind::Session { gap: 300_000 });
        assert_eq!(def.tvfs[0].input, "t");
        assert_eq!(def.tvfs[0].partition, vec!["user_id"]);
        assert_eq!(def.tvfs[1].partition, vec!["a", "b"]);
        assert_eq!(def.tvfs[1].kind, WindowKind::Session { gap: 10_000 });
        assert!(def.tvfs[2].partition.is_empty());
        let err = PipelineDef::parse(
            "INSERT INTO o SELECT * FROM TABLE(TUMBLE(TABLE t PARTITION BY a, DESCRIPTOR(ts), INTERVAL '5' MINUTE))",
        )
        .unwrap_err();
        assert!(err.to_string().contains("only SESSION"), "{err}");
    }
}
