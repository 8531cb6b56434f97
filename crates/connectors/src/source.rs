//! File sources (`connector = 'files'`): list the files under a path, then decode each file
//! (CSV, JSON lines or Parquet) into batches of the declared schema plus rejects.

use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{
    ArrayRef, NullBufferBuilder, RecordBatch, StringArray, StringBuilder, StructArray,
};
use arrow::datatypes::{DataType, Field, Fields, SchemaRef};
use datafusion::scalar::ScalarValue;
use flowline_core::{Error, Reject, RejectReason, Result, TableDef};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ProjectionMask;

use crate::convert::{is_string_type, text_convertible, Converter, Failures};
use crate::hive;
use crate::json_row::JsonColumns;
use crate::needed::Needed;
use crate::options::{self, FileFormat};

/// The options a file source accepts.
const SOURCE_OPTIONS: &[&str] = &[
    "connector",
    "path",
    "format",
    "csv.header",
    "csv.field-delimiter",
    "csv.quote-character",
    "csv.null-literal",
    "timestamp-format",
    "lookup.join.cache.ttl",
];

/// One input file of a source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceFile {
    pub path: PathBuf,
    pub size: u64,
    /// Last modification time, RFC 3339 in UTC.
    pub modified: String,
    /// Hive `key=value` pairs from the folders between the source root and the file, in
    /// order, values percent-decoded.
    pub partitions: Vec<(String, String)>,
}

/// One decoded batch: the good rows in exactly the declared schema, and the rows that failed.
#[derive(Debug, Clone)]
pub struct Decoded {
    pub batch: RecordBatch,
    pub rejects: Vec<Reject>,
}

#[derive(Debug, Clone)]
struct CsvOptions {
    header: bool,
    delimiter: u8,
    quote: u8,
    /// `csv.null-literal` when given explicitly.
    null_literal: Option<String>,
}

/// A source that ends: the files of a table, or a generator with a fixed number of events. Its
/// rows come in parts (a file, a range of events) that reader threads may decode in parallel;
/// the runtime delivers them in part order, so every run sees the same sequence.
pub trait BoundedSource: Send + Sync {
    /// The declared schema: every decoded batch has exactly this schema.
    fn schema(&self) -> SchemaRef;

    /// How many parts [`read_part`](Self::read_part) accepts.
    fn parts(&self) -> usize;

    /// Decodes part `index` into batches of at most `batch_size` rows, reading only the
    /// columns (and `ROW` fields) in `needed` where the format allows (`None`: all); rows that fail go to
    /// [`Decoded::rejects`]. Stops early and returns the error if `emit` fails.
    fn read_part(
        &self,
        index: usize,
        batch_size: usize,
        needed: Option<&Needed>,
        emit: &mut dyn FnMut(Decoded) -> Result<()>,
    ) -> Result<()>;

    /// What the run manifest records about this input.
    fn describe(&self) -> serde_json::Value;
}

impl BoundedSource for FileSource {
    fn schema(&self) -> SchemaRef {
        FileSource::schema(self)
    }

    fn parts(&self) -> usize {
        self.files.len()
    }

    fn read_part(
        &self,
        index: usize,
        batch_size: usize,
        needed: Option<&Needed>,
        emit: &mut dyn FnMut(Decoded) -> Result<()>,
    ) -> Result<()> {
        self.read_file_projected(index, batch_size, needed, emit)
    }

    fn describe(&self) -> serde_json::Value {
        serde_json::json!({
            "files": self.files.iter().map(|f| serde_json::json!({
                "path": f.path.display().to_string(), "size": f.size, "modified": f.modified,
            })).collect::<Vec<_>>(),
        })
    }
}

/// A file source: the declared table and the files it reads. `Send + Sync`, so reader threads
/// can share it and decode different files at the same time.
pub struct FileSource {
    name: String,
    format: FileFormat,
    csv: CsvOptions,
    converter: Converter,
    files: Vec<SourceFile>,
}

/// Where one declared column's values come from in a given file.
#[derive(Debug, Clone)]
enum ColumnSource {
    /// A field of the file: CSV field position, Parquet root column index.
    Field(usize),
    /// The Hive partition value from the file's path (`None` for the default partition).
    Partition(Option<String>),
    /// Not needed by the pipeline: NULLs (Parquet only).
    Skipped,
}

