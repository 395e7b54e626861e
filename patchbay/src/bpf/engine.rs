//! The process-wide engine: one loaded object, attached to this process's cgroup, shared by
//! every lab (thread) of the process.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs::File,
    path::{Path, PathBuf},
    sync::{Arc, Mutex, MutexGuard, PoisonError, mpsc},
    time::{Duration, Instant},
};

use aya::{
    Ebpf,
    maps::{HashMap, MapData, PerCpuHashMap, PerCpuValues, RingBuf},
    programs::{CgroupAttachMode, CgroupSockopt, SockOps},
};
use patchbay_ebpf_common as common;

use super::{
    BpfError, NetnsConfig, OBJECT,
    events::{self, EventStream, Subscribers},
    stats::Stats,
};

/// `NetnsConfig` as an `aya::Pod` (the common crate does not depend on aya).
#[repr(transparent)]
#[derive(Clone, Copy)]
struct PodConfig(NetnsConfig);
// SAFETY: repr(transparent) over a repr(C) struct of integers with explicit padding.
unsafe impl aya::Pod for PodConfig {}

/// `NetnsStats` as an `aya::Pod`.
#[repr(transparent)]
#[derive(Clone, Copy, Default)]
struct PodStats(common::NetnsStats);
// SAFETY: repr(transparent) over a repr(C) struct of integers without padding holes.
unsafe impl aya::Pod for PodStats {}

struct Maps {
    config: HashMap<MapData, u64, PodConfig>,
    stats: PerCpuHashMap<MapData, u64, PodStats>,
    registered: BTreeSet<u64>,
    nr_cpus: usize,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The process-wide timer-compression engine.
///
/// Created by [`Engine::get`] and shared by every lab of the process that holds it; when the
/// last holder drops it, the programs detach (their links are held by file descriptors), the
/// telemetry reader stops and the process leaves its cgroup. Requires Linux 5.15+, cgroup v2 and
/// `CAP_BPF`+`CAP_NET_ADMIN` (or `CAP_SYS_ADMIN`).
pub struct Engine {
    /// Holds the programs and their links.
    _ebpf: Mutex<Ebpf>,
    maps: Arc<Mutex<Maps>>,
    subs: Subscribers,
    cgroup: PathBuf,
    _process_cgroup: Arc<crate::sys::cgroup::ProcessCgroup>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    load_time: Duration,
    verified_insns: VerifiedInsns,
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("cgroup", &self.cgroup)
            .field("load_time", &self.load_time)
            .field("verified_insns", &self.verified_insns)
            .finish_non_exhaustive()
    }
}

static ENGINE: Mutex<std::sync::Weak<Engine>> = Mutex::new(std::sync::Weak::new());

fn take_map(ebpf: &mut Ebpf, name: &'static str) -> Result<aya::maps::Map, BpfError> {
    ebpf.take_map(name).ok_or(BpfError::Missing(name))
}

fn map_err(
    op: impl Into<String>,
    name: &'static str,
) -> impl FnOnce(aya::maps::MapError) -> BpfError {
    let op = op.into();
    move |source| BpfError::Map {
        op,
        name,
        source: Box::new(source),
    }
}

fn prog_err(
    op: impl Into<String>,
    name: &'static str,
) -> impl FnOnce(aya::programs::ProgramError) -> BpfError {
    let op = op.into();
    move |source| BpfError::Program {
        op,
        name,
        source: Box::new(source),
    }
}

/// Instructions the verifier processed, per program name.
pub(crate) type VerifiedInsns = BTreeMap<&'static str, Option<u32>>;

/// The verifier's instruction count from a program's info, if the kernel reports it.
fn verified_count(
    info: Result<aya::programs::ProgramInfo, aya::programs::ProgramError>,
) -> Option<u32> {
    match info {
        Ok(info) => info.verified_instruction_count(),
        Err(e) => {
            tracing::debug!(error = %e, "BPF_OBJ_GET_INFO_BY_FD failed");
            None
        }
    }
}

