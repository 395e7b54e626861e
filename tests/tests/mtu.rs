//! Per-interface MTU and PMTU black holes: a large TCP upload through a
//! router with a smaller uplink MTU completes when ICMP "fragmentation
//! needed" gets through and stalls when the router drops it; iputils
//! `tracepath` reports the path MTU.

use std::process::Stdio;
use std::time::Duration;

use patchbay::{native::Device, native::Lab, native::LabOpts};
use patchbay_tests::traffic::*;
use patchbay_tests::*;

async fn tracepath(c: &Device, to: std::net::Ipv4Addr) -> anyhow::Result<String> {
    let mut cmd = tokio::process::Command::new("tracepath");
    cmd.args(["-n", "-m", "5", &to.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let out = tokio::time::timeout(
        Duration::from_secs(20),
        c.spawn_command(cmd)?.wait_with_output(),
    )
    .await??;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[tokio::test]
async fn pmtu_black_hole_stalls_uploads_and_lifting_it_lets_pmtud_work() -> anyhow::Result<()> {
    require_root!();
    skip_if!(tools_unavailable(&["tracepath"], XTASK_INSTALLS));
    let lab = Lab::with_opts(LabOpts::default().label("mtu")).await?;
    let isp = lab.add_router("isp").build().await?;
    let vpn = lab
        .add_router("vpn")
        .upstream(&isp)
        .mtu(1400)
        .block_icmp_frag_needed()
        .build()
        .await?;
    let c = lab.add_device("c").iface("eth0", &vpn).build().await?;
    let s = lab.add_device("s").iface("eth0", &isp).build().await?;
    let to = start_tcp_server(&s, 9200, Serve::Sink).await?;
    // Small transfers fit in one segment of any size and pass.
    assert!(upload(&c, to, 500, Duration::from_secs(3)).await?.is_some());
    let stalled = upload(&c, to, 2_000_000, Duration::from_secs(4)).await?;
    println!("black hole: 2 MB upload through MTU 1400 -> {stalled:?}");
    assert!(
        stalled.is_none(),
        "full-size segments vanish without ICMP feedback"
    );

    vpn.block_icmp_frag_needed(false).await?;
    let ok = upload(&c, to, 2_000_000, Duration::from_secs(10)).await?;
    println!("ICMP allowed: 2 MB upload -> {ok:?} s");
    assert!(ok.is_some(), "PMTU discovery makes the upload go through");
    let tp = tracepath(&c, s.ip().unwrap()).await?;
    println!("tracepath:\n{tp}");
    assert!(
        tp.contains("pmtu 1400"),
        "tracepath finds the path MTU: {tp}"
    );

    // Bad input: below the IPv6 minimum on a link that carries IPv6.
    let e = c.set_mtu("eth0", 1200).await.unwrap_err().to_string();
    println!("mtu 1200: {e}");
    assert!(
        e.contains("c.eth0") && e.contains("1280") && e.contains("IPv6"),
        "{e}"
    );
    let e = lab
        .add_router("tiny")
        .mtu(1000)
        .build()
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("router tiny") && e.contains("1280"), "{e}");
    Ok(())
}

#[tokio::test]
async fn device_mtu_sets_both_ends_of_the_link_and_routers_report_it() -> anyhow::Result<()> {
    require_root!();
    skip_if!(tools_unavailable(&["tracepath"], XTASK_INSTALLS));
    let lab = Lab::with_opts(LabOpts::default().label("mtu-dev")).await?;
    let isp = lab.add_router("isp").build().await?;
    let r = lab.add_router("r").upstream(&isp).build().await?;
    let c = lab.add_device("c").iface("eth0", &r).build().await?;
    let s = lab.add_device("s").iface("eth0", &isp).build().await?;
    c.set_mtu("eth0", 1300).await?;
    let tp = tracepath(&s, c.ip().unwrap()).await?;
    println!("tracepath s -> c:\n{tp}");
    assert!(tp.contains("pmtu 1300"), "{tp}");
    let to = start_tcp_server(&c, 9201, Serve::Sink).await?;
    assert!(
        upload(&s, to, 1_000_000, Duration::from_secs(10))
            .await?
            .is_some()
    );
    Ok(())
}

/// Runs `ping -M do` (don't fragment) with `size` payload bytes from `c`.
async fn ping_df(c: &Device, to: std::net::Ipv4Addr, size: u32) -> anyhow::Result<(bool, String)> {
    let mut cmd = tokio::process::Command::new("ping");
    cmd.args(["-n", "-M", "do", "-c", "1", "-W", "2", "-s"])
        .arg(size.to_string())
        .arg(to.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let out = tokio::time::timeout(
        Duration::from_secs(10),
        c.spawn_command(cmd)?.wait_with_output(),
    )
    .await??;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok((out.status.success(), text))
}

#[tokio::test]
async fn device_builder_mtu_shows_in_ping_and_tracepath() -> anyhow::Result<()> {
    require_root!();
    skip_if!(tools_unavailable(&["tracepath"], XTASK_INSTALLS));
    if !std::process::Command::new("sh")
        .args(["-c", "command -v ping"])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
    {
        skip("`ping` is not installed (apt package iputils-ping; `cargo xtask test` installs it)");
        return Ok(());
    }
    let lab = Lab::with_opts(LabOpts::default().label("mtu-builder")).await?;
    let isp = lab.add_router("isp").build().await?;
    let r = lab.add_router("r").upstream(&isp).build().await?;
    // Below the IPv6 minimum on a dual-stack LAN: refused before anything exists.
    let e = lab
        .add_device("c")
        .iface("eth0", &r)
        .mtu(1200)
        .build()
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("c.eth0") && e.contains("1280"), "{e}");
    assert!(lab.device("c").is_none());
    let c = lab
        .add_device("c")
        .iface("eth0", &r)
        .mtu(1360)
        .build()
        .await?;
    let s = lab.add_device("s").iface("eth0", &isp).build().await?;
    let to = s.ip().unwrap();
    // 1332 bytes + 8 (ICMP) + 20 (IPv4) = 1360 fits; one byte more does not
    // leave the device with DF set.
    let (ok, fits) = ping_df(&c, to, 1332).await?;
    assert!(ok, "a 1360-byte packet passes: {fits}");
    let (ok, too_big) = ping_df(&c, to, 1333).await?;
    println!("ping -M do -s 1333 from c: {}", too_big.trim());
    assert!(!ok && too_big.contains("mtu=1360"), "{too_big}");
    // The router end of the link has it too: r answers the server's
    // full-size probes with "fragmentation needed", so the PMTU is 1360.
    let tp = tracepath(&s, c.ip().unwrap()).await?;
    println!("tracepath s -> c:\n{tp}");
    assert!(tp.contains("pmtu 1360"), "{tp}");
    Ok(())
}
