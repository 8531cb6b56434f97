//! OVER aggregates: `agg(x) OVER (PARTITION BY k ORDER BY ts RANGE | ROWS BETWEEN ...
//! PRECEDING AND CURRENT ROW)`, for example the velocity check "transactions of this card in
//! the last 60 seconds" on every transaction.
//!
//! A row waits until the watermark passes its time (no row of its partition can still arrive
//! before it); then the rows that became final are taken in event-time order (ties in arrival
//! order), each partition's frame advances over them, and every row is emitted once with the
//! aggregates over its frame appended.
//!
//! Frames (Flink's semantics):
//! * `RANGE BETWEEN p PRECEDING AND CURRENT ROW`: the rows of the partition with time in
//!   `[t - p, t]`, including every row with the same time (peers get the same results).
//! * `ROWS BETWEEN n PRECEDING AND CURRENT ROW`: the current row and the `n` rows before it.
//! * `UNBOUNDED PRECEDING`: every earlier row; kept as running aggregates, not as rows.
//!
//! Invariants:
//! * Every row is emitted exactly once, when the watermark passes its time, in (time, arrival)
//!   order; results depend only on the rows and their arrival order, never on batch sizes or
//!   when watermarks come, so every mode writes the same rows.
//! * A row whose time is at or before the watermark when it arrives is late (rows after it
//!   were already emitted without it): rejected with reason `late`. A row without a time is
//!   rejected with `missing-event-time`.
//! * Bounded RANGE frames keep only rows within `p` of the watermark; a partition without such
//!   rows is dropped. ROWS frames keep `n` rows per partition; UNBOUNDED frames one running
//!   aggregate per call and partition.
//! * Bounded frames are recomputed over the kept rows for each result (O(frame) per row), so
//!   floating-point sums never drift.
//! * State TTL (`table.exec.state.ttl`, event time): a partition's rows and running aggregates
//!   count for rows at most `ttl` after its newest row; a row later than that starts the
//!   partition afresh (as if its state had expired, as in Flink). Rows are taken in time
//!   order, so this depends only on the rows, and batch, stream and restored runs agree. A
//!   partition leaves memory once the watermark passes its newest row's time + `ttl` (every row
//!   still to come would start it afresh).
//!
//! Checkpoints: a frame of the [`codec`](crate::codec) (tag `FOVR`, version 1): the layout, the
//! watermark, then three Arrow IPC streams: the waiting rows, the kept frame rows (partition
//! key, time, arguments) and the running aggregates (partition key, then value and count per
//! call, then with a TTL the partition's newest time).

use std::cmp::{Ordering, Reverse};
use std::collections::{BTreeMap, BinaryHeap, VecDeque};
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, BinaryArray, Int64Array, RecordBatch};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::row::{RowConverter, SortField};
use datafusion::common::ScalarValue;
use flowline_core::plan::{AggregateFunction, OverFrame, OverSpec};
use flowline_core::{Error, Message, Operator, Output, Reject, RejectReason, Result, Watermark};

use crate::codec::{batch_from_ipc, batch_to_ipc, Decoder, Encoder};
use crate::operators::time_buffer::TimeBuffer;
use crate::rows::rows_as_json;

const MAGIC: [u8; 4] = *b"FOVR";
const VERSION: u8 = 1;
const CHECKPOINT: &str = "over-aggregate checkpoint";

/// One aggregate over the rows added so far: the value (sum, minimum or maximum; unused by
/// COUNT) and how many non-NULL arguments were added.
#[derive(Debug, Clone)]
struct Acc {
    value: ScalarValue,
    count: i64,
}

impl Acc {
    fn new(value_type: &DataType) -> Result<Acc> {
        Ok(Acc {
            value: ScalarValue::try_from(value_type)?,
            count: 0,
        })
    }

    fn add(&mut self, function: AggregateFunction, v: &ScalarValue) -> Result<()> {
        if v.is_null() {
            return Ok(());
        }
        self.count += 1;
        let better = |wanted: Ordering, value: &ScalarValue| {
            value.is_null() || v.partial_cmp(value) == Some(wanted)
        };
        match function {
            AggregateFunction::Count => {}
            AggregateFunction::Sum | AggregateFunction::Avg => {
                self.value = if self.value.is_null() {
                    v.clone()
                } else {
                    self.value.add_checked(v).map_err(|e| {
                        Error::Execution(format!(
                            "{function:?} OVER (...) overflows its type ({e}): CAST its argument to DECIMAL(38, s) or DOUBLE"
                        ))
                    })?
                }
            }
            AggregateFunction::Min if better(Ordering::Less, &self.value) => self.value = v.clone(),
            AggregateFunction::Max if better(Ordering::Greater, &self.value) => {
                self.value = v.clone()
            }
            AggregateFunction::Min | AggregateFunction::Max => {}
            other => {
                return Err(Error::Internal(format!(
                    "{other:?} is not an OVER aggregate"
                )))
            }
        }
        Ok(())
    }

