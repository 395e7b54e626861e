//! NAT behaviour per RFC 4787 mode, on real nftables: mapping, filtering,
//! hairpinning, CGNAT chains, conntrack expiry and flushing.
//!
//! Layout of every lab: a NAT router `home` with client `c` behind it, and
//! a public router `pub` with reflectors `r1`, `r2` and a third party `t`.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::time::Duration;

use patchbay::{
    native::ConntrackTimeouts, native::Device, native::Lab, native::LabOpts, native::Nat,
    native::Router,
};
use patchbay_tests::*;

const REFLECT: u16 = 7000;

struct World {
    _lab: Lab,
    home: Router,
    c: Device,
    r1: Device,
    r2: Device,
    t: Device,
}

async fn world(
    label: &str,
    build: impl FnOnce(patchbay::native::RouterBuilder) -> patchbay::native::RouterBuilder,
) -> anyhow::Result<World> {
    let lab = Lab::with_opts(LabOpts::default().label(label)).await?;
    let public = lab.add_router("pub").build().await?;
    let home = build(lab.add_router("home")).build().await?;
    let c = lab.add_device("c").iface("eth0", &home).build().await?;
    let r1 = lab.add_device("r1").iface("eth0", &public).build().await?;
    let r2 = lab.add_device("r2").iface("eth0", &public).build().await?;
    let t = lab.add_device("t").iface("eth0", &public).build().await?;
    for r in [&r1, &r2] {
        start_udp_reflector(r, SocketAddr::from(([0, 0, 0, 0], REFLECT))).await?;
    }
    // Fresh links may lose their very first packets: prove t's link works
    // before it takes part in filtering checks.
    mapped(&sock(&t, 0)?, &r1)?;
    Ok(World {
        _lab: lab,
        home,
        c,
        r1,
        r2,
        t,
    })
}

/// A blocking UDP socket created inside `node`'s namespace.
fn sock(node: &patchbay::native::Node, port: u16) -> anyhow::Result<UdpSocket> {
    let s = node.run_sync(move || UdpSocket::bind((Ipv4Addr::UNSPECIFIED, port)))??;
    s.set_read_timeout(Some(Duration::from_millis(700)))?;
    Ok(s)
}

/// Sends to a reflector and returns the source address it saw.
fn mapped(s: &UdpSocket, reflector: &Device) -> anyhow::Result<SocketAddrV4> {
    let to = SocketAddr::from((reflector.ip().expect("ip"), REFLECT));
    for _ in 0..3 {
        s.send_to(b"m", to)?;
        let mut buf = [0u8; 256];
        if let Ok((n, _)) = s.recv_from(&mut buf) {
            let text = String::from_utf8_lossy(&buf[..n]).into_owned();
            let seen = text.rsplit('|').next().unwrap_or_default();
            return Ok(seen.parse()?);
        }
    }
    anyhow::bail!("no reply from reflector {to}")
}

/// Whether a datagram arrives on `s` within the read timeout.
fn receives(s: &UdpSocket) -> bool {
    let mut buf = [0u8; 64];
    s.recv_from(&mut buf).is_ok()
}

#[tokio::test]
async fn mapping_is_endpoint_independent_except_symmetric() -> anyhow::Result<()> {
    require_root!();
    for mode in [
        Nat::FullCone,
        Nat::AddressRestricted,
        Nat::PortRestricted,
        Nat::Cgnat,
        Nat::Symmetric,
    ] {
        let w = world("nat-map", |b| b.nat(mode)).await?;
        let s = sock(&w.c, 40000)?;
        let m1 = mapped(&s, &w.r1)?;
        let m2 = mapped(&s, &w.r2)?;
        let again = mapped(&s, &w.r1)?;
        println!("{mode:?}: via r1 {m1}, via r2 {m2}, r1 again {again}");
        assert_eq!(
            *m1.ip(),
            w.home.ip().unwrap(),
            "{mode:?}: reflector must see the NAT's address"
        );
        assert_eq!(
            m1, again,
            "{mode:?}: a mapping is stable for one destination"
        );
        if mode == Nat::Symmetric {
            assert_ne!(m1.port(), m2.port(), "symmetric NAT maps per destination");
        } else {
            assert_eq!(
                m1, m2,
                "{mode:?}: EIM keeps one mapping for every destination"
            );
        }
    }
    Ok(())
}

