//! Example data: FreshMart orders, deterministic for a given seed.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use arrow::array::{
    Decimal128Array, Int64Array, RecordBatch, StringArray, TimestampMillisecondArray,
};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use flowline_connectors::nexmark::{nested_schema, NexmarkConfig, NexmarkGenerator};

/// 2026-03-16T00:00:00Z
pub const BASE_MS: i64 = 1_773_619_200_000;
const DAY_MS: i64 = 86_400_000;

#[derive(clap::Subcommand)]
pub enum Dataset {
    /// Orders (order_id, store_id, customer_id, amount, event_time) in Hive folders `dt=YYYY-MM-DD/`.
    Orders {
        /// Output folder (replaced).
        out: PathBuf,
        #[arg(long, default_value_t = 20_000)]
        rows: u64,
        #[arg(long, default_value_t = 3)]
        days: u32,
        #[arg(long, default_value_t = 8)]
        stores: u32,
        /// csv, json or parquet.
        #[arg(long, default_value = "csv")]
        format: String,
        /// Malformed rows to include (bad amount, bad timestamp, missing field...), CSV/JSON only.
        #[arg(long, default_value_t = 3)]
        bad_rows: u32,
        /// Rows whose event time is a day older than their neighbours: late in stream mode.
        #[arg(long, default_value_t = 0)]
        late_rows: u32,
        #[arg(long, default_value_t = 42)]
        seed: u64,
    },
    /// Nexmark events (Flink's nested `nexmark` table: event_type, person, auction, bid) as
    /// Parquet or JSON lines files, or as JSON records of an embedded-log topic.
    Nexmark {
        /// Output folder (replaced); leave out with --topic.
        out: Option<PathBuf>,
        /// Number of events (suffixes K, M, G allowed: 10M).
        #[arg(long, default_value = "1M", value_parser = parse_count)]
        events: u64,
        /// Events per second of event time (Flink's `first-event.rate`).
        #[arg(long, default_value_t = 10_000_000)]
        rate: u64,
        /// parquet or json (files only; a topic holds JSON records).
        #[arg(long, default_value = "parquet")]
        format: String,
        /// Files to split the events over (consecutive ranges, in name order).
        #[arg(long, default_value_t = 4)]
        files: u64,
        /// Append to this topic of the embedded log instead of writing files.
        #[arg(long)]
        topic: Option<String>,
        #[command(flatten)]
        log_dir: crate::log_cmd::LogDir,
        /// Partitions of the topic when it is created.
        #[arg(long, default_value_t = 1)]
        partitions: u32,
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
}

/// A count with an optional K / M / G suffix (powers of 1000): `10M` is 10 000 000.
pub fn parse_count(text: &str) -> std::result::Result<u64, String> {
    let t = text.trim().replace('_', "");
    let (digits, factor) = match t.chars().last().map(|c| c.to_ascii_uppercase()) {
        Some('K') => (&t[..t.len() - 1], 1_000),
        Some('M') => (&t[..t.len() - 1], 1_000_000),
        Some('G') => (&t[..t.len() - 1], 1_000_000_000),
        _ => (&t[..], 1),
    };
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(factor))
        .ok_or_else(|| format!("'{text}' is not a count such as 50000, 200K or 10M"))
}

/// A small, fast, deterministic generator (SplitMix64).
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

pub struct Order {
    pub id: i64,
    pub store: u32,
    pub customer: u32,
    pub cents: i64,
    pub ts: i64,
}

/// `n` orders spread over the day starting at `day_start`, in time order with up to two
/// minutes of disorder (within the example's five-minute watermark delay).
pub fn orders_for_day(
    rng: &mut Rng,
    first_id: i64,
    n: u64,
    day_start: i64,
    stores: u32,
) -> Vec<Order> {
    let step = DAY_MS / n.max(1) as i64;
    (0..n as i64)
        .map(|i| {
            let jitter = rng.below(120_000) as i64;
            Order {
                id: first_id + i,
                store: 1 + rng.below(stores as u64) as u32,
                customer: 1 + rng.below(2_000) as u32,
                cents: 100 + rng.below(19_900) as i64,
                ts: (day_start + i * step + jitter).min(day_start + DAY_MS - 1),
            }
        })
        .collect()
}

pub fn orders_schema() -> Arc<Schema> {
    Arc::new(Schema::new(vec![
        Field::new("order_id", DataType::Int64, false),
        Field::new("store_id", DataType::Utf8, false),
        Field::new("customer_id", DataType::Utf8, false),
        Field::new("amount", DataType::Decimal128(10, 2), false),
        Field::new(
            "event_time",
            DataType::Timestamp(TimeUnit::Millisecond, None),
            false,
        ),
    ]))
}

