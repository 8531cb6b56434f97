//! Writers: [`PartitionWriter`] appends to one partition, [`Producer`] to all partitions of a topic.

use std::collections::HashMap;
use std::fs::{File, OpenOptions, TryLockError};
use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use flowline_core::{Error, Result};

use crate::format::{self, LEN_BYTES, MAX_RECORD_BYTES};
use crate::segment::{list_segments, scan_segment, segment_file_name, sync_dir};
use crate::{hash, now_ms, retention, FsyncPolicy, Topic};

/// The file a partition's writer keeps locked.
pub(crate) const WRITER_LOCK: &str = "writer.lock";

/// How often (at most) a writer checks age retention while appending.
const RETENTION_CHECK: Duration = Duration::from_secs(1);

/// What a writer cut from the end of the active segment when it opened the partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovery {
    pub partition: u32,
    /// The segment file that was truncated.
    pub segment: PathBuf,
    /// Bytes of valid records kept.
    pub valid_bytes: u64,
    /// Bytes cut (a torn or corrupt tail).
    pub truncated_bytes: u64,
    /// Why the first cut byte did not start a valid record.
    pub reason: String,
}

/// The one writer of a partition: holds the partition's lock while it lives.
pub struct PartitionWriter {
    topic: String,
    partition: u32,
    dir: PathBuf,
    segment_bytes: u64,
    retention_ms: Option<i64>,
    retention_bytes: Option<u64>,
    fsync: FsyncPolicy,
    /// Holds the exclusive lock on `writer.lock`; released when dropped.
    _lock: File,
    active: File,
    active_base: u64,
    active_path: PathBuf,
    active_len: u64,
    active_max_ts: Option<i64>,
    next_offset: u64,
    buf: Vec<u8>,
    unsynced: bool,
    last_sync: Instant,
    /// Newest timestamp of sealed segments, by base offset (for age retention).
    max_ts_cache: HashMap<u64, Option<i64>>,
    retention_due: bool,
    last_retention: Instant,
    recovery: Option<Recovery>,
    /// Set when a failed append could not be undone: the writer refuses further appends.
    broken: Option<String>,
}

