//! `flowline serve PROJECT_DIR`: one process hosting every pipeline of a project, each on its own
//! thread, plus the HTTP API (`http.rs`).
//!
//! * A **stream** pipeline (over logs) is one long job; a **micro-batch** pipeline over logs is
//!   one long job with an interval trigger, over files a batch run every trigger; a **batch**
//!   pipeline runs on its schedule (cron in UTC, or an interval), and once at start when the
//!   last scheduled time passed without a successful run. A run can also be asked for now, and
//!   missed scheduled runs can be backfilled on request: each backfilled run gets its scheduled
//!   time as `${SCHEDULED_TIME}` (`YYYY-MM-DD HH:MM:SS`) and `${SCHEDULED_DATE}` in its text.
//! * A failing run (an error or a panic) is recorded and retried after a backoff (1 s, doubling,
//!   at most 60 s); it never stops the other pipelines. The backoff starts over after a run
//!   that succeeded or lasted a minute.
//! * Every pipeline is opened (parsed, planned, options checked) before anything runs: a bad
//!   pipeline stops `serve` at start with its error.
//! * SIGTERM or SIGINT stops every job (streams take a final checkpoint) and then the server.

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use flowline_connectors::serving;
use flowline_runtime::{
    manifest, LiveStatus, Mode, OpenedPipeline, RunOptions, RunReport, StatusSnapshot, Trigger,
};
use serde::Serialize;

use crate::project::{PipelineSpec, Project, RunPlan};

/// The longest wait between restarts of a failing pipeline.
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// A run that lasted this long resets the backoff.
const HEALTHY_RUN: Duration = Duration::from_secs(60);
/// A scheduled or backfilled batch run that fails this many times in a row is given up: its
/// time is recorded in [`RunnerState::given_up`] and the runner goes on (the next backfilled
/// time, or the next scheduled one), so one bad day cannot block the queue behind it.
pub const MAX_SLOT_ATTEMPTS: u32 = 4;

/// Scheduled times given up, kept in the state (the newest).
const GIVEN_UP_KEPT: usize = 50;

/// At most this many runs per backfill request.
pub const MAX_BACKFILL_RUNS: usize = 1000;

/// The last run of a pipeline.
#[derive(Debug, Clone, Serialize, Default)]
pub struct LastRun {
    pub run_id: Option<String>,
    pub status: String,
    pub started_ms: i64,
    pub ended_ms: i64,
    /// A scheduled or backfilled run: the time it stands for.
    pub scheduled_ms: Option<i64>,
    pub error: Option<String>,
    pub rows_read: u64,
    pub rows_written: u64,
    pub rejects: u64,
}

/// What a pipeline's runner is doing.
#[derive(Debug, Clone, Serialize, Default)]
pub struct RunnerState {
    /// starting, running, waiting, retrying, stopped
    pub status: String,
    pub since_ms: i64,
    /// The error of the last failed run, until a run succeeds.
    pub error: Option<String>,
    pub restarts: u64,
    pub runs: u64,
    pub failures: u64,
    /// When the next scheduled (or retried) run starts.
    pub next_run_ms: Option<i64>,
    pub last_run: Option<LastRun>,
    /// When a run last succeeded (ms since the Unix epoch).
    pub last_success_ms: Option<i64>,
    /// When an earlier job of this runner last published (kept across restarts of a stream).
    pub last_publish_ms: Option<i64>,
    /// Backfill runs waiting.
    pub backfill_queued: usize,
    /// Backfilled runs that succeeded.
    pub backfill_done: u64,
    /// Backfilled runs given up after [`MAX_SLOT_ATTEMPTS`] failures.
    pub backfill_failed: u64,
    /// Scheduled or backfilled times given up after [`MAX_SLOT_ATTEMPTS`] failures (ms since
    /// the epoch, oldest first; the newest 50). Backfill them again once the cause is fixed.
    pub given_up: Vec<i64>,
}

/// A pipeline hosted by `serve`.
pub struct Hosted {
    pub spec: PipelineSpec,
    pub live: Arc<LiveStatus>,
    pub state: Mutex<RunnerState>,
    pub stop: Arc<AtomicBool>,
    /// Stops the running job only: the runner starts it again (on the active version). A
    /// replay sets it after its swap.
    pub restart: Arc<AtomicBool>,
    /// The serving-table version the pipeline writes, when not the one its SQL declares (after
    /// a replay swapped another in).
    pub version: Mutex<Option<String>>,
    /// The version its SQL declares (default `v1`).
    pub declared_version: String,
    /// The serving tables it writes.
    pub serving: Vec<(String, serving::ServingTable)>,
    /// Alerts firing now and the latest alert events.
    pub alerts: Mutex<AlertBook>,
    /// When the pipeline was opened (freshness counts from here before a first publish).
    opened_ms: i64,
    /// Held while a replay request is checked (see `replay::start`).
    pub replay_starting: AtomicBool,
    /// The last replay of the pipeline (running or ended).
    pub replay: Mutex<Option<crate::replay::ReplayStatus>>,
    /// Set to run a batch (or a micro-batch over files) now.
    pub wake: AtomicBool,
    /// Scheduled times to run, oldest first.
    pub backfill: Mutex<VecDeque<i64>>,
    pub manifest_path: PathBuf,
    /// Records a replay's swap of several serving tables until it is complete
    /// ([`serving::swap_together`]); an unfinished one is completed when the project opens.
    pub swap_intent: PathBuf,
    rejects_path: PathBuf,
    /// The rejects file is the default one in the state folder (so a version has its own).
    rejects_in_state_dir: bool,
    pub reads_logs: bool,
    pub sinks: Vec<String>,
    /// The ledgers of corrected rejects replayed into its sources.
    pub replay_ledgers: Vec<PathBuf>,
    log_dir: PathBuf,
    /// One sample a second of the numbers charts show, newest last.
    pub history: Mutex<VecDeque<Sample>>,
}

