//! Mobility steps of lab files: `replug`, `add-iface`, `remove-iface`,
//! `default-route`, `renew` and `remove-node` (see `docs/toml.md`). They
//! call the library's run-time mobility ([`crate::Device::replug_iface`]
//! and friends). Validation follows the topology step by step, so a step
//! naming an unknown router or interface, or removing the interface that
//! carries the default route, is refused before the lab is built.

use std::collections::{BTreeMap, BTreeSet};

use super::schema::{LabFile, Step};

/// A mobility step, once validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MobilityStep {
    /// Move `device.iface` to `router`'s LAN (`replug = "D.I"`, `to = "R"`).
    Replug {
        /// The device.
        device: String,
        /// Its interface.
        iface: String,
        /// The router it moves to.
        router: String,
    },
    /// Add interface `iface` on `router`'s LAN (`add-iface = "D.I"`, `to = "R"`).
    AddIface {
        /// The device.
        device: String,
        /// The new interface's name.
        iface: String,
        /// The router whose LAN it joins.
        router: String,
    },
    /// Remove an interface (`remove-iface = "D.I"`).
    RemoveIface {
        /// The device.
        device: String,
        /// The interface.
        iface: String,
    },
    /// Point the default routes at an interface (`default-route = "D.I"`).
    DefaultRoute {
        /// The device.
        device: String,
        /// The interface.
        iface: String,
    },
    /// Give an interface a new address on its LAN (`renew = "D.I"`).
    Renew {
        /// The device.
        device: String,
        /// The interface.
        iface: String,
    },
    /// Remove a device or router (`remove-node = "N"`).
    RemoveNode(String),
}

impl MobilityStep {
    /// The step's key, as in the lab file (`replug`, `add-iface`, ...).
    pub fn key(&self) -> &'static str {
        match self {
            Self::Replug { .. } => "replug",
            Self::AddIface { .. } => "add-iface",
            Self::RemoveIface { .. } => "remove-iface",
            Self::DefaultRoute { .. } => "default-route",
            Self::Renew { .. } => "renew",
            Self::RemoveNode(_) => "remove-node",
        }
    }

    /// The node the step changes.
    pub fn node(&self) -> &str {
        match self {
            Self::Replug { device, .. }
            | Self::AddIface { device, .. }
            | Self::RemoveIface { device, .. }
            | Self::DefaultRoute { device, .. }
            | Self::Renew { device, .. } => device,
            Self::RemoveNode(n) => n,
        }
    }
}

/// How many mobility actions `step` sets.
pub(super) fn count(step: &Step) -> usize {
    [
        step.replug.is_some(),
        step.add_iface.is_some(),
        step.remove_iface.is_some(),
        step.default_route.is_some(),
        step.renew.is_some(),
        step.remove_node.is_some(),
    ]
    .iter()
    .filter(|a| **a)
    .count()
}

fn dev_iface(key: &str, v: &str) -> Result<(String, String), String> {
    v.split_once('.')
        .filter(|(n, i)| !n.is_empty() && !i.is_empty())
        .map(|(n, i)| (n.to_string(), i.to_string()))
        .ok_or_else(|| format!("`{key} = {v:?}` needs DEVICE.IFACE, e.g. \"phone.eth0\""))
}

