//! Hive-style partition folders (`key=value`): encoding on the sink side, decoding on the
//! source side, so that every value survives a round trip.

/// The folder value used for a NULL partition value (the Hive convention).
pub(crate) const DEFAULT_PARTITION: &str = "__HIVE_DEFAULT_PARTITION__";

/// Whether `b` must be percent-encoded inside a partition folder name.
fn needs_escape(b: u8) -> bool {
    matches!(b, b'/' | b':' | b'=' | b'%' | b'\\' | b'#' | b'?') || b < 0x20 || b == 0x7f
}

/// Percent-encodes `value` for use as a partition folder value, appending to `out`.
pub(crate) fn encode_into(value: &str, out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for ch in value.chars() {
        if ch.is_ascii() && needs_escape(ch as u8) {
            let b = ch as u8;
            out.push('%');
            out.push(HEX[(b >> 4) as usize] as char);
            out.push(HEX[(b & 0xf) as usize] as char);
        } else {
            out.push(ch);
        }
    }
}

#[cfg(test)]
pub(crate) fn encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    encode_into(value, &mut out);
    out
}

/// Decodes `%XX` sequences. Invalid sequences are kept as they are.
pub(crate) fn decode(value: &str) -> String {
    if !value.contains('%') {
        return value.to_string();
    }
    fn hex(b: u8) -> Option<u8> {
        match b {
            b'0'..=b'9' => Some(b - b'0'),
            b'a'..=b'f' => Some(b - b'a' + 10),
            b'A'..=b'F' => Some(b - b'A' + 10),
            _ => None,
        }
    }
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push(h << 4 | l);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Splits a folder name `key=value` into its key and decoded value.
pub(crate) fn parse_segment(name: &str) -> Option<(String, String)> {
    let (key, value) = name.split_once('=')?;
    if key.is_empty() {
        return None;
    }
    Some((decode(key), decode(value)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        for v in [
            "2026-03-17T10:00:00",
            "a/b=c%d\\e#f?g",
            "plain",
            "",
            "é:\n",
            "%",
            "%4",
        ] {
            assert_eq!(decode(&encode(v)), v, "value {v:?}");
        }
        assert_eq!(encode("10:00"), "10%3A00");
        assert_eq!(decode("10%3a00"), "10:00");
        assert_eq!(decode("100%"), "100%");
        assert_eq!(decode("%zz"), "%zz");
        assert_eq!(
            parse_segment("ts=2026-03-17T10%3A00%3A00"),
            Some(("ts".into(), "2026-03-17T10:00:00".into()))
        );
        assert_eq!(parse_segment("plain"), None);
        assert_eq!(parse_segment("=x"), None);
    }
}
