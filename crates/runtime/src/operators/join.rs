//! Stream joins: interval joins (`l.ts BETWEEN r.ts - INTERVAL '1' HOUR AND r.ts`), window
//! joins (both sides in the same window) and regular equi-joins, inner or left outer.
//!
//! Each side keeps its rows by key. A row arriving on one side is joined with the rows of the
//! same key on the other side whose times satisfy the bounds, then kept for the other side's
//! future rows. The operator has two inputs: [`Operator::process`] is the left one,
//! [`Operator::process_right`] the right one.
//!
//! Time (interval and window joins): `left time - right time` must be in `[lower, upper]`.
//! With `w` the smaller of the two inputs' watermarks, future right rows have times `> w`, so
//! a left row at `tl` can match none once `w >= tl - lower`; a right row at `tr` none once
//! `w >= tr + upper`. Such rows are dropped (a left join first emits its unmatched left rows
//! with NULL right columns). A row arriving with its time at or before `w` is late (rows it
//! should join may be gone): rejected. The output watermark is `w - max(upper, -lower, 0)`:
//! a joined row holds a kept row's time, which can be that far behind `w`.
//!
//! Regular joins keep every row (state grows with the input) and forward only the final
//! watermark. Once an input has ended (its watermark is the maximum) the other side's rows are
//! dropped and its new rows are not kept: nothing more can match them. So a regular left join
//! emits its unmatched left rows when the right input ends (a bounded dimension table), never
//! before; the planner allows it only when the right input is bounded.
//!
//! Invariants:
//! * Every pair of rows with equal non-NULL keys within the bounds is emitted exactly once,
//!   when the later of the two arrives; no pair is emitted whose rows were both on time and
//!   that a batch run would not emit.
//! * A left join emits every left row: joined, or once with NULLs when it expires unmatched.
//! * `EndOfInput` passes on once both inputs have ended.
//!
//! Checkpoints: a frame of the [`codec`](crate::codec) (tag `FJON`, version 1): the layout,
//! both watermarks, which inputs ended, the watermark sent on, then per side one Arrow IPC
//! stream: the side's columns, then its key (binary), time, arrival number and whether it
//! matched.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use arrow::array::{
    new_null_array, Array, ArrayRef, AsArray, BinaryArray, BooleanArray, Int64Array, RecordBatch,
};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::row::{OwnedRow, RowConverter, SortField};
use flowline_core::plan::{JoinKind, JoinSpec};
use flowline_core::{Error, Message, Operator, Output, Reject, RejectReason, Result, Watermark};

use crate::codec::{batch_from_ipc, batch_to_ipc, Decoder, Encoder};
use crate::operators::window::millis;
use crate::rows::rows_as_json;

const MAGIC: [u8; 4] = *b"FJON";
const VERSION: u8 = 1;
const CHECKPOINT: &str = "join checkpoint";

const LEFT: usize = 0;
const RIGHT: usize = 1;

/// A kept row.
struct Kept {
    /// Arrival order on its side.
    seq: u64,
    time: i64,
    row: OwnedRow,
    matched: bool,
}

/// One input's kept rows.
struct Side {
    schema: SchemaRef,
    /// Encodes the side's rows (all columns) for keeping them.
    rows: RowConverter,
    by_key: HashMap<Vec<u8>, Vec<Kept>>,
    /// When rows expire → the keys holding them (a key may be listed more than once).
    expiry: BTreeMap<i64, Vec<Vec<u8>>>,
    bytes: usize,
    /// The next arrival number.
    next: u64,
}

impl Side {
    fn new(schema: SchemaRef) -> Result<Side> {
        let rows = RowConverter::new(
            schema
                .fields()
                .iter()
                .map(|f| SortField::new(f.data_type().clone()))
                .collect(),
        )?;
        Ok(Side {
            schema,
            rows,
            by_key: HashMap::new(),
            expiry: BTreeMap::new(),
            bytes: 0,
            next: 0,
        })
    }

    fn keep(&mut self, key: Vec<u8>, kept: Kept, expires: Option<i64>) {
        self.bytes += kept.row.as_ref().len() + key.len() + 48;
        self.next = self.next.max(kept.seq + 1);
        if let Some(at) = expires {
            self.expiry.entry(at).or_default().push(key.clone());
        }
        self.by_key.entry(key).or_default().push(kept);
    }
}

