//! Temporal joins (`JOIN t FOR SYSTEM_TIME AS OF x`): the left input joins the version of the
//! right table valid at a time, not every right row ever seen.
//!
//! [`LookupJoin`] (processing time, `x` a `PROCTIME()` column): the right input is a bounded
//! dimension table. Its rows arrive as a *load*: data, then `EndOfInput`, which makes the load
//! the table every later left row is joined with (a reload replaces it whole). Left rows are
//! joined at once and never kept, so the operator holds only the table, and watermarks pass
//! through: a lookup join keeps event time, so windows can follow it. This is the seeds'
//! "precompute dimensions, keep expensive joins off the real-time path".
//!
//! [`TemporalJoin`] (event time, `x` the left input's event time): the right input is a
//! versioned table, each row a new version of its key from its event time on. A left row at
//! `t` joins the version of its key with the latest time at or before `t` (of two at the same
//! time, the later to arrive). Left rows wait until the watermark of both inputs, `w`, passes
//! their time: no version at or before it can arrive any more. Then they are joined and sent,
//! in event-time order, and the watermark `w` follows them. Per key, versions before the one
//! valid at `w` are dropped: no waiting or future left row can need them.
//!
//! Invariants (temporal join): a left row is sent exactly once, when `w >= t`, joined with the
//! version a batch run would pick; a LEFT join sends it with NULL right columns when its key
//! has no version yet. A row of either input at or before the watermark already sent is late:
//! rejected (its versions may be gone, or left rows it should have versioned are out).
//!
//! Checkpoints: [`LookupJoin`] keeps no state a restart needs (the table is loaded again,
//! processing time is not repeatable anyway): a frame with its layout only. [`TemporalJoin`]:
//! a frame of the [`codec`](crate::codec) (tag `FTMP`, version 1): the layout, both
//! watermarks, which inputs ended, the watermark sent, the next arrival number, then the
//! waiting left rows and the kept versions as Arrow IPC (columns, key, time, arrival number).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use arrow::array::{
    new_empty_array, Array, ArrayRef, AsArray, BinaryArray, Int64Array, RecordBatch, UInt32Array,
};
use arrow::compute::take;
use arrow::datatypes::{DataType, Field, Int64Type, Schema, SchemaRef};
use arrow::row::{OwnedRow, RowConverter};
use datafusion::physical_expr::PhysicalExpr;
use flowline_core::plan::{AsOf, JoinKind, JoinSpec};
use flowline_core::{Error, Message, Operator, Output, RejectReason, Result, Watermark};

use crate::codec::{batch_from_ipc, batch_to_ipc, Decoder, Encoder};
use crate::operators::join::{key_columns, key_converter, reject_rows};
use crate::operators::window::millis;

const LOOKUP_MAGIC: [u8; 4] = *b"FLKP";
const TEMPORAL_MAGIC: [u8; 4] = *b"FTMP";
const VERSION: u8 = 1;
const CHECKPOINT: &str = "temporal join checkpoint";

/// Builds the join's output: left columns, then right columns taken at `at` (NULL where the
/// index is NULL: a LEFT join's row without a match).
fn output(
    spec: &JoinSpec,
    left: Vec<ArrayRef>,
    right: &[ArrayRef],
    at: &UInt32Array,
) -> Result<RecordBatch> {
    let mut columns = left;
    for (c, f) in right.iter().zip(spec.right_schema.fields()) {
        columns.push(if c.is_empty() {
            // Nothing to take from: every index is NULL.
            arrow::array::new_null_array(f.data_type(), at.len())
        } else {
            take(c.as_ref(), at, None)?
        });
    }
    let schema = crate::rows::relax_nullability(&spec.schema, &columns);
    Ok(RecordBatch::try_new(schema, columns)?)
}

// ------------------------------------------------------------------------- lookup join

/// A loaded dimension table: its rows, and their positions by key.
struct Dimension {
    rows: RecordBatch,
    by_key: HashMap<Box<[u8]>, Vec<u32>>,
    bytes: usize,
}

/// A processing-time lookup join (see the module documentation).
pub struct LookupJoin {
    spec: JoinSpec,
    keys: RowConverter,
    table: Option<Dimension>,
    /// The rows of a load in progress.
    loading: Vec<RecordBatch>,
    layout: String,
}

