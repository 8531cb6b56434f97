//! Batch/stream agreement of window aggregates, as property tests.
//!
//! Every case writes CSV input files and a pipeline into a temporary folder, then runs the same
//! pipeline in batch mode and in stream mode (random batch size 1..=50), each with its own state
//! folder, and reads the CSV sinks back.
//!
//! * `in_order_input_agrees`: input shuffled only within the watermark delay gives identical
//!   TUMBLE and HOP aggregates in both modes (and equal to a simple model), with no rejects.
//! * `late_rows_are_accounted_for`: with rows injected later than the delay, stream output plus
//!   the rejected `late` rows re-aggregated equals the batch output; rows that are certainly
//!   late are rejected, rows that cannot be late are not.
//! * Both check that every sink file lists each (window, key) once, in (window, key) order,
//!   which also means the watermark never went backwards.
//! * A plain `GROUP BY k` runs in update mode in stream mode: upserting its output by `k` gives
//!   the batch totals, late rows or not (it has no window to be late for).
//! * A CUMULATE aggregate runs beside them: the same agreement, model and reject accounting.
//! * And a window Top-N (ROW_NUMBER over the TUMBLE sums, rn <= 2): stream = batch = the top
//!   of the model, and with late rows, the top of what the stream's aggregate emitted.
//! * So does a SESSION aggregate (partitioned by key): stream = batch = a model of sessions
//!   when nothing is late; its late rejects are rows no open session could take.
//! * `allowed_lateness_turns_late_rows_into_corrections`: the same with rows later than the
//!   delay and a long `table.exec.emit.allow-lateness`: no rejects, the batch answer.
//! * A LEFT event-time temporal join of the events with a versioned table of the same rows
//!   (PRIMARY KEY k): stream = batch = a model; with late rows, only versions are rejected (the
//!   events are read first) and each event joins the accepted ones.
//! * `update_mode_upserts_to_the_batch_answer`: the window aggregates in update mode, emitting
//!   after every batch, upserted by (window, key), equal the batch output.
//! * Retractions: a GROUP BY over the GROUP BY k (how many keys have n rows) and a HAVING that
//!   a key can stop matching, with their `upsert`/`delete` rows applied in order, equal the
//!   batch output (and the GROUP BY over GROUP BY a model), emitting at the end or after every
//!   batch.
//!
//! The plain `#[test]`s pin edge cases: a row exactly `delay` behind the newest is not late,
//! windows fire at `end - 1`, negative times and values, empty input.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, NaiveDateTime};
use flowline_runtime::rejects::read_rejects;
use flowline_runtime::{run_pipeline, Mode, RunOptions, RunReport};
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::FileFailurePersistence;
use serde_json::Value;
use tokio::runtime::Runtime;

/// 2026-03-16T00:00:00Z in milliseconds.
const BASE: i64 = 1_773_619_200_000;
const MINUTE: i64 = 60_000;
/// Group keys; one needs quoting in CSV.
const KEYS: &[&str] = &["a", "b", "b2", "x,y"];
const CUSTOMERS: usize = 6;
/// Rows in the same file this far apart (or more) are always in different stream batches.
const MAX_BATCH: usize = 50;

// ------------------------------------------------------------------------------------- input

#[derive(Debug, Clone)]
struct Event {
    key: usize,
    cust: usize,
    qty: i64,
    /// `amount` in hundredths (DECIMAL(10, 2)).
    cents: i64,
    /// Event time, ms since the epoch.
    t: i64,
}

fn ts_text(ms: i64) -> String {
    DateTime::from_timestamp_millis(ms)
        .expect("time in range")
        .format("%Y-%m-%d %H:%M:%S%.3f")
        .to_string()
}

fn cents_text(c: i64) -> String {
    let sign = if c < 0 { "-" } else { "" };
    format!("{sign}{}.{:02}", c.abs() / 100, c.abs() % 100)
}

/// Writes `events` (in arrival order) as `in/000.csv`, `in/001.csv`, ..., split at `cuts`
/// (sorted positions; equal cuts give empty files). The row id is the arrival position.
fn write_inputs(dir: &Path, events: &[Event], cuts: &[usize]) {
    let input = dir.join("in");
    fs::create_dir_all(&input).unwrap();
    let mut bounds = vec![0];
    bounds.extend(cuts.iter().copied());
    bounds.push(events.len());
    for (f, w) in bounds.windows(2).enumerate() {
        let mut out = csv::Writer::from_path(input.join(format!("{f:03}.csv"))).unwrap();
        out.write_record(["id", "k", "cust", "qty", "amount", "ts"])
            .unwrap();
        for (id, e) in events.iter().enumerate().take(w[1]).skip(w[0]) {
            out.write_record([
                id.to_string(),
                KEYS[e.key].to_string(),
                format!("c{}", e.cust),
                e.qty.to_string(),
                cents_text(e.cents),
                ts_text(e.t),
            ])
            .unwrap();
        }
        out.flush().unwrap();
    }
}

/// TUMBLE(`tumble_s`) and HOP(slide, size) aggregates of the same source, sizes in seconds.
fn write_pipeline(dir: &Path, delay_s: i64, tumble_s: i64, hop_s: (i64, i64)) {
    let watermark = if delay_s == 0 {
        "ts".to_string()
    } else {
        format!("ts - INTERVAL '{delay_s}' SECOND")
    };
    let (slide, size) = hop_s;
    let sql = format!(
        "CREATE TABLE events (
  id BIGINT,
  k VARCHAR,
  cust VARCHAR,
  qty BIGINT,
  amount DECIMAL(10, 2),
  ts TIMESTAMP(3),
  WATERMARK FOR ts AS {watermark}
) WITH ('connector' = 'files', 'path' = 'in', 'format' = 'csv');

CREATE TABLE tumble_out WITH ('connector' = 'files', 'path' = 'out/tumble', 'format' = 'csv');
CREATE TABLE hop_out WITH ('connector' = 'files', 'path' = 'out/hop', 'format' = 'csv');
CREATE TABLE totals_out WITH ('connector' = 'files', 'path' = 'out/totals', 'format' = 'csv');
CREATE TABLE cumulate_out WITH ('connector' = 'files', 'path' = 'out/cumulate', 'format' = 'csv');

INSERT INTO cumulate_out
SELECT window_start, window_end, k, COUNT(*) AS n, SUM(qty) AS qty, SUM(amount) AS amount,
       MIN(amount) AS min_amount, MAX(qty) AS max_qty, COUNT(DISTINCT cust) AS customers
FROM TABLE(CUMULATE(TABLE events, DESCRIPTOR(ts), INTERVAL '{slide}' SECOND, INTERVAL '{size}' SECOND))
GROUP BY window_start, window_end, k;

INSERT INTO totals_out
SELECT k, COUNT(*) AS n, SUM(qty) AS qty, SUM(amount) AS amount, MIN(amount) AS min_amount,
       MAX(qty) AS max_qty, COUNT(DISTINCT cust) AS customers
FROM events
GROUP BY k;

INSERT INTO tumble_out
SELECT window_start, window_end, k, COUNT(*) AS n, SUM(qty) AS qty, SUM(amount) AS amount,
       MIN(amount) AS min_amount, MAX(qty) AS max_qty, COUNT(DISTINCT cust) AS customers
FROM TABLE(TUMBLE(TABLE events, DESCRIPTOR(ts), INTERVAL '{tumble_s}' SECOND))
GROUP BY window_start, window_end, k;

INSERT INTO hop_out
SELECT window_start, window_end, k, COUNT(*) AS n, SUM(qty) AS qty, SUM(amount) AS amount,
       MIN(qty) AS min_qty, MAX(amount) AS max_amount, COUNT(DISTINCT cust) AS customers
FROM TABLE(HOP(TABLE events, DESCRIPTOR(ts), INTERVAL '{slide}' SECOND, INTERVAL '{size}' SECOND))
GROUP BY window_start, window_end, k;

CREATE TABLE spread_out (n BIGINT, keys BIGINT, qty BIGINT, max_qty BIGINT,
  min_amount DECIMAL(20, 2), _change_type STRING)
  WITH ('connector' = 'files', 'path' = 'out/spread', 'format' = 'csv');

INSERT INTO spread_out
SELECT n, COUNT(*) AS keys, SUM(qty) AS qty, MAX(qty) AS max_qty, MIN(amount) AS min_amount
FROM (SELECT k, COUNT(*) AS n, SUM(qty) AS qty, SUM(amount) AS amount FROM events GROUP BY k)
GROUP BY n;

CREATE TABLE busy_out (k VARCHAR, n BIGINT, qty BIGINT, customers BIGINT, _change_type STRING)
  WITH ('connector' = 'files', 'path' = 'out/busy', 'format' = 'csv');

INSERT INTO busy_out
SELECT k, COUNT(*) AS n, SUM(qty) AS qty, COUNT(DISTINCT cust) AS customers
FROM events GROUP BY k HAVING COUNT(*) <= 3 OR SUM(qty) > 600;

{SESSION_MARKER}
CREATE TABLE session_out WITH ('connector' = 'files', 'path' = 'out/session', 'format' = 'csv');

INSERT INTO session_out
SELECT window_start, window_end, k, COUNT(*) AS n, SUM(qty) AS qty, SUM(amount) AS amount,
       MIN(amount) AS min_amount, MAX(qty) AS max_qty, COUNT(DISTINCT cust) AS customers
FROM TABLE(SESSION(TABLE events PARTITION BY k, DESCRIPTOR(ts), INTERVAL '{slide}' SECOND))
GROUP BY window_start, window_end, k;

CREATE TABLE topn_out WITH ('connector' = 'files', 'path' = 'out/topn', 'format' = 'csv');

INSERT INTO topn_out
SELECT window_start, window_end, k, qty, rn FROM (
  SELECT *, ROW_NUMBER() OVER (PARTITION BY window_start, window_end ORDER BY qty DESC, k) AS rn
  FROM (
    SELECT window_start, window_end, k, SUM(qty) AS qty
    FROM TABLE(TUMBLE(TABLE events, DESCRIPTOR(ts), INTERVAL '{tumble_s}' SECOND))
    GROUP BY window_start, window_end, k))
WHERE rn <= 2;

CREATE TABLE over_out WITH ('connector' = 'files', 'path' = 'out/over', 'format' = 'csv');

INSERT INTO over_out
SELECT id, k, ts, n, qty_in_range, max_amount,
       SUM(qty) OVER (PARTITION BY k ORDER BY ts ROWS BETWEEN 2 PRECEDING AND CURRENT ROW) AS last3_qty
FROM (
  SELECT id, k, ts, qty,
         COUNT(*) OVER w AS n, SUM(qty) OVER w AS qty_in_range, MAX(amount) OVER w AS max_amount
  FROM events
  WINDOW w AS (PARTITION BY k ORDER BY ts RANGE BETWEEN INTERVAL '{slide}' SECOND PRECEDING AND CURRENT ROW)
);

CREATE TABLE join_out WITH ('connector' = 'files', 'path' = 'out/join', 'format' = 'csv');

INSERT INTO join_out
SELECT a.id AS a_id, b.id AS b_id
FROM events a JOIN events b
  ON a.k = b.k AND a.ts BETWEEN b.ts - INTERVAL '{slide}' SECOND AND b.ts;

CREATE TABLE prices (
  id BIGINT,
  k VARCHAR,
  cust VARCHAR,
  qty BIGINT,
  amount DECIMAL(10, 2),
  ts TIMESTAMP(3),
  PRIMARY KEY (k) NOT ENFORCED,
  WATERMARK FOR ts AS {watermark}
) WITH ('connector' = 'files', 'path' = 'in', 'format' = 'csv');

CREATE TABLE temporal_out WITH ('connector' = 'files', 'path' = 'out/temporal', 'format' = 'csv');

INSERT INTO temporal_out
SELECT e.id, p.id AS version
FROM events e LEFT JOIN prices FOR SYSTEM_TIME AS OF e.ts AS p ON e.k = p.k;

CREATE TABLE last_out WITH ('connector' = 'files', 'path' = 'out/last', 'format' = 'csv');

INSERT INTO last_out
SELECT k, id FROM (
  SELECT k, id, ROW_NUMBER() OVER (PARTITION BY k ORDER BY ts DESC) AS rn FROM events
) WHERE rn = 1;
"
    );
    fs::write(dir.join("pipeline.sql"), sql).unwrap();
}

