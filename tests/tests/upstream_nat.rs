//! Upstream patchbay 0.7's own NAT tests, in our words, against the compat API (`upstream`,
//! the `patchbay-compat` package): what upstream checks in `src/tests/nat.rs`,
//! `holepunch.rs`, `hairpin.rs` and `nat_rebind.rs`, with real UDP, TCP and ICMP.
//!
//! Upstream's NAT tiers: `Nat::Open` (EIM + EIF, full cone), `Nat::Moderate` (EIM + APDF, the
//! home router), `Nat::Strict` (EDM with random ports + APDF, symmetric), and custom
//! `NatConfig`s (e.g. EIM + ADF, hairpinning).
//!
//! Runs as root on the host, and in virtual time in the UML partition of `cargo xtask test`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use patchbay_tests::require_root;
use patchbay_tests::upstream::*;
use upstream::{Device, Lab, Nat, NatConfig, NatFiltering, NatMapping, ReflectorGuard, Router};

/// How the NAT router under test reaches the exchange (upstream's three wirings).
#[derive(Clone, Copy, Debug, PartialEq)]
enum Uplink {
    /// Straight onto the exchange.
    Direct,
    /// Behind a public ISP router (no NAT).
    PublicIsp,
    /// Behind an ISP that NATs itself (`Nat::Open`, a carrier-grade NAT).
    CgnatIsp,
}

const UPLINKS: [Uplink; 3] = [Uplink::Direct, Uplink::PublicIsp, Uplink::CgnatIsp];

/// A lab with a public router `dc`, a NAT router `nat` (wired as `uplink`) and a device
/// `dev` behind it; UDP reflectors on `dc` and on the exchange, a TCP reflector on `dc`.
struct Case {
    lab: Lab,
    dc: Router,
    nat: Router,
    dev: Device,
    /// The UDP and TCP reflector on `dc`.
    r_dc: SocketAddr,
    /// The UDP reflector on the exchange.
    r_ix: SocketAddr,
    /// The address the reflectors should see for `dev`.
    expected: Ipv4Addr,
    _reflectors: Vec<ReflectorGuard>,
}

async fn case(nat: impl Into<Option<NatConfig>>, uplink: Uplink) -> Result<Case> {
    let nat: Option<NatConfig> = nat.into();
    let lab = Lab::new().await?;
    let dc = lab.add_router("dc").build().await?;
    let isp = match uplink {
        Uplink::Direct => None,
        Uplink::PublicIsp => Some(lab.add_router("isp").build().await?),
        Uplink::CgnatIsp => Some(lab.add_router("isp").nat(Nat::Open).build().await?),
    };
    let mut rb = lab.add_router("nat").nat(nat);
    if let Some(isp) = &isp {
        rb = rb.upstream(isp.id());
    }
    let nat_router = rb.build().await?;
    let dev = lab
        .add_device("dev")
        .uplink(nat_router.id())
        .build()
        .await?;
    let r_dc = SocketAddr::from((dc.uplink_ip().context("dc has no IPv4")?, 3478));
    let r_ix = SocketAddr::from((lab.ix().gw(), 3479));
    let reflectors = vec![
        dc.spawn_reflector(r_dc).await?,
        lab.ix().spawn_reflector(r_ix).await?,
    ];
    start_tcp_reflector(&dc, r_dc).await?;
    let expected = match (uplink, nat.is_some()) {
        (Uplink::CgnatIsp, _) => isp.as_ref().and_then(Router::uplink_ip),
        (_, false) => dev.ip(),
        (_, true) => nat_router.uplink_ip(),
    }
    .context("no IPv4 address to expect")?;
    Ok(Case {
        lab,
        dc,
        nat: nat_router,
        dev,
        r_dc,
        r_ix,
        expected,
        _reflectors: reflectors,
    })
}

