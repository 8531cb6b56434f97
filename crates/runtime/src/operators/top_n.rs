//! Top-N over a whole input: `ROW_NUMBER() OVER (PARTITION BY keys ORDER BY cols) AS rn ...
//! WHERE rn <= n`, without a window (Nexmark q19: the ten highest bids of each auction).
//!
//! Each partition keeps its best `n` rows, sorted by the ORDER BY columns, ties by arrival. A
//! row that does not make its partition's top `n` is dropped (that is the query's meaning); a
//! row that does pushes the last one out. The input is append-only, so a rank, once filled,
//! stays filled: in update mode each tick emits, for every partition that changed, its rows
//! from the first changed rank down, with their row numbers, and a downstream upsert by
//! (partition, row number) ends with exactly the batch answer. In append mode (batch) the
//! whole top `n` of every partition is emitted once, at the end of input.
//!
//! State TTL (`table.exec.state.ttl`, update mode): a partition whose top did not change while
//! the watermark advanced more than the TTL past the watermark of its last change is dropped,
//! after its unemitted changes are emitted. A later row of its key starts a new top: its ranks
//! overwrite the old ones from rank 1 (ranks it does not fill keep their old rows downstream).
//! The clock is the watermark, so restores and replays expire the same partitions.
//!
//! Invariants: results depend only on the rows and their arrival order, never on batch sizes
//! or tick timing; partitions are emitted in key order; state is at most `n` rows per partition.
//!
//! Checkpoints: a frame of the [`codec`](crate::codec) (tag `FTPN`, version 1): the layout,
//! the next arrival number, with a TTL the watermark, then one Arrow IPC stream of the kept rows
//! (partition by partition, best first) with their arrival number, whether they changed since
//! the last emission and, with a TTL, the watermark of their partition's last change.

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap, HashMap};
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, Int64Array, RecordBatch, UInt64Array};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::row::{OwnedRow, RowConverter, SortField};
use flowline_core::plan::{OutputMode, TopNSpec};
use flowline_core::{Error, Message, Operator, Output, Result, Watermark};

use crate::codec::{batch_from_ipc, batch_to_ipc, Decoder, Encoder};

const MAGIC: [u8; 4] = *b"FTPN";
const VERSION: u8 = 1;
const CHECKPOINT: &str = "top-n checkpoint";

struct Entry {
    order: OwnedRow,
    seq: u64,
    row: OwnedRow,
}

#[derive(Default)]
struct Partition {
    /// Best first; at most `limit`.
    entries: Vec<Entry>,
    /// The first rank (0-based) that changed since the partition was last emitted.
    changed_from: Option<usize>,
    /// State TTL: the watermark under which its top last changed (`i64::MIN`: before the first
    /// watermark).
    touched: i64,
}

pub struct TopN {
    spec: TopNSpec,
    input: SchemaRef,
    keys: RowConverter,
    order: RowConverter,
    rows: RowConverter,
    partitions: HashMap<Vec<u8>, Partition>,
    /// Partitions with changes not yet emitted (exactly those whose `changed_from` is set).
    dirty: BTreeSet<Vec<u8>>,
    next_seq: u64,
    /// The maximum watermark came: everything was emitted.
    ended: bool,
    bytes: usize,
    layout: String,
    /// The last watermark received (`i64::MIN` before the first).
    watermark: i64,
    /// State TTL: one entry per partition, (a watermark at or before its last change, key),
    /// earliest first. When an entry comes due, the partition is dropped if its top has not
    /// changed since; otherwise the entry is put back at its last change.
    expiry: BinaryHeap<Reverse<(i64, Vec<u8>)>>,
    /// Bytes the `expiry` entries hold.
    expiry_bytes: usize,
}

