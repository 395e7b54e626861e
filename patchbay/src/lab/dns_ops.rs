//! Names in a lab: hosts entries, nameservers (rendered by [`crate::dns`]
//! into per-node files), the mount overlay that shows them to spawned
//! processes, and the in-lab DNS server.

use std::ffi::CString;
use std::net::IpAddr;
use std::os::unix::ffi::OsStrExt;

use crate::dns::{self, DnsServer, DnsZone};
use crate::error::{Error, Result};
use crate::sys::spawn::NameOverlay;

use super::node::Node;
use super::{Lab, LabInner};

impl Lab {
    /// Adds a hosts entry `ip name`, visible in `/etc/hosts` of every
    /// process spawned in any node of the lab (also ones already running:
    /// the file is rewritten in place).
    pub fn dns_entry(&self, name: &str, ip: IpAddr) -> Result<()> {
        let n = dns::normalize_name(name)?;
        self.inner.dns().entries.entry(n).or_default().insert(ip);
        self.inner.rewrite_name_files()
    }

    /// The first address of `name` among the lab's hosts entries (in
    /// memory: for code running in-process, which does not see the
    /// overlay).
    pub fn resolve(&self, name: &str) -> Option<IpAddr> {
        self.inner.dns().resolve(name)
    }

    /// Sets the nameserver of every node (`/etc/resolv.conf` of spawned
    /// processes), unless a node has its own.
    pub fn set_nameserver(&self, server: IpAddr) -> Result<()> {
        self.set_nameservers(&[server])
    }

    /// Sets several nameservers (glibc uses at most three, in order).
    pub fn set_nameservers(&self, servers: &[IpAddr]) -> Result<()> {
        self.inner.dns().nameservers = servers.to_vec();
        self.inner.rewrite_name_files()
    }
}

impl LabInner {
    pub(crate) fn dns(&self) -> std::sync::MutexGuard<'_, dns::LabDns> {
        self.dns.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn name_files(&self, node: &str) -> Result<(std::path::PathBuf, std::path::PathBuf)> {
        let dir = self.state_dir()?;
        Ok((
            dir.join(format!("{node}.hosts")),
            dir.join(format!("{node}.resolv.conf")),
        ))
    }

    /// (Re)writes the hosts and resolv.conf files of `node`, in place.
    fn write_name_files(&self, node: &str) -> Result<(std::path::PathBuf, std::path::PathBuf)> {
        let (hosts, resolv) = self.name_files(node)?;
        let (h, r) = {
            let d = self.dns();
            (d.render_hosts(node), d.render_resolv(node))
        };
        for (path, text) in [(&hosts, h), (&resolv, r)] {
            // Truncate and write (no rename): bind mounts keep the inode.
            std::fs::write(path, text).map_err(|source| Error::Io {
                context: format!("writing {}", path.display()),
                source,
            })?;
        }
        Ok((hosts, resolv))
    }

    /// Rewrites every node's name files (after a change of names or nameservers) and binds
    /// them into the workers that do not have them yet.
    pub(crate) fn rewrite_name_files(&self) -> Result<()> {
        let nodes: Vec<_> = self.topo().nodes.values().cloned().collect();
        for n in nodes {
            let (hosts, resolv) = self.write_name_files(&n.name)?;
            n.bind_names(hosts, resolv)?;
        }
        Ok(())
    }

    /// For a node just added: its name files and their binds, if the lab has names yet.
    pub(crate) fn names_for_new_node(&self, node: &super::node::NodeInner) -> Result<()> {
        if !self.dns().configured() {
            return Ok(());
        }
        let (hosts, resolv) = self.write_name_files(&node.name)?;
        node.bind_names(hosts, resolv)
    }
}

