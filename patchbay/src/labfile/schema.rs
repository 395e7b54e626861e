//! The TOML schema of lab files, with validation.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::duration::opt_duration;
use super::steps_mobility::MobilityStep;

/// A whole lab file.
#[derive(Debug, Clone, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct LabFile {
    /// Lab-wide options.
    #[serde(default)]
    pub(crate) lab: LabSection,
    /// Routers, in build order.
    #[serde(default, rename = "router")]
    pub(crate) routers: Vec<RouterSpec>,
    /// Devices, built after the routers.
    #[serde(default, rename = "device")]
    pub(crate) devices: Vec<DeviceSpec>,
    /// Steps, executed in order.
    #[serde(default, rename = "step")]
    pub(crate) steps: Vec<Step>,
    /// Names: hosts entries, nameservers, DNS servers.
    #[serde(default)]
    pub(crate) dns: Option<super::dns::DnsSection>,
    /// Regions (`[region.NAME]`), built before the routers.
    #[serde(default, rename = "region")]
    pub(crate) regions: std::collections::BTreeMap<String, RegionSpec>,
}

/// A `[region.NAME]` table.
#[derive(Debug, Clone, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RegionSpec {
    /// Links to other regions: region name → link condition (a preset or
    /// a table such as `{ delay = "40ms" }`, applied to both ends).
    #[serde(default)]
    pub links: std::collections::BTreeMap<String, crate::LinkCondition>,
}

/// The `[lab]` table.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct LabSection {
    /// Label of the lab.
    #[serde(default)]
    pub label: Option<String>,
    /// Pre-warm neighbour entries (default true).
    #[serde(default = "yes")]
    pub prewarm_neighbors: bool,
    /// Time scale k (default 1 = real time).
    #[serde(default)]
    pub time_scale: Option<f64>,
    /// `real` (default, possibly compressed by `time-scale`) or `virtual`
    /// (the CLI runs the lab inside a User-Mode-Linux kernel).
    #[serde(default)]
    pub time: Option<TimeMode>,
    /// Seed of a virtual-time run: the same seed repeats the run byte for byte
    /// (docs/determinism.md); default a random one, printed for replay.
    #[serde(default)]
    pub seed: Option<u64>,
    /// Collect eBPF TCP telemetry (default: on when k > 1).
    #[serde(default)]
    pub telemetry: Option<bool>,
    /// Compress by sysctls only, without eBPF.
    #[serde(default)]
    pub sysctl_only: bool,
    /// `tcp_syn_retries` in every namespace.
    #[serde(default)]
    pub tcp_syn_retries: Option<u8>,
    /// `tcp_retries2` in every namespace.
    #[serde(default)]
    pub tcp_retries2: Option<u8>,
    /// Output directory for run artifacts (see `docs/artifacts.md`).
    #[serde(default)]
    pub outdir: Option<std::path::PathBuf>,
    /// Keep the output directory after a passing run too.
    #[serde(default)]
    pub keep: bool,
    /// Interfaces (`node.iface`) captured to pcapng for the whole run
    /// (needs `outdir`).
    #[serde(default)]
    pub capture: Vec<String>,
}

impl Default for LabSection {
    fn default() -> Self {
        LabSection {
            label: None,
            prewarm_neighbors: true,
            time_scale: None,
            time: None,
            seed: None,
            telemetry: None,
            sysctl_only: false,
            tcp_syn_retries: None,
            tcp_retries2: None,
            outdir: None,
            keep: false,
            capture: vec![],
        }
    }
}

fn yes() -> bool {
    true
}

/// How a lab's time runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum TimeMode {
    /// Wall-clock time, divided by `time-scale` when it is above 1.
    Real,
    /// Virtual time inside a User-Mode-Linux kernel (exact, any speed).
    Virtual,
}