#[tokio::test]
async fn filtering_per_mode() -> anyhow::Result<()> {
    require_root!();
    // (third party, same address other port, same endpoint) get through?
    let table = [
        (Nat::FullCone, [true, true, true]),
        (Nat::AddressRestricted, [false, true, true]),
        (Nat::PortRestricted, [false, false, true]),
        (Nat::Symmetric, [false, false, true]),
        (Nat::Cgnat, [true, true, true]),
        (Nat::Home, [false, false, true]),
        (Nat::Corporate, [false, false, true]),
    ];
    for (mode, want) in table {
        let w = world("nat-filter", |b| b.nat(mode)).await?;
        let s = sock(&w.c, 40001)?;
        let m = mapped(&s, &w.r1)?;
        let to = SocketAddr::V4(m);
        let third = sock(&w.t, 9000)?;
        let other_port = sock(&w.r1, 7001)?;
        third.send_to(b"t", to)?;
        let got_third = receives(&s);
        other_port.send_to(b"p", to)?;
        let got_other = receives(&s);
        // The reflector endpoint itself: send a datagram from a socket
        // bound to the same address and port is impossible while the
        // reflector holds it, so ask the reflector to answer again.
        let got_same = mapped(&s, &w.r1).is_ok();
        let got = [got_third, got_other, got_same];
        println!(
            "{mode:?}: third party {got_third}, same address other port {got_other}, same endpoint {got_same}"
        );
        assert_eq!(
            got, want,
            "{mode:?}: filtering (third party, other port, same endpoint)"
        );
    }
    Ok(())
}

#[tokio::test]
async fn hairpin_on_and_off() -> anyhow::Result<()> {
    require_root!();
    for hairpin in [true, false] {
        let lab = Lab::with_opts(LabOpts::default().label("hairpin")).await?;
        let public = lab.add_router("pub").build().await?;
        let home = lab
            .add_router("home")
            .nat(Nat::PortRestricted)
            .hairpin(hairpin)
            .build()
            .await?;
        let c1 = lab.add_device("c1").iface("eth0", &home).build().await?;
        let c2 = lab.add_device("c2").iface("eth0", &home).build().await?;
        let r1 = lab.add_device("r1").iface("eth0", &public).build().await?;
        start_udp_reflector(&r1, SocketAddr::from(([0, 0, 0, 0], REFLECT))).await?;
        let s2 = sock(&c2, 40002)?;
        let m2 = mapped(&s2, &r1)?;
        let s1 = sock(&c1, 40003)?;
        let m1 = mapped(&s1, &r1)?;
        s1.send_to(b"hairpin", SocketAddr::V4(m2))?;
        let mut buf = [0u8; 64];
        let got = s2.recv_from(&mut buf);
        println!("hairpin={hairpin}: c2 mapped {m2}, c1 mapped {m1}, c2 got {got:?}");
        if hairpin {
            let (_, from) = got?;
            assert_eq!(
                from.ip(),
                std::net::IpAddr::V4(home.ip().unwrap()),
                "hairpinned packets come from the public address"
            );
            // And the reply finds its way back through the same mappings.
            s2.send_to(b"back", from)?;
            assert!(receives(&s1), "the reply to a hairpinned packet arrives");
        } else {
            assert!(got.is_err(), "without hairpinning nothing arrives");
        }
    }
    Ok(())
}

#[tokio::test]
async fn cgnat_chain_shows_the_carrier_address() -> anyhow::Result<()> {
    require_root!();
    let lab = Lab::with_opts(LabOpts::default().label("cgnat")).await?;
    let public = lab.add_router("pub").build().await?;
    let cgnat = lab.add_router("carrier").nat(Nat::Cgnat).build().await?;
    let home = lab
        .add_router("home")
        .upstream(&cgnat)
        .nat(Nat::PortRestricted)
        .build()
        .await?;
    let c = lab.add_device("c").iface("eth0", &home).build().await?;
    let r1 = lab.add_device("r1").iface("eth0", &public).build().await?;
    start_udp_reflector(&r1, SocketAddr::from(([0, 0, 0, 0], REFLECT))).await?;
    let home_wan = home.ip().unwrap();
    assert_eq!(
        home_wan.octets()[0],
        100,
        "home's uplink is in 100.64/10: {home_wan}"
    );
    assert!((64..128).contains(&home_wan.octets()[1]), "{home_wan}");
    assert_eq!(c.ip().unwrap().octets()[0], 10);
    let s = sock(&c, 40004)?;
    let m = mapped(&s, &r1)?;
    println!(
        "cgnat: client {} -> home {home_wan} -> carrier {} ; reflector saw {m}",
        c.ip().unwrap(),
        cgnat.ip().unwrap()
    );
    assert_eq!(*m.ip(), cgnat.ip().unwrap());
    Ok(())
}

