//! The lab's record of regions and their links, and the routes it implies: what a router
//! built into a region's subtree needs (see [`super::region`] for the API). Below the router
//! builder: it knows routers by name, never by handle.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::addr::{self, LanKind};
use crate::error::{Error, NetlinkContext, Result};
use crate::sys::linkattr;

use super::LabInner;

#[derive(Debug)]
pub(super) struct LinkRec {
    /// Link number (addresses come from it).
    pub(super) n: u8,
    /// How the pair currently routes: `None` direct, `Some(m)` via region m,
    /// `Some("")` cut.
    pub(super) broken: Option<String>,
    /// Name of the drop table while cut.
    pub(super) cut_table: Option<String>,
}

/// The lab's regions and links (in `LabInner`).
#[derive(Debug, Default)]
pub(crate) struct Regions {
    pub(super) names: BTreeMap<String, String>,
    /// Keyed by the sorted pair.
    pub(super) links: BTreeMap<(String, String), LinkRec>,
}

impl Regions {
    /// Records a new link between regions `a` and `b` and returns its number (which picks
    /// its transit addresses): at most 63 per lab, one per pair.
    pub(super) fn reserve(&mut self, a: &str, b: &str, label: &str) -> Result<u8> {
        if self.links.contains_key(&key(a, b)) {
            return Err(Error::invalid(
                "region_link",
                crate::InvalidReason::Duplicate,
                format!("region link {label} exists already"),
            ));
        }
        let n = u8::try_from(self.links.len())
            .ok()
            .filter(|n| *n < 63)
            .ok_or_else(|| {
                Error::invalid(
                    "region_link",
                    crate::InvalidReason::OutOfRange,
                    "at most 63 region links per lab",
                )
            })?;
        self.links.insert(
            key(a, b),
            LinkRec {
                n,
                broken: None,
                cut_table: None,
            },
        );
        Ok(n)
    }
}

pub(super) fn key(a: &str, b: &str) -> (String, String) {
    if a <= b {
        (a.to_string(), b.to_string())
    } else {
        (b.to_string(), a.to_string())
    }
}

/// Transit addresses of link `n`: (lower-named side, higher-named side).
pub(super) fn transit(n: u8) -> ((Ipv4Addr, Ipv6Addr), (Ipv4Addr, Ipv6Addr)) {
    let base = 4 * u32::from(n);
    let v4 = |h: u32| Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 18, 254, 0)) + base + h);
    let v6 = |h: u16| Ipv6Addr::new(0x2001, 0xdb8, 0xfe, u16::from(n), 0, 0, 0, h);
    ((v4(1), v6(1)), (v4(2), v6(2)))
}

impl LabInner {
    pub(super) fn regions(&self) -> std::sync::MutexGuard<'_, Regions> {
        self.regions.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Region router name → region name (for topology.json).
    pub(crate) fn region_routers(&self) -> BTreeMap<String, String> {
        self.regions()
            .names
            .iter()
            .map(|(name, router)| (router.clone(), name.clone()))
            .collect()
    }
}

/// The networks of a region's subtree that the region router routes:
/// its own LAN, and the LANs below it reachable without crossing a NAT
/// (IPv4), every LAN below it (IPv6).
pub(super) fn region_prefixes(lab: &LabInner, router: &str) -> Vec<(IpAddr, u8)> {
    let t = lab.topo();
    let mut v = vec![];
    for (name, rec) in &t.routers {
        let chain = t.ancestry(name);
        let Some(pos) = chain.iter().position(|c| c == router) else {
            continue;
        };
        // Routers strictly between `name` and the region router, and
        // `name` itself, must be public for its IPv4 LAN to be routed.
        let v4_ok = chain[..pos].iter().all(|r| {
            t.routers
                .get(r)
                .is_some_and(|x| x.lan.kind == LanKind::Public)
        });
        if v4_ok {
            v.push((IpAddr::V4(rec.lan.lan.v4), addr::V4_PREFIX));
        }
        v.push((IpAddr::V6(rec.lan.lan.v6), addr::V6_PREFIX));
    }
    v
}

/// Points the routes of `router` for `prefixes` at `via4`/`via6`.
pub(super) async fn route_via(
    lab: &LabInner,
    router: &str,
    prefixes: Vec<(IpAddr, u8)>,
    via: (Ipv4Addr, Ipv6Addr),
) -> Result<()> {
    let ns = lab
        .topo()
        .routers
        .get(router)
        .map(|r| r.node.ns().clone())
        .ok_or_else(|| {
            Error::invalid_node(
                router,
                "region",
                crate::InvalidReason::Gone,
                format!("region router {router} vanished"),
            )
        })?;
    let what = format!("routing region traffic in {router}");
    ns.run(move || async move {
        for (p, len) in prefixes {
            let gw = match p {
                IpAddr::V4(_) => IpAddr::V4(via.0),
                IpAddr::V6(_) => IpAddr::V6(via.1),
            };
            linkattr::replace_route(p, len, gw).await?;
        }
        Ok(())
    })
    .await?
    .ctx(|| what)
}

/// Called after a router is built: if it sits below a region router with
/// links, the linked regions learn to route its networks.
pub(crate) async fn router_added(lab: &std::sync::Arc<LabInner>, name: &str) -> Result<()> {
    let chain = lab.topo().ancestry(name);
    // (region router of `name`, [(linked region router, our transit address)])
    type Transit = (Ipv4Addr, Ipv6Addr);
    let (region_router, routes): (String, Vec<(String, Transit)>) = {
        let r = lab.regions();
        let Some((region, region_router)) = r
            .names
            .iter()
            .find(|(_, rn)| chain.iter().skip(1).any(|c| c == *rn))
        else {
            return Ok(());
        };
        let mut v = vec![];
        for ((x, y), rec) in &r.links {
            let (other, me_lo) = if x == region {
                (y, true)
            } else if y == region {
                (x, false)
            } else {
                continue;
            };
            if rec.broken.is_some() {
                continue;
            }
            let (lo, hi) = transit(rec.n);
            let via = if me_lo { lo } else { hi };
            v.push((r.names[other].clone(), via));
        }
        (region_router.clone(), v)
    };
    if routes.is_empty() {
        return Ok(());
    }
    let all = region_prefixes(lab, &region_router);
    for (other_router, via) in routes {
        route_via(lab, &other_router, all.clone(), via).await?;
    }
    Ok(())
}
