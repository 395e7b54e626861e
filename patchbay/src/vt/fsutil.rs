//! Small file helpers of the runner: I/O errors with their path, result files, host tools.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use super::VtError;

pub(super) fn os_concat(prefix: &str, path: &Path) -> OsString {
    let mut s = OsString::from(prefix);
    s.push(path.as_os_str());
    s
}

pub(crate) fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> VtError {
    let path = path.to_path_buf();
    move |source| VtError::Io { what, path, source }
}

/// Reads a result file; `None` when the guest did not write it.
pub(super) fn read_optional(path: &Path) -> Result<Option<Vec<u8>>, VtError> {
    match std::fs::read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io("reading a result file", path)(e)),
    }
}

/// `/usr/bin/NAME`, else `/bin/NAME`: a host tool the runner or the guest init uses by path.
pub(crate) fn host_tool(name: &str) -> Option<PathBuf> {
    ["/usr/bin", "/bin"]
        .iter()
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
}

pub(super) fn write_executable(path: &Path, text: &[u8]) -> Result<(), VtError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).map_err(io("writing the guest init", path))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
        .map_err(io("making the guest init executable", path))
}
