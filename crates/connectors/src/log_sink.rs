//! The log sink (`connector = 'log'`): rows become records of a topic of the embedded log
//! ([`flowline_log`]).
//!
//! * **Options.** `topic` (required; the topic must exist), `format` = `json` (default, one JSON
//!   object per row, encoded exactly as the files sink's JSON lines) or `csv` (one CSV line per
//!   row, no header, as the files sink's CSV), `key.fields` (columns separated by `;` or `,`),
//!   `log.dir` (else the runtime's default log folder).
//! * **Keys and partitions.** With one key field the key is the field's value as text: a string
//!   as it is, anything else as its JSON text (what `flowline log produce --key` does); with
//!   several, the JSON array of their values. A record with a key goes to
//!   [`flowline_log::partition_for_key`]; a record without (no `key.fields`, or a NULL key field)
//!   goes to partition `(row index within the epoch) % partitions`, so that a replayed epoch lands
//!   exactly as the first time.
//! * **Staging.** Encoded records go to a file in a staging folder as rows arrive (nothing
//!   unbounded is kept in memory); `prepare(epoch)` syncs it, names it by the epoch and notes per
//!   partition the base offset (the end offset the partition will have when the epochs prepared
//!   before are published) and the record count. `publish` compares each partition's end with
//!   that range: at `base` it appends all, inside it appends the missing suffix (a crash in the
//!   middle of a publish), at `base + count` nothing; anything else means another writer
//!   changed the topic, an error. The sink holds the writer (and its file lock) of every
//!   partition for its whole life, so no other writer can interleave.
//! * **Modes.** In [`SinkMode::Epochs`] the staging folder is `<staging>/log-<table>`; in
//!   [`SinkMode::Run`] it is a private temporary folder removed when the sink is dropped, and
//!   commit appends everything at the end of the run.
//!
//! Staged file format: per record, `partition: u32`, `key length: u32` (`u32::MAX` for no key),
//! key, `value length: u32`, value (little endian).

use std::cell::RefCell;
use std::fs::{self, File};
use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;

use arrow::array::AsArray;
use arrow::array::RecordBatch;
use arrow::datatypes::{Schema, SchemaRef};
use flowline_core::{Error, Result, TableDef};
use flowline_log::{Log, PartitionWriter, Topic};
use serde_json::Value;

use crate::options;
use crate::sink::{
    remove_entries, safe_name, sync_dir, wrong_prepared, Prepared, PreparedPartition, Sink,
    SinkCommit, SinkContext, SinkMode,
};

const LOG_SINK_OPTIONS: &[&str] = &["connector", "topic", "format", "key.fields", "log.dir"];
const LOG_FORMATS: &[&str] = &["json", "csv"];
const NO_KEY: u32 = u32::MAX;
/// The file rows are staged in until the next prepare.
const PENDING: &str = "pending.records";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LogFormat {
    Json,
    Csv,
}

#[derive(Debug, Clone)]
pub(crate) struct LogConfig {
    topic: String,
    format: LogFormat,
    key_fields: Vec<String>,
}

/// Parses and checks the options of a log sink (the topic is looked up by [`LogSink::open`]).
pub(crate) fn parse(def: &TableDef) -> Result<LogConfig> {
    options::check_known(def, LOG_SINK_OPTIONS)?;
    let topic = options::required(def, "topic")?.trim().to_string();
    let valid_name = !topic.is_empty()
        && topic.len() <= 200
        && !topic.starts_with('.')
        && topic
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-');
    if !valid_name {
        return Err(Error::option(
            &def.name,
            format!(
                "invalid value '{topic}' for option `topic`: a topic name is 1 to 200 letters, \
                 digits, `.`, `_` or `-`, not starting with `.`"
            ),
        ));
    }
    let format = match def.option("format") {
        None => LogFormat::Json,
        Some(f) if f.eq_ignore_ascii_case("json") => LogFormat::Json,
        Some(f) if f.eq_ignore_ascii_case("csv") => LogFormat::Csv,
        Some(f) => {
            return Err(Error::option(
                &def.name,
                format!(
                    "unknown format '{f}' in option `format` for connector 'log' (valid formats: \
                     {})",
                    options::quoted_list(LOG_FORMATS)
                ),
            ))
        }
    };
    let key_fields = options::column_list(
        def,
        "key.fields",
        &[';', ','],
        "column names separated by ';' or ','",
    )?;
    Ok(LogConfig {
        topic,
        format,
        key_fields,
    })
}