/// Where the SESSION aggregate starts in the pipeline (update mode refuses it: see property 3).
const SESSION_MARKER: &str =
    "-- Append mode only: SESSION(PARTITION BY k, gap = HOP slide), the top 2 keys by qty per TUMBLE window, OVER aggregates";

/// Removes the SESSION aggregate and the Top-N from the pipeline in `dir`.
fn without_sessions(dir: &Path) {
    let path = dir.join("pipeline.sql");
    let sql = fs::read_to_string(&path).unwrap();
    let (head, _) = sql.split_once(SESSION_MARKER).unwrap();
    fs::write(path, head).unwrap();
}

// ------------------------------------------------------------------------------------- runs

/// What one run produced: the report, the sink rows in file order, this run's rejects.
struct Outcome {
    report: RunReport,
    tumble: Vec<Vec<String>>,
    hop: Vec<Vec<String>>,
    /// The plain GROUP BY's rows (update mode in stream mode).
    totals: Vec<Vec<String>>,
    /// CUMULATE(step = HOP slide, size = HOP size), with the TUMBLE sink's columns.
    cumulate: Vec<Vec<String>>,
    /// SESSION(PARTITION BY k, gap = HOP slide), with the TUMBLE sink's columns (empty when
    /// the pipeline has no session aggregate).
    session: Vec<Vec<String>>,
    /// The top 2 keys by SUM(qty) per TUMBLE window: window_start, window_end, k, qty, rank.
    topn: Vec<Vec<String>>,
    /// Per row: id, k, ts, then over RANGE (HOP slide) PRECEDING per k: COUNT(*), SUM(qty),
    /// MAX(amount); then SUM(qty) over the 2 preceding rows and the current one.
    over: Vec<Vec<String>>,
    /// A self interval join: (a id, b id) with equal keys, a at most a HOP slide before b.
    join: Vec<Vec<String>>,
    /// A LEFT temporal join of the events with themselves as a versioned table keyed by k:
    /// (id, id of the version valid at its time, or empty).
    temporal: Vec<Vec<String>>,
    /// Each key's latest row (k, id): update mode in stream mode.
    last: Vec<Vec<String>>,
    /// A GROUP BY over the GROUP BY k: per row count n, the keys with n rows, their SUM(qty),
    /// MAX(SUM(qty)), MIN(SUM(amount)); `_change_type` last (deletes in stream mode).
    spread: Vec<Vec<String>>,
    /// GROUP BY k HAVING COUNT(*) <= 3 OR SUM(qty) > 600: k, n, qty, customers, `_change_type`.
    busy: Vec<Vec<String>>,
    rejects: Vec<Value>,
}

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// The rows of every `part-*.csv` under `dir` (sorted by name), without headers.
fn read_sink(dir: &Path) -> Vec<Vec<String>> {
    let Ok(entries) = fs::read_dir(dir) else {
        return vec![];
    };
    let mut files: Vec<_> = entries
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy();
            name.starts_with("part-") && name.ends_with(".csv")
        })
        .collect();
    files.sort();
    let mut rows = vec![];
    for f in files {
        let mut reader = csv::Reader::from_path(&f).unwrap();
        for r in reader.records() {
            rows.push(r.unwrap().iter().map(str::to_string).collect());
        }
    }
    rows
}

fn run(rt: &Runtime, dir: &Path, mode: Mode, batch_size: Option<usize>, tag: &str) -> Outcome {
    run_with(rt, dir, mode, batch_size, tag, RunOptions::default())
}

/// [`run`] with more options.
fn run_with(
    rt: &Runtime,
    dir: &Path,
    mode: Mode,
    batch_size: Option<usize>,
    tag: &str,
    more: RunOptions,
) -> Outcome {
    let options = RunOptions {
        mode: Some(mode),
        batch_size,
        state_dir: Some(dir.join(format!("state-{tag}"))),
        stdout: Some(Arc::new(Mutex::new(Vec::new()))),
        ..more
    };
    let report = rt
        .block_on(run_pipeline(&dir.join("pipeline.sql"), options))
        .unwrap_or_else(|e| panic!("{tag} run failed: {e}"));
    // Read the sinks now: the next run replaces them.
    let tumble = read_sink(&dir.join("out/tumble"));
    let hop = read_sink(&dir.join("out/hop"));
    let totals = read_sink(&dir.join("out/totals"));
    let cumulate = read_sink(&dir.join("out/cumulate"));
    let session = read_sink(&dir.join("out/session"));
    let topn = read_sink(&dir.join("out/topn"));
    let over = read_sink(&dir.join("out/over"));
    let join = read_sink(&dir.join("out/join"));
    let last = read_sink(&dir.join("out/last"));
    let temporal = read_sink(&dir.join("out/temporal"));
    let spread = read_sink(&dir.join("out/spread"));
    let busy = read_sink(&dir.join("out/busy"));
    let rejects = read_rejects(&report.rejects_path, Some(&report.run_id)).unwrap();
    assert_eq!(
        report.rows_written.get("tumble_out"),
        Some(&(tumble.len() as u64))
    );
    assert_eq!(
        report.rows_written.get("hop_out"),
        Some(&(hop.len() as u64))
    );
    let counted: u64 = report.rejects.values().sum();
    assert_eq!(counted, rejects.len() as u64, "{tag}: reject count vs bin");
    Outcome {
        report,
        tumble,
        hop,
        totals,
        cumulate,
        session,
        topn,
        over,
        join,
        last,
        temporal,
        spread,
        busy,
        rejects,
    }
}

