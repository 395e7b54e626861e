//! The NAT classifier is the ground truth that each NAT mode is what it
//! claims: RFC 5780-style probes against two public addresses and ports.

use patchbay::{Lab, LabOpts, Nat, NatFiltering as F, NatMapping as M};
use patchbay_tests::*;

#[tokio::test]
async fn every_nat_mode_classifies_as_documented() -> anyhow::Result<()> {
    if skip_unless_root() {
        return Ok(());
    }
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

#[tokio::test]
async fn reflector_and_mapping_probe() -> anyhow::Result<()> {
    if skip_unless_root() {
        return Ok(());
    }
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
    // A dropped reflector stops answering: a clear error.
    let gone = (ip, r1.addr().port()).into();
    drop(r1);
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let e = c.probe_udp_mapping(gone).await.unwrap_err().to_string();
    assert!(e.contains("no answer from reflector"), "{e}");
    Ok(())
}
