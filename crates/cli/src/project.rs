//! A project (`flowline.toml`): the pipelines `flowline serve` hosts and how each runs.
//!
//! ```toml
//! [project]
//! name = "freshmart"            # default: the folder's name
//! log_dir = ".flowline/log"     # the embedded log of every pipeline (default as shown)
//!
//! [server]
//! listen = "127.0.0.1:8080"     # default; loopback unless said otherwise
//! token = "secret"              # optional bearer token (or $FLOWLINE_TOKEN)
//! alert_webhook = "http://127.0.0.1:9000/alerts"   # alerts are POSTed here (optional)
//!
//! [[pipeline]]
//! file = "fraud.sql"            # name: the file's stem unless `name` is given
//! mode = "stream"               # stream | micro-batch | batch
//! freshness = "2s"              # the declared target; alone, it chooses the mode
//! trigger = "5m"                # micro-batch: how often
//! schedule = "0 4 * * *"        # batch: cron (UTC), or "every 6h"
//! checkpoint_interval = "1s"    # stream
//! emit_interval = "1s"          # update mode
//! alert_lag = 10000             # alert when the logs' lag exceeds this many records
//! alert_freshness = "10s"       # alert when the output is older (default: `freshness`)
//! alert_for = "30s"             # a breach fires once it lasted this long (default: at once)
//!
//! [[generator]]                 # optional: events appended to the log while served
//! kind = "freshmart-orders"
//! topic = "orders"
//! rate = 50                     # per second
//!
//! [[view]]                      # a Lambda view: batch history + the stream's open period
//! name = "revenue_by_day"
//! batch = "daily_pnl"           # a serving table written by a batch pipeline
//! stream = "SELECT ... FROM store_minutes GROUP BY ..."   # or a serving table
//! time_column = "day"
//! period = "1d"                 # boundary: the batch run's newest event time, rounded down
//! ```
//!
//! A pipeline with only a `freshness` gets its mode from the seeds' decision rules
//! ([`choose_mode`]); `flowline explain --freshness` prints the same choice and why.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use serde::Deserialize;

