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

/// The last `n` parseable lines of a JSON-lines file (a manifest), read from its end: the cost
/// follows `n`, not the file's length. A missing file is empty.
pub fn read_json_lines_tail(
    path: &std::path::Path,
    n: usize,
) -> flowline_core::Result<Vec<serde_json::Value>> {
    use std::io::{Read, Seek, SeekFrom};
    let io = |e| flowline_core::Error::io("read", path, e);
    let mut f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
        Err(e) => return Err(io(e)),
    };
    let mut end = f.metadata().map_err(io)?.len();
    // `tail` holds the bytes after `end`, starting at a line start once more was read.
    let mut tail: Vec<u8> = vec![];
    // The lines found, one vector per chunk, last chunk first.
    let mut found_per_chunk: Vec<Vec<serde_json::Value>> = vec![];
    let mut found_total = 0;
    const CHUNK: u64 = 64 * 1024;
    while found_total < n && end > 0 {
        let start = end.saturating_sub(CHUNK);
        let mut chunk = vec![0u8; (end - start) as usize];
        f.seek(SeekFrom::Start(start)).map_err(io)?;
        f.read_exact(&mut chunk).map_err(io)?;
        chunk.extend_from_slice(&tail);
        // Lines wholly inside `chunk`: all but the first, unless the file starts here.
        let first_full = if start == 0 {
            0
        } else {
            match chunk.iter().position(|&b| b == b'\n') {
                Some(i) => i + 1,
                None => {
                    tail = chunk;
                    end = start;
                    continue;
                }
            }
        };
        let found: Vec<serde_json::Value> = chunk[first_full..]
            .split(|&b| b == b'\n')
            .filter_map(|line| serde_json::from_slice(line).ok())
            .collect();
        found_total += found.len();
        found_per_chunk.push(found);
        tail = chunk[..first_full].to_vec();
        end = start;
    }
    let mut out: Vec<serde_json::Value> = found_per_chunk.into_iter().rev().flatten().collect();
    let skip = out.len().saturating_sub(n);
    Ok(out.split_off(skip))
}

/// The number of complete lines of a file (a last line without its newline is still being
/// written and is not counted; the readers above return it if it is already whole JSON, so a
/// count taken during a write can be one below what they read); a missing file has none.
/// Streams the bytes through a fixed buffer without parsing them.
pub fn count_lines(path: &std::path::Path) -> flowline_core::Result<usize> {
    use std::io::Read;
    let io = |e| flowline_core::Error::io("read", path, e);
    let mut f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(io(e)),
    };
    let mut buf = vec![0u8; 64 * 1024];
    let mut lines = 0;
    loop {
        let read = match f.read(&mut buf) {
            Ok(0) => break,
            Ok(read) => read,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(io(e)),
        };
        lines += buf[..read].iter().filter(|&&b| b == b'\n').count();
    }
    Ok(lines)
}

#[cfg(test)]
mod tests {
    #[test]
    fn tail_reads_the_last_lines_across_chunks() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.jsonl");
        // Lines of about 1 KB, so that 300 of them span several 64 KB chunks; one torn line.
        let pad = "x".repeat(1000);
        let mut text = String::new();
        for i in 0..300 {
            text.push_str(&format!("{{\"i\":{i},\"pad\":\"{pad}\"}}\n"));
        }
        text.push_str("{\"i\":");
        std::fs::write(&path, &text).unwrap();
        let ids = |n| -> Vec<i64> {
            super::read_json_lines_tail(&path, n)
                .unwrap()
                .iter()
                .map(|v| v["i"].as_i64().unwrap())
                .collect()
        };
        assert_eq!(ids(3), vec![297, 298, 299]);
        assert_eq!(ids(150), (150..300).collect::<Vec<_>>());
        assert_eq!(ids(1000), (0..300).collect::<Vec<_>>());
        let all = super::read_json_lines(&path).unwrap();
        assert_eq!(all.len(), 300);
        // The torn last line is not counted: it is not a record yet.
        assert_eq!(super::count_lines(&path).unwrap(), 300);
        assert_eq!(super::count_lines(&dir.path().join("none")).unwrap(), 0);
        assert!(super::read_json_lines_tail(&dir.path().join("none"), 5)
            .unwrap()
            .is_empty());
    }
}
