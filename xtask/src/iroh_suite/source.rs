//! iroh's source for the suite: fetched from the crate registry through cargo, copied into a
//! scratch workspace per mode, and (for `--against ours`) its one dev-dependency rewritten.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail, ensure};

use super::Against;

/// The iroh release whose patchbay tests the suite runs.
pub const IROH_VERSION: &str = "1.4.1";
/// The section of iroh's (normalized, published) Cargo.toml that names upstream patchbay.
pub const PATCHBAY_SECTION: &str =
    "[target.'cfg(target_os = \"linux\")'.dev-dependencies.patchbay]";
/// This project's drop-in for upstream patchbay 0.7, relative to the repository root.
pub const COMPAT_DIR: &str = "patchbay/compat";
/// The drop-in's package name.
pub const COMPAT_PACKAGE: &str = "patchbay-compat";

/// Writes a throwaway manifest depending on `iroh = "=VERSION"` into `<dir>/fetch`, has cargo
/// fetch it, and returns the directory of iroh's unpacked source in cargo's registry cache.
pub fn fetch_iroh(dir: &Path) -> Result<PathBuf> {
    let fetch = dir.join("fetch");
    fs::create_dir_all(&fetch).with_context(|| format!("creating {}", fetch.display()))?;
    let manifest = fetch.join("Cargo.toml");
    fs::write(&manifest, fetch_manifest())?;
    fs::write(fetch.join("lib.rs"), "")?;
    eprintln!("iroh-suite: cargo fetch iroh {IROH_VERSION} (crate registry)");
    let cargo = |sub: &[&str]| {
        let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
        c.args(sub)
            .arg("--quiet")
            .arg("--manifest-path")
            .arg(&manifest);
        c
    };
    let status = cargo(&["fetch"]).status().context("running cargo fetch")?;
    ensure!(
        status.success(),
        "cargo fetch of iroh {IROH_VERSION} failed ({status}); it needs the crate registry \
         (crates.io) or a cargo registry cache that holds iroh {IROH_VERSION}"
    );
    let out = cargo(&["metadata", "--format-version", "1", "--offline"])
        .output()
        .context("running cargo metadata")?;
    ensure!(
        out.status.success(),
        "cargo metadata of {} failed: {}",
        manifest.display(),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    iroh_dir_from_metadata(&meta)
}

fn fetch_manifest() -> String {
    format!(
        "# Written by `cargo xtask iroh-suite` to have cargo fetch iroh's source.\n\
         [package]\nname = \"iroh-suite-fetch\"\nversion = \"0.0.0\"\nedition = \"2021\"\n\
         publish = false\n\n[lib]\npath = \"lib.rs\"\n\n[dependencies]\n\
         iroh = \"={IROH_VERSION}\"\n\n[workspace]\n"
    )
}

/// The directory of iroh's `Cargo.toml` in `cargo metadata` output.
fn iroh_dir_from_metadata(meta: &serde_json::Value) -> Result<PathBuf> {
    let packages = meta["packages"]
        .as_array()
        .context("cargo metadata has no packages")?;
    let manifest = packages
        .iter()
        .find(|p| p["name"] == "iroh" && p["version"] == IROH_VERSION)
        .and_then(|p| p["manifest_path"].as_str())
        .with_context(|| format!("cargo metadata does not list iroh {IROH_VERSION}"))?;
    Ok(Path::new(manifest)
        .parent()
        .context("iroh's manifest path has no parent")?
        .to_path_buf())
}

/// Copies iroh's source into `<work>/iroh-VERSION` (once; a copy that is complete is kept, so
/// that cargo's fingerprints stay valid) and writes its Cargo.toml for `against`: upstream's
/// unchanged, ours with the patchbay dev-dependency pointing at `compat`. Returns the copy.
pub fn prepare(src: &Path, work: &Path, against: Against, compat: &Path) -> Result<PathBuf> {
    let dst = work.join(format!("iroh-{IROH_VERSION}"));
    let stamp = dst.join(".iroh-suite-copied");
    if !stamp.is_file() {
        if dst.exists() {
            fs::remove_dir_all(&dst)
                .with_context(|| format!("removing the incomplete copy {}", dst.display()))?;
        }
        eprintln!("iroh-suite: copying {} to {}", src.display(), dst.display());
        copy_tree(src, &dst)?;
        fs::write(&stamp, src.display().to_string())?;
    }
    let pristine = fs::read_to_string(src.join("Cargo.toml"))
        .with_context(|| format!("reading {}", src.join("Cargo.toml").display()))?;
    let manifest = match against {
        Against::Upstream => pristine,
        Against::Ours => rewrite_manifest(&pristine, compat)?,
    };
    write_if_changed(&dst.join("Cargo.toml"), &manifest)?;
    if against == Against::Upstream {
        // cargo runs with --locked: the lock must be iroh's own.
        let lock = fs::read(src.join("Cargo.lock"))?;
        if fs::read(dst.join("Cargo.lock")).ok().as_deref() != Some(&lock[..]) {
            fs::write(dst.join("Cargo.lock"), lock)?;
        }
    }
    Ok(dst)
}

/// Writes `text` unless the file already holds it (an unchanged mtime keeps cargo's cache).
fn write_if_changed(path: &Path, text: &str) -> Result<()> {
    if fs::read_to_string(path).ok().as_deref() != Some(text) {
        fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

fn copy_tree(src: &Path, dst: &Path) -> Result<()> {
    fs::create_dir_all(dst).with_context(|| format!("creating {}", dst.display()))?;
    for entry in fs::read_dir(src).with_context(|| format!("listing {}", src.display()))? {
        let entry = entry?;
        let (from, to) = (entry.path(), dst.join(entry.file_name()));
        let kind = entry.file_type()?;
        if kind.is_dir() {
            copy_tree(&from, &to)?;
        } else if kind.is_file() {
            fs::copy(&from, &to)
                .with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
        } else {
            bail!("{} is neither a file nor a directory", from.display());
        }
    }
    Ok(())
}

/// iroh's Cargo.toml with exactly one change: the body of [`PATCHBAY_SECTION`] (upstream
/// patchbay 0.7 from the registry) replaced by this project's drop-in at `compat`, under the
/// name `patchbay`, with the `iroh-metrics` feature. Everything else stays byte for byte.
pub fn rewrite_manifest(manifest: &str, compat: &Path) -> Result<String> {
    let starts: Vec<usize> = manifest
        .match_indices(PATCHBAY_SECTION)
        .map(|(i, _)| i)
        .filter(|&i| i == 0 || manifest.as_bytes()[i - 1] == b'\n')
        .collect();
    let [start] = starts[..] else {
        bail!(
            "iroh's Cargo.toml has {} `{PATCHBAY_SECTION}` sections, expected one: iroh {} \
             changed how it depends on patchbay",
            starts.len(),
            IROH_VERSION
        );
    };
    let body = start + PATCHBAY_SECTION.len();
    let end = manifest[body..]
        .find("\n[")
        .map_or(manifest.len(), |i| body + i + 1);
    let path = compat
        .to_str()
        .with_context(|| format!("{} is not UTF-8", compat.display()))?;
    let section = format!(
        "{PATCHBAY_SECTION}\npackage = \"{COMPAT_PACKAGE}\"\npath = {}\n\
         features = [\"iroh-metrics\"]\n\n",
        toml_string(path)
    );
    Ok(format!(
        "{}{section}{}",
        &manifest[..start],
        &manifest[end..]
    ))
}

/// A TOML basic string.
fn toml_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const IROH_TOML: &str = "[package]\nname = \"iroh\"\n\n\
        [target.'cfg(target_os = \"linux\")'.dev-dependencies.ctor]\nversion = \"1.0\"\n\n\
        [target.'cfg(target_os = \"linux\")'.dev-dependencies.patchbay]\nversion = \"0.7\"\n\
        features = [\"iroh-metrics\"]\n\n\
        [target.'cfg(target_os = \"linux\")'.dev-dependencies.testdir]\nversion = \"0.10\"\n";

    #[test]
    fn only_the_patchbay_dependency_changes() {
        let out = rewrite_manifest(IROH_TOML, Path::new("/repo/patchbay/compat")).expect("ok");
        let want = IROH_TOML.replace(
            "dev-dependencies.patchbay]\nversion = \"0.7\"\n",
            "dev-dependencies.patchbay]\npackage = \"patchbay-compat\"\n\
             path = \"/repo/patchbay/compat\"\n",
        );
        assert_eq!(out, want);
    }

    #[test]
    fn the_last_section_and_odd_paths_are_rewritten_too() {
        let toml = "[a]\nx = 1\n\n[target.'cfg(target_os = \"linux\")'.dev-dependencies.patchbay]\n\
                    version = \"0.7\"\n";
        let out = rewrite_manifest(toml, Path::new("/a \"b\"\\c")).expect("ok");
        assert!(out.starts_with("[a]\nx = 1\n\n"), "{out}");
        assert!(out.contains("path = \"/a \\\"b\\\"\\\\c\"\n"), "{out}");
        assert!(!out.contains("0.7"), "{out}");
    }

    #[test]
    fn a_missing_or_doubled_section_is_an_error() {
        let e = rewrite_manifest("[package]\n", Path::new("/c")).expect_err("missing");
        assert!(e.to_string().contains("0 `[target"), "{e}");
        let twice = format!("{IROH_TOML}\n{PATCHBAY_SECTION}\nversion = \"0.7\"\n");
        let e = rewrite_manifest(&twice, Path::new("/c")).expect_err("twice");
        assert!(e.to_string().contains("2 `[target"), "{e}");
    }

    #[test]
    fn metadata_names_the_source_dir() {
        let meta = serde_json::json!({"packages": [
            {"name": "iroh", "version": "1.4.0", "manifest_path": "/r/iroh-1.4.0/Cargo.toml"},
            {"name": "iroh", "version": IROH_VERSION,
             "manifest_path": format!("/r/iroh-{IROH_VERSION}/Cargo.toml")},
        ]});
        assert_eq!(
            iroh_dir_from_metadata(&meta).expect("found"),
            PathBuf::from(format!("/r/iroh-{IROH_VERSION}"))
        );
        assert!(iroh_dir_from_metadata(&serde_json::json!({"packages": []})).is_err());
    }
}
