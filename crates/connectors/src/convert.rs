//! The conversion step shared by every source format: columns as read (text for CSV and JSON,
//! typed for Parquet) become exactly the declared schema; rows that do not convert become
//! rejects and are removed from the batch.

use std::path::Path;
use std::sync::Arc;

use arrow::array::timezone::Tz;
use arrow::array::{
    Array, ArrayRef, BooleanArray, BooleanBuilder, Date32Array, Date64Array, PrimitiveArray,
    RecordBatch, RecordBatchOptions, StringArray, StructArray,
};
use arrow::buffer::{BooleanBuffer, NullBuffer};
use arrow::compute::{cast_with_options, CastOptions, FilterBuilder};
use arrow::datatypes::{
    ArrowTimestampType, DataType, Date32Type, Date64Type, Fields, SchemaRef, TimeUnit,
    TimestampMicrosecondType, TimestampMillisecondType, TimestampNanosecondType,
    TimestampSecondType,
};
use arrow::util::display::{ArrayFormatter, FormatOptions};
use chrono::{DateTime, NaiveDate, NaiveDateTime, TimeZone};
use datafusion::scalar::ScalarValue;
use flowline_core::{Error, Reject, RejectReason, Result, TableDef};

use crate::computed::ComputedColumns;
use crate::needed::Needed;
use crate::source::Decoded;

/// Why one row failed before or during conversion.
pub(crate) struct Failure {
    pub reason: RejectReason,
    pub detail: String,
}

/// The failed rows of one batch, by row index. Allocates nothing while no row fails.
#[derive(Default)]
pub(crate) struct Failures {
    slots: Vec<Option<Failure>>,
    count: usize,
}

impl Failures {
    /// Records a failure for `row` unless the row already failed (the first reason wins).
    pub(crate) fn set(&mut self, row: usize, reason: RejectReason, detail: String) {
        if row >= self.slots.len() {
            self.slots.resize_with(row + 1, || None);
        }
        if self.slots[row].is_none() {
            self.slots[row] = Some(Failure { reason, detail });
            self.count += 1;
        }
    }

    #[cfg(test)]
    pub(crate) fn get(&self, row: usize) -> Option<(RejectReason, &str)> {
        let f = self.slots.get(row)?.as_ref()?;
        Some((f.reason, f.detail.as_str()))
    }

    pub(crate) fn is_failed(&self, row: usize) -> bool {
        self.slots.get(row).is_some_and(Option::is_some)
    }
}

/// Whether `dt` is a string type (an empty text field is a value, not NULL, for these).
pub(crate) fn is_string_type(dt: &DataType) -> bool {
    matches!(
        dt,
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
    )
}

/// Why a value that does not convert to `target` is rejected.
fn reason_for(target: &DataType) -> RejectReason {
    if is_time_type(target) {
        RejectReason::BadTimestamp
    } else {
        RejectReason::BadValue
    }
}

pub(crate) fn is_time_type(dt: &DataType) -> bool {
    matches!(
        dt,
        DataType::Timestamp(_, _) | DataType::Date32 | DataType::Date64
    )
}

/// Whether text can be converted to `dt` at all (checked when a CSV/JSON table is opened).
pub(crate) fn text_convertible(dt: &DataType) -> bool {
    is_nested_type(dt) || arrow::compute::can_cast_types(&DataType::Utf8, dt)
}

/// `ROW<...>` and `ARRAY<...>` columns: read from JSON text (a JSON object or array, nested in
/// a JSON line or as the text of a CSV field).
pub(crate) fn is_nested_type(dt: &DataType) -> bool {
    matches!(
        dt,
        DataType::Struct(_) | DataType::List(_) | DataType::LargeList(_)
    )
}

