//! Mobility at run time: moving a device's interface to another router
//! (Wi-Fi to cellular), adding and removing interfaces, choosing the
//! default route, renewing an address, removing a node.
//!
//! New interfaces get what build-time ones get: the compression plan's
//! per-interface sysctls (neighbour timers) and, when the lab pre-warms,
//! neighbour entries with their gateway and LAN siblings.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use serde_json::json;

use crate::addr;
use crate::error::{Error, NetlinkContext, Result};
use crate::sys::netlink::{self, VethEnd};

use super::device::Device;
use super::node::{Iface, Node, NodeKind};
use super::topo::{Member, RouterRec, check_ifname};
use super::wiring::sync_carriers;
use super::{Lab, LabInner};

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A router LAN's gateways, for the families the LAN has.
fn gateways(rec: &RouterRec) -> (Option<Ipv4Addr>, Option<Ipv6Addr>) {
    let (g4, g6) = rec.lan.lan.gateway();
    (
        rec.lan.ip.has_v4().then_some(g4),
        rec.lan.ip.has_v6().then_some(g6),
    )
}

/// Fresh addresses on a router's LAN, for the families the LAN has.
fn alloc(rec: &mut RouterRec) -> Result<(Option<Ipv4Addr>, Option<Ipv6Addr>)> {
    let (v4, v6) = rec.lan.lan.alloc()?;
    Ok((
        rec.lan.ip.has_v4().then_some(v4),
        rec.lan.ip.has_v6().then_some(v6),
    ))
}

impl Device {
    fn iface_or_err(&self, iface: &str) -> Result<Iface> {
        self.iface(iface).ok_or_else(|| {
            Error::invalid_node(
                self.name(),
                "iface",
                crate::InvalidReason::Unknown,
                format!(
                    "device {} has no interface {iface:?} (it has {:?})",
                    self.name(),
                    self.ifaces()
                        .iter()
                        .map(|i| i.name.clone())
                        .collect::<Vec<_>>()
                ),
            )
        })
    }

    fn is_default(&self, iface: &str) -> bool {
        lock(&self.inner.primary).as_deref() == Some(iface)
    }

    /// Adds an interface named `name` on `router`'s LAN at run time, with a
    /// fresh address from that LAN (each family the LAN has: see
    /// [`crate::native::RouterBuilder::ip_support`]). The default route stays where it is
    /// (see [`Device::set_default_route`]).
    pub async fn add_iface(&self, name: &str, router: &str) -> Result<Iface> {
        check_ifname(self.name(), name)?;
        if self.iface(name).is_some() {
            return Err(Error::invalid_node(
                self.name(),
                "iface",
                crate::InvalidReason::Duplicate,
                format!(
                    "device {} already has an interface {name:?}; remove it first or choose another name",
                    self.name()
                ),
            ));
        }
        let lab = self.lab()?;
        let i = attach(&lab, self, name, router, false).await?;
        self.record(
            "iface.added",
            json!({"iface": name, "router": router, "ipv4": i.ip, "ipv6": i.ip6}),
            true,
        );
        Ok(i)
    }

    /// Removes an interface (both ends of its link; its address is gone).
    /// The interface carrying the default route cannot be removed: move the
    /// default first ([`Device::set_default_route`]) or use
    /// [`Device::replug_iface`].
    pub async fn remove_iface(&self, name: &str) -> Result<()> {
        self.iface_or_err(name)?;
        if self.is_default(name) {
            return Err(Error::invalid_node(
                self.name(),
                "iface",
                crate::InvalidReason::Conflict,
                format!(
                    "interface {}.{name} carries the default route; point it elsewhere first with set_default_route(\"<other iface>\"), or move the interface with replug_iface",
                    self.name()
                ),
            ));
        }
        let lab = self.lab()?;
        detach(&lab, self, name).await?;
        self.record("iface.removed", json!({"iface": name}), true);
        Ok(())
    }

    /// Moves interface `iface` to `router`'s LAN, as when a phone leaves
    /// Wi-Fi for cellular: the old link and address are gone, the
    /// interface (same name) gets a new address on the new LAN, and if it
    /// carried the default route, the route now goes via the new router.
    /// Open sockets keep their old source address: TCP connections stall
    /// (replies go to an address that no longer exists) until their
    /// timeouts fire; unconnected UDP sockets simply send from the new
    /// address. Fails without changing anything when `router` is unknown.
    pub async fn replug_iface(&self, iface: &str, router: &str) -> Result<Iface> {
        let old = self.iface_or_err(iface)?;
        let lab = self.lab()?;
        lab.topo().router_mut(router)?;
        let was_default = self.is_default(iface);
        detach(&lab, self, iface).await?;
        let i = attach(&lab, self, iface, router, was_default).await?;
        self.record(
            "iface.moved",
            json!({"iface": iface, "from": old.peer, "to": router, "old_ipv4": old.ip, "ipv4": i.ip, "old_ipv6": old.ip6, "ipv6": i.ip6}),
            true,
        );
        Ok(i)
    }

