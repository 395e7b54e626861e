//! A real QUIC stack (quinn) through a home NAT whose UDP mappings expire after 30 s, in
//! virtual time: quinn's own timers (idle timeout, keepalive, path validation) and the NAT's
//! conntrack timers run on the same virtual clock.
//!
//! Layout: `server` at the ISP router `isp`; `client` behind `home`, a symmetric NAT
//! (`fully-random` ports, so a new mapping gets a new port) with UDP conntrack timeouts of
//! 30 s, upstream of `isp`.
//!
//! - (a) `max_idle_timeout` 20 s, no keepalive: quinn's idle timer closes the idle connection
//!   20 s after the last packet it received (±1 ms).
//! - (b) keepalive 10 s (< 30 s): the connection survives 10 minutes of idle virtual time and
//!   the server sees one client address throughout.
//! - (c) keepalive 40 s (> 30 s), idle timeout 120 s: the mapping expires between keepalives;
//!   each keepalive arrives from a new NAT port, quinn's server migrates to the new address
//!   (after path validation) and the connection carries on.
//!
//! The host tests run each guest side in its own UML guest (skipping with a printed reason
//! when no kernel is built). `timing_quic_timers_stay_at_wall_speed_compressed` runs (a) and (b)
//! in a compressed lab (k = 20) on the host for contrast: the kernel's conntrack timeout is
//! compressed, quinn's timers are not.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use patchbay::{
    TimeMode, native::ConntrackTimeouts, native::Device, native::Lab, native::LabOpts, native::Nat,
};
use patchbay_tests::*;

const PORT: u16 = 4433;
const NAT_UDP_TIMEOUT: Duration = Duration::from_secs(30);

struct World {
    lab: Lab,
    client: Device,
    server: Device,
}

async fn world(opts: LabOpts) -> Result<World> {
    let lab = Lab::with_opts(opts).await?;
    let isp = lab.add_router("isp").build().await?;
    let timeouts = {
        let mut o = ConntrackTimeouts::default();
        o.udp = NAT_UDP_TIMEOUT;
        o.udp_stream = NAT_UDP_TIMEOUT;
        o
    };
    let home = lab
        .add_router("home")
        .upstream(&isp)
        .nat(Nat::Symmetric)
        .conntrack(timeouts)
        .build()
        .await?;
    let server = lab.add_device("server").iface("eth0", &isp).build().await?;
    let client = lab
        .add_device("client")
        .iface("eth0", &home)
        .build()
        .await?;
    Ok(World {
        lab,
        client,
        server,
    })
}

/// Server and client configs sharing a fresh self-signed certificate.
fn configs(
    idle: Duration,
    keepalive: Option<Duration>,
) -> Result<(quinn::ServerConfig, quinn::ClientConfig)> {
    let ck = rcgen::generate_simple_self_signed(vec!["server".to_string()])?;
    let cert = ck.cert.der().clone();
    let key = rustls::pki_types::PrivatePkcs8KeyDer::from(ck.key_pair.serialize_der());
    let transport = |keepalive| -> Result<Arc<quinn::TransportConfig>> {
        let mut t = quinn::TransportConfig::default();
        t.max_idle_timeout(Some(idle.try_into()?));
        t.keep_alive_interval(keepalive);
        Ok(Arc::new(t))
    };
    let mut server = quinn::ServerConfig::with_single_cert(vec![cert.clone()], key.into())?;
    server.transport_config(transport(None)?);
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert)?;
    let mut client = quinn::ClientConfig::with_root_certificates(Arc::new(roots))?;
    client.transport_config(transport(keepalive)?);
    Ok((server, client))
}

/// What the server saw of the one connection it accepted.
#[derive(Debug)]
struct ServerView {
    /// Client addresses in the order seen, with the idle time (since the first exchange) at
    /// which each was first seen (sampled every 100 ms).
    addrs: Vec<(Duration, SocketAddr)>,
    /// Messages received on bi-streams, answered with "ack:<msg>".
    messages: Vec<String>,
    /// How the connection ended, and when (since the first exchange).
    closed: (Duration, String),
}