impl FileSource {
    /// Validates the WITH options, resolves `path` relative to `base_dir` when relative, lists
    /// files.
    pub fn open(def: &TableDef, base_dir: &Path) -> Result<FileSource> {
        options::check_known(def, SOURCE_OPTIONS)?;
        options::connector(def, &["files"])?;
        let path = options::required(def, "path")?;
        let format = options::file_format(def)?;
        if format != FileFormat::Csv {
            options::check_no_csv_options(def, format.extension())?;
        }
        let csv = CsvOptions {
            header: options::bool_option(def, "csv.header", true)?,
            delimiter: options::char_option(def, "csv.field-delimiter", b',')?,
            quote: options::char_option(def, "csv.quote-character", b'"')?,
            null_literal: def.option("csv.null-literal").map(str::to_string),
        };
        let timestamp_format = options::timestamp_format(def)?;
        if format != FileFormat::Parquet {
            if let Some(c) = def.columns.iter().find(|c| !text_convertible(&c.data_type)) {
                return Err(Error::option(
                    &def.name,
                    format!(
                        "column `{}` has type {}, which format '{}' cannot read",
                        c.name,
                        c.data_type,
                        format.extension()
                    ),
                ));
            }
        }
        let converter = Converter::new(def, timestamp_format)?;

        let root = if Path::new(path).is_absolute() {
            PathBuf::from(path)
        } else {
            base_dir.join(path)
        };
        let files = list_files(&root)?;
        Ok(FileSource {
            name: def.name.clone(),
            format,
            csv,
            converter,
            files,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The declared schema: every decoded batch has exactly this schema.
    pub fn schema(&self) -> SchemaRef {
        Arc::clone(self.converter.output_schema())
    }

    pub fn files(&self) -> &[SourceFile] {
        &self.files
    }

    /// The file format's name and extension: `csv`, `json` or `parquet`.
    pub fn format_name(&self) -> &'static str {
        self.format.extension()
    }

    /// Whether CSV files start with a header line (`csv.header`).
    pub fn csv_header(&self) -> bool {
        self.format == FileFormat::Csv && self.csv.header
    }

    /// Decode file `index` into batches of at most `batch_size` rows in exactly `schema()`;
    /// rows that fail go to `Decoded::rejects` (never an error). Calls `emit` per batch, in file
    /// order. Stops early and returns the error if `emit` returns Err.
    pub fn read_file(
        &self,
        index: usize,
        batch_size: usize,
        emit: &mut dyn FnMut(Decoded) -> Result<()>,
    ) -> Result<()> {
        self.read_file_projected(index, batch_size, None, emit)
    }

    /// Like [`read_file`](Self::read_file), reading only the declared columns `needed`
    /// reads. Parquet does not decode the others; they arrive as NULLs, unless the
    /// column is `NOT NULL`, which is always read. CSV and JSON lines still convert every
    /// column, so which rows are rejected never depends on the query.
    pub fn read_file_projected(
        &self,
        index: usize,
        batch_size: usize,
        needed: Option<&Needed>,
        emit: &mut dyn FnMut(Decoded) -> Result<()>,
    ) -> Result<()> {
        let file = self.files.get(index).ok_or_else(|| {
            Error::Internal(format!(
                "source `{}` has {} files, no file number {index}",
                self.name,
                self.files.len()
            ))
        })?;
        let batch_size = batch_size.max(1);
        match self.format {
            FileFormat::Csv => self.read_csv(file, batch_size, emit),
            FileFormat::Json => self.read_json(file, batch_size, emit),
            // `needed` names declared columns; Parquet decodes physical ones, including those
            // that computed columns read.
            FileFormat::Parquet => {
                let physical = needed.map(|n| self.converter.physical_needed(n));
                self.read_parquet(file, batch_size, physical.as_ref(), emit)
            }
        }
    }

    fn partition_value(file: &SourceFile, column: &str) -> Option<Option<String>> {
        file.partitions
            .iter()
            .rev()
            .find(|(k, _)| k == column)
            .or_else(|| {
                file.partitions
                    .iter()
                    .rev()
                    .find(|(k, _)| k.eq_ignore_ascii_case(column))
            })
            .map(|(_, v)| (v != hive::DEFAULT_PARTITION).then(|| v.clone()))
    }

    fn missing_column(file: &SourceFile, column: &str, found: &[String]) -> Error {
        Error::Input {
            path: file.path.clone(),
            message: format!(
                "declared column `{column}` is missing from the file and is not a partition \
                 folder (columns in the file: {})",
                found.join(", ")
            ),
        }
    }

    // ---------------------------------------------------------------- CSV

    fn read_csv(
        &self,
        file: &SourceFile,
        batch_size: usize,
        emit: &mut dyn FnMut(Decoded) -> Result<()>,
    ) -> Result<()> {
        let data = fs::read(&file.path).map_err(|e| Error::io("read", &file.path, e))?;
        let body = data.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(&data);
        let csv_error = |e: csv::Error| Error::Input {
            path: file.path.clone(),
            message: e.to_string(),
        };
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .delimiter(self.csv.delimiter)
            .quote(self.csv.quote)
            .from_reader(body);
        let mut record = csv::ByteRecord::new();
        let schema = Arc::clone(self.converter.schema());
        let fields = schema.fields();

        // Where each declared column comes from, and how many fields a record must have.
        let (sources, expected) = if self.csv.header {
            if !reader.read_byte_record(&mut record).map_err(csv_error)? {
                return Ok(()); // an empty file: no header, no rows
            }
            let header: Vec<String> = record
                .iter()
                .map(|h| String::from_utf8_lossy(h).trim().to_string())
                .collect();
            let mut sources = Vec::with_capacity(fields.len());
            for field in fields {
                let name = field.name();
                let pos = header
                    .iter()
                    .position(|h| h == name)
                    .or_else(|| header.iter().position(|h| h.eq_ignore_ascii_case(name)));
                sources.push(match (pos, Self::partition_value(file, name)) {
                    (Some(p), _) => ColumnSource::Field(p),
                    (None, Some(v)) => ColumnSource::Partition(v),
                    (None, None) => return Err(Self::missing_column(file, name, &header)),
                });
            }
            (sources, header.len())
        } else {
            let mut next = 0;
            let sources: Vec<_> = fields
                .iter()
                .map(|f| match Self::partition_value(file, f.name()) {
                    Some(v) => ColumnSource::Partition(v),
                    None => {
                        next += 1;
                        ColumnSource::Field(next - 1)
                    }
                })
                .collect();
            (sources, next)
        };
        let is_string: Vec<bool> = fields
            .iter()
            .map(|f| is_string_type(f.data_type()))
            .collect();
        let null_literal = self.csv.null_literal.as_deref();

        let mut batch = TextBatch::new(fields.len(), batch_size);
        loop {
            let more = reader.read_byte_record(&mut record).map_err(csv_error)?;
            if more {
                let (mut start, mut line) = record
                    .position()
                    .map_or((0, 1), |p| (p.byte() as usize, p.line()));
                let mut end = (reader.position().byte() as usize).min(body.len());
                // Blank lines skipped before the record belong to no record.
                while start < end && matches!(body[start], b'\n' | b'\r') {
                    line += u64::from(body[start] == b'\n');
                    start += 1;
                }
                while end > start && matches!(body[end - 1], b'\n' | b'\r') {
                    end -= 1;
                }
                let row = batch.spans.len();
                batch.spans.push((line, start, end));

                let failure = if record.len() != expected {
                    Some((
                        RejectReason::MalformedCsv,
                        format!("expected {expected} fields, found {}", record.len()),
                    ))
                } else {
                    sources.iter().zip(fields).find_map(|(s, f)| match s {
                        ColumnSource::Field(i) => std::str::from_utf8(&record[*i]).err().map(|e| {
                            (
                                RejectReason::BadValue,
                                format!("column `{}`: invalid UTF-8: {e}", f.name()),
                            )
                        }),
                        _ => None,
                    })
                };
                match failure {
                    Some((reason, detail)) => {
                        batch.failures.set(row, reason, detail);
                        batch.append_nulls();
                    }
                    None => {
                        for (c, source) in sources.iter().enumerate() {
                            let builder = &mut batch.builders[c];
                            match source {
                                ColumnSource::Field(i) => {
                                    let text = std::str::from_utf8(&record[*i]).unwrap_or("");
                                    builder.append_option(csv_cell(
                                        text,
                                        is_string[c],
                                        null_literal,
                                    ));
                                }
                                ColumnSource::Partition(v) => builder.append_option(v.as_deref()),
                                ColumnSource::Skipped => builder.append_null(),
                            }
                        }
                    }
                }
            }
            if batch.spans.len() >= batch_size || (!more && !batch.spans.is_empty()) {
                let decoded = batch.finish(&self.converter, &file.path, body)?;
                emit(decoded)?;
            }
            if !more {
                return Ok(());
            }
        }
    }

    // ---------------------------------------------------------------- JSON lines

    fn read_json(
        &self,
        file: &SourceFile,
        batch_size: usize,
        emit: &mut dyn FnMut(Decoded) -> Result<()>,
    ) -> Result<()> {
        let data = fs::read(&file.path).map_err(|e| Error::io("read", &file.path, e))?;
        let schema = Arc::clone(self.converter.schema());
        let fields = schema.fields();
        // JSON has no header: every column is read from the object, or else from the
        // partition folder, or else is NULL.
        let partitions: Vec<Option<Option<String>>> = fields
            .iter()
            .map(|f| Self::partition_value(file, f.name()))
            .collect();
        let mut columns = JsonColumns::new(fields, partitions);

        let mut batch = columns.text_batch(batch_size);
        let mut offset = 0usize;
        let mut line_no = 0u64;
        let bom = data.starts_with(b"\xEF\xBB\xBF");
        while offset < data.len() {
            line_no += 1;
            let line_end = memchr_newline(&data[offset..]).map_or(data.len(), |i| offset + i);
            let mut start = offset;
            if line_no == 1 && bom {
                start += 3;
            }
            let mut end = line_end;
            if end > start && data[end - 1] == b'\r' {
                end -= 1;
            }
            offset = line_end + 1;
            let text = &data[start..end];
            if text.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            batch.spans.push((line_no, start, end));
            columns.decode_row(&mut batch, text);
            if batch.spans.len() >= batch_size {
                let decoded = batch.finish(&self.converter, &file.path, &data)?;
                emit(decoded)?;
            }
        }
        if !batch.spans.is_empty() {
            let decoded = batch.finish(&self.converter, &file.path, &data)?;
            emit(decoded)?;
        }
        Ok(())
    }

    // ---------------------------------------------------------------- Parquet

    fn read_parquet(
        &self,
        file: &SourceFile,
        batch_size: usize,
        needed: Option<&Needed>,
        emit: &mut dyn FnMut(Decoded) -> Result<()>,
    ) -> Result<()> {
        let input_error = |e: &dyn std::fmt::Display| Error::Input {
            path: file.path.clone(),
            message: e.to_string(),
        };
        let handle = fs::File::open(&file.path).map_err(|e| Error::io("read", &file.path, e))?;
        let builder =
            ParquetRecordBatchReaderBuilder::try_new(handle).map_err(|e| input_error(&e))?;
        let file_schema = Arc::clone(builder.schema());
        let file_names: Vec<String> = file_schema
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        let schema = Arc::clone(self.converter.schema());

        let mut sources = Vec::with_capacity(schema.fields().len());
        let mut roots = Vec::new();
        for (i, field) in schema.fields().iter().enumerate() {
            let name = field.name();
            if field.is_nullable() && needed.is_some_and(|n| !n.reads(i)) {
                sources.push(ColumnSource::Skipped);
                continue;
            }
            let pos = file_names
                .iter()
                .position(|n| n == name)
                .or_else(|| file_names.iter().position(|n| n.eq_ignore_ascii_case(name)));
            sources.push(match (pos, Self::partition_value(file, name)) {
                (Some(p), _) => {
                    roots.push(p);
                    ColumnSource::Field(p)
                }
                (None, Some(v)) => ColumnSource::Partition(v),
                (None, None) => return Err(Self::missing_column(file, name, &file_names)),
            });
        }
        roots.sort_unstable();
        roots.dedup();
        // Partition values are converted once per file when they convert; otherwise they go
        // through the row-by-row conversion (and every row of the file is rejected).
        let constants: Vec<Option<ScalarValue>> = sources
            .iter()
            .zip(schema.fields())
            .map(|(s, f)| match s {
                ColumnSource::Partition(v) => self.converter.constant(v.as_deref(), f.data_type()),
                _ => None,
            })
            .collect();

        let mask = ProjectionMask::roots(builder.parquet_schema(), roots.iter().copied());
        let reader = builder
            .with_projection(mask)
            .with_batch_size(batch_size)
            .build()
            .map_err(|e| input_error(&e))?;
        let mut rows_before = 0u64;
        for batch in reader {
            let batch = batch.map_err(|e| input_error(&e))?;
            let n = batch.num_rows();
            let mut columns: Vec<ArrayRef> = Vec::with_capacity(sources.len());
            for (c, source) in sources.iter().enumerate() {
                columns.push(match source {
                    ColumnSource::Field(p) => {
                        let at = roots.binary_search(p).expect("projected root");
                        Arc::clone(batch.column(at))
                    }
                    ColumnSource::Skipped => {
                        arrow::array::new_null_array(schema.field(c).data_type(), n)
                    }
                    ColumnSource::Partition(v) => match &constants[c] {
                        Some(scalar) => scalar.to_array_of_size(n)?,
                        None => {
                            Arc::new(StringArray::from_iter(std::iter::repeat_n(v.as_deref(), n)))
                        }
                    },
                });
            }
            let decoded =
                self.converter
                    .finish(columns, n, Failures::default(), &file.path, &mut |row| {
                        (rows_before + row as u64 + 1, row_as_json(&batch, row))
                    })?;
            rows_before += n as u64;
            emit(decoded)?;
        }
        Ok(())
    }
}

/// Text columns of one batch being read from CSV or JSON.
pub(crate) struct TextBatch {
    /// One builder per declared column.
    pub(crate) builders: Vec<StringBuilder>,
    /// Per declared column (empty when there are none): a ROW column read field by field
    /// (JSON objects), whose builder in `builders` then holds only NULLs.
    pub(crate) structs: Vec<Option<StructText>>,
    /// Per row: 1-based line (a log record's offset), byte range of the raw text.
    pub(crate) spans: Vec<(u64, usize, usize)>,
    pub(crate) failures: Failures,
}

/// A ROW column as text per field, plus which rows hold an object at all.
pub(crate) struct StructText {
    /// The ROW's field names, each of type Utf8.
    pub(crate) fields: Fields,
    pub(crate) children: Vec<StringBuilder>,
    pub(crate) valid: NullBufferBuilder,
}

impl StructText {
    pub(crate) fn new(fields: &Fields, capacity: usize) -> Self {
        StructText {
            fields: fields
                .iter()
                .map(|f| Field::new(f.name(), DataType::Utf8, true))
                .collect(),
            children: (0..fields.len())
                .map(|_| StringBuilder::with_capacity(capacity, capacity * 8))
                .collect(),
            valid: NullBufferBuilder::new(capacity),
        }
    }

    pub(crate) fn append_null(&mut self) {
        self.children.iter_mut().for_each(|b| b.append_null());
        self.valid.append_null();
    }

    pub(crate) fn finish(&mut self) -> ArrayRef {
        let children = self
            .children
            .iter_mut()
            .map(|b| Arc::new(b.finish()) as ArrayRef)
            .collect();
        Arc::new(StructArray::new(
            self.fields.clone(),
            children,
            self.valid.finish(),
        ))
    }
}

impl TextBatch {
    pub(crate) fn new(columns: usize, capacity: usize) -> Self {
        let capacity = capacity.min(8192);
        TextBatch {
            builders: (0..columns)
                .map(|_| StringBuilder::with_capacity(capacity, capacity * 8))
                .collect(),
            structs: Vec::new(),
            spans: Vec::with_capacity(capacity),
            failures: Failures::default(),
        }
    }

    pub(crate) fn append_nulls(&mut self) {
        for b in &mut self.builders {
            b.append_null();
        }
        for s in self.structs.iter_mut().flatten() {
            s.append_null();
        }
    }

    /// Converts the rows read so far and starts a new batch.
    pub(crate) fn finish(
        &mut self,
        converter: &Converter,
        path: &Path,
        body: &[u8],
    ) -> Result<Decoded> {
        let rows = self.spans.len();
        let mut structs = self.structs.iter_mut();
        let columns = self
            .builders
            .iter_mut()
            .map(|b| {
                let text = Arc::new(b.finish()) as ArrayRef;
                match structs.next() {
                    Some(Some(s)) => s.finish(),
                    _ => text,
                }
            })
            .collect();
        let spans = std::mem::take(&mut self.spans);
        let failures = std::mem::take(&mut self.failures);
        converter.finish(columns, rows, failures, path, &mut |row| {
            let (line, start, end) = spans[row];
            (
                line,
                String::from_utf8_lossy(&body[start..end]).into_owned(),
            )
        })
    }
}

/// A text field (a CSV field, a JSON string) as text for its column, or `None` for NULL. For
/// non-string columns surrounding spaces are ignored and an empty field is NULL; for string
/// columns a field is NULL only when it equals an explicit `csv.null-literal`.
pub(crate) fn csv_cell<'a>(
    text: &'a str,
    is_string: bool,
    null_literal: Option<&str>,
) -> Option<&'a str> {
    if is_string {
        return (Some(text) != null_literal).then_some(text);
    }
    let t = text.trim();
    (!t.is_empty() && Some(t) != null_literal).then_some(t)
}

