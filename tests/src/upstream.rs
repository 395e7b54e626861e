//! Helpers for our versions of upstream patchbay 0.7's own tests (`tests/tests/upstream_*.rs`),
//! written against the compat API (`upstream::...`, the `patchbay-compat` package).
//!
//! Everything here is real traffic from inside a lab node: a helper takes a handle that
//! implements [`InNode`] (upstream's `Device` or `Router`) and runs its socket code as a task
//! on that node's worker, so the sockets live in the node's network namespace.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use ::upstream::{Device, Router};
use anyhow::{Context, Result, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream, UdpSocket};

/// What a reflector (upstream's and ours) writes before the address it saw.
const OBSERVED: &str = "OBSERVED ";

/// A lab node that code can run in: upstream's [`Device`] or [`Router`].
pub trait InNode {
    /// Runs `fut` as a task on the node's worker (inside its namespace) and returns its
    /// output; a panic in the task is an error.
    fn run<Fut, T>(&self, fut: Fut) -> impl Future<Output = Result<T>>
    where
        Fut: Future<Output = Result<T>> + Send + 'static,
        T: Send + 'static;

    /// Spawns a process inside the node (in the lab's cgroup).
    fn command(&self, cmd: std::process::Command) -> Result<std::process::Child>;
}

async fn joined<T>(h: Result<tokio::task::JoinHandle<Result<T>>>) -> Result<T> {
    h?.await.context("the task on the lab node panicked")?
}

impl InNode for Device {
    fn run<Fut, T>(&self, fut: Fut) -> impl Future<Output = Result<T>>
    where
        Fut: Future<Output = Result<T>> + Send + 'static,
        T: Send + 'static,
    {
        joined(self.spawn(move |_| fut))
    }

    fn command(&self, cmd: std::process::Command) -> Result<std::process::Child> {
        self.spawn_command_sync(cmd)
    }
}

impl InNode for Router {
    fn run<Fut, T>(&self, fut: Fut) -> impl Future<Output = Result<T>>
    where
        Fut: Future<Output = Result<T>> + Send + 'static,
        T: Send + 'static,
    {
        joined(self.spawn(move |_| fut))
    }

    fn command(&self, cmd: std::process::Command) -> Result<std::process::Child> {
        self.spawn_command_sync(cmd)
    }
}

/// The unspecified address of `to`'s family, port `port`.
pub fn any_of(to: SocketAddr, port: u16) -> SocketAddr {
    let ip: IpAddr = if to.is_ipv4() {
        Ipv4Addr::UNSPECIFIED.into()
    } else {
        Ipv6Addr::UNSPECIFIED.into()
    };
    SocketAddr::new(ip, port)
}

/// The address in a reflector's reply (`OBSERVED ip:port`).
pub fn parse_observed(reply: &[u8]) -> Result<SocketAddr> {
    let text = std::str::from_utf8(reply).context("a reflector reply that is not UTF-8")?;
    let addr = text
        .strip_prefix(OBSERVED)
        .with_context(|| format!("not a reflector reply: {text:?}"))?;
    addr.parse()
        .with_context(|| format!("a bad address in {text:?}"))
}

/// The endpoint `reflector` sees for `sock`: up to three tries, 500 ms each.
pub async fn observed_on(sock: &UdpSocket, reflector: SocketAddr) -> Result<SocketAddr> {
    let mut buf = [0u8; 256];
    for _ in 0..3 {
        sock.send_to(b"probe", reflector).await?;
        let wait = Duration::from_millis(500);
        if let Ok(r) = tokio::time::timeout(wait, sock.recv_from(&mut buf)).await {
            let (n, from) = r?;
            if from == reflector {
                return parse_observed(&buf[..n]);
            }
        }
    }
    bail!("no answer from the reflector {reflector} after 3 tries")
}

/// The endpoint `reflector` sees for a UDP socket bound to `bind` in `node`.
pub async fn udp_observed(
    node: &impl InNode,
    reflector: SocketAddr,
    bind: SocketAddr,
) -> Result<SocketAddr> {
    node.run(async move {
        let sock = UdpSocket::bind(bind)
            .await
            .with_context(|| format!("binding {bind}"))?;
        observed_on(&sock, reflector).await
    })
    .await
}

