//! The served run directories and path safety: every file the server reads
//! is resolved through [`RunDir::resolve`], which refuses anything outside
//! the directory.

use std::net::SocketAddr;
use std::path::{Component, Path, PathBuf};
use std::sync::Mutex;

use serde::Serialize;

use super::ServeError;
use super::events::EventLog;

/// All served directories.
#[derive(Debug)]
pub(crate) struct Served {
    /// The bound address (for the Host check and messages).
    pub addr: SocketAddr,
    /// The directories, in the order given.
    pub runs: Vec<RunDir>,
}

impl Served {
    pub fn open(dirs: &[PathBuf], addr: SocketAddr) -> Result<Served, ServeError> {
        let runs = dirs
            .iter()
            .map(|d| RunDir::open(d))
            .collect::<Result<_, _>>()?;
        Ok(Served { addr, runs })
    }
}

/// One served directory.
#[derive(Debug)]
pub(crate) struct RunDir {
    /// The directory as given on the command line (for display).
    pub given: PathBuf,
    /// Its canonical path: the root every resolved path must stay under.
    pub root: PathBuf,
    /// `events.jsonl`, parsed incrementally.
    pub events: Mutex<EventLog>,
}

/// Why a path was refused.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Refused {
    /// `..`, an absolute path, or a NUL byte.
    Unsafe,
    /// Resolves (through a symlink) outside the served directory.
    Outside,
    /// Does not exist or is not a regular file.
    NotFound,
}

impl RunDir {
    fn open(dir: &Path) -> Result<RunDir, ServeError> {
        let err = |source| ServeError::Dir {
            path: dir.to_path_buf(),
            source,
        };
        let root = dir.canonicalize().map_err(err)?;
        if !root.is_dir() {
            return Err(err(std::io::Error::new(
                std::io::ErrorKind::NotADirectory,
                "not a directory",
            )));
        }
        std::fs::read_dir(&root).map_err(err)?;
        Ok(RunDir {
            given: dir.to_path_buf(),
            events: Mutex::new(EventLog::new(root.join("events.jsonl"))),
            root,
        })
    }

    /// The file `rel` (a relative path with `/` separators) inside this
    /// directory, after following symlinks; refused if it leaves it.
    pub fn resolve(&self, rel: &str) -> Result<PathBuf, Refused> {
        let p = safe_relative(rel).ok_or(Refused::Unsafe)?;
        let full = self
            .root
            .join(p)
            .canonicalize()
            .map_err(|_| Refused::NotFound)?;
        if !full.starts_with(&self.root) {
            return Err(Refused::Outside);
        }
        if !full.is_file() {
            return Err(Refused::NotFound);
        }
        Ok(full)
    }

    /// The files of the directory, relative, sorted; symlinks that leave it
    /// and anything deeper than four levels are left out (at most 5000).
    pub fn files(&self) -> Vec<FileEntry> {
        let mut out = vec![];
        walk(&self.root, &self.root, 0, &mut out);
        out.sort_by(|a, b| a.path.cmp(&b.path));
        out
    }
}

/// One listed file.
#[derive(Debug, Serialize)]
pub(crate) struct FileEntry {
    /// Relative path with `/` separators.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
}

fn walk(root: &Path, dir: &Path, depth: usize, out: &mut Vec<FileEntry>) {
    const MAX: usize = 5000;
    let Ok(rd) = std::fs::read_dir(dir) else {
        // An unreadable subdirectory is left out of the listing; reading a
        // file in it reports the error.
        return;
    };
    for e in rd.flatten() {
        if out.len() >= MAX {
            return;
        }
        let Ok(real) = e.path().canonicalize() else {
            continue;
        };
        if !real.starts_with(root) {
            continue;
        }
        if real.is_dir() && depth < 4 {
            walk(root, &e.path(), depth + 1, out);
        } else if real.is_file() {
            let Ok(rel) = e.path().strip_prefix(root).map(Path::to_path_buf) else {
                continue;
            };
            let path = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy())
                .collect::<Vec<_>>()
                .join("/");
            let size = real.metadata().map(|m| m.len()).unwrap_or(0);
            out.push(FileEntry { path, size });
        }
    }
}

/// `rel` as a path of only normal components, or `None` if it has `..`,
/// `.`-tricks that leave the directory, a root, or a NUL.
fn safe_relative(rel: &str) -> Option<PathBuf> {
    if rel.is_empty() || rel.contains('\0') || rel.contains('\\') {
        return None;
    }
    let p = Path::new(rel);
    p.components()
        .all(|c| matches!(c, Component::Normal(_)))
        .then(|| p.to_path_buf())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;

    #[test]
    fn relative_paths_are_checked() {
        assert!(safe_relative("logs/a.jsonl").is_some());
        for bad in [
            "",
            "../x",
            "a/../../x",
            "/etc/passwd",
            "a\0b",
            "..",
            "a\\..\\b",
        ] {
            assert!(safe_relative(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn symlinks_out_of_the_directory_are_refused() {
        let base = std::env::temp_dir().join(format!("patchbay-serve-dirs-{}", std::process::id()));
        let root = base.join("run");
        std::fs::create_dir_all(root.join("logs")).unwrap();
        std::fs::write(base.join("secret"), "s").unwrap();
        std::fs::write(root.join("logs/a.txt"), "a").unwrap();
        std::os::unix::fs::symlink(base.join("secret"), root.join("escape")).unwrap();
        std::os::unix::fs::symlink(root.join("logs/a.txt"), root.join("inside")).unwrap();
        let d = RunDir::open(&root).unwrap();
        assert!(d.resolve("logs/a.txt").is_ok());
        assert!(d.resolve("inside").is_ok());
        assert_eq!(d.resolve("escape"), Err(Refused::Outside));
        assert_eq!(d.resolve("../secret"), Err(Refused::Unsafe));
        assert_eq!(d.resolve("logs"), Err(Refused::NotFound));
        let files: Vec<String> = d.files().into_iter().map(|f| f.path).collect();
        assert_eq!(files, ["inside", "logs/a.txt"]);
        std::fs::remove_dir_all(&base).unwrap();
    }
}
