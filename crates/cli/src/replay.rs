//! Kappa replay-and-swap: a new version of a pipeline (its SQL file as it is now) runs from the
//! start of its log sources into a *shadow* version of its serving tables while the old version
//! keeps serving; when the shadow has caught up (lag at or below a threshold after a
//! checkpoint), it stops with a final checkpoint, is optionally compared with the old version on
//! closed windows, and is swapped in, one atomic rename per table: a reader sees the old version
//! or the whole new one, never a half-built table. The pipeline's runner then stops the old job
//! and goes on with the new version from the shadow's checkpoint.
//!
//! A batch pipeline's replay is one run into the shadow version, then the swap.
//!
//! **Corrections** ("six bad hours"): [`start_correction`] reruns the pipeline's current SQL as a
//! batch over the source rows whose event time is in a range and replaces only that range of the
//! served version's tables, in one transaction per table (rows of the range that the rerun no
//! longer produces are removed). Windows that straddle the range's ends see only part of their
//! input, so the rerun's rows outside the range are dropped: give a range aligned to the windows.
//!
//! Started by `POST /api/pipelines/{name}/replay?as=v2` or `flowline replay PROJECT PIPELINE --as
//! v2` (which asks a running server, or runs the replay itself when none is running); cancelled
//! by `DELETE` on the same path or `flowline replay PROJECT PIPELINE --cancel`: the shadow job
//! stops, and its version and state are deleted. Once the replay's status is `swapping` a
//! cancel is refused as too late: every accepted cancel ends `cancelled`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use arrow::array::{Array, ArrayRef, RecordBatch};
use arrow::datatypes::{DataType, SchemaRef, TimeUnit};
use arrow::row::{RowConverter, Rows, SortField};
use flowline_connectors::serving::{self, ServingTable};
use flowline_runtime::{LiveStatus, Mode, OpenedPipeline, RunOptions, Trigger};
use serde::Serialize;
use serde_json::{json, Value};

use crate::serve::{now_ms, Hosted};

/// The default lag (records not yet read from the log sources) under which a replay swaps.
pub const DEFAULT_MAX_LAG: u64 = 100;
/// Differences listed per table in a diff report (all are counted).
const DIFF_SAMPLES: usize = 10;
/// The column that marks a row's window as closed (at or before the watermark).
const CLOSE_COLUMN: &str = "window_end";

/// What to replay.
#[derive(Debug, Clone)]
pub struct ReplayRequest {
    /// The version to build (`v2`).
    pub version: String,
    /// Swap once the lag is at or below this many records.
    pub max_lag: u64,
    /// Compare the old and new versions before the swap.
    pub diff: bool,
}

/// A replay, as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct ReplayStatus {
    pub pipeline: String,
    pub version: String,
    /// The version served when the replay started.
    pub from_version: String,
    /// catching-up, comparing, swapping, swapped, cancelled, failed, stopped; for corrections:
    /// correcting, corrected
    pub status: String,
    /// Corrections: the event-time range `[from, to)` rerun (ms since the Unix epoch).
    pub range: Option<(i64, i64)>,
    pub rows_written: u64,
    pub started_ms: i64,
    pub ended_ms: Option<i64>,
    pub max_lag: u64,
    pub rows_read: u64,
    /// Records still to read from the logs (known after the first checkpoint, and while every
    /// source's lag can be read).
    pub lag_records: Option<u64>,
    /// Log sources whose lag could not be read at the last checkpoint: the replay waits for
    /// them before it swaps.
    pub lag_unknown: Vec<String>,
    pub watermark_ms: Option<i64>,
    pub checkpoints: u64,
    pub error: Option<String>,
    pub diff: Option<Vec<TableDiff>>,
    #[serde(skip)]
    pub stop: Arc<AtomicBool>,
    /// Set by a cancel request: the shadow job stops and its version is deleted, unswapped.
    #[serde(skip)]
    pub cancel: Arc<AtomicBool>,
}

