//! Criterion benchmarks of the stateful operators beside the window aggregate, each alone on
//! batches shaped like Nexmark bids (`auction`, `bidder`, `price`, `ts`), 64 batches of 8192
//! rows in event-time order with a watermark after each batch, then the final watermark:
//!
//! * `join/interval`: bids joined with bids of the same auction up to 1 s before (a self
//!   interval join; state expires with the watermark);
//! * `join/regular`: bids joined with a bounded table of 10 000 auctions read first (a regular
//!   join, Nexmark q9/q20's shape);
//! * `join/lookup`: the same through a lookup join (`FOR SYSTEM_TIME AS OF` a proc time);
//! * `join/temporal`: bids joined with the version of their auction's row valid at their time
//!   (an event-time temporal join over a versioned table of 10 000 keys × 4 versions);
//! * `over/range`: `COUNT(*), SUM(price)` per auction over the last 10 s (RANGE frame);
//! * `dedup/first`: the first bid per (auction, bidder);
//! * `top_n/3`: the top 3 bids by price per auction, over the whole input (update mode).
//!
//! Throughput is rows of the bid input per second (one core: operators are synchronous).
//! Run: `cargo bench -p flowline-runtime --bench operators`

use std::sync::Arc;

use arrow::array::{Int64Array, RecordBatch, TimestampMillisecondArray};
use arrow::compute::SortOptions;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use datafusion::physical_expr::expressions::col;
use datafusion::physical_expr::PhysicalSortExpr;
use flowline_core::plan::{
    AggregateFunction, AsOf, DedupSpec, JoinKind, JoinSpec, JoinTime, Node, OutputMode, OverFrame,
    OverSpec, TopNSpec,
};
use flowline_core::{Message, Operator, Output, Watermark};
use flowline_runtime::operators::build;

const ROWS_PER_BATCH: usize = 8192;
const BATCHES: usize = 64;
/// `cargo test --all-targets` runs each benchmark once, unoptimised: a few batches suffice.
const TEST_BATCHES: usize = 4;
const AUCTIONS: i64 = 10_000;
/// Event time advances this much per batch (about 1 s per 8192 bids).
const BATCH_MS: i64 = 1_000;

fn bid_schema(prefix: &str) -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new(format!("{prefix}auction"), DataType::Int64, false),
        Field::new(format!("{prefix}bidder"), DataType::Int64, false),
        Field::new(format!("{prefix}price"), DataType::Int64, false),
        Field::new(
            format!("{prefix}ts"),
            DataType::Timestamp(TimeUnit::Millisecond, None),
            false,
        ),
    ]))
}

/// Bids in time order: `batches` batches, auctions skewed towards the low ids.
fn bids(prefix: &str, batches: usize, rows: usize, keys: i64) -> Vec<RecordBatch> {
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    (0..batches)
        .map(|b| {
            let mut auction = Vec::with_capacity(rows);
            let mut bidder = Vec::with_capacity(rows);
            let mut price = Vec::with_capacity(rows);
            let mut ts = Vec::with_capacity(rows);
            for i in 0..rows {
                let r = next();
                // Half the bids on the 1% hottest auctions.
                let a = if r % 2 == 0 {
                    (r >> 8) as i64 % (keys / 100).max(1)
                } else {
                    (r >> 8) as i64 % keys
                };
                auction.push(a);
                bidder.push((r >> 32) as i64 % 50_000);
                price.push((r >> 40) as i64 % 10_000);
                ts.push(b as i64 * BATCH_MS + (i * BATCH_MS as usize / rows) as i64);
            }
            RecordBatch::try_new(
                bid_schema(prefix),
                vec![
                    Arc::new(Int64Array::from(auction)),
                    Arc::new(Int64Array::from(bidder)),
                    Arc::new(Int64Array::from(price)),
                    Arc::new(TimestampMillisecondArray::from(ts)),
                ],
            )
            .unwrap()
        })
        .collect()
}

