//! Bad input: every class gets a clear error and leaves nothing behind.

use patchbay::native::Lab;
use patchbay_tests::*;

fn msg<T: std::fmt::Debug>(r: patchbay::Result<T>) -> String {
    r.expect_err("expected an error").to_string()
}

#[tokio::test]
async fn duplicate_names_are_rejected() -> anyhow::Result<()> {
    require_root!();
    let lab = Lab::new().await?;
    let r = lab.add_router("x").build().await?;
    let e = msg(lab.add_router("x").build().await);
    assert!(e.contains("duplicate node name \"x\""), "{e}");
    let e = msg(lab.add_device("x").iface("eth0", &r).build().await);
    assert!(e.contains("duplicate node name"), "{e}");
    assert_eq!(
        lab.node_names(),
        vec!["x".to_string()],
        "nothing half-built remains"
    );
    Ok(())
}

#[tokio::test]
async fn interface_names_must_fit_ifnamsiz() -> anyhow::Result<()> {
    require_root!();
    let lab = Lab::new().await?;
    let r = lab.add_router("r").build().await?;
    let e = msg(lab
        .add_device("d")
        .iface("a-very-long-interface", &r)
        .build()
        .await);
    assert!(
        e.contains("IFNAMSIZ") && e.contains("a-very-long-interface"),
        "{e}"
    );
    assert!(lab.device("d").is_none());
    Ok(())
}

#[tokio::test]
async fn unknown_routers_are_rejected() -> anyhow::Result<()> {
    require_root!();
    let lab = Lab::new().await?;
    let e = msg(lab.add_device("d").iface_on("eth0", "nope").build().await);
    assert!(e.contains("unknown router \"nope\""), "{e}");
    let e = msg(lab.add_router("r2").upstream_name("nope").build().await);
    assert!(e.contains("unknown router \"nope\""), "{e}");
    assert!(lab.node_names().is_empty());
    Ok(())
}

#[tokio::test]
async fn devices_need_an_interface() -> anyhow::Result<()> {
    require_root!();
    let lab = Lab::new().await?;
    let e = msg(lab.add_device("d").build().await);
    assert!(
        e.contains("has no interface") && e.contains(".iface("),
        "{e}"
    );
    Ok(())
}

#[tokio::test]
async fn address_pool_exhaustion_is_reported_before_touching_the_kernel() -> anyhow::Result<()> {
    require_root!();
    let lab = Lab::new().await?;
    let r = lab.add_router("r").build().await?;
    let mut b = lab.add_device("greedy");
    for i in 0..254 {
        b = b.iface(&format!("e{i}"), &r);
    }
    let e = msg(b.build().await);
    assert!(e.contains("address pool exhausted"), "{e}");
    assert!(lab.device("greedy").is_none());
    Ok(())
}

/// Entry point for the unprivileged child below.
#[tokio::test]
#[ignore = "helper: run unprivileged by not_root_gets_a_clear_error"]
async fn unprivileged_child() {
    if std::env::var("PATCHBAY_TEST_CHILD").is_err() {
        return;
    }
    let e = Lab::new()
        .await
        .expect_err("an unprivileged lab must fail")
        .to_string();
    println!("CHILD-ERROR: {e}");
}

#[test]
fn not_root_gets_a_clear_error() -> anyhow::Result<()> {
    require_root!();
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    // A checkout in a private directory (e.g. `mktemp -d`, mode 0700) is not
    // traversable by nobody: run a copy of this binary from a directory it
    // can reach.
    let dir = std::env::temp_dir().join(format!("patchbay-nobody-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))?;
    let exe = dir.join("lab_errors");
    std::fs::copy(std::env::current_exe()?, &exe)?;
    std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755))?;
    let out = std::process::Command::new(&exe)
        .args(["--exact", "unprivileged_child", "--ignored", "--nocapture"])
        .env("PATCHBAY_TEST_CHILD", "1")
        .current_dir(&dir)
        .uid(65534)
        .gid(65534)
        .output();
    let _ = std::fs::remove_dir_all(&dir);
    let out = out?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() && text.is_empty() {
        skip(&format!(
            "cannot run the test binary as nobody: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
        return Ok(());
    }
    assert!(text.contains("CHILD-ERROR: patchbay needs root"), "{text}");
    Ok(())
}
