//! Golden cases over the embedded log: every windowing and join feature must give the same final
//! answer in micro-batch and stream mode over a log, with kill-and-restore in the middle, as
//! batch and stream mode over files (`crates/runtime/tests/golden.rs`, whose case format this
//! reuses: `expected/<sink>.csv`, `.partitions`, `ordered.txt`, `rejects.jsonl`, `report.json`).
//!
//! For each case folder of `crates/runtime/tests/golden/` that can run over a log:
//!
//! 1. **Topics.** Each source table's input is produced into its own topic (named after the
//!    table, one partition) with the `flowline_log` API, in the order the files source reads it:
//!    files in path order (`.`/`_` names skipped), records in file order (the cases rely on it:
//!    their inputs are in order within the watermark delay). A CSV header and blank lines are
//!    not records. A record keeps its text, except a CSV record whose file does not hold the
//!    declared columns in declared order (a column from a Hive `key=value` folder, as
//!    `tumble_revenue`'s `dt`): the log's CSV format has no header, so the record is rewritten
//!    with the declared columns in order. JSON lines are stored as written (invalid ones too, so
//!    the log source rejects them as the files source does). (`flowline log produce --format
//!    csv` would store each CSV row as a JSON object of strings and skip malformed rows, losing
//!    the CSV options and the rejects the cases expect.)
//! 2. **Pipeline.** The `WITH (...)` of every source table (a table no `INSERT` writes) is
//!    replaced, found by scanning the SQL text (strings, quoted identifiers and comments
//!    respected), by `'connector' = 'log'`, the topic, the same format, the CSV options that
//!    carry over (`csv.field-delimiter`, `csv.quote-character`, `csv.null-literal`,
//!    `timestamp-format`; `path` and `csv.header` have no log meaning) and
//!    `'scan.bounded.mode' = 'latest-offset'`, so the job reads to the end it sees at start, then
//!    ends with the maximum watermark and every window fires. A lookup join's dimension table
//!    (joined `FOR SYSTEM_TIME AS OF`, no watermark) stays a files table, as over logs a files
//!    table can only be. The rewritten text is parsed again
//!    and each table's options are checked to be exactly the intended ones (sinks unchanged:
//!    they stay CSV file sinks).
//! 3. **Micro-batch.** `--mode micro-batch --trigger available-now` with
//!    `SET 'execution.max-records-per-batch' = '3'`: a checkpoint every 3 records per source
//!    (the test checks the number of epochs).
//! 4. **Stream, killed twice.** `--mode stream --batch-size 1 --checkpoint-interval 1ms
//!    --emit-interval 0`, SIGKILLed once the newest checkpoint covers a third of the input
//!    records, restarted with the same command, SIGKILLed again at two thirds, restarted and run
//!    to its end; the last run must have restored a checkpoint at least as new as the newest one
//!    before the last kill.
//!
//!    Over a dozen records a job ends within milliseconds, long before a test could see a
//!    checkpoint and kill it. So the stream pipeline gets four more sources and INSERTs, the
//!    *pacers* (tables `golden_log_*`): bounded topics of a few more records than the largest
//!    input, each row printed with a 70 kB pad to a `print` sink whose standard output is a pipe
//!    (64 KiB on Linux) that the test reads one line at a time. The job reads one record of
//!    every source per round, so it waits for the test four times a round, reads at most about
//!    one record of each real source ahead of its operators (its source-to-operator channel
//!    holds 4 items), and takes a checkpoint nearly every round; the test kills it while it
//!    waits: the kill really happens mid-input, deterministically, whatever the machine's load.
//!    Each kill is asserted (killed by the signal, input records left after its newest
//!    checkpoint, which is newer than the previous kill's); a run that ends by itself fails the
//!    test. The pacers have no watermark and feed only their own INSERTs, so the case's chains
//!    see exactly the case's records. The last run writes standard output to `/dev/null`.
//! 5. **Checks**, after each mode: the final contents of every sink equal `expected/<sink>.csv`
//!    as golden.rs compares them (rows as CSV text, sorted unless listed in `ordered.txt`,
//!    partition columns from folder names, partition folders). Epoch files
//!    `part-<epoch>-<n>.csv` are read in epoch order; an update-mode sink (per the manifest's
//!    `outputs`: `top_n_stream`, `retractions`) is upserted by its key, the last row per key being the answer
//!    (a row whose `_change_type` is `delete` removes its key)
//!    (README, "Output modes"). Rejects: `expected/rejects.jsonl` exactly, each reject once (a
//!    restart cuts the reject bin back to its checkpoint and the replay writes the rest again),
//!    with one difference: a log-sourced reject names the topic's partition folder as its
//!    `file` (`<topic>/0` below the log dir) and the record's offset as its `line`, so the
//!    expected `file`/`line` (a line of an input file) are translated to the offset of the
//!    record produced from that line; `raw` is that record's text (the line itself, unless the
//!    record was rewritten); `reason`, `table` and `detail_contains` are compared as they are.
//!    The counts by reason are those of the reject bin: the manifest's `rejects` counts only
//!    its own run's rejects (compared in micro-batch mode, which is not restarted), while its
//!    `rows_read`/`rows_written` continue from the restored checkpoint, so `report.json`'s
//!    `rows_read` and `rows_written` are compared with the last run's manifest record (the
//!    test's own tables left out).
//!
//! Cases that cannot run over the log are listed in [`SKIPPED`] with the reason, INSERTs left
//! out of a case in [`LEFT_OUT`] (checked to be still refused, so the list cannot go stale);
//! `every_case_folder_is_run_or_skipped` keeps the lists and the folders consistent.
//! `aggregates_parquet` runs with its source's format changed: the log has no Parquet format, so
//! the CSV files the golden runner converts to Parquet (`input/_parquet_src/`) are produced as
//! CSV records, with `'csv.null-literal' = ''` (the runner's Arrow CSV reader reads an empty
//! field as NULL) and the `region` column from their Hive folders.

#[path = "../../runtime/tests/golden_format/mod.rs"]
mod golden_format;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{BufRead, BufReader};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use flowline_core::TableDef;
use flowline_log::{Log, TopicConfig};
use flowline_sql::{PipelineDef, Statement};
use golden_format::*;
use serde_json::Value;

