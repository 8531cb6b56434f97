//! Sinks: where the rows of an `INSERT` go.
//!
//! * `connector = 'files'`: CSV, JSON lines or Parquet files, optionally in Hive partition
//!   folders (`partition-by`). Files are written into a hidden staging folder inside the table's
//!   folder as batches arrive and renamed into place when published.
//! * `connector = 'log'`: records of a topic of the embedded log (`log_sink.rs`).
//! * `connector = 'print'`: a pretty table or JSON lines on standard output.
//! * `connector = 'blackhole'`: rows are counted and dropped (Flink's, for benchmarks).
//! * `connector = 'table'`: a serving table in an embedded store, upserted by its PRIMARY KEY
//!   or appended (`serving.rs`).
//!
//! # Two phases
//!
//! Every sink publishes in two steps: [`Sink::prepare`] makes what was written since the last
//! prepare durable but invisible and describes it as a [`Prepared`] (which the runtime stores in
//! its checkpoint); [`Sink::publish`] makes it visible, idempotently. [`SinkMode`] says how the
//! sink is used:
//!
//! * [`SinkMode::Run`] (batch): one [`Sink::commit`] at the end of the run. A files sink
//!   *replaces* what it writes: `<path>/.staging-<run_id>/` holds the run's files, and each
//!   written partition folder (or, unpartitioned, the table's `part-*` files as a whole) is
//!   replaced at commit, with deterministic names (`part-00000.<ext>`).
//! * [`SinkMode::Epochs`] (stream, exactly-once): output is cut into checkpoint epochs and
//!   *appended*. A files sink writes into `<path>/.staging-<job>/` and publishes each epoch's
//!   files as `part-<epoch:010>-0.<ext>` (in their partition folder), by rename; it never deletes
//!   or replaces a file of another epoch. A log sink stages each epoch's encoded records in a
//!   file in the job's `staging` folder and appends them at publish, checking each partition's
//!   end offset so that a publish repeated after a crash appends only what is missing.
//!   [`open_sink`] first publishes the `resume` epoch (the last completed checkpoint), then
//!   removes every other staged output of the job: epochs after the checkpoint are replayed by
//!   the runtime under the same numbers. Dropping an `Epochs` sink is like a crash: what it
//!   staged stays for the next [`open_sink`] to publish or remove.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{RecordBatch, UInt32Array};
use arrow::compute::take_record_batch;
use arrow::datatypes::{Schema, SchemaRef};
use arrow::util::display::{ArrayFormatter, FormatOptions};
use flowline_core::{Error, Result, TableDef};
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use serde::{Deserialize, Serialize};

use crate::hive;
use crate::log_sink::{self, LogConfig, LogSink};
use crate::options::{self, FileFormat};
use crate::serving::{self, TableSink};

const CONNECTORS: &[&str] = &["files", "print", "log", "blackhole", "table"];
const FILE_SINK_OPTIONS: &[&str] = &[
    "connector",
    "path",
    "format",
    "partition-by",
    "csv.header",
    "csv.field-delimiter",
];
const PRINT_SINK_OPTIONS: &[&str] = &["connector", "format"];
const PRINT_FORMATS: &[&str] = &["table", "json"];

/// One file published by a sink.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrittenFile {
    /// The final, published path.
    pub path: String,
    pub rows: u64,
    pub bytes: u64,
}

/// What a sink published.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SinkCommit {
    pub rows: u64,
    pub files: Vec<WrittenFile>,
}

/// One staged file of a prepared files epoch. Paths are relative to the table's folder (the
/// sink's `path`), with `/` separators.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreparedFile {
    /// Where the file waits, e.g. `.staging-<job>/e0000000007-0.csv`.
    pub staged: String,
    /// Where it is published, e.g. `day=2026-03-16/part-0000000007-0.csv`.
    pub target: String,
    pub rows: u64,
}

/// The records a prepared log epoch appends to one partition: offsets
/// `base_offset .. base_offset + records`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreparedPartition {
    pub partition: u32,
    pub base_offset: u64,
    pub records: u64,
}

/// What [`Sink::prepare`] staged: enough to publish it, idempotently, from a newly opened sink
/// after a crash. Stored by the runtime in its (JSON) checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "sink", rename_all = "snake_case")]
pub enum Prepared {
    /// A print sink: the rows are on standard output already (print is not exactly-once); also
    /// a blackhole sink, whose rows are gone.
    Print { epoch: u64, rows: u64 },
    /// A files sink: the epoch's staged files and where they go (none for an empty epoch).
    Files {
        epoch: u64,
        files: Vec<PreparedFile>,
    },
    /// A log sink: the file (a name in the sink's staging folder) holding the epoch's encoded
    /// records, and where each partition's records go. `staged` is `None` for an empty epoch.
    Log {
        epoch: u64,
        topic: String,
        staged: Option<String>,
        partitions: Vec<PreparedPartition>,
    },
    /// A serving table: the epoch's changes are staged in its store (`rows` of them).
    Table { epoch: u64, rows: u64 },
}

