//! `nnc::Error`: everything that can go wrong in a call of the library, with where.
//!
//! Each variant carries what the command line prints for it, and the parts a program
//! needs to act on it: a compile error its diagnostics (and the sources to render them
//! against), a data error its file and, when known, line and column, a checkpoint error
//! its file and the tensor or metadata key. `Display` is the one-line message the
//! command line prints after `error: ` (a compile error renders its diagnostics
//! instead); the command line maps the variants to its exit codes (1 a user error, 2
//! usage, 130 interrupted).

use crate::diagnostic::{Diagnostic, RenderOptions, SourceMap};
use std::path::PathBuf;

/// The error of every call of the library.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The model does not compile: every diagnostic, with the sources they point into.
    #[error("{}", .0.plain())]
    Compile(Box<CompileErrors>),
    /// A data file (or data source) that cannot be read as the model needs it.
    #[error("{message}")]
    Data {
        /// The file (or the source, as written in the train block).
        file: PathBuf,
        /// The 1-based line of the file, when the error is at one.
        line: Option<usize>,
        /// The 1-based column (the field of a csv row), when the error is at one.
        column: Option<usize>,
        /// The whole message, place included (`data.csv:12:3: empty value; ...`).
        message: String,
    },
    /// A checkpoint (or parameter file) that cannot be read or does not fit the model.
    #[error("{message}")]
    Checkpoint {
        /// The checkpoint file.
        file: PathBuf,
        /// The tensor or metadata key at fault, when one is.
        key: Option<String>,
        /// The whole message, file included.
        message: String,
    },
    /// Reading or writing a file failed.
    #[error("`{}`: {source}", path.display())]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },
    /// A call that cannot be accepted as given: an unknown setting or model argument, a
    /// value out of range, a model name the file does not have.
    #[error("{0}")]
    Usage(String),
    /// The operation was stopped (Ctrl-C, or a stop flag set by the caller) before it had
    /// a result. A training run that is stopped is not an error: its report says so.
    #[error("interrupted")]
    Interrupted,
    /// Any other failure of a run: a loss that became NaN, a limit of the machine, a
    /// shape the data does not have.
    #[error("{0}")]
    Run(String),
}

/// The result of every call of the library.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The diagnostics of a failed compilation and the sources they point into.
#[derive(Clone)]
pub struct CompileErrors {
    /// The texts spans point into (the model's files and the prelude).
    pub sources: SourceMap,
    /// Every error found, in source order.
    pub diagnostics: Vec<Diagnostic>,
}

/// The rendered diagnostics (not the sources they point into: the prelude alone is
/// many lines), so that `fn main() -> nnc::Result<()>` prints something readable.
impl std::fmt::Debug for CompileErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "\n{}", self.plain())
    }
}

impl CompileErrors {
    /// The diagnostics as the command line prints them (`file.nn:line:col`, the source
    /// line, an underline, the help), with colour when asked.
    pub fn render(&self, opts: RenderOptions) -> String {
        crate::diagnostic::render(&self.diagnostics, &self.sources, opts)
    }

    /// The diagnostics without colour, one after the other.
    fn plain(&self) -> String {
        self.render(RenderOptions { color: false }).trim_end().to_string()
    }
}

impl Error {
    /// A data error at `line` (and `column`) of `file`; the message is the whole text.
    pub(crate) fn data_at(file: impl Into<PathBuf>, line: usize, column: Option<usize>, message: String) -> Error {
        Error::Data { file: file.into(), line: Some(line), column, message }
    }

    /// A data error about a whole file (or a train block's data source).
    pub(crate) fn data(file: impl Into<PathBuf>, message: impl Into<String>) -> Error {
        Error::Data { file: file.into(), line: None, column: None, message: message.into() }
    }

    /// A checkpoint error, about `key` when given.
    pub(crate) fn checkpoint(file: impl Into<PathBuf>, key: Option<&str>, message: impl Into<String>) -> Error {
        Error::Checkpoint { file: file.into(), key: key.map(str::to_string), message: message.into() }
    }

    /// The exit code of the command line for this error: 2 for usage, 130 for an
    /// interruption, 1 otherwise.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Usage(_) => 2,
            Error::Interrupted => 130,
            _ => 1,
        }
    }
}

/// A message from the parts of the crate that still report errors as text.
impl From<String> for Error {
    fn from(message: String) -> Error {
        Error::Run(message)
    }
}

impl From<&str> for Error {
    fn from(message: &str) -> Error {
        Error::Run(message.to_string())
    }
}

/// For the parts of the crate that still report errors as text: the message as printed.
impl From<Error> for String {
    fn from(e: Error) -> String {
        e.to_string()
    }
}
