//! The lab's bookkeeping: nodes, LANs and their members. Pure data, guarded
//! by the lab's mutex; no kernel calls.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use crate::addr::{AddrPlan, IpSupport, Lan, LanKind};
use crate::error::{Error, Result};

use super::node::NodeInner;

/// A host on a LAN (a device interface or a chained router's uplink).
#[derive(Debug, Clone)]
pub(crate) struct Member {
    pub node: Arc<NodeInner>,
    pub v4: Ipv4Addr,
    pub v6: Ipv6Addr,
    pub mac: [u8; 6],
    /// Interface index of the member's end, in the member's namespace.
    pub index: u32,
}

/// A router's downstream LAN.
#[derive(Debug)]
pub(crate) struct LanState {
    pub lan: Lan,
    pub kind: LanKind,
    /// Address families on the LAN.
    pub ip: IpSupport,
    pub bridge_mac: [u8; 6],
    pub bridge_index: u32,
    pub members: Vec<Member>,
    pub next_port: u32,
}

/// Where a router's uplink goes.
#[derive(Debug, Clone)]
pub(crate) enum Upstream {
    /// The exchange in the lab root.
    Exchange,
    /// Another router's LAN.
    Router(String),
}

#[derive(Debug)]
pub(crate) struct RouterRec {
    pub node: Arc<NodeInner>,
    pub upstream: Upstream,
    pub lan: LanState,
    /// NAT mode, hairpinning and conntrack timeouts (see `nat_ops.rs`).
    pub nat: crate::nat::NatConfig,
    /// IPv6 NAT mode (see `nat6_ops.rs`).
    pub nat_v6: crate::nat::NatV6Mode,
}

#[derive(Debug, Default)]
pub(crate) struct Topology {
    pub addr: AddrPlan,
    pub nodes: BTreeMap<String, Arc<NodeInner>>,
    pub routers: BTreeMap<String, RouterRec>,
    /// Hosts on the exchange (top-level routers' uplinks).
    pub exchange: Vec<Member>,
    pub next_ix_port: u32,
}

impl Topology {
    pub fn new() -> Self {
        Topology {
            addr: AddrPlan::new(),
            ..Default::default()
        }
    }

    pub fn node(&self, name: &str) -> Option<Arc<NodeInner>> {
        self.nodes.get(name).cloned()
    }

    pub fn names(&self) -> Vec<String> {
        self.nodes.keys().cloned().collect()
    }

    pub fn all_nodes(&self) -> Vec<Arc<NodeInner>> {
        self.nodes.values().cloned().collect()
    }

    /// Fails if `name` is taken.
    pub fn check_free(&self, name: &str) -> Result<()> {
        if self.nodes.contains_key(name) {
            return Err(Error::invalid_node(
                name,
                "name",
                crate::InvalidReason::Duplicate,
                format!(
                    "duplicate node name {name:?}: every router and device in a lab needs a unique name"
                ),
            ));
        }
        Ok(())
    }

    pub fn router_mut(&mut self, name: &str) -> Result<&mut RouterRec> {
        self.routers.get_mut(name).ok_or_else(|| {
            Error::invalid(
                "upstream",
                crate::InvalidReason::Unknown,
                format!("unknown router {name:?}: add it with lab.add_router({name:?}) first"),
            )
        })
    }

    /// The chain of routers from `name` up to the exchange, `name` first.
    pub fn ancestry(&self, name: &str) -> Vec<String> {
        let mut out = vec![];
        let mut cur = Some(name.to_string());
        while let Some(n) = cur {
            cur = match self.routers.get(&n).map(|r| &r.upstream) {
                Some(Upstream::Router(p)) => Some(p.clone()),
                _ => None,
            };
            out.push(n);
        }
        out
    }
}

/// Validates an interface name the way the kernel does (`dev_valid_name`).
pub(crate) fn check_ifname(node: &str, name: &str) -> Result<()> {
    const IFNAMSIZ: usize = 16;
    if name.is_empty() || name.len() >= IFNAMSIZ {
        return Err(Error::invalid_node(
            node,
            "iface",
            crate::InvalidReason::OutOfRange,
            format!(
                "interface name {name:?} of {node} is {} bytes; Linux allows 1 to {} (IFNAMSIZ - 1); choose a shorter name such as \"eth0\"",
                name.len(),
                IFNAMSIZ - 1
            ),
        ));
    }
    if name == "."
        || name == ".."
        || name.contains(['/', ':'])
        || name.chars().any(char::is_whitespace)
    {
        return Err(Error::invalid_node(
            node,
            "iface",
            crate::InvalidReason::OutOfRange,
            format!(
                "interface name {name:?} of {node} is not valid: it must not be \".\" or \"..\" nor contain '/', ':' or whitespace"
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interface_names_follow_the_kernel_rules() {
        assert!(check_ifname("d", "eth0").is_ok());
        assert!(check_ifname("d", "a23456789012345").is_ok());
        let long = check_ifname("d", "a234567890123456")
            .unwrap_err()
            .to_string();
        assert!(long.contains("IFNAMSIZ"), "{long}");
        assert!(check_ifname("d", "").is_err());
        assert!(check_ifname("d", "a/b").is_err());
        assert!(check_ifname("d", "a b").is_err());
        assert!(check_ifname("d", "..").is_err());
    }
}