/// A `Write` into a buffer the caller can take from between writes.
struct Shared(Rc<RefCell<Vec<u8>>>);

impl Write for Shared {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.borrow_mut().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The encoded rows of a batch: one value per row, without line terminator.
fn encode_rows(batch: &RecordBatch, format: LogFormat) -> Result<Vec<Vec<u8>>> {
    let rows = batch.num_rows();
    let mut values = Vec::with_capacity(rows);
    match format {
        LogFormat::Json => {
            let mut buf = Vec::new();
            let mut writer = arrow::json::LineDelimitedWriter::new(&mut buf);
            writer.write(batch)?;
            writer.finish()?;
            // JSON escapes line breaks inside strings: every line is one row.
            values.extend(buf.split(|b| *b == b'\n').take(rows).map(<[u8]>::to_vec));
        }
        LogFormat::Csv => {
            // A CSV value may hold a line break: write row by row (the writer flushes after every
            // write).
            let buf = Rc::new(RefCell::new(Vec::new()));
            let mut writer = arrow::csv::WriterBuilder::new()
                .with_header(false)
                .build(Shared(Rc::clone(&buf)));
            for row in 0..rows {
                writer.write(&batch.slice(row, 1))?;
                let mut value = std::mem::take(&mut *buf.borrow_mut());
                if value.last() == Some(&b'\n') {
                    value.pop();
                    if value.last() == Some(&b'\r') {
                        value.pop();
                    }
                }
                values.push(value);
            }
        }
    }
    if values.len() != rows {
        return Err(Error::Internal(format!(
            "encoded {} records for {rows} rows",
            values.len()
        )));
    }
    Ok(values)
}

/// The key of every row: its key fields' values as the JSON writer renders them (see the module
/// docs). `None` for a row whose only key field is NULL.
fn encode_keys(keys: &RecordBatch, single: Option<&str>) -> Result<Vec<Option<Vec<u8>>>> {
    // The common case, one string key: its text, without a JSON round trip per row.
    if let (Some(_), [column]) = (single, keys.columns()) {
        if let Some(strings) = column.as_string_opt::<i32>() {
            return Ok(strings
                .iter()
                .map(|v| v.map(|s| s.as_bytes().to_vec()))
                .collect());
        }
    }
    let names: Vec<String> = keys
        .schema_ref()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    let lines = encode_rows(keys, LogFormat::Json)?;
    lines
        .iter()
        .map(|line| {
            let Value::Object(object) = serde_json::from_slice::<Value>(line)
                .map_err(|e| Error::Internal(format!("cannot read back an encoded key: {e}")))?
            else {
                return Err(Error::Internal("an encoded key is not an object".into()));
            };
            Ok(match single {
                Some(field) => match object.get(field) {
                    None | Some(Value::Null) => None,
                    Some(Value::String(s)) => Some(s.as_bytes().to_vec()),
                    Some(other) => Some(other.to_string().into_bytes()),
                },
                None => {
                    let values: Vec<Value> = names
                        .iter()
                        .map(|n| object.get(n).cloned().unwrap_or(Value::Null))
                        .collect();
                    Some(Value::Array(values).to_string().into_bytes())
                }
            })
        })
        .collect()
}

pub(crate) struct LogSink {
    table: String,
    topic: Topic,
    format: LogFormat,
    /// Positions of the key columns in the written rows, and their schema.
    key_cols: Vec<usize>,
    key_schema: SchemaRef,
    columns: usize,
    /// The writer of every partition, held (locked) for the sink's life.
    writers: Vec<PartitionWriter>,
    /// Per partition, the end offset once every prepared epoch is published.
    reserved: Vec<u64>,
    staging: PathBuf,
    /// Run mode: `staging` is a temporary folder, removed on drop.
    temporary: bool,
    pending: Option<BufWriter<File>>,
    /// Records staged since the last prepare, per partition.
    pending_counts: Vec<u64>,
    /// Rows written since the last prepare.
    epoch_rows: u64,
}

impl LogSink {
    pub(crate) fn open(
        def: &TableDef,
        config: LogConfig,
        schema: SchemaRef,
        ctx: &SinkContext,
    ) -> Result<LogSink> {
        let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        let key_cols = options::column_positions(def, "key.fields", &config.key_fields, &names)?;
        let key_schema = Arc::new(Schema::new(
            key_cols
                .iter()
                .map(|&i| schema.field(i).clone())
                .collect::<Vec<_>>(),
        ));

        let topic = open_topic(def, &config.topic, ctx)?;
        let writers = (0..topic.partitions())
            .map(|p| topic.writer(p))
            .collect::<Result<Vec<_>>>()?;
        let reserved = writers.iter().map(PartitionWriter::next_offset).collect();
        let (staging, temporary) = match &ctx.mode {
            SinkMode::Run { run_id, .. } => (
                std::env::temp_dir().join(format!(
                    "flowline-log-sink-{}-{}-{}-{}",
                    std::process::id(),
                    safe_name(run_id),
                    safe_name(&def.name),
                    std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map(|d| d.as_nanos())
                        .unwrap_or(0)
                )),
                true,
            ),
            SinkMode::Epochs { staging, .. } => {
                (staging.join(format!("log-{}", safe_name(&def.name))), false)
            }
        };
        fs::create_dir_all(&staging).map_err(|e| Error::io("create", &staging, e))?;
        let mut sink = LogSink {
            table: def.name.clone(),
            pending_counts: vec![0; writers.len()],
            topic,
            format: config.format,
            key_cols,
            key_schema,
            columns: names.len(),
            writers,
            reserved,
            staging,
            temporary,
            pending: None,
            epoch_rows: 0,
        };
        if let SinkMode::Epochs { resume, .. } = &ctx.mode {
            if let Some(prepared) = resume {
                sink.publish_prepared(prepared)?;
            }
            sink.clear_staging()?;
        }
        Ok(sink)
    }