impl Node {
    /// The overlay for processes spawned in this node, if the lab has any
    /// names or nameservers.
    pub(crate) fn name_overlay(&self) -> Result<Option<NameOverlay>> {
        let Some(lab) = self.inner.lab.upgrade() else {
            return Ok(None);
        };
        if !lab.dns().configured() {
            return Ok(None);
        }
        let (hosts, resolv) = lab.write_name_files(self.name())?;
        let c = |p: &std::path::Path| {
            CString::new(p.as_os_str().as_bytes()).map_err(|_| {
                Error::invalid(
                    "outdir",
                    crate::InvalidReason::OutOfRange,
                    format!("the lab directory path {} holds a NUL byte", p.display()),
                )
            })
        };
        Ok(Some(NameOverlay {
            hosts: c(&hosts)?,
            resolv: c(&resolv)?,
        }))
    }

    /// Adds a hosts entry that only this node sees (`/etc/hosts` of its processes and of
    /// in-process resolvers on its worker), next to the lab's ([`crate::native::Lab::dns_entry`]).
    pub fn dns_entry(&self, name: &str, ip: IpAddr) -> Result<()> {
        let n = dns::normalize_name(name)?;
        let lab = self.lab_inner()?;
        lab.dns()
            .node_entries
            .entry(self.name().to_string())
            .or_default()
            .entry(n)
            .or_default()
            .insert(ip);
        lab.rewrite_name_files()
    }

    /// Sets this node's nameserver (`/etc/resolv.conf` of processes
    /// spawned in it), overriding the lab's.
    pub fn set_nameserver(&self, server: IpAddr) -> Result<()> {
        self.set_nameservers(&[server])
    }

    /// Sets several nameservers for this node (glibc uses at most three).
    pub fn set_nameservers(&self, servers: &[IpAddr]) -> Result<()> {
        let lab = self.lab_inner()?;
        lab.dns()
            .node_nameservers
            .insert(self.name().to_string(), servers.to_vec());
        lab.rewrite_name_files()
    }

    /// Starts an in-lab DNS server on this node, answering `zone` on UDP
    /// and TCP port 53 of all its addresses. Runs until
    /// [`DnsServer::stop`] or until the lab is dropped.
    pub async fn serve_dns(&self, zone: DnsZone) -> Result<DnsServer> {
        let mut addrs: Vec<IpAddr> = vec![];
        for i in self.ifaces() {
            addrs.extend(i.ip.map(IpAddr::V4));
        }
        for i in self.ifaces() {
            addrs.extend(i.ip6.map(IpAddr::V6));
        }
        serve_on(self.netns(), self.name(), addrs, zone).await
    }

    fn lab_inner(&self) -> Result<std::sync::Arc<LabInner>> {
        self.inner.lab.upgrade().ok_or_else(|| {
            Error::invalid_node(
                self.name(),
                "lab",
                crate::InvalidReason::Gone,
                format!("node {} outlived its lab", self.name()),
            )
        })
    }
}

/// Starts a DNS server for `zone` on the worker of `ns` (named `name`, answering at `addrs`).
async fn serve_on(
    ns: &crate::sys::netns::Netns,
    name: &str,
    addrs: Vec<IpAddr>,
    zone: DnsZone,
) -> Result<DnsServer> {
    let node = name.to_string();
    let what = format!("starting the DNS server on {node}");
    ns.run(move || dns::serve(node, addrs, zone))
        .await?
        .map_err(|source| Error::Io {
            context: what,
            source,
        })
}

impl super::Exchange {
    /// Starts an in-lab DNS server in the exchange (the lab's root namespace), answering
    /// `zone` on UDP and TCP port 53 of [`super::Exchange::ip`] and
    /// [`super::Exchange::ip6`], which every node of the lab reaches (through its routers'
    /// NATs). Point nodes at it with [`crate::native::Lab::set_nameservers`]. Runs until
    /// [`DnsServer::stop`] or until the lab is dropped.
    pub async fn serve_dns(&self, zone: DnsZone) -> Result<DnsServer> {
        let addrs = vec![IpAddr::V4(self.ip()), IpAddr::V6(self.ip6())];
        serve_on(self.netns(), "exchange", addrs, zone).await
    }
}