impl Prepared {
    /// The checkpoint epoch this output belongs to.
    pub fn epoch(&self) -> u64 {
        match self {
            Prepared::Print { epoch, .. }
            | Prepared::Files { epoch, .. }
            | Prepared::Log { epoch, .. }
            | Prepared::Table { epoch, .. } => *epoch,
        }
    }

    /// Rows (records) of the epoch.
    pub fn rows(&self) -> u64 {
        match self {
            Prepared::Print { rows, .. } | Prepared::Table { rows, .. } => *rows,
            Prepared::Files { files, .. } => files.iter().map(|f| f.rows).sum(),
            Prepared::Log { partitions, .. } => partitions.iter().map(|p| p.records).sum(),
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            Prepared::Print { .. } => "print",
            Prepared::Files { .. } => "files",
            Prepared::Log { .. } => "log",
            Prepared::Table { .. } => "table",
        }
    }
}

/// Where and how a sink is opened.
#[derive(Debug, Clone, PartialEq)]
pub struct SinkContext {
    /// The pipeline's folder; relative paths resolve against it.
    pub base_dir: PathBuf,
    /// The default log folder of `connector = 'log'` tables without `log.dir` (see
    /// [`crate::log_dir`]).
    pub log_dir: PathBuf,
    pub mode: SinkMode,
    /// A batch run of corrections: a serving table replaces only its rows in this time range
    /// (other sinks refuse it when opened).
    pub slice: Option<TimeRange>,
}

/// A half-open range of event time, `[from_ms, to_ms)`, and the column of a sink it applies to
/// (`None`: the sink's first date or timestamp column).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimeRange {
    pub from_ms: i64,
    pub to_ms: i64,
    pub column: Option<String>,
}

impl TimeRange {
    /// Which rows of a date or timestamp column fall in the range (nulls do not).
    pub fn mask(&self, column: &arrow::array::ArrayRef) -> Result<arrow::array::BooleanArray> {
        use arrow::array::Array;
        use arrow::datatypes::{DataType, TimeUnit};
        let ms = arrow::compute::cast(column, &DataType::Timestamp(TimeUnit::Millisecond, None))?;
        let ms = arrow::compute::cast(&ms, &DataType::Int64)?;
        let ms = ms
            .as_any()
            .downcast_ref::<arrow::array::Int64Array>()
            .ok_or_else(|| Error::Internal("time column is not a time".into()))?;
        Ok((0..ms.len())
            .map(|i| {
                Some(ms.is_valid(i) && ms.value(i) >= self.from_ms && ms.value(i) < self.to_ms)
            })
            .collect())
    }
}

/// How the runtime drives a sink.
#[derive(Debug, Clone, PartialEq)]
pub enum SinkMode {
    /// Batch: one commit at the end of the run; file sinks replace what they write. `job`
    /// names the pipeline (a serving table refuses a batch run of another pipeline than the one
    /// that writes it).
    Run { run_id: String, job: String },
    /// Stream / micro-batch, exactly-once: output is published per checkpoint epoch and
    /// appended. `job` names the pipeline (unique staging names); `staging` is a private folder
    /// under the job's state directory the sink may use; `resume` is the [`Prepared`] of the last
    /// completed checkpoint, which [`open_sink`] publishes (idempotently) before anything else,
    /// after which it removes every other leftover staged output of this job (epochs after the
    /// checkpoint, written before a crash).
    Epochs {
        job: String,
        staging: PathBuf,
        resume: Option<Prepared>,
    },
}

pub trait Sink: Send {
    fn write(&mut self, batch: &RecordBatch) -> Result<()>;
    /// Makes everything written since the last prepare durable but not yet visible, as the
    /// output of checkpoint `epoch`. The runtime stores the returned value in the checkpoint.
    fn prepare(&mut self, epoch: u64) -> Result<Prepared>;
    /// Makes a prepared epoch visible. Idempotent: after a crash the runtime calls it again, on
    /// a newly opened sink, with the `Prepared` read back from the last checkpoint.
    fn publish(&mut self, prepared: &Prepared) -> Result<SinkCommit>;
    /// Whole-run commit (batch): prepare then publish.
    fn commit(&mut self) -> Result<SinkCommit> {
        let p = self.prepare(0)?;
        self.publish(&p)
    }
}

/// An error for a `Prepared` of another kind of sink than the one it is given to.
pub(crate) fn wrong_prepared(table: &str, expected: &str, got: &Prepared) -> Error {
    Error::Internal(format!(
        "sink `{table}` is a {expected} sink but was given the prepared output of a {} sink \
         (epoch {}); was the table's connector changed while a job was stopped?",
        got.kind(),
        got.epoch()
    ))
}

