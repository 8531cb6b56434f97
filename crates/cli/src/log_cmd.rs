//! `flowline log create|produce|consume|describe`: the embedded log from the command line.
//!
//! The log folder is `--log-dir DIR`, else `$FLOWLINE_LOG_DIR`, else `.flowline/log` in the
//! current directory. Topics hold JSON: `produce` stores JSON lines as given and CSV rows as
//! JSON objects of header → string value.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand, ValueEnum};
use flowline_log::{
    format_bytes, format_duration_ms, now_ms, parse_bytes, parse_duration_ms, FsyncPolicy, Log,
    Producer, Record, Topic, TopicConfig, TopicDescription,
};
use serde_json::Value;

/// Where the log lives.
#[derive(Args, Clone, Debug)]
pub struct LogDir {
    /// The log folder (default: $FLOWLINE_LOG_DIR, else .flowline/log in the current directory).
    #[arg(long, value_name = "DIR")]
    log_dir: Option<PathBuf>,
}

impl LogDir {
    pub(crate) fn path(&self) -> PathBuf {
        self.log_dir
            .clone()
            .or_else(|| {
                std::env::var_os("FLOWLINE_LOG_DIR")
                    .filter(|v| !v.is_empty())
                    .map(PathBuf::from)
            })
            .unwrap_or_else(|| PathBuf::from(".flowline/log"))
    }

    /// Opens the log, creating its folder only when asked to (`create`).
    fn open(&self, create: bool) -> Result<Log> {
        let path = self.path();
        if !create && !path.is_dir() {
            bail!(
                "no log at `{}` (create a topic first with `flowline log create`, or point \
                 --log-dir / FLOWLINE_LOG_DIR at the log)",
                path.display()
            );
        }
        Ok(Log::open(&path)?)
    }

