//! Routers: forward between a downstream LAN (a bridge named `lan`) and an
//! uplink (`wan`) to the exchange or to another router's LAN.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use crate::addr::{self, IpSupport, LanKind};
use crate::error::{Error, NetlinkContext, Result};
use crate::nat::NatV6Mode;
use crate::sys::netlink::{self, VethEnd};
use crate::sys::netns::Netns;
use crate::task::Task;

use super::node::{Iface, Node, NodeInner, NodeKind};
use super::topo::{LanState, Member, RouterRec, Upstream};
use super::{IX_BRIDGE_INDEX, LabInner};

/// Builds a [`Router`]; from [`crate::Lab::add_router`].
#[derive(Debug)]
#[must_use = "call .build().await"]
pub struct RouterBuilder {
    lab: Arc<LabInner>,
    name: String,
    upstream: Option<String>,
    pub(super) lan_kind: Option<LanKind>,
    pub(super) nat: crate::nat::NatConfig,
    pub(super) firewall: Option<crate::firewall::Firewall>,
    pub(super) extras: super::shaping::RouterExtras,
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
    #[cfg_attr(
        not(feature = "compat"),
        expect(dead_code, reason = "used by the compat layer only")
    )]
    pub(crate) fn lan_kind(mut self, kind: LanKind) -> Self {
        self.lan_kind = Some(kind);
        self
    }

    /// The router's NAT mode (default: [`crate::Nat::None`]). See
    /// [`crate::Nat`] for what each mode does and what it needs.
    pub fn nat(mut self, nat: crate::Nat) -> Self {
        self.nat.nat = nat;
        self
    }

    /// Whether the NAT hairpins (default: off).
    pub fn hairpin(mut self, on: bool) -> Self {
        self.nat.hairpin = on;
        self
    }

    /// Conntrack timeouts of the router's namespace (default: the kernel's).
    pub fn conntrack(mut self, timeouts: crate::ConntrackTimeouts) -> Self {
        self.nat.conntrack = Some(timeouts);
        self
    }

    /// NAT mode, hairpinning and timeouts at once.
    pub fn nat_config(mut self, config: crate::NatConfig) -> Self {
        self.nat = config;
        self
    }

    /// A firewall on the router (inbound = arriving on `wan`).
    pub fn firewall(mut self, firewall: crate::Firewall) -> Self {
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

    /// Creates the router's namespace and links.
    pub async fn build(self) -> Result<Router> {
        let RouterBuilder {
            lab,
            name,
            upstream,
            lan_kind,
            nat,
            firewall,
            ip,
            nat_v6,
            extras,
        } = self;
        let lan_kind = lan_kind.unwrap_or(nat.nat.lan_kind());
        if name.is_empty() {
            return Err(Error::Invalid("a router needs a non-empty name".into()));
        }
        extras.validate(&name)?;
        // Validate and allocate under the lock, touch the kernel after.
        let (up, uplink, lan, parent_port, up_ip) = {
            let mut t = lab.topo();
            t.check_free(&name)?;
            let up = match &upstream {
                None => Upstream::Exchange,
                Some(p) => {
                    t.router_mut(p)?;
                    Upstream::Router(p.clone())
                }
            };
            let up_ip = match &up {
                Upstream::Exchange => IpSupport::DualStack,
                Upstream::Router(p) => t.router_mut(p)?.lan.ip,
            };
            super::nat6_ops::check_ip_plan(&name, ip, nat_v6, upstream.as_deref(), up_ip)?;
            let mut lan = t.addr.alloc_lan(lan_kind)?;
            if nat_v6.hides_lan() {
                lan.v6 = addr::ula_of(lan.v6);
            }
            let (uplink, parent_port) = match &up {
                Upstream::Exchange => {
                    let a = t.addr.alloc_exchange()?;
                    t.next_ix_port += 1;
                    (a, t.next_ix_port)
                }
                Upstream::Router(p) => {
                    let rec = t.router_mut(p)?;
                    let a = rec.lan.lan.alloc()?;
                    rec.lan.next_port += 1;
                    (a, rec.lan.next_port)
                }
            };
            (up, uplink, lan, parent_port, up_ip)
        };
        let ns = Netns::new(&format!("{}-{name}", lab.id()))?;
        lab.prepare_ns(&ns, true, &name)?;
        let node = Arc::new(NodeInner::new(&lab, &name, NodeKind::Router, ns.clone()));
        let wan_mac = addr::mac(node.ordinal, 1);
        let bridge_mac = addr::mac(node.ordinal, 0);
        let (gw4, gw6) = lan.gateway();

        // Parent side: the exchange root, or the upstream router.
        let (parent_ns, parent_bridge, parent_bridge_mac, parent_gw) = match &up {
            Upstream::Exchange => (
                lab.root().clone(),
                IX_BRIDGE_INDEX,
                addr::mac(0, 0),
                (addr::IX_ROOT_V4, addr::IX_ROOT_V6),
            ),
            Upstream::Router(p) => {
                let t = lab.topo();
                let rec = t
                    .routers
                    .get(p)
                    .ok_or_else(|| Error::Invalid(format!("unknown router {p:?}")))?;
                (
                    rec.node.ns().clone(),
                    rec.lan.bridge_index,
                    rec.lan.bridge_mac,
                    rec.lan.lan.gateway(),
                )
            }
        };
        // Indexes are unique across the lab: kernels before ~6.14 check a
        // requested index in the namespace that sends the request, not only
        // in the target one.
        let port_index = lab.next_ifindex();
        let wan_index = lab.next_ifindex();
        let lan_index = lab.next_ifindex();
        let wan = VethEnd {
            name: "wan".into(),
            index: wan_index,
            mac: wan_mac,
            netns_fd: ns.raw_fd()?,
        };
        let port = VethEnd {
            name: format!("p{parent_port}"),
            index: port_index,
            mac: addr::mac(node.ordinal, 2),
            netns_fd: parent_ns.raw_fd()?,
        };
        let ctx = format!("building router {name}");
        parent_ns
            .run(move || async move {
                netlink::create_veth(&wan, &port).await?;
                netlink::set_master_up(port_index, parent_bridge).await
            })
            .await?
            .ctx(|| ctx.clone())?;

        // Inside the router: loopback, LAN bridge, uplink, default routes.
        ns.run(move || async move {
            netlink::set_up(1, true).await?;
            netlink::create_bridge("lan", lan_index, bridge_mac).await?;
            if ip.has_v4() {
                netlink::add_addr(lan_index, gw4.into(), addr::V4_PREFIX).await?;
            }
            if ip.has_v6() {
                netlink::add_addr(lan_index, gw6.into(), addr::V6_PREFIX).await?;
            }
            netlink::set_up(wan_index, true).await?;
            if up_ip.has_v4() {
                netlink::add_addr(wan_index, uplink.0.into(), addr::V4_PREFIX).await?;
                netlink::add_route_v4(Ipv4Addr::UNSPECIFIED, 0, parent_gw.0).await?;
            }
            if up_ip.has_v6() {
                netlink::add_addr(wan_index, uplink.1.into(), addr::V6_PREFIX).await?;
                netlink::add_route_v6(Ipv6Addr::UNSPECIFIED, 0, parent_gw.1).await?;
            }
            super::device::sync_carriers(&["wan"]);
            Ok(())
        })
        .await?
        .ctx(|| ctx.clone())?;

        lab.prepare_iface(&ns, "wan")?;
        lab.prepare_iface(&ns, "lan")?;
        let port_name = format!("p{parent_port}");
        let parent_bridge_name = if parent_bridge == IX_BRIDGE_INDEX {
            "ix"
        } else {
            "lan"
        };
        parent_ns
            .run_sync(move || super::device::sync_carriers(&[&port_name, parent_bridge_name]))?;

        node.add_iface(Iface {
            name: "wan".into(),
            index: wan_index,
            mac: wan_mac,
            ip: up_ip.has_v4().then_some(uplink.0),
            ip6: up_ip.has_v6().then_some(uplink.1),
            prefix: addr::V4_PREFIX,
            peer: upstream.clone().unwrap_or_else(|| "exchange".into()),
        });
        node.add_iface(Iface {
            name: "lan".into(),
            index: lan_index,
            mac: bridge_mac,
            ip: ip.has_v4().then_some(gw4),
            ip6: ip.has_v6().then_some(gw6),
            prefix: addr::V4_PREFIX,
            peer: name.clone(),
        });

        let me = Member {
            node: node.clone(),
            v4: if up_ip.has_v4() {
                uplink.0
            } else {
                Ipv4Addr::UNSPECIFIED
            },
            v6: if up_ip.has_v6() {
                uplink.1
            } else {
                Ipv6Addr::UNSPECIFIED
            },
            mac: wan_mac,
            index: wan_index,
        };
        let lan_v4 = lan.v4;
        let lan_v6 = lan.v6;
        {
            let mut t = lab.topo();
            t.nodes.insert(name.clone(), node.clone());
            t.routers.insert(
                name.clone(),
                RouterRec {
                    node: node.clone(),
                    upstream: up.clone(),
                    lan: LanState {
                        lan,
                        kind: lan_kind,
                        ip,
                        bridge_mac,
                        bridge_index: lan_index,
                        members: vec![],
                        next_port: 0,
                    },
                    nat,
                    nat_v6,
                },
            );
        }
        lab.names_for_new_node(&node)?;
        let siblings = {
            let mut t = lab.topo();
            let lan = match &up {
                Upstream::Exchange => &mut t.exchange,
                Upstream::Router(p) => &mut t.router_mut(p)?.lan.members,
            };
            let siblings = lan.clone();
            lan.push(me.clone());
            siblings
        };
        if lab.opts().prewarm_neighbors {
            lab.prewarm()
                .member(
                    &me,
                    &parent_ns,
                    port_index,
                    parent_gw,
                    parent_bridge_mac,
                    &siblings,
                )
                .await?;
        }
        routes_to_lan(&lab, &name, lan_kind, lan_v4, lan_v6).await?;
        let router = Router {
            node: Node::from_inner(node),
        };
        router.configure(firewall).await?;
        router.configure_v6(nat_v6, lan_v6).await?;
        extras.apply(&router).await?;
        super::region::router_added(&lab, &name).await?;
        router.record(
            "node.added",
            serde_json::json!({"kind": "router", "upstream": upstream, "nat": router.nat_config()?.nat.name()}),
            true,
        );
        Ok(router)
    }
}

/// Installs routes to a new router's LAN in every ancestor, so replies find
/// their way back: IPv4 up to the first NAT (beyond it the LAN is hidden),
/// IPv6 (never NATed) all the way to the exchange root.
async fn routes_to_lan(
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
    node: Node,
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
