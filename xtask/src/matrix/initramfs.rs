//! The guest's initramfs: busybox-static, the 9p/overlay modules, `/init` and the
//! on-demand module helper, written as an uncompressed cpio `newc` archive.
//!
//! `/init` mounts the host root read-only over 9p with a tmpfs overlay on top, mounts the
//! writable results share at its host path, points `/proc/sys/kernel/modprobe` at a helper
//! that runs the host's `modprobe -d <extracted kernel tree>`, brings `lo` up, runs the
//! stage-2 script (see `script.rs`) chrooted into the host root, and powers off.

use std::path::Path;

use anyhow::{Context, Result, bail};

use super::script::sh_quote;

/// Modules the initramfs loads itself (the rest load on demand through the helper).
pub const EARLY_MODULES: &[&str] = &["virtio_pci", "9pnet_virtio", "9p", "overlay"];

/// mount tag of the read-only host root share.
pub const HOST_TAG: &str = "hostroot";
/// mount tag of the writable results share.
pub const RESULTS_TAG: &str = "results";

/// One file in the archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// Directory.
    Dir(String),
    /// Regular file with mode bits.
    File(String, u32, Vec<u8>),
    /// Symbolic link (path, target).
    Symlink(String, String),
}

/// Serialises entries as a cpio `newc` archive, including the trailer.
pub fn cpio_newc(entries: &[Entry]) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        let (name, mode, data): (&str, u32, &[u8]) = match e {
            Entry::Dir(n) => (n, 0o040_755, &[]),
            Entry::File(n, m, d) => (n, 0o100_000 | m, d),
            Entry::Symlink(n, t) => (n, 0o120_777, t.as_bytes()),
        };
        let nlink = if matches!(e, Entry::Dir(_)) { 2 } else { 1 };
        push_header(&mut out, i as u32 + 1, mode, nlink, data.len(), name);
        out.extend_from_slice(data);
        pad4(&mut out);
    }
    push_header(&mut out, 0, 0, 1, 0, "TRAILER!!!");
    out
}

fn push_header(out: &mut Vec<u8>, ino: u32, mode: u32, nlink: u32, size: usize, name: &str) {
    let fields = [
        ino,
        mode,
        0,
        0,
        nlink,
        0,
        size as u32,
        0,
        0,
        0,
        0,
        name.len() as u32 + 1,
        0,
    ];
    out.extend_from_slice(b"070701");
    for f in fields {
        out.extend_from_slice(format!("{f:08x}").as_bytes());
    }
    out.extend_from_slice(name.as_bytes());
    out.push(0);
    pad4(out);
}

fn pad4(out: &mut Vec<u8>) {
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
}

/// Paths the guest init needs to know.
#[derive(Debug, Clone)]
pub struct InitParams {
    /// Host path of the extracted kernel package (contains `lib/modules/<release>`).
    pub tree: String,
    /// Host path of this guest's results directory (writable 9p share).
    pub results: String,
    /// Host path of the stage-2 script (inside `results`).
    pub stage2: String,
    /// Early modules, in load order, as file names under `/modules` in the initramfs.
    pub modules: Vec<String>,
}