impl LookupJoin {
    pub fn new(spec: JoinSpec) -> Result<Self> {
        let (keys, key_types) = key_converter(&spec)?;
        let layout = format!(
            "{:?} lookup join; keys {key_types:?}; left {} columns; right {} columns",
            spec.kind,
            spec.left_schema.fields().len(),
            spec.right_schema.fields().len()
        );
        Ok(LookupJoin {
            spec,
            keys,
            table: None,
            loading: vec![],
            layout,
        })
    }

    /// Makes the rows loaded since the last load the table.
    fn finish_load(&mut self) -> Result<()> {
        // Loaded rows may hold NULLs in columns declared NOT NULL (they are not rejected), so
        // the batch's schema is relaxed as the output's is.
        let loaded = std::mem::take(&mut self.loading);
        let rows = if loaded.is_empty() {
            RecordBatch::new_empty(self.spec.right_schema.clone())
        } else {
            let columns = (0..self.spec.right_schema.fields().len())
                .map(|c| {
                    let parts: Vec<&dyn Array> =
                        loaded.iter().map(|b| b.column(c).as_ref()).collect();
                    arrow::compute::concat(&parts)
                })
                .collect::<std::result::Result<Vec<ArrayRef>, _>>()?;
            let schema = crate::rows::relax_nullability(&self.spec.right_schema, &columns);
            RecordBatch::try_new(schema, columns)?
        };
        let key_columns = key_columns(&self.spec, true, &rows)?;
        let keys = self.keys.convert_columns(&key_columns)?;
        let mut by_key: HashMap<Box<[u8]>, Vec<u32>> = HashMap::new();
        for i in 0..rows.num_rows() {
            // A NULL key matches nothing.
            if key_columns.iter().any(|c| c.is_null(i)) {
                continue;
            }
            by_key
                .entry(keys.row(i).as_ref().into())
                .or_default()
                .push(i as u32);
        }
        let bytes = rows.get_array_memory_size()
            + by_key
                .iter()
                .map(|(k, at)| k.len() + at.len() * 4 + 48)
                .sum::<usize>();
        self.table = Some(Dimension {
            rows,
            by_key,
            bytes,
        });
        Ok(())
    }

    fn probe(&self, batch: RecordBatch, out: &mut Output) -> Result<()> {
        let Some(table) = &self.table else {
            return Err(Error::Internal(format!(
                "lookup join: a row arrived before the table `{}` was loaded",
                self.spec.right_table
            )));
        };
        let key_columns = key_columns(&self.spec, false, &batch)?;
        let keys = self.keys.convert_columns(&key_columns)?;
        let outer = self.spec.kind == JoinKind::Left;
        let mut left_at: Vec<u32> = Vec::with_capacity(batch.num_rows());
        let mut right_at: Vec<Option<u32>> = Vec::with_capacity(batch.num_rows());
        for i in 0..batch.num_rows() {
            let found = if key_columns.iter().any(|c| c.is_null(i)) {
                None
            } else {
                table.by_key.get(keys.row(i).as_ref())
            };
            match found {
                Some(rows) => {
                    for &r in rows {
                        left_at.push(i as u32);
                        right_at.push(Some(r));
                    }
                }
                None if outer => {
                    left_at.push(i as u32);
                    right_at.push(None);
                }
                None => {}
            }
        }
        if left_at.is_empty() {
            return Ok(());
        }
        // Each row once, in order (unique dimension keys): the left columns as they are.
        let identity = left_at.len() == batch.num_rows()
            && left_at.iter().enumerate().all(|(i, &at)| at as usize == i);
        let left = if identity {
            batch.columns().to_vec()
        } else {
            let left_at = UInt32Array::from(left_at);
            batch
                .columns()
                .iter()
                .map(|c| Ok(take(c.as_ref(), &left_at, None)?))
                .collect::<Result<Vec<_>>>()?
        };
        let right_at = UInt32Array::from(right_at);
        out.emit(Message::Data(output(
            &self.spec,
            left,
            table.rows.columns(),
            &right_at,
        )?));
        Ok(())
    }
}

impl Operator for LookupJoin {
    fn process(&mut self, message: Message, out: &mut Output) -> Result<()> {
        match message {
            Message::Data(batch) => self.probe(batch, out),
            Message::Retract(_) => Err(Error::cannot_retract("lookup-join")),
            // Joined rows keep the left row's times: control passes through.
            other => {
                out.emit(other);
                Ok(())
            }
        }
    }

    fn process_right(&mut self, message: Message, _out: &mut Output) -> Result<()> {
        match message {
            Message::Data(batch) => {
                if batch.num_rows() > 0 {
                    self.loading.push(batch);
                }
                Ok(())
            }
            Message::EndOfInput => self.finish_load(),
            Message::Watermark(_) | Message::EmitUpdates => Ok(()),
            Message::Retract(_) => Err(Error::cannot_retract("lookup-join")),
        }
    }