    fn staged_path(&self, name: &str) -> PathBuf {
        self.staging.join(name)
    }

    /// Removes every staged file (after the resumed epoch was published).
    fn clear_staging(&self) -> Result<()> {
        remove_entries(&self.staging, |_| true)?;
        sync_dir(&self.staging)
    }

    fn pending_writer(&mut self) -> Result<&mut BufWriter<File>> {
        if self.pending.is_none() {
            let path = self.staged_path(PENDING);
            let file = File::create(&path).map_err(|e| Error::io("create", &path, e))?;
            self.pending = Some(BufWriter::with_capacity(1 << 16, file));
        }
        Ok(self.pending.as_mut().expect("pending file just created"))
    }

    /// Appends a prepared epoch's records that are not in the topic yet.
    fn publish_prepared(&mut self, prepared: &Prepared) -> Result<SinkCommit> {
        let Prepared::Log {
            epoch,
            topic,
            staged,
            partitions,
        } = prepared
        else {
            return Err(wrong_prepared(&self.table, "log", prepared));
        };
        let epoch = *epoch;
        if topic != self.topic.name() {
            return Err(Error::Plan(format!(
                "cannot publish epoch {epoch} of table `{}`: it was prepared for topic `{topic}`, \
                 but the table now writes to topic `{}`",
                self.table,
                self.topic.name()
            )));
        }
        // What each partition already has of this epoch; checked for every partition before
        // anything is appended.
        let mut already = vec![0u64; self.writers.len()];
        let mut expected = vec![0u64; self.writers.len()];
        let mut missing = 0u64;
        for part in partitions {
            let p = part.partition as usize;
            let Some(writer) = self.writers.get(p) else {
                return Err(Error::Plan(format!(
                    "cannot publish epoch {epoch} of table `{}`: it was prepared for partition \
                     {p} of topic `{topic}`, which now has {} partitions",
                    self.table,
                    self.writers.len()
                )));
            };
            let end = writer.next_offset();
            let (base, count) = (part.base_offset, part.records);
            let have = if end >= base && end <= base + count {
                end - base
            } else {
                return Err(Error::Plan(format!(
                    "cannot publish epoch {epoch} of table `{}`: partition {p} of topic \
                     `{topic}` ends at offset {end}, but the epoch was prepared for offsets \
                     {base} to {} (its {count} records go after offset {base}). Another writer \
                     changed the topic since the checkpoint (a sink needs to be the topic's only \
                     writer for exactly-once output)",
                    self.table,
                    base + count,
                )));
            };
            already[p] = have;
            expected[p] = count;
            missing += count - have;
        }
        let total: u64 = partitions.iter().map(|p| p.records).sum();
        let staged_path = staged.as_deref().map(|s| self.staged_path(s));
        if missing > 0 {
            let Some(path) = &staged_path else {
                return Err(Error::Internal(format!(
                    "prepared epoch {epoch} of table `{}` has records but no staged file",
                    self.table
                )));
            };
            let file = File::open(path).map_err(|e| {
                Error::io(
                    "publish",
                    path,
                    std::io::Error::new(
                        e.kind(),
                        format!(
                            "the staged records of epoch {epoch} of table `{}` cannot be read \
                             ({e}), and {missing} of them are not in topic `{topic}`",
                            self.table
                        ),
                    ),
                )
            })?;
            let timestamp = flowline_log::now_ms();
            let mut reader = BufReader::with_capacity(1 << 16, file);
            let mut seen = vec![0u64; self.writers.len()];
            let mut appended = vec![false; self.writers.len()];
            while let Some((p, key, value)) = read_record(&mut reader, path)? {
                let p = p as usize;
                if p >= self.writers.len() || seen[p] >= expected[p] {
                    return Err(staged_mismatch(path, epoch));
                }
                seen[p] += 1;
                if seen[p] > already[p] {
                    self.writers[p].append(key.as_deref(), &value, timestamp)?;
                    appended[p] = true;
                }
            }
            if seen != expected {
                return Err(staged_mismatch(path, epoch));
            }
            for (writer, appended) in self.writers.iter_mut().zip(appended) {
                if appended {
                    writer.flush()?;
                }
            }
        }
        if let Some(path) = &staged_path {
            match fs::remove_file(path) {
                Ok(()) => sync_dir(&self.staging)?,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io("remove", path, e)),
            }
        }
        for (reserved, writer) in self.reserved.iter_mut().zip(&self.writers) {
            *reserved = (*reserved).max(writer.next_offset());
        }
        Ok(SinkCommit {
            rows: total,
            files: Vec::new(),
        })
    }
}

