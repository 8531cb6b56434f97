//! The golden case format of `crates/runtime/tests/golden/` (see the module documentation of
//! `crates/runtime/tests/golden.rs`), shared by both golden runners (`golden.rs` over files,
//! `crates/cli/tests/golden_log.rs` over the embedded log, which includes this file by path):
//! the expected rows, partitions, rejects and report of a case, reading a file sink's rows
//! back, matching rejects, and a small SQL scanner to rewrite a pipeline's text.

// Each runner uses a part of it.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde_json::Value;

/// The folder of the golden cases.
pub fn golden_dir() -> PathBuf {
    // From either crate's folder (`crates/runtime` or `crates/cli`).
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../runtime/tests/golden")
}

/// Every case folder's name.
pub fn case_folders() -> BTreeSet<String> {
    fs::read_dir(golden_dir())
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().unwrap().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

// ------------------------------------------------------------------ expectations

/// Rows of a CSV table with its header.
#[derive(Debug, Clone)]
pub struct Rows {
    pub header: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

pub struct Expected {
    pub sinks: BTreeMap<String, Rows>,
    pub partitions: BTreeMap<String, BTreeSet<String>>,
    pub ordered: BTreeSet<String>,
    pub rejects: Vec<Value>,
    pub report: serde_json::Map<String, Value>,
    /// `stream_error.txt`: the case is batch only; stream mode must refuse it with these lines.
    pub stream_error: Option<Vec<String>>,
}

pub fn load_expected(case: &Path) -> Expected {
    let dir = case.join("expected");
    let mut sinks = BTreeMap::new();
    let mut partitions = BTreeMap::new();
    for entry in fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if let Some(sink) = name.strip_suffix(".csv") {
            let mut reader = csv::ReaderBuilder::new()
                .has_headers(true)
                .from_path(&path)
                .unwrap();
            let header = reader.headers().unwrap().iter().map(String::from).collect();
            let rows = reader
                .records()
                .map(|r| r.unwrap().iter().map(String::from).collect())
                .collect();
            sinks.insert(sink.to_string(), Rows { header, rows });
        } else if let Some(sink) = name.strip_suffix(".partitions") {
            let set = fs::read_to_string(&path)
                .unwrap()
                .lines()
                .filter(|l| !l.trim().is_empty())
                .map(String::from)
                .collect();
            partitions.insert(sink.to_string(), set);
        }
    }
    let lines = |file: &str| -> Option<Vec<String>> {
        let text = fs::read_to_string(dir.join(file)).ok()?;
        Some(
            text.lines()
                .filter(|l| !l.trim().is_empty())
                .map(String::from)
                .collect(),
        )
    };
    let ordered = lines("ordered.txt")
        .unwrap_or_default()
        .into_iter()
        .collect();
    let rejects = lines("rejects.jsonl")
        .unwrap_or_default()
        .iter()
        .map(|l| serde_json::from_str(l).expect("rejects.jsonl"))
        .collect();
    let report = match fs::read_to_string(dir.join("report.json")) {
        Ok(text) => match serde_json::from_str(&text).expect("report.json") {
            Value::Object(m) => m,
            other => panic!("report.json must be an object, not {other}"),
        },
        Err(_) => Default::default(),
    };
    Expected {
        sinks,
        partitions,
        ordered,
        rejects,
        report,
        stream_error: lines("stream_error.txt"),
    }
}

/// A file sink of the pipeline, as a runner needs it to read the output back.
pub struct SinkSpec {
    pub path: String,
    pub partition_by: Vec<String>,
    pub header: bool,
    pub delimiter: u8,
}

impl SinkSpec {
    /// The spec of a golden sink (golden sinks are CSV file sinks).
    pub fn of(table: &flowline_core::TableDef) -> SinkSpec {
        assert_eq!(table.option("connector"), Some("files"), "{}", table.name);
        assert_eq!(
            table.option("format"),
            Some("csv"),
            "golden sinks are CSV: {}",
            table.name
        );
        SinkSpec {
            path: table.option("path").expect("sink path").to_string(),
            partition_by: table
                .option("partition-by")
                .map(|p| p.split(',').map(|s| s.trim().to_string()).collect())
                .unwrap_or_default(),
            header: table
                .option("csv.header")
                .is_none_or(|h| h.eq_ignore_ascii_case("true")),
            delimiter: table
                .option("csv.field-delimiter")
                .map_or(b',', |d| d.as_bytes()[0]),
        }
    }
}

// ------------------------------------------------------------------ reading outputs

/// One row of an epoch sink, with where it was read: rows are in `(epoch, file number)` order
/// when sorted by these keys, which is the order an upsert must apply them in.
pub struct EpochRow {
    pub epoch: u64,
    pub file: u64,
    pub row: Vec<String>,
}

/// Which output files a sink folder holds.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum SinkFiles {
    /// A batch run's `part-<n>.csv` files; only a leftover `.staging-*` folder is an error.
    Run,
    /// A stream job's exactly-once `part-<epoch>-<n>.csv` files; any hidden file is an error.
    Epochs,
}

