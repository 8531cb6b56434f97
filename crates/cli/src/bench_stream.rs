//! Benchmarks of jobs over the embedded log: `flowline bench log` (throughput from a topic to a
//! files sink), `bench latency` (append → sink-write latency of a running stream job) and
//! `bench checkpoint` (checkpoint and restore of a large window state).
//!
//! Every event is a JSON object `{"user_id":…,"amount":…,"ts":"2026-03-16 00:00:00.000"}`
//! (latency events add `"sent_us"`, the send time in µs since the epoch), in topic `events` of a
//! log folder `log/` beside the generated pipeline files.

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use flowline_log::{Log, TopicConfig};
use flowline_runtime::{run_pipeline, Mode, RunOptions, RunReport, Trigger};

use crate::generate::{Rng, BASE_MS};

/// The source table every benchmark pipeline reads (`extra` adds columns).
fn events_table(extra: &str) -> String {
    format!(
        "CREATE TABLE events (user_id STRING, amount BIGINT, ts TIMESTAMP(3),{extra}
           WATERMARK FOR ts AS ts - INTERVAL '1' SECOND)
         WITH ('connector' = 'log', 'topic' = 'events', 'format' = 'json', 'log.dir' = 'log');\n"
    )
}

fn event_json(user: &str, amount: u64, ts_ms: i64) -> String {
    let ts = chrono::DateTime::from_timestamp_millis(ts_ms)
        .unwrap_or_default()
        .format("%Y-%m-%d %H:%M:%S%.3f");
    format!("{{\"user_id\":\"{user}\",\"amount\":{amount},\"ts\":\"{ts}\"}}")
}

fn create_topic(log_dir: &Path, partitions: u32) -> Result<()> {
    let config = TopicConfig {
        partitions,
        ..TopicConfig::default()
    };
    Log::open(log_dir)?.create_topic("events", config)?;
    Ok(())
}

/// Fills topic `events` of `<dir>/log` with events `0..n` made by `event` (key, value, time),
/// unless the marker `<dir>/log.filled` says the topic already holds exactly these. Returns the
/// seconds the fill took, or `None` when the topic was reused.
fn fill_topic(
    dir: &Path,
    what: &str,
    n: u64,
    partitions: u32,
    mut event: impl FnMut(u64) -> (String, String, i64),
) -> Result<Option<f64>> {
    let log_dir = dir.join("log");
    let marker = dir.join("log.filled");
    let label = format!("{what} events={n} partitions={partitions}\n");
    if std::fs::read_to_string(&marker).is_ok_and(|m| m == label) {
        return Ok(None);
    }
    let _ = std::fs::remove_file(&marker);
    if log_dir.exists() {
        std::fs::remove_dir_all(&log_dir)?;
    }
    create_topic(&log_dir, partitions)?;
    let start = Instant::now();
    let mut producer = Log::open(&log_dir)?.topic("events")?.producer()?;
    for i in 0..n {
        let (key, value, ts) = event(i);
        producer.append(Some(key.as_bytes()), value.as_bytes(), ts)?;
    }
    producer.flush()?;
    let secs = start.elapsed().as_secs_f64();
    std::fs::write(&marker, label)?;
    Ok(Some(secs))
}

/// CPU time (user + system, all threads) of this process so far, in seconds: fields 14 and 15
/// of `/proc/self/stat`, in clock ticks of 1/100 s (Linux's USER_HZ). `None` without `/proc`.
fn process_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Field 2 (the command) is in parentheses and may hold spaces: count fields after it.
    let rest = stat.get(stat.rfind(')')? + 1..)?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3, so utime (14) and stime (15) are at 11 and 12.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

fn sum(map: &std::collections::BTreeMap<String, u64>) -> u64 {
    map.values().sum()
}

fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

fn remove_if_exists(path: &Path) -> Result<()> {
    if path.exists() {
        std::fs::remove_dir_all(path).with_context(|| format!("removing {}", path.display()))?;
    }
    Ok(())
}

/// A micro-batch job run in this process: `--mode stream --trigger <trigger>`.
async fn run_job(pipeline: &Path, state_dir: &Path, trigger: Trigger) -> Result<RunReport> {
    let options = RunOptions {
        mode: Some(Mode::Stream),
        trigger: Some(trigger),
        state_dir: Some(state_dir.to_path_buf()),
        ..Default::default()
    };
    run_pipeline(pipeline, options)
        .await
        .with_context(|| format!("running {}", pipeline.display()))
}

// ------------------------------------------------------------------------------ bench log

/// One from-scratch run of a throughput pipeline.
struct Throughput {
    secs: f64,
    cpu_secs: Option<f64>,
    rows_read: u64,
    rows_written: u64,
    epochs: u64,
}

