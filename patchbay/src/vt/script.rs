//! Generation of the guest init script: a per-run header plus the committed `init.sh` body.
//! Pure functions; no kernel needed.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use super::paths::{EntryKind, Exposed, HIDDEN};
use super::{GuestRoot, VtError};

/// The PATH the command gets unless the caller sets one.
pub(crate) const DEFAULT_PATH: &str =
    "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The file name, in the run dir, of the unprivileged runner's copy of the host's `mount`.
///
/// In the runner's user namespace, host files owned by root appear owned by the overflow uid
/// (65534), and hostfs passes their mode through: a setuid-root `mount` would run in the guest
/// with euid 65534 and refuse to mount anything. The copy has no setuid bit; the guest init
/// mounts `/proc` with it and then remounts the root `nosuid`, so every later exec (the host's
/// own `mount` included) runs as the guest's root.
pub(crate) const OWN_MOUNT: &str = "mount";

/// The committed body of the guest init.
const INIT_BODY: &str = include_str!("init.sh");
/// The guest's mount table, written next to the init script.
pub(crate) const FSTAB: &str = include_str!("fstab");

/// Escapes a path for an fstab field (`\\040` for a space, as getmntent(3) reads it).
fn fstab_escape(path: &Path) -> String {
    let mut out = String::new();
    for &b in path.as_os_str().as_bytes() {
        match b {
            b' ' | b'\t' | b'\n' | b'\\' | b'#' => out.push_str(&format!("\\{b:03o}")),
            _ => out.push(char::from(b)),
        }
    }
    out
}

/// The guest's mount table for one run: [`FSTAB`] plus, when no exposed entry covers it (those
/// are bound after `mount -a`), the writable results dir over hostfs. Returns the table and
/// whether the results dir is in it (else the init mounts it after the exposed entries).
pub(crate) fn fstab(results: &Path, expose: &[Exposed]) -> (String, bool) {
    let covered =
        results.starts_with(HIDDEN) || expose.iter().any(|e| results.starts_with(&e.entry));
    let mut table = FSTAB.to_string();
    // Non-UTF-8 paths are refused by `command_env` before this is written.
    if covered || results.to_str().is_none() {
        return (table, false);
    }
    let r = fstab_escape(results);
    table.push_str(&format!(
        "# The run's writable results dir (the host directory of the same path).\n\
         hostfs {r} hostfs {r},X-mount.mkdir 0 0\n"
    ));
    (table, true)
}

/// Quotes bytes for a POSIX shell: `'...'` with each `'` written as `'\''`.
pub(crate) fn shell_quote(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len() + 2);
    out.push(b'\'');
    for &b in bytes {
        if b == b'\'' {
            out.extend_from_slice(b"'\\''");
        } else {
            out.push(b);
        }
    }
    out.push(b'\'');
    out
}

/// Environment variables by name.
type Env = BTreeMap<String, String>;

/// The command's default `GLIBC_TUNABLES`: one malloc arena. glibc gives each thread of a
/// multi-threaded program its own arena (up to 8 per CPU), and a thread arena's heap grows a
/// page at a time, one `mprotect` each: 1 863 per iroh test, every one a trap in the guest.
/// With a single guest CPU, more arenas buy no parallelism; the main arena grows by `brk` with
/// padding. Measured: iroh's tests 8 % faster per test (docs/performance.md). A caller's own
/// `GLIBC_TUNABLES`, even empty, replaces it.
pub(crate) const DEFAULT_GLIBC_TUNABLES: &str = "glibc.malloc.arena_max=1";

/// The command's environment: defaults, then the caller's variables (which win), sorted.
pub(crate) fn command_env(results: &Path, user: &[(String, String)]) -> Result<Env, VtError> {
    let mut env = BTreeMap::new();
    env.insert("PATH".to_string(), DEFAULT_PATH.to_string());
    env.insert(
        "GLIBC_TUNABLES".to_string(),
        DEFAULT_GLIBC_TUNABLES.to_string(),
    );
    env.insert("HOME".to_string(), "/root".to_string());
    env.insert("PATCHBAY_VT".to_string(), "1".to_string());
    let results = results.to_str().ok_or_else(|| {
        VtError::InvalidArgument(format!("results dir {} is not UTF-8", results.display()))
    })?;
    env.insert("PATCHBAY_VT_RESULTS".to_string(), results.to_string());
    for (k, v) in user {
        if k.is_empty() || k.contains('=') || k.contains('\0') || v.contains('\0') {
            return Err(VtError::InvalidArgument(format!(
                "environment variable {k:?} must be non-empty and contain neither '=' nor NUL"
            )));
        }
        env.insert(k.clone(), v.clone());
    }
    Ok(env)
}