/// Letters, digits, `-` and `_` of `name`, others replaced by `_` (for file names).
pub(crate) fn safe_name(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Syncs a folder, so that the names created or renamed in it survive a crash.
/// Removes the entries of `dir` whose name `matches` (folders with their contents).
pub(crate) fn remove_entries(dir: &Path, matches: impl Fn(&str) -> bool) -> Result<()> {
    let entries = fs::read_dir(dir).map_err(|e| Error::io("read", dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| Error::io("read", dir, e))?;
        if !matches(&entry.file_name().to_string_lossy()) {
            continue;
        }
        let path = entry.path();
        let removed = if entry.file_type().is_ok_and(|t| t.is_dir()) {
            fs::remove_dir_all(&path)
        } else {
            fs::remove_file(&path)
        };
        removed.map_err(|e| Error::io("remove", &path, e))?;
    }
    Ok(())
}

pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    #[cfg(unix)]
    {
        File::open(dir)
            .and_then(|f| f.sync_all())
            .map_err(|e| Error::io("sync", dir, e))?;
    }
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

/// Renames, with an error naming both paths.
fn rename(from: &Path, to: &Path) -> Result<()> {
    fs::rename(from, to).map_err(|e| {
        Error::io(
            "rename",
            from,
            std::io::Error::new(e.kind(), format!("to `{}`: {e}", to.display())),
        )
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PrintFormat {
    Table,
    Json,
    /// `connector = 'blackhole'` (Flink's): rows are counted and dropped.
    Discard,
}

#[derive(Debug, Clone)]
struct FileConfig {
    path: String,
    format: FileFormat,
    partition_by: Vec<String>,
    csv_header: bool,
    delimiter: u8,
}

#[derive(Debug, Clone)]
enum SinkConfig {
    Files(FileConfig),
    Print(PrintFormat),
    Log(LogConfig),
    Table,
}

fn parse_sink(def: &TableDef) -> Result<SinkConfig> {
    match options::connector(def, CONNECTORS)? {
        "print" => {
            options::check_known(def, PRINT_SINK_OPTIONS)?;
            let format = match def.option("format") {
                None => PrintFormat::Table,
                Some(f) if f.eq_ignore_ascii_case("table") => PrintFormat::Table,
                Some(f) if f.eq_ignore_ascii_case("json") => PrintFormat::Json,
                Some(f) => {
                    return Err(Error::option(
                        &def.name,
                        format!(
                            "unknown format '{f}' in option `format` for connector 'print' \
                             (valid formats: {})",
                            options::quoted_list(PRINT_FORMATS)
                        ),
                    ))
                }
            };
            Ok(SinkConfig::Print(format))
        }
        "blackhole" => {
            options::check_known(def, &["connector"])?;
            Ok(SinkConfig::Print(PrintFormat::Discard))
        }
        "log" => Ok(SinkConfig::Log(log_sink::parse(def)?)),
        "table" => {
            serving::parse_config(def)?;
            Ok(SinkConfig::Table)
        }
        _ => {
            options::check_known(def, FILE_SINK_OPTIONS)?;
            let path = options::required(def, "path")?.to_string();
            let format = options::file_format(def)?;
            if format != FileFormat::Csv {
                options::check_no_csv_options(def, format.extension())?;
            }
            let partition_by =
                options::column_list(def, "partition-by", &[','], "comma-separated column names")?;
            Ok(SinkConfig::Files(FileConfig {
                path,
                format,
                partition_by,
                csv_header: options::bool_option(def, "csv.header", true)?,
                delimiter: options::char_option(def, "csv.field-delimiter", b',')?,
            }))
        }
    }
}

/// Fails unless a folder can be created at `root`: every part of the path that already exists
/// must be a folder.
fn check_creatable(root: &Path) -> Result<()> {
    for ancestor in root.ancestors() {
        if ancestor.as_os_str().is_empty() {
            break;
        }
        match fs::metadata(ancestor) {
            Ok(meta) if meta.is_dir() => return Ok(()),
            Ok(_) => {
                return Err(Error::io(
                    "create",
                    root,
                    std::io::Error::other(format!(
                        "`{}` exists and is not a folder",
                        ancestor.display()
                    )),
                ))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(Error::io("create", root, e)),
        }
    }
    Ok(())
}

/// Checks connector and options and (for files) that the parent of `path` can be created,
/// before any data moves.
///
/// A relative `path` is relative to the pipeline's base folder, which this function does not
/// know: for it only the options are checked here, and [`open_sink`] checks the folder (before
/// any data is written). Likewise a log table's topic is looked up by [`open_sink`], which knows
/// the log folder.
pub fn validate_sink_options(def: &TableDef) -> Result<()> {
    if let SinkConfig::Files(config) = parse_sink(def)? {
        let path = Path::new(&config.path);
        if path.is_absolute() {
            check_creatable(path)?;
        }
    }
    Ok(())
}

/// A corrections run (`--from/--to`) writes only serving tables: only they can replace a time
/// range of their rows. Checked when the pipeline opens and again when its sinks do.
pub fn check_corrections_sink(def: &TableDef) -> Result<()> {
    if matches!(parse_sink(def)?, SinkConfig::Table) {
        return Ok(());
    }
    let what = match def.connector() {
        Some(c) => format!("a '{c}' table"),
        None => "a table without a 'connector' option".to_string(),
    };
    Err(Error::Plan(format!(
        "corrections replace a time range of serving tables; sink `{}` is {what}: run the \
         corrections from a pipeline whose INSERTs all write serving tables ('connector' = \
         'table'), or run without --from/--to",
        def.name
    )))
}

/// Opens the sink of table `def`. `schema` is the schema of the rows the pipeline will write.
/// `stdout` is where the print sink writes (the runtime passes std::io::stdout(); tests pass a
/// buffer).
///
/// Everything that can be wrong with the options, the paths or the topic fails here, before any
/// data moves. In [`SinkMode::Epochs`] this also publishes `resume` and removes the job's other
/// staged output.
pub fn open_sink(
    def: &TableDef,
    schema: SchemaRef,
    ctx: &SinkContext,
    stdout: Box<dyn std::io::Write + Send>,
) -> Result<Box<dyn Sink>> {
    let config = parse_sink(def)?;
    if ctx.slice.is_some() {
        check_corrections_sink(def)?;
    }
    match config {
        SinkConfig::Print(format) => {
            if let SinkMode::Epochs {
                resume:
                    Some(
                        p
                        @ (Prepared::Files { .. } | Prepared::Log { .. } | Prepared::Table { .. }),
                    ),
                ..
            } = &ctx.mode
            {
                return Err(wrong_prepared(&def.name, "print", p));
            }
            Ok(Box::new(PrintSink {
                table: def.name.clone(),
                out: stdout,
                format,
                rows: 0,
            }))
        }
        SinkConfig::Files(config) => Ok(Box::new(FileSink::open(def, config, schema, ctx)?)),
        SinkConfig::Log(config) => Ok(Box::new(LogSink::open(def, config, schema, ctx)?)),
        SinkConfig::Table => Ok(Box::new(TableSink::open(def, schema, ctx)?)),
    }
}

// -------------------------------------------------------------------- print

struct PrintSink {
    table: String,
    out: Box<dyn Write + Send>,
    format: PrintFormat,
    /// Rows written since the last prepare.
    rows: u64,
}

impl PrintSink {
    fn io(e: std::io::Error) -> Error {
        Error::io("write", "<stdout>", e)
    }
}

impl Sink for PrintSink {
    fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        match self.format {
            PrintFormat::Table => {
                let table =
                    arrow::util::pretty::pretty_format_batches(std::slice::from_ref(batch))?;
                writeln!(self.out, "{table}").map_err(Self::io)?;
            }
            PrintFormat::Json => {
                let mut writer = arrow::json::LineDelimitedWriter::new(&mut self.out);
                writer.write(batch)?;
                writer.finish()?;
            }
            PrintFormat::Discard => {}
        }
        self.out.flush().map_err(Self::io)?;
        self.rows += batch.num_rows() as u64;
        Ok(())
    }

    fn prepare(&mut self, epoch: u64) -> Result<Prepared> {
        self.out.flush().map_err(Self::io)?;
        Ok(Prepared::Print {
            epoch,
            rows: std::mem::take(&mut self.rows),
        })
    }

    fn publish(&mut self, prepared: &Prepared) -> Result<SinkCommit> {
        match prepared {
            Prepared::Print { rows, .. } => Ok(SinkCommit {
                rows: *rows,
                files: Vec::new(),
            }),
            other => Err(wrong_prepared(&self.table, "print", other)),
        }
    }
}

// -------------------------------------------------------------------- files

/// An open data file in the staging folder.
enum FormatWriter {
    Csv(arrow::csv::Writer<BufWriter<File>>),
    Json(arrow::json::LineDelimitedWriter<BufWriter<File>>),
    Parquet(Box<ArrowWriter<BufWriter<File>>>),
}

struct PartWriter {
    /// Where the file is being written (inside the staging folder).
    path: PathBuf,
    /// `path` relative to the table's folder, `/`-separated.
    rel: String,
    writer: FormatWriter,
    rows: u64,
}

fn write_error(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::io("write", path, std::io::Error::other(e.to_string()))
}

impl PartWriter {
    fn create(root: &Path, rel: String, config: &FileConfig, schema: &SchemaRef) -> Result<Self> {
        let path = root.join(&rel);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).map_err(|e| Error::io("create", parent, e))?;
        }
        let file = File::create(&path).map_err(|e| Error::io("create", &path, e))?;
        let out = BufWriter::with_capacity(1 << 16, file);
        let writer = match config.format {
            FileFormat::Csv => FormatWriter::Csv(
                arrow::csv::WriterBuilder::new()
                    .with_header(config.csv_header)
                    .with_delimiter(config.delimiter)
                    .build(out),
            ),
            FileFormat::Json => FormatWriter::Json(arrow::json::LineDelimitedWriter::new(out)),
            FileFormat::Parquet => {
                let props = WriterProperties::builder()
                    .set_compression(Compression::SNAPPY)
                    .build();
                let writer = ArrowWriter::try_new(out, Arc::clone(schema), Some(props))
                    .map_err(|e| write_error(&path, e))?;
                FormatWriter::Parquet(Box::new(writer))
            }
        };
        Ok(PartWriter {
            path,
            rel,
            writer,
            rows: 0,
        })
    }

    fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        let result = match &mut self.writer {
            FormatWriter::Csv(w) => w.write(batch).map_err(|e| e.to_string()),
            FormatWriter::Json(w) => w.write(batch).map_err(|e| e.to_string()),
            FormatWriter::Parquet(w) => w.write(batch).map_err(|e| e.to_string()),
        };
        result.map_err(|e| write_error(&self.path, e))?;
        self.rows += batch.num_rows() as u64;
        Ok(())
    }

    /// Finishes the file and flushes it to disk.
    fn close(self) -> Result<()> {
        let path = self.path;
        let out = match self.writer {
            FormatWriter::Csv(w) => w.into_inner(),
            FormatWriter::Json(mut w) => {
                w.finish().map_err(|e| write_error(&path, e))?;
                w.into_inner()
            }
            FormatWriter::Parquet(w) => w.into_inner().map_err(|e| write_error(&path, e))?,
        };
        let file = out
            .into_inner()
            .map_err(|e| Error::io("write", &path, e.into_error()))?;
        file.sync_all().map_err(|e| Error::io("write", &path, e))
    }
}

/// `a/b` joined with `/`, or `b` alone when `a` is empty.
fn join_rel(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_string()
    } else {
        format!("{dir}/{name}")
    }
}

