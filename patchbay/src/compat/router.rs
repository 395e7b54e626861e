//! Upstream's `Router`, `RouterIface` and `RouterBuilder` over the core's routers.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use ipnet::{Ipv4Net, Ipv6Net};

use super::firewall::{Firewall, FirewallConfigBuilder};
use super::link::LinkCondition;
use super::nat::NatConfig;
use super::preset::RouterPreset;
use super::region::Region;
use super::runner::{Runner, run_methods};
use super::shared::{Entry, Kind, LabRef, NodeId, RouterSettings, Shared};
use crate::addr::LanKind;
use crate::{IpSupport, NatV6Mode};

/// Upstream's default router advertisement settings (reported by the getters; routes are
/// static here).
const RA_INTERVAL_SECS: u64 = 30;
const RA_LIFETIME_SECS: u64 = 1800;

/// One interface of a router (`wan` or `ix` uplink, `lan` bridge).
#[derive(Clone, Debug)]
pub struct RouterIface {
    name: String,
    ip: Option<Ipv4Addr>,
    ip6: Option<Ipv6Addr>,
    ll6: Option<Ipv6Addr>,
}

impl RouterIface {
    /// The interface name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its IPv4 address.
    pub fn ip(&self) -> Option<Ipv4Addr> {
        self.ip
    }

    /// Its IPv6 address.
    pub fn ip6(&self) -> Option<Ipv6Addr> {
        self.ip6
    }

    /// Its link-local IPv6 address.
    pub fn ll6(&self) -> Option<Ipv6Addr> {
        self.ll6
    }
}

/// A router of a lab. Cheap to clone; does not keep the lab alive.
#[derive(Clone, Debug)]
pub struct Router {
    id: NodeId,
    name: Arc<str>,
    core_name: Arc<str>,
    lab: LabRef,
}

impl Router {
    pub(crate) fn new(id: NodeId, e: &Entry, lab: LabRef) -> Router {
        Router {
            id,
            name: e.name.as_str().into(),
            core_name: e.core.as_str().into(),
            lab,
        }
    }

    fn core(&self) -> Result<crate::native::Router> {
        self.lab
            .get()?
            .core
            .router(&self.core_name)
            .with_context(|| format!("router {} was removed", self.name))
    }

    fn runner(&self) -> Result<Runner> {
        Ok(Runner::Node((*self.core()?).clone()))
    }

    fn settings(&self) -> Option<RouterSettings> {
        self.lab.get().ok()?.entry(self.id)?.router
    }

    fn update(&self, f: impl FnOnce(&mut RouterSettings)) -> Result<()> {
        self.lab.get()?.update(self.id, |e| {
            if let Some(r) = e.router.as_mut() {
                f(r)
            }
        });
        Ok(())
    }

    run_methods!();

    /// Spawns an async task on this namespace's runtime; the closure gets a clone of this
    /// handle. Sockets it opens live in the namespace. The task ends with the lab.
    pub fn spawn<F, Fut, T>(&self, f: F) -> Result<tokio::task::JoinHandle<T>>
    where
        F: FnOnce(Router) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = T> + Send + 'static,
        T: Send + 'static,
    {
        self.runner()?.spawn(self.clone(), f)
    }

    /// The router's id.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// The router's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The node's name in the core (its namespace worker's name): the router's name, unless
    /// a device has it too.
    pub fn ns(&self) -> &str {
        &self.core_name
    }

    /// `router.{name}.{suffix}` in the lab's run directory.
    pub fn filepath(&self, suffix: &str) -> Option<PathBuf> {
        self.lab.get().ok()?.node_file("router", &self.name, suffix)
    }

    /// An interface: `wan` (also as `ix` for a router on the exchange) or `lan`.
    pub fn iface(&self, name: &str) -> Option<RouterIface> {
        let core = self.core().ok()?;
        let wan_alias = name == "ix" && core.iface("wan").is_some_and(|i| i.peer == "exchange");
        let i = core.iface(if wan_alias { "wan" } else { name })?;
        Some(RouterIface {
            name: name.to_string(),
            ip: i.ip,
            ip6: i.ip6,
            ll6: Some(i.ll6()),
        })
    }

    /// Every interface.
    pub fn interfaces(&self) -> Vec<RouterIface> {
        let Ok(core) = self.core() else {
            return vec![];
        };
        core.ifaces()
            .into_iter()
            .filter_map(|i| self.iface(&i.name))
            .collect()
    }

