//! The in-lab DNS server: hickory-server's authoritative in-memory zone
//! handler, fed from a [`DnsZone`], on UDP and TCP port 53 of a node.
//!
//! hickory is a maintained, widely used DNS implementation; patchbay only
//! translates its [`DnsZone`] into hickory records (one root zone, so any
//! name may be served) and runs the server on the node's runtime.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hickory_server::Server;
use hickory_server::proto::rr::rdata::{A, AAAA, SOA, TXT};
use hickory_server::proto::rr::{LowerName, Name, RData, Record, RrKey};
use hickory_server::store::in_memory::InMemoryZoneHandler;
use hickory_server::zone_handler::{AxfrPolicy, Catalog, ZoneType};

use super::{DnsError, DnsRecord, DnsZone};

type Handler = InMemoryZoneHandler<hickory_server::net::runtime::TokioRuntimeProvider>;

/// A running in-lab DNS server (from [`crate::Node::serve_dns`] or
/// [`crate::Exchange::serve_dns`]). It runs until [`DnsServer::stop`] or until the lab is
/// dropped; dropping the handle leaves it running. Its records can change while it runs
/// ([`DnsServer::set`], [`DnsServer::remove`]): the next query sees the change.
pub struct DnsServer {
    node: String,
    addrs: Vec<IpAddr>,
    ttl: u32,
    zone: Arc<Handler>,
    stop: Mutex<Option<tokio::sync::oneshot::Sender<()>>>,
}

impl std::fmt::Debug for DnsServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DnsServer")
            .field("node", &self.node)
            .field("addrs", &self.addrs)
            .finish_non_exhaustive()
    }
}

impl DnsServer {
    /// The node the server runs on.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// The node's addresses, where the server answers on port 53 (IPv4
    /// first, then IPv6).
    pub fn addrs(&self) -> &[IpAddr] {
        &self.addrs
    }

    /// Replaces the records of `name` of `record`'s type (A, AAAA or TXT) with `record`.
    /// Queries see it at once.
    pub async fn set(&self, name: &str, record: DnsRecord) -> Result<(), DnsError> {
        let n = super::normalize_name(name)?;
        let owner = fqdn(&n)?;
        let rec = Record::from_rdata(owner.clone(), self.ttl, rdata(&n, record)?);
        let key = RrKey::new(LowerName::new(&owner), rec.record_type());
        self.zone.records_mut().await.remove(&key);
        self.zone.upsert(rec, 1).await;
        Ok(())
    }

    /// Removes every record of `name`. Queries for it then get NXDOMAIN.
    pub async fn remove(&self, name: &str) -> Result<(), DnsError> {
        self.remove_where(name, |_| true).await
    }

    /// Removes the records of `name` of one type.
    pub(crate) async fn remove_type(
        &self,
        name: &str,
        rtype: hickory_server::proto::rr::RecordType,
    ) -> Result<(), DnsError> {
        self.remove_where(name, |t| t == rtype).await
    }

    async fn remove_where(
        &self,
        name: &str,
        which: impl Fn(hickory_server::proto::rr::RecordType) -> bool,
    ) -> Result<(), DnsError> {
        let owner = LowerName::new(&fqdn(&super::normalize_name(name)?)?);
        self.zone
            .records_mut()
            .await
            .retain(|k, _| k.name != owner || !which(k.record_type));
        Ok(())
    }

    /// Stops the server.
    pub fn stop(&self) {
        if let Some(tx) = self.stop.lock().unwrap_or_else(|p| p.into_inner()).take() {
            // The server may already have ended with the lab.
            let _ = tx.send(());
        }
    }
}

/// `name.` as a hickory name (`name` already normalised).
fn fqdn(name: &str) -> Result<Name, DnsError> {
    Name::from_ascii(format!("{name}.")).map_err(|e| DnsError::Name {
        name: name.to_string(),
        reason: e.to_string(),
    })
}

fn rdata(name: &str, rec: DnsRecord) -> Result<RData, DnsError> {
    Ok(match rec {
        DnsRecord::A(v4) => RData::A(A(v4)),
        DnsRecord::Aaaa(v6) => RData::AAAA(AAAA(v6)),
        DnsRecord::Txt(t) if t.len() > 255 => {
            return Err(DnsError::TxtTooLong {
                name: name.to_string(),
                len: t.len(),
            });
        }
        DnsRecord::Txt(t) => RData::TXT(TXT::new(vec![t])),
    })
}

/// The zone as hickory's catalog; a bad record keeps its [`DnsError`] as
/// the I/O error's source.
fn catalog(zone: &DnsZone) -> Result<(Catalog, Arc<Handler>), std::io::Error> {
    let root = Name::root();
    let mut h = Handler::empty(root.clone(), ZoneType::Primary, AxfrPolicy::Deny);
    let lab = fqdn("patchbay.lab").map_err(std::io::Error::other)?;
    let soa = SOA::new(lab.clone(), lab, 1, 3600, 600, 86400, zone.ttl_secs());
    h.upsert_mut(
        Record::from_rdata(root.clone(), zone.ttl_secs(), RData::SOA(soa)),
        1,
    );
    for (name, rec) in zone.records() {
        let n = fqdn(&name).map_err(std::io::Error::other)?;
        let rdata = rdata(&name, rec).map_err(std::io::Error::other)?;
        if !h.upsert_mut(Record::from_rdata(n, zone.ttl_secs(), rdata), 1) {
            return Err(std::io::Error::other(format!(
                "hickory refused a record of {name}"
            )));
        }
    }
    let h = Arc::new(h);
    let mut c = Catalog::new();
    c.upsert(root.into(), vec![h.clone()]);
    Ok((c, h))
}

/// Starts a server for `zone` on the calling node's runtime (run it on the
/// node's worker). Binds `[::]:53` (dual-stack: IPv4 clients too) for UDP
/// and TCP.
pub(crate) async fn serve(
    node: String,
    addrs: Vec<IpAddr>,
    zone: DnsZone,
) -> Result<DnsServer, std::io::Error> {
    let (catalog, handler) = catalog(&zone)?;
    let any = SocketAddr::from((Ipv6Addr::UNSPECIFIED, 53));
    let udp = tokio::net::UdpSocket::bind(any).await?;
    let tcp = tokio::net::TcpListener::bind(any).await?;
    let mut server = Server::new(catalog);
    server.register_socket(udp);
    server.register_listener(tcp, Duration::from_secs(10), 65535);
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let name = node.clone();
    tokio::spawn(async move {
        // A dropped handle (Err from rx) disables this branch: the server
        // keeps running until stop() or the lab's end.
        tokio::select! {
            Ok(()) = rx => {
                if let Err(e) = server.shutdown_gracefully().await {
                    tracing::debug!("DNS server on {name} stopped: {e}");
                }
            }
            r = server.block_until_done() => {
                if let Err(e) = r {
                    tracing::warn!("DNS server on {name} ended: {e}");
                }
            }
        }
    });
    Ok(DnsServer {
        node,
        addrs,
        ttl: zone.ttl_secs(),
        zone: handler,
        stop: Mutex::new(Some(tx)),
    })
}
