//! Jobs over log sources: continuous stream, micro-batch triggers, and bounded batch reads.
//!
//! Two threads. The *source task* owns the partition readers: it reads records, decodes them and
//! sends them down one bounded channel, followed, in-band, by control items: `Tick` when nothing
//! new arrived (so timers and idle partitions are handled), `Barrier` where a checkpoint goes
//! (every checkpoint interval in stream mode, at the end of every micro-batch), and `End` when
//! every source is bounded and exhausted. The *operator task* (the caller's thread) runs the
//! chains. When a barrier arrives, every operator has processed exactly the records before it,
//! so the checkpoint is consistent: positions, operator state, the rows each sink staged.
//!
//! Checkpoint protocol, epoch `e`: sinks `prepare(e)` (staged, durable, invisible) → operator
//! snapshots → reject bin flushed → checkpoint written (`meta.json` last) → sinks `publish` →
//! consumer-group offsets committed → old checkpoints pruned. A crash anywhere before
//! `meta.json` exists redoes epoch `e` from checkpoint `e-1` (its staged output is discarded); a
//! crash after it finishes publishing epoch `e` on restart (publishing is idempotent). So every
//! row reaches the sinks exactly once.
//!
//! Invariants: the channel is bounded (a slow sink stops the source task, memory stays bounded);
//! watermarks are per partition, the source's watermark is their minimum over partitions that
//! are not idle; a checkpoint restores only into the plan it was taken from.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use flowline_connectors::sink::{Prepared, SinkMode};
use flowline_connectors::{Decoded, LogSource};
use flowline_core::{Error, Message, Result, TableDef, Watermark};
use flowline_log::PartitionReader;
use flowline_sql::Mode;

use crate::checkpoint::{CheckpointMeta, CheckpointStore, OperatorState, PartitionPosition};
use crate::driver::{
    bounded_watermark, commit_all, event_time, Chain, DimensionWatch, EmitClock, OpenedPipeline,
    RunState, SinkSlot,
};
use crate::operators::window::millis;
use crate::rejects::RejectBin;

/// When a job over log sources reads and commits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// Stream mode: read as records arrive, checkpoint every checkpoint interval.
    Continuous,
    /// Micro-batch: every `ms`, read what is there, process it, commit.
    Interval(u64),
    /// Micro-batch: what is available now, in one micro-batch, then exit.
    Once,
    /// Micro-batch: everything available now, in micro-batches of bounded size, then exit.
    AvailableNow,
}

impl std::fmt::Display for Trigger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Trigger::Continuous => f.write_str("continuous"),
            Trigger::Interval(ms) => {
                write!(f, "every {}", flowline_log::format_duration_ms(*ms as i64))
            }
            Trigger::Once => f.write_str("once"),
            Trigger::AvailableNow => f.write_str("available-now"),
        }
    }
}

impl std::str::FromStr for Trigger {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "once" => Ok(Trigger::Once),
            "available-now" | "availablenow" => Ok(Trigger::AvailableNow),
            "continuous" => Ok(Trigger::Continuous),
            other => match flowline_log::parse_duration_ms(other) {
                Ok(ms) if ms > 0 => Ok(Trigger::Interval(ms as u64)),
                _ => Err(format!(
                    "invalid trigger '{s}': expected an interval such as 30s, or once, or \
                     available-now"
                )),
            },
        }
    }
}

/// How a job over log sources runs (resolved from options and settings by the driver).
#[derive(Clone)]
pub(crate) struct JobSettings {
    pub trigger: Trigger,
    pub checkpoint_interval: Duration,
    /// Records per partition in one micro-batch of `available-now`.
    pub max_records_per_batch: u64,
    pub stop: Arc<AtomicBool>,
}

/// What the source task sends.
enum Item {
    Data {
        source: usize,
        partition: u32,
        decoded: Decoded,
        next: u64,
    },
    /// Nothing new was found.
    Tick,
    /// A partition that has never had a record is read to its end: it holds no watermark back
    /// until a record arrives.
    Empty { source: usize, partition: u32 },
    /// Checkpoint here. `last`: then stop.
    Barrier { last: bool },
    /// Every source is bounded and has been read to its bound.
    End,
}

