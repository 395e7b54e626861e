//! NAT behaviour, measured through upstream patchbay 0.7's API, so that the same scenarios run
//! on upstream itself and on patchbay-compat (`cargo xtask upstream-check` builds both and
//! compares). Prints one JSON object per scenario and NAT to stdout.
//!
//! Every scenario is real UDP traffic between devices of a fresh lab:
//! - `mapping`: one internal socket probes two reflectors on two public hosts: the same
//!   external endpoint for both (endpoint-independent) or not; whether the port is kept.
//! - `filtering`: after the internal socket sent to host 1, datagrams from another port of
//!   host 1 and from host 2 are sent to its mapping; which arrive.
//! - `probe`: `Device::probe_udp_mapping` towards the two reflectors (upstream's helper).
//! - `holepunch`: two devices behind two NATs of the same kind learn their mappings from a
//!   reflector and send to each other, at once or with one 200 ms late; both must hear the
//!   other. Repeated.
//! - `hairpin`: a device sends to the mapping of its LAN neighbour.
//! - `timeouts`: the router's conntrack timeouts (sysctls).
//!
//! Reflectors listen on UDP port 53, which every preset's firewall lets out.

#[cfg(feature = "ours")]
extern crate ours as patchbay;
#[cfg(feature = "upstream")]
extern crate upstream as patchbay;

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use patchbay::{Device, Lab, Nat, NodeId, RouterPreset};
use serde_json::{Value, json};
use tokio::net::UdpSocket;

const REFLECTOR_PORT: u16 = 53;
const OTHER_PORT: u16 = 5353;
const PUNCH_PORT: u16 = 50_000;

#[derive(Clone, Copy)]
enum Subject {
    Nat(&'static str, Nat),
    Preset(&'static str, RouterPreset),
}

impl Subject {
    fn name(self) -> &'static str {
        match self {
            Subject::Nat(n, _) | Subject::Preset(n, _) => n,
        }
    }

    async fn router(self, lab: &Lab, name: &str) -> Result<patchbay::Router> {
        let b = lab.add_router(name);
        let b = match self {
            Subject::Nat(_, nat) => b.nat(nat),
            Subject::Preset(_, p) => b.preset(p),
        };
        b.build().await
    }
}

const SUBJECTS: &[Subject] = &[
    Subject::Nat("open", Nat::Open),
    Subject::Nat("moderate", Nat::Moderate),
    Subject::Nat("strict", Nat::Strict),
    Subject::Preset("preset-home", RouterPreset::Home),
    Subject::Preset("preset-isp-cgnat", RouterPreset::IspCgnat),
    Subject::Preset("preset-isp-cgnat-symmetric", RouterPreset::IspCgnatSymmetric),
    Subject::Preset("preset-corporate", RouterPreset::Corporate),
    Subject::Preset("preset-cloud", RouterPreset::Cloud),
];

fn main() -> Result<()> {
    patchbay::init_userns()?;
    let runs: usize = std::env::args()
        .nth(1)
        .map(|a| a.parse())
        .transpose()
        .context("the argument is the number of hole-punching runs")?
        .unwrap_or(3);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        for s in SUBJECTS {
            for (scenario, r) in [
                ("mapping", mapping(*s).await),
                ("hairpin", hairpin(*s).await),
                ("timeouts", timeouts(*s).await),
                ("holepunch", holepunch(*s, runs).await),
            ] {
                let value = r.unwrap_or_else(|e| json!({ "error": format!("{e:#}") }));
                let line = json!({ "subject": s.name(), "scenario": scenario, "result": value });
                println!("{line}");
            }
        }
        Ok(())
    })
}

/// A public router with two hosts running reflectors, and a NAT router of the subject.
struct World {
    lab: Lab,
    nat: NodeId,
    hosts: [Device; 2],
}

async fn world(s: Subject) -> Result<World> {
    let lab = Lab::new().await?;
    let public = lab.add_router("pub").build().await?;
    let nat = s.router(&lab, "nat").await?;
    let h1 = lab.add_device("h1").uplink(public.id()).build().await?;
    let h2 = lab.add_device("h2").uplink(public.id()).build().await?;
    Ok(World {
        nat: nat.id(),
        lab,
        hosts: [h1, h2],
    })
}

