//! Checking a lab file's names and references before anything is built.

use std::collections::BTreeSet;

use super::schema::{LabFile, StepKind, node_iface};

impl LabFile {
    /// Checks names and references; the message says what to fix.
    pub fn validate(&self) -> Result<(), String> {
        let mut names = BTreeSet::new();
        let mut routers = BTreeSet::new();
        for (name, r) in &self.regions {
            for other in r.links.keys() {
                if self
                    .regions
                    .get(other)
                    .is_some_and(|o| o.links.contains_key(name))
                {
                    return Err(format!(
                        "the link between regions {name:?} and {other:?} is declared in both; declare it once"
                    ));
                }
                if !self.regions.contains_key(other) {
                    return Err(format!(
                        "region {name:?} links to unknown region {other:?}; declare [region.{other}] (known regions: {:?})",
                        self.regions.keys().collect::<Vec<_>>()
                    ));
                }
            }
        }
        for r in &self.routers {
            if let Some(region) = &r.region
                && !self.regions.contains_key(region)
            {
                return Err(format!(
                    "router {:?} is in unknown region {region:?}; declare [region.{region}]",
                    r.name
                ));
            }
            if r.region.is_some() && r.upstream.is_some() {
                return Err(format!(
                    "router {:?} has both `region` and `upstream`: a region router is its upstream; keep one",
                    r.name
                ));
            }
            if let Some(m) = r.mtu
                && m < 1280
            {
                return Err(format!(
                    "router {:?}: mtu = {m} is below 1280, the IPv6 minimum, and its links carry IPv6; use at least 1280",
                    r.name
                ));
            }
            if !names.insert(r.name.as_str()) {
                return Err(format!(
                    "duplicate node name {:?}: every router and device needs a unique name",
                    r.name
                ));
            }
            if let Some(up) = &r.upstream
                && !routers.contains(up.as_str())
            {
                return Err(format!(
                    "router {:?}: upstream {up:?} is not a router declared above it; declare [[router]] {up:?} first",
                    r.name
                ));
            }
            routers.insert(r.name.as_str());
        }
        for d in &self.devices {
            if !names.insert(d.name.as_str()) {
                return Err(format!(
                    "duplicate node name {:?}: every router and device needs a unique name",
                    d.name
                ));
            }
            if d.ifaces.is_empty() {
                return Err(format!(
                    "device {:?} has no interface; add `iface = [{{ name = \"eth0\", router = \"...\" }}]`",
                    d.name
                ));
            }
            for i in &d.ifaces {
                if let Some(m) = i.mtu
                    && m < 1280
                {
                    return Err(format!(
                        "device {:?}: interface {:?} has mtu = {m}, below 1280, the IPv6 minimum, and the link carries IPv6; use at least 1280",
                        d.name, i.name
                    ));
                }
                let in_region = i
                    .router
                    .strip_prefix("region-")
                    .is_some_and(|r| self.regions.contains_key(r));
                if !routers.contains(i.router.as_str()) && !in_region {
                    return Err(format!(
                        "device {:?}: interface {:?} is on unknown router {:?}; known routers: {:?}",
                        d.name, i.name, i.router, routers
                    ));
                }
            }
        }
        if let Some(dns) = &self.dns {
            dns.validate(&names)?;
        }
        for d in &self.devices {
            if let Some(ns) = &d.nameserver
                && ns.parse::<std::net::IpAddr>().is_err()
                && !names.contains(ns.as_str())
            {
                return Err(format!(
                    "device {:?}: nameserver {ns:?} is neither an IP address nor a node of this lab",
                    d.name
                ));
            }
        }
        for c in &self.lab.capture {
            let (node, _) = node_iface("capture", c)?;
            if !names.contains(node.as_str()) {
                return Err(format!("[lab] capture {c:?}: unknown node {node:?}"));
            }
        }
        let mut bg = BTreeSet::new();
        let mut faults = BTreeSet::new();
        for (n, s) in self.steps.iter().enumerate() {
            let n = n + 1;
            match s.kind().map_err(|e| format!("step {n}: {e}"))? {
                StepKind::Run { node } | StepKind::Spawn { node, .. }
                    if !names.contains(node.as_str()) =>
                {
                    return Err(format!("step {n}: unknown node {node:?}"));
                }
                StepKind::Spawn { name, .. } if !bg.insert(name.clone()) => {
                    return Err(format!("step {n}: background name {name:?} is used twice"));
                }
                StepKind::Wait(name) | StepKind::Kill(name) if !bg.contains(&name) => {
                    return Err(format!(
                        "step {n}: no background step named {name:?} before it"
                    ));
                }
                StepKind::Blackhole { node, .. }
                | StepKind::Link { node, .. }
                | StepKind::SetLink { node, .. }
                    if !names.contains(node.as_str()) =>
                {
                    return Err(format!("step {n}: unknown node {node:?}"));
                }
                StepKind::Partition { a, b, .. }
                    if !names.contains(a.as_str()) || !names.contains(b.as_str()) =>
                {
                    return Err(format!(
                        "step {n}: partition of unknown node(s) {a:?}, {b:?}"
                    ));
                }
                StepKind::FlushNat(r) if !routers.contains(r.as_str()) => {
                    return Err(format!(
                        "step {n}: flush-nat of {r:?}, which is not a router"
                    ));
                }
                StepKind::Blackhole { name: Some(f), .. }
                | StepKind::Partition { name: Some(f), .. }
                    if !faults.insert(f.clone()) =>
                {
                    return Err(format!("step {n}: fault name {f:?} is used twice"));
                }
                StepKind::RegionLink { a, b, .. }
                    if !self.regions.contains_key(&a) || !self.regions.contains_key(&b) =>
                {
                    return Err(format!(
                        "step {n}: region link {a}–{b} names an unknown region (known regions: {:?})",
                        self.regions.keys().collect::<Vec<_>>()
                    ));
                }
                StepKind::Heal(f) if !faults.contains(&f) => {
                    return Err(format!(
                        "step {n}: no named blackhole or partition {f:?} before it"
                    ));
                }
                _ => {}
            }
        }
        super::steps_mobility::validate(self)
    }
}
