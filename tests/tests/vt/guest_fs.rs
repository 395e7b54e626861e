//! What the guest may write: the overlay over the host tree (writes stay in the guest), the
//! read-only root, the copy of a run's writes to the host, and `cargo metadata` answered from
//! the host.

use super::*;

/// Every way a guest could write to the host tree: a plain write, a write after remounting its
/// root read-write, and writes through new hostfs mounts of the host's root and of `dir`. The
/// two hostfs writes print `...-succeeded` (they must never succeed); the plain write prints
/// `plain-write-read-back:` and what the guest reads back, the remount `remount-write-done`
/// (over the overlay both land in guest memory).
fn write_attempts(victim: &Path, dir: &Path) -> String {
    format!(
        "echo in-guest > '{v}' && echo plain-write-read-back: $(cat '{v}'); \
         mount -o remount,rw / && touch /written-by-guest && echo remount-write-done; \
         mkdir -p /tmp/h && mount -t hostfs hostfs /tmp/h && touch '/tmp/h{v}' && echo hostfs-root-write-succeeded; \
         mkdir -p /tmp/m && mount -t hostfs -o '{d}' hostfs /tmp/m && touch /tmp/m/written-by-guest && echo hostfs-write-succeeded; \
         echo ok > \"$PATCHBAY_VT_RESULTS/probe\"",
        v = victim.display(),
        d = dir.display()
    )
}

/// Runs [`write_attempts`] and returns the guest's stdout and the run's warnings after
/// checking that no write reached the host and the results dir was writable.
fn run_write_attempts(opts: VtOpts, tag: &str) -> anyhow::Result<(String, Vec<String>)> {
    let dir =
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("vt-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let victim = dir.join("written-by-guest");
    let results = dir.join("results");
    // Working in `dir` makes it visible in the guest even when the checkout
    // lives under /tmp (which the guest otherwise covers with a tmpfs).
    let opts = {
        let mut o = opts;
        o.results_dir = Some(results.clone());
        o.cwd = Some(dir.clone());
        o
    };
    let out = vt::run(&argv(&["sh", "-c", &write_attempts(&victim, &dir)]), &opts)?;
    let stdout = text(&out.stdout);
    let exists = victim.exists() || Path::new("/written-by-guest").exists();
    let probe = std::fs::read_to_string(results.join("probe"));
    std::fs::remove_dir_all(&dir)?;
    assert!(
        !stdout.contains("succeeded"),
        "a host write succeeded: {stdout}\n{}",
        text(&out.stderr)
    );
    assert!(
        !exists,
        "the guest created {} on the host",
        victim.display()
    );
    assert_eq!(probe?, "ok\n", "the results dir must be writable");
    Ok((stdout, out.warnings))
}

/// Whether the run's warnings say the kernel has no overlayfs (then the test skips).
fn no_overlay(warnings: &[String]) -> bool {
    match warnings.iter().find(|w| w.contains("CONFIG_OVERLAY_FS")) {
        Some(w) => {
            skip(w);
            true
        }
        None => false,
    }
}

/// The default root: the guest writes anywhere on the host tree (reading its writes back),
/// and none of it reaches the host.
#[test]
fn host_tree_writes_stay_in_the_guest_and_results_dir_is_writable() -> anyhow::Result<()> {
    let Some((opts, _serial)) = setup() else {
        return Ok(());
    };
    let (stdout, warnings) = run_write_attempts(opts, "overlay")?;
    if no_overlay(&warnings) {
        return Ok(());
    }
    assert!(
        stdout.contains("plain-write-read-back: in-guest"),
        "the overlay took no write: {stdout}"
    );
    Ok(())
}

/// `GuestRoot::ReadOnly`: a write to the host tree fails (`EROFS`), and every way around it too.
#[test]
fn host_root_is_read_only_and_results_dir_writable() -> anyhow::Result<()> {
    let Some((opts, _serial)) = setup() else {
        return Ok(());
    };
    let opts = {
        let mut o = opts;
        o.root = vt::GuestRoot::ReadOnly;
        o
    };
    let (stdout, _) = run_write_attempts(opts, "ro")?;
    assert!(
        !stdout.contains("plain-write-read-back") && !stdout.contains("remount-write-done"),
        "a read-only root took a write: {stdout}"
    );
    Ok(())
}

/// `keep_writes`: what the command wrote on the host tree lands below the directory at its
/// own path; deletions, writes under the guest's /tmp and the host tree itself stay as they
/// were.
#[test]
fn keep_writes_copies_what_the_command_wrote() -> anyhow::Result<()> {
    let Some((opts, _serial)) = setup() else {
        return Ok(());
    };
    let dir =
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("vt-keep-{}", std::process::id()));
    let keep = dir.join("kept");
    std::fs::create_dir_all(dir.join("out"))?;
    std::fs::write(dir.join("old"), "host")?;
    let script = "mkdir -p out/sub && echo log > out/sub/test.log && ln -s test.log out/link \
                  && echo changed > old && rm -f out/../old2 && echo t > /tmp/not-kept";
    std::fs::write(dir.join("old2"), "host")?;
    let opts = {
        let mut o = opts;
        o.cwd = Some(dir.clone());
        o.keep_writes = Some(keep.clone());
        o
    };
    let out = match vt::run(&argv(&["sh", "-c", script]), &opts) {
        Err(VtError::GuestSetup { step, .. }) if step.contains("no writable overlay") => {
            std::fs::remove_dir_all(&dir)?;
            skip(&format!(
                "{step}: rebuild the kernel with `cargo xtask build-uml`"
            ));
            return Ok(());
        }
        r => r?,
    };
    let below = |p: &Path| keep.join(p.strip_prefix("/").expect("absolute"));
    let read = |p: PathBuf| std::fs::read_to_string(p).unwrap_or_default();
    let (log, old_kept) = (
        read(below(&dir.join("out/sub/test.log"))),
        read(below(&dir.join("old"))),
    );
    let link = std::fs::read_link(below(&dir.join("out/link")));
    let host = (read(dir.join("old")), read(dir.join("old2")));
    // The guest's own /tmp file; `dir` itself may be under the host's /tmp (a clone there).
    let stray = below(&dir.join("old2")).exists() || keep.join("tmp/not-kept").exists();
    let on_host = dir.join("out/sub").exists();
    std::fs::remove_dir_all(&dir)?;
    assert_eq!(out.exit_code, 0, "stderr: {}", text(&out.stderr));
    assert_eq!(log, "log\n");
    assert_eq!(old_kept, "changed\n");
    assert_eq!(link?, PathBuf::from("test.log"));
    assert_eq!(
        host,
        ("host".to_string(), "host".to_string()),
        "the host files changed"
    );
    assert!(!stray, "a deletion or a /tmp file was copied");
    assert!(!on_host, "the guest wrote to the host tree");
    Ok(())
}

