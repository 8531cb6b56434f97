//! `flowline bench nexmark`: the Nexmark queries of `benches/nexmark/` (compiled in), run as
//! published: the source DDL (the built-in generator, Parquet files or a log topic), Flink's
//! views, then the query with its blackhole sink.
//!
//! Each (query, mode) runs in a child process (`--child`), so its peak RSS and CPU time are its
//! own; the data for `--source files|log` is generated once, before any measurement. A query
//! whose file says `-- Flowline: not applicable: <why>` is reported, not run; a query Flowline
//! cannot plan reports the planner's error (which names the missing feature).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use flowline_runtime::{run_pipeline, Mode, RunOptions};
use serde_json::{json, Value};

use crate::generate::{nexmark_config, nexmark_files, nexmark_topic, parse_count};

/// The query files, in order.
pub const QUERIES: [(&str, &str); 23] = [
    ("q0", include_str!("../../../benches/nexmark/q0.sql")),
    ("q1", include_str!("../../../benches/nexmark/q1.sql")),
    ("q2", include_str!("../../../benches/nexmark/q2.sql")),
    ("q3", include_str!("../../../benches/nexmark/q3.sql")),
    ("q4", include_str!("../../../benches/nexmark/q4.sql")),
    ("q5", include_str!("../../../benches/nexmark/q5.sql")),
    ("q6", include_str!("../../../benches/nexmark/q6.sql")),
    ("q7", include_str!("../../../benches/nexmark/q7.sql")),
    ("q8", include_str!("../../../benches/nexmark/q8.sql")),
    ("q9", include_str!("../../../benches/nexmark/q9.sql")),
    ("q10", include_str!("../../../benches/nexmark/q10.sql")),
    ("q11", include_str!("../../../benches/nexmark/q11.sql")),
    ("q12", include_str!("../../../benches/nexmark/q12.sql")),
    ("q13", include_str!("../../../benches/nexmark/q13.sql")),
    ("q14", include_str!("../../../benches/nexmark/q14.sql")),
    ("q15", include_str!("../../../benches/nexmark/q15.sql")),
    ("q16", include_str!("../../../benches/nexmark/q16.sql")),
    ("q17", include_str!("../../../benches/nexmark/q17.sql")),
    ("q18", include_str!("../../../benches/nexmark/q18.sql")),
    ("q19", include_str!("../../../benches/nexmark/q19.sql")),
    ("q20", include_str!("../../../benches/nexmark/q20.sql")),
    ("q21", include_str!("../../../benches/nexmark/q21.sql")),
    ("q22", include_str!("../../../benches/nexmark/q22.sql")),
];
/// Flink's `nexmark` table over the generator.
pub const DDL_GEN: &str = include_str!("../../../benches/nexmark/ddl_gen.sql");
/// Flink's `person`, `auction` and `bid` views.
pub const DDL_VIEWS: &str = include_str!("../../../benches/nexmark/ddl_views.sql");

/// Events per second of event time, as the Flink suite's workloads (`TPS`).
pub const EVENT_RATE: u64 = 10_000_000;

#[derive(clap::Args)]
pub struct NexmarkArgs {
    /// q0 … q22, a comma-separated list, or `all`.
    #[arg(long, default_value = "all")]
    query: String,
    /// Number of events (suffixes K, M, G allowed: 10M).
    #[arg(long, default_value = "10M", value_parser = parse_count)]
    events: u64,
    /// stream, batch, or both.
    #[arg(long, default_value = "stream")]
    mode: String,
    /// generator (built in, no I/O), files (Parquet, generated first) or log (an embedded-log
    /// topic, generated first).
    #[arg(long, default_value = "generator")]
    source: String,
    /// Also write the results as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Working folder: generated data, pipelines, state.
    #[arg(long, default_value = "target/bench-nexmark")]
    dir: PathBuf,
    /// Internal: run one query and mode in this process and write its result here.
    #[arg(long, hide = true)]
    child: Option<PathBuf>,
}

/// The source part of a benchmark pipeline.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Source {
    Generator,
    Files,
    Log,
}

