//! Ctrl-C (SIGINT) as a flag. The handler only stores into an atomic, which is
//! async-signal-safe; everything else reads the flag from ordinary code.

use std::sync::atomic::{AtomicBool, Ordering};

static RECEIVED: AtomicBool = AtomicBool::new(false);

#[cfg(feature = "cli")]
extern "C" fn on_sigint(_: libc::c_int) {
    RECEIVED.store(true, Ordering::SeqCst);
}

#[cfg(feature = "cli")]
/// Replaces the process's SIGINT disposition with one that sets the flag [`received`]
/// reads, instead of terminating the process.
pub(crate) fn catch() -> nix::Result<()> {
    use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};
    let act = SigAction::new(
        SigHandler::Handler(on_sigint),
        SaFlags::empty(),
        SigSet::empty(),
    );
    // SAFETY: the handler only stores into an atomic, which is async-signal-safe; the
    // previous disposition is not needed (the flag replaces it for the process's life).
    unsafe { sigaction(Signal::SIGINT, &act) }.map(drop)
}

/// Whether a SIGINT arrived since [`catch`] was called.
pub(crate) fn received() -> bool {
    RECEIVED.load(Ordering::SeqCst)
}
