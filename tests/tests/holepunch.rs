//! UDP hole punching through the upstream-named NATs, as an application does it: each peer
//! learns its external endpoint from a reflector, the peers swap them, then each sends to
//! the other's endpoint until it hears the other.
//!
//! - Two `Nat::Home` routers (endpoint-independent mapping, address-and-port-dependent
//!   filtering, as upstream's `Moderate`): both orders of arrival must work, with no firewall
//!   added: 20 of 20 runs at once, 20 of 20 with one side 200 ms late. The late side's first
//!   datagrams hit the other NAT before that NAT has a flow for them; they must be dropped
//!   without taking the mapped port away from the device (upstream behaves so).
//! - Two `Nat::Corporate` routers (endpoint-dependent mapping with random ports, as
//!   upstream's `Strict` and its `Corporate` preset): the endpoint a reflector sees is not
//!   the one a peer is sent to, so punching fails, as upstream's does (`cargo xtask
//!   upstream-check` shows upstream's results side by side).
//!
//! Runs in real time here and in virtual time in the UML partition of `cargo xtask test`.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use patchbay::{native::Lab, native::Nat};
use patchbay_tests::require_root;
use tokio::net::UdpSocket;

const PUNCH_PORT: u16 = 50_000;

/// The endpoint `reflector` sees of `sock` (its reply is `OBSERVED ip:port`).
async fn observed(sock: &UdpSocket, reflector: SocketAddr) -> Result<SocketAddr> {
    let mut buf = [0u8; 128];
    for _ in 0..5 {
        sock.send_to(b"?", reflector).await?;
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

/// One peer: publish its endpoint, take the other's, wait `delay`, then send every 50 ms
/// for up to 2 s. True once the peer was heard (after five more sends, so that the peer
/// hears this side too).
async fn peer(
    refl: SocketAddr,
    mine: tokio::sync::oneshot::Sender<SocketAddr>,
    theirs: tokio::sync::oneshot::Receiver<SocketAddr>,
    delay: Duration,
) -> Result<bool> {
    let sock = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, PUNCH_PORT)).await?;
    let me = observed(&sock, refl).await?;
    mine.send(me).ok().context("the other peer is gone")?;
    let other = theirs.await?;
    tokio::time::sleep(delay).await;
    let mut buf = [0u8; 64];
    let mut heard = None;
    for i in 0..40 {
        sock.send_to(b"punch", other).await?;
        if let Ok(Ok((_, from))) =
            tokio::time::timeout(Duration::from_millis(50), sock.recv_from(&mut buf)).await
            && from == other
        {
            heard.get_or_insert(i);
        }
        if heard.is_some_and(|h| i >= h + 5) {
            return Ok(true);
        }
    }
    Ok(heard.is_some())
}

/// Whether two devices behind two routers of mode `nat` punch through, the second peer
/// starting `late` after the first.
async fn punch(nat: Nat, late: Duration) -> Result<bool> {
    let lab = Lab::new().await?;
    let public = lab.add_router("pub").build().await?;
    let n1 = lab.add_router("nat1").nat(nat).build().await?;
    let n2 = lab.add_router("nat2").nat(nat).build().await?;
    let stun = lab
        .add_device("stun")
        .iface("eth0", &public)
        .build()
        .await?;
    let refl = SocketAddr::from((stun.ip().context("stun has IPv4")?, 3478));
    let _r = stun.spawn_reflector(refl).await?;
    let a = lab.add_device("a").iface("eth0", &n1).build().await?;
    let b = lab.add_device("b").iface("eth0", &n2).build().await?;
    let (a_tx, a_rx) = tokio::sync::oneshot::channel();
    let (b_tx, b_rx) = tokio::sync::oneshot::channel();
    let ta = a.spawn(move |_| peer(refl, a_tx, b_rx, Duration::ZERO))?;
    let tb = b.spawn(move |_| peer(refl, b_tx, a_rx, late))?;
    let (ra, rb) = tokio::join!(ta, tb);
    Ok(ra?? && rb??)
}

