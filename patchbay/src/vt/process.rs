//! The host side of one UML run: spawn in a private, read-only mount namespace, a new PID
//! namespace and its own process group; collect the console, enforce the wall-clock guard,
//! kill and reap everything.

use std::collections::VecDeque;
use std::ffi::{CString, OsString};
use std::io::{BufRead, BufReader};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::{Signal, killpg};
use nix::sys::wait::{Id, WaitPidFlag, WaitStatus, waitid};
use nix::unistd::Pid;

use super::{VtError, io};

/// The console line the guest init prints right before running the command.
const START_MARKER: &[u8] = b"PATCHBAY-VT: command-start";
/// The console line the guest init prints right after the command.
const END_MARKER: &[u8] = b"PATCHBAY-VT: command-end";
/// Prefix of profiling marks the guest writes to `/dev/console` (`PATCHBAY-VT-MARK name`).
const MARK_PREFIX: &str = "PATCHBAY-VT-MARK ";
/// At most this many marks are kept.
const MARKS_KEEP: usize = 4096;
/// The console text of a guest kernel panic.
const PANIC_MARKER: &[u8] = b"Kernel panic";
/// The console text of a failed guest set-up step (the guest init then powers off, unless the
/// failure left it unable to: without /proc there is no sysrq).
const SETUP_ERROR_MARKER: &[u8] = b"PATCHBAY-VT-SETUP-ERROR";
/// How long the console may keep printing after a panic before UML is killed.
const PANIC_GRACE: Duration = Duration::from_millis(200);
/// How much console output is kept (the tail).
const CONSOLE_KEEP: usize = 256 * 1024;
/// How often the UML process is polled.
const POLL: Duration = Duration::from_millis(2);
/// How long processes of the group may take to disappear after SIGKILL.
const KILL_GRACE: Duration = Duration::from_secs(5);

/// What the host saw of one UML run.
#[derive(Debug)]
pub(crate) struct Finished {
    /// The guard expired and the group was killed.
    pub timed_out: bool,
    /// [`interrupt`] was called and the group was killed.
    pub interrupted: bool,
    /// The UML pid (= its process group id; it runs as PID 1 of its own PID namespace).
    pub pid: i32,
    /// Console output (tail).
    pub console: Vec<u8>,
    /// Wall time from spawn to the guest's start marker.
    pub command_start: Option<Duration>,
    /// Wall time from spawn to the guest's end marker.
    pub command_end: Option<Duration>,
    /// Profiling marks with their wall time since spawn.
    pub marks: Vec<(String, Duration)>,
}

/// Set by [`interrupt`]: every run of this process kills its guest.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Stops every virtual-time run of this process for good (see [`super::interrupt`]).
/// Async-signal-safe: one atomic store.
pub(crate) fn interrupt() {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Whether [`interrupt`] was called, or a Ctrl-C arrived in a process that catches it
/// (`sys::sigint`, the `patchbay` command line).
pub(crate) fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst) || crate::sys::sigint::received()
}

#[derive(Debug, Default)]
struct Console {
    tail: VecDeque<u8>,
    command_start: Option<Instant>,
    command_end: Option<Instant>,
    marks: Vec<(String, Instant)>,
    /// When the guest printed "Kernel panic" or a set-up error (UML may hang afterwards instead
    /// of exiting).
    panic: Option<Instant>,
}

/// Paths the UML process may write to; everything else is read-only in its mount namespace.
#[derive(Debug)]
pub(crate) struct Sandbox {
    /// The run dir, bind-mounted over the fixed path UML sees it at: `(run dir, fixed path)`.
    pub alias: (PathBuf, PathBuf),
    /// Directories that stay writable (bind-mounted on themselves), as UML sees them.
    pub writable: Vec<PathBuf>,
    /// An empty directory that gets a fresh private tmpfs (UML's memory file, via TMPDIR).
    pub mem_dir: PathBuf,
}

