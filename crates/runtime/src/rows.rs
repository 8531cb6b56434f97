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
