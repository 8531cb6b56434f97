//! The reject bin: one JSON line per rejected row, tagged with the run that rejected it; and the
//! replay of corrected source rejects into their sources ([`replay_corrected`]).

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

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

/// The last `limit` rejects (oldest first), optionally of one run, and how many there are.
/// Without a run only the file's end is parsed; the total is then its number of lines.
pub fn read_last_rejects(
    path: &Path,
    run_id: Option<&str>,
    limit: usize,
) -> Result<(usize, Vec<serde_json::Value>)> {
    if run_id.is_none() {
        let total = crate::rows::count_lines(path)?;
        return Ok((total, crate::rows::read_json_lines_tail(path, limit)?));
    }
    let mut all = read_rejects(path, run_id)?;
    let total = all.len();
    Ok((total, all.split_off(total.saturating_sub(limit))))
}

/// Corrected rejects as sent: a JSON array of rejects, one reject, or JSON lines of them.
pub fn parse_corrected(text: &str) -> std::result::Result<Vec<serde_json::Value>, String> {
    match serde_json::from_str::<serde_json::Value>(text) {
        Ok(serde_json::Value::Array(rows)) => Ok(rows),
        Ok(row @ serde_json::Value::Object(_)) => Ok(vec![row]),
        _ => text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
            .map(|(i, l)| {
                serde_json::from_str(l).map_err(|e| {
                    format!(
                        "line {}: not a JSON object ({e}); send a JSON array or JSON lines of \
                         rejects as listed, each with `raw` corrected",
                        i + 1
                    )
                })
            })
            .collect(),
    }
}

/// Why corrected rows were not replayed. Nothing was written in either case.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// A corrected row that cannot be replayed: it names no reject of the bin, is not a source
    /// reject, or still does not decode. The message names the row (1-based) and the problem.
    #[error("{0}")]
    Invalid(String),
    /// A reject that was already replayed (by this pipeline or another reading the source).
    #[error("{0}")]
    AlreadyReplayed(String),
    /// Reading the bin, the sources or writing the corrected rows failed.
    #[error(transparent)]
    Failed(#[from] Error),
}

/// What a replay of corrected rejects did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ReplaySummary {
    /// Rows replayed.
    pub rows: usize,
    /// Records appended to a topic: (topic, partition, offset of the first, count).
    pub appended: Vec<(String, u32, u64, usize)>,
    /// Files written into a source's folders: (path, rows).
    pub files: Vec<(String, usize)>,
}

/// A path made absolute and free of links when it exists (runs started from other folders name
/// the same file differently).
fn canonical(p: &Path) -> PathBuf {
    std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf())
}

/// The ledger of corrected rows replayed into a source, kept with the source's data so that
/// every pipeline reading it sees what was replayed: `replayed.jsonl` in a topic's folder,
/// `.replayed.jsonl` (hidden from listings) in a file source's folder.
fn log_ledger(source: &flowline_connectors::LogSource) -> PathBuf {
    source.topic().dir().join("replayed.jsonl")
}

fn folder_ledger(root: &Path) -> PathBuf {
    root.join(".replayed.jsonl")
}

/// The ledgers of every log and files source of `pipeline`.
pub fn ledger_paths(pipeline: &crate::OpenedPipeline) -> Vec<PathBuf> {
    let mut paths: Vec<PathBuf> = pipeline
        .def
        .tables
        .iter()
        .filter_map(|t| match (pipeline.log_source(&t.name), t.connector()) {
            (Some(source), _) => Some(log_ledger(source)),
            (None, Some("files")) => t
                .option("path")
                .map(|p| canonical(&pipeline.base_dir.join(p)))
                .filter(|root| root.is_dir())
                .map(|root| folder_ledger(&root)),
            _ => None,
        })
        .collect();
    paths.sort();
    paths.dedup();
    paths
}

/// A source reject's position, the same in every run that read the row: (file or partition
/// folder, made canonical; line or offset).
pub fn replay_key(reject: &serde_json::Value) -> Option<(String, u64)> {
    let file = reject["file"].as_str()?;
    Some((
        canonical(Path::new(file)).display().to_string(),
        reject["line"].as_u64()?,
    ))
}

