//! The aggregate with retractions: a `GROUP BY` without window, in update mode, that can take
//! rows back and takes back what it sent. It is planned where the plain update mode would be
//! wrong: under a filter on its results (HAVING: a group that stops matching must disappear)
//! and under another aggregate (a GROUP BY over a GROUP BY: the outer one must subtract the old
//! result of an inner group before adding its new one).
//!
//! Input: [`Message::Data`] rows are added, [`Message::Retract`] rows are subtracted. Output, on
//! every [`Message::EmitUpdates`] and at the end of input ([`Watermark::MAX`]), for each group
//! changed since the last emission, sorted by key: its old result as one `Retract` batch, then
//! its new result as one `Data` batch. A group whose result did not change sends nothing; a
//! group whose rows were all taken back sends only the retraction (a delete) and is freed.
//!
//! Accumulators keep what subtraction needs: COUNT and SUM/AVG a count and a sum (exact for
//! integers and decimals; floats may differ in the last bits after a subtraction, as in Flink,
//! but NaN and infinities are counted apart and an emptied group's sum restarts at 0),
//! MIN/MAX and COUNT(DISTINCT) a multiset of values with their multiplicities.
//!
//! Invariants:
//! * Each group's `rows` is the number of its input rows added minus taken back; it never goes
//!   below zero (a retraction of a row never added is an error, not a silent fix).
//! * `emitted` is exactly the result last sent for the group, so a retraction downstream
//!   removes precisely what was added there.
//! * A global aggregate (no GROUP BY columns) keeps its one group: over no rows it says COUNT 0,
//!   as SQL does, instead of being deleted.
//!
//! Checkpoint (frame `FRAG`, version 2): the layout, the watermark, then every live group as
//! { key bytes, rows i64, dirty u8, emitted (u8 0 | u8 1 + bytes) }, then per aggregate and
//! group its count i64 and its values (sum i128; or f64 and the NaN, +inf, -inf counts as 3 × i64;
//! multisets as u64 m, m × {bytes, i64}).

use std::collections::BTreeMap;
use std::sync::Arc;

use ahash::RandomState;
use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Decimal128Array, Float64Array, Int64Array, RecordBatch,
    UInt32Array,
};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Decimal128Type, Float64Type, Int64Type};
use arrow::row::{RowConverter, SortField};
use flowline_core::plan::{AggregateFunction, AggregateSpec};
use flowline_core::{Error, Message, Operator, Output, Result, Watermark};
use hashbrown::hash_table::HashTable;

use crate::codec::{Decoder, Encoder};
use crate::operators::aggregate::{accepted_rows, call_types, numeric_type, sum_to_i64};

const MAGIC: [u8; 4] = *b"FRAG";
const VERSION: u8 = 2;
const CHECKPOINT: &str = "retract-aggregate checkpoint";

struct Group {
    key: Box<[u8]>,
    /// Input rows added minus taken back.
    rows: i64,
    /// The aggregate values last sent, in `out_converter`'s row format.
    emitted: Option<Box<[u8]>>,
    dirty: bool,
    live: bool,
}

pub struct RetractAggregate {
    spec: AggregateSpec,
    key_converter: RowConverter,
    /// Row format of the aggregate results (one field per call), to remember what was sent.
    out_converter: RowConverter,
    hasher: RandomState,
    /// Group ids by the hash of their key (the key itself lives in `groups`, once).
    index: HashTable<u32>,
    groups: Vec<Group>,
    free: Vec<u32>,
    dirty: Vec<u32>,
    accumulators: Vec<Accumulator>,
    watermark: Watermark,
    /// Bytes of keys, sent results and multisets, kept up to date.
    bytes: usize,
    layout: String,
}

impl RetractAggregate {
    pub fn new(spec: AggregateSpec) -> Result<Self> {
        if spec.window.is_some() {
            return Err(Error::Internal(
                "a retract-aggregate has no window".to_string(),
            ));
        }
        let key_types = spec
            .group_exprs
            .iter()
            .map(|e| Ok(e.data_type(&spec.input_schema)?))
            .collect::<Result<Vec<_>>>()?;
        let key_converter =
            RowConverter::new(key_types.iter().cloned().map(SortField::new).collect())?;
        let accumulators = call_types(&spec)?
            .into_iter()
            .map(|(call, input, output)| {
                Accumulator::new(call.function, call.distinct, &input, output)
            })
            .collect::<Result<Vec<_>>>()?;
        let out_converter = RowConverter::new(
            accumulators
                .iter()
                .map(|a| SortField::new(a.output.clone()))
                .collect(),
        )?;
        let layout = format!(
            "retract-aggregate; keys [{}]; {}",
            key_types
                .iter()
                .map(|t| t.to_string())
                .collect::<Vec<_>>()
                .join(", "),
            accumulators
                .iter()
                .map(|a| format!(
                    "{:?}({}) -> {} {}",
                    a.function,
                    a.input,
                    a.output,
                    a.values.kind()
                ))
                .collect::<Vec<_>>()
                .join(", ")
        );
        Ok(RetractAggregate {
            spec,
            key_converter,
            out_converter,
            hasher: RandomState::with_seeds(7, 11, 13, 17),
            index: HashTable::new(),
            groups: vec![],
            free: vec![],
            dirty: vec![],
            accumulators,
            watermark: Watermark::MIN,
            bytes: 0,
            layout,
        })
    }

