//! A small binary codec for operator checkpoints.
//!
//! Format: every value is written little-endian with no padding and no self-description, so a
//! reader must know the layout it expects (each operator documents its own):
//!
//! | value | bytes |
//! |---|---|
//! | `u8` | 1 |
//! | `u32` | 4, little-endian |
//! | `u64`, `i64` | 8, little-endian (two's complement) |
//! | `i128` | 16, little-endian (two's complement) |
//! | `f64` | 8: the IEEE-754 bits as a little-endian `u64` (NaN payloads and `-0.0` kept) |
//! | byte slice | `u32` length, then the bytes |
//! | length / count | `u64` |
//! | vector of fixed-width values | the values back to back (its length is written separately) |
//!
//! A whole operator state is usually framed with [`Encoder::begin_frame`] /
//! [`Encoder::end_frame`] and read back with [`Decoder::frame`]: a 4-byte magic tag, a format
//! version byte, the payload length (`u64`) and an XXH64 checksum (seed 0, `u64`) of the
//! payload, then the payload. A blob written for another operator, by another format version,
//! cut short, or with any byte changed is refused before its payload is interpreted.
//!
//! Invariants:
//! * Decoding never panics and never allocates more than the input could describe: every read
//!   checks the bytes left, and every count is checked against the bytes left (times the
//!   smallest encoding of one element) before anything is reserved.
//! * Errors are [`Error::Internal`] and name what was being read (`what`, for example
//!   "window-aggregate checkpoint"), the offset and what was expected.
//! * Encoding is O(bytes written): scalars and vectors are appended with `extend_from_slice`
//!   into a buffer reserved up front, slices are borrowed on decode (no copy, no allocation).

use flowline_core::{Error, Result};

/// Appends values to a byte vector. Writing cannot fail except for a byte slice longer than
/// `u32::MAX`, which [`bytes`](Self::bytes) refuses.
pub struct Encoder<'a> {
    out: &'a mut Vec<u8>,
}

/// Where a frame header was written, to be completed by [`Encoder::end_frame`].
#[must_use = "a frame must be closed with Encoder::end_frame"]
pub struct Frame {
    header: usize,
}

/// Bytes of a frame header: magic (4), version (1), payload length (8), checksum (8).
pub const FRAME_HEADER: usize = 4 + 1 + 8 + 8;

impl<'a> Encoder<'a> {
    pub fn new(out: &'a mut Vec<u8>) -> Self {
        Encoder { out }
    }

    /// Bytes in the underlying vector (including what was there before this encoder).
    pub fn len(&self) -> usize {
        self.out.len()
    }

    pub fn is_empty(&self) -> bool {
        self.out.is_empty()
    }

    /// Reserves room for at least `additional` more bytes.
    pub fn reserve(&mut self, additional: usize) {
        self.out.reserve(additional);
    }

    pub fn u8(&mut self, v: u8) {
        self.out.push(v);
    }

    pub fn u32(&mut self, v: u32) {
        self.out.extend_from_slice(&v.to_le_bytes());
    }

    pub fn u64(&mut self, v: u64) {
        self.out.extend_from_slice(&v.to_le_bytes());
    }

    /// A length or count, as a `u64`.
    pub fn len_prefix(&mut self, n: usize) {
        self.u64(n as u64);
    }

    pub fn i64(&mut self, v: i64) {
        self.out.extend_from_slice(&v.to_le_bytes());
    }

    pub fn i128(&mut self, v: i128) {
        self.out.extend_from_slice(&v.to_le_bytes());
    }

    pub fn f64(&mut self, v: f64) {
        self.u64(v.to_bits());
    }

    /// A length-prefixed (`u32`) byte slice.
    pub fn bytes(&mut self, v: &[u8]) -> Result<()> {
        let n = u32::try_from(v.len()).map_err(|_| {
            Error::Internal(format!(
                "cannot encode a byte string of {} bytes (at most {} fit)",
                v.len(),
                u32::MAX
            ))
        })?;
        self.out.reserve(4 + v.len());
        self.u32(n);
        self.out.extend_from_slice(v);
        Ok(())
    }

    /// Bytes as they are, without a length (the reader must know how many).
    pub fn raw(&mut self, v: &[u8]) {
        self.out.extend_from_slice(v);
    }

    /// `i64` values back to back.
    pub fn i64s(&mut self, values: impl ExactSizeIterator<Item = i64>) {
        self.out.reserve(values.len() * 8);
        for v in values {
            self.out.extend_from_slice(&v.to_le_bytes());
        }
    }

