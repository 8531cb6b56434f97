//! Golden tests: every folder under `tests/golden/` is a pipeline with its input and the output
//! it must produce.
//!
//! A case folder holds:
//!
//! * `pipeline.sql`: the pipeline. Relative paths resolve against the case folder.
//! * `input/`: hand-written CSV / JSON lines inputs. CSV files under `input/_parquet_src/<rel>`
//!   are converted by the runner to Parquet files at `input/<rel>.parquet`, typed with the
//!   declared schema of the Parquet table whose path holds them (folders starting with `_` are
//!   never read by a source).
//! * `expected/<sink>.csv`: the rows every file sink must hold, with a header. For a
//!   partitioned sink the partition columns are columns of the expected file (their value is
//!   taken from the `key=value` folders; Hive's default partition is NULL, written as an empty
//!   field).
//! * optional `expected/<sink>.partitions`: the exact partition folders of a partitioned sink.
//! * optional `expected/ordered.txt`: sinks whose rows are compared in file order instead of
//!   sorted.
//! * optional `expected/rejects.jsonl`: one JSON object per expected reject; every key is
//!   compared with the reject's field (`file` relative to the case folder), except
//!   `detail_contains`, a substring of the reject's detail. Without this file a case must
//!   reject nothing.
//! * optional `expected/report.json`: `rows_read`, `rows_written` and `rejects` (exact maps),
//!   `manifest_path` / `rejects_path` (relative to the case folder), and for the run without a
//!   mode on the command line `default_mode` and `default_batch_size`.
//! * optional `expected/stream_error.txt`: the case is batch only. Stream mode must refuse it
//!   at plan time with `Error::Unsupported` whose message contains every line of the file, and
//!   leave no output folder and no state behind.
//!
//! The format is read by `golden_format/`, which `crates/cli/tests/golden_log.rs` shares to run
//! the same cases over the embedded log (micro-batch, and stream with kills and restores).
//!
//! Each case runs five times, each in a fresh copy of its folder: batch mode, stream mode with
//! batch sizes 1, 7 and 1000, and with no mode given (the file's `SET`, else batch). Every run
//! must produce exactly the expected rows.

mod common;
mod golden_format;

use golden_format::{
    case_folders, check_rejects, copy_dir, golden_dir, load_expected, read_csv_sink, read_jsonl,
    render, row_diff, walk_files, Expected, SinkFiles, SinkSpec,
};

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;
use std::sync::Arc;

use arrow::datatypes::{Field, Schema};
use flowline_core::Error;
use flowline_runtime::{run_pipeline, Mode, RunOptions, RunReport};
use flowline_sql::{PipelineDef, Statement};
use serde_json::Value;

macro_rules! golden_cases {
    ($($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                run_case(stringify!($case)).await;
            }
        )*
        const CASES: &[&str] = &[$(stringify!($case)),*];
    };
}

golden_cases!(
    tumble_revenue,
    hop_windows,
    cumulate_windows,
    session_windows,
    window_top_n,
    over_velocity,
    stream_joins,
    deduplicate,
    deduplicate_ttl,
    versioned_view,
    over_ttl,
    aggregates_parquet,
    stateless_functions,
    view_two_sinks,
    partitioned_sink,
    rejects_csv_json,
    filter_aggregate,
    set_mode,
    batch_only_join,
    csv_options,
    nested_and_computed,
    top_n_stream,
    retractions,
    temporal_joins,
    window_over_window,
);

#[test]
fn every_case_folder_has_a_test() {
    let on_disk = case_folders();
    let listed: BTreeSet<String> = CASES.iter().map(|s| s.to_string()).collect();
    assert_eq!(
        on_disk, listed,
        "golden case folders and golden_cases!(...) differ"
    );
}

// ------------------------------------------------------------------ expectations

// ------------------------------------------------------------------ the runner

struct Run {
    label: String,
    mode: Option<Mode>,
    batch_size: Option<usize>,
}

fn runs() -> Vec<Run> {
    let mut runs = vec![Run {
        label: "batch".into(),
        mode: Some(Mode::Batch),
        batch_size: None,
    }];
    for n in [1, 7, 1000] {
        runs.push(Run {
            label: format!("stream, batch size {n}"),
            mode: Some(Mode::Stream),
            batch_size: Some(n),
        });
    }
    runs.push(Run {
        label: "no mode given".into(),
        mode: None,
        batch_size: None,
    });
    runs
}

fn sink_specs(def: &PipelineDef) -> BTreeMap<String, SinkSpec> {
    let mut specs = BTreeMap::new();
    for stmt in &def.statements {
        let Statement::Insert { sink, .. } = stmt else {
            continue;
        };
        let table = def.table(sink).expect("sink declared");
        specs.insert(table.name.clone(), SinkSpec::of(table));
    }
    specs
}