fn addr(d: &Device, port: u16) -> Result<SocketAddr> {
    Ok((d.ip().context("host without IPv4")?, port).into())
}

/// Asks a reflector what it sees of `sock`.
async fn observed(sock: &UdpSocket, reflector: SocketAddr) -> Result<SocketAddr> {
    let mut buf = [0u8; 128];
    for _ in 0..5 {
        sock.send_to(b"PROBE", reflector).await?;
        if let Ok(Ok((n, from))) =
            tokio::time::timeout(Duration::from_millis(400), sock.recv_from(&mut buf)).await
            && from == reflector
        {
            let t = std::str::from_utf8(&buf[..n])?;
            return Ok(t.strip_prefix("OBSERVED ").unwrap_or(t).parse()?);
        }
    }
    bail!("no answer from the reflector {reflector}")
}

async fn mapping(s: Subject) -> Result<Value> {
    let w = world(s).await?;
    let [h1, h2] = &w.hosts;
    let _r1 = h1.spawn_reflector(addr(h1, REFLECTOR_PORT)?).await?;
    let _r2 = h2.spawn_reflector(addr(h2, REFLECTOR_PORT)?).await?;
    let (refl1, refl2) = (addr(h1, REFLECTOR_PORT)?, addr(h2, REFLECTOR_PORT)?);
    let client = w.lab.add_device("client").uplink(w.nat).build().await?;
    // Upstream's helper, from its fixed probe port.
    let p1 = client.probe_udp_mapping(refl1);
    let p2 = client.probe_udp_mapping(refl2);
    let probe = match (p1, p2) {
        (Ok(a), Ok(b)) => json!({ "same_external": a == b, "same_ip": a.ip() == b.ip() }),
        (a, b) => json!({ "error": format!("{:?} / {:?}", a.err(), b.err()) }),
    };
    // Our own socket: mapping and filtering.
    let (tx, rx) = tokio::sync::oneshot::channel();
    let (go_tx, go_rx) = tokio::sync::oneshot::channel::<()>();
    let task = client.spawn(async move |_| -> Result<Value> {
        let sock = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 45_678)).await?;
        let m1 = observed(&sock, refl1).await?;
        let m2 = observed(&sock, refl2).await?;
        // Filtering: a second socket that has contacted host 1 only.
        let filt = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 45_679)).await?;
        let _ = tx.send(observed(&filt, refl1).await?);
        let _ = go_rx.await;
        let mut from = vec![];
        let mut buf = [0u8; 64];
        while let Ok(Ok((_, a))) =
            tokio::time::timeout(Duration::from_millis(600), filt.recv_from(&mut buf)).await
        {
            from.push(a);
        }
        Ok(json!({
            "endpoint_independent": m1 == m2,
            "port_preserved": m1.port() == 45_678,
            "heard": from.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
        }))
    })?;
    let m1 = rx.await.context("the client found no mapping")?;
    // Datagrams to the filtering socket's mapping: from another port of host 1 (contacted),
    // then from host 2 (never contacted by that socket).
    for (h, port) in [(h1, OTHER_PORT), (h2, OTHER_PORT)] {
        let src = addr(h, port)?;
        h.spawn(async move |_| -> Result<()> {
            let s = UdpSocket::bind(src).await?;
            for _ in 0..3 {
                s.send_to(b"unsolicited", m1).await?;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Ok(())
        })?
        .await??;
    }
    let _ = go_tx.send(());
    let mut v = task.await??;
    let heard: Vec<String> = serde_json::from_value(v["heard"].take())?;
    let got = |h: &Device| -> Result<bool> {
        let a = addr(h, OTHER_PORT)?.to_string();
        Ok(heard.contains(&a))
    };
    v["from_other_port_same_host"] = json!(got(h1)?);
    v["from_other_port_other_host"] = json!(got(h2)?);
    v["probe_udp_mapping"] = probe;
    v.as_object_mut().map(|o| o.remove("heard"));
    Ok(v)
}

