//! Fault injection with nftables drops (every kernel): blackholes and
//! partitions stall TCP silently, and traffic recovers after healing.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use patchbay::{native::Device, native::Direction, native::Lab, native::LabOpts};
use patchbay_tests::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn trio(label: &str) -> anyhow::Result<(Lab, Device, Device, Device)> {
    let lab = Lab::with_opts(LabOpts::default().label(label)).await?;
    let r = lab.add_router("r").build().await?;
    let other = lab.add_router("other").build().await?;
    let c = lab.add_device("c").iface("eth0", &r).build().await?;
    let s = lab.add_device("s").iface("eth0", &other).build().await?;
    let d = lab.add_device("d").iface("eth0", &r).build().await?;
    let sip = s.ip().unwrap();
    start_tcp_echo(&s, SocketAddr::from((sip, 7001))).await?;
    // Fresh links may lose their first packets: warm up every path.
    for n in [&c, &d] {
        n.spawn(move |_| async move {
            for _ in 0..5 {
                if tcp_roundtrip((sip, 7001).into(), b"w", Duration::from_millis(1500))
                    .await
                    .is_ok()
                {
                    return Ok(());
                }
            }
            Err(std::io::Error::other("no connectivity"))
        })?
        .await??;
    }
    Ok((lab, c, s, d))
}

/// Echo exchanges over one long-lived TCP connection, driven by messages:
/// each request sends a byte and waits up to `wait` for the echo, reporting
/// whether it came (and how long it took).
struct Conn {
    tx: tokio::sync::mpsc::UnboundedSender<Duration>,
    rx: tokio::sync::mpsc::UnboundedReceiver<std::io::Result<Option<Duration>>>,
}

impl Conn {
    async fn open(c: &Device, to: SocketAddr) -> anyhow::Result<Conn> {
        let (tx, mut req) = tokio::sync::mpsc::unbounded_channel::<Duration>();
        let (res, rx) = tokio::sync::mpsc::unbounded_channel();
        c.spawn(move |_| async move {
            let mut s = match tokio::net::TcpStream::connect(to).await {
                Ok(s) => s,
                Err(e) => return drop(res.send(Err(e))),
            };
            let mut pending = 0usize;
            while let Some(wait) = req.recv().await {
                let t0 = Instant::now();
                // A write error (e.g. EPERM from a local drop) is reported.
                if let Err(e) = s.write_all(b"x").await {
                    let _ = res.send(Err(e));
                    return;
                }
                pending += 1;
                let mut buf = vec![0u8; pending];
                let r = match tokio::time::timeout(wait, s.read_exact(&mut buf)).await {
                    Err(_) => Ok(None),
                    Ok(Ok(_)) => {
                        pending = 0;
                        Ok(Some(t0.elapsed()))
                    }
                    Ok(Err(e)) => Err(e),
                };
                if res.send(r).is_err() {
                    return;
                }
            }
        })?;
        Ok(Conn { tx, rx })
    }

    async fn echo(&mut self, wait: Duration) -> anyhow::Result<Option<Duration>> {
        self.tx.send(wait)?;
        Ok(self
            .rx
            .recv()
            .await
            .ok_or_else(|| anyhow::anyhow!("connection task ended"))??)
    }
}

#[tokio::test]
async fn timing_blackhole_stalls_tcp_silently_then_heals() -> anyhow::Result<()> {
    require_root!();
    for dir in [Direction::Out, Direction::In, Direction::Both] {
        let (_lab, c, s, _d) = trio("bh").await?;
        let to = SocketAddr::from((s.ip().unwrap(), 7001));
        let mut conn = Conn::open(&c, to).await?;
        assert!(
            conn.echo(Duration::from_secs(2)).await?.is_some(),
            "works before"
        );
        let guard = c.blackhole("eth0", dir).await?;
        // Silence: no echo, and no error on the sending side either.
        let stalled = conn.echo(Duration::from_millis(1500)).await?;
        assert!(
            stalled.is_none(),
            "{dir:?}: traffic must stall, got {stalled:?}"
        );
        guard.heal().await?;
        let t0 = Instant::now();
        let back = conn.echo(Duration::from_secs(10)).await?;
        println!(
            "blackhole {dir:?}: stalled 1.5 s, recovered {:?} after heal",
            t0.elapsed()
        );
        assert!(back.is_some(), "{dir:?}: traffic recovers after heal");
    }
    Ok(())
}

#[tokio::test]
async fn dropping_the_guard_heals() -> anyhow::Result<()> {
    require_root!();
    let (_lab, c, s, _d) = trio("bh-drop").await?;
    let sip = s.ip().unwrap();
    let g = c.blackhole("eth0", Direction::Both).await?;
    assert!(g.describe().contains("blackhole c.eth0"));
    let r = c
        .spawn(move |_| async move {
            tcp_roundtrip((sip, 7001).into(), b"a", Duration::from_millis(800)).await
        })?
        .await?;
    assert!(r.is_err(), "blackholed");
    drop(g);
    let r = c
        .spawn(move |_| async move {
            tcp_roundtrip((sip, 7001).into(), b"a", Duration::from_secs(5)).await
        })?
        .await?;
    assert!(r.is_ok(), "healed by drop: {r:?}");
    Ok(())
}

#[tokio::test]
async fn timing_partition_cuts_only_the_pair_then_heals() -> anyhow::Result<()> {
    require_root!();
    let (lab, c, s, d) = trio("part").await?;
    let to = SocketAddr::from((s.ip().unwrap(), 7001));
    let mut conn = Conn::open(&c, to).await?;
    assert!(conn.echo(Duration::from_secs(2)).await?.is_some());
    let guard = lab.partition(&c, &s).await?;
    assert!(
        conn.echo(Duration::from_millis(1500)).await?.is_none(),
        "c and s are cut off"
    );
    // A bystander on c's LAN still reaches s.
    let sip = s.ip().unwrap();
    let r = d
        .spawn(move |_| async move {
            tcp_roundtrip((sip, 7001).into(), b"d", Duration::from_secs(2)).await
        })?
        .await?;
    assert!(r.is_ok(), "the partition leaves other nodes alone: {r:?}");
    guard.heal().await?;
    let t0 = Instant::now();
    assert!(
        conn.echo(Duration::from_secs(10)).await?.is_some(),
        "recovers after heal"
    );
    println!("partition: recovered {:?} after heal", t0.elapsed());
    let e = lab.partition(&c, &c).await.unwrap_err().to_string();
    assert!(e.contains("from itself"), "{e}");
    Ok(())
}
