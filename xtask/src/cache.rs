//! The cache outside the clone that xtask steps share (UML kernels, Debian kernels).

use std::path::PathBuf;

/// Where the UML kernel is cached across clones (a build takes 7-15 min on
/// two cores): `$PATCHBAY_CACHE_DIR/uml`, default `~/.cache/patchbay/uml`.
pub fn cache_dir(what: &str) -> PathBuf {
    let base = std::env::var_os("PATCHBAY_CACHE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            std::env::var_os("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
                .unwrap_or_else(|| PathBuf::from("/var/cache"))
                .join("patchbay")
        });
    base.join(what)
}
