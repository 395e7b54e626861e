//! Upstream patchbay 0.7's API, on the patchbay core. Depend on it under upstream's name:
//!
//! ```toml
//! [dev-dependencies]
//! patchbay = { package = "patchbay-compat", path = "../patchbay/patchbay/compat" }
//! ```
//!
//! and `use patchbay::{Lab, Nat, ...}` works unchanged. Everything here is
//! `patchbay::compat` of the core crate, re-exported at the root; see its docs and
//! docs/porting.md for what differs from upstream.
#![deny(missing_docs)]

pub use patchbay_core::compat::*;