/// Reads every CSV file under a sink's folder. Returns the rows in `(epoch, n)` order (a run's
/// files all have epoch 0 and keep the order they are found in), each in the order of `header`
/// (partition columns filled from the folder names), and the partition folders found.
pub fn read_csv_sink(
    root: &Path,
    spec: &SinkSpec,
    header: &[String],
    kind: SinkFiles,
) -> Result<(Vec<EpochRow>, BTreeSet<String>), String> {
    if !root.is_dir() {
        return Err(format!("no output folder {}", root.display()));
    }
    let mut files = vec![];
    walk_files(root, &mut files);
    let mut rows = vec![];
    let mut partitions = BTreeSet::new();
    for file in files {
        let rel = file.strip_prefix(root).unwrap();
        let name = rel.file_name().unwrap().to_string_lossy().into_owned();
        let left_behind = match kind {
            SinkFiles::Run => ".staging-",
            SinkFiles::Epochs => ".",
        };
        if rel
            .components()
            .any(|c| c.as_os_str().to_string_lossy().starts_with(left_behind))
        {
            return Err(format!("{left_behind}* left behind: {}", rel.display()));
        }
        let (epoch, n) = match kind {
            SinkFiles::Run if name.starts_with("part-") && name.ends_with(".csv") => (0, 0),
            SinkFiles::Run => return Err(format!("unexpected file {}", rel.display())),
            SinkFiles::Epochs => name
                .strip_suffix(".csv")
                .and_then(|n| n.strip_prefix("part-"))
                .and_then(|n| n.split_once('-'))
                .and_then(|(e, n)| Some((e.parse::<u64>().ok()?, n.parse::<u64>().ok()?)))
                .ok_or_else(|| {
                    format!(
                        "not an epoch file (part-<epoch>-<n>.csv): {}",
                        rel.display()
                    )
                })?,
        };
        let mut values: Vec<(String, String)> = vec![];
        let folders: Vec<String> = rel
            .parent()
            .map(|p| {
                p.components()
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        if !folders.is_empty() {
            partitions.insert(folders.join("/"));
        }
        for folder in &folders {
            let (k, v) = folder
                .split_once('=')
                .ok_or_else(|| format!("folder `{folder}` is not key=value"))?;
            let v = if v == "__HIVE_DEFAULT_PARTITION__" {
                String::new()
            } else {
                percent_decode(v)
            };
            values.push((percent_decode(k), v));
        }
        let keys: Vec<&str> = values.iter().map(|(k, _)| k.as_str()).collect();
        if keys != spec.partition_by {
            return Err(format!(
                "{}: partition folders {keys:?}, the sink partitions by {:?}",
                rel.display(),
                spec.partition_by
            ));
        }
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(false)
            .delimiter(spec.delimiter)
            .from_path(&file)
            .map_err(|e| e.to_string())?;
        let mut records = reader.records();
        let columns: Vec<String> = if spec.header {
            match records.next() {
                Some(h) => h
                    .map_err(|e| e.to_string())?
                    .iter()
                    .map(String::from)
                    .collect(),
                None => return Err(format!("{}: empty file, no header", rel.display())),
            }
        } else {
            header
                .iter()
                .filter(|h| !spec.partition_by.contains(h))
                .cloned()
                .collect()
        };
        let mut names: Vec<&String> = columns
            .iter()
            .chain(values.iter().map(|(k, _)| k))
            .collect();
        names.sort();
        let mut want: Vec<&String> = header.iter().collect();
        want.sort();
        if names != want {
            return Err(format!(
                "{}: columns {columns:?} + partitions {keys:?}, expected {header:?}",
                rel.display()
            ));
        }
        for record in records {
            let record = record.map_err(|e| e.to_string())?;
            if record.len() != columns.len() {
                return Err(format!("{}: ragged record {record:?}", rel.display()));
            }
            let mut by_name: BTreeMap<&str, String> = columns
                .iter()
                .map(String::as_str)
                .zip(record.iter().map(String::from))
                .collect();
            for (k, v) in &values {
                by_name.insert(k.as_str(), v.clone());
            }
            rows.push(EpochRow {
                epoch,
                file: n,
                row: header.iter().map(|h| by_name[h.as_str()].clone()).collect(),
            });
        }
    }
    // Stable: rows of one file keep their order; files of one epoch in different partition
    // folders hold different keys, so their relative order does not matter.
    rows.sort_by_key(|r| (r.epoch, r.file));
    Ok((rows, partitions))
}

/// Matches actual rejects against expected ones as golden.rs does: every key of an expected
/// reject must equal the actual reject's field, except `detail_contains`, a substring of its
/// detail; each actual reject matches at most one expected one. `file` of the actual rejects
/// is made relative to `prefix` first.
pub fn check_rejects(prefix: &Path, actual: &[Value], expected: &[Value], out: &mut Vec<String>) {
    let prefix = format!("{}/", prefix.display());
    let mut left: Vec<Value> = actual
        .iter()
        .map(|r| {
            let mut r = r.clone();
            if let Some(f) = r["file"].as_str() {
                r["file"] = Value::from(f.strip_prefix(&prefix).unwrap_or(f));
            }
            r
        })
        .collect();
    let mut missing = vec![];
    for want in expected {
        let matches = |got: &Value| {
            want.as_object().unwrap().iter().all(|(k, v)| {
                if k == "detail_contains" {
                    got["detail"]
                        .as_str()
                        .is_some_and(|d| d.contains(v.as_str().unwrap()))
                } else {
                    &got[k.as_str()] == v
                }
            })
        };
        match left.iter().position(matches) {
            Some(i) => {
                left.remove(i);
            }
            None => missing.push(want.to_string()),
        }
    }
    if !missing.is_empty() || !left.is_empty() {
        out.push(format!(
            "rejects differ\n  expected but not found:\n    {}\n  found but not expected:\n    {}",
            missing.join("\n    "),
            left.iter()
                .map(Value::to_string)
                .collect::<Vec<_>>()
                .join("\n    ")
        ));
    }
}

/// The rows only one side has, as a multiset difference.
pub fn row_diff(expected: &[Vec<String>], actual: &[Vec<String>]) -> String {
    let mut unexpected: Vec<&Vec<String>> = actual.iter().collect();
    let mut missing = vec![];
    for row in expected {
        match unexpected.iter().position(|r| *r == row) {
            Some(i) => {
                unexpected.remove(i);
            }
            None => missing.push(row.join(",")),
        }
    }
    let unexpected: Vec<String> = unexpected.iter().map(|r| r.join(",")).collect();
    format!(
        "  missing:    {}\n  unexpected: {}",
        missing.join(" | "),
        unexpected.join(" | ")
    )
}

pub fn render(header: &[String], rows: &[Vec<String>]) -> String {
    std::iter::once(header.join(","))
        .chain(rows.iter().map(|r| r.join(",")))
        .map(|l| format!("    {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

pub fn read_jsonl(path: &Path) -> Vec<Value> {
    match fs::read_to_string(path) {
        Ok(text) => text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).unwrap())
            .collect(),
        Err(_) => vec![],
    }
}

pub fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = |b: u8| (b as char).to_digit(16);
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8(out).unwrap()
}

// ------------------------------------------------------------------ files

pub fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// Every file below `dir`, sorted by name at each level.
pub fn walk_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = fs::read_dir(dir).unwrap().map(|e| e.unwrap()).collect();
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        if entry.file_type().unwrap().is_dir() {
            walk_files(&entry.path(), out);
        } else {
            out.push(entry.path());
        }
    }
}

