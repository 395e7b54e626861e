//! The programs a lab file runs, found without running anything: the
//! commands of its `run` steps (through `sh -c` strings, pipes, `$(...)`,
//! `timeout` and other wrappers) and the host tools its routers, links and
//! faults need (`nft`, `tc`, `tayga`). `patchbay run` checks them before it
//! builds the lab.

use std::collections::BTreeMap;

use super::schema::LabFile;
use super::step::Command;

/// Shell words that are not programs: keywords and the builtins of `sh`.
const NOT_PROGRAMS: &[&str] = &[
    "!", "{", "}", "if", "then", "else", "elif", "fi", "for", "in", "do", "done", "while", "until",
    "case", "esac", "function", "select", "cd", "echo", "printf", "test", "[", "true", "false",
    "read", "exit", "export", "set", "unset", "shift", "wait", "kill", "trap", "eval", ":", ".",
    "source", "return", "break", "continue", "local", "ulimit", "umask", "type", "alias",
    "getopts", "let", "declare", "pwd", "times", "hash", "jobs", "fg", "bg",
];

/// Words after which the next command word follows on the same line
/// (`timeout 3 nc ...`): the wrapper, and how many non-option arguments it
/// takes before the command.
const WRAPPERS: &[(&str, usize)] = &[
    ("timeout", 1),
    ("env", 0),
    ("nice", 0),
    ("setsid", 0),
    ("stdbuf", 0),
    ("exec", 0),
    ("command", 0),
    ("nohup", 0),
    ("time", 0),
    ("sudo", 0),
    ("ip", 0),
];

impl LabFile {
    /// The programs this lab runs, each with the first step (1-based) that
    /// runs it, or `None` for a host tool the lab itself needs: `nft` (NAT,
    /// firewalls, faults), `tc` (link conditions, region links), `tayga`
    /// (NAT64). Commands are read, not run: a program named by a variable
    /// (`$PROG`) is not found.
    pub(crate) fn programs(&self) -> BTreeMap<String, Option<usize>> {
        let mut out = BTreeMap::new();
        for (tool, needed) in self.host_tools() {
            if needed {
                out.insert(tool.to_string(), None);
            }
        }
        for (i, step) in self.steps.iter().enumerate() {
            let words = match &step.cmd {
                Some(Command::Shell(s)) => shell_programs(s),
                Some(Command::Argv(v)) => argv_programs(v),
                None => vec![],
            };
            for w in words {
                out.entry(w).or_insert(Some(i + 1));
            }
        }
        out
    }

