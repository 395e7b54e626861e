//! Upstream patchbay 0.7's own tests of changing a device's links at run time, in our words,
//! against the compat API (`upstream`): what upstream checks in `src/tests/route.rs`,
//! `iface.rs` and `link_condition.rs` (`link_down_up`): `Iface::replug`, `set_default_route`,
//! `link_down`/`link_up`, `add_iface`/`Iface::remove`, `renew_ip`, `add_ip`, and dummy
//! interfaces, each checked with real traffic.
//!
//! Runs as root on the host, and in virtual time in the UML partition of `cargo xtask test`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use patchbay_tests::require_root;
use patchbay_tests::upstream::*;
use upstream::{
    Device, IfaceConfig, Ipv4Net, Lab, LinkCondition, LinkDirection, Nat, ReflectorGuard, Router,
};

const ANY: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0);

fn wan(r: &Router) -> Result<IpAddr> {
    let ip = r
        .uplink_ip()
        .with_context(|| format!("{} has no IPv4 uplink", r.name()))?;
    Ok(IpAddr::V4(ip))
}

fn in_lan(r: &Router, ip: Ipv4Addr) -> Result<bool> {
    let net = r
        .downstream_cidr()
        .with_context(|| format!("{} has no LAN", r.name()))?;
    Ok(net.contains(&ip))
}

/// A public router `dc` with a UDP reflector, a TCP reflector and a TCP echo server.
async fn dc_with_servers(lab: &Lab) -> Result<(Router, SocketAddr, SocketAddr, ReflectorGuard)> {
    let dc = lab.add_router("dc").build().await?;
    let ip = dc.uplink_ip().context("dc has no IPv4")?;
    let reflector = SocketAddr::from((ip, 3478));
    let guard = dc.spawn_reflector(reflector).await?;
    start_tcp_reflector(&dc, reflector).await?;
    let echo = SocketAddr::from((ip, 7));
    start_tcp_echo(&dc, echo).await?;
    Ok((dc, reflector, echo, guard))
}

/// Upstream `route.rs` `replug_iface_udp`, `replug_iface_reflexive_ip`,
/// `proc_net_route_shows_namespace_routes`, and `iface.rs` `replug_to_different_subnet`:
/// `Iface::replug` moves `eth0` from one NAT router to another and then to a public router;
/// each time the device gets an address from the new router's LAN, UDP gets through and the
/// reflector sees the new router's public address (or the device's own, without NAT). The
/// device's `/proc/net/route`, read in-process on the device, lists only its own interfaces.
#[tokio::test]
async fn replug_moves_the_interface_to_another_router() -> Result<()> {
    require_root!();
    let lab = Lab::new().await?;
    let (_dc, reflector, _echo, _g) = dc_with_servers(&lab).await?;
    let nat_a = lab.add_router("nat-a").nat(Nat::Moderate).build().await?;
    let nat_b = lab.add_router("nat-b").nat(Nat::Moderate).build().await?;
    let public = lab.add_router("public").build().await?;
    let dev = lab.add_device("dev").uplink(nat_a.id()).build().await?;
    let seen = udp_observed(&dev, reflector, ANY).await?;
    ensure!(seen.ip() == wan(&nat_a)?, "behind nat-a: saw {seen}");
    for to in [&nat_b, &public] {
        let old = dev.ip().context("no IPv4")?;
        dev.iface("eth0").context("eth0")?.replug(to.id()).await?;
        let new = dev.ip().context("no IPv4 after replug")?;
        ensure!(
            new != old && in_lan(to, new)?,
            "on {}: address {new} (was {old})",
            to.name()
        );
        let want = match to.nat_config() {
            Some(_) => wan(to)?,
            None => IpAddr::V4(new),
        };
        let seen = udp_observed(&dev, reflector, ANY).await?;
        ensure!(
            seen.ip() == want,
            "behind {}: saw {seen}, want {want}",
            to.name()
        );
    }
    let routes = dev.run_sync(|| Ok(std::fs::read_to_string("/proc/net/route")?))?;
    let ifaces: Vec<&str> = routes
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    ensure!(
        ifaces.contains(&"eth0") && ifaces.iter().all(|i| *i == "eth0" || *i == "lo"),
        "/proc/net/route on the device:\n{routes}"
    );
    Ok(())
}

