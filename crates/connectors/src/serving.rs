//! Serving tables (`'connector' = 'table'`): a pipeline's results kept in an embedded store
//! (redb) so that they can be read by key or whole, over HTTP (`flowline serve`) or in tests.
//!
//! # Layout
//!
//! A serving table is a folder (option `path`, default `serving/<table>` beside the pipeline)
//! holding one redb database per *version* (`<version>.redb`, option `version`, default `v1`)
//! and a file `CURRENT` naming the version readers see. The first version written becomes
//! current; another version is built beside it (a shadow, for a replay) and made current by
//! [`ServingTable::swap`], an atomic rename: a reader resolves `CURRENT` once per read and reads
//! one committed snapshot of one version, so it never sees a half-built table.
//!
//! A version's database has three redb tables: `rows` (key → row), `staged` ((epoch, seq) →
//! change, durable but not visible), and `meta` (schema, key columns, row format, writer,
//! published epoch and generation, last publish time). Keys and rows are Arrow's row format
//! ([`arrow::row`]) of the key columns and of all columns: keys sort as the values do, and a row
//! decodes back to typed columns. The row format is Arrow's, so the store records Arrow's major
//! version and refuses to open under another one.
//!
//! # Semantics
//!
//! * With a `PRIMARY KEY (...) NOT ENFORCED`, a row *upserts* its key (the last write of a key
//!   wins) and a delete (update mode's `_change_type = 'delete'`) removes it. Without one, rows
//!   are *appended* under generated keys.
//! * Batch ([`SinkMode::Run`]): the run's rows *replace* the table in one transaction, as a files
//!   sink replaces its files.
//! * Stream ([`SinkMode::Epochs`]), exactly-once: [`Sink::prepare`] writes the epoch's changes to
//!   `staged` (committed, invisible); [`Sink::publish`] applies them to `rows`, removes them
//!   from `staged` and records the epoch as published, in one transaction, so a publish repeated
//!   after a crash changes nothing. Opening publishes the checkpoint's epoch, then drops every
//!   other staged change (later epochs are replayed). A job that starts without a checkpoint
//!   starts a new *generation*: appended rows of earlier generations keep their keys.
//! * One pipeline writes a version (`writer` in `meta`, set by its batch runs and stream jobs);
//!   another pipeline writing it, in either mode, is an error at open that names both.
//! * A database is opened once per process and shared (the sink writing it and HTTP readers);
//!   another process that has it open makes opening fail with a message saying so.

use std::collections::HashMap;
use std::fs;
use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, RwLock, Weak};

use arrow::array::{ArrayRef, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Schema, SchemaRef};
use arrow::row::{RowConverter, Rows, SortField};
use flowline_core::{Error, Result, TableDef};
use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};

use crate::options;
use crate::sink::{wrong_prepared, Prepared, Sink, SinkCommit, SinkContext, SinkMode, TimeRange};

/// The options of `connector = 'table'`.
pub(crate) const TABLE_SINK_OPTIONS: &[&str] = &["connector", "path", "version"];
/// The version written when the table does not say.
pub const DEFAULT_VERSION: &str = "v1";
/// The column through which the runtime tells the sink whether a row is an upsert or a delete.
pub const CHANGE_TYPE: &str = "_change_type";
/// Rows per batch when a table is read.
const READ_BATCH_ROWS: usize = 8192;

const ROWS: TableDefinition<'_, &[u8], &[u8]> = TableDefinition::new("rows");
const STAGED: TableDefinition<'_, (u64, u64), &[u8]> = TableDefinition::new("staged");
const META: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("meta");

/// The row format's identity: Arrow's row encoding may change between major versions.
const ROW_FORMAT: &str = "arrow-row-59";

const UPSERT: u8 = 0;
const DELETE: u8 = 1;

/// Where a serving table lives and which version a pipeline writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServingConfig {
    /// The table's folder (relative paths resolve against the pipeline's folder).
    pub path: String,
    pub version: String,
}

/// Checks the options of a `connector = 'table'` table.
pub fn parse_config(def: &TableDef) -> Result<ServingConfig> {
    options::check_known(def, TABLE_SINK_OPTIONS)?;
    let path = def
        .option("path")
        .map(str::to_string)
        .unwrap_or_else(|| format!("serving/{}", def.name));
    let version = def.option("version").unwrap_or(DEFAULT_VERSION).to_string();
    check_version_name(&version).map_err(|m| Error::option(&def.name, m))?;
    Ok(ServingConfig { path, version })
}

/// A version name is letters, digits, `-`, `_` and `.` (not starting with `.`).
pub fn check_version_name(version: &str) -> std::result::Result<(), String> {
    let ok = !version.is_empty()
        && !version.starts_with('.')
        && version
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid version '{version}' in option `version`: use letters, digits, '-', '_' \
             and '.', e.g. 'v2'"
        ))
    }
}

/// The folder of serving table `def` for a pipeline in `base_dir`.
pub fn table_dir(def: &TableDef, base_dir: &Path) -> Result<PathBuf> {
    let config = parse_config(def)?;
    Ok(resolve(base_dir, &config.path))
}

fn resolve(base_dir: &Path, path: &str) -> PathBuf {
    let p = Path::new(path);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base_dir.join(p)
    }
}

fn store_error(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Input {
        path: path.to_path_buf(),
        message: format!("serving table store: {e}"),
    }
}

