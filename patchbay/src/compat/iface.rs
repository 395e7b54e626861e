//! Upstream's `IfaceConfig` (how a device interface is set up) and `Iface` (a handle on one
//! device interface), over the core's per-interface operations.

use std::net::{Ipv4Addr, Ipv6Addr};

use anyhow::{Result, bail};
use ipnet::{Ipv4Net, Ipv6Net};

use super::device::Device;
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
    egress: Option<LinkCondition>,
    ingress: Option<LinkCondition>,
    down: bool,
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

    /// What the core builder does not do: conditions and the down state, applied right
    /// after the interface exists, before the caller gets the device.
    pub(crate) async fn apply_after_build(&self, dev: &Device, name: &str) -> Result<()> {
        let iface = Iface::new(dev.clone(), name);
        match (self.egress, self.ingress) {
            (Some(e), Some(i)) if e == i => iface.set_condition(e, LinkDirection::Both).await?,
            (e, i) => {
                if let Some(e) = e {
                    iface.set_condition(e, LinkDirection::Egress).await?;
                }
                if let Some(i) = i {
                    iface.set_condition(i, LinkDirection::Ingress).await?;
                }
            }
        }
        if self.down {
            iface.link_down().await?;
        }
        Ok(())
    }
}

impl From<NodeId> for IfaceConfig {
    fn from(router: NodeId) -> Self {
        IfaceConfig::routed(router)
    }
}

/// A device interface. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Iface {
    dev: Device,
    name: String,
}

impl Iface {
    pub(crate) fn new(dev: Device, name: &str) -> Iface {
        Iface {
            dev,
            name: name.to_string(),
        }
    }

    fn core(&self) -> Option<crate::Iface> {
        self.dev.core().ok()?.iface(&self.name)
    }

    fn settings(&self) -> Option<super::shared::IfaceSettings> {
        let lab = self.dev.lab_ref().get().ok()?;
        lab.entry(self.dev.id())?.ifaces.get(&self.name).cloned()
    }

    /// The interface name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The device's id.
    pub fn device_id(&self) -> NodeId {
        self.dev.id()
    }

    /// Its IPv4 address.
    pub fn ip(&self) -> Option<Ipv4Addr> {
        self.core()?.ip
    }

    /// Its IPv6 address.
    pub fn ip6(&self) -> Option<Ipv6Addr> {
        self.core()?.ip6
    }

    /// Its link-local IPv6 address.
    pub fn ll6(&self) -> Option<Ipv6Addr> {
        Some(self.core()?.ll6())
    }

    /// The condition on what the device sends.
    pub fn egress(&self) -> Option<LinkCondition> {
        self.settings()?.egress
    }

    /// The condition on what the device receives.
    pub fn ingress(&self) -> Option<LinkCondition> {
        self.settings()?.ingress
    }

    /// Whether it is on a router's LAN.
    pub fn is_routed(&self) -> bool {
        self.settings().is_some_and(|s| !s.dummy)
    }

    /// Whether it is a dummy interface.
    pub fn is_dummy(&self) -> bool {
        self.settings().is_some_and(|s| s.dummy)
    }

    /// Sets the link condition in `direction`.
    pub async fn set_condition(
        &self,
        condition: LinkCondition,
        direction: LinkDirection,
    ) -> Result<()> {
        self.shape(Some(condition), direction).await
    }

    /// Removes the link condition in `direction`.
    pub async fn clear_condition(&self, direction: LinkDirection) -> Result<()> {
        self.shape(None, direction).await
    }

    async fn shape(&self, c: Option<LinkCondition>, direction: LinkDirection) -> Result<()> {
        if self.is_dummy() && direction != LinkDirection::Egress {
            bail!(
                "{}.{} is a dummy interface: it has no link to shape inbound",
                self.dev.name(),
                self.name
            );
        }
        let core_c = c.map(LinkCondition::to_core).unwrap_or_default();
        self.dev
            .core()?
            .set_link_condition_dir(&self.name, core_c, direction.to_core())
            .await?;
        let lab = self.dev.lab_ref().get()?;
        lab.update(self.dev.id(), |e| {
            let s = e.ifaces.entry(self.name.clone()).or_default();
            if direction != LinkDirection::Ingress {
                s.egress = c;
            }
            if direction != LinkDirection::Egress {
                s.ingress = c;
            }
        });
        Ok(())
    }

    /// Takes the link down (`ip link set dev … down`).
    pub async fn link_down(&self) -> Result<()> {
        Ok(self.dev.core()?.link_down(&self.name).await?)
    }

    /// Brings the link up.
    pub async fn link_up(&self) -> Result<()> {
        Ok(self.dev.core()?.link_up(&self.name).await?)
    }

    /// Adds an IPv4 address (kept next to the interface's own).
    pub async fn add_ip(&self, ip: Ipv4Addr, prefix_len: u8) -> Result<()> {
        Ok(self
            .dev
            .core()?
            .add_addr(&self.name, ip.into(), prefix_len)
            .await?)
    }

    /// A new address from the same LAN (the old one is gone).
    pub async fn renew_ip(&self) -> Result<Ipv4Addr> {
        let i = self.dev.core()?.renew_addr(&self.name).await?;
        i.ip.ok_or_else(|| {
            anyhow::anyhow!(
                "{}.{} has no IPv4 address (a v6-only LAN)",
                self.dev.name(),
                self.name
            )
        })
    }

    /// Moves the interface to another router's LAN (same name, new address).
    pub async fn replug(&self, to_router: NodeId) -> Result<()> {
        let lab = self.dev.lab_ref().get()?;
        let router = lab.router_core(to_router)?;
        self.dev.core()?.replug_iface(&self.name, &router).await?;
        Ok(())
    }

    /// Removes the interface.
    pub async fn remove(&self) -> Result<()> {
        self.dev.core()?.remove_iface(&self.name).await?;
        let lab = self.dev.lab_ref().get()?;
        lab.update(self.dev.id(), |e| e.ifaces.remove(&self.name));
        Ok(())
    }
}
