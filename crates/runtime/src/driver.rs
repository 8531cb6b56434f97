//! The driver: one loop for every mode. The mode only decides batch sizes, reader parallelism
//! and whether watermarks advance during the input (stream) or only at its end (batch).

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::datasource::empty::EmptyTable;
use flowline_connectors::sink::{SinkContext, SinkMode};
use flowline_connectors::{
    open_sink, validate_sink_options, BoundedSource, Decoded, FileSource, LogSource, Needed,
    NexmarkSource, Sink, SinkCommit,
};
use flowline_core::plan::{AsOf, InsertPlan, JoinKind, Node, OutputMode, OverFrame, WindowKind};
use flowline_core::{Error, Message, Operator, Output, Result, TableDef, Watermark};
use flowline_sql::lower::PlanningBinder;
use flowline_sql::{bind, lower_insert, needs_dataflow, BoundInsert, Mode, PipelineDef};
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::operators::{self, window::millis, WindowAggregate};
use crate::reader::SourceReader;
use crate::rejects::RejectBin;
use crate::status::LiveStatus;
use crate::stream::{JobReport, JobSettings, Trigger};
use crate::{fallback, manifest};

/// Settings a pipeline file may `SET`.
const SETTINGS: &[&str] = &[
    "execution.mode",
    "execution.batch-size",
    "rejects.path",
    "state.dir",
    "pipeline.name",
    "log.dir",
    "execution.trigger",
    "execution.checkpointing.interval",
    "execution.max-records-per-batch",
    "execution.output-mode",
    "execution.emit-interval",
    "table.exec.emit.allow-lateness",
    "table.exec.state.ttl",
    "parallelism.default",
];

/// Command-line overrides; each falls back to the file's `SET`, then to a default.
#[derive(Default, Clone)]
pub struct RunOptions {
    pub mode: Option<Mode>,
    pub batch_size: Option<usize>,
    pub rejects_path: Option<PathBuf>,
    pub state_dir: Option<PathBuf>,
    /// Where `print` sinks write; `None` is the process's stdout.
    pub stdout: Option<Arc<Mutex<Vec<u8>>>>,
    /// Jobs over log sources: when to read and commit (stream mode: continuous).
    pub trigger: Option<Trigger>,
    /// Stream mode: time between checkpoints (default 2 s).
    pub checkpoint_interval: Option<Duration>,
    /// The default folder of the embedded log (else `SET 'log.dir'`, `$FLOWLINE_LOG_DIR`,
    /// `.flowline/log`).
    pub log_dir: Option<PathBuf>,
    /// Set to stop a continuous or interval job: it takes a final checkpoint and returns.
    pub stop: Option<Arc<AtomicBool>>,
    /// Stream mode: the output mode asked for (default: append for windows, update for a
    /// GROUP BY without one).
    pub output_mode: Option<OutputMode>,
    /// Update mode: how often changed results are emitted (default 1 s; 0: after every batch).
    pub emit_interval: Option<Duration>,
    /// Where the run copies its live numbers (rows, rejects, watermarks, lag, checkpoints).
    pub live: Option<Arc<LiveStatus>>,
    /// `${NAME}` in the pipeline text is replaced by the value of `NAME` (a scheduled run's
    /// `SCHEDULED_TIME`, say); other `${...}` are left as written.
    pub params: BTreeMap<String, String>,
    /// Write this version of every serving table (`connector = 'table'`) instead of the one the
    /// pipeline declares: a replay builds a shadow version beside the one being served. A version
    /// other than the declared one keeps its checkpoints, staging and rejects in its own state
    /// folder (`<state dir>/versions/<version>`); the manifest stays shared and records it.
    pub serving_version: Option<String>,
    /// Corrections: a batch run that reads only the source rows whose event time (WATERMARK
    /// column) is in the range, and replaces only the rows of that range in its serving tables.
    pub time_range: Option<flowline_connectors::TimeRange>,
}

/// What a run did, as also recorded in the manifest.
#[derive(Debug, Clone)]
pub struct RunReport {
    pub run_id: String,
    pub mode: Mode,
    pub rows_read: BTreeMap<String, u64>,
    pub rows_written: BTreeMap<String, u64>,
    pub rejects: BTreeMap<String, u64>,
    pub rejects_path: PathBuf,
    pub manifest_path: PathBuf,
    pub record: serde_json::Value,
    /// Peak state per stateful operator: (INSERT number, sink, position, operator) → bytes.
    pub operator_state: BTreeMap<(usize, String, usize, &'static str), usize>,
}

impl RunReport {
    /// The end-of-run summary printed by the CLI.
    pub fn summary(&self) -> String {
        let mut s = format!("run {} ({} mode)\n", self.run_id, self.mode);
        for (t, n) in &self.rows_read {
            s += &format!("  read     {n:>10} rows from {t}\n");
        }
        for (t, n) in &self.rows_written {
            s += &format!("  wrote    {n:>10} rows to {t}\n");
        }
        if self.rejects.is_empty() {
            s += "  rejected          0 rows\n";
        }
        for (reason, n) in &self.rejects {
            // Late rows are counted per INSERT that missed them (and per missed HOP window).
            s += &format!("  rejected {n:>10} rows: {reason}\n");
        }
        if !self.rejects.is_empty() {
            s += &format!("  rejects are in {}\n", self.rejects_path.display());
        }
        for ((_, sink, _, operator), bytes) in &self.operator_state {
            s += &format!(
                "  state    {:>10} peak in the {operator} of INSERT INTO {sink}\n",
                human_bytes(*bytes)
            );
        }
        s
    }
}

enum Planned {
    Dataflow(InsertPlan),
    /// Batch only: the query runs on DataFusion, for the reason given.
    DataFusion {
        bound: BoundInsert,
        reason: String,
    },
}

/// A parsed, validated and planned pipeline: everything that can fail before data moves.
pub struct OpenedPipeline {
    pub path: PathBuf,
    pub def: PipelineDef,
    pub mode: Mode,
    pub batch_size: usize,
    pub base_dir: PathBuf,
    pub rejects_path: PathBuf,
    pub manifest_path: PathBuf,
    /// The pipeline's name (`SET 'pipeline.name'`, else the file's stem).
    pub name: String,
    pub state_dir: PathBuf,
    /// The default folder of the embedded log.
    pub log_dir: PathBuf,
    hash: String,
    /// Bounded sources: files and generators.
    sources: BTreeMap<String, Arc<dyn BoundedSource>>,
    pub(crate) log_sources: BTreeMap<String, Arc<LogSource>>,
    planned: Vec<Planned>,
    /// Sink name → schema of the rows it receives.
    pub(crate) sink_schemas: BTreeMap<String, SchemaRef>,
    stdout: Option<Arc<Mutex<Vec<u8>>>>,
    /// Set for jobs over log sources.
    pub(crate) job: Option<JobSettings>,
    /// Update mode: how often changed results are emitted.
    pub emit_interval: Duration,
    /// Sink name → the upsert key of the rows it receives, by column name (update mode only).
    pub(crate) sink_keys: BTreeMap<String, Vec<String>>,
    /// Where the run copies its live numbers.
    pub(crate) live: Arc<LiveStatus>,
    /// The `${NAME}` values substituted into the text (recorded in the manifest).
    params: BTreeMap<String, String>,
    /// The serving-table version written instead of the declared one (a replay).
    serving_version: Option<String>,
    /// Corrections of a time range (see [`RunOptions::time_range`]).
    time_range: Option<flowline_connectors::TimeRange>,
    /// Corrections: the event-time range each source is cut to. A fact source is cut to the
    /// range; a temporal join's versioned table keeps everything before its end (the version
    /// valid at the range's start is older); a lookup dimension is read whole (absent here).
    time_cuts: BTreeMap<String, flowline_connectors::TimeRange>,
    /// Batch mode over files: threads that decode and aggregate (`parallelism.default`).
    batch_workers: usize,
}

/// Parses, plans and runs a pipeline file.
pub async fn run_pipeline(path: &Path, options: RunOptions) -> Result<RunReport> {
    OpenedPipeline::open(path, options).await?.run().await
}

impl OpenedPipeline {
    pub async fn open(path: &Path, options: RunOptions) -> Result<OpenedPipeline> {
        let mut text =
            std::fs::read_to_string(path).map_err(|e| Error::io("read pipeline", path, e))?;
        for (name, value) in &options.params {
            text = text.replace(&format!("${{{name}}}"), value);
        }
        let mut def = PipelineDef::parse(&text)?;
        let base_dir = path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        let setting_error = |key: &str, message: String| Error::Option {
            table: format!("SET '{key}'"),
            message,
            line: def.setting_lines.get(key).copied(),
        };
        for key in def.settings.keys() {
            if !SETTINGS.contains(&key.as_str()) {
                return Err(setting_error(
                    key,
                    format!("unknown setting '{key}' (known: {})", SETTINGS.join(", ")),
                ));
            }
        }
        let mode = match options.mode {
            Some(m) => m,
            None => match def.settings.get("execution.mode") {
                Some(m) => m.parse().map_err(|e| setting_error("execution.mode", e))?,
                None => Mode::Batch,
            },
        };
        let batch_size = match options.batch_size {
            Some(n) => n,
            None => match def.settings.get("execution.batch-size") {
                Some(n) => n.parse().map_err(|_| {
                    setting_error("execution.batch-size", format!("'{n}' is not a number"))
                })?,
                None => match mode {
                    // Large enough to amortize per-batch work, small enough that batch buffers are
                    // reused by the allocator instead of being mapped and unmapped every time.
                    Mode::Batch => 32_768,
                    Mode::Stream => 1_024,
                },
            },
        };
        if batch_size == 0 {
            return Err(setting_error(
                "execution.batch-size",
                "must be at least 1".into(),
            ));
        }
        let stem = path
            .file_stem()
            .map(|s| s.to_string_lossy().to_string())
            .unwrap_or_else(|| "pipeline".into());
        let name = def.settings.get("pipeline.name").cloned().unwrap_or(stem);
        let resolve = |p: &str| {
            let p = PathBuf::from(p);
            if p.is_absolute() {
                p
            } else {
                base_dir.join(p)
            }
        };
        let pipeline_state_dir = options
            .state_dir
            .clone()
            .or_else(|| def.settings.get("state.dir").map(|s| resolve(s)))
            .unwrap_or_else(|| base_dir.join(".flowline").join(&name));
        let manifest_path = pipeline_state_dir.join("manifest.jsonl");
        // A replay writes another version of the serving tables, with state of its own.
        let mut state_dir = pipeline_state_dir;
        if let Some(version) = &options.serving_version {
            flowline_connectors::serving::check_version_name(version)
                .map_err(|m| Error::Plan(format!("serving version: {m}")))?;
            let mut declared = None;
            for table in def.tables.iter_mut() {
                if table.connector() == Some("table") {
                    declared.get_or_insert_with(|| {
                        table
                            .option("version")
                            .unwrap_or(flowline_connectors::serving::DEFAULT_VERSION)
                            .to_string()
                    });
                    table.options.insert("version".into(), version.clone());
                }
            }
            match declared {
                None => {
                    return Err(Error::Plan(format!(
                        "serving version '{version}': the pipeline writes no serving table \
                         ('connector' = 'table'), so there is no version to build; a replay \
                         into a new version needs one"
                    )))
                }
                Some(d) if d != *version => {
                    state_dir = state_dir.join("versions").join(version);
                }
                Some(_) => {}
            }
        }
        let rejects_path = options
            .rejects_path
            .clone()
            .or_else(|| def.settings.get("rejects.path").map(|s| resolve(s)))
            .unwrap_or_else(|| state_dir.join("rejects.jsonl"));

        // Tables: sinks are INSERT targets, every other table is a source.
        let mut sink_names = BTreeSet::new();
        for stmt in &def.statements {
            if let flowline_sql::Statement::Insert { sink, line, .. } = stmt {
                let Some(table) = def.table(sink) else {
                    return Err(Error::Plan(format!(
                        "line {line}: INSERT INTO unknown table `{sink}` (declared tables: {})",
                        table_list(&def)
                    )));
                };
                validate_sink_options(table).map_err(|e| at_line(e, table.line))?;
                sink_names.insert(table.name.clone());
            }
        }
        if let Some(range) = &options.time_range {
            if mode != Mode::Batch {
                return Err(Error::Plan(
                    "corrections of a time range run in batch mode: run them with `--mode batch` (or \
                     SET 'execution.mode' = 'batch'); `flowline replay --from --to` does"
                        .into(),
                ));
            }
            if range.from_ms >= range.to_ms {
                return Err(Error::Plan(
                    "corrections: the time range is empty (`from` is not before `to`)".into(),
                ));
            }
            for sink in &sink_names {
                if let Some(t) = def.table(sink) {
                    flowline_connectors::sink::check_corrections_sink(t)?;
                }
            }
        }
        let log_dir = options
            .log_dir
            .clone()
            .or_else(|| def.settings.get("log.dir").map(|s| resolve(s)))
            .or_else(|| std::env::var_os("FLOWLINE_LOG_DIR").map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from(".flowline").join("log"));
        let mut sources = BTreeMap::new();
        let mut log_sources = BTreeMap::new();
        for table in &def.tables {
            // A print or blackhole table is only ever a sink; one no INSERT writes is unused.
            if sink_names.contains(&table.name)
                || matches!(table.connector(), Some("print" | "blackhole"))
            {
                continue;
            }
            if table.connector() == Some("log") {
                log_sources.insert(
                    table.name.clone(),
                    Arc::new(
                        LogSource::open(table, &base_dir, &log_dir)
                            .map_err(|e| at_line(e, table.line))?,
                    ),
                );
                continue;
            }
            let source: Arc<dyn BoundedSource> = if table.connector() == Some("nexmark") {
                Arc::new(NexmarkSource::open(table).map_err(|e| at_line(e, table.line))?)
            } else {
                Arc::new(FileSource::open(table, &base_dir).map_err(|e| at_line(e, table.line))?)
            };
            sources.insert(table.name.clone(), source);
        }
        let trigger = match options.trigger {
            Some(t) => Some(t),
            None => match def.settings.get("execution.trigger") {
                Some(t) => Some(
                    t.parse()
                        .map_err(|e| setting_error("execution.trigger", e))?,
                ),
                None => None,
            },
        };
        if trigger.is_some() && log_sources.is_empty() {
            return Err(Error::Plan(
                "a trigger (micro-batch mode) needs log sources (`'connector' = 'log'`); file \
                 pipelines run as one batch or one bounded stream"
                    .into(),
            ));
        }
        let checkpoint_interval = match options.checkpoint_interval {
            Some(d) => d,
            None => match def.settings.get("execution.checkpointing.interval") {
                Some(t) => match flowline_log::parse_duration_ms(t) {
                    Ok(ms) if ms > 0 => Duration::from_millis(ms as u64),
                    _ => {
                        return Err(setting_error(
                            "execution.checkpointing.interval",
                            format!("'{t}' is not a duration such as 2s or 500ms"),
                        ))
                    }
                },
                None => Duration::from_secs(2),
            },
        };
        // Batch mode over files: how many threads decode and aggregate (default: every core).
        let batch_workers = match def.settings.get("parallelism.default") {
            Some(n) => n.parse::<usize>().ok().filter(|&n| n > 0).ok_or_else(|| {
                setting_error(
                    "parallelism.default",
                    format!("'{n}' is not a positive number of threads"),
                )
            })?,
            None => std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2),
        };
        let max_records_per_batch = match def.settings.get("execution.max-records-per-batch") {
            Some(n) => n.parse::<u64>().ok().filter(|&n| n > 0).ok_or_else(|| {
                setting_error(
                    "execution.max-records-per-batch",
                    format!("'{n}' is not a positive number"),
                )
            })?,
            None => 100_000,
        };
        let output_mode = match options.output_mode {
            Some(m) => Some(m),
            None => match def.settings.get("execution.output-mode") {
                Some(m) => Some(
                    m.parse()
                        .map_err(|e| setting_error("execution.output-mode", e))?,
                ),
                None => None,
            },
        };
        let emit_interval = match options.emit_interval {
            Some(d) => d,
            None => match def.settings.get("execution.emit-interval") {
                Some(t) => parse_emit_interval(t)
                    .map_err(|e| setting_error("execution.emit-interval", e))?,
                None => Duration::from_secs(1),
            },
        };
        let allowed_lateness = match def.settings.get("table.exec.emit.allow-lateness") {
            Some(t) if t.trim() == "0" => 0,
            Some(t) => flowline_log::parse_duration_ms(t)
                .ok()
                .filter(|&ms| ms >= 0)
                .ok_or_else(|| {
                    setting_error(
                        "table.exec.emit.allow-lateness",
                        format!("'{t}' is not a duration such as 1h or 10min"),
                    )
                })?,
            None => 0,
        };
        // Flink's default, 0, keeps unbounded state forever.
        let state_ttl = match def.settings.get("table.exec.state.ttl") {
            Some(t) if t.trim() == "0" => None,
            Some(t) => Some(
                flowline_log::parse_duration_ms(t)
                    .ok()
                    .filter(|&ms| ms > 0)
                    .ok_or_else(|| {
                        setting_error(
                            "table.exec.state.ttl",
                            format!(
                                "'{t}' is not a duration such as 1h or 30min (0: keep forever)"
                            ),
                        )
                    })?,
            ),
            None => None,
        };
        let job = (!log_sources.is_empty()).then(|| JobSettings {
            trigger: trigger.unwrap_or(Trigger::Continuous),
            checkpoint_interval,
            max_records_per_batch,
            stop: options.stop.clone().unwrap_or_default(),
        });

