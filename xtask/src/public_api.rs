//! `cargo xtask public-api [--bless]`: the library's public surface, listed from rustdoc's JSON
//! and compared with the checked-in `patchbay/public-api.txt`.
//!
//! rustdoc's JSON output needs nightly (`-Z unstable-options --output-format json`). The
//! listing is one line per public item (modules, types, fields, variants, functions and
//! methods with their signatures, trait impls), sorted, so a change to the surface is a
//! one-line diff in review. The JSON is read generically (serde_json values), which keeps this
//! independent of rustdoc's format version.

use std::collections::{BTreeSet, HashSet};
use std::fs;
use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};
use serde_json::Value;

/// The checked-in listing, relative to the repository root.
const LISTING: &str = "patchbay/public-api.txt";

/// Options of `cargo xtask public-api`.
#[derive(clap::Args, Debug)]
pub struct PublicApiArgs {
    /// Write the current listing to patchbay/public-api.txt instead of comparing.
    #[arg(long, conflicts_with = "from_json")]
    pub bless: bool,
    /// Print the listing of another crate's rustdoc JSON (`cargo +nightly rustdoc --lib --
    /// -Z unstable-options --output-format json`) instead, with the same rules: to compare
    /// surfaces, e.g. upstream patchbay's.
    #[arg(long, value_name = "FILE")]
    pub from_json: Option<std::path::PathBuf>,
}

/// Runs `cargo xtask public-api`.
pub fn run(args: &PublicApiArgs) -> Result<()> {
    if let Some(json) = &args.from_json {
        let lines = listing_of(json)?;
        for l in &lines {
            println!("{l}");
        }
        eprintln!(
            "public-api: {} public items in {}",
            lines.len(),
            json.display()
        );
        return Ok(());
    }
    let root = crate::test::workspace_root()?;
    let current = listing(&root)?;
    let path = root.join(LISTING);
    if args.bless {
        fs::write(&path, &current).with_context(|| format!("writing {}", path.display()))?;
        println!(
            "public-api: wrote {} ({} items)",
            path.display(),
            current.lines().count()
        );
        return Ok(());
    }
    let committed = fs::read_to_string(&path).with_context(|| {
        format!(
            "reading {} (create it with `cargo xtask public-api --bless`)",
            path.display()
        )
    })?;
    if committed == current {
        println!(
            "public-api: {} public items, identical to {LISTING}",
            current.lines().count()
        );
        return Ok(());
    }
    let old: BTreeSet<&str> = committed.lines().collect();
    let new: BTreeSet<&str> = current.lines().collect();
    for gone in old.difference(&new) {
        println!("- {gone}");
    }
    for added in new.difference(&old) {
        println!("+ {added}");
    }
    bail!(
        "the public API differs from {LISTING} (lines above: - removed, + added); if the change is deliberate, run `cargo xtask public-api --bless` and commit the listing"
    )
}

/// The current listing: rustdoc JSON of the patchbay library, rendered.
fn listing(root: &Path) -> Result<String> {
    let target = root.join("target").join("public-api");
    let mut cmd = crate::ebpf::clean_command("cargo");
    cmd.current_dir(root)
        .args([
            "+nightly",
            "rustdoc",
            "-p",
            "patchbay",
            "--lib",
            // With upstream's optional `Device::record_iroh_metrics`.
            "--features",
            "iroh-metrics",
            "--target-dir",
        ])
        .arg(&target)
        .args(["--", "-Z", "unstable-options", "--output-format", "json"]);
    run_quiet(&mut cmd)?;
    let lines = listing_of(&target.join("doc").join("patchbay.json"))?;
    Ok(lines.into_iter().map(|l| l + "\n").collect())
}

/// The listing of a rustdoc JSON file: its public items, one line each, sorted.
fn listing_of(json: &Path) -> Result<BTreeSet<String>> {
    let text = fs::read_to_string(json).with_context(|| format!("reading {}", json.display()))?;
    let doc: Value = serde_json::from_str(&text)
        .with_context(|| format!("parsing {} as rustdoc JSON", json.display()))?;
    render(&doc)
}

