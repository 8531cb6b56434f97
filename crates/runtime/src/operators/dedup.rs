//! Deduplication: `ROW_NUMBER() OVER (PARTITION BY keys ORDER BY ts [DESC]) AS rn ... WHERE
//! rn = 1` over a whole stream.
//!
//! Rows wait until the watermark passes their time, then are taken in (time, arrival) order:
//! * keep first (`ORDER BY ts`): a key's first row is emitted, once; later rows of the key are
//!   dropped (that is the query's meaning, not a loss). State: the keys seen.
//! * keep last (`ORDER BY ts DESC`): each key's newest row replaces the kept one; after each
//!   watermark the keys whose row changed are emitted (update mode: a downstream upsert by the
//!   key holds each key's latest row). State: one row per key.
//!
//! State TTL (`table.exec.state.ttl`, in event time): a key's kept row counts for rows at most
//! `ttl` after it (keep-first: after the key's first row, which is never rewritten; keep-last:
//! after its newest). A later row finds the key forgotten: keep-first emits it again, as Flink
//! does; keep-last emits it as an update of the key, as always. Keys are dropped from memory
//! once the watermark passes their row's time + `ttl` (no row can still find them).
//!
//! Invariants: results depend only on the rows and their arrival order, never on batch sizes
//! or watermark timing (with or without a TTL); a row arriving at or before the watermark is
//! rejected as `late` (the key's answer may already be out).
//!
//! Checkpoints: a frame of the [`codec`](crate::codec) (tag `FDDP`, version 1): the layout,
//! the watermark, then two Arrow IPC streams: the waiting rows, and the kept keys (the kept row
//! for keep-last, with its time and key).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BinaryArray, Int64Array, RecordBatch, UInt32Array, UInt64Array,
};
use arrow::compute::take;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::row::{OwnedRow, RowConverter, SortField};
use flowline_core::plan::DedupSpec;
use flowline_core::{Error, Message, Operator, Output, Reject, RejectReason, Result, Watermark};

use crate::codec::{batch_from_ipc, batch_to_ipc, Decoder, Encoder};
use crate::operators::time_buffer::TimeBuffer;
use crate::rows::rows_as_json;

const MAGIC: [u8; 4] = *b"FDDP";
const VERSION: u8 = 1;
const CHECKPOINT: &str = "deduplicate checkpoint";

/// What is kept per key: the time of its row (the state TTL counts from it), and for keep-last
/// the row.
struct KeptRow {
    time: i64,
    row: Option<OwnedRow>,
}

pub struct Deduplicate {
    spec: DedupSpec,
    table_name: String,
    input: SchemaRef,
    rows: RowConverter,
    /// Rows waiting for the watermark to pass their time.
    waiting: TimeBuffer,
    kept: HashMap<Vec<u8>, KeptRow>,
    kept_bytes: usize,
    /// With a state TTL: one (time, key) per kept key, earliest first. The time is the key's
    /// row time when it was pushed; an entry whose key has a newer row since is pushed again
    /// at that time when it comes due.
    expiry: BinaryHeap<Reverse<(i64, Vec<u8>)>>,
    /// Keys dropped by the state TTL.
    expired: u64,
    watermark: Watermark,
    layout: String,
}

impl Deduplicate {
    pub fn new(spec: DedupSpec, table_name: &str) -> Result<Self> {
        let n = spec.schema.fields().len() - 1;
        let input: SchemaRef = Arc::new(Schema::new(spec.schema.fields()[..n].to_vec()));
        let rows = crate::rows::row_converter(&input)?;
        let layout = format!(
            "keep {}; input {:?}; partition {}",
            if spec.keep_last { "last" } else { "first" },
            input
                .fields()
                .iter()
                .map(|f| f.data_type().clone())
                .collect::<Vec<_>>(),
            spec.partition.len()
        );
        Ok(Deduplicate {
            waiting: TimeBuffer::new(spec.time.clone(), input.clone()),
            spec,
            table_name: table_name.to_string(),
            input,
            rows,
            kept: HashMap::new(),
            kept_bytes: 0,
            expiry: BinaryHeap::new(),
            expired: 0,
            watermark: Watermark::MIN,
            layout,
        })
    }

