//! Per-namespace counters kept by the eBPF programs, summed over CPUs.

use std::collections::BTreeMap;

use patchbay_ebpf_common as common;
use serde::Serialize;

/// A socket option the `sock_ops` program sets with `bpf_setsockopt`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BpfSockopt {
    /// `TCP_BPF_RTO_MIN` (kernel 5.10+).
    RtoMin,
    /// `TCP_BPF_DELACK_MAX` (kernel 5.10+).
    DelackMax,
    /// `TCP_RTO_MAX_MS` (kernel 6.15+).
    RtoMax,
    /// `TCP_USER_TIMEOUT` on established sockets whose application set none.
    UserTimeout,
}

impl BpfSockopt {
    /// All options, in stats-array order.
    pub const ALL: [BpfSockopt; common::OPT_COUNT] = [
        Self::RtoMin,
        Self::DelackMax,
        Self::RtoMax,
        Self::UserTimeout,
    ];
}

/// An application socket option the `cgroup/setsockopt` program rewrites.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AppSockopt {
    /// `TCP_USER_TIMEOUT` (milliseconds).
    UserTimeout,
    /// `TCP_KEEPIDLE` (seconds; clamped to at least 1).
    KeepIdle,
    /// `TCP_KEEPINTVL` (seconds; clamped to at least 1).
    KeepIntvl,
}

impl AppSockopt {
    /// All options, in stats-array order.
    pub const ALL: [AppSockopt; common::REWRITE_COUNT] =
        [Self::UserTimeout, Self::KeepIdle, Self::KeepIntvl];

    /// The option's `optname` at level `SOL_TCP`.
    pub fn optname(self) -> i32 {
        match self {
            Self::UserTimeout => libc::TCP_USER_TIMEOUT,
            Self::KeepIdle => libc::TCP_KEEPIDLE,
            Self::KeepIntvl => libc::TCP_KEEPINTVL,
        }
    }

    /// The option for an `optname` at level `SOL_TCP`, if it is one the program rewrites.
    pub fn from_optname(optname: i32) -> Option<Self> {
        Self::ALL.into_iter().find(|o| o.optname() == optname)
    }
}

/// Outcome of one `bpf_setsockopt` option.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct OptionStats {
    /// Calls that succeeded.
    pub ok: u64,
    /// Calls the kernel refused (the option is then "not applied" on those sockets).
    pub failed: u64,
    /// Last error seen on any CPU (negative errno), if any call failed.
    pub last_errno: Option<i32>,
}

/// Counters of one registered namespace.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Stats {
    /// `bpf_setsockopt` results per option.
    pub options: BTreeMap<BpfSockopt, OptionStats>,
    /// Application setsockopt calls rewritten per option.
    pub rewrites: BTreeMap<AppSockopt, u64>,
    /// Established sockets that kept their application-set `TCP_USER_TIMEOUT`.
    pub app_user_timeout_kept: u64,
    /// Telemetry events lost because the ring buffer was full (or callbacks refused).
    pub events_lost: u64,
}

impl Stats {
    /// Sums per-CPU counters.
    pub(crate) fn from_per_cpu<'a>(
        values: impl IntoIterator<Item = &'a common::NetnsStats>,
    ) -> Self {
        let mut sum = common::NetnsStats::default();
        for v in values {
            for i in 0..common::OPT_COUNT {
                sum.set_ok[i] += v.set_ok[i];
                sum.set_fail[i] += v.set_fail[i];
                if v.last_err[i] != 0 {
                    sum.last_err[i] = v.last_err[i];
                }
            }
            for i in 0..common::REWRITE_COUNT {
                sum.rewrites[i] += v.rewrites[i];
            }
            sum.app_user_timeout_kept += v.app_user_timeout_kept;
            sum.events_lost += v.events_lost;
        }
        let options = BpfSockopt::ALL
            .into_iter()
            .enumerate()
            .map(|(i, o)| {
                let err = sum.last_err[i];
                let stats = OptionStats {
                    ok: sum.set_ok[i],
                    failed: sum.set_fail[i],
                    last_errno: (err != 0).then_some(err),
                };
                (o, stats)
            })
            .collect();
        let rewrites = AppSockopt::ALL
            .into_iter()
            .enumerate()
            .map(|(i, o)| (o, sum.rewrites[i]))
            .collect();
        Stats {
            options,
            rewrites,
            app_user_timeout_kept: sum.app_user_timeout_kept,
            events_lost: sum.events_lost,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_cpus() {
        let mut a = common::NetnsStats::default();
        a.set_ok[common::OPT_RTO_MIN] = 2;
        a.set_fail[common::OPT_RTO_MAX] = 1;
        a.last_err[common::OPT_RTO_MAX] = -22;
        let mut b = common::NetnsStats::default();
        b.set_ok[common::OPT_RTO_MIN] = 3;
        b.rewrites[common::REWRITE_KEEPIDLE] = 4;
        b.events_lost = 1;
        let s = Stats::from_per_cpu([&a, &b]);
        assert_eq!(s.options[&BpfSockopt::RtoMin].ok, 5);
        assert_eq!(s.options[&BpfSockopt::RtoMax].failed, 1);
        assert_eq!(s.options[&BpfSockopt::RtoMax].last_errno, Some(-22));
        assert_eq!(s.options[&BpfSockopt::DelackMax].last_errno, None);
        assert_eq!(s.rewrites[&AppSockopt::KeepIdle], 4);
        assert_eq!(s.events_lost, 1);
        assert_eq!(
            AppSockopt::from_optname(libc::TCP_KEEPINTVL),
            Some(AppSockopt::KeepIntvl)
        );
        assert_eq!(AppSockopt::from_optname(libc::TCP_SYNCNT), None);
    }
}