/// A `[[router]]` entry.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RouterSpec {
    /// Unique node name.
    pub name: String,
    /// Router whose LAN the uplink joins; absent: the exchange.
    #[serde(default)]
    pub upstream: Option<String>,
    /// NAT mode (default `none`).
    #[serde(default)]
    pub nat: Option<crate::Nat>,
    /// Hairpinning on the NAT.
    #[serde(default)]
    pub hairpin: Option<bool>,
    /// Conntrack timeouts of this router (scaled by the lab's k).
    #[serde(default)]
    pub conntrack: Option<crate::ConntrackTimeouts>,
    /// Firewall of the router (inbound = arriving on `wan`).
    #[serde(default)]
    pub firewall: Option<crate::Firewall>,
    /// Address families of the LAN: `v4-only`, `v6-only`, `dual-stack`.
    #[serde(default)]
    pub ip_support: Option<crate::IpSupport>,
    /// IPv6 NAT: `none`, `nptv6`, `masquerade`, `nat64`.
    #[serde(default)]
    pub nat_v6: Option<crate::NatV6Mode>,
    /// A router preset; the other keys override its values.
    #[serde(default)]
    pub preset: Option<crate::RouterPreset>,
    /// The region the router joins (instead of `upstream`).
    #[serde(default)]
    pub region: Option<String>,
    /// MTU of the uplink (both ends) and the LAN bridge.
    #[serde(default)]
    pub mtu: Option<u32>,
    /// Drop ICMP "fragmentation needed" / "packet too big" (PMTU black hole).
    #[serde(default)]
    pub block_icmp_frag_needed: bool,
}

/// A `[[device]]` entry.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct DeviceSpec {
    /// Unique node name.
    pub name: String,
    /// Interfaces (at least one).
    #[serde(default, rename = "iface")]
    pub ifaces: Vec<IfaceSpec>,
    /// Interface carrying the default route (default: the first).
    #[serde(default)]
    pub default_via: Option<String>,
    /// Firewall of the device (inbound = arriving on any interface).
    #[serde(default)]
    pub firewall: Option<crate::Firewall>,
    /// Nameserver of the device: an IP address or a node name.
    #[serde(default)]
    pub nameserver: Option<String>,
}

/// One device interface.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct IfaceSpec {
    /// Interface name inside the device (at most 15 bytes).
    pub name: String,
    /// The router whose LAN it joins.
    pub router: String,
    /// Link condition: a preset name or a table (delay, jitter, loss, rate…).
    #[serde(default)]
    pub link: Option<crate::LinkCondition>,
    /// Which direction `link` shapes: `out` (egress), `in` (ingress) or
    /// `both` (default).
    #[serde(default)]
    pub link_direction: Option<crate::Direction>,
    /// MTU of the link (both ends).
    #[serde(default)]
    pub mtu: Option<u32>,
}

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
    pub condition: Option<crate::LinkCondition>,
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
        condition: crate::LinkCondition,
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

pub(super) fn node_iface(what: &str, v: &str) -> Result<(String, String), String> {
    v.split_once('.')
        .filter(|(n, i)| !n.is_empty() && !i.is_empty())
        .map(|(n, i)| (n.to_string(), i.to_string()))
        .ok_or_else(|| format!("`{what} = {v:?}` needs NODE.IFACE, e.g. \"server.eth0\""))
}