macro_rules! golden_log_cases {
    ($($(#[$attr:meta])* $case:ident),* $(,)?) => {
        $(
            $(#[$attr])*
            #[test]
            fn $case() {
                run_case(stringify!($case));
            }
        )*
        const CASES: &[&str] = &[$(stringify!($case)),*];
    };
}

golden_log_cases!(
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
    nested_and_computed,
    stateless_functions,
    view_two_sinks,
    partitioned_sink,
    rejects_csv_json,
    filter_aggregate,
    set_mode,
    csv_options,
    top_n_stream,
    retractions,
    temporal_joins,
    window_over_window,
);

/// Why a case folder does not run over the log.
#[derive(Debug, Clone, Copy)]
enum Skip {
    /// `expected/stream_error.txt`: the case is batch only. Stream mode refuses it at plan time
    /// (golden.rs checks the refusal), and micro-batches and checkpoints exist only in stream
    /// mode; batch-only queries are not available over log sources at all.
    BatchOnly,
}

/// Golden case folders that do not run over the log, and why.
const SKIPPED: &[(&str, Skip)] = &[
    // ORDER BY ... LIMIT and ORDER BY over a window aggregate run on DataFusion, batch only.
    ("batch_only_join", Skip::BatchOnly),
];

/// An INSERT of a case that does not run over the log: it is left out (with its sink's CREATE
/// TABLE), and the full pipeline must still be refused in stream mode with `refusal`.
struct LeftOut {
    case: &'static str,
    sink: &'static str,
    refusal: &'static str,
}

/// Empty today: every INSERT of every run case runs over the log.
const LEFT_OUT: &[LeftOut] = &[];

/// `execution.max-records-per-batch` of the micro-batch run.
const MICRO_BATCH_RECORDS: usize = 3;
/// The tables the test adds to a pipeline start with this (see the module documentation).
const HARNESS: &str = "golden_log_";
/// Pacer sources of the stream run: each round of the job reads one record of each, and each
/// waits for the test; with as many as the job's source-to-operator channel holds (4 items),
/// the job reads at most about one record of each real source ahead of its operators, so a
/// checkpoint follows about every record.
const PACERS: usize = 4;
/// Longer than a pipe's buffer (64 KiB on Linux): a pacer row waits until the test reads it.
const PACER_PAD: usize = 70_000;
/// How long any one run of `flowline` may take before the test gives up on it.
const RUN_TIMEOUT: Duration = Duration::from_secs(120);

/// Top-N over a whole stream runs in update mode: its changed ranks must reach the sink at every
/// emit interval (`--emit-interval 0`: after every batch; each micro-batch's end), not only at
/// the end of the input.
#[test]
fn top_n_stream_publishes_updates_before_its_input_ends() {
    run_case_checking("top_n_stream", &["top_bids"]);
}

/// HAVING and a GROUP BY over a GROUP BY retract in update mode: their early results, and the
/// deletes of groups that stop matching or empty, reach the sinks before the input ends, and
/// upserting by key with the deletes applied gives the batch answer after every kill.
#[test]
fn retractions_publish_updates_and_deletes_before_the_input_ends() {
    run_case_checking("retractions", &["loyal_customers", "order_count_histogram"]);
}

#[test]
fn every_case_folder_is_run_or_skipped() {
    let on_disk = case_folders();
    let run: BTreeSet<String> = CASES.iter().map(|s| s.to_string()).collect();
    let skipped: BTreeSet<String> = SKIPPED.iter().map(|(c, _)| c.to_string()).collect();
    let both: Vec<_> = run.intersection(&skipped).collect();
    assert!(both.is_empty(), "cases both run and skipped: {both:?}");
    let listed: BTreeSet<String> = run.union(&skipped).cloned().collect();
    assert_eq!(
        on_disk, listed,
        "golden case folders and golden_log_cases!(...) + SKIPPED differ: run a new case over \
         the log, or add it to SKIPPED with the reason"
    );
    // The reasons still hold.
    for (case, skip) in SKIPPED {
        match skip {
            Skip::BatchOnly => assert!(
                golden_dir()
                    .join(case)
                    .join("expected/stream_error.txt")
                    .is_file(),
                "{case} is skipped as batch only but has no expected/stream_error.txt"
            ),
        }
    }
    for case in CASES {
        assert!(
            !golden_dir()
                .join(case)
                .join("expected/stream_error.txt")
                .exists(),
            "{case} is batch only (expected/stream_error.txt): list it in SKIPPED"
        );
    }
    for l in LEFT_OUT {
        assert!(
            CASES.contains(&l.case),
            "LEFT_OUT names {}, which is not run",
            l.case
        );
    }
}

// ------------------------------------------------------------------ the case

/// A source table as a topic: its records and the log table's options.
struct LogTable {
    topic: String,
    options: BTreeMap<String, String>,
    records: Vec<Record>,
}

/// One record produced, at the offset of its index, and where it came from.
struct Record {
    /// The input file, relative to the case folder (for Parquet inputs the `.parquet` file the
    /// golden runner writes), and the 1-based line (row for Parquet) of the record in it.
    file: String,
    line: u64,
    /// The record's text in the file, and as produced.
    raw: String,
    value: String,
}

fn run_case(name: &str) {
    run_case_checking(name, &[]);
}

/// [`run_case`], also checking that the update-mode sinks `early` publish results before
/// their input ends (see [`published_before`]).
fn run_case_checking(name: &str, early: &[&str]) {
    let started = Instant::now();
    let case = golden_dir().join(name);
    let text = fs::read_to_string(case.join("pipeline.sql")).unwrap();
    let def = PipelineDef::parse(&text).unwrap();
    let expected = load_expected(&case);
    let left_out: Vec<&LeftOut> = LEFT_OUT.iter().filter(|l| l.case == name).collect();
    let dropped: Vec<&str> = left_out.iter().map(|l| l.sink).collect();

    let all_sinks: BTreeSet<String> = def
        .statements
        .iter()
        .filter_map(|s| match s {
            Statement::Insert { sink, .. } => Some(sink.clone()),
            _ => None,
        })
        .collect();
    let sinks: BTreeMap<String, SinkSpec> = all_sinks
        .iter()
        .filter(|s| !dropped.contains(&s.as_str()))
        .map(|s| (s.clone(), SinkSpec::of(def.table(s).unwrap())))
        .collect();
    let want_sinks: Vec<&String> = expected
        .sinks
        .keys()
        .filter(|s| !dropped.contains(&s.as_str()))
        .collect();
    assert_eq!(
        sinks.keys().collect::<Vec<_>>(),
        want_sinks,
        "{name}: every sink needs an expected/<sink>.csv and vice versa"
    );

    let tmp = tempfile::tempdir().unwrap();
    let log_dir = tmp.path().join("log");
    let mut sources: BTreeMap<String, LogTable> = BTreeMap::new();
    for table in &def.tables {
        if all_sinks.contains(&table.name) || table.connector() == Some("print") {
            continue;
        }
        // A lookup join's dimension (joined FOR SYSTEM_TIME AS OF, without event time) stays a
        // files table: over logs, files tables are read only as lookup dimensions.
        let dimension = def
            .temporal
            .iter()
            .any(|t| t.table.eq_ignore_ascii_case(&table.name))
            && table.watermark.is_none();
        if dimension {
            continue;
        }
        assert!(
            !table.name.starts_with(HARNESS),
            "{name}: table {} is named like the test's own tables",
            table.name
        );
        let source = log_table(&case, table);
        produce(
            &log_dir,
            &source.topic,
            source.records.iter().map(|r| r.value.as_str()),
        );
        sources.insert(table.name.clone(), source);
    }
    let expected_rejects = log_rejects(&expected.rejects, &sources);
    let ctx = Ctx {
        name,
        sinks: &sinks,
        expected: &expected,
        expected_rejects: &expected_rejects,
        log_dir: &log_dir,
        sources: &sources,
        dropped: &dropped,
        early,
    };

    // What is left out must still be refused, else it should run here.
    for l in &left_out {
        let dir = tmp.path().join("refused");
        copy_case(
            &case,
            &dir,
            &log_pipeline(&text, &def, &sources, &[], "", ""),
        );
        let out = flowline(&dir)
            .args(["explain", "pipeline.sql", "--mode", "stream", "--log-dir"])
            .arg(&log_dir)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains(l.refusal),
            "{name}: INSERT INTO {} is left out because stream mode over logs refuses it \
             (`{}`), but `flowline explain` says:\n{}{err}\nRun it: remove it from LEFT_OUT",
            l.sink,
            l.refusal,
            String::from_utf8_lossy(&out.stdout)
        );
    }

    let mut failures = vec![];
    micro_batch(
        &ctx,
        &text,
        &def,
        &tmp.path().join("micro-batch"),
        &mut failures,
    );
    stream_with_kills(&ctx, &text, &def, &tmp.path().join("stream"), &mut failures);
    eprintln!("{name}: {} ms", started.elapsed().as_millis());
    assert!(
        failures.is_empty(),
        "golden case {name} over the log failed:\n{}",
        failures.join("\n")
    );
}

/// What the runs of one case share.
struct Ctx<'a> {
    name: &'a str,
    sinks: &'a BTreeMap<String, SinkSpec>,
    expected: &'a Expected,
    /// `expected/rejects.jsonl` with `file`/`line` translated to topic partition and offset.
    expected_rejects: &'a [Value],
    log_dir: &'a Path,
    sources: &'a BTreeMap<String, LogTable>,
    /// Sinks left out ([`LEFT_OUT`]).
    dropped: &'a [&'a str],
    /// Update-mode sinks that must publish results before the input ends.
    early: &'a [&'a str],
}

