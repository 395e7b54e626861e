//! Where the UML kernel is: `PATCHBAY_UML`, the workspace's `target/uml`, or the cache of
//! `cargo xtask build-uml`.

use std::path::{Path, PathBuf};

use super::{UML_ENV, VtError, kernel};

/// Finds the UML kernel: `PATCHBAY_UML`, else the most recently built `target/uml/*/linux` of
/// the workspace (found from `CARGO_TARGET_DIR`, the current executable's location, and the
/// build location) or of the cache `cargo xtask test` keeps (`$PATCHBAY_CACHE_DIR/uml`, default
/// `~/.cache/patchbay/uml`).
pub fn find_uml_binary() -> Result<PathBuf, VtError> {
    if let Some(p) = std::env::var_os(UML_ENV) {
        let p = PathBuf::from(p);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(VtError::BadUmlEnv { path: p })
        };
    }
    let mut dirs: Vec<PathBuf> = Vec::new();
    if let Some(t) = std::env::var_os("CARGO_TARGET_DIR") {
        dirs.push(PathBuf::from(t).join("uml"));
    }
    if let Ok(exe) = std::env::current_exe() {
        for a in exe.ancestors().skip(1) {
            if a.file_name().is_some_and(|n| n == "target") {
                dirs.push(a.join("uml"));
            }
            dirs.push(a.join("target").join("uml"));
        }
    }
    dirs.push(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join("target")
            .join("uml"),
    );
    // Where `cargo xtask test` caches the kernel across clones.
    let cache = std::env::var_os("PATCHBAY_CACHE_DIR")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/patchbay")));
    if let Some(c) = cache {
        dirs.push(c.join("uml"));
    }
    // The highest kernel version anywhere (the default kernel of `cargo xtask build-uml` is
    // the newest series), then the most recent build: an older one left in target/uml (an
    // earlier config) must not shadow a newer cached one.
    if let Some((_, _, found)) = dirs.iter().filter_map(|d| newest_linux_in(d)).max() {
        return Ok(found);
    }
    let mut seen = std::collections::BTreeSet::new();
    dirs.retain(|d| seen.insert(d.clone()));
    let searched = dirs
        .iter()
        .map(|d| format!("{}/*/linux", d.display()))
        .collect::<Vec<_>>();
    Err(VtError::UmlNotFound {
        searched: searched.join(", "),
    })
}

/// The `DIR/<version>-<hash>/linux` of the highest kernel version, then the most recently
/// built, with both keys (ties broken by path, for determinism); xtask's `build-*` work
/// directories do not count.
fn newest_linux_in(dir: &Path) -> Option<((u32, u32, u32), std::time::SystemTime, PathBuf)> {
    // A missing or unreadable directory simply holds no kernel.
    let entries = std::fs::read_dir(dir).ok()?;
    entries
        .flatten()
        .filter(|e| !e.file_name().to_string_lossy().starts_with("build-"))
        .map(|e| {
            (
                kernel::entry_version(&e.file_name().to_string_lossy()),
                e.path().join("linux"),
            )
        })
        .filter_map(|(v, p)| {
            Some((
                v,
                std::fs::metadata(&p)
                    .ok()
                    .filter(|m| m.is_file())?
                    .modified()
                    .ok()?,
                p,
            ))
        })
        .max()
}