/// Decodes JSON texts into a nested column of type `target`. A text that is not valid JSON of
/// that shape becomes NULL (and so a reject, named by the caller).
fn json_to_nested(strings: &StringArray, target: &DataType) -> Result<ArrayRef> {
    let schema = Arc::new(arrow::datatypes::Schema::new(vec![
        arrow::datatypes::Field::new("v", target.clone(), true),
    ]));
    let decode = |rows: &mut dyn Iterator<Item = Option<&str>>| -> std::result::Result<ArrayRef, arrow::error::ArrowError> {
        let mut text = String::new();
        let mut count = 0;
        for v in rows {
            text.push_str("{\"v\":");
            text.push_str(v.unwrap_or("null"));
            text.push_str("}\n");
            count += 1;
        }
        let mut decoder = arrow::json::ReaderBuilder::new(Arc::clone(&schema))
            .with_batch_size(count.max(1))
            .build_decoder()?;
        decoder.decode(text.as_bytes())?;
        let batch = decoder.flush()?;
        match batch {
            Some(b) if b.num_rows() == count => Ok(Arc::clone(b.column(0))),
            _ => Err(arrow::error::ArrowError::JsonError(
                "not one value per row".into(),
            )),
        }
    };
    if let Ok(all) = decode(&mut strings.iter()) {
        return Ok(all);
    }
    let mut parts: Vec<ArrayRef> = Vec::with_capacity(strings.len());
    for v in strings.iter() {
        let one = decode(&mut std::iter::once(v))
            .unwrap_or_else(|_| arrow::array::new_null_array(target, 1));
        parts.push(one);
    }
    let refs: Vec<&dyn Array> = parts.iter().map(|a| a.as_ref()).collect();
    Ok(arrow::compute::concat(&refs)?)
}

/// A user-given `timestamp-format` (a chrono strftime pattern).
struct TimestampFormat {
    pattern: String,
    /// The pattern contains a UTC offset, so values are instants rather than local times.
    with_offset: bool,
}

impl TimestampFormat {
    /// Parses `s` as a date-time; a date-only pattern gives midnight.
    fn parse_naive(&self, s: &str) -> Option<NaiveDateTime> {
        if self.with_offset {
            if let Ok(t) = DateTime::parse_from_str(s, &self.pattern) {
                return Some(t.naive_utc());
            }
        }
        if let Ok(t) = NaiveDateTime::parse_from_str(s, &self.pattern) {
            return Some(t);
        }
        NaiveDate::parse_from_str(s, &self.pattern)
            .ok()
            .and_then(|d| d.and_hms_opt(0, 0, 0))
    }

    /// Parses `s` as a date; a date-time pattern gives its date.
    fn parse_date(&self, s: &str) -> Option<NaiveDate> {
        NaiveDate::parse_from_str(s, &self.pattern)
            .ok()
            .or_else(|| self.parse_naive(s).map(|t| t.date()))
    }
}

/// Converts columns of one table to its declared schema.
pub(crate) struct Converter {
    table: String,
    /// The physical columns: what the formats decode.
    schema: SchemaRef,
    /// The physical columns and the computed ones, in declared order: every decoded batch.
    output: SchemaRef,
    computed: Option<ComputedColumns>,
    timestamp_format: Option<TimestampFormat>,
    /// Index of the watermark (event-time) column in `output`.
    watermark: Option<usize>,
    cast_options: CastOptions<'static>,
}

impl Converter {
    pub(crate) fn new(def: &TableDef, timestamp_format: Option<&str>) -> Result<Self> {
        let schema = def.schema();
        let computed = ComputedColumns::plan(def)?;
        let output = computed
            .as_ref()
            .map_or_else(|| Arc::clone(&schema), |c| Arc::clone(c.schema()));
        let watermark = match &def.watermark {
            None => None,
            Some(w) => {
                let fields = output.fields();
                let i = fields
                    .iter()
                    .position(|f| f.name() == &w.column)
                    .or_else(|| {
                        fields
                            .iter()
                            .position(|f| f.name().eq_ignore_ascii_case(&w.column))
                    })
                    .ok_or_else(|| {
                        Error::option(
                            &def.name,
                            format!("watermark column `{}` is not a declared column", w.column),
                        )
                    })?;
                if !matches!(fields[i].data_type(), DataType::Timestamp(..)) {
                    return Err(Error::option(
                        &def.name,
                        format!(
                            "WATERMARK FOR `{}`: the column must be a TIMESTAMP, its expression \
                             gives {}",
                            w.column,
                            fields[i].data_type()
                        ),
                    ));
                }
                Some(i)
            }
        };
        let timestamp_format = timestamp_format.map(|p| TimestampFormat {
            pattern: p.to_string(),
            with_offset: p.contains("%z") || p.contains("%:z") || p.contains("%#z"),
        });
        Ok(Converter {
            table: def.name.clone(),
            schema,
            output,
            computed,
            timestamp_format,
            watermark,
            cast_options: CastOptions {
                safe: true,
                format_options: FormatOptions::default(),
            },
        })
    }

