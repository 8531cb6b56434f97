//! Window Top-N: `ROW_NUMBER() | RANK() | DENSE_RANK() OVER (PARTITION BY window_end, keys...
//! ORDER BY ...)`, optionally with `WHERE rank <= n`.
//!
//! Rows are buffered per window (by window end) until the watermark passes the window's
//! `end - 1`; then the window's rows are sorted by (partition, order), ranked, cut to the limit
//! and emitted with the rank as a last column. After an append-mode window aggregate the rows
//! of a window arrive together, just before the watermark that closes it, so nothing waits.
//!
//! Invariants:
//! * Each window is ranked exactly once, over all its rows; output is sorted by partition, then
//!   rank (ties of ROW_NUMBER in input order), so every mode and batch size writes the same rows.
//! * A row for a window already ranked is late: rejected with reason `late`.
//!
//! Checkpoints: a frame of the [`codec`](crate::codec) (tag `FRNK`, version 1): the layout, the
//! watermark, the buffered windows as (end, row count), then their rows as one Arrow IPC stream.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, RecordBatch, UInt32Array, UInt64Array};
use arrow::compute::{concat_batches, lexsort_to_indices, take, SortColumn};
use arrow::row::{RowConverter, SortField};
use flowline_core::plan::{RankFunction, RankSpec};
use flowline_core::{Error, Message, Operator, Output, Reject, RejectReason, Result, Watermark};

use crate::codec::{Decoder, Encoder};
use crate::operators::window::millis;
use crate::rows::rows_as_json;

const MAGIC: [u8; 4] = *b"FRNK";
const VERSION: u8 = 1;
const CHECKPOINT: &str = "window-rank checkpoint";

pub struct WindowRank {
    spec: RankSpec,
    table_name: String,
    /// Window end → the window's rows so far.
    windows: BTreeMap<i64, Vec<RecordBatch>>,
    /// Bytes of the buffered rows, kept up to date.
    bytes: usize,
    watermark: Watermark,
    layout: String,
}

impl WindowRank {
    pub fn new(spec: RankSpec, table_name: &str) -> Result<Self> {
        let input = spec.schema.fields().len() - 1;
        let layout = format!(
            "{:?} limit {:?}; input {} columns; partition {}; order {}",
            spec.function,
            spec.limit,
            input,
            spec.partition.len(),
            spec.order.len()
        );
        Ok(WindowRank {
            spec,
            table_name: table_name.to_string(),
            windows: BTreeMap::new(),
            bytes: 0,
            watermark: Watermark::MIN,
            layout,
        })
    }

    fn input_schema(&self) -> arrow::datatypes::SchemaRef {
        let n = self.spec.schema.fields().len() - 1;
        Arc::new(arrow::datatypes::Schema::new(
            self.spec.schema.fields()[..n].to_vec(),
        ))
    }

    fn keep(&mut self, end: i64, batch: RecordBatch) {
        self.bytes += batch.get_array_memory_size();
        self.windows.entry(end).or_default().push(batch);
    }

    fn on_batch(&mut self, batch: RecordBatch, out: &mut Output) -> Result<()> {
        let n = batch.num_rows();
        if n == 0 {
            return Ok(());
        }
        let bounds = millis(&self.spec.window_column.evaluate(&batch)?.into_array(n)?)?;
        let wm = self.watermark.0;
        let mut by_end: BTreeMap<i64, Vec<u32>> = BTreeMap::new();
        let mut late = vec![];
        for i in 0..n {
            let end = bounds.value(i).saturating_add(self.spec.end_offset);
            if wm != i64::MIN && end - 1 <= wm {
                late.push(i);
            } else {
                by_end.entry(end).or_default().push(i as u32);
            }
        }
        for (&i, raw) in late.iter().zip(rows_as_json(&batch, &late)?) {
            let end = bounds.value(i).saturating_add(self.spec.end_offset);
            out.reject(Reject {
                reason: RejectReason::Late,
                detail: format!(
                    "its window was ranked when the watermark passed {}",
                    Watermark(end - 1).display()
                ),
                table: self.table_name.clone(),
                sink: None,
                file: None,
                line: None,
                raw,
                window: None,
                watermark: Some(self.watermark.display()),
            });
        }
        if by_end.len() == 1 && late.is_empty() {
            if let Some((end, _)) = by_end.pop_first() {
                self.keep(end, batch);
            }
            return Ok(());
        }
        for (end, rows) in by_end {
            let idx = UInt32Array::from(rows);
            let columns = batch
                .columns()
                .iter()
                .map(|c| take(c.as_ref(), &idx, None))
                .collect::<Result<Vec<_>, _>>()?;
            self.keep(end, RecordBatch::try_new(batch.schema(), columns)?);
        }
        Ok(())
    }