/// `patchbay vt` with `CARGO` set, in a cargo project: the guest's `cargo metadata
/// --format-version 1` prints exactly what the host's prints, any other cargo call reaches the
/// real cargo, and `--no-cargo-shim` leaves the real cargo in place.
#[test]
fn cargo_metadata_is_answered_from_the_host() -> anyhow::Result<()> {
    let Some((opts, _serial)) = setup() else {
        return Ok(());
    };
    let Some(cli) = patchbay_cli() else {
        return Ok(());
    };
    let Ok(cargo) = std::env::var("CARGO") else {
        skip("CARGO is not set: run the test through cargo or nextest");
        return Ok(());
    };
    let project = Path::new(env!("CARGO_MANIFEST_DIR"));
    let host = std::process::Command::new(&cargo)
        .args(["metadata", "--format-version", "1"])
        .current_dir(project)
        .output()?;
    anyhow::ensure!(host.status.success(), "host cargo metadata failed");
    let run = |extra: &[&str]| {
        std::process::Command::new(&cli)
            .arg("vt")
            .args(extra)
            .args(["--seed", "1", "--", "sh", "-c"])
            .arg(
                "$CARGO metadata --format-version 1 > \"$PATCHBAY_VT_RESULTS/m\" && \
                 cat \"$PATCHBAY_VT_RESULTS/m\"; $CARGO --version; echo \"CARGO=$CARGO\"",
            )
            .current_dir(project)
            .env("CARGO", &cargo)
            .env("PATCHBAY_UML", opts.uml_binary.as_ref().expect("kernel"))
            .output()
    };
    let shimmed = run(&[])?;
    let out = text(&shimmed.stdout);
    assert!(shimmed.status.success(), "{out}\n{}", text(&shimmed.stderr));
    let (json, rest) = out.split_once('\n').expect("a line");
    assert_eq!(
        json.as_bytes(),
        host.stdout.trim_ascii_end(),
        "the guest's answer differs"
    );
    assert!(
        rest.starts_with("cargo "),
        "cargo --version went elsewhere: {rest}"
    );
    assert!(
        rest.contains("CARGO=") && rest.contains("cargo-shim"),
        "{rest}"
    );
    let real = run(&["--no-cargo-shim"])?;
    let out = text(&real.stdout);
    assert!(real.status.success(), "{out}\n{}", text(&real.stderr));
    assert!(out.contains(&format!("CARGO={cargo}")), "{out}");
    Ok(())
}
