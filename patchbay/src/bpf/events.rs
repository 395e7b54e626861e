//! Telemetry events: decoding ring-buffer records and delivering them per namespace.

use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    os::fd::AsRawFd,
    sync::{Arc, Mutex, mpsc},
    time::Duration,
};

use aya::maps::{MapData, RingBuf};
use patchbay_ebpf_common as common;
use serde::Serialize;

/// What happened to a socket (decoded `KIND_*` plus its arguments).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
#[non_exhaustive]
pub enum EventKind {
    /// The initial (SYN or SYN-ACK) RTO was set to `jiffies` (`BPF_SOCK_OPS_TIMEOUT_INIT`).
    TimeoutInit {
        /// Initial RTO in jiffies.
        jiffies: u32,
    },
    /// An active open started (`TCP_CONNECT_CB`).
    Connect,
    /// An active open completed.
    ActiveEstablished,
    /// A passive open completed.
    PassiveEstablished,
    /// The retransmission timer fired (`RTO_CB`, kernel 4.16+).
    Rto {
        /// `icsk_retransmits` before this retransmission.
        retransmits: u32,
        /// Current RTO in jiffies.
        rto_jiffies: u32,
        /// Whether the connection timed out (gives up).
        expired: bool,
    },
    /// A segment was retransmitted (`RETRANS_CB`).
    Retrans {
        /// Sequence number of the first byte.
        seq: u32,
        /// Number of segments.
        segs: u32,
        /// Result of the transmission (0 or a negative errno).
        err: i32,
    },
    /// The TCP state changed (`STATE_CB`); states are the kernel's `TCP_*` numbers.
    State {
        /// State before.
        old: u32,
        /// State after.
        new: u32,
    },
    /// The setsockopt program scaled an application-set option.
    SockoptRewrite {
        /// `optname` at level `SOL_TCP`.
        optname: i32,
        /// The value the application passed.
        original: i32,
        /// The value the kernel received.
        applied: i32,
    },
    /// A record kind this version does not know.
    Unknown {
        /// Raw `kind`.
        raw: u16,
    },
}

/// One telemetry event, decoded from a [`common::TcpEvent`] ring-buffer record.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct TcpEvent {
    /// `CLOCK_MONOTONIC` time of the event (`bpf_ktime_get_ns`).
    pub monotonic: Duration,
    /// Network namespace cookie of the socket.
    pub netns_cookie: u64,
    /// Local address (None for records without a socket address, e.g. rewrites).
    pub local: Option<SocketAddr>,
    /// Remote address.
    pub remote: Option<SocketAddr>,
    /// What happened.
    pub kind: EventKind,
    /// TCP state number when the event was emitted.
    pub state: u32,
    /// Total retransmissions of the socket so far.
    pub total_retrans: u32,
    /// Smoothed RTT in microseconds (kernel value >> 3).
    pub srtt_us: u32,
    /// Congestion window in segments.
    pub snd_cwnd: u32,
}

fn addr(family: u16, bytes: [u8; 16], port: u16) -> Option<SocketAddr> {
    let ip = match i32::from(family) {
        libc::AF_INET => IpAddr::V4(Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3])),
        libc::AF_INET6 => IpAddr::V6(Ipv6Addr::from(bytes)),
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

impl TcpEvent {
    /// Decodes a raw record.
    pub(crate) fn from_raw(raw: &common::TcpEvent) -> Self {
        let [a0, a1, a2] = raw.args;
        let kind = match raw.kind {
            common::KIND_TIMEOUT_INIT => EventKind::TimeoutInit { jiffies: a0 },
            common::KIND_CONNECT => EventKind::Connect,
            common::KIND_ACTIVE_ESTABLISHED => EventKind::ActiveEstablished,
            common::KIND_PASSIVE_ESTABLISHED => EventKind::PassiveEstablished,
            common::KIND_RTO => EventKind::Rto {
                retransmits: a0,
                rto_jiffies: a1,
                expired: a2 != 0,
            },
            common::KIND_RETRANS => EventKind::Retrans {
                seq: a0,
                segs: a1,
                err: a2 as i32,
            },
            common::KIND_STATE => EventKind::State { old: a0, new: a1 },
            common::KIND_SOCKOPT_REWRITE => EventKind::SockoptRewrite {
                optname: a0 as i32,
                original: a1 as i32,
                applied: a2 as i32,
            },
            raw => EventKind::Unknown { raw },
        };
        let with_addr = raw.kind != common::KIND_SOCKOPT_REWRITE;
        TcpEvent {
            monotonic: Duration::from_nanos(raw.ts_ns),
            netns_cookie: raw.netns_cookie,
            local: addr(raw.family, raw.local_addr, raw.local_port).filter(|_| with_addr),
            remote: addr(raw.family, raw.remote_addr, raw.remote_port).filter(|_| with_addr),
            kind,
            state: raw.state,
            total_retrans: raw.total_retrans,
            srtt_us: raw.srtt_us >> 3,
            snd_cwnd: raw.snd_cwnd,
        }
    }

