//! What the running kernel supports, found by loading and exercising things (never by
//! version number).

use std::{
    collections::BTreeMap,
    io,
    net::{TcpListener, TcpStream},
    path::PathBuf,
    time::Duration,
};

use aya::{
    maps::MapType,
    programs::ProgramType,
    sys::{BpfHelper, is_helper_supported, is_map_supported, is_program_supported},
};
use serde::Serialize;

use super::{BpfSockopt, Engine, NetnsConfig, engine::load_object};

/// Kernel capabilities relevant to timer compression, for `patchbay doctor`.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct BpfCaps {
    /// Mount point of the cgroup v2 hierarchy, if any.
    pub cgroup2_mount: Option<PathBuf>,
    /// `BPF_PROG_TYPE_SOCK_OPS` loads (4.13+).
    pub sock_ops: bool,
    /// `BPF_PROG_TYPE_CGROUP_SOCKOPT` loads (5.3+).
    pub cgroup_sockopt: bool,
    /// `BPF_MAP_TYPE_RINGBUF` can be created (5.8+).
    pub ringbuf: bool,
    /// `BPF_MAP_TYPE_SK_STORAGE` can be created (5.2+). The map type, not its entries: on
    /// User-Mode-Linux 7.x every `bpf_sk_storage_get(.., F_CREATE)` fails (the nolock slab
    /// allocation needs `CONFIG_HAVE_ALIGNED_STRUCT_PAGE`, which UML lacks). The engine does not
    /// depend on it: it also reads an application's `TCP_USER_TIMEOUT` back (docs/ebpf.md).
    pub sk_storage: bool,
    /// `bpf_get_netns_cookie` is allowed in sock_ops (5.15+).
    pub netns_cookie_in_sock_ops: bool,
    /// patchbay's whole object passed the verifier.
    pub object_loads: bool,
    /// Load + verify time of the object in milliseconds.
    pub load_ms: Option<f64>,
    /// Instructions the verifier processed per program.
    pub verified_instructions: BTreeMap<String, u32>,
    /// The engine could attach to its cgroup (this moves the probing process into it).
    pub engine: bool,
    /// The kernel asked the program for the initial RTO (`BPF_SOCK_OPS_TIMEOUT_INIT`) on a real
    /// connection in a throwaway namespace.
    pub timeout_init: bool,
    /// Whether `bpf_setsockopt` accepted each option on a real loopback connection in a
    /// throwaway namespace (empty when the engine is unavailable).
    pub sockopts: BTreeMap<BpfSockopt, bool>,
    /// What failed, and why.
    pub errors: BTreeMap<String, String>,
}

fn record<T, E: std::fmt::Display>(
    errors: &mut BTreeMap<String, String>,
    what: &str,
    r: Result<T, E>,
) -> Option<T> {
    match r {
        Ok(v) => Some(v),
        Err(e) => {
            errors.insert(what.to_owned(), e.to_string());
            None
        }
    }
}

/// Probes the kernel. Cheap checks load tiny programs and maps; the socket-option check creates
/// the process's [`Engine`] (moving the process into its cgroup, as any lab with k > 1 does) and
/// exercises it in a throwaway network namespace on a helper thread.
pub fn probe() -> BpfCaps {
    let mut caps = BpfCaps::default();
    let errs = &mut caps.errors;
    caps.cgroup2_mount = crate::sys::cgroup::cgroup2_mount();
    if caps.cgroup2_mount.is_none() {
        errs.insert(
            "cgroup2".into(),
            "no cgroup2 mount in /proc/self/mountinfo".into(),
        );
    }
    let prog = |t| is_program_supported(t);
    caps.sock_ops = record(errs, "sock_ops", prog(ProgramType::SockOps)).unwrap_or(false);
    caps.cgroup_sockopt =
        record(errs, "cgroup_sockopt", prog(ProgramType::CgroupSockopt)).unwrap_or(false);
    caps.ringbuf = record(errs, "ringbuf", is_map_supported(MapType::RingBuf)).unwrap_or(false);
    caps.sk_storage =
        record(errs, "sk_storage", is_map_supported(MapType::SkStorage)).unwrap_or(false);
    let cookie = is_helper_supported(ProgramType::SockOps, BpfHelper::BPF_FUNC_get_netns_cookie);
    caps.netns_cookie_in_sock_ops =
        record(errs, "netns_cookie_in_sock_ops", cookie).unwrap_or(false);
    if let Some((_ebpf, load_time, insns)) = record(errs, "object", load_object()) {
        caps.object_loads = true;
        caps.load_ms = Some(load_time.as_secs_f64() * 1e3);
        caps.verified_instructions = insns
            .into_iter()
            .filter_map(|(k, v)| Some((k.to_owned(), v?)))
            .collect();
    }
    if !caps.object_loads || caps.cgroup2_mount.is_none() {
        return caps;
    }
    let Some(engine) = record(errs, "engine", Engine::get()) else {
        return caps;
    };
    caps.engine = true;
    let probed = std::thread::Builder::new()
        .name("patchbay-bpf-probe".into())
        .spawn(move || probe_sockopts(&engine))
        .map_err(|e| super::BpfError::io("spawning the socket-option probe thread", e))
        .and_then(|h| {
            h.join().unwrap_or_else(|_| {
                let panicked = std::io::Error::other("it panicked");
                Err(super::BpfError::io(
                    "the socket-option probe thread",
                    panicked,
                ))
            })
        });
    if let Some((map, timeout_init)) = record(errs, "sockopts", probed) {
        caps.sockopts = map;
        caps.timeout_init = timeout_init;
    }
    caps
}

