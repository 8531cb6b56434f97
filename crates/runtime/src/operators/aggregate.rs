//! The aggregate: `GROUP BY window_start, window_end, keys...` (per window) or `GROUP BY keys`
//! (over the whole input) with COUNT, COUNT(DISTINCT), SUM, MIN, MAX, AVG. An aggregate without
//! a window is one window that never ends: it fires at the end of a bounded input only.
//!
//! State is one hash table of groups keyed by (window end, key row), where the key row is the
//! group keys in Arrow's row format, plus one vector per aggregate indexed by group id. Updates
//! are vectorized: each batch is mapped to group ids once, then every accumulator folds its
//! input column over those ids.
//!
//! Invariants:
//! * A window `[start, end)` fires exactly once, when the watermark reaches `end - 1`; its groups
//!   are emitted sorted by key (so every mode and batch size writes the same rows in the same
//!   order) and their state is freed.
//! * A row whose window has already fired is late: it is rejected with reason `late` and the
//!   window it missed, never silently dropped, and never changes an emitted result.
//! * Update mode: a group changed by a row is *dirty* until it is emitted, on the next
//!   [`Message::EmitUpdates`] or when its window fires; each emission holds the dirty groups,
//!   sorted by window and key, with their current results. A group is never emitted twice
//!   without a change in between, and the last row emitted for a key is the final result.
//!
//! Checkpoints ([`Operator::snapshot`]/[`Operator::restore`]) hold the watermark and the live
//! groups only, in a frame of the [`codec`](crate::codec) (tag `FWAG`, version 2, length,
//! checksum). Payload, all integers little-endian:
//!
//! ```text
//! layout     bytes   "window 10 ms; append; keys [Utf8]; Count(Int64) count, ..." (refused if
//!                    different)
//! watermark  i64
//! windows    u64 W, then W × { end i64, groups u64 n, n × key bytes (row format) }
//! dirty      u64 D, then D × u64: positions of the dirty groups in the order above
//! touched    only with a state TTL (part of the layout): G × i64, the watermark each group was
//!            last updated under, in the order above
//! aggregates u32 A, then A × { kind u8, counts G × i64, values }   G = live groups, in the
//!            order above; values by kind: count: none; i64/i128/f64: G × value;
//!            rows (MIN/MAX): G × { u8 0 | u8 1, bytes }; distinct: G × { u64 m, m × bytes }
//! ```
//!
//! Row-format bytes (keys, MIN/MAX rows, DISTINCT values) are stored as they are and re-parsed
//! with this operator's converters on restore; group ids are renumbered densely.

use std::sync::Arc;

use ahash::RandomState;
use arrow::array::{
    new_null_array, Array, ArrayRef, AsArray, BooleanArray, Decimal128Array, Float64Array,
    Int64Array, RecordBatch, TimestampMillisecondArray,
};
use arrow::buffer::BooleanBuffer;
use arrow::compute::{cast, filter_record_batch};
use arrow::datatypes::{DataType, Decimal128Type, Float64Type, Int64Type, SchemaRef};
use arrow::row::{OwnedRow, RowConverter, SortField};
use flowline_core::plan::{AggregateCall, AggregateFunction, AggregateSpec, OutputMode};
use flowline_core::{Error, Message, Operator, Output, Reject, RejectReason, Result, Watermark};
use hashbrown::hash_table::{Entry, HashTable};
use hashbrown::HashSet;

use crate::codec::{Decoder, Encoder, FRAME_HEADER};
use crate::functions::SAMPLE_SEED;
use crate::operators::sketch::{hash_bytes, HyperLogLog, Reservoir};
use crate::operators::window::millis;
use crate::rows::rows_as_json;

/// Tag of a window-aggregate checkpoint.
const MAGIC: [u8; 4] = *b"FWAG";
/// Version of the checkpoint payload described in the module documentation.
const VERSION: u8 = 2;
/// Names the blob in decoding errors.
const CHECKPOINT: &str = "window-aggregate checkpoint";

impl Groups {
    fn mark_dirty(&mut self, id: u32) {
        let i = id as usize;
        if self.dirty.len() <= i {
            self.dirty.resize(self.hashes.len().max(i + 1), false);
        }
        if !std::mem::replace(&mut self.dirty[i], true) {
            self.dirty_ids.push(id);
        }
    }

    /// Whether the group is dirty; it no longer is.
    fn take_dirty(&mut self, id: u32) -> bool {
        self.dirty.get_mut(id as usize).is_some_and(std::mem::take)
    }
}

/// One group's key in the row format.
type GroupKey = smallvec::SmallVec<[u8; 24]>;

/// Group bookkeeping, indexed by group id.
#[derive(Default)]
struct Groups {
    hashes: Vec<u64>,
    window: Vec<i64>,
    /// Row-format keys; most (integers, short strings) fit inline, with no allocation per
    /// group and no pointer to follow when probing.
    keys: Vec<GroupKey>,
    free: Vec<u32>,
    /// Bytes of the live keys, kept up to date so state size is O(1) to report.
    key_bytes: usize,
    /// Update mode: whether the group changed since it was last emitted.
    dirty: Vec<bool>,
    /// Update mode: the dirty groups, in the order they became dirty (may hold ids that were
    /// since emitted or freed: `dirty` decides).
    dirty_ids: Vec<u32>,
    /// State TTL: the watermark each group was last updated under (`i64::MAX`: freed).
    touched: Vec<i64>,
    /// State TTL: groups dropped but still listed in their window (see [`Groups::listed`]);
    /// they are unlisted and become reusable in bulk, so an expiry costs O(expired groups).
    pending_free: Vec<u32>,
}

impl Groups {
    /// Whether a group listed in a window is live (not dropped by the TTL since).
    fn listed(&self, id: u32) -> bool {
        self.touched.get(id as usize).is_none_or(|&t| t != i64::MAX)
    }
}

pub struct WindowAggregate {
    spec: AggregateSpec,
    table_name: String,
    /// Positions in `spec.group_exprs` of the non-window keys.
    key_positions: Vec<usize>,
    converter: RowConverter,
    hasher: RandomState,
    table: HashTable<u32>,
    groups: Groups,
    /// Open windows: end → group ids (a window is identified by its end: CUMULATE windows
    /// share starts; without a window, the one window ends at `i64::MAX`).
    windows: std::collections::BTreeMap<i64, Vec<u32>>,
    accumulators: Vec<Accumulator>,
    watermark: Watermark,
    /// State TTL: (watermark, group) for every update, in watermark order; an entry is stale
    /// when its group was updated again since (`touched` differs).
    expiry: std::collections::VecDeque<(i64, u32)>,
    /// State TTL: groups dropped so far.
    expired: u64,
    /// What a checkpoint's state depends on (window size, key types, aggregates), written into
    /// every snapshot so that a state for another plan is refused.
    layout: String,
}

impl WindowAggregate {
    pub fn new(spec: AggregateSpec, table_name: &str) -> Result<Self> {
        let key_positions: Vec<usize> = (0..spec.group_exprs.len())
            .filter(|&i| spec.window.is_none_or(|w| i != w.start && i != w.end))
            .collect();
        let key_types = key_positions
            .iter()
            .map(|&i| Ok(spec.group_exprs[i].data_type(&spec.input_schema)?))
            .collect::<Result<Vec<_>>>()?;
        let converter = RowConverter::new(key_types.iter().cloned().map(SortField::new).collect())?;
        let accumulators = call_types(&spec)?
            .into_iter()
            .map(|(call, input, output)| {
                Accumulator::new(call.function, call.distinct, &input, output)
            })
            .collect::<Result<Vec<_>>>()?;
        let layout = format!(
            "{}{}; {}; keys [{}]; {}",
            match spec.window {
                Some(w) => format!("window {:?}, lateness {} ms", w.kind, spec.allowed_lateness),
                None => "no window".into(),
            },
            match spec.state_ttl {
                Some(ttl) => format!(", state ttl {ttl} ms"),
                None => String::new(),
            },
            spec.output,
            key_types
                .iter()
                .map(|t| t.to_string())
                .collect::<Vec<_>>()
                .join(", "),
            accumulators
                .iter()
                .map(|a| format!("{:?}({}) {}", a.function, a.input, a.values.kind().1))
                .collect::<Vec<_>>()
                .join(", ")
        );
        Ok(WindowAggregate {
            layout,
            spec,
            table_name: table_name.to_string(),
            key_positions,
            converter,
            hasher: RandomState::with_seeds(0x5eed, 0xf10e, 0x11e, 0xa66),
            table: HashTable::new(),
            groups: Groups::default(),
            windows: Default::default(),
            accumulators,
            watermark: Watermark::MIN,
            expiry: Default::default(),
            expired: 0,
        })
    }

    fn on_batch(&mut self, batch: RecordBatch, out: &mut Output) -> Result<()> {
        let n = batch.num_rows();
        let ends = match self.spec.window {
            Some(w) => millis(
                &self.spec.group_exprs[w.end]
                    .evaluate(&batch)?
                    .into_array(n)?,
            )?,
            // Without a window every row is in the one window that never ends.
            None => TimestampMillisecondArray::from(vec![i64::MAX; n]),
        };
        // Late rows: their window [start, end) fired when the watermark reached end - 1.
        let wm = self.watermark.0;
        let late: Vec<usize> = match self.spec.window {
            Some(_) if wm != i64::MIN => {
                let lateness = self.spec.allowed_lateness;
                (0..n)
                    .filter(|&i| (ends.value(i) - 1).saturating_add(lateness) <= wm)
                    .collect()
            }
            _ => vec![],
        };
        let (batch, ends) = match (late.is_empty(), self.spec.window) {
            (false, Some(w)) => {
                for (&i, raw) in late.iter().zip(rows_as_json(&batch, &late)?) {
                    let end = ends.value(i);
                    out.reject(Reject {
                        reason: RejectReason::Late,
                        detail: format!(
                            "the window closed when the watermark passed {}",
                            Watermark((end - 1).saturating_add(self.spec.allowed_lateness))
                                .display()
                        ),
                        table: self.table_name.clone(),
                        sink: None,
                        file: None,
                        line: None,
                        raw,
                        window: Some([
                            Watermark(w.kind.start_of(end)).display(),
                            Watermark(end).display(),
                        ]),
                        watermark: Some(self.watermark.display()),
                    });
                }
                let lateness = self.spec.allowed_lateness;
                let keep: BooleanArray = (0..n)
                    .map(|i| Some((ends.value(i) - 1).saturating_add(lateness) > wm))
                    .collect();
                let kept = arrow::compute::filter(&ends, &keep)?;
                (
                    filter_record_batch(&batch, &keep)?,
                    kept.as_primitive::<arrow::datatypes::TimestampMillisecondType>()
                        .clone(),
                )
            }
            _ => (batch, ends),
        };
        let n = batch.num_rows();
        if n == 0 {
            return Ok(());
        }
        let keys = self
            .key_positions
            .iter()
            .map(|&i| self.spec.group_exprs[i].evaluate(&batch)?.into_array(n))
            .collect::<Result<Vec<_>, _>>()?;
        // Without keys (a global aggregate per window) every row has the empty key.
        let rows = if keys.is_empty() {
            None
        } else {
            Some(self.converter.convert_columns(&keys)?)
        };
        let mut ids = Vec::with_capacity(n);
        for i in 0..n {
            let end = ends.value(i);
            let row = rows.as_ref().map(|r| r.row(i));
            let key: &[u8] = row.as_ref().map_or(&[], |r| r.as_ref());
            let hash = self.hasher.hash_one((end, key));
            let id = find_or_insert(
                &mut self.table,
                &mut self.groups,
                &mut self.windows,
                hash,
                end,
                key,
            );
            ids.push(id);
        }
        let n_groups = self.groups.hashes.len();
        if self.spec.output == OutputMode::Update {
            for &id in &ids {
                self.groups.mark_dirty(id);
            }
        }
        if self.spec.state_ttl.is_some() {
            let now = self.watermark.0;
            self.groups.touched.resize(n_groups, i64::MAX);
            for &id in &ids {
                if std::mem::replace(&mut self.groups.touched[id as usize], now) != now {
                    self.expiry.push_back((now, id));
                }
            }
        }
        for (acc, call) in self.accumulators.iter_mut().zip(&self.spec.calls) {
            acc.resize(n_groups);
            let values = call.arg.evaluate(&batch)?.into_array(n)?;
            let mask = match &call.filter {
                Some(f) => Some(f.evaluate(&batch)?.into_array(n)?.as_boolean().clone()),
                None => None,
            };
            acc.update(&ids, &values, mask.as_ref())?;
        }
        Ok(())
    }

