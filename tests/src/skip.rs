//! Skipping a test with a printed reason.
//!
//! A test that cannot run here (no root, a missing tool, a kernel without a feature) returns
//! early and prints `PATCHBAY-SKIP: <test>: <reason>` ([`skip`]), which the kernel matrix and
//! a reader of the output look for; a skip never passes silently.
//!
//! Each check is a function that returns the reason, `None` when the test can run
//! ([`root_unavailable`], [`tools_unavailable`], [`compression_unavailable`],
//! [`rto_min_unavailable`]). A test skips with one line:
//!
//! ```ignore
//! #[tokio::test]
//! async fn dig_answers() -> anyhow::Result<()> {
//!     require_root!();
//!     skip_if!(tools_unavailable(&["dig"], "cargo xtask test installs it through apt"));
//!     // ...
//!     Ok(())
//! }
//! ```
//!
//! The macros return what the enclosing function returns when skipped ([`Skipped`]): `()`,
//! `Ok(())`, `None` or `Ok(None)`.

/// Returns from the enclosing function (a test, or a set-up helper returning an `Option`)
/// when `$why` (an `Option` of a reason) is `Some`, after printing the reason ([`skip`]).
#[macro_export]
macro_rules! skip_if {
    ($why:expr) => {
        if let ::std::option::Option::Some(why) = $why {
            $crate::skip(::std::convert::AsRef::<str>::as_ref(&why));
            return $crate::Skipped::skipped();
        }
    };
}

/// Returns from the enclosing test unless it runs as root, after printing the skip line:
/// labs create network namespaces. The one way a test skips without root.
#[macro_export]
macro_rules! require_root {
    () => {
        $crate::skip_if!($crate::root_unavailable())
    };
}

/// What a function returns when [`skip_if!`] or [`require_root!`] skips it.
pub trait Skipped {
    /// The value for "skipped": `()`, `None`, or `Ok` of those.
    fn skipped() -> Self;
}

impl Skipped for () {
    fn skipped() -> Self {}
}

impl<T> Skipped for Option<T> {
    fn skipped() -> Self {
        None
    }
}

impl<T: Skipped, E> Skipped for Result<T, E> {
    fn skipped() -> Self {
        Ok(T::skipped())
    }
}

/// Prints the skip line for the current test.
pub fn skip(reason: &str) {
    let name = std::thread::current().name().unwrap_or("?").to_string();
    println!("PATCHBAY-SKIP: {name}: {reason}");
    eprintln!("PATCHBAY-SKIP: {name}: {reason}");
}

/// Whether we run as root; tests that need it skip otherwise.
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Why a lab cannot be created here, if it cannot: not root.
pub fn root_unavailable() -> Option<&'static str> {
    (!is_root())
        .then_some("needs root (CAP_SYS_ADMIN + CAP_NET_ADMIN) to create network namespaces")
}

