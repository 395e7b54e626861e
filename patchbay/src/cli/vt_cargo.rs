//! `cargo metadata`, answered from the host: a test binary run by cargo or nextest (which set
//! `CARGO`) that calls `cargo metadata --format-version 1` (the `testdir` crate does, to find
//! the target dir, in every test process) gets the answer the host's cargo gave for the same
//! directory, environment and manifests. In the guest the same call costs 3.5-4.5 s of wall
//! time (cargo's 30 000 page faults, each a trap into the UML kernel), on the host well under
//! one, and once per state of the project thanks to a cache.
//!
//! How: the guest's `CARGO` points to a small shell script (`cargo-shim` in the cache) that
//! prints the cached answer for exactly that call in exactly that directory and hands every
//! other call to the real cargo (`PATCHBAY_VT_CARGO`). `patchbay vt --no-cargo-shim` turns it
//! off.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use anyhow::{Context, bail};

/// The shim the guest's `CARGO` points to.
const SHIM: &str = r#"#!/bin/sh
# Written by `patchbay vt` (patchbay/src/cli/vt_cargo.rs): `cargo metadata --format-version 1`
# in the directory the runner asked the host's cargo about is answered from the host's
# answer; every other call goes to the real cargo.
if [ "$#" = 3 ] && [ "$1" = metadata ] && [ "$2" = --format-version ] && [ "$3" = 1 ] &&
    [ "$(pwd -P)" = "$PATCHBAY_VT_CARGO_METADATA_DIR" ] && [ -f "$PATCHBAY_VT_CARGO_METADATA" ]; then
    exec cat "$PATCHBAY_VT_CARGO_METADATA"
fi
exec "$PATCHBAY_VT_CARGO" "$@"
"#;

/// Environment variables that change what `cargo metadata` prints.
const KEY_ENV: &[&str] = &[
    "CARGO_TARGET_DIR",
    "CARGO_BUILD_TARGET_DIR",
    "CARGO_HOME",
    "RUSTUP_TOOLCHAIN",
    "CARGO_NET_OFFLINE",
];

/// The variables to add to the guest's environment, or `None` when the command is no test
/// binary of a cargo project (no `CARGO` in `env`, no `Cargo.toml` at or above `cwd`).
pub fn shim_env(
    env: &[(String, String)],
    cwd: &Path,
    cache: &Path,
) -> anyhow::Result<Option<Vec<(String, String)>>> {
    let vars: BTreeMap<&str, &str> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let Some(cargo) = vars.get("CARGO").map(PathBuf::from) else {
        return Ok(None);
    };
    if !cargo.is_file() || !cwd.ancestors().any(|d| d.join("Cargo.toml").is_file()) {
        return Ok(None);
    }
    let cwd = cwd
        .canonicalize()
        .with_context(|| format!("resolving {}", cwd.display()))?;
    let key = cache_key(&cargo, &cwd, &vars);
    std::fs::create_dir_all(cache).with_context(|| format!("creating {}", cache.display()))?;
    let json = cache.join(format!("metadata-{key:016x}.json"));
    if !json.is_file() {
        write_metadata(&cargo, &cwd, env, &json)?;
    }
    let shim = cache.join("cargo-shim");
    if std::fs::read_to_string(&shim).ok().as_deref() != Some(SHIM) {
        write_atomically(&shim, SHIM.as_bytes(), 0o755)?;
    }
    let s = |p: &Path| p.display().to_string();
    Ok(Some(vec![
        ("CARGO".into(), s(&shim)),
        ("PATCHBAY_VT_CARGO".into(), s(&cargo)),
        ("PATCHBAY_VT_CARGO_METADATA".into(), s(&json)),
        ("PATCHBAY_VT_CARGO_METADATA_DIR".into(), s(&cwd)),
    ]))
}

/// A hash of everything `cargo metadata` in `cwd` depends on: the cargo binary, the directory,
/// [`KEY_ENV`], and every manifest, lock file and cargo config at or above `cwd` and in
/// `CARGO_HOME` (path, size and modification time).
fn cache_key(cargo: &Path, cwd: &Path, vars: &BTreeMap<&str, &str>) -> u64 {
    let mut text = format!("{}\0{}\0", stamp(cargo), cwd.display());
    for k in KEY_ENV {
        text.push_str(&format!("{k}={}\0", vars.get(k).unwrap_or(&"")));
    }
    let home = vars.get("CARGO_HOME").map(PathBuf::from);
    for dir in cwd.ancestors() {
        for f in [
            "Cargo.toml",
            "Cargo.lock",
            ".cargo/config.toml",
            ".cargo/config",
        ] {
            text.push_str(&stamp(&dir.join(f)));
        }
    }
    if let Some(h) = home {
        text.push_str(&stamp(&h.join("config.toml")));
        text.push_str(&stamp(&h.join("config")));
    }
    fnv1a(text.as_bytes())
}

/// `path size mtime-ns` of an existing file, else nothing.
fn stamp(path: &Path) -> String {
    let Ok(m) = std::fs::metadata(path) else {
        return String::new();
    };
    let mtime = m
        .modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos());
    format!("{} {} {mtime}\0", path.display(), m.len())
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Runs the host's `cargo metadata --format-version 1` in `cwd` with the command's
/// environment and stores its answer in `json`.
fn write_metadata(
    cargo: &Path,
    cwd: &Path,
    env: &[(String, String)],
    json: &Path,
) -> anyhow::Result<()> {
    let out = std::process::Command::new(cargo)
        .args(["metadata", "--format-version", "1"])
        .current_dir(cwd)
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(std::process::Stdio::null())
        .output()
        .with_context(|| format!("running {} metadata", cargo.display()))?;
    if !out.status.success() {
        bail!(
            "`cargo metadata` in {} failed ({}): {}",
            cwd.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    write_atomically(json, &out.stdout, 0o644)
}

/// Writes through a temporary file and a rename, so that a parallel runner never reads half.
fn write_atomically(path: &Path, bytes: &[u8], mode: u32) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_outside_cargo_get_no_shim() {
        let dir = std::env::temp_dir();
        assert!(
            shim_env(&[], &dir, &dir.join("c"))
                .expect("no error")
                .is_none()
        );
        let env = vec![("CARGO".to_string(), "/nonexistent/cargo".to_string())];
        assert!(
            shim_env(&env, &dir, &dir.join("c"))
                .expect("no error")
                .is_none()
        );
    }

    #[test]
    fn the_key_follows_the_manifests_and_the_environment() {
        let dir = std::env::temp_dir().join(format!("pb-vt-cargo-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("mkdir");
        let cargo = Path::new("/bin/sh");
        let vars: BTreeMap<&str, &str> = [("CARGO_TARGET_DIR", "/t")].into();
        let a = cache_key(cargo, &dir, &vars);
        assert_eq!(a, cache_key(cargo, &dir, &vars));
        std::fs::write(dir.join("Cargo.toml"), "[package]").expect("write");
        let b = cache_key(cargo, &dir, &vars);
        std::fs::remove_dir_all(&dir).expect("cleanup");
        assert_ne!(a, b, "a new manifest is a new key");
        let other: BTreeMap<&str, &str> = [("CARGO_TARGET_DIR", "/u")].into();
        assert_ne!(
            cache_key(cargo, Path::new("/"), &vars),
            cache_key(cargo, Path::new("/"), &other)
        );
    }

    #[test]
    fn the_shim_is_valid_sh() {
        let out = std::process::Command::new("sh")
            .args(["-n", "-c", SHIM])
            .output()
            .expect("sh");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
