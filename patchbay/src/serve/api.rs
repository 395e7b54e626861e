//! The JSON API the page reads: `/api/runs`, and per run its files, the
//! event window and the log window.

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Serialize;

use super::compare::CompareQuery;
use super::dirs::{FileEntry, Refused, RunDir, Served};
use super::events::Window;
use super::logs::{self, LogQuery};

pub(crate) fn routes() -> Router<Arc<Served>> {
    Router::new()
        .route("/api/runs", get(runs))
        .route("/api/runs/{id}/file/{*path}", get(file))
        .route("/api/runs/{id}/events", get(events))
        .route("/api/runs/{id}/logs", get(logs_window))
        .route("/api/runs/{id}/qlog", get(qlog))
        .route("/api/compare", get(compare))
}

/// A served directory as the page lists it.
#[derive(Serialize)]
struct RunInfo {
    id: usize,
    /// The directory as given.
    path: String,
    /// `bench` (has bench.json), `lab` (run.json kind, topology or events),
    /// or `dir`.
    kind: String,
    /// `run.json`, if present and valid.
    run: Option<serde_json::Value>,
    files: Vec<FileEntry>,
}

fn info(id: usize, d: &RunDir) -> RunInfo {
    let files = d.files();
    let has = |p: &str| files.iter().any(|f| f.path == p);
    let run: Option<serde_json::Value> = d
        .resolve("run.json")
        .ok()
        .and_then(|p| std::fs::read(p).ok())
        .and_then(|b| serde_json::from_slice(&b).ok());
    let kind = if has("bench.json") {
        "bench".to_string()
    } else if let Some(k) = run.as_ref().and_then(|r| r.get("kind")?.as_str()) {
        k.to_string()
    } else if has("topology.json") || has("events.jsonl") {
        "lab".to_string()
    } else {
        "dir".to_string()
    };
    RunInfo {
        id,
        path: d.given.display().to_string(),
        kind,
        run,
        files,
    }
}

async fn runs(State(s): State<Arc<Served>>) -> Json<Vec<RunInfo>> {
    Json(s.runs.iter().enumerate().map(|(i, d)| info(i, d)).collect())
}

fn run_dir(s: &Served, id: usize) -> Result<&RunDir, Response> {
    s.runs
        .get(id)
        .ok_or_else(|| (StatusCode::NOT_FOUND, format!("no run {id}")).into_response())
}

fn content_type(path: &str) -> &'static str {
    match path.rsplit_once('.').map(|(_, e)| e) {
        Some("json") => "application/json",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("html") | Some("htm") => "text/plain; charset=utf-8",
        Some("pcap") | Some("pcapng") => "application/vnd.tcpdump.pcap",
        _ => "text/plain; charset=utf-8",
    }
}

async fn file(State(s): State<Arc<Served>>, Path((id, rel)): Path<(usize, String)>) -> Response {
    let d = match run_dir(&s, id) {
        Ok(d) => d,
        Err(r) => return r,
    };
    let full = match d.resolve(&rel) {
        Ok(p) => p,
        Err(Refused::Unsafe) => {
            return (StatusCode::BAD_REQUEST, "refused: unsafe path").into_response();
        }
        Err(Refused::Outside) => {
            return (
                StatusCode::FORBIDDEN,
                "refused: the path leaves the served directory",
            )
                .into_response();
        }
        Err(Refused::NotFound) => return (StatusCode::NOT_FOUND, "no such file").into_response(),
    };
    match tokio::task::spawn_blocking(move || std::fs::read(full)).await {
        Ok(read) => match read {
            Ok(bytes) => ([(header::CONTENT_TYPE, content_type(&rel))], bytes).into_response(),
            Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("reading: {e}")).into_response(),
        },
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

async fn events(
    State(s): State<Arc<Served>>,
    Path(id): Path<usize>,
    Query(w): Query<Window>,
) -> Response {
    if let Err(r) = run_dir(&s, id) {
        return r;
    }
    let res = tokio::task::spawn_blocking(move || {
        let d = &s.runs[id];
        let mut log = d.events.lock().unwrap_or_else(|p| p.into_inner());
        log.refresh()?;
        serde_json::to_vec(&log.window(&w)).map_err(std::io::Error::other)
    })
    .await;
    events_json(res)
}

async fn logs_window(
    State(s): State<Arc<Served>>,
    Path(id): Path<usize>,
    Query(q): Query<LogQuery>,
) -> Response {
    if let Err(r) = run_dir(&s, id) {
        return r;
    }
    match tokio::task::spawn_blocking(move || logs::query(&s.runs[id], &q)).await {
        Ok(reply) => Json(reply).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

async fn qlog(State(s): State<Arc<Served>>, Path(id): Path<usize>) -> Response {
    if let Err(r) = run_dir(&s, id) {
        return r;
    }
    match tokio::task::spawn_blocking(move || super::qlog::query(&s.runs[id])).await {
        Ok(reply) => Json(reply).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// The run's `time_scale` from its run.json (1 when it has none).
fn time_scale(d: &RunDir) -> f64 {
    d.resolve("run.json")
        .ok()
        .and_then(|p| std::fs::read(p).ok())
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|v| v["time_scale"].as_f64())
        .unwrap_or(1.0)
}

async fn compare(State(s): State<Arc<Served>>, Query(q): Query<CompareQuery>) -> Response {
    for id in [q.base, q.run] {
        if let Err(r) = run_dir(&s, id) {
            return r;
        }
    }
    if q.base == q.run {
        return (StatusCode::BAD_REQUEST, "compare two different runs").into_response();
    }
    let res = tokio::task::spawn_blocking(move || {
        let lock = |id: usize| s.runs[id].events.lock().unwrap_or_else(|p| p.into_inner());
        // Two logs are locked in id order, so two requests cannot deadlock.
        let (mut lo, mut hi) = (lock(q.base.min(q.run)), lock(q.base.max(q.run)));
        lo.refresh()?;
        hi.refresh()?;
        let (base, run) = if q.base < q.run {
            (&*lo, &*hi)
        } else {
            (&*hi, &*lo)
        };
        let c = super::compare::compare(base, run, time_scale(&s.runs[q.run]));
        serde_json::to_vec(&c).map_err(std::io::Error::other)
    })
    .await;
    events_json(res)
}

/// The answer of a blocking task that read `events.jsonl` and serialised JSON.
fn events_json(res: Result<std::io::Result<Vec<u8>>, tokio::task::JoinError>) -> Response {
    match res {
        Ok(Ok(body)) => ([(header::CONTENT_TYPE, "application/json")], body).into_response(),
        Ok(Err(e)) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("reading events.jsonl: {e}"),
        )
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}
