//! `patchbay doctor`: what this host's kernel and tools can do for labs.
//!
//! Every check is a real probe in a throwaway namespace (never a guess from
//! the version number), and nothing outside that namespace is touched.

use serde::Serialize;

use crate::sys::cmd;
use crate::sys::netlink::{self, VethEnd};
use crate::sys::netns::Netns;

/// The cgroup v2 mount point, found through `/proc/self/mountinfo` (hybrid
/// layouts included), or `None` where cgroup v2 is not mounted. Timer
/// compression and killing a lab's whole process tree need it.
pub fn cgroup2_mount() -> Option<std::path::PathBuf> {
    crate::sys::cgroup::cgroup2_mount()
}

/// Kills and removes what labs of dead processes left behind: every
/// `patchbay.<pid>.<starttime>` cgroup in the cgroup v2 hierarchy whose
/// owner is gone (its lab cgroups are killed with `cgroup.kill`, Linux
/// 5.14+, or a SIGKILL per member before). Normally each process's watchdog
/// does this when the process dies, and the next lab reaps beside it; this
/// is the manual sweep (`patchbay doctor --cleanup`). Returns the removed
/// directories. Needs root.
pub fn cleanup_stale_labs() -> crate::Result<Vec<std::path::PathBuf>> {
    Ok(crate::sys::cgroup::reap_dead_everywhere()?)
}

/// One probe result.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// Short name, e.g. `tc.netem`.
    pub name: String,
    /// Whether the feature works.
    pub ok: bool,
    /// What was found, or why it failed and what to do.
    pub detail: String,
}

/// The whole report.
#[derive(Debug, Clone, Serialize)]
pub struct DoctorReport {
    /// `uname -r`.
    pub kernel_release: String,
    /// Whether the process runs as root.
    pub root: bool,
    /// The cgroup2 mount point, if any.
    pub cgroup2_mount: Option<String>,
    /// Every check, in a fixed order.
    pub checks: Vec<Check>,
    /// What the eBPF loader could do on this kernel (absent without root).
    pub bpf: Option<crate::bpf::BpfCaps>,
    /// The compression plan this kernel allows at the sample time scale,
    /// with the mechanism per timer and the largest faithful k.
    pub compression: Option<crate::compress::CompressionReport>,
    /// Why the compression section is missing, if it is.
    pub compression_error: Option<String>,
    /// The virtual-time backend: the UML kernel `patchbay vt` would boot and what it can do
    /// (absent in the lab-only probe).
    pub virtual_time: Option<VirtualTimeReport>,
}

/// What the virtual-time backend would run with.
#[derive(Debug, Clone, Serialize)]
pub struct VirtualTimeReport {
    /// The UML kernel found (`PATCHBAY_UML`, else the default build), as probed.
    pub kernel: Option<crate::vt::UmlKernel>,
    /// Why there is none, or why it cannot run virtual time.
    pub error: Option<String>,
    /// How guest processes run: `seccomp`, or `ptrace` with the reason.
    pub processes: Option<String>,
}

impl VirtualTimeReport {
    /// Finds and probes the kernel (two short exec's of the binary, no boot).
    pub fn probe() -> Self {
        use crate::vt::{GuestProcesses, VtError};
        let kernel = crate::vt::find_uml_binary().and_then(|p| crate::vt::probe_kernel(&p));
        match kernel {
            Ok(k) => {
                let error = (!k.time_travel).then(|| {
                    VtError::NoTimeTravel {
                        binary: k.path.clone(),
                        release: k.release.clone(),
                    }
                    .to_string()
                });
                let processes = Some(match k.ptrace_reason(GuestProcesses::Auto) {
                    None => "seccomp (seccomp=on)".to_string(),
                    Some(why) => format!("ptrace: {why}"),
                });
                Self {
                    kernel: Some(k),
                    error,
                    processes,
                }
            }
            Err(e) => Self {
                kernel: None,
                error: Some(e.to_string()),
                processes: None,
            },
        }
    }
}

