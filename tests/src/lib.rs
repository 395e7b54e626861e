//! Shared helpers for patchbay's integration tests.
//!
//! Kernel-dependent tests call [`skip`] when a feature is missing: it prints
//! `PATCHBAY-SKIP: <test>: <reason>` so the kernel matrix and a reader of
//! the output see it; a skip never passes silently.

use std::net::SocketAddr;
use std::time::Duration;

mod ip;
mod skip;
pub mod traffic;
pub use ip::{ip_here, ip_in};
pub mod upstream;

pub use skip::*;

/// The workspace root.
pub fn workspace() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// The `patchbay` binary of this build (target/<profile>/patchbay), built
/// (or found up to date) by cargo first, so a stale binary never runs.
pub fn patchbay_bin() -> anyhow::Result<std::path::PathBuf> {
    use anyhow::Context;
    let exe = std::env::current_exe()?;
    // target/<profile>/deps/<test>-<hash>
    let profile_dir = exe
        .parent()
        .and_then(std::path::Path::parent)
        .context("test binary outside target/<profile>/deps")?;
    let bin = profile_dir.join("patchbay");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut build = std::process::Command::new(cargo);
    build
        .args(["build", "-p", "patchbay", "--bin", "patchbay"])
        .current_dir(workspace());
    if profile_dir.file_name().is_some_and(|n| n == "release") {
        build.arg("--release");
    }
    let st = build.status()?;
    if !st.success() || !bin.exists() {
        anyhow::bail!("cannot build the patchbay binary at {}", bin.display());
    }
    Ok(bin)
}

/// Starts a UDP reflector on `node` and returns once it is bound: it echoes
/// each datagram with the sender's address appended (`payload|ip:port`).
pub async fn start_udp_reflector(
    node: &patchbay::native::Node,
    bind: SocketAddr,
) -> anyhow::Result<()> {
    let sock = node
        .spawn(move |_| async move { std::net::UdpSocket::bind(bind) })?
        .await??;
    node.spawn(move |_| async move {
        sock.set_nonblocking(true)?;
        udp_reflector(tokio::net::UdpSocket::from_std(sock)?).await
    })?;
    Ok(())
}

/// Starts a TCP echo server on `node` and returns once it listens.
pub async fn start_tcp_echo(node: &patchbay::native::Node, bind: SocketAddr) -> anyhow::Result<()> {
    let l = node
        .spawn(move |_| async move { std::net::TcpListener::bind(bind) })?
        .await??;
    node.spawn(move |_| async move {
        l.set_nonblocking(true)?;
        tcp_echo(tokio::net::TcpListener::from_std(l)?).await
    })?;
    Ok(())
}

/// The UDP reflector loop, forever.
pub async fn udp_reflector(sock: tokio::net::UdpSocket) -> std::io::Result<()> {
    let mut buf = vec![0u8; 2048];
    loop {
        let (n, from) = sock.recv_from(&mut buf).await?;
        let mut reply = buf[..n].to_vec();
        reply.extend_from_slice(format!("|{from}").as_bytes());
        sock.send_to(&reply, from).await?;
    }
}

/// The TCP echo loop: accepts connections and echoes until EOF, forever.
pub async fn tcp_echo(l: tokio::net::TcpListener) -> std::io::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    loop {
        let (mut s, _) = l.accept().await?;
        tokio::task::spawn_local(async move {
            let mut buf = vec![0u8; 4096];
            loop {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if s.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                }
            }
        });
    }
}

/// Sends one datagram to `to` and waits up to `timeout` for the reply.
pub async fn udp_roundtrip(
    to: SocketAddr,
    payload: &[u8],
    timeout: Duration,
) -> std::io::Result<Vec<u8>> {
    let bind: SocketAddr = if to.is_ipv4() {
        "0.0.0.0:0".parse().unwrap()
    } else {
        "[::]:0".parse().unwrap()
    };
    let sock = tokio::net::UdpSocket::bind(bind).await?;
    sock.send_to(payload, to).await?;
    let mut buf = vec![0u8; 2048];
    let n = tokio::time::timeout(timeout, sock.recv(&mut buf))
        .await
        .map_err(|_| {
            std::io::Error::new(std::io::ErrorKind::TimedOut, format!("no reply from {to}"))
        })??;
    buf.truncate(n);
    Ok(buf)
}

/// Connects to `to`, writes `payload`, reads it back.
pub async fn tcp_roundtrip(
    to: SocketAddr,
    payload: &[u8],
    timeout: Duration,
) -> std::io::Result<Vec<u8>> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    tokio::time::timeout(timeout, async {
        let mut s = tokio::net::TcpStream::connect(to).await?;
        s.write_all(payload).await?;
        let mut buf = vec![0u8; payload.len()];
        s.read_exact(&mut buf).await?;
        Ok(buf)
    })
    .await
    .map_err(|_| {
        std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("tcp to {to} timed out"),
        )
    })?
}

/// The cgroup v2 path (`/lab-…`) in the `0::PATH` line of a `/proc/PID/cgroup` text.
pub fn cgroup_v2_path(proc_cgroup: &str) -> Option<String> {
    proc_cgroup
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(str::to_string)
}
