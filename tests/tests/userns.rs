//! Labs without root: nobody's copy of this binary enters a user namespace
//! from an ELF constructor (before libtest's and tokio's threads), then
//! builds a lab with NAT and a firewall and sends traffic through it.

use std::net::SocketAddr;
use std::time::Duration;

use patchbay::{TimeMode, native::Firewall, native::Lab, native::LabOpts, native::Nat};
use patchbay_tests::*;

/// Runs before `main`, while the process has one thread: the only moment
/// `unshare(CLONE_NEWUSER)` works. Only the child asks for it.
extern "C" fn enter_userns() {
    if std::env::var_os("PATCHBAY_USERNS_CHILD").is_some()
        && let Err(e) = patchbay::native::init_userns()
    {
        eprintln!("USERNS-INIT-ERROR: {e}");
    }
}

#[used]
#[unsafe(link_section = ".init_array")]
static ENTER_USERNS: extern "C" fn() = enter_userns;

/// The unprivileged side, started by `unprivileged_lab_with_nat_and_firewall`.
#[tokio::test]
#[ignore = "helper: run as nobody by unprivileged_lab_with_nat_and_firewall"]
async fn unprivileged_child() -> anyhow::Result<()> {
    if std::env::var_os("PATCHBAY_USERNS_CHILD").is_none() {
        return Ok(());
    }
    let lab = Lab::with_opts(LabOpts::default().label("userns")).await?;
    let isp = lab.add_router("isp").build().await?;
    let home = lab
        .add_router("home")
        .upstream(&isp)
        .nat(Nat::PortRestricted)
        .firewall(Firewall::block_inbound())
        .build()
        .await?;
    let server = lab.add_device("server").iface("eth0", &isp).build().await?;
    let client = lab
        .add_device("client")
        .iface("eth0", &home)
        .build()
        .await?;
    let refl = server
        .spawn_reflector((server.ip().unwrap(), 3478).into())
        .await?;
    let seen = client.probe_udp_mapping(refl.addr()).await?;
    assert_eq!(seen.ip(), std::net::IpAddr::V4(home.ip().unwrap()), "NATed");
    // The firewall drops what nobody asked for: a connection to the home router's public
    // address times out (without the firewall the router would refuse it at once). The
    // client's private address is not routed outside its LAN at all.
    let to = SocketAddr::from((home.ip().unwrap(), 9));
    let blocked = server
        .spawn(move |_| async move {
            tokio::time::timeout(
                Duration::from_millis(800),
                tokio::net::TcpStream::connect(to),
            )
            .await
            .is_err()
        })?
        .await?;
    assert!(blocked, "inbound connection attempts are dropped");
    // Compression at k > 1 without BPF: a clear error, or the sysctl-only plan.
    let e = Lab::with_opts(LabOpts::default().time_mode(TimeMode::compressed(10.0)?))
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("sysctl_only"), "{e}");
    let k10 = Lab::with_opts(
        LabOpts::default()
            .time_mode(TimeMode::compressed(10.0)?)
            .sysctl_only(true),
    )
    .await?;
    let r = k10.add_router("r").build().await?;
    assert_eq!(
        r.sysctl("net/ipv4/tcp_fin_timeout")?,
        "6",
        "the sysctl-only plan scales 60 s to 6 s"
    );
    println!("USERNS-OK uid={} mapped={seen}", nix::unistd::getuid());
    Ok(())
}

#[test]
fn unprivileged_lab_with_nat_and_firewall() -> anyhow::Result<()> {
    require_root!();
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    let max: u64 = std::fs::read_to_string("/proc/sys/user/max_user_namespaces")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
    if max == 0 {
        skip("user namespaces are disabled (max_user_namespaces = 0)");
        return Ok(());
    }
    let dir = std::env::temp_dir().join(format!("patchbay-userns-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))?;
    let exe = dir.join("userns");
    std::fs::copy(std::env::current_exe()?, &exe)?;
    std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755))?;
    let out = std::process::Command::new(&exe)
        .args(["--exact", "unprivileged_child", "--ignored", "--nocapture"])
        .env("PATCHBAY_USERNS_CHILD", "1")
        .current_dir(&dir)
        .uid(65534)
        .gid(65534)
        .output();
    let _ = std::fs::remove_dir_all(&dir);
    let out = out?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}\n{stderr}");
    if stderr.contains("USERNS-INIT-ERROR") && stderr.contains("unshare") {
        skip(&format!("no unprivileged user namespaces here: {stderr}"));
        return Ok(());
    }
    assert!(
        out.status.success() && stdout.contains("USERNS-OK uid=0"),
        "child failed"
    );
    Ok(())
}
