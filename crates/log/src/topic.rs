//! [`Topic`]: one topic's configuration, partitions, consumer groups and description.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use flowline_core::{Error, Result};
use serde::{Deserialize, Serialize};

use crate::segment::{list_segments, segment_file_name, sync_dir};
use crate::{
    check_name, hash, io_error, now_ms, retention, PartitionReader, PartitionWriter, Producer,
    TopicConfig,
};

pub(crate) const TOPIC_FILE: &str = "topic.json";
const GROUPS_DIR: &str = "groups";
const FORMAT: u32 = 1;

/// `topic.json`.
#[derive(Serialize, Deserialize)]
struct TopicFile {
    format: u32,
    #[serde(flatten)]
    config: TopicConfig,
    created_ms: i64,
}

/// `groups/<group>.json`.
#[derive(Serialize, Deserialize)]
struct GroupFile {
    group: String,
    offsets: BTreeMap<u32, u64>,
    updated_ms: i64,
}

/// An open topic: cheap to clone, holds no file open.
#[derive(Debug, Clone)]
pub struct Topic {
    name: String,
    dir: PathBuf,
    config: TopicConfig,
    created_ms: i64,
}

/// Builds the topic in a temporary folder beside its place, then renames it into place.
pub(crate) fn create(root: &Path, name: &str, config: TopicConfig) -> Result<Topic> {
    let dir = root.join(name);
    let exists = || {
        Error::Plan(format!(
            "topic `{name}` already exists in `{}`",
            root.display()
        ))
    };
    if dir.exists() {
        return Err(exists());
    }
    let created_ms = now_ms();
    let tmp = root.join(format!(
        ".creating-{name}-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0)
    ));
    let build = || -> Result<()> {
        std::fs::create_dir(&tmp).map_err(|e| Error::io("create", &tmp, e))?;
        let file = TopicFile {
            format: FORMAT,
            config: config.clone(),
            created_ms,
        };
        let mut json = serde_json::to_vec_pretty(&file)
            .map_err(|e| Error::Internal(format!("cannot encode topic.json: {e}")))?;
        json.push(b'\n');
        write_synced(&tmp.join(TOPIC_FILE), &json)?;
        for p in 0..config.partitions {
            let pdir = tmp.join(p.to_string());
            std::fs::create_dir(&pdir).map_err(|e| Error::io("create", &pdir, e))?;
            write_synced(&pdir.join(segment_file_name(0)), &[])?;
            sync_dir(&pdir)?;
        }
        sync_dir(&tmp)
    };
    if let Err(e) = build() {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    if let Err(e) = std::fs::rename(&tmp, &dir) {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(if dir.exists() {
            exists()
        } else {
            Error::io("create", &dir, e)
        });
    }
    sync_dir(root)?;
    Ok(Topic {
        name: name.to_string(),
        dir,
        config,
        created_ms,
    })
}

pub(crate) fn open(dir: PathBuf, name: &str) -> Result<Topic> {
    let path = dir.join(TOPIC_FILE);
    let text = std::fs::read(&path).map_err(|e| Error::io("read", &path, e))?;
    let file: TopicFile = serde_json::from_slice(&text).map_err(|e| {
        Error::io(
            "read",
            &path,
            io_error(io::ErrorKind::InvalidData, e.to_string()),
        )
    })?;
    if file.format != FORMAT {
        return Err(Error::io(
            "read",
            &path,
            io_error(
                io::ErrorKind::InvalidData,
                format!(
                    "topic format {} is not supported (this build reads format {FORMAT})",
                    file.format
                ),
            ),
        ));
    }
    Ok(Topic {
        name: name.to_string(),
        dir,
        config: file.config,
        created_ms: file.created_ms,
    })
}

/// Writes `bytes` to a new file at `path` and syncs it.
fn write_synced(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut f = File::create(path).map_err(|e| Error::io("create", path, e))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(|e| Error::io("write", path, e))
}

/// One partition in a [`TopicDescription`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PartitionDescription {
    pub partition: u32,
    pub start_offset: u64,
    pub end_offset: u64,
    /// Bytes of all segment files.
    pub bytes: u64,
    pub segments: usize,
}