    fn name(&self) -> &'static str {
        "lookup-join"
    }

    fn state_bytes(&self) -> usize {
        self.table.as_ref().map_or(0, |t| t.bytes)
    }

    fn snapshot(&self, out: &mut Vec<u8>) -> Result<()> {
        crate::codec::snapshot_into(out, |out| {
            let mut e = Encoder::new(out);
            let frame = e.begin_frame(LOOKUP_MAGIC, VERSION);
            e.bytes(self.layout.as_bytes())?;
            e.end_frame(frame);
            Ok(())
        })
    }

    fn restore(&mut self, state: &[u8]) -> Result<()> {
        let mut d = Decoder::new(state, CHECKPOINT).frame(LOOKUP_MAGIC, VERSION)?;
        d.expect_layout(&self.layout)?;
        d.finish()
    }
}

// ------------------------------------------------------------------------- event-time join

/// Approximate bytes of a kept row: its encoding, its key and the bookkeeping.
fn entry_size(key: Option<&[u8]>, row: &OwnedRow) -> usize {
    row.as_ref().len() + key.map_or(0, <[u8]>::len) + 48
}

const LEFT: usize = 0;
const RIGHT: usize = 1;

/// A versioned table's row.
struct Version {
    time: i64,
    seq: u64,
    row: OwnedRow,
}

/// A left row waiting for the watermark.
struct Waiting {
    /// `None`: a NULL key, which matches no version.
    key: Option<Box<[u8]>>,
    row: OwnedRow,
}

/// An event-time temporal join (see the module documentation).
pub struct TemporalJoin {
    spec: JoinSpec,
    times: [Arc<dyn PhysicalExpr>; 2],
    table_name: String,
    keys: RowConverter,
    rows: [RowConverter; 2],
    /// Left rows by (time, arrival number).
    waiting: BTreeMap<(i64, u64), Waiting>,
    /// Each key's versions, ordered by (time, arrival number).
    versions: HashMap<Box<[u8]>, Vec<Version>>,
    /// Version time → keys that got a version then: once the watermark passes it, the key's
    /// older versions can go.
    prune: BTreeMap<i64, Vec<Box<[u8]>>>,
    watermarks: [Watermark; 2],
    ended: [bool; 2],
    sent: Watermark,
    next: u64,
    bytes: usize,
    layout: String,
}

impl TemporalJoin {
    pub fn new(spec: JoinSpec, table_name: &str) -> Result<Self> {
        let Some(AsOf::EventTime { left, right }) = spec.as_of.clone() else {
            return Err(Error::Internal(
                "an event-time temporal join without event times".into(),
            ));
        };
        let (keys, key_types) = key_converter(&spec)?;
        let layout = format!(
            "{:?} temporal join as of {left} = {right}; keys {key_types:?}; left {} columns; right {} columns",
            spec.kind,
            spec.left_schema.fields().len(),
            spec.right_schema.fields().len()
        );
        Ok(TemporalJoin {
            rows: [
                crate::rows::row_converter(&spec.left_schema)?,
                crate::rows::row_converter(&spec.right_schema)?,
            ],
            spec,
            times: [left, right],
            table_name: table_name.to_string(),
            keys,
            waiting: BTreeMap::new(),
            versions: HashMap::new(),
            prune: BTreeMap::new(),
            watermarks: [Watermark::MIN; 2],
            ended: [false; 2],
            sent: Watermark::MIN,
            next: 0,
            bytes: 0,
            layout,
        })
    }

