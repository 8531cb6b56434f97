//! Helpers shared by the runtime's integration tests.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

/// Every path under `dir`, files and folders, relative to it.
pub fn list_tree(dir: &Path) -> BTreeSet<PathBuf> {
    fn go(root: &Path, dir: &Path, out: &mut BTreeSet<PathBuf>) {
        for entry in fs::read_dir(dir).unwrap() {
            let entry = entry.unwrap();
            out.insert(entry.path().strip_prefix(root).unwrap().to_path_buf());
            if entry.file_type().unwrap().is_dir() {
                go(root, &entry.path(), out);
            }
        }
    }
    let mut out = BTreeSet::new();
    go(dir, dir, &mut out);
    out
}
