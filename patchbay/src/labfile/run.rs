//! Builds a lab from a [`LabFile`] and executes its steps.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::io::AsyncReadExt;

use super::schema::{Command, LabFile, Step, StepKind};
use super::subst::{Vars, substitute};
use crate::{Lab, LabOpts, Result};

/// Default limit for foreground commands and waits.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
/// How much of a command's output a report keeps.
const KEEP_OUTPUT: usize = 4096;

/// The outcome of one step.
#[derive(Debug, Clone, Serialize)]
pub struct StepOutcome {
    /// 1-based step number.
    pub step: usize,
    /// `run`, `spawn`, `sleep`, `wait` or `kill`.
    pub kind: &'static str,
    /// The node it ran on, or the background name for `wait`/`kill`.
    pub node: Option<String>,
    /// The command line, after substitution.
    pub command: Option<String>,
    /// Exit code, where a process ended.
    pub exit_code: Option<i32>,
    /// Wall-clock seconds the step took.
    pub wall_s: f64,
    /// Virtual seconds (wall × the lab's time scale).
    pub virtual_s: f64,
    /// Whether the step met its expectations.
    pub ok: bool,
    /// Why it failed.
    pub error: Option<String>,
    /// The start of the command's stdout.
    pub stdout: Option<String>,
}

/// A whole run.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    /// The lab's id.
    pub lab: String,
    /// The lab's time scale k.
    pub time_scale: f64,
    /// Seconds to build the lab.
    pub build_s: f64,
    /// Every executed step; the run stops at the first failed one.
    pub steps: Vec<StepOutcome>,
    /// Whether every step passed.
    pub ok: bool,
}

struct Bg {
    child: tokio::process::Child,
    node: String,
    out: tokio::task::JoinHandle<String>,
}

/// Overrides of a lab file's settings from the command line.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct RunOverrides {
    /// Replaces `[lab] time-scale`.
    pub time_scale: Option<f64>,
    /// Forces virtual time.
    pub virtual_time: bool,
    /// Replaces `[lab] outdir`; a directory given here is always kept.
    pub outdir: Option<std::path::PathBuf>,
}

fn lab_opts(file: &LabFile, o: &RunOverrides) -> LabOpts {
    let l = &file.lab;
    let mut opts = LabOpts::default()
        .prewarm_neighbors(l.prewarm_neighbors)
        .time_scale(o.time_scale.or(l.time_scale).unwrap_or(1.0))
        .sysctl_only(l.sysctl_only)
        .virtual_time(l.time == Some(super::schema::TimeMode::Virtual) || o.virtual_time);
    if let Some(label) = &l.label {
        opts = opts.label(label.clone());
    }
    if let Some(t) = l.telemetry {
        opts = opts.telemetry(t);
    }
    if let Some(n) = l.tcp_syn_retries {
        opts = opts.tcp_syn_retries(n);
    }
    if let Some(n) = l.tcp_retries2 {
        opts = opts.tcp_retries2(n);
    }
    match (&o.outdir, &l.outdir) {
        (Some(d), _) => opts = opts.outdir(d.clone()).keep_artifacts(true),
        (None, Some(d)) => opts = opts.outdir(d.clone()).keep_artifacts(l.keep),
        (None, None) => {}
    }
    opts
}