    fn topic(&self, name: &str) -> Result<Topic> {
        Ok(self.open(false)?.topic(name)?)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum InputFormat {
    /// One JSON object per line.
    Json,
    /// CSV with a header row.
    Csv,
}

fn duration_arg(s: &str) -> Result<i64, String> {
    parse_duration_ms(s).map_err(|e| e.to_string())
}

fn bytes_arg(s: &str) -> Result<u64, String> {
    parse_bytes(s).map_err(|e| e.to_string())
}

fn fsync_arg(s: &str) -> Result<FsyncPolicy, String> {
    s.parse().map_err(|e: flowline_core::Error| e.to_string())
}

#[derive(Subcommand, Debug)]
pub enum LogCommand {
    /// Create a topic.
    Create {
        topic: String,
        /// Number of partitions (fixed for the topic's life).
        #[arg(long, default_value_t = 1)]
        partitions: u32,
        /// Delete sealed segments whose newest record is older than this (e.g. 7d, 12h).
        #[arg(long, value_name = "AGE", value_parser = duration_arg)]
        retention: Option<i64>,
        /// Delete the oldest sealed segments while a partition is larger than this (e.g. 1GB).
        #[arg(long, value_name = "SIZE", value_parser = bytes_arg)]
        retention_bytes: Option<u64>,
        /// Roll to a new segment file at this size.
        #[arg(long, value_name = "SIZE", value_parser = bytes_arg, default_value = "64MiB")]
        segment_bytes: u64,
        /// Default fsync policy of writers: always, never, or an interval such as 1s.
        #[arg(long, value_name = "POLICY", value_parser = fsync_arg, default_value = "1s")]
        fsync: FsyncPolicy,
        #[command(flatten)]
        dir: LogDir,
    },
    /// Append records read from standard input (or --file): JSON lines or CSV.
    Produce {
        topic: String,
        /// The field (JSON) or column (CSV) whose value is the record key; records with the same
        /// key go to the same partition. Without it, records go round-robin.
        #[arg(long, value_name = "FIELD")]
        key: Option<String>,
        #[arg(long, value_enum, default_value_t = InputFormat::Json)]
        format: InputFormat,
        /// Read this file instead of standard input.
        #[arg(long, value_name = "FILE")]
        file: Option<PathBuf>,
        /// Override the topic's fsync policy: always, never, or an interval such as 1s.
        #[arg(long, value_name = "POLICY", value_parser = fsync_arg)]
        fsync: Option<FsyncPolicy>,
        #[command(flatten)]
        dir: LogDir,
    },
    /// Print records, one value per line. Without --from-beginning or --offset, starts at the
    /// group's committed offsets, else at the end. Exits when caught up unless --follow.
    Consume {
        topic: String,
        /// Start at the first retained record of each partition.
        #[arg(long, conflicts_with = "offset")]
        from_beginning: bool,
        /// Start at this offset in each partition read (at the end of those that end before it).
        #[arg(long, value_name = "N")]
        offset: Option<u64>,
        /// Consumer group: start at its committed offsets, commit after printing.
        #[arg(long, value_name = "G")]
        group: Option<String>,
        /// Read only this partition.
        #[arg(long, value_name = "P")]
        partition: Option<u32>,
        /// Stop after this many records.
        #[arg(long, value_name = "N")]
        max: Option<u64>,
        /// Keep polling for new records (until killed or --max is reached).
        #[arg(long)]
        follow: bool,
        /// Print each record as a JSON object: partition, offset, timestamp, key, value.
        #[arg(long)]
        print_metadata: bool,
        #[command(flatten)]
        dir: LogDir,
    },
    /// Show partitions (offsets, bytes, segments), retention and consumer groups (lag).
    Describe {
        topic: String,
        /// Print JSON instead of tables.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        dir: LogDir,
    },
}

impl LogCommand {
    pub fn run(self) -> Result<()> {
        match self {
            LogCommand::Create {
                topic,
                partitions,
                retention,
                retention_bytes,
                segment_bytes,
                fsync,
                dir,
            } => {
                let log = dir.open(true)?;
                let config = TopicConfig {
                    partitions,
                    retention_ms: retention,
                    retention_bytes,
                    segment_bytes,
                    fsync,
                };
                log.create_topic(&topic, config)?;
                println!(
                    "created topic `{topic}` with {partitions} partition{} in `{}`",
                    if partitions == 1 { "" } else { "s" },
                    log.root().display()
                );
                Ok(())
            }
            LogCommand::Produce {
                topic,
                key,
                format,
                file,
                fsync,
                dir,
            } => {
                let topic = dir.topic(&topic)?;
                let input: Box<dyn BufRead> = match &file {
                    Some(path) => Box::new(BufReader::new(
                        File::open(path)
                            .with_context(|| format!("cannot open `{}`", path.display()))?,
                    )),
                    None => Box::new(io::stdin().lock()),
                };
                let mut producer = topic.producer()?;
                if let Some(policy) = fsync {
                    producer = producer.with_fsync(policy);
                }
                for r in producer.recoveries() {
                    eprintln!(
                        "note: partition {}: cut a torn tail of {} bytes from `{}` ({})",
                        r.partition,
                        r.truncated_bytes,
                        r.segment.display(),
                        r.reason
                    );
                }
                let mut sink = ProduceStats::new(producer, key.clone());
                match format {
                    InputFormat::Json => produce_json(input, &mut sink)?,
                    InputFormat::Csv => produce_csv(input, &mut sink)?,
                }
                sink.finish(topic.name())
            }
            LogCommand::Consume {
                topic,
                from_beginning,
                offset,
                group,
                partition,
                max,
                follow,
                print_metadata,
                dir,
            } => {
                let topic = dir.topic(&topic)?;
                let start = match (from_beginning, offset) {
                    (true, _) => Start::Beginning,
                    (false, Some(n)) => Start::Offset(n),
                    (false, None) => Start::Committed,
                };
                consume(
                    &topic,
                    &ConsumeOptions {
                        start,
                        group,
                        partition,
                        max,
                        follow,
                        print_metadata,
                    },
                )
            }
            LogCommand::Describe { topic, json, dir } => {
                let description = dir.topic(&topic)?.describe()?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&description)?);
                } else {
                    print!("{}", describe_text(&description));
                }
                Ok(())
            }
        }
    }
}