    fn times(&self, batch: &RecordBatch) -> Result<arrow::array::TimestampMillisecondArray> {
        self.waiting.times(batch)
    }

    fn on_batch(&mut self, batch: RecordBatch, out: &mut Output) -> Result<()> {
        let rejected = self.waiting.push(&batch, self.watermark)?;
        let raws = rows_as_json(&batch, &rejected.iter().map(|r| r.0).collect::<Vec<_>>())?;
        for ((_, reason), raw) in rejected.iter().zip(raws) {
            out.reject(Reject {
                reason: *reason,
                detail: match reason {
                    RejectReason::Late => format!(
                        "rows after its time were already deduplicated when the watermark passed {}",
                        self.watermark.display()
                    ),
                    _ => format!("`{}` is NULL, so the row has no place in time", self.spec.time),
                },
                table: self.table_name.clone(),
                sink: None,
                file: None,
                line: None,
                raw,
                window: None,
                watermark: Some(self.watermark.display()),
            });
        }
        Ok(())
    }

    fn fire(&mut self, out: &mut Output) -> Result<()> {
        let Some(rows) = self.waiting.take_due(self.watermark)? else {
            return Ok(());
        };
        let times = self.times(&rows)?;
        // Already in (time, arrival) order.
        let order: Vec<u32> = (0..rows.num_rows() as u32).collect();
        let n = rows.num_rows();
        let partition: Vec<ArrayRef> = self
            .spec
            .partition
            .iter()
            .map(|e| e.evaluate(&rows)?.into_array(n))
            .collect::<Result<_, _>>()?;
        let keys = RowConverter::new(
            partition
                .iter()
                .map(|c| SortField::new(c.data_type().clone()))
                .collect(),
        )?
        .convert_columns(&partition)?;
        if self.spec.keep_last {
            let encoded = self.rows.convert_columns(rows.columns())?;
            // Keys changed by this watermark, in the order of their newest row.
            let mut changed: Vec<(i64, usize, Vec<u8>)> = vec![];
            for (pos, &i) in order.iter().enumerate() {
                let i = i as usize;
                let key = keys.row(i).as_ref().to_vec();
                let t = times.value(i);
                let row = encoded.row(i).owned();
                let size = row.as_ref().len();
                match self.kept.get_mut(&key) {
                    Some(k) if k.time > t => continue,
                    Some(k) => {
                        self.kept_bytes += size;
                        self.kept_bytes -= k.row.as_ref().map_or(0, |r| r.as_ref().len());
                        k.time = t;
                        k.row = Some(row);
                    }
                    None => {
                        self.kept_bytes += size + self.key_bytes(&key);
                        if self.spec.state_ttl.is_some() {
                            self.expiry.push(Reverse((t, key.clone())));
                        }
                        self.kept.insert(
                            key.clone(),
                            KeptRow {
                                time: t,
                                row: Some(row),
                            },
                        );
                    }
                }
                changed.push((t, pos, key));
            }
            // The last change of each key, in (time, arrival) order.
            let mut last: HashMap<&[u8], usize> = HashMap::new();
            for (j, c) in changed.iter().enumerate() {
                last.insert(&c.2, j);
            }
            let mut emit: Vec<usize> = last.into_values().collect();
            emit.sort();
            let rows_out: Vec<&OwnedRow> = emit
                .iter()
                .filter_map(|&j| self.kept.get(&changed[j].2)?.row.as_ref())
                .collect();
            if !rows_out.is_empty() {
                let columns = self.rows.convert_rows(rows_out.iter().map(|r| r.row()))?;
                self.emit(columns, out)?;
            }
        } else {
            let mut first = vec![];
            for &i in &order {
                let key = keys.row(i as usize).as_ref().to_vec();
                let t = times.value(i as usize);
                match self.kept.get_mut(&key) {
                    // Forgotten by the TTL: the key starts again with this row.
                    Some(k)
                        if self
                            .spec
                            .state_ttl
                            .is_some_and(|ttl| k.time.saturating_add(ttl) < t) =>
                    {
                        k.time = t;
                    }
                    Some(_) => continue,
                    None => {
                        self.kept_bytes += self.key_bytes(&key);
                        if self.spec.state_ttl.is_some() {
                            self.expiry.push(Reverse((t, key.clone())));
                        }
                        self.kept.insert(key, KeptRow { time: t, row: None });
                    }
                }
                first.push(i);
            }
            if !first.is_empty() {
                let idx = UInt32Array::from(first);
                let columns = rows
                    .columns()
                    .iter()
                    .map(|c| take(c.as_ref(), &idx, None))
                    .collect::<Result<Vec<_>, _>>()?;
                self.emit(columns, out)?;
            }
        }
        Ok(())
    }