/// The numbers of a pipeline at one moment, for charts and throughput.
#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    pub at_ms: i64,
    pub rows_read: u64,
    pub rows_written: u64,
    pub rejects: u64,
    /// Rows read per second since the previous sample.
    pub rows_per_s: f64,
    /// `None` while some source's lag is unknown (as the pipeline's `lag_records`).
    pub lag_records: Option<u64>,
    pub freshness_ms: Option<i64>,
}

/// An alert: a threshold of a pipeline breached (firing) or no longer breached (resolved).
#[derive(Debug, Clone, Serialize)]
pub struct Alert {
    pub pipeline: String,
    /// `lag` (records behind the logs) or `freshness` (ms since output was published).
    pub kind: &'static str,
    /// `firing` or `resolved`.
    pub status: &'static str,
    /// The lag or age when last checked; `None`: it could not be read (which breaches).
    pub value: Option<i64>,
    pub threshold: i64,
    pub message: String,
    /// When it started firing.
    pub since_ms: i64,
    pub resolved_ms: Option<i64>,
}

/// Alert events kept per pipeline.
const ALERT_EVENTS: usize = 50;

/// A pipeline's alerts.
#[derive(Debug, Clone, Default, Serialize)]
pub struct AlertBook {
    pub firing: Vec<Alert>,
    /// The latest events (fired and resolved), newest last.
    pub events: VecDeque<Alert>,
    /// Breaches not firing yet (`alert_for`): kind → when the breach began.
    pub pending: BTreeMap<&'static str, i64>,
}

/// One threshold checked now.
struct Check {
    kind: &'static str,
    /// `None`: unknown, a breach.
    value: Option<i64>,
    threshold: i64,
    message: String,
}

impl AlertBook {
    /// Records one check at `now` (ms): a breach fires once it has lasted `hold_ms` (at once
    /// when 0), a firing alert takes the new value, and a check within its threshold resolves
    /// it (or forgets a breach that never fired). Returns the event, if any (kept in `events`).
    fn observe(&mut self, pipeline: &str, check: Check, now: i64, hold_ms: i64) -> Option<Alert> {
        let Check {
            kind,
            value,
            threshold,
            message,
        } = check;
        let at = self.firing.iter().position(|a| a.kind == kind);
        let event = match (value.is_none_or(|v| v > threshold), at) {
            (true, None) => {
                let since = *self.pending.entry(kind).or_insert(now);
                if now - since < hold_ms {
                    return None;
                }
                self.pending.remove(kind);
                let alert = Alert {
                    pipeline: pipeline.to_string(),
                    kind,
                    status: "firing",
                    value,
                    threshold,
                    message,
                    since_ms: since,
                    resolved_ms: None,
                };
                self.firing.push(alert.clone());
                alert
            }
            (true, Some(i)) => {
                let a = &mut self.firing[i];
                a.value = value;
                a.message = message;
                return None;
            }
            (false, Some(i)) => {
                let mut alert = self.firing.remove(i);
                alert.status = "resolved";
                alert.value = value;
                alert.message = message;
                alert.resolved_ms = Some(now);
                alert
            }
            (false, None) => {
                self.pending.remove(kind);
                return None;
            }
        };
        self.events.push_back(event.clone());
        while self.events.len() > ALERT_EVENTS {
            self.events.pop_front();
        }
        Some(event)
    }
}

/// Samples kept per pipeline (ten minutes at one a second).
pub const HISTORY: usize = 600;

/// A serving table and the pipeline writing it.
#[derive(Debug, Clone)]
pub struct TableEntry {
    pub pipeline: String,
    pub table: serving::ServingTable,
}

/// Everything `serve` hosts.
pub struct Server {
    pub project: Project,
    pub pipelines: Vec<Arc<Hosted>>,
    pub tables: BTreeMap<String, TableEntry>,
    pub started_ms: i64,
    /// The producers of the topics this process appends to.
    pub producers: Producers,
    /// Alert events for the webhook, posted in order by one thread (see [`post_alert`]).
    webhook: Option<std::sync::mpsc::Sender<String>>,
}

/// One producer per topic for everything in this process that appends to the log (generators,
/// replays of corrected rejects): a partition has one writer, held by a file lock, so two
/// producers of one topic in one process would refuse each other.
#[derive(Default)]
pub struct Producers {
    open: Mutex<BTreeMap<PathBuf, Arc<Mutex<flowline_log::Producer>>>>,
}

