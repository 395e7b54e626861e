//! Upstream's lab DNS server (`lab.dns_server()`): the core's DNS server in the exchange,
//! with records that change while it runs, and every node pointed at it.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use anyhow::{Result, anyhow};
pub use hickory_server::proto::rr::RecordType;

use super::sync::{block_on, lock};
use crate::{DnsRecord, DnsZone};

/// Upstream's record TTL: one second, so changes show at once.
const TTL: u32 = 1;

/// Per name: its A and AAAA address.
type Names = BTreeMap<String, (Option<IpAddr>, Option<IpAddr>)>;

/// The lab's DNS server: A, AAAA and TXT over UDP and TCP port 53 on the exchange's
/// addresses. Cheap to clone.
#[derive(Clone, Debug)]
pub struct DnsServer {
    server: Arc<crate::native::DnsServer>,
    /// The records, for in-process lookups ([`DnsServer::resolve`]).
    names: Arc<Mutex<Names>>,
}

impl DnsServer {
    /// The lab's server, started on first call.
    pub(crate) fn of(
        core: &crate::native::Lab,
        slot: &Mutex<Option<DnsServer>>,
    ) -> Result<DnsServer> {
        let mut slot = lock(slot);
        if let Some(s) = slot.as_ref() {
            return Ok(s.clone());
        }
        let ex = core.exchange();
        let zone = DnsZone::new().ttl(TTL);
        let server = block_on(ex.serve_dns(zone))?;
        core.set_nameservers(&[IpAddr::V4(ex.ip()), IpAddr::V6(ex.ip6())])?;
        let s = DnsServer {
            server: Arc::new(server),
            names: Arc::default(),
        };
        *slot = Some(s.clone());
        Ok(s)
    }

    /// Sets the A (IPv4) or AAAA (IPv6) record of `name`, replacing the previous one of that
    /// type. Queries see it at once.
    pub fn set_host(&self, name: &str, ip: IpAddr) -> Result<()> {
        let rec = match ip {
            IpAddr::V4(v4) => DnsRecord::A(v4),
            IpAddr::V6(v6) => DnsRecord::Aaaa(v6),
        };
        block_on(self.server.set(name, rec))?;
        let key = crate::dns::normalize_name(name)?;
        let mut names = lock(&self.names);
        let e = names.entry(key).or_default();
        match ip {
            IpAddr::V4(_) => e.0 = Some(ip),
            IpAddr::V6(_) => e.1 = Some(ip),
        }
        Ok(())
    }

    /// Sets the TXT record of `name` (one string per value).
    pub fn set_txt(&self, name: &str, values: &[&str]) -> Result<()> {
        let joined = values.concat();
        if values.len() > 1 {
            return Err(anyhow!(
                "TXT record of {name}: several strings per record are not supported; pass one string ({joined:?})"
            ));
        }
        block_on(self.server.set(name, DnsRecord::Txt(joined)))?;
        Ok(())
    }

    /// Removes the records of `name` of type `rtype`.
    pub fn remove(&self, name: &str, rtype: RecordType) -> Result<()> {
        block_on(self.server.remove_type(name, rtype))?;
        let key = crate::dns::normalize_name(name)?;
        if let Some(e) = lock(&self.names).get_mut(&key) {
            match rtype {
                RecordType::A => e.0 = None,
                RecordType::AAAA => e.1 = None,
                _ => {}
            }
        }
        Ok(())
    }

    /// The A (else AAAA) address of `name`, looked up in memory.
    pub fn resolve(&self, name: &str) -> Option<IpAddr> {
        let key = crate::dns::normalize_name(name).ok()?;
        let (v4, v6) = *lock(&self.names).get(&key)?;
        v4.or(v6)
    }
}
