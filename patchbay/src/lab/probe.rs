//! NAT probing: a UDP reflector, a mapping probe, and a behaviour
//! classifier that tests mapping and filtering the way RFC 5780 tools do
//! (RFC 4787 terms: EIM/ADM/APDM, EIF/ADF/APDF).
//!
//! All of it is real traffic on real sockets inside the lab's namespaces.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::time::Duration;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::sys::netns::{Netns, Task};

use super::Lab;
use super::node::Node;

/// How a NAT chooses the external endpoint of a mapping (RFC 4787 §4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum NatMapping {
    /// EIM: one external endpoint per internal endpoint, whatever the
    /// destination.
    EndpointIndependent,
    /// ADM: a new mapping per destination address.
    AddressDependent,
    /// APDM: a new mapping per destination address and port ("symmetric").
    AddressAndPortDependent,
}

/// Which inbound packets a NAT lets through to a mapping (RFC 4787 §5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum NatFiltering {
    /// EIF: anyone may send to the mapping.
    EndpointIndependent,
    /// ADF: only addresses the internal endpoint has sent to.
    AddressDependent,
    /// APDF: only the exact endpoints it has sent to.
    AddressAndPortDependent,
}

/// What [`Lab::classify_nat`] found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NatBehavior {
    /// The client's own (internal) address of the first probe.
    pub local: SocketAddr,
    /// The external address the first reflector saw.
    pub external: SocketAddr,
    /// Whether the address is translated at all (`external != local`).
    pub translated: bool,
    /// Mapping behaviour.
    pub mapping: NatMapping,
    /// Filtering behaviour.
    pub filtering: NatFiltering,
}

/// A UDP reflector: answers every datagram with the source address it
/// observed, as text (`"OBSERVED ip:port"`, upstream patchbay's reply).
/// Stops when dropped.
#[derive(Debug)]
pub struct Reflector {
    addr: SocketAddr,
    _task: Task<std::io::Result<()>>,
}

impl Reflector {
    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

/// What a reflector puts before the address it observed (upstream patchbay's format).
const OBSERVED: &str = "OBSERVED ";
/// The first port of the per-node probe ports ([`Node::probe_port`]).
const PROBE_PORT_BASE: u16 = 40_000;
const PROBE_TRIES: usize = 4;
const PROBE_WAIT: Duration = Duration::from_millis(300);
const FILTER_WAIT: Duration = Duration::from_millis(400);

fn io_ctx(context: String) -> impl FnOnce(std::io::Error) -> Error {
    move |source| Error::Io { context, source }
}

impl Node {
    /// Starts a UDP reflector bound to `bind` in this node (port 0 picks
    /// one; [`Reflector::addr`] tells which). It answers each datagram with
    /// `OBSERVED <ip:port>`, the observed source address. Returns once it is bound.
    pub async fn spawn_reflector(&self, bind: SocketAddr) -> Result<Reflector> {
        reflector_on(self.netns(), self.name(), bind).await
    }

    /// Sends to `reflector` from this node's probe port and returns the
    /// source address the reflector saw: the external mapping, behind a
    /// NAT. Retries a few times, then fails.
    ///
    /// The probe port is fixed per node ([`Node::probe_port`]), as in
    /// upstream patchbay: two probes from one node towards two reflectors
    /// show the NAT's mapping behaviour (the same external port for both
    /// under endpoint-independent mapping, two under endpoint-dependent
    /// mapping). Two probes from one node at the same time are refused
    /// (the port is taken).
    pub async fn probe_udp_mapping(&self, reflector: SocketAddr) -> Result<SocketAddr> {
        let node = self.clone();
        tokio::task::spawn_blocking(move || node.probe_udp_mapping_blocking(reflector))
            .await
            .map_err(|e| Error::Io {
                context: "the mapping probe task".into(),
                source: e.into(),
            })?
    }

    /// The blocking form of [`Node::probe_udp_mapping`].
    pub(crate) fn probe_udp_mapping_blocking(&self, reflector: SocketAddr) -> Result<SocketAddr> {
        let port = self.probe_port();
        let sock = self.client_socket(reflector.is_ipv6(), port)?;
        ask(&sock, reflector).ok_or_else(|| {
            Error::invalid_node(self.name(), "reflector", crate::InvalidReason::Unknown, format!(
                "no answer from reflector {reflector} to {} (probe port {port}) after {PROBE_TRIES} tries: is a reflector running there (Node::spawn_reflector), and is it reachable?",
                self.name()
            ))
        })
    }

