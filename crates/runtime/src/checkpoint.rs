//! Checkpoints of stream and micro-batch jobs, stored through `object_store` (a local folder by
//! default: `<state dir>/checkpoints/`).
//!
//! A checkpoint `chk-<epoch>` is two objects: `state.bin` (every operator's snapshot, one after
//! the other) and `meta.json` (source positions, watermark trackers, what each sink prepared, the
//! reject bin's length, the plan fingerprint, and the XXH64 checksum of `state.bin`).
//!
//! Invariants:
//! * `meta.json` is written last, and each object is written atomically (temporary object, then
//!   rename), so a checkpoint exists exactly when its `meta.json` does: a crash while writing
//!   leaves no half checkpoint.
//! * A checkpoint is only restored into a plan with the same fingerprint.
//! * A checkpoint whose `state.bin` does not match its checksum, or whose `meta.json` does not
//!   parse, is corrupt; it is never restored.

use std::collections::BTreeMap;
use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;

use flowline_connectors::sink::Prepared;
use flowline_core::{Error, Result};
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use serde::{Deserialize, Serialize};

/// Format version of `meta.json`.
const VERSION: u32 = 1;

/// Where each operator's snapshot lies in `state.bin`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct OperatorState {
    /// The sink of the INSERT whose chain holds the operator, and its position in the chain.
    pub chain: usize,
    pub operator: usize,
    pub name: String,
    pub offset: u64,
    pub len: u64,
}

/// The watermark bookkeeping of one source partition.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct PartitionPosition {
    /// Next offset to read.
    pub next: u64,
    /// Largest event time seen, ms since the epoch.
    pub max_event_time: Option<i64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CheckpointMeta {
    pub version: u32,
    pub epoch: u64,
    pub pipeline: String,
    pub fingerprint: String,
    /// The plan as `flowline explain` describes it, to explain a fingerprint mismatch.
    pub plan: String,
    pub created_at: String,
    /// Source → partition → position.
    pub positions: BTreeMap<String, BTreeMap<u32, PartitionPosition>>,
    /// Source → the watermark last emitted, ms.
    pub watermarks: BTreeMap<String, i64>,
    /// Sink → what it prepared for this epoch (published right after the checkpoint).
    pub sinks: BTreeMap<String, Prepared>,
    /// Length of the reject bin file at the checkpoint; a restore cuts it back to this.
    pub rejects_bytes: u64,
    pub rows_read: BTreeMap<String, u64>,
    pub rows_written: BTreeMap<String, u64>,
    pub operators: Vec<OperatorState>,
    pub state_bytes: u64,
    /// XXH64 of `state.bin` ([`crate::codec::checksum`]), in hex.
    pub state_checksum: String,
}

/// A complete checkpoint read back.
pub struct Checkpoint {
    pub meta: CheckpointMeta,
    pub state: Vec<u8>,
}

impl Checkpoint {
    /// The state bytes of one operator (empty when the checkpoint holds none for it).
    pub fn operator_state(&self, chain: usize, operator: usize) -> &[u8] {
        self.meta
            .operators
            .iter()
            .find(|o| o.chain == chain && o.operator == operator)
            .and_then(|o| {
                let end = o.offset.checked_add(o.len)?;
                self.state.get(o.offset as usize..end as usize)
            })
            .unwrap_or(&[])
    }
}

/// What was found when looking for the checkpoint to restore.
pub struct Found {
    pub checkpoint: Option<Checkpoint>,
    /// Newer checkpoints that were corrupt and skipped: (epoch, why).
    pub corrupt: Vec<(u64, String)>,
    /// Newer checkpoints the job stopped while writing (no `meta.json`): never complete, so
    /// their epochs were never published, and starting before them duplicates nothing.
    pub incomplete: Vec<u64>,
}

/// The `read` error of a checkpoint without `meta.json`.
const INCOMPLETE: &str = "incomplete (no meta.json: the job stopped while writing it)";

pub struct CheckpointStore {
    store: Arc<dyn ObjectStore>,
    dir: PathBuf,
}

