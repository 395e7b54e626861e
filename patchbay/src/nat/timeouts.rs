//! Conntrack timeouts: first-class NAT configuration, applied as
//! per-namespace sysctls (`net/netfilter/nf_conntrack_*_timeout`) in one
//! router's (or device's) namespace only.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::link::units;

/// Connection-tracking timeouts of one namespace. Every timeout patchbay
/// puts into NAT rules (e.g. the lifetime of endpoint-independent mappings)
/// comes from here, so timer compression can scale all of them with
/// [`ConntrackTimeouts::scaled`].
///
/// Defaults are Linux's. In TOML every field is optional and written as a
/// duration string: `[router.conntrack] udp = "30s"`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", default, deny_unknown_fields)]
#[non_exhaustive]
pub struct ConntrackTimeouts {
    /// UDP flow seen in one direction only (`nf_conntrack_udp_timeout`).
    #[serde(with = "units::duration")]
    pub udp: Duration,
    /// UDP flow seen in both directions (`nf_conntrack_udp_timeout_stream`).
    #[serde(with = "units::duration")]
    pub udp_stream: Duration,
    /// ICMP (`nf_conntrack_icmp_timeout`).
    #[serde(with = "units::duration")]
    pub icmp: Duration,
    /// Established TCP (`nf_conntrack_tcp_timeout_established`).
    #[serde(with = "units::duration")]
    pub tcp_established: Duration,
    /// TCP SYN sent (`nf_conntrack_tcp_timeout_syn_sent`).
    #[serde(with = "units::duration")]
    pub tcp_syn_sent: Duration,
    /// TCP SYN received (`nf_conntrack_tcp_timeout_syn_recv`).
    #[serde(with = "units::duration")]
    pub tcp_syn_recv: Duration,
    /// TCP FIN wait (`nf_conntrack_tcp_timeout_fin_wait`).
    #[serde(with = "units::duration")]
    pub tcp_fin_wait: Duration,
    /// TCP close wait (`nf_conntrack_tcp_timeout_close_wait`).
    #[serde(with = "units::duration")]
    pub tcp_close_wait: Duration,
    /// TCP last ACK (`nf_conntrack_tcp_timeout_last_ack`).
    #[serde(with = "units::duration")]
    pub tcp_last_ack: Duration,
    /// TCP TIME_WAIT (`nf_conntrack_tcp_timeout_time_wait`).
    #[serde(with = "units::duration")]
    pub tcp_time_wait: Duration,
    /// TCP close (`nf_conntrack_tcp_timeout_close`).
    #[serde(with = "units::duration")]
    pub tcp_close: Duration,
    /// Other protocols (`nf_conntrack_generic_timeout`).
    #[serde(with = "units::duration")]
    pub generic: Duration,
    /// Lifetime of an idle endpoint-independent mapping (the timeout of the
    /// nft `eim` map), refreshed by outbound packets. Default: `udp`.
    #[serde(with = "units::opt_duration", skip_serializing_if = "Option::is_none")]
    pub eim_map: Option<Duration>,
}

impl Default for ConntrackTimeouts {
    fn default() -> Self {
        let s = Duration::from_secs;
        ConntrackTimeouts {
            udp: s(30),
            udp_stream: s(120),
            icmp: s(30),
            tcp_established: s(432_000),
            tcp_syn_sent: s(120),
            tcp_syn_recv: s(60),
            tcp_fin_wait: s(120),
            tcp_close_wait: s(60),
            tcp_last_ack: s(30),
            tcp_time_wait: s(120),
            tcp_close: s(10),
            generic: s(600),
            eim_map: None,
        }
    }
}

/// Whole seconds for a sysctl: rounded to nearest, at least 1 (the kernel
/// counts conntrack timeouts in seconds; 0 would expire entries at once).
fn secs(d: Duration) -> String {
    (d.as_secs_f64().round() as u64).max(1).to_string()
}

impl ConntrackTimeouts {
    /// The lifetime of endpoint-independent mappings (`eim_map`, or `udp`).
    pub fn eim_map(&self) -> Duration {
        self.eim_map.unwrap_or(self.udp)
    }

