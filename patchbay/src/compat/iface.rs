//! Upstream's `IfaceConfig`: how a device interface is set up (the `Iface` handle on one
//! device interface lives with the device, in device.rs).

use ipnet::{Ipv4Net, Ipv6Net};

use super::link::{LinkCondition, LinkDirection};
use super::shared::NodeId;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum IfaceKind {
    Routed(NodeId),
    Dummy,
}

/// How a device interface is set up: routed to a router's LAN, or a dummy interface with
/// fixed addresses; optionally with link conditions, optionally down.
#[derive(Clone, Copy, Debug)]
pub struct IfaceConfig {
    pub(crate) kind: IfaceKind,
    pub(crate) addr: Option<Ipv4Net>,
    pub(crate) addr_v6: Option<Ipv6Net>,
    pub(super) egress: Option<LinkCondition>,
    pub(super) ingress: Option<LinkCondition>,
    pub(super) down: bool,
}

impl IfaceConfig {
    /// An interface on `router`'s LAN, with the LAN's next addresses.
    pub fn routed(router: NodeId) -> Self {
        Self::with(IfaceKind::Routed(router))
    }

    /// A dummy interface (no link, no gateway); give it addresses with [`Self::addr`] and
    /// [`Self::addr_v6`].
    pub fn dummy() -> Self {
        Self::with(IfaceKind::Dummy)
    }

    fn with(kind: IfaceKind) -> Self {
        IfaceConfig {
            kind,
            addr: None,
            addr_v6: None,
            egress: None,
            ingress: None,
            down: false,
        }
    }

    /// An IPv4 address with its prefix length (dummy interfaces only: a routed interface
    /// with a fixed address is refused at build, see the porting guide).
    pub fn addr(mut self, addr: Ipv4Net) -> Self {
        self.addr = Some(addr);
        self
    }

    /// An IPv6 address with its prefix length (dummy interfaces only).
    pub fn addr_v6(mut self, addr: Ipv6Net) -> Self {
        self.addr_v6 = Some(addr);
        self
    }

    /// A link condition in `direction`; later calls replace earlier ones per direction.
    pub fn condition(mut self, condition: LinkCondition, direction: LinkDirection) -> Self {
        if direction != LinkDirection::Ingress {
            self.egress = Some(condition);
        }
        if direction != LinkDirection::Egress {
            self.ingress = Some(condition);
        }
        self
    }

    /// Creates the interface administratively down.
    pub fn down(mut self) -> Self {
        self.down = true;
        self
    }
}

impl From<NodeId> for IfaceConfig {
    fn from(router: NodeId) -> Self {
        IfaceConfig::routed(router)
    }
}