impl Source {
    fn parse(text: &str) -> Result<Source> {
        Ok(match text {
            "generator" => Source::Generator,
            "files" => Source::Files,
            "log" => Source::Log,
            _ => bail!("unknown source '{text}': expected generator, files or log"),
        })
    }
}

/// The text of query `name` (`q0` … `q22`).
pub fn query_text(name: &str) -> Option<&'static str> {
    QUERIES.iter().find(|(q, _)| *q == name).map(|(_, t)| *t)
}

/// Why a query is not applicable (its `-- Flowline: not applicable: <why>` header line).
pub fn not_applicable(text: &str) -> Option<&str> {
    text.lines()
        .take_while(|l| l.starts_with("--") || l.trim().is_empty())
        .find_map(|l| l.strip_prefix("-- Flowline: not applicable:"))
        .map(str::trim)
}

/// `ddl_gen.sql` with `events` events at `rate` events/s of event time.
pub fn generator_ddl(events: u64, rate: u64) -> String {
    let mut ddl = String::new();
    for line in DDL_GEN.lines() {
        let t = line.trim_start();
        let replaced = if t.starts_with("'events.num'") {
            Some(format!("'events.num' = '{events}'"))
        } else if t.starts_with("'first-event.rate'") {
            Some(format!("'first-event.rate' = '{rate}'"))
        } else if t.starts_with("'next-event.rate'") {
            Some(format!("'next-event.rate' = '{rate}'"))
        } else {
            None
        };
        match replaced {
            Some(option) => {
                let indent = &line[..line.len() - t.len()];
                let comma = if t.trim_end().ends_with(',') { "," } else { "" };
                ddl += &format!("{indent}{option}{comma}\n");
            }
            None => {
                ddl += line;
                ddl.push('\n');
            }
        }
    }
    ddl
}

/// `ddl_gen.sql` with its `WITH (...)` replaced by `with` (the options of another connector).
pub fn nexmark_ddl_with(with: &str) -> Result<String> {
    let start = DDL_GEN
        .find("CREATE TABLE")
        .context("ddl_gen.sql has no CREATE TABLE")?;
    let at = DDL_GEN[start..]
        .rfind(") WITH (")
        .map(|i| start + i)
        .context("ddl_gen.sql has no `) WITH (`")?;
    let end = DDL_GEN[at..]
        .find(");")
        .map(|i| at + i + 2)
        .context("ddl_gen.sql: WITH (...) does not end with `);`")?;
    Ok(format!(
        "{}) WITH ({with});{}",
        &DDL_GEN[..at],
        &DDL_GEN[end..]
    ))
}

/// The whole pipeline of one benchmark run.
/// `${NEXMARK_TABLE}` of the views is the source table of `ddl_gen.sql`, `datagen`.
pub fn pipeline_text(source_ddl: &str, query: &str) -> String {
    let views = DDL_VIEWS.replace("${NEXMARK_TABLE}", "datagen");
    format!("{source_ddl}\n{views}\n{query}\n")
}

/// CPU seconds (user + system, all threads) and peak resident bytes of this process, from
/// `/proc/self/stat` (clock ticks of Linux's fixed USER_HZ, 100) and `/proc/self/status` (VmHWM).
fn rusage() -> Result<(f64, u64)> {
    let stat = std::fs::read_to_string("/proc/self/stat").context("reading /proc/self/stat")?;
    // The command name (field 2) may hold spaces; the fields after its `)` are plain.
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let fields: Vec<&str> = after.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line: indexes 11 and 12 after the name.
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let cpu = (ticks(11) + ticks(12)) as f64 / 100.0;
    let status =
        std::fs::read_to_string("/proc/self/status").context("reading /proc/self/status")?;
    let peak_kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .unwrap_or(0);
    Ok((cpu, peak_kb * 1024))
}