async fn run_case(name: &str) {
    let case = golden_dir().join(name);
    let text = fs::read_to_string(case.join("pipeline.sql")).unwrap();
    let def = PipelineDef::parse(&text).unwrap();
    let sinks = sink_specs(&def);
    let expected = load_expected(&case);
    assert_eq!(
        sinks.keys().collect::<Vec<_>>(),
        expected.sinks.keys().collect::<Vec<_>>(),
        "{name}: every sink needs an expected/<sink>.csv and vice versa"
    );

    let mut failures: Vec<String> = vec![];
    for run in runs() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join(name);
        copy_dir(&case, &dir);
        fs::remove_dir_all(dir.join("expected")).unwrap();
        write_parquet_inputs(&dir, &def);
        let before = common::list_tree(&dir);
        let options = RunOptions {
            mode: run.mode,
            batch_size: run.batch_size,
            ..Default::default()
        };
        let result = run_pipeline(&dir.join("pipeline.sql"), options).await;
        let mut fail = |m: String| failures.push(format!("[{name}, {}] {m}", run.label));

        if let (Some(needles), Some(Mode::Stream)) = (&expected.stream_error, run.mode) {
            match result {
                Err(e @ Error::Unsupported { .. }) => {
                    let msg = e.to_string();
                    for needle in needles {
                        if !msg.contains(needle.as_str()) {
                            fail(format!("the refusal `{msg}` does not mention `{needle}`"));
                        }
                    }
                }
                Err(other) => fail(format!("expected Error::Unsupported, got {other:?}")),
                Ok(_) => fail("stream mode ran a batch-only pipeline".into()),
            }
            let after = common::list_tree(&dir);
            if after != before {
                let created: Vec<_> = after.difference(&before).collect();
                fail(format!("the refused run created files: {created:?}"));
            }
            continue;
        }

        let report = match result {
            Ok(r) => r,
            Err(e) => {
                fail(format!("run failed: {e}"));
                continue;
            }
        };
        let mut messages = vec![];
        check_run(&dir, &run, &report, &sinks, &expected, &mut messages);
        for m in messages {
            fail(m);
        }
    }
    assert!(
        failures.is_empty(),
        "golden case {name} failed:\n{}",
        failures.join("\n")
    );
}

fn check_run(
    dir: &Path,
    run: &Run,
    report: &RunReport,
    sinks: &BTreeMap<String, SinkSpec>,
    expected: &Expected,
    out: &mut Vec<String>,
) {
    if let Some(mode) = run.mode {
        if report.mode != mode {
            out.push(format!("ran in {} mode, asked for {mode}", report.mode));
        }
    }
    if let Some(n) = run.batch_size {
        if report.record["batch_size"] != n {
            out.push(format!(
                "ran with batch size {}, asked for {n}",
                report.record["batch_size"]
            ));
        }
    }
    // Each source is read once: it is listed once among the run's inputs.
    let inputs: Vec<&str> = report.record["inputs"]
        .as_array()
        .map(|a| a.iter().filter_map(|i| i["table"].as_str()).collect())
        .unwrap_or_default();
    let unique: BTreeSet<&str> = inputs.iter().copied().collect();
    if unique.len() != inputs.len() {
        out.push(format!(
            "a source is listed twice among the inputs: {inputs:?}"
        ));
    }
    // Output rows.
    for (sink, spec) in sinks {
        let want = &expected.sinks[sink];
        let root = dir.join(&spec.path);
        match read_sink(&root, spec, &want.header) {
            Err(e) => out.push(format!("sink {sink}: {e}")),
            Ok((mut rows, partitions)) => {
                let mut want_rows = want.rows.clone();
                if !expected.ordered.contains(sink) {
                    rows.sort();
                    want_rows.sort();
                }
                if rows != want_rows {
                    out.push(format!(
                        "sink {sink}: rows differ\n  expected:\n{}\n  actual:\n{}\n{}",
                        render(&want.header, &want_rows),
                        render(&want.header, &rows),
                        row_diff(&want_rows, &rows)
                    ));
                }
                if let Some(want_parts) = expected.partitions.get(sink) {
                    if &partitions != want_parts {
                        out.push(format!(
                            "sink {sink}: partition folders {partitions:?}, expected {want_parts:?}"
                        ));
                    }
                }
            }
        }
    }

    // Rejects.
    let actual_rejects = read_jsonl(&report.rejects_path);
    check_rejects(dir, &actual_rejects, &expected.rejects, out);
    let counts_from_spec = {
        let mut m: BTreeMap<String, u64> = BTreeMap::new();
        for r in &expected.rejects {
            *m.entry(r["reason"].as_str().unwrap().to_string())
                .or_default() += 1;
        }
        m
    };
    if report.rejects != counts_from_spec {
        out.push(format!(
            "report.rejects is {:?}, the expected rejects count {:?}",
            report.rejects, counts_from_spec
        ));
    }

    // The report.
    let r = &expected.report;
    let map = |v: &Value| -> BTreeMap<String, u64> {
        v.as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_u64().unwrap()))
            .collect()
    };
    for (key, actual) in [
        ("rows_read", &report.rows_read),
        ("rows_written", &report.rows_written),
        ("rejects", &report.rejects),
    ] {
        if let Some(want) = r.get(key) {
            if &map(want) != actual {
                out.push(format!("report.{key} is {actual:?}, expected {want}"));
            }
        }
    }
    for (key, actual) in [
        ("manifest_path", &report.manifest_path),
        ("rejects_path", &report.rejects_path),
    ] {
        if let Some(want) = r.get(key).and_then(Value::as_str) {
            if actual != &dir.join(want) {
                out.push(format!(
                    "report.{key} is {}, expected {}",
                    actual.display(),
                    dir.join(want).display()
                ));
            }
        }
    }
    if run.mode.is_none() {
        let want_mode = r
            .get("default_mode")
            .and_then(Value::as_str)
            .unwrap_or("batch");
        if report.mode.to_string() != want_mode {
            out.push(format!(
                "without --mode the run was {}, expected {want_mode}",
                report.mode
            ));
        }
        if let Some(n) = r.get("default_batch_size") {
            if &report.record["batch_size"] != n {
                out.push(format!(
                    "without --batch-size the batch size was {}, expected {n}",
                    report.record["batch_size"]
                ));
            }
        }
    }
    // The manifest records this run.
    let manifest = read_jsonl(&report.manifest_path);
    match manifest.last() {
        Some(last) if last["run_id"] == report.run_id.as_str() && last["status"] == "ok" => {}
        other => out.push(format!("manifest's last record is {other:?}")),
    }
}

