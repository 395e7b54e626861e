//! NAT, neighbour and application-timer scenarios.

use std::net::{SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::trace::{Recorder, Trace, on_port};
use super::{
    LabCtx, ScenarioError, Size, budget, errno_name, io_err, pair, scenario_lab, settle, unexpected,
};
use crate::{native::ConntrackTimeouts, Direction, native::Nat};

const UDP_PORT: u16 = 7200;
const TCP_PORT: u16 = 7300;

/// Sends `payload` to the reflector and returns the address it saw, trying
/// up to three times (a fresh link may lose its first packet).
async fn mapped(sock: &tokio::net::UdpSocket, to: SocketAddr) -> std::io::Result<SocketAddrV4> {
    let mut buf = [0u8; 256];
    for _ in 0..3 {
        sock.send_to(b"m", to).await?;
        if let Ok(r) = tokio::time::timeout(Duration::from_millis(300), sock.recv(&mut buf)).await {
            let n = r?;
            let text = String::from_utf8_lossy(&buf[..n]).into_owned();
            let seen = text.rsplit('|').next().unwrap_or_default();
            return seen
                .parse()
                .map_err(|e| std::io::Error::other(format!("bad reflector reply {text:?}: {e}")));
        }
    }
    Err(std::io::Error::from_raw_os_error(libc::ETIMEDOUT))
}

/// `nat-udp-expiry`: three UDP flows through a symmetric NAT (a new random
/// port per conntrack entry) go idle at t = 0; each talks again once, at
/// 0.5, 0.9 and 1.1 × the mapping timeout. The first two must keep their
/// port, the last must get a new one.
pub(crate) async fn nat_udp_expiry(k: f64, size: Size) -> Result<Trace, ScenarioError> {
    const SC: &str = "nat-udp-expiry";
    let timeout = match size {
        Size::Default => Duration::from_secs(10),
        Size::Realistic => Duration::from_secs(300),
    };
    let lab = scenario_lab(SC, k, |o| o).await?;
    let public = lab
        .add_router("pub")
        .build()
        .await
        .lab(SC, "building router pub")?;
    let ct = ConntrackTimeouts {
        udp: timeout,
        udp_stream: timeout,
        ..Default::default()
    };
    let home = lab
        .add_router("home")
        .nat(Nat::Symmetric)
        .conntrack(ct)
        .build()
        .await
        .lab(SC, "building the NAT router home")?;
    let c = lab
        .add_device("c")
        .iface("eth0", &home)
        .build()
        .await
        .lab(SC, "building c")?;
    let refl = lab
        .add_device("refl")
        .iface("eth0", &public)
        .build()
        .await
        .lab(SC, "building refl")?;
    let rip = refl
        .ip()
        .ok_or_else(|| unexpected(SC, "refl has no IPv4 address"))?;
    let sock = refl
        .spawn(move |_| async move { std::net::UdpSocket::bind((rip, UDP_PORT)) })
        .lab(SC, "starting the reflector")?
        .await
        .lab(SC, "starting the reflector")?
        .map_err(|e| io_err(SC, "binding the reflector", e))?;
    refl.spawn(move |_| async move {
        sock.set_nonblocking(true)?;
        let sock = tokio::net::UdpSocket::from_std(sock)?;
        let mut buf = vec![0u8; 2048];
        loop {
            let (n, from) = sock.recv_from(&mut buf).await?;
            let mut reply = buf[..n].to_vec();
            reply.extend_from_slice(format!("|{from}").as_bytes());
            sock.send_to(&reply, from).await?;
        }
        #[allow(unreachable_code)]
        Ok::<_, std::io::Error>(())
    })
    .lab(SC, "starting the reflector")?;
    let to = SocketAddr::from((rip, UDP_PORT));
    // Warm the path with a throwaway flow before the start mark.
    c.spawn(move |_| async move {
        let s = tokio::net::UdpSocket::bind("0.0.0.0:0").await?;
        mapped(&s, to).await
    })
    .lab(SC, "warming the path")?
    .await
    .lab(SC, "warming the path")?
    .map_err(|e| io_err(SC, "warming the path through the NAT", e))?;

    let rec = Arc::new(Recorder::new(SC, lab.clock()));
    let (t0, clock) = (rec.start(), lab.clock());
    let r = rec.clone();
    let limit = budget(k, 1.1 * timeout.as_secs_f64());
    let out = c
        .spawn(move |_| async move {
            let run = async {
                let fracs = [0.5, 0.9, 1.1];
                let mut socks = vec![];
                for (i, _) in fracs.iter().enumerate() {
                    let s = tokio::net::UdpSocket::bind("0.0.0.0:0").await?;
                    let m = mapped(&s, to).await?;
                    r.observe("c", "nat:mapped", format!("flow {i}: {m}"));
                    socks.push((s, m));
                }
                for (i, ((s, m), f)) in socks.iter().zip(fracs).enumerate() {
                    let at = t0 + clock.to_wall(timeout.mul_f64(f));
                    tokio::time::sleep_until(at.into()).await;
                    let sent = Instant::now();
                    let again = mapped(s, to).await?;
                    let kind = if again.port() == m.port() {
                        "nat:same-port"
                    } else {
                        "nat:new-port"
                    };
                    r.observe_at(
                        sent,
                        "c",
                        kind,
                        format!("flow {i} after {f} x timeout: {m} -> {again}"),
                    );
                }
                Ok::<_, std::io::Error>(())
            };
            tokio::time::timeout(limit, run).await
        })
        .lab(SC, "running the client")?
        .await
        .lab(SC, "running the client")?;
    finish_udp(&rec, out, SC, "talking through the NAT").await
}

/// `neighbor-failure`: UDP to a same-link peer that has vanished (its
/// interface drops everything, ARP included) and that the sender has no
/// neighbour entry for: each send starts ARP resolution, which fails after
/// `mcast_solicit` probes spaced by `retrans_time_ms` (the entry goes
/// INCOMPLETE -> FAILED) and reports `EHOSTUNREACH` on the connected socket
/// (through `IP_RECVERR`). Repeated for several cycles: a send to a FAILED
/// entry starts resolution again.
pub(crate) async fn neighbor_failure(k: f64, size: Size) -> Result<Trace, ScenarioError> {
    const SC: &str = "neighbor-failure";
    let (mcast_solicit, cycles) = match size {
        Size::Default => (Some(5), 3), // 3 x 5 s
        Size::Realistic => (None, 10), // kernel default mcast_solicit 3: 10 x 3 s
    };
    let lab = scenario_lab(SC, k, |o| o.prewarm_neighbors(false)).await?;
    let (c, s, ip) = pair(&lab, SC).await?;
    if let Some(n) = mcast_solicit {
        c.set_sysctl("net/ipv4/neigh/eth0/mcast_solicit", &n.to_string())
            .lab(SC, "setting mcast_solicit (a count, not scaled)")?;
    }
    let _fault = s
        .blackhole("eth0", Direction::In)
        .await
        .lab(SC, "blackholing s")?;
    let rec = Arc::new(Recorder::new(SC, lab.clock()));
    let r = rec.clone();
    let limit = budget(k, 8.0 * cycles as f64);
    let out = c
        .spawn(move |_| async move {
            let run = async {
                let sock = tokio::net::UdpSocket::bind("0.0.0.0:0").await?;
                // Host unreachable is a soft error for UDP: without
                // IP_RECVERR the kernel does not report it to the socket.
                nix::sys::socket::setsockopt(&sock, nix::sys::socket::sockopt::Ipv4RecvErr, &true)
                    .map_err(|e| std::io::Error::from_raw_os_error(e as i32))?;
                sock.connect((ip, UDP_PORT)).await?;
                let mut buf = [0u8; 64];
                for i in 0..cycles {
                    sock.send(b"n").await?;
                    match sock.recv(&mut buf).await {
                        Ok(_) => return Err(std::io::Error::other("a reply from a vanished peer")),
                        Err(e) => r.observe(
                            "c",
                            &format!("recv:{}", errno_name(&e)),
                            format!("cycle {i}: {e}"),
                        ),
                    }
                }
                Ok::<_, std::io::Error>(())
            };
            tokio::time::timeout(limit, run).await
        })
        .lab(SC, "running the client")?
        .await
        .lab(SC, "running the client")?;
    finish_udp(&rec, out, SC, "sending to the vanished peer").await
}

/// `app-timer`: an application connect loop with its own per-attempt
/// timeout (2.5 s) and backoff (1.5 s, then 3 s) on the lab clock, against a
/// blackholed peer that is healed at 6.6 s (requested then; removing the nft
/// table takes tens of ms of wall time, i.e. up to seconds of virtual time at
/// high k, so the request leaves 2.9 s of virtual slack before the third
/// attempt); kernel SYN retransmissions happen inside each attempt. Same
/// size in both variants: the application sets it. The trace ends at
/// `app:connected` and holds only the client's events.
pub(crate) async fn app_timer(k: f64, _size: Size) -> Result<Trace, ScenarioError> {
    const SC: &str = "app-timer";
    let lab = scenario_lab(SC, k, |o| o).await?;
    let (c, s, ip) = pair(&lab, SC).await?;
    // Something listens once the peer heals.
    let l = s
        .spawn(move |_| async move { std::net::TcpListener::bind((ip, TCP_PORT)) })
        .lab(SC, "starting the server")?
        .await
        .lab(SC, "starting the server")?
        .map_err(|e| io_err(SC, "binding the server", e))?;
    let fault = s
        .blackhole("eth0", Direction::In)
        .await
        .lab(SC, "blackholing s")?;
    let rec = Arc::new(Recorder::new(SC, lab.clock()));
    let (t0, clock) = (rec.start(), lab.clock());
    let r = rec.clone();
    let v = Duration::from_secs_f64;
    let limit = budget(k, 12.0);
    let client = c
        .spawn(move |_| async move {
            let attempt_timeout = v(2.5);
            // Start of each attempt, in virtual time since the start mark.
            for start in [v(0.0), v(4.0), v(9.5)] {
                tokio::time::sleep_until((t0 + clock.to_wall(start)).into()).await;
                r.observe_intent("c", "app:attempt", format!("at {start:?}"));
                let conn = tokio::net::TcpStream::connect((ip, TCP_PORT));
                match tokio::time::timeout(clock.to_wall(attempt_timeout), conn).await {
                    Ok(Ok(st)) => {
                        r.observe("c", "app:connected", "");
                        drop(st);
                        return Ok(());
                    }
                    Ok(Err(e)) => {
                        r.observe("c", &format!("app:error:{}", errno_name(&e)), e.to_string())
                    }
                    Err(_) => r.observe("c", "app:attempt-timeout", "lab-clock timeout"),
                }
            }
            Err(std::io::Error::from_raw_os_error(libc::ETIMEDOUT))
        })
        .lab(SC, "running the client")?;
    tokio::time::sleep_until((t0 + clock.to_wall(v(6.6))).into()).await;
    rec.observe_intent("s", "app:heal-requested", "");
    fault.heal().await.lab(SC, "healing s")?;
    let out = tokio::time::timeout(limit, client).await;
    drop(l);
    match out {
        Err(_) => rec.observe("c", "timeout", "no outcome within the scenario budget"),
        Ok(r) => {
            if let Err(e) = r.lab(SC, "running the client")? {
                rec.observe(
                    "c",
                    &format!("app:gave-up:{}", errno_name(&e)),
                    e.to_string(),
                );
            }
        }
    }
    settle().await;
    let mut t = rec.finish(&lab.tcp_events(), |e| e.node == "c" && on_port(e, TCP_PORT));
    if let Some(i) = t.events.iter().position(|e| e.kind == "app:connected") {
        t.events.truncate(i + 1);
    }
    Ok(t)
}

/// The common end of the UDP scenarios: a client that ran out of its budget
/// is an observation, an I/O error fails the scenario, and the trace (own
/// observations only) is finished once late events have settled.
async fn finish_udp(
    rec: &Recorder,
    out: Result<std::io::Result<()>, tokio::time::error::Elapsed>,
    sc: &'static str,
    what: &str,
) -> Result<Trace, ScenarioError> {
    match out {
        Err(_) => rec.observe("c", "timeout", "no outcome within the scenario budget"),
        Ok(Err(e)) => return Err(io_err(sc, what, e)),
        Ok(Ok(())) => {}
    }
    settle().await;
    Ok(rec.finish(&[], |_| false))
}