/// Upstream `route.rs` `switch_default_reflexive_ip`, `switch_default_multiple_times` and
/// `switch_default_tcp_roundtrip`: a device on two NATs (`eth0` behind a `Moderate` one,
/// `eth1` behind a `Strict` one) switches its default route back and forth; each time, UDP
/// and TCP, from the wildcard address and from the device's default address, come out of the
/// chosen NAT, and a TCP exchange works.
#[tokio::test]
async fn set_default_route_switches_the_path() -> Result<()> {
    require_root!();
    let lab = Lab::new().await?;
    let (_dc, reflector, echo, _g) = dc_with_servers(&lab).await?;
    let nat_a = lab.add_router("nat-a").nat(Nat::Moderate).build().await?;
    let nat_b = lab.add_router("nat-b").nat(Nat::Strict).build().await?;
    let dev = lab
        .add_device("dev")
        .iface("eth0", nat_a.id())
        .iface("eth1", nat_b.id())
        .default_via("eth0")
        .build()
        .await?;
    for (via, nat) in [
        ("eth0", &nat_a),
        ("eth1", &nat_b),
        ("eth0", &nat_a),
        ("eth1", &nat_b),
    ] {
        dev.set_default_route(via).await?;
        let want = wan(nat)?;
        let dev_ip = dev.ip().context("no IPv4")?;
        let iface_ip = dev.iface(via).and_then(|i| i.ip());
        ensure!(
            iface_ip == Some(dev_ip),
            "dev.ip() {dev_ip} is not {via}'s {iface_ip:?}"
        );
        for bind in [ANY, SocketAddr::from((dev_ip, 0))] {
            let udp = udp_observed(&dev, reflector, bind).await?;
            let tcp = tcp_observed(&dev, reflector, bind).await?;
            ensure!(
                udp.ip() == want && tcp.ip() == want,
                "via {via} from {bind}: udp saw {udp}, tcp saw {tcp}, want {want}"
            );
        }
        tcp_echo(&dev, echo, Duration::from_secs(2)).await?;
    }
    Ok(())
}

/// Upstream `link_condition.rs` `link_down_up` and `iface.rs` `build_time_down`: a link taken
/// down stops UDP and TCP; brought up, both work again. An interface built down
/// (`IfaceConfig::down`) has its address, is down in the kernel, and comes up with
/// `link_up`.
#[tokio::test]
async fn link_down_breaks_and_link_up_restores() -> Result<()> {
    require_root!();
    let lab = Lab::new().await?;
    let (dc, reflector, echo, _g) = dc_with_servers(&lab).await?;
    let dev = lab.add_device("dev").uplink(dc.id()).build().await?;
    let eth0 = dev.iface("eth0").context("eth0")?;
    let short = Duration::from_millis(800);
    udp_observed(&dev, reflector, ANY)
        .await
        .context("before link_down")?;
    tcp_echo(&dev, echo, short)
        .await
        .context("before link_down")?;
    eth0.link_down().await?;
    ensure!(
        udp_observed(&dev, reflector, ANY).await.is_err(),
        "UDP with the link down"
    );
    ensure!(
        tcp_echo(&dev, echo, short).await.is_err(),
        "TCP with the link down"
    );
    eth0.link_up().await?;
    udp_observed(&dev, reflector, ANY)
        .await
        .context("after link_up")?;
    tcp_echo(&dev, echo, Duration::from_secs(3))
        .await
        .context("after link_up")?;

    let cold = lab
        .add_device("cold")
        .iface("eth0", IfaceConfig::routed(dc.id()).down())
        .build()
        .await?;
    let iface = cold.iface("eth0").context("eth0")?;
    ensure!(iface.ip().is_some(), "a down interface keeps its address");
    // The link state is the kernel's: read it with iproute2 inside the device, as upstream's
    // test does.
    ensure!(link_state(&cold)?.contains("state DOWN"), "built down");
    iface.link_up().await?;
    ensure!(
        !link_state(&cold)?.contains("state DOWN"),
        "up after link_up"
    );
    udp_observed(&cold, reflector, ANY)
        .await
        .context("after link_up")?;
    Ok(())
}

