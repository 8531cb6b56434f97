//! One error type for the library crates. Each variant says whose fault it is ([`Fault`]).

use std::path::PathBuf;

/// Who has to act to fix an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The pipeline text, its options or its input paths are wrong.
    User,
    /// Something outside Flowline failed (disk, permissions).
    External,
    /// A bug in Flowline.
    Internal,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// SQL that does not parse. `line` and `column` are 1-based positions in the pipeline file.
    #[error("SQL syntax error at line {line}, column {column}: {message}")]
    Syntax {
        message: String,
        line: u64,
        column: u64,
    },
    /// SQL that parses but does not make sense: unknown table or column, wrong types.
    #[error("{0}")]
    Plan(String),
    /// A construct Flowline cannot run in the requested mode.
    #[error("{construct} is not supported in {mode} mode: {hint}")]
    Unsupported {
        construct: String,
        mode: String,
        hint: String,
    },
    /// A bad `WITH (...)` option or `SET` value.
    #[error("{}: {message}", option_place(table, *line))]
    Option {
        table: String,
        message: String,
        /// Line of the `CREATE TABLE` or `SET` in the pipeline file, when known.
        line: Option<u64>,
    },
    /// A file or folder that cannot be read or written.
    #[error("cannot {action} `{}`: {cause}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        cause: std::io::Error,
    },
    /// A whole input that cannot be decoded at all (not a Parquet file, unreadable header).
    #[error("cannot read `{}`: {message}", path.display())]
    Input { path: PathBuf, message: String },
    /// An error raised by Arrow or DataFusion while running.
    #[error("execution error: {0}")]
    Execution(String),
    /// A broken invariant inside Flowline.
    #[error("internal error (please report): {0}")]
    Internal(String),
}

impl Error {
    /// An operator that cannot take back rows got a [`crate::Message::Retract`]: the planner
    /// lets retractions reach only filters, projections, retracting aggregates and sinks.
    pub fn cannot_retract(operator: &str) -> Error {
        Error::Internal(format!(
            "operator {operator} got a retraction, which it cannot take; the plan should have been refused"
        ))
    }

    pub fn fault(&self) -> Fault {
        match self {
            Error::Syntax { .. }
            | Error::Plan(_)
            | Error::Unsupported { .. }
            | Error::Option { .. }
            | Error::Input { .. } => Fault::User,
            Error::Io { .. } | Error::Execution(_) => Fault::External,
            Error::Internal(_) => Fault::Internal,
        }
    }

    pub fn io(action: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            action,
            path: path.into(),
            cause: source,
        }
    }

    pub fn option(table: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Option {
            table: table.into(),
            message: message.into(),
            line: None,
        }
    }
}

impl From<arrow::error::ArrowError> for Error {
    fn from(e: arrow::error::ArrowError) -> Self {
        Error::Execution(e.to_string())
    }
}

impl From<datafusion::error::DataFusionError> for Error {
    fn from(e: datafusion::error::DataFusionError) -> Self {
        use datafusion::error::DataFusionError as D;
        match e {
            D::SQL(e, _) => Error::Plan(e.to_string()),
            D::Plan(m) | D::NotImplemented(m) => Error::Plan(m),
            D::Diagnostic(_, inner) => Error::from(*inner),
            D::SchemaError(e, _) => Error::Plan(e.to_string()),
            D::Context(ctx, inner) => match Error::from(*inner) {
                Error::Plan(m) => Error::Plan(format!("{ctx}: {m}")),
                other => other,
            },
            other => Error::Execution(other.to_string()),
        }
    }
}

/// "table `t` (line 4)" or, for settings, "SET 'k' (line 2)".
fn option_place(table: &str, line: Option<u64>) -> String {
    let what = if table.starts_with("SET") {
        table.to_string()
    } else {
        format!("table `{table}`")
    };
    match line {
        Some(l) => format!("{what} (line {l})"),
        None => what,
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
