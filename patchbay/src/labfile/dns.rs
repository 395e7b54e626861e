//! The `[dns]` table of lab files: hosts entries, nameservers and in-lab
//! DNS servers. Validation is pure; [`apply`] runs after the nodes exist.

use std::collections::BTreeSet;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::{DnsZone, InvalidLab, InvalidReason, Node, native::Lab};

/// The `[dns]` table.
#[derive(Debug, Clone, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct DnsSection {
    /// Lab-wide nameserver: an IP address or a node name (all of its
    /// addresses).
    #[serde(default)]
    pub nameserver: Option<String>,
    /// Lab-wide hosts entries (`/etc/hosts` of every spawned process).
    #[serde(default)]
    pub entries: Vec<NameSpec>,
    /// In-lab DNS servers.
    #[serde(default, rename = "server")]
    pub servers: Vec<DnsServerSpec>,
}

/// One name: `name` with exactly one of `ip`, `node` (the node's addresses)
/// or `txt` (DNS servers only).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct NameSpec {
    /// The DNS name.
    pub name: String,
    /// An address.
    #[serde(default)]
    pub ip: Option<IpAddr>,
    /// A node whose addresses the name gets (A and AAAA).
    #[serde(default)]
    pub node: Option<String>,
    /// A TXT string.
    #[serde(default)]
    pub txt: Option<String>,
}

/// A `[[dns.server]]` entry.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct DnsServerSpec {
    /// The node it runs on (port 53).
    pub node: String,
    /// Records served.
    #[serde(default)]
    pub records: Vec<NameSpec>,
    /// TTL of every record in seconds (default 300).
    #[serde(default)]
    pub ttl: Option<u32>,
    /// Synthesize `2001:db8:64::/96` AAAA records for IPv4-only names.
    #[serde(default)]
    pub dns64: bool,
}

impl DnsSection {
    /// Checks node references and record shapes against the lab's node
    /// names.
    pub fn validate(&self, nodes: &BTreeSet<&str>) -> std::result::Result<(), InvalidLab> {
        let known = |n: &str, what: &str| {
            if nodes.contains(n) {
                Ok(())
            } else {
                Err(InvalidLab::new(
                    "node",
                    InvalidReason::Unknown,
                    format!(
                        "[dns] {what} names unknown node {n:?}; known nodes: {}",
                        crate::invalid::known_names(nodes)
                    ),
                )
                .node(n))
            }
        };
        if let Some(ns) = &self.nameserver
            && ns.parse::<IpAddr>().is_err()
        {
            known(ns, "nameserver")?;
        }
        for e in &self.entries {
            e.check(false)?;
            if let Some(n) = &e.node {
                known(n, &format!("entry {:?}", e.name))?;
            }
        }
        for s in &self.servers {
            known(&s.node, "server")?;
            for r in &s.records {
                r.check(true)?;
                if let Some(n) = &r.node {
                    known(
                        n,
                        &format!("record {:?} of the server on {}", r.name, s.node),
                    )?;
                }
            }
        }
        Ok(())
    }
}

impl NameSpec {
    fn check(&self, txt_ok: bool) -> std::result::Result<(), InvalidLab> {
        let set = [self.ip.is_some(), self.node.is_some(), self.txt.is_some()]
            .iter()
            .filter(|b| **b)
            .count();
        if set != 1 {
            let reason = if set == 0 {
                InvalidReason::Missing
            } else {
                InvalidReason::Conflict
            };
            return Err(InvalidLab::new(
                "name",
                reason,
                format!(
                    "[dns] name {:?} needs exactly one of `ip`, `node`{}; it has {set}",
                    self.name,
                    if txt_ok { " or `txt`" } else { "" }
                ),
            ));
        }
        if self.txt.is_some() && !txt_ok {
            return Err(InvalidLab::new(
                "txt",
                InvalidReason::Unsupported,
                format!(
                    "[dns] entry {:?}: `txt` records exist only on a [[dns.server]]; hosts entries hold addresses",
                    self.name
                ),
            ));
        }
        crate::dns::normalize_name(&self.name).map_err(|e| {
            InvalidLab::new("name", InvalidReason::OutOfRange, format!("[dns] {e}"))
        })?;
        Ok(())
    }
}

