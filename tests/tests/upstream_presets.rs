//! Upstream patchbay 0.7's router presets, in our words, against the compat API (`upstream`):
//! what upstream checks in `src/tests/preset.rs`, extended to every preset's documented
//! behaviour (upstream's `RouterPreset` docs), each measured with real traffic:
//!
//! | preset | IP | LAN v4 | NAT mapping | unsolicited inbound | outbound UDP | outbound TCP |
//! |---|---|---|---|---|---|---|
//! | `Home` | dual | private | EIM | blocked (v4 and v6) | any | any |
//! | `Public` | dual | public | none | allowed | any | any |
//! | `PublicV4` | v4 | public | none | allowed | any | any |
//! | `IspCgnat` | dual | private | EIM | blocked | any | any |
//! | `IspCgnatSymmetric` | dual | private | EDM | blocked | any | any |
//! | `IspV6` | v6 (NAT64) | none | none on v6 | blocked | any | any |
//! | `Corporate` | dual | private | EDM | blocked | port 53 only | 80 and 443 only |
//! | `Hotel` | v4 | private | EDM | blocked | port 53 only | any |
//! | `Cloud` | dual | private | EDM | v4: by the NAT; v6: allowed (no firewall) | any | any |
//!
//! Runs as root on the host, and in virtual time in the UML partition of `cargo xtask test`.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use patchbay_tests::require_root;
use patchbay_tests::upstream::*;
use upstream::{
    Device, IpSupport, Ipv6Profile, Lab, Nat, NatFiltering, NatMapping, NatV6Mode, ReflectorGuard,
    Router, RouterPreset,
};

/// What upstream documents for a preset (see the table above).
#[derive(Clone, Copy, Debug)]
struct Expect {
    ip: IpSupport,
    /// The NAT's mapping (`None`: no IPv4 NAT).
    mapping: Option<NatMapping>,
    /// Whether an outside host reaches a device's socket unsolicited over IPv4 / IPv6.
    inbound_v4: bool,
    inbound_v6: bool,
    /// Whether UDP to a non-DNS port gets out.
    udp_any: bool,
    /// Whether TCP to 443 and to 8443 gets out.
    tcp_443: bool,
    tcp_8443: bool,
}

const OPEN_INTERNET: Expect = Expect {
    ip: IpSupport::DualStack,
    mapping: None,
    inbound_v4: true,
    inbound_v6: true,
    udp_any: true,
    tcp_443: true,
    tcp_8443: true,
};

const HOME: Expect = Expect {
    mapping: Some(NatMapping::EndpointIndependent),
    inbound_v4: false,
    inbound_v6: false,
    ..OPEN_INTERNET
};

/// The public side of a preset lab: two public hosts with servers, and an outsider.
struct World {
    lab: Lab,
    outsider: Router,
    /// UDP reflectors on port 53 (every firewall lets DNS out): dc over v4 and v6, dc2 v4.
    dns_v4: SocketAddr,
    dns_v6: SocketAddr,
    dns2_v4: SocketAddr,
    dc: Router,
    _guards: Vec<ReflectorGuard>,
}

impl World {
    async fn new() -> Result<World> {
        let lab = Lab::new().await?;
        let dc = lab
            .add_router("dc")
            .preset(RouterPreset::Public)
            .build()
            .await?;
        let dc2 = lab
            .add_router("dc2")
            .preset(RouterPreset::Public)
            .build()
            .await?;
        let outsider = lab
            .add_router("outsider")
            .preset(RouterPreset::Public)
            .build()
            .await?;
        let v4 = IpAddr::V4(dc.uplink_ip().context("dc v4")?);
        let v6 = IpAddr::V6(dc.uplink_ip_v6().context("dc v6")?);
        let mut guards = vec![];
        for ip in [v4, v6] {
            for port in [53, 3478] {
                guards.push(dc.spawn_reflector(SocketAddr::new(ip, port)).await?);
            }
            for port in [443, 8443] {
                start_tcp_echo(&dc, SocketAddr::new(ip, port)).await?;
            }
        }
        let dns2_v4 = SocketAddr::from((dc2.uplink_ip().context("dc2 v4")?, 53));
        guards.push(dc2.spawn_reflector(dns2_v4).await?);
        Ok(World {
            lab,
            outsider,
            dns_v4: SocketAddr::new(v4, 53),
            dns_v6: SocketAddr::new(v6, 53),
            dns2_v4,
            dc,
            _guards: guards,
        })
    }
}

