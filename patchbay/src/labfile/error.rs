//! Errors of reading and validating lab files: the file, the entry (step,
//! router, device, …), the line where the entry starts, and a typed
//! [`InvalidLab`] saying which node, which field and why.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use serde::Deserialize;
use toml::Spanned;

use crate::InvalidLab;

/// Where in a lab file a problem sits.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Entry {
    /// The `[lab]` table.
    Lab,
    /// A `[region.NAME]` table.
    Region(String),
    /// The `n`-th `[[router]]` (1-based), named `name`.
    Router {
        /// 1-based position among the routers.
        n: usize,
        /// Its name.
        name: String,
    },
    /// The `n`-th `[[device]]` (1-based), named `name`.
    Device {
        /// 1-based position among the devices.
        n: usize,
        /// Its name.
        name: String,
    },
    /// The `[dns]` table.
    Dns,
    /// The `n`-th `[[step]]` (1-based).
    Step(usize),
}

/// An inconsistent lab file entry: where, and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
#[error("{}{error}", step_prefix(.at))]
pub struct InvalidEntry {
    /// The entry.
    pub at: Entry,
    /// Which node, which field, why.
    pub error: InvalidLab,
}

impl InvalidEntry {
    pub(super) fn new(at: Entry, error: InvalidLab) -> Self {
        InvalidEntry { at, error }
    }
}

/// Step messages name their step; the other entries' messages name their
/// node or table themselves.
fn step_prefix(at: &Entry) -> String {
    match at {
        Entry::Step(n) => format!("step {n}: "),
        _ => String::new(),
    }
}

/// Errors of reading or validating a lab file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LabFileError {
    /// The file could not be read.
    #[error("cannot read lab file {path}: {source}")]
    Read {
        /// The path.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// TOML syntax or schema error; the message carries line and column.
    #[error("{path}: {message}")]
    Parse {
        /// The path.
        path: PathBuf,
        /// The line of the error (1-based), when the parser knows it.
        line: Option<usize>,
        /// The parser's message with line, column and a snippet (the
        /// parser's error type is not part of patchbay's API).
        message: String,
    },
    /// The description is inconsistent.
    #[error("{path}{}: {invalid}", Line(*.line))]
    Invalid {
        /// The path.
        path: PathBuf,
        /// The line where the entry starts (1-based), when known.
        line: Option<usize>,
        /// The entry and what is wrong with it.
        invalid: InvalidEntry,
    },
}

struct Line(Option<usize>);

impl fmt::Display for Line {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(l) => write!(f, ":{l}"),
            None => Ok(()),
        }
    }
}

/// The spans of a file's entries (everything else is ignored).
#[derive(Deserialize)]
struct Spans {
    #[serde(default)]
    lab: Option<Spanned<toml::Table>>,
    #[serde(default)]
    region: BTreeMap<String, Spanned<toml::Table>>,
    #[serde(default)]
    router: Vec<Spanned<toml::Table>>,
    #[serde(default)]
    device: Vec<Spanned<toml::Table>>,
    #[serde(default)]
    dns: Option<Spanned<toml::Table>>,
    #[serde(default)]
    step: Vec<Spanned<toml::Table>>,
}

/// The line (1-based) of byte `offset` in `text`.
pub(super) fn line_at(text: &str, offset: usize) -> Option<usize> {
    Some(text.get(..offset)?.matches('\n').count() + 1)
}

/// The line (1-based) where `at` starts in `text`, when the text has it.
pub(super) fn line_of(text: &str, at: &Entry) -> Option<usize> {
    let s: Spans = toml::from_str(text).ok()?;
    let start = |t: &Spanned<toml::Table>| t.span().start;
    let nth = |v: &[Spanned<toml::Table>], n: usize| v.get(n.checked_sub(1)?).map(start);
    let start = match at {
        Entry::Lab => s.lab.as_ref().map(start),
        Entry::Region(name) => s.region.get(name).map(start),
        Entry::Router { n, .. } => nth(&s.router, *n),
        Entry::Device { n, .. } => nth(&s.device, *n),
        Entry::Dns => s.dns.as_ref().map(start),
        Entry::Step(n) => nth(&s.step, *n),
    }?;
    line_at(text, start)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;

    #[test]
    fn entries_have_lines() {
        let text = "[lab]\nlabel = \"x\"\n\n[[router]]\nname = \"a\"\n\n[[step]]\nsleep = \"1s\"\n[[step]]\nwait = \"b\"\n";
        let line = |at| line_of(text, &at);
        assert_eq!(line(Entry::Lab), Some(1));
        let r = Entry::Router {
            n: 1,
            name: "a".into(),
        };
        assert!(matches!(line(r), Some(4 | 5)));
        assert!(matches!(line(Entry::Step(2)), Some(9 | 10)));
        assert_eq!(line(Entry::Step(3)), None);
        assert_eq!(line(Entry::Dns), None);
    }
}