fn memchr_newline(bytes: &[u8]) -> Option<usize> {
    bytes.iter().position(|&b| b == b'\n')
}

/// Renders one row of a batch as a JSON object (the raw text of a rejected Parquet row).
fn row_as_json(batch: &RecordBatch, row: usize) -> String {
    let slice = batch.slice(row, 1);
    let mut buf = Vec::new();
    let mut writer = arrow::json::LineDelimitedWriter::new(&mut buf);
    if writer.write(&slice).is_err() || writer.finish().is_err() {
        return String::new();
    }
    drop(writer);
    String::from_utf8_lossy(&buf).trim_end().to_string()
}

/// Lists the files of a source: `root` itself when it is a file, else every file below it,
/// sorted by path, skipping names that start with `.` or `_`.
fn list_files(root: &Path) -> Result<Vec<SourceFile>> {
    let meta = fs::metadata(root).map_err(|e| Error::io("read", root, e))?;
    let mut files = Vec::new();
    if meta.is_file() {
        files.push(source_file(root.to_path_buf(), &meta, Vec::new()));
    } else {
        let mut visited = HashSet::new();
        walk(root, &mut Vec::new(), &mut visited, &mut files)?;
        files.sort_by(|a, b| a.path.cmp(&b.path));
    }
    Ok(files)
}