    /// Approximate bytes of a kept key apart from its row: the key, its map entry and, with a
    /// TTL, its expiry entry (a second copy of the key and its time).
    fn key_bytes(&self, key: &[u8]) -> usize {
        let expiry = match self.spec.state_ttl {
            Some(_) => key.len() + 32,
            None => 0,
        };
        key.len() + 48 + expiry
    }

    /// State TTL: drops the keys whose row is more than the TTL before the watermark (every
    /// row still to come is after the watermark, so none of them could find such a key).
    fn expire(&mut self) {
        let Some(ttl) = self.spec.state_ttl else {
            return;
        };
        let wm = self.watermark.0;
        let due = |time: i64| time.saturating_add(ttl) < wm;
        while self
            .expiry
            .peek()
            .is_some_and(|Reverse((time, _))| due(*time))
        {
            let Reverse((_, key)) = self.expiry.pop().expect("peeked");
            let Some(now) = self.kept.get(&key).map(|k| k.time) else {
                continue;
            };
            if due(now) {
                let k = self.kept.remove(&key).expect("present");
                self.kept_bytes -=
                    self.key_bytes(&key) + k.row.as_ref().map_or(0, |r| r.as_ref().len());
                self.expired += 1;
            } else {
                // A newer row of the key since: due later.
                self.expiry.push(Reverse((now, key)));
            }
        }
    }

    fn emit(&self, mut columns: Vec<ArrayRef>, out: &mut Output) -> Result<()> {
        let n = columns.first().map_or(0, |c| c.len());
        columns.push(Arc::new(UInt64Array::from(vec![1u64; n])));
        let schema = crate::rows::relax_nullability(&self.spec.schema, &columns);
        out.emit(Message::Data(RecordBatch::try_new(schema, columns)?));
        Ok(())
    }

    fn kept_schema(&self) -> SchemaRef {
        let mut fields: Vec<Field> = if self.spec.keep_last {
            self.input
                .fields()
                .iter()
                .enumerate()
                .map(|(i, f)| Field::new(format!("c{i}"), f.data_type().clone(), true))
                .collect()
        } else {
            vec![]
        };
        fields.push(Field::new("key", DataType::Binary, false));
        fields.push(Field::new("time", DataType::Int64, false));
        Arc::new(Schema::new(fields))
    }