fn cstring(p: &Path) -> Result<CString, VtError> {
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| VtError::InvalidArgument(format!("path {} contains NUL", p.display())))
}

/// Spawns `binary args`, waits at most `guard`, then kills the process group and reaps it.
pub(crate) fn run_uml(
    binary: &Path,
    args: &[OsString],
    sandbox: &Sandbox,
    guard: Duration,
) -> Result<Finished, VtError> {
    let writable = sandbox
        .writable
        .iter()
        .map(|p| cstring(p))
        .collect::<Result<Vec<_>, _>>()?;
    let mem_dir = cstring(&sandbox.mem_dir)?;
    let alias = (cstring(&sandbox.alias.0)?, cstring(&sandbox.alias.1)?);
    let userns = super::userns::plan();
    let unprivileged = userns.is_some();
    // Held until the guest has ended (the end of this function).
    let cpu = super::cpu::claim();
    let child = crate::sys::sandbox::ChildSandbox {
        alias,
        writable,
        mem_dir,
        userns,
        cpu: cpu.as_ref().map(|c| c.cpu),
    };
    // The console goes to a regular file, not a pipe: every read of a pipe sends SIGIO to its
    // writer (O_ASYNC, which UML sets on its console fd), and that SIGIO would interrupt the
    // guest at a moment set by the host's scheduling, making seeded runs diverge. A file has
    // no such signal; the reader tails it.
    let console_path = sandbox.alias.0.join("console");
    let writer = std::fs::OpenOptions::new()
        .create_new(true)
        .append(true)
        .open(&console_path)
        .map_err(io("creating the console file", &console_path))?;
    let writer2 = writer
        .try_clone()
        .map_err(io("duplicating the console file", &console_path))?;
    let reader = Tail {
        file: std::fs::File::open(&console_path)
            .map_err(io("opening the console file", &console_path))?,
        done: Arc::new(AtomicBool::new(false)),
    };
    let _done_on_return = SetOnDrop(Arc::clone(&reader.done));
    let unshare = super::host_tool("unshare").ok_or_else(|| {
        VtError::InvalidArgument(
            "util-linux `unshare` (/usr/bin/unshare) is needed to give UML its own PID namespace"
                .into(),
        )
    })?;
    // UML becomes PID 1 of a new PID namespace: when it dies, the kernel kills every host
    // process it created for guest tasks, even if the runner itself was killed.
    let mut cmd = Command::new(&unshare);
    cmd.args(["--pid", "--fork", "--kill-child=SIGKILL", "--"])
        .arg(binary)
        .args(args)
        .env("TMPDIR", &sandbox.mem_dir)
        .stdin(Stdio::null())
        .stdout(writer)
        .stderr(writer2)
        .process_group(0);
    crate::sys::sandbox::install(&mut cmd, child);
    let started = Instant::now();
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(source) => {
            if unprivileged && let Some(e) = super::userns::classify_spawn_error(&unshare, &source)
            {
                return Err(e);
            }
            return Err(VtError::Spawn {
                binary: binary.to_path_buf(),
                source,
            });
        }
    };
    // The Command still holds the pipe's write ends; drop it so EOF can arrive.
    drop(cmd);
    let pid =
        i32::try_from(child.id()).map_err(|_| VtError::InvalidArgument("pid overflow".into()))?;
    let console = Arc::new(Mutex::new(Console::default()));
    let reader_thread = {
        let console = Arc::clone(&console);
        std::thread::spawn(move || read_console(reader, &console))
    };

    let deadline = started + guard;
    // UML itself is the child of `unshare` and calls setsid(): its process group (holding all
    // its helper and guest processes) is its own pid.
    let mut uml_pid = None;
    let mut interrupted = false;
    let timed_out = loop {
        if uml_pid.is_none() {
            uml_pid = children_of(pid)?.first().copied();
        }
        if has_exited(pid, "waiting for UML")? {
            break false;
        }
        if Instant::now() >= deadline {
            break true;
        }
        if self::interrupted() {
            interrupted = true;
            break false;
        }
        let panicked = console.lock().unwrap_or_else(PoisonError::into_inner).panic;
        if panicked.is_some_and(|t| t.elapsed() >= PANIC_GRACE) {
            break false;
        }
        std::thread::sleep(POLL);
    };
    // `unshare` is alive or a zombie, so its group id cannot have been reused yet; UML's group
    // dies with UML (the PID namespace init) at the latest, and UML dies with `unshare`.
    // UML first, and `unshare` left to reap it: killed together, `unshare` could die first and
    // leave UML (a PID namespace init, slow to exit) a zombie of the host's init.
    if let Some(u) = uml_pid {
        kill_group(u)?;
        wait_exited(pid, KILL_GRACE)?;
    }
    kill_group(pid)?;
    child.wait().map_err(|source| VtError::Io {
        what: "reaping UML",
        path: binary.to_path_buf(),
        source,
    })?;
    wait_group_gone(pid)?;
    if let Some(u) = uml_pid {
        wait_group_gone(u)?;
    }
    _done_on_return.0.store(true, Ordering::SeqCst);
    if reader_thread.join().is_err() {
        tracing::warn!("the UML console reader thread panicked; console output may be incomplete");
    }
    let console = std::mem::take(&mut *console.lock().unwrap_or_else(PoisonError::into_inner));
    Ok(Finished {
        timed_out,
        interrupted,
        pid: uml_pid.unwrap_or(pid),
        console: console.tail.into(),
        command_start: console.command_start.map(|t| t.duration_since(started)),
        command_end: console.command_end.map(|t| t.duration_since(started)),
        marks: console
            .marks
            .into_iter()
            .map(|(name, t)| (name, t.duration_since(started)))
            .collect(),
    })
}