/// Appends records and counts what went where and what was skipped.
struct ProduceStats {
    producer: Producer,
    key_field: Option<String>,
    per_partition: BTreeMap<u32, u64>,
    skipped: u64,
    without_key: u64,
}

impl ProduceStats {
    fn new(producer: Producer, key_field: Option<String>) -> Self {
        ProduceStats {
            producer,
            key_field,
            per_partition: BTreeMap::new(),
            skipped: 0,
            without_key: 0,
        }
    }

    fn append(&mut self, key: Option<&[u8]>, value: &[u8]) -> Result<()> {
        if self.key_field.is_some() && key.is_none() {
            self.without_key += 1;
        }
        let (partition, _) = self.producer.append(key, value, now_ms())?;
        *self.per_partition.entry(partition).or_default() += 1;
        Ok(())
    }

    fn skip(&mut self, line: u64, why: impl std::fmt::Display) {
        eprintln!("line {line}: {why}; skipped");
        self.skipped += 1;
    }

    fn finish(mut self, topic: &str) -> Result<()> {
        self.producer.flush()?;
        let total: u64 = self.per_partition.values().sum();
        let parts: Vec<String> = self
            .per_partition
            .iter()
            .map(|(p, n)| format!("partition {p}: {n}"))
            .collect();
        if parts.is_empty() {
            println!("produced 0 records to topic `{topic}`");
        } else {
            println!(
                "produced {total} record{} to topic `{topic}` ({})",
                if total == 1 { "" } else { "s" },
                parts.join(", ")
            );
        }
        if self.without_key > 0 {
            eprintln!(
                "note: {} record(s) had no `{}` value and were spread round-robin",
                self.without_key,
                self.key_field.as_deref().unwrap_or_default()
            );
        }
        if self.skipped > 0 {
            bail!(
                "{} input line(s) were skipped (reported above); the other {total} record(s) were produced",
                self.skipped
            );
        }
        Ok(())
    }
}

/// JSON lines: each non-blank line must be a JSON object; it is stored as written.
fn produce_json(input: Box<dyn BufRead>, sink: &mut ProduceStats) -> Result<()> {
    for (n, line) in input.split(b'\n').enumerate() {
        let line_no = n as u64 + 1;
        let mut line = line.context("cannot read the input")?;
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let object = match serde_json::from_slice::<Value>(&line) {
            Ok(Value::Object(object)) => object,
            Ok(other) => {
                sink.skip(
                    line_no,
                    format!(
                        "not a JSON object but {}",
                        flowline_connectors::json_kind(&other)
                    ),
                );
                continue;
            }
            Err(e) => {
                sink.skip(line_no, format!("not JSON ({e})"));
                continue;
            }
        };
        let key = match sink.key_field.as_deref().and_then(|f| object.get(f)) {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.as_bytes().to_vec()),
            Some(other) => Some(other.to_string().into_bytes()),
        };
        sink.append(key.as_deref(), &line)?;
    }
    Ok(())
}

