//! pcapng captures of a node's interface, written into the lab's output
//! directory as `pcap/<node>-<iface>.pcapng` (readable by Wireshark and
//! tshark).
//!
//! Timestamps: in real time they are the host's wall clock. In compressed
//! mode (k > 1) they are on the lab's virtual axis: the lab's start (wall
//! clock) plus k × the time since, so gaps in the capture match the
//! timeouts the code under test believes in. In virtual time (UML) the
//! guest's clock is already virtual. The section header's comment states
//! which.

use std::borrow::Cow;
use std::fs::File;
use std::io::BufWriter;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use pcap_file::DataLink;
use pcap_file::pcapng::PcapNgWriter;
use pcap_file::pcapng::blocks::enhanced_packet::EnhancedPacketBlock;
use pcap_file::pcapng::blocks::interface_description::{
    InterfaceDescriptionBlock, InterfaceDescriptionOption,
};
use pcap_file::pcapng::blocks::section_header::{SectionHeaderBlock, SectionHeaderOption};
use serde_json::json;

use crate::error::{Error, Result};
use crate::sys::capture;

const SNAPLEN: usize = 65535;

/// A running capture. It stops (and its file is complete) when the guard
/// is dropped, [`CaptureGuard::stop`] is called, or the lab ends.
#[derive(Debug)]
pub struct CaptureGuard {
    what: String,
    path: PathBuf,
    stop: Arc<AtomicBool>,
    packets: Arc<AtomicU64>,
    thread: Option<JoinHandle<std::io::Result<()>>>,
}

impl CaptureGuard {
    /// `node.iface`.
    pub fn describe(&self) -> String {
        self.what.clone()
    }

    /// The pcapng file.
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// Frames written so far.
    pub fn packets(&self) -> u64 {
        self.packets.load(Ordering::Relaxed)
    }

    /// Stops the capture, flushes the file and returns the number of
    /// frames written.
    pub fn stop(mut self) -> Result<u64> {
        self.halt()?;
        Ok(self.packets())
    }

    fn halt(&mut self) -> Result<()> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            match t.join() {
                Ok(r) => r.map_err(|source| Error::Io {
                    context: format!("writing capture {}", self.path.display()),
                    source,
                })?,
                Err(_) => {
                    return Err(Error::Io {
                        context: format!("the capture thread of {}", self.what),
                        source: std::io::Error::other("it panicked"),
                    });
                }
            }
        }
        Ok(())
    }
}

impl Drop for CaptureGuard {
    fn drop(&mut self) {
        if let Err(e) = self.halt() {
            tracing::warn!("capture {}: {e}", self.what);
        }
    }
}

/// How timestamps are placed: unix time of the lab start (ns) plus
/// `scale` × the monotonic time since the lab's start.
#[derive(Debug, Clone, Copy)]
struct Axis {
    start_unix: Duration,
    start_mono: Duration,
    scale: f64,
}

impl Axis {
    fn stamp(&self, mono: Duration) -> Duration {
        self.start_unix + mono.saturating_sub(self.start_mono).mul_f64(self.scale)
    }
}

/// Starts a pcapng capture of interface `iface` (index `index`) of `node`,
/// whose namespace is `ns`, into `<outdir>/pcap/<node>-<iface>.pcapng` (see
/// [`Node::capture`](crate::Node::capture)).
pub(crate) fn start(
    lab: &super::LabInner,
    node: &str,
    ns: &crate::sys::netns::Netns,
    iface: &str,
    index: u32,
) -> Result<CaptureGuard> {
    let art = lab.artifacts().cloned().ok_or_else(|| {
        Error::invalid_node(node, "outdir", crate::InvalidReason::Missing, format!(
            "cannot capture {node}.{iface}: the lab has no output directory; set LabOpts::outdir (or `[lab] outdir`, or `patchbay run --outdir`)"
        ))
    })?;
    let what = format!("{node}.{iface}");
    let sock = open_socket(ns, index, &what)?;
    let file_name = format!("{node}-{iface}.pcapng");
    let (path, file) = create_file(&art.dir().join("pcap"), &file_name)?;
    let (axis, comment) = time_axis(lab);
    let writer = write_header(file, &path, &what, comment)?;
    let stop = Arc::new(AtomicBool::new(false));
    let packets = Arc::new(AtomicU64::new(0));
    let thread = spawn_writer(sock, writer, axis, stop.clone(), packets.clone())?;
    // The lab stops every capture when it ends, even one whose guard
    // outlives it (the socket would keep the namespace alive).
    art.capture_stops
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(stop.clone());
    art.emit(
        Some(node),
        "capture.start",
        json!({"iface": iface, "file": format!("pcap/{file_name}")}),
    );
    Ok(CaptureGuard {
        what,
        path,
        stop,
        packets,
        thread: Some(thread),
    })
}

/// Hands a running capture to the lab: it runs until the lab ends.
pub(crate) fn keep_until_end(lab: &super::LabInner, g: CaptureGuard) {
    if let Some(a) = lab.artifacts() {
        a.captures.lock().unwrap_or_else(|p| p.into_inner()).push(g);
    }
}

