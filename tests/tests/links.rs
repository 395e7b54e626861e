//! Link conditions with tc: rate limits via tbf (run everywhere), delay
//! and loss via netem (skipped with a reason on kernels without netem),
//! and bad input.

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use patchbay::{Error, native::Device, native::LinkCondition};
use patchbay_tests::traffic::*;
use patchbay_tests::*;

#[tokio::test]
async fn timing_rate_limit_with_tbf() -> anyhow::Result<()> {
    require_root!();
    let (_lab, c, s) = device_pair("link-rate").await?;
    let to = start_tcp_server(&s, 9100, Serve::Sink).await?;
    goodput_up(&c, to, 100_000).await?; // warm-up
    let free = goodput_up(&c, to, 4_000_000).await?;
    c.set_link_condition("eth0", LinkCondition::default().rate(10_000_000))
        .await?;
    let ten = goodput_up(&c, to, 1_500_000).await?;
    // Changed at runtime (tc qdisc replace).
    c.set_link_condition("eth0", LinkCondition::default().rate(20_000_000))
        .await?;
    let twenty = goodput_up(&c, to, 3_000_000).await?;
    c.set_link_condition("eth0", LinkCondition::default())
        .await?;
    let cleared = goodput_up(&c, to, 4_000_000).await?;
    println!(
        "goodput: unshaped {:.0} Mbit/s, rate 10mbit -> {:.2} Mbit/s, rate 20mbit -> {:.2} Mbit/s, cleared {:.0} Mbit/s",
        free / 1e6,
        ten / 1e6,
        twenty / 1e6,
        cleared / 1e6
    );
    let r10 = ten / 10e6;
    let r20 = twenty / 20e6;
    assert!(
        (0.7..1.1).contains(&r10),
        "10mbit link carried {r10:.2} of its rate"
    );
    assert!(
        (0.7..1.1).contains(&r20),
        "20mbit link carried {r20:.2} of its rate"
    );
    assert!(
        free > 3.0 * twenty && cleared > 3.0 * twenty,
        "clearing removes the limit"
    );
    Ok(())
}

/// Applies `cond`; on a kernel without netem checks the error and skips.
async fn netem_or_skip(c: &Device, cond: LinkCondition) -> anyhow::Result<bool> {
    match c.set_link_condition("eth0", cond).await {
        Ok(()) => Ok(true),
        Err(Error::KernelFeature { feature, hint }) => {
            assert_eq!(feature, "CONFIG_NET_SCH_NETEM (tc netem)");
            assert!(hint.contains("rate limits alone still work"), "{hint}");
            skip(&format!("kernel has no netem ({feature})"));
            Ok(false)
        }
        Err(e) => Err(e.into()),
    }
}

fn udp_pinger(c: &Device, s: &Device) -> anyhow::Result<(UdpSocket, SocketAddr)> {
    let sock = c.run_sync(|| UdpSocket::bind("0.0.0.0:0"))??;
    sock.set_read_timeout(Some(Duration::from_millis(600)))?;
    Ok((sock, SocketAddr::from((s.ip().unwrap(), 7000))))
}

#[tokio::test]
async fn timing_netem_delay_gives_the_configured_rtt() -> anyhow::Result<()> {
    require_root!();
    let (_lab, c, s) = device_pair("link-delay").await?;
    start_udp_reflector(&s, SocketAddr::from(([0, 0, 0, 0], 7000))).await?;
    let delay = Duration::from_micros(20_500);
    if !netem_or_skip(&c, LinkCondition::default().delay(delay)).await? {
        return Ok(());
    }
    let (sock, to) = udp_pinger(&c, &s)?;
    let mut rtts = vec![];
    let mut buf = [0u8; 128];
    for _ in 0..20 {
        let t0 = Instant::now();
        sock.send_to(b"p", to)?;
        if sock.recv_from(&mut buf).is_ok() {
            rtts.push(t0.elapsed());
        }
    }
    rtts.sort();
    let median = rtts[rtts.len() / 2];
    let ratio = median.as_secs_f64() / (2.0 * delay.as_secs_f64());
    println!("netem delay {delay:?} each way: median RTT {median:?} (ratio {ratio:.3})");
    assert!(
        (0.95..1.3).contains(&ratio),
        "RTT {median:?} vs 2 x {delay:?}"
    );
    Ok(())
}

#[tokio::test]
async fn timing_netem_loss_ratio_within_bounds() -> anyhow::Result<()> {
    require_root!();
    let (_lab, c, s) = device_pair("link-loss").await?;
    start_udp_reflector(&s, SocketAddr::from(([0, 0, 0, 0], 7000))).await?;
    // 20 % each way: a round trip survives with probability 0.64.
    if !netem_or_skip(&c, LinkCondition::default().loss(20.0)).await? {
        return Ok(());
    }
    let (sock, to) = udp_pinger(&c, &s)?;
    sock.set_read_timeout(Some(Duration::from_millis(50)))?;
    let n = 400;
    let mut ok = 0;
    let mut buf = [0u8; 128];
    for i in 0..n {
        sock.send_to(format!("{i}").as_bytes(), to)?;
        if let Ok((len, _)) = sock.recv_from(&mut buf)
            && buf[..len].starts_with(format!("{i}|").as_bytes())
        {
            ok += 1;
        }
    }
    let ratio = ok as f64 / n as f64;
    println!("netem loss 20% each way: {ok}/{n} round trips survived ({ratio:.3}, expected 0.64)");
    assert!((0.52..0.76).contains(&ratio), "survival {ratio}");
    Ok(())
}

#[tokio::test]
async fn bad_link_input_is_a_clear_error() -> anyhow::Result<()> {
    require_root!();
    let (lab, c, _s) = device_pair("link-bad").await?;
    let e = c
        .set_link_condition("eth0", LinkCondition::default().loss(150.0))
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("loss = 150% is out of range"), "{e}");
    let e = LinkCondition::preset("5g").unwrap_err().to_string();
    assert!(e.contains("unknown link preset \"5g\""), "{e}");
    let e = c
        .set_link_condition("eth9", LinkCondition::default().rate(1_000_000))
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("has no interface \"eth9\""), "{e}");
    let r = lab.router("r").unwrap();
    let e = r
        .set_link_condition("lan", LinkCondition::default().rate(1_000_000))
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("LAN bridge"), "{e}");
    // A router's uplink can be shaped too (its peer is the exchange port).
    r.set_link_condition("wan", LinkCondition::default().rate(50_000_000))
        .await?;
    r.set_link_condition("wan", LinkCondition::default())
        .await?;
    // The lan preset is rate-only and works on every kernel.
    c.set_link_condition("eth0", LinkCondition::preset("lan")?)
        .await?;
    Ok(())
}