    fn finish(&self, function: AggregateFunction, output: &DataType) -> Result<ScalarValue> {
        Ok(match function {
            AggregateFunction::Count => ScalarValue::Int64(Some(self.count)),
            AggregateFunction::Avg if self.count == 0 => ScalarValue::try_from(output)?,
            AggregateFunction::Avg => {
                let ScalarValue::Float64(Some(sum)) = self.value.cast_to(&DataType::Float64)?
                else {
                    return Err(Error::Internal("AVG without a sum".into()));
                };
                ScalarValue::Float64(Some(sum / self.count as f64)).cast_to(output)?
            }
            _ => self.value.cast_to(output)?,
        })
    }
}

/// A frame row kept for later frames: its time, its arguments and their approximate bytes.
type Kept = (i64, Vec<ScalarValue>, usize);

/// The input's columns: the output's without the calls'.
fn input_schema(spec: &OverSpec) -> SchemaRef {
    let n = spec.schema.fields().len() - spec.calls.len();
    Arc::new(Schema::new(spec.schema.fields()[..n].to_vec()))
}

/// Approximate bytes of a partition apart from its kept rows: key, map entry, running totals.
fn partition_bytes(key: &[u8], p: &Partition) -> usize {
    key.len() + 64 + p.totals.iter().map(|a| 16 + a.value.size()).sum::<usize>()
}

/// What one partition keeps between rows.
#[derive(Debug, Default)]
struct Partition {
    /// Bounded frames: the rows that can still be in a frame, in (time, arrival) order.
    rows: VecDeque<Kept>,
    /// Unbounded frames: the aggregates over every row so far, one per call.
    totals: Vec<Acc>,
    /// The time of the partition's newest row (its last row for bounded frames).
    last: i64,
    /// State TTL: the time of the partition's entry in the expiry heap (an entry with another
    /// time is left over from an earlier partition of the key, and is dropped).
    queued_at: i64,
}

pub struct OverAggregate {
    spec: OverSpec,
    table_name: String,
    /// Rows waiting for the watermark to pass their time.
    waiting: TimeBuffer,
    partitions: BTreeMap<Vec<u8>, Partition>,
    /// State TTL: one (time, key) entry per partition, earliest first, checked when the
    /// watermark passes time + TTL (the partition may have had newer rows since).
    expiry: BinaryHeap<Reverse<(i64, Vec<u8>)>>,
    /// Bytes of the kept frame rows and of the partitions themselves, kept up to date.
    kept_bytes: usize,
    watermark: Watermark,
    /// The type each call's argument is held in (the SUM type for SUM, FLOAT64 for AVG).
    arg_types: Vec<DataType>,
    layout: String,
}

impl OverAggregate {
    pub fn new(spec: OverSpec, table_name: &str) -> Result<Self> {
        let inputs = spec.schema.fields().len() - spec.calls.len();
        let mut arg_types = vec![];
        for (i, (function, arg)) in spec.calls.iter().enumerate() {
            let output = spec.schema.field(inputs + i).data_type().clone();
            arg_types.push(match function {
                AggregateFunction::Count => DataType::Int64,
                AggregateFunction::Sum | AggregateFunction::Min | AggregateFunction::Max => output,
                AggregateFunction::Avg => DataType::Float64,
                other => {
                    return Err(Error::Internal(format!(
                        "{other:?}({arg}) is not an OVER aggregate"
                    )))
                }
            });
        }
        let mut layout = format!(
            "{:?}; input {inputs} columns; partition {}; calls {:?} of {:?}",
            spec.frame,
            spec.partition.len(),
            spec.calls.iter().map(|c| c.0).collect::<Vec<_>>(),
            arg_types
        );
        if let Some(ttl) = spec.state_ttl {
            layout.push_str(&format!("; state ttl {ttl} ms"));
        }
        Ok(OverAggregate {
            waiting: TimeBuffer::new(spec.time.clone(), input_schema(&spec)),
            spec,
            table_name: table_name.to_string(),
            partitions: BTreeMap::new(),
            expiry: BinaryHeap::new(),
            kept_bytes: 0,
            watermark: Watermark::MIN,
            arg_types,
            layout,
        })
    }

    fn input_schema(&self) -> SchemaRef {
        input_schema(&self.spec)
    }

    fn unbounded(&self) -> bool {
        matches!(
            self.spec.frame,
            OverFrame::Range {
                preceding: i64::MAX
            } | OverFrame::Rows {
                preceding: u64::MAX
            }
        )
    }

