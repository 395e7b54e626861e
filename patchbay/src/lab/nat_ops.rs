//! Runtime NAT, conntrack, firewall and link-condition operations on
//! routers and nodes. The rule text comes from the pure renderers in
//! [`crate::nat`], [`crate::firewall`] and [`crate::sys::tc`]; this layer only
//! gathers the node's state and applies.

use crate::error::{Error, Result};
use crate::firewall::{Firewall, render_firewall};
use crate::link::{LinkCondition, render_tc};
use crate::nat::{self, ConntrackTimeouts, NAT_TABLE, Nat, NatConfig, NatSpec};
use crate::sys::{nft, sysctl, tc};

use super::node::{Node, NodeKind};
use super::router::Router;

impl Router {
    /// Applies the build-time configuration: timeouts, NAT, firewall.
    pub(crate) async fn configure(&self, firewall: Option<Firewall>) -> Result<()> {
        let cfg = self.nat_config()?;
        // Rules first: on modular kernels they load nf_conntrack, which
        // creates the namespace's conntrack sysctls.
        if cfg.nat != Nat::None {
            self.apply_nat(&cfg).await?;
        }
        if let Some(fw) = firewall {
            self.set_firewall(fw).await?;
        }
        if let Some(t) = cfg.effective_conntrack() {
            sysctl::write_all(self.netns(), self.scaled_conntrack(&t).to_sysctls())?;
        }
        Ok(())
    }

    fn nat_spec(&self, cfg: &NatConfig) -> Result<NatSpec> {
        let wan_ip = self.ip().ok_or_else(|| {
            Error::invalid_node(
                self.name(),
                "wan",
                crate::InvalidReason::Missing,
                format!("router {} has no IPv4 uplink address", self.name()),
            )
        })?;
        let lan = self.iface("lan").ok_or_else(|| {
            Error::invalid_node(
                self.name(),
                "lan",
                crate::InvalidReason::Missing,
                format!("router {} has no LAN interface", self.name()),
            )
        })?;
        let lan_ip = lan.ip.ok_or_else(|| {
            Error::invalid_node(
                self.name(),
                "lan",
                crate::InvalidReason::Missing,
                format!("router {} has no IPv4 LAN address", self.name()),
            )
        })?;
        let mask = u32::MAX
            .checked_shl(32 - u32::from(lan.prefix))
            .unwrap_or(0);
        Ok(NatSpec {
            lan_net: (u32::from(lan_ip) & mask).into(),
            lan_prefix: lan.prefix,
            mode: cfg.nat,
            hairpin: cfg.hairpin,
            wan: "wan".into(),
            lan: "lan".into(),
            wan_ip,
            timeouts: self.scaled_conntrack(&cfg.effective_conntrack().unwrap_or_default()),
        })
    }

    async fn apply_nat(&self, cfg: &NatConfig) -> Result<()> {
        let ruleset = nat::render_nat(&self.nat_spec(cfg)?);
        let what = format!("NAT ({}) of router {}", cfg.nat.name(), self.name());
        nft::apply(self.netns(), &what, ruleset).await?;
        Ok(())
    }

    /// The router's current NAT configuration.
    pub fn nat_config(&self) -> Result<NatConfig> {
        let lab = self.lab()?;
        let t = lab.topo();
        let rec = t.routers.get(self.name()).ok_or_else(|| {
            Error::invalid_node(
                self.name(),
                "lab",
                crate::InvalidReason::Gone,
                format!("router {} is not in its lab", self.name()),
            )
        })?;
        Ok(rec.nat.clone())
    }

    fn store_nat(&self, cfg: &NatConfig) -> Result<()> {
        let lab = self.lab()?;
        let mut t = lab.topo();
        t.router_mut(self.name())?.nat = cfg.clone();
        Ok(())
    }

    /// Replaces NAT mode, hairpinning and timeouts at runtime. The LAN's
    /// addressing stays what it was at build time. Existing conntrack
    /// entries keep their old translation until they expire or
    /// [`Router::flush_nat`] is called.
    pub async fn set_nat_config(&self, cfg: NatConfig) -> Result<()> {
        self.apply_nat(&cfg).await?;
        if let Some(t) = cfg.effective_conntrack() {
            sysctl::write_all(self.netns(), self.scaled_conntrack(&t).to_sysctls())?;
        }
        self.store_nat(&cfg)?;
        self.record(
            "nat.changed",
            serde_json::to_value(&cfg).unwrap_or_default(),
            true,
        );
        Ok(())
    }

    /// Changes the NAT mode at runtime (see [`Router::set_nat_config`]).
    pub async fn set_nat(&self, mode: Nat) -> Result<()> {
        let cfg = NatConfig {
            nat: mode,
            ..self.nat_config()?
        };
        self.set_nat_config(cfg).await
    }

    /// Turns hairpinning on or off at runtime.
    pub async fn set_hairpin(&self, on: bool) -> Result<()> {
        let cfg = NatConfig {
            hairpin: on,
            ..self.nat_config()?
        };
        self.set_nat_config(cfg).await
    }

