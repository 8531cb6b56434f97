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
//! - a ROW column of nullable scalar fields is read field by field, by these same rules, into
//!   one text column per field (`StructText`; converted to the field types later, a field that
//!   does not convert rejecting its row and naming `row.field`); a string holding the object
//!   (JSON encoded twice) is read the same way. A ROW with nested or NOT NULL fields and an
//!   ARRAY are kept as their JSON text and decoded later by Arrow's JSON reader (exact field
//!   names there);
//! - an object or array fits only a ROW or ARRAY column or a string column (its compact text);
//!   any other column rejects the row (`bad_value`), before anything of the row is appended;
//! - text that is not UTF-8 or not one JSON object rejects the row (`invalid_json`) with the
//!   reason. The text is checked for UTF-8 once, then parsed as `str`.
//!
//! Invariant: every call appends exactly one value (or NULL) to every builder of the batch.

use std::collections::HashMap;
use std::fmt;

use arrow::array::StringBuilder;
use arrow::datatypes::{DataType, Fields};
use flowline_core::RejectReason;
use serde::de::{self, DeserializeSeed, MapAccess, Visitor};
use serde::Deserializer as _;
use serde_json::value::RawValue;
use serde_json::Value;

use crate::convert::{is_nested_type, is_string_type};
use crate::source::{csv_cell, StructText, TextBatch};

/// The declared columns as keys of a JSON object; built once per file or log batch.
pub(crate) struct JsonColumns {
    names: Vec<String>,
    /// Per column: its name in messages (`person.name` for a ROW's field).
    labels: Vec<String>,
    types: Vec<DataType>,
    is_string: Vec<bool>,
    is_nested: Vec<bool>,
    /// Per column: for a ROW of nullable scalar fields, its fields as keys of the nested
    /// object, read straight into a `StructText` (no text detour through a JSON decoder).
    rows: Vec<Option<JsonColumns>>,
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

/// Why a row is rejected.
type Failure = (RejectReason, String);

impl JsonColumns {
    pub(crate) fn new(fields: &Fields, partitions: Vec<Option<Option<String>>>) -> JsonColumns {
        Self::with_prefix(fields, partitions, "")
    }

    fn with_prefix(
        fields: &Fields,
        partitions: Vec<Option<Option<String>>>,
        prefix: &str,
    ) -> JsonColumns {
        let names: Vec<String> = fields.iter().map(|f| f.name().clone()).collect();
        let mut exact = HashMap::with_capacity(names.len());
        let mut folded = HashMap::with_capacity(names.len());
        for (c, name) in names.iter().enumerate() {
            exact.entry(name.clone()).or_insert(c);
            folded.entry(name.to_ascii_lowercase()).or_insert(c);
        }
        let labels: Vec<String> = names.iter().map(|n| format!("{prefix}{n}")).collect();
        JsonColumns {
            is_string: fields
                .iter()
                .map(|f| is_string_type(f.data_type()))
                .collect(),
            is_nested: fields
                .iter()
                .map(|f| is_nested_type(f.data_type()))
                .collect(),
            rows: fields
                .iter()
                .zip(&labels)
                .map(|(f, label)| match f.data_type() {
                    DataType::Struct(children) if is_flat_row(children) => {
                        Some(JsonColumns::with_prefix(
                            children,
                            vec![None; children.len()],
                            &format!("{label}."),
                        ))
                    }
                    _ => None,
                })
                .collect(),
            partitions,
            exact,
            folded,
            slots: vec![None; names.len()],
            decoded: vec![None; names.len()],
            fold: String::new(),
            types: fields.iter().map(|f| f.data_type().clone()).collect(),
            labels,
            names,
        }
    }

