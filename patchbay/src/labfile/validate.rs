//! Checking a lab file's names and references before anything is built.

use std::collections::BTreeSet;

use super::error::{Entry, InvalidEntry};
use super::schema::LabFile;
use super::step::{StepKind, node_iface};
use crate::{InvalidLab, InvalidReason};

fn bad(field: &'static str, reason: InvalidReason, message: String) -> InvalidLab {
    InvalidLab::new(field, reason, message)
}

/// The names seen so far: every node, and the routers among them.
#[derive(Default)]
struct Names<'a> {
    nodes: BTreeSet<&'a str>,
    routers: BTreeSet<&'a str>,
}

impl LabFile {
    /// Checks names and references; the error names the entry, the node,
    /// the field and the fix.
    pub fn validate(&self) -> Result<(), InvalidEntry> {
        self.check_regions()?;
        let mut names = Names::default();
        self.check_routers(&mut names)?;
        self.check_devices(&mut names)?;
        if let Some(dns) = &self.dns {
            dns.validate(&names.nodes)
                .map_err(|e| InvalidEntry::new(Entry::Dns, e))?;
        }
        self.check_nameservers(&names)?;
        for c in &self.lab.capture {
            let at = |e| InvalidEntry::new(Entry::Lab, e);
            let (node, _) = node_iface("capture", c).map_err(at)?;
            if !names.nodes.contains(node.as_str()) {
                return Err(at(bad(
                    "capture",
                    InvalidReason::Unknown,
                    format!("[lab] capture {c:?}: unknown node {node:?}"),
                )
                .node(node)));
            }
        }
        self.check_steps(&names)?;
        super::mobility_check::validate(self)
    }

    fn check_regions(&self) -> Result<(), InvalidEntry> {
        for (name, r) in &self.regions {
            let at = |e| InvalidEntry::new(Entry::Region(name.clone()), e);
            for other in r.links.keys() {
                if self
                    .regions
                    .get(other)
                    .is_some_and(|o| o.links.contains_key(name))
                {
                    return Err(at(bad(
                        "links",
                        InvalidReason::Duplicate,
                        format!(
                            "the link between regions {name:?} and {other:?} is declared in both; declare it once"
                        ),
                    )));
                }
                if !self.regions.contains_key(other) {
                    return Err(at(bad(
                        "links",
                        InvalidReason::Unknown,
                        format!(
                            "region {name:?} links to unknown region {other:?}; declare [region.{other}] (known regions: {})",
                            crate::invalid::known_names(self.regions.keys())
                        ),
                    )));
                }
            }
        }
        Ok(())
    }

