//! A join whose two inputs begin with the same operators over the same source (Nexmark q5's
//! shape: the auctions with the most bids per HOP window, where both sides count the bids of
//! each auction per window) runs those operators once and feeds their output to both inputs.
//! `explain` says so; the answer is the batch answer in stream mode too; a late row is rejected
//! once for the INSERT, not once per input; and inputs that differ share only what they have in
//! common.

use std::fs;
use std::path::Path;

use flowline_runtime::{run_pipeline, Mode, OpenedPipeline, RunOptions};
use serde_json::Value;

const SOURCE: &str = "CREATE TABLE bids (
  auction BIGINT,
  price   BIGINT,
  bid_at  TIMESTAMP(3),
  WATERMARK FOR bid_at AS bid_at - INTERVAL '1' MINUTE
) WITH ('connector' = 'files', 'path' = 'input/bids.csv', 'format' = 'csv');
CREATE TABLE hot_items WITH ('connector' = 'files', 'path' = 'out/hot_items', 'format' = 'csv');
";

/// q5's query: both sides count bids per auction and HOP window; `right_filter` is added to the
/// right side's count only.
fn q5(right_filter: &str) -> String {
    format!(
        "{SOURCE}
CREATE VIEW auction_bids AS
SELECT auction, COUNT(*) AS num, window_start AS starttime, window_end AS endtime
FROM TABLE(HOP(TABLE bids, DESCRIPTOR(bid_at), INTERVAL '5' MINUTE, INTERVAL '10' MINUTE))
GROUP BY auction, window_start, window_end;

INSERT INTO hot_items
SELECT a.starttime, a.auction, a.num
FROM auction_bids AS a
JOIN (
  SELECT MAX(num) AS maxn, starttime, endtime
  FROM (
    SELECT auction, COUNT(*) AS num, window_start AS starttime, window_end AS endtime
    FROM TABLE(HOP(TABLE bids, DESCRIPTOR(bid_at), INTERVAL '5' MINUTE, INTERVAL '10' MINUTE))
    {right_filter}
    GROUP BY auction, window_start, window_end
  ) AS c
  GROUP BY starttime, endtime
) AS m
  ON a.starttime = m.starttime AND a.endtime = m.endtime AND a.num >= m.maxn;
"
    )
}

const BIDS: &str = "auction,price,bid_at
1,10,2026-03-16 10:01:00
2,10,2026-03-16 10:02:00
1,10,2026-03-16 10:03:00
2,10,2026-03-16 10:06:00
2,10,2026-03-16 10:07:00
3,10,2026-03-16 10:08:00
1,10,2026-03-16 10:12:00
3,10,2026-03-16 10:13:00
3,10,2026-03-16 10:14:00
1,10,2026-03-16 10:16:00
";

/// Bid of auction 9, late in a stream of one row per batch: its windows [09:55, 10:05) and
/// [10:00, 10:10) closed once 10:16 was read (watermark 10:15).
const LATE_BID: &str = "9,10,2026-03-16 10:04:00\n";

fn case(pipeline: &str, bids: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir_all(dir.path().join("input")).unwrap();
    fs::write(dir.path().join("input/bids.csv"), bids).unwrap();
    fs::write(dir.path().join("pipeline.sql"), pipeline).unwrap();
    dir
}

fn options(dir: &Path, mode: Mode) -> RunOptions {
    RunOptions {
        mode: Some(mode),
        batch_size: Some(1),
        state_dir: Some(dir.join(format!("state-{mode}"))),
        ..Default::default()
    }
}

async fn explain(dir: &Path) -> String {
    OpenedPipeline::open(&dir.join("pipeline.sql"), options(dir, Mode::Stream))
        .await
        .unwrap()
        .explain()
}

/// The sink's rows, sorted, and the rejects of the run.
async fn run(dir: &Path, mode: Mode) -> (Vec<String>, Vec<Value>) {
    let out = dir.join("out/hot_items");
    let _ = fs::remove_dir_all(&out);
    let report = run_pipeline(&dir.join("pipeline.sql"), options(dir, mode))
        .await
        .unwrap();
    let mut rows = vec![];
    for entry in fs::read_dir(&out).unwrap() {
        let text = fs::read_to_string(entry.unwrap().path()).unwrap();
        rows.extend(text.lines().skip(1).map(str::to_string));
    }
    rows.sort();
    let rejects = fs::read_to_string(&report.rejects_path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    (rows, rejects)
}

const EXPECTED: [&str; 6] = [
    "2026-03-16T09:55:00,1,2",
    "2026-03-16T10:00:00,2,3",
    "2026-03-16T10:05:00,3,3",
    "2026-03-16T10:10:00,1,2",
    "2026-03-16T10:10:00,3,2",
    "2026-03-16T10:15:00,1,1",
];

#[tokio::test]
async fn both_inputs_of_a_self_join_share_their_common_operators() {
    let dir = case(&q5(""), &format!("{BIDS}{LATE_BID}"));
    let plan = explain(dir.path()).await;
    assert!(
        plan.contains("right input: source bids\n    → the first 3 operators above (run once for both inputs)\n    → window-aggregate"),
        "the count per auction and window should be shared:\n{plan}"
    );

    // Batch mode: one watermark at the end, nothing is late; auction 9's one bid wins no
    // window.
    let (rows, rejects) = run(dir.path(), Mode::Batch).await;
    assert_eq!(rows, EXPECTED, "batch answer");
    assert!(rejects.is_empty(), "{rejects:?}");

    // Stream mode, one row per batch: the late bid misses its two windows, and each is
    // rejected once (not once per input of the join).
    let (rows, rejects) = run(dir.path(), Mode::Stream).await;
    assert_eq!(rows, EXPECTED, "stream answer");
    let windows: Vec<&str> = rejects
        .iter()
        .map(|r| {
            assert_eq!(r["reason"], "late", "{rejects:#?}");
            assert_eq!(r["sink"], "hot_items", "{rejects:#?}");
            assert!(r["raw"].as_str().unwrap().contains("\"auction\":9,"), "{r}");
            r["window"][0].as_str().unwrap()
        })
        .collect();
    assert_eq!(
        windows,
        ["2026-03-16T09:55:00.000", "2026-03-16T10:00:00.000"],
        "one reject per window the late bid missed: {rejects:#?}"
    );
}

#[tokio::test]
async fn inputs_that_differ_share_only_their_common_start() {
    // The right side counts only bids at a price of at least 10 (all of them): the same
    // answer, but only the window assignment before that filter is common.
    let dir = case(&q5("WHERE price >= 10"), BIDS);
    let plan = explain(dir.path()).await;
    assert!(
        plan.contains("right input: source bids\n    → the first operator above (run once for both inputs)\n    → filter price@1 >= 10\n    → window-aggregate"),
        "{plan}"
    );
    for mode in [Mode::Batch, Mode::Stream] {
        let (rows, rejects) = run(dir.path(), mode).await;
        assert_eq!(rows, EXPECTED, "{mode}");
        assert!(rejects.is_empty(), "{mode}: {rejects:?}");
    }
}