impl ReplayStatus {
    /// A replay starting now, recorded as the pipeline's last one.
    fn begin(
        hosted: &Hosted,
        version: String,
        status: &str,
        max_lag: u64,
        stop: Arc<AtomicBool>,
    ) -> ReplayStatus {
        let r = ReplayStatus {
            pipeline: hosted.spec.name.clone(),
            version,
            from_version: hosted.active_version(),
            status: status.into(),
            range: None,
            rows_written: 0,
            started_ms: now_ms(),
            ended_ms: None,
            max_lag,
            rows_read: 0,
            lag_records: None,
            lag_unknown: vec![],
            watermark_ms: None,
            checkpoints: 0,
            error: None,
            diff: None,
            stop,
            cancel: Arc::new(AtomicBool::new(false)),
        };
        if let Ok(mut last) = hosted.replay.lock() {
            *last = Some(r.clone());
        }
        r
    }

    pub fn running(&self) -> bool {
        is_running(&self.status)
    }
}

/// Whether a replay with this status is still under way.
pub fn is_running(status: &str) -> bool {
    matches!(
        status,
        "catching-up" | "comparing" | "swapping" | "correcting"
    )
}

/// A request that conflicts with the pipeline's state (a replay running, a version that
/// exists): HTTP 409, where other refusals are 400.
#[derive(Debug)]
pub struct Conflict(pub String);

impl std::fmt::Display for Conflict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Conflict {}

/// Holds the pipeline's replay slot while a request is checked (the checks await), so that two
/// requests cannot both start; released when dropped, after the replay is recorded.
struct Starting<'a>(&'a AtomicBool);

impl Drop for Starting<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::SeqCst);
    }
}

fn reserve(hosted: &Hosted) -> Result<Starting<'_>> {
    let name = &hosted.spec.name;
    if hosted.replay_starting.swap(true, Ordering::SeqCst) {
        return Err(Conflict(format!("pipeline {name} is starting a replay already")).into());
    }
    let slot = Starting(&hosted.replay_starting);
    if let Some(r) = hosted.replay.lock().ok().and_then(|r| r.clone()) {
        if r.running() {
            return Err(Conflict(format!(
                "pipeline {name} is already replaying into version {} ({}); wait for it to end",
                r.version, r.status
            ))
            .into());
        }
    }
    Ok(slot)
}

