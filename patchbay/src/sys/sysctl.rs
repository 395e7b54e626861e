//! Per-namespace sysctl reads and writes through `/proc/sys`.
//!
//! `/proc/sys/net` shows the network namespace of the thread that opens the
//! file, so these functions run on the namespace's worker. They never touch
//! the host's namespace. Requires `CAP_NET_ADMIN` in the namespace.

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::sys::netns::{Netns, NetnsError};

/// A failed sysctl access.
#[derive(Debug, thiserror::Error)]
pub enum SysctlError {
    /// The key does not exist in this kernel or namespace.
    #[error(
        "sysctl {key} does not exist in namespace {ns} (kernel feature missing, or the key is not per-namespace)"
    )]
    Missing {
        /// Key relative to /proc/sys, e.g. `net/ipv4/tcp_fin_timeout`.
        key: String,
        /// Namespace.
        ns: String,
    },
    /// The kernel refused the access.
    #[error("cannot {op} sysctl {key} = {value:?} in namespace {ns}: {source}")]
    Io {
        /// `read` or `write`.
        op: &'static str,
        /// Key.
        key: String,
        /// Value written (empty for reads).
        value: String,
        /// Namespace.
        ns: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The namespace worker is gone.
    #[error(transparent)]
    Netns(#[from] NetnsError),
}

/// Maps a key to its file. Slash-separated keys are used as they are (an
/// interface name may contain dots); dotted keys without a slash are the
/// `sysctl(8)` spelling.
fn path(key: &str) -> PathBuf {
    if key.contains('/') {
        PathBuf::from("/proc/sys").join(key)
    } else {
        PathBuf::from("/proc/sys").join(key.replace('.', "/"))
    }
}

/// Reads a sysctl in the calling thread's namespace. `None` if absent.
pub fn read_here(key: &str) -> std::io::Result<Option<String>> {
    match std::fs::read_to_string(path(key)) {
        Ok(s) => Ok(Some(s.trim().to_string())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

fn write_here(ns: &str, key: &str, value: &str) -> Result<(), SysctlError> {
    let p = path(key);
    std::fs::write(&p, value).map_err(|source| {
        if source.kind() == std::io::ErrorKind::NotFound {
            SysctlError::Missing {
                key: key.to_string(),
                ns: ns.to_string(),
            }
        } else {
            SysctlError::Io {
                op: "write",
                key: key.to_string(),
                value: value.to_string(),
                ns: ns.to_string(),
                source,
            }
        }
    })
}

/// Writes every `key = value` of `values` inside `ns`, in order.
pub fn write_all(ns: &Netns, values: BTreeMap<String, String>) -> Result<(), SysctlError> {
    let name = ns.name().to_string();
    ns.run_sync(move || {
        for (k, v) in &values {
            write_here(&name, k, v)?;
        }
        Ok(())
    })?
}

/// Writes one sysctl inside `ns`.
pub fn write(ns: &Netns, key: &str, value: &str) -> Result<(), SysctlError> {
    write_all(ns, BTreeMap::from([(key.to_string(), value.to_string())]))
}

/// Reads one sysctl inside `ns`.
pub fn read(ns: &Netns, key: &str) -> Result<String, SysctlError> {
    let name = ns.name().to_string();
    let key = key.to_string();
    ns.run_sync(move || match read_here(&key) {
        Ok(Some(v)) => Ok(v),
        Ok(None) => Err(SysctlError::Missing { key, ns: name }),
        Err(source) => Err(SysctlError::Io {
            op: "read",
            key,
            value: String::new(),
            ns: name,
            source,
        }),
    })?
}

#[cfg(test)]
mod tests {
    #[test]
    fn dotted_and_slashed_keys_map_to_the_same_file() {
        assert_eq!(
            super::path("net.ipv4.ip_forward"),
            super::path("net/ipv4/ip_forward")
        );
    }
}