    /// The physical columns, which the formats decode.
    pub(crate) fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// The columns of every decoded batch: physical and computed, in declared order.
    pub(crate) fn output_schema(&self) -> &SchemaRef {
        &self.output
    }

    /// What decoding reads of the physical columns when the pipeline reads `needed` of the
    /// declared ones (computed columns read physical ones).
    pub(crate) fn physical_needed(&self, needed: &Needed) -> Needed {
        match &self.computed {
            Some(computed) => computed.physical_needed(needed),
            None => needed.clone(),
        }
    }

    /// Converts one column to `target`. Values that do not convert become NULL; the caller
    /// finds them by comparing nulls. Errors only when the conversion is not possible at all.
    fn convert_column(
        &self,
        input: &ArrayRef,
        target: &DataType,
    ) -> std::result::Result<ArrayRef, arrow::error::ArrowError> {
        if input.data_type() == target {
            return Ok(Arc::clone(input));
        }
        if let (DataType::Struct(targets), Some(fields)) =
            (target, input.as_any().downcast_ref::<StructArray>())
        {
            if let Some(sources) = row_field_sources(fields.fields(), targets) {
                return self.convert_struct(fields, &sources, targets);
            }
        }
        if is_nested_type(target) && input.data_type() == &DataType::Utf8 {
            let strings = input
                .as_any()
                .downcast_ref::<StringArray>()
                .expect("Utf8 is a StringArray");
            return json_to_nested(strings, target)
                .map_err(|e| arrow::error::ArrowError::ComputeError(e.to_string()));
        }
        let special = matches!(target, DataType::Boolean)
            || (self.timestamp_format.is_some() && is_time_type(target));
        if special && is_string_type(input.data_type()) {
            let utf8 = if input.data_type() == &DataType::Utf8 {
                Arc::clone(input)
            } else {
                cast_with_options(input, &DataType::Utf8, &self.cast_options)?
            };
            let strings = utf8
                .as_any()
                .downcast_ref::<StringArray>()
                .expect("cast to Utf8 gives a StringArray");
            return Ok(match target {
                DataType::Boolean => parse_booleans(strings),
                _ => self.parse_times(strings, target),
            });
        }
        cast_with_options(input, target, &self.cast_options)
    }

    /// Converts a ROW whose fields are the declared ones (by name, in order; read field by
    /// field, each field text) to the declared field types. A row whose field does not convert
    /// becomes NULL as a whole (and so a reject).
    fn convert_struct(
        &self,
        input: &StructArray,
        sources: &[usize],
        targets: &Fields,
    ) -> std::result::Result<ArrayRef, arrow::error::ArrowError> {
        let mut valid: Option<BooleanBuffer> = input.nulls().map(|n| n.inner().clone());
        let mut children = Vec::with_capacity(targets.len());
        for (&source, field) in sources.iter().zip(targets) {
            let child = input.column(source);
            let out = self.convert_column(child, field.data_type())?;
            if out.logical_null_count() > child.logical_null_count() {
                // Rows where the field had text but no value: the row is not kept.
                let had = child.logical_nulls().map(|n| n.inner().clone());
                let got = out.logical_nulls().map(|n| n.inner().clone());
                let lost = match (had, got) {
                    (Some(had), Some(got)) => &had & &!&got,
                    (None, Some(got)) => !&got,
                    (_, None) => BooleanBuffer::new_unset(input.len()),
                };
                let keep = !&lost;
                valid = Some(match valid {
                    Some(v) => &v & &keep,
                    None => keep,
                });
            }
            children.push(out);
        }
        let nulls = valid.map(NullBuffer::new);
        Ok(Arc::new(StructArray::try_new(
            targets.clone(),
            children,
            nulls,
        )?))
    }