    /// Points the default routes at `iface`'s router, for the families its
    /// LAN has (a family it lacks keeps its default route elsewhere), and
    /// makes `iface` the primary interface ([`crate::Node::ip`]).
    pub async fn set_default_route(&self, iface: &str) -> Result<()> {
        let gw = self.route_default_via(iface).await?;
        *lock(&self.inner.primary) = Some(iface.to_string());
        self.record(
            "route.changed",
            json!({"default_via": iface, "gateway": gw.0, "gateway6": gw.1}),
            true,
        );
        Ok(())
    }

    /// Points the default routes at `iface`'s router; returns the gateways.
    pub(crate) async fn route_default_via(
        &self,
        iface: &str,
    ) -> Result<(Option<Ipv4Addr>, Option<Ipv6Addr>)> {
        let i = self.iface_or_err(iface)?;
        let lab = self.lab()?;
        let gw = gateways(lab.topo().router_mut(&i.peer)?);
        self.netns()
            .run(move || netlink::replace_default(gw.0, gw.1))
            .await?
            .ctx(|| format!("pointing the default route of {} at {iface}", self.name()))?;
        Ok(gw)
    }

    /// Adds an address to `iface` next to the one the LAN gave it, as on a host with
    /// several addresses on one link. The lab's address plan does not know it: beyond the
    /// LAN, only what routes to the LAN's prefix reaches it.
    pub async fn add_addr(&self, iface: &str, ip: std::net::IpAddr, prefix: u8) -> Result<()> {
        let index = self.iface_or_err(iface)?.index;
        self.netns()
            .run(move || netlink::add_addr(index, ip, prefix))
            .await?
            .ctx(|| format!("adding {ip}/{prefix} to {}.{iface}", self.name()))?;
        self.record(
            "addr.added",
            json!({"iface": iface, "addr": ip, "prefix": prefix}),
            true,
        );
        Ok(())
    }

    /// Gives `iface` a new address on the same LAN (like a DHCP lease that
    /// changed): the old address is removed, so connections bound to it
    /// break; the default route is restored if it used this interface.
    pub async fn renew_addr(&self, iface: &str) -> Result<Iface> {
        let old = self.iface_or_err(iface)?;
        let lab = self.lab()?;
        let (v4, v6, gw) = {
            let mut t = lab.topo();
            let rec = t.router_mut(&old.peer)?;
            let (v4, v6) = alloc(rec)?;
            for m in rec.lan.members.iter_mut() {
                if Arc::ptr_eq(&m.node, &self.inner) && m.index == old.index {
                    m.v4 = v4.unwrap_or(Ipv4Addr::UNSPECIFIED);
                    m.v6 = v6.unwrap_or(Ipv6Addr::UNSPECIFIED);
                }
            }
            (v4, v6, gateways(rec))
        };
        let (index, default) = (old.index, self.is_default(iface));
        let (o4, o6) = (old.ip, old.ip6);
        self.netns()
            .run(move || async move {
                if let Some(a) = o4 {
                    netlink::del_addr(index, a.into(), addr::V4_PREFIX).await?;
                }
                if let Some(a) = o6 {
                    netlink::del_addr(index, a.into(), addr::V6_PREFIX).await?;
                }
                if let Some(a) = v4 {
                    netlink::add_addr(index, a.into(), addr::V4_PREFIX).await?;
                }
                if let Some(a) = v6 {
                    netlink::add_addr(index, a.into(), addr::V6_PREFIX).await?;
                }
                if default {
                    netlink::replace_default(gw.0, gw.1).await?;
                }
                Ok(())
            })
            .await?
            .ctx(|| format!("renewing the address of {}.{iface}", self.name()))?;
        let mut ifaces = lock(&self.inner.ifaces);
        let i = ifaces.get_mut(iface).ok_or_else(|| {
            Error::invalid_node(
                self.name(),
                "iface",
                crate::InvalidReason::Gone,
                format!("{}.{iface} vanished", self.name()),
            )
        })?;
        i.ip = v4;
        i.ip6 = v6;
        let i = i.clone();
        drop(ifaces);
        self.record(
            "addr.changed",
            json!({"iface": iface, "old_ipv4": o4, "ipv4": v4, "old_ipv6": o6, "ipv6": v6}),
            true,
        );
        Ok(i)
    }
}