/// Checks a replay request and starts it on its own thread. Errors (a bad version, the new SQL
/// not planning, a replay already running) come back before anything runs.
pub async fn start(hosted: &Arc<Hosted>, request: ReplayRequest) -> Result<ReplayStatus> {
    let name = &hosted.spec.name;
    serving::check_version_name(&request.version).map_err(anyhow::Error::msg)?;
    let _slot = reserve(hosted)?;
    if hosted.serving.is_empty() {
        bail!(
            "pipeline {name} writes no serving table ('connector' = 'table'); a replay builds a \
             new version of its serving tables (it writes: {})",
            hosted.sinks.join(", ")
        );
    }
    let from_version = hosted.active_version();
    if request.version == from_version {
        return Err(Conflict(format!(
            "pipeline {name} already serves version {from_version}; replay into a new version \
             (e.g. --as v{})",
            next_version_number(&from_version)
        ))
        .into());
    }
    for (table, t) in &hosted.serving {
        let versions = t.versions()?;
        if versions.contains(&request.version) {
            return Err(Conflict(format!(
                "serving table {table} already has a version {}: choose a new version name, or \
                 delete that version's file under `{}` to build it again (versions: {})",
                request.version,
                t.dir().display(),
                versions.join(", ")
            ))
            .into());
        }
        // Without the served version (and so without `CURRENT`), the first version written
        // would become current: the half-built replay would be what readers see.
        if !versions.contains(&from_version) {
            return Err(Conflict(format!(
                "serving table {table} has no version {from_version} yet: pipeline {name} has \
                 not written it; run the pipeline once, then replay it into a new version"
            ))
            .into());
        }
    }
    let streaming = hosted.continuous();
    let mut options = if streaming {
        let mut o = hosted.options(Mode::Stream, Some(Trigger::Continuous));
        // Publish often while catching up: the swap waits for a checkpoint under the lag.
        o.checkpoint_interval = Some(Duration::from_secs(1));
        o
    } else {
        hosted.options(Mode::Batch, None)
    };
    let stop = Arc::new(AtomicBool::new(false));
    let live = Arc::new(LiveStatus::new());
    options.stop = Some(stop.clone());
    options.live = Some(live.clone());
    options.serving_version = Some(request.version.clone());
    // The new logic must plan, and write the same serving tables, before anything runs.
    let opened = OpenedPipeline::open(&hosted.spec.file, options.clone())
        .await
        .with_context(|| format!("the new version of pipeline {name}"))?;
    let mut new_sinks: Vec<&str> = opened.sinks().collect();
    let mut old_sinks: Vec<&str> = hosted.sinks.iter().map(String::as_str).collect();
    new_sinks.sort();
    old_sinks.sort();
    if new_sinks != old_sinks {
        bail!(
            "the new version of pipeline {name} writes {} but the served one writes {}: a \
             replay swaps the same tables",
            new_sinks.join(", "),
            old_sinks.join(", ")
        );
    }
    // The shadow's own state (checkpoints, rejects): deleted with it if the replay is cancelled.
    let shadow_state = opened.state_dir.clone();
    drop(opened);
    // A replay reads from offset 0: checkpoints already there (of an earlier build of this
    // version, or the pipeline's own when it replays into the version its SQL declares) would
    // resume it from where they stopped instead.
    let checkpoints = shadow_state.join("checkpoints");
    if std::fs::read_dir(&checkpoints).is_ok_and(|mut d| d.next().is_some()) {
        return Err(Conflict(format!(
            "version {} of pipeline {name} would start from the checkpoints in `{}`, not from \
             offset 0: replay into a new version name (e.g. --as v{})",
            request.version,
            checkpoints.display(),
            next_version_number(&from_version)
        ))
        .into());
    }
    let status = ReplayStatus::begin(
        hosted,
        request.version.clone(),
        "catching-up",
        request.max_lag,
        stop.clone(),
    );
    let cancel = status.cancel.clone();
    let hosted = hosted.clone();
    std::thread::Builder::new()
        .name(format!("replay-{name}"))
        .spawn(move || {
            let job = Job {
                options,
                stop,
                cancel,
                live,
                streaming,
                shadow_state,
            };
            let outcome = drive(&hosted, &request, job);
            update(&hosted, |r| {
                r.ended_ms = Some(now_ms());
                match outcome {
                    Ok(status) => r.status = status.into(),
                    Err(e) => {
                        r.status = "failed".into();
                        r.error = Some(format!("{e:#}"));
                    }
                }
            });
            if let Some(r) = hosted.replay.lock().ok().and_then(|r| r.clone()) {
                eprintln!(
                    "pipeline {}: replay into {} {}{}",
                    r.pipeline,
                    r.version,
                    r.status,
                    r.error.map(|e| format!(": {e}")).unwrap_or_default()
                );
            }
        })
        .context("cannot start the replay thread")?;
    Ok(status)
}

/// Checks a correction request and starts it on its own thread: a batch run of the pipeline's
/// current SQL over the event-time range, replacing that range of its served tables.
pub async fn start_correction(
    hosted: &Arc<Hosted>,
    range: flowline_connectors::TimeRange,
) -> Result<ReplayStatus> {
    let name = &hosted.spec.name;
    let _slot = reserve(hosted)?;
    if hosted.serving.is_empty() {
        bail!(
            "pipeline {name} writes no serving table ('connector' = 'table'); corrections \
             replace a time range of serving tables (it writes: {})",
            hosted.sinks.join(", ")
        );
    }
    let stop = Arc::new(AtomicBool::new(false));
    let live = Arc::new(LiveStatus::new());
    let mut options = hosted.options(Mode::Batch, None);
    options.stop = Some(stop.clone());
    options.live = Some(live.clone());
    options.time_range = Some(range.clone());
    // The range and the sinks are checked before anything runs.
    drop(
        OpenedPipeline::open(&hosted.spec.file, options.clone())
            .await
            .with_context(|| format!("corrections of pipeline {name}"))?,
    );
    let mut status = ReplayStatus::begin(hosted, hosted.active_version(), "correcting", 0, stop);
    status.range = Some((range.from_ms, range.to_ms));
    update(hosted, |r| r.range = status.range);
    let hosted = hosted.clone();
    std::thread::Builder::new()
        .name(format!("correct-{name}"))
        .spawn(move || {
            let result = run_watched(&hosted, options, &live, |snap| {
                update(&hosted, |r| r.rows_read = snap.total_read())
            });
            let snap = live.snapshot();
            update(&hosted, |r| {
                r.ended_ms = Some(now_ms());
                r.rows_read = snap.total_read();
                r.rows_written = snap.rows_written.values().sum();
                match result {
                    Ok(_) => r.status = "corrected".into(),
                    Err(e) => {
                        r.status = "failed".into();
                        r.error = Some(format!("{e:#}"));
                    }
                }
            });
            eprintln!("pipeline {}: corrections ended", hosted.spec.name);
        })
        .context("cannot start the corrections thread")?;
    Ok(status)
}

