//! Handles for running code in a lab: blocking threads inside a node's
//! namespace, and the exchange (the lab's root namespace, where top-level
//! routers meet).
//!
//! Tasks from `spawn` are [`crate::Task`]s: awaiting one gives the task's
//! output, [`crate::Task::abort`] cancels it, and
//! [`crate::Task::abort_on_drop`] ties the task's life to its handle.

use std::future::Future;
use std::net::{Ipv4Addr, Ipv6Addr};

use crate::addr;
use crate::error::{Error, Result};
use crate::sys::netns::Netns;
use crate::task::{Task, ThreadTask};

use super::Lab;
use super::node::Node;

impl Node {
    /// Runs blocking code on a new OS thread inside the node's namespace
    /// (sockets it opens belong to the node), without stalling the node's
    /// async worker. Await the handle, or [`ThreadTask::join`] it from
    /// blocking code. Needs `CAP_SYS_ADMIN` over the lab's namespaces
    /// (root, or the owner of the lab's user namespace).
    pub fn spawn_thread<F, T>(&self, f: F) -> Result<ThreadTask<T>>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        Ok(self.netns().spawn_thread(f)?.into())
    }
}

/// The exchange: the lab's root namespace, holding the bridge that every
/// top-level router's uplink joins. Code run here is "on the internet
/// backbone": it reaches every router's public address. From
/// [`Lab::exchange`]; cheap to clone.
#[derive(Debug, Clone)]
pub struct Exchange {
    ns: Netns,
    lab_id: String,
    /// The lab cgroup's `cgroup.procs`, which processes spawned here join.
    cgroup_procs: Option<std::ffi::CString>,
}

impl Exchange {
    pub(crate) fn netns(&self) -> &Netns {
        &self.ns
    }

    /// The exchange's IPv4 address on its bridge (the top-level routers'
    /// gateway).
    pub fn ip(&self) -> Ipv4Addr {
        addr::IX_ROOT_V4
    }

    /// The exchange's IPv6 address on its bridge.
    pub fn ip6(&self) -> Ipv6Addr {
        addr::IX_ROOT_V6
    }

    /// Runs an async closure on the exchange's worker (a current-thread
    /// tokio runtime in the root namespace); see [`crate::Node::spawn`].
    pub fn spawn<F, Fut, T>(&self, f: F) -> Result<Task<T>>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = T> + 'static,
        T: Send + 'static,
    {
        Ok(self.ns.spawn(f)?.into())
    }

    /// Runs `f` on the exchange's worker and waits for its result.
    pub fn run_sync<F, T>(&self, f: F) -> Result<T>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        Ok(self.ns.run_sync(f)?)
    }

    /// Runs blocking code on a new thread in the root namespace.
    pub fn spawn_thread<F, T>(&self, f: F) -> Result<ThreadTask<T>>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        Ok(self.ns.spawn_thread(f)?.into())
    }

    fn prepare(&self, cmd: &mut std::process::Command) {
        cmd.env("PATCHBAY_LAB", &self.lab_id);
        cmd.env("PATCHBAY_NODE", "exchange");
        let setup = crate::sys::spawn::ChildSetup {
            cgroup_procs: self.cgroup_procs.clone(),
            names: None,
        };
        crate::sys::spawn::prepare(cmd, setup);
    }

    /// Spawns a process in the exchange (the lab's root namespace: a host "on the
    /// backbone"), in the lab's cgroup; it is killed when the lab is dropped or this process
    /// dies. Its environment gets `PATCHBAY_LAB` and `PATCHBAY_NODE=exchange`.
    pub fn spawn_command(&self, mut cmd: tokio::process::Command) -> Result<tokio::process::Child> {
        self.prepare(cmd.as_std_mut());
        let program = cmd.as_std().get_program().to_string_lossy().into_owned();
        self.ns
            .run_sync(move || cmd.spawn())?
            .map_err(|source| Error::Spawn {
                program,
                node: "exchange".into(),
                source,
            })
    }

    /// The blocking twin of [`Exchange::spawn_command`].
    pub fn spawn_command_sync(
        &self,
        mut cmd: std::process::Command,
    ) -> Result<std::process::Child> {
        self.prepare(&mut cmd);
        let program = cmd.get_program().to_string_lossy().into_owned();
        self.ns
            .run_sync(move || cmd.spawn())?
            .map_err(|source| Error::Spawn {
                program,
                node: "exchange".into(),
                source,
            })
    }

    /// Starts a UDP reflector bound to `bind` in the exchange; see
    /// [`crate::Node::spawn_reflector`].
    pub async fn spawn_reflector(&self, bind: std::net::SocketAddr) -> Result<super::Reflector> {
        super::probe::reflector_on(&self.ns, "exchange", bind).await
    }
}

impl Lab {
    /// A handle on the exchange (the lab's root namespace).
    pub fn exchange(&self) -> Exchange {
        Exchange {
            ns: self.inner.root().clone(),
            lab_id: self.inner.id().to_string(),
            cgroup_procs: self.inner.cgroup().and_then(|c| {
                use std::os::unix::ffi::OsStrExt;
                std::ffi::CString::new(c.procs_file().as_os_str().as_bytes()).ok()
            }),
        }
    }
}
