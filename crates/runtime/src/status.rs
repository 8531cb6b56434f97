//! Live numbers of a running job, for whoever watches it (`flowline serve`'s API, dashboard and
//! `/metrics`).
//!
//! The driver owns the job; it copies its counters into a shared [`LiveStatus`] at points where
//! they are consistent: after each batch (rows read, rejects), when a watermark advances, after
//! each checkpoint (rows published, checkpoint time and size, lag, state and rows in and out per
//! operator), and at the end of a run. Readers
//! take a [`StatusSnapshot`] (a clone under a short lock). Nothing here influences the job.

use std::collections::BTreeMap;
use std::sync::Mutex;

use serde::Serialize;

/// A checkpoint as the job saw it.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct CheckpointStatus {
    pub epoch: u64,
    pub duration_ms: u64,
    /// Bytes of operator state written.
    pub bytes: u64,
    /// When it completed (ms since the Unix epoch).
    pub at_ms: i64,
}

/// One stateful operator's state now.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct OperatorStatus {
    /// 0-based INSERT number.
    pub insert: usize,
    pub sink: String,
    pub position: usize,
    pub operator: String,
    pub state_bytes: u64,
}

/// Rows one operator received and sent (data and retractions) in the current run.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct OperatorRows {
    /// 0-based INSERT number.
    pub insert: usize,
    pub sink: String,
    /// Position in the INSERT's chain (a join's right-input operators come after the others).
    pub position: usize,
    pub operator: String,
    pub rows_in: u64,
    pub rows_out: u64,
}

/// What a job has done so far.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct StatusSnapshot {
    /// Rows read per source.
    pub rows_read: BTreeMap<String, u64>,
    /// Rows published per sink (visible to readers).
    pub rows_written: BTreeMap<String, u64>,
    /// Rejected rows per reason.
    pub rejects: BTreeMap<String, u64>,
    /// Current watermark per source (ms since the Unix epoch; absent before the first).
    pub watermarks: BTreeMap<String, i64>,
    /// Log sources: records appended but not read yet, summed over partitions.
    pub lag_records: BTreeMap<String, u64>,
    /// Log sources whose lag could not be read at the last checkpoint (absent from
    /// `lag_records`).
    pub lag_unknown: Vec<String>,
    /// When output was last published (ms since the Unix epoch).
    pub last_publish_ms: Option<i64>,
    pub last_checkpoint: Option<CheckpointStatus>,
    pub checkpoints: u64,
    pub operators: Vec<OperatorStatus>,
    /// Rows in and out of every operator, as of the last checkpoint (or the end of the run).
    pub operator_rows: Vec<OperatorRows>,
}

impl StatusSnapshot {
    pub fn total_read(&self) -> u64 {
        self.rows_read.values().sum()
    }

    pub fn total_rejects(&self) -> u64 {
        self.rejects.values().sum()
    }

    /// The lag summed over the sources whose lag is known (see `known_lag`).
    pub fn total_lag(&self) -> u64 {
        self.lag_records.values().sum()
    }

    /// The lag over every log source, or `None` while some source's lag cannot be read: a
    /// job is caught up only when every source says so.
    pub fn known_lag(&self) -> Option<u64> {
        self.lag_unknown.is_empty().then(|| self.total_lag())
    }

    /// The smallest watermark over the sources that have one (`None` before the first).
    pub fn watermark(&self) -> Option<i64> {
        self.watermarks.values().copied().min()
    }
}

/// The shared, updated copy of a job's numbers.
#[derive(Debug, Default)]
pub struct LiveStatus {
    inner: Mutex<StatusSnapshot>,
}

impl LiveStatus {
    pub fn new() -> LiveStatus {
        LiveStatus::default()
    }

    /// A copy of the numbers now.
    pub fn snapshot(&self) -> StatusSnapshot {
        self.inner.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Changes the numbers under the lock.
    pub(crate) fn update(&self, f: impl FnOnce(&mut StatusSnapshot)) {
        if let Ok(mut s) = self.inner.lock() {
            f(&mut s);
        }
    }

    /// Starts over (a new run of the same job).
    pub fn reset(&self) {
        self.update(|s| *s = StatusSnapshot::default());
    }
}