// ------------------------------------------------------------------ SQL text

/// What a token of pipeline text is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A keyword or plain identifier (letters, digits, `_`, `$`).
    Word,
    /// `"..."` or `` `...` ``.
    QuotedIdent,
    /// `'...'`.
    Str,
    Punct(u8),
}

#[derive(Debug, Clone, Copy)]
pub struct Token {
    pub kind: Kind,
    pub start: usize,
    pub end: usize,
}

/// Splits SQL text into tokens, skipping whitespace and `--` / `/* */` comments; quotes are
/// doubled to escape them, as in Flink SQL.
pub fn tokenize(sql: &str) -> Vec<Token> {
    let b = sql.as_bytes();
    let mut out = vec![];
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c.is_ascii_whitespace() {
            i += 1;
            continue;
        }
        if c == b'-' && b.get(i + 1) == Some(&b'-') {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
            continue;
        }
        if c == b'/' && b.get(i + 1) == Some(&b'*') {
            i += 2;
            while i < b.len() && !(b[i] == b'*' && b.get(i + 1) == Some(&b'/')) {
                i += 1;
            }
            i = (i + 2).min(b.len());
            continue;
        }
        let start = i;
        if matches!(c, b'\'' | b'"' | b'`') {
            i += 1;
            loop {
                assert!(i < b.len(), "unterminated quote at byte {start}");
                if b[i] == c {
                    if b.get(i + 1) == Some(&c) {
                        i += 2;
                        continue;
                    }
                    i += 1;
                    break;
                }
                i += 1;
            }
            let kind = if c == b'\'' {
                Kind::Str
            } else {
                Kind::QuotedIdent
            };
            out.push(Token {
                kind,
                start,
                end: i,
            });
            continue;
        }
        let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b'$' || b >= 0x80;
        if word(c) {
            while i < b.len() && word(b[i]) {
                i += 1;
            }
            out.push(Token {
                kind: Kind::Word,
                start,
                end: i,
            });
            continue;
        }
        i += 1;
        out.push(Token {
            kind: Kind::Punct(c),
            start,
            end: i,
        });
    }
    out
}

