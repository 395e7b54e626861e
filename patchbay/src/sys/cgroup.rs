//! cgroup v2 bookkeeping: one cgroup per process, one child per lab.
//!
//! The first lab of a process creates `patchbay.<pid>.<starttime>` under the
//! process's current cgroup v2 cgroup. The BPF engine moves the process into
//! it and attaches its programs there, so they apply to every socket the
//! process and its children create; labs without it leave the process where
//! it is (a move costs an RCU grace period each way). Each lab gets a child `lab-<n>` for
//! the commands it spawns, so dropping the lab can kill them all at once,
//! grandchildren included (`cgroup.kill`, Linux 5.14+; older kernels get a
//! per-pid SIGKILL sweep).
//!
//! A SIGKILLed process cannot remove its cgroup: the process's watchdog
//! (see [`super::watchdog`], started before the process joins its cgroup)
//! kills the lab cgroups and removes them when the process dies. As a
//! fallback, the next process that creates a lab reaps every `patchbay.*`
//! cgroup beside its own whose owner is dead, and only those, and
//! [`reap_dead_everywhere`] (`patchbay doctor --cleanup`) does the same in
//! the whole hierarchy. The cgroup2 mount is found through `/proc/self/mountinfo`
//! (hybrid layouts mount it at `/sys/fs/cgroup/unified`).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};

use super::watchdog::Watchdog;

/// cgroup errors.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// No cgroup2 file system is mounted.
    #[error(
        "no cgroup v2 mount found in /proc/self/mountinfo; mount one with `mount -t cgroup2 none /sys/fs/cgroup/unified`"
    )]
    NoCgroup2,
    /// A file operation failed.
    #[error("cgroup: cannot {op} {path}: {source}")]
    Io {
        /// What was attempted.
        op: &'static str,
        /// The path.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

fn io(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> CgroupError + use<> {
    let path = path.to_path_buf();
    move |source| CgroupError::Io { op, path, source }
}

/// Finds the cgroup2 mount point from a mountinfo text.
pub fn cgroup2_mount_from(mountinfo: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|line| {
        let (pre, post) = line.split_once(" - ")?;
        let fstype = post.split_whitespace().next()?;
        if fstype != "cgroup2" {
            return None;
        }
        pre.split_whitespace().nth(4).map(PathBuf::from)
    })
}

/// The cgroup2 mount point of this system, if any.
pub fn cgroup2_mount() -> Option<PathBuf> {
    cgroup2_mount_from(&std::fs::read_to_string("/proc/self/mountinfo").ok()?)
}

/// The v2 cgroup path (`0::/path`) from a `/proc/<pid>/cgroup` text.
pub fn v2_path_from(cgroup: &str) -> Option<String> {
    cgroup
        .lines()
        .find_map(|l| l.strip_prefix("0::").map(str::to_string))
}

/// The start time (field 22 of `/proc/<pid>/stat`) of a process.
pub fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_comm = &stat[stat.rfind(')')? + 2..];
    after_comm.split_whitespace().nth(19)?.parse().ok()
}

/// Parses a `patchbay.<pid>.<starttime>` directory name.
pub fn parse_owner(name: &str) -> Option<(u32, u64)> {
    let rest = name.strip_prefix("patchbay.")?;
    let (pid, st) = rest.split_once('.')?;
    Some((pid.parse().ok()?, st.parse().ok()?))
}

/// This process's own cgroup, shared by every lab (and the BPF engine) of
/// the process while any of them exists: the parent of the lab cgroups.
/// The process itself moves in only when asked ([`ProcessCgroup::join`]).
/// When the last holder drops it, the process moves back to its original
/// cgroup (if it had joined) and the directory is removed.
#[derive(Debug)]
pub struct ProcessCgroup {
    path: PathBuf,
    base: PathBuf,
    next_lab: Mutex<u32>,
    /// Whether this process moved itself in ([`ProcessCgroup::join`]).
    joined: Mutex<bool>,
    /// Kills the labs if this process dies without dropping them.
    watchdog: Mutex<Option<Watchdog>>,
}

static PROCESS: Mutex<Weak<ProcessCgroup>> = Mutex::new(Weak::new());

impl ProcessCgroup {
    /// Returns the process cgroup, creating it (and reaping dead ones) when
    /// no lab of this process holds one.
    pub fn acquire() -> Result<Arc<ProcessCgroup>, CgroupError> {
        let mut slot = PROCESS.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(cg) = slot.upgrade() {
            // Reap on every acquisition, not only the first: a process may
            // hold its cgroup for a long time while others die.
            reap_dead(&cg.base);
            return Ok(cg);
        }
        let cg = Arc::new(Self::create()?);
        *slot = Arc::downgrade(&cg);
        Ok(cg)
    }

