//! The lab: a set of network namespaces wired into a topology.
//!
//! This is the name-based builder the crate is built on ([`crate::native`]); the API's
//! [`crate::Lab`] translates upstream patchbay 0.7's calls onto it (see the crate docs).
//!
//! Requires root (or `CAP_SYS_ADMIN` + `CAP_NET_ADMIN`), Linux 4.19+ with
//! network namespaces, veth and bridge support.

mod artifacts;
mod capture;
mod clock;
mod cmdlog;
mod compression;
mod device;
mod dns_ops;
mod faults;
mod handle;
mod mobility;
mod nat6_ops;
mod nat_ops;
mod node;
mod opts;
mod presets;
mod prewarm;
mod probe;
mod region;
mod region_routes;
mod router;
mod router_build;
mod shaping;
mod topo;
mod wiring;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

pub use capture::CaptureGuard;
pub use clock::LabClock;
#[cfg(feature = "cli")]
pub(crate) use clock::monotonic_now;
pub use compression::LabEvent;
pub use device::{Device, DeviceBuilder};
pub use faults::{Direction, FaultGuard};
pub use handle::Exchange;
pub use node::{Iface, Node, NodeKind};
pub use opts::{LabOpts, TimeMode};
pub use probe::{NatBehavior, NatFiltering, NatMapping, Reflector};
pub use region::Region;
pub use router::{Router, RouterBuilder};

use crate::addr;
use crate::error::{Error, NetlinkContext, Result};
use crate::sys::cgroup::{LabCgroup, ProcessCgroup};
use crate::sys::netlink;
use crate::sys::netns::Netns;
use crate::sys::sysctl;
use topo::Topology;

/// A network lab. Dropping it ends every worker and every process spawned
/// in it, and its namespaces disappear.
#[derive(Debug)]
pub struct Lab {
    inner: Arc<LabInner>,
}

#[derive(Debug)]
pub(crate) struct LabInner {
    id: String,
    opts: LabOpts,
    root: Netns,
    topo: Mutex<Topology>,
    cgroup: Option<LabCgroup>,
    comp: compression::Compression,
    prewarm: prewarm::Prewarm,
    next_node: AtomicU32,
    next_ifindex: AtomicU32,
    /// Per-lab files (hosts/resolv.conf overlays, translator configs),
    /// created on first use and removed with the lab.
    state_dir: Mutex<Option<std::path::PathBuf>>,
    /// Names and nameservers (see `dns_ops.rs`).
    pub(crate) dns: Mutex<crate::dns::LabDns>,
    regions: Mutex<region_routes::Regions>,
    artifacts: Option<Arc<artifacts::Artifacts>>,
}

static LAB_COUNTER: AtomicU32 = AtomicU32::new(0);

/// Interface index of the exchange bridge in the lab root.
const IX_BRIDGE_INDEX: u32 = 16;
/// First index handed out by [`LabInner::next_ifindex`]. Indexes below 16
/// are left to the kernel: some kernels create fallback tunnel devices
/// (`sit0`, `ip6tnl0`, …) in every new namespace.
const FIRST_VETH_INDEX: u32 = 17;

impl Lab {
    /// Creates a lab with default options.
    pub async fn new() -> Result<Lab> {
        Lab::with_opts(LabOpts::default()).await
    }

