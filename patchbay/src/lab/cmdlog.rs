//! Per-command logs: with an output directory, every command spawned in a
//! node has its stdout and stderr written to
//! `logs/<node>/<n>-<prog>.stdout|.stderr` and, line by line with times, to
//! `logs/<node>.jsonl`.
//!
//! Which streams are logged follows what the caller asked for:
//! - left at the default (inherited): captured into the logs only (they no
//!   longer reach the test's own stdout/stderr);
//! - `Stdio::piped()`: teed: logged, and still readable from the child's
//!   handle;
//! - `Stdio::null()` or a file: left alone.
//!
//! `std` offers no getter for a `Command`'s stdio; the setting is read from
//! its alternate `Debug` form (checked by a unit test against the toolchain).

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};

use serde_json::json;

use super::artifacts::Artifacts;

/// What the caller configured for one stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Want {
    /// Default: inherit.
    Default,
    /// Piped: tee.
    Piped,
    /// Anything else: leave alone.
    Other,
}

/// Reads the stdout and stderr settings of a command.
pub(crate) fn wants(cmd: &std::process::Command) -> (Want, Want) {
    let text = format!("{cmd:#?}");
    let field = |name: &str| {
        let key = format!("\n    {name}: Some(\n        ");
        match text.find(&key) {
            None => Want::Default,
            Some(i) => {
                let rest = &text[i + key.len()..];
                if rest.starts_with("MakePipe") {
                    Want::Piped
                } else if rest.starts_with("Inherit") {
                    Want::Default
                } else {
                    Want::Other
                }
            }
        }
    };
    (field("stdout"), field("stderr"))
}

/// Prepares a command for logging: default streams become pipes.
pub(crate) fn prepare(cmd: &mut std::process::Command) -> (Want, Want) {
    let (o, e) = wants(cmd);
    if o == Want::Default {
        cmd.stdout(Stdio::piped());
    }
    if e == Want::Default {
        cmd.stderr(Stdio::piped());
    }
    (o, e)
}

/// One command's log destinations.
pub(crate) struct CmdLog {
    pub n: u32,
    pub base: PathBuf,
    pub jsonl: Option<Arc<Mutex<File>>>,
    pub art: Arc<Artifacts>,
}

impl CmdLog {
    /// Starts relaying one stream (the read end of the child's pipe).
    /// Returns the read end of a forwarding pipe when `forward`.
    pub fn relay(&self, stream: &'static str, fd: OwnedFd, forward: bool) -> Option<OwnedFd> {
        // tokio made the pipe non-blocking; the relay thread blocks.
        if let Ok(fl) = nix::fcntl::fcntl(fd.as_fd(), nix::fcntl::FcntlArg::F_GETFL) {
            let mut flags = nix::fcntl::OFlag::from_bits_truncate(fl);
            flags.remove(nix::fcntl::OFlag::O_NONBLOCK);
            // If this fails the reads below see EAGAIN and the relay ends
            // early; the child is unaffected.
            let _ = nix::fcntl::fcntl(fd.as_fd(), nix::fcntl::FcntlArg::F_SETFL(flags));
        }
        let (fwd_read, fwd_write) = if forward {
            match nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC) {
                Ok((r, w)) => (Some(r), Some(w)),
                Err(e) => {
                    tracing::warn!(
                        "cannot create a forwarding pipe: {e}; {stream} is logged but not readable"
                    );
                    (None, None)
                }
            }
        } else {
            (None, None)
        };
        let raw = File::create(self.base.with_extension(stream)).ok();
        let jsonl = self.jsonl.clone();
        let art = self.art.clone();
        let n = self.n;
        let spawned = std::thread::Builder::new()
            .name("pb-cmdlog".into())
            .spawn(move || {
                relay_loop(
                    File::from(fd),
                    raw,
                    fwd_write.map(File::from),
                    jsonl,
                    art,
                    n,
                    stream,
                )
            });
        if let Err(e) = spawned {
            tracing::warn!("cannot start the log relay for {stream}: {e}");
        }
        fwd_read
    }
}

