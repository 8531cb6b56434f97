//! `flowline`: run SQL pipelines as batch or stream, inspect their runs and rejects, generate
//! example data, benchmark.

mod bench;
mod bench_nexmark;
mod bench_stream;
mod client;
mod freshmart;
mod generate;
mod http;
mod log_cmd;
mod progress;
mod project;
mod project_cmd;
mod replay;
mod serve;
mod views;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use flowline_core::plan::OutputMode;
use flowline_runtime::{manifest, rejects, Mode, OpenedPipeline, RunOptions, Trigger};

#[derive(Parser)]
#[command(
    name = "flowline",
    version,
    about = "One SQL pipeline, as batch or as stream, with the same answer"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args, Clone)]
struct PipelineArgs {
    /// The pipeline file (Flink SQL).
    pipeline: PathBuf,
    /// batch, stream or micro-batch (default: the file's `SET 'execution.mode'`, else batch).
    #[arg(long)]
    mode: Option<String>,
    /// Micro-batch trigger over log sources: an interval (30s), once, or available-now.
    #[arg(long)]
    trigger: Option<Trigger>,
    /// Stream mode over log sources: time between checkpoints, e.g. 2s (default 2s).
    #[arg(long)]
    checkpoint_interval: Option<String>,
    /// The embedded log's folder (default: $FLOWLINE_LOG_DIR, else .flowline/log).
    #[arg(long)]
    log_dir: Option<PathBuf>,
    /// Stream mode: append (each result once, when final) or update (changed results as they
    /// happen, keyed for an upsert). Default: append for windows, update for a GROUP BY
    /// without a window.
    #[arg(long)]
    output_mode: Option<OutputMode>,
    /// Update mode: emit changed results at most this often, e.g. 1s (default 1s; 0: after
    /// every batch).
    #[arg(long)]
    emit_interval: Option<String>,
    /// Rows per batch read from a source (default: 32768 in batch, 1024 in stream mode).
    #[arg(long)]
    batch_size: Option<usize>,
    /// Where rejected rows go (default: <state dir>/rejects.jsonl).
    #[arg(long)]
    rejects: Option<PathBuf>,
    /// Where the manifest and rejects live (default: .flowline/<pipeline name>/ beside the file).
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// Declare how fresh the output must be (e.g. 2s, 5m, 6h) instead of a mode: Flowline
    /// picks stream, micro-batch (with a trigger) or batch by the seeds' rules (see `explain`).
    #[arg(long, conflicts_with_all = ["mode", "trigger"])]
    freshness: Option<String>,
}

impl PipelineArgs {
    /// The mode chosen from `--freshness`, and why.
    fn chosen(&self) -> Result<Option<(project::RunPlan, String)>> {
        match &self.freshness {
            None => Ok(None),
            Some(f) => Ok(Some(project::choose_mode(
                project::duration(f).context("--freshness")?,
            ))),
        }
    }

    fn options(&self) -> Result<RunOptions> {
        let mut args = self.clone();
        if let Some((plan, _)) = self.chosen()? {
            let ms = |d: Duration| format!("{}ms", d.as_millis());
            match plan {
                project::RunPlan::Stream { checkpoint } => {
                    args.mode = Some("stream".into());
                    // An explicit --checkpoint-interval wins over the one derived from the freshness.
                    args.checkpoint_interval =
                        args.checkpoint_interval.take().or(checkpoint.map(ms));
                }
                project::RunPlan::MicroBatch { trigger } => {
                    args.mode = Some("micro-batch".into());
                    args.trigger = Some(Trigger::Interval(trigger.as_millis() as u64));
                }
                // One batch run; schedules belong to `flowline serve`.
                project::RunPlan::Batch { .. } => args.mode = Some("batch".into()),
            }
        }
        args.mode_options()
    }