impl Step {
    /// The step's action; validated by [`LabFile::validate`].
    pub fn kind(&self) -> Result<StepKind, String> {
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
        ];
        let mobility = super::steps_mobility::count(self);
        if actions.iter().filter(|a| **a).count() + mobility != 1 {
            return Err("each [[step]] needs exactly one of `run`, `sleep`, `wait`, `kill`, `blackhole`, `heal`, `partition`, `link`, `flush-nat`, `link-down`, `link-up`, `break-region-link`, `restore-region-link`, `replug`, `add-iface`, `remove-iface`, `default-route`, `renew`, `remove-node`".into());
        }
        if (self.cmd.is_some() || self.background.is_some()) && self.run.is_none() {
            return Err("`cmd` and `background` belong to a `run` step".into());
        }
        if self.direction.is_some() && self.blackhole.is_none() && self.link.is_none() {
            return Err("`direction` belongs to a `blackhole` or `link` step".into());
        }
        if self.condition.is_some() != self.link.is_some() {
            return Err("a `link` step needs a `condition` (and `condition` needs `link`)".into());
        }
        if self.name.is_some() && self.blackhole.is_none() && self.partition.is_none() {
            return Err("`name` belongs to a `blackhole` or `partition` step".into());
        }
        if let Some(m) = super::steps_mobility::kind(self)? {
            return Ok(StepKind::Mobility(m));
        }
        if let Some(node) = &self.run {
            if self.cmd.is_none() {
                return Err(format!("step `run = {node:?}` has no `cmd`"));
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
            _ => return Err("empty step".into()),
        };
        let (node, iface) = node_iface(if up { "link-up" } else { "link-down" }, v)?;
        Ok(StepKind::SetLink { node, iface, up })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::labfile::LabFile;
    use std::path::Path;

    const GOOD: &str = r#"
[lab]
label = "t"

[[router]]
name = "isp"

[[router]]
name = "home"
upstream = "isp"

[[device]]
name = "server"
iface = [{ name = "eth0", router = "isp" }]

[[device]]
name = "client"
iface = [{ name = "eth0", router = "home" }]

[[step]]
run = "server"
cmd = "sleep 1"
background = "srv"

[[step]]
run = "client"
cmd = ["echo", "${server.ip}"]
expect-output = "198."

[[step]]
sleep = "150ms"

[[step]]
wait = "srv"
"#;

    #[test]
    fn parses_a_good_file() {
        let f = LabFile::parse(GOOD, Path::new("good.toml")).unwrap();
        assert_eq!(f.routers.len(), 2);
        assert_eq!(
            f.steps[2].kind().unwrap(),
            StepKind::Sleep(Duration::from_millis(150))
        );
        assert_eq!(
            f.steps[0].kind().unwrap(),
            StepKind::Spawn {
                node: "server".into(),
                name: "srv".into()
            }
        );
    }

    fn err(text: &str) -> String {
        LabFile::parse(text, Path::new("x.toml"))
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn syntax_errors_have_line_and_column() {
        let e = err("[[router]]\nname = \"a\"\nupstream = \n");
        assert!(e.contains("line 3"), "{e}");
        assert!(e.contains("column"), "{e}");
    }

    #[test]
    fn schema_errors_name_the_field() {
        let e = err("[[router]]\nname = \"a\"\nnmae = \"b\"\n");
        assert!(e.contains("nmae"), "{e}");
        assert!(e.contains("line 3"), "{e}");
    }

    #[test]
    fn reference_errors_are_clear() {
        assert!(
            err("[[router]]\nname=\"a\"\n[[router]]\nname=\"a\"\n").contains("duplicate node name")
        );
        assert!(
            err("[[router]]\nname=\"a\"\n[[device]]\nname=\"d\"\n").contains("has no interface")
        );
        assert!(
            err("[[router]]\nname=\"a\"\n[[device]]\nname=\"d\"\niface=[{name=\"e\",router=\"zz\"}]\n")
                .contains("unknown router \"zz\"")
        );
        assert!(err("[[step]]\nwait=\"nope\"\n").contains("no background step named"));
        assert!(err("[[step]]\nsleep=\"1s\"\nwait=\"x\"\n").contains("exactly one"));
        assert!(err("[[step]]\nsleep=\"-1s\"\n").contains("non-negative"));
        assert!(err("[[step]]\nsleep=\"1 fortnight\"\n").contains("unknown unit"));
    }

    #[test]
    fn realism_keys_validate_with_both_parts_named() {
        let e = err("[region.eu]\nlinks = { mars = { delay = \"40ms\" } }\n");
        assert!(
            e.contains("region \"eu\" links to unknown region \"mars\""),
            "{e}"
        );
        let e =
            err("[region.eu]\nlinks = { us = \"lan\" }\n[region.us]\nlinks = { eu = \"lan\" }\n");
        assert!(e.contains("declared in both"), "{e}");
        let e = err("[[router]]\nname = \"r\"\nregion = \"nowhere\"\n");
        assert!(e.contains("unknown region \"nowhere\""), "{e}");
        let e = err("[[router]]\nname = \"r\"\nmtu = 1000\n");
        assert!(e.contains("router \"r\"") && e.contains("1280"), "{e}");
        let e = err(
            "[[router]]\nname = \"r\"\n[[device]]\nname = \"d\"\niface = [{ name = \"eth0\", router = \"r\", mtu = 1200 }]\n",
        );
        assert!(e.contains("\"eth0\"") && e.contains("1280"), "{e}");
        let e = err("[[step]]\nbreak-region-link = [\"eu\", \"us\"]\n");
        assert!(
            e.contains("region link eu–us names an unknown region"),
            "{e}"
        );
        let ok = LabFile::parse(
            "[region.eu]\nlinks = { us = { delay = \"40ms\" } }\n[region.us]\n[[router]]\nname = \"home\"\npreset = \"home\"\nregion = \"eu\"\nmtu = 1400\nblock-icmp-frag-needed = true\nfirewall = { preset = \"corporate\", outbound = { udp = \"block-all\" } }\n[[device]]\nname = \"d\"\niface = [{ name = \"eth0\", router = \"region-us\", link = \"wifi-bad\", link-direction = \"out\" }]\n[[step]]\nlink = \"d.eth0\"\ncondition = { corrupt = \"1%\" }\ndirection = \"in\"\n[[step]]\nbreak-region-link = [\"eu\", \"us\"]\n",
            Path::new("ok.toml"),
        );
        assert!(ok.is_ok(), "{ok:?}");
    }
}
