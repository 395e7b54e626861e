//! patchbay's eBPF programs: per-namespace TCP timer compression.
//!
//! * `timer_sockops` (`sock_ops`, cgroup v2): scales the initial RTO, sets RTO min / delayed-ACK
//!   max / RTO max / user timeout on lab sockets and emits RTO/retransmit/state telemetry.
//! * `timer_setsockopt` (`cgroup/setsockopt`): scales timers that applications set themselves.
//!
//! Both look up a per-namespace config keyed by `bpf_get_netns_cookie`; sockets of namespaces
//! that userspace did not register are left untouched. Rare decisions (a namespace not
//! registered, a deadline left to the SYN retries, a `bpf_setsockopt` refused) go to aya-log, gated by the
//! run-time level in `PB_LOG` (off by default: no record is built). See docs/ebpf.md.
#![no_std]
#![no_main]

use core::{ffi::c_void, ptr};

use aya_ebpf::{
    bindings::{
        BPF_SK_STORAGE_GET_F_CREATE, BPF_SOCK_OPS_RETRANS_CB_FLAG, BPF_SOCK_OPS_RTO_CB_FLAG,
        BPF_SOCK_OPS_STATE_CB_FLAG, bpf_sock,
    },
    btf_maps::SkStorage,
    helpers::generated::{
        bpf_get_netns_cookie, bpf_getsockopt, bpf_ktime_get_ns, bpf_setsockopt,
        bpf_sk_storage_get,
    },
    macros::{btf_map, cgroup_sockopt, map, sock_ops},
    maps::{Array, HashMap, PerCpuHashMap, RingBuf},
    programs::{SockOpsContext, SockoptContext},
};
use aya_log_ebpf::{debug, warn};
use patchbay_ebpf_common::{
    EVENTS_BYTES, FLAG_SCALE_SOCKOPTS, FLAG_TELEMETRY, KIND_ACTIVE_ESTABLISHED, KIND_CONNECT,
    KIND_PASSIVE_ESTABLISHED, KIND_RETRANS, KIND_RTO, KIND_SOCKOPT_REWRITE, KIND_STATE,
    KIND_TIMEOUT_INIT, LOG_DEBUG, LOG_WARN, MAX_NETNS, NetnsConfig, NetnsStats, OPT_DELACK_MAX,
    OPT_RTO_MAX, OPT_RTO_MIN, OPT_USER_TIMEOUT, REWRITE_KEEPIDLE, REWRITE_KEEPINTVL,
    REWRITE_USER_TIMEOUT, TcpEvent, scale_app_timer,
};

// sock_ops operations (include/uapi/linux/bpf.h).
const OP_TIMEOUT_INIT: u32 = 1;
const OP_TCP_CONNECT_CB: u32 = 3;
const OP_ACTIVE_ESTABLISHED_CB: u32 = 4;
const OP_PASSIVE_ESTABLISHED_CB: u32 = 5;
const OP_RTO_CB: u32 = 8;
const OP_RETRANS_CB: u32 = 9;
const OP_STATE_CB: u32 = 10;

// Socket option levels and names (include/uapi/linux/tcp.h, bpf.h).
const SOL_TCP: i32 = 6;
const TCP_KEEPIDLE: i32 = 4;
const TCP_KEEPINTVL: i32 = 5;
const TCP_USER_TIMEOUT: i32 = 18;
const TCP_RTO_MAX_MS: i32 = 44;
const TCP_BPF_DELACK_MAX: i32 = 1003;
const TCP_BPF_RTO_MIN: i32 = 1004;
const AF_INET: u32 = 2;
const AF_INET6: u32 = 10;
const IPPROTO_TCP: u32 = 6;

/// Per-namespace configuration, written by userspace.
#[map(name = "PB_CONFIG")]
static PB_CONFIG: HashMap<u64, NetnsConfig> = HashMap::with_max_entries(MAX_NETNS, 0);

/// Per-namespace, per-CPU counters; userspace creates the entry when it registers a namespace.
#[map(name = "PB_STATS")]
static PB_STATS: PerCpuHashMap<u64, NetnsStats> = PerCpuHashMap::with_max_entries(MAX_NETNS, 0);

/// Telemetry records (`TcpEvent`).
#[map(name = "PB_EVENTS")]
static PB_EVENTS: RingBuf = RingBuf::with_byte_size(EVENTS_BYTES, 0);

