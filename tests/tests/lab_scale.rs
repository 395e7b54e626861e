//! Larger labs and several labs at once in one process.

use std::time::Duration;

use patchbay::native::Lab;
use patchbay_tests::*;

const T: Duration = Duration::from_secs(5);

#[tokio::test]
async fn twenty_devices_reach_one_server() -> anyhow::Result<()> {
    require_root!();
    let lab = Lab::new().await?;
    let r = lab.add_router("r").build().await?;
    let server = lab.add_device("server").iface("eth0", &r).build().await?;
    let sip = server.ip().unwrap();
    start_udp_reflector(&server, (sip, 9000).into()).await?;
    let mut devs = vec![];
    for i in 0..20 {
        devs.push(
            lab.add_device(&format!("d{i}"))
                .iface("eth0", &r)
                .build()
                .await?,
        );
    }
    let mut tasks = vec![];
    for d in &devs {
        tasks.push(d.spawn(move |_| udp_roundtrip((sip, 9000).into(), b"ping", T))?);
    }
    for (d, t) in devs.iter().zip(tasks) {
        let reply = t.await??;
        let text = String::from_utf8_lossy(&reply).into_owned();
        assert_eq!(
            text,
            format!(
                "ping|{}:{}",
                d.ip().unwrap(),
                text.rsplit(':').next().unwrap()
            )
        );
    }
    let ips: std::collections::BTreeSet<_> = devs.iter().map(|d| d.ip().unwrap()).collect();
    assert_eq!(ips.len(), 20, "addresses are unique");
    Ok(())
}

#[tokio::test]
async fn two_labs_in_one_process_are_isolated() -> anyhow::Result<()> {
    require_root!();
    let (l1, l2) = (Lab::new().await?, Lab::new().await?);
    assert_ne!(l1.id(), l2.id());
    let mut servers = vec![];
    for lab in [&l1, &l2] {
        let r = lab.add_router("r").build().await?;
        let s = lab.add_device("s").iface("eth0", &r).build().await?;
        let c = lab.add_device("c").iface("eth0", &r).build().await?;
        servers.push((s, c));
    }
    // Same topology, same addresses, separate worlds.
    assert_eq!(servers[0].0.ip(), servers[1].0.ip());
    let ip = servers[0].0.ip().unwrap();
    start_tcp_echo(&servers[0].0, (ip, 7000).into()).await?;
    let ok = servers[0]
        .1
        .spawn(move |_| tcp_roundtrip((ip, 7000).into(), b"1", T))?
        .await?;
    assert!(ok.is_ok(), "lab 1 reaches its own server");
    let other = servers[1]
        .1
        .spawn(move |_| tcp_roundtrip((ip, 7000).into(), b"2", T))?
        .await?;
    let e = other.expect_err("lab 2 has no listener, so its connect must be refused");
    assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused, "{e}");
    Ok(())
}

#[tokio::test]
async fn lab_traffic_cannot_reach_the_host() -> anyhow::Result<()> {
    require_root!();
    let lab = Lab::new().await?;
    let r = lab.add_router("r").build().await?;
    let d = lab.add_device("d").iface("eth0", &r).build().await?;
    // A listener in the host namespace on an address the lab might try.
    let host = std::net::TcpListener::bind("127.0.0.1:0")?;
    let port = host.local_addr()?.port();
    let res = d
        .spawn(move |_| async move {
            let lo =
                tcp_roundtrip(([127, 0, 0, 1], port).into(), b"x", Duration::from_secs(1)).await;
            // TEST-NET-1 (RFC 5737) stands for "anything outside the lab":
            // the exchange root has no route there, so it answers unreachable.
            let out = tokio::net::TcpStream::connect(("192.0.2.1", 9)).await;
            (lo.is_err(), out.err().map(|e| e.raw_os_error()))
        })?
        .await?;
    assert!(res.0, "the device's loopback is its own, not the host's");
    assert_eq!(
        res.1,
        Some(Some(libc::ENETUNREACH)),
        "no route out of the lab"
    );
    Ok(())
}

/// The host namespace's neighbour entries (all families), as `dst dev`.
fn host_neighbours() -> anyhow::Result<std::collections::BTreeSet<String>> {
    Ok(ip_here(&["neigh", "show"])?
        .lines()
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .collect())
}

/// Neighbour entries in every namespace of the lab: (IPv4, IPv6).
fn lab_neighbours(lab: &Lab) -> anyhow::Result<(usize, usize)> {
    let (mut v4, mut v6) = (0, 0);
    for name in lab.node_names() {
        let node = lab.node(&name).unwrap();
        for l in ip_in(&node, &["neigh", "show"])?.lines() {
            match l.split_whitespace().next() {
                Some(dst) if dst.contains(':') => v6 += 1,
                Some(_) => v4 += 1,
                None => {}
            }
        }
    }
    Ok((v4, v6))
}

/// Builds `routers` routers on the exchange and `devices` devices spread
/// over them, with default options; checks that pre-warming stays within
/// its budget, that TCP works across the lab, and that the host's own
/// neighbour table gained nothing.
async fn big_lab(routers: usize, devices: usize) -> anyhow::Result<()> {
    let host_before = host_neighbours()?;
    let t = std::time::Instant::now();
    let lab = Lab::new().await?;
    let mut rs = vec![];
    for i in 0..routers {
        rs.push(lab.add_router(&format!("r{i}")).build().await?);
    }
    let mut ds = vec![];
    for i in 0..devices {
        ds.push(
            lab.add_device(&format!("d{i}"))
                .iface("eth0", &rs[i % routers])
                .build()
                .await?,
        );
    }
    let built = t.elapsed();
    let (v4, v6) = lab_neighbours(&lab)?;
    println!(
        "{routers} routers + {devices} devices built in {built:?}; pre-warmed neighbour entries in the lab: {v4} IPv4, {v6} IPv6"
    );
    assert!(v4 > 0, "pre-warming is on by default");
    assert!(
        v4 <= 256 && v6 <= 256,
        "pre-warming stays within its per-lab budget of 256 entries per family: {v4} IPv4, {v6} IPv6"
    );
    // Across the lab: the first device to the last (another router's LAN
    // when there are several routers).
    let (client, server) = (&ds[0], &ds[devices - 1]);
    let sip = server.ip().unwrap();
    start_tcp_echo(server, (sip, 7000).into()).await?;
    let got = client
        .spawn(move |_| tcp_roundtrip((sip, 7000).into(), b"across the lab", T))?
        .await??;
    assert_eq!(got, b"across the lab");
    drop((rs, ds));
    drop(lab);
    let host_after = host_neighbours()?;
    let added: Vec<_> = host_after.difference(&host_before).collect();
    assert!(
        added.is_empty(),
        "the host's neighbour table gained entries: {added:?}"
    );
    Ok(())
}

#[tokio::test]
async fn one_router_and_a_hundred_devices_with_default_options() -> anyhow::Result<()> {
    require_root!();
    big_lab(1, 100).await
}

#[tokio::test]
async fn ten_routers_and_two_hundred_devices_with_default_options() -> anyhow::Result<()> {
    require_root!();
    big_lab(10, 200).await
}