/// Builds `preset` (through `tweak`) with a device behind it in a fresh [`World`] and checks
/// everything in `want`.
async fn check(
    preset: RouterPreset,
    tweak: impl FnOnce(upstream::RouterBuilder) -> upstream::RouterBuilder,
    want: Expect,
) -> Result<()> {
    let w = World::new().await?;
    let r = tweak(w.lab.add_router("r").preset(preset)).build().await?;
    let dev = w.lab.add_device("dev").uplink(r.id()).build().await?;
    ensure!(
        r.ip_support() == Some(want.ip),
        "ip_support {:?}",
        r.ip_support()
    );
    ensure!(
        dev.ip().is_some() == want.ip.has_v4(),
        "IPv4 address: {:?}",
        dev.ip()
    );
    ensure!(
        dev.ip6().is_some() == want.ip.has_v6(),
        "IPv6 address: {:?}",
        dev.ip6()
    );
    if want.ip.has_v4() {
        check_v4(&w, &r, &dev, want).await.context("IPv4")?;
    }
    if want.ip.has_v6() {
        check_v6_inbound(&w, &dev, want.inbound_v6)
            .await
            .context("IPv6")?;
    }
    check_outbound(&w, &dev, want).await
}

async fn check_v4(w: &World, r: &Router, dev: &Device, want: Expect) -> Result<()> {
    let ip = dev.ip().context("no IPv4")?;
    ensure!(
        ip.is_private() == want.mapping.is_some(),
        "LAN address {ip}"
    );
    let (o1, o2) = (
        dev.probe_udp_mapping(w.dns_v4)?,
        dev.probe_udp_mapping(w.dns2_v4)?,
    );
    match want.mapping {
        None => ensure!(
            o1.ip() == IpAddr::V4(ip),
            "no NAT, but the reflector saw {o1}"
        ),
        Some(m) => {
            let wan = IpAddr::V4(r.uplink_ip().context("no WAN")?);
            ensure!(
                o1.ip() == wan && o2.ip() == wan,
                "saw {o1} and {o2}, want {wan}"
            );
            let eim = m == NatMapping::EndpointIndependent;
            ensure!(
                (o1.port() == o2.port()) == eim,
                "{m:?}: ports {o1} and {o2}"
            );
        }
    }
    let public = open_mapping(dev, w.dns_v4, SocketAddr::from(([0; 4], 4500))).await?;
    let got = udp_reply(&w.outsider, public, Duration::from_millis(600)).await?;
    ensure!(
        got.is_some() == want.inbound_v4,
        "unsolicited to {public}: {got:?}"
    );
    Ok(())
}

async fn check_v6_inbound(w: &World, dev: &Device, inbound: bool) -> Result<()> {
    let bind = SocketAddr::from(([0u16; 8], 4501));
    let public = open_mapping(dev, w.dns_v6, bind).await?;
    let got = udp_reply(&w.outsider, public, Duration::from_millis(600)).await?;
    ensure!(got.is_some() == inbound, "unsolicited to {public}: {got:?}");
    Ok(())
}

/// UDP to a non-DNS port and TCP to 443 and 8443 of `dc`, over IPv4 where the LAN has it,
/// else over IPv6.
async fn check_outbound(w: &World, dev: &Device, want: Expect) -> Result<()> {
    let ip = if want.ip.has_v4() {
        w.dns_v4.ip()
    } else {
        w.dns_v6.ip()
    };
    let udp = udp_reply(dev, SocketAddr::new(ip, 3478), Duration::from_millis(600)).await?;
    ensure!(udp.is_some() == want.udp_any, "UDP to port 3478: {udp:?}");
    for (port, allowed) in [(443, want.tcp_443), (8443, want.tcp_8443)] {
        let r = tcp_echo(dev, SocketAddr::new(ip, port), Duration::from_millis(1500)).await;
        ensure!(r.is_ok() == allowed, "TCP to port {port}: {r:?}");
    }
    Ok(())
}