/// CSV with a header: each row is stored as a JSON object of header → string value, in header
/// order.
fn produce_csv(input: Box<dyn BufRead>, sink: &mut ProduceStats) -> Result<()> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .from_reader(input);
    let headers = reader
        .headers()
        .context("cannot read the CSV header")?
        .clone();
    let key_index = match sink.key_field.as_deref() {
        Some(field) => Some(headers.iter().position(|h| h == field).with_context(|| {
            format!(
                "no column `{field}` in the CSV header (columns: {})",
                headers.iter().collect::<Vec<_>>().join(", ")
            )
        })?),
        None => None,
    };
    let names: Vec<String> = headers
        .iter()
        .map(|h| serde_json::to_string(h).unwrap_or_default())
        .collect();
    let mut row = csv::StringRecord::new();
    let mut value = String::new();
    loop {
        match reader.read_record(&mut row) {
            Ok(false) => break,
            Ok(true) => {
                value.clear();
                value.push('{');
                for (i, (name, field)) in names.iter().zip(row.iter()).enumerate() {
                    if i > 0 {
                        value.push(',');
                    }
                    value.push_str(name);
                    value.push(':');
                    value.push_str(&serde_json::to_string(field)?);
                }
                value.push('}');
                let key = key_index.and_then(|i| row.get(i)).map(str::as_bytes);
                let value = std::mem::take(&mut value);
                sink.append(key, value.as_bytes())?;
            }
            Err(e) if e.is_io_error() => return Err(e).context("cannot read the input"),
            Err(e) => {
                let line = e.position().map_or(0, |p| p.line());
                sink.skip(line, format!("bad CSV row ({e})"));
            }
        }
    }
    Ok(())
}

enum Start {
    Beginning,
    Offset(u64),
    Committed,
}

struct ConsumeOptions {
    start: Start,
    group: Option<String>,
    partition: Option<u32>,
    max: Option<u64>,
    follow: bool,
    print_metadata: bool,
}

fn consume(topic: &Topic, o: &ConsumeOptions) -> Result<()> {
    let partitions: Vec<u32> = match o.partition {
        Some(p) if p >= topic.partitions() => bail!(
            "topic `{}` has partitions 0 to {}; there is no partition {p}",
            topic.name(),
            topic.partitions() - 1
        ),
        Some(p) => vec![p],
        None => (0..topic.partitions()).collect(),
    };
    let committed = match &o.group {
        Some(g) => topic.committed(g)?,
        None => BTreeMap::new(),
    };
    let mut readers = Vec::new();
    let mut positions = BTreeMap::new();
    for &p in &partitions {
        let mut reader = topic.reader(p)?;
        let (start, end) = reader.offsets()?;
        let position = match o.start {
            Start::Beginning => start,
            Start::Offset(n) if n > end && o.partition.is_some() => {
                bail!("--offset {n} is beyond the end ({end}) of partition {p}")
            }
            Start::Offset(n) if n > end => {
                eprintln!(
                    "note: partition {p} ends at {end}, before offset {n}; starting at its end"
                );
                end
            }
            Start::Offset(n) if n < start => {
                eprintln!(
                    "note: partition {p}: offsets before {start} were deleted by retention; starting at {start}"
                );
                start
            }
            Start::Offset(n) => n,
            Start::Committed => match committed.get(&p) {
                Some(&c) if c > end => {
                    eprintln!(
                        "note: partition {p}: committed offset {c} is beyond the end ({end}); starting at the end"
                    );
                    end
                }
                Some(&c) => c.max(start),
                None => end,
            },
        };
        readers.push(reader);
        positions.insert(p, position);
    }

    let mut out = BufWriter::new(io::stdout().lock());
    let mut printed = 0u64;
    let mut line = Vec::new();
    loop {
        let mut progressed = false;
        for reader in &mut readers {
            let p = reader.partition();
            let remaining = o.max.map_or(u64::MAX, |m| m - printed);
            if remaining == 0 {
                break;
            }
            let batch = reader.read(positions[&p], remaining.min(1000) as usize, 1 << 20)?;
            for record in &batch {
                line.clear();
                if o.print_metadata {
                    metadata_line(p, record, &mut line);
                } else {
                    line.extend_from_slice(&record.value);
                }
                line.push(b'\n');
                if !write_or_stop(&mut out, &line)? {
                    // The reader of our output went away (`| head`): stop without committing
                    // what it may not have seen.
                    return Ok(());
                }
                positions.insert(p, record.offset + 1);
                printed += 1;
                progressed = true;
            }
        }
        if !flush_or_stop(&mut out)? {
            return Ok(());
        }
        if let Some(g) = &o.group {
            if progressed {
                topic.commit_offsets(g, &positions)?;
            }
        }
        if o.max.is_some_and(|m| printed >= m) {
            break;
        }
        if !progressed {
            if o.follow {
                std::thread::sleep(Duration::from_millis(100));
            } else {
                break;
            }
        }
    }
    // Also records where a group stands when there was nothing to read.
    if let Some(g) = &o.group {
        topic.commit_offsets(g, &positions)?;
    }
    Ok(())
}