    fn times(&self, batch: &RecordBatch) -> Result<arrow::array::TimestampMillisecondArray> {
        self.waiting.times(batch)
    }

    fn reject(
        &self,
        batch: &RecordBatch,
        rows: &[usize],
        reason: RejectReason,
        out: &mut Output,
    ) -> Result<()> {
        let detail = match reason {
            RejectReason::Late => format!(
                "rows after its time were already emitted when the watermark passed {}",
                self.watermark.display()
            ),
            _ => format!(
                "`{}` is NULL, so the row has no place in time",
                self.spec.time
            ),
        };
        for raw in rows_as_json(batch, rows)? {
            out.reject(Reject {
                reason,
                detail: detail.clone(),
                table: self.table_name.clone(),
                sink: None,
                file: None,
                line: None,
                raw,
                window: None,
                watermark: (reason == RejectReason::Late).then(|| self.watermark.display()),
            });
        }
        Ok(())
    }

    fn on_batch(&mut self, batch: RecordBatch, out: &mut Output) -> Result<()> {
        let refused = self.waiting.push(&batch, self.watermark)?;
        for reason in [RejectReason::MissingEventTime, RejectReason::Late] {
            let rows: Vec<usize> = refused
                .iter()
                .filter(|r| r.1 == reason)
                .map(|r| r.0)
                .collect();
            self.reject(&batch, &rows, reason, out)?;
        }
        Ok(())
    }

    /// Emits every waiting row whose time is at or before the watermark, with its aggregates.
    fn fire(&mut self, out: &mut Output) -> Result<()> {
        let w = self.watermark.0;
        if let Some(fired) = self.waiting.take_due(self.watermark)? {
            let result = self.compute(&fired)?;
            out.emit(Message::Data(result));
        }
        // Bounded RANGE frames: rows older than every future frame are dropped.
        if let OverFrame::Range { preceding } = self.spec.frame {
            if preceding != i64::MAX {
                let oldest = w.saturating_sub(preceding);
                let mut freed = 0;
                self.partitions.retain(|k, p| {
                    while p.rows.front().is_some_and(|r| r.0 < oldest) {
                        freed += p.rows.pop_front().map_or(0, |r| r.2);
                    }
                    if p.rows.is_empty() {
                        freed += partition_bytes(k, p);
                    }
                    !p.rows.is_empty()
                });
                self.kept_bytes = self.kept_bytes.saturating_sub(freed);
            }
        }
        // State TTL: a partition no row to come can reach is dropped.
        if let Some(ttl) = self.spec.state_ttl {
            let due = |time: i64| time.saturating_add(ttl) < w;
            while self
                .expiry
                .peek()
                .is_some_and(|Reverse((time, _))| due(*time))
            {
                let Reverse((time, key)) = self.expiry.pop().expect("peeked");
                let entry = key.len() + 32;
                let Some(p) = self
                    .partitions
                    .get_mut(&key)
                    .filter(|p| p.queued_at == time)
                else {
                    // Left over from a partition dropped since.
                    self.kept_bytes = self.kept_bytes.saturating_sub(entry);
                    continue;
                };
                if due(p.last) {
                    let freed =
                        partition_bytes(&key, p) + p.rows.iter().map(|r| r.2).sum::<usize>();
                    self.kept_bytes = self.kept_bytes.saturating_sub(freed + entry);
                    self.partitions.remove(&key);
                } else {
                    // Newer rows since: due later.
                    p.queued_at = p.last;
                    self.expiry.push(Reverse((p.last, key)));
                }
            }
        }
        Ok(())
    }

