//! `patchbay vt` as an unprivileged host user (nobody), through a user namespace.

use super::*;

/// Entries directly in the shared temp directories that belong to `uid`.
fn owned_entries(uid: u32) -> std::collections::BTreeSet<PathBuf> {
    use std::os::unix::fs::MetadataExt;
    let mut out = std::collections::BTreeSet::new();
    for d in ["/tmp", "/var/tmp", "/dev/shm"] {
        // A missing directory holds nothing.
        let Ok(rd) = std::fs::read_dir(d) else {
            continue;
        };
        for e in rd.flatten() {
            if e.metadata().is_ok_and(|m| m.uid() == uid) {
                out.insert(e.path());
            }
        }
    }
    out
}

/// Host pids whose real uid is `uid`.
fn processes_of(uid: u32) -> Vec<i32> {
    let mut pids = Vec::new();
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return pids;
    };
    for e in rd.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        // Exited meanwhile: not a leftover.
        let Ok(status) = std::fs::read_to_string(e.path().join("status")) else {
            continue;
        };
        let real = status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|v| v.split_whitespace().next()?.parse::<u32>().ok());
        if real == Some(uid) {
            pids.push(pid);
        }
    }
    pids
}

const NOBODY: u32 = 65534;

/// A 0755 directory with copies of the CLI and the UML kernel that `nobody` can run (a checkout
/// under /root is not reachable for it), removed on drop.
struct NobodyKit {
    dir: PathBuf,
    cli: PathBuf,
    uml: PathBuf,
}

impl NobodyKit {
    fn new(tag: &str, uml: &Path, cli: &Path) -> anyhow::Result<Self> {
        use std::os::unix::fs::PermissionsExt;
        let dir =
            std::env::temp_dir().join(format!("patchbay-vt-{tag}-kit-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))?;
        let (c, u) = (dir.join("patchbay"), dir.join("linux"));
        std::fs::copy(cli, &c)?;
        std::fs::copy(uml, &u)?;
        for f in [&c, &u] {
            std::fs::set_permissions(f, std::fs::Permissions::from_mode(0o755))?;
        }
        Ok(Self {
            dir,
            cli: c,
            uml: u,
        })
    }
}

impl Drop for NobodyKit {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.dir) {
            eprintln!("removing {}: {e}", self.dir.display());
        }
    }
}