/// Connects a new interface `name` of `dev` to `router`'s LAN.
async fn attach(
    lab: &Arc<LabInner>,
    dev: &Device,
    name: &str,
    router: &str,
    default: bool,
) -> Result<Iface> {
    let (v4, v6, gw, gw_full, bridge_mac, bridge_index, router_ns, port) = {
        let mut t = lab.topo();
        let rec = t.router_mut(router)?;
        let (v4, v6) = alloc(rec)?;
        rec.lan.next_port += 1;
        (
            v4,
            v6,
            gateways(rec),
            rec.lan.lan.gateway(),
            rec.lan.bridge_mac,
            rec.lan.bridge_index,
            rec.node.ns().clone(),
            rec.lan.next_port,
        )
    };
    let ns = dev.netns().clone();
    let index = lab.next_ifindex();
    let port_index = lab.next_ifindex();
    let mac = addr::mac(dev.inner.ordinal, 0x40 | (index & 0x3f) as u8);
    let dev_end = VethEnd {
        name: name.to_string(),
        index,
        mac,
        netns_fd: ns.raw_fd()?,
    };
    let port_name = format!("p{port}");
    let rtr_end = VethEnd {
        name: port_name.clone(),
        index: port_index,
        mac: addr::mac(dev.inner.ordinal, 0xc0 | (index & 0x3f) as u8),
        netns_fd: router_ns.raw_fd()?,
    };
    let ctx = format!("connecting {}.{name} to router {router}", dev.name());
    router_ns
        .run(move || async move {
            netlink::create_veth(&dev_end, &rtr_end).await?;
            netlink::set_master_up(port_index, bridge_index).await
        })
        .await?
        .ctx(|| ctx.clone())?;
    let ifname = name.to_string();
    ns.run(move || async move {
        netlink::set_up(index, true).await?;
        sync_carriers(&[&ifname]);
        if let Some(a) = v4 {
            netlink::add_addr(index, a.into(), addr::V4_PREFIX).await?;
        }
        if let Some(a) = v6 {
            netlink::add_addr(index, a.into(), addr::V6_PREFIX).await?;
        }
        if default {
            netlink::replace_default(gw.0, gw.1).await?;
        }
        Ok(())
    })
    .await?
    .ctx(|| ctx.clone())?;
    lab.prepare_iface(&ns, name)?;
    router_ns.run_sync(move || sync_carriers(&[&port_name, "lan"]))?;
    let iface = Iface {
        name: name.to_string(),
        index,
        mac,
        ip: v4,
        ip6: v6,
        prefix: addr::V4_PREFIX,
        peer: router.to_string(),
    };
    dev.inner.add_iface(iface.clone());
    if default {
        *lock(&dev.inner.primary) = Some(name.to_string());
    }
    let me = Member {
        node: dev.inner.clone(),
        v4: v4.unwrap_or(Ipv4Addr::UNSPECIFIED),
        v6: v6.unwrap_or(Ipv6Addr::UNSPECIFIED),
        mac,
        index,
    };
    let siblings = {
        let mut t = lab.topo();
        let lan = &mut t.router_mut(router)?.lan.members;
        let siblings = lan.clone();
        lan.push(me.clone());
        siblings
    };
    if lab.opts().prewarm_neighbors {
        lab.prewarm()
            .member(
                &me,
                &router_ns,
                bridge_index,
                gw_full,
                bridge_mac,
                &siblings,
            )
            .await?;
    }
    Ok(iface)
}

/// Deletes interface `name` of `dev` (its veth, so both ends) and forgets it.
async fn detach(lab: &Arc<LabInner>, dev: &Device, name: &str) -> Result<()> {
    let i = dev.iface_or_err(name)?;
    let index = i.index;
    dev.netns()
        .run(move || netlink::del_link(index))
        .await?
        .ctx(|| format!("removing {}.{name}", dev.name()))?;
    lock(&dev.inner.ifaces).remove(name);
    {
        let mut primary = lock(&dev.inner.primary);
        if primary.as_deref() == Some(name) {
            *primary = None;
        }
    }
    if let Ok(rec) = lab.topo().router_mut(&i.peer) {
        rec.lan
            .members
            .retain(|m| !(Arc::ptr_eq(&m.node, &dev.inner) && m.index == index));
    }
    Ok(())
}

