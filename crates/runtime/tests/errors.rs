//! Errors a user makes in a pipeline file: each must be reported before any data moves, with a
//! message that names the problem and where it is (table, option, column, line), and must leave
//! the pipeline's folder exactly as it was: no output folder, no state folder, no rejects.
//!
//! Expected line and column numbers are computed from the pipeline text itself (`pos_of`), not
//! taken from Flowline.

mod common;

use std::fs;

use flowline_core::Error;
use flowline_runtime::{run_pipeline, Mode, OpenedPipeline, RunOptions};

const ORDERS_CSV: &str = "order_id,store_id,amount,ordered_at
1,s1,10.00,2026-03-16 10:00:00
2,s2,20.00,2026-03-16 10:05:00
3,s1,5.00,2026-03-16 11:00:00
";

const STORES_JSONL: &str = r#"{"store_id": "s1", "city": "Lyon"}
{"store_id": "s2", "city": "Paris"}
"#;

/// A valid source table; tests append sinks and inserts, or replace parts of it.
const ORDERS: &str = "CREATE TABLE orders (
  order_id   BIGINT,
  store_id   STRING,
  amount     DECIMAL(10, 2),
  ordered_at TIMESTAMP(3),
  WATERMARK FOR ordered_at AS ordered_at - INTERVAL '1' MINUTE
) WITH (
  'connector' = 'files',
  'path' = 'input/orders.csv',
  'format' = 'csv'
);
";

const STORES: &str = "CREATE TABLE stores (
  store_id STRING,
  city     STRING
) WITH (
  'connector' = 'files',
  'path' = 'input/stores.jsonl',
  'format' = 'json'
);
";

const OUT: &str = "CREATE TABLE out WITH (
  'connector' = 'files',
  'path' = 'out/result',
  'format' = 'csv'
);
";

/// 1-based line and column of the first occurrence of `needle` in `text`.
fn pos_of(text: &str, needle: &str) -> (u64, u64) {
    let at = text
        .find(needle)
        .unwrap_or_else(|| panic!("`{needle}` is not in the pipeline"));
    let before = &text[..at];
    let line = before.matches('\n').count() as u64 + 1;
    let column = before.rsplit('\n').next().unwrap().chars().count() as u64 + 1;
    (line, column)
}

fn line_of(text: &str, needle: &str) -> u64 {
    pos_of(text, needle).0
}

/// A pipeline folder with `input/orders.csv`, `input/stores.jsonl` and `pipeline.sql`.
fn project(pipeline: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir_all(dir.path().join("input")).unwrap();
    fs::write(dir.path().join("input/orders.csv"), ORDERS_CSV).unwrap();
    fs::write(dir.path().join("input/stores.jsonl"), STORES_JSONL).unwrap();
    fs::write(dir.path().join("pipeline.sql"), pipeline).unwrap();
    dir
}

/// Runs `pipeline` in `mode`; it must fail, and leave its folder untouched.
async fn fails(pipeline: &str, mode: Mode) -> Error {
    let options = RunOptions {
        mode: Some(mode),
        ..Default::default()
    };
    fails_with(pipeline, options).await
}

/// Runs `pipeline` with `options`; it must fail, and leave its folder untouched.
async fn fails_with(pipeline: &str, options: RunOptions) -> Error {
    let dir = project(pipeline);
    let before = common::list_tree(dir.path());
    let result = run_pipeline(&dir.path().join("pipeline.sql"), options).await;
    let after = common::list_tree(dir.path());
    let err = match result {
        Ok(report) => panic!("the pipeline ran ({:?}):\n{pipeline}", report.rows_written),
        Err(e) => e,
    };
    eprintln!("error, as reported: {err}");
    assert_eq!(
        after,
        before,
        "the failed run ({err}) changed the pipeline folder: created {:?}",
        after.difference(&before).collect::<Vec<_>>()
    );
    assert!(
        !dir.path().join("out").exists(),
        "an output folder was created"
    );
    err
}

fn assert_mentions(err: &Error, needles: &[&str]) {
    let msg = err.to_string();
    for needle in needles {
        assert!(
            msg.contains(needle),
            "the error does not mention `{needle}`:\n{msg}"
        );
    }
}

// ------------------------------------------------------------------ unknown names

#[tokio::test]
async fn unknown_table_in_from() {
    let p = format!("{ORDERS}{OUT}INSERT INTO out\nSELECT order_id, amount FROM ordrs;\n");
    let err = fails(&p, Mode::Batch).await;
    assert!(matches!(err, Error::Plan(_)), "{err:?}");
    let line = line_of(&p, "INSERT INTO out");
    assert_mentions(&err, &["ordrs", &format!("line {line}")]);
}

#[tokio::test]
async fn unknown_table_in_insert_into() {
    let p = format!("{ORDERS}{OUT}INSERT INTO outt\nSELECT order_id, amount FROM orders;\n");
    let err = fails(&p, Mode::Batch).await;
    assert!(matches!(err, Error::Plan(_)), "{err:?}");
    let line = line_of(&p, "INSERT INTO outt");
    assert_mentions(&err, &["`outt`", &format!("line {line}"), "unknown table"]);
}

#[tokio::test]
async fn unknown_column() {
    let p = format!("{ORDERS}{OUT}INSERT INTO out\nSELECT order_id, amout FROM orders;\n");
    let err = fails(&p, Mode::Batch).await;
    assert!(matches!(err, Error::Plan(_)), "{err:?}");
    let line = line_of(&p, "INSERT INTO out");
    assert_mentions(&err, &["amout", &format!("line {line}")]);
}

#[tokio::test]
async fn unknown_column_in_window_descriptor() {
    let p = format!(
        "{ORDERS}{OUT}INSERT INTO out\nSELECT window_start, COUNT(*) AS n\n\
         FROM TABLE(TUMBLE(TABLE orders, DESCRIPTOR(order_time), INTERVAL '1' HOUR))\n\
         GROUP BY window_start, window_end;\n"
    );
    let err = fails(&p, Mode::Stream).await;
    let line = line_of(&p, "FROM TABLE(TUMBLE");
    assert_mentions(&err, &["order_time", "orders", &format!("line {line}")]);
}

// ------------------------------------------------------------------ WITH options

#[tokio::test]
async fn unknown_connector() {
    let source = ORDERS.replace("'connector' = 'files'", "'connector' = 'kafka'");
    let p = format!("{source}{OUT}INSERT INTO out SELECT order_id FROM orders;\n");
    let err = fails(&p, Mode::Batch).await;
    assert!(
        matches!(&err, Error::Option { table, .. } if table == "orders"),
        "{err:?}"
    );
    assert_mentions(&err, &["`orders`", "'kafka'", "connector"]);

    let sink = OUT.replace("'connector' = 'files'", "'connector' = 'jdbc'");
    let p = format!("{ORDERS}{sink}INSERT INTO out SELECT order_id FROM orders;\n");
    let err = fails(&p, Mode::Stream).await;
    assert!(
        matches!(&err, Error::Option { table, .. } if table == "out"),
        "{err:?}"
    );
    assert_mentions(&err, &["`out`", "'jdbc'", "connector"]);
}