/// Upstream `preset.rs` `preset_nat_snapshots` and `preset_recommended_ipv6_profiles`: each
/// preset's NAT (mapping, filtering, hairpin off, UDP stream timeout), IP support and IPv6
/// NAT mode as a built router reports them, and the recommended IPv6 profile.
#[tokio::test]
async fn preset_settings_as_upstream_documents() -> Result<()> {
    require_root!();
    use IpSupport::*;
    use RouterPreset::*;
    let (eim, edm) = (
        NatMapping::EndpointIndependent,
        NatMapping::EndpointDependent,
    );
    let table = [
        (Home, Some((eim, 300)), DualStack, NatV6Mode::None),
        (IspCgnat, Some((eim, 300)), DualStack, NatV6Mode::None),
        (
            IspCgnatSymmetric,
            Some((edm, 180)),
            DualStack,
            NatV6Mode::None,
        ),
        (Corporate, Some((edm, 120)), DualStack, NatV6Mode::None),
        (Hotel, Some((edm, 120)), V4Only, NatV6Mode::None),
        (Cloud, Some((edm, 350)), DualStack, NatV6Mode::None),
        (Public, None, DualStack, NatV6Mode::None),
        (PublicV4, None, V4Only, NatV6Mode::None),
        (IspV6, None, V6Only, NatV6Mode::Nat64),
    ];
    let lab = Lab::new().await?;
    for (i, (preset, nat, ip, nat_v6)) in table.into_iter().enumerate() {
        let r = lab
            .add_router(&format!("r{i}"))
            .preset(preset)
            .build()
            .await?;
        let got = r.nat_config().map(|c| {
            let apdf = c.filtering == NatFiltering::AddressAndPortDependent;
            ensure!(apdf && !c.hairpin, "{preset:?}: {c:?}");
            Ok((c.mapping, c.timeouts.udp_stream))
        });
        ensure!(
            got.transpose()? == nat,
            "{preset:?}: NAT {:?}",
            r.nat_config()
        );
        ensure!(
            r.ip_support() == Some(ip),
            "{preset:?}: {:?}",
            r.ip_support()
        );
        ensure!(
            r.nat_v6_mode() == Some(nat_v6),
            "{preset:?}: {:?}",
            r.nat_v6_mode()
        );
        ensure!(preset.recommended_ipv6_profile() == Ipv6Profile::Realistic);
    }
    Ok(())
}

/// Upstream `preset.rs` `preset_home` and `private_v6_pool_is_ula`, and the `Home` docs:
/// dual-stack, a private IPv4 LAN behind EIM + APDF NAT, and a firewall that blocks
/// unsolicited inbound on both families; everything outbound works.
///
/// One difference, from the address plan (docs/porting.md, "Addresses"): upstream gives the
/// LAN a ULA prefix (`fd10::/48`) routed without translation; ours is a routed
/// `2001:db8:1:N::/64`. Either way the device's own IPv6 address is what the internet sees,
/// behind the firewall.
#[tokio::test]
async fn preset_home() -> Result<()> {
    require_root!();
    check(RouterPreset::Home, |b| b, HOME).await
}

/// Upstream `preset.rs` `preset_override`: `Home` with `.nat(Nat::Open)` changes only the
/// NAT: still dual-stack, and the firewall still blocks what full-cone NAT alone would let
/// in.
#[tokio::test]
async fn preset_override_changes_only_the_nat() -> Result<()> {
    require_root!();
    check(RouterPreset::Home, |b| b.nat(Nat::Open), HOME).await
}

/// Upstream `preset.rs` `preset_public` and `public_v6_pool_is_gua`: dual-stack, public
/// addresses (IPv6 from `2001:db8:1::/48`), no NAT, no firewall.
#[tokio::test]
async fn preset_public() -> Result<()> {
    require_root!();
    check(RouterPreset::Public, |b| b, OPEN_INTERNET).await?;
    let lab = Lab::new().await?;
    let dc = lab
        .add_router("dc")
        .preset(RouterPreset::Public)
        .build()
        .await?;
    let srv = lab.add_device("srv").uplink(dc.id()).build().await?;
    let v6 = srv.ip6().context("no IPv6")?;
    ensure!(v6.segments()[..3] == [0x2001, 0xdb8, 1], "public IPv6 {v6}");
    Ok(())
}

