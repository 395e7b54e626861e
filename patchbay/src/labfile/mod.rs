//! TOML lab descriptions: routers, devices and a list of steps.
//!
//! The format is documented in `docs/toml.md`. Parsing and validation are
//! pure; `run` (the command line's `patchbay run`) builds the lab and executes the steps.
//!
//! Inside: [`schema`](LabFile) and [`step`](Step) are the file's shape;
//! `validate` and `mobility_check` check it before anything is built;
//! `run` builds the lab and `exec` executes each step.

mod dns;
mod duration;
mod error;
mod mobility_check;
mod schema;
mod step;
mod validate;
// The runner, which only the command line (and, with `internals`, the tests) calls.
#[cfg_attr(not(feature = "cli"), allow(dead_code))]
mod exec;
#[cfg_attr(not(feature = "cli"), allow(dead_code))]
mod mobility;
#[cfg_attr(not(feature = "cli"), allow(dead_code))]
mod programs;
#[cfg_attr(not(feature = "cli"), allow(dead_code))]
mod run;
#[cfg_attr(not(feature = "cli"), allow(dead_code))]
mod subst;

// The loader is the API: read and check a file (`LabFile`).
// The schema's sections are the file format (docs/toml.md), not Rust API; they stay
// crate-private so the format can grow.
pub use error::{Entry, InvalidEntry, LabFileError};
// Running a lab file is the command line's (`patchbay run`); the library loads and checks one.
internal! {
    pub use exec::StepOutcome;
}
internal! {
    pub use run::{RunOverrides, RunReport, run};
}
pub use schema::LabFile;

internal! {
    pub use dns::{DnsSection, DnsServerSpec, NameSpec};
}
internal! {
    pub use schema::{DeviceSpec, IfaceSpec, LabSection, RegionSpec, RouterSpec, TimeMode};
}
internal! {
    pub use step::{Step, StepKind};
}
internal! {
    pub use mobility::MobilityStep;
}
internal! {
    pub use subst::{SubstError, Vars, substitute};
}

use std::path::Path;

impl LabFile {
    /// Parses and validates a lab description. `path` is used in messages.
    pub fn parse(text: &str, path: &Path) -> Result<LabFile, LabFileError> {
        // The parser's error type stays out of the API: its rendered text
        // (line, column, snippet) and the line are kept.
        let file: LabFile =
            toml::from_str(text).map_err(|e: toml::de::Error| LabFileError::Parse {
                path: path.to_path_buf(),
                line: e.span().and_then(|s| error::line_at(text, s.start)),
                message: e.to_string(),
            })?;
        file.validate().map_err(|invalid| LabFileError::Invalid {
            path: path.to_path_buf(),
            line: error::line_of(text, &invalid.at),
            invalid,
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