    /// Creates a lab: a lab-private root namespace holding the exchange
    /// bridge that top-level routers join.
    pub async fn with_opts(opts: LabOpts) -> Result<Lab> {
        check_privileges()?;
        let seed = match opts.time {
            TimeMode::Virtual { seed } => Some(check_virtual_time(seed)?),
            _ => None,
        };
        let comp = compression::Compression::new(&opts)?;
        let n = LAB_COUNTER.fetch_add(1, Ordering::Relaxed);
        let id = format!(
            "{}-{}-{n}",
            opts.label.as_deref().unwrap_or("lab"),
            std::process::id()
        );
        let cgroup = match ProcessCgroup::acquire() {
            Ok(pc) => Some(pc.new_lab()?),
            Err(crate::sys::cgroup::CgroupError::NoCgroup2) => None,
            // In a user namespace the host's cgroups are not ours: lab
            // processes are then ended by PR_SET_PDEATHSIG alone.
            Err(_) if crate::sys::userns::in_userns() => None,
            Err(e) => return Err(e.into()),
        };
        let artifacts = artifacts::for_lab(&opts, &id, &comp, seed.flatten())?;
        let root = Netns::new(&format!("{id}-root"))?;
        let inner = Arc::new(LabInner {
            id,
            opts,
            prewarm: prewarm::Prewarm::new(prewarm::budget()),
            root: root.clone(),
            topo: Mutex::new(Topology::new()),
            cgroup,
            comp,
            next_node: AtomicU32::new(1),
            next_ifindex: AtomicU32::new(FIRST_VETH_INDEX),
            state_dir: Mutex::new(None),
            dns: Mutex::new(crate::dns::LabDns::default()),
            regions: Mutex::default(),
            artifacts,
        });
        inner.prepare_ns(&root, true, "exchange")?;
        let bridge_mac = addr::mac(0, 0);
        root.run(move || async move {
            netlink::set_up(1, true).await?;
            netlink::create_bridge("ix", IX_BRIDGE_INDEX, bridge_mac).await?;
            netlink::add_addr(IX_BRIDGE_INDEX, addr::IX_ROOT_V4.into(), addr::V4_PREFIX).await?;
            netlink::add_addr(IX_BRIDGE_INDEX, addr::IX_ROOT_V6.into(), addr::V6_PREFIX).await?;
            wiring::sync_carriers(&["ix"]);
            Ok(())
        })
        .await?
        .ctx(|| "creating the lab's exchange bridge".into())?;
        inner.prepare_iface(&root, "ix")?;
        Ok(Lab { inner })
    }

    /// The lab's unique id (`<label>-<pid>-<n>`).
    pub fn id(&self) -> &str {
        &self.inner.id
    }

    /// Starts building a router.
    pub fn add_router(&self, name: &str) -> RouterBuilder {
        RouterBuilder::new(self.inner.clone(), name)
    }

    /// Starts building a device.
    pub fn add_device(&self, name: &str) -> DeviceBuilder {
        DeviceBuilder::new(self.inner.clone(), name)
    }

    /// A node by name.
    pub fn node(&self, name: &str) -> Option<Node> {
        self.inner.topo().node(name).map(Node::from_inner)
    }

    /// A device by name.
    pub fn device(&self, name: &str) -> Option<Device> {
        self.node(name).and_then(Device::from_node)
    }

    /// A router by name.
    pub fn router(&self, name: &str) -> Option<Router> {
        self.node(name).and_then(Router::from_node)
    }

    /// The lab's time scale k (1 = real time, and under virtual time).
    pub fn time_scale(&self) -> crate::compress::TimeScale {
        self.inner.comp.scale()
    }

    /// How time runs in the lab (see [`LabOpts::time_mode`]).
    pub fn time_mode(&self) -> TimeMode {
        self.inner.opts.time
    }

    /// The lab clock: virtual time since the lab started.
    pub fn clock(&self) -> LabClock {
        self.inner.comp.clock()
    }

    /// Every eBPF TCP telemetry event of the lab's namespaces so far, in
    /// order (empty unless telemetry is on; see [`LabOpts::telemetry`]).
    pub fn tcp_events(&self) -> Vec<LabEvent> {
        self.inner.comp.events()
    }

    /// Per timer: default, target, applied value, mechanism and status
    /// (exact, rounded, clamped, unsupported) at this lab's k, and the
    /// largest faithful k on this kernel.
    pub fn compression_report(&self) -> Result<crate::compress::CompressionReport> {
        self.inner.comp.report()
    }

    /// Names of all nodes, sorted.
    pub fn node_names(&self) -> Vec<String> {
        self.inner.topo().names()
    }

    /// The lab's output directory, if it has one ([`LabOpts::outdir`]).
    pub fn outdir(&self) -> Option<std::path::PathBuf> {
        self.inner.artifacts().map(|a| a.dir().to_path_buf())
    }

    /// Marks the run failed: `run.json` says `failed` (with `why`) and the
    /// output directory is kept. A lab dropped while its thread panics (a
    /// failed assertion) is marked failed on its own; call this when a test
    /// fails by returning an error.
    pub fn fail(&self, why: impl Into<String>) {
        if let Some(a) = self.inner.artifacts() {
            a.fail(Some(why.into()));
        }
    }

    /// Appends an event to `events.jsonl` (no-op without an outdir), and
    /// writes a topology change left pending (callers hold no lab lock).
    pub(crate) fn emit(&self, node: Option<&str>, kind: &str, data: serde_json::Value) {
        artifacts::emit(&self.inner, node, kind, data);
        if let Some(a) = self.inner.artifacts() {
            a.flush_topology(&self.inner);
        }
    }

