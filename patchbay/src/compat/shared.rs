//! What every compat handle shares: the core lab, upstream's node ids and the per-node
//! settings that upstream's getters report.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use anyhow::{Context, Result, anyhow};

use super::firewall::Firewall;
use super::link::LinkCondition;
use super::nat::NatConfig;
pub(crate) use super::sync::lock;
use crate::{IpSupport, NatV6Mode};

/// Identifies a router or device of a lab ([`super::Device::id`], [`super::Router::id`]).
/// Ids are handed out in creation order, per lab.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(pub u64);

impl std::fmt::Display for NodeId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Whether a node is a router or a device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Router,
    Device,
}

/// Upstream-level settings of a router, as its getters report them.
#[derive(Clone, Debug)]
pub(crate) struct RouterSettings {
    pub nat: Option<NatConfig>,
    pub nat_v6: NatV6Mode,
    pub firewall: Firewall,
    pub ip_support: IpSupport,
    pub mtu: Option<u32>,
    pub region: Option<String>,
    pub ra_enabled: bool,
    pub ra_interval_secs: u64,
    pub ra_lifetime_secs: u64,
    pub downlink: Option<LinkCondition>,
}

/// A device interface's settings that the core does not keep.
#[derive(Clone, Debug, Default)]
pub(crate) struct IfaceSettings {
    pub egress: Option<LinkCondition>,
    pub ingress: Option<LinkCondition>,
    pub dummy: bool,
}

#[derive(Clone, Debug)]
pub(crate) struct Entry {
    /// The upstream name (routers and devices have separate name spaces upstream).
    pub name: String,
    /// The core's node name: `name`, or `name-router` / `name-device` when a node of the
    /// other kind already has `name` (the core's names are lab-wide).
    pub core: String,
    pub kind: Kind,
    pub router: Option<RouterSettings>,
    pub ifaces: BTreeMap<String, IfaceSettings>,
    pub mtu: Option<u32>,
}

/// The lab behind every compat handle. [`super::Lab`] holds it strongly; handles hold it
/// weakly, so that dropping the last `Lab` tears the lab down even while tasks on its
/// workers still hold handles (as upstream's `Lab` drop does).
pub(crate) struct Shared {
    pub core: crate::native::Lab,
    pub run_dir: Option<PathBuf>,
    pub label: Option<String>,
    pub dns: Mutex<Option<super::dns::DnsServer>>,
    nodes: Mutex<BTreeMap<NodeId, Entry>>,
    next_id: AtomicU64,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lab")
            .field("id", &self.core.id())
            .field("label", &self.label)
            .finish_non_exhaustive()
    }
}

impl Shared {
    pub fn new(
        core: crate::native::Lab,
        run_dir: Option<PathBuf>,
        label: Option<String>,
    ) -> Shared {
        Shared {
            core,
            run_dir,
            label,
            dns: Mutex::new(None),
            nodes: Mutex::new(BTreeMap::new()),
            next_id: AtomicU64::new(0),
        }
    }

    /// Registers a node built by the core and returns its id.
    pub fn register(&self, entry: Entry) -> NodeId {
        let id = NodeId(self.next_id.fetch_add(1, Ordering::Relaxed));
        lock(&self.nodes).insert(id, entry);
        id
    }

    pub fn entry(&self, id: NodeId) -> Option<Entry> {
        lock(&self.nodes).get(&id).cloned()
    }

    /// Changes a node's settings in place; `None` if the node is gone.
    pub fn update<R>(&self, id: NodeId, f: impl FnOnce(&mut Entry) -> R) -> Option<R> {
        lock(&self.nodes).get_mut(&id).map(f)
    }

    pub fn remove(&self, id: NodeId) -> Option<Entry> {
        lock(&self.nodes).remove(&id)
    }

    pub fn id_by_name(&self, name: &str, kind: Kind) -> Option<NodeId> {
        lock(&self.nodes)
            .iter()
            .find(|(_, e)| e.name == name && e.kind == kind)
            .map(|(id, _)| *id)
    }

    pub fn ids(&self, kind: Kind) -> Vec<NodeId> {
        lock(&self.nodes)
            .iter()
            .filter(|(_, e)| e.kind == kind)
            .map(|(id, _)| *id)
            .collect()
    }

    /// A free core name for a node called `name` upstream.
    pub fn core_name(&self, name: &str, kind: Kind) -> String {
        let taken = |n: &str| {
            self.core.node(n).is_some() || lock(&self.nodes).values().any(|e| e.core == n)
        };
        if !taken(name) {
            return name.to_string();
        }
        let suffix = match kind {
            Kind::Router => "router",
            Kind::Device => "device",
        };
        let mut c = format!("{name}-{suffix}");
        let mut i = 2;
        while taken(&c) {
            c = format!("{name}-{suffix}{i}");
            i += 1;
        }
        c
    }

    /// The core name of a router, for the core's name-based calls; an error names the id.
    pub fn router_core(&self, id: NodeId) -> Result<String> {
        match self.entry(id) {
            Some(e) if e.kind == Kind::Router => Ok(e.core),
            Some(e) => Err(anyhow!(
                "node {id} is the device {:?}, not a router: pass a router's id (router.id())",
                e.name
            )),
            None => Err(anyhow!("no router with id {id} in this lab (removed?)")),
        }
    }

    /// The path of a node's file in the run directory (upstream's `{kind}.{name}.{suffix}`).
    pub fn node_file(&self, kind: &str, name: &str, suffix: &str) -> Option<PathBuf> {
        let suffix = suffix.trim_start_matches('.');
        let name = sanitize(name);
        self.run_dir
            .as_ref()
            .map(|d| d.join(format!("{kind}.{name}.{suffix}")))
    }
}

/// A name made safe for a file name: anything but letters, digits, `-`, `_` and `.` becomes
/// `_`.
pub(crate) fn sanitize(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// A weak reference to the lab, upgraded with an error that says what happened.
#[derive(Clone, Debug)]
pub(crate) struct LabRef(pub Weak<Shared>);

impl LabRef {
    pub fn get(&self) -> Result<Arc<Shared>> {
        self.0
            .upgrade()
            .context("the lab was dropped: keep the Lab alive while its handles are in use")
    }
}
