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
use flowline_core::{Message, Operator, Output, Reject, RejectReason, Result, Watermark};

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
        let rows = crate::rows::row_converter(&schema)?;
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
        self.bytes += kept_size(&key, &kept.row);
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
        let (keys, key_types) = key_converter(&spec)?;
        let layout = format!(
            "{:?} join; keys {:?}; time {:?}{}; left {} columns; right {} columns",
            spec.kind,
            key_types,
            spec.time.as_ref().map(|t| (t.lower, t.upper, t.window_end)),
            match spec.state_ttl {
                Some(ttl) => format!("; state ttl {ttl} ms"),
                None => String::new(),
            },
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

    fn expires(&self, side: usize, time: i64) -> Option<i64> {
        expiry(&self.spec, side, time)
    }

    fn key_columns(&self, side: usize, batch: &RecordBatch) -> Result<Vec<ArrayRef>> {
        key_columns(&self.spec, side == RIGHT, batch)
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
        let table = if side == LEFT {
            &self.table_name
        } else {
            &self.spec.right_table
        };
        reject_rows(table, batch, rows, reason, self.watermark(), out)
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
                // A regular join's rows carry the watermark they arrived under (state TTL).
                None => wm.0,
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
                    let spec = &self.spec;
                    let mut freed = 0;
                    rows.retain(|k| {
                        if expiry(spec, side, k.time).is_none_or(|at| at > w.0) {
                            return true;
                        }
                        freed += kept_size(&key, &k.row);
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

    /// State TTL: rows kept before the first watermark count as arriving under it (else they
    /// would expire at once).
    fn restamp_first(&mut self) {
        let (Some(ttl), None) = (self.spec.state_ttl, &self.spec.time) else {
            return;
        };
        let w = self.watermark().0;
        for s in &mut self.sides {
            let Some(keys) = s.expiry.remove(&i64::MIN.saturating_add(ttl)) else {
                continue;
            };
            for key in &keys {
                for k in s.by_key.get_mut(key).into_iter().flatten() {
                    if k.time == i64::MIN {
                        k.time = w;
                    }
                }
            }
            s.expiry
                .entry(w.saturating_add(ttl))
                .or_default()
                .extend(keys);
        }
    }

    fn on_message(&mut self, side: usize, message: Message, out: &mut Output) -> Result<()> {
        match message {
            Message::Data(batch) => self.on_batch(side, batch, out)?,
            Message::Watermark(w) => {
                if w > self.watermarks[side] {
                    let before = self.watermark();
                    self.watermarks[side] = w;
                    if before == Watermark::MIN && self.watermark() != Watermark::MIN {
                        self.restamp_first();
                    }
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
            Message::Retract(_) => return Err(flowline_core::Error::cannot_retract("join")),
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
        d.expect_layout(&self.layout)?;
        let watermarks = [Watermark(d.i64()?), Watermark(d.i64()?)];
        let ended = d.u8()?;
        if ended > 3 {
            return Err(d.error(format!("ended flags {ended}")));
        }
        let sent = Watermark(d.i64()?);
        let left = state_schema(&self.spec.left_schema);
        let right = state_schema(&self.spec.right_schema);
        let batches = [
            batch_from_ipc(d.bytes()?, CHECKPOINT, &left)?,
            batch_from_ipc(d.bytes()?, CHECKPOINT, &right)?,
        ];
        d.finish()?;
        let mut sides = [
            Side::new(self.spec.left_schema.clone())?,
            Side::new(self.spec.right_schema.clone())?,
        ];
        for (side, batch) in batches.iter().enumerate() {
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

/// A join input's key columns, as the left keys' types (a right key is cast to its left key's
/// type, so equal values encode equally).
pub(crate) fn key_columns(
    spec: &JoinSpec,
    right: bool,
    batch: &RecordBatch,
) -> Result<Vec<ArrayRef>> {
    let exprs = if right {
        &spec.right_keys
    } else {
        &spec.left_keys
    };
    let n = batch.num_rows();
    exprs
        .iter()
        .zip(&spec.left_keys)
        .map(|(e, l)| {
            let column = e.evaluate(batch)?.into_array(n)?;
            let wanted = l.data_type(&spec.left_schema)?;
            Ok(if column.data_type() == &wanted {
                column
            } else {
                cast(&column, &wanted)?
            })
        })
        .collect()
}

/// The key encoder of a join: one sort field per left key type.
pub(crate) fn key_converter(spec: &JoinSpec) -> Result<(RowConverter, Vec<DataType>)> {
    let key_types = spec
        .left_keys
        .iter()
        .map(|k| Ok(k.data_type(&spec.left_schema)?))
        .collect::<Result<Vec<DataType>>>()?;
    let keys = RowConverter::new(key_types.iter().cloned().map(SortField::new).collect())?;
    Ok((keys, key_types))
}

/// Rejects rows `rows` of `batch` (of input `table`): late (the join's watermark `watermark`
/// passed their time) or without a join time.
pub(crate) fn reject_rows(
    table: &str,
    batch: &RecordBatch,
    rows: &[usize],
    reason: RejectReason,
    watermark: Watermark,
    out: &mut Output,
) -> Result<()> {
    let detail = match reason {
        RejectReason::Late => format!(
            "the join's watermark passed {}: rows it should join may be gone",
            watermark.display()
        ),
        _ => "its join time is NULL, so it has no place in time".to_string(),
    };
    for raw in rows_as_json(batch, rows)? {
        out.reject(Reject {
            reason,
            detail: detail.clone(),
            table: table.to_string(),
            sink: None,
            file: None,
            line: None,
            raw,
            window: None,
            watermark: (reason == RejectReason::Late).then(|| watermark.display()),
        });
    }
    Ok(())
}

/// When a kept row of `side` at `time` can match no future row of the other side, or, for a
/// regular join with a state TTL, is dropped (`None`: a regular join's rows are kept forever).
fn expiry(spec: &JoinSpec, side: usize, time: i64) -> Option<i64> {
    let Some(t) = spec.time.as_ref() else {
        return spec.state_ttl.map(|ttl| time.saturating_add(ttl));
    };
    Some(if side == LEFT {
        time.saturating_sub(t.lower)
    } else {
        time.saturating_add(t.upper)
    })
}

/// Approximate bytes of a kept row: its encoding, its key and the bookkeeping.
fn kept_size(key: &[u8], row: &OwnedRow) -> usize {
    row.as_ref().len() + key.len() + 48
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
    use arrow::datatypes::{Int64Type, TimeUnit, TimestampMillisecondType};
    use datafusion::physical_expr::expressions::col;
    use flowline_core::plan::JoinTime;
    use proptest::prelude::*;

    /// An input row: key (NULL or 0..3), value, time in ms.
    #[derive(Debug, Clone, Copy)]
    struct In {
        key: Option<i64>,
        v: i64,
        t: i64,
    }

    fn row(key: Option<i64>, v: i64, t: i64) -> In {
        In { key, v, t }
    }

    /// An output row: left (key, value, time), then right (key, value, time), NULL for a left
    /// row without a partner.
    type Out = (Option<i64>, i64, i64, Option<i64>, Option<i64>, Option<i64>);

    fn key_type(utf8: bool) -> DataType {
        if utf8 {
            DataType::Utf8
        } else {
            DataType::Int64
        }
    }

    fn side_schema(utf8: bool, prefix: &str) -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new(format!("{prefix}k"), key_type(utf8), true),
            Field::new(format!("{prefix}v"), DataType::Int64, false),
            Field::new(
                format!("{prefix}ts"),
                DataType::Timestamp(TimeUnit::Millisecond, None),
                false,
            ),
        ]))
    }

    /// Keys as (left, right) Utf8 (else Int64): right keys of another type are cast to the
    /// left ones'. Bounds `(lower, upper)` for an interval join `lower <= ts - rts <= upper`,
    /// `None` for a regular one.
    fn spec(utf8: (bool, bool), kind: JoinKind, bounds: Option<(i64, i64)>) -> JoinSpec {
        let left = side_schema(utf8.0, "");
        let right = side_schema(utf8.1, "r");
        let fields: Vec<_> = left
            .fields()
            .iter()
            .chain(right.fields().iter())
            .map(|f| f.as_ref().clone().with_nullable(true))
            .collect();
        JoinSpec {
            kind,
            left_keys: vec![col("k", &left).unwrap()],
            right_keys: vec![col("rk", &right).unwrap()],
            time: bounds.map(|(lower, upper)| JoinTime {
                left: col("ts", &left).unwrap(),
                right: col("rts", &right).unwrap(),
                lower,
                upper,
                window_end: false,
            }),
            state_ttl: None,
            as_of: None,
            right_table: "rates".to_string(),
            left_schema: left,
            right_schema: right,
            schema: Arc::new(Schema::new(fields)),
        }
    }

    fn join(utf8: (bool, bool), kind: JoinKind, bounds: Option<(i64, i64)>) -> StreamJoin {
        StreamJoin::new(spec(utf8, kind, bounds), "orders").unwrap()
    }

    fn batch(utf8: bool, side: usize, rows: &[In]) -> Message {
        let schema = side_schema(utf8, if side == LEFT { "" } else { "r" });
        let keys: ArrayRef = if utf8 {
            Arc::new(StringArray::from_iter(
                rows.iter().map(|r| r.key.map(|k| k.to_string())),
            ))
        } else {
            Arc::new(Int64Array::from_iter(rows.iter().map(|r| r.key)))
        };
        Message::Data(
            RecordBatch::try_new(
                schema,
                vec![
                    keys,
                    Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.v))),
                    Arc::new(TimestampMillisecondArray::from_iter_values(
                        rows.iter().map(|r| r.t),
                    )),
                ],
            )
            .unwrap(),
        )
    }

    fn keys_of(column: &ArrayRef) -> Vec<Option<i64>> {
        match column.data_type() {
            DataType::Utf8 => column
                .as_string::<i32>()
                .iter()
                .map(|k| k.map(|k| k.parse().unwrap()))
                .collect(),
            DataType::Int64 => column.as_primitive::<Int64Type>().iter().collect(),
            other => panic!("key column of type {other}"),
        }
    }

    fn rows_of(b: &RecordBatch) -> Vec<Out> {
        assert_eq!(b.num_columns(), 6);
        let lk = keys_of(b.column(0));
        let lv = b.column(1).as_primitive::<Int64Type>();
        let lt = b.column(2).as_primitive::<TimestampMillisecondType>();
        let rk = keys_of(b.column(3));
        let rv = b.column(4).as_primitive::<Int64Type>();
        let rt = b.column(5).as_primitive::<TimestampMillisecondType>();
        (0..b.num_rows())
            .map(|i| {
                assert!(
                    lv.is_valid(i) && lt.is_valid(i),
                    "left columns are never NULL"
                );
                let right_null = rv.is_null(i);
                assert_eq!(right_null, rt.is_null(i), "right columns NULL together");
                if right_null {
                    assert_eq!(rk[i], None);
                }
                (
                    lk[i],
                    lv.value(i),
                    lt.value(i),
                    rk[i],
                    rv.is_valid(i).then(|| rv.value(i)),
                    rt.is_valid(i).then(|| rt.value(i)),
                )
            })
            .collect()
    }

    /// Feeds messages to a join (across restores) and checks the output as it comes: data
    /// rows never at or behind a watermark already sent, watermarks non-decreasing and at most
    /// `min(input watermarks) - delay`, one `EndOfInput`, last, once both inputs ended.
    struct Tracker {
        delay: i64,
        watermarks: [Watermark; 2],
        ended: [bool; 2],
        sent: Watermark,
        rows: Vec<Out>,
        ends: usize,
        rejects: Vec<Reject>,
    }

    impl Tracker {
        fn new(bounds: Option<(i64, i64)>) -> Tracker {
            Tracker {
                delay: bounds.map_or(0, |(lower, upper)| upper.max(-lower).max(0)),
                watermarks: [Watermark::MIN; 2],
                ended: [false; 2],
                sent: Watermark::MIN,
                rows: vec![],
                ends: 0,
                rejects: vec![],
            }
        }

        /// Returns the rows this message produced.
        fn feed(&mut self, op: &mut StreamJoin, side: usize, message: Message) -> Vec<Out> {
            assert_eq!(self.ends, 0, "a message after the join's EndOfInput");
            match &message {
                Message::Watermark(w) => {
                    self.watermarks[side] = self.watermarks[side].max(*w);
                }
                Message::EndOfInput => {
                    assert_eq!(self.watermarks[side], Watermark::MAX, "test input");
                    self.ended[side] = true;
                }
                _ => {}
            }
            let mut out = Output::default();
            if side == LEFT {
                op.process(message, &mut out).unwrap();
            } else {
                op.process_right(message, &mut out).unwrap();
            }
            self.rejects.extend(out.rejects);
            let n = out.messages.len();
            let mut produced = vec![];
            for (i, m) in out.messages.into_iter().enumerate() {
                match m {
                    Message::Data(b) => {
                        assert_eq!(self.ends, 0);
                        for r in rows_of(&b) {
                            assert!(
                                r.2 > self.sent.0 && r.5.is_none_or(|t| t > self.sent.0),
                                "row {r:?} after watermark {:?}",
                                self.sent
                            );
                            produced.push(r);
                        }
                    }
                    Message::Watermark(w) => {
                        assert_eq!(self.ends, 0);
                        assert!(w >= self.sent, "watermark {w:?} after {:?}", self.sent);
                        let input = self.watermarks[LEFT].min(self.watermarks[RIGHT]);
                        assert!(
                            (w == Watermark::MAX && input == Watermark::MAX)
                                || w.0 <= input.0.saturating_sub(self.delay),
                            "watermark {w:?} with inputs at {:?}, delay {}",
                            self.watermarks,
                            self.delay
                        );
                        self.sent = w;
                    }
                    Message::EndOfInput => {
                        assert_eq!(self.ended, [true, true], "EndOfInput before both ended");
                        assert_eq!(i, n - 1, "EndOfInput is the last message");
                        self.ends += 1;
                    }
                    Message::EmitUpdates => panic!("no update tick was sent"),
                    Message::Retract(_) => panic!("a join never retracts"),
                }
            }
            self.rows.extend(produced.iter().copied());
            produced
        }

        fn feed_all(&mut self, op: &mut StreamJoin, messages: &[(usize, Message)]) {
            for (side, m) in messages {
                self.feed(op, *side, m.clone());
            }
        }
    }

    fn sorted(mut rows: Vec<Out>) -> Vec<Out> {
        rows.sort();
        rows
    }

    /// The batch join: every pair within the bounds, and for a left join every left row
    /// without one.
    fn model(kind: JoinKind, lower: i64, upper: i64, left: &[In], right: &[In]) -> Vec<Out> {
        let mut want = vec![];
        for l in left {
            let mut matched = false;
            for r in right {
                if l.key.is_some() && l.key == r.key && (lower..=upper).contains(&(l.t - r.t)) {
                    matched = true;
                    want.push((l.key, l.v, l.t, r.key, Some(r.v), Some(r.t)));
                }
            }
            if !matched && kind == JoinKind::Left {
                want.push((l.key, l.v, l.t, None, None, None));
            }
        }
        sorted(want)
    }

    /// One side's messages: its rows in batches (a batch ends after a row flagged so), after
    /// some batches a watermark just below the next row's time, then the end.
    fn side_messages(utf8: bool, side: usize, rows: &[In], flags: &[(bool, bool)]) -> Vec<Message> {
        let mut messages = vec![];
        let mut start = 0;
        for i in 0..rows.len() {
            let (cut, watermark) = flags[i];
            if cut || i + 1 == rows.len() {
                messages.push(batch(utf8, side, &rows[start..=i]));
                start = i + 1;
                if watermark && i + 1 < rows.len() {
                    messages.push(Message::Watermark(Watermark(rows[i + 1].t - 1)));
                }
            }
        }
        messages.push(Message::Watermark(Watermark::MAX));
        messages.push(Message::EndOfInput);
        messages
    }

    /// Rows in time order from (key, time step, batch end, watermark after) tuples.
    fn in_order(
        raw: &[(Option<i64>, i64, bool, bool)],
        first_v: i64,
    ) -> (Vec<In>, Vec<(bool, bool)>) {
        let mut t = 1_000;
        let rows = raw
            .iter()
            .enumerate()
            .map(|(i, &(key, step, _, _))| {
                t += step;
                row(key, first_v + i as i64, t)
            })
            .collect();
        (rows, raw.iter().map(|r| (r.2, r.3)).collect())
    }

    fn raw_rows() -> impl Strategy<Value = Vec<(Option<i64>, i64, bool, bool)>> {
        prop::collection::vec(
            (
                prop::option::weighted(0.85, 0i64..3),
                0i64..15,
                any::<bool>(),
                any::<bool>(),
            ),
            0..25,
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, failure_persistence: None, ..ProptestConfig::default() })]

        /// Whatever the batches, watermarks and interleaving of the two inputs (either may end
        /// first): the join emits what a batch join would, watermarks within the bounds, one
        /// end; and a snapshot/restore anywhere changes nothing.
        #[test]
        fn join_matches_a_batch_join_and_survives_a_restore(
            utf8 in prop::sample::select(vec![(false, false), (true, true), (true, false)]),
            regular in prop::bool::weighted(0.2),
            left_join in any::<bool>(),
            a in -30i64..30,
            b in -30i64..30,
            raw_left in raw_rows(),
            raw_right in raw_rows(),
            order in prop::collection::vec(any::<bool>(), 110),
            cut in any::<prop::sample::Index>(),
        ) {
            let (lower, upper) = (a.min(b), a.max(b));
            // Mostly interval joins; sometimes a regular one (every equal-key pair).
            let bounds = (!regular).then_some((lower, upper));
            let (lower, upper) = if regular { (i64::MIN, i64::MAX) } else { (lower, upper) };
            let kind = if left_join { JoinKind::Left } else { JoinKind::Inner };
            let (left, left_flags) = in_order(&raw_left, 0);
            let (right, right_flags) = in_order(&raw_right, 100);

            let mut whole = join(utf8, kind, bounds);
            let mut queues = [
                side_messages(utf8.0, LEFT, &left, &left_flags).into_iter().peekable(),
                side_messages(utf8.1, RIGHT, &right, &right_flags).into_iter().peekable(),
            ];
            let mut messages = vec![];
            let mut picks = order.iter();
            loop {
                let want = usize::from(*picks.next().unwrap_or(&false));
                let side = if queues[want].peek().is_some() { want } else { 1 - want };
                let Some(m) = queues[side].next() else { break };
                messages.push((side, m));
            }

            let mut tracker = Tracker::new(bounds);
            tracker.feed_all(&mut whole, &messages);
            let want = model(kind, lower, upper, &left, &right);
            prop_assert!(tracker.rejects.is_empty(), "rejects: {:?}", tracker.rejects);
            prop_assert_eq!(tracker.ends, 1);
            prop_assert_eq!(tracker.sent, Watermark::MAX);
            prop_assert_eq!(whole.state_bytes(), 0);
            let got = sorted(tracker.rows);
            prop_assert_eq!(&got, &want);

            let cut = cut.index(messages.len() + 1);
            let mut tracker = Tracker::new(bounds);
            let mut before = join(utf8, kind, bounds);
            tracker.feed_all(&mut before, &messages[..cut]);
            let mut blob = vec![];
            before.snapshot(&mut blob).unwrap();
            let mut after = join(utf8, kind, bounds);
            after.restore(&blob).unwrap();
            prop_assert_eq!(after.state_bytes() > 0, before.state_bytes() > 0);
            tracker.feed_all(&mut after, &messages[cut..]);
            prop_assert!(tracker.rejects.is_empty(), "rejects: {:?}", tracker.rejects);
            prop_assert_eq!(tracker.ends, 1);
            prop_assert_eq!(sorted(tracker.rows), want);
        }
    }

    #[test]
    fn a_row_at_or_before_the_watermark_is_late_and_never_joined() {
        let bounds = Some((-10, 10));
        let mut op = join((false, false), JoinKind::Left, bounds);
        let mut t = Tracker::new(bounds);
        let k = Some(1);
        assert!(t
            .feed(&mut op, LEFT, batch(false, LEFT, &[row(k, 0, 45)]))
            .is_empty());
        t.feed(&mut op, LEFT, Message::Watermark(Watermark(50)));
        t.feed(&mut op, RIGHT, Message::Watermark(Watermark(50)));
        // The left row at 45 can still match right rows up to 55: kept.
        assert!(op.sides[LEFT].bytes > 0);
        let joined = t.feed(
            &mut op,
            RIGHT,
            batch(
                false,
                RIGHT,
                &[row(k, 100, 40), row(k, 101, 50), row(k, 102, 51)],
            ),
        );
        // 40 and 50 are at or before the watermark 50: late, though within the bounds of 45.
        assert_eq!(joined, vec![(k, 0, 45, k, Some(102), Some(51))]);
        assert_eq!(t.rejects.len(), 2);
        for (r, v) in t.rejects.iter().zip([100, 101]) {
            assert_eq!(r.reason, RejectReason::Late);
            assert_eq!(r.table, "rates");
            assert!(r.raw.contains(&v.to_string()), "{}", r.raw);
            assert!(r.watermark.is_some());
        }
        // The left row at 52 would join the late right row at 50 had it been kept.
        let joined = t.feed(&mut op, LEFT, batch(false, LEFT, &[row(k, 1, 52)]));
        assert_eq!(joined, vec![(k, 1, 52, k, Some(102), Some(51))]);
        // A late left row: rejected under the left table's name, no NULL row for it.
        let joined = t.feed(&mut op, LEFT, batch(false, LEFT, &[row(k, 2, 50)]));
        assert!(joined.is_empty());
        assert_eq!(t.rejects.len(), 3);
        assert_eq!(t.rejects[2].reason, RejectReason::Late);
        assert_eq!(t.rejects[2].table, "orders");
        for (side, m) in [
            (LEFT, Message::Watermark(Watermark::MAX)),
            (RIGHT, Message::Watermark(Watermark::MAX)),
            (LEFT, Message::EndOfInput),
            (RIGHT, Message::EndOfInput),
        ] {
            t.feed(&mut op, side, m);
        }
        assert_eq!(t.rejects.len(), 3);
        assert_eq!(t.ends, 1);
        assert_eq!(t.rows.len(), 2, "{:?}", t.rows);
        assert_eq!(op.state_bytes(), 0);
    }

    #[test]
    fn a_regular_join_with_a_state_ttl_forgets_rows_idle_longer_than_it() {
        let mut s = spec((false, false), JoinKind::Left, None);
        s.state_ttl = Some(100);
        let mut op = StreamJoin::new(s, "orders").unwrap();
        let mut t = Tracker::new(None);
        let (k1, k2) = (Some(1), Some(2));
        // Before any watermark: kept as if they arrived under the first one (50).
        let b = batch(false, LEFT, &[row(k1, 0, 10), row(k2, 1, 20)]);
        assert!(t.feed(&mut op, LEFT, b).is_empty());
        t.feed(&mut op, LEFT, Message::Watermark(Watermark(50)));
        t.feed(&mut op, RIGHT, Message::Watermark(Watermark(50)));
        assert!(
            op.sides[LEFT].bytes > 0,
            "the first watermark expires nothing"
        );
        let b = batch(false, RIGHT, &[row(k1, 100, 60)]);
        assert_eq!(
            t.feed(&mut op, RIGHT, b),
            vec![(k1, 0, 10, k1, Some(100), Some(60))]
        );
        // At 150 the watermark is exactly TTL past 50: the rows of 50 go; the unmatched left
        // row of a LEFT join comes out with NULLs as it goes.
        t.feed(&mut op, LEFT, Message::Watermark(Watermark(150)));
        assert_eq!(
            t.feed(&mut op, RIGHT, Message::Watermark(Watermark(150))),
            vec![(k2, 1, 20, None, None, None)]
        );
        assert_eq!(op.state_bytes(), 0);
        // So a later row of the same key finds nothing.
        let b = batch(false, RIGHT, &[row(k1, 101, 160)]);
        assert!(t.feed(&mut op, RIGHT, b).is_empty());
        // Its state survives a restore, TTL included, and refuses a plan without TTL.
        let mut blob = vec![];
        op.snapshot(&mut blob).unwrap();
        let mut s = spec((false, false), JoinKind::Left, None);
        s.state_ttl = Some(100);
        let mut restored = StreamJoin::new(s, "orders").unwrap();
        restored.restore(&blob).unwrap();
        assert_eq!(restored.state_bytes(), op.state_bytes());
        let mut no_ttl = join((false, false), JoinKind::Left, None);
        assert!(no_ttl.restore(&blob).is_err());
        let b = batch(false, LEFT, &[row(k1, 2, 170)]);
        assert_eq!(
            t.feed(&mut restored, LEFT, b),
            vec![(k1, 2, 170, k1, Some(101), Some(160))]
        );
        t.feed(&mut restored, LEFT, Message::Watermark(Watermark(400)));
        assert!(
            t.feed(&mut restored, RIGHT, Message::Watermark(Watermark(400)))
                .is_empty(),
            "a matched left row expires silently"
        );
        assert_eq!(restored.state_bytes(), 0);
    }

    #[test]
    fn a_regular_left_join_holds_left_rows_until_the_right_input_ends() {
        let mut op = join((true, true), JoinKind::Left, None);
        let mut t = Tracker::new(None);
        let (k1, k2, k3) = (Some(1), Some(2), Some(3));
        let b = batch(true, LEFT, &[row(k1, 0, 10), row(k2, 1, 20)]);
        assert!(t.feed(&mut op, LEFT, b).is_empty());
        assert!(op.sides[LEFT].bytes > 0);
        let b = batch(true, RIGHT, &[row(k1, 100, 5)]);
        assert_eq!(
            t.feed(&mut op, RIGHT, b),
            vec![(k1, 0, 10, k1, Some(100), Some(5))]
        );
        let b = batch(true, LEFT, &[row(k1, 2, 30)]);
        assert_eq!(
            t.feed(&mut op, LEFT, b),
            vec![(k1, 2, 30, k1, Some(100), Some(5))]
        );
        // Watermarks short of the end change nothing and are not sent on.
        assert!(t
            .feed(&mut op, LEFT, Message::Watermark(Watermark(1_000)))
            .is_empty());
        assert!(t
            .feed(&mut op, RIGHT, Message::Watermark(Watermark(2_000)))
            .is_empty());
        assert_eq!(t.sent, Watermark::MIN);
        assert!(op.sides[LEFT].bytes > 0);
        // The right input ends: the unmatched left row comes out with NULLs, none is kept.
        assert_eq!(
            t.feed(&mut op, RIGHT, Message::Watermark(Watermark::MAX)),
            vec![(k2, 1, 20, None, None, None)]
        );
        assert_eq!(op.sides[LEFT].bytes, 0);
        assert!(
            op.sides[RIGHT].bytes > 0,
            "later left rows still join the right ones"
        );
        assert_eq!(t.sent, Watermark::MIN);
        t.feed(&mut op, RIGHT, Message::EndOfInput);
        assert_eq!(t.ends, 0);
        // Later left rows: joined or emitted with NULLs at once, never kept.
        let b = batch(
            true,
            LEFT,
            &[row(k1, 3, 40), row(k3, 4, 50), row(None, 5, 60)],
        );
        assert_eq!(
            sorted(t.feed(&mut op, LEFT, b)),
            sorted(vec![
                (k1, 3, 40, k1, Some(100), Some(5)),
                (k3, 4, 50, None, None, None),
                (None, 5, 60, None, None, None),
            ])
        );
        assert_eq!(op.sides[LEFT].bytes, 0);
        assert!(t
            .feed(&mut op, LEFT, Message::Watermark(Watermark::MAX))
            .is_empty());
        assert_eq!(t.sent, Watermark::MAX);
        assert_eq!(op.state_bytes(), 0);
        t.feed(&mut op, LEFT, Message::EndOfInput);
        assert_eq!(t.ends, 1);
        assert!(t.rejects.is_empty());
        assert_eq!(t.rows.len(), 6);
    }

    #[test]
    fn a_snapshot_does_not_restore_into_other_bounds() {
        let mut op = join((false, false), JoinKind::Inner, Some((-10, 10)));
        let mut t = Tracker::new(Some((-10, 10)));
        let b = batch(false, LEFT, &[row(Some(1), 0, 100)]);
        t.feed(&mut op, LEFT, b);
        let mut blob = vec![];
        op.snapshot(&mut blob).unwrap();
        let mut same = join((false, false), JoinKind::Inner, Some((-10, 10)));
        same.restore(&blob).unwrap();
        assert_eq!(same.state_bytes(), op.state_bytes());
        let mut other = join((false, false), JoinKind::Inner, Some((-10, 20)));
        let error = other.restore(&blob).unwrap_err().to_string();
        assert!(error.contains("another plan"), "{error}");
        assert_eq!(other.state_bytes(), 0);
    }
}
