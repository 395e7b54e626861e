//! The `ip` tool (iproute2) for looking at a namespace's links, addresses, routes and
//! neighbours from a test.

use anyhow::Context;

/// Runs `ip ARGS` in the calling thread's network namespace (the host's, or a node's inside
/// `run_sync`) and returns its standard output; an error with `ip`'s message when it fails.
pub fn ip_here(args: &[&str]) -> anyhow::Result<String> {
    let out = std::process::Command::new("ip")
        .args(args)
        .output()
        .context("running ip (iproute2)")?;
    anyhow::ensure!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs `ip ARGS` in `node`'s namespace as a spawned process and returns its standard output;
/// an error with `ip`'s message when it fails.
pub fn ip_in(node: &patchbay::native::Node, args: &[&str]) -> anyhow::Result<String> {
    let mut cmd = std::process::Command::new("ip");
    cmd.args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let out = node.spawn_command_sync(cmd)?.wait_with_output()?;
    anyhow::ensure!(
        out.status.success(),
        "ip {} in {}: {}",
        args.join(" "),
        node.name(),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
