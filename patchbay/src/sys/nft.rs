//! Applying nftables rulesets inside a namespace with the real `nft` tool
//! (through [`crate::sys::cmd`], the choke point for external commands).
//!
//! Rulesets are applied atomically with `nft -f -`. Every table patchbay
//! owns is replaced as a whole: the rendered text starts with
//! `add table …` + `delete table …`, so applying twice is idempotent and a
//! failed apply leaves the previous table in place.
//!
//! Requires the `nft` binary (Debian: `nftables`) and a kernel with
//! `CONFIG_NF_TABLES` (plus `NF_TABLES_INET`, `NF_TABLES_NETDEV`, `NFT_NAT`,
//! `NFT_CT`, `NFT_MASQ`, `NFT_REJECT` depending on the rules), Linux 5.4+.

use crate::sys::cmd::{self, CmdError};
use crate::sys::netns::Netns;

/// A failed nftables operation.
#[derive(Debug, thiserror::Error)]
pub enum NftError {
    /// `nft` rejected the ruleset.
    #[error(
        "nft rejected the {what} ruleset in {ns}: {stderr}{}\n--- ruleset ---\n{ruleset}",
        rule_note(.rule)
    )]
    Rejected {
        /// What the ruleset was for (e.g. `NAT of router home`).
        what: String,
        /// Namespace.
        ns: String,
        /// The rule (line of the ruleset) nft complained about, if it said.
        rule: Option<String>,
        /// nft's stderr.
        stderr: String,
        /// The whole ruleset fed to nft.
        ruleset: String,
    },
    /// `nft` could not be run at all (not installed, namespace gone).
    #[error("cannot apply the {what} ruleset: {source}")]
    Cmd {
        /// What the ruleset was for.
        what: String,
        /// The command failure.
        #[source]
        source: CmdError,
    },
}

fn rule_note(rule: &Option<String>) -> String {
    match rule {
        Some(r) => format!("\n  failing rule: {}", r.trim()),
        None => String::new(),
    }
}

/// The ruleset line nft's error names (`/dev/stdin:LINE:COL…: Error: …`).
pub fn failing_line(stderr: &str, ruleset: &str) -> Option<String> {
    let line: usize = stderr.lines().find_map(|l| {
        let rest = l.split_once("stdin:")?.1;
        rest.split(':').next()?.parse().ok()
    })?;
    ruleset
        .lines()
        .nth(line.checked_sub(1)?)
        .map(str::to_string)
}

/// Feeds `ruleset` to `nft -f -` inside `ns`. `what` names the ruleset in
/// errors.
pub async fn apply(ns: &Netns, what: &str, ruleset: String) -> Result<(), NftError> {
    match cmd::run(ns, "nft", ["-f", "-"], Some(ruleset.clone())).await {
        Ok(_) => Ok(()),
        Err(CmdError::Failed { ns, stderr, .. }) => Err(NftError::Rejected {
            what: what.to_string(),
            ns,
            rule: failing_line(&stderr, &ruleset),
            stderr,
            ruleset,
        }),
        Err(source) => Err(NftError::Cmd {
            what: what.to_string(),
            source,
        }),
    }
}

/// The text that (re)creates `family name` from scratch: an idempotent
/// removal of any previous version followed by `body`, all in one
/// transaction.
pub fn replace_table(family: &str, name: &str, body: &str) -> String {
    format!("add table {family} {name}\ndelete table {family} {name}\n{body}")
}

/// The text that removes `family name` if it exists.
pub fn remove_table(family: &str, name: &str) -> String {
    format!("add table {family} {name}\ndelete table {family} {name}\n")
}

#[cfg(test)]
mod tests {
    #[test]
    fn finds_the_failing_line() {
        let rs = "table ip t {\n  chain c {\n    bogus rule\n  }\n}\n";
        let err =
            "/dev/stdin:3:5-9: Error: syntax error, unexpected string\n    bogus rule\n    ^^^^^";
        assert_eq!(
            super::failing_line(err, rs).as_deref(),
            Some("    bogus rule")
        );
        assert_eq!(super::failing_line("Error: something", rs), None);
    }
}
