//! `flowline bench window`: a tumbling-window aggregation over Parquet in batch mode, in stream
//! mode, and as DataFusion's own plain GROUP BY over the same files, measured in one run.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use datafusion::prelude::{ParquetReadOptions, SessionContext};
use flowline_runtime::{run_pipeline, Mode, RunOptions};

use crate::bench_stream;
use crate::generate::{orders_batch, orders_for_day, Rng, BASE_MS};

#[derive(clap::Subcommand)]
pub enum Bench {
    /// The Nexmark queries (benches/nexmark) as published: events/s, per core, wall and CPU
    /// time, peak RSS and result rows per query and mode.
    Nexmark(crate::bench_nexmark::NexmarkArgs),
    /// Tumbling 1-hour window: COUNT, SUM, MAX per store over generated Parquet orders.
    Window {
        #[arg(long, default_value_t = 10_000_000)]
        rows: u64,
        /// Working folder for data and outputs.
        #[arg(long, default_value = "target/bench-window")]
        dir: PathBuf,
        /// Runs per engine; the best is reported.
        #[arg(long, default_value_t = 3)]
        repeat: u32,
        /// Rows per batch in stream mode.
        #[arg(long, default_value_t = 1024)]
        stream_batch_size: usize,
    },
    /// Events/s from a log topic to a files sink: a stateless and a windowed pipeline, each
    /// `--trigger available-now` from scratch.
    Log {
        #[arg(long, default_value_t = 2_000_000)]
        events: u64,
        #[arg(long, default_value_t = 4)]
        partitions: u32,
        /// Working folder for the log, pipelines, state and outputs.
        #[arg(long, default_value = "target/bench-log")]
        dir: PathBuf,
        /// Runs per pipeline; the best and the median are reported.
        #[arg(long, default_value_t = 3)]
        repeat: u32,
    },
    /// Append → sink latency of a stream job (a child process) fed at a fixed rate.
    Latency {
        /// Events per second.
        #[arg(long, default_value_t = 20_000)]
        rate: u64,
        /// Seconds of measurement per sink.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        #[arg(long, default_value_t = 4)]
        partitions: u32,
        #[arg(long, default_value = "1s")]
        checkpoint_interval: String,
        #[arg(long, default_value = "target/bench-latency")]
        dir: PathBuf,
        /// Measure the print sink only (not also a files sink, visible at each checkpoint).
        #[arg(long)]
        print_only: bool,
    },
    /// Checkpoint duration and size, and restart time, of a large open window state.
    Checkpoint {
        /// Distinct keys (groups) in the one open window.
        #[arg(long, default_value_t = 3_000_000)]
        keys: u64,
        #[arg(long, default_value_t = 4)]
        partitions: u32,
        #[arg(long, default_value = "target/bench-checkpoint")]
        dir: PathBuf,
    },
}

const FILES: u64 = 4;

impl Bench {
    pub async fn run(self) -> Result<()> {
        match self {
            Bench::Nexmark(args) => args.run().await,
            Bench::Window {
                rows,
                dir,
                repeat,
                stream_batch_size,
            } => window(rows, &dir, repeat, stream_batch_size).await,
            Bench::Log {
                events,
                partitions,
                dir,
                repeat,
            } => bench_stream::log(events, partitions, &dir, repeat).await,
            Bench::Latency {
                rate,
                seconds,
                partitions,
                checkpoint_interval,
                dir,
                print_only,
            } => bench_stream::latency(
                rate,
                seconds,
                partitions,
                &checkpoint_interval,
                &dir,
                !print_only,
            ),
            Bench::Checkpoint {
                keys,
                partitions,
                dir,
            } => bench_stream::checkpoint(keys, partitions, &dir).await,
        }
    }
}

