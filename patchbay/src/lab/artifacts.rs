//! Run artifacts: what a lab leaves in its output directory (format v1,
//! documented in `docs/artifacts.md`).
//!
//! ```text
//! <outdir>/run.json         manifest (written at start, rewritten at the end)
//! <outdir>/topology.json    rewritten on every topology change
//! <outdir>/events.jsonl     one JSON object per line, flushed per event
//! <outdir>/logs/<node>/<n>-<prog>.stdout|.stderr
//! <outdir>/logs/<node>.jsonl
//! <outdir>/compression.json, compression.txt   (k > 1 only)
//! <outdir>/pcap/<node>-<iface>.pcapng           (on request)
//! ```
//!
//! Every write here is best effort after creation: a full disk must not
//! fail the lab under test, so write errors are logged (`tracing::warn`)
//! once per file and the run goes on.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use serde_json::{Value, json};

use crate::error::{Error, Result};

mod topology;

/// Version of the run-directory format.
pub const FORMAT_VERSION: u32 = 1;

/// The least time between two writes of topology.json during a run.
const TOPOLOGY_EVERY: Duration = Duration::from_secs(1);

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn io_err(context: String) -> impl FnOnce(std::io::Error) -> Error {
    move |source| Error::Io { context, source }
}

/// The `run.json` manifest.
#[derive(Debug, Clone, Serialize)]
struct Manifest {
    format: &'static str,
    version: u32,
    kind: &'static str,
    name: String,
    id: String,
    time_mode: &'static str,
    time_scale: f64,
    seed: Option<u64>,
    started_unix_ms: f64,
    ended_unix_ms: Option<f64>,
    status: &'static str,
    failure: Option<String>,
    patchbay_version: &'static str,
}

/// One lab's artifact writer.
#[derive(Debug)]
pub(crate) struct Artifacts {
    dir: PathBuf,
    keep: bool,
    start: Instant,
    scale: crate::compress::TimeScale,
    seq: AtomicU64,
    events: Mutex<Option<File>>,
    manifest: Mutex<Manifest>,
    node_logs: Mutex<BTreeMap<String, Arc<Mutex<File>>>>,
    cmd_seq: AtomicU32,
    failed: AtomicBool,
    /// Per node: the firewall last installed (for topology.json).
    pub(crate) firewalls: Mutex<BTreeMap<String, Value>>,
    /// What topology.json shows beyond the lab's bookkeeping.
    topo: Mutex<topology::Extras>,
    /// When topology.json was last written, and whether a change since waits.
    topo_written: Mutex<Option<Instant>>,
    topo_pending: AtomicBool,
    pub(crate) captures: Mutex<Vec<super::capture::CaptureGuard>>,
    /// Stop flags of every capture, including those the user holds.
    pub(crate) capture_stops: Mutex<Vec<Arc<AtomicBool>>>,
    warned: AtomicBool,
}

/// Appends `v` and a newline to `f` with one `write(2)`: formatting a `Value` straight into a
/// `File` issues a syscall per JSON token, each a trap in a virtual-time guest.
pub(super) fn append_line(f: &mut File, v: &Value) -> std::io::Result<()> {
    let mut line = v.to_string().into_bytes();
    line.push(b'\n');
    f.write_all(&line)
}

/// Milliseconds as f64.
fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn unix_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(ms)
        .unwrap_or(0.0)
}

/// Whether `dir` is the virtual-time runner's results directory: `patchbay run --virtual
/// --outdir D` has the guest write into D, where the runner also keeps the guest's `stdout`,
/// `stderr`, `exit_code`, ... ([`crate::vt::RESULT_FILES`]). Those files are not the lab's.
fn is_vt_results(dir: &Path) -> bool {
    std::env::var_os("PATCHBAY_VT_RESULTS").is_some_and(|r| Path::new(&r) == dir)
}

/// The entries of `dir` that belong to a lab (all but the runner's, see [`is_vt_results`]).
fn lab_entries(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let runner = is_vt_results(dir);
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let name = e.file_name();
        if runner && crate::vt::RESULT_FILES.iter().any(|f| name == *f) {
            continue;
        }
        out.push(e.path());
    }
    Ok(out)
}

/// Removes a previous run from `dir`. The runner's results directory is a mount point in the
/// guest, so its lab entries are removed one by one and the directory stays.
fn remove_previous(dir: &Path) -> std::io::Result<()> {
    if !is_vt_results(dir) {
        return std::fs::remove_dir_all(dir);
    }
    for p in lab_entries(dir)? {
        if p.is_dir() && !p.is_symlink() {
            std::fs::remove_dir_all(&p)?;
        } else {
            std::fs::remove_file(&p)?;
        }
    }
    Ok(())
}