    fn write_state(&self, out: &mut Vec<u8>) -> Result<()> {
        let mut e = Encoder::new(out);
        let frame = e.begin_frame(MAGIC, VERSION);
        e.bytes(self.layout.as_bytes())?;
        e.i64(self.watermark.0);
        e.bytes(&batch_to_ipc(&self.waiting.rows()?)?)?;
        let mut kept: Vec<(&Vec<u8>, &KeptRow)> = self.kept.iter().collect();
        kept.sort_by(|a, b| a.0.cmp(b.0));
        let mut columns: Vec<ArrayRef> = if self.spec.keep_last {
            if kept.is_empty() {
                self.input
                    .fields()
                    .iter()
                    .map(|f| arrow::array::new_empty_array(f.data_type()))
                    .collect()
            } else {
                let rows =
                    kept.iter()
                        .map(|k| {
                            k.1.row.as_ref().map(|r| r.row()).ok_or_else(|| {
                                Error::Internal("keep-last key without a row".into())
                            })
                        })
                        .collect::<Result<Vec<_>>>()?;
                self.rows.convert_rows(rows)?
            }
        } else {
            vec![]
        };
        columns.push(Arc::new(BinaryArray::from_iter_values(
            kept.iter().map(|k| k.0.as_slice()),
        )));
        columns.push(Arc::new(Int64Array::from_iter_values(
            kept.iter().map(|k| k.1.time),
        )));
        e.bytes(&batch_to_ipc(&RecordBatch::try_new(
            self.kept_schema(),
            columns,
        )?)?)?;
        e.end_frame(frame);
        Ok(())
    }

    fn read_state(&mut self, state: &[u8]) -> Result<()> {
        let mut d = Decoder::new(state, CHECKPOINT).frame(MAGIC, VERSION)?;
        d.expect_layout(&self.layout)?;
        let watermark = Watermark(d.i64()?);
        let waiting = batch_from_ipc(d.bytes()?, CHECKPOINT, &self.input)?;
        let kept = batch_from_ipc(d.bytes()?, CHECKPOINT, &self.kept_schema())?;
        d.finish()?;
        let width = if self.spec.keep_last {
            self.input.fields().len()
        } else {
            0
        };
        let rows = if self.spec.keep_last {
            Some(self.rows.convert_columns(&kept.columns()[..width])?)
        } else {
            None
        };
        let keys = kept.column(width).as_binary::<i32>();
        let times = kept
            .column(width + 1)
            .as_primitive::<arrow::datatypes::Int64Type>();
        let mut map = HashMap::new();
        let mut bytes = 0;
        self.expiry = if self.spec.state_ttl.is_some() {
            (0..kept.num_rows())
                .map(|i| Reverse((times.value(i), keys.value(i).to_vec())))
                .collect()
        } else {
            BinaryHeap::new()
        };
        for i in 0..kept.num_rows() {
            let row = rows.as_ref().map(|r| r.row(i).owned());
            bytes += self.key_bytes(keys.value(i)) + row.as_ref().map_or(0, |r| r.as_ref().len());
            map.insert(
                keys.value(i).to_vec(),
                KeptRow {
                    time: times.value(i),
                    row,
                },
            );
        }
        self.waiting.replace(waiting)?;
        self.kept = map;
        self.kept_bytes = bytes;
        self.watermark = watermark;
        Ok(())
    }
}

impl Operator for Deduplicate {
    fn process(&mut self, message: Message, out: &mut Output) -> Result<()> {
        match message {
            Message::Data(batch) => self.on_batch(batch, out)?,
            Message::Watermark(w) => {
                if w > self.watermark {
                    self.watermark = w;
                    self.fire(out)?;
                    self.expire();
                }
                out.emit(Message::Watermark(w));
            }
            Message::Retract(_) => return Err(flowline_core::Error::cannot_retract(self.name())),
            other => out.emit(other),
        }
        Ok(())
    }

