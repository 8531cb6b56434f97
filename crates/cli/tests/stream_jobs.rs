//! Jobs over the embedded log, through the binary: a stream job killed with SIGKILL at random
//! moments while a producer appends, restarted each time, must end with exactly the expected
//! window results (nothing lost, nothing doubled); `--trigger available-now` over the same topic
//! gives the same results; a corrupt log tail and a corrupt newest checkpoint recover; a changed
//! plan is refused; SIGTERM takes a final checkpoint and exits cleanly; a GROUP BY without a
//! window runs in update mode, and upserting its output ends with the exact totals.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use flowline_log::{Log, TopicConfig};
use serde_json::Value;

const PARTITIONS: u32 = 3;
const BASE: i64 = 1_700_000_000_000;
/// The session gap of [`pipeline`]'s session aggregate: a user's events are 70 ms apart on
/// average, with up to 300 ms of disorder, so sessions both break and merge.
const SESSION_GAP_MS: i64 = 150;
/// The self interval join of [`pipeline`]: pairs of a user's events, the first at most this
/// many ms before the second (each event pairs with itself too).
const PAIR_MS: i64 = 20;

fn pipeline(dir: &Path, name: &str, out: &str, window: &str) -> PathBuf {
    let path = dir.join(format!("{name}.sql"));
    std::fs::write(
        &path,
        format!(
            "CREATE TABLE events (
               user_id STRING,
               amount BIGINT,
               ts TIMESTAMP(3),
               WATERMARK FOR ts AS ts - INTERVAL '1' SECOND
             ) WITH ('connector' = 'log', 'topic' = 'events', 'format' = 'json', 'log.dir' = 'log');
             CREATE TABLE totals (
               window_start TIMESTAMP(3), window_end TIMESTAMP(3), user_id STRING,
               n BIGINT, total BIGINT
             ) WITH ('connector' = 'files', 'path' = '{out}', 'format' = 'json');
             CREATE TABLE sessions WITH ('connector' = 'files', 'path' = '{out}_sessions',
               'format' = 'json');
             CREATE TABLE pairs WITH ('connector' = 'files', 'path' = '{out}_pairs',
               'format' = 'json');
             CREATE TABLE served WITH ('connector' = 'table', 'path' = 'serving/{out}');
             INSERT INTO served
             SELECT window_start, window_end, user_id, COUNT(*) AS n, SUM(amount) AS total
             FROM TABLE(TUMBLE(TABLE events, DESCRIPTOR(ts), INTERVAL '{window}' SECOND))
             GROUP BY window_start, window_end, user_id;
             INSERT INTO totals
             SELECT window_start, window_end, user_id, COUNT(*) AS n, SUM(amount) AS total
             FROM TABLE(TUMBLE(TABLE events, DESCRIPTOR(ts), INTERVAL '{window}' SECOND))
             GROUP BY window_start, window_end, user_id;
             INSERT INTO sessions
             SELECT window_start, window_end, user_id, COUNT(*) AS n, SUM(amount) AS total
             FROM TABLE(SESSION(TABLE events PARTITION BY user_id, DESCRIPTOR(ts),
                                INTERVAL '{SESSION_GAP_MS}' MILLISECOND))
             GROUP BY window_start, window_end, user_id;
             INSERT INTO pairs
             SELECT a.user_id, a.ts AS a_ts, b.ts AS b_ts, a.amount AS a_amount
             FROM events a JOIN events b ON a.user_id = b.user_id
              AND a.ts BETWEEN b.ts - INTERVAL '{PAIR_MS}' MILLISECOND AND b.ts;\n"
        ),
    )
    .unwrap();
    path
}

fn flowline(dir: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_flowline"));
    c.args(args)
        .current_dir(dir)
        .env_remove("FLOWLINE_LOG_DIR")
        .stdin(Stdio::null());
    c
}

fn run(dir: &Path, args: &[&str]) -> Output {
    flowline(dir, args).output().unwrap()
}

fn start_stream(dir: &Path, sql: &Path, state: &str) -> Child {
    start_stream_with(dir, sql, state, &[])
}

