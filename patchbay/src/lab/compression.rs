//! The lab side of timer compression: computing the plan once, applying it
//! to every namespace and interface, registering namespaces with the eBPF
//! engine, and collecting their telemetry.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, OnceLock, mpsc};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::bpf::{
    self, Engine, FLAG_SCALE_SOCKOPTS, FLAG_TELEMETRY, LogGuard, NetnsConfig, Registration,
    TcpEvent,
};
use crate::compress::{
    BpfFeatures, CompressionReport, KernelCaps, Plan, SysctlDefaults, TimeScale, TimerInputs, probe,
};
use crate::error::{Error, Result};
use crate::sys::netns::Netns;

use super::LabOpts;
use super::clock::{LabClock, monotonic_now};

/// One telemetry event of a lab, attributed to its node.
#[derive(Debug, Clone, Serialize)]
pub struct LabEvent {
    /// Wall-clock time since the lab started.
    pub at: Duration,
    /// Virtual time since the lab started (`at` × k).
    pub virtual_at: Duration,
    /// The node whose socket it is (`exchange` for the lab root).
    pub node: String,
    /// The event.
    pub tcp: TcpEvent,
}

/// What the kernel offers, probed once per process.
struct Kernel {
    caps: KernelCaps,
    defaults: SysctlDefaults,
}

static KERNEL: OnceLock<std::result::Result<Kernel, probe::ProbeError>> = OnceLock::new();

fn kernel() -> Result<&'static Kernel> {
    KERNEL
        .get_or_init(|| {
            let b = bpf::probe();
            let (caps, defaults) = probe::probe_kernel(b.features())?;
            Ok(Kernel { caps, defaults })
        })
        .as_ref()
        // The cached error is shared by every later lab, so it is rendered
        // into the hint rather than moved.
        .map_err(|e| Error::KernelFeature {
            feature: "timer compression probe".into(),
            hint: e.to_string(),
        })
}

pub(crate) struct Compression {
    scale: TimeScale,
    inputs: TimerInputs,
    plan: Option<Plan>,
    engine: Option<Arc<Engine>>,
    /// Keeps the engine's eBPF log level up while the lab lives.
    _bpf_log: Option<LogGuard>,
    bpf_cfg: Option<NetnsConfig>,
    regs: Mutex<Vec<Registration>>,
    names: Mutex<BTreeMap<u64, String>>,
    tx: mpsc::Sender<TcpEvent>,
    rx: Mutex<mpsc::Receiver<TcpEvent>>,
    log: Mutex<Vec<LabEvent>>,
    counts: BTreeMap<String, String>,
    start: Instant,
    start_mono: Duration,
}

