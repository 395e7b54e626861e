//! Per-direction link conditions, per-interface MTU and PMTU black holes.
//!
//! - Directions: a lab link is a veth pair, so a node's *ingress* is the
//!   *egress* of the other end. `Direction::Out` shapes this interface's
//!   egress, `Direction::In` the peer end's egress, `Both` both. No `ifb`
//!   device is needed (and none is created): every shaping qdisc is a root
//!   egress qdisc.
//! - MTU: `set_mtu` sets the MTU of an interface and of the other end of
//!   its veth, so the link has one MTU in both directions. When the other
//!   end is a router's bridge port, Linux lowers that bridge to its
//!   smallest port's MTU (as a real L2 segment with one small link would
//!   need), and the router then sends ICMP "fragmentation needed" /
//!   "packet too big" to senders of larger packets.
//! - PMTU black hole: a router that drops those ICMP messages (forwarded
//!   and self-generated), so senders never learn the path MTU.
//!
//! Kernel requirements: `tc` (tbf/netem as for any link condition), nft
//! with `inet` tables for the black hole.

use std::fmt::Write;

use crate::error::{Error, NetlinkContext, Result};
use crate::link::{LinkCondition, render_tc};
use crate::sys::{linkattr, nft, tc};

use super::faults::Direction;
use super::node::{Node, NodeKind};
use super::router::{Router, RouterBuilder};
use super::wiring::check_mtu;

/// The nft table (family `inet`) of a router's PMTU black hole.
pub const PMTU_TABLE: &str = "patchbay-pmtu";

/// Renders the PMTU black-hole table: drops ICMP "fragmentation needed"
/// (type 3 code 4) and ICMPv6 "packet too big" that the router forwards or
/// sends itself. Pure.
pub fn render_pmtu_blackhole(on: bool) -> String {
    if !on {
        return nft::remove_table("inet", PMTU_TABLE);
    }
    let mut b = String::new();
    let _ = writeln!(b, "table inet {PMTU_TABLE} {{");
    for hook in ["forward", "output"] {
        let _ = writeln!(b, "\tchain {hook} {{");
        let _ = writeln!(
            b,
            "\t\ttype filter hook {hook} priority filter - 5; policy accept;"
        );
        let _ = writeln!(
            b,
            "\t\ticmp type destination-unreachable icmp code frag-needed drop"
        );
        let _ = writeln!(b, "\t\ticmpv6 type packet-too-big drop");
        let _ = writeln!(b, "\t}}");
    }
    let _ = writeln!(b, "}}");
    nft::replace_table("inet", PMTU_TABLE, &b)
}

impl RouterBuilder {
    /// Sets the MTU of the router's uplink (both ends of the `wan` link)
    /// and of its LAN bridge, e.g. 1420 for a WireGuard-like tunnel. Must
    /// be at least 1280 (every lab link carries IPv6).
    pub fn mtu(mut self, mtu: u32) -> Self {
        self.extras.mtu = Some(mtu);
        self
    }

    /// Drops ICMP "fragmentation needed" and ICMPv6 "packet too big" in
    /// this router (a PMTU black hole): hosts behind a smaller MTU never
    /// learn it, and large TCP transfers stall.
    pub fn block_icmp_frag_needed(mut self) -> Self {
        self.extras.block_pmtu = true;
        self
    }
}

impl Router {
    /// Turns the PMTU black hole (see [`RouterBuilder::block_icmp_frag_needed`])
    /// on or off at runtime.
    pub async fn block_icmp_frag_needed(&self, on: bool) -> Result<()> {
        let what = format!("PMTU black hole of router {}", self.name());
        nft::apply(self.netns(), &what, render_pmtu_blackhole(on)).await?;
        self.record("pmtu.blackhole", serde_json::json!({ "on": on }), true);
        Ok(())
    }