/// Runs on a throwaway thread: new netns, loopback connection, read back the stats.
/// Returns whether each option was accepted, and whether `TIMEOUT_INIT` was called.
fn probe_sockopts(engine: &Engine) -> Result<(BTreeMap<BpfSockopt, bool>, bool), super::BpfError> {
    enter_scratch_netns().map_err(|e| super::BpfError::io("creating a scratch netns", e))?;
    let cookie = super::netns_cookie_of_current_thread()
        .map_err(|e| super::BpfError::io("reading SO_NETNS_COOKIE", e))?;
    let cfg = NetnsConfig {
        rto_min_us: 200_000,
        delack_max_us: 40_000,
        rto_max_ms: 120_000,
        user_timeout_ms: 60_000,
        timeout_init_jiffies: 100,
        flags: super::FLAG_TELEMETRY,
        ..NetnsConfig::default()
    };
    let events = engine.subscribe(cookie);
    let reg = engine.register(cookie, cfg)?;
    let io_err = |what: &'static str| move |e| super::BpfError::io(what, e);
    let listener = TcpListener::bind("127.0.0.1:0").map_err(io_err("binding 127.0.0.1:0"))?;
    let addr = listener.local_addr().map_err(io_err("local_addr"))?;
    let client = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
        .map_err(io_err("connecting over loopback"))?;
    let (server, _) = listener.accept().map_err(io_err("accepting"))?;
    let stats = engine.stats(reg.netns_cookie())?;
    drop((client, server));
    let timeout_init = events
        .collect_until_quiet(Duration::from_millis(100))
        .iter()
        .any(|e| matches!(e.kind, super::EventKind::TimeoutInit { .. }));
    let accepted = stats
        .options
        .into_iter()
        .filter(|(_, s)| s.ok + s.failed > 0)
        .map(|(o, s)| (o, s.failed == 0))
        .collect();
    Ok((accepted, timeout_init))
}

/// Moves the calling thread into a new network namespace with `lo` up.
pub(crate) fn enter_scratch_netns() -> io::Result<()> {
    // SAFETY: unshare affects only the calling thread's namespaces.
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
        return Err(io::Error::last_os_error());
    }
    set_lo_up()
}

/// `ip link set lo up` in the calling thread's namespace (ioctl SIOCSIFFLAGS).
fn set_lo_up() -> io::Result<()> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    // SAFETY: plain socket(2); the fd is owned right away.
    let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: raw is a fresh descriptor nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: ifreq is plain data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: req is a valid ifreq for these ioctls.
    unsafe {
        if libc::ioctl(fd.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) != 0 {
            return Err(io::Error::last_os_error());
        }
        req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        if libc::ioctl(fd.as_raw_fd(), libc::SIOCSIFFLAGS, &req) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

impl BpfCaps {
    /// The planning view of these capabilities ([`crate::compress::BpfFeatures`]): a feature
    /// counts only if it was exercised for real (object loaded, engine attached, option
    /// accepted on a live socket).
    pub fn features(&self) -> crate::compress::BpfFeatures {
        let usable = self.object_loads && self.engine;
        let opt = |o: BpfSockopt| usable && self.sockopts.get(&o) == Some(&true);
        crate::compress::BpfFeatures {
            sock_ops: usable && self.sock_ops,
            timeout_init: usable && self.timeout_init,
            rto_min: opt(BpfSockopt::RtoMin),
            delack_max: opt(BpfSockopt::DelackMax),
            rto_max_ms_sockopt: opt(BpfSockopt::RtoMax),
            user_timeout: opt(BpfSockopt::UserTimeout),
            netns_cookie: usable && self.netns_cookie_in_sock_ops,
            cgroup_setsockopt: usable && self.cgroup_sockopt,
            ringbuf: usable && self.ringbuf,
        }
    }
}