fn staged_mismatch(path: &Path, epoch: u64) -> Error {
    Error::io(
        "publish",
        path,
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("the staged records do not match what was prepared for epoch {epoch}"),
        ),
    )
}

/// A staged record: partition, key, value.
type StagedRecord = (u32, Option<Vec<u8>>, Vec<u8>);

/// Reads one staged record; `None` at the end of the file.
fn read_record(reader: &mut BufReader<File>, path: &Path) -> Result<Option<StagedRecord>> {
    let io = |e: std::io::Error| Error::io("read", path, e);
    if reader.fill_buf().map_err(io)?.is_empty() {
        return Ok(None);
    }
    let mut word = [0u8; 4];
    let mut read_u32 = |reader: &mut BufReader<File>| -> Result<u32> {
        reader.read_exact(&mut word).map_err(io)?;
        Ok(u32::from_le_bytes(word))
    };
    let partition = read_u32(reader)?;
    let key_len = read_u32(reader)?;
    let key = if key_len == NO_KEY {
        None
    } else {
        let mut key = vec![0u8; key_len as usize];
        reader.read_exact(&mut key).map_err(io)?;
        Some(key)
    };
    let value_len = read_u32(reader)?;
    let mut value = vec![0u8; value_len as usize];
    reader.read_exact(&mut value).map_err(io)?;
    Ok(Some((partition, key, value)))
}

/// Opens the topic, with errors that say how to create it.
fn open_topic(def: &TableDef, name: &str, ctx: &SinkContext) -> Result<Topic> {
    let dir = crate::log_dir(def, &ctx.base_dir, &ctx.log_dir);
    let create = format!(
        "create it with `flowline log create {name} --partitions N --log-dir {}`",
        dir.display()
    );
    if !dir.is_dir() {
        return Err(Error::option(
            &def.name,
            format!(
                "option `topic` names topic `{name}`, which does not exist: there is no log \
                 folder `{}` ({create}, or set option `log.dir`)",
                dir.display()
            ),
        ));
    }
    Log::open(&dir)
        .and_then(|log| log.topic(name))
        .map_err(|e| {
            Error::option(
                &def.name,
                format!(
                    "option `topic` names topic `{name}`, which cannot be opened: {e}; {create}"
                ),
            )
        })
}