    /// The rows in (time, arrival) order with one column per call appended.
    fn compute(&mut self, rows: &RecordBatch) -> Result<RecordBatch> {
        let n = rows.num_rows();
        let times = self.times(rows)?;
        let partition: Vec<ArrayRef> = self
            .spec
            .partition
            .iter()
            .map(|e| e.evaluate(rows)?.into_array(n))
            .collect::<Result<_, _>>()?;
        let keys = RowConverter::new(
            partition
                .iter()
                .map(|c| SortField::new(c.data_type().clone()))
                .collect(),
        )?
        .convert_columns(&partition)?;
        let args: Vec<ArrayRef> = self
            .spec
            .calls
            .iter()
            .zip(&self.arg_types)
            .map(|((_, arg), t)| Ok(cast(&arg.evaluate(rows)?.into_array(n)?, t)?))
            .collect::<Result<_>>()?;
        let inputs = self.spec.schema.fields().len() - self.spec.calls.len();
        let outputs: Vec<DataType> = (0..self.spec.calls.len())
            .map(|c| self.spec.schema.field(inputs + c).data_type().clone())
            .collect();
        let mut results: Vec<Vec<ScalarValue>> = vec![Vec::with_capacity(n); self.spec.calls.len()];
        let unbounded = self.unbounded();
        let peers = matches!(self.spec.frame, OverFrame::Range { .. });
        let mut start = 0;
        while start < n {
            // RANGE: all rows with this time (in any partition) enter their frames before any
            // result is taken, so peers see each other. ROWS: one row at a time.
            let t = times.value(start);
            let mut end = start + 1;
            if peers {
                while end < n && times.value(end) == t {
                    end += 1;
                }
            }
            for i in start..end {
                let key = keys.row(i);
                let values = args
                    .iter()
                    .map(|a| ScalarValue::try_from_array(a, i))
                    .collect::<Result<Vec<_>, _>>()?;
                // A new partition allocates its key; a known one is found without allocating.
                if !self.partitions.contains_key(key.as_ref()) {
                    let totals = if unbounded {
                        self.arg_types.iter().map(Acc::new).collect::<Result<_>>()?
                    } else {
                        vec![]
                    };
                    let partition = Partition {
                        rows: VecDeque::new(),
                        totals,
                        last: t,
                        queued_at: t,
                    };
                    self.kept_bytes += partition_bytes(key.as_ref(), &partition);
                    if self.spec.state_ttl.is_some() {
                        self.kept_bytes += key.as_ref().len() + 32;
                        self.expiry.push(Reverse((t, key.as_ref().to_vec())));
                    }
                    self.partitions.insert(key.as_ref().to_vec(), partition);
                }
                let partition = self
                    .partitions
                    .get_mut(key.as_ref())
                    .ok_or_else(|| Error::Internal("OVER partition vanished".into()))?;
                // State TTL: rows more than `ttl` before this one no longer count.
                if self
                    .spec
                    .state_ttl
                    .is_some_and(|ttl| partition.last.saturating_add(ttl) < t)
                {
                    let before = partition_bytes(key.as_ref(), partition)
                        + partition.rows.drain(..).map(|r| r.2).sum::<usize>();
                    if unbounded {
                        partition.totals =
                            self.arg_types.iter().map(Acc::new).collect::<Result<_>>()?;
                    }
                    let after = partition_bytes(key.as_ref(), partition);
                    self.kept_bytes = (self.kept_bytes + after).saturating_sub(before);
                }
                partition.last = partition.last.max(t);
                if unbounded {
                    for ((acc, (function, _)), v) in partition
                        .totals
                        .iter_mut()
                        .zip(&self.spec.calls)
                        .zip(&values)
                    {
                        acc.add(*function, v)?;
                    }
                } else {
                    let bytes = 24 + values.iter().map(ScalarValue::size).sum::<usize>();
                    self.kept_bytes += bytes;
                    partition.rows.push_back((t, values, bytes));
                    // Drop what no frame from here on can hold.
                    loop {
                        let drop = match (self.spec.frame, partition.rows.front()) {
                            (OverFrame::Range { preceding }, Some(r)) => {
                                r.0 < t.saturating_sub(preceding)
                            }
                            (OverFrame::Rows { preceding }, Some(_)) => {
                                partition.rows.len() as u64 > preceding.saturating_add(1)
                            }
                            (_, None) => false,
                        };
                        if !drop {
                            break;
                        }
                        self.kept_bytes -= partition.rows.pop_front().map_or(0, |r| r.2);
                    }
                }
                if !peers {
                    self.result(keys.row(i).as_ref(), &outputs, &mut results)?;
                }
            }
            if peers {
                for i in start..end {
                    self.result(keys.row(i).as_ref(), &outputs, &mut results)?;
                }
            }
            start = end;
        }
        let mut columns = rows.columns().to_vec();
        for (values, output) in results.into_iter().zip(&outputs) {
            let array = if values.is_empty() {
                arrow::array::new_empty_array(output)
            } else {
                ScalarValue::iter_to_array(values)?
            };
            columns.push(cast(&array, output)?);
        }
        let schema = crate::rows::relax_nullability(&self.spec.schema, &columns);
        Ok(RecordBatch::try_new(schema, columns)?)
    }

    /// Appends the aggregates over the current frame of partition `key` to `results`.
    fn result(
        &self,
        key: &[u8],
        outputs: &[DataType],
        results: &mut [Vec<ScalarValue>],
    ) -> Result<()> {
        let partition = self
            .partitions
            .get(key)
            .ok_or_else(|| Error::Internal("OVER partition vanished".into()))?;
        for (c, (function, _)) in self.spec.calls.iter().enumerate() {
            let value = if self.unbounded() {
                partition.totals[c].finish(*function, &outputs[c])?
            } else {
                let mut acc = Acc::new(&self.arg_types[c])?;
                for row in &partition.rows {
                    acc.add(*function, &row.1[c])?;
                }
                acc.finish(*function, &outputs[c])?
            };
            results[c].push(value);
        }
        Ok(())
    }

