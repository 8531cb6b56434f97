//! The reject bin's record: a row Flowline could not process, with why and where.

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RejectReason {
    /// A CSV record that cannot be split into the declared columns.
    MalformedCsv,
    /// A line that is not a JSON object.
    InvalidJson,
    /// A field that cannot be converted to its column's type.
    BadValue,
    /// A timestamp field that does not parse.
    BadTimestamp,
    /// A row whose event-time column is empty.
    MissingEventTime,
    /// A row later than the watermark allows for its window.
    Late,
}

impl RejectReason {
    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::MalformedCsv => "malformed-csv",
            RejectReason::InvalidJson => "invalid-json",
            RejectReason::BadValue => "bad-value",
            RejectReason::BadTimestamp => "bad-timestamp",
            RejectReason::MissingEventTime => "missing-event-time",
            RejectReason::Late => "late",
        }
    }
}

/// One rejected row. Serialized as one JSON line in the reject bin.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Reject {
    pub reason: RejectReason,
    /// Human-readable detail: which column, what value, what was expected.
    pub detail: String,
    /// The table the row was read from.
    pub table: String,
    /// For rows rejected by an operator (late, missing event time): the sink of the INSERT
    /// whose operator rejected it. Source rejects (parse errors) concern every INSERT.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sink: Option<String>,
    /// The file the row came from, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// 1-based line (CSV, JSON lines) or row (Parquet) number in `file`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<u64>,
    /// The raw text of the row (CSV/JSON), or the row rendered as JSON.
    pub raw: String,
    /// For `late` rows: the window the row missed, `[start, end)` in ISO-8601.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub window: Option<[String; 2]>,
    /// For `late` rows: the watermark when the row arrived.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub watermark: Option<String>,
}