/// Everything one run's init script is rendered from.
#[derive(Debug)]
pub(crate) struct Init<'a> {
    /// The command line.
    pub argv: &'a [OsString],
    /// The command's environment ([`command_env`]).
    pub env: &'a BTreeMap<String, String>,
    /// The working directory in the guest.
    pub cwd: &'a Path,
    /// The guest path of the writable results dir.
    pub results: &'a Path,
    /// `env` on the host (run as `env -i`, so the command sees exactly `env`).
    pub env_binary: &'a Path,
    /// The guest path of the mount table ([`FSTAB`] plus the results dir), read before the
    /// tmpfs over `/tmp` hides it.
    pub fstab: &'a Path,
    /// Host entries under the tmpfs tops the command line needs.
    pub expose: &'a [Exposed],
    /// Virtual uptime before the command, in seconds (`sleep` syntax).
    pub uptime: &'a str,
    /// The runner's open-file limits (soft, hard).
    pub nofile: (u64, u64),
    /// For an unprivileged runner, the guest path of a copy of the host's `mount` without its
    /// setuid bit (see [`OWN_MOUNT`]).
    pub own_mount: Option<&'a Path>,
    /// Whether the results dir is in the mount table (else mounted after the exposed entries).
    pub results_in_fstab: bool,
    /// The guest's root: the host tree through a writable overlay, or read-only.
    pub root: GuestRoot,
    /// Host directory receiving the command's writes to the host tree (see
    /// [`super::VtOpts::keep_writes`]), at the same path in the guest.
    pub keep: Option<&'a Path>,
}

/// Checks a host path the guest mounts over hostfs at the same path (`-o PATH`): absolute,
/// without `,` (the option separator) or a newline.
pub(crate) fn check_hostfs_path(what: &str, path: &Path) -> Result<(), VtError> {
    let bytes = path.as_os_str().as_bytes();
    if !path.is_absolute() || bytes.contains(&b',') || bytes.contains(&b'\n') {
        return Err(VtError::InvalidArgument(format!(
            "{what} {} must be absolute and contain no ',' or newline (hostfs mount option)",
            path.display()
        )));
    }
    Ok(())
}