fn run_quiet(cmd: &mut Command) -> Result<()> {
    let out = cmd.output().with_context(|| format!("spawning {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}); it needs the nightly toolchain (rustup toolchain install nightly):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// Every public item of the crate, one line each, sorted.
pub fn render(doc: &Value) -> Result<BTreeSet<String>> {
    let root = key(&doc["root"]).context("rustdoc JSON has no root")?;
    let mut w = Walker {
        index: doc["index"]
            .as_object()
            .context("rustdoc JSON has no index")?,
        out: BTreeSet::new(),
        seen: HashSet::new(),
    };
    w.module(&root, "patchbay");
    Ok(w.out)
}

/// An item id as an index key (ids are strings in older formats, numbers in newer ones).
fn key(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

struct Walker<'a> {
    index: &'a serde_json::Map<String, Value>,
    out: BTreeSet<String>,
    /// (item, path) pairs already listed: guards against re-export cycles.
    seen: HashSet<(String, String)>,
}

impl Walker<'_> {
    fn item(&self, id: &str) -> Option<&Value> {
        self.index.get(id)
    }

    fn module(&mut self, id: &str, path: &str) {
        let Some(m) = self.item(id) else { return };
        let items: Vec<String> = m["inner"]["module"]["items"]
            .as_array()
            .map(|a| a.iter().filter_map(key).collect())
            .unwrap_or_default();
        for child in items {
            let Some(it) = self.item(&child).cloned() else {
                continue;
            };
            if let Some(u) = it["inner"].get("use") {
                self.reexport(u, path);
            } else if is_public(&it) {
                let name = it["name"].as_str().unwrap_or("_");
                self.emit(&child, &format!("{path}::{name}"));
            }
        }
    }

    fn reexport(&mut self, u: &Value, path: &str) {
        let target = u.get("id").and_then(key);
        let glob = u["is_glob"].as_bool().unwrap_or(false);
        match target {
            Some(t) if self.item(&t).is_some() => {
                if glob {
                    self.module(&t, path);
                } else {
                    let name = u["name"].as_str().unwrap_or("_");
                    self.emit(&t, &format!("{path}::{name}"));
                }
            }
            _ => {
                let source = u["source"].as_str().unwrap_or("?");
                let star = if glob { "::*" } else { "" };
                self.out
                    .insert(format!("pub use {path}::{{{source}{star}}} (external)"));
            }
        }
    }

    fn emit(&mut self, id: &str, path: &str) {
        if !self.seen.insert((id.to_string(), path.to_string())) {
            return;
        }
        let Some(it) = self.item(id).cloned() else {
            return;
        };
        let Some((kind, inner)) = it["inner"].as_object().and_then(|o| o.iter().next()) else {
            return;
        };
        let generics = render_generics(&inner["generics"]);
        match kind.as_str() {
            "module" => {
                self.out.insert(format!("pub mod {path}"));
                self.module(id, path);
            }
            "struct" => {
                self.out.insert(format!("pub struct {path}{generics}"));
                let s = &inner["kind"];
                for f in ids(&s["plain"]["fields"]).chain(ids(&s["tuple"])) {
                    self.field(&f, path);
                }
                self.impls(&inner["impls"], path);
            }
            "union" => {
                self.out.insert(format!("pub union {path}{generics}"));
                self.impls(&inner["impls"], path);
            }
            "enum" => {
                self.out.insert(format!("pub enum {path}{generics}"));
                for v in ids(&inner["variants"]) {
                    self.variant(&v, path);
                }
                self.impls(&inner["impls"], path);
            }
            "trait" => {
                self.out.insert(format!("pub trait {path}{generics}"));
                for i in ids(&inner["items"]) {
                    if let Some(m) = self.item(&i).cloned() {
                        let name = m["name"].as_str().unwrap_or("_");
                        self.member(&m, &format!("{path}::{name}"));
                    }
                }
            }
            "function" => {
                self.out.insert(format!("pub {}", render_fn(path, inner)));
            }
            "constant" => {
                let ty = render_type(&inner["type"]);
                self.out.insert(format!("pub const {path}: {ty}"));
            }
            "static" => {
                let ty = render_type(&inner["type"]);
                self.out.insert(format!("pub static {path}: {ty}"));
            }
            "type_alias" => {
                let ty = render_type(&inner["type"]);
                self.out.insert(format!("pub type {path}{generics} = {ty}"));
            }
            "macro" | "proc_macro" => {
                self.out.insert(format!("pub macro {path}!"));
            }
            other => {
                self.out.insert(format!("pub {other} {path}"));
            }
        }
    }

    fn field(&mut self, id: &str, owner: &str) {
        let Some(f) = self.item(id) else { return };
        if !is_public(f) {
            return;
        }
        let name = f["name"].as_str().unwrap_or("_");
        let ty = render_type(&f["inner"]["struct_field"]);
        self.out.insert(format!("pub field {owner}.{name}: {ty}"));
    }

    fn variant(&mut self, id: &str, owner: &str) {
        let Some(v) = self.item(id) else { return };
        let name = v["name"].as_str().unwrap_or("_");
        let kind = &v["inner"]["variant"]["kind"];
        let shape = if let Some(t) = kind.get("tuple") {
            let tys: Vec<String> = ids(t)
                .map(|f| {
                    render_type(
                        &self
                            .item(&f)
                            .map_or(Value::Null, |x| x["inner"]["struct_field"].clone()),
                    )
                })
                .collect();
            format!("({})", tys.join(", "))
        } else if let Some(s) = kind.get("struct") {
            let fs: Vec<String> = ids(&s["fields"])
                .filter_map(|f| {
                    let x = self.item(&f)?;
                    Some(format!(
                        "{}: {}",
                        x["name"].as_str().unwrap_or("_"),
                        render_type(&x["inner"]["struct_field"])
                    ))
                })
                .collect();
            format!(" {{ {} }}", fs.join(", "))
        } else {
            String::new()
        };
        self.out
            .insert(format!("pub variant {owner}::{name}{shape}"));
    }

    fn impls(&mut self, list: &Value, owner: &str) {
        for i in ids(list) {
            let Some(imp) = self.item(&i).cloned() else {
                continue;
            };
            let inner = &imp["inner"]["impl"];
            if inner["is_synthetic"].as_bool() == Some(true) || !inner["blanket_impl"].is_null() {
                continue;
            }
            match inner.get("trait").filter(|t| !t.is_null()) {
                Some(t) => {
                    let neg = if inner["is_negative"].as_bool() == Some(true) {
                        "!"
                    } else {
                        ""
                    };
                    self.out
                        .insert(format!("impl {neg}{} for {owner}", render_path(t)));
                }
                None => {
                    for m in ids(&inner["items"]) {
                        let Some(item) = self.item(&m).cloned() else {
                            continue;
                        };
                        if is_public(&item) {
                            let name = item["name"].as_str().unwrap_or("_");
                            self.member(&item, &format!("{owner}::{name}"));
                        }
                    }
                }
            }
        }
    }

    fn member(&mut self, item: &Value, path: &str) {
        let Some((kind, inner)) = item["inner"].as_object().and_then(|o| o.iter().next()) else {
            return;
        };
        let line = match kind.as_str() {
            "function" => format!("pub {}", render_fn(path, inner)),
            "assoc_const" | "constant" => {
                format!("pub const {path}: {}", render_type(&inner["type"]))
            }
            "assoc_type" => format!("pub type {path}"),
            other => format!("pub {other} {path}"),
        };
        self.out.insert(line);
    }
}

fn is_public(item: &Value) -> bool {
    item["visibility"].as_str() == Some("public")
}

fn ids(v: &Value) -> impl Iterator<Item = String> + '_ {
    v.as_array().into_iter().flatten().filter_map(key)
}

fn render_fn(path: &str, f: &Value) -> String {
    let h = &f["header"];
    let mut q = String::new();
    for (flag, word) in [
        ("is_const", "const "),
        ("is_async", "async "),
        ("is_unsafe", "unsafe "),
    ] {
        if h[flag].as_bool() == Some(true) {
            q.push_str(word);
        }
    }
    let sig = &f["sig"];
    let args: Vec<String> = sig["inputs"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            let name = p[0].as_str().unwrap_or("_");
            let ty = render_type(&p[1]);
            if name == "self" {
                match ty.as_str() {
                    "Self" => "self".to_string(),
                    "&Self" => "&self".to_string(),
                    "&mut Self" => "&mut self".to_string(),
                    _ => format!("self: {ty}"),
                }
            } else {
                format!("{name}: {ty}")
            }
        })
        .collect();
    let out = match &sig["output"] {
        Value::Null => String::new(),
        t => format!(" -> {}", render_type(t)),
    };
    format!(
        "{q}fn {path}{}({}){out}",
        render_generics(&f["generics"]),
        args.join(", ")
    )
}

