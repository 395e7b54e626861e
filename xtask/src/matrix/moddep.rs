//! `modules.dep` parsing and load-order resolution (pure).
//!
//! The initramfs must load the 9p and overlay modules itself, before the host root (and with
//! it the host's `modprobe`) is reachable. Everything after that loads on demand.

use std::collections::{BTreeMap, BTreeSet};

/// A module's canonical name: file stem without `.ko[.xz|.zst|.gz]`, `-` replaced by `_`.
pub fn module_name(path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    let stem = file.split(".ko").next().unwrap_or(file);
    stem.replace('-', "_")
}

/// Parsed `modules.dep`: module name → (relative path, direct dependencies' paths).
#[derive(Debug, Default)]
pub struct ModDep {
    entries: BTreeMap<String, (String, Vec<String>)>,
}

impl ModDep {
    /// Parses the text of `modules.dep` (`path: dep dep ...` per line).
    pub fn parse(text: &str) -> Self {
        let mut entries = BTreeMap::new();
        for line in text.lines() {
            let Some((path, deps)) = line.split_once(':') else {
                continue;
            };
            let path = path.trim().to_owned();
            let deps = deps.split_whitespace().map(str::to_owned).collect();
            entries.insert(module_name(&path), (path, deps));
        }
        Self { entries }
    }

    /// Relative paths of `wanted` and their dependencies, dependencies first, each once.
    /// Names in `builtin` are skipped; an unknown name is an error naming it.
    pub fn load_order(
        &self,
        wanted: &[&str],
        builtin: &BTreeSet<String>,
    ) -> Result<Vec<String>, String> {
        let mut order = Vec::new();
        let mut seen = BTreeSet::new();
        for w in wanted {
            let name = module_name(w);
            if builtin.contains(&name) {
                continue;
            }
            let Some((path, _)) = self.entries.get(&name) else {
                return Err(format!(
                    "module {name} is neither in modules.dep nor in modules.builtin"
                ));
            };
            self.visit(path, &mut seen, &mut order);
        }
        Ok(order)
    }

    fn visit(&self, path: &str, seen: &mut BTreeSet<String>, order: &mut Vec<String>) {
        if !seen.insert(path.to_owned()) {
            return;
        }
        if let Some((_, deps)) = self.entries.get(&module_name(path)) {
            // modules.dep lists the full transitive closure, in load-reverse order.
            for d in deps.iter().rev() {
                self.visit(d, seen, order);
            }
        }
        order.push(path.to_owned());
    }
}

/// Parses `modules.builtin` into module names.
pub fn parse_builtin(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(module_name)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_normalised() {
        assert_eq!(
            module_name("kernel/net/9p/9pnet_virtio.ko.xz"),
            "9pnet_virtio"
        );
        assert_eq!(module_name("kernel/fs/fuse/virtio-fs.ko"), "virtio_fs");
    }

    #[test]
    fn deps_come_first_and_once() {
        let dep = ModDep::parse(
            "kernel/fs/9p/9p.ko: kernel/net/9p/9pnet.ko kernel/fs/netfs/netfs.ko\n\
             kernel/net/9p/9pnet.ko:\nkernel/fs/netfs/netfs.ko:\n\
             kernel/net/9p/9pnet_virtio.ko: kernel/net/9p/9pnet.ko\n\
             kernel/fs/overlayfs/overlay.ko:\n",
        );
        let builtin = parse_builtin("kernel/drivers/virtio/virtio_pci.ko\n");
        let order = dep
            .load_order(&["9pnet_virtio", "9p", "virtio_pci"], &builtin)
            .unwrap();
        assert_eq!(
            order,
            [
                "kernel/net/9p/9pnet.ko",
                "kernel/net/9p/9pnet_virtio.ko",
                "kernel/fs/netfs/netfs.ko",
                "kernel/fs/9p/9p.ko"
            ]
        );
        let err = dep.load_order(&["nope"], &builtin).unwrap_err();
        assert!(err.contains("nope"), "{err}");
    }
}