    /// Folds the open groups of `other`, an instance of the same plan node that saw other
    /// rows, into this one: parallel partial aggregation in batch mode. Merging is exact for
    /// every aggregate (sums of floats may differ in the last bits, as any reordering does).
    pub fn merge(&mut self, other: WindowAggregate) -> Result<()> {
        let mut mapping = vec![u32::MAX; other.groups.hashes.len()];
        for (&window, ids) in &other.windows {
            for &id in ids {
                let g = find_or_insert(
                    &mut self.table,
                    &mut self.groups,
                    &mut self.windows,
                    other.groups.hashes[id as usize],
                    window,
                    &other.groups.keys[id as usize],
                );
                mapping[id as usize] = g;
                if self.spec.output == OutputMode::Update {
                    self.groups.mark_dirty(g);
                }
            }
        }
        let n = self.groups.hashes.len();
        for (acc, theirs) in self.accumulators.iter_mut().zip(other.accumulators) {
            acc.resize(n);
            acc.merge(theirs, &mapping)?;
        }
        Ok(())
    }

    /// Emits every window whose end - 1 is at or before the watermark (in update mode, only
    /// its groups that changed since they were last emitted), then frees its groups.
    fn fire(&mut self, out: &mut Output) -> Result<()> {
        let wm = self.watermark.0;
        // A window is due when the watermark reaches end - 1, and is freed once it also passed
        // the allowed lateness (update mode; 0 otherwise).
        let due = wm.saturating_add(1);
        let past = due.saturating_sub(self.spec.allowed_lateness);
        let by_key = |groups: &Groups, ids: &mut Vec<u32>| {
            ids.sort_by(|&a, &b| groups.keys[a as usize].cmp(&groups.keys[b as usize]))
        };
        let mut emitted = vec![];
        if self.spec.output == OutputMode::Update {
            for ids in self.windows.range(..=due).map(|(_, ids)| ids) {
                let mut dirty: Vec<u32> = ids
                    .iter()
                    .copied()
                    .filter(|&g| self.groups.take_dirty(g))
                    .collect();
                by_key(&self.groups, &mut dirty);
                emitted.extend(dirty);
            }
        }
        self.unlist_expired();
        let mut fired = vec![];
        while let Some((&end, _)) = self.windows.first_key_value() {
            if end > past {
                break;
            }
            let (_, mut window_ids) = self.windows.pop_first().unwrap_or_default();
            if self.spec.output == OutputMode::Append {
                by_key(&self.groups, &mut window_ids);
                emitted.extend(window_ids.iter().copied());
            }
            fired.extend(window_ids);
        }
        if !emitted.is_empty() {
            let batch = self.results(&emitted)?;
            out.emit(Message::Data(batch));
        }
        for &id in &fired {
            self.free_group(id, true);
        }
        // Forget the fired groups' ids in the dirty list too, once they are a good part of it.
        let live = self.groups.hashes.len() - self.groups.free.len();
        if self.groups.dirty_ids.len() > 64 + 2 * live {
            let dirty = &self.groups.dirty;
            self.groups.dirty_ids.retain(|&g| dirty[g as usize]);
        }
        Ok(())
    }

    /// Frees group `id` (its window's list is the caller's business); `reuse`: its id may be
    /// taken by a new group at once, else it waits in `pending_free`.
    fn free_group(&mut self, id: u32, reuse: bool) {
        let hash = self.groups.hashes[id as usize];
        if let Ok(e) = self.table.find_entry(hash, |&g| g == id) {
            e.remove();
        }
        let key = std::mem::take(&mut self.groups.keys[id as usize]);
        self.groups.key_bytes -= key.len();
        if reuse {
            self.groups.free.push(id);
        } else {
            self.groups.pending_free.push(id);
        }
        if let Some(t) = self.groups.touched.get_mut(id as usize) {
            *t = i64::MAX;
        }
        for acc in &mut self.accumulators {
            acc.reset(id as usize);
        }
    }

    /// State TTL (update mode, no window): drops the groups not updated while the watermark
    /// advanced more than the TTL, after emitting those still dirty. Rows that came before the
    /// first watermark count as updated under it. At the end of input nothing expires: the
    /// final results are emitted instead.
    fn expire(&mut self, first: bool, out: &mut Output) -> Result<()> {
        let Some(ttl) = self.spec.state_ttl else {
            return Ok(());
        };
        let wm = self.watermark.0;
        if first {
            for entry in self.expiry.iter_mut().take_while(|e| e.0 == i64::MIN) {
                entry.0 = wm;
                let t = &mut self.groups.touched[entry.1 as usize];
                if *t == i64::MIN {
                    *t = wm;
                }
            }
        }
        if wm == i64::MAX {
            return Ok(());
        }
        let mut gone = vec![];
        while let Some(&(stamp, id)) = self.expiry.front() {
            if stamp.saturating_add(ttl) >= wm {
                break;
            }
            self.expiry.pop_front();
            if self.groups.touched.get(id as usize) == Some(&stamp) {
                gone.push(id);
            }
        }
        if gone.is_empty() {
            return Ok(());
        }
        let mut dirty: Vec<u32> = gone
            .iter()
            .copied()
            .filter(|&g| self.groups.take_dirty(g))
            .collect();
        if !dirty.is_empty() {
            dirty.sort_by(|&a, &b| self.groups.keys[a as usize].cmp(&self.groups.keys[b as usize]));
            let batch = self.results(&dirty)?;
            out.emit(Message::Data(batch));
        }
        for &id in &gone {
            self.free_group(id, false);
        }
        self.expired += gone.len() as u64;
        // Unlist in bulk, once the dropped groups are a good part of the listed ones.
        let listed: usize = self.windows.values().map(Vec::len).sum();
        if self.groups.pending_free.len() > 64 + listed / 4 {
            self.unlist_expired();
        }
        Ok(())
    }

    /// Removes the groups the TTL dropped from their windows' lists and makes their ids
    /// reusable.
    fn unlist_expired(&mut self) {
        if self.groups.pending_free.is_empty() {
            return;
        }
        let groups = &self.groups;
        for ids in self.windows.values_mut() {
            ids.retain(|&g| groups.listed(g));
        }
        self.windows.retain(|_, ids| !ids.is_empty());
        let pending = std::mem::take(&mut self.groups.pending_free);
        self.groups.free.extend(pending);
    }

    /// Update mode: emits the groups that changed since they were last emitted, sorted by
    /// window and key, and keeps them.
    fn emit_updates(&mut self, out: &mut Output) -> Result<()> {
        let mut ids: Vec<u32> = std::mem::take(&mut self.groups.dirty_ids)
            .into_iter()
            .filter(|&g| self.groups.take_dirty(g))
            .collect();
        if ids.is_empty() {
            return Ok(());
        }
        ids.sort_by(|&a, &b| {
            let (a, b) = (a as usize, b as usize);
            (self.groups.window[a], &self.groups.keys[a])
                .cmp(&(self.groups.window[b], &self.groups.keys[b]))
        });
        let batch = self.results(&ids)?;
        out.emit(Message::Data(batch));
        Ok(())
    }

    /// The output rows of groups `ids`, in that order: group columns, then the results.
    fn results(&mut self, ids: &[u32]) -> Result<RecordBatch> {
        let schema: SchemaRef = self.spec.schema.clone();
        let mut columns: Vec<Option<ArrayRef>> = vec![None; schema.fields().len()];
        if let Some(w) = self.spec.window {
            let ends: Vec<i64> = ids
                .iter()
                .map(|&g| self.groups.window[g as usize])
                .collect();
            let starts: Vec<i64> = ends.iter().map(|&e| w.kind.start_of(e)).collect();
            columns[w.start] = Some(Arc::new(TimestampMillisecondArray::from(starts)));
            columns[w.end] = Some(Arc::new(TimestampMillisecondArray::from(ends)));
        }
        let parser = self.converter.parser();
        let key_columns = if self.key_positions.is_empty() {
            vec![]
        } else {
            self.converter.convert_rows(
                ids.iter()
                    .map(|&g| parser.parse(&self.groups.keys[g as usize])),
            )?
        };
        for (&pos, col) in self.key_positions.iter().zip(key_columns) {
            columns[pos] = Some(col);
        }
        let n_groups = self.spec.group_exprs.len();
        for (i, acc) in self.accumulators.iter_mut().enumerate() {
            columns[n_groups + i] = Some(acc.finish(ids)?);
        }
        let columns = columns
            .into_iter()
            .zip(schema.fields())
            .map(|(c, f)| {
                let c = c.ok_or_else(|| Error::Internal("aggregate column not built".into()))?;
                if c.data_type() == f.data_type() {
                    Ok(c)
                } else {
                    Ok(cast(&c, f.data_type())?)
                }
            })
            .collect::<Result<Vec<_>>>()?;
        let schema = crate::rows::relax_nullability(&schema, &columns);
        Ok(RecordBatch::try_new(schema, columns)?)
    }
}

impl Operator for WindowAggregate {
    fn process(&mut self, message: Message, out: &mut Output) -> Result<()> {
        match message {
            Message::Data(batch) => self.on_batch(batch, out)?,
            Message::Watermark(w) => {
                if w > self.watermark {
                    let first = self.watermark == Watermark::MIN;
                    self.watermark = w;
                    self.fire(out)?;
                    self.expire(first, out)?;
                }
                out.emit(Message::Watermark(w));
            }
            Message::Retract(_) => return Err(Error::cannot_retract(self.name())),
            Message::EndOfInput => out.emit(Message::EndOfInput),
            Message::EmitUpdates => {
                if self.spec.output == OutputMode::Update {
                    self.emit_updates(out)?;
                }
                out.emit(Message::EmitUpdates);
            }
        }
        Ok(())
    }

    fn name(&self) -> &'static str {
        match self.spec.window {
            Some(_) => "window-aggregate",
            None => "aggregate",
        }
    }

    fn state_bytes(&self) -> usize {
        let groups =
            self.groups.hashes.len() - self.groups.free.len() - self.groups.pending_free.len();
        let accs: usize = self.accumulators.iter().map(|a| a.state_bytes()).sum();
        let ttl = if self.spec.state_ttl.is_some() {
            self.groups.touched.len() * 8 + self.expiry.len() * 16
        } else {
            0
        };
        // Per group: hash, window, the inline key, the table slot; `key_bytes` adds every
        // key's length (an upper bound of the heap bytes of keys too long to stay inline).
        self.groups.key_bytes + groups * (8 + 8 + std::mem::size_of::<GroupKey>() + 4) + accs + ttl
    }

    /// Writes the watermark and the live groups (see the module documentation for the layout).
    /// O(state): one pass over the open windows, then one per aggregate.
    fn snapshot(&self, out: &mut Vec<u8>) -> Result<()> {
        crate::codec::snapshot_into(out, |out| self.write_state(out))
    }

    /// Replaces the state with one written by [`snapshot`](Self::snapshot). The whole blob is
    /// checked and decoded before anything is replaced: on error the operator is unchanged.
    fn restore(&mut self, state: &[u8]) -> Result<()> {
        let mut d = Decoder::new(state, CHECKPOINT).frame(MAGIC, VERSION)?;
        d.expect_layout(&self.layout)?;
        let watermark = Watermark(d.i64()?);
        let mut table = HashTable::new();
        let mut groups = Groups::default();
        let mut windows = std::collections::BTreeMap::new();
        let n_windows = d.len_prefix(16)?;
        let mut previous = None;
        for _ in 0..n_windows {
            let end = d.i64()?;
            if previous.is_some_and(|p| p >= end) {
                return Err(d.error("window ends are not increasing"));
            }
            previous = Some(end);
            let n = d.len_prefix(4)?;
            if groups.hashes.len() + n >= u32::MAX as usize {
                return Err(d.error("more groups than group ids"));
            }
            groups.hashes.reserve(n);
            groups.window.reserve(n);
            groups.keys.reserve(n);
            for _ in 0..n {
                let key = d.bytes()?;
                let hash = self.hasher.hash_one((end, key));
                let before = groups.hashes.len();
                find_or_insert(&mut table, &mut groups, &mut windows, hash, end, key);
                if groups.hashes.len() == before {
                    return Err(d.error(format!("a group of window {end} appears twice")));
                }
            }
        }
        let n_dirty = d.len_prefix(8)?;
        for _ in 0..n_dirty {
            let i = d.u64()?;
            if i >= groups.hashes.len() as u64 {
                return Err(d.error(format!("dirty group {i} of {}", groups.hashes.len())));
            }
            groups.mark_dirty(i as u32);
        }
        let mut expiry = std::collections::VecDeque::new();
        if self.spec.state_ttl.is_some() {
            // Ids were assigned densely in checkpoint order.
            let mut stamps = Vec::with_capacity(groups.hashes.len());
            for g in 0..groups.hashes.len() as u32 {
                stamps.push((d.i64()?, g));
            }
            groups.touched = stamps.iter().map(|s| s.0).collect();
            stamps.sort_unstable();
            expiry.extend(stamps);
        }
        let n_accumulators = d.u32()? as usize;
        if n_accumulators != self.accumulators.len() {
            return Err(d.error(format!(
                "{n_accumulators} aggregates, this operator has {}",
                self.accumulators.len()
            )));
        }
        let n = groups.hashes.len();
        let accumulators = self
            .accumulators
            .iter()
            .map(|acc| acc.read_state(&mut d, n))
            .collect::<Result<Vec<_>>>()?;
        d.finish()?;
        for (acc, state) in self.accumulators.iter_mut().zip(accumulators) {
            acc.install(state);
        }
        self.table = table;
        self.groups = groups;
        self.windows = windows;
        self.watermark = watermark;
        self.expiry = expiry;
        Ok(())
    }
}