impl TopN {
    pub fn new(spec: TopNSpec) -> Result<Self> {
        let n = spec.schema.fields().len() - 1;
        let input = Arc::new(Schema::new(spec.schema.fields()[..n].to_vec()));
        let key_types = spec
            .partition
            .iter()
            .map(|e| Ok(e.data_type(&input)?))
            .collect::<Result<Vec<DataType>>>()?;
        let order_fields = spec
            .order
            .iter()
            .map(|s| {
                Ok(SortField::new_with_options(
                    s.expr.data_type(&input)?,
                    s.options,
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        let layout = format!(
            "top {}; {}{}; keys {:?}; order {:?}; input {:?}",
            spec.limit,
            spec.output,
            match spec.state_ttl {
                Some(ttl) => format!(", state ttl {ttl} ms"),
                None => String::new(),
            },
            key_types,
            spec.order
                .iter()
                .map(|s| (
                    s.expr.to_string(),
                    s.options.descending,
                    s.options.nulls_first
                ))
                .collect::<Vec<_>>(),
            input
                .fields()
                .iter()
                .map(|f| f.data_type())
                .collect::<Vec<_>>()
        );
        Ok(TopN {
            keys: RowConverter::new(key_types.into_iter().map(SortField::new).collect())?,
            order: RowConverter::new(order_fields)?,
            rows: crate::rows::row_converter(&input)?,
            input,
            spec,
            partitions: HashMap::new(),
            dirty: BTreeSet::new(),
            next_seq: 0,
            ended: false,
            bytes: 0,
            layout,
            watermark: i64::MIN,
            expiry: BinaryHeap::new(),
            expiry_bytes: 0,
        })
    }

    /// Partition keys (`None`: a global top-N, every row in one partition), order keys and rows.
    fn evaluate(
        &self,
        batch: &RecordBatch,
    ) -> Result<(Option<arrow::row::Rows>, arrow::row::Rows, arrow::row::Rows)> {
        let n = batch.num_rows();
        let keys = self
            .spec
            .partition
            .iter()
            .map(|e| Ok(e.evaluate(batch)?.into_array(n)?))
            .collect::<Result<Vec<ArrayRef>>>()?;
        let order = self
            .spec
            .order
            .iter()
            .map(|s| Ok(s.expr.evaluate(batch)?.into_array(n)?))
            .collect::<Result<Vec<ArrayRef>>>()?;
        let keys = if keys.is_empty() {
            None
        } else {
            Some(self.keys.convert_columns(&keys)?)
        };
        Ok((
            keys,
            self.order.convert_columns(&order)?,
            self.rows.convert_columns(batch.columns())?,
        ))
    }

    fn key_of(keys: &Option<arrow::row::Rows>, i: usize) -> Vec<u8> {
        keys.as_ref()
            .map_or_else(Vec::new, |k| k.row(i).as_ref().to_vec())
    }

    fn on_batch(&mut self, batch: RecordBatch) -> Result<()> {
        let n = batch.num_rows();
        if n == 0 {
            return Ok(());
        }
        let (keys, order, rows) = self.evaluate(&batch)?;
        let limit = self.spec.limit as usize;
        for i in 0..n {
            // Borrowed: a row that does not make its partition's top allocates nothing.
            let key: &[u8] = keys.as_ref().map_or(&[], |k| k.row(i).data());
            let seq = self.next_seq;
            self.next_seq += 1;
            if !self.partitions.contains_key(key) {
                self.partitions.insert(
                    key.to_vec(),
                    Partition {
                        touched: self.watermark,
                        ..Partition::default()
                    },
                );
                if self.spec.state_ttl.is_some() {
                    self.expiry.push(Reverse((self.watermark, key.to_vec())));
                    self.expiry_bytes += expiry_entry_size(key);
                }
            }
            let Some(part) = self.partitions.get_mut(key) else {
                continue;
            };
            let o = order.row(i);
            // After every row that is not worse: ties keep arrival order.
            let at = part.entries.partition_point(|e| e.order.row() <= o);
            if at >= limit {
                continue;
            }
            let entry = Entry {
                order: o.owned(),
                seq,
                row: rows.row(i).owned(),
            };
            self.bytes += entry_size(&entry.order, &entry.row);
            part.entries.insert(at, entry);
            if part.entries.len() > limit {
                if let Some(out) = part.entries.pop() {
                    self.bytes = self.bytes.saturating_sub(entry_size(&out.order, &out.row));
                }
            }
            if part.changed_from.is_none() {
                self.dirty.insert(key.to_vec());
            }
            part.changed_from = Some(part.changed_from.map_or(at, |c| c.min(at)));
            part.touched = self.watermark;
        }
        Ok(())
    }

    /// State TTL: drops the partitions whose top did not change while the watermark advanced
    /// more than the TTL, emitting their unemitted changes first. Changes before the first
    /// watermark count as made under it. Nothing expires at the end of input.
    fn expire(&mut self, first: bool, out: &mut Output) -> Result<()> {
        let Some(ttl) = self.spec.state_ttl else {
            return Ok(());
        };
        let wm = self.watermark;
        if wm == i64::MAX {
            return Ok(());
        }
        if first {
            // Their entries (at i64::MIN) come due now and are put back at this watermark.
            for part in self.partitions.values_mut() {
                if part.touched == i64::MIN {
                    part.touched = wm;
                }
            }
        }
        let mut gone = vec![];
        while let Some(Reverse((stamp, _))) = self.expiry.peek() {
            if stamp.saturating_add(ttl) >= wm {
                break;
            }
            let Some(Reverse((_, key))) = self.expiry.pop() else {
                break;
            };
            match self.partitions.get(&key).map(|p| p.touched) {
                Some(t) if t.saturating_add(ttl) >= wm => self.expiry.push(Reverse((t, key))),
                Some(_) => {
                    self.expiry_bytes = self.expiry_bytes.saturating_sub(expiry_entry_size(&key));
                    gone.push(key);
                }
                None => {
                    self.expiry_bytes = self.expiry_bytes.saturating_sub(expiry_entry_size(&key));
                }
            }
        }
        if gone.is_empty() {
            return Ok(());
        }
        gone.sort();
        let dirty: Vec<Vec<u8>> = gone
            .iter()
            .filter(|k| self.dirty.remove(*k))
            .cloned()
            .collect();
        self.emit_partitions(dirty, false, out)?;
        for key in gone {
            if let Some(part) = self.partitions.remove(&key) {
                for e in &part.entries {
                    self.bytes = self.bytes.saturating_sub(entry_size(&e.order, &e.row));
                }
            }
        }
        Ok(())
    }

    /// Emits the changed ranks of the dirty partitions (`all`: every rank of every partition).
    fn emit(&mut self, all: bool, out: &mut Output) -> Result<()> {
        let keys: Vec<Vec<u8>> = if all {
            let mut k: Vec<Vec<u8>> = self.partitions.keys().cloned().collect();
            k.sort();
            self.dirty.clear();
            k
        } else {
            std::mem::take(&mut self.dirty).into_iter().collect()
        };
        self.emit_partitions(keys, all, out)
    }

    /// Emits the changed ranks of the partitions `keys` (in key order; `all`: every rank).
    fn emit_partitions(&mut self, keys: Vec<Vec<u8>>, all: bool, out: &mut Output) -> Result<()> {
        let mut ranges = vec![];
        for key in keys {
            let Some(part) = self.partitions.get_mut(&key) else {
                continue;
            };
            let from = match (all, part.changed_from.take()) {
                (true, _) => 0,
                (false, Some(c)) => c,
                (false, None) => continue,
            };
            ranges.push((key, from));
        }
        let mut rows = vec![];
        let mut numbers = vec![];
        for (key, from) in &ranges {
            for (i, e) in self.partitions[key].entries.iter().enumerate().skip(*from) {
                rows.push(e.row.row());
                numbers.push(i as u64 + 1);
            }
        }
        if rows.is_empty() {
            return Ok(());
        }
        let mut columns = self.rows.convert_rows(rows)?;
        let number: ArrayRef = Arc::new(UInt64Array::from(numbers));
        let wanted = self.spec.schema.fields()[columns.len()].data_type();
        columns.push(if number.data_type() == wanted {
            number
        } else {
            cast(&number, wanted)?
        });
        let schema = crate::rows::relax_nullability(&self.spec.schema, &columns);
        out.emit(Message::Data(RecordBatch::try_new(schema, columns)?));
        Ok(())
    }

    fn state_schema(&self) -> SchemaRef {
        let mut fields: Vec<Field> = self
            .input
            .fields()
            .iter()
            .enumerate()
            .map(|(i, f)| Field::new(format!("c{i}"), f.data_type().clone(), true))
            .collect();
        fields.push(Field::new("seq", DataType::Int64, false));
        fields.push(Field::new("changed", DataType::Boolean, false));
        if self.spec.state_ttl.is_some() {
            fields.push(Field::new("touched", DataType::Int64, false));
        }
        Arc::new(Schema::new(fields))
    }

    fn write_state(&self, out: &mut Vec<u8>) -> Result<()> {
        let mut keys: Vec<&Vec<u8>> = self.partitions.keys().collect();
        keys.sort();
        let ttl = self.spec.state_ttl.is_some();
        let (mut rows, mut seqs, mut changed, mut touched) = (vec![], vec![], vec![], vec![]);
        for key in keys {
            let part = &self.partitions[key];
            for (i, e) in part.entries.iter().enumerate() {
                rows.push(e.row.row());
                seqs.push(e.seq as i64);
                changed.push(part.changed_from.is_some_and(|c| i >= c));
                if ttl {
                    touched.push(part.touched);
                }
            }
        }
        let mut columns = if rows.is_empty() {
            self.input
                .fields()
                .iter()
                .map(|f| arrow::array::new_empty_array(f.data_type()))
                .collect()
        } else {
            self.rows.convert_rows(rows)?
        };
        columns.push(Arc::new(Int64Array::from(seqs)));
        columns.push(Arc::new(BooleanArray::from(changed)));
        if self.spec.state_ttl.is_some() {
            columns.push(Arc::new(Int64Array::from(touched)));
        }
        let batch = RecordBatch::try_new(self.state_schema(), columns)?;
        let mut e = Encoder::new(out);
        let frame = e.begin_frame(MAGIC, VERSION);
        e.bytes(self.layout.as_bytes())?;
        e.u64(self.next_seq);
        if self.spec.state_ttl.is_some() {
            e.i64(self.watermark);
        }
        e.bytes(&batch_to_ipc(&batch)?)?;
        e.end_frame(frame);
        Ok(())
    }

    fn read_state(&mut self, state: &[u8]) -> Result<()> {
        let mut d = Decoder::new(state, CHECKPOINT).frame(MAGIC, VERSION)?;
        d.expect_layout(&self.layout)?;
        let next_seq = d.u64()?;
        let ttl = self.spec.state_ttl.is_some();
        let watermark = if ttl { d.i64()? } else { i64::MIN };
        let kept = batch_from_ipc(d.bytes()?, CHECKPOINT, &self.state_schema())?;
        d.finish()?;
        let width = self.input.fields().len();
        // By position: batch_from_ipc checked the types, and NULLs the input schema calls
        // impossible may be in the rows all the same (see rows::relax_nullability).
        let input = kept.project(&(0..width).collect::<Vec<_>>())?;
        let (keys, order, rows) = self.evaluate(&input)?;
        let seqs = kept
            .column(width)
            .as_primitive::<arrow::datatypes::Int64Type>();
        let changed = kept.column(width + 1).as_boolean();
        let touched = ttl.then(|| {
            kept.column(width + 2)
                .as_primitive::<arrow::datatypes::Int64Type>()
        });
        let mut partitions: HashMap<Vec<u8>, Partition> = HashMap::new();
        let mut dirty = BTreeSet::new();
        let mut bytes = 0;
        for i in 0..kept.num_rows() {
            let key = Self::key_of(&keys, i);
            let part = partitions.entry(key.clone()).or_default();
            if let Some(t) = touched {
                part.touched = t.value(i);
            }
            if changed.value(i) {
                part.changed_from.get_or_insert(part.entries.len());
                dirty.insert(key);
            }
            let entry = Entry {
                order: order.row(i).owned(),
                seq: seqs.value(i) as u64,
                row: rows.row(i).owned(),
            };
            bytes += entry_size(&entry.order, &entry.row);
            part.entries.push(entry);
            if part.entries.len() > self.spec.limit as usize {
                return Err(d_error("a partition holds more rows than the limit"));
            }
        }
        self.expiry = BinaryHeap::new();
        self.expiry_bytes = 0;
        if ttl {
            for (key, part) in &partitions {
                self.expiry.push(Reverse((part.touched, key.clone())));
                self.expiry_bytes += expiry_entry_size(key);
            }
        }
        self.partitions = partitions;
        self.dirty = dirty;
        self.next_seq = next_seq;
        self.bytes = bytes;
        self.watermark = watermark;
        Ok(())
    }
}

fn d_error(m: &str) -> Error {
    Error::Internal(format!("{CHECKPOINT}: {m}"))
}

/// Bytes of a TTL entry of the partition `key`.
fn expiry_entry_size(key: &[u8]) -> usize {
    key.len() + 32
}

fn entry_size(order: &OwnedRow, row: &OwnedRow) -> usize {
    order.as_ref().len() + row.as_ref().len() + 64
}

impl Operator for TopN {
    fn process(&mut self, message: Message, out: &mut Output) -> Result<()> {
        match message {
            Message::Data(batch) => self.on_batch(batch)?,
            Message::Watermark(w) => {
                let first = self.watermark == i64::MIN;
                self.watermark = w.0;
                self.expire(first, out)?;
                // Watermarks are monotone: the maximum comes once.
                if w == Watermark::MAX && !self.ended {
                    self.ended = true;
                    self.emit(self.spec.output == OutputMode::Append, out)?;
                }
                out.emit(Message::Watermark(w));
            }
            Message::EmitUpdates => {
                if self.spec.output == OutputMode::Update {
                    self.emit(false, out)?;
                }
                out.emit(Message::EmitUpdates);
            }
            Message::EndOfInput => out.emit(Message::EndOfInput),
            Message::Retract(_) => return Err(Error::cannot_retract(self.name())),
        }
        Ok(())
    }

    fn name(&self) -> &'static str {
        "top-n"
    }

    fn state_bytes(&self) -> usize {
        self.bytes + self.expiry_bytes
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
    use arrow::array::StringArray;
    use datafusion::physical_expr::expressions::col;
    use datafusion::physical_expr::PhysicalSortExpr;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    /// (auction, price); the top `limit` prices per auction, highest first.
    fn spec(limit: u64, output: OutputMode, partitioned: bool) -> TopNSpec {
        let input = Schema::new(vec![
            Field::new("auction", DataType::Utf8, true),
            Field::new("price", DataType::Int64, true),
            Field::new("seq", DataType::Int64, false),
        ]);
        let mut fields = input.fields().to_vec();
        fields.push(Arc::new(Field::new("rn", DataType::UInt64, false)));
        TopNSpec {
            partition: if partitioned {
                vec![col("auction", &input).unwrap()]
            } else {
                vec![]
            },
            order: vec![PhysicalSortExpr {
                expr: col("price", &input).unwrap(),
                options: arrow::compute::SortOptions {
                    descending: true,
                    nulls_first: false,
                },
            }],
            limit,
            output,
            schema: Arc::new(Schema::new(fields)),
            state_ttl: None,
        }
    }

    type Row = (Option<&'static str>, Option<i64>);

    fn batch(rows: &[(usize, Row)]) -> Message {
        let input = Arc::new(Schema::new(vec![
            Field::new("auction", DataType::Utf8, true),
            Field::new("price", DataType::Int64, true),
            Field::new("seq", DataType::Int64, false),
        ]));
        Message::Data(
            RecordBatch::try_new(
                input,
                vec![
                    Arc::new(StringArray::from_iter(rows.iter().map(|r| r.1 .0))),
                    Arc::new(Int64Array::from_iter(rows.iter().map(|r| r.1 .1))),
                    Arc::new(Int64Array::from_iter_values(
                        rows.iter().map(|r| r.0 as i64),
                    )),
                ],
            )
            .unwrap(),
        )
    }

    /// (partition, rn) → (price, seq), as a downstream upsert holds it.
    type Upserted = BTreeMap<(Option<String>, u64), (Option<i64>, i64)>;

    fn run(op: &mut TopN, messages: &[Message], into: &mut Upserted, partitioned: bool) {
        for m in messages {
            let mut out = Output::default();
            op.process(m.clone(), &mut out).unwrap();
            for m in out.messages {
                let Message::Data(b) = m else { continue };
                let a = b.column(0).as_string::<i32>();
                let p = b.column(1).as_primitive::<arrow::datatypes::Int64Type>();
                let s = b.column(2).as_primitive::<arrow::datatypes::Int64Type>();
                let rn = b.column(3).as_primitive::<arrow::datatypes::UInt64Type>();
                for i in 0..b.num_rows() {
                    let key = partitioned.then(|| a.is_valid(i).then(|| a.value(i).to_string()));
                    into.insert(
                        (key.flatten(), rn.value(i)),
                        (p.is_valid(i).then(|| p.value(i)), s.value(i)),
                    );
                }
            }
        }
    }

    /// The batch answer: sort each partition by price descending (NULLs last), ties by arrival.
    fn model(rows: &[Row], limit: u64, partitioned: bool) -> Upserted {
        let mut parts: BTreeMap<Option<String>, Vec<(Option<i64>, i64)>> = BTreeMap::new();
        for (seq, r) in rows.iter().enumerate() {
            let key = if partitioned {
                r.0.map(str::to_string)
            } else {
                None
            };
            parts.entry(key).or_default().push((r.1, seq as i64));
        }
        let mut out = Upserted::new();
        for (k, mut v) in parts {
            v.sort_by(|a, b| match (a.0, b.0) {
                (Some(x), Some(y)) => y.cmp(&x).then(a.1.cmp(&b.1)),
                (Some(_), None) => std::cmp::Ordering::Less,
                (None, Some(_)) => std::cmp::Ordering::Greater,
                (None, None) => a.1.cmp(&b.1),
            });
            for (i, e) in v.into_iter().take(limit as usize).enumerate() {
                out.insert((k.clone(), i as u64 + 1), e);
            }
        }
        out
    }

    fn row() -> impl Strategy<Value = Row> {
        (
            prop::option::weighted(0.9, prop::sample::select(vec!["a", "b", "c"])),
            prop::option::weighted(0.9, 0i64..20),
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 96, failure_persistence: None, ..ProptestConfig::default() })]

        /// Update mode, ticks anywhere, a restore anywhere: upserting by (partition, rn) ends
        /// with the batch Top-N; append mode emits exactly it once, at the end.
        #[test]
        fn upserted_updates_equal_the_batch_top_n(
            rows in prop::collection::vec(row(), 0..80),
            limit in 1u64..5,
            partitioned in any::<bool>(),
            batch_size in 1usize..10,
            tick_every in 1usize..4,
            cut in any::<prop::sample::Index>(),
        ) {
            let numbered: Vec<(usize, Row)> = rows.iter().copied().enumerate().collect();
            let mut messages = vec![];
            for (i, chunk) in numbered.chunks(batch_size).enumerate() {
                messages.push(batch(chunk));
                if i % tick_every == 0 {
                    messages.push(Message::EmitUpdates);
                }
            }
            messages.push(Message::Watermark(Watermark::MAX));
            messages.push(Message::EndOfInput);
            let expected = model(&rows, limit, partitioned);

            let mut append = TopN::new(spec(limit, OutputMode::Append, partitioned)).unwrap();
            let mut got = Upserted::new();
            run(&mut append, &messages, &mut got, partitioned);
            prop_assert_eq!(&got, &expected);

            let cut = cut.index(messages.len() + 1);
            let mut before = TopN::new(spec(limit, OutputMode::Update, partitioned)).unwrap();
            let mut got = Upserted::new();
            run(&mut before, &messages[..cut], &mut got, partitioned);
            let mut blob = vec![];
            before.snapshot(&mut blob).unwrap();
            let mut after = TopN::new(spec(limit, OutputMode::Update, partitioned)).unwrap();
            after.restore(&blob).unwrap();
            prop_assert_eq!(after.state_bytes(), before.state_bytes());
            run(&mut after, &messages[cut..], &mut got, partitioned);
            prop_assert_eq!(&got, &expected);
            // State is at most `limit` rows per partition.
            prop_assert!(after.partitions.values().all(|p| p.entries.len() <= limit as usize));
            // Another limit is another plan.
            let mut other = TopN::new(spec(limit + 1, OutputMode::Update, partitioned)).unwrap();
            prop_assert!(other.restore(&blob).is_err());
        }
    }

    /// With a TTL, a partition whose top did not change while the watermark advanced more than
    /// the TTL is dropped, its unemitted change emitted first; a later row of its key starts a
    /// new top at rank 1; a checkpoint keeps when each partition last changed.
    #[test]
    fn state_ttl_drops_partitions_whose_top_did_not_change() {
        let mut s = spec(2, OutputMode::Update, true);
        s.state_ttl = Some(100);
        let mut op = TopN::new(s.clone()).unwrap();
        let mut got = Upserted::new();
        let wm = |t: i64| Message::Watermark(Watermark(t));
        run(
            &mut op,
            &[
                // Before the first watermark: counts as changed under it (1000).
                batch(&[(0, (Some("a"), Some(10)))]),
                wm(1000),
                batch(&[(1, (Some("b"), Some(5)))]),
                Message::EmitUpdates,
                wm(1050),
                // a's top changes under 1050, b's does not; c arrives and is not emitted
                // before it expires.
                batch(&[(2, (Some("a"), Some(20))), (3, (Some("c"), Some(7)))]),
            ],
            &mut got,
            true,
        );
        let bytes_before = op.state_bytes();
        assert_eq!(op.partitions.len(), 3);
        // Watermark 1101: b (changed under 1000) is idle for 101 ms > 100 and dropped; a and c
        // (changed under 1050) stay.
        run(&mut op, &[wm(1101)], &mut got, true);
        assert_eq!(op.partitions.len(), 2, "b dropped");
        assert!(op.state_bytes() < bytes_before);
        // A checkpoint keeps the watermark and when each partition changed.
        let mut state = vec![];
        op.snapshot(&mut state).unwrap();
        let mut restored = TopN::new(s).unwrap();
        restored.restore(&state).unwrap();
        // 1151: a and c expire; c's unemitted row comes out first.
        let mut after = got.clone();
        run(&mut op, &[wm(1151)], &mut got, true);
        run(&mut restored, &[wm(1151)], &mut after, true);
        assert_eq!(got, after, "the restored operator expires the same way");
        assert!(op.partitions.is_empty());
        assert_eq!(op.state_bytes(), 0);
        assert_eq!(got.get(&(Some("c".into()), 1)), Some(&(Some(7), 3)));
        // a's rank 2 is a's old 10; a new row of a starts a new top: rank 1 only.
        run(
            &mut op,
            &[batch(&[(4, (Some("a"), Some(1)))]), Message::EmitUpdates],
            &mut got,
            true,
        );
        assert_eq!(got.get(&(Some("a".into()), 1)), Some(&(Some(1), 4)));
        assert_eq!(got.get(&(Some("a".into()), 2)), Some(&(Some(10), 0)));
        // Without a TTL nothing is dropped.
        let mut keep = TopN::new(spec(2, OutputMode::Update, true)).unwrap();
        run(
            &mut keep,
            &[
                batch(&[(0, (Some("a"), Some(10)))]),
                wm(1000),
                wm(1_000_000),
            ],
            &mut Upserted::new(),
            true,
        );
        assert_eq!(keep.partitions.len(), 1);
    }
}