impl Ctx<'_> {
    /// Records per source, summed.
    fn total_records(&self) -> u64 {
        self.sources.values().map(|s| s.records.len() as u64).sum()
    }

    fn max_records(&self) -> usize {
        self.sources
            .values()
            .map(|s| s.records.len())
            .max()
            .unwrap_or(0)
    }
}

fn micro_batch(
    ctx: &Ctx<'_>,
    text: &str,
    def: &PipelineDef,
    dir: &Path,
    failures: &mut Vec<String>,
) {
    let set = format!("SET 'execution.max-records-per-batch' = '{MICRO_BATCH_RECORDS}';\n");
    copy_case(
        &golden_dir().join(ctx.name),
        dir,
        &log_pipeline(text, def, ctx.sources, ctx.dropped, &set, ""),
    );
    let label = "micro-batch, available-now";
    let state = dir.join("state");
    let mut cmd = flowline(dir);
    cmd.args(["run", "pipeline.sql", "--mode", "micro-batch", "--trigger"])
        .args(["available-now", "--quiet", "--state-dir"])
        .arg(&state)
        .arg("--log-dir")
        .arg(ctx.log_dir)
        .stdout(Stdio::null());
    let (status, stderr) = run_to_end(cmd, dir, "stderr.txt");
    if !status.success() {
        failures.push(format!(
            "[{}, {label}] failed ({status}):\n{stderr}",
            ctx.name
        ));
        return;
    }
    let manifest = last_manifest_record(&state);
    let mut out = vec![];
    // Many micro-batches, each one checkpoint: at most MICRO_BATCH_RECORDS records of each
    // source per micro-batch.
    let epochs = manifest["checkpoints"]["epochs"].as_u64().unwrap_or(0);
    let want = ctx.max_records().div_ceil(MICRO_BATCH_RECORDS) as u64;
    if epochs < want {
        out.push(format!(
            "{epochs} checkpoints, expected at least {want} micro-batches of at most \
             {MICRO_BATCH_RECORDS} records per source"
        ));
    }
    eprintln!("[{}, {label}] {epochs} checkpoints", ctx.name);
    // Update mode: each micro-batch ends with its updates.
    let last = manifest["checkpoints"]["last_epoch"].as_u64().unwrap_or(0);
    published_before(ctx, dir, last.saturating_sub(1), &mut out);
    check_run(ctx, dir, &manifest, true, &mut out);
    failures.extend(
        out.into_iter()
            .map(|m| format!("[{}, {label}] {m}", ctx.name)),
    );
}