fn link_state(dev: &Device) -> Result<String> {
    let mut cmd = std::process::Command::new("ip");
    cmd.args(["link", "show", "eth0"])
        .stdout(std::process::Stdio::piped());
    let out = dev.spawn_command_sync(cmd)?.wait_with_output()?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Upstream `iface.rs` `add_remove_runtime`, `iface_handle_after_removal` and
/// `duplicate_iface_name_rejected`: `add_iface` gives a device behind a home NAT a second,
/// public interface; with the default route on it the reflector sees that interface's
/// address; removing `eth0` leaves traffic on `eth1`; the removed interface's handle has no
/// address and refuses `link_down`; removing the last interface, and adding a name twice, at
/// run time or at build, are errors.
#[tokio::test]
async fn add_and_remove_interfaces_at_run_time() -> Result<()> {
    require_root!();
    let lab = Lab::new().await?;
    let (dc, reflector, _echo, _g) = dc_with_servers(&lab).await?;
    let home = lab.add_router("home").nat(Nat::Moderate).build().await?;
    let dev = lab.add_device("dev").uplink(home.id()).build().await?;
    ensure!(dev.interfaces().len() == 1);
    let eth1 = dev.add_iface("eth1", dc.id()).await?;
    ensure!(dev.interfaces().len() == 2 && dev.iface("eth1").is_some());
    let eth1_ip = eth1.ip().context("eth1 has no IPv4")?;
    ensure!(
        !eth1_ip.is_private() && in_lan(&dc, eth1_ip)?,
        "eth1 got {eth1_ip}"
    );
    dev.set_default_route("eth1").await?;
    let seen = udp_observed(&dev, reflector, ANY).await?;
    ensure!(seen.ip() == IpAddr::V4(eth1_ip), "via eth1: saw {seen}");

    let eth0 = dev.iface("eth0").context("eth0")?;
    eth0.remove().await?;
    ensure!(dev.interfaces().len() == 1 && dev.iface("eth0").is_none());
    ensure!(
        eth0.ip().is_none(),
        "a removed interface's handle has no address"
    );
    ensure!(
        eth0.link_down().await.is_err(),
        "link_down on a removed interface"
    );
    let seen = udp_observed(&dev, reflector, ANY).await?;
    ensure!(
        seen.ip() == IpAddr::V4(eth1_ip),
        "after removing eth0: saw {seen}"
    );

    ensure!(eth1.remove().await.is_err(), "removing the last interface");
    ensure!(
        dev.add_iface("eth1", dc.id()).await.is_err(),
        "adding eth1 twice"
    );
    let twice = lab
        .add_device("twice")
        .iface("eth0", dc.id())
        .iface("eth0", dc.id());
    ensure!(twice.build().await.is_err(), "building eth0 twice");
    Ok(())
}

/// Upstream `iface.rs` `renew_ip` and `add_secondary_ip`: `renew_ip` gives the interface a
/// new address of the same LAN, which the handle reports and a neighbour reaches (the old
/// one no longer answers); `add_ip` adds a second address, and both answer.
#[tokio::test]
async fn renew_ip_and_secondary_addresses() -> Result<()> {
    require_root!();
    let lab = Lab::new().await?;
    let dc = lab.add_router("dc").build().await?;
    let dev = lab.add_device("dev").uplink(dc.id()).build().await?;
    let relay = lab.add_device("relay").uplink(dc.id()).build().await?;
    let old = dev.ip().context("no IPv4")?;
    let eth0 = dev.iface("eth0").context("eth0")?;
    let new = eth0.renew_ip().await?;
    ensure!(
        new != old && dev.ip() == Some(new) && in_lan(&dc, new)?,
        "renewed {old} to {new}"
    );
    ensure!(ping(&relay, new)?, "the new address answers");
    ensure!(!ping(&relay, old)?, "the old address still answers");

    let net: Ipv4Net = dc.downstream_cidr().context("dc LAN")?;
    let second = Ipv4Addr::from(u32::from(net.network()) + 200);
    eth0.add_ip(second, net.prefix_len()).await?;
    ensure!(
        ping(&relay, new)? && ping(&relay, second)?,
        "both addresses"
    );
    Ok(())
}

/// Upstream `iface.rs` `dummy_build_time`, `dummy_bare` and `dummy_guards`: dummy interfaces
/// declared on the builder carry their fixed address (or none) next to a routed `eth0`; they
/// cannot be replugged, renewed, or shaped inbound, but can be shaped outbound. Needs
/// `CONFIG_DUMMY` (skips without it; the UML guest has it).
#[tokio::test]
async fn dummy_interfaces() -> Result<()> {
    require_root!();
    let lab = Lab::new().await?;
    let dc = lab.add_router("dc").build().await?;
    let docker: Ipv4Net = "172.17.0.2/16".parse()?;
    let built = lab
        .add_device("dev")
        .iface("eth0", dc.id())
        .iface("docker0", IfaceConfig::dummy().addr(docker))
        .iface("bare0", IfaceConfig::dummy())
        .build()
        .await;
    let Some(dev) = or_skip_without(built, "DUMMY")? else {
        return Ok(());
    };
    let (eth0, d0, bare) = (
        dev.iface("eth0").context("eth0")?,
        dev.iface("docker0").context("docker0")?,
        dev.iface("bare0").context("bare0")?,
    );
    ensure!(eth0.is_routed() && !eth0.is_dummy());
    ensure!(d0.is_dummy() && !d0.is_routed() && d0.ip() == Some(docker.addr()));
    ensure!(bare.is_dummy() && bare.ip().is_none());
    // The dummy's address is the device's own: a local socket reaches it.
    let to = SocketAddr::from((docker.addr(), 4242));
    let _g = dev.spawn_reflector(to).await?;
    ensure!(
        udp_reply(&dev, to, Duration::from_secs(1)).await?.is_some(),
        "docker0's address"
    );

    ensure!(d0.replug(dc.id()).await.is_err(), "replug of a dummy");
    ensure!(d0.renew_ip().await.is_err(), "renew_ip of a dummy");
    // Rate only: tbf, which every kernel here has (netem is not needed for this check).
    let cap = LinkCondition::new().rate_kbit(10_000);
    ensure!(
        d0.set_condition(cap, LinkDirection::Ingress).await.is_err(),
        "ingress on a dummy"
    );
    d0.set_condition(cap, LinkDirection::Egress).await?;
    ensure!(d0.egress() == Some(cap) && d0.ingress().is_none());
    Ok(())
}

/// Upstream `iface.rs` `dummy_runtime` and `routed_explicit_addr`, as refusals: our
/// documented difference (docs/porting.md, "Not covered"): adding a dummy interface at run
/// time, and a fixed address on a routed interface, fail with an error that names the way to
/// do it (upstream allows both).
#[tokio::test]
async fn run_time_dummies_and_fixed_routed_addresses_are_refused() -> Result<()> {
    require_root!();
    let lab = Lab::new().await?;
    let dc = lab.add_router("dc").build().await?;
    let dev = lab.add_device("dev").uplink(dc.id()).build().await?;
    let err = dev
        .add_iface("tun0", IfaceConfig::dummy().addr("10.8.0.1/24".parse()?))
        .await;
    let err = format!("{:#}", err.err().context("a run-time dummy was accepted")?);
    ensure!(err.contains("IfaceConfig::dummy()"), "{err}");
    let fixed = IfaceConfig::routed(dc.id()).addr("198.18.1.99/24".parse()?);
    let err = lab.add_device("fixed").iface("eth0", fixed).build().await;
    let err = format!(
        "{:#}",
        err.err().context("a fixed routed address was accepted")?
    );
    ensure!(err.contains("dummy interface"), "{err}");
    Ok(())
}