/// Opens (creating if `create`) the database at `path`, shared by everyone in this process.
fn database(path: &Path, create: bool) -> Result<Option<Arc<Database>>> {
    static OPEN: OnceLock<Mutex<HashMap<PathBuf, Weak<Database>>>> = OnceLock::new();
    let mut open = OPEN
        .get_or_init(Default::default)
        .lock()
        .map_err(|_| Error::Internal("serving table registry poisoned".into()))?;
    let key = fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let was_open_here = match open.get(&key) {
        Some(weak) => match weak.upgrade() {
            Some(db) => return Ok(Some(db)),
            None => true,
        },
        None => false,
    };
    if !create && !path.exists() {
        return Ok(None);
    }
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).map_err(|e| Error::io("create", parent, e))?;
    }
    // A handle of this process that was just dropped may still be closing (its file lock not
    // yet released): wait for it rather than report another process.
    let mut attempts = 0;
    let opened = loop {
        match Database::create(path) {
            Err(redb::DatabaseError::DatabaseAlreadyOpen) if was_open_here && attempts < 200 => {
                attempts += 1;
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            other => break other,
        }
    };
    let db = opened.map_err(|e| match e {
        redb::DatabaseError::DatabaseAlreadyOpen => store_error(
            path,
            "it is open in another process (a `flowline serve` or `flowline run` that writes or \
             serves it); stop that process or serve the table from it",
        ),
        other => store_error(path, other),
    })?;
    let db = Arc::new(db);
    let key = fs::canonicalize(path).unwrap_or(key);
    open.retain(|_, w| w.strong_count() > 0);
    open.insert(key, Arc::downgrade(&db));
    Ok(Some(db))
}

fn schema_bytes(schema: &Schema) -> Result<Vec<u8>> {
    let mut buf = vec![];
    let mut writer = arrow::ipc::writer::StreamWriter::try_new(&mut buf, schema)?;
    writer.finish()?;
    drop(writer);
    Ok(buf)
}

fn schema_from_bytes(bytes: &[u8]) -> Result<SchemaRef> {
    let reader = arrow::ipc::reader::StreamReader::try_new(Cursor::new(bytes), None)?;
    Ok(reader.schema())
}

fn converter(schema: &Schema, columns: &[usize]) -> Result<RowConverter> {
    Ok(RowConverter::new(
        columns
            .iter()
            .map(|&i| SortField::new(schema.field(i).data_type().clone()))
            .collect(),
    )?)
}

fn now_ms() -> u64 {
    flowline_log::now_ms().max(0) as u64
}

fn u64_meta(bytes: Option<&[u8]>) -> u64 {
    bytes
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map_or(0, u64::from_le_bytes)
}

/// What a version's `meta` says.
#[derive(Debug, Clone, Default)]
struct Meta {
    schema: Option<SchemaRef>,
    key: Vec<String>,
    row_format: Option<String>,
    writer: Option<String>,
    published_epoch: u64,
    generation: u64,
    updated_ms: u64,
}

fn read_meta(table: &impl ReadableTable<&'static str, &'static [u8]>, path: &Path) -> Result<Meta> {
    let get = |k: &str| -> Result<Option<Vec<u8>>> {
        Ok(table
            .get(k)
            .map_err(|e| store_error(path, e))?
            .map(|v| v.value().to_vec()))
    };
    let text = |b: Option<Vec<u8>>| b.map(|b| String::from_utf8_lossy(&b).into_owned());
    Ok(Meta {
        schema: get("schema")?.map(|b| schema_from_bytes(&b)).transpose()?,
        key: match get("key")? {
            Some(b) => serde_json::from_slice(&b).map_err(|e| store_error(path, e))?,
            None => vec![],
        },
        row_format: text(get("row_format")?),
        writer: text(get("writer")?),
        published_epoch: u64_meta(get("published_epoch")?.as_deref()),
        generation: u64_meta(get("generation")?.as_deref()),
        updated_ms: u64_meta(get("updated_ms")?.as_deref()),
    })
}

/// Everything a reader learns about one version of a serving table.
#[derive(Debug, Clone)]
pub struct VersionInfo {
    pub version: String,
    /// The columns (none before the first publish).
    pub schema: Option<SchemaRef>,
    /// The primary key columns (empty: an append table).
    pub key: Vec<String>,
    pub rows: u64,
    /// The last epoch published by a stream job (0 for batch runs).
    pub published_epoch: u64,
    /// Milliseconds since the epoch of the last publish (0: never).
    pub updated_ms: u64,
    /// The pipeline writing it.
    pub writer: Option<String>,
}

/// Rows of one version read from one committed snapshot, with what that snapshot says of it.
#[derive(Debug, Clone)]
pub struct VersionRows {
    pub version: String,
    /// The primary key columns (empty: an append table).
    pub key: Vec<String>,
    /// Milliseconds since the epoch of the last publish.
    pub updated_ms: u64,
    pub schema: SchemaRef,
    pub batches: Vec<RecordBatch>,
}

/// Why a keyed read failed: the key asked for does not fit the table, or the store failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The request is wrong (the number of key values, a value of the wrong type).
    #[error("{0}")]
    Request(String),
    #[error(transparent)]
    Store(#[from] Error),
}

/// A serving table's folder: its versions and which one is current.
#[derive(Debug, Clone)]
pub struct ServingTable {
    dir: PathBuf,
}