pub struct StreamJoin {
    spec: JoinSpec,
    table_name: String,
    sides: [Side; 2],
    /// Encodes join keys (the left key types; right keys are cast to them).
    keys: RowConverter,
    watermarks: [Watermark; 2],
    ended: [bool; 2],
    /// The watermark last sent on.
    sent: Watermark,
    layout: String,
}

impl StreamJoin {
    pub fn new(spec: JoinSpec, table_name: &str) -> Result<Self> {
        let key_types = spec
            .left_keys
            .iter()
            .map(|k| Ok(k.data_type(&spec.left_schema)?))
            .collect::<Result<Vec<DataType>>>()?;
        let keys = RowConverter::new(key_types.iter().cloned().map(SortField::new).collect())?;
        let layout = format!(
            "{:?} join; keys {:?}; time {:?}; left {} columns; right {} columns",
            spec.kind,
            key_types,
            spec.time.as_ref().map(|t| (t.lower, t.upper, t.window_end)),
            spec.left_schema.fields().len(),
            spec.right_schema.fields().len()
        );
        Ok(StreamJoin {
            sides: [
                Side::new(spec.left_schema.clone())?,
                Side::new(spec.right_schema.clone())?,
            ],
            spec,
            table_name: table_name.to_string(),
            keys,
            watermarks: [Watermark::MIN; 2],
            ended: [false; 2],
            sent: Watermark::MIN,
            layout,
        })
    }

    fn watermark(&self) -> Watermark {
        self.watermarks[LEFT].min(self.watermarks[RIGHT])
    }

    /// How far behind the input watermark joined rows' times can be.
    fn delay(&self) -> i64 {
        self.spec
            .time
            .as_ref()
            .map_or(0, |t| t.upper.max(t.lower.saturating_neg()).max(0))
    }

    /// When a kept row of `side` at `time` can match no future row of the other side.
    fn expires(&self, side: usize, time: i64) -> Option<i64> {
        let t = self.spec.time.as_ref()?;
        Some(if side == LEFT {
            time.saturating_sub(t.lower)
        } else {
            time.saturating_add(t.upper)
        })
    }

    fn key_columns(&self, side: usize, batch: &RecordBatch) -> Result<Vec<ArrayRef>> {
        let exprs = if side == LEFT {
            &self.spec.left_keys
        } else {
            &self.spec.right_keys
        };
        let n = batch.num_rows();
        exprs
            .iter()
            .zip(&self.spec.left_keys)
            .map(|(e, l)| {
                let column = e.evaluate(batch)?.into_array(n)?;
                let wanted = l.data_type(&self.spec.left_schema)?;
                Ok(if column.data_type() == &wanted {
                    column
                } else {
                    cast(&column, &wanted)?
                })
            })
            .collect()
    }

    fn times(&self, side: usize, batch: &RecordBatch) -> Result<Option<Vec<Option<i64>>>> {
        let Some(t) = &self.spec.time else {
            return Ok(None);
        };
        let expr = if side == LEFT { &t.left } else { &t.right };
        let column = millis(&expr.evaluate(batch)?.into_array(batch.num_rows())?)?;
        let shift = i64::from(t.window_end);
        Ok(Some(
            column
                .iter()
                .map(|v| v.map(|v| v.saturating_sub(shift)))
                .collect(),
        ))
    }

    fn reject(
        &self,
        side: usize,
        batch: &RecordBatch,
        rows: &[usize],
        reason: RejectReason,
        out: &mut Output,
    ) -> Result<()> {
        let detail = match reason {
            RejectReason::Late => format!(
                "the join's watermark passed {}: rows it should join may be gone",
                self.watermark().display()
            ),
            _ => "its join time is NULL, so it has no place in time".to_string(),
        };
        for raw in rows_as_json(batch, rows)? {
            out.reject(Reject {
                reason,
                detail: detail.clone(),
                table: if side == LEFT {
                    self.table_name.clone()
                } else {
                    self.spec.right_table.clone()
                },
                sink: None,
                file: None,
                line: None,
                raw,
                window: None,
                watermark: (reason == RejectReason::Late).then(|| self.watermark().display()),
            });
        }
        Ok(())
    }

