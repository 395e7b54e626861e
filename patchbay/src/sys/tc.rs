//! Applying link conditions with `tc` (iproute2), run through [`crate::sys::cmd`].
//!
//! What to apply is rendered, kernel-free, by [`crate::link::render_tc`]: a
//! rate limit alone becomes a `tbf` root qdisc (`CONFIG_NET_SCH_TBF`),
//! anything else a `netem` root qdisc carrying the rate too
//! (`CONFIG_NET_SCH_NETEM`, Linux 3.3+ for netem `rate`). A clean condition
//! removes the root qdisc. Changes use `tc qdisc replace`, so they apply at
//! runtime without a gap.

use crate::sys::cmd::{self, CmdError};
use crate::sys::netns::Netns;

/// The root qdisc a rendered `tc` command installs (or removes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Qdisc {
    /// `qdisc del … root`: back to the default.
    Clean,
    /// A token bucket (rate limit only).
    Tbf,
    /// netem (delay, jitter, loss, duplication, reordering; rate too).
    Netem,
}

/// A failed `tc` operation.
#[derive(Debug, thiserror::Error)]
pub enum TcError {
    /// The kernel lacks the qdisc.
    #[error("the kernel has no `{kind}` qdisc ({config}): `{argv}` in {ns} said: {stderr}")]
    MissingQdisc {
        /// `netem` or `tbf`.
        kind: &'static str,
        /// The kernel option.
        config: &'static str,
        /// The command.
        argv: String,
        /// Namespace.
        ns: String,
        /// What tc said.
        stderr: String,
    },
    /// tc failed otherwise.
    #[error(transparent)]
    Cmd(#[from] CmdError),
}

/// Runs the `tc` commands rendered by [`crate::link::render_tc`] (which install or remove
/// `qdisc`) inside `ns`, in order.
pub(crate) async fn apply(
    ns: &Netns,
    cmds: &[crate::link::TcCmd],
    qdisc: Qdisc,
) -> Result<(), TcError> {
    for c in cmds {
        match run_one(ns, &c.args, qdisc).await {
            Err(TcError::Cmd(CmdError::Failed { stderr, .. }))
                if c.may_be_absent && is_absent(&stderr) => {}
            r => r?,
        }
    }
    Ok(())
}

/// What tc says when the object to remove is not there.
fn is_absent(stderr: &str) -> bool {
    [
        "No such file or directory",
        "Invalid handle",
        "Cannot find specified qdisc",
    ]
    .iter()
    .any(|m| stderr.contains(m))
}

async fn run_one(ns: &Netns, args: &[String], qdisc: Qdisc) -> Result<(), TcError> {
    match cmd::run(ns, "tc", args, None).await {
        Ok(_) => Ok(()),
        // Removing a root qdisc that is not there.
        Err(CmdError::Failed { stderr, .. })
            if qdisc == Qdisc::Clean && stderr.contains("handle of zero") =>
        {
            Ok(())
        }
        Err(CmdError::Failed {
            argv, ns, stderr, ..
        }) if stderr.contains("qdisc kind is unknown") => {
            let (kind, config) = if qdisc == Qdisc::Netem {
                ("netem", "CONFIG_NET_SCH_NETEM")
            } else {
                ("tbf", "CONFIG_NET_SCH_TBF")
            };
            Err(TcError::MissingQdisc {
                kind,
                config,
                argv,
                ns,
                stderr,
            })
        }
        Err(e) => Err(e.into()),
    }
}