impl ServingTable {
    pub fn at(dir: impl Into<PathBuf>) -> ServingTable {
        ServingTable { dir: dir.into() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn version_path(&self, version: &str) -> PathBuf {
        self.dir.join(format!("{version}.redb"))
    }

    /// The versions on disk, sorted by name.
    pub fn versions(&self) -> Result<Vec<String>> {
        let entries = match fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
            Err(e) => return Err(Error::io("read", &self.dir, e)),
        };
        let mut versions = vec![];
        for entry in entries {
            let entry = entry.map_err(|e| Error::io("read", &self.dir, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(v) = name.strip_suffix(".redb") {
                versions.push(v.to_string());
            }
        }
        versions.sort();
        Ok(versions)
    }

    /// The version readers see: `CURRENT`, else the only or first version on disk.
    pub fn current(&self) -> Result<Option<String>> {
        let path = self.dir.join("CURRENT");
        match fs::read_to_string(&path) {
            Ok(v) => Ok(Some(v.trim().to_string())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Ok(self.versions()?.into_iter().next())
            }
            Err(e) => Err(Error::io("read", &path, e)),
        }
    }

    /// Makes `version` the one readers see, atomically (write aside, rename). A pipeline with
    /// several tables swaps them with [`swap_together`].
    pub fn swap(&self, version: &str) -> Result<()> {
        self.check_swappable(version)?;
        replace_file(&self.dir.join("CURRENT"), format!("{version}\n").as_bytes())
    }

    /// Whether `version` can be swapped in: a valid name, on disk.
    fn check_swappable(&self, version: &str) -> Result<()> {
        check_version_name(version).map_err(|m| store_error(&self.dir, m))?;
        if !self.version_path(version).exists() {
            return Err(store_error(
                &self.dir,
                format!(
                    "there is no version '{version}' to swap in (versions: {})",
                    self.versions()?.join(", ")
                ),
            ));
        }
        Ok(())
    }

    /// Deletes `version` (a cancelled replay's shadow), unless readers see it. Deleting a
    /// version that is not on disk is not an error.
    pub fn discard(&self, version: &str) -> Result<()> {
        check_version_name(version).map_err(|m| store_error(&self.dir, m))?;
        if self.current()?.as_deref() == Some(version) {
            return Err(store_error(
                &self.dir,
                format!("version '{version}' is the one readers see; it cannot be deleted (swap another version in first)"),
            ));
        }
        let path = self.version_path(version);
        match fs::remove_file(&path) {
            Ok(()) => crate::sink::sync_dir(&self.dir),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io("delete", &path, e)),
        }
    }

    fn open_version(&self, version: Option<&str>) -> Result<Option<(String, Arc<Database>)>> {
        let version = match version {
            Some(v) => v.to_string(),
            None => match self.current()? {
                Some(v) => v,
                None => return Ok(None),
            },
        };
        check_version_name(&version).map_err(|m| store_error(&self.dir, m))?;
        Ok(database(&self.version_path(&version), false)?.map(|db| (version, db)))
    }

    /// What a version (default: the current one) holds, without reading its rows.
    pub fn info(&self, version: Option<&str>) -> Result<Option<VersionInfo>> {
        // `_db` is bound: it keeps the store open while `txn` reads.
        let Some(Snapshot {
            _db,
            version,
            path,
            txn,
            meta,
        }) = self.open_snapshot(version)?
        else {
            return Ok(None);
        };
        let rows = match txn.open_table(ROWS) {
            Ok(r) => r.len().map_err(|e| store_error(&path, e))?,
            Err(redb::TableError::TableDoesNotExist(_)) => 0,
            Err(e) => return Err(store_error(&path, e)),
        };
        Ok(Some(VersionInfo {
            version,
            schema: meta.schema,
            key: meta.key,
            rows,
            published_epoch: meta.published_epoch,
            updated_ms: meta.updated_ms,
            writer: meta.writer,
        }))
    }

    /// Reads a whole version (default: the current one) from one committed snapshot, in key
    /// order (append tables: in the order rows were published). `None` if the table has no
    /// version yet or nothing was ever published to it.
    pub fn read(&self, version: Option<&str>) -> Result<Option<(SchemaRef, Vec<RecordBatch>)>> {
        Ok(self.read_rows(version)?.map(|r| (r.schema, r.batches)))
    }

    /// Reads the rows of a version whose primary key equals `key` (values as text, in key
    /// column order, cast to the key columns' types). `None` as for [`ServingTable::read`].
    pub fn lookup(
        &self,
        version: Option<&str>,
        key: &[&str],
    ) -> std::result::Result<Option<VersionRows>, ReadError> {
        let Some((snapshot, schema)) = self.snapshot(version)? else {
            return Ok(None);
        };
        let (path, meta) = (&snapshot.path, &snapshot.meta);
        if meta.key.is_empty() {
            return Err(ReadError::Request(
                "the table has no PRIMARY KEY, so it cannot be read by key: read it whole".into(),
            ));
        }
        if meta.key.len() != key.len() {
            return Err(ReadError::Request(format!(
                "the key is ({}): give {} value(s), not {}",
                meta.key.join(", "),
                meta.key.len(),
                key.len()
            )));
        }
        let positions = key_positions(&schema, &meta.key, path)?;
        let mut columns: Vec<ArrayRef> = vec![];
        for (&i, text) in positions.iter().zip(key) {
            let value: ArrayRef = Arc::new(StringArray::from(vec![*text]));
            let strict = arrow::compute::CastOptions {
                safe: false,
                ..Default::default()
            };
            let field = schema.field(i);
            columns.push(
                arrow::compute::cast_with_options(&value, field.data_type(), &strict).map_err(
                    |e| {
                        ReadError::Request(format!(
                            "key value '{text}' is not a {} for column `{}`: {e}",
                            field.data_type(),
                            field.name()
                        ))
                    },
                )?,
            );
        }
        let key_rows = converter(&schema, &positions)?
            .convert_columns(&columns)
            .map_err(Error::from)?;
        let wanted = key_rows.row(0);
        let found = match snapshot.txn.open_table(ROWS) {
            Ok(rows) => rows
                .get(wanted.as_ref())
                .map_err(|e| store_error(path, e))?
                .map(|v| v.value().to_vec()),
            Err(redb::TableError::TableDoesNotExist(_)) => None,
            Err(e) => return Err(store_error(path, e).into()),
        };
        let all: Vec<usize> = (0..schema.fields().len()).collect();
        let conv = converter(&schema, &all)?;
        let batch = decode(&conv, &schema, found.iter().map(Vec::as_slice))?;
        Ok(Some(snapshot.into_rows(schema, vec![batch])))
    }

    /// One committed snapshot of a version (`None`: no such version). Its `meta` is empty
    /// before the first write.
    fn open_snapshot(&self, version: Option<&str>) -> Result<Option<Snapshot>> {
        let Some((version, db)) = self.open_version(version)? else {
            return Ok(None);
        };
        let path = self.version_path(&version);
        let txn = db.begin_read().map_err(|e| store_error(&path, e))?;
        let meta = match txn.open_table(META) {
            Ok(t) => read_meta(&t, &path)?,
            Err(redb::TableError::TableDoesNotExist(_)) => Meta::default(),
            Err(e) => return Err(store_error(&path, e)),
        };
        Ok(Some(Snapshot {
            _db: db,
            version,
            path,
            txn,
            meta,
        }))
    }

    /// A snapshot of a version that has been published to, and its columns (`None`: no such
    /// version, or nothing published yet).
    fn snapshot(&self, version: Option<&str>) -> Result<Option<(Snapshot, SchemaRef)>> {
        let Some(snapshot) = self.open_snapshot(version)? else {
            return Ok(None);
        };
        let Some(schema) = snapshot.meta.schema.clone() else {
            return Ok(None);
        };
        check_row_format(&snapshot.meta.row_format, &snapshot.path)?;
        Ok(Some((snapshot, schema)))
    }

    /// As [`ServingTable::read`], with the version, key and publish time of the same snapshot.
    pub fn read_rows(&self, version: Option<&str>) -> Result<Option<VersionRows>> {
        let Some((snapshot, schema)) = self.snapshot(version)? else {
            return Ok(None);
        };
        let all: Vec<usize> = (0..schema.fields().len()).collect();
        let conv = converter(&schema, &all)?;
        let mut batches = vec![];
        let path = &snapshot.path;
        match snapshot.txn.open_table(ROWS) {
            Ok(rows) => {
                let mut chunk: Vec<Vec<u8>> = Vec::with_capacity(READ_BATCH_ROWS);
                for entry in rows.iter().map_err(|e| store_error(path, e))? {
                    let (_, value) = entry.map_err(|e| store_error(path, e))?;
                    chunk.push(value.value().to_vec());
                    if chunk.len() == READ_BATCH_ROWS {
                        batches.push(decode(&conv, &schema, chunk.iter().map(Vec::as_slice))?);
                        chunk.clear();
                    }
                }
                if !chunk.is_empty() {
                    batches.push(decode(&conv, &schema, chunk.iter().map(Vec::as_slice))?);
                }
            }
            Err(redb::TableError::TableDoesNotExist(_)) => {}
            Err(e) => return Err(store_error(path, e)),
        }
        if batches.is_empty() {
            batches.push(RecordBatch::new_empty(schema.clone()));
        }
        Ok(Some(snapshot.into_rows(schema, batches)))
    }
}

/// A read transaction on a version, with what its `meta` says.
struct Snapshot {
    /// Keeps the database open: dropping the last handle closes it under the transaction.
    _db: Arc<Database>,
    version: String,
    path: PathBuf,
    txn: redb::ReadTransaction,
    meta: Meta,
}

impl Snapshot {
    /// Rows read from this snapshot, with what it says of its version.
    fn into_rows(self, schema: SchemaRef, batches: Vec<RecordBatch>) -> VersionRows {
        VersionRows {
            version: self.version,
            key: self.meta.key,
            updated_ms: self.meta.updated_ms,
            schema,
            batches,
        }
    }
}

fn check_row_format(format: &Option<String>, path: &Path) -> Result<()> {
    match format.as_deref() {
        Some(ROW_FORMAT) | None => Ok(()),
        Some(other) => Err(store_error(
            path,
            format!(
                "rows are stored in format '{other}', this Flowline reads '{ROW_FORMAT}'; \
                 rebuild the table with a replay into a new version"
            ),
        )),
    }
}

fn key_positions(schema: &Schema, key: &[String], path: &Path) -> Result<Vec<usize>> {
    key.iter()
        .map(|k| {
            schema
                .fields()
                .iter()
                .position(|f| f.name().eq_ignore_ascii_case(k))
                .ok_or_else(|| store_error(path, format!("key column `{k}` is not a column")))
        })
        .collect()
}

fn decode<'a>(
    conv: &RowConverter,
    schema: &SchemaRef,
    rows: impl Iterator<Item = &'a [u8]>,
) -> Result<RecordBatch> {
    let parser = conv.parser();
    let parsed: Vec<_> = rows.map(|r| parser.parse(r)).collect();
    let columns = conv.convert_rows(parsed)?;
    Ok(RecordBatch::try_new(schema.clone(), columns)?)
}

// -------------------------------------------------------------------- sink

/// The changes of one written batch, waiting for prepare (batch runs: for publish), in Arrow's
/// row format: one buffer per batch, no copy per row.
struct PendingBatch {
    ops: Vec<u8>,
    /// Key rows (`None`: an append table).
    keys: Option<Rows>,
    rows: Rows,
}

impl PendingBatch {
    /// Change `i`: (op, key, row).
    fn change(&self, i: usize) -> (u8, &[u8], &[u8]) {
        (
            self.ops[i],
            self.keys.as_ref().map_or(&[][..], |k| k.row(i).data()),
            self.rows.row(i).data(),
        )
    }
}

/// A staged change: op, key length (u32 LE), key, row.
fn encode_change(buf: &mut Vec<u8>, op: u8, key: &[u8], row: &[u8]) {
    buf.clear();
    buf.push(op);
    buf.extend_from_slice(&(key.len() as u32).to_le_bytes());
    buf.extend_from_slice(key);
    buf.extend_from_slice(row);
}

fn decode_change<'a>(bytes: &'a [u8], path: &Path) -> Result<(u8, &'a [u8], &'a [u8])> {
    let bad = || store_error(path, "a staged change is truncated");
    let (&op, rest) = bytes.split_first().ok_or_else(bad)?;
    let len = rest
        .get(..4)
        .and_then(|b| <[u8; 4]>::try_from(b).ok())
        .map(u32::from_le_bytes)
        .ok_or_else(bad)? as usize;
    let key = rest.get(4..4 + len).ok_or_else(bad)?;
    let row = rest.get(4 + len..).ok_or_else(bad)?;
    Ok((op, key, row))
}

