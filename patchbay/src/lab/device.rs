//! Devices: end hosts with one or more interfaces, each on a router's LAN.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use crate::addr;
use crate::error::{Error, NetlinkContext, Result};
use crate::sys::netlink::{self, VethEnd};
use crate::sys::netns::Netns;
use crate::task::Task;

use super::LabInner;
use super::node::{Iface, Node, NodeInner, NodeKind};
use super::topo::{Member, check_ifname};
use super::wiring::sync_carriers;

/// Builds a [`Device`]; from [`crate::native::Lab::add_device`].
#[derive(Debug)]
#[must_use = "call .build().await"]
pub struct DeviceBuilder {
    lab: Arc<LabInner>,
    name: String,
    ifaces: Vec<(String, String)>,
    dummies: Vec<(String, Vec<ipnet::IpNet>)>,
    default_via: Option<String>,
    mtu: Option<u32>,
}

struct Planned {
    iface: String,
    router: String,
    v4: Ipv4Addr,
    v6: Ipv6Addr,
    gw: (Ipv4Addr, Ipv6Addr),
    bridge_mac: [u8; 6],
    bridge_index: u32,
    router_ns: Netns,
    port: u32,
    ip: crate::addr::IpSupport,
}

impl DeviceBuilder {
    pub(crate) fn new(lab: Arc<LabInner>, name: &str) -> Self {
        DeviceBuilder {
            lab,
            name: name.to_string(),
            ifaces: vec![],
            dummies: vec![],
            default_via: None,
            mtu: None,
        }
    }

    /// Adds a dummy interface named `name` (a Linux `dummy` device: up, with no link and no
    /// gateway) holding `addrs`: addresses a host has that lead nowhere, like a VPN's or a
    /// container bridge's, which software that gathers local addresses (ICE, QUIC path
    /// discovery) must cope with. Needs `CONFIG_DUMMY`.
    pub fn dummy(mut self, name: &str, addrs: &[ipnet::IpNet]) -> Self {
        self.dummies.push((name.to_string(), addrs.to_vec()));
        self
    }

    /// Adds an interface named `name` on `router`'s LAN.
    pub fn iface(mut self, name: &str, router: &super::Router) -> Self {
        self.ifaces
            .push((name.to_string(), router.name().to_string()));
        self
    }

    /// Adds an interface named `name` on the LAN of the router called
    /// `router` (for descriptions that refer to routers by name).
    pub fn iface_on(mut self, name: &str, router: &str) -> Self {
        self.ifaces.push((name.to_string(), router.to_string()));
        self
    }

    /// Which interface carries the default route (default: the first).
    pub fn default_via(mut self, iface: &str) -> Self {
        self.default_via = Some(iface.to_string());
        self
    }

    /// The MTU of every interface of the device, and of the router-side
    /// end of each link, as [`crate::Node::set_mtu`] sets it (upstream's
    /// `DeviceBuilder::mtu`). At least 1280 when a LAN carries IPv6, at
    /// least 68 otherwise; checked before anything is created. Interfaces
    /// added later ([`Device::add_iface`]) keep the default MTU (1500).
    pub fn mtu(mut self, mtu: u32) -> Self {
        self.mtu = Some(mtu);
        self
    }

    fn validate(&self) -> Result<String> {
        if self.name.is_empty() {
            return Err(Error::invalid(
                "name",
                crate::InvalidReason::Missing,
                "a device needs a non-empty name",
            ));
        }
        if self.ifaces.is_empty() {
            return Err(Error::invalid_node(
                &self.name,
                "iface",
                crate::InvalidReason::Missing,
                format!(
                    "device {} has no interface; add one with .iface(\"eth0\", &router)",
                    self.name
                ),
            ));
        }
        let mut seen = std::collections::BTreeSet::new();
        for i in self
            .ifaces
            .iter()
            .map(|(i, _)| i)
            .chain(self.dummies.iter().map(|(i, _)| i))
        {
            check_ifname(&self.name, i)?;
            if !seen.insert(i) {
                return Err(Error::invalid_node(
                    &self.name,
                    "iface",
                    crate::InvalidReason::Duplicate,
                    format!("device {} has two interfaces named {i:?}", self.name),
                ));
            }
        }
        let dv = self
            .default_via
            .clone()
            .unwrap_or_else(|| self.ifaces[0].0.clone());
        if !self.ifaces.iter().any(|(i, _)| *i == dv) {
            return Err(Error::invalid_node(
                &self.name,
                "default_via",
                crate::InvalidReason::Unknown,
                format!(
                    "device {}: default_via({dv:?}) names no interface of it (it has {:?})",
                    self.name,
                    seen.iter().collect::<Vec<_>>()
                ),
            ));
        }
        Ok(dv)
    }

