//! Flink SQL scalar functions that DataFusion lacks or spells differently, registered in every
//! session Flowline plans in (pipelines and computed columns), so Flink SQL such as the Nexmark
//! queries runs unchanged:
//!
//! * `DATE_FORMAT(ts, 'yyyy-MM-dd HH:mm')`: Java `SimpleDateFormat` patterns (DataFusion's own
//!   `date_format` is `to_char` with chrono patterns, which would print a Java pattern as text).
//! * `MOD(a, b)`: the remainder with the sign of `a`; NULL when `b` is 0.
//! * `REGEXP_EXTRACT(s, regex [, group])`: the group (default 1, 0 the whole match) of the first
//!   match; NULL when nothing matches or the group did not take part.
//! * `SPLIT_INDEX(s, separator, i)`: the `i`-th (0-based) piece of `s` split on the separator
//!   text; NULL when `i` is negative or past the end.
//! * `HOUR(ts)`, `MINUTE(ts)`, `SECOND(ts)`: that field of a timestamp, as a BIGINT.
//! * `COUNT_CHAR(s, c)`: how many characters of `s` equal the first character of `c` (Nexmark
//!   q14's function).
//! * `PROCTIME()`: the wall-clock time the row is processed, `TIMESTAMP_LTZ(3)`; a column it
//!   makes is a processing-time attribute (`FOR SYSTEM_TIME AS OF` it is a lookup join).
//!
//! Invariants: NULL in, NULL out, per row; a pattern or regex that does not parse is a planning
//! error when it is a literal and an execution error otherwise, naming the function.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, Int64Builder, StringArray, StringBuilder};
use arrow::datatypes::{DataType, Field, FieldRef, TimeUnit};
use datafusion::common::{exec_err, plan_err, Result, ScalarValue};
use datafusion::logical_expr::{
    ColumnarValue, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature,
    TypeSignature, Volatility,
};
use datafusion::prelude::SessionContext;

/// Registers the functions of this module in `ctx` (replacing DataFusion's `date_format`).
pub fn register_flink_functions(ctx: &SessionContext) {
    ctx.register_udf(ScalarUDF::from(DateFormat::new()));
    ctx.register_udf(ScalarUDF::from(Mod::new()));
    ctx.register_udf(ScalarUDF::from(RegexpExtract::new()));
    ctx.register_udf(ScalarUDF::from(SplitIndex::new()));
    ctx.register_udf(ScalarUDF::from(CountChar::new()));
    ctx.register_udf(ScalarUDF::from(ProcTime::new()));
    for part in [TimePart::Hour, TimePart::Minute, TimePart::Second] {
        ctx.register_udf(ScalarUDF::from(TimeField::new(part)));
    }
}

/// The arguments as arrays of `rows` rows (scalars repeated).
fn arrays(args: &ScalarFunctionArgs) -> Result<Vec<ArrayRef>> {
    args.args
        .iter()
        .map(|a| a.to_array(args.number_rows))
        .collect()
}

/// A text argument as Utf8.
fn utf8(array: &ArrayRef) -> Result<ArrayRef> {
    Ok(arrow::compute::cast(array, &DataType::Utf8)?)
}

fn is_text(t: &DataType) -> bool {
    matches!(t, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View)
}

// ------------------------------------------------------------------------- DATE_FORMAT

#[derive(Debug, PartialEq, Eq, Hash)]
struct DateFormat {
    signature: Signature,
}

impl DateFormat {
    fn new() -> Self {
        DateFormat {
            signature: Signature::any(2, Volatility::Immutable),
        }
    }
}

