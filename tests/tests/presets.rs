//! Router presets with upstream's NAT vocabulary on real nftables: a home
//! router behind an ISP's carrier-grade NAT (double NAT, the CGNAT being
//! EIM + EIF), per-preset conntrack timeouts, and their compression.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::time::Duration;

use patchbay::{
    TimeMode, native::Device, native::Lab, native::LabOpts, native::Nat, native::RouterPreset,
};
use patchbay_tests::*;

const REFLECT: u16 = 7000;

fn sock(node: &patchbay::native::Node) -> anyhow::Result<UdpSocket> {
    let s = node.run_sync(|| UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)))??;
    s.set_read_timeout(Some(Duration::from_millis(700)))?;
    Ok(s)
}

fn mapped(s: &UdpSocket, reflector: &Device) -> anyhow::Result<SocketAddrV4> {
    let to = SocketAddr::from((reflector.ip().expect("ip"), REFLECT));
    for _ in 0..3 {
        s.send_to(b"m", to)?;
        let mut buf = [0u8; 256];
        if let Ok((n, _)) = s.recv_from(&mut buf) {
            let text = String::from_utf8_lossy(&buf[..n]).into_owned();
            return Ok(text.rsplit('|').next().unwrap_or_default().parse()?);
        }
    }
    anyhow::bail!("no reply from reflector {to}")
}

fn receives(s: &UdpSocket) -> bool {
    let mut buf = [0u8; 64];
    s.recv_from(&mut buf).is_ok()
}

#[tokio::test]
async fn home_behind_isp_cgnat_is_a_double_nat_with_eif_at_the_carrier() -> anyhow::Result<()> {
    require_root!();
    let lab = Lab::with_opts(LabOpts::default().label("preset-cgnat")).await?;
    let internet = lab
        .add_router("internet")
        .preset(RouterPreset::Public)
        .build()
        .await?;
    let isp = lab
        .add_router("isp")
        .preset(RouterPreset::IspCgnat)
        .build()
        .await?;
    let home = lab
        .add_router("home")
        .upstream(&isp)
        .preset(RouterPreset::Home)
        .build()
        .await?;
    let laptop = lab
        .add_device("laptop")
        .iface("eth0", &home)
        .build()
        .await?;
    let phone = lab.add_device("phone").iface("eth0", &isp).build().await?;
    let r1 = lab
        .add_device("r1")
        .iface("eth0", &internet)
        .build()
        .await?;
    let t = lab.add_device("t").iface("eth0", &internet).build().await?;
    start_udp_reflector(&r1, SocketAddr::from(([0, 0, 0, 0], REFLECT))).await?;
    mapped(&sock(&t)?, &r1)?;

    assert_eq!(isp.nat_config()?.nat, Nat::Cgnat);
    assert_eq!(home.nat_config()?.nat, Nat::Home);
    let ls = sock(&laptop)?;
    let lm = mapped(&ls, &r1)?;
    println!(
        "double NAT: laptop {} -> home {} -> carrier {} ; reflector saw {lm}",
        laptop.ip().unwrap(),
        home.ip().unwrap(),
        isp.ip().unwrap()
    );
    assert!(
        home.ip().unwrap().octets()[0] == 100,
        "home's wan is in 100.64/10"
    );
    assert_eq!(
        *lm.ip(),
        isp.ip().unwrap(),
        "the world sees the carrier address"
    );

    // EIF at the carrier: a third party reaches a device directly behind it.
    let ps = sock(&phone)?;
    let pm = mapped(&ps, &r1)?;
    let ts = sock(&t)?;
    ts.send_to(b"hi", SocketAddr::V4(pm))?;
    let phone_got = receives(&ps);
    // Behind the home NAT (APDF) the same third party gets nowhere.
    ts.send_to(b"hi", SocketAddr::V4(lm))?;
    let laptop_got = receives(&ls);
    println!(
        "third party -> phone's mapping {pm}: {phone_got}; -> laptop's mapping {lm}: {laptop_got}"
    );
    assert!(phone_got, "CGNAT filtering is endpoint-independent");
    assert!(
        !laptop_got,
        "the home NAT filters address-and-port-dependently"
    );

    // Per-preset conntrack timeouts, as sysctls of each router.
    let key = "net/netfilter/nf_conntrack_udp_timeout_stream";
    let tcp = "net/netfilter/nf_conntrack_tcp_timeout_established";
    assert_eq!(home.sysctl(key)?, "300");
    assert_eq!(home.sysctl(tcp)?, "7200");
    assert_eq!(isp.sysctl(key)?, "300");
    // Changing the mode at runtime brings that mode's timeouts.
    home.set_nat(Nat::Corporate).await?;
    assert_eq!(home.sysctl(key)?, "120");
    Ok(())
}

#[tokio::test]
async fn preset_timeouts_go_through_the_compression_plan() -> anyhow::Result<()> {
    require_root!();
    let lab = Lab::with_opts(
        LabOpts::default()
            .label("preset-k")
            .time_mode(TimeMode::compressed(10.0)?)
            .sysctl_only(true),
    )
    .await?;
    let cloud = lab
        .add_router("cloud")
        .preset(RouterPreset::Cloud)
        .build()
        .await?;
    let corp = lab
        .add_router("corp")
        .preset(RouterPreset::Corporate)
        .build()
        .await?;
    let mobile = lab
        .add_router("mobile")
        .preset(RouterPreset::Mobile)
        .build()
        .await?;
    let key = "net/netfilter/nf_conntrack_udp_timeout_stream";
    let got = [cloud.sysctl(key)?, corp.sysctl(key)?, mobile.sysctl(key)?];
    println!(
        "k=10: udp stream timeouts cloud {} corp {} mobile {}",
        got[0], got[1], got[2]
    );
    assert_eq!(got, ["35", "12", "6"], "350 s, 120 s, 60 s divided by 10");
    Ok(())
}
