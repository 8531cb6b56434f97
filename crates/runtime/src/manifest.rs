//! The manifest: one JSON line per run, appended when the run ends (successfully or not).

use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;

use flowline_core::{Error, Result};

pub fn append(path: &Path, record: &serde_json::Value) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| Error::io("create", dir, e))?;
    }
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| Error::io("open manifest", path, e))?;
    writeln!(f, "{record}").map_err(|e| Error::io("write manifest", path, e))?;
    f.sync_data()
        .map_err(|e| Error::io("sync manifest", path, e))
}

pub fn read(path: &Path) -> Result<Vec<serde_json::Value>> {
    crate::rows::read_json_lines(path)
}

/// The last `n` records of a manifest, oldest first, reading only the file's end.
pub fn read_last(path: &Path, n: usize) -> Result<Vec<serde_json::Value>> {
    crate::rows::read_json_lines_tail(path, n)
}
