//! Router presets and regions on the builder: the hooks that apply
//! [`crate::RouterPreset`] to a [`RouterBuilder`].

use super::router::RouterBuilder;
use crate::nat::RouterPreset;

impl RouterBuilder {
    /// Applies a preset: NAT mode and timeouts, and firewall (the LAN pool follows the NAT mode).
    /// Calls made after it (`.nat(..)`, `.firewall(..)`, `.conntrack(..)`,
    /// `.lan_kind(..)`) override the preset's values.
    pub fn preset(mut self, preset: RouterPreset) -> Self {
        self.nat = preset.nat_config();
        self.firewall = preset.firewall();
        self
    }
}