    /// Creates the device's namespace and links.
    pub async fn build(self) -> Result<Device> {
        let default_via = self.validate()?;
        let DeviceBuilder {
            lab,
            name,
            ifaces,
            dummies,
            mtu,
            ..
        } = self;
        let planned = plan(&lab, &name, &ifaces, mtu)?;
        let ns = Netns::new(&format!("{}-{name}", lab.id()))?;
        lab.prepare_ns(&ns, false, &name)?;
        let node = Arc::new(NodeInner::new(&lab, &name, NodeKind::Device, ns.clone()));
        ns.run(|| netlink::set_up(1, true))
            .await?
            .ctx(|| format!("bringing up lo of {name}"))?;
        let mut members = vec![];
        for (k, p) in planned.iter().enumerate() {
            members.push(connect(&lab, &node, k, p, p.iface == default_via).await?);
        }
        for (k, (iface, addrs)) in dummies.iter().enumerate() {
            node.add_iface(add_dummy(&lab, &ns, node.ordinal, k, iface, addrs).await?);
            lab.prepare_iface(&ns, iface)?;
        }
        // The default route's interface is the primary one.
        *node.primary.lock().unwrap_or_else(|p| p.into_inner()) = Some(default_via);
        register(&lab, &node, &planned, &members).await?;
        let dev = Device {
            node: Node::from_inner(node),
        };
        if let Some(m) = mtu {
            for p in &planned {
                dev.set_mtu(&p.iface, m).await?;
            }
        }
        let ifaces: Vec<_> = planned
            .iter()
            .map(|p| (p.iface.clone(), p.router.clone()))
            .collect();
        dev.record(
            "node.added",
            serde_json::json!({"kind": "device", "ifaces": ifaces}),
            true,
        );
        Ok(dev)
    }
}

/// Creates dummy interface number `k` of a device and gives it `addrs`.
async fn add_dummy(
    lab: &LabInner,
    ns: &Netns,
    ordinal: u32,
    k: usize,
    iface: &str,
    addrs: &[ipnet::IpNet],
) -> Result<Iface> {
    let index = lab.next_ifindex();
    let mac = addr::mac(ordinal, 0x40 + k as u8);
    let (name, list) = (iface.to_string(), addrs.to_vec());
    ns.run(move || async move {
        netlink::create_dummy(&name, index, mac).await?;
        for a in &list {
            netlink::add_addr(index, a.addr(), a.prefix_len()).await?;
        }
        Ok(())
    })
    .await?
    .map_err(|e: netlink::NetlinkError| {
        if e.errno() == Some(libc::EOPNOTSUPP) {
            Error::KernelFeature {
                feature: "CONFIG_DUMMY (dummy network interfaces)".into(),
                hint: format!(
                    "creating dummy interface {iface} failed: this kernel has no dummy interfaces; use a kernel with CONFIG_DUMMY=y (the UML guest of `patchbay vt` has it)"
                ),
            }
        } else {
            Error::netlink(
                format!("creating dummy interface {iface} with {addrs:?}"),
                e,
            )
        }
    })?;
    let v4 = addrs.iter().find_map(|a| match a {
        ipnet::IpNet::V4(n) => Some(*n),
        ipnet::IpNet::V6(_) => None,
    });
    Ok(Iface {
        name: iface.to_string(),
        index,
        mac,
        ip: v4.map(|n| n.addr()),
        ip6: addrs.iter().find_map(|a| match a {
            ipnet::IpNet::V6(n) => Some(n.addr()),
            ipnet::IpNet::V4(_) => None,
        }),
        prefix: v4.map_or(0, |n| n.prefix_len()),
        peer: String::new(),
    })
}

/// Checks every router and the MTU first, so a bad one allocates nothing, then allocates
/// each interface's addresses and bridge port, under the topology lock.
fn plan(
    lab: &LabInner,
    name: &str,
    ifaces: &[(String, String)],
    mtu: Option<u32>,
) -> Result<Vec<Planned>> {
    let mut t = lab.topo();
    t.check_free(name)?;
    for (i, r) in ifaces {
        let rec = t.router_mut(r)?;
        if let Some(m) = mtu {
            let v6 = rec.lan.ip.has_v6().then(|| rec.lan.lan.gateway().1);
            super::wiring::check_mtu(&format!("{name}.{i}"), m, v6)?;
        }
    }
    let mut planned = vec![];
    for (iface, router) in ifaces {
        let rec = t.router_mut(router)?;
        let (mut v4, mut v6) = rec.lan.lan.alloc()?;
        let ip = rec.lan.ip;
        if !ip.has_v4() {
            v4 = Ipv4Addr::UNSPECIFIED;
        }
        if !ip.has_v6() {
            v6 = Ipv6Addr::UNSPECIFIED;
        }
        rec.lan.next_port += 1;
        planned.push(Planned {
            iface: iface.clone(),
            router: router.clone(),
            v4,
            v6,
            gw: rec.lan.lan.gateway(),
            bridge_mac: rec.lan.bridge_mac,
            bridge_index: rec.lan.bridge_index,
            router_ns: rec.node.ns().clone(),
            port: rec.lan.next_port,
            ip,
        });
    }
    Ok(planned)
}