    /// Converts one text value (a partition folder value) to a typed scalar, or `None` when it
    /// does not convert.
    pub(crate) fn constant(&self, value: Option<&str>, target: &DataType) -> Option<ScalarValue> {
        let value = value.filter(|v| is_string_type(target) || !v.trim().is_empty());
        let input: ArrayRef = Arc::new(StringArray::from(vec![value]));
        let out = self.convert_column(&input, target).ok()?;
        if value.is_some() && out.logical_null_count() > 0 {
            return None;
        }
        ScalarValue::try_from_array(&out, 0).ok()
    }

    fn parse_times(&self, strings: &StringArray, target: &DataType) -> ArrayRef {
        let format = self
            .timestamp_format
            .as_ref()
            .expect("parse_times is only used with a timestamp format");
        match target {
            DataType::Date32 => Arc::new(
                strings
                    .iter()
                    .map(|v| v.and_then(|s| format.parse_date(s.trim())))
                    .map(|d| d.map(Date32Type::from_naive_date))
                    .collect::<Date32Array>(),
            ),
            DataType::Date64 => Arc::new(
                strings
                    .iter()
                    .map(|v| v.and_then(|s| format.parse_date(s.trim())))
                    .map(|d| d.map(Date64Type::from_naive_date))
                    .collect::<Date64Array>(),
            ),
            DataType::Timestamp(unit, tz) => {
                let tz: Option<Tz> = tz.as_deref().and_then(|t| t.parse().ok());
                match unit {
                    TimeUnit::Second => {
                        timestamps::<TimestampSecondType>(strings, format, tz, target)
                    }
                    TimeUnit::Millisecond => {
                        timestamps::<TimestampMillisecondType>(strings, format, tz, target)
                    }
                    TimeUnit::Microsecond => {
                        timestamps::<TimestampMicrosecondType>(strings, format, tz, target)
                    }
                    TimeUnit::Nanosecond => {
                        timestamps::<TimestampNanosecondType>(strings, format, tz, target)
                    }
                }
            }
            other => unreachable!("parse_times called for {other}"),
        }
    }