fn render_generics(g: &Value) -> String {
    let params: Vec<String> = g["params"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| {
            // `impl Trait` arguments show up as synthetic type parameters.
            p["kind"]["type"]["is_synthetic"].as_bool() != Some(true)
        })
        .map(|p| {
            let name = p["name"].as_str().unwrap_or("_").to_string();
            let bounds = bounds(&p["kind"]["type"]["bounds"]);
            if bounds.is_empty() {
                name
            } else {
                format!("{name}: {bounds}")
            }
        })
        .collect();
    if params.is_empty() {
        String::new()
    } else {
        format!("<{}>", params.join(", "))
    }
}

fn bounds(b: &Value) -> String {
    b.as_array()
        .into_iter()
        .flatten()
        .map(|x| {
            if let Some(t) = x.get("trait_bound") {
                render_path(&t["trait"])
            } else if let Some(l) = x.get("outlives") {
                l.as_str().unwrap_or("'_").to_string()
            } else {
                "_".to_string()
            }
        })
        .collect::<Vec<_>>()
        .join(" + ")
}

fn render_path(p: &Value) -> String {
    let name = p["path"]
        .as_str()
        .or_else(|| p["name"].as_str())
        .unwrap_or("_")
        .to_string();
    let args = &p["args"];
    if let Some(a) = args.get("angle_bracketed") {
        let mut parts: Vec<String> = a["args"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|g| {
                if let Some(t) = g.get("type") {
                    render_type(t)
                } else if let Some(l) = g.get("lifetime") {
                    l.as_str().unwrap_or("'_").to_string()
                } else if let Some(c) = g.get("const") {
                    c["expr"].as_str().unwrap_or("_").to_string()
                } else {
                    "_".to_string()
                }
            })
            .collect();
        for c in a["constraints"].as_array().into_iter().flatten() {
            let n = c["name"].as_str().unwrap_or("_");
            let rhs = c["binding"]["equality"]["type"].clone();
            if rhs.is_null() {
                parts.push(format!("{n}: {}", bounds(&c["binding"]["constraint"])));
            } else {
                parts.push(format!("{n} = {}", render_type(&rhs)));
            }
        }
        if parts.is_empty() {
            name
        } else {
            format!("{name}<{}>", parts.join(", "))
        }
    } else if let Some(p) = args.get("parenthesized") {
        let ins: Vec<String> = p["inputs"]
            .as_array()
            .into_iter()
            .flatten()
            .map(render_type)
            .collect();
        let out = match &p["output"] {
            Value::Null => String::new(),
            t => format!(" -> {}", render_type(t)),
        };
        format!("{name}({}){out}", ins.join(", "))
    } else {
        name
    }
}

