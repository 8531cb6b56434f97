//! Flink SQL types and intervals → Arrow types and milliseconds.

use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Fields, TimeUnit};
use datafusion::sql::sqlparser::ast::{Expr, Value};
use datafusion::sql::sqlparser::parser::{Parser, ParserError};
use datafusion::sql::sqlparser::tokenizer::Token;

/// Parses a column type at the parser's position: every type [`parse_type`] knows, plus the
/// nested `ROW<name type, ...>` (also `ROW(name type, ...)`), `ARRAY<type>` and `type ARRAY`.
/// ROW fields may be followed by `NOT NULL` and a `'comment'`.
pub fn parse_column_type(p: &mut Parser<'_>) -> Result<DataType, ParserError> {
    let mut pending_gt = false;
    let t = column_type(p, &mut pending_gt)?;
    if pending_gt {
        return p.expected("a column type", p.peek_token());
    }
    Ok(t)
}

fn column_type(p: &mut Parser<'_>, pending_gt: &mut bool) -> Result<DataType, ParserError> {
    let word = match &p.peek_token().token {
        Token::Word(w) => w.value.to_ascii_uppercase(),
        _ => String::new(),
    };
    let t = match word.as_str() {
        "ROW" | "STRUCT" => {
            p.next_token();
            let angle = if p.consume_token(&Token::Lt) {
                true
            } else {
                p.expect_token(&Token::LParen)?;
                false
            };
            let mut fields: Vec<Field> = vec![];
            loop {
                let name = p.parse_identifier()?.value;
                let data_type = column_type(p, pending_gt)?;
                let mut nullable = true;
                if !*pending_gt
                    && p.parse_keywords(&[
                        datafusion::sql::sqlparser::keywords::Keyword::NOT,
                        datafusion::sql::sqlparser::keywords::Keyword::NULL,
                    ])
                {
                    nullable = false;
                }
                if !*pending_gt {
                    if let Token::SingleQuotedString(_) = p.peek_token().token {
                        p.next_token();
                    }
                }
                if fields.iter().any(|f| f.name().eq_ignore_ascii_case(&name)) {
                    return Err(ParserError::ParserError(format!(
                        "ROW field `{name}` is declared twice"
                    )));
                }
                fields.push(Field::new(name, data_type, nullable));
                if !*pending_gt && p.consume_token(&Token::Comma) {
                    continue;
                }
                break;
            }
            if angle {
                close_angle(p, pending_gt)?;
            } else {
                p.expect_token(&Token::RParen)?;
            }
            DataType::Struct(Fields::from(fields))
        }
        "ARRAY" => {
            p.next_token();
            p.expect_token(&Token::Lt)?;
            let item = column_type(p, pending_gt)?;
            close_angle(p, pending_gt)?;
            DataType::List(Arc::new(Field::new_list_field(item, true)))
        }
        _ => {
            let start = p.peek_token();
            let ty = p.parse_data_type()?;
            match parse_type(&ty.to_string()) {
                Some(t) => t,
                None => {
                    return Err(ParserError::ParserError(format!(
                        "unsupported type {ty}{}",
                        at(&start)
                    )))
                }
            }
        }
    };
    // Flink's postfix form: `INT ARRAY`.
    if !*pending_gt
        && matches!(&p.peek_token().token, Token::Word(w) if w.value.eq_ignore_ascii_case("ARRAY"))
    {
        p.next_token();
        return Ok(DataType::List(Arc::new(Field::new_list_field(t, true))));
    }
    Ok(t)
}

/// Consumes one `>` closing a nested type; `>>` closes two (the tokenizer reads it as a shift).
fn close_angle(p: &mut Parser<'_>, pending_gt: &mut bool) -> Result<(), ParserError> {
    if *pending_gt {
        *pending_gt = false;
        return Ok(());
    }
    if p.consume_token(&Token::Gt) {
        return Ok(());
    }
    if p.consume_token(&Token::ShiftRight) {
        *pending_gt = true;
        return Ok(());
    }
    p.expected("`>`", p.peek_token())
}

fn at(t: &datafusion::sql::sqlparser::tokenizer::TokenWithSpan) -> String {
    format!(
        " at Line: {}, Column: {}",
        t.span.start.line, t.span.start.column
    )
}

