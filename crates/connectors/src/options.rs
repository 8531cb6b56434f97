//! Helpers to validate `WITH (...)` options. Every error names the option and lists the valid
//! choices.

use flowline_core::{Error, Result, TableDef};

/// The file formats shared by file sources and file sinks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FileFormat {
    Csv,
    Json,
    Parquet,
}

impl FileFormat {
    pub(crate) fn extension(self) -> &'static str {
        match self {
            FileFormat::Csv => "csv",
            FileFormat::Json => "json",
            FileFormat::Parquet => "parquet",
        }
    }
}

/// Quotes and joins names for messages: `'a', 'b'`.
pub(crate) fn quoted_list(items: &[&str]) -> String {
    items
        .iter()
        .map(|s| format!("'{s}'"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Rejects any option not in `allowed`.
pub(crate) fn check_known(def: &TableDef, allowed: &[&str]) -> Result<()> {
    for key in def.options.keys() {
        if !allowed.contains(&key.as_str()) {
            return Err(Error::option(
                &def.name,
                format!(
                    "unknown option `{key}` (valid options: {})",
                    quoted_list(allowed)
                ),
            ));
        }
    }
    Ok(())
}

/// Rejects the `csv.*` options when the format is not CSV.
pub(crate) fn check_no_csv_options(def: &TableDef, format: &str) -> Result<()> {
    if let Some(key) = def.options.keys().find(|k| k.starts_with("csv.")) {
        return Err(Error::option(
            &def.name,
            format!("option `{key}` only applies to format 'csv', not '{format}'"),
        ));
    }
    Ok(())
}

/// The value of a required option.
pub(crate) fn required<'a>(def: &'a TableDef, key: &str) -> Result<&'a str> {
    def.option(key)
        .ok_or_else(|| Error::option(&def.name, format!("missing required option `{key}`")))
}

/// Checks that `connector` is one of `valid` and returns it.
pub(crate) fn connector<'a>(def: &'a TableDef, valid: &[&str]) -> Result<&'a str> {
    match def.connector() {
        Some(c) if valid.contains(&c) => Ok(c),
        Some(c) => Err(Error::option(
            &def.name,
            format!(
                "unknown connector '{c}' in option `connector` (valid connectors: {})",
                quoted_list(valid)
            ),
        )),
        None => Err(Error::option(
            &def.name,
            format!(
                "missing required option `connector` (valid connectors: {})",
                quoted_list(valid)
            ),
        )),
    }
}

/// Parses the `format` option of a file table.
pub(crate) fn file_format(def: &TableDef) -> Result<FileFormat> {
    const VALID: &[&str] = &["csv", "json", "parquet"];
    let value = def.option("format").ok_or_else(|| {
        Error::option(
            &def.name,
            format!(
                "missing required option `format` (valid formats: {})",
                quoted_list(VALID)
            ),
        )
    })?;
    match value.to_ascii_lowercase().as_str() {
        "csv" => Ok(FileFormat::Csv),
        "json" | "jsonl" | "ndjson" => Ok(FileFormat::Json),
        "parquet" => Ok(FileFormat::Parquet),
        _ => Err(Error::option(
            &def.name,
            format!(
                "unknown format '{value}' in option `format` (valid formats: {})",
                quoted_list(VALID)
            ),
        )),
    }
}

/// Parses a boolean option (`true` / `false`, case-insensitive).
pub(crate) fn bool_option(def: &TableDef, key: &str, default: bool) -> Result<bool> {
    match def.option(key) {
        None => Ok(default),
        Some(v) if v.eq_ignore_ascii_case("true") => Ok(true),
        Some(v) if v.eq_ignore_ascii_case("false") => Ok(false),
        Some(v) => Err(Error::option(
            &def.name,
            format!("invalid value '{v}' for option `{key}` (valid values: 'true', 'false')"),
        )),
    }
}