/// [`start_stream`] with more arguments.
fn start_stream_with(dir: &Path, sql: &Path, state: &str, extra: &[&str]) -> Child {
    let sql = sql.to_str().unwrap();
    let mut args = vec![
        "run",
        sql,
        "--mode",
        "stream",
        "--checkpoint-interval",
        "150ms",
        "--batch-size",
        "64",
        "--state-dir",
        state,
        "--quiet",
    ];
    args.extend_from_slice(extra);
    flowline(dir, &args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// A small deterministic generator (the seed is printed so a failure can be replayed).
struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Event `i`: user, amount, time. Times rise 10 ms per event with up to 300 ms of disorder,
/// well within the 1 s watermark delay, so no row is ever late whatever the batch boundaries.
fn event(i: u64) -> (String, i64, i64) {
    let jitter = ((i * 7919) % 31) as i64 * 10;
    (
        format!("user_{}", i % 7),
        (i % 13) as i64 + 1,
        BASE + i as i64 * 10 - jitter,
    )
}

fn json_event(i: u64) -> Vec<u8> {
    let (user, amount, ts) = event(i);
    format!(
        "{{\"user_id\":\"{user}\",\"amount\":{amount},\"ts\":\"{}\"}}",
        chrono::DateTime::from_timestamp_millis(ts)
            .unwrap()
            .format("%Y-%m-%d %H:%M:%S%.3f")
    )
    .into_bytes()
}

fn create_topic(dir: &Path) {
    let log = Log::open(dir.join("log")).unwrap();
    let config = TopicConfig {
        partitions: PARTITIONS,
        ..TopicConfig::default()
    };
    log.create_topic("events", config).unwrap();
}

fn produce(dir: &Path, range: std::ops::Range<u64>) {
    let log = Log::open(dir.join("log")).unwrap();
    let mut producer = log.topic("events").unwrap().producer().unwrap();
    for i in range {
        let (user, _, _) = event(i);
        producer
            .append(Some(user.as_bytes()), &json_event(i), 0)
            .unwrap();
    }
    producer.flush().unwrap();
}

/// One event an hour later in every partition: the watermark passes every real window.
fn close_windows(dir: &Path) {
    let log = Log::open(dir.join("log")).unwrap();
    let mut producer = log.topic("events").unwrap().producer().unwrap();
    let ts = chrono::DateTime::from_timestamp_millis(BASE + 3_600_000)
        .unwrap()
        .format("%Y-%m-%d %H:%M:%S%.3f");
    for p in 0..PARTITIONS {
        let value = format!("{{\"user_id\":\"closer\",\"amount\":0,\"ts\":\"{ts}\"}}");
        producer.append_to(p, None, value.as_bytes(), 0).unwrap();
    }
    producer.flush().unwrap();
}

type Results = BTreeMap<(String, String), (i64, i64)>;

/// The expected window results of events `0..n`, with 1-second windows.
fn expected(n: u64) -> Results {
    let mut out: Results = BTreeMap::new();
    for i in 0..n {
        let (user, amount, ts) = event(i);
        let start = ts.div_euclid(1000) * 1000;
        let start = chrono::DateTime::from_timestamp_millis(start)
            .unwrap()
            .format("%Y-%m-%dT%H:%M:%S")
            .to_string();
        let e = out.entry((start, user)).or_default();
        e.0 += 1;
        e.1 += amount;
    }
    out
}

/// The expected sessions of events `0..n` (gap [`SESSION_GAP_MS`]) as (start, end, user) →
/// (n, total): per user, events by time; one at or past the session's end starts a new one.
fn expected_sessions(n: u64) -> BTreeMap<(i64, i64, String), (i64, i64)> {
    let mut by_user: BTreeMap<String, Vec<(i64, i64)>> = BTreeMap::new();
    for i in 0..n {
        let (user, amount, ts) = event(i);
        by_user.entry(user).or_default().push((ts, amount));
    }
    let mut out = BTreeMap::new();
    for (user, mut events) in by_user {
        events.sort();
        let mut current: Option<(i64, i64, i64, i64)> = None; // start, end, n, total
        for (ts, amount) in events {
            current = match current {
                Some((start, end, n, total)) if ts < end => {
                    Some((start, end.max(ts + SESSION_GAP_MS), n + 1, total + amount))
                }
                other => {
                    if let Some((start, end, n, total)) = other {
                        out.insert((start, end, user.clone()), (n, total));
                    }
                    Some((ts, ts + SESSION_GAP_MS, 1, amount))
                }
            };
        }
        if let Some((start, end, n, total)) = current {
            out.insert((start, end, user.clone()), (n, total));
        }
    }
    out
}

type Pairs = BTreeMap<(String, i64, i64, i64), usize>;

/// The expected self-join pairs of events `0..n`: (user, a time, b time, a amount) → count.
fn expected_pairs(n: u64) -> Pairs {
    let mut by_user: BTreeMap<String, Vec<(i64, i64)>> = BTreeMap::new();
    for i in 0..n {
        let (user, amount, ts) = event(i);
        by_user.entry(user).or_default().push((ts, amount));
    }
    let mut out = Pairs::new();
    for (user, events) in by_user {
        for &(a, amount) in &events {
            for &(b, _) in &events {
                if b - PAIR_MS <= a && a <= b {
                    *out.entry((user.clone(), a, b, amount)).or_default() += 1;
                }
            }
        }
    }
    out
}

/// Every published pair under `out`, counted.
fn pair_results(out: &Path) -> Pairs {
    let mut rows = Pairs::new();
    let Ok(entries) = std::fs::read_dir(out) else {
        return rows;
    };
    let ms = |v: &Value| {
        chrono::NaiveDateTime::parse_from_str(v.as_str().unwrap(), "%Y-%m-%dT%H:%M:%S%.f")
            .unwrap()
            .and_utc()
            .timestamp_millis()
    };
    for f in entries.flatten().map(|e| e.path()) {
        if !f.is_file() || f.file_name().unwrap().to_string_lossy().starts_with('.') {
            continue;
        }
        for line in std::fs::read_to_string(&f).unwrap().lines() {
            let v: Value = serde_json::from_str(line).unwrap();
            let key = (
                v["user_id"].as_str().unwrap().to_string(),
                ms(&v["a_ts"]),
                ms(&v["b_ts"]),
                v["a_amount"].as_i64().unwrap(),
            );
            *rows.entry(key).or_default() += 1;
        }
    }
    rows
}

/// Every published session row under `out`, as (start, end, user) → (n, total); panics on a
/// duplicate.
fn session_results(out: &Path) -> BTreeMap<(i64, i64, String), (i64, i64)> {
    let mut rows = BTreeMap::new();
    let Ok(entries) = std::fs::read_dir(out) else {
        return rows;
    };
    let ms = |v: &Value| {
        let text = v.as_str().unwrap();
        chrono::NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f")
            .unwrap()
            .and_utc()
            .timestamp_millis()
    };
    for f in entries.flatten().map(|e| e.path()) {
        if !f.is_file() || f.file_name().unwrap().to_string_lossy().starts_with('.') {
            continue;
        }
        for line in std::fs::read_to_string(&f).unwrap().lines() {
            let v: Value = serde_json::from_str(line).unwrap();
            let key = (
                ms(&v["window_start"]),
                ms(&v["window_end"]),
                v["user_id"].as_str().unwrap().to_string(),
            );
            let value = (v["n"].as_i64().unwrap(), v["total"].as_i64().unwrap());
            if let Some(old) = rows.insert(key.clone(), value) {
                panic!("session {key:?} written twice: {old:?} and {value:?}");
            }
        }
    }
    rows
}

/// Every row of every published file under `out`, as (window start, user) → (n, total);
/// panics on a duplicate (window, user) row.
fn results(out: &Path) -> (Results, usize) {
    let mut rows = Results::new();
    let mut count = 0;
    let Ok(entries) = std::fs::read_dir(out) else {
        return (rows, 0);
    };
    let mut files: Vec<_> = entries.flatten().map(|e| e.path()).collect();
    files.sort();
    for f in files {
        let name = f.file_name().unwrap().to_string_lossy().to_string();
        if name.starts_with('.') || !f.is_file() {
            continue;
        }
        for line in std::fs::read_to_string(&f).unwrap().lines() {
            let v: Value = serde_json::from_str(line).unwrap();
            let start = v["window_start"].as_str().unwrap();
            let start = start.trim_end_matches(".000").to_string();
            let key = (start, v["user_id"].as_str().unwrap().to_string());
            let value = (v["n"].as_i64().unwrap(), v["total"].as_i64().unwrap());
            count += 1;
            if let Some(old) = rows.insert(key.clone(), value) {
                panic!("window {key:?} written twice: {old:?} and {value:?} (in {name})");
            }
        }
    }
    (rows, count)
}

/// The rows of an append serving table (the window totals), as [`results`] reads files.
fn served_results(dir: &Path) -> (Results, usize) {
    use arrow::array::{Int64Array, StringArray, TimestampMillisecondArray};
    let mut rows = Results::new();
    let mut count = 0;
    let table = flowline_connectors::serving::ServingTable::at(dir);
    let Some((_, batches)) = table.read(None).unwrap() else {
        return (rows, 0);
    };
    for b in batches {
        let col = |name: &str| b.column(b.schema().index_of(name).unwrap()).clone();
        let start = col("window_start");
        let start = start
            .as_any()
            .downcast_ref::<TimestampMillisecondArray>()
            .unwrap();
        let user = col("user_id");
        let user = user.as_any().downcast_ref::<StringArray>().unwrap();
        let n = col("n");
        let n = n.as_any().downcast_ref::<Int64Array>().unwrap();
        let total = col("total");
        let total = total.as_any().downcast_ref::<Int64Array>().unwrap();
        for i in 0..b.num_rows() {
            let start = chrono::DateTime::from_timestamp_millis(start.value(i))
                .unwrap()
                .format("%Y-%m-%dT%H:%M:%S")
                .to_string();
            let key = (start, user.value(i).to_string());
            let value = (n.value(i), total.value(i));
            count += 1;
            if let Some(old) = rows.insert(key.clone(), value) {
                panic!("window {key:?} served twice: {old:?} and {value:?}");
            }
        }
    }
    (rows, count)
}

fn wait_for(out: &Path, want: usize, timeout: Duration) -> usize {
    let started = Instant::now();
    loop {
        let (_, n) = results(out);
        if n >= want || started.elapsed() > timeout {
            return n;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn terminate(child: &mut Child) {
    // The shell's built-in kill: no procps needed on a fresh machine.
    let status = Command::new("sh")
        .args(["-c", &format!("kill -TERM {}", child.id())])
        .status()
        .unwrap();
    assert!(status.success());
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                use std::io::Read;
                let _ = e.read_to_string(&mut err);
            }
            assert!(
                status.success(),
                "stream job failed on SIGTERM ({status}):\n{err}"
            );
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "stream job ignored SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn assert_exact(got: &Results, want: &Results) {
    let missing: Vec<_> = want.keys().filter(|k| !got.contains_key(*k)).collect();
    let extra: Vec<_> = got.keys().filter(|k| !want.contains_key(*k)).collect();
    let wrong: Vec<_> = want
        .iter()
        .filter(|(k, v)| got.get(*k).is_some_and(|g| g != *v))
        .collect();
    assert!(
        missing.is_empty() && extra.is_empty() && wrong.is_empty(),
        "{} missing (e.g. {:?}), {} extra (e.g. {:?}), {} wrong (e.g. {:?})",
        missing.len(),
        missing.first(),
        extra.len(),
        extra.first(),
        wrong.len(),
        wrong.first()
    );
}

#[test]
fn kill_9_at_random_moments_loses_and_doubles_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    create_topic(dir);
    let sql = pipeline(dir, "job", "out", "1");
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    eprintln!("seed {seed}");
    let mut rng = Lcg(seed);

    const EVENTS: u64 = 6000;
    const CHUNK: u64 = 250;
    let producer_dir = dir.to_path_buf();
    let producer = std::thread::spawn(move || {
        let mut i = 0;
        while i < EVENTS {
            produce(&producer_dir, i..(i + CHUNK).min(EVENTS));
            i += CHUNK;
            std::thread::sleep(Duration::from_millis(60));
        }
    });

    let mut kills = 0;
    let mut child = start_stream(dir, &sql, "state");
    while kills < 12 {
        std::thread::sleep(Duration::from_millis(150 + rng.below(500)));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        kills += 1;
        child = start_stream(dir, &sql, "state");
    }
    producer.join().unwrap();
    close_windows(dir);

    let want = expected(EVENTS);
    let got = wait_for(&dir.join("out"), want.len(), Duration::from_secs(120));
    // One more kill after everything is written, then let it finish: still exact.
    child.kill().unwrap();
    child.wait().unwrap();
    let mut child = start_stream(dir, &sql, "state");
    std::thread::sleep(Duration::from_millis(600));
    terminate(&mut child);
    let (rows, count) = results(&dir.join("out"));
    assert_eq!(
        count,
        want.len(),
        "rows written (saw {got} before the last kill)"
    );
    assert_exact(&rows, &want);
    // The serving table got the same rows, each once (append: its staged epochs were published
    // exactly once through the kills).
    let (served, served_count) = served_results(&dir.join("serving/out"));
    assert_eq!(served_count, want.len(), "rows served");
    assert_exact(&served, &want);
    // Session state (open sessions' rows) went through the same kills: exact sessions too,
    // except the closing events' own one-event sessions.
    let mut sessions = session_results(&dir.join("out_sessions"));
    sessions.retain(|(_, _, user), _| user != "closer");
    assert_eq!(sessions, expected_sessions(EVENTS), "sessions");
    // So did the self interval join's kept rows: every pair exactly once.
    let mut pairs = pair_results(&dir.join("out_pairs"));
    pairs.retain(|(user, ..), _| user != "closer");
    let want_pairs = expected_pairs(EVENTS);
    assert!(
        want_pairs.len() > EVENTS as usize,
        "the join must find more than self pairs"
    );
    if pairs != want_pairs {
        let missing = want_pairs
            .iter()
            .filter(|(k, v)| pairs.get(*k) != Some(*v))
            .count();
        let extra = pairs
            .iter()
            .filter(|(k, v)| want_pairs.get(*k) != Some(*v))
            .count();
        panic!("self join: {missing} pairs missing or miscounted, {extra} unexpected");
    }
    // The output was committed over several checkpoints (files are named by epoch), so the kills
    // really interrupted a job that was making progress. (How many depends on how fast a
    // restarted debug binary gets going between kills on a loaded machine: at least 3.)
    let epochs: std::collections::BTreeSet<String> = std::fs::read_dir(dir.join("out"))
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().to_string();
            Some(name.strip_prefix("part-")?.split('-').next()?.to_string())
        })
        .collect();
    assert!(
        epochs.len() >= 3,
        "output of only {} epochs: {epochs:?}",
        epochs.len()
    );

    // The same topic with `--trigger available-now`, from scratch: the same results.
    let sql2 = pipeline(dir, "again", "out2", "1");
    micro_ok(dir, &sql2, "available-now", "state2");
    let (rows2, count2) = results(&dir.join("out2"));
    assert_eq!(count2, want.len());
    assert_exact(&rows2, &want);
    let (served2, _) = served_results(&dir.join("serving/out2"));
    assert_exact(&served2, &want);

    // Killed runs write no manifest record; the last, stopped by SIGTERM, restored a
    // checkpoint and read every record of the topic.
    let manifest = std::fs::read_to_string(dir.join("state/manifest.jsonl")).unwrap();
    let last: Value = serde_json::from_str(manifest.lines().last().unwrap()).unwrap();
    assert_eq!(last["status"], "ok", "{last}");
    assert!(
        last["checkpoints"]["restored_from_epoch"].is_u64(),
        "{last}"
    );
    let read: u64 = last["inputs"][0]["positions"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(read, EVENTS + u64::from(PARTITIONS), "{last}");
}

#[test]
fn a_changed_plan_is_refused_with_an_explanation() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    create_topic(dir);
    produce(dir, 0..500);
    let sql = pipeline(dir, "job", "out", "1");
    micro_ok(dir, &sql, "once", "state");
    // Two-second windows: the checkpoint's state does not fit.
    let sql = pipeline(dir, "job", "out", "2");
    let out = micro(dir, &sql, "once", "state");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("different plan"), "{err}");
    assert!(
        err.contains("TUMBLE 2000 ms") && err.contains("TUMBLE 1000 ms"),
        "{err}"
    );
    assert!(err.contains("state directory"), "{err}");
}

