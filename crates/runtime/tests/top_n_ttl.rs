//! `SET 'table.exec.state.ttl'` bounds a whole-stream Top-N in stream mode: a partition whose
//! top did not change while the watermark advanced more than the TTL is dropped, so a later
//! row of its key starts a new top (its rank 1 replaces the old one downstream). Without the
//! setting the partition is kept; a batch run ignores the TTL (its watermark moves only at the
//! end), and `explain` says which applies.

use std::fs;
use std::path::Path;

use flowline_runtime::{run_pipeline, Mode, OpenedPipeline, RunOptions};

const BIDS: &str = "auction,bidder,price,bid_time
1,1,100,2026-01-01 00:00:00
2,1,5,2026-01-01 00:00:10
2,1,6,2026-01-01 01:00:10
1,1,1,2026-01-01 01:00:20
";

fn pipeline(ttl: &str) -> String {
    format!(
        "{ttl}
CREATE TABLE bid (
  auction  BIGINT,
  bidder   BIGINT,
  price    BIGINT,
  bid_time TIMESTAMP(3),
  WATERMARK FOR bid_time AS bid_time - INTERVAL '4' SECOND
) WITH ('connector' = 'files', 'path' = 'input/bids.csv', 'format' = 'csv');
CREATE TABLE top_bids WITH ('connector' = 'files', 'path' = 'out/top_bids', 'format' = 'csv');
INSERT INTO top_bids
SELECT auction, price, rank_number FROM (
  SELECT *, ROW_NUMBER() OVER (PARTITION BY auction ORDER BY price DESC) AS rank_number
  FROM bid
) WHERE rank_number <= 2;
"
    )
}

fn options(dir: &Path, mode: Mode) -> RunOptions {
    RunOptions {
        mode: Some(mode),
        batch_size: Some(1),
        state_dir: Some(dir.join(format!("state-{mode}"))),
        ..Default::default()
    }
}

/// Runs the pipeline; returns its explain text and the last row written for (auction, rank).
async fn run(ttl: &str, mode: Mode) -> (String, Vec<(String, String)>) {
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir_all(dir.path().join("input")).unwrap();
    fs::write(dir.path().join("input/bids.csv"), BIDS).unwrap();
    let path = dir.path().join("pipeline.sql");
    fs::write(&path, pipeline(ttl)).unwrap();
    let plan = OpenedPipeline::open(&path, options(dir.path(), mode))
        .await
        .unwrap()
        .explain();
    run_pipeline(&path, options(dir.path(), mode))
        .await
        .unwrap();
    let mut last = std::collections::BTreeMap::new();
    for entry in fs::read_dir(dir.path().join("out/top_bids")).unwrap() {
        let text = fs::read_to_string(entry.unwrap().path()).unwrap();
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split(',').collect();
            last.insert((f[0].to_string(), f[2].to_string()), f[1].to_string());
        }
    }
    let rows = last
        .into_iter()
        .map(|((auction, rank), price)| (format!("{auction}#{rank}"), price))
        .collect();
    (plan, rows)
}

fn row(key: &str, price: &str) -> (String, String) {
    (key.to_string(), price.to_string())
}

#[tokio::test]
async fn a_state_ttl_drops_idle_top_n_partitions_in_a_stream() {
    let ttl = "SET 'table.exec.state.ttl' = '1 h';";
    let (plan, rows) = run(ttl, Mode::Stream).await;
    assert!(
        plan.contains(
            "a partition dropped when its top did not change for 3600000 ms of watermark"
        ),
        "{plan}"
    );
    // Auction 1's top (100) last changed before 00:00; the watermark passed 01:00 (more than an
    // hour later), so its bid of 1 starts a new top: rank 1 is 1.
    assert_eq!(
        rows,
        [row("1#1", "1"), row("2#1", "6"), row("2#2", "5")],
        "{plan}"
    );

    // Without a TTL, or in batch mode, the partition is kept: 100 stays first, 1 is second.
    let exact = [
        row("1#1", "100"),
        row("1#2", "1"),
        row("2#1", "6"),
        row("2#2", "5"),
    ];
    let (plan, rows) = run("", Mode::Stream).await;
    assert!(!plan.contains("partition dropped"), "{plan}");
    assert_eq!(rows, exact);
    let (plan, rows) = run(ttl, Mode::Batch).await;
    assert!(!plan.contains("partition dropped"), "{plan}");
    assert_eq!(rows, exact);
}
