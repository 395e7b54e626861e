//! Routers: forward between a downstream LAN (a bridge named `lan`) and an
//! uplink (`wan`) to the exchange or to another router's LAN.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use crate::addr::{self, IpSupport, LanKind};
use crate::error::{Error, NetlinkContext, Result};
use crate::nat::NatV6Mode;
use crate::sys::netlink;
use crate::sys::netns::Netns;
use crate::task::Task;

use super::LabInner;
use super::node::{Node, NodeKind};

/// Builds a [`Router`]; from [`crate::native::Lab::add_router`].
#[derive(Debug)]
#[must_use = "call .build().await"]
pub struct RouterBuilder {
    pub(super) lab: Arc<LabInner>,
    pub(super) name: String,
    pub(super) upstream: Option<String>,
    pub(super) lan_kind: Option<LanKind>,
    pub(super) nat: crate::nat::NatConfig,
    pub(super) firewall: Option<crate::firewall::Firewall>,
    pub(super) extras: RouterExtras,
    pub(super) ip: IpSupport,
    pub(super) nat_v6: NatV6Mode,
}

impl RouterBuilder {
    pub(crate) fn new(lab: Arc<LabInner>, name: &str) -> Self {
        RouterBuilder {
            lab,
            name: name.to_string(),
            upstream: None,
            lan_kind: None,
            nat: crate::nat::NatConfig::default(),
            firewall: None,
            ip: IpSupport::default(),
            nat_v6: NatV6Mode::None,
            extras: Default::default(),
        }
    }

    /// Connects the uplink to `router`'s LAN instead of the exchange.
    pub fn upstream(mut self, router: &Router) -> Self {
        self.upstream = Some(router.name().to_string());
        self
    }

    /// Connects the uplink to the router named `name`.
    pub fn upstream_name(mut self, name: &str) -> Self {
        self.upstream = Some(name.to_string());
        self
    }

    /// Which address pool the LAN draws from (default: from the NAT mode:
    /// public without NAT, 100.64/10 for CGNAT, 10/8 otherwise). Crate-
    /// private: `LanKind` is not API (the compat layer's routers use it).
    pub(crate) fn lan_kind(mut self, kind: LanKind) -> Self {
        self.lan_kind = Some(kind);
        self
    }

    /// The router's NAT mode (default: [`crate::native::Nat::None`]). See
    /// [`crate::native::Nat`] for what each mode does and what it needs.
    pub fn nat(mut self, nat: crate::native::Nat) -> Self {
        self.nat.nat = nat;
        self
    }

    /// Whether the NAT hairpins (default: off).
    pub fn hairpin(mut self, on: bool) -> Self {
        self.nat.hairpin = on;
        self
    }

    /// Conntrack timeouts of the router's namespace (default: the kernel's).
    pub fn conntrack(mut self, timeouts: crate::native::ConntrackTimeouts) -> Self {
        self.nat.conntrack = Some(timeouts);
        self
    }

    /// NAT mode, hairpinning and timeouts at once.
    pub fn nat_config(mut self, config: crate::native::NatConfig) -> Self {
        self.nat = config;
        self
    }

    /// A firewall on the router (inbound = arriving on `wan`).
    pub fn firewall(mut self, firewall: crate::native::Firewall) -> Self {
        self.firewall = Some(firewall);
        self
    }

    /// Address families of the router's LAN, and so of every device on it
    /// (default: [`IpSupport::DualStack`]). The uplink gets the families
    /// its upstream LAN has.
    pub fn ip_support(mut self, ip: IpSupport) -> Self {
        self.ip = ip;
        self
    }

    /// How the router treats IPv6 (default: routed, [`NatV6Mode::None`]).
    /// NAT64 needs the `tayga` binary and an IPv4 uplink.
    pub fn nat_v6(mut self, mode: NatV6Mode) -> Self {
        self.nat_v6 = mode;
        self
    }
}