fn stream_with_kills(
    ctx: &Ctx<'_>,
    text: &str,
    def: &PipelineDef,
    dir: &Path,
    failures: &mut Vec<String>,
) {
    // The pacers outlive every source: the job cannot end while the test holds them back.
    let pacer_records: Vec<String> = (0..ctx.max_records() + 10)
        .map(|n| format!("{{\"n\": {n}}}"))
        .collect();
    let mut pacers = String::new();
    for i in 0..PACERS {
        let (table, sink) = (format!("{HARNESS}pacer_{i}"), format!("{HARNESS}gate_{i}"));
        pacers += &format!(
            "\nCREATE TABLE {table} (n BIGINT) WITH ('connector' = 'log', 'topic' = '{table}', \
             'format' = 'json', 'scan.bounded.mode' = 'latest-offset');\n\
             CREATE TABLE {sink} WITH ('connector' = 'print', 'format' = 'json');\n\
             INSERT INTO {sink} SELECT n, repeat('x', {PACER_PAD}) AS pad FROM {table};\n"
        );
        produce(
            ctx.log_dir,
            &table,
            pacer_records.iter().map(String::as_str),
        );
    }
    copy_case(
        &golden_dir().join(ctx.name),
        dir,
        &log_pipeline(text, def, ctx.sources, ctx.dropped, "", &pacers),
    );

    let label = "stream, batch size 1, killed twice";
    let fail = |failures: &mut Vec<String>, m: String| {
        failures.push(format!("[{}, {label}] {m}", ctx.name));
    };
    let state = dir.join("state");
    let command = || {
        let mut cmd = flowline(dir);
        cmd.args([
            "run",
            "pipeline.sql",
            "--mode",
            "stream",
            "--batch-size",
            "1",
        ])
        .args([
            "--checkpoint-interval",
            "1ms",
            "--emit-interval",
            "0",
            "--quiet",
        ])
        .arg("--state-dir")
        .arg(&state)
        .arg("--log-dir")
        .arg(ctx.log_dir);
        cmd
    };
    let tables: Vec<String> = ctx.sources.keys().cloned().collect();
    let total = ctx.total_records();
    let mut last_kill = None;
    let mut kills = vec![];
    for (i, target) in [total.div_ceil(3), (2 * total).div_ceil(3)]
        .into_iter()
        .enumerate()
    {
        match paced_run_killed_at(command(), dir, &state, &tables, target) {
            Paced::Killed { epoch, consumed } => {
                if consumed >= total {
                    fail(
                        failures,
                        format!(
                            "kill {}: the newest checkpoint (epoch {epoch}) already covers all \
                             {total} input records: the kill did not happen mid-input",
                            i + 1
                        ),
                    );
                }
                if let Some((before, _)) = last_kill {
                    if epoch <= before {
                        fail(
                            failures,
                            format!(
                                "kill {}: newest checkpoint {epoch}, not newer than {before} \
                                 of the run before",
                                i + 1
                            ),
                        );
                    }
                }
                last_kill = Some((epoch, consumed));
                kills.push((epoch, consumed));
            }
            Paced::Ended(why) => {
                fail(
                    failures,
                    format!("run {} ended before it could be killed: {why}", i + 1),
                );
                return;
            }
        }
    }
    let mut cmd = command();
    cmd.stdout(Stdio::null());
    let (status, stderr) = run_to_end(cmd, dir, "stderr.txt");
    if !status.success() {
        fail(
            failures,
            format!("the run after the kills failed ({status}):\n{stderr}"),
        );
        return;
    }
    let manifest = last_manifest_record(&state);
    let restored = manifest["checkpoints"]["restored_from_epoch"].as_u64();
    let (killed_at, _) = last_kill.unwrap();
    if restored.is_none_or(|r| r < killed_at) {
        fail(
            failures,
            format!(
                "the last run restored checkpoint {restored:?}, expected one at least as new as \
                 {killed_at}, the newest before the kill"
            ),
        );
    }
    eprintln!(
        "[{}, {label}] killed after checkpoints (epoch, input records read) {kills:?} of {total} \
         records; the last run resumed from checkpoint {restored:?}",
        ctx.name
    );
    let mut out = vec![];
    // Update mode with --emit-interval 0: the killed runs published results already.
    published_before(ctx, dir, killed_at, &mut out);
    check_run(ctx, dir, &manifest, false, &mut out);
    for m in out {
        fail(failures, m);
    }
}

// ------------------------------------------------------------------ checks