    /// Decodes the bytes of one ring-buffer record (None if it is too short).
    pub(crate) fn from_bytes(bytes: &[u8]) -> Option<Self> {
        if bytes.len() < size_of::<common::TcpEvent>() {
            return None;
        }
        // SAFETY: the length is checked; TcpEvent is repr(C) plain integers (any bit pattern is
        // valid); read_unaligned copes with any alignment.
        let raw = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<common::TcpEvent>()) };
        Some(Self::from_raw(&raw))
    }
}

/// Receiving end of the events of one namespace (see [`super::Engine::subscribe`]).
///
/// Dropping it unsubscribes (lazily, at the next event for that namespace).
#[derive(Debug)]
pub struct EventStream {
    pub(crate) rx: mpsc::Receiver<TcpEvent>,
}

impl EventStream {
    /// Waits up to `timeout` for the next event.
    pub fn recv_timeout(&self, timeout: Duration) -> Option<TcpEvent> {
        self.rx.recv_timeout(timeout).ok()
    }

    /// All events received so far, without waiting.
    pub fn drain(&self) -> Vec<TcpEvent> {
        self.rx.try_iter().collect()
    }

    /// The underlying channel (e.g. to forward events into an async task).
    pub fn into_receiver(self) -> mpsc::Receiver<TcpEvent> {
        self.rx
    }

    /// Collects events until none arrives for `quiet` (events are delivered by a reader thread,
    /// so a short quiet period makes sure the ones already emitted are in).
    pub fn collect_until_quiet(&self, quiet: Duration) -> Vec<TcpEvent> {
        let mut out = Vec::new();
        while let Ok(ev) = self.rx.recv_timeout(quiet) {
            out.push(ev);
        }
        out
    }
}

/// Subscribers by namespace cookie.
pub(crate) type Subscribers = Arc<Mutex<BTreeMap<u64, Vec<mpsc::Sender<TcpEvent>>>>>;

/// Delivers one event to the subscribers of its namespace, forgetting closed ones.
pub(crate) fn dispatch(subs: &Subscribers, ev: TcpEvent) {
    let mut map = match subs.lock() {
        Ok(m) => m,
        Err(poisoned) => poisoned.into_inner(),
    };
    if let Some(list) = map.get_mut(&ev.netns_cookie) {
        list.retain(|tx| tx.send(ev).is_ok());
        if list.is_empty() {
            map.remove(&ev.netns_cookie);
        }
    }
}

/// Reads the ring buffer forever (the engine lives as long as the process), dispatching events.
pub(crate) fn reader_loop(
    mut ring: RingBuf<MapData>,
    subs: Subscribers,
    stop: Arc<std::sync::atomic::AtomicBool>,
) {
    let fd = ring.as_raw_fd();
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        while let Some(item) = ring.next() {
            match TcpEvent::from_bytes(&item) {
                Some(ev) => dispatch(&subs, ev),
                None => tracing::warn!(len = item.len(), "short telemetry record ignored"),
            }
        }
        let mut pfd = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: pfd is a valid pollfd array of length 1; fd stays open (ring is owned here).
        let ret = unsafe { libc::poll(&mut pfd, 1, 100) };
        if ret < 0 {
            let err = std::io::Error::last_os_error();
            if err.kind() != std::io::ErrorKind::Interrupted {
                tracing::error!(error = %err, "polling the telemetry ring buffer failed; stopping");
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_rto_v4() {
        let mut raw = common::TcpEvent {
            ts_ns: 1_500_000_000,
            netns_cookie: 7,
            family: libc::AF_INET as u16,
            local_port: 40000,
            remote_port: 80,
            kind: common::KIND_RTO,
            args: [2, 50, 0],
            srtt_us: 8 * 100,
            ..Default::default()
        };
        raw.local_addr[..4].copy_from_slice(&[10, 0, 0, 1]);
        raw.remote_addr[..4].copy_from_slice(&[10, 0, 0, 2]);
        let ev = TcpEvent::from_raw(&raw);
        assert_eq!(ev.monotonic, Duration::from_millis(1500));
        assert_eq!(ev.local, Some("10.0.0.1:40000".parse().expect("addr")));
        assert_eq!(ev.remote, Some("10.0.0.2:80".parse().expect("addr")));
        assert_eq!(
            ev.kind,
            EventKind::Rto {
                retransmits: 2,
                rto_jiffies: 50,
                expired: false
            }
        );
        assert_eq!(ev.srtt_us, 100);
    }

    #[test]
    fn decodes_rewrite_and_bytes() {
        let raw = common::TcpEvent {
            kind: common::KIND_SOCKOPT_REWRITE,
            family: libc::AF_INET6 as u16,
            args: [libc::TCP_USER_TIMEOUT as u32, 30000, 1500],
            ..Default::default()
        };
        // SAFETY: viewing a repr(C) plain-integer struct as bytes.
        let bytes = unsafe {
            std::slice::from_raw_parts(
                std::ptr::from_ref(&raw).cast::<u8>(),
                size_of::<common::TcpEvent>(),
            )
        };
        let ev = TcpEvent::from_bytes(bytes).expect("decoded");
        assert_eq!(ev.local, None);
        assert_eq!(
            ev.kind,
            EventKind::SockoptRewrite {
                optname: libc::TCP_USER_TIMEOUT,
                original: 30000,
                applied: 1500
            }
        );
        assert_eq!(TcpEvent::from_bytes(&bytes[..10]), None);
    }
}