/// The rejects replayed according to `ledgers`: [`replay_key`] → when. Ledger lines hold the
/// key as [`replay_key`] made it (already canonical).
pub fn replayed(ledgers: &[PathBuf]) -> Result<BTreeMap<(String, u64), String>> {
    let mut done = BTreeMap::new();
    for path in ledgers {
        for v in crate::rows::read_json_lines(path)? {
            if let (Some(file), Some(line), Some(at)) = (
                v["file"].as_str(),
                v["line"].as_u64(),
                v["replayed_at"].as_str(),
            ) {
                done.insert((file.to_string(), line), at.to_string());
            }
        }
    }
    Ok(done)
}

/// Where the corrected rows of one source position go.
enum Target {
    /// Appended to a partition of a log source's topic.
    Log {
        source: Arc<flowline_connectors::LogSource>,
        partition: u32,
    },
    /// Written as a new file in the folder of the file the rows came from.
    Folder {
        table: String,
        /// The source's folder and the file's folder in it (both canonical).
        root: PathBuf,
        dir: PathBuf,
        header: Option<String>,
        format: &'static str,
    },
}

impl Target {
    fn ledger(&self) -> PathBuf {
        match self {
            Target::Log { source, .. } => log_ledger(source),
            Target::Folder { root, .. } => folder_ledger(root),
        }
    }

    fn same(&self, other: &Target) -> bool {
        match (self, other) {
            (
                Target::Log { source, partition },
                Target::Log {
                    source: s,
                    partition: p,
                },
            ) => source.name() == s.name() && partition == p,
            (
                Target::Folder { table, dir, .. },
                Target::Folder {
                    table: t, dir: d, ..
                },
            ) => table == t && dir == d,
            _ => false,
        }
    }
}

/// One corrected row: its place in the request, its reject's key and table, its text.
struct Row {
    index: usize,
    key: (String, u64),
    table: String,
    raw: String,
}

const SOURCE_REASONS: [flowline_core::RejectReason; 4] = [
    flowline_core::RejectReason::MalformedCsv,
    flowline_core::RejectReason::InvalidJson,
    flowline_core::RejectReason::BadValue,
    flowline_core::RejectReason::BadTimestamp,
];

fn invalid(index: usize, message: impl std::fmt::Display) -> ReplayError {
    ReplayError::Invalid(format!("corrected row {}: {message}", index + 1))
}

/// Appends values to a partition of a topic; returns the first one's offset.
pub type AppendRecords<'a> = dyn FnMut(&flowline_log::Topic, u32, &[Vec<u8>]) -> Result<u64> + 'a;

