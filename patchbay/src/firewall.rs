//! Firewalls on routers and devices: presets plus custom nft rules,
//! rendered by a pure function into an `inet` table.
//!
//! Kernel requirements: `CONFIG_NF_TABLES_INET`, `NFT_CT`, `NFT_REJECT_INET`
//! (for [`FirewallAction::Reject`]), Linux 5.4+; the `nft` binary.
//!
//! "Inbound" means traffic arriving on an *outside* interface: a router's
//! `wan`, or any interface of a device. The rules sit in the `input` chain
//! (traffic to the node) and, on routers, the `forward` chain (traffic
//! through it).

use std::collections::BTreeSet;
use std::fmt::Write;

use serde::{Deserialize, Serialize};

use crate::sys::nft;

mod outbound;
pub(crate) use outbound::check_outside;
pub use outbound::{OutboundPolicy, PortPolicy};

/// The nft table (family `inet`) holding a node's firewall.
pub const FIREWALL_TABLE: &str = "patchbay-fw";

/// What a firewall lets in.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "preset")]
#[non_exhaustive]
pub enum FirewallPolicy {
    /// Everything in (only the custom rules apply).
    #[default]
    Open,
    /// Only replies to outbound traffic (conntrack established/related).
    BlockInbound,
    /// Replies, plus new inbound connections to these ports.
    AllowPorts {
        /// TCP ports open to inbound connections.
        #[serde(default)]
        tcp: BTreeSet<u16>,
        /// UDP ports open to inbound traffic.
        #[serde(default)]
        udp: BTreeSet<u16>,
    },
    /// Upstream's corporate firewall: inbound as [`FirewallPolicy::BlockInbound`],
    /// outbound only TCP 80/443 and UDP 53 ([`OutboundPolicy::corporate`]).
    Corporate,
    /// A hotel/airport captive portal: inbound as
    /// [`FirewallPolicy::BlockInbound`], outbound any TCP but only UDP 53
    /// ([`OutboundPolicy::captive_portal`]).
    CaptivePortal,
}

/// What happens to blocked traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum FirewallAction {
    /// Silently dropped (senders time out).
    #[default]
    Drop,
    /// Refused: TCP reset for TCP, ICMP port unreachable otherwise.
    Reject,
}

/// A firewall. In TOML:
/// `firewall = { preset = "allow-ports", tcp = [22], udp = [], action = "reject" }`
/// or `firewall = { preset = "block-inbound" }`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Firewall {
    /// The preset.
    #[serde(flatten)]
    pub policy: FirewallPolicy,
    /// Drop or reject blocked traffic.
    #[serde(default)]
    pub action: FirewallAction,
    /// Custom nft rule lines (nft syntax, family `inet`), evaluated first
    /// for inbound traffic, e.g. `"ip saddr 198.19.0.7 drop"`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<String>,
    /// What may go out (TCP/UDP destination ports). `None`: the preset's
    /// (corporate, captive portal), else everything.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outbound: Option<OutboundPolicy>,
}

impl Firewall {
    /// Only replies get in; blocked traffic is dropped.
    pub fn block_inbound() -> Firewall {
        Firewall {
            policy: FirewallPolicy::BlockInbound,
            ..Default::default()
        }
    }

    /// Replies plus new connections to the given ports.
    pub fn allow_ports(
        tcp: impl IntoIterator<Item = u16>,
        udp: impl IntoIterator<Item = u16>,
    ) -> Firewall {
        Firewall {
            policy: FirewallPolicy::AllowPorts {
                tcp: tcp.into_iter().collect(),
                udp: udp.into_iter().collect(),
            },
            ..Default::default()
        }
    }

    /// Upstream's corporate firewall: blocks inbound, lets out only TCP
    /// 80/443 and UDP 53.
    pub fn corporate() -> Firewall {
        Firewall {
            policy: FirewallPolicy::Corporate,
            ..Default::default()
        }
    }

    /// A captive-portal firewall: blocks inbound, lets out any TCP and
    /// only UDP 53.
    pub fn captive_portal() -> Firewall {
        Firewall {
            policy: FirewallPolicy::CaptivePortal,
            ..Default::default()
        }
    }

    /// Replaces the outbound policy (overrides a preset's).
    pub fn outbound(mut self, outbound: OutboundPolicy) -> Firewall {
        self.outbound = Some(outbound);
        self
    }

    /// The outbound policy in effect (own, else the preset's, else open).
    pub fn effective_outbound(&self) -> OutboundPolicy {
        outbound::effective(&self.policy, self.outbound.as_ref())
    }

    /// Sets the action for blocked traffic.
    pub fn action(mut self, action: FirewallAction) -> Firewall {
        self.action = action;
        self
    }

    /// Adds a custom nft rule line.
    pub fn rule(mut self, rule: impl Into<String>) -> Firewall {
        self.rules.push(rule.into());
        self
    }
}

