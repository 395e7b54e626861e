//! Names in a lab: hosts entries, nameservers and an in-lab DNS server.
//!
//! - **Hosts entries** ([`crate::native::Lab::dns_entry`]) and **nameservers**
//!   ([`crate::native::Lab::set_nameserver`], [`crate::Node::set_nameserver`]) are
//!   rendered into per-node `hosts` and `resolv.conf` files in the lab's
//!   directory. Every process spawned in a node then sees them at
//!   `/etc/hosts` and `/etc/resolv.conf`: it starts in a private mount
//!   namespace with both files bind-mounted over the host's (which are
//!   never touched). Updates rewrite the files in place, so running
//!   processes see them on their next lookup.
//! - **The DNS server** ([`crate::Node::serve_dns`]) is hickory-server
//!   answering A, AAAA and TXT queries from a [`DnsZone`], over UDP and
//!   TCP port 53, on the node's runtime. With [`DnsZone::dns64`] it
//!   synthesizes AAAA records in `2001:db8:64::/96` for names that only have
//!   IPv4 addresses (RFC 6147), for NAT64 routers.
//!
//! Everything in this file is pure rendering with unit tests.

mod server;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

pub use server::DnsServer;
pub(crate) use server::serve;

/// A record a [`DnsZone`] serves.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
#[non_exhaustive]
pub enum DnsRecord {
    /// An IPv4 address.
    A(Ipv4Addr),
    /// An IPv6 address.
    Aaaa(Ipv6Addr),
    /// A text record (one string).
    Txt(String),
}

/// The records of an in-lab DNS server. Names are absolute, matched
/// case-insensitively; a trailing dot is optional.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsZone {
    records: BTreeMap<String, BTreeSet<DnsRecord>>,
    ttl: u32,
    dns64: bool,
}

impl Default for DnsZone {
    fn default() -> Self {
        DnsZone {
            records: BTreeMap::new(),
            ttl: 300,
            dns64: false,
        }
    }
}

/// Bad DNS input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DnsError {
    /// A name that is not a valid DNS name.
    #[error(
        "invalid DNS name {name:?}: {reason}; use letters, digits, '-' and '.', labels of 1 to 63 bytes"
    )]
    Name {
        /// The name.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// A TXT string longer than one character-string.
    #[error("TXT record of {name} is {len} bytes; one TXT string holds at most 255")]
    TxtTooLong {
        /// The name.
        name: String,
        /// Its length.
        len: usize,
    },
}

/// Bad DNS input is an invalid lab ([`crate::Error::Invalid`], field `dns`),
/// so `?` works on [`DnsZone`]'s builders in code returning
/// [`crate::Result`].
impl From<DnsError> for crate::Error {
    fn from(e: DnsError) -> crate::Error {
        let reason = crate::InvalidReason::OutOfRange;
        crate::Error::Invalid(crate::InvalidLab::new("dns", reason, e.to_string()))
    }
}

/// Normalises a name: lower case, no trailing dot; checks labels.
pub fn normalize_name(name: &str) -> Result<String, DnsError> {
    let n = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
    let bad = |reason: &str| DnsError::Name {
        name: name.to_string(),
        reason: reason.to_string(),
    };
    if n.is_empty() || n.len() > 253 {
        return Err(bad("it must be 1 to 253 bytes long"));
    }
    for label in n.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err(bad("a label is empty or longer than 63 bytes"));
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(bad("it holds a character other than a-z, 0-9, '-', '_'"));
        }
    }
    Ok(n)
}

impl DnsZone {
    /// An empty zone (TTL 300 s, no DNS64).
    pub fn new() -> Self {
        Self::default()
    }

    fn add(mut self, name: &str, r: DnsRecord) -> Result<Self, DnsError> {
        let n = normalize_name(name)?;
        if let DnsRecord::Txt(t) = &r
            && t.len() > 255
        {
            return Err(DnsError::TxtTooLong {
                name: n,
                len: t.len(),
            });
        }
        self.records.entry(n).or_default().insert(r);
        Ok(self)
    }

    /// Adds an A (or, for an IPv6 address, AAAA) record.
    pub fn addr(self, name: &str, ip: IpAddr) -> Result<Self, DnsError> {
        match ip {
            IpAddr::V4(v4) => self.add(name, DnsRecord::A(v4)),
            IpAddr::V6(v6) => self.add(name, DnsRecord::Aaaa(v6)),
        }
    }

    /// Adds an A record.
    pub fn a(self, name: &str, ip: Ipv4Addr) -> Result<Self, DnsError> {
        self.add(name, DnsRecord::A(ip))
    }

    /// Adds an AAAA record.
    pub fn aaaa(self, name: &str, ip: Ipv6Addr) -> Result<Self, DnsError> {
        self.add(name, DnsRecord::Aaaa(ip))
    }

    /// Adds a TXT record (one string of at most 255 bytes).
    pub fn txt(self, name: &str, text: &str) -> Result<Self, DnsError> {
        self.add(name, DnsRecord::Txt(text.to_string()))
    }

    /// The TTL of every record, in seconds (default 300). TTLs are
    /// application time: resolvers count them on their own clocks, which a
    /// compressed lab does not scale (see docs/compression.md).
    pub fn ttl(mut self, secs: u32) -> Self {
        self.ttl = secs;
        self
    }

    /// The record TTL in seconds.
    pub fn ttl_secs(&self) -> u32 {
        self.ttl
    }