/// Replays corrected source rejects of `pipeline`: each element of `corrected` is a reject as
/// read from the bin (`table`, `file`, `line`, ...) with `raw` replaced by the corrected text.
///
/// * Only rejects of sources are replayable (`malformed-csv`, `invalid-json`, `bad-value`,
///   `bad-timestamp`): their `raw` is the row as the source holds it. A `late` row is in its
///   source already and is refused with the time range to rerun as corrections; other operator
///   rejects carry no source position and are refused.
/// * Every corrected row is decoded as its source would decode it first; if any still fails,
///   names no reject of the bin, or was replayed before, nothing is written.
/// * A log source's rows are appended (by `append`: topic, partition, values → the first's
///   offset) to the partition
///   the reject came from, so running jobs read them like any new record. A file source's rows
///   become a new file `corrected-<ms>-<n>.<ext>` in the folder of the file they came from
///   (with that file's CSV header), so the next run reads them, Hive partitions included.
/// * Each replayed reject is recorded in its source's ledger by position (file or partition,
///   line or offset): whichever run's copy of it is sent, and through whichever pipeline reading
///   that source, it is replayed once. The ledgers stay locked from the check to the record, so
///   concurrent replays (threads or processes) cannot both pass.
pub fn replay_corrected(
    pipeline: &crate::OpenedPipeline,
    corrected: &[serde_json::Value],
    append: &mut AppendRecords<'_>,
) -> std::result::Result<ReplaySummary, ReplayError> {
    if corrected.is_empty() {
        return Err(ReplayError::Invalid("no corrected rows were sent".into()));
    }
    let bin: BTreeMap<(String, String, u64), serde_json::Value> =
        read_rejects(&pipeline.rejects_path, None)?
            .into_iter()
            .filter_map(|v| {
                let id = (
                    v["table"].as_str()?.to_string(),
                    v["file"].as_str()?.to_string(),
                    v["line"].as_u64()?,
                );
                Some((id, v))
            })
            .collect();
    let mut groups: Vec<(Target, Vec<Row>)> = vec![];
    let mut sources = BTreeMap::new();
    for (index, row) in corrected.iter().enumerate() {
        let (target, row) = resolve(pipeline, &mut sources, &bin, index, row)?;
        match groups.iter_mut().find(|(t, _)| t.same(&target)) {
            Some((_, rows)) => rows.push(row),
            None => groups.push((target, vec![row])),
        }
    }

    // Lock the ledgers (in one order), then check what was replayed already.
    let paths: std::collections::BTreeSet<PathBuf> =
        groups.iter().map(|(target, _)| target.ledger()).collect();
    let mut ledgers: BTreeMap<PathBuf, File> = BTreeMap::new();
    for path in paths {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| Error::io("open", &path, e))?;
        file.lock().map_err(|e| Error::io("lock", &path, e))?;
        ledgers.insert(path, file);
    }
    let done = replayed(&ledgers.keys().cloned().collect::<Vec<_>>())?;
    let mut seen = BTreeMap::new();
    for row in groups.iter().flat_map(|(_, rows)| rows) {
        if let Some(at) = done.get(&row.key) {
            return Err(ReplayError::AlreadyReplayed(format!(
                "corrected row {}: the reject of table {} at {} line {} was replayed at {at}",
                row.index + 1,
                row.table,
                row.key.0,
                row.key.1
            )));
        }
        if let Some(first) = seen.insert(&row.key, row.index) {
            return Err(invalid(
                row.index,
                format!("corrects the same reject as row {}", first + 1),
            ));
        }
    }

    // Decode every group as its source would, staging files, before writing anything.
    let stamp = chrono::Utc::now().timestamp_millis();
    let mut staged = Staged::default();
    for (n, (target, rows)) in groups.iter().enumerate() {
        let still_bad = match target {
            Target::Log { source, partition } => {
                let records: Vec<flowline_log::Record> = rows
                    .iter()
                    .enumerate()
                    .map(|(k, r)| flowline_log::Record {
                        offset: k as u64,
                        timestamp: 0,
                        key: None,
                        value: r.raw.as_bytes().to_vec(),
                    })
                    .collect();
                // Records are numbered from 0.
                source
                    .decode(*partition, &records)?
                    .rejects
                    .into_iter()
                    .map(|r| (r.line.unwrap_or(0) as usize, r))
                    .collect::<Vec<_>>()
            }
            Target::Folder { header, .. } => {
                let first = 1 + usize::from(header.is_some());
                staged
                    .stage(pipeline, target, rows, n, &format!("{stamp}-{n}"))?
                    .into_iter()
                    .map(|r| (r.line.unwrap_or(first as u64) as usize - first, r))
                    .collect()
            }
        };
        if let Some((k, r)) = still_bad.first() {
            let index = rows.get(*k).map_or(rows[0].index, |r| r.index);
            return Err(invalid(
                index,
                format!("still rejected: {}: {}", r.reason.as_str(), r.detail),
            ));
        }
    }

    // Write group by group: its rows (one rename, or one append), then at once its ledger lines,
    // so that whatever fails later, what reached a source is recorded as replayed.
    let mut summary = ReplaySummary::default();
    let at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    for (n, (target, rows)) in groups.iter().enumerate() {
        match target {
            Target::Log { source, partition } => {
                let values: Vec<Vec<u8>> = rows.iter().map(|r| r.raw.as_bytes().to_vec()).collect();
                let first = append(source.topic(), *partition, &values)?;
                summary.appended.push((
                    source.topic().name().to_string(),
                    *partition,
                    first,
                    rows.len(),
                ));
            }
            Target::Folder { .. } => {
                let file = staged.commit(n)?;
                summary.files.push((file.display().to_string(), rows.len()));
            }
        }
        let path = target.ledger();
        let mut text = String::new();
        for r in rows {
            text += &serde_json::json!({
                "file": r.key.0, "line": r.key.1, "table": r.table,
                "pipeline": pipeline.name, "replayed_at": at,
            })
            .to_string();
            text.push('\n');
        }
        let file = ledgers
            .get_mut(&path)
            .ok_or_else(|| Error::Internal(format!("ledger {} not locked", path.display())))?;
        file.write_all(text.as_bytes())
            .and_then(|_| file.sync_data())
            .map_err(|e| Error::io("write", &path, e))?;
        summary.rows += rows.len();
    }
    Ok(summary)
}