/// Whether `dir` may be (re)used: missing, empty, or a previous run
/// (it holds a `run.json` of format `patchbay-run`).
fn check_reusable(dir: &Path) -> Result<bool> {
    let Ok(entries) = lab_entries(dir) else {
        return Ok(false);
    };
    if entries.is_empty() {
        return Ok(false);
    }
    let prev = std::fs::read_to_string(dir.join("run.json")).unwrap_or_default();
    let is_run = serde_json::from_str::<Value>(&prev)
        .ok()
        .and_then(|v| v.get("format").and_then(Value::as_str).map(str::to_string))
        .is_some_and(|f| f == "patchbay-run");
    if !is_run {
        return Err(Error::invalid(
            "outdir",
            crate::InvalidReason::Conflict,
            format!(
                "output directory {} is not empty and holds no previous patchbay run (run.json); choose a fresh or empty directory",
                dir.display()
            ),
        ));
    }
    Ok(true)
}

impl Artifacts {
    /// Creates the run directory (replacing a previous run in it) and
    /// writes `run.json` with status `running`.
    pub fn create(
        dir: &Path,
        keep: bool,
        id: &str,
        name: &str,
        mode: super::TimeMode,
        seed: Option<u64>,
        start: Instant,
    ) -> Result<Artifacts> {
        if check_reusable(dir)? {
            remove_previous(dir).map_err(io_err(format!(
                "removing the previous run in {}",
                dir.display()
            )))?;
        }
        std::fs::create_dir_all(dir.join("logs")).map_err(io_err(format!(
            "creating output directory {}",
            dir.display()
        )))?;
        let events = File::create(dir.join("events.jsonl"))
            .map_err(io_err(format!("creating {}/events.jsonl", dir.display())))?;
        let a = Artifacts {
            dir: dir.to_path_buf(),
            keep,
            start,
            scale: mode.scale(),
            seq: AtomicU64::new(0),
            events: Mutex::new(Some(events)),
            manifest: Mutex::new(Manifest {
                format: "patchbay-run",
                version: FORMAT_VERSION,
                kind: "lab",
                name: name.to_string(),
                id: id.to_string(),
                time_mode: mode.name(),
                time_scale: mode.scale().get(),
                seed,
                started_unix_ms: unix_ms(),
                ended_unix_ms: None,
                status: "running",
                failure: None,
                patchbay_version: env!("CARGO_PKG_VERSION"),
            }),
            node_logs: Mutex::new(BTreeMap::new()),
            cmd_seq: AtomicU32::new(0),
            failed: AtomicBool::new(false),
            firewalls: Mutex::new(BTreeMap::new()),
            topo: Mutex::default(),
            topo_written: Mutex::new(None),
            topo_pending: AtomicBool::new(false),
            captures: Mutex::new(vec![]),
            capture_stops: Mutex::new(vec![]),
            warned: AtomicBool::new(false),
        };
        a.write_manifest();
        a.emit(
            None,
            "lab.start",
            json!({ "id": id, "time_scale": mode.scale().get() }),
        );
        Ok(a)
    }

    /// The run directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// (wall_ms, virtual_ms) of now.
    pub fn now(&self) -> (f64, f64) {
        self.at(self.start.elapsed())
    }

    /// (wall_ms, virtual_ms) of a wall offset since the lab start.
    pub fn at(&self, since_start: Duration) -> (f64, f64) {
        let w = ms(since_start);
        (w, self.scale.get() * w)
    }

    fn warn_once(&self, what: &str, e: &dyn std::fmt::Display) {
        if !self.warned.swap(true, Ordering::Relaxed) {
            tracing::warn!("patchbay artifacts: {what} in {}: {e}", self.dir.display());
        }
    }

    /// Appends one event to events.jsonl, stamped now.
    pub fn emit(&self, node: Option<&str>, kind: &str, data: Value) {
        let (w, v) = self.now();
        self.emit_at(w, v, node, kind, data);
    }

    /// Appends one event with explicit times.
    pub fn emit_at(
        &self,
        wall_ms: f64,
        virtual_ms: f64,
        node: Option<&str>,
        kind: &str,
        data: Value,
    ) {
        lock(&self.topo).observe(node, kind, &data, virtual_ms);
        let mut g = lock(&self.events);
        let Some(f) = g.as_mut() else { return };
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        let line = json!({
            "seq": seq,
            "wall_ms": wall_ms,
            "virtual_ms": virtual_ms,
            "node": node,
            "kind": kind,
            "data": data,
        });
        if let Err(e) = append_line(f, &line) {
            self.warn_once("cannot append to events.jsonl", &e);
        }
    }

