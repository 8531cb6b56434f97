//! Criterion benchmark of the window aggregate operator alone: batches that already carry
//! window columns, `GROUP BY window_start, window_end, store_id` with COUNT(*), SUM(amount),
//! MAX(amount), then the final watermark fires every window.
//!
//! Run: `cargo bench -p flowline-runtime --bench window_aggregate`

use std::sync::Arc;

use arrow::array::{Decimal128Array, RecordBatch, StringArray, TimestampMillisecondArray};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use datafusion::physical_expr::expressions::{col, lit};
use flowline_core::plan::{
    AggregateCall, AggregateFunction, AggregateSpec, Node, OutputMode, WindowColumns, WindowKind,
};
use flowline_core::{Message, Output, Watermark};
use flowline_runtime::operators::build;

const ROWS_PER_BATCH: usize = 8192;
const BATCHES: usize = 64;
const HOUR: i64 = 3_600_000;

fn input_schema() -> Arc<Schema> {
    let ts = DataType::Timestamp(TimeUnit::Millisecond, None);
    Arc::new(Schema::new(vec![
        Field::new("store_id", DataType::Utf8, false),
        Field::new("amount", DataType::Decimal128(10, 2), false),
        Field::new("window_start", ts.clone(), false),
        Field::new("window_end", ts, false),
    ]))
}

fn batches(keys: usize) -> Vec<RecordBatch> {
    let schema = input_schema();
    let names: Vec<String> = (0..keys).map(|k| format!("store-{k:05}")).collect();
    let mut state = 0x2545_f491_4f6c_dd1du64;
    (0..BATCHES)
        .map(|b| {
            // About four batches per hourly window, in time order.
            let start = (b as i64 / 4) * HOUR;
            let mut store = Vec::with_capacity(ROWS_PER_BATCH);
            let mut amount = Vec::with_capacity(ROWS_PER_BATCH);
            for _ in 0..ROWS_PER_BATCH {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                store.push(names[(state % keys as u64) as usize].as_str());
                amount.push((state % 20_000) as i128);
            }
            RecordBatch::try_new(
                schema.clone(),
                vec![
                    Arc::new(StringArray::from(store)),
                    Arc::new(
                        Decimal128Array::from(amount)
                            .with_precision_and_scale(10, 2)
                            .unwrap(),
                    ),
                    Arc::new(TimestampMillisecondArray::from(vec![start; ROWS_PER_BATCH])),
                    Arc::new(TimestampMillisecondArray::from(vec![
                        start + HOUR;
                        ROWS_PER_BATCH
                    ])),
                ],
            )
            .unwrap()
        })
        .collect()
}

fn node() -> Node {
    let input = input_schema();
    let ts = DataType::Timestamp(TimeUnit::Millisecond, None);
    let call = |function, arg| AggregateCall {
        function,
        arg,
        distinct: false,
        filter: None,
    };
    Node::WindowAggregate(AggregateSpec {
        group_exprs: vec![
            col("window_start", &input).unwrap(),
            col("window_end", &input).unwrap(),
            col("store_id", &input).unwrap(),
        ],
        window: Some(WindowColumns {
            kind: WindowKind::Tumble { size: HOUR },
            start: 0,
            end: 1,
        }),
        output: OutputMode::Append,
        allowed_lateness: 0,
        state_ttl: None,
        session_keys: vec![],
        calls: vec![
            call(AggregateFunction::Count, lit(1i64)),
            call(AggregateFunction::Sum, col("amount", &input).unwrap()),
            call(AggregateFunction::Max, col("amount", &input).unwrap()),
        ],
        input_schema: input.clone(),
        schema: Arc::new(Schema::new(vec![
            Field::new("window_start", ts.clone(), false),
            Field::new("window_end", ts, false),
            Field::new("store_id", DataType::Utf8, false),
            Field::new("orders", DataType::Int64, false),
            Field::new("revenue", DataType::Decimal128(20, 2), true),
            Field::new("largest", DataType::Decimal128(10, 2), true),
        ])),
    })
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("window_aggregate");
    group.throughput(Throughput::Elements((ROWS_PER_BATCH * BATCHES) as u64));
    group.sample_size(20);
    for keys in [50, 10_000] {
        let input = batches(keys);
        let node = node();
        group.bench_function(format!("tumble_count_sum_max_{keys}_keys"), |b| {
            b.iter_batched(
                || build(&node, "orders").unwrap(),
                |mut op| {
                    let mut out = Output::default();
                    for (i, batch) in input.iter().enumerate() {
                        op.process(Message::Data(batch.clone()), &mut out).unwrap();
                        // Stream-like: the watermark follows the data, closing earlier windows.
                        let w = (i as i64 / 4) * HOUR - 1;
                        op.process(Message::Watermark(Watermark(w)), &mut out)
                            .unwrap();
                    }
                    op.process(Message::Watermark(Watermark::MAX), &mut out)
                        .unwrap();
                    out
                },
                BatchSize::LargeInput,
            )
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
