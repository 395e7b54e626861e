//! Debian generic kernels: resolve the meta package, download the `-unsigned` image with
//! `apt-get download` through a private apt configuration, unpack with `dpkg-deb -x`, run
//! `depmod`, and cache under `<cache>/<label>/`.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use super::apt::{PrivateApt, image_dependency, sources_list};
use super::run_checked;

/// A Debian kernel the matrix knows how to fetch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KernelSpec {
    /// Label used on the command line and in the document (`5.10`, `6.1`, `6.12`).
    pub label: &'static str,
    /// Debian release carrying it.
    pub codename: &'static str,
    /// Meta package resolving to the current ABI's image.
    pub meta: &'static str,
}

/// Kernels available to `--kernels` (besides `host`).
pub const KERNELS: &[KernelSpec] = &[
    KernelSpec {
        label: "5.10",
        codename: "bullseye",
        meta: "linux-image-amd64",
    },
    KernelSpec {
        label: "6.1",
        codename: "bookworm",
        meta: "linux-image-amd64",
    },
    KernelSpec {
        label: "6.12",
        codename: "bookworm",
        meta: "linux-image-6.12-amd64",
    },
];

/// Looks a label up, with an error listing the valid ones.
pub fn spec(label: &str) -> Result<KernelSpec> {
    KERNELS
        .iter()
        .copied()
        .find(|k| k.label == label)
        .with_context(|| {
            let valid: Vec<&str> = KERNELS.iter().map(|k| k.label).collect();
            format!(
                "unknown kernel {label:?}; valid: {}, host, uml",
                valid.join(", ")
            )
        })
}

/// An unpacked, depmod'ed kernel in the cache.
#[derive(Debug, Clone)]
pub struct CachedKernel {
    /// Extracted package root (holds `boot/` and `lib/modules/<release>`).
    pub root: PathBuf,
    /// `uname -r` of the kernel.
    pub release: String,
    /// Package it came from (`name_version`).
    pub package: String,
}

impl CachedKernel {
    /// The bzImage.
    pub fn vmlinuz(&self) -> PathBuf {
        self.root
            .join("boot")
            .join(format!("vmlinuz-{}", self.release))
    }

    /// What QEMU boots: the uncompressed ELF `vmlinux` (PVH entry) when it could be extracted,
    /// else the bzImage. Under TCG this saves ~6 s of in-guest decompression per boot.
    pub fn boot_image(&self) -> PathBuf {
        let elf = self.root.join("vmlinux");
        if elf.exists() { elf } else { self.vmlinuz() }
    }

    /// `lib/modules/<release>` of the extracted tree.
    pub fn modules_dir(&self) -> PathBuf {
        self.root.join("lib/modules").join(&self.release)
    }
}

/// Returns the cached kernel, fetching it first when the cache has none.
pub fn ensure(cache: &Path, spec: KernelSpec) -> Result<CachedKernel> {
    let dir = cache.join(spec.label);
    if let Some(k) = load(&dir)? {
        if !k.boot_image().ends_with("vmlinux") {
            extract_vmlinux(&k.vmlinuz(), &k.root.join("vmlinux"))?;
        }
        return Ok(k);
    }
    println!(
        "kernel-matrix: fetching Debian {} kernel ({} from {})",
        spec.label, spec.meta, spec.codename
    );
    let apt = PrivateApt::new(
        &cache.join("apt").join(spec.codename),
        &sources_list(spec.codename, false),
    )?;
    apt.update()?;
    let show = apt.show(spec.meta)?;
    let image = image_dependency(&show)
        .with_context(|| format!("{} has no linux-image-* dependency:\n{show}", spec.meta))?;
    let unsigned = format!("{image}-unsigned");
    let tmp = cache.join(format!("{}.tmp", spec.label));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).with_context(|| format!("removing {}", tmp.display()))?;
    }
    std::fs::create_dir_all(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    let deb = apt.download(&unsigned, &tmp)?;
    let root = tmp.join("root");
    run_checked(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root))?;
    std::fs::remove_file(&deb).with_context(|| format!("removing {}", deb.display()))?;
    let usr_modules = root.join("usr/lib/modules");
    if !root.join("lib/modules").exists() && usr_modules.exists() {
        // depmod -b ROOT looks in ROOT/lib/modules.
        std::os::unix::fs::symlink("usr/lib", root.join("lib"))
            .with_context(|| format!("linking lib -> usr/lib in {}", root.display()))?;
    }
    let release = only_release(&root.join("lib/modules"))?;
    if !release.starts_with(&format!("{}.", spec.label)) {
        bail!(
            "{} resolved to kernel {release}, expected {}.x",
            spec.meta,
            spec.label
        );
    }
    prune_modules(&root.join("lib/modules").join(&release).join("kernel"))?;
    let bz = root.join("boot").join(format!("vmlinuz-{release}"));
    extract_vmlinux(&bz, &root.join("vmlinux"))?;
    run_checked(Command::new("depmod").arg("-b").arg(&root).arg(&release))?;
    let package = deb
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or(&unsigned)
        .to_owned();
    std::fs::write(tmp.join("release"), &release).context("writing release stamp")?;
    std::fs::write(tmp.join("package"), &package).context("writing package stamp")?;
    if dir.exists() {
        std::fs::remove_dir_all(&dir)
            .with_context(|| format!("removing stale {}", dir.display()))?;
    }
    std::fs::rename(&tmp, &dir)
        .with_context(|| format!("moving {} to {}", tmp.display(), dir.display()))?;
    load(&dir)?.with_context(|| format!("{} incomplete right after unpacking", dir.display()))
}

