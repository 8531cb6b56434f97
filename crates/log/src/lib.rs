//! The embedded log: durable, partitioned, append-only topics in a local folder. The zero-setup
//! stand-in for Kafka, and the backbone of replay.
//!
//! Synchronous and std-only: a [`Producer`] (or one [`PartitionWriter`]) appends, any number of
//! [`PartitionReader`]s in any number of processes read, consumer groups remember where they
//! stopped.
//!
//! # On disk
//!
//! ```text
//! <root>/<topic>/topic.json                    {"format":1,"partitions":3,"retention_ms":604800000,
//!                                               "retention_bytes":null,"segment_bytes":67108864,
//!                                               "fsync":"1000ms","created_ms":1767225600000}
//! <root>/<topic>/<partition>/<base offset, 20 digits>.log   segment files, append-only
//! <root>/<topic>/<partition>/writer.lock       locked (flock) by the one writer of the partition
//! <root>/<topic>/groups/<group>.json           {"group":"g","offsets":{"0":42,"1":17},"updated_ms":…}
//! <root>/<topic>/groups/<group>.lock           serializes commits of a group
//! ```
//!
//! Partitions are numbered `0..partitions`. A segment file's name is the offset of its first
//! record; its content is a sequence of record frames ([`mod@format`]): a `u32` length, a CRC-32 of
//! the body, then version, offset, timestamp (ms), optional key and value. Topic and group names
//! are 1 to 200 characters of `[A-Za-z0-9._-]`, not starting with a dot.
//!
//! # Invariants
//!
//! 1. **Dense offsets.** Offsets in a partition are `start..end` without holes: the records of a
//!    segment carry `base, base+1, …`, and the next segment's base is the offset after the last
//!    record of the previous one. `start` is the base of the oldest segment, `end` the offset after
//!    the last valid record of the newest (active) segment. Every record carries its own offset,
//!    and a reader checks it.
//! 2. **Only the active segment is written.** A writer appends to the newest segment only, and
//!    rolls to a new one (named by the next offset) before an append that would take it past
//!    `segment_bytes`. Before creating the new segment it syncs the old one, and after creating it
//!    syncs the folder; so after a crash only the active segment can have a torn tail, whatever the
//!    fsync policy. A segment with a newer one beside it is *sealed* and never changes again
//!    (except being deleted whole by retention).
//! 3. **A torn tail is never data.** A writer opening a partition reads the active segment, and
//!    truncates it at the first frame that is incomplete or invalid (bad length, checksum,
//!    version, offset); [`PartitionWriter::recovery`] reports what it cut. A reader stops at the
//!    first incomplete or invalid frame of the active segment (it may be being written) and never
//!    returns it; it reads on from there on its next call. An invalid frame in a *sealed* segment
//!    is corruption: an error naming the file, the byte position and the offset.
//! 4. **One writer per partition.** A writer holds an exclusive OS lock (`File::try_lock`, flock
//!    on Unix) on `writer.lock` for as long as it lives; a second writer, in this process or
//!    another, is refused. Readers take no lock.
//! 5. **Retention deletes whole sealed segments, oldest first**: while the oldest sealed segment's
//!    newest record is older than `retention_ms`, or while the partition's bytes exceed
//!    `retention_bytes`. Never the active segment, never a segment in the middle; the start
//!    offset moves forward with it. Writers apply it before their first append, when they roll a
//!    segment, and (for age) at most once a second while appending; [`Topic::enforce_retention`]
//!    applies it on demand.
//! 6. **Durability is the fsync policy's**: [`FsyncPolicy::Always`] syncs the segment at the end
//!    of every append call, `Interval(ms)` at the first append (or flush) after `ms` since the last
//!    sync, `Never` leaves it to the OS. Every writer syncs on flush and when dropped.
//! 7. **Group offsets are replaced atomically**: written to a temporary file, synced, renamed over
//!    the old file, folder synced. A committed offset is the next offset to read (Kafka's meaning);
//!    lag is `end - committed`.
//!
//! # Keys
//!
//! A record with a key goes to `partition_for_key(key)`: Kafka's default partitioner (MurmurHash2,
//! see [`hash`]), stable across processes and versions. Records without a key go round-robin,
//! starting at partition 0 for each producer.

pub mod format;
pub mod hash;
mod parse;
mod reader;
mod retention;
mod segment;
mod topic;
mod writer;

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use flowline_core::{Error, Result};
use serde::{Deserialize, Serialize};

pub use hash::partition_for_key;
pub use parse::{format_bytes, format_duration_ms, parse_bytes, parse_duration_ms};
pub use reader::PartitionReader;
pub use topic::{GroupDescription, GroupPartition, PartitionDescription, Topic, TopicDescription};
pub use writer::{PartitionWriter, Producer, Recovery};

/// One record of a partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Position in the partition, dense from the partition's first offset.
    pub offset: u64,
    /// Milliseconds since the Unix epoch, as given by the producer.
    pub timestamp: i64,
    pub key: Option<Vec<u8>>,
    pub value: Vec<u8>,
}

/// When a writer calls fsync on the active segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub enum FsyncPolicy {
    /// At the end of every append call: nothing acknowledged is lost on power failure.
    Always,
    /// At the first append or flush at least this many milliseconds after the last sync.
    Interval(u64),
    /// Never (only on flush and drop): the OS writes back when it likes.
    Never,
}