    /// Writes a user mark into `events.jsonl` (kind `mark`), e.g. to label
    /// the phases of a test on the web view's timeline.
    pub fn mark(&self, label: &str, data: serde_json::Value) {
        artifacts::emit(
            &self.inner,
            None,
            "mark",
            serde_json::json!({"label": label, "data": data}),
        );
    }
}

impl LabInner {
    pub(crate) fn id(&self) -> &str {
        &self.id
    }

    pub(crate) fn opts(&self) -> &LabOpts {
        &self.opts
    }

    pub(crate) fn root(&self) -> &Netns {
        &self.root
    }

    pub(crate) fn cgroup(&self) -> Option<&LabCgroup> {
        self.cgroup.as_ref()
    }

    pub(crate) fn topo(&self) -> std::sync::MutexGuard<'_, Topology> {
        self.topo.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A fresh interface index, unique across the lab's namespaces.
    pub(crate) fn next_ifindex(&self) -> u32 {
        self.next_ifindex.fetch_add(1, Ordering::Relaxed)
    }

    pub(crate) fn next_ordinal(&self) -> u32 {
        self.next_node.fetch_add(1, Ordering::Relaxed)
    }

    /// Namespace-wide settings applied before any interface exists, so
    /// every interface inherits them from `default`.
    pub(crate) fn prepare_ns(&self, ns: &Netns, forwarding: bool, node: &str) -> Result<()> {
        let mut s = BTreeMap::new();
        for scope in ["all", "default"] {
            s.insert(format!("net/ipv6/conf/{scope}/accept_dad"), "0".into());
            s.insert(format!("net/ipv6/conf/{scope}/dad_transmits"), "0".into());
            s.insert(format!("net/ipv6/conf/{scope}/accept_ra"), "0".into());
            s.insert(
                format!("net/ipv6/conf/{scope}/router_solicitations"),
                "0".into(),
            );
            s.insert(format!("net/ipv4/conf/{scope}/rp_filter"), "0".into());
            // A link taken down and up again keeps its IPv6 addresses, as its IPv4 ones (a
            // real host would get them back from SLAAC or DHCPv6 at once).
            s.insert(
                format!("net/ipv6/conf/{scope}/keep_addr_on_down"),
                "1".into(),
            );
        }
        if forwarding {
            s.insert("net/ipv4/ip_forward".into(), "1".into());
            s.insert("net/ipv6/conf/all/forwarding".into(), "1".into());
        }
        s.extend(self.comp.netns_sysctls());
        sysctl::write_all(ns, s)?;
        self.comp.register(ns, node)
    }

    /// Per-interface settings (the plan's neighbour timers), for every
    /// interface a lab creates, whenever it is created.
    pub(crate) fn prepare_iface(&self, ns: &Netns, iface: &str) -> Result<()> {
        let s = self.comp.iface_sysctls(iface);
        if !s.is_empty() {
            sysctl::write_all(ns, s)?;
        }
        Ok(())
    }

    /// The run-artifact writer, when the lab has an output directory.
    pub(crate) fn artifacts(&self) -> Option<&Arc<artifacts::Artifacts>> {
        self.artifacts.as_ref()
    }

    pub(crate) fn prewarm(&self) -> &prewarm::Prewarm {
        &self.prewarm
    }

    /// The lab's private directory (`$TMPDIR/patchbay-<lab id>`), created on
    /// first use, removed when the lab is dropped.
    pub(crate) fn state_dir(&self) -> Result<std::path::PathBuf> {
        let mut d = self.state_dir.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(p) = d.as_ref() {
            return Ok(p.clone());
        }
        sweep_stale_state_dirs();
        let p = std::env::temp_dir().join(format!("patchbay-{}", self.id));
        std::fs::create_dir_all(&p).map_err(|source| Error::Io {
            context: format!("creating the lab directory {}", p.display()),
            source,
        })?;
        *d = Some(p.clone());
        Ok(p)
    }

    pub(crate) fn compression(&self) -> &compression::Compression {
        &self.comp
    }

    /// Every namespace of the lab, the root first.
    pub(crate) fn all_netns(&self) -> Vec<Netns> {
        let mut v = vec![self.root.clone()];
        v.extend(self.topo().all_nodes().into_iter().map(|n| n.ns().clone()));
        v
    }
}

