//! Running code in a namespace, the way upstream's `Device`, `Router` and `Ix` do, written
//! once: each handle delegates here.
//!
//! - `spawn`: a `tokio` task on the namespace's worker runtime (a current-thread runtime on
//!   the worker thread, inside the namespace), returned as a `tokio::task::JoinHandle`. The
//!   future must be `Send`, as upstream's.
//! - `run_sync`: a closure on the worker, waited for.
//! - `spawn_thread`: a new OS thread inside the namespace (and the worker's mount namespace).
//! - `spawn_command(_sync)`: the core's process spawning: the lab's cgroup, the node's
//!   `/etc/hosts` and `/etc/resolv.conf`, killed with the lab.
//! - `spawn_reflector`: the core's UDP reflector, replying `OBSERVED ip:port`.

use std::future::Future;
use std::net::SocketAddr;

use anyhow::Result;

use crate::sys::netns::Netns;

/// Aborts a reflector when dropped (from `spawn_reflector`).
#[derive(Debug)]
pub struct ReflectorGuard(#[allow(dead_code, reason = "held for its drop")] crate::Reflector);

/// Where code runs: a node or the exchange.
#[derive(Clone, Debug)]
pub(crate) enum Runner {
    Node(crate::Node),
    Exchange(crate::Exchange),
}

impl Runner {
    fn netns(&self) -> &Netns {
        match self {
            Runner::Node(n) => n.netns(),
            Runner::Exchange(x) => x.netns(),
        }
    }

    /// Spawns `f(handle)` as a tokio task on the worker's runtime.
    pub fn spawn<H, F, Fut, T>(&self, handle: H, f: F) -> Result<tokio::task::JoinHandle<T>>
    where
        F: FnOnce(H) -> Fut + Send + 'static,
        Fut: Future<Output = T> + Send + 'static,
        T: Send + 'static,
    {
        Ok(self.netns().runtime().spawn(f(handle)))
    }

    /// Runs `f` on the worker and returns its result.
    pub fn run_sync<F, R>(&self, f: F) -> Result<R>
    where
        F: FnOnce() -> Result<R> + Send + 'static,
        R: Send + 'static,
    {
        self.netns().run_sync(f)?
    }

    /// Runs `f` on a new thread inside the namespace.
    pub fn spawn_thread<F, R>(&self, f: F) -> Result<std::thread::JoinHandle<Result<R>>>
    where
        F: FnOnce() -> Result<R> + Send + 'static,
        R: Send + 'static,
    {
        let task = self.netns().spawn_thread(f)?;
        Ok(std::thread::Builder::new()
            .name("pb-compat-join".into())
            .spawn(move || task.join()?)?)
    }

    pub fn spawn_command(&self, cmd: tokio::process::Command) -> Result<tokio::process::Child> {
        Ok(match self {
            Runner::Node(n) => n.spawn_command(cmd)?,
            Runner::Exchange(x) => x.spawn_command(cmd)?,
        })
    }

    pub fn spawn_command_sync(&self, cmd: std::process::Command) -> Result<std::process::Child> {
        Ok(match self {
            Runner::Node(n) => n.spawn_command_sync(cmd)?,
            Runner::Exchange(x) => x.spawn_command_sync(cmd)?,
        })
    }

    pub async fn spawn_reflector(&self, bind: SocketAddr) -> Result<ReflectorGuard> {
        let r = match self {
            Runner::Node(n) => n.spawn_reflector(bind).await?,
            Runner::Exchange(x) => x.spawn_reflector(bind).await?,
        };
        Ok(ReflectorGuard(r))
    }
}

/// Generates upstream's run-code methods (all but `spawn`, whose signature differs on `Ix`)
/// on a handle type with a `runner()`, so Device, Router and Ix carry them without copies.
macro_rules! run_methods {
    () => {
        /// Runs a short closure on this namespace's worker and waits for it. Not for I/O
        /// that blocks: use [`Self::spawn`] or [`Self::spawn_thread`].
        pub fn run_sync<F, R>(&self, f: F) -> anyhow::Result<R>
        where
            F: FnOnce() -> anyhow::Result<R> + Send + 'static,
            R: Send + 'static,
        {
            self.runner()?.run_sync(f)
        }

        /// Runs blocking code on a new OS thread inside this namespace.
        pub fn spawn_thread<F, R>(
            &self,
            f: F,
        ) -> anyhow::Result<std::thread::JoinHandle<anyhow::Result<R>>>
        where
            F: FnOnce() -> anyhow::Result<R> + Send + 'static,
            R: Send + 'static,
        {
            self.runner()?.spawn_thread(f)
        }

        /// Spawns a process inside this namespace (in the lab's cgroup: it dies with the lab).
        pub fn spawn_command(
            &self,
            cmd: tokio::process::Command,
        ) -> anyhow::Result<tokio::process::Child> {
            self.runner()?.spawn_command(cmd)
        }

        /// The blocking twin of [`Self::spawn_command`].
        pub fn spawn_command_sync(
            &self,
            cmd: std::process::Command,
        ) -> anyhow::Result<std::process::Child> {
            self.runner()?.spawn_command_sync(cmd)
        }

        /// Starts a UDP reflector on `bind` that answers every datagram with
        /// `OBSERVED <ip:port>` (the source it saw). Stops when the guard is dropped.
        pub async fn spawn_reflector(
            &self,
            bind: std::net::SocketAddr,
        ) -> anyhow::Result<super::runner::ReflectorGuard> {
            self.runner()?.spawn_reflector(bind).await
        }
    };
}

pub(crate) use run_methods;