fn relay_loop(
    mut src: File,
    mut raw: Option<File>,
    mut fwd: Option<File>,
    jsonl: Option<Arc<Mutex<File>>>,
    art: Arc<Artifacts>,
    n: u32,
    stream: &'static str,
) {
    let mut buf = vec![0u8; 16 * 1024];
    let mut line: Vec<u8> = vec![];
    let flush_line = |line: &mut Vec<u8>| {
        if let Some(j) = &jsonl {
            let (w, v) = art.now();
            let text = String::from_utf8_lossy(line);
            let rec = json!({"wall_ms": w, "virtual_ms": v, "cmd": n, "stream": stream, "line": text.trim_end_matches('\n')});
            let mut f = j.lock().unwrap_or_else(|p| p.into_inner());
            // Best effort, like every artifact write.
            let _ = super::artifacts::append_line(&mut f, &rec);
        }
        line.clear();
    };
    loop {
        let k = match src.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(k) => k,
        };
        let chunk = &buf[..k];
        if let Some(f) = raw.as_mut()
            && f.write_all(chunk).is_err()
        {
            raw = None;
        }
        if let Some(f) = fwd.as_mut()
            && f.write_all(chunk).is_err()
        {
            // The reader went away: keep logging.
            fwd = None;
        }
        for &b in chunk {
            line.push(b);
            if b == b'\n' || line.len() >= 64 * 1024 {
                flush_line(&mut line);
            }
        }
    }
    if !line.is_empty() {
        flush_line(&mut line);
    }
}

/// With an output directory: numbers the command `node` is about to run,
/// records `cmd.start` and turns its default streams into pipes to relay.
pub(crate) fn start(
    lab: &super::LabInner,
    node: &str,
    cmd: &mut std::process::Command,
) -> Option<(CmdLog, (Want, Want))> {
    let art = lab.artifacts()?.clone();
    let program = cmd.get_program().to_string_lossy().into_owned();
    let argv: Vec<String> = std::iter::once(program.clone())
        .chain(cmd.get_args().map(|a| a.to_string_lossy().into_owned()))
        .collect();
    let (n, base, jsonl) = art.next_cmd(node, &program);
    let w = prepare(cmd);
    let rel = base
        .strip_prefix(art.dir())
        .unwrap_or(&base)
        .to_string_lossy()
        .into_owned();
    art.emit(
        Some(node),
        "cmd.start",
        json!({"cmd": n, "argv": argv, "log": rel}),
    );
    Some((
        CmdLog {
            n,
            base,
            jsonl,
            art,
        },
        w,
    ))
}

/// Relays the streams of a freshly spawned tokio child. Runs on the
/// worker that spawned it (the pipes belong to its reactor).
pub(crate) fn attach_tokio(child: &mut tokio::process::Child, log: &CmdLog, w: (Want, Want)) {
    if w.0 != Want::Other
        && let Some(out) = child.stdout.take()
        && let Ok(fd) = out.into_owned_fd()
        && let Some(r) = log.relay("stdout", fd, w.0 == Want::Piped)
    {
        child.stdout =
            tokio::process::ChildStdout::from_std(std::process::ChildStdout::from(r)).ok();
    }
    if w.1 != Want::Other
        && let Some(err) = child.stderr.take()
        && let Ok(fd) = err.into_owned_fd()
        && let Some(r) = log.relay("stderr", fd, w.1 == Want::Piped)
    {
        child.stderr =
            tokio::process::ChildStderr::from_std(std::process::ChildStderr::from(r)).ok();
    }
}

/// Relays the streams of a freshly spawned std child.
pub(crate) fn attach_std(child: &mut std::process::Child, log: &CmdLog, w: (Want, Want)) {
    if w.0 != Want::Other
        && let Some(out) = child.stdout.take()
        && let Some(r) = log.relay("stdout", OwnedFd::from(out), w.0 == Want::Piped)
    {
        child.stdout = Some(std::process::ChildStdout::from(r));
    }
    if w.1 != Want::Other
        && let Some(err) = child.stderr.take()
        && let Some(r) = log.relay("stderr", OwnedFd::from(err), w.1 == Want::Piped)
    {
        child.stderr = Some(std::process::ChildStderr::from(r));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_stdio_settings_from_this_toolchain() {
        let mut c = std::process::Command::new("x");
        assert_eq!(wants(&c), (Want::Default, Want::Default));
        c.stdout(Stdio::piped()).stderr(Stdio::null());
        assert_eq!(wants(&c), (Want::Piped, Want::Other));
        let mut c = std::process::Command::new("x");
        c.arg("\n    stdout: Some(\n        MakePipe")
            .stderr(Stdio::inherit());
        assert_eq!(wants(&c), (Want::Default, Want::Default));
    }
}
