//! Regions: named groups of routers with shaped links between them.
//!
//! A region is a public router named `region-NAME` on the exchange; routers
//! join it with [`RouterBuilder::region`] (they become its downstream
//! routers) and devices may attach to it directly. Two regions are joined
//! with [`Lab::link_regions`]: a veth pair between the two region routers
//! (`rg-OTHER` in each), addressed from `198.18.254.0/24` (a /30 per link)
//! and `2001:db8:fe::/48` (a /64 per link), with a [`LinkCondition`] on both
//! ends (a 40 ms delay gives an 80 ms round trip between the regions). Each
//! region router then routes the other region's networks over the link;
//! everything else still goes through the exchange.
//!
//! [`Lab::break_region_link`] takes the direct link out of use: traffic is
//! rerouted through a third region linked to both (two shaped hops, as
//! upstream patchbay does), or, when there is none, dropped silently on the
//! link (a partition). [`Lab::restore_region_link`] puts the direct routes
//! back.
//!
//! Routing stays closed: only lab prefixes are routed over region links.
//! Delay needs netem (`CONFIG_NET_SCH_NETEM`); without it `link_regions`
//! fails with [`Error::KernelFeature`], like any link condition.

use std::collections::BTreeMap;

use crate::addr;
use crate::error::{Error, NetlinkContext, Result};
use crate::link::{LinkCondition, qdisc_of, render_tc};
use crate::sys::netlink::{self, VethEnd};
use crate::sys::{nft, tc};

use super::Lab;
use super::region_routes::{key, region_prefixes, route_via, transit};
use super::router::{Router, RouterBuilder};

/// Prefix of region router names.
const ROUTER_PREFIX: &str = "region-";
/// Longest region name (interface `rg-NAME` must fit in 15 bytes).
const MAX_NAME: usize = 12;

/// A region of a lab; from [`Lab::add_region`]. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Region {
    name: String,
    router: Router,
}

impl Region {
    /// The region's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The region's router (`region-NAME`): devices may attach to it.
    pub fn router(&self) -> &Router {
        &self.router
    }
}

impl RouterBuilder {
    /// Places the router in `region`: its uplink joins the region router's
    /// LAN (upstream patchbay's `.region(&region)`).
    pub fn region(self, region: &Region) -> Self {
        self.upstream_name(region.router.name())
    }
}

impl Lab {
    /// Adds a region: a public router `region-NAME` on the exchange.
    /// Names are 1–12 bytes of letters, digits and `-`.
    pub async fn add_region(&self, name: &str) -> Result<Region> {
        if name.is_empty()
            || name.len() > MAX_NAME
            || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        {
            return Err(Error::invalid(
                "region",
                crate::InvalidReason::OutOfRange,
                format!(
                    "region name {name:?} must be 1 to {MAX_NAME} bytes of letters, digits and '-' (it names the link interface rg-NAME)"
                ),
            ));
        }
        if self.inner.regions().names.contains_key(name) {
            return Err(Error::invalid(
                "region",
                crate::InvalidReason::Duplicate,
                format!("duplicate region {name:?}"),
            ));
        }
        let rname = format!("{ROUTER_PREFIX}{name}");
        let router = self.add_router(&rname).build().await?;
        self.inner.regions().names.insert(name.to_string(), rname);
        Ok(Region {
            name: name.to_string(),
            router,
        })
    }

    /// A region by name.
    pub fn region(&self, name: &str) -> Option<Region> {
        let rname = self.inner.regions().names.get(name)?.clone();
        Some(Region {
            name: name.to_string(),
            router: self.router(&rname)?,
        })
    }

    fn region_named(&self, link: &str, name: &str) -> Result<Region> {
        self.region(name).ok_or_else(|| {
            let known = crate::invalid::known_names(self.inner.regions().names.keys());
            Error::invalid("region", crate::InvalidReason::Unknown, format!(
                "region link {link}: unknown region {name:?} (known regions: {known}); add it with lab.add_region({name:?})"
            ))
        })
    }

    /// Links two regions with `condition` on both ends of a direct link
    /// (so a 40 ms delay is an 80 ms round trip), and routes each region's
    /// networks over it. Networks added to a region later are routed too.
    pub async fn link_regions(
        &self,
        a: &Region,
        b: &Region,
        condition: LinkCondition,
    ) -> Result<()> {
        self.link_regions_by_name(a.name(), b.name(), condition)
            .await
    }