    /// Converts `columns` (one per declared column, `rows` long, any type) to the declared
    /// schema, and returns the good rows as a batch and the others as rejects.
    ///
    /// `failures` holds rows that already failed while being read (their cells are NULL).
    /// `meta(row)` gives the 1-based line and the raw text of a row; it is only called for
    /// rejected rows.
    pub(crate) fn finish(
        &self,
        columns: Vec<ArrayRef>,
        rows: usize,
        mut failures: Failures,
        path: &Path,
        meta: &mut dyn FnMut(usize) -> (u64, String),
    ) -> Result<Decoded> {
        debug_assert_eq!(columns.len(), self.schema.fields().len());
        let mut converted = Vec::with_capacity(columns.len());
        for (input, field) in columns.iter().zip(self.schema.fields()) {
            let target = field.data_type();
            let out = self
                .convert_column(input, target)
                .map_err(|e| Error::Input {
                    path: path.to_path_buf(),
                    message: format!(
                        "column `{}`: cannot convert {} to {target}: {e}",
                        field.name(),
                        input.data_type()
                    ),
                })?;
            if out.logical_null_count() > input.logical_null_count() {
                let in_nulls = input.logical_nulls();
                let out_nulls = out.logical_nulls();
                let reason = reason_for(target);
                for row in 0..rows {
                    if is_null(&out_nulls, row)
                        && !is_null(&in_nulls, row)
                        && !failures.is_failed(row)
                    {
                        let (reason, detail) = match struct_field_failure(input, &out, row) {
                            Some((name, value, target)) => (
                                reason_for(&target),
                                format!(
                                    "column `{}.{name}`: cannot convert '{value}' to {target}",
                                    field.name()
                                ),
                            ),
                            None => (
                                reason,
                                format!(
                                    "column `{}`: cannot convert '{}' to {target}",
                                    field.name(),
                                    render_value(input, row)
                                ),
                            ),
                        };
                        failures.set(row, reason, detail);
                    }
                }
            }
            converted.push(out);
        }
        if let Some(computed) = &self.computed {
            converted = computed.apply(&self.schema, converted, rows, &mut failures)?;
        }

        if let Some(w) = self.watermark {
            let column = &converted[w];
            if column.logical_null_count() > 0 {
                let nulls = column.logical_nulls();
                for row in 0..rows {
                    if is_null(&nulls, row) && !failures.is_failed(row) {
                        failures.set(
                            row,
                            RejectReason::MissingEventTime,
                            format!(
                                "column `{}`: the event time is empty",
                                self.output.field(w).name()
                            ),
                        );
                    }
                }
            }
        }

        for (column, field) in converted.iter().zip(self.output.fields()) {
            if !field.is_nullable() && column.logical_null_count() > 0 {
                let nulls = column.logical_nulls();
                for row in 0..rows {
                    if is_null(&nulls, row) && !failures.is_failed(row) {
                        failures.set(
                            row,
                            RejectReason::BadValue,
                            format!("column `{}`: NULL in a NOT NULL column", field.name()),
                        );
                    }
                }
            }
        }

        let options = RecordBatchOptions::new().with_row_count(Some(rows));
        if failures.count == 0 {
            let batch =
                RecordBatch::try_new_with_options(Arc::clone(&self.output), converted, &options)?;
            return Ok(Decoded {
                batch,
                rejects: Vec::new(),
            });
        }

        let file = path.display().to_string();
        let mut rejects = Vec::with_capacity(failures.count);
        let mut keep = BooleanBuilder::with_capacity(rows);
        for row in 0..rows {
            match failures.slots.get_mut(row).and_then(Option::take) {
                Some(f) => {
                    keep.append_value(false);
                    let (line, raw) = meta(row);
                    rejects.push(Reject {
                        reason: f.reason,
                        detail: f.detail,
                        table: self.table.clone(),
                        sink: None,
                        file: Some(file.clone()),
                        line: Some(line),
                        raw,
                        window: None,
                        watermark: None,
                    });
                }
                None => keep.append_value(true),
            }
        }
        let keep: BooleanArray = keep.finish();
        let predicate = FilterBuilder::new(&keep).optimize().build();
        let kept = keep.true_count();
        let columns = converted
            .iter()
            .map(|c| predicate.filter(c))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let batch = RecordBatch::try_new_with_options(
            Arc::clone(&self.output),
            columns,
            &RecordBatchOptions::new().with_row_count(Some(kept)),
        )?;
        Ok(Decoded { batch, rejects })
    }
}

fn is_null(nulls: &Option<NullBuffer>, row: usize) -> bool {
    nulls.as_ref().is_some_and(|n| n.is_null(row))
}

/// For a ROW read field by field whose `row` did not convert: the first field that had text
/// but no value, that text, and the field's type.
fn struct_field_failure(
    input: &ArrayRef,
    out: &ArrayRef,
    row: usize,
) -> Option<(String, String, DataType)> {
    let input = input.as_any().downcast_ref::<StructArray>()?;
    let out = out.as_any().downcast_ref::<StructArray>()?;
    let DataType::Struct(fields) = out.data_type() else {
        return None;
    };
    let sources = row_field_sources(input.fields(), fields)?;
    (0..fields.len()).find_map(|i| {
        let (text, value) = (input.column(sources[i]), out.column(i));
        (text.is_valid(row) && value.is_null(row)).then(|| {
            (
                fields[i].name().clone(),
                render_value(text, row),
                fields[i].data_type().clone(),
            )
        })
    })
}

