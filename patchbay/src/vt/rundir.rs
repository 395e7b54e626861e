//! The per-run directory on the host (guest init, fstab, UML's `uml_dir`, the memory file's
//! tmpfs, the default results dir) and the caller-given results dir.

use std::path::{Path, PathBuf};

use super::{VtError, io};

/// Files the guest writes into the results directory; stale ones are removed before a run.
pub(crate) const RESULT_FILES: &[&str] = &[
    "stdout",
    "stderr",
    "exit_code",
    "uptime",
    "clock",
    "error",
    super::root::KEEP_ERROR,
];

/// Creates (if needed) and canonicalizes a caller-given results dir, removing stale results.
pub(crate) fn prepare_results(dir: &Path, result_files: &[&str]) -> Result<PathBuf, VtError> {
    std::fs::create_dir_all(dir).map_err(io("creating the results dir", dir))?;
    let dir = dir
        .canonicalize()
        .map_err(io("resolving the results dir", dir))?;
    for name in result_files {
        let f = dir.join(name);
        match std::fs::remove_file(&f) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io("removing a stale result", &f)(e)),
        }
    }
    Ok(dir)
}

/// A private per-run directory (guest init, UML's `uml_dir`, memory file mount point, default
/// results), removed on drop.
///
/// Its host path (`<tmp>/patchbay-vt.<uid>/<pid>-<n>-<nanos>`) is unique; the UML process sees
/// it at [`RunDir::guest`] (`<tmp>/patchbay-vt.<uid>`, the parent, with the run dir
/// bind-mounted over it in UML's private mount namespace). Every path on the kernel command
/// line and in the guest's environment is therefore the same from run to run, and so is the
/// guest's random pool, which mixes in the command line (docs/determinism.md).
#[derive(Debug)]
pub(crate) struct RunDir {
    pub(crate) path: PathBuf,
    pub(crate) guest: PathBuf,
}

impl RunDir {
    pub(crate) fn create() -> Result<Self, VtError> {
        use std::os::unix::fs::DirBuilderExt;
        use std::sync::atomic::{AtomicU64, Ordering};
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let tmp = std::env::temp_dir();
        let tmp = tmp
            .canonicalize()
            .map_err(io("resolving the temp dir", &tmp))?;
        let parent = tmp.join(format!("patchbay-vt.{}", nix::unistd::geteuid().as_raw()));
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let name = format!(
            "{}-{}-{nanos}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let path = parent.join(name);
        // Another runner may remove the (then empty) parent between our two mkdirs: retry.
        let mut attempts = 0;
        loop {
            match std::fs::DirBuilder::new().mode(0o700).create(&parent) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(io("creating the run dirs' parent", &parent)(e)),
            }
            if attempts == 0 {
                remove_stale_run_dirs(&parent)?;
            }
            match std::fs::DirBuilder::new().mode(0o700).create(&path) {
                Ok(()) => break,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && attempts < 10 => {
                    attempts += 1;
                }
                Err(e) => return Err(io("creating the run dir", &path)(e)),
            }
        }
        Ok(Self {
            path,
            guest: parent,
        })
    }
}

impl RunDir {
    /// Copies the host's `mount` (`/usr/bin/mount` or `/bin/mount`) into the run dir as `name`,
    /// mode 0755 (no setuid bit), and returns the path the guest sees it at.
    pub(crate) fn copy_mount(&self, name: &str) -> Result<PathBuf, VtError> {
        use std::os::unix::fs::PermissionsExt;
        let host = super::host_tool("mount").ok_or_else(|| {
            VtError::InvalidArgument(
                "no `mount` at /usr/bin/mount or /bin/mount: install util-linux (the guest \
                     init mounts its file systems with it)"
                    .into(),
            )
        })?;
        let copy = self.path.join(name);
        std::fs::copy(&host, &copy)
            .map_err(io("copying the host's mount into the run dir", &host))?;
        std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755))
            .map_err(io("clearing the setuid bit of the run dir's mount", &copy))?;
        Ok(self.guest.join(name))
    }
}

/// Removes run dirs left by runners that were killed (their pid no longer exists). The parent
/// is this user's alone.
fn remove_stale_run_dirs(parent: &Path) -> Result<(), VtError> {
    use std::os::unix::fs::MetadataExt;
    let me = nix::unistd::geteuid().as_raw();
    let entries = std::fs::read_dir(parent).map_err(io("listing the run dirs", parent))?;
    // Unreadable entries are not ours to judge.
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.split('-').next())
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        // An entry that vanished or cannot be examined is not ours.
        let mine = entry.metadata().is_ok_and(|m| m.uid() == me);
        if mine && pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            let path = entry.path();
            tracing::info!("removing the stale virtual-time run dir {}", path.display());
            std::fs::remove_dir_all(&path).map_err(io("removing a stale run dir", &path))?;
        }
    }
    Ok(())
}

impl Drop for RunDir {
    fn drop(&mut self) {
        // Drop cannot return errors; report and continue.
        if let Err(e) = std::fs::remove_dir_all(&self.path) {
            tracing::warn!(
                "removing the virtual-time run dir {} failed: {e}",
                self.path.display()
            );
        }
        // The parent goes when the last run ends; another run's dir keeps it (ENOTEMPTY).
        if let Err(e) = std::fs::remove_dir(&self.guest)
            && !matches!(
                e.raw_os_error(),
                Some(libc::ENOTEMPTY | libc::EEXIST | libc::ENOENT)
            )
        {
            tracing::warn!(
                "removing the virtual-time run dirs' parent {} failed: {e}",
                self.guest.display()
            );
        }
    }
}