/// Installs routes to a new router's LAN in every ancestor, so replies find
/// their way back: IPv4 up to the first NAT (beyond it the LAN is hidden),
/// IPv6 (never NATed) all the way to the exchange root.
pub(super) async fn routes_to_lan(
    lab: &Arc<LabInner>,
    name: &str,
    kind: LanKind,
    v4: Ipv4Addr,
    v6: Ipv6Addr,
) -> Result<()> {
    // Which prefix upstream routers see for this LAN's IPv6: the LAN itself,
    // NPTv6's external prefix, or nothing (masquerade hides it).
    let (hops, v6): (Vec<Hop>, Ipv6Addr) = {
        let t = lab.topo();
        let me = &t.routers[name];
        // Private and shared (CGNAT) address space is not routed on the lab's internet, as on
        // the real one: only a public LAN's IPv4 prefix is announced upwards. (A NATed LAN
        // that was routed would let peers reach each other's private addresses directly,
        // past their NATs.)
        let (mut v4_open, mut v6_open) = (
            me.lan.ip.has_v4() && kind == LanKind::Public,
            me.lan.ip.has_v6(),
        );
        let v6 = match me.nat_v6 {
            NatV6Mode::Nptv6 => addr::nptv6_external_of(v6),
            NatV6Mode::Masquerade => {
                v6_open = false;
                v6
            }
            NatV6Mode::None | NatV6Mode::Nat64 => v6,
        };
        let chain = t.ancestry(name);
        let mut hops = vec![];
        for pair in chain.windows(2) {
            let (child, parent) = (&pair[0], &pair[1]);
            let (c4, c6) = uplink_of(&t, child);
            let prec = &t.routers[parent];
            hops.push((prec.node.ns().clone(), c4, c6, v4_open, v6_open));
            if prec.lan.kind != LanKind::Public {
                v4_open = false;
            }
            if prec.nat_v6.hides_lan() {
                v6_open = false;
            }
        }
        let top = chain.last().map(String::as_str).unwrap_or(name);
        let (c4, c6) = uplink_of(&t, top);
        hops.push((lab.root().clone(), c4, c6, v4_open, v6_open));
        (hops, v6)
    };
    for (ns, via4, via6, do_v4, do_v6) in hops {
        let what = format!("routing to the LAN of {name} via {via4} / {via6}");
        ns.run(move || async move {
            if do_v4 && !via4.is_unspecified() {
                netlink::add_route_v4(v4, addr::V4_PREFIX, via4).await?;
            }
            if do_v6 && !via6.is_unspecified() {
                netlink::add_route_v6(v6, addr::V6_PREFIX, via6).await?;
            }
            Ok(())
        })
        .await?
        .ctx(|| what)?;
    }
    Ok(())
}

/// A namespace that needs routes to a new LAN: (namespace, IPv4 next hop,
/// IPv6 next hop, route IPv4?, route IPv6?).
type Hop = (Netns, Ipv4Addr, Ipv6Addr, bool, bool);

pub(super) fn uplink_of(t: &super::topo::Topology, router: &str) -> (Ipv4Addr, Ipv6Addr) {
    let i = t.routers[router]
        .node
        .ifaces
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    let wan = &i["wan"];
    (
        wan.ip.unwrap_or(Ipv4Addr::UNSPECIFIED),
        wan.ip6.unwrap_or(Ipv6Addr::UNSPECIFIED),
    )
}

/// A router of a lab. Cheap to clone; dereferences to [`Node`].
#[derive(Debug, Clone)]
pub struct Router {
    pub(super) node: Node,
}

impl std::ops::Deref for Router {
    type Target = Node;
    fn deref(&self) -> &Node {
        &self.node
    }
}

impl Router {
    pub(crate) fn from_node(node: Node) -> Option<Router> {
        (node.kind() == NodeKind::Router).then_some(Router { node })
    }

    /// The router's address on its LAN (the devices' gateway).
    pub fn lan_ip(&self) -> Option<Ipv4Addr> {
        self.iface("lan").and_then(|i| i.ip)
    }

    /// The router's IPv6 address on its LAN.
    pub fn lan_ip6(&self) -> Option<Ipv6Addr> {
        self.iface("lan").and_then(|i| i.ip6)
    }

    /// Runs an async closure on the router's runtime, inside its namespace.
    pub fn spawn<F, Fut, T>(&self, f: F) -> Result<Task<T>>
    where
        F: FnOnce(Router) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = T> + 'static,
        T: Send + 'static,
    {
        self.node.spawn_with(self.clone(), f)
    }

    /// The router's address on `peer`'s side, if `peer` is an IP.
    pub fn addr_for(&self, peer: IpAddr) -> Option<IpAddr> {
        match peer {
            IpAddr::V4(_) => self.ip().map(IpAddr::V4),
            IpAddr::V6(_) => self.ip6().map(IpAddr::V6),
        }
    }
}

