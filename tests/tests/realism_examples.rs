//! The network-realism examples (`examples/regions.toml`, `presets.toml`,
//! `mtu.toml`), one test per file, run through the lab-file runner: each
//! checks itself with expect-output / expect-exit steps. They need no
//! netem (region latency is measured in `regions.rs` in the kernel matrix).

use std::path::Path;

use patchbay::labfile::{LabFile, RunOverrides, run};
use patchbay_tests::*;

async fn run_example(name: &str, tools: &[&str]) -> anyhow::Result<()> {
    require_root!();
    skip_if!(tools_unavailable(tools, XTASK_INSTALLS));
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples")
        .join(name);
    let text = std::fs::read_to_string(&path)?;
    let file = LabFile::parse(&text, &path)?;
    let report = run(&file, RunOverrides::default(), |s| {
        println!(
            "step {} {} {:?}: ok={} {}",
            s.step,
            s.kind,
            s.command,
            s.ok,
            s.error.clone().unwrap_or_default()
        )
    })
    .await?;
    assert!(report.ok, "{name} failed: {report:#?}");
    Ok(())
}

#[tokio::test]
async fn example_regions() -> anyhow::Result<()> {
    run_example("regions.toml", &["ping"]).await
}

#[tokio::test]
async fn example_presets() -> anyhow::Result<()> {
    run_example("presets.toml", &["curl", "python3", "nc"]).await
}

#[tokio::test]
async fn example_mtu() -> anyhow::Result<()> {
    run_example("mtu.toml", &["tracepath", "nc", "timeout"]).await
}