/// A Java `SimpleDateFormat` pattern as a chrono format string. Letters Flowline does not
/// know are an error naming the letter; `'...'` is literal text (`''` a quote).
pub fn java_date_pattern(pattern: &str) -> std::result::Result<String, String> {
    let chars: Vec<char> = pattern.chars().collect();
    let mut out = String::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '\'' {
            if chars.get(i + 1) == Some(&'\'') {
                out.push('\'');
                i += 2;
                continue;
            }
            i += 1;
            while i < chars.len() {
                if chars[i] == '\'' {
                    if chars.get(i + 1) == Some(&'\'') {
                        out.push('\'');
                        i += 2;
                        continue;
                    }
                    break;
                }
                if chars[i] == '%' {
                    out.push_str("%%");
                } else {
                    out.push(chars[i]);
                }
                i += 1;
            }
            if i >= chars.len() {
                return Err("a quote ' is not closed".into());
            }
            i += 1;
            continue;
        }
        if !c.is_ascii_alphabetic() {
            if c == '%' {
                out.push_str("%%");
            } else {
                out.push(c);
            }
            i += 1;
            continue;
        }
        let mut n = 1;
        while chars.get(i + n) == Some(&c) {
            n += 1;
        }
        let spec = match (c, n) {
            ('y', 2) => "%y",
            ('y', _) => "%Y",
            ('M', 1) => "%-m",
            ('M', 2) => "%m",
            ('M', 3) => "%b",
            ('M', _) => "%B",
            ('d', 1) => "%-d",
            ('d', _) => "%d",
            ('H', 1) => "%-H",
            ('H', _) => "%H",
            ('h', 1) => "%-I",
            ('h', _) => "%I",
            ('m', 1) => "%-M",
            ('m', _) => "%M",
            ('s', 1) => "%-S",
            ('s', _) => "%S",
            // Java prints exactly n fraction digits; chrono has 3, 6 and 9.
            ('S', 3) => "%3f",
            ('S', 6) => "%6f",
            ('S', 9) => "%9f",
            ('a', _) => "%p",
            ('E', 1..=3) => "%a",
            ('E', _) => "%A",
            ('D', 1) => "%-j",
            ('D', _) => "%j",
            ('Z' | 'z' | 'X' | 'x' | 'O' | 'V', _) => {
                return Err(format!(
                    "pattern letter '{c}' needs a time zone, and a TIMESTAMP has none"
                ))
            }
            ('S', _) => {
                return Err(format!(
                    "{n} fraction digits (S × {n}) are not supported: use SSS, SSSSSS or SSSSSSSSS"
                ))
            }
            _ => {
                return Err(format!(
                    "pattern letter '{c}' is not supported (supported: y M d H h m s S a E D, \
                     text in 'quotes')"
                ))
            }
        };
        out.push_str(spec);
        i += n;
    }
    Ok(out)
}

/// A Java date pattern, parsed into chrono's format items.
fn date_pattern_items(
    pattern: &str,
) -> std::result::Result<Vec<chrono::format::Item<'static>>, String> {
    java_date_pattern(pattern).and_then(|f| {
        chrono::format::StrftimeItems::new(&f)
            .parse_to_owned()
            .map_err(|e| e.to_string())
    })
}

/// The text of a literal argument, if it is one.
fn literal_text<'a>(args: &ReturnFieldArgs<'a>, i: usize) -> Option<&'a str> {
    match args.scalar_arguments.get(i).copied().flatten()? {
        ScalarValue::Utf8(Some(s))
        | ScalarValue::LargeUtf8(Some(s))
        | ScalarValue::Utf8View(Some(s)) => Some(s.as_str()),
        _ => None,
    }
}

/// The (nullable) result field of `udf` for arguments of the types in `args`.
fn result_field(udf: &dyn ScalarUDFImpl, args: &ReturnFieldArgs<'_>) -> Result<FieldRef> {
    let types: Vec<DataType> = args
        .arg_fields
        .iter()
        .map(|f| f.data_type().clone())
        .collect();
    Ok(Arc::new(Field::new(
        udf.name(),
        udf.return_type(&types)?,
        true,
    )))
}

