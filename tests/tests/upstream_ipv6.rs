//! Upstream patchbay 0.7's IPv6 tests, in our words, against the compat API (`upstream`):
//! what upstream checks in `src/tests/ipv6.rs`, `nat64.rs` and the IPv6 cases of `nat.rs`:
//! handles' IPv6 accessors, v6-only and dual-stack LANs, the IPv6 NAT modes (none,
//! masquerade, NPTv6), link-local addresses, and NAT64, each with real traffic.
//!
//! Our NAT64 prefix is `2001:db8:64::/96`, not upstream's `64:ff9b::/96` (the well-known
//! prefix must not carry non-global IPv4, RFC 6052 3.1; docs/porting.md, "Addresses"), so
//! the tests build NAT64 addresses with the core's `patchbay::native::nat64_embed` (upstream 0.7 has
//! no public helper; its users write the prefix by hand).
//!
//! Runs as root on the host, and in virtual time in the UML partition of `cargo xtask test`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use patchbay_tests::require_root;
use patchbay_tests::upstream::*;
use upstream::{Device, IpSupport, Lab, Nat, NatV6Mode, ReflectorGuard, Router};

const ANY4: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0);
const ANY6: SocketAddr = SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 0);

/// A dual-stack public router `dc` with UDP reflectors on both families and TCP echo
/// servers; returns the v4 and v6 reflector addresses (echo servers on port 7 of both).
async fn dc(lab: &Lab) -> Result<(Router, SocketAddr, SocketAddr, Vec<ReflectorGuard>)> {
    let dc = lab
        .add_router("dc")
        .ip_support(IpSupport::DualStack)
        .build()
        .await?;
    let v4 = SocketAddr::from((dc.uplink_ip().context("dc v4")?, 3478));
    let v6 = SocketAddr::from((dc.uplink_ip_v6().context("dc v6")?, 3478));
    let mut guards = vec![];
    for r in [v4, v6] {
        guards.push(dc.spawn_reflector(r).await?);
        start_tcp_echo(&dc, SocketAddr::new(r.ip(), 7)).await?;
    }
    Ok((dc, v4, v6, guards))
}

fn echo_of(reflector: SocketAddr) -> SocketAddr {
    SocketAddr::new(reflector.ip(), 7)
}

/// Upstream `ipv6.rs` `router_accessors` and `device_accessors`, and the link-local
/// accessors: a dual-stack router reports its IPv6 uplink, LAN prefix and gateway and its
/// IPv6 NAT mode; its device's IPv6 address is in that prefix and the device reaches the
/// gateway, and the router's LAN link-local address through `eth0`; a router built without
/// `ip_support` is IPv4-only (upstream's default) and so is its device.
#[tokio::test]
async fn accessors_match_the_addresses_in_use() -> Result<()> {
    require_root!();
    let lab = Lab::new().await?;
    let r = lab
        .add_router("r")
        .ip_support(IpSupport::DualStack)
        .nat_v6(NatV6Mode::Masquerade)
        .build()
        .await?;
    ensure!(r.ip_support() == Some(IpSupport::DualStack));
    ensure!(r.nat_v6_mode() == Some(NatV6Mode::Masquerade));
    ensure!(r.uplink_ip_v6().is_some(), "no IPv6 uplink");
    let (net, gw) = (
        r.downstream_cidr_v6().context("no IPv6 LAN")?,
        r.downstream_gw_v6().context("no IPv6 gateway")?,
    );
    let dev = lab.add_device("dev").uplink(r.id()).build().await?;
    let ip6 = dev.ip6().context("no IPv6 on dev")?;
    let eth0 = dev.default_iface().context("no default interface")?;
    ensure!(eth0.ip6() == Some(ip6) && net.contains(&ip6) && net.contains(&gw));
    ensure!(ping(&dev, gw)?, "dev -> its IPv6 gateway {gw}");
    let ll = eth0.ll6().context("no link-local address")?;
    ensure!(
        ll.segments()[0] & 0xffc0 == 0xfe80,
        "eth0's link-local {ll}"
    );
    let r_ll = r
        .iface("lan")
        .and_then(|i| i.ll6())
        .context("no LAN link-local")?;
    ensure!(
        ping(&dev, format!("{r_ll}%eth0"))?,
        "dev -> the router's {r_ll}%eth0"
    );

    let r4 = lab.add_router("r4").build().await?;
    ensure!(r4.ip_support() == Some(IpSupport::V4Only));
    ensure!(r4.uplink_ip_v6().is_none() && r4.downstream_cidr_v6().is_none());
    let dev4 = lab.add_device("dev4").uplink(r4.id()).build().await?;
    ensure!(dev4.ip6().is_none() && dev4.ip().is_some());
    Ok(())
}

