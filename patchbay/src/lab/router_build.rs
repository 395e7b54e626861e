//! Building a router, in named steps: plan (validate and allocate under the topology lock,
//! before the kernel is touched), wire (namespace, veth to the parent, LAN bridge, default
//! routes), register (interfaces, topology, names, neighbours), configure (NAT, firewall,
//! IPv6 mode, MTU, region routes).

use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use crate::addr::{self, IpSupport, Lan, LanKind};
use crate::error::{Error, NetlinkContext, Result};
use crate::nat::NatV6Mode;
use crate::sys::netlink::{self, VethEnd};
use crate::sys::netns::Netns;

use super::node::{Iface, Node, NodeInner, NodeKind};
use super::router::{Router, RouterBuilder, check_ip_plan, routes_to_lan};
use super::topo::{LanState, Member, RouterRec, Upstream};
use super::{IX_BRIDGE_INDEX, LabInner};

/// What the plan allocated for a new router.
struct Plan {
    up: Upstream,
    /// The router's `wan` addresses.
    uplink: (Ipv4Addr, Ipv6Addr),
    lan: Lan,
    /// The number of the bridge port (`p<N>`) in the parent.
    parent_port: u32,
    /// The address families of the parent's LAN.
    up_ip: IpSupport,
}

/// Where the router's uplink plugs in: the exchange bridge or the upstream router's LAN.
struct Parent {
    ns: Netns,
    bridge: u32,
    bridge_mac: [u8; 6],
    gw: (Ipv4Addr, Ipv6Addr),
}

/// The interfaces the wiring created.
#[derive(Clone, Copy)]
struct Wired {
    port_index: u32,
    wan_index: u32,
    lan_index: u32,
    wan_mac: [u8; 6],
    bridge_mac: [u8; 6],
}

impl RouterBuilder {
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
            return Err(Error::invalid(
                "name",
                crate::InvalidReason::Missing,
                "a router needs a non-empty name",
            ));
        }
        extras.validate(&name)?;
        let plan = plan(&lab, &name, upstream.as_deref(), lan_kind, ip, nat_v6)?;
        let ns = Netns::new(&format!("{}-{name}", lab.id()))?;
        lab.prepare_ns(&ns, true, &name)?;
        let node = Arc::new(NodeInner::new(&lab, &name, NodeKind::Router, ns.clone()));
        let parent = parent_side(&lab, &plan.up)?;
        let w = wire(&lab, &node, &plan, &parent, ip).await?;
        add_ifaces(&node, &plan, w, ip, upstream.as_deref());
        let (lan_v4, lan_v6) = (plan.lan.v4, plan.lan.v6);
        let up = plan.up.clone();
        let rec = RouterRec {
            node: node.clone(),
            upstream: up.clone(),
            lan: LanState {
                lan: plan.lan.clone(),
                kind: lan_kind,
                ip,
                bridge_mac: w.bridge_mac,
                bridge_index: w.lan_index,
                members: vec![],
                next_port: 0,
            },
            nat,
            nat_v6,
        };
        register(&lab, &name, rec, &parent, &plan, w).await?;
        routes_to_lan(&lab, &name, lan_kind, lan_v4, lan_v6).await?;
        let router = Router {
            node: Node::from_inner(node),
        };
        router.configure(firewall).await?;
        router.configure_v6(nat_v6, lan_v6).await?;
        extras.apply(&router).await?;
        super::region_routes::router_added(&lab, &name).await?;
        router.record(
            "node.added",
            serde_json::json!({"kind": "router", "upstream": upstream, "nat": router.nat_config()?.nat.name()}),
            true,
        );
        Ok(router)
    }
}

/// Validates the name, the upstream and the address plan, and allocates the LAN, the
/// uplink addresses and the parent's bridge port, all under the topology lock.
fn plan(
    lab: &LabInner,
    name: &str,
    upstream: Option<&str>,
    lan_kind: LanKind,
    ip: IpSupport,
    nat_v6: NatV6Mode,
) -> Result<Plan> {
    let mut t = lab.topo();
    t.check_free(name)?;
    let up = match upstream {
        None => Upstream::Exchange,
        Some(p) => {
            t.router_mut(p)?;
            Upstream::Router(p.to_string())
        }
    };
    let up_ip = match &up {
        Upstream::Exchange => IpSupport::DualStack,
        Upstream::Router(p) => t.router_mut(p)?.lan.ip,
    };
    check_ip_plan(name, ip, nat_v6, upstream, up_ip)?;
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
    Ok(Plan {
        up,
        uplink,
        lan,
        parent_port,
        up_ip,
    })
}

/// The parent side of the uplink.
fn parent_side(lab: &LabInner, up: &Upstream) -> Result<Parent> {
    Ok(match up {
        Upstream::Exchange => Parent {
            ns: lab.root().clone(),
            bridge: IX_BRIDGE_INDEX,
            bridge_mac: addr::mac(0, 0),
            gw: (addr::IX_ROOT_V4, addr::IX_ROOT_V6),
        },
        Upstream::Router(p) => {
            let t = lab.topo();
            let rec = t.routers.get(p).ok_or_else(|| {
                Error::invalid(
                    "upstream",
                    crate::InvalidReason::Unknown,
                    format!("unknown router {p:?}"),
                )
            })?;
            Parent {
                ns: rec.node.ns().clone(),
                bridge: rec.lan.bridge_index,
                bridge_mac: rec.lan.bridge_mac,
                gw: rec.lan.lan.gateway(),
            }
        }
    })
}