        // Plan every INSERT.
        let ctx = crate::functions::session();
        for (name, source) in &sources {
            ctx.register_table(name.as_str(), Arc::new(EmptyTable::new(source.schema())))?;
        }
        for (name, source) in &log_sources {
            ctx.register_table(name.as_str(), Arc::new(EmptyTable::new(source.schema())))?;
        }
        let binder = PlanningBinder::default();
        let bound = bind(&def, &ctx, &binder).await?;
        let state = ctx.state();
        let mut planned = vec![];
        let mut sink_schemas: BTreeMap<String, SchemaRef> = BTreeMap::new();
        let mut sink_keys: BTreeMap<String, Option<Vec<String>>> = BTreeMap::new();
        for insert in bound {
            let table = def
                .table(&insert.sink)
                .ok_or_else(|| Error::Internal("sink vanished".into()))?;
            if sources.contains_key(&table.name) || log_sources.contains_key(&table.name) {
                return Err(Error::Plan(format!(
                    "line {}: `{}` is a source",
                    insert.line, table.name
                )));
            }
            let query_schema = Arc::new(insert.plan.schema().as_arrow().clone());
            let schema = sink_schema(table, &query_schema, insert.line)?;
            if let Some(prev) = sink_schemas.get(&table.name) {
                let types = |s: &SchemaRef| {
                    s.fields()
                        .iter()
                        .map(|f| f.data_type().clone())
                        .collect::<Vec<_>>()
                };
                if table.columns.is_empty()
                    && prev.fields().len() == schema.fields().len()
                    && types(prev) != types(&schema)
                {
                    return Err(Error::Plan(format!(
                        "line {}: INSERT INTO {} writes columns of types ({}), an earlier INSERT wrote ({}); declare the sink's columns or cast",
                        insert.line,
                        table.name,
                        types(&schema).iter().map(|t| t.to_string()).collect::<Vec<_>>().join(", "),
                        types(prev).iter().map(|t| t.to_string()).collect::<Vec<_>>().join(", "),
                    )));
                }
                if prev.fields().len() != schema.fields().len() {
                    return Err(Error::Plan(format!(
                        "line {}: INSERT INTO {} writes {} columns, an earlier INSERT wrote {}",
                        insert.line,
                        table.name,
                        schema.fields().len(),
                        prev.fields().len()
                    )));
                }
            } else {
                sink_schemas.insert(table.name.clone(), schema.clone());
            }
            let lowering = flowline_sql::LowerOptions {
                mode,
                output: output_mode,
                allowed_lateness,
                state_ttl,
            };
            match lower_insert(&def, &insert, &binder, &state, lowering) {
                Ok(plan) => {
                    check_upsert_key(table, &plan, &schema, insert.line, &mut sink_keys)?;
                    if plan.deletes
                        && !takes_change_type(table)
                        && table.connector() != Some("blackhole")
                    {
                        return Err(Error::Plan(format!(
                            "line {}: INSERT INTO {} can delete rows it wrote (a group that stops matching a HAVING, or whose rows were all taken back by the aggregate below it): declare a last column `{CHANGE_TYPE_COLUMN} STRING` in table {}; the sink writes 'upsert' or 'delete' into it for each row",
                            insert.line, table.name, table.name
                        )));
                    }
                    planned.push(Planned::Dataflow(plan))
                }
                Err(Error::Unsupported {
                    construct, hint, ..
                }) if mode == Mode::Batch
                    && log_sources.is_empty()
                    && !needs_dataflow(&def, &insert.plan) =>
                {
                    // Optimize and plan it physically now, so DataFusion's own plan errors
                    // also come before any data moves.
                    state.create_physical_plan(&insert.plan).await.map_err(
                        |e| match Error::from(e) {
                            Error::Plan(m) => Error::Plan(format!("line {}: {m}", insert.line)),
                            Error::Execution(m) => {
                                Error::Plan(format!("line {}: {m}", insert.line))
                            }
                            other => other,
                        },
                    )?;
                    // DataFusion computes the exact answer: a state TTL does not apply there.
                    let ttl = if state_ttl.is_some() {
                        " ('table.exec.state.ttl' does not apply to it: the answer is exact)"
                    } else {
                        ""
                    };
                    planned.push(Planned::DataFusion {
                        bound: insert,
                        reason: format!("{construct}: {hint}{ttl}"),
                    })
                }
                Err(e) => return Err(e),
            }
        }
        if planned.is_empty() {
            return Err(Error::Plan(
                "the pipeline has no INSERT INTO statement: nothing to run".into(),
            ));
        }
        // Over logs, a files table can only be a lookup join's dimension (loaded whole,
        // reloaded when it changes); as a stream of its own it would end, or never start.
        if let Some(log) = log_sources.keys().next() {
            for file in sources.keys() {
                let streamed = planned.iter().any(|p| match p {
                    Planned::Dataflow(plan) => {
                        plan.source == *file
                            || plan.right.as_ref().is_some_and(|r| {
                                r.source == *file
                                    && lookup_dimension(&plan.nodes, Some(&r.source)).is_none()
                            })
                    }
                    Planned::DataFusion { .. } => false,
                });
                if streamed {
                    return Err(Error::Unsupported {
                        construct: format!("reading the bounded table `{file}` (files or a generator) as a stream beside the log table `{log}`"),
                        mode: mode.to_string(),
                        hint: "over logs, a files table can be the dimension of a lookup join (`JOIN t FOR SYSTEM_TIME AS OF x.proc_time`, x.proc_time AS PROCTIME()); to stream its rows, load the files into a topic with `flowline log produce`".into(),
                    });
                }
            }
        }
        let mut time_cuts = BTreeMap::new();
        if let Some(range) = &options.time_range {
            for table in &def.tables {
                if !sink_names.contains(&table.name) {
                    time_cuts.insert(table.name.clone(), range.clone());
                }
            }
            for p in &planned {
                let Planned::Dataflow(plan) = p else { continue };
                let Some(right) = &plan.right else { continue };
                let as_of = plan.nodes.iter().find_map(|n| match n {
                    Node::Join(j) => j.as_of.clone(),
                    _ => None,
                });
                match as_of {
                    Some(AsOf::ProcessingTime) => {
                        time_cuts.remove(&right.source);
                    }
                    Some(_) => {
                        if let Some(cut) = time_cuts.get_mut(&right.source) {
                            cut.from_ms = i64::MIN;
                        }
                    }
                    None => {}
                }
            }
        }
        for p in &planned {
            if let Planned::Dataflow(plan) = p {
                if let Some(dim) =
                    lookup_dimension(&plan.nodes, plan.right.as_ref().map(|r| r.source.as_str()))
                {
                    let table = def
                        .table(dim)
                        .ok_or_else(|| Error::Internal("dimension vanished".into()))?;
                    dimension_check_interval(table).map_err(|e| at_line(e, table.line))?;
                }
            }
        }
        let hash = hex::encode(Sha256::digest(text.as_bytes()));
        Ok(OpenedPipeline {
            path: path.to_path_buf(),
            def,
            mode,
            batch_size,
            base_dir,
            rejects_path,
            manifest_path,
            name,
            state_dir,
            log_dir,
            hash,
            sources,
            log_sources,
            planned,
            sink_schemas,
            stdout: options.stdout,
            job,
            emit_interval,
            sink_keys: sink_keys
                .into_iter()
                .filter_map(|(sink, key)| Some((sink, key?)))
                .collect(),
            live: options.live.clone().unwrap_or_default(),
            params: options.params.clone(),
            serving_version: options.serving_version.clone(),
            time_range: options.time_range.clone(),
            time_cuts,
            batch_workers,
        })
    }