    /// Adds (`sign` 1) or takes back (`sign` -1) the rows of `batch`.
    fn on_batch(&mut self, batch: &RecordBatch, sign: i64) -> Result<()> {
        let n = batch.num_rows();
        if n == 0 {
            return Ok(());
        }
        let keys = self
            .spec
            .group_exprs
            .iter()
            .map(|e| e.evaluate(batch)?.into_array(n))
            .collect::<Result<Vec<_>, _>>()?;
        let rows = (!keys.is_empty())
            .then(|| self.key_converter.convert_columns(&keys))
            .transpose()?;
        let mut ids = Vec::with_capacity(n);
        for i in 0..n {
            let key: &[u8] = rows.as_ref().map_or(&[], |r| r.row(i).data());
            let hash = self.hasher.hash_one(key);
            let groups = &self.groups;
            let id = match self.index.find(hash, |&g| &*groups[g as usize].key == key) {
                Some(&id) => id,
                None => self.insert_group(hash, key),
            };
            let g = &mut self.groups[id as usize];
            g.rows += sign;
            if !g.dirty {
                g.dirty = true;
                self.dirty.push(id);
            }
            ids.push(id);
        }
        let n_groups = self.groups.len();
        for (acc, call) in self.accumulators.iter_mut().zip(&self.spec.calls) {
            acc.resize(n_groups);
            let values = call.arg.evaluate(batch)?.into_array(n)?;
            let mask = match &call.filter {
                Some(f) => Some(f.evaluate(batch)?.into_array(n)?.as_boolean().clone()),
                None => None,
            };
            self.bytes = (self.bytes as i64 + acc.update(&ids, &values, mask.as_ref(), sign)?)
                .max(0) as usize;
        }
        Ok(())
    }

    fn insert_group(&mut self, hash: u64, key: &[u8]) -> u32 {
        let group = Group {
            key: key.into(),
            rows: 0,
            emitted: None,
            dirty: false,
            live: true,
        };
        self.bytes += key.len() + 64;
        let id = match self.free.pop() {
            Some(id) => {
                self.groups[id as usize] = group;
                id
            }
            None => {
                self.groups.push(group);
                (self.groups.len() - 1) as u32
            }
        };
        let groups = &self.groups;
        self.index.insert_unique(hash, id, |&g| {
            self.hasher.hash_one(&*groups[g as usize].key)
        });
        id
    }

    fn free_group(&mut self, id: u32) {
        let g = &mut self.groups[id as usize];
        g.live = false;
        let key = std::mem::take(&mut g.key);
        self.bytes = self
            .bytes
            .saturating_sub(key.len() + 64 + g.emitted.take().map_or(0, |e| e.len()));
        let hash = self.hasher.hash_one(&*key);
        if let Ok(entry) = self.index.find_entry(hash, |&g| g == id) {
            entry.remove();
        }
        for acc in &mut self.accumulators {
            self.bytes = self.bytes.saturating_sub(acc.reset(id as usize));
        }
        self.free.push(id);
    }

    /// Sends the old and new results of the groups changed since the last emission.
    fn emit(&mut self, out: &mut Output) -> Result<()> {
        let mut ids: Vec<u32> = std::mem::take(&mut self.dirty)
            .into_iter()
            .filter(|&g| std::mem::take(&mut self.groups[g as usize].dirty))
            .collect();
        if ids.is_empty() {
            return Ok(());
        }
        ids.sort_by(|&a, &b| {
            self.groups[a as usize]
                .key
                .cmp(&self.groups[b as usize].key)
        });
        let keyless = self.spec.group_exprs.is_empty();
        if let Some(&g) = ids.iter().find(|&&g| self.groups[g as usize].rows < 0) {
            return Err(Error::Internal(format!(
                "retract-aggregate: group {} had more rows taken back than added",
                g
            )));
        }
        let present: Vec<u32> = ids
            .iter()
            .copied()
            .filter(|&g| keyless || self.groups[g as usize].rows > 0)
            .collect();
        let results = self
            .accumulators
            .iter()
            .map(|a| a.finish(&present))
            .collect::<Result<Vec<_>>>()?;
        let rows = if self.accumulators.is_empty() {
            None
        } else {
            Some(self.out_converter.convert_columns(&results)?)
        };
        let result_row = |i: usize| rows.as_ref().map_or(&[][..], |r| r.row(i).data());
        let mut retract: Vec<u32> = vec![];
        let mut send: Vec<u32> = vec![];
        let mut send_at: Vec<u32> = vec![];
        let mut p = 0;
        for &g in &ids {
            let new = if present.get(p) == Some(&g) {
                p += 1;
                Some(p - 1)
            } else {
                None
            };
            let group = &self.groups[g as usize];
            let same = match (new, &group.emitted) {
                (Some(i), Some(old)) => result_row(i) == &old[..],
                _ => false,
            };
            if same {
                continue;
            }
            if group.emitted.is_some() {
                retract.push(g);
            }
            if let Some(i) = new {
                send.push(g);
                send_at.push(i as u32);
            }
        }
        if !retract.is_empty() {
            let parser = self.out_converter.parser();
            let old = self.out_converter.convert_rows(retract.iter().map(|&g| {
                parser.parse(
                    self.groups[g as usize]
                        .emitted
                        .as_deref()
                        .unwrap_or_default(),
                )
            }))?;
            let batch = self.batch(&retract, old)?;
            out.emit(Message::Retract(batch));
        }
        if !send.is_empty() {
            let take = UInt32Array::from_iter_values(send_at.iter().copied());
            let new = results
                .iter()
                .map(|c| Ok(arrow::compute::take(c, &take, None)?))
                .collect::<Result<Vec<_>>>()?;
            let batch = self.batch(&send, new)?;
            out.emit(Message::Data(batch));
        }
        for (&g, &i) in send.iter().zip(&send_at) {
            let row: Box<[u8]> = result_row(i as usize).into();
            let group = &mut self.groups[g as usize];
            self.bytes += row.len();
            if let Some(old) = group.emitted.replace(row) {
                self.bytes = self.bytes.saturating_sub(old.len());
            }
        }
        for &g in &ids {
            if !keyless && self.groups[g as usize].rows == 0 {
                self.free_group(g);
            }
        }
        Ok(())
    }

