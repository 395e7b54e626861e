//! Helpers below every node builder: interface carriers and MTU checks.

use crate::error::{Error, Result};
use crate::sys::netlink;

/// The smallest MTU IPv6 allows on a link (RFC 8200).
pub const IPV6_MIN_MTU: u32 = 1280;
/// The smallest MTU IPv4 allows (RFC 791).
pub const IPV4_MIN_MTU: u32 = 68;
/// The largest MTU a veth accepts.
pub const MAX_MTU: u32 = 65535;

/// Checks an MTU for a link that carries IPv6 (`v6`), naming the link.
pub(crate) fn check_mtu(link: &str, mtu: u32, v6: Option<std::net::Ipv6Addr>) -> Result<()> {
    if let Some(a) = v6
        && mtu < IPV6_MIN_MTU
    {
        return Err(Error::invalid(
            "mtu",
            crate::InvalidReason::OutOfRange,
            format!(
                "MTU {mtu} on {link} is below {IPV6_MIN_MTU}, the IPv6 minimum (RFC 8200), and {link} carries IPv6 ({a}): use an MTU of at least {IPV6_MIN_MTU}"
            ),
        ));
    }
    if !(IPV4_MIN_MTU..=MAX_MTU).contains(&mtu) {
        return Err(Error::invalid(
            "mtu",
            crate::InvalidReason::OutOfRange,
            format!("MTU {mtu} on {link} is out of range: use {IPV4_MIN_MTU}..={MAX_MTU}"),
        ));
    }
    Ok(())
}

/// Runs the link watcher for freshly connected interfaces so they can send
/// at once (see [`netlink::sync_carrier`]). Failures only cost the delay the
/// kernel would have imposed anyway, so they are logged, not returned.
pub(crate) fn sync_carriers(names: &[&str]) {
    for n in names {
        if let Err(e) = netlink::sync_carrier(n) {
            tracing::debug!("ETHTOOL_GLINK on {n} failed: {e}");
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;

    #[test]
    fn mtu_checks_name_the_link_and_the_ipv6_minimum() {
        let v6 = Some("2001:db8:1:1::2".parse().unwrap());
        let e = check_mtu("c.eth0", 1200, v6).unwrap_err().to_string();
        assert!(
            e.contains("c.eth0") && e.contains("1280") && e.contains("2001:db8:1:1::2"),
            "{e}"
        );
        assert!(check_mtu("c.eth0", 1200, None).is_ok());
        assert!(check_mtu("c.eth0", 60, None).is_err());
        assert!(check_mtu("c.eth0", 1400, v6).is_ok());
    }
}