impl CheckpointStore {
    /// Checkpoints under `dir` (created if missing).
    pub fn open(dir: &FsPath) -> Result<CheckpointStore> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io("create", dir, e))?;
        let store = LocalFileSystem::new_with_prefix(dir)
            .map_err(|e| Error::io("open", dir, std::io::Error::other(e.to_string())))?;
        Ok(CheckpointStore {
            store: Arc::new(store),
            dir: dir.to_path_buf(),
        })
    }

    pub fn dir(&self) -> &FsPath {
        &self.dir
    }

    fn store_error(&self, action: &'static str, e: object_store::Error) -> Error {
        Error::io(action, &self.dir, std::io::Error::other(e.to_string()))
    }

    /// Epochs of the checkpoints present (complete or not), ascending.
    pub async fn epochs(&self) -> Result<Vec<u64>> {
        let listing = self
            .store
            .list_with_delimiter(None)
            .await
            .map_err(|e| self.store_error("list", e))?;
        let mut epochs: Vec<u64> = listing
            .common_prefixes
            .iter()
            .filter_map(|p| p.filename()?.strip_prefix("chk-")?.parse().ok())
            .collect();
        epochs.sort_unstable();
        Ok(epochs)
    }

    /// Reads checkpoint `epoch`; an error says why it is not usable.
    pub async fn read(&self, epoch: u64) -> std::result::Result<Checkpoint, String> {
        let meta_path = Path::from(format!("chk-{epoch:010}/meta.json"));
        let bytes = match self.store.get(&meta_path).await {
            Ok(g) => g.bytes().await.map_err(|e| e.to_string())?,
            Err(object_store::Error::NotFound { .. }) => return Err(INCOMPLETE.into()),
            Err(e) => return Err(e.to_string()),
        };
        let meta: CheckpointMeta =
            serde_json::from_slice(&bytes).map_err(|e| format!("meta.json does not parse: {e}"))?;
        if meta.version != VERSION {
            return Err(format!(
                "written by checkpoint format {}, this Flowline reads format {VERSION}",
                meta.version
            ));
        }
        let state_path = Path::from(format!("chk-{epoch:010}/state.bin"));
        let state = self
            .store
            .get(&state_path)
            .await
            .map_err(|e| format!("state.bin: {e}"))?
            .bytes()
            .await
            .map_err(|e| format!("state.bin: {e}"))?
            .to_vec();
        let sum = format!("{:016x}", crate::codec::checksum(&state));
        if state.len() as u64 != meta.state_bytes || sum != meta.state_checksum {
            return Err(format!(
                "state.bin is corrupt ({} bytes with checksum {sum}, meta.json expects {} bytes \
                 with checksum {})",
                state.len(),
                meta.state_bytes,
                meta.state_checksum
            ));
        }
        Ok(Checkpoint { meta, state })
    }

    /// The newest usable checkpoint, and the newer ones that were not usable.
    pub async fn latest(&self) -> Result<Found> {
        let mut corrupt = vec![];
        let mut incomplete = vec![];
        for epoch in self.epochs().await?.into_iter().rev() {
            match self.read(epoch).await {
                Ok(c) => {
                    return Ok(Found {
                        checkpoint: Some(c),
                        corrupt,
                        incomplete,
                    })
                }
                Err(why) if why == INCOMPLETE => incomplete.push(epoch),
                Err(why) => corrupt.push((epoch, why)),
            }
        }
        Ok(Found {
            checkpoint: None,
            corrupt,
            incomplete,
        })
    }

    /// Writes a checkpoint: `state.bin`, then `meta.json` (the commit point).
    pub async fn write(&self, mut meta: CheckpointMeta, state: Vec<u8>) -> Result<()> {
        meta.version = VERSION;
        meta.state_bytes = state.len() as u64;
        meta.state_checksum = format!("{:016x}", crate::codec::checksum(&state));
        let epoch = meta.epoch;
        let json = serde_json::to_vec_pretty(&meta)
            .map_err(|e| Error::Internal(format!("cannot encode checkpoint: {e}")))?;
        self.store
            .put(
                &Path::from(format!("chk-{epoch:010}/state.bin")),
                PutPayload::from(state),
            )
            .await
            .map_err(|e| self.store_error("write checkpoint", e))?;
        self.store
            .put(
                &Path::from(format!("chk-{epoch:010}/meta.json")),
                PutPayload::from(json),
            )
            .await
            .map_err(|e| self.store_error("write checkpoint", e))?;
        Ok(())
    }

    /// Deletes checkpoints older than the newest `keep`, and any not complete below the newest.
    pub async fn prune(&self, keep: usize) -> Result<()> {
        let epochs = self.epochs().await?;
        if epochs.len() <= keep {
            return Ok(());
        }
        for epoch in &epochs[..epochs.len() - keep] {
            self.remove(*epoch).await?;
        }
        Ok(())
    }

    /// Removes one checkpoint (both objects).
    pub async fn remove(&self, epoch: u64) -> Result<()> {
        for name in ["meta.json", "state.bin"] {
            match self
                .store
                .delete(&Path::from(format!("chk-{epoch:010}/{name}")))
                .await
            {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(self.store_error("remove checkpoint", e)),
            }
        }
        let dir = self.dir.join(format!("chk-{epoch:010}"));
        let _ = std::fs::remove_dir(&dir);
        Ok(())
    }
}