impl std::fmt::Debug for Compression {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Compression")
            .field("scale", &self.scale.get())
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The eBPF map entry for a namespace: the plan's BPF targets (the
/// kernel-free mirror of [`NetnsConfig`]) plus flags.
fn bpf_config(b: crate::compress::BpfTargets, flags: u32) -> NetnsConfig {
    NetnsConfig {
        flags,
        timeout_init_jiffies: b.timeout_init_jiffies,
        rto_min_us: b.rto_min_us,
        delack_max_us: b.delack_max_us,
        rto_max_ms: b.rto_max_ms,
        user_timeout_ms: b.user_timeout_ms,
        scale_milli: b.scale_milli,
        _pad: 0,
    }
}

impl Compression {
    /// Validates the options, probes the kernel (once per process) and
    /// computes the plan. Fails when k > 1 needs BPF that is missing, unless
    /// the user opted into sysctl-only compression.
    pub fn new(opts: &LabOpts) -> Result<Compression> {
        let scale = opts.time.scale();
        let mut counts = BTreeMap::new();
        if let Some(n) = opts.syn_retries {
            counts.insert("net/ipv4/tcp_syn_retries".to_string(), n.to_string());
        }
        if let Some(n) = opts.retries2 {
            counts.insert("net/ipv4/tcp_retries2".to_string(), n.to_string());
        }
        let inputs = TimerInputs {
            syn_retries: opts.syn_retries.map(u32::from),
            tcp_retries2: opts.retries2.map(u32::from),
            sysctl_only: opts.sysctl_only,
            ..TimerInputs::default()
        };
        // Telemetry needs eBPF: on by default when compressing with it.
        let telemetry = opts
            .telemetry
            .unwrap_or(!scale.is_real_time() && !opts.sysctl_only);
        let (tx, rx) = mpsc::channel();
        let mut c = Compression {
            scale,
            inputs,
            plan: None,
            engine: None,
            _bpf_log: None,
            bpf_cfg: None,
            regs: Mutex::new(vec![]),
            names: Mutex::new(BTreeMap::new()),
            tx,
            rx: Mutex::new(rx),
            log: Mutex::new(vec![]),
            counts,
            start: Instant::now(),
            start_mono: monotonic_now(),
        };
        if scale.is_real_time() && !telemetry {
            return Ok(c);
        }
        let bpf_wanted = telemetry || (!scale.is_real_time() && !opts.sysctl_only);
        if bpf_wanted {
            match Engine::get() {
                Ok(e) => c.engine = Some(e),
                Err(e) if opts.sysctl_only && !telemetry => {
                    tracing::warn!("eBPF unavailable, compressing by sysctls only: {e}");
                }
                Err(e) => {
                    return Err(Error::KernelFeature {
                        feature: "eBPF sock_ops on cgroup v2 (CAP_BPF/CAP_SYS_ADMIN, Linux 5.15+)"
                            .into(),
                        hint: format!(
                            "{e}; run as root on a kernel with BPF and cgroup v2, or opt into sysctl-only compression with LabBuilder::sysctl_only(true) (`sysctl-only = true` in a lab file) (the compression report then lists what is not compressed)"
                        ),
                    });
                }
            }
        }
        if let (Some(engine), Some(level)) = (&c.engine, opts.bpf_log) {
            c._bpf_log = Some(engine.log(level).map_err(|e| Error::KernelFeature {
                feature: "eBPF logging (aya-log)".into(),
                hint: e.to_string(),
            })?);
        }
        // The kernel probe (BPF features, three object loads, a scratch
        // connection; 0.25 s in a UML guest) only serves the plan: a
        // real-time lab with telemetry needs the engine alone.
        if !scale.is_real_time() {
            let k = kernel()?;
            let mut caps = k.caps.clone();
            if c.engine.is_none() || opts.sysctl_only {
                caps.bpf = BpfFeatures::default();
            }
            let plan = Plan::compute(scale, &caps, &k.defaults, &c.inputs).map_err(|e| {
                Error::invalid(
                    "time_scale",
                    crate::InvalidReason::Unsupported,
                    format!("cannot plan compression: {e}"),
                )
            })?;
            c.plan = Some(plan);
        }
        if c.engine.is_some() {
            let mut cfg = NetnsConfig {
                flags: 0,
                ..Default::default()
            };
            if telemetry {
                cfg.flags |= FLAG_TELEMETRY;
            }
            if let (Some(plan), false) = (&c.plan, opts.sysctl_only) {
                cfg = bpf_config(plan.bpf(), cfg.flags | FLAG_SCALE_SOCKOPTS);
            }
            c.bpf_cfg = Some(cfg);
        }
        // The lab's clock starts once the set-up is done: loading the eBPF
        // engine and probing the kernel take half a second, which the
        // virtual axis must not stretch by k (lab.start would land at 5 s
        // at k = 10 and at 0 at k = 1, and two runs would not line up).
        c.start = Instant::now();
        c.start_mono = monotonic_now();
        Ok(c)
    }

    pub fn scale(&self) -> TimeScale {
        self.scale
    }

    pub fn clock(&self) -> LabClock {
        LabClock::new(self.start, self.scale)
    }

    pub fn start_mono(&self) -> Duration {
        self.start_mono
    }

    /// A router's conntrack timeouts as the lab applies them (scaled).
    pub fn conntrack(
        &self,
        router: &str,
        t: &crate::native::ConntrackTimeouts,
    ) -> crate::native::ConntrackTimeouts {
        match &self.plan {
            Some(p) => p.conntrack(router, t).timeouts,
            None => t.clone(),
        }
    }

