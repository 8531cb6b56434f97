//! The reject bin: one JSON line per rejected row, tagged with the run that rejected it.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use flowline_core::{Error, Reject, Result};

pub struct RejectBin {
    path: PathBuf,
    run_id: String,
    writer: Option<BufWriter<File>>,
    counts: BTreeMap<String, u64>,
}

impl RejectBin {
    pub fn new(path: PathBuf, run_id: &str) -> RejectBin {
        RejectBin {
            path,
            run_id: run_id.to_string(),
            writer: None,
            counts: BTreeMap::new(),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn write(&mut self, rejects: &[Reject]) -> Result<()> {
        if rejects.is_empty() {
            return Ok(());
        }
        if self.writer.is_none() {
            if let Some(dir) = self.path.parent() {
                std::fs::create_dir_all(dir).map_err(|e| Error::io("create", dir, e))?;
            }
            let f = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)
                .map_err(|e| Error::io("open reject bin", &self.path, e))?;
            self.writer = Some(BufWriter::new(f));
        }
        let w = self
            .writer
            .as_mut()
            .ok_or_else(|| Error::Internal("reject bin".into()))?;
        for r in rejects {
            let mut v = serde_json::to_value(r).map_err(|e| Error::Internal(e.to_string()))?;
            if let Some(o) = v.as_object_mut() {
                o.insert("run_id".into(), self.run_id.clone().into());
            }
            writeln!(w, "{v}").map_err(|e| Error::io("write reject bin", &self.path, e))?;
            *self
                .counts
                .entry(r.reason.as_str().to_string())
                .or_default() += 1;
        }
        Ok(())
    }

    pub fn counts(&self) -> &BTreeMap<String, u64> {
        &self.counts
    }

    pub fn flush(&mut self) -> Result<()> {
        if let Some(w) = self.writer.as_mut() {
            w.flush()
                .map_err(|e| Error::io("write reject bin", &self.path, e))?;
        }
        Ok(())
    }
}

/// Reads the reject bin, optionally only the rejects of one run.
pub fn read_rejects(path: &Path, run_id: Option<&str>) -> Result<Vec<serde_json::Value>> {
    let mut all = crate::rows::read_json_lines(path)?;
    all.retain(|v| run_id.is_none_or(|id| v["run_id"] == id));
    Ok(all)
}
