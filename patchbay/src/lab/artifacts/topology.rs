//! `topology.json` (version 2, see `docs/artifacts.md`): the lab's nodes as
//! its bookkeeping has them, plus what only events tell (link conditions per
//! direction, MTUs, region links and their state, removed nodes), and the
//! interface counters read when the run ends.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::super::LabInner;
use super::super::node::NodeInner;
use super::super::topo::{RouterRec, Topology, Upstream};

/// Version of `topology.json` (run.json keeps the run format's version).
pub(crate) const TOPOLOGY_VERSION: u32 = 2;

/// What `topology.json` carries beyond the lab's bookkeeping, gathered from
/// the events the lab emits.
#[derive(Debug, Default)]
pub(crate) struct Extras {
    /// (node, iface) → the conditions as applied, `[out, in]`.
    links: BTreeMap<(String, String), [Value; 2]>,
    /// (node, iface) → MTU.
    mtu: BTreeMap<(String, String), u64>,
    /// Routers that drop ICMP "fragmentation needed" (a PMTU black hole).
    pmtu_blackholes: std::collections::BTreeSet<String>,
    /// Sorted region pair → the link's state and history.
    region_links: BTreeMap<(String, String), RegionLink>,
    /// Every node as last written, for the nodes removed later.
    last: BTreeMap<String, Value>,
    /// node → virtual ms of its `node.removed` event.
    removed_at: BTreeMap<String, f64>,
    /// Removed nodes: their last entry plus `removed_ms`.
    removed: BTreeMap<String, Value>,
    /// node → iface → counters (read at the end of the run).
    pub(crate) counters: BTreeMap<String, BTreeMap<String, Value>>,
}

#[derive(Debug, Default)]
struct RegionLink {
    condition: Value,
    state: String,
    via: Value,
    history: Vec<Value>,
}

impl Extras {
    /// Takes note of an event that changes what topology.json shows.
    pub fn observe(&mut self, node: Option<&str>, kind: &str, data: &Value, virtual_ms: f64) {
        let iface = || {
            data.get("iface")
                .and_then(Value::as_str)
                .map(str::to_string)
        };
        match (kind, node) {
            ("link.condition", Some(n)) => {
                let Some(i) = iface() else { return };
                let applied = data.get("applied").cloned().unwrap_or(Value::Null);
                let slot = self.links.entry((n.to_string(), i)).or_default();
                match data.get("direction").and_then(Value::as_str) {
                    Some("out") => slot[0] = applied,
                    Some("in") => slot[1] = applied,
                    _ => *slot = [applied.clone(), applied],
                }
            }
            ("mtu.changed", Some(n)) => {
                if let (Some(i), Some(m)) = (iface(), data.get("mtu").and_then(Value::as_u64)) {
                    self.mtu.insert((n.to_string(), i), m);
                }
            }
            ("pmtu.blackhole", Some(n)) => {
                if data["on"].as_bool() == Some(true) {
                    self.pmtu_blackholes.insert(n.to_string());
                } else {
                    self.pmtu_blackholes.remove(n);
                }
            }
            ("node.removed", Some(n)) => {
                self.removed_at.insert(n.to_string(), virtual_ms);
            }
            ("region.link", _) => self.region_link(data, virtual_ms),
            _ => {}
        }
    }

    fn region_link(&mut self, data: &Value, virtual_ms: f64) {
        let name = |k: &str| {
            data.get(k)
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string()
        };
        let (a, b) = (name("a"), name("b"));
        let key = if a <= b { (a, b) } else { (b, a) };
        let state = name("state");
        let via = data.get("via").cloned().unwrap_or(Value::Null);
        let l = self.region_links.entry(key).or_default();
        if let Some(c) = data.get("condition").filter(|c| !c.is_null()) {
            l.condition = c.clone();
        }
        l.history
            .push(json!({"state": state, "via": via, "virtual_ms": virtual_ms}));
        l.state = state;
        l.via = via;
    }

