//! `[[step]]` entries: their keys, and the one action each has
//! ([`StepKind`]), checked key by key.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::duration::opt_duration;
use super::mobility::MobilityStep;
use crate::{InvalidLab, InvalidReason};

/// A `[[step]]` entry: exactly one action key plus modifiers.
#[derive(Debug, Clone, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Step {
    /// Run a command on this node.
    #[serde(default)]
    pub run: Option<String>,
    /// The command: a string (run with `sh -c`) or an argv array.
    #[serde(default)]
    pub cmd: Option<Command>,
    /// Run in the background under this name (for `wait` / `kill`).
    #[serde(default)]
    pub background: Option<String>,
    /// Sleep this long (e.g. "500ms", "2s").
    #[serde(default, with = "opt_duration")]
    pub sleep: Option<Duration>,
    /// Wait for the named background step to exit.
    #[serde(default)]
    pub wait: Option<String>,
    /// Kill the named background step.
    #[serde(default)]
    pub kill: Option<String>,
    /// Expected exit code (foreground `run` and `wait`); default 0.
    #[serde(default)]
    pub expect_exit: Option<i32>,
    /// Text the command's stdout must contain.
    #[serde(default)]
    pub expect_output: Option<String>,
    /// Limit for a foreground command or a wait (default 60 s).
    #[serde(default, with = "opt_duration")]
    pub timeout: Option<Duration>,
    /// Blackhole `node.iface` (silent drops; see `direction`, `name`).
    #[serde(default)]
    pub blackhole: Option<String>,
    /// Direction of a blackhole: `in`, `out` or `both` (default).
    #[serde(default)]
    pub direction: Option<crate::Direction>,
    /// Name of a fault, for a later `heal`.
    #[serde(default)]
    pub name: Option<String>,
    /// Heal the named fault.
    #[serde(default)]
    pub heal: Option<String>,
    /// Partition two nodes from each other.
    #[serde(default)]
    pub partition: Option<[String; 2]>,
    /// Change the link condition of `node.iface` to `condition`.
    #[serde(default)]
    pub link: Option<String>,
    /// The new condition of a `link` step.
    #[serde(default)]
    pub condition: Option<crate::native::LinkCondition>,
    /// Flush the NAT state of a router.
    #[serde(default)]
    pub flush_nat: Option<String>,
    /// Set `node.iface` administratively down.
    #[serde(default)]
    pub link_down: Option<String>,
    /// Set `node.iface` administratively up.
    #[serde(default)]
    pub link_up: Option<String>,
    /// Break the link between two regions.
    #[serde(default)]
    pub break_region_link: Option<[String; 2]>,
    /// Restore a broken link between two regions.
    #[serde(default)]
    pub restore_region_link: Option<[String; 2]>,
    /// Move `device.iface` to the router `to` (mobility; see `docs/toml.md`).
    #[serde(default)]
    pub replug: Option<String>,
    /// Add `device.iface` on the router `to`.
    #[serde(default)]
    pub add_iface: Option<String>,
    /// Remove `device.iface` (not the one carrying the default route).
    #[serde(default)]
    pub remove_iface: Option<String>,
    /// Point the default routes of a device at `device.iface`.
    #[serde(default)]
    pub default_route: Option<String>,
    /// Give `device.iface` a new address on its LAN.
    #[serde(default)]
    pub renew: Option<String>,
    /// Remove a device, or a router with nothing on its LAN.
    #[serde(default)]
    pub remove_node: Option<String>,
    /// The router of a `replug` or `add-iface` step.
    #[serde(default)]
    pub to: Option<String>,
}

/// A command as a shell string or an argv list.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(untagged)]
pub enum Command {
    /// Run with `sh -c`.
    Shell(String),
    /// Run directly.
    Argv(Vec<String>),
}

/// What a step does, once validated.
#[derive(Debug, Clone, PartialEq)]
pub enum StepKind {
    /// Run a command in the foreground.
    Run {
        /// Node.
        node: String,
    },
    /// Start a command in the background.
    Spawn {
        /// Node.
        node: String,
        /// Name for later `wait`/`kill`.
        name: String,
    },
    /// Sleep.
    Sleep(Duration),
    /// Wait for a background command.
    Wait(String),
    /// Kill a background command.
    Kill(String),
    /// Blackhole an interface.
    Blackhole {
        /// Node.
        node: String,
        /// Interface.
        iface: String,
        /// Direction.
        direction: crate::Direction,
        /// Fault name for `heal`.
        name: Option<String>,
    },
    /// Heal a named fault.
    Heal(String),
    /// Partition two nodes.
    Partition {
        /// One side.
        a: String,
        /// The other side.
        b: String,
        /// Fault name for `heal`.
        name: Option<String>,
    },
    /// Change a link condition.
    Link {
        /// Node.
        node: String,
        /// Interface.
        iface: String,
        /// The condition.
        condition: crate::native::LinkCondition,
    },
    /// Flush a router's NAT state.
    FlushNat(String),
    /// Set an interface down (`false`) or up (`true`).
    SetLink {
        /// Node.
        node: String,
        /// Interface.
        iface: String,
        /// Up or down.
        up: bool,
    },
    /// Break (`true`) or restore (`false`) a region link.
    RegionLink {
        /// One region.
        a: String,
        /// The other region.
        b: String,
        /// Break or restore.
        broken: bool,
    },
    /// Move, add or remove interfaces, routes, addresses and nodes.
    Mobility(MobilityStep),
}

