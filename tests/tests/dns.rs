//! Names in a lab with real clients: hosts entries seen by `getent`
//! through the per-node mount overlay (the host's files untouched), the
//! in-lab hickory DNS server queried by `dig` (A, AAAA, TXT) and through
//! a per-device `resolv.conf`, in real and compressed time.

use std::net::IpAddr;
use std::time::Duration;

use anyhow::{Context, Result};
use patchbay::{TimeMode, native::DnsZone, native::Lab, native::LabOpts, native::Node};
use patchbay_tests::*;

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
    Ok((
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    ))
}

#[tokio::test]
async fn hosts_entries_reach_spawned_processes_only() -> Result<()> {
    require_root!();
    skip_if!(tools_unavailable(&["getent"], XTASK_INSTALLS));
    let host_hosts = std::fs::read("/etc/hosts")?;
    let host_resolv = std::fs::read("/etc/resolv.conf").unwrap_or_default();
    let lab = Lab::with_opts(LabOpts::default().label("hosts")).await?;
    let r = lab.add_router("r").build().await?;
    let server = lab.add_device("server").iface("eth0", &r).build().await?;
    let client = lab.add_device("client").iface("eth0", &r).build().await?;
    let ip = IpAddr::V4(server.ip().context("v4")?);
    lab.dns_entry("server.lab", ip)?;
    assert_eq!(lab.resolve("SERVER.lab."), Some(ip));

    let (ok, out) = run(&client, &["getent", "hosts", "server.lab"]).await?;
    assert!(ok, "{out}");
    assert!(out.starts_with(&format!("{ip} ")), "{out}");

    // A running process sees entries added after it started.
    let mut c = tokio::process::Command::new("sh");
    c.args(["-c", "sleep 1; getent hosts late.lab"])
        .stdout(std::process::Stdio::piped());
    let child = client.spawn_command(c)?;
    lab.dns_entry("late.lab", "198.19.0.99".parse()?)?;
    let out = child.wait_with_output().await?;
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("198.19.0.99"),
        "{out:?}"
    );

    assert!(lab.dns_entry("bad name", ip).is_err());
    // The host's own files are never touched, and do not know the name.
    assert_eq!(std::fs::read("/etc/hosts")?, host_hosts);
    assert_eq!(
        std::fs::read("/etc/resolv.conf").unwrap_or_default(),
        host_resolv
    );
    let on_host = std::process::Command::new("getent")
        .args(["hosts", "server.lab"])
        .output()?;
    assert!(!on_host.status.success(), "the host resolved server.lab");
    Ok(())
}

async fn dns_server_answers(k: f64) -> Result<()> {
    let lab = Lab::with_opts(
        LabOpts::default()
            .label("dns")
            .time_mode(TimeMode::compressed(k)?),
    )
    .await?;
    let r = lab.add_router("r").build().await?;
    let dns = lab.add_device("dns").iface("eth0", &r).build().await?;
    let client = lab.add_device("client").iface("eth0", &r).build().await?;
    let other = lab.add_device("other").iface("eth0", &r).build().await?;
    let v4 = other.ip().context("v4")?;
    let v6 = other.ip6().context("v6")?;
    let server = dns
        .serve_dns(
            DnsZone::new()
                .a("other.lab", v4)?
                .aaaa("other.lab", v6)?
                .txt("other.lab", "hello from patchbay")?
                .ttl(60),
        )
        .await?;
    let at = format!("@{}", dns.ip().context("dns v4")?);
    assert_eq!(server.addrs()[0], IpAddr::V4(dns.ip().context("v4")?));
    let (ok, out) = run(
        &client,
        &["dig", "+short", "+time=2", &at, "other.lab", "A"],
    )
    .await?;
    assert!(ok && out.trim() == v4.to_string(), "A: {out}");
    let (ok, out) = run(
        &client,
        &["dig", "+short", "+time=2", &at, "other.lab", "AAAA"],
    )
    .await?;
    assert!(ok && out.trim() == v6.to_string(), "AAAA: {out}");
    let (ok, out) = run(
        &client,
        &["dig", "+short", "+time=2", &at, "other.lab", "TXT"],
    )
    .await?;
    assert!(ok && out.trim() == "\"hello from patchbay\"", "TXT: {out}");
    // TTLs are application time: served as configured, whatever k is.
    let (ok, out) = run(
        &client,
        &["dig", "+noall", "+answer", "+time=2", &at, "other.lab", "A"],
    )
    .await?;
    assert!(
        ok && out.split_whitespace().nth(1) == Some("60"),
        "TTL: {out}"
    );
    // Over IPv6 and TCP too.
    let at6 = format!("@{}", dns.ip6().context("dns v6")?);
    let (ok, out) = run(
        &client,
        &["dig", "+short", "+tcp", "+time=2", &at6, "other.lab", "A"],
    )
    .await?;
    assert!(ok && out.trim() == v4.to_string(), "A over TCP/IPv6: {out}");
    // Unknown names: NXDOMAIN.
    let (_, out) = run(&client, &["dig", "+time=2", &at, "nope.lab", "A"]).await?;
    assert!(out.contains("NXDOMAIN"), "{out}");

    // Per-device nameserver: getent and dig without @ use resolv.conf.
    client.set_nameserver(IpAddr::V6(dns.ip6().context("v6")?))?;
    let (ok, out) = run(&client, &["getent", "ahostsv4", "other.lab"]).await?;
    assert!(ok && out.contains(&v4.to_string()), "getent: {out}");
    let (ok, out) = run(&client, &["dig", "+short", "+time=2", "other.lab", "TXT"]).await?;
    assert!(
        ok && out.contains("hello from patchbay"),
        "dig via resolv.conf: {out}"
    );
    // Another node has no nameserver: lookups fail, and never reach the
    // host's resolver.
    let (ok, _) = run(&other, &["getent", "ahostsv4", "other.lab"]).await?;
    assert!(!ok, "a node without a nameserver resolved through DNS");
    server.stop();
    Ok(())
}

#[tokio::test]
async fn dns_server_answers_a_aaaa_txt_in_real_time() -> Result<()> {
    require_root!();
    skip_if!(tools_unavailable(&["dig", "getent"], XTASK_INSTALLS));
    dns_server_answers(1.0).await
}

#[tokio::test]
async fn dns_server_answers_a_aaaa_txt_in_compressed_time() -> Result<()> {
    require_root!();
    skip_if!(tools_unavailable(&["dig", "getent"], XTASK_INSTALLS));
    if let Some(why) = compression_unavailable() {
        skip(&why);
        return Ok(());
    }
    dns_server_answers(10.0).await
}