/// Reads a file that UML appends to: at its end it waits for more until `done` is set.
struct Tail {
    file: std::fs::File,
    done: Arc<AtomicBool>,
}

impl std::io::Read for Tail {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            // Read `done` before the file: data written before UML exited is read after.
            let done = self.done.load(Ordering::SeqCst);
            let n = self.file.read(buf)?;
            if n > 0 || done {
                return Ok(n);
            }
            std::thread::sleep(POLL);
        }
    }
}

/// Sets the flag when dropped (the console reader then stops at the end of the file).
struct SetOnDrop(Arc<AtomicBool>);

impl Drop for SetOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

fn read_console(reader: Tail, console: &Mutex<Console>) {
    let mut reader = BufReader::new(reader);
    let mut line = Vec::new();
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                tracing::warn!("reading the UML console failed: {e}");
                return;
            }
        }
        let now = Instant::now();
        let mut c = console.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(name) = mark_name(&line)
            && c.marks.len() < MARKS_KEEP
        {
            c.marks.push((name, now));
        }
        if c.command_end.is_none() && line.windows(END_MARKER.len()).any(|w| w == END_MARKER) {
            c.command_end = Some(now);
        }
        if c.command_start.is_none() && line.windows(START_MARKER.len()).any(|w| w == START_MARKER)
        {
            c.command_start = Some(now);
        }
        if c.panic.is_none()
            && line
                .windows(SETUP_ERROR_MARKER.len())
                .any(|w| w == SETUP_ERROR_MARKER)
        {
            // Same handling as a panic: the guest is done either way.
            c.panic = Some(now);
        }
        if c.panic.is_none() && line.windows(PANIC_MARKER.len()).any(|w| w == PANIC_MARKER) {
            c.panic = Some(now);
        }
        c.tail.extend(line.iter().copied().filter(|&b| b != b'\r'));
        let excess = c.tail.len().saturating_sub(CONSOLE_KEEP);
        c.tail.drain(..excess);
    }
}

/// The name of a `PATCHBAY-VT-MARK name` console line (kernel messages may precede it).
fn mark_name(line: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(line);
    let (_, rest) = text.split_once(MARK_PREFIX)?;
    let name = rest.trim();
    (!name.is_empty()).then(|| name.to_string())
}

