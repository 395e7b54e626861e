//! Fault injection that works on every kernel: silent drops with nftables
//! `netdev` ingress hooks (no netem), returned as guards that heal on drop.
//!
//! Outbound traffic is never dropped in the sending namespace (a drop in
//! the output/postrouting hooks makes TCP's send path see `EPERM` instead
//! of silence); it is dropped at the ingress of the other end of the veth.
//!
//! Kernel requirements: `CONFIG_NF_TABLES_NETDEV` (Linux 4.2+ for ingress),
//! the `nft` binary, veth links.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{Error, NetlinkContext, Result};
use crate::sys::cmd;
use crate::sys::netlink;
use crate::sys::netns::Netns;
use crate::sys::nft;

use super::Lab;
use super::node::Node;

/// Which traffic of an interface a blackhole drops.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Direction {
    /// Packets arriving at the node on the interface.
    In,
    /// Packets the node sends on the interface (dropped at the peer end).
    Out,
    /// Both.
    Both,
}

static NEXT_FAULT: AtomicU64 = AtomicU64::new(1);

/// An active fault. Dropping it heals the fault (asynchronously, on the
/// namespace workers); [`FaultGuard::heal`] heals it and waits.
#[derive(Debug)]
#[must_use = "the fault heals when the guard is dropped"]
pub struct FaultGuard {
    what: String,
    /// (namespace, netdev table) pairs to delete.
    tables: Vec<(Netns, String)>,
    /// For the `fault.end` event.
    lab: std::sync::Weak<super::LabInner>,
}

impl FaultGuard {
    fn ended(&self) {
        if let Some(lab) = self.lab.upgrade() {
            super::artifacts::emit(
                &lab,
                None,
                "fault.end",
                serde_json::json!({"fault": self.what}),
            );
        }
    }
}

impl FaultGuard {
    /// What this fault does, e.g. `blackhole a.eth0 (out)`.
    pub fn describe(&self) -> &str {
        &self.what
    }

    /// Removes the fault and waits until every drop rule is gone.
    pub async fn heal(mut self) -> Result<()> {
        let tables = std::mem::take(&mut self.tables);
        if !tables.is_empty() {
            self.ended();
        }
        for (ns, table) in tables {
            nft::apply(
                &ns,
                &format!("heal of {}", self.what),
                nft::remove_table("netdev", &table),
            )
            .await?;
        }
        Ok(())
    }
}

impl Drop for FaultGuard {
    fn drop(&mut self) {
        let tables = std::mem::take(&mut self.tables);
        if !tables.is_empty() {
            self.ended();
        }
        for (ns, table) in tables {
            let ns2 = ns.clone();
            // Drop cannot wait or fail: the deletion is queued on the
            // worker. If the namespace is already gone (lab dropped), so
            // is the table, and there is nothing to heal.
            let _ = ns.spawn(move || async move {
                cmd::run(&ns2, "nft", ["delete", "table", "netdev", &table], None).await
            });
        }
    }
}

/// Renders a `netdev` table with one ingress chain per device, each with
/// `rules` (nft lines). Pure and deterministic.
pub fn render_drop_table(table: &str, chains: &BTreeMap<String, Vec<String>>) -> String {
    let mut b = String::new();
    // `writeln!` into a String cannot fail.
    let _ = writeln!(b, "table netdev {table} {{");
    for (i, (dev, rules)) in chains.iter().enumerate() {
        let _ = writeln!(b, "\tchain in{i} {{");
        let _ = writeln!(
            b,
            "\t\ttype filter hook ingress device \"{dev}\" priority -500; policy accept;"
        );
        for r in rules {
            let _ = writeln!(b, "\t\t{r}");
        }
        let _ = writeln!(b, "\t}}");
    }
    let _ = writeln!(b, "}}");
    nft::replace_table("netdev", table, &b)
}