    /// Output rows: the keys of `ids`, then the aggregate columns `values`.
    fn batch(&self, ids: &[u32], values: Vec<ArrayRef>) -> Result<RecordBatch> {
        let mut columns = if self.spec.group_exprs.is_empty() {
            vec![]
        } else {
            let parser = self.key_converter.parser();
            self.key_converter.convert_rows(
                ids.iter()
                    .map(|&g| parser.parse(&self.groups[g as usize].key)),
            )?
        };
        columns.extend(values);
        let columns = columns
            .into_iter()
            .zip(self.spec.schema.fields())
            .map(|(c, f)| {
                if c.data_type() == f.data_type() {
                    Ok(c)
                } else {
                    Ok(cast(&c, f.data_type())?)
                }
            })
            .collect::<Result<Vec<_>>>()?;
        let schema = crate::rows::relax_nullability(&self.spec.schema, &columns);
        Ok(RecordBatch::try_new(schema, columns)?)
    }

    fn write_state(&self, out: &mut Vec<u8>) -> Result<()> {
        let mut e = Encoder::new(out);
        let frame = e.begin_frame(MAGIC, VERSION);
        e.bytes(self.layout.as_bytes())?;
        e.i64(self.watermark.0);
        let live: Vec<u32> = (0..self.groups.len() as u32)
            .filter(|&g| self.groups[g as usize].live)
            .collect();
        e.len_prefix(live.len());
        for &g in &live {
            let group = &self.groups[g as usize];
            e.bytes(&group.key)?;
            e.i64(group.rows);
            e.u8(group.dirty as u8);
            match &group.emitted {
                Some(row) => {
                    e.u8(1);
                    e.bytes(row)?;
                }
                None => e.u8(0),
            }
        }
        for acc in &self.accumulators {
            acc.write_state(&live, &mut e)?;
        }
        e.end_frame(frame);
        Ok(())
    }

    fn read_state(&mut self, state: &[u8]) -> Result<()> {
        let mut d = Decoder::new(state, CHECKPOINT).frame(MAGIC, VERSION)?;
        d.expect_layout(&self.layout)?;
        let watermark = Watermark(d.i64()?);
        let n = d.len_prefix(4 + 8 + 1 + 1)?;
        let mut groups: Vec<Group> = Vec::with_capacity(n);
        let mut index: HashTable<u32> = HashTable::new();
        let mut dirty = vec![];
        let mut bytes = 0;
        for g in 0..n {
            let key: Box<[u8]> = d.bytes()?.into();
            let rows = d.i64()?;
            if rows < 0 {
                return Err(d.error("a group with a negative row count"));
            }
            let is_dirty = match d.u8()? {
                0 => false,
                1 => true,
                other => return Err(d.error(format!("dirty flag {other}"))),
            };
            let emitted: Option<Box<[u8]>> = match d.u8()? {
                0 => None,
                1 => Some(d.bytes()?.into()),
                other => return Err(d.error(format!("result flag {other}"))),
            };
            if is_dirty {
                dirty.push(g as u32);
            }
            bytes += key.len() + 64 + emitted.as_ref().map_or(0, |e| e.len());
            let hash = self.hasher.hash_one(&*key);
            let taken = |&o: &u32| groups[o as usize].key == key;
            if index.find(hash, taken).is_some() {
                return Err(d.error("a group key appears twice"));
            }
            index.insert_unique(hash, g as u32, |&o| {
                self.hasher.hash_one(&*groups[o as usize].key)
            });
            groups.push(Group {
                key,
                rows,
                emitted,
                dirty: is_dirty,
                live: true,
            });
        }
        let mut restored = vec![];
        for acc in &self.accumulators {
            let (values, counts, b) = acc.read_state(&mut d, n)?;
            bytes += b;
            restored.push((values, counts));
        }
        d.finish()?;
        for (acc, (values, counts)) in self.accumulators.iter_mut().zip(restored) {
            acc.values = values;
            acc.counts = counts;
        }
        self.groups = groups;
        self.index = index;
        self.free.clear();
        self.dirty = dirty;
        self.watermark = watermark;
        self.bytes = bytes;
        Ok(())
    }
}