    /// Shapes the router's downlink: what it sends into its LAN (the egress of its `lan`
    /// bridge), to every device on the LAN at once, as a congested access network does.
    /// `LinkCondition::default()` removes it. Scaled like every link condition under
    /// compression.
    pub async fn set_lan_condition(&self, condition: LinkCondition) -> Result<()> {
        condition.validate()?;
        let condition = match self.inner.lab.upgrade() {
            Some(lab) => lab
                .compression()
                .link(&format!("{}.lan", self.name()), &condition),
            None => condition,
        };
        let qdisc = crate::link::qdisc_of(&condition);
        tc::apply(self.netns(), &render_tc("lan", &condition), qdisc).await?;
        self.record(
            "link.condition",
            serde_json::json!({"iface": "lan", "applied": condition}),
            false,
        );
        Ok(())
    }
}

impl Node {
    /// Shapes one or both directions of the link on `iface`:
    /// [`Direction::Out`] is what this node sends (its egress),
    /// [`Direction::In`] what it receives (the egress of the veth's other
    /// end), [`Direction::Both`] is [`Node::set_link_condition`]. A clean
    /// condition removes the shaping of that direction only.
    pub async fn set_link_condition_dir(
        &self,
        iface: &str,
        condition: LinkCondition,
        direction: Direction,
    ) -> Result<()> {
        condition.validate()?;
        // A dummy interface (no peer) has no inbound side: it is shaped outbound alone.
        let dummy = self.iface(iface).is_some_and(|i| i.peer.is_empty());
        let peer = if dummy && direction == Direction::Out {
            None
        } else {
            Some(super::faults::peer_end(self, iface).await?)
        };
        let condition = match self.inner.lab.upgrade() {
            Some(lab) => lab
                .compression()
                .link(&format!("{}.{iface}", self.name()), &condition),
            None => condition,
        };
        let qdisc = crate::link::qdisc_of(&condition);
        if matches!(direction, Direction::Out | Direction::Both) {
            tc::apply(self.netns(), &render_tc(iface, &condition), qdisc).await?;
        }
        if let Some((peer_ns, peer_dev)) = peer.filter(|_| direction != Direction::Out) {
            tc::apply(&peer_ns, &render_tc(&peer_dev, &condition), qdisc).await?;
        }
        self.record(
            "link.condition",
            serde_json::json!({"iface": iface, "direction": direction, "applied": condition}),
            true,
        );
        Ok(())
    }

    /// Sets the MTU of `iface` and of the other end of its link, so both
    /// directions have it. On a router, `"lan"` sets the LAN bridge (the
    /// MTU the router routes into its LAN with). Must be at least 1280 when
    /// the interface carries IPv6.
    pub async fn set_mtu(&self, iface: &str, mtu: u32) -> Result<()> {
        let i = self.iface(iface).ok_or_else(|| {
            Error::invalid_node(
                self.name(),
                "iface",
                crate::InvalidReason::Unknown,
                format!(
                    "node {} has no interface {iface:?} to set the MTU of",
                    self.name()
                ),
            )
        })?;
        check_mtu(&format!("{}.{iface}", self.name()), mtu, i.ip6)?;
        let what = || format!("setting the MTU of {}.{iface} to {mtu}", self.name());
        let index = i.index;
        self.netns()
            .run(move || linkattr::set_mtu(index, mtu))
            .await?
            .ctx(what)?;
        self.record(
            "mtu.changed",
            serde_json::json!({"iface": iface, "mtu": mtu}),
            true,
        );
        if self.kind() == NodeKind::Router && iface == "lan" {
            return Ok(());
        }
        let (peer_ns, peer_dev) = super::faults::peer_end(self, iface).await?;
        let ctx = what();
        let peer = peer_dev.clone();
        peer_ns
            .run(move || async move {
                let idx = linkattr::link_index(&peer).await?;
                linkattr::set_mtu(idx, mtu).await
            })
            .await?
            .ctx(|| format!("{ctx} (peer end {peer_dev})"))?;
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;

    #[test]
    fn pmtu_blackhole_renders_both_hooks() {
        let r = render_pmtu_blackhole(true);
        assert!(
            r.contains("chain forward") && r.contains("chain output"),
            "{r}"
        );
        assert!(r.contains("icmp code frag-needed drop"), "{r}");
        assert!(r.contains("icmpv6 type packet-too-big drop"), "{r}");
        assert_eq!(
            render_pmtu_blackhole(false),
            "add table inet patchbay-pmtu\ndelete table inet patchbay-pmtu\n"
        );
    }
}