async fn build(file: &LabFile, o: &RunOverrides) -> Result<Lab> {
    let lab = Lab::with_opts(lab_opts(file, o)).await?;
    for name in file.regions.keys() {
        lab.add_region(name).await?;
    }
    for (name, r) in &file.regions {
        for (other, c) in &r.links {
            lab.link_regions_by_name(name, other, c.clone()).await?;
        }
    }
    for r in &file.routers {
        let mut b = lab.add_router(&r.name);
        if let Some(p) = r.preset {
            b = b.preset(p);
        }
        if let Some(up) = &r.upstream {
            b = b.upstream_name(up);
        }
        if let Some(region) = &r.region {
            b = b.upstream_name(&format!("region-{region}"));
        }
        if let Some(m) = r.mtu {
            b = b.mtu(m);
        }
        if r.block_icmp_frag_needed {
            b = b.block_icmp_frag_needed();
        }
        if let Some(nat) = r.nat {
            b = b.nat(nat);
        }
        if let Some(h) = r.hairpin {
            b = b.hairpin(h);
        }
        if let Some(t) = &r.conntrack {
            b = b.conntrack(t.clone());
        }
        if let Some(fw) = &r.firewall {
            b = b.firewall(fw.clone());
        }
        if let Some(ip) = r.ip_support {
            b = b.ip_support(ip);
        }
        if let Some(m) = r.nat_v6 {
            b = b.nat_v6(m);
        }
        b.build().await?;
    }
    for d in &file.devices {
        let mut b = lab.add_device(&d.name);
        for i in &d.ifaces {
            b = b.iface_on(&i.name, &i.router);
        }
        if let Some(dv) = &d.default_via {
            b = b.default_via(dv);
        }
        let dev = b.build().await?;
        if let Some(fw) = &d.firewall {
            dev.set_firewall(fw.clone()).await?;
        }
        for i in &d.ifaces {
            if let Some(c) = &i.link {
                let dir = i.link_direction.unwrap_or(crate::Direction::Both);
                dev.set_link_condition_dir(&i.name, c.clone(), dir).await?;
            }
            if let Some(m) = i.mtu {
                dev.set_mtu(&i.name, m).await?;
            }
        }
    }
    if let Some(dns) = &file.dns {
        super::dns::apply(&lab, dns).await?;
    }
    for d in &file.devices {
        if let Some(ns) = &d.nameserver {
            let dev = lab
                .node(&d.name)
                .ok_or_else(|| crate::Error::Invalid(format!("unknown device {:?}", d.name)))?;
            // Only addresses of families the device has: a v6-only device
            // gets the server's IPv6 address alone.
            let servers: Vec<_> = super::dns::nameservers(&lab, ns)?
                .into_iter()
                .filter(|ip| match ip {
                    std::net::IpAddr::V4(_) => dev.ip().is_some(),
                    std::net::IpAddr::V6(_) => dev.ip6().is_some(),
                })
                .collect();
            dev.set_nameservers(&servers)?;
        }
    }
    // Captures go into the output directory; without one there is nowhere
    // to put them, and the file runs as it would without `capture`.
    let captures = if lab.outdir().is_some() {
        file.lab.capture.as_slice()
    } else {
        &[]
    };
    for c in captures {
        let (node, iface) = c.split_once('.').unwrap_or((c.as_str(), ""));
        let n = lab.node(node).ok_or_else(|| {
            crate::Error::Invalid(format!("[lab] capture {c:?}: unknown node {node:?}"))
        })?;
        n.capture_until_end(iface).await?;
    }
    Ok(lab)
}

/// Builds the lab described by `file`, runs its steps, and tears it down.
/// `on_step` is called after each step (for progress output).
pub async fn run(
    file: &LabFile,
    o: RunOverrides,
    mut on_step: impl FnMut(&StepOutcome),
) -> Result<RunReport> {
    let t0 = Instant::now();
    let lab = build(file, &o).await?;
    let build_s = t0.elapsed().as_secs_f64();
    let mut vars = Vars::from_lab(&lab);
    let mut st = State::default();
    let mut steps = vec![];
    for (i, step) in file.steps.iter().enumerate() {
        lab.emit(None, "step.start", serde_json::json!({"step": i + 1}));
        let mut out = run_step(&lab, &vars, i + 1, step, &mut st).await;
        if matches!(step.kind(), Ok(StepKind::Mobility(_))) {
            // Addresses changed: `${phone.ip}` is the new one from now on.
            vars = Vars::from_lab(&lab);
        }
        out.virtual_s = out.wall_s * lab.time_scale();
        lab.emit(
            out.node.as_deref(),
            "step.end",
            serde_json::to_value(&out).unwrap_or_default(),
        );
        if !out.ok {
            lab.fail(format!(
                "step {} ({}) failed: {}",
                out.step,
                out.kind,
                out.error.as_deref().unwrap_or("?")
            ));
        }
        on_step(&out);
        let ok = out.ok;
        steps.push(out);
        if !ok {
            break;
        }
    }
    let ok = steps.iter().all(|s| s.ok) && steps.len() == file.steps.len();
    Ok(RunReport {
        lab: lab.id().to_string(),
        time_scale: lab.time_scale(),
        build_s,
        steps,
        ok,
    })
}