#[tokio::test]
async fn unknown_option() {
    let source = ORDERS.replace(
        "'format' = 'csv'",
        "'format' = 'csv',\n  'csv.delimiter' = ';'",
    );
    let p = format!("{source}{OUT}INSERT INTO out SELECT order_id FROM orders;\n");
    let err = fails(&p, Mode::Batch).await;
    assert!(
        matches!(&err, Error::Option { table, .. } if table == "orders"),
        "{err:?}"
    );
    assert_mentions(&err, &["`orders`", "unknown option", "csv.delimiter"]);

    let sink = OUT.replace(
        "'format' = 'csv'",
        "'format' = 'csv',\n  'sink.rolling-policy.file-size' = '1MB'",
    );
    let p = format!("{ORDERS}{sink}INSERT INTO out SELECT order_id FROM orders;\n");
    let err = fails(&p, Mode::Stream).await;
    assert!(
        matches!(&err, Error::Option { table, .. } if table == "out"),
        "{err:?}"
    );
    assert_mentions(
        &err,
        &["`out`", "unknown option", "sink.rolling-policy.file-size"],
    );
}

#[tokio::test]
async fn unknown_format() {
    let source = ORDERS.replace("'format' = 'csv'", "'format' = 'avro'");
    let p = format!("{source}{OUT}INSERT INTO out SELECT order_id FROM orders;\n");
    let err = fails(&p, Mode::Batch).await;
    assert!(
        matches!(&err, Error::Option { table, .. } if table == "orders"),
        "{err:?}"
    );
    assert_mentions(&err, &["`orders`", "'avro'", "format"]);

    let sink = OUT.replace("'format' = 'csv'", "'format' = 'xlsx'");
    let p = format!("{ORDERS}{sink}INSERT INTO out SELECT order_id FROM orders;\n");
    let err = fails(&p, Mode::Batch).await;
    assert!(
        matches!(&err, Error::Option { table, .. } if table == "out"),
        "{err:?}"
    );
    assert_mentions(&err, &["`out`", "'xlsx'", "format"]);
}

// ------------------------------------------------------------------ source paths

#[tokio::test]
async fn missing_source_path() {
    let source = ORDERS.replace("input/orders.csv", "input/no-such-orders.csv");
    let p = format!("{source}{OUT}INSERT INTO out SELECT order_id FROM orders;\n");
    let err = fails(&p, Mode::Batch).await;
    assert!(matches!(err, Error::Io { .. }), "{err:?}");
    assert_mentions(&err, &["input/no-such-orders.csv"]);
}

#[tokio::test]
async fn unreadable_source_path() {
    // A path that goes through a file cannot be listed.
    let source = ORDERS.replace("input/orders.csv", "input/orders.csv/part-0.csv");
    let p = format!("{source}{OUT}INSERT INTO out SELECT order_id FROM orders;\n");
    let err = fails(&p, Mode::Stream).await;
    assert!(matches!(err, Error::Io { .. }), "{err:?}");
    assert_mentions(&err, &["input/orders.csv/part-0.csv"]);
}

#[tokio::test]
async fn undecodable_parquet_source_writes_no_output() {
    // A file that is not Parquet at all can only be found out by reading it; the run must
    // still fail without publishing or creating any output.
    let dir = project("");
    fs::write(
        dir.path().join("input/orders.parquet"),
        "this is not parquet\n",
    )
    .unwrap();
    let source = ORDERS
        .replace("input/orders.csv", "input/orders.parquet")
        .replace("'format' = 'csv'", "'format' = 'parquet'");
    let p = format!("{source}{OUT}INSERT INTO out SELECT order_id FROM orders;\n");
    fs::write(dir.path().join("pipeline.sql"), &p).unwrap();
    let options = RunOptions {
        mode: Some(Mode::Batch),
        ..Default::default()
    };
    let err = run_pipeline(&dir.path().join("pipeline.sql"), options)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Input { .. }), "{err:?}");
    assert_mentions(&err, &["orders.parquet"]);
    assert!(
        !dir.path().join("out/result").exists(),
        "a failed run left the output folder out/result behind: {:?}",
        common::list_tree(dir.path())
    );
}

// ------------------------------------------------------------------ syntax

#[tokio::test]
async fn syntax_error_reports_line_and_column() {
    // A misspelled keyword at the start of a line.
    let p = format!("{ORDERS}{OUT}INSERT INTO out\nSELEC order_id FROM orders;\n");
    let err = fails(&p, Mode::Batch).await;
    let (line, column) = pos_of(&p, "SELEC ");
    assert!(
        matches!(err, Error::Syntax { line: l, column: c, .. } if l == line && c == column),
        "expected a syntax error at line {line}, column {column}: {err:?}"
    );
    assert_mentions(&err, &[&format!("line {line}, column {column}"), "SELEC"]);

    // An operator missing its operand, in the middle of a line.
    let p =
        format!("{ORDERS}{OUT}INSERT INTO out\nSELECT order_id FROM orders WHERE amount > > 5;\n");
    let err = fails(&p, Mode::Stream).await;
    let (line, column) = pos_of(&p, "> 5");
    assert!(
        matches!(err, Error::Syntax { line: l, column: c, .. } if l == line && c == column),
        "expected a syntax error at line {line}, column {column}: {err:?}"
    );
    assert_mentions(&err, &[&format!("line {line}, column {column}")]);

    // A missing comma between two column definitions of a CREATE TABLE.
    let source = ORDERS.replace("amount     DECIMAL(10, 2),", "amount     DECIMAL(10, 2)");
    let p = format!("{source}{OUT}INSERT INTO out SELECT order_id FROM orders;\n");
    let err = fails(&p, Mode::Batch).await;
    let (line, column) = pos_of(&p, "ordered_at TIMESTAMP");
    assert!(
        matches!(err, Error::Syntax { line: l, column: c, .. } if l == line && c == column),
        "expected a syntax error at line {line}, column {column}: {err:?}"
    );
    assert_mentions(
        &err,
        &[&format!("line {line}, column {column}"), "ordered_at"],
    );
}

// ------------------------------------------------------------------ DDL and SET

#[tokio::test]
async fn bad_watermark_column() {
    let source = ORDERS.replace(
        "WATERMARK FOR ordered_at AS ordered_at",
        "WATERMARK FOR order_time AS order_time",
    );
    let p = format!("{source}{OUT}INSERT INTO out SELECT order_id FROM orders;\n");
    let err = fails(&p, Mode::Stream).await;
    let line = line_of(&p, "CREATE TABLE orders");
    assert_mentions(
        &err,
        &[
            "`orders`",
            "WATERMARK",
            "order_time",
            "no such column",
            &format!("line {line}"),
        ],
    );

    // A watermark on a column that is not a timestamp.
    let source = ORDERS.replace(
        "WATERMARK FOR ordered_at AS ordered_at - INTERVAL '1' MINUTE",
        "WATERMARK FOR order_id AS order_id",
    );
    let p = format!("{source}{OUT}INSERT INTO out SELECT order_id FROM orders;\n");
    let err = fails(&p, Mode::Batch).await;
    assert_mentions(
        &err,
        &["`orders`", "order_id", "TIMESTAMP", &format!("line {line}")],
    );
}