    /// A readable description of how each INSERT runs.
    pub fn explain(&self) -> String {
        let mut s = format!(
            "pipeline {} ({} mode, batch size {})\n",
            self.path.display(),
            self.mode,
            self.batch_size
        );
        for p in &self.planned {
            match p {
                Planned::Dataflow(plan) => {
                    s += &format!(
                        "INSERT INTO {}: Flowline dataflow\n  source {}\n",
                        plan.sink, plan.source
                    );
                    for node in &plan.nodes {
                        if let (Node::Join(_), Some(right)) = (node, &plan.right) {
                            s += &format!("  right input: source {}\n", right.source);
                            let shared = plan.shared_prefix();
                            if shared > 0 {
                                s += &match shared {
                                    1 => "    → the first operator above (run once for both inputs)\n".to_string(),
                                    n => format!("    → the first {n} operators above (run once for both inputs)\n"),
                                };
                            }
                            for n in &right.nodes[shared..] {
                                s += &format!("    → {}\n", describe(n));
                            }
                        }
                        s += &format!("  → {}\n", describe(node));
                    }
                    match plan.output {
                        OutputMode::Append => s += &format!("  → sink {}\n", plan.sink),
                        OutputMode::Update => {
                            s += &format!(
                                "  → sink {} (update mode: rows keyed by ({}) for an upsert)\n",
                                plan.sink,
                                plan.key
                                    .iter()
                                    .map(|&i| plan.schema.field(i).name().as_str())
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            )
                        }
                    }
                }
                Planned::DataFusion { bound, reason } => {
                    s += &format!(
                        "INSERT INTO {}: runs on DataFusion in batch mode ({reason})\n{}\n",
                        bound.sink,
                        indent(&bound.plan.display_indent().to_string())
                    );
                }
            }
        }
        s
    }

    /// Whether the pipeline reads logs (a long-running job) rather than only bounded sources.
    pub fn reads_logs(&self) -> bool {
        self.job.is_some()
    }

    /// The log source reading table `name`, if it is one.
    pub fn log_source(&self, name: &str) -> Option<&Arc<LogSource>> {
        self.log_sources.get(name)
    }

    /// The tables the pipeline writes.
    pub fn sinks(&self) -> impl Iterator<Item = &str> {
        self.sink_schemas.keys().map(String::as_str)
    }

    pub async fn run(self) -> Result<RunReport> {
        let run_id = new_run_id();
        let started = chrono::Utc::now();
        let clock = Instant::now();
        let mut bin = RejectBin::new(self.rejects_path.clone(), &run_id);
        let mut state = RunState::default();
        let mut job = JobReport::default();
        let result = match &self.job {
            Some(settings) => {
                self.run_log_job(&run_id, settings, &mut bin, &mut state, &mut job)
                    .await
            }
            None => self.execute(&run_id, &mut bin, &mut state).await,
        };
        let flushed = bin.flush();
        self.live.update(|l| {
            l.rows_read.clone_from(&state.rows_read);
            l.rows_written.clone_from(&state.rows_written);
            l.operator_rows.clone_from(&state.current_rows);
            l.rejects.clone_from(bin.counts());
            if result.is_ok() && !state.commits.is_empty() {
                l.last_publish_ms = Some(flowline_log::now_ms());
            }
        });
        let ended = chrono::Utc::now();
        let inputs: Vec<_> = self
            .sources
            .iter()
            .filter(|(name, _)| state.read_sources.contains(*name))
            .map(|(name, s)| {
                let mut input = s.describe();
                input["table"] = json!(name);
                input
            })
            .collect();
        let inputs: Vec<_> = inputs
            .into_iter()
            .chain(self.log_sources.iter().map(|(name, s)| {
                json!({
                    "table": name,
                    "topic": s.topic().name(),
                    // Next offset to read per partition when the run ended.
                    "positions": state.positions.get(name),
                })
            }))
            .collect();
        let checkpoints = self.job.as_ref().map(|settings| {
            json!({
                "trigger": settings.trigger.to_string(),
                "restored_from_epoch": job.restored_from,
                "skipped_corrupt": job.skipped_corrupt.iter().map(|(e, why)| json!({"epoch": e, "why": why})).collect::<Vec<_>>(),
                "skipped_incomplete": job.skipped_incomplete,
                "restore_ms": job.restore_ms,
                "epochs": job.epochs,
                "first_epoch": job.first_epoch,
                "last_epoch": job.last_epoch,
                "checkpoint_ms_max": job.checkpoint_ms_max,
                "directory": self.state_dir.join("checkpoints").display().to_string(),
            })
        });
        let outputs: Vec<_> = state
            .commits
            .iter()
            .map(|(name, c)| {
                json!({
                    "table": name,
                    "output_mode": if self.sink_keys.contains_key(name) { "update" } else { "append" },
                    "key": self.sink_keys.get(name),
                    "rows": c.rows,
                    "files": c.files.iter().map(|f| json!({"path": f.path, "rows": f.rows, "bytes": f.bytes})).collect::<Vec<_>>(),
                })
            })
            .collect();
        let error = match (&result, &flushed) {
            (Err(e), _) | (Ok(()), Err(e)) => Some(e.to_string()),
            _ => None,
        };
        let record = json!({
            "run_id": run_id,
            "pipeline": self.path.display().to_string(),
            "pipeline_hash": self.hash,
            "mode": self.mode.to_string(),
            "batch_size": self.batch_size,
            "started_at": started.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "ended_at": ended.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "duration_ms": clock.elapsed().as_millis() as u64,
            "status": if error.is_none() { "ok" } else { "failed" },
            "error": error,
            "inputs": inputs,
            "rows_read": state.rows_read,
            "outputs": outputs,
            "rows_written": state.rows_written,
            "rejects": bin.counts(),
            "rejects_path": self.rejects_path.display().to_string(),
            "watermarks": state.watermarks,
            "max_event_time": state.max_event_time,
            "peak_state_bytes": state.peak_state,
            "operator_state": state.operator_state_json(),
            "operator_rows": state.current_rows,
            "emit_interval_ms": (!self.sink_keys.is_empty()).then_some(self.emit_interval.as_millis() as u64),
            "checkpoints": checkpoints,
            "params": (!self.params.is_empty()).then_some(&self.params),
            "serving_version": self.serving_version,
            "time_range": self.time_range.as_ref().map(|r| json!({
                "from_ms": r.from_ms,
                "to_ms": r.to_ms,
                "column": r.column,
            })),
        });
        manifest::append(&self.manifest_path, &record)?;
        result?;
        flushed?;
        let operator_state = state.operator_peaks();
        Ok(RunReport {
            run_id,
            mode: self.mode,
            rows_read: state.rows_read,
            rows_written: state.rows_written,
            rejects: bin.counts().clone(),
            rejects_path: self.rejects_path.clone(),
            manifest_path: self.manifest_path.clone(),
            record,
            operator_state,
        })
    }