/// Per-partition watermark bookkeeping of one source.
struct SourceClock {
    column: Option<usize>,
    delay: i64,
    idle_timeout: Option<Duration>,
    max_seen: Vec<Option<i64>>,
    last_active: Vec<Instant>,
    /// Partitions known to hold no record at all.
    empty: Vec<bool>,
    current: Watermark,
}

impl SourceClock {
    fn new(table: &TableDef, source: &LogSource) -> Result<SourceClock> {
        let (column, delay) = event_time(table, &source.schema())?;
        let n = source.partitions() as usize;
        Ok(SourceClock {
            column,
            delay,
            idle_timeout: source
                .idle_timeout_ms
                .map(|ms| Duration::from_millis(ms as u64)),
            max_seen: vec![None; n],
            last_active: vec![Instant::now(); n],
            empty: vec![false; n],
            current: Watermark::MIN,
        })
    }

    fn observe(&mut self, partition: u32, batch: &arrow::array::RecordBatch) -> Result<()> {
        let p = partition as usize;
        self.last_active[p] = Instant::now();
        self.empty[p] = false;
        let Some(column) = self.column else {
            return Ok(());
        };
        if let Some(max) = arrow::compute::max(&millis(batch.column(column))?) {
            self.max_seen[p] = Some(self.max_seen[p].map_or(max, |m| m.max(max)));
        }
        Ok(())
    }

    /// The new watermark, if it advanced: the minimum over active partitions of their largest
    /// event time − delay − 1 ms. A partition with unread rows but none read yet holds the
    /// watermark back; an empty partition (read to its end, never a record) and an idle one (no
    /// record for the idle timeout) do not. When no partition counts, the watermark stays.
    fn advance(&mut self) -> Option<Watermark> {
        self.column?;
        let now = Instant::now();
        let mut min: Option<i64> = None;
        for (p, seen) in self.max_seen.iter().enumerate() {
            let idle = self
                .idle_timeout
                .is_some_and(|t| now.duration_since(self.last_active[p]) >= t);
            if idle || (self.empty[p] && seen.is_none()) {
                continue;
            }
            let w = seen.map_or(i64::MIN, |t| bounded_watermark(t, self.delay).0);
            min = Some(min.map_or(w, |m: i64| m.min(w)));
        }
        let w = Watermark(min?);
        (w > self.current).then(|| {
            self.current = w;
            w
        })
    }
}

/// The source task: reads the partitions of every source and sends items in-band.
struct SourceTask {
    sources: Vec<Arc<LogSource>>,
    readers: Vec<Vec<PartitionReader>>,
    positions: Vec<Vec<u64>>,
    /// Per source, per partition: the offset a bounded source stops at.
    bounds: Vec<Option<Vec<u64>>>,
    /// Per source, per partition: a record was read, or the partition was reported empty.
    reported: Vec<Vec<bool>>,
    batch_size: usize,
    settings: JobSettings,
    tx: SyncSender<Result<Item>>,
}

const POLL: Duration = Duration::from_millis(10);
const MAX_READ_BYTES: usize = 16 << 20;

impl SourceTask {
    fn send(&self, item: Item) -> Result<()> {
        self.tx
            .send(Ok(item))
            .map_err(|_| Error::Internal("the operator task stopped".into()))
    }

    fn stopping(&self) -> bool {
        self.settings.stop.load(Ordering::SeqCst)
    }

    fn all_bounded_done(&self) -> bool {
        self.bounds.iter().enumerate().all(|(s, b)| {
            b.as_ref().is_some_and(|b| {
                b.iter()
                    .zip(&self.positions[s])
                    .all(|(end, pos)| pos >= end)
            })
        })
    }

    /// Reads up to `limit` records of one partition (not beyond its bound or `until`) and sends
    /// them. Returns how many were read.
    fn read_once(&mut self, s: usize, p: usize, until: Option<u64>, limit: usize) -> Result<u64> {
        let pos = self.positions[s][p];
        let mut end = u64::MAX;
        if let Some(b) = &self.bounds[s] {
            end = end.min(b[p]);
        }
        if let Some(u) = until {
            end = end.min(u);
        }
        let records = if pos >= end {
            vec![]
        } else {
            let max = (end - pos).min(limit as u64) as usize;
            self.readers[s][p].read(pos, max, MAX_READ_BYTES)?
        };
        let Some(last) = records.last() else {
            if !self.reported[s][p] && (until.is_none() || pos >= end) {
                self.reported[s][p] = true;
                self.send(Item::Empty {
                    source: s,
                    partition: p as u32,
                })?;
            }
            return Ok(0);
        };
        self.reported[s][p] = true;
        let next = last.offset + 1;
        let n = records.len() as u64;
        self.positions[s][p] = next;
        let decoded = self.sources[s].decode(p as u32, &records)?;
        self.send(Item::Data {
            source: s,
            partition: p as u32,
            decoded,
            next,
        })?;
        Ok(n)
    }