/// One statement of a pipeline text: its tokens (without the `;`) and its bytes (with it).
pub struct Stmt {
    pub tokens: Vec<Token>,
    pub bytes: Range<usize>,
}

/// Splits a pipeline text into statements at the `;` outside parentheses.
pub fn statements(sql: &str) -> Vec<Stmt> {
    let mut out = vec![];
    let mut current: Vec<Token> = vec![];
    let mut depth = 0i32;
    for t in tokenize(sql) {
        match t.kind {
            Kind::Punct(b'(') => depth += 1,
            Kind::Punct(b')') => depth -= 1,
            Kind::Punct(b';') if depth == 0 => {
                if let Some(first) = current.first() {
                    out.push(Stmt {
                        bytes: first.start..t.end,
                        tokens: std::mem::take(&mut current),
                    });
                }
                continue;
            }
            _ => {}
        }
        current.push(t);
    }
    if let (Some(first), Some(last)) = (current.first(), current.last()) {
        out.push(Stmt {
            bytes: first.start..last.end,
            tokens: current,
        });
    }
    out
}

impl Stmt {
    fn keyword(&self, sql: &str, i: usize, word: &str) -> bool {
        self.tokens
            .get(i)
            .is_some_and(|t| t.kind == Kind::Word && sql[t.start..t.end].eq_ignore_ascii_case(word))
    }