impl ScalarUDFImpl for DateFormat {
    fn name(&self) -> &str {
        "date_format"
    }
    /// A literal pattern that does not parse is a planning error, before data moves.
    fn return_field_from_args(&self, args: ReturnFieldArgs<'_>) -> Result<FieldRef> {
        if let Some(pattern) = literal_text(&args, 1) {
            if let Err(e) = date_pattern_items(pattern) {
                return plan_err!("DATE_FORMAT pattern '{pattern}': {e}");
            }
        }
        result_field(self, &args)
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        let ok = matches!(arg_types[0], DataType::Timestamp(..) | DataType::Date32)
            || is_text(&arg_types[0]);
        if !ok || !is_text(&arg_types[1]) {
            return plan_err!(
                "DATE_FORMAT(timestamp, pattern) takes a TIMESTAMP (or its text) and a pattern \
                 such as 'yyyy-MM-dd', not {} and {}",
                arg_types[0],
                arg_types[1]
            );
        }
        Ok(DataType::Utf8)
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let columns = arrays(&args)?;
        let ts = arrow::compute::cast(
            &columns[0],
            &DataType::Timestamp(TimeUnit::Millisecond, None),
        )?;
        let ts = ts.as_primitive::<arrow::datatypes::TimestampMillisecondType>();
        let patterns = utf8(&columns[1])?;
        let patterns = patterns.as_string::<i32>();
        let mut out = StringBuilder::with_capacity(ts.len(), ts.len() * 16);
        // The pattern, translated and parsed once (patterns are nearly always one literal).
        let mut cached: Option<(String, Vec<chrono::format::Item<'static>>)> = None;
        for row in 0..ts.len() {
            if ts.is_null(row) || patterns.is_null(row) {
                out.append_null();
                continue;
            }
            let pattern = patterns.value(row);
            if cached.as_ref().is_none_or(|(p, _)| p != pattern) {
                match date_pattern_items(pattern) {
                    Ok(items) => cached = Some((pattern.to_string(), items)),
                    Err(e) => return exec_err!("DATE_FORMAT pattern '{pattern}': {e}"),
                }
            }
            let items: &[chrono::format::Item<'static>] =
                cached.as_ref().map(|c| c.1.as_slice()).unwrap_or_default();
            match chrono::DateTime::from_timestamp_millis(ts.value(row)) {
                Some(t) => {
                    use std::fmt::Write;
                    let shown = t.naive_utc().format_with_items(items.iter());
                    if write!(out, "{shown}").is_err() {
                        return exec_err!("DATE_FORMAT pattern '{pattern}' cannot format {t}");
                    }
                    out.append_value("");
                }
                None => out.append_null(),
            }
        }
        Ok(ColumnarValue::Array(Arc::new(out.finish())))
    }
}

// ------------------------------------------------------------------------- MOD

#[derive(Debug, PartialEq, Eq, Hash)]
struct Mod {
    signature: Signature,
}

impl Mod {
    fn new() -> Self {
        Mod {
            signature: Signature::new(TypeSignature::Numeric(2), Volatility::Immutable),
        }
    }
}

impl ScalarUDFImpl for Mod {
    fn name(&self) -> &str {
        "mod"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        Ok(arg_types[0].clone())
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let columns = arrays(&args)?;
        let (a, b) = (&columns[0], &columns[1]);
        // A zero divisor gives NULL rather than failing the whole batch.
        let zero = ScalarValue::new_zero(b.data_type())?.to_array_of_size(b.len())?;
        let is_zero = arrow::compute::kernels::cmp::eq(b, &zero)?;
        let b = arrow::compute::nullif(b, &is_zero)?;
        let r = arrow::compute::kernels::numeric::rem(a, &b)?;
        Ok(ColumnarValue::Array(r))
    }
}

// ------------------------------------------------------------------------- REGEXP_EXTRACT

#[derive(Debug, PartialEq, Eq, Hash)]
struct RegexpExtract {
    signature: Signature,
}

impl RegexpExtract {
    fn new() -> Self {
        RegexpExtract {
            signature: Signature::one_of(
                vec![TypeSignature::Any(2), TypeSignature::Any(3)],
                Volatility::Immutable,
            ),
        }
    }
}

impl ScalarUDFImpl for RegexpExtract {
    fn name(&self) -> &str {
        "regexp_extract"
    }
    /// A literal regex that does not parse is a planning error, before data moves.
    fn return_field_from_args(&self, args: ReturnFieldArgs<'_>) -> Result<FieldRef> {
        if let Some(regex) = literal_text(&args, 1) {
            if let Err(e) = regex::Regex::new(regex) {
                return plan_err!("REGEXP_EXTRACT regex '{regex}': {e}");
            }
        }
        result_field(self, &args)
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        if !is_text(&arg_types[0]) || !is_text(&arg_types[1]) {
            return plan_err!("REGEXP_EXTRACT(text, regex [, group]) takes text arguments");
        }
        if arg_types.len() == 3 && !arg_types[2].is_integer() {
            return plan_err!("REGEXP_EXTRACT's group index must be an integer");
        }
        Ok(DataType::Utf8)
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        // The usual call: a literal regex and group. The regex compiles once per thread, not
        // per batch, and neither literal is repeated into a column.
        let literal_group = match args.args.get(2) {
            None => Some(Some(1)),
            Some(ColumnarValue::Scalar(g)) if g.data_type().is_integer() => {
                // As the general path: a group that does not fit an Int64 is NULL.
                let g = arrow::compute::cast(&g.to_array()?, &DataType::Int64)?;
                let g = g.as_primitive::<arrow::datatypes::Int64Type>();
                Some((!g.is_null(0)).then(|| g.value(0)))
            }
            Some(_) => None,
        };
        if let (Some(group), ColumnarValue::Scalar(pattern)) = (literal_group, &args.args[1]) {
            let text = utf8(&args.args[0].to_array(args.number_rows)?)?;
            let text = text.as_string::<i32>();
            let pattern = match pattern.cast_to(&DataType::Utf8)? {
                ScalarValue::Utf8(p) => p,
                other => return exec_err!("REGEXP_EXTRACT regex of type {}", other.data_type()),
            };
            let (Some(group), Some(pattern)) = (group, pattern) else {
                return Ok(ColumnarValue::Array(arrow::array::new_null_array(
                    &DataType::Utf8,
                    args.number_rows,
                )));
            };
            // Compiled at the first row that needs it, as in the general path.
            let mut compiled: Option<(std::rc::Rc<regex::Regex>, regex::CaptureLocations)> = None;
            let mut out = StringBuilder::with_capacity(text.len(), text.len() * 8);
            for row in 0..text.len() {
                if text.is_null(row) {
                    out.append_null();
                    continue;
                }
                let (re, locations) = match &mut compiled {
                    Some(c) => c,
                    None => {
                        let re = cached_regex(&pattern)?;
                        let locations = re.capture_locations();
                        compiled.insert((re, locations))
                    }
                };
                let s = text.value(row);
                let value = usize::try_from(group).ok().and_then(|g| {
                    re.captures_read(locations, s)?;
                    locations.get(g).map(|(a, b)| &s[a..b])
                });
                out.append_option(value);
            }
            return Ok(ColumnarValue::Array(Arc::new(out.finish())));
        }
        let columns = arrays(&args)?;
        let text = utf8(&columns[0])?;
        let text = text.as_string::<i32>();
        let regexes = utf8(&columns[1])?;
        let regexes = regexes.as_string::<i32>();
        let groups = match columns.get(2) {
            Some(g) => Some(arrow::compute::cast(g, &DataType::Int64)?),
            None => None,
        };
        let groups = groups
            .as_ref()
            .map(|g| g.as_primitive::<arrow::datatypes::Int64Type>());
        let mut out = StringBuilder::with_capacity(text.len(), text.len() * 8);
        let mut cached: Option<(String, std::rc::Rc<regex::Regex>, regex::CaptureLocations)> = None;
        for row in 0..text.len() {
            let group = match groups {
                Some(g) if g.is_null(row) => None,
                Some(g) => Some(g.value(row)),
                None => Some(1),
            };
            let (Some(group), false, false) = (group, text.is_null(row), regexes.is_null(row))
            else {
                out.append_null();
                continue;
            };
            let pattern = regexes.value(row);
            if cached.as_ref().is_none_or(|(p, _, _)| p != pattern) {
                let r = cached_regex(pattern)?;
                let locations = r.capture_locations();
                cached = Some((pattern.to_string(), r, locations));
            }
            let (_, re, locations) = cached.as_mut().expect("set above");
            let s = text.value(row);
            // Reused capture slots: no allocation per row.
            let value = usize::try_from(group).ok().and_then(|g| {
                re.captures_read(locations, s)?;
                locations.get(g).map(|(a, b)| &s[a..b])
            });
            out.append_option(value);
        }
        Ok(ColumnarValue::Array(Arc::new(out.finish())))
    }
}

/// How many compiled regexes each thread keeps.
const REGEX_CACHE_SIZE: usize = 16;

thread_local! {
    /// The regexes this thread compiled last, newest at the end: a pipeline calls
    /// REGEXP_EXTRACT once per batch with the same few patterns. Shared, not cloned: a cloned
    /// `Regex` starts with empty search caches.
    static REGEX_CACHE: std::cell::RefCell<Vec<(String, std::rc::Rc<regex::Regex>)>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

/// `pattern` compiled, from this thread's cache when it was compiled before.
fn cached_regex(pattern: &str) -> Result<std::rc::Rc<regex::Regex>> {
    REGEX_CACHE.with_borrow_mut(|cache| {
        if let Some(at) = cache.iter().position(|(p, _)| p == pattern) {
            let entry = cache.remove(at);
            let re = std::rc::Rc::clone(&entry.1);
            cache.push(entry);
            return Ok(re);
        }
        let re = match regex::Regex::new(pattern) {
            Ok(re) => std::rc::Rc::new(re),
            Err(e) => return exec_err!("REGEXP_EXTRACT regex '{pattern}': {e}"),
        };
        if cache.len() == REGEX_CACHE_SIZE {
            cache.remove(0);
        }
        cache.push((pattern.to_string(), std::rc::Rc::clone(&re)));
        Ok(re)
    })
}

// ------------------------------------------------------------------------- SPLIT_INDEX

#[derive(Debug, PartialEq, Eq, Hash)]
struct SplitIndex {
    signature: Signature,
}

impl SplitIndex {
    fn new() -> Self {
        SplitIndex {
            signature: Signature::any(3, Volatility::Immutable),
        }
    }
}

impl ScalarUDFImpl for SplitIndex {
    fn name(&self) -> &str {
        "split_index"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        if !is_text(&arg_types[0]) || !is_text(&arg_types[1]) || !arg_types[2].is_integer() {
            return plan_err!("SPLIT_INDEX(text, separator, index) takes text, text, integer");
        }
        Ok(DataType::Utf8)
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let columns = arrays(&args)?;
        let text = utf8(&columns[0])?;
        let text = text.as_string::<i32>();
        let seps = utf8(&columns[1])?;
        let seps = seps.as_string::<i32>();
        let index = arrow::compute::cast(&columns[2], &DataType::Int64)?;
        let index = index.as_primitive::<arrow::datatypes::Int64Type>();
        let mut out = StringBuilder::with_capacity(text.len(), text.len() * 8);
        for row in 0..text.len() {
            if text.is_null(row) || seps.is_null(row) || index.is_null(row) {
                out.append_null();
                continue;
            }
            let sep = seps.value(row);
            let value = usize::try_from(index.value(row)).ok().and_then(|i| {
                if sep.is_empty() {
                    (i == 0).then_some(text.value(row))
                } else {
                    text.value(row).split(sep).nth(i)
                }
            });
            out.append_option(value);
        }
        Ok(ColumnarValue::Array(Arc::new(out.finish())))
    }
}

// ------------------------------------------------------------------------- COUNT_CHAR

#[derive(Debug, PartialEq, Eq, Hash)]
struct CountChar {
    signature: Signature,
}

impl CountChar {
    fn new() -> Self {
        CountChar {
            signature: Signature::any(2, Volatility::Immutable),
        }
    }
}

impl ScalarUDFImpl for CountChar {
    fn name(&self) -> &str {
        "count_char"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        if !is_text(&arg_types[0]) || !is_text(&arg_types[1]) {
            return plan_err!("COUNT_CHAR(text, character) takes two texts");
        }
        Ok(DataType::Int64)
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let columns = arrays(&args)?;
        let text = utf8(&columns[0])?;
        let text: &StringArray = text.as_string::<i32>();
        let chars = utf8(&columns[1])?;
        let chars = chars.as_string::<i32>();
        let mut out = Int64Builder::with_capacity(text.len());
        for row in 0..text.len() {
            // NULL in, NULL out; an empty character matches nothing.
            if text.is_null(row) || chars.is_null(row) {
                out.append_null();
                continue;
            }
            let s = text.value(row);
            let n = match chars.value(row).chars().next() {
                Some(c) if c.is_ascii() => s.bytes().filter(|&b| b == c as u8).count(),
                Some(c) => s.chars().filter(|&x| x == c).count(),
                None => 0,
            };
            out.append_value(n as i64);
        }
        Ok(ColumnarValue::Array(Arc::new(out.finish())))
    }
}

// ------------------------------------------------------------------------- PROCTIME

/// The name DataFusion knows `PROCTIME()` by.
pub const PROCTIME: &str = "proctime";

#[derive(Debug, PartialEq, Eq, Hash)]
struct ProcTime {
    signature: Signature,
}

impl ProcTime {
    fn new() -> Self {
        ProcTime {
            // Volatile: evaluated per batch, never folded into a constant at planning.
            signature: Signature::nullary(Volatility::Volatile),
        }
    }
}

impl ScalarUDFImpl for ProcTime {
    fn name(&self) -> &str {
        PROCTIME
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(DataType::Timestamp(
            TimeUnit::Millisecond,
            Some("UTC".into()),
        ))
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let now = chrono::Utc::now().timestamp_millis();
        Ok(ColumnarValue::Array(Arc::new(
            arrow::array::TimestampMillisecondArray::from_value(now, args.number_rows)
                .with_timezone("UTC"),
        )))
    }
}

// ------------------------------------------------------------------------- HOUR, MINUTE, SECOND

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum TimePart {
    Hour,
    Minute,
    Second,
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct TimeField {
    part: TimePart,
    signature: Signature,
}

impl TimeField {
    fn new(part: TimePart) -> Self {
        TimeField {
            part,
            signature: Signature::any(1, Volatility::Immutable),
        }
    }
}

impl ScalarUDFImpl for TimeField {
    fn name(&self) -> &str {
        match self.part {
            TimePart::Hour => "hour",
            TimePart::Minute => "minute",
            TimePart::Second => "second",
        }
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        if !matches!(
            arg_types[0],
            DataType::Timestamp(..) | DataType::Time32(_) | DataType::Time64(_)
        ) {
            return plan_err!(
                "{}(timestamp) takes a TIMESTAMP, not {}",
                self.name().to_uppercase(),
                arg_types[0]
            );
        }
        Ok(DataType::Int64)
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        use arrow::compute::kernels::temporal::{date_part, DatePart};
        let columns = arrays(&args)?;
        let part = match self.part {
            TimePart::Hour => DatePart::Hour,
            TimePart::Minute => DatePart::Minute,
            TimePart::Second => DatePart::Second,
        };
        let values = date_part(columns[0].as_ref(), part)?;
        Ok(ColumnarValue::Array(arrow::compute::cast(
            &values,
            &DataType::Int64,
        )?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn eval(sql: &str) -> Vec<String> {
        let ctx = SessionContext::new();
        register_flink_functions(&ctx);
        let batches = ctx.sql(sql).await.unwrap().collect().await.unwrap();
        let mut out = vec![];
        for b in batches {
            let col = arrow::compute::cast(b.column(0), &DataType::Utf8).unwrap();
            let col = col.as_string::<i32>();
            for i in 0..col.len() {
                out.push(if col.is_null(i) {
                    "NULL".into()
                } else {
                    col.value(i).to_string()
                });
            }
        }
        out
    }

    #[test]
    fn java_patterns_become_chrono_formats() {
        assert_eq!(java_date_pattern("yyyy-MM-dd").unwrap(), "%Y-%m-%d");
        assert_eq!(java_date_pattern("HH:mm").unwrap(), "%H:%M");
        assert_eq!(
            java_date_pattern("yyyy-MM-dd'T'HH:mm:ss.SSS").unwrap(),
            "%Y-%m-%dT%H:%M:%S.%3f"
        );
        assert_eq!(java_date_pattern("'it''s' 100%").unwrap(), "it's 100%%");
        assert!(java_date_pattern("yyyy-ww").unwrap_err().contains("'w'"));
        for unclosed in ["'ab", "HH'", "'a''"] {
            assert!(
                java_date_pattern(unclosed)
                    .unwrap_err()
                    .contains("not closed"),
                "{unclosed}"
            );
        }
        // Exactly the digits Java prints, or an error instead of other digits.
        assert_eq!(java_date_pattern("ss.SSSSSS").unwrap(), "%S.%6f");
        assert!(java_date_pattern("ss.SS").unwrap_err().contains("SSS"));
        assert_eq!(java_date_pattern("D").unwrap(), "%-j");
        // A zone letter is an error, not a panic while formatting a zoneless TIMESTAMP.
        assert!(java_date_pattern("HH Z").unwrap_err().contains("time zone"));
        assert!(java_date_pattern("HH 'h")
            .unwrap_err()
            .contains("not closed"));
    }

    #[tokio::test]
    async fn functions_follow_flink() {
        let ts = "CAST('2024-03-05 07:08:09.123' AS TIMESTAMP)";
        assert_eq!(
            eval(&format!(
                "SELECT date_format({ts}, 'yyyy-MM-dd HH:mm:ss.SSS')"
            ))
            .await,
            ["2024-03-05 07:08:09.123"]
        );
        assert_eq!(
            eval(&format!("SELECT DATE_FORMAT({ts}, 'HH:mm')")).await,
            ["07:08"]
        );
        assert_eq!(
            eval("SELECT date_format(CAST(NULL AS TIMESTAMP), 'yyyy')").await,
            ["NULL"]
        );
        assert_eq!(eval("SELECT mod(7, 3)").await, ["1"]);
        assert_eq!(eval("SELECT mod(-7, 3)").await, ["-1"]);
        assert_eq!(eval("SELECT mod(CAST(246 AS BIGINT), 123)").await, ["0"]);
        assert_eq!(eval("SELECT mod(5, 0)").await, ["NULL"]);
        let url = "'https://www.nexmark.com/a/b/c/item.htm?query=1&channel_id=42'";
        assert_eq!(
            eval(&format!(
                "SELECT regexp_extract({url}, '(&|^)channel_id=([^&]*)', 2)"
            ))
            .await,
            ["42"]
        );
        assert_eq!(eval("SELECT regexp_extract('abc', 'x(y)')").await, ["NULL"]);
        // Over a column: literal regex and group (compiled once per thread), a NULL regex or
        // group, and regexes and groups that vary per row.
        let rows = "(VALUES ('k=1&v=2', 'v=([0-9])', 1), ('v=7', '(k)=', 1), (NULL, 'x', 1), \
                    ('k=3', NULL, 1), ('k=4', 'k=([0-9])', NULL), ('k=5', 'k=([0-9])', 0)) \
                    AS t(s, p, g)";
        assert_eq!(
            eval(&format!(
                "SELECT regexp_extract(s, 'v=([0-9])') FROM {rows}"
            ))
            .await,
            ["2", "7", "NULL", "NULL", "NULL", "NULL"]
        );
        assert_eq!(
            eval(&format!(
                "SELECT regexp_extract(s, 'k=([0-9])', 0) FROM {rows}"
            ))
            .await,
            ["k=1", "NULL", "NULL", "k=3", "k=4", "k=5"]
        );
        assert_eq!(
            eval(&format!(
                "SELECT regexp_extract(s, CAST(NULL AS VARCHAR)) FROM {rows}"
            ))
            .await,
            ["NULL"; 6]
        );
        assert_eq!(
            eval(&format!("SELECT regexp_extract(s, p, g) FROM {rows}")).await,
            ["2", "NULL", "NULL", "NULL", "NULL", "k=5"]
        );
        assert_eq!(
            eval(&format!(
                "SELECT regexp_extract(s, 'k=([0-9])', g) FROM {rows}"
            ))
            .await,
            ["1", "NULL", "NULL", "3", "NULL", "k=5"]
        );
        assert_eq!(
            eval("SELECT regexp_extract('a1b22', '[0-9]+', 0)").await,
            ["1"]
        );
        assert_eq!(
            eval(&format!("SELECT split_index({url}, '/', 3)")).await,
            ["a"]
        );
        assert_eq!(
            eval(&format!("SELECT split_index({url}, '/', 5)")).await,
            ["c"]
        );
        assert_eq!(eval("SELECT split_index('a/b', '/', 2)").await, ["NULL"]);
        assert_eq!(eval("SELECT split_index('a/b', '/', -1)").await, ["NULL"]);
        assert_eq!(eval("SELECT count_char('banana', 'a')").await, ["3"]);
        assert_eq!(eval(&format!("SELECT hour({ts})")).await, ["7"]);
        assert_eq!(
            eval(&format!("SELECT minute({ts}) + second({ts})")).await,
            ["17"]
        );
        assert_eq!(eval("SELECT count_char('banana', '')").await, ["0"]);
        assert_eq!(
            eval("SELECT count_char('banana', CAST(NULL AS VARCHAR))").await,
            ["NULL"]
        );
        assert_eq!(
            eval(&format!(
                "SELECT date_format({ts}, 'yyyy-MM-dd HH:mm:ss.SSS')"
            ))
            .await
            .len(),
            1
        );
    }
}