enum FileMode {
    /// Batch: `<staging>/data` holds the run's files, laid out as they will be published.
    Run {
        /// Folders this sink created, deepest first: an abandoned run removes them again.
        created_dirs: Vec<PathBuf>,
        prepared: bool,
        committed: bool,
    },
    /// Stream: `<staging>/w-<n>.<ext>` are the files of the epoch being written; prepare renames
    /// them to `<staging>/e<epoch:010>-<n>.<ext>`.
    Epochs { next_file: u64 },
}

struct FileSink {
    table: String,
    config: FileConfig,
    mode: FileMode,
    /// The table's folder.
    root: PathBuf,
    /// `.staging-<run_id>` (run) or `.staging-<job>` (epochs): a hidden folder in `root`.
    staging_name: String,
    /// `<root>/<staging_name>`.
    staging: PathBuf,
    /// Positions of the partition columns in the written rows.
    partition_cols: Vec<usize>,
    /// Positions of the other columns, and their schema (what goes into the files).
    data_cols: Vec<usize>,
    data_schema: SchemaRef,
    /// Number of columns of the written rows.
    columns: usize,
    /// Open writers by partition folder (`a=1/b=x`; empty when unpartitioned).
    writers: BTreeMap<String, PartWriter>,
}

impl FileSink {
    fn open(
        def: &TableDef,
        config: FileConfig,
        schema: SchemaRef,
        ctx: &SinkContext,
    ) -> Result<FileSink> {
        let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        let partition_cols =
            options::column_positions(def, "partition-by", &config.partition_by, &names)?;
        let data_cols: Vec<usize> = (0..names.len())
            .filter(|i| !partition_cols.contains(i))
            .collect();
        if data_cols.is_empty() && !partition_cols.is_empty() {
            return Err(Error::option(
                &def.name,
                "option `partition-by` names every column: at least one column must be left \
                 to write into the files",
            ));
        }
        let data_schema = Arc::new(Schema::new_with_metadata(
            data_cols
                .iter()
                .map(|&i| schema.field(i).clone())
                .collect::<Vec<_>>(),
            schema.metadata().clone(),
        ));

        let path = Path::new(&config.path);
        let root = if path.is_absolute() {
            path.to_path_buf()
        } else {
            ctx.base_dir.join(path)
        };
        check_creatable(&root)?;
        let created_dirs: Vec<PathBuf> = root
            .ancestors()
            .take_while(|p| !p.as_os_str().is_empty() && !p.exists())
            .map(Path::to_path_buf)
            .collect();
        let (staging_name, mode) = match &ctx.mode {
            SinkMode::Run { run_id, .. } => (
                format!(".staging-{}", safe_name(run_id)),
                FileMode::Run {
                    created_dirs,
                    prepared: false,
                    committed: false,
                },
            ),
            SinkMode::Epochs { job, .. } => (
                format!(".staging-{}", safe_name(job)),
                FileMode::Epochs { next_file: 0 },
            ),
        };
        let staging = root.join(&staging_name);
        let mut sink = FileSink {
            table: def.name.clone(),
            config,
            mode,
            root,
            staging_name,
            staging,
            partition_cols,
            data_cols,
            data_schema,
            columns: names.len(),
            writers: BTreeMap::new(),
        };
        match &ctx.mode {
            SinkMode::Run { .. } => {
                if sink.staging.exists() {
                    fs::remove_dir_all(&sink.staging)
                        .map_err(|e| Error::io("remove", &sink.staging, e))?;
                }
                let data_dir = sink.staging.join("data");
                fs::create_dir_all(&data_dir).map_err(|e| Error::io("create", &data_dir, e))?;
            }
            SinkMode::Epochs { resume, .. } => {
                fs::create_dir_all(&sink.staging)
                    .map_err(|e| Error::io("create", &sink.staging, e))?;
                if let Some(prepared) = resume {
                    sink.publish_epoch(prepared)?;
                    // Published epochs after the resumed checkpoint exist only when the job fell
                    // back past a corrupt newest checkpoint: the replay writes them again.
                    remove_epochs_after(&sink.root, prepared.epoch())?;
                }
                sink.clear_staging()?;
            }
        }
        Ok(sink)
    }

