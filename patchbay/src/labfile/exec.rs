//! Executing one step of a lab file on a built lab.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::io::AsyncReadExt;

use super::mobility::MobilityStep;
use super::step::{Command, Step, StepKind};
use super::subst::{SubstError, Vars, substitute};
use crate::{Error, InvalidLab, InvalidReason, Node, native::Lab};

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

/// Why a step failed (its text goes into [`StepOutcome::error`]).
#[derive(Debug, thiserror::Error)]
enum StepError {
    /// The lab refused the step's action.
    #[error(transparent)]
    Lab(#[from] Error),
    /// The step names something the lab does not have.
    #[error(transparent)]
    Invalid(#[from] InvalidLab),
    /// A `${...}` in the command.
    #[error(transparent)]
    Subst(#[from] SubstError),
    /// Waiting for or killing a process failed.
    #[error("{context}: {source}")]
    Io {
        context: &'static str,
        #[source]
        source: std::io::Error,
    },
    /// A foreground command outlived its limit.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// A waited-for background command outlived the limit.
    #[error("background step {name:?} still running after {limit:?}")]
    StillRunning { name: String, limit: Duration },
}

type StepResult<T = ()> = std::result::Result<T, StepError>;

fn io(context: &'static str) -> impl FnOnce(std::io::Error) -> StepError {
    move |source| StepError::Io { context, source }
}

struct Bg {
    child: tokio::process::Child,
    node: String,
    out: tokio::task::JoinHandle<String>,
}

/// What steps leave for later steps: background processes and faults.
#[derive(Default)]
pub(super) struct State {
    bgs: BTreeMap<String, Bg>,
    faults: BTreeMap<String, crate::FaultGuard>,
    unnamed: Vec<crate::FaultGuard>,
}

impl State {
    fn keep(&mut self, name: Option<String>, g: crate::FaultGuard) {
        match name {
            Some(f) => {
                self.faults.insert(f, g);
            }
            None => self.unnamed.push(g),
        }
    }
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

fn kind_name(kind: &StepKind) -> &'static str {
    match kind {
        StepKind::Run { .. } => "run",
        StepKind::Spawn { .. } => "spawn",
        StepKind::Sleep(_) => "sleep",
        StepKind::Wait(_) => "wait",
        StepKind::Kill(_) => "kill",
        StepKind::Blackhole { .. } => "blackhole",
        StepKind::Heal(_) => "heal",
        StepKind::Partition { .. } => "partition",
        StepKind::Link { .. } => "link",
        StepKind::FlushNat(_) => "flush-nat",
        StepKind::SetLink { up: true, .. } => "link-up",
        StepKind::SetLink { up: false, .. } => "link-down",
        StepKind::RegionLink { broken: true, .. } => "break-region-link",
        StepKind::RegionLink { broken: false, .. } => "restore-region-link",
        StepKind::Mobility(m) => m.key(),
    }
}

fn command_of(cmd: &Command, vars: &Vars) -> StepResult<(tokio::process::Command, String)> {
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
            let (prog, args) = v.split_first().ok_or_else(|| {
                InvalidLab::new("cmd", InvalidReason::Missing, "empty `cmd` array")
            })?;
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

fn node(lab: &Lab, name: &str) -> StepResult<Node> {
    lab.node(name).ok_or_else(|| {
        let msg = format!("unknown node {name:?}");
        InvalidLab::new("node", InvalidReason::Unknown, msg)
            .node(name)
            .into()
    })
}

/// Spawns a step's command on `node` with piped output.
fn spawn(
    lab: &Lab,
    node: &str,
    step: &Step,
    vars: &Vars,
    out: &mut StepOutcome,
) -> StepResult<tokio::process::Child> {
    let n = self::node(lab, node)?;
    out.node = Some(node.to_string());
    let cmd = step.cmd.as_ref().ok_or_else(|| {
        InvalidLab::new("cmd", InvalidReason::Missing, "the `run` step has no `cmd`").node(node)
    })?;
    let (mut cmd, line) = command_of(cmd, vars)?;
    out.command = Some(line);
    cmd.stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .stdin(Stdio::null())
        .kill_on_drop(true);
    Ok(n.spawn_command(cmd)?)
}

/// The child's piped stream, or a typed error if it was not piped.
fn piped<T>(s: Option<T>, what: &'static str) -> StepResult<T> {
    s.ok_or_else(|| StepError::Io {
        context: what,
        source: std::io::Error::other("not piped"),
    })
}

/// A foreground `run`: waits up to `limit` and checks the outcome.
async fn run_fg(
    lab: &Lab,
    node: String,
    step: &Step,
    vars: &Vars,
    limit: Duration,
    out: &mut StepOutcome,
) -> StepResult {
    let mut child = spawn(lab, &node, step, vars, out)?;
    let so = tokio::spawn(read_all(piped(
        child.stdout.take(),
        "the command's stdout",
    )?));
    let se = tokio::spawn(read_all(piped(
        child.stderr.take(),
        "the command's stderr",
    )?));
    let status = match tokio::time::timeout(limit, child.wait()).await {
        Ok(s) => s.map_err(io("waiting for the command"))?,
        Err(_) => {
            child.kill().await.map_err(io("killing the command"))?;
            return Err(StepError::Timeout(limit));
        }
    };
    lab.emit(
        Some(&node),
        "cmd.exit",
        serde_json::json!({"step": out.step, "exit_code": status.code()}),
    );
    let stdout = so.await.unwrap_or_default();
    let stderr = se.await.unwrap_or_default();
    check(out, step, vars, status.code(), &stdout);
    if !out.ok && !stderr.is_empty() {
        let e = out.error.take().unwrap_or_default();
        out.error = Some(format!("{e}; stderr: {}", stderr.trim()));
    }
    Ok(())
}

/// A background `run`: starts it and keeps it under `name`.
fn run_bg(
    lab: &Lab,
    node: String,
    name: String,
    step: &Step,
    vars: &Vars,
    st: &mut State,
    out: &mut StepOutcome,
) -> StepResult {
    let mut child = spawn(lab, &node, step, vars, out)?;
    let out_task = tokio::spawn(read_all(piped(
        child.stdout.take(),
        "the command's stdout",
    )?));
    // Drained so a chatty background command never blocks (and, with an
    // output directory, is logged).
    drop(tokio::spawn(read_all(piped(
        child.stderr.take(),
        "the command's stderr",
    )?)));
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

fn take_bg(st: &mut State, name: &str, out: &mut StepOutcome) -> StepResult<Bg> {
    let bg = st.bgs.remove(name).ok_or_else(|| {
        let msg = format!("no background step {name:?}");
        InvalidLab::new("wait", InvalidReason::Unknown, msg)
    })?;
    out.node = Some(bg.node.clone());
    Ok(bg)
}

/// `wait`: waits up to `limit` for a background command and checks it.
async fn wait(
    lab: &Lab,
    name: String,
    step: &Step,
    vars: &Vars,
    limit: Duration,
    st: &mut State,
    out: &mut StepOutcome,
) -> StepResult {
    let mut bg = take_bg(st, &name, out)?;
    let status = match tokio::time::timeout(limit, bg.child.wait()).await {
        Ok(s) => s.map_err(io("waiting for the background command"))?,
        Err(_) => return Err(StepError::StillRunning { name, limit }),
    };
    lab.emit(
        Some(&bg.node),
        "cmd.exit",
        serde_json::json!({"step": out.step, "background": name, "exit_code": status.code()}),
    );
    let stdout = bg.out.await.unwrap_or_default();
    check(out, step, vars, status.code(), &stdout);
    Ok(())
}

/// Runs one mobility step on the lab.
async fn mobility(lab: &Lab, m: MobilityStep) -> crate::Result<()> {
    let dev = |d: &str| {
        lab.device(d).ok_or_else(|| {
            let msg = format!("{d:?} is not a device of this lab");
            Error::invalid_node(d, m.key(), InvalidReason::Unknown, msg)
        })
    };
    match &m {
        MobilityStep::Replug {
            device,
            iface,
            router,
        } => dev(device)?.replug_iface(iface, router).await.map(drop),
        MobilityStep::AddIface {
            device,
            iface,
            router,
        } => dev(device)?.add_iface(iface, router).await.map(drop),
        MobilityStep::RemoveIface { device, iface } => dev(device)?.remove_iface(iface).await,
        MobilityStep::DefaultRoute { device, iface } => dev(device)?.set_default_route(iface).await,
        MobilityStep::Renew { device, iface } => dev(device)?.renew_addr(iface).await.map(drop),
        MobilityStep::RemoveNode(n) => lab.remove_node(n).await,
    }
}

/// The actions that change the network (faults, links, NAT, mobility).
async fn network(
    lab: &Lab,
    kind: StepKind,
    step: &Step,
    st: &mut State,
    out: &mut StepOutcome,
) -> StepResult {
    match kind {
        StepKind::Blackhole {
            node,
            iface,
            direction,
            name,
        } => {
            out.node = Some(node.clone());
            let g = self::node(lab, &node)?.blackhole(&iface, direction).await?;
            st.keep(name, g);
        }
        StepKind::Heal(f) => {
            let g = st.faults.remove(&f).ok_or_else(|| {
                let msg = format!("no fault named {f:?}");
                InvalidLab::new("heal", InvalidReason::Unknown, msg)
            })?;
            out.node = Some(f);
            g.heal().await?;
        }
        StepKind::Partition { a, b, name } => {
            let (na, nb) = (node(lab, &a)?, node(lab, &b)?);
            out.node = Some(format!("{a}|{b}"));
            let g = lab.partition(&na, &nb).await?;
            st.keep(name, g);
        }
        StepKind::Link {
            node,
            iface,
            condition,
        } => {
            out.node = Some(node.clone());
            let dir = step.direction.unwrap_or(crate::Direction::Both);
            self::node(lab, &node)?
                .set_link_condition_dir(&iface, condition, dir)
                .await?;
        }
        StepKind::RegionLink { a, b, broken } => {
            out.node = Some(format!("{a}|{b}"));
            if broken {
                lab.break_region_link_by_name(&a, &b).await?;
            } else {
                lab.restore_region_link_by_name(&a, &b).await?;
            }
        }
        StepKind::FlushNat(r) => {
            out.node = Some(r.clone());
            let router = lab.router(&r).ok_or_else(|| {
                let msg = format!("{r:?} is not a router");
                InvalidLab::new("flush-nat", InvalidReason::Unknown, msg).node(&r)
            })?;
            router.flush_nat().await?;
        }
        StepKind::Mobility(m) => {
            out.node = Some(m.node().to_string());
            mobility(lab, m).await?;
        }
        StepKind::SetLink { node, iface, up } => {
            out.node = Some(node.clone());
            let n = self::node(lab, &node)?;
            if up {
                n.link_up(&iface).await?;
            } else {
                n.link_down(&iface).await?;
            }
        }
        StepKind::Run { .. }
        | StepKind::Spawn { .. }
        | StepKind::Sleep(_)
        | StepKind::Wait(_)
        | StepKind::Kill(_) => {}
    }
    Ok(())
}

async fn execute(
    lab: &Lab,
    vars: &Vars,
    kind: StepKind,
    step: &Step,
    st: &mut State,
    out: &mut StepOutcome,
) -> StepResult {
    let limit = step.timeout.unwrap_or(DEFAULT_TIMEOUT);
    match kind {
        StepKind::Run { node } => run_fg(lab, node, step, vars, limit, out).await,
        StepKind::Spawn { node, name } => run_bg(lab, node, name, step, vars, st, out),
        StepKind::Sleep(d) => {
            // Sleeps are in lab (virtual) time: at k = 10, "6s" is 0.6 s.
            lab.clock().sleep(d).await;
            Ok(())
        }
        StepKind::Wait(name) => wait(lab, name, step, vars, limit, st, out).await,
        StepKind::Kill(name) => {
            let mut bg = take_bg(st, &name, out)?;
            bg.child
                .kill()
                .await
                .map_err(io("killing the background command"))
        }
        other => network(lab, other, step, st, out).await,
    }
}

/// Runs step `n` and says how it went.
pub(super) async fn run_step(
    lab: &Lab,
    vars: &Vars,
    n: usize,
    step: &Step,
    st: &mut State,
) -> StepOutcome {
    let t = Instant::now();
    let kind = match step.kind() {
        Ok(k) => k,
        Err(e) => {
            let mut o = outcome(n, "invalid");
            o.ok = false;
            o.error = Some(e.to_string());
            return o;
        }
    };
    let mut out = outcome(n, kind_name(&kind));
    if let Err(e) = execute(lab, vars, kind, step, st, &mut out).await {
        out.ok = false;
        out.error = Some(e.to_string());
    }
    out.wall_s = t.elapsed().as_secs_f64();
    out
}