/// Maps a Flink SQL type name (as sqlparser prints it) to an Arrow type.
pub fn parse_type(text: &str) -> Option<DataType> {
    let t = text.trim().to_ascii_uppercase();
    let (base, args) = match t.find('(') {
        Some(i) => {
            let inner = t[i + 1..].trim_end_matches(')');
            let args: Vec<u8> = inner
                .split(',')
                .filter_map(|a| a.trim().parse::<u8>().ok())
                .collect();
            (t[..i].trim().to_string(), args)
        }
        None => (t.clone(), vec![]),
    };
    let ts_unit = |p: Option<&u8>| match p.copied().unwrap_or(6) {
        0 => TimeUnit::Second,
        1..=3 => TimeUnit::Millisecond,
        4..=6 => TimeUnit::Microsecond,
        _ => TimeUnit::Nanosecond,
    };
    Some(match base.as_str() {
        "BIGINT" | "INT8" | "LONG" => DataType::Int64,
        "INT" | "INTEGER" | "INT4" => DataType::Int32,
        "SMALLINT" | "INT2" => DataType::Int16,
        "TINYINT" => DataType::Int8,
        "DOUBLE" | "DOUBLE PRECISION" | "FLOAT8" => DataType::Float64,
        "FLOAT" | "REAL" | "FLOAT4" => DataType::Float32,
        "BOOLEAN" | "BOOL" => DataType::Boolean,
        "STRING" | "VARCHAR" | "CHAR" | "TEXT" | "CHARACTER VARYING" | "CHARACTER" => {
            DataType::Utf8
        }
        "BYTES" | "VARBINARY" | "BINARY" | "BYTEA" => DataType::Binary,
        "DECIMAL" | "NUMERIC" | "DEC" => {
            let p = args.first().copied().unwrap_or(10);
            let s = args.get(1).copied().unwrap_or(0);
            if p == 0 || p > 38 || s > p {
                return None;
            }
            DataType::Decimal128(p, s as i8)
        }
        "DATE" => DataType::Date32,
        "TIMESTAMP" | "TIMESTAMP WITHOUT TIME ZONE" | "DATETIME" => {
            DataType::Timestamp(ts_unit(args.first()), None)
        }
        "TIMESTAMP_LTZ"
        | "TIMESTAMP WITH LOCAL TIME ZONE"
        | "TIMESTAMPTZ"
        | "TIMESTAMP WITH TIME ZONE" => {
            DataType::Timestamp(ts_unit(args.first()), Some("UTC".into()))
        }
        _ => return None,
    })
}

/// Milliseconds in `INTERVAL '5' SECOND`, `INTERVAL '1' HOUR`, `INTERVAL '1 day'`, ...
pub fn interval_ms(expr: &Expr) -> Option<i64> {
    let Expr::Interval(iv) = expr else {
        return None;
    };
    let text = match iv.value.as_ref() {
        Expr::Value(v) => match &v.value {
            Value::SingleQuotedString(s) | Value::DoubleQuotedString(s) => s.clone(),
            Value::Number(n, _) => n.clone(),
            _ => return None,
        },
        _ => return None,
    };
    let (amount, unit) = match &iv.leading_field {
        Some(f) => (text.trim().to_string(), f.to_string()),
        None => {
            let mut parts = text.split_whitespace();
            let a = parts.next()?.to_string();
            let u = parts.next()?.to_string();
            if parts.next().is_some() {
                return None;
            }
            (a, u)
        }
    };
    if iv.last_field.is_some() {
        return None;
    }
    let unit = unit.to_ascii_uppercase();
    let unit = unit.trim_end_matches('S');
    let ms_per = match unit {
        "MILLISECOND" => 1.0,
        "SECOND" => 1_000.0,
        "MINUTE" => 60_000.0,
        "HOUR" => 3_600_000.0,
        "DAY" => 86_400_000.0,
        "WEEK" => 7.0 * 86_400_000.0,
        _ => return None,
    };
    let amount: f64 = amount.parse().ok()?;
    let ms = amount * ms_per;
    // Beyond about 30 000 years, window arithmetic would overflow.
    if !ms.is_finite() || ms.fract().abs() > 1e-9 || ms.abs() > 1e15 {
        return None;
    }
    Some(ms as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types() {
        assert_eq!(parse_type("BIGINT"), Some(DataType::Int64));
        assert_eq!(
            parse_type("decimal(10,2)"),
            Some(DataType::Decimal128(10, 2))
        );
        assert_eq!(
            parse_type("TIMESTAMP(3)"),
            Some(DataType::Timestamp(TimeUnit::Millisecond, None))
        );
        assert_eq!(
            parse_type("TIMESTAMP(0)"),
            Some(DataType::Timestamp(TimeUnit::Second, None))
        );
        assert_eq!(parse_type("STRING"), Some(DataType::Utf8));
        assert_eq!(parse_type("VARCHAR(20)"), Some(DataType::Utf8));
        assert_eq!(parse_type("MAP<STRING, INT>"), None);
    }
}
