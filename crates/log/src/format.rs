//! The record frame: how one record is laid out in a segment file.
//!
//! ```text
//! length     u32 LE   bytes after this field: crc + body (so a frame is 4 + length bytes)
//! crc        u32 LE   CRC-32 (IEEE 802.3, as zlib and crc32fast compute it) of the body
//! body:
//!   version  u8       1
//!   offset   u64 LE   the record's offset in its partition
//!   timestamp i64 LE  milliseconds since the Unix epoch
//!   key_len  i32 LE   -1 for "no key", else the key's length
//!   key      key_len bytes
//!   value    the rest of the body
//! ```
//!
//! All integers are little-endian. A frame is *valid* when its length field is between
//! `MIN_FRAME - 4` and [`MAX_RECORD_BYTES`], all its bytes are present, the CRC matches, the
//! version is 1, the offset is the one expected at that place, and the key fits in the body.
//! These functions are pure (no I/O), so they can be fuzzed on their own.

/// Bytes of the length prefix.
pub const LEN_BYTES: usize = 4;
/// Bytes of the checksum.
pub const CRC_BYTES: usize = 4;
/// Bytes of the fixed part of the body: version, offset, timestamp, key length.
pub const FIXED_BODY: usize = 1 + 8 + 8 + 4;
/// The smallest frame: a record without key and with an empty value.
pub const MIN_FRAME: usize = LEN_BYTES + CRC_BYTES + FIXED_BODY;
/// The largest value of the length field (1 GiB); larger frames are invalid.
pub const MAX_RECORD_BYTES: usize = 1 << 30;
/// The version byte written today.
pub const RECORD_VERSION: u8 = 1;

/// Bytes a record takes in a segment file, frame included.
pub fn encoded_len(key: Option<&[u8]>, value: &[u8]) -> usize {
    MIN_FRAME + key.map_or(0, <[u8]>::len) + value.len()
}

/// Appends the frame of one record to `out`. The caller checks that
/// `encoded_len(key, value) - LEN_BYTES <= MAX_RECORD_BYTES`.
pub fn encode(offset: u64, timestamp: i64, key: Option<&[u8]>, value: &[u8], out: &mut Vec<u8>) {
    let start = out.len();
    let length = (encoded_len(key, value) - LEN_BYTES) as u32;
    out.extend_from_slice(&length.to_le_bytes());
    out.extend_from_slice(&[0; CRC_BYTES]);
    out.push(RECORD_VERSION);
    out.extend_from_slice(&offset.to_le_bytes());
    out.extend_from_slice(&timestamp.to_le_bytes());
    match key {
        Some(k) => {
            out.extend_from_slice(&(k.len() as i32).to_le_bytes());
            out.extend_from_slice(k);
        }
        None => out.extend_from_slice(&(-1i32).to_le_bytes()),
    }
    out.extend_from_slice(value);
    let crc = crc32fast::hash(&out[start + LEN_BYTES + CRC_BYTES..]);
    out[start + LEN_BYTES..start + LEN_BYTES + CRC_BYTES].copy_from_slice(&crc.to_le_bytes());
}

/// What the bytes at some position of a segment are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    /// A valid frame of `len` bytes.
    Valid { len: usize, timestamp: i64 },
    /// Fewer bytes than the frame needs: `need` is the number of bytes needed to know more
    /// (4 while the length is unknown, else the whole frame). An empty buffer is `Incomplete`.
    Incomplete { need: usize },
    /// The bytes are not a valid frame (wrong checksum, length, version, offset or key length).
    Invalid(String),
}