/// Renders the complete init script for one run.
pub(crate) fn render(init: &Init<'_>) -> Result<Vec<u8>, VtError> {
    let Init {
        argv,
        env,
        cwd,
        results,
        env_binary,
        fstab,
        expose,
        uptime,
        nofile,
        own_mount,
        results_in_fstab,
        root,
        keep,
    } = *init;
    let Some(argv0) = argv.first() else {
        return Err(VtError::InvalidArgument("the command line is empty".into()));
    };
    if argv0.is_empty() || argv0.as_bytes().contains(&b'=') {
        return Err(VtError::InvalidArgument(format!(
            "command {argv0:?} must be non-empty and must not contain '='"
        )));
    }
    if argv.iter().any(|a| a.as_bytes().contains(&0)) {
        return Err(VtError::InvalidArgument(
            "an argument contains a NUL byte".into(),
        ));
    }
    check_hostfs_path("results dir", results)?;
    if let Some(k) = keep {
        check_hostfs_path("the directory for the guest's writes", k)?;
    }
    let results_bytes = results.as_os_str().as_bytes();
    let path = env.get("PATH").map_or(DEFAULT_PATH, String::as_str);
    let mut s = Vec::new();
    s.extend_from_slice(b"#!/bin/sh\n# Generated by patchbay::vt for one run.\nVT_FSTAB=");
    s.extend(shell_quote(fstab.as_os_str().as_bytes()));
    s.extend_from_slice(b"\nVT_RESULTS=");
    s.extend(shell_quote(results_bytes));
    s.extend_from_slice(b"\nVT_CWD=");
    s.extend(shell_quote(cwd.as_os_str().as_bytes()));
    s.extend_from_slice(b"\nVT_PATH=");
    s.extend(shell_quote(path.as_bytes()));
    s.extend_from_slice(b"\nVT_ARGV0=");
    s.extend(shell_quote(argv0.as_bytes()));
    s.extend_from_slice(b"\nVT_UPTIME=");
    s.extend_from_slice(uptime.as_bytes());
    s.extend_from_slice(
        format!("\nVT_NOFILE_SOFT={}\nVT_NOFILE_HARD={}", nofile.0, nofile.1).as_bytes(),
    );
    // Without a private copy, the first mounts use the host's `mount` from PATH; with one, the
    // init remounts the root nosuid before anything else runs.
    s.extend_from_slice(b"\nVT_MOUNT=");
    match own_mount {
        Some(m) => {
            s.extend(shell_quote(m.as_os_str().as_bytes()));
            s.extend_from_slice(b"\nVT_NOSUID=1");
        }
        None => s.extend_from_slice(b"mount\nVT_NOSUID=0"),
    }
    s.extend_from_slice(if results_in_fstab {
        b"\nVT_RESULTS_IN_FSTAB=1"
    } else {
        b"\nVT_RESULTS_IN_FSTAB=0"
    });
    s.extend_from_slice(match root {
        GuestRoot::Overlay => b"\nVT_ROOT=overlay\nVT_KEEP=",
        GuestRoot::ReadOnly => b"\nVT_ROOT=ro\nVT_KEEP=",
    });
    s.extend(shell_quote(
        keep.map_or(&[][..], |k| k.as_os_str().as_bytes()),
    ));
    s.push(b'\n');
    s.extend(render_expose(expose));
    s.extend_from_slice(b"\nvt_run() {\n    ");
    s.extend(shell_quote(env_binary.as_os_str().as_bytes()));
    s.extend_from_slice(b" -i");
    for (k, v) in env {
        s.extend_from_slice(b" \\\n        ");
        s.extend(shell_quote(format!("{k}={v}").as_bytes()));
    }
    for a in argv {
        s.extend_from_slice(b" \\\n        ");
        s.extend(shell_quote(a.as_bytes()));
    }
    s.extend_from_slice(b"\n}\n\n");
    s.extend_from_slice(INIT_BODY.as_bytes());
    Ok(s)
}

