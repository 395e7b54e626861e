//! `events.jsonl`, read incrementally (a live run appends to it) and
//! windowed by virtual time: a query returns every event of the window when
//! there are at most `max`, otherwise one event per (node, kind, time bin)
//! with the count and span it stands for. The page asks with one bin per
//! pixel, where a kind's row shows one mark anyway, so what is drawn looks
//! the same; bins widen while that could be more than 8000 marks. A 100k-
//! event run ships a bounded number of marks per zoom level.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// One line of `events.jsonl` (unknown fields are ignored).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Event {
    #[serde(default)]
    pub seq: u64,
    #[serde(default)]
    pub wall_ms: f64,
    #[serde(default)]
    pub virtual_ms: f64,
    #[serde(default)]
    pub node: Option<String>,
    pub kind: String,
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub data: serde_json::Value,
}

impl Event {
    /// The kind the page draws: `tcp` events carry theirs in `data.kind`
    /// (`tcp:rto`, `tcp:retrans`, `tcp:state`).
    pub fn label(&self) -> String {
        if self.kind == "tcp" {
            let sub = match self.data.get("kind") {
                Some(serde_json::Value::String(s)) => Some(s.as_str()),
                Some(o) => o.get("kind").and_then(|k| k.as_str()),
                None => None,
            };
            if let Some(s) = sub {
                return format!("tcp:{s}");
            }
        }
        self.kind.clone()
    }
}

/// The events of one file, appended to as the file grows.
#[derive(Debug)]
pub(crate) struct EventLog {
    path: PathBuf,
    /// Bytes consumed (up to the last complete line).
    offset: u64,
    /// Lines that are not JSON events (reported, not fatal).
    bad_lines: usize,
    /// Each event with its drawn kind.
    events: Vec<(String, Event)>,
    /// Over the whole file, kept up to date on ingest.
    t_min: f64,
    t_max: f64,
    node_kinds: BTreeMap<String, BTreeSet<String>>,
    /// Events per node and kind in the whole file.
    node_counts: BTreeMap<String, BTreeMap<String, usize>>,
    last_seq: Option<u64>,
}

/// A window query.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct Window {
    /// Start of the window, virtual ms (default: the first event).
    pub from: Option<f64>,
    /// End of the window, virtual ms (default: the last event).
    pub to: Option<f64>,
    /// Time bins across the window (the page's width in pixels).
    pub bins: Option<usize>,
    /// Most events to return before binning.
    pub max: Option<usize>,
    /// Only events with `seq` above this (live tailing).
    pub after: Option<u64>,
}

/// A window's answer (borrowing the log: serialise it under the lock).
#[derive(Debug, Serialize)]
pub(crate) struct WindowReply<'a> {
    /// Events in the file.
    pub total: usize,
    /// Unparsable lines skipped.
    pub bad_lines: usize,
    /// Virtual time of the first and last event.
    pub t_min: f64,
    pub t_max: f64,
    /// Every node of the file (`lab` for events without one), sorted.
    pub nodes: Vec<&'a str>,
    /// The kinds each node has in the whole file (the page gives each a
    /// row inside the node's lane, stable across zoom levels).
    pub node_kinds: &'a BTreeMap<String, BTreeSet<String>>,
    /// Events per node and kind in the whole file (the page's counters).
    pub node_counts: &'a BTreeMap<String, BTreeMap<String, usize>>,
    /// Events per kind inside the window (before binning).
    pub kinds: BTreeMap<&'a str, usize>,
    /// Events inside the window.
    pub in_window: usize,
    /// Whether `events` is binned.
    pub binned: bool,
    /// Highest `seq` in the file.
    pub last_seq: Option<u64>,
    /// The events (binned: `n` is how many each stands for).
    pub events: Vec<Shown<'a>>,
}

/// An event as sent to the page.
#[derive(Debug, Serialize)]
pub(crate) struct Shown<'a> {
    pub seq: u64,
    pub wall_ms: f64,
    pub virtual_ms: f64,
    pub node: Option<&'a str>,
    pub kind: &'a str,
    #[serde(skip_serializing_if = "serde_json::Value::is_null")]
    pub data: &'a serde_json::Value,
    /// The drawn kind (see [`Event::label`]).
    pub label: &'a str,
    /// Events this one stands for (1 unless binned).
    pub n: usize,
    /// Binned: the bin's time span, virtual ms.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bin: Option<[f64; 2]>,
}