impl Producers {
    /// The producer of `topic`, opened on first use.
    pub fn get(&self, topic: &flowline_log::Topic) -> Result<Arc<Mutex<flowline_log::Producer>>> {
        let mut open = self
            .open
            .lock()
            .map_err(|_| anyhow::anyhow!("producers lock poisoned"))?;
        if let Some(p) = open.get(topic.dir()) {
            return Ok(p.clone());
        }
        let p =
            Arc::new(Mutex::new(topic.producer().with_context(|| {
                format!("cannot write topic {}", topic.name())
            })?));
        open.insert(topic.dir().to_path_buf(), p.clone());
        Ok(p)
    }

    /// Appends keyless records to a partition of `topic` through its producer; returns the
    /// first one's offset.
    pub fn append_to(
        &self,
        topic: &flowline_log::Topic,
        partition: u32,
        values: &[Vec<u8>],
    ) -> flowline_core::Result<u64> {
        let producer = self
            .get(topic)
            .map_err(|e| flowline_core::Error::Execution(format!("{e:#}")))?;
        let mut producer = producer
            .lock()
            .map_err(|_| flowline_core::Error::Internal("producer lock poisoned".into()))?;
        producer
            .append_all_to(partition, values, flowline_log::now_ms())?
            .ok_or_else(|| flowline_core::Error::Internal("nothing to append".into()))
    }
}

pub use flowline_log::now_ms;

fn set<T>(m: &Mutex<T>, f: impl FnOnce(&mut T)) {
    if let Ok(mut g) = m.lock() {
        f(&mut g);
    }
}

impl Hosted {
    pub fn state(&self) -> RunnerState {
        self.state.lock().map(|s| s.clone()).unwrap_or_default()
    }

    pub fn live(&self) -> StatusSnapshot {
        self.live.snapshot()
    }

    /// Records a sample now.
    pub fn sample(&self) {
        let live = self.live();
        let at = now_ms();
        let freshness_ms = self.freshness_ms();
        set(&self.history, |h| {
            let rows_read = live.total_read();
            let rows_per_s = match h.back() {
                Some(prev) if at > prev.at_ms && rows_read >= prev.rows_read => {
                    (rows_read - prev.rows_read) as f64 * 1000.0 / (at - prev.at_ms) as f64
                }
                _ => 0.0,
            };
            h.push_back(Sample {
                at_ms: at,
                rows_read,
                rows_written: live.rows_written.values().sum(),
                rejects: live.total_rejects(),
                rows_per_s,
                lag_records: live.known_lag(),
                freshness_ms,
            });
            while h.len() > HISTORY {
                h.pop_front();
            }
        });
    }

    /// Rows read per second over the last samples (up to ten seconds).
    pub fn throughput(&self) -> f64 {
        let h = self.history.lock().map(|h| h.clone()).unwrap_or_default();
        let recent: Vec<&Sample> = h.iter().rev().take(10).collect();
        match (recent.first(), recent.last()) {
            (Some(new), Some(old)) if new.at_ms > old.at_ms && new.rows_read >= old.rows_read => {
                (new.rows_read - old.rows_read) as f64 * 1000.0 / (new.at_ms - old.at_ms) as f64
            }
            _ => 0.0,
        }
    }

    /// The version written now: the swapped-in one, else the declared one.
    pub fn active_version(&self) -> String {
        self.version
            .lock()
            .ok()
            .and_then(|v| v.clone())
            .unwrap_or_else(|| self.declared_version.clone())
    }

    /// Where the rejects of the active version go.
    pub fn rejects_path(&self) -> PathBuf {
        match self.version.lock().ok().and_then(|v| v.clone()) {
            Some(v) if self.rejects_in_state_dir && v != self.declared_version => self
                .manifest_path
                .parent()
                .map(|d| d.join("versions").join(&v).join("rejects.jsonl"))
                .unwrap_or_else(|| self.rejects_path.clone()),
            _ => self.rejects_path.clone(),
        }
    }

    pub(crate) fn set_status(&self, status: &str) {
        set(&self.state, |s| {
            if s.status != status {
                s.status = status.to_string();
                s.since_ms = now_ms();
            }
        });
    }

    /// How old the published output is: now minus the last publish (a checkpoint, or a run's
    /// commit). `None` before the first.
    pub fn freshness_ms(&self) -> Option<i64> {
        let live = self.live();
        let state = self.state();
        let last = live
            .last_publish_ms
            .or(state.last_publish_ms)
            .or(state.last_success_ms)?;
        Some((now_ms() - last).max(0))
    }

