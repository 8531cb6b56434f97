//! Corrections (`RunOptions::time_range`): a batch run over the sources' rows in an event-time
//! range replaces exactly that range of its serving table. Over several files a batch run
//! aggregates in parallel (two workers here, whatever the machine's cores), and each worker
//! cuts its rows to the range.

use std::fs;
use std::path::Path;

use arrow::util::display::{ArrayFormatter, FormatOptions};
use flowline_connectors::serving::ServingTable;
use flowline_connectors::TimeRange;
use flowline_runtime::{run_pipeline, Mode, RunOptions};

const HOUR: i64 = 3_600_000;
/// 2026-03-16 00:00 UTC.
const DAY: i64 = 1_773_619_200_000;

fn pipeline(revenue: &str) -> String {
    format!(
        "SET 'parallelism.default' = '2';
         CREATE TABLE orders (store STRING, amount BIGINT, ts TIMESTAMP(3),
           WATERMARK FOR ts AS ts - INTERVAL '1' MINUTE)
         WITH ('connector' = 'files', 'path' = 'input', 'format' = 'csv');
         CREATE TABLE hourly (store STRING, window_start TIMESTAMP(3), revenue BIGINT,
           PRIMARY KEY (store, window_start) NOT ENFORCED)
         WITH ('connector' = 'table', 'path' = 'serving/hourly');
         INSERT INTO hourly
         SELECT store, window_start, {revenue} AS revenue
         FROM TABLE(TUMBLE(TABLE orders, DESCRIPTOR(ts), INTERVAL '1' HOUR))
         GROUP BY store, window_start, window_end;\n"
    )
}

/// (store, window start as text) → revenue.
fn served(dir: &Path) -> Vec<(String, String, i64)> {
    let rows = ServingTable::at(dir.join("serving/hourly"))
        .read_rows(None)
        .unwrap()
        .expect("a published version");
    let mut out = vec![];
    for b in &rows.batches {
        let text = |c: usize, r: usize| {
            ArrayFormatter::try_new(b.column(c).as_ref(), &FormatOptions::default())
                .unwrap()
                .value(r)
                .to_string()
        };
        for r in 0..b.num_rows() {
            out.push((text(0, r), text(1, r), text(2, r).parse().unwrap()));
        }
    }
    out.sort();
    out
}

#[tokio::test]
async fn corrections_over_several_files_replace_only_their_range() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("input");
    fs::create_dir_all(&input).unwrap();
    // Four files, each with rows in every one of six hours, so that every worker's share
    // holds rows inside and outside the range.
    for f in 0..4 {
        let mut csv = String::from("store,amount,ts\n");
        for h in 0..6 {
            for (i, store) in ["s1", "s2"].iter().enumerate() {
                let t = chrono::DateTime::from_timestamp_millis(
                    DAY + h * HOUR + (f * 7 + i as i64) * 60_000,
                )
                .unwrap();
                csv.push_str(&format!(
                    "{store},{},{}\n",
                    f + 1,
                    t.format("%Y-%m-%d %H:%M:%S")
                ));
            }
        }
        fs::write(input.join(format!("part-{f}.csv")), csv).unwrap();
    }
    let path = dir.path().join("pipeline.sql");
    fs::write(&path, pipeline("SUM(amount)")).unwrap();
    let batch = || RunOptions {
        mode: Some(Mode::Batch),
        state_dir: Some(dir.path().join("state")),
        ..Default::default()
    };
    run_pipeline(&path, batch()).await.unwrap();
    let before = served(dir.path());
    assert_eq!(before.len(), 12, "{before:?}");
    assert!(before.iter().all(|r| r.2 == 1 + 2 + 3 + 4), "{before:?}");

    // The logic changes (revenue doubled); hours 2 and 3 are rerun with it.
    fs::write(&path, pipeline("SUM(amount) * 2")).unwrap();
    let range = TimeRange {
        from_ms: DAY + 2 * HOUR,
        to_ms: DAY + 4 * HOUR,
        column: None,
    };
    let report = run_pipeline(
        &path,
        RunOptions {
            time_range: Some(range),
            ..batch()
        },
    )
    .await
    .unwrap();
    // Only the range's rows were read: 2 hours × 2 stores × 4 files.
    assert_eq!(report.rows_read.get("orders"), Some(&16), "{report:?}");
    let after = served(dir.path());
    assert_eq!(after.len(), 12, "{after:?}");
    for (store, start, revenue) in &after {
        let in_range = start.contains("T02:") || start.contains("T03:");
        let expected = if in_range { 20 } else { 10 };
        assert_eq!(*revenue, expected, "{store} {start}: {after:?}");
    }
}

#[tokio::test]
async fn corrections_refuse_a_sink_that_is_not_a_serving_table() {
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir_all(dir.path().join("input")).unwrap();
    fs::write(
        dir.path().join("input/part-0.csv"),
        "store,amount,ts\ns1,1,2026-03-16 00:00:00\n",
    )
    .unwrap();
    let path = dir.path().join("pipeline.sql");
    let text = pipeline("SUM(amount)").replace(
        "WITH ('connector' = 'table', 'path' = 'serving/hourly')",
        "WITH ('connector' = 'files', 'path' = 'out', 'format' = 'csv')",
    );
    fs::write(&path, text).unwrap();
    let err = run_pipeline(
        &path,
        RunOptions {
            mode: Some(Mode::Batch),
            state_dir: Some(dir.path().join("state")),
            time_range: Some(TimeRange {
                from_ms: DAY,
                to_ms: DAY + HOUR,
                column: None,
            }),
            ..Default::default()
        },
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("sink `hourly` is a 'files' table")
            && err.contains("('connector' = 'table')")
            && err.contains("without --from/--to"),
        "{err}"
    );
    // Refused before data moved: no output.
    assert!(!dir.path().join("out").exists());
}