/// Loads the object and verifies both programs (no attach). Returns the object, the load time
/// and the verified instruction counts.
pub(crate) fn load_object() -> Result<(Ebpf, Duration, VerifiedInsns), BpfError> {
    let start = Instant::now();
    // The object has no CO-RE relocations, so the kernel's BTF (megabytes to parse) is not
    // needed; the object's own BTF is still loaded.
    let mut ebpf = aya::EbpfLoader::new()
        .btf(None)
        .load(OBJECT)
        .map_err(|e| BpfError::Load(Box::new(e)))?;
    let mut insns = BTreeMap::new();
    let sockops: &mut SockOps = ebpf
        .program_mut(common::PROG_SOCKOPS)
        .ok_or(BpfError::Missing(common::PROG_SOCKOPS))?
        .try_into()
        .map_err(prog_err("type-check", common::PROG_SOCKOPS))?;
    sockops
        .load()
        .map_err(prog_err("load", common::PROG_SOCKOPS))?;
    insns.insert(common::PROG_SOCKOPS, verified_count(sockops.info()));
    let sockopt: &mut CgroupSockopt = ebpf
        .program_mut(common::PROG_SETSOCKOPT)
        .ok_or(BpfError::Missing(common::PROG_SETSOCKOPT))?
        .try_into()
        .map_err(prog_err("type-check", common::PROG_SETSOCKOPT))?;
    sockopt
        .load()
        .map_err(prog_err("load", common::PROG_SETSOCKOPT))?;
    insns.insert(common::PROG_SETSOCKOPT, verified_count(sockopt.info()));
    Ok((ebpf, start.elapsed(), insns))
}

fn attach(ebpf: &mut Ebpf, cgroup: &Path) -> Result<(), BpfError> {
    let dir = File::open(cgroup).map_err(|source| BpfError::CgroupOpen {
        path: cgroup.to_path_buf(),
        source,
    })?;
    let at = format!("attach to {}", cgroup.display());
    let sockops: &mut SockOps = ebpf
        .program_mut(common::PROG_SOCKOPS)
        .ok_or(BpfError::Missing(common::PROG_SOCKOPS))?
        .try_into()
        .map_err(prog_err("type-check", common::PROG_SOCKOPS))?;
    sockops
        .attach(&dir, CgroupAttachMode::Single)
        .map_err(prog_err(at.clone(), common::PROG_SOCKOPS))?;
    let sockopt: &mut CgroupSockopt = ebpf
        .program_mut(common::PROG_SETSOCKOPT)
        .ok_or(BpfError::Missing(common::PROG_SETSOCKOPT))?
        .try_into()
        .map_err(prog_err("type-check", common::PROG_SETSOCKOPT))?;
    sockopt
        .attach(&dir, CgroupAttachMode::Single)
        .map_err(prog_err(at, common::PROG_SETSOCKOPT))?;
    Ok(())
}

impl Engine {
    /// The process's engine, created on first use: loads the object, gets this process's
    /// cgroup `patchbay.<pid>.<starttime>` (created on first
    /// use, reaping those of dead processes, with the whole process moved into it), attaches `sock_ops` and `cgroup/setsockopt` in single mode and starts
    /// the telemetry reader thread. Sockets created afterwards by this process and its
    /// children are covered; only sockets of registered namespaces are touched.
    ///
    /// A failed attempt is not cached: the next call tries again.
    pub fn get() -> Result<Arc<Engine>, BpfError> {
        let mut slot = lock(&ENGINE);
        if let Some(engine) = slot.upgrade() {
            return Ok(engine);
        }
        let engine = Arc::new(Self::create()?);
        *slot = Arc::downgrade(&engine);
        Ok(engine)
    }

    fn create() -> Result<Engine, BpfError> {
        let (mut ebpf, load_time, verified_insns) = load_object()?;
        let config = HashMap::try_from(take_map(&mut ebpf, common::MAP_CONFIG)?)
            .map_err(map_err("open", common::MAP_CONFIG))?;
        let stats = PerCpuHashMap::try_from(take_map(&mut ebpf, common::MAP_STATS)?)
            .map_err(map_err("open", common::MAP_STATS))?;
        let ring = RingBuf::try_from(take_map(&mut ebpf, common::MAP_EVENTS)?)
            .map_err(map_err("open", common::MAP_EVENTS))?;
        let nr_cpus = aya::util::nr_cpus()
            .map_err(|(what, e)| BpfError::io(format!("counting CPUs ({what})"), e))?;
        // The lead changed the process cgroup to be shared by whoever holds it
        // (labs, this engine); the engine keeps it alive while it exists.
        let process_cgroup =
            crate::sys::cgroup::ProcessCgroup::acquire().map_err(BpfError::Cgroup)?;
        let cgroup = process_cgroup.path().to_path_buf();
        attach(&mut ebpf, &cgroup)?;
        let subs = Subscribers::default();
        let reader_subs = Arc::clone(&subs);
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let reader_stop = Arc::clone(&stop);
        std::thread::Builder::new()
            .name("patchbay-bpf-events".into())
            .spawn(move || events::reader_loop(ring, reader_subs, reader_stop))
            .map_err(|e| BpfError::io("spawning the telemetry reader thread", e))?;
        tracing::debug!(cgroup = %cgroup.display(), ?load_time, "eBPF engine attached");
        Ok(Engine {
            _ebpf: Mutex::new(ebpf),
            maps: Arc::new(Mutex::new(Maps {
                config,
                stats,
                registered: BTreeSet::new(),
                nr_cpus,
            })),
            subs,
            cgroup,
            _process_cgroup: process_cgroup,
            stop,
            load_time,
            verified_insns,
        })
    }