/// Upstream `ipv6.rs` `v6_only_no_v4_routes` and `v6_only_tcp_roundtrip`: a device on a
/// v6-only LAN has no IPv4 address; UDP and TCP over IPv6 work (the reflector sees the
/// device's own address: no NAT), and IPv4 to the exchange does not.
#[tokio::test]
async fn v6_only_lan() -> Result<()> {
    require_root!();
    let lab = Lab::new().await?;
    let (_dc, _r4, r6, _g) = dc(&lab).await?;
    let r = lab
        .add_router("r")
        .ip_support(IpSupport::V6Only)
        .build()
        .await?;
    let dev = lab.add_device("dev").uplink(r.id()).build().await?;
    ensure!(
        dev.ip().is_none(),
        "a v6-only device has IPv4 {:?}",
        dev.ip()
    );
    let seen = udp_observed(&dev, r6, ANY6).await?;
    ensure!(
        seen.ip() == IpAddr::V6(dev.ip6().context("no IPv6")?),
        "saw {seen}"
    );
    tcp_echo(&dev, echo_of(r6), Duration::from_secs(2)).await?;
    ensure!(
        !ping(&dev, lab.ix().gw())?,
        "IPv4 ping from a v6-only device"
    );
    Ok(())
}

/// Upstream `ipv6.rs` `dual_stack_public_addrs`: on a dual-stack LAN without NAT the
/// reflectors see the device's own IPv4 and IPv6 addresses.
#[tokio::test]
async fn dual_stack_without_nat() -> Result<()> {
    require_root!();
    let lab = Lab::new().await?;
    let (dc, r4, r6, _g) = dc(&lab).await?;
    let dev = lab.add_device("dev").uplink(dc.id()).build().await?;
    let (o4, o6) = (
        udp_observed(&dev, r4, ANY4).await?,
        udp_observed(&dev, r6, ANY6).await?,
    );
    ensure!(
        o4.ip() == IpAddr::V4(dev.ip().context("no IPv4")?),
        "saw {o4}"
    );
    ensure!(
        o6.ip() == IpAddr::V6(dev.ip6().context("no IPv6")?),
        "saw {o6}"
    );
    Ok(())
}

/// A dual-stack `Nat::Moderate` router with IPv6 NAT `mode` (behind a dual-stack ISP when
/// `behind_isp`) and a device behind it.
async fn v6_nat(lab: &Lab, mode: NatV6Mode, behind_isp: bool) -> Result<(Router, Device)> {
    let mut b = lab
        .add_router("nat")
        .ip_support(IpSupport::DualStack)
        .nat(Nat::Moderate);
    if behind_isp {
        let isp = lab
            .add_router("isp")
            .ip_support(IpSupport::DualStack)
            .build()
            .await?;
        b = b.upstream(isp.id());
    }
    let nat = b.nat_v6(mode).build().await?;
    let dev = lab.add_device("dev").uplink(nat.id()).build().await?;
    Ok((nat, dev))
}

/// Upstream `nat.rs` `v6_masquerade`, `v6_masquerade_port_mapping` and `v6_no_translation`:
/// with `NatV6Mode::Masquerade` (behind an ISP, and straight on the exchange) the reflector
/// sees the router's IPv6 uplink address; with `NatV6Mode::None` the device's own; IPv4 is
/// NATed either way.
#[tokio::test]
async fn v6_masquerade_and_no_translation() -> Result<()> {
    require_root!();
    for (mode, behind_isp) in [
        (NatV6Mode::Masquerade, true),
        (NatV6Mode::Masquerade, false),
        (NatV6Mode::None, true),
    ] {
        let lab = Lab::new().await?;
        let (_dc, r4, r6, _g) = dc(&lab).await?;
        let (nat, dev) = v6_nat(&lab, mode, behind_isp).await?;
        let want = match mode {
            NatV6Mode::Masquerade => nat.uplink_ip_v6(),
            _ => dev.ip6(),
        }
        .context("no IPv6 to expect")?;
        let o6 = udp_observed(&dev, r6, ANY6).await?;
        ensure!(
            o6.ip() == IpAddr::V6(want),
            "{mode:?}: saw {o6}, want {want}"
        );
        let o4 = udp_observed(&dev, r4, ANY4).await?;
        ensure!(
            o4.ip() == IpAddr::V4(nat.uplink_ip().context("nat v4")?),
            "v4 saw {o4}"
        );
    }
    Ok(())
}