    fn mode_options(&self) -> Result<RunOptions> {
        let (mode, trigger) = match self.mode.as_deref().map(str::to_ascii_lowercase).as_deref() {
            None => (None, self.trigger),
            Some("micro-batch" | "microbatch") => (
                Some(Mode::Stream),
                Some(self.trigger.unwrap_or(Trigger::Interval(10_000))),
            ),
            Some(m) => {
                let mode: Mode = m
                    .parse()
                    .map_err(|e: String| anyhow::anyhow!("{e} (or micro-batch)"))?;
                if mode == Mode::Batch && self.trigger.is_some() {
                    anyhow::bail!("--trigger applies to micro-batch mode, not batch");
                }
                (Some(mode), self.trigger)
            }
        };
        let mode = if trigger.is_some() && mode.is_none() {
            Some(Mode::Stream)
        } else {
            mode
        };
        let checkpoint_interval = match &self.checkpoint_interval {
            None => None,
            Some(t) => match flowline_log::parse_duration_ms(t) {
                Ok(ms) if ms > 0 => Some(Duration::from_millis(ms as u64)),
                _ => anyhow::bail!("--checkpoint-interval: '{t}' is not a duration such as 2s"),
            },
        };
        let emit_interval = match &self.emit_interval {
            None => None,
            Some(t) => Some(
                flowline_runtime::parse_emit_interval(t)
                    .map_err(|e| anyhow::anyhow!("--emit-interval: {e}"))?,
            ),
        };
        Ok(RunOptions {
            mode,
            output_mode: self.output_mode,
            emit_interval,
            batch_size: self.batch_size,
            rejects_path: self.rejects.clone(),
            state_dir: self.state_dir.clone(),
            stdout: None,
            trigger,
            checkpoint_interval,
            log_dir: self.log_dir.clone(),
            stop: None,
            live: None,
            params: Default::default(),
            serving_version: None,
            time_range: None,
        })
    }
}

/// SIGINT and SIGTERM ask a running job to take a final checkpoint and exit.
fn stop_on_signals() -> Arc<AtomicBool> {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    tokio::spawn(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            return;
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        eprintln!("stopping: taking a final checkpoint (signal again to abort)");
        flag.store(true, Ordering::SeqCst);
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        std::process::exit(130);
    });
    stop
}