impl Sink for LogSink {
    fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        if batch.num_columns() != self.columns {
            return Err(Error::Internal(format!(
                "sink got a batch of {} columns, expected {}",
                batch.num_columns(),
                self.columns
            )));
        }
        let values = encode_rows(batch, self.format)?;
        let keys = if self.key_cols.is_empty() {
            None
        } else {
            let columns = self
                .key_cols
                .iter()
                .map(|&i| Arc::clone(batch.column(i)))
                .collect();
            let key_batch = RecordBatch::try_new(Arc::clone(&self.key_schema), columns)?;
            let single = (self.key_cols.len() == 1).then(|| self.key_schema.field(0).name());
            Some(encode_keys(&key_batch, single.map(String::as_str))?)
        };
        let partitions = self.writers.len() as u64;
        let mut row_index = self.epoch_rows;
        let mut counts = std::mem::take(&mut self.pending_counts);
        let path = self.staged_path(PENDING);
        let table = self.table.clone();
        let out = self.pending_writer()?;
        let mut put = |bytes: &[u8]| {
            out.write_all(bytes)
                .map_err(|e| Error::io("write", &path, e))
        };
        for (row, value) in values.iter().enumerate() {
            let key = keys.as_ref().and_then(|k| k[row].as_deref());
            let partition = match key {
                Some(k) => flowline_log::partition_for_key(k, partitions as u32),
                None => (row_index % partitions) as u32,
            };
            let too_big = || {
                Error::Plan(format!(
                    "a row of table `{table}` encodes to a record larger than 4 GiB"
                ))
            };
            put(&partition.to_le_bytes())?;
            match key {
                Some(k) => {
                    let len = u32::try_from(k.len())
                        .ok()
                        .filter(|&l| l != NO_KEY)
                        .ok_or_else(too_big)?;
                    put(&len.to_le_bytes())?;
                    put(k)?;
                }
                None => put(&NO_KEY.to_le_bytes())?,
            }
            let len = u32::try_from(value.len()).map_err(|_| too_big())?;
            put(&len.to_le_bytes())?;
            put(value)?;
            counts[partition as usize] += 1;
            row_index += 1;
        }
        self.pending_counts = counts;
        self.epoch_rows = row_index;
        Ok(())
    }

    fn prepare(&mut self, epoch: u64) -> Result<Prepared> {
        let topic = self.topic.name().to_string();
        let Some(pending) = self.pending.take() else {
            return Ok(Prepared::Log {
                epoch,
                topic,
                staged: None,
                partitions: Vec::new(),
            });
        };
        let path = self.staged_path(PENDING);
        let file = pending
            .into_inner()
            .map_err(|e| Error::io("write", &path, e.into_error()))?;
        file.sync_all().map_err(|e| Error::io("sync", &path, e))?;
        drop(file);
        let name = format!("epoch-{epoch:010}.records");
        let staged = self.staged_path(&name);
        if staged.exists() {
            return Err(Error::Internal(format!(
                "epoch {epoch} of table `{}` was prepared twice",
                self.table
            )));
        }
        fs::rename(&path, &staged).map_err(|e| Error::io("rename", &path, e))?;
        sync_dir(&self.staging)?;
        let mut partitions = Vec::new();
        for (p, count) in std::mem::take(&mut self.pending_counts)
            .into_iter()
            .enumerate()
        {
            if count > 0 {
                partitions.push(PreparedPartition {
                    partition: p as u32,
                    base_offset: self.reserved[p],
                    records: count,
                });
                self.reserved[p] += count;
            }
        }
        self.pending_counts = vec![0; self.writers.len()];
        self.epoch_rows = 0;
        Ok(Prepared::Log {
            epoch,
            topic,
            staged: Some(name),
            partitions,
        })
    }

    fn publish(&mut self, prepared: &Prepared) -> Result<SinkCommit> {
        self.publish_prepared(prepared)
    }
}

impl Drop for LogSink {
    fn drop(&mut self) {
        self.pending = None;
        if self.temporary {
            let _ = fs::remove_dir_all(&self.staging);
        } else {
            // Epochs: like a crash, staged epochs stay for the next open to publish or remove;
            // only an empty staging folder is removed (remove_dir fails on anything else).
            let _ = fs::remove_dir(&self.staging);
        }
    }
}