/// Compares a finished run's sinks, rejects and counts with the case's expectations.
fn check_run(ctx: &Ctx<'_>, dir: &Path, manifest: &Value, fresh: bool, out: &mut Vec<String>) {
    if manifest["status"] != "ok" {
        out.push(format!("manifest's last record: {manifest}"));
    }
    let outputs: BTreeMap<&str, &Value> = manifest["outputs"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|o| Some((o["table"].as_str()?, o)))
                .collect()
        })
        .unwrap_or_default();
    let mut updates = false;
    for (sink, spec) in ctx.sinks {
        let want = &ctx.expected.sinks[sink];
        let (rows, partitions) =
            match read_csv_sink(&dir.join(&spec.path), spec, &want.header, SinkFiles::Epochs) {
                Ok(r) => r,
                Err(e) => {
                    out.push(format!("sink {sink}: {e}"));
                    continue;
                }
            };
        let update_key = outputs
            .get(sink.as_str())
            .filter(|o| o["output_mode"] == "update")
            .map(|o| {
                o["key"]
                    .as_array()
                    .map(|k| k.iter().filter_map(Value::as_str).collect::<Vec<_>>())
                    .unwrap_or_default()
            });
        let mut rows: Vec<Vec<String>> = match update_key {
            None => rows.into_iter().map(|r| r.row).collect(),
            Some(key) => {
                updates = true;
                // Upsert in epoch order: the last row of each key is the answer.
                let idx: Vec<usize> =
                    key.iter()
                        .map(|k| {
                            want.header.iter().position(|h| h == k).unwrap_or_else(|| {
                                panic!("upsert key {k} is not a column of {sink}")
                            })
                        })
                        .collect();
                // A sink that receives deletes says which rows are deletes in `_change_type`.
                let change = want.header.iter().position(|h| h == "_change_type");
                let mut table: BTreeMap<Vec<String>, Vec<String>> = BTreeMap::new();
                let written = rows.len();
                for r in rows {
                    let key: Vec<String> = idx.iter().map(|&i| r.row[i].clone()).collect();
                    if change.is_some_and(|c| r.row[c] == "delete") {
                        table.remove(&key);
                    } else {
                        table.insert(key, r.row);
                    }
                }
                eprintln!(
                    "  sink {sink}: update mode keyed by {key:?}, {written} rows upserted to {}",
                    table.len()
                );
                table.into_values().collect()
            }
        };
        let mut want_rows = want.rows.clone();
        if !ctx.expected.ordered.contains(sink) {
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
        if let Some(want_parts) = ctx.expected.partitions.get(sink) {
            if &partitions != want_parts {
                out.push(format!(
                    "sink {sink}: partition folders {partitions:?}, expected {want_parts:?}"
                ));
            }
        }
    }

    // Rejects: each exactly once in the bin, whatever the restarts.
    let bin = manifest["rejects_path"]
        .as_str()
        .map(|p| dir.join(p))
        .unwrap_or_default();
    let actual = read_jsonl(&bin);
    check_rejects(ctx.log_dir, &actual, ctx.expected_rejects, out);
    let by_reason = |rejects: &[Value]| -> BTreeMap<String, u64> {
        let mut m = BTreeMap::new();
        for r in rejects {
            *m.entry(r["reason"].as_str().unwrap_or("?").to_string())
                .or_default() += 1;
        }
        m
    };
    let want_counts = by_reason(&ctx.expected.rejects);
    let counts = |v: &Value| -> BTreeMap<String, u64> {
        v.as_object()
            .map(|o| {
                o.iter()
                    .filter(|(k, _)| !k.starts_with(HARNESS))
                    .map(|(k, v)| (k.clone(), v.as_u64().unwrap_or(0)))
                    .collect()
            })
            .unwrap_or_default()
    };
    if fresh && counts(&manifest["rejects"]) != want_counts {
        out.push(format!(
            "the manifest counts rejects {}, the expected rejects are {want_counts:?}",
            manifest["rejects"]
        ));
    }
    if let Some(want) = ctx.expected.report.get("rejects") {
        if counts(want) != by_reason(&actual) {
            out.push(format!(
                "the reject bin holds {:?}, report.json says {want}",
                by_reason(&actual)
            ));
        }
    }
    // rows_read and rows_written continue from the restored checkpoint: they must be exact.
    if let Some(want) = ctx.expected.report.get("rows_read") {
        if counts(&manifest["rows_read"]) != counts(want) {
            out.push(format!(
                "rows_read is {}, expected {want}",
                manifest["rows_read"]
            ));
        }
    }
    if let Some(want) = ctx.expected.report.get("rows_written") {
        let mut want = counts(want);
        want.retain(|k, _| !ctx.dropped.contains(&k.as_str()));
        if !updates && counts(&manifest["rows_written"]) != want {
            out.push(format!(
                "rows_written is {}, expected {want:?}",
                manifest["rows_written"]
            ));
        }
    }
}

/// Update mode writes results as they change, not only at the end: each sink of `ctx.early`
/// must hold rows of an epoch up to `epoch`, before the one that read the end of the input.
fn published_before(ctx: &Ctx<'_>, dir: &Path, epoch: u64, out: &mut Vec<String>) {
    for sink in ctx.early {
        let spec = &ctx.sinks[*sink];
        let header = &ctx.expected.sinks[*sink].header;
        let early = read_csv_sink(&dir.join(&spec.path), spec, header, SinkFiles::Epochs)
            .map(|(rows, _)| rows.iter().filter(|r| r.epoch <= epoch).count())
            .unwrap_or(0);
        if early == 0 {
            out.push(format!(
                "update-mode sink {sink} published no row up to epoch {epoch}: its results \
                 appeared only when the input ended"
            ));
        }
    }
}

/// `expected/rejects.jsonl` as a log job writes the rejects: `file` is the topic's partition
/// folder (relative to the log dir), `line` the offset of the record made from the file's line,
/// `raw` that record's text.
fn log_rejects(expected: &[Value], sources: &BTreeMap<String, LogTable>) -> Vec<Value> {
    expected
        .iter()
        .map(|want| {
            let mut want = want.clone();
            let (Some(table), Some(file), Some(line)) = (
                want["table"].as_str().map(str::to_string),
                want["file"].as_str().map(str::to_string),
                want["line"].as_u64(),
            ) else {
                return want;
            };
            let Some(source) = sources.get(&table) else {
                return want;
            };
            let (offset, record) = source
                .records
                .iter()
                .enumerate()
                .find(|(_, r)| r.file == file && r.line == line)
                .unwrap_or_else(|| panic!("no record was produced from {file}:{line} ({want})"));
            want["file"] = Value::from(format!("{}/0", source.topic));
            want["line"] = Value::from(offset as u64);
            if let Some(raw) = want.get("raw") {
                assert_eq!(
                    raw, &record.raw,
                    "{file}:{line} is not the expected reject's raw"
                );
                want["raw"] = Value::from(record.value.clone());
            }
            want
        })
        .collect()
}

// ------------------------------------------------------------------ running flowline

fn flowline(dir: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_flowline"));
    c.current_dir(dir)
        .env_remove("FLOWLINE_LOG_DIR")
        .stdin(Stdio::null());
    c
}