    /// `i128` values back to back.
    pub fn i128s(&mut self, values: impl ExactSizeIterator<Item = i128>) {
        self.out.reserve(values.len() * 16);
        for v in values {
            self.out.extend_from_slice(&v.to_le_bytes());
        }
    }

    /// `f64` values (their bits) back to back.
    pub fn f64s(&mut self, values: impl ExactSizeIterator<Item = f64>) {
        self.out.reserve(values.len() * 8);
        for v in values {
            self.out.extend_from_slice(&v.to_bits().to_le_bytes());
        }
    }

    /// Starts a frame: writes the magic tag and version and leaves room for the payload length
    /// and checksum, which [`end_frame`](Self::end_frame) fills in.
    pub fn begin_frame(&mut self, magic: [u8; 4], version: u8) -> Frame {
        let header = self.out.len();
        self.out.extend_from_slice(&magic);
        self.out.push(version);
        self.out.extend_from_slice(&[0; 16]);
        Frame { header }
    }

    /// Completes a frame: everything written since [`begin_frame`](Self::begin_frame) is its
    /// payload.
    pub fn end_frame(&mut self, frame: Frame) {
        let start = frame.header + FRAME_HEADER;
        let len = (self.out.len() - start) as u64;
        let sum = checksum(&self.out[start..]);
        self.out[frame.header + 5..frame.header + 13].copy_from_slice(&len.to_le_bytes());
        self.out[frame.header + 13..start].copy_from_slice(&sum.to_le_bytes());
    }
}

/// Reads values written by an [`Encoder`], in the same order.
pub struct Decoder<'a> {
    buf: &'a [u8],
    pos: usize,
    what: &'static str,
}

impl<'a> Decoder<'a> {
    /// A decoder over `buf`; `what` names the data in error messages.
    pub fn new(buf: &'a [u8], what: &'static str) -> Self {
        Decoder { buf, pos: 0, what }
    }

    /// Bytes not read yet.
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Reads the plan layout an operator wrote first and refuses a state written for another
    /// plan (a checkpoint restored into a changed query).
    pub fn expect_layout(&mut self, layout: &str) -> Result<()> {
        let found = self.bytes()?;
        if found == layout.as_bytes() {
            return Ok(());
        }
        Err(Error::Internal(format!(
            "{} was written for another plan: it holds `{}`, this operator is `{layout}`",
            self.what,
            String::from_utf8_lossy(found)
        )))
    }

    /// An error about the data being read, at the current offset.
    pub fn error(&self, message: impl std::fmt::Display) -> Error {
        Error::Internal(format!(
            "{} is malformed at byte {}: {message}",
            self.what, self.pos
        ))
    }