/// Checks the frame at the start of `buf`, which must carry `expected_offset`.
pub fn check(buf: &[u8], expected_offset: u64) -> Check {
    if buf.len() < LEN_BYTES {
        return Check::Incomplete { need: LEN_BYTES };
    }
    let length = u32::from_le_bytes(buf[..4].try_into().unwrap_or_default()) as usize;
    if !(MIN_FRAME - LEN_BYTES..=MAX_RECORD_BYTES).contains(&length) {
        return Check::Invalid(format!("impossible record length {length}"));
    }
    let need = LEN_BYTES + length;
    if buf.len() < need {
        return Check::Incomplete { need };
    }
    let stored_crc = u32::from_le_bytes(buf[4..8].try_into().unwrap_or_default());
    let body = &buf[LEN_BYTES + CRC_BYTES..need];
    let crc = crc32fast::hash(body);
    if crc != stored_crc {
        return Check::Invalid(format!(
            "checksum mismatch (stored {stored_crc:08x}, computed {crc:08x})"
        ));
    }
    if body[0] != RECORD_VERSION {
        return Check::Invalid(format!("unknown record version {}", body[0]));
    }
    let offset = u64::from_le_bytes(body[1..9].try_into().unwrap_or_default());
    if offset != expected_offset {
        return Check::Invalid(format!(
            "record carries offset {offset} where offset {expected_offset} belongs"
        ));
    }
    let timestamp = i64::from_le_bytes(body[9..17].try_into().unwrap_or_default());
    let key_len = i32::from_le_bytes(body[17..21].try_into().unwrap_or_default());
    if key_len < -1 || key_len as i64 > (body.len() - FIXED_BODY) as i64 {
        return Check::Invalid(format!("impossible key length {key_len}"));
    }
    Check::Valid {
        len: need,
        timestamp,
    }
}

/// A decoded frame, borrowing its key and value from the buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    pub offset: u64,
    pub timestamp: i64,
    pub key: Option<&'a [u8]>,
    pub value: &'a [u8],
    /// Bytes of the whole frame.
    pub len: usize,
}

/// Decodes the frame at the start of `buf`: `Ok(None)` when it is incomplete, `Err(reason)` when
/// it is invalid.
pub fn decode(buf: &[u8], expected_offset: u64) -> Result<Option<Frame<'_>>, String> {
    match check(buf, expected_offset) {
        Check::Valid { len, .. } => Ok(Some(frame(&buf[..len]))),
        Check::Incomplete { .. } => Ok(None),
        Check::Invalid(reason) => Err(reason),
    }
}

/// Splits a frame that [`check`] found valid (`buf` is exactly the frame).
pub(crate) fn frame(buf: &[u8]) -> Frame<'_> {
    let body = &buf[LEN_BYTES + CRC_BYTES..];
    let offset = u64::from_le_bytes(body[1..9].try_into().unwrap_or_default());
    let timestamp = i64::from_le_bytes(body[9..17].try_into().unwrap_or_default());
    let key_len = i32::from_le_bytes(body[17..21].try_into().unwrap_or_default());
    let rest = &body[FIXED_BODY..];
    let (key, value) = if key_len < 0 {
        (None, rest)
    } else {
        let (k, v) = rest.split_at(key_len as usize);
        (Some(k), v)
    };
    Frame {
        offset,
        timestamp,
        key,
        value,
        len: buf.len(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_check_decode_round_trip() {
        let mut buf = Vec::new();
        encode(7, -5, Some(b"k"), b"value", &mut buf);
        encode(8, 9, None, b"", &mut buf);
        assert_eq!(buf.len(), encoded_len(Some(b"k"), b"value") + MIN_FRAME);
        let first = decode(&buf, 7).unwrap().unwrap();
        assert_eq!(
            (first.offset, first.timestamp, first.key, first.value),
            (7, -5, Some(&b"k"[..]), &b"value"[..])
        );
        let second = decode(&buf[first.len..], 8).unwrap().unwrap();
        assert_eq!(
            (second.key, second.value, second.len),
            (None, &b""[..], MIN_FRAME)
        );
        // Wrong expected offset, every truncation, every flipped byte.
        assert!(decode(&buf, 8).unwrap_err().contains("offset 7"));
        for cut in 0..first.len {
            assert_eq!(decode(&buf[..cut], 7), Ok(None), "cut at {cut}");
        }
        for i in 0..first.len {
            let mut bad = buf.clone();
            bad[i] ^= 0x40;
            assert!(
                !matches!(check(&bad, 7), Check::Valid { .. }),
                "flipped byte {i} went unnoticed"
            );
        }
        // Zeros (a file extended by the file system after a crash) are invalid, not a record.
        assert!(matches!(check(&[0; 64], 0), Check::Invalid(_)));
    }
}