fn load(dir: &Path) -> Result<Option<CachedKernel>> {
    let (rel, pkg) = (dir.join("release"), dir.join("package"));
    if !rel.exists() || !pkg.exists() {
        return Ok(None);
    }
    let k = CachedKernel {
        root: dir.join("root"),
        release: std::fs::read_to_string(&rel)
            .with_context(|| format!("reading {}", rel.display()))?,
        package: std::fs::read_to_string(&pkg)
            .with_context(|| format!("reading {}", pkg.display()))?,
    };
    if !k.vmlinuz().exists() || !k.modules_dir().join("modules.dep").exists() {
        return Ok(None);
    }
    Ok(Some(k))
}

/// Decompression tools for the bzImage payload, by magic.
const PAYLOADS: &[(&[u8], &str, &[&str])] = &[
    (b"\xfd7zXZ\x00", "xz", &["-dc", "--single-stream"]),
    (b"\x28\xb5\x2f\xfd", "zstd", &["-dc"]),
    (b"\x1f\x8b\x08", "gzip", &["-dc"]),
];

/// Extracts the ELF `vmlinux` from a bzImage (like the kernel's `scripts/extract-vmlinux`):
/// the first compressed payload whose decompression is an ELF file.
pub fn extract_vmlinux(bzimage: &Path, out: &Path) -> Result<()> {
    let data = std::fs::read(bzimage).with_context(|| format!("reading {}", bzimage.display()))?;
    let payload = out.with_extension("payload");
    for (magic, tool, args) in PAYLOADS {
        let Some(at) = data.windows(magic.len()).position(|w| w == *magic) else {
            continue;
        };
        std::fs::write(&payload, &data[at..])
            .with_context(|| format!("writing {}", payload.display()))?;
        let res = Command::new(tool).args(*args).arg(&payload).output();
        std::fs::remove_file(&payload)
            .with_context(|| format!("removing {}", payload.display()))?;
        let o =
            res.with_context(|| format!("running {tool} on the payload of {}", bzimage.display()))?;
        // The exit status is not checked: the bzImage trailer after the payload makes zstd
        // report an unsupported format after it wrote the whole frame. The ELF check is what
        // tells a complete kernel.
        if o.stdout.len() > 1 << 20 && o.stdout.starts_with(b"\x7fELF") {
            std::fs::write(out, &o.stdout).with_context(|| format!("writing {}", out.display()))?;
            return Ok(());
        }
    }
    bail!(
        "no xz/zstd/gzip payload in {} decompresses to an ELF vmlinux",
        bzimage.display()
    )
}

/// Module directories no lab test needs (hardware drivers, sound, wireless), removed from the
/// cache to keep it small (6.1: 405 MB → about 170 MB). Paths relative to `kernel/`.
pub const PRUNED_MODULE_DIRS: &[&str] = &[
    "sound",
    "drivers/gpu",
    "drivers/media",
    "drivers/scsi",
    "drivers/usb",
    "drivers/infiniband",
    "drivers/iio",
    "drivers/staging",
    "drivers/hid",
    "drivers/input",
    "drivers/hwmon",
    "drivers/bluetooth",
    "drivers/net/wireless",
    "drivers/net/ethernet",
    "drivers/net/usb",
    "drivers/net/can",
    "net/wireless",
    "net/mac80211",
    "net/bluetooth",
];

fn prune_modules(kernel: &Path) -> Result<()> {
    for d in PRUNED_MODULE_DIRS {
        let p = kernel.join(d);
        if p.exists() {
            std::fs::remove_dir_all(&p).with_context(|| format!("pruning {}", p.display()))?;
        }
    }
    Ok(())
}

fn only_release(modules: &Path) -> Result<String> {
    let mut found = Vec::new();
    for e in std::fs::read_dir(modules).with_context(|| format!("listing {}", modules.display()))? {
        found.push(e?.file_name().to_string_lossy().into_owned());
    }
    match found.as_slice() {
        [one] => Ok(one.clone()),
        _ => bail!(
            "expected one kernel release in {}, found {found:?}",
            modules.display()
        ),
    }
}