#[test]
fn trigger_once_then_available_now_resume_where_they_stopped() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    create_topic(dir);
    let sql = pipeline(dir, "job", "out", "1");
    produce(dir, 0..1000);
    micro_ok(dir, &sql, "once", "state");
    let (_, first) = results(&dir.join("out"));
    assert!(
        first > 0,
        "windows closed by the first 1000 events are written"
    );
    produce(dir, 1000..3000);
    micro_ok(dir, &sql, "available-now", "state");
    close_windows(dir);
    micro_ok(dir, &sql, "once", "state");
    let (rows, count) = results(&dir.join("out"));
    let want = expected(3000);
    assert_eq!(count, want.len());
    assert_exact(&rows, &want);
}

fn rss_kb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

#[test]
fn a_slow_sink_holds_the_source_back_and_memory_stays_bounded() {
    use std::io::Read;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    create_topic(dir);
    let sql = dir.join("slow.sql");
    std::fs::write(
        &sql,
        "CREATE TABLE events (user_id STRING, amount BIGINT, ts TIMESTAMP(3))
           WITH ('connector' = 'log', 'topic' = 'events', 'log.dir' = 'log',
                 'properties.group.id' = 'slow');
         CREATE TABLE shown WITH ('connector' = 'print', 'format' = 'json');
         INSERT INTO shown SELECT user_id, amount, ts FROM events;\n",
    )
    .unwrap();
    let mut child = flowline(
        dir,
        &[
            "run",
            sql.to_str().unwrap(),
            "--mode",
            "stream",
            "--checkpoint-interval",
            "200ms",
            "--state-dir",
            "state",
            "--quiet",
        ],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::null())
    .spawn()
    .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let baseline = rss_kb(child.id());
    assert!(baseline > 0, "cannot read the job's memory");

    // The sink (our end of its stdout pipe) reads nothing while ~45 MB of events arrive.
    const EVENTS: u64 = 500_000;
    let started = Instant::now();
    produce(dir, 0..EVENTS);
    let mut peak = baseline;
    while started.elapsed() < Duration::from_secs(4) {
        peak = peak.max(rss_kb(child.id()));
        std::thread::sleep(Duration::from_millis(20));
    }
    let log = Log::open(dir.join("log")).unwrap();
    let topic = log.topic("events").unwrap();
    let lag: u64 = topic.lag("slow").unwrap().values().sum();
    assert!(
        lag > EVENTS / 2,
        "the job was held back by its sink: most events are still unread (lag {lag})"
    );
    let growth_mb = (peak - baseline) / 1024;
    eprintln!("baseline {baseline} kB, peak {peak} kB, lag {lag} of {EVENTS} events");
    assert!(
        growth_mb < 40,
        "memory grew by {growth_mb} MB while the sink was blocked (baseline {} MB)",
        baseline / 1024
    );

    // Now the sink drains: every event arrives, once.
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut lines = 0u64;
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = stdout.read(&mut buf).unwrap();
            if n == 0 {
                return lines;
            }
            lines += buf[..n].iter().filter(|&&b| b == b'\n').count() as u64;
        }
    });
    let deadline = Instant::now() + Duration::from_secs(120);
    while topic.lag("slow").unwrap().values().sum::<u64>() > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    terminate(&mut child);
    assert_eq!(reader.join().unwrap(), EVENTS);
}