    fn iface_json(&self, node: &NodeInner) -> Vec<Value> {
        let name = node.name.as_str();
        node.ifaces
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .map(|i| {
                let key = (name.to_string(), i.name.clone());
                let [out, inn] = self.links.get(&key).cloned().unwrap_or_default();
                json!({
                    "name": i.name,
                    "peer": i.peer,
                    "mac": crate::sys::netlink::fmt_mac(&i.mac),
                    "ipv4": i.ip.map(|a| vec![format!("{a}/{}", i.prefix)]).unwrap_or_default(),
                    "ipv6": i.ip6.map(|a| vec![format!("{a}/{}", crate::addr::V6_PREFIX)]).unwrap_or_default(),
                    "mtu": self.mtu.get(&key),
                    "link": {"out": out, "in": inn},
                    "counters": self.counters.get(name).and_then(|c| c.get(&i.name)),
                })
            })
            .collect()
    }

    fn router_json(
        &self,
        name: &str,
        r: &RouterRec,
        fws: &BTreeMap<String, Value>,
        region: Option<&String>,
    ) -> Value {
        let lan = &r.lan;
        json!({
            "name": name,
            "upstream": match &r.upstream { Upstream::Exchange => None, Upstream::Router(p) => Some(p.clone()) },
            "nat": r.nat.nat.name(),
            "nat_config": {
                "hairpin": r.nat.hairpin,
                "conntrack": r.nat.effective_conntrack(),
            },
            "nat_v6": r.nat_v6,
            "firewall": fws.get(name),
            "pmtu_blackhole": self.pmtu_blackholes.contains(name),
            "region": region,
            "lan": {
                "kind": lan.kind,
                "ip_support": lan.ip,
                "ipv4": format!("{}/{}", lan.lan.v4, crate::addr::V4_PREFIX),
                "ipv6": format!("{}/{}", lan.lan.v6, crate::addr::V6_PREFIX),
            },
            "ifaces": self.iface_json(&r.node),
        })
    }

    fn device_json(&self, name: &str, n: &NodeInner, fws: &BTreeMap<String, Value>) -> Value {
        let default_via = n.primary.lock().unwrap_or_else(|p| p.into_inner()).clone();
        json!({
            "name": name,
            "default_via": default_via,
            "firewall": fws.get(name),
            "ifaces": self.iface_json(n),
        })
    }

    /// Remembers one node as it is now (cheap, on each of its changes), so
    /// a removed node is shown as it last was even between two writes.
    pub fn snapshot(
        &mut self,
        t: &Topology,
        fws: &BTreeMap<String, Value>,
        regions: &BTreeMap<String, String>,
        name: &str,
    ) {
        let (mut v, role) = match (t.routers.get(name), t.nodes.get(name)) {
            (Some(r), _) => (
                self.router_json(name, r, fws, region_of(t, regions, name)),
                "router",
            ),
            (None, Some(n)) => (self.device_json(name, n, fws), "device"),
            (None, None) => return,
        };
        v["role"] = role.into();
        self.last.insert(name.to_string(), v);
    }

    /// The whole document; remembers every node for when it is removed.
    pub fn render(
        &mut self,
        t: &Topology,
        fws: &BTreeMap<String, Value>,
        regions: &BTreeMap<String, String>,
    ) -> Value {
        let routers: Vec<Value> = t
            .routers
            .iter()
            .map(|(name, r)| self.router_json(name, r, fws, region_of(t, regions, name)))
            .collect();
        let devices: Vec<Value> = t
            .nodes
            .iter()
            .filter(|(n, _)| !t.routers.contains_key(*n))
            .map(|(name, n)| self.device_json(name, n, fws))
            .collect();
        self.note_removals(&routers, &devices, t);
        let region_links: Vec<Value> = self
            .region_links
            .iter()
            .map(|((a, b), l)| {
                json!({"a": a, "b": b, "condition": l.condition, "state": l.state,
                       "via": l.via, "history": l.history})
            })
            .collect();
        let region_list: Vec<Value> = regions
            .iter()
            .map(|(router, name)| json!({"name": name, "router": router}))
            .collect();
        json!({
            "version": TOPOLOGY_VERSION,
            "routers": routers,
            "devices": devices,
            "regions": region_list,
            "region_links": region_links,
            "removed": self.removed.values().collect::<Vec<_>>(),
        })
    }