fn next_version_number(version: &str) -> u64 {
    version
        .trim_start_matches(|c: char| !c.is_ascii_digit())
        .parse::<u64>()
        .map(|n| n + 1)
        .unwrap_or(2)
}

fn update(hosted: &Hosted, f: impl FnOnce(&mut ReplayStatus)) {
    if let Ok(mut r) = hosted.replay.lock() {
        if let Some(r) = r.as_mut() {
            f(r);
        }
    }
}

/// Runs the job of `options` on a thread of its own; about every 100 ms while it runs,
/// `tick` sees its live numbers (to report progress, or to set the job's stop flag).
fn run_watched(
    hosted: &Hosted,
    options: RunOptions,
    live: &LiveStatus,
    mut tick: impl FnMut(&flowline_runtime::StatusSnapshot),
) -> Result<flowline_runtime::RunReport> {
    let file = hosted.spec.file.clone();
    let job = std::thread::Builder::new()
        .name(format!("watched-job-{}", hosted.spec.name))
        .spawn(move || crate::serve::run_blocking(&file, options))
        .context("cannot start the replay or corrections job")?;
    loop {
        std::thread::sleep(Duration::from_millis(100));
        tick(&live.snapshot());
        if job.is_finished() {
            break;
        }
    }
    match job.join() {
        Ok(result) => result,
        Err(_) => bail!("the replay or corrections job panicked"),
    }
}

/// Cancels the pipeline's running replay: its shadow job stops at its next checkpoint (a batch
/// run first ends), and the shadow version and its state are deleted; nothing is swapped.
/// Corrections cannot be cancelled (each replaces its range as its run commits).
pub fn cancel(hosted: &Hosted) -> Result<ReplayStatus> {
    let name = &hosted.spec.name;
    let mut last = hosted
        .replay
        .lock()
        .map_err(|_| anyhow::anyhow!("replay status poisoned"))?;
    let Some(r) = last.as_mut().filter(|r| r.running()) else {
        return Err(Conflict(format!("pipeline {name} has no replay running")).into());
    };
    if r.status == "correcting" {
        return Err(Conflict(format!(
            "pipeline {name} is running corrections, which cannot be cancelled: they replace \
             their range as the run commits; wait for them to end, then run corrections again \
             with the fixed logic"
        ))
        .into());
    }
    if r.status == "swapping" {
        return Err(Conflict(format!(
            "pipeline {name}'s replay is swapping its version {} in: too late to cancel; to go \
             back, replay the previous logic into another version",
            r.version
        ))
        .into());
    }
    r.cancel.store(true, Ordering::SeqCst);
    r.stop.store(true, Ordering::SeqCst);
    Ok(r.clone())
}

/// A replay's shadow job and what controls it.
struct Job {
    options: RunOptions,
    stop: Arc<AtomicBool>,
    cancel: Arc<AtomicBool>,
    live: Arc<LiveStatus>,
    streaming: bool,
    /// The shadow version's state folder.
    shadow_state: std::path::PathBuf,
}