    /// The local UDP port [`Node::probe_udp_mapping`] sends from: 40000 plus
    /// the node's ordinal in its lab (modulo 20000).
    pub fn probe_port(&self) -> u16 {
        PROBE_PORT_BASE + (self.inner.ordinal % 20_000) as u16
    }

    /// A UDP socket on `port` (0: an ephemeral one) of all addresses of one family.
    fn client_socket(&self, v6: bool, port: u16) -> Result<UdpSocket> {
        let any: IpAddr = if v6 {
            Ipv6Addr::UNSPECIFIED.into()
        } else {
            Ipv4Addr::UNSPECIFIED.into()
        };
        let s = self
            .run_sync(move || UdpSocket::bind((any, port)))?
            .map_err(io_ctx(format!(
                "binding a probe socket to port {port} in {}",
                self.name()
            )))?;
        s.set_read_timeout(Some(PROBE_WAIT))
            .map_err(io_ctx("setting a read timeout".into()))?;
        Ok(s)
    }
}

/// A reflector on the worker of `ns` (called `name` in errors).
pub(crate) async fn reflector_on(ns: &Netns, name: &str, bind: SocketAddr) -> Result<Reflector> {
    let sock = ns
        .run_sync(move || UdpSocket::bind(bind))?
        .map_err(io_ctx(format!("binding a reflector to {bind} in {name}")))?;
    let addr = sock
        .local_addr()
        .map_err(io_ctx("reading the reflector's address".into()))?;
    let task = ns
        .spawn(move || async move {
            sock.set_nonblocking(true)?;
            let sock = tokio::net::UdpSocket::from_std(sock)?;
            let mut buf = vec![0u8; 2048];
            loop {
                let (_, from) = sock.recv_from(&mut buf).await?;
                sock.send_to(format!("{OBSERVED}{from}").as_bytes(), from)
                    .await?;
            }
        })?
        .abort_on_drop();
    Ok(Reflector { addr, _task: task })
}

/// Asks a reflector; `None` after every try timed out.
fn ask(sock: &UdpSocket, to: SocketAddr) -> Option<SocketAddr> {
    let mut buf = [0u8; 128];
    for _ in 0..PROBE_TRIES {
        sock.send_to(b"?", to).ok()?;
        if let Ok((n, from)) = sock.recv_from(&mut buf)
            && from == to
        {
            let text = std::str::from_utf8(&buf[..n]).ok()?;
            return text.strip_prefix(OBSERVED).unwrap_or(text).parse().ok();
        }
    }
    None
}

/// A server-side probe socket: receives and reports the observed source.
fn observe(server: &UdpSocket) -> Option<SocketAddr> {
    let mut buf = [0u8; 64];
    server.recv_from(&mut buf).ok().map(|(_, from)| from)
}

/// The source address `server` sees when `client` sends to it.
fn seen_by(client: &UdpSocket, server: &UdpSocket) -> Option<SocketAddr> {
    let to = server.local_addr().ok()?;
    for _ in 0..PROBE_TRIES {
        // A fresh IPv6 address can still be tentative (see `bind_when_ready`):
        // no source address yet, so try again after a wait.
        if client.send_to(b"m", to).is_err() {
            std::thread::sleep(PROBE_WAIT);
            continue;
        }
        if let Some(from) = observe(server) {
            return Some(from);
        }
    }
    None
}

/// Binds `addr`, waiting up to 2 s while the address is not yet usable:
/// Linux keeps a new IPv6 address tentative (EADDRNOTAVAIL) until its link
/// has carrier, which a loaded machine can report late, even with DAD off.
fn bind_when_ready(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    loop {
        match UdpSocket::bind(addr) {
            Err(e)
                if e.kind() == std::io::ErrorKind::AddrNotAvailable
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(20));
            }
            r => return r,
        }
    }
}

/// Whether `client` receives a datagram `from` sends to `mapped`.
fn reaches(from: &UdpSocket, mapped: SocketAddr, client: &UdpSocket) -> bool {
    let mut buf = [0u8; 64];
    // Two sends: the first packet on a quiet link may be lost to neighbour
    // resolution.
    for _ in 0..2 {
        if from.send_to(b"f", mapped).is_err() {
            return false;
        }
        if client.recv_from(&mut buf).is_ok() {
            return true;
        }
    }
    false
}