impl PartitionWriter {
    pub(crate) fn open(topic: &Topic, partition: u32) -> Result<PartitionWriter> {
        let dir = topic.partition_dir(partition)?;
        let lock_path = dir.join(WRITER_LOCK);
        let lock = crate::segment::open_lock_file(&lock_path)?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(Error::Plan(format!(
                    "partition {partition} of topic `{}` already has a writer (`{}` is locked by \
                     this or another process); a partition takes one writer at a time",
                    topic.name(),
                    lock_path.display()
                )))
            }
            Err(TryLockError::Error(e)) => return Err(Error::io("lock", &lock_path, e)),
        }

        // Recover the active segment: keep the valid records, cut the rest.
        let segments = list_segments(&dir)?;
        let last = segments
            .last()
            .cloned()
            .ok_or_else(|| Error::Internal(format!("no segment in `{}`", dir.display())))?;
        let scan =
            scan_segment(&last.path, last.base).map_err(|e| Error::io("read", &last.path, e))?;
        let mut recovery = None;
        if let Some(reason) = scan.torn {
            let file_len = std::fs::metadata(&last.path)
                .map_err(|e| Error::io("inspect", &last.path, e))?
                .len();
            OpenOptions::new()
                .write(true)
                .open(&last.path)
                .and_then(|f| {
                    f.set_len(scan.valid_len)?;
                    f.sync_all()
                })
                .map_err(|e| Error::io("truncate the torn tail of", &last.path, e))?;
            recovery = Some(Recovery {
                partition,
                segment: last.path.clone(),
                valid_bytes: scan.valid_len,
                truncated_bytes: file_len.saturating_sub(scan.valid_len),
                reason,
            });
        }
        let active = OpenOptions::new()
            .append(true)
            .open(&last.path)
            .map_err(|e| Error::io("open", &last.path, e))?;
        let config = topic.config();
        Ok(PartitionWriter {
            topic: topic.name().to_string(),
            partition,
            dir,
            segment_bytes: config.segment_bytes,
            retention_ms: config.retention_ms,
            retention_bytes: config.retention_bytes,
            fsync: config.fsync,
            _lock: lock,
            active,
            active_base: last.base,
            active_path: last.path,
            active_len: scan.valid_len,
            active_max_ts: scan.max_timestamp,
            next_offset: scan.next_offset,
            buf: Vec::new(),
            unsynced: false,
            last_sync: Instant::now(),
            max_ts_cache: HashMap::new(),
            retention_due: true,
            last_retention: Instant::now(),
            recovery,
            broken: None,
        })
    }

    /// This writer with another fsync policy than the topic's.
    pub fn with_fsync(mut self, policy: FsyncPolicy) -> Self {
        self.fsync = policy;
        self
    }

    pub fn partition(&self) -> u32 {
        self.partition
    }

    /// The offset the next append gets (the partition's end offset).
    pub fn next_offset(&self) -> u64 {
        self.next_offset
    }

    /// What was cut from a torn tail when this writer opened the partition, if anything.
    pub fn recovery(&self) -> Option<&Recovery> {
        self.recovery.as_ref()
    }

    /// Appends one record; returns its offset. Rolls the segment and applies retention first
    /// when due, and syncs after, as the fsync policy says.
    pub fn append(&mut self, key: Option<&[u8]>, value: &[u8], timestamp: i64) -> Result<u64> {
        if let Some(why) = &self.broken {
            return Err(Error::Plan(format!(
                "the writer of partition {} of topic `{}` failed earlier ({why}); open a new one",
                self.partition, self.topic
            )));
        }
        let len = format::encoded_len(key, value);
        if len - LEN_BYTES > MAX_RECORD_BYTES {
            return Err(Error::Plan(format!(
                "a record of {len} bytes is larger than the log's limit of {MAX_RECORD_BYTES} bytes"
            )));
        }
        if self.active_len > 0 && self.active_len + len as u64 > self.segment_bytes {
            self.roll()?;
        }
        self.maybe_apply_retention()?;

        let offset = self.next_offset;
        self.buf.clear();
        format::encode(offset, timestamp, key, value, &mut self.buf);
        if let Err(e) = self.active.write_all(&self.buf) {
            // Undo a partial write, so that the next append starts at a record boundary.
            if let Err(undo) = self.active.set_len(self.active_len) {
                self.broken = Some(format!("cannot undo a partial append: {undo}"));
            }
            return Err(Error::io("append to", &self.active_path, e));
        }
        self.active_len += len as u64;
        self.active_max_ts = Some(self.active_max_ts.map_or(timestamp, |m| m.max(timestamp)));
        self.next_offset += 1;
        self.unsynced = true;
        match self.fsync {
            FsyncPolicy::Always => self.sync()?,
            FsyncPolicy::Interval(ms) if self.last_sync.elapsed() >= Duration::from_millis(ms) => {
                self.sync()?
            }
            _ => {}
        }
        Ok(offset)
    }

    /// Syncs what was appended to disk (whatever the policy).
    pub fn flush(&mut self) -> Result<()> {
        self.sync()
    }

    fn sync(&mut self) -> Result<()> {
        if self.unsynced {
            if let Err(e) = self.active.sync_data() {
                // After a failed fsync the state of the written pages is unknown: stop here.
                self.broken = Some(format!("fsync failed: {e}"));
                return Err(Error::io("sync", &self.active_path, e));
            }
            self.unsynced = false;
        }
        self.last_sync = Instant::now();
        Ok(())
    }

    /// Seals the active segment (synced) and starts a new one named by the next offset.
    fn roll(&mut self) -> Result<()> {
        self.active
            .sync_data()
            .map_err(|e| Error::io("sync", &self.active_path, e))?;
        self.unsynced = false;
        let path = self.dir.join(segment_file_name(self.next_offset));
        let file = OpenOptions::new()
            .append(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| Error::io("create", &path, e))?;
        sync_dir(&self.dir)?;
        self.max_ts_cache
            .insert(self.active_base, self.active_max_ts);
        self.active = file;
        self.active_base = self.next_offset;
        self.active_path = path;
        self.active_len = 0;
        self.active_max_ts = None;
        self.retention_due = true;
        Ok(())
    }

    fn maybe_apply_retention(&mut self) -> Result<()> {
        if self.retention_ms.is_none() && self.retention_bytes.is_none() {
            return Ok(());
        }
        let due = self.retention_due
            || (self.retention_ms.is_some() && self.last_retention.elapsed() >= RETENTION_CHECK);
        if due {
            retention::apply(
                &self.dir,
                self.retention_ms,
                self.retention_bytes,
                now_ms(),
                &mut self.max_ts_cache,
            )?;
            self.retention_due = false;
            self.last_retention = Instant::now();
        }
        Ok(())
    }
}