impl Operator for RetractAggregate {
    fn process(&mut self, message: Message, out: &mut Output) -> Result<()> {
        match message {
            Message::Data(batch) => self.on_batch(&batch, 1)?,
            Message::Retract(batch) => self.on_batch(&batch, -1)?,
            Message::Watermark(w) => {
                if w > self.watermark {
                    self.watermark = w;
                    if w == Watermark::MAX {
                        self.emit(out)?;
                    }
                }
                out.emit(Message::Watermark(w));
            }
            Message::EmitUpdates => {
                self.emit(out)?;
                out.emit(Message::EmitUpdates);
            }
            Message::EndOfInput => out.emit(Message::EndOfInput),
        }
        Ok(())
    }

    fn name(&self) -> &'static str {
        "retract-aggregate"
    }

    fn state_bytes(&self) -> usize {
        let live = self.groups.len() - self.free.len();
        self.bytes + live * 24 * self.accumulators.len()
    }

    fn snapshot(&self, out: &mut Vec<u8>) -> Result<()> {
        crate::codec::snapshot_into(out, |out| self.write_state(out))
    }

    /// The whole blob is decoded before anything is replaced: on error nothing changes.
    fn restore(&mut self, state: &[u8]) -> Result<()> {
        self.read_state(state)
    }
}

/// Values (row format, which sorts as the values do) and how often each is in.
type Counted = BTreeMap<Box<[u8]>, i64>;

/// Per group: the values an aggregate needs to subtract a row as well as add one.
enum Values {
    /// COUNT: the count is all.
    Count,
    /// SUM/AVG of integers and decimals (in the input's scale).
    Int(Vec<i128>),
    /// SUM/AVG of floats: the sum of the finite values, and how many NaN, +inf and -inf are in
    /// (a non-finite value added and taken back must leave no trace in the sum).
    Float(Vec<f64>, Vec<[i64; 3]>),
    /// MIN/MAX: the first or last value in.
    Multiset(Vec<Counted>),
    /// COUNT(DISTINCT): how many values are in.
    Distinct(Vec<Counted>),
}

struct Accumulator {
    function: AggregateFunction,
    /// The type values are cast to before folding.
    input: DataType,
    output: DataType,
    /// Per group: accepted (non-NULL, FILTER true) input values added minus taken back.
    counts: Vec<i64>,
    values: Values,
    converter: Option<RowConverter>,
}

impl Values {
    /// Names the state kind in the checkpoint layout.
    fn kind(&self) -> &'static str {
        match self {
            Values::Count => "count",
            Values::Int(_) => "i128 sum",
            Values::Float(..) => "f64 sum",
            Values::Multiset(_) => "multiset",
            Values::Distinct(_) => "distinct",
        }
    }
}

impl Accumulator {
    fn new(
        function: AggregateFunction,
        distinct: bool,
        input: &DataType,
        output: DataType,
    ) -> Result<Self> {
        use AggregateFunction::*;
        let numeric = numeric_type(input);
        let unsupported = || Error::Plan(format!("{function:?} over {input} is not supported"));
        let rows = || RowConverter::new(vec![SortField::new(input.clone())]);
        let (canonical, values, converter) = match (function, distinct) {
            (Count, false) => (input.clone(), Values::Count, None),
            (Count, true) => (input.clone(), Values::Distinct(vec![]), Some(rows()?)),
            (Sum | Avg, _) => {
                let c = numeric.ok_or_else(unsupported)?;
                let v = match c {
                    DataType::Float64 => Values::Float(vec![], vec![]),
                    _ => Values::Int(vec![]),
                };
                (c, v, None)
            }
            (Min | Max, _) => (input.clone(), Values::Multiset(vec![]), Some(rows()?)),
            (ApproxCountDistinct | ReservoirSample(_), _) => {
                return Err(Error::Plan(format!(
                    "{function:?} cannot take a value back, so it cannot be used where results are retracted"
                )))
            }
        };
        Ok(Accumulator {
            function,
            input: canonical,
            output,
            counts: vec![],
            values,
            converter,
        })
    }

    fn resize(&mut self, n: usize) {
        if self.counts.len() >= n {
            return;
        }
        self.counts.resize(n, 0);
        match &mut self.values {
            Values::Count => {}
            Values::Int(v) => v.resize(n, 0),
            Values::Float(v, odd) => {
                v.resize(n, 0.0);
                odd.resize(n, [0; 3]);
            }
            Values::Multiset(v) | Values::Distinct(v) => v.resize_with(n, BTreeMap::new),
        }
    }

