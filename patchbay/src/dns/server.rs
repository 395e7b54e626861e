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
use hickory_server::proto::rr::{Name, RData, Record};
use hickory_server::store::in_memory::InMemoryZoneHandler;
use hickory_server::zone_handler::{AxfrPolicy, Catalog, ZoneType};

use super::{DnsRecord, DnsZone};

/// A running in-lab DNS server (from [`crate::Node::serve_dns`]). It runs
/// until [`DnsServer::stop`] or until the lab is dropped; dropping the
/// handle leaves it running.
#[derive(Debug)]
pub struct DnsServer {
    node: String,
    addrs: Vec<IpAddr>,
    stop: Mutex<Option<tokio::sync::oneshot::Sender<()>>>,
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

    /// Stops the server.
    pub fn stop(&self) {
        if let Some(tx) = self.stop.lock().unwrap_or_else(|p| p.into_inner()).take() {
            // The server may already have ended with the lab.
            let _ = tx.send(());
        }
    }
}

fn catalog(zone: &DnsZone) -> Result<Catalog, String> {
    let root = Name::root();
    let mut h = InMemoryZoneHandler::<hickory_server::net::runtime::TokioRuntimeProvider>::empty(
        root.clone(),
        ZoneType::Primary,
        AxfrPolicy::Deny,
    );
    let lab = Name::from_ascii("patchbay.lab.").map_err(|e| e.to_string())?;
    let soa = SOA::new(lab.clone(), lab, 1, 3600, 600, 86400, zone.ttl_secs());
    h.upsert_mut(
        Record::from_rdata(root.clone(), zone.ttl_secs(), RData::SOA(soa)),
        1,
    );
    for (name, rec) in zone.records() {
        let n = Name::from_ascii(format!("{name}.")).map_err(|e| format!("{name}: {e}"))?;
        let rdata = match rec {
            DnsRecord::A(v4) => RData::A(A(v4)),
            DnsRecord::Aaaa(v6) => RData::AAAA(AAAA(v6)),
            DnsRecord::Txt(t) => RData::TXT(TXT::new(vec![t])),
        };
        if !h.upsert_mut(Record::from_rdata(n, zone.ttl_secs(), rdata), 1) {
            return Err(format!("hickory refused a record of {name}"));
        }
    }
    let mut c = Catalog::new();
    c.upsert(root.into(), vec![Arc::new(h)]);
    Ok(c)
}

/// Starts a server for `zone` on the calling node's runtime (run it on the
/// node's worker). Binds `[::]:53` (dual-stack: IPv4 clients too) for UDP
/// and TCP.
pub(crate) async fn serve(
    node: String,
    addrs: Vec<IpAddr>,
    zone: DnsZone,
) -> Result<DnsServer, std::io::Error> {
    let catalog = catalog(&zone).map_err(std::io::Error::other)?;
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
        stop: Mutex::new(Some(tx)),
    })
}
