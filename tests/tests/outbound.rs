//! Outbound firewall policies (upstream's Corporate and CaptivePortal
//! presets) on real nftables, checked with real clients: curl for TCP,
//! netcat for UDP.

use std::net::SocketAddr;
use std::process::Stdio;

use patchbay::{
    native::Firewall, native::FirewallAction, native::Lab, native::LabOpts, native::Node,
    native::OutboundPolicy, native::PortPolicy,
};
use patchbay_tests::*;

/// A minimal HTTP server on `node` at `addr`: answers every request with
/// `hello from PORT`.
async fn start_http(node: &Node, addr: SocketAddr) -> anyhow::Result<()> {
    let l = node
        .spawn(move |_| async move { std::net::TcpListener::bind(addr) })?
        .await??;
    node.spawn(move |_| async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        l.set_nonblocking(true)?;
        let l = tokio::net::TcpListener::from_std(l)?;
        loop {
            let (mut s, _) = l.accept().await?;
            tokio::task::spawn_local(async move {
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
                let body = format!("hello from {}\n", addr.port());
                let resp = format!(
                    "HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                );
                let _ = s.write_all(resp.as_bytes()).await;
            });
        }
        #[allow(unreachable_code)]
        Ok::<(), std::io::Error>(())
    })?;
    Ok(())
}

/// Runs a command in `node`; returns (exit code, stdout).
async fn run(node: &Node, argv: &[&str]) -> anyhow::Result<(i32, String)> {
    let mut c = tokio::process::Command::new(argv[0]);
    c.args(&argv[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let out = node.spawn_command(c)?.wait_with_output().await?;
    Ok((
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    ))
}

async fn curl(node: &Node, ip: std::net::Ipv4Addr, port: u16) -> anyhow::Result<(i32, String)> {
    let url = format!("http://{ip}:{port}/");
    run(
        node,
        &[
            "curl",
            "-sS",
            "--connect-timeout",
            "1",
            "--max-time",
            "3",
            &url,
        ],
    )
    .await
}

/// `echo ping | nc -u -w1 IP PORT`: the reflector's answer, or empty.
async fn nc_udp(node: &Node, ip: std::net::Ipv4Addr, port: u16) -> anyhow::Result<String> {
    let cmd = format!("echo ping | nc -u -w1 {ip} {port}");
    Ok(run(node, &["sh", "-c", &cmd]).await?.1)
}

#[tokio::test]
async fn corporate_router_lets_out_only_web_and_dns() -> anyhow::Result<()> {
    require_root!();
    skip_if!(tools_unavailable(&["curl", "nc"], XTASK_INSTALLS));
    let lab = Lab::with_opts(LabOpts::default().label("fw-corp")).await?;
    let isp = lab.add_router("isp").build().await?;
    let corp = lab
        .add_router("corp")
        .upstream(&isp)
        .firewall(Firewall::corporate().action(FirewallAction::Reject))
        .build()
        .await?;
    let s = lab.add_device("s").iface("eth0", &isp).build().await?;
    let c = lab.add_device("c").iface("eth0", &corp).build().await?;
    let sip = s.ip().unwrap();
    for port in [80, 443, 8080] {
        start_http(&s, (sip, port).into()).await?;
    }
    for port in [53, 5000] {
        start_udp_reflector(&s, (sip, port).into()).await?;
    }

    let (code, out) = curl(&c, sip, 80).await?;
    println!("corporate: curl :80 -> exit {code}, {out:?}");
    assert_eq!((code, out.as_str()), (0, "hello from 80\n"));
    let (code, _) = curl(&c, sip, 443).await?;
    assert_eq!(code, 0, "TCP 443 is allowed");
    let (code, out) = curl(&c, sip, 8080).await?;
    println!("corporate: curl :8080 -> exit {code}, {out:?}");
    assert_eq!(code, 7, "curl exit 7 = connection refused (TCP reset)");
    let dns = nc_udp(&c, sip, 53).await?;
    let other = nc_udp(&c, sip, 5000).await?;
    println!("corporate: nc -u :53 -> {dns:?}, nc -u :5000 -> {other:?}");
    assert!(dns.starts_with("ping"), "UDP 53 passes: {dns:?}");
    assert!(other.is_empty(), "UDP 5000 is blocked: {other:?}");
    // ICMP is not filtered.
    let (code, _) = run(&c, &["ping", "-c1", "-W1", &sip.to_string()]).await?;
    assert_eq!(code, 0, "ping passes a corporate firewall");

    // Drop instead of reject: curl times out instead of being refused.
    corp.set_firewall(Firewall::corporate()).await?;
    let (code, _) = curl(&c, sip, 8080).await?;
    println!("corporate (drop): curl :8080 -> exit {code}");
    assert_eq!(code, 28, "curl exit 28 = timeout");

    // Captive portal: any TCP, UDP only to 53.
    corp.set_firewall(Firewall::captive_portal()).await?;
    let (code, _) = curl(&c, sip, 8080).await?;
    assert_eq!(code, 0, "captive portal lets TCP 8080 out");
    assert!(nc_udp(&c, sip, 53).await?.starts_with("ping"));
    let other = nc_udp(&c, sip, 5000).await?;
    println!("captive portal: curl :8080 ok, nc -u :5000 -> {other:?}");
    assert!(other.is_empty(), "captive portal blocks UDP 5000");

    // Lifting the policy lets everything out again.
    corp.set_firewall(Firewall::default()).await?;
    assert!(nc_udp(&c, sip, 5000).await?.starts_with("ping"));
    Ok(())
}

#[tokio::test]
async fn device_outbound_policy_refuses_at_the_sender() -> anyhow::Result<()> {
    require_root!();
    skip_if!(tools_unavailable(&["curl", "nc"], XTASK_INSTALLS));
    let lab = Lab::with_opts(LabOpts::default().label("fw-out-dev")).await?;
    let r = lab.add_router("r").build().await?;
    let s = lab.add_device("s").iface("eth0", &r).build().await?;
    let c = lab.add_device("c").iface("eth0", &r).build().await?;
    let sip = s.ip().unwrap();
    for port in [80, 8080] {
        start_http(&s, (sip, port).into()).await?;
    }
    let policy = OutboundPolicy {
        tcp: PortPolicy::allow([80]),
        udp: PortPolicy::BlockAll,
    };
    c.set_firewall(
        Firewall::default()
            .outbound(policy)
            .action(FirewallAction::Reject),
    )
    .await?;
    let (code, _) = curl(&c, sip, 80).await?;
    assert_eq!(code, 0, "TCP 80 allowed");
    let t0 = std::time::Instant::now();
    let (code, _) = curl(&c, sip, 8080).await?;
    let took = t0.elapsed();
    println!("device outbound: curl :8080 -> exit {code} after {took:?}");
    assert_eq!(code, 7, "refused");
    // Inbound is untouched by an outbound-only policy.
    start_http(&c, (c.ip().unwrap(), 8080).into()).await?;
    let (code, _) = curl(&s, c.ip().unwrap(), 8080).await?;
    assert_eq!(code, 0, "inbound still open");
    Ok(())
}
