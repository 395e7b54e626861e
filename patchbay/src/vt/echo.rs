//! [`VtOpts::echo`](super::VtOpts::echo): the command's output on this process's stdout and
//! stderr while the guest runs. The guest writes `stdout` and `stderr` into the results
//! directory over hostfs, which reaches the host file at each `write(2)`; a thread here
//! follows both files and copies what is new. It only reads on the host side, so the guest
//! (and a seeded run's bytes) cannot tell.

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use super::VtError;
use super::fsutil::io;

/// How often the files are polled: output reaches the terminal at most this late.
const POLL: Duration = Duration::from_millis(20);

/// The following thread; [`Echo::finish`] copies the rest and stops it.
pub(crate) struct Echo {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// One followed file and where its bytes go.
struct Followed {
    path: PathBuf,
    file: Option<File>,
    to_stderr: bool,
}

impl Followed {
    /// Copies whatever the guest wrote since the last call. The file appears once the guest's
    /// init redirects the command's output; until then there is nothing to copy.
    fn copy_new(&mut self, buf: &mut Vec<u8>) {
        if self.file.is_none() {
            self.file = File::open(&self.path).ok();
        }
        let Some(f) = &mut self.file else { return };
        buf.clear();
        if f.read_to_end(buf).is_err() || buf.is_empty() {
            return;
        }
        // A closed stdout or stderr (a pipe whose reader left) is no reason to fail the run:
        // the outcome still carries every byte.
        let _ = if self.to_stderr {
            std::io::stderr().lock().write_all(buf)
        } else {
            let mut out = std::io::stdout().lock();
            out.write_all(buf).and_then(|()| out.flush())
        };
    }
}

impl Echo {
    /// Starts following `results/stdout` and `results/stderr`.
    pub(crate) fn start(results: &Path) -> Result<Echo, VtError> {
        let stop = Arc::new(AtomicBool::new(false));
        // stderr first in each round: what two streams wrote within one poll keeps the usual
        // order of progress (stderr) before results (stdout). Their true interleaving is lost
        // in two files either way.
        let mut files = [("stderr", true), ("stdout", false)].map(|(name, to_stderr)| Followed {
            path: results.join(name),
            file: None,
            to_stderr,
        });
        let flag = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("patchbay-vt-echo".into())
            .spawn(move || {
                let mut buf = Vec::new();
                loop {
                    // Read after the check: the last round, after `finish`, sees every byte.
                    let last = flag.load(Ordering::Acquire);
                    for f in &mut files {
                        f.copy_new(&mut buf);
                    }
                    if last {
                        return;
                    }
                    // `finish` unparks: the last round starts at once, not up to POLL later.
                    std::thread::park_timeout(POLL);
                }
            })
            .map_err(io(
                "starting the thread that echoes the guest's output",
                results,
            ))?;
        Ok(Echo {
            stop,
            thread: Some(thread),
        })
    }

    /// Copies what is left, once the guest has exited, and stops following.
    pub(crate) fn finish(mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            t.thread().unpark();
            let _ = t.join();
        }
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
    }
}