    fn take(&mut self, n: usize, item: &str) -> Result<&'a [u8]> {
        if self.remaining() < n {
            return Err(Error::Internal(format!(
                "{} is truncated: {item} needs {n} bytes at byte {}, only {} left",
                self.what,
                self.pos,
                self.remaining()
            )));
        }
        let bytes = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(bytes)
    }

    fn array<const N: usize>(&mut self, item: &str) -> Result<[u8; N]> {
        let mut a = [0; N];
        a.copy_from_slice(self.take(N, item)?);
        Ok(a)
    }

    pub fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1, "a u8")?[0])
    }

    pub fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array("a u32")?))
    }

    pub fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array("a u64")?))
    }

    pub fn i64(&mut self) -> Result<i64> {
        Ok(i64::from_le_bytes(self.array("an i64")?))
    }

    pub fn i128(&mut self) -> Result<i128> {
        Ok(i128::from_le_bytes(self.array("an i128")?))
    }

    pub fn f64(&mut self) -> Result<f64> {
        Ok(f64::from_bits(u64::from_le_bytes(self.array("an f64")?)))
    }

    /// A count of elements that take at least `min_bytes` each: refused if the bytes left
    /// cannot hold that many, so callers may reserve `n` elements safely.
    pub fn len_prefix(&mut self, min_bytes: usize) -> Result<usize> {
        let n = self.u64()?;
        let fits = usize::try_from(n)
            .ok()
            .filter(|&n| n.saturating_mul(min_bytes.max(1)) <= self.remaining());
        fits.ok_or_else(|| {
            self.error(format!(
                "a count of {n} elements does not fit in the {} bytes left",
                self.remaining()
            ))
        })
    }

    /// A length-prefixed byte slice, borrowed from the input.
    pub fn bytes(&mut self) -> Result<&'a [u8]> {
        let n = self.u32()? as usize;
        self.take(n, "a byte string")
    }

    /// `n` bytes without a length prefix.
    pub fn raw(&mut self, n: usize) -> Result<&'a [u8]> {
        self.take(n, "raw bytes")
    }

    fn fixed<const N: usize, T>(
        &mut self,
        n: usize,
        item: &str,
        f: impl Fn([u8; N]) -> T,
    ) -> Result<Vec<T>> {
        let bytes = self.take(n.saturating_mul(N), item)?;
        Ok(bytes
            .chunks_exact(N)
            .map(|c| {
                let mut a = [0; N];
                a.copy_from_slice(c);
                f(a)
            })
            .collect())
    }

    /// `n` `i64` values written by [`Encoder::i64s`].
    pub fn i64s(&mut self, n: usize) -> Result<Vec<i64>> {
        self.fixed(n, "a vector of i64", i64::from_le_bytes)
    }

    /// `n` `i128` values written by [`Encoder::i128s`].
    pub fn i128s(&mut self, n: usize) -> Result<Vec<i128>> {
        self.fixed(n, "a vector of i128", i128::from_le_bytes)
    }

    /// `n` `f64` values written by [`Encoder::f64s`].
    pub fn f64s(&mut self, n: usize) -> Result<Vec<f64>> {
        self.fixed(n, "a vector of f64", |b| {
            f64::from_bits(u64::from_le_bytes(b))
        })
    }

    /// Reads a frame written by [`Encoder::begin_frame`]/[`Encoder::end_frame`] that must
    /// span the rest of the input: checks magic, version, length and checksum, and returns a
    /// decoder over the payload.
    pub fn frame(&mut self, magic: [u8; 4], version: u8) -> Result<Decoder<'a>> {
        let found = self.take(4, "the magic tag")?;
        if found != magic {
            return Err(Error::Internal(format!(
                "{} does not start with the tag {:?} (found {:?}): not a state written by this \
                 operator",
                self.what,
                String::from_utf8_lossy(&magic),
                String::from_utf8_lossy(found)
            )));
        }
        let v = self.u8()?;
        if v != version {
            return Err(Error::Internal(format!(
                "{} has format version {v}, this build reads version {version}",
                self.what
            )));
        }
        let len = self.u64()?;
        let sum = self.u64()?;
        if len != self.remaining() as u64 {
            return Err(Error::Internal(format!(
                "{} says its payload has {len} bytes but {} follow (truncated or padded)",
                self.what,
                self.remaining()
            )));
        }
        let payload = self.take(self.remaining(), "the payload")?;
        let actual = checksum(payload);
        if actual != sum {
            return Err(Error::Internal(format!(
                "{} is corrupt: checksum {actual:016x} does not match the recorded {sum:016x}",
                self.what
            )));
        }
        Ok(Decoder::new(payload, self.what))
    }

    /// Fails unless every byte was read.
    pub fn finish(&self) -> Result<()> {
        if self.remaining() == 0 {
            Ok(())
        } else {
            Err(self.error(format!(
                "{} unexpected bytes after the end",
                self.remaining()
            )))
        }
    }
}

const P1: u64 = 0x9E37_79B1_85EB_CA87;
const P2: u64 = 0xC2B2_AE3D_27D4_EB4F;
const P3: u64 = 0x1656_67B1_9E37_79F9;
const P4: u64 = 0x85EB_CA77_C2B2_AE63;
const P5: u64 = 0x27D4_EB2F_1656_67C5;

