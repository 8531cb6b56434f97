//! Segment files: naming, listing, and reading frames with a read-ahead buffer.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use flowline_core::{Error, Result};

use crate::format::{self, Check, LEN_BYTES};
use crate::Record;

/// Bytes read at once when a reader or a scan needs more data.
const READ_AHEAD: usize = 64 * 1024;

/// `<base offset, 20 digits>.log`
pub(crate) fn segment_file_name(base: u64) -> String {
    format!("{base:020}.log")
}

/// The base offset a segment file name stands for, if it is one.
fn parse_segment_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".log")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// One segment file found in a partition folder.
#[derive(Debug, Clone)]
pub(crate) struct SegmentEntry {
    pub base: u64,
    pub path: PathBuf,
    pub len: u64,
}

/// The segment files of a partition folder, oldest first. Files that disappear while listing
/// (retention running elsewhere) are left out.
pub(crate) fn list_segments(dir: &Path) -> Result<Vec<SegmentEntry>> {
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io("list", dir, e))?;
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| Error::io("list", dir, e))?;
        let name = entry.file_name();
        let Some(base) = name.to_str().and_then(parse_segment_name) else {
            continue;
        };
        let len = match entry.metadata() {
            Ok(m) => m.len(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(Error::io("inspect", entry.path(), e)),
        };
        out.push(SegmentEntry {
            base,
            path: entry.path(),
            len,
        });
    }
    out.sort_by_key(|s| s.base);
    if out.is_empty() {
        return Err(Error::io(
            "read",
            dir,
            io::Error::new(io::ErrorKind::NotFound, "the partition has no segment file"),
        ));
    }
    Ok(out)
}

/// The error for an invalid record in a segment that is no longer written to.
pub(crate) fn corrupt(path: &Path, pos: u64, offset: u64, reason: &str) -> Error {
    Error::io(
        "read",
        path,
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("corrupt record at byte {pos} (offset {offset}) of a sealed segment: {reason}"),
        ),
    )
}

/// What comes next at a position of a segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Step {
    /// A valid record frame of `len` bytes.
    Record { len: usize, timestamp: i64 },
    /// No byte at all at this position: the clean end of the segment (for now).
    End,
    /// Bytes that are not (yet) a valid record: a record being written, a torn write, or
    /// corruption. Which one it is depends on whether the segment is still written to.
    Torn(String),
}

/// An open segment file with a read-ahead buffer.
///
/// Data already in the file never changes, except for an invalid tail that a writer truncates
/// when it opens the partition. So a valid frame in the buffer can be trusted, but a conclusion
/// of "end" or "torn" is always drawn from bytes freshly read from the file.
pub(crate) struct SegmentFile {
    pub path: PathBuf,
    file: File,
    buf: Vec<u8>,
    /// File position of `buf[0]`.
    buf_start: u64,
}

impl std::fmt::Debug for SegmentFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SegmentFile")
            .field("path", &self.path)
            .finish()
    }
}

impl SegmentFile {
    pub fn open(path: &Path) -> io::Result<Self> {
        Ok(SegmentFile {
            path: path.to_path_buf(),
            file: File::open(path)?,
            buf: Vec::new(),
            buf_start: 0,
        })
    }

    fn available(&self, pos: u64) -> &[u8] {
        let end = self.buf_start + self.buf.len() as u64;
        if pos >= self.buf_start && pos <= end {
            &self.buf[(pos - self.buf_start) as usize..]
        } else {
            &[]
        }
    }

    /// Reads at least `need` bytes at `pos` (fewer at the end of the file); returns how many
    /// bytes were asked for.
    fn load(&mut self, pos: u64, need: usize) -> io::Result<usize> {
        let file_len = self.file.metadata()?.len();
        let want = need.max(READ_AHEAD);
        let present = file_len.saturating_sub(pos).min(want as u64) as usize;
        self.buf.clear();
        self.buf.resize(present, 0);
        self.buf_start = pos;
        self.file.seek(SeekFrom::Start(pos))?;
        let mut filled = 0;
        while filled < present {
            match self.file.read(&mut self.buf[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.buf.truncate(filled);
        Ok(want)
    }

    /// What is at `pos`, where a record with offset `expected` belongs.
    pub fn step(&mut self, pos: u64, expected: u64) -> io::Result<Step> {
        let mut asked = 0;
        loop {
            let available = self.available(pos);
            let have = available.len();
            match format::check(available, expected) {
                Check::Valid { len, timestamp } => return Ok(Step::Record { len, timestamp }),
                Check::Incomplete { need } if asked == 0 || need > asked => {
                    asked = self.load(pos, need)?;
                }
                Check::Invalid(_) if asked == 0 => {
                    asked = self.load(pos, LEN_BYTES)?;
                }
                Check::Incomplete { need } => {
                    return Ok(if have == 0 {
                        Step::End
                    } else {
                        Step::Torn(format!("incomplete record: {have} of {need} bytes"))
                    })
                }
                Check::Invalid(reason) => return Ok(Step::Torn(reason)),
            }
        }
    }

    /// The record at `pos`, which [`step`](Self::step) just found valid with `len` bytes.
    pub fn record(&self, pos: u64, len: usize) -> Record {
        let frame = format::frame(&self.available(pos)[..len]);
        Record {
            offset: frame.offset,
            timestamp: frame.timestamp,
            key: frame.key.map(<[u8]>::to_vec),
            value: frame.value.to_vec(),
        }
    }
}

/// The result of reading a whole segment from its start.
#[derive(Debug, Clone)]
pub(crate) struct Scan {
    /// Bytes of valid records from the start.
    pub valid_len: u64,
    /// The offset after the last valid record.
    pub next_offset: u64,
    /// The largest timestamp of the valid records.
    pub max_timestamp: Option<i64>,
    /// Why the scan stopped before the end of the file, if it did.
    pub torn: Option<String>,
}

/// Reads a segment from its start until the first byte that is not a valid record.
pub(crate) fn scan_segment(path: &Path, base: u64) -> io::Result<Scan> {
    let mut file = SegmentFile::open(path)?;
    let mut scan = Scan {
        valid_len: 0,
        next_offset: base,
        max_timestamp: None,
        torn: None,
    };
    loop {
        match file.step(scan.valid_len, scan.next_offset)? {
            Step::Record { len, timestamp } => {
                scan.valid_len += len as u64;
                scan.next_offset += 1;
                scan.max_timestamp =
                    Some(scan.max_timestamp.map_or(timestamp, |m| m.max(timestamp)));
            }
            Step::End => return Ok(scan),
            Step::Torn(reason) => {
                scan.torn = Some(reason);
                return Ok(scan);
            }
        }
    }
}

/// Syncs a folder, so that a file created, renamed or deleted in it survives a crash.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    #[cfg(unix)]
    {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| Error::io("sync", dir, e))?;
    }
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

/// Opens (creating if needed) a lock file: the writer lock of a partition, or a group's commit
/// lock. The file holds nothing; the OS lock taken on it is what counts.
pub(crate) fn open_lock_file(path: &std::path::Path) -> flowline_core::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(|e| flowline_core::Error::io("open", path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_names() {
        assert_eq!(segment_file_name(42), "00000000000000000042.log");
        assert_eq!(parse_segment_name("00000000000000000042.log"), Some(42));
        assert_eq!(parse_segment_name("42.log"), None);
        assert_eq!(parse_segment_name("0000000000000000004x.log"), None);
        assert_eq!(parse_segment_name("00000000000000000042.tmp"), None);
    }
}
