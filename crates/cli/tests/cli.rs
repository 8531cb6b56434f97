//! End to end through the `flowline` binary: generate the example orders, run the example
//! pipeline in batch and in stream mode, compare the outputs byte for byte, and inspect the
//! summary, the reject bin and the run list.
//!
//! Every command runs from an unrelated working directory: paths in the pipeline resolve
//! against the pipeline file's folder.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

fn example_pipeline() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/orders/pipeline.sql")
}

/// Runs `flowline args...` from `cwd`.
fn flowline(cwd: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_flowline"))
        .args(args)
        .current_dir(cwd)
        .output()
        .expect("start flowline")
}

/// Runs `flowline args...`, which must succeed; returns (stdout, stderr).
fn ok(cwd: &Path, args: &[&str]) -> (String, String) {
    let out = flowline(cwd, args);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "flowline {args:?} failed ({}):\n{stderr}",
        out.status
    );
    (stdout, stderr)
}

/// A copy of the example pipeline in a fresh folder, with generated orders in `data/orders`.
struct Example {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    pipeline: String,
    /// An empty folder to run commands from.
    cwd: PathBuf,
}

fn example(extra_generate_args: &[&str]) -> Example {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("orders");
    let cwd = tmp.path().join("elsewhere");
    fs::create_dir_all(&dir).unwrap();
    fs::create_dir_all(&cwd).unwrap();
    fs::copy(example_pipeline(), dir.join("pipeline.sql")).unwrap();
    let data = dir.join("data/orders");
    let mut args = vec![
        "generate",
        "orders",
        data.to_str().unwrap(),
        "--rows",
        "2000",
        "--days",
        "2",
        "--format",
        "csv",
    ];
    args.extend_from_slice(extra_generate_args);
    ok(&cwd, &args);
    Example {
        pipeline: dir.join("pipeline.sql").to_str().unwrap().to_string(),
        _tmp: tmp,
        dir,
        cwd,
    }
}

/// Every file under `root` (relative path → bytes).
fn files(root: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    fn go(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) {
        for entry in fs::read_dir(dir).unwrap() {
            let entry = entry.unwrap();
            if entry.file_type().unwrap().is_dir() {
                go(root, &entry.path(), out);
            } else {
                out.insert(
                    entry.path().strip_prefix(root).unwrap().to_path_buf(),
                    fs::read(entry.path()).unwrap(),
                );
            }
        }
    }
    let mut out = BTreeMap::new();
    go(root, root, &mut out);
    out
}

fn json_lines(text: &str) -> Vec<Value> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// The row count of `rejected N rows: <reason>` in a run summary (0 when absent).
fn summary_rejects(summary: &str, reason: &str) -> u64 {
    summary
        .lines()
        .find(|l| l.trim_end().ends_with(&format!("rows: {reason}")))
        .map(|l| {
            l.split_whitespace()
                .nth(1)
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("cannot read the count in `{l}`"))
        })
        .unwrap_or(0)
}