    fn run(mut self) -> Result<()> {
        match self.settings.trigger {
            Trigger::Continuous => self.continuous(),
            _ => self.micro_batches(),
        }
    }

    fn continuous(&mut self) -> Result<()> {
        let mut last_barrier = Instant::now();
        loop {
            if self.stopping() {
                return self.send(Item::Barrier { last: true });
            }
            let mut read = 0;
            for s in 0..self.sources.len() {
                for p in 0..self.positions[s].len() {
                    read += self.read_once(s, p, None, self.batch_size)?;
                }
            }
            if self.all_bounded_done() {
                return self.send(Item::End);
            }
            if last_barrier.elapsed() >= self.settings.checkpoint_interval {
                self.send(Item::Barrier { last: false })?;
                last_barrier = Instant::now();
            }
            if read == 0 {
                self.send(Item::Tick)?;
                std::thread::sleep(POLL);
            }
        }
    }

    fn micro_batches(&mut self) -> Result<()> {
        let trigger = self.settings.trigger;
        loop {
            let started = Instant::now();
            // The range of this micro-batch: what is in the log now.
            let ends = self
                .readers
                .iter_mut()
                .map(|rs| {
                    rs.iter_mut()
                        .map(|r| Ok(r.offsets()?.1))
                        .collect::<Result<Vec<u64>>>()
                })
                .collect::<Result<Vec<_>>>()?;
            let cap = match trigger {
                Trigger::AvailableNow => self.settings.max_records_per_batch,
                _ => u64::MAX,
            };
            let mut more = false;
            for (s, ends) in ends.iter().enumerate() {
                for (p, &end) in ends.iter().enumerate() {
                    let until = end.min(self.positions[s][p].saturating_add(cap));
                    while self.positions[s][p] < until {
                        if self.read_once(s, p, Some(until), self.batch_size)? == 0 {
                            break;
                        }
                    }
                    more |= self.positions[s][p] < end;
                }
            }
            if self.all_bounded_done() {
                return self.send(Item::End);
            }
            let last = match trigger {
                Trigger::Once => true,
                Trigger::AvailableNow => !more,
                _ => self.stopping(),
            };
            self.send(Item::Barrier { last })?;
            if last {
                return Ok(());
            }
            if let Trigger::Interval(ms) = trigger {
                let next = started + Duration::from_millis(ms);
                while Instant::now() < next {
                    if self.stopping() {
                        return self.send(Item::Barrier { last: true });
                    }
                    self.send(Item::Tick)?;
                    std::thread::sleep(Duration::from_millis(50).min(next - Instant::now()));
                }
            }
        }
    }
}

/// The plan as text, and its fingerprint: what a checkpoint must match to be restored.
pub(crate) fn fingerprint(pipeline: &OpenedPipeline) -> (String, String) {
    use sha2::{Digest, Sha256};
    let mut plan = String::new();
    for (name, source) in &pipeline.log_sources {
        plan += &format!(
            "source {name} topic {} ({})\n",
            source.topic().name(),
            source.schema()
        );
    }
    for line in pipeline.explain().lines().skip(1) {
        plan += line;
        plan.push('\n');
    }
    for (name, schema) in &pipeline.sink_schemas {
        plan += &format!("sink {name} ({schema})\n");
    }
    let hash = hex::encode(Sha256::digest(plan.as_bytes()));
    (plan, hash)
}

