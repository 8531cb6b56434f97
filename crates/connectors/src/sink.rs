//! Sinks: where the rows of an `INSERT` go.
//!
//! * `connector = 'files'`: CSV, JSON lines or Parquet files, optionally in Hive partition
//!   folders (`partition-by`). Files are written into `<path>/.staging-<run_id>/` as batches
//!   arrive and published atomically by [`Sink::commit`].
//! * `connector = 'print'`: a pretty table or JSON lines on standard output.

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

use crate::hive;
use crate::options::{self, FileFormat};

const CONNECTORS: &[&str] = &["files", "print"];
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

pub trait Sink: Send {
    fn write(&mut self, batch: &RecordBatch) -> Result<()>;
    /// Publish everything written (atomically for files). Called once, at the end.
    fn commit(&mut self) -> Result<SinkCommit>;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PrintFormat {
    Table,
    Json,
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
        _ => {
            options::check_known(def, FILE_SINK_OPTIONS)?;
            let path = options::required(def, "path")?.to_string();
            let format = options::file_format(def)?;
            if format != FileFormat::Csv {
                options::check_no_csv_options(def, format.extension())?;
            }
            let mut partition_by: Vec<String> = Vec::new();
            if let Some(list) = def.option("partition-by") {
                for name in list.split(',').map(str::trim) {
                    if name.is_empty() {
                        return Err(Error::option(
                            &def.name,
                            format!(
                                "invalid value '{list}' for option `partition-by`: expected \
                                 comma-separated column names"
                            ),
                        ));
                    }
                    if partition_by.iter().any(|p| p.eq_ignore_ascii_case(name)) {
                        return Err(Error::option(
                            &def.name,
                            format!("option `partition-by` names column `{name}` twice"),
                        ));
                    }
                    partition_by.push(name.to_string());
                }
            }
            if !def.columns.is_empty() {
                let names: Vec<&str> = def.columns.iter().map(|c| c.name.as_str()).collect();
                for p in &partition_by {
                    if !names.iter().any(|n| n.eq_ignore_ascii_case(p)) {
                        return Err(unknown_partition_column(def, p, &names));
                    }
                }
            }
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

fn unknown_partition_column(def: &TableDef, column: &str, columns: &[&str]) -> Error {
    Error::option(
        &def.name,
        format!(
            "option `partition-by` names column `{column}`, which is not a column of the table \
             (columns: {})",
            columns.join(", ")
        ),
    )
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

/// Checks connector, options and (for files) that the parent of `path` can be created, before
/// any data moves.
///
/// A relative `path` is relative to the pipeline's base folder, which this function does not
/// know: for it only the options are checked here, and [`open_sink`] checks the folder (before
/// any data is written).
pub fn validate_sink_options(def: &TableDef) -> Result<()> {
    if let SinkConfig::Files(config) = parse_sink(def)? {
        let path = Path::new(&config.path);
        if path.is_absolute() {
            check_creatable(path)?;
        }
    }
    Ok(())
}

/// `schema` is the schema of the rows the pipeline will write. `run_id` makes staging names
/// unique. `stdout` is where the print sink writes (the runtime passes std::io::stdout(); tests
/// pass a buffer).
pub fn open_sink(
    def: &TableDef,
    schema: SchemaRef,
    base_dir: &Path,
    run_id: &str,
    stdout: Box<dyn std::io::Write + Send>,
) -> Result<Box<dyn Sink>> {
    match parse_sink(def)? {
        SinkConfig::Print(format) => Ok(Box::new(PrintSink {
            out: stdout,
            format,
            rows: 0,
        })),
        SinkConfig::Files(config) => Ok(Box::new(FileSink::open(
            def, config, schema, base_dir, run_id,
        )?)),
    }
}

// -------------------------------------------------------------------- print

struct PrintSink {
    out: Box<dyn Write + Send>,
    format: PrintFormat,
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
        }
        self.out.flush().map_err(Self::io)?;
        self.rows += batch.num_rows() as u64;
        Ok(())
    }

    fn commit(&mut self) -> Result<SinkCommit> {
        self.out.flush().map_err(Self::io)?;
        Ok(SinkCommit {
            rows: self.rows,
            files: Vec::new(),
        })
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
    writer: FormatWriter,
    rows: u64,
}

fn write_error(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::io("write", path, std::io::Error::other(e.to_string()))
}

impl PartWriter {
    fn create(path: PathBuf, config: &FileConfig, schema: &SchemaRef) -> Result<Self> {
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

struct FileSink {
    created_dirs: Vec<PathBuf>,
    config: FileConfig,
    /// The table's folder.
    root: PathBuf,
    /// `<root>/.staging-<run_id>`.
    staging: PathBuf,
    /// `<staging>/data`: the new files, laid out as they will be published.
    data_dir: PathBuf,
    /// Positions of the partition columns in the written rows.
    partition_cols: Vec<usize>,
    /// Positions of the other columns, and their schema (what goes into the files).
    data_cols: Vec<usize>,
    data_schema: SchemaRef,
    /// Number of columns of the written rows.
    columns: usize,
    /// Open writers by partition folder (`a=1/b=x`; empty when unpartitioned).
    writers: BTreeMap<String, PartWriter>,
    rows: u64,
    committed: bool,
}

impl FileSink {
    fn open(
        def: &TableDef,
        config: FileConfig,
        schema: SchemaRef,
        base_dir: &Path,
        run_id: &str,
    ) -> Result<FileSink> {
        let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        let mut partition_cols = Vec::with_capacity(config.partition_by.len());
        for p in &config.partition_by {
            let pos = names
                .iter()
                .position(|n| n == p)
                .or_else(|| names.iter().position(|n| n.eq_ignore_ascii_case(p)))
                .ok_or_else(|| unknown_partition_column(def, p, &names))?;
            partition_cols.push(pos);
        }
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
            base_dir.join(path)
        };
        check_creatable(&root)?;
        let safe_run_id: String = run_id
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        // Folders this sink creates, deepest first: an abandoned run removes them again.
        let created_dirs: Vec<PathBuf> = root
            .ancestors()
            .take_while(|p| !p.as_os_str().is_empty() && !p.exists())
            .map(Path::to_path_buf)
            .collect();
        let staging = root.join(format!(".staging-{safe_run_id}"));
        if staging.exists() {
            fs::remove_dir_all(&staging).map_err(|e| Error::io("remove", &staging, e))?;
        }
        let data_dir = staging.join("data");
        fs::create_dir_all(&data_dir).map_err(|e| Error::io("create", &data_dir, e))?;
        Ok(FileSink {
            config,
            created_dirs,
            root,
            staging,
            data_dir,
            partition_cols,
            data_cols,
            data_schema,
            columns: names.len(),
            writers: BTreeMap::new(),
            rows: 0,
            committed: false,
        })
    }

    fn file_name(&self) -> String {
        format!("part-00000.{}", self.config.format.extension())
    }

    fn write_part(&mut self, key: &str, batch: &RecordBatch) -> Result<()> {
        if !self.writers.contains_key(key) {
            let mut path = self.data_dir.clone();
            if !key.is_empty() {
                path.push(key);
            }
            path.push(self.file_name());
            let writer = PartWriter::create(path, &self.config, &self.data_schema)?;
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

    /// Moves the staged files into place.
    fn publish(&mut self) -> Result<Vec<WrittenFile>> {
        let writers = std::mem::take(&mut self.writers);
        let mut staged = Vec::with_capacity(writers.len());
        for (key, writer) in writers {
            let rows = writer.rows;
            writer.close()?;
            staged.push((key, rows));
        }
        fs::create_dir_all(&self.root).map_err(|e| Error::io("create", &self.root, e))?;
        let file_name = self.file_name();
        let old_dir = self.staging.join("old");
        let rename = |from: &Path, to: &Path| {
            fs::rename(from, to).map_err(|e| {
                Error::io(
                    "rename",
                    from,
                    std::io::Error::new(e.kind(), format!("to `{}`: {e}", to.display())),
                )
            })
        };
        let mut files = Vec::with_capacity(staged.len());
        if self.partition_cols.is_empty() {
            // The new files replace the old ones by rename (atomic per file), then old data
            // files without a new counterpart are removed.
            let mut published = Vec::new();
            for (key, rows) in &staged {
                debug_assert!(key.is_empty());
                let target = self.root.join(&file_name);
                rename(&self.data_dir.join(&file_name), &target)?;
                published.push(file_name.clone());
                files.push((target, *rows));
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
            for (i, (key, rows)) in staged.iter().enumerate() {
                let target = self.root.join(key);
                if fs::symlink_metadata(&target).is_ok() {
                    fs::create_dir_all(&old_dir).map_err(|e| Error::io("create", &old_dir, e))?;
                    rename(&target, &old_dir.join(i.to_string()))?;
                }
                if let Some(parent) = target.parent() {
                    fs::create_dir_all(parent).map_err(|e| Error::io("create", parent, e))?;
                }
                rename(&self.data_dir.join(key), &target)?;
                files.push((target.join(&file_name), *rows));
            }
        }
        files
            .into_iter()
            .map(|(path, rows)| {
                let bytes = fs::metadata(&path)
                    .map_err(|e| Error::io("read", &path, e))?
                    .len();
                Ok(WrittenFile {
                    path: path.display().to_string(),
                    rows,
                    bytes,
                })
            })
            .collect()
    }

    /// Removes this run's staging folder and any left by earlier runs that crashed.
    fn remove_staging(&self) -> Result<()> {
        let entries = fs::read_dir(&self.root).map_err(|e| Error::io("read", &self.root, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| Error::io("read", &self.root, e))?;
            if entry.file_name().to_string_lossy().starts_with(".staging-") {
                let path = entry.path();
                let removed = if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    fs::remove_dir_all(&path)
                } else {
                    fs::remove_file(&path)
                };
                removed.map_err(|e| Error::io("remove", &path, e))?;
            }
        }
        Ok(())
    }
}

impl Sink for FileSink {
    fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        if self.committed {
            return Err(Error::Internal("write after commit".into()));
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
            self.write_part("", &data)?;
            self.rows += batch.num_rows() as u64;
            return Ok(());
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
        self.rows += batch.num_rows() as u64;
        Ok(())
    }

    fn commit(&mut self) -> Result<SinkCommit> {
        if self.committed {
            return Err(Error::Internal("sink committed twice".into()));
        }
        if self.partition_cols.is_empty() && self.writers.is_empty() {
            // An empty table still gets a valid file, so readers see its schema.
            let empty = RecordBatch::new_empty(Arc::clone(&self.data_schema));
            self.write_part("", &empty)?;
        }
        let files = self.publish()?;
        self.committed = true;
        self.remove_staging()?;
        Ok(SinkCommit {
            rows: self.rows,
            files,
        })
    }
}

impl Drop for FileSink {
    fn drop(&mut self) {
        if !self.committed {
            // An abandoned run leaves nothing behind (a crash leaves the staging folder, which
            // the next commit removes).
            let _ = fs::remove_dir_all(&self.staging);
            for dir in &self.created_dirs {
                // remove_dir only removes empty folders: nothing else is touched.
                let _ = fs::remove_dir(dir);
            }
        }
    }
}