/// Upstream `nat.rs` `matrix_connectivity_and_reflexive_ip` and `reflexive_ip_all_combos`:
/// for every NAT tier and uplink wiring, the device pings the public host, and the address a
/// reflector sees, over UDP and TCP, bound to the wildcard or to the device's own address, is
/// the NAT's public address (the ISP's behind a carrier-grade NAT, the device's own without
/// NAT). `Nat::None` behind an ISP is left out, as upstream does: nothing routes back to its
/// LAN.
#[tokio::test]
async fn reflexive_address_for_every_tier_and_uplink() -> Result<()> {
    require_root!();
    let mut failures = vec![];
    for nat in [Nat::None, Nat::Open, Nat::Moderate, Nat::Strict] {
        for uplink in UPLINKS {
            if nat == Nat::None && uplink != Uplink::Direct {
                continue;
            }
            let c = case(nat, uplink).await?;
            let dev_ip = c.dev.ip().context("dev has no IPv4")?;
            let mut seen = vec![];
            ensure!(
                ping(&c.dev, c.r_dc.ip())?,
                "{nat:?}/{uplink:?}: ping dc failed"
            );
            for bind_ip in [Ipv4Addr::UNSPECIFIED, dev_ip] {
                let bind = SocketAddr::from((bind_ip, 0));
                seen.push(("udp", bind_ip, udp_observed(&c.dev, c.r_dc, bind).await?));
                seen.push(("tcp", bind_ip, tcp_observed(&c.dev, c.r_dc, bind).await?));
            }
            for (proto, bind_ip, o) in seen {
                if o.ip() != IpAddr::V4(c.expected) {
                    failures.push(format!(
                        "{nat:?}/{uplink:?}/{proto} from {bind_ip}: saw {o}, expected {}",
                        c.expected
                    ));
                }
            }
        }
    }
    ensure!(failures.is_empty(), "{}", failures.join("\n"));
    Ok(())
}

/// Upstream `nat.rs` `cgnat_reflexive_ip`, `cgnat_shared_reflexive_ip` and
/// `wan_pool_selection`: two home NATs (`Moderate`) behind a carrier-grade NAT (`Open`) get
/// private WAN addresses, and both of their devices show up with the ISP's public address;
/// a home NAT behind a public ISP gets a public WAN address.
#[tokio::test]
async fn cgnat_devices_share_the_isp_address() -> Result<()> {
    require_root!();
    let lab = Lab::new().await?;
    let dc = lab.add_router("dc").build().await?;
    let isp = lab.add_router("isp").nat(Nat::Open).build().await?;
    let isp_public = lab.add_router("isp-public").build().await?;
    let mut homes = vec![];
    for name in ["home-a", "home-b"] {
        let home = lab.add_router(name).upstream(isp.id()).nat(Nat::Moderate);
        homes.push(home.build().await?);
    }
    let home_public = lab.add_router("home-public").upstream(isp_public.id());
    let home_public = home_public.nat(Nat::Moderate).build().await?;
    let r = SocketAddr::from((dc.uplink_ip().context("dc ip")?, 5478));
    let _r = dc.spawn_reflector(r).await?;
    let isp_ip = isp.uplink_ip().context("isp ip")?;
    for (i, home) in homes.iter().enumerate() {
        let wan = home.uplink_ip().context("home wan")?;
        ensure!(
            wan.is_private(),
            "a home behind CGNAT has a private WAN, got {wan}"
        );
        let dev = lab
            .add_device(&format!("dev-{i}"))
            .uplink(home.id())
            .build()
            .await?;
        let o = dev.probe_udp_mapping(r)?;
        ensure!(
            o.ip() == IpAddr::V4(isp_ip),
            "behind CGNAT: saw {o}, expected {isp_ip}"
        );
        ensure!(o.port() != 0);
    }
    ensure!(
        !isp_ip.is_private(),
        "the ISP's address is public: {isp_ip}"
    );
    let wan = home_public.uplink_ip().context("home-public wan")?;
    ensure!(
        !wan.is_private(),
        "a home behind a public ISP has a public WAN, got {wan}"
    );
    Ok(())
}