    fn check_routers<'a>(&'a self, names: &mut Names<'a>) -> Result<(), InvalidEntry> {
        for (n, r) in self.routers.iter().enumerate() {
            let name = &r.name;
            let at = |e: InvalidLab| {
                let at = Entry::Router {
                    n: n + 1,
                    name: name.clone(),
                };
                InvalidEntry::new(at, e.node(name))
            };
            if let Some(region) = &r.region
                && !self.regions.contains_key(region)
            {
                return Err(at(bad(
                    "region",
                    InvalidReason::Unknown,
                    format!(
                        "router {name:?} is in unknown region {region:?}; declare [region.{region}]"
                    ),
                )));
            }
            if r.region.is_some() && r.upstream.is_some() {
                return Err(at(bad(
                    "region",
                    InvalidReason::Conflict,
                    format!(
                        "router {name:?} has both `region` and `upstream`: a region router is its upstream; keep one"
                    ),
                )));
            }
            if let Some(m) = r.mtu
                && m < 1280
            {
                return Err(at(bad(
                    "mtu",
                    InvalidReason::OutOfRange,
                    format!(
                        "router {name:?}: mtu = {m} is below 1280, the IPv6 minimum, and its links carry IPv6; use at least 1280"
                    ),
                )));
            }
            if !names.nodes.insert(name.as_str()) {
                return Err(at(duplicate(name)));
            }
            if let Some(up) = &r.upstream
                && !names.routers.contains(up.as_str())
            {
                return Err(at(bad(
                    "upstream",
                    InvalidReason::Unknown,
                    format!(
                        "router {name:?}: upstream {up:?} is not a router declared above it; declare [[router]] {up:?} first"
                    ),
                )));
            }
            names.routers.insert(name.as_str());
        }
        Ok(())
    }

    fn check_devices<'a>(&'a self, names: &mut Names<'a>) -> Result<(), InvalidEntry> {
        for (n, d) in self.devices.iter().enumerate() {
            let name = &d.name;
            let at = |e: InvalidLab| {
                let at = Entry::Device {
                    n: n + 1,
                    name: name.clone(),
                };
                InvalidEntry::new(at, e.node(name))
            };
            if !names.nodes.insert(name.as_str()) {
                return Err(at(duplicate(name)));
            }
            if d.ifaces.is_empty() {
                return Err(at(bad(
                    "iface",
                    InvalidReason::Missing,
                    format!(
                        "device {name:?} has no interface; add `iface = [{{ name = \"eth0\", router = \"...\" }}]`"
                    ),
                )));
            }
            for i in &d.ifaces {
                if let Some(m) = i.mtu
                    && m < 1280
                {
                    return Err(at(bad(
                        "mtu",
                        InvalidReason::OutOfRange,
                        format!(
                            "device {name:?}: interface {:?} has mtu = {m}, below 1280, the IPv6 minimum, and the link carries IPv6; use at least 1280",
                            i.name
                        ),
                    )));
                }
                let in_region = i
                    .router
                    .strip_prefix("region-")
                    .is_some_and(|r| self.regions.contains_key(r));
                if !names.routers.contains(i.router.as_str()) && !in_region {
                    return Err(at(bad(
                        "router",
                        InvalidReason::Unknown,
                        format!(
                            "device {name:?}: interface {:?} is on unknown router {:?}; known routers: {}",
                            i.name,
                            i.router,
                            crate::invalid::known_names(&names.routers)
                        ),
                    )));
                }
            }
        }
        Ok(())
    }

    fn check_nameservers(&self, names: &Names<'_>) -> Result<(), InvalidEntry> {
        for (n, d) in self.devices.iter().enumerate() {
            if let Some(ns) = &d.nameserver
                && ns.parse::<std::net::IpAddr>().is_err()
                && !names.nodes.contains(ns.as_str())
            {
                let at = Entry::Device {
                    n: n + 1,
                    name: d.name.clone(),
                };
                let e = bad(
                    "nameserver",
                    InvalidReason::Unknown,
                    format!(
                        "device {:?}: nameserver {ns:?} is neither an IP address nor a node of this lab",
                        d.name
                    ),
                );
                return Err(InvalidEntry::new(at, e.node(&d.name)));
            }
        }
        Ok(())
    }

    fn check_steps(&self, names: &Names<'_>) -> Result<(), InvalidEntry> {
        let mut bg = BTreeSet::new();
        let mut faults = BTreeSet::new();
        for (n, s) in self.steps.iter().enumerate() {
            let kind = s
                .kind()
                .map_err(|e| InvalidEntry::new(Entry::Step(n + 1), e))?;
            self.check_step(kind, names, &mut bg, &mut faults)
                .map_err(|e| InvalidEntry::new(Entry::Step(n + 1), e))?;
        }
        Ok(())
    }

    /// One step's references against the names and the earlier steps.
    fn check_step(
        &self,
        kind: StepKind,
        names: &Names<'_>,
        bg: &mut BTreeSet<String>,
        faults: &mut BTreeSet<String>,
    ) -> Result<(), InvalidLab> {
        let unknown_node = |field, node: &str| {
            bad(
                field,
                InvalidReason::Unknown,
                format!("unknown node {node:?}"),
            )
            .node(node)
        };
        let known = |n: &str| names.nodes.contains(n);
        match kind {
            StepKind::Run { node } | StepKind::Spawn { node, .. } if !known(&node) => {
                Err(unknown_node("run", &node))
            }
            StepKind::Spawn { name, .. } if !bg.insert(name.clone()) => Err(bad(
                "background",
                InvalidReason::Duplicate,
                format!("background name {name:?} is used twice"),
            )),
            StepKind::Wait(name) | StepKind::Kill(name) if !bg.contains(&name) => Err(bad(
                "wait",
                InvalidReason::Unknown,
                format!("no background step named {name:?} before it"),
            )),
            StepKind::Blackhole { node, .. } if !known(&node) => {
                Err(unknown_node("blackhole", &node))
            }
            StepKind::Link { node, .. } if !known(&node) => Err(unknown_node("link", &node)),
            StepKind::SetLink { node, up, .. } if !known(&node) => Err(unknown_node(
                if up { "link-up" } else { "link-down" },
                &node,
            )),
            StepKind::Partition { a, b, .. } if !known(&a) || !known(&b) => Err(bad(
                "partition",
                InvalidReason::Unknown,
                format!("partition of unknown node(s) {a:?}, {b:?}"),
            )),
            StepKind::FlushNat(r) if !names.routers.contains(r.as_str()) => Err(bad(
                "flush-nat",
                InvalidReason::Unknown,
                format!("flush-nat of {r:?}, which is not a router"),
            )
            .node(r)),
            StepKind::Blackhole { name: Some(f), .. }
            | StepKind::Partition { name: Some(f), .. }
                if !faults.insert(f.clone()) =>
            {
                Err(bad(
                    "name",
                    InvalidReason::Duplicate,
                    format!("fault name {f:?} is used twice"),
                ))
            }
            StepKind::RegionLink { a, b, broken }
                if !self.regions.contains_key(&a) || !self.regions.contains_key(&b) =>
            {
                Err(bad(
                    if broken {
                        "break-region-link"
                    } else {
                        "restore-region-link"
                    },
                    InvalidReason::Unknown,
                    format!(
                        "region link {a}–{b} names an unknown region (known regions: {})",
                        crate::invalid::known_names(self.regions.keys())
                    ),
                ))
            }
            StepKind::Heal(f) if !faults.contains(&f) => Err(bad(
                "heal",
                InvalidReason::Unknown,
                format!("no named blackhole or partition {f:?} before it"),
            )),
            _ => Ok(()),
        }
    }
}

fn duplicate(name: &str) -> InvalidLab {
    bad(
        "name",
        InvalidReason::Duplicate,
        format!("duplicate node name {name:?}: every router and device needs a unique name"),
    )
}