/// Deletes a cancelled replay's shadow version and its state folder. A replay into the version
/// the SQL declares keeps its state in the pipeline's own folder (manifest, rejects, other
/// versions): that folder is never deleted, only the version's tables.
fn discard(hosted: &Hosted, version: &str, job: &Job) -> Result<&'static str> {
    for (name, table) in &hosted.serving {
        table
            .discard(version)
            .with_context(|| format!("deleting version {version} of serving table {name}"))?;
    }
    let own_folder = job
        .shadow_state
        .ends_with(std::path::Path::new("versions").join(version));
    if !own_folder {
        return Ok("cancelled");
    }
    match std::fs::remove_dir_all(&job.shadow_state) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(e).with_context(|| format!("deleting {}", job.shadow_state.display()))
        }
    }
    Ok("cancelled")
}

/// Runs the shadow job until caught up, compares, swaps. Returns the final status.
fn drive(hosted: &Arc<Hosted>, request: &ReplayRequest, job: Job) -> Result<&'static str> {
    let (stop, streaming) = (&job.stop, job.streaming);
    let outcome = run_watched(hosted, job.options.clone(), &job.live, |snap| {
        let lag = (snap.checkpoints > 0).then(|| snap.known_lag()).flatten();
        update(hosted, |r| {
            r.rows_read = snap.total_read();
            r.lag_records = lag;
            r.lag_unknown.clone_from(&snap.lag_unknown);
            r.watermark_ms = snap.watermark();
            r.checkpoints = snap.checkpoints;
        });
        if hosted.stop.load(Ordering::SeqCst) {
            stop.store(true, Ordering::SeqCst);
        }
        if streaming && lag.is_some_and(|l| l <= request.max_lag) {
            // Caught up: a final checkpoint publishes everything read.
            stop.store(true, Ordering::SeqCst);
        }
    });
    // A cancelled replay is deleted even when its job failed, so its version can be built again.
    if job.cancel.load(Ordering::SeqCst) {
        return discard(hosted, &request.version, &job);
    }
    outcome.context("the replay job failed")?;
    if hosted.stop.load(Ordering::SeqCst) {
        return Ok("stopped");
    }
    let snap = job.live.snapshot();
    update(hosted, |r| {
        r.rows_read = snap.total_read();
        r.watermark_ms = snap.watermark();
        r.checkpoints = snap.checkpoints;
        if streaming {
            r.lag_records = snap.known_lag();
        }
    });
    let from = hosted.active_version();
    if request.diff {
        update(hosted, |r| r.status = "comparing".into());
        // Closed windows: those both versions have finished (end at or before both watermarks).
        let closed_until = if streaming {
            match (hosted.live().watermark(), snap.watermark()) {
                (Some(a), Some(b)) => Some(a.min(b)),
                _ => None,
            }
        } else {
            None
        };
        let mut reports = vec![];
        for (name, table) in &hosted.serving {
            reports.push(diff(name, table, &from, &request.version, closed_until)?);
        }
        update(hosted, |r| r.diff = Some(reports));
    }
    // Checked and recorded under the status lock that `cancel` takes: a cancel either comes
    // before this (and the replay is discarded) or is refused as too late.
    let cancelled = match hosted.replay.lock() {
        Ok(mut r) => match r.as_mut() {
            Some(r) if !job.cancel.load(Ordering::SeqCst) => {
                r.status = "swapping".into();
                false
            }
            _ => true,
        },
        Err(_) => bail!("replay status poisoned"),
    };
    if cancelled {
        return discard(hosted, &request.version, &job);
    }
    let tables: Vec<&serving::ServingTable> = hosted.serving.iter().map(|(_, t)| t).collect();
    serving::swap_together(&tables, &request.version, &hosted.swap_intent).with_context(|| {
        format!(
            "swapping serving tables {} to {}",
            hosted
                .serving
                .iter()
                .map(|(n, _)| n.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            request.version
        )
    })?;
    if let Ok(mut v) = hosted.version.lock() {
        *v = (request.version != hosted.declared_version).then(|| request.version.clone());
    }
    // The old job stops; the runner goes on with the new version from its checkpoint. (A batch
    // pipeline's next run reads the version when it starts.)
    if streaming {
        hosted.restart.store(true, Ordering::SeqCst);
    }
    Ok("swapped")
}