/// The mobility action of `step`, if it has one (`kind` has already
/// checked that there is exactly one action).
pub(super) fn kind(step: &Step) -> Result<Option<MobilityStep>, String> {
    let wants_to = step.replug.is_some() || step.add_iface.is_some();
    match (&step.to, wants_to) {
        (Some(_), false) => return Err("`to` belongs to a `replug` or `add-iface` step".into()),
        (None, true) => {
            return Err(
                "a `replug` or `add-iface` step needs `to = \"ROUTER\"`, the router whose LAN the interface joins"
                    .into(),
            );
        }
        _ => {}
    }
    let router = || step.to.clone().unwrap_or_default();
    Ok(Some(if let Some(v) = &step.replug {
        let (device, iface) = dev_iface("replug", v)?;
        MobilityStep::Replug {
            device,
            iface,
            router: router(),
        }
    } else if let Some(v) = &step.add_iface {
        let (device, iface) = dev_iface("add-iface", v)?;
        MobilityStep::AddIface {
            device,
            iface,
            router: router(),
        }
    } else if let Some(v) = &step.remove_iface {
        let (device, iface) = dev_iface("remove-iface", v)?;
        MobilityStep::RemoveIface { device, iface }
    } else if let Some(v) = &step.default_route {
        let (device, iface) = dev_iface("default-route", v)?;
        MobilityStep::DefaultRoute { device, iface }
    } else if let Some(v) = &step.renew {
        let (device, iface) = dev_iface("renew", v)?;
        MobilityStep::Renew { device, iface }
    } else if let Some(n) = &step.remove_node {
        MobilityStep::RemoveNode(n.clone())
    } else {
        return Ok(None);
    }))
}

/// A device as the steps leave it: interface → router, and the default.
struct Dev {
    ifaces: BTreeMap<String, String>,
    default: Option<String>,
}

/// The topology as mobility steps change it, for validation.
struct Sim {
    routers: BTreeMap<String, Option<String>>,
    devices: BTreeMap<String, Dev>,
}

impl Sim {
    fn new(file: &LabFile) -> Sim {
        let mut routers: BTreeMap<String, Option<String>> = file
            .regions
            .keys()
            .map(|r| (format!("region-{r}"), None))
            .collect();
        for r in &file.routers {
            let up = r
                .upstream
                .clone()
                .or_else(|| r.region.as_ref().map(|g| format!("region-{g}")));
            routers.insert(r.name.clone(), up);
        }
        let devices = file
            .devices
            .iter()
            .map(|d| {
                let ifaces = d
                    .ifaces
                    .iter()
                    .map(|i| (i.name.clone(), i.router.clone()))
                    .collect();
                let default = d
                    .default_via
                    .clone()
                    .or_else(|| d.ifaces.first().map(|i| i.name.clone()));
                (d.name.clone(), Dev { ifaces, default })
            })
            .collect();
        Sim { routers, devices }
    }

    fn router(&self, key: &str, r: &str) -> Result<(), String> {
        if self.routers.contains_key(r) {
            return Ok(());
        }
        Err(format!(
            "`{key}` to unknown router {r:?}; set `to` to one of {:?}",
            self.routers.keys().collect::<Vec<_>>()
        ))
    }

    fn device(&mut self, key: &str, d: &str) -> Result<&mut Dev, String> {
        if self.routers.contains_key(d) {
            return Err(format!(
                "`{key}` names router {d:?}; mobility steps move device interfaces"
            ));
        }
        self.devices.get_mut(d).ok_or_else(|| {
            format!(
                "`{key}` names unknown device {d:?} (removed, or never declared as a [[device]])"
            )
        })
    }