/// Starts a quinn server on `server`; it accepts one connection, answers every bi-stream
/// and samples the client's address until the connection closes.
async fn start_server(
    server: &Device,
    config: quinn::ServerConfig,
) -> Result<impl Future<Output = Result<ServerView>>> {
    let endpoint = server
        .spawn(move |_| async move {
            quinn::Endpoint::server(config, SocketAddr::from((Ipv4Addr::UNSPECIFIED, PORT)))
        })?
        .await??;
    let task = server.spawn(move |_| async move {
        let conn = endpoint.accept().await.context("endpoint closed")?.await?;
        let start = Instant::now();
        let mut view = ServerView {
            addrs: vec![(Duration::ZERO, conn.remote_address())],
            messages: vec![],
            closed: (Duration::ZERO, String::new()),
        };
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        loop {
            tokio::select! {
                e = conn.closed() => {
                    view.closed = (start.elapsed(), e.to_string());
                    break;
                }
                s = conn.accept_bi() => {
                    let Ok((mut send, mut recv)) = s else { continue };
                    let msg = String::from_utf8(recv.read_to_end(1024).await?)?;
                    send.write_all(format!("ack:{msg}").as_bytes()).await?;
                    send.finish()?;
                    view.messages.push(msg);
                }
                _ = tick.tick() => {
                    let now = conn.remote_address();
                    if view.addrs.last().is_some_and(|(_, a)| *a != now) {
                        view.addrs.push((start.elapsed(), now));
                    }
                }
            }
        }
        endpoint.wait_idle().await;
        anyhow::Ok(view)
    })?;
    Ok(async move { task.await? })
}

/// One request/response on a fresh bi-stream.
async fn exchange(conn: &quinn::Connection, msg: &str) -> Result<String> {
    let (mut send, mut recv) = conn.open_bi().await?;
    send.write_all(msg.as_bytes()).await?;
    send.finish()?;
    Ok(String::from_utf8(recv.read_to_end(1024).await?)?)
}

/// Connects from `client` and does one exchange; returns the endpoint and connection.
async fn connect(
    server_ip: Ipv4Addr,
    config: quinn::ClientConfig,
) -> Result<(quinn::Endpoint, quinn::Connection)> {
    let mut ep = quinn::Endpoint::client(SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)))?;
    ep.set_default_client_config(config);
    let conn = ep
        .connect(SocketAddr::from((server_ip, PORT)), "server")?
        .await?;
    anyhow::ensure!(exchange(&conn, "hello").await? == "ack:hello");
    Ok((ep, conn))
}

/// Waits until no datagram has arrived for `quiet`, polling every millisecond; returns the
/// instant of the last arrival (to within the 1 ms poll).
async fn last_arrival(conn: &quinn::Connection, quiet: Duration) -> Instant {
    let mut seen = conn.stats().udp_rx.datagrams;
    let mut at = Instant::now();
    while at.elapsed() < quiet {
        tokio::time::sleep(Duration::from_millis(1)).await;
        let n = conn.stats().udp_rx.datagrams;
        if n != seen {
            seen = n;
            at = Instant::now();
        }
    }
    at
}

/// (a) on the lab the caller built: returns (client idle close after the last arrival, the
/// close reason, the server's view).
async fn idle_timeout_case(w: &World) -> Result<(Duration, String, ServerView)> {
    let (sc, cc) = configs(Duration::from_secs(20), None)?;
    let server = start_server(&w.server, sc).await?;
    let sip = w.server.ip().context("server ip")?;
    let (close_after, reason) = w
        .client
        .spawn(move |_| async move {
            let (ep, conn) = connect(sip, cc).await?;
            let last = last_arrival(&conn, Duration::from_millis(200)).await;
            let e = conn.closed().await;
            let after = last.elapsed();
            ep.wait_idle().await;
            anyhow::Ok((after, e.to_string()))
        })?
        .await??;
    let view = server.await?;
    Ok((close_after, reason, view))
}

