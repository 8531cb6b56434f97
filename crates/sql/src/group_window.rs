//! Flink's legacy group windows, rewritten into window table functions before parsing:
//!
//! ```sql
//! SELECT bidder, COUNT(*), SESSION_START(dateTime, INTERVAL '10' SECOND)
//! FROM bid B GROUP BY B.bidder, SESSION(B.dateTime, INTERVAL '10' SECOND)
//! ```
//! becomes
//! ```sql
//! SELECT bidder, COUNT(*), window_start
//! FROM TABLE(SESSION(TABLE bid PARTITION BY (bidder), DESCRIPTOR(dateTime),
//!                    INTERVAL '10' SECOND)) B
//! GROUP BY B.bidder, window_start, window_end
//! ```
//! `TUMBLE(t, size)` and `HOP(t, slide, size)` likewise; `<W>_START`, `<W>_END` and
//! `<W>_ROWTIME` become `window_start`, `window_end` and `window_time`. A SESSION is per value of
//! the other GROUP BY columns, as in Flink.
//!
//! Scope: one SELECT whose `FROM` is a single table or view (`FROM name [[AS] alias]`), at the
//! top level of the statement. Anything else with a legacy group window is an error naming the
//! construct, never a silent change of meaning; so is a SESSION with a WHERE (the filter would
//! apply after the sessions are formed instead of before).

use datafusion::sql::sqlparser::tokenizer::{Location, Span, Token, TokenWithSpan, Whitespace};
use flowline_core::{Error, Result};

const WINDOWS: [&str; 3] = ["TUMBLE", "HOP", "SESSION"];

fn word_of(t: &Token) -> Option<&str> {
    match t {
        Token::Word(w) if w.quote_style.is_none() => Some(w.value.as_str()),
        _ => None,
    }
}

fn is(t: &Token, w: &str) -> bool {
    word_of(t).is_some_and(|v| v.eq_ignore_ascii_case(w))
}

fn error(message: String, loc: Location) -> Error {
    Error::Syntax {
        message,
        line: loc.line,
        column: loc.column,
    }
}

/// Index (into `sig`) just past the `)` matching the `(` at `sig[open]`.
fn close_of(tokens: &[TokenWithSpan], sig: &[usize], open: usize) -> Option<usize> {
    let mut depth = 0usize;
    for (k, &i) in sig.iter().enumerate().skip(open) {
        match tokens[i].token {
            Token::LParen => depth += 1,
            Token::RParen => {
                depth -= 1;
                if depth == 0 {
                    return Some(k + 1);
                }
            }
            _ => {}
        }
    }
    None
}