    fn kept_schema(&self) -> SchemaRef {
        let mut fields = vec![
            Field::new("key", DataType::Binary, false),
            Field::new("time", DataType::Int64, false),
        ];
        for (i, t) in self.arg_types.iter().enumerate() {
            fields.push(Field::new(format!("arg{i}"), t.clone(), true));
        }
        Arc::new(Schema::new(fields))
    }

    fn totals_schema(&self) -> SchemaRef {
        let mut fields = vec![Field::new("key", DataType::Binary, false)];
        for (i, t) in self.arg_types.iter().enumerate() {
            fields.push(Field::new(format!("value{i}"), t.clone(), true));
            fields.push(Field::new(format!("count{i}"), DataType::Int64, false));
        }
        if self.spec.state_ttl.is_some() {
            fields.push(Field::new("last", DataType::Int64, false));
        }
        Arc::new(Schema::new(fields))
    }

    fn write_state(&self, out: &mut Vec<u8>) -> Result<()> {
        let mut e = Encoder::new(out);
        let frame = e.begin_frame(MAGIC, VERSION);
        e.bytes(self.layout.as_bytes())?;
        e.i64(self.watermark.0);
        e.bytes(&batch_to_ipc(&self.waiting.rows()?)?)?;
        // Kept frame rows, partition by partition in key order.
        let mut keys: Vec<&[u8]> = vec![];
        let mut times = vec![];
        let mut args: Vec<Vec<ScalarValue>> = vec![vec![]; self.arg_types.len()];
        let mut total_keys: Vec<&[u8]> = vec![];
        let mut totals: Vec<Vec<ScalarValue>> = vec![vec![]; self.arg_types.len()];
        let mut counts: Vec<Vec<i64>> = vec![vec![]; self.arg_types.len()];
        let mut lasts: Vec<i64> = vec![];
        for (key, p) in &self.partitions {
            for (t, values, _) in &p.rows {
                keys.push(key);
                times.push(*t);
                for (c, v) in values.iter().enumerate() {
                    args[c].push(v.clone());
                }
            }
            if !p.totals.is_empty() {
                total_keys.push(key);
                for (c, acc) in p.totals.iter().enumerate() {
                    totals[c].push(acc.value.clone());
                    counts[c].push(acc.count);
                }
                lasts.push(p.last);
            }
        }
        let scalars = |values: Vec<ScalarValue>, t: &DataType| -> Result<ArrayRef> {
            Ok(if values.is_empty() {
                arrow::array::new_empty_array(t)
            } else {
                cast(&ScalarValue::iter_to_array(values)?, t)?
            })
        };
        let mut columns: Vec<ArrayRef> = vec![
            Arc::new(BinaryArray::from_iter_values(keys)),
            Arc::new(Int64Array::from(times)),
        ];
        for (values, t) in args.into_iter().zip(&self.arg_types) {
            columns.push(scalars(values, t)?);
        }
        e.bytes(&batch_to_ipc(&RecordBatch::try_new(
            self.kept_schema(),
            columns,
        )?)?)?;
        let mut columns: Vec<ArrayRef> = vec![Arc::new(BinaryArray::from_iter_values(total_keys))];
        for ((values, count), t) in totals.into_iter().zip(counts).zip(&self.arg_types) {
            columns.push(scalars(values, t)?);
            columns.push(Arc::new(Int64Array::from(count)));
        }
        if self.spec.state_ttl.is_some() {
            columns.push(Arc::new(Int64Array::from(lasts)));
        }
        e.bytes(&batch_to_ipc(&RecordBatch::try_new(
            self.totals_schema(),
            columns,
        )?)?)?;
        e.end_frame(frame);
        Ok(())
    }

