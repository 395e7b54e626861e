//! What routers and devices share: a namespace worker, interfaces, and ways
//! to run code and processes inside.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::future::Future;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::os::unix::ffi::OsStrExt;
use std::sync::{Arc, Mutex, Weak};

use crate::error::{Error, NetlinkContext, Result};
use crate::sys::netlink;
use crate::sys::netns::Netns;
use crate::task::Task;

use super::LabInner;
use super::capture::CaptureGuard;

/// Whether a node is a router or a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum NodeKind {
    /// Forwards between its LAN and its uplink.
    Router,
    /// An end host.
    Device,
}

/// An interface of a node, as configured by the lab.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Iface {
    /// Interface name inside the node.
    pub name: String,
    /// Interface index inside the node's namespace.
    pub index: u32,
    /// MAC address.
    pub mac: [u8; 6],
    /// IPv4 address.
    pub ip: Option<Ipv4Addr>,
    /// IPv6 address.
    pub ip6: Option<Ipv6Addr>,
    /// Prefix length of `ip`.
    pub prefix: u8,
    /// The router (or `"exchange"`) at the other end; empty for a dummy interface
    /// ([`crate::native::DeviceBuilder::dummy`]).
    pub peer: String,
}

#[derive(Debug)]
pub(crate) struct NodeInner {
    pub name: String,
    pub kind: NodeKind,
    pub ordinal: u32,
    ns: Netns,
    pub lab: Weak<LabInner>,
    lab_id: String,
    pub ifaces: Mutex<BTreeMap<String, Iface>>,
    /// The interface whose address `ip()` returns.
    pub primary: Mutex<Option<String>>,
    cgroup_procs: Option<CString>,
    /// Whether the worker's `/etc/hosts` and `/etc/resolv.conf` are the node's files yet.
    names_bound: std::sync::atomic::AtomicBool,
}

