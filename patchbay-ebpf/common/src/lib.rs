//! Types shared between patchbay's eBPF programs and its userspace loader.
//!
//! Every type is `#[repr(C)]` with explicit padding, so the kernel side (built with nightly for
//! `bpfel-unknown-none`) and the userspace side (stable, x86_64/aarch64 little endian) agree on
//! the byte layout. With the `user` feature, [`Pod`] is implemented for them; the loader turns
//! it into `aya::Pod` without forcing aya onto the eBPF side.
#![no_std]
#![deny(missing_docs)]

/// Name of the per-namespace configuration map (`HashMap<u64 netns cookie, NetnsConfig>`).
pub const MAP_CONFIG: &str = "PB_CONFIG";
/// Name of the per-namespace statistics map (`PerCpuHashMap<u64 netns cookie, NetnsStats>`).
pub const MAP_STATS: &str = "PB_STATS";
/// Name of the telemetry ring buffer map (records are [`TcpEvent`]).
pub const MAP_EVENTS: &str = "PB_EVENTS";
/// Name of the log-level map (`Array<u32>`, one entry): the most verbose aya-log level the
/// programs emit, `LOG_OFF` (0) to `LOG_TRACE` (5). Written by userspace at run time.
pub const MAP_LOG: &str = "PB_LOG";
/// Name of the aya-log record ring buffer (created by `aya-log-ebpf`).
pub const MAP_AYA_LOGS: &str = "AYA_LOGS";
/// Name of the `sock_ops` program in the object.
pub const PROG_SOCKOPS: &str = "timer_sockops";
/// Name of the `cgroup/setsockopt` program in the object.
pub const PROG_SETSOCKOPT: &str = "timer_setsockopt";

/// Maximum number of namespaces one engine can register (size of the hash maps).
pub const MAX_NETNS: u32 = 1024;
/// Size of the telemetry ring buffer in bytes (a power of two and a multiple of the page size).
pub const EVENTS_BYTES: u32 = 1 << 20;

/// `PB_LOG` value: the programs emit no log records (the default).
pub const LOG_OFF: u32 = 0;
/// `PB_LOG` value: errors only (aya-log's `Level::Error`).
pub const LOG_ERROR: u32 = 1;
/// `PB_LOG` value: warnings and above (a `bpf_setsockopt` the kernel refused).
pub const LOG_WARN: u32 = 2;
/// `PB_LOG` value: info and above.
pub const LOG_INFO: u32 = 3;
/// `PB_LOG` value: debug and above (sockets of unregistered namespaces skipped, give-up
/// deadline left to SYN retries, application timeouts kept).
pub const LOG_DEBUG: u32 = 4;
/// `PB_LOG` value: everything.
pub const LOG_TRACE: u32 = 5;

/// [`NetnsConfig::flags`]: emit RTO/retransmit/state telemetry into the ring buffer.
pub const FLAG_TELEMETRY: u32 = 1 << 0;
/// [`NetnsConfig::flags`]: scale timers set by applications (`cgroup/setsockopt` program).
pub const FLAG_SCALE_SOCKOPTS: u32 = 1 << 1;

/// Per-namespace configuration, written by userspace, read by the programs.
///
/// Zero in a value field means "leave this timer alone".
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetnsConfig {
    /// `FLAG_*` bits.
    pub flags: u32,
    /// Reply to `BPF_SOCK_OPS_TIMEOUT_INIT`, in jiffies (initial SYN / SYN-ACK RTO).
    pub timeout_init_jiffies: u32,
    /// `TCP_BPF_RTO_MIN` in microseconds (kernel 5.10+; 8000..=200000 at HZ=250).
    pub rto_min_us: u32,
    /// `TCP_BPF_DELACK_MAX` in microseconds (kernel 5.10+).
    pub delack_max_us: u32,
    /// `TCP_RTO_MAX_MS` in milliseconds (kernel 6.15+).
    pub rto_max_ms: u32,
    /// `TCP_USER_TIMEOUT` in milliseconds for established sockets whose application set none.
    pub user_timeout_ms: u32,
    /// Time scale k times 1000 (k = 20 is 20000); used to scale application-set timers.
    pub scale_milli: u32,
    /// Explicit padding; must be zero.
    pub _pad: u32,
}