/// Which field of an input ROW (`input`) each declared field takes: the one of the same name
/// when every declared name is there (a Parquet ROW in another field order), else the one at the
/// same position when both have as many fields (declared names differ from the data's); `None`
/// otherwise.
pub(crate) fn row_field_sources(input: &Fields, declared: &Fields) -> Option<Vec<usize>> {
    let by_name: Option<Vec<usize>> = declared
        .iter()
        .map(|d| input.iter().position(|f| f.name() == d.name()))
        .collect();
    by_name.or_else(|| (input.len() == declared.len()).then(|| (0..declared.len()).collect()))
}

/// Renders one value of `array` for a reject's detail.
fn render_value(array: &ArrayRef, row: usize) -> String {
    if let Some(s) = array.as_any().downcast_ref::<StringArray>() {
        return s.value(row).to_string();
    }
    ArrayFormatter::try_new(array.as_ref(), &FormatOptions::default())
        .map(|f| f.value(row).to_string())
        .unwrap_or_else(|_| "?".to_string())
}

/// `true` / `false` / `1` / `0`, case-insensitive, surrounding spaces ignored. Anything else
/// becomes NULL (and so a reject).
fn parse_booleans(strings: &StringArray) -> ArrayRef {
    Arc::new(
        strings
            .iter()
            .map(|v| {
                v.and_then(|s| {
                    let s = s.trim();
                    if s.eq_ignore_ascii_case("true") || s == "1" {
                        Some(true)
                    } else if s.eq_ignore_ascii_case("false") || s == "0" {
                        Some(false)
                    } else {
                        None
                    }
                })
            })
            .collect::<BooleanArray>(),
    )
}