    async fn execute(&self, run_id: &str, bin: &mut RejectBin, state: &mut RunState) -> Result<()> {
        let mut sinks = self.open_sinks(state, |_| {
            (
                SinkMode::Run {
                    run_id: run_id.to_string(),
                    job: self.name.clone(),
                },
                0,
            )
        })?;
        let mut chains = self.build_chains()?;
        let mut datafusion_sources = BTreeSet::new();
        if self
            .planned
            .iter()
            .any(|p| matches!(p, Planned::DataFusion { .. }))
        {
            // DataFusion may read any source; keep all of them.
            datafusion_sources.extend(self.sources.keys().cloned());
        }
        let mut buffered: BTreeMap<String, Vec<RecordBatch>> = BTreeMap::new();
        let workers = match self.mode {
            Mode::Batch => self.batch_workers,
            Mode::Stream => 1,
        };
        // Lookup joins' dimension tables first: they are loaded before the rows that join them.
        let mut order: Vec<(&String, &Arc<dyn BoundedSource>)> = self.sources.iter().collect();
        order.sort_by_key(|(name, _)| {
            !chains
                .iter()
                .any(|c| c.lookup_source() == Some(name.as_str()))
        });
        for (name, source) in order {
            let feeds_chain = chains.iter().any(|c| c.reads(name));
            let buffer = datafusion_sources.contains(name);
            if !feeds_chain && !buffer {
                continue;
            }
            state.read_sources.insert(name.clone());
            let table = self
                .def
                .table(name)
                .ok_or_else(|| Error::Internal("source".into()))?;
            let mut tracker = WatermarkTracker::new(table, &source.schema())?;
            // Read only the columns some INSERT uses (DataFusion queries may use any).
            let needed = if buffer {
                None
            } else {
                let width = source.schema().fields().len();
                let mut needed = Needed::none(width);
                if let Some(c) = tracker.column {
                    needed.add_column(c);
                }
                for chain in chains.iter().filter(|c| c.reads(name)) {
                    match chain.used_columns(name) {
                        Some(used) => needed.merge(&used),
                        None => needed = Needed::all(width),
                    }
                }
                Some(needed)
            };
            // Batch mode over several files, when every INSERT on this source aggregates:
            // each worker aggregates its share of the files, then the states are merged.
            let parallel = self.mode == Mode::Batch
                && !buffer
                && workers > 1
                && source.parts() > 1
                && chains
                    .iter()
                    .filter(|c| c.reads(name))
                    .all(|c| c.aggregate_at.is_some());
            let read = if parallel {
                self.aggregate_in_parallel(
                    name,
                    source,
                    table,
                    needed,
                    workers,
                    &mut chains,
                    bin,
                    &mut tracker,
                )?
            } else {
                let mut reader =
                    SourceReader::start(source.clone(), self.batch_size, workers, needed);
                let mut read = 0u64;
                let mut emit = EmitClock::new(self.emit_interval);
                while let Some((_, decoded)) = reader.next_batch()? {
                    bin.write(&decoded.rejects)?;
                    let batch = self.in_time_range(name, decoded.batch, tracker.column)?;
                    if batch.num_rows() == 0 {
                        continue;
                    }
                    read += batch.num_rows() as u64;
                    state.rows_read.insert(name.clone(), read);
                    self.live.update(|l| {
                        l.rows_read.insert(name.clone(), read);
                        l.rejects.clone_from(bin.counts());
                    });
                    if buffer {
                        buffered
                            .entry(name.clone())
                            .or_default()
                            .push(batch.clone());
                    }
                    let advanced = tracker.observe(&batch)?;
                    for chain in chains.iter_mut().filter(|c| c.reads(name)) {
                        chain.push_from(name, Message::Data(batch.clone()), &mut sinks, bin)?;
                    }
                    if self.mode == Mode::Stream {
                        emit.touch();
                        if emit.due(false) {
                            for chain in chains.iter_mut().filter(|c| c.reads(name) && c.updates())
                            {
                                chain.push(Message::EmitUpdates, &mut sinks, bin)?;
                            }
                        }
                        if let Some(w) = advanced {
                            state.record_state(&chains);
                            for chain in chains.iter_mut().filter(|c| c.reads(name)) {
                                chain.push_from(name, Message::Watermark(w), &mut sinks, bin)?;
                            }
                        }
                    }
                }
                read
            };
            state.record_state(&chains);
            for chain in chains.iter_mut().filter(|c| c.reads(name)) {
                chain.push_from(name, Message::Watermark(Watermark::MAX), &mut sinks, bin)?;
                chain.push_from(name, Message::EndOfInput, &mut sinks, bin)?;
            }
            // Rows in and out as the input ended.
            state.record_state(&chains);
            state.rows_read.insert(name.clone(), read);
            state
                .watermarks
                .insert(name.clone(), Watermark::MAX.display());
            if let Some(t) = tracker.max_seen {
                state
                    .max_event_time
                    .insert(name.clone(), Watermark(t).display());
            }
        }
        let on_datafusion: Vec<&BoundInsert> = self
            .planned
            .iter()
            .filter_map(|p| match p {
                Planned::DataFusion { bound, .. } => Some(bound),
                _ => None,
            })
            .collect();
        if !on_datafusion.is_empty() {
            let schemas = self
                .sources
                .iter()
                .map(|(n, s)| (n.clone(), s.schema()))
                .collect();
            let results =
                fallback::execute(&self.def, &schemas, buffered, &on_datafusion, bin).await?;
            for (sink, batches) in results {
                let name = self
                    .def
                    .table(&sink)
                    .map(|t| t.name.clone())
                    .unwrap_or(sink);
                let slot = sinks
                    .get_mut(&name)
                    .ok_or_else(|| Error::Internal(format!("no sink {name}")))?;
                for b in batches {
                    slot.write(&b)?;
                }
            }
        }
        commit_all(&mut sinks, state)
    }
}

impl OpenedPipeline {
    /// Where `print` sinks write.
    pub(crate) fn print_output(&self) -> Box<dyn Write + Send> {
        match &self.stdout {
            Some(buf) => Box::new(SharedBuf(buf.clone())),
            None => Box::new(std::io::stdout()),
        }
    }

    /// Opens every sink; `mode(name)` gives its mode and the rows it already wrote (restored
    /// jobs keep counting from their checkpoint).
    pub(crate) fn open_sinks(
        &self,
        state: &mut RunState,
        mode: impl Fn(&str) -> (SinkMode, u64),
    ) -> Result<BTreeMap<String, SinkSlot>> {
        let mut sinks = BTreeMap::new();
        for (name, schema) in &self.sink_schemas {
            let table = self
                .def
                .table(name)
                .ok_or_else(|| Error::Internal("sink vanished".into()))?;
            // A log sink written in update mode is keyed by the upsert key (Kafka's upsert
            // topics: the last record of a key is its value).
            let keyed;
            let table = match self.sink_keys.get(name) {
                Some(key)
                    if table.connector() == Some("log") && table.option("key.fields").is_none() =>
                {
                    let mut t = table.clone();
                    t.options.insert("key.fields".into(), key.join(";"));
                    keyed = t;
                    &keyed
                }
                _ => table,
            };
            let (mode, rows) = mode(name);
            let ctx = SinkContext {
                base_dir: self.base_dir.clone(),
                log_dir: self.log_dir.clone(),
                mode,
                slice: self.time_range.clone(),
            };
            let sink = open_sink(table, schema.clone(), &ctx, self.print_output())?;
            sinks.insert(
                name.clone(),
                SinkSlot {
                    name: name.clone(),
                    sink,
                    schema: schema.clone(),
                    rows,
                    change_type: takes_change_type(table),
                    key: match self.sink_keys.get(name) {
                        Some(key) => key
                            .iter()
                            .map(|k| {
                                schema.index_of(k).map_err(|_| {
                                    Error::Internal(format!(
                                        "sink {name} has no column `{k}` of its upsert key"
                                    ))
                                })
                            })
                            .collect::<Result<_>>()?,
                        None => vec![],
                    },
                    discard_deletes: table.connector() == Some("blackhole"),
                    pending: vec![],
                },
            );
            state.rows_written.insert(name.clone(), rows);
        }
        Ok(sinks)
    }

    /// One chain of operators per INSERT that runs on the dataflow, in plan order.
    pub(crate) fn build_chains(&self) -> Result<Vec<Chain>> {
        let mut chains = vec![];
        for p in &self.planned {
            if let Planned::Dataflow(plan) = p {
                let mut ops = plan
                    .nodes
                    .iter()
                    .map(|n| operators::build(n, &plan.source))
                    .collect::<Result<Vec<_>>>()?;
                let right_at = ops.len();
                let shared = plan.shared_prefix();
                if let Some(right) = &plan.right {
                    for n in &right.nodes[shared..] {
                        ops.push(operators::build(n, &right.source)?);
                    }
                }
                chains.push(Chain {
                    nodes: plan.nodes.clone(),
                    // Partial aggregates merge exactly, except sessions (they merge windows);
                    // a join needs both inputs in one place.
                    aggregate_at: plan
                        .nodes
                        .iter()
                        .position(
                            |n| matches!(n, Node::WindowAggregate(s) if !operators::is_session(s)),
                        )
                        .filter(|_| plan.right.is_none()),
                    used_columns: used_columns(&plan.nodes),
                    right_used_columns: plan.right.as_ref().and_then(|r| used_columns(&r.nodes)),
                    source: plan.source.clone(),
                    right_source: plan.right.as_ref().map(|r| r.source.clone()),
                    join_at: plan.nodes.iter().position(|n| matches!(n, Node::Join(_))),
                    right_at,
                    shared,
                    sink: self
                        .def
                        .table(&plan.sink)
                        .map(|t| t.name.clone())
                        .unwrap_or_default(),
                    rows: vec![RowsInOut::default(); ops.len()],
                    ops,
                });
            }
        }
        Ok(chains)
    }

    /// Parallel partial aggregation: worker `w` decodes files `w, w + workers, ...` and runs
    /// each chain up to its window aggregate; the main thread merges the aggregates, writes the
    /// rejects in file order and puts the merged aggregates back into the chains, ready for the
    /// end-of-input watermark. Returns the rows read.
    #[allow(clippy::too_many_arguments)]
    fn aggregate_in_parallel(
        &self,
        name: &str,
        source: &Arc<dyn BoundedSource>,
        table: &TableDef,
        needed: Option<Needed>,
        workers: usize,
        chains: &mut [Chain],
        bin: &mut RejectBin,
        tracker: &mut WatermarkTracker,
    ) -> Result<u64> {
        let mine: Vec<usize> = (0..chains.len())
            .filter(|&i| chains[i].source == name)
            .collect();
        let plans: Vec<(Vec<Node>, usize, String)> = mine
            .iter()
            .map(|&i| {
                let c = &chains[i];
                (
                    c.nodes.clone(),
                    c.aggregate_at.unwrap_or_default(),
                    c.sink.clone(),
                )
            })
            .collect();
        let part_count = source.parts();
        let batch_size = self.batch_size;
        // Corrections: each worker cuts its rows to the source's time range.
        let cut = self.time_cuts.get(name);
        let time_column = tracker.column;
        // Rows read by all workers so far, for watchers (progress bars, the API).
        let read_so_far = &std::sync::atomic::AtomicU64::new(0);
        let live = &self.live;
        let results: Vec<Result<PartialRun>> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..workers)
                .map(|w| {
                    let (plans, needed, source, name) =
                        (&plans, needed.as_ref(), source.clone(), name);
                    scope.spawn(move || -> Result<PartialRun> {
                        let mut parts = vec![];
                        for (nodes, k, sink) in plans {
                            let prefix = nodes[..*k]
                                .iter()
                                .map(|n| operators::build(n, name))
                                .collect::<Result<Vec<_>>>()?;
                            let Node::WindowAggregate(spec) = &nodes[*k] else {
                                return Err(Error::Internal("no aggregate to parallelize".into()));
                            };
                            parts.push((
                                prefix,
                                WindowAggregate::new(spec.clone(), name)?,
                                sink.clone(),
                                vec![RowsInOut::default(); k + 1],
                            ));
                        }
                        let mut run = PartialRun {
                            aggregates: vec![],
                            rejects: BTreeMap::new(),
                            rows: 0,
                            op_rows: vec![],
                            tracker: WatermarkTracker::new(table, &source.schema())?,
                        };
                        for index in (w..part_count).step_by(workers) {
                            let mut rejects = vec![];
                            source.read_part(index, batch_size, needed, &mut |d| {
                                rejects.extend(d.rejects);
                                let batch = cut_to_range(cut, d.batch, time_column)?;
                                if batch.num_rows() == 0 {
                                    return Ok(());
                                }
                                run.rows += batch.num_rows() as u64;
                                let n = batch.num_rows() as u64;
                                let read = read_so_far
                                    .fetch_add(n, std::sync::atomic::Ordering::Relaxed)
                                    + n;
                                live.update(|l| match l.rows_read.get_mut(name) {
                                    Some(seen) => *seen = (*seen).max(read),
                                    None => {
                                        l.rows_read.insert(name.to_string(), read);
                                    }
                                });
                                run.tracker.observe(&batch)?;
                                for (prefix, aggregate, sink, rows) in parts.iter_mut() {
                                    let mut out = vec![];
                                    feed(
                                        prefix,
                                        aggregate,
                                        rows,
                                        Message::Data(batch.clone()),
                                        &mut out,
                                    )?;
                                    for mut r in out {
                                        r.sink.get_or_insert_with(|| sink.clone());
                                        rejects.push(r);
                                    }
                                }
                                Ok(())
                            })?;
                            run.rejects.insert(index, rejects);
                        }
                        for (_, aggregate, _, rows) in parts {
                            run.aggregates.push(aggregate);
                            run.op_rows.push(rows);
                        }
                        Ok(run)
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join().unwrap_or_else(|_| {
                        Err(Error::Internal("aggregation worker panicked".into()))
                    })
                })
                .collect()
        });
        let mut runs = results.into_iter().collect::<Result<Vec<_>>>()?;
        let mut rejects = BTreeMap::new();
        let mut rows = 0;
        for run in &mut runs {
            rejects.append(&mut run.rejects);
            rows += run.rows;
            for (&i, counts) in mine.iter().zip(&run.op_rows) {
                for (into, from) in chains[i].rows.iter_mut().zip(counts) {
                    into.rows_in += from.rows_in;
                    into.rows_out += from.rows_out;
                }
            }
            if let Some(t) = run.tracker.max_seen {
                tracker.max_seen = Some(tracker.max_seen.map_or(t, |m| m.max(t)));
            }
        }
        for file_rejects in rejects.values() {
            bin.write(file_rejects)?;
        }
        let mut runs = runs.into_iter();
        let mut merged = runs.next().map(|r| r.aggregates).unwrap_or_default();
        for run in runs {
            for (into, from) in merged.iter_mut().zip(run.aggregates) {
                into.merge(from)?;
            }
        }
        for (&i, aggregate) in mine.iter().zip(merged) {
            let k = chains[i].aggregate_at.unwrap_or_default();
            chains[i].ops[k] = Box::new(aggregate);
        }
        Ok(rows)
    }
}