// ------------------------------------------------------------------ reading outputs

/// Reads a batch run's CSV files under a sink's folder: the rows in the order of `header` and
/// the partition folders found.
fn read_sink(
    root: &Path,
    spec: &SinkSpec,
    header: &[String],
) -> Result<(Vec<Vec<String>>, BTreeSet<String>), String> {
    let (rows, partitions) = read_csv_sink(root, spec, header, SinkFiles::Run)?;
    Ok((rows.into_iter().map(|r| r.row).collect(), partitions))
}

// ------------------------------------------------------------------ files

/// Converts `input/_parquet_src/<rel>.csv` to `input/<rel>.parquet`, typed with the declared
/// schema of the Parquet source table whose path holds the target.
fn write_parquet_inputs(dir: &Path, def: &PipelineDef) {
    let src_root = dir.join("input/_parquet_src");
    if !src_root.is_dir() {
        return;
    }
    let mut files = vec![];
    walk_files(&src_root, &mut files);
    for file in files
        .iter()
        .filter(|f| f.extension().is_some_and(|e| e == "csv"))
    {
        let rel = file.strip_prefix(&src_root).unwrap();
        let target = dir.join("input").join(rel).with_extension("parquet");
        let table = def
            .tables
            .iter()
            .find(|t| {
                t.option("format") == Some("parquet")
                    && t.option("path")
                        .is_some_and(|p| target.starts_with(dir.join(p)))
            })
            .unwrap_or_else(|| panic!("no parquet table reads {}", target.display()));
        let text = fs::read_to_string(file).unwrap();
        let header: Vec<&str> = text.lines().next().unwrap().split(',').collect();
        let schema = Arc::new(Schema::new(
            header
                .iter()
                .map(|h| {
                    let c = table
                        .columns
                        .iter()
                        .find(|c| c.name == *h)
                        .unwrap_or_else(|| panic!("{h} is not a column of {}", table.name));
                    Field::new(&c.name, c.data_type.clone(), true)
                })
                .collect::<Vec<_>>(),
        ));
        let reader = arrow::csv::ReaderBuilder::new(schema.clone())
            .with_header(true)
            .build(fs::File::open(file).unwrap())
            .unwrap();
        fs::create_dir_all(target.parent().unwrap()).unwrap();
        let mut writer =
            parquet::arrow::ArrowWriter::try_new(fs::File::create(&target).unwrap(), schema, None)
                .unwrap();
        for batch in reader {
            writer.write(&batch.unwrap()).unwrap();
        }
        writer.close().unwrap();
    }
}