#[test]
fn a_log_sink_gets_each_result_once_through_kills_and_the_group_shows_true_lag() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    create_topic(dir);
    let log = Log::open(dir.join("log")).unwrap();
    log.create_topic(
        "totals",
        TopicConfig {
            partitions: 2,
            ..TopicConfig::default()
        },
    )
    .unwrap();
    let sql = dir.join("to_log.sql");
    std::fs::write(
        &sql,
        "CREATE TABLE events (user_id STRING, amount BIGINT, ts TIMESTAMP(3),
             WATERMARK FOR ts AS ts - INTERVAL '1' SECOND)
           WITH ('connector' = 'log', 'topic' = 'events', 'log.dir' = 'log',
                 'properties.group.id' = 'totals-job');
         CREATE TABLE totals WITH ('connector' = 'log', 'topic' = 'totals', 'log.dir' = 'log',
                                   'key.fields' = 'user_id');
         INSERT INTO totals
         SELECT window_start, user_id, COUNT(*) AS n, SUM(amount) AS total
         FROM TABLE(TUMBLE(TABLE events, DESCRIPTOR(ts), INTERVAL '1' SECOND))
         GROUP BY window_start, window_end, user_id;\n",
    )
    .unwrap();
    let producer_dir = dir.to_path_buf();
    const EVENTS: u64 = 3000;
    let producer = std::thread::spawn(move || {
        for start in (0..EVENTS).step_by(300) {
            produce(&producer_dir, start..start + 300);
            std::thread::sleep(Duration::from_millis(80));
        }
    });
    let mut rng = Lcg(7);
    let mut child = start_stream(dir, &sql, "state");
    for _ in 0..10 {
        std::thread::sleep(Duration::from_millis(150 + rng.below(400)));
        child.kill().unwrap();
        child.wait().unwrap();
        child = start_stream(dir, &sql, "state");
    }
    producer.join().unwrap();
    close_windows(dir);
    let want = expected(EVENTS);
    let totals = log.topic("totals").unwrap();
    let count = |t: &flowline_log::Topic| -> u64 { (0..2).map(|p| t.offsets(p).unwrap().1).sum() };
    let deadline = Instant::now() + Duration::from_secs(120);
    while count(&totals) < want.len() as u64 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(500));
    terminate(&mut child);

    let mut got = Results::new();
    for p in 0..2 {
        let mut reader = totals.reader(p).unwrap();
        for r in reader.read(0, usize::MAX, usize::MAX).unwrap() {
            let v: Value = serde_json::from_slice(&r.value).unwrap();
            let user = v["user_id"].as_str().unwrap().to_string();
            assert_eq!(r.key.as_deref(), Some(user.as_bytes()), "keyed by user_id");
            assert_eq!(p, totals.partition_for_key(user.as_bytes()));
            let start = v["window_start"].as_str().unwrap().trim_end_matches(".000");
            let key = (start.to_string(), user);
            let value = (v["n"].as_i64().unwrap(), v["total"].as_i64().unwrap());
            assert!(got.insert(key.clone(), value).is_none(), "{key:?} twice");
        }
    }
    assert_exact(&got, &want);
    // Offsets were committed to the group after the sinks committed: no lag is left.
    let events = log.topic("events").unwrap();
    let lag: u64 = events.lag("totals-job").unwrap().values().sum();
    assert_eq!(lag, 0);
    let described = run(
        dir,
        &["log", "describe", "events", "--log-dir", "log", "--json"],
    );
    let described = String::from_utf8_lossy(&described.stdout);
    assert!(described.contains("totals-job"), "{described}");
}