    fn on_batch(&mut self, side: usize, batch: RecordBatch, out: &mut Output) -> Result<()> {
        let n = batch.num_rows();
        if n == 0 {
            return Ok(());
        }
        let times = self.times(side, &batch)?;
        let key_columns = self.key_columns(side, &batch)?;
        let keys = self.keys.convert_columns(&key_columns)?;
        let rows = self.sides[side].rows.convert_columns(batch.columns())?;
        let wm = self.watermark();
        let (mut late, mut missing) = (vec![], vec![]);
        // Joined pairs as (left row, right row), and left rows that can never match.
        let mut pairs: Vec<(OwnedRow, OwnedRow)> = vec![];
        let mut alone: Vec<OwnedRow> = vec![];
        let other = 1 - side;
        for i in 0..n {
            let time = match &times {
                Some(t) => match t[i] {
                    None => {
                        missing.push(i);
                        continue;
                    }
                    Some(t) if wm != Watermark::MIN && t <= wm.0 => {
                        late.push(i);
                        continue;
                    }
                    Some(t) => t,
                },
                None => 0,
            };
            let row = rows.row(i).owned();
            if key_columns.iter().any(|c| c.is_null(i)) {
                // NULL keys match nothing.
                if side == LEFT && self.spec.kind == JoinKind::Left {
                    alone.push(row);
                }
                continue;
            }
            let key = keys.row(i).as_ref().to_vec();
            let mut matched = false;
            if let Some(candidates) = self.sides[other].by_key.get_mut(&key) {
                for c in candidates.iter_mut() {
                    let ok = match (&self.spec.time, side) {
                        (None, _) => true,
                        (Some(_), LEFT) => within(&self.spec, time, c.time),
                        (Some(_), _) => within(&self.spec, c.time, time),
                    };
                    if ok {
                        matched = true;
                        c.matched = true;
                        pairs.push(if side == LEFT {
                            (row.clone(), c.row.clone())
                        } else {
                            (c.row.clone(), row.clone())
                        });
                    }
                }
            }
            if self.watermarks[other] == Watermark::MAX {
                // The other input has ended: nothing more can match this row.
                if !matched && side == LEFT && self.spec.kind == JoinKind::Left {
                    alone.push(row);
                }
                continue;
            }
            let expires = self.expires(side, time);
            let seq = self.sides[side].next;
            self.sides[side].keep(
                key,
                Kept {
                    seq,
                    time,
                    row,
                    matched,
                },
                expires,
            );
        }
        self.reject(side, &batch, &missing, RejectReason::MissingEventTime, out)?;
        self.reject(side, &batch, &late, RejectReason::Late, out)?;
        self.emit(pairs, alone, out)
    }

    /// Emits joined pairs, then left rows with NULL right columns.
    fn emit(
        &self,
        pairs: Vec<(OwnedRow, OwnedRow)>,
        alone: Vec<OwnedRow>,
        out: &mut Output,
    ) -> Result<()> {
        if !pairs.is_empty() {
            let mut columns = self.sides[LEFT]
                .rows
                .convert_rows(pairs.iter().map(|p| p.0.row()))?;
            columns.extend(
                self.sides[RIGHT]
                    .rows
                    .convert_rows(pairs.iter().map(|p| p.1.row()))?,
            );
            self.emit_columns(columns, out)?;
        }
        if !alone.is_empty() {
            let mut columns = self.sides[LEFT]
                .rows
                .convert_rows(alone.iter().map(|r| r.row()))?;
            columns.extend(
                self.spec
                    .right_schema
                    .fields()
                    .iter()
                    .map(|f| new_null_array(f.data_type(), alone.len())),
            );
            self.emit_columns(columns, out)?;
        }
        Ok(())
    }

    fn emit_columns(&self, columns: Vec<ArrayRef>, out: &mut Output) -> Result<()> {
        let schema = crate::rows::relax_nullability(&self.spec.schema, &columns);
        out.emit(Message::Data(RecordBatch::try_new(schema, columns)?));
        Ok(())
    }