/// Upstream `nat.rs` `private_isolation_public_reachable`, `same_nat_shared_ip` and
/// `different_nat_isolation`: devices on one NAT LAN ping each other and share the NAT's
/// public address; devices behind another NAT cannot ping into that LAN; everyone pings a
/// public host and the other NAT's public address.
#[tokio::test]
async fn nat_lans_are_isolated_and_share_their_public_address() -> Result<()> {
    require_root!();
    let lab = Lab::new().await?;
    let dc = lab.add_router("dc").build().await?;
    let nat_a = lab.add_router("nat-a").nat(Nat::Moderate).build().await?;
    let nat_b = lab.add_router("nat-b").nat(Nat::Moderate).build().await?;
    let relay = lab.add_device("relay").uplink(dc.id()).build().await?;
    let a1 = lab.add_device("a1").uplink(nat_a.id()).build().await?;
    let a2 = lab.add_device("a2").uplink(nat_a.id()).build().await?;
    let b1 = lab.add_device("b1").uplink(nat_b.id()).build().await?;
    let ip = |d: &Device| d.ip().map(IpAddr::V4).context("no IPv4");
    let (wan_a, wan_b) = (
        IpAddr::V4(nat_a.uplink_ip().context("nat-a wan")?),
        IpAddr::V4(nat_b.uplink_ip().context("nat-b wan")?),
    );
    ensure!(ping(&a1, ip(&a2)?)?, "a1 -> a2 on the same LAN");
    ensure!(!ping(&a1, ip(&b1)?)?, "a1 reached b1's private address");
    ensure!(!ping(&b1, ip(&a1)?)?, "b1 reached a1's private address");
    for (from, other_wan) in [(&a1, wan_b), (&b1, wan_a)] {
        ensure!(ping(from, ip(&relay)?)?, "{} -> relay", from.name());
        ensure!(ping(from, other_wan)?, "{} -> {other_wan}", from.name());
    }
    let r = SocketAddr::from((dc.uplink_ip().context("dc ip")?, 12000));
    let _r = dc.spawn_reflector(r).await?;
    for (d, wan) in [(&a1, wan_a), (&a2, wan_a), (&b1, wan_b)] {
        let o = d.probe_udp_mapping(r)?;
        ensure!(o.ip() == wan, "{}: saw {o}, expected {wan}", d.name());
    }
    Ok(())
}

/// The external ports the device's fixed probe port gets towards the two reflectors.
async fn ports_towards_two_hosts(c: &Case) -> Result<(u16, u16)> {
    let (dc, ix) = (c.r_dc, c.r_ix);
    Ok((
        c.dev.probe_udp_mapping(dc)?.port(),
        c.dev.probe_udp_mapping(ix)?.port(),
    ))
}

/// Upstream `nat.rs` `port_mapping_eim_stable` and `cgnat_port_mapping_eim`: behind
/// `Nat::Moderate` (endpoint-independent mapping), on every uplink wiring, one internal
/// socket gets the same external port towards two hosts (`probe_udp_mapping` binds a fixed
/// port per device, as upstream's).
#[tokio::test]
async fn endpoint_independent_mapping_keeps_the_port() -> Result<()> {
    require_root!();
    for uplink in UPLINKS {
        let c = case(Nat::Moderate, uplink).await?;
        let (p1, p2) = ports_towards_two_hosts(&c).await?;
        ensure!(p1 == p2, "{uplink:?}: EIM gave ports {p1} and {p2}");
    }
    Ok(())
}

/// Upstream `nat.rs` `port_mapping_edm_changes`: behind `Nat::Strict` (endpoint-dependent
/// mapping with random ports), on every uplink wiring, one internal socket gets a different
/// external port towards each host.
#[tokio::test]
async fn endpoint_dependent_mapping_changes_the_port() -> Result<()> {
    require_root!();
    for uplink in UPLINKS {
        let c = case(Nat::Strict, uplink).await?;
        let (p1, p2) = ports_towards_two_hosts(&c).await?;
        ensure!(p1 != p2, "{uplink:?}: EDM kept port {p1} for two hosts");
    }
    Ok(())
}