    fn create() -> Result<ProcessCgroup, CgroupError> {
        let mount = cgroup2_mount().ok_or(CgroupError::NoCgroup2)?;
        let selfcg = std::fs::read_to_string("/proc/self/cgroup")
            .map_err(io("read", Path::new("/proc/self/cgroup")))?;
        let rel = v2_path_from(&selfcg).unwrap_or_else(|| "/".into());
        let base = mount.join(rel.trim_start_matches('/'));
        reap_dead(&base);
        let pid = std::process::id();
        let st = start_time(pid).unwrap_or(0);
        let path = base.join(format!("patchbay.{pid}.{st}"));
        match std::fs::create_dir(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io("create", &path)(e)),
        }
        // Started before this process can join the cgroup, so the watchdog
        // stays outside it (and outside every lab cgroup below it).
        let watchdog = match Watchdog::start(&path, &base) {
            Ok(w) => w,
            Err(e) => {
                remove_quietly(&path);
                return Err(io("start the owner watchdog for", &path)(e));
            }
        };
        Ok(ProcessCgroup {
            path,
            base,
            next_lab: Mutex::new(0),
            joined: Mutex::new(false),
            watchdog: Mutex::new(Some(watchdog)),
        })
    }

    /// Moves this process into the cgroup (once), so programs attached to
    /// it (the BPF engine) cover the process's own sockets. Labs alone do
    /// not need this: their commands join their lab cgroup, and the process
    /// stays where it is. Moving a process costs an RCU grace period in the
    /// kernel (`cgroup_threadgroup_rwsem`, 12–45 ms measured here), once on
    /// the way in and once on the way out.
    pub fn join(&self) -> Result<(), CgroupError> {
        let mut joined = self.joined.lock().unwrap_or_else(|p| p.into_inner());
        if !*joined {
            let procs = self.path.join("cgroup.procs");
            std::fs::write(&procs, std::process::id().to_string()).map_err(io("join", &procs))?;
            *joined = true;
        }
        Ok(())
    }

    /// The cgroup directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Creates a fresh child cgroup for one lab's processes.
    pub fn new_lab(self: &Arc<Self>) -> Result<LabCgroup, CgroupError> {
        let n = {
            let mut g = self.next_lab.lock().unwrap_or_else(|p| p.into_inner());
            *g += 1;
            *g
        };
        let path = self.path.join(format!("lab-{n}"));
        std::fs::create_dir(&path).map_err(io("create", &path))?;
        Ok(LabCgroup {
            procs: path.join("cgroup.procs"),
            path,
            _process: self.clone(),
        })
    }
}

impl Drop for ProcessCgroup {
    fn drop(&mut self) {
        // Held throughout, so no new process cgroup (same path) can be
        // created while this one is being removed.
        let slot = PROCESS.lock().unwrap_or_else(|p| p.into_inner());
        let watchdog = self
            .watchdog
            .get_mut()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if slot.upgrade().is_some() {
            // A new one was created for the same path before this drop got
            // the lock: the directory is its now.
            if let Some(w) = watchdog {
                w.disarm();
            }
            return;
        }
        if *self.joined.get_mut().unwrap_or_else(|p| p.into_inner()) {
            let procs = self.base.join("cgroup.procs");
            if let Err(e) = std::fs::write(&procs, std::process::id().to_string()) {
                // The watchdog is left armed: dropping it closes its pipe,
                // and it retries the move and the removal itself.
                tracing::warn!(
                    "cannot move back to {}: {e}; the watchdog retries, and the next lab reaps {}",
                    procs.display(),
                    self.path.display()
                );
                return;
            }
        }
        release(&self.path, &self.base);
        drop(slot);
        if let Some(w) = watchdog {
            w.disarm();
        }
    }
}

/// Removes a cgroup directory on a failure path, where the error being
/// returned matters more than this one (logged).
fn remove_quietly(path: &Path) {
    if let Err(e) = std::fs::remove_dir(path) {
        tracing::warn!(
            "cannot remove {}: {e}; the next lab will reap it",
            path.display()
        );
    }
}