/// Opens a NAT mapping from `node`: a UDP socket bound to `bind` asks `reflector` for its
/// public endpoint, then keeps answering every datagram that reaches it with
/// `OBSERVED <sender>` (until the lab ends). Returns the public endpoint, so that a test
/// can check who may send to it (the NAT's filtering, hairpinning). The reflector itself is
/// not answered.
pub async fn open_mapping(
    node: &impl InNode,
    reflector: SocketAddr,
    bind: SocketAddr,
) -> Result<SocketAddr> {
    node.run(async move {
        let sock = UdpSocket::bind(bind)
            .await
            .with_context(|| format!("binding {bind}"))?;
        let public = observed_on(&sock, reflector).await?;
        tokio::spawn(async move {
            let mut buf = [0u8; 256];
            while let Ok((_, from)) = sock.recv_from(&mut buf).await {
                // A late answer from the reflector is not a sender to answer (the two would
                // answer each other forever).
                if from == reflector {
                    continue;
                }
                let answer = format!("{OBSERVED}{from}");
                if let Err(e) = sock.send_to(answer.as_bytes(), from).await {
                    eprintln!("mapping answerer: to {from}: {e}");
                }
            }
        });
        Ok(public)
    })
    .await
}

/// Sends one datagram from a fresh socket of `node` to `to` and returns the reply, or
/// `None` when none comes within `wait` (the datagram or its reply was dropped).
pub async fn udp_reply(
    node: &impl InNode,
    to: SocketAddr,
    wait: Duration,
) -> Result<Option<String>> {
    node.run(async move {
        let sock = UdpSocket::bind(any_of(to, 0)).await?;
        sock.send_to(b"hello", to).await?;
        let mut buf = [0u8; 256];
        match tokio::time::timeout(wait, sock.recv_from(&mut buf)).await {
            Ok(r) => {
                let (n, _) = r?;
                Ok(Some(String::from_utf8_lossy(&buf[..n]).into_owned()))
            }
            Err(_) => Ok(None),
        }
    })
    .await
}

/// Starts a TCP server on `bind` in `node` that runs `handle` on every connection (each in
/// its own task); returns once it listens.
async fn serve_tcp<H, F>(node: &impl InNode, bind: SocketAddr, handle: H) -> Result<()>
where
    H: Fn(TcpStream, SocketAddr) -> F + Send + 'static,
    F: Future<Output = ()> + Send + 'static,
{
    let l = node
        .run(async move { Ok(TcpListener::bind(bind).await?) })
        .await?;
    node.run(async move {
        tokio::spawn(async move {
            while let Ok((s, peer)) = l.accept().await {
                tokio::spawn(handle(s, peer));
            }
        });
        Ok(())
    })
    .await
}

/// Starts a TCP reflector on `bind` in `node`: every connection gets `OBSERVED <peer>` and
/// is closed (upstream's TCP probe server). Returns once it listens.
pub async fn start_tcp_reflector(node: &impl InNode, bind: SocketAddr) -> Result<()> {
    serve_tcp(node, bind, |mut s, peer| async move {
        // A client that went away is its own business.
        if let Err(e) = s.write_all(format!("{OBSERVED}{peer}").as_bytes()).await {
            eprintln!("tcp reflector: writing to {peer}: {e}");
        }
    })
    .await
}

/// The endpoint a TCP reflector at `to` sees for a connection from `bind` in `node`.
pub async fn tcp_observed(
    node: &impl InNode,
    to: SocketAddr,
    bind: SocketAddr,
) -> Result<SocketAddr> {
    node.run(async move {
        let s = if to.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        s.bind(bind)?;
        let wait = Duration::from_secs(2);
        let mut c = tokio::time::timeout(wait, s.connect(to))
            .await
            .with_context(|| format!("connecting to {to}: timed out"))??;
        let mut buf = Vec::new();
        tokio::time::timeout(wait, c.read_to_end(&mut buf))
            .await
            .context("reading the TCP reflector's reply: timed out")??;
        parse_observed(&buf)
    })
    .await
}