    /// The identifier at token `i`, unquoted.
    fn ident(&self, sql: &str, i: usize) -> Option<String> {
        let t = self.tokens.get(i)?;
        let text = &sql[t.start..t.end];
        match t.kind {
            Kind::Word => Some(text.to_string()),
            Kind::QuotedIdent => {
                let q = &text[..1];
                Some(text[1..text.len() - 1].replace(&q.repeat(2), q))
            }
            _ => None,
        }
    }

    /// `CREATE [TEMPORARY] TABLE [IF NOT EXISTS] name ...`: the name and its token index.
    pub fn created_table(&self, sql: &str) -> Option<(String, usize)> {
        if !self.keyword(sql, 0, "CREATE") {
            return None;
        }
        let mut i = 1;
        if self.keyword(sql, i, "TEMPORARY") {
            i += 1;
        }
        if !self.keyword(sql, i, "TABLE") {
            return None;
        }
        i += 1;
        if self.keyword(sql, i, "IF")
            && self.keyword(sql, i + 1, "NOT")
            && self.keyword(sql, i + 2, "EXISTS")
        {
            i += 3;
        }
        Some((self.ident(sql, i)?, i))
    }

    /// `INSERT INTO name ...`: the name.
    pub fn insert_target(&self, sql: &str) -> Option<String> {
        (self.keyword(sql, 0, "INSERT") && self.keyword(sql, 1, "INTO"))
            .then(|| self.ident(sql, 2))
            .flatten()
    }

    /// The bytes of the parenthesised option list of a `CREATE TABLE`'s `WITH (...)`,
    /// parentheses included.
    pub fn with_options(&self, sql: &str) -> Option<Range<usize>> {
        let (_, name) = self.created_table(sql)?;
        let mut depth = 0i32;
        let mut i = name + 1;
        while i < self.tokens.len() {
            match self.tokens[i].kind {
                Kind::Punct(b'(') => depth += 1,
                Kind::Punct(b')') => depth -= 1,
                Kind::Word
                    if depth == 0
                        && self.keyword(sql, i, "WITH")
                        && self
                            .tokens
                            .get(i + 1)
                            .is_some_and(|t| t.kind == Kind::Punct(b'(')) =>
                {
                    let open = i + 1;
                    let mut d = 0i32;
                    for (j, t) in self.tokens.iter().enumerate().skip(open) {
                        match t.kind {
                            Kind::Punct(b'(') => d += 1,
                            Kind::Punct(b')') => {
                                d -= 1;
                                if d == 0 {
                                    return Some(self.tokens[open].start..self.tokens[j].end);
                                }
                            }
                            _ => {}
                        }
                    }
                    return None;
                }
                _ => {}
            }
            i += 1;
        }
        None
    }
}

/// `'text'` as a SQL string literal.
pub fn sql_string(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// Applies byte-range replacements (non-overlapping) to `text`.
pub fn apply_edits(text: &str, mut edits: Vec<(Range<usize>, String)>) -> String {
    edits.sort_by_key(|(r, _)| std::cmp::Reverse(r.start));
    let mut out = text.to_string();
    let mut last = usize::MAX;
    for (range, replacement) in edits {
        assert!(range.end <= last, "overlapping edits");
        last = range.start;
        out.replace_range(range, &replacement);
    }
    out
}