pub(crate) struct TableSink {
    table: String,
    path: PathBuf,
    db: Arc<Database>,
    /// The stored columns (without [`CHANGE_TYPE`]).
    schema: SchemaRef,
    /// Whether written batches carry [`CHANGE_TYPE`] as their last column.
    change_type: bool,
    key_names: Vec<String>,
    key: Vec<usize>,
    rows: RowConverter,
    keys: Option<RowConverter>,
    pending: Vec<PendingBatch>,
    /// `None`: a batch run (replace at publish); `Some(job)`: a stream job.
    job: Option<String>,
    /// The pipeline writing (a batch run's or a stream job's), recorded as the version's writer.
    writer: String,
    generation: u64,
    /// A batch run of corrections: replace only the rows whose column (by position) is in the
    /// range.
    slice: Option<(usize, TimeRange)>,
}

impl TableSink {
    pub(crate) fn open(def: &TableDef, schema: SchemaRef, ctx: &SinkContext) -> Result<TableSink> {
        let config = parse_config(def)?;
        let dir = resolve(&ctx.base_dir, &config.path);
        let table = ServingTable::at(&dir);
        let path = table.version_path(&config.version);
        let change_type = schema
            .fields()
            .last()
            .is_some_and(|f| f.name().eq_ignore_ascii_case(CHANGE_TYPE));
        let stored: SchemaRef = if change_type {
            Arc::new(Schema::new(
                schema.fields()[..schema.fields().len() - 1].to_vec(),
            ))
        } else {
            schema.clone()
        };
        let key = def
            .primary_key
            .iter()
            .map(|k| {
                stored
                    .fields()
                    .iter()
                    .position(|f| f.name().eq_ignore_ascii_case(k))
                    .ok_or_else(|| {
                        Error::option(
                            &def.name,
                            format!("PRIMARY KEY column `{k}` is not a column of the table"),
                        )
                    })
            })
            .collect::<Result<Vec<_>>>()?;
        let key_names: Vec<String> = key
            .iter()
            .map(|&i| stored.field(i).name().clone())
            .collect();
        let slice = match &ctx.slice {
            None => None,
            Some(range) => {
                if !matches!(ctx.mode, SinkMode::Run { .. }) {
                    return Err(Error::Plan(format!(
                        "serving table {}: corrections of a time range are batch runs",
                        def.name
                    )));
                }
                let column = match &range.column {
                    Some(c) => stored
                        .fields()
                        .iter()
                        .position(|f| {
                            f.name().eq_ignore_ascii_case(c)
                                && crate::convert::is_time_type(f.data_type())
                        })
                        .ok_or_else(|| {
                            Error::option(
                                &def.name,
                                format!(
                                    "corrections: `{c}` is not a date or timestamp column (those \
                                     are: {})",
                                    stored
                                        .fields()
                                        .iter()
                                        .filter(|f| crate::convert::is_time_type(f.data_type()))
                                        .map(|f| f.name().as_str())
                                        .collect::<Vec<_>>()
                                        .join(", ")
                                ),
                            )
                        })?,
                    None => stored
                        .fields()
                        .iter()
                        .position(|f| crate::convert::is_time_type(f.data_type()))
                        .ok_or_else(|| {
                            Error::option(
                                &def.name,
                                "corrections replace the rows of a time range, but the table \
                                 has no date or timestamp column"
                                    .to_string(),
                            )
                        })?,
                };
                Some((column, range.clone()))
            }
        };
        let db =
            database(&path, true)?.ok_or_else(|| Error::Internal("database vanished".into()))?;
        let all: Vec<usize> = (0..stored.fields().len()).collect();
        let mut sink = TableSink {
            table: def.name.clone(),
            path: path.clone(),
            db,
            rows: converter(&stored, &all)?,
            keys: if key.is_empty() {
                None
            } else {
                Some(converter(&stored, &key)?)
            },
            schema: stored,
            change_type,
            key_names,
            key,
            pending: vec![],
            job: None,
            writer: match &ctx.mode {
                SinkMode::Run { job, .. } | SinkMode::Epochs { job, .. } => job.clone(),
            },
            generation: 0,
            slice,
        };
        sink.check_writer()?;
        if let SinkMode::Epochs { job, resume, .. } = &ctx.mode {
            sink.job = Some(job.clone());
            sink.open_job(job, resume.as_ref())?;
        }
        if !table.dir.join("CURRENT").exists() {
            // The first version written becomes current.
            table.swap(&config.version)?;
        }
        Ok(sink)
    }