pub fn orders_batch(orders: &[Order]) -> Result<RecordBatch> {
    Ok(RecordBatch::try_new(
        orders_schema(),
        vec![
            Arc::new(Int64Array::from_iter_values(orders.iter().map(|o| o.id))),
            Arc::new(StringArray::from_iter_values(
                orders.iter().map(|o| format!("store-{:02}", o.store)),
            )),
            Arc::new(StringArray::from_iter_values(
                orders.iter().map(|o| format!("c{:04}", o.customer)),
            )),
            Arc::new(
                Decimal128Array::from_iter_values(orders.iter().map(|o| o.cents as i128))
                    .with_precision_and_scale(10, 2)?,
            ),
            Arc::new(TimestampMillisecondArray::from_iter_values(
                orders.iter().map(|o| o.ts),
            )),
        ],
    )?)
}

fn ts_text(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S%.3f").to_string())
        .unwrap_or_default()
}

impl Dataset {
    pub fn run(self) -> Result<()> {
        match self {
            Dataset::Orders {
                out,
                rows,
                days,
                stores,
                format,
                bad_rows,
                late_rows,
                seed,
            } => orders(out, rows, days, stores, &format, bad_rows, late_rows, seed),
            Dataset::Nexmark {
                out,
                events,
                rate,
                format,
                files,
                topic,
                log_dir,
                partitions,
                seed,
            } => {
                let config = nexmark_config(events, rate, seed);
                match (out, topic) {
                    (Some(out), None) => nexmark_files(&config, &out, &format, files),
                    (None, Some(topic)) => {
                        nexmark_topic(&config, &log_dir.path(), &topic, partitions)
                    }
                    _ => bail!("give either an output folder or --topic"),
                }
            }
        }
    }
}

/// The generator configuration of `flowline generate nexmark` and `flowline bench nexmark`.
pub fn nexmark_config(events: u64, rate: u64, seed: u64) -> NexmarkConfig {
    NexmarkConfig {
        events,
        first_event_rate: rate,
        seed,
        ..NexmarkConfig::default()
    }
}

/// Writes `config.events` events as `files` files of consecutive events (`part-0000i.<ext>`).
pub fn nexmark_files(config: &NexmarkConfig, out: &Path, format: &str, files: u64) -> Result<()> {
    if !["parquet", "json"].contains(&format) {
        bail!("unknown format '{format}': expected parquet or json");
    }
    if out.exists() {
        fs::remove_dir_all(out).with_context(|| format!("removing {}", out.display()))?;
    }
    fs::create_dir_all(out)?;
    let files = files.clamp(1, config.events.max(1));
    for f in 0..files {
        // Even shares: no file is empty while another holds two more events.
        let start = config.events * f / files;
        let end = config.events * (f + 1) / files;
        let generator_config = NexmarkConfig {
            events: end,
            ..config.clone()
        };
        let mut generator = NexmarkGenerator::at(generator_config, start)?;
        let path = out.join(format!(
            "part-{f:05}.{}",
            if format == "json" { "jsonl" } else { format }
        ));
        let file = std::io::BufWriter::new(fs::File::create(&path)?);
        if format == "parquet" {
            let mut w = parquet::arrow::ArrowWriter::try_new(file, nested_schema(), None)?;
            while let Some(batch) = generator.next_batch(65_536) {
                w.write(&batch)?;
            }
            w.close()?;
        } else {
            let mut w = arrow::json::LineDelimitedWriter::new(file);
            while let Some(batch) = generator.next_batch(65_536) {
                w.write(&batch)?;
            }
            w.finish()?;
        }
    }
    eprintln!(
        "wrote {} Nexmark events ({} events/s of event time) to {} ({files} {format} files)",
        config.events,
        config.first_event_rate,
        out.display()
    );
    Ok(())
}

