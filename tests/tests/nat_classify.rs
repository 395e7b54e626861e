//! The NAT classifier is the ground truth that each NAT mode is what it
//! claims: RFC 5780-style probes against two public addresses and ports.

use patchbay::{
    native::Lab, native::LabOpts, native::Nat, native::NatFiltering as F, native::NatMapping as M,
    native::RouterPreset,
};
use patchbay_tests::*;

#[tokio::test]
async fn every_nat_mode_classifies_as_documented() -> anyhow::Result<()> {
    require_root!();
    let table = [
        (
            Nat::None,
            M::EndpointIndependent,
            F::EndpointIndependent,
            false,
        ),
        (
            Nat::FullCone,
            M::EndpointIndependent,
            F::EndpointIndependent,
            true,
        ),
        (
            Nat::AddressRestricted,
            M::EndpointIndependent,
            F::AddressDependent,
            true,
        ),
        (
            Nat::PortRestricted,
            M::EndpointIndependent,
            F::AddressAndPortDependent,
            true,
        ),
        (
            Nat::Symmetric,
            M::AddressAndPortDependent,
            F::AddressAndPortDependent,
            true,
        ),
        // Carrier-grade NAT is EIM + EIF (RFC 6888 REQ-1, as upstream's Cgnat).
        (
            Nat::Cgnat,
            M::EndpointIndependent,
            F::EndpointIndependent,
            true,
        ),
        // Upstream patchbay's names: the RFC modes that implement them.
        (
            Nat::Home,
            M::EndpointIndependent,
            F::AddressAndPortDependent,
            true,
        ),
        (
            Nat::Corporate,
            M::AddressAndPortDependent,
            F::AddressAndPortDependent,
            true,
        ),
        (
            Nat::CloudNat,
            M::AddressAndPortDependent,
            F::AddressAndPortDependent,
            true,
        ),
    ];
    for (mode, mapping, filtering, translated) in table {
        let lab = Lab::with_opts(LabOpts::default().label("classify")).await?;
        let public = lab.add_router("pub").build().await?;
        let home = lab.add_router("home").nat(mode).build().await?;
        let c = lab.add_device("c").iface("eth0", &home).build().await?;
        let a = lab.add_device("a").iface("eth0", &public).build().await?;
        let b = lab.add_device("b").iface("eth0", &public).build().await?;
        let got = lab.classify_nat(&c, &a, &b, 3478).await?;
        println!(
            "{mode:?}: {:?} / {:?}, {} -> {}",
            got.mapping, got.filtering, got.local, got.external
        );
        assert_eq!(
            (got.mapping, got.filtering),
            (mapping, filtering),
            "{mode:?}"
        );
        assert_eq!(got.translated, translated, "{mode:?}: {got:?}");
        if translated {
            assert_eq!(
                got.external.ip(),
                std::net::IpAddr::V4(home.ip().unwrap()),
                "{mode:?}"
            );
        }
    }
    Ok(())
}

/// What the classifier should find behind a preset.
#[derive(Debug)]
enum Expect {
    /// Mapping, filtering, whether the address is translated.
    Class(M, F, bool),
    /// Outbound UDP to the probe ports is dropped by the preset's firewall
    /// (STUN's "UDP blocked").
    UdpBlocked,
}