#[derive(Subcommand)]
enum Command {
    /// Run a pipeline: read its sources, write its sinks, append a manifest record.
    Run {
        #[command(flatten)]
        args: PipelineArgs,
        /// Do not print the end-of-run summary.
        #[arg(long)]
        quiet: bool,
    },
    /// Show how each INSERT of a pipeline runs, without reading any data.
    Explain {
        #[command(flatten)]
        args: PipelineArgs,
    },
    /// List the runs of a pipeline from its manifest.
    Runs {
        #[command(flatten)]
        args: PipelineArgs,
        /// Print the raw JSON records.
        #[arg(long)]
        json: bool,
    },
    /// Show the rejected rows of a pipeline (by default of its last run).
    Rejects {
        #[command(flatten)]
        args: PipelineArgs,
        /// A run id, or `all`.
        #[arg(long)]
        run: Option<String>,
        /// Replay corrected rejects from this file (`-`: standard input): JSON lines, each a
        /// reject as printed here with its `raw` text corrected. Log sources get the rows
        /// appended to the partition they came from; file sources get a new file beside the
        /// bad one. Every row is checked first; nothing is written if one still fails.
        #[arg(long, value_name = "FILE", conflicts_with = "run")]
        replay: Option<PathBuf>,
    },
    /// Generate example data.
    Generate {
        #[command(subcommand)]
        what: generate::Dataset,
    },
    /// Benchmarks.
    Bench {
        #[command(subcommand)]
        what: bench::Bench,
    },
    /// Host a project's pipelines (flowline.toml): schedules, triggers and streams side by
    /// side, with the HTTP API, serving tables and metrics.
    Serve {
        /// The project folder (holding flowline.toml) or the project file.
        project: PathBuf,
        /// Listen on this address instead of the project's (default 127.0.0.1:8080).
        #[arg(long)]
        listen: Option<String>,
    },
    /// Kappa replay: run the pipeline's SQL (as it is now) from the start of its logs into a new
    /// version of its serving tables, then swap it in once caught up (`--as v2`); or rerun a
    /// time range and replace that range of the served tables (`--from ... --to ...`); or cancel
    /// the running replay (`--cancel`). Asks the project's running `flowline serve`, or does the
    /// work itself when none is running.
    Replay {
        /// The project folder (holding flowline.toml) or the project file.
        project: PathBuf,
        /// The pipeline's name.
        pipeline: String,
        /// The version to build (e.g. v2).
        #[arg(
            long = "as",
            value_name = "VERSION",
            required_unless_present_any = ["from", "cancel"],
            conflicts_with_all = ["from", "cancel"]
        )]
        version: Option<String>,
        /// Cancel the running replay (asks the running server): the shadow job stops and its
        /// version is deleted; nothing is swapped.
        #[arg(long, conflicts_with_all = ["from", "diff", "max_lag"])]
        cancel: bool,
        /// Corrections: the start of the event-time range (2026-03-17, RFC 3339, or ms).
        #[arg(long, requires = "to")]
        from: Option<String>,
        /// Corrections: the end of the range (exclusive).
        #[arg(long, requires = "from")]
        to: Option<String>,
        /// Corrections: the serving tables' time column (default: their first date/time column).
        #[arg(long, requires = "from")]
        column: Option<String>,
        /// Swap once the records left to read are at most this many.
        #[arg(long, default_value_t = replay::DEFAULT_MAX_LAG)]
        max_lag: u64,
        /// Compare the old and new versions on closed windows before the swap.
        #[arg(long)]
        diff: bool,
        /// The running server's address (default: the project's).
        #[arg(long)]
        listen: Option<String>,
    },
    /// Run a scheduled batch pipeline for each scheduled time in a range (`${SCHEDULED_DATE}`
    /// set per run). Asks the project's running `flowline serve`, or runs them itself.
    Backfill {
        /// The project folder (holding flowline.toml) or the project file.
        project: PathBuf,
        /// The pipeline's name.
        pipeline: String,
        /// From this time, exclusive (2026-03-17, RFC 3339, or ms).
        #[arg(long)]
        from: String,
        /// Up to this time, inclusive (default: now).
        #[arg(long)]
        to: Option<String>,
        /// The running server's address (default: the project's).
        #[arg(long)]
        listen: Option<String>,
    },
    /// The embedded log: create topics, produce, consume, describe.
    Log {
        #[command(subcommand)]
        command: log_cmd::LogCommand,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(dispatch(cli.command)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn dispatch(command: Command) -> Result<ExitCode> {
    match command {
        Command::Run { args, quiet } => {
            let mut options = args.options()?;
            options.stop = Some(stop_on_signals());
            let live = Arc::new(flowline_runtime::LiveStatus::new());
            options.live = Some(live.clone());
            let pipeline = OpenedPipeline::open(&args.pipeline, options).await?;
            let done = Arc::new(AtomicBool::new(false));
            let watcher = (!quiet).then(|| progress::watch_run(live, done.clone()));
            let report = pipeline.run().await;
            done.store(true, Ordering::SeqCst);
            if let Some(w) = watcher {
                let _ = w.join();
            }
            let report = report?;
            if !quiet {
                eprint!("{}", report.summary());
            }
        }
        Command::Explain { args } => {
            if let Some((plan, why)) = args.chosen()? {
                println!("mode: {plan}\n  because {why}");
            }
            let pipeline = OpenedPipeline::open(&args.pipeline, args.options()?).await?;
            print!("{}", pipeline.explain());
        }
        Command::Serve { project, listen } => {
            let mut project = project::Project::load(&project)?;
            if let Some(l) = listen {
                project.listen = l;
            }
            serve_project(project).await?;
        }
        Command::Runs { args, json } => {
            let pipeline = OpenedPipeline::open(&args.pipeline, args.options()?).await?;
            let records = manifest::read(&pipeline.manifest_path)?;
            if json {
                for r in &records {
                    println!("{r}");
                }
            } else {
                print_runs(&records);
            }
        }
        Command::Rejects {
            args,
            replay: Some(file),
            ..
        } => {
            let pipeline = OpenedPipeline::open(&args.pipeline, args.options()?).await?;
            let corrected = read_corrected(&file)?;
            let summary = replay_rejects_here(&pipeline, &corrected)?;
            for (topic, partition, offset, n) in &summary.appended {
                println!(
                    "appended {n} rows to topic {topic} partition {partition} at offset {offset}"
                );
            }
            for (path, n) in &summary.files {
                println!("wrote {n} rows to {path} (read by the next run)");
            }
            println!("replayed {} corrected rejects", summary.rows);
        }
        Command::Rejects { args, run, .. } => {
            let pipeline = OpenedPipeline::open(&args.pipeline, args.options()?).await?;
            let run = match run.as_deref() {
                Some("all") => None,
                Some(id) => Some(id.to_string()),
                None => manifest::read_last(&pipeline.manifest_path, 1)?
                    .last()
                    .and_then(|r| r["run_id"].as_str().map(str::to_string)),
            };
            for r in rejects::read_rejects(&pipeline.rejects_path, run.as_deref())? {
                println!("{r}");
            }
        }
        Command::Generate { what } => what.run().context("generating data")?,
        Command::Bench { what } => what.run().await?,
        Command::Log { command } => command.run()?,
        Command::Replay {
            project,
            pipeline,
            version,
            from,
            to,
            column,
            max_lag,
            diff,
            listen,
            cancel,
        } => {
            let what = match (version, from, to) {
                _ if cancel => project_cmd::ReplayWhat::Cancel,
                (Some(version), _, _) => project_cmd::ReplayWhat::Version(replay::ReplayRequest {
                    version,
                    max_lag,
                    diff,
                }),
                (None, Some(from), Some(to)) => project_cmd::ReplayWhat::Range { from, to, column },
                _ => anyhow::bail!("give --as VERSION, --from and --to, or --cancel"),
            };
            return project_cmd::replay(&project, &pipeline, what, listen).await;
        }
        Command::Backfill {
            project,
            pipeline,
            from,
            to,
            listen,
        } => {
            return project_cmd::backfill(&project, &pipeline, &from, to.as_deref(), listen).await;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Corrected rejects from a file (`-`: standard input): JSON lines or a JSON array.
fn read_corrected(file: &Path) -> Result<Vec<serde_json::Value>> {
    let text = if file == Path::new("-") {
        std::io::read_to_string(std::io::stdin()).context("cannot read standard input")?
    } else {
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?
    };
    rejects::parse_corrected(&text).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))
}

/// Replays corrected rejects in this process: log rows go through producers of its own (the
/// topic's writer lock: refused while `flowline serve` writes the topic; use its API then).
fn replay_rejects_here(
    pipeline: &OpenedPipeline,
    corrected: &[serde_json::Value],
) -> Result<rejects::ReplaySummary> {
    let producers = serve::Producers::default();
    Ok(rejects::replay_corrected(
        pipeline,
        corrected,
        &mut |topic, partition, values| producers.append_to(topic, partition, values),
    )?)
}

/// `flowline serve`: opens every pipeline, starts them, serves HTTP until SIGTERM/SIGINT.
async fn serve_project(project: project::Project) -> Result<()> {
    let listen = project.listen.clone();
    // Generators' topics exist before the pipelines reading them are opened.
    for g in &project.generators {
        g.create_topic(&project.log_dir)?;
    }
    let generators = project.generators.clone();
    let log_dir = project.log_dir.clone();
    let server = Arc::new(serve::Server::open(project).await?);
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let local = listener.local_addr()?;
    eprint!("{}", server.describe());
    eprintln!("serving on http://{local}/ (API: /api/pipelines, /api/tables, /metrics)");
    let runners = server.start()?;
    let generators_stop = Arc::new(AtomicBool::new(false));
    let generators = generators
        .into_iter()
        .map(|g| freshmart::start(g, log_dir.clone(), server.clone(), generators_stop.clone()))
        .collect::<Result<Vec<_>>>()?;
    let sampler = {
        let server = server.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                for p in &server.pipelines {
                    p.sample();
                }
                server.check_alerts();
            }
        })
    };
    let stopping = {
        let server = server.clone();
        let generators_stop = generators_stop.clone();
        async move {
            use tokio::signal::unix::{signal, SignalKind};
            match (
                signal(SignalKind::terminate()),
                signal(SignalKind::interrupt()),
            ) {
                (Ok(mut term), Ok(mut int)) => {
                    tokio::select! {
                        _ = term.recv() => {}
                        _ = int.recv() => {}
                    }
                }
                _ => std::future::pending::<()>().await,
            }
            eprintln!("stopping: every pipeline takes a final checkpoint");
            generators_stop.store(true, Ordering::SeqCst);
            server.stop();
        }
    };
    let served = axum::serve(listener, http::router(server.clone()))
        .with_graceful_shutdown(stopping)
        .await
        .context("HTTP server");
    // Whatever ended the HTTP server, the jobs stop with their final checkpoints.
    generators_stop.store(true, Ordering::SeqCst);
    server.stop();
    sampler.abort();
    let _ = tokio::task::spawn_blocking(move || {
        for r in runners.into_iter().chain(generators) {
            let _ = r.join();
        }
    })
    .await;
    served
}

fn print_runs(records: &[serde_json::Value]) {
    println!(
        "{:<30} {:<7} {:<7} {:>9} {:>10} {:>10} {:>9}  error",
        "run", "mode", "status", "ms", "read", "written", "rejected"
    );
    let sum = |v: &serde_json::Value| -> u64 {
        v.as_object()
            .map(|o| o.values().filter_map(|x| x.as_u64()).sum())
            .unwrap_or(0)
    };
    for r in records {
        println!(
            "{:<30} {:<7} {:<7} {:>9} {:>10} {:>10} {:>9}  {}",
            r["run_id"].as_str().unwrap_or("?"),
            r["mode"].as_str().unwrap_or("?"),
            r["status"].as_str().unwrap_or("?"),
            r["duration_ms"].as_u64().unwrap_or(0),
            sum(&r["rows_read"]),
            sum(&r["rows_written"]),
            sum(&r["rejects"]),
            r["error"].as_str().unwrap_or(""),
        );
    }
}
