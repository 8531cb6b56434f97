//! Log sources (`connector = 'log'`): a topic of the embedded log, one record per row, decoded
//! from JSON objects or CSV lines by the same conversion step as files.
//!
//! Positions are per-partition offsets ("next offset to read"); the runtime records them in
//! checkpoints and reads with [`flowline_log::PartitionReader`]. A rejected record names the
//! partition folder as its `file` and its offset as its `line`.
//!
//! Options:
//! * `topic` (required), `format` = `json` (default) | `csv`, `log.dir`;
//! * `scan.startup.mode` = `earliest-offset` (default) | `latest-offset` | `group-offsets`
//!   (short forms `earliest`, `latest`, `group` accepted): where a job without a checkpoint
//!   starts; a checkpoint's positions always win;
//! * `properties.group.id` (or `group`): the consumer group whose offsets `group-offsets` starts
//!   from and to which the runtime commits offsets after its sinks commit;
//! * `scan.bounded.mode` = `unbounded` (default) | `latest-offset`: a bounded source stops at
//!   the offsets that were the end when the job started, then ends with the maximum watermark;
//!   batch mode always reads a log source this way;
//! * `scan.watermark.idle-timeout`: a partition without new records for this long no longer
//!   holds the source's watermark back (default: never idle, as in Flink);
//! * `csv.field-delimiter`, `csv.quote-character`, `csv.null-literal`, `timestamp-format`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use flowline_core::{Error, RejectReason, Result, TableDef};
use flowline_log::{Log, PartitionReader, Record, Topic};

use crate::convert::{is_string_type, text_convertible, Converter};
use crate::json_row::JsonColumns;
use crate::options;
use crate::source::{csv_cell, Decoded, TextBatch};

const LOG_SOURCE_OPTIONS: &[&str] = &[
    "connector",
    "topic",
    "format",
    "log.dir",
    "scan.startup.mode",
    "scan.bounded.mode",
    "scan.watermark.idle-timeout",
    "properties.group.id",
    "group",
    "csv.field-delimiter",
    "csv.quote-character",
    "csv.null-literal",
    "timestamp-format",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LogFormat {
    Json,
    Csv,
}

/// Where a job without a checkpoint starts reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Startup {
    Earliest,
    Latest,
    /// The group's committed offsets; partitions without one start at the earliest offset.
    GroupOffsets,
}

/// A topic read as a table. `Send + Sync`.
pub struct LogSource {
    name: String,
    topic: Topic,
    format: LogFormat,
    /// Configured once; each CSV record gets a small reader over its own bytes.
    csv: csv::ReaderBuilder,
    null_literal: Option<String>,
    converter: Converter,
    pub startup: Startup,
    pub group: Option<String>,
    pub bounded: bool,
    pub idle_timeout_ms: Option<i64>,
    /// The folder of each partition (what rejects name as their file).
    partition_dirs: Vec<PathBuf>,
}