/// Rows of a sink with a last `_change_type` column, applied in order by the columns `key`:
/// an `upsert` replaces its key's row, a `delete` removes it. The rows lose that column.
fn apply_changes(rows: &[Vec<String>], key: &[usize]) -> BTreeMap<Vec<String>, Vec<String>> {
    let mut table = BTreeMap::new();
    for r in rows {
        let (change, row) = r.split_last().expect("a _change_type column");
        let k: Vec<String> = key.iter().map(|&i| row[i].clone()).collect();
        match change.as_str() {
            "upsert" => {
                table.insert(k, row.to_vec());
            }
            "delete" => {
                assert!(
                    table.remove(&k).is_some(),
                    "delete of a key not written: {r:?}"
                );
            }
            other => panic!("_change_type {other}"),
        }
    }
    table
}

/// The spread model: per row count n, (keys with n rows, their SUM(qty)).
fn spread_model(events: &[Event]) -> BTreeMap<i64, (i64, i64)> {
    let mut per_key: BTreeMap<usize, (i64, i64)> = BTreeMap::new();
    for e in events {
        let t = per_key.entry(e.key).or_default();
        t.0 += 1;
        t.1 += e.qty;
    }
    let mut m: BTreeMap<i64, (i64, i64)> = BTreeMap::new();
    for (n, qty) in per_key.into_values() {
        let b = m.entry(n).or_default();
        b.0 += 1;
        b.1 += qty;
    }
    m
}

fn parse_spread(rows: &BTreeMap<Vec<String>, Vec<String>>) -> BTreeMap<i64, (i64, i64)> {
    rows.values()
        .map(|r| {
            (
                r[0].parse().unwrap(),
                (r[1].parse().unwrap(), r[2].parse().unwrap()),
            )
        })
        .collect()
}

/// Rows upserted by the columns `key`: the last row of each key, as a downstream upsert keeps.
fn upsert(rows: &[Vec<String>], key: &[usize]) -> BTreeMap<Vec<String>, Vec<String>> {
    rows.iter()
        .map(|r| (key.iter().map(|&i| r[i].clone()).collect(), r.clone()))
        .collect()
}

// ------------------------------------------------------------------------------------- output

/// (window_start, window_end, key), times in ms.
type Group = (i64, i64, String);
/// The six aggregate columns; decimals in hundredths.
type Aggs = [i128; 6];

/// Which aggregate columns are DECIMAL, per sink.
const TUMBLE_DECIMALS: [bool; 6] = [false, false, true, true, false, false];
const HOP_DECIMALS: [bool; 6] = [false, false, true, false, true, false];