impl EventLog {
    pub fn new(path: PathBuf) -> Self {
        EventLog {
            path,
            offset: 0,
            bad_lines: 0,
            events: vec![],
            t_min: f64::INFINITY,
            t_max: f64::NEG_INFINITY,
            node_kinds: BTreeMap::new(),
            node_counts: BTreeMap::new(),
            last_seq: None,
        }
    }

    /// Reads what was appended since the last call; starts over when the
    /// file shrank (rewritten). A missing file is an empty log.
    pub fn refresh(&mut self) -> std::io::Result<()> {
        let mut f = match std::fs::File::open(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                *self = EventLog::new(self.path.clone());
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        let len = f.metadata()?.len();
        if len < self.offset {
            *self = EventLog::new(self.path.clone());
        }
        if len == self.offset {
            return Ok(());
        }
        f.seek(SeekFrom::Start(self.offset))?;
        let mut buf = Vec::with_capacity((len - self.offset) as usize);
        f.take(len - self.offset).read_to_end(&mut buf)?;
        // Only complete lines: a writer may be in the middle of one.
        let Some(end) = buf.iter().rposition(|&b| b == b'\n') else {
            return Ok(());
        };
        self.ingest(&buf[..end]);
        self.offset += end as u64 + 1;
        Ok(())
    }

    /// Every event with its drawn kind, in file order.
    pub fn events(&self) -> &[(String, Event)] {
        &self.events
    }

    pub(crate) fn ingest(&mut self, bytes: &[u8]) {
        for line in bytes.split(|&b| b == b'\n') {
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let Ok(e) = serde_json::from_slice::<Event>(line) else {
                self.bad_lines += 1;
                continue;
            };
            let label = e.label();
            self.t_min = self.t_min.min(e.virtual_ms);
            self.t_max = self.t_max.max(e.virtual_ms);
            self.last_seq = self.last_seq.max(Some(e.seq));
            let node = e.node.as_deref().unwrap_or("lab");
            match self.node_counts.get_mut(node) {
                Some(c) => *c.entry(label.clone()).or_insert(0) += 1,
                None => {
                    self.node_counts
                        .insert(node.to_string(), BTreeMap::from([(label.clone(), 1)]));
                }
            }
            match self.node_kinds.get_mut(node) {
                Some(k) if k.contains(&label) => {}
                Some(k) => {
                    k.insert(label.clone());
                }
                None => {
                    self.node_kinds
                        .insert(node.to_string(), BTreeSet::from([label.clone()]));
                }
            }
            self.events.push((label, e));
        }
    }

    /// Answers a window query.
    pub fn window(&self, w: &Window) -> WindowReply<'_> {
        let (t_min, t_max) = if self.events.is_empty() {
            (0.0, 0.0)
        } else {
            (self.t_min, self.t_max)
        };
        let from = w.from.unwrap_or(t_min);
        let to = w.to.unwrap_or(t_max);
        let inside: Vec<&(String, Event)> = self
            .events
            .iter()
            .filter(|(_, e)| {
                e.virtual_ms >= from && e.virtual_ms <= to && w.after.is_none_or(|a| e.seq > a)
            })
            .collect();
        let mut kinds = BTreeMap::new();
        for (l, _) in &inside {
            *kinds.entry(l.as_str()).or_insert(0) += 1;
        }
        let max = w.max.unwrap_or(5000).clamp(1, 50_000);
        let binned = inside.len() > max;
        let events = if binned {
            // One mark per node, kind and bin, at a bin per pixel; wider bins
            // when (node, kind) rows x bins could exceed MARKS (many kinds on
            // many nodes everywhere).
            const MARKS: usize = 8_000;
            let rows: BTreeSet<(Option<&str>, &str)> = inside
                .iter()
                .map(|(l, e)| (e.node.as_deref(), l.as_str()))
                .collect();
            let bins = w
                .bins
                .unwrap_or(1000)
                .clamp(1, 8000)
                .min(MARKS.max(max) / rows.len().max(1))
                .max(1);
            bin(&inside, from, to, bins)
        } else {
            inside.iter().map(|(l, e)| shown(l, e)).collect()
        };
        WindowReply {
            total: self.events.len(),
            bad_lines: self.bad_lines,
            t_min,
            t_max,
            nodes: self.node_kinds.keys().map(String::as_str).collect(),
            node_kinds: &self.node_kinds,
            node_counts: &self.node_counts,
            kinds,
            in_window: inside.len(),
            binned,
            last_seq: self.last_seq,
            events,
        }
    }
}

