//! Rendering rows for the reject bin.

use arrow::array::{RecordBatch, UInt32Array};
use arrow::compute::take_record_batch;
use flowline_core::Result;

/// The rows at `indices` of `batch`, each as one JSON object.
pub fn rows_as_json(batch: &RecordBatch, indices: &[usize]) -> Result<Vec<String>> {
    let idx = UInt32Array::from(indices.iter().map(|&i| i as u32).collect::<Vec<_>>());
    let rows = take_record_batch(batch, &idx)?;
    let mut buf = Vec::new();
    {
        let mut writer = arrow::json::LineDelimitedWriter::new(&mut buf);
        writer.write(&rows)?;
        writer.finish()?;
    }
    let text = String::from_utf8_lossy(&buf);
    Ok(text.lines().map(str::to_string).collect())
}

/// DataFusion may declare a column non-nullable that a function still fills with NULLs (or a
/// window that saw only NULLs): relax nullability where the data disagrees instead of failing.
pub fn relax_nullability(
    schema: &arrow::datatypes::SchemaRef,
    columns: &[arrow::array::ArrayRef],
) -> arrow::datatypes::SchemaRef {
    if schema
        .fields()
        .iter()
        .zip(columns)
        .all(|(f, c)| f.is_nullable() || c.null_count() == 0)
    {
        return schema.clone();
    }
    std::sync::Arc::new(arrow::datatypes::Schema::new(
        schema
            .fields()
            .iter()
            .map(|f| f.as_ref().clone().with_nullable(true))
            .collect::<Vec<_>>(),
    ))
}

/// Reads a JSON-lines file (manifest, reject bin); a missing file is empty; unparseable lines
/// (a torn last line) are skipped.
pub fn read_json_lines(path: &std::path::Path) -> flowline_core::Result<Vec<serde_json::Value>> {
    use std::io::BufRead;
    let f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
        Err(e) => return Err(flowline_core::Error::io("read", path, e)),
    };
    let mut out = vec![];
    for line in std::io::BufReader::new(f).lines() {
        let line = line.map_err(|e| flowline_core::Error::io("read", path, e))?;
        if let Ok(v) = serde_json::from_str(&line) {
            out.push(v);
        }
    }
    Ok(out)
}

/// A row converter over every column of `schema` (rows kept in operator state).
pub fn row_converter(schema: &arrow::datatypes::Schema) -> Result<arrow::row::RowConverter> {
    Ok(arrow::row::RowConverter::new(
        schema
            .fields()
            .iter()
            .map(|f| arrow::row::SortField::new(f.data_type().clone()))
            .collect(),
    )?)
}
