//! qlog files in a run directory (`*.qlog`, `*.sqlog`; quinn and iroh write
//! them with their `qlog` feature), placed on the run's virtual axis, one
//! lane per connection (the events' `group_id`).
//!
//! Time base (see `docs/artifacts.md`): when the trace's `common_fields`
//! carry a `reference_time` (ms since the Unix epoch), an event is at
//! `reference_time + time` and is aligned with `run.json`'s
//! `started_unix_ms`; otherwise its `time` counts from the lab clock's start
//! (quinn: `QlogConfig::start_time(lab.clock().start())`). Either is wall
//! time; the virtual axis is wall × k.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

use super::dirs::RunDir;

/// Most events of one file sent to the page.
const MAX_EVENTS: usize = 20_000;

/// The answer of `/api/runs/{id}/qlog`.
#[derive(Debug, Serialize)]
pub(crate) struct QlogReply {
    /// The run's time scale (virtual = wall × k).
    pub time_scale: f64,
    pub files: Vec<QlogFile>,
}

/// One qlog file.
#[derive(Debug, Serialize)]
pub(crate) struct QlogFile {
    pub path: String,
    pub title: Option<String>,
    /// `client`, `server`, ... (the trace's vantage point).
    pub vantage: Option<String>,
    /// How its times were aligned.
    pub aligned: String,
    /// Events in the file.
    pub total: usize,
    /// Records that are not JSON (skipped).
    pub bad_records: usize,
    pub connections: Vec<Connection>,
    /// Up to 20 000 events.
    pub events: Vec<QEvent>,
    /// A parse error that made the file unreadable.
    pub error: Option<String>,
}

/// A connection (group) of a file.
#[derive(Debug, Serialize)]
pub(crate) struct Connection {
    pub id: String,
    pub events: usize,
    pub first_ms: f64,
    pub last_ms: f64,
}

/// One event, on the virtual axis.
#[derive(Debug, Serialize)]
pub(crate) struct QEvent {
    pub virtual_ms: f64,
    /// The event's own `time` (ms).
    pub time: f64,
    pub name: String,
    pub conn: String,
    pub summary: String,
    pub data: Value,
}

/// Reads and aligns every qlog file of `dir`.
pub(crate) fn query(dir: &RunDir) -> QlogReply {
    let run: Value = dir
        .resolve("run.json")
        .ok()
        .and_then(|p| std::fs::read(p).ok())
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(Value::Null);
    let k = run["time_scale"].as_f64().unwrap_or(1.0);
    let started = run["started_unix_ms"].as_f64();
    let files = dir
        .files()
        .into_iter()
        .filter(|f| f.path.ends_with(".qlog") || f.path.ends_with(".sqlog"))
        .map(
            |f| match dir.resolve(&f.path).map(std::fs::read_to_string) {
                Ok(Ok(text)) => parse(&f.path, &text, k, started),
                Ok(Err(e)) => failed(&f.path, e.to_string()),
                Err(e) => failed(&f.path, format!("{e:?}")),
            },
        )
        .collect();
    QlogReply {
        time_scale: k,
        files,
    }
}

fn failed(path: &str, error: String) -> QlogFile {
    QlogFile {
        path: path.to_string(),
        title: None,
        vantage: None,
        aligned: String::new(),
        total: 0,
        bad_records: 0,
        connections: vec![],
        events: vec![],
        error: Some(error),
    }
}

/// The header and the events of a qlog text: one JSON document (`.qlog`,
/// `traces[].events`) or JSON-SEQ (`.sqlog`: a header record, then one
/// record per event, separated by RS or newlines).
fn records(text: &str) -> (Value, Vec<Value>, usize) {
    if let Ok(doc) = serde_json::from_str::<Value>(text.trim_start_matches('\u{1e}'))
        && doc.get("traces").is_some()
    {
        let trace = doc["traces"][0].clone();
        let events = trace["events"].as_array().cloned().unwrap_or_default();
        let mut header = doc;
        header["trace"] = trace;
        return (header, events, 0);
    }
    let mut header = Value::Null;
    let mut events = vec![];
    let mut bad = 0;
    let sep = if text.contains('\u{1e}') {
        '\u{1e}'
    } else {
        '\n'
    };
    for rec in text.split(sep).map(str::trim).filter(|r| !r.is_empty()) {
        // The header may precede the first RS on its own line.
        for part in rec.split('\n').map(str::trim).filter(|r| !r.is_empty()) {
            match serde_json::from_str::<Value>(part) {
                Ok(v) if v.get("qlog_version").is_some() && header.is_null() => header = v,
                Ok(v) => events.push(v),
                Err(_) => bad += 1,
            }
        }
    }
    (header, events, bad)
}

fn name_of(e: &Value) -> String {
    match (e.get("name"), e.get("category"), e.get("event")) {
        (Some(Value::String(n)), _, _) => n.clone(),
        (_, Some(Value::String(c)), Some(Value::String(ev))) => format!("{c}:{ev}"),
        _ => "?".into(),
    }
}