/// Appends `config.events` events to `topic` (created with `partitions` when missing) as JSON
/// records, round-robin over the partitions.
pub fn nexmark_topic(
    config: &NexmarkConfig,
    log_dir: &Path,
    topic: &str,
    partitions: u32,
) -> Result<()> {
    let log = flowline_log::Log::open(log_dir)?;
    let topic = match log.topic(topic) {
        Ok(t) => t,
        Err(_) => log.create_topic(
            topic,
            flowline_log::TopicConfig {
                partitions,
                ..Default::default()
            },
        )?,
    };
    let mut producer = topic.producer()?;
    let mut generator = NexmarkGenerator::new(config.clone())?;
    let mut buf = Vec::new();
    while let Some(batch) = generator.next_batch(65_536) {
        buf.clear();
        let mut w = arrow::json::LineDelimitedWriter::new(&mut buf);
        w.write(&batch)?;
        w.finish()?;
        for line in buf.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            producer.append(None, line, flowline_log::now_ms())?;
        }
    }
    producer.flush()?;
    eprintln!(
        "appended {} Nexmark events to topic `{}` in {}",
        config.events,
        topic.name(),
        log_dir.display()
    );
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn orders(
    out: PathBuf,
    rows: u64,
    days: u32,
    stores: u32,
    format: &str,
    bad_rows: u32,
    late_rows: u32,
    seed: u64,
) -> Result<()> {
    {
        if !["csv", "json", "parquet"].contains(&format) {
            bail!("unknown format '{format}': expected csv, json or parquet");
        }
        if days == 0 {
            bail!("--days must be at least 1");
        }
        if out.exists() {
            fs::remove_dir_all(&out).with_context(|| format!("removing {}", out.display()))?;
        }
        let mut rng = Rng::new(seed);
        let per_day = rows / days as u64;
        let mut written = 0u64;
        for d in 0..days {
            let day_start = BASE_MS + d as i64 * DAY_MS;
            let n = if d + 1 == days {
                rows - per_day * (days as u64 - 1)
            } else {
                per_day
            };
            let mut orders = orders_for_day(&mut rng, written as i64 + 1, n, day_start, stores);
            written += n;
            if d + 1 == days {
                // Late rows: a day behind the stream, far beyond the watermark delay.
                for k in 0..late_rows as i64 {
                    let at =
                        orders.len() - (orders.len() / (late_rows as usize + 1)) * (k as usize + 1);
                    let id = rows as i64 + 1_000_000 + k;
                    orders.insert(
                        at,
                        Order {
                            id,
                            store: 1,
                            customer: 1,
                            cents: 999,
                            ts: day_start - DAY_MS + 3_600_000 * k,
                        },
                    );
                }
            }
            let date = chrono::DateTime::from_timestamp_millis(day_start)
                .map(|t| t.format("%Y-%m-%d").to_string())
                .unwrap_or_default();
            let dir = out.join(format!("dt={date}"));
            fs::create_dir_all(&dir)?;
            let bad = if d == 0 { bad_rows } else { 0 };
            write_orders(&dir, format, &orders, bad)?;
        }
        eprintln!(
            "wrote {written} orders ({} late, {bad_rows} malformed) over {days} days to {}",
            late_rows,
            out.display()
        );
        Ok(())
    }
}

fn write_orders(dir: &Path, format: &str, orders: &[Order], bad_rows: u32) -> Result<()> {
    let bad_lines = [
        "{id},store-01,c0001,12.5x,{ts}",
        "{id},store-02,c0002,10.00,yesterday at noon",
        "{id},store-03,c0003,10.00",
        "{id},store-04,c0004,,{ts}",
    ];
    match format {
        "parquet" => {
            let f = fs::File::create(dir.join("orders-0000.parquet"))?;
            let mut w = parquet::arrow::ArrowWriter::try_new(f, orders_schema(), None)?;
            w.write(&orders_batch(orders)?)?;
            w.close()?;
        }
        "csv" => {
            let mut f = std::io::BufWriter::new(fs::File::create(dir.join("orders-0000.csv"))?);
            writeln!(f, "order_id,store_id,customer_id,amount,event_time")?;
            let every = orders.len() / (bad_rows as usize + 1);
            for (i, o) in orders.iter().enumerate() {
                if bad_rows > 0
                    && i > 0
                    && i % every.max(1) == 0
                    && i / every.max(1) <= bad_rows as usize
                {
                    let k = (i / every.max(1) - 1) % bad_lines.len();
                    let line = bad_lines[k]
                        .replace("{id}", &(900_000_000 + i).to_string())
                        .replace("{ts}", &ts_text(o.ts));
                    writeln!(f, "{line}")?;
                }
                writeln!(
                    f,
                    "{},store-{:02},c{:04},{}.{:02},{}",
                    o.id,
                    o.store,
                    o.customer,
                    o.cents / 100,
                    o.cents % 100,
                    ts_text(o.ts)
                )?;
            }
        }
        _ => {
            let mut f = std::io::BufWriter::new(fs::File::create(dir.join("orders-0000.jsonl"))?);
            let every = orders.len() / (bad_rows as usize + 1);
            for (i, o) in orders.iter().enumerate() {
                if bad_rows > 0
                    && i > 0
                    && i % every.max(1) == 0
                    && i / every.max(1) <= bad_rows as usize
                {
                    let bad = [
                        format!("{{\"order_id\": {}, \"store_id\": \"store-01\", \"amount\": \"12.5x\", \"event_time\": \"{}\"}}", 900_000_000 + i, ts_text(o.ts)),
                        format!("{{\"order_id\": {}, \"store_id\": \"store-02\", \"amount\": 10.0, \"event_time\": \"yesterday\"}}", 900_000_000 + i),
                        "{\"order_id\": 1, \"store_id\": ".to_string(),
                    ];
                    writeln!(f, "{}", bad[(i / every.max(1) - 1) % bad.len()])?;
                }
                writeln!(
                    f,
                    "{{\"order_id\": {}, \"store_id\": \"store-{:02}\", \"customer_id\": \"c{:04}\", \"amount\": {}.{:02}, \"event_time\": \"{}\"}}",
                    o.id,
                    o.store,
                    o.customer,
                    o.cents / 100,
                    o.cents % 100,
                    ts_text(o.ts)
                )?;
            }
        }
    }
    Ok(())
}