/// Upstream `nat.rs` `fullcone_external_reachable`, `cgnat_external_reachable`,
/// `adf_allows_different_port_from_contacted_host` and `adf_drops_from_uncontacted_host`,
/// as one table. After the device sent to the reflector on `dc`, who may send to its public
/// endpoint: another port of `dc` (the contacted host), and a host it never contacted?
///
/// | NAT | contacted host, other port | other host |
/// |---|---|---|
/// | `Open` (EIF), also as the ISP's CGNAT | yes | yes |
/// | EIM + ADF (`NatConfig`) | yes | no |
/// | `Moderate` (APDF) | no | no |
/// | `Strict` (EDM + APDF) | no | no |
#[tokio::test]
async fn filtering_per_nat_tier() -> Result<()> {
    require_root!();
    let adf = NatConfig::builder()
        .mapping(NatMapping::EndpointIndependent)
        .filtering(NatFiltering::AddressDependent)
        .build()?;
    let table: [(&str, Option<NatConfig>, bool, bool); 4] = [
        ("open", Nat::Open.into(), true, true),
        ("adf", Some(adf), true, false),
        ("moderate", Nat::Moderate.into(), false, false),
        ("strict", Nat::Strict.into(), false, false),
    ];
    let mut failures = vec![];
    for (name, nat, same_host, other_host) in table {
        let c = case(nat, Uplink::Direct).await?;
        failures.extend(check_filtering(&c, name, same_host, other_host).await?);
    }
    // A device straight on a carrier-grade NAT's LAN (`Open`): reachable by anyone too.
    let lab = Lab::new().await?;
    let dc = lab.add_router("dc").build().await?;
    let isp = lab.add_router("isp").nat(Nat::Open).build().await?;
    let dev = lab.add_device("dev").uplink(isp.id()).build().await?;
    let r_dc = SocketAddr::from((dc.uplink_ip().context("dc ip")?, 3478));
    let _r = dc.spawn_reflector(r_dc).await?;
    let public = open_mapping(&dev, r_dc, SocketAddr::from(([0; 4], 4500))).await?;
    ensure!(public.ip() == IpAddr::V4(isp.uplink_ip().context("isp ip")?));
    let wait = Duration::from_millis(600);
    ensure!(
        udp_reply(&dc, public, wait).await?.is_some(),
        "CGNAT (EIF): dc could not reach the mapping {public}"
    );
    ensure!(failures.is_empty(), "{}", failures.join("\n"));
    Ok(())
}

/// Opens a mapping from `c.dev` towards `dc`'s reflector and checks which senders reach it.
async fn check_filtering(
    c: &Case,
    name: &str,
    same_host: bool,
    other_host: bool,
) -> Result<Vec<String>> {
    // A host the device never sent to; its link is proven first, so that silence below is
    // the NAT's doing.
    let other = c.lab.add_router("other").build().await?;
    udp_observed(&other, c.r_ix, SocketAddr::from(([0; 4], 0))).await?;
    let public = open_mapping(&c.dev, c.r_dc, SocketAddr::from(([0; 4], 4500))).await?;
    let wait = Duration::from_millis(600);
    let got_same = udp_reply(&c.dc, public, wait).await?.is_some();
    let got_other = udp_reply(&other, public, wait).await?.is_some();
    let mut failures = vec![];
    if got_same != same_host {
        failures.push(format!(
            "{name}: from dc's other port: arrived={got_same}, want {same_host}"
        ));
    }
    if got_other != other_host {
        failures.push(format!(
            "{name}: from another host: arrived={got_other}, want {other_host}"
        ));
    }
    Ok(failures)
}