    /// Ranks and emits every window whose end - 1 is at or before the watermark.
    fn fire(&mut self, out: &mut Output) -> Result<()> {
        while let Some((&end, _)) = self.windows.first_key_value() {
            if end - 1 > self.watermark.0 {
                break;
            }
            let Some((_, batches)) = self.windows.pop_first() else {
                break;
            };
            self.bytes -= batches
                .iter()
                .map(RecordBatch::get_array_memory_size)
                .sum::<usize>();
            let Some(first) = batches.first() else {
                continue;
            };
            let rows = concat_batches(&first.schema(), &batches)?;
            if let Some(ranked) = self.rank(&rows)? {
                out.emit(Message::Data(ranked));
            }
        }
        Ok(())
    }

    /// The rows of one window, sorted by partition and order, ranked and cut to the limit.
    fn rank(&self, rows: &RecordBatch) -> Result<Option<RecordBatch>> {
        let n = rows.num_rows();
        let partition: Vec<ArrayRef> = self
            .spec
            .partition
            .iter()
            .map(|e| e.evaluate(rows)?.into_array(n))
            .collect::<Result<_, _>>()?;
        let order: Vec<(ArrayRef, arrow::compute::SortOptions)> = self
            .spec
            .order
            .iter()
            .map(|s| Ok((s.expr.evaluate(rows)?.into_array(n)?, s.options)))
            .collect::<Result<_>>()?;
        let mut sort: Vec<SortColumn> = partition
            .iter()
            .map(|c| SortColumn {
                values: c.clone(),
                options: None,
            })
            .collect();
        sort.extend(order.iter().map(|(c, o)| SortColumn {
            values: c.clone(),
            options: Some(*o),
        }));
        // Ties of every sort key keep input order: sort by the row position last.
        sort.push(SortColumn {
            values: Arc::new(UInt32Array::from_iter_values(0..n as u32)),
            options: None,
        });
        let sorted = lexsort_to_indices(&sort, None)?;
        let partition_rows = RowConverter::new(
            partition
                .iter()
                .map(|c| SortField::new(c.data_type().clone()))
                .collect(),
        )?
        .convert_columns(&partition)?;
        let order_rows = RowConverter::new(
            order
                .iter()
                .map(|(c, o)| SortField::new_with_options(c.data_type().clone(), *o))
                .collect(),
        )?
        .convert_columns(&order.iter().map(|(c, _)| c.clone()).collect::<Vec<_>>())?;
        let limit = self.spec.limit.unwrap_or(u64::MAX);
        let mut kept = Vec::with_capacity(n);
        let mut ranks = Vec::with_capacity(n);
        let (mut position, mut rank, mut dense) = (0u64, 0u64, 0u64);
        let mut previous: Option<u32> = None;
        for &i in sorted.values() {
            let same_partition = previous
                .is_some_and(|p| partition_rows.row(p as usize) == partition_rows.row(i as usize));
            if !same_partition {
                (position, rank, dense) = (0, 0, 0);
            }
            position += 1;
            let tie = same_partition
                && previous
                    .is_some_and(|p| order_rows.row(p as usize) == order_rows.row(i as usize));
            if !tie {
                rank = position;
                dense += 1;
            }
            let value = match self.spec.function {
                RankFunction::RowNumber => position,
                RankFunction::Rank => rank,
                RankFunction::DenseRank => dense,
            };
            if value <= limit {
                kept.push(i);
                ranks.push(value);
            }
            previous = Some(i);
        }
        if kept.is_empty() {
            return Ok(None);
        }
        let idx = UInt32Array::from(kept);
        let mut columns = rows
            .columns()
            .iter()
            .map(|c| take(c.as_ref(), &idx, None))
            .collect::<Result<Vec<_>, _>>()?;
        columns.push(Arc::new(UInt64Array::from(ranks)));
        let schema = crate::rows::relax_nullability(&self.spec.schema, &columns);
        Ok(Some(RecordBatch::try_new(schema, columns)?))
    }

