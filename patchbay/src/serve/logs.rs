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
    /// Only lines of a tracing log at this level or above (`trace` ..
    /// `error`); lines without a level are left out then.
    pub level: Option<String>,
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
    /// The tracing level of the line (a JSON log's `level`, or the level
    /// word of a text log), upper case.
    #[serde(skip_deserializing, skip_serializing_if = "Option::is_none")]
    pub level: Option<&'static str>,
}

const LEVELS: [&str; 5] = ["TRACE", "DEBUG", "INFO", "WARN", "ERROR"];

/// The tracing level of a log line: `level` of a JSON object (tracing's JSON
/// format), or the first level word among a text line's first five words
/// (tracing's default format, colours stripped).
pub(crate) fn level_of(line: &str) -> Option<&'static str> {
    let known = |w: &str| {
        let w = w.trim_matches(|c: char| !c.is_ascii_alphabetic());
        LEVELS.iter().find(|l| l.eq_ignore_ascii_case(w)).copied()
    };
    let t = line.trim_start();
    if t.starts_with('{') {
        let v: serde_json::Value = serde_json::from_str(t).ok()?;
        return known(v.get("level")?.as_str()?);
    }
    let plain = strip_ansi(t);
    plain
        .split_whitespace()
        .take(5)
        .find_map(|w| LEVELS.iter().find(|l| **l == w).copied())
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut esc = false;
    for c in s.chars() {
        match (esc, c) {
            (false, '\u{1b}') => esc = true,
            (true, c) if c.is_ascii_alphabetic() => esc = false,
            (true, _) => {}
            (false, c) => out.push(c),
        }
    }
    out
}

fn rank(level: &str) -> Option<usize> {
    LEVELS.iter().position(|l| l.eq_ignore_ascii_case(level))
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
    let min = q.level.as_deref().and_then(rank);
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
            if line.virtual_ms < from || line.virtual_ms > to {
                continue;
            }
            line.level = level_of(&line.line);
            if min.is_some_and(|m| line.level.and_then(rank).is_none_or(|r| r < m)) {
                continue;
            }
            line.node = node.clone();
            lines.push(line);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_of_json_and_text_logs() {
        let json = r#"{"timestamp":"2026-01-01T00:00:00Z","level":"WARN","fields":{"message":"slow"},"target":"iroh"}"#;
        assert_eq!(level_of(json), Some("WARN"));
        let text =
            "\u{1b}[2m2026-01-01T00:00:00Z\u{1b}[0m \u{1b}[32m INFO\u{1b}[0m iroh::ep: bound";
        assert_eq!(level_of(text), Some("INFO"));
        assert_eq!(
            level_of("mapped port 40000 then 40001 -> new mapping"),
            None
        );
        assert_eq!(level_of("{not json"), None);
        assert_eq!(rank("error"), Some(4));
    }
}