    /// Clears group `g`; returns the bytes freed.
    fn reset(&mut self, g: usize) -> usize {
        if g >= self.counts.len() {
            return 0;
        }
        self.counts[g] = 0;
        match &mut self.values {
            Values::Count => 0,
            Values::Int(v) => {
                v[g] = 0;
                0
            }
            Values::Float(v, odd) => {
                v[g] = 0.0;
                odd[g] = [0; 3];
                0
            }
            Values::Multiset(v) | Values::Distinct(v) => {
                std::mem::take(&mut v[g]).keys().map(|k| k.len() + 32).sum()
            }
        }
    }

    /// Adds or takes back (`sign`) the values of groups `ids`; returns the change in bytes held.
    fn update(
        &mut self,
        ids: &[u32],
        values: &ArrayRef,
        mask: Option<&BooleanArray>,
        sign: i64,
    ) -> Result<i64> {
        let values = if values.data_type() == &self.input {
            values.clone()
        } else {
            cast(values, &self.input)?
        };
        let accepted = accepted_rows(&values, mask);
        let accept = |i: usize| accepted.as_ref().is_none_or(|a| a.value(i));
        let mut delta = 0i64;
        for (i, &g) in ids.iter().enumerate() {
            if accept(i) {
                self.counts[g as usize] += sign;
            }
        }
        match &mut self.values {
            Values::Count => {}
            Values::Int(sums) => {
                let mut add = |i: usize, g: u32, v: i128| {
                    if accept(i) {
                        sums[g as usize] += sign as i128 * v;
                    }
                };
                match values.data_type() {
                    DataType::Int64 => {
                        let v = values.as_primitive::<Int64Type>().values();
                        ids.iter()
                            .enumerate()
                            .for_each(|(i, &g)| add(i, g, v[i] as i128));
                    }
                    _ => {
                        let v = values.as_primitive::<Decimal128Type>().values();
                        ids.iter().enumerate().for_each(|(i, &g)| add(i, g, v[i]));
                    }
                }
            }
            Values::Float(sums, odd) => {
                let v = values.as_primitive::<Float64Type>().values();
                for (i, &g) in ids.iter().enumerate() {
                    if accept(i) {
                        let g = g as usize;
                        let x = v[i];
                        match x {
                            x if x.is_finite() => sums[g] += sign as f64 * x,
                            x if x.is_nan() => odd[g][0] += sign,
                            x if x > 0.0 => odd[g][1] += sign,
                            _ => odd[g][2] += sign,
                        }
                        // An emptied group starts again from an exact zero, not a rounding
                        // residue of what was added and taken back.
                        if self.counts[g] == 0 {
                            sums[g] = 0.0;
                        }
                    }
                }
            }
            Values::Multiset(sets) | Values::Distinct(sets) => {
                let converter = self.converter.as_ref().ok_or_else(no_converter)?;
                let rows = converter.convert_columns(std::slice::from_ref(&values))?;
                for (i, &g) in ids.iter().enumerate() {
                    if accept(i) {
                        delta += multiset_add(&mut sets[g as usize], rows.row(i).data(), sign)?;
                    }
                }
            }
        }
        Ok(delta)
    }

    /// The results of groups `ids`, as the output type.
    fn finish(&self, ids: &[u32]) -> Result<ArrayRef> {
        let has = |g: u32| self.counts.get(g as usize).is_some_and(|&c| c > 0);
        let count = |g: u32| self.counts.get(g as usize).copied().unwrap_or(0);
        let avg = self.function == AggregateFunction::Avg;
        let array: ArrayRef = match &self.values {
            Values::Count => Arc::new(Int64Array::from_iter_values(ids.iter().map(|&g| count(g)))),
            Values::Distinct(sets) => Arc::new(Int64Array::from_iter_values(
                ids.iter()
                    .map(|&g| sets.get(g as usize).map_or(0, |s| s.len() as i64)),
            )),
            Values::Int(sums) => {
                let sum = |g: u32| sums.get(g as usize).copied().unwrap_or(0);
                match (&self.input, &self.output, avg) {
                    (DataType::Decimal128(_, s), DataType::Decimal128(p, out_s), true) => {
                        let mul = 10i128.pow((*out_s as i32 - *s as i32).max(0) as u32);
                        Arc::new(
                            Decimal128Array::from_iter(
                                ids.iter()
                                    .map(|&g| has(g).then(|| sum(g) * mul / count(g) as i128)),
                            )
                            .with_precision_and_scale(*p, *out_s)?,
                        )
                    }
                    (DataType::Decimal128(_, s), _, false) => Arc::new(
                        Decimal128Array::from_iter(ids.iter().map(|&g| has(g).then(|| sum(g))))
                            .with_precision_and_scale(38, *s)?,
                    ),
                    (_, _, true) => Arc::new(Float64Array::from_iter(
                        ids.iter()
                            .map(|&g| has(g).then(|| sum(g) as f64 / count(g) as f64)),
                    )),
                    (_, _, false) => Arc::new(
                        ids.iter()
                            .map(|&g| has(g).then(|| sum_to_i64(sum(g))).transpose())
                            .collect::<Result<Int64Array>>()?,
                    ),
                }
            }
            Values::Float(sums, odd) => {
                // IEEE rules: NaN wins, +inf and -inf together make NaN.
                let sum = |g: u32| {
                    let g = g as usize;
                    match odd.get(g).copied().unwrap_or_default() {
                        [n, _, _] if n > 0 => f64::NAN,
                        [_, p, m] if p > 0 && m > 0 => f64::NAN,
                        [_, p, _] if p > 0 => f64::INFINITY,
                        [_, _, m] if m > 0 => f64::NEG_INFINITY,
                        _ => sums.get(g).copied().unwrap_or(0.0),
                    }
                };
                Arc::new(Float64Array::from_iter(ids.iter().map(|&g| {
                    has(g).then(|| {
                        if avg {
                            sum(g) / count(g) as f64
                        } else {
                            sum(g)
                        }
                    })
                })))
            }
            Values::Multiset(sets) => {
                let converter = self.converter.as_ref().ok_or_else(no_converter)?;
                let pick = |g: u32| -> Option<&[u8]> {
                    let set = sets.get(g as usize)?;
                    let entry = if self.function == AggregateFunction::Min {
                        set.first_key_value()
                    } else {
                        set.last_key_value()
                    };
                    entry.map(|(k, _)| &k[..])
                };
                let present: Vec<(usize, &[u8])> = ids
                    .iter()
                    .enumerate()
                    .filter_map(|(i, &g)| pick(g).map(|v| (i, v)))
                    .collect();
                let parser = converter.parser();
                let decoded = converter
                    .convert_rows(present.iter().map(|(_, v)| parser.parse(v)))?
                    .pop()
                    .ok_or_else(no_converter)?;
                let mut at: Vec<Option<u32>> = vec![None; ids.len()];
                for (k, (i, _)) in present.iter().enumerate() {
                    at[*i] = Some(k as u32);
                }
                if decoded.is_empty() {
                    arrow::array::new_null_array(&self.input, ids.len())
                } else {
                    arrow::compute::take(&decoded, &UInt32Array::from(at), None)?
                }
            }
        };
        if array.data_type() == &self.output {
            Ok(array)
        } else {
            Ok(cast(&array, &self.output)?)
        }
    }

