//! The pure NAT ruleset renderer.

use std::fmt::Write;
use std::time::Duration;

use super::{Nat, NatSpec};
use crate::sys::nft;

/// The nft table (family `ip`) holding a router's NAT.
pub const NAT_TABLE: &str = "patchbay-nat";

/// nft timeouts in whole milliseconds (at least 1 ms).
fn ms(d: Duration) -> String {
    format!("{}ms", d.as_millis().max(1))
}

/// Renders the ruleset for `nft -f -` that (re)creates the router's NAT
/// table, or removes it for [`Nat::None`]. Deterministic; every timeout
/// comes from `spec.timeouts`.
pub fn render_nat(spec: &NatSpec) -> String {
    let mode = spec.mode.behaviour();
    if mode == Nat::None {
        return nft::remove_table("ip", NAT_TABLE);
    }
    let t = ms(spec.timeouts.eim_map());
    let (wan, lan, wan_ip) = (&spec.wan, &spec.lan, spec.wan_ip);
    let adf = mode == Nat::AddressRestricted;
    let mut b = String::new();
    // `writeln!` into a String cannot fail.
    let mut w = |line: String| {
        let _ = writeln!(b, "{line}");
    };
    w(format!("table ip {NAT_TABLE} {{"));
    w("\tmap eim {".into());
    w("\t\ttype inet_service : ipv4_addr . inet_service".into());
    w("\t\tflags dynamic,timeout".into());
    w(format!("\t\ttimeout {t}"));
    w("\t}".into());
    if adf {
        // Internal endpoint . remote address, recorded from outbound datagrams in `filter`
        // (before the source NAT), matched against DNATed inbound ones there.
        w("\tset adf_seen {".into());
        w("\t\ttype ipv4_addr . inet_service . ipv4_addr".into());
        w("\t\tflags dynamic,timeout".into());
        w(format!("\t\ttimeout {t}"));
        w("\t}".into());
    }
    w("\tchain prerouting {".into());
    w("\t\ttype nat hook prerouting priority dstnat; policy accept;".into());
    // Endpoint-independent mapping: an inbound datagram to a mapped port is translated to its
    // internal endpoint here; the filter chain below then decides whether it may pass. A
    // datagram that is dropped there leaves no conntrack entry (it is never confirmed), so it
    // cannot take the external port away from the internal endpoint's own later flows, as a
    // datagram delivered to the router itself would (RFC 4787 hole punching, and upstream
    // patchbay's behaviour).
    if mode != Nat::Symmetric {
        w(format!(
            "\t\tiifname \"{wan}\" dnat ip to udp dport map @eim"
        ));
    }
    if spec.hairpin {
        w(format!(
            "\t\tiifname \"{lan}\" ip daddr {wan_ip} dnat ip to udp dport map @eim"
        ));
    }
    w("\t}".into());
    w("\tchain postrouting {".into());
    w("\t\ttype nat hook postrouting priority srcnat; policy accept;".into());
    let flags = if mode == Nat::Symmetric {
        " fully-random"
    } else {
        ""
    };
    w(format!("\t\toifname \"{wan}\" masquerade{flags}"));
    if spec.hairpin {
        w(format!(
            "\t\tip saddr {}/{} oifname \"{lan}\" ct status dnat snat ip to {wan_ip}",
            spec.lan_net, spec.lan_prefix
        ));
    }
    w("\t}".into());
    // Filtering of unsolicited inbound datagrams (replies match their flow in conntrack and
    // never reach a nat chain): none for full cone, the addresses the internal endpoint has
    // sent to for address-restricted, nothing for port-restricted.
    if matches!(mode, Nat::PortRestricted | Nat::AddressRestricted) {
        w("\tchain filter {".into());
        w("\t\ttype filter hook forward priority filter; policy accept;".into());
        if adf {
            w(format!(
                "\t\toifname \"{wan}\" update @adf_seen {{ ip saddr . udp sport . ip daddr timeout {t} }}"
            ));
            w(format!(
                "\t\tiifname \"{wan}\" ct state new ct status dnat ip daddr . udp dport . ip saddr @adf_seen accept"
            ));
        }
        w(format!(
            "\t\tiifname \"{wan}\" ct state new ct status dnat drop"
        ));
        w("\t}".into());
    }
    w("\tchain mappings {".into());
    w("\t\ttype filter hook postrouting priority srcnat + 10; policy accept;".into());
    w(format!(
        "\t\toifname \"{wan}\" ct direction original update @eim {{ udp sport timeout {t} : ct original ip saddr . ct original proto-src }}"
    ));
    w("\t}".into());
    w("}".into());
    nft::replace_table("ip", NAT_TABLE, &b)
}

#[cfg(test)]
mod tests;