    fn write_part(&mut self, key: &str, batch: &RecordBatch) -> Result<()> {
        if !self.writers.contains_key(key) {
            let ext = self.config.format.extension();
            let rel = match &mut self.mode {
                FileMode::Run { .. } => {
                    let data = format!("{}/data", self.staging_name);
                    join_rel(&join_rel(&data, key), &format!("part-00000.{ext}"))
                }
                FileMode::Epochs { next_file } => {
                    *next_file += 1;
                    format!("{}/w-{:06}.{ext}", self.staging_name, *next_file - 1)
                }
            };
            let writer = PartWriter::create(&self.root, rel, &self.config, &self.data_schema)?;
            self.writers.insert(key.to_string(), writer);
        }
        self.writers
            .get_mut(key)
            .expect("writer just inserted")
            .write(batch)
    }

    /// The data columns of `batch`, in the data schema.
    fn data_batch(&self, batch: &RecordBatch) -> Result<RecordBatch> {
        let columns = self
            .data_cols
            .iter()
            .map(|&i| Arc::clone(batch.column(i)))
            .collect();
        Ok(RecordBatch::try_new(
            Arc::clone(&self.data_schema),
            columns,
        )?)
    }

    /// Closes (and syncs) the open files: (partition folder, staged file, rows).
    fn close_writers(&mut self) -> Result<Vec<(String, String, u64)>> {
        let writers = std::mem::take(&mut self.writers);
        let mut closed = Vec::with_capacity(writers.len());
        for (key, writer) in writers {
            let rows = writer.rows;
            let rel = writer.rel.clone();
            writer.close()?;
            closed.push((key, rel, rows));
        }
        Ok(closed)
    }

