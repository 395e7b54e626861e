//! `patchbay vt` shows the command's output while the guest runs, not all at the end.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Instant;

use super::*;

/// The guest prints a line, computes for a while (wall time; the virtual clock stands still),
/// then prints another. Read from `patchbay vt`'s stdout, the first line must arrive well
/// before the second: at least 40 % of what the same computation takes on the host. Copied
/// only at the end, both arrive within a millisecond. Every line arrives once.
#[test]
fn timing_vt_echoes_output_while_the_guest_runs() -> anyhow::Result<()> {
    let Some((opts, _serial)) = setup() else {
        return Ok(());
    };
    let Some(cli) = patchbay_cli() else {
        return Ok(());
    };
    let Some(python) = host_binary("python3") else {
        skip("no python3 on the host (apt-get install python3)");
        return Ok(());
    };
    let work = "sum(range(40_000_000))";
    let t = Instant::now();
    anyhow::ensure!(Command::new(&python).args(["-c", work]).status()?.success());
    let on_host = t.elapsed();
    let mut child = Command::new(&cli)
        .args(["vt", "--seed", "1", "--", "sh", "-c"])
        .arg(format!(
            "echo first; {} -c '{work}'; echo second",
            python.display()
        ))
        .env("PATCHBAY_UML", opts.uml_binary.as_ref().expect("kernel"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let stdout = child.stdout.take().expect("piped");
    let mut lines = Vec::new();
    for line in BufReader::new(stdout).lines() {
        lines.push((line?, Instant::now()));
    }
    anyhow::ensure!(child.wait()?.success(), "patchbay vt failed: {lines:?}");
    let text: Vec<&str> = lines.iter().map(|(l, _)| l.as_str()).collect();
    assert_eq!(text, ["first", "second"], "each line once, in order");
    let gap = lines[1].1 - lines[0].1;
    println!("host computation {on_host:?}; between the guest's two lines {gap:?}");
    assert!(
        gap.as_secs_f64() >= 0.4 * on_host.as_secs_f64(),
        "the first line arrived only {gap:?} before the second (the computation takes {on_host:?}): output is not echoed while the guest runs"
    );
    Ok(())
}