/// `flowline bench log`: events/s from a topic to a files sink, stateless and windowed.
pub async fn log(events: u64, partitions: u32, dir: &Path, repeat: u32) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    // ~1000 users; event time rises 1 ms per event with up to 500 ms of disorder (within the
    // 1 s watermark delay), so 2 M events cover about 33 one-minute windows.
    let mut rng = Rng::new(11);
    let filled = fill_topic(dir, "log-v1", events, partitions, |i| {
        let user = format!("user_{}", rng.below(1000));
        let ts = BASE_MS + i as i64 - rng.below(500) as i64;
        let value = event_json(&user, 1 + rng.below(1000), ts);
        (user, value, ts)
    })?;
    let pipelines = [
        (
            "stateless",
            "filter + projection",
            "INSERT INTO out SELECT user_id, amount * 100 AS cents, ts FROM events WHERE amount > 500;",
        ),
        (
            "windowed",
            "TUMBLE 1 min, COUNT/SUM per user",
            "INSERT INTO out
             SELECT window_start, window_end, user_id, COUNT(*) AS n, SUM(amount) AS total
             FROM TABLE(TUMBLE(TABLE events, DESCRIPTOR(ts), INTERVAL '1' MINUTE))
             GROUP BY window_start, window_end, user_id;",
        ),
    ];
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "log → files (parquet) throughput: {events} JSON events in {partitions} partitions, \
         --mode stream --trigger available-now from scratch, {repeat} runs each, {cores} cores"
    );
    match filled {
        Some(secs) => println!(
            "filled the topic in {secs:.2} s ({:.0} events/s, one producer thread)",
            events as f64 / secs
        ),
        None => println!(
            "topic already filled (remove {} to refill)",
            dir.join("log.filled").display()
        ),
    }
    println!();
    println!(
        "{:<10} {:<34} {:>7} {:>7} {:>11} {:>11} {:>6} {:>6} {:>11} {:>9} {:>6}",
        "pipeline",
        "query",
        "best s",
        "med s",
        "ev/s best",
        "ev/s med",
        "cpu s",
        "cores",
        "ev/cpu-s",
        "rows out",
        "epochs"
    );
    for (name, query_label, insert) in pipelines {
        let pipeline = dir.join(format!("{name}.sql"));
        std::fs::write(
            &pipeline,
            format!(
                "{}CREATE TABLE out WITH ('connector' = 'files', 'path' = 'out-{name}', 'format' = 'parquet');\n{insert}\n",
                events_table("")
            ),
        )?;
        let mut runs = vec![];
        for _ in 0..repeat.max(1) {
            let state = dir.join(format!("state-{name}"));
            remove_if_exists(&state)?;
            remove_if_exists(&dir.join(format!("out-{name}")))?;
            let cpu_before = process_cpu_seconds();
            let start = Instant::now();
            let report = run_job(&pipeline, &state, Trigger::AvailableNow).await?;
            let secs = start.elapsed().as_secs_f64();
            let cpu_secs = process_cpu_seconds()
                .zip(cpu_before)
                .map(|(after, before)| after - before);
            runs.push(Throughput {
                secs,
                cpu_secs,
                rows_read: sum(&report.rows_read),
                rows_written: sum(&report.rows_written),
                epochs: report.record["checkpoints"]["epochs"].as_u64().unwrap_or(0),
            });
        }
        if let Some(bad) = runs.iter().find(|r| r.rows_read != events) {
            bail!("{name}: read {} events of {events}", bad.rows_read);
        }
        let secs: Vec<f64> = runs.iter().map(|r| r.secs).collect();
        let best = secs.iter().copied().fold(f64::MAX, f64::min);
        let med = median(&secs);
        let cpu: Vec<f64> = runs.iter().filter_map(|r| r.cpu_secs).collect();
        let (cpu_text, cores_text, per_cpu_text) = if cpu.len() == runs.len() {
            let cpu = median(&cpu);
            (
                format!("{cpu:.2}"),
                format!("{:.2}", cpu / med),
                format!("{:.0}", events as f64 / cpu),
            )
        } else {
            ("?".into(), "?".into(), "?".into())
        };
        println!(
            "{name:<10} {query_label:<34} {best:>7.3} {med:>7.3} {:>11.0} {:>11.0} {cpu_text:>6} {cores_text:>6} {per_cpu_text:>11} {:>9} {:>6}",
            events as f64 / best,
            events as f64 / med,
            runs[0].rows_written,
            runs[0].epochs,
        );
    }
    println!();
    println!(
        "cpu s: CPU time (user + system, all threads) of the median run's process; cores: cpu s / \
         median s; ev/cpu-s: events per CPU-second (the job runs a decode thread and an operator \
         thread)"
    );
    Ok(())
}