    fn written(&self, files: &[PreparedFile]) -> Result<Vec<WrittenFile>> {
        files
            .iter()
            .map(|f| {
                let path = self.root.join(&f.target);
                let bytes = fs::metadata(&path)
                    .map_err(|e| Error::io("read", &path, e))?
                    .len();
                Ok(WrittenFile {
                    path: path.display().to_string(),
                    rows: f.rows,
                    bytes,
                })
            })
            .collect()
    }

    // ------------------------------------------------------------ run mode

    /// Moves the run's staged files into place: each written partition folder replaces the
    /// folder of the same name; unpartitioned, the new files replace the table's `part-*` files.
    fn publish_run(&mut self, files: &[PreparedFile]) -> Result<Vec<WrittenFile>> {
        fs::create_dir_all(&self.root).map_err(|e| Error::io("create", &self.root, e))?;
        let old_dir = self.staging.join("old");
        if self.partition_cols.is_empty() {
            // The new files replace the old ones by rename (atomic per file), then old data
            // files without a new counterpart are removed.
            let mut published = Vec::new();
            for f in files {
                rename(&self.root.join(&f.staged), &self.root.join(&f.target))?;
                published.push(f.target.clone());
            }
            let entries = fs::read_dir(&self.root).map_err(|e| Error::io("read", &self.root, e))?;
            for entry in entries {
                let entry = entry.map_err(|e| Error::io("read", &self.root, e))?;
                let name = entry.file_name().to_string_lossy().into_owned();
                if name.starts_with("part-")
                    && !published.contains(&name)
                    && entry.file_type().is_ok_and(|t| t.is_file())
                {
                    fs::remove_file(entry.path())
                        .map_err(|e| Error::io("remove", entry.path(), e))?;
                }
            }
        } else {
            // Each written partition folder replaces the folder of the same name; the others
            // are left as they are.
            for (i, f) in files.iter().enumerate() {
                let staged = self.root.join(&f.staged);
                let target = self.root.join(&f.target);
                let (Some(staged_dir), Some(target_dir)) = (staged.parent(), target.parent())
                else {
                    return Err(Error::Internal(format!(
                        "partitioned file without folder: {f:?}"
                    )));
                };
                if fs::symlink_metadata(target_dir).is_ok() {
                    fs::create_dir_all(&old_dir).map_err(|e| Error::io("create", &old_dir, e))?;
                    rename(target_dir, &old_dir.join(i.to_string()))?;
                }
                if let Some(parent) = target_dir.parent() {
                    fs::create_dir_all(parent).map_err(|e| Error::io("create", parent, e))?;
                }
                rename(staged_dir, target_dir)?;
            }
        }
        self.written(files)
    }