    fn on_batch(&mut self, side: usize, batch: RecordBatch, out: &mut Output) -> Result<()> {
        let n = batch.num_rows();
        if n == 0 {
            return Ok(());
        }
        let times = millis(&self.times[side].evaluate(&batch)?.into_array(n)?)?;
        let key_columns = key_columns(&self.spec, side == RIGHT, &batch)?;
        let keys = self.keys.convert_columns(&key_columns)?;
        let rows = self.rows[side].convert_columns(batch.columns())?;
        let (mut late, mut missing) = (vec![], vec![]);
        for i in 0..n {
            if times.is_null(i) {
                missing.push(i);
                continue;
            }
            let time = times.value(i);
            if self.sent != Watermark::MIN && time <= self.sent.0 {
                late.push(i);
                continue;
            }
            let key: Option<Box<[u8]>> =
                (!key_columns.iter().any(|c| c.is_null(i))).then(|| keys.row(i).as_ref().into());
            let seq = self.next;
            self.next += 1;
            match (side, key) {
                (LEFT, key) => {
                    let row = rows.row(i).owned();
                    self.bytes += entry_size(key.as_deref(), &row);
                    self.waiting.insert((time, seq), Waiting { key, row });
                }
                (_, Some(key)) => {
                    let row = rows.row(i).owned();
                    self.bytes += entry_size(Some(&key), &row);
                    self.keep_version(key, Version { time, seq, row });
                }
                // A version with a NULL key can be looked up by no row.
                (_, None) => {}
            }
        }
        let table = if side == LEFT {
            &self.table_name
        } else {
            &self.spec.right_table
        };
        reject_rows(
            table,
            &batch,
            &missing,
            RejectReason::MissingEventTime,
            self.sent,
            out,
        )?;
        reject_rows(table, &batch, &late, RejectReason::Late, self.sent, out)
    }

    fn keep_version(&mut self, key: Box<[u8]>, v: Version) {
        self.prune.entry(v.time).or_default().push(key.clone());
        let list = self.versions.entry(key).or_default();
        let at = list.partition_point(|x| (x.time, x.seq) <= (v.time, v.seq));
        list.insert(at, v);
    }

    /// Sends the left rows at or before the watermark of both inputs, joined, then the
    /// watermark; drops the versions no row can need any more.
    fn advance(&mut self, out: &mut Output) -> Result<()> {
        let w = self.watermarks[LEFT].min(self.watermarks[RIGHT]);
        if w <= self.sent {
            return Ok(());
        }
        let mut left = vec![];
        let mut right: Vec<&OwnedRow> = vec![];
        let mut right_at: Vec<Option<u32>> = vec![];
        let outer = self.spec.kind == JoinKind::Left;
        let mut freed = 0;
        while let Some(entry) = self.waiting.first_entry() {
            let (time, _) = *entry.key();
            if time > w.0 {
                break;
            }
            let waiting = entry.remove();
            freed += entry_size(waiting.key.as_deref(), &waiting.row);
            let version = waiting.key.as_ref().and_then(|k| {
                let list = self.versions.get(k)?;
                let at = list.partition_point(|v| v.time <= time);
                at.checked_sub(1).map(|i| &list[i].row)
            });
            match version {
                Some(v) => {
                    right_at.push(Some(right.len() as u32));
                    right.push(v);
                }
                None if outer => right_at.push(None),
                None => continue,
            }
            left.push(waiting.row);
        }
        if !left.is_empty() {
            let left_columns = self.rows[LEFT].convert_rows(left.iter().map(|r| r.row()))?;
            let right_columns = if right.is_empty() {
                self.spec
                    .right_schema
                    .fields()
                    .iter()
                    .map(|f| new_empty_array(f.data_type()))
                    .collect()
            } else {
                self.rows[RIGHT].convert_rows(right.iter().map(|r| r.row()))?
            };
            let at = UInt32Array::from(right_at);
            out.emit(Message::Data(output(
                &self.spec,
                left_columns,
                &right_columns,
                &at,
            )?));
        }
        if w == Watermark::MAX {
            // No left row can come any more: no version is needed.
            self.versions.clear();
            self.prune.clear();
            freed = self.bytes;
        }
        // Per key, the version valid at `w` and later ones stay.
        while let Some(entry) = self.prune.first_entry() {
            if *entry.key() > w.0 {
                break;
            }
            for key in entry.remove() {
                let Some(list) = self.versions.get_mut(&key) else {
                    continue;
                };
                let valid = list.partition_point(|v| v.time <= w.0);
                if valid > 1 {
                    for v in list.drain(..valid - 1) {
                        freed += entry_size(Some(&key), &v.row);
                    }
                }
            }
        }
        self.bytes = self.bytes.saturating_sub(freed);
        self.sent = w;
        out.emit(Message::Watermark(w));
        Ok(())
    }

    fn on_message(&mut self, side: usize, message: Message, out: &mut Output) -> Result<()> {
        match message {
            Message::Data(batch) => self.on_batch(side, batch, out),
            Message::Watermark(w) => {
                if w > self.watermarks[side] {
                    self.watermarks[side] = w;
                    self.advance(out)?;
                }
                Ok(())
            }
            Message::EndOfInput => {
                self.ended[side] = true;
                if self.ended == [true, true] {
                    out.emit(Message::EndOfInput);
                }
                Ok(())
            }
            // Update ticks come once per chain, on the left input.
            Message::EmitUpdates if side == LEFT => {
                out.emit(Message::EmitUpdates);
                Ok(())
            }
            Message::EmitUpdates => Ok(()),
            Message::Retract(_) => Err(Error::cannot_retract("temporal-join")),
        }
    }