fn parse_ts(s: &str) -> i64 {
    NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f")
        .or_else(|_| NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f"))
        .unwrap_or_else(|e| panic!("timestamp '{s}': {e}"))
        .and_utc()
        .timestamp_millis()
}

/// A decimal with at most two significant fraction digits, in hundredths.
fn parse_cents(s: &str) -> i128 {
    let (negative, digits) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
    let frac = frac.trim_end_matches('0');
    assert!(
        frac.len() <= 2,
        "decimal '{s}' has more than 2 fraction digits"
    );
    let v = int
        .parse::<i128>()
        .unwrap_or_else(|e| panic!("decimal '{s}': {e}"))
        * 100
        + format!("{frac:0<2}").parse::<i128>().unwrap();
    if negative {
        -v
    } else {
        v
    }
}

fn parse_row(row: &[String], decimals: &[bool; 6]) -> (Group, Aggs) {
    assert_eq!(row.len(), 9, "row {row:?}");
    let mut aggs = [0i128; 6];
    for (i, a) in aggs.iter_mut().enumerate() {
        let cell = &row[3 + i];
        *a = if decimals[i] {
            parse_cents(cell)
        } else {
            cell.parse()
                .unwrap_or_else(|e| panic!("column {}: '{cell}': {e}", 3 + i))
        };
    }
    ((parse_ts(&row[0]), parse_ts(&row[1]), row[2].clone()), aggs)
}

fn parse_rows(rows: &[Vec<String>], decimals: &[bool; 6]) -> BTreeMap<Group, Aggs> {
    let mut out = BTreeMap::new();
    for row in rows {
        let (g, a) = parse_row(row, decimals);
        assert!(
            out.insert(g.clone(), a).is_none(),
            "group {g:?} written twice"
        );
    }
    out
}

fn sorted(rows: &[Vec<String>]) -> Vec<Vec<String>> {
    let mut rows = rows.to_vec();
    rows.sort();
    rows
}

/// Each (window, key) appears once, and rows come in (window_start, key) order: windows fire
/// in order of their end (the watermark never goes backwards) and each fired window lists its
/// groups sorted by key.
fn check_emission_order(rows: &[Vec<String>], what: &str) -> Result<(), TestCaseError> {
    let mut prev: Option<(i64, i64, String)> = None;
    for row in rows {
        let cur = (parse_ts(&row[0]), parse_ts(&row[1]), row[2].clone());
        if let Some(p) = &prev {
            prop_assert!(
                (p.1, &p.2) < (cur.1, &cur.2),
                "{}: row {:?} follows {:?} (window emitted twice or out of order)",
                what,
                cur,
                p
            );
        }
        prev = Some(cur);
    }
    Ok(())
}

// ------------------------------------------------------------------------------------- model

#[derive(Default)]
struct Acc {
    n: i128,
    qty: i128,
    cents: i128,
    min_qty: i128,
    max_qty: i128,
    min_cents: i128,
    max_cents: i128,
    customers: BTreeSet<usize>,
}

/// A window table function, for the model.
#[derive(Clone, Copy)]
enum Win {
    /// HOP (TUMBLE when `slide == size`).
    Slide {
        slide: i64,
        size: i64,
    },
    Cumulate {
        step: i64,
        size: i64,
    },
}

/// The (start, end) of every window of a row at `t` (epoch-aligned).
fn windows(t: i64, win: Win) -> Vec<(i64, i64)> {
    match win {
        Win::Slide { slide, size } => {
            let last = t - t.rem_euclid(slide);
            (0..size / slide)
                .map(|k| (last - k * slide, last - k * slide + size))
                .collect()
        }
        Win::Cumulate { step, size } => {
            let start = t - t.rem_euclid(size);
            ((t - start) / step + 1..=size / step)
                .map(|k| (start, start + k * step))
                .collect()
        }
    }
}

/// The expected sink rows: the aggregates of every (row, window) that `keep` accepts.
/// `tumble` selects the tumble sink's MIN/MAX columns, else the hop sink's.
fn model(
    events: &[Event],
    win: Win,
    tumble: bool,
    keep: impl Fn(usize, i64) -> bool,
) -> BTreeMap<Group, Aggs> {
    let mut groups: BTreeMap<Group, Acc> = BTreeMap::new();
    for (id, e) in events.iter().enumerate() {
        for (start, end) in windows(e.t, win) {
            if !keep(id, start) {
                continue;
            }
            let acc = groups
                .entry((start, end, KEYS[e.key].to_string()))
                .or_insert_with(|| Acc {
                    min_qty: i128::MAX,
                    max_qty: i128::MIN,
                    min_cents: i128::MAX,
                    max_cents: i128::MIN,
                    ..Acc::default()
                });
            acc.n += 1;
            acc.qty += e.qty as i128;
            acc.cents += e.cents as i128;
            acc.min_qty = acc.min_qty.min(e.qty as i128);
            acc.max_qty = acc.max_qty.max(e.qty as i128);
            acc.min_cents = acc.min_cents.min(e.cents as i128);
            acc.max_cents = acc.max_cents.max(e.cents as i128);
            acc.customers.insert(e.cust);
        }
    }
    groups
        .into_iter()
        .map(|(g, a)| {
            let (min, max) = if tumble {
                (a.min_cents, a.max_qty)
            } else {
                (a.min_qty, a.max_cents)
            };
            (
                g,
                [a.n, a.qty, a.cents, min, max, a.customers.len() as i128],
            )
        })
        .collect()
}

/// The SESSION sink's expected rows: per key, rows sorted by time; a row at or past the current
/// session's end (last time + gap) starts a new session.
fn session_model(events: &[Event], gap: i64) -> BTreeMap<Group, Aggs> {
    let mut by_key: BTreeMap<usize, Vec<&Event>> = BTreeMap::new();
    for e in events {
        by_key.entry(e.key).or_default().push(e);
    }
    let mut out = BTreeMap::new();
    for (key, mut rows) in by_key {
        rows.sort_by_key(|e| e.t);
        let mut sessions: Vec<(i64, i64, Vec<&Event>)> = vec![];
        for e in rows {
            match sessions.last_mut() {
                Some((_, end, members)) if e.t < *end => {
                    *end = (*end).max(e.t + gap);
                    members.push(e);
                }
                _ => sessions.push((e.t, e.t + gap, vec![e])),
            }
        }
        for (start, end, members) in sessions {
            let customers: BTreeSet<usize> = members.iter().map(|e| e.cust).collect();
            out.insert(
                (start, end, KEYS[key].to_string()),
                [
                    members.len() as i128,
                    members.iter().map(|e| e.qty as i128).sum(),
                    members.iter().map(|e| e.cents as i128).sum(),
                    members.iter().map(|e| e.cents as i128).min().unwrap_or(0),
                    members.iter().map(|e| e.qty as i128).max().unwrap_or(0),
                    customers.len() as i128,
                ],
            );
        }
    }
    out
}

/// The OVER sink's expected rows, by id, for the events `keep` accepts: per key in (time,
/// arrival) order, over the rows of the key at most `range` ms older: COUNT, SUM(qty),
/// MAX(amount) in hundredths; and SUM(qty) of the row and the 2 before it.
fn over_model(
    events: &[Event],
    range: i64,
    keep: impl Fn(usize) -> bool,
) -> BTreeMap<usize, [i128; 4]> {
    let mut by_key: BTreeMap<usize, Vec<(i64, usize)>> = BTreeMap::new();
    for (id, e) in events.iter().enumerate().filter(|(id, _)| keep(*id)) {
        by_key.entry(e.key).or_default().push((e.t, id));
    }
    let mut out = BTreeMap::new();
    for rows in by_key.values_mut() {
        rows.sort();
        for (pos, &(t, id)) in rows.iter().enumerate() {
            let frame: Vec<&Event> = rows
                .iter()
                .filter(|(u, _)| t - range <= *u && *u <= t)
                .map(|&(_, j)| &events[j])
                .collect();
            let last3 = rows[pos.saturating_sub(2)..=pos]
                .iter()
                .map(|&(_, j)| events[j].qty as i128)
                .sum();
            out.insert(
                id,
                [
                    frame.len() as i128,
                    frame.iter().map(|e| e.qty as i128).sum(),
                    frame.iter().map(|e| e.cents as i128).max().unwrap_or(0),
                    last3,
                ],
            );
        }
    }
    out
}

/// The temporal join's rows: each event's id with the id of the version of its key valid at its
/// time (the latest event of that key at or before it, the later-arriving of equal times) among
/// the events `is_version` accepts, `None` without one; sorted.
fn temporal_model(
    events: &[Event],
    is_version: impl Fn(usize) -> bool,
) -> Vec<(usize, Option<usize>)> {
    let mut out: Vec<(usize, Option<usize>)> = events
        .iter()
        .enumerate()
        .map(|(a, ea)| {
            let version = events
                .iter()
                .enumerate()
                .filter(|(b, eb)| is_version(*b) && eb.key == ea.key && eb.t <= ea.t)
                .max_by_key(|(b, eb)| (eb.t, *b))
                .map(|(b, _)| b);
            (a, version)
        })
        .collect();
    out.sort();
    out
}

fn parse_temporal(rows: &[Vec<String>]) -> Vec<(usize, Option<usize>)> {
    let mut out: Vec<(usize, Option<usize>)> = rows
        .iter()
        .map(|r| {
            (
                r[0].parse().unwrap(),
                (!r[1].is_empty()).then(|| r[1].parse().unwrap()),
            )
        })
        .collect();
    out.sort();
    out
}

/// The join sink's expected pairs among the events `keep` accepts, sorted.
fn join_model(events: &[Event], range: i64, keep: impl Fn(usize) -> bool) -> Vec<(usize, usize)> {
    let mut out = vec![];
    for (a, ea) in events.iter().enumerate().filter(|(i, _)| keep(*i)) {
        for (b, eb) in events.iter().enumerate().filter(|(i, _)| keep(*i)) {
            if ea.key == eb.key && eb.t - range <= ea.t && ea.t <= eb.t {
                out.push((a, b));
            }
        }
    }
    out.sort();
    out
}

fn parse_join(rows: &[Vec<String>]) -> Vec<(usize, usize)> {
    let mut out: Vec<(usize, usize)> = rows
        .iter()
        .map(|r| (r[0].parse().unwrap(), r[1].parse().unwrap()))
        .collect();
    out.sort();
    out
}

/// The OVER sink's rows by id, checking each row's key and time against its event.
fn parse_over(rows: &[Vec<String>], events: &[Event]) -> BTreeMap<usize, [i128; 4]> {
    let mut out = BTreeMap::new();
    for r in rows {
        assert_eq!(r.len(), 7, "row {r:?}");
        let id: usize = r[0].parse().unwrap();
        assert_eq!(r[1], KEYS[events[id].key], "row {r:?}");
        assert_eq!(parse_ts(&r[2]), events[id].t, "row {r:?}");
        let values = [
            r[3].parse().unwrap(),
            r[4].parse().unwrap(),
            parse_cents(&r[5]),
            r[6].parse().unwrap(),
        ];
        assert!(out.insert(id, values).is_none(), "row {id} written twice");
    }
    out
}

/// The Top-N sink's expected rows from TUMBLE results: per window, keys by SUM(qty)
/// descending then key, numbered, the first 2: (start, end, key, qty, rank).
fn top_n(tumble: &BTreeMap<Group, Aggs>) -> Vec<(i64, i64, String, i128, u64)> {
    let mut windows: BTreeMap<(i64, i64), Vec<(String, i128)>> = BTreeMap::new();
    for ((start, end, key), aggs) in tumble {
        windows
            .entry((*start, *end))
            .or_default()
            .push((key.clone(), aggs[1]));
    }
    let mut out = vec![];
    for ((start, end), mut keys) in windows {
        keys.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        for (rank, (key, qty)) in keys.into_iter().take(2).enumerate() {
            out.push((start, end, key, qty, rank as u64 + 1));
        }
    }
    out
}

/// The Top-N sink's rows, parsed, in the order of [`top_n`].
fn parse_top_n(rows: &[Vec<String>]) -> Vec<(i64, i64, String, i128, u64)> {
    let mut out: Vec<_> = rows
        .iter()
        .map(|r| {
            (
                parse_ts(&r[0]),
                parse_ts(&r[1]),
                r[2].clone(),
                r[3].parse().unwrap(),
                r[4].parse().unwrap(),
            )
        })
        .collect();
    out.sort_by_key(|r| (r.0, r.1, r.4));
    out
}

/// COUNT and SUMs only.
fn counts_and_sums(m: &BTreeMap<Group, Aggs>) -> BTreeMap<Group, [i128; 3]> {
    m.iter()
        .map(|(g, a)| (g.clone(), [a[0], a[1], a[2]]))
        .collect()
}

/// One rejected (row, window): the window, the row's key, qty, amount and id.
#[derive(Debug, Clone)]
struct LateRow {
    start: i64,
    end: i64,
    key: String,
    qty: i128,
    cents: i128,
    id: usize,
    /// The INSERT that missed it.
    sink: String,
}

/// The ids of the rows rejected as late by the INSERT into `sink` (one per reject).
fn late_ids(rejects: &[Value], sink: &str) -> Vec<usize> {
    rejects
        .iter()
        .filter(|r| r["sink"] == sink)
        .map(|r| {
            assert_eq!(r["reason"], "late", "{r}");
            raw_row(r)["id"].as_u64().expect("raw has id") as usize
        })
        .collect()
}

/// A reject's `raw` row as a JSON object (it may be stored as the JSON text).
fn raw_row(reject: &Value) -> Value {
    match &reject["raw"] {
        Value::String(s) => serde_json::from_str(s).expect("raw is JSON"),
        v => v.clone(),
    }
}

fn late_rows(rejects: &[Value]) -> Vec<LateRow> {
    rejects
        .iter()
        .filter(|r| {
            !["over_out", "join_out", "last_out", "temporal_out"]
                .contains(&r["sink"].as_str().unwrap_or(""))
        })
        .map(|r| {
            assert_eq!(r["reason"], "late", "unexpected reject {r}");
            let window = r["window"].as_array().expect("late reject has a window");
            assert_eq!(window.len(), 2, "{r}");
            // `raw` is the aggregate's input row.
            let raw = raw_row(r);
            let cents = match &raw["amount"] {
                Value::Number(n) => (n.as_f64().unwrap() * 100.0).round() as i128,
                Value::String(s) => parse_cents(s),
                v => panic!("amount {v} in {r}"),
            };
            LateRow {
                start: parse_ts(window[0].as_str().unwrap()),
                end: parse_ts(window[1].as_str().unwrap()),
                key: raw["k"].as_str().expect("raw has k").to_string(),
                qty: raw["qty"].as_i64().expect("raw has qty") as i128,
                cents,
                id: raw["id"].as_u64().expect("raw has id") as usize,
                sink: r["sink"]
                    .as_str()
                    .expect("late reject names its sink")
                    .to_string(),
            }
        })
        .collect()
}

// ------------------------------------------------------------------------------------- cases

#[derive(Debug, Clone)]
struct Scenario {
    delay_s: i64,
    tumble_min: i64,
    /// HOP (slide, size) in minutes; the size never equals a TUMBLE size, so a reject's window
    /// length tells which aggregate rejected it.
    hop_min: (i64, i64),
    /// In arrival order.
    events: Vec<Event>,
    /// File boundaries (sorted positions into `events`).
    cuts: Vec<usize>,
    batch_size: usize,
}

impl Scenario {
    fn delay_ms(&self) -> i64 {
        self.delay_s * 1000
    }
    fn tumble_ms(&self) -> i64 {
        self.tumble_min * MINUTE
    }
}

/// Events within a few hours, presented so that every row's time is at least the maximum time
/// of the rows before it minus the delay: sorted by time, then re-sorted by time plus a random
/// jitter in [0, delay] (if row j follows row i, t_j + d_j >= t_i + d_i, so t_j >= t_i - delay).
fn in_order(events: std::ops::Range<usize>) -> impl Strategy<Value = Scenario> {
    (
        prop::sample::select(vec![0i64, 1, 7, 30, 120, 300]),
        prop::sample::select(vec![10i64, 60, 180]),
        prop::sample::select(vec![1i64, 5, 10, 20, 60]),
        prop::sample::select(vec![(1i64, 3i64), (5, 15), (10, 30), (15, 45)]),
        1usize..=MAX_BATCH,
        prop::collection::vec(any::<Index>(), 0..4),
    )
        .prop_flat_map(
            move |(delay_s, span_min, tumble_min, hop_min, batch, cuts)| {
                let span = span_min * MINUTE;
                let time = prop_oneof![
                    2 => 0..span,
                    // On and next to minute boundaries (window edges).
                    1 => (0..=span_min, -1i64..=1).prop_map(|(m, d)| m * MINUTE + d),
                    // On whole seconds, so that some rows are exactly `delay` apart.
                    1 => (0..=span_min * 60, -1i64..=1).prop_map(|(s, d)| s * 1000 + d),
                ];
                let delay = delay_s * 1000;
                let jitter = prop_oneof![
                    1 => Just(0),
                    1 => Just(delay),
                    2 => 0..=delay,
                ];
                let event = (
                    0..KEYS.len(),
                    0..CUSTOMERS,
                    -20i64..=200,
                    -5_000i64..=50_000,
                    time,
                    jitter,
                );
                (
                    Just((delay_s, tumble_min, hop_min, batch, cuts)),
                    prop::collection::vec(event, events.clone()),
                )
            },
        )
        .prop_map(|((delay_s, tumble_min, hop_min, batch_size, cuts), raw)| {
            let mut rows: Vec<(Event, i64)> = raw
                .into_iter()
                .map(|(key, cust, qty, cents, t, jitter)| {
                    (
                        Event {
                            key,
                            cust,
                            qty,
                            cents,
                            t: BASE + t,
                        },
                        jitter,
                    )
                })
                .collect();
            // Newest first among equal sort keys, so a row can follow one exactly `delay` newer.
            rows.sort_by_key(|(e, _)| std::cmp::Reverse(e.t));
            rows.sort_by_key(|(e, jitter)| e.t + jitter);
            let events: Vec<Event> = rows.into_iter().map(|(e, _)| e).collect();
            let mut cuts: Vec<usize> = cuts.iter().map(|i| i.index(events.len() + 1)).collect();
            cuts.sort();
            Scenario {
                delay_s,
                tumble_min,
                hop_min,
                events,
                cuts,
                batch_size,
            }
        })
}

/// Rows whose time is more than the delay behind an earlier row: the only ones that may be late.
fn possibly_late(events: &[Event], delay_ms: i64) -> BTreeSet<usize> {
    let mut max = i64::MIN;
    let mut out = BTreeSet::new();
    for (i, e) in events.iter().enumerate() {
        if max != i64::MIN && e.t < max - delay_ms {
            out.insert(i);
        }
        max = max.max(e.t);
    }
    out
}

/// Rows certainly late for a TUMBLE of `size` ms at any batch size <= MAX_BATCH: rows at
/// least MAX_BATCH positions earlier were in an earlier batch (of the same file, or of an
/// earlier file), so the watermark had reached their maximum - delay - 1 >= window end - 1.
fn certainly_late(events: &[Event], delay_ms: i64, size: i64) -> BTreeSet<usize> {
    let mut out = BTreeSet::new();
    let mut max = i64::MIN;
    for p in MAX_BATCH..events.len() {
        max = max.max(events[p - MAX_BATCH].t);
        let t = events[p].t;
        let end = t - t.rem_euclid(size) + size;
        if end <= max - delay_ms {
            out.insert(p);
        }
    }
    out
}

/// An in-order scenario plus rows older than the delay allows: one "anchor" at position >= 50
/// older than (the max of the rows 50 positions earlier) - delay - window size, so certainly
/// late, and a few more at random positions with random ages (late or not, depending on the
/// batches).
fn with_late_rows() -> impl Strategy<Value = Scenario> {
    type Injection = (Index, i64, usize, i64);
    let injection = || {
        (
            any::<Index>(),
            // -1: exactly `delay` behind (on time), 0: 1 ms too late.
            prop_oneof![1 => -1i64..=1, 3 => 0i64..=90 * MINUTE],
            0..KEYS.len(),
            -20i64..=200,
        )
    };
    (
        in_order(60..160),
        injection(),
        prop::collection::vec(injection(), 0..6),
    )
        .prop_map(
            |(mut s, anchor, extra): (Scenario, Injection, Vec<Injection>)| {
                let delay = s.delay_ms();
                let make = |(_, age, key, qty): Injection, newest: i64, margin: i64| Event {
                    key,
                    cust: (qty.rem_euclid(CUSTOMERS as i64)) as usize,
                    qty,
                    cents: qty * 37 - 250,
                    t: newest - delay - margin - 1 - age,
                };
                let n = s.events.len();
                let p = MAX_BATCH + anchor.0.index(n - MAX_BATCH + 1);
                let newest = s.events[..=p - MAX_BATCH]
                    .iter()
                    .map(|e| e.t)
                    .max()
                    .unwrap();
                s.events.insert(p, make(anchor, newest, s.tumble_ms()));
                for inj in extra {
                    let p = inj.0.index(s.events.len() + 1);
                    let newest = s.events[..p].iter().map(|e| e.t).max().unwrap_or(BASE);
                    s.events.insert(p, make(inj, newest, 0));
                }
                // Files are cut at the same relative places.
                let len = s.events.len();
                for c in &mut s.cuts {
                    *c = (*c * len / n).min(len);
                }
                s
            },
        )
}

fn prepare(s: &Scenario) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    write_inputs(dir.path(), &s.events, &s.cuts);
    write_pipeline(
        dir.path(),
        s.delay_s,
        s.tumble_min * 60,
        (s.hop_min.0 * 60, s.hop_min.1 * 60),
    );
    dir
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 48,
        // Integration tests have no lib.rs beside them, so the default (SourceParallel) would
        // fall back to tests/agreement.proptest-regressions; tests run in the crate folder.
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(
            "proptest-regressions/agreement.txt"
        ))),
        ..ProptestConfig::default()
    })]

    /// Property 1: shuffled within the watermark delay, stream mode equals batch mode (and the
    /// model) for TUMBLE and HOP, and nothing is late.
    #[test]
    fn in_order_input_agrees(s in in_order(0..160)) {
        let delay = s.delay_ms();
        let mut max = i64::MIN;
        for e in &s.events {
            prop_assert!(max == i64::MIN || e.t >= max - delay, "generator broke the delay bound");
            max = max.max(e.t);
        }
        let dir = prepare(&s);
        let rt = runtime();
        let batch = run(&rt, dir.path(), Mode::Batch, None, "batch");
        let stream = run(&rt, dir.path(), Mode::Stream, Some(s.batch_size), "stream");

        prop_assert!(batch.rejects.is_empty(), "batch rejects: {:?}", batch.rejects);
        prop_assert!(stream.rejects.is_empty(), "stream rejects: {:?}", stream.rejects);
        prop_assert!(stream.report.rejects.is_empty());
        for (o, mode) in [(&batch, "batch"), (&stream, "stream")] {
            check_emission_order(&o.tumble, &format!("{mode} tumble"))?;
            check_emission_order(&o.hop, &format!("{mode} hop"))?;
        }
        prop_assert_eq!(sorted(&stream.tumble), sorted(&batch.tumble), "TUMBLE stream vs batch");
        prop_assert_eq!(sorted(&stream.hop), sorted(&batch.hop), "HOP stream vs batch");
        prop_assert_eq!(sorted(&stream.cumulate), sorted(&batch.cumulate), "CUMULATE stream vs batch");
        check_emission_order(&stream.cumulate, "stream cumulate")?;
        prop_assert_eq!(sorted(&stream.session), sorted(&batch.session), "SESSION stream vs batch");
        prop_assert_eq!(
            parse_rows(&batch.session, &TUMBLE_DECIMALS),
            session_model(&s.events, s.hop_min.0 * MINUTE),
            "SESSION batch vs model"
        );
        prop_assert_eq!(sorted(&stream.topn), sorted(&batch.topn), "Top-N stream vs batch");
        prop_assert_eq!(&stream.over, &batch.over, "OVER stream vs batch (rows in the same order)");
        prop_assert_eq!(parse_join(&stream.join), parse_join(&batch.join), "interval join stream vs batch");
        prop_assert_eq!(parse_temporal(&stream.temporal), parse_temporal(&batch.temporal), "temporal join stream vs batch");
        prop_assert_eq!(parse_temporal(&batch.temporal), temporal_model(&s.events, |_| true), "temporal join batch vs model");
        // Keep-last deduplication: batch writes each key's latest row (by time, then arrival);
        // stream mode's updates, upserted by key, end there too.
        let mut latest: BTreeMap<String, (i64, usize)> = BTreeMap::new();
        for (id, e) in s.events.iter().enumerate() {
            let slot = latest.entry(KEYS[e.key].to_string()).or_insert((e.t, id));
            if (e.t, id) >= *slot {
                *slot = (e.t, id);
            }
        }
        let want: BTreeMap<Vec<String>, Vec<String>> = latest
            .iter()
            .map(|(k, (_, id))| (vec![k.clone()], vec![k.clone(), id.to_string()]))
            .collect();
        prop_assert_eq!(batch.last.len(), want.len(), "batch: one row per key");
        prop_assert_eq!(&upsert(&batch.last, &[0]), &want, "keep-last batch vs model");
        prop_assert_eq!(&upsert(&stream.last, &[0]), &want, "keep-last stream upserted vs model");
        prop_assert_eq!(
            parse_join(&batch.join),
            join_model(&s.events, s.hop_min.0 * MINUTE, |_| true),
            "interval join batch vs model"
        );
        prop_assert_eq!(
            parse_over(&batch.over, &s.events),
            over_model(&s.events, s.hop_min.0 * MINUTE, |_| true),
            "OVER batch vs model"
        );
        prop_assert_eq!(
            parse_top_n(&batch.topn),
            top_n(&parse_rows(&batch.tumble, &TUMBLE_DECIMALS)),
            "Top-N batch vs model"
        );
        let (step, size) = (s.hop_min.0 * MINUTE, s.hop_min.1 * MINUTE);
        prop_assert_eq!(
            parse_rows(&batch.cumulate, &TUMBLE_DECIMALS),
            model(&s.events, Win::Cumulate { step, size }, true, |_, _| true),
            "CUMULATE batch vs model"
        );
        prop_assert_eq!(upsert(&batch.totals, &[0]).len(), batch.totals.len(), "batch: one row per key");
        prop_assert_eq!(upsert(&stream.totals, &[0]), upsert(&batch.totals, &[0]), "GROUP BY k upserted vs batch");
        prop_assert!(batch.spread.iter().chain(&batch.busy).all(|r| r.last().unwrap() == "upsert"), "batch mode deletes nothing");
        prop_assert_eq!(parse_spread(&apply_changes(&batch.spread, &[0])), spread_model(&s.events), "GROUP BY over GROUP BY batch vs model");
        prop_assert_eq!(apply_changes(&stream.spread, &[0]), apply_changes(&batch.spread, &[0]), "GROUP BY over GROUP BY stream vs batch");
        prop_assert_eq!(apply_changes(&stream.busy, &[0]), apply_changes(&batch.busy, &[0]), "HAVING stream vs batch");

        let (t, (slide, size)) = (s.tumble_ms(), s.hop_min);
        let all = |_: usize, _: i64| true;
        prop_assert_eq!(
            parse_rows(&batch.tumble, &TUMBLE_DECIMALS),
            model(&s.events, Win::Slide { slide: t, size: t }, true, all),
            "TUMBLE batch vs model"
        );
        prop_assert_eq!(
            parse_rows(&batch.hop, &HOP_DECIMALS),
            model(&s.events, Win::Slide { slide: slide * MINUTE, size: size * MINUTE }, false, all),
            "HOP batch vs model"
        );
    }

    /// Property 2: rows later than the delay are rejected in stream mode; stream output plus the
    /// rejected rows re-aggregated by their `window` equals the batch output.
    #[test]
    fn late_rows_are_accounted_for(s in with_late_rows()) {
        let delay = s.delay_ms();
        let tumble_ms = s.tumble_ms();
        let (hop_slide, hop_size) = (s.hop_min.0 * MINUTE, s.hop_min.1 * MINUTE);
        let certain = certainly_late(&s.events, delay, tumble_ms);
        prop_assert!(!certain.is_empty(), "the generator must produce a certainly late row");
        let possible = possibly_late(&s.events, delay);

        let dir = prepare(&s);
        let rt = runtime();
        let batch = run(&rt, dir.path(), Mode::Batch, None, "batch");
        let stream = run(&rt, dir.path(), Mode::Stream, Some(s.batch_size), "stream");
        prop_assert!(batch.rejects.is_empty(), "batch rejects: {:?}", batch.rejects);
        for (o, mode) in [(&batch, "batch"), (&stream, "stream")] {
            check_emission_order(&o.tumble, &format!("{mode} tumble"))?;
            check_emission_order(&o.hop, &format!("{mode} hop"))?;
        }

        // A plain GROUP BY has no window to be late for: upserted, it is the batch answer.
        prop_assert_eq!(upsert(&stream.totals, &[0]), upsert(&batch.totals, &[0]), "GROUP BY k upserted vs batch");

        // Batch sees everything.
        let batch_tumble = parse_rows(&batch.tumble, &TUMBLE_DECIMALS);
        let batch_hop = parse_rows(&batch.hop, &HOP_DECIMALS);
        let all = |_: usize, _: i64| true;
        let tumble_win = Win::Slide { slide: tumble_ms, size: tumble_ms };
        let hop_win = Win::Slide { slide: hop_slide, size: hop_size };
        prop_assert_eq!(&batch_tumble, &model(&s.events, tumble_win, true, all));
        prop_assert_eq!(&batch_hop, &model(&s.events, hop_win, false, all));

        // Which (row, window) pairs stream mode rejected, per aggregate.
        let late = late_rows(&stream.rejects);
        // The OVER aggregate rejects a row whose time the watermark passed: it then holds
        // exactly the other rows.
        let over_late: BTreeSet<usize> = late_ids(&stream.rejects, "over_out").into_iter().collect();
        prop_assert!(over_late.is_subset(&possible), "OVER rejected rows within the delay: {:?}", over_late);
        prop_assert_eq!(
            parse_over(&stream.over, &s.events),
            over_model(&s.events, s.hop_min.0 * MINUTE, |id| !over_late.contains(&id)),
            "OVER stream vs model of accepted rows"
        );
        prop_assert_eq!(
            parse_over(&batch.over, &s.events),
            over_model(&s.events, s.hop_min.0 * MINUTE, |_| true),
            "OVER batch vs model"
        );
        // The self join rejects a late row on each of its inputs; it joins exactly the rest.
        let join_rejects = late_ids(&stream.rejects, "join_out");
        let join_late: BTreeSet<usize> = join_rejects.iter().copied().collect();
        prop_assert_eq!(join_rejects.len(), 2 * join_late.len(), "one reject per input");
        prop_assert!(join_late.is_subset(&possible), "join rejected rows within the delay: {:?}", join_late);
        prop_assert_eq!(
            parse_join(&stream.join),
            join_model(&s.events, s.hop_min.0 * MINUTE, |id| !join_late.contains(&id)),
            "interval join stream vs model of accepted rows"
        );
        // The temporal join reads every event before any version (sources are read one after
        // the other): only versions can be late, and each event joins the accepted versions.
        let temporal_rejects: Vec<&Value> = stream.rejects.iter().filter(|r| r["sink"] == "temporal_out").collect();
        prop_assert!(temporal_rejects.iter().all(|r| r["table"] == "prices" && r["reason"] == "late"), "{:?}", temporal_rejects);
        let stale: BTreeSet<usize> = late_ids(&stream.rejects, "temporal_out").into_iter().collect();
        prop_assert!(stale.is_subset(&possible), "temporal join rejected versions within the delay: {:?}", stale);
        prop_assert_eq!(
            parse_temporal(&stream.temporal),
            temporal_model(&s.events, |id| !stale.contains(&id)),
            "temporal join stream vs model of accepted versions"
        );
        prop_assert_eq!(parse_temporal(&batch.temporal), temporal_model(&s.events, |_| true));
        prop_assert_eq!(
            stream.report.rejects.get("late").copied().unwrap_or(0),
            (late.len()
                + over_late.len()
                + join_rejects.len()
                + temporal_rejects.len()
                + stream.rejects.iter().filter(|r| r["sink"] == "last_out").count()) as u64
        );
        let mut rejected_tumble = BTreeSet::new();
        let mut rejected_hop = BTreeSet::new();
        for r in &late {
            prop_assert!(possible.contains(&r.id), "row {} was rejected but is within the delay", r.id);
            let e = &s.events[r.id];
            prop_assert_eq!(&r.key, KEYS[e.key]);
            prop_assert!(r.start <= e.t && e.t < r.end, "row {} is not in its reject window", r.id);
            match r.sink.as_str() {
                "tumble_out" => {
                    prop_assert_eq!(r.end - r.start, tumble_ms);
                    prop_assert!(rejected_tumble.insert((r.id, r.start)), "rejected twice: {:?}", r);
                }
                "hop_out" => {
                    prop_assert_eq!(r.end - r.start, hop_size);
                    prop_assert!(rejected_hop.insert((r.id, r.start)), "rejected twice: {:?}", r);
                }
                // A late row may have bridged two sessions in batch mode: not re-aggregated.
                "session_out" => {}
                // The Top-N's own TUMBLE aggregate rejects what the TUMBLE sink rejects.
                "topn_out" => prop_assert_eq!(r.end - r.start, tumble_ms),
                _ => {
                    prop_assert_eq!(r.sink.as_str(), "cumulate_out");
                    prop_assert!(r.end - r.start <= hop_size && (r.end - r.start) % hop_slide == 0, "{:?}", r);
                }
            }
        }
        let tumble_ids: BTreeSet<usize> = rejected_tumble.iter().map(|&(id, _)| id).collect();
        prop_assert!(
            certain.is_subset(&tumble_ids),
            "certainly late rows {:?} not all rejected (rejected: {:?})",
            certain,
            tumble_ids
        );

        // Stream output + rejects re-aggregated = batch output (COUNT and SUMs).
        let batch_cumulate = parse_rows(&batch.cumulate, &TUMBLE_DECIMALS);
        for (rows, decimals, sink, batch_rows, what) in [
            (&stream.tumble, &TUMBLE_DECIMALS, "tumble_out", &batch_tumble, "TUMBLE"),
            (&stream.hop, &HOP_DECIMALS, "hop_out", &batch_hop, "HOP"),
            (&stream.cumulate, &TUMBLE_DECIMALS, "cumulate_out", &batch_cumulate, "CUMULATE"),
        ] {
            let mut merged = counts_and_sums(&parse_rows(rows, decimals));
            for r in late.iter().filter(|r| r.sink == sink) {
                let slot = merged.entry((r.start, r.end, r.key.clone())).or_insert([0; 3]);
                slot[0] += 1;
                slot[1] += r.qty;
                slot[2] += r.cents;
            }
            prop_assert_eq!(&merged, &counts_and_sums(batch_rows), "{} stream + rejects vs batch", what);
        }

        // The Top-N ranks what the TUMBLE aggregate emitted, late rows left out.
        prop_assert_eq!(
            parse_top_n(&stream.topn),
            top_n(&parse_rows(&stream.tumble, &TUMBLE_DECIMALS)),
            "Top-N of the stream's TUMBLE results"
        );

        // And every stream aggregate (MIN, MAX, COUNT DISTINCT too) is that of the accepted rows.
        prop_assert_eq!(
            parse_rows(&stream.tumble, &TUMBLE_DECIMALS),
            model(&s.events, tumble_win, true, |id, w| !rejected_tumble.contains(&(id, w))),
            "TUMBLE stream vs model of accepted rows"
        );
        prop_assert_eq!(
            parse_rows(&stream.hop, &HOP_DECIMALS),
            model(&s.events, hop_win, false, |id, w| !rejected_hop.contains(&(id, w))),
            "HOP stream vs model of accepted rows"
        );
    }

    /// Property 3: the window aggregates in update mode, emitting after every stream batch:
    /// upserted by (window_start, k), they are the batch output, and so is the plain GROUP BY.
    #[test]
    fn update_mode_upserts_to_the_batch_answer(s in in_order(0..120)) {
        let dir = prepare(&s);
        without_sessions(dir.path());
        let rt = runtime();
        let batch = run(&rt, dir.path(), Mode::Batch, None, "batch");
        let updates = run_with(&rt, dir.path(), Mode::Stream, Some(s.batch_size), "update", RunOptions {
            output_mode: Some(flowline_runtime::OutputMode::Update),
            emit_interval: Some(std::time::Duration::ZERO),
            ..RunOptions::default()
        });
        prop_assert!(updates.rejects.is_empty(), "rejects: {:?}", updates.rejects);
        prop_assert_eq!(upsert(&updates.tumble, &[0, 2]), upsert(&batch.tumble, &[0, 2]), "TUMBLE");
        prop_assert_eq!(upsert(&updates.hop, &[0, 2]), upsert(&batch.hop, &[0, 2]), "HOP");
        prop_assert_eq!(upsert(&updates.cumulate, &[1, 2]), upsert(&batch.cumulate, &[1, 2]), "CUMULATE");
        prop_assert_eq!(upsert(&updates.totals, &[0]), upsert(&batch.totals, &[0]), "GROUP BY k");
        prop_assert_eq!(apply_changes(&updates.spread, &[0]), apply_changes(&batch.spread, &[0]), "GROUP BY over GROUP BY");
        prop_assert_eq!(apply_changes(&updates.busy, &[0]), apply_changes(&batch.busy, &[0]), "HAVING");
        prop_assert!(updates.tumble.len() >= batch.tumble.len());
        // Emitting after every batch, a key with rows in two batches is written twice or more
        // (rows of one file `batch_size` or more apart are in different batches).
        let split_key = (0..s.events.len()).any(|i| {
            (i + s.batch_size..s.events.len()).any(|j| s.events[i].key == s.events[j].key)
        });
        if split_key {
            prop_assert!(updates.totals.len() > batch.totals.len(), "no early totals");
        }
    }

    /// Property 4: with rows later than the delay, update mode with an allowed lateness longer
    /// than any row is late corrects the windows instead of rejecting: upserted, the stream's
    /// windows equal the batch output, and nothing is rejected.
    #[test]
    fn allowed_lateness_turns_late_rows_into_corrections(s in with_late_rows()) {
        let dir = prepare(&s);
        without_sessions(dir.path());
        let path = dir.path().join("pipeline.sql");
        let sql = fs::read_to_string(&path).unwrap();
        fs::write(&path, format!("SET 'table.exec.emit.allow-lateness' = '1d';\n{sql}")).unwrap();
        let rt = runtime();
        let batch = run(&rt, dir.path(), Mode::Batch, None, "batch");
        let updates = run_with(&rt, dir.path(), Mode::Stream, Some(s.batch_size), "update", RunOptions {
            output_mode: Some(flowline_runtime::OutputMode::Update),
            emit_interval: Some(std::time::Duration::ZERO),
            ..RunOptions::default()
        });
        prop_assert!(updates.rejects.is_empty(), "rejects: {:?}", updates.rejects);
        prop_assert_eq!(upsert(&updates.tumble, &[0, 2]), upsert(&batch.tumble, &[0, 2]), "TUMBLE");
        prop_assert_eq!(upsert(&updates.hop, &[0, 2]), upsert(&batch.hop, &[0, 2]), "HOP");
        prop_assert_eq!(upsert(&updates.cumulate, &[1, 2]), upsert(&batch.cumulate, &[1, 2]), "CUMULATE");
        prop_assert_eq!(upsert(&updates.totals, &[0]), upsert(&batch.totals, &[0]), "GROUP BY k");
    }
}