impl NexmarkArgs {
    pub async fn run(self) -> Result<()> {
        let source = Source::parse(&self.source)?;
        let modes: Vec<&str> = match self.mode.as_str() {
            "stream" | "batch" => vec![self.mode.as_str()],
            "both" => vec!["stream", "batch"],
            m => bail!("unknown mode '{m}': expected stream, batch or both"),
        };
        let names: Vec<String> = if self.query == "all" {
            QUERIES.iter().map(|(q, _)| q.to_string()).collect()
        } else {
            self.query
                .split(',')
                .map(|q| q.trim().to_string())
                .collect()
        };
        for q in &names {
            if query_text(q).is_none() {
                bail!("unknown query '{q}': expected q0 … q22 or all");
            }
        }
        if self.events == 0 {
            bail!("--events must be at least 1");
        }
        if let Some(out) = &self.child {
            return self.child(&names[0], modes[0], source, out).await;
        }
        std::fs::create_dir_all(&self.dir)?;
        match source {
            Source::Generator => {}
            // Generated once per event count; the marker is written last, so an interrupted
            // generation is redone (files replace the folder, a topic is deleted first).
            Source::Files => {
                let data = self.files_dir();
                let done = data.join(".complete");
                if !done.exists() {
                    let config = nexmark_config(self.events, EVENT_RATE, 0);
                    nexmark_files(&config, &data, "parquet", 4)?;
                    std::fs::write(&done, "")?;
                }
            }
            Source::Log => {
                let log = self.dir.join("log");
                let topic = self.topic();
                let done = log.join(format!(".{topic}.complete"));
                if !done.exists() {
                    if log.join(&topic).exists() {
                        std::fs::remove_dir_all(log.join(&topic))?;
                    }
                    let config = nexmark_config(self.events, EVENT_RATE, 0);
                    nexmark_topic(&config, &log, &topic, 1)?;
                    std::fs::write(&done, "")?;
                }
            }
        }
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        println!(
            "Nexmark, {} events from the {} source, {cores} cores, {}",
            self.events,
            self.source,
            chrono::Utc::now().format("%Y-%m-%d")
        );
        println!(
            "{:<5} {:<6} {:>8} {:>8} {:>12} {:>14} {:>9} {:>10} {:>8}  status",
            "query",
            "mode",
            "wall s",
            "cpu s",
            "events/s",
            "events/s/core",
            "peak RSS",
            "rows",
            "rejects"
        );
        let exe = std::env::current_exe()?;
        let mut results = vec![];
        for q in &names {
            for mode in &modes {
                let out = self.dir.join("results").join(format!("{q}-{mode}.json"));
                std::fs::create_dir_all(out.parent().unwrap_or(&self.dir))?;
                let _ = std::fs::remove_file(&out);
                let result = if let Some(why) = query_text(q).and_then(not_applicable) {
                    json!({"query": q, "mode": mode, "status": "n/a", "why": why})
                } else {
                    let child = Command::new(&exe)
                        .args(["bench", "nexmark", "--query", q, "--mode", mode])
                        .args([
                            "--source",
                            &self.source,
                            "--events",
                            &self.events.to_string(),
                        ])
                        .arg("--dir")
                        .arg(&self.dir)
                        .arg("--child")
                        .arg(&out)
                        .output()
                        .context("starting the benchmark child process")?;
                    match std::fs::read_to_string(&out) {
                        Ok(text) => serde_json::from_str(&text)?,
                        // No result: the child died (a signal, out of memory) or failed to start.
                        Err(_) => {
                            let stderr = String::from_utf8_lossy(&child.stderr).trim().to_string();
                            json!({
                                "query": q, "mode": mode, "status": "failed",
                                "why": format!("the benchmark process ended with {} {stderr}", child.status),
                            })
                        }
                    }
                };
                print_row(&result);
                results.push(result);
            }
        }
        if let Some(path) = &self.json {
            let doc = json!({
                "benchmark": "nexmark",
                "events": self.events,
                "source": self.source,
                "cores": cores,
                "date": chrono::Utc::now().to_rfc3339(),
                "results": results,
            });
            std::fs::write(path, serde_json::to_string_pretty(&doc)?)?;
        }
        Ok(())
    }

    fn files_dir(&self) -> PathBuf {
        self.dir.join(format!("data-{}", self.events))
    }

    fn topic(&self) -> String {
        format!("nexmark-{}", self.events)
    }

