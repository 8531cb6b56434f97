//! The session window aggregate: `SESSION(TABLE t [PARTITION BY k], DESCRIPTOR(ts), gap)` then
//! `GROUP BY window_start, window_end, keys...`.
//!
//! Window assignment gives each row its own window `[t, t + gap)`; this operator merges the
//! windows that overlap, per partition key (the `PARTITION BY` columns; none: one partition),
//! into sessions `[first t, last t + gap)`. The rows of an open session are kept (references
//! into the input batches, which are kept while a session holds one of their rows); when the
//! watermark reaches a session's `end - 1`, its rows get the session's bounds as
//! `window_start` / `window_end` and are aggregated exactly as a plain GROUP BY would, by a
//! fresh [`WindowAggregate`] without a window.
//!
//! Invariants:
//! * The open sessions of a partition are disjoint and sorted; each fires exactly once, with
//!   the sessions closing at the same watermark in one batch sorted by (window_start,
//!   window_end, keys), so every mode and batch size writes the same rows.
//! * A row that overlaps no open session and whose own window `[t, t + gap)` ended at or
//!   before the watermark is late: it is rejected with reason `late`, never dropped silently.
//!   A row that overlaps an open session joins it (and may extend it), whatever its time.
//! * Append mode only: a session's bounds change as it grows.
//!
//! Checkpoints: a frame of the [`codec`](crate::codec) (tag `FSES`, version 1): the layout,
//! the watermark, then per open session (in firing order) its partition key (row format),
//! start, end and row count, then the rows of all sessions in that order as one Arrow IPC
//! stream.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, RecordBatch, TimestampMillisecondArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use arrow::row::{RowConverter, SortField};
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_expr::PhysicalExpr;
use flowline_core::plan::{AggregateSpec, OutputMode, WindowKind};
use flowline_core::{Error, Message, Operator, Output, Reject, RejectReason, Result, Watermark};

use crate::codec::{Decoder, Encoder};
use crate::operators::window::millis;
use crate::operators::WindowAggregate;
use crate::rows::rows_as_json;

const MAGIC: [u8; 4] = *b"FSES";
const VERSION: u8 = 1;
const CHECKPOINT: &str = "session-aggregate checkpoint";

/// One open session: its end (exclusive: last row's time + gap) and its rows, as (batch, row)
/// references into the operator's kept batches.
struct Session {
    end: i64,
    rows: Vec<(u32, u32)>,
}

pub struct SessionAggregate {
    spec: AggregateSpec,
    gap: i64,
    table_name: String,
    /// Converts the partition columns to row-format keys.
    partition: RowConverter,
    /// Partition key → open sessions by start.
    sessions: HashMap<Box<[u8]>, BTreeMap<i64, Session>>,
    /// Open sessions in firing order: (end, partition key, start).
    by_end: BTreeSet<(i64, Box<[u8]>, i64)>,
    /// Input batches holding rows of open sessions, with how many rows are still referenced.
    batches: Vec<Option<(RecordBatch, usize)>>,
    free_batches: Vec<u32>,
    /// Memory of the kept batches, and of the session bookkeeping, kept up to date so that
    /// state size is O(1) to report.
    batch_bytes: usize,
    session_bytes: usize,
    watermark: Watermark,
    /// The plain aggregate that computes a closed session's results: the group expressions
    /// with window_start / window_end replaced by the session bounds appended to the rows.
    inner: AggregateSpec,
    layout: String,
}