// ------------------------------------------------------------------------------------- edge cases

fn at(hms: &str) -> i64 {
    parse_ts(&format!("2026-03-16T{hms}"))
}

fn ev(key: usize, qty: i64, cents: i64, t: i64) -> Event {
    Event {
        key,
        cust: key,
        qty,
        cents,
        t,
    }
}

/// (window start, end, key, COUNT(*)) of a sink's rows, in file order.
fn counts(rows: &[Vec<String>]) -> Vec<(i64, i64, String, i64)> {
    rows.iter()
        .map(|r| {
            (
                parse_ts(&r[0]),
                parse_ts(&r[1]),
                r[2].clone(),
                r[3].parse().unwrap(),
            )
        })
        .collect()
}

/// The windows of the late rejects of the TUMBLE and HOP sinks (the other aggregates reject the
/// same rows for their own windows).
fn windows_of(rejects: &[Value]) -> Vec<(String, String)> {
    let mut w: Vec<_> = rejects
        .iter()
        .filter(|r| r["sink"] == "tumble_out" || r["sink"] == "hop_out")
        .map(|r| {
            assert_eq!(r["reason"], "late");
            (
                r["window"][0].as_str().unwrap().to_string(),
                r["window"][1].as_str().unwrap().to_string(),
            )
        })
        .collect();
    w.sort();
    w
}