    fn host_tools(&self) -> [(&'static str, bool); 3] {
        let routers = &self.routers;
        let nat64 = routers.iter().any(|r| {
            r.nat_v6 == Some(crate::NatV6Mode::Nat64)
                || (r.nat_v6.is_none()
                    && r.preset
                        .is_some_and(|p| p.nat_v6() == crate::NatV6Mode::Nat64))
        });
        let nft = routers.iter().any(|r| {
            r.nat.is_some_and(|n| n != crate::native::Nat::None)
                || r.preset.is_some()
                || r.firewall.is_some()
                || r.nat_v6.is_some_and(|m| m != crate::NatV6Mode::None)
                || r.block_icmp_frag_needed
        }) || self.devices.iter().any(|d| d.firewall.is_some())
            || self.steps.iter().any(|s| {
                s.blackhole.is_some()
                    || s.partition.is_some()
                    || s.break_region_link.is_some()
                    || s.flush_nat.is_some()
            });
        let tc = !self.regions.values().all(|r| r.links.is_empty())
            || self
                .devices
                .iter()
                .any(|d| d.ifaces.iter().any(|i| i.link.is_some()))
            || self.steps.iter().any(|s| s.link.is_some());
        [("nft", nft), ("tc", tc), ("tayga", nat64)]
    }
}

/// The programs of an argv command.
fn argv_programs(argv: &[String]) -> Vec<String> {
    let mut out = vec![];
    let mut words = argv.iter().map(String::as_str).peekable();
    while let Some(w) = words.next() {
        if matches!(base(w), "sh" | "bash" | "dash") {
            out.push(w.to_string());
            // `sh -c SCRIPT`: the script's programs.
            if words.peek() == Some(&"-c")
                && let (Some(_), Some(script)) = (words.next(), words.next())
            {
                out.extend(shell_programs(script));
            }
            return out;
        }
        match wrapped(w, &mut words) {
            Some(()) => out.push(w.to_string()),
            None => {
                if is_program(w) {
                    out.push(w.to_string());
                }
                return out;
            }
        }
    }
    out
}

fn base(w: &str) -> &str {
    w.rsplit('/').next().unwrap_or(w)
}

fn is_program(w: &str) -> bool {
    !w.is_empty() && !w.contains('$') && !w.contains('=') && !NOT_PROGRAMS.contains(&w)
}

/// When `w` is a wrapper, skips its options and arguments (the command
/// comes next) and returns `Some`.
fn wrapped<'a>(
    w: &str,
    words: &mut std::iter::Peekable<impl Iterator<Item = &'a str> + Clone>,
) -> Option<()> {
    let &(_, args) = WRAPPERS.iter().find(|(name, _)| *name == base(w))?;
    if base(w) == "ip" {
        // `ip netns exec NS CMD` only; any other `ip` is the program itself.
        let rest: Vec<&str> = words.clone().take(3).collect();
        if rest.first() != Some(&"netns") || rest.get(1) != Some(&"exec") {
            return None;
        }
        words.nth(2);
        return Some(());
    }
    let mut left = args;
    while let Some(&next) = words.peek() {
        if next.starts_with('-') || next.contains('=') {
            words.next();
            // `nice -n 5`, `stdbuf -o 0`: an option's separate value.
            if matches!(next, "-n" | "-o" | "-e" | "-i" | "-s" | "-k" | "-u")
                && words.peek().is_some_and(|v| !v.starts_with('-'))
            {
                words.next();
            }
        } else if left > 0 {
            left -= 1;
            words.next();
        } else {
            break;
        }
    }
    Some(())
}