/// Runs `cmd` to its end (stderr to `dir/<stderr>`), killing it after [`RUN_TIMEOUT`].
fn run_to_end(mut cmd: Command, dir: &Path, stderr: &str) -> (ExitStatus, String) {
    let path = dir.join(stderr);
    cmd.stderr(fs::File::create(&path).unwrap());
    let mut child = cmd.spawn().unwrap();
    drop(cmd);
    let deadline = Instant::now() + RUN_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("flowline did not finish in {RUN_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    (status, fs::read_to_string(&path).unwrap_or_default())
}

enum Paced {
    /// Killed with SIGKILL; the newest checkpoint then, and how many input records it covers.
    Killed { epoch: u64, consumed: u64 },
    /// The run ended by itself.
    Ended(String),
}

/// Runs a stream job whose pacer prints to a pipe read here one line at a time, and kills it
/// with SIGKILL once its newest checkpoint covers at least `target` records of `tables`.
fn paced_run_killed_at(
    mut cmd: Command,
    dir: &Path,
    state: &Path,
    tables: &[String],
    target: u64,
) -> Paced {
    let (reader, writer) = std::io::pipe().unwrap();
    let stderr = dir.join("stderr.txt");
    cmd.stdout(writer)
        .stderr(fs::File::create(&stderr).unwrap());
    let mut child = cmd.spawn().unwrap();
    drop(cmd); // the parent's copy of the pipe's write end: EOF when the child exits
    let pid = child.id();
    let (done, watchdog) = mpsc::channel::<()>();
    let watchdog = std::thread::spawn(move || {
        if let Err(mpsc::RecvTimeoutError::Timeout) = watchdog.recv_timeout(RUN_TIMEOUT) {
            // Stuck: kill it, which ends the read below.
            let _ = Command::new("sh")
                .args(["-c", &format!("kill -KILL {pid}")])
                .status();
        }
    });
    let mut reader = BufReader::with_capacity(1 << 17, reader);
    let mut line = Vec::with_capacity(PACER_PAD + 100);
    let mut killed = false;
    while reader.read_until(b'\n', &mut line).unwrap() > 0 {
        line.clear();
        // Let the job go on to its next pacer row (and checkpoint on the way).
        std::thread::sleep(Duration::from_millis(1));
        if newest_checkpoint(state, tables).is_some_and(|(_, consumed)| consumed >= target) {
            child.kill().unwrap();
            killed = true;
            break;
        }
    }
    let status = child.wait().unwrap();
    drop(done);
    watchdog.join().unwrap();
    match (killed, status.signal()) {
        (true, Some(9)) => {
            // The job is dead: its newest checkpoint is now final.
            let (epoch, consumed) = newest_checkpoint(state, tables).unwrap();
            Paced::Killed { epoch, consumed }
        }
        (true, _) => Paced::Ended(format!("{status} before the kill")),
        (false, _) => Paced::Ended(format!(
            "{status}:\n{}",
            fs::read_to_string(&stderr).unwrap_or_default()
        )),
    }
}

/// The newest complete checkpoint (its `meta.json` exists: it is written last) and how many
/// records of `tables` it has read.
fn newest_checkpoint(state: &Path, tables: &[String]) -> Option<(u64, u64)> {
    let dir = state.join("checkpoints");
    let mut epochs: Vec<u64> = fs::read_dir(&dir)
        .ok()?
        .filter_map(|e| {
            e.ok()?
                .file_name()
                .to_str()?
                .strip_prefix("chk-")?
                .parse()
                .ok()
        })
        .collect();
    epochs.sort_unstable();
    // Older checkpoints may be pruned while we look: take the newest readable one.
    epochs.into_iter().rev().find_map(|epoch| {
        let path = dir.join(format!("chk-{epoch:010}")).join("meta.json");
        let meta: Value = serde_json::from_str(&fs::read_to_string(path).ok()?).ok()?;
        let consumed = tables
            .iter()
            .map(|t| {
                meta["positions"][t.as_str()]
                    .as_object()
                    .map(|p| p.values().filter_map(|at| at["next"].as_u64()).sum::<u64>())
                    .unwrap_or(0)
            })
            .sum();
        Some((epoch, consumed))
    })
}

fn last_manifest_record(state: &Path) -> Value {
    read_jsonl(&state.join("manifest.jsonl"))
        .pop()
        .unwrap_or(Value::Null)
}

/// A fresh copy of the case folder (without `expected/`) with `pipeline.sql` replaced.
fn copy_case(case: &Path, dir: &Path, pipeline: &str) {
    copy_dir(case, dir);
    fs::remove_dir_all(dir.join("expected")).unwrap();
    fs::write(dir.join("pipeline.sql"), pipeline).unwrap();
}

// ------------------------------------------------------------------ the pipeline over logs

/// The case's pipeline with its source tables read from topics (see the module
/// documentation), the INSERTs into `drop` and their sinks' CREATE TABLE left out, `prefix`
/// before and `suffix` after it. Checked by parsing it again.
fn log_pipeline(
    text: &str,
    def: &PipelineDef,
    sources: &BTreeMap<String, LogTable>,
    drop: &[&str],
    prefix: &str,
    suffix: &str,
) -> String {
    let mut edits = vec![];
    let mut rewritten = BTreeSet::new();
    for stmt in statements(text) {
        if let Some((table, _)) = stmt.created_table(text) {
            if drop.contains(&table.as_str()) {
                edits.push((stmt.bytes.clone(), String::new()));
            } else if let Some(source) = sources.get(&table) {
                let with = stmt
                    .with_options(text)
                    .unwrap_or_else(|| panic!("CREATE TABLE {table} has no WITH (...)"));
                let options: Vec<String> = source
                    .options
                    .iter()
                    .map(|(k, v)| format!("{} = {}", sql_string(k), sql_string(v)))
                    .collect();
                edits.push((with, format!("(\n  {}\n)", options.join(",\n  "))));
                assert!(rewritten.insert(table.clone()), "{table} declared twice");
            }
        } else if let Some(sink) = stmt.insert_target(text) {
            if drop.contains(&sink.as_str()) {
                edits.push((stmt.bytes.clone(), String::new()));
            }
        }
    }
    let missing: Vec<_> = sources.keys().filter(|s| !rewritten.contains(*s)).collect();
    assert!(missing.is_empty(), "no CREATE TABLE found for {missing:?}");
    let body = apply_edits(text, edits);
    let out = format!("{prefix}{body}{suffix}");

    // The rewrite did exactly what it should.
    let parsed = PipelineDef::parse(&out)
        .unwrap_or_else(|e| panic!("the rewritten pipeline does not parse: {e}\n{out}"));
    for table in &def.tables {
        let got = parsed.table(&table.name);
        if drop.contains(&table.name.as_str()) {
            assert!(got.is_none(), "{} was not left out", table.name);
            continue;
        }
        let got = got.unwrap_or_else(|| panic!("{} vanished from\n{out}", table.name));
        let want = sources
            .get(&table.name)
            .map_or(&table.options, |s| &s.options);
        assert_eq!(&got.options, want, "options of {} in\n{out}", table.name);
        assert_eq!(got.columns, table.columns, "columns of {}", table.name);
        assert_eq!(
            got.computed, table.computed,
            "computed columns of {}",
            table.name
        );
        assert_eq!(
            got.watermark, table.watermark,
            "watermark of {}",
            table.name
        );
    }
    let inserts = |d: &PipelineDef| -> Vec<String> {
        d.statements
            .iter()
            .filter_map(|s| match s {
                Statement::Insert { sink, .. } => Some(sink.clone()),
                _ => None,
            })
            .collect()
    };
    let mut want = inserts(def);
    want.retain(|s| !drop.contains(&s.as_str()));
    let mut got = inserts(&parsed);
    got.retain(|s| !s.starts_with(HARNESS));
    assert_eq!(got, want, "INSERTs of the rewritten pipeline");
    out
}

/// A source table as a topic: the log table's options and the records of its input files.
fn log_table(case: &Path, table: &TableDef) -> LogTable {
    let topic = table.name.clone();
    let format = table.option("format").unwrap_or("csv").to_ascii_lowercase();
    let mut options: BTreeMap<String, String> = BTreeMap::new();
    let mut set = |k: &str, v: &str| options.insert(k.to_string(), v.to_string());
    set("connector", "log");
    set("topic", &topic);
    set("scan.bounded.mode", "latest-offset");
    let header = match format.as_str() {
        "csv" => {
            set("format", "csv");
            table
                .option("csv.header")
                .is_none_or(|h| h.eq_ignore_ascii_case("true"))
        }
        "json" => {
            set("format", "json");
            false
        }
        "parquet" => {
            // The golden runner writes the Parquet files from CSV files with a header, read by
            // Arrow's CSV reader, to which an empty field is NULL.
            set("format", "csv");
            set("csv.null-literal", "");
            true
        }
        other => panic!("{}: no log equivalent for format {other}", table.name),
    };
    for (k, v) in &table.options {
        match k.as_str() {
            "connector" => assert_eq!(v, "files", "{}: a source that is not files", table.name),
            // Where the data was, and the header the log's records do not have.
            "path" | "format" | "csv.header" => {}
            "csv.field-delimiter"
            | "csv.quote-character"
            | "csv.null-literal"
            | "timestamp-format" => {
                set(k, v);
            }
            other => panic!(
                "{}: option `{other}` has no log equivalent known to golden_log.rs",
                table.name
            ),
        }
    }
    let delimiter = char_option(&options, "csv.field-delimiter", b',');
    let quote = char_option(&options, "csv.quote-character", b'"');
    let null_literal = options.get("csv.null-literal").cloned();
    let mut records = vec![];
    for file in input_files(case, table, &format) {
        if format == "json" {
            records.extend(json_records(&file, table));
        } else {
            let csv = CsvShape {
                header,
                delimiter,
                quote,
                null_literal: null_literal.as_deref(),
            };
            records.extend(csv_records(&file, table, &csv));
        }
    }
    LogTable {
        topic,
        options,
        records,
    }
}

fn char_option(options: &BTreeMap<String, String>, key: &str, default: u8) -> u8 {
    options.get(key).map_or(default, |v| {
        assert_eq!(v.len(), 1, "{key} must be one byte");
        v.as_bytes()[0]
    })
}

/// An input file of a source table, with its Hive `key=value` folder values.
struct InputFile {
    path: PathBuf,
    /// Relative to the case folder, as rejects name it.
    origin: String,
    hive: Vec<(String, String)>,
}

impl InputFile {
    /// The value a declared column takes from the folders: `Some(None)` for Hive's NULL.
    fn partition_value(&self, column: &str) -> Option<Option<String>> {
        self.hive
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(column))
            .map(|(_, v)| (v != "__HIVE_DEFAULT_PARTITION__").then(|| v.clone()))
    }
}