    /// Checkpoint columns of one input: its own, then key (NULL: none), time, arrival number.
    fn state_schema(&self, side: usize) -> SchemaRef {
        let schema = if side == LEFT {
            &self.spec.left_schema
        } else {
            &self.spec.right_schema
        };
        let mut fields: Vec<Field> = schema
            .fields()
            .iter()
            .enumerate()
            .map(|(i, f)| Field::new(format!("c{i}"), f.data_type().clone(), true))
            .collect();
        fields.push(Field::new("key", DataType::Binary, true));
        fields.push(Field::new("time", DataType::Int64, false));
        fields.push(Field::new("seq", DataType::Int64, false));
        Arc::new(Schema::new(fields))
    }

    fn state_batch(
        &self,
        side: usize,
        entries: Vec<(Option<&[u8]>, i64, u64, &OwnedRow)>,
    ) -> Result<RecordBatch> {
        let mut columns = if entries.is_empty() {
            let schema = if side == LEFT {
                &self.spec.left_schema
            } else {
                &self.spec.right_schema
            };
            schema
                .fields()
                .iter()
                .map(|f| new_empty_array(f.data_type()))
                .collect()
        } else {
            self.rows[side].convert_rows(entries.iter().map(|e| e.3.row()))?
        };
        columns.push(Arc::new(BinaryArray::from_iter(
            entries.iter().map(|e| e.0),
        )));
        columns.push(Arc::new(Int64Array::from_iter_values(
            entries.iter().map(|e| e.1),
        )));
        columns.push(Arc::new(Int64Array::from_iter_values(
            entries.iter().map(|e| e.2 as i64),
        )));
        Ok(RecordBatch::try_new(self.state_schema(side), columns)?)
    }

    fn write_state(&self, out: &mut Vec<u8>) -> Result<()> {
        let waiting = self
            .waiting
            .iter()
            .map(|(&(t, s), w)| (w.key.as_deref(), t, s, &w.row))
            .collect();
        let mut versions: Vec<_> = self
            .versions
            .iter()
            .flat_map(|(k, list)| {
                list.iter()
                    .map(move |v| (Some(&k[..]), v.time, v.seq, &v.row))
            })
            .collect();
        // Deterministic checkpoints: in arrival order.
        versions.sort_by_key(|e| e.2);
        let mut e = Encoder::new(out);
        let frame = e.begin_frame(TEMPORAL_MAGIC, VERSION);
        e.bytes(self.layout.as_bytes())?;
        e.i64(self.watermarks[LEFT].0);
        e.i64(self.watermarks[RIGHT].0);
        e.u8(u8::from(self.ended[LEFT]) | (u8::from(self.ended[RIGHT]) << 1));
        e.i64(self.sent.0);
        e.u64(self.next);
        e.bytes(&batch_to_ipc(&self.state_batch(LEFT, waiting)?)?)?;
        e.bytes(&batch_to_ipc(&self.state_batch(RIGHT, versions)?)?)?;
        e.end_frame(frame);
        Ok(())
    }

    fn read_state(&mut self, state: &[u8]) -> Result<()> {
        let mut d = Decoder::new(state, CHECKPOINT).frame(TEMPORAL_MAGIC, VERSION)?;
        d.expect_layout(&self.layout)?;
        let watermarks = [Watermark(d.i64()?), Watermark(d.i64()?)];
        let ended = d.u8()?;
        if ended > 3 {
            return Err(d.error(format!("ended flags {ended}")));
        }
        let sent = Watermark(d.i64()?);
        let next = d.u64()?;
        let batches = [
            batch_from_ipc(d.bytes()?, CHECKPOINT, &self.state_schema(LEFT))?,
            batch_from_ipc(d.bytes()?, CHECKPOINT, &self.state_schema(RIGHT))?,
        ];
        d.finish()?;
        let mut restored = TemporalJoin::new(self.spec.clone(), &self.table_name)?;
        for (side, batch) in batches.iter().enumerate() {
            let width = batch.num_columns() - 3;
            let rows = restored.rows[side].convert_columns(&batch.columns()[..width])?;
            let keys = batch.column(width).as_binary::<i32>();
            let times = batch.column(width + 1).as_primitive::<Int64Type>();
            let seqs = batch.column(width + 2).as_primitive::<Int64Type>();
            for i in 0..batch.num_rows() {
                let key: Option<Box<[u8]>> = keys.is_valid(i).then(|| keys.value(i).into());
                let (time, seq, row) = (times.value(i), seqs.value(i) as u64, rows.row(i).owned());
                restored.bytes += entry_size(key.as_deref(), &row);
                if side == LEFT {
                    restored.waiting.insert((time, seq), Waiting { key, row });
                } else {
                    let key = key.ok_or_else(|| d.error("a version without a key"))?;
                    restored.keep_version(key, Version { time, seq, row });
                }
            }
        }
        restored.watermarks = watermarks;
        restored.ended = [ended & 1 == 1, ended & 2 == 2];
        restored.sent = sent;
        restored.next = next;
        *self = restored;
        Ok(())
    }
}

