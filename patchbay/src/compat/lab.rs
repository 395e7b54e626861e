//! Upstream's `Lab`, `LabBuilder`, `OutDir` and `TestGuard` over the core's [`crate::native::Lab`].

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};

use anyhow::{Context, Result, anyhow, bail};

use super::device::{self, Device, DeviceBuilder};
use super::dns::DnsServer;
use super::ipv6::{Ipv6DadMode, Ipv6Profile, Ipv6ProvisioningMode};
use super::ix::Ix;
use super::link::LinkCondition;
use super::region::{DefaultRegions, Region, RegionLink};
use super::router::{self, Router, RouterBuilder};
use super::shared::{Entry, Kind, NodeId, RouterSettings, Shared};
use super::sync::block_on;

/// Where a lab writes its run directory ([`crate::native::Lab`]'s artifacts: `run.json`,
/// `events.jsonl`, command logs; see docs/artifacts.md).
#[derive(Clone, Debug)]
pub enum OutDir {
    /// A new directory `{timestamp}-{label}` inside this one.
    Nested(PathBuf),
    /// Exactly this directory.
    Exact(PathBuf),
}

/// Configures a [`Lab`]: from [`Lab::builder`].
#[derive(Debug, Default)]
#[must_use = "call .build().await"]
pub struct LabBuilder {
    outdir: Option<OutDir>,
    label: Option<String>,
    time: crate::TimeMode,
    sysctl_only: bool,
}

impl LabBuilder {
    /// Where the run directory goes.
    pub fn outdir(mut self, outdir: OutDir) -> Self {
        self.outdir = Some(outdir);
        self
    }

    /// A label (the nested run directory's name, thread names, `PATCHBAY_LAB`).
    pub fn label(mut self, label: impl Into<String>) -> Self {
        self.label = Some(label.into());
        self
    }

    /// Labels the lab with the current thread's name (the test's name under libtest and
    /// nextest), unless it is `main` or a tokio worker.
    pub fn label_from_thread(self) -> Self {
        match std::thread::current().name() {
            Some(n) if !matches!(n, "main" | "tokio-runtime-worker") => self.label(n),
            _ => self,
        }
    }

    /// [`OutDir::Nested`] in `$PATCHBAY_OUTDIR`, if set.
    pub fn outdir_from_env(mut self) -> Self {
        if let Some(v) = std::env::var_os("PATCHBAY_OUTDIR") {
            self.outdir = Some(OutDir::Nested(v.into()));
        }
        self
    }

    /// Accepted (see [`Ipv6DadMode`]).
    pub fn ipv6_dad_mode(self, _mode: Ipv6DadMode) -> Self {
        self
    }

    /// Accepted (see [`Ipv6ProvisioningMode`]).
    pub fn ipv6_provisioning_mode(self, _mode: Ipv6ProvisioningMode) -> Self {
        self
    }

    /// Accepted (see [`Ipv6Profile`]).
    pub fn ipv6_profile(self, _profile: Ipv6Profile) -> Self {
        self
    }

    /// Accepted: labs run as root or in the user namespace of [`super::init_userns`]; the
    /// lab's mounts are always in private mount namespaces, so root needs no opt-in.
    pub fn allow_real_root(self) -> Self {
        self
    }

    /// How time runs in the lab (patchbay's addition to upstream's builder; default
    /// [`TimeMode::Real`](crate::TimeMode::Real)). [`TimeMode::Compressed`](crate::TimeMode)
    /// divides the kernel's timers by k inside this lab (root, cgroup v2 and eBPF
    /// `sock_ops`, Linux 5.15+; docs/compression.md); `TimeMode::Virtual` asserts that the
    /// test runs in patchbay's time-travel guest (docs/virtual-time.md).
    pub fn time_mode(mut self, mode: crate::TimeMode) -> Self {
        self.time = mode;
        self
    }

    /// Compresses by per-namespace sysctls only, without eBPF (patchbay's addition): for a
    /// compressed lab where eBPF is unavailable, such as in the user namespace of
    /// [`init_userns`](crate::init_userns). What is then not compressed is listed by
    /// [`Lab::compression_report`]. Default off.
    pub fn sysctl_only(mut self, on: bool) -> Self {
        self.sysctl_only = on;
        self
    }