/// Renders the ruleset for `nft -f -` that (re)creates the firewall table
/// of a node whose outside interfaces are `outside`, with a `forward`
/// chain when `forward` (routers). An open firewall without custom rules
/// removes the table. Deterministic.
pub fn render_firewall(fw: &Firewall, outside: &[String], forward: bool) -> String {
    let out = fw.effective_outbound();
    if fw.policy == FirewallPolicy::Open && fw.rules.is_empty() && out.is_open() {
        return nft::remove_table("inet", FIREWALL_TABLE);
    }
    let set = outside
        .iter()
        .map(|i| format!("\"{i}\""))
        .collect::<Vec<_>>()
        .join(", ");
    let mut b = String::new();
    // `writeln!` into a String cannot fail.
    let mut w = |line: String| {
        let _ = writeln!(b, "{line}");
    };
    w(format!("table inet {FIREWALL_TABLE} {{"));
    let chains: &[&str] = if forward {
        &["input", "forward"]
    } else {
        &["input"]
    };
    for chain in chains {
        w(format!("\tchain {chain} {{"));
        w(format!(
            "\t\ttype filter hook {chain} priority filter; policy accept;"
        ));
        w(format!("\t\tiifname != {{ {set} }} accept"));
        for r in &fw.rules {
            w(format!("\t\t{}", r.trim()));
        }
        if fw.policy != FirewallPolicy::Open {
            w("\t\tct state established,related accept".into());
            if *chain == "input" {
                // IPv6 neighbour discovery is how the upstream router reaches this node's
                // address at all: it is not inbound traffic to filter (RFC 4890 4.4.1).
                w("\t\ticmpv6 type { nd-neighbor-solicit, nd-neighbor-advert, nd-router-solicit, nd-router-advert } accept".into());
            }
        }
        if let FirewallPolicy::AllowPorts { tcp, udp } = &fw.policy {
            for (proto, ports) in [("tcp", tcp), ("udp", udp)] {
                if !ports.is_empty() {
                    let p = ports.iter().map(u16::to_string).collect::<Vec<_>>();
                    w(format!("\t\t{proto} dport {{ {} }} accept", p.join(", ")));
                }
            }
        }
        if fw.policy != FirewallPolicy::Open {
            match fw.action {
                FirewallAction::Drop => w("\t\tdrop".into()),
                FirewallAction::Reject => {
                    w("\t\tmeta l4proto tcp reject with tcp reset".into());
                    w("\t\treject".into());
                }
            }
        }
        w("\t}".into());
    }
    for line in outbound::render_out_chain(&out, outside, forward, fw.action) {
        w(line);
    }
    w("}".into());
    nft::replace_table("inet", FIREWALL_TABLE, &b)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;

    #[test]
    fn allow_ports_with_reject_renders_in_order() {
        let fw = Firewall::allow_ports([443, 22], [53]).action(FirewallAction::Reject);
        let got = render_firewall(&fw, &["wan".into()], true);
        let input = "\tchain input {\n\t\ttype filter hook input priority filter; policy accept;\n\t\tiifname != { \"wan\" } accept\n\t\tct state established,related accept\n\t\ticmpv6 type { nd-neighbor-solicit, nd-neighbor-advert, nd-router-solicit, nd-router-advert } accept\n\t\ttcp dport { 22, 443 } accept\n\t\tudp dport { 53 } accept\n\t\tmeta l4proto tcp reject with tcp reset\n\t\treject\n\t}\n";
        assert!(got.starts_with("add table inet patchbay-fw\ndelete table inet patchbay-fw\ntable inet patchbay-fw {\n"), "{got}");
        assert!(got.contains(input), "{got}");
        assert!(got.contains("\tchain forward {"), "{got}");
    }

    #[test]
    fn open_without_rules_removes_and_toml_parses() {
        assert_eq!(
            render_firewall(&Firewall::default(), &["eth0".into()], false),
            "add table inet patchbay-fw\ndelete table inet patchbay-fw\n"
        );
        #[derive(Deserialize)]
        struct Doc {
            firewall: Firewall,
        }
        let d: Doc = toml::from_str(
            "firewall = { preset = \"allow-ports\", tcp = [22], action = \"reject\", rules = [\"ip saddr 1.2.3.4 drop\"] }",
        )
        .unwrap();
        assert_eq!(
            d.firewall,
            Firewall::allow_ports([22], [])
                .action(FirewallAction::Reject)
                .rule("ip saddr 1.2.3.4 drop")
        );
        let d: Doc = toml::from_str("firewall = { preset = \"block-inbound\" }").unwrap();
        assert_eq!(d.firewall, Firewall::block_inbound());
        assert!(toml::from_str::<Doc>("firewall = { preset = \"block-everything\" }").is_err());
    }
}