/// Log level (`LOG_*`, 0 = off), written by userspace; checked before any aya-log record is
/// built, so logging costs one array load when off.
#[map(name = "PB_LOG")]
static PB_LOG: Array<u32> = Array::with_max_entries(1, 0);

/// Per-socket flag: nonzero when the application set its own `TCP_USER_TIMEOUT`.
///
/// Creating it can fail: recent kernels (7.3) allocate local storage with `kmalloc_nolock`,
/// which always fails on architectures without a double-word cmpxchg for the slab freelist
/// (User-Mode Linux). `app_owns_user_timeout` therefore also reads the socket's value.
#[btf_map]
static PB_APP_UT: SkStorage<u32> = SkStorage::new();

/// Whether records of `level` (`LOG_*`) are wanted.
#[inline(always)]
fn log_on(level: u32) -> bool {
    PB_LOG.get(0).is_some_and(|l| *l >= level)
}

#[inline(always)]
fn stats(cookie: u64) -> Option<&'static mut NetnsStats> {
    // SAFETY: the per-CPU value is only touched by this CPU while the program runs.
    PB_STATS.get_ptr_mut(cookie).map(|p| unsafe { &mut *p })
}

#[inline(always)]
fn app_ut_ptr(sk: *mut bpf_sock, create: bool) -> *mut u32 {
    if sk.is_null() {
        return ptr::null_mut();
    }
    let flags = if create {
        BPF_SK_STORAGE_GET_F_CREATE as u64
    } else {
        0
    };
    let map = ptr::from_ref(&PB_APP_UT).cast_mut().cast::<c_void>();
    // SAFETY: map is a sk_storage map, sk a non-null socket pointer from the context.
    unsafe { bpf_sk_storage_get(map, sk.cast(), ptr::null_mut(), flags) }.cast::<u32>()
}

fn emit(ev: &TcpEvent) {
    if PB_EVENTS.output::<TcpEvent>(ev, 0).is_err()
        && let Some(s) = stats(ev.netns_cookie)
    {
        s.events_lost += 1;
    }
}

/// Fills the socket part of an event from a sock_ops context.
#[inline(always)]
fn sockops_event(ctx: &SockOpsContext, cookie: u64, kind: u16) -> TcpEvent {
    let family = ctx.family();
    let mut ev = TcpEvent {
        // SAFETY: helper without preconditions.
        ts_ns: unsafe { bpf_ktime_get_ns() },
        netns_cookie: cookie,
        family: family as u16,
        kind,
        local_port: ctx.local_port() as u16,
        remote_port: u32::from_be(ctx.remote_port()) as u16,
        ..TcpEvent::default()
    };
    if family == AF_INET {
        ev.local_addr[..4].copy_from_slice(&ctx.local_ip4().to_ne_bytes());
        ev.remote_addr[..4].copy_from_slice(&ctx.remote_ip4().to_ne_bytes());
    } else if family == AF_INET6 {
        let (l, r) = (ctx.local_ip6(), ctx.remote_ip6());
        for i in 0..4 {
            ev.local_addr[i * 4..i * 4 + 4].copy_from_slice(&l[i].to_ne_bytes());
            ev.remote_addr[i * 4..i * 4 + 4].copy_from_slice(&r[i].to_ne_bytes());
        }
    }
    // SAFETY: ctx.ops is the program's context; the kernel returns 0 for these fields on
    // request sockets.
    unsafe {
        let ops = &*ctx.ops;
        ev.state = ops.state;
        ev.total_retrans = ops.total_retrans;
        ev.srtt_us = ops.srtt_us;
        ev.snd_cwnd = ops.snd_cwnd;
    }
    ev
}

