//! Neighbour pre-warming: the first packet between a LAN member and its
//! gateway does not wait for ARP/NDP.
//!
//! The kernel's neighbour tables (ARP and NDP) are global: every namespace's
//! entries count against one `gc_thresh3` per family (1024 by default, set
//! in the host namespace only). When a table is full of fresh entries, the
//! kernel refuses new ones with `ENOBUFS`, in the host and in every lab.
//! So pre-warming is linear and bounded:
//!
//! - each LAN member (a device interface, or a chained router's uplink) and
//!   its gateway learn each other: 2 entries per family per member;
//! - siblings learn each other only on small LANs (fewer than
//!   [`SIBLING_MESH_MAX`] members): a full mesh is n² and filled the table at
//!   50 devices, but on a small LAN it keeps what tests of a few nodes
//!   expect, e.g. that a blackholed sibling silently drops a SYN instead of
//!   failing ARP resolution with `EHOSTUNREACH`;
//! - a lab pre-warms at most [`budget`] entries per family (a quarter of
//!   `gc_thresh3`, at most 256: 128 members); members beyond it resolve by
//!   ARP/NDP as they would without pre-warming;
//! - a full table (`ENOBUFS`, e.g. many labs at once) only ends pre-warming
//!   for that lab, with a log line: the entry would have been learned, not
//!   required.
//!
//! The entries are ordinary `REACHABLE` ones: they age, and a vanished peer
//! still fails resolution.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::atomic::{AtomicU32, Ordering};

use crate::error::{NetlinkContext, Result};
use crate::sys::netlink::{self, NetlinkError};
use crate::sys::netns::Netns;

use super::topo::Member;

/// LANs with fewer members than this pre-warm between siblings too.
pub(crate) const SIBLING_MESH_MAX: usize = 8;

/// Upper bound of entries one lab pre-warms per family.
pub(crate) const MAX_BUDGET: u32 = 256;

/// The per-family entry budget of a lab: a quarter of the host's
/// `gc_thresh3` (read from the host namespace), at most [`MAX_BUDGET`].
pub(crate) fn budget() -> u32 {
    let thresh3 = crate::sys::sysctl::read_here("net/ipv4/neigh/default/gc_thresh3")
        .ok()
        .flatten()
        .and_then(|v| v.trim().parse::<u32>().ok())
        .unwrap_or(1024);
    budget_for(thresh3)
}

fn budget_for(gc_thresh3: u32) -> u32 {
    (gc_thresh3 / 4).min(MAX_BUDGET)
}

/// What is left of a lab's pre-warming budget, in members (each costs two
/// entries per family).
#[derive(Debug)]
pub(crate) struct Prewarm {
    members_left: AtomicU32,
}

impl Prewarm {
    pub(crate) fn new(entries_per_family: u32) -> Self {
        Prewarm {
            members_left: AtomicU32::new(entries_per_family / 2),
        }
    }

    /// Takes `n` members' shares of the budget (one per neighbour pair), if
    /// that much is left.
    fn take_n(&self, n: u32) -> bool {
        self.members_left
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |m| m.checked_sub(n))
            .is_ok()
    }

    /// Stops pre-warming for the rest of the lab.
    fn exhaust(&self) {
        self.members_left.store(0, Ordering::Relaxed);
    }

    /// Installs neighbour entries between `me` and its gateway, both ways
    /// and concurrently, if the budget allows; on a small LAN also between
    /// `me` and its `siblings` (the LAN's other members).
    pub(crate) async fn member(
        &self,
        me: &Member,
        gw_ns: &Netns,
        gw_index: u32,
        gw: (Ipv4Addr, Ipv6Addr),
        gw_mac: [u8; 6],
        siblings: &[Member],
    ) -> Result<()> {
        let siblings = if siblings.len() + 1 < SIBLING_MESH_MAX {
            siblings
        } else {
            &[]
        };
        let pairs = u32::try_from(siblings.len()).unwrap_or(u32::MAX);
        if !self.take_n(pairs.saturating_add(1)) {
            return Ok(());
        }
        let what = || format!("pre-warming neighbour entries of {}", me.node.name);
        // An unspecified address stands for a family the LAN does not have
        // (v4-only or v6-only LANs): no entry for it on either side.
        let pairs = |a: Ipv4Addr, b: Ipv6Addr, mac: [u8; 6]| -> Vec<(IpAddr, [u8; 6])> {
            let mut v = vec![];
            if !me.v4.is_unspecified() {
                v.push((a.into(), mac));
            }
            if !me.v6.is_unspecified() {
                v.push((b.into(), mac));
            }
            v
        };
        let mut mine = pairs(gw.0, gw.1, gw_mac);
        let theirs = pairs(me.v4, me.v6, me.mac);
        let mut jobs = vec![gw_ns.spawn({
            let theirs = theirs.clone();
            move || add_all(gw_index, theirs)
        })?];
        for s in siblings {
            // A sibling's unspecified address is a family its LAN lacks.
            mine.extend(
                pairs(s.v4, s.v6, s.mac)
                    .into_iter()
                    .filter(|(ip, _)| !ip.is_unspecified()),
            );
            let (index, theirs) = (s.index, theirs.clone());
            jobs.push(s.node.ns().spawn(move || add_all(index, theirs))?);
        }
        let my_index = me.index;
        jobs.push(me.node.ns().spawn(move || add_all(my_index, mine))?);
        for r in futures::future::join_all(jobs).await {
            let r = r?;
            match r {
                Err(e) if e.errno() == Some(libc::ENOBUFS) => {
                    tracing::warn!(
                        "{}: the kernel's neighbour table is full (gc_thresh3, shared by every namespace); the rest of this lab resolves by ARP/NDP",
                        what()
                    );
                    self.exhaust();
                }
                r => r.ctx(what)?,
            }
        }
        Ok(())
    }
}

async fn add_all(index: u32, entries: Vec<(IpAddr, [u8; 6])>) -> Result<(), NetlinkError> {
    for (ip, mac) in entries {
        netlink::add_neigh(index, ip, mac).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_is_a_quarter_of_the_table_at_most_256() {
        assert_eq!(budget_for(1024), 256);
        assert_eq!(budget_for(4096), 256);
        assert_eq!(budget_for(128), 32);
    }

    #[test]
    fn budget_is_counted_in_members() {
        let p = Prewarm::new(6);
        assert!(p.take_n(1) && p.take_n(1) && p.take_n(1));
        assert!(!p.take_n(1), "3 members use 6 entries per family");
        let p = Prewarm::new(10);
        p.exhaust();
        assert!(!p.take_n(1));
    }
}