/// Explains why a checkpoint does not fit the plan: the first line that differs.
fn mismatch(dir: &std::path::Path, old: &str, new: &str) -> Error {
    let diff = old
        .lines()
        .zip(new.lines())
        .find(|(a, b)| a != b)
        .map(|(a, b)| format!("\n  checkpoint: {}\n  pipeline:   {}", a.trim(), b.trim()))
        .unwrap_or_else(|| "\n  (the plans differ in length)".to_string());
    Error::Plan(format!(
        "the checkpoint in `{}` was taken from a different plan, so its state (open windows, \
         aggregates, source positions) cannot be restored into this one. First difference:{diff}\n\
         To keep the old results and run the new logic from the start of the sources, use a new \
         state directory (`--state-dir` or SET 'state.dir'); to continue the old logic, run the \
         pipeline as it was (with the Flowline version that took the checkpoint, if the SQL did \
         not change: a newer one may plan the same SQL differently).",
        dir.display()
    ))
}

/// Counters a job reports (also kept across restarts through checkpoints).
#[derive(Default)]
pub(crate) struct JobReport {
    pub epochs: u64,
    pub first_epoch: Option<u64>,
    pub last_epoch: Option<u64>,
    pub restored_from: Option<u64>,
    pub skipped_corrupt: Vec<(u64, String)>,
    /// Checkpoints the job had stopped writing (never published), passed over.
    pub skipped_incomplete: Vec<u64>,
    pub checkpoint_ms_max: u64,
    pub restore_ms: u64,
}