    fn source_ddl(&self, source: Source) -> Result<String> {
        Ok(match source {
            Source::Generator => generator_ddl(self.events, EVENT_RATE),
            Source::Files => nexmark_ddl_with(&format!(
                "'connector' = 'files', 'path' = '{}', 'format' = 'parquet'",
                absolute(&self.files_dir())?.display()
            ))?,
            Source::Log => nexmark_ddl_with(&format!(
                "'connector' = 'log', 'topic' = '{}', 'format' = 'json', \
                 'log.dir' = '{}', 'scan.startup.mode' = 'earliest-offset', \
                 'scan.bounded.mode' = 'latest-offset'",
                self.topic(),
                absolute(&self.dir.join("log"))?.display()
            ))?,
        })
    }

    /// Runs one query in this process and writes its measurement to `out`.
    async fn child(&self, query: &str, mode: &str, source: Source, out: &Path) -> Result<()> {
        let text = query_text(query).context("unknown query")?;
        let pipeline = self
            .dir
            .join("pipelines")
            .join(format!("{query}-{mode}.sql"));
        std::fs::create_dir_all(pipeline.parent().unwrap_or(&self.dir))?;
        // q13's side input lives under `${FLINK_HOME}`: the benchmark folder.
        let text = if text.contains("${FLINK_HOME}") {
            let home = absolute(&self.dir)?;
            flowline_connectors::nexmark::write_side_input(&home)?;
            text.replace("${FLINK_HOME}", &home.display().to_string())
        } else {
            text.to_string()
        };
        std::fs::write(&pipeline, pipeline_text(&self.source_ddl(source)?, &text))?;
        let state = self.dir.join("state").join(format!("{query}-{mode}"));
        if state.exists() {
            std::fs::remove_dir_all(&state)?;
        }
        let options = RunOptions {
            mode: Some(if mode == "batch" {
                Mode::Batch
            } else {
                Mode::Stream
            }),
            state_dir: Some(state),
            ..Default::default()
        };
        let (cpu_before, _) = rusage()?;
        let clock = Instant::now();
        let report = run_pipeline(&pipeline, options).await;
        let wall_s = clock.elapsed().as_secs_f64();
        let (cpu_after, peak_rss_bytes) = rusage()?;
        let cpu_s = cpu_after - cpu_before;
        let result = match report {
            Ok(report) => {
                let events = self.events as f64;
                json!({
                    "query": query,
                    "mode": mode,
                    "status": "ok",
                    "events": self.events,
                    "wall_s": wall_s,
                    "cpu_s": cpu_s,
                    "events_per_s": events / wall_s,
                    "events_per_s_per_core": events / cpu_s.max(1e-9),
                    "peak_rss_bytes": peak_rss_bytes,
                    "result_rows": report.rows_written.values().sum::<u64>(),
                    "rejects": report.rejects.values().sum::<u64>(),
                })
            }
            Err(e) => {
                json!({"query": query, "mode": mode, "status": "failed", "why": e.to_string()})
            }
        };
        std::fs::write(out, serde_json::to_string(&result)?)?;
        Ok(())
    }
}

fn absolute(path: &Path) -> Result<PathBuf> {
    Ok(if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()?.join(path)
    })
}

fn print_row(r: &Value) {
    let q = r["query"].as_str().unwrap_or("?");
    let mode = r["mode"].as_str().unwrap_or("?");
    if r["status"] != "ok" {
        let why = r["why"].as_str().unwrap_or("").replace('\n', " ");
        println!(
            "{q:<5} {mode:<6} {}: {why}",
            r["status"].as_str().unwrap_or("?")
        );
        return;
    }
    let f = |k: &str| r[k].as_f64().unwrap_or(0.0);
    println!(
        "{q:<5} {mode:<6} {:>8.2} {:>8.2} {:>12.0} {:>14.0} {:>8.0}M {:>10} {:>8}  ok",
        f("wall_s"),
        f("cpu_s"),
        f("events_per_s"),
        f("events_per_s_per_core"),
        f("peak_rss_bytes") / 1e6,
        r["result_rows"].as_u64().unwrap_or(0),
        r["rejects"].as_u64().unwrap_or(0),
    );
}