/// Splits a shell string into simple commands' words: quotes are honoured,
/// and `|`, `&`, `;`, `(`, `)`, `` ` ``, `$(` and newlines end a command.
fn commands(s: &str) -> Vec<Vec<String>> {
    let mut cmds = vec![];
    let mut cur: Vec<String> = vec![];
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = s.chars().peekable();
    let end_word = |cur: &mut Vec<String>, word: &mut String, in_word: &mut bool| {
        if *in_word {
            cur.push(std::mem::take(word));
            *in_word = false;
        }
    };
    while let Some(c) = chars.next() {
        match c {
            '\'' | '"' => {
                in_word = true;
                for q in chars.by_ref() {
                    if q == c {
                        break;
                    }
                    word.push(q);
                }
            }
            '\\' => {
                in_word = true;
                if let Some(n) = chars.next() {
                    word.push(n);
                }
            }
            '$' if chars.peek() == Some(&'(') => {
                chars.next();
                end_word(&mut cur, &mut word, &mut in_word);
                cmds.push(std::mem::take(&mut cur));
            }
            '|' | '&' | ';' | '(' | ')' | '`' | '\n' => {
                end_word(&mut cur, &mut word, &mut in_word);
                cmds.push(std::mem::take(&mut cur));
            }
            c if c.is_whitespace() => end_word(&mut cur, &mut word, &mut in_word),
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    end_word(&mut cur, &mut word, &mut in_word);
    cmds.push(cur);
    cmds.retain(|c| !c.is_empty());
    cmds
}

/// The programs of a `sh -c` string.
fn shell_programs(s: &str) -> Vec<String> {
    let mut out = vec![];
    for cmd in commands(s) {
        // Leading assignments and redirections are not the command; neither
        // are the words after `for`, `case` and `in`.
        let mut words = cmd
            .iter()
            .map(String::as_str)
            .skip_while(|w| w.contains('=') || w.starts_with(['<', '>']) || w.ends_with('>'))
            .peekable();
        while let Some(w) = words.next() {
            if matches!(w, "for" | "case" | "select") {
                break;
            }
            if matches!(
                w,
                "if" | "then" | "else" | "elif" | "do" | "while" | "until" | "!" | "{"
            ) {
                continue;
            }
            if matches!(base(w), "sh" | "bash" | "dash") {
                out.extend(argv_programs(
                    &std::iter::once(w)
                        .chain(words.by_ref())
                        .map(str::to_string)
                        .collect::<Vec<_>>(),
                ));
                break;
            }
            if wrapped(w, &mut words).is_some() {
                out.push(w.to_string());
                continue;
            }
            if is_program(w) {
                out.push(w.to_string());
            }
            break;
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;

    fn sh(s: &str) -> Vec<String> {
        shell_programs(s)
    }

    #[test]
    fn shell_strings_yield_every_command_word() {
        assert_eq!(sh("nc -d -l 10.0.0.1 9000 | wc -c"), ["nc", "wc"]);
        assert_eq!(
            sh("head -c 2000000 /dev/zero | timeout 10 nc -N 1.2.3.4 9000"),
            ["head", "timeout", "nc"]
        );
        assert_eq!(
            sh(
                "for i in $(seq 100); do nc -z h 80 && nc -z h 8080 && exit 0; sleep 0.1; done; exit 1"
            ),
            ["seq", "nc", "nc", "sleep"]
        );
        assert_eq!(sh("cat /proc/sys/net/x"), ["cat"]);
        assert_eq!(sh("printf 'pong\\n' | nc -l -N 1.2.3.4 8000"), ["nc"]);
        assert_eq!(
            sh("FOO=1 python3 -m http.server 80 --bind 1.2.3.4"),
            ["python3"]
        );
        assert_eq!(sh("echo 'a | b; c' > /dev/null"), Vec::<String>::new());
        assert_eq!(sh("$PROG --x; `dig +short x`"), ["dig"]);
        assert_eq!(
            sh("nice -n 5 env A=b stdbuf -o0 tracepath x"),
            ["nice", "env", "stdbuf", "tracepath"]
        );
    }

    #[test]
    fn argv_commands_and_their_shells() {
        let v = |a: &[&str]| argv_programs(&a.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(v(&["dig", "+short", "@x", "web.lab"]), ["dig"]);
        assert_eq!(v(&["timeout", "3", "nc", "h", "8000"]), ["timeout", "nc"]);
        assert_eq!(
            v(&["sh", "-c", "printf 'pong\\n' | nc -l -N h 8000"]),
            ["sh", "nc"]
        );
        assert_eq!(v(&["ip", "-br", "addr"]), ["ip"]);
        assert_eq!(v(&["/usr/bin/curl", "-sS", "x"]), ["/usr/bin/curl"]);
    }

    #[test]
    fn a_lab_file_lists_its_programs_and_host_tools() {
        let f = LabFile::parse(
            "[[router]]\nname = \"r\"\nnat-v6 = \"nat64\"\n\
             [[device]]\nname = \"d\"\niface = [{ name = \"eth0\", router = \"r\", link = \"wifi\" }]\n\
             [[step]]\nrun = \"d\"\ncmd = [\"getent\", \"hosts\", \"x\"]\n\
             [[step]]\nrun = \"d\"\ncmd = \"dig +short x | grep -q 1\"\n\
             [[step]]\nrun = \"d\"\ncmd = [\"getent\", \"ahosts\", \"y\"]\n",
            std::path::Path::new("t.toml"),
        )
        .unwrap();
        let p = f.programs();
        assert_eq!(
            p.iter().map(|(k, v)| (k.as_str(), *v)).collect::<Vec<_>>(),
            [
                ("dig", Some(2)),
                ("getent", Some(1)),
                ("grep", Some(2)),
                ("nft", None),
                ("tayga", None),
                ("tc", None)
            ]
        );
    }

    /// Every example's programs, as `patchbay run` checks them.
    #[test]
    fn the_examples_programs() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
        let of = |name: &str| -> Vec<String> {
            LabFile::load(&dir.join(name))
                .unwrap()
                .programs()
                .into_keys()
                .collect()
        };
        assert_eq!(of("dns.toml"), ["dig", "getent"]);
        assert_eq!(of("flaky-loss.toml"), ["nc", "sh", "tc", "timeout"]);
        assert_eq!(
            of("mtu.toml"),
            ["head", "nc", "nft", "timeout", "tracepath", "wc"]
        );
        assert_eq!(of("nat-timeout.toml"), ["nft", "python3"]);
        assert_eq!(
            of("ipv6-nat64.toml"),
            ["curl", "getent", "nft", "ping", "python3", "tayga"]
        );
        assert_eq!(of("regions.toml"), ["nft", "ping", "tc"]);
    }
}