/// An `AF_PACKET` socket on interface `index` of `ns`.
fn open_socket(
    ns: &crate::sys::netns::Netns,
    index: u32,
    what: &str,
) -> Result<std::os::fd::OwnedFd> {
    let what = what.to_string();
    ns.run_sync(move || capture::open(index, Duration::from_millis(50)))?
        .map_err(|source| Error::Io {
            context: format!("opening a packet socket on {what} (AF_PACKET; needs CAP_NET_RAW)"),
            source,
        })
}

/// Creates `dir/name`.
fn create_file(dir: &std::path::Path, name: &str) -> Result<(PathBuf, File)> {
    std::fs::create_dir_all(dir).map_err(|source| Error::Io {
        context: format!("creating {}", dir.display()),
        source,
    })?;
    let path = dir.join(name);
    let file = File::create(&path).map_err(|source| Error::Io {
        context: format!("creating {}", path.display()),
        source,
    })?;
    Ok((path, file))
}

/// The lab's timestamp axis and the comment that explains it in the file.
fn time_axis(lab: &super::LabInner) -> (Axis, String) {
    let comp = lab.compression();
    let scale = comp.scale().get();
    let since_start = comp.clock().start().elapsed();
    let now_unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let axis = Axis {
        start_unix: now_unix.saturating_sub(since_start),
        start_mono: comp.start_mono(),
        scale,
    };
    let comment = if lab.opts().time.is_virtual() {
        "timestamps: virtual time (the User-Mode-Linux guest's clock, which is the lab's virtual clock)".to_string()
    } else if scale > 1.0 {
        format!(
            "timestamps: virtual axis of a compressed lab (k = {scale}): lab start (wall clock) + k x wall time since the start; gaps read as the code under test experiences them"
        )
    } else {
        "timestamps: wall clock (real time, k = 1)".to_string()
    };
    (axis, comment)
}

type Writer = PcapNgWriter<BufWriter<File>>;

/// The section header and the interface description of the capture file.
fn write_header(file: File, path: &std::path::Path, what: &str, comment: String) -> Result<Writer> {
    let mut writer = PcapNgWriter::with_section_header(
        BufWriter::new(file),
        SectionHeaderBlock {
            options: vec![
                SectionHeaderOption::Comment(Cow::Owned(comment.clone())),
                SectionHeaderOption::UserApplication(Cow::Owned(format!(
                    "patchbay {}",
                    env!("CARGO_PKG_VERSION")
                ))),
            ],
            ..Default::default()
        },
    )
    .map_err(pcap_err(path))?;
    writer
        .write_pcapng_block(InterfaceDescriptionBlock {
            linktype: DataLink::ETHERNET,
            snaplen: SNAPLEN as u32,
            options: vec![
                InterfaceDescriptionOption::IfName(Cow::Owned(what.to_string())),
                InterfaceDescriptionOption::IfTsResol(9),
                InterfaceDescriptionOption::Comment(Cow::Owned(comment)),
            ],
        })
        .map_err(pcap_err(path))?;
    Ok(writer)
}

/// The thread that writes every frame of `sock` until `stop`.
fn spawn_writer(
    sock: std::os::fd::OwnedFd,
    mut writer: Writer,
    axis: Axis,
    stop: Arc<AtomicBool>,
    packets: Arc<AtomicU64>,
) -> Result<JoinHandle<std::io::Result<()>>> {
    std::thread::Builder::new()
        .name("pb-capture".into())
        .spawn(move || {
            let mut buf = vec![0u8; SNAPLEN];
            let to_io = |e: pcap_file::PcapError| std::io::Error::other(e.to_string());
            while !stop.load(Ordering::Relaxed) {
                let Some(len) = capture::recv(&sock, &mut buf)? else {
                    continue;
                };
                let ts = axis.stamp(super::clock::monotonic_now());
                let data = &buf[..len.min(SNAPLEN)];
                writer
                    .write_pcapng_block(EnhancedPacketBlock {
                        interface_id: 0,
                        timestamp: ts,
                        original_len: len as u32,
                        data: Cow::Borrowed(data),
                        options: vec![],
                    })
                    .map_err(to_io)?;
                packets.fetch_add(1, Ordering::Relaxed);
            }
            use std::io::Write;
            writer.get_mut().flush()
        })
        .map_err(|source| Error::Io {
            context: "starting a capture thread".into(),
            source,
        })
}

fn pcap_err(path: &std::path::Path) -> impl Fn(pcap_file::PcapError) -> Error + '_ {
    move |e| Error::Io {
        context: format!("writing pcapng {}", path.display()),
        source: std::io::Error::other(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn virtual_axis_stretches_gaps_by_k() {
        let a = Axis {
            start_unix: Duration::from_secs(1000),
            start_mono: Duration::from_secs(50),
            scale: 10.0,
        };
        assert_eq!(a.stamp(Duration::from_secs(50)), Duration::from_secs(1000));
        assert_eq!(
            a.stamp(Duration::from_millis(51_500)),
            Duration::from_secs(1015)
        );
        assert_eq!(a.stamp(Duration::from_secs(1)), Duration::from_secs(1000));
    }
}