/// A bounded table: each auction once (`versions` = 1), or `versions` rows per auction spread
/// over the bids' time range, at time 0 for the first.
fn auctions(versions: i64) -> Vec<RecordBatch> {
    let n = (AUCTIONS * versions) as usize;
    let span = BATCHES as i64 * BATCH_MS;
    let batch = RecordBatch::try_new(
        bid_schema("r"),
        vec![
            Arc::new(Int64Array::from_iter_values(
                (0..n as i64).map(|i| i % AUCTIONS),
            )),
            Arc::new(Int64Array::from_iter_values((0..n as i64).map(|i| i % 7))),
            Arc::new(Int64Array::from_iter_values((0..n as i64).map(|i| i * 3))),
            Arc::new(TimestampMillisecondArray::from_iter_values(
                (0..n as i64).map(|i| (i / AUCTIONS) * span / versions),
            )),
        ],
    )
    .unwrap();
    vec![batch]
}

fn join_spec(time: Option<JoinTime>, as_of: Option<AsOf>) -> JoinSpec {
    let left = bid_schema("");
    let right = bid_schema("r");
    let fields: Vec<Field> = left
        .fields()
        .iter()
        .chain(right.fields().iter())
        .map(|f| f.as_ref().clone().with_nullable(true))
        .collect();
    JoinSpec {
        kind: JoinKind::Inner,
        left_keys: vec![col("auction", &left).unwrap()],
        right_keys: vec![col("rauction", &right).unwrap()],
        time,
        as_of,
        state_ttl: None,
        right_table: "auction".into(),
        schema: Arc::new(Schema::new(fields)),
        left_schema: left,
        right_schema: right,
    }
}

/// Feeds the bids (left) and the right input's batches (`right_first`: all of it before the
/// bids, as a bounded table is read; else batch by batch beside the bids), each followed by
/// its input's watermark, then the final watermark and the end on both. Returns output rows.
fn run_two(
    op: &mut dyn Operator,
    left: &[RecordBatch],
    right: &[RecordBatch],
    right_first: bool,
) -> usize {
    let mut out = Output::default();
    let mut rows = 0;
    let mut count = |out: &mut Output| {
        for m in out.messages.drain(..) {
            if let Message::Data(b) = m {
                rows += b.num_rows();
            }
        }
    };
    if right_first {
        for b in right {
            op.process_right(Message::Data(b.clone()), &mut out)
                .unwrap();
        }
        op.process_right(Message::Watermark(Watermark::MAX), &mut out)
            .unwrap();
        op.process_right(Message::EndOfInput, &mut out).unwrap();
        count(&mut out);
    }
    for (i, b) in left.iter().enumerate() {
        let wm = Watermark((i as i64 + 1) * BATCH_MS - 1);
        op.process(Message::Data(b.clone()), &mut out).unwrap();
        op.process(Message::Watermark(wm), &mut out).unwrap();
        if !right_first {
            if let Some(r) = right.get(i) {
                op.process_right(Message::Data(r.clone()), &mut out)
                    .unwrap();
            }
            op.process_right(Message::Watermark(wm), &mut out).unwrap();
        }
        count(&mut out);
    }
    op.process(Message::Watermark(Watermark::MAX), &mut out)
        .unwrap();
    op.process(Message::EndOfInput, &mut out).unwrap();
    if !right_first {
        op.process_right(Message::Watermark(Watermark::MAX), &mut out)
            .unwrap();
        op.process_right(Message::EndOfInput, &mut out).unwrap();
    }
    count(&mut out);
    rows
}

/// Feeds one input with a watermark after each batch, then the end.
fn run_one(op: &mut dyn Operator, input: &[RecordBatch]) -> usize {
    let mut out = Output::default();
    let mut rows = 0;
    for (i, b) in input.iter().enumerate() {
        op.process(Message::Data(b.clone()), &mut out).unwrap();
        op.process(
            Message::Watermark(Watermark((i as i64 + 1) * BATCH_MS - 1)),
            &mut out,
        )
        .unwrap();
        if i % 8 == 7 {
            op.process(Message::EmitUpdates, &mut out).unwrap();
        }
    }
    op.process(Message::Watermark(Watermark::MAX), &mut out)
        .unwrap();
    op.process(Message::EndOfInput, &mut out).unwrap();
    for m in out.messages {
        if let Message::Data(b) = m {
            rows += b.num_rows();
        }
    }
    rows
}