/// What one parallel aggregation worker produced.
struct PartialRun {
    aggregates: Vec<WindowAggregate>,
    /// Rejects per file index, so they are written in file order.
    rejects: BTreeMap<usize, Vec<flowline_core::Reject>>,
    rows: u64,
    /// Rows in and out of each chain's operators up to its aggregate.
    op_rows: Vec<Vec<RowsInOut>>,
    tracker: WatermarkTracker,
}

/// Pushes `message` through stateless `prefix` operators into `aggregate`, collecting rejects.
/// `rows` counts rows in and out of each prefix operator and, last, of the aggregate.
fn feed(
    prefix: &mut [Box<dyn Operator>],
    aggregate: &mut WindowAggregate,
    rows: &mut [RowsInOut],
    message: Message,
    rejects: &mut Vec<flowline_core::Reject>,
) -> Result<()> {
    let mut out = Output::default();
    let n = rows_of(&message);
    let (count, rest_rows) = rows
        .split_first_mut()
        .ok_or_else(|| Error::Internal("no row counts for an operator".into()))?;
    match prefix.split_first_mut() {
        None => {
            aggregate.process(message, &mut out)?;
            count.count(n, &out);
        }
        Some((op, rest)) => {
            op.process(message, &mut out)?;
            count.count(n, &out);
            for m in std::mem::take(&mut out.messages) {
                feed(rest, aggregate, rest_rows, m, rejects)?;
            }
        }
    }
    rejects.append(&mut out.rejects);
    Ok(())
}

#[derive(Default)]
pub(crate) struct RunState {
    pub(crate) read_sources: BTreeSet<String>,
    pub(crate) rows_read: BTreeMap<String, u64>,
    pub(crate) rows_written: BTreeMap<String, u64>,
    pub(crate) commits: BTreeMap<String, SinkCommit>,
    pub(crate) watermarks: BTreeMap<String, String>,
    pub(crate) max_event_time: BTreeMap<String, String>,
    pub(crate) peak_state: usize,
    /// Every operator's state when last recorded and its peak (labels built once, like
    /// `current_rows`).
    operators: Vec<OperatorState>,
    /// Rows in and out of every operator when last recorded.
    pub(crate) current_rows: Vec<crate::status::OperatorRows>,
    /// Log sources: partition → next offset to read, when the run ended.
    pub(crate) positions: BTreeMap<String, BTreeMap<u32, u64>>,
}

/// One operator's state bytes: now (in `status`) and at its peak.
struct OperatorState {
    status: crate::status::OperatorStatus,
    name: &'static str,
    peak: usize,
}

impl RunState {
    /// Records the state every operator holds now (per-operator peaks and the total's peak) and
    /// the rows each received and sent. O(operators): operators report their state in O(1).
    pub(crate) fn record_state(&mut self, chains: &[Chain]) {
        let mut total = 0;
        // Labels once; afterwards only the counts change (this runs at every watermark).
        let operators: usize = chains.iter().map(|c| c.ops.len()).sum();
        if self.current_rows.len() != operators {
            self.current_rows =
                chains
                    .iter()
                    .enumerate()
                    .flat_map(|(c, chain)| {
                        chain.ops.iter().enumerate().map(move |(i, op)| {
                            crate::status::OperatorRows {
                                insert: c,
                                sink: chain.sink.clone(),
                                position: i,
                                operator: op.name().to_string(),
                                ..Default::default()
                            }
                        })
                    })
                    .collect();
        }
        let counts = chains.iter().flat_map(|c| c.rows.iter());
        for (row, count) in self.current_rows.iter_mut().zip(counts) {
            row.rows_in = count.rows_in;
            row.rows_out = count.rows_out;
        }
        if self.operators.len() != operators {
            self.operators = chains
                .iter()
                .enumerate()
                .flat_map(|(c, chain)| {
                    chain
                        .ops
                        .iter()
                        .enumerate()
                        .map(move |(i, op)| OperatorState {
                            status: crate::status::OperatorStatus {
                                insert: c,
                                sink: chain.sink.clone(),
                                position: i,
                                operator: op.name().to_string(),
                                state_bytes: 0,
                            },
                            name: op.name(),
                            peak: 0,
                        })
                })
                .collect();
        }
        let ops = chains.iter().flat_map(|c| c.ops.iter());
        for (o, op) in self.operators.iter_mut().zip(ops) {
            let bytes = op.state_bytes();
            o.status.state_bytes = bytes as u64;
            o.peak = o.peak.max(bytes);
            total += bytes;
        }
        self.peak_state = self.peak_state.max(total);
    }

    /// The stateful operators' state when last recorded.
    pub(crate) fn current_state(&self) -> Vec<crate::status::OperatorStatus> {
        self.operators
            .iter()
            .filter(|o| o.status.state_bytes > 0)
            .map(|o| o.status.clone())
            .collect()
    }

    /// Peak state bytes per operator that held any: (chain, sink, position, operator name).
    fn operator_peaks(&self) -> BTreeMap<(usize, String, usize, &'static str), usize> {
        self.operators
            .iter()
            .filter(|o| o.peak > 0)
            .map(|o| {
                let s = &o.status;
                ((s.insert, s.sink.clone(), s.position, o.name), o.peak)
            })
            .collect()
    }

    /// The per-operator peaks as manifest JSON.
    fn operator_state_json(&self) -> Vec<serde_json::Value> {
        self.operator_peaks()
            .iter()
            .map(|((chain, sink, position, name), bytes)| {
                json!({"insert": chain, "sink": sink, "operator": name, "position": position, "peak_bytes": bytes})
            })
            .collect()
    }
}

/// The column a sink declares to receive deletes: each row written says `upsert` or `delete`.
pub const CHANGE_TYPE_COLUMN: &str = "_change_type";

/// Whether a sink table declares [`CHANGE_TYPE_COLUMN`] as its last column.
fn declares_change_type(table: &TableDef) -> bool {
    table
        .columns
        .last()
        .is_some_and(|c| c.name.eq_ignore_ascii_case(CHANGE_TYPE_COLUMN))
}

/// Whether a sink is told each row's change in a last [`CHANGE_TYPE_COLUMN`]: it declares the
/// column, or it is a serving table (which applies the changes and does not store the column).
fn takes_change_type(table: &TableDef) -> bool {
    declares_change_type(table) || table.connector() == Some("table")
}

pub(crate) struct SinkSlot {
    pub(crate) name: String,
    pub(crate) sink: Box<dyn Sink>,
    /// The sink's columns (with [`CHANGE_TYPE_COLUMN`] last when it declares it).
    pub(crate) schema: SchemaRef,
    pub(crate) rows: u64,
    /// Whether the last column of `schema` is [`CHANGE_TYPE_COLUMN`].
    change_type: bool,
    /// Positions of the upsert key (update mode), for matching deletes with rewrites.
    key: Vec<usize>,
    /// Deletes are dropped (a blackhole sink).
    discard_deletes: bool,
    /// Retracted rows of the current emission, not yet written: a row of the same key written
    /// in the same emission replaces them; the rest are deletes (see [`SinkSlot::flush_deletes`]).
    pending: Vec<RecordBatch>,
}

impl SinkSlot {
    /// Writes new or updated rows; a pending delete of the same key is dropped, as the new row
    /// replaces it.
    fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        if !self.pending.is_empty() {
            self.cancel_deletes(batch)?;
        }
        self.write_rows(batch, "upsert")
    }

    /// Takes retracted rows: they become deletes at the end of the emission unless rewritten.
    fn retract(&mut self, batch: &RecordBatch) -> Result<()> {
        if self.discard_deletes {
            return Ok(());
        }
        if !self.change_type {
            return Err(Error::Internal(format!(
                "sink {} got a retraction but cannot write deletes",
                self.name
            )));
        }
        if batch.num_rows() > 0 {
            self.pending.push(batch.clone());
        }
        Ok(())
    }

    /// Ends an emission: writes the retracted rows no new row replaced as deletes.
    fn flush_deletes(&mut self) -> Result<()> {
        for batch in std::mem::take(&mut self.pending) {
            self.write_rows(&batch, "delete")?;
        }
        Ok(())
    }

    /// Drops the pending deletes whose key `batch` writes again (without a key, a global
    /// aggregate's one row: all of them).
    fn cancel_deletes(&mut self, batch: &RecordBatch) -> Result<()> {
        if self.key.is_empty() {
            self.pending.clear();
            return Ok(());
        }
        use arrow::row::{RowConverter, SortField};
        let fields = self
            .key
            .iter()
            .map(|&i| SortField::new(batch.column(i).data_type().clone()))
            .collect();
        let converter = RowConverter::new(fields)?;
        let key_columns = |b: &RecordBatch| -> Result<Vec<arrow::array::ArrayRef>> {
            self.key
                .iter()
                .map(|&i| {
                    let c = b.column(i);
                    let want = batch.column(i).data_type();
                    Ok(if c.data_type() == want {
                        c.clone()
                    } else {
                        arrow::compute::cast(c, want)?
                    })
                })
                .collect()
        };
        let written = converter.convert_columns(&key_columns(batch)?)?;
        let written: std::collections::HashSet<&[u8]> = written.iter().map(|r| r.data()).collect();
        let mut kept = vec![];
        for pending in &self.pending {
            let keys = converter.convert_columns(&key_columns(pending)?)?;
            let keep: arrow::array::BooleanArray = keys
                .iter()
                .map(|r| Some(!written.contains(r.data())))
                .collect();
            if keep.true_count() == keep.len() {
                kept.push(pending.clone());
                continue;
            }
            let rest = arrow::compute::filter_record_batch(pending, &keep)?;
            if rest.num_rows() > 0 {
                kept.push(rest);
            }
        }
        self.pending = kept;
        Ok(())
    }

    fn write_rows(&mut self, batch: &RecordBatch, change: &str) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let mut columns = batch
            .columns()
            .iter()
            .zip(self.schema.fields())
            .map(|(c, f)| {
                if c.data_type() == f.data_type() {
                    Ok(c.clone())
                } else {
                    // Strict: a value that does not fit the sink's column stops the run (nothing
                    // is published) instead of silently becoming NULL.
                    let strict = arrow::compute::CastOptions {
                        safe: false,
                        ..Default::default()
                    };
                    arrow::compute::cast_with_options(c, f.data_type(), &strict).map_err(|e| {
                        Error::Execution(format!(
                            "column `{}` cannot be written as {}: {e}",
                            f.name(),
                            f.data_type()
                        ))
                    })
                }
            })
            .collect::<Result<Vec<_>>>()?;
        if let (true, Some(field)) = (self.change_type, self.schema.fields().last()) {
            // As the declared string type (STRING, or a large or view string).
            let text = arrow::array::StringArray::from_iter_values(std::iter::repeat_n(
                change,
                batch.num_rows(),
            ));
            columns.push(arrow::compute::cast(&text, field.data_type())?);
        }
        let batch = RecordBatch::try_new(self.schema.clone(), columns)?;
        self.sink.write(&batch)?;
        self.rows += batch.num_rows() as u64;
        Ok(())
    }
}