#[test]
fn batch_and_stream_write_identical_files() {
    let ex = example(&[]);
    let p = ex.pipeline.as_str();

    let (_, batch_summary) = ok(&ex.cwd, &["run", p, "--mode", "batch"]);
    let daily = ex.dir.join("out/daily_revenue");
    let hourly = ex.dir.join("out/hourly_orders");
    let batch_daily = files(&daily);
    let batch_hourly = files(&hourly);
    assert!(
        batch_daily.keys().any(|k| k.starts_with("day=2026-03-16")),
        "daily_revenue files: {:?}",
        batch_daily.keys()
    );
    assert!(
        batch_daily.keys().any(|k| k.starts_with("day=2026-03-17")),
        "daily_revenue files: {:?}",
        batch_daily.keys()
    );
    assert_eq!(
        batch_hourly.keys().collect::<Vec<_>>(),
        vec![Path::new("part-00000.parquet")]
    );

    let (_, stream_summary) = ok(
        &ex.cwd,
        &["run", p, "--mode", "stream", "--batch-size", "7"],
    );
    let stream_daily = files(&daily);
    let stream_hourly = files(&hourly);
    assert_eq!(
        batch_daily.keys().collect::<Vec<_>>(),
        stream_daily.keys().collect::<Vec<_>>(),
        "daily_revenue has different files in batch and stream mode"
    );
    for (path, bytes) in &batch_daily {
        assert!(
            &stream_daily[path] == bytes,
            "daily_revenue/{} differs between batch and stream mode:\n--- batch\n{}\n--- stream\n{}",
            path.display(),
            String::from_utf8_lossy(bytes),
            String::from_utf8_lossy(&stream_daily[path])
        );
    }
    assert!(
        batch_hourly == stream_hourly,
        "hourly_orders/part-00000.parquet differs between batch and stream mode"
    );

    // The summaries mention the rejects and where they are.
    let rejects_path = ex.dir.join(".flowline/pipeline/rejects.jsonl");
    for (mode, summary) in [("batch", &batch_summary), ("stream", &stream_summary)] {
        assert!(summary.contains(&format!("({mode} mode)")), "{summary}");
        assert!(summary.contains("rows from orders"), "{summary}");
        for reason in ["malformed-csv", "bad-value", "bad-timestamp"] {
            assert_eq!(
                summary_rejects(summary, reason),
                1,
                "{mode} summary, {reason}:\n{summary}"
            );
        }
        assert_eq!(summary_rejects(summary, "late"), 0, "{summary}");
        assert!(
            summary.contains(&format!("rejects are in {}", rejects_path.display())),
            "{summary}"
        );
    }

    // The reject bin: a malformed CSV record with its line number and raw text, which is the
    // text of that line of the input file.
    let rejects = json_lines(&fs::read_to_string(&rejects_path).unwrap());
    assert_eq!(rejects.len(), 6, "3 rejects per run: {rejects:#?}");
    let malformed: Vec<&Value> = rejects
        .iter()
        .filter(|r| r["reason"] == "malformed-csv")
        .collect();
    assert_eq!(malformed.len(), 2, "one per run: {malformed:#?}");
    for r in malformed {
        assert_eq!(r["table"], "orders");
        let line = r["line"].as_u64().expect("a line number") as usize;
        let raw = r["raw"].as_str().expect("the raw text");
        assert!(!raw.is_empty());
        let file = r["file"].as_str().expect("the file");
        let text = fs::read_to_string(file).unwrap();
        assert_eq!(
            text.lines().nth(line - 1),
            Some(raw),
            "line {line} of {file} is not the raw text of the reject"
        );
        assert_eq!(raw.split(',').count(), 4, "{raw}");
    }

    // `flowline rejects` shows the last run's rejects.
    let (out, _) = ok(&ex.cwd, &["rejects", p]);
    let last = json_lines(&out);
    assert_eq!(last.len(), 3, "{out}");
    assert!(last.iter().any(|r| r["reason"] == "malformed-csv"), "{out}");

    // `flowline runs` lists both runs.
    let (out, _) = ok(&ex.cwd, &["runs", p]);
    let runs: Vec<&str> = out
        .lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .collect();
    assert_eq!(runs.len(), 2, "{out}");
    let modes: Vec<&str> = runs
        .iter()
        .map(|l| l.split_whitespace().nth(1).unwrap())
        .collect();
    assert_eq!(modes, ["batch", "stream"], "{out}");
    assert!(
        runs.iter()
            .all(|l| l.split_whitespace().nth(2) == Some("ok")),
        "{out}"
    );
    let (out, _) = ok(&ex.cwd, &["runs", p, "--json"]);
    let records = json_lines(&out);
    assert_eq!(records.len(), 2);
    assert_eq!(records[1]["batch_size"], 7);
    assert_eq!(records[0]["rows_written"], records[1]["rows_written"]);

    // Rows in and out of every operator: the same in both modes (batch splits the files over
    // workers, stream reads 7 rows at a time), each operator's input is what the one before it
    // sent, the first reads every row of the source, and the last sends what its sink wrote.
    let ops = records[0]["operator_rows"]
        .as_array()
        .expect("operator_rows");
    assert_eq!(records[0]["operator_rows"], records[1]["operator_rows"]);
    let read = records[0]["rows_read"]["orders"].as_u64().unwrap();
    for sink in ["daily_revenue", "hourly_orders", "daily_totals"] {
        let chain: Vec<&Value> = ops.iter().filter(|o| o["sink"] == sink).collect();
        assert!(chain.len() >= 3, "{sink}: {chain:?}");
        assert_eq!(chain[0]["rows_in"], read, "{sink}");
        for pair in chain.windows(2) {
            assert_eq!(pair[0]["rows_out"], pair[1]["rows_in"], "{sink}: {pair:?}");
        }
        assert_eq!(
            chain.last().unwrap()["rows_out"],
            records[0]["rows_written"][sink],
            "{sink}"
        );
        let aggregate = chain
            .iter()
            .find(|o| o["operator"] == "window-aggregate")
            .unwrap();
        assert!(aggregate["rows_out"].as_u64().unwrap() < aggregate["rows_in"].as_u64().unwrap());
    }

    // State per stateful operator, in the manifest and the summary: every INSERT of the example
    // aggregates, and each operator's peak is part of the run's peak.
    for (record, summary) in records.iter().zip([&batch_summary, &stream_summary]) {
        let ops = record["operator_state"].as_array().expect("operator_state");
        assert!(!ops.is_empty(), "{record}");
        let peak = record["peak_state_bytes"].as_u64().unwrap();
        for op in ops {
            let bytes = op["peak_bytes"].as_u64().unwrap();
            assert!(bytes > 0 && bytes <= peak, "{op} vs peak {peak}");
            let sink = op["sink"].as_str().unwrap();
            assert!(
                summary.contains(&format!("of INSERT INTO {sink}")),
                "{summary}"
            );
        }
    }
}