    /// The cgroup directory the programs are attached to (and this process lives in).
    pub fn cgroup_path(&self) -> &Path {
        &self.cgroup
    }

    /// How long loading and verifying the object took.
    pub fn load_time(&self) -> Duration {
        self.load_time
    }

    /// Instructions the verifier processed per program (None if the kernel did not say).
    pub fn verified_instructions(&self) -> &BTreeMap<&'static str, Option<u32>> {
        &self.verified_insns
    }

    /// Starts compressing the sockets of the namespace with `netns_cookie` (see
    /// [`super::netns_cookie_of_current_thread`]). The entry is removed when the returned
    /// [`Registration`] is dropped.
    pub fn register(&self, netns_cookie: u64, cfg: NetnsConfig) -> Result<Registration, BpfError> {
        if cfg.flags & common::FLAG_SCALE_SOCKOPTS != 0 && cfg.scale_milli < 1000 {
            return Err(BpfError::InvalidConfig(format!(
                "scale_milli {} is below 1000 (k < 1); set k*1000 with k >= 1",
                cfg.scale_milli
            )));
        }
        let cfg = NetnsConfig { _pad: 0, ..cfg };
        let mut maps = lock(&self.maps);
        if maps.registered.contains(&netns_cookie) {
            return Err(BpfError::AlreadyRegistered(netns_cookie));
        }
        let zeros = PerCpuValues::try_from(vec![PodStats::default(); maps.nr_cpus])
            .map_err(|e| BpfError::io("building per-CPU zero stats", e))?;
        maps.stats
            .insert(netns_cookie, zeros, 0)
            .map_err(map_err(format!("insert {netns_cookie}"), common::MAP_STATS))?;
        if let Err(e) = maps.config.insert(netns_cookie, PodConfig(cfg), 0) {
            if let Err(undo) = maps.stats.remove(&netns_cookie) {
                tracing::warn!(error = %undo, netns_cookie, "could not undo stats entry");
            }
            return Err(map_err(
                format!("insert {netns_cookie}"),
                common::MAP_CONFIG,
            )(e));
        }
        maps.registered.insert(netns_cookie);
        Ok(Registration {
            maps: Arc::clone(&self.maps),
            netns_cookie,
        })
    }

    /// Telemetry of the namespace with `netns_cookie` from now on. Events of namespaces with
    /// no subscriber are dropped. Only namespaces registered with [`FLAG_TELEMETRY`] emit RTO,
    /// retransmit and state events; setsockopt rewrites are always emitted.
    ///
    /// [`FLAG_TELEMETRY`]: super::FLAG_TELEMETRY
    pub fn subscribe(&self, netns_cookie: u64) -> EventStream {
        let (tx, rx) = mpsc::channel();
        lock(&self.subs).entry(netns_cookie).or_default().push(tx);
        EventStream { rx }
    }

    /// Delivers the events of `netns_cookie` into an existing channel, so one
    /// receiver can collect several namespaces (a lab's telemetry).
    pub fn subscribe_into(&self, netns_cookie: u64, tx: mpsc::Sender<super::TcpEvent>) {
        lock(&self.subs).entry(netns_cookie).or_default().push(tx);
    }

    /// The counters of a registered namespace, summed over CPUs.
    pub fn stats(&self, netns_cookie: u64) -> Result<Stats, BpfError> {
        let maps = lock(&self.maps);
        let values = maps
            .stats
            .get(&netns_cookie, 0)
            .map_err(map_err(format!("lookup {netns_cookie}"), common::MAP_STATS))?;
        Ok(Stats::from_per_cpu(values.iter().map(|v| &v.0)))
    }
}

/// A namespace registered with the [`Engine`]; dropping it stops compressing that namespace.
#[derive(Debug)]
#[must_use = "dropping the Registration unregisters the namespace"]
pub struct Registration {
    maps: Arc<Mutex<Maps>>,
    netns_cookie: u64,
}

impl std::fmt::Debug for Maps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Maps")
            .field("registered", &self.registered)
            .finish_non_exhaustive()
    }
}

impl Registration {
    /// The registered namespace's cookie.
    pub fn netns_cookie(&self) -> u64 {
        self.netns_cookie
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut maps = lock(&self.maps);
        let cookie = self.netns_cookie;
        maps.registered.remove(&cookie);
        // Errors cannot be returned from drop; log them (the entry then stays until exit).
        if let Err(e) = maps.config.remove(&cookie) {
            tracing::warn!(error = %e, netns_cookie = cookie, "removing netns config failed");
        }
        if let Err(e) = maps.stats.remove(&cookie) {
            tracing::warn!(error = %e, netns_cookie = cookie, "removing netns stats failed");
        }
    }
}