    fn write_state(&self, live: &[u32], e: &mut Encoder<'_>) -> Result<()> {
        for &g in live {
            let g = g as usize;
            e.i64(self.counts.get(g).copied().unwrap_or(0));
            match &self.values {
                Values::Count => {}
                Values::Int(v) => e.i128(v.get(g).copied().unwrap_or(0)),
                Values::Float(v, odd) => {
                    e.f64(v.get(g).copied().unwrap_or(0.0));
                    for n in odd.get(g).copied().unwrap_or_default() {
                        e.i64(n);
                    }
                }
                Values::Multiset(v) | Values::Distinct(v) => {
                    let empty = BTreeMap::new();
                    let set = v.get(g).unwrap_or(&empty);
                    e.len_prefix(set.len());
                    for (value, n) in set {
                        e.bytes(value)?;
                        e.i64(*n);
                    }
                }
            }
        }
        Ok(())
    }

    /// Reads `n` groups' state: (values, counts, bytes held).
    fn read_state(&self, d: &mut Decoder<'_>, n: usize) -> Result<(Values, Vec<i64>, usize)> {
        let mut counts = Vec::with_capacity(n);
        let mut bytes = 0;
        let mut values = match &self.values {
            Values::Count => Values::Count,
            Values::Int(_) => Values::Int(Vec::with_capacity(n)),
            Values::Float(..) => Values::Float(Vec::with_capacity(n), Vec::with_capacity(n)),
            Values::Multiset(_) => Values::Multiset(Vec::with_capacity(n)),
            Values::Distinct(_) => Values::Distinct(Vec::with_capacity(n)),
        };
        for _ in 0..n {
            let c = d.i64()?;
            if c < 0 {
                return Err(d.error("a negative value count"));
            }
            counts.push(c);
            match &mut values {
                Values::Count => {}
                Values::Int(v) => v.push(d.i128()?),
                Values::Float(v, odd) => {
                    v.push(d.f64()?);
                    odd.push([d.i64()?, d.i64()?, d.i64()?]);
                }
                Values::Multiset(v) | Values::Distinct(v) => {
                    let (set, b) = read_counted(d)?;
                    bytes += b;
                    v.push(set);
                }
            }
        }
        Ok((values, counts, bytes))
    }
}

/// Reads a multiset written by `write_state` (u64 m, m × {bytes, i64 > 0}), and the bytes it
/// holds.
fn read_counted(d: &mut Decoder<'_>) -> Result<(Counted, usize)> {
    let m = d.len_prefix(4 + 8)?;
    let mut set = BTreeMap::new();
    let mut bytes = 0;
    for _ in 0..m {
        let value: Box<[u8]> = d.bytes()?.into();
        bytes += value.len() + 32;
        let k = d.i64()?;
        if k <= 0 {
            return Err(d.error("a value held a non-positive number of times"));
        }
        set.insert(value, k);
    }
    Ok((set, bytes))
}

/// Adds `sign` occurrences of `value`; returns the change in bytes held.
fn multiset_add(set: &mut Counted, value: &[u8], sign: i64) -> Result<i64> {
    match set.get_mut(value) {
        Some(c) => {
            *c += sign;
            if *c == 0 {
                set.remove(value);
                return Ok(-(value.len() as i64 + 32));
            }
            Ok(0)
        }
        None if sign > 0 => {
            set.insert(value.into(), sign);
            Ok(value.len() as i64 + 32)
        }
        None => Err(taken_back_twice()),
    }
}

