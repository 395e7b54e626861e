//! Regions: inter-region links, breaking and restoring them, measured with
//! iputils `ping` (TTL for the path on every kernel, RTT where netem
//! exists; the kernel matrix runs this binary under QEMU with netem).

use std::process::Stdio;
use std::time::Duration;

use patchbay::{Error, native::Device, native::Lab, native::LabOpts, native::LinkCondition};
use patchbay_tests::*;

/// `ping -c N DST` from `node`: (replies, ttl of the last reply, avg RTT ms).
async fn ping(
    node: &Device,
    dst: std::net::Ipv4Addr,
    n: u32,
) -> anyhow::Result<(u32, Option<u8>, Option<f64>)> {
    let mut c = tokio::process::Command::new("ping");
    c.args([
        "-n",
        "-c",
        &n.to_string(),
        "-i",
        "0.2",
        "-W",
        "2",
        &dst.to_string(),
    ])
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .kill_on_drop(true);
    let out = node.spawn_command(c)?.wait_with_output().await?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let replies = text.matches(" bytes from ").count() as u32;
    let ttl = text
        .rsplit("ttl=")
        .next()
        .filter(|_| replies > 0)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok());
    // rtt min/avg/max/mdev = 80.1/80.4/81.0/0.3 ms
    let avg = text
        .split(" = ")
        .nth(1)
        .and_then(|s| s.split('/').nth(1))
        .and_then(|s| s.parse().ok());
    Ok((replies, ttl, avg))
}

struct World {
    lab: Lab,
    eu_dev: Device,
    us_dev: Device,
}

/// Regions eu, us, asia, linked pairwise with `delays` (eu–us, eu–asia,
/// asia–us; one way). `us_dev` sits behind a router placed in `us` after
/// the links exist. `Ok(None)`: netem is missing (skipped).
async fn world(label: &str, delays: [u64; 3]) -> anyhow::Result<Option<World>> {
    let lab = Lab::with_opts(LabOpts::default().label(label)).await?;
    let eu = lab.add_region("eu").await?;
    let us = lab.add_region("us").await?;
    let asia = lab.add_region("asia").await?;
    let c = |ms: u64| LinkCondition::default().delay(Duration::from_millis(ms));
    for ((a, b), ms) in [(&eu, &us), (&eu, &asia), (&asia, &us)]
        .into_iter()
        .zip(delays)
    {
        match lab.link_regions(a, b, c(ms)).await {
            Ok(()) => {}
            Err(Error::KernelFeature { feature, .. }) if ms > 0 => {
                skip(&format!(
                    "region latency needs netem, which this kernel lacks ({feature})"
                ));
                return Ok(None);
            }
            Err(e) => return Err(e.into()),
        }
    }
    let dc = lab.add_router("dc").region(&us).build().await?;
    let us_dev = lab.add_device("us-dev").iface("eth0", &dc).build().await?;
    let eu_dev = lab
        .add_device("eu-dev")
        .iface("eth0", eu.router())
        .build()
        .await?;
    Ok(Some(World {
        lab,
        eu_dev,
        us_dev,
    }))
}

#[tokio::test]
async fn region_links_reroute_when_broken_and_come_back() -> anyhow::Result<()> {
    require_root!();
    skip_if!(tools_unavailable(&["ping"], XTASK_INSTALLS));
    let Some(w) = world("regions", [0, 0, 0]).await? else {
        return Ok(());
    };
    let (eu, us) = (w.lab.region("eu").unwrap(), w.lab.region("us").unwrap());
    let asia = w.lab.region("asia").unwrap();
    let to = w.eu_dev.ip().unwrap();
    // us-dev -> dc -> region-us -> region-eu -> eu-dev: the reply's TTL
    // shows the number of routers on the way back.
    let direct = ping(&w.us_dev, to, 2).await?;
    w.lab.break_region_link(&eu, &us).await?;
    let via_asia = ping(&w.us_dev, to, 2).await?;
    // With eu–asia cut as well (no third region is intact for it), the
    // detour is gone too: nothing arrives.
    w.lab.break_region_link(&eu, &asia).await?;
    let cut = ping(&w.us_dev, to, 2).await?;
    w.lab.restore_region_link(&eu, &asia).await?;
    w.lab.restore_region_link(&eu, &us).await?;
    let back = ping(&w.us_dev, to, 2).await?;
    println!(
        "regions: direct {direct:?}, broken (via asia) {via_asia:?}, detour cut {cut:?}, restored {back:?}"
    );
    assert_eq!(direct.1, Some(61), "direct: 3 routers on the way back");
    assert_eq!(via_asia.1, Some(60), "broken: one more router (asia)");
    assert_eq!(cut.0, 0, "no path once the detour is cut too");
    assert_eq!(back.1, Some(61), "restored: direct again");

    // Bad input names both parts.
    let e = w
        .lab
        .link_regions_by_name("eu", "mars", LinkCondition::default())
        .await
        .unwrap_err()
        .to_string();
    println!("unknown region: {e}");
    assert!(
        e.contains("eu–mars") && e.contains("unknown region \"mars\""),
        "{e}"
    );
    let e = w
        .lab
        .restore_region_link(&eu, &us)
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("is not broken"), "{e}");
    Ok(())
}

#[tokio::test]
async fn timing_region_latency_is_measured_rtt() -> anyhow::Result<()> {
    require_root!();
    skip_if!(tools_unavailable(&["ping"], XTASK_INSTALLS));
    let Some(w) = world("regions-rtt", [40, 100, 120]).await? else {
        return Ok(());
    };
    let (eu, us) = (w.lab.region("eu").unwrap(), w.lab.region("us").unwrap());
    let to = w.eu_dev.ip().unwrap();
    ping(&w.us_dev, to, 1).await?; // warm-up
    let direct = ping(&w.us_dev, to, 5).await?.2.unwrap_or(f64::NAN);
    w.lab.break_region_link(&eu, &us).await?;
    let detour = ping(&w.us_dev, to, 5).await?.2.unwrap_or(f64::NAN);
    w.lab.restore_region_link(&eu, &us).await?;
    let back = ping(&w.us_dev, to, 5).await?.2.unwrap_or(f64::NAN);
    println!(
        "region RTT: eu–us direct {direct:.1} ms (want 80), via asia {detour:.1} ms (want 440), restored {back:.1} ms"
    );
    for (got, want) in [(direct, 80.0), (detour, 440.0), (back, 80.0)] {
        let r = got / want;
        assert!((0.95..1.3).contains(&r), "RTT {got:.1} ms vs {want} ms");
    }
    Ok(())
}