impl Lab {
    /// Removes a node at run time. A device loses every link, its
    /// processes are killed (they die with its worker) and its namespace
    /// goes away. A router can be removed only when nothing hangs off its
    /// LAN (remove or move its devices and routers first); the routes to
    /// its LAN that the routers above it and the exchange held are removed
    /// too.
    pub async fn remove_node(&self, name: &str) -> Result<()> {
        let node = self.node(name).ok_or_else(|| {
            Error::invalid_node(
                name,
                "node",
                crate::InvalidReason::Unknown,
                format!("unknown node {name:?}: the lab has {:?}", self.node_names()),
            )
        })?;
        let lab = self.inner.clone();
        if node.kind() == NodeKind::Router {
            let members = {
                let t = lab.topo();
                t.routers
                    .get(name)
                    .map(|r| {
                        r.lan
                            .members
                            .iter()
                            .map(|m| m.node.name.clone())
                            .collect::<Vec<_>>()
                    })
                    .unwrap_or_default()
            };
            if !members.is_empty() {
                return Err(Error::invalid_node(
                    name,
                    "node",
                    crate::InvalidReason::Conflict,
                    format!(
                        "router {name} still has {members:?} on its LAN; remove or replug them first"
                    ),
                ));
            }
            remove_routes_to_lan(&lab, name).await?;
        }
        for i in node.ifaces() {
            if node.kind() == NodeKind::Router && i.name == "lan" {
                continue;
            }
            let index = i.index;
            node.netns()
                .run(move || netlink::del_link(index))
                .await?
                .ctx(|| format!("removing {name}.{}", i.name))?;
        }
        {
            let mut t = lab.topo();
            for r in t.routers.values_mut() {
                r.lan.members.retain(|m| m.node.name != name);
            }
            t.exchange.retain(|m| m.node.name != name);
            t.routers.remove(name);
            t.nodes.remove(name);
        }
        node.netns().shutdown();
        super::artifacts::emit(&lab, Some(name), "node.removed", json!({}));
        super::artifacts::topology_changed(&lab);
        Ok(())
    }
}

/// Deletes the routes towards router `name`'s LAN that its ancestors and
/// the exchange hold (installed by `routes_to_lan` in router.rs): each
/// namespace up the chain routes the LAN's prefixes via the uplink address
/// of the router below it. Routes a NAT hid were never installed; their
/// deletion finds nothing and is skipped.
async fn remove_routes_to_lan(lab: &Arc<LabInner>, name: &str) -> Result<()> {
    let (dst4, dst6, hops) = {
        let t = lab.topo();
        let Some(me) = t.routers.get(name) else {
            return Ok(());
        };
        let dst6 = match me.nat_v6 {
            crate::nat::NatV6Mode::Nptv6 => addr::nptv6_external_of(me.lan.lan.v6),
            _ => me.lan.lan.v6,
        };
        let chain = t.ancestry(name);
        let mut hops = vec![];
        for pair in chain.windows(2) {
            let (c4, c6) = super::router::uplink_of(&t, &pair[0]);
            hops.push((t.routers[&pair[1]].node.ns().clone(), c4, c6));
        }
        let top = chain.last().map(String::as_str).unwrap_or(name);
        let (c4, c6) = super::router::uplink_of(&t, top);
        hops.push((lab.root().clone(), c4, c6));
        (me.lan.lan.v4, dst6, hops)
    };
    for (ns, via4, via6) in hops {
        ns.run(move || async move {
            if !via4.is_unspecified() {
                netlink::del_route_via(dst4.into(), addr::V4_PREFIX, via4.into()).await?;
            }
            if !via6.is_unspecified() {
                netlink::del_route_via(dst6.into(), addr::V6_PREFIX, via6.into()).await?;
            }
            Ok(())
        })
        .await?
        .ctx(|| format!("removing the routes to the LAN of {name} (via {via4} / {via6})"))?;
    }
    Ok(())
}

impl Node {
    /// Sets an interface administratively up (`ip link set IFACE up`). On a device whose
    /// default route went through it, the default route is put back (the kernel removed it
    /// with the link).
    pub async fn link_up(&self, iface: &str) -> Result<()> {
        self.set_link(iface, true).await?;
        if self.primary_name().as_deref() == Some(iface)
            && let Some(dev) = Device::from_node(self.clone())
        {
            dev.route_default_via(iface).await?;
        }
        Ok(())
    }
}