#[tokio::test]
async fn bad_computed_columns_and_nested_types_fail_before_data_moves() {
    let line = line_of(ORDERS, "CREATE TABLE orders");
    // An expression over a column that does not exist.
    let source = ORDERS.replace(
        "  ordered_at TIMESTAMP(3),\n",
        "  ordered_at TIMESTAMP(3),\n  cents AS amount * 100 + tip,\n",
    );
    let p = format!("{source}{OUT}INSERT INTO out SELECT order_id FROM orders;\n");
    let err = fails(&p, Mode::Batch).await;
    assert_mentions(
        &err,
        &[
            "`orders`",
            "computed column `cents`",
            "tip",
            &format!("line {line}"),
        ],
    );

    // A watermark on a computed column that is not a timestamp.
    let source = ORDERS.replace(
        "  ordered_at TIMESTAMP(3),\n  WATERMARK FOR ordered_at AS ordered_at",
        "  ordered_at TIMESTAMP(3),\n  day AS CAST(ordered_at AS DATE),\n  WATERMARK FOR day AS day",
    );
    let p = format!("{source}{OUT}INSERT INTO out SELECT order_id FROM orders;\n");
    let err = fails(&p, Mode::Stream).await;
    assert_mentions(
        &err,
        &["`orders`", "WATERMARK FOR `day`", "TIMESTAMP", "Date32"],
    );

    // A watermark on a processing-time column.
    let source = ORDERS.replace(
        "  ordered_at TIMESTAMP(3),\n  WATERMARK FOR ordered_at AS ordered_at",
        "  ordered_at TIMESTAMP(3),\n  pt AS PROCTIME(),\n  WATERMARK FOR pt AS pt",
    );
    let p = format!("{source}{OUT}INSERT INTO out SELECT order_id FROM orders;\n");
    let err = fails(&p, Mode::Stream).await;
    assert_mentions(&err, &["`orders`", "`pt`", "PROCTIME()", "event-time"]);

    // A ROW type that does not close, and an unknown type inside a ROW: syntax errors at the
    // position in the file.
    let source = ORDERS.replace("  store_id   STRING,", "  store_id   ROW<a INT, b STRING,");
    let p = format!("{source}{OUT}INSERT INTO out SELECT order_id FROM orders;\n");
    let err = fails(&p, Mode::Batch).await;
    assert!(matches!(err, Error::Syntax { .. }), "{err:?}");
    let source = ORDERS.replace("  store_id   STRING,", "  store_id   ROW<a WIBBLE>,");
    let p = format!("{source}{OUT}INSERT INTO out SELECT order_id FROM orders;\n");
    let err = fails(&p, Mode::Batch).await;
    let (l, _) = pos_of(&p, "WIBBLE");
    match &err {
        Error::Syntax { line, .. } => assert_eq!(*line, l, "{err}"),
        other => panic!("expected a syntax error, got {other:?}"),
    }
}

#[tokio::test]
async fn a_bad_state_ttl_is_named_with_its_line() {
    let p = format!(
        "SET 'table.exec.state.ttl' = 'an hour';\n{ORDERS}{OUT}INSERT INTO out SELECT store_id, COUNT(*) AS n FROM orders GROUP BY store_id;\n"
    );
    let err = fails(&p, Mode::Stream).await;
    assert_mentions(&err, &["table.exec.state.ttl", "'an hour'", "duration"]);
    assert!(err.to_string().contains("line 1"), "{err}");
}

#[tokio::test]
async fn unknown_set_key() {
    let p = format!(
        "SET 'execution.mode' = 'stream';\nSET 'execution.mod' = 'batch';\n{ORDERS}{OUT}\
         INSERT INTO out SELECT order_id FROM orders;\n"
    );
    let err = fails(&p, Mode::Batch).await;
    assert!(matches!(err, Error::Option { .. }), "{err:?}");
    assert_mentions(
        &err,
        &["unknown setting", "'execution.mod'", "execution.mode"],
    );

    // A known key with a value it does not take.
    let p = format!(
        "SET 'execution.mode' = 'realtime';\n{ORDERS}{OUT}\
         INSERT INTO out SELECT order_id FROM orders;\n"
    );
    let dir = project(&p);
    let before = common::list_tree(dir.path());
    let err = match run_pipeline(&dir.path().join("pipeline.sql"), RunOptions::default()).await {
        Ok(_) => panic!("SET 'execution.mode' = 'realtime' was accepted"),
        Err(e) => e,
    };
    assert_eq!(common::list_tree(dir.path()), before);
    assert_mentions(&err, &["execution.mode", "realtime"]);
}

#[tokio::test]
async fn insert_column_count_mismatch() {
    let sink = "CREATE TABLE totals (
  store_id STRING,
  revenue  DECIMAL(12, 2),
  orders   BIGINT
) WITH (
  'connector' = 'files',
  'path' = 'out/totals',
  'format' = 'csv'
);
";
    let p = format!(
        "{ORDERS}{sink}INSERT INTO totals\n\
         SELECT window_start, SUM(amount) AS revenue\n\
         FROM TABLE(TUMBLE(TABLE orders, DESCRIPTOR(ordered_at), INTERVAL '1' HOUR))\n\
         GROUP BY window_start, window_end;\n"
    );
    let err = fails(&p, Mode::Stream).await;
    assert!(matches!(err, Error::Plan(_)), "{err:?}");
    let line = line_of(&p, "INSERT INTO totals");
    assert_mentions(
        &err,
        &[
            "totals",
            "2 columns",
            "declares 3",
            "store_id, revenue, orders",
            &format!("line {line}"),
        ],
    );
}

// ------------------------------------------------------------------ stream-mode refusals

/// `pipeline` must be refused in stream mode naming `construct` and its INSERT, while batch
/// mode accepts it.
async fn refused_in_stream_mode(pipeline: &str, construct: &str, sink: &str) {
    let err = fails(pipeline, Mode::Stream).await;
    match &err {
        Error::Unsupported {
            construct: c, mode, ..
        } => {
            assert!(c.contains(construct), "construct `{c}` is not {construct}");
            assert_eq!(mode, "stream");
        }
        other => panic!("expected Error::Unsupported naming {construct}, got {other:?}"),
    }
    let line = line_of(pipeline, &format!("INSERT INTO {sink}"));
    assert_mentions(
        &err,
        &[
            construct,
            &format!("INSERT INTO {sink} at line {line}"),
            "stream mode",
        ],
    );

    // The same pipeline plans in batch mode (it runs on DataFusion there).
    let dir = project(pipeline);
    let options = RunOptions {
        mode: Some(Mode::Batch),
        ..Default::default()
    };
    if let Err(e) = OpenedPipeline::open(&dir.path().join("pipeline.sql"), options).await {
        panic!("batch mode refused it too: {e}");
    }
}