    /// Refuses a pipeline other than the version's writer: one pipeline writes a version, in
    /// batch runs, corrections or a stream job (checked when the sink opens, before data moves).
    fn check_writer(&self) -> Result<()> {
        let txn = self.db.begin_read().map_err(|e| self.err(e))?;
        let meta = match txn.open_table(META) {
            Ok(t) => read_meta(&t, &self.path)?,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(()),
            Err(e) => return Err(self.err(e)),
        };
        match &meta.writer {
            Some(writer) if *writer != self.writer => Err(Error::Plan(format!(
                "serving table {} (`{}`) is written by pipeline `{writer}`; pipeline `{}` \
                 cannot write it too: give one of them another 'path' or 'version'",
                self.table,
                self.path.display(),
                self.writer
            ))),
            _ => Ok(()),
        }
    }

    /// A stream job: checks the writer and the columns, publishes the checkpoint's epoch, drops
    /// other staged changes, and starts a generation when there is no checkpoint.
    fn open_job(&mut self, job: &str, resume: Option<&Prepared>) -> Result<()> {
        let txn = self.db.begin_write().map_err(|e| self.err(e))?;
        let meta = {
            let t = txn.open_table(META).map_err(|e| self.err(e))?;
            read_meta(&t, &self.path)?
        };
        check_row_format(&meta.row_format, &self.path)?;
        let has_rows = txn
            .open_table(ROWS)
            .map_err(|e| self.err(e))?
            .len()
            .map_err(|e| self.err(e))?
            > 0;
        if let Some(old) = &meta.schema {
            let same = same_columns(old, &self.schema);
            if !same && has_rows {
                return Err(Error::Plan(format!(
                    "serving table {} (`{}`) holds columns ({}) but the pipeline writes ({}): \
                     write a new version ('version' = 'v2') and swap it in, or remove the folder",
                    self.table,
                    self.path.display(),
                    describe(old),
                    describe(&self.schema)
                )));
            }
            if meta.key != self.key_names && has_rows {
                return Err(Error::Plan(format!(
                    "serving table {} (`{}`) is keyed by ({}) but the pipeline declares ({}): \
                     write a new version ('version' = 'v2') and swap it in",
                    self.table,
                    self.path.display(),
                    meta.key.join(", "),
                    self.key_names.join(", ")
                )));
            }
        }
        self.generation = if resume.is_some() {
            meta.generation
        } else {
            meta.generation + 1
        };
        {
            let mut m = txn.open_table(META).map_err(|e| self.err(e))?;
            self.write_meta(&mut m, Some(job))?;
            m.insert("generation", self.generation.to_le_bytes().as_slice())
                .map_err(|e| self.err(e))?;
            if resume.is_none() {
                m.insert("published_epoch", 0u64.to_le_bytes().as_slice())
                    .map_err(|e| self.err(e))?;
            }
        }
        txn.commit().map_err(|e| self.err(e))?;
        match resume {
            Some(p @ Prepared::Table { .. }) => {
                self.publish(p)?;
            }
            Some(other) => return Err(wrong_prepared(&self.table, "table", other)),
            None => {}
        }
        // Later epochs are replayed by the runtime under the same numbers.
        let txn = self.db.begin_write().map_err(|e| self.err(e))?;
        txn.delete_table(STAGED).map_err(|e| self.err(e))?;
        txn.commit().map_err(|e| self.err(e))?;
        Ok(())
    }