/// Writes to stdout; `Ok(false)` when the reader of the pipe went away (`| head`).
fn write_or_stop(out: &mut impl Write, bytes: &[u8]) -> Result<bool> {
    match out.write_all(bytes) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(false),
        Err(e) => Err(e).context("cannot write to standard output"),
    }
}

fn flush_or_stop(out: &mut impl Write) -> Result<bool> {
    match out.flush() {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(false),
        Err(e) => Err(e).context("cannot write to standard output"),
    }
}

/// `{"partition":0,"offset":5,"timestamp":…,"key":"k"|null,"value":<the JSON value, or a string>}`
fn metadata_line(partition: u32, r: &Record, out: &mut Vec<u8>) {
    let key = match &r.key {
        Some(k) => serde_json::to_string(&String::from_utf8_lossy(k)).unwrap_or_default(),
        None => "null".to_string(),
    };
    let value = match serde_json::from_slice::<Value>(&r.value) {
        Ok(_) if !r.value.contains(&b'\n') => {
            String::from_utf8_lossy(r.value.trim_ascii()).into_owned()
        }
        Ok(v) => v.to_string(),
        Err(_) => serde_json::to_string(&String::from_utf8_lossy(&r.value)).unwrap_or_default(),
    };
    let _ = write!(
        out,
        "{{\"partition\":{partition},\"offset\":{},\"timestamp\":{},\"key\":{key},\"value\":{value}}}",
        r.offset, r.timestamp
    );
}

fn describe_text(d: &TopicDescription) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let c = &d.config;
    let created = chrono::DateTime::from_timestamp_millis(d.created_ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_else(|| d.created_ms.to_string());
    let retention = match (c.retention_ms, c.retention_bytes) {
        (None, None) => "none".to_string(),
        (Some(ms), None) => format_duration_ms(ms),
        (None, Some(b)) => format_bytes(b),
        (Some(ms), Some(b)) => format!("{} or {}", format_duration_ms(ms), format_bytes(b)),
    };
    let _ = writeln!(
        s,
        "topic {}: {} partition(s), retention {retention}, segments of {}, fsync {}, created {created}",
        d.name,
        c.partitions,
        format_bytes(c.segment_bytes),
        match c.fsync {
            FsyncPolicy::Interval(ms) => format!("every {}", format_duration_ms(ms as i64)),
            other => other.to_string(),
        }
    );
    let _ = writeln!(
        s,
        "{:>9} {:>12} {:>12} {:>12} {:>14} {:>8}",
        "partition", "start", "end", "records", "bytes", "segments"
    );
    for p in &d.partitions {
        let _ = writeln!(
            s,
            "{:>9} {:>12} {:>12} {:>12} {:>14} {:>8}",
            p.partition,
            p.start_offset,
            p.end_offset,
            p.end_offset - p.start_offset,
            p.bytes,
            p.segments
        );
    }
    if d.groups.is_empty() {
        let _ = writeln!(s, "no consumer groups");
    }
    for g in &d.groups {
        let _ = writeln!(s, "group {}: lag {}", g.group, g.lag);
        let _ = writeln!(
            s,
            "{:>9} {:>12} {:>12} {:>12}",
            "partition", "committed", "end", "lag"
        );
        let dash = || "-".to_string();
        for p in &g.partitions {
            let _ = writeln!(
                s,
                "{:>9} {:>12} {:>12} {:>12}",
                p.partition,
                p.committed.map_or_else(dash, |c| c.to_string()),
                p.end_offset,
                p.lag.map_or_else(dash, |l| l.to_string())
            );
        }
    }
    s
}