    /// Drops the rows no future row can match (a left join emits its unmatched left rows) and
    /// sends the watermark on.
    fn advance(&mut self, out: &mut Output) -> Result<()> {
        let w = self.watermark();
        let mut alone = vec![];
        for side in [LEFT, RIGHT] {
            let s = &mut self.sides[side];
            while let Some((&at, _)) = s.expiry.first_key_value() {
                if at > w.0 {
                    break;
                }
                let Some((_, keys)) = s.expiry.pop_first() else {
                    break;
                };
                for key in keys {
                    let Some(rows) = s.by_key.get_mut(&key) else {
                        continue;
                    };
                    let t = self.spec.time.as_ref();
                    let expired = |k: &Kept| {
                        t.is_some_and(|t| {
                            let at = if side == LEFT {
                                k.time.saturating_sub(t.lower)
                            } else {
                                k.time.saturating_add(t.upper)
                            };
                            at <= w.0
                        })
                    };
                    let mut freed = 0;
                    rows.retain(|k| {
                        if !expired(k) {
                            return true;
                        }
                        freed += k.row.as_ref().len() + key.len() + 48;
                        if side == LEFT && !k.matched && self.spec.kind == JoinKind::Left {
                            alone.push((k.time, k.seq, k.row.clone()));
                        }
                        false
                    });
                    s.bytes = s.bytes.saturating_sub(freed);
                    if rows.is_empty() {
                        s.by_key.remove(&key);
                    }
                }
            }
        }
        // An input that ended can match nothing more: the other side's rows go.
        for side in [LEFT, RIGHT] {
            if self.watermarks[1 - side] != Watermark::MAX || self.sides[side].by_key.is_empty() {
                continue;
            }
            let s = &mut self.sides[side];
            for (_, rows) in s.by_key.drain() {
                for k in rows {
                    if side == LEFT && !k.matched && self.spec.kind == JoinKind::Left {
                        alone.push((k.time, k.seq, k.row));
                    }
                }
            }
            s.expiry.clear();
            s.bytes = 0;
        }
        alone.sort_by_key(|a| (a.0, a.1));
        self.emit(vec![], alone.into_iter().map(|a| a.2).collect(), out)?;
        let send = if w == Watermark::MAX {
            w
        } else if self.spec.time.is_none() {
            // Kept rows of any age can still join: only the end is certain.
            Watermark::MIN
        } else {
            Watermark(w.0.saturating_sub(self.delay()))
        };
        if send > self.sent {
            self.sent = send;
            out.emit(Message::Watermark(send));
        }
        Ok(())
    }

    fn on_message(&mut self, side: usize, message: Message, out: &mut Output) -> Result<()> {
        match message {
            Message::Data(batch) => self.on_batch(side, batch, out)?,
            Message::Watermark(w) => {
                if w > self.watermarks[side] {
                    self.watermarks[side] = w;
                    self.advance(out)?;
                }
            }
            Message::EndOfInput => {
                self.ended[side] = true;
                if self.ended == [true, true] {
                    out.emit(Message::EndOfInput);
                }
            }
            // Update ticks come once per chain, on the left input.
            Message::EmitUpdates if side == LEFT => out.emit(Message::EmitUpdates),
            Message::EmitUpdates => {}
        }
        Ok(())
    }

    fn side_state(&self, side: usize) -> Result<RecordBatch> {
        let s = &self.sides[side];
        let mut entries: Vec<(&Vec<u8>, &Kept)> = s
            .by_key
            .iter()
            .flat_map(|(k, rows)| rows.iter().map(move |r| (k, r)))
            .collect();
        // Deterministic checkpoints: in arrival order.
        entries.sort_by_key(|e| e.1.seq);
        let mut columns = s.rows.convert_rows(entries.iter().map(|e| e.1.row.row()))?;
        if entries.is_empty() {
            columns = s
                .schema
                .fields()
                .iter()
                .map(|f| arrow::array::new_empty_array(f.data_type()))
                .collect();
        }
        columns.push(Arc::new(BinaryArray::from_iter_values(
            entries.iter().map(|e| e.0.as_slice()),
        )));
        columns.push(Arc::new(Int64Array::from_iter_values(
            entries.iter().map(|e| e.1.time),
        )));
        columns.push(Arc::new(Int64Array::from_iter_values(
            entries.iter().map(|e| e.1.seq as i64),
        )));
        columns.push(Arc::new(BooleanArray::from(
            entries.iter().map(|e| e.1.matched).collect::<Vec<_>>(),
        )));
        Ok(RecordBatch::try_new(state_schema(&s.schema), columns)?)
    }

    fn write_state(&self, out: &mut Vec<u8>) -> Result<()> {
        let mut e = Encoder::new(out);
        let frame = e.begin_frame(MAGIC, VERSION);
        e.bytes(self.layout.as_bytes())?;
        e.i64(self.watermarks[LEFT].0);
        e.i64(self.watermarks[RIGHT].0);
        e.u8(u8::from(self.ended[LEFT]) | (u8::from(self.ended[RIGHT]) << 1));
        e.i64(self.sent.0);
        for side in [LEFT, RIGHT] {
            e.bytes(&batch_to_ipc(&self.side_state(side)?)?)?;
        }
        e.end_frame(frame);
        Ok(())
    }