impl LogSource {
    /// Validates the options and opens the topic under `log.dir` (else `default_log_dir`).
    pub fn open(def: &TableDef, base_dir: &Path, default_log_dir: &Path) -> Result<LogSource> {
        options::check_known(def, LOG_SOURCE_OPTIONS)?;
        options::connector(def, &["log"])?;
        let topic_name = options::required(def, "topic")?;
        let format = match def.option("format").map(str::to_ascii_lowercase).as_deref() {
            None | Some("json") => LogFormat::Json,
            Some("csv") => LogFormat::Csv,
            Some(other) => {
                return Err(Error::option(
                    &def.name,
                    format!(
                        "unknown format '{other}' in option `format` for connector 'log' (valid \
                         formats: 'json', 'csv')"
                    ),
                ))
            }
        };
        if format == LogFormat::Json {
            options::check_no_csv_options(def, "json")?;
        }
        if let Some(c) = def.columns.iter().find(|c| !text_convertible(&c.data_type)) {
            return Err(Error::option(
                &def.name,
                format!(
                    "column `{}` has type {}, which a log record cannot carry",
                    c.name, c.data_type
                ),
            ));
        }
        let group = def
            .option("properties.group.id")
            .or_else(|| def.option("group"))
            .map(str::to_string);
        let startup = match def
            .option("scan.startup.mode")
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            None | Some("earliest-offset") | Some("earliest") => Startup::Earliest,
            Some("latest-offset") | Some("latest") => Startup::Latest,
            Some("group-offsets") | Some("group") => {
                if group.is_none() {
                    return Err(Error::option(
                        &def.name,
                        "option `scan.startup.mode` = 'group-offsets' needs a consumer group: \
                         set `properties.group.id`",
                    ));
                }
                Startup::GroupOffsets
            }
            Some(other) => {
                return Err(Error::option(
                    &def.name,
                    format!(
                        "invalid value '{other}' for option `scan.startup.mode` (valid: \
                         'earliest-offset', 'latest-offset', 'group-offsets')"
                    ),
                ))
            }
        };
        let bounded = match def
            .option("scan.bounded.mode")
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            None | Some("unbounded") => false,
            Some("latest-offset") | Some("latest") => true,
            Some(other) => {
                return Err(Error::option(
                    &def.name,
                    format!(
                        "invalid value '{other}' for option `scan.bounded.mode` (valid: \
                         'unbounded', 'latest-offset')"
                    ),
                ))
            }
        };
        let idle_timeout_ms = match def.option("scan.watermark.idle-timeout") {
            None => None,
            Some(text) => {
                let ms = flowline_log::parse_duration_ms(text).map_err(|e| {
                    Error::option(
                        &def.name,
                        format!(
                            "invalid value '{text}' for option `scan.watermark.idle-timeout`: {e}"
                        ),
                    )
                })?;
                (ms > 0).then_some(ms)
            }
        };
        let timestamp_format = options::timestamp_format(def)?;
        let converter = Converter::new(def, timestamp_format)?;
        let dir = options::log_dir(def, base_dir, default_log_dir);
        let log = Log::open(&dir)?;
        let topic = log.topic(topic_name).map_err(|e| {
            Error::option(
                &def.name,
                format!(
                    "cannot read topic '{topic_name}' in the log at `{}`: {e} (create it with \
                     `flowline log create {topic_name} --partitions N`, or point `log.dir` or \
                     $FLOWLINE_LOG_DIR at the right log)",
                    dir.display()
                ),
            )
        })?;
        let partition_dirs = (0..topic.partitions())
            .map(|p| dir.join(topic_name).join(p.to_string()))
            .collect();
        Ok(LogSource {
            name: def.name.clone(),
            format,
            csv: {
                let mut b = csv::ReaderBuilder::new();
                b.has_headers(false)
                    .flexible(true)
                    .delimiter(options::char_option(def, "csv.field-delimiter", b',')?)
                    .quote(options::char_option(def, "csv.quote-character", b'"')?)
                    // Records are single lines: a small buffer, not the default 8 KiB per record.
                    .buffer_capacity(256);
                b
            },
            null_literal: def.option("csv.null-literal").map(str::to_string),
            converter,
            startup,
            group,
            bounded,
            idle_timeout_ms,
            partition_dirs,
            topic,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The declared schema: every decoded batch has exactly this schema.
    pub fn schema(&self) -> SchemaRef {
        Arc::clone(self.converter.output_schema())
    }

    pub fn topic(&self) -> &Topic {
        &self.topic
    }

    pub fn partitions(&self) -> u32 {
        self.topic.partitions()
    }

    /// The partition whose folder a reject names as its `file`.
    pub fn partition_of(&self, file: &str) -> Option<u32> {
        let canonical = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
        let file = canonical(Path::new(file));
        self.partition_dirs
            .iter()
            .position(|d| canonical(d) == file)
            .map(|p| p as u32)
    }

    /// A reader per partition. Kept open, a reader finds the partition's end incrementally
    /// (a new one scans the newest segment), so jobs ask their readers, not the topic.
    pub fn readers(&self) -> Result<Vec<PartitionReader>> {
        (0..self.partitions())
            .map(|p| self.topic.reader(p))
            .collect()
    }

    /// The offsets a job without a checkpoint starts at, one per partition, given the
    /// partitions' `(start, end)` offsets.
    pub fn start_offsets(&self, ranges: &[(u64, u64)]) -> Result<Vec<u64>> {
        let committed = match (&self.group, self.startup) {
            (Some(g), Startup::GroupOffsets) => self.topic.committed(g)?,
            _ => BTreeMap::new(),
        };
        Ok(ranges
            .iter()
            .enumerate()
            .map(|(p, &(start, end))| {
                let at = match self.startup {
                    Startup::Earliest => start,
                    Startup::Latest => end,
                    Startup::GroupOffsets => committed
                        .get(&(p as u32))
                        .copied()
                        .unwrap_or(start)
                        .max(start),
                };
                at.min(end)
            })
            .collect())
    }

    /// Commits `offsets` (next offsets to read) for the source's consumer group, if it has one.
    pub fn commit_group(&self, offsets: &BTreeMap<u32, u64>) -> Result<()> {
        match &self.group {
            Some(g) if !offsets.is_empty() => self.topic.commit_offsets(g, offsets),
            _ => Ok(()),
        }
    }

    /// Decodes records of one partition into a batch of the declared schema plus rejects.
    pub fn decode(&self, partition: u32, records: &[Record]) -> Result<Decoded> {
        let path = self
            .partition_dirs
            .get(partition as usize)
            .cloned()
            .unwrap_or_default();
        let schema = Arc::clone(self.converter.schema()); // physical columns: computed ones come after decoding
        let fields = schema.fields();
        // CSV only: JSON columns know their own.
        let is_string: Vec<bool> = match self.format {
            LogFormat::Json => vec![],
            LogFormat::Csv => fields
                .iter()
                .map(|f| is_string_type(f.data_type()))
                .collect(),
        };
        let mut body = Vec::with_capacity(records.iter().map(|r| r.value.len()).sum());
        let mut json = (self.format == LogFormat::Json)
            .then(|| JsonColumns::new(fields, vec![None; fields.len()]));
        let mut batch = match &json {
            Some(json) => json.text_batch(records.len()),
            None => TextBatch::new(fields.len(), records.len()),
        };
        let mut csv_record = csv::ByteRecord::new();
        for record in records {
            let start = body.len();
            body.extend_from_slice(&record.value);
            batch.spans.push((record.offset, start, body.len()));
            // JSON topics decode through `json`, built once per call; CSV topics have none.
            match &mut json {
                Some(json) => json.decode_row(&mut batch, &record.value),
                None => self.csv_row(&mut batch, &record.value, &is_string, &mut csv_record),
            }
        }
        batch.finish(&self.converter, &path, &body)
    }

    /// One CSV line (no header: columns in declared order) into the next row of `batch`.
    fn csv_row(
        &self,
        batch: &mut TextBatch,
        value: &[u8],
        is_string: &[bool],
        record: &mut csv::ByteRecord,
    ) {
        let row = batch.spans.len() - 1;
        let mut reader = self.csv.from_reader(value);
        let expected = is_string.len();
        let failure = match reader.read_byte_record(record) {
            Err(e) => Some((RejectReason::MalformedCsv, e.to_string())),
            Ok(false) => Some((RejectReason::MalformedCsv, "empty record".to_string())),
            Ok(true) if record.len() != expected => Some((
                RejectReason::MalformedCsv,
                format!("expected {expected} fields, found {}", record.len()),
            )),
            Ok(true) => (0..expected).find_map(|i| {
                std::str::from_utf8(&record[i]).err().map(|e| {
                    (
                        RejectReason::BadValue,
                        format!("field {}: invalid UTF-8: {e}", i + 1),
                    )
                })
            }),
        };
        if let Some((reason, detail)) = failure {
            batch.failures.set(row, reason, detail);
            batch.append_nulls();
            return;
        }
        for (c, builder) in batch.builders.iter_mut().enumerate() {
            let text = std::str::from_utf8(&record[c]).unwrap_or("");
            builder.append_option(csv_cell(text, is_string[c], self.null_literal.as_deref()));
        }
    }
}
