//! Window assignment: each row gets `window_start`, `window_end` and `window_time` (end - 1 ms)
//! for every window it belongs to (one for TUMBLE, size/slide for HOP, up to size/step for
//! CUMULATE). Windows are aligned to the Unix epoch.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch, TimestampMillisecondArray, UInt32Array};
use arrow::compute::{cast, take};
use arrow::datatypes::{DataType, TimeUnit, TimestampMillisecondType};
use flowline_core::plan::{WindowKind, WindowSpec};
use flowline_core::{Message, Operator, Output, Reject, RejectReason, Result};

use crate::rows::rows_as_json;

/// Event times of `column` in milliseconds, rounded down (also before 1970); NULL stays NULL.
pub fn millis(column: &ArrayRef) -> Result<arrow::array::PrimitiveArray<TimestampMillisecondType>> {
    use arrow::datatypes::{
        TimestampMicrosecondType, TimestampNanosecondType, TimestampSecondType,
    };
    let per_ms = match column.data_type() {
        DataType::Timestamp(TimeUnit::Microsecond, _) => 1_000,
        DataType::Timestamp(TimeUnit::Nanosecond, _) => 1_000_000,
        _ => 1,
    };
    Ok(match column.data_type() {
        DataType::Timestamp(TimeUnit::Millisecond, _) => column
            .as_primitive::<TimestampMillisecondType>()
            .clone()
            .with_timezone_opt(None::<String>),
        DataType::Timestamp(TimeUnit::Microsecond, _) => column
            .as_primitive::<TimestampMicrosecondType>()
            .unary(|t| t.div_euclid(per_ms)),
        DataType::Timestamp(TimeUnit::Nanosecond, _) => column
            .as_primitive::<TimestampNanosecondType>()
            .unary(|t| t.div_euclid(per_ms)),
        DataType::Timestamp(TimeUnit::Second, _) => column
            .as_primitive::<TimestampSecondType>()
            .unary(|t| t.saturating_mul(1_000)),
        _ => {
            let ms = cast(column, &DataType::Timestamp(TimeUnit::Millisecond, None))?;
            ms.as_primitive::<TimestampMillisecondType>().clone()
        }
    })
}

/// The (start, end) of every window of `kind` that contains `ts`, earliest end first.
fn windows_of(kind: WindowKind, ts: i64, out: &mut Vec<(i64, i64)>) {
    match kind {
        WindowKind::Tumble { size } => {
            let start = ts - ts.rem_euclid(size);
            out.push((start, start + size));
        }
        WindowKind::Hop { size, slide } => {
            let last = ts - ts.rem_euclid(slide);
            for k in (0..size / slide).rev() {
                let start = last - k * slide;
                out.push((start, start + size));
            }
        }
        WindowKind::Session { gap } => out.push((ts, ts + gap)),
        WindowKind::Cumulate { step, size } => {
            let start = ts - ts.rem_euclid(size);
            let first = (ts - start) / step + 1;
            for k in first..=size / step {
                out.push((start, start + k * step));
            }
        }
    }
}

/// Adds the window columns to `batch` (replicating rows for HOP). Returns the windowed batch
/// and the indices of rows dropped because their event time is NULL.
pub fn assign_windows(batch: &RecordBatch, spec: &WindowSpec) -> Result<(RecordBatch, Vec<usize>)> {
    let ts = millis(batch.column(spec.time_column))?;
    if let (WindowKind::Tumble { size }, 0) = (spec.kind, ts.null_count()) {
        // TUMBLE without NULLs: one window per row, computed column-wise.
        let starts: TimestampMillisecondArray = ts.unary(|t| t - t.rem_euclid(size));
        let ends: TimestampMillisecondArray = starts.unary(|s| s + size);
        let times: TimestampMillisecondArray = ends.unary(|e| e - 1);
        let mut columns = batch.columns().to_vec();
        columns.push(Arc::new(starts));
        columns.push(Arc::new(ends));
        columns.push(Arc::new(times));
        return Ok((RecordBatch::try_new(spec.schema.clone(), columns)?, vec![]));
    }
    let mut indices = Vec::with_capacity(batch.num_rows());
    let mut starts = Vec::with_capacity(batch.num_rows());
    let mut ends = Vec::with_capacity(batch.num_rows());
    let mut nulls = vec![];
    let mut windows = vec![];
    for (i, t) in ts.iter().enumerate() {
        let Some(t) = t else {
            nulls.push(i);
            continue;
        };
        windows.clear();
        windows_of(spec.kind, t, &mut windows);
        for &(start, end) in &windows {
            indices.push(i as u32);
            starts.push(start);
            ends.push(end);
        }
    }
    let idx = UInt32Array::from(indices);
    let mut columns: Vec<ArrayRef> = batch
        .columns()
        .iter()
        .map(|c| take(c.as_ref(), &idx, None))
        .collect::<Result<_, _>>()?;
    let times: Vec<i64> = ends.iter().map(|e| e - 1).collect();
    columns.push(Arc::new(TimestampMillisecondArray::from(starts)));
    columns.push(Arc::new(TimestampMillisecondArray::from(ends)));
    columns.push(Arc::new(TimestampMillisecondArray::from(times)));
    let out = RecordBatch::try_new(spec.schema.clone(), columns)?;
    Ok((out, nulls))
}