    /// Moves nodes that were written before and are gone now to `removed`.
    fn note_removals(&mut self, routers: &[Value], devices: &[Value], t: &Topology) {
        let gone: Vec<String> = self
            .last
            .keys()
            .filter(|n| !t.nodes.contains_key(*n))
            .cloned()
            .collect();
        for n in gone {
            if let Some(mut v) = self.last.remove(&n) {
                v["removed_ms"] = self.removed_at.get(&n).copied().into();
                self.removed.insert(n, v);
            }
        }
        for (role, list) in [("router", routers), ("device", devices)] {
            for v in list {
                if let Some(n) = v["name"].as_str() {
                    let mut v = v.clone();
                    v["role"] = role.into();
                    self.removed.remove(n);
                    self.last.insert(n.to_string(), v);
                }
            }
        }
    }
}

/// The region a router is in: its own (a region router) or the nearest
/// region router above it.
fn region_of<'a>(
    t: &Topology,
    regions: &'a BTreeMap<String, String>,
    router: &str,
) -> Option<&'a String> {
    t.ancestry(router).iter().find_map(|r| regions.get(r))
}

/// Reads every node's interface counters (inside its namespace) for the
/// final topology.json.
pub(crate) fn read_counters(lab: &LabInner) -> BTreeMap<String, BTreeMap<String, Value>> {
    let nodes = lab.topo().all_nodes();
    let mut out = BTreeMap::new();
    for n in nodes {
        // A namespace whose worker is gone has nothing to report.
        if let Ok(Ok(text)) = n
            .ns()
            .run_sync(|| std::fs::read_to_string("/proc/thread-self/net/dev"))
        {
            out.insert(n.name.clone(), parse_net_dev(&text));
        }
    }
    out
}

/// `/proc/net/dev` as iface → counters (loopback left out).
pub(crate) fn parse_net_dev(text: &str) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    for line in text.lines().skip(2) {
        let Some((name, rest)) = line.split_once(':') else {
            continue;
        };
        let name = name.trim();
        let v: Vec<u64> = rest
            .split_whitespace()
            .filter_map(|x| x.parse().ok())
            .collect();
        if name == "lo" || v.len() < 16 {
            continue;
        }
        out.insert(
            name.to_string(),
            json!({"rx_bytes": v[0], "rx_packets": v[1], "rx_errors": v[2], "rx_dropped": v[3],
                   "tx_bytes": v[8], "tx_packets": v[9], "tx_errors": v[10], "tx_dropped": v[11]}),
        );
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;

    #[test]
    fn net_dev_counters_parse() {
        let text = "Inter-|   Receive                                                |  Transmit\n face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n    lo:       0       0    0    0    0     0          0         0        0       0    0    0    0     0       0          0\n  eth0:    1500      12    0    1    0     0          0         0     2300      20    0    2    0     0       0          0\n";
        let c = parse_net_dev(text);
        assert_eq!(c.len(), 1);
        assert_eq!(c["eth0"]["rx_packets"], 12);
        assert_eq!(c["eth0"]["tx_bytes"], 2300);
        assert_eq!(c["eth0"]["tx_dropped"], 2);
    }

    #[test]
    fn events_feed_links_mtus_and_region_links() {
        let mut x = Extras::default();
        let cond = json!({"delay": "20ms"});
        x.observe(
            Some("d"),
            "link.condition",
            &json!({"iface": "eth0", "direction": "out", "applied": cond}),
            1.0,
        );
        x.observe(
            Some("d"),
            "mtu.changed",
            &json!({"iface": "eth0", "mtu": 1400}),
            2.0,
        );
        let key = ("d".to_string(), "eth0".to_string());
        assert_eq!(x.links[&key], [cond, Value::Null]);
        assert_eq!(x.mtu[&key], 1400);
        for (state, t) in [("linked", 0.0), ("broken", 5.0), ("restored", 9.0)] {
            x.observe(
                None,
                "region.link",
                &json!({"a": "us", "b": "eu", "state": state, "via": null,
                        "condition": if state == "linked" { json!({"rate": "1mbit"}) } else { Value::Null }}),
                t,
            );
        }
        let l = &x.region_links[&("eu".to_string(), "us".to_string())];
        assert_eq!(l.state, "restored");
        assert_eq!(l.history.len(), 3);
        assert_eq!(l.history[1]["virtual_ms"], 5.0);
    }
}