    fn iface<'a>(key: &str, d: &str, dev: &'a mut Dev, i: &str) -> Result<&'a mut String, String> {
        let known: Vec<String> = dev.ifaces.keys().cloned().collect();
        dev.ifaces.get_mut(i).ok_or_else(|| {
            format!("`{key} = \"{d}.{i}\"`: device {d:?} has no interface {i:?} at this step (it has {known:?})")
        })
    }

    fn apply(&mut self, m: &MobilityStep) -> Result<(), String> {
        let key = m.key();
        match m {
            MobilityStep::Replug {
                device,
                iface,
                router,
            } => {
                self.router(key, router)?;
                let dev = self.device(key, device)?;
                *Self::iface(key, device, dev, iface)? = router.clone();
            }
            MobilityStep::AddIface {
                device,
                iface,
                router,
            } => {
                self.router(key, router)?;
                let dev = self.device(key, device)?;
                if dev.ifaces.contains_key(iface) {
                    return Err(format!(
                        "`add-iface = \"{device}.{iface}\"`: the device already has {iface:?}; choose another name or `remove-iface` it first"
                    ));
                }
                dev.ifaces.insert(iface.clone(), router.clone());
            }
            MobilityStep::RemoveIface { device, iface } => {
                let dev = self.device(key, device)?;
                Self::iface(key, device, dev, iface)?;
                if dev.default.as_deref() == Some(iface) {
                    return Err(format!(
                        "`remove-iface = \"{device}.{iface}\"`: {iface} carries the default route of {device:?}; add a `default-route = \"{device}.OTHER\"` step before it, or move the interface with `replug`"
                    ));
                }
                dev.ifaces.remove(iface);
            }
            MobilityStep::DefaultRoute { device, iface } => {
                let dev = self.device(key, device)?;
                Self::iface(key, device, dev, iface)?;
                dev.default = Some(iface.clone());
            }
            MobilityStep::Renew { device, iface } => {
                let dev = self.device(key, device)?;
                Self::iface(key, device, dev, iface)?;
            }
            MobilityStep::RemoveNode(n) => self.remove(n)?,
        }
        Ok(())
    }

    fn remove(&mut self, n: &str) -> Result<(), String> {
        if self.devices.remove(n).is_some() {
            return Ok(());
        }
        if !self.routers.contains_key(n) {
            return Err(format!(
                "`remove-node = {n:?}`: no such node (removed, or never declared)"
            ));
        }
        let mut below: Vec<&str> = self
            .devices
            .iter()
            .filter(|(_, d)| d.ifaces.values().any(|r| r == n))
            .map(|(d, _)| d.as_str())
            .collect();
        below.extend(
            self.routers
                .iter()
                .filter(|(_, up)| up.as_deref() == Some(n))
                .map(|(r, _)| r.as_str()),
        );
        if !below.is_empty() {
            return Err(format!(
                "`remove-node = {n:?}`: {below:?} still hang off its LAN; remove them, or `replug` their interfaces, first"
            ));
        }
        self.routers.remove(n);
        Ok(())
    }
}

/// Follows the mobility steps through the topology and refuses the first
/// one that cannot work, naming the step and the fix.
pub(super) fn validate(file: &LabFile) -> Result<(), String> {
    let mut sim = Sim::new(file);
    let mut removed = BTreeSet::new();
    for (n, s) in file.steps.iter().enumerate() {
        let n = n + 1;
        if let Some(node) = s.run.as_ref().filter(|r| removed.contains(*r)) {
            return Err(format!(
                "step {n}: `run = {node:?}` after the node was removed by `remove-node`"
            ));
        }
        if let Ok(Some(m)) = kind(s) {
            sim.apply(&m).map_err(|e| format!("step {n}: {e}"))?;
            if let MobilityStep::RemoveNode(r) = &m {
                removed.insert(r.clone());
            }
        }
    }
    Ok(())
}

