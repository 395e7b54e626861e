//! Upstream's `Device` and `DeviceBuilder` over the core's devices.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result, bail};

use super::iface::{IfaceConfig, IfaceKind};
use super::link::{LinkCondition, LinkDirection};
use super::runner::{Runner, run_methods};
use super::shared::{Entry, IfaceSettings, Kind, LabRef, NodeId, Shared};

/// A device of a lab. Cheap to clone. Handles do not keep the lab alive: once the last
/// [`super::Lab`] is dropped, methods that need it fail.
#[derive(Clone, Debug)]
pub struct Device {
    id: NodeId,
    name: Arc<str>,
    core_name: Arc<str>,
    lab: LabRef,
}

impl Device {
    pub(crate) fn new(id: NodeId, e: &Entry, lab: LabRef) -> Device {
        Device {
            id,
            name: e.name.as_str().into(),
            core_name: e.core.as_str().into(),
            lab,
        }
    }

    pub(crate) fn core(&self) -> Result<crate::native::Device> {
        self.lab
            .get()?
            .core
            .device(&self.core_name)
            .with_context(|| format!("device {} was removed", self.name))
    }

    fn runner(&self) -> Result<Runner> {
        Ok(Runner::Node((*self.core()?).clone()))
    }

    run_methods!();

    /// Spawns an async task on this namespace's runtime; the closure gets a clone of this
    /// handle. Sockets it opens live in the namespace. The task ends with the lab.
    pub fn spawn<F, Fut, T>(&self, f: F) -> Result<tokio::task::JoinHandle<T>>
    where
        F: FnOnce(Device) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = T> + Send + 'static,
        T: Send + 'static,
    {
        self.runner()?.spawn(self.clone(), f)
    }

    /// The device's id.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// The device's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The node's name in the core (its namespace worker's name): the device's name, unless
    /// a router has it too.
    pub fn ns(&self) -> &str {
        &self.core_name
    }

    /// `device.{name}.{suffix}` in the lab's run directory (`None` without one).
    pub fn filepath(&self, suffix: &str) -> Option<PathBuf> {
        self.lab.get().ok()?.node_file("device", &self.name, suffix)
    }

    /// The IPv4 address of the default interface.
    pub fn ip(&self) -> Option<Ipv4Addr> {
        self.core().ok()?.ip()
    }

    /// The IPv6 address of the default interface.
    pub fn ip6(&self) -> Option<Ipv6Addr> {
        self.core().ok()?.ip6()
    }

    /// The MTU set at build time.
    pub fn mtu(&self) -> Option<u32> {
        self.lab.get().ok()?.entry(self.id)?.mtu
    }

    /// An interface by name.
    pub fn iface(&self, name: &str) -> Option<Iface> {
        self.core().ok()?.iface(name)?;
        Some(Iface::new(self.clone(), name))
    }

    /// The interface carrying the default route.
    pub fn default_iface(&self) -> Option<Iface> {
        let name = self.core().ok()?.primary_name()?;
        Some(Iface::new(self.clone(), &name))
    }