pub(crate) struct Chain {
    nodes: Vec<Node>,
    /// Position of the window aggregate among `nodes`, if any.
    aggregate_at: Option<usize>,
    /// Columns of `source` the chain reads (`None`: all).
    used_columns: Option<Needed>,
    /// Columns of `right_source` the chain reads (`None`: all).
    right_used_columns: Option<Needed>,
    pub(crate) source: String,
    /// A join's right input: its source; its operators are `ops[right_at..]`, and feed the
    /// join at `ops[join_at]` (the left input's and the join's and what follows are
    /// `ops[..right_at]`).
    pub(crate) right_source: Option<String>,
    join_at: Option<usize>,
    right_at: usize,
    /// A self-join's common nodes ([`InsertPlan::shared_prefix`]): `ops[..shared]` run once,
    /// and each message they send goes to `ops[shared]` and to `ops[right_at]` (or straight into
    /// the join, if the right input has no operators of its own).
    shared: usize,
    pub(crate) sink: String,
    pub(crate) ops: Vec<Box<dyn Operator>>,
    /// Rows each operator of `ops` received and sent (data and retractions), in order.
    pub(crate) rows: Vec<RowsInOut>,
}

/// Rows an operator received and sent.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct RowsInOut {
    pub(crate) rows_in: u64,
    pub(crate) rows_out: u64,
}

impl RowsInOut {
    /// Counts `message` in and what `out` holds out.
    fn count(&mut self, message_rows: u64, out: &Output) {
        self.rows_in += message_rows;
        self.rows_out += out.messages.iter().map(rows_of).sum::<u64>();
    }
}

/// The rows a message carries (data or retractions).
fn rows_of(message: &Message) -> u64 {
    match message {
        Message::Data(b) | Message::Retract(b) => b.num_rows() as u64,
        _ => 0,
    }
}

impl Chain {
    /// Whether rows of source `name` feed this chain (on either input of a join).
    pub(crate) fn reads(&self, name: &str) -> bool {
        self.source == name || self.right_source.as_deref() == Some(name)
    }

    /// The columns of source `name` the chain reads (`None`: all of them).
    fn used_columns(&self, name: &str) -> Option<Needed> {
        let left = (self.source == name).then_some(&self.used_columns);
        let right =
            (self.right_source.as_deref() == Some(name)).then_some(&self.right_used_columns);
        match (left, right) {
            (Some(Some(l)), Some(Some(r))) => {
                let mut both = l.clone();
                both.merge(r);
                Some(both)
            }
            (Some(Some(one)), None) | (None, Some(Some(one))) => Some(one.clone()),
            _ => None,
        }
    }

    /// Pushes a message of source `name` into every input it feeds (both, for a self-join).
    pub(crate) fn push_from(
        &mut self,
        name: &str,
        message: Message,
        sinks: &mut BTreeMap<String, SinkSlot>,
        bin: &mut RejectBin,
    ) -> Result<()> {
        let (left, right) = (
            self.source == name,
            self.right_source.as_deref() == Some(name),
        );
        if !right {
            return self.push(message, sinks, bin);
        }
        let slot = sinks
            .get_mut(&self.sink)
            .ok_or_else(|| Error::Internal(format!("no sink {}", self.sink)))?;
        self.push_right_input(message, left, slot, bin)
            .map_err(|e| self.name_insert(e))
    }

    /// Pushes a message into the left input (control messages such as
    /// [`Message::EmitUpdates`] too: they pass the left operators, the shared ones included).
    pub(crate) fn push(
        &mut self,
        message: Message,
        sinks: &mut BTreeMap<String, SinkSlot>,
        bin: &mut RejectBin,
    ) -> Result<()> {
        let slot = sinks
            .get_mut(&self.sink)
            .ok_or_else(|| Error::Internal(format!("no sink {}", self.sink)))?;
        push(
            &mut self.ops[..self.right_at],
            &mut self.rows[..self.right_at],
            message,
            slot,
            bin,
        )
        .map_err(|e| self.name_insert(e))
    }

    /// Names the INSERT whose expressions failed (division by zero, overflow, ...).
    fn name_insert(&self, e: Error) -> Error {
        match e {
            Error::Execution(m) => Error::Execution(format!("INSERT INTO {}: {m}", self.sink)),
            other => other,
        }
    }

    /// Pushes a message of the right input's source into the right input, and into the left
    /// one too when it reads the same source (`both`): then the shared operators
    /// `ops[..shared]` run once (none: the whole message goes left first) and each message they
    /// send goes to the left input's next operator first, then to the right input's.
    fn push_right_input(
        &mut self,
        message: Message,
        both: bool,
        sink: &mut SinkSlot,
        bin: &mut RejectBin,
    ) -> Result<()> {
        let join_at = self
            .join_at
            .ok_or_else(|| Error::Internal("a right input without a join".into()))?;
        let shared = if both { self.shared } else { 0 };
        let mut messages = vec![message];
        for (op, count) in self.ops[..shared].iter_mut().zip(&mut self.rows) {
            let mut next = Vec::with_capacity(messages.len());
            for m in messages {
                next.extend(step(op.as_mut(), count, m, false, sink, bin)?);
            }
            messages = next;
        }
        let (main, right) = self.ops.split_at_mut(self.right_at);
        let (main_rows, right_rows) = self.rows.split_at_mut(self.right_at);
        for m in messages {
            if both {
                push(
                    &mut main[shared..],
                    &mut main_rows[shared..],
                    m.clone(),
                    sink,
                    bin,
                )?;
            }
            push_right(
                (&mut *right, &mut *right_rows),
                (&mut main[join_at..], &mut main_rows[join_at..]),
                m,
                sink,
                bin,
            )?;
        }
        Ok(())
    }

    /// The dimension table this chain's lookup join reads, if it has one.
    pub(crate) fn lookup_source(&self) -> Option<&str> {
        lookup_dimension(&self.nodes, self.right_source.as_deref())
    }

    /// Whether the chain emits in update mode (and so needs [`Message::EmitUpdates`] ticks).
    pub(crate) fn updates(&self) -> bool {
        self.nodes.iter().any(|n| match n {
            Node::WindowAggregate(s) => s.output == OutputMode::Update,
            Node::RetractAggregate(_) => true,
            Node::TopN(s) => s.output == OutputMode::Update,
            _ => false,
        })
    }
}

/// When update-mode chains emit their changed results: at most every `interval`, and only if
/// rows arrived since the last emission.
pub(crate) struct EmitClock {
    interval: Duration,
    last: Instant,
    pending: bool,
}

impl EmitClock {
    pub(crate) fn new(interval: Duration) -> EmitClock {
        EmitClock {
            interval,
            last: Instant::now(),
            pending: false,
        }
    }

    /// Rows reached the chains.
    pub(crate) fn touch(&mut self) {
        self.pending = true;
    }

    /// Whether to emit now (`force`: whatever the interval); if so, the clock restarts.
    pub(crate) fn due(&mut self, force: bool) -> bool {
        if self.pending && (force || self.last.elapsed() >= self.interval) {
            self.pending = false;
            self.last = Instant::now();
            true
        } else {
            false
        }
    }
}

/// Pushes a message through a join's right-input operators `right`, then into the join
/// (`join_and_rest[0]`, as its right input) and what follows it.
fn push_right(
    (right, right_rows): (&mut [Box<dyn Operator>], &mut [RowsInOut]),
    (join_and_rest, rows_after): (&mut [Box<dyn Operator>], &mut [RowsInOut]),
    message: Message,
    sink: &mut SinkSlot,
    bin: &mut RejectBin,
) -> Result<()> {
    match (right.split_first_mut(), right_rows.split_first_mut()) {
        (Some((op, rest)), Some((count, rest_rows))) => {
            for m in step(op.as_mut(), count, message, false, sink, bin)? {
                push_right((rest, rest_rows), (join_and_rest, rows_after), m, sink, bin)?;
            }
        }
        (None, None) => {
            let (Some((join, after)), Some((count, after_rows))) = (
                join_and_rest.split_first_mut(),
                rows_after.split_first_mut(),
            ) else {
                return Err(Error::Internal("no join for a right input".into()));
            };
            for m in step(join.as_mut(), count, message, true, sink, bin)? {
                push(after, after_rows, m, sink, bin)?;
            }
        }
        _ => {
            return Err(Error::Internal(
                "right-input operators and their row counts differ in number".into(),
            ))
        }
    }
    Ok(())
}

/// Runs one operator on `message` (as a join's right input if `right`), counts its rows, writes
/// its rejects; returns what it sends on.
fn step(
    op: &mut dyn Operator,
    count: &mut RowsInOut,
    message: Message,
    right: bool,
    sink: &mut SinkSlot,
    bin: &mut RejectBin,
) -> Result<Vec<Message>> {
    let mut out = Output::default();
    let rows = rows_of(&message);
    if right {
        op.process_right(message, &mut out)?;
    } else {
        op.process(message, &mut out)?;
    }
    count.count(rows, &out);
    write_rejects(&mut out, sink, bin)?;
    Ok(out.messages)
}

/// Writes an operator's rejects, naming the sink of its INSERT.
fn write_rejects(out: &mut Output, sink: &SinkSlot, bin: &mut RejectBin) -> Result<()> {
    for r in &mut out.rejects {
        r.sink.get_or_insert_with(|| sink.name.clone());
    }
    bin.write(&out.rejects)
}

fn push(
    ops: &mut [Box<dyn Operator>],
    rows: &mut [RowsInOut],
    message: Message,
    sink: &mut SinkSlot,
    bin: &mut RejectBin,
) -> Result<()> {
    match (ops.split_first_mut(), rows.split_first_mut()) {
        (None, None) => match message {
            Message::Data(batch) => sink.write(&batch),
            Message::Retract(batch) => sink.retract(&batch),
            Message::Watermark(_) | Message::EndOfInput | Message::EmitUpdates => {
                sink.flush_deletes()
            }
        },
        (Some((op, rest)), Some((count, rest_rows))) => {
            for m in step(op.as_mut(), count, message, false, sink, bin)? {
                push(rest, rest_rows, m, sink, bin)?;
            }
            Ok(())
        }
        _ => Err(Error::Internal(
            "operators and their row counts differ in number".into(),
        )),
    }
}