/// Removes a process cgroup: lab children are killed, while other processes
/// in it (children the process forked itself, not lab processes) move back
/// to `base` unharmed.
fn release(dir: &Path, base: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                kill_and_remove(&e.path());
            }
        }
    }
    let base_procs = base.join("cgroup.procs");
    for _ in 0..3 {
        let Ok(procs) = std::fs::read_to_string(dir.join("cgroup.procs")) else {
            break;
        };
        if procs.trim().is_empty() {
            break;
        }
        for pid in procs.lines() {
            // A process may exit between the read and the move.
            let _ = std::fs::write(&base_procs, pid.trim());
        }
    }
    if let Err(e) = std::fs::remove_dir(dir) {
        tracing::warn!(
            "cannot remove {}: {e}; the next lab will reap it",
            dir.display()
        );
    }
}

/// One lab's cgroup; kills its processes and removes itself on drop.
#[derive(Debug)]
pub struct LabCgroup {
    path: PathBuf,
    procs: PathBuf,
    _process: Arc<ProcessCgroup>,
}

impl LabCgroup {
    /// The `cgroup.procs` file a child writes `0` into to join.
    pub fn procs_file(&self) -> &Path {
        &self.procs
    }
}

impl Drop for LabCgroup {
    fn drop(&mut self) {
        kill_and_remove(&self.path);
    }
}

/// Kills every process in `dir` (recursively) and removes the directories.
/// Best effort: used from drop paths and the reaper.
fn kill_and_remove(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                kill_and_remove(&e.path());
            }
        }
    }
    let kill = dir.join("cgroup.kill");
    if std::fs::write(&kill, "1").is_err() {
        // Before 5.14 there is no cgroup.kill: signal each member.
        if let Ok(procs) = std::fs::read_to_string(dir.join("cgroup.procs")) {
            for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                // A member may exit between the read and the kill.
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }
    // The kernel removes a cgroup only once its members are gone; SIGKILLed
    // members disappear within milliseconds.
    for _ in 0..200 {
        match std::fs::remove_dir(dir) {
            Ok(()) => return,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
            Err(_) => std::thread::sleep(std::time::Duration::from_millis(5)),
        }
    }
    tracing::warn!(path = %dir.display(), "could not remove cgroup; the next lab will reap it");
}

/// Removes `patchbay.<pid>.<starttime>` cgroups under `base` whose owner is
/// no longer alive. Returns the directories it removed.
pub fn reap_dead(base: &Path) -> Vec<PathBuf> {
    let mut reaped = Vec::new();
    let Ok(entries) = std::fs::read_dir(base) else {
        return reaped;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some((pid, st)) = name.to_str().and_then(parse_owner) else {
            continue;
        };
        if start_time(pid) == Some(st) {
            continue; // owner alive
        }
        release(&e.path(), base);
        reaped.push(e.path());
    }
    reaped
}

/// Reaps stale process cgroups anywhere in the cgroup2 hierarchy, not only
/// beside this process's own (their owners may have run in another cgroup,
/// e.g. another login session). Returns the directories it removed.
#[cfg(feature = "cli")]
pub fn reap_dead_everywhere() -> Result<Vec<PathBuf>, CgroupError> {
    let mount = cgroup2_mount().ok_or(CgroupError::NoCgroup2)?;
    let mut reaped = Vec::new();
    let mut stack = vec![(mount, 0u32)];
    while let Some((dir, depth)) = stack.pop() {
        reaped.extend(reap_dead(&dir));
        if depth >= 16 {
            continue;
        }
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let is_dir = e.file_type().map(|t| t.is_dir()).unwrap_or(false);
            let ours = e.file_name().to_string_lossy().starts_with("patchbay.");
            if is_dir && !ours {
                stack.push((e.path(), depth + 1));
            }
        }
    }
    reaped.sort();
    Ok(reaped)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_hybrid_cgroup2_mount() {
        let mi = "30 25 0:26 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n\
                  35 30 0:31 / /sys/fs/cgroup/unified rw,relatime shared:9 - cgroup2 cgroup2 rw\n\
                  36 30 0:32 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu\n";
        assert_eq!(
            cgroup2_mount_from(mi),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        assert_eq!(
            cgroup2_mount_from("30 25 0:26 / /x rw - tmpfs tmpfs rw\n"),
            None
        );
    }

    #[test]
    fn parses_v2_path_and_owner() {
        assert_eq!(
            v2_path_from("12:pids:/\n0::/user.slice/x\n").as_deref(),
            Some("/user.slice/x")
        );
        assert_eq!(parse_owner("patchbay.123.456"), Some((123, 456)));
        assert_eq!(parse_owner("patchbay.x.1"), None);
        assert_eq!(parse_owner("other.1.2"), None);
    }

    #[test]
    fn own_start_time_is_readable() {
        assert!(start_time(std::process::id()).is_some());
    }
}
