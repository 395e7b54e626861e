//! Running the guest without root: a user namespace in which the calling user is root, so the
//! runner can make its private, read-only mount namespace and `unshare` its PID namespace.
//!
//! UML itself is an ordinary user process; root was only needed for those namespaces. In the
//! user namespace the caller's uid and gid map to 0 (one id each, `setgroups` denied), so the
//! guest's files in the results directory belong to the caller on the host, and the guest
//! kernel's own root (the workload's user) has nothing to do with host ids.

use std::process::{Command, Stdio};

use super::VtError;

/// The id maps written into the new user namespace, prepared before `fork` (the child may not
/// allocate).
pub(crate) use crate::sys::sandbox::UsernsMaps as Maps;

/// The maps for the calling user, or `None` when already root (no user namespace then: the
/// runner behaves exactly as before).
pub(crate) fn plan() -> Option<Maps> {
    let uid = nix::unistd::geteuid();
    if uid.is_root() {
        return None;
    }
    let gid = nix::unistd::getegid();
    Some(Maps {
        uid_map: format!("0 {uid} 1\n").into_bytes(),
        gid_map: format!("0 {gid} 1\n").into_bytes(),
    })
}

/// Turns a failed spawn into [`VtError::NoUserNamespaces`] when the cause is that the host
/// forbids unprivileged user namespaces (probed with util-linux `unshare --user`, since the
/// forked child can only report an errno).
pub(crate) fn classify_spawn_error(
    unshare: &std::path::Path,
    source: &std::io::Error,
) -> Option<VtError> {
    let probe = Command::new(unshare)
        .args(["--user", "--map-root-user", "true"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output();
    let failed = match &probe {
        Ok(out) => !out.status.success(),
        // Cannot even run the probe: not evidence about user namespaces.
        Err(_) => false,
    };
    if !failed {
        return None;
    }
    let said = probe
        .map(|o| String::from_utf8_lossy(&o.stderr).trim().to_string())
        .unwrap_or_default();
    Some(VtError::NoUserNamespaces {
        detail: format!(
            "creating the user namespace failed: {source}; `unshare --user` says: {said}; {}",
            sysctl_values()
        ),
    })
}

/// The current values of the sysctls that allow or forbid unprivileged user namespaces.
fn sysctl_values() -> String {
    [
        "kernel/unprivileged_userns_clone",
        "user/max_user_namespaces",
        "kernel/apparmor_restrict_unprivileged_userns",
    ]
    .iter()
    .filter_map(|k| {
        let v = std::fs::read_to_string(format!("/proc/sys/{k}")).ok()?;
        Some(format!("{}={}", k.replace('/', "."), v.trim()))
    })
    .collect::<Vec<_>>()
    .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_name_the_caller() {
        if nix::unistd::geteuid().is_root() {
            assert!(plan().is_none(), "root runs without a user namespace");
        } else {
            let m = plan().expect("maps");
            assert!(String::from_utf8_lossy(&m.uid_map).starts_with("0 "));
        }
    }

    #[test]
    fn the_error_names_the_sysctls() {
        let e = VtError::NoUserNamespaces { detail: "x".into() };
        let text = e.to_string();
        assert!(text.contains("kernel.unprivileged_userns_clone"), "{text}");
        assert!(text.contains("user.max_user_namespaces"), "{text}");
        assert_eq!(text.lines().count(), 1, "one line: {text}");
    }
}