async fn window(rows: u64, dir: &Path, repeat: u32, stream_batch_size: usize) -> Result<()> {
    let data = dir.join(format!("orders-{rows}"));
    if !data.exists() {
        generate(&data, rows).context("generating benchmark data")?;
    }
    let pipeline = dir.join("window.sql");
    std::fs::write(
            &pipeline,
            format!(
                "CREATE TABLE orders (order_id BIGINT, store_id STRING, customer_id STRING, amount DECIMAL(10, 2), event_time TIMESTAMP(3),
                   WATERMARK FOR event_time AS event_time - INTERVAL '5' MINUTE)
                 WITH ('connector' = 'files', 'path' = '{}', 'format' = 'parquet');
                 CREATE TABLE hourly WITH ('connector' = 'files', 'path' = 'out-hourly', 'format' = 'parquet');
                 INSERT INTO hourly
                 SELECT window_start, window_end, store_id, COUNT(*) AS orders, SUM(amount) AS revenue, MAX(amount) AS largest
                 FROM TABLE(TUMBLE(TABLE orders, DESCRIPTOR(event_time), INTERVAL '1' HOUR))
                 GROUP BY window_start, window_end, store_id;",
                data.file_name().and_then(|n| n.to_str()).unwrap_or_default()
            ),
        )?;
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    println!("tumbling-window aggregation over {rows} Parquet rows ({FILES} files), {cores} cores, best of {repeat}");
    let mut results = vec![];
    for (label, mode, batch) in [
        ("flowline batch", Mode::Batch, None),
        ("flowline stream", Mode::Stream, Some(stream_batch_size)),
    ] {
        let mut best = f64::MAX;
        let mut out_rows = 0;
        for _ in 0..repeat {
            let options = RunOptions {
                mode: Some(mode),
                batch_size: batch,
                state_dir: Some(dir.join("state")),
                ..Default::default()
            };
            let start = Instant::now();
            let report = run_pipeline(&pipeline, options).await?;
            best = best.min(start.elapsed().as_secs_f64());
            out_rows = report.rows_written.values().sum::<u64>();
        }
        results.push((label, best, out_rows));
    }
    let mut best = f64::MAX;
    let mut out_rows = 0;
    for _ in 0..repeat {
        let ctx = SessionContext::new();
        let start = Instant::now();
        ctx.register_parquet(
            "orders",
            data.to_string_lossy().as_ref(),
            ParquetReadOptions::default(),
        )
        .await?;
        let batches = ctx
                .sql("SELECT date_bin(INTERVAL '1 hour', event_time) AS window_start, store_id, COUNT(*), SUM(amount), MAX(amount) FROM orders GROUP BY 1, 2")
                .await?
                .collect()
                .await?;
        best = best.min(start.elapsed().as_secs_f64());
        out_rows = batches.iter().map(|b| b.num_rows() as u64).sum();
    }
    results.push(("datafusion GROUP BY", best, out_rows));
    let reference = results.last().map(|r| r.1).unwrap_or(1.0);
    println!(
        "{:<22} {:>9} {:>14} {:>16} {:>12} {:>9}",
        "engine", "seconds", "rows/s", "rows/s/core", "result rows", "vs DF"
    );
    for (label, secs, out) in &results {
        let rate = rows as f64 / secs;
        println!(
            "{label:<22} {secs:>9.3} {rate:>14.0} {:>16.0} {out:>12} {:>8.2}x",
            rate / cores as f64,
            reference / secs
        );
    }
    Ok(())
}

fn generate(dir: &Path, rows: u64) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    let mut rng = Rng::new(7);
    let per_file = rows / FILES;
    let mut id = 1;
    for f in 0..FILES {
        let n = if f + 1 == FILES {
            rows - per_file * (FILES - 1)
        } else {
            per_file
        };
        let file = std::fs::File::create(dir.join(format!("part-{f:03}.parquet")))?;
        let mut w =
            parquet::arrow::ArrowWriter::try_new(file, crate::generate::orders_schema(), None)?;
        let chunk = 1_000_000u64;
        let mut done = 0;
        while done < n {
            let k = chunk.min(n - done);
            // Each file covers one day; chunks advance through it in time order.
            let day_start = BASE_MS + f as i64 * 86_400_000;
            let span = 86_400_000 * k as i64 / n as i64;
            let mut orders = orders_for_day(&mut rng, id, k, 0, 50);
            for o in &mut orders {
                o.ts = day_start + 86_400_000 * done as i64 / n as i64 + o.ts * span / 86_400_000;
            }
            w.write(&orders_batch(&orders)?)?;
            id += k as i64;
            done += k;
        }
        w.close()?;
    }
    Ok(())
}