/// A lab for hole punching: two NATs of one kind, a device behind each, and a reflector
/// ("STUN server") on a public device.
async fn punch_lab(nat: Nat) -> Result<(Lab, Device, Device, SocketAddr, ReflectorGuard)> {
    let lab = Lab::new().await?;
    let dc = lab.add_router("dc").build().await?;
    let nat1 = lab.add_router("nat1").nat(nat).build().await?;
    let nat2 = lab.add_router("nat2").nat(nat).build().await?;
    let stun = lab.add_device("stun").uplink(dc.id()).build().await?;
    let dev1 = lab.add_device("dev1").uplink(nat1.id()).build().await?;
    let dev2 = lab.add_device("dev2").uplink(nat2.id()).build().await?;
    let r = SocketAddr::from((stun.ip().context("stun ip")?, 9999));
    let guard = stun.spawn_reflector(r).await?;
    Ok((lab, dev1, dev2, r, guard))
}

/// Upstream `holepunch.rs` `fullcone_holepunch`: behind two `Nat::Open` routers one side
/// sends first and the other follows a second later; both hear each other (the first side's
/// datagrams reach the second at once: full cone needs no simultaneous open).
#[tokio::test]
async fn holepunch_open_nats_one_side_first() -> Result<()> {
    require_root!();
    let (_lab, d1, d2, r, _g) = punch_lab(Nat::Open).await?;
    let late = Duration::from_secs(1);
    let heard = hole_punch(&d1, &d2, r, late, Duration::from_secs(5)).await?;
    ensure!(heard == (true, true), "heard (dev1, dev2) = {heard:?}");
    Ok(())
}

/// Upstream `holepunch.rs` `home_nat_holepunch`: behind two `Nat::Moderate` routers (EIM +
/// APDF), with no firewall added, both peers hear each other when they start at once and
/// when one starts 200 ms late (its first datagrams are dropped by the other NAT without
/// taking the mapped port away). Three labs each.
#[tokio::test]
async fn holepunch_moderate_nats_at_once_and_staggered() -> Result<()> {
    require_root!();
    for late_ms in [0, 200] {
        for run in 0..3 {
            let (_lab, d1, d2, r, _g) = punch_lab(Nat::Moderate).await?;
            let late = Duration::from_millis(late_ms);
            let heard = hole_punch(&d1, &d2, r, late, Duration::from_secs(8)).await?;
            ensure!(
                heard == (true, true),
                "{late_ms} ms late, run {run}: heard {heard:?}"
            );
        }
    }
    Ok(())
}

/// Upstream's `Nat::Strict` docs ("hole punching needs a relay"): behind two symmetric NATs
/// the endpoint a reflector sees is not the one a peer is sent to, so neither peer hears the
/// other.
#[tokio::test]
async fn holepunch_strict_nats_fails() -> Result<()> {
    require_root!();
    let (_lab, d1, d2, r, _g) = punch_lab(Nat::Strict).await?;
    let heard = hole_punch(&d1, &d2, r, Duration::ZERO, Duration::from_secs(2)).await?;
    ensure!(heard == (false, false), "symmetric NATs punched: {heard:?}");
    Ok(())
}

