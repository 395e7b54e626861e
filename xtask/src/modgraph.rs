//! `cargo xtask module-graph`: the library's module graph (which module refers to which) and
//! its import cycles, from the source text.
//!
//! A module is a file under `patchbay/src` (`lib.rs` the crate root, `a/mod.rs` and `a.rs`
//! the module `a`, `a/b.rs` the module `a::b`). An edge A → B is a path in A that names B:
//! `crate::…` anywhere in the file (use statements and qualified paths) and `super::…`
//! resolved against A's place. A module's ancestors and descendants are not counted: the
//! module tree links them by construction (a `mod.rs` declares its children, children use
//! their parent's items). A cycle is a set of two or more modules, none an ancestor of
//! another, that reach each other (Tarjan's strongly connected components).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use anyhow::{Context, Result, bail};

/// Options of `cargo xtask module-graph`.
#[derive(clap::Args, Debug)]
pub struct ModGraphArgs {
    /// Fail when the graph has a cycle (what `cargo xtask test` runs).
    #[arg(long)]
    pub check: bool,
}

type Graph = BTreeMap<String, BTreeSet<String>>;

pub fn run(args: &ModGraphArgs) -> Result<()> {
    let root = crate::test::workspace_root()?.join("patchbay/src");
    let files = sources(&root)?;
    let g = graph(&files);
    let cycles = cycles(&g);
    let edges: usize = g.values().map(BTreeSet::len).sum();
    println!(
        "module-graph: {} modules, {edges} edges between modules that are not ancestor and descendant, {} cycles",
        g.len(),
        cycles.len()
    );
    for c in &cycles {
        println!("  cycle: {}", c.join(" ⇄ "));
    }
    if args.check && !cycles.is_empty() {
        bail!(
            "{} import cycles in patchbay/src (listed above): move the shared items below both modules",
            cycles.len()
        );
    }
    Ok(())
}

/// Every `.rs` file under `dir`, as (module path, text).
fn sources(dir: &Path) -> Result<Vec<(String, String)>> {
    let mut out = vec![];
    walk(dir, dir, &mut out)?;
    Ok(out)
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<(String, String)>) -> Result<()> {
    for e in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let p = e?.path();
        if p.is_dir() {
            walk(root, &p, out)?;
        } else if p.extension().is_some_and(|x| x == "rs") {
            let rel = p.strip_prefix(root)?.to_string_lossy().replace('\\', "/");
            let text = std::fs::read_to_string(&p)?;
            out.push((module_of(&rel), code_only(&text)));
        }
    }
    Ok(())
}

/// The text without comments (`//` to the end of the line, doc comments included): a path
/// named in prose is no dependency.
fn code_only(text: &str) -> String {
    text.lines()
        .map(|l| l.find("//").map_or(l, |i| &l[..i]))
        .collect::<Vec<_>>()
        .join("\n")
}

/// `lab/node.rs` → `lab::node`, `lab/mod.rs` → `lab`, `lib.rs` → `crate`.
fn module_of(rel: &str) -> String {
    let rel = rel.trim_end_matches(".rs");
    let rel = rel.strip_suffix("/mod").unwrap_or(rel);
    match rel {
        "lib" | "main" => "crate".into(),
        r => r.replace('/', "::"),
    }
}

fn is_ancestor(a: &str, b: &str) -> bool {
    a == "crate" || b.starts_with(&format!("{a}::"))
}

/// The longest known module that `path` (segments after `crate::`) names.
fn target(path: &[&str], known: &BTreeSet<String>) -> Option<String> {
    (1..=path.len())
        .rev()
        .map(|n| path[..n].join("::"))
        .find(|m| known.contains(m))
}

fn graph(files: &[(String, String)]) -> Graph {
    let known: BTreeSet<String> = files.iter().map(|(m, _)| m.clone()).collect();
    let mut g = Graph::new();
    for (m, text) in files {
        let here: Vec<&str> = if m == "crate" {
            vec![]
        } else {
            m.split("::").collect()
        };
        let mut deps = BTreeSet::new();
        for (prefix, base) in [("crate::", vec![]), ("super::", parent(&here))] {
            for path in paths_after(text, prefix) {
                let mut full = base.clone();
                full.extend(path.iter().copied());
                if let Some(t) = target(&full, &known)
                    && t != *m
                    && !is_ancestor(&t, m)
                    && !is_ancestor(m, &t)
                {
                    deps.insert(t);
                }
            }
        }
        g.insert(m.clone(), deps);
    }
    g
}

