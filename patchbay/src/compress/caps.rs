//! What the running kernel offers for timer compression, as plain data.
//!
//! [`KernelCaps`] and [`SysctlDefaults`] are filled by [`super::probe`] (and the BPF
//! loader's probe for [`BpfFeatures`]); planning only reads them, so plans can be computed and
//! tested without root or a kernel.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// How HZ was determined.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HzSource {
    /// Measured from `/proc/timer_list` (`jiffies:` against `now at ... nsecs`, sampled twice).
    TimerList,
    /// `CONFIG_HZ` from `/boot/config-$(uname -r)`.
    BootConfig,
    /// `CONFIG_HZ` from `/proc/config.gz`.
    ProcConfig,
    /// Given by the caller (tests, offline planning).
    Given,
}

/// eBPF capabilities, filled by the BPF loader's probe. All false = no BPF.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BpfFeatures {
    /// A `sock_ops` program can be loaded and attached to a cgroup v2.
    pub sock_ops: bool,
    /// `BPF_SOCK_OPS_TIMEOUT_INIT` replies are honoured (initial RTO).
    pub timeout_init: bool,
    /// `bpf_setsockopt(TCP_BPF_RTO_MIN)` works.
    pub rto_min: bool,
    /// `bpf_setsockopt(TCP_BPF_DELACK_MAX)` works.
    pub delack_max: bool,
    /// `bpf_setsockopt(TCP_RTO_MAX_MS)` works (Linux 6.15+).
    pub rto_max_ms_sockopt: bool,
    /// `bpf_setsockopt(TCP_USER_TIMEOUT)` works.
    pub user_timeout: bool,
    /// `bpf_get_netns_cookie` is usable from sock_ops (per-lab scoping).
    pub netns_cookie: bool,
    /// A `cgroup/setsockopt` program can be attached (scales app-set timers).
    pub cgroup_setsockopt: bool,
    /// BPF ring buffers are available (telemetry).
    pub ringbuf: bool,
}

impl BpfFeatures {
    /// Everything this crate's programs use, as on Linux 6.18.
    pub fn all() -> Self {
        Self {
            sock_ops: true,
            timeout_init: true,
            rto_min: true,
            delack_max: true,
            rto_max_ms_sockopt: true,
            user_timeout: true,
            netns_cookie: true,
            cgroup_setsockopt: true,
            ringbuf: true,
        }
    }

    /// Whether per-socket BPF settings can be scoped to one lab at all.
    pub fn usable(&self) -> bool {
        self.sock_ops && self.netns_cookie
    }
}

/// Which per-network-namespace timer sysctls exist (derived from [`SysctlDefaults`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetnsSysctlCaps {
    /// `net.ipv4.tcp_rto_min_us` (Linux 6.11+).
    pub tcp_rto_min_us: bool,
    /// `net.ipv4.tcp_rto_max_ms` (Linux 6.15+).
    pub tcp_rto_max_ms: bool,
    /// `net.ipv4.tcp_syn_linear_timeouts`.
    pub tcp_syn_linear_timeouts: bool,
    /// `net.ipv4.tcp_comp_sack_delay_ns`.
    pub tcp_comp_sack_delay_ns: bool,
    /// `net.netfilter.nf_conntrack_*timeout*` keys present in a fresh namespace.
    pub conntrack_timeouts: Vec<String>,
    /// Per-device neighbour keys (`net.ipv4.neigh.<dev>.*`) exist.
    pub neigh_per_device: bool,
    /// `net.ipv6.conf.default.*` exists (IPv6 enabled).
    pub ipv6_conf: bool,
}

impl NetnsSysctlCaps {
    /// Derives the capability flags from the keys a fresh namespace has.
    pub fn from_defaults(defaults: &SysctlDefaults) -> Self {
        Self {
            tcp_rto_min_us: defaults.contains("net/ipv4/tcp_rto_min_us"),
            tcp_rto_max_ms: defaults.contains("net/ipv4/tcp_rto_max_ms"),
            tcp_syn_linear_timeouts: defaults.contains("net/ipv4/tcp_syn_linear_timeouts"),
            tcp_comp_sack_delay_ns: defaults.contains("net/ipv4/tcp_comp_sack_delay_ns"),
            conntrack_timeouts: defaults
                .conntrack_timeout_keys()
                .map(str::to_string)
                .collect(),
            neigh_per_device: defaults.neigh(NeighFamily::V4, "retrans_time_ms").is_some(),
            ipv6_conf: defaults.contains("net/ipv6/conf/default/router_solicitation_delay"),
        }
    }
}

