//! TCP traffic between lab devices for link tests: a two-device lab, sinks and sources, and
//! goodput in bit/s measured inside the sending or receiving device's namespace.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use patchbay::{native::Device, native::Lab, native::LabOpts};

/// A lab labelled `label` with one router `r` and two devices on its LAN, `c` and `s`.
pub async fn device_pair(label: &str) -> anyhow::Result<(Lab, Device, Device)> {
    let lab = Lab::with_opts(LabOpts::default().label(label)).await?;
    let r = lab.add_router("r").build().await?;
    let c = lab.add_device("c").iface("eth0", &r).build().await?;
    let s = lab.add_device("s").iface("eth0", &r).build().await?;
    Ok((lab, c, s))
}

/// What a TCP server started by [`start_tcp_server`] does with each connection.
#[derive(Debug, Clone, Copy)]
pub enum Serve {
    /// Reads to EOF, then answers one byte (the acknowledgement [`upload`] waits for).
    Sink,
    /// Sends this many bytes and closes (what [`download`] reads).
    Source(usize),
}

/// Starts a TCP server on `node`'s first address at `port`, serving connections concurrently
/// as `serve` says, and returns its address once it listens.
pub async fn start_tcp_server(
    node: &Device,
    port: u16,
    serve: Serve,
) -> anyhow::Result<SocketAddr> {
    let ip = node
        .ip()
        .ok_or_else(|| anyhow::anyhow!("{} has no IPv4 address", node.name()))?;
    let addr = SocketAddr::from((ip, port));
    let l = node
        .spawn(move |_| async move { std::net::TcpListener::bind(addr) })?
        .await??;
    node.spawn(move |_| async move {
        l.set_nonblocking(true)?;
        let l = tokio::net::TcpListener::from_std(l)?;
        loop {
            let (c, _) = l.accept().await?;
            tokio::task::spawn_local(serve_one(c, serve));
        }
        #[allow(unreachable_code)]
        Ok::<(), std::io::Error>(())
    })?;
    Ok(addr)
}

async fn serve_one(mut c: tokio::net::TcpStream, serve: Serve) -> std::io::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    match serve {
        Serve::Sink => {
            let mut buf = vec![0u8; 65536];
            while c.read(&mut buf).await? > 0 {}
            c.write_all(b"k").await
        }
        Serve::Source(n) => {
            c.write_all(&vec![1u8; n]).await?;
            c.shutdown().await
        }
    }
}

/// Uploads `bytes` from `c` to a [`Serve::Sink`] at `to` and waits for its acknowledgement;
/// `Some(seconds)` when that comes within `limit`, `None` when the upload stalls.
pub async fn upload(
    c: &Device,
    to: SocketAddr,
    bytes: usize,
    limit: Duration,
) -> anyhow::Result<Option<f64>> {
    Ok(c.spawn(move |_| async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let t0 = Instant::now();
        let r = tokio::time::timeout(limit, async {
            let mut s = tokio::net::TcpStream::connect(to).await?;
            s.write_all(&vec![7u8; bytes]).await?;
            s.shutdown().await?;
            let mut k = [0u8; 1];
            s.read_exact(&mut k).await?;
            Ok::<(), std::io::Error>(())
        })
        .await;
        matches!(r, Ok(Ok(()))).then(|| t0.elapsed().as_secs_f64())
    })?
    .await?)
}

/// Upload goodput from `c` to a [`Serve::Sink`] at `to`, in bit/s; an error when the upload
/// does not finish within 60 s.
pub async fn goodput_up(c: &Device, to: SocketAddr, bytes: usize) -> anyhow::Result<f64> {
    let secs = upload(c, to, bytes, Duration::from_secs(60))
        .await?
        .ok_or_else(|| anyhow::anyhow!("uploading {bytes} bytes to {to} took over 60 s"))?;
    Ok(bytes as f64 * 8.0 / secs)
}

/// Download goodput to `c` from a [`Serve::Source`] at `from`, in bit/s.
pub async fn goodput_down(c: &Device, from: SocketAddr) -> anyhow::Result<f64> {
    let (n, secs) = c
        .spawn(move |_| async move {
            use tokio::io::AsyncReadExt;
            let mut s = tokio::net::TcpStream::connect(from).await?;
            let t0 = Instant::now();
            let mut buf = Vec::new();
            s.read_to_end(&mut buf).await?;
            Ok::<(usize, f64), std::io::Error>((buf.len(), t0.elapsed().as_secs_f64()))
        })?
        .await??;
    Ok(n as f64 * 8.0 / secs)
}