/// `flowline run SQL --mode micro-batch --trigger TRIGGER --state-dir STATE`.
fn micro(dir: &Path, sql: &Path, trigger: &str, state: &str) -> Output {
    run(
        dir,
        &[
            "run",
            sql.to_str().unwrap(),
            "--mode",
            "micro-batch",
            "--trigger",
            trigger,
            "--state-dir",
            state,
        ],
    )
}

/// [`micro`], which must succeed.
fn micro_ok(dir: &Path, sql: &Path, trigger: &str, state: &str) -> Output {
    let out = micro(dir, sql, trigger, state);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[test]
fn a_corrupt_newest_checkpoint_falls_back_and_a_torn_log_tail_is_cut() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    create_topic(dir);
    let sql = pipeline(dir, "job", "out", "1");
    produce(dir, 0..1000);
    micro_ok(dir, &sql, "once", "state"); // checkpoint 1
    produce(dir, 1000..2000);
    micro_ok(dir, &sql, "once", "state"); // checkpoint 2, its windows published
    let published_before = results(&dir.join("out")).1;

    // Bit rot in the newest checkpoint's state.
    let state = dir.join("state/checkpoints/chk-0000000002/state.bin");
    let mut bytes = std::fs::read(&state).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&state, bytes).unwrap();
    // A torn write at the end of partition 0 (power loss in the middle of an append).
    let segment = std::fs::read_dir(dir.join("log/events/0"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .max()
        .unwrap();
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&segment)
        .unwrap();
    std::io::Write::write_all(&mut f, &[0x00, 0x00, 0x01, 0x20, 0xde, 0xad, 0xbe]).unwrap();
    drop(f);

    // The job falls back to checkpoint 1, takes back epoch 2's files and replays its range;
    // the torn tail is not read as data.
    micro_ok(dir, &sql, "once", "state");
    let manifest = std::fs::read_to_string(dir.join("state/manifest.jsonl")).unwrap();
    let last: Value = serde_json::from_str(manifest.lines().last().unwrap()).unwrap();
    assert_eq!(last["status"], "ok", "{last}");
    assert_eq!(last["checkpoints"]["restored_from_epoch"], 1, "{last}");
    let skipped = last["checkpoints"]["skipped_corrupt"].to_string();
    assert!(skipped.contains("corrupt"), "{skipped}");
    assert_eq!(results(&dir.join("out")).1, published_before);

    // A new producer cuts the torn tail and appends after it; the job reads on.
    produce(dir, 2000..3000);
    close_windows(dir);
    micro_ok(dir, &sql, "once", "state");
    let (rows, count) = results(&dir.join("out"));
    let want = expected(3000);
    assert_eq!(count, want.len());
    assert_exact(&rows, &want);
}