    /// [`Lab::link_regions`] by region names; an unknown name is an error
    /// naming the link and the region.
    pub async fn link_regions_by_name(
        &self,
        a: &str,
        b: &str,
        condition: LinkCondition,
    ) -> Result<()> {
        let label = format!("{a}–{b}");
        let (ra, rb) = (self.region_named(&label, a)?, self.region_named(&label, b)?);
        if a == b {
            return Err(Error::invalid(
                "region_link",
                crate::InvalidReason::Conflict,
                format!("region link {label}: a region cannot be linked to itself"),
            ));
        }
        condition.validate()?;
        let (lo, hi) = if a < b { (&ra, &rb) } else { (&rb, &ra) };
        let n = self.inner.regions().reserve(a, b, &label)?;
        let (t_lo, t_hi) = transit(n);
        let lo_ns = lo.router.netns().clone();
        let hi_ns = hi.router.netns().clone();
        let (lo_if, hi_if) = (format!("rg-{}", hi.name), format!("rg-{}", lo.name));
        let (lo_idx, hi_idx) = (self.inner.next_ifindex(), self.inner.next_ifindex());
        let end_lo = VethEnd {
            name: lo_if.clone(),
            index: lo_idx,
            mac: addr::mac(250, n),
            netns_fd: lo_ns.raw_fd()?,
        };
        let end_hi = VethEnd {
            name: hi_if.clone(),
            index: hi_idx,
            mac: addr::mac(251, n),
            netns_fd: hi_ns.raw_fd()?,
        };
        let ctx = format!("creating region link {label}");
        lo_ns
            .run(move || async move { netlink::create_veth(&end_lo, &end_hi).await })
            .await?
            .ctx(|| ctx.clone())?;
        for (ns, idx, me, ifname) in [
            (&lo_ns, lo_idx, t_lo, lo_if.clone()),
            (&hi_ns, hi_idx, t_hi, hi_if.clone()),
        ] {
            ns.run(move || async move {
                netlink::set_up(idx, true).await?;
                super::wiring::sync_carriers(&[&ifname]);
                netlink::add_addr(idx, me.0.into(), 30).await?;
                netlink::add_addr(idx, me.1.into(), 64).await
            })
            .await?
            .ctx(|| ctx.clone())?;
            self.inner
                .prepare_iface(ns, if idx == lo_idx { &lo_if } else { &hi_if })?;
        }
        // Like every LAN member and its gateway, the two ends know each other from the start:
        // otherwise the first packets over a detour wait for ARP/NDP across the link's delay
        // (twice the one-way delay per hop, measured: 880 ms instead of 440 ms for the first
        // probe of a 220 ms detour).
        if self.inner.opts().prewarm_neighbors {
            let (mac_lo, mac_hi) = (addr::mac(250, n), addr::mac(251, n));
            for (ns, idx, peer, peer_mac) in [
                (&lo_ns, lo_idx, t_hi, mac_hi),
                (&hi_ns, hi_idx, t_lo, mac_lo),
            ] {
                ns.run(move || async move {
                    netlink::add_neigh(idx, peer.0.into(), peer_mac).await?;
                    netlink::add_neigh(idx, peer.1.into(), peer_mac).await
                })
                .await?
                .ctx(|| format!("pre-warming the neighbour entries of region link {label}"))?;
            }
        }
        let cond = self
            .inner
            .compression()
            .link(&format!("region {label}"), &condition);
        let q = qdisc_of(&cond);
        tc::apply(&lo_ns, &render_tc(&lo_if, &cond), q).await?;
        tc::apply(&hi_ns, &render_tc(&hi_if, &cond), q).await?;
        route_via(
            &self.inner,
            lo.router.name(),
            region_prefixes(&self.inner, hi.router.name()),
            t_hi,
        )
        .await?;
        route_via(
            &self.inner,
            hi.router.name(),
            region_prefixes(&self.inner, lo.router.name()),
            t_lo,
        )
        .await?;
        super::artifacts::emit(
            &self.inner,
            None,
            "region.link",
            serde_json::json!({"a": a, "b": b, "state": "linked", "condition": cond}),
        );
        Ok(())
    }

    /// Takes the direct link between two regions out of use: traffic goes
    /// through a third region linked to both, or is dropped when there is
    /// none.
    pub async fn break_region_link(&self, a: &Region, b: &Region) -> Result<()> {
        self.break_region_link_by_name(a.name(), b.name()).await
    }