/// `patchbay vt` as an unprivileged host user (nobody): the guest's workload is root, the
/// results directory is written as nobody, nothing else of the host is written, and a busy
/// loop killed by the guard leaves no process behind.
///
/// Host setuid-root binaries appear setuid to the overflow uid through hostfs in the runner's
/// user namespace; the guest init's own non-setuid `mount` and nosuid root keep the workload
/// root (`id -u` is 0, and the lab below builds namespaces and nft rules).
#[test]
fn unprivileged_user_runs_patchbay_vt() -> anyhow::Result<()> {
    use std::os::unix::fs::MetadataExt;
    use std::os::unix::process::CommandExt;
    let Some((opts, _serial)) = setup() else {
        return Ok(());
    };
    let Some(cli) = patchbay_cli() else {
        return Ok(());
    };
    let uml = opts.uml_binary.clone().expect("setup finds the kernel");
    let kit = NobodyKit::new("nobody", &uml, &cli)?;
    let results = kit.dir.join("results");
    std::fs::create_dir(&results)?;
    std::os::unix::fs::chown(&results, Some(NOBODY), Some(NOBODY))?;
    let victim = kit.dir.join("written-by-guest");
    let script = format!(
        "id -u; echo ok > \"$PATCHBAY_VT_RESULTS/probe\"; echo scratch > /tmp/guest-scratch; \
         touch '{v}' && echo plain-write-in-the-guest; \
         mkdir -p /tmp/h && mount -t hostfs hostfs /tmp/h && touch '/tmp/h{v}' && echo hostfs-write-succeeded; \
         ls '{d}' > /dev/null && echo kit-visible",
        v = victim.display(),
        d = kit.dir.display()
    );
    let nobody = |args: &[&std::ffi::OsStr]| {
        std::process::Command::new(&kit.cli)
            .args(args)
            .env("PATCHBAY_UML", &kit.uml)
            .current_dir(&kit.dir)
            .uid(NOBODY)
            .gid(NOBODY)
            .output()
    };
    let before = owned_entries(NOBODY);
    let out = nobody(&[
        "vt".as_ref(),
        "--results-dir".as_ref(),
        results.as_os_str(),
        "--".as_ref(),
        "sh".as_ref(),
        "-c".as_ref(),
        script.as_ref(),
    ])?;
    let stdout = text(&out.stdout);
    let stderr = text(&out.stderr);
    println!(
        "as nobody: {}\nstdout: {stdout}\nstderr: {stderr}",
        out.status
    );
    if stderr.contains("forbids them") {
        skip(&format!(
            "this host forbids unprivileged user namespaces: {stderr}"
        ));
        return Ok(());
    }
    assert!(out.status.success(), "stdout: {stdout}\nstderr: {stderr}");
    assert_eq!(
        stdout.lines().next(),
        Some("0"),
        "the workload is root in the guest"
    );
    assert!(
        stdout.contains("kit-visible"),
        "cwd under /tmp is exposed: {stdout}"
    );
    assert!(
        !stdout.contains("succeeded"),
        "a host write succeeded: {stdout}"
    );
    assert!(!victim.exists() && !Path::new("/written-by-guest").exists());
    let probe = results.join("probe");
    assert_eq!(std::fs::read_to_string(&probe)?, "ok\n");
    assert_eq!(
        std::fs::metadata(&probe)?.uid(),
        NOBODY,
        "results belong to the caller"
    );
    assert_eq!(
        owned_entries(NOBODY),
        before,
        "nobody's run wrote to the shared temp dirs outside the results dir"
    );

    // A virtual-time lab file as nobody: routers, NAT, a TCP exchange, all built in the guest.
    let lab = kit.dir.join("lab.toml");
    std::fs::write(
        &lab,
        "[lab]\ntime = \"virtual\"\nseed = 1\n\n[[router]]\nname = \"home\"\nnat = \"home\"\n\n\
         [[device]]\nname = \"server\"\niface = [{ name = \"eth0\", router = \"home\" }]\n\n\
         [[device]]\nname = \"client\"\niface = [{ name = \"eth0\", router = \"home\" }]\n\n\
         [[step]]\nrun = \"server\"\nbackground = \"pong\"\n\
         cmd = [\"sh\", \"-c\", \"printf 'pong\\\\n' | nc -l -N ${server.ip} 8000\"]\n\n\
         [[step]]\nsleep = \"100ms\"\n\n\
         [[step]]\nrun = \"client\"\ncmd = [\"nc\", \"${server.ip}\", \"8000\"]\nexpect-output = \"pong\"\n",
    )?;
    std::os::unix::fs::chown(&lab, Some(NOBODY), Some(NOBODY))?;
    let out = nobody(&["run".as_ref(), lab.as_os_str()])?;
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    println!(
        "lab as nobody: {}\nstdout: {stdout}\nstderr: {stderr}",
        out.status
    );
    assert!(out.status.success(), "stdout: {stdout}\nstderr: {stderr}");
    assert!(stdout.contains("all steps passed"), "{stdout}");
    assert_eq!(
        owned_entries(NOBODY),
        before,
        "nobody's lab run wrote to the shared temp dirs"
    );

    // The guard path as nobody: killed, reaped, nothing left.
    let t = std::time::Instant::now();
    let out = nobody(&[
        "vt".as_ref(),
        "--guard".as_ref(),
        "3".as_ref(),
        "--".as_ref(),
        "sh".as_ref(),
        "-c".as_ref(),
        "while :; do :; done".as_ref(),
    ])?;
    let stderr = text(&out.stderr);
    println!("guard as nobody after {:?}: {stderr}", t.elapsed());
    assert!(!out.status.success());
    assert!(stderr.contains("wall-clock guard"), "{stderr}");
    let left = processes_of(NOBODY);
    let described: Vec<String> = left
        .iter()
        .map(|p| {
            let status = std::fs::read_to_string(format!("/proc/{p}/status")).unwrap_or_default();
            let keep = ["Name:", "State:", "PPid:", "NSpgid:", "NSpid:"];
            status
                .lines()
                .filter(|l| keep.iter().any(|k| l.starts_with(k)))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect();
    assert!(left.is_empty(), "processes of nobody left: {described:?}");
    assert_eq!(
        owned_entries(NOBODY),
        before,
        "files left after the guard kill"
    );
    Ok(())
}

/// Where unprivileged user namespaces are forbidden, one clear line names the sysctls. Made
/// without touching the host: in a user namespace A (created as root) whose own
/// `user.max_user_namespaces` is 1, a nested namespace B maps an unprivileged uid; `patchbay vt`
/// there, as that uid, cannot create a third one.
#[test]
fn no_user_namespaces_is_one_clear_line() -> anyhow::Result<()> {
    const NESTED_UID: u32 = 64_999;
    let Some((opts, _serial)) = setup() else {
        return Ok(());
    };
    let Some(cli) = patchbay_cli() else {
        return Ok(());
    };
    let Some(unshare) = host_binary("unshare") else {
        skip("util-linux unshare is needed");
        return Ok(());
    };
    let uml = opts.uml_binary.clone().expect("setup finds the kernel");
    let kit = NobodyKit::new("nouserns", &uml, &cli)?;
    // Not 65534: in the nested namespace the runner names its run dirs' parent after its own
    // uid (`/tmp/patchbay-vt.<uid>`), and the real nobody of the test above may own that name
    // on the host at the same moment (it would then be unreadable here).
    let inner = format!(
        "echo 1 > /proc/sys/user/max_user_namespaces && exec '{u}' --user --map-user={NESTED_UID} --map-group={NESTED_UID} '{c}' vt -- true",
        u = unshare.display(),
        c = kit.cli.display()
    );
    let out = std::process::Command::new(&unshare)
        .args(["--user", "--map-root-user", "--", "sh", "-c", &inner])
        .env("PATCHBAY_UML", &kit.uml)
        .current_dir(&kit.dir)
        .output()?;
    let stderr = text(&out.stderr);
    println!("{}\n{stderr}", out.status);
    if !stderr.contains("patchbay") {
        skip(&format!(
            "cannot build the restricted user namespace here: {stderr}"
        ));
        return Ok(());
    }
    assert!(!out.status.success());
    let line = stderr
        .lines()
        .find(|l| l.contains("user namespaces"))
        .unwrap_or_else(|| panic!("no line about user namespaces: {stderr}"));
    assert!(line.contains("user.max_user_namespaces"), "{line}");
    assert!(line.contains("kernel.unprivileged_userns_clone"), "{line}");
    Ok(())
}