/// Connects interface number `k` of a new device to its router's LAN bridge: the veth
/// pair, the addresses and, on the `default` interface, the default routes.
async fn connect(
    lab: &LabInner,
    node: &Arc<NodeInner>,
    k: usize,
    p: &Planned,
    default: bool,
) -> Result<Member> {
    let ns = node.ns().clone();
    // Lab-unique indexes; see the note in router_build.rs.
    let index = lab.next_ifindex();
    let mac = addr::mac(node.ordinal, k as u8 + 1);
    let port_index = lab.next_ifindex();
    let dev_end = VethEnd {
        name: p.iface.clone(),
        index,
        mac,
        netns_fd: ns.raw_fd()?,
    };
    let rtr_end = VethEnd {
        name: format!("p{}", p.port),
        index: port_index,
        mac: addr::mac(node.ordinal, 0x80 + k as u8),
        netns_fd: p.router_ns.raw_fd()?,
    };
    let ctx = format!(
        "connecting {}.{} to router {}",
        node.name, p.iface, p.router
    );
    let bridge_index = p.bridge_index;
    p.router_ns
        .run(move || async move {
            netlink::create_veth(&dev_end, &rtr_end).await?;
            netlink::set_master_up(port_index, bridge_index).await
        })
        .await?
        .ctx(|| ctx.clone())?;
    let (v4, v6, gw) = (p.v4, p.v6, p.gw);
    let ifname = p.iface.clone();
    ns.run(move || async move {
        netlink::set_up(index, true).await?;
        sync_carriers(&[&ifname]);
        if !v4.is_unspecified() {
            netlink::add_addr(index, v4.into(), addr::V4_PREFIX).await?;
            if default {
                netlink::add_route_v4(Ipv4Addr::UNSPECIFIED, 0, gw.0).await?;
            }
        }
        if !v6.is_unspecified() {
            netlink::add_addr(index, v6.into(), addr::V6_PREFIX).await?;
            if default {
                netlink::add_route_v6(Ipv6Addr::UNSPECIFIED, 0, gw.1).await?;
            }
        }
        Ok(())
    })
    .await?
    .ctx(|| ctx.clone())?;
    lab.prepare_iface(&ns, &p.iface)?;
    let port_name = format!("p{}", p.port);
    p.router_ns
        .run_sync(move || sync_carriers(&[&port_name, "lan"]))?;
    node.add_iface(Iface {
        name: p.iface.clone(),
        index,
        mac,
        ip: p.ip.has_v4().then_some(v4),
        ip6: p.ip.has_v6().then_some(v6),
        prefix: addr::V4_PREFIX,
        peer: p.router.clone(),
    });
    Ok(Member {
        node: node.clone(),
        v4,
        v6,
        mac,
        index,
    })
}

/// Enters the device into the topology and the lab's names, joins each interface to its
/// router's LAN and pre-warms its neighbours there.
async fn register(
    lab: &LabInner,
    node: &Arc<NodeInner>,
    planned: &[Planned],
    members: &[Member],
) -> Result<()> {
    let mut siblings = vec![];
    {
        let mut t = lab.topo();
        t.nodes.insert(node.name.clone(), node.clone());
        for (p, m) in planned.iter().zip(members) {
            let lan = &mut t.router_mut(&p.router)?.lan.members;
            siblings.push(lan.clone());
            lan.push(m.clone());
        }
    }
    lab.names_for_new_node(node)?;
    if lab.opts().prewarm_neighbors {
        for ((p, m), sibs) in planned.iter().zip(members).zip(&siblings) {
            lab.prewarm()
                .member(m, &p.router_ns, p.bridge_index, p.gw, p.bridge_mac, sibs)
                .await?;
        }
    }
    Ok(())
}

/// A device of a lab. Cheap to clone; dereferences to [`Node`].
#[derive(Debug, Clone)]
pub struct Device {
    node: Node,
}

impl std::ops::Deref for Device {
    type Target = Node;
    fn deref(&self) -> &Node {
        &self.node
    }
}

impl Device {
    pub(crate) fn from_node(node: Node) -> Option<Device> {
        (node.kind() == NodeKind::Device).then_some(Device { node })
    }

    /// Runs an async closure on the device's runtime, inside its namespace.
    pub fn spawn<F, Fut, T>(&self, f: F) -> Result<Task<T>>
    where
        F: FnOnce(Device) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = T> + 'static,
        T: Send + 'static,
    {
        self.node.spawn_with(self.clone(), f)
    }
}