/// Starts a TCP echo server on `bind` in `node`; returns once it listens.
pub async fn start_tcp_echo(node: &impl InNode, bind: SocketAddr) -> Result<()> {
    serve_tcp(node, bind, |mut s, _| async move {
        let mut buf = [0u8; 4096];
        while let Ok(n @ 1..) = s.read(&mut buf).await {
            if s.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
    })
    .await
}

/// Connects from `node` to the echo server at `to`, sends a message and reads it back,
/// all within `wait`.
pub async fn tcp_echo(node: &impl InNode, to: SocketAddr, wait: Duration) -> Result<()> {
    node.run(async move {
        tokio::time::timeout(wait, async {
            let mut s = TcpStream::connect(to).await?;
            s.write_all(b"echo me").await?;
            let mut buf = [0u8; 7];
            s.read_exact(&mut buf).await?;
            anyhow::ensure!(&buf == b"echo me", "the echo came back as {buf:?}");
            Ok(())
        })
        .await
        .with_context(|| format!("TCP echo with {to}: no answer within {wait:?}"))?
    })
    .await
}

/// Whether one iputils `ping` from `node` to `target` (an address, or `fe80::…%eth0`) gets an
/// answer within a second.
pub fn ping(node: &impl InNode, target: impl std::fmt::Display) -> Result<bool> {
    let mut cmd = std::process::Command::new("ping");
    cmd.args(["-c", "1", "-W", "1", &target.to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    Ok(node
        .command(cmd)?
        .wait()
        .context("waiting for ping")?
        .success())
}

/// The median UDP round trip from `node` to the reflector at `to` over `n` probes, after one
/// unmeasured probe that resolves neighbours and warms the path. Each probe goes from a fresh
/// socket, so a late answer to an earlier one cannot be taken for its own (the reflector's
/// answer does not echo the probe). A probe unanswered within 3 s counts as lost; more than
/// half lost is an error.
pub async fn udp_rtt(node: &impl InNode, to: SocketAddr, n: usize) -> Result<Duration> {
    node.run(async move {
        let wait = Duration::from_secs(3);
        let mut buf = [0u8; 256];
        let mut rtts = Vec::with_capacity(n);
        for i in 0..=n {
            let sock = UdpSocket::bind(any_of(to, 0)).await?;
            let t0 = Instant::now();
            sock.send_to(b"rtt", to).await?;
            if let Ok(r) = tokio::time::timeout(wait, sock.recv_from(&mut buf)).await {
                r?;
                // Probe 0 warms the path (neighbour resolution, conntrack).
                if i > 0 {
                    rtts.push(t0.elapsed());
                }
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        anyhow::ensure!(
            2 * rtts.len() > n,
            "{} of {n} probes to {to} answered",
            rtts.len()
        );
        rtts.sort();
        Ok(rtts[rtts.len() / 2])
    })
    .await
}

/// Sends `n` datagrams from `node` to the reflector at `to`, `gap` apart, and counts the
/// replies that arrive until `drain` after the last send.
pub async fn udp_echoes(
    node: &impl InNode,
    to: SocketAddr,
    n: usize,
    gap: Duration,
    drain: Duration,
) -> Result<usize> {
    node.run(async move {
        let sock = UdpSocket::bind(any_of(to, 0)).await?;
        let mut buf = [0u8; 256];
        let mut got = 0;
        for i in 0..n {
            sock.send_to(format!("n {i}").as_bytes(), to).await?;
            let until = tokio::time::Instant::now() + gap;
            while let Ok(r) = tokio::time::timeout_at(until, sock.recv_from(&mut buf)).await {
                r?;
                got += 1;
            }
        }
        while let Ok(r) = tokio::time::timeout(drain, sock.recv_from(&mut buf)).await {
            r?;
            got += 1;
        }
        Ok(got)
    })
    .await
}

/// Sends `n` datagrams of `size` bytes from `node` to the reflector at `to`, `gap` apart,
/// and returns how many were answered and the rate in kbit/s at which the sent datagrams got
/// through (answers arrive as their datagrams do: `size` bytes per answer, from the first
/// answer to the last), waiting up to `drain` after the last send.
pub async fn udp_paced_rate(
    node: &impl InNode,
    to: SocketAddr,
    n: usize,
    size: usize,
    gap: Duration,
    drain: Duration,
) -> Result<(usize, f64)> {
    node.run(async move {
        let sock = UdpSocket::bind(any_of(to, 0)).await?;
        let payload = vec![0x5a; size];
        let mut buf = [0u8; 256];
        let mut arrivals = vec![];
        let mut next = tokio::time::Instant::now();
        for _ in 0..n {
            sock.send_to(&payload, to).await?;
            next += gap;
            while let Ok(r) = tokio::time::timeout_at(next, sock.recv_from(&mut buf)).await {
                r?;
                arrivals.push(Instant::now());
            }
        }
        while let Ok(r) = tokio::time::timeout(drain, sock.recv_from(&mut buf)).await {
            r?;
            arrivals.push(Instant::now());
        }
        let (Some(first), Some(last)) = (arrivals.first(), arrivals.last()) else {
            bail!("no datagram of {n} got through to {to}");
        };
        let span = last.duration_since(*first).as_secs_f64().max(1e-6);
        let kbit = (arrivals.len() - 1) as f64 * size as f64 * 8.0 / 1000.0 / span;
        Ok((arrivals.len(), kbit))
    })
    .await
}

/// Starts a TCP sink on `bind` in `node`: it reads each connection to its end, then answers
/// one byte (so the sender's clock stops when everything has arrived).
pub async fn start_tcp_sink(node: &impl InNode, bind: SocketAddr) -> Result<()> {
    serve_tcp(node, bind, |mut s, _| async move {
        let mut buf = vec![0u8; 64 * 1024];
        while let Ok(1..) = s.read(&mut buf).await {}
        // The sender may have given up; nothing to tell it then.
        if let Err(e) = s.write_all(b"k").await {
            eprintln!("tcp sink: {e}");
        }
    })
    .await
}

/// Sends `bytes` from `node` to the sink at `to` and returns the goodput in kbit/s (from
/// the connect to the sink's acknowledgement of the last byte).
pub async fn tcp_goodput_kbit(node: &impl InNode, to: SocketAddr, bytes: usize) -> Result<f64> {
    node.run(async move {
        let t0 = Instant::now();
        let mut s = TcpStream::connect(to).await?;
        s.write_all(&vec![0x5a; bytes]).await?;
        s.shutdown().await?;
        let mut k = [0u8; 1];
        s.read_exact(&mut k).await.context("the sink's answer")?;
        Ok(bytes as f64 * 8.0 / 1000.0 / t0.elapsed().as_secs_f64())
    })
    .await
}

/// One side of a hole punch: learn the own endpoint from `reflector`, publish it, take the
/// peer's, wait `late`, then send to the peer every 100 ms for up to `give_up`. True once
/// the peer was heard (a few more sends follow, so the peer hears this side too).
async fn punch_side(
    reflector: SocketAddr,
    mine: tokio::sync::oneshot::Sender<SocketAddr>,
    theirs: tokio::sync::oneshot::Receiver<SocketAddr>,
    late: Duration,
    give_up: Duration,
) -> Result<bool> {
    let sock = UdpSocket::bind(any_of(reflector, 0)).await?;
    let me = observed_on(&sock, reflector).await?;
    mine.send(me).ok().context("the other side is gone")?;
    let peer = theirs.await.context("the other side gave no endpoint")?;
    tokio::time::sleep(late).await;
    let deadline = tokio::time::Instant::now() + give_up;
    let mut buf = [0u8; 64];
    while tokio::time::Instant::now() < deadline {
        sock.send_to(b"punch", peer).await?;
        let tick = tokio::time::Instant::now() + Duration::from_millis(100);
        while let Ok(r) = tokio::time::timeout_at(tick, sock.recv_from(&mut buf)).await {
            let (_, from) = r?;
            if from == peer {
                for _ in 0..5 {
                    sock.send_to(b"ack", peer).await?;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                return Ok(true);
            }
        }
    }
    Ok(false)
}

/// UDP hole punching between `a` and `b` as an application does it: each learns its public
/// endpoint from the reflector, they swap endpoints through the test (the signalling
/// channel), then both send to each other; `b` starts `b_late` after `a`. Returns whether
/// `a` heard `b` and whether `b` heard `a` (each gives up after `give_up`).
pub async fn hole_punch(
    a: &Device,
    b: &Device,
    reflector: SocketAddr,
    b_late: Duration,
    give_up: Duration,
) -> Result<(bool, bool)> {
    let (a_tx, a_rx) = tokio::sync::oneshot::channel();
    let (b_tx, b_rx) = tokio::sync::oneshot::channel();
    let ta = a.run(punch_side(reflector, a_tx, b_rx, Duration::ZERO, give_up));
    let tb = b.run(punch_side(reflector, b_tx, a_rx, b_late, give_up));
    let (ha, hb) = tokio::try_join!(ta, tb)?;
    Ok((ha, hb))
}

/// Why `e` means "this kernel lacks `feature`" (a part of the kernel config name, e.g.
/// `NETEM`, `DUMMY`), if it does: the core's typed error, carried through the compat layer's
/// `anyhow::Error`.
pub fn kernel_lacks(e: &anyhow::Error, feature: &str) -> Option<String> {
    match e.downcast_ref::<patchbay::Error>() {
        Some(patchbay::Error::KernelFeature { feature: f, .. }) if f.contains(feature) => Some(
            format!("kernel has no {f}; runs in the UML guest (virtual-time partition)"),
        ),
        _ => None,
    }
}

/// `Ok(Some(_))` when `r` succeeded, `Ok(None)` after printing PATCHBAY-SKIP when it failed
/// because the kernel lacks `feature` (see [`kernel_lacks`]), the error otherwise.
pub fn or_skip_without<T>(r: Result<T>, feature: &str) -> Result<Option<T>> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(e) => match kernel_lacks(&e, feature) {
            Some(why) => {
                crate::skip(&why);
                Ok(None)
            }
            None => Err(e),
        },
    }
}

/// [`or_skip_without`] netem: for applying (or building with) delay, jitter or loss.
pub fn netem_or_skip<T>(r: Result<T>) -> Result<Option<T>> {
    or_skip_without(r, "NETEM")
}