impl std::fmt::Display for VirtualTimeReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let yes = |b: bool| if b { "yes" } else { "NO" };
        match &self.kernel {
            Some(k) => {
                writeln!(
                    f,
                    "  kernel       UML {} at {}",
                    k.release,
                    k.path.display()
                )?;
                writeln!(f, "  time-travel  {}", yes(k.time_travel))?;
                writeln!(f, "  seccomp      {}", yes(k.seccomp))?;
                if k.fast_clock {
                    writeln!(
                        f,
                        "  fast clock   yes: guest clock reads without a trap \
                         (patchbay_vclock=, docs/virtual-time.md)"
                    )?;
                } else {
                    writeln!(
                        f,
                        "  fast clock   NO: every guest clock read is a syscall (built without \
                         xtask/uml-vdso.patch; rebuild with `cargo xtask build-uml`)"
                    )?;
                }
                if k.seed && k.reproducible {
                    writeln!(
                        f,
                        "  seeds        yes, on any machine with this build (patchbay_seed=, \
                         docs/determinism.md)"
                    )?;
                } else if k.seed {
                    writeln!(
                        f,
                        "  seeds        yes, but only on this machine, in this environment: the \
                         random pool still takes in the guest's clock, which PATH, the CPU and \
                         other host details move (rebuild with `cargo xtask build-uml`)"
                    )?;
                } else {
                    writeln!(
                        f,
                        "  seeds        NO: built without xtask/uml-seed.patch; runs are not \
                         repeatable (rebuild with `cargo xtask build-uml`)"
                    )?;
                }
            }
            None => writeln!(f, "  kernel       none")?,
        }
        if let Some(p) = &self.processes {
            writeln!(f, "  processes    {p}")?;
        }
        match &self.error {
            Some(e) => write!(f, "virtual time: NOT available: {e}"),
            None => write!(f, "virtual time: available"),
        }
    }
}

impl DoctorReport {
    fn lab_only(
        kernel_release: String,
        root: bool,
        cgroup2: Option<std::path::PathBuf>,
        checks: Vec<Check>,
    ) -> Self {
        DoctorReport {
            kernel_release,
            root,
            cgroup2_mount: cgroup2.map(|p| p.display().to_string()),
            checks,
            bpf: None,
            compression: None,
            compression_error: None,
            virtual_time: None,
        }
    }

    /// A check by name.
    pub fn check(&self, name: &str) -> Option<&Check> {
        self.checks.iter().find(|c| c.name == name)
    }

    /// Whether labs can be built at all (namespaces, veth, bridge, privileges).
    pub fn labs_supported(&self) -> bool {
        ["privileges", "netns", "veth", "bridge"]
            .iter()
            .all(|n| self.check(n).is_some_and(|c| c.ok))
    }
}

fn push(checks: &mut Vec<Check>, name: &str, ok: bool, detail: impl Into<String>) {
    checks.push(Check {
        name: name.into(),
        ok,
        detail: detail.into(),
    });
}

/// `tc qdisc add dev lo root …` arguments per qdisc kind probed.
const QDISCS: &[(&str, &[&str])] = &[
    ("netem", &["root", "netem", "delay", "1ms"]),
    (
        "tbf",
        &[
            "root", "tbf", "rate", "1mbit", "burst", "32kbit", "latency", "50ms",
        ],
    ),
    ("htb", &["root", "handle", "1:", "htb", "default", "1"]),
    ("fq", &["root", "fq"]),
    ("fq_codel", &["root", "fq_codel"]),
    ("ingress", &["ingress"]),
    ("clsact", &["clsact"]),
];