/// Up to this freshness a pipeline streams (seeds: "< 1 second: true streaming only").
pub const STREAM_UP_TO_MS: u64 = 1_000;
/// Up to this freshness it runs micro-batches; longer, scheduled batches.
pub const MICRO_BATCH_UP_TO_MS: u64 = 15 * 60_000;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProjectFile {
    #[serde(default)]
    project: ProjectSection,
    #[serde(default)]
    server: ServerSection,
    #[serde(default)]
    pipeline: Vec<PipelineEntry>,
    #[serde(default)]
    generator: Vec<crate::freshmart::GeneratorSpec>,
    #[serde(default)]
    view: Vec<ViewEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ViewEntry {
    name: String,
    batch: String,
    stream: String,
    time_column: String,
    period: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProjectSection {
    name: Option<String>,
    log_dir: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ServerSection {
    listen: Option<String>,
    token: Option<String>,
    alert_webhook: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PipelineEntry {
    name: Option<String>,
    file: PathBuf,
    mode: Option<String>,
    freshness: Option<String>,
    trigger: Option<String>,
    schedule: Option<String>,
    checkpoint_interval: Option<String>,
    emit_interval: Option<String>,
    alert_lag: Option<u64>,
    alert_freshness: Option<String>,
    alert_for: Option<String>,
}

/// When a scheduled batch runs.
#[derive(Debug, Clone)]
pub enum Schedule {
    /// A cron pattern, evaluated in UTC.
    Cron { pattern: String, cron: croner::Cron },
    /// A fixed interval, from the project's start.
    Every(Duration),
}

impl Schedule {
    pub fn parse(text: &str) -> Result<Schedule> {
        let t = text.trim();
        if let Some(every) = t.strip_prefix("every ") {
            return Ok(Schedule::Every(duration(every).with_context(|| {
                format!("schedule '{text}': 'every' needs a duration such as 6h")
            })?));
        }
        let cron = croner::Cron::from_str(t).map_err(|e| {
            anyhow!("schedule '{text}' is not a cron pattern such as \"0 4 * * *\" or \"every 6h\": {e}")
        })?;
        Ok(Schedule::Cron {
            pattern: t.to_string(),
            cron,
        })
    }

    /// The first scheduled time strictly after `after` (ms since the Unix epoch).
    pub fn next_after(&self, after_ms: i64, origin_ms: i64) -> Option<i64> {
        match self {
            Schedule::Cron { cron, .. } => {
                let t = chrono::DateTime::from_timestamp_millis(after_ms)?;
                cron.find_next_occurrence(&t, false)
                    .ok()
                    .map(|t| t.timestamp_millis())
            }
            Schedule::Every(d) => {
                let step = d.as_millis().max(1) as i64;
                let n = (after_ms - origin_ms).div_euclid(step) + 1;
                Some(origin_ms + n * step)
            }
        }
    }

    /// The last scheduled time at or before `at` (for an interval: `origin` plus whole steps),
    /// if there is one.
    pub fn last_at_or_before(&self, at_ms: i64, origin_ms: i64) -> Option<i64> {
        match self {
            Schedule::Cron { cron, .. } => {
                let t = chrono::DateTime::from_timestamp_millis(at_ms)?;
                cron.find_previous_occurrence(&t, true)
                    .ok()
                    .map(|t| t.timestamp_millis())
            }
            Schedule::Every(d) => {
                let step = d.as_millis().max(1) as i64;
                (at_ms >= origin_ms)
                    .then(|| origin_ms + (at_ms - origin_ms).div_euclid(step) * step)
            }
        }
    }

    /// The scheduled times in `(from, to]`, at most `limit` of them.
    pub fn between(&self, from_ms: i64, to_ms: i64, origin_ms: i64, limit: usize) -> Vec<i64> {
        let mut out = vec![];
        let mut at = from_ms;
        while out.len() < limit {
            match self.next_after(at, origin_ms) {
                Some(t) if t <= to_ms => {
                    out.push(t);
                    at = t;
                }
                _ => break,
            }
        }
        out
    }
}

impl std::fmt::Display for Schedule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Schedule::Cron { pattern, cron } => {
                write!(f, "cron \"{pattern}\" ({})", cron.describe())
            }
            Schedule::Every(d) => write!(f, "every {}", human(*d)),
        }
    }
}

/// How a pipeline runs under `flowline serve`.
#[derive(Debug, Clone)]
pub enum RunPlan {
    /// Continuous, checkpointing (and publishing) every `checkpoint`.
    Stream { checkpoint: Option<Duration> },
    /// A micro-batch every `trigger`: over logs one long job with that trigger; over files a
    /// batch run every `trigger`.
    MicroBatch { trigger: Duration },
    /// Batch runs on a schedule; without one, once at start.
    Batch { schedule: Option<Schedule> },
}

impl RunPlan {
    pub fn mode_name(&self) -> &'static str {
        match self {
            RunPlan::Stream { .. } => "stream",
            RunPlan::MicroBatch { .. } => "micro-batch",
            RunPlan::Batch { .. } => "batch",
        }
    }
}

impl std::fmt::Display for RunPlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RunPlan::Stream {
                checkpoint: Some(c),
            } => write!(f, "stream, publishing every {}", human(*c)),
            RunPlan::Stream { checkpoint: None } => write!(f, "stream"),
            RunPlan::MicroBatch { trigger } => write!(f, "micro-batch every {}", human(*trigger)),
            RunPlan::Batch {
                schedule: Some(schedule),
            } => write!(f, "batch, {schedule}"),
            RunPlan::Batch { schedule: None } => write!(f, "batch, once at start"),
        }
    }
}

/// One pipeline of a project.
#[derive(Debug, Clone)]
pub struct PipelineSpec {
    pub name: String,
    /// The pipeline file (absolute).
    pub file: PathBuf,
    pub plan: RunPlan,
    /// The declared freshness target.
    pub freshness: Option<Duration>,
    /// Why the plan is what it is (declared, or chosen from the freshness).
    pub reason: String,
    pub emit_interval: Option<Duration>,
    /// Alert when the log sources' lag exceeds this many records.
    pub alert_lag: Option<u64>,
    /// Alert when the output is older than this (default: the freshness target).
    pub alert_freshness: Option<Duration>,
    /// A breach fires only once it lasted this long (`None`: at the first check).
    pub alert_for: Option<Duration>,
}