#[sock_ops]
pub fn timer_sockops(ctx: SockOpsContext) -> u32 {
    // SAFETY: the context pointer is valid for this helper in sock_ops (kernel 5.15+).
    let cookie = unsafe { bpf_get_netns_cookie(ctx.ops.cast()) };
    // SAFETY: read-only lookup; the value is copied out.
    let op = ctx.op();
    let Some(cfg) = (unsafe { PB_CONFIG.get(cookie) }).copied() else {
        // Once per connection, not per callback.
        if matches!(
            op,
            OP_TCP_CONNECT_CB | OP_ACTIVE_ESTABLISHED_CB | OP_PASSIVE_ESTABLISHED_CB
        ) && log_on(LOG_DEBUG)
        {
            debug!(
                &ctx,
                "netns {}: not registered, socket to port {} left alone (op {})",
                cookie,
                u32::from_be(ctx.remote_port()) as u16,
                op
            );
        }
        return 1;
    };
    let telemetry = cfg.flags & FLAG_TELEMETRY != 0;
    match op {
        OP_TIMEOUT_INIT => {
            if cfg.timeout_init_jiffies != 0 {
                ctx.set_reply(cfg.timeout_init_jiffies);
                if telemetry {
                    let mut ev = sockops_event(&ctx, cookie, KIND_TIMEOUT_INIT);
                    ev.args[0] = cfg.timeout_init_jiffies;
                    emit(&ev);
                }
            }
        }
        OP_TCP_CONNECT_CB | OP_ACTIVE_ESTABLISHED_CB | OP_PASSIVE_ESTABLISHED_CB => {
            on_connect_or_established(&ctx, cookie, &cfg, op);
        }
        OP_RTO_CB if cfg.user_timeout_ms != 0 && ctx.arg(0) == 0 => {
            // The first RTO of this episode: the give-up deadline starts to
            // matter now (the kernel counts it from retrans_stamp anyway).
            // Setting it here rather than at establishment keeps keepalive
            // alone: with a user timeout set, the kernel's keepalive timer
            // ignores TCP_KEEPCNT.
            set_user_timeout(&ctx, cookie, &cfg);
            if telemetry {
                let mut ev = sockops_event(&ctx, cookie, KIND_RTO);
                ev.args = [ctx.arg(0), ctx.arg(1), ctx.arg(2)];
                emit(&ev);
            }
        }
        OP_RTO_CB | OP_RETRANS_CB | OP_STATE_CB if telemetry => {
            let kind = match op {
                OP_RTO_CB => KIND_RTO,
                OP_RETRANS_CB => KIND_RETRANS,
                _ => KIND_STATE,
            };
            let mut ev = sockops_event(&ctx, cookie, kind);
            ev.args = [ctx.arg(0), ctx.arg(1), ctx.arg(2)];
            emit(&ev);
        }
        _ => {}
    }
    1
}

/// `bpf_setsockopt(SOL_TCP, optname, value)` on a full socket, counted in the stats.
#[inline(always)]
fn set_tcp(ctx: &SockOpsContext, cookie: u64, idx: usize, optname: i32, value: u32) {
    if value == 0 {
        return;
    }
    set_tcp_raw(ctx, cookie, idx, optname, value as i32);
}

/// `bpf_setsockopt` without the zero check (0 is a meaningful value for some options).
#[inline(always)]
fn set_tcp_raw(ctx: &SockOpsContext, cookie: u64, idx: usize, optname: i32, value: i32) {
    let mut val = value;
    // SAFETY: ctx.ops is a sock_ops context of a full socket (checked by the caller); val is a
    // 4-byte stack buffer.
    let ret = unsafe {
        bpf_setsockopt(
            ctx.ops.cast(),
            SOL_TCP,
            optname,
            ptr::from_mut(&mut val).cast(),
            4,
        )
    };
    if let Some(s) = stats(cookie)
        && idx < s.set_ok.len()
    {
        if ret == 0 {
            s.set_ok[idx] += 1;
        } else {
            s.set_fail[idx] += 1;
            s.last_err[idx] = ret as i32;
        }
    }
    if ret != 0 && log_on(LOG_WARN) {
        warn!(
            ctx,
            "netns {}: bpf_setsockopt(SOL_TCP, {}, {}) refused: errno {}",
            cookie,
            optname,
            value,
            -(ret as i32)
        );
    }
}

/// The socket's current `TCP_USER_TIMEOUT` (ms), read with `bpf_getsockopt`; `None` where the
/// kernel's `bpf_getsockopt` does not serve the option (before Linux 6.1, which reuses
/// `do_tcp_getsockopt`).
#[inline(always)]
fn current_user_timeout(ctx: &SockOpsContext) -> Option<u32> {
    let mut val: i32 = 0;
    // SAFETY: ctx.ops is a sock_ops context of a full socket (checked by the caller); val is a
    // 4-byte stack buffer.
    let ret = unsafe {
        bpf_getsockopt(
            ctx.ops.cast(),
            SOL_TCP,
            TCP_USER_TIMEOUT,
            ptr::from_mut(&mut val).cast(),
            4,
        )
    };
    (ret == 0).then_some(val as u32)
}