    /// The region it was placed in.
    pub fn region(&self) -> Option<String> {
        self.settings()?.region
    }

    /// Its NAT configuration (`None`: no NAT).
    pub fn nat_config(&self) -> Option<NatConfig> {
        self.settings()?.nat
    }

    /// The MTU set at build time.
    pub fn mtu(&self) -> Option<u32> {
        self.settings()?.mtu
    }

    /// The uplink's IPv4 address: `None` for a v6-only router without NAT64, as upstream (the
    /// core gives an uplink both families; upstream only those the router uses).
    pub fn uplink_ip(&self) -> Option<Ipv4Addr> {
        let core = self.core().ok()?;
        let v4 = core.ip_support().ok()?.has_v4() || core.nat_v6().ok()? == NatV6Mode::Nat64;
        if v4 { core.ip() } else { None }
    }

    /// The uplink's IPv6 address: `None` for a v4-only router, as upstream.
    pub fn uplink_ip_v6(&self) -> Option<Ipv6Addr> {
        let core = self.core().ok()?;
        if core.ip_support().ok()?.has_v6() {
            core.ip6()
        } else {
            None
        }
    }

    /// The LAN's IPv4 prefix.
    pub fn downstream_cidr(&self) -> Option<Ipv4Net> {
        let i = self.core().ok()?.iface("lan")?;
        Ipv4Net::new(i.ip?, i.prefix).ok().map(|n| n.trunc())
    }

    /// The LAN's IPv4 gateway (the router's own LAN address).
    pub fn downstream_gw(&self) -> Option<Ipv4Addr> {
        self.core().ok()?.lan_ip()
    }

    /// The LAN's IPv6 prefix (a /64).
    pub fn downstream_cidr_v6(&self) -> Option<Ipv6Net> {
        Ipv6Net::new(self.core().ok()?.lan_ip6()?, 64)
            .ok()
            .map(|n| n.trunc())
    }

    /// The LAN's IPv6 gateway.
    pub fn downstream_gw_v6(&self) -> Option<Ipv6Addr> {
        self.core().ok()?.lan_ip6()
    }

    /// The LAN's address families.
    pub fn ip_support(&self) -> Option<IpSupport> {
        self.core().ok()?.ip_support().ok()
    }

    /// The IPv6 NAT mode.
    pub fn nat_v6_mode(&self) -> Option<NatV6Mode> {
        self.core().ok()?.nat_v6().ok()
    }

    /// Whether router advertisements are on (reported only: routes are static here).
    pub fn ra_enabled(&self) -> Option<bool> {
        Some(self.settings()?.ra_enabled)
    }

    /// The RA interval (reported only).
    pub fn ra_interval_secs(&self) -> Option<u64> {
        Some(self.settings()?.ra_interval_secs)
    }

    /// The RA lifetime (reported only).
    pub fn ra_lifetime_secs(&self) -> Option<u64> {
        Some(self.settings()?.ra_lifetime_secs)
    }

    /// Records the RA setting (IPv6 routes are installed statically here; see the porting
    /// guide).
    pub async fn set_ra_enabled(&self, enabled: bool) -> Result<()> {
        self.update(|r| r.ra_enabled = enabled)
    }

    /// Records the RA interval (at least 1 s).
    pub async fn set_ra_interval_secs(&self, secs: u64) -> Result<()> {
        self.update(|r| r.ra_interval_secs = secs.max(1))
    }

    /// Records the RA lifetime.
    pub async fn set_ra_lifetime_secs(&self, secs: u64) -> Result<()> {
        self.update(|r| r.ra_lifetime_secs = secs)
    }

    /// Replaces the NAT (a [`super::Nat`], a [`NatConfig`] or `None`). Existing conntrack
    /// entries stay; [`Router::flush_nat_state`] removes them.
    pub async fn set_nat<T: Into<Option<NatConfig>>>(&self, mode: T) -> Result<()> {
        let nat: Option<NatConfig> = mode.into();
        let cfg = match nat {
            Some(c) => c.to_core()?,
            None => crate::native::NatConfig::default(),
        };
        self.core()?.set_nat_config(cfg).await?;
        self.update(|r| r.nat = nat)
    }