    /// Compares lag and freshness with the pipeline's thresholds; returns the alerts that
    /// started firing or resolved since the last check.
    pub fn check_alerts(&self) -> Vec<Alert> {
        let now = now_ms();
        let mut checks: Vec<(&'static str, Option<i64>, i64, String)> = vec![];
        if let Some(max) = self.spec.alert_lag {
            let (lag, message) = lag_check(&self.live(), max);
            checks.push(("lag", lag, max as i64, message));
        }
        if let Some(max) = self.spec.alert_freshness.or(self.spec.freshness) {
            let max = max.as_millis() as i64;
            let (age, what) = match self.freshness_ms() {
                Some(f) => (f, "output last published"),
                None => (
                    (now - self.opened_ms).max(0),
                    "nothing published since start",
                ),
            };
            checks.push((
                "freshness",
                Some(age),
                max,
                format!(
                    "{what} {} ago (threshold {})",
                    crate::project::human(Duration::from_millis(age as u64)),
                    crate::project::human(Duration::from_millis(max as u64))
                ),
            ));
        }
        let Ok(mut book) = self.alerts.lock() else {
            return vec![];
        };
        let hold_ms = self.spec.alert_for.map_or(0, |d| d.as_millis() as i64);
        checks
            .into_iter()
            .filter_map(|(kind, value, threshold, message)| {
                let message = format!("pipeline {}: {message}", self.spec.name);
                let check = Check {
                    kind,
                    value,
                    threshold,
                    message,
                };
                book.observe(&self.spec.name, check, now, hold_ms)
            })
            .collect()
    }

    /// Queues the scheduled times in `(from, to]` for runs, oldest first; returns them.
    pub fn queue_backfill(&self, from_ms: i64, to_ms: i64) -> Result<Vec<i64>> {
        let times = self.backfill_times(from_ms, to_ms)?;
        set(&self.backfill, |q| q.extend(times.iter().copied()));
        let queued = self.backfill.lock().map(|q| q.len()).unwrap_or(0);
        set(&self.state, |s| s.backfill_queued = queued);
        Ok(times)
    }

    /// The scheduled times in `(from, to]`, oldest first.
    pub fn backfill_times(&self, from_ms: i64, to_ms: i64) -> Result<Vec<i64>> {
        let schedule = match &self.spec.plan {
            RunPlan::Batch {
                schedule: Some(schedule),
            } => schedule,
            _ => bail!(
                "pipeline {} is not a scheduled batch pipeline ({}); only scheduled runs can be \
                 backfilled",
                self.spec.name,
                self.spec.plan
            ),
        };
        if to_ms < from_ms {
            bail!("backfill: `to` is before `from`");
        }
        let times = schedule.between(from_ms, to_ms, self.opened_ms, MAX_BACKFILL_RUNS + 1);
        if times.len() > MAX_BACKFILL_RUNS {
            bail!("backfill: more than {MAX_BACKFILL_RUNS} scheduled runs in that range; ask for a shorter one");
        }
        Ok(times)
    }

    pub(crate) fn options(&self, mode: Mode, trigger: Option<Trigger>) -> RunOptions {
        let (checkpoint_interval, trigger) = match (&self.spec.plan, trigger) {
            (RunPlan::Stream { checkpoint }, _) => (*checkpoint, Some(Trigger::Continuous)),
            (_, t) => (None, t),
        };
        RunOptions {
            mode: Some(mode),
            trigger,
            checkpoint_interval,
            log_dir: Some(self.log_dir.clone()),
            stop: Some(self.restart.clone()),
            live: Some(self.live.clone()),
            emit_interval: self.spec.emit_interval,
            serving_version: self.version.lock().ok().and_then(|v| v.clone()),
            ..Default::default()
        }
    }

    /// One run, on this thread, with its own async runtime; a panic is an error.
    fn run_once(&self, options: RunOptions, scheduled_ms: Option<i64>) -> Result<RunReport> {
        // A restart asked for while no job ran must not stop this one; a stop still does.
        self.restart.store(false, Ordering::SeqCst);
        if self.stopped() {
            self.restart.store(true, Ordering::SeqCst);
        }
        let published = self.live().last_publish_ms;
        set(&self.state, |s| {
            s.last_publish_ms = s.last_publish_ms.max(published);
        });
        self.live.reset();
        let started = now_ms();
        set(&self.state, |s| {
            s.runs += 1;
            s.next_run_ms = None;
        });
        self.set_status("running");
        let result = run_blocking(&self.spec.file, options);
        let live = self.live();
        let ended = now_ms();
        set(&self.state, |s| {
            s.last_run = Some(LastRun {
                run_id: result.as_ref().ok().map(|r| r.run_id.clone()),
                status: if result.is_ok() { "ok" } else { "failed" }.into(),
                started_ms: started,
                ended_ms: ended,
                scheduled_ms,
                error: result.as_ref().err().map(|e| format!("{e:#}")),
                rows_read: live.total_read(),
                rows_written: live.rows_written.values().sum(),
                rejects: live.total_rejects(),
            });
            match &result {
                Ok(_) => {
                    s.last_success_ms = Some(ended);
                    s.error = None;
                }
                Err(e) => {
                    s.failures += 1;
                    s.error = Some(format!("{e:#}"));
                }
            }
        });
        if let Err(e) = &result {
            eprintln!("pipeline {}: run failed: {e:#}", self.spec.name);
        }
        result
    }

    /// A batch run for a scheduled time (`None`: unscheduled), which its text sees as
    /// `${SCHEDULED_TIME}` (`YYYY-MM-DD HH:MM:SS`) and `${SCHEDULED_DATE}`.
    pub fn run_slot(&self, slot: Option<i64>) -> Result<RunReport> {
        let mut options = self.options(Mode::Batch, None);
        if let Some(t) = slot.and_then(chrono::DateTime::from_timestamp_millis) {
            options.params.insert(
                "SCHEDULED_TIME".into(),
                t.format("%Y-%m-%d %H:%M:%S").to_string(),
            );
            options
                .params
                .insert("SCHEDULED_DATE".into(), t.format("%Y-%m-%d").to_string());
        }
        self.run_once(options, slot)
    }

    /// Whether the pipeline runs as one long job over logs (stream, or micro-batches over
    /// logs), rather than as batch runs (`serve` refuses a stream over files at start).
    pub fn continuous(&self) -> bool {
        self.reads_logs && !matches!(self.spec.plan, RunPlan::Batch { .. })
    }

    /// The oldest queued backfill time.
    fn pop_backfill(&self) -> Option<i64> {
        let mut queue = self.backfill.lock().ok()?;
        queue.pop_front()
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    /// Sleeps until `until` (ms since the epoch), a wake-up, a queued backfill (when
    /// `wake_on_backfill`: not during a retry's backoff, which would retry a failing backfilled
    /// run at once, again and again), or stop. Returns true when woken early by a request.
    fn wait_until(&self, until_ms: i64, wake_on_backfill: bool) -> bool {
        loop {
            if self.stopped() {
                return false;
            }
            if self.wake.swap(false, Ordering::SeqCst) {
                return true;
            }
            if wake_on_backfill && self.backfill.lock().map(|q| !q.is_empty()).unwrap_or(false) {
                return true;
            }
            if now_ms() >= until_ms {
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The runner: runs the pipeline as its plan says until stopped.
    fn supervise(self: Arc<Self>) {
        // Interval schedules count from when the pipeline was opened (backfills use the same).
        let origin = self.opened_ms;
        let mut backoff = Duration::ZERO;
        // A scheduled batch that missed its last scheduled time runs once at start.
        let mut due_at_start = match &self.spec.plan {
            RunPlan::Batch { schedule: None } => Some(None),
            RunPlan::Batch {
                schedule: Some(schedule),
            } => {
                let last_ok = self.state().last_success_ms;
                let slot = schedule.last_at_or_before(origin, origin);
                match (slot, last_ok) {
                    (Some(slot), Some(ok)) if ok >= slot => None,
                    (slot, _) => Some(slot),
                }
            }
            _ => None,
        };
        let mut next_micro = origin;
        // The batch slot being run: whether it came from the backfill queue, and its failures.
        let mut from_backfill = false;
        let mut slot_failures = 0u32;
        // The last batch slot was given up: the runner waits as `failed` until a run succeeds.
        let mut gave_up = false;
        while !self.stopped() {
            if !backoff.is_zero() {
                let until = now_ms() + backoff.as_millis() as i64;
                set(&self.state, |s| {
                    s.restarts += 1;
                    s.next_run_ms = Some(until);
                });
                self.set_status("retrying");
                self.wait_until(until, false);
                if self.stopped() {
                    break;
                }
            }
            let started = Instant::now();
            let result = match &self.spec.plan {
                RunPlan::Stream { .. } => {
                    self.run_once(self.options(Mode::Stream, Some(Trigger::Continuous)), None)
                }
                RunPlan::MicroBatch { trigger } if self.reads_logs => self.run_once(
                    self.options(
                        Mode::Stream,
                        Some(Trigger::Interval(trigger.as_millis() as u64)),
                    ),
                    None,
                ),
                RunPlan::MicroBatch { trigger } => {
                    // Over files: a batch run every trigger.
                    if backoff.is_zero() {
                        set(&self.state, |s| s.next_run_ms = Some(next_micro));
                        self.set_status("waiting");
                        self.wait_until(next_micro, true);
                        if self.stopped() {
                            break;
                        }
                    }
                    next_micro = now_ms() + trigger.as_millis() as i64;
                    self.run_once(self.options(Mode::Batch, None), None)
                }
                RunPlan::Batch { schedule } => {
                    let retry = !backoff.is_zero();
                    if !retry {
                        from_backfill = false;
                        slot_failures = 0;
                    }
                    let slot = if let Some(slot) = due_at_start.take() {
                        slot
                    } else if retry {
                        // Retry the run that failed (a backfilled one keeps its time).
                        self.state().last_run.and_then(|r| r.scheduled_ms)
                    } else if let Some(t) = self.pop_backfill() {
                        from_backfill = true;
                        Some(t)
                    } else {
                        let next = schedule
                            .as_ref()
                            .and_then(|s| s.next_after(now_ms(), origin));
                        set(&self.state, |s| s.next_run_ms = next);
                        self.set_status(if gave_up { "failed" } else { "waiting" });
                        let early = self.wait_until(next.unwrap_or(i64::MAX), true);
                        if self.stopped() {
                            break;
                        }
                        if early {
                            // A request: a backfilled time, or (none queued) a run now.
                            let queued = self.pop_backfill();
                            from_backfill = queued.is_some();
                            queued
                        } else {
                            next
                        }
                    };
                    let queued = self.backfill.lock().map(|q| q.len()).unwrap_or(0);
                    set(&self.state, |s| s.backfill_queued = queued);
                    self.run_slot(slot)
                }
            };
            if self.restart.swap(false, Ordering::SeqCst) && !self.stopped() {
                // Stopped to start again on another version (a replay swapped it in).
                backoff = Duration::ZERO;
                continue;
            }
            let batch = matches!(self.spec.plan, RunPlan::Batch { .. });
            match result {
                Ok(_) => {
                    if batch && from_backfill {
                        set(&self.state, |s| s.backfill_done += 1);
                    }
                    gave_up = false;
                    backoff = Duration::ZERO;
                    if self.continuous() {
                        // A long job returns only when stopped.
                        if !self.stopped() {
                            // It ended on its own (all its sources bounded): restart later.
                            backoff = Duration::from_secs(1);
                        }
                    }
                }
                Err(_) if batch && slot_failures + 1 >= MAX_SLOT_ATTEMPTS => {
                    let slot = self.state().last_run.and_then(|r| r.scheduled_ms);
                    eprintln!(
                        "pipeline {}: giving up the run for {} after {MAX_SLOT_ATTEMPTS} failures",
                        self.spec.name,
                        slot.and_then(chrono::DateTime::from_timestamp_millis)
                            .map_or_else(|| "now".to_string(), |t| t.to_rfc3339())
                    );
                    set(&self.state, |s| {
                        if from_backfill {
                            s.backfill_failed += 1;
                        }
                        if let Some(t) = slot {
                            s.given_up.push(t);
                            let over = s.given_up.len().saturating_sub(GIVEN_UP_KEPT);
                            s.given_up.drain(..over);
                        }
                    });
                    backoff = Duration::ZERO;
                    gave_up = true;
                }
                Err(_) => {
                    slot_failures += 1;
                    backoff = if started.elapsed() >= HEALTHY_RUN || backoff.is_zero() {
                        Duration::from_secs(1)
                    } else {
                        (backoff * 2).min(MAX_BACKOFF)
                    };
                }
            }
        }
        set(&self.state, |s| s.next_run_ms = None);
        self.set_status("stopped");
    }
}

/// Opens and runs a pipeline on this thread, with an async runtime of its own; a panic is an
/// error. Every run `serve` starts (scheduled, stream, replay, corrections) goes through here.
pub fn run_blocking(file: &std::path::Path, options: RunOptions) -> Result<RunReport> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(async move {
            let pipeline = OpenedPipeline::open(file, options).await?;
            Ok::<_, anyhow::Error>(pipeline.run().await?)
        })
    }))
    .unwrap_or_else(|panic| {
        let why = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "a panic".into());
        Err(anyhow::anyhow!("the run panicked: {why}"))
    })
}