/// A lookup join's dimension table in a job over logs: loaded at the start, and again whenever
/// its files change (checked every `interval`).
pub(crate) struct DimensionWatch {
    name: String,
    interval: Duration,
    checked: Instant,
    /// The files of the last load (paths, sizes, modification times).
    files: serde_json::Value,
}

impl OpenedPipeline {
    /// One watch per dimension table the chains' lookup joins read.
    pub(crate) fn dimension_watches(&self, chains: &[Chain]) -> Result<Vec<DimensionWatch>> {
        let names: BTreeSet<&str> = chains.iter().filter_map(Chain::lookup_source).collect();
        names
            .into_iter()
            .map(|name| {
                let table = self
                    .def
                    .table(name)
                    .ok_or_else(|| Error::Internal(format!("no dimension table {name}")))?;
                Ok(DimensionWatch {
                    name: name.to_string(),
                    interval: dimension_check_interval(table)?,
                    checked: Instant::now(),
                    files: serde_json::Value::Null,
                })
            })
            .collect()
    }

    /// Loads `watch`'s table into the lookup joins that read it if it was never loaded, or if
    /// `watch.interval` passed since the last check and its files changed. A load is read whole
    /// before the joins see it, so a reload that fails (a file removed while being read), or
    /// finds no file at all (a folder being replaced), leaves the previous table in place and
    /// is retried at the next check; the first load failing is an error. A reload writes the
    /// rejects of the files that changed only (the others' are in the bin already).
    pub(crate) fn refresh_dimension(
        &self,
        watch: &mut DimensionWatch,
        chains: &mut [Chain],
        sinks: &mut BTreeMap<String, SinkSlot>,
        bin: &mut RejectBin,
        state: &mut RunState,
    ) -> Result<()> {
        let first = watch.files.is_null();
        if !first && watch.checked.elapsed() < watch.interval {
            return Ok(());
        }
        watch.checked = Instant::now();
        let table = self
            .def
            .table(&watch.name)
            .ok_or_else(|| Error::Internal(format!("no dimension table {}", watch.name)))?;
        // `None`: the files did not change.
        let read = || -> Result<Option<(serde_json::Value, Vec<Decoded>)>> {
            let source = FileSource::open(table, &self.base_dir)?;
            let files = BoundedSource::describe(&source);
            if files == watch.files {
                return Ok(None);
            }
            if !first && source.files().is_empty() {
                return Err(Error::Execution("no file to read".into()));
            }
            let mut reader = SourceReader::start(Arc::new(source), self.batch_size, 1, None);
            let mut parts = vec![];
            while let Some((_, decoded)) = reader.next_batch()? {
                parts.push(decoded);
            }
            Ok(Some((files, parts)))
        };
        let (files, parts) = match read() {
            Ok(None) => return Ok(()),
            Ok(Some(loaded)) => loaded,
            Err(e) if first => return Err(e),
            Err(e) => {
                eprintln!(
                    "warning: reloading lookup table `{}` failed, keeping the previous load (retried in {:?}): {e}",
                    watch.name, watch.interval
                );
                return Ok(());
            }
        };
        // Files listed the same way at the last load: their rejects were written then.
        let unchanged: BTreeSet<String> = watch.files["files"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|f| files["files"].as_array().is_some_and(|now| now.contains(f)))
            .filter_map(|f| f["path"].as_str().map(str::to_string))
            .collect();
        let name = watch.name.as_str();
        let mut rows = 0;
        for decoded in parts {
            let fresh: Vec<_> = decoded
                .rejects
                .into_iter()
                .filter(|r| r.file.as_ref().is_none_or(|f| !unchanged.contains(f)))
                .collect();
            bin.write(&fresh)?;
            if decoded.batch.num_rows() == 0 {
                continue;
            }
            rows += decoded.batch.num_rows() as u64;
            for chain in chains
                .iter_mut()
                .filter(|c| c.lookup_source() == Some(name))
            {
                chain.push_from(name, Message::Data(decoded.batch.clone()), sinks, bin)?;
            }
        }
        for chain in chains
            .iter_mut()
            .filter(|c| c.lookup_source() == Some(name))
        {
            chain.push_from(name, Message::EndOfInput, sinks, bin)?;
        }
        // A dimension's rows read: its current table.
        state.rows_read.insert(watch.name.clone(), rows);
        state.read_sources.insert(watch.name.clone());
        watch.files = files;
        Ok(())
    }
}

/// The dimension table a lookup join among `nodes` reads: its right input `right`.
pub(crate) fn lookup_dimension<'a>(nodes: &[Node], right: Option<&'a str>) -> Option<&'a str> {
    nodes
        .iter()
        .any(|n| matches!(n, Node::Join(j) if matches!(j.as_of, Some(AsOf::ProcessingTime))))
        .then_some(right)?
}

/// How often a lookup join's dimension table is checked for changed files
/// (`'lookup.join.cache.ttl'`, Flink's option; default 10 s).
pub(crate) fn dimension_check_interval(table: &TableDef) -> Result<Duration> {
    match table.option("lookup.join.cache.ttl") {
        None => Ok(Duration::from_secs(10)),
        Some(t) => flowline_log::parse_duration_ms(t)
            .ok()
            .filter(|&ms| ms > 0)
            .map(|ms| Duration::from_millis(ms as u64))
            .ok_or_else(|| {
                Error::option(
                    &table.name,
                    format!(
                        "'lookup.join.cache.ttl' = '{t}' is not a duration such as 10s or 5min"
                    ),
                )
            }),
    }
}

/// The source columns (and ROW fields) the chain of `nodes` reads from its source (a join's
/// left or right input), or `None` when it passes every column through.
fn used_columns(nodes: &[Node]) -> Option<Needed> {
    let mut used = Needed::none(0);
    for node in nodes {
        match node {
            Node::Filter { predicate } => used.add_expr(predicate),
            // Appends the window columns after the source's: source indices stay valid.
            Node::WindowAssign(spec) => used.add_column(spec.time_column),
            Node::Project { exprs, .. } => {
                exprs.iter().for_each(|e| used.add_expr(e));
                return Some(used);
            }
            Node::WindowAggregate(spec) | Node::RetractAggregate(spec) => {
                spec.group_exprs.iter().for_each(|e| used.add_expr(e));
                for call in &spec.calls {
                    used.add_expr(&call.arg);
                    if let Some(f) = &call.filter {
                        used.add_expr(f);
                    }
                }
                // Its late rows are rejected as they came from the source: with every field.
                used.keep_row_fields();
                return Some(used);
            }
            // Passes every column on to what follows.
            Node::WindowRank(_)
            | Node::OverAggregate(_)
            | Node::Join(_)
            | Node::Deduplicate(_)
            | Node::TopN(_) => return None,
        }
    }
    None
}

/// Watermark = max event time seen − declared delay − 1 ms (Flink's bounded out-of-orderness),
/// so a row at most `delay` behind the newest row is never late.
struct WatermarkTracker {
    column: Option<usize>,
    delay: i64,
    max_seen: Option<i64>,
    current: Watermark,
}

impl WatermarkTracker {
    fn new(table: &TableDef, schema: &Schema) -> Result<Self> {
        let (column, delay) = event_time(table, schema)?;
        Ok(WatermarkTracker {
            column,
            delay,
            max_seen: None,
            current: Watermark::MIN,
        })
    }

    fn observe(&mut self, batch: &RecordBatch) -> Result<Option<Watermark>> {
        let Some(column) = self.column else {
            return Ok(None);
        };
        let ms = millis(batch.column(column))?;
        let Some(max) = arrow::compute::max(&ms) else {
            return Ok(None);
        };
        self.max_seen = Some(self.max_seen.map_or(max, |m| m.max(max)));
        let w = bounded_watermark(self.max_seen.unwrap_or(max), self.delay);
        if w > self.current {
            self.current = w;
            Ok(Some(w))
        } else {
            Ok(None)
        }
    }
}

/// Publishes every sink's whole-run output (batch commit).
pub(crate) fn commit_all(
    sinks: &mut BTreeMap<String, SinkSlot>,
    state: &mut RunState,
) -> Result<()> {
    for (name, slot) in sinks.iter_mut() {
        let commit = slot.sink.commit()?;
        state.rows_written.insert(name.clone(), slot.rows);
        state.commits.insert(name.clone(), commit);
    }
    Ok(())
}

impl OpenedPipeline {
    /// Corrections: the rows of a batch of source `name` whose event time is in its cut (all
    /// rows when there is none).
    pub(crate) fn in_time_range(
        &self,
        name: &str,
        batch: RecordBatch,
        column: Option<usize>,
    ) -> Result<RecordBatch> {
        cut_to_range(self.time_cuts.get(name), batch, column)
    }
}

/// The rows of `batch` whose event time (column `column`) is in `cut`; all rows without one.
fn cut_to_range(
    cut: Option<&flowline_connectors::TimeRange>,
    batch: RecordBatch,
    column: Option<usize>,
) -> Result<RecordBatch> {
    match (cut, column) {
        (Some(range), Some(c)) if batch.num_rows() > 0 => {
            let keep = range.mask(batch.column(c))?;
            Ok(arrow::compute::filter_record_batch(&batch, &keep)?)
        }
        _ => Ok(batch),
    }
}

/// The event-time column of a source (its `WATERMARK FOR` column) and the declared delay.
pub(crate) fn event_time(table: &TableDef, schema: &Schema) -> Result<(Option<usize>, i64)> {
    Ok(match &table.watermark {
        Some(w) => (Some(schema.index_of(&w.column)?), w.delay_ms),
        None => (None, 0),
    })
}

/// Bounded out-of-orderness: the watermark after seeing event time `max_seen`.
pub(crate) fn bounded_watermark(max_seen: i64, delay: i64) -> Watermark {
    Watermark(max_seen.saturating_sub(delay).saturating_sub(1))
}

/// The schema written to a sink: its declared columns, or the query's; a serving table's gets
/// [`CHANGE_TYPE_COLUMN`] added last (see [`takes_change_type`]).
fn sink_schema(table: &TableDef, query: &SchemaRef, line: u64) -> Result<SchemaRef> {
    let schema = sink_columns(table, query, line)?;
    if table.connector() != Some("table") || declares_change_type(table) {
        return Ok(schema);
    }
    let mut fields = schema.fields().to_vec();
    fields.push(Arc::new(Field::new(
        CHANGE_TYPE_COLUMN,
        DataType::Utf8,
        false,
    )));
    Ok(Arc::new(Schema::new(fields)))
}

