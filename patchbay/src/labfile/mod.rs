//! TOML lab descriptions: routers, devices and a list of steps.
//!
//! The format is documented in `docs/toml.md`. Parsing and validation are
//! pure; [`run`] builds the lab and executes the steps.
//!
//! Inside: [`schema`](LabFile) and [`step`](Step) are the file's shape;
//! `validate` and `mobility_check` check it before anything is built;
//! `run` builds the lab and `exec` executes each step.

mod dns;
mod duration;
mod error;
mod exec;
mod mobility;
mod mobility_check;
mod programs;
mod run;
mod schema;
mod step;
mod subst;
mod validate;

pub use dns::{DnsSection, DnsServerSpec, NameSpec};
pub use error::{Entry, InvalidEntry, LabFileError};
pub use exec::StepOutcome;
pub use mobility::MobilityStep;
pub use run::{RunOverrides, RunReport, run};
pub use schema::{DeviceSpec, IfaceSpec, LabFile, LabSection, RegionSpec, RouterSpec, TimeMode};
pub use step::{Step, StepKind};
pub use subst::{SubstError, Vars, substitute};

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