/// When the pipeline last ran successfully, from its manifest (ms since the Unix epoch).
fn last_successful_run_ms(manifest_path: &std::path::Path) -> Option<i64> {
    let records = manifest::read(manifest_path).ok()?;
    records
        .iter()
        .rev()
        .find(|r| r["status"] == "ok")
        .and_then(|r| r["ended_at"].as_str())
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.timestamp_millis())
}

/// Attempts to post an alert event to the webhook.
const WEBHOOK_ATTEMPTS: u32 = 3;

/// Posts an alert event to the webhook: up to [`WEBHOOK_ATTEMPTS`] attempts, 1 s then 2 s
/// apart, while the answer is not 2xx (a 4xx other than 408 and 429 is not retried); each
/// failure is logged.
fn post_alert(url: &str, body: &str) {
    for attempt in 1..=WEBHOOK_ATTEMPTS {
        let retry =
            match crate::client::request("POST", url, None, Some(body), Duration::from_secs(10)) {
                Ok(r) if (200..300).contains(&r.status) => return,
                Ok(r) => {
                    eprintln!(
                        "alert webhook {url} answered {} (attempt {attempt})",
                        r.status
                    );
                    !(400..500).contains(&r.status) || r.status == 408 || r.status == 429
                }
                Err(e) => {
                    eprintln!("alert webhook {url}: {e:#} (attempt {attempt})");
                    true
                }
            };
        if !retry || attempt == WEBHOOK_ATTEMPTS {
            return;
        }
        std::thread::sleep(Duration::from_secs(u64::from(attempt)));
    }
}