/// A Lambda view: a batch table answers for closed periods, a stream query for the open one.
#[derive(Debug, Clone)]
pub struct ViewSpec {
    pub name: String,
    /// The serving table written by the batch pipeline.
    pub batch: String,
    /// A serving table, or a SELECT over serving tables, with the batch table's columns.
    pub stream: String,
    /// The column both sides are split on (a DATE or TIMESTAMP).
    pub time_column: String,
    /// The periods of the time column: the boundary is the batch run's newest event time
    /// rounded down to a period.
    pub period: Duration,
}

/// A loaded `flowline.toml`.
#[derive(Debug, Clone)]
pub struct Project {
    pub dir: PathBuf,
    pub name: String,
    pub listen: String,
    pub token: Option<String>,
    pub log_dir: PathBuf,
    pub pipelines: Vec<PipelineSpec>,
    /// Event generators appending to topics of the project's log while it is served.
    pub generators: Vec<crate::freshmart::GeneratorSpec>,
    /// Alerts (firing and resolved) are posted here as JSON.
    pub alert_webhook: Option<String>,
    pub views: Vec<ViewSpec>,
}

/// A duration such as `2s`, `5m`, `1h` or `500ms`.
pub fn duration(text: &str) -> Result<Duration> {
    match flowline_log::parse_duration_ms(text.trim()) {
        Ok(ms) if ms > 0 => Ok(Duration::from_millis(ms as u64)),
        _ => bail!("'{text}' is not a duration such as 2s, 5m or 1h"),
    }
}

/// `2s`, `2m30s`: a duration for people.
pub fn human(d: Duration) -> String {
    let ms = d.as_millis() as u64;
    let (h, m, s) = (ms / 3_600_000, ms / 60_000 % 60, ms / 1000 % 60);
    if !ms.is_multiple_of(1000) {
        return format!("{ms}ms");
    }
    let mut out = String::new();
    if h > 0 {
        out += &format!("{h}h");
    }
    if m > 0 {
        out += &format!("{m}m");
    }
    if s > 0 || out.is_empty() {
        out += &format!("{s}s");
    }
    out
}

/// The seeds' decision rules: the mode that meets a freshness target with the least machinery,
/// and why.
///
/// * up to 1 s: stream (only a continuous job answers within a second), publishing every half
///   of the target;
/// * up to 15 min: micro-batches, triggered every half of the target (a result is at most one
///   trigger plus one run old);
/// * longer: scheduled batch runs, every half of the target.
pub fn choose_mode(freshness: Duration) -> (RunPlan, String) {
    let ms = freshness.as_millis() as u64;
    let half = Duration::from_millis((ms / 2).max(100));
    if ms <= STREAM_UP_TO_MS {
        (
            RunPlan::Stream {
                checkpoint: Some(half),
            },
            format!(
                "freshness {} is at most {}: only a continuous stream answers that fast; it \
                 publishes (checkpoints) every {}",
                human(freshness),
                human(Duration::from_millis(STREAM_UP_TO_MS)),
                human(half)
            ),
        )
    } else if ms <= MICRO_BATCH_UP_TO_MS {
        (
            RunPlan::MicroBatch { trigger: half },
            format!(
                "freshness {} is over {} and at most {}: micro-batches meet it without a \
                 continuously running job; triggered every {} (half the target, so a result is \
                 at most one trigger plus one run old)",
                human(freshness),
                human(Duration::from_millis(STREAM_UP_TO_MS)),
                human(Duration::from_millis(MICRO_BATCH_UP_TO_MS)),
                human(half)
            ),
        )
    } else {
        (
            RunPlan::Batch {
                schedule: Some(Schedule::Every(half)),
            },
            format!(
                "freshness {} is over {}: scheduled batch runs are the simplest and cheapest \
                 way to meet it; every {} (half the target)",
                human(freshness),
                human(Duration::from_millis(MICRO_BATCH_UP_TO_MS)),
                human(half)
            ),
        )
    }
}