fn timestamps<T: ArrowTimestampType>(
    strings: &StringArray,
    format: &TimestampFormat,
    tz: Option<Tz>,
    target: &DataType,
) -> ArrayRef {
    let tz_name = match target {
        DataType::Timestamp(_, tz) => tz.clone(),
        _ => None,
    };
    let values = strings
        .iter()
        .map(|v| {
            let naive = format.parse_naive(v?.trim())?;
            // A local time in a zoned column is read in that zone (as arrow's cast does).
            let utc = match (&tz, format.with_offset) {
                (Some(tz), false) => tz.from_local_datetime(&naive).earliest()?.naive_utc(),
                _ => naive,
            };
            T::from_naive_datetime(utc, None)
        })
        .collect::<PrimitiveArray<T>>();
    Arc::new(values.with_timezone_opt(tz_name))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{AsArray, Int32Array};
    use arrow::datatypes::Field;
    use arrow::datatypes::{Int32Type, Int64Type};
    use flowline_core::{ColumnDef, WatermarkDef};
    use std::collections::BTreeMap;

    fn def(columns: &[(&str, DataType, bool)], watermark: Option<&str>) -> TableDef {
        TableDef {
            name: "t".into(),
            columns: columns
                .iter()
                .map(|(n, t, nullable)| ColumnDef {
                    name: n.to_string(),
                    data_type: t.clone(),
                    nullable: *nullable,
                })
                .collect(),
            computed: vec![],
            watermark: watermark.map(|c| WatermarkDef {
                column: c.into(),
                delay_ms: 0,
            }),
            primary_key: vec![],
            options: BTreeMap::new(),
            line: 1,
        }
    }

    fn strings(v: &[Option<&str>]) -> ArrayRef {
        Arc::new(StringArray::from(v.to_vec()))
    }

    #[test]
    fn converts_and_rejects() {
        let d = def(
            &[
                ("id", DataType::Int32, false),
                ("ok", DataType::Boolean, true),
                ("ts", DataType::Timestamp(TimeUnit::Millisecond, None), true),
            ],
            Some("ts"),
        );
        let conv = Converter::new(&d, None).unwrap();
        let columns = vec![
            strings(&[Some("1"), Some("x"), Some("3"), None, Some("5")]),
            strings(&[Some("TRUE"), Some("0"), Some("yes"), Some("1"), None]),
            strings(&[
                Some("2026-03-17 10:00:00"),
                Some("2026-03-17T10:00:00.123Z"),
                Some("2026-03-17"),
                Some("2026-03-17 10:00:00"),
                None,
            ]),
        ];
        let out = conv
            .finish(columns, 5, Failures::default(), Path::new("f"), &mut |r| {
                (r as u64 + 1, format!("row{r}"))
            })
            .unwrap();
        assert_eq!(out.batch.num_rows(), 1);
        assert_eq!(
            out.batch.column(0).as_primitive::<Int32Type>(),
            &Int32Array::from(vec![1])
        );
        let reasons: Vec<_> = out
            .rejects
            .iter()
            .map(|r| (r.line.unwrap(), r.reason, r.detail.as_str()))
            .collect();
        assert_eq!(
            reasons,
            vec![
                (
                    2,
                    RejectReason::BadValue,
                    "column `id`: cannot convert 'x' to Int32"
                ),
                (
                    3,
                    RejectReason::BadValue,
                    "column `ok`: cannot convert 'yes' to Boolean"
                ),
                (
                    4,
                    RejectReason::BadValue,
                    "column `id`: NULL in a NOT NULL column"
                ),
                (
                    5,
                    RejectReason::MissingEventTime,
                    "column `ts`: the event time is empty"
                ),
            ]
        );
        assert_eq!(out.rejects[0].raw, "row1");
    }

    #[test]
    fn a_row_read_field_by_field_rejects_naming_the_field() {
        let fields = Fields::from(vec![
            Field::new("n", DataType::Int64, true),
            Field::new("at", DataType::Timestamp(TimeUnit::Millisecond, None), true),
        ]);
        let d = def(&[("r", DataType::Struct(fields.clone()), true)], None);
        let conv = Converter::new(&d, None).unwrap();
        // Rows: good; a bad number; a bad time; a NULL row (not a reject).
        let text_fields = Fields::from(vec![
            Field::new("n", DataType::Utf8, true),
            Field::new("at", DataType::Utf8, true),
        ]);
        let input: ArrayRef = Arc::new(StructArray::new(
            text_fields,
            vec![
                strings(&[Some("1"), Some("x"), Some("3"), None]),
                strings(&[Some("2026-03-17 10:00:00"), None, Some("soon"), None]),
            ],
            Some(NullBuffer::from(vec![true, true, true, false])),
        ));
        let out = conv
            .finish(
                vec![input],
                4,
                Failures::default(),
                Path::new("f"),
                &mut |r| (r as u64 + 1, format!("row{r}")),
            )
            .unwrap();
        assert_eq!(out.batch.num_rows(), 2);
        assert_eq!(out.batch.column(0).null_count(), 1);
        let reasons: Vec<_> = out
            .rejects
            .iter()
            .map(|r| (r.line.unwrap(), r.reason, r.detail.as_str()))
            .collect();
        assert_eq!(
            reasons,
            vec![
                (
                    2,
                    RejectReason::BadValue,
                    "column `r.n`: cannot convert 'x' to Int64"
                ),
                (
                    3,
                    RejectReason::BadTimestamp,
                    "column `r.at`: cannot convert 'soon' to Timestamp(ms)"
                ),
            ]
        );
    }

    #[test]
    fn a_row_in_another_field_order_rejects_a_field_that_does_not_fit() {
        // Matched by name, each field is converted on its own: a value that does not fit its
        // declared type rejects the row, naming the field (not a silent NULL field).
        let declared = Fields::from(vec![
            Field::new("a", DataType::Int8, true),
            Field::new("b", DataType::Int64, true),
        ]);
        let d = def(&[("r", DataType::Struct(declared), true)], None);
        let conv = Converter::new(&d, None).unwrap();
        let input: ArrayRef = Arc::new(StructArray::new(
            Fields::from(vec![
                Field::new("b", DataType::Int32, true),
                Field::new("a", DataType::Int32, true),
            ]),
            vec![
                Arc::new(Int32Array::from(vec![20, 21])),
                Arc::new(Int32Array::from(vec![10, 300])),
            ],
            None,
        ));
        let out = conv
            .finish(
                vec![input],
                2,
                Failures::default(),
                Path::new("f"),
                &mut |r| (r as u64 + 1, format!("row{r}")),
            )
            .unwrap();
        assert_eq!(out.batch.num_rows(), 1);
        let reasons: Vec<_> = out
            .rejects
            .iter()
            .map(|r| (r.line.unwrap(), r.reason, r.detail.as_str()))
            .collect();
        assert_eq!(
            reasons,
            vec![(
                2,
                RejectReason::BadValue,
                "column `r.a`: cannot convert '300' to Int8"
            )]
        );
    }

    #[test]
    fn a_typed_row_in_another_field_order_converts_by_name() {
        // A Parquet ROW may list its fields in another order than the declaration.
        let declared = Fields::from(vec![
            Field::new("a", DataType::Int64, true),
            Field::new("b", DataType::Int64, true),
        ]);
        let d = def(&[("r", DataType::Struct(declared), true)], None);
        let conv = Converter::new(&d, None).unwrap();
        let input: ArrayRef = Arc::new(StructArray::new(
            Fields::from(vec![
                Field::new("b", DataType::Int32, true),
                Field::new("a", DataType::Int32, true),
            ]),
            vec![
                Arc::new(Int32Array::from(vec![20, 21])),
                Arc::new(Int32Array::from(vec![10, 11])),
            ],
            None,
        ));
        let out = conv
            .finish(
                vec![input],
                2,
                Failures::default(),
                Path::new("f"),
                &mut |r| (r as u64 + 1, format!("row{r}")),
            )
            .unwrap();
        assert!(out.rejects.is_empty());
        let row = out.batch.column(0).as_struct();
        assert_eq!(
            row.column_by_name("a")
                .unwrap()
                .as_primitive::<Int64Type>()
                .values(),
            &[10, 11]
        );
        assert_eq!(
            row.column_by_name("b")
                .unwrap()
                .as_primitive::<Int64Type>()
                .values(),
            &[20, 21]
        );
    }

    #[test]
    fn timestamp_format() {
        let d = def(
            &[
                ("ts", DataType::Timestamp(TimeUnit::Second, None), true),
                ("d", DataType::Date32, true),
            ],
            None,
        );
        let conv = Converter::new(&d, Some("%d/%m/%Y %H:%M")).unwrap();
        let out = conv
            .finish(
                vec![
                    strings(&[Some("17/03/2026 10:30"), Some("2026-03-17 10:30:00")]),
                    strings(&[Some("17/03/2026 10:30"), Some("17/03/2026 00:00")]),
                ],
                2,
                Failures::default(),
                Path::new("f"),
                &mut |r| (r as u64, String::new()),
            )
            .unwrap();
        assert_eq!(out.batch.num_rows(), 1);
        let ts = out.batch.column(0).as_primitive::<TimestampSecondType>();
        assert_eq!(ts.value(0), 1_773_743_400);
        assert_eq!(out.rejects.len(), 1);
        assert_eq!(out.rejects[0].reason, RejectReason::BadTimestamp);

        let date_only = Converter::new(&d, Some("%Y%m%d")).unwrap();
        let out = date_only
            .finish(
                vec![strings(&[Some("20260317")]), strings(&[Some("20260317")])],
                1,
                Failures::default(),
                Path::new("f"),
                &mut |r| (r as u64, String::new()),
            )
            .unwrap();
        assert_eq!(out.rejects, vec![]);
        let ts = out.batch.column(0).as_primitive::<TimestampSecondType>();
        assert_eq!(ts.value(0), 1_773_705_600);
        let d = out.batch.column(1).as_primitive::<Date32Type>();
        assert_eq!(d.value(0), 20_529);
    }
}
