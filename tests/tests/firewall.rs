//! Firewall presets on devices and routers, on real nftables.

use std::net::SocketAddr;
use std::time::Duration;

use patchbay::{native::Firewall, native::FirewallAction, native::Lab, native::LabOpts};
use patchbay_tests::*;

const T: Duration = Duration::from_millis(800);

/// TCP connect outcome from `from` to `to`: Ok, refused or timed out.
async fn connect(from: &patchbay::native::Node, to: SocketAddr) -> anyhow::Result<&'static str> {
    let r = from
        .spawn(move |_| async move {
            match tokio::time::timeout(T, tokio::net::TcpStream::connect(to)).await {
                Err(_) => "timeout",
                Ok(Ok(_)) => "ok",
                Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => "refused",
                Ok(Err(_)) => "error",
            }
        })?
        .await?;
    Ok(r)
}

/// Like [`connect`], retried a few times while it times out (fresh veth
/// links can drop their very first packets).
async fn connect_retry(
    from: &patchbay::native::Node,
    to: SocketAddr,
) -> anyhow::Result<&'static str> {
    for _ in 0..3 {
        match connect(from, to).await? {
            "timeout" => continue,
            other => return Ok(other),
        }
    }
    Ok("timeout")
}

#[tokio::test]
async fn device_presets_block_allow_and_reject() -> anyhow::Result<()> {
    require_root!();
    let lab = Lab::with_opts(LabOpts::default().label("fw-dev")).await?;
    let r = lab.add_router("r").build().await?;
    let c = lab.add_device("c").iface("eth0", &r).build().await?;
    let s = lab.add_device("s").iface("eth0", &r).build().await?;
    let sip = s.ip().unwrap();
    let cip = c.ip().unwrap();
    for port in [7001, 7002] {
        start_tcp_echo(&s, (sip, port).into()).await?;
    }
    start_tcp_echo(&c, (cip, 7003).into()).await?;
    assert_eq!(connect_retry(&c, (sip, 7001).into()).await?, "ok");
    assert_eq!(connect_retry(&s, (cip, 7003).into()).await?, "ok");

    s.set_firewall(Firewall::block_inbound()).await?;
    assert_eq!(
        connect(&c, (sip, 7001).into()).await?,
        "timeout",
        "block-inbound drops"
    );
    assert_eq!(
        connect(&s, (cip, 7003).into()).await?,
        "ok",
        "outbound and its replies pass"
    );

    s.set_firewall(Firewall::allow_ports([7001], [])).await?;
    assert_eq!(connect(&c, (sip, 7001).into()).await?, "ok", "allowed port");
    assert_eq!(
        connect(&c, (sip, 7002).into()).await?,
        "timeout",
        "other port dropped"
    );

    s.set_firewall(Firewall::allow_ports([7001], []).action(FirewallAction::Reject))
        .await?;
    assert_eq!(
        connect(&c, (sip, 7002).into()).await?,
        "refused",
        "reject answers with a reset"
    );

    // Custom rule, evaluated first: drop c even on the allowed port.
    s.set_firewall(Firewall::allow_ports([7001], []).rule(format!("ip saddr {cip} drop")))
        .await?;
    assert_eq!(
        connect(&c, (sip, 7001).into()).await?,
        "timeout",
        "custom rule applies"
    );

    s.set_firewall(Firewall::default()).await?;
    assert_eq!(
        connect(&c, (sip, 7002).into()).await?,
        "ok",
        "open firewall removes the table"
    );
    Ok(())
}

#[tokio::test]
async fn router_block_inbound_protects_its_lan() -> anyhow::Result<()> {
    require_root!();
    let lab = Lab::with_opts(LabOpts::default().label("fw-rtr")).await?;
    let outside = lab.add_router("outside").build().await?;
    let office = lab.add_router("office").build().await?;
    let inner = lab
        .add_device("inner")
        .iface("eth0", &office)
        .build()
        .await?;
    let far = lab
        .add_device("far")
        .iface("eth0", &outside)
        .build()
        .await?;
    let (iip, fip) = (inner.ip().unwrap(), far.ip().unwrap());
    start_tcp_echo(&inner, (iip, 7001).into()).await?;
    start_tcp_echo(&far, (fip, 7001).into()).await?;
    // Fresh links may lose their very first packets: warm up both ways.
    assert_eq!(connect_retry(&inner, (fip, 7001).into()).await?, "ok");
    assert_eq!(connect_retry(&far, (iip, 7001).into()).await?, "ok");
    office
        .set_firewall(Firewall::block_inbound().action(FirewallAction::Reject))
        .await?;
    assert_eq!(
        connect(&inner, (fip, 7001).into()).await?,
        "ok",
        "LAN to outside passes"
    );
    assert_eq!(
        connect(&far, (iip, 7001).into()).await?,
        "refused",
        "outside to LAN is rejected"
    );
    Ok(())
}

#[tokio::test]
async fn a_bad_custom_rule_names_the_rule_and_nfts_complaint() -> anyhow::Result<()> {
    require_root!();
    let lab = Lab::with_opts(LabOpts::default().label("fw-bad")).await?;
    let r = lab.add_router("r").build().await?;
    let c = lab.add_device("c").iface("eth0", &r).build().await?;
    let e = c
        .set_firewall(Firewall::block_inbound().rule("ip saddr bogus-address drop"))
        .await
        .unwrap_err()
        .to_string();
    println!("{e}");
    assert!(
        e.contains("failing rule: ip saddr bogus-address drop"),
        "{e}"
    );
    assert!(e.contains("Error:"), "nft's stderr is included: {e}");
    Ok(())
}