fn taken_back_twice() -> Error {
    Error::Internal("retract-aggregate: a value was taken back that was never added".into())
}

fn no_converter() -> Error {
    Error::Internal("retract-aggregate: a value accumulator without its row converter".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::StringArray;
    use arrow::datatypes::{Field, Schema};
    use arrow::util::display::array_value_to_string;
    use datafusion::physical_expr::expressions::col;
    use flowline_core::plan::{AggregateCall, OutputMode};

    /// GROUP BY k: COUNT(*), SUM(v), MIN(v), MAX(v), COUNT(DISTINCT v), AVG(v).
    fn spec() -> AggregateSpec {
        let input = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Utf8, true),
            Field::new("v", DataType::Int64, true),
        ]));
        let v = col("v", &input).unwrap();
        let call = |function, distinct| AggregateCall {
            function,
            arg: v.clone(),
            distinct,
            filter: None,
        };
        use AggregateFunction::*;
        AggregateSpec {
            group_exprs: vec![col("k", &input).unwrap()],
            window: None,
            output: OutputMode::Update,
            allowed_lateness: 0,
            state_ttl: None,
            session_keys: vec![],
            calls: vec![
                call(Count, false),
                call(Sum, false),
                call(Min, false),
                call(Max, false),
                call(Count, true),
                call(Avg, false),
            ],
            schema: Arc::new(Schema::new(vec![
                Field::new("k", DataType::Utf8, true),
                Field::new("n", DataType::Int64, true),
                Field::new("sum", DataType::Int64, true),
                Field::new("min", DataType::Int64, true),
                Field::new("max", DataType::Int64, true),
                Field::new("distinct", DataType::Int64, true),
                Field::new("avg", DataType::Float64, true),
            ])),
            input_schema: input,
        }
    }

    fn batch(rows: &[(&str, Option<i64>)]) -> RecordBatch {
        RecordBatch::try_new(
            spec().input_schema,
            vec![
                Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.0))),
                Arc::new(Int64Array::from_iter(rows.iter().map(|r| r.1))),
            ],
        )
        .unwrap()
    }

    /// What a message list holds, one line per row: `+` data, `-` retraction.
    fn lines(messages: &[Message]) -> Vec<String> {
        let mut out = vec![];
        for m in messages {
            let (sign, b) = match m {
                Message::Data(b) => ("+", b),
                Message::Retract(b) => ("-", b),
                _ => continue,
            };
            for i in 0..b.num_rows() {
                let cells: Vec<String> = b
                    .columns()
                    .iter()
                    .map(|c| array_value_to_string(c, i).unwrap())
                    .collect();
                out.push(format!("{sign}{}", cells.join(",")));
            }
        }
        out
    }

    fn step(op: &mut RetractAggregate, messages: Vec<Message>) -> Vec<String> {
        let mut out = Output::default();
        for m in messages {
            op.process(m, &mut out).unwrap();
        }
        lines(&out.messages)
    }

    /// Three emissions: first results; `a` loses its 5 and gains a 3; `b` loses its only row.
    fn script() -> Vec<Vec<Message>> {
        vec![
            vec![
                Message::Data(batch(&[("a", Some(1)), ("a", Some(5)), ("b", Some(2))])),
                Message::Data(batch(&[("a", None)])),
                Message::EmitUpdates,
            ],
            vec![
                Message::Retract(batch(&[("a", Some(5))])),
                Message::Data(batch(&[("a", Some(3))])),
                Message::EmitUpdates,
            ],
            vec![
                Message::Retract(batch(&[("b", Some(2))])),
                Message::Data(batch(&[("c", Some(7))])),
                Message::Retract(batch(&[("c", Some(7))])),
                Message::EmitUpdates,
            ],
        ]
    }

    #[test]
    fn taking_rows_back_retracts_the_old_result_and_deletes_emptied_groups() {
        let mut op = RetractAggregate::new(spec()).unwrap();
        let steps = script();
        let got: Vec<Vec<String>> = steps.into_iter().map(|s| step(&mut op, s)).collect();
        assert_eq!(got[0], ["+a,2,6,1,5,2,3.0", "+b,1,2,2,2,1,2.0"]);
        // Old result first, then the new one; MIN/MAX come from what is still in.
        assert_eq!(got[1], ["-a,2,6,1,5,2,3.0", "+a,2,4,1,3,2,2.0"]);
        // b is deleted; c came and went within one emission: nothing was sent for it.
        assert_eq!(got[2], ["-b,1,2,2,2,1,2.0"]);
        assert_eq!(op.groups.iter().filter(|g| g.live).count(), 1);
        // A tick without changes sends nothing.
        assert!(step(&mut op, vec![Message::EmitUpdates]).is_empty());
    }

    /// Snapshot after any message (dirty groups included), restore into a fresh operator and
    /// go on: the same output as a run never stopped, and the same state size.
    fn restores_anywhere(spec: fn() -> AggregateSpec, messages: Vec<Message>) {
        let mut whole = RetractAggregate::new(spec()).unwrap();
        let expected = step(&mut whole, messages.clone());
        for cut in 0..=messages.len() {
            let mut first = RetractAggregate::new(spec()).unwrap();
            let mut got = step(&mut first, messages[..cut].to_vec());
            let mut state = vec![];
            first.snapshot(&mut state).unwrap();
            let mut restored = RetractAggregate::new(spec()).unwrap();
            restored.restore(&state).unwrap();
            assert_eq!(restored.state_bytes(), first.state_bytes(), "cut {cut}");
            got.extend(step(&mut restored, messages[cut..].to_vec()));
            assert_eq!(got, expected, "restored after message {cut}");
        }
    }

    #[test]
    fn a_restored_operator_continues_as_if_never_stopped() {
        restores_anywhere(spec, script().concat());
    }

    /// GROUP BY k: MIN(flag), COUNT(DISTINCT flag), SUM(x): values 1 byte long in row format
    /// (the smallest checkpoint entries) and floats that are not finite.
    fn odd_spec() -> AggregateSpec {
        let input = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Utf8, true),
            Field::new("flag", DataType::Boolean, true),
            Field::new("x", DataType::Float64, true),
        ]));
        let call = |function, column: &str, distinct| AggregateCall {
            function,
            arg: col(column, &input).unwrap(),
            distinct,
            filter: None,
        };
        AggregateSpec {
            group_exprs: vec![col("k", &input).unwrap()],
            window: None,
            output: OutputMode::Update,
            allowed_lateness: 0,
            state_ttl: None,
            session_keys: vec![],
            calls: vec![
                call(AggregateFunction::Min, "flag", false),
                call(AggregateFunction::Count, "flag", true),
                call(AggregateFunction::Sum, "x", false),
            ],
            schema: Arc::new(Schema::new(vec![
                Field::new("k", DataType::Utf8, true),
                Field::new("min", DataType::Boolean, true),
                Field::new("flags", DataType::Int64, true),
                Field::new("sum", DataType::Float64, true),
            ])),
            input_schema: input,
        }
    }

    fn odd_batch(rows: &[(&str, bool, f64)]) -> RecordBatch {
        RecordBatch::try_new(
            odd_spec().input_schema,
            vec![
                Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.0))),
                Arc::new(arrow::array::BooleanArray::from_iter(
                    rows.iter().map(|r| Some(r.1)),
                )),
                Arc::new(Float64Array::from_iter_values(rows.iter().map(|r| r.2))),
            ],
        )
        .unwrap()
    }

    fn odd_script() -> Vec<Message> {
        vec![
            Message::Data(odd_batch(&[("a", false, 1.0), ("a", true, f64::INFINITY)])),
            Message::Data(odd_batch(&[("b", true, 0.1), ("b", true, 0.2)])),
            Message::EmitUpdates,
            Message::Retract(odd_batch(&[("a", true, f64::INFINITY)])),
            Message::Retract(odd_batch(&[("b", true, 0.1), ("b", true, 0.2)])),
            Message::Data(odd_batch(&[("b", false, 0.5)])),
            Message::EmitUpdates,
        ]
    }

    #[test]
    fn short_values_and_non_finite_floats_are_taken_back_exactly_and_restore() {
        let mut op = RetractAggregate::new(odd_spec()).unwrap();
        let got = step(&mut op, odd_script());
        assert_eq!(
            got,
            [
                "+a,false,2,inf",
                "+b,true,1,0.30000000000000004",
                "-a,false,2,inf",
                "-b,true,1,0.30000000000000004",
                // inf taken back leaves the finite sum; b emptied starts again from 0.
                "+a,false,1,1.0",
                "+b,false,1,0.5",
            ]
        );
        restores_anywhere(odd_spec, odd_script());
    }

    #[test]
    fn corrupt_or_foreign_state_is_refused_and_changes_nothing() {
        let mut op = RetractAggregate::new(spec()).unwrap();
        for s in script().into_iter().take(2) {
            step(&mut op, s);
        }
        let mut state = vec![];
        op.snapshot(&mut state).unwrap();
        let before = op.state_bytes();
        for at in [0, 5, state.len() / 2, state.len() - 1] {
            let mut bad = state.clone();
            bad[at] ^= 0x40;
            assert!(op.restore(&bad).is_err(), "flipped byte {at} accepted");
        }
        assert!(op.restore(&state[..state.len() - 3]).is_err());
        assert_eq!(op.state_bytes(), before);
        let mut other = spec();
        other.calls.pop();
        let mut narrower = RetractAggregate::new(other).unwrap();
        let err = narrower.restore(&state).unwrap_err().to_string();
        assert!(err.contains("another plan"), "{err}");
    }

    #[test]
    fn taking_back_a_row_never_added_is_an_error() {
        let mut op = RetractAggregate::new(spec()).unwrap();
        let mut out = Output::default();
        let err = op
            .process(Message::Retract(batch(&[("a", Some(1))])), &mut out)
            .unwrap_err();
        assert!(err.to_string().contains("never added"), "{err}");
    }
}
