//! One JSON object (a line of a JSON-lines file, a log record) into the next row of text
//! columns, without building a tree: the object is walked once by serde_json, each key is
//! matched to its column, and each value is kept as its place in the text (`RawValue`).
//!
//! Rules (the same for files and logs):
//! - a key matches its column exactly, or else case-insensitively (first such key in the
//!   object); a later exact duplicate replaces an earlier one;
//! - a missing key reads the column's partition value (files in Hive folders) or NULL;
//! - numbers are kept as written (`1.50` stays `1.50`), booleans as `true`/`false`;
//! - a string is unescaped; for a non-string column it is trimmed and an empty one is NULL;
//! - an object or array fits only a ROW or ARRAY column (decoded later from its text) or a
//!   string column (its compact text); any other column rejects the row (`bad_value`), before
//!   anything of the row is appended;
//! - text that is not one JSON object rejects the row (`invalid_json`) with serde's message.
//!
//! Invariant: every call appends exactly one value (or NULL) to every builder of the batch.

use std::collections::HashMap;
use std::fmt;

use arrow::datatypes::{DataType, Fields};
use flowline_core::RejectReason;
use serde::de::{self, DeserializeSeed, MapAccess, Visitor};
use serde::Deserializer as _;
use serde_json::value::RawValue;
use serde_json::Value;

use crate::convert::{is_nested_type, is_string_type};
use crate::source::{csv_cell, TextBatch};

/// The declared columns as keys of a JSON object; built once per file or log batch.
pub(crate) struct JsonColumns {
    names: Vec<String>,
    types: Vec<DataType>,
    is_string: Vec<bool>,
    is_nested: Vec<bool>,
    /// Per column: the value of a Hive partition folder (`Some(None)`: the folder says NULL),
    /// read when the object lacks the key.
    partitions: Vec<Option<Option<String>>>,
    exact: HashMap<String, usize>,
    /// Lower-cased name → first column of that name.
    folded: HashMap<String, usize>,
    /// Per column, for the row being decoded: where its value is in the row's text.
    slots: Vec<Option<Slot>>,
    /// Per column, for the row being decoded: its text when it differs from the raw value (a
    /// string with escapes, unescaped; an object for a string column, compacted).
    decoded: Vec<Option<String>>,
    /// A key lower-cased, reused across keys.
    fold: String,
}

#[derive(Clone, Copy)]
struct Slot {
    start: usize,
    end: usize,
}

impl JsonColumns {
    pub(crate) fn new(fields: &Fields, partitions: Vec<Option<Option<String>>>) -> JsonColumns {
        let names: Vec<String> = fields.iter().map(|f| f.name().clone()).collect();
        let mut exact = HashMap::with_capacity(names.len());
        let mut folded = HashMap::with_capacity(names.len());
        for (c, name) in names.iter().enumerate() {
            exact.entry(name.clone()).or_insert(c);
            folded.entry(name.to_ascii_lowercase()).or_insert(c);
        }
        JsonColumns {
            is_string: fields
                .iter()
                .map(|f| is_string_type(f.data_type()))
                .collect(),
            is_nested: fields
                .iter()
                .map(|f| is_nested_type(f.data_type()))
                .collect(),
            partitions,
            exact,
            folded,
            slots: vec![None; names.len()],
            decoded: vec![None; names.len()],
            fold: String::new(),
            types: fields.iter().map(|f| f.data_type().clone()).collect(),
            names,
        }
    }

    /// The column a key names, and whether exactly. `hint` (the column after the previous
    /// key's) is tried first: objects usually list their keys in the declared order.
    fn column_of(&mut self, key: &str, hint: usize) -> Option<(usize, bool)> {
        if self.names.get(hint).is_some_and(|n| n == key) {
            return Some((hint, true));
        }
        if let Some(&c) = self.exact.get(key) {
            return Some((c, true));
        }
        let folded = if key.bytes().any(|b| b.is_ascii_uppercase()) {
            self.fold.clear();
            self.fold.push_str(key);
            self.fold.make_ascii_lowercase();
            self.folded.get(&self.fold)
        } else {
            self.folded.get(key)
        };
        folded.map(|&c| (c, false))
    }

