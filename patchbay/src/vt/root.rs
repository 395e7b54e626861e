//! What the command may write in the guest: the host tree through an overlay whose writes stay
//! in guest memory (the default), or read-only; and what the guest init reports about it.

use std::path::{Path, PathBuf};

use super::{VtError, io};

/// The guest's view of the host tree, which it mounts over hostfs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum GuestRoot {
    /// The host tree, writable through an overlay (overlayfs) whose upper layer is a tmpfs in
    /// guest memory: the command may write anywhere (its target directory, the package dir,
    /// `$HOME`); the writes vanish at power-off and never reach the host, whose tree stays
    /// read-only underneath ([`super::VtOpts::keep_writes`] copies them out). Needs
    /// `CONFIG_OVERLAY_FS` and `CONFIG_TMPFS_XATTR` in the guest kernel (`cargo xtask
    /// build-uml` turns them on); with an older kernel the run falls back to
    /// [`GuestRoot::ReadOnly`] and says so in [`super::VtOutcome::warnings`].
    #[default]
    Overlay,
    /// The host tree read-only: a write fails with `EROFS`. For checking that a program does
    /// not write, or for kernels without overlayfs.
    ReadOnly,
}

/// A console mark of the guest init: the overlay could not be mounted.
const MARK_NO_OVERLAY: &str = "no-overlay";
/// A console mark of the guest init: the kernel has no user namespaces.
const MARK_NO_USERNS: &str = "no-userns";
/// The result file in which the guest init reports a failed copy of the writes.
pub(crate) const KEEP_ERROR: &str = "keep_error";

/// Creates `dir` (a [`super::VtOpts::keep_writes`] directory) and returns its canonical path,
/// which the guest mounts writable at the same path.
pub(crate) fn prepare_keep_dir(dir: &Path) -> Result<PathBuf, VtError> {
    std::fs::create_dir_all(dir)
        .map_err(io("creating the directory for the guest's writes", dir))?;
    dir.canonicalize()
        .map_err(io("resolving the directory for the guest's writes", dir))
}

/// The warnings a run's console marks call for. `failed`: the command exited non-zero (a
/// missing user namespace matters only then).
pub(crate) fn warnings(marks: &[(String, std::time::Duration)], failed: bool) -> Vec<String> {
    let has = |name: &str| marks.iter().any(|(m, _)| m == name);
    let mut out = Vec::new();
    if has(MARK_NO_OVERLAY) {
        out.push(
            "this UML kernel has no overlayfs (CONFIG_OVERLAY_FS): the host tree was read-only \
             in the guest; rebuild the kernel with `cargo xtask build-uml`"
                .to_string(),
        );
    }
    if failed && has(MARK_NO_USERNS) {
        out.push(
            "this UML kernel has no user namespaces (CONFIG_USER_NS): a program that calls \
             unshare(CLONE_NEWUSER), such as a test written for upstream patchbay \
             (`init_userns`), fails in it; rebuild the kernel with `cargo xtask build-uml`"
                .to_string(),
        );
    }
    out
}

/// The error for a failed copy of the command's writes to `dir`, if the guest reported one.
pub(crate) fn keep_error(text: Option<Vec<u8>>, dir: &Path) -> Option<VtError> {
    let text = text?;
    Some(VtError::GuestSetup {
        step: format!(
            "copying the command's writes to {}: {}",
            dir.display(),
            String::from_utf8_lossy(&text).trim()
        ),
        console_tail: String::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn marks_become_warnings_when_they_matter() {
        let marks = |names: &[&str]| -> Vec<(String, Duration)> {
            names
                .iter()
                .map(|n| (n.to_string(), Duration::ZERO))
                .collect()
        };
        assert!(warnings(&marks(&["init", "fstab"]), true).is_empty());
        let w = warnings(&marks(&["no-overlay"]), false);
        assert_eq!(w.len(), 1);
        assert!(w[0].contains("cargo xtask build-uml"), "{w:?}");
        // No user namespaces: only worth saying when the command failed.
        assert!(warnings(&marks(&["no-userns"]), false).is_empty());
        assert!(warnings(&marks(&["no-userns"]), true)[0].contains("CONFIG_USER_NS"));
    }

    #[test]
    fn a_reported_copy_failure_names_the_directory() {
        assert!(keep_error(None, Path::new("/k")).is_none());
        let e = keep_error(Some(b"cp: no space\n".to_vec()), Path::new("/k")).expect("error");
        let text = e.to_string();
        assert!(text.contains("/k") && text.contains("no space"), "{text}");
    }
}