// -------------------------------------------------------------------------- bench latency

/// Microseconds since the Unix epoch, now.
fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

/// (sent, seen) pairs in µs, collected by a reader of the job's output.
type Seen = Arc<Mutex<Vec<(i64, i64)>>>;

fn sent_us(line: &str) -> Option<i64> {
    let v: serde_json::Value = serde_json::from_str(line).ok()?;
    v["sent_us"].as_i64()
}

#[derive(Clone, Copy, PartialEq)]
enum LatencySink {
    /// `print` (json) to the job's stdout: each row is written as soon as it is processed.
    Print,
    /// `files` (json): rows become visible when the checkpoint publishes them.
    Files,
}

struct Latency {
    produced: u64,
    rate: f64,
    /// Latencies in µs of the rows produced during the measurement, sorted.
    latencies: Vec<i64>,
}

/// `flowline bench latency`: append → sink-write latency of a stream job in a child process.
pub fn latency(
    rate: u64,
    seconds: u64,
    partitions: u32,
    checkpoint_interval: &str,
    dir: &Path,
    files: bool,
) -> Result<()> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "append → sink latency of `flowline run --mode stream --checkpoint-interval \
         {checkpoint_interval}` (a child process), {rate} events/s for {seconds} s into \
         {partitions} partitions, {cores} cores"
    );
    println!("latency = time the row is seen at the sink − time just before its append, both in this process");
    println!();
    let mut sinks = vec![(LatencySink::Print, "print (json, stdout pipe)")];
    if files {
        sinks.push((LatencySink::Files, "files (json), visible at checkpoint"));
    }
    println!(
        "{:<36} {:>9} {:>9} {:>8} {:>8} {:>8} {:>8} {:>8}",
        "sink", "rows", "events/s", "p50 ms", "p95 ms", "p99 ms", "max ms", "lost"
    );
    for (sink, label) in sinks {
        let name = if sink == LatencySink::Print {
            "print"
        } else {
            "files"
        };
        let r = measure_latency(
            &dir.join(name),
            sink,
            rate,
            seconds,
            partitions,
            checkpoint_interval,
        )?;
        let pct = |q: f64| -> f64 {
            if r.latencies.is_empty() {
                return f64::NAN;
            }
            let rank = ((q * r.latencies.len() as f64).ceil() as usize).clamp(1, r.latencies.len());
            r.latencies[rank - 1] as f64 / 1000.0
        };
        println!(
            "{label:<36} {:>9} {:>9.0} {:>8.1} {:>8.1} {:>8.1} {:>8.1} {:>8}",
            r.latencies.len(),
            r.rate,
            pct(0.50),
            pct(0.95),
            pct(0.99),
            pct(1.0),
            r.produced.saturating_sub(r.latencies.len() as u64),
        );
    }
    Ok(())
}