fn shown<'a>(label: &'a str, e: &'a Event) -> Shown<'a> {
    Shown {
        seq: e.seq,
        wall_ms: e.wall_ms,
        virtual_ms: e.virtual_ms,
        node: e.node.as_deref(),
        kind: &e.kind,
        data: &e.data,
        label,
        n: 1,
        bin: None,
    }
}

/// The first event of each (node, kind, bin) of `[from, to]`, with the
/// count and span of its bin.
fn bin<'a>(inside: &[&'a (String, Event)], from: f64, to: f64, bins: usize) -> Vec<Shown<'a>> {
    let width = (to - from).max(1e-9) / bins as f64;
    // Output order is the events' order; the map only finds the slot.
    let mut slot: HashMap<(Option<&str>, &str, usize), usize> = HashMap::new();
    let mut out: Vec<Shown> = vec![];
    for (l, e) in inside.iter().map(|x| (&x.0, &x.1)) {
        let b = (((e.virtual_ms - from) / width) as usize).min(bins - 1);
        match slot.entry((e.node.as_deref(), l.as_str(), b)) {
            std::collections::hash_map::Entry::Occupied(o) => out[*o.get()].n += 1,
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(out.len());
                let lo = from + b as f64 * width;
                out.push(Shown {
                    bin: Some([lo, lo + width]),
                    ..shown(l, e)
                });
            }
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests")]
mod tests {
    use std::io::Write;

    use super::*;

    fn line(seq: u64, t: f64, node: &str, kind: &str) -> String {
        format!(
            r#"{{"seq":{seq},"wall_ms":{t},"virtual_ms":{t},"node":"{node}","kind":"tcp","data":{{"kind":"{kind}","extra":1}},"new_field":true}}"#
        ) + "\n"
    }

    #[test]
    fn tails_complete_lines_and_bins_large_windows() {
        let path =
            std::env::temp_dir().join(format!("patchbay-serve-events-{}", std::process::id()));
        let mut f = std::fs::File::create(&path).unwrap();
        let mut log = EventLog::new(path.clone());
        f.write_all(line(0, 0.0, "a", "rto").as_bytes()).unwrap();
        f.write_all(br#"{"seq":1,"kind":"mark","virtual_ms":5"#)
            .unwrap();
        log.refresh().unwrap();
        assert_eq!(log.events.len(), 1, "the partial line waits");
        f.write_all(b"}\nnot json\n").unwrap();
        log.refresh().unwrap();
        assert_eq!((log.events.len(), log.bad_lines), (2, 1));
        assert_eq!(log.events[0].0, "tcp:rto");
        assert_eq!(log.events[1].1.node, None);
        for i in 2..10_002u64 {
            let node = if i % 2 == 0 { "a" } else { "b" };
            f.write_all(line(i, i as f64, node, "retrans").as_bytes())
                .unwrap();
        }
        log.refresh().unwrap();
        let all = log.window(&Window::default());
        assert_eq!(all.total, 10_002);
        assert_eq!(all.nodes, ["a", "b", "lab"]);
        assert!(all.binned);
        // 100 bins x nodes a and b for retrans, plus the rto and the mark.
        let w = log.window(&Window {
            bins: Some(100),
            ..Default::default()
        });
        assert_eq!(w.events.len(), 202, "{:?}", w.kinds);
        assert_eq!(w.events[0].label, "tcp:rto");
        assert_eq!(w.node_kinds["a"].len(), 2);
        assert_eq!(w.events.iter().map(|e| e.n).sum::<usize>(), 10_002);
        let small = log.window(&Window {
            from: Some(100.0),
            to: Some(199.0),
            ..Default::default()
        });
        assert!(!small.binned);
        assert_eq!(small.in_window, 100);
        let live = log.window(&Window {
            after: Some(10_000),
            ..Default::default()
        });
        assert_eq!(live.events.len(), 1);
        assert_eq!(live.last_seq, Some(10_001));
        // Rewritten shorter: starts over.
        std::fs::write(&path, line(0, 1.0, "c", "rto")).unwrap();
        log.refresh().unwrap();
        assert_eq!(log.window(&Window::default()).nodes, ["c"]);
        std::fs::remove_file(&path).unwrap();
    }
}
