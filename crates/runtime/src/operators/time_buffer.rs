//! Rows waiting for the watermark to pass their event time, shared by the operators that emit
//! rows in event-time order (OVER aggregates, deduplication).
//!
//! Invariants: rows are kept in arrival order; [`TimeBuffer::take_due`] returns the rows at or
//! before the watermark sorted by (time, arrival), whatever the batches they came in, so the
//! operators' results never depend on batch sizes or watermark timing. Each waiting batch
//! carries its earliest time, so a watermark that makes nothing due costs O(batches), and one
//! that does touches only the batches holding due rows (never a concatenation of everything
//! waiting).

use std::sync::Arc;

use arrow::array::{Array, BooleanArray, RecordBatch, TimestampMillisecondArray, UInt32Array};
use arrow::compute::{concat_batches, filter_record_batch, take};
use arrow::datatypes::SchemaRef;
use datafusion::physical_expr::PhysicalExpr;
use flowline_core::{RejectReason, Result, Watermark};

use crate::operators::window::millis;

pub(crate) struct TimeBuffer {
    time: Arc<dyn PhysicalExpr>,
    schema: SchemaRef,
    /// In arrival order, each with the earliest time among its rows.
    waiting: Vec<(i64, RecordBatch)>,
    bytes: usize,
}

impl TimeBuffer {
    pub(crate) fn new(time: Arc<dyn PhysicalExpr>, schema: SchemaRef) -> TimeBuffer {
        TimeBuffer {
            time,
            schema,
            waiting: vec![],
            bytes: 0,
        }
    }

    /// The event times of `batch`, in ms.
    pub(crate) fn times(&self, batch: &RecordBatch) -> Result<TimestampMillisecondArray> {
        millis(&self.time.evaluate(batch)?.into_array(batch.num_rows())?)
    }

    /// Keeps the rows of `batch` whose time is after `watermark`; returns the others with why
    /// they cannot be kept (late, or no time), for the caller's rejects.
    pub(crate) fn push(
        &mut self,
        batch: &RecordBatch,
        watermark: Watermark,
    ) -> Result<Vec<(usize, RejectReason)>> {
        if batch.num_rows() == 0 {
            return Ok(vec![]);
        }
        let times = self.times(batch)?;
        let mut refused = vec![];
        let keep: BooleanArray = (0..batch.num_rows())
            .map(|i| {
                let reason = if times.is_null(i) {
                    Some(RejectReason::MissingEventTime)
                } else if watermark != Watermark::MIN && times.value(i) <= watermark.0 {
                    Some(RejectReason::Late)
                } else {
                    None
                };
                if let Some(r) = reason {
                    refused.push((i, r));
                }
                Some(reason.is_none())
            })
            .collect();
        let kept = if refused.is_empty() {
            batch.clone()
        } else {
            filter_record_batch(batch, &keep)?
        };
        self.keep(kept)?;
        Ok(refused)
    }

    /// Appends `rows` (every row with a time) at the end of the arrival order.
    fn keep(&mut self, rows: RecordBatch) -> Result<()> {
        if let Some(min) = arrow::compute::min(&self.times(&rows)?) {
            self.bytes += rows.get_array_memory_size();
            self.waiting.push((min, rows));
        }
        Ok(())
    }

    /// Removes and returns the rows with time at or before `w`, sorted by (time, arrival).
    pub(crate) fn take_due(&mut self, w: Watermark) -> Result<Option<RecordBatch>> {
        if self.waiting.iter().all(|(min, _)| *min > w.0) {
            return Ok(None);
        }
        let mut due_parts = vec![];
        let mut still = Vec::with_capacity(self.waiting.len());
        for (min, batch) in std::mem::take(&mut self.waiting) {
            if min > w.0 {
                still.push((min, batch));
                continue;
            }
            self.bytes -= batch.get_array_memory_size();
            let times = self.times(&batch)?;
            let due: BooleanArray = times.iter().map(|t| t.map(|t| t <= w.0)).collect();
            if due.true_count() == batch.num_rows() {
                due_parts.push(batch);
                continue;
            }
            due_parts.push(filter_record_batch(&batch, &due)?);
            // The rest keeps its place in the arrival order.
            let rest = filter_record_batch(&batch, &arrow::compute::not(&due)?)?;
            if let Some(min) = arrow::compute::min(&self.times(&rest)?) {
                self.bytes += rest.get_array_memory_size();
                still.push((min, rest));
            }
        }
        self.waiting = still;
        let rows = concat_batches(&self.schema, &due_parts)?;
        let times = self.times(&rows)?;
        let mut order: Vec<u32> = (0..rows.num_rows() as u32).collect();
        // Stable: rows with the same time stay in arrival order.
        order.sort_by_key(|&i| times.value(i as usize));
        let idx = UInt32Array::from(order);
        let columns = rows
            .columns()
            .iter()
            .map(|c| take(c.as_ref(), &idx, None))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Some(RecordBatch::try_new(rows.schema(), columns)?))
    }

    /// Every waiting row, in arrival order (for a checkpoint).
    pub(crate) fn rows(&self) -> Result<RecordBatch> {
        let batches: Vec<&RecordBatch> = self.waiting.iter().map(|(_, b)| b).collect();
        Ok(concat_batches(&self.schema, batches)?)
    }

    /// Replaces the waiting rows (after a restore).
    pub(crate) fn replace(&mut self, rows: RecordBatch) -> Result<()> {
        let rows = RecordBatch::try_new(
            crate::rows::relax_nullability(&self.schema, rows.columns()),
            rows.columns().to_vec(),
        )?;
        self.bytes = 0;
        self.waiting.clear();
        self.keep(rows)
    }

    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }
}