fn node(lab: &Lab, name: &str) -> Result<Node> {
    lab.node(name).ok_or_else(|| {
        let msg = format!("[dns] unknown node {name:?}");
        Error::invalid_node(name, "node", InvalidReason::Unknown, msg)
    })
}

fn node_addrs(n: &Node) -> Vec<IpAddr> {
    let mut v: Vec<IpAddr> = n.ip().map(IpAddr::V4).into_iter().collect();
    v.extend(n.ip6().map(IpAddr::V6));
    v
}

/// A nameserver spec: an IP literal, or a node's addresses.
pub(crate) fn nameservers(lab: &Lab, spec: &str) -> Result<Vec<IpAddr>> {
    match spec.parse::<IpAddr>() {
        Ok(ip) => Ok(vec![ip]),
        Err(_) => Ok(node_addrs(&node(lab, spec)?)),
    }
}

/// Applies the section to a built lab.
pub(crate) async fn apply(lab: &Lab, dns: &DnsSection) -> Result<()> {
    for s in &dns.servers {
        let mut zone = DnsZone::new().dns64(s.dns64);
        if let Some(t) = s.ttl {
            zone = zone.ttl(t);
        }
        for r in &s.records {
            let bad = |e: crate::DnsError| {
                let msg = format!("[dns] server on {}: {e}", s.node);
                Error::invalid_node(&s.node, "records", InvalidReason::OutOfRange, msg)
            };
            zone = match (&r.ip, &r.node, &r.txt) {
                (Some(ip), _, _) => zone.addr(&r.name, *ip).map_err(bad)?,
                (_, Some(n), _) => {
                    for ip in node_addrs(&node(lab, n)?) {
                        zone = zone.addr(&r.name, ip).map_err(bad)?;
                    }
                    zone
                }
                (_, _, Some(t)) => zone.txt(&r.name, t).map_err(bad)?,
                _ => zone,
            };
        }
        node(lab, &s.node)?.serve_dns(zone).await?;
    }
    for e in &dns.entries {
        let ips = match (&e.ip, &e.node) {
            (Some(ip), _) => vec![*ip],
            (_, Some(n)) => node_addrs(&node(lab, n)?),
            _ => vec![],
        };
        for ip in ips {
            lab.dns_entry(&e.name, ip)?;
        }
    }
    if let Some(ns) = &dns.nameserver {
        lab.set_nameservers(&nameservers(lab, ns)?)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::labfile::{LabFile, LabFileError};

    const BASE: &str = "[[router]]\nname = \"r\"\n[[device]]\nname = \"ns\"\niface = [{ name = \"eth0\", router = \"r\" }]\n";

    fn parse(extra: &str) -> Result<LabFile, LabFileError> {
        LabFile::parse(&format!("{BASE}{extra}"), Path::new("t.toml"))
    }

    #[test]
    fn dns_tables_parse_and_validate() {
        let ok = parse(
            "[dns]\nnameserver = \"ns\"\nentries = [{ name = \"a.lab\", ip = \"198.19.0.9\" }]\n[[dns.server]]\nnode = \"ns\"\ndns64 = true\nrecords = [{ name = \"a.lab\", node = \"ns\" }, { name = \"a.lab\", txt = \"hi\" }]\n",
        )
        .unwrap();
        let d = ok.dns.unwrap();
        assert_eq!(d.servers.len(), 1);
        assert!(d.servers[0].dns64);
        let e = parse("[dns]\nnameserver = \"nobody\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("nobody"), "{e}");
        let e = parse("[dns]\nentries = [{ name = \"a.lab\", txt = \"x\" }]\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("txt"), "{e}");
        let e = parse("[dns]\nentries = [{ name = \"a.lab\", ip = \"1.2.3.4\", node = \"ns\" }]\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("exactly one"), "{e}");
        let e = parse("[[router]]\nname = \"c\"\nip-support = \"v4-only\"\nnat-v6 = \"nat64\"\n")
            .map(|f| f.routers[1].nat_v6)
            .unwrap();
        assert_eq!(e, Some(crate::NatV6Mode::Nat64));
    }
}
