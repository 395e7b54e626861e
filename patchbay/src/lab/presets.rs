//! Router presets and regions on the builder: the hooks that apply
//! [`crate::native::RouterPreset`] to a [`RouterBuilder`].

use super::router::RouterBuilder;
use crate::nat::RouterPreset;

impl RouterBuilder {
    /// Applies a preset: NAT mode and timeouts, firewall, and IP support
    /// with its IPv6 mode (the LAN pool follows the NAT mode). Calls made
    /// after it (`.nat(..)`, `.firewall(..)`, `.conntrack(..)`,
    /// `.lan_kind(..)`, `.ip_support(..)`, `.nat_v6(..)`) override the
    /// preset's values. [`RouterPreset::IspV6`] is v6-only with NAT64 and so
    /// needs Debian's `tayga` and an IPv4 uplink.
    pub fn preset(mut self, preset: RouterPreset) -> Self {
        self.nat = preset.nat_config();
        self.firewall = preset.firewall();
        self.ip = preset.ip_support();
        self.nat_v6 = preset.nat_v6();
        self
    }
}