impl Lab {
    /// Classifies the NAT (if any) between `client` and the public nodes
    /// `a` and `b` (two different addresses, e.g. two devices on a public
    /// router), like an RFC 5780 STUN client: probe sockets on two ports of
    /// each (`port` and `port + 1`) observe the client's mapped source
    /// (mapping: `a:p` vs `b:p` vs `b:p+1`), then send unsolicited datagrams
    /// to fresh mappings from a third address and from another port
    /// (filtering). Plain UDP; needs no reflector. Probes use IPv4, or
    /// IPv6 when `client` has no IPv4 address (a v6-only LAN).
    pub async fn classify_nat(
        &self,
        client: &Node,
        a: &Node,
        b: &Node,
        port: u16,
    ) -> Result<NatBehavior> {
        let v6 = client.ip().is_none() && client.ip6().is_some();
        let family = if v6 { "IPv6" } else { "IPv4" };
        let ip_of = |n: &Node| -> Option<IpAddr> {
            if v6 {
                n.ip6().map(Into::into)
            } else {
                n.ip().map(Into::into)
            }
        };
        let server = |n: &Node, p: u16| -> Result<UdpSocket> {
            let ip = ip_of(n).ok_or_else(|| {
                Error::invalid_node(n.name(), "ip", crate::InvalidReason::Missing, format!(
                    "{} has no {family} address to probe from (the client {} probes over {family})",
                    n.name(),
                    client.name()
                ))
            })?;
            let s = n
                .run_sync(move || bind_when_ready((ip, p).into()))?
                .map_err(io_ctx(format!(
                    "binding probe port {ip}:{p} in {}",
                    n.name()
                )))?;
            s.set_read_timeout(Some(PROBE_WAIT))
                .map_err(io_ctx("setting a read timeout".into()))?;
            Ok(s)
        };
        if ip_of(a) == ip_of(b) {
            return Err(Error::invalid(
                "node",
                crate::InvalidReason::Conflict,
                format!(
                    "classify_nat needs two public nodes with different addresses; {} and {} share {:?}",
                    a.name(),
                    b.name(),
                    a.ip()
                ),
            ));
        }
        let p2 = port.checked_add(1).ok_or_else(|| {
            Error::invalid(
                "port",
                crate::InvalidReason::OutOfRange,
                format!("probe port {port} leaves no room for port + 1"),
            )
        })?;
        let a1 = server(a, port)?;
        let a2 = server(a, p2)?;
        let b1 = server(b, port)?;
        let b2 = server(b, p2)?;
        let c_map = client.client_socket(v6, 0)?;
        let c_eif = client.client_socket(v6, 0)?;
        let c_adf = client.client_socket(v6, 0)?;
        for c in [&c_eif, &c_adf] {
            c.set_read_timeout(Some(FILTER_WAIT))
                .map_err(io_ctx("setting a read timeout".into()))?;
        }
        let cname = client.name().to_string();
        let client_ip = ip_of(client);
        let job = move || -> Result<NatBehavior> {
            let no = |what: &str| Error::Io {
                context: format!("NAT classification: {what}: no datagram from {cname} arrived"),
                source: std::io::ErrorKind::TimedOut.into(),
            };
            let local = c_map.local_addr().map_err(io_ctx(
                "NAT classification: the client socket's address".into(),
            ))?;
            let m1 = seen_by(&c_map, &a1).ok_or_else(|| no("probe to a:p"))?;
            let m2 = seen_by(&c_map, &b1).ok_or_else(|| no("probe to b:p"))?;
            let m3 = seen_by(&c_map, &b2).ok_or_else(|| no("probe to b:p+1"))?;
            let mapping = if m1 == m2 {
                NatMapping::EndpointIndependent
            } else if m2 == m3 {
                NatMapping::AddressDependent
            } else {
                NatMapping::AddressAndPortDependent
            };
            // Filtering: fresh mappings, each opened towards a:p only.
            let e = seen_by(&c_eif, &a1).ok_or_else(|| no("filtering probe"))?;
            let filtering = if reaches(&b1, e, &c_eif) {
                NatFiltering::EndpointIndependent
            } else {
                let d = seen_by(&c_adf, &a1).ok_or_else(|| no("filtering probe"))?;
                if reaches(&a2, d, &c_adf) {
                    NatFiltering::AddressDependent
                } else {
                    NatFiltering::AddressAndPortDependent
                }
            };
            let local = SocketAddr::new(client_ip.unwrap_or(local.ip()), local.port());
            Ok(NatBehavior {
                local,
                external: m1,
                translated: m1 != local,
                mapping,
                filtering,
            })
        };
        let r = tokio::task::spawn_blocking(job)
            .await
            .map_err(|e| Error::Io {
                context: "the NAT classification task".into(),
                source: e.into(),
            })??;
        super::artifacts::emit(
            &self.inner,
            Some(client.name()),
            "nat.classified",
            serde_json::to_value(&r).unwrap_or_default(),
        );
        Ok(r)
    }
}
