//! Criterion benchmark of the Nexmark generator: 1 000 000 events (default configuration) in
//! batches of 8192, as Flink's nested `nexmark` table and as the three split tables.
//!
//! Run: `cargo bench -p flowline-connectors --bench nexmark_gen`

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use flowline_connectors::nexmark::{NexmarkConfig, NexmarkGenerator};

const EVENTS: u64 = 1_000_000;
const BATCH: usize = 8192;

fn config() -> NexmarkConfig {
    NexmarkConfig {
        events: EVENTS,
        ..NexmarkConfig::default()
    }
}

fn nexmark_gen(c: &mut Criterion) {
    let mut group = c.benchmark_group("nexmark_gen");
    group.throughput(Throughput::Elements(EVENTS));
    group.sample_size(10);

    group.bench_function("nested_1m_events", |b| {
        b.iter(|| {
            let mut generator = NexmarkGenerator::new(config()).expect("valid config");
            let mut rows = 0;
            while let Some(batch) = generator.next_batch(BATCH) {
                rows += batch.num_rows();
            }
            assert_eq!(rows as u64, EVENTS);
        })
    });

    group.bench_function("split_1m_events", |b| {
        b.iter(|| {
            let mut generator = NexmarkGenerator::new(config()).expect("valid config");
            let mut rows = 0;
            while let Some(batches) = generator.next_batches(BATCH) {
                rows +=
                    batches.person.num_rows() + batches.auction.num_rows() + batches.bid.num_rows();
            }
            assert_eq!(rows as u64, EVENTS);
        })
    });

    group.finish();
}

criterion_group!(benches, nexmark_gen);
criterion_main!(benches);