/// A job killed while writing a checkpoint leaves a folder without `meta.json`: that epoch was
/// never published, so the next run starts from the checkpoint before it, even with a log sink.
/// A complete checkpoint that went corrupt is another matter: its epoch may be in the log, and
/// falling back would append it twice, so that is still refused.
#[test]
fn a_checkpoint_the_job_stopped_writing_is_skipped_even_with_a_log_sink() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    create_topic(dir);
    let log = Log::open(dir.join("log")).unwrap();
    log.create_topic("totals", TopicConfig::default()).unwrap();
    let sql = dir.join("to_log.sql");
    std::fs::write(
        &sql,
        "CREATE TABLE events (user_id STRING, amount BIGINT, ts TIMESTAMP(3),
             WATERMARK FOR ts AS ts - INTERVAL '1' SECOND)
           WITH ('connector' = 'log', 'topic' = 'events', 'log.dir' = 'log');
         CREATE TABLE totals WITH ('connector' = 'log', 'topic' = 'totals', 'log.dir' = 'log');
         INSERT INTO totals
         SELECT window_start, user_id, COUNT(*) AS n
         FROM TABLE(TUMBLE(TABLE events, DESCRIPTOR(ts), INTERVAL '1' SECOND))
         GROUP BY window_start, window_end, user_id;\n",
    )
    .unwrap();
    produce(dir, 0..1000);
    micro_ok(dir, &sql, "once", "state"); // checkpoint 1
    let chk2 = dir.join("state/checkpoints/chk-0000000002");
    std::fs::create_dir_all(&chk2).unwrap();
    std::fs::write(chk2.join("state.bin"), b"half written").unwrap();
    produce(dir, 1000..2000);
    micro_ok(dir, &sql, "once", "state");
    let manifest = std::fs::read_to_string(dir.join("state/manifest.jsonl")).unwrap();
    let last: Value = serde_json::from_str(manifest.lines().last().unwrap()).unwrap();
    assert_eq!(last["status"], "ok", "{last}");
    assert_eq!(last["checkpoints"]["restored_from_epoch"], 1, "{last}");
    assert_eq!(
        last["checkpoints"]["skipped_incomplete"],
        serde_json::json!([2]),
        "{last}"
    );
    // Checkpoint 2 is complete now; bit rot in it is refused with a log sink.
    let state = chk2.join("state.bin");
    let mut bytes = std::fs::read(&state).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&state, bytes).unwrap();
    let out = micro(dir, &sql, "once", "state");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("a log cannot be rolled back"), "{err}");
}

#[test]
fn batch_mode_reads_a_topic_to_its_end_and_closes_every_window() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    create_topic(dir);
    produce(dir, 0..2000);
    let sql = pipeline(dir, "job", "out", "1");
    let out = run(dir, &["run", sql.to_str().unwrap(), "--mode", "batch"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A bounded read ends with the maximum watermark: the last windows close too.
    let (rows, count) = results(&dir.join("out"));
    let want = expected(2000);
    assert_eq!(count, want.len());
    assert_exact(&rows, &want);
    let summary = String::from_utf8_lossy(&out.stderr);
    assert!(summary.contains("2000 rows from events"), "{summary}");
}

type Totals = BTreeMap<String, (i64, i64)>;

/// The expected per-user totals (count, sum) of events `0..n`.
fn expected_totals(n: u64) -> Totals {
    let mut out = Totals::new();
    for i in 0..n {
        let (user, amount, _) = event(i);
        let e = out.entry(user).or_default();
        e.0 += 1;
        e.1 += amount;
    }
    out
}

/// The published files under `out` read in epoch order and upserted by `user_id`: the last
/// row of each user, and how many rows there were.
fn upserted(out: &Path) -> (Totals, usize) {
    let mut table = Totals::new();
    let mut rows = 0;
    let Ok(entries) = std::fs::read_dir(out) else {
        return (table, 0);
    };
    let mut files: Vec<_> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|f| f.is_file() && !f.file_name().unwrap().to_string_lossy().starts_with('.'))
        .collect();
    files.sort();
    for f in files {
        for line in std::fs::read_to_string(&f).unwrap().lines() {
            let v: Value = serde_json::from_str(line).unwrap();
            let user = v["user_id"].as_str().unwrap().to_string();
            table.insert(
                user,
                (v["n"].as_i64().unwrap(), v["total"].as_i64().unwrap()),
            );
            rows += 1;
        }
    }
    (table, rows)
}