/// Everything planning needs to know about the kernel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KernelCaps {
    /// The kernel's HZ (never `getconf CLK_TCK`, which is USER_HZ).
    pub hz: u32,
    /// How `hz` was found.
    pub hz_source: HzSource,
    /// `uname -r`.
    pub kernel_release: String,
    /// Per-netns sysctls present.
    pub sysctls: NetnsSysctlCaps,
    /// eBPF capabilities.
    pub bpf: BpfFeatures,
}

impl KernelCaps {
    /// Caps for offline planning and tests: the given HZ and BPF caps, sysctls derived from
    /// `defaults`.
    pub fn given(hz: u32, release: &str, defaults: &SysctlDefaults, bpf: BpfFeatures) -> Self {
        Self {
            hz,
            hz_source: HzSource::Given,
            kernel_release: release.to_string(),
            sysctls: NetnsSysctlCaps::from_defaults(defaults),
            bpf,
        }
    }
}

/// IPv4 or IPv6 neighbour table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum NeighFamily {
    /// ARP (`net/ipv4/neigh`).
    V4,
    /// NDISC (`net/ipv6/neigh`).
    V6,
}

impl NeighFamily {
    /// `ipv4` or `ipv6`.
    pub fn dir(self) -> &'static str {
        match self {
            NeighFamily::V4 => "ipv4",
            NeighFamily::V6 => "ipv6",
        }
    }
}

/// Sysctl values of a *fresh* network namespace, keyed relative to `/proc/sys`
/// (`net/ipv4/tcp_rto_min_us`). Per-device neighbour defaults are read from `lo`
/// (`net/ipv4/neigh/lo/*`), which new devices copy. Values are the kernel's text.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SysctlDefaults {
    /// Key (relative to /proc/sys) to value.
    pub values: BTreeMap<String, String>,
}

impl SysctlDefaults {
    /// Whether the key exists.
    pub fn contains(&self, key: &str) -> bool {
        self.values.contains_key(key)
    }

    /// The value parsed as an unsigned integer, if present and numeric.
    pub fn get_u64(&self, key: &str) -> Option<u64> {
        self.values.get(key).and_then(|v| v.trim().parse().ok())
    }

    /// The value parsed as a signed integer, if present and numeric.
    pub fn get_i64(&self, key: &str) -> Option<i64> {
        self.values.get(key).and_then(|v| v.trim().parse().ok())
    }

    /// A per-device neighbour default (read from `lo`).
    pub fn neigh(&self, family: NeighFamily, name: &str) -> Option<u64> {
        self.get_u64(&format!("net/{}/neigh/lo/{name}", family.dir()))
    }

    /// `nf_conntrack_*` keys that are timeouts (in seconds).
    pub fn conntrack_timeout_keys(&self) -> impl Iterator<Item = &str> {
        self.values
            .keys()
            .map(String::as_str)
            .filter(|k| is_conntrack_timeout_key(k))
    }