/// Whether `tool` is on the `PATH` (`command -v`).
pub fn have_tool(tool: &str) -> bool {
    std::process::Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// The `how` of [`tools_unavailable`] for the tools `cargo xtask test` installs (its
/// `PACKAGES`).
pub const XTASK_INSTALLS: &str = "cargo xtask test installs it through apt";

/// Why a test that runs `tools` cannot run here, if it cannot: the first of them that is not
/// installed, as "`tool` is not installed (`how`)", where `how` says how to install it.
pub fn tools_unavailable(tools: &[&str], how: &str) -> Option<String> {
    tools
        .iter()
        .find(|t| !have_tool(t))
        .map(|t| format!("`{t}` is not installed ({how})"))
}

/// Why this kernel cannot run patchbay's eBPF timer engine, if it cannot:
/// no root, no cgroup v2, or no `bpf_get_netns_cookie` in `sock_ops`
/// (Linux 5.15+), which compression needs to scope itself to lab
/// namespaces. Probed for real (`patchbay::bpf::probe`), never guessed from
/// the version.
pub fn compression_unavailable() -> Option<String> {
    if !is_root() {
        return Some("needs root (CAP_BPF/CAP_SYS_ADMIN) to load eBPF programs".into());
    }
    if patchbay::doctor::cgroup2_mount().is_none() {
        return Some("no cgroup v2 mount: compression attaches eBPF sock_ops to a cgroup".into());
    }
    let p = patchbay::bpf::probe();
    if !p.netns_cookie_in_sock_ops {
        return Some(
            "this kernel has no bpf_get_netns_cookie in sock_ops (Linux 5.15+), so timer compression cannot be scoped to lab namespaces and is refused"
                .into(),
        );
    }
    if !p.engine {
        return Some(format!("the eBPF engine cannot load here: {:?}", p.errors));
    }
    None
}

/// Whether `TCP_BPF_RTO_MIN` accepts an RTO minimum of `rto_min_us` on a kernel with this
/// `hz`: the kernel rounds up to jiffies (`usecs_to_jiffies`) and refuses fewer than two
/// (`TCP_TIMEOUT_MIN`). Pure.
pub fn rto_min_accepted(hz: u32, rto_min_us: u32) -> bool {
    (u64::from(rto_min_us) * u64::from(hz)).div_ceil(1_000_000) >= 2
}

/// Why this kernel cannot lower the RTO minimum to `rto_min_us`, if it cannot: its jiffy is
/// too coarse (two jiffies are longer). HZ is measured (`patchbay::compress::probe_hz`),
/// not guessed. This happens in User-Mode Linux, whose HZ is fixed at 100 (20 ms floor); the
/// Debian kernels (HZ=250) accept 8 ms.
pub fn rto_min_unavailable(rto_min_us: u32) -> anyhow::Result<Option<String>> {
    let (hz, _) = patchbay::compress::probe_hz()?;
    if rto_min_accepted(hz, rto_min_us) {
        return Ok(None);
    }
    let uml = if std::env::var_os("PATCHBAY_VT").is_some() {
        " (fixed in User-Mode Linux)"
    } else {
        ""
    };
    Ok(Some(format!(
        "HZ={hz}{uml}: TCP_BPF_RTO_MIN refuses less than 2 jiffies ({} ms), so an RTO minimum of {} ms cannot be set",
        2000 / hz.max(1),
        f64::from(rto_min_us) / 1000.0
    )))
}

#[cfg(test)]
mod tests {
    use super::rto_min_accepted;

    fn unit(why: Option<&str>, ran: &mut bool) {
        skip_if!(why);
        *ran = true;
    }

    fn result(why: Option<String>) -> Result<(), String> {
        skip_if!(why);
        Err("ran on".into())
    }

    fn option(why: Option<&str>) -> anyhow::Result<Option<u8>> {
        skip_if!(why);
        Ok(Some(1))
    }

    #[test]
    fn skip_if_returns_the_skipped_value_only_with_a_reason() {
        assert_eq!(result(Some("no tool".into())), Ok(()));
        assert_eq!(result(None), Err("ran on".into()));
        assert_eq!(option(Some("no tool")).unwrap(), None);
        assert_eq!(option(None).unwrap(), Some(1));
        let mut ran = false;
        unit(Some("no tool"), &mut ran);
        assert!(!ran);
        unit(None, &mut ran);
        assert!(ran);
    }

    #[test]
    fn rto_min_needs_two_jiffies() {
        assert!(!rto_min_accepted(100, 10_000), "1 jiffy at HZ=100");
        assert!(rto_min_accepted(100, 20_000));
        assert!(rto_min_accepted(250, 10_000), "rounds up to 3 jiffies");
        assert!(rto_min_accepted(250, 8_000));
        assert!(rto_min_accepted(250, 4_001), "rounds up to 2 jiffies");
        assert!(!rto_min_accepted(250, 4_000));
        assert!(rto_min_accepted(1000, 2_000));
        assert!(!rto_min_accepted(1000, 1_000));
    }
}