    /// Decodes `text` into the next row of `batch` (whose span the caller has pushed); a row
    /// that fails is recorded in `batch.failures` and appended as NULLs.
    pub(crate) fn decode_row(&mut self, batch: &mut TextBatch, text: &[u8]) {
        let row = batch.spans.len() - 1;
        self.slots.iter_mut().for_each(|s| *s = None);
        if let Err((reason, detail)) = self.locate(text) {
            batch.failures.set(row, reason, detail);
            batch.append_nulls();
            return;
        }
        // A nested value only fits a string column (as its JSON text) or a ROW / ARRAY column.
        self.decoded.iter_mut().for_each(|d| *d = None);
        for (c, slot) in self.slots.iter().enumerate() {
            let Some(slot) = slot else { continue };
            let raw = &text[slot.start..slot.end];
            // serde_json checks escapes only when it decodes them: decode the strings that
            // have some (and nested values bound for a string column) before anything of the
            // row is appended, so that `"\ud800"` rejects the row as it always did.
            let decoded = match raw[0] {
                b'"' if raw.contains(&b'\\') => serde_json::from_slice::<String>(raw).map(Some),
                // An object or array in a string column: its compact text, as Flink gives.
                b'{' | b'[' if self.is_string[c] => {
                    serde_json::from_slice::<Value>(raw).map(|v| Some(v.to_string()))
                }
                _ => Ok(None),
            };
            match decoded {
                Ok(d) => self.decoded[c] = d,
                Err(e) => {
                    let detail = format!("column `{}`: {e}", self.names[c]);
                    batch.failures.set(row, RejectReason::InvalidJson, detail);
                    batch.append_nulls();
                    return;
                }
            }
            if matches!(raw[0], b'{' | b'[') && !self.is_string[c] && !self.is_nested[c] {
                let detail = format!(
                    "column `{}`: cannot convert {} to {}",
                    self.names[c],
                    String::from_utf8_lossy(raw),
                    self.types[c]
                );
                batch.failures.set(row, RejectReason::BadValue, detail);
                batch.append_nulls();
                return;
            }
        }
        for (c, slot) in self.slots.iter().enumerate() {
            let builder = &mut batch.builders[c];
            let Some(slot) = slot else {
                match &self.partitions[c] {
                    Some(v) => builder.append_option(v.as_deref()),
                    None => builder.append_null(),
                }
                continue;
            };
            // serde_json validated the text, so it is UTF-8 and each value is well formed.
            let raw = std::str::from_utf8(&text[slot.start..slot.end]).unwrap_or_default();
            match (raw.as_bytes()[0], &self.decoded[c]) {
                (b'n', _) => builder.append_null(),
                (b'"', decoded) => {
                    let s = decoded.as_deref().unwrap_or(&raw[1..raw.len() - 1]);
                    builder.append_option(csv_cell(s, self.is_string[c], None));
                }
                (_, Some(compact)) => builder.append_value(compact),
                // true, false, a number as written, or an object / array for a nested column.
                _ => builder.append_value(raw),
            }
        }
    }

    /// Fills `slots` from the object in `text`.
    fn locate(&mut self, text: &[u8]) -> Result<(), (RejectReason, String)> {
        let first = text.iter().find(|b| !b.is_ascii_whitespace());
        if first != Some(&b'{') {
            // Not an object: say what it is (or why it is not JSON at all).
            return Err(match serde_json::from_slice::<Value>(text) {
                Ok(other) => (
                    RejectReason::InvalidJson,
                    format!("expected a JSON object, found {}", json_kind(&other)),
                ),
                Err(e) => (RejectReason::InvalidJson, e.to_string()),
            });
        }
        let mut de = serde_json::Deserializer::from_slice(text);
        let visitor = ObjectVisitor {
            columns: self,
            base: text.as_ptr() as usize,
        };
        de.deserialize_map(visitor)
            .and_then(|()| de.end())
            .map_err(|e| (RejectReason::InvalidJson, e.to_string()))
    }
}

/// "a number", "an array", ...: what a JSON value is, for error messages.
pub fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

struct ObjectVisitor<'c> {
    columns: &'c mut JsonColumns,
    /// Address of the row's first byte: a value's place is its address minus this.
    base: usize,
}

impl<'de> Visitor<'de> for ObjectVisitor<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut hint = 0;
        while let Some(key) = map.next_key_seed(KeySeed)? {
            let raw: &'de RawValue = map.next_value()?;
            let Some((c, exact)) = self.columns.column_of(key.as_str(), hint) else {
                continue;
            };
            hint = c + 1;
            let slot = &mut self.columns.slots[c];
            // An exact key replaces anything before it; a case-insensitive one only fills a
            // column no key has named yet.
            if exact || slot.is_none() {
                let text = raw.get();
                let start = text.as_ptr() as usize - self.base;
                *slot = Some(Slot {
                    start,
                    end: start + text.len(),
                });
            }
        }
        Ok(())
    }
}

/// A key, borrowed from the text unless it had escapes.
enum Key<'de> {
    Borrowed(&'de str),
    Owned(String),
}

impl Key<'_> {
    fn as_str(&self) -> &str {
        match self {
            Key::Borrowed(s) => s,
            Key::Owned(s) => s,
        }
    }
}

struct KeySeed;

impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = Key<'de>;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Key<'de>, D::Error> {
        d.deserialize_str(KeyVisitor)
    }
}

struct KeyVisitor;