/// One partition of a group in a [`GroupDescription`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GroupPartition {
    pub partition: u32,
    /// The next offset the group reads; `None` when it never committed this partition.
    pub committed: Option<u64>,
    pub end_offset: u64,
    /// `end_offset - committed` (0 when committed is past the end).
    pub lag: Option<u64>,
}

/// A consumer group in a [`TopicDescription`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GroupDescription {
    pub group: String,
    /// Sum of the lags of the partitions the group committed.
    pub lag: u64,
    /// Every partition of the topic.
    pub partitions: Vec<GroupPartition>,
}

/// What [`Topic::describe`] returns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TopicDescription {
    pub name: String,
    pub config: TopicConfig,
    pub created_ms: i64,
    pub partitions: Vec<PartitionDescription>,
    pub groups: Vec<GroupDescription>,
}

impl Topic {
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The topic's folder (one subfolder per partition).
    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }

    pub fn config(&self) -> &TopicConfig {
        &self.config
    }

    pub fn partitions(&self) -> u32 {
        self.config.partitions
    }

    /// Milliseconds since the epoch when the topic was created.
    pub fn created_ms(&self) -> i64 {
        self.created_ms
    }

    /// The partition a record with this key goes to (see [`crate::hash`]).
    pub fn partition_for_key(&self, key: &[u8]) -> u32 {
        hash::partition_for_key(key, self.config.partitions)
    }

    /// The folder of a partition; an error for a partition the topic does not have.
    pub(crate) fn partition_dir(&self, partition: u32) -> Result<PathBuf> {
        if partition >= self.config.partitions {
            return Err(Error::Plan(format!(
                "topic `{}` has partitions 0 to {}; there is no partition {partition}",
                self.name,
                self.config.partitions - 1
            )));
        }
        Ok(self.dir.join(partition.to_string()))
    }

    /// (start offset, end offset) of a partition: records `start..end` can be read. Reads the
    /// active segment to find its end; a [`PartitionReader`] kept open does that incrementally.
    pub fn offsets(&self, partition: u32) -> Result<(u64, u64)> {
        self.reader(partition)?.offsets()
    }

    /// The writer of one partition; refused while another writer of it is open anywhere.
    pub fn writer(&self, partition: u32) -> Result<PartitionWriter> {
        PartitionWriter::open(self, partition)
    }

    /// A producer holding the writers of all partitions; refused while any of them has another
    /// writer.
    pub fn producer(&self) -> Result<Producer> {
        Producer::open(self)
    }

    /// A lock-free reader of one partition.
    pub fn reader(&self, partition: u32) -> Result<PartitionReader> {
        PartitionReader::new(&self.name, partition, self.partition_dir(partition)?)
    }

    /// Applies retention to every partition now; returns how many segments were deleted.
    pub fn enforce_retention(&self) -> Result<u64> {
        let mut deleted = 0;
        for p in 0..self.config.partitions {
            deleted += retention::apply(
                &self.partition_dir(p)?,
                self.config.retention_ms,
                self.config.retention_bytes,
                now_ms(),
                &mut HashMap::new(),
            )?;
        }
        Ok(deleted)
    }

    /// Commits the next offset to read of one partition for a consumer group.
    pub fn commit(&self, group: &str, partition: u32, offset: u64) -> Result<()> {
        self.commit_offsets(group, &BTreeMap::from([(partition, offset)]))
    }

    /// Commits the next offsets to read of several partitions at once (one atomic file
    /// replacement; partitions not named keep their committed offsets).
    pub fn commit_offsets(&self, group: &str, offsets: &BTreeMap<u32, u64>) -> Result<()> {
        check_name("group", group)?;
        for &p in offsets.keys() {
            self.partition_dir(p)?;
        }
        let dir = self.dir.join(GROUPS_DIR);
        std::fs::create_dir_all(&dir).map_err(|e| Error::io("create", &dir, e))?;
        // Commits of one group are serialized, so that two members committing different
        // partitions do not lose each other's offsets.
        let lock_path = dir.join(format!("{group}.lock"));
        let lock = crate::segment::open_lock_file(&lock_path)?;
        lock.lock().map_err(|e| Error::io("lock", &lock_path, e))?;

        let mut all = self.committed(group)?;
        all.extend(offsets);
        let file = GroupFile {
            group: group.to_string(),
            offsets: all,
            updated_ms: now_ms(),
        };
        let mut json = serde_json::to_vec(&file)
            .map_err(|e| Error::Internal(format!("cannot encode group offsets: {e}")))?;
        json.push(b'\n');
        let path = self.group_path(group);
        let tmp = dir.join(format!("{group}.json.tmp"));
        write_synced(&tmp, &json)?;
        std::fs::rename(&tmp, &path).map_err(|e| Error::io("replace", &path, e))?;
        sync_dir(&dir)
    }

    /// The committed offsets of a group, by partition (empty for an unknown group).
    pub fn committed(&self, group: &str) -> Result<BTreeMap<u32, u64>> {
        check_name("group", group)?;
        let path = self.group_path(group);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
            Err(e) => return Err(Error::io("read", &path, e)),
        };
        let file: GroupFile = serde_json::from_slice(&bytes).map_err(|e| {
            Error::io(
                "read",
                &path,
                io_error(io::ErrorKind::InvalidData, e.to_string()),
            )
        })?;
        Ok(file.offsets)
    }

    /// The consumer groups that committed offsets of this topic, sorted.
    pub fn groups(&self) -> Result<Vec<String>> {
        let dir = self.dir.join(GROUPS_DIR);
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::io("list", &dir, e)),
        };
        let mut groups = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| Error::io("list", &dir, e))?;
            if let Some(group) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.strip_suffix(".json"))
            {
                if check_name("group", group).is_ok() {
                    groups.push(group.to_string());
                }
            }
        }
        groups.sort();
        Ok(groups)
    }

    /// Lag of a group per committed partition: end offset − committed offset.
    pub fn lag(&self, group: &str) -> Result<BTreeMap<u32, u64>> {
        let committed = self.committed(group)?;
        let mut lag = BTreeMap::new();
        for (&p, &c) in &committed {
            if p < self.config.partitions {
                lag.insert(p, self.offsets(p)?.1.saturating_sub(c));
            }
        }
        Ok(lag)
    }

    /// Partitions (offsets, bytes, segments) and groups (committed offsets, lag).
    pub fn describe(&self) -> Result<TopicDescription> {
        let mut partitions = Vec::new();
        for p in 0..self.config.partitions {
            let (start_offset, end_offset) = self.offsets(p)?;
            let segments = list_segments(&self.partition_dir(p)?)?;
            partitions.push(PartitionDescription {
                partition: p,
                start_offset,
                end_offset,
                bytes: segments.iter().map(|s| s.len).sum(),
                segments: segments.len(),
            });
        }
        let mut groups = Vec::new();
        for group in self.groups()? {
            let committed = self.committed(&group)?;
            let partitions: Vec<GroupPartition> = partitions
                .iter()
                .map(|d| {
                    let committed = committed.get(&d.partition).copied();
                    GroupPartition {
                        partition: d.partition,
                        committed,
                        end_offset: d.end_offset,
                        lag: committed.map(|c| d.end_offset.saturating_sub(c)),
                    }
                })
                .collect();
            groups.push(GroupDescription {
                lag: partitions.iter().filter_map(|p| p.lag).sum(),
                group,
                partitions,
            });
        }
        Ok(TopicDescription {
            name: self.name.clone(),
            config: self.config.clone(),
            created_ms: self.created_ms,
            partitions,
            groups,
        })
    }

    fn group_path(&self, group: &str) -> PathBuf {
        self.dir.join(GROUPS_DIR).join(format!("{group}.json"))
    }
}