impl Project {
    /// Loads `dir/flowline.toml` (or the file itself if `path` is a file).
    pub fn load(path: &Path) -> Result<Project> {
        let (dir, file) = if path.is_dir() {
            (path.to_path_buf(), path.join("flowline.toml"))
        } else {
            (
                path.parent().unwrap_or(Path::new(".")).to_path_buf(),
                path.to_path_buf(),
            )
        };
        let dir = std::fs::canonicalize(&dir)
            .with_context(|| format!("cannot open project folder `{}`", dir.display()))?;
        let text = std::fs::read_to_string(&file)
            .with_context(|| format!("cannot read `{}`", file.display()))?;
        let parsed: ProjectFile =
            toml::from_str(&text).map_err(|e| anyhow!("{}: {e}", file.display()))?;
        let name = parsed.project.name.clone().unwrap_or_else(|| {
            dir.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "project".into())
        });
        let log_dir = dir.join(
            parsed
                .project
                .log_dir
                .clone()
                .unwrap_or_else(|| PathBuf::from(".flowline/log")),
        );
        let token = parsed
            .server
            .token
            .clone()
            .or_else(|| std::env::var("FLOWLINE_TOKEN").ok())
            .filter(|t| !t.is_empty());
        let listen = parsed
            .server
            .listen
            .clone()
            .unwrap_or_else(|| "127.0.0.1:8080".into());
        if parsed.pipeline.is_empty() {
            bail!(
                "{}: no [[pipeline]]; add one with at least `file = \"pipeline.sql\"`",
                file.display()
            );
        }
        let mut pipelines: Vec<PipelineSpec> = vec![];
        for (i, entry) in parsed.pipeline.into_iter().enumerate() {
            let at = format!("{} [[pipeline]] #{}", file.display(), i + 1);
            let spec = entry.resolve(&dir).with_context(|| at.clone())?;
            if pipelines.iter().any(|p| p.name == spec.name) {
                bail!(
                    "{at}: a second pipeline named `{}`; give one a different `name`",
                    spec.name
                );
            }
            pipelines.push(spec);
        }
        for g in &parsed.generator {
            g.check()
                .with_context(|| format!("{} [[generator]]", file.display()))?;
        }
        let mut views: Vec<ViewSpec> = vec![];
        for v in parsed.view {
            let at = format!("{} [[view]] {}", file.display(), v.name);
            let name_ok = !v.name.is_empty()
                && v.name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !name_ok {
                bail!("{at}: a view name is letters, digits and '_'");
            }
            if views.iter().any(|w| w.name == v.name) {
                bail!("{at}: a second view named `{}`", v.name);
            }
            views.push(ViewSpec {
                period: duration(&v.period).with_context(|| format!("{at}: period"))?,
                name: v.name,
                batch: v.batch,
                stream: v.stream,
                time_column: v.time_column,
            });
        }
        if let Some(url) = &parsed.server.alert_webhook {
            if !url.starts_with("http://") {
                bail!(
                    "{}: alert_webhook '{url}' must be an http:// URL (put a TLS proxy in front \
                     for https)",
                    file.display()
                );
            }
        }
        Ok(Project {
            dir,
            name,
            listen,
            token,
            log_dir,
            pipelines,
            generators: parsed.generator,
            alert_webhook: parsed.server.alert_webhook,
            views,
        })
    }
}