/// What steps leave for later steps: background processes and faults.
#[derive(Default)]
struct State {
    bgs: BTreeMap<String, Bg>,
    faults: BTreeMap<String, crate::FaultGuard>,
    unnamed: Vec<crate::FaultGuard>,
}

fn outcome(step: usize, kind: &'static str) -> StepOutcome {
    StepOutcome {
        step,
        kind,
        node: None,
        command: None,
        exit_code: None,
        wall_s: 0.0,
        virtual_s: 0.0,
        ok: true,
        error: None,
        stdout: None,
    }
}

fn command_of(
    cmd: &Command,
    vars: &Vars,
) -> std::result::Result<(tokio::process::Command, String), String> {
    match cmd {
        Command::Shell(s) => {
            let s = substitute(s, vars)?;
            let mut c = tokio::process::Command::new("sh");
            c.arg("-c").arg(&s);
            Ok((c, s))
        }
        Command::Argv(v) => {
            let v = v
                .iter()
                .map(|a| substitute(a, vars))
                .collect::<std::result::Result<Vec<_>, _>>()?;
            let (prog, args) = v.split_first().ok_or("empty `cmd` array")?;
            let mut c = tokio::process::Command::new(prog);
            c.args(args);
            Ok((c, v.join(" ")))
        }
    }
}