/// Delay 5 s, TUMBLE 1 min: a row exactly 5 s behind the newest is on time even in a window
/// about to fire; 5.001 s behind, after the window fired, it is late.
#[test]
fn row_exactly_delay_behind_is_not_late() {
    let events = vec![
        ev(0, 1, 100, at("00:00:10.000")),
        ev(0, 1, 100, at("00:01:04.999")), // watermark 00:00:59.998
        ev(0, 1, 100, at("00:00:59.999")), // exactly 5 s behind: on time
        ev(0, 1, 100, at("00:01:05.000")), // watermark 00:00:59.999: [00:00, 00:01) fires
        ev(0, 1, 100, at("00:00:59.999")), // 5.001 s behind: late
        ev(0, 1, 100, at("00:01:00.000")), // exactly 5 s behind: on time
    ];
    let dir = tempfile::tempdir().unwrap();
    write_inputs(dir.path(), &events, &[]);
    write_pipeline(dir.path(), 5, 60, (60, 180));
    let rt = runtime();
    let (w0, w1, w2) = (at("00:00:00"), at("00:01:00"), at("00:02:00"));

    let batch = run(&rt, dir.path(), Mode::Batch, None, "batch");
    assert!(batch.rejects.is_empty());
    assert_eq!(
        counts(&batch.tumble),
        vec![(w0, w1, "a".into(), 3), (w1, w2, "a".into(), 3)]
    );
    // Batch sizes 1 and 2 both put row 4 in a batch before row 5.
    for size in [1, 2] {
        let stream = run(
            &rt,
            dir.path(),
            Mode::Stream,
            Some(size),
            &format!("s{size}"),
        );
        assert_eq!(
            counts(&stream.tumble),
            vec![(w0, w1, "a".into(), 2), (w1, w2, "a".into(), 3)],
            "batch size {size}"
        );
        let tumble_rejects: Vec<_> = windows_of(&stream.rejects)
            .into_iter()
            .filter(|(s, e)| parse_ts(e) - parse_ts(s) == MINUTE)
            .collect();
        assert_eq!(
            tumble_rejects,
            vec![(
                "2026-03-16T00:00:00.000".to_string(),
                "2026-03-16T00:01:00.000".to_string()
            )],
            "batch size {size}"
        );
        let late = late_rows(&stream.rejects);
        assert!(late.iter().all(|r| r.id == 4), "{late:?}");
    }
}