    /// Every interface.
    pub fn interfaces(&self) -> Vec<Iface> {
        self.core()
            .map(|c| {
                c.ifaces()
                    .iter()
                    .map(|i| Iface::new(self.clone(), &i.name))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Points the default route at interface `to`.
    pub async fn set_default_route(&self, to: &str) -> Result<()> {
        self.core()?.set_default_route(to).await?;
        Ok(())
    }

    /// Sends to `reflector` from this device's fixed probe port and returns the address the
    /// reflector saw. Blocks for up to about 1.2 s when no answer comes.
    pub fn probe_udp_mapping(&self, reflector: SocketAddr) -> Result<SocketAddr> {
        Ok(self.core()?.probe_udp_mapping_blocking(reflector)?)
    }

    /// A hosts entry only this device sees.
    pub fn set_host(&self, name: &str, ip: IpAddr) -> Result<()> {
        Ok(self.core()?.dns_entry(name, ip)?)
    }

    /// Resolves `name` on the device (its `/etc/hosts` and nameservers).
    pub async fn resolve(&self, name: &str) -> Option<IpAddr> {
        let q = format!("{name}:0");
        self.spawn(move |_| async move {
            tokio::net::lookup_host(q)
                .await
                .ok()
                .and_then(|mut a| a.next())
                .map(|a| a.ip())
        })
        .ok()?
        .await
        .ok()
        .flatten()
    }

    /// Adds an interface at run time (it does not take the default route).
    pub async fn add_iface(&self, ifname: &str, config: impl Into<IfaceConfig>) -> Result<Iface> {
        let cfg = config.into();
        let lab = self.lab.get()?;
        let router = match cfg.kind {
            IfaceKind::Routed(r) => lab.router_core(r)?,
            IfaceKind::Dummy => bail!(
                "adding a dummy interface at run time is not supported: declare it on the DeviceBuilder (IfaceConfig::dummy())"
            ),
        };
        let core = self.core()?;
        core.add_iface(ifname, &router).await?;
        lab.update(self.id, |e| {
            e.ifaces
                .insert(ifname.to_string(), IfaceSettings::default());
        });
        apply_after_build(&cfg, self, ifname).await?;
        Ok(Iface::new(self.clone(), ifname))
    }

    /// Records one metric (`device.{name}.metrics.jsonl` in the run directory, and a
    /// `metric` event).
    pub fn record(&self, key: &str, value: f64) {
        self.metrics().record(key, value).emit();
    }

    /// Records several metrics at once.
    pub fn metrics(&self) -> super::metrics::MetricsBuilder {
        super::metrics::MetricsBuilder::new(self.lab.clone(), "device", &self.name, &self.core_name)
    }

    /// Records every counter and gauge of an iroh-metrics group (histograms are skipped).
    #[cfg(feature = "iroh-metrics")]
    pub fn record_iroh_metrics(&self, group: &dyn iroh_metrics::MetricsGroup) {
        super::metrics::record_group(self.metrics(), group);
    }

    /// The calling thread's tracing dispatcher, entered (events are not routed per device:
    /// they go to the test's subscriber).
    pub fn enter_tracing(&self) -> tracing::dispatcher::DefaultGuard {
        tracing::dispatcher::get_default(tracing::dispatcher::set_default)
    }

    pub(crate) fn lab_ref(&self) -> &LabRef {
        &self.lab
    }
}

/// Builds a device: from [`super::Lab::add_device`].
#[must_use = "call .build().await"]
pub struct DeviceBuilder {
    lab: Arc<Shared>,
    name: String,
    ifaces: Vec<(String, IfaceConfig)>,
    default_via: Option<String>,
    mtu: Option<u32>,
}

impl std::fmt::Debug for DeviceBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceBuilder")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl DeviceBuilder {
    pub(crate) fn new(lab: Arc<Shared>, name: &str) -> DeviceBuilder {
        DeviceBuilder {
            lab,
            name: name.to_string(),
            ifaces: vec![],
            default_via: None,
            mtu: None,
        }
    }

    /// The MTU of every interface.
    pub fn mtu(mut self, mtu: u32) -> Self {
        self.mtu = Some(mtu);
        self
    }

    /// Accepted for upstream compatibility; IPv6 routes are always installed statically
    /// here (see the porting guide).
    pub fn ipv6_provisioning_mode(self, _mode: super::ipv6::Ipv6ProvisioningMode) -> Self {
        self
    }

    /// Adds an interface: a router's id (a routed interface) or an [`IfaceConfig`].
    pub fn iface(mut self, ifname: &str, config: impl Into<IfaceConfig>) -> Self {
        self.ifaces.push((ifname.to_string(), config.into()));
        self
    }

    /// Adds an interface named `eth{n}`, `n` the number of interfaces added so far.
    pub fn uplink(self, config: impl Into<IfaceConfig>) -> Self {
        let n = self.ifaces.len();
        self.iface(&format!("eth{n}"), config)
    }

    /// Which interface carries the default route (default: the first routed one).
    pub fn default_via(mut self, ifname: &str) -> Self {
        self.default_via = Some(ifname.to_string());
        self
    }

    /// Creates the device.
    pub async fn build(self) -> Result<Device> {
        let lab = &self.lab;
        if lab.id_by_name(&self.name, Kind::Device).is_some() {
            bail!("device '{}' already exists", self.name);
        }
        let core_name = lab.core_name(&self.name, Kind::Device);
        let mut b = lab.core.add_device(&core_name);
        let mut ifaces = BTreeMap::new();
        for (name, cfg) in &self.ifaces {
            match cfg.kind {
                IfaceKind::Routed(r) => {
                    if cfg.addr.is_some() || cfg.addr_v6.is_some() {
                        bail!(
                            "{}.{name}: a fixed address on a routed interface (IfaceConfig::routed(..).addr(..)) is not supported: routed interfaces take the next address of the router's LAN; use a dummy interface for fixed addresses",
                            self.name
                        );
                    }
                    b = b.iface_on(name, &lab.router_core(r)?);
                }
                IfaceKind::Dummy => {
                    let addrs: Vec<ipnet::IpNet> = cfg
                        .addr
                        .map(ipnet::IpNet::V4)
                        .into_iter()
                        .chain(cfg.addr_v6.map(ipnet::IpNet::V6))
                        .collect();
                    b = b.dummy(name, &addrs);
                }
            }
            let s = IfaceSettings {
                dummy: cfg.kind == IfaceKind::Dummy,
                ..Default::default()
            };
            ifaces.insert(name.clone(), s);
        }
        if let Some(v) = &self.default_via {
            b = b.default_via(v);
        }
        if let Some(m) = self.mtu {
            b = b.mtu(m);
        }
        b.build().await?;
        let entry = Entry {
            name: self.name.clone(),
            core: core_name,
            kind: Kind::Device,
            router: None,
            ifaces,
            mtu: self.mtu,
        };
        let id = lab.register(entry.clone());
        let dev = Device::new(id, &entry, LabRef(Arc::downgrade(lab)));
        for (name, cfg) in &self.ifaces {
            apply_after_build(cfg, &dev, name).await?;
        }
        Ok(dev)
    }
}

/// The device with `id`, if `id` is a device of `lab`.
pub(crate) fn by_id(lab: &Arc<Shared>, id: NodeId) -> Option<Device> {
    let e = lab.entry(id)?;
    (e.kind == Kind::Device).then(|| Device::new(id, &e, LabRef(Arc::downgrade(lab))))
}

/// What the core builder does not do: conditions and the down state, applied right
/// after the interface exists, before the caller gets the device.
pub(crate) async fn apply_after_build(cfg: &IfaceConfig, dev: &Device, name: &str) -> Result<()> {
    let iface = Iface::new(dev.clone(), name);
    match (cfg.egress, cfg.ingress) {
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
    if cfg.down {
        iface.link_down().await?;
    }
    Ok(())
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

    fn core(&self) -> Option<crate::native::Iface> {
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

    /// Refuses `op` on a dummy interface (it has no router to take an address from or to move
    /// to), as upstream does.
    fn not_dummy(&self, op: &str) -> Result<()> {
        if self.is_dummy() {
            bail!(
                "cannot {op} dummy interface {}.{}: it has no router; declare a routed interface (IfaceConfig::routed) for that",
                self.dev.name(),
                self.name
            );
        }
        Ok(())
    }

    /// A new address from the same LAN (the old one is gone). Refused on a dummy interface.
    pub async fn renew_ip(&self) -> Result<Ipv4Addr> {
        self.not_dummy("renew the IP of")?;
        let i = self.dev.core()?.renew_addr(&self.name).await?;
        i.ip.ok_or_else(|| {
            anyhow::anyhow!(
                "{}.{} has no IPv4 address (a v6-only LAN)",
                self.dev.name(),
                self.name
            )
        })
    }

    /// Moves the interface to another router's LAN (same name, new address). Refused on a
    /// dummy interface.
    pub async fn replug(&self, to_router: NodeId) -> Result<()> {
        self.not_dummy("replug")?;
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
