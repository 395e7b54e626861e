//! Link conditions per direction (tbf runs everywhere) and netem
//! corruption with upstream's preset names (skipped with a reason without
//! netem; the kernel matrix runs them).

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use patchbay::{Error, native::Direction, native::LinkCondition};
use patchbay_tests::traffic::*;
use patchbay_tests::*;

#[tokio::test]
async fn timing_rate_limit_per_direction() -> anyhow::Result<()> {
    require_root!();
    let (_lab, c, s) = device_pair("shape-dir").await?;
    let sink = start_tcp_server(&s, 9300, Serve::Sink).await?;
    let source = start_tcp_server(&s, 9301, Serve::Source(1_500_000)).await?;
    goodput_up(&c, sink, 100_000).await?; // warm-up
    let ten = LinkCondition::default().rate(10_000_000);

    c.set_link_condition_dir("eth0", ten.clone(), Direction::Out)
        .await?;
    let (u_out, d_out) = (
        goodput_up(&c, sink, 1_500_000).await?,
        goodput_down(&c, source).await?,
    );
    c.set_link_condition_dir("eth0", LinkCondition::default(), Direction::Out)
        .await?;
    c.set_link_condition_dir("eth0", ten, Direction::In).await?;
    let (u_in, d_in) = (
        goodput_up(&c, sink, 1_500_000).await?,
        goodput_down(&c, source).await?,
    );
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
    require_root!();
    let (_lab, c, s) = device_pair("shape-corrupt").await?;
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