impl NodeInner {
    pub fn new(lab: &Arc<LabInner>, name: &str, kind: NodeKind, ns: Netns) -> Self {
        NodeInner {
            name: name.to_string(),
            kind,
            ordinal: lab.next_ordinal(),
            ns,
            lab: Arc::downgrade(lab),
            lab_id: lab.id().to_string(),
            ifaces: Mutex::new(BTreeMap::new()),
            primary: Mutex::new(None),
            cgroup_procs: lab
                .cgroup()
                .and_then(|c| CString::new(c.procs_file().as_os_str().as_bytes()).ok()),
            names_bound: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Binds the node's name files into its worker's mount namespace, once (see
    /// `sys::mountns`): from then on in-process resolvers on the node read them.
    pub fn bind_names(&self, hosts: std::path::PathBuf, resolv: std::path::PathBuf) -> Result<()> {
        use std::sync::atomic::Ordering;
        if self.names_bound.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        self.ns.bind_names(hosts, resolv).map_err(|e| {
            self.names_bound.store(false, Ordering::Release);
            e.into()
        })
    }

    pub fn ns(&self) -> &Netns {
        &self.ns
    }

    pub fn add_iface(&self, iface: Iface) {
        let mut primary = self.primary.lock().unwrap_or_else(|p| p.into_inner());
        if primary.is_none() {
            *primary = Some(iface.name.clone());
        }
        self.ifaces
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(iface.name.clone(), iface);
    }
}

/// A router or device of a lab: the part of [`crate::native::Router`] and
/// [`crate::native::Device`] that is the same for both. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Node {
    pub(crate) inner: Arc<NodeInner>,
}

impl Node {
    pub(crate) fn from_inner(inner: Arc<NodeInner>) -> Self {
        Node { inner }
    }

    /// The node's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// Router or device.
    pub fn kind(&self) -> NodeKind {
        self.inner.kind
    }

    /// The node's namespace worker.
    pub(crate) fn netns(&self) -> &Netns {
        self.inner.ns()
    }

    /// The primary interface's IPv4 address (for a router: its uplink).
    pub fn ip(&self) -> Option<Ipv4Addr> {
        self.primary_iface().and_then(|i| i.ip)
    }

    /// The primary interface's IPv6 address.
    pub fn ip6(&self) -> Option<Ipv6Addr> {
        self.primary_iface().and_then(|i| i.ip6)
    }

    /// The name of the primary interface (the default route's).
    pub(crate) fn primary_name(&self) -> Option<String> {
        self.inner
            .primary
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn primary_iface(&self) -> Option<Iface> {
        let p = self
            .inner
            .primary
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()?;
        self.iface(&p)
    }

    /// An interface by name.
    pub fn iface(&self, name: &str) -> Option<Iface> {
        self.inner
            .ifaces
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .cloned()
    }

    /// All interfaces, by name.
    pub fn ifaces(&self) -> Vec<Iface> {
        self.inner
            .ifaces
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// Runs `f` on the node's worker thread inside its namespace and waits
    /// for the result. Sockets created in `f` belong to the node.
    pub fn run_sync<F, T>(&self, f: F) -> Result<T>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        Ok(self.inner.ns().run_sync(f)?)
    }

    pub(crate) fn spawn_with<H, F, Fut, T>(&self, handle: H, f: F) -> Result<Task<T>>
    where
        H: Send + 'static,
        F: FnOnce(H) -> Fut + Send + 'static,
        Fut: Future<Output = T> + 'static,
        T: Send + 'static,
    {
        Ok(self.inner.ns().spawn(move || f(handle))?.into())
    }

    /// Runs an async closure on the node's runtime (a current-thread tokio
    /// runtime inside the namespace); the future need not be `Send`.
    pub fn spawn<F, Fut, T>(&self, f: F) -> Result<Task<T>>
    where
        F: FnOnce(Node) -> Fut + Send + 'static,
        Fut: Future<Output = T> + 'static,
        T: Send + 'static,
    {
        self.spawn_with(self.clone(), f)
    }

    /// The environment every command spawned in this node gets.
    pub fn env(&self) -> BTreeMap<String, String> {
        let mut env = BTreeMap::new();
        env.insert("PATCHBAY_LAB".into(), self.inner.lab_id.clone());
        env.insert("PATCHBAY_NODE".into(), self.inner.name.clone());
        if let Some(lab) = self.inner.lab.upgrade() {
            let c = lab.compression();
            env.insert("PATCHBAY_TIME_SCALE".into(), c.scale().to_string());
            env.insert(
                "PATCHBAY_CLOCK_START_NS".into(),
                c.start_mono().as_nanos().to_string(),
            );
        }
        if let Some(ip) = self.ip() {
            env.insert("PATCHBAY_IP".into(), ip.to_string());
        }
        if let Some(ip6) = self.ip6() {
            env.insert("PATCHBAY_IP6".into(), ip6.to_string());
        }
        env
    }

    fn prepare_std(&self, cmd: &mut std::process::Command) -> Result<()> {
        cmd.envs(self.env());
        let setup = crate::sys::spawn::ChildSetup {
            cgroup_procs: self.inner.cgroup_procs.clone(),
            names: self.name_overlay()?,
        };
        crate::sys::spawn::prepare(cmd, setup);
        Ok(())
    }

    /// Spawns a process inside the node's namespace (and the lab's cgroup),
    /// with the lab's environment (`PATCHBAY_LAB`, `PATCHBAY_NODE`,
    /// `PATCHBAY_IP`, `PATCHBAY_TIME_SCALE`). It is killed when the lab is
    /// dropped or this process dies.
    pub fn spawn_command(&self, mut cmd: tokio::process::Command) -> Result<tokio::process::Child> {
        self.prepare_std(cmd.as_std_mut())?;
        let program = cmd.as_std().get_program().to_string_lossy().into_owned();
        let node = self.inner.name.clone();
        let log = self.cmd_log(cmd.as_std_mut());
        self.inner
            .ns()
            .run_sync(move || {
                let mut child = cmd.spawn()?;
                if let Some((l, w)) = &log {
                    super::cmdlog::attach_tokio(&mut child, l, *w);
                }
                Ok(child)
            })?
            .map_err(|source| Error::Spawn {
                program,
                node,
                source,
            })
    }

    /// The blocking twin of [`Node::spawn_command`].
    pub fn spawn_command_sync(
        &self,
        mut cmd: std::process::Command,
    ) -> Result<std::process::Child> {
        self.prepare_std(&mut cmd)?;
        let program = cmd.get_program().to_string_lossy().into_owned();
        let node = self.inner.name.clone();
        let log = self.cmd_log(&mut cmd);
        self.inner
            .ns()
            .run_sync(move || {
                let mut child = cmd.spawn()?;
                if let Some((l, w)) = &log {
                    super::cmdlog::attach_std(&mut child, l, *w);
                }
                Ok(child)
            })?
            .map_err(|source| Error::Spawn {
                program,
                node,
                source,
            })
    }

    /// The node's lab, or an error if it was dropped.
    pub(crate) fn lab(&self) -> Result<std::sync::Arc<super::LabInner>> {
        self.inner.lab.upgrade().ok_or_else(|| {
            Error::invalid_node(
                self.name(),
                "lab",
                crate::InvalidReason::Gone,
                format!("the lab of node {} was dropped", self.name()),
            )
        })
    }

    /// Starts a pcapng capture of `iface` (every frame it sends and
    /// receives) into `<outdir>/pcap/<node>-<iface>.pcapng`. Needs an output
    /// directory ([`crate::LabOpts::outdir`]) and `CAP_NET_RAW`
    /// (`CONFIG_PACKET`). The lab keeps the capture running until the
    /// returned guard is dropped or stopped, or the lab ends.
    pub async fn capture(&self, iface: &str) -> Result<CaptureGuard> {
        let lab = self.lab()?;
        let i = self.iface(iface).ok_or_else(|| {
            Error::invalid_node(
                self.name(),
                "iface",
                crate::InvalidReason::Unknown,
                format!(
                    "cannot capture {}.{iface}: node {} has no interface {iface:?} (it has {:?})",
                    self.name(),
                    self.name(),
                    self.ifaces()
                        .iter()
                        .map(|i| i.name.clone())
                        .collect::<Vec<_>>()
                ),
            )
        })?;
        super::capture::start(&lab, self.name(), self.netns(), iface, i.index)
    }

    /// Like [`Node::capture`], but the lab owns the capture: it runs until
    /// the lab ends (used by `[lab] capture` in lab files).
    pub async fn capture_until_end(&self, iface: &str) -> Result<()> {
        let g = self.capture(iface).await?;
        let lab = self.lab()?;
        super::capture::keep_until_end(&lab, g);
        Ok(())
    }

    /// The command's log relay, when the lab writes artifacts (see `cmdlog.rs`).
    fn cmd_log(
        &self,
        cmd: &mut std::process::Command,
    ) -> Option<(
        super::cmdlog::CmdLog,
        (super::cmdlog::Want, super::cmdlog::Want),
    )> {
        let lab = self.inner.lab.upgrade()?;
        super::cmdlog::start(&lab, self.name(), cmd)
    }

    /// Records a firewall change (event and topology.json).
    pub(crate) fn firewall_changed(&self, fw: &crate::native::Firewall) {
        let v = serde_json::to_value(fw).unwrap_or_default();
        if let Some(lab) = self.inner.lab.upgrade()
            && let Some(a) = lab.artifacts()
        {
            a.set_firewall(self.name(), v.clone());
        }
        self.record("firewall.changed", v, true);
    }

    /// Records an event about this node (no-op without an outdir); with
    /// `topology`, rewrites topology.json too.
    pub(crate) fn record(&self, kind: &str, data: serde_json::Value, topology: bool) {
        if let Some(lab) = self.inner.lab.upgrade() {
            super::artifacts::emit(&lab, Some(self.name()), kind, data);
            if topology && let Some(a) = lab.artifacts() {
                a.snapshot(&lab, self.name());
                a.topology_changed(&lab);
            }
        }
    }

    /// Writes a sysctl inside the node's namespace (key relative to
    /// `/proc/sys`, e.g. `net/ipv4/tcp_keepalive_probes`). Timer values
    /// written this way are taken as they are, not scaled by the lab's k.
    pub fn set_sysctl(&self, key: &str, value: &str) -> Result<()> {
        Ok(crate::sys::sysctl::write(self.netns(), key, value)?)
    }

    /// Reads a sysctl inside the node's namespace.
    pub fn sysctl(&self, key: &str) -> Result<String> {
        Ok(crate::sys::sysctl::read(self.netns(), key)?)
    }

    /// Sets an interface administratively down (`ip link set IFACE down`).
    pub async fn link_down(&self, iface: &str) -> Result<()> {
        self.set_link(iface, false).await
    }

    pub(super) async fn set_link(&self, iface: &str, up: bool) -> Result<()> {
        let index = self
            .iface(iface)
            .ok_or_else(|| {
                Error::invalid_node(
                    self.name(),
                    "iface",
                    crate::InvalidReason::Unknown,
                    format!("node {} has no interface {iface:?}", self.name()),
                )
            })?
            .index;
        let what = format!(
            "setting {iface} of {} {}",
            self.name(),
            if up { "up" } else { "down" }
        );
        self.inner
            .ns()
            .run(move || netlink::set_up(index, up))
            .await?
            .ctx(|| what)?;
        let kind = if up { "link.up" } else { "link.down" };
        self.record(kind, serde_json::json!({"iface": iface}), false);
        Ok(())
    }
}