/// Whether the application set its own `TCP_USER_TIMEOUT` on this full socket, and the
/// socket's current value where the kernel lets it be read.
///
/// Two sources, since either can be missing: the `PB_APP_UT` flag (set by `timer_setsockopt`;
/// missing where the kernel cannot allocate socket storage) and the current value (unreadable
/// before Linux 6.1). A nonzero value other than the namespace's own deadline is the
/// application's. An application value equal to that deadline counts as ours: re-setting it
/// changes nothing.
#[inline(always)]
fn app_owns_user_timeout(ctx: &SockOpsContext, cfg: &NetnsConfig) -> (bool, Option<u32>) {
    // SAFETY: reading the context's socket pointer.
    let sk = unsafe { (*ctx.ops).__bindgen_anon_2.sk };
    let app = app_ut_ptr(sk, false);
    let current = current_user_timeout(ctx);
    // SAFETY: app is null or points to this socket's storage.
    let flagged = !app.is_null() && unsafe { *app } != 0;
    let foreign = matches!(current, Some(v) if v != 0 && v != cfg.user_timeout_ms);
    (flagged || foreign, current)
}

/// Sets the planned give-up deadline on an established socket whose
/// application did not set its own `TCP_USER_TIMEOUT`.
fn set_user_timeout(ctx: &SockOpsContext, cookie: u64, cfg: &NetnsConfig) {
    // SAFETY: reading the context.
    let (full, state) = unsafe { ((*ctx.ops).is_fullsock, (*ctx.ops).state) };
    if full == 0 {
        return;
    }
    // SYN_SENT (2) and SYN_RECV (3) have their own retry limits.
    if state == 2 || state == 3 {
        if log_on(LOG_DEBUG) {
            debug!(
                ctx,
                "netns {}: first RTO in state {}: give-up deadline left to the SYN retry count",
                cookie,
                state
            );
        }
        return;
    }
    if app_owns_user_timeout(ctx, cfg).0 {
        if let Some(s) = stats(cookie) {
            s.app_user_timeout_kept += 1;
        }
        if log_on(LOG_DEBUG) {
            debug!(
                ctx,
                "netns {}: application set TCP_USER_TIMEOUT itself; kept",
                cookie
            );
        }
        return;
    }
    set_tcp(
        ctx,
        cookie,
        OPT_USER_TIMEOUT,
        TCP_USER_TIMEOUT,
        cfg.user_timeout_ms,
    );
}

fn on_connect_or_established(ctx: &SockOpsContext, cookie: u64, cfg: &NetnsConfig, op: u32) {
    // SAFETY: reading the context.
    if unsafe { (*ctx.ops).is_fullsock } == 0 {
        return;
    }
    set_tcp(ctx, cookie, OPT_RTO_MIN, TCP_BPF_RTO_MIN, cfg.rto_min_us);
    set_tcp(
        ctx,
        cookie,
        OPT_DELACK_MAX,
        TCP_BPF_DELACK_MAX,
        cfg.delack_max_us,
    );
    set_tcp(ctx, cookie, OPT_RTO_MAX, TCP_RTO_MAX_MS, cfg.rto_max_ms);
    let telemetry = cfg.flags & FLAG_TELEMETRY != 0;
    let wants_deadline = op != OP_TCP_CONNECT_CB && cfg.user_timeout_ms != 0;
    if wants_deadline {
        let (app, current) = app_owns_user_timeout(ctx, cfg);
        if !app {
            // Writing the value back (0, the default, where it cannot be read) changes
            // nothing but shows in the stats whether this kernel accepts the option, before
            // the first RTO.
            set_tcp_raw(
                ctx,
                cookie,
                OPT_USER_TIMEOUT,
                TCP_USER_TIMEOUT,
                current.unwrap_or(0) as i32,
            );
        }
    }
    if wants_deadline && !telemetry {
        // The deadline is set at the first RTO (see the RTO_CB arm).
        if ctx.set_cb_flags((ctx.cb_flags() | BPF_SOCK_OPS_RTO_CB_FLAG) as i32).is_err()
            && let Some(s) = stats(cookie)
        {
            s.set_fail[OPT_USER_TIMEOUT] += 1;
        }
    }
    if telemetry {
        let flags =
            BPF_SOCK_OPS_RTO_CB_FLAG | BPF_SOCK_OPS_RETRANS_CB_FLAG | BPF_SOCK_OPS_STATE_CB_FLAG;
        // Failure leaves the callbacks off; the missing events show it to userspace.
        if ctx.set_cb_flags((ctx.cb_flags() | flags) as i32).is_err()
            && let Some(s) = stats(cookie)
        {
            s.events_lost += 1;
        }
        let kind = match op {
            OP_TCP_CONNECT_CB => KIND_CONNECT,
            OP_ACTIVE_ESTABLISHED_CB => KIND_ACTIVE_ESTABLISHED,
            _ => KIND_PASSIVE_ESTABLISHED,
        };
        emit(&sockops_event(ctx, cookie, kind));
    }
}