    fn read_state(&mut self, state: &[u8]) -> Result<()> {
        let mut d = Decoder::new(state, CHECKPOINT).frame(MAGIC, VERSION)?;
        d.expect_layout(&self.layout)?;
        let watermark = Watermark(d.i64()?);
        let waiting = batch_from_ipc(d.bytes()?, CHECKPOINT, &self.input_schema())?;
        let kept = batch_from_ipc(d.bytes()?, CHECKPOINT, &self.kept_schema())?;
        let totals = batch_from_ipc(d.bytes()?, CHECKPOINT, &self.totals_schema())?;
        d.finish()?;
        let mut partitions: BTreeMap<Vec<u8>, Partition> = BTreeMap::new();
        let mut kept_bytes = 0;
        let key_column = |b: &RecordBatch| b.column(0).as_binary::<i32>().clone();
        let keys = key_column(&kept);
        let times = kept.column(1).as_primitive::<arrow::datatypes::Int64Type>();
        for i in 0..kept.num_rows() {
            let values = (0..self.arg_types.len())
                .map(|c| ScalarValue::try_from_array(kept.column(2 + c), i))
                .collect::<Result<Vec<_>, _>>()?;
            let bytes = 24 + values.iter().map(ScalarValue::size).sum::<usize>();
            kept_bytes += bytes;
            let p = partitions.entry(keys.value(i).to_vec()).or_default();
            if p.rows.back().is_some_and(|r| r.0 > times.value(i)) {
                return Err(d.error("kept frame rows are not in time order"));
            }
            p.rows.push_back((times.value(i), values, bytes));
            p.last = times.value(i);
        }
        let keys = key_column(&totals);
        for i in 0..totals.num_rows() {
            let accs = (0..self.arg_types.len())
                .map(|c| {
                    Ok(Acc {
                        value: ScalarValue::try_from_array(totals.column(1 + 2 * c), i)?,
                        count: totals
                            .column(2 + 2 * c)
                            .as_primitive::<arrow::datatypes::Int64Type>()
                            .value(i),
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            let p = partitions.entry(keys.value(i).to_vec()).or_default();
            p.totals = accs;
            if self.spec.state_ttl.is_some() {
                let lasts = totals.column(totals.num_columns() - 1);
                p.last = lasts.as_primitive::<arrow::datatypes::Int64Type>().value(i);
            }
        }
        kept_bytes += partitions
            .iter()
            .map(|(k, p)| partition_bytes(k, p))
            .sum::<usize>();
        self.waiting.replace(waiting)?;
        self.expiry = BinaryHeap::new();
        if self.spec.state_ttl.is_some() {
            for (key, p) in partitions.iter_mut() {
                p.queued_at = p.last;
                kept_bytes += key.len() + 32;
                self.expiry.push(Reverse((p.last, key.clone())));
            }
        }
        self.partitions = partitions;
        self.kept_bytes = kept_bytes;
        self.watermark = watermark;
        Ok(())
    }
}

impl Operator for OverAggregate {
    fn process(&mut self, message: Message, out: &mut Output) -> Result<()> {
        match message {
            Message::Data(batch) => self.on_batch(batch, out)?,
            Message::Watermark(w) => {
                if w > self.watermark {
                    self.watermark = w;
                    self.fire(out)?;
                }
                out.emit(Message::Watermark(w));
            }
            Message::Retract(_) => return Err(flowline_core::Error::cannot_retract(self.name())),
            other => out.emit(other),
        }
        Ok(())
    }

    fn name(&self) -> &'static str {
        "over-aggregate"
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
    use arrow::array::{StringArray, TimestampMillisecondArray};
    use arrow::datatypes::TimeUnit;
    use datafusion::physical_expr::expressions::col;
    use proptest::prelude::*;

    fn input() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("k", DataType::Utf8, true),
            Field::new("v", DataType::Int64, true),
            Field::new("ts", DataType::Timestamp(TimeUnit::Millisecond, None), true),
        ]))
    }

    fn spec(frame: OverFrame) -> OverSpec {
        let input = input();
        let calls = vec![
            (AggregateFunction::Count, col("v", &input).unwrap()),
            (AggregateFunction::Sum, col("v", &input).unwrap()),
            (AggregateFunction::Min, col("v", &input).unwrap()),
            (AggregateFunction::Avg, col("v", &input).unwrap()),
        ];
        let mut fields: Vec<_> = input.fields().iter().cloned().collect();
        for (name, t) in [
            ("n", DataType::Int64),
            ("total", DataType::Int64),
            ("least", DataType::Int64),
            ("mean", DataType::Float64),
        ] {
            fields.push(Arc::new(Field::new(name, t, true)));
        }
        OverSpec {
            partition: vec![col("k", &input).unwrap()],
            time: col("ts", &input).unwrap(),
            frame,
            calls,
            schema: Arc::new(Schema::new(fields)),
            state_ttl: None,
        }
    }

    fn ttl_spec(frame: OverFrame, ttl: Option<i64>) -> OverSpec {
        OverSpec {
            state_ttl: ttl,
            ..spec(frame)
        }
    }