pub struct WindowAssign {
    spec: WindowSpec,
    table: String,
}

impl WindowAssign {
    pub fn new(spec: WindowSpec, table: &str) -> Self {
        WindowAssign {
            spec,
            table: table.to_string(),
        }
    }
}

impl Operator for WindowAssign {
    fn process(&mut self, message: Message, out: &mut Output) -> Result<()> {
        match message {
            Message::Data(batch) => {
                let (windowed, nulls) = assign_windows(&batch, &self.spec)?;
                if !nulls.is_empty() {
                    let column = self.spec.schema.field(self.spec.time_column).name().clone();
                    for raw in rows_as_json(&batch, &nulls)? {
                        out.reject(Reject {
                            reason: RejectReason::MissingEventTime,
                            detail: format!(
                                "column `{column}` is NULL, so the row belongs to no window"
                            ),
                            table: self.table.clone(),
                            sink: None,
                            file: None,
                            line: None,
                            raw,
                            window: None,
                            watermark: None,
                        });
                    }
                }
                if windowed.num_rows() > 0 {
                    out.emit(Message::Data(windowed));
                }
            }
            Message::Retract(_) => return Err(flowline_core::Error::cannot_retract(self.name())),
            other => out.emit(other),
        }
        Ok(())
    }

    fn name(&self) -> &'static str {
        "window-assign"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::Int64Array;
    use arrow::datatypes::{Field, Schema};

    fn spec(kind: WindowKind) -> WindowSpec {
        let ts = DataType::Timestamp(TimeUnit::Millisecond, None);
        WindowSpec {
            kind,
            time_column: 1,
            schema: Arc::new(Schema::new(vec![
                Field::new("v", DataType::Int64, false),
                Field::new("ts", ts.clone(), true),
                Field::new("window_start", ts.clone(), false),
                Field::new("window_end", ts.clone(), false),
                Field::new("window_time", ts, false),
            ])),
        }
    }

    fn input(ts: Vec<Option<i64>>) -> RecordBatch {
        let n = ts.len() as i64;
        RecordBatch::try_new(
            Arc::new(Schema::new(vec![
                Field::new("v", DataType::Int64, false),
                Field::new("ts", DataType::Timestamp(TimeUnit::Millisecond, None), true),
            ])),
            vec![
                Arc::new(Int64Array::from((0..n).collect::<Vec<_>>())),
                Arc::new(TimestampMillisecondArray::from(ts)),
            ],
        )
        .unwrap()
    }

    fn starts(b: &RecordBatch) -> Vec<i64> {
        b.column(2)
            .as_primitive::<TimestampMillisecondType>()
            .values()
            .to_vec()
    }

    #[test]
    fn tumble_aligns_to_epoch_including_negative_times() {
        let (b, nulls) = assign_windows(
            &input(vec![Some(0), Some(999), Some(1000), Some(-1), None]),
            &spec(WindowKind::Tumble { size: 1000 }),
        )
        .unwrap();
        assert_eq!(starts(&b), vec![0, 0, 1000, -1000]);
        assert_eq!(nulls, vec![4]);
        let ends = b
            .column(3)
            .as_primitive::<TimestampMillisecondType>()
            .values()
            .to_vec();
        assert_eq!(ends, vec![1000, 1000, 2000, 0]);
    }

    #[test]
    fn sub_millisecond_times_round_down_also_before_1970() {
        let us: ArrayRef = Arc::new(arrow::array::TimestampMicrosecondArray::from(vec![
            Some(-500),
            Some(1_500),
            None,
        ]));
        let ms = millis(&us).unwrap();
        assert_eq!(ms.iter().collect::<Vec<_>>(), vec![Some(-1), Some(1), None]);
        let mut windows = vec![];
        windows_of(WindowKind::Tumble { size: 1000 }, -1, &mut windows);
        assert_eq!(windows, vec![(-1000, 0)]);
    }

    #[test]
    fn hop_replicates_rows_into_every_window() {
        let (b, _) = assign_windows(
            &input(vec![Some(2500)]),
            &spec(WindowKind::Hop {
                size: 3000,
                slide: 1000,
            }),
        )
        .unwrap();
        assert_eq!(starts(&b), vec![0, 1000, 2000]);
        assert_eq!(b.num_rows(), 3);
    }

    #[test]
    fn cumulate_puts_a_row_in_every_growing_window_that_reaches_past_it() {
        let spec = spec(WindowKind::Cumulate {
            step: 1000,
            size: 4000,
        });
        // 2500 is in [0, 3000) and [0, 4000); 4000 starts the next cycle; -1 is in [-4000, 0).
        let (b, _) = assign_windows(&input(vec![Some(2500), Some(4000), Some(-1)]), &spec).unwrap();
        assert_eq!(starts(&b), vec![0, 0, 4000, 4000, 4000, 4000, -4000]);
        let ends = b
            .column(3)
            .as_primitive::<TimestampMillisecondType>()
            .values()
            .to_vec();
        assert_eq!(ends, vec![3000, 4000, 5000, 6000, 7000, 8000, 0]);
        for end in [3000, 4000, 5000, 8000, 0] {
            let start = WindowKind::Cumulate {
                step: 1000,
                size: 4000,
            }
            .start_of(end);
            assert!(
                end - start <= 4000 && start.rem_euclid(4000) == 0,
                "{end}: {start}"
            );
        }
    }
}