    /// The sysctls (keys relative to `/proc/sys`) that set these timeouts,
    /// in whole seconds (rounded, at least 1 s).
    pub(crate) fn to_sysctls(&self) -> BTreeMap<String, String> {
        let keys = [
            ("udp_timeout", self.udp),
            ("udp_timeout_stream", self.udp_stream),
            ("icmp_timeout", self.icmp),
            ("tcp_timeout_established", self.tcp_established),
            ("tcp_timeout_syn_sent", self.tcp_syn_sent),
            ("tcp_timeout_syn_recv", self.tcp_syn_recv),
            ("tcp_timeout_fin_wait", self.tcp_fin_wait),
            ("tcp_timeout_close_wait", self.tcp_close_wait),
            ("tcp_timeout_last_ack", self.tcp_last_ack),
            ("tcp_timeout_time_wait", self.tcp_time_wait),
            ("tcp_timeout_close", self.tcp_close),
            ("generic_timeout", self.generic),
        ];
        keys.into_iter()
            .map(|(k, v)| (format!("net/netfilter/nf_conntrack_{k}"), secs(v)))
            .collect()
    }

    /// Applies `f` to every timeout (the hook for timer compression, which
    /// computes its own clamps).
    pub(crate) fn map_durations(
        &self,
        mut f: impl FnMut(Duration) -> Duration,
    ) -> ConntrackTimeouts {
        ConntrackTimeouts {
            udp: f(self.udp),
            udp_stream: f(self.udp_stream),
            icmp: f(self.icmp),
            tcp_established: f(self.tcp_established),
            tcp_syn_sent: f(self.tcp_syn_sent),
            tcp_syn_recv: f(self.tcp_syn_recv),
            tcp_fin_wait: f(self.tcp_fin_wait),
            tcp_close_wait: f(self.tcp_close_wait),
            tcp_last_ack: f(self.tcp_last_ack),
            tcp_time_wait: f(self.tcp_time_wait),
            tcp_close: f(self.tcp_close),
            generic: f(self.generic),
            eim_map: self.eim_map.map(&mut f),
        }
    }

    /// Every timeout divided by `k` (time runs `k` times faster). Sysctls round to whole
    /// seconds (at least 1 s), nft map timeouts to milliseconds.
    pub fn scaled(&self, k: crate::compress::TimeScale) -> ConntrackTimeouts {
        self.map_durations(|d| k.to_wall(d))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_linux_defaults_and_render_as_sysctls() {
        let s = ConntrackTimeouts::default().to_sysctls();
        assert_eq!(s["net/netfilter/nf_conntrack_udp_timeout"], "30");
        assert_eq!(
            s["net/netfilter/nf_conntrack_tcp_timeout_established"],
            "432000"
        );
        assert_eq!(s.len(), 12);
    }

    #[test]
    fn partial_toml_and_scaling() {
        let t: ConntrackTimeouts = toml::from_str("udp = \"3s\"\neim-map = \"2500ms\"").unwrap();
        assert_eq!(t.udp, Duration::from_secs(3));
        assert_eq!(t.icmp, Duration::from_secs(30));
        assert_eq!(t.eim_map(), Duration::from_millis(2500));
        let k = t.scaled(crate::compress::TimeScale::new(10.0).expect("k"));
        assert_eq!(k.udp, Duration::from_millis(300));
        assert_eq!(k.eim_map(), Duration::from_millis(250));
        assert_eq!(
            k.to_sysctls()["net/netfilter/nf_conntrack_udp_timeout"],
            "1"
        );
        let e = toml::from_str::<ConntrackTimeouts>("udpp = \"3s\"").unwrap_err();
        assert!(e.to_string().contains("unknown field `udpp`"), "{e}");
        let e = toml::from_str::<ConntrackTimeouts>("udp = \"-3s\"").unwrap_err();
        assert!(e.to_string().contains("negative duration"), "{e}");
    }
}