    fn batch(rows: &[(&str, Option<i64>, Option<i64>)]) -> RecordBatch {
        RecordBatch::try_new(
            input(),
            vec![
                Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.0))),
                Arc::new(Int64Array::from_iter(rows.iter().map(|r| r.1))),
                Arc::new(TimestampMillisecondArray::from_iter(
                    rows.iter().map(|r| r.2),
                )),
            ],
        )
        .unwrap()
    }

    /// Output rows as text, and the number of rejects.
    fn run(op: &mut OverAggregate, messages: &[Message]) -> (Vec<String>, usize) {
        let (mut rows, mut rejects) = (vec![], 0);
        for m in messages {
            let mut out = Output::default();
            op.process(m.clone(), &mut out).unwrap();
            rejects += out.rejects.len();
            for m in out.messages {
                if let Message::Data(b) = m {
                    let text = arrow::util::pretty::pretty_format_batches(&[b]).unwrap();
                    rows.extend(
                        text.to_string()
                            .lines()
                            .skip(3)
                            .filter(|l| !l.starts_with('+'))
                            .map(|l| {
                                let cells: Vec<&str> = l.split('|').map(str::trim).collect();
                                cells[1..cells.len() - 1].join(",")
                            }),
                    );
                }
            }
        }
        (rows, rejects)
    }

    #[test]
    fn range_frames_include_peers_and_expire_by_time() {
        let mut op = OverAggregate::new(spec(OverFrame::Range { preceding: 10 }), "t").unwrap();
        let messages = [
            Message::Data(batch(&[
                ("a", Some(1), Some(100)),
                ("a", Some(2), Some(105)),
                ("b", Some(7), Some(105)),
                ("a", Some(4), Some(105)),
                ("a", None, Some(116)),
            ])),
            Message::Watermark(Watermark(105)),
            // Late: the watermark passed 105.
            Message::Data(batch(&[("a", Some(9), Some(104)), ("a", Some(3), None)])),
            Message::Watermark(Watermark::MAX),
        ];
        let (rows, rejects) = run(&mut op, &messages);
        assert_eq!(rejects, 2);
        let cells: Vec<Vec<&str>> = rows.iter().map(|r| r.split(',').collect()).collect();
        let summary: Vec<(&str, &str, &str, &str, &str)> = cells
            .iter()
            .map(|c| (c[0], c[3], c[4], c[5], c[6]))
            .collect();
        assert_eq!(
            summary,
            vec![
                ("a", "1", "1", "1", "1.0"),
                // Both rows at 105 see each other (peers), and the row at 100.
                ("a", "3", "7", "1", "2.3333333333333335"),
                ("b", "1", "7", "7", "7.0"),
                ("a", "3", "7", "1", "2.3333333333333335"),
                // 116 - 10 = 106: the rows at 100 and 105 left the frame; v is NULL.
                ("a", "0", "", "", ""),
            ]
        );
        // A partition whose rows are all older than every future frame is dropped.
        assert!(op.partitions.is_empty());
    }

    #[test]
    fn rows_frames_count_rows_and_unbounded_frames_keep_totals() {
        let rows = [
            ("a", Some(1), Some(1)),
            ("a", Some(2), Some(2)),
            ("a", Some(3), Some(2)),
            ("a", Some(4), Some(3)),
        ];
        let messages = [
            Message::Data(batch(&rows)),
            Message::Watermark(Watermark::MAX),
        ];
        let mut op = OverAggregate::new(spec(OverFrame::Rows { preceding: 1 }), "t").unwrap();
        let (out, _) = run(&mut op, &messages);
        let totals: Vec<&str> = out.iter().map(|r| r.split(',').nth(4).unwrap()).collect();
        assert_eq!(totals, ["1", "3", "5", "7"]);
        let mut op = OverAggregate::new(
            spec(OverFrame::Rows {
                preceding: u64::MAX,
            }),
            "t",
        )
        .unwrap();
        let (out, _) = run(&mut op, &messages);
        let totals: Vec<&str> = out.iter().map(|r| r.split(',').nth(4).unwrap()).collect();
        assert_eq!(totals, ["1", "3", "6", "10"]);
        assert_eq!(op.partitions.len(), 1);
        assert!(op.partitions.values().all(|p| p.rows.is_empty()));
    }

    fn frames() -> impl Strategy<Value = OverFrame> {
        prop_oneof![
            (0i64..40).prop_map(|preceding| OverFrame::Range { preceding }),
            (0u64..4).prop_map(|preceding| OverFrame::Rows { preceding }),
            Just(OverFrame::Range {
                preceding: i64::MAX
            }),
            Just(OverFrame::Rows {
                preceding: u64::MAX
            }),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, failure_persistence: None, ..ProptestConfig::default() })]

        /// Any batching, any watermarks, and a snapshot restored into a fresh operator
        /// anywhere: the same output as one batch with one final watermark.
        #[test]
        fn batching_watermarks_and_restores_do_not_change_results(
            frame in frames(),
            ttl in prop::option::of(0i64..30),
            rows in prop::collection::vec((0usize..3, prop::option::weighted(0.9, -5i64..50), 0i64..100), 0..60),
            cuts in prop::collection::vec(0usize..60, 0..6),
            restore_at in 0usize..20,
        ) {
            let keys = ["a", "b", "c"];
            // In time order, so no row is late whatever the watermarks.
            let mut rows = rows;
            rows.sort_by_key(|r| r.2);
            let all: Vec<(&str, Option<i64>, Option<i64>)> =
                rows.iter().map(|&(k, v, t)| (keys[k], v, Some(t))).collect();
            let whole = [Message::Data(batch(&all)), Message::Watermark(Watermark::MAX)];
            let spec = |frame| ttl_spec(frame, ttl);
            let (expected, _) = run(&mut OverAggregate::new(spec(frame), "t").unwrap(), &whole);
            prop_assert_eq!(expected.len(), all.len());

            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(all.len())).collect();
            cuts.push(0);
            cuts.push(all.len());
            cuts.sort();
            let mut messages = vec![];
            for w in cuts.windows(2) {
                if w[0] < w[1] {
                    messages.push(Message::Data(batch(&all[w[0]..w[1]])));
                    // Everything before the next row's time is final.
                    if let Some(next) = all.get(w[1]) {
                        messages.push(Message::Watermark(Watermark(next.2.unwrap() - 1)));
                    }
                }
            }
            messages.push(Message::Watermark(Watermark::MAX));
            let at = restore_at.min(messages.len());
            let mut first = OverAggregate::new(spec(frame), "t").unwrap();
            let (mut got, rejects) = run(&mut first, &messages[..at]);
            prop_assert_eq!(rejects, 0);
            let mut state = vec![];
            first.snapshot(&mut state).unwrap();
            let mut second = OverAggregate::new(spec(frame), "t").unwrap();
            second.restore(&state).unwrap();
            let (rest, rejects) = run(&mut second, &messages[at..]);
            prop_assert_eq!(rejects, 0);
            got.extend(rest);
            prop_assert_eq!(got, expected);
        }
    }

    #[test]
    fn state_ttl_restarts_idle_partitions_in_event_time() {
        let rows = [
            ("a", Some(1), Some(0)),
            ("b", Some(10), Some(5)),
            ("a", Some(2), Some(100)),
            // 201 > 100 + 100: a's earlier rows no longer count.
            ("a", Some(4), Some(201)),
            ("a", Some(8), Some(250)),
        ];
        let totals = |frame: OverFrame| {
            let mut op = OverAggregate::new(ttl_spec(frame, Some(100)), "t").unwrap();
            let (out, _) = run(
                &mut op,
                &[
                    Message::Data(batch(&rows)),
                    Message::Watermark(Watermark(250)),
                ],
            );
            // Only partition a, whose newest row (250) is within the TTL of the watermark.
            let keys: Vec<&Vec<u8>> = op.partitions.keys().collect();
            assert_eq!(keys.len(), 1, "b (newest 5) left memory");
            out.iter()
                .map(|r| r.split(',').nth(4).unwrap().to_string())
                .collect::<Vec<_>>()
        };
        let unbounded = OverFrame::Rows {
            preceding: u64::MAX,
        };
        assert_eq!(totals(unbounded), ["1", "10", "3", "4", "12"]);
        assert_eq!(
            totals(OverFrame::Rows { preceding: 5 }),
            ["1", "10", "3", "4", "12"]
        );
        // Without the TTL the row at 201 would count every earlier row of a.
        let mut op = OverAggregate::new(spec(unbounded), "t").unwrap();
        let (out, _) = run(
            &mut op,
            &[
                Message::Data(batch(&rows)),
                Message::Watermark(Watermark::MAX),
            ],
        );
        let plain: Vec<&str> = out.iter().map(|r| r.split(',').nth(4).unwrap()).collect();
        assert_eq!(plain, ["1", "10", "3", "7", "15"]);
        // A checkpoint without the TTL does not restore into a plan with one.
        let mut state = vec![];
        op.snapshot(&mut state).unwrap();
        let mut other = OverAggregate::new(ttl_spec(unbounded, Some(100)), "t").unwrap();
        let err = other.restore(&state).unwrap_err().to_string();
        assert!(err.contains("another plan"), "{err}");
    }

    #[test]
    fn a_checkpoint_of_another_frame_is_refused() {
        let op = OverAggregate::new(spec(OverFrame::Rows { preceding: 2 }), "t").unwrap();
        let mut state = vec![];
        op.snapshot(&mut state).unwrap();
        let mut other = OverAggregate::new(spec(OverFrame::Rows { preceding: 3 }), "t").unwrap();
        let err = other.restore(&state).unwrap_err().to_string();
        assert!(err.contains("another plan"), "{err}");
    }
}