impl Server {
    /// Opens every pipeline of the project (all errors before anything runs) and collects the
    /// serving tables.
    pub async fn open(project: Project) -> Result<Server> {
        let mut pipelines = vec![];
        let mut tables: BTreeMap<String, TableEntry> = BTreeMap::new();
        for spec in &project.pipelines {
            let options = RunOptions {
                mode: Some(match spec.plan {
                    RunPlan::Stream { .. } => Mode::Stream,
                    _ => Mode::Batch,
                }),
                log_dir: Some(project.log_dir.clone()),
                ..Default::default()
            };
            let opened = OpenedPipeline::open(&spec.file, options)
                .await
                .with_context(|| format!("pipeline {} (`{}`)", spec.name, spec.file.display()))?;
            let reads_logs = opened.reads_logs();
            if matches!(spec.plan, RunPlan::Stream { .. }) && !reads_logs {
                bail!(
                    "pipeline {}: mode stream needs a log source ('connector' = 'log'); a \
                     pipeline over files only runs as batch or micro-batch",
                    spec.name
                );
            }
            let mut sinks = vec![];
            let mut own_tables = vec![];
            let mut declared_version = None;
            for sink in opened.sinks() {
                sinks.push(sink.to_string());
                let Some(def) = opened.def.table(sink) else {
                    continue;
                };
                if def.connector() != Some("table") {
                    continue;
                }
                let dir = serving::table_dir(def, &opened.base_dir)?;
                declared_version.get_or_insert(serving::parse_config(def)?.version);
                own_tables.push((def.name.clone(), serving::ServingTable::at(&dir)));
                if let Some(other) = tables.get(&def.name) {
                    if other.table.dir() != dir {
                        bail!(
                            "serving table `{}` is written by pipelines {} and {} into different \
                             folders; give one of them another name",
                            def.name,
                            other.pipeline,
                            spec.name
                        );
                    }
                    bail!(
                        "serving table `{}` is written by pipelines {} and {}: one pipeline per \
                         table",
                        def.name,
                        other.pipeline,
                        spec.name
                    );
                }
                tables.insert(
                    def.name.clone(),
                    TableEntry {
                        pipeline: spec.name.clone(),
                        table: serving::ServingTable::at(dir),
                    },
                );
            }
            let declared_version =
                declared_version.unwrap_or_else(|| serving::DEFAULT_VERSION.to_string());
            // A replay's swap that the process stopped in the middle of is completed first.
            let swap_intent = opened.state_dir.join("swapping");
            let own: Vec<&serving::ServingTable> = own_tables.iter().map(|(_, t)| t).collect();
            if let Some(v) = serving::finish_swap(&own, &swap_intent)? {
                eprintln!(
                    "pipeline {}: completed the swap of its serving tables to {v} that was interrupted",
                    spec.name
                );
            }
            // After a replay's swap, the pipeline goes on writing the version readers see.
            let version = match own_tables.first() {
                Some((_, t)) => t.current()?.filter(|v| *v != declared_version),
                None => None,
            };
            let default_rejects = opened.state_dir.join("rejects.jsonl");
            pipelines.push(Arc::new(Hosted {
                spec: spec.clone(),
                live: Arc::new(LiveStatus::new()),
                state: Mutex::new(RunnerState {
                    status: "starting".into(),
                    since_ms: now_ms(),
                    // Freshness counts from the last successful run before this start.
                    last_success_ms: last_successful_run_ms(&opened.manifest_path),
                    ..Default::default()
                }),
                stop: Arc::new(AtomicBool::new(false)),
                restart: Arc::new(AtomicBool::new(false)),
                version: Mutex::new(version),
                declared_version,
                serving: own_tables,
                replay: Mutex::new(None),
                replay_starting: AtomicBool::new(false),
                alerts: Mutex::new(AlertBook::default()),
                opened_ms: now_ms(),
                wake: AtomicBool::new(false),
                backfill: Mutex::new(VecDeque::new()),
                manifest_path: opened.manifest_path.clone(),
                swap_intent,
                rejects_in_state_dir: opened.rejects_path == default_rejects,
                rejects_path: opened.rejects_path.clone(),
                reads_logs,
                sinks,
                replay_ledgers: flowline_runtime::rejects::ledger_paths(&opened),
                log_dir: project.log_dir.clone(),
                history: Mutex::new(VecDeque::new()),
            }));
        }
        let mut server = Server {
            project,
            pipelines,
            tables,
            started_ms: now_ms(),
            producers: Producers::default(),
            webhook: None,
        };
        if let Some(url) = server.project.alert_webhook.clone() {
            let (events, queue) = std::sync::mpsc::channel::<String>();
            std::thread::Builder::new()
                .name("alert-webhook".into())
                .spawn(move || {
                    for body in queue {
                        post_alert(&url, &body);
                    }
                })
                .context("cannot start the alert webhook thread")?;
            server.webhook = Some(events);
        }
        for view in &server.project.views {
            crate::views::check(view, &server)?;
        }
        Ok(server)
    }