async fn read_all(mut r: impl tokio::io::AsyncRead + Unpin) -> String {
    let mut buf = Vec::new();
    // Output that cannot be read is reported as what was read so far.
    let _ = r.read_to_end(&mut buf).await;
    let mut s = String::from_utf8_lossy(&buf).into_owned();
    if s.len() > KEEP_OUTPUT {
        let mut cut = KEEP_OUTPUT;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
    s
}

fn check(out: &mut StepOutcome, step: &Step, vars: &Vars, code: Option<i32>, stdout: &str) {
    out.exit_code = code;
    let want = step.expect_exit.unwrap_or(0);
    if code != Some(want) {
        out.ok = false;
        out.error = Some(match code {
            Some(c) => format!("exit code {c}, expected {want}"),
            None => format!("killed by a signal, expected exit code {want}"),
        });
    } else if let Some(needle) = &step.expect_output {
        // `${node.ip}` and friends work in expect-output as in commands.
        match substitute(needle, vars) {
            Ok(n) if stdout.contains(n.as_str()) => {}
            Ok(n) => {
                out.ok = false;
                out.error = Some(format!("stdout does not contain {n:?}"));
            }
            Err(e) => {
                out.ok = false;
                out.error = Some(format!("expect-output: {e}"));
            }
        }
    }
    out.stdout = Some(stdout.to_string());
}

async fn run_step(lab: &Lab, vars: &Vars, n: usize, step: &Step, st: &mut State) -> StepOutcome {
    let t = Instant::now();
    let kind = match step.kind() {
        Ok(k) => k,
        Err(e) => {
            let mut o = outcome(n, "invalid");
            o.ok = false;
            o.error = Some(e);
            return o;
        }
    };
    let mut out = match &kind {
        StepKind::Run { .. } => outcome(n, "run"),
        StepKind::Spawn { .. } => outcome(n, "spawn"),
        StepKind::Sleep(_) => outcome(n, "sleep"),
        StepKind::Wait(_) => outcome(n, "wait"),
        StepKind::Kill(_) => outcome(n, "kill"),
        StepKind::Blackhole { .. } => outcome(n, "blackhole"),
        StepKind::Heal(_) => outcome(n, "heal"),
        StepKind::Partition { .. } => outcome(n, "partition"),
        StepKind::Link { .. } => outcome(n, "link"),
        StepKind::FlushNat(_) => outcome(n, "flush-nat"),
        StepKind::SetLink { up: true, .. } => outcome(n, "link-up"),
        StepKind::SetLink { up: false, .. } => outcome(n, "link-down"),
        StepKind::RegionLink { broken: true, .. } => outcome(n, "break-region-link"),
        StepKind::RegionLink { broken: false, .. } => outcome(n, "restore-region-link"),
        StepKind::Mobility(m) => outcome(n, m.key()),
    };
    let limit = step.timeout.unwrap_or(DEFAULT_TIMEOUT);
    let result: std::result::Result<(), String> = async {
        match kind {
            StepKind::Run { node } | StepKind::Spawn { node, .. } if lab.node(&node).is_none() => {
                Err(format!("unknown node {node:?}"))
            }
            StepKind::Run { node } => {
                out.node = Some(node.clone());
                let (mut cmd, line) = command_of(step.cmd.as_ref().ok_or("no cmd")?, vars)?;
                out.command = Some(line);
                cmd.stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .stdin(Stdio::null())
                    .kill_on_drop(true);
                let n = lab.node(&node).ok_or("node vanished")?;
                let mut child = n.spawn_command(cmd).map_err(|e| e.to_string())?;
                let so = tokio::spawn(read_all(child.stdout.take().ok_or("no stdout")?));
                let se = tokio::spawn(read_all(child.stderr.take().ok_or("no stderr")?));
                let status = match tokio::time::timeout(limit, child.wait()).await {
                    Ok(s) => s.map_err(|e| e.to_string())?,
                    Err(_) => {
                        child.kill().await.map_err(|e| e.to_string())?;
                        return Err(format!("timed out after {limit:?}"));
                    }
                };
                lab.emit(
                    Some(&node),
                    "cmd.exit",
                    serde_json::json!({"step": out.step, "exit_code": status.code()}),
                );
                let stdout = so.await.unwrap_or_default();
                let stderr = se.await.unwrap_or_default();
                check(&mut out, step, vars, status.code(), &stdout);
                if !out.ok && !stderr.is_empty() {
                    let e = out.error.take().unwrap_or_default();
                    out.error = Some(format!("{e}; stderr: {}", stderr.trim()));
                }
                Ok(())
            }
            StepKind::Spawn { node, name } => {
                out.node = Some(node.clone());
                let (mut cmd, line) = command_of(step.cmd.as_ref().ok_or("no cmd")?, vars)?;
                out.command = Some(line);
                cmd.stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .stdin(Stdio::null())
                    .kill_on_drop(true);
                let n = lab.node(&node).ok_or("node vanished")?;
                let mut child = n.spawn_command(cmd).map_err(|e| e.to_string())?;
                let out_task = tokio::spawn(read_all(child.stdout.take().ok_or("no stdout")?));
                // Drained so a chatty background command never blocks (and,
                // with an output directory, is logged).
                drop(tokio::spawn(read_all(child.stderr.take().ok_or("no stderr")?)));
                st.bgs.insert(
                    name,
                    Bg {
                        child,
                        node,
                        out: out_task,
                    },
                );
                Ok(())
            }
            StepKind::Sleep(d) => {
                // Sleeps are in lab (virtual) time: at k = 10, "6s" is 0.6 s.
                lab.clock().sleep(d).await;
                Ok(())
            }
            StepKind::Wait(name) => {
                let mut bg = st
                    .bgs
                    .remove(&name)
                    .ok_or_else(|| format!("no background step {name:?}"))?;
                out.node = Some(bg.node.clone());
                let status = match tokio::time::timeout(limit, bg.child.wait()).await {
                    Ok(s) => s.map_err(|e| e.to_string())?,
                    Err(_) => {
                        return Err(format!(
                            "background step {name:?} still running after {limit:?}"
                        ));
                    }
                };
                lab.emit(
                    Some(&bg.node),
                    "cmd.exit",
                    serde_json::json!({"step": out.step, "background": name, "exit_code": status.code()}),
                );
                let stdout = bg.out.await.unwrap_or_default();
                check(&mut out, step, vars, status.code(), &stdout);
                Ok(())
            }
            StepKind::Kill(name) => {
                let mut bg = st
                    .bgs
                    .remove(&name)
                    .ok_or_else(|| format!("no background step {name:?}"))?;
                out.node = Some(bg.node.clone());
                bg.child.kill().await.map_err(|e| e.to_string())?;
                Ok(())
            }
            StepKind::Blackhole {
                node,
                iface,
                direction,
                name,
            } => {
                out.node = Some(node.clone());
                let n = lab
                    .node(&node)
                    .ok_or_else(|| format!("unknown node {node:?}"))?;
                let g = n
                    .blackhole(&iface, direction)
                    .await
                    .map_err(|e| e.to_string())?;
                match name {
                    Some(f) => {
                        st.faults.insert(f, g);
                    }
                    None => st.unnamed.push(g),
                }
                Ok(())
            }
            StepKind::Heal(f) => {
                let g = st
                    .faults
                    .remove(&f)
                    .ok_or_else(|| format!("no fault named {f:?}"))?;
                out.node = Some(f);
                g.heal().await.map_err(|e| e.to_string())
            }
            StepKind::Partition { a, b, name } => {
                let na = lab.node(&a).ok_or_else(|| format!("unknown node {a:?}"))?;
                let nb = lab.node(&b).ok_or_else(|| format!("unknown node {b:?}"))?;
                out.node = Some(format!("{a}|{b}"));
                let g = lab.partition(&na, &nb).await.map_err(|e| e.to_string())?;
                match name {
                    Some(f) => {
                        st.faults.insert(f, g);
                    }
                    None => st.unnamed.push(g),
                }
                Ok(())
            }
            StepKind::Link {
                node,
                iface,
                condition,
            } => {
                out.node = Some(node.clone());
                let n = lab
                    .node(&node)
                    .ok_or_else(|| format!("unknown node {node:?}"))?;
                let dir = step.direction.unwrap_or(crate::Direction::Both);
                n.set_link_condition_dir(&iface, condition, dir)
                    .await
                    .map_err(|e| e.to_string())
            }
            StepKind::RegionLink { a, b, broken } => {
                out.node = Some(format!("{a}|{b}"));
                let r = if broken {
                    lab.break_region_link_by_name(&a, &b).await
                } else {
                    lab.restore_region_link_by_name(&a, &b).await
                };
                r.map_err(|e| e.to_string())
            }
            StepKind::FlushNat(r) => {
                out.node = Some(r.clone());
                let router = lab
                    .router(&r)
                    .ok_or_else(|| format!("{r:?} is not a router"))?;
                router.flush_nat().await.map_err(|e| e.to_string())
            }
            StepKind::Mobility(m) => {
                out.node = Some(m.node().to_string());
                super::steps_mobility::execute(lab, m).await
            }
            StepKind::SetLink { node, iface, up } => {
                out.node = Some(node.clone());
                let n = lab
                    .node(&node)
                    .ok_or_else(|| format!("unknown node {node:?}"))?;
                if up {
                    n.link_up(&iface).await
                } else {
                    n.link_down(&iface).await
                }
                .map_err(|e| e.to_string())
            }
        }
    }
    .await;
    if let Err(e) = result {
        out.ok = false;
        out.error = Some(e);
    }
    out.wall_s = t.elapsed().as_secs_f64();
    out
}