/// The guest function `vt_expose`: mounts each needed host tmpfs top read-only under
/// [`HIDDEN`] and recreates each exposed entry at its own path (bind mount or symlink).
fn render_expose(expose: &[Exposed]) -> Vec<u8> {
    let mut s = b"vt_expose() {\n".to_vec();
    let mut tops: Vec<&str> = expose.iter().map(|e| e.top).collect();
    tops.dedup();
    if !tops.is_empty() {
        // Over the overlay, a second view of the root without its submounts shows the host's
        // entries under the tmpfs tops, writable like the rest (the writes stay in the guest).
        s.extend_from_slice(
            format!(
                "    if [ \"$VT_ROOT\" = overlay ]; then\n        mkdir -p {HIDDEN} && mount -n \
                 --bind / {HIDDEN} || vt_die \"bind the overlay root to {HIDDEN}\"\n    else\n"
            )
            .as_bytes(),
        );
    }
    for top in &tops {
        let hidden = shell_quote(format!("{HIDDEN}{top}").as_bytes());
        s.extend_from_slice(b"        mkdir -p ");
        s.extend(hidden.iter().copied());
        s.extend_from_slice(format!(" && mount -n -r -t hostfs -o {top} hostfs ").as_bytes());
        s.extend(hidden.iter().copied());
        s.extend_from_slice(
            format!(" || vt_die \"mount the host's {top} read-only\"\n").as_bytes(),
        );
    }
    if !tops.is_empty() {
        s.extend_from_slice(b"    fi\n");
    }
    for e in expose {
        let entry = e.entry.as_os_str().as_bytes();
        let q = shell_quote(entry);
        let rel = e.entry.strip_prefix(e.top).unwrap_or(&e.entry);
        let src = shell_quote(
            &[
                format!("{HIDDEN}{}/", e.top).as_bytes(),
                rel.as_os_str().as_bytes(),
            ]
            .concat(),
        );
        s.extend_from_slice(b"    ");
        match &e.kind {
            EntryKind::Dir => {
                s.extend_from_slice(b"mkdir -p ");
                s.extend(q.iter().copied());
                s.extend_from_slice(b" && mount -n --bind ");
            }
            EntryKind::File => {
                s.extend_from_slice(b": > ");
                s.extend(q.iter().copied());
                s.extend_from_slice(b" && mount -n --bind ");
            }
            EntryKind::Symlink(target) => {
                s.extend_from_slice(b"ln -s ");
                s.extend(shell_quote(target.as_os_str().as_bytes()));
                s.push(b' ');
                s.extend(q.iter().copied());
                s.extend_from_slice(b" || vt_die \"expose ");
                s.extend_from_slice(
                    &entry
                        .iter()
                        .copied()
                        .filter(|&b| b != b'"' && b != b'\n')
                        .collect::<Vec<_>>(),
                );
                s.extend_from_slice(b"\"\n");
                continue;
            }
        }
        s.extend(src);
        s.push(b' ');
        s.extend(q.iter().copied());
        s.extend_from_slice(b" || vt_die \"expose ");
        s.extend_from_slice(
            &entry
                .iter()
                .copied()
                .filter(|&b| b != b'"' && b != b'\n' && b != b'$' && b != b'`')
                .collect::<Vec<_>>(),
        );
        s.extend_from_slice(b"\"\n");
    }
    s.extend_from_slice(b"    true\n}\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    #[test]
    fn quoting_survives_single_quotes() {
        assert_eq!(shell_quote(b"a'b"), b"'a'\\''b'".to_vec());
        assert_eq!(shell_quote(b""), b"''".to_vec());
    }

    #[test]
    fn user_env_overrides_defaults_and_is_validated() {
        let r = PathBuf::from("/tmp/r");
        let env = command_env(
            &r,
            &[("PATH".into(), "/bin".into()), ("A".into(), "x y".into())],
        )
        .expect("valid env");
        assert_eq!(env["PATH"], "/bin");
        assert_eq!(env["PATCHBAY_VT_RESULTS"], "/tmp/r");
        assert_eq!(env["GLIBC_TUNABLES"], DEFAULT_GLIBC_TUNABLES);
        let own = command_env(&r, &[("GLIBC_TUNABLES".into(), String::new())]).expect("valid");
        assert_eq!(
            own["GLIBC_TUNABLES"], "",
            "the caller's value, even empty, wins"
        );
        assert!(command_env(&r, &[("A=B".into(), String::new())]).is_err());
    }

    /// [`render`] with the arguments the tests do not vary.
    fn render_min(
        argv: &[OsString],
        env: &BTreeMap<String, String>,
        results: &Path,
        expose: &[Exposed],
        own: Option<&Path>,
    ) -> Result<Vec<u8>, VtError> {
        render(&Init {
            argv,
            env,
            cwd: Path::new("/"),
            results,
            env_binary: Path::new("/usr/bin/env"),
            fstab: Path::new("/f"),
            expose,
            uptime: "0",
            nofile: (1024, 4096),
            own_mount: own,
            results_in_fstab: false,
            root: GuestRoot::Overlay,
            keep: None,
        })
    }

    #[test]
    fn an_own_mount_copy_is_used_and_the_root_remounted_nosuid() {
        let r = PathBuf::from("/tmp/r");
        let env = command_env(&r, &[]).expect("env");
        let argv: Vec<OsString> = vec!["true".into()];
        let render_with = |own: Option<&Path>| {
            let s = render_min(&argv, &env, &r, &[], own).expect("render");
            String::from_utf8(s).expect("utf8")
        };
        let root = render_with(None);
        assert!(root.contains("\nVT_MOUNT=mount\nVT_NOSUID=0\n"), "{root}");
        let own = render_with(Some(Path::new("/tmp/patchbay-vt.65534/mount")));
        assert!(
            own.contains("\nVT_MOUNT='/tmp/patchbay-vt.65534/mount'\nVT_NOSUID=1\n"),
            "{own}"
        );
        assert!(own.contains("remount,bind,ro,nosuid"), "{own}");
    }

    #[test]
    fn the_results_dir_joins_the_fstab_unless_an_exposed_entry_covers_it() {
        let (t, inside) = fstab(Path::new("/tmp/patchbay-vt.0/my results"), &[]);
        assert!(inside);
        assert!(
            t.ends_with(
                "hostfs /tmp/patchbay-vt.0/my\\040results hostfs \
                 /tmp/patchbay-vt.0/my\\040results,X-mount.mkdir 0 0\n"
            ),
            "{t}"
        );
        // The /tmp tmpfs comes first, so the mount point is made in it.
        assert!(
            t.find("tmpfs    /tmp ").expect("tmp line") < t.find("hostfs /tmp").expect("results")
        );
        let ci = Exposed {
            top: "/tmp",
            entry: PathBuf::from("/tmp/ci"),
            kind: EntryKind::Dir,
        };
        let (t, inside) = fstab(Path::new("/tmp/ci/results"), &[ci]);
        assert!(!inside);
        assert_eq!(t, FSTAB);
    }

    #[test]
    fn render_quotes_argv_and_rejects_bad_input() {
        let r = PathBuf::from("/tmp/r");
        let env = command_env(&r, &[]).expect("env");
        let argv: Vec<OsString> = vec!["sh".into(), "-c".into(), "echo 'hi'; exit 7".into()];
        let s = render_min(&argv, &env, &r, &[], None).expect("render");
        let s = String::from_utf8(s).expect("utf8");
        assert!(s.starts_with("#!/bin/sh\n"));
        assert!(s.contains("'echo '\\''hi'\\''; exit 7'"), "{s}");
        assert!(s.contains("VT_ARGV0='sh'"));
        assert!(s.contains("vt_off()"));
        assert!(render_min(&[], &env, &r, &[], None).is_err());
        let bad = PathBuf::from("/tmp/a,b");
        assert!(render_min(&argv, &env, &bad, &[], None).is_err());
    }

    #[test]
    fn the_root_mode_and_the_keep_dir_reach_the_script() {
        let r = PathBuf::from("/tmp/r");
        let env = command_env(&r, &[]).expect("env");
        let argv: Vec<OsString> = vec!["true".into()];
        let keep = PathBuf::from("/root/it's kept");
        let mut init = Init {
            argv: &argv,
            env: &env,
            cwd: Path::new("/"),
            results: &r,
            env_binary: Path::new("/usr/bin/env"),
            fstab: Path::new("/f"),
            expose: &[],
            uptime: "0",
            nofile: (1024, 4096),
            own_mount: None,
            results_in_fstab: true,
            root: GuestRoot::Overlay,
            keep: Some(&keep),
        };
        let s = String::from_utf8(render(&init).expect("render")).expect("utf8");
        assert!(
            s.contains("\nVT_ROOT=overlay\nVT_KEEP='/root/it'\\''s kept'\n"),
            "{s}"
        );
        assert!(
            s.contains("vt_run 9<&-"),
            "the command must not inherit the upper layer"
        );
        init.root = GuestRoot::ReadOnly;
        init.keep = None;
        let s = String::from_utf8(render(&init).expect("render")).expect("utf8");
        assert!(s.contains("\nVT_ROOT=ro\nVT_KEEP=''\n"), "{s}");
        let bad = PathBuf::from("/a,b");
        init.keep = Some(&bad);
        assert!(render(&init).is_err());
    }

    #[test]
    fn exposed_entries_are_bound_from_the_hidden_host_mount() {
        let e = [
            Exposed {
                top: "/tmp",
                entry: PathBuf::from("/tmp/ci"),
                kind: EntryKind::Dir,
            },
            Exposed {
                top: "/tmp",
                entry: PathBuf::from("/tmp/lab.toml"),
                kind: EntryKind::File,
            },
        ];
        let s = String::from_utf8(render_expose(&e)).expect("utf8");
        assert_eq!(s.matches("-t hostfs -o /tmp hostfs").count(), 1, "{s}");
        // Over the overlay, one bind of the root serves every top.
        assert!(
            s.contains("mount -n --bind / /run/.patchbay-host || vt_die"),
            "{s}"
        );
        assert!(
            s.contains("mount -n --bind '/run/.patchbay-host/tmp/ci' '/tmp/ci'"),
            "{s}"
        );
        assert!(
            s.contains(": > '/tmp/lab.toml' && mount -n --bind '/run/.patchbay-host/tmp/lab.toml'"),
            "{s}"
        );
    }

    #[test]
    fn rendered_script_is_valid_sh() {
        let r = PathBuf::from("/tmp/r");
        let env = command_env(&r, &[]).expect("env");
        let argv: Vec<OsString> = vec!["true".into(), "it's".into()];
        let s = render_min(&argv, &env, &r, &[], None).expect("render");
        let dir =
            std::env::temp_dir().join(format!("patchbay-vt-script-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("mkdir");
        let file = dir.join("init.sh");
        std::fs::write(&file, &s).expect("write");
        let out = std::process::Command::new("sh")
            .arg("-n")
            .arg(&file)
            .output()
            .expect("sh -n");
        std::fs::remove_dir_all(&dir).expect("cleanup");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