#[tokio::test]
async fn timing_conntrack_expiry_gives_a_new_mapping() -> anyhow::Result<()> {
    require_root!();
    let timeouts = {
        let mut o = ConntrackTimeouts::default();
        o.udp = Duration::from_secs(2);
        o.udp_stream = Duration::from_secs(2);
        o
    };
    let w = world("nat-expiry", |b| b.nat(Nat::Symmetric).conntrack(timeouts)).await?;
    let udp = w.home.sysctl("net/netfilter/nf_conntrack_udp_timeout")?;
    assert_eq!(udp, "2", "the timeout is set in the router's namespace");
    let s = sock(&w.c, 40005)?;
    let first = mapped(&s, &w.r1)?;
    std::thread::sleep(Duration::from_millis(800));
    let within = mapped(&s, &w.r1)?;
    assert_eq!(first, within, "an active mapping is kept");
    // Idle for longer than the 2 s timeout (plus one GC tick of slack).
    std::thread::sleep(Duration::from_millis(3500));
    let after = mapped(&s, &w.r1)?;
    println!("expiry: first {first}, within timeout {within}, after idle gap {after}");
    assert_ne!(
        first.port(),
        after.port(),
        "after expiry the NAT creates a new mapping"
    );
    Ok(())
}

#[tokio::test]
async fn flush_nat_forgets_mappings_and_set_nat_switches_mode() -> anyhow::Result<()> {
    require_root!();
    let w = world("nat-flush", |b| b.nat(Nat::Symmetric)).await?;
    let s = sock(&w.c, 40006)?;
    let a = mapped(&s, &w.r1)?;
    w.home.flush_nat().await?;
    let b = mapped(&s, &w.r1)?;
    println!("flush: before {a}, after {b}");
    assert_ne!(a.port(), b.port(), "a flush drops the mapping");
    // Runtime switch to full cone: a third party now gets through.
    w.home.set_nat(Nat::FullCone).await?;
    w.home.flush_nat().await?;
    let m = mapped(&s, &w.r1)?;
    assert_eq!(m.port(), 40006, "full cone preserves the port");
    let third = sock(&w.t, 9001)?;
    third.send_to(b"t", SocketAddr::V4(m))?;
    assert!(
        receives(&s),
        "full cone lets a third party in after set_nat"
    );
    assert_eq!(w.home.nat_config()?.nat, Nat::FullCone);
    Ok(())
}

#[tokio::test]
async fn nat_on_a_device_is_a_clear_error() -> anyhow::Result<()> {
    require_root!();
    let w = world("nat-dev", |b| b.nat(Nat::PortRestricted)).await?;
    let e =
        w.c.set_node_nat(Nat::FullCone)
            .await
            .unwrap_err()
            .to_string();
    assert!(e.contains("is a device and cannot do NAT"), "{e}");
    // The router still works through the node-level call.
    w.home.set_node_nat(Nat::Symmetric).await?;
    let _ = (&w.r2, &w.t);
    Ok(())
}

#[tokio::test]
async fn timing_full_cone_mapping_lives_as_long_as_the_configured_map_timeout() -> anyhow::Result<()>
{
    require_root!();
    let w = world("nat-eim-expiry", |b| b.nat(Nat::FullCone)).await?;
    // Set at runtime: sysctls and the nft map timeout follow.
    let timeouts = {
        let mut o = ConntrackTimeouts::default();
        o.udp = Duration::from_secs(2);
        o.udp_stream = Duration::from_secs(2);
        o.eim_map = Some(Duration::from_millis(2500));
        o
    };
    w.home.set_conntrack_timeouts(timeouts.clone()).await?;
    assert_eq!(w.home.nat_config()?.conntrack, Some(timeouts));
    let s = sock(&w.c, 40007)?;
    let m = mapped(&s, &w.r1)?;
    let third = sock(&w.t, 9002)?;
    third.send_to(b"t", SocketAddr::V4(m))?;
    assert!(
        receives(&s),
        "full cone: a third party gets in while the mapping lives"
    );
    // Idle past the 2.5 s map timeout (and the 2 s conntrack timeouts).
    std::thread::sleep(Duration::from_millis(4000));
    third.send_to(b"t", SocketAddr::V4(m))?;
    let late = receives(&s);
    println!("full cone: third party after the idle gap delivered={late}");
    assert!(!late, "after the configured timeout the mapping is gone");
    Ok(())
}