/// Why the compression section of a doctor report could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CompressionCheckError {
    /// The time scale is out of range.
    #[error(transparent)]
    Scale(#[from] crate::compress::ScaleError),
    /// Probing the kernel failed.
    #[error(transparent)]
    Probe(#[from] crate::compress::probe::ProbeError),
    /// No compression plan fits this kernel.
    #[error(transparent)]
    Plan(#[from] crate::compress::PlanError),
}

/// The compression capabilities and plan at time scale `k`.
pub fn compression(
    k: f64,
) -> (
    crate::bpf::BpfCaps,
    Result<crate::compress::CompressionReport, CompressionCheckError>,
) {
    use crate::compress::{CompressionReport, Plan, TimeScale, TimerInputs, probe};
    let b = crate::bpf::probe();
    let report = (|| {
        let scale = TimeScale::new(k)?;
        let (caps, defaults) = probe::probe_kernel(b.features())?;
        let inputs = TimerInputs::default();
        let plan = Plan::compute(scale, &caps, &defaults, &inputs)?;
        let fk = Plan::largest_faithful_k(&caps, &defaults, &inputs)?;
        Ok(CompressionReport::new(&plan, &caps, Some(&fk)))
    })();
    (b, report)
}

/// Runs every probe, including the compression plan at time scale `k`.
pub async fn probe_with_scale(k: f64) -> DoctorReport {
    let mut r = probe().await;
    r.virtual_time = Some(
        tokio::task::spawn_blocking(VirtualTimeReport::probe)
            .await
            .unwrap_or_else(|e| VirtualTimeReport {
                kernel: None,
                error: Some(format!("the kernel probe task failed: {e}")),
                processes: None,
            }),
    );
    if r.root {
        match tokio::task::spawn_blocking(move || compression(k)).await {
            Ok((b, report)) => {
                r.bpf = Some(b);
                match report {
                    Ok(rep) => r.compression = Some(rep),
                    Err(e) => r.compression_error = Some(e.to_string()),
                }
            }
            Err(e) => {
                r.bpf = Some(crate::bpf::BpfCaps::default());
                r.compression_error = Some(format!("the compression probe task failed: {e}"));
            }
        }
    } else {
        r.compression_error = Some("needs root to probe eBPF and namespace sysctls".into());
    }
    r
}

/// Runs every lab probe (no compression section).
pub async fn probe() -> DoctorReport {
    let mut checks = vec![];
    let uname = nix::sys::utsname::uname().ok();
    let kernel_release = uname
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default();
    let root = nix::unistd::geteuid().is_root();
    push(
        &mut checks,
        "privileges",
        root,
        if root {
            "running as root".to_string()
        } else {
            "not root: labs need root or CAP_SYS_ADMIN + CAP_NET_ADMIN; run with sudo".to_string()
        },
    );
    let cgroup2 = crate::sys::cgroup::cgroup2_mount();
    push(
        &mut checks,
        "cgroup2",
        cgroup2.is_some(),
        match &cgroup2 {
            Some(p) => format!("mounted at {}", p.display()),
            None => "no cgroup v2 mount: timer compression (BPF sock_ops) and killing grandchildren need it".into(),
        },
    );
    push(
        &mut checks,
        "btf",
        std::path::Path::new("/sys/kernel/btf/vmlinux").exists(),
        "/sys/kernel/btf/vmlinux",
    );
    let ns = match Netns::new("doctor") {
        Ok(ns) => {
            push(&mut checks, "netns", true, "unshare(CLONE_NEWNET) works");
            ns
        }
        Err(e) => {
            push(&mut checks, "netns", false, e.to_string());
            return DoctorReport::lab_only(kernel_release, root, cgroup2, checks);
        }
    };
    probe_links(&ns, &mut checks).await;
    probe_nft(&ns, &mut checks).await;
    for (kind, args) in QDISCS {
        let mut argv = vec!["qdisc", "add", "dev", "lo"];
        argv.extend_from_slice(args);
        let r = cmd::run(&ns, "tc", &argv, None).await;
        let (ok, detail) = match r {
            Ok(_) => {
                // Remove it so the next kind can attach at the root.
                let del: &[&str] = if *kind == "ingress" || *kind == "clsact" {
                    &["qdisc", "del", "dev", "lo", kind]
                } else {
                    &["qdisc", "del", "dev", "lo", "root"]
                };
                if let Err(e) = cmd::run(&ns, "tc", del, None).await {
                    tracing::debug!("doctor: removing probe qdisc failed: {e}");
                }
                (true, "available".to_string())
            }
            Err(cmd::CmdError::Failed { stderr, .. })
                if stderr.contains("unknown") || stderr.contains("not supported") =>
            {
                (
                    false,
                    format!(
                        "not in this kernel (CONFIG_NET_SCH_{}): {stderr}",
                        kind.to_uppercase()
                    ),
                )
            }
            Err(e) => (false, e.to_string()),
        };
        push(&mut checks, &format!("tc.{kind}"), ok, detail);
    }
    ns.shutdown();
    DoctorReport::lab_only(kernel_release, root, cgroup2, checks)
}

async fn probe_links(ns: &Netns, checks: &mut Vec<Check>) {
    let fd = match ns.raw_fd() {
        Ok(fd) => fd,
        Err(e) => {
            push(checks, "veth", false, e.to_string());
            return;
        }
    };
    let r = ns
        .run(move || async move {
            let a = VethEnd {
                name: "pa".into(),
                index: 0,
                mac: [2, 0, 0, 0, 0, 1],
                netns_fd: fd,
            };
            let b = VethEnd {
                name: "pb".into(),
                index: 0,
                mac: [2, 0, 0, 0, 0, 2],
                netns_fd: fd,
            };
            let veth = netlink::create_veth(&a, &b).await;
            let bridge = netlink::create_bridge("pbr", 0, [2, 0, 0, 0, 0, 3]).await;
            (veth, bridge)
        })
        .await;
    match r {
        Ok((veth, bridge)) => {
            push(
                checks,
                "veth",
                veth.is_ok(),
                veth.err()
                    .map_or_else(|| "available".into(), |e| e.to_string()),
            );
            push(
                checks,
                "bridge",
                bridge.is_ok(),
                bridge
                    .err()
                    .map_or_else(|| "available".into(), |e| e.to_string()),
            );
        }
        Err(e) => push(checks, "veth", false, e.to_string()),
    }
}

async fn probe_nft(ns: &Netns, checks: &mut Vec<Check>) {
    let ruleset = "table inet patchbay_probe {\n  chain c { type filter hook prerouting priority 0; ct state established accept; }\n}\n\
                   table ip patchbay_probe_nat {\n  chain p { type nat hook postrouting priority 100; masquerade; }\n}\n";
    let r = cmd::run(ns, "nft", ["-f", "-"], Some(ruleset.to_string())).await;
    let (ok, detail) = match r {
        Ok(_) => {
            let v = cmd::run(ns, "nft", ["--version"], None)
                .await
                .map(|o| o.stdout.trim().to_string());
            (
                true,
                format!(
                    "inet filter, ct and nat masquerade work ({})",
                    v.unwrap_or_default()
                ),
            )
        }
        Err(e) => (false, e.to_string()),
    };
    push(checks, "nftables", ok, detail);
}

impl std::fmt::Display for DoctorReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "kernel {}", self.kernel_release)?;
        let w = self.checks.iter().map(|c| c.name.len()).max().unwrap_or(0);
        for c in &self.checks {
            writeln!(
                f,
                "  {}  {:w$}  {}",
                if c.ok { "ok" } else { "--" },
                c.name,
                c.detail
            )?;
        }
        write!(
            f,
            "labs: {}",
            if self.labs_supported() {
                "supported"
            } else {
                "NOT supported (see the failed checks above)"
            }
        )?;
        if let Some(c) = &self.compression {
            write!(f, "\n\ntimer compression\n{c}")?;
        } else if let Some(e) = &self.compression_error {
            write!(f, "\n\ntimer compression: not available: {e}")?;
        }
        if let Some(v) = &self.virtual_time {
            write!(f, "\n\nvirtual time (User-Mode Linux)\n{v}")?;
        }
        Ok(())
    }
}
