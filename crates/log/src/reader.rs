//! [`PartitionReader`]: lock-free reads of one partition, cheap to call repeatedly.

use std::path::PathBuf;

use flowline_core::{Error, Result};

use crate::segment::{corrupt, list_segments, SegmentFile, Step};
use crate::Record;

/// A sparse index entry is added at most every this many bytes of a segment.
const INDEX_INTERVAL: u64 = 4096;

/// How many times one call re-positions after retention deleted the segment under it.
const MAX_RESTARTS: usize = 64;

/// What a reader knows of one segment.
#[derive(Debug)]
struct SegState {
    base: u64,
    path: PathBuf,
    /// Sparse index (offset, byte position), starting with (base, 0), ascending.
    index: Vec<(u64, u64)>,
    /// Records from the start up to here are known valid: `scanned_offset` is at `scanned_pos`.
    scanned_offset: u64,
    scanned_pos: u64,
}

/// Where the previous read stopped.
#[derive(Debug, Clone, Copy)]
struct Cursor {
    base: u64,
    pos: u64,
    next: u64,
}

enum Got {
    Record {
        len: usize,
    },
    End,
    Torn(String),
    /// The segment file was deleted (retention) before it could be opened.
    Gone,
}

/// Reads one partition. Takes no lock: any number of readers, in any number of processes, may
/// read while one writer appends. Keeps the current segment open, the position where the last
/// read stopped (a read from there costs no seek), and a sparse in-memory index per segment
/// (offset → byte position, every 4 KiB), built as segments are read.
///
/// Returns only valid records; stops at the end of the active segment or at a record being
/// written there. An invalid record in a sealed segment is an error naming the file and offset.
#[derive(Debug)]
pub struct PartitionReader {
    topic: String,
    partition: u32,
    dir: PathBuf,
    segs: Vec<SegState>,
    open: Option<(u64, SegmentFile)>,
    cursor: Option<Cursor>,
}

impl PartitionReader {
    pub(crate) fn new(topic: &str, partition: u32, dir: PathBuf) -> Result<PartitionReader> {
        let mut reader = PartitionReader {
            topic: topic.to_string(),
            partition,
            dir,
            segs: Vec::new(),
            open: None,
            cursor: None,
        };
        reader.refresh()?;
        Ok(reader)
    }

    pub fn partition(&self) -> u32 {
        self.partition
    }

    /// Reads up to `max_records` records (and about `max_bytes` bytes of frames, but at least one
    /// record when there is one) starting at offset `from`.
    ///
    /// Returns an empty vector at the end of the partition. When `from` is below the start offset
    /// (retention deleted those records), reading starts at the start offset: the first record's
    /// offset shows the gap. `from` beyond the end offset is an error.
    pub fn read(&mut self, from: u64, max_records: usize, max_bytes: usize) -> Result<Vec<Record>> {
        let mut out = Vec::new();
        if max_records == 0 {
            return Ok(out);
        }
        let resume = self
            .cursor
            .filter(|c| c.next == from)
            .and_then(|c| Some((self.index_of(c.base)?, c.pos, c.next)));
        let (mut i, mut pos, mut next, mut from) = match resume {
            Some((i, pos, next)) => (i, pos, next, from),
            None => self.position(from)?,
        };
        let mut bytes = 0usize;
        let mut restarts = 0;
        loop {
            let at_newest = i + 1 == self.segs.len();
            match self.step(i, pos, next)? {
                Got::Record { len } => {
                    if next >= from {
                        if let Some((_, file)) = &self.open {
                            out.push(file.record(pos, len));
                        }
                        bytes += len;
                    }
                    pos += len as u64;
                    next += 1;
                    if !out.is_empty() && (out.len() >= max_records || bytes >= max_bytes) {
                        break;
                    }
                }
                // A sealed segment (a newer one was listed before this read): its end is final.
                Got::End if !at_newest => {
                    let following = self.segs[i + 1].base;
                    if following != next {
                        return Err(corrupt(
                            &self.segs[i].path,
                            pos,
                            next,
                            &format!("the segment ends before offset {next}, but the next segment starts at offset {following}"),
                        ));
                    }
                    i += 1;
                    pos = 0;
                }
                Got::Torn(reason) if !at_newest => {
                    return Err(corrupt(&self.segs[i].path, pos, next, &reason));
                }
                // The end of the newest segment known: look for a newer one.
                Got::End | Got::Torn(_) => {
                    let base = self.segs[i].base;
                    self.refresh()?;
                    match self.index_of(base) {
                        Some(j) if j + 1 < self.segs.len() => i = j, // sealed meanwhile: read on
                        Some(j) => {
                            i = j;
                            if out.is_empty() && next < from {
                                return Err(Error::Plan(format!(
                                    "offset {from} is beyond the end ({next}) of partition {} of topic `{}`",
                                    self.partition, self.topic
                                )));
                            }
                            break;
                        }
                        None => {
                            // Deleted by retention while being read.
                            if !out.is_empty() {
                                self.cursor = None;
                                return Ok(out);
                            }
                            (i, pos, next, from) = self.restart(from, &mut restarts)?;
                        }
                    }
                }
                Got::Gone => {
                    if !out.is_empty() {
                        self.cursor = None;
                        return Ok(out);
                    }
                    (i, pos, next, from) = self.restart(from, &mut restarts)?;
                }
            }
        }
        self.cursor = Some(Cursor {
            base: self.segs[i].base,
            pos,
            next,
        });
        Ok(out)
    }

