//! Nexmark correctness: every query of `benches/nexmark/` that Flowline runs gives the same
//! answer in stream mode (small batches, a watermark after each) as in batch mode, over the same
//! generated events: for an append sink the same rows, for an update sink the same last row per
//! key. The events are few (tens of thousands) at a low event rate, so windows open and close
//! many times and joins and Top-N see real churn.
//!
//! A query whose file says `-- Flowline: not applicable:` is skipped; a query Flowline cannot
//! plan yet must be listed in `UNSUPPORTED` with the error it gives (so a newly supported query
//! fails this test until it is checked here).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use flowline_runtime::{run_pipeline, Mode, RunOptions};
use serde_json::Value;

const EVENTS: u64 = 30_000;
/// Events per second of event time: 30 000 events span 30 s.
const RATE: u64 = 1_000;

/// Queries Flowline cannot run yet in one mode or both, with a part of the error they give
/// (the missing feature; BENCHMARKS.md lists them).
const UNSUPPORTED: &[(&str, &str)] = &[];

fn nexmark_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../benches/nexmark")
}

fn source_ddl() -> String {
    let text = std::fs::read_to_string(nexmark_dir().join("ddl_gen.sql")).unwrap();
    let mut out = String::new();
    for line in text.lines() {
        let t = line.trim_start();
        let comma = if t.trim_end().ends_with(',') { "," } else { "" };
        if t.starts_with("'events.num'") {
            out += &format!("  'events.num' = '{EVENTS}'{comma}\n");
        } else if t.starts_with("'first-event.rate'") {
            out += &format!("  'first-event.rate' = '{RATE}'{comma}\n");
        } else if t.starts_with("'next-event.rate'") {
            out += &format!("  'next-event.rate' = '{RATE}'{comma}\n");
        } else {
            out += line;
            out.push('\n');
        }
    }
    out
}

/// The query with its blackhole sink turned into JSON lines files under `out`, with a last
/// column `_change_type` (a query with retractions, q4, writes deletes).
fn with_file_sink(query: &str, out: &Path) -> String {
    let blackhole = "'connector' = 'blackhole'";
    let at = query
        .find(blackhole)
        .unwrap_or_else(|| panic!("no blackhole sink in:\n{query}"));
    let columns_end = query[..at]
        .rfind(") WITH (")
        .expect("the sink's columns end with `) WITH (`");
    format!(
        "{},\n  _change_type STRING\n{}'connector' = 'files', 'path' = '{}', 'format' = 'json'{}",
        query[..columns_end].trim_end(),
        &query[columns_end..at],
        out.display(),
        &query[at + blackhole.len()..]
    )
}

/// The final answer of a sink: sorted rows (append) or the last row per key (update).
fn final_rows(dir: &Path, key: Option<&[String]>) -> Vec<String> {
    let mut files = vec![];
    collect(dir, &mut files);
    files.sort();
    let mut rows = vec![];
    for f in files {
        for line in std::fs::read_to_string(&f).unwrap().lines() {
            rows.push(serde_json::from_str::<Value>(line).unwrap());
        }
    }
    let change = |r: &mut Value| match r.as_object_mut().and_then(|o| o.remove("_change_type")) {
        Some(Value::String(c)) => c,
        other => panic!("_change_type is {other:?}"),
    };
    let mut out: Vec<String> = match key {
        None => rows
            .into_iter()
            .map(|mut r| {
                assert_eq!(change(&mut r), "upsert", "an append sink got a delete");
                r.to_string()
            })
            .collect(),
        Some(key) => {
            let mut last = BTreeMap::new();
            for mut r in rows {
                let k: Vec<String> = key.iter().map(|c| r[c].to_string()).collect();
                if change(&mut r) == "delete" {
                    last.remove(&k);
                } else {
                    last.insert(k, r.to_string());
                }
            }
            last.into_values().collect()
        }
    };
    out.sort();
    out
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries {
        let p = e.unwrap().path();
        let hidden = p
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with('.'));
        if p.is_dir() && !hidden {
            collect(&p, out);
        } else if p.extension().is_some_and(|x| x == "json") && !hidden {
            out.push(p);
        }
    }
}