#[tokio::test]
async fn stream_mode_refuses_joins_it_cannot_bound_or_keep_exact() {
    const PAYMENTS: &str = "CREATE TABLE payments (
  order_id BIGINT,
  paid_at  TIMESTAMP(3),
  WATERMARK FOR paid_at AS paid_at - INTERVAL '1' MINUTE
) WITH ('connector' = 'files', 'path' = 'input/orders.csv', 'format' = 'csv');
";
    let full = format!(
        "{ORDERS}{STORES}{OUT}INSERT INTO out\n\
         SELECT o.order_id, s.city\n\
         FROM orders o FULL JOIN stores s ON o.store_id = s.store_id;\n"
    );
    refused_in_stream_mode(&full, "a Full JOIN", "out").await;
    // One bound only: the state of an interval join could never expire, and a LEFT JOIN's
    // unmatched rows could never be sent (an inner join is a regular join with a filter).
    let one_sided = format!(
        "{ORDERS}{PAYMENTS}{OUT}INSERT INTO out\n\
         SELECT o.order_id, p.paid_at FROM orders o LEFT JOIN payments p\n\
         ON o.order_id = p.order_id AND p.paid_at >= o.ordered_at;\n"
    );
    refused_in_stream_mode(&one_sided, "on one side only", "out").await;
    // A LEFT JOIN's bounds must be on the columns the watermarks are declared on (an inner
    // join bounded on other columns is a regular join, as in Flink).
    let computed = format!(
        "{ORDERS}{PAYMENTS}{OUT}CREATE VIEW shifted AS SELECT order_id, paid_at + INTERVAL '1' HOUR AS due FROM payments;\n\
         INSERT INTO out\n\
         SELECT o.order_id, p.due FROM orders o LEFT JOIN shifted p\n\
         ON o.order_id = p.order_id AND p.due BETWEEN o.ordered_at AND o.ordered_at + INTERVAL '1' HOUR;\n"
    );
    refused_in_stream_mode(&computed, "an interval join on `p.due`", "out").await;
    let no_key = format!(
        "{ORDERS}{PAYMENTS}{OUT}INSERT INTO out\n\
         SELECT o.order_id, p.paid_at FROM orders o JOIN payments p\n\
         ON p.paid_at BETWEEN o.ordered_at AND o.ordered_at + INTERVAL '1' HOUR;\n"
    );
    refused_in_stream_mode(&no_key, "a JOIN without an equality", "out").await;
    let residual = format!(
        "{ORDERS}{PAYMENTS}{OUT}INSERT INTO out\n\
         SELECT o.order_id, p.paid_at FROM orders o LEFT JOIN payments p\n\
         ON o.order_id = p.order_id AND p.paid_at BETWEEN o.ordered_at AND o.ordered_at + INTERVAL '1' HOUR\n\
         AND o.amount > 10;\n"
    );
    refused_in_stream_mode(&residual, "a LEFT JOIN condition", "out").await;
    let three = format!(
        "{ORDERS}{PAYMENTS}{STORES}{OUT}INSERT INTO out\n\
         SELECT o.order_id, s.city FROM orders o\n\
         JOIN stores s ON o.store_id = s.store_id\n\
         JOIN payments p ON o.order_id = p.order_id AND p.paid_at BETWEEN o.ordered_at AND o.ordered_at + INTERVAL '1' HOUR;\n"
    );
    refused_in_stream_mode(&three, "a join of more than two inputs", "out").await;
    // A regular join forwards no watermark before the end: windows over it would never close.
    let windowed = format!(
        "{ORDERS}{PAYMENTS}{OUT}CREATE VIEW paid AS SELECT o.order_id, o.ordered_at FROM orders o JOIN payments p ON o.order_id = p.order_id;\n\
         INSERT INTO out\n\
         SELECT window_start, COUNT(*) AS n FROM TABLE(TUMBLE(TABLE paid, DESCRIPTOR(ordered_at), INTERVAL '1' HOUR))\n\
         GROUP BY window_start, window_end;\n"
    );
    refused_in_stream_mode(&windowed, "a window over a regular join", "out").await;
}

#[tokio::test]
async fn stream_mode_refuses_order_by() {
    let p = format!(
        "{ORDERS}{OUT}INSERT INTO out\n\
         SELECT order_id, amount FROM orders\n\
         ORDER BY amount DESC;\n"
    );
    refused_in_stream_mode(&p, "ORDER BY", "out").await;
}

#[tokio::test]
async fn stream_mode_runs_a_plain_group_by_in_update_mode_keyed_by_its_columns() {
    let p = format!(
        "{ORDERS}{OUT}INSERT INTO out\n\
         SELECT store_id, SUM(amount) AS revenue FROM orders\n\
         GROUP BY store_id;\n"
    );
    let dir = project(&p);
    let options = RunOptions {
        mode: Some(Mode::Stream),
        ..Default::default()
    };
    let opened = OpenedPipeline::open(&dir.path().join("pipeline.sql"), options)
        .await
        .unwrap();
    let plan = opened.explain();
    assert!(
        plan.contains("aggregate group by [store_id@1]") && plan.contains("(update mode)"),
        "{plan}"
    );
    assert!(
        plan.contains("sink out (update mode: rows keyed by (store_id) for an upsert)"),
        "{plan}"
    );

    // Asked for append mode, it is refused: its results are never final.
    let err = fails_with(
        &p,
        RunOptions {
            mode: Some(Mode::Stream),
            output_mode: Some(flowline_runtime::OutputMode::Append),
            ..Default::default()
        },
    )
    .await;
    assert_mentions(
        &err,
        &[
            "GROUP BY without a window in append mode",
            &format!("INSERT INTO out at line {}", line_of(&p, "INSERT INTO out")),
            "update output mode",
        ],
    );
}