    /// The compiled-in defaults of Linux 6.18 with conntrack and IPv6 built in (the
    /// values a fresh namespace showed on the development host). For tests and offline
    /// planning only: a real lab plans from [`super::probe::probe_netns_defaults`].
    pub fn linux_6_18() -> Self {
        let mut values = BTreeMap::new();
        let mut put = |k: &str, v: &str| {
            values.insert(k.to_string(), v.to_string());
        };
        for (k, v) in [
            ("tcp_rto_min_us", "200000"),
            ("tcp_rto_max_ms", "120000"),
            ("tcp_syn_retries", "6"),
            ("tcp_synack_retries", "5"),
            ("tcp_syn_linear_timeouts", "4"),
            ("tcp_retries1", "3"),
            ("tcp_retries2", "15"),
            ("tcp_orphan_retries", "0"),
            ("tcp_keepalive_time", "7200"),
            ("tcp_keepalive_intvl", "75"),
            ("tcp_keepalive_probes", "9"),
            ("tcp_fin_timeout", "60"),
            ("tcp_comp_sack_delay_ns", "1000000"),
        ] {
            put(&format!("net/ipv4/{k}"), v);
        }
        for (k, v) in [
            ("nf_conntrack_frag6_timeout", "60"),
            ("nf_conntrack_generic_timeout", "600"),
            ("nf_conntrack_gre_timeout", "30"),
            ("nf_conntrack_gre_timeout_stream", "180"),
            ("nf_conntrack_icmp_timeout", "30"),
            ("nf_conntrack_icmpv6_timeout", "30"),
            ("nf_conntrack_tcp_max_retrans", "3"),
            ("nf_conntrack_tcp_timeout_close", "10"),
            ("nf_conntrack_tcp_timeout_close_wait", "60"),
            ("nf_conntrack_tcp_timeout_established", "432000"),
            ("nf_conntrack_tcp_timeout_fin_wait", "120"),
            ("nf_conntrack_tcp_timeout_last_ack", "30"),
            ("nf_conntrack_tcp_timeout_max_retrans", "300"),
            ("nf_conntrack_tcp_timeout_syn_recv", "60"),
            ("nf_conntrack_tcp_timeout_syn_sent", "120"),
            ("nf_conntrack_tcp_timeout_time_wait", "120"),
            ("nf_conntrack_tcp_timeout_unacknowledged", "300"),
            ("nf_conntrack_udp_timeout", "30"),
            ("nf_conntrack_udp_timeout_stream", "120"),
        ] {
            put(&format!("net/netfilter/{k}"), v);
        }
        for fam in ["ipv4", "ipv6"] {
            for (k, v) in [
                ("base_reachable_time_ms", "30000"),
                ("retrans_time_ms", "1000"),
                ("delay_first_probe_time", "5"),
                ("gc_stale_time", "60"),
                ("interval_probe_time_ms", "5000"),
                ("ucast_solicit", "3"),
                ("mcast_solicit", "3"),
            ] {
                put(&format!("net/{fam}/neigh/lo/{k}"), v);
            }
        }
        for (k, v) in [
            ("router_solicitation_delay", "1"),
            ("router_solicitation_interval", "4"),
            ("router_solicitation_max_interval", "3600"),
            ("router_solicitations", "-1"),
            ("dad_transmits", "1"),
        ] {
            put(&format!("net/ipv6/conf/default/{k}"), v);
        }
        Self { values }
    }
}

/// Whether a key is a conntrack timeout in seconds (`nf_conntrack_*timeout*`).
pub fn is_conntrack_timeout_key(key: &str) -> bool {
    key.strip_prefix("net/netfilter/")
        .is_some_and(|name| name.starts_with("nf_conntrack_") && name.contains("timeout"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derives_caps_from_defaults() {
        let d = SysctlDefaults::linux_6_18();
        let caps = NetnsSysctlCaps::from_defaults(&d);
        assert!(caps.tcp_rto_min_us && caps.tcp_rto_max_ms && caps.neigh_per_device);
        assert!(
            caps.conntrack_timeouts
                .contains(&"net/netfilter/nf_conntrack_udp_timeout".into())
        );
        // A retransmission count is not a timeout.
        assert!(
            !caps
                .conntrack_timeouts
                .iter()
                .any(|k| k.ends_with("tcp_max_retrans"))
        );
        assert_eq!(d.neigh(NeighFamily::V6, "retrans_time_ms"), Some(1000));
        let mut old = d.clone();
        old.values.remove("net/ipv4/tcp_rto_max_ms");
        assert!(!NetnsSysctlCaps::from_defaults(&old).tcp_rto_max_ms);
    }

    #[test]
    fn caps_roundtrip_json() {
        let d = SysctlDefaults::linux_6_18();
        let caps = KernelCaps::given(250, "6.18.0", &d, BpfFeatures::all());
        let text = serde_json::to_string(&caps).expect("serializes");
        let back: KernelCaps = serde_json::from_str(&text).expect("deserializes");
        assert_eq!(back, caps);
    }
}