/// Delay 0: a window [start, end) fires when the watermark reaches end - 1, i.e. on the first
/// row at `end`; a row at end - 1 is in [start, end), and late once that window fired. For HOP
/// (slide 30 s, size 1 min), the same row is late for one window and on time for the other.
#[test]
fn windows_fire_at_end_minus_one() {
    let events = vec![
        ev(0, 1, 100, at("00:00:30.000")),
        ev(0, 2, 100, at("00:00:59.999")), // end - 1 of [00:00, 00:01): not yet fired
        ev(0, 4, 100, at("00:00:59.999")), // equal to the newest: on time
        ev(0, 8, 100, at("00:01:00.000")), // watermark 00:00:59.999: [00:00, 00:01) fires
        ev(0, 16, 100, at("00:01:00.000")),
        ev(0, 32, 100, at("00:00:59.999")), // 1 ms behind, its tumble window fired: late
    ];
    let dir = tempfile::tempdir().unwrap();
    write_inputs(dir.path(), &events, &[]);
    let dir_path = dir.path();
    write_pipeline(dir_path, 0, 60, (30, 60));
    let rt = runtime();
    let (w0, w30, w1, w90, w2) = (
        at("00:00:00"),
        at("00:00:30"),
        at("00:01:00"),
        at("00:01:30"),
        at("00:02:00"),
    );
    let a = || "a".to_string();

    let batch = run(&rt, dir_path, Mode::Batch, None, "batch");
    assert!(batch.rejects.is_empty());
    assert_eq!(
        counts(&batch.tumble),
        vec![(w0, w1, a(), 4), (w1, w2, a(), 2)]
    );
    assert_eq!(
        counts(&batch.hop),
        vec![(w0, w1, a(), 4), (w30, w90, a(), 6), (w1, w2, a(), 2)]
    );
    // Sum of qty tells exactly which rows landed where.
    assert_eq!(batch.tumble[0][4], "39");

    for size in [1, 2] {
        let stream = run(&rt, dir_path, Mode::Stream, Some(size), &format!("s{size}"));
        assert_eq!(
            counts(&stream.tumble),
            vec![(w0, w1, a(), 3), (w1, w2, a(), 2)],
            "batch size {size}"
        );
        assert_eq!(stream.tumble[0][4], "7", "batch size {size}");
        assert_eq!(
            counts(&stream.hop),
            vec![(w0, w1, a(), 3), (w30, w90, a(), 6), (w1, w2, a(), 2)],
            "batch size {size}"
        );
        // Late for the tumble window and the first hop window, both [00:00, 00:01).
        let w = (
            "2026-03-16T00:00:00.000".to_string(),
            "2026-03-16T00:01:00.000".to_string(),
        );
        assert_eq!(
            windows_of(&stream.rejects),
            vec![w.clone(), w],
            "batch size {size}"
        );
        assert!(late_rows(&stream.rejects)
            .iter()
            .all(|r| r.id == 5 && r.qty == 32));
    }
}