async fn hairpin(s: Subject) -> Result<Value> {
    let w = world(s).await?;
    let h1 = &w.hosts[0];
    let refl = addr(h1, REFLECTOR_PORT)?;
    let _r = h1.spawn_reflector(refl).await?;
    let c1 = w.lab.add_device("c1").uplink(w.nat).build().await?;
    let c2 = w.lab.add_device("c2").uplink(w.nat).build().await?;
    let (tx, rx) = tokio::sync::oneshot::channel();
    let listener = c2.spawn(async move |_| -> Result<bool> {
        let sock = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, PUNCH_PORT)).await?;
        let _ = tx.send(observed(&sock, refl).await?);
        let mut buf = [0u8; 64];
        let r = tokio::time::timeout(Duration::from_millis(800), sock.recv_from(&mut buf)).await;
        Ok(matches!(r, Ok(Ok((_, _)))))
    })?;
    let m2 = rx.await.context("c2 found no mapping")?;
    c1.spawn(async move |_| -> Result<()> {
        let s = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).await?;
        for _ in 0..3 {
            s.send_to(b"hairpin", m2).await?;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    })?
    .await??;
    Ok(json!({ "hairpin": listener.await?? }))
}

async fn timeouts(s: Subject) -> Result<Value> {
    let w = world(s).await?;
    let r = w.lab.router(w.nat).context("the NAT router")?;
    let read = |k: &'static str| {
        r.run_sync(move || {
            let p = format!("/proc/sys/net/netfilter/{k}");
            Ok(std::fs::read_to_string(p)?.trim().to_string())
        })
    };
    Ok(json!({
        "udp": read("nf_conntrack_udp_timeout")?,
        "udp_stream": read("nf_conntrack_udp_timeout_stream")?,
        "tcp_established": read("nf_conntrack_tcp_timeout_established")?,
    }))
}

async fn holepunch(s: Subject, runs: usize) -> Result<Value> {
    let mut out = serde_json::Map::new();
    for (name, delay) in [("simultaneous", 0), ("staggered_200ms", 200)] {
        let mut ok = 0;
        for _ in 0..runs {
            if punch_once(s, Duration::from_millis(delay)).await? {
                ok += 1;
            }
        }
        out.insert(name.into(), json!(format!("{ok}/{runs}")));
    }
    Ok(Value::Object(out))
}

async fn punch_once(s: Subject, delay_b: Duration) -> Result<bool> {
    let lab = Lab::new().await?;
    let public = lab.add_router("pub").build().await?;
    let n1 = s.router(&lab, "nat1").await?;
    let n2 = s.router(&lab, "nat2").await?;
    let h = lab.add_device("h").uplink(public.id()).build().await?;
    let refl = addr(&h, REFLECTOR_PORT)?;
    let _r = h.spawn_reflector(refl).await?;
    let a = lab.add_device("a").uplink(n1.id()).build().await?;
    let b = lab.add_device("b").uplink(n2.id()).build().await?;
    let (a_map_tx, a_map_rx) = tokio::sync::oneshot::channel();
    let (b_map_tx, b_map_rx) = tokio::sync::oneshot::channel();
    let ta = a.spawn(async move |_| punch(refl, a_map_tx, b_map_rx, Duration::ZERO).await)?;
    let tb = b.spawn(async move |_| punch(refl, b_map_tx, a_map_rx, delay_b).await)?;
    let (ra, rb) = tokio::join!(ta, tb);
    Ok(ra?? && rb??)
}

/// One side of a hole punch: learn the mapping, tell it, learn the peer's, then send to it
/// every 50 ms for up to 2 s; true once a datagram from the peer arrived (and it has sent
/// 5 more, so that the peer hears this side too).
async fn punch(
    refl: SocketAddr,
    mine: tokio::sync::oneshot::Sender<SocketAddr>,
    peer: tokio::sync::oneshot::Receiver<SocketAddr>,
    delay: Duration,
) -> Result<bool> {
    let sock = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, PUNCH_PORT)).await?;
    let _ = mine.send(observed(&sock, refl).await?);
    let peer = peer.await?;
    tokio::time::sleep(delay).await;
    let mut buf = [0u8; 64];
    let mut heard_at = None;
    for i in 0..40 {
        sock.send_to(b"punch", peer).await?;
        if let Ok(Ok((_, from))) =
            tokio::time::timeout(Duration::from_millis(50), sock.recv_from(&mut buf)).await
            && from == peer
            && heard_at.is_none()
        {
            heard_at = Some(i);
        }
        if heard_at.is_some_and(|h| i >= h + 5) {
            return Ok(true);
        }
    }
    Ok(heard_at.is_some())
}