impl Drop for PartitionWriter {
    fn drop(&mut self) {
        if self.unsynced {
            let _ = self.active.sync_data();
        }
    }
}

/// Appends to all partitions of a topic: by key hash, or round-robin for records without key.
/// Holds the writer lock of every partition while it lives.
pub struct Producer {
    topic: Topic,
    writers: Vec<PartitionWriter>,
    round_robin: u32,
}

impl Producer {
    pub(crate) fn open(topic: &Topic) -> Result<Producer> {
        let writers = (0..topic.partitions())
            .map(|p| PartitionWriter::open(topic, p))
            .collect::<Result<Vec<_>>>()?;
        Ok(Producer {
            topic: topic.clone(),
            writers,
            round_robin: 0,
        })
    }

    /// This producer with another fsync policy than the topic's.
    pub fn with_fsync(mut self, policy: FsyncPolicy) -> Self {
        for w in &mut self.writers {
            w.fsync = policy;
        }
        self
    }

    pub fn topic(&self) -> &Topic {
        &self.topic
    }

    /// Appends a record to the partition of its key (round-robin without key); returns
    /// (partition, offset).
    pub fn append(
        &mut self,
        key: Option<&[u8]>,
        value: &[u8],
        timestamp: i64,
    ) -> Result<(u32, u64)> {
        let partitions = self.writers.len() as u32;
        let partition = match key {
            Some(k) => hash::partition_for_key(k, partitions),
            None => {
                let p = self.round_robin % partitions;
                self.round_robin = (p + 1) % partitions;
                p
            }
        };
        let offset = self.writers[partition as usize].append(key, value, timestamp)?;
        Ok((partition, offset))
    }

    /// Appends a record to a chosen partition; returns its offset.
    pub fn append_to(
        &mut self,
        partition: u32,
        key: Option<&[u8]>,
        value: &[u8],
        timestamp: i64,
    ) -> Result<u64> {
        self.topic.partition_dir(partition)?;
        self.writers[partition as usize].append(key, value, timestamp)
    }

    /// Appends keyless records to a chosen partition and flushes; returns the first one's
    /// offset (`None` when there were none).
    pub fn append_all_to(
        &mut self,
        partition: u32,
        values: &[Vec<u8>],
        timestamp: i64,
    ) -> Result<Option<u64>> {
        let mut first = None;
        for v in values {
            first.get_or_insert(self.append_to(partition, None, v, timestamp)?);
        }
        self.flush()?;
        Ok(first)
    }

    /// Syncs every partition.
    pub fn flush(&mut self) -> Result<()> {
        self.writers.iter_mut().try_for_each(PartitionWriter::flush)
    }

    /// The end offset of every partition, as this producer knows it.
    pub fn end_offsets(&self) -> Vec<u64> {
        self.writers
            .iter()
            .map(PartitionWriter::next_offset)
            .collect()
    }

    /// The torn tails cut when the partitions were opened.
    pub fn recoveries(&self) -> Vec<Recovery> {
        self.writers
            .iter()
            .filter_map(|w| w.recovery().cloned())
            .collect()
    }
}
