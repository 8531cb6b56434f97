//! Durations (`7d`, `12h`, `30m`, `10s`, `500ms`) and sizes (`512MB`, `1GiB`) as users write
//! them on the command line and in options.

use flowline_core::{Error, Result};

/// Milliseconds in `text`: a whole number followed by `ms`, `s`, `m`, `h`, `d` or `w`
/// (spaces allowed between them), e.g. `7d`, `12h`, `30m`, `10s`, `500ms`.
pub fn parse_duration_ms(text: &str) -> Result<i64> {
    let bad = |why: &str| {
        Error::Plan(format!(
            "invalid duration `{text}`: {why} (write a whole number and a unit: ms, s, m, h, d or w, e.g. 7d, 12h, 500ms)"
        ))
    };
    let (number, unit) = split_number(text).ok_or_else(|| bad("no number"))?;
    let factor: u64 = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" | "min" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        "w" => 7 * 86_400_000,
        "" => return Err(bad("missing unit")),
        _ => return Err(bad(&format!("unknown unit `{unit}`"))),
    };
    number
        .checked_mul(factor)
        .and_then(|ms| i64::try_from(ms).ok())
        .ok_or_else(|| bad("too large"))
}

/// Bytes in `text`: a whole number, optionally followed by a unit: `B`; `KB`, `MB`, `GB`, `TB`
/// (powers of 1000); `KiB`, `MiB`, `GiB`, `TiB` (powers of 1024). Units ignore case.
pub fn parse_bytes(text: &str) -> Result<u64> {
    let bad = |why: &str| {
        Error::Plan(format!(
            "invalid size `{text}`: {why} (write a whole number and optionally a unit: B, KB, MB, GB, TB, KiB, MiB, GiB, TiB, e.g. 512MB or 1GiB)"
        ))
    };
    let (number, unit) = split_number(text).ok_or_else(|| bad("no number"))?;
    let factor: u64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        "tib" => 1 << 40,
        _ => return Err(bad(&format!("unknown unit `{unit}`"))),
    };
    number.checked_mul(factor).ok_or_else(|| bad("too large"))
}

/// `7d` → (7, "d"); `None` when there is no leading number or it overflows.
fn split_number(text: &str) -> Option<(u64, &str)> {
    let text = text.trim();
    let digits = text.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return None;
    }
    let number = text[..digits].parse().ok()?;
    Some((number, text[digits..].trim()))
}

/// The shortest exact form of a duration: `604800000` → `7d`, `1500` → `1500ms`.
pub fn format_duration_ms(ms: i64) -> String {
    for (unit, factor) in [
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1_000),
    ] {
        if ms != 0 && ms % factor == 0 {
            return format!("{}{unit}", ms / factor);
        }
    }
    format!("{ms}ms")
}

/// The shortest exact form of a size: `1073741824` → `1GiB`, `512000000` → `512MB`, `100` → `100B`.
pub fn format_bytes(bytes: u64) -> String {
    let units: [(&str, u64); 8] = [
        ("TiB", 1 << 40),
        ("TB", 1_000_000_000_000),
        ("GiB", 1 << 30),
        ("GB", 1_000_000_000),
        ("MiB", 1 << 20),
        ("MB", 1_000_000),
        ("KiB", 1 << 10),
        ("KB", 1_000),
    ];
    for (unit, factor) in units {
        if bytes != 0 && bytes.is_multiple_of(factor) {
            return format!("{}{unit}", bytes / factor);
        }
    }
    format!("{bytes}B")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration_ms("7d").unwrap(), 604_800_000);
        assert_eq!(parse_duration_ms("12h").unwrap(), 43_200_000);
        assert_eq!(parse_duration_ms("30m").unwrap(), 1_800_000);
        assert_eq!(parse_duration_ms("10s").unwrap(), 10_000);
        assert_eq!(parse_duration_ms(" 500 ms ").unwrap(), 500);
        assert_eq!(parse_duration_ms("2w").unwrap(), 1_209_600_000);
        for bad in ["", "d", "7", "7x", "-1s", "1.5h", "99999999999999999999d"] {
            let e = parse_duration_ms(bad).unwrap_err().to_string();
            assert!(e.contains("invalid duration"), "{bad}: {e}");
        }
        assert_eq!(format_duration_ms(604_800_000), "7d");
        assert_eq!(format_duration_ms(90_000), "90s");
        assert_eq!(format_duration_ms(1_500), "1500ms");
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_bytes("512MB").unwrap(), 512_000_000);
        assert_eq!(parse_bytes("1GiB").unwrap(), 1 << 30);
        assert_eq!(parse_bytes("64mib").unwrap(), 64 << 20);
        assert_eq!(parse_bytes("1gb").unwrap(), 1_000_000_000);
        assert_eq!(parse_bytes("4096").unwrap(), 4096);
        assert_eq!(parse_bytes("10 KiB").unwrap(), 10_240);
        for bad in ["", "MB", "1.5GB", "12XB", "99999999999TiB"] {
            let e = parse_bytes(bad).unwrap_err().to_string();
            assert!(e.contains("invalid size"), "{bad}: {e}");
        }
        assert_eq!(format_bytes(1 << 30), "1GiB");
        assert_eq!(format_bytes(512_000_000), "512MB");
        assert_eq!(format_bytes(100), "100B");
        assert_eq!(format_bytes(0), "0B");
    }
}
