//! Outbound firewall policies: which destination ports a node (or the
//! hosts behind a router) may open connections to. Upstream patchbay's
//! `Corporate` (only TCP 80/443 and UDP 53) and `CaptivePortal` (any TCP,
//! only UDP 53) presets are built from these.
//!
//! Rendered into the `out` chain of the node's `inet patchbay-fw` table:
//! the `forward` hook on routers (traffic leaving through `wan`), the
//! `output` hook on devices (traffic leaving any interface). Only TCP and
//! UDP are filtered; ICMP and other protocols pass. Replies to connections
//! that came in (conntrack `established,related`) always pass.
//!
//! On a device the drop happens in the sender's own output path, so the
//! application sees an error at once (`EPERM` for a drop, `ECONNREFUSED`
//! for a TCP reset); on a router, hosts behind it see silence (drop) or a
//! refusal (reject), as behind a real middlebox.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::invalid::{InvalidLab, InvalidReason};

use super::{FirewallAction, FirewallPolicy};

/// Which destination ports of one protocol may be used outbound. In TOML:
/// `"allow-all"`, `"block-all"` or a list of ports (`[80, 443]`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(try_from = "RawPorts", into = "RawPorts")]
#[non_exhaustive]
pub enum PortPolicy {
    /// Every destination port (no filtering).
    #[default]
    AllowAll,
    /// Only these destination ports; the rest is blocked.
    Allow(BTreeSet<u16>),
    /// No destination port.
    BlockAll,
}

#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum RawPorts {
    Word(String),
    Ports(BTreeSet<u16>),
}

impl TryFrom<RawPorts> for PortPolicy {
    type Error = InvalidLab;
    fn try_from(r: RawPorts) -> Result<Self, InvalidLab> {
        match r {
            RawPorts::Ports(p) => Ok(PortPolicy::Allow(p)),
            RawPorts::Word(w) => match w.as_str() {
                "allow-all" => Ok(PortPolicy::AllowAll),
                "block-all" => Ok(PortPolicy::BlockAll),
                _ => Err(InvalidLab::new(
                    "outbound",
                    InvalidReason::Unknown,
                    format!(
                        "unknown outbound port policy {w:?}: use \"allow-all\", \"block-all\" or a list of ports such as [80, 443]"
                    ),
                )),
            },
        }
    }
}

impl From<PortPolicy> for RawPorts {
    fn from(p: PortPolicy) -> Self {
        match p {
            PortPolicy::AllowAll => RawPorts::Word("allow-all".into()),
            PortPolicy::BlockAll => RawPorts::Word("block-all".into()),
            PortPolicy::Allow(p) => RawPorts::Ports(p),
        }
    }
}

impl PortPolicy {
    /// Only these ports.
    pub fn allow(ports: impl IntoIterator<Item = u16>) -> PortPolicy {
        PortPolicy::Allow(ports.into_iter().collect())
    }
}

/// What a node may send out, per protocol. In TOML:
/// `outbound = { tcp = [80, 443], udp = [53] }` (a missing key allows all).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", default, deny_unknown_fields)]
pub struct OutboundPolicy {
    /// TCP destination ports.
    pub tcp: PortPolicy,
    /// UDP destination ports.
    pub udp: PortPolicy,
}

impl OutboundPolicy {
    /// Upstream's corporate firewall: only TCP 80 and 443 and UDP 53 (DNS).
    pub fn corporate() -> OutboundPolicy {
        OutboundPolicy {
            tcp: PortPolicy::allow([80, 443]),
            udp: PortPolicy::allow([53]),
        }
    }

    /// A hotel or airport captive portal (after login): TCP to any port,
    /// UDP only to 53 (DNS), so QUIC and direct UDP fail.
    pub fn captive_portal() -> OutboundPolicy {
        OutboundPolicy {
            tcp: PortPolicy::AllowAll,
            udp: PortPolicy::allow([53]),
        }
    }

    /// Whether it filters anything.
    pub fn is_open(&self) -> bool {
        self.tcp == PortPolicy::AllowAll && self.udp == PortPolicy::AllowAll
    }
}

/// The outbound policy a firewall implies: its own `outbound`, else the
/// preset's (corporate, captive portal), else none.
pub(crate) fn effective(policy: &FirewallPolicy, own: Option<&OutboundPolicy>) -> OutboundPolicy {
    if let Some(o) = own {
        return o.clone();
    }
    match policy {
        FirewallPolicy::Corporate => OutboundPolicy::corporate(),
        FirewallPolicy::CaptivePortal => OutboundPolicy::captive_portal(),
        _ => OutboundPolicy::default(),
    }
}

