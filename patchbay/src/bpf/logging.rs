//! aya-log records of the eBPF programs, forwarded to `tracing` (target `patchbay::bpf`).
//!
//! The programs check the run-time level in the `PB_LOG` array map before they build a
//! record, so with logging off (the default) they emit nothing, and no reader runs. Each
//! [`LogGuard`] raises the level while it lives; the engine's level is the most verbose one
//! any guard asks for. The reader thread starts with the first guard and runs until the
//! engine is dropped.

use std::{
    collections::BTreeMap,
    os::fd::AsRawFd,
    panic::AssertUnwindSafe,
    sync::{Arc, Mutex, atomic::AtomicBool},
};

use aya::{
    Ebpf,
    maps::{Array, MapData},
};
use aya_log::EbpfLogger;
use patchbay_ebpf_common as common;

use super::BpfError;

/// Environment variable that turns eBPF log records on for every engine of the process
/// (`error`, `warn`, `info`, `debug`, `trace`; `off` or empty: off).
pub const LOG_ENV: &str = "PATCHBAY_BPF_LOG";

/// The `PB_LOG` value for a tracing level.
pub(crate) fn level_value(level: tracing::Level) -> u32 {
    match level {
        tracing::Level::ERROR => common::LOG_ERROR,
        tracing::Level::WARN => common::LOG_WARN,
        tracing::Level::INFO => common::LOG_INFO,
        tracing::Level::DEBUG => common::LOG_DEBUG,
        tracing::Level::TRACE => common::LOG_TRACE,
    }
}

/// A `PATCHBAY_BPF_LOG` value that is no level.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{}={:?} is not a level; use error, warn, info, debug, trace or off",
    LOG_ENV,
    .0
)]
pub(crate) struct BadLevel(String);

/// Parses a `PATCHBAY_BPF_LOG` value: `Ok(None)` for off.
pub(crate) fn parse_level(text: &str) -> Result<Option<tracing::Level>, BadLevel> {
    let t = text.trim();
    if t.is_empty() || t.eq_ignore_ascii_case("off") || t == "0" {
        return Ok(None);
    }
    t.parse::<tracing::Level>()
        .map(Some)
        .map_err(|_| BadLevel(text.to_string()))
}

/// The level `PATCHBAY_BPF_LOG` asks for; an invalid value is reported and ignored.
pub(crate) fn env_level() -> Option<tracing::Level> {
    let text = std::env::var(LOG_ENV).ok()?;
    parse_level(&text).unwrap_or_else(|e| {
        tracing::warn!("{e}; eBPF logging stays off");
        None
    })
}

/// The level map and the guards that hold levels.
pub(crate) struct Logging {
    map: Array<MapData, u32>,
    /// `PB_LOG` value → number of guards holding it.
    holders: BTreeMap<u32, usize>,
    reader_started: bool,
}

