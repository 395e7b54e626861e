//! Mobility steps of lab files: `replug`, `add-iface`, `remove-iface`,
//! `default-route`, `renew` and `remove-node` (see `docs/toml.md`). They
//! call the library's run-time mobility ([`crate::native::Device::replug_iface`]
//! and friends); [`super::mobility_check`] follows them through the
//! topology before the lab is built.

/// A mobility step, once validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MobilityStep {
    /// Move `device.iface` to `router`'s LAN (`replug = "D.I"`, `to = "R"`).
    Replug {
        /// The device.
        device: String,
        /// Its interface.
        iface: String,
        /// The router it moves to.
        router: String,
    },
    /// Add interface `iface` on `router`'s LAN (`add-iface = "D.I"`, `to = "R"`).
    AddIface {
        /// The device.
        device: String,
        /// The new interface's name.
        iface: String,
        /// The router whose LAN it joins.
        router: String,
    },
    /// Remove an interface (`remove-iface = "D.I"`).
    RemoveIface {
        /// The device.
        device: String,
        /// The interface.
        iface: String,
    },
    /// Point the default routes at an interface (`default-route = "D.I"`).
    DefaultRoute {
        /// The device.
        device: String,
        /// The interface.
        iface: String,
    },
    /// Give an interface a new address on its LAN (`renew = "D.I"`).
    Renew {
        /// The device.
        device: String,
        /// The interface.
        iface: String,
    },
    /// Remove a device or router (`remove-node = "N"`).
    RemoveNode(String),
}

impl MobilityStep {
    /// The step's key, as in the lab file (`replug`, `add-iface`, ...).
    pub fn key(&self) -> &'static str {
        match self {
            Self::Replug { .. } => "replug",
            Self::AddIface { .. } => "add-iface",
            Self::RemoveIface { .. } => "remove-iface",
            Self::DefaultRoute { .. } => "default-route",
            Self::Renew { .. } => "renew",
            Self::RemoveNode(_) => "remove-node",
        }
    }

    /// The node the step changes.
    pub fn node(&self) -> &str {
        match self {
            Self::Replug { device, .. }
            | Self::AddIface { device, .. }
            | Self::RemoveIface { device, .. }
            | Self::DefaultRoute { device, .. }
            | Self::Renew { device, .. } => device,
            Self::RemoveNode(n) => n,
        }
    }
}
