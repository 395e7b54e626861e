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

use super::node::Node;

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
                    return Err(Error::Invalid(format!(
                        "the capture thread of {} panicked",
                        self.what
                    )));
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

impl Node {
    /// Starts a pcapng capture of `iface` (every frame it sends and
    /// receives) into `<outdir>/pcap/<node>-<iface>.pcapng`. Needs an output
    /// directory ([`crate::LabOpts::outdir`]) and `CAP_NET_RAW`
    /// (`CONFIG_PACKET`). The lab keeps the capture running until the
    /// returned guard is dropped or stopped, or the lab ends.
    pub async fn capture(&self, iface: &str) -> Result<CaptureGuard> {
        let lab = self.lab()?;
        let art = lab.artifacts().cloned().ok_or_else(|| {
            Error::Invalid(format!(
                "cannot capture {}.{iface}: the lab has no output directory; set LabOpts::outdir (or `[lab] outdir`, or `patchbay run --outdir`)",
                self.name()
            ))
        })?;
        let i = self.iface(iface).ok_or_else(|| {
            Error::Invalid(format!(
                "cannot capture {}.{iface}: node {} has no interface {iface:?} (it has {:?})",
                self.name(),
                self.name(),
                self.ifaces()
                    .iter()
                    .map(|i| i.name.clone())
                    .collect::<Vec<_>>()
            ))
        })?;
        let index = i.index;
        let what = format!("{}.{iface}", self.name());
        let sock = self
            .netns()
            .run_sync(move || capture::open(index, Duration::from_millis(50)))?
            .map_err(|source| Error::Io {
                context: format!(
                    "opening a packet socket on {what} (AF_PACKET; needs CAP_NET_RAW)"
                ),
                source,
            })?;
        let dir = art.dir().join("pcap");
        std::fs::create_dir_all(&dir).map_err(|source| Error::Io {
            context: format!("creating {}", dir.display()),
            source,
        })?;
        let path = dir.join(format!("{}-{iface}.pcapng", self.name()));
        let file = File::create(&path).map_err(|source| Error::Io {
            context: format!("creating {}", path.display()),
            source,
        })?;
        let comp = lab.compression();
        let scale = comp.scale().get();
        let virtual_time = lab.opts().time.is_virtual();
        let since_start = comp.clock().start().elapsed();
        let now_unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let axis = Axis {
            start_unix: now_unix.saturating_sub(since_start),
            start_mono: comp.start_mono(),
            scale,
        };
        let comment = if virtual_time {
            "timestamps: virtual time (the User-Mode-Linux guest's clock, which is the lab's virtual clock)".to_string()
        } else if scale > 1.0 {
            format!(
                "timestamps: virtual axis of a compressed lab (k = {scale}): lab start (wall clock) + k x wall time since the start; gaps read as the code under test experiences them"
            )
        } else {
            "timestamps: wall clock (real time, k = 1)".to_string()
        };
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
        .map_err(pcap_err(&path))?;
        writer
            .write_pcapng_block(InterfaceDescriptionBlock {
                linktype: DataLink::ETHERNET,
                snaplen: SNAPLEN as u32,
                options: vec![
                    InterfaceDescriptionOption::IfName(Cow::Owned(what.clone())),
                    InterfaceDescriptionOption::IfTsResol(9),
                    InterfaceDescriptionOption::Comment(Cow::Owned(comment)),
                ],
            })
            .map_err(pcap_err(&path))?;
        let stop = Arc::new(AtomicBool::new(false));
        let packets = Arc::new(AtomicU64::new(0));
        let (stop2, packets2) = (stop.clone(), packets.clone());
        let thread = std::thread::Builder::new()
            .name("pb-capture".into())
            .spawn(move || {
                let mut buf = vec![0u8; SNAPLEN];
                let to_io = |e: pcap_file::PcapError| std::io::Error::other(e.to_string());
                while !stop2.load(Ordering::Relaxed) {
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
                    packets2.fetch_add(1, Ordering::Relaxed);
                }
                use std::io::Write;
                writer.get_mut().flush()
            })
            .map_err(|source| Error::Io {
                context: "starting a capture thread".into(),
                source,
            })?;
        // The lab stops every capture when it ends, even one whose guard
        // outlives it (the socket would keep the namespace alive).
        art.capture_stops
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(stop.clone());
        art.emit(
            Some(self.name()),
            "capture.start",
            json!({"iface": iface, "file": format!("pcap/{}-{iface}.pcapng", self.name())}),
        );
        Ok(CaptureGuard {
            what: format!("{}.{iface}", self.name()),
            path,
            stop,
            packets,
            thread: Some(thread),
        })
    }

    /// Like [`Node::capture`], but the lab owns the capture: it runs until
    /// the lab ends (used by `[lab] capture` in lab files).
    pub async fn capture_until_end(&self, iface: &str) -> Result<()> {
        let g = self.capture(iface).await?;
        let lab = self.lab()?;
        if let Some(a) = lab.artifacts() {
            a.captures.lock().unwrap_or_else(|p| p.into_inner()).push(g);
        }
        Ok(())
    }
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