/// The other end of a node's veth interface: its namespace and name.
pub(crate) async fn peer_end(node: &Node, iface: &str) -> Result<(Netns, String)> {
    let i = node.iface(iface).ok_or_else(|| {
        Error::invalid_node(
            node.name(),
            "iface",
            crate::InvalidReason::Unknown,
            format!(
                "node {} has no interface {iface:?} (it has {:?})",
                node.name(),
                node.ifaces()
                    .iter()
                    .map(|i| i.name.clone())
                    .collect::<Vec<_>>()
            ),
        )
    })?;
    if node.kind() == super::NodeKind::Router && i.name == "lan" {
        return Err(Error::invalid_node(
            node.name(),
            "iface",
            crate::InvalidReason::Unsupported,
            format!(
                "{}.lan is the router's LAN bridge, not a link: apply link conditions and faults to the devices' interfaces (or the router's wan) instead",
                node.name()
            ),
        ));
    }
    let lab = node.lab()?;
    let peer_ns = if i.peer == "exchange" {
        lab.root().clone()
    } else {
        lab.topo()
            .routers
            .get(&i.peer)
            .map(|r| r.node.ns().clone())
            .ok_or_else(|| {
                Error::invalid_node(
                    node.name(),
                    "iface",
                    crate::InvalidReason::Gone,
                    format!("unknown peer router {:?}", i.peer),
                )
            })?
    };
    let index = i.index;
    let ctx = |op: &str| format!("{op} of {}.{iface}", node.name());
    let peer_index = node
        .netns()
        .run(move || netlink::veth_peer_index(index))
        .await?
        .ctx(|| ctx("finding the veth peer"))?
        .ok_or_else(|| {
            Error::invalid_node(
                node.name(),
                "iface",
                crate::InvalidReason::Unsupported,
                format!("{}.{iface} is not a veth", node.name()),
            )
        })?;
    let name = peer_ns
        .run(move || netlink::link_name(peer_index))
        .await?
        .ctx(|| ctx("naming the veth peer"))?
        .ok_or_else(|| {
            Error::invalid_node(
                node.name(),
                "iface",
                crate::InvalidReason::Gone,
                format!("peer of {}.{iface} has no name", node.name()),
            )
        })?;
    Ok((peer_ns, name))
}

fn next_table() -> String {
    format!("pbf-{}", NEXT_FAULT.fetch_add(1, Ordering::Relaxed))
}

async fn install(
    lab: std::sync::Weak<super::LabInner>,
    what: String,
    plan: Vec<(Netns, BTreeMap<String, Vec<String>>)>,
) -> Result<FaultGuard> {
    let mut guard = FaultGuard {
        what,
        tables: vec![],
        lab: std::sync::Weak::new(),
    };
    for (ns, chains) in plan {
        let table = next_table();
        nft::apply(&ns, &guard.what, render_drop_table(&table, &chains)).await?;
        guard.tables.push((ns, table));
    }
    if let Some(lab) = lab.upgrade() {
        super::artifacts::emit(
            &lab,
            None,
            "fault.start",
            serde_json::json!({"fault": guard.what}),
        );
    }
    guard.lab = lab;
    Ok(guard)
}

/// Adds `rules` for `dev` in `ns` to a plan grouped by namespace.
fn plan_add(
    plan: &mut Vec<(Netns, BTreeMap<String, Vec<String>>)>,
    ns: &Netns,
    dev: String,
    rules: Vec<String>,
) {
    let pos = match plan.iter().position(|(n, _)| n.name() == ns.name()) {
        Some(p) => p,
        None => {
            plan.push((ns.clone(), BTreeMap::new()));
            plan.len() - 1
        }
    };
    plan[pos].1.entry(dev).or_default().extend(rules);
}

impl Node {
    /// Silently drops every packet on `iface` in `direction`, without
    /// taking the link down: TCP sees silence, not errors. Outbound packets
    /// are dropped at the ingress of the veth's other end. Heals when the
    /// guard is dropped or [`FaultGuard::heal`] is awaited.
    ///
    /// Needs `CONFIG_NF_TABLES_NETDEV` and the `nft` binary.
    pub async fn blackhole(&self, iface: &str, direction: Direction) -> Result<FaultGuard> {
        let (peer_ns, peer_dev) = peer_end(self, iface).await?;
        let mut plan = vec![];
        let drop = || vec!["drop".to_string()];
        if matches!(direction, Direction::In | Direction::Both) {
            plan_add(&mut plan, self.netns(), iface.to_string(), drop());
        }
        if matches!(direction, Direction::Out | Direction::Both) {
            plan_add(&mut plan, &peer_ns, peer_dev, drop());
        }
        let what = format!("blackhole {}.{iface} ({direction:?})", self.name());
        install(self.inner.lab.clone(), what, plan).await
    }