/// How two versions of a serving table differ.
#[derive(Debug, Clone, Serialize, Default)]
pub struct TableDiff {
    pub table: String,
    pub from_version: String,
    pub to_version: String,
    /// Only rows whose `window_end` is at or before this were compared (closed windows).
    pub closed_until_ms: Option<i64>,
    /// Rows compared, per version.
    pub from_rows: u64,
    pub to_rows: u64,
    /// Keyed tables: rows of the same key that are equal / differ.
    pub same: u64,
    pub changed: u64,
    /// Rows (or keys) in one version only.
    pub only_from: u64,
    pub only_to: u64,
    /// The columns differ: rows are only counted.
    pub schema_changed: bool,
    /// Some of the differences, as `{"kind", "from", "to"}`.
    pub samples: Vec<Value>,
}

/// One version's rows, encoded for comparison.
struct Side {
    rows: Rows,
    keys: Option<Rows>,
    /// (batch, row) of each encoded row, to show it.
    at: Vec<(usize, usize)>,
    batches: Vec<RecordBatch>,
}

/// Compares two versions of a table: by key when it has one, else as multisets of rows.
pub fn diff(
    name: &str,
    table: &ServingTable,
    from: &str,
    to: &str,
    closed_until_ms: Option<i64>,
) -> Result<TableDiff> {
    let mut report = TableDiff {
        table: name.to_string(),
        from_version: from.to_string(),
        to_version: to.to_string(),
        ..Default::default()
    };
    let read = |v: &str| -> Result<Option<(SchemaRef, Vec<RecordBatch>)>> {
        table
            .read(Some(v))
            .with_context(|| format!("reading version {v} of {name}"))
    };
    let (Some((from_schema, from_batches)), Some((to_schema, to_batches))) =
        (read(from)?, read(to)?)
    else {
        bail!("serving table {name} lacks version {from} or {to}");
    };
    let key = table.info(Some(to))?.map(|i| i.key).unwrap_or_default();
    let same_columns = serving::same_columns(&from_schema, &to_schema);
    let cutoff = closed_until_ms.filter(|_| from_schema.index_of(CLOSE_COLUMN).is_ok());
    report.closed_until_ms = cutoff;
    if !same_columns {
        report.schema_changed = true;
        report.from_rows = count(&from_batches, cutoff)? as u64;
        report.to_rows = count(&to_batches, cutoff)? as u64;
        return Ok(report);
    }
    let fields: Vec<SortField> = from_schema
        .fields()
        .iter()
        .map(|f| SortField::new(f.data_type().clone()))
        .collect();
    let key_idx: Vec<usize> = key
        .iter()
        .filter_map(|k| from_schema.index_of(k).ok())
        .collect();
    let key_fields: Vec<SortField> = key_idx.iter().map(|&i| fields[i].clone()).collect();
    let encode = |batches: Vec<RecordBatch>| -> Result<Side> {
        let conv = RowConverter::new(fields.clone())?;
        let key_conv = RowConverter::new(key_fields.clone())?;
        let mut rows = conv.empty_rows(0, 0);
        let mut keys = key_conv.empty_rows(0, 0);
        let mut at = vec![];
        for (b, batch) in batches.iter().enumerate() {
            let keep = closed(batch, cutoff)?;
            let indices: Vec<u32> = (0..batch.num_rows())
                .filter(|&i| keep.as_ref().is_none_or(|k| k[i]))
                .map(|i| i as u32)
                .collect();
            let idx = arrow::array::UInt32Array::from(indices.clone());
            let cols: Vec<ArrayRef> = batch
                .columns()
                .iter()
                .map(|c| arrow::compute::take(c, &idx, None))
                .collect::<std::result::Result<_, _>>()?;
            conv.append(&mut rows, &cols)?;
            if !key_idx.is_empty() {
                let kc: Vec<ArrayRef> = key_idx.iter().map(|&i| cols[i].clone()).collect();
                key_conv.append(&mut keys, &kc)?;
            }
            at.extend(indices.iter().map(|&i| (b, i as usize)));
        }
        Ok(Side {
            rows,
            keys: (!key_idx.is_empty()).then_some(keys),
            at,
            batches,
        })
    };
    let a = encode(from_batches)?;
    let b = encode(to_batches)?;
    report.from_rows = a.rows.num_rows() as u64;
    report.to_rows = b.rows.num_rows() as u64;
    // Rows are rendered only while samples are wanted.
    let mut sample = |kind: &str, from: Option<(&Side, usize)>, to: Option<(&Side, usize)>| {
        if report.samples.len() < DIFF_SAMPLES {
            let render = |at: Option<(&Side, usize)>| at.map(|(s, i)| row_json(s, i)).transpose();
            let (from, to) = (render(from)?, render(to)?);
            report
                .samples
                .push(json!({ "kind": kind, "from": from, "to": to }));
        }
        anyhow::Ok(())
    };
    match (&a.keys, &b.keys) {
        (Some(ak), Some(bk)) => {
            let mut by_key: HashMap<&[u8], usize> = HashMap::new();
            for i in 0..ak.num_rows() {
                by_key.insert(ak.row(i).data(), i);
            }
            for j in 0..bk.num_rows() {
                match by_key.remove(bk.row(j).data()) {
                    Some(i) if a.rows.row(i).data() == b.rows.row(j).data() => report.same += 1,
                    Some(i) => {
                        report.changed += 1;
                        sample("changed", Some((&a, i)), Some((&b, j)))?;
                    }
                    None => {
                        report.only_to += 1;
                        sample("only_to", None, Some((&b, j)))?;
                    }
                }
            }
            let mut left: Vec<usize> = by_key.into_values().collect();
            left.sort_unstable();
            for i in left {
                report.only_from += 1;
                sample("only_from", Some((&a, i)), None)?;
            }
        }
        _ => {
            let mut counts: HashMap<&[u8], (i64, usize)> = HashMap::new();
            for i in 0..a.rows.num_rows() {
                counts.entry(a.rows.row(i).data()).or_insert((0, i)).0 += 1;
            }
            for j in 0..b.rows.num_rows() {
                let e = counts
                    .entry(b.rows.row(j).data())
                    .or_insert((0, usize::MAX));
                e.0 -= 1;
                if e.0 < 0 {
                    report.only_to += 1;
                    sample("only_to", None, Some((&b, j)))?;
                } else {
                    report.same += 1;
                }
            }
            let mut left: Vec<(i64, usize)> =
                counts.into_values().filter(|(n, _)| *n > 0).collect();
            left.sort_unstable_by_key(|(_, i)| *i);
            for (n, i) in left {
                report.only_from += n as u64;
                sample("only_from", Some((&a, i)), None)?;
            }
        }
    }
    Ok(report)
}

