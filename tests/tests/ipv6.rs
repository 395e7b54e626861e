//! IPv6 on real kernels with real clients: address-family modes per router
//! (`ping -6`, `ping -4`), link-local addresses, NAT66 masquerade, NPTv6 and
//! NAT64 + DNS64 (`curl` from an IPv6-only device to an IPv4-only server,
//! through tayga and hickory).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use anyhow::{Context, Result};
use patchbay::{IpSupport, NatV6Mode, native::DnsZone, native::Lab, native::LabOpts, native::Node};
use patchbay_tests::*;

/// Runs `argv` in `node`; returns (success, stdout + stderr).
async fn run(node: &Node, argv: &[&str]) -> Result<(bool, String)> {
    let mut c = tokio::process::Command::new(argv[0]);
    c.args(&argv[1..])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let out = tokio::time::timeout(
        Duration::from_secs(30),
        node.spawn_command(c)?.wait_with_output(),
    )
    .await
    .context("command timed out")??;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok((out.status.success(), text))
}

/// A TCP server on `node` that answers each connection with the peer's
/// address and closes (HTTP/1.0 shaped, for curl).
async fn start_whoami(node: &Node, port: u16) -> Result<()> {
    let l = node
        .spawn(move |_| async move {
            tokio::net::TcpListener::bind(SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, port)))
                .await
        })?
        .await??;
    let _detached = node.spawn(move |_| async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        while let Ok((mut s, peer)) = l.accept().await {
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf).await;
            let ip = match peer.ip() {
                IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
                v4 => v4,
            };
            let body = format!("peer={ip}\n");
            let msg = format!(
                "HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
            let _ = s.write_all(msg.as_bytes()).await;
        }
    })?;
    Ok(())
}

#[tokio::test]
async fn ip_modes_give_each_lan_only_its_families() -> Result<()> {
    require_root!();
    skip_if!(tools_unavailable(&["ping"], XTASK_INSTALLS));
    let lab = Lab::with_opts(LabOpts::default().label("ipmodes")).await?;
    let dual = lab.add_router("dual").build().await?;
    let v4 = lab
        .add_router("v4")
        .ip_support(IpSupport::V4Only)
        .build()
        .await?;
    let v6 = lab
        .add_router("v6")
        .ip_support(IpSupport::V6Only)
        .build()
        .await?;
    let server = lab
        .add_device("server")
        .iface("eth0", &dual)
        .build()
        .await?;
    let a = lab.add_device("a").iface("eth0", &v4).build().await?;
    let b = lab.add_device("b").iface("eth0", &v6).build().await?;
    assert!(a.ip().is_some() && a.ip6().is_none(), "{:?}", a.ifaces());
    assert!(b.ip().is_none() && b.ip6().is_some(), "{:?}", b.ifaces());
    assert_eq!(v6.ip_support()?, IpSupport::V6Only);
    let s4 = server.ip().context("v4")?.to_string();
    let s6 = server.ip6().context("v6")?.to_string();

    let (ok, out) = run(&b, &["ping", "-6", "-c", "1", "-W", "5", &s6]).await?;
    assert!(ok, "ping -6 from the v6-only device: {out}");
    let (ok, out) = run(&a, &["ping", "-4", "-c", "1", "-W", "5", &s4]).await?;
    assert!(ok, "ping -4 from the v4-only device: {out}");
    let (ok, out) = run(&b, &["ping", "-4", "-c", "1", "-W", "1", &s4]).await?;
    assert!(!ok, "the v6-only device must have no IPv4 route: {out}");
    let (ok, out) = run(&a, &["ping", "-6", "-c", "1", "-W", "1", &s6]).await?;
    assert!(!ok, "the v4-only device must have no IPv6 route: {out}");
    Ok(())
}