impl Drop for LabInner {
    fn drop(&mut self) {
        if let Some(a) = self.artifacts.take() {
            a.finish(self);
        }
        // Kill spawned processes first (grandchildren included), then stop
        // the workers; the namespaces vanish with their last reference.
        let t0 = std::time::Instant::now();
        if let Some(cg) = self.cgroup.take() {
            drop(cg);
        }
        let t1 = t0.elapsed();
        // Every worker is told to stop before any is waited for: they wind
        // down in parallel, and the caller waits for the slowest, not for
        // the sum.
        let all = self.all_netns();
        for ns in all.iter().rev() {
            ns.begin_shutdown();
        }
        let t2 = t0.elapsed();
        for ns in all.iter().rev() {
            ns.join();
        }
        tracing::debug!(
            target: "patchbay::teardown",
            cgroup = ?t1,
            signal = ?(t2 - t1),
            join = ?(t0.elapsed() - t2),
            "lab {} dropped",
            self.id
        );
        if let Some(dir) = self
            .state_dir
            .get_mut()
            .unwrap_or_else(|p| p.into_inner())
            .take()
            && let Err(e) = std::fs::remove_dir_all(&dir)
        {
            tracing::warn!("cannot remove the lab directory {}: {e}", dir.display());
        }
    }
}

/// Removes lab directories (`$TMPDIR/patchbay-<label>-<pid>-<n>`) left by
/// processes that died without dropping their lab (SIGKILL): a dropped lab
/// removes its own.
fn sweep_stale_state_dirs() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix("patchbay-") else {
            continue;
        };
        let mut parts = rest.rsplitn(3, '-');
        let (Some(n), Some(pid), Some(_label)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        let (Ok(_), Ok(pid)) = (n.parse::<u32>(), pid.parse::<u32>()) else {
            continue;
        };
        if std::path::Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        if let Err(err) = std::fs::remove_dir_all(e.path()) {
            tracing::debug!("cannot remove stale lab directory {name}: {err}");
        }
    }
}

/// Checks that this process runs inside patchbay's User-Mode-Linux kernel (`PATCHBAY_VT` is
/// set by its init) booted with `want` when a seed is asked for. Returns the guest's seed.
fn check_virtual_time(want: Option<u64>) -> Result<Option<u64>> {
    if std::env::var_os("PATCHBAY_VT").is_none() {
        return Err(Error::invalid(
            "time_mode",
            crate::InvalidReason::Unsupported,
            "this lab asks for virtual time, but the process is not running inside patchbay's User-Mode-Linux kernel: run it as `patchbay vt -- <command>` (for tests, set CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUNNER=\"patchbay vt --\"; build the kernel once with `cargo xtask build-uml`)",
        ));
    }
    let cmdline = std::fs::read_to_string("/proc/cmdline").map_err(|source| Error::Io {
        context: "reading /proc/cmdline for the guest's seed".into(),
        source,
    })?;
    let have = guest_seed(&cmdline);
    match want {
        Some(w) if have != Some(w) => Err(Error::invalid(
            "seed",
            crate::InvalidReason::Conflict,
            format!(
                "this lab asks for virtual time with seed {w}, but the guest kernel was booted with {}: run it as `patchbay vt --seed {w} -- <command>`, or ask for TimeMode::Virtual {{ seed: None }}",
                have.map_or("no seed".to_string(), |s| format!("seed {s}"))
            ),
        )),
        _ => Ok(have),
    }
}

/// The `patchbay_seed=N` of a kernel command line.
fn guest_seed(cmdline: &str) -> Option<u64> {
    cmdline
        .split_whitespace()
        .find_map(|a| a.strip_prefix("patchbay_seed="))
        .and_then(|n| n.parse().ok())
}

fn check_privileges() -> Result<()> {
    if !nix::unistd::geteuid().is_root() {
        let caps = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let eff = caps
            .lines()
            .find_map(|l| l.strip_prefix("CapEff:"))
            .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
            .unwrap_or(0);
        const CAP_NET_ADMIN: u64 = 1 << 12;
        const CAP_SYS_ADMIN: u64 = 1 << 21;
        if eff & (CAP_NET_ADMIN | CAP_SYS_ADMIN) != (CAP_NET_ADMIN | CAP_SYS_ADMIN) {
            return Err(Error::Privilege(
                "patchbay needs root, or CAP_SYS_ADMIN and CAP_NET_ADMIN, to create network namespaces; run as root (e.g. `sudo -E cargo test`)".into(),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_guest_seed_comes_from_the_kernel_command_line() {
        assert_eq!(guest_seed("mem=1G patchbay_seed=17 time-travel"), Some(17));
        assert_eq!(guest_seed("mem=1G time-travel"), None);
    }
}