/// Build-time MTU and PMTU settings of a router (see [`RouterBuilder::mtu`]).
#[derive(Debug, Clone, Default)]
pub(crate) struct RouterExtras {
    pub mtu: Option<u32>,
    pub block_pmtu: bool,
}

impl RouterExtras {
    pub(crate) fn validate(&self, router: &str) -> Result<()> {
        match self.mtu {
            // Every lab link carries IPv6 today.
            Some(m) => super::wiring::check_mtu(
                &format!("router {router} (wan and lan)"),
                m,
                Some(std::net::Ipv6Addr::LOCALHOST),
            )
            .map_err(|e| match e {
                Error::Invalid(mut i) => {
                    i.message = i.message.replace(" (::1)", "");
                    Error::Invalid(i)
                }
                e => e,
            }),
            None => Ok(()),
        }
    }

    pub(crate) async fn apply(&self, router: &Router) -> Result<()> {
        if let Some(m) = self.mtu {
            router.set_mtu("wan", m).await?;
            router.set_mtu("lan", m).await?;
        }
        if self.block_pmtu {
            router.block_icmp_frag_needed(true).await?;
        }
        Ok(())
    }
}

/// Checks a router's address families against its NAT modes and its
/// upstream, before anything is allocated.
pub(super) fn check_ip_plan(
    name: &str,
    ip: IpSupport,
    nat_v6: NatV6Mode,
    upstream: Option<&str>,
    up_ip: IpSupport,
) -> Result<()> {
    let up = upstream.map_or("the exchange".to_string(), |u| format!("router {u}"));
    if nat_v6 != NatV6Mode::None && !ip.has_v6() {
        return Err(Error::invalid_node(
            name,
            "ip_support",
            crate::InvalidReason::Conflict,
            format!(
                "router {name}: nat_v6 = {} needs IPv6 on its LAN, but its ip_support is {}; use ip_support dual-stack or v6-only, or drop nat_v6",
                nat_v6.name(),
                ip.name()
            ),
        ));
    }
    if nat_v6 == NatV6Mode::Nat64 && !up_ip.has_v4() {
        return Err(Error::invalid_node(
            name,
            "ip_support",
            crate::InvalidReason::Conflict,
            format!(
                "router {name}: nat_v6 = nat64 translates to IPv4, but its upstream {up} is {} (no IPv4 uplink); attach it to a dual-stack or v4-only upstream",
                up_ip.name()
            ),
        ));
    }
    if ip.has_v4() && !up_ip.has_v4() {
        return Err(Error::invalid_node(
            name,
            "ip_support",
            crate::InvalidReason::Conflict,
            format!(
                "router {name} is {} but its upstream {up} is {}: IPv4 on its LAN would lead nowhere; make {name} v6-only or give the upstream IPv4",
                ip.name(),
                up_ip.name()
            ),
        ));
    }
    if ip.has_v6() && !up_ip.has_v6() && nat_v6 != NatV6Mode::Nat64 {
        return Err(Error::invalid_node(
            name,
            "ip_support",
            crate::InvalidReason::Conflict,
            format!(
                "router {name} is {} but its upstream {up} is {}: IPv6 on its LAN would lead nowhere; make {name} v4-only, give the upstream IPv6, or translate with nat_v6 = nat64",
                ip.name(),
                up_ip.name()
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;

    #[test]
    fn a_router_mtu_below_the_ipv6_minimum_names_the_router() {
        let e = RouterExtras {
            mtu: Some(1000),
            block_pmtu: false,
        }
        .validate("r")
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("router r (wan and lan)") && e.contains("IPv6"),
            "{e}"
        );
    }

    #[test]
    fn bad_plans_name_both_parts() {
        let e = check_ip_plan(
            "carrier",
            IpSupport::V4Only,
            NatV6Mode::Nat64,
            None,
            IpSupport::DualStack,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("nat64") && e.contains("v4-only"), "{e}");
        let e = check_ip_plan(
            "carrier",
            IpSupport::V6Only,
            NatV6Mode::Nat64,
            Some("isp"),
            IpSupport::V6Only,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("router isp") && e.contains("nat64"), "{e}");
        let e = check_ip_plan(
            "home",
            IpSupport::DualStack,
            NatV6Mode::None,
            Some("isp"),
            IpSupport::V6Only,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("home") && e.contains("router isp"), "{e}");
        assert!(
            check_ip_plan(
                "c",
                IpSupport::V6Only,
                NatV6Mode::Nat64,
                None,
                IpSupport::DualStack
            )
            .is_ok()
        );
    }
}