/// The files a source reads, in the files source's order (by path).
fn input_files(case: &Path, table: &TableDef, format: &str) -> Vec<InputFile> {
    let path = table.option("path").expect("source path");
    let hive = |folder: Option<&Path>| -> Vec<(String, String)> {
        folder
            .into_iter()
            .flat_map(|f| f.components())
            .filter_map(|c| {
                let name = c.as_os_str().to_str()?;
                let (k, v) = name.split_once('=')?;
                (!k.is_empty()).then(|| (percent_decode(k), percent_decode(v)))
            })
            .collect()
    };
    let mut files = vec![];
    if format == "parquet" {
        // `input/_parquet_src/<rel>.csv` becomes `input/<rel>.parquet` in the golden runner.
        let src_root = case.join("input/_parquet_src");
        let mut all = vec![];
        walk_files(&src_root, &mut all);
        for f in all
            .into_iter()
            .filter(|f| f.extension().is_some_and(|e| e == "csv"))
        {
            let rel = f.strip_prefix(&src_root).unwrap();
            let target = Path::new("input").join(rel).with_extension("parquet");
            if let Ok(inside) = target.strip_prefix(path) {
                files.push(InputFile {
                    hive: hive(inside.parent()),
                    origin: target.display().to_string(),
                    path: f,
                });
            }
        }
    } else {
        let root = case.join(path);
        if root.is_file() {
            files.push(InputFile {
                path: root,
                origin: path.to_string(),
                hive: vec![],
            });
        } else {
            let mut all = vec![];
            walk_visible(&root, &mut all);
            for f in all {
                let rel = f.strip_prefix(&root).unwrap();
                files.push(InputFile {
                    hive: hive(rel.parent()),
                    origin: f.strip_prefix(case).unwrap().display().to_string(),
                    path: f,
                });
            }
        }
    }
    files.sort_by(|a, b| a.origin.cmp(&b.origin));
    assert!(!files.is_empty(), "{}: no input files", table.name);
    files
}