    pub fn pipeline(&self, name: &str) -> Option<&Arc<Hosted>> {
        self.pipelines.iter().find(|p| p.spec.name == name)
    }

    /// Starts every pipeline's runner thread.
    pub fn start(&self) -> Result<Vec<std::thread::JoinHandle<()>>> {
        self.pipelines
            .iter()
            .map(|p| {
                let p = p.clone();
                std::thread::Builder::new()
                    .name(format!("pipeline-{}", p.spec.name))
                    .spawn(move || p.supervise())
                    .context("cannot start a pipeline thread")
            })
            .collect()
    }

    /// Checks every pipeline's alert thresholds: new and resolved alerts are logged and posted
    /// to the webhook, in order, by the webhook thread (see [`post_alert`]).
    pub fn check_alerts(&self) {
        for p in &self.pipelines {
            for alert in p.check_alerts() {
                eprintln!("alert {}: {}", alert.status, alert.message);
                if let Some(webhook) = &self.webhook {
                    let body = serde_json::json!({
                        "project": self.project.name,
                        "alert": alert,
                    })
                    .to_string();
                    // In order: a resolution never overtakes the firing it resolves.
                    let _ = webhook.send(body);
                }
            }
        }
    }

    /// Asks every pipeline to stop (streams take a final checkpoint).
    pub fn stop(&self) {
        for p in &self.pipelines {
            p.stop.store(true, Ordering::SeqCst);
            p.restart.store(true, Ordering::SeqCst);
            if let Ok(Some(r)) = p.replay.lock().map(|r| r.clone()) {
                r.stop.store(true, Ordering::SeqCst);
            }
        }
    }