impl std::fmt::Debug for Logging {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Logging")
            .field("holders", &self.holders)
            .field("reader_started", &self.reader_started)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Logging {
    /// Takes the `PB_LOG` map from a loaded object.
    pub(crate) fn new(ebpf: &mut Ebpf) -> Result<Logging, BpfError> {
        let map = ebpf
            .take_map(common::MAP_LOG)
            .ok_or(BpfError::Missing(common::MAP_LOG))?;
        let map = Array::try_from(map).map_err(|source| BpfError::Map {
            op: "open".into(),
            name: common::MAP_LOG,
            source: Box::new(source),
        })?;
        Ok(Logging {
            map,
            holders: BTreeMap::new(),
            reader_started: false,
        })
    }

    /// Writes the most verbose level held (0 when none) into `PB_LOG`.
    fn apply(&mut self) -> Result<(), BpfError> {
        let level = self.holders.keys().next_back().copied().unwrap_or(0);
        self.map.set(0, level, 0).map_err(|source| BpfError::Map {
            op: format!("set level {level}"),
            name: common::MAP_LOG,
            source: Box::new(source),
        })
    }
}

/// Raises the engine's eBPF log level while it lives (see [`super::Engine::log`]).
#[derive(Debug)]
#[must_use = "dropping the LogGuard lowers the eBPF log level again"]
pub struct LogGuard {
    logging: Arc<Mutex<Logging>>,
    value: u32,
}

impl Drop for LogGuard {
    fn drop(&mut self) {
        let mut l = lock(&self.logging);
        if let Some(n) = l.holders.get_mut(&self.value) {
            *n -= 1;
            if *n == 0 {
                l.holders.remove(&self.value);
            }
        }
        // Errors cannot be returned from drop; the level then stays until the engine goes.
        if let Err(e) = l.apply() {
            tracing::warn!(error = %e, "lowering the eBPF log level failed");
        }
    }
}

/// Adds a holder of `level`, starting the reader on first use.
pub(crate) fn hold(
    logging: &Arc<Mutex<Logging>>,
    ebpf: &Mutex<Ebpf>,
    stop: &Arc<AtomicBool>,
    level: tracing::Level,
) -> Result<LogGuard, BpfError> {
    let value = level_value(level);
    let mut l = lock(logging);
    if !l.reader_started {
        let logger = EbpfLogger::init_with_logger(&mut lock(ebpf), Forward).map_err(|e| {
            BpfError::io(
                "attaching the aya-log reader",
                std::io::Error::other(e.to_string()),
            )
        })?;
        let stop = Arc::clone(stop);
        std::thread::Builder::new()
            .name("patchbay-bpf-log".into())
            .spawn(move || reader_loop(logger, stop))
            .map_err(|e| BpfError::io("spawning the eBPF log reader thread", e))?;
        l.reader_started = true;
    }
    *l.holders.entry(value).or_insert(0) += 1;
    // Apply before a guard exists: a guard dropped on this error path would lock `logging`
    // again while `l` holds it.
    if let Err(e) = l.apply() {
        if let Some(n) = l.holders.get_mut(&value) {
            *n -= 1;
            if *n == 0 {
                l.holders.remove(&value);
            }
        }
        return Err(e);
    }
    drop(l);
    Ok(LogGuard {
        logging: Arc::clone(logging),
        value,
    })
}

/// Reads log records until the engine stops.
fn reader_loop(mut logger: EbpfLogger<Forward>, stop: Arc<AtomicBool>) {
    let fd = logger.as_raw_fd();
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        // aya-log panics on a malformed record; the records come from our own programs, but a
        // panic must not take more than this reader with it.
        if std::panic::catch_unwind(AssertUnwindSafe(|| logger.flush())).is_err() {
            tracing::error!(target: "patchbay::bpf", "malformed eBPF log record; reader stopped");
            return;
        }
        let mut pfd = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: pfd is a valid pollfd array of length 1; fd stays open (logger is owned here).
        let ret = unsafe { libc::poll(&mut pfd, 1, 100) };
        if ret < 0 {
            let err = std::io::Error::last_os_error();
            if err.kind() != std::io::ErrorKind::Interrupted {
                tracing::error!(error = %err, "polling the eBPF log ring buffer failed; stopping");
                return;
            }
        }
    }
}

/// A `log::Log` that re-emits aya-log records as `tracing` events with target
/// `patchbay::bpf`.
struct Forward;

impl log::Log for Forward {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }

    fn log(&self, record: &log::Record<'_>) {
        let line = record.line().unwrap_or(0);
        let msg = record.args();
        match record.level() {
            log::Level::Error => tracing::error!(target: "patchbay::bpf", line, "{msg}"),
            log::Level::Warn => tracing::warn!(target: "patchbay::bpf", line, "{msg}"),
            log::Level::Info => tracing::info!(target: "patchbay::bpf", line, "{msg}"),
            log::Level::Debug => tracing::debug!(target: "patchbay::bpf", line, "{msg}"),
            log::Level::Trace => tracing::trace!(target: "patchbay::bpf", line, "{msg}"),
        }
    }

    fn flush(&self) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_levels() {
        assert_eq!(parse_level("debug"), Ok(Some(tracing::Level::DEBUG)));
        assert_eq!(parse_level("WARN"), Ok(Some(tracing::Level::WARN)));
        assert_eq!(parse_level(" off "), Ok(None));
        assert_eq!(parse_level(""), Ok(None));
        assert!(parse_level("loud").is_err_and(|e| e.to_string().contains("PATCHBAY_BPF_LOG")));
        assert_eq!(level_value(tracing::Level::DEBUG), common::LOG_DEBUG);
        assert_eq!(level_value(tracing::Level::ERROR), common::LOG_ERROR);
    }
}