    /// A link condition as the lab applies it: delay and jitter / k, rate × k.
    pub fn link(
        &self,
        name: &str,
        c: &crate::native::LinkCondition,
    ) -> crate::native::LinkCondition {
        match &self.plan {
            Some(p) => c.with_timing(p.link(name, &c.timing()).timing),
            None => c.clone(),
        }
    }

    /// Namespace-wide sysctls: TCP counts plus the plan's timers.
    pub fn netns_sysctls(&self) -> BTreeMap<String, String> {
        let mut s = self.counts.clone();
        if let Some(p) = &self.plan {
            s.extend(p.sysctls_for_netns());
        }
        s
    }

    /// Per-interface sysctls (neighbour timers).
    pub fn iface_sysctls(&self, name: &str) -> BTreeMap<String, String> {
        self.plan
            .as_ref()
            .map(|p| p.sysctls_for_iface(name))
            .unwrap_or_default()
    }

    /// Registers a namespace with the eBPF engine (no-op without one).
    pub fn register(&self, ns: &Netns, node: &str) -> Result<()> {
        let (Some(engine), Some(cfg)) = (&self.engine, self.bpf_cfg) else {
            return Ok(());
        };
        let cookie = ns
            .run_sync(bpf::netns_cookie_of_current_thread)?
            .map_err(|source| Error::Io {
                context: format!(
                    "reading the netns cookie of {node} (SO_NETNS_COOKIE, Linux 5.14+)"
                ),
                source,
            })?;
        let reg = engine
            .register(cookie, cfg)
            .map_err(|e| Error::KernelFeature {
                feature: "eBPF map update".into(),
                hint: format!("registering {node}: {e}"),
            })?;
        engine.subscribe_into(cookie, self.tx.clone());
        lock(&self.names).insert(cookie, node.to_string());
        lock(&self.regs).push(reg);
        Ok(())
    }

    /// Every telemetry event so far, in order.
    pub fn events(&self) -> Vec<LabEvent> {
        let names = lock(&self.names).clone();
        let mut log = lock(&self.log);
        for ev in lock(&self.rx).try_iter() {
            let at = ev.monotonic.saturating_sub(self.start_mono);
            log.push(LabEvent {
                at,
                virtual_at: self.scale.to_virtual(at),
                node: names
                    .get(&ev.netns_cookie)
                    .cloned()
                    .unwrap_or_else(|| format!("netns:{}", ev.netns_cookie)),
                tcp: ev,
            });
        }
        log.clone()
    }

    /// The compression report at this lab's k.
    pub fn report(&self) -> Result<CompressionReport> {
        let k = kernel()?;
        let mut caps = k.caps.clone();
        if self.engine.is_none() {
            caps.bpf = BpfFeatures::default();
        }
        let plan = match &self.plan {
            Some(p) => p.clone(),
            None => Plan::compute(self.scale, &caps, &k.defaults, &self.inputs).map_err(|e| {
                Error::invalid(
                    "time_scale",
                    crate::InvalidReason::Unsupported,
                    format!("cannot plan compression: {e}"),
                )
            })?,
        };
        let faithful = Plan::largest_faithful_k(&caps, &k.defaults, &self.inputs).ok();
        Ok(CompressionReport::new(&plan, &caps, faithful.as_ref()))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;

    /// The clock starts when the set-up ends (the kernel probe and the plan
    /// at k = 10, sysctl-only so no eBPF or root is needed), not when it
    /// begins: the time `new` took is not on the virtual axis.
    #[test]
    fn the_clock_starts_after_the_set_up() {
        let opts = LabOpts::default()
            .time_mode(super::super::TimeMode::compressed(10.0).expect("k"))
            .sysctl_only(true);
        let before = Instant::now();
        let c = Compression::new(&opts).unwrap();
        let took = before.elapsed();
        let not_on_axis = c.clock().start().duration_since(before);
        assert!(
            not_on_axis >= took / 2,
            "set-up took {took:?}, of which only {not_on_axis:?} precede the clock's start"
        );
        assert!(c.plan.is_some(), "k = 10 computes a plan");
    }
}