#[test]
fn syntax_error_exits_non_zero_with_its_position() {
    let tmp = tempfile::tempdir().unwrap();
    let text = "-- a pipeline with a typo\n\
                CREATE TABLE t (a BIGINT) WITH (\n  'connector' = 'files',\n  'path' = 'x.csv',\n  'format' = 'csv'\n);\n\
                CREATE TABLE o WITH ('connector' = 'print');\n\
                INSERT INTO o\nSELECT a,\n  CAST(a AS ) AS b FROM t;\n";
    let file = tmp.path().join("bad.sql");
    fs::write(&file, text).unwrap();
    // The position of the unexpected `)`, computed from the text.
    let at = text.find(") AS b").unwrap();
    let line = text[..at].matches('\n').count() + 1;
    let column = at - text[..at].rfind('\n').unwrap();

    for args in [
        vec!["run", file.to_str().unwrap()],
        vec!["run", file.to_str().unwrap(), "--mode", "stream"],
        vec!["explain", file.to_str().unwrap()],
    ] {
        let out = flowline(tmp.path(), &args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(
            stderr.contains(&format!("line {line}, column {column}")),
            "{args:?}: expected `line {line}, column {column}` in:\n{stderr}"
        );
    }
    assert_eq!(
        fs::read_dir(tmp.path()).unwrap().count(),
        1,
        "a failed parse wrote files"
    );
}

#[test]
fn late_rows_are_rejected_in_stream_mode_only() {
    let ex = example(&["--late-rows", "3"]);
    let p = ex.pipeline.as_str();

    let (_, summary) = ok(&ex.cwd, &["run", p, "--mode", "batch"]);
    assert_eq!(summary_rejects(&summary, "late"), 0, "{summary}");
    let (out, _) = ok(&ex.cwd, &["rejects", p]);
    let batch = json_lines(&out);
    assert!(
        batch.iter().all(|r| r["reason"] != "late"),
        "batch mode rejected late rows: {out}"
    );
    assert_eq!(batch.len(), 3, "{out}");

    let (_, summary) = ok(
        &ex.cwd,
        &["run", p, "--mode", "stream", "--batch-size", "7"],
    );
    let (out, _) = ok(&ex.cwd, &["rejects", p]);
    let stream = json_lines(&out);
    let late: Vec<&Value> = stream.iter().filter(|r| r["reason"] == "late").collect();
    // The generator's late rows are order ids rows + 1_000_000 + k.
    let mut late_ids: Vec<i64> = late
        .iter()
        .map(|r| {
            let raw: Value = serde_json::from_str(r["raw"].as_str().unwrap()).unwrap();
            raw["order_id"].as_i64().unwrap()
        })
        .collect();
    late_ids.sort();
    late_ids.dedup();
    assert_eq!(late_ids, [1_002_000, 1_002_001, 1_002_002], "{out}");
    for r in &late {
        assert!(r["window"].is_array() && r["watermark"].is_string(), "{r}");
    }
    // Each INSERT that windows the orders misses the three late rows, and says so: one reject
    // per (row, INSERT), tagged with the sink, so each output can be corrected on its own.
    let mut per_sink: std::collections::BTreeMap<String, Vec<i64>> = Default::default();
    for r in &late {
        let raw: Value = serde_json::from_str(r["raw"].as_str().unwrap()).unwrap();
        per_sink
            .entry(
                r["sink"]
                    .as_str()
                    .expect("late rejects name their sink")
                    .to_string(),
            )
            .or_default()
            .push(raw["order_id"].as_i64().unwrap());
    }
    assert_eq!(
        per_sink.keys().map(String::as_str).collect::<Vec<_>>(),
        ["daily_revenue", "daily_totals", "hourly_orders"],
        "{out}"
    );
    for ids in per_sink.values_mut() {
        ids.sort();
        assert_eq!(ids, &[1_002_000, 1_002_001, 1_002_002], "{out}");
    }
    assert_eq!(
        summary_rejects(&summary, "late"),
        9,
        "3 late rows x 3 windowed INSERTs, but the summary says:\n{summary}"
    );
    assert_eq!(late.len(), 9, "late rejects in the bin:\n{out}");
}

/// `flowline bench nexmark` over each source: every (query, mode) runs in its own process and
/// reports a measurement; the same events give the same result rows from the generator, from
/// Parquet files and from a log topic, in stream and in batch mode; a query Flowline marks not
/// applicable is reported as such, not run.
#[test]
fn bench_nexmark_measures_every_source_and_mode_alike() {
    let tmp = tempfile::tempdir().unwrap();
    let mut rows_seen = vec![];
    for source in ["generator", "files", "log"] {
        let json = tmp.path().join(format!("{source}.json"));
        let (stdout, _) = ok(
            tmp.path(),
            &[
                "bench",
                "nexmark",
                "--query",
                "q2,q8,q10",
                "--events",
                "20K",
                "--mode",
                "both",
                "--source",
                source,
                "--dir",
                "work",
                "--json",
                json.to_str().unwrap(),
            ],
        );
        assert!(stdout.contains("q10   stream n/a:"), "{stdout}");
        let doc: Value = serde_json::from_str(&fs::read_to_string(&json).unwrap()).unwrap();
        let results = doc["results"].as_array().unwrap();
        assert_eq!(results.len(), 6, "{doc}");
        for r in results.iter().filter(|r| r["query"] != "q10") {
            assert_eq!(r["status"], "ok", "{source}: {r}");
            assert!(r["events_per_s"].as_f64().unwrap() > 0.0, "{r}");
            assert!(r["peak_rss_bytes"].as_u64().unwrap() > 1_000_000, "{r}");
            assert_eq!(r["rejects"], 0, "{r}");
            rows_seen.push((r["query"].to_string(), r["result_rows"].as_u64().unwrap()));
        }
    }
    // q2 and q8, 3 sources x 2 modes each: one answer per query, not empty.
    for q in ["\"q2\"", "\"q8\""] {
        let counts: Vec<u64> = rows_seen.iter().filter(|r| r.0 == q).map(|r| r.1).collect();
        assert_eq!(counts.len(), 6, "{rows_seen:?}");
        assert!(
            counts[0] > 0 && counts.iter().all(|&c| c == counts[0]),
            "{q}: {counts:?}"
        );
    }
}

/// Orders and revenue (in cents) of each store on 2026-03-16, from the daily revenue output.
fn revenue_on_16th(dir: &Path) -> BTreeMap<String, (u64, i64)> {
    let text =
        fs::read_to_string(dir.join("out/daily_revenue/day=2026-03-16/part-00000.csv")).unwrap();
    text.lines()
        .skip(1)
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            let cents = (f[1].parse::<f64>().unwrap() * 100.0).round() as i64;
            (f[0].to_string(), (f[2].parse().unwrap(), cents))
        })
        .collect()
}