/// Creates the veth pair to the parent's bridge, and inside the router the loopback, the
/// LAN bridge, the uplink and the default routes.
async fn wire(
    lab: &LabInner,
    node: &NodeInner,
    plan: &Plan,
    parent: &Parent,
    ip: IpSupport,
) -> Result<Wired> {
    let ns = node.ns().clone();
    // Indexes are unique across the lab: kernels before ~6.14 check a
    // requested index in the namespace that sends the request, not only
    // in the target one.
    let w = Wired {
        port_index: lab.next_ifindex(),
        wan_index: lab.next_ifindex(),
        lan_index: lab.next_ifindex(),
        wan_mac: addr::mac(node.ordinal, 1),
        bridge_mac: addr::mac(node.ordinal, 0),
    };
    let wan = VethEnd {
        name: "wan".into(),
        index: w.wan_index,
        mac: w.wan_mac,
        netns_fd: ns.raw_fd()?,
    };
    let port = VethEnd {
        name: format!("p{}", plan.parent_port),
        index: w.port_index,
        mac: addr::mac(node.ordinal, 2),
        netns_fd: parent.ns.raw_fd()?,
    };
    let ctx = format!("building router {}", node.name);
    let parent_bridge = parent.bridge;
    parent
        .ns
        .run(move || async move {
            netlink::create_veth(&wan, &port).await?;
            netlink::set_master_up(w.port_index, parent_bridge).await
        })
        .await?
        .ctx(|| ctx.clone())?;
    let (gw4, gw6) = plan.lan.gateway();
    let (uplink, up_ip, parent_gw) = (plan.uplink, plan.up_ip, parent.gw);
    ns.run(move || async move {
        netlink::set_up(1, true).await?;
        netlink::create_bridge("lan", w.lan_index, w.bridge_mac).await?;
        if ip.has_v4() {
            netlink::add_addr(w.lan_index, gw4.into(), addr::V4_PREFIX).await?;
        }
        if ip.has_v6() {
            netlink::add_addr(w.lan_index, gw6.into(), addr::V6_PREFIX).await?;
        }
        netlink::set_up(w.wan_index, true).await?;
        if up_ip.has_v4() {
            netlink::add_addr(w.wan_index, uplink.0.into(), addr::V4_PREFIX).await?;
            netlink::add_route_v4(Ipv4Addr::UNSPECIFIED, 0, parent_gw.0).await?;
        }
        if up_ip.has_v6() {
            netlink::add_addr(w.wan_index, uplink.1.into(), addr::V6_PREFIX).await?;
            netlink::add_route_v6(Ipv6Addr::UNSPECIFIED, 0, parent_gw.1).await?;
        }
        super::wiring::sync_carriers(&["wan"]);
        Ok(())
    })
    .await?
    .ctx(|| ctx.clone())?;
    lab.prepare_iface(&ns, "wan")?;
    lab.prepare_iface(&ns, "lan")?;
    let port_name = format!("p{}", plan.parent_port);
    let parent_bridge_name = if parent.bridge == IX_BRIDGE_INDEX {
        "ix"
    } else {
        "lan"
    };
    parent
        .ns
        .run_sync(move || super::wiring::sync_carriers(&[&port_name, parent_bridge_name]))?;
    Ok(w)
}

/// Records the router's `wan` and `lan` interfaces on its node.
fn add_ifaces(node: &NodeInner, plan: &Plan, w: Wired, ip: IpSupport, upstream: Option<&str>) {
    let (gw4, gw6) = plan.lan.gateway();
    node.add_iface(Iface {
        name: "wan".into(),
        index: w.wan_index,
        mac: w.wan_mac,
        ip: plan.up_ip.has_v4().then_some(plan.uplink.0),
        ip6: plan.up_ip.has_v6().then_some(plan.uplink.1),
        prefix: addr::V4_PREFIX,
        peer: upstream.unwrap_or("exchange").to_string(),
    });
    node.add_iface(Iface {
        name: "lan".into(),
        index: w.lan_index,
        mac: w.bridge_mac,
        ip: ip.has_v4().then_some(gw4),
        ip6: ip.has_v6().then_some(gw6),
        prefix: addr::V4_PREFIX,
        peer: node.name.clone(),
    });
}

/// Enters the router into the topology and the lab's names, joins it to its parent's LAN
/// and pre-warms its neighbours there (see [`crate::LabOpts::prewarm_neighbors`]).
async fn register(
    lab: &LabInner,
    name: &str,
    rec: RouterRec,
    parent: &Parent,
    plan: &Plan,
    w: Wired,
) -> Result<()> {
    let node = rec.node.clone();
    let me = Member {
        node: node.clone(),
        v4: if plan.up_ip.has_v4() {
            plan.uplink.0
        } else {
            Ipv4Addr::UNSPECIFIED
        },
        v6: if plan.up_ip.has_v6() {
            plan.uplink.1
        } else {
            Ipv6Addr::UNSPECIFIED
        },
        mac: w.wan_mac,
        index: w.wan_index,
    };
    {
        let mut t = lab.topo();
        t.nodes.insert(name.to_string(), node.clone());
        t.routers.insert(name.to_string(), rec);
    }
    lab.names_for_new_node(&node)?;
    let siblings = {
        let mut t = lab.topo();
        let lan = match &plan.up {
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
                &parent.ns,
                w.port_index,
                parent.gw,
                parent.bridge_mac,
                &siblings,
            )
            .await?;
    }
    Ok(())
}