/// The action keys of a step, for the "exactly one" message.
const ACTIONS: &str = "`run`, `sleep`, `wait`, `kill`, `blackhole`, `heal`, `partition`, `link`, `flush-nat`, `link-down`, `link-up`, `break-region-link`, `restore-region-link`, `replug`, `add-iface`, `remove-iface`, `default-route`, `renew`, `remove-node`";

fn bad(field: &'static str, reason: InvalidReason, message: impl Into<String>) -> InvalidLab {
    InvalidLab::new(field, reason, message)
}

/// `NODE.IFACE` of the key `what`.
pub(super) fn node_iface(what: &'static str, v: &str) -> Result<(String, String), InvalidLab> {
    dotted(what, v, "NODE.IFACE, e.g. \"server.eth0\"")
}

/// `DEVICE.IFACE` of the mobility key `key`.
fn dev_iface(key: &'static str, v: &str) -> Result<(String, String), InvalidLab> {
    dotted(key, v, "DEVICE.IFACE, e.g. \"phone.eth0\"")
}

/// `A.B`, both non-empty, as the value of `key`; `shape` says what it needs.
fn dotted(key: &'static str, v: &str, shape: &str) -> Result<(String, String), InvalidLab> {
    v.split_once('.')
        .filter(|(n, i)| !n.is_empty() && !i.is_empty())
        .map(|(n, i)| (n.to_string(), i.to_string()))
        .ok_or_else(|| {
            let msg = format!("`{key} = {v:?}` needs {shape}");
            bad(key, InvalidReason::OutOfRange, msg)
        })
}

impl Step {
    /// The step's action; validated by [`super::LabFile::validate`].
    pub fn kind(&self) -> Result<StepKind, InvalidLab> {
        self.check_modifiers()?;
        if let Some(m) = self.mobility()? {
            return Ok(StepKind::Mobility(m));
        }
        if let Some(node) = &self.run {
            if self.cmd.is_none() {
                return Err(bad(
                    "cmd",
                    InvalidReason::Missing,
                    format!("step `run = {node:?}` has no `cmd`"),
                )
                .node(node));
            }
            return Ok(match &self.background {
                Some(name) => StepKind::Spawn {
                    node: node.clone(),
                    name: name.clone(),
                },
                None => StepKind::Run { node: node.clone() },
            });
        }
        if let Some(d) = self.sleep {
            return Ok(StepKind::Sleep(d));
        }
        if let Some(w) = &self.wait {
            return Ok(StepKind::Wait(w.clone()));
        }
        if let Some(k) = &self.kill {
            return Ok(StepKind::Kill(k.clone()));
        }
        if let Some(b) = &self.blackhole {
            let (node, iface) = node_iface("blackhole", b)?;
            let direction = self.direction.unwrap_or(crate::Direction::Both);
            return Ok(StepKind::Blackhole {
                node,
                iface,
                direction,
                name: self.name.clone(),
            });
        }
        if let Some(h) = &self.heal {
            return Ok(StepKind::Heal(h.clone()));
        }
        if let Some([a, b]) = &self.partition {
            return Ok(StepKind::Partition {
                a: a.clone(),
                b: b.clone(),
                name: self.name.clone(),
            });
        }
        if let (Some(l), Some(c)) = (&self.link, &self.condition) {
            let (node, iface) = node_iface("link", l)?;
            return Ok(StepKind::Link {
                node,
                iface,
                condition: c.clone(),
            });
        }
        if let Some(r) = &self.flush_nat {
            return Ok(StepKind::FlushNat(r.clone()));
        }
        self.link_kind()
    }