    /// An empty batch for these columns (ROW columns read field by field).
    pub(crate) fn text_batch(&self, capacity: usize) -> TextBatch {
        let mut batch = TextBatch::new(self.names.len(), capacity);
        if self.rows.iter().any(Option::is_some) {
            batch.structs = self
                .types
                .iter()
                .zip(&self.rows)
                .map(|(t, row)| match (t, row) {
                    (DataType::Struct(fields), Some(_)) => {
                        Some(StructText::new(fields, capacity.min(8192)))
                    }
                    _ => None,
                })
                .collect();
        }
        batch
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

    /// Decodes `text` into the next row of `batch` (made by `text_batch`, whose span the
    /// caller has pushed); a row that fails is recorded in `batch.failures` and appended as
    /// NULLs.
    pub(crate) fn decode_row(&mut self, batch: &mut TextBatch, text: &[u8]) {
        let row = batch.spans.len() - 1;
        // Validated once here (SIMD), so that serde_json reads it as `str` without checking
        // every string again.
        // `basic` is the faster check; where it fails, std says where.
        let checked = match simdutf8::basic::from_utf8(text) {
            Ok(text) => self.check(text).map(|()| text),
            Err(_) => Err((
                RejectReason::InvalidJson,
                match std::str::from_utf8(text) {
                    Err(e) => format!("invalid UTF-8: {e}"),
                    Ok(_) => "invalid UTF-8".to_string(),
                },
            )),
        };
        let text = match checked {
            Ok(text) => text,
            Err((reason, detail)) => {
                batch.failures.set(row, reason, detail);
                batch.append_nulls();
                return;
            }
        };
        self.append(text, &mut batch.builders, &mut batch.structs);
    }

    /// Locates every column's value in the object `text` and checks that each fits its
    /// column, appending nothing (so a failure leaves no part of the row behind).
    fn check(&mut self, text: &str) -> Result<(), Failure> {
        self.slots.iter_mut().for_each(|s| *s = None);
        self.locate(text)?;
        self.check_values(text)
    }

    /// The part of [`Self::check`] after `locate`.
    fn check_values(&mut self, text: &str) -> Result<(), Failure> {
        // A nested value only fits a string column (as its JSON text) or a ROW / ARRAY column.
        self.decoded.iter_mut().for_each(|d| *d = None);
        for c in 0..self.slots.len() {
            let Some(slot) = self.slots[c] else { continue };
            let raw = &text.as_bytes()[slot.start..slot.end];
            // serde_json checks escapes only when it decodes them: decode the strings that
            // have some (and nested values bound for a string column) before anything of the
            // row is appended, so that `"\ud800"` rejects the row as it always did.
            let decoded = match raw[0] {
                b'"' if raw.contains(&b'\\') => {
                    serde_json::from_str::<String>(&text[slot.start..slot.end]).map(Some)
                }
                // An object or array in a string column: its compact text, as Flink gives.
                b'{' | b'[' if self.is_string[c] => {
                    serde_json::from_str::<Value>(&text[slot.start..slot.end])
                        .map(|v| Some(v.to_string()))
                }
                _ => Ok(None),
            };
            match decoded {
                Ok(d) => self.decoded[c] = d,
                Err(e) => {
                    let detail = format!("column `{}`: {e}", self.labels[c]);
                    return Err((RejectReason::InvalidJson, detail));
                }
            }
            let fits = match (raw[0], &mut self.rows[c]) {
                (b'n', _) => true,
                (b'{', Some(fields)) => {
                    fields.check(&text[slot.start..slot.end])?;
                    true
                }
                // A ROW written as a string holding its object (JSON encoded twice), as the
                // text path reads it: blank or `null` is NULL.
                (b'"', Some(fields)) => {
                    let quoted = &text[slot.start + 1..slot.end - 1];
                    let inner = self.decoded[c].take().unwrap_or_else(|| quoted.to_string());
                    let inner = inner.trim();
                    let fits = match inner {
                        "" | "null" => true,
                        _ if inner.starts_with('{') => {
                            fields.slots.iter_mut().for_each(|s| *s = None);
                            fields.locate(inner).map_err(|(reason, detail)| {
                                (reason, format!("column `{}`: {detail}", self.labels[c]))
                            })?;
                            fields.check_values(inner)?;
                            true
                        }
                        _ => false,
                    };
                    self.decoded[c] = Some(if inner == "null" {
                        String::new()
                    } else {
                        inner.to_string()
                    });
                    fits
                }
                (_, Some(_)) => false,
                (b'{' | b'[', None) => self.is_string[c] || self.is_nested[c],
                _ => true,
            };
            if !fits {
                let detail = format!(
                    "column `{}`: cannot convert {} to {}",
                    self.labels[c],
                    &text[slot.start..slot.end],
                    self.types[c]
                );
                return Err((RejectReason::BadValue, detail));
            }
        }
        Ok(())
    }

    /// Appends the row `check` located: one value or NULL to every builder.
    fn append(
        &self,
        text: &str,
        builders: &mut [StringBuilder],
        structs: &mut [Option<StructText>],
    ) {
        for (c, slot) in self.slots.iter().enumerate() {
            let builder = &mut builders[c];
            if let (Some(Some(row)), Some(fields)) = (structs.get_mut(c), &self.rows[c]) {
                builder.append_null();
                // The object in place, or the one a string held (`check` kept it unescaped).
                let object = match (slot, &self.decoded[c]) {
                    (Some(_), Some(inner)) if !inner.is_empty() => Some(inner.as_str()),
                    (Some(slot), None) if text.as_bytes()[slot.start] == b'{' => {
                        Some(&text[slot.start..slot.end])
                    }
                    _ => None,
                };
                match object {
                    Some(object) => {
                        fields.append(object, &mut row.children, &mut []);
                        row.valid.append_non_null();
                    }
                    None => row.append_null(),
                }
                continue;
            }
            let Some(slot) = slot else {
                match &self.partitions[c] {
                    Some(v) => builder.append_option(v.as_deref()),
                    None => builder.append_null(),
                }
                continue;
            };
            // serde_json validated the text: each value is well formed.
            let raw = &text[slot.start..slot.end];
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
    fn locate(&mut self, text: &str) -> Result<(), Failure> {
        let first = text.bytes().find(|b| !b.is_ascii_whitespace());
        if first != Some(b'{') {
            // Not an object: say what it is (or why it is not JSON at all).
            return Err(match serde_json::from_str::<Value>(text) {
                Ok(other) => (
                    RejectReason::InvalidJson,
                    format!("expected a JSON object, found {}", json_kind(&other)),
                ),
                Err(e) => (RejectReason::InvalidJson, e.to_string()),
            });
        }
        let mut de = serde_json::Deserializer::from_str(text);
        let visitor = ObjectVisitor {
            columns: self,
            base: text.as_ptr() as usize,
        };
        de.deserialize_map(visitor)
            .and_then(|()| de.end())
            .map_err(|e| (RejectReason::InvalidJson, e.to_string()))
    }
}

/// A ROW read field by field: every field nullable (a missing key is NULL) and scalar.
fn is_flat_row(fields: &Fields) -> bool {
    !fields.is_empty()
        && fields
            .iter()
            .all(|f| f.is_nullable() && !is_nested_type(f.data_type()))
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
    use std::sync::Arc;

    use arrow::array::{Array, ArrayRef, StringArray};
    use arrow::datatypes::Field;
    use arrow::util::display::{ArrayFormatter, FormatOptions};

    use super::*;

    fn fields() -> Fields {
        Fields::from(vec![
            Field::new("id", DataType::Int64, true),
            Field::new("Name", DataType::Utf8, true),
            Field::new("p", DataType::Utf8, true),
            Field::new(
                "r",
                DataType::Struct(Fields::from(vec![
                    Field::new("a", DataType::Int64, true),
                    Field::new("s", DataType::Utf8, true),
                ])),
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
        let mut batch = columns.text_batch(lines.len());
        for (i, line) in lines.iter().enumerate() {
            batch.spans.push((i as u64 + 1, 0, line.len()));
            columns.decode_row(&mut batch, line.as_bytes());
        }
        let texts: Vec<StringArray> = batch.builders.iter_mut().map(|b| b.finish()).collect();
        // The ROW column is read field by field: its text column holds only NULLs.
        assert_eq!(texts[3].null_count(), lines.len());
        let row_column = batch.structs[3]
            .as_mut()
            .expect("r is read by field")
            .finish();
        let mut arrays: Vec<ArrayRef> =
            texts.into_iter().map(|a| Arc::new(a) as ArrayRef).collect();
        arrays[3] = row_column;
        assert!(
            arrays.iter().all(|a| a.len() == lines.len()),
            "one value per row and column"
        );
        (0..lines.len())
            .map(|row| match batch.failures.get(row) {
                Some((reason, detail)) => Err((reason, detail.to_string())),
                None => Ok(arrays
                    .iter()
                    .map(|a| {
                        let text = ArrayFormatter::try_new(a.as_ref(), &FormatOptions::default())
                            .expect("formats");
                        (!a.is_null(row)).then(|| text.value(row).to_string())
                    })
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
                Some("{a: 7, s: }")
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
    #[test]
    fn rows_are_read_field_by_field() {
        let got = decode(&[
            r#"{"id": 1, "r": {"A": " 5 ", "s": "x\"y", "extra": {"deep": [1]}}}"#,
            r#"{"id": 2, "r": {"s": {"k": 1}, "a": 1, "a": 2}}"#,
            r#"{"id": 3, "r": null}"#,
            r#"{"id": 4}"#,
            r#"{"id": 5, "r": {"a": [1]}}"#,
            r#"{"id": 6, "r": "text"}"#,
            r#"{"id": 7, "r": {"s": "\udc00"}}"#,
            r#"{"id": 8, "r": {}}"#,
            r#"{"id": 9, "r": " {\"a\": 3} "}"#,
            r#"{"id": 10, "r": " "}"#,
            r#"{"id": 11, "r": "{\"a\": [1]}"}"#,
            r#"{"id": 12, "r": "{bad"}"#,
        ]);
        // Field keys match as top-level keys do; a field's text is trimmed for a non-string
        // field and unescaped; unknown fields are skipped, whatever they hold.
        assert_eq!(
            got[0],
            row([Some("1"), None, Some("folder"), Some("{a: 5, s: x\"y}")])
        );
        // An object in a string field is its compact text; the last exact key wins.
        assert_eq!(
            got[1],
            row([
                Some("2"),
                None,
                Some("folder"),
                Some(r#"{a: 2, s: {"k":1}}"#)
            ])
        );
        // null or a missing key is a NULL row; an empty object a row of NULL fields.
        assert_eq!(got[2], row([Some("3"), None, Some("folder"), None]));
        assert_eq!(got[3], row([Some("4"), None, Some("folder"), None]));
        assert_eq!(
            got[7],
            row([Some("8"), None, Some("folder"), Some("{a: , s: }")])
        );
        // What does not fit names the field, or the ROW column.
        assert_eq!(
            got[4],
            Err((
                RejectReason::BadValue,
                "column `r.a`: cannot convert [1] to Int64".into()
            ))
        );
        let (reason, detail) = got[5].clone().unwrap_err();
        assert_eq!(reason, RejectReason::BadValue);
        assert!(
            detail.starts_with(r#"column `r`: cannot convert "text" to Struct"#),
            "{detail}"
        );
        let (reason, detail) = got[6].clone().unwrap_err();
        assert_eq!(reason, RejectReason::InvalidJson);
        assert!(detail.starts_with("column `r.s`: "), "{detail}");
        // A string holding the object (JSON encoded twice) reads as the object; blank is NULL.
        assert_eq!(
            got[8],
            row([Some("9"), None, Some("folder"), Some("{a: 3, s: }")])
        );
        assert_eq!(got[9], row([Some("10"), None, Some("folder"), None]));
        assert_eq!(
            got[10],
            Err((
                RejectReason::BadValue,
                "column `r.a`: cannot convert [1] to Int64".into()
            ))
        );
        let (reason, detail) = got[11].clone().unwrap_err();
        assert_eq!(reason, RejectReason::InvalidJson);
        assert!(detail.starts_with("column `r`: "), "{detail}");
    }
    #[test]
    fn invalid_utf8_rejects_the_row() {
        let fields = fields();
        let mut columns = JsonColumns::new(&fields, vec![None; 4]);
        let mut batch = columns.text_batch(2);
        for (i, line) in [&b"{\"id\": 1, \"Name\": \"a\xff\"}"[..], b"{\"id\": 2}"]
            .iter()
            .enumerate()
        {
            batch.spans.push((i as u64 + 1, 0, line.len()));
            columns.decode_row(&mut batch, line);
        }
        let (reason, detail) = batch.failures.get(0).expect("row 1 rejected");
        assert_eq!(reason, RejectReason::InvalidJson);
        assert!(detail.starts_with("invalid UTF-8: "), "{detail}");
        assert!(batch.failures.get(1).is_none());
        let ids = batch.builders[0].finish();
        assert!(ids.is_null(0));
        assert_eq!(ids.value(1), "2");
    }
}