impl fmt::Display for FsyncPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FsyncPolicy::Always => f.write_str("always"),
            FsyncPolicy::Never => f.write_str("never"),
            FsyncPolicy::Interval(ms) => write!(f, "{ms}ms"),
        }
    }
}

impl FromStr for FsyncPolicy {
    type Err = Error;

    /// `always`, `never`, or an interval such as `1s` or `200ms`.
    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "always" => Ok(FsyncPolicy::Always),
            "never" => Ok(FsyncPolicy::Never),
            other => match parse_duration_ms(other) {
                Ok(ms) if ms > 0 => Ok(FsyncPolicy::Interval(ms as u64)),
                _ => Err(Error::Plan(format!(
                    "invalid fsync policy `{s}`: expected `always`, `never` or an interval such as `1s` or `200ms`"
                ))),
            },
        }
    }
}

impl From<FsyncPolicy> for String {
    fn from(p: FsyncPolicy) -> String {
        p.to_string()
    }
}

impl TryFrom<String> for FsyncPolicy {
    type Error = Error;
    fn try_from(s: String) -> Result<Self> {
        s.parse()
    }
}

/// How a topic is laid out and kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicConfig {
    /// Number of partitions, at least 1. Fixed at creation.
    pub partitions: u32,
    /// Delete sealed segments whose newest record is older than this (ms).
    pub retention_ms: Option<i64>,
    /// Delete the oldest sealed segments while a partition holds more bytes than this.
    pub retention_bytes: Option<u64>,
    /// A writer rolls to a new segment before an append would take the active one past this.
    pub segment_bytes: u64,
    /// The default fsync policy of the topic's writers (a writer can override it).
    pub fsync: FsyncPolicy,
}

impl Default for TopicConfig {
    /// One partition, no retention, 64 MiB segments, fsync every second.
    fn default() -> Self {
        TopicConfig {
            partitions: 1,
            retention_ms: None,
            retention_bytes: None,
            segment_bytes: 64 << 20,
            fsync: FsyncPolicy::Interval(1000),
        }
    }
}

impl TopicConfig {
    fn validate(&self) -> Result<()> {
        if self.partitions == 0 || self.partitions > 100_000 {
            return Err(Error::Plan(format!(
                "a topic needs 1 to 100000 partitions, not {}",
                self.partitions
            )));
        }
        if self.segment_bytes == 0 {
            return Err(Error::Plan("segment size must be at least 1 byte".into()));
        }
        if matches!(self.retention_ms, Some(ms) if ms <= 0) {
            return Err(Error::Plan("retention time must be positive".into()));
        }
        if self.retention_bytes == Some(0) {
            return Err(Error::Plan("retention size must be positive".into()));
        }
        if self.fsync == FsyncPolicy::Interval(0) {
            return Err(Error::Plan("fsync interval must be positive".into()));
        }
        Ok(())
    }
}

/// A folder of topics.
#[derive(Debug, Clone)]
pub struct Log {
    root: PathBuf,
}

impl Log {
    /// Opens (creating it if needed) the log folder `root`.
    pub fn open(root: impl AsRef<Path>) -> Result<Log> {
        let root = root.as_ref().to_path_buf();
        std::fs::create_dir_all(&root).map_err(|e| Error::io("create", &root, e))?;
        Ok(Log { root })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Creates a topic: its folder, `topic.json`, one folder per partition with an empty first
    /// segment. Atomic: built in a temporary folder, then renamed into place.
    pub fn create_topic(&self, name: &str, config: TopicConfig) -> Result<Topic> {
        check_name("topic", name)?;
        config.validate()?;
        topic::create(&self.root, name, config)
    }

    /// Opens an existing topic.
    pub fn topic(&self, name: &str) -> Result<Topic> {
        check_name("topic", name)?;
        let dir = self.root.join(name);
        if !dir.join(topic::TOPIC_FILE).exists() {
            let known = self.topics()?;
            let known = if known.is_empty() {
                "there are no topics yet".to_string()
            } else {
                format!("topics: {}", known.join(", "))
            };
            return Err(Error::Plan(format!(
                "no topic `{name}` in `{}` ({known})",
                self.root.display()
            )));
        }
        topic::open(dir, name)
    }

    /// The names of the topics, sorted.
    pub fn topics(&self) -> Result<Vec<String>> {
        let entries =
            std::fs::read_dir(&self.root).map_err(|e| Error::io("list", &self.root, e))?;
        let mut names = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| Error::io("list", &self.root, e))?;
            let Some(name) = entry.file_name().to_str().map(str::to_string) else {
                continue;
            };
            if check_name("topic", &name).is_ok() && entry.path().join(topic::TOPIC_FILE).exists() {
                names.push(name);
            }
        }
        names.sort();
        Ok(names)
    }
}

/// Topic and group names: 1 to 200 of `[A-Za-z0-9._-]`, not starting with a dot.
fn check_name(kind: &str, name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 200
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(Error::Plan(format!(
            "invalid {kind} name `{name}`: use 1 to 200 letters, digits, `.`, `_` or `-`, not starting with `.`"
        )))
    }
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// An I/O error made from a message, for [`Error::io`].
fn io_error(kind: io::ErrorKind, message: impl Into<String>) -> io::Error {
    io::Error::new(kind, message.into())
}