impl<'de> Visitor<'de> for KeyVisitor {
    type Value = Key<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string key")
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Key<'de>, E> {
        Ok(Key::Borrowed(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Key<'de>, E> {
        Ok(Key::Owned(v.to_string()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Key<'de>, E> {
        Ok(Key::Owned(v))
    }
}

#[cfg(test)]
mod tests {
    use arrow::array::{Array, StringArray};
    use arrow::datatypes::Field;

    use super::*;

    fn fields() -> Fields {
        Fields::from(vec![
            Field::new("id", DataType::Int64, true),
            Field::new("Name", DataType::Utf8, true),
            Field::new("p", DataType::Utf8, true),
            Field::new(
                "r",
                DataType::Struct(Fields::from(vec![Field::new("a", DataType::Int64, true)])),
                true,
            ),
        ])
    }

    /// A decoded row's column texts, or its reject.
    type Decoded = Result<Vec<Option<String>>, (RejectReason, String)>;

    /// Decodes each line; returns per row the four column texts, or the reject.
    fn decode(lines: &[&str]) -> Vec<Decoded> {
        let fields = fields();
        let mut columns =
            JsonColumns::new(&fields, vec![None, None, Some(Some("folder".into())), None]);
        let mut batch = TextBatch::new(fields.len(), lines.len());
        for (i, line) in lines.iter().enumerate() {
            batch.spans.push((i as u64 + 1, 0, line.len()));
            columns.decode_row(&mut batch, line.as_bytes());
        }
        let arrays: Vec<StringArray> = batch.builders.iter_mut().map(|b| b.finish()).collect();
        assert!(
            arrays.iter().all(|a| a.len() == lines.len()),
            "one value per row and column"
        );
        (0..lines.len())
            .map(|row| match batch.failures.get(row) {
                Some((reason, detail)) => Err((reason, detail.to_string())),
                None => Ok(arrays
                    .iter()
                    .map(|a| (!a.is_null(row)).then(|| a.value(row).to_string()))
                    .collect()),
            })
            .collect()
    }

    fn row(values: [Option<&str>; 4]) -> Decoded {
        Ok(values.iter().map(|v| v.map(str::to_string)).collect())
    }

    #[test]
    fn keys_values_and_partition_fallback() {
        let got = decode(&[
            r#"{"id": 1.50, "Name": "a\"b\u00e9", "r": {"a": 7}}"#,
            r#"{"ID": 2, "name": "ci", "p": null}"#,
            r#"{"id": " 3 ", "id": "4", "NAME": "first", "name": "second", "Name": "exact", "extra": [1,{"x":2}]}"#,
            r#"  {"\u0069d": "", "Name": {"b": 1, "a": [1, 2]}}  "#,
        ]);
        assert_eq!(
            got[0],
            row([
                Some("1.50"),
                Some("a\"bé"),
                Some("folder"),
                Some(r#"{"a": 7}"#)
            ])
        );
        // Case-insensitive keys fill their columns; an explicit null is NULL, not the folder.
        assert_eq!(got[1], row([Some("2"), Some("ci"), None, None]));
        // The last exact key wins over earlier ones and over any case-insensitive one.
        assert_eq!(
            got[2],
            row([Some("4"), Some("exact"), Some("folder"), None])
        );
        // An escaped key still matches; an empty string is NULL for a non-string column; an
        // object in a string column is its compact text.
        assert_eq!(
            got[3],
            row([None, Some(r#"{"a":[1,2],"b":1}"#), Some("folder"), None])
        );
    }

    #[test]
    fn rejects_name_the_problem() {
        let got = decode(&[
            r#"{"id": 1"#,
            r#"[1, 2]"#,
            r#"{"id": 1} trailing"#,
            r#"{"id": {"nested": true}}"#,
            r#"{"id": 5}"#,
            r#"{"id": 6, "Name": "\ud800"}"#,
            r#"{"id": 7, "Name": {"a": "\udc00"}}"#,
        ]);
        // A lone surrogate is not text: the row is rejected, never stored as an empty string.
        for (i, bad) in [(5, "Name"), (6, "Name")] {
            let (reason, detail) = got[i].clone().unwrap_err();
            assert_eq!(reason, RejectReason::InvalidJson, "{detail}");
            assert!(
                detail.contains(bad) && (detail.contains("surrogate") || detail.contains("escape")),
                "{detail}"
            );
        }
        let (reason, detail) = got[0].clone().unwrap_err();
        assert_eq!(reason, RejectReason::InvalidJson);
        assert!(detail.contains("EOF"), "{detail}");
        assert_eq!(
            got[1],
            Err((
                RejectReason::InvalidJson,
                "expected a JSON object, found an array".into()
            ))
        );
        let (reason, detail) = got[2].clone().unwrap_err();
        assert_eq!(reason, RejectReason::InvalidJson);
        assert!(detail.contains("trailing characters"), "{detail}");
        assert_eq!(
            got[3],
            Err((
                RejectReason::BadValue,
                r#"column `id`: cannot convert {"nested": true} to Int64"#.into()
            ))
        );
        // A good row after bad ones is intact: nothing of a rejected row leaked into it.
        assert_eq!(got[4], row([Some("5"), None, Some("folder"), None]));
    }
}
