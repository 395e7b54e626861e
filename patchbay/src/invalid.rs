//! Typed invalid-lab errors: which node, which field, and why a lab
//! description or request was refused. Pure data: no kernel, no I/O.

/// Why a lab description or request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum InvalidReason {
    /// It names something that does not exist (a node, interface, router,
    /// region, variable, …).
    Unknown,
    /// A name is used twice where it must be unique.
    Duplicate,
    /// A required part is missing (no interface, no `cmd`, no output
    /// directory, …).
    Missing,
    /// A value is out of its range or malformed.
    OutOfRange,
    /// Two settings exclude each other, or the current state forbids the
    /// change (e.g. removing the interface that carries the default route).
    Conflict,
    /// The setting does not apply to this kind of node, or this process
    /// cannot provide it.
    Unsupported,
    /// The thing named is gone: removed, or its lab was dropped.
    Gone,
}

/// An invalid lab description or request, refused before touching the
/// kernel: the node and the field concerned, the reason, and a message
/// that names the problem and the fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
#[error("{message}")]
pub struct InvalidLab {
    /// The node concerned, when one is.
    pub node: Option<String>,
    /// The field or setting concerned, named as in the builder or the lab
    /// file (`"mtu"`, `"iface"`, `"upstream"`, `"time_scale"`, …).
    pub field: &'static str,
    /// Why it was refused.
    pub reason: InvalidReason,
    /// What is wrong and how to fix it.
    pub message: String,
}

impl InvalidLab {
    /// An invalid `field` for `reason`, explained by `message`.
    pub(crate) fn new(
        field: &'static str,
        reason: InvalidReason,
        message: impl Into<String>,
    ) -> Self {
        InvalidLab {
            node: None,
            field,
            reason,
            message: message.into(),
        }
    }

    /// The same error, about `node`.
    #[must_use]
    pub(crate) fn node(mut self, node: impl Into<String>) -> Self {
        self.node = Some(node.into());
        self
    }
}

/// The names an unknown one could have been, for an error message: `"a", "b"`, or `none`.
pub(crate) fn known_names<S: AsRef<str>>(names: impl IntoIterator<Item = S>) -> String {
    let list: Vec<String> = names
        .into_iter()
        .map(|n| format!("{:?}", n.as_ref()))
        .collect();
    if list.is_empty() {
        "none".to_owned()
    } else {
        list.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_names_are_quoted_and_comma_separated() {
        assert_eq!(known_names(["isp", "home"]), r#""isp", "home""#);
        assert_eq!(known_names(Vec::<String>::new()), "none");
    }

    #[test]
    fn the_message_is_the_display_and_the_parts_stay_typed() {
        let e = InvalidLab::new("mtu", InvalidReason::OutOfRange, "MTU 9 is too small").node("r");
        assert_eq!(e.to_string(), "MTU 9 is too small");
        assert_eq!(e.node.as_deref(), Some("r"));
        assert_eq!((e.field, e.reason), ("mtu", InvalidReason::OutOfRange));
    }
}
