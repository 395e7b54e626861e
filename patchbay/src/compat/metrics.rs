//! Upstream's metrics: a node records named numbers; each emitted batch becomes a line
//! `{"t": <unix seconds>, "m": {<key>: <value>, …}}` in `{kind}.{name}.metrics.jsonl` of the
//! run directory (upstream's file) and a `metrics` event in `events.jsonl`.

use std::io::Write;

use serde_json::{Map, Value, json};

use super::shared::LabRef;

/// A batch of metrics of one node: from `Device::metrics` / `Router::metrics`.
#[derive(Debug)]
pub struct MetricsBuilder {
    lab: LabRef,
    kind: &'static str,
    /// The upstream name (for the file) and the core's node name (for the event).
    node: (String, String),
    values: Map<String, Value>,
}

impl MetricsBuilder {
    pub(crate) fn new(lab: LabRef, kind: &'static str, name: &str, core: &str) -> Self {
        MetricsBuilder {
            lab,
            kind,
            node: (name.to_string(), core.to_string()),
            values: Map::new(),
        }
    }

    /// Adds a value (NaN and infinities are skipped: JSON has no place for them).
    pub fn record(mut self, key: &str, value: f64) -> Self {
        if let Some(n) = serde_json::Number::from_f64(value) {
            self.values.insert(key.to_string(), Value::Number(n));
        }
        self
    }

    /// Writes the batch (nothing when it is empty or the lab is gone).
    pub fn emit(self) {
        let Ok(lab) = self.lab.get() else { return };
        if self.values.is_empty() {
            return;
        }
        let m = Value::Object(self.values);
        lab.core
            .emit(Some(&self.node.1), "metrics", json!({ "m": m }));
        let Some(path) = lab.node_file(self.kind, &self.node.0, "metrics.jsonl") else {
            return;
        };
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        let line = format!("{}\n", json!({ "t": t, "m": m }));
        let write = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .and_then(|mut f| f.write_all(line.as_bytes()));
        if let Err(e) = write {
            tracing::warn!("writing metrics to {}: {e}", path.display());
        }
    }
}

/// Records every counter and gauge of an iroh-metrics group (histograms are skipped).
#[cfg(feature = "iroh-metrics")]
pub(crate) fn record_group(mut b: MetricsBuilder, group: &dyn iroh_metrics::MetricsGroup) {
    for item in group.iter() {
        let v = match item.value() {
            iroh_metrics::MetricValue::Counter(v) => v as f64,
            iroh_metrics::MetricValue::Gauge(v) => v as f64,
            _ => continue,
        };
        b = b.record(item.name(), v);
    }
    b.emit();
}