    /// DNS64 (RFC 6147): answer AAAA queries for names with only A records
    /// with `2001:db8:64::<IPv4>` (default off).
    pub fn dns64(mut self, on: bool) -> Self {
        self.dns64 = on;
        self
    }

    /// Every record served, DNS64 synthesis included, in name order.
    pub fn records(&self) -> Vec<(String, DnsRecord)> {
        let mut out = vec![];
        for (name, set) in &self.records {
            let has_aaaa = set.iter().any(|r| matches!(r, DnsRecord::Aaaa(_)));
            for r in set {
                out.push((name.clone(), r.clone()));
            }
            if self.dns64 && !has_aaaa {
                for r in set {
                    if let DnsRecord::A(v4) = r {
                        out.push((name.clone(), DnsRecord::Aaaa(crate::nat::nat64_embed(*v4))));
                    }
                }
            }
        }
        out
    }
}

/// The lab's name state: hosts entries and nameservers.
#[derive(Debug, Default)]
pub(crate) struct LabDns {
    /// Lab-wide hosts entries, name → addresses.
    pub entries: BTreeMap<String, BTreeSet<IpAddr>>,
    /// The lab-wide nameservers.
    pub nameservers: Vec<IpAddr>,
    /// Per-node nameservers (override the lab's).
    pub node_nameservers: BTreeMap<String, Vec<IpAddr>>,
    /// Per-node hosts entries (added to the lab's), node → name → addresses.
    pub node_entries: BTreeMap<String, BTreeMap<String, BTreeSet<IpAddr>>>,
}

impl LabDns {
    /// Whether spawned commands need the overlay at all.
    pub fn configured(&self) -> bool {
        !self.entries.is_empty()
            || !self.nameservers.is_empty()
            || !self.node_nameservers.is_empty()
            || !self.node_entries.is_empty()
    }

    /// First address of `name` among the hosts entries.
    pub fn resolve(&self, name: &str) -> Option<IpAddr> {
        let n = normalize_name(name).ok()?;
        self.entries.get(&n)?.iter().next().copied()
    }

    /// The `/etc/hosts` of `node`.
    pub fn render_hosts(&self, node: &str) -> String {
        let mut s = format!(
            "# written by patchbay for node {node}\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
        );
        let own = self.node_entries.get(node).into_iter().flatten();
        for (name, ips) in self.entries.iter().chain(own) {
            for ip in ips {
                s.push_str(&format!("{ip}\t{name}\n"));
            }
        }
        s
    }

    /// The `/etc/resolv.conf` of `node`: its nameserver, else the lab's.
    /// Without one, the file names none, so lookups fail fast instead of
    /// reaching for the host's resolver.
    pub fn render_resolv(&self, node: &str) -> String {
        let ns = self.node_nameservers.get(node).unwrap_or(&self.nameservers);
        if ns.is_empty() {
            return format!("# written by patchbay for node {node}: no nameserver set\n");
        }
        let mut s = format!("# written by patchbay for node {node}\n");
        for n in ns {
            s.push_str(&format!("nameserver {n}\n"));
        }
        s.push_str("options timeout:1 attempts:2\n");
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_and_resolv_render() {
        let mut d = LabDns::default();
        assert!(!d.configured());
        d.entries
            .entry("server.lab".into())
            .or_default()
            .insert("198.19.0.2".parse().unwrap());
        d.nameservers = vec!["2001:db8:1::2".parse().unwrap()];
        d.node_nameservers
            .insert("phone".into(), vec!["198.19.0.3".parse().unwrap()]);
        assert!(d.render_hosts("a").contains("198.19.0.2\tserver.lab\n"));
        assert!(d.render_resolv("a").contains("nameserver 2001:db8:1::2\n"));
        assert!(d.render_resolv("phone").contains("nameserver 198.19.0.3\n"));
        assert_eq!(d.resolve("Server.Lab."), "198.19.0.2".parse().ok());
        d.node_entries
            .entry("phone".into())
            .or_default()
            .entry("relay.test".into())
            .or_default()
            .insert("198.19.0.9".parse().unwrap());
        assert!(d.render_hosts("phone").contains("198.19.0.9\trelay.test\n"));
        assert!(!d.render_hosts("a").contains("relay.test"));
    }

    #[test]
    fn dns64_synthesizes_only_without_aaaa() {
        let z = DnsZone::new()
            .a("v4.lab", Ipv4Addr::new(198, 19, 0, 2))
            .unwrap()
            .a("both.lab", Ipv4Addr::new(198, 19, 0, 3))
            .unwrap()
            .aaaa("both.lab", "2001:db8:1::3".parse().unwrap())
            .unwrap()
            .txt("v4.lab", "hello")
            .unwrap()
            .dns64(true);
        let r = z.records();
        assert!(r.contains(&(
            "v4.lab".into(),
            DnsRecord::Aaaa("2001:db8:64::c613:2".parse().unwrap())
        )));
        assert!(!r.contains(&(
            "both.lab".into(),
            DnsRecord::Aaaa("2001:db8:64::c613:3".parse().unwrap())
        )));
        assert_eq!(r.len(), 5);
    }

    #[test]
    fn bad_names_are_refused() {
        assert!(normalize_name("a..b").is_err());
        assert!(normalize_name("a b").is_err());
        assert_eq!(normalize_name("Host.LAB.").unwrap(), "host.lab");
        let long = "x".repeat(256);
        assert!(matches!(
            DnsZone::new().txt("a", &long),
            Err(DnsError::TxtTooLong { .. })
        ));
    }
}