/// Index into [`NetnsStats`] arrays for `TCP_BPF_RTO_MIN`.
pub const OPT_RTO_MIN: usize = 0;
/// Index into [`NetnsStats`] arrays for `TCP_BPF_DELACK_MAX`.
pub const OPT_DELACK_MAX: usize = 1;
/// Index into [`NetnsStats`] arrays for `TCP_RTO_MAX_MS`.
pub const OPT_RTO_MAX: usize = 2;
/// Index into [`NetnsStats`] arrays for `TCP_USER_TIMEOUT` (set by the sock_ops program).
pub const OPT_USER_TIMEOUT: usize = 3;
/// Number of options the sock_ops program sets.
pub const OPT_COUNT: usize = 4;

/// Index into [`NetnsStats::rewrites`] for `TCP_USER_TIMEOUT`.
pub const REWRITE_USER_TIMEOUT: usize = 0;
/// Index into [`NetnsStats::rewrites`] for `TCP_KEEPIDLE`.
pub const REWRITE_KEEPIDLE: usize = 1;
/// Index into [`NetnsStats::rewrites`] for `TCP_KEEPINTVL`.
pub const REWRITE_KEEPINTVL: usize = 2;
/// Number of application options the setsockopt program rewrites.
pub const REWRITE_COUNT: usize = 3;

/// Per-namespace, per-CPU counters kept by the programs (userspace sums the CPUs).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetnsStats {
    /// Successful `bpf_setsockopt` calls per `OPT_*` index.
    pub set_ok: [u64; OPT_COUNT],
    /// Failed `bpf_setsockopt` calls per `OPT_*` index.
    pub set_fail: [u64; OPT_COUNT],
    /// Last error returned per `OPT_*` index (a negative errno; 0 = none).
    pub last_err: [i32; OPT_COUNT],
    /// Application setsockopt calls rewritten per `REWRITE_*` index.
    pub rewrites: [u64; REWRITE_COUNT],
    /// Established sockets where the application's own `TCP_USER_TIMEOUT` was kept.
    pub app_user_timeout_kept: u64,
    /// Telemetry events lost because the ring buffer was full.
    pub events_lost: u64,
}

/// [`TcpEvent::kind`]: `BPF_SOCK_OPS_TIMEOUT_INIT` answered; `args[0]` = jiffies replied.
pub const KIND_TIMEOUT_INIT: u16 = 1;
/// [`TcpEvent::kind`]: active open started (`TCP_CONNECT_CB`).
pub const KIND_CONNECT: u16 = 2;
/// [`TcpEvent::kind`]: active open established.
pub const KIND_ACTIVE_ESTABLISHED: u16 = 3;
/// [`TcpEvent::kind`]: passive open established.
pub const KIND_PASSIVE_ESTABLISHED: u16 = 4;
/// [`TcpEvent::kind`]: retransmission timer fired (`RTO_CB`);
/// `args` = icsk_retransmits, icsk_rto (jiffies), expired.
pub const KIND_RTO: u16 = 5;
/// [`TcpEvent::kind`]: a segment was retransmitted (`RETRANS_CB`); `args` = seq, segs, err.
pub const KIND_RETRANS: u16 = 6;
/// [`TcpEvent::kind`]: TCP state change (`STATE_CB`); `args` = old state, new state.
pub const KIND_STATE: u16 = 7;
/// [`TcpEvent::kind`]: the setsockopt program rewrote an application option;
/// `args` = optname, original value, applied value.
pub const KIND_SOCKOPT_REWRITE: u16 = 8;