    /// Every address of the node's interfaces.
    fn all_addrs(&self) -> Vec<IpAddr> {
        let mut v = vec![];
        for i in self.ifaces() {
            v.extend(i.ip.map(IpAddr::V4));
            v.extend(i.ip6.map(IpAddr::V6));
        }
        v
    }
}

fn addr_rules(field: &str, addrs: &[IpAddr]) -> Vec<String> {
    let v4: Vec<String> = addrs
        .iter()
        .filter(|a| a.is_ipv4())
        .map(|a| a.to_string())
        .collect();
    let v6: Vec<String> = addrs
        .iter()
        .filter(|a| a.is_ipv6())
        .map(|a| a.to_string())
        .collect();
    let mut r = vec![];
    if !v4.is_empty() {
        r.push(format!("ip {field} {{ {} }} drop", v4.join(", ")));
    }
    if !v6.is_empty() {
        r.push(format!("ip6 {field} {{ {} }} drop", v6.join(", ")));
    }
    r
}

impl Lab {
    /// Drops all traffic between the addresses of `a` and `b`, both ways,
    /// silently (nft netdev ingress drops on both ends of each of their
    /// links). Other traffic is untouched. Heals when the guard is dropped
    /// or [`FaultGuard::heal`] is awaited.
    ///
    /// Limitation: traffic is matched by the nodes' own addresses; two
    /// nodes each behind a *different* NAT that talk via public mapped
    /// addresses are cut only in the direction that uses a real address.
    pub async fn partition(&self, a: &Node, b: &Node) -> Result<FaultGuard> {
        if a.name() == b.name() {
            return Err(Error::invalid_node(
                a.name(),
                "node",
                crate::InvalidReason::Conflict,
                format!("cannot partition node {} from itself", a.name()),
            ));
        }
        let mut plan = vec![];
        for (x, y) in [(a, b), (b, a)] {
            let theirs = y.all_addrs();
            for i in x.ifaces() {
                if x.kind() == super::NodeKind::Router && i.name == "lan" {
                    continue;
                }
                let (peer_ns, peer_dev) = peer_end(x, &i.name).await?;
                plan_add(
                    &mut plan,
                    x.netns(),
                    i.name.clone(),
                    addr_rules("saddr", &theirs),
                );
                plan_add(&mut plan, &peer_ns, peer_dev, addr_rules("daddr", &theirs));
            }
        }
        install(
            std::sync::Arc::downgrade(&self.inner),
            format!("partition {} | {}", a.name(), b.name()),
            plan,
        )
        .await
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;

    #[test]
    fn drop_table_renders_one_chain_per_device() {
        let mut c = BTreeMap::new();
        c.insert(
            "p17".to_string(),
            addr_rules(
                "daddr",
                &[
                    "198.19.0.3".parse().unwrap(),
                    "2001:db8::3".parse().unwrap(),
                ],
            ),
        );
        c.insert("eth0".to_string(), vec!["drop".to_string()]);
        let got = render_drop_table("pbf-1", &c);
        assert_eq!(
            got,
            "add table netdev pbf-1\ndelete table netdev pbf-1\ntable netdev pbf-1 {\n\tchain in0 {\n\t\ttype filter hook ingress device \"eth0\" priority -500; policy accept;\n\t\tdrop\n\t}\n\tchain in1 {\n\t\ttype filter hook ingress device \"p17\" priority -500; policy accept;\n\t\tip daddr { 198.19.0.3 } drop\n\t\tip6 daddr { 2001:db8::3 } drop\n\t}\n}\n"
        );
    }
}
