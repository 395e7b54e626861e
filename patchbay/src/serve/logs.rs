//! Per-node logs (`logs/<node>.jsonl`: one timestamped line of a command's
//! stdout or stderr each), filtered to a virtual-time window.

use serde::{Deserialize, Serialize};

use super::dirs::RunDir;

/// A log query.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct LogQuery {
    /// Only this node (default: every node with a log).
    pub node: Option<String>,
    /// Window start, virtual ms.
    pub from: Option<f64>,
    /// Window end, virtual ms.
    pub to: Option<f64>,
    /// Most lines to return (default 2000).
    pub limit: Option<usize>,
}

/// One log line.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct LogLine {
    #[serde(default)]
    pub node: String,
    #[serde(default)]
    pub wall_ms: f64,
    #[serde(default)]
    pub virtual_ms: f64,
    #[serde(default)]
    pub cmd: Option<u64>,
    #[serde(default)]
    pub stream: String,
    #[serde(default)]
    pub line: String,
}

/// The answer.
#[derive(Debug, Serialize)]
pub(crate) struct LogReply {
    /// Nodes that have a log.
    pub nodes: Vec<String>,
    /// Lines in the window, by virtual time.
    pub lines: Vec<LogLine>,
    /// Lines in the window beyond `limit`, not returned.
    pub dropped: usize,
}

/// Nodes with a `logs/<node>.jsonl`.
fn log_nodes(dir: &RunDir) -> Vec<String> {
    dir.files()
        .into_iter()
        .filter_map(|f| {
            let rest = f.path.strip_prefix("logs/")?;
            let node = rest.strip_suffix(".jsonl")?;
            (!node.contains('/')).then(|| node.to_string())
        })
        .collect()
}

pub(crate) fn query(dir: &RunDir, q: &LogQuery) -> LogReply {
    let nodes = log_nodes(dir);
    let wanted: Vec<&String> = nodes
        .iter()
        .filter(|n| q.node.as_ref().is_none_or(|w| w == *n))
        .collect();
    let from = q.from.unwrap_or(f64::NEG_INFINITY);
    let to = q.to.unwrap_or(f64::INFINITY);
    let mut lines = vec![];
    for node in wanted {
        let Ok(path) = dir.resolve(&format!("logs/{node}.jsonl")) else {
            continue;
        };
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        for l in text.lines() {
            let Ok(mut line) = serde_json::from_str::<LogLine>(l) else {
                continue;
            };
            if line.virtual_ms >= from && line.virtual_ms <= to {
                line.node = node.clone();
                lines.push(line);
            }
        }
    }
    lines.sort_by(|a, b| a.virtual_ms.total_cmp(&b.virtual_ms));
    let limit = q.limit.unwrap_or(2000).min(20_000);
    let dropped = lines.len().saturating_sub(limit);
    lines.truncate(limit);
    LogReply {
        nodes,
        lines,
        dropped,
    }
}