/// Which rows of a batch are closed (`window_end` at or before the cutoff); `None`: all.
fn closed(batch: &RecordBatch, cutoff: Option<i64>) -> Result<Option<Vec<bool>>> {
    let Some(cutoff) = cutoff else {
        return Ok(None);
    };
    let Ok(i) = batch.schema().index_of(CLOSE_COLUMN) else {
        return Ok(None);
    };
    let ms = arrow::compute::cast(
        batch.column(i),
        &DataType::Timestamp(TimeUnit::Millisecond, None),
    )?;
    let ms = arrow::compute::cast(&ms, &DataType::Int64)?;
    let ms = ms
        .as_any()
        .downcast_ref::<arrow::array::Int64Array>()
        .context("window_end is not a time")?;
    Ok(Some(
        (0..ms.len())
            .map(|r| ms.is_valid(r) && ms.value(r) <= cutoff)
            .collect(),
    ))
}

fn count(batches: &[RecordBatch], cutoff: Option<i64>) -> Result<usize> {
    let mut n = 0;
    for b in batches {
        n += match closed(b, cutoff)? {
            Some(keep) => keep.iter().filter(|k| **k).count(),
            None => b.num_rows(),
        };
    }
    Ok(n)
}

/// Row `i` of a side as a JSON object.
fn row_json(side: &Side, i: usize) -> Result<Value> {
    let (b, r) = side.at[i];
    let rows = crate::http::json_rows(&[side.batches[b].slice(r, 1)])?;
    Ok(rows.get(0).cloned().unwrap_or(Value::Null))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_version_counts_up() {
        assert_eq!(next_version_number("v1"), 2);
        assert_eq!(next_version_number("v9"), 10);
        assert_eq!(next_version_number("blue"), 2);
    }
}