    fn write_state(&self, out: &mut Vec<u8>) -> Result<()> {
        let mut e = Encoder::new(out);
        let frame = e.begin_frame(MAGIC, VERSION);
        e.bytes(self.layout.as_bytes())?;
        e.i64(self.watermark.0);
        e.len_prefix(self.windows.len());
        let mut all = vec![];
        for (&end, batches) in &self.windows {
            e.i64(end);
            e.u64(batches.iter().map(|b| b.num_rows() as u64).sum());
            all.extend(batches.iter().cloned());
        }
        let schema = self.input_schema();
        let rows = concat_batches(&schema, &all)?;
        e.bytes(&crate::codec::batch_to_ipc(&rows)?)?;
        e.end_frame(frame);
        Ok(())
    }
}

impl Operator for WindowRank {
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
        "window-rank"
    }

    fn state_bytes(&self) -> usize {
        self.bytes
    }

    fn snapshot(&self, out: &mut Vec<u8>) -> Result<()> {
        crate::codec::snapshot_into(out, |out| self.write_state(out))
    }

    fn restore(&mut self, state: &[u8]) -> Result<()> {
        let mut d = Decoder::new(state, CHECKPOINT).frame(MAGIC, VERSION)?;
        d.expect_layout(&self.layout)?;
        let watermark = Watermark(d.i64()?);
        let n = d.len_prefix(16)?;
        let mut counts = Vec::with_capacity(n);
        let mut total = 0u64;
        let mut previous = None;
        for _ in 0..n {
            let end = d.i64()?;
            if previous.is_some_and(|p| p >= end) {
                return Err(d.error("window ends are not increasing"));
            }
            previous = Some(end);
            let rows = d.u64()?;
            total = total
                .checked_add(rows)
                .ok_or_else(|| d.error("row count overflows"))?;
            counts.push((end, rows));
        }
        let ipc = d.bytes()?;
        d.finish()?;
        let rows = crate::codec::batch_from_ipc(ipc, CHECKPOINT, &self.input_schema())?;
        if rows.num_rows() as u64 != total {
            return Err(Error::Internal(format!(
                "{CHECKPOINT}: {} rows, the windows list {total}",
                rows.num_rows()
            )));
        }
        let mut windows = BTreeMap::new();
        let mut bytes = 0;
        let mut offset = 0usize;
        for (end, count) in counts {
            let part = rows.slice(offset, count as usize);
            offset += count as usize;
            bytes += part.get_array_memory_size();
            windows.insert(end, vec![part]);
        }
        self.windows = windows;
        self.bytes = bytes;
        self.watermark = watermark;
        Ok(())
    }
}