fn le64(b: &[u8]) -> u64 {
    let mut a = [0; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_le_bytes(a)
}

fn round(acc: u64, input: u64) -> u64 {
    acc.wrapping_add(input.wrapping_mul(P2))
        .rotate_left(31)
        .wrapping_mul(P1)
}

fn merge_round(acc: u64, lane: u64) -> u64 {
    (acc ^ round(0, lane)).wrapping_mul(P1).wrapping_add(P4)
}

/// One record batch as an Arrow IPC stream, for the rows an operator checkpoints.
pub fn batch_to_ipc(batch: &arrow::array::RecordBatch) -> Result<Vec<u8>> {
    let mut ipc = vec![];
    let mut writer = arrow::ipc::writer::StreamWriter::try_new(&mut ipc, &batch.schema())?;
    writer.write(batch)?;
    writer.finish()?;
    drop(writer);
    Ok(ipc)
}

/// The record batch written by [`batch_to_ipc`], checked to hold columns of `schema`'s types
/// and labelled with `schema` (nullability relaxed where the rows hold NULLs); errors name
/// `what` was being read.
pub fn batch_from_ipc(
    ipc: &[u8],
    what: &str,
    schema: &arrow::datatypes::SchemaRef,
) -> Result<arrow::array::RecordBatch> {
    let mut reader = arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(ipc), None)
        .map_err(|e| Error::Internal(format!("{what}: rows: {e}")))?;
    let batch = match reader.next() {
        Some(b) => b.map_err(|e| Error::Internal(format!("{what}: rows: {e}")))?,
        None => return Err(Error::Internal(format!("{what}: no rows batch"))),
    };
    let expected: Vec<_> = schema.fields().iter().map(|f| f.data_type()).collect();
    let found: Vec<_> = batch
        .schema_ref()
        .fields()
        .iter()
        .map(|f| f.data_type())
        .collect();
    if expected != found {
        return Err(Error::Internal(format!(
            "{what}: rows with columns of types {found:?}, expected {expected:?}"
        )));
    }
    Ok(arrow::array::RecordBatch::try_new(
        crate::rows::relax_nullability(schema, batch.columns()),
        batch.columns().to_vec(),
    )?)
}

/// Appends an operator's state to `out` with `write`; on error `out` is left as it was.
pub fn snapshot_into(
    out: &mut Vec<u8>,
    write: impl FnOnce(&mut Vec<u8>) -> Result<()>,
) -> Result<()> {
    let at = out.len();
    let result = write(out);
    if result.is_err() {
        out.truncate(at);
    }
    result
}