    /// Exactly one action, and modifiers only where they belong.
    fn check_modifiers(&self) -> Result<(), InvalidLab> {
        let actions = [
            self.run.is_some(),
            self.sleep.is_some(),
            self.wait.is_some(),
            self.kill.is_some(),
            self.blackhole.is_some(),
            self.heal.is_some(),
            self.partition.is_some(),
            self.link.is_some(),
            self.flush_nat.is_some(),
            self.link_down.is_some(),
            self.link_up.is_some(),
            self.break_region_link.is_some(),
            self.restore_region_link.is_some(),
            self.replug.is_some(),
            self.add_iface.is_some(),
            self.remove_iface.is_some(),
            self.default_route.is_some(),
            self.renew.is_some(),
            self.remove_node.is_some(),
        ];
        let n = actions.iter().filter(|a| **a).count();
        if n != 1 {
            let reason = if n == 0 {
                InvalidReason::Missing
            } else {
                InvalidReason::Conflict
            };
            return Err(bad(
                "step",
                reason,
                format!("each [[step]] needs exactly one of {ACTIONS}"),
            ));
        }
        let belongs = |set: bool, action: bool, field: &'static str, msg: &str| {
            if set && !action {
                return Err(bad(field, InvalidReason::Conflict, msg));
            }
            Ok(())
        };
        belongs(
            self.cmd.is_some() || self.background.is_some(),
            self.run.is_some(),
            "cmd",
            "`cmd` and `background` belong to a `run` step",
        )?;
        belongs(
            self.direction.is_some(),
            self.blackhole.is_some() || self.link.is_some(),
            "direction",
            "`direction` belongs to a `blackhole` or `link` step",
        )?;
        if self.condition.is_some() != self.link.is_some() {
            return Err(bad(
                "condition",
                InvalidReason::Missing,
                "a `link` step needs a `condition` (and `condition` needs `link`)",
            ));
        }
        belongs(
            self.name.is_some(),
            self.blackhole.is_some() || self.partition.is_some(),
            "name",
            "`name` belongs to a `blackhole` or `partition` step",
        )
    }

    /// `link-down`, `link-up`, `break-region-link` or
    /// `restore-region-link`: the last actions [`Step::kind`] tries.
    fn link_kind(&self) -> Result<StepKind, InvalidLab> {
        for (v, broken) in [
            (&self.break_region_link, true),
            (&self.restore_region_link, false),
        ] {
            if let Some([a, b]) = v {
                return Ok(StepKind::RegionLink {
                    a: a.clone(),
                    b: b.clone(),
                    broken,
                });
            }
        }
        let (v, up) = match (&self.link_down, &self.link_up) {
            (Some(v), _) => (v, false),
            (_, Some(v)) => (v, true),
            _ => return Err(bad("step", InvalidReason::Missing, "empty step")),
        };
        let (node, iface) = node_iface(if up { "link-up" } else { "link-down" }, v)?;
        Ok(StepKind::SetLink { node, iface, up })
    }

    /// The mobility action of the step, if it has one ([`Step::kind`] has
    /// already checked that there is exactly one action).
    pub(super) fn mobility(&self) -> Result<Option<MobilityStep>, InvalidLab> {
        let wants_to = self.replug.is_some() || self.add_iface.is_some();
        match (&self.to, wants_to) {
            (Some(_), false) => {
                return Err(bad(
                    "to",
                    InvalidReason::Conflict,
                    "`to` belongs to a `replug` or `add-iface` step",
                ));
            }
            (None, true) => {
                return Err(bad(
                    "to",
                    InvalidReason::Missing,
                    "a `replug` or `add-iface` step needs `to = \"ROUTER\"`, the router whose LAN the interface joins",
                ));
            }
            _ => {}
        }
        let router = || self.to.clone().unwrap_or_default();
        Ok(Some(if let Some(v) = &self.replug {
            let (device, iface) = dev_iface("replug", v)?;
            MobilityStep::Replug {
                device,
                iface,
                router: router(),
            }
        } else if let Some(v) = &self.add_iface {
            let (device, iface) = dev_iface("add-iface", v)?;
            MobilityStep::AddIface {
                device,
                iface,
                router: router(),
            }
        } else if let Some(v) = &self.remove_iface {
            let (device, iface) = dev_iface("remove-iface", v)?;
            MobilityStep::RemoveIface { device, iface }
        } else if let Some(v) = &self.default_route {
            let (device, iface) = dev_iface("default-route", v)?;
            MobilityStep::DefaultRoute { device, iface }
        } else if let Some(v) = &self.renew {
            let (device, iface) = dev_iface("renew", v)?;
            MobilityStep::Renew { device, iface }
        } else if let Some(n) = &self.remove_node {
            MobilityStep::RemoveNode(n.clone())
        } else {
            return Ok(None);
        }))
    }
}