fn kill_group(pgid: i32) -> Result<(), VtError> {
    match killpg(Pid::from_raw(pgid), Signal::SIGKILL) {
        Ok(()) | Err(Errno::ESRCH) => Ok(()),
        Err(source) => Err(VtError::Process {
            what: "killing the UML process group",
            pid: pgid,
            source: source.into(),
        }),
    }
}

/// Whether the child `pid` has exited, without reaping it (an interrupted call counts as not
/// yet).
fn has_exited(pid: i32, what: &'static str) -> Result<bool, VtError> {
    match waitid(
        Id::Pid(Pid::from_raw(pid)),
        WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT,
    ) {
        Ok(WaitStatus::StillAlive) | Err(Errno::EINTR) => Ok(false),
        Ok(_) => Ok(true),
        Err(source) => Err(VtError::Process {
            what,
            pid,
            source: source.into(),
        }),
    }
}

/// Waits up to `limit` until `pid` (a child) has exited, without reaping it.
fn wait_exited(pid: i32, limit: Duration) -> Result<(), VtError> {
    let start = Instant::now();
    while start.elapsed() < limit && !has_exited(pid, "waiting for unshare to reap UML")? {
        std::thread::sleep(POLL);
    }
    Ok(())
}

/// Waits until no live (non-zombie) process is left in the group, re-sending SIGKILL.
fn wait_group_gone(pgid: i32) -> Result<(), VtError> {
    let start = Instant::now();
    loop {
        let pids = group_members(pgid)?;
        if pids.is_empty() {
            return Ok(());
        }
        if start.elapsed() > KILL_GRACE {
            return Err(VtError::Leftover { pgid, pids });
        }
        kill_group(pgid)?;
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Live (not zombie) processes whose process group is `pgid`, read from `/proc`.
fn group_members(pgid: i32) -> Result<Vec<i32>, VtError> {
    scan_proc(|_, pgrp| pgrp == pgid)
}

/// Live children of `parent`, from `/proc` (no CONFIG_PROC_CHILDREN needed).
fn children_of(parent: i32) -> Result<Vec<i32>, VtError> {
    scan_proc(|ppid, _| ppid == parent)
}

/// Live (not zombie) processes whose (ppid, pgrp) match `keep`, sorted.
fn scan_proc(keep: impl Fn(i32, i32) -> bool) -> Result<Vec<i32>, VtError> {
    let dir = std::fs::read_dir("/proc").map_err(|source| VtError::Io {
        what: "listing processes",
        path: "/proc".into(),
        source,
    })?;
    let mut pids = Vec::new();
    // Entries that fail to read are processes that vanished meanwhile: not members any more.
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        // A process may vanish between listing and reading; that is the normal case here.
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        if let Some((state, ppid, pgrp)) = parse_stat(&stat)
            && keep(ppid, pgrp)
            && state != 'Z'
        {
            pids.push(pid);
        }
    }
    pids.sort_unstable();
    Ok(pids)
}

/// Parses state, ppid and pgrp out of /proc/PID/stat (comm may contain spaces and ')').
fn parse_stat(stat: &str) -> Option<(char, i32, i32)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    let pgrp = fields.next()?.parse().ok()?;
    Some((state, ppid, pgrp))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_are_parsed() {
        assert_eq!(
            mark_name(b"PATCHBAY-VT-MARK spawn-start\r\n").as_deref(),
            Some("spawn-start")
        );
        assert_eq!(mark_name(b"PATCHBAY-VT-MARK \n"), None);
        assert_eq!(mark_name(b"other\n"), None);
    }

    #[test]
    fn stat_parsing_handles_odd_comm() {
        let stat = "1234 (a) b (c) S 1 777 777 0 -1 4194560";
        assert_eq!(parse_stat(stat), Some(('S', 1, 777)));
        assert_eq!(parse_stat("garbage"), None);
    }
}