    fn write_json(&self, name: &str, v: &impl Serialize) {
        let path = self.dir.join(name);
        let tmp = self.dir.join(format!(".{name}.tmp"));
        let r = serde_json::to_vec_pretty(v)
            .map_err(std::io::Error::other)
            .and_then(|b| std::fs::write(&tmp, b))
            .and_then(|_| std::fs::rename(&tmp, &path));
        if let Err(e) = r {
            self.warn_once(&format!("cannot write {name}"), &e);
        }
    }

    fn write_manifest(&self) {
        let m = lock(&self.manifest).clone();
        self.write_json("run.json", &m);
    }

    /// Notes a topology change: rewrites topology.json, or, within
    /// [`TOPOLOGY_EVERY`] of the last write, leaves it to the next change,
    /// event of the lab or the end (a 500-node build would otherwise
    /// rewrite the whole file 500 times).
    pub fn topology_changed(&self, lab: &super::LabInner) {
        if lock(&self.topo_written).is_none_or(|t| t.elapsed() >= TOPOLOGY_EVERY) {
            self.write_topology(lab);
        } else {
            self.topo_pending.store(true, Ordering::Relaxed);
        }
    }

    /// Writes a topology change left pending, once it is due.
    pub fn flush_topology(&self, lab: &super::LabInner) {
        if self.topo_pending.load(Ordering::Relaxed) {
            self.topology_changed(lab);
        }
    }

    /// Remembers node `name` as it is now (see `Extras::snapshot`).
    /// Records the firewall of `node` for topology.json.
    pub fn set_firewall(&self, node: &str, fw: Value) {
        lock(&self.firewalls).insert(node.to_string(), fw);
    }

    pub fn snapshot(&self, lab: &super::LabInner, name: &str) {
        let fws = lock(&self.firewalls).clone();
        let regions = lab.region_routers();
        let t = lab.topo();
        lock(&self.topo).snapshot(&t, &fws, &regions, name);
    }

    /// Rewrites topology.json from the lab's bookkeeping.
    pub fn write_topology(&self, lab: &super::LabInner) {
        self.topo_pending.store(false, Ordering::Relaxed);
        *lock(&self.topo_written) = Some(Instant::now());
        let fws = lock(&self.firewalls).clone();
        // The regions' lock is taken (and released) before the topology's;
        // the topology's before the extras' (as in `emit` under it).
        let regions = lab.region_routers();
        let doc = {
            let t = lab.topo();
            lock(&self.topo).render(&t, &fws, &regions)
        };
        self.write_json("topology.json", &doc);
    }

    /// Marks the run failed (kept on drop whatever `keep` says).
    pub fn fail(&self, why: Option<String>) {
        self.failed.store(true, Ordering::Relaxed);
        if why.is_some() {
            lock(&self.manifest).failure = why;
        }
    }

    /// Paths and a number for a node's next command.
    pub fn next_cmd(&self, node: &str, program: &str) -> (u32, PathBuf, Option<Arc<Mutex<File>>>) {
        let n = self.cmd_seq.fetch_add(1, Ordering::Relaxed) + 1;
        let prog: String = Path::new(program)
            .file_name()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| program.to_string())
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                    c
                } else {
                    '_'
                }
            })
            .take(40)
            .collect();
        let dir = self.dir.join("logs").join(node);
        if let Err(e) = std::fs::create_dir_all(&dir) {
            self.warn_once("cannot create a log directory", &e);
        }
        let base = dir.join(format!("{n}-{prog}"));
        let jsonl = {
            let mut g = lock(&self.node_logs);
            match g.get(node) {
                Some(f) => Some(f.clone()),
                None => {
                    let path = self.dir.join("logs").join(format!("{node}.jsonl"));
                    match File::options().create(true).append(true).open(&path) {
                        Ok(f) => {
                            let f = Arc::new(Mutex::new(f));
                            g.insert(node.to_string(), f.clone());
                            Some(f)
                        }
                        Err(e) => {
                            self.warn_once("cannot open a node log", &e);
                            None
                        }
                    }
                }
            }
        };
        (n, base, jsonl)
    }

    /// Ends the run: stops captures, writes the TCP telemetry, the
    /// compression report, the final topology and manifest, then applies
    /// the retention rule (keep on failure or when asked; else remove).
    pub fn finish(&self, lab: &super::LabInner) {
        // The lab ends now; what follows (captures, telemetry, the report,
        // the counters) is bookkeeping that must not stretch the axis.
        let (end_wall, end_virtual) = self.now();
        for s in lock(&self.capture_stops).iter() {
            s.store(true, Ordering::Relaxed);
        }
        let caps = std::mem::take(&mut *lock(&self.captures));
        for c in caps {
            let what = c.describe();
            if let Err(e) = c.stop() {
                self.warn_once(&format!("cannot finish capture {what}"), &e);
            }
        }
        for ev in lab.compression().events() {
            let (w, v) = (ms(ev.at), ms(ev.virtual_at));
            let data = serde_json::to_value(ev.tcp).unwrap_or(Value::Null);
            self.emit_at(w, v, Some(&ev.node), "tcp", data);
        }
        if !lab.compression().scale().is_real_time() {
            match lab.compression().report() {
                Ok(r) => {
                    self.write_json("compression.json", &r);
                    if let Err(e) = std::fs::write(self.dir.join("compression.txt"), r.to_string())
                    {
                        self.warn_once("cannot write compression.txt", &e);
                    }
                }
                Err(e) => self.warn_once("cannot compute the compression report", &e),
            }
        }
        lock(&self.topo).counters = topology::read_counters(lab);
        self.write_topology(lab);
        let failed = self.failed.load(Ordering::Relaxed) || std::thread::panicking();
        let status = if failed { "failed" } else { "passed" };
        self.emit_at(
            end_wall,
            end_virtual,
            None,
            "lab.end",
            json!({ "status": status }),
        );
        {
            let mut m = lock(&self.manifest);
            m.status = status;
            m.ended_unix_ms = Some(unix_ms());
        }
        self.write_manifest();
        *lock(&self.events) = None;
        let keep = self.keep || failed || std::env::var_os("PATCHBAY_KEEP_ARTIFACTS").is_some();
        if !keep && let Err(e) = std::fs::remove_dir_all(&self.dir) {
            tracing::warn!("cannot remove {}: {e}", self.dir.display());
        } else if failed {
            // Say where to look: this is what the directory is for.
            eprintln!(
                "patchbay: lab {} failed; artifacts kept in {}",
                lock(&self.manifest).id,
                self.dir.display()
            );
        }
    }
}