/// A file source as a replay needs it, listed once per request.
struct FolderSource {
    /// Its files, canonical.
    files: std::collections::BTreeSet<PathBuf>,
    root: PathBuf,
    format: &'static str,
    csv_header: bool,
    /// File → its first line (CSV header), read once.
    headers: BTreeMap<PathBuf, String>,
}

/// Checks one corrected row against the bin and finds where it goes.
fn resolve(
    pipeline: &crate::OpenedPipeline,
    cache: &mut BTreeMap<String, FolderSource>,
    bin: &BTreeMap<(String, String, u64), serde_json::Value>,
    index: usize,
    row: &serde_json::Value,
) -> std::result::Result<(Target, Row), ReplayError> {
    use flowline_core::RejectReason;
    let Some(raw) = row["raw"].as_str() else {
        return Err(invalid(index, "has no `raw` text (the corrected row)"));
    };
    let raw = raw.trim_end_matches(['\n', '\r']);
    if raw.trim().is_empty() {
        return Err(invalid(
            index,
            "its `raw` text is empty: send the corrected row (to drop a bad row, do not replay it)",
        ));
    }
    if raw.contains(['\n', '\r']) {
        return Err(invalid(
            index,
            "its `raw` text spans several lines: a corrected row is one record on one line",
        ));
    }
    let reason = row["reason"].as_str().unwrap_or_default();
    if reason == RejectReason::Late.as_str() {
        let window = row["window"]
            .as_array()
            .filter(|w| w.len() == 2)
            .map(|w| format!(" (--from {} --to {})", w[0], w[1]))
            .unwrap_or_default();
        return Err(invalid(
            index,
            format!("a late row is in its source already; rerun its window as corrections{window}"),
        ));
    }
    let source_reasons = SOURCE_REASONS.map(|r| r.as_str());
    if !reason.is_empty() && !source_reasons.contains(&reason) {
        return Err(invalid(
            index,
            format!(
                "reason {reason} is an operator's reject, which records no source position; \
                 only source rejects ({}) can be replayed",
                source_reasons.join(", ")
            ),
        ));
    }
    let id = (
        row["table"].as_str(),
        row["file"].as_str(),
        row["line"].as_u64(),
    );
    let (Some(table), Some(file), Some(line)) = id else {
        return Err(invalid(
            index,
            "names no source position: send the reject as read (its `table`, `file` and \
             `line`) with `raw` corrected",
        ));
    };
    let Some(original) = bin.get(&(table.to_string(), file.to_string(), line)) else {
        return Err(invalid(
            index,
            format!(
                "no reject of table {table} at {file} line {line} is in the bin `{}`",
                pipeline.rejects_path.display()
            ),
        ));
    };
    if !source_reasons.iter().any(|r| original["reason"] == *r) {
        return Err(invalid(
            index,
            format!("the reject is {}, not a source reject", original["reason"]),
        ));
    }
    let key = (canonical(Path::new(file)).display().to_string(), line);
    let row = Row {
        index,
        key,
        table: table.to_string(),
        raw: raw.to_string(),
    };
    if let Some(source) = pipeline.log_source(table) {
        let Some(partition) = source.partition_of(file) else {
            return Err(invalid(
                index,
                format!(
                    "`{file}` is not a partition of topic {}",
                    source.topic().name()
                ),
            ));
        };
        let target = Target::Log {
            source: source.clone(),
            partition,
        };
        return Ok((target, row));
    }
    let Some(def) = pipeline
        .def
        .table(table)
        .filter(|d| d.connector() == Some("files"))
    else {
        return Err(invalid(
            index,
            format!(
                "table {table} is not a log or files source of pipeline {}",
                pipeline.name
            ),
        ));
    };
    let file = PathBuf::from(&row.key.0);
    let source = match cache.entry(table.to_string()) {
        std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
        std::collections::btree_map::Entry::Vacant(e) => {
            let opened = flowline_connectors::FileSource::open(def, &pipeline.base_dir)?;
            e.insert(FolderSource {
                files: opened.files().iter().map(|f| canonical(&f.path)).collect(),
                root: canonical(
                    &pipeline
                        .base_dir
                        .join(def.option("path").unwrap_or_default()),
                ),
                format: opened.format_name(),
                csv_header: opened.csv_header(),
                headers: BTreeMap::new(),
            })
        }
    };
    if !source.files.contains(&file) {
        return Err(invalid(
            index,
            format!(
                "`{}` is no longer a file of source {table} (was it moved?)",
                file.display()
            ),
        ));
    }
    if source.root == file {
        return Err(invalid(
            index,
            format!(
                "source {table} reads the single file `{}`; corrected rows are added as new files \
                 beside the bad one, so correct that file itself or point `path` at its folder",
                file.display()
            ),
        ));
    }
    if source.format == "parquet" {
        return Err(invalid(
            index,
            format!("source {table} is Parquet; write a corrected Parquet file into its folder"),
        ));
    }
    let header = match source.headers.get(&file) {
        _ if !source.csv_header => None,
        Some(h) => Some(h.clone()),
        None => {
            let h = first_line(&file)?;
            source.headers.insert(file.clone(), h.clone());
            Some(h)
        }
    };
    let target = Target::Folder {
        table: table.to_string(),
        dir: file.parent().map(Path::to_path_buf).unwrap_or_default(),
        root: source.root.clone(),
        header,
        format: source.format,
    };
    Ok((target, row))
}