    fn err(&self, e: impl std::fmt::Display) -> Error {
        store_error(&self.path, e)
    }

    fn write_meta(
        &self,
        m: &mut redb::Table<'_, &'static str, &'static [u8]>,
        writer: Option<&str>,
    ) -> Result<()> {
        let key = serde_json::to_vec(&self.key_names).map_err(|e| self.err(e))?;
        m.insert("schema", schema_bytes(&self.schema)?.as_slice())
            .map_err(|e| self.err(e))?;
        m.insert("key", key.as_slice()).map_err(|e| self.err(e))?;
        m.insert("row_format", ROW_FORMAT.as_bytes())
            .map_err(|e| self.err(e))?;
        match writer {
            Some(w) => m.insert("writer", w.as_bytes()).map_err(|e| self.err(e))?,
            None => m.remove("writer").map_err(|e| self.err(e))?,
        };
        Ok(())
    }

    /// Applies one change to `rows`; `append_key` is the key of a row of an append table.
    fn apply(
        &self,
        rows: &mut redb::Table<'_, &'static [u8], &'static [u8]>,
        (op, key, row): (u8, &[u8], &[u8]),
        append_key: &[u8],
    ) -> Result<()> {
        let key = if self.key.is_empty() { append_key } else { key };
        if op == DELETE {
            rows.remove(key).map_err(|e| self.err(e))?;
        } else {
            rows.insert(key, row).map_err(|e| self.err(e))?;
        }
        Ok(())
    }

    /// Corrections: in one transaction, removes the rows in the time range and writes the run's
    /// rows (upserted by key; appended under a new generation). Rows outside the range, the
    /// writer and the published epoch stay as they are.
    fn replace_slice(&mut self, txn: &redb::WriteTransaction) -> Result<()> {
        let Some((column, range)) = &self.slice else {
            return Ok(());
        };
        let meta = {
            let m = txn.open_table(META).map_err(|e| self.err(e))?;
            read_meta(&m, &self.path)?
        };
        check_row_format(&meta.row_format, &self.path)?;
        if let Some(old) = &meta.schema {
            let same = same_columns(old, &self.schema);
            if !same || meta.key != self.key_names {
                return Err(Error::Plan(format!(
                    "serving table {} (`{}`) holds columns ({}) keyed by ({}) but the corrections \
                     have ({}) keyed by ({}): replay into a new version instead",
                    self.table,
                    self.path.display(),
                    describe(old),
                    meta.key.join(", "),
                    describe(&self.schema),
                    self.key_names.join(", ")
                )));
            }
        }
        let mut table = txn.open_table(ROWS).map_err(|e| self.err(e))?;
        // The rows are scanned a chunk at a time; only the keys of rows inside the range are
        // kept (to remove them after the scan), not the table.
        let keys_inside = |chunk: &mut Vec<(Vec<u8>, Vec<u8>)>, keys: &mut Vec<Vec<u8>>| {
            let parser = self.rows.parser();
            let columns = self
                .rows
                .convert_rows(chunk.iter().map(|(_, row)| parser.parse(row)))?;
            let inside = range.mask(&columns[*column])?;
            for (i, (key, _)) in chunk.drain(..).enumerate() {
                if inside.value(i) {
                    keys.push(key);
                }
            }
            Ok::<_, Error>(())
        };
        let mut inside_keys: Vec<Vec<u8>> = vec![];
        let mut chunk: Vec<(Vec<u8>, Vec<u8>)> = Vec::with_capacity(READ_BATCH_ROWS);
        let entries = table.iter().map_err(|e| self.err(e))?;
        for entry in entries {
            let (k, v) = entry.map_err(|e| self.err(e))?;
            chunk.push((k.value().to_vec(), v.value().to_vec()));
            if chunk.len() == READ_BATCH_ROWS {
                keys_inside(&mut chunk, &mut inside_keys)?;
            }
        }
        if !chunk.is_empty() {
            keys_inside(&mut chunk, &mut inside_keys)?;
        }
        for key in &inside_keys {
            table.remove(key.as_slice()).map_err(|e| self.err(e))?;
        }
        // Only the run's rows inside the range: others come from a part of their input.
        let generation = meta.generation + 1;
        let mut seq = 0u64;
        for b in &self.pending {
            let columns = self.rows.convert_rows(b.rows.iter())?;
            let inside = range.mask(&columns[*column])?;
            for i in (0..b.ops.len()).filter(|&i| inside.value(i)) {
                self.apply(&mut table, b.change(i), &append_key(generation, 0, seq))?;
                seq += 1;
            }
        }
        drop(table);
        let mut m = txn.open_table(META).map_err(|e| self.err(e))?;
        self.write_meta(&mut m, meta.writer.as_deref())?;
        m.insert("generation", generation.to_le_bytes().as_slice())
            .map_err(|e| self.err(e))?;
        m.insert("updated_ms", now_ms().to_le_bytes().as_slice())
            .map_err(|e| self.err(e))?;
        drop(m);
        self.pending.clear();
        Ok(())
    }