/// The rank column of a batch produced by [`WindowRank`].
#[cfg(test)]
fn ranks(batch: &RecordBatch) -> Vec<u64> {
    use arrow::array::AsArray;
    batch
        .column(batch.num_columns() - 1)
        .as_primitive::<arrow::datatypes::UInt64Type>()
        .values()
        .to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{AsArray, Int64Array, StringArray, TimestampMillisecondArray};
    use arrow::compute::SortOptions;
    use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
    use datafusion::physical_expr::expressions::col;
    use datafusion::physical_expr::PhysicalSortExpr;
    use proptest::prelude::*;

    fn input() -> arrow::datatypes::SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new(
                "window_end",
                DataType::Timestamp(TimeUnit::Millisecond, None),
                false,
            ),
            Field::new("k", DataType::Utf8, true),
            Field::new("v", DataType::Int64, true),
        ]))
    }

    fn spec(function: RankFunction, limit: Option<u64>) -> RankSpec {
        let input = input();
        let mut fields: Vec<_> = input.fields().iter().cloned().collect();
        fields.push(Arc::new(Field::new("rn", DataType::UInt64, false)));
        RankSpec {
            function,
            partition: vec![
                col("window_end", &input).unwrap(),
                col("k", &input).unwrap(),
            ],
            order: vec![PhysicalSortExpr {
                expr: col("v", &input).unwrap(),
                options: SortOptions {
                    descending: true,
                    nulls_first: false,
                },
            }],
            window_column: col("window_end", &input).unwrap(),
            end_offset: 0,
            limit,
            schema: Arc::new(Schema::new(fields)),
        }
    }

    type Row = (i64, &'static str, Option<i64>);

    fn batch(rows: &[Row]) -> RecordBatch {
        RecordBatch::try_new(
            input(),
            vec![
                Arc::new(TimestampMillisecondArray::from_iter_values(
                    rows.iter().map(|r| r.0),
                )),
                Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.1))),
                Arc::new(Int64Array::from_iter(rows.iter().map(|r| r.2))),
            ],
        )
        .unwrap()
    }

    /// (end, k, v, rank) of an emitted row.
    type Ranked = (i64, String, Option<i64>, u64);

    /// Everything emitted, and the number of rejects.
    fn run(op: &mut WindowRank, messages: &[Message]) -> (Vec<Ranked>, usize) {
        let mut rows = vec![];
        let mut rejects = 0;
        for m in messages {
            let mut out = Output::default();
            op.process(m.clone(), &mut out).unwrap();
            rejects += out.rejects.len();
            for m in out.messages {
                let Message::Data(b) = m else { continue };
                let ends = b
                    .column(0)
                    .as_primitive::<arrow::datatypes::TimestampMillisecondType>();
                let k = b.column(1).as_string::<i32>();
                let v = b.column(2).as_primitive::<arrow::datatypes::Int64Type>();
                for (i, r) in ranks(&b).into_iter().enumerate() {
                    rows.push((
                        ends.value(i),
                        k.value(i).to_string(),
                        v.is_valid(i).then(|| v.value(i)),
                        r,
                    ));
                }
            }
        }
        (rows, rejects)
    }

    #[test]
    fn ranks_each_window_per_partition_with_ties() {
        let rows = [
            (10, "a", Some(5)),
            (10, "a", Some(7)),
            (10, "a", Some(5)),
            (10, "a", None),
            (10, "b", Some(1)),
            (20, "a", Some(3)),
        ];
        let messages = [
            Message::Data(batch(&rows)),
            Message::Watermark(Watermark(9)),
            Message::Watermark(Watermark::MAX),
        ];
        let expect = |function, limit| {
            let mut op = WindowRank::new(spec(function, limit), "t").unwrap();
            run(&mut op, &messages)
                .0
                .into_iter()
                .map(|r| (r.0, r.1, r.2, r.3))
                .collect::<Vec<_>>()
        };
        let a = |v: Option<i64>, r: u64| (10, "a".to_string(), v, r);
        assert_eq!(
            expect(RankFunction::RowNumber, None),
            vec![
                a(Some(7), 1),
                a(Some(5), 2),
                a(Some(5), 3),
                a(None, 4),
                (10, "b".into(), Some(1), 1),
                (20, "a".into(), Some(3), 1)
            ]
        );
        let ranked: Vec<u64> = expect(RankFunction::Rank, None)
            .iter()
            .map(|r| r.3)
            .collect();
        assert_eq!(ranked, vec![1, 2, 2, 4, 1, 1]);
        let dense: Vec<u64> = expect(RankFunction::DenseRank, None)
            .iter()
            .map(|r| r.3)
            .collect();
        assert_eq!(dense, vec![1, 2, 2, 3, 1, 1]);
        // Top 2 by RANK keeps both tied second places.
        let top: Vec<u64> = expect(RankFunction::Rank, Some(2))
            .iter()
            .map(|r| r.3)
            .collect();
        assert_eq!(top, vec![1, 2, 2, 1, 1]);
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, failure_persistence: None, ..ProptestConfig::default() })]

        /// Whatever the batches and watermarks: each window ranked once, top-N per partition
        /// in order (a model: sort each window's rows), and a snapshot/restore anywhere
        /// changes nothing.
        #[test]
        fn top_n_matches_a_sort_and_survives_a_restore(
            raw in prop::collection::vec((0i64..5, prop::sample::select(vec!["a", "b"]), prop::option::of(0i64..6)), 0..60),
            batch_size in 1usize..10,
            limit in prop::option::of(1u64..4),
            cut in any::<prop::sample::Index>(),
        ) {
            // Windows end at 10, 20, ...; rows arrive in window order, the watermark follows.
            let mut rows: Vec<Row> = raw.iter().map(|&(w, k, v)| ((w + 1) * 10, k, v)).collect();
            rows.sort_by_key(|r| r.0);
            let mut messages = vec![];
            for chunk in rows.chunks(batch_size) {
                messages.push(Message::Data(batch(chunk)));
                messages.push(Message::Watermark(Watermark(chunk[0].0 - 11)));
            }
            messages.push(Message::Watermark(Watermark::MAX));
            let mut whole = WindowRank::new(spec(RankFunction::RowNumber, limit), "t").unwrap();
            let (got, rejects) = run(&mut whole, &messages);
            prop_assert_eq!(rejects, 0);
            // Model: per (end, k), values descending with NULLs last, stable; numbered.
            let mut groups: BTreeMap<(i64, &str), Vec<Option<i64>>> = BTreeMap::new();
            for r in &rows {
                groups.entry((r.0, r.1)).or_default().push(r.2);
            }
            let mut want = vec![];
            for ((end, k), mut values) in groups {
                values.sort_by(|a, b| match (a, b) {
                    (Some(a), Some(b)) => b.cmp(a),
                    (Some(_), None) => std::cmp::Ordering::Less,
                    (None, Some(_)) => std::cmp::Ordering::Greater,
                    (None, None) => std::cmp::Ordering::Equal,
                });
                for (i, v) in values.into_iter().enumerate() {
                    let r = i as u64 + 1;
                    if limit.is_none_or(|l| r <= l) {
                        want.push((end, k.to_string(), v, r));
                    }
                }
            }
            prop_assert_eq!(&got, &want);

            let cut = cut.index(messages.len() + 1);
            let mut before = WindowRank::new(spec(RankFunction::RowNumber, limit), "t").unwrap();
            let (mut produced, _) = run(&mut before, &messages[..cut]);
            let mut blob = vec![];
            before.snapshot(&mut blob).unwrap();
            let mut after = WindowRank::new(spec(RankFunction::RowNumber, limit), "t").unwrap();
            after.restore(&blob).unwrap();
            prop_assert_eq!(after.state_bytes() > 0, before.state_bytes() > 0);
            produced.extend(run(&mut after, &messages[cut..]).0);
            prop_assert_eq!(produced, want);
        }
    }

    #[test]
    fn a_row_for_a_ranked_window_is_late() {
        let mut op = WindowRank::new(spec(RankFunction::RowNumber, None), "t").unwrap();
        let (_, rejects) = run(
            &mut op,
            &[
                Message::Data(batch(&[(10, "a", Some(1))])),
                Message::Watermark(Watermark(9)),
                Message::Data(batch(&[(10, "a", Some(2)), (20, "a", Some(2))])),
            ],
        );
        assert_eq!(rejects, 1);
        assert!(op.state_bytes() > 0, "the window ending at 20 waits");
    }
}
