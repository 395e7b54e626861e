//! Free disk space for `cargo xtask test`: printed at the start and the end of a run, with a
//! warning naming the fix when a fresh run would not fit. A full disk otherwise surfaces
//! minutes later as an LLVM "IO failure on output stream" inside some crate's build.

use std::path::Path;
use std::process::Command;

/// What a run on a fresh machine writes at most, in GB: target/ (line tables only, no
/// incremental state, as in CI) plus the cache (the UML kernel and its download, the Debian
/// kernels of the matrix). Measured in docs/testing.md, "Disk".
pub const FRESH_RUN_GB: f64 = 7.0;

/// Bytes free on the file system holding `dir` (or its nearest existing ancestor), from
/// `df -Pk`; `None` when df cannot tell.
pub fn free_bytes(dir: &Path) -> Option<u64> {
    let existing = dir.ancestors().find(|d| d.exists())?;
    let out = Command::new("df").arg("-Pk").arg(existing).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let kib: u64 = text
        .lines()
        .nth(1)?
        .split_whitespace()
        .nth(3)?
        .parse()
        .ok()?;
    Some(kib * 1024)
}

/// Prints the free space where the build and the cache go, and warns when it is below
/// [`FRESH_RUN_GB`].
pub fn report(when: &str, target: &Path, cache: &Path) {
    let gb = |b: u64| b as f64 / 1e9;
    let (Some(t), Some(c)) = (free_bytes(target), free_bytes(cache)) else {
        println!("xtask: disk: df could not tell the free space ({when})");
        return;
    };
    println!(
        "xtask: disk ({when}): {:.1} GB free for {}, {:.1} GB for {}",
        gb(t),
        target.display(),
        gb(c),
        cache.display()
    );
    let least = t.min(c);
    if when == "start" && gb(least) < FRESH_RUN_GB {
        println!(
            "xtask: WARNING: a run on a fresh machine writes up to {FRESH_RUN_GB:.0} GB and only {:.1} GB are free; \
             if the build fails with \"No space left on device\", free space (`cargo clean`, old clones' target/) \
             or point CARGO_TARGET_DIR and PATCHBAY_CACHE_DIR at a larger disk",
            gb(least)
        );
    }
}
