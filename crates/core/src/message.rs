//! What flows between operators, and the operator contract.

use arrow::record_batch::RecordBatch;

use crate::{Reject, Result};

/// Event time in milliseconds since the Unix epoch. A watermark `w` promises that no more rows
/// with event time `<= w` will arrive (Flink's definition).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub struct Watermark(pub i64);

impl Watermark {
    /// Before any input: nothing is known.
    pub const MIN: Watermark = Watermark(i64::MIN);
    /// End of a bounded input: every window may fire.
    pub const MAX: Watermark = Watermark(i64::MAX);

    /// Renders the watermark as an ISO-8601 UTC instant, or `-inf` / `+inf`.
    pub fn display(self) -> String {
        match self.0 {
            i64::MIN => "-inf".into(),
            i64::MAX => "+inf".into(),
            ms => chrono::DateTime::from_timestamp_millis(ms)
                .map(|t| t.format("%Y-%m-%dT%H:%M:%S%.3f").to_string())
                .unwrap_or_else(|| ms.to_string()),
        }
    }
}

/// A message on an edge of the dataflow. Control travels in-band with the data.
#[derive(Debug, Clone)]
pub enum Message {
    Data(RecordBatch),
    Watermark(Watermark),
    /// The input is exhausted. Always preceded by `Watermark(Watermark::MAX)`.
    EndOfInput,
    /// A processing-time tick of the update output mode (every emit interval, and at the end
    /// of each micro-batch): operators in update mode emit the results that changed since the
    /// previous tick. Every other operator forwards it.
    EmitUpdates,
    /// Rows sent earlier that no longer hold: the old value of an updated result (sent just
    /// before its new value, a [`Message::Data`]) or a deleted one. Only an update-mode
    /// aggregate with retractions ([`Node::RetractAggregate`](crate::plan::Node)) sends them;
    /// filters and projections pass them on transformed, another such aggregate subtracts
    /// them, and a sink deletes their keys unless the same emission writes the key again.
    Retract(RecordBatch),
}

/// Where an operator puts what it produces.
#[derive(Debug, Default)]
pub struct Output {
    pub messages: Vec<Message>,
    pub rejects: Vec<Reject>,
}

impl Output {
    pub fn emit(&mut self, message: Message) {
        self.messages.push(message);
    }
    pub fn reject(&mut self, reject: Reject) {
        self.rejects.push(reject);
    }
}

/// A synchronous dataflow operator. It receives every message of its input in order and
/// writes what it produces to `out`. Operators that do not care about control messages
/// forward them unchanged.
pub trait Operator: Send {
    fn process(&mut self, message: Message, out: &mut Output) -> Result<()>;

    /// The second input of a two-input operator (a join's right side). One-input operators
    /// have none.
    fn process_right(&mut self, message: Message, out: &mut Output) -> Result<()> {
        let _ = (message, out);
        Err(crate::Error::Internal(format!(
            "operator {} has one input, but a message came on a second one",
            self.name()
        )))
    }

    /// A short name for plans and summaries.
    fn name(&self) -> &'static str;

    /// Approximate bytes of state held (open windows, groups). Stateless operators hold none.
    fn state_bytes(&self) -> usize {
        0
    }

    /// Appends the operator's state to `out` at a checkpoint: everything needed to continue
    /// after a restart as if nothing happened (open windows, aggregates, the watermark seen).
    /// Stateless operators write nothing.
    fn snapshot(&self, out: &mut Vec<u8>) -> Result<()> {
        let _ = out;
        Ok(())
    }

    /// Replaces the operator's state with one written by [`snapshot`](Self::snapshot) of an
    /// operator of the same plan node. Stateless operators accept only an empty state.
    fn restore(&mut self, state: &[u8]) -> Result<()> {
        if state.is_empty() {
            Ok(())
        } else {
            Err(crate::Error::Internal(format!(
                "operator {} holds no state but the checkpoint has {} bytes for it",
                self.name(),
                state.len()
            )))
        }
    }
}