/// Upstream `ipv6.rs` `dual_stack_home_nat_udp`, made precise: with `NatV6Mode::Nptv6`
/// (RFC 6296, as upstream's `snat prefix to` / `dnat prefix to`) the reflector sees another
/// prefix with the device's own interface identifier, and, the mapping being stateless and
/// 1:1, an outside host that never heard from the device reaches it at that address. IPv4
/// is NATed.
#[tokio::test]
async fn nptv6_maps_the_prefix_both_ways() -> Result<()> {
    require_root!();
    let lab = Lab::new().await?;
    let (dc, r4, r6, _g) = dc(&lab).await?;
    let (nat, dev) = v6_nat(&lab, NatV6Mode::Nptv6, false).await?;
    let own = dev.ip6().context("no IPv6")?;
    let o4 = udp_observed(&dev, r4, ANY4).await?;
    ensure!(
        o4.ip() == IpAddr::V4(nat.uplink_ip().context("nat v4")?),
        "v4 saw {o4}"
    );
    let mapped = open_mapping(&dev, r6, SocketAddr::from(([0u16; 8], 4700))).await?;
    let IpAddr::V6(seen) = mapped.ip() else {
        anyhow::bail!("an IPv6 reflector saw {mapped}");
    };
    let low64 = |a: Ipv6Addr| u128::from(a) & u128::from(u64::MAX);
    ensure!(
        seen != own && low64(seen) == low64(own) && Some(seen) != nat.uplink_ip_v6(),
        "NPTv6: the device {own} was seen as {seen}"
    );
    let got = udp_reply(
        &dc,
        SocketAddr::new(seen.into(), 4700),
        Duration::from_secs(1),
    )
    .await?;
    ensure!(
        got.is_some(),
        "unsolicited to the NPTv6 address {seen}: nothing came back"
    );
    Ok(())
}

/// Upstream `nat64.rs` `nat64_udp_v6_to_v4`, `nat64_tcp_v6_to_v4` and
/// `nat64_preserves_native_v6`: behind a dual-stack `Moderate` router with
/// `NatV6Mode::Nat64`, a phone reaches an IPv4-only server through the NAT64 prefix over UDP
/// (the server sees the router's IPv4 address) and TCP, and plain IPv4 and native IPv6
/// still work.
#[tokio::test]
async fn nat64_reaches_ipv4_hosts() -> Result<()> {
    require_root!();
    let lab = Lab::new().await?;
    let (_dc, r4, r6, _g) = dc(&lab).await?;
    let v4only = lab.add_router("v4only").build().await?;
    let v4_ip = v4only.uplink_ip().context("v4only ip")?;
    let r_v4only = SocketAddr::from((v4_ip, 3478));
    let _g4 = v4only.spawn_reflector(r_v4only).await?;
    start_tcp_echo(&v4only, echo_of(r_v4only)).await?;
    let carrier = lab
        .add_router("carrier")
        .ip_support(IpSupport::DualStack)
        .nat(Nat::Moderate)
        .nat_v6(NatV6Mode::Nat64)
        .build()
        .await?;
    let phone = lab.add_device("phone").uplink(carrier.id()).build().await?;
    ensure!(
        phone.ip6().is_some() && phone.ip().is_some(),
        "a dual-stack phone"
    );
    let via64 = SocketAddr::from((patchbay::native::nat64_embed(v4_ip), 3478));
    let seen = udp_observed(&phone, via64, ANY6).await?;
    let wan = carrier.uplink_ip().context("carrier v4")?;
    ensure!(
        seen.ip() == IpAddr::V4(wan),
        "through NAT64 the server saw {seen}, want {wan}"
    );
    tcp_echo(&phone, echo_of(via64), Duration::from_secs(3)).await?;
    let o4 = udp_observed(&phone, r4, ANY4).await?;
    ensure!(o4.ip() == IpAddr::V4(wan), "plain IPv4 saw {o4}");
    let o6 = udp_observed(&phone, r6, ANY6).await?;
    ensure!(
        o6.ip() == IpAddr::V6(phone.ip6().context("no IPv6")?),
        "native IPv6 saw {o6}"
    );
    Ok(())
}