#[cgroup_sockopt(setsockopt)]
pub fn timer_setsockopt(ctx: SockoptContext) -> i32 {
    // SAFETY: ctx.sockopt is the program context.
    let so = unsafe { &mut *ctx.sockopt };
    let passthrough = |so: &mut aya_ebpf::bindings::bpf_sockopt| {
        // Leave the context alone: the kernel then uses the buffer as it stands, which keeps a
        // rewrite made by another program in the chain (nested patchbay processes attach to
        // nested cgroups, and all their programs run). Only options larger than a page need
        // optlen 0 ("use the application's buffer"): before Linux 6.5 the kernel failed them
        // with EFAULT when a program left optlen above PAGE_SIZE.
        if so.optlen > 4096 {
            so.optlen = 0;
        }
        1
    };
    if so.level != SOL_TCP {
        return passthrough(so);
    }
    let rewrite = match so.optname {
        TCP_USER_TIMEOUT => REWRITE_USER_TIMEOUT,
        TCP_KEEPIDLE => REWRITE_KEEPIDLE,
        TCP_KEEPINTVL => REWRITE_KEEPINTVL,
        _ => return passthrough(so),
    };
    // SAFETY: the context pointer is valid for this helper in cgroup sockopt programs.
    let cookie = unsafe { bpf_get_netns_cookie(ctx.sockopt.cast()) };
    // SAFETY: read-only lookup; the value is copied out.
    let Some(cfg) = (unsafe { PB_CONFIG.get(cookie) }).copied() else {
        return passthrough(so);
    };
    // SAFETY: reading the context's socket pointer (always a full socket here).
    let sk = unsafe { so.__bindgen_anon_1.sk };
    if cfg.flags & FLAG_SCALE_SOCKOPTS == 0
        || sk.is_null()
        || unsafe { (*sk).protocol } != IPPROTO_TCP
    {
        return passthrough(so);
    }
    // SAFETY: union fields of the context.
    let (optval, optval_end) =
        unsafe { (so.__bindgen_anon_2.optval, so.__bindgen_anon_3.optval_end) };
    let p = optval.cast::<i32>();
    if so.optlen != 4 || (p as usize) + 4 > optval_end as usize {
        return passthrough(so);
    }
    // SAFETY: bounds checked against optval_end above.
    let original = unsafe { ptr::read_unaligned(p) };
    let applied = scale_app_timer(original, cfg.scale_milli);
    if rewrite == REWRITE_USER_TIMEOUT {
        let app = app_ut_ptr(sk, true);
        if !app.is_null() {
            // SAFETY: app points to this socket's storage.
            unsafe { *app = 1 };
        } else if log_on(LOG_DEBUG) {
            // The sock_ops program then relies on reading the value (Linux 6.1+).
            debug!(
                &ctx,
                "netns {}: no socket storage for the TCP_USER_TIMEOUT flag (bpf_sk_storage_get failed)",
                cookie
            );
        }
    }
    if applied != original {
        // SAFETY: bounds checked against optval_end above.
        unsafe { ptr::write_unaligned(p, applied) };
        if let Some(s) = stats(cookie) {
            s.rewrites[rewrite] += 1;
        }
        let ev = TcpEvent {
            // SAFETY: helper without preconditions.
            ts_ns: unsafe { bpf_ktime_get_ns() },
            netns_cookie: cookie,
            // SAFETY: sk is a non-null full socket.
            family: unsafe { (*sk).family } as u16,
            kind: KIND_SOCKOPT_REWRITE,
            args: [so.optname as u32, original as u32, applied as u32],
            ..TcpEvent::default()
        };
        emit(&ev);
    }
    1
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

/// License of the programs (GPL-compatible, needed for the helpers they call).
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