fn walk(
    dir: &Path,
    partitions: &mut Vec<(String, String)>,
    visited: &mut HashSet<PathBuf>,
    files: &mut Vec<SourceFile>,
) -> Result<()> {
    // A symbolic link back to a folder being read would otherwise loop forever.
    if let Ok(real) = fs::canonicalize(dir) {
        if !visited.insert(real) {
            return Ok(());
        }
    }
    let entries = fs::read_dir(dir).map_err(|e| Error::io("read", dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| Error::io("read", dir, e))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') || name.starts_with('_') {
            continue;
        }
        let path = entry.path();
        let meta = fs::metadata(&path).map_err(|e| Error::io("read", &path, e))?;
        if meta.is_dir() {
            let pushed = match hive::parse_segment(&name) {
                Some(kv) => {
                    partitions.push(kv);
                    true
                }
                None => false,
            };
            walk(&path, partitions, visited, files)?;
            if pushed {
                partitions.pop();
            }
        } else if meta.is_file() {
            files.push(source_file(path, &meta, partitions.clone()));
        }
    }
    Ok(())
}

fn source_file(
    path: PathBuf,
    meta: &fs::Metadata,
    partitions: Vec<(String, String)>,
) -> SourceFile {
    let modified = meta
        .modified()
        .map(chrono::DateTime::<chrono::Utc>::from)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_default();
    SourceFile {
        path,
        size: meta.len(),
        modified,
        partitions,
    }
}