/// Every file below `dir`, skipping names that start with `.` or `_` (as the files source).
fn walk_visible(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || name.starts_with('_') {
            continue;
        }
        if entry.file_type().unwrap().is_dir() {
            walk_visible(&entry.path(), out);
        } else {
            out.push(entry.path());
        }
    }
}

/// How a source's CSV files are written.
struct CsvShape<'a> {
    header: bool,
    delimiter: u8,
    quote: u8,
    null_literal: Option<&'a str>,
}

/// Where a declared column's value comes from in a CSV record.
#[derive(Debug, PartialEq)]
enum Cell {
    Field(usize),
    Folder(Option<String>),
}

/// The records of a CSV file as the log's CSV format wants them: no header, the declared
/// columns in declared order. A record keeps its text when the file already has that shape.
fn csv_records(file: &InputFile, table: &TableDef, shape: &CsvShape<'_>) -> Vec<Record> {
    let data = fs::read(&file.path).unwrap();
    let body = data.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(&data);
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .delimiter(shape.delimiter)
        .quote(shape.quote)
        .from_reader(body);
    let mut record = csv::ByteRecord::new();
    let (cells, fields) = if shape.header {
        if !reader.read_byte_record(&mut record).unwrap() {
            return vec![];
        }
        let header: Vec<String> = record
            .iter()
            .map(|h| String::from_utf8_lossy(h).trim().to_string())
            .collect();
        let cells: Vec<Cell> = table
            .columns
            .iter()
            .map(|c| {
                let pos = header
                    .iter()
                    .position(|h| *h == c.name)
                    .or_else(|| header.iter().position(|h| h.eq_ignore_ascii_case(&c.name)));
                match (pos, file.partition_value(&c.name)) {
                    (Some(p), _) => Cell::Field(p),
                    (None, Some(v)) => Cell::Folder(v),
                    (None, None) => panic!("{}: no column {} in {header:?}", file.origin, c.name),
                }
            })
            .collect();
        (cells, header.len())
    } else {
        let mut next = 0;
        let cells: Vec<Cell> = table
            .columns
            .iter()
            .map(|c| match file.partition_value(&c.name) {
                Some(v) => Cell::Folder(v),
                None => {
                    next += 1;
                    Cell::Field(next - 1)
                }
            })
            .collect();
        (cells, next)
    };
    let as_is =
        fields == cells.len() && cells.iter().enumerate().all(|(i, c)| *c == Cell::Field(i));
    let mut out = vec![];
    while reader.read_byte_record(&mut record).unwrap() {
        let position = record.position().unwrap();
        let (mut start, mut line) = (position.byte() as usize, position.line());
        let mut end = (reader.position().byte() as usize).min(body.len());
        while start < end && matches!(body[start], b'\n' | b'\r') {
            line += u64::from(body[start] == b'\n');
            start += 1;
        }
        while end > start && matches!(body[end - 1], b'\n' | b'\r') {
            end -= 1;
        }
        let raw = String::from_utf8(body[start..end].to_vec()).unwrap();
        // A record of the wrong length stays as it is: the log source rejects it too.
        let value = if as_is || record.len() != fields {
            raw.clone()
        } else {
            let mut writer = csv::WriterBuilder::new()
                .delimiter(shape.delimiter)
                .quote(shape.quote)
                .from_writer(vec![]);
            let row: Vec<Vec<u8>> = cells
                .iter()
                .map(|c| match c {
                    Cell::Field(i) => record[*i].to_vec(),
                    Cell::Folder(Some(v)) => v.as_bytes().to_vec(),
                    Cell::Folder(None) => shape
                        .null_literal
                        .unwrap_or_else(|| panic!("{}: a NULL folder value", file.origin))
                        .as_bytes()
                        .to_vec(),
                })
                .collect();
            writer.write_record(&row).unwrap();
            let bytes = writer.into_inner().unwrap();
            String::from_utf8(bytes).unwrap().trim_end().to_string()
        };
        out.push(Record {
            file: file.origin.clone(),
            line,
            raw,
            value,
        });
    }
    out
}

/// The non-blank lines of a JSON lines file, as written; a column from the folders is added to
/// each object that lacks it.
fn json_records(file: &InputFile, table: &TableDef) -> Vec<Record> {
    let text = fs::read_to_string(&file.path).unwrap();
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
    let from_folders: Vec<(String, Option<String>)> = table
        .columns
        .iter()
        .filter_map(|c| Some((c.name.clone(), file.partition_value(&c.name)?)))
        .collect();
    let mut out = vec![];
    for (i, line) in text.split('\n').enumerate() {
        let raw = line.strip_suffix('\r').unwrap_or(line);
        if raw.trim().is_empty() {
            continue;
        }
        let value = match serde_json::from_str::<Value>(raw) {
            Ok(Value::Object(mut object)) if !from_folders.is_empty() => {
                for (k, v) in &from_folders {
                    object
                        .entry(k.clone())
                        .or_insert_with(|| v.clone().map_or(Value::Null, Value::from));
                }
                Value::Object(object).to_string()
            }
            _ => raw.to_string(),
        };
        out.push(Record {
            file: file.origin.clone(),
            line: i as u64 + 1,
            raw: raw.to_string(),
            value,
        });
    }
    out
}

/// Creates `topic` (one partition) and appends `values`, record `i` at offset `i`.
fn produce<'a>(log_dir: &Path, topic: &str, values: impl Iterator<Item = &'a str>) {
    let log = Log::open(log_dir).unwrap();
    log.create_topic(topic, TopicConfig::default()).unwrap();
    let mut producer = log.topic(topic).unwrap().producer().unwrap();
    for (i, value) in values.enumerate() {
        let offset = producer.append_to(0, None, value.as_bytes(), 0).unwrap();
        assert_eq!(offset, i as u64, "offsets of a new topic start at 0");
    }
    producer.flush().unwrap();
}
