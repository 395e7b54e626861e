//! Shared helpers for patchbay's integration tests.
//!
//! Kernel-dependent tests call [`skip`] when a feature is missing: it prints
//! `PATCHBAY-SKIP: <test>: <reason>` so the kernel matrix and a reader of
//! the output see it; a skip never passes silently.

use std::net::SocketAddr;
use std::time::Duration;

pub mod upstream;

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

/// Prints the skip line for the current test.
pub fn skip(reason: &str) {
    let name = std::thread::current().name().unwrap_or("?").to_string();
    println!("PATCHBAY-SKIP: {name}: {reason}");
    eprintln!("PATCHBAY-SKIP: {name}: {reason}");
}

/// Whether we run as root; tests that need it skip otherwise.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc_geteuid() == 0 }
}

unsafe extern "C" {
    #[link_name = "geteuid"]
    fn libc_geteuid() -> u32;
}

/// Skips (returning true) when not root.
pub fn skip_unless_root() -> bool {
    if !is_root() {
        skip("needs root (CAP_SYS_ADMIN + CAP_NET_ADMIN) to create network namespaces");
        return true;
    }
    false
}

/// Starts a UDP reflector on `node` and returns once it is bound: it echoes
/// each datagram with the sender's address appended (`payload|ip:port`).
pub async fn start_udp_reflector(node: &patchbay::Node, bind: SocketAddr) -> anyhow::Result<()> {
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
pub async fn start_tcp_echo(node: &patchbay::Node, bind: SocketAddr) -> anyhow::Result<()> {
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

/// Why this kernel cannot run patchbay's eBPF timer engine, if it cannot:
/// no root, no cgroup v2, or no `bpf_get_netns_cookie` in `sock_ops`
/// (Linux 5.15+), which compression needs to scope itself to lab
/// namespaces. Probed for real (`patchbay::bpf::probe`), never guessed from
/// the version.
pub fn compression_unavailable() -> Option<String> {
    if !is_root() {
        return Some("needs root (CAP_BPF/CAP_SYS_ADMIN) to load eBPF programs".into());
    }
    if patchbay::doctor::cgroup2_mount().is_none() {
        return Some("no cgroup v2 mount: compression attaches eBPF sock_ops to a cgroup".into());
    }
    let p = patchbay::bpf::probe();
    if !p.netns_cookie_in_sock_ops {
        return Some(
            "this kernel has no bpf_get_netns_cookie in sock_ops (Linux 5.15+), so timer compression cannot be scoped to lab namespaces and is refused"
                .into(),
        );
    }
    if !p.engine {
        return Some(format!("the eBPF engine cannot load here: {:?}", p.errors));
    }
    None
}

/// Skips (returning true) when compression is unavailable, printing why.
pub fn skip_unless_compression() -> bool {
    match compression_unavailable() {
        Some(why) => {
            skip(&why);
            true
        }
        None => false,
    }
}

/// Whether `TCP_BPF_RTO_MIN` accepts an RTO minimum of `rto_min_us` on a kernel with this
/// `hz`: the kernel rounds up to jiffies (`usecs_to_jiffies`) and refuses fewer than two
/// (`TCP_TIMEOUT_MIN`). Pure.
pub fn rto_min_accepted(hz: u32, rto_min_us: u32) -> bool {
    (u64::from(rto_min_us) * u64::from(hz)).div_ceil(1_000_000) >= 2
}

/// Why this kernel cannot lower the RTO minimum to `rto_min_us`, if it cannot: its jiffy is
/// too coarse (two jiffies are longer). HZ is measured (`patchbay::compress::probe_hz`),
/// not guessed. This happens in User-Mode Linux, whose HZ is fixed at 100 (20 ms floor); the
/// Debian kernels (HZ=250) accept 8 ms.
pub fn rto_min_unavailable(rto_min_us: u32) -> anyhow::Result<Option<String>> {
    let (hz, _) = patchbay::compress::probe_hz()?;
    if rto_min_accepted(hz, rto_min_us) {
        return Ok(None);
    }
    let uml = if std::env::var_os("PATCHBAY_VT").is_some() {
        " (fixed in User-Mode Linux)"
    } else {
        ""
    };
    Ok(Some(format!(
        "HZ={hz}{uml}: TCP_BPF_RTO_MIN refuses less than 2 jiffies ({} ms), so an RTO minimum of {} ms cannot be set",
        2000 / hz.max(1),
        f64::from(rto_min_us) / 1000.0
    )))
}

/// The cgroup v2 path (`/lab-…`) in the `0::PATH` line of a `/proc/PID/cgroup` text.
pub fn cgroup_v2_path(proc_cgroup: &str) -> Option<String> {
    proc_cgroup
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::rto_min_accepted;

    #[test]
    fn rto_min_needs_two_jiffies() {
        assert!(!rto_min_accepted(100, 10_000), "1 jiffy at HZ=100");
        assert!(rto_min_accepted(100, 20_000));
        assert!(rto_min_accepted(250, 10_000), "rounds up to 3 jiffies");
        assert!(rto_min_accepted(250, 8_000));
        assert!(rto_min_accepted(250, 4_001), "rounds up to 2 jiffies");
        assert!(!rto_min_accepted(250, 4_000));
        assert!(rto_min_accepted(1000, 2_000));
        assert!(!rto_min_accepted(1000, 1_000));
    }
}