    fn name(&self) -> &'static str {
        "deduplicate"
    }

    fn state_bytes(&self) -> usize {
        self.waiting.bytes() + self.kept_bytes
    }

    fn snapshot(&self, out: &mut Vec<u8>) -> Result<()> {
        crate::codec::snapshot_into(out, |out| self.write_state(out))
    }

    fn restore(&mut self, state: &[u8]) -> Result<()> {
        self.read_state(state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    use arrow::array::{StringArray, TimestampMillisecondArray};
    use arrow::datatypes::TimeUnit;
    use datafusion::physical_expr::expressions::col;
    use proptest::prelude::*;

    fn spec(keep_last: bool) -> DedupSpec {
        let input = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Utf8, true),
            Field::new("v", DataType::Int64, true),
            Field::new("ts", DataType::Timestamp(TimeUnit::Millisecond, None), true),
        ]));
        let mut fields: Vec<_> = input.fields().iter().cloned().collect();
        fields.push(Arc::new(Field::new("rn", DataType::UInt64, false)));
        DedupSpec {
            partition: vec![col("k", &input).unwrap()],
            time: col("ts", &input).unwrap(),
            keep_last,
            schema: Arc::new(Schema::new(fields)),
            state_ttl: None,
        }
    }

    fn batch(rows: &[(&str, i64, i64)]) -> RecordBatch {
        let n = spec(false).schema.fields().len() - 1;
        let schema = Arc::new(Schema::new(spec(false).schema.fields()[..n].to_vec()));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.0))),
                Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.1))),
                Arc::new(TimestampMillisecondArray::from_iter_values(
                    rows.iter().map(|r| r.2),
                )),
            ],
        )
        .unwrap()
    }

    /// (k, v) of every emitted row, in order, and the number of rejects.
    fn run(op: &mut Deduplicate, messages: &[Message]) -> (Vec<(String, i64)>, usize) {
        let (mut rows, mut rejects) = (vec![], 0);
        for m in messages {
            let mut out = Output::default();
            op.process(m.clone(), &mut out).unwrap();
            rejects += out.rejects.len();
            for m in out.messages {
                if let Message::Data(b) = m {
                    let k = b.column(0).as_string::<i32>();
                    let v = b.column(1).as_primitive::<arrow::datatypes::Int64Type>();
                    for i in 0..b.num_rows() {
                        rows.push((k.value(i).to_string(), v.value(i)));
                    }
                }
            }
        }
        (rows, rejects)
    }

    #[test]
    fn keeps_the_first_or_the_last_row_in_event_time() {
        let messages = [
            Message::Data(batch(&[("a", 1, 20), ("a", 2, 10), ("b", 3, 15)])),
            Message::Watermark(Watermark(15)),
            Message::Data(batch(&[("a", 4, 30), ("a", 5, 12)])),
            Message::Watermark(Watermark::MAX),
        ];
        let (first, rejects) = run(&mut Deduplicate::new(spec(false), "t").unwrap(), &messages);
        assert_eq!(first, [("a".into(), 2), ("b".into(), 3)]);
        // v = 5 at 12 came after the watermark passed 15: late.
        assert_eq!(rejects, 1);
        let (last, _) = run(&mut Deduplicate::new(spec(true), "t").unwrap(), &messages);
        // After watermark 15: a's newest so far is v = 2 (time 10), b's v = 3; at the end a's
        // row at 30.
        assert_eq!(last, [("a".into(), 2), ("b".into(), 3), ("a".into(), 4)]);
    }

    /// With a TTL a key's row counts for rows at most the TTL after it: keep-first emits a later
    /// row again; results do not depend on the watermarks; keys leave memory once the
    /// watermark passes their row's time + TTL, and a restore keeps all that.
    #[test]
    fn state_ttl_forgets_keys_in_event_time() {
        let ttl_spec = |keep_last| DedupSpec {
            state_ttl: Some(100),
            ..spec(keep_last)
        };
        let rows = [
            ("a", 1, 10),
            ("b", 2, 10),
            ("a", 3, 110), // 100 after a's first row: still a duplicate
            ("b", 4, 120), // more than 100 after b's first row: b starts again
            ("a", 5, 111), // a's first row stays at 10: 111 is past the TTL, a starts again
            ("a", 6, 200), // within 100 of a's row at 111: a duplicate
        ];
        let mut sorted = rows.to_vec();
        sorted.sort_by_key(|r| r.2);
        let expected: Vec<(String, i64)> = [("a", 1), ("b", 2), ("a", 5), ("b", 4)]
            .iter()
            .map(|(k, v)| (k.to_string(), *v))
            .collect();
        let whole = [
            Message::Data(batch(&sorted)),
            Message::Watermark(Watermark::MAX),
        ];
        let (got, _) = run(&mut Deduplicate::new(ttl_spec(false), "t").unwrap(), &whole);
        assert_eq!(got, expected);
        // Row by row, the watermark just before the next row: the same rows, and keys leave
        // memory.
        let mut messages = vec![];
        for (i, r) in sorted.iter().enumerate() {
            messages.push(Message::Data(batch(&[*r])));
            if let Some(next) = sorted.get(i + 1) {
                messages.push(Message::Watermark(Watermark(next.2 - 1)));
            }
        }
        messages.push(Message::Watermark(Watermark(400)));
        for at in 0..=messages.len() {
            let mut first = Deduplicate::new(ttl_spec(false), "t").unwrap();
            let (mut got, rejects) = run(&mut first, &messages[..at]);
            let mut state = vec![];
            first.snapshot(&mut state).unwrap();
            let mut second = Deduplicate::new(ttl_spec(false), "t").unwrap();
            second.restore(&state).unwrap();
            got.extend(run(&mut second, &messages[at..]).0);
            assert_eq!((got, rejects), (expected.clone(), 0), "restored at {at}");
            assert!(second.kept.is_empty(), "all expired at watermark 400");
            assert_eq!(first.expired + second.expired, 3, "at {at}");
        }
        // Without a TTL, a and b are emitted once.
        let (got, _) = run(&mut Deduplicate::new(spec(false), "t").unwrap(), &whole);
        assert_eq!(got, [("a".into(), 1), ("b".into(), 2)]);
        // Keep-last: the same final rows with or without a TTL.
        let (got, _) = run(
            &mut Deduplicate::new(ttl_spec(true), "t").unwrap(),
            &messages,
        );
        let last: BTreeMap<String, i64> = got.into_iter().collect();
        assert_eq!(last, BTreeMap::from([("a".into(), 6), ("b".into(), 4)]));
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, failure_persistence: None, ..ProptestConfig::default() })]

        /// Any batching and watermarks, and a restore anywhere: the same kept rows as one batch.
        #[test]
        fn batching_and_restores_do_not_change_results(
            keep_last in any::<bool>(),
            rows in prop::collection::vec((0usize..3, 0i64..100, 0i64..50), 0..40),
            cuts in prop::collection::vec(0usize..40, 0..5),
            restore_at in 0usize..12,
        ) {
            let keys = ["a", "b", "c"];
            let mut rows = rows;
            rows.sort_by_key(|r| r.2);
            let all: Vec<(&str, i64, i64)> = rows.iter().map(|&(k, v, t)| (keys[k], v, t)).collect();
            let whole = [Message::Data(batch(&all)), Message::Watermark(Watermark::MAX)];
            let (expected, _) = run(&mut Deduplicate::new(spec(keep_last), "t").unwrap(), &whole);
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(all.len())).collect();
            cuts.extend([0, all.len()]);
            cuts.sort();
            let mut messages = vec![];
            for w in cuts.windows(2) {
                if w[0] < w[1] {
                    messages.push(Message::Data(batch(&all[w[0]..w[1]])));
                    if let Some(next) = all.get(w[1]) {
                        messages.push(Message::Watermark(Watermark(next.2 - 1)));
                    }
                }
            }
            messages.push(Message::Watermark(Watermark::MAX));
            let at = restore_at.min(messages.len());
            let mut first = Deduplicate::new(spec(keep_last), "t").unwrap();
            let (mut got, r1) = run(&mut first, &messages[..at]);
            let mut state = vec![];
            first.snapshot(&mut state).unwrap();
            let mut second = Deduplicate::new(spec(keep_last), "t").unwrap();
            second.restore(&state).unwrap();
            let (rest, r2) = run(&mut second, &messages[at..]);
            prop_assert_eq!(r1 + r2, 0);
            got.extend(rest);
            if keep_last {
                // Updates: the last row emitted per key is the answer.
                let upsert = |rows: &[(String, i64)]| -> BTreeMap<String, i64> {
                    rows.iter().cloned().collect()
                };
                prop_assert_eq!(upsert(&got), upsert(&expected));
            } else {
                prop_assert_eq!(got, expected);
            }
        }
    }
}