    /// (start offset, end offset) of the partition now: records `start..end` can be read.
    pub fn offsets(&mut self) -> Result<(u64, u64)> {
        self.refresh()?;
        let mut restarts = 0;
        loop {
            let i = self.segs.len() - 1;
            let (mut pos, mut next) = (self.segs[i].scanned_pos, self.segs[i].scanned_offset);
            loop {
                match self.step(i, pos, next)? {
                    Got::Record { len } => {
                        pos += len as u64;
                        next += 1;
                    }
                    Got::End | Got::Torn(_) => return Ok((self.segs[0].base, next)),
                    Got::Gone => break,
                }
            }
            restarts += 1;
            if restarts > MAX_RESTARTS {
                return Err(self.unstable());
            }
            self.refresh()?;
        }
    }

    /// Re-lists the segments after the one being read disappeared; positions at `from`, or at
    /// the new start offset when `from` is below it.
    fn restart(&mut self, from: u64, restarts: &mut usize) -> Result<(usize, u64, u64, u64)> {
        *restarts += 1;
        if *restarts > MAX_RESTARTS {
            return Err(self.unstable());
        }
        self.position(from)
    }

    fn unstable(&self) -> Error {
        Error::io(
            "read",
            &self.dir,
            std::io::Error::other("segments keep disappearing while being read"),
        )
    }

    /// Lists the segments again (keeping what is known of those still there) and returns
    /// (segment index, byte position, offset at that position, clamped `from`) to read `from`.
    fn position(&mut self, from: u64) -> Result<(usize, u64, u64, u64)> {
        self.refresh()?;
        let from = from.max(self.segs[0].base);
        let i = self
            .segs
            .partition_point(|s| s.base <= from)
            .saturating_sub(1);
        let s = &self.segs[i];
        let (offset, pos) = if from >= s.scanned_offset {
            (s.scanned_offset, s.scanned_pos)
        } else {
            let j = s.index.partition_point(|e| e.0 <= from).saturating_sub(1);
            s.index[j]
        };
        Ok((i, pos, offset, from))
    }

    fn index_of(&self, base: u64) -> Option<usize> {
        self.segs.binary_search_by_key(&base, |s| s.base).ok()
    }

    fn refresh(&mut self) -> Result<()> {
        let listing = list_segments(&self.dir)?;
        let mut old = std::mem::take(&mut self.segs).into_iter().peekable();
        let mut segs = Vec::with_capacity(listing.len());
        for entry in listing {
            while old.next_if(|s| s.base < entry.base).is_some() {}
            match old.next_if(|s| s.base == entry.base) {
                Some(known) => segs.push(known),
                None => segs.push(SegState {
                    base: entry.base,
                    path: entry.path,
                    index: vec![(entry.base, 0)],
                    scanned_offset: entry.base,
                    scanned_pos: 0,
                }),
            }
        }
        self.segs = segs;
        if let Some((base, _)) = &self.open {
            if self.index_of(*base).is_none() {
                self.open = None;
            }
        }
        Ok(())
    }

    /// What is at `pos` of segment `i`, where offset `expected` belongs.
    fn step(&mut self, i: usize, pos: u64, expected: u64) -> Result<Got> {
        let seg = &self.segs[i];
        let file = match &mut self.open {
            Some((base, file)) if *base == seg.base => file,
            slot => match SegmentFile::open(&seg.path) {
                Ok(file) => &mut slot.insert((seg.base, file)).1,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Got::Gone),
                Err(e) => return Err(Error::io("open", &seg.path, e)),
            },
        };
        let step = file
            .step(pos, expected)
            .map_err(|e| Error::io("read", &seg.path, e))?;
        Ok(match step {
            Step::Record { len, .. } => {
                let seg = &mut self.segs[i];
                if pos == seg.scanned_pos && expected == seg.scanned_offset {
                    let last_indexed = seg.index.last().map_or(0, |e| e.1);
                    if pos - last_indexed >= INDEX_INTERVAL {
                        seg.index.push((expected, pos));
                    }
                    seg.scanned_pos = pos + len as u64;
                    seg.scanned_offset = expected + 1;
                }
                Got::Record { len }
            }
            Step::End => Got::End,
            Step::Torn(reason) => Got::Torn(reason),
        })
    }
}
