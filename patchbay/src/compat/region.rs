//! Upstream's regions over the core's: a region is a public router (`region-NAME` here,
//! `region_NAME` upstream) that routers join with `.region(&r)`, and regions are linked with
//! a latency.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};

use super::lab::Lab;
use super::shared::{Entry, Kind, NodeId, RouterSettings};

/// A region: from [`Lab::add_region`].
#[derive(Clone, Debug)]
pub struct Region {
    name: Arc<str>,
    router_id: NodeId,
}

impl Region {
    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its router's id.
    pub fn router_id(&self) -> NodeId {
        self.router_id
    }
}

/// A link between two regions (one-way values: a 40 ms latency is an 80 ms round trip).
#[derive(Clone, Debug)]
pub struct RegionLink {
    /// One-way latency.
    pub latency_ms: u32,
    /// Jitter.
    pub jitter_ms: u32,
    /// Loss in percent.
    pub loss_pct: f64,
    /// Rate in Mbit/s (0: unlimited).
    pub rate_mbit: u32,
}

impl RegionLink {
    /// Latency only.
    pub fn good(latency_ms: u32) -> Self {
        RegionLink {
            latency_ms,
            jitter_ms: 0,
            loss_pct: 0.0,
            rate_mbit: 0,
        }
    }

    /// Latency, a tenth of it as jitter, 0.5 % loss.
    pub fn degraded(latency_ms: u32) -> Self {
        RegionLink {
            latency_ms,
            jitter_ms: latency_ms / 10,
            loss_pct: 0.5,
            rate_mbit: 0,
        }
    }

    fn to_core(&self) -> crate::LinkCondition {
        let ms = |v: u32| Duration::from_millis(u64::from(v));
        let mut c = crate::LinkCondition::default()
            .delay(ms(self.latency_ms))
            .jitter(ms(self.jitter_ms))
            .loss(self.loss_pct);
        if self.rate_mbit > 0 {
            c = c.rate(u64::from(self.rate_mbit) * 1_000_000);
        }
        c
    }
}

/// The three regions of [`Lab::add_default_regions`].
#[derive(Debug)]
pub struct DefaultRegions {
    /// The US.
    pub us: Region,
    /// Europe.
    pub eu: Region,
    /// Asia.
    pub asia: Region,
}

impl Lab {
    fn core_region(&self, r: &Region) -> Result<crate::Region> {
        self.shared
            .core
            .region(r.name())
            .with_context(|| format!("region {} is not in this lab", r.name()))
    }

    /// Adds a region.
    pub async fn add_region(&self, name: &str) -> Result<Region> {
        let r = self.shared.core.add_region(name).await?;
        let rname = r.router().name().to_string();
        let router_id = self.shared.register(Entry {
            core: rname.clone(),
            name: rname,
            kind: Kind::Router,
            router: Some(RouterSettings {
                nat: None,
                nat_v6: crate::NatV6Mode::None,
                firewall: super::Firewall::None,
                ip_support: crate::IpSupport::DualStack,
                mtu: None,
                region: Some(name.to_string()),
                ra_enabled: true,
                ra_interval_secs: 30,
                ra_lifetime_secs: 1800,
                downlink: None,
            }),
            ifaces: Default::default(),
            mtu: None,
        });
        Ok(Region {
            name: name.into(),
            router_id,
        })
    }

    /// Links two regions.
    pub async fn link_regions(&self, a: &Region, b: &Region, link: RegionLink) -> Result<()> {
        let (ra, rb) = (self.core_region(a)?, self.core_region(b)?);
        Ok(self
            .shared
            .core
            .link_regions(&ra, &rb, link.to_core())
            .await?)
    }

    /// Breaks a region link (traffic detours through a third region linked to both, else is
    /// dropped).
    pub async fn break_region_link(&self, a: &Region, b: &Region) -> Result<()> {
        let (ra, rb) = (self.core_region(a)?, self.core_region(b)?);
        Ok(self.shared.core.break_region_link(&ra, &rb).await?)
    }

    /// Restores a broken region link.
    pub async fn restore_region_link(&self, a: &Region, b: &Region) -> Result<()> {
        let (ra, rb) = (self.core_region(a)?, self.core_region(b)?);
        Ok(self.shared.core.restore_region_link(&ra, &rb).await?)
    }

    /// Adds `us`, `eu` and `asia`, linked with one-way latencies of 40 ms (us–eu), 95 ms
    /// (us–asia) and 120 ms (eu–asia).
    pub async fn add_default_regions(&self) -> Result<DefaultRegions> {
        let us = self.add_region("us").await?;
        let eu = self.add_region("eu").await?;
        let asia = self.add_region("asia").await?;
        self.link_regions(&us, &eu, RegionLink::good(40)).await?;
        self.link_regions(&us, &asia, RegionLink::good(95)).await?;
        self.link_regions(&eu, &asia, RegionLink::good(120)).await?;
        Ok(DefaultRegions { us, eu, asia })
    }
}