impl WindowAggregate {
    fn write_state(&self, out: &mut Vec<u8>) -> Result<()> {
        // Live groups in checkpoint order: by window, then as listed in the window.
        let listed: Vec<(i64, Vec<u32>)> = self
            .windows
            .iter()
            .map(|(&end, ids)| {
                let live = ids.iter().copied().filter(|&g| self.groups.listed(g));
                (end, live.collect::<Vec<u32>>())
            })
            .filter(|(_, ids)| !ids.is_empty())
            .collect();
        let order: Vec<u32> = listed.iter().flat_map(|(_, ids)| ids).copied().collect();
        if let Some(acc) = self
            .accumulators
            .iter()
            .find(|a| a.counts.len() < self.groups.hashes.len())
        {
            return Err(Error::Internal(format!(
                "aggregate state has {} groups, the group table {}",
                acc.counts.len(),
                self.groups.hashes.len()
            )));
        }
        let mut e = Encoder::new(out);
        e.reserve(FRAME_HEADER + self.layout.len() + 64 + self.state_bytes());
        let frame = e.begin_frame(MAGIC, VERSION);
        e.bytes(self.layout.as_bytes())?;
        e.i64(self.watermark.0);
        e.len_prefix(listed.len());
        for (end, ids) in &listed {
            e.i64(*end);
            e.len_prefix(ids.len());
            for &id in ids {
                e.bytes(&self.groups.keys[id as usize])?;
            }
        }
        let dirty: Vec<u64> = (0u64..)
            .zip(&order)
            .filter(|&(_, &g)| self.groups.dirty.get(g as usize).copied().unwrap_or(false))
            .map(|(i, _)| i)
            .collect();
        e.len_prefix(dirty.len());
        for i in dirty {
            e.u64(i);
        }
        if self.spec.state_ttl.is_some() {
            for &g in &order {
                e.i64(
                    self.groups
                        .touched
                        .get(g as usize)
                        .copied()
                        .unwrap_or(i64::MIN),
                );
            }
        }
        e.u32(self.accumulators.len() as u32);
        for acc in &self.accumulators {
            acc.write_state(&order, &mut e)?;
        }
        e.end_frame(frame);
        Ok(())
    }
}

/// How an accumulator holds its values.
enum Values {
    I64(Vec<i64>),
    /// SUM and AVG of integers and decimals (exact).
    I128(Vec<i128>),
    /// MIN and MAX of decimals.
    MinMax128(Vec<i128>),
    F64(Vec<f64>),
    Rows(Vec<Option<OwnedRow>>, RowConverter),
    Distinct(Vec<HashSet<Box<[u8]>>>, RowConverter),
    /// APPROX_COUNT_DISTINCT: a sketch of the hashes of the values in row format.
    Sketch(Vec<HyperLogLog>, RowConverter),
    /// RESERVOIR_SAMPLE(x, k): a reservoir of values in row format.
    Sample(Vec<Reservoir>, RowConverter, usize),
    None,
}

impl Values {
    /// The checkpoint tag and name of this kind of state.
    fn kind(&self) -> (u8, &'static str) {
        match self {
            Values::None => (0, "count"),
            Values::I64(_) => (1, "i64"),
            Values::I128(_) => (2, "i128"),
            Values::MinMax128(_) => (3, "min/max i128"),
            Values::F64(_) => (4, "f64"),
            Values::Rows(..) => (5, "rows"),
            Values::Distinct(..) => (6, "distinct"),
            Values::Sketch(..) => (7, "hyperloglog"),
            Values::Sample(..) => (8, "reservoir"),
        }
    }
}

/// One accumulator's state read from a checkpoint, not yet installed.
struct RestoredAccumulator {
    counts: Vec<i64>,
    values: RestoredValues,
    heap_bytes: usize,
}

enum RestoredValues {
    None,
    I64(Vec<i64>),
    /// For both `Values::I128` and `Values::MinMax128`.
    I128(Vec<i128>),
    F64(Vec<f64>),
    Rows(Vec<Option<OwnedRow>>),
    Distinct(Vec<HashSet<Box<[u8]>>>),
    Sketch(Vec<HyperLogLog>),
    Sample(Vec<Reservoir>),
}

/// One aggregate's state for every group: `values` plus a count of accepted inputs (also the
/// "has a value" flag for SUM/MIN/MAX, which are NULL over no input).
struct Accumulator {
    function: AggregateFunction,
    /// The type input values are cast to before folding.
    input: DataType,
    output: DataType,
    values: Values,
    counts: Vec<i64>,
    /// Bytes held outside the per-group vectors (MIN/MAX rows, DISTINCT sets), kept up to date.
    heap_bytes: usize,
}

impl Accumulator {
    fn new(
        function: AggregateFunction,
        distinct: bool,
        input: &DataType,
        output: DataType,
    ) -> Result<Self> {
        use AggregateFunction::*;
        let numeric = numeric_type;
        let unsupported = || Error::Plan(format!("{function:?} over {input} is not supported"));
        let (canonical, values) = match (function, distinct) {
            (Count, false) => (input.clone(), Values::None),
            (Count, true) => (
                input.clone(),
                Values::Distinct(
                    vec![],
                    RowConverter::new(vec![SortField::new(input.clone())])?,
                ),
            ),
            (ReservoirSample(k), _) => (
                input.clone(),
                Values::Sample(
                    vec![],
                    RowConverter::new(vec![SortField::new(input.clone())])?,
                    k,
                ),
            ),
            (ApproxCountDistinct, _) => (
                input.clone(),
                Values::Sketch(
                    vec![],
                    RowConverter::new(vec![SortField::new(input.clone())])?,
                ),
            ),
            (Sum | Avg, _) => {
                let c = numeric(input).ok_or_else(unsupported)?;
                let v = match c {
                    DataType::Int64 | DataType::Decimal128(..) => Values::I128(vec![]),
                    _ => Values::F64(vec![]),
                };
                (c, v)
            }
            (Min | Max, _) => match numeric(input) {
                Some(DataType::Int64) if input != &DataType::UInt64 => {
                    (DataType::Int64, Values::I64(vec![]))
                }
                Some(d @ DataType::Decimal128(..)) => (d, Values::MinMax128(vec![])),
                Some(DataType::Float64) => (DataType::Float64, Values::F64(vec![])),
                _ => (
                    input.clone(),
                    Values::Rows(
                        vec![],
                        RowConverter::new(vec![SortField::new(input.clone())])?,
                    ),
                ),
            },
        };
        Ok(Accumulator {
            function,
            input: canonical,
            output,
            values,
            counts: vec![],
            heap_bytes: 0,
        })
    }