    /// The pending changes in write order.
    fn changes(&self) -> impl Iterator<Item = (u8, &[u8], &[u8])> {
        self.pending
            .iter()
            .flat_map(|b| (0..b.ops.len()).map(move |i| b.change(i)))
    }
}

/// Writes `path` atomically and durably: written aside, synced, renamed over it, folder synced.
fn replace_file(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = write_aside(path, bytes)?;
    fs::rename(&tmp, path).map_err(|e| Error::io("rename", &tmp, e))?;
    crate::sink::sync_dir(path.parent().unwrap_or(Path::new(".")))
}

/// Writes and syncs what is to replace `path`, beside it (`.<name>.tmp`); returns that file.
fn write_aside(path: &Path, bytes: &[u8]) -> Result<PathBuf> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    fs::write(&tmp, bytes).map_err(|e| Error::io("write", &tmp, e))?;
    if let Ok(f) = fs::File::open(&tmp) {
        let _ = f.sync_all();
    }
    Ok(tmp)
}

/// Orders [`swap_together`] against [`current_versions`] in this process: a swap renames every
/// table's `CURRENT` while holding the write side, a reader resolves its tables' versions while
/// holding the read side.
static SWAP_GATE: RwLock<()> = RwLock::new(());

/// The versions readers see of `tables` (as [`ServingTable::current`]), all from before or all
/// from after any [`swap_together`] of this process: a query over several tables of one
/// pipeline never mixes an old version of one with the new version of another.
pub fn current_versions(tables: &[&ServingTable]) -> Result<Vec<Option<String>>> {
    let _gate = SWAP_GATE.read().unwrap_or_else(|e| e.into_inner());
    tables.iter().map(|t| t.current()).collect()
}

/// Swaps `tables` (a pipeline's serving tables, after its replay) to `version` together:
///
/// * every table must hold the version, else none is swapped;
/// * readers of this process that resolve versions with [`current_versions`] see all tables
///   swapped or none (the new `CURRENT` files are written and synced before, so only the
///   renames happen under the gate);
/// * the file `intent` (in the pipeline's state) names the version until every table is done:
///   if the process stops in the middle, [`finish_swap`] completes it when the pipeline is
///   opened again, so the tables never stay on different versions.
pub fn swap_together(tables: &[&ServingTable], version: &str, intent: &Path) -> Result<()> {
    for table in tables {
        table.check_swappable(version)?;
    }
    let dir = intent.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(|e| Error::io("create", dir, e))?;
    replace_file(intent, format!("{version}\n").as_bytes())?;
    let staged = tables
        .iter()
        .map(|t| {
            Ok((
                t,
                write_aside(&t.dir.join("CURRENT"), format!("{version}\n").as_bytes())?,
            ))
        })
        .collect::<Result<Vec<_>>>()?;
    {
        let _gate = SWAP_GATE.write().unwrap_or_else(|e| e.into_inner());
        for (table, tmp) in &staged {
            fs::rename(tmp, table.dir.join("CURRENT")).map_err(|e| {
                store_error(
                    &table.dir,
                    format!("swapping to version '{version}' failed ({e}); `{}` records the swap, which is completed when the pipeline is opened again (restart `flowline serve` once the folder can be written)", intent.display()),
                )
            })?;
        }
    }
    for (table, _) in &staged {
        crate::sink::sync_dir(&table.dir)?;
    }
    match fs::remove_file(intent) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io("delete", intent, e)),
    }
    crate::sink::sync_dir(dir)
}

/// Completes a [`swap_together`] of `tables` (the pipeline's serving tables) that did not
/// finish because the process stopped in the middle, and deletes `intent`. Returns the version,
/// or `None` when there is no unfinished swap.
pub fn finish_swap(tables: &[&ServingTable], intent: &Path) -> Result<Option<String>> {
    let version = match fs::read_to_string(intent) {
        Ok(t) => t.trim().to_string(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io("read", intent, e)),
    };
    swap_together(tables, &version, intent).map_err(|e| {
        store_error(
            intent,
            format!("an interrupted swap to version '{version}' could not be completed: {e}; once every serving table's CURRENT names the version readers should see, delete this file"),
        )
    })?;
    Ok(Some(version))
}