/// The `out` chain (nft lines, tab-indented) for `out` on traffic leaving
/// through `outside`: `forward` hook on routers, `output` on devices.
/// Empty when the policy is open.
pub(crate) fn render_out_chain(
    out: &OutboundPolicy,
    outside: &[String],
    forward: bool,
    action: FirewallAction,
) -> Vec<String> {
    if out.is_open() {
        return vec![];
    }
    let hook = if forward { "forward" } else { "output" };
    let set = outside
        .iter()
        .map(|i| format!("\"{i}\""))
        .collect::<Vec<_>>()
        .join(", ");
    let mut v = vec![
        "\tchain out {".to_string(),
        format!("\t\ttype filter hook {hook} priority filter + 5; policy accept;"),
        format!("\t\toifname != {{ {set} }} accept"),
        "\t\tct state established,related accept".into(),
    ];
    for (proto, p) in [("tcp", &out.tcp), ("udp", &out.udp)] {
        let block = match action {
            FirewallAction::Drop => "drop".to_string(),
            FirewallAction::Reject if proto == "tcp" => "reject with tcp reset".into(),
            FirewallAction::Reject => "reject".into(),
        };
        match p {
            PortPolicy::AllowAll => {}
            PortPolicy::Allow(ports) => {
                if !ports.is_empty() {
                    let l = ports.iter().map(u16::to_string).collect::<Vec<_>>();
                    v.push(format!("\t\t{proto} dport {{ {} }} accept", l.join(", ")));
                }
                v.push(format!("\t\tmeta l4proto {proto} {block}"));
            }
            PortPolicy::BlockAll => v.push(format!("\t\tmeta l4proto {proto} {block}")),
        }
    }
    v.push("\t}".into());
    v
}

/// Refuses an outbound policy on a node without interfaces (nothing to
/// filter on), naming both.
pub(crate) fn check_outside(
    node: &str,
    out: &OutboundPolicy,
    outside: &[String],
) -> Result<(), InvalidLab> {
    if outside.is_empty() && !out.is_open() {
        return Err(InvalidLab::new(
            "firewall",
            InvalidReason::Missing,
            format!(
                "node {node} has an outbound firewall policy ({out:?}) but no interfaces to apply it to: add an interface first, or drop the outbound policy"
            ),
        )
        .node(node));
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;

    #[test]
    fn corporate_renders_allowed_ports_then_blocks() {
        let got = render_out_chain(
            &OutboundPolicy::corporate(),
            &["wan".into()],
            true,
            FirewallAction::Reject,
        )
        .join("\n");
        assert_eq!(
            got,
            "\tchain out {\n\t\ttype filter hook forward priority filter + 5; policy accept;\n\t\toifname != { \"wan\" } accept\n\t\tct state established,related accept\n\t\ttcp dport { 80, 443 } accept\n\t\tmeta l4proto tcp reject with tcp reset\n\t\tudp dport { 53 } accept\n\t\tmeta l4proto udp reject\n\t}"
        );
        let cap = render_out_chain(
            &OutboundPolicy::captive_portal(),
            &["eth0".into()],
            false,
            FirewallAction::Drop,
        )
        .join("\n");
        assert!(cap.contains("hook output"), "{cap}");
        assert!(!cap.contains("tcp"), "{cap}");
        assert!(cap.contains("meta l4proto udp drop"), "{cap}");
        assert!(
            render_out_chain(&OutboundPolicy::default(), &[], true, FirewallAction::Drop)
                .is_empty()
        );
    }

    #[test]
    fn toml_forms_and_errors() {
        let o: OutboundPolicy = toml::from_str("tcp = [80, 443]\nudp = \"block-all\"").unwrap();
        assert_eq!(o.tcp, PortPolicy::allow([80, 443]));
        assert_eq!(o.udp, PortPolicy::BlockAll);
        let e = toml::from_str::<OutboundPolicy>("udp = \"none\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown outbound port policy"), "{e}");
        let e = check_outside("d", &OutboundPolicy::corporate(), &[]).unwrap_err();
        assert!(
            e.message.contains("node d") && e.message.contains("no interfaces"),
            "{e}"
        );
        assert_eq!(e.node.as_deref(), Some("d"));
    }
}