impl Operator for TemporalJoin {
    fn process(&mut self, message: Message, out: &mut Output) -> Result<()> {
        self.on_message(LEFT, message, out)
    }

    fn process_right(&mut self, message: Message, out: &mut Output) -> Result<()> {
        self.on_message(RIGHT, message, out)
    }

    fn name(&self) -> &'static str {
        "temporal-join"
    }

    fn state_bytes(&self) -> usize {
        self.bytes
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
    use arrow::array::TimestampMillisecondArray;
    use arrow::datatypes::TimeUnit;
    use datafusion::physical_expr::expressions::col;
    use proptest::prelude::*;

    /// A row of either input: key (NULL or a small number), value, time in ms.
    type In = (Option<i64>, i64, i64);
    /// An output row: left (key, value, time), then the right value and time (NULL: none).
    type Out = (Option<i64>, i64, i64, Option<i64>, Option<i64>);

    fn side_schema(prefix: &str) -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new(format!("{prefix}k"), DataType::Int64, true),
            Field::new(format!("{prefix}v"), DataType::Int64, false),
            Field::new(
                format!("{prefix}ts"),
                DataType::Timestamp(TimeUnit::Millisecond, None),
                true,
            ),
        ]))
    }

    fn spec(kind: JoinKind, event_time: bool) -> JoinSpec {
        let left = side_schema("");
        let right = side_schema("r");
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
            time: None,
            as_of: Some(if event_time {
                AsOf::EventTime {
                    left: col("ts", &left).unwrap(),
                    right: col("rts", &right).unwrap(),
                }
            } else {
                AsOf::ProcessingTime
            }),
            state_ttl: None,
            right_table: "rates".into(),
            left_schema: left,
            right_schema: right,
            schema: Arc::new(Schema::new(fields)),
        }
    }

    fn batch(prefix: &str, rows: &[In]) -> RecordBatch {
        RecordBatch::try_new(
            side_schema(prefix),
            vec![
                Arc::new(Int64Array::from_iter(rows.iter().map(|r| r.0))),
                Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.1))),
                Arc::new(TimestampMillisecondArray::from_iter_values(
                    rows.iter().map(|r| r.2),
                )),
            ],
        )
        .unwrap()
    }

    fn rows_of(out: &Output) -> Vec<Out> {
        let mut rows = vec![];
        for m in &out.messages {
            let Message::Data(b) = m else { continue };
            let i64s = |c: usize| {
                let c = arrow::compute::cast(b.column(c), &DataType::Int64).unwrap();
                c.as_primitive::<Int64Type>().iter().collect::<Vec<_>>()
            };
            let (k, v, t, rv, rt) = (i64s(0), i64s(1), i64s(2), i64s(4), i64s(5));
            for i in 0..b.num_rows() {
                rows.push((k[i], v[i].unwrap(), t[i].unwrap(), rv[i], rt[i]));
            }
        }
        rows
    }

    fn watermarks(out: &Output) -> Vec<i64> {
        out.messages
            .iter()
            .filter_map(|m| match m {
                Message::Watermark(w) => Some(w.0),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_lookup_join_joins_the_latest_load_and_passes_watermarks_on() {
        let mut op = LookupJoin::new(spec(JoinKind::Left, false)).unwrap();
        let mut out = Output::default();
        let err = op
            .process(Message::Data(batch("", &[(Some(1), 1, 0)])), &mut out)
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("before the table `rates` was loaded"),
            "{err}"
        );
        op.process_right(
            Message::Data(batch(
                "r",
                &[(Some(1), 10, 0), (Some(1), 11, 0), (None, 12, 0)],
            )),
            &mut out,
        )
        .unwrap();
        op.process_right(Message::Watermark(Watermark::MAX), &mut out)
            .unwrap();
        op.process_right(Message::EndOfInput, &mut out).unwrap();
        assert!(out.messages.is_empty(), "a load sends nothing");
        op.process(
            Message::Data(batch("", &[(Some(1), 1, 5), (Some(2), 2, 6), (None, 3, 7)])),
            &mut out,
        )
        .unwrap();
        op.process(Message::Watermark(Watermark(6)), &mut out)
            .unwrap();
        let mut rows = rows_of(&out);
        rows.sort();
        assert_eq!(
            rows,
            vec![
                (None, 3, 7, None, None),
                (Some(1), 1, 5, Some(10), Some(0)),
                (Some(1), 1, 5, Some(11), Some(0)),
                (Some(2), 2, 6, None, None),
            ]
        );
        assert_eq!(watermarks(&out), vec![6]);
        // A reload replaces the table whole.
        let mut out = Output::default();
        op.process_right(Message::Data(batch("r", &[(Some(2), 20, 0)])), &mut out)
            .unwrap();
        op.process(Message::Data(batch("", &[(Some(2), 4, 8)])), &mut out)
            .unwrap();
        op.process_right(Message::EndOfInput, &mut out).unwrap();
        op.process(
            Message::Data(batch("", &[(Some(1), 5, 9), (Some(2), 6, 9)])),
            &mut out,
        )
        .unwrap();
        assert_eq!(
            rows_of(&out),
            vec![
                (Some(2), 4, 8, None, None),
                (Some(1), 5, 9, None, None),
                (Some(2), 6, 9, Some(20), Some(0)),
            ],
            "rows join the previous load until the new one is complete"
        );
        // An inner lookup join drops what does not match.
        let mut inner = LookupJoin::new(spec(JoinKind::Inner, false)).unwrap();
        let mut out = Output::default();
        inner.process_right(Message::EndOfInput, &mut out).unwrap();
        inner
            .process(Message::Data(batch("", &[(Some(1), 1, 5)])), &mut out)
            .unwrap();
        assert!(rows_of(&out).is_empty());
        // A snapshot holds no rows and restores only into the same layout.
        let mut state = vec![];
        op.snapshot(&mut state).unwrap();
        LookupJoin::new(spec(JoinKind::Left, false))
            .unwrap()
            .restore(&state)
            .unwrap();
        assert!(inner.restore(&state).is_err());
    }

    /// What a batch run gives: each left row with the right row of its key with the latest
    /// time at or before its own (the later of equal times), in left time order.
    fn model(kind: JoinKind, left: &[In], right: &[In]) -> Vec<Out> {
        let mut out = vec![];
        for &(k, v, t) in left {
            let version = right
                .iter()
                .filter(|r| k.is_some() && r.0 == k && r.2 <= t)
                .max_by_key(|r| r.2)
                .map(|r| {
                    // The last arrival of the latest time.
                    *right
                        .iter()
                        .rev()
                        .find(|x| x.0 == r.0 && x.2 == r.2)
                        .unwrap()
                });
            match version {
                Some(r) => out.push((k, v, t, Some(r.1), Some(r.2))),
                None if kind == JoinKind::Left => out.push((k, v, t, None, None)),
                None => {}
            }
        }
        out
    }

    fn sorted(mut rows: Vec<Out>) -> Vec<Out> {
        rows.sort();
        rows
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

        /// Inputs in time order per side, interleaved at random, each row followed by its
        /// side's watermark (its time - 1), cut at a random point by a snapshot restored into a
        /// new operator: the output is the model's, nothing is rejected, and the watermarks
        /// sent never pass a row sent after them.
        #[test]
        fn an_event_time_join_picks_the_version_valid_at_each_row(
            mut left in prop::collection::vec((prop::option::weighted(0.9, 0i64..3), 0i64..100, 0i64..50), 0..25),
            mut right in prop::collection::vec((prop::option::weighted(0.9, 0i64..3), 0i64..100, 0i64..50), 0..25),
            order in prop::collection::vec(any::<bool>(), 50),
            cut in 0usize..60,
            outer in any::<bool>(),
        ) {
            let kind = if outer { JoinKind::Left } else { JoinKind::Inner };
            left.sort_by_key(|r| r.2);
            right.sort_by_key(|r| r.2);
            for (i, r) in left.iter_mut().enumerate() { r.1 = i as i64; }
            for (i, r) in right.iter_mut().enumerate() { r.1 = 100 + i as i64; }
            let mut messages: Vec<(usize, Message)> = vec![];
            let (mut l, mut r) = (0, 0);
            for &take_left in order.iter().chain(std::iter::repeat_n(&true, 60)) {
                let side = if (take_left && l < left.len()) || r == right.len() { LEFT } else { RIGHT };
                let (rows, at) = if side == LEFT { (&left, &mut l) } else { (&right, &mut r) };
                if *at == rows.len() { break; }
                let row = rows[*at];
                *at += 1;
                messages.push((side, Message::Data(batch(if side == LEFT { "" } else { "r" }, &[row]))));
                messages.push((side, Message::Watermark(Watermark(row.2 - 1))));
            }
            for side in [LEFT, RIGHT] {
                messages.push((side, Message::Watermark(Watermark::MAX)));
                messages.push((side, Message::EndOfInput));
            }
            let mut op = TemporalJoin::new(spec(kind, true), "orders").unwrap();
            let mut out = Output::default();
            let mut sent_rows: Vec<Out> = vec![];
            let mut last_watermark = i64::MIN;
            for (i, (side, m)) in messages.into_iter().enumerate() {
                if i == cut {
                    let mut state = vec![];
                    op.snapshot(&mut state).unwrap();
                    let bytes = op.state_bytes();
                    op = TemporalJoin::new(spec(kind, true), "orders").unwrap();
                    op.restore(&state).unwrap();
                    prop_assert_eq!(op.state_bytes(), bytes, "restored state counts the same bytes");
                }
                let mut step = Output::default();
                if side == LEFT { op.process(m, &mut step).unwrap() } else { op.process_right(m, &mut step).unwrap() }
                for row in rows_of(&step) {
                    prop_assert!(row.2 > last_watermark, "row {row:?} after watermark {last_watermark}");
                }
                sent_rows.extend(rows_of(&step));
                if let Some(&w) = watermarks(&step).last() { last_watermark = w; }
                out.rejects.extend(step.rejects);
                out.messages.extend(step.messages.into_iter().filter(|m| matches!(m, Message::EndOfInput)));
            }
            prop_assert!(out.rejects.is_empty(), "{:?}", out.rejects);
            prop_assert_eq!(out.messages.len(), 1, "one EndOfInput, once both inputs ended");
            prop_assert_eq!(sorted(sent_rows), sorted(model(kind, &left, &right)));
            prop_assert_eq!(op.state_bytes(), 0, "everything sent and dropped at the end");
        }
    }

    #[test]
    fn late_rows_and_missing_times_are_rejected_and_old_versions_dropped() {
        let mut op = TemporalJoin::new(spec(JoinKind::Inner, true), "orders").unwrap();
        let mut out = Output::default();
        op.process_right(
            Message::Data(batch(
                "r",
                &[(Some(1), 10, 0), (Some(1), 11, 10), (Some(1), 12, 20)],
            )),
            &mut out,
        )
        .unwrap();
        op.process_right(Message::Watermark(Watermark(15)), &mut out)
            .unwrap();
        op.process(Message::Watermark(Watermark(30)), &mut out)
            .unwrap();
        assert_eq!(watermarks(&out), vec![15]);
        // The version at 0 is no longer valid at 15 or later: dropped; 10 and 20 stay.
        assert_eq!(op.versions.values().map(Vec::len).sum::<usize>(), 2);
        let mut out = Output::default();
        op.process(
            Message::Data(batch("", &[(Some(1), 1, 12), (Some(1), 2, 17)])),
            &mut out,
        )
        .unwrap();
        let right = batch("r", &[(Some(1), 13, 14)]);
        op.process_right(Message::Data(right), &mut out).unwrap();
        let missing = RecordBatch::try_new(
            side_schema("r"),
            vec![
                Arc::new(Int64Array::from(vec![Some(1)])),
                Arc::new(Int64Array::from(vec![14])),
                Arc::new(TimestampMillisecondArray::from(vec![None::<i64>])),
            ],
        )
        .unwrap();
        op.process_right(Message::Data(missing), &mut out).unwrap();
        let reasons: Vec<_> = out
            .rejects
            .iter()
            .map(|r| (r.reason, r.table.as_str()))
            .collect();
        assert_eq!(
            reasons,
            vec![
                (RejectReason::Late, "orders"),
                (RejectReason::Late, "rates"),
                (RejectReason::MissingEventTime, "rates"),
            ]
        );
        op.process_right(Message::Watermark(Watermark(25)), &mut out)
            .unwrap();
        assert_eq!(rows_of(&out), vec![(Some(1), 2, 17, Some(11), Some(10))]);
    }
}