/// The artifact writer for a new lab, if its options ask for one.
pub(crate) fn for_lab(
    opts: &super::LabOpts,
    id: &str,
    comp: &super::compression::Compression,
    seed: Option<u64>,
) -> Result<Option<Arc<Artifacts>>> {
    let Some(dir) = &opts.outdir else {
        return Ok(None);
    };
    let name = opts.label.clone().unwrap_or_else(|| "lab".into());
    let a = Artifacts::create(
        dir,
        opts.keep_artifacts,
        id,
        &name,
        opts.time,
        seed,
        comp.clock().start(),
    )?;
    Ok(Some(Arc::new(a)))
}

/// The node name of an event source, as written into `events.jsonl`.
pub(crate) fn emit(lab: &super::LabInner, node: Option<&str>, kind: &str, data: Value) {
    if let Some(a) = lab.artifacts() {
        a.emit(node, kind, data);
    }
}

/// Rewrites topology.json, if the lab has an output directory.
pub(crate) fn topology_changed(lab: &super::LabInner) {
    if let Some(a) = lab.artifacts() {
        a.topology_changed(lab);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;

    #[test]
    fn reuses_previous_runs_and_refuses_foreign_directories() {
        let base = std::env::temp_dir().join(format!("pb-art-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        assert!(!check_reusable(&base).unwrap(), "missing dir");
        std::fs::create_dir_all(&base).unwrap();
        assert!(!check_reusable(&base).unwrap(), "empty dir");
        std::fs::write(base.join("x"), "1").unwrap();
        let e = check_reusable(&base).unwrap_err().to_string();
        assert!(e.contains("not empty"), "{e}");
        std::fs::write(
            base.join("run.json"),
            r#"{"format":"patchbay-run","version":1}"#,
        )
        .unwrap();
        assert!(check_reusable(&base).unwrap());
        std::fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn events_carry_seq_and_both_times() {
        let base = std::env::temp_dir().join(format!("pb-art-ev-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        let start = Instant::now() - Duration::from_millis(100);
        let a = Artifacts::create(
            &base,
            true,
            "t-1-0",
            "t",
            crate::lab::TimeMode::compressed(10.0).unwrap(),
            None,
            start,
        )
        .unwrap();
        a.emit(Some("n"), "mark", json!({"x": 1}));
        let text = std::fs::read_to_string(base.join("events.jsonl")).unwrap();
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["kind"], "lab.start");
        assert_eq!(lines[1]["seq"], 1);
        assert_eq!(lines[1]["node"], "n");
        let (w, v) = (
            lines[1]["wall_ms"].as_f64().unwrap(),
            lines[1]["virtual_ms"].as_f64().unwrap(),
        );
        assert!(w >= 100.0 && (v / w - 10.0).abs() < 1e-9, "{w} {v}");
        let run: Value =
            serde_json::from_str(&std::fs::read_to_string(base.join("run.json")).unwrap()).unwrap();
        assert_eq!(run["format"], "patchbay-run");
        assert_eq!(run["status"], "running");
        std::fs::remove_dir_all(&base).unwrap();
    }
}
