//! The one choke point for external commands patchbay runs itself (`nft`,
//! `tc`): each runs on a namespace worker, and every failure records the
//! argv, the namespace, the exit status and the tool's stderr.

use std::ffi::OsStr;
use std::process::Stdio;

use tokio::io::AsyncWriteExt;

use crate::sys::netns::{Netns, NetnsError};

/// A failed external command.
#[derive(Debug, thiserror::Error)]
pub enum CmdError {
    /// The program is not installed.
    #[error("`{program}` is not installed (needed to run `{argv}` in {ns}); {hint}")]
    NotFound {
        /// The program.
        program: String,
        /// The full command line.
        argv: String,
        /// Namespace it was meant to run in.
        ns: String,
        /// How to install it.
        hint: String,
    },
    /// The program could not be started.
    #[error("cannot run `{argv}` in {ns}: {source}")]
    Spawn {
        /// The full command line.
        argv: String,
        /// Namespace.
        ns: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The program ran and failed.
    #[error("`{argv}` failed in {ns} ({status}): {stderr}{}", input_note(.stdin))]
    Failed {
        /// The full command line.
        argv: String,
        /// Namespace.
        ns: String,
        /// Exit status text.
        status: String,
        /// What the tool printed on stderr.
        stderr: String,
        /// What was fed on stdin (e.g. the nft ruleset), if anything.
        stdin: Option<String>,
    },
    /// The namespace worker is gone.
    #[error(transparent)]
    Netns(#[from] NetnsError),
}

fn input_note(stdin: &Option<String>) -> String {
    match stdin {
        Some(s) => format!("\n--- input ---\n{}", s.trim_end()),
        None => String::new(),
    }
}

/// Output of a successful command.
#[derive(Debug, Clone)]
pub struct CmdOutput {
    /// Standard output.
    #[cfg_attr(
        not(feature = "cli"),
        expect(dead_code, reason = "read by doctor (feature `cli`) only")
    )]
    pub stdout: String,
}

/// Install hints for the tools patchbay drives.
fn hint_for(program: &str) -> String {
    match program {
        "nft" => "install it with `apt-get install -y nftables` (cargo xtask test does this when run as root)".into(),
        "tc" | "ip" => "install it with `apt-get install -y iproute2`".into(),
        other => format!("install `{other}` or put it on PATH"),
    }
}

/// Runs `program args...` inside `ns`, optionally feeding `stdin`, and
/// returns its output, or a [`CmdError`] naming what ran where and what the
/// tool said.
pub async fn run<I, S>(
    ns: &Netns,
    program: &str,
    args: I,
    stdin: Option<String>,
) -> Result<CmdOutput, CmdError>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let args: Vec<std::ffi::OsString> = args.into_iter().map(|a| a.as_ref().to_owned()).collect();
    let argv = std::iter::once(program.to_string())
        .chain(args.iter().map(|a| a.to_string_lossy().into_owned()))
        .collect::<Vec<_>>()
        .join(" ");
    let ns_name = ns.name().to_string();
    let program = program.to_string();
    ns.run(move || async move {
        let mut cmd = tokio::process::Command::new(&program);
        cmd.args(&args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(CmdError::NotFound {
                    hint: hint_for(&program),
                    program,
                    argv,
                    ns: ns_name,
                });
            }
            Err(source) => {
                return Err(CmdError::Spawn {
                    argv,
                    ns: ns_name,
                    source,
                });
            }
        };
        if let (Some(input), Some(mut pipe)) = (stdin.as_ref(), child.stdin.take()) {
            pipe.write_all(input.as_bytes())
                .await
                .map_err(|source| CmdError::Spawn {
                    argv: argv.clone(),
                    ns: ns_name.clone(),
                    source,
                })?;
            drop(pipe);
        }
        let out = child
            .wait_with_output()
            .await
            .map_err(|source| CmdError::Spawn {
                argv: argv.clone(),
                ns: ns_name.clone(),
                source,
            })?;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        if !out.status.success() {
            return Err(CmdError::Failed {
                argv,
                ns: ns_name,
                status: out.status.to_string(),
                stderr: stderr.trim().to_string(),
                stdin,
            });
        }
        if !stderr.trim().is_empty() {
            // Some tools warn on success; keep it visible to whoever traces.
            tracing::debug!(target: "patchbay::cmd", argv = %argv, ns = %ns_name, "stderr: {}", stderr.trim());
        }
        Ok(CmdOutput { stdout })
    })
    .await?
}