    /// Removes this run's staging folder and any left by earlier runs that crashed.
    fn remove_staging(&self) -> Result<()> {
        remove_entries(&self.root, |name| name.starts_with(".staging-"))
    }

    // ------------------------------------------------------------ epochs mode

    /// Renames an epoch's staged files into place. A file whose target exists and whose staged
    /// file is gone was published before (a crash after part of a publish): skipped.
    fn publish_epoch(&mut self, prepared: &Prepared) -> Result<Vec<WrittenFile>> {
        let Prepared::Files { epoch, files } = prepared else {
            return Err(wrong_prepared(&self.table, "files", prepared));
        };
        let mut renamed_into: Vec<PathBuf> = Vec::new();
        for f in files {
            let staged = self.root.join(&f.staged);
            let target = self.root.join(&f.target);
            let staged_exists = fs::symlink_metadata(&staged).is_ok();
            let target_exists = fs::symlink_metadata(&target).is_ok();
            match (staged_exists, target_exists) {
                (true, false) => {
                    let parent = target.parent().unwrap_or(&self.root).to_path_buf();
                    fs::create_dir_all(&parent).map_err(|e| Error::io("create", &parent, e))?;
                    rename(&staged, &target)?;
                    if !renamed_into.contains(&parent) {
                        renamed_into.push(parent);
                    }
                }
                (false, true) => {} // published before a crash
                (true, true) => return Err(self.target_exists(*epoch, &target)),
                (false, false) => {
                    return Err(Error::io(
                        "publish",
                        &staged,
                        std::io::Error::new(
                            std::io::ErrorKind::NotFound,
                            format!(
                                "the staged file of epoch {epoch} of table `{}` is gone and its \
                                 target `{}` does not exist: the output of this checkpoint is \
                                 lost (was the table's folder or `path` changed?)",
                                self.table,
                                target.display()
                            ),
                        ),
                    ))
                }
            }
        }
        for dir in &renamed_into {
            sync_dir(dir)?;
        }
        if !renamed_into.is_empty() {
            sync_dir(&self.staging)?;
        }
        self.written(files)
    }

    fn target_exists(&self, epoch: u64, target: &Path) -> Error {
        Error::Plan(format!(
            "cannot publish epoch {epoch} of table `{}`: `{}` already exists. It was written by \
             another run of this job whose checkpoints are gone; files of other epochs are never \
             replaced: move the old output away or write to another `path`",
            self.table,
            target.display()
        ))
    }

    /// Removes everything in the job's staging folder.
    fn clear_staging(&self) -> Result<()> {
        remove_entries(&self.staging, |_| true)?;
        sync_dir(&self.staging)
    }
}

impl Sink for FileSink {
    fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        match &self.mode {
            FileMode::Run { prepared: true, .. } => {
                return Err(Error::Internal("write after commit".into()))
            }
            // An empty epoch publishes no files.
            FileMode::Epochs { .. } if batch.num_rows() == 0 => return Ok(()),
            _ => {}
        }
        if batch.num_columns() != self.columns {
            return Err(Error::Internal(format!(
                "sink got a batch of {} columns, expected {}",
                batch.num_columns(),
                self.columns
            )));
        }
        let data = self.data_batch(batch)?;
        if self.partition_cols.is_empty() {
            return self.write_part("", &data);
        }
        if batch.num_rows() == 0 {
            return Ok(());
        }