/// Upstream `hairpin.rs` (`fullcone_allows`, `home_nat_blocks`, `custom_allows`): device `a`
/// opens a mapping; its LAN neighbour `b` sends to `a`'s public endpoint. With hairpinning
/// on (EIM + EIF, and EIM + APDF) the router turns the datagram back into the LAN and `a`
/// answers; `Nat::Moderate` leaves hairpinning off and nothing comes back.
#[tokio::test]
async fn hairpin_per_nat_config() -> Result<()> {
    require_root!();
    let eim = NatConfig::builder().mapping(NatMapping::EndpointIndependent);
    let table: [(&str, NatConfig, bool); 3] = [
        (
            "eim+eif+hairpin",
            eim.clone()
                .filtering(NatFiltering::EndpointIndependent)
                .hairpin(true)
                .build()?,
            true,
        ),
        (
            "moderate",
            Nat::Moderate.to_config().context("moderate")?,
            false,
        ),
        (
            "eim+apdf+hairpin",
            eim.filtering(NatFiltering::AddressAndPortDependent)
                .hairpin(true)
                .build()?,
            true,
        ),
    ];
    for (name, nat, answers) in table {
        let lab = Lab::new().await?;
        let dc = lab.add_router("dc").build().await?;
        let r = lab.add_router("r").nat(nat).build().await?;
        let a = lab.add_device("a").uplink(r.id()).build().await?;
        let b = lab.add_device("b").uplink(r.id()).build().await?;
        let refl = SocketAddr::from((dc.uplink_ip().context("dc ip")?, 9100));
        let _g = dc.spawn_reflector(refl).await?;
        // b's own path out works: silence below is the router's doing.
        b.probe_udp_mapping(refl)?;
        let a_public = open_mapping(&a, refl, SocketAddr::from(([0; 4], 4600))).await?;
        let reply = udp_reply(&b, a_public, Duration::from_millis(800)).await?;
        ensure!(
            reply.is_some() == answers,
            "{name}: b -> a's public {a_public}: reply {reply:?}, want one: {answers}"
        );
    }
    Ok(())
}

/// Upstream `nat_rebind.rs` `mode_port_change`: `Router::set_nat` at run time flips the
/// mapping behaviour: `Moderate` to `Strict` makes the external port depend on the
/// destination, `Strict` to `Moderate` makes it stable.
#[tokio::test]
async fn set_nat_switches_the_mapping_behaviour() -> Result<()> {
    require_root!();
    for (from, to, stable) in [
        (Nat::Moderate, Nat::Strict, false),
        (Nat::Strict, Nat::Moderate, true),
    ] {
        let c = case(from, Uplink::Direct).await?;
        c.nat.set_nat(to).await?;
        let (p1, p2) = ports_towards_two_hosts(&c).await?;
        ensure!(
            (p1 == p2) == stable,
            "{from:?} -> {to:?}: ports {p1} and {p2}, want stable: {stable}"
        );
    }
    Ok(())
}

/// Upstream `nat_rebind.rs` `mode_ip_change`: a router switched from `Nat::None` to
/// `Nat::Moderate` at run time makes its device show up with the router's address instead of
/// its own.
#[tokio::test]
async fn set_nat_from_none_hides_the_device() -> Result<()> {
    require_root!();
    let c = case(Nat::None, Uplink::Direct).await?;
    let any = SocketAddr::from(([0; 4], 0));
    let before = udp_observed(&c.dev, c.r_dc, any).await?;
    ensure!(
        before.ip() == IpAddr::V4(c.expected),
        "without NAT: saw {before}"
    );
    c.nat.set_nat(Nat::Moderate).await?;
    let wan = c.nat.uplink_ip().context("nat wan")?;
    let after = udp_observed(&c.dev, c.r_dc, any).await?;
    ensure!(
        after.ip() == IpAddr::V4(wan),
        "after set_nat: saw {after}, want {wan}"
    );
    Ok(())
}

/// Upstream `nat_rebind.rs` `conntrack_flush`: behind `Nat::Strict` one flow keeps its
/// random external port while its conntrack entry lives; `Router::flush_nat_state` forgets
/// it, and the same flow gets a new port.
#[tokio::test]
async fn flush_nat_state_forgets_the_mapping() -> Result<()> {
    require_root!();
    let c = case(Nat::Strict, Uplink::Direct).await?;
    let first = c.dev.probe_udp_mapping(c.r_dc)?;
    let again = c.dev.probe_udp_mapping(c.r_dc)?;
    ensure!(
        first == again,
        "one flow, two mappings before the flush: {first}, {again}"
    );
    c.nat.flush_nat_state().await?;
    let after = c.dev.probe_udp_mapping(c.r_dc)?;
    if after.port() == first.port() {
        bail!("the flow kept port {} across flush_nat_state", first.port());
    }
    Ok(())
}
