//! Task handles: abort, abort on drop, blocking threads in a namespace, and
//! the exchange.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use patchbay::{native::Lab, native::TaskError};
use patchbay_tests::*;

#[tokio::test]
async fn abort_abort_on_drop_and_detach() -> anyhow::Result<()> {
    require_root!();
    let lab = Lab::new().await?;
    let r = lab.add_router("r").build().await?;
    let d = lab.add_device("d").iface("eth0", &r).build().await?;
    // The existing style still works.
    let v = d.spawn(|_| async { 41 + 1 })?.await?;
    assert_eq!(v, 42);
    let ticks = Arc::new(AtomicU32::new(0));
    let t2 = ticks.clone();
    let task = d.spawn(move |_| async move {
        loop {
            t2.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })?;
    tokio::time::sleep(Duration::from_millis(50)).await;
    task.abort();
    let e = task.await.unwrap_err();
    assert!(matches!(e, TaskError::Aborted { .. }), "{e}");
    let n = ticks.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(ticks.load(Ordering::Relaxed), n, "an aborted task stops");
    // Abort on drop.
    let t3 = ticks.clone();
    let task = d
        .spawn(move |_| async move {
            loop {
                t3.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })?
        .abort_on_drop();
    tokio::time::sleep(Duration::from_millis(30)).await;
    drop(task);
    tokio::time::sleep(Duration::from_millis(20)).await;
    let n = ticks.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(
        ticks.load(Ordering::Relaxed),
        n,
        "dropping an abort-on-drop handle stops the task"
    );
    // Default: dropping detaches.
    let t4 = ticks.clone();
    drop(d.spawn(move |_| async move {
        tokio::time::sleep(Duration::from_millis(30)).await;
        t4.store(1_000_000, Ordering::Relaxed);
    })?);
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(
        ticks.load(Ordering::Relaxed),
        1_000_000,
        "a dropped handle detaches"
    );
    Ok(())
}

#[tokio::test]
async fn spawn_thread_runs_blocking_code_in_the_namespace() -> anyhow::Result<()> {
    require_root!();
    let lab = Lab::new().await?;
    let r = lab.add_router("r").build().await?;
    let a = lab.add_device("a").iface("eth0", &r).build().await?;
    let b = lab.add_device("b").iface("eth0", &r).build().await?;
    let addr = std::net::SocketAddr::from((b.ip().unwrap(), 7070));
    let l = b.spawn_thread(move || {
        let l = std::net::TcpListener::bind(addr)?;
        let (mut s, from) = l.accept()?;
        use std::io::Write;
        s.write_all(b"hi")?;
        std::io::Result::Ok(from)
    })?;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let got = a
        .spawn_thread(move || {
            use std::io::Read;
            let mut s = std::net::TcpStream::connect(addr)?;
            let mut buf = String::new();
            s.read_to_string(&mut buf)?;
            std::io::Result::Ok(buf)
        })?
        .await??;
    assert_eq!(got, "hi");
    let from = l.await??;
    assert_eq!(
        from.ip(),
        std::net::IpAddr::V4(a.ip().unwrap()),
        "the threads ran in a's and b's namespaces"
    );
    // A panic in the thread is an error, not a hang.
    let e = a.spawn_thread(|| panic!("boom"))?.await.unwrap_err();
    assert!(e.to_string().contains("boom"), "{e}");
    Ok(())
}

#[tokio::test]
async fn the_exchange_reaches_public_routers() -> anyhow::Result<()> {
    require_root!();
    let lab = Lab::new().await?;
    let isp = lab.add_router("isp").build().await?;
    let s = lab.add_device("s").iface("eth0", &isp).build().await?;
    let refl = s.spawn_reflector((s.ip().unwrap(), 3478).into()).await?;
    let ix = lab.exchange();
    let to = refl.addr();
    let seen = ix
        .spawn(move || async move { udp_roundtrip(to, b"x", Duration::from_secs(2)).await })?
        .await??;
    let seen = String::from_utf8_lossy(&seen).into_owned();
    assert!(
        seen.starts_with(&format!("OBSERVED {}:", ix.ip())),
        "reflector said {seen:?}"
    );
    let ns_name = ix.run_sync(|| {
        std::fs::read_link("/proc/thread-self/ns/net").map(|p| p.to_string_lossy().into_owned())
    })??;
    let host = std::fs::read_link("/proc/self/ns/net")?
        .to_string_lossy()
        .into_owned();
    assert_ne!(ns_name, host, "the exchange is not the host namespace");
    Ok(())
}
