//! Link conditions per direction (tbf runs everywhere) and netem
//! corruption with upstream's preset names (skipped with a reason without
//! netem; the kernel matrix runs them).

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use patchbay::{Device, Direction, Error, Lab, LabOpts, LinkCondition};
use patchbay_tests::*;

async fn pair(label: &str) -> anyhow::Result<(Lab, Device, Device)> {
    let lab = Lab::with_opts(LabOpts::default().label(label)).await?;
    let r = lab.add_router("r").build().await?;
    let c = lab.add_device("c").iface("eth0", &r).build().await?;
    let s = lab.add_device("s").iface("eth0", &r).build().await?;
    Ok((lab, c, s))
}

/// A sink on `node`: reads each connection to EOF and answers one byte;
/// with `source`, it instead sends `source` bytes and closes.
async fn start_server(
    node: &Device,
    port: u16,
    source: Option<usize>,
) -> anyhow::Result<SocketAddr> {
    let addr = SocketAddr::from((node.ip().unwrap(), port));
    let l = node
        .spawn(move |_| async move { std::net::TcpListener::bind(addr) })?
        .await??;
    node.spawn(move |_| async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        l.set_nonblocking(true)?;
        let l = tokio::net::TcpListener::from_std(l)?;
        loop {
            let (mut c, _) = l.accept().await?;
            match source {
                Some(n) => {
                    c.write_all(&vec![1u8; n]).await?;
                    c.shutdown().await?;
                }
                None => {
                    let mut buf = vec![0u8; 65536];
                    while c.read(&mut buf).await? > 0 {}
                    c.write_all(b"k").await?;
                }
            }
        }
        #[allow(unreachable_code)]
        Ok::<(), std::io::Error>(())
    })?;
    Ok(addr)
}

/// Upload goodput from `c` to a sink, in bit/s.
async fn up(c: &Device, to: SocketAddr, bytes: usize) -> anyhow::Result<f64> {
    let secs = c
        .spawn(move |_| async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut s = tokio::net::TcpStream::connect(to).await?;
            let t0 = Instant::now();
            s.write_all(&vec![7u8; bytes]).await?;
            s.shutdown().await?;
            let mut k = [0u8; 1];
            s.read_exact(&mut k).await?;
            Ok::<f64, std::io::Error>(t0.elapsed().as_secs_f64())
        })?
        .await??;
    Ok(bytes as f64 * 8.0 / secs)
}

/// Download goodput to `c` from a source, in bit/s.
async fn down(c: &Device, from: SocketAddr) -> anyhow::Result<f64> {
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

#[tokio::test]
async fn timing_rate_limit_per_direction() -> anyhow::Result<()> {
    if skip_unless_root() {
        return Ok(());
    }
    let (_lab, c, s) = pair("shape-dir").await?;
    let sink = start_server(&s, 9300, None).await?;
    let source = start_server(&s, 9301, Some(1_500_000)).await?;
    up(&c, sink, 100_000).await?; // warm-up
    let ten = LinkCondition::default().rate(10_000_000);

    c.set_link_condition_dir("eth0", ten.clone(), Direction::Out)
        .await?;
    let (u_out, d_out) = (up(&c, sink, 1_500_000).await?, down(&c, source).await?);
    c.set_link_condition_dir("eth0", LinkCondition::default(), Direction::Out)
        .await?;
    c.set_link_condition_dir("eth0", ten, Direction::In).await?;
    let (u_in, d_in) = (up(&c, sink, 1_500_000).await?, down(&c, source).await?);
    println!(
        "egress 10mbit: up {:.2} / down {:.0} Mbit/s; ingress 10mbit: up {:.0} / down {:.2} Mbit/s",
        u_out / 1e6,
        d_out / 1e6,
        u_in / 1e6,
        d_in / 1e6
    );
    assert!(
        (0.7..1.1).contains(&(u_out / 10e6)),
        "egress limits uploads"
    );
    assert!(
        (0.7..1.1).contains(&(d_in / 10e6)),
        "ingress limits downloads"
    );
    assert!(d_out > 3.0 * u_out, "egress leaves downloads alone");
    assert!(u_in > 3.0 * d_in, "ingress leaves uploads alone");
    Ok(())
}

#[tokio::test]
async fn timing_netem_corruption_one_way_and_upstream_presets() -> anyhow::Result<()> {
    if skip_unless_root() {
        return Ok(());
    }
    let (_lab, c, s) = pair("shape-corrupt").await?;
    start_udp_reflector(&s, SocketAddr::from(([0, 0, 0, 0], 7000))).await?;
    let cond = LinkCondition::default().corrupt(30.0);
    match c.set_link_condition_dir("eth0", cond, Direction::Out).await {
        Ok(()) => {}
        Err(Error::KernelFeature { feature, .. }) => {
            skip(&format!(
                "corruption needs netem, which this kernel lacks ({feature})"
            ));
            return Ok(());
        }
        Err(e) => return Err(e.into()),
    }
    let sock = c.run_sync(|| UdpSocket::bind("0.0.0.0:0"))??;
    sock.set_read_timeout(Some(Duration::from_millis(200)))?;
    let to = SocketAddr::from((s.ip().unwrap(), 7000));
    let mut got = 0;
    let mut buf = [0u8; 2048];
    let n = 300;
    for _ in 0..n {
        sock.send_to(&[0x55u8; 1000], to)?;
        if sock.recv_from(&mut buf).is_ok() {
            got += 1;
        }
    }
    let lost = 1.0 - f64::from(got) / f64::from(n);
    println!(
        "corrupt 30% on c's egress: {got}/{n} echoes, lost {:.1}%",
        lost * 100.0
    );
    assert!(
        (0.18..0.42).contains(&lost),
        "about 30% corrupted and dropped"
    );
    // Upstream's names apply as presets.
    for name in ["wifi-bad", "mobile-4g", "mobile-3g", "satellite-geo"] {
        c.set_link_condition_dir("eth0", LinkCondition::preset(name)?, Direction::Out)
            .await?;
    }
    Ok(())
}