    /// Replaces the IPv6 NAT mode: not supported at run time (the core sets it at build).
    pub async fn set_nat_v6_mode(&self, mode: NatV6Mode) -> Result<()> {
        if Some(mode) == self.nat_v6_mode() {
            return Ok(());
        }
        bail!(
            "router {}: changing the IPv6 NAT mode at run time is not supported; build the router with .nat_v6({mode:?})",
            self.name
        )
    }

    /// Flushes the router's conntrack table: every NAT mapping is forgotten.
    pub async fn flush_nat_state(&self) -> Result<()> {
        Ok(self.core()?.flush_nat().await?)
    }

    /// Shapes what the router sends into its LAN (every device's download); `None` removes
    /// it.
    pub async fn set_downlink_condition(&self, impair: Option<LinkCondition>) -> Result<()> {
        let c = impair.map(LinkCondition::to_core).unwrap_or_default();
        self.core()?.set_lan_condition(c).await?;
        self.update(|r| r.downlink = impair)
    }

    /// Replaces the firewall.
    pub async fn set_firewall(&self, fw: Firewall) -> Result<()> {
        self.core()?
            .set_firewall(fw.to_core().unwrap_or_default())
            .await?;
        self.update(|r| r.firewall = fw)
    }

    /// Records one metric (`router.{name}.metrics.jsonl`, and a `metric` event).
    pub fn record(&self, key: &str, value: f64) {
        self.metrics().record(key, value).emit();
    }

    /// Records several metrics at once.
    pub fn metrics(&self) -> super::metrics::MetricsBuilder {
        super::metrics::MetricsBuilder::new(self.lab.clone(), "router", &self.name, &self.core_name)
    }

    /// Records every counter and gauge of an iroh-metrics group.
    #[cfg(feature = "iroh-metrics")]
    pub fn record_iroh_metrics(&self, group: &dyn iroh_metrics::MetricsGroup) {
        super::metrics::record_group(self.metrics(), group);
    }

    /// The calling thread's tracing dispatcher, entered.
    pub fn enter_tracing(&self) -> tracing::dispatcher::DefaultGuard {
        tracing::dispatcher::get_default(tracing::dispatcher::set_default)
    }
}

/// Builds a router: from [`super::Lab::add_router`]. Defaults as upstream's: no NAT,
/// IPv4 only, no firewall, on the exchange.
#[must_use = "call .build().await"]
pub struct RouterBuilder {
    lab: Arc<Shared>,
    name: String,
    settings: RouterSettings,
    upstream: Option<NodeId>,
    public_pool: Option<bool>,
    block_pmtu: bool,
    downstream_cidr: Option<Ipv4Net>,
}