#[tokio::test]
async fn link_local_addresses_answer_ping() -> Result<()> {
    require_root!();
    skip_if!(tools_unavailable(&["ping"], XTASK_INSTALLS));
    let lab = Lab::with_opts(LabOpts::default().label("ll6")).await?;
    // Link-local addresses exist even on an IPv4-only LAN.
    let r = lab
        .add_router("r")
        .ip_support(IpSupport::V4Only)
        .build()
        .await?;
    let a = lab.add_device("a").iface("eth0", &r).build().await?;
    let b = lab.add_device("b").iface("eth0", &r).build().await?;
    let ll = b.iface("eth0").context("eth0")?.ll6();
    assert!(ll.is_unicast_link_local(), "{ll}");
    let target = format!("{ll}%eth0");
    let (ok, out) = run(&a, &["ping", "-6", "-c", "1", "-W", "5", &target]).await?;
    assert!(ok, "ping -6 {target}: {out}");
    let (_, shown) = run(&b, &["ip", "-6", "addr", "show", "dev", "eth0"]).await?;
    assert!(shown.contains(&ll.to_string()), "{ll} not in: {shown}");
    Ok(())
}

#[tokio::test]
async fn masquerade_and_nptv6_rewrite_ipv6_sources() -> Result<()> {
    require_root!();
    skip_if!(tools_unavailable(&["curl"], XTASK_INSTALLS));
    let lab = Lab::with_opts(LabOpts::default().label("nat66")).await?;
    let public = lab.add_router("pub").build().await?;
    let masq = lab
        .add_router("masq")
        .nat_v6(NatV6Mode::Masquerade)
        .build()
        .await?;
    let npt = lab
        .add_router("npt")
        .nat_v6(NatV6Mode::Nptv6)
        .build()
        .await?;
    let server = lab
        .add_device("server")
        .iface("eth0", &public)
        .build()
        .await?;
    let m = lab.add_device("m").iface("eth0", &masq).build().await?;
    let n = lab.add_device("n").iface("eth0", &npt).build().await?;
    start_whoami(&server, 8080).await?;
    let url = format!("http://[{}]:8080/", server.ip6().context("v6")?);

    let m6 = m.ip6().context("m v6")?;
    assert_eq!(m6.segments()[0], 0xfd00, "masqueraded LANs use ULA: {m6}");
    let (ok, out) = run(&m, &["curl", "-sS", "--max-time", "10", &url]).await?;
    assert!(ok, "{out}");
    assert_eq!(out.trim(), format!("peer={}", masq.ip6().context("wan")?));

    let n6 = n.ip6().context("n v6")?;
    let ext = npt.nptv6_external(n6).context("external")?;
    assert_eq!(ext.segments()[4..], n6.segments()[4..], "1:1 host part");
    let (ok, out) = run(&n, &["curl", "-sS", "--max-time", "10", &url]).await?;
    assert!(ok, "{out}");
    assert_eq!(out.trim(), format!("peer={ext}"));
    // NPTv6 is bidirectional: the server reaches the device at `ext`.
    start_whoami(&n, 8081).await?;
    let back = format!("http://[{ext}]:8081/");
    let (ok, out) = run(&server, &["curl", "-sS", "--max-time", "10", &back]).await?;
    assert!(ok, "inbound through NPTv6: {out}");
    assert_eq!(out.trim(), format!("peer={}", server.ip6().context("v6")?));
    // Masquerade hides the LAN: no route leads to it from outside.
    let (ok, _) = run(
        &server,
        &[
            "curl",
            "-sS",
            "--max-time",
            "2",
            &format!("http://[{m6}]:1/"),
        ],
    )
    .await?;
    assert!(!ok);
    Ok(())
}

