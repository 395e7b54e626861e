//! Connectivity across routers on the real kernel stack.

use std::net::SocketAddr;
use std::time::Duration;

use patchbay::{native::Lab, native::LabOpts};
use patchbay_tests::*;

const T: Duration = Duration::from_secs(5);

#[tokio::test]
async fn udp_and_tcp_across_one_router() -> anyhow::Result<()> {
    require_root!();
    let lab = Lab::with_opts(LabOpts::default().label("basic")).await?;
    let r = lab.add_router("r1").build().await?;
    let a = lab.add_device("a").iface("eth0", &r).build().await?;
    let b = lab.add_device("b").iface("eth0", &r).build().await?;
    let bip = b.ip().expect("b has an ip");
    let bip6 = b.ip6().expect("b has an ipv6");
    start_udp_reflector(&b, SocketAddr::from(([0, 0, 0, 0], 7000))).await?;
    start_tcp_echo(&b, "[::]:7001".parse()?).await?;
    let (udp, tcp, tcp6) = a
        .spawn(move |_| async move {
            let udp = udp_roundtrip((bip, 7000).into(), b"hi", T).await?;
            let tcp = tcp_roundtrip((bip, 7001).into(), b"hello", T).await?;
            let tcp6 = tcp_roundtrip((bip6, 7001).into(), b"hello6", T).await?;
            Ok::<_, std::io::Error>((udp, tcp, tcp6))
        })?
        .await??;
    let aip = a.ip().unwrap();
    assert!(
        String::from_utf8_lossy(&udp).starts_with(&format!("hi|{aip}:")),
        "{udp:?}"
    );
    assert_eq!(tcp, b"hello");
    assert_eq!(tcp6, b"hello6");
    Ok(())
}

#[tokio::test]
async fn tcp_across_a_chain_of_two_routers() -> anyhow::Result<()> {
    require_root!();
    let lab = Lab::new().await?;
    let isp = lab.add_router("isp").build().await?;
    let home = lab.add_router("home").upstream(&isp).build().await?;
    let other = lab.add_router("other").build().await?;
    let client = lab
        .add_device("client")
        .iface("eth0", &home)
        .build()
        .await?;
    let server = lab
        .add_device("server")
        .iface("eth0", &other)
        .build()
        .await?;
    let sip = server.ip().unwrap();
    start_tcp_echo(&server, (sip, 8000).into()).await?;
    start_udp_reflector(&server, (sip, 8001).into()).await?;
    let (tcp, udp) = client
        .spawn(move |_| async move {
            let tcp = tcp_roundtrip((sip, 8000).into(), b"chain", T).await?;
            let udp = udp_roundtrip((sip, 8001).into(), b"u", T).await?;
            Ok::<_, std::io::Error>((tcp, udp))
        })?
        .await??;
    assert_eq!(tcp, b"chain");
    // No NAT yet: the server sees the client's own address.
    let cip = client.ip().unwrap();
    assert!(
        String::from_utf8_lossy(&udp).starts_with(&format!("u|{cip}:")),
        "{udp:?}"
    );
    Ok(())
}