fn summary(data: &Value) -> String {
    let mut out = vec![];
    if let Some(h) = data.get("header") {
        let ty = h["packet_type"].as_str().unwrap_or("");
        match h["packet_number"].as_u64() {
            Some(n) => out.push(format!("{ty} #{n}")),
            None => out.push(ty.to_string()),
        }
    }
    if let Some(frames) = data.get("frames").and_then(Value::as_array) {
        let types: Vec<&str> = frames
            .iter()
            .filter_map(|f| f["frame_type"].as_str())
            .collect();
        out.push(types.join(","));
    }
    if out.is_empty()
        && let Some(o) = data.as_object()
    {
        for (k, v) in o.iter().take(4) {
            let v = match v {
                Value::String(s) => s.clone(),
                v => v.to_string(),
            };
            out.push(format!("{k}={}", v.chars().take(40).collect::<String>()));
        }
    }
    out.retain(|s| !s.is_empty());
    out.join(" ")
}

/// Parses one file and places its events on the run's virtual axis.
pub(crate) fn parse(path: &str, text: &str, k: f64, started_unix_ms: Option<f64>) -> QlogFile {
    let (header, events, bad_records) = records(text);
    let trace = &header["trace"];
    let common = &trace["common_fields"];
    let reference = common["reference_time"].as_f64();
    let (offset, aligned) = match (reference, started_unix_ms) {
        (Some(r), Some(s)) => (r - s, "reference_time against run.json started_unix_ms"),
        _ => (0.0, "times count from the lab clock's start"),
    };
    let default_group = common["group_id"].as_str().unwrap_or("").to_string();
    let mut conns: BTreeMap<String, Connection> = BTreeMap::new();
    let mut out = vec![];
    for e in &events {
        let time = e["time"].as_f64().unwrap_or(0.0);
        let conn = e["group_id"]
            .as_str()
            .map_or(default_group.clone(), str::to_string);
        let virtual_ms = (offset + time) * k;
        let c = conns.entry(conn.clone()).or_insert(Connection {
            id: conn.clone(),
            events: 0,
            first_ms: virtual_ms,
            last_ms: virtual_ms,
        });
        c.events += 1;
        c.first_ms = c.first_ms.min(virtual_ms);
        c.last_ms = c.last_ms.max(virtual_ms);
        if out.len() < MAX_EVENTS {
            let data = e.get("data").cloned().unwrap_or(Value::Null);
            out.push(QEvent {
                virtual_ms,
                time,
                name: name_of(e),
                conn,
                summary: summary(&data),
                data,
            });
        }
    }
    QlogFile {
        path: path.to_string(),
        title: header["title"]
            .as_str()
            .or(trace["title"].as_str())
            .map(str::to_string),
        vantage: trace["vantage_point"]["type"]
            .as_str()
            .or(trace["vantage_point"]["name"].as_str())
            .map(str::to_string),
        aligned: aligned.to_string(),
        total: events.len(),
        bad_records,
        connections: conns.into_values().collect(),
        events: out,
        error: None,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;

    /// JSON-SEQ as quinn's `QlogStreamer` writes it: the header line, then
    /// one RS-prefixed record per event.
    #[test]
    fn json_seq_is_read_per_connection_on_the_virtual_axis() {
        let text = concat!(
            r#"{"qlog_version":"0.3","qlog_format":"JSON-SEQ","title":"client","trace":{"vantage_point":{"type":"client"},"common_fields":null}}"#,
            "\n\u{1e}",
            r#"{"time":1.5,"name":"transport:packet_sent","data":{"header":{"packet_type":"initial","packet_number":0},"frames":[{"frame_type":"crypto"}]},"group_id":"aa"}"#,
            "\n\u{1e}",
            r#"{"time":40.0,"name":"transport:packet_received","data":{"header":{"packet_type":"handshake","packet_number":1}},"group_id":"aa"}"#,
            "\n\u{1e}",
            r#"{"time":41.0,"name":"recovery:metrics_updated","data":{"smoothed_rtt":3.1},"group_id":"bb"}"#,
            "\n",
        );
        let f = parse("qlog/client.sqlog", text, 10.0, Some(5.0));
        assert_eq!(f.total, 3);
        assert_eq!(f.bad_records, 0);
        assert_eq!(f.vantage.as_deref(), Some("client"));
        assert_eq!(f.connections.len(), 2);
        assert_eq!(f.connections[0].events, 2);
        assert_eq!(f.events[0].virtual_ms, 15.0);
        assert_eq!(f.events[0].summary, "initial #0 crypto");
        assert_eq!(f.events[2].summary, "smoothed_rtt=3.1");
    }

    #[test]
    fn a_whole_document_with_a_reference_time_is_aligned_to_the_run() {
        let text = r#"{"qlog_version":"0.3","traces":[{"vantage_point":{"type":"server"},
            "common_fields":{"reference_time":1000.0,"group_id":"g"},
            "events":[{"time":10.0,"name":"transport:connection_started","data":{}}]}]}"#;
        let f = parse("a.qlog", text, 1.0, Some(900.0));
        assert_eq!(f.total, 1);
        assert_eq!(f.events[0].virtual_ms, 110.0);
        assert_eq!(f.connections[0].id, "g");
        assert!(f.aligned.contains("reference_time"));
    }
}