/// The declared columns of a sink, or the query's.
fn sink_columns(table: &TableDef, query: &SchemaRef, line: u64) -> Result<SchemaRef> {
    // A declared `_change_type` column is filled by the sink, not by the query.
    let declared = if declares_change_type(table) {
        let c = &table.columns[table.columns.len() - 1];
        if !matches!(
            c.data_type,
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
        ) {
            return Err(Error::Plan(format!(
                "line {}: table {}: column `{}` must be STRING: the sink writes 'upsert' or 'delete' into it",
                table.line, table.name, c.name
            )));
        }
        &table.columns[..table.columns.len() - 1]
    } else {
        &table.columns[..]
    };
    if table.columns.is_empty() {
        return Ok(Arc::new(Schema::new(
            query
                .fields()
                .iter()
                .map(|f| f.as_ref().clone().with_nullable(true))
                .collect::<Vec<_>>(),
        )));
    }
    if declared.len() != query.fields().len() {
        return Err(Error::Plan(format!(
            "line {line}: INSERT INTO {} produces {} columns ({}), but the table declares {} ({})",
            table.name,
            query.fields().len(),
            query
                .fields()
                .iter()
                .map(|f| f.name().as_str())
                .collect::<Vec<_>>()
                .join(", "),
            declared.len(),
            declared
                .iter()
                .map(|c| c.name.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        )));
    }
    for (c, f) in declared.iter().zip(query.fields()) {
        let text_to_other = matches!(
            f.data_type(),
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
        ) && !matches!(
            c.data_type,
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
        );
        if text_to_other || !arrow::compute::can_cast_types(f.data_type(), &c.data_type) {
            return Err(Error::Plan(format!(
                "line {line}: INSERT INTO {}: column `{}` is {} but the query gives {} (`{}`)",
                table.name,
                c.name,
                c.data_type,
                f.data_type(),
                f.name()
            )));
        }
    }
    Ok(Arc::new(Schema::new(
        table
            .columns
            .iter()
            .map(|c| Field::new(&c.name, c.data_type.clone(), true))
            .collect::<Vec<_>>(),
    )))
}

/// Parses an emit interval: a duration such as `1s` or `500ms`, or `0` (after every batch).
pub fn parse_emit_interval(text: &str) -> std::result::Result<Duration, String> {
    if text.trim() == "0" {
        return Ok(Duration::ZERO);
    }
    match flowline_log::parse_duration_ms(text) {
        Ok(ms) if ms >= 0 => Ok(Duration::from_millis(ms as u64)),
        _ => Err(format!(
            "'{text}' is not an emit interval: a duration such as 1s or 500ms, or 0"
        )),
    }
}

/// Checks that every INSERT into `table` agrees on the output mode and, in update mode, that the
/// sink is keyed by the upsert key: a declared PRIMARY KEY or a log sink's `key.fields` must name
/// exactly the key columns. Records the sink's key (`None`: append) in `keys`.
fn check_upsert_key(
    table: &TableDef,
    plan: &InsertPlan,
    schema: &SchemaRef,
    line: u64,
    keys: &mut BTreeMap<String, Option<Vec<String>>>,
) -> Result<()> {
    let key = (plan.output == OutputMode::Update).then(|| {
        plan.key
            .iter()
            .map(|&i| schema.field(i).name().clone())
            .collect::<Vec<_>>()
    });
    let sorted = |k: &[String]| {
        let mut k: Vec<String> = k.iter().map(|c| c.to_ascii_lowercase()).collect();
        k.sort();
        k
    };
    if let Some(previous) = keys.get(&table.name) {
        let same = match (previous, &key) {
            (Some(a), Some(b)) => sorted(a) == sorted(b),
            (None, None) => true,
            _ => false,
        };
        if !same {
            let describe = |k: &Option<Vec<String>>| match k {
                Some(k) => format!("update mode keyed by ({})", k.join(", ")),
                None => "append mode".to_string(),
            };
            return Err(Error::Plan(format!(
                "line {line}: INSERT INTO {} writes in {}, an earlier INSERT into it in {}; every INSERT into a sink must write the same way",
                table.name,
                describe(&key),
                describe(previous)
            )));
        }
        return Ok(());
    }
    if let Some(key) = &key {
        if table.connector() == Some("table") && table.primary_key.is_empty() {
            return Err(Error::Plan(format!(
                "line {line}: INSERT INTO {} writes updates keyed by ({}), but serving table {} declares no PRIMARY KEY to upsert them by: add `PRIMARY KEY ({}) NOT ENFORCED` to its CREATE TABLE",
                table.name,
                key.join(", "),
                table.name,
                key.join(", ")
            )));
        }
        let declared: Vec<(String, Vec<String>)> = [
            ("PRIMARY KEY".to_string(), table.primary_key.clone()),
            (
                "'key.fields'".to_string(),
                table
                    .option("key.fields")
                    .map(|f| {
                        f.split([';', ','])
                            .map(|c| c.trim().to_string())
                            .filter(|c| !c.is_empty())
                            .collect()
                    })
                    .unwrap_or_default(),
            ),
        ]
        .into_iter()
        .filter(|(_, k)| !k.is_empty())
        .collect();
        for (what, declared) in declared {
            if sorted(&declared) != sorted(key) {
                return Err(Error::Plan(format!(
                    "line {line}: INSERT INTO {} writes updates keyed by ({}), but the sink declares {what} ({}); a downstream upsert needs the sink keyed by the GROUP BY columns",
                    table.name,
                    key.join(", "),
                    declared.join(", ")
                )));
            }
        }
    }
    keys.insert(table.name.clone(), key);
    Ok(())
}

/// `a, b, c`: expressions for `explain`.
fn list<T: std::fmt::Display>(items: &[T]) -> String {
    items
        .iter()
        .map(|e| e.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

fn describe(node: &Node) -> String {
    let window = |k: &WindowKind| match k {
        WindowKind::Tumble { size } => format!("TUMBLE {size} ms"),
        WindowKind::Hop { size, slide } => format!("HOP size {size} ms, slide {slide} ms"),
        WindowKind::Cumulate { step, size } => {
            format!("CUMULATE step {step} ms, size {size} ms")
        }
        WindowKind::Session { gap } => format!("SESSION gap {gap} ms"),
    };
    match node {
        Node::Filter { predicate } => format!("filter {predicate}"),
        Node::Project { exprs, .. } => format!("project {}", list(exprs)),
        Node::WindowAssign(spec) => format!(
            "window-assign {} on {}",
            window(&spec.kind),
            spec.schema.field(spec.time_column).name()
        ),
        Node::WindowAggregate(spec) | Node::RetractAggregate(spec) => format!(
            "{} group by [{}] compute [{}] ({} mode{})",
            match (&spec.window, node) {
                (_, Node::RetractAggregate(_)) => "retract-aggregate".into(),
                (Some(w), _) => format!("window-aggregate {}", window(&w.kind)),
                (None, _) => "aggregate".into(),
            },
            list(&spec.group_exprs),
            spec.calls
                .iter()
                .map(|c| format!(
                    "{:?}{}({})",
                    c.function,
                    if c.distinct { " DISTINCT" } else { "" },
                    c.arg
                ))
                .collect::<Vec<_>>()
                .join(", "),
            spec.output,
            match (spec.allowed_lateness, spec.state_ttl) {
                (_, Some(ttl)) => format!(", groups idle for {ttl} ms of event time dropped"),
                (0, None) => String::new(),
                (ms, None) => format!(", late rows accepted for {ms} ms after a window ends"),
            }
        ),
        Node::TopN(spec) => format!(
            "top-{} partition by [{}] order by [{}] ({} mode{})",
            spec.limit,
            list(&spec.partition),
            list(&spec.order),
            spec.output,
            match spec.state_ttl {
                Some(ttl) => format!(", a partition dropped when its top did not change for {ttl} ms of watermark"),
                None => String::new(),
            }
        ),
        Node::Deduplicate(spec) => format!(
            "deduplicate partition by [{}]: keep the {} row by {}{}",
            list(&spec.partition),
            if spec.keep_last { "last" } else { "first" },
            spec.time,
            match spec.state_ttl {
                Some(ttl) => format!(
                    ", a key forgotten {ttl} ms of event time after its {} row",
                    if spec.keep_last { "newest" } else { "first" }
                ),
                None => String::new(),
            }
        ),
        Node::Join(spec) => format!(
            "{} join on [{}]{}",
            match spec.kind {
                JoinKind::Inner => "inner",
                JoinKind::Left => "left",
            },
            spec.left_keys
                .iter()
                .zip(&spec.right_keys)
                .map(|(l, r)| format!("{l} = {r}"))
                .collect::<Vec<_>>()
                .join(", "),
            match (&spec.time, spec.state_ttl) {
                _ if matches!(spec.as_of, Some(AsOf::ProcessingTime)) => format!(
                    " (lookup join: each row joins the table `{}` as loaded when it arrives; in a job over logs, reloaded when its files change)",
                    spec.right_table
                ),
                _ if spec.as_of.is_some() => format!(
                    " (temporal join: each row joins the version of `{}` valid at its event time{}, once the watermark passes it)",
                    spec.right_table,
                    match &spec.as_of {
                        Some(AsOf::EventTime { left, right }) => format!(" ({left} as of {right})"),
                        _ => String::new(),
                    }
                ),
                (None, None) => " (regular join: state grows with the input)".to_string(),
                (None, Some(ttl)) =>
                    format!(" (regular join: rows idle for {ttl} ms of event time dropped)"),
                (Some(t), _) if t.window_end =>
                    format!(" in the same window (window ends {} = {})", t.left, t.right),
                (Some(t), _) => format!(
                    " where {} - {} between {} ms and {} ms (interval join)",
                    t.left, t.right, t.lower, t.upper
                ),
            }
        ),
        Node::OverAggregate(spec) => format!(
            "over-aggregate [{}] partition by [{}] order by {} {}{}",
            spec.calls
                .iter()
                .map(|(f, arg)| format!("{f:?}({arg})"))
                .collect::<Vec<_>>()
                .join(", "),
            list(&spec.partition),
            spec.time,
            match spec.frame {
                OverFrame::Range {
                    preceding: i64::MAX,
                } => "range unbounded preceding".into(),
                OverFrame::Range { preceding } => format!("range {preceding} ms preceding"),
                OverFrame::Rows {
                    preceding: u64::MAX,
                } => "rows unbounded preceding".into(),
                OverFrame::Rows { preceding } => format!("rows {preceding} preceding"),
            },
            match spec.state_ttl {
                Some(ttl) => format!(
                    ", a partition restarted {ttl} ms of event time after its newest row"
                ),
                None => String::new(),
            }
        ),
        Node::WindowRank(spec) => format!(
            "window-rank {:?} partition by [{}] order by [{}]{}",
            spec.function,
            list(&spec.partition),
            list(&spec.order),
            spec.limit
                .map(|n| format!(" keep top {n}"))
                .unwrap_or_default()
        ),
    }
}

fn indent(s: &str) -> String {
    s.lines()
        .map(|l| format!("    {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Adds the line of the table's `CREATE TABLE` to option errors.
fn at_line(e: Error, line: u64) -> Error {
    match e {
        Error::Option { table, message, .. } => Error::Option {
            table,
            message,
            line: Some(line),
        },
        other => other,
    }
}

fn table_list(def: &PipelineDef) -> String {
    def.tables
        .iter()
        .map(|t| t.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// `1234567` → `1.2 MB`.
fn human_bytes(n: usize) -> String {
    let n = n as f64;
    match n {
        n if n >= 1e9 => format!("{:.1} GB", n / 1e9),
        n if n >= 1e6 => format!("{:.1} MB", n / 1e6),
        n if n >= 1e3 => format!("{:.1} kB", n / 1e3),
        n => format!("{n} B"),
    }
}

fn new_run_id() -> String {
    let now = chrono::Utc::now();
    format!(
        "{}-{:04x}",
        now.format("%Y%m%dT%H%M%S%.3fZ"),
        std::process::id() & 0xffff
    )
}

struct SharedBuf(Arc<Mutex<Vec<u8>>>);

impl Write for SharedBuf {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .map_err(|_| std::io::Error::other("poisoned"))?
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