#[tokio::test]
async fn v6_only_device_reaches_v4_server_through_nat64_and_dns64() -> Result<()> {
    require_root!();
    skip_if!(tools_unavailable(
        &["curl", "tayga", "getent"],
        XTASK_INSTALLS
    ));
    let lab = Lab::with_opts(LabOpts::default().label("nat64")).await?;
    let isp = lab.add_router("isp").build().await?;
    let v4net = lab
        .add_router("v4net")
        .ip_support(IpSupport::V4Only)
        .build()
        .await?;
    let carrier = lab
        .add_router("carrier")
        .ip_support(IpSupport::V6Only)
        .nat_v6(NatV6Mode::Nat64)
        .build()
        .await?;
    let server = lab
        .add_device("server")
        .iface("eth0", &v4net)
        .build()
        .await?;
    let resolver = lab
        .add_device("resolver")
        .iface("eth0", &isp)
        .build()
        .await?;
    let phone = lab
        .add_device("phone")
        .iface("eth0", &carrier)
        .build()
        .await?;
    assert!(phone.ip().is_none());
    let s4 = server.ip().context("server v4")?;
    start_whoami(&server, 8080).await?;
    resolver
        .serve_dns(DnsZone::new().a("server.lab", s4)?.dns64(true))
        .await?;
    phone.set_nameserver(IpAddr::V6(resolver.ip6().context("resolver v6")?))?;

    let (ok, out) = run(&phone, &["getent", "ahosts", "server.lab"]).await?;
    if !ok {
        let r6 = resolver.ip6().context("v6")?.to_string();
        let mut diag = String::new();
        for argv in [
            vec!["cat", "/etc/resolv.conf"],
            vec!["ping", "-6", "-c", "1", "-W", "2", r6.as_str()],
            vec!["dig", "+time=2", "+tries=1", "server.lab", "AAAA"],
            vec!["ip", "-6", "route"],
        ] {
            diag.push_str(&format!("$ {argv:?}\n{}\n", run(&phone, &argv).await?.1));
        }
        panic!("getent ahosts server.lab failed: {out}\n{diag}");
    }
    let synth = patchbay::native::nat64_embed(s4).to_string();
    assert!(out.contains(&synth), "DNS64 answer {synth} not in: {out}");
    let (ok, out) = run(
        &phone,
        &[
            "curl",
            "-sS",
            "-6",
            "--max-time",
            "10",
            "http://server.lab:8080/",
        ],
    )
    .await?;
    if !ok {
        let mut diag = String::new();
        let s4s = s4.to_string();
        for argv in [
            vec!["ip", "addr"],
            vec!["ip", "route"],
            vec!["ip", "-6", "route"],
            vec!["nft", "list", "ruleset"],
            vec!["ping", "-c", "1", "-W", "2", s4s.as_str()],
            vec![
                "sh",
                "-c",
                "ps -eo pid,args | grep [t]ayga; cat /tmp/patchbay-*/tayga-carrier.log",
            ],
        ] {
            diag.push_str(&format!("$ {argv:?}\n{}\n", run(&carrier, &argv).await?.1));
        }
        let synth6 = synth.clone();
        diag.push_str(
            &run(&phone, &["ping", "-6", "-c", "1", "-W", "2", &synth6])
                .await?
                .1,
        );
        panic!("curl through NAT64: {out}\n{diag}");
    }
    // The IPv4 server sees the carrier's IPv4 uplink address.
    assert_eq!(
        out.trim(),
        format!("peer={}", carrier.ip().context("carrier v4 uplink")?)
    );
    Ok(())
}

#[tokio::test]
async fn impossible_ip_plans_name_both_parts() -> Result<()> {
    require_root!();
    let lab = Lab::with_opts(LabOpts::default().label("ipbad")).await?;
    let e = lab
        .add_router("c")
        .ip_support(IpSupport::V4Only)
        .nat_v6(NatV6Mode::Nat64)
        .build()
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("nat64") && e.contains("v4-only"), "{e}");
    let v6 = lab
        .add_router("v6")
        .ip_support(IpSupport::V6Only)
        .build()
        .await?;
    let e = lab
        .add_router("home")
        .upstream(&v6)
        .build()
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("home") && e.contains("router v6"), "{e}");
    let e = lab
        .add_router("c2")
        .upstream(&v6)
        .ip_support(IpSupport::V6Only)
        .nat_v6(NatV6Mode::Nat64)
        .build()
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("c2") && e.contains("router v6"), "{e}");
    Ok(())
}