#[test]
fn corrected_rejects_replay_into_the_next_run_once() {
    let ex = example(&[]);
    let p = ex.pipeline.as_str();
    ok(&ex.cwd, &["run", p]);
    let before = revenue_on_16th(&ex.dir);
    let (out, _) = ok(&ex.cwd, &["rejects", p]);
    let rejects = json_lines(&out);
    assert_eq!(rejects.len(), 3, "{out}");
    let fixes = [
        ("12.5x", "12.50"),
        ("yesterday at noon", "2026-03-16 12:00:00"),
        ("c0003,10.00", "c0003,10.00,2026-03-16 13:00:00"),
    ];
    let correct = |r: &Value, broken: bool| {
        let mut r = r.clone();
        let mut raw = r["raw"].as_str().unwrap().to_string();
        for (bad, good) in fixes {
            raw = raw.replace(bad, good);
        }
        if broken {
            raw = raw.replace("12.50", "12.5.0");
        }
        r["raw"] = raw.into();
        r.to_string()
    };
    let corrected = ex.dir.join("corrected.jsonl");
    // Replays `text` as the corrections file; it must fail: returns its error output.
    let refused = |text: &str| -> String {
        fs::write(&corrected, text).unwrap();
        let out = flowline(
            &ex.cwd,
            &["rejects", p, "--replay", corrected.to_str().unwrap()],
        );
        assert!(!out.status.success(), "the replay of {text} succeeded");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };

    // A row that still does not decode: refused, naming the row and why; nothing written.
    let text: Vec<String> = rejects.iter().map(|r| correct(r, true)).collect();
    let err = refused(&text.join("\n"));
    let bad_row = rejects
        .iter()
        .position(|r| r["reason"] == "bad-value")
        .unwrap()
        + 1;
    assert!(
        err.contains(&format!(
            "corrected row {bad_row}: still rejected: bad-value"
        )) && err.contains("12.5.0"),
        "{err}"
    );
    let listed = |dir: &str| {
        let mut names: Vec<String> = fs::read_dir(ex.dir.join(dir))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    };
    assert_eq!(listed("data/orders/dt=2026-03-16"), ["orders-0000.csv"]);
    let root = listed("data/orders");
    assert!(
        !root.iter().any(|n| n.starts_with(".replay-")),
        "no staging left behind: {root:?}"
    );

    // Corrected: one new file beside the bad one (its Hive partition), read by the next run.
    let text: Vec<String> = rejects.iter().map(|r| correct(r, false)).collect();
    fs::write(&corrected, text.join("\n")).unwrap();
    let (out, _) = ok(
        &ex.cwd,
        &["rejects", p, "--replay", corrected.to_str().unwrap()],
    );
    assert!(out.contains("replayed 3 corrected rejects"), "{out}");
    let names = listed("data/orders/dt=2026-03-16");
    assert_eq!(names.len(), 2, "{names:?}");
    assert!(names[0].starts_with("corrected-") && names[0].ends_with(".csv"));
    ok(&ex.cwd, &["run", p]);
    let after = revenue_on_16th(&ex.dir);
    for (store, cents) in [("store-01", 1250), ("store-02", 1000), ("store-03", 1000)] {
        let (b, a) = (before[store], after[store]);
        assert_eq!((a.0, a.1), (b.0 + 1, b.1 + cents), "{store}");
    }
    for (store, v) in &before {
        if !["store-01", "store-02", "store-03"].contains(&store.as_str()) {
            assert_eq!(after[store], *v, "{store}");
        }
    }

    // Once only: the same rejects, from the new run's bin entries too, are refused.
    let (out, _) = ok(&ex.cwd, &["rejects", p]);
    let again: Vec<String> = json_lines(&out).iter().map(|r| correct(r, false)).collect();
    assert_eq!(again.len(), 3);
    let err = refused(&again.join("\n"));
    assert!(err.contains("was replayed at"), "{err}");

    // A blank correction or one spanning lines is refused (it would vanish or split).
    for (raw, message) in [
        ("  ", "its `raw` text is empty"),
        ("1,a\n2,b", "spans several lines"),
    ] {
        let mut r = rejects[0].clone();
        r["raw"] = raw.into();
        let err = refused(&r.to_string());
        assert!(err.contains(message), "{err}");
    }

    // Late rows are in their source already: refused with the range to rerun.
    let late = serde_json::json!({
        "reason": "late", "table": "orders", "raw": "{}",
        "window": ["2026-03-16T00:00:00Z", "2026-03-17T00:00:00Z"],
    });
    let err = refused(&late.to_string());
    assert!(err.contains("rerun its window as corrections"), "{err}");
}