/// A type, rendered close to how it is written in source.
fn render_type(t: &Value) -> String {
    let Some((kind, v)) = t.as_object().and_then(|o| o.iter().next()) else {
        return t
            .as_str()
            .map_or_else(|| "_".to_string(), |s| s.to_string());
    };
    match kind.as_str() {
        "resolved_path" => render_path(v),
        "generic" | "primitive" => v.as_str().unwrap_or("_").to_string(),
        "borrowed_ref" => {
            let lt = v["lifetime"]
                .as_str()
                .map(|l| format!("{l} "))
                .unwrap_or_default();
            let m = if v["is_mutable"].as_bool() == Some(true) {
                "mut "
            } else {
                ""
            };
            format!("&{lt}{m}{}", render_type(&v["type"]))
        }
        "raw_pointer" => {
            let m = if v["is_mutable"].as_bool() == Some(true) {
                "mut"
            } else {
                "const"
            };
            format!("*{m} {}", render_type(&v["type"]))
        }
        "tuple" => {
            let parts: Vec<String> = v
                .as_array()
                .into_iter()
                .flatten()
                .map(render_type)
                .collect();
            format!("({})", parts.join(", "))
        }
        "slice" => format!("[{}]", render_type(v)),
        "array" => format!(
            "[{}; {}]",
            render_type(&v["type"]),
            v["len"].as_str().unwrap_or("_")
        ),
        "impl_trait" => format!("impl {}", bounds(v)),
        "dyn_trait" => {
            let traits: Vec<String> = v["traits"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|p| render_path(&p["trait"]))
                .collect();
            format!("dyn {}", traits.join(" + "))
        }
        "qualified_path" => format!(
            "<{} as {}>::{}",
            render_type(&v["self_type"]),
            render_path(&v["trait"]),
            v["name"].as_str().unwrap_or("_")
        ),
        "function_pointer" => "fn(..)".to_string(),
        other => other.to_string(),
    }
}