/// Parses a one-character option (an ASCII character; `\t` is accepted for a tab).
pub(crate) fn char_option(def: &TableDef, key: &str, default: u8) -> Result<u8> {
    let Some(v) = def.option(key) else {
        return Ok(default);
    };
    let byte = match v {
        "\\t" => Some(b'\t'),
        _ if v.len() == 1 && v.is_ascii() => Some(v.as_bytes()[0]),
        _ => None,
    };
    match byte {
        Some(b) if b != b'\n' && b != b'\r' => Ok(b),
        _ => Err(Error::option(
            &def.name,
            format!(
                "invalid value '{v}' for option `{key}`: expected a single ASCII character \
                 other than a line break"
            ),
        )),
    }
}

/// The log folder a `connector = 'log'` table uses: its `log.dir` option (relative to the
/// pipeline's folder), else `default` (the runtime passes `SET 'log.dir'`, else
/// `$FLOWLINE_LOG_DIR`, else `.flowline/log` in the current directory, as `flowline log` does).
pub fn log_dir(
    def: &TableDef,
    base_dir: &std::path::Path,
    default: &std::path::Path,
) -> std::path::PathBuf {
    match def.option("log.dir") {
        Some(dir) if std::path::Path::new(dir).is_absolute() => std::path::PathBuf::from(dir),
        Some(dir) => base_dir.join(dir),
        None => default.to_path_buf(),
    }
}

/// The `timestamp-format` option, checked to be a valid chrono strftime pattern.
pub(crate) fn timestamp_format(def: &TableDef) -> Result<Option<&str>> {
    use chrono::format::{Item, StrftimeItems};
    let Some(f) = def.option("timestamp-format") else {
        return Ok(None);
    };
    if f.is_empty() || StrftimeItems::new(f).any(|i| matches!(i, Item::Error)) {
        return Err(Error::option(
            &def.name,
            format!(
                "invalid value '{f}' for option `timestamp-format`: expected a chrono strftime \
                 pattern such as '%Y-%m-%d %H:%M:%S'"
            ),
        ));
    }
    Ok(Some(f))
}

/// The column names listed in option `key` (separated by any of `separators`, described as
/// `expected` in errors), each once; with declared columns, each must be one of them.
pub(crate) fn column_list(
    def: &TableDef,
    key: &str,
    separators: &[char],
    expected: &str,
) -> Result<Vec<String>> {
    let mut names: Vec<String> = Vec::new();
    let Some(list) = def.option(key) else {
        return Ok(names);
    };
    for name in list.split(separators).map(str::trim) {
        if name.is_empty() {
            return Err(Error::option(
                &def.name,
                format!("invalid value '{list}' for option `{key}`: expected {expected}"),
            ));
        }
        if names.iter().any(|n| n.eq_ignore_ascii_case(name)) {
            return Err(Error::option(
                &def.name,
                format!("option `{key}` names column `{name}` twice"),
            ));
        }
        names.push(name.to_string());
    }
    if !def.columns.is_empty() {
        let declared: Vec<&str> = def.columns.iter().map(|c| c.name.as_str()).collect();
        column_positions(def, key, &names, &declared)?;
    }
    Ok(names)
}

/// The positions among `columns` of the columns named by option `key` (exact name first, then
/// ignoring case); an error names the first one that is not there.
pub(crate) fn column_positions(
    def: &TableDef,
    key: &str,
    wanted: &[String],
    columns: &[&str],
) -> Result<Vec<usize>> {
    wanted
        .iter()
        .map(|w| {
            columns
                .iter()
                .position(|c| c == w)
                .or_else(|| columns.iter().position(|c| c.eq_ignore_ascii_case(w)))
                .ok_or_else(|| {
                    Error::option(
                        &def.name,
                        format!(
                            "option `{key}` names column `{w}`, which is not a column of the \
                             table (columns: {})",
                            columns.join(", ")
                        ),
                    )
                })
        })
        .collect()
}