#[tokio::test]
async fn every_router_preset_classifies_as_documented() -> anyhow::Result<()> {
    require_root!();
    if !std::process::Command::new("sh")
        .args(["-c", "command -v tayga"])
        .stdout(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
    {
        skip("`tayga` is not installed: RouterPreset::IspV6 (NAT64) needs it; apt package tayga");
        return Ok(());
    }
    use Expect::*;
    let expect = |p: RouterPreset| match p {
        RouterPreset::Home => Class(M::EndpointIndependent, F::AddressAndPortDependent, true),
        RouterPreset::Public | RouterPreset::PublicV4 => {
            Class(M::EndpointIndependent, F::EndpointIndependent, false)
        }
        RouterPreset::IspCgnat => Class(M::EndpointIndependent, F::EndpointIndependent, true),
        // v6-only: probed over IPv6, routed untranslated; the block-inbound
        // firewall admits only replies to what the device sent.
        RouterPreset::IspV6 => Class(M::EndpointIndependent, F::AddressAndPortDependent, false),
        // Corporate: out only TCP 80/443 and UDP 53; hotel: UDP only to 53.
        RouterPreset::Corporate | RouterPreset::Hotel => UdpBlocked,
        RouterPreset::Cloud => Class(M::AddressAndPortDependent, F::AddressAndPortDependent, true),
        // CGNAT's EIF sits behind a block-inbound firewall: only replies pass.
        RouterPreset::Mobile => Class(M::EndpointIndependent, F::AddressAndPortDependent, true),
        // RouterPreset is #[non_exhaustive]: a new preset fails here until
        // its expected class is written down.
        other => panic!("no expected class for {other:?}; add it to this table"),
    };
    for preset in RouterPreset::ALL {
        let lab = Lab::with_opts(LabOpts::default().label("classify-preset")).await?;
        let public = lab.add_router("pub").build().await?;
        let r = lab.add_router("r").preset(preset).build().await?;
        let c = lab.add_device("c").iface("eth0", &r).build().await?;
        let a = lab.add_device("a").iface("eth0", &public).build().await?;
        let b = lab.add_device("b").iface("eth0", &public).build().await?;
        // The preset's IP support reaches the device.
        let families = (c.ip().is_some(), c.ip6().is_some());
        let want = match preset {
            RouterPreset::PublicV4 | RouterPreset::Hotel => (true, false),
            RouterPreset::IspV6 => (false, true),
            _ => (true, true),
        };
        assert_eq!(families, want, "{preset:?}: (has IPv4, has IPv6)");
        let got = lab.classify_nat(&c, &a, &b, 3478).await;
        println!("{preset:?}: {got:?}");
        match (expect(preset), got) {
            (Class(mapping, filtering, translated), Ok(got)) => {
                assert_eq!(
                    (got.mapping, got.filtering, got.translated),
                    (mapping, filtering, translated),
                    "{preset:?}: {got:?}"
                );
                let want_v6 = preset == RouterPreset::IspV6;
                assert_eq!(got.external.is_ipv6(), want_v6, "{preset:?}: {got:?}");
                if translated {
                    assert_eq!(
                        got.external.ip(),
                        std::net::IpAddr::V4(r.ip().unwrap()),
                        "{preset:?}"
                    );
                }
            }
            (UdpBlocked, Err(e)) => {
                let e = e.to_string();
                assert!(e.contains("no datagram"), "{preset:?}: {e}");
                // TCP 80 still leaves (both firewalls allow it).
                let addr = std::net::SocketAddr::new(a.ip().unwrap().into(), 80);
                start_tcp_echo(&a, addr).await?;
                let echo = c
                    .spawn(move |_| async move {
                        tcp_roundtrip(addr, b"web", std::time::Duration::from_secs(5)).await
                    })?
                    .await??;
                assert_eq!(echo, b"web", "{preset:?}");
            }
            (want, got) => panic!("{preset:?}: expected {want:?}, got {got:?}"),
        }
    }
    Ok(())
}

#[tokio::test]
async fn reflector_and_mapping_probe() -> anyhow::Result<()> {
    require_root!();
    let lab = Lab::new().await?;
    let public = lab.add_router("pub").build().await?;
    let home = lab.add_router("home").nat(Nat::Symmetric).build().await?;
    let c = lab.add_device("c").iface("eth0", &home).build().await?;
    let s = lab.add_device("s").iface("eth0", &public).build().await?;
    let r1 = s.spawn_reflector("0.0.0.0:0".parse()?).await?;
    let r2 = s.spawn_reflector("0.0.0.0:0".parse()?).await?;
    let ip = s.ip().unwrap();
    let m1 = c.probe_udp_mapping((ip, r1.addr().port()).into()).await?;
    let m2 = c.probe_udp_mapping((ip, r2.addr().port()).into()).await?;
    assert_eq!(m1.ip(), std::net::IpAddr::V4(home.ip().unwrap()));
    println!("symmetric NAT: {m1} and {m2}");
    // Both probes leave from the node's one probe port: a symmetric NAT maps them to two
    // external ports, an endpoint-independent one to one.
    assert_ne!(m1.port(), m2.port(), "symmetric NAT kept one mapping");
    let eim = lab.add_router("eim").nat(Nat::Home).build().await?;
    let e = lab.add_device("e").iface("eth0", &eim).build().await?;
    let e1 = e.probe_udp_mapping((ip, r1.addr().port()).into()).await?;
    let e2 = e.probe_udp_mapping((ip, r2.addr().port()).into()).await?;
    assert_eq!(
        e1, e2,
        "endpoint-independent mapping: one external endpoint"
    );
    assert_eq!(e1.port(), e.probe_port(), "the home NAT keeps the port");
    // A dropped reflector stops answering: a clear error.
    let gone = (ip, r1.addr().port()).into();
    drop(r1);
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let e = c.probe_udp_mapping(gone).await.unwrap_err().to_string();
    assert!(e.contains("no answer from reflector"), "{e}");
    Ok(())
}