impl OpenedPipeline {
    /// Runs a pipeline whose sources are logs (see the module documentation).
    pub(crate) async fn run_log_job(
        &self,
        run_id: &str,
        settings: &JobSettings,
        bin: &mut RejectBin,
        state: &mut RunState,
        report: &mut JobReport,
    ) -> Result<()> {
        let batch = self.mode == Mode::Batch;
        let checkpoints = !batch;
        let store = CheckpointStore::open(&self.state_dir.join("checkpoints"))?;
        let (plan_text, fp) = fingerprint(self);
        let restore_clock = Instant::now();
        let found = if checkpoints {
            store.latest().await?
        } else {
            crate::checkpoint::Found {
                checkpoint: None,
                corrupt: vec![],
                incomplete: vec![],
            }
        };
        if !found.corrupt.is_empty() {
            let (epoch, why) = &found.corrupt[0];
            match &found.checkpoint {
                None => {
                    return Err(Error::Input {
                        path: store.dir().to_path_buf(),
                        message: format!(
                            "checkpoint {epoch} is not usable ({why}) and there is no older one. \
                             Its sinks may already hold its output, so starting from scratch \
                             could duplicate rows: remove the state directory and the sinks' \
                             output to start over"
                        ),
                    })
                }
                Some(c) if self.has_log_sink() => {
                    return Err(Error::Input {
                        path: store.dir().to_path_buf(),
                        message: format!(
                            "checkpoint {epoch} is not usable ({why}). Falling back to checkpoint \
                             {} would append epoch {epoch}'s records to a log sink a second time, \
                             and a log cannot be rolled back; remove chk-{epoch:010} to accept \
                             that, or restore the file",
                            c.meta.epoch
                        ),
                    })
                }
                Some(_) => {}
            }
            report.skipped_corrupt = found.corrupt.clone();
        }
        report.skipped_incomplete = found.incomplete.clone();
        let checkpoint = found.checkpoint;
        if let Some(c) = &checkpoint {
            if c.meta.fingerprint != fp {
                return Err(mismatch(store.dir(), &c.meta.plan, &plan_text));
            }
            report.restored_from = Some(c.meta.epoch);
            // Rejects written after the checkpoint are written again by the replay.
            truncate(bin.path(), c.meta.rejects_bytes)?;
            for (name, n) in &c.meta.rows_read {
                state.rows_read.insert(name.clone(), *n);
            }
        }

        // Sinks: exactly-once by epoch, resuming the checkpoint's pending publish.
        let mut sinks = self.open_sinks(state, |name| {
            let mode = if batch {
                SinkMode::Run {
                    run_id: run_id.to_string(),
                    job: self.name.clone(),
                }
            } else {
                SinkMode::Epochs {
                    job: self.name.clone(),
                    staging: self.state_dir.join("staging").join(name),
                    resume: checkpoint
                        .as_ref()
                        .and_then(|c| c.meta.sinks.get(name).cloned()),
                }
            };
            let written = checkpoint
                .as_ref()
                .and_then(|c| c.meta.rows_written.get(name).copied())
                .unwrap_or(0);
            (mode, written)
        })?;

        let mut chains = self.build_chains()?;
        if let Some(c) = &checkpoint {
            for (ci, chain) in chains.iter_mut().enumerate() {
                for (oi, op) in chain.ops.iter_mut().enumerate() {
                    op.restore(c.operator_state(ci, oi)).map_err(|e| {
                        let why = match e {
                            Error::Internal(m) => m,
                            other => other.to_string(),
                        };
                        Error::Input {
                            path: store.dir().to_path_buf(),
                            message: format!(
                                "checkpoint {}: the state of operator {} of INSERT INTO {} \
                                     cannot be restored ({why}). Restore the checkpoint from a \
                                     backup, or start over with a new state directory",
                                c.meta.epoch,
                                op.name(),
                                chain.sink
                            ),
                        }
                    })?;
                }
            }
        }

        // Lookup joins' dimension tables: loaded before any row that joins them.
        let mut dimensions = self.dimension_watches(&chains)?;
        for d in &mut dimensions {
            self.refresh_dimension(d, &mut chains, &mut sinks, bin, state)?;
        }

        // Sources: positions from the checkpoint, else the startup mode.
        let names: Vec<String> = self.log_sources.keys().cloned().collect();
        let sources: Vec<Arc<LogSource>> = self.log_sources.values().cloned().collect();
        let mut clocks = vec![];
        let mut positions = vec![];
        let mut bounds = vec![];
        let mut readers = vec![];
        for (name, source) in names.iter().zip(&sources) {
            let table = self
                .def
                .table(name)
                .ok_or_else(|| Error::Internal("source vanished".into()))?;
            let mut clock = SourceClock::new(table, source)?;
            let saved = checkpoint.as_ref().and_then(|c| c.meta.positions.get(name));
            let mut partition_readers = source.readers()?;
            let ranges = partition_readers
                .iter_mut()
                .map(PartitionReader::offsets)
                .collect::<Result<Vec<_>>>()?;
            let start = source.start_offsets(&ranges)?;
            let mut pos = vec![];
            for p in 0..source.partitions() {
                match saved.and_then(|s| s.get(&p)) {
                    Some(at) => {
                        pos.push(at.next);
                        clock.max_seen[p as usize] = at.max_event_time;
                    }
                    None => pos.push(start[p as usize]),
                }
            }
            if let Some(w) = checkpoint
                .as_ref()
                .and_then(|c| c.meta.watermarks.get(name))
            {
                clock.current = Watermark(*w);
            }
            bounds.push((batch || source.bounded).then(|| ranges.iter().map(|r| r.1).collect()));
            readers.push(partition_readers);
            positions.push(pos);
            clocks.push(clock);
            state.read_sources.insert(name.clone());
        }
        report.restore_ms = restore_clock.elapsed().as_millis() as u64;

        let (tx, rx) = sync_channel::<Result<Item>>(4);
        let task = SourceTask {
            reported: clocks
                .iter()
                .map(|c| c.max_seen.iter().map(Option::is_some).collect())
                .collect(),
            sources: sources.clone(),
            readers,
            positions: positions.clone(),
            bounds,
            batch_size: self.batch_size,
            settings: settings.clone(),
            tx: tx.clone(),
        };
        let handle = std::thread::Builder::new()
            .name("flowline-source".into())
            .spawn(move || {
                if let Err(e) = task.run() {
                    let _ = tx.send(Err(e));
                }
            })
            .map_err(|e| Error::Internal(format!("cannot start the source task: {e}")))?;

        let mut job = Job {
            pipeline: self,
            store: &store,
            plan: &plan_text,
            fingerprint: &fp,
            checkpoints,
            epoch: checkpoint.as_ref().map_or(1, |c| c.meta.epoch + 1),
            names,
            sources,
            clocks,
            positions,
            chains,
            dimensions,
            sinks,
            changed: checkpoint.is_none(),
            emit: EmitClock::new(self.emit_interval),
            lag_readers: BTreeMap::new(),
            lag_unknown: BTreeSet::new(),
        };
        let result = job.drive(rx, bin, state, report).await;
        drop(job);
        let _ = handle.join();
        result
    }

    fn has_log_sink(&self) -> bool {
        self.sink_schemas
            .keys()
            .any(|s| self.def.table(s).and_then(TableDef::connector) == Some("log"))
    }
}