/// Times before the epoch (negative milliseconds), negative amounts, and empty input files:
/// both modes agree with the expected windows.
#[test]
fn negative_times_values_and_empty_files() {
    let t = |s: &str| parse_ts(s);
    let events = vec![
        ev(2, 7, -99_999, t("1969-12-31T23:58:59.999")),
        ev(1, -3, -150, t("1969-12-31T23:59:00.000")),
        ev(1, -5, -1, t("1969-12-31T23:59:59.999")),
        ev(1, 0, 0, t("1970-01-01T00:00:00.000")),
    ];
    let rt = runtime();
    let expected_tumble = vec![
        vec![
            "1969-12-31T23:58:00",
            "1969-12-31T23:59:00",
            "b2",
            "1",
            "7",
            "-999.99",
            "-999.99",
            "7",
            "1",
        ],
        vec![
            "1969-12-31T23:59:00",
            "1970-01-01T00:00:00",
            "b",
            "2",
            "-8",
            "-1.51",
            "-1.50",
            "-3",
            "1",
        ],
        vec![
            "1970-01-01T00:00:00",
            "1970-01-01T00:01:00",
            "b",
            "1",
            "0",
            "0.00",
            "0.00",
            "0",
            "1",
        ],
    ];
    let expected_model = model(
        &events,
        Win::Slide {
            slide: MINUTE,
            size: MINUTE,
        },
        true,
        |_, _| true,
    );

    // All rows in one file between two empty ones, then split one per file.
    for (case, cuts) in [("one", vec![0, 4]), ("split", vec![1, 2, 3])] {
        let dir = tempfile::tempdir().unwrap();
        write_inputs(dir.path(), &events, &cuts);
        // A zero-byte file too: no header, no rows.
        fs::write(dir.path().join("in/zzz.csv"), "").unwrap();
        write_pipeline(dir.path(), 1, 60, (60, 180));
        let batch = run(&rt, dir.path(), Mode::Batch, None, "batch");
        for (mode, o) in [
            ("batch", batch),
            (
                "stream",
                run(&rt, dir.path(), Mode::Stream, Some(1), "stream"),
            ),
        ] {
            assert!(o.rejects.is_empty(), "{case} {mode}: {:?}", o.rejects);
            assert_eq!(o.report.rows_read.get("events"), Some(&4), "{case} {mode}");
            assert_eq!(
                parse_rows(&o.tumble, &TUMBLE_DECIMALS),
                expected_model,
                "{case} {mode}"
            );
            let got: Vec<Vec<&str>> = o
                .tumble
                .iter()
                .map(|r| r.iter().map(String::as_str).collect())
                .collect();
            assert_eq!(got, expected_tumble, "{case} {mode}");
            assert_eq!(
                parse_rows(&o.hop, &HOP_DECIMALS),
                model(
                    &events,
                    Win::Slide {
                        slide: MINUTE,
                        size: 3 * MINUTE
                    },
                    false,
                    |_, _| true
                ),
                "{case} {mode}"
            );
        }
    }

    // No rows at all: header-only and zero-byte files.
    let dir = tempfile::tempdir().unwrap();
    write_inputs(dir.path(), &[], &[0]);
    fs::write(dir.path().join("in/zzz.csv"), "").unwrap();
    write_pipeline(dir.path(), 0, 60, (60, 180));
    for (mode, size) in [(Mode::Batch, None), (Mode::Stream, Some(1))] {
        let o = run(&rt, dir.path(), mode, size, &format!("{mode}"));
        assert!(o.rejects.is_empty());
        assert!(o.tumble.is_empty() && o.hop.is_empty(), "{mode}");
        assert_eq!(o.report.rows_read.get("events"), Some(&0), "{mode}");
    }
}