    /// Forgets all NAT state: empties the dynamic mapping map and set, then
    /// flushes the router's conntrack table (over ctnetlink, like
    /// `conntrack -F`). The next packet of every flow creates a new mapping.
    pub async fn flush_nat(&self) -> Result<()> {
        let cfg = self.nat_config()?;
        if cfg.nat != Nat::None {
            let mut cmds = format!("flush map ip {NAT_TABLE} eim\n");
            if cfg.nat.behaviour() == Nat::AddressRestricted {
                cmds.push_str(&format!("flush set ip {NAT_TABLE} adf_seen\n"));
            }
            let what = format!("NAT flush of router {}", self.name());
            nft::apply(self.netns(), &what, cmds).await?;
        }
        crate::sys::conntrack::flush_conntrack(self.netns())?;
        self.record("nat.flushed", serde_json::Value::Null, false);
        Ok(())
    }
}

impl Node {
    /// Sets the NAT mode of this node, which must be a router: devices
    /// cannot NAT (put them behind a router built with `.nat(..)`).
    pub async fn set_node_nat(&self, mode: Nat) -> Result<()> {
        match Router::from_node(self.clone()) {
            Some(r) => r.set_nat(mode).await,
            None => Err(Error::invalid_node(
                self.name(),
                "nat",
                crate::InvalidReason::Unsupported,
                format!(
                    "node {} is a device and cannot do NAT ({}): NAT is a router feature; put the device behind a router with `nat = \"{}\"`",
                    self.name(),
                    mode.name(),
                    mode.name()
                ),
            )),
        }
    }

    /// Conntrack timeouts as this node's lab applies them: divided by the
    /// lab's time scale (whole seconds, at least 1).
    pub(crate) fn scaled_conntrack(&self, t: &ConntrackTimeouts) -> ConntrackTimeouts {
        match self.inner.lab.upgrade() {
            Some(lab) => lab.compression().conntrack(self.name(), t),
            None => t.clone(),
        }
    }

    /// Sets the conntrack timeouts of the node's namespace (per-namespace
    /// sysctls, whole seconds). On a NAT router the mapping-map timeout is
    /// re-rendered from them too. On kernels with conntrack as a module the
    /// keys exist once conntrack is in use in the namespace (any NAT or
    /// firewall rule loads it); otherwise this fails with
    /// [`crate::sys::sysctl::SysctlError::Missing`].
    pub async fn set_conntrack_timeouts(&self, timeouts: ConntrackTimeouts) -> Result<()> {
        sysctl::write_all(self.netns(), self.scaled_conntrack(&timeouts).to_sysctls())?;
        if let Some(r) = Router::from_node(self.clone()) {
            let cfg = NatConfig {
                conntrack: Some(timeouts),
                ..r.nat_config()?
            };
            if cfg.nat != Nat::None {
                r.apply_nat(&cfg).await?;
            }
            r.store_nat(&cfg)?;
        }
        Ok(())
    }

    /// Installs (or replaces) the node's firewall. Inbound means arriving
    /// on the router's `wan`, or on any interface of a device. An open
    /// firewall without rules removes it.
    pub async fn set_firewall(&self, firewall: Firewall) -> Result<()> {
        let (outside, forward): (Vec<String>, bool) = match self.kind() {
            NodeKind::Router => (vec!["wan".into()], true),
            NodeKind::Device => (self.ifaces().into_iter().map(|i| i.name).collect(), false),
        };
        crate::firewall::check_outside(self.name(), &firewall.effective_outbound(), &outside)
            .map_err(Error::Invalid)?;
        let ruleset = render_firewall(&firewall, &outside, forward);
        nft::apply(
            self.netns(),
            &format!("firewall of {}", self.name()),
            ruleset,
        )
        .await?;
        self.firewall_changed(&firewall);
        Ok(())
    }

    /// Shapes both directions of the link on `iface`: the condition goes on
    /// this interface's egress and on the egress of the veth's other end
    /// (so a 20 ms delay gives a 40 ms round trip). `LinkCondition::default()`
    /// removes the shaping. Uses `tc qdisc replace`, so it can change at
    /// runtime.
    ///
    /// Rate-only conditions use tbf; anything else needs netem and fails
    /// with [`Error::KernelFeature`] on kernels without it.
    pub async fn set_link_condition(&self, iface: &str, condition: LinkCondition) -> Result<()> {
        condition.validate()?;
        if self.kind() == NodeKind::Router && self.iface(iface).is_some_and(|i| i.name == "lan") {
            return Err(Error::invalid_node(
                self.name(),
                "iface",
                crate::InvalidReason::Unsupported,
                format!(
                    "{}.lan is the router's LAN bridge: set link conditions on the devices' interfaces instead",
                    self.name()
                ),
            ));
        }
        let (peer_ns, peer_dev) = super::faults::peer_end(self, iface).await?;
        let condition = match self.inner.lab.upgrade() {
            Some(lab) => lab
                .compression()
                .link(&format!("{}.{iface}", self.name()), &condition),
            None => condition,
        };
        let qdisc = crate::link::qdisc_of(&condition);
        tc::apply(self.netns(), &render_tc(iface, &condition), qdisc).await?;
        tc::apply(&peer_ns, &render_tc(&peer_dev, &condition), qdisc).await?;
        self.record(
            "link.condition",
            serde_json::json!({"iface": iface, "applied": condition}),
            false,
        );
        Ok(())
    }
}