    /// [`Lab::break_region_link`] by names.
    pub async fn break_region_link_by_name(&self, a: &str, b: &str) -> Result<()> {
        let label = format!("{a}–{b}");
        let (ra, rb) = (self.region_named(&label, a)?, self.region_named(&label, b)?);
        let (n, via) = {
            let r = self.inner.regions();
            let rec = r.links.get(&key(a, b)).ok_or_else(|| {
                Error::invalid(
                    "region_link",
                    crate::InvalidReason::Unknown,
                    format!("region link {label} does not exist: link the regions first"),
                )
            })?;
            if rec.broken.is_some() {
                return Err(Error::invalid(
                    "region_link",
                    crate::InvalidReason::Conflict,
                    format!("region link {label} is broken already"),
                ));
            }
            // A third region with intact links to both.
            let intact =
                |x: &str, y: &str| r.links.get(&key(x, y)).is_some_and(|l| l.broken.is_none());
            let via = r
                .names
                .keys()
                .find(|m| m.as_str() != a && m.as_str() != b && intact(a, m) && intact(b, m))
                .map(|m| (m.clone(), r.links[&key(a, m)].n, r.links[&key(b, m)].n));
            (rec.n, via)
        };
        let mut cut_table = None;
        match &via {
            Some((m, n_am, n_bm)) => {
                // The far side's address on each of the two links.
                let far = |x: &str, n: u8| {
                    let (lo, hi) = transit(n);
                    if x < m.as_str() { hi } else { lo }
                };
                route_via(
                    &self.inner,
                    ra.router.name(),
                    region_prefixes(&self.inner, rb.router.name()),
                    far(a, *n_am),
                )
                .await?;
                route_via(
                    &self.inner,
                    rb.router.name(),
                    region_prefixes(&self.inner, ra.router.name()),
                    far(b, *n_bm),
                )
                .await?;
            }
            None => {
                let table = format!("pbr-{n}");
                for (r, other) in [(&ra, &rb), (&rb, &ra)] {
                    let mut chains = BTreeMap::new();
                    chains.insert(format!("rg-{}", other.name), vec!["drop".to_string()]);
                    nft::apply(
                        r.router.netns(),
                        &format!("cutting region link {label}"),
                        super::faults::render_drop_table(&table, &chains),
                    )
                    .await?;
                }
                cut_table = Some(table);
            }
        }
        let via = via.map(|v| v.0);
        {
            let mut r = self.inner.regions();
            if let Some(rec) = r.links.get_mut(&key(a, b)) {
                rec.broken = Some(via.clone().unwrap_or_default());
                rec.cut_table = cut_table;
            }
        }
        super::artifacts::emit(
            &self.inner,
            None,
            "region.link",
            serde_json::json!({"a": a, "b": b, "state": "broken", "via": via}),
        );
        Ok(())
    }

    /// Puts a broken region link back into use (direct routes again).
    pub async fn restore_region_link(&self, a: &Region, b: &Region) -> Result<()> {
        self.restore_region_link_by_name(a.name(), b.name()).await
    }

    /// [`Lab::restore_region_link`] by names.
    pub async fn restore_region_link_by_name(&self, a: &str, b: &str) -> Result<()> {
        let label = format!("{a}–{b}");
        let (ra, rb) = (self.region_named(&label, a)?, self.region_named(&label, b)?);
        let (n, cut) = {
            let r = self.inner.regions();
            match r.links.get(&key(a, b)) {
                Some(rec) if rec.broken.is_some() => (rec.n, rec.cut_table.clone()),
                Some(_) => {
                    return Err(Error::invalid(
                        "region_link",
                        crate::InvalidReason::Conflict,
                        format!("region link {label} is not broken"),
                    ));
                }
                None => {
                    return Err(Error::invalid(
                        "region_link",
                        crate::InvalidReason::Unknown,
                        format!("region link {label} does not exist"),
                    ));
                }
            }
        };
        if let Some(table) = cut {
            for r in [&ra, &rb] {
                nft::apply(
                    r.router.netns(),
                    &format!("restoring region link {label}"),
                    nft::remove_table("netdev", &table),
                )
                .await?;
            }
        }
        let (lo, hi) = transit(n);
        let (t_a, t_b) = if a < b { (lo, hi) } else { (hi, lo) };
        route_via(
            &self.inner,
            ra.router.name(),
            region_prefixes(&self.inner, rb.router.name()),
            t_b,
        )
        .await?;
        route_via(
            &self.inner,
            rb.router.name(),
            region_prefixes(&self.inner, ra.router.name()),
            t_a,
        )
        .await?;
        if let Some(rec) = self.inner.regions().links.get_mut(&key(a, b)) {
            rec.broken = None;
            rec.cut_table = None;
        }
        super::artifacts::emit(
            &self.inner,
            None,
            "region.link",
            serde_json::json!({"a": a, "b": b, "state": "restored"}),
        );
        Ok(())
    }
}