/// XXH64 with seed 0: a stable, fast (several GB/s) checksum of `data`.
pub fn checksum(data: &[u8]) -> u64 {
    let mut h = if data.len() >= 32 {
        let mut v = [P1.wrapping_add(P2), P2, 0, 0u64.wrapping_sub(P1)];
        let stripes = data.chunks_exact(32);
        for stripe in stripes {
            v[0] = round(v[0], le64(&stripe[0..]));
            v[1] = round(v[1], le64(&stripe[8..]));
            v[2] = round(v[2], le64(&stripe[16..]));
            v[3] = round(v[3], le64(&stripe[24..]));
        }
        let mut h = v[0]
            .rotate_left(1)
            .wrapping_add(v[1].rotate_left(7))
            .wrapping_add(v[2].rotate_left(12))
            .wrapping_add(v[3].rotate_left(18));
        for lane in v {
            h = merge_round(h, lane);
        }
        h
    } else {
        P5
    };
    h = h.wrapping_add(data.len() as u64);
    let tail = data.chunks_exact(32).remainder();
    let words = tail.chunks_exact(8);
    let mut rest = words.remainder();
    for w in words {
        h ^= round(0, le64(w));
        h = h.rotate_left(27).wrapping_mul(P1).wrapping_add(P4);
    }
    if rest.len() >= 4 {
        let mut a = [0; 4];
        a.copy_from_slice(&rest[..4]);
        h ^= u64::from(u32::from_le_bytes(a)).wrapping_mul(P1);
        h = h.rotate_left(23).wrapping_mul(P2).wrapping_add(P3);
        rest = &rest[4..];
    }
    for &b in rest {
        h ^= u64::from(b).wrapping_mul(P5);
        h = h.rotate_left(11).wrapping_mul(P1);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(P2);
    h ^= h >> 29;
    h = h.wrapping_mul(P3);
    h ^= h >> 32;
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_is_xxh64() {
        assert_eq!(checksum(b""), 0xEF46_DB37_51D8_E999);
        assert_eq!(checksum(b"a"), 0xD24E_C4F1_A98C_6E5B);
        assert_eq!(checksum(b"abc"), 0x44BC_2CF5_AD77_0999);
        assert_eq!(
            checksum(b"Nobody inspects the spammish repetition"),
            0xFBCE_A83C_8A37_8BF1
        );
        // xxhsum's sanity buffer: every code path (stripes, words, 4 bytes, single bytes).
        let mut gen: u32 = 2_654_435_761;
        let buffer: Vec<u8> = (0..101)
            .map(|_| {
                let b = (gen >> 24) as u8;
                gen = gen.wrapping_mul(gen);
                b
            })
            .collect();
        assert_eq!(checksum(&buffer[..1]), 0x4FCE_394C_C889_52D8);
        assert_eq!(checksum(&buffer[..14]), 0xCFFA_8DB8_81BC_3A3D);
        assert_eq!(checksum(&buffer), 0x0EAB_5433_84F8_78AD);
    }

    #[test]
    fn values_round_trip() {
        let mut out = vec![7u8]; // an encoder appends
        let mut e = Encoder::new(&mut out);
        e.u8(200);
        e.u32(0xdead_beef);
        e.u64(u64::MAX - 1);
        e.i64(i64::MIN);
        e.i128(-(1i128 << 100));
        e.f64(-0.0);
        e.f64(f64::NAN);
        e.bytes(b"hello").unwrap();
        e.bytes(b"").unwrap();
        e.len_prefix(3);
        e.i64s([1i64, -2, 3].into_iter());
        e.i128s([i128::MAX, 0].into_iter());
        e.f64s([1.5f64, f64::INFINITY].into_iter());
        e.raw(b"xy");
        assert_eq!(out[0], 7);
        let mut d = Decoder::new(&out[1..], "test data");
        assert_eq!(d.u8().unwrap(), 200);
        assert_eq!(d.u32().unwrap(), 0xdead_beef);
        assert_eq!(d.u64().unwrap(), u64::MAX - 1);
        assert_eq!(d.i64().unwrap(), i64::MIN);
        assert_eq!(d.i128().unwrap(), -(1i128 << 100));
        assert_eq!(d.f64().unwrap().to_bits(), (-0.0f64).to_bits());
        assert!(d.f64().unwrap().is_nan());
        assert_eq!(d.bytes().unwrap(), b"hello");
        assert_eq!(d.bytes().unwrap(), b"");
        let n = d.len_prefix(8).unwrap();
        assert_eq!(d.i64s(n).unwrap(), vec![1, -2, 3]);
        assert_eq!(d.i128s(2).unwrap(), vec![i128::MAX, 0]);
        assert_eq!(d.f64s(2).unwrap(), vec![1.5, f64::INFINITY]);
        assert!(d.finish().is_err());
        assert_eq!(d.raw(2).unwrap(), b"xy");
        d.finish().unwrap();
        assert!(d
            .u8()
            .unwrap_err()
            .to_string()
            .contains("test data is truncated"));
    }

    #[test]
    fn bad_input_is_an_error_not_a_panic() {
        let mut d = Decoder::new(&[5, 0, 0, 0, 1], "blob");
        assert!(d.bytes().is_err()); // says 5 bytes, 1 follows
        let mut d = Decoder::new(&[0xff; 16], "blob");
        assert!(d.len_prefix(1).is_err()); // a huge count
        let mut d = Decoder::new(&[0xff; 16], "blob");
        assert!(d.i64s(usize::MAX).is_err());
        assert!(d.i128s(usize::MAX / 8).is_err());
    }

    #[test]
    fn frames_refuse_wrong_tag_version_length_and_checksum() {
        let mut out = b"prefix".to_vec();
        let mut e = Encoder::new(&mut out);
        let frame = e.begin_frame(*b"TEST", 3);
        e.bytes(b"payload").unwrap();
        e.i64(42);
        e.end_frame(frame);
        let blob = &out[6..];
        let mut d = Decoder::new(blob, "state");
        let mut p = d.frame(*b"TEST", 3).unwrap();
        assert_eq!(p.bytes().unwrap(), b"payload");
        assert_eq!(p.i64().unwrap(), 42);
        p.finish().unwrap();

        let err = |b: &[u8], magic: [u8; 4], v: u8| {
            Decoder::new(b, "state")
                .frame(magic, v)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default()
        };
        assert!(err(blob, *b"OTHR", 3).contains("tag"));
        assert!(err(blob, *b"TEST", 4).contains("version 3"));
        for cut in 0..blob.len() {
            assert!(!err(&blob[..cut], *b"TEST", 3).is_empty(), "cut at {cut}");
        }
        let mut padded = blob.to_vec();
        padded.push(0);
        assert!(err(&padded, *b"TEST", 3).contains("follow"));
        for i in FRAME_HEADER..blob.len() {
            let mut bad = blob.to_vec();
            bad[i] ^= 0x10;
            assert!(err(&bad, *b"TEST", 3).contains("corrupt"), "byte {i}");
        }
    }
}
