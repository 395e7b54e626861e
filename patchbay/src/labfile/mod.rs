//! TOML lab descriptions: routers, devices and a list of steps.
//!
//! The format is documented in `docs/toml.md`. Parsing and validation are
//! pure; [`run`] builds the lab and executes the steps.

mod dns;
mod duration;
mod programs;
mod run;
mod schema;
mod steps_mobility;
mod subst;
mod validate;

// The loader is the API: read and check a file (`LabFile`), run it (`run`),
// read the report. The schema's sections are the file format (docs/toml.md),
// not Rust API; they stay crate-private so the format can grow.
pub use run::{RunOverrides, RunReport, StepOutcome, run};
pub use schema::LabFile;

internal! {
    pub use dns::{DnsSection, DnsServerSpec, NameSpec};
}
internal! {
    pub use schema::{
        DeviceSpec, IfaceSpec, LabSection, RegionSpec, RouterSpec, Step, StepKind, TimeMode,
    };
}
internal! {
    pub use steps_mobility::MobilityStep;
}
internal! {
    pub use subst::{Vars, substitute};
}

use std::path::{Path, PathBuf};

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
        /// The parser's message with line, column and a snippet.
        message: String,
    },
    /// The description is inconsistent.
    #[error("{path}: {message}")]
    Invalid {
        /// The path.
        path: PathBuf,
        /// What is wrong and how to fix it.
        message: String,
    },
}

impl LabFile {
    /// Parses and validates a lab description. `path` is used in messages.
    pub fn parse(text: &str, path: &Path) -> Result<LabFile, LabFileError> {
        let file: LabFile = toml::from_str(text).map_err(|e| LabFileError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        file.validate().map_err(|message| LabFileError::Invalid {
            path: path.to_path_buf(),
            message,
        })?;
        Ok(file)
    }

    /// Reads, parses and validates a lab file.
    pub fn load(path: &Path) -> Result<LabFile, LabFileError> {
        let text = std::fs::read_to_string(path).map_err(|source| LabFileError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, path)
    }
}