/// (b)/(c): idles `idle` with the given keepalive, then exchanges again.
async fn keepalive_case(
    w: &World,
    idle_timeout: Duration,
    keepalive: Duration,
    idle: Duration,
) -> Result<(String, ServerView)> {
    let (sc, cc) = configs(idle_timeout, Some(keepalive))?;
    let server = start_server(&w.server, sc).await?;
    let sip = w.server.ip().context("server ip")?;
    let reply = w
        .client
        .spawn(move |_| async move {
            let (ep, conn) = connect(sip, cc).await?;
            tokio::time::sleep(idle).await;
            let reply = exchange(&conn, "after-idle").await?;
            conn.close(0u32.into(), b"done");
            ep.wait_idle().await;
            anyhow::Ok(reply)
        })?
        .await??;
    let view = server.await?;
    Ok((reply, view))
}

fn in_guest() -> bool {
    std::env::var_os("PATCHBAY_VT").is_some()
}

#[tokio::test]
#[ignore = "guest side of quic_idle_timeout_closes_at_20s_virtual"]
async fn guest_quic_idle_timeout() -> Result<()> {
    if !in_guest() {
        return Ok(());
    }
    let w = world(LabOpts::default().time_mode(TimeMode::Virtual { seed: None })).await?;
    let (after, reason, view) = idle_timeout_case(&w).await?;
    println!("QUIC-IDLE client closed {after:?} after the last arrival: {reason}; server {view:?}");
    assert!(reason.contains("timed out"), "{reason}");
    let diff = after.abs_diff(Duration::from_secs(20));
    assert!(
        diff <= Duration::from_millis(1),
        "closed {after:?} after the last packet"
    );
    Ok(())
}

#[tokio::test]
#[ignore = "guest side of quic_keepalive_10s_holds_the_mapping_for_10min"]
async fn guest_quic_keepalive_holds() -> Result<()> {
    if !in_guest() {
        return Ok(());
    }
    let w = world(LabOpts::default().time_mode(TimeMode::Virtual { seed: None })).await?;
    let idle = Duration::from_secs(600);
    let t = Instant::now();
    let (reply, view) =
        keepalive_case(&w, Duration::from_secs(20), Duration::from_secs(10), idle).await?;
    println!(
        "QUIC-KEEPALIVE-10 after {:?} virtual: reply {reply:?}; server {view:?}",
        t.elapsed()
    );
    assert_eq!(
        reply, "ack:after-idle",
        "the connection survived 10 min idle"
    );
    assert_eq!(
        view.addrs.len(),
        1,
        "one client address throughout: {:?}",
        view.addrs
    );
    assert_eq!(view.messages, ["hello", "after-idle"]);
    Ok(())
}

#[tokio::test]
#[ignore = "guest side of quic_keepalive_40s_migrates_after_the_mapping_expires"]
async fn guest_quic_mapping_expires() -> Result<()> {
    if !in_guest() {
        return Ok(());
    }
    let w = world(LabOpts::default().time_mode(TimeMode::Virtual { seed: None })).await?;
    let (reply, view) = keepalive_case(
        &w,
        Duration::from_secs(120),
        Duration::from_secs(40),
        Duration::from_secs(130),
    )
    .await?;
    println!("QUIC-KEEPALIVE-40 reply {reply:?}; server {view:?}");
    assert_eq!(reply, "ack:after-idle", "the connection carries on");
    // Keepalives at 40, 80 and 120 s each find the 30 s mapping gone: three new ports.
    assert_eq!(view.addrs.len(), 4, "{:?}", view.addrs);
    for (i, (at, addr)) in view.addrs.iter().enumerate().skip(1) {
        let expect = Duration::from_secs(40 * i as u64);
        assert!(
            at.abs_diff(expect) <= Duration::from_millis(200),
            "address {addr} first seen at {at:?}, keepalive due at {expect:?}"
        );
        assert_eq!(addr.ip(), view.addrs[0].1.ip(), "same NAT, new port");
        assert_ne!(addr.port(), view.addrs[i - 1].1.port());
    }
    Ok(())
}