impl std::fmt::Debug for RouterBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouterBuilder")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl RouterBuilder {
    pub(crate) fn new(lab: Arc<Shared>, name: &str) -> RouterBuilder {
        RouterBuilder {
            lab,
            name: name.to_string(),
            settings: RouterSettings {
                nat: None,
                nat_v6: NatV6Mode::None,
                firewall: Firewall::None,
                ip_support: IpSupport::V4Only,
                mtu: None,
                region: None,
                ra_enabled: true,
                ra_interval_secs: RA_INTERVAL_SECS,
                ra_lifetime_secs: RA_LIFETIME_SECS,
                downlink: None,
            },
            upstream: None,
            public_pool: None,
            block_pmtu: false,
            downstream_cidr: None,
        }
    }

    /// Places the router in a region (behind the region's router).
    pub fn region(mut self, region: &Region) -> Self {
        self.settings.region = Some(region.name().to_string());
        self.upstream = Some(region.router_id());
        self
    }

    /// Connects the uplink to `parent`'s LAN instead of the exchange.
    pub fn upstream(mut self, parent: NodeId) -> Self {
        self.upstream = Some(parent);
        self
    }

    /// Applies a preset; later calls override its values.
    pub fn preset(mut self, p: RouterPreset) -> Self {
        let e = p.expand();
        self.settings.nat = e.nat;
        self.settings.nat_v6 = e.nat_v6;
        self.settings.firewall = e.firewall;
        self.settings.ip_support = e.ip_support;
        self.public_pool = Some(e.public_pool);
        self
    }

    /// The NAT: a [`super::Nat`], a [`NatConfig`] or `None`.
    pub fn nat<T: Into<Option<NatConfig>>>(mut self, mode: T) -> Self {
        self.settings.nat = mode.into();
        self
    }

    /// Shapes what the router sends into its LAN.
    pub fn downlink_condition(mut self, condition: LinkCondition) -> Self {
        self.settings.downlink = Some(condition);
        self
    }

    /// The MTU of the uplink and the LAN bridge.
    pub fn mtu(mut self, mtu: u32) -> Self {
        self.settings.mtu = Some(mtu);
        self
    }

    /// Drops ICMP "fragmentation needed" (a PMTU black hole).
    pub fn block_icmp_frag_needed(mut self) -> Self {
        self.block_pmtu = true;
        self
    }

    /// A firewall preset.
    pub fn firewall(mut self, fw: Firewall) -> Self {
        self.settings.firewall = fw;
        self
    }

    /// A custom firewall, built in a closure.
    pub fn firewall_custom(
        mut self,
        f: impl FnOnce(&mut FirewallConfigBuilder) -> &mut FirewallConfigBuilder,
    ) -> Self {
        let mut b = FirewallConfigBuilder::default();
        f(&mut b);
        self.settings.firewall = Firewall::Custom(b.build());
        self
    }

    /// The LAN's address families (default: IPv4 only, as upstream).
    pub fn ip_support(mut self, support: IpSupport) -> Self {
        self.settings.ip_support = support;
        self
    }

    /// The IPv6 NAT mode.
    pub fn nat_v6(mut self, mode: NatV6Mode) -> Self {
        self.settings.nat_v6 = mode;
        self
    }

    /// Router advertisements on or off (recorded; IPv6 routes are static here).
    pub fn ra_enabled(mut self, enabled: bool) -> Self {
        self.settings.ra_enabled = enabled;
        self
    }

    /// The RA interval (recorded).
    pub fn ra_interval_secs(mut self, secs: u64) -> Self {
        self.settings.ra_interval_secs = secs.max(1);
        self
    }

    /// The RA lifetime (recorded).
    pub fn ra_lifetime_secs(mut self, secs: u64) -> Self {
        self.settings.ra_lifetime_secs = secs;
        self
    }

    /// A fixed LAN prefix: refused at build, LANs come from the lab's address plan here
    /// (see the porting guide).
    pub fn downstream_cidr(mut self, cidr: Ipv4Net) -> Self {
        self.downstream_cidr = Some(cidr);
        self
    }

    /// Creates the router.
    pub async fn build(self) -> Result<Router> {
        let lab = &self.lab;
        let s = &self.settings;
        if self.name.starts_with("region_") {
            bail!("router names starting with 'region_' are reserved");
        }
        if lab.id_by_name(&self.name, Kind::Router).is_some() {
            bail!("router '{}' already exists", self.name);
        }
        if let Some(c) = self.downstream_cidr {
            bail!(
                "router {}: a fixed downstream prefix ({c}) is not supported: LANs come from the lab's address plan (docs/porting.md)",
                self.name
            );
        }
        let core_name = lab.core_name(&self.name, Kind::Router);
        let mut b = lab
            .core
            .add_router(&core_name)
            .ip_support(s.ip_support)
            .nat_v6(s.nat_v6);
        if let Some(nat) = s.nat {
            b = b.nat_config(nat.to_core()?);
        }
        let public = self.public_pool.unwrap_or(s.nat.is_none());
        b = b.lan_kind(if public {
            LanKind::Public
        } else {
            LanKind::Private
        });
        if let Some(fw) = s.firewall.to_core() {
            b = b.firewall(fw);
        }
        if let Some(m) = s.mtu {
            b = b.mtu(m);
        }
        if self.block_pmtu {
            b = b.block_icmp_frag_needed();
        }
        if let Some(up) = self.upstream {
            b = b.upstream_name(&lab.router_core(up)?);
        }
        let core = b.build().await?;
        if let Some(d) = s.downlink {
            core.set_lan_condition(d.to_core()).await?;
        }
        let entry = Entry {
            name: self.name.clone(),
            core: core_name,
            kind: Kind::Router,
            router: Some(self.settings.clone()),
            ifaces: Default::default(),
            mtu: s.mtu,
        };
        let id = lab.register(entry.clone());
        Ok(Router::new(id, &entry, LabRef(Arc::downgrade(lab))))
    }
}

/// The router with `id`, if `id` is a router of `lab`.
pub(crate) fn by_id(lab: &Arc<Shared>, id: NodeId) -> Option<Router> {
    let e = lab.entry(id)?;
    (e.kind == Kind::Router).then(|| Router::new(id, &e, LabRef(Arc::downgrade(lab))))
}