        let options = FormatOptions::default();
        let formatters = self
            .partition_cols
            .iter()
            .map(|&i| ArrayFormatter::try_new(batch.column(i).as_ref(), &options))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let names: Vec<&String> = self
            .partition_cols
            .iter()
            .map(|&i| batch.schema_ref().field(i).name())
            .collect();
        let mut groups: BTreeMap<String, Vec<u32>> = BTreeMap::new();
        let mut key = String::new();
        let mut value = String::new();
        for row in 0..batch.num_rows() {
            key.clear();
            for (c, (formatter, name)) in formatters.iter().zip(&names).enumerate() {
                if c > 0 {
                    key.push('/');
                }
                hive::encode_into(name, &mut key);
                key.push('=');
                if batch.column(self.partition_cols[c]).is_null(row) {
                    key.push_str(hive::DEFAULT_PARTITION);
                } else {
                    value.clear();
                    use std::fmt::Write as _;
                    let _ = write!(value, "{}", formatter.value(row));
                    hive::encode_into(&value, &mut key);
                }
            }
            match groups.get_mut(key.as_str()) {
                Some(rows) => rows.push(row as u32),
                None => {
                    groups.insert(key.clone(), vec![row as u32]);
                }
            }
        }
        for (key, rows) in groups {
            if rows.len() == data.num_rows() {
                self.write_part(&key, &data)?;
            } else {
                let part = take_record_batch(&data, &UInt32Array::from(rows))?;
                self.write_part(&key, &part)?;
            }
        }
        Ok(())
    }

    fn prepare(&mut self, epoch: u64) -> Result<Prepared> {
        let ext = self.config.format.extension();
        match &self.mode {
            FileMode::Run { prepared, .. } => {
                if *prepared {
                    return Err(Error::Internal(
                        "a run-mode sink is prepared once, at the end of the run".into(),
                    ));
                }
                if self.partition_cols.is_empty() && self.writers.is_empty() {
                    // An empty table still gets a valid file, so readers see its schema.
                    let empty = RecordBatch::new_empty(Arc::clone(&self.data_schema));
                    self.write_part("", &empty)?;
                }
                let files = self
                    .close_writers()?
                    .into_iter()
                    .map(|(key, staged, rows)| PreparedFile {
                        staged,
                        target: join_rel(&key, &format!("part-00000.{ext}")),
                        rows,
                    })
                    .collect();
                if let FileMode::Run { prepared, .. } = &mut self.mode {
                    *prepared = true;
                }
                Ok(Prepared::Files { epoch, files })
            }
            FileMode::Epochs { .. } => {
                let mut files = Vec::new();
                for (n, (key, written, rows)) in self.close_writers()?.into_iter().enumerate() {
                    let target = join_rel(&key, &format!("part-{epoch:010}-0.{ext}"));
                    let path = self.root.join(&target);
                    if fs::symlink_metadata(&path).is_ok() {
                        return Err(self.target_exists(epoch, &path));
                    }
                    // Named by epoch: a newer sink never reuses the staged name of a checkpoint
                    // it may be asked to resume (it only prepares later epochs).
                    let staged = format!("{}/e{epoch:010}-{n}.{ext}", self.staging_name);
                    rename(&self.root.join(&written), &self.root.join(&staged))?;
                    files.push(PreparedFile {
                        staged,
                        target,
                        rows,
                    });
                }
                if !files.is_empty() {
                    sync_dir(&self.staging)?;
                }
                Ok(Prepared::Files { epoch, files })
            }
        }
    }

    fn publish(&mut self, prepared: &Prepared) -> Result<SinkCommit> {
        let files = match &self.mode {
            FileMode::Run { committed, .. } => {
                let Prepared::Files { files, .. } = prepared else {
                    return Err(wrong_prepared(&self.table, "files", prepared));
                };
                if *committed {
                    return Err(Error::Internal("sink committed twice".into()));
                }
                let written = self.publish_run(files)?;
                if let FileMode::Run { committed, .. } = &mut self.mode {
                    *committed = true;
                }
                self.remove_staging()?;
                written
            }
            FileMode::Epochs { .. } => self.publish_epoch(prepared)?,
        };
        Ok(SinkCommit {
            rows: files.iter().map(|f| f.rows).sum(),
            files,
        })
    }
}

impl Drop for FileSink {
    fn drop(&mut self) {
        if let FileMode::Epochs { .. } = self.mode {
            // Like a crash: staged files stay for the next open to publish or remove. Only an
            // empty staging folder is removed (remove_dir fails on anything else).
            self.writers.clear();
            let _ = fs::remove_dir(&self.staging);
        }
        if let FileMode::Run {
            committed: false,
            created_dirs,
            ..
        } = &self.mode
        {
            // An abandoned run leaves nothing behind (a crash leaves the staging folder, which
            // the next commit removes).
            let _ = fs::remove_dir_all(&self.staging);
            for dir in created_dirs {
                // remove_dir only removes empty folders: nothing else is touched.
                let _ = fs::remove_dir(dir);
            }
        }
    }
}

/// Removes published epoch files (`part-<epoch>-<n>.<ext>`, any partition folder) of epochs
/// after `epoch`. Hidden folders (staging) are skipped.
fn remove_epochs_after(root: &Path, epoch: u64) -> Result<()> {
    let entries = match fs::read_dir(root) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io("read", root, e)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| Error::io("read", root, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        let path = entry.path();
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            remove_epochs_after(&path, epoch)?;
            continue;
        }
        let file_epoch = name
            .strip_prefix("part-")
            .and_then(|rest| rest.split('-').next())
            .filter(|digits| digits.len() == 10)
            .and_then(|digits| digits.parse::<u64>().ok());
        if file_epoch.is_some_and(|e| e > epoch) {
            fs::remove_file(&path).map_err(|e| Error::io("remove", &path, e))?;
        }
    }
    Ok(())
}