/// Runs one guest-side test of this binary in its own UML guest and checks it passed.
fn in_vt(test: &str) -> Result<()> {
    require_root!();
    if let Err(e) = patchbay::vt::find_uml_binary() {
        skip(&format!(
            "no UML kernel ({e}); build it with `cargo xtask build-uml`"
        ));
        return Ok(());
    }
    let exe = std::env::current_exe()?;
    let argv = [
        exe.as_os_str(),
        "--exact".as_ref(),
        test.as_ref(),
        "--ignored".as_ref(),
        "--nocapture".as_ref(),
    ]
    .map(std::ffi::OsString::from);
    let opts = {
        let mut o = patchbay::vt::VtOpts::default();
        o.guard = Duration::from_secs(240);
        o.cwd = Some("/".into());
        o
    };
    let out = patchbay::vt::run(&argv, &opts)?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!(
        "{test}: exit {}, virtual {:.3} s, wall {:.2} s (boot to command {:.2} s)\n{stdout}",
        out.exit_code,
        out.virtual_elapsed.unwrap_or_default().as_secs_f64(),
        out.wall.as_secs_f64(),
        out.boot_to_command_wall.unwrap_or_default().as_secs_f64(),
    );
    assert_eq!(
        out.exit_code,
        0,
        "guest test failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("1 passed"), "{stdout}");
    Ok(())
}

#[test]
fn quic_idle_timeout_closes_at_20s_virtual() -> Result<()> {
    in_vt("guest_quic_idle_timeout")
}

#[test]
fn quic_keepalive_10s_holds_the_mapping_for_10min() -> Result<()> {
    in_vt("guest_quic_keepalive_holds")
}

#[test]
fn quic_keepalive_40s_migrates_after_the_mapping_expires() -> Result<()> {
    in_vt("guest_quic_mapping_expires")
}

/// The contrast: at k = 20 the NAT's 30 s conntrack timeout takes 1.5 s of wall time, but
/// quinn's timers run at wall speed. (a) takes 20 s of wall time (400 s on the lab clock),
/// and (b)'s 10 s keepalive no longer keeps the (now 1.5 s) mapping: the server sees a new
/// address.
#[tokio::test]
async fn timing_quic_timers_stay_at_wall_speed_compressed() -> Result<()> {
    require_root!();
    let w = world(LabOpts::default().time_mode(TimeMode::compressed(20.0)?)).await?;
    let clock = w.lab.clock();
    let t = Instant::now();
    let v0 = clock.now();
    let (after, reason, _) = idle_timeout_case(&w).await?;
    println!(
        "compressed k=20: idle close {after:?} wall after the last packet ({reason}); lab clock {:?} for the whole case, wall {:?}",
        clock.now() - v0,
        t.elapsed()
    );
    assert!(reason.contains("timed out"), "{reason}");
    // Compressed, it would close after 1 s; wall-clock polling on a loaded host blurs the
    // last arrival by a few ms.
    assert!(
        after >= Duration::from_secs(19),
        "quinn's idle timer is not compressed: {after:?}"
    );
    let w = world(LabOpts::default().time_mode(TimeMode::compressed(20.0)?)).await?;
    let (reply, view) = keepalive_case(
        &w,
        Duration::from_secs(20),
        Duration::from_secs(10),
        Duration::from_secs(12),
    )
    .await?;
    println!(
        "compressed k=20, keepalive 10 s for 12 s wall: reply {reply:?}, server saw {:?}",
        view.addrs
    );
    assert!(
        view.addrs.len() >= 2,
        "the 1.5 s (wall) mapping expired between 10 s (wall) keepalives: {:?}",
        view.addrs
    );
    Ok(())
}