fn bench(c: &mut Criterion) {
    let batches = if std::env::args().any(|a| a == "--bench") {
        BATCHES
    } else {
        TEST_BATCHES
    };
    let left = bids("", batches, ROWS_PER_BATCH, AUCTIONS);
    let schema = bid_schema("");
    let mut group = c.benchmark_group("operators");
    group.throughput(Throughput::Elements((batches * ROWS_PER_BATCH) as u64));
    group.sample_size(10);

    // Join inputs: a second stream of bids for the interval join (fewer keys' worth of rows
    // would explode the output: the right side is a tenth of the left), a bounded table.
    let right_stream = bids("r", batches, ROWS_PER_BATCH / 10, AUCTIONS);
    let table = auctions(1);
    let versions = auctions(4);
    let two_input: [(&str, Node, &Vec<RecordBatch>, bool); 4] = [
        (
            "join/interval",
            Node::Join(join_spec(
                Some(JoinTime {
                    left: col("ts", &schema).unwrap(),
                    right: col("rts", &bid_schema("r")).unwrap(),
                    lower: 0,
                    upper: 1_000,
                    window_end: false,
                }),
                None,
            )),
            &right_stream,
            false,
        ),
        (
            "join/regular",
            Node::Join(join_spec(None, None)),
            &table,
            true,
        ),
        (
            "join/lookup",
            Node::Join(join_spec(None, Some(AsOf::ProcessingTime))),
            &table,
            true,
        ),
        (
            "join/temporal",
            Node::Join(join_spec(
                None,
                Some(AsOf::EventTime {
                    left: col("ts", &schema).unwrap(),
                    right: col("rts", &bid_schema("r")).unwrap(),
                }),
            )),
            &versions,
            true,
        ),
    ];
    for (name, node, right, right_first) in two_input {
        group.bench_function(name, |b| {
            b.iter_batched(
                || build(&node, "bid").unwrap(),
                |mut op| run_two(op.as_mut(), &left, right, right_first),
                BatchSize::LargeInput,
            )
        });
    }

    let with_calls = |extra: &[(&str, DataType)]| {
        let mut fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
        fields.extend(extra.iter().map(|(n, t)| Field::new(*n, t.clone(), true)));
        Arc::new(Schema::new(fields))
    };
    let auction = col("auction", &schema).unwrap();
    let ts = col("ts", &schema).unwrap();
    let one_input = [
        (
            "over/range",
            Node::OverAggregate(OverSpec {
                partition: vec![auction.clone()],
                time: ts.clone(),
                frame: OverFrame::Range { preceding: 10_000 },
                calls: vec![
                    (AggregateFunction::Count, col("price", &schema).unwrap()),
                    (AggregateFunction::Sum, col("price", &schema).unwrap()),
                ],
                schema: with_calls(&[("n", DataType::Int64), ("total", DataType::Int64)]),
                state_ttl: None,
            }),
        ),
        (
            "dedup/first",
            Node::Deduplicate(DedupSpec {
                partition: vec![auction.clone(), col("bidder", &schema).unwrap()],
                time: ts.clone(),
                keep_last: false,
                schema: with_calls(&[("rn", DataType::UInt64)]),
                state_ttl: None,
            }),
        ),
        (
            "top_n/3",
            Node::TopN(TopNSpec {
                partition: vec![auction.clone()],
                order: vec![PhysicalSortExpr {
                    expr: col("price", &schema).unwrap(),
                    options: SortOptions {
                        descending: true,
                        nulls_first: false,
                    },
                }],
                limit: 3,
                output: OutputMode::Update,
                schema: with_calls(&[("rn", DataType::UInt64)]),
                state_ttl: None,
            }),
        ),
    ];
    for (name, node) in one_input {
        group.bench_function(name, |b| {
            b.iter_batched(
                || build(&node, "bid").unwrap(),
                |mut op| run_one(op.as_mut(), &left),
                BatchSize::LargeInput,
            )
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