    /// A text description of the project: each pipeline, its mode and why.
    pub fn describe(&self) -> String {
        let mut s = format!(
            "project {} ({})\n",
            self.project.name,
            self.project.dir.display()
        );
        for p in &self.pipelines {
            s += &format!(
                "  {:<12} {} — {}{}\n",
                p.spec.name,
                p.spec.plan,
                p.spec.reason,
                p.spec
                    .freshness
                    .map(|f| format!(" (freshness target {})", crate::project::human(f)))
                    .unwrap_or_default()
            );
        }
        for (name, t) in &self.tables {
            s += &format!(
                "  serving table {name} ← {} ({})\n",
                t.pipeline,
                t.table.dir().display()
            );
        }
        s
    }
}

/// The lag an alert compares with `max`, and what to say. A lag that cannot be read breaches:
/// nobody can tell the pipeline is keeping up.
fn lag_check(live: &StatusSnapshot, max: u64) -> (Option<i64>, String) {
    match live.known_lag() {
        Some(lag) => (
            Some(lag as i64),
            format!("{lag} records behind its logs (threshold {max})"),
        ),
        None => (
            None,
            format!(
                "lag of {} cannot be read (threshold {max})",
                live.lag_unknown.join(", ")
            ),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unreadable_lag_breaches_the_lag_alert() {
        let mut live = StatusSnapshot::default();
        live.lag_records.insert("orders".into(), 40);
        live.lag_records.insert("payments".into(), 2);
        assert_eq!(
            lag_check(&live, 100),
            (
                Some(42),
                "42 records behind its logs (threshold 100)".into()
            )
        );
        // The other sources being caught up proves nothing about the one that cannot be read.
        live.lag_unknown.push("clicks".into());
        assert_eq!(live.known_lag(), None);
        let (lag, message) = lag_check(&live, 100);
        assert_eq!(lag, None);
        assert_eq!(message, "lag of clicks cannot be read (threshold 100)");
        // An unknown value breaches: the alert fires, with no value.
        let mut book = AlertBook::default();
        let check = Check {
            kind: "lag",
            value: lag,
            threshold: 100,
            message,
        };
        let fired = book.observe("p", check, 0, 0).expect("fires");
        assert_eq!((fired.status, fired.value), ("firing", None));
    }

    fn check(value: i64) -> Check {
        Check {
            kind: "lag",
            value: Some(value),
            threshold: 100,
            message: format!("{value} records behind"),
        }
    }

    #[test]
    fn a_breach_fires_once_it_lasted_the_hold_and_resolves_once() {
        let mut book = AlertBook::default();
        // Without a hold: at the first check over the threshold.
        assert!(book.observe("p", check(50), 0, 0).is_none());
        let fired = book.observe("p", check(150), 1_000, 0).unwrap();
        assert_eq!((fired.status, fired.since_ms), ("firing", 1_000));
        assert!(book.observe("p", check(170), 2_000, 0).is_none(), "once");
        assert_eq!(
            book.firing[0].value,
            Some(170),
            "the firing alert follows the value"
        );
        let resolved = book.observe("p", check(10), 3_000, 0).unwrap();
        assert_eq!(
            (resolved.status, resolved.resolved_ms),
            ("resolved", Some(3_000))
        );
        assert!(book.firing.is_empty());

        // With a 30 s hold: a 20 s breach never fires; a 30 s one fires, dated from its start.
        let hold = 30_000;
        assert!(book.observe("p", check(150), 10_000, hold).is_none());
        assert!(book.observe("p", check(150), 30_000, hold).is_none());
        assert!(
            book.observe("p", check(90), 31_000, hold).is_none(),
            "forgotten"
        );
        assert!(book.pending.is_empty());
        for now in [40_000, 50_000, 69_999] {
            assert!(book.observe("p", check(150), now, hold).is_none(), "{now}");
        }
        let fired = book.observe("p", check(150), 70_000, hold).unwrap();
        assert_eq!((fired.status, fired.since_ms), ("firing", 40_000));
        assert!(book.pending.is_empty());
        assert_eq!(book.events.len(), 3, "fired, resolved, fired");
    }

    /// A loopback webhook answering with `statuses` in turn; returns its URL and the number of
    /// requests it received.
    fn webhook(statuses: &'static [u16]) -> (String, Arc<std::sync::atomic::AtomicUsize>) {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let hits = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = hits.clone();
        std::thread::spawn(move || {
            for (stream, status) in listener.incoming().zip(statuses) {
                let mut stream = stream.unwrap();
                let mut buf = [0u8; 4096];
                let _ = stream.read(&mut buf);
                counted.fetch_add(1, Ordering::SeqCst);
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                );
            }
        });
        (url, hits)
    }

    #[test]
    fn the_webhook_is_retried_until_it_accepts_but_not_after_a_client_error() {
        let (url, hits) = webhook(&[503, 500, 200, 200]);
        post_alert(&url, "{}");
        assert_eq!(
            hits.load(Ordering::SeqCst),
            3,
            "two failures, then accepted"
        );
        let (url, hits) = webhook(&[400, 200]);
        post_alert(&url, "{}");
        assert_eq!(
            hits.load(Ordering::SeqCst),
            1,
            "a bad request is not retried"
        );
    }
}