/// One telemetry record in the ring buffer (88 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TcpEvent {
    /// `bpf_ktime_get_ns()` (CLOCK_MONOTONIC) when the event happened.
    pub ts_ns: u64,
    /// Network namespace cookie of the socket.
    pub netns_cookie: u64,
    /// Local address, network byte order; IPv4 uses the first 4 bytes.
    pub local_addr: [u8; 16],
    /// Remote address, network byte order; IPv4 uses the first 4 bytes.
    pub remote_addr: [u8; 16],
    /// Address family (`AF_INET` = 2, `AF_INET6` = 10; 0 when unknown).
    pub family: u16,
    /// Local port in host byte order.
    pub local_port: u16,
    /// Remote port in host byte order.
    pub remote_port: u16,
    /// `KIND_*`.
    pub kind: u16,
    /// Kind-specific arguments (see the `KIND_*` constants).
    pub args: [u32; 3],
    /// TCP state of the socket when the event was emitted (`TCP_ESTABLISHED` = 1, ...).
    pub state: u32,
    /// `tcp_sock::total_retrans`.
    pub total_retrans: u32,
    /// Smoothed RTT in microseconds << 3, as the kernel keeps it.
    pub srtt_us: u32,
    /// Congestion window in segments.
    pub snd_cwnd: u32,
    /// Explicit padding; zero.
    pub _pad: u32,
}

/// How the setsockopt program scales an application-set timer: `value / k` rounded to the
/// nearest integer and at least 1, with k = `scale_milli / 1000`. Values <= 0 (0 disables a
/// user timeout; negatives are the kernel's to refuse) and k <= 1 leave `value` unchanged.
#[inline(always)]
pub const fn scale_app_timer(value: i32, scale_milli: u32) -> i32 {
    if value <= 0 || scale_milli <= 1000 {
        return value;
    }
    let scaled = (value as u64 * 1000 + scale_milli as u64 / 2) / scale_milli as u64;
    if scaled == 0 { 1 } else { scaled as i32 }
}

/// Marker for plain-old-data types: `#[repr(C)]`, no padding holes, every bit pattern valid.
///
/// # Safety
/// Implement only for such types.
#[cfg(feature = "user")]
pub unsafe trait Pod: Copy + 'static {}

#[cfg(feature = "user")]
// SAFETY: repr(C), only integer fields, explicit padding field.
unsafe impl Pod for NetnsConfig {}
#[cfg(feature = "user")]
// SAFETY: repr(C), only integer fields and arrays of them; layout has no holes (checked below).
unsafe impl Pod for NetnsStats {}
#[cfg(feature = "user")]
// SAFETY: repr(C), only integer fields, explicit padding field.
unsafe impl Pod for TcpEvent {}

const _: () = {
    assert!(core::mem::size_of::<NetnsConfig>() == 32);
    assert!(core::mem::size_of::<NetnsStats>() == 4 * 8 + 4 * 8 + 4 * 4 + 3 * 8 + 8 + 8);
    assert!(core::mem::size_of::<TcpEvent>() == 88);
    assert!(core::mem::align_of::<TcpEvent>() == 8);
};

#[cfg(test)]
mod tests {
    use super::scale_app_timer;

    #[test]
    fn scales_app_timers() {
        assert_eq!(scale_app_timer(30_000, 20_000), 1_500);
        assert_eq!(scale_app_timer(30, 20_000), 2); // 1.5 s rounds to 2
        assert_eq!(scale_app_timer(75, 20_000), 4); // 3.75 s
        assert_eq!(scale_app_timer(1, 20_000), 1); // never 0 (0 would mean "off")
        assert_eq!(scale_app_timer(0, 20_000), 0);
        assert_eq!(scale_app_timer(-5, 20_000), -5);
        assert_eq!(scale_app_timer(30_000, 1_000), 30_000);
        assert_eq!(scale_app_timer(30_000, 2_500), 12_000); // k = 2.5
        assert_eq!(scale_app_timer(i32::MAX, 1_001), 2_145_338_309);
    }
}