async fn punch_runs(nat: Nat, late: Duration, runs: usize) -> Result<usize> {
    let mut ok = 0;
    for _ in 0..runs {
        ok += usize::from(punch(nat, late).await?);
    }
    println!("{nat:?}, second peer {late:?} late: {ok} of {runs} punched through");
    Ok(ok)
}

#[tokio::test]
async fn home_nats_hole_punch_at_once_20_of_20() -> Result<()> {
    require_root!();
    assert_eq!(punch_runs(Nat::Home, Duration::ZERO, 20).await?, 20);
    Ok(())
}

#[tokio::test]
async fn home_nats_hole_punch_with_one_side_200ms_late_20_of_20() -> Result<()> {
    require_root!();
    assert_eq!(
        punch_runs(Nat::Home, Duration::from_millis(200), 20).await?,
        20
    );
    Ok(())
}

/// Upstream's `Strict` (its `Corporate` preset's NAT) defeats plain hole punching: 0 of 5
/// there, 0 of 5 here.
#[tokio::test]
async fn corporate_nats_defeat_hole_punching_as_upstream_strict_does() -> Result<()> {
    require_root!();
    assert_eq!(punch_runs(Nat::Corporate, Duration::ZERO, 5).await?, 0);
    assert_eq!(
        punch_runs(Nat::Corporate, Duration::from_millis(200), 5).await?,
        0
    );
    Ok(())
}

/// The mechanism of the late case: a datagram that reaches a home NAT before its device
/// sent anything to that sender is dropped, and the device still gets its mapped port
/// towards that very sender afterwards (no conntrack entry of the router itself holds it).
#[tokio::test]
async fn an_early_datagram_does_not_take_the_mapped_port() -> Result<()> {
    require_root!();
    let lab = Lab::new().await?;
    let public = lab.add_router("pub").build().await?;
    let home = lab.add_router("home").nat(Nat::Home).build().await?;
    let stun = lab
        .add_device("stun")
        .iface("eth0", &public)
        .build()
        .await?;
    let peer = lab
        .add_device("peer")
        .iface("eth0", &public)
        .build()
        .await?;
    let dev = lab.add_device("dev").iface("eth0", &home).build().await?;
    let refl = SocketAddr::from((stun.ip().context("stun has IPv4")?, 3478));
    let _r = stun.spawn_reflector(refl).await?;
    let (sock, m) = dev
        .spawn(move |_| async move {
            let sock = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, PUNCH_PORT)).await?;
            let m = observed(&sock, refl).await?;
            anyhow::Ok((sock.into_std()?, m))
        })?
        .await??;
    // The peer sends first, from the endpoint the device will send to: unsolicited, the
    // datagram must go nowhere (not to the device, not to the router itself).
    let peer_ep = SocketAddr::from((peer.ip().context("peer has IPv4")?, 4000));
    let (sent_tx, sent_rx) = tokio::sync::oneshot::channel();
    let listener = peer.spawn(move |_| async move {
        let s = UdpSocket::bind(peer_ep).await?;
        s.send_to(b"early", m).await?;
        sent_tx.send(()).ok();
        let mut buf = [0u8; 16];
        let (_, from) = tokio::time::timeout(Duration::from_secs(3), s.recv_from(&mut buf))
            .await
            .context("the device's datagram never reached the peer")??;
        anyhow::Ok(from)
    })?;
    sent_rx.await?;
    tokio::time::sleep(Duration::from_millis(50)).await;
    dev.spawn(move |_| async move {
        let sock = UdpSocket::from_std(sock)?;
        sock.send_to(b"late", peer_ep).await?;
        anyhow::Ok(())
    })?
    .await??;
    let seen = listener.await??;
    assert_eq!(
        seen, m,
        "after an early datagram from the peer, the home NAT gave the device another external endpoint towards it"
    );
    Ok(())
}