/// The rows of a serving table keyed by `user_id`, as user → (n, total).
fn served_totals(dir: &Path) -> Totals {
    use arrow::array::{Int64Array, StringArray};
    let table = flowline_connectors::serving::ServingTable::at(dir);
    let (_, batches) = table.read(None).unwrap().expect("a served table");
    let mut out = Totals::new();
    for b in batches {
        let user = b.column(0).as_any().downcast_ref::<StringArray>().unwrap();
        let n = b.column(1).as_any().downcast_ref::<Int64Array>().unwrap();
        let total = b.column(2).as_any().downcast_ref::<Int64Array>().unwrap();
        for i in 0..b.num_rows() {
            let old = out.insert(user.value(i).to_string(), (n.value(i), total.value(i)));
            assert!(old.is_none(), "a key served twice");
        }
    }
    out
}

#[test]
fn a_plain_group_by_streams_updates_that_upsert_to_the_exact_totals_through_kills() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    create_topic(dir);
    let log = Log::open(dir.join("log")).unwrap();
    log.create_topic(
        "user_totals",
        TopicConfig {
            partitions: 2,
            ..TopicConfig::default()
        },
    )
    .unwrap();
    let sql = |name: &str, out: &str| {
        let path = dir.join(format!("{name}.sql"));
        std::fs::write(
            &path,
            format!(
                "CREATE TABLE events (user_id STRING, amount BIGINT, ts TIMESTAMP(3),
                     WATERMARK FOR ts AS ts - INTERVAL '1' SECOND)
                   WITH ('connector' = 'log', 'topic' = 'events', 'log.dir' = 'log');
                 CREATE TABLE totals (user_id STRING, n BIGINT, total BIGINT,
                     PRIMARY KEY (user_id) NOT ENFORCED)
                   WITH ('connector' = 'files', 'path' = '{out}', 'format' = 'json');
                 CREATE TABLE user_totals WITH ('connector' = 'log', 'topic' = 'user_totals',
                     'log.dir' = 'log');
                 CREATE TABLE served (user_id STRING, n BIGINT, total BIGINT,
                     PRIMARY KEY (user_id) NOT ENFORCED)
                   WITH ('connector' = 'table', 'path' = 'serving/{out}');
                 INSERT INTO served
                 SELECT user_id, COUNT(*) AS n, SUM(amount) AS total FROM events GROUP BY user_id;
                 INSERT INTO totals
                 SELECT user_id, COUNT(*) AS n, SUM(amount) AS total FROM events GROUP BY user_id;
                 INSERT INTO user_totals
                 SELECT user_id, COUNT(*) AS n, SUM(amount) AS total FROM events GROUP BY user_id;\n"
            ),
        )
        .unwrap();
        path
    };
    let job = sql("updates", "out");
    let explained = run(dir, &["explain", job.to_str().unwrap(), "--mode", "stream"]);
    let explained = String::from_utf8_lossy(&explained.stdout);
    assert!(
        explained.contains("sink totals (update mode: rows keyed by (user_id)"),
        "{explained}"
    );

    const EVENTS: u64 = 4000;
    let producer_dir = dir.to_path_buf();
    let producer = std::thread::spawn(move || {
        for start in (0..EVENTS).step_by(200) {
            produce(&producer_dir, start..start + 200);
            std::thread::sleep(Duration::from_millis(70));
        }
    });
    let args = ["--emit-interval", "50ms"];
    let mut rng = Lcg(11);
    let mut child = start_stream_with(dir, &job, "state", &args);
    // Results appear while the input still grows: totals that are not final yet.
    let want = expected_totals(EVENTS);
    let deadline = Instant::now() + Duration::from_secs(60);
    let early = loop {
        let (partial, _) = upserted(&dir.join("out"));
        if !partial.is_empty() || Instant::now() > deadline {
            break partial;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(
        early.iter().any(|(user, t)| t.0 < want[user].0),
        "the first published results were already final: {early:?}"
    );
    for _ in 0..8 {
        std::thread::sleep(Duration::from_millis(150 + rng.below(400)));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        child = start_stream_with(dir, &job, "state", &args);
    }
    producer.join().unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while upserted(&dir.join("out")).0 != want && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let (late, _) = upserted(&dir.join("out"));
    if late != want {
        // Say what the last job said (once seen on a loaded CI machine: one produced batch
        // short after 120 s).
        let exited = child.try_wait().unwrap();
        let _ = child.kill();
        child.wait().unwrap();
        let mut err = String::new();
        if let Some(mut e) = child.stderr.take() {
            use std::io::Read;
            let _ = e.read_to_string(&mut err);
        }
        panic!(
            "the job did not reach the exact totals in 120 s (had it exited: {exited:?}):\n got {late:?}\nwant \
             {want:?}\nits stderr:\n{err}"
        );
    }
    // Give the last restart time to install its signal handlers.
    std::thread::sleep(Duration::from_millis(600));
    terminate(&mut child);
    let (got, rows) = upserted(&dir.join("out"));
    assert_eq!(got, want, "the upserted file output");
    assert!(rows > want.len(), "only final rows were written ({rows})");

    // The log sink is keyed by the upsert key: the last record of each user is its total.
    let topic = log.topic("user_totals").unwrap();
    let mut from_log = Totals::new();
    for p in 0..2 {
        let mut reader = topic.reader(p).unwrap();
        for r in reader.read(0, usize::MAX, usize::MAX).unwrap() {
            let v: Value = serde_json::from_slice(&r.value).unwrap();
            let user = v["user_id"].as_str().unwrap().to_string();
            assert_eq!(r.key.as_deref(), Some(user.as_bytes()), "keyed by user_id");
            assert_eq!(p, topic.partition_for_key(user.as_bytes()));
            from_log.insert(
                user,
                (v["n"].as_i64().unwrap(), v["total"].as_i64().unwrap()),
            );
        }
    }
    assert_eq!(from_log, want, "the upserted log output");
    assert_eq!(
        served_totals(&dir.join("serving/out")),
        want,
        "the serving table"
    );

    // Micro-batches over the same topic end with the same totals; a batch run writes each
    // total once.
    micro_ok(
        dir,
        &sql("micro", "out_micro"),
        "available-now",
        "state_micro",
    );
    assert_eq!(upserted(&dir.join("out_micro")).0, want);
    assert_eq!(served_totals(&dir.join("serving/out_micro")), want);
    let batch = sql("batch", "out_batch");
    let out = run(
        dir,
        &["run", batch.to_str().unwrap(), "--state-dir", "state_batch"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (once, rows) = upserted(&dir.join("out_batch"));
    assert_eq!(once, want);
    assert_eq!(rows, want.len(), "batch mode writes each final result once");
    assert_eq!(served_totals(&dir.join("serving/out_batch")), want);
}

/// Tiers of the lookup join's rows in `out`: tier → rows.
fn tiers(out: &Path) -> BTreeMap<String, usize> {
    let mut tiers = BTreeMap::new();
    let Ok(entries) = std::fs::read_dir(out) else {
        return tiers;
    };
    for f in entries.flatten().map(|e| e.path()) {
        let name = f.file_name().unwrap().to_string_lossy().to_string();
        if name.starts_with('.') || !f.is_file() {
            continue;
        }
        for line in std::fs::read_to_string(&f).unwrap().lines() {
            let v: Value = serde_json::from_str(line).unwrap();
            *tiers
                .entry(v["tier"].as_str().unwrap_or("NULL").to_string())
                .or_default() += 1;
        }
    }
    tiers
}

fn wait_for_rows(out: &Path, want: usize) -> BTreeMap<String, usize> {
    let started = Instant::now();
    loop {
        let t = tiers(out);
        if t.values().sum::<usize>() >= want || started.elapsed() > Duration::from_secs(60) {
            return t;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A lookup join in a job over a log: its dimension is a files table, loaded before the first
/// row, reloaded within `lookup.join.cache.ttl` when its file changes (rows after the reload
/// see the new values, rows before it kept the old ones), and loaded again on restart.
#[test]
fn a_lookup_join_over_a_log_reloads_its_dimension_when_its_files_change() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    create_topic(dir);
    let users = |tier: &str| {
        let mut text = "user_id,tier\n".to_string();
        for u in 0..7 {
            text += &format!("user_{u},{tier}\n");
        }
        std::fs::create_dir_all(dir.join("dim")).unwrap();
        // Written aside and renamed: a reload never sees half a file.
        std::fs::write(dir.join("users.tmp"), text).unwrap();
        std::fs::rename(dir.join("users.tmp"), dir.join("dim/users.csv")).unwrap();
    };
    users("silver");
    let sql = dir.join("lookup.sql");
    std::fs::write(
        &sql,
        "CREATE TABLE events (
           user_id STRING, amount BIGINT, ts TIMESTAMP(3),
           WATERMARK FOR ts AS ts - INTERVAL '1' SECOND
         ) WITH ('connector' = 'log', 'topic' = 'events', 'format' = 'json', 'log.dir' = 'log');
         CREATE TABLE users (user_id STRING, tier STRING)
           WITH ('connector' = 'files', 'path' = 'dim', 'format' = 'csv',
                 'lookup.join.cache.ttl' = '50ms');
         CREATE TABLE enriched WITH ('connector' = 'files', 'path' = 'out', 'format' = 'json');
         INSERT INTO enriched
         SELECT e.user_id, e.amount, u.tier
         FROM (SELECT *, PROCTIME() AS pt FROM events) e
         JOIN users FOR SYSTEM_TIME AS OF e.pt AS u ON e.user_id = u.user_id;\n",
    )
    .unwrap();
    let out = dir.join("out");
    produce(dir, 0..100);
    let mut job = start_stream(dir, &sql, "state");
    let t = wait_for_rows(&out, 100);
    assert_eq!(t, BTreeMap::from([("silver".to_string(), 100)]));

    users("gold");
    // Longer than the check interval, and the job is idle: its ticks check the files.
    std::thread::sleep(Duration::from_millis(800));
    produce(dir, 100..200);
    let t = wait_for_rows(&out, 200);
    assert_eq!(
        t,
        BTreeMap::from([("gold".to_string(), 100), ("silver".to_string(), 100)])
    );
    terminate(&mut job);

    // A restart loads the table again, as it is now.
    users("platinum");
    let mut job = start_stream(dir, &sql, "state");
    produce(dir, 200..250);
    let t = wait_for_rows(&out, 250);
    terminate(&mut job);
    assert_eq!(
        t,
        BTreeMap::from([
            ("gold".to_string(), 100),
            ("platinum".to_string(), 50),
            ("silver".to_string(), 100)
        ])
    );
}
