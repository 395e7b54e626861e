//! The owner watchdog: kills a process's labs when the process dies, however
//! it dies (SIGKILL included).
//!
//! When a process creates its cgroup (the first lab), it starts one small
//! `/bin/sh` process outside that cgroup. The watchdog's standard input is
//! the read end of a pipe whose write end only the owner holds (`O_CLOEXEC`,
//! so no program the lab spawns inherits it past `exec`). The kernel closes
//! the write end when the owner's last thread exits, for any reason, and the
//! watchdog's `read` returns EOF: it then kills every `lab-*` cgroup of the
//! owner (`cgroup.kill`, Linux 5.14+, else SIGKILL to each pid in
//! `cgroup.procs` until empty), removes them, moves any remaining non-lab
//! process of the owner's cgroup back to the parent cgroup, removes the
//! owner's cgroup, and exits. A clean release writes one line instead, and
//! the watchdog exits without touching anything.
//!
//! Why a shell script started with [`std::process::Command`]: the owner is
//! multithreaded (one worker per namespace), so a bare `fork` that then
//! runs Rust code (allocating, taking locks) could deadlock in the child.
//! `Command` with no `pre_exec` goes straight to `exec` (posix_spawn or
//! fork+exec), and the watchdog's logic then runs in a fresh process image.
//! A library cannot re-execute the user's binary in a helper mode (it does
//! not own `main`), and `/bin/sh` is always there. The watchdog ignores the
//! terminal's signals (its own process group, `trap ''`), so a Ctrl-C that
//! kills the owner does not kill the watchdog before it has cleaned up.
//! Starting it costs one `posix_spawn` on the first lab of a process; a
//! clean release collects its exit on a short-lived thread.
//!
//! A watchdog per process, not per lab: one process cgroup holds all of a
//! process's labs, and the watchdog only acts when the whole process is
//! gone; a second lab in the same process costs no spawn.
//!
//! Limits: a `SIGKILL` to the watchdog itself (it is not in the lab's
//! cgroup, e.g. `kill -9 -1`) leaves the cleanup to the next lab or to
//! `patchbay doctor --cleanup`. If the owner `fork`s a child that never
//! `exec`s, that child holds the write end too and the watchdog waits for
//! it as well.

use std::io::Write;
use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// The watchdog's script. `$1` is the owner's cgroup, `$2` its parent.
/// Standard input is the pipe: a line means "released cleanly", EOF means
/// the owner is gone.
const SCRIPT: &str = r#"trap '' HUP INT TERM QUIT PIPE
if read -r _; then exit 0; fi
exec >/dev/null 2>&1
P="$1"; B="$2"; n=0
while [ $n -lt 500 ]; do
  left=0
  for d in "$P"/lab-*; do
    [ -d "$d" ] || continue
    if [ -e "$d/cgroup.kill" ]; then
      echo 1 > "$d/cgroup.kill"
    else
      for p in $(cat "$d/cgroup.procs"); do kill -9 "$p"; done
    fi
    rmdir "$d" || left=1
  done
  if [ $left = 0 ]; then
    for p in $(cat "$P/cgroup.procs"); do echo "$p" > "$B/cgroup.procs"; done
    rmdir "$P" && exit 0
    [ -d "$P" ] || exit 0
  fi
  sleep 0.02
  n=$((n+1))
done
exit 1
"#;

/// A running watchdog: the write end of its pipe, and the process.
#[derive(Debug)]
pub struct Watchdog {
    tx: Option<std::fs::File>,
    child: Option<Child>,
}

impl Watchdog {
    /// Starts the watchdog for the owner cgroup `dir` (whose parent is
    /// `base`). Must be called before the owner moves into `dir`, so the
    /// watchdog stays outside it.
    pub fn start(dir: &Path, base: &Path) -> std::io::Result<Watchdog> {
        let (rx, tx) = pipe_cloexec()?;
        // Its own process group: a Ctrl-C aimed at the owner's terminal
        // group must not kill the watchdog before it has cleaned up.
        let child = Command::new("/bin/sh")
            .arg("-c")
            .arg(SCRIPT)
            .arg("patchbay-watchdog")
            .arg(dir)
            .arg(base)
            .stdin(Stdio::from(rx))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()?;
        Ok(Watchdog {
            tx: Some(std::fs::File::from(tx)),
            child: Some(child),
        })
    }

    /// Tells the watchdog the owner cleaned up itself: it exits without
    /// killing anything. Its exit is collected off the caller's path.
    pub fn disarm(mut self) {
        if let Some(mut tx) = self.tx.take()
            && let Err(e) = tx.write_all(b"done\n")
        {
            // The watchdog is gone already (killed from outside); nothing
            // is left for it to do, and nothing is left to tell.
            tracing::debug!("watchdog already gone: {e}");
        }
        if let Some(child) = self.child.take() {
            reap(child);
        }
    }
}

/// Waits for the watchdog's exit on a short-lived thread, so it does not
/// stay a zombie and the caller does not wait for it.
fn reap(mut child: Child) {
    let spawned = std::thread::Builder::new()
        .name("pb-watchdog".into())
        .spawn(move || child.wait());
    if let Err(e) = spawned {
        // Without a thread, the exit is not collected: a zombie until this
        // process exits, which is harmless.
        tracing::debug!("cannot start a thread to collect the watchdog's exit: {e}");
    }
}

fn pipe_cloexec() -> std::io::Result<(OwnedFd, OwnedFd)> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(std::io::Error::from)
}
