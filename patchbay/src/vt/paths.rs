//! Which host paths the guest needs to see, and why a path was not visible.
//!
//! The guest mounts fresh tmpfs over `/tmp`, `/run` and `/var/tmp`, so a lab file, a command
//! or a working directory there would be hidden. For every such path the command line names
//! (the command, the working directory and every argument that is an existing host path), the
//! top entry under the tmpfs (`/tmp/ci` for `/tmp/ci/repo/lab.toml`, or the file `/tmp/lab.toml`
//! itself) is exposed read-only at the same path: the guest init mounts the host's top
//! directory over hostfs at a hidden place (`/run/.patchbay-host/<top>`) and bind-mounts each
//! needed entry from there. Everything else in the guest's `/tmp` stays a private, writable
//! tmpfs. Pure functions apart from `stat`; no kernel needed.

use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// The host directories the guest covers with a fresh tmpfs.
pub(crate) const TMPFS_TOPS: [&str; 3] = ["/tmp", "/run", "/var/tmp"];

/// Where the guest mounts a host tmpfs top (read-only) to bind entries from.
pub(crate) const HIDDEN: &str = "/run/.patchbay-host";

/// One host entry under a tmpfs top that the guest must see.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Exposed {
    /// `/tmp`, `/run` or `/var/tmp`.
    pub top: &'static str,
    /// The entry directly under `top` (e.g. `/tmp/ci`).
    pub entry: PathBuf,
    /// What the entry is on the host.
    pub kind: EntryKind,
}

/// The host file type of an exposed entry.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum EntryKind {
    /// A directory: bind-mounted on a new guest directory.
    Dir,
    /// A regular file (or anything else that is not a directory): bind-mounted on an empty file.
    File,
    /// A symbolic link: recreated in the guest with the same target.
    Symlink(PathBuf),
}

/// The entries under the guest's tmpfs mounts that the command line needs, sorted.
pub(crate) fn exposed(argv: &[OsString], cwd: &Path) -> Vec<Exposed> {
    let mut cands: Vec<PathBuf> = vec![cwd.to_path_buf()];
    for (i, a) in argv.iter().enumerate() {
        let bytes = a.as_bytes();
        // `--file=/tmp/x` names a path after the `=`.
        let value = match bytes.iter().position(|&b| b == b'=') {
            Some(at) if bytes.starts_with(b"-") => &bytes[at + 1..],
            _ => bytes,
        };
        if value.is_empty() || (i == 0 && !value.contains(&b'/')) {
            continue;
        }
        cands.push(cwd.join(std::ffi::OsStr::from_bytes(value)));
    }
    let mut out: Vec<Exposed> = Vec::new();
    for c in cands {
        if std::fs::symlink_metadata(&c).is_err() {
            continue;
        }
        let canonical = c.canonicalize().ok();
        for p in std::iter::once(c.clone()).chain(canonical) {
            if let Some(e) = entry_of(&p)
                && !out.contains(&e)
            {
                out.push(e);
            }
        }
    }
    out.sort();
    out
}

/// The exposed entry holding `path`, if `path` lies under a tmpfs top and exists on the host.
fn entry_of(path: &Path) -> Option<Exposed> {
    let (top, rest) = TMPFS_TOPS
        .iter()
        .find_map(|t| path.strip_prefix(t).ok().map(|r| (*t, r)))?;
    let first = rest.components().next()?;
    let entry = Path::new(top).join(first);
    let meta = std::fs::symlink_metadata(&entry).ok()?;
    let kind = if meta.file_type().is_symlink() {
        EntryKind::Symlink(std::fs::read_link(&entry).ok()?)
    } else if meta.is_dir() {
        EntryKind::Dir
    } else {
        EntryKind::File
    };
    Some(Exposed { top, entry, kind })
}

/// Why `path` (a command or working directory) could not be used in the guest, judged on the
/// host: missing, not accessible to the user running UML, or hidden (and by what).
pub(crate) fn why_not_visible(path: &Path, need_exec: bool) -> String {
    use nix::unistd::{AccessFlags, access, geteuid};
    let Ok(meta) = std::fs::metadata(path) else {
        return "it does not exist on the host either".into();
    };
    let flags = if need_exec {
        AccessFlags::X_OK
    } else {
        AccessFlags::R_OK | AccessFlags::X_OK
    };
    if let Err(e) = access(path, flags) {
        return format!(
            "the host user running the guest (uid {}) cannot {} it: {e}; make it and its parent \
             directories readable and executable for that user",
            geteuid(),
            if meta.is_dir() { "enter" } else { "execute" }
        );
    }
    if let Some(top) = TMPFS_TOPS.iter().find(|t| path.starts_with(t)) {
        return format!(
            "it exists on the host under {top}, which the guest covers with a fresh tmpfs, and \
             it could not be exposed from there"
        );
    }
    "it exists on the host, but the guest could not use it (see the console for errors)".into()
}

/// Where a command without a `/` is on the host `PATH` but not on the guest's, if so.
pub(crate) fn host_only_command(name: &str, guest_path: &str) -> Option<PathBuf> {
    let host = std::env::var_os("PATH")?;
    let found = std::env::split_paths(&host)
        .map(|d| d.join(name))
        .find(|p| p.is_file())?;
    let in_guest = std::env::split_paths(guest_path).any(|d| found.starts_with(d));
    (!in_guest).then_some(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let d = Path::new("/tmp").join(format!("patchbay-paths-{name}-{}", std::process::id()));
        std::fs::create_dir_all(d.join("sub")).expect("mkdir");
        d
    }

    #[test]
    fn files_dirs_and_relative_arguments_under_tmp_are_exposed() {
        let d = scratch("a");
        let file = Path::new("/tmp").join(format!("patchbay-paths-f-{}.toml", std::process::id()));
        std::fs::write(&file, "x").expect("write");
        let argv: Vec<OsString> = vec![
            "/usr/bin/env".into(),
            file.clone().into(),
            "sub".into(),
            "--out=/nonexistent".into(),
        ];
        let got = exposed(&argv, &d);
        std::fs::remove_file(&file).expect("cleanup");
        std::fs::remove_dir_all(&d).expect("cleanup");
        assert_eq!(
            got,
            vec![
                Exposed {
                    top: "/tmp",
                    entry: d.clone(),
                    kind: EntryKind::Dir
                },
                Exposed {
                    top: "/tmp",
                    entry: file,
                    kind: EntryKind::File
                },
            ]
        );
    }

    #[test]
    fn paths_outside_the_tmpfs_tops_and_missing_ones_are_not_exposed() {
        let argv: Vec<OsString> = vec!["sh".into(), "/usr/bin".into(), "/tmp/nope-xyz".into()];
        assert!(exposed(&argv, Path::new("/")).is_empty());
        assert!(why_not_visible(Path::new("/tmp/nope-xyz"), true).contains("does not exist"));
    }
}