fn measure_latency(
    dir: &Path,
    sink: LatencySink,
    rate: u64,
    seconds: u64,
    partitions: u32,
    checkpoint_interval: &str,
) -> Result<Latency> {
    remove_if_exists(dir)?;
    std::fs::create_dir_all(dir)?;
    create_topic(&dir.join("log"), partitions)?;
    let sink_table = match sink {
        LatencySink::Print => "CREATE TABLE shown WITH ('connector' = 'print', 'format' = 'json');",
        LatencySink::Files => {
            "CREATE TABLE shown WITH ('connector' = 'files', 'path' = 'out', 'format' = 'json');"
        }
    };
    std::fs::write(
        dir.join("latency.sql"),
        format!(
            "{}{sink_table}\nINSERT INTO shown SELECT user_id, amount, sent_us FROM events WHERE amount > 0;\n",
            events_table(" sent_us BIGINT,")
        ),
    )?;
    let stderr_path = dir.join("job-stderr.txt");
    let mut child = Command::new(std::env::current_exe()?)
        .args([
            "run",
            "latency.sql",
            "--mode",
            "stream",
            "--checkpoint-interval",
            checkpoint_interval,
            "--state-dir",
            "state",
            "--quiet",
        ])
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(if sink == LatencySink::Print {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stderr(std::fs::File::create(&stderr_path)?)
        .spawn()
        .context("starting the stream job")?;

    let seen: Seen = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let collector = {
        let seen = seen.clone();
        let stop = stop.clone();
        match sink {
            LatencySink::Print => {
                let stdout = child.stdout.take().context("no stdout pipe")?;
                std::thread::spawn(move || read_print_output(stdout, &seen))
            }
            LatencySink::Files => {
                let out = dir.join("out");
                std::thread::spawn(move || watch_files(&out, &seen, &stop))
            }
        }
    };
    let result = produce_and_wait(dir, &mut child, &seen, rate, seconds);
    terminate(&mut child);
    stop.store(true, Ordering::SeqCst);
    let _ = collector.join();
    let (t0, produced, achieved) = result.map_err(|e| {
        let err = std::fs::read_to_string(&stderr_path).unwrap_or_default();
        e.context(format!("job stderr:\n{err}"))
    })?;
    let mut latencies: Vec<i64> = seen
        .lock()
        .map_err(|_| anyhow::anyhow!("collector panicked"))?
        .iter()
        .filter(|(sent, _)| *sent >= t0)
        .map(|(sent, at)| at - sent)
        .collect();
    latencies.sort_unstable();
    Ok(Latency {
        produced,
        rate: achieved,
        latencies,
    })
}

/// Warms the job up (one event every 20 ms until the first row reaches the sink), then
/// produces `rate` events/s for `seconds` and waits for their rows. Returns the start of the
/// measurement (µs), the events produced and the rate achieved.
fn produce_and_wait(
    dir: &Path,
    child: &mut Child,
    seen: &Seen,
    rate: u64,
    seconds: u64,
) -> Result<(i64, u64, f64)> {
    let log = Log::open(dir.join("log"))?;
    let mut producer = log.topic("events")?.producer()?;
    let count = |from: i64| -> usize {
        seen.lock()
            .map(|s| s.iter().filter(|(sent, _)| *sent >= from).count())
            .unwrap_or(0)
    };
    let mut send = |i: u64| -> Result<()> {
        let user = format!("user_{}", i % 1000);
        let sent = now_us();
        let ts = sent / 1000;
        let value = event_json(&user, 1 + i % 100, ts);
        // Splice `sent_us` into the object.
        let value = format!("{},\"sent_us\":{sent}}}", &value[..value.len() - 1]);
        producer.append(Some(user.as_bytes()), value.as_bytes(), ts)?;
        Ok(())
    };

    let warmup = Instant::now();
    let mut i = 0;
    while count(0) == 0 {
        if let Some(status) = child.try_wait()? {
            bail!("the stream job exited during warm-up ({status})");
        }
        if warmup.elapsed() > Duration::from_secs(60) {
            bail!("no row reached the sink within 60 s");
        }
        send(i)?;
        i += 1;
        std::thread::sleep(Duration::from_millis(20));
    }

    let t0 = now_us();
    let total = rate * seconds;
    let start = Instant::now();
    let mut sent = 0;
    while sent < total {
        let due = ((start.elapsed().as_secs_f64() * rate as f64) as u64).min(total);
        while sent < due {
            send(i)?;
            i += 1;
            sent += 1;
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    let achieved = total as f64 / start.elapsed().as_secs_f64();
    producer.flush()?;

    let waiting = Instant::now();
    while count(t0) < total as usize && waiting.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok((t0, total, achieved))
}

/// Reads the print sink's JSON lines until the job's stdout closes.
fn read_print_output(stdout: std::process::ChildStdout, seen: &Seen) {
    let mut reader = std::io::BufReader::with_capacity(1 << 16, stdout);
    let mut line = String::new();
    loop {
        line.clear();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {
                let at = now_us();
                if let (Some(sent), Ok(mut s)) = (sent_us(&line), seen.lock()) {
                    s.push((sent, at));
                }
            }
        }
    }
}

/// Polls the files sink's folder every 2 ms; a newly published file's rows are seen when the
/// file appears.
fn watch_files(out: &Path, seen: &Seen, stop: &AtomicBool) {
    let mut known = std::collections::BTreeSet::new();
    while !stop.load(Ordering::SeqCst) {
        let at = now_us();
        let mut new: Vec<PathBuf> = vec![];
        if let Ok(entries) = std::fs::read_dir(out) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if !name.starts_with('.') && known.insert(name) {
                    new.push(e.path());
                }
            }
        }
        for path in new {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            if let Ok(mut s) = seen.lock() {
                s.extend(text.lines().filter_map(sent_us).map(|sent| (sent, at)));
            }
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// SIGTERM (the job takes a final checkpoint and exits), SIGKILL after 30 s.
fn terminate(child: &mut Child) {
    // The shell's built-in kill: no procps needed.
    let _ = Command::new("sh")
        .args(["-c", &format!("kill -TERM {}", child.id())])
        .status();
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(30) {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

// ----------------------------------------------------------------------- bench checkpoint

fn state_bin_bytes(state_dir: &Path) -> Result<u64> {
    let checkpoints = state_dir.join("checkpoints");
    let mut newest: Option<PathBuf> = None;
    for e in std::fs::read_dir(&checkpoints)?.flatten() {
        let path = e.path();
        if e.file_name().to_string_lossy().starts_with("chk-")
            && newest.as_ref().is_none_or(|n| path > *n)
        {
            newest = Some(path);
        }
    }
    let newest = newest.context("no checkpoint was written")?;
    Ok(std::fs::metadata(newest.join("state.bin"))?.len())
}

/// `flowline bench checkpoint`: checkpoint duration and size, and restart time, of a window
/// state of `keys` groups.
pub async fn checkpoint(keys: u64, partitions: u32, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    // One event per key, all in one day (the TUMBLE 1 DAY window stays open).
    let mut rng = Rng::new(13);
    let filled = fill_topic(dir, "checkpoint-v1", keys, partitions, |i| {
        let user = format!("user_{i:08}");
        let ts = BASE_MS + (i as i64).saturating_mul(80_000_000) / keys as i64;
        let value = event_json(&user, 1 + rng.below(1000), ts);
        (user, value, ts)
    })?;
    let pipeline = dir.join("daily.sql");
    std::fs::write(
        &pipeline,
        format!(
            "{}CREATE TABLE daily WITH ('connector' = 'files', 'path' = 'out', 'format' = 'parquet');
             INSERT INTO daily
             SELECT window_start, window_end, user_id, COUNT(*) AS n, SUM(amount) AS total,
                    MIN(amount) AS smallest, MAX(amount) AS largest
             FROM TABLE(TUMBLE(TABLE events, DESCRIPTOR(ts), INTERVAL '1' DAY))
             GROUP BY window_start, window_end, user_id;\n",
            events_table("")
        ),
    )?;
    let state = dir.join("state");
    remove_if_exists(&state)?;
    remove_if_exists(&dir.join("out"))?;
    println!(
        "checkpoint of a TUMBLE 1 DAY window with {keys} open groups (COUNT, SUM, MIN, MAX per \
         user; one event per user), --mode micro-batch --trigger once, in this process"
    );
    if let Some(secs) = filled {
        println!("filled the topic in {secs:.2} s");
    }
    let start = Instant::now();
    let first = run_job(&pipeline, &state, Trigger::Once).await?;
    let first_secs = start.elapsed().as_secs_f64();
    if sum(&first.rows_read) != keys {
        bail!("read {} events of {keys}", sum(&first.rows_read));
    }
    let state_bytes = state_bin_bytes(&state)?;
    let start = Instant::now();
    let second = run_job(&pipeline, &state, Trigger::Once).await?;
    let second_secs = start.elapsed().as_secs_f64();

    let mb = |b: u64| b as f64 / 1e6;
    let cp = |r: &RunReport, field: &str| r.record["checkpoints"][field].as_u64().unwrap_or(0);
    let checkpoint_ms = cp(&first, "checkpoint_ms_max");
    let restore_ms = cp(&second, "restore_ms");
    let rows = [
        ("open groups (keys)", format!("{keys}")),
        (
            "in-memory state estimate (peak_state_bytes)",
            format!(
                "{:.1} MB",
                mb(first.record["peak_state_bytes"].as_u64().unwrap_or(0))
            ),
        ),
        (
            "checkpoint size (state.bin)",
            format!("{:.1} MB", mb(state_bytes)),
        ),
        (
            "first run: wall time (read, aggregate, checkpoint)",
            format!("{first_secs:.2} s"),
        ),
        (
            "first run: checkpoint duration (checkpoint_ms_max)",
            format!("{checkpoint_ms} ms"),
        ),
        (
            "first run: checkpoint write rate",
            format!(
                "{:.0} MB/s",
                mb(state_bytes) / (checkpoint_ms.max(1) as f64 / 1000.0)
            ),
        ),
        (
            "restart (no new data): restore_ms",
            format!("{restore_ms} ms"),
        ),
        (
            "restart: restore rate",
            format!(
                "{:.0} MB/s",
                mb(state_bytes) / (restore_ms.max(1) as f64 / 1000.0)
            ),
        ),
        (
            "restart: checkpoint taken (0: nothing changed, none written)",
            format!("{} ms", cp(&second, "checkpoint_ms_max")),
        ),
        (
            "restart: wall time of the run",
            format!("{second_secs:.2} s"),
        ),
    ];
    println!();
    for (what, value) in rows {
        println!("{what:<55} {value:>12}");
    }
    Ok(())
}
