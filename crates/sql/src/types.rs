//! Flink SQL types and intervals → Arrow types and milliseconds.

use arrow::datatypes::{DataType, TimeUnit};
use datafusion::sql::sqlparser::ast::{Expr, Value};

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