/// The `/init` script (busybox sh).
pub fn init_script(p: &InitParams) -> String {
    let insmods: String = p
        .modules
        .iter()
        .map(|m| format!("insmod /modules/{m} || log \"insmod {m} failed\"\n"))
        .collect();
    format!(
        r#"#!/bin/sh
/bin/busybox --install -s /bin
export PATH=/bin
log() {{ echo "patchbay-init: $*" > /dev/console; }}
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
{insmods}mkdir -p /host /rw /newroot
mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000,cache=loose,ro {host} /host || log "host root mount failed"
mount -t tmpfs -o mode=0755 tmpfs /rw
mkdir -p /rw/upper /rw/work
if ! mount -t overlay overlay -o lowerdir=/host,upperdir=/rw/upper,workdir=/rw/work /newroot; then
  log "overlay failed, using the read-only host root"
  mount --bind /host /newroot
fi
mount -t proc proc /newroot/proc
mount -t sysfs sysfs /newroot/sys
mount -t devtmpfs devtmpfs /newroot/dev
mkdir -p /newroot/dev/pts /newroot/dev/shm
mount -t devpts devpts /newroot/dev/pts
mount -t tmpfs tmpfs /newroot/dev/shm
mount -t tmpfs tmpfs /newroot/run
mount -t cgroup2 cgroup2 /newroot/sys/fs/cgroup || log "no cgroup2"
mount -t bpf bpf /newroot/sys/fs/bpf || log "no bpffs"
mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000 {results} /newroot{resdir} || log "results mount failed"
echo /bin/pb-modprobe > /proc/sys/kernel/modprobe
ip link set lo up
chroot /newroot /bin/sh {stage2} > /newroot{resdir}/stage2.log 2>&1
echo $? > /newroot{resdir}/stage2.rc
sync
umount /newroot{resdir}
poweroff -f
"#,
        host = HOST_TAG,
        results = RESULTS_TAG,
        resdir = sh_quote(&p.results),
        stage2 = sh_quote(&p.stage2),
    )
}

/// The module helper the kernel runs for `request_module()`: the host's kmod modprobe on the
/// extracted tree (it runs in the initramfs root, so it chroots into the host root first).
pub fn modprobe_helper(tree: &str) -> String {
    format!(
        "#!/bin/sh\nexec /bin/chroot /newroot /sbin/modprobe -d {} \"$@\"\n",
        sh_quote(tree)
    )
}

/// Builds the initramfs image at `out`.
pub fn build(
    out: &Path,
    busybox: &Path,
    p: &InitParams,
    modules: &[(String, Vec<u8>)],
) -> Result<()> {
    let bb = std::fs::read(busybox).with_context(|| format!("reading {}", busybox.display()))?;
    if !bb.starts_with(b"\x7fELF") {
        bail!(
            "{} is not an ELF binary; install busybox-static",
            busybox.display()
        );
    }
    let mut entries = vec![
        Entry::Dir("bin".into()),
        Entry::Dir("dev".into()),
        Entry::Dir("proc".into()),
        Entry::Dir("sys".into()),
        Entry::Dir("modules".into()),
        Entry::File("bin/busybox".into(), 0o755, bb),
        Entry::Symlink("bin/sh".into(), "busybox".into()),
        Entry::File("init".into(), 0o755, init_script(p).into_bytes()),
        Entry::File(
            "bin/pb-modprobe".into(),
            0o755,
            modprobe_helper(&p.tree).into_bytes(),
        ),
    ];
    for (name, data) in modules {
        entries.push(Entry::File(format!("modules/{name}"), 0o644, data.clone()));
    }
    std::fs::write(out, cpio_newc(&entries)).with_context(|| format!("writing {}", out.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newc_layout() {
        let a = cpio_newc(&[Entry::File("init".into(), 0o755, b"abc".to_vec())]);
        assert_eq!(&a[..6], b"070701");
        // 110-byte header + "init\0" padded to 116, then 3 data bytes padded to 120.
        assert_eq!(&a[110..114], b"init");
        assert_eq!(&a[116..119], b"abc");
        assert_eq!(&a[120..126], b"070701");
        assert_eq!(a.len() % 4, 0);
        let mode = std::str::from_utf8(&a[14..22]).unwrap();
        assert_eq!(u32::from_str_radix(mode, 16).unwrap(), 0o100_755);
        assert!(a.windows(10).any(|w| w == b"TRAILER!!!"));
    }

    #[test]
    fn init_mentions_shares_and_stage2() {
        let s = init_script(&InitParams {
            tree: "/k/6.1/root".into(),
            results: "/r/6.1".into(),
            stage2: "/r/6.1/stage2.sh".into(),
            modules: vec!["9pnet.ko".into()],
        });
        assert!(s.contains("insmod /modules/9pnet.ko"));
        assert!(s.contains("hostroot /host"));
        assert!(s.contains("results /newroot'/r/6.1'"));
        assert!(s.contains("chroot /newroot /bin/sh '/r/6.1/stage2.sh'"));
        assert!(modprobe_helper("/k/6.1/root").contains("-d '/k/6.1/root'"));
    }
}