/// Runs one mobility step on the lab.
pub(super) async fn execute(lab: &crate::Lab, m: MobilityStep) -> Result<(), String> {
    let dev = |d: &str| {
        lab.device(d)
            .ok_or_else(|| format!("{d:?} is not a device of this lab"))
    };
    let r = match &m {
        MobilityStep::Replug {
            device,
            iface,
            router,
        } => dev(device)?.replug_iface(iface, router).await.map(drop),
        MobilityStep::AddIface {
            device,
            iface,
            router,
        } => dev(device)?.add_iface(iface, router).await.map(drop),
        MobilityStep::RemoveIface { device, iface } => dev(device)?.remove_iface(iface).await,
        MobilityStep::DefaultRoute { device, iface } => dev(device)?.set_default_route(iface).await,
        MobilityStep::Renew { device, iface } => dev(device)?.renew_addr(iface).await.map(drop),
        MobilityStep::RemoveNode(n) => lab.remove_node(n).await,
    };
    r.map_err(|e| e.to_string())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests")]
mod tests {
    use std::path::Path;

    use super::*;

    const TOPO: &str = "[[router]]\nname = \"isp\"\n[[router]]\nname = \"wifi\"\nupstream = \"isp\"\n[[router]]\nname = \"cell\"\nupstream = \"isp\"\n[[device]]\nname = \"phone\"\niface = [{ name = \"eth0\", router = \"wifi\" }]\n";

    fn parse(steps: &str) -> Result<LabFile, String> {
        LabFile::parse(&format!("{TOPO}{steps}"), Path::new("m.toml")).map_err(|e| e.to_string())
    }

    #[test]
    fn mobility_steps_parse() {
        let f = parse(
            "[[step]]\nreplug = \"phone.eth0\"\nto = \"cell\"\n[[step]]\nadd-iface = \"phone.wlan1\"\nto = \"wifi\"\n[[step]]\ndefault-route = \"phone.wlan1\"\n[[step]]\nremove-iface = \"phone.eth0\"\n[[step]]\nrenew = \"phone.wlan1\"\n[[step]]\nremove-node = \"phone\"\n[[step]]\nremove-node = \"cell\"\n",
        )
        .unwrap();
        assert_eq!(
            kind(&f.steps[0]).unwrap(),
            Some(MobilityStep::Replug {
                device: "phone".into(),
                iface: "eth0".into(),
                router: "cell".into()
            })
        );
        let keys: Vec<_> = f
            .steps
            .iter()
            .map(|s| kind(s).unwrap().unwrap().key())
            .collect();
        assert_eq!(
            keys,
            [
                "replug",
                "add-iface",
                "default-route",
                "remove-iface",
                "renew",
                "remove-node",
                "remove-node"
            ]
        );
    }

    #[test]
    fn bad_mobility_steps_name_the_fix() {
        let e = parse("[[step]]\nreplug = \"phone.eth0\"\nto = \"nope\"\n").unwrap_err();
        assert!(
            e.contains("step 1") && e.contains("unknown router \"nope\"") && e.contains("cell"),
            "{e}"
        );
        let e = parse("[[step]]\nreplug = \"phone.wlan9\"\nto = \"cell\"\n").unwrap_err();
        assert!(e.contains("no interface \"wlan9\""), "{e}");
        let e = parse("[[step]]\nremove-iface = \"phone.eth0\"\n").unwrap_err();
        assert!(
            e.contains("carries the default route") && e.contains("default-route = \"phone."),
            "{e}"
        );
        // After moving the default, the removal is fine.
        parse("[[step]]\nadd-iface = \"phone.wwan0\"\nto = \"cell\"\n[[step]]\ndefault-route = \"phone.wwan0\"\n[[step]]\nremove-iface = \"phone.eth0\"\n").unwrap();
        let e = parse("[[step]]\nreplug = \"phone.eth0\"\n").unwrap_err();
        assert!(e.contains("needs `to"), "{e}");
        let e = parse("[[step]]\nrenew = \"phone.eth0\"\nto = \"cell\"\n").unwrap_err();
        assert!(e.contains("`to` belongs"), "{e}");
        let e = parse("[[step]]\nremove-node = \"wifi\"\n").unwrap_err();
        assert!(e.contains("phone") && e.contains("replug"), "{e}");
        let e = parse("[[step]]\nremove-node = \"isp\"\n").unwrap_err();
        assert!(e.contains("wifi"), "{e}");
        let e = parse("[[step]]\nrenew = \"isp.wan\"\n").unwrap_err();
        assert!(e.contains("names router \"isp\""), "{e}");
        let e =
            parse("[[step]]\nremove-node = \"phone\"\n[[step]]\nrun = \"phone\"\ncmd = \"true\"\n")
                .unwrap_err();
        assert!(e.contains("step 2") && e.contains("removed"), "{e}");
        let e = parse("[[step]]\nreplug = \"phone.eth0\"\nto = \"cell\"\nsleep = \"1s\"\n")
            .unwrap_err();
        assert!(e.contains("exactly one"), "{e}");
    }
}