/// The operator task's state.
struct Job<'a> {
    pipeline: &'a OpenedPipeline,
    store: &'a CheckpointStore,
    /// The plan text and fingerprint written into every checkpoint.
    plan: &'a str,
    fingerprint: &'a str,
    /// Whether the job checkpoints (not in batch mode).
    checkpoints: bool,
    /// The epoch the next checkpoint commits.
    epoch: u64,
    names: Vec<String>,
    sources: Vec<Arc<LogSource>>,
    clocks: Vec<SourceClock>,
    positions: Vec<Vec<u64>>,
    chains: Vec<Chain>,
    /// Lookup joins' dimension tables, reloaded when their files change.
    dimensions: Vec<DimensionWatch>,
    sinks: BTreeMap<String, SinkSlot>,
    /// Whether anything happened since the last checkpoint.
    changed: bool,
    /// When update-mode chains emit their changed results.
    emit: EmitClock,
    /// Per source, one reader per partition, for the lag shown to watchers.
    lag_readers: BTreeMap<usize, Vec<PartitionReader>>,
    /// Sources whose lag could not be read (warned once until it can be again).
    lag_unknown: BTreeSet<usize>,
}

impl Job<'_> {
    async fn drive(
        &mut self,
        rx: Receiver<Result<Item>>,
        bin: &mut RejectBin,
        state: &mut RunState,
        report: &mut JobReport,
    ) -> Result<()> {
        let mut yielded = Instant::now();
        loop {
            // The loop blocks its thread; let the runtime's other tasks (signal handling) run.
            if yielded.elapsed() >= Duration::from_millis(50) {
                tokio::task::yield_now().await;
                yielded = Instant::now();
            }
            for d in &mut self.dimensions {
                self.pipeline.refresh_dimension(
                    d,
                    &mut self.chains,
                    &mut self.sinks,
                    bin,
                    state,
                )?;
            }
            let item = rx
                .recv()
                .map_err(|_| Error::Internal("the source task stopped unexpectedly".into()))??;
            match item {
                Item::Data {
                    source,
                    partition,
                    decoded,
                    next,
                } => {
                    self.changed = true;
                    bin.write(&decoded.rejects)?;
                    self.positions[source][partition as usize] = next;
                    let name = &self.names[source];
                    let batch = self.pipeline.in_time_range(
                        name,
                        decoded.batch,
                        self.clocks[source].column,
                    )?;
                    if batch.num_rows() > 0 {
                        let read = state.rows_read.entry(name.clone()).or_default();
                        *read += batch.num_rows() as u64;
                        let read = *read;
                        self.pipeline.live.update(|l| {
                            l.rows_read.insert(name.clone(), read);
                            if !decoded.rejects.is_empty() {
                                l.rejects.clone_from(bin.counts());
                            }
                        });
                        self.clocks[source].observe(partition, &batch)?;
                        for chain in self.chains.iter_mut().filter(|c| c.reads(name)) {
                            chain.push_from(
                                name,
                                Message::Data(batch.clone()),
                                &mut self.sinks,
                                bin,
                            )?;
                        }
                        self.emit.touch();
                    }
                    self.advance(source, bin, state)?;
                    self.emit_updates(false, bin)?;
                }
                Item::Empty { source, partition } => {
                    self.clocks[source].empty[partition as usize] = true;
                    self.advance(source, bin, state)?;
                }
                Item::Tick => {
                    for s in 0..self.sources.len() {
                        self.advance(s, bin, state)?;
                    }
                    self.emit_updates(false, bin)?;
                }
                Item::Barrier { last } => {
                    // A micro-batch ends with its updates; so does a stopping job.
                    let trigger = self.pipeline.job.as_ref().map(|j| j.trigger);
                    self.emit_updates(last || trigger != Some(Trigger::Continuous), bin)?;
                    // Nothing read, fired or advanced since the last checkpoint: it still holds.
                    if self.checkpoints && self.changed {
                        self.commit_epoch(bin, state, report).await?;
                    }
                    if last {
                        break;
                    }
                }
                Item::End => {
                    // A bounded input ends with the maximum watermark: every window fires.
                    for (s, name) in self.names.iter().enumerate() {
                        for chain in self.chains.iter_mut().filter(|c| c.reads(name)) {
                            let end = Message::Watermark(Watermark::MAX);
                            chain.push_from(name, end, &mut self.sinks, bin)?;
                            chain.push_from(name, Message::EndOfInput, &mut self.sinks, bin)?;
                        }
                        self.clocks[s].current = Watermark::MAX;
                    }
                    if self.checkpoints {
                        self.commit_epoch(bin, state, report).await?;
                    } else {
                        commit_all(&mut self.sinks, state)?;
                    }
                    break;
                }
            }
        }
        for (s, name) in self.names.iter().enumerate() {
            let clock = &self.clocks[s];
            state.positions.insert(
                name.clone(),
                (0..).zip(self.positions[s].iter().copied()).collect(),
            );
            state
                .watermarks
                .insert(name.clone(), clock.current.display());
            if let Some(t) = clock.max_seen.iter().flatten().max() {
                state
                    .max_event_time
                    .insert(name.clone(), Watermark(*t).display());
            }
        }
        Ok(())
    }

    /// Checkpoints and publishes epoch `*epoch`, then moves to the next one.
    async fn commit_epoch(
        &mut self,
        bin: &mut RejectBin,
        state: &mut RunState,
        report: &mut JobReport,
    ) -> Result<()> {
        let clock = Instant::now();
        let bytes = self.checkpoint(bin, state).await?;
        let ms = clock.elapsed().as_millis() as u64;
        self.publish_live(ms, bytes, bin, state);
        report.checkpoint_ms_max = report.checkpoint_ms_max.max(ms);
        report.first_epoch.get_or_insert(self.epoch);
        report.last_epoch = Some(self.epoch);
        report.epochs += 1;
        self.epoch += 1;
        self.changed = false;
        Ok(())
    }

    /// Update mode: pushes [`Message::EmitUpdates`] through the update-mode chains when the
    /// emit interval has passed since the last time (or `now`), if rows arrived since.
    fn emit_updates(&mut self, now: bool, bin: &mut RejectBin) -> Result<()> {
        if self.emit.due(now) {
            self.changed = true;
            for chain in self.chains.iter_mut().filter(|c| c.updates()) {
                chain.push(Message::EmitUpdates, &mut self.sinks, bin)?;
            }
        }
        Ok(())
    }

    /// Pushes the source's watermark through its chains if it advanced.
    fn advance(&mut self, source: usize, bin: &mut RejectBin, state: &mut RunState) -> Result<()> {
        if let Some(w) = self.clocks[source].advance() {
            self.changed = true;
            let name = &self.names[source];
            self.pipeline.live.update(|l| {
                l.watermarks.insert(name.clone(), w.0);
            });
            state.record_state(&self.chains);
            for chain in self.chains.iter_mut().filter(|c| c.reads(name)) {
                chain.push_from(name, Message::Watermark(w), &mut self.sinks, bin)?;
            }
        }
        Ok(())
    }

    /// Copies the numbers of a completed checkpoint into the live status.
    fn publish_live(&mut self, ms: u64, bytes: u64, bin: &RejectBin, state: &RunState) {
        // Readers kept open find a partition's end incrementally (a new one reads the whole
        // active segment). A source whose ends cannot be read has no lag in the status (it is
        // unknown, not 0), and its readers are opened again at the next checkpoint.
        let mut lag = BTreeMap::new();
        for (s, source) in self.sources.iter().enumerate() {
            let readers = match self.lag_readers.entry(s) {
                std::collections::btree_map::Entry::Occupied(o) => Ok(o.into_mut()),
                std::collections::btree_map::Entry::Vacant(v) => source
                    .readers()
                    .map(|r| v.insert(r))
                    .map_err(|e| e.to_string()),
            };
            let ends = readers.and_then(|readers| {
                readers
                    .iter_mut()
                    .map(|r| r.offsets().map(|(_, end)| end).map_err(|e| e.to_string()))
                    .collect::<std::result::Result<Vec<u64>, String>>()
            });
            match ends {
                Ok(ends) => {
                    let behind = ends
                        .iter()
                        .zip(&self.positions[s])
                        .map(|(end, at)| end.saturating_sub(*at))
                        .sum::<u64>();
                    lag.insert(self.names[s].clone(), behind);
                    self.lag_unknown.remove(&s);
                }
                Err(e) => {
                    if self.lag_unknown.insert(s) {
                        eprintln!("warning: lag of source {} unknown: {e}", self.names[s]);
                    }
                    self.lag_readers.remove(&s);
                }
            }
        }
        let unknown: Vec<String> = self
            .lag_unknown
            .iter()
            .map(|&s| self.names[s].clone())
            .collect();
        let now = flowline_log::now_ms();
        self.pipeline.live.update(|l| {
            l.rows_read.clone_from(&state.rows_read);
            l.rows_written.clone_from(&state.rows_written);
            l.rejects.clone_from(bin.counts());
            l.lag_records = lag;
            l.lag_unknown = unknown;
            l.last_publish_ms = Some(now);
            l.checkpoints += 1;
            l.last_checkpoint = Some(crate::status::CheckpointStatus {
                epoch: self.epoch,
                duration_ms: ms,
                bytes,
                at_ms: now,
            });
            l.operators = state.current_state();
            l.operator_rows.clone_from(&state.current_rows);
        });
    }

    /// Checkpoint `self.epoch` (see the module documentation for the protocol); returns the
    /// bytes of operator state it wrote.
    async fn checkpoint(&mut self, bin: &mut RejectBin, state: &mut RunState) -> Result<u64> {
        let epoch = self.epoch;
        state.record_state(&self.chains);
        let mut prepared: BTreeMap<String, Prepared> = BTreeMap::new();
        for (name, slot) in self.sinks.iter_mut() {
            prepared.insert(name.clone(), slot.sink.prepare(epoch)?);
        }
        let mut blob = vec![];
        let mut operators = vec![];
        for (ci, chain) in self.chains.iter().enumerate() {
            for (oi, op) in chain.ops.iter().enumerate() {
                let offset = blob.len();
                op.snapshot(&mut blob)?;
                if blob.len() > offset {
                    operators.push(OperatorState {
                        chain: ci,
                        operator: oi,
                        name: op.name().to_string(),
                        offset: offset as u64,
                        len: (blob.len() - offset) as u64,
                    });
                }
            }
        }
        bin.flush()?;
        let rejects_bytes = std::fs::metadata(bin.path()).map_or(0, |m| m.len());
        let mut positions = BTreeMap::new();
        let mut watermarks = BTreeMap::new();
        for (s, name) in self.names.iter().enumerate() {
            let clock = &self.clocks[s];
            positions.insert(
                name.clone(),
                self.positions[s]
                    .iter()
                    .enumerate()
                    .map(|(p, &next)| {
                        (
                            p as u32,
                            PartitionPosition {
                                next,
                                max_event_time: clock.max_seen[p],
                            },
                        )
                    })
                    .collect(),
            );
            watermarks.insert(name.clone(), clock.current.0);
        }
        let rows_written: BTreeMap<String, u64> = self
            .sinks
            .iter()
            .map(|(n, s)| (n.clone(), s.rows))
            .collect();
        let meta = CheckpointMeta {
            version: 0,
            epoch,
            pipeline: self.pipeline.path.display().to_string(),
            fingerprint: self.fingerprint.to_string(),
            plan: self.plan.to_string(),
            created_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            positions: positions.clone(),
            watermarks,
            sinks: prepared.clone(),
            rejects_bytes,
            rows_read: state.rows_read.clone(),
            rows_written: rows_written.clone(),
            operators,
            state_bytes: 0,
            state_checksum: String::new(),
        };
        let bytes = blob.len() as u64;
        self.store.write(meta, blob).await?;
        // The checkpoint is complete: publish, then tell the log how far the job has read.
        for (name, slot) in self.sinks.iter_mut() {
            let commit = slot.sink.publish(&prepared[name])?;
            let entry = state.commits.entry(name.clone()).or_default();
            entry.rows += commit.rows;
            entry.files.extend(commit.files);
        }
        state.rows_written = rows_written;
        for (s, source) in self.sources.iter().enumerate() {
            let offsets = positions[&self.names[s]]
                .iter()
                .map(|(p, at)| (*p, at.next))
                .collect();
            source.commit_group(&offsets)?;
        }
        self.store.prune(3).await?;
        Ok(bytes)
    }
}

/// Cuts the reject bin back to `len` bytes (what it held at the checkpoint).
fn truncate(path: &std::path::Path, len: u64) -> Result<()> {
    match std::fs::OpenOptions::new().write(true).open(path) {
        Ok(f) => {
            let now = f.metadata().map_err(|e| Error::io("read", path, e))?.len();
            if now > len {
                f.set_len(len).map_err(|e| Error::io("truncate", path, e))?;
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io("open reject bin", path, e)),
    }
}