    /// Creates the lab.
    pub async fn build(self) -> Result<Lab> {
        let run_dir = self.outdir.map(|o| match o {
            OutDir::Exact(p) => p,
            OutDir::Nested(base) => {
                let name = self.label.clone().unwrap_or_else(|| "lab".into());
                base.join(format!(
                    "{}-{}",
                    timestamp(),
                    super::shared::sanitize(&name)
                ))
            }
        });
        let mut opts = crate::LabOpts::default()
            .time_mode(self.time)
            .sysctl_only(self.sysctl_only);
        if let Some(l) = &self.label {
            opts = opts.label(super::shared::sanitize(l));
        }
        if let Some(d) = &run_dir {
            std::fs::create_dir_all(d)
                .map_err(|e| anyhow!("creating the run directory {}: {e}", d.display()))?;
            opts = opts.outdir(d).keep_artifacts(true);
        }
        let core = crate::native::Lab::with_opts(opts).await?;
        Ok(Lab {
            shared: Arc::new(Shared::new(core, run_dir, self.label)),
        })
    }
}

/// Now as `YYYYmmdd_HHMMSS` in UTC (the nested run directory's prefix).
fn timestamp() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    utc(secs)
}

/// Seconds since the epoch as `YYYYmmdd_HHMMSS` (UTC).
fn utc(secs: u64) -> String {
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (proleptic Gregorian).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}{m:02}{d:02}_{:02}{:02}{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// A network lab. Cheap to clone; the last clone dropped tears it down (every worker,
/// task and process of it ends; its namespaces go).
#[derive(Clone, Debug)]
pub struct Lab {
    pub(crate) shared: Arc<Shared>,
}

impl Lab {
    /// A builder.
    pub fn builder() -> LabBuilder {
        LabBuilder::default()
    }

    /// How time runs in the lab ([`LabBuilder::time_mode`]).
    pub fn time_mode(&self) -> crate::TimeMode {
        self.shared.core.time_mode()
    }

    /// The lab's clock: time since the lab started, as the code inside experiences it (k
    /// times the wall clock under compression).
    pub fn clock(&self) -> crate::LabClock {
        self.shared.core.clock()
    }

    /// Per kernel timer: default, target, applied value, mechanism and status at the
    /// lab's k, and the largest faithful k on this kernel (docs/compression.md).
    pub fn compression_report(&self) -> Result<crate::compress::CompressionReport> {
        Ok(self.shared.core.compression_report()?)
    }

    /// A lab with its run directory in `$PATCHBAY_OUTDIR` (if set).
    pub async fn new() -> Result<Lab> {
        Self::builder().outdir_from_env().build().await
    }

    /// A lab for a test: its run directory is `dir`, it is labelled with the test's name,
    /// and the guard records whether the test passed.
    pub async fn for_test(dir: impl Into<PathBuf>) -> Result<(Lab, TestGuard)> {
        let lab = Self::builder()
            .outdir(OutDir::Exact(dir.into()))
            .label_from_thread()
            .build()
            .await?;
        let guard = lab.test_guard();
        Ok((lab, guard))
    }

    /// The lab's unique id.
    pub fn prefix(&self) -> String {
        self.shared.core.id().to_string()
    }

    /// The run directory.
    pub fn run_dir(&self) -> Option<&Path> {
        self.shared.run_dir.as_deref()
    }

    /// The label.
    pub fn label(&self) -> Option<&str> {
        self.shared.label.as_deref()
    }

    /// A guard that marks the run failed when dropped without [`TestGuard::ok`].
    pub fn test_guard(&self) -> TestGuard {
        TestGuard {
            lab: Arc::downgrade(&self.shared),
            marked: false,
        }
    }

    /// Starts building a router.
    pub fn add_router(&self, name: &str) -> RouterBuilder {
        RouterBuilder::new(self.shared.clone(), name)
    }

    /// Starts building a device.
    pub fn add_device(&self, name: &str) -> DeviceBuilder {
        DeviceBuilder::new(self.shared.clone(), name)
    }

    /// Removes a device (its links, processes and namespace).
    pub fn remove_device(&self, id: NodeId) -> Result<()> {
        self.remove(id, Kind::Device)
    }

    /// Removes a router; it must have nothing on its LAN.
    pub fn remove_router(&self, id: NodeId) -> Result<()> {
        self.remove(id, Kind::Router)
    }

    fn remove(&self, id: NodeId, kind: Kind) -> Result<()> {
        let e = self
            .shared
            .entry(id)
            .filter(|e| e.kind == kind)
            .ok_or_else(|| anyhow!("no {kind:?} with id {id} in this lab"))?;
        block_on(self.shared.core.remove_node(&e.core))?;
        self.shared.remove(id);
        Ok(())
    }

    /// `NETSIM_IP_{DEVICE}` (default interface) and `NETSIM_IP_{DEVICE}_{IFACE}` for every
    /// device's IPv4 addresses, names upper-cased with `-` as `_`.
    pub fn env_vars(&self) -> HashMap<String, String> {
        let norm = |s: &str| s.to_uppercase().replace('-', "_");
        let mut m = HashMap::new();
        for d in self.devices() {
            let Ok(core) = d.core() else { continue };
            if let Some(ip) = core.ip() {
                m.insert(format!("NETSIM_IP_{}", norm(d.name())), ip.to_string());
            }
            for i in core.ifaces() {
                if let Some(ip) = i.ip {
                    let k = format!("NETSIM_IP_{}_{}", norm(d.name()), norm(&i.name));
                    m.insert(k, ip.to_string());
                }
            }
        }
        m
    }

    /// The exchange (the lab's root namespace).
    pub fn ix(&self) -> Ix {
        Ix::new(&self.shared)
    }

    /// Nothing to do: everything a lab made goes when it is dropped.
    pub fn cleanup(&self) {}

    /// The lab's DNS server, started on first use: it answers on the exchange's addresses,
    /// and every node's `/etc/resolv.conf` (for processes and in-process resolvers) points
    /// at it from then on.
    pub fn dns_server(&self) -> Result<DnsServer> {
        DnsServer::of(&self.shared.core, &self.shared.dns)
    }

    /// A name's address from the DNS server's records (`None` before it is started).
    pub fn resolve(&self, name: &str) -> Option<IpAddr> {
        let dns = super::sync::lock(&self.shared.dns).clone()?;
        dns.resolve(name)
    }

    /// Shapes the link between two directly connected nodes (a device and its router, or a
    /// router and the router above it), on the lower node's interface, both directions;
    /// `None` removes it.
    pub async fn set_link_condition(
        &self,
        a: NodeId,
        b: NodeId,
        impair: Option<LinkCondition>,
    ) -> Result<()> {
        let (ea, eb) = (self.entry(a)?, self.entry(b)?);
        let c = impair.map(LinkCondition::to_core).unwrap_or_default();
        for (lower, upper) in [(&ea, &eb), (&eb, &ea)] {
            let Some(node) = self.shared.core.node(&lower.core) else {
                continue;
            };
            if let Some(i) = node.ifaces().into_iter().find(|i| i.peer == upper.core) {
                node.set_link_condition(&i.name, c).await?;
                return Ok(());
            }
        }
        bail!(
            "{} and {} are not directly connected: shape a device's link to its router, or a router's uplink",
            ea.name,
            eb.name
        )
    }

    fn entry(&self, id: NodeId) -> Result<super::shared::Entry> {
        self.shared
            .entry(id)
            .ok_or_else(|| anyhow!("no node with id {id} in this lab"))
    }

    /// The device with this id.
    pub fn device(&self, id: NodeId) -> Option<Device> {
        device::by_id(&self.shared, id)
    }

    /// The router with this id.
    pub fn router(&self, id: NodeId) -> Option<Router> {
        router::by_id(&self.shared, id)
    }

    /// A device by name.
    pub fn device_by_name(&self, name: &str) -> Option<Device> {
        self.device(self.shared.id_by_name(name, Kind::Device)?)
    }

    /// A router by name.
    pub fn router_by_name(&self, name: &str) -> Option<Router> {
        self.router(self.shared.id_by_name(name, Kind::Router)?)
    }

    /// Every device.
    pub fn devices(&self) -> Vec<Device> {
        let ids = self.shared.ids(Kind::Device);
        ids.into_iter().filter_map(|id| self.device(id)).collect()
    }

    /// Every router.
    pub fn routers(&self) -> Vec<Router> {
        let ids = self.shared.ids(Kind::Router);
        ids.into_iter().filter_map(|id| self.router(id)).collect()
    }
}

/// Records whether a test passed: dropped without [`TestGuard::ok`], it marks the lab's run
/// failed (`run.json`, and the run directory is kept).
#[derive(Debug)]
pub struct TestGuard {
    lab: Weak<Shared>,
    marked: bool,
}

impl TestGuard {
    /// Marks the test passed.
    pub fn ok(mut self) {
        self.marked = true;
        if let Some(l) = self.lab.upgrade() {
            l.core
                .mark("test.completed", serde_json::json!({"passed": true}));
        }
    }
}

impl Drop for TestGuard {
    fn drop(&mut self) {
        if self.marked {
            return;
        }
        if let Some(l) = self.lab.upgrade() {
            l.core
                .mark("test.completed", serde_json::json!({"passed": false}));
            l.core.fail("the test's TestGuard was dropped without ok()");
        }
    }
}

impl Lab {
    fn core_region(&self, r: &Region) -> Result<crate::native::Region> {
        self.shared
            .core
            .region(r.name())
            .with_context(|| format!("region {} is not in this lab", r.name()))
    }

    /// Adds a region.
    pub async fn add_region(&self, name: &str) -> Result<Region> {
        let r = self.shared.core.add_region(name).await?;
        let rname = r.router().name().to_string();
        let router_id = self.shared.register(Entry {
            core: rname.clone(),
            name: rname,
            kind: Kind::Router,
            router: Some(RouterSettings {
                nat: None,
                nat_v6: crate::NatV6Mode::None,
                firewall: super::Firewall::None,
                ip_support: crate::IpSupport::DualStack,
                mtu: None,
                region: Some(name.to_string()),
                ra_enabled: true,
                ra_interval_secs: 30,
                ra_lifetime_secs: 1800,
                downlink: None,
            }),
            ifaces: Default::default(),
            mtu: None,
        });
        Ok(Region {
            name: name.into(),
            router_id,
        })
    }

    /// Links two regions.
    pub async fn link_regions(&self, a: &Region, b: &Region, link: RegionLink) -> Result<()> {
        let (ra, rb) = (self.core_region(a)?, self.core_region(b)?);
        Ok(self
            .shared
            .core
            .link_regions(&ra, &rb, link.to_core())
            .await?)
    }

    /// Breaks a region link (traffic detours through a third region linked to both, else is
    /// dropped).
    pub async fn break_region_link(&self, a: &Region, b: &Region) -> Result<()> {
        let (ra, rb) = (self.core_region(a)?, self.core_region(b)?);
        Ok(self.shared.core.break_region_link(&ra, &rb).await?)
    }

    /// Restores a broken region link.
    pub async fn restore_region_link(&self, a: &Region, b: &Region) -> Result<()> {
        let (ra, rb) = (self.core_region(a)?, self.core_region(b)?);
        Ok(self.shared.core.restore_region_link(&ra, &rb).await?)
    }

    /// Adds `us`, `eu` and `asia`, linked with one-way latencies of 40 ms (us–eu), 95 ms
    /// (us–asia) and 120 ms (eu–asia).
    pub async fn add_default_regions(&self) -> Result<DefaultRegions> {
        let us = self.add_region("us").await?;
        let eu = self.add_region("eu").await?;
        let asia = self.add_region("asia").await?;
        self.link_regions(&us, &eu, RegionLink::good(40)).await?;
        self.link_regions(&us, &asia, RegionLink::good(95)).await?;
        self.link_regions(&eu, &asia, RegionLink::good(120)).await?;
        Ok(DefaultRegions { us, eu, asia })
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn run_directories_are_named_by_utc_time() {
        assert_eq!(super::utc(0), "19700101_000000");
        assert_eq!(super::utc(1_767_225_600), "20260101_000000");
        assert_eq!(super::utc(1_772_323_199), "20260228_235959");
        assert_eq!(super::utc(951_825_600), "20000229_120000");
    }
}