impl PipelineEntry {
    fn resolve(self, dir: &Path) -> Result<PipelineSpec> {
        let file = dir.join(&self.file);
        if !file.is_file() {
            bail!("pipeline file `{}` does not exist", file.display());
        }
        let name = match self.name {
            Some(n) => n,
            None => file
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default(),
        };
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            bail!("pipeline name '{name}': use letters, digits, '-' and '_'");
        }
        let freshness = self
            .freshness
            .as_deref()
            .map(duration)
            .transpose()
            .context("freshness")?;
        let checkpoint = self
            .checkpoint_interval
            .as_deref()
            .map(duration)
            .transpose()
            .context("checkpoint_interval")?;
        let emit_interval = match self.emit_interval.as_deref() {
            None => None,
            Some(t) => Some(flowline_runtime::parse_emit_interval(t).map_err(|e| anyhow!(e))?),
        };
        let only = |what: &str, given: bool, mode: &str| -> Result<()> {
            if given {
                bail!("`{what}` applies to mode \"{mode}\" only");
            }
            Ok(())
        };
        let (plan, reason) = match self.mode.as_deref().map(str::to_ascii_lowercase).as_deref() {
            None => {
                let Some(f) = freshness else {
                    bail!(
                        "give `mode` (stream, micro-batch or batch) or a `freshness` target \
                         from which Flowline chooses it"
                    );
                };
                only("trigger", self.trigger.is_some(), "micro-batch")?;
                only("schedule", self.schedule.is_some(), "batch")?;
                let (mut plan, reason) = choose_mode(f);
                if let (RunPlan::Stream { checkpoint: c }, Some(given)) = (&mut plan, checkpoint) {
                    *c = Some(given);
                }
                (plan, format!("chosen: {reason}"))
            }
            Some("stream") => {
                only("trigger", self.trigger.is_some(), "micro-batch")?;
                only("schedule", self.schedule.is_some(), "batch")?;
                (RunPlan::Stream { checkpoint }, "declared mode".to_string())
            }
            Some("micro-batch" | "microbatch") => {
                only("schedule", self.schedule.is_some(), "batch")?;
                only("checkpoint_interval", checkpoint.is_some(), "stream")?;
                let trigger = match (&self.trigger, freshness) {
                    (Some(t), _) => duration(t).context("trigger")?,
                    (None, Some(f)) => Duration::from_millis((f.as_millis() as u64 / 2).max(100)),
                    (None, None) => bail!("mode \"micro-batch\" needs a `trigger` such as \"5m\""),
                };
                (RunPlan::MicroBatch { trigger }, "declared mode".to_string())
            }
            Some("batch") => {
                only("trigger", self.trigger.is_some(), "micro-batch")?;
                only("checkpoint_interval", checkpoint.is_some(), "stream")?;
                let schedule = self.schedule.as_deref().map(Schedule::parse).transpose()?;
                (RunPlan::Batch { schedule }, "declared mode".to_string())
            }
            Some(other) => bail!("unknown mode '{other}' (stream, micro-batch or batch)"),
        };
        let alert_freshness = self
            .alert_freshness
            .as_deref()
            .map(duration)
            .transpose()
            .context("alert_freshness")?;
        let alert_for = self
            .alert_for
            .as_deref()
            .map(duration)
            .transpose()
            .context("alert_for")?;
        Ok(PipelineSpec {
            name,
            file,
            plan,
            freshness,
            reason,
            emit_interval,
            alert_lag: self.alert_lag,
            alert_freshness,
            alert_for,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn freshness_chooses_the_mode_by_the_seeds_rules() {
        let plan = |s: &str| choose_mode(duration(s).unwrap()).0.to_string();
        assert_eq!(plan("500ms"), "stream, publishing every 250ms");
        assert_eq!(plan("1s"), "stream, publishing every 500ms");
        assert_eq!(plan("2s"), "micro-batch every 1s");
        assert_eq!(plan("5m"), "micro-batch every 2m30s");
        assert_eq!(plan("15m"), "micro-batch every 7m30s");
        assert_eq!(plan("16m"), "batch, every 8m");
        assert_eq!(plan("24h"), "batch, every 12h");
    }

    #[test]
    fn schedules_find_their_next_times() {
        let cron = Schedule::parse("0 4 * * *").unwrap();
        let day = 86_400_000;
        let t0 = 1_773_878_400_000; // 2026-03-19T00:00:00Z
        assert_eq!(cron.next_after(t0, 0), Some(t0 + 4 * 3_600_000));
        assert_eq!(
            cron.next_after(t0 + 4 * 3_600_000, 0),
            Some(t0 + day + 4 * 3_600_000)
        );
        assert_eq!(cron.between(t0, t0 + 3 * day, 0, 10).len(), 3);
        let every = Schedule::parse("every 6h").unwrap();
        assert_eq!(every.next_after(t0, t0), Some(t0 + 6 * 3_600_000));
        assert_eq!(every.between(t0, t0 + day, t0, 100).len(), 4);
        assert!(Schedule::parse("0 25 * * *").is_err());
        assert!(Schedule::parse("every soon").is_err());
    }
}
