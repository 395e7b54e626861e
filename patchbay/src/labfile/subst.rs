//! `${node.ip}`-style variables in step commands.

use std::collections::BTreeMap;

/// Variables available to steps, by name (`server.ip`, `server.eth0.ip6`, …).
#[derive(Debug, Clone, Default)]
pub struct Vars(pub BTreeMap<String, String>);

impl Vars {
    /// Collects the variables of every node of a lab:
    /// `NODE.ip`, `NODE.ip6`, `NODE.IFACE.ip`, `NODE.IFACE.ip6`, and for
    /// routers `NODE.lan_ip`, `NODE.lan_ip6`.
    pub fn from_lab(lab: &crate::native::Lab) -> Vars {
        let mut v = BTreeMap::new();
        for name in lab.node_names() {
            let Some(node) = lab.node(&name) else {
                continue;
            };
            if let Some(ip) = node.ip() {
                v.insert(format!("{name}.ip"), ip.to_string());
            }
            if let Some(ip) = node.ip6() {
                v.insert(format!("{name}.ip6"), ip.to_string());
            }
            for i in node.ifaces() {
                if let Some(ip) = i.ip {
                    v.insert(format!("{name}.{}.ip", i.name), ip.to_string());
                }
                if let Some(ip) = i.ip6 {
                    v.insert(format!("{name}.{}.ip6", i.name), ip.to_string());
                }
            }
            if let Some(r) = lab.router(&name) {
                if let Some(ip) = r.lan_ip() {
                    v.insert(format!("{name}.lan_ip"), ip.to_string());
                }
                if let Some(ip) = r.lan_ip6() {
                    v.insert(format!("{name}.lan_ip6"), ip.to_string());
                }
            }
        }
        Vars(v)
    }
}

/// A `${...}` that cannot be replaced.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SubstError {
    /// A `${` without its `}`.
    #[error("unterminated ${{...}} in {text:?}")]
    Unterminated {
        /// The text.
        text: String,
    },
    /// A name that is not a variable of the lab.
    #[error("unknown variable ${{{name}}} in {text:?}; available: {}", .available.join(", "))]
    Unknown {
        /// The name.
        name: String,
        /// The text.
        text: String,
        /// Some of the variables that exist (at most 12).
        available: Vec<String>,
    },
}

/// Replaces every `${name}` in `text`. `$$` stands for a literal `$`.
/// An unknown name is an error that lists what is available.
pub fn substitute(text: &str, vars: &Vars) -> Result<String, SubstError> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(body) = after.strip_prefix('{') {
            let end = body
                .find('}')
                .ok_or_else(|| SubstError::Unterminated { text: text.into() })?;
            let name = &body[..end];
            let value = vars.0.get(name).ok_or_else(|| SubstError::Unknown {
                name: name.into(),
                text: text.into(),
                available: vars.0.keys().take(12).cloned().collect(),
            })?;
            out.push_str(value);
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> Vars {
        Vars(BTreeMap::from([
            ("server.ip".into(), "198.19.0.2".into()),
            ("r.lan_ip".into(), "10.0.0.1".into()),
        ]))
    }

    #[test]
    fn substitutes_known_names() {
        assert_eq!(
            substitute("nc ${server.ip} 80", &vars()).unwrap(),
            "nc 198.19.0.2 80"
        );
        assert_eq!(
            substitute("${r.lan_ip}/${server.ip}", &vars()).unwrap(),
            "10.0.0.1/198.19.0.2"
        );
    }

    #[test]
    fn keeps_shell_dollars() {
        assert_eq!(
            substitute("echo $HOME $$ $1", &vars()).unwrap(),
            "echo $HOME $ $1"
        );
    }

    #[test]
    fn unknown_names_fail_with_the_list() {
        let e = substitute("${nope.ip}", &vars()).unwrap_err().to_string();
        assert!(
            e.contains("unknown variable ${nope.ip}") && e.contains("server.ip"),
            "{e}"
        );
        assert!(
            substitute("${server.ip", &vars())
                .unwrap_err()
                .to_string()
                .contains("unterminated")
        );
    }
}