impl SessionAggregate {
    pub fn new(spec: AggregateSpec, table_name: &str) -> Result<Self> {
        let Some(window) = spec.window else {
            return Err(Error::Internal("session aggregate without a window".into()));
        };
        let WindowKind::Session { gap } = window.kind else {
            return Err(Error::Internal(format!(
                "session aggregate over a {:?} window",
                window.kind
            )));
        };
        if spec.output != OutputMode::Append {
            return Err(Error::Internal(
                "session windows are append-only".to_string(),
            ));
        }
        let partition_types = spec
            .session_keys
            .iter()
            .map(|&i| {
                Ok(SortField::new(
                    spec.group_exprs[i].data_type(&spec.input_schema)?,
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        let partition = RowConverter::new(partition_types)?;
        // The inner aggregate reads the input rows plus two columns: the session's bounds.
        let n = spec.input_schema.fields().len();
        let ts = DataType::Timestamp(TimeUnit::Millisecond, None);
        let mut fields: Vec<Arc<Field>> = spec.input_schema.fields().iter().cloned().collect();
        fields.push(Arc::new(Field::new("__session_start", ts.clone(), false)));
        fields.push(Arc::new(Field::new("__session_end", ts, false)));
        let mut inner = spec.clone();
        inner.input_schema = Arc::new(Schema::new(fields));
        inner.group_exprs[window.start] =
            Arc::new(Column::new("__session_start", n)) as Arc<dyn PhysicalExpr>;
        inner.group_exprs[window.end] =
            Arc::new(Column::new("__session_end", n + 1)) as Arc<dyn PhysicalExpr>;
        inner.window = None;
        inner.session_keys = vec![];
        let layout = format!(
            "session gap {gap} ms; partition [{}]; input {}",
            spec.session_keys
                .iter()
                .map(|i| i.to_string())
                .collect::<Vec<_>>()
                .join(", "),
            spec.input_schema
        );
        // Fail now, not at the first firing, if the inner aggregate cannot be built.
        WindowAggregate::new(inner.clone(), table_name)?;
        Ok(SessionAggregate {
            spec,
            gap,
            table_name: table_name.to_string(),
            partition,
            sessions: HashMap::new(),
            by_end: BTreeSet::new(),
            batches: vec![],
            free_batches: vec![],
            batch_bytes: 0,
            session_bytes: 0,
            watermark: Watermark::MIN,
            inner,
            layout,
        })
    }

    fn keep_batch(&mut self, batch: RecordBatch, rows: usize) -> u32 {
        self.batch_bytes += batch.get_array_memory_size();
        match self.free_batches.pop() {
            Some(id) => {
                self.batches[id as usize] = Some((batch, rows));
                id
            }
            None => {
                self.batches.push(Some((batch, rows)));
                (self.batches.len() - 1) as u32
            }
        }
    }

    fn on_batch(&mut self, batch: RecordBatch, out: &mut Output) -> Result<()> {
        let n = batch.num_rows();
        if n == 0 {
            return Ok(());
        }
        let Some(window) = self.spec.window else {
            return Ok(());
        };
        // Window assignment set window_start to the row's event time.
        let times = millis(
            &self.spec.group_exprs[window.start]
                .evaluate(&batch)?
                .into_array(n)?,
        )?;
        let keys = self
            .spec
            .session_keys
            .iter()
            .map(|&i| self.spec.group_exprs[i].evaluate(&batch)?.into_array(n))
            .collect::<Result<Vec<_>, _>>()?;
        let rows = if keys.is_empty() {
            None
        } else {
            Some(self.partition.convert_columns(&keys)?)
        };
        let wm = self.watermark.0;
        let mut late = vec![];
        let mut kept = 0usize;
        let id = self.keep_batch(batch.clone(), 0);
        for i in 0..n {
            let t = times.value(i);
            let key: Box<[u8]> = rows
                .as_ref()
                .map_or_else(|| Box::from(&[][..]), |r| Box::from(r.row(i).as_ref()));
            // Open sessions that overlap [t, t + gap): sessions are disjoint and sorted, so
            // walking back from the last one starting before t + gap, they end in order too.
            let overlapping: Vec<i64> = self.sessions.get(&key).map_or(vec![], |sessions| {
                sessions
                    .range(..t.saturating_add(self.gap))
                    .rev()
                    .take_while(|(_, s)| s.end > t)
                    .map(|(&start, _)| start)
                    .collect()
            });
            if overlapping.is_empty() && wm != i64::MIN && t.saturating_add(self.gap) - 1 <= wm {
                late.push(i);
                continue;
            }
            let sessions = self.sessions.entry(key.clone()).or_default();
            let mut start = t;
            let mut end = t.saturating_add(self.gap);
            let mut members = vec![(id, i as u32)];
            for s in overlapping {
                if let Some(old) = sessions.remove(&s) {
                    self.session_bytes -= Self::session_size(&key, old.rows.len());
                    self.by_end.remove(&(old.end, key.clone(), s));
                    start = start.min(s);
                    end = end.max(old.end);
                    members.extend(old.rows);
                }
            }
            self.session_bytes += Self::session_size(&key, members.len());
            sessions.insert(start, Session { end, rows: members });
            self.by_end.insert((end, key, start));
            kept += 1;
        }
        if kept == 0 {
            self.free_batch(id);
        } else if let Some((_, count)) = &mut self.batches[id as usize] {
            *count = kept;
        }
        for (&i, raw) in late.iter().zip(rows_as_json(&batch, &late)?) {
            let t = times.value(i);
            out.reject(Reject {
                reason: RejectReason::Late,
                detail: format!(
                    "no open session within the gap, and its own session closed when the watermark passed {}",
                    Watermark(t + self.gap - 1).display()
                ),
                table: self.table_name.clone(),
                sink: None,
                file: None,
                line: None,
                raw,
                window: Some([Watermark(t).display(), Watermark(t + self.gap).display()]),
                watermark: Some(self.watermark.display()),
            });
        }
        Ok(())
    }

    fn free_batch(&mut self, id: u32) {
        if let Some((batch, _)) = self.batches[id as usize].take() {
            self.batch_bytes -= batch.get_array_memory_size();
            self.free_batches.push(id);
        }
    }

    /// Bookkeeping bytes of one session.
    fn session_size(key: &[u8], rows: usize) -> usize {
        2 * key.len() + 96 + rows * 8
    }

    /// Aggregates and emits every session whose end - 1 is at or before the watermark.
    fn fire(&mut self, out: &mut Output) -> Result<()> {
        let wm = self.watermark.0;
        let mut closing = vec![];
        while let Some((end, _, _)) = self.by_end.first() {
            if end - 1 > wm {
                break;
            }
            if let Some(entry) = self.by_end.pop_first() {
                closing.push(entry);
            }
        }
        if closing.is_empty() {
            return Ok(());
        }
        let mut refs: Vec<(u32, u32)> = vec![];
        let mut starts: Vec<i64> = vec![];
        let mut ends: Vec<i64> = vec![];
        for (end, key, start) in closing {
            let Some(sessions) = self.sessions.get_mut(&key) else {
                continue;
            };
            if let Some(session) = sessions.remove(&start) {
                self.session_bytes -= Self::session_size(&key, session.rows.len());
                starts.extend(std::iter::repeat_n(start, session.rows.len()));
                ends.extend(std::iter::repeat_n(end, session.rows.len()));
                refs.extend(session.rows);
            }
            if sessions.is_empty() {
                self.sessions.remove(&key);
            }
        }
        let gathered = self.gather(&refs, starts, ends)?;
        for (b, _) in refs {
            if let Some((_, count)) = &mut self.batches[b as usize] {
                *count -= 1;
                if *count == 0 {
                    self.free_batch(b);
                }
            }
        }
        let mut aggregate = WindowAggregate::new(self.inner.clone(), &self.table_name)?;
        let mut inner_out = Output::default();
        aggregate.process(Message::Data(gathered), &mut inner_out)?;
        aggregate.process(Message::Watermark(Watermark::MAX), &mut inner_out)?;
        for m in inner_out.messages {
            if let Message::Data(b) = m {
                out.emit(Message::Data(b));
            }
        }
        Ok(())
    }

    /// The referenced rows as one batch, with the session bounds appended.
    fn gather(&self, refs: &[(u32, u32)], starts: Vec<i64>, ends: Vec<i64>) -> Result<RecordBatch> {
        // Dense indices of the batches involved.
        let mut slot: HashMap<u32, usize> = HashMap::new();
        let mut used: Vec<&RecordBatch> = vec![];
        let mut pairs = Vec::with_capacity(refs.len());
        for &(b, r) in refs {
            let k = match slot.get(&b) {
                Some(&k) => k,
                None => {
                    let batch = self.batches[b as usize]
                        .as_ref()
                        .map(|(batch, _)| batch)
                        .ok_or_else(|| Error::Internal("session row in a freed batch".into()))?;
                    used.push(batch);
                    slot.insert(b, used.len() - 1);
                    used.len() - 1
                }
            };
            pairs.push((k, r as usize));
        }
        let width = self.spec.input_schema.fields().len();
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(width + 2);
        for c in 0..width {
            let arrays: Vec<&dyn Array> = used.iter().map(|b| b.column(c).as_ref()).collect();
            columns.push(if arrays.is_empty() {
                arrow::array::new_empty_array(self.spec.input_schema.field(c).data_type())
            } else {
                arrow::compute::interleave(&arrays, &pairs)?
            });
        }
        columns.push(Arc::new(TimestampMillisecondArray::from(starts)));
        columns.push(Arc::new(TimestampMillisecondArray::from(ends)));
        let schema = crate::rows::relax_nullability(&self.inner.input_schema, &columns);
        Ok(RecordBatch::try_new(schema, columns)?)
    }

    fn write_state(&self, out: &mut Vec<u8>) -> Result<()> {
        let mut e = Encoder::new(out);
        let frame = e.begin_frame(MAGIC, VERSION);
        e.bytes(self.layout.as_bytes())?;
        e.i64(self.watermark.0);
        e.len_prefix(self.by_end.len());
        let mut refs = vec![];
        for (end, key, start) in &self.by_end {
            let session = self
                .sessions
                .get(key)
                .and_then(|s| s.get(start))
                .ok_or_else(|| Error::Internal("session index out of step".into()))?;
            e.bytes(key)?;
            e.i64(*start);
            e.i64(*end);
            e.u64(session.rows.len() as u64);
            refs.extend(session.rows.iter().copied());
        }
        let n = refs.len();
        let rows = self.gather(&refs, vec![0; n], vec![0; n])?;
        let rows = rows.project(&(0..self.spec.input_schema.fields().len()).collect::<Vec<_>>())?;
        e.bytes(&crate::codec::batch_to_ipc(&rows)?)?;
        e.end_frame(frame);
        Ok(())
    }
}

impl Operator for SessionAggregate {
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
        "session-aggregate"
    }

    /// The kept input batches (whole, while any of their rows is in an open session) and the
    /// session bookkeeping. O(1).
    fn state_bytes(&self) -> usize {
        self.batch_bytes + self.session_bytes
    }

    fn snapshot(&self, out: &mut Vec<u8>) -> Result<()> {
        crate::codec::snapshot_into(out, |out| self.write_state(out))
    }

    fn restore(&mut self, state: &[u8]) -> Result<()> {
        let mut d = Decoder::new(state, CHECKPOINT).frame(MAGIC, VERSION)?;
        d.expect_layout(&self.layout)?;
        let watermark = Watermark(d.i64()?);
        let n_sessions = d.len_prefix(24)?;
        let mut index = vec![];
        let mut total = 0u64;
        for _ in 0..n_sessions {
            let key: Box<[u8]> = d.bytes()?.into();
            let start = d.i64()?;
            let end = d.i64()?;
            let rows = d.u64()?;
            if end <= start {
                return Err(d.error(format!("session [{start}, {end}) is empty")));
            }
            total = total
                .checked_add(rows)
                .ok_or_else(|| d.error("row count overflows"))?;
            index.push((key, start, end, rows));
        }
        let ipc = d.bytes()?;
        d.finish()?;
        let rows = crate::codec::batch_from_ipc(ipc, CHECKPOINT, &self.spec.input_schema)?;
        if rows.num_rows() as u64 != total {
            return Err(Error::Internal(format!(
                "{CHECKPOINT}: {} rows, the sessions list {total}",
                rows.num_rows()
            )));
        }
        let mut sessions: HashMap<Box<[u8]>, BTreeMap<i64, Session>> = HashMap::new();
        let mut by_end = BTreeSet::new();
        let mut session_bytes = 0;
        let mut next = 0u32;
        for (key, start, end, n) in index {
            let members = (next..next + n as u32).map(|r| (0u32, r)).collect();
            next += n as u32;
            session_bytes += Self::session_size(&key, n as usize);
            let partition = sessions.entry(key.clone()).or_default();
            if partition
                .insert(start, Session { end, rows: members })
                .is_some()
            {
                return Err(Error::Internal(format!(
                    "{CHECKPOINT}: session {start} twice"
                )));
            }
            by_end.insert((end, key, start));
        }
        let schema: SchemaRef = self.spec.input_schema.clone();
        let rows = RecordBatch::try_new(
            crate::rows::relax_nullability(&schema, rows.columns()),
            rows.columns().to_vec(),
        )?;
        self.batches = if total > 0 {
            vec![Some((rows, total as usize))]
        } else {
            vec![]
        };
        self.free_batches.clear();
        self.batch_bytes = self
            .batches
            .iter()
            .flatten()
            .map(|(b, _)| b.get_array_memory_size())
            .sum();
        self.session_bytes = session_bytes;
        self.sessions = sessions;
        self.by_end = by_end;
        self.watermark = watermark;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{AsArray, Int64Array, StringArray};
    use arrow::datatypes::{Int64Type, TimestampMillisecondType};
    use datafusion::physical_expr::expressions::{col, lit};
    use flowline_core::plan::{AggregateCall, AggregateFunction, WindowColumns};
    use proptest::prelude::*;

    fn input_schema() -> SchemaRef {
        let ts = DataType::Timestamp(TimeUnit::Millisecond, None);
        Arc::new(Schema::new(vec![
            Field::new("k", DataType::Utf8, true),
            Field::new("v", DataType::Int64, true),
            Field::new("window_start", ts.clone(), false),
            Field::new("window_end", ts, false),
        ]))
    }

    /// `GROUP BY window_start, window_end, k` with COUNT(*), SUM(v), MIN(v), COUNT(DISTINCT v)
    /// over sessions of `gap` ms, partitioned by `k` or not.
    fn spec(gap: i64, partitioned: bool) -> AggregateSpec {
        let input = input_schema();
        let ts = DataType::Timestamp(TimeUnit::Millisecond, None);
        let call = |function, arg, distinct| AggregateCall {
            function,
            arg,
            distinct,
            filter: None,
        };
        let v = col("v", &input).unwrap();
        AggregateSpec {
            group_exprs: vec![
                col("window_start", &input).unwrap(),
                col("window_end", &input).unwrap(),
                col("k", &input).unwrap(),
            ],
            window: Some(WindowColumns {
                kind: WindowKind::Session { gap },
                start: 0,
                end: 1,
            }),
            output: OutputMode::Append,
            allowed_lateness: 0,
            state_ttl: None,
            session_keys: if partitioned { vec![2] } else { vec![] },
            calls: vec![
                call(AggregateFunction::Count, lit(1i64), false),
                call(AggregateFunction::Sum, v.clone(), false),
                call(AggregateFunction::Min, v.clone(), false),
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
                Field::new("d", DataType::Int64, false),
            ])),
        }
    }

    type Row = (Option<&'static str>, Option<i64>, i64);

    /// Rows as window assignment leaves them: window_start = t, window_end = t + gap.
    fn batch(rows: &[Row], gap: i64) -> RecordBatch {
        RecordBatch::try_new(
            input_schema(),
            vec![
                Arc::new(StringArray::from_iter(rows.iter().map(|r| r.0))),
                Arc::new(Int64Array::from_iter(rows.iter().map(|r| r.1))),
                Arc::new(TimestampMillisecondArray::from_iter_values(
                    rows.iter().map(|r| r.2),
                )),
                Arc::new(TimestampMillisecondArray::from_iter_values(
                    rows.iter().map(|r| r.2 + gap),
                )),
            ],
        )
        .unwrap()
    }

    fn stream(rows: &[Row], gap: i64, batch_size: usize, lag: i64) -> Vec<Message> {
        let mut messages = vec![];
        let mut newest = i64::MIN;
        for chunk in rows.chunks(batch_size) {
            messages.push(Message::Data(batch(chunk, gap)));
            newest = chunk.iter().map(|r| r.2).fold(newest, i64::max);
            messages.push(Message::Watermark(Watermark(newest - lag)));
        }
        messages.push(Message::Watermark(Watermark::MAX));
        messages.push(Message::EndOfInput);
        messages
    }

    /// (start, end, k, n, sum, min, distinct) of every emitted row, in order, and the rejects.
    type Result7 = (i64, i64, Option<String>, i64, Option<i64>, Option<i64>, i64);

    fn run(op: &mut SessionAggregate, messages: &[Message]) -> (Vec<Result7>, Vec<Reject>) {
        let mut rows = vec![];
        let mut rejects = vec![];
        for m in messages {
            let mut out = Output::default();
            op.process(m.clone(), &mut out).unwrap();
            rejects.extend(out.rejects);
            for m in out.messages {
                let Message::Data(b) = m else { continue };
                let ts = |c: usize| {
                    b.column(c)
                        .as_primitive::<TimestampMillisecondType>()
                        .clone()
                };
                let int = |c: usize| b.column(c).as_primitive::<Int64Type>().clone();
                let (s, e, k) = (ts(0), ts(1), b.column(2).as_string::<i32>().clone());
                let (n, sum, mn, d) = (int(3), int(4), int(5), int(6));
                for i in 0..b.num_rows() {
                    rows.push((
                        s.value(i),
                        e.value(i),
                        k.is_valid(i).then(|| k.value(i).to_string()),
                        n.value(i),
                        sum.is_valid(i).then(|| sum.value(i)),
                        mn.is_valid(i).then(|| mn.value(i)),
                        d.value(i),
                    ));
                }
            }
        }
        (rows, rejects)
    }

    /// The sessions computed from scratch: per partition, rows sorted by time, a new session
    /// whenever a row is at or past the current session's end; then grouped by k.
    fn model(rows: &[Row], gap: i64, partitioned: bool) -> Vec<Result7> {
        let mut by_partition: BTreeMap<Option<&str>, Vec<&Row>> = BTreeMap::new();
        for r in rows {
            by_partition
                .entry(if partitioned { r.0 } else { None })
                .or_default()
                .push(r);
        }
        let mut out = vec![];
        for (_, mut rs) in by_partition {
            rs.sort_by_key(|r| r.2);
            let mut sessions: Vec<(i64, i64, Vec<&Row>)> = vec![];
            for r in rs {
                match sessions.last_mut() {
                    Some((_, end, members)) if r.2 < *end => {
                        *end = (*end).max(r.2 + gap);
                        members.push(r);
                    }
                    _ => sessions.push((r.2, r.2 + gap, vec![r])),
                }
            }
            for (start, end, members) in sessions {
                let mut groups: BTreeMap<Option<&str>, Vec<&Row>> = BTreeMap::new();
                for m in members {
                    groups.entry(m.0).or_default().push(m);
                }
                for (k, g) in groups {
                    let values: Vec<i64> = g.iter().filter_map(|r| r.1).collect();
                    let distinct: BTreeSet<i64> = values.iter().copied().collect();
                    out.push((
                        start,
                        end,
                        k.map(str::to_string),
                        g.len() as i64,
                        (!values.is_empty()).then(|| values.iter().sum()),
                        values.iter().copied().min(),
                        distinct.len() as i64,
                    ));
                }
            }
        }
        out.sort();
        out
    }

    fn row() -> impl Strategy<Value = (Option<&'static str>, Option<i64>, i64)> {
        (
            prop::option::weighted(0.9, prop::sample::select(vec!["a", "b", "c"])),
            prop::option::weighted(0.9, -5i64..20),
            -15i64..=15,
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            cases: 96,
            failure_persistence: None,
            ..ProptestConfig::default()
        })]

        /// In order within the watermark lag, stream output equals the model's sessions
        /// (nothing is late), for every batch size; and a snapshot/restore anywhere changes
        /// nothing, also when rows are late.
        #[test]
        fn sessions_match_the_model_and_survive_a_restore(
            jittered in prop::collection::vec(row(), 0..100),
            gap in 1i64..25,
            partitioned in any::<bool>(),
            batch_size in 1usize..20,
            lag in prop::sample::select(vec![0i64, 5, 40]),
            cut in any::<prop::sample::Index>(),
        ) {
            let rows: Vec<Row> = jittered
                .into_iter()
                .enumerate()
                .map(|(i, (k, v, jitter))| (k, v, i as i64 * 3 + jitter))
                .collect();
            let messages = stream(&rows, gap, batch_size, lag);
            let mut whole = SessionAggregate::new(spec(gap, partitioned), "t").unwrap();
            let (emitted, rejects) = run(&mut whole, &messages);
            if lag == 40 {
                prop_assert!(rejects.is_empty(), "{:?}", rejects);
                let mut sorted = emitted.clone();
                sorted.sort();
                prop_assert_eq!(sorted, model(&rows, gap, partitioned));
            }
            prop_assert!(rejects.iter().all(|r| r.reason == RejectReason::Late));

            let cut = cut.index(messages.len() + 1);
            let mut before = SessionAggregate::new(spec(gap, partitioned), "t").unwrap();
            let (mut got, mut got_rejects) = run(&mut before, &messages[..cut]);
            let mut blob = vec![];
            before.snapshot(&mut blob).unwrap();
            let mut after = SessionAggregate::new(spec(gap, partitioned), "t").unwrap();
            after.restore(&blob).unwrap();
            let (more, more_rejects) = run(&mut after, &messages[cut..]);
            got.extend(more);
            got_rejects.extend(more_rejects);
            prop_assert_eq!(got, emitted);
            prop_assert_eq!(got_rejects.len(), rejects.len());
        }
    }

    #[test]
    fn a_late_row_joins_an_open_session_but_not_a_closed_one() {
        let gap = 10;
        let mut op = SessionAggregate::new(spec(gap, true), "t").unwrap();
        let messages = vec![
            Message::Data(batch(
                &[(Some("a"), Some(1), 100), (Some("b"), Some(1), 100)],
                gap,
            )),
            Message::Watermark(Watermark(105)),
            // a's session [100, 110) is open: a row at 95 joins it and extends its start.
            Message::Data(batch(&[(Some("a"), Some(2), 95)], gap)),
            Message::Watermark(Watermark(109)),
            // Both sessions closed at 109; a row at 90 for b overlaps nothing open and its own
            // window [90, 100) is long closed: late.
            Message::Data(batch(&[(Some("b"), Some(5), 90)], gap)),
            Message::Watermark(Watermark::MAX),
        ];
        let (rows, rejects) = run(&mut op, &messages);
        assert_eq!(
            rows,
            vec![
                (95, 110, Some("a".into()), 2, Some(3), Some(1), 2),
                (100, 110, Some("b".into()), 1, Some(1), Some(1), 1),
            ]
        );
        assert_eq!(rejects.len(), 1);
        assert_eq!(rejects[0].reason, RejectReason::Late);
        assert_eq!(op.state_bytes(), 0, "closed sessions free their rows");
    }

    #[test]
    fn a_checkpoint_for_another_plan_or_corrupt_is_refused() {
        let mut op = SessionAggregate::new(spec(10, true), "t").unwrap();
        let mut out = Output::default();
        op.process(
            Message::Data(batch(&[(Some("a"), Some(1), 100)], 10)),
            &mut out,
        )
        .unwrap();
        let mut blob = vec![];
        op.snapshot(&mut blob).unwrap();
        let mut other = SessionAggregate::new(spec(20, true), "t").unwrap();
        assert!(other.restore(&blob).is_err());
        let mut same = SessionAggregate::new(spec(10, true), "t").unwrap();
        for cut in [0, 5, blob.len() / 2, blob.len() - 1] {
            assert!(same.restore(&blob[..cut]).is_err(), "truncated at {cut}");
        }
        let mut flipped = blob.clone();
        let last = flipped.len() - 3;
        flipped[last] ^= 0x40;
        assert!(same.restore(&flipped).is_err());
        same.restore(&blob).unwrap();
    }
}