    /// Writes the state of groups `order` (each id below `counts.len()`), in that order.
    fn write_state(&self, order: &[u32], e: &mut Encoder<'_>) -> Result<()> {
        e.u8(self.values.kind().0);
        e.i64s(order.iter().map(|&g| self.counts[g as usize]));
        match &self.values {
            Values::None => {}
            Values::I64(v) => e.i64s(order.iter().map(|&g| v[g as usize])),
            Values::I128(v) | Values::MinMax128(v) => e.i128s(order.iter().map(|&g| v[g as usize])),
            Values::F64(v) => e.f64s(order.iter().map(|&g| v[g as usize])),
            Values::Rows(v, _) => {
                for &g in order {
                    match &v[g as usize] {
                        None => e.u8(0),
                        Some(row) => {
                            e.u8(1);
                            e.bytes(row.row().as_ref())?;
                        }
                    }
                }
            }
            Values::Sketch(v, _) => {
                let mut buf = vec![];
                for &g in order {
                    buf.clear();
                    v[g as usize].write(&mut buf);
                    e.bytes(&buf)?;
                }
            }
            Values::Sample(v, ..) => {
                let mut buf = vec![];
                for &g in order {
                    buf.clear();
                    v[g as usize].write(&mut buf);
                    e.bytes(&buf)?;
                }
            }
            Values::Distinct(v, _) => {
                for &g in order {
                    let set = &v[g as usize];
                    e.len_prefix(set.len());
                    for value in set {
                        e.bytes(value)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Reads what [`write_state`](Self::write_state) wrote for `n` groups, re-parsing rows with
    /// this accumulator's converter.
    fn read_state(&self, d: &mut Decoder<'_>, n: usize) -> Result<RestoredAccumulator> {
        let (tag, kind) = self.values.kind();
        let found = d.u8()?;
        if found != tag {
            return Err(d.error(format!(
                "aggregate state of kind {found}, expected {tag} ({kind})"
            )));
        }
        let counts = d.i64s(n)?;
        let mut heap_bytes = 0;
        let values = match &self.values {
            Values::None => RestoredValues::None,
            Values::I64(_) => RestoredValues::I64(d.i64s(n)?),
            Values::I128(_) | Values::MinMax128(_) => RestoredValues::I128(d.i128s(n)?),
            Values::F64(_) => RestoredValues::F64(d.f64s(n)?),
            Values::Rows(_, converter) => {
                let parser = converter.parser();
                let mut rows = Vec::with_capacity(n.min(d.remaining()));
                for _ in 0..n {
                    rows.push(match d.u8()? {
                        0 => None,
                        1 => {
                            let bytes = d.bytes()?;
                            heap_bytes += bytes.len() + 24;
                            Some(parser.parse(bytes).owned())
                        }
                        other => return Err(d.error(format!("row flag {other}"))),
                    });
                }
                RestoredValues::Rows(rows)
            }
            Values::Sketch(..) => {
                let mut sketches = Vec::with_capacity(n.min(d.remaining() / 8));
                for _ in 0..n {
                    let bytes = d.bytes()?;
                    let (sketch, used) = HyperLogLog::read(bytes).map_err(|e| d.error(e))?;
                    if used != bytes.len() {
                        return Err(d.error("trailing bytes after a sketch"));
                    }
                    heap_bytes += sketch.heap_bytes();
                    sketches.push(sketch);
                }
                RestoredValues::Sketch(sketches)
            }
            Values::Sample(.., k) => {
                let mut samples = Vec::with_capacity(n.min(d.remaining() / 8));
                for _ in 0..n {
                    let bytes = d.bytes()?;
                    let (sample, used) = Reservoir::read(bytes).map_err(|e| d.error(e))?;
                    if used != bytes.len() || sample.k() != *k {
                        return Err(d.error("a reservoir of another size, or trailing bytes"));
                    }
                    heap_bytes += sample.heap_bytes();
                    samples.push(sample);
                }
                RestoredValues::Sample(samples)
            }
            Values::Distinct(..) => {
                let mut sets = Vec::with_capacity(n.min(d.remaining() / 8));
                for _ in 0..n {
                    let m = d.len_prefix(4)?;
                    let mut set = HashSet::with_capacity(m);
                    for _ in 0..m {
                        let value = d.bytes()?;
                        heap_bytes += value.len() + 24;
                        if !set.insert(Box::from(value)) {
                            return Err(d.error("a DISTINCT value appears twice"));
                        }
                    }
                    sets.push(set);
                }
                RestoredValues::Distinct(sets)
            }
        };
        Ok(RestoredAccumulator {
            counts,
            values,
            heap_bytes,
        })
    }

    /// Replaces the state with one from [`read_state`](Self::read_state) of this accumulator.
    fn install(&mut self, state: RestoredAccumulator) {
        self.counts = state.counts;
        self.heap_bytes = state.heap_bytes;
        match (&mut self.values, state.values) {
            (Values::None, RestoredValues::None) => {}
            (Values::I64(v), RestoredValues::I64(r)) => *v = r,
            (Values::I128(v) | Values::MinMax128(v), RestoredValues::I128(r)) => *v = r,
            (Values::F64(v), RestoredValues::F64(r)) => *v = r,
            (Values::Rows(v, _), RestoredValues::Rows(r)) => *v = r,
            (Values::Distinct(v, _), RestoredValues::Distinct(r)) => *v = r,
            (Values::Sketch(v, _), RestoredValues::Sketch(r)) => *v = r,
            (Values::Sample(v, ..), RestoredValues::Sample(r)) => *v = r,
            // `read_state` builds the kind of `self.values`; nothing else can arrive.
            _ => {}
        }
    }

    fn resize(&mut self, n: usize) {
        if self.counts.len() >= n {
            return;
        }
        self.counts.resize(n, 0);
        let init_f = match self.function {
            AggregateFunction::Min => f64::INFINITY,
            AggregateFunction::Max => f64::NEG_INFINITY,
            _ => 0.0,
        };
        let init_i = match self.function {
            AggregateFunction::Min => i64::MAX,
            AggregateFunction::Max => i64::MIN,
            _ => 0,
        };
        match &mut self.values {
            Values::I64(v) => v.resize(n, init_i),
            Values::I128(v) => v.resize(n, 0),
            Values::MinMax128(v) => v.resize(n, init_i128(self.function)),
            Values::F64(v) => v.resize(n, init_f),
            Values::Rows(v, _) => v.resize(n, None),
            Values::Distinct(v, _) => v.resize_with(n, HashSet::new),
            Values::Sketch(v, _) => v.resize_with(n, HyperLogLog::new),
            Values::Sample(v, _, k) => v.resize_with(n, || Reservoir::new(*k, SAMPLE_SEED)),
            Values::None => {}
        }
    }

    fn reset(&mut self, g: usize) {
        self.counts[g] = 0;
        match &mut self.values {
            Values::I64(v) => {
                v[g] = match self.function {
                    AggregateFunction::Min => i64::MAX,
                    AggregateFunction::Max => i64::MIN,
                    _ => 0,
                }
            }
            Values::I128(v) => v[g] = 0,
            Values::MinMax128(v) => v[g] = init_i128(self.function),
            Values::F64(v) => {
                v[g] = match self.function {
                    AggregateFunction::Min => f64::INFINITY,
                    AggregateFunction::Max => f64::NEG_INFINITY,
                    _ => 0.0,
                }
            }
            Values::Rows(v, _) => {
                if let Some(r) = v[g].take() {
                    self.heap_bytes -= r.row().as_ref().len() + 24;
                }
            }
            Values::Distinct(v, _) => {
                let set = std::mem::take(&mut v[g]);
                self.heap_bytes -= set.iter().map(|k| k.len() + 24).sum::<usize>();
            }
            Values::Sketch(v, _) => {
                self.heap_bytes -= std::mem::take(&mut v[g]).heap_bytes();
            }
            Values::Sample(v, _, k) => {
                let old = std::mem::replace(&mut v[g], Reservoir::new(*k, SAMPLE_SEED));
                self.heap_bytes -= old.heap_bytes();
            }
            Values::None => {}
        }
    }

    fn update(
        &mut self,
        ids: &[u32],
        values: &ArrayRef,
        mask: Option<&BooleanArray>,
    ) -> Result<()> {
        let values = if values.data_type() == &self.input {
            values.clone()
        } else {
            cast(values, &self.input)?
        };
        let accepted = accepted_rows(&values, mask);
        let accept = |i: usize| accepted.as_ref().is_none_or(|a| a.value(i));
        let accepted = accepted.as_ref();
        let is_min = self.function == AggregateFunction::Min;
        let counts = &mut self.counts;
        match &mut self.values {
            Values::None => {
                for (i, &g) in ids.iter().enumerate() {
                    if accept(i) {
                        counts[g as usize] += 1;
                    }
                }
            }
            Values::I128(acc) => match values.data_type() {
                DataType::Int64 => {
                    let v = values.as_primitive::<Int64Type>().values();
                    fold(acc, counts, ids, v, accepted, |a, v| *a += v as i128)
                }
                _ => {
                    let v = values.as_primitive::<Decimal128Type>().values();
                    fold(acc, counts, ids, v, accepted, |a, v| *a += v)
                }
            },
            Values::MinMax128(acc) => {
                let v = values.as_primitive::<Decimal128Type>().values();
                if is_min {
                    fold(acc, counts, ids, v, accepted, |a, v| *a = (*a).min(v))
                } else {
                    fold(acc, counts, ids, v, accepted, |a, v| *a = (*a).max(v))
                }
            }
            Values::F64(acc) => {
                let v = values.as_primitive::<Float64Type>().values();
                match self.function {
                    AggregateFunction::Min => {
                        fold(acc, counts, ids, v, accepted, |a, v| *a = a.min(v))
                    }
                    AggregateFunction::Max => {
                        fold(acc, counts, ids, v, accepted, |a, v| *a = a.max(v))
                    }
                    _ => fold(acc, counts, ids, v, accepted, |a, v| *a += v),
                }
            }
            Values::I64(acc) => {
                let v = values.as_primitive::<Int64Type>().values();
                if is_min {
                    fold(acc, counts, ids, v, accepted, |a, v| *a = (*a).min(v))
                } else {
                    fold(acc, counts, ids, v, accepted, |a, v| *a = (*a).max(v))
                }
            }
            Values::Rows(acc, converter) => {
                let rows = converter.convert_columns(std::slice::from_ref(&values))?;
                for (i, &g) in ids.iter().enumerate() {
                    if !accept(i) {
                        continue;
                    }
                    let row = rows.row(i);
                    let slot = &mut acc[g as usize];
                    let better = match slot {
                        None => true,
                        Some(cur) => {
                            if is_min {
                                row < cur.row()
                            } else {
                                row > cur.row()
                            }
                        }
                    };
                    if better {
                        let new = row.owned();
                        self.heap_bytes += new.row().as_ref().len() + 24;
                        if let Some(old) = slot.replace(new) {
                            self.heap_bytes -= old.row().as_ref().len() + 24;
                        }
                    }
                    counts[g as usize] += 1;
                }
            }
            Values::Sample(samples, converter, _) => {
                let rows = converter.convert_columns(std::slice::from_ref(&values))?;
                for (i, &g) in ids.iter().enumerate() {
                    if accept(i) {
                        let sample = &mut samples[g as usize];
                        let before = sample.heap_bytes();
                        sample.offer(rows.row(i).as_ref());
                        self.heap_bytes = self.heap_bytes + sample.heap_bytes() - before;
                    }
                }
            }
            Values::Sketch(sketches, converter) => {
                let rows = converter.convert_columns(std::slice::from_ref(&values))?;
                for (i, &g) in ids.iter().enumerate() {
                    if accept(i) {
                        let sketch = &mut sketches[g as usize];
                        let before = sketch.heap_bytes();
                        sketch.add_hash(hash_bytes(rows.row(i).as_ref()));
                        self.heap_bytes = self.heap_bytes + sketch.heap_bytes() - before;
                    }
                }
            }
            Values::Distinct(sets, converter) => {
                let rows = converter.convert_columns(std::slice::from_ref(&values))?;
                for (i, &g) in ids.iter().enumerate() {
                    if accept(i) {
                        let set = &mut sets[g as usize];
                        let row = rows.row(i);
                        if !set.contains(row.as_ref()) {
                            self.heap_bytes += row.as_ref().len() + 24;
                            set.insert(row.as_ref().into());
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Adds `other`'s state for its group `o` into group `mapping[o]` (skipped: `u32::MAX`).
    fn merge(&mut self, other: Accumulator, mapping: &[u32]) -> Result<()> {
        let is_min = self.function == AggregateFunction::Min;
        let is_sum = matches!(
            self.function,
            AggregateFunction::Sum | AggregateFunction::Avg
        );
        for (o, &g) in mapping.iter().enumerate() {
            if g == u32::MAX
                || other.counts.get(o).is_none_or(|&c| c == 0)
                    && !matches!(
                        other.values,
                        Values::Distinct(..) | Values::Sketch(..) | Values::Sample(..)
                    )
            {
                continue;
            }
            let g = g as usize;
            self.counts[g] += other.counts[o];
            match (&mut self.values, &other.values) {
                (Values::None, Values::None) => {}
                (Values::I128(a), Values::I128(b)) => a[g] += b[o],
                (Values::MinMax128(a), Values::MinMax128(b)) => {
                    a[g] = if is_min {
                        a[g].min(b[o])
                    } else {
                        a[g].max(b[o])
                    }
                }
                (Values::I64(a), Values::I64(b)) => {
                    a[g] = if is_min {
                        a[g].min(b[o])
                    } else {
                        a[g].max(b[o])
                    }
                }
                (Values::F64(a), Values::F64(b)) => {
                    a[g] = if is_sum {
                        a[g] + b[o]
                    } else if is_min {
                        a[g].min(b[o])
                    } else {
                        a[g].max(b[o])
                    }
                }
                (Values::Rows(a, converter), Values::Rows(b, _)) => {
                    if let Some(theirs) = &b[o] {
                        // Rows belong to their converter: re-parse the bytes with ours.
                        let parser = converter.parser();
                        let bytes = theirs.row();
                        let theirs = parser.parse(bytes.data());
                        let better = match &a[g] {
                            None => true,
                            Some(mine) if is_min => theirs < mine.row(),
                            Some(mine) => theirs > mine.row(),
                        };
                        if better {
                            let new = theirs.owned();
                            self.heap_bytes += new.row().as_ref().len() + 24;
                            if let Some(old) = a[g].replace(new) {
                                self.heap_bytes -= old.row().as_ref().len() + 24;
                            }
                        }
                    }
                }
                (Values::Sample(a, ..), Values::Sample(b, ..)) => {
                    let before = a[g].heap_bytes();
                    a[g].merge(b[o].clone());
                    self.heap_bytes = self.heap_bytes + a[g].heap_bytes() - before;
                }
                (Values::Sketch(a, _), Values::Sketch(b, _)) => {
                    let before = a[g].heap_bytes();
                    a[g].merge(&b[o]);
                    self.heap_bytes = self.heap_bytes + a[g].heap_bytes() - before;
                }
                (Values::Distinct(a, _), Values::Distinct(b, _)) => {
                    for k in &b[o] {
                        if !a[g].contains(k) {
                            self.heap_bytes += k.len() + 24;
                            a[g].insert(k.clone());
                        }
                    }
                }
                _ => return Err(Error::Internal("merging different aggregates".into())),
            }
        }
        Ok(())
    }

    /// The results for groups `ids`, in that order, in the output type.
    fn finish(&mut self, ids: &[u32]) -> Result<ArrayRef> {
        use AggregateFunction::*;
        let has = |g: u32| self.counts[g as usize] > 0;
        let array: ArrayRef = match (&self.values, self.function) {
            (Values::None, _) => Arc::new(Int64Array::from_iter_values(
                ids.iter().map(|&g| self.counts[g as usize]),
            )),
            (Values::Distinct(sets, _), _) => Arc::new(Int64Array::from_iter_values(
                ids.iter().map(|&g| sets[g as usize].len() as i64),
            )),
            (Values::Sketch(sketches, _), _) => Arc::new(Int64Array::from_iter_values(
                ids.iter().map(|&g| sketches[g as usize].estimate() as i64),
            )),
            (Values::Sample(samples, converter, _), _) => {
                let parser = converter.parser();
                let mut lengths = Vec::with_capacity(ids.len());
                let rows: Vec<_> = ids
                    .iter()
                    .flat_map(|&g| {
                        let values = samples[g as usize].values();
                        lengths.push(values.len());
                        values.iter().map(|v| parser.parse(v))
                    })
                    .collect();
                let values = match converter.convert_rows(rows)?.pop() {
                    Some(v) => v,
                    None => new_null_array(&self.input, 0),
                };
                Arc::new(arrow::array::ListArray::try_new(
                    Arc::new(arrow::datatypes::Field::new(
                        "item",
                        self.input.clone(),
                        true,
                    )),
                    arrow::buffer::OffsetBuffer::from_lengths(lengths),
                    values,
                    None,
                )?)
            }
            (Values::I128(acc), Sum) => match &self.input {
                DataType::Decimal128(_, s) => Arc::new(
                    Decimal128Array::from_iter(
                        ids.iter().map(|&g| has(g).then(|| acc[g as usize])),
                    )
                    .with_precision_and_scale(38, *s)?,
                ),
                _ => Arc::new(
                    ids.iter()
                        .map(|&g| has(g).then(|| sum_to_i64(acc[g as usize])).transpose())
                        .collect::<Result<Int64Array>>()?,
                ),
            },
            (Values::I128(acc), _avg) => match (&self.input, &self.output) {
                (DataType::Decimal128(_, s), DataType::Decimal128(p, out_s)) => {
                    let mul = 10i128.pow((*out_s as i32 - *s as i32).max(0) as u32);
                    Arc::new(
                        Decimal128Array::from_iter(ids.iter().map(|&g| {
                            has(g).then(|| acc[g as usize] * mul / self.counts[g as usize] as i128)
                        }))
                        .with_precision_and_scale(*p, *out_s)?,
                    )
                }
                _ => Arc::new(Float64Array::from_iter(ids.iter().map(|&g| {
                    has(g).then(|| acc[g as usize] as f64 / self.counts[g as usize] as f64)
                }))),
            },
            (Values::F64(acc), Avg) => {
                Arc::new(Float64Array::from_iter(ids.iter().map(|&g| {
                    has(g).then(|| acc[g as usize] / self.counts[g as usize] as f64)
                })))
            }
            (Values::F64(acc), _) => Arc::new(Float64Array::from_iter(
                ids.iter().map(|&g| has(g).then(|| acc[g as usize])),
            )),
            (Values::MinMax128(acc), _) => {
                let DataType::Decimal128(p, sc) = self.input else {
                    return Err(Error::Internal("decimal min/max over a non-decimal".into()));
                };
                Arc::new(
                    Decimal128Array::from_iter(
                        ids.iter().map(|&g| has(g).then(|| acc[g as usize])),
                    )
                    .with_precision_and_scale(p, sc)?,
                )
            }
            (Values::I64(acc), _) => Arc::new(Int64Array::from_iter(
                ids.iter().map(|&g| has(g).then(|| acc[g as usize])),
            )),
            (Values::Rows(acc, converter), _) => {
                if ids.iter().all(|&g| acc[g as usize].is_some()) {
                    let mut cols = converter.convert_rows(
                        ids.iter()
                            .filter_map(|&g| acc[g as usize].as_ref().map(|r| r.row())),
                    )?;
                    cols.pop()
                        .ok_or_else(|| Error::Internal("min/max decode".into()))?
                } else {
                    // Some groups saw only NULLs: decode the others and place them.
                    let present: Vec<usize> = (0..ids.len())
                        .filter(|&i| acc[ids[i] as usize].is_some())
                        .collect();
                    let mut cols = converter.convert_rows(
                        present
                            .iter()
                            .filter_map(|&i| acc[ids[i] as usize].as_ref().map(|r| r.row())),
                    )?;
                    let decoded = cols
                        .pop()
                        .ok_or_else(|| Error::Internal("min/max decode".into()))?;
                    let mut take_idx: Vec<Option<u32>> = vec![None; ids.len()];
                    for (k, &i) in present.iter().enumerate() {
                        take_idx[i] = Some(k as u32);
                    }
                    if decoded.is_empty() {
                        new_null_array(&self.input, ids.len())
                    } else {
                        arrow::compute::take(
                            &decoded,
                            &arrow::array::UInt32Array::from(take_idx),
                            None,
                        )?
                    }
                }
            }
        };
        if array.data_type() == &self.output {
            Ok(array)
        } else {
            Ok(cast(&array, &self.output)?)
        }
    }

    fn state_bytes(&self) -> usize {
        let n = self.counts.len();
        let per_group = match &self.values {
            Values::I64(_) | Values::F64(_) => 8,
            Values::I128(_) | Values::MinMax128(_) => 16,
            Values::Rows(..)
            | Values::Distinct(..)
            | Values::Sketch(..)
            | Values::Sample(..)
            | Values::None => 0,
        };
        n * (8 + per_group) + self.heap_bytes
    }
}

/// Each aggregate call of `spec` with its input type and its output column's type.
pub(crate) fn call_types(
    spec: &AggregateSpec,
) -> Result<Vec<(&AggregateCall, DataType, DataType)>> {
    let n_groups = spec.group_exprs.len();
    spec.calls
        .iter()
        .enumerate()
        .map(|(i, call)| {
            let input = call.arg.data_type(&spec.input_schema)?;
            let output = spec.schema.field(n_groups + i).data_type().clone();
            Ok((call, input, output))
        })
        .collect()
}

/// A SUM of integers as BIGINT, or an error that says what to do (it is exact in i128 until
/// here: wrapping would silently give a wrong total).
pub(crate) fn sum_to_i64(sum: i128) -> Result<i64> {
    i64::try_from(sum).map_err(|_| {
        Error::Execution(format!(
            "SUM overflows BIGINT (the exact total is {sum}): CAST its argument to DECIMAL(38, 0) or DOUBLE"
        ))
    })
}

/// The type SUM, AVG, MIN and MAX fold a numeric input as: integers (and booleans) as Int64,
/// floats as Float64, decimals as they are; `None` for other types.
pub(crate) fn numeric_type(dt: &DataType) -> Option<DataType> {
    match dt {
        DataType::Int8
        | DataType::Int16
        | DataType::Int32
        | DataType::Int64
        | DataType::UInt8
        | DataType::UInt16
        | DataType::UInt32
        | DataType::UInt64
        | DataType::Null
        | DataType::Boolean => Some(DataType::Int64),
        DataType::Float16 | DataType::Float32 | DataType::Float64 => Some(DataType::Float64),
        DataType::Decimal128(p, s) => Some(DataType::Decimal128(*p, *s)),
        _ => None,
    }
}

/// The rows an aggregate takes: non-NULL input, and its FILTER (WHERE ...) true; `None`: all.
pub(crate) fn accepted_rows(
    values: &ArrayRef,
    mask: Option<&BooleanArray>,
) -> Option<BooleanBuffer> {
    let mut accepted: Option<BooleanBuffer> = values.logical_nulls().map(|n| n.into_inner());
    if let Some(m) = mask {
        let mut keep = m.values().clone();
        if let Some(n) = m.nulls() {
            keep = &keep & n.inner();
        }
        accepted = Some(match accepted {
            Some(a) => &a & &keep,
            None => keep,
        });
    }
    accepted
}

/// The group id of (`window`, `key`), creating the group if it is new.
fn find_or_insert(
    table: &mut HashTable<u32>,
    groups: &mut Groups,
    windows: &mut std::collections::BTreeMap<i64, Vec<u32>>,
    hash: u64,
    window: i64,
    key: &[u8],
) -> u32 {
    match table.entry(
        hash,
        |&g| groups.window[g as usize] == window && &*groups.keys[g as usize] == key,
        |&g| groups.hashes[g as usize],
    ) {
        Entry::Occupied(e) => *e.get(),
        Entry::Vacant(e) => {
            groups.key_bytes += key.len();
            let id = match groups.free.pop() {
                Some(id) => {
                    groups.hashes[id as usize] = hash;
                    groups.window[id as usize] = window;
                    groups.keys[id as usize] = GroupKey::from_slice(key);
                    id
                }
                None => {
                    groups.hashes.push(hash);
                    groups.window.push(window);
                    groups.keys.push(GroupKey::from_slice(key));
                    (groups.hashes.len() - 1) as u32
                }
            };
            e.insert(id);
            windows.entry(window).or_default().push(id);
            id
        }
    }
}

fn init_i128(function: AggregateFunction) -> i128 {
    match function {
        AggregateFunction::Min => i128::MAX,
        AggregateFunction::Max => i128::MIN,
        _ => 0,
    }
}

/// Folds `values` into the accumulator slots `acc[ids[i]]` for the accepted rows, counting
/// them per group. The hot loop of every numeric aggregate.
fn fold<T, V: Copy>(
    acc: &mut [T],
    counts: &mut [i64],
    ids: &[u32],
    values: &[V],
    accepted: Option<&BooleanBuffer>,
    f: impl Fn(&mut T, V),
) {
    match accepted {
        None => {
            for (&g, &v) in ids.iter().zip(values) {
                f(&mut acc[g as usize], v);
                counts[g as usize] += 1;
            }
        }
        Some(keep) => {
            for ((&g, &v), k) in ids.iter().zip(values).zip(keep.iter()) {
                if k {
                    f(&mut acc[g as usize], v);
                    counts[g as usize] += 1;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{StringArray, TimestampMillisecondArray};
    use arrow::datatypes::{Field, Schema, TimeUnit};
    use datafusion::physical_expr::expressions::{col, lit};
    use flowline_core::plan::{AggregateCall, WindowColumns, WindowKind};
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    fn spec() -> AggregateSpec {
        let ts = DataType::Timestamp(TimeUnit::Millisecond, None);
        let input = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Utf8, true),
            Field::new("v", DataType::Int64, true),
            Field::new("window_start", ts.clone(), false),
            Field::new("window_end", ts.clone(), false),
        ]));
        let call = |function, arg, distinct| AggregateCall {
            function,
            arg,
            distinct,
            filter: None,
        };
        let k = col("k", &input).unwrap();
        let v = col("v", &input).unwrap();
        AggregateSpec {
            group_exprs: vec![
                col("window_start", &input).unwrap(),
                col("window_end", &input).unwrap(),
                k.clone(),
            ],
            window: Some(WindowColumns {
                kind: WindowKind::Tumble { size: 10 },
                start: 0,
                end: 1,
            }),
            output: OutputMode::Append,
            allowed_lateness: 0,
            state_ttl: None,
            session_keys: vec![],
            calls: vec![
                call(AggregateFunction::Count, lit(1i64), false),
                call(AggregateFunction::Sum, v.clone(), false),
                call(AggregateFunction::Min, v.clone(), false),
                call(AggregateFunction::Max, k.clone(), false),
                call(AggregateFunction::Avg, v.clone(), false),
                call(AggregateFunction::Count, v, true),
            ],
            input_schema: input,
            schema: Arc::new(Schema::new(vec![
                Field::new("window_start", ts.clone(), false),
                Field::new("window_end", ts, false),
                Field::new("k", DataType::Utf8, true),
                Field::new("n", DataType::Int64, false),
                Field::new("s", DataType::Int64, true),
                Field::new("mn", DataType::Int64, true),
                Field::new("mx", DataType::Utf8, true),
                Field::new("avg", DataType::Float64, true),
                Field::new("d", DataType::Int64, false),
            ])),
        }
    }

    fn batch(rows: &[(Option<&str>, Option<i64>, i64)]) -> RecordBatch {
        let spec = spec();
        let starts: Vec<i64> = rows.iter().map(|r| r.2 - r.2.rem_euclid(10)).collect();
        RecordBatch::try_new(
            spec.input_schema.clone(),
            vec![
                Arc::new(StringArray::from(
                    rows.iter().map(|r| r.0).collect::<Vec<_>>(),
                )),
                Arc::new(Int64Array::from(
                    rows.iter().map(|r| r.1).collect::<Vec<_>>(),
                )),
                Arc::new(TimestampMillisecondArray::from(starts.clone())),
                Arc::new(TimestampMillisecondArray::from(
                    starts.iter().map(|s| s + 10).collect::<Vec<_>>(),
                )),
            ],
        )
        .unwrap()
    }

    fn finish(mut op: WindowAggregate) -> Vec<RecordBatch> {
        let mut out = Output::default();
        op.process(Message::Watermark(Watermark::MAX), &mut out)
            .unwrap();
        out.messages
            .into_iter()
            .filter_map(|m| match m {
                Message::Data(b) => Some(b),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn merged_partial_aggregates_equal_one_aggregate_over_all_rows() {
        let rows: Vec<(Option<&str>, Option<i64>, i64)> = (0..200)
            .map(|i: i64| {
                let k = [Some("a"), Some("b"), None, Some("c")][(i % 4) as usize];
                let v = (i % 7 != 0).then_some((i * 37) % 23 - 11);
                (k, v, (i * 13) % 50)
            })
            .collect();
        let mut whole = WindowAggregate::new(spec(), "t").unwrap();
        let mut out = Output::default();
        whole
            .process(Message::Data(batch(&rows)), &mut out)
            .unwrap();
        let expected = finish(whole);

        // Three partial aggregates over interleaved shares, merged.
        let mut parts: Vec<WindowAggregate> = (0..3)
            .map(|_| WindowAggregate::new(spec(), "t").unwrap())
            .collect();
        for (i, chunk) in rows.chunks(17).enumerate() {
            parts[i % 3]
                .process(Message::Data(batch(chunk)), &mut out)
                .unwrap();
        }
        let mut merged = parts.remove(0);
        for p in parts {
            merged.merge(p).unwrap();
        }
        assert_eq!(finish(merged), expected);
        assert!(out.rejects.is_empty() && out.messages.is_empty());
    }

    /// APPROX_COUNT_DISTINCT over 100,000 distinct values in one global group: within 3% of the
    /// truth (about 4 standard errors), the same after merging partial sketches and after a
    /// checkpoint round trip; exact for the few distinct values of another column.
    #[test]
    fn approx_count_distinct_is_close_and_survives_merge_and_restore() {
        let input = Arc::new(Schema::new(vec![
            Field::new("v", DataType::Int64, true),
            Field::new("k", DataType::Utf8, true),
        ]));
        let call = |arg| AggregateCall {
            function: AggregateFunction::ApproxCountDistinct,
            arg,
            distinct: false,
            filter: None,
        };
        let spec = AggregateSpec {
            group_exprs: vec![],
            window: None,
            output: OutputMode::Append,
            allowed_lateness: 0,
            state_ttl: None,
            session_keys: vec![],
            calls: vec![
                call(col("v", &input).unwrap()),
                call(col("k", &input).unwrap()),
            ],
            input_schema: input.clone(),
            schema: Arc::new(Schema::new(vec![
                Field::new("approx_v", DataType::Int64, false),
                Field::new("approx_k", DataType::Int64, false),
            ])),
        };
        let batch = |range: std::ops::Range<i64>| {
            RecordBatch::try_new(
                input.clone(),
                vec![
                    Arc::new(Int64Array::from_iter(range.clone().map(|i| {
                        // Every value twice, and some NULLs (not counted).
                        (i % 1000 != 7).then_some(i / 2)
                    }))),
                    Arc::new(StringArray::from_iter_values(
                        range.map(|i| ["x", "y", "z"][(i % 3) as usize]),
                    )),
                ],
            )
            .unwrap()
        };
        let estimate = |op: WindowAggregate| -> (i64, i64) {
            let b = &finish(op)[0];
            (
                b.column(0).as_primitive::<Int64Type>().value(0),
                b.column(1).as_primitive::<Int64Type>().value(0),
            )
        };
        let mut out = Output::default();
        let mut whole = WindowAggregate::new(spec.clone(), "t").unwrap();
        let mut parts = [
            WindowAggregate::new(spec.clone(), "t").unwrap(),
            WindowAggregate::new(spec.clone(), "t").unwrap(),
        ];
        for (i, start) in (0..200_000).step_by(10_000).enumerate() {
            let b = batch(start..start + 10_000);
            whole.process(Message::Data(b.clone()), &mut out).unwrap();
            parts[i % 2].process(Message::Data(b), &mut out).unwrap();
        }
        let [mut merged, other] = parts;
        merged.merge(other).unwrap();
        let mut blob = vec![];
        whole.snapshot(&mut blob).unwrap();
        let mut restored = WindowAggregate::new(spec, "t").unwrap();
        restored.restore(&blob).unwrap();
        let truth = 100_000.0;
        let (v, k) = estimate(whole);
        assert!(
            (v as f64 - truth).abs() / truth < 0.03,
            "estimate {v} of {truth}"
        );
        assert_eq!(k, 3);
        assert_eq!(estimate(merged), (v, k), "merged sketches");
        assert_eq!(estimate(restored), (v, k), "restored sketch");
    }

    /// RESERVOIR_SAMPLE(v, 3) per key: at most 3 of the key's non-NULL values, all of them
    /// when there are fewer, in the order seen.
    #[test]
    fn reservoir_sample_keeps_k_values_of_its_group() {
        let input = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Utf8, true),
            Field::new("v", DataType::Int64, true),
        ]));
        let item = DataType::Int64;
        let spec = AggregateSpec {
            group_exprs: vec![col("k", &input).unwrap()],
            window: None,
            output: OutputMode::Append,
            allowed_lateness: 0,
            state_ttl: None,
            session_keys: vec![],
            calls: vec![AggregateCall {
                function: AggregateFunction::ReservoirSample(3),
                arg: col("v", &input).unwrap(),
                distinct: false,
                filter: None,
            }],
            input_schema: input.clone(),
            schema: Arc::new(Schema::new(vec![
                Field::new("k", DataType::Utf8, true),
                Field::new("s", crate::functions::sample_type(&item), true),
            ])),
        };
        let mut op = WindowAggregate::new(spec, "t").unwrap();
        let mut out = Output::default();
        // Key a: 1000 values 0..1000 (every tenth NULL); key b: two values.
        let keys: Vec<&str> = (0..1000).map(|_| "a").chain(["b", "b"]).collect();
        let values: Vec<Option<i64>> = (0..1000)
            .map(|i| (i % 10 != 0).then_some(i))
            .chain([Some(7), None])
            .collect();
        let batch = RecordBatch::try_new(
            input,
            vec![
                Arc::new(StringArray::from(keys)),
                Arc::new(Int64Array::from(values)),
            ],
        )
        .unwrap();
        op.process(Message::Data(batch), &mut out).unwrap();
        let result = &finish(op)[0];
        let samples = result.column(1).as_list::<i32>();
        let a = samples.value(0);
        let a: Vec<i64> = a.as_primitive::<Int64Type>().values().to_vec();
        assert_eq!(a.len(), 3);
        assert!(
            a.iter().all(|v| v % 10 != 0 && (0..1000).contains(v)),
            "{a:?}"
        );
        let b = samples.value(1);
        assert_eq!(b.as_primitive::<Int64Type>().values().to_vec(), vec![7]);
    }

    // ------------------------------------------------------------------------- checkpoints

    /// One input row of [`rich_spec`]: `k`, `v`, `f`, `d` (hundredths), event time.
    type RichRow = (
        Option<&'static str>,
        Option<i64>,
        Option<f64>,
        Option<i128>,
        i64,
    );

    /// Every kind of accumulator state: COUNT, COUNT(DISTINCT) of a string and of an integer,
    /// SUM/AVG of integers (i128), floats (f64) and decimals (i128), MIN/MAX of integers,
    /// floats, decimals and strings (rows). Grouped by `k`, or only by window.
    fn rich_spec(keyed: bool) -> AggregateSpec {
        rich_spec_with(keyed, true, OutputMode::Append)
    }

    /// [`rich_spec`], per window or over the whole input, in either output mode.
    fn rich_spec_with(keyed: bool, windowed: bool, output: OutputMode) -> AggregateSpec {
        use AggregateFunction::*;
        let ts = DataType::Timestamp(TimeUnit::Millisecond, None);
        let dec = DataType::Decimal128(10, 2);
        let input = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Utf8, true),
            Field::new("v", DataType::Int64, true),
            Field::new("f", DataType::Float64, true),
            Field::new("d", dec.clone(), true),
            Field::new("window_start", ts.clone(), false),
            Field::new("window_end", ts.clone(), false),
        ]));
        let c = |name: &str| col(name, &input).unwrap();
        let (i64t, f64t, utf8) = (DataType::Int64, DataType::Float64, DataType::Utf8);
        let calls = vec![
            (Count, lit(1i64), false, i64t.clone()),
            (Count, c("v"), false, i64t.clone()),
            (Count, c("k"), true, i64t.clone()),
            (Count, c("v"), true, i64t.clone()),
            (ApproxCountDistinct, c("k"), false, i64t.clone()),
            (ApproxCountDistinct, c("f"), false, i64t.clone()),
            (
                ReservoirSample(3),
                c("v"),
                false,
                crate::functions::sample_type(&i64t),
            ),
            (Sum, c("v"), false, i64t.clone()),
            (Sum, c("f"), false, f64t.clone()),
            (Sum, c("d"), false, DataType::Decimal128(38, 2)),
            (Avg, c("v"), false, f64t.clone()),
            (Avg, c("f"), false, f64t.clone()),
            (Avg, c("d"), false, DataType::Decimal128(38, 6)),
            (Min, c("v"), false, i64t.clone()),
            (Max, c("v"), false, i64t),
            (Min, c("f"), false, f64t.clone()),
            (Max, c("f"), false, f64t),
            (Min, c("d"), false, dec.clone()),
            (Max, c("d"), false, dec),
            (Min, c("k"), false, utf8.clone()),
            (Max, c("k"), false, utf8.clone()),
        ];
        let (mut group_exprs, mut fields) = if windowed {
            (
                vec![c("window_start"), c("window_end")],
                vec![
                    Field::new("window_start", ts.clone(), false),
                    Field::new("window_end", ts, false),
                ],
            )
        } else {
            (vec![], vec![])
        };
        if keyed {
            group_exprs.push(c("k"));
            fields.push(Field::new("k", utf8, true));
        }
        for (i, (.., output)) in calls.iter().enumerate() {
            fields.push(Field::new(format!("a{i}"), output.clone(), true));
        }
        AggregateSpec {
            group_exprs,
            window: windowed.then_some(WindowColumns {
                kind: WindowKind::Tumble { size: 10 },
                start: 0,
                end: 1,
            }),
            output,
            allowed_lateness: 0,
            state_ttl: None,
            session_keys: vec![],
            calls: calls
                .into_iter()
                .map(|(function, arg, distinct, _)| AggregateCall {
                    function,
                    arg,
                    distinct,
                    filter: None,
                })
                .collect(),
            input_schema: input,
            schema: Arc::new(Schema::new(fields)),
        }
    }

    fn rich_batch(rows: &[RichRow]) -> RecordBatch {
        let starts: Vec<i64> = rows.iter().map(|r| r.4 - r.4.rem_euclid(10)).collect();
        RecordBatch::try_new(
            rich_spec(true).input_schema,
            vec![
                Arc::new(StringArray::from_iter(rows.iter().map(|r| r.0))),
                Arc::new(Int64Array::from_iter(rows.iter().map(|r| r.1))),
                Arc::new(Float64Array::from_iter(rows.iter().map(|r| r.2))),
                Arc::new(
                    Decimal128Array::from_iter(rows.iter().map(|r| r.3))
                        .with_precision_and_scale(10, 2)
                        .unwrap(),
                ),
                Arc::new(TimestampMillisecondArray::from(starts.clone())),
                Arc::new(TimestampMillisecondArray::from_iter_values(
                    starts.iter().map(|s| s + 10),
                )),
            ],
        )
        .unwrap()
    }

    /// A stream run: batches of `batch` rows, each followed by a watermark `lag` behind the
    /// newest event time seen, then the end of input.
    fn stream(rows: &[RichRow], batch: usize, lag: i64) -> Vec<Message> {
        let mut messages = vec![];
        let mut newest = i64::MIN;
        for chunk in rows.chunks(batch) {
            messages.push(Message::Data(rich_batch(chunk)));
            newest = chunk.iter().map(|r| r.4).fold(newest, i64::max);
            messages.push(Message::Watermark(Watermark(newest - lag)));
        }
        messages.push(Message::Watermark(Watermark::MAX));
        messages.push(Message::EndOfInput);
        messages
    }

    /// Everything an operator produced, in order.
    #[derive(Debug, PartialEq)]
    enum Produced {
        Data(RecordBatch),
        Watermark(Watermark),
        End,
        EmitUpdates,
        Reject(Reject),
    }

    fn run(op: &mut WindowAggregate, messages: &[Message]) -> Vec<Produced> {
        let mut produced = vec![];
        for message in messages {
            let mut out = Output::default();
            op.process(message.clone(), &mut out).unwrap();
            produced.extend(out.rejects.into_iter().map(Produced::Reject));
            produced.extend(out.messages.into_iter().map(|m| match m {
                Message::Data(b) => Produced::Data(b),
                Message::Watermark(w) => Produced::Watermark(w),
                Message::EndOfInput => Produced::End,
                Message::EmitUpdates => Produced::EmitUpdates,
                Message::Retract(_) => panic!("a window aggregate never retracts"),
            }));
        }
        produced
    }

    /// The tracked state sizes: key bytes, and heap bytes per accumulator.
    fn counters(op: &WindowAggregate) -> (usize, Vec<usize>) {
        let heap = op.accumulators.iter().map(|a| a.heap_bytes).collect();
        (op.groups.key_bytes, heap)
    }

    /// The same sizes, recounted from the live groups.
    fn recount(op: &WindowAggregate) -> (usize, Vec<usize>) {
        let live: Vec<usize> = op.windows.values().flatten().map(|&g| g as usize).collect();
        let keys = live.iter().map(|&g| op.groups.keys[g].len()).sum();
        let heap = op
            .accumulators
            .iter()
            .map(|a| match &a.values {
                Values::Rows(rows, _) => live
                    .iter()
                    .filter_map(|&g| rows[g].as_ref())
                    .map(|r| r.row().as_ref().len() + 24)
                    .sum(),
                Values::Distinct(sets, _) => live
                    .iter()
                    .flat_map(|&g| &sets[g])
                    .map(|v| v.len() + 24)
                    .sum(),
                Values::Sketch(sketches, _) => live.iter().map(|&g| sketches[g].heap_bytes()).sum(),
                Values::Sample(samples, ..) => live.iter().map(|&g| samples[g].heap_bytes()).sum(),
                _ => 0,
            })
            .collect();
        (keys, heap)
    }

    fn snapshot(op: &WindowAggregate) -> Vec<u8> {
        let mut blob = vec![];
        op.snapshot(&mut blob).unwrap();
        blob
    }

    /// Event times that grow with the row number, jittered, so rows are sometimes late.
    fn timed(jittered: Vec<RichRow>) -> Vec<RichRow> {
        jittered
            .into_iter()
            .enumerate()
            .map(|(i, (k, v, f, d, jitter))| (k, v, f, d, i as i64 * 2 + jitter))
            .collect()
    }

    fn rich_row() -> impl Strategy<Value = RichRow> {
        (
            prop::option::weighted(
                0.9,
                prop::sample::select(vec!["a", "b", "c", "", "é", "zz"]),
            ),
            prop::option::weighted(0.9, -50i64..50),
            prop::option::weighted(0.9, (-400i32..400).prop_map(|x| f64::from(x) / 8.0)),
            prop::option::weighted(0.9, (-10_000i64..10_000).prop_map(i128::from)),
            -20i64..30,
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            cases: 64,
            failure_persistence: None,
            ..ProptestConfig::default()
        })]

        /// Snapshot at any point of a stream, restore into a new operator, continue: the
        /// output (batches, watermarks, late rejects) is that of an uninterrupted run.
        #[test]
        fn restored_operator_continues_like_an_uninterrupted_one(
            keyed in any::<bool>(),
            jittered in prop::collection::vec(rich_row(), 0..120),
            batch in 1usize..30,
            lag in 0i64..30,
            cut in any::<prop::sample::Index>(),
        ) {
            let rows = timed(jittered);
            let messages = stream(&rows, batch, lag);
            let mut whole = WindowAggregate::new(rich_spec(keyed), "t").unwrap();
            let expected = run(&mut whole, &messages);

            let cut = cut.index(messages.len() + 1);
            let mut before = WindowAggregate::new(rich_spec(keyed), "t").unwrap();
            let mut produced = run(&mut before, &messages[..cut]);
            let blob = snapshot(&before);
            let mut after = WindowAggregate::new(rich_spec(keyed), "t").unwrap();
            after.restore(&blob).unwrap();
            prop_assert_eq!(after.watermark, before.watermark);
            prop_assert_eq!(counters(&before), recount(&before));
            prop_assert_eq!(counters(&after), counters(&before));
            prop_assert_eq!(counters(&after), recount(&after));
            // The restored state holds no freed group slots.
            prop_assert!(after.state_bytes() <= before.state_bytes());
            produced.extend(run(&mut after, &messages[cut..]));
            prop_assert_eq!(produced, expected);
        }

        /// Update mode, per window or over the whole input: upserting its output by key ends
        /// with exactly the append-mode results; between two ticks a group is emitted at most
        /// once; and a snapshot/restore anywhere (dirty groups included) changes nothing.
        #[test]
        fn update_mode_upserts_to_the_append_results(
            keyed in any::<bool>(),
            windowed in any::<bool>(),
            jittered in prop::collection::vec(rich_row(), 0..120),
            batch in 1usize..30,
            lag in 0i64..30,
            emit_every in 1usize..5,
            cut in any::<prop::sample::Index>(),
        ) {
            let rows = timed(jittered);
            let messages = stream_with_updates(&rows, batch, lag, emit_every);
            let n_keys = usize::from(keyed) + if windowed { 2 } else { 0 };
            let spec = |output| rich_spec_with(keyed, windowed, output);

            let mut append = WindowAggregate::new(spec(OutputMode::Append), "t").unwrap();
            let final_results = upsert(&run(&mut append, &messages), n_keys);
            let mut update = WindowAggregate::new(spec(OutputMode::Update), "t").unwrap();
            let updates = run(&mut update, &messages);
            prop_assert_eq!(upsert(&updates, n_keys), final_results);
            for p in &updates {
                if let Produced::Data(b) = p {
                    let keys = upsert(&[Produced::Data(b.clone())], n_keys);
                    prop_assert_eq!(keys.len(), b.num_rows(), "a key twice in one emission");
                }
            }
            if !windowed {
                // Nothing is final before the end: every emission but the last is a tick's.
                let emitted = updates.iter().filter(|p| matches!(p, Produced::Data(_))).count();
                let ticks_with_rows = emitted.saturating_sub(1);
                prop_assert!(ticks_with_rows <= messages.iter().filter(|m| matches!(m, Message::EmitUpdates)).count());
            }

            let cut = cut.index(messages.len() + 1);
            let mut before = WindowAggregate::new(spec(OutputMode::Update), "t").unwrap();
            let mut produced = run(&mut before, &messages[..cut]);
            let blob = snapshot(&before);
            let mut after = WindowAggregate::new(spec(OutputMode::Update), "t").unwrap();
            after.restore(&blob).unwrap();
            produced.extend(run(&mut after, &messages[cut..]));
            prop_assert_eq!(produced, updates);
        }
    }

    /// The state-TTL model: per key, the last `COUNT(*)` a downstream upsert holds, given that a
    /// key not updated while the watermark advanced more than `ttl` past the watermark of its
    /// last update restarts from zero (rows before the first watermark count as under it).
    fn ttl_model(messages: &[Message], ttl: i64) -> BTreeMap<Vec<String>, String> {
        let mut live: BTreeMap<Vec<String>, (i64, i64)> = BTreeMap::new(); // key → (stamp, count)
        let mut last: BTreeMap<Vec<String>, String> = BTreeMap::new();
        let mut wm = i64::MIN;
        for m in messages {
            match m {
                Message::Data(b) => {
                    let k = b.column(0).as_string::<i32>();
                    for row in 0..b.num_rows() {
                        let key = vec![match k.is_null(row) {
                            true => "NULL".to_string(),
                            false => format!("'{}'", k.value(row)),
                        }];
                        let entry = live.entry(key.clone()).or_insert((wm, 0));
                        *entry = (wm, entry.1 + 1);
                        last.insert(key, format!("'{}'", entry.1));
                    }
                }
                Message::Watermark(w) if w.0 > wm => {
                    if wm == i64::MIN {
                        live.values_mut()
                            .filter(|e| e.0 == i64::MIN)
                            .for_each(|e| e.0 = w.0);
                    }
                    wm = w.0;
                    if wm != i64::MAX {
                        live.retain(|_, e| e.0.saturating_add(ttl) >= wm);
                    }
                }
                _ => {}
            }
        }
        last
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            cases: 64,
            failure_persistence: None,
            ..ProptestConfig::default()
        })]

        /// State TTL (update mode, GROUP BY without window): an idle key's group is dropped
        /// (after emitting what it had not emitted) and restarts from zero, as the model says;
        /// state shrinks; a snapshot/restore anywhere changes nothing.
        #[test]
        fn state_ttl_drops_idle_groups_like_the_model(
            jittered in prop::collection::vec(rich_row(), 0..150),
            batch in 1usize..20,
            lag in 0i64..10,
            emit_every in 1usize..4,
            ttl in 1i64..40,
            cut in any::<prop::sample::Index>(),
        ) {
            let rows = timed(jittered);
            let messages = stream_with_updates(&rows, batch, lag, emit_every);
            let spec = || {
                let mut s = rich_spec_with(true, false, OutputMode::Update);
                s.state_ttl = Some(ttl);
                s
            };
            let mut op = WindowAggregate::new(spec(), "t").unwrap();
            let updates = run(&mut op, &messages);
            let counts: BTreeMap<Vec<String>, String> = upsert(&updates, 1)
                .into_iter()
                .map(|(k, v)| (k, v[1].clone()))
                .collect();
            prop_assert_eq!(counts, ttl_model(&messages, ttl));

            let cut = cut.index(messages.len() + 1);
            let mut before = WindowAggregate::new(spec(), "t").unwrap();
            let mut produced = run(&mut before, &messages[..cut]);
            let blob = snapshot(&before);
            let mut after = WindowAggregate::new(spec(), "t").unwrap();
            after.restore(&blob).unwrap();
            produced.extend(run(&mut after, &messages[cut..]));
            prop_assert_eq!(produced, updates);
            // A TTL state does not restore into a plan without one.
            let mut other = WindowAggregate::new(rich_spec_with(true, false, OutputMode::Update), "t").unwrap();
            prop_assert!(other.restore(&blob).is_err());
        }
    }

    #[test]
    fn state_ttl_bounds_the_groups_of_a_stream_of_new_keys() {
        let mut spec = rich_spec_with(true, false, OutputMode::Update);
        spec.state_ttl = Some(10);
        let mut op = WindowAggregate::new(spec, "t").unwrap();
        let keys: Vec<&'static str> = vec!["a", "b", "c", "", "é", "zz"];
        let mut live_max = 0;
        for i in 0..600i64 {
            let k = keys[(i % 6) as usize];
            let mut out = Output::default();
            op.process(
                Message::Data(rich_batch(&[(Some(k), Some(1), None, None, i)])),
                &mut out,
            )
            .unwrap();
            op.process(Message::Watermark(Watermark(i * 10)), &mut out)
                .unwrap();
            let live = op.groups.hashes.len() - op.groups.free.len() - op.groups.pending_free.len();
            live_max = live_max.max(live);
        }
        // Each key is updated every 60 ms of watermark, TTL 10 ms: at most two live at once.
        assert!(live_max <= 2, "{live_max} groups live");
        assert!(op.expired > 500, "{} groups expired", op.expired);
        assert!(op.expiry.len() <= 4);
        // Ids are reused (the group table stays small) and the window list is compacted.
        assert!(
            op.groups.hashes.len() <= 2 + 64 + 2,
            "{} ids",
            op.groups.hashes.len()
        );
        assert!(op.windows.values().map(Vec::len).sum::<usize>() <= 2 + 64 + 2);
    }

    /// Update-mode output folded as a downstream upsert would: the last row of each key (the
    /// first `n_keys` columns), every column rendered as text.
    fn upsert(produced: &[Produced], n_keys: usize) -> BTreeMap<Vec<String>, Vec<String>> {
        let mut table = BTreeMap::new();
        for p in produced {
            let Produced::Data(batch) = p else { continue };
            for row in 0..batch.num_rows() {
                let values: Vec<String> = batch
                    .columns()
                    .iter()
                    .map(|c| match c.is_null(row) {
                        true => "NULL".to_string(),
                        false => format!(
                            "'{}'",
                            arrow::util::display::array_value_to_string(c, row).unwrap()
                        ),
                    })
                    .collect();
                table.insert(values[..n_keys].to_vec(), values);
            }
        }
        table
    }

    /// A stream run (see [`stream`]) with an update tick after every `emit_every`-th batch.
    fn stream_with_updates(
        rows: &[RichRow],
        batch: usize,
        lag: i64,
        emit_every: usize,
    ) -> Vec<Message> {
        let mut messages = vec![];
        let mut batches = 0;
        for m in stream(rows, batch, lag) {
            let tick = matches!(m, Message::Data(_));
            messages.push(m);
            if tick {
                batches += 1;
                if batches % emit_every == 0 {
                    messages.push(Message::EmitUpdates);
                }
            }
        }
        messages
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            cases: 64,
            failure_persistence: None,
            ..ProptestConfig::default()
        })]

        /// Update mode with an allowed lateness longer than any row is late: nothing is
        /// rejected, and the upserted output is the answer over all rows (one batch, then the
        /// end); once the watermark passes every window's end plus the lateness, no state is
        /// left. A restore anywhere changes nothing.
        #[test]
        fn allowed_lateness_corrects_windows_instead_of_rejecting(
            keyed in any::<bool>(),
            jittered in prop::collection::vec(rich_row(), 1..120),
            batch in 1usize..30,
            lag in 0i64..10,
            cut in any::<prop::sample::Index>(),
        ) {
            let rows = timed(jittered);
            let messages = stream_with_updates(&rows, batch, lag, 1);
            let n_keys = usize::from(keyed) + 2;
            let late_spec = || {
                let mut spec = rich_spec_with(keyed, true, OutputMode::Update);
                spec.allowed_lateness = 100;
                spec
            };
            let mut all = WindowAggregate::new(rich_spec(keyed), "t").unwrap();
            let answer = upsert(
                &run(&mut all, &[Message::Data(rich_batch(&rows)), Message::Watermark(Watermark::MAX)]),
                n_keys,
            );
            let mut late = WindowAggregate::new(late_spec(), "t").unwrap();
            let produced = run(&mut late, &messages);
            prop_assert!(!produced.iter().any(|p| matches!(p, Produced::Reject(_))));
            prop_assert_eq!(upsert(&produced, n_keys), answer);
            prop_assert!(late.windows.is_empty());

            let cut = cut.index(messages.len() + 1);
            let mut before = WindowAggregate::new(late_spec(), "t").unwrap();
            let mut again = run(&mut before, &messages[..cut]);
            let blob = snapshot(&before);
            let mut after = WindowAggregate::new(late_spec(), "t").unwrap();
            after.restore(&blob).unwrap();
            again.extend(run(&mut after, &messages[cut..]));
            prop_assert_eq!(again, produced);
        }
    }

    #[test]
    fn a_late_row_within_the_lateness_reopens_its_window_and_beyond_it_is_rejected() {
        let mut spec = spec();
        spec.output = OutputMode::Update;
        spec.allowed_lateness = 20;
        let mut op = WindowAggregate::new(spec, "t").unwrap();
        let mut out = Output::default();
        op.process(Message::Data(batch(&[(Some("a"), Some(1), 5)])), &mut out)
            .unwrap();
        // [0, 10) is due at 9: emitted; kept until the watermark passes 9 + 20.
        op.process(Message::Watermark(Watermark(9)), &mut out)
            .unwrap();
        op.process(Message::Data(batch(&[(Some("a"), Some(2), 7)])), &mut out)
            .unwrap();
        op.process(Message::EmitUpdates, &mut out).unwrap();
        op.process(Message::Watermark(Watermark(29)), &mut out)
            .unwrap();
        op.process(Message::Data(batch(&[(Some("a"), Some(4), 8)])), &mut out)
            .unwrap();
        let sums: Vec<i64> = out
            .messages
            .iter()
            .filter_map(|m| match m {
                Message::Data(b) => Some(b.column(4).as_primitive::<Int64Type>().value(0)),
                _ => None,
            })
            .collect();
        assert_eq!(sums, vec![1, 3], "emitted when due, then corrected");
        assert_eq!(out.rejects.len(), 1);
        assert!(
            out.rejects[0].detail.contains("passed"),
            "{:?}",
            out.rejects[0]
        );
        assert!(op.windows.is_empty());
    }

    #[test]
    fn an_update_tick_emits_changed_groups_only_and_keeps_them() {
        let mut spec = spec();
        spec.output = OutputMode::Update;
        let mut op = WindowAggregate::new(spec, "t").unwrap();
        let mut out = Output::default();
        op.process(
            Message::Data(batch(&[(Some("a"), Some(1), 1), (Some("b"), Some(2), 2)])),
            &mut out,
        )
        .unwrap();
        op.process(Message::EmitUpdates, &mut out).unwrap();
        op.process(Message::Data(batch(&[(Some("b"), Some(5), 3)])), &mut out)
            .unwrap();
        op.process(Message::EmitUpdates, &mut out).unwrap();
        // Nothing changed since: the tick emits nothing.
        op.process(Message::EmitUpdates, &mut out).unwrap();
        // The window closes: b and a were emitted with their final values already.
        op.process(Message::Watermark(Watermark(9)), &mut out)
            .unwrap();
        let rows: Vec<(String, i64)> = out
            .messages
            .iter()
            .filter_map(|m| match m {
                Message::Data(b) => Some(b),
                _ => None,
            })
            .flat_map(|b| {
                let k = b.column(2).as_string::<i32>().clone();
                let s = b.column(4).as_primitive::<Int64Type>().clone();
                (0..b.num_rows()).map(move |i| (k.value(i).to_string(), s.value(i)))
            })
            .collect();
        assert_eq!(
            rows,
            vec![("a".into(), 1), ("b".into(), 2), ("b".into(), 7)]
        );
        assert!(op.windows.is_empty(), "the fired window's groups are freed");
    }

    #[test]
    fn restored_watermark_still_rejects_late_rows() {
        let mut op = WindowAggregate::new(spec(), "t").unwrap();
        let mut out = Output::default();
        let early = [(Some("a"), Some(1), 5), (Some("b"), Some(2), 25)];
        op.process(Message::Data(batch(&early)), &mut out).unwrap();
        // Fires [0, 10) and closes [10, 20); [20, 30) stays open.
        op.process(Message::Watermark(Watermark(19)), &mut out)
            .unwrap();
        assert_eq!(out.messages.len(), 2);
        let blob = snapshot(&op);

        let mut restored = WindowAggregate::new(spec(), "t").unwrap();
        restored.restore(&blob).unwrap();
        let mut out = Output::default();
        let later = [
            (Some("a"), Some(7), 3),
            (Some("c"), Some(1), 15),
            (Some("b"), Some(3), 26),
        ];
        restored
            .process(Message::Data(batch(&later)), &mut out)
            .unwrap();
        assert_eq!(out.rejects.len(), 2, "{:?}", out.rejects);
        for (reject, window) in out.rejects.iter().zip([[0, 10], [10, 20]]) {
            assert_eq!(reject.reason, RejectReason::Late);
            assert_eq!(reject.watermark, Some(Watermark(19).display()));
            assert_eq!(reject.window, Some(window.map(|t| Watermark(t).display())));
        }
        // An older watermark neither re-fires nor moves the watermark back.
        restored
            .process(Message::Watermark(Watermark(12)), &mut out)
            .unwrap();
        assert!(!out.messages.iter().any(|m| matches!(m, Message::Data(_))));
        assert_eq!(restored.watermark, Watermark(19));

        // The open window holds the row from before the snapshot and the one after it.
        let mut uninterrupted = WindowAggregate::new(spec(), "t").unwrap();
        let mut out = Output::default();
        for m in [
            Message::Data(batch(&early)),
            Message::Watermark(Watermark(19)),
            Message::Data(batch(&later)),
        ] {
            uninterrupted.process(m, &mut out).unwrap();
        }
        let fired = finish(restored);
        assert_eq!(fired, finish(uninterrupted));
        assert_eq!(fired.len(), 1);
        assert_eq!(fired[0].num_rows(), 1);
        assert_eq!(fired[0].column(4).as_primitive::<Int64Type>().value(0), 5);
    }

    #[test]
    fn corrupt_truncated_or_foreign_checkpoints_are_refused_without_panicking() {
        let rows: Vec<(Option<&str>, Option<i64>, i64)> = (0..40)
            .map(|i: i64| {
                let k = [Some("a"), Some("bb"), None, Some("ccc")][(i % 4) as usize];
                (k, (i % 5 != 0).then_some(i * 7 % 13), i % 30)
            })
            .collect();
        let mut op = WindowAggregate::new(spec(), "t").unwrap();
        let mut out = Output::default();
        op.process(Message::Data(batch(&rows)), &mut out).unwrap();
        op.process(Message::Watermark(Watermark(9)), &mut out)
            .unwrap();
        let blob = snapshot(&op);
        let expected = finish(op);

        // `target` holds a good state; no failed restore may change it.
        let mut target = WindowAggregate::new(spec(), "t").unwrap();
        target.restore(&blob).unwrap();
        let mut error = |bytes: &[u8]| match target.restore(bytes) {
            Ok(()) => panic!("accepted a bad checkpoint of {} bytes", bytes.len()),
            Err(e) => e.to_string(),
        };
        for cut in 0..blob.len() {
            assert!(error(&blob[..cut]).contains(CHECKPOINT), "cut at {cut}");
        }
        for i in 0..blob.len() {
            let mut bad = blob.clone();
            bad[i] ^= 0x41;
            assert!(error(&bad).contains(CHECKPOINT), "byte {i} changed");
        }
        let mut extended = blob.clone();
        extended.extend_from_slice(b"more");
        error(&extended);
        assert!(error(b"").contains("truncated"));
        let wrong = error(b"not a checkpoint at all");
        assert!(
            wrong.contains("window-aggregate") && wrong.contains("tag"),
            "{wrong}"
        );
        let mut newer = blob.clone();
        newer[4] = VERSION + 1;
        assert!(error(&newer).contains("version"));
        let foreign = snapshot(&WindowAggregate::new(rich_spec(true), "t").unwrap());
        assert!(error(&foreign).contains("another plan"));
        // Garbage, with and without a valid frame around it.
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let frame = |payload: &[u8]| {
            let mut framed = vec![];
            let mut e = Encoder::new(&mut framed);
            let f = e.begin_frame(MAGIC, VERSION);
            e.raw(payload);
            e.end_frame(f);
            framed
        };
        for len in 0..200 {
            let garbage: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            error(&garbage);
            error(&frame(&garbage));
        }
        // Payloads cut short behind a valid checksum are refused too.
        let payload = &blob[FRAME_HEADER..];
        for cut in 0..payload.len() {
            error(&frame(&payload[..cut]));
        }
        // Altered payloads behind a valid checksum (a forged blob, not corruption) may restore
        // to other values, but never panic.
        for i in 0..payload.len() {
            for flip in [0x01, 0x80, 0xff] {
                let mut altered = payload.to_vec();
                altered[i] ^= flip;
                let mut probe = WindowAggregate::new(spec(), "t").unwrap();
                let _ = probe.restore(&frame(&altered));
            }
        }
        assert_eq!(finish(target), expected);
    }

    #[test]
    fn the_state_of_a_fresh_operator_restores_to_an_empty_one() {
        let blob = snapshot(&WindowAggregate::new(spec(), "t").unwrap());
        let rows = [
            (Some("a"), Some(1), 5),
            (None, Some(2), 7),
            (Some("b"), None, 130),
        ];
        let mut reference = WindowAggregate::new(spec(), "t").unwrap();
        let mut out = Output::default();
        reference
            .process(Message::Data(batch(&rows)), &mut out)
            .unwrap();
        let expected = finish(reference);

        let mut fresh = WindowAggregate::new(spec(), "t").unwrap();
        fresh.restore(&blob).unwrap();
        assert_eq!(fresh.state_bytes(), 0);
        assert_eq!(snapshot(&fresh), blob);

        // Restoring it into an operator with state and a watermark empties it.
        let mut used = WindowAggregate::new(spec(), "t").unwrap();
        used.process(Message::Data(batch(&rows)), &mut out).unwrap();
        used.process(Message::Watermark(Watermark(100)), &mut out)
            .unwrap();
        assert!(used.state_bytes() > 0);
        used.restore(&blob).unwrap();
        assert_eq!(used.state_bytes(), 0);
        assert_eq!(counters(&used), (0, vec![0; 6]));
        assert_eq!(used.watermark, Watermark::MIN);

        for mut op in [fresh, used] {
            let mut out = Output::default();
            op.process(Message::Data(batch(&rows)), &mut out).unwrap();
            assert!(out.rejects.is_empty());
            assert_eq!(finish(op), expected);
        }
    }
}