/// Upstream `preset.rs` `preset_public_v4`: `Public` without IPv6.
#[tokio::test]
async fn preset_public_v4() -> Result<()> {
    require_root!();
    let want = Expect {
        ip: IpSupport::V4Only,
        ..OPEN_INTERNET
    };
    check(RouterPreset::PublicV4, |b| b, want).await
}

/// Upstream `preset.rs` `preset_isp_cgnat` and the `IspCgnat` docs: as `Home` (upstream 0.7
/// models RFC 6888 CGNAT as EIM + APDF behind a block-inbound firewall).
#[tokio::test]
async fn preset_isp_cgnat() -> Result<()> {
    require_root!();
    check(RouterPreset::IspCgnat, |b| b, HOME).await
}

/// The `IspCgnatSymmetric` docs: as `IspCgnat`, with endpoint-dependent mapping.
#[tokio::test]
async fn preset_isp_cgnat_symmetric() -> Result<()> {
    require_root!();
    let want = Expect {
        mapping: Some(NatMapping::EndpointDependent),
        ..HOME
    };
    check(RouterPreset::IspCgnatSymmetric, |b| b, want).await
}

/// Upstream `preset.rs` `preset_corporate_blocks_udp` and the `Corporate` docs: symmetric
/// NAT; outbound only TCP 80/443 and UDP 53.
#[tokio::test]
async fn preset_corporate() -> Result<()> {
    require_root!();
    let want = Expect {
        mapping: Some(NatMapping::EndpointDependent),
        udp_any: false,
        tcp_8443: false,
        ..HOME
    };
    check(RouterPreset::Corporate, |b| b, want).await
}

/// Upstream `preset.rs` `preset_hotel_v4_only` and the `Hotel` docs: IPv4 only, symmetric
/// NAT, a captive-portal firewall: TCP to any port, UDP only to 53.
#[tokio::test]
async fn preset_hotel() -> Result<()> {
    require_root!();
    let want = Expect {
        ip: IpSupport::V4Only,
        mapping: Some(NatMapping::EndpointDependent),
        udp_any: false,
        ..HOME
    };
    check(RouterPreset::Hotel, |b| b, want).await
}

/// The `Cloud` docs: symmetric NAT and no firewall: IPv4 inbound is stopped by the NAT
/// alone, the LAN's untranslated IPv6 is reachable.
#[tokio::test]
async fn preset_cloud() -> Result<()> {
    require_root!();
    let want = Expect {
        mapping: Some(NatMapping::EndpointDependent),
        inbound_v4: false,
        ..OPEN_INTERNET
    };
    check(RouterPreset::Cloud, |b| b, want).await
}

/// Upstream `preset.rs` `preset_isp_v6` and the `IspV6` docs: IPv6 only (no IPv4 address),
/// public IPv6 behind a block-inbound firewall, and NAT64 to IPv4 hosts. Our NAT64 prefix is
/// `2001:db8:64::/96`, not upstream's `64:ff9b::/96` (docs/porting.md, "Addresses"); the
/// address is built with the core's `nat64_embed`, as upstream 0.7 has no public helper.
#[tokio::test]
async fn preset_isp_v6() -> Result<()> {
    require_root!();
    let want = Expect {
        ip: IpSupport::V6Only,
        inbound_v6: false,
        ..OPEN_INTERNET
    };
    check(RouterPreset::IspV6, |b| b, want).await?;
    let w = World::new().await?;
    let carrier = w
        .lab
        .add_router("carrier")
        .preset(RouterPreset::IspV6)
        .build()
        .await?;
    let phone = w
        .lab
        .add_device("phone")
        .uplink(carrier.id())
        .build()
        .await?;
    let dc_v4 = w.dc.uplink_ip().context("dc v4")?;
    let via64 = SocketAddr::from((patchbay::native::nat64_embed(dc_v4), 53));
    let seen = udp_observed(&phone, via64, SocketAddr::from(([0u16; 8], 0))).await?;
    ensure!(seen.is_ipv4(), "the IPv4 host saw {seen}");
    Ok(())
}
