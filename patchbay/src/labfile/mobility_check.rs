//! Validation of mobility steps: it follows the topology step by step, so
//! a step naming an unknown router or interface, or removing the interface
//! that carries the default route, is refused before the lab is built.

use std::collections::{BTreeMap, BTreeSet};

use super::error::{Entry, InvalidEntry};
use super::mobility::MobilityStep;
use super::schema::LabFile;
use crate::{InvalidLab, InvalidReason};

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

fn bad(node: &str, field: &'static str, reason: InvalidReason, msg: String) -> InvalidLab {
    InvalidLab::new(field, reason, msg).node(node)
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

    fn router(&self, key: &str, r: &str) -> Result<(), InvalidLab> {
        if self.routers.contains_key(r) {
            return Ok(());
        }
        Err(InvalidLab::new(
            "to",
            InvalidReason::Unknown,
            format!(
                "`{key}` to unknown router {r:?}; set `to` to one of {}",
                crate::invalid::known_names(self.routers.keys())
            ),
        ))
    }

    fn device(&mut self, key: &'static str, d: &str) -> Result<&mut Dev, InvalidLab> {
        if self.routers.contains_key(d) {
            return Err(bad(
                d,
                key,
                InvalidReason::Unsupported,
                format!("`{key}` names router {d:?}; mobility steps move device interfaces"),
            ));
        }
        self.devices.get_mut(d).ok_or_else(|| {
            bad(
                d,
                key,
                InvalidReason::Unknown,
                format!(
                    "`{key}` names unknown device {d:?} (removed, or never declared as a [[device]])"
                ),
            )
        })
    }

    fn iface<'a>(
        key: &'static str,
        d: &str,
        dev: &'a mut Dev,
        i: &str,
    ) -> Result<&'a mut String, InvalidLab> {
        let known: Vec<String> = dev.ifaces.keys().cloned().collect();
        dev.ifaces.get_mut(i).ok_or_else(|| {
            bad(
                d,
                key,
                InvalidReason::Unknown,
                format!("`{key} = \"{d}.{i}\"`: device {d:?} has no interface {i:?} at this step (it has {known:?})"),
            )
        })
    }

    fn apply(&mut self, m: &MobilityStep) -> Result<(), InvalidLab> {
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
                    return Err(bad(
                        device,
                        key,
                        InvalidReason::Duplicate,
                        format!(
                            "`add-iface = \"{device}.{iface}\"`: the device already has {iface:?}; choose another name or `remove-iface` it first"
                        ),
                    ));
                }
                dev.ifaces.insert(iface.clone(), router.clone());
            }
            MobilityStep::RemoveIface { device, iface } => {
                let dev = self.device(key, device)?;
                Self::iface(key, device, dev, iface)?;
                if dev.default.as_deref() == Some(iface) {
                    return Err(bad(
                        device,
                        key,
                        InvalidReason::Conflict,
                        format!(
                            "`remove-iface = \"{device}.{iface}\"`: {iface} carries the default route of {device:?}; add a `default-route = \"{device}.OTHER\"` step before it, or move the interface with `replug`"
                        ),
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

    fn remove(&mut self, n: &str) -> Result<(), InvalidLab> {
        if self.devices.remove(n).is_some() {
            return Ok(());
        }
        if !self.routers.contains_key(n) {
            return Err(bad(
                n,
                "remove-node",
                InvalidReason::Unknown,
                format!("`remove-node = {n:?}`: no such node (removed, or never declared)"),
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
            return Err(bad(
                n,
                "remove-node",
                InvalidReason::Conflict,
                format!(
                    "`remove-node = {n:?}`: {below:?} still hang off its LAN; remove them, or `replug` their interfaces, first"
                ),
            ));
        }
        self.routers.remove(n);
        Ok(())
    }
}

/// Follows the mobility steps through the topology and refuses the first
/// one that cannot work, naming the step and the fix.
pub(super) fn validate(file: &LabFile) -> Result<(), InvalidEntry> {
    let mut sim = Sim::new(file);
    let mut removed = BTreeSet::new();
    for (n, s) in file.steps.iter().enumerate() {
        let at = || Entry::Step(n + 1);
        if let Some(node) = s.run.as_ref().filter(|r| removed.contains(*r)) {
            return Err(InvalidEntry::new(
                at(),
                bad(
                    node,
                    "run",
                    InvalidReason::Gone,
                    format!("`run = {node:?}` after the node was removed by `remove-node`"),
                ),
            ));
        }
        if let Ok(Some(m)) = s.mobility() {
            sim.apply(&m).map_err(|e| InvalidEntry::new(at(), e))?;
            if let MobilityStep::RemoveNode(r) = &m {
                removed.insert(r.clone());
            }
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests")]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::labfile::LabFileError;

    const TOPO: &str = "[[router]]\nname = \"isp\"\n[[router]]\nname = \"wifi\"\nupstream = \"isp\"\n[[router]]\nname = \"cell\"\nupstream = \"isp\"\n[[device]]\nname = \"phone\"\niface = [{ name = \"eth0\", router = \"wifi\" }]\n";

    fn parse(steps: &str) -> Result<LabFile, LabFileError> {
        LabFile::parse(&format!("{TOPO}{steps}"), Path::new("m.toml"))
    }

    fn err(steps: &str) -> String {
        parse(steps).unwrap_err().to_string()
    }

    #[test]
    fn mobility_steps_parse() {
        let f = parse(
            "[[step]]\nreplug = \"phone.eth0\"\nto = \"cell\"\n[[step]]\nadd-iface = \"phone.wlan1\"\nto = \"wifi\"\n[[step]]\ndefault-route = \"phone.wlan1\"\n[[step]]\nremove-iface = \"phone.eth0\"\n[[step]]\nrenew = \"phone.wlan1\"\n[[step]]\nremove-node = \"phone\"\n[[step]]\nremove-node = \"cell\"\n",
        )
        .unwrap();
        assert_eq!(
            f.steps[0].mobility().unwrap(),
            Some(MobilityStep::Replug {
                device: "phone".into(),
                iface: "eth0".into(),
                router: "cell".into()
            })
        );
        let keys: Vec<_> = f
            .steps
            .iter()
            .map(|s| s.mobility().unwrap().unwrap().key())
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
        let e = err("[[step]]\nreplug = \"phone.eth0\"\nto = \"nope\"\n");
        assert!(
            e.contains("step 1") && e.contains("unknown router \"nope\"") && e.contains("cell"),
            "{e}"
        );
        let e = err("[[step]]\nreplug = \"phone.wlan9\"\nto = \"cell\"\n");
        assert!(e.contains("no interface \"wlan9\""), "{e}");
        let e = err("[[step]]\nremove-iface = \"phone.eth0\"\n");
        assert!(
            e.contains("carries the default route") && e.contains("default-route = \"phone."),
            "{e}"
        );
        // After moving the default, the removal is fine.
        parse("[[step]]\nadd-iface = \"phone.wwan0\"\nto = \"cell\"\n[[step]]\ndefault-route = \"phone.wwan0\"\n[[step]]\nremove-iface = \"phone.eth0\"\n").unwrap();
        let e = err("[[step]]\nreplug = \"phone.eth0\"\n");
        assert!(e.contains("needs `to"), "{e}");
        let e = err("[[step]]\nrenew = \"phone.eth0\"\nto = \"cell\"\n");
        assert!(e.contains("`to` belongs"), "{e}");
        let e = err("[[step]]\nremove-node = \"wifi\"\n");
        assert!(e.contains("phone") && e.contains("replug"), "{e}");
        let e = err("[[step]]\nremove-node = \"isp\"\n");
        assert!(e.contains("wifi"), "{e}");
        let e = err("[[step]]\nrenew = \"isp.wan\"\n");
        assert!(e.contains("names router \"isp\""), "{e}");
        let e =
            err("[[step]]\nremove-node = \"phone\"\n[[step]]\nrun = \"phone\"\ncmd = \"true\"\n");
        assert!(e.contains("step 2") && e.contains("removed"), "{e}");
        let e = err("[[step]]\nreplug = \"phone.eth0\"\nto = \"cell\"\nsleep = \"1s\"\n");
        assert!(e.contains("exactly one"), "{e}");
    }

    #[test]
    fn a_bad_step_names_its_entry_line_node_and_field() {
        let e =
            parse("[[step]]\nsleep = \"1s\"\n\n[[step]]\nrenew = \"phone.wlan9\"\n").unwrap_err();
        let LabFileError::Invalid { line, invalid, .. } = &e else {
            panic!("{e}");
        };
        assert_eq!(invalid.at, Entry::Step(2));
        assert_eq!(invalid.error.node.as_deref(), Some("phone"));
        assert_eq!(invalid.error.field, "renew");
        assert_eq!(invalid.error.reason, InvalidReason::Unknown);
        // TOPO has 11 lines; the second step's table starts on line 15 or 16.
        assert!(matches!(line, Some(15 | 16)), "{e}");
        assert!(e.to_string().starts_with("m.toml:1"), "{e}");
        assert!(e.to_string().contains(": step 2: `renew = "), "{e}");
    }
}
