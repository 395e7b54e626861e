//! Upstream's `Ix`: the lab's root namespace, holding the exchange bridge.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use anyhow::Result;

use super::runner::{Runner, run_methods};
use super::shared::{LabRef, Shared};

/// The exchange (the lab's root namespace, where top-level routers meet). Cheap to clone.
#[derive(Clone, Debug)]
pub struct Ix {
    lab: LabRef,
    ex: crate::Exchange,
}

impl Ix {
    pub(crate) fn new(shared: &Arc<Shared>) -> Ix {
        Ix {
            lab: LabRef(Arc::downgrade(shared)),
            ex: shared.core.exchange(),
        }
    }

    fn runner(&self) -> Result<Runner> {
        self.lab.get()?;
        Ok(Runner::Exchange(self.ex.clone()))
    }

    run_methods!();

    /// Spawns an async task in the exchange; the closure gets a clone of this handle.
    pub fn spawn<F, Fut, T>(&self, f: F) -> tokio::task::JoinHandle<T>
    where
        F: FnOnce(Ix) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = T> + Send + 'static,
        T: Send + 'static,
    {
        self.ex.netns().runtime().spawn(f(self.clone()))
    }

    /// The namespace's name.
    pub fn ns(&self) -> String {
        "exchange".into()
    }

    /// The exchange's IPv4 address (the top-level routers' gateway).
    pub fn gw(&self) -> Ipv4Addr {
        self.ex.ip()
    }

    /// The exchange's IPv6 address.
    pub fn gw_v6(&self) -> Ipv6Addr {
        self.ex.ip6()
    }
}