/// Corrected files written aside until every row decoded: each in a hidden folder of its source
/// (which listings skip) under the same partition folders as its final place, so decoding it
/// sees the partition values that place gives. Dropped without commit, they are removed.
#[derive(Default)]
struct Staged {
    /// Group number → (staging folder, staged file, final file).
    files: BTreeMap<usize, (PathBuf, PathBuf, PathBuf)>,
}

impl Staged {
    /// Writes `rows` for `target` and decodes them as the source would; returns the rejects.
    fn stage(
        &mut self,
        pipeline: &crate::OpenedPipeline,
        target: &Target,
        rows: &[Row],
        group: usize,
        tag: &str,
    ) -> Result<Vec<Reject>> {
        let Target::Folder {
            table,
            root,
            dir,
            header,
            format,
        } = target
        else {
            return Ok(vec![]);
        };
        let name = format!("corrected-{tag}.{format}");
        let folder = root.join(format!(".replay-{tag}"));
        let inner = folder.join(dir.strip_prefix(root).unwrap_or(Path::new("")));
        let staged = inner.join(&name);
        self.files
            .insert(group, (folder.clone(), staged.clone(), dir.join(&name)));
        let mut text = String::new();
        for line in header.iter().chain(rows.iter().map(|r| &r.raw)) {
            text.push_str(line);
            text.push('\n');
        }
        std::fs::create_dir_all(&inner)
            .and_then(|_| std::fs::write(&staged, text))
            .map_err(|e| Error::io("write", &staged, e))?;
        let mut def = pipeline
            .def
            .table(table)
            .cloned()
            .ok_or_else(|| Error::Internal(format!("no table {table}")))?;
        def.options
            .insert("path".into(), folder.display().to_string());
        let source = flowline_connectors::FileSource::open(&def, &pipeline.base_dir)?;
        let (mut bad, mut good) = (vec![], 0);
        source.read_file(0, 8192, &mut |d| {
            good += d.batch.num_rows();
            bad.extend(d.rejects);
            Ok(())
        })?;
        if good + bad.len() != rows.len() {
            return Err(Error::Internal(format!(
                "{} corrected rows of table {table} decoded as {} rows",
                rows.len(),
                good + bad.len()
            )));
        }
        Ok(bad)
    }

    /// Moves group `group`'s staged file to its place; returns the final path. The others stay
    /// staged (and are removed if never committed).
    fn commit(&mut self, group: usize) -> Result<PathBuf> {
        let (folder, staged, fin) = self
            .files
            .remove(&group)
            .ok_or_else(|| Error::Internal(format!("nothing staged for group {group}")))?;
        let moved = std::fs::rename(&staged, &fin).map_err(|e| Error::io("rename", &staged, e));
        let _ = std::fs::remove_dir_all(&folder);
        moved.map(|_| fin)
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        for (folder, _, _) in self.files.values() {
            let _ = std::fs::remove_dir_all(folder);
        }
    }
}

/// The first line of a file (a CSV header).
fn first_line(path: &Path) -> Result<String> {
    use std::io::BufRead;
    let f = File::open(path).map_err(|e| Error::io("read", path, e))?;
    let mut line = String::new();
    std::io::BufReader::new(f)
        .read_line(&mut line)
        .map_err(|e| Error::io("read", path, e))?;
    Ok(line.trim_end_matches(['\n', '\r']).to_string())
}