#[tokio::test]
async fn update_mode_refuses_a_having_and_a_select_without_the_key() {
    // HAVING runs with retractions, which can delete rows: the sink must say how to write a
    // delete (a `_change_type` column), before any data moves; batch mode deletes nothing.
    let having = format!(
        "{ORDERS}{OUT}INSERT INTO out\n\
         SELECT store_id, SUM(amount) AS revenue FROM orders\n\
         GROUP BY store_id HAVING SUM(amount) > 10;\n"
    );
    let line = line_of(&having, "INSERT INTO out");
    assert_mentions(
        &fails(&having, Mode::Stream).await,
        &[
            &format!("line {line}"),
            "INSERT INTO out can delete rows",
            "`_change_type STRING`",
        ],
    );
    let dir = project(&having);
    let batch = run_pipeline(
        &dir.path().join("pipeline.sql"),
        RunOptions {
            mode: Some(Mode::Batch),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(batch.rows_written.get("out"), Some(&2));
    // `_change_type` must be text.
    let typed = having.replace(
        "CREATE TABLE out WITH",
        "CREATE TABLE out (store_id STRING, revenue DECIMAL(20, 2), _change_type INT) WITH",
    );
    assert_mentions(
        &fails(&typed, Mode::Stream).await,
        &["column `_change_type` must be STRING"],
    );
    // A sketch cannot take a value back.
    let sketch = format!(
        "{ORDERS}{OUT}INSERT INTO out\n\
         SELECT store_id, APPROX_COUNT_DISTINCT(order_id) AS n FROM orders\n\
         GROUP BY store_id HAVING COUNT(*) > 1;\n"
    );
    refused_in_stream_mode(
        &sketch,
        "ApproxCountDistinct in an aggregate that retracts",
        "out",
    )
    .await;
    // A window aggregate in update mode does not retract.
    let windowed_having = format!(
        "{ORDERS}{OUT}INSERT INTO out\n\
         SELECT window_start, store_id, COUNT(*) AS n\n\
         FROM TABLE(TUMBLE(TABLE orders, DESCRIPTOR(ordered_at), INTERVAL '1' HOUR))\n\
         GROUP BY window_start, window_end, store_id HAVING COUNT(*) > 1;\n"
    );
    let err = fails_with(
        &windowed_having,
        RunOptions {
            mode: Some(Mode::Stream),
            output_mode: Some(flowline_runtime::OutputMode::Update),
            ..Default::default()
        },
    )
    .await;
    assert_mentions(&err, &["over a window aggregate in update mode"]);
    let keyless = format!(
        "{ORDERS}{OUT}INSERT INTO out\n\
         SELECT SUM(amount) AS revenue FROM orders\n\
         GROUP BY store_id;\n"
    );
    refused_in_stream_mode(
        &keyless,
        "update mode without the key column `store_id` in the SELECT",
        "out",
    )
    .await;
    // A window aggregate in update mode: either window bound identifies the window.
    let windowed = format!(
        "{ORDERS}{OUT}INSERT INTO out\n\
         SELECT window_end, store_id, COUNT(*) AS n\n\
         FROM TABLE(TUMBLE(TABLE orders, DESCRIPTOR(ordered_at), INTERVAL '1' HOUR))\n\
         GROUP BY window_start, window_end, store_id;\n"
    );
    let dir = project(&windowed);
    let options = RunOptions {
        mode: Some(Mode::Stream),
        output_mode: Some(flowline_runtime::OutputMode::Update),
        ..Default::default()
    };
    let plan = OpenedPipeline::open(&dir.path().join("pipeline.sql"), options)
        .await
        .unwrap()
        .explain();
    assert!(
        plan.contains("rows keyed by (window_end, store_id)"),
        "{plan}"
    );
}

#[tokio::test]
async fn an_update_sink_must_be_keyed_by_the_group_by_columns() {
    let sink = "CREATE TABLE totals (
  store_id STRING,
  revenue  DECIMAL(38, 2),
  PRIMARY KEY (revenue) NOT ENFORCED
) WITH ('connector' = 'files', 'path' = 'out/totals', 'format' = 'csv');
";
    let p = format!(
        "{ORDERS}{sink}INSERT INTO totals\n\
         SELECT store_id, SUM(amount) AS revenue FROM orders GROUP BY store_id;\n"
    );
    let err = fails(&p, Mode::Stream).await;
    assert!(matches!(err, Error::Plan(_)), "{err:?}");
    assert_mentions(
        &err,
        &[
            &format!("line {}", line_of(&p, "INSERT INTO totals")),
            "updates keyed by (store_id)",
            "PRIMARY KEY (revenue)",
        ],
    );

    // Two INSERTs into one sink must write the same way.
    let mixed = format!(
        "{ORDERS}{OUT}INSERT INTO out\n\
         SELECT store_id, COUNT(*) AS n FROM orders GROUP BY store_id;\n\
         INSERT INTO out\n\
         SELECT store_id, COUNT(*) AS n\n\
         FROM TABLE(TUMBLE(TABLE orders, DESCRIPTOR(ordered_at), INTERVAL '1' HOUR))\n\
         GROUP BY window_start, window_end, store_id;\n"
    );
    let err = fails(&mixed, Mode::Stream).await;
    assert_mentions(
        &err,
        &["writes in append mode", "update mode keyed by (store_id)"],
    );
}

#[tokio::test]
async fn stream_mode_refuses_a_window_without_watermark() {
    let source = ORDERS.replace(
        "  WATERMARK FOR ordered_at AS ordered_at - INTERVAL '1' MINUTE\n",
        "",
    );
    let source = source.replace("ordered_at TIMESTAMP(3),", "ordered_at TIMESTAMP(3)");
    let p = format!(
        "{source}{OUT}INSERT INTO out\n\
         SELECT window_start, COUNT(*) AS n\n\
         FROM TABLE(TUMBLE(TABLE orders, DESCRIPTOR(ordered_at), INTERVAL '1' HOUR))\n\
         GROUP BY window_start, window_end;\n"
    );
    let err = fails(&p, Mode::Stream).await;
    assert!(matches!(err, Error::Unsupported { .. }), "{err:?}");
    let line = line_of(&p, "INSERT INTO out");
    assert_mentions(
        &err,
        &[
            "WATERMARK",
            "orders",
            &format!("INSERT INTO out at line {line}"),
        ],
    );
}

// ---- Regressions from review: wrong answers that must be refused at plan time instead.

#[tokio::test]
async fn stream_mode_refuses_a_window_on_a_computed_time_column_of_the_same_name() {
    // The watermark is computed on `orders.ordered_at`; a view that shifts the column but keeps
    // its name must not be windowed as if it were watermarked.
    let p = format!(
        "{ORDERS}{OUT}CREATE VIEW shifted AS SELECT order_id, amount, ordered_at - INTERVAL '2' MINUTE AS ordered_at FROM orders;\n\
         INSERT INTO out SELECT window_start, COUNT(*) AS n\n\
         FROM TABLE(TUMBLE(TABLE shifted, DESCRIPTOR(ordered_at), INTERVAL '1' HOUR))\n\
         GROUP BY window_start, window_end;\n"
    );
    let err = fails(&p, Mode::Stream).await;
    assert!(matches!(err, Error::Unsupported { .. }), "{err:?}");
    assert_mentions(&err, &["ordered_at", "unchanged"]);
}

#[tokio::test]
async fn a_renamed_watermark_column_may_be_windowed_in_stream_mode() {
    let p = format!(
        "{ORDERS}{OUT}CREATE VIEW renamed AS SELECT order_id, ordered_at AS t FROM orders;\n\
         INSERT INTO out SELECT window_start, COUNT(*) AS n\n\
         FROM TABLE(TUMBLE(TABLE renamed, DESCRIPTOR(t), INTERVAL '1' HOUR))\n\
         GROUP BY window_start, window_end;\n"
    );
    let dir = project(&p);
    let options = RunOptions {
        mode: Some(Mode::Stream),
        ..Default::default()
    };
    let report = run_pipeline(&dir.path().join("pipeline.sql"), options)
        .await
        .unwrap();
    assert_eq!(report.rows_written["out"], 2);
}

#[tokio::test]
async fn stream_mode_refuses_grouping_by_a_computed_window_start() {
    let p = format!(
        "{ORDERS}{OUT}CREATE VIEW w AS SELECT amount, window_start - INTERVAL '5' MINUTE AS window_start, window_end\n\
         FROM TABLE(TUMBLE(TABLE orders, DESCRIPTOR(ordered_at), INTERVAL '1' HOUR));\n\
         INSERT INTO out SELECT window_start, window_end, COUNT(*) AS n FROM w GROUP BY window_start, window_end;\n"
    );
    let err = fails(&p, Mode::Stream).await;
    assert!(matches!(err, Error::Unsupported { .. }), "{err:?}");
    assert_mentions(&err, &["computed `window_start`"]);
}

#[tokio::test]
async fn inserts_into_one_sink_must_agree_on_types() {
    let p = format!(
        "{ORDERS}{OUT}INSERT INTO out SELECT order_id, amount FROM orders;\n\
         INSERT INTO out SELECT store_id, ordered_at FROM orders;\n"
    );
    let line = line_of(&p, "INSERT INTO out SELECT store_id");
    let err = fails(&p, Mode::Batch).await;
    assert_mentions(&err, &["INSERT INTO out", "types", &format!("line {line}")]);
}

#[tokio::test]
async fn text_into_a_typed_sink_column_is_refused_at_plan_time() {
    let out = OUT.replace(
        "CREATE TABLE out WITH",
        "CREATE TABLE out (id BIGINT, n INT) WITH",
    );
    let p = format!("{ORDERS}{out}INSERT INTO out SELECT order_id, store_id FROM orders;\n");
    let err = fails(&p, Mode::Batch).await;
    assert_mentions(&err, &["`n`", "Int32", "Utf8"]);
}

#[tokio::test]
async fn datafusion_plan_errors_come_before_data_moves() {
    // DataFusion's optimizer rejects this query; the error must come at open, not after reading.
    let p = format!(
        "{ORDERS}{OUT}INSERT INTO out SELECT window_start, CAST(window_start AS DATE), COUNT(*) AS n\n\
         FROM TABLE(TUMBLE(TABLE orders, DESCRIPTOR(ordered_at), INTERVAL '1' HOUR))\n\
         GROUP BY window_start, window_end, CAST(window_start AS DATE) ORDER BY 1;\n"
    );
    let line = line_of(&p, "INSERT INTO out SELECT window_start, CAST");
    let err = fails(&p, Mode::Batch).await;
    assert_mentions(&err, &[&format!("line {line}")]);
}

#[tokio::test]
async fn session_windows_need_their_group_by_and_append_mode() {
    let session = "FROM TABLE(SESSION(TABLE orders PARTITION BY store_id, DESCRIPTOR(ordered_at), INTERVAL '10' MINUTE))";
    let without_partition_key = format!(
        "{ORDERS}{OUT}INSERT INTO out\n\
         SELECT window_start, window_end, COUNT(*) AS n\n{session}\n\
         GROUP BY window_start, window_end;\n"
    );
    let err = fails(&without_partition_key, Mode::Batch).await;
    assert_mentions(
        &err,
        &["partitioned by `store_id` without `store_id` in the GROUP BY"],
    );
    let not_aggregated =
        format!("{ORDERS}{OUT}INSERT INTO out\nSELECT order_id, window_start {session};\n");
    let err = fails(&not_aggregated, Mode::Stream).await;
    assert_mentions(
        &err,
        &["a SESSION window without GROUP BY window_start, window_end"],
    );
    let fine = format!(
        "{ORDERS}{OUT}INSERT INTO out\n\
         SELECT window_start, window_end, store_id, COUNT(*) AS n\n{session}\n\
         GROUP BY window_start, window_end, store_id;\n"
    );
    let err = fails_with(
        &fine,
        RunOptions {
            mode: Some(Mode::Stream),
            output_mode: Some(flowline_runtime::OutputMode::Update),
            ..Default::default()
        },
    )
    .await;
    assert_mentions(&err, &["a SESSION window in update mode", "retractions"]);
    let bad_column = ORDERS.to_string()
        + OUT
        + "INSERT INTO out SELECT window_start, window_end, COUNT(*) AS n\n\
           FROM TABLE(SESSION(TABLE orders PARTITION BY shop, DESCRIPTOR(ordered_at), INTERVAL '1' MINUTE))\n\
           GROUP BY window_start, window_end;\n";
    let err = fails(&bad_column, Mode::Stream).await;
    assert_mentions(&err, &["PARTITION BY `shop`: no such column"]);
}

#[tokio::test]
async fn stream_mode_ranks_a_whole_stream_only_as_a_keyed_top_n_in_update_mode() {
    // A ranking over a whole stream without a limit on the rank never ends: refused in stream
    // mode, on DataFusion in batch mode.
    let unbounded = format!(
        "{ORDERS}{OUT}INSERT INTO out\n\
         SELECT order_id, store_id, RANK() OVER (PARTITION BY store_id ORDER BY amount DESC) AS rn FROM orders;\n"
    );
    refused_in_stream_mode(&unbounded, "without a window in its PARTITION BY", "out").await;
    // A Top-N over a whole stream runs in update mode, keyed by (partition, row number): refused
    // in append mode, and refused when the row number is not selected (it is the key).
    let top3 = format!(
        "{ORDERS}{OUT}INSERT INTO out\n\
         SELECT * FROM (SELECT order_id, store_id, ROW_NUMBER() OVER (PARTITION BY store_id ORDER BY amount DESC) AS rn FROM orders)\n\
         WHERE rn <= 3;\n"
    );
    let err = fails_with(
        &top3,
        RunOptions {
            mode: Some(Mode::Stream),
            output_mode: Some(flowline_runtime::OutputMode::Append),
            ..Default::default()
        },
    )
    .await;
    assert_mentions(
        &err,
        &[
            "a Top-N over a whole stream in append mode",
            "update output mode",
        ],
    );
    let unkeyed = top3.replace("SELECT * FROM", "SELECT order_id, store_id FROM");
    let err = fails(&unkeyed, Mode::Stream).await;
    assert_mentions(
        &err,
        &[
            "without the key column `rn`",
            "a Top-N's PARTITION BY columns and its row number",
        ],
    );
    // Keeping each key's last row is update mode: refused when append is asked for.
    let last = format!(
        "{ORDERS}{OUT}INSERT INTO out\n\
         SELECT order_id, store_id FROM (SELECT order_id, store_id, ROW_NUMBER() OVER (PARTITION BY store_id ORDER BY ordered_at DESC) AS rn FROM orders)\n\
         WHERE rn = 1;\n"
    );
    let err = fails_with(
        &last,
        RunOptions {
            mode: Some(Mode::Stream),
            output_mode: Some(flowline_runtime::OutputMode::Append),
            ..Default::default()
        },
    )
    .await;
    assert_mentions(
        &err,
        &[
            "keeping the last row per key in append mode",
            "update output mode",
        ],
    );
}

#[tokio::test]
async fn stream_mode_over_aggregates_run_in_event_time_up_to_the_current_row() {
    // A frame reaching into the future would wait for rows not yet seen.
    let following = format!(
        "{ORDERS}{OUT}INSERT INTO out\n\
         SELECT order_id, SUM(amount) OVER (PARTITION BY store_id ORDER BY ordered_at\n\
           ROWS BETWEEN 1 PRECEDING AND 1 FOLLOWING) AS around FROM orders;\n"
    );
    refused_in_stream_mode(&following, "an OVER frame ending at 1 FOLLOWING", "out").await;
    // Rows are aggregated in event-time order: ordering by another column is refused.
    let by_amount = format!(
        "{ORDERS}{OUT}INSERT INTO out\n\
         SELECT order_id, COUNT(*) OVER (PARTITION BY store_id ORDER BY amount) AS n FROM orders;\n"
    );
    refused_in_stream_mode(
        &by_amount,
        "an OVER aggregate ordered by `orders.amount",
        "out",
    )
    .await;
    let descending = format!(
        "{ORDERS}{OUT}INSERT INTO out\n\
         SELECT order_id, COUNT(*) OVER (PARTITION BY store_id ORDER BY ordered_at DESC) AS n FROM orders;\n"
    );
    refused_in_stream_mode(&descending, "an OVER aggregate ordered by", "out").await;
    // Only COUNT, SUM, MIN, MAX, AVG.
    let lag = format!(
        "{ORDERS}{OUT}INSERT INTO out\n\
         SELECT order_id, LAG(amount) OVER (PARTITION BY store_id ORDER BY ordered_at) AS previous FROM orders;\n"
    );
    refused_in_stream_mode(&lag, "the OVER function `lag`", "out").await;
    // An interval with months has no fixed length.
    let months = format!(
        "{ORDERS}{OUT}INSERT INTO out\n\
         SELECT order_id, COUNT(*) OVER (PARTITION BY store_id ORDER BY ordered_at\n\
           RANGE BETWEEN INTERVAL '1' MONTH PRECEDING AND CURRENT ROW) AS n FROM orders;\n"
    );
    let err = fails(&months, Mode::Stream).await;
    assert_mentions(&err, &["PRECEDING", "expected an interval of days, hours"]);
}

/// Plans the review found wrong or refused for nothing: stacked rank filters keep the
/// narrowest limit; a WHERE over an inner JOIN ... ON bounds it like `FROM a, b WHERE`; two
/// selected columns of the same name from two tables both plan; a join of per-row SESSION
/// windows (not yet merged into sessions) is refused instead of joining wrong bounds.
#[tokio::test]
async fn stream_plans_keep_the_narrowest_rank_bound_joins_and_duplicate_names() {
    let explain = |pipeline: &str| {
        let dir = project(pipeline);
        async move {
            let options = RunOptions {
                mode: Some(Mode::Stream),
                ..Default::default()
            };
            OpenedPipeline::open(&dir.path().join("pipeline.sql"), options)
                .await
                .unwrap()
                .explain()
        }
    };
    let stacked = format!(
        "{ORDERS}{OUT}INSERT INTO out\n\
         SELECT * FROM (\n\
           SELECT * FROM (\n\
             SELECT store_id, amount, ROW_NUMBER() OVER (PARTITION BY store_id ORDER BY amount DESC) AS rn\n\
             FROM orders) WHERE rn <= 10)\n\
         WHERE rn <= 3;\n"
    );
    let plan = explain(&stacked).await;
    assert!(plan.contains("top-3 partition by"), "{plan}");
    const PAYMENTS: &str = "CREATE TABLE payments (
  order_id BIGINT,
  paid_at  TIMESTAMP(3),
  WATERMARK FOR paid_at AS paid_at - INTERVAL '1' MINUTE
) WITH ('connector' = 'files', 'path' = 'input/orders.csv', 'format' = 'csv');
";
    let where_bound = format!(
        "{ORDERS}{PAYMENTS}{OUT}INSERT INTO out\n\
         SELECT o.order_id, p.paid_at FROM orders o JOIN payments p ON o.order_id = p.order_id\n\
         WHERE p.paid_at BETWEEN o.ordered_at AND o.ordered_at + INTERVAL '1' HOUR;\n"
    );
    let plan = explain(&where_bound).await;
    assert!(plan.contains("(interval join)"), "{plan}");
    let same_names = format!(
        "{ORDERS}{STORES}{OUT}INSERT INTO out\n\
         SELECT o.store_id, s.store_id, s.city FROM orders o JOIN stores s ON o.store_id = s.store_id;\n"
    );
    let dir = project(&same_names);
    let report = run_pipeline(
        &dir.path().join("pipeline.sql"),
        RunOptions {
            mode: Some(Mode::Batch),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(report.rows_written.get("out"), Some(&3));
    let sessions = format!(
        "{ORDERS}{PAYMENTS}{OUT}INSERT INTO out\n\
         SELECT p.order_id, s.window_start FROM payments p\n\
         JOIN TABLE(SESSION(TABLE orders PARTITION BY store_id, DESCRIPTOR(ordered_at), INTERVAL '5' MINUTE)) s\n\
         ON p.order_id = s.order_id;\n"
    );
    // DataFusion has no SESSION windows either: refused in both modes.
    for mode in [Mode::Stream, Mode::Batch] {
        assert_mentions(
            &fails(&sessions, mode).await,
            &[
                "a JOIN whose right input is a SESSION window relation",
                "aggregate the sessions first",
            ],
        );
    }
}

// ------------------------------------------------------------------ temporal joins

const RATES: &str = "CREATE TABLE rates (
  store_id STRING,
  rate     BIGINT,
  valid_at TIMESTAMP(3),
  PRIMARY KEY (store_id) NOT ENFORCED,
  WATERMARK FOR valid_at AS valid_at
) WITH (
  'connector' = 'files',
  'path' = 'input/stores.jsonl',
  'format' = 'json'
);
";

#[tokio::test]
async fn temporal_joins_are_checked_before_data_moves() {
    let timed = "CREATE VIEW timed AS SELECT *, PROCTIME() AS pt FROM orders;\n";
    // Each case: the INSERT, the mode, and what the error must mention.
    let cases: Vec<(String, Mode, Vec<&str>)> = vec![
        (
            // An event-time join needs a versioned table.
            "INSERT INTO out SELECT o.order_id, s.city FROM orders o \
             JOIN stores FOR SYSTEM_TIME AS OF o.ordered_at AS s ON o.store_id = s.store_id;"
                .into(),
            Mode::Batch,
            vec![
                "`stores` is not a versioned table",
                "PRIMARY KEY",
                "WATERMARK",
            ],
        ),
        (
            // Neither an event time nor a processing time.
            "INSERT INTO out SELECT o.order_id, r.rate FROM orders o \
             JOIN rates FOR SYSTEM_TIME AS OF o.amount AS r ON o.store_id = r.store_id;"
                .into(),
            Mode::Stream,
            vec!["`amount` is neither the input's event time", "PROCTIME()"],
        ),
        (
            "INSERT INTO out SELECT o.order_id, r.rate FROM orders o \
             JOIN rates FOR SYSTEM_TIME AS OF o.no_such AS r ON o.store_id = r.store_id;"
                .into(),
            Mode::Batch,
            vec!["the other input has no column `no_such`"],
        ),
        (
            // The versions are looked up by the whole primary key.
            "INSERT INTO out SELECT o.order_id, r.rate FROM orders o \
             JOIN rates FOR SYSTEM_TIME AS OF o.ordered_at AS r ON o.order_id = r.rate;"
                .into(),
            Mode::Stream,
            vec!["every column of `rates`'s PRIMARY KEY (store_id)"],
        ),
        (
            "INSERT INTO out SELECT o.order_id, r.rate FROM orders o \
             FULL JOIN rates FOR SYSTEM_TIME AS OF o.ordered_at AS r ON o.store_id = r.store_id;"
                .into(),
            Mode::Batch,
            vec!["temporal joins are INNER or LEFT"],
        ),
        (
            "INSERT INTO out SELECT o.order_id, s.city FROM timed o \
             JOIN stores FOR SYSTEM_TIME AS OF o.pt AS s ON o.amount > 1;"
                .into(),
            Mode::Batch,
            vec!["needs an equality between the input and the table's key"],
        ),
        // A view is a versioned table only when it keeps the last row per key by event time.
        (
            "INSERT INTO out SELECT o.order_id, r.rate FROM orders o \
             JOIN first_rates FOR SYSTEM_TIME AS OF o.ordered_at AS r ON o.store_id = r.store_id;"
                .into(),
            Mode::Stream,
            vec![
                "`first_rates` is a view",
                "keeps the first row per key",
                "ORDER BY <event time> DESC",
            ],
        ),
        (
            "INSERT INTO out SELECT o.order_id, r.rate FROM orders o \
             JOIN plain_rates FOR SYSTEM_TIME AS OF o.ordered_at AS r ON o.store_id = r.store_id;"
                .into(),
            Mode::Batch,
            vec!["`plain_rates` is a view", "does not keep rank 1"],
        ),
        (
            "INSERT INTO out SELECT o.order_id, r.rate FROM orders o \
             JOIN high_rates FOR SYSTEM_TIME AS OF o.ordered_at AS r ON o.store_id = r.store_id;"
                .into(),
            Mode::Stream,
            vec!["filters its rows after the ranking", "rate > "],
        ),
        (
            "INSERT INTO out SELECT o.order_id, r.rate FROM timed o \
             JOIN last_rates FOR SYSTEM_TIME AS OF o.pt AS r ON o.store_id = r.store_id;"
                .into(),
            Mode::Batch,
            vec!["a versioned view joins only AS OF the input's event time"],
        ),
        (
            // The key of a versioned view is its PARTITION BY.
            "INSERT INTO out SELECT o.order_id, r.rate FROM orders o \
             JOIN last_rates FOR SYSTEM_TIME AS OF o.ordered_at AS r ON o.amount = r.rate;"
                .into(),
            Mode::Stream,
            vec!["every column of `last_rates`'s PARTITION BY (store_id)"],
        ),
    ];
    let views = "CREATE VIEW last_rates AS SELECT store_id, rate, valid_at FROM (SELECT *, \
         ROW_NUMBER() OVER (PARTITION BY store_id ORDER BY valid_at DESC) AS rn FROM rates) \
         WHERE rn = 1;\n\
         CREATE VIEW first_rates AS SELECT store_id, rate, valid_at FROM (SELECT *, \
         ROW_NUMBER() OVER (PARTITION BY store_id ORDER BY valid_at) AS rn FROM rates) \
         WHERE rn = 1;\n\
         CREATE VIEW plain_rates AS SELECT store_id, rate, valid_at FROM rates;\n\
         CREATE VIEW high_rates AS SELECT * FROM last_rates WHERE rate > 10;\n";
    for (insert, mode, needles) in cases {
        let pipeline = format!("{ORDERS}{STORES}{RATES}{OUT}{timed}{views}{insert}\n");
        let err = fails(&pipeline, mode).await;
        let line = line_of(&pipeline, "FOR SYSTEM_TIME");
        assert_mentions(&err, &needles);
        assert_mentions(&err, &[&format!("line {line}")]);
    }

    // The clause belongs to a join's right input.
    for insert in [
        "INSERT INTO out SELECT r.store_id, r.rate FROM rates FOR SYSTEM_TIME AS OF ordered_at AS r;",
        "INSERT INTO out SELECT o.order_id, r.rate FROM rates FOR SYSTEM_TIME AS OF o.ordered_at AS r \
         JOIN orders o ON o.store_id = r.store_id;",
    ] {
        let pipeline = format!("{ORDERS}{RATES}{OUT}{insert}\n");
        let err = fails(&pipeline, Mode::Batch).await;
        let line = line_of(&pipeline, "FOR SYSTEM_TIME");
        assert_mentions(
            &err,
            &[&format!("line {line}"), "belongs to the right input of a JOIN"],
        );
    }

    // A LEFT temporal join holds only key equalities.
    let pipeline = format!(
        "{ORDERS}{STORES}{OUT}{timed}INSERT INTO out SELECT o.order_id, s.city FROM timed o \
         LEFT JOIN stores FOR SYSTEM_TIME AS OF o.pt AS s \
         ON o.store_id = s.store_id AND s.city <> 'Lyon';\n"
    );
    let err = fails(&pipeline, Mode::Stream).await;
    assert_mentions(
        &err,
        &["a LEFT JOIN stores FOR SYSTEM_TIME AS OF pt", "s.city"],
    );

    // The clause needs a table before it and a column after it.
    let pipeline = format!(
        "{ORDERS}{STORES}{OUT}INSERT INTO out SELECT o.order_id, s.city FROM orders o \
         JOIN stores FOR SYSTEM_TIME AS OF 5 AS s ON o.store_id = s.store_id;\n"
    );
    let err = fails(&pipeline, Mode::Batch).await;
    let (line, column) = pos_of(&pipeline, "FOR SYSTEM_TIME");
    assert!(
        matches!(err, Error::Syntax { line: l, column: c, .. } if l == line && c == column),
        "{err:?}"
    );
    assert_mentions(&err, &["takes a time column of the other input"]);

    // Options: the dimension's reload interval, and legacy connectors other than filesystem.
    let pipeline = format!(
        "{}{OUT}{timed}INSERT INTO out SELECT o.order_id, s.city FROM timed o \
         JOIN stores FOR SYSTEM_TIME AS OF o.pt AS s ON o.store_id = s.store_id;\n",
        format!("{ORDERS}{STORES}").replace(
            "'format' = 'json'",
            "'format' = 'json', 'lookup.join.cache.ttl' = 'soon'"
        )
    );
    let err = fails(&pipeline, Mode::Stream).await;
    assert_mentions(&err, &["stores", "'lookup.join.cache.ttl' = 'soon'", "10s"]);
    let pipeline = format!(
        "{ORDERS}CREATE TABLE side (k BIGINT, v STRING) WITH ('connector.type' = 'kafka');\n\
         {OUT}INSERT INTO out SELECT * FROM side;\n"
    );
    let err = fails(&pipeline, Mode::Batch).await;
    let line = line_of(&pipeline, "CREATE TABLE side");
    assert_mentions(
        &err,
        &[
            &format!("line {line}"),
            "'connector.type' = 'kafka' is not supported",
        ],
    );
}

/// Each clause is its own relation: the same table joined plainly, in another INSERT or in the
/// same one, stays a regular join.
#[tokio::test]
async fn only_the_relation_written_as_of_is_a_temporal_join() {
    let pipeline = format!(
        "{ORDERS}{RATES}{OUT}CREATE TABLE out2 WITH ('connector' = 'files', 'path' = 'out/two', 'format' = 'csv');
INSERT INTO out SELECT o.order_id, r.rate FROM orders o
  JOIN rates FOR SYSTEM_TIME AS OF o.ordered_at AS r ON o.store_id = r.store_id;
INSERT INTO out2 SELECT o.order_id, r.rate FROM orders o JOIN rates r ON o.store_id = r.store_id;
"
    );
    let dir = project(&pipeline);
    let options = RunOptions {
        mode: Some(Mode::Stream),
        ..Default::default()
    };
    let opened = OpenedPipeline::open(&dir.path().join("pipeline.sql"), options)
        .await
        .unwrap();
    let plans = opened.explain();
    let (first, second) = plans.split_once("INSERT INTO out2").unwrap();
    assert!(first.contains("(temporal join:"), "{plans}");
    assert!(second.contains("(regular join"), "{plans}");
}

#[tokio::test]
async fn a_lookup_join_reads_a_legacy_filesystem_table_and_keeps_event_time() {
    let dir = project("");
    fs::write(dir.path().join("input/side.txt"), "s1,Lyon\ns2,Paris\n").unwrap();
    let pipeline = format!(
        "{ORDERS}CREATE TABLE side (store_id STRING, city STRING) WITH (
  'connector.type' = 'filesystem',
  'connector.path' = 'file://{}/input/side.txt',
  'format.type' = 'csv'
);
{OUT}
CREATE VIEW enriched AS
SELECT o.order_id, o.ordered_at, s.city
FROM (SELECT *, PROCTIME() AS pt FROM orders) o
JOIN side FOR SYSTEM_TIME AS OF o.pt AS s ON o.store_id = s.store_id;
INSERT INTO out
SELECT window_start, city, COUNT(*) AS orders
FROM TABLE(TUMBLE(TABLE enriched, DESCRIPTOR(ordered_at), INTERVAL '1' HOUR))
GROUP BY window_start, window_end, city;
",
        dir.path().display()
    );
    fs::write(dir.path().join("pipeline.sql"), &pipeline).unwrap();
    for mode in [Mode::Batch, Mode::Stream] {
        let options = RunOptions {
            mode: Some(mode),
            ..Default::default()
        };
        let report = run_pipeline(&dir.path().join("pipeline.sql"), options)
            .await
            .unwrap_or_else(|e| panic!("{mode}: {e}"));
        assert_eq!(report.rows_written["out"], 3, "{mode}");
        let mut rows: Vec<String> = fs::read_dir(dir.path().join("out/result"))
            .unwrap()
            .flat_map(|f| {
                fs::read_to_string(f.unwrap().path())
                    .unwrap()
                    .lines()
                    .skip(1)
                    .map(str::to_string)
                    .collect::<Vec<_>>()
            })
            .collect();
        rows.sort();
        assert_eq!(
            rows,
            [
                "2026-03-16T10:00:00,Lyon,1",
                "2026-03-16T10:00:00,Paris,1",
                "2026-03-16T11:00:00,Lyon,1"
            ],
            "{mode}"
        );
    }
}

/// A literal DATE_FORMAT pattern or REGEXP_EXTRACT regex that does not parse is a plan error
/// naming the line, in every mode (not an execution error at the first row).
#[tokio::test]
async fn bad_literal_patterns_fail_before_data_moves() {
    for (call, needle) in [
        (
            "DATE_FORMAT(ordered_at, 'yyyy Z')",
            "DATE_FORMAT pattern 'yyyy Z'",
        ),
        (
            "REGEXP_EXTRACT(store_id, 's(', 1)",
            "REGEXP_EXTRACT regex 's('",
        ),
    ] {
        let pipeline =
            format!("{ORDERS}{OUT}INSERT INTO out SELECT order_id, {call} AS v FROM orders;\n");
        let line = line_of(&pipeline, "INSERT INTO out");
        for mode in [Mode::Batch, Mode::Stream] {
            let err = fails(&pipeline, mode).await;
            assert!(matches!(err, Error::Plan(_)), "{mode}: {err:?}");
            assert_mentions(&err, &[needle, &format!("line {line}")]);
        }
    }
}