/// Whether two schemas have the same column names and types, in order.
pub fn same_columns(a: &Schema, b: &Schema) -> bool {
    a.fields().len() == b.fields().len()
        && a.fields()
            .iter()
            .zip(b.fields())
            .all(|(x, y)| x.name() == y.name() && x.data_type() == y.data_type())
}

fn describe(schema: &Schema) -> String {
    schema
        .fields()
        .iter()
        .map(|f| format!("{} {}", f.name(), f.data_type()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The key of the `seq`-th appended row of `epoch` in `generation`: they sort in publish order.
fn append_key(generation: u64, epoch: u64, seq: u64) -> [u8; 24] {
    let mut k = [0u8; 24];
    k[..8].copy_from_slice(&generation.to_be_bytes());
    k[8..16].copy_from_slice(&epoch.to_be_bytes());
    k[16..].copy_from_slice(&seq.to_be_bytes());
    k
}

impl Sink for TableSink {
    fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let width = self.schema.fields().len();
        let ops: Vec<u8> = if self.change_type {
            let column = arrow::compute::cast(batch.column(width), &DataType::Utf8)?;
            let text = column
                .as_any()
                .downcast_ref::<StringArray>()
                .ok_or_else(|| Error::Internal("change type is not text".into()))?;
            text.iter()
                .map(|t| if t == Some("delete") { DELETE } else { UPSERT })
                .collect()
        } else {
            vec![UPSERT; batch.num_rows()]
        };
        if self.key.is_empty() && ops.contains(&DELETE) {
            return Err(Error::Plan(format!(
                "serving table {} got a delete but has no PRIMARY KEY to find the row by; \
                 declare PRIMARY KEY (...) NOT ENFORCED",
                self.table
            )));
        }
        let columns = &batch.columns()[..width];
        let keys = match &self.keys {
            Some(conv) => {
                let key_columns: Vec<ArrayRef> =
                    self.key.iter().map(|&i| columns[i].clone()).collect();
                Some(conv.convert_columns(&key_columns)?)
            }
            None => None,
        };
        self.pending.push(PendingBatch {
            ops,
            keys,
            rows: self.rows.convert_columns(columns)?,
        });
        Ok(())
    }

    fn prepare(&mut self, epoch: u64) -> Result<Prepared> {
        let rows = self.pending.iter().map(|b| b.ops.len() as u64).sum();
        if self.job.is_some() {
            let txn = self.db.begin_write().map_err(|e| self.err(e))?;
            {
                let mut staged = txn.open_table(STAGED).map_err(|e| self.err(e))?;
                let mut buf = vec![];
                for (seq, (op, key, row)) in self.changes().enumerate() {
                    encode_change(&mut buf, op, key, row);
                    staged
                        .insert((epoch, seq as u64), buf.as_slice())
                        .map_err(|e| self.err(e))?;
                }
            }
            txn.commit().map_err(|e| self.err(e))?;
            self.pending.clear();
        }
        Ok(Prepared::Table { epoch, rows })
    }

    fn publish(&mut self, prepared: &Prepared) -> Result<SinkCommit> {
        let Prepared::Table { epoch, rows } = prepared else {
            return Err(wrong_prepared(&self.table, "table", prepared));
        };
        let epoch = *epoch;
        let txn = self.db.begin_write().map_err(|e| self.err(e))?;
        match &self.job {
            None if self.slice.is_some() => self.replace_slice(&txn)?,
            None => {
                // A batch run replaces the table.
                txn.delete_table(ROWS).map_err(|e| self.err(e))?;
                txn.delete_table(STAGED).map_err(|e| self.err(e))?;
                {
                    let mut table = txn.open_table(ROWS).map_err(|e| self.err(e))?;
                    for (seq, change) in self.changes().enumerate() {
                        self.apply(&mut table, change, &append_key(0, 0, seq as u64))?;
                    }
                    let mut m = txn.open_table(META).map_err(|e| self.err(e))?;
                    self.write_meta(&mut m, Some(&self.writer))?;
                    m.insert("published_epoch", 0u64.to_le_bytes().as_slice())
                        .map_err(|e| self.err(e))?;
                    m.insert("updated_ms", now_ms().to_le_bytes().as_slice())
                        .map_err(|e| self.err(e))?;
                }
                self.pending.clear();
            }
            Some(_) => {
                let published = {
                    let m = txn.open_table(META).map_err(|e| self.err(e))?;
                    read_meta(&m, &self.path)?.published_epoch
                };
                let epoch_range = (epoch, 0)..=(epoch, u64::MAX);
                let mut staged = txn.open_table(STAGED).map_err(|e| self.err(e))?;
                if epoch > published {
                    let mut table = txn.open_table(ROWS).map_err(|e| self.err(e))?;
                    for entry in staged.range(epoch_range.clone()).map_err(|e| self.err(e))? {
                        let (k, v) = entry.map_err(|e| self.err(e))?;
                        let change = decode_change(v.value(), &self.path)?;
                        let key = append_key(self.generation, epoch, k.value().1);
                        self.apply(&mut table, change, &key)?;
                    }
                    let mut m = txn.open_table(META).map_err(|e| self.err(e))?;
                    m.insert("published_epoch", epoch.to_le_bytes().as_slice())
                        .map_err(|e| self.err(e))?;
                    m.insert("updated_ms", now_ms().to_le_bytes().as_slice())
                        .map_err(|e| self.err(e))?;
                }
                staged
                    .retain_in(epoch_range, |_, _| false)
                    .map_err(|e| self.err(e))?;
            }
        }
        txn.commit().map_err(|e| self.err(e))?;
        Ok(SinkCommit {
            rows: *rows,
            files: vec![],
        })
    }
}
