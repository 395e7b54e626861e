//! Upstream's regions over the core's: a region is a public router (`region-NAME` here,
//! `region_NAME` upstream) that routers join with `.region(&r)`, and regions are linked with
//! a latency.

use std::sync::Arc;
use std::time::Duration;

use super::shared::NodeId;

/// A region: from [`Lab::add_region`].
#[derive(Clone, Debug)]
pub struct Region {
    pub(super) name: Arc<str>,
    pub(super) router_id: NodeId,
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

    pub(super) fn to_core(&self) -> crate::native::LinkCondition {
        let ms = |v: u32| Duration::from_millis(u64::from(v));
        let mut c = crate::native::LinkCondition::default()
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