/// Rewrites a statement's legacy group window, if it has one; other statements are returned
/// unchanged.
pub(crate) fn rewrite(tokens: Vec<TokenWithSpan>) -> Result<Vec<TokenWithSpan>> {
    let sig: Vec<usize> = (0..tokens.len())
        .filter(|&i| !matches!(tokens[i].token, Token::Whitespace(_)))
        .collect();
    let tok = |k: usize| sig.get(k).map(|&i| &tokens[i].token);
    // A legacy window call: TUMBLE/HOP/SESSION ( not followed by TABLE (a TVF).
    let Some(call) = (0..sig.len()).find(|&k| {
        tok(k).is_some_and(|t| WINDOWS.iter().any(|w| is(t, w)))
            && tok(k + 1) == Some(&Token::LParen)
            && !tok(k + 2).is_some_and(|t| is(t, "TABLE"))
            // Not the function of a window TVF: `TABLE(TUMBLE(...))`.
            && !(k >= 2
                && tok(k - 1) == Some(&Token::LParen)
                && tok(k - 2).is_some_and(|t| is(t, "TABLE")))
    }) else {
        return Ok(tokens);
    };
    let loc = tokens[sig[call]].span.start;
    let kind = word_of(&tokens[sig[call]].token)
        .unwrap_or_default()
        .to_ascii_uppercase();
    // Depth of every significant token, to find the top-level clauses.
    let mut depth = vec![0usize; sig.len()];
    let mut d = 0usize;
    for (k, &i) in sig.iter().enumerate() {
        if tokens[i].token == Token::RParen {
            d = d.saturating_sub(1);
        }
        depth[k] = d;
        if tokens[i].token == Token::LParen {
            d += 1;
        }
    }
    let top = |k: usize, w: &str| depth[k] == 0 && tok(k).is_some_and(|t| is(t, w));
    let unsupported = |what: &str| {
        error(
            format!(
                "a legacy GROUP BY {kind}(...) window {what} is not supported; write it with the \
                 window table function: FROM TABLE({kind}(TABLE t, DESCRIPTOR(ts), ...)) GROUP BY \
                 window_start, window_end"
            ),
            loc,
        )
    };
    let group = (0..sig.len())
        .find(|&k| top(k, "GROUP") && tok(k + 1).is_some_and(|t| is(t, "BY")))
        .ok_or_else(|| unsupported("outside the top-level GROUP BY"))?;
    if depth[call] != 0 || call < group {
        return Err(unsupported("in a subquery"));
    }
    let from = (0..group)
        .find(|&k| top(k, "FROM"))
        .ok_or_else(|| unsupported("without FROM"))?;
    let mut k = from + 1;
    let table = match tok(k) {
        Some(Token::Word(_)) => k,
        _ => return Err(unsupported("over anything but one table or view")),
    };
    k += 1;
    if tok(k).is_some_and(|t| is(t, "AS")) {
        k += 1;
    }
    let alias = match tok(k) {
        Some(Token::Word(_)) if !["WHERE", "GROUP"].iter().any(|w| top(k, w)) => {
            k += 1;
            Some(k - 1)
        }
        _ => None,
    };
    let has_where = top(k, "WHERE");
    if !(has_where || k == group) {
        return Err(unsupported("over anything but one table or view"));
    }
    if has_where && kind == "SESSION" {
        return Err(unsupported(
            "with a WHERE (Flink filters before forming sessions; filter in a view first)",
        ));
    }
    // Arguments of the window call.
    let end = close_of(&tokens, &sig, call + 1).ok_or_else(|| unsupported("unclosed"))?;
    let mut args: Vec<Vec<usize>> = vec![vec![]];
    for (j, &d) in depth.iter().enumerate().take(end - 1).skip(call + 2) {
        if tok(j) == Some(&Token::Comma) && d == 1 {
            args.push(vec![]);
        } else {
            args.last_mut().expect("one at least").push(j);
        }
    }
    let expected = if kind == "HOP" { 3 } else { 2 };
    if args.len() != expected || args.iter().any(Vec::is_empty) {
        return Err(unsupported(&format!(
            "with {} arguments (expected {expected})",
            args.len()
        )));
    }
    // The time column: the last part of a (maybe qualified) column name.
    let time = *args[0].last().expect("not empty");
    // The other GROUP BY items: SESSION's partition columns.
    let group_end = (group + 2..sig.len())
        .find(|&j| {
            ["HAVING", "ORDER", "LIMIT", "UNION"]
                .iter()
                .any(|w| top(j, w))
        })
        .unwrap_or(sig.len());
    let mut items: Vec<Vec<usize>> = vec![vec![]];
    for (j, &d) in depth.iter().enumerate().take(group_end).skip(group + 2) {
        if tok(j) == Some(&Token::Comma) && d == 0 {
            items.push(vec![]);
        } else if j < call || j >= end {
            items.last_mut().expect("one at least").push(j);
        }
    }
    let mut partition = vec![];
    for item in items.iter().filter(|i| !i.is_empty()) {
        let simple = item.len() == 1 || (item.len() == 3 && tok(item[1]) == Some(&Token::Period));
        if !simple {
            return Err(unsupported("grouped with an expression (only columns)"));
        }
        partition.push(*item.last().expect("not empty"));
    }

    // Build the new statement.
    let span = Span::new(loc, loc);
    let make = |t: Token| TokenWithSpan::new(t, span);
    let word = |s: &str| make(Token::make_word(s, None));
    let space = || make(Token::Whitespace(Whitespace::Space));
    let copy = |k: usize| tokens[sig[k]].clone();
    let mut relation = vec![
        word("TABLE"),
        make(Token::LParen),
        word(&kind),
        make(Token::LParen),
        word("TABLE"),
        space(),
        copy(table),
    ];
    if kind == "SESSION" && !partition.is_empty() {
        relation.extend([space(), word("PARTITION"), space(), word("BY"), space()]);
        relation.push(make(Token::LParen));
        for (n, &p) in partition.iter().enumerate() {
            if n > 0 {
                relation.push(make(Token::Comma));
            }
            relation.push(copy(p));
        }
        relation.push(make(Token::RParen));
    }
    relation.extend([
        make(Token::Comma),
        word("DESCRIPTOR"),
        make(Token::LParen),
        copy(time),
        make(Token::RParen),
    ]);
    for arg in &args[1..] {
        relation.push(make(Token::Comma));
        for &j in arg {
            relation.push(copy(j));
            relation.push(space());
        }
    }
    relation.extend([make(Token::RParen), make(Token::RParen), space()]);
    // Keep the alias, or name the windowed relation after the table so `table.col` still works.
    relation.push(copy(alias.unwrap_or(table)));
    relation.push(space());

    let mut out = vec![];
    let mut k = 0;
    while k < sig.len() {
        if k == table {
            out.extend(relation.iter().cloned());
            k = alias.map_or(table + 1, |a| a + 1);
            continue;
        }
        if k == call {
            out.extend([word("window_start"), make(Token::Comma), word("window_end")]);
            out.push(space());
            k = end;
            continue;
        }
        // <W>_START(...), <W>_END(...), <W>_ROWTIME(...)
        let helper = tok(k).and_then(word_of).and_then(|w| {
            let upper = w.to_ascii_uppercase();
            let suffix = upper.strip_prefix(&kind)?.strip_prefix('_')?.to_string();
            match suffix.as_str() {
                "START" => Some("window_start"),
                "END" => Some("window_end"),
                "ROWTIME" => Some("window_time"),
                _ => None,
            }
        });
        if let (Some(column), Some(Token::LParen)) = (helper, tok(k + 1)) {
            out.push(word(column));
            out.push(space());
            k = close_of(&tokens, &sig, k + 1).ok_or_else(|| unsupported("unclosed"))?;
            continue;
        }
        out.push(copy(k));
        out.push(space());
        k += 1;
    }
    Ok(out)
}