async fn run(query: &str, mode: Mode, dir: &Path) -> Result<(Vec<String>, u64), String> {
    let out = dir.join(format!("out-{mode}"));
    let views = std::fs::read_to_string(nexmark_dir().join("ddl_views.sql"))
        .unwrap()
        .replace("${NEXMARK_TABLE}", "datagen");
    // q13's side input (a lookup join's dimension table) lives under `${FLINK_HOME}`.
    let query = if query.contains("${FLINK_HOME}") {
        flowline_connectors::nexmark::write_side_input(dir).unwrap();
        query.replace("${FLINK_HOME}", &dir.display().to_string())
    } else {
        query.to_string()
    };
    let text = format!(
        "{}\n{views}\n{}",
        source_ddl(),
        with_file_sink(&query, &out)
    );
    let pipeline = dir.join(format!("{mode}.sql"));
    std::fs::write(&pipeline, text).unwrap();
    let options = RunOptions {
        mode: Some(mode),
        state_dir: Some(dir.join(format!("state-{mode}"))),
        ..Default::default()
    };
    let report = run_pipeline(&pipeline, options)
        .await
        .map_err(|e| e.to_string())?;
    let output = &report.record["outputs"][0];
    let key: Option<Vec<String>> = output["key"]
        .as_array()
        .map(|k| k.iter().map(|c| c.as_str().unwrap().to_string()).collect());
    let rejects = report.rejects.values().sum();
    Ok((final_rows(&out, key.as_deref()), rejects))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_supported_query_agrees_in_stream_and_batch() {
    let mut checked = vec![];
    let mut failures = vec![];
    for q in 0..=22 {
        let name = format!("q{q}");
        let query = std::fs::read_to_string(nexmark_dir().join(format!("{name}.sql"))).unwrap();
        if query
            .lines()
            .any(|l| l.starts_with("-- Flowline: not applicable:"))
        {
            continue;
        }
        let dir = tempfile::tempdir().unwrap();
        let batch = run(&query, Mode::Batch, dir.path()).await;
        let stream = run(&query, Mode::Stream, dir.path()).await;
        let expected_error = UNSUPPORTED.iter().find(|(n, _)| *n == name).map(|e| e.1);
        let ((batch_rows, batch_rejects), (stream_rows, stream_rejects)) = match (batch, stream) {
            (Ok(b), Ok(s)) => {
                if expected_error.is_some() {
                    failures.push(format!("{name} runs now: remove it from UNSUPPORTED"));
                }
                (b, s)
            }
            (Err(e), _) | (_, Err(e)) => {
                if !expected_error.is_some_and(|part| e.contains(part)) {
                    failures.push(format!("{name} failed: {e}"));
                }
                continue;
            }
        };
        if batch_rows != stream_rows {
            let only_batch: Vec<_> = batch_rows
                .iter()
                .filter(|r| !stream_rows.contains(r))
                .take(3)
                .collect();
            let only_stream: Vec<_> = stream_rows
                .iter()
                .filter(|r| !batch_rows.contains(r))
                .take(3)
                .collect();
            failures.push(format!(
                "{name}: {} rows in batch, {} in stream; only in batch: {only_batch:?}; only in \
                 stream: {only_stream:?}",
                batch_rows.len(),
                stream_rows.len()
            ));
        }
        if batch_rejects != 0 || stream_rejects != 0 {
            failures.push(format!(
                "{name}: rejects (batch {batch_rejects}, stream {stream_rejects}); in-order \
                 events must lose nothing"
            ));
        }
        checked.push((name, batch_rows.len()));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // Every query that runs produces rows on this event set (so agreement means something).
    let empty: Vec<_> = checked.iter().filter(|(_, n)| *n == 0).collect();
    assert!(empty.is_empty(), "queries with no result at all: {empty:?}");
    // q0–q22 but q6, q10 and q12 (not applicable).
    assert_eq!(checked.len(), 20, "only {checked:?} ran");
}