    fn read_state(&mut self, state: &[u8]) -> Result<()> {
        let mut d = Decoder::new(state, CHECKPOINT).frame(MAGIC, VERSION)?;
        let layout = d.bytes()?;
        if layout != self.layout.as_bytes() {
            return Err(Error::Internal(format!(
                "{CHECKPOINT} was written for another plan: it holds `{}`, this operator is `{}`",
                String::from_utf8_lossy(layout),
                self.layout
            )));
        }
        let watermarks = [Watermark(d.i64()?), Watermark(d.i64()?)];
        let ended = d.u8()?;
        if ended > 3 {
            return Err(d.error(format!("ended flags {ended}")));
        }
        let sent = Watermark(d.i64()?);
        let batches = [
            batch_from_ipc(d.bytes()?, CHECKPOINT)?,
            batch_from_ipc(d.bytes()?, CHECKPOINT)?,
        ];
        d.finish()?;
        let mut sides = [
            Side::new(self.spec.left_schema.clone())?,
            Side::new(self.spec.right_schema.clone())?,
        ];
        for (side, batch) in batches.iter().enumerate() {
            let expected = state_schema(&sides[side].schema);
            let types: Vec<_> = expected.fields().iter().map(|f| f.data_type()).collect();
            let found: Vec<_> = batch
                .schema_ref()
                .fields()
                .iter()
                .map(|f| f.data_type())
                .collect();
            if types != found {
                return Err(Error::Internal(format!(
                    "{CHECKPOINT}: columns of types {found:?}, expected {types:?}"
                )));
            }
            let width = sides[side].schema.fields().len();
            let rows = sides[side]
                .rows
                .convert_columns(&batch.columns()[..width])?;
            let keys = batch.column(width).as_binary::<i32>();
            let times = batch
                .column(width + 1)
                .as_primitive::<arrow::datatypes::Int64Type>();
            let seqs = batch
                .column(width + 2)
                .as_primitive::<arrow::datatypes::Int64Type>();
            let matched = batch.column(width + 3).as_boolean();
            for i in 0..batch.num_rows() {
                let expires = self.expires(side, times.value(i));
                sides[side].keep(
                    keys.value(i).to_vec(),
                    Kept {
                        seq: seqs.value(i) as u64,
                        time: times.value(i),
                        row: rows.row(i).owned(),
                        matched: matched.value(i),
                    },
                    expires,
                );
            }
        }
        self.sides = sides;
        self.watermarks = watermarks;
        self.ended = [ended & 1 == 1, ended & 2 == 2];
        self.sent = sent;
        Ok(())
    }
}

/// Whether left time `l` and right time `r` satisfy the join's bounds.
fn within(spec: &JoinSpec, l: i64, r: i64) -> bool {
    spec.time.as_ref().is_none_or(|t| {
        let d = l as i128 - r as i128;
        t.lower as i128 <= d && d <= t.upper as i128
    })
}

/// A side's checkpoint columns: its own, then key, time, matched.
fn state_schema(schema: &SchemaRef) -> SchemaRef {
    let mut fields: Vec<Field> = schema
        .fields()
        .iter()
        .enumerate()
        .map(|(i, f)| Field::new(format!("c{i}"), f.data_type().clone(), true))
        .collect();
    fields.push(Field::new("key", DataType::Binary, false));
    fields.push(Field::new("time", DataType::Int64, false));
    fields.push(Field::new("seq", DataType::Int64, false));
    fields.push(Field::new("matched", DataType::Boolean, false));
    Arc::new(Schema::new(fields))
}

impl Operator for StreamJoin {
    fn process(&mut self, message: Message, out: &mut Output) -> Result<()> {
        self.on_message(LEFT, message, out)
    }

    fn process_right(&mut self, message: Message, out: &mut Output) -> Result<()> {
        self.on_message(RIGHT, message, out)
    }

    fn name(&self) -> &'static str {
        "join"
    }

    fn state_bytes(&self) -> usize {
        self.sides[LEFT].bytes + self.sides[RIGHT].bytes
    }

    fn snapshot(&self, out: &mut Vec<u8>) -> Result<()> {
        let at = out.len();
        let result = self.write_state(out);
        if result.is_err() {
            out.truncate(at);
        }
        result
    }

    fn restore(&mut self, state: &[u8]) -> Result<()> {
        self.read_state(state)
    }
}