/// The parent of a module file: for `a::b` (file a/b.rs) `super` is `a`.
fn parent<'a>(here: &[&'a str]) -> Vec<&'a str> {
    here.split_last().map_or(vec![], |(_, p)| p.to_vec())
}

/// The segments after each `prefix` in `text` (`crate::lab::node::Node` → lab, node, Node),
/// braces of use groups expanded one level (`crate::{a, b::c}`).
fn paths_after<'t>(text: &'t str, prefix: &str) -> Vec<Vec<&'t str>> {
    let mut out = vec![];
    let ident = |c: char| c.is_alphanumeric() || c == '_';
    for (i, _) in text.match_indices(prefix) {
        if text[..i].ends_with(|c: char| ident(c) || c == ':') {
            continue;
        }
        let rest = &text[i + prefix.len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let body = &group[..group.find('}').unwrap_or(group.len())];
            for item in body.split(',') {
                out.push(segments(item.trim()));
            }
        } else {
            out.push(segments(rest));
        }
    }
    out
}

fn segments(s: &str) -> Vec<&str> {
    let end = s
        .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
        .unwrap_or(s.len());
    s[..end].split("::").filter(|x| !x.is_empty()).collect()
}

/// Strongly connected components of two or more modules (Tarjan), each sorted.
fn cycles(g: &Graph) -> Vec<Vec<String>> {
    struct T<'g> {
        g: &'g Graph,
        index: BTreeMap<&'g str, usize>,
        low: BTreeMap<&'g str, usize>,
        stack: Vec<&'g str>,
        on: BTreeSet<&'g str>,
        out: Vec<Vec<String>>,
    }
    impl<'g> T<'g> {
        fn visit(&mut self, v: &'g str) {
            let i = self.index.len();
            self.index.insert(v, i);
            self.low.insert(v, i);
            self.stack.push(v);
            self.on.insert(v);
            for w in self.g.get(v).into_iter().flatten() {
                let w = w.as_str();
                if !self.index.contains_key(w) {
                    self.visit(w);
                    let lw = self.low[w];
                    let lv = self.low.get_mut(v).expect("visited");
                    *lv = (*lv).min(lw);
                } else if self.on.contains(w) {
                    let iw = self.index[w];
                    let lv = self.low.get_mut(v).expect("visited");
                    *lv = (*lv).min(iw);
                }
            }
            if self.low[v] == self.index[v] {
                let mut c = vec![];
                while let Some(w) = self.stack.pop() {
                    self.on.remove(w);
                    c.push(w.to_string());
                    if w == v {
                        break;
                    }
                }
                if c.len() > 1 {
                    c.sort();
                    self.out.push(c);
                }
            }
        }
    }
    let mut t = T {
        g,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: vec![],
        on: BTreeSet::new(),
        out: vec![],
    };
    for v in g.keys() {
        if !t.index.contains_key(v.as_str()) {
            t.visit(v);
        }
    }
    t.out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(fs: &[(&str, &str)]) -> Vec<(String, String)> {
        fs.iter()
            .map(|(p, t)| (module_of(p), code_only(t)))
            .collect()
    }

    #[test]
    fn finds_sibling_cycles_and_ignores_the_module_tree() {
        let g = graph(&files(&[
            ("lib.rs", "mod lab; pub use crate::lab::Lab;"),
            (
                "lab/mod.rs",
                "mod node; mod topo; use node::Node; pub struct Lab;",
            ),
            (
                "lab/node.rs",
                "use super::{topo::Topology, Lab};\n/// see crate::sys::netns",
            ),
            ("lab/topo.rs", "use crate::lab::node::Node;"),
            ("sys/netns.rs", "use crate::lab::Lab;"),
            ("sys/mod.rs", ""),
        ]));
        assert_eq!(
            g["lab::node"],
            ["lab::topo".to_string()].into(),
            "prose in comments is no edge"
        );
        assert!(
            g["lab"].is_empty(),
            "children are not edges: {:?}",
            g["lab"]
        );
        assert_eq!(g["sys::netns"], ["lab".to_string()].into());
        assert_eq!(
            cycles(&g),
            vec![vec!["lab::node".to_string(), "lab::topo".to_string()]]
        );
        let acyclic = graph(&files(&[
            ("a.rs", "use crate::b::X;"),
            ("b.rs", "pub struct X;"),
        ]));
        assert!(cycles(&acyclic).is_empty());
    }
}
