//! Flushing a namespace's conntrack table over ctnetlink: the netlink
//! equivalent of `conntrack -F`, so no extra tool is needed.
//!
//! Sends one `IPCTNL_MSG_CT_DELETE` request without a tuple (which the
//! kernel treats as "flush all", family `AF_UNSPEC` = IPv4 and IPv6) on a
//! `NETLINK_NETFILTER` socket opened on the namespace's worker, so only
//! that namespace's table is flushed. Requires `CONFIG_NF_CT_NETLINK` and
//! `CAP_NET_ADMIN`.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use crate::sys::netns::{Netns, NetnsError};

/// A failed conntrack flush.
#[derive(Debug, thiserror::Error)]
pub enum CtFlushError {
    /// A socket call failed.
    #[error(
        "conntrack flush in {ns}: {op} failed: {source} (needs CONFIG_NF_CT_NETLINK and CAP_NET_ADMIN)"
    )]
    Io {
        /// Namespace.
        ns: String,
        /// The syscall.
        op: &'static str,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The kernel answered with an error.
    #[error("conntrack flush in {ns}: the kernel refused: {source}")]
    Refused {
        /// Namespace.
        ns: String,
        /// The errno the kernel returned.
        #[source]
        source: std::io::Error,
    },
    /// The namespace worker is gone.
    #[error(transparent)]
    Netns(#[from] NetnsError),
}

const NETLINK_NETFILTER: libc::c_int = 12;
const NFNL_SUBSYS_CTNETLINK: u16 = 1;
const IPCTNL_MSG_CT_DELETE: u16 = 2;
const NLMSG_ERROR: u16 = 2;

/// The request: nlmsghdr (16 bytes) + nfgenmsg (4 bytes).
fn request() -> [u8; 20] {
    let mut m = [0u8; 20];
    m[0..4].copy_from_slice(&20u32.to_ne_bytes());
    let ty = (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_DELETE;
    m[4..6].copy_from_slice(&ty.to_ne_bytes());
    let flags = (libc::NLM_F_REQUEST | libc::NLM_F_ACK) as u16;
    m[6..8].copy_from_slice(&flags.to_ne_bytes());
    m[8..12].copy_from_slice(&1u32.to_ne_bytes());
    // nfgenmsg: family AF_UNSPEC, version NFNETLINK_V0, res_id 0.
    m
}

fn flush_here(ns: &str) -> Result<(), CtFlushError> {
    let io = |op: &'static str| {
        let source = std::io::Error::last_os_error();
        CtFlushError::Io {
            ns: ns.to_string(),
            op,
            source,
        }
    };
    // SAFETY: plain socket syscalls on a fresh fd and on local buffers.
    unsafe {
        let fd = libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            NETLINK_NETFILTER,
        );
        if fd < 0 {
            return Err(io("socket(AF_NETLINK, NETLINK_NETFILTER)"));
        }
        let fd = OwnedFd::from_raw_fd(fd);
        let tv = libc::timeval {
            tv_sec: 5,
            tv_usec: 0,
        };
        if libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&tv as *const libc::timeval).cast(),
            size_of::<libc::timeval>() as u32,
        ) < 0
        {
            return Err(io("setsockopt(SO_RCVTIMEO)"));
        }
        let mut addr: libc::sockaddr_nl = std::mem::zeroed();
        addr.nl_family = libc::AF_NETLINK as u16;
        let req = request();
        if libc::sendto(
            fd.as_raw_fd(),
            req.as_ptr().cast(),
            req.len(),
            0,
            (&addr as *const libc::sockaddr_nl).cast(),
            size_of::<libc::sockaddr_nl>() as u32,
        ) < 0
        {
            return Err(io("sendto"));
        }
        let mut buf = [0u8; 256];
        let n = libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0);
        if n < 0 {
            return Err(io("recv"));
        }
        parse_ack(&buf[..n as usize]).map_err(|errno| CtFlushError::Refused {
            ns: ns.to_string(),
            source: std::io::Error::from_raw_os_error(errno),
        })
    }
}

/// Reads the ack: `Ok` for error code 0, `Err(errno)` otherwise.
fn parse_ack(b: &[u8]) -> Result<(), i32> {
    if b.len() < 20 {
        return Err(libc::EPROTO);
    }
    let ty = u16::from_ne_bytes([b[4], b[5]]);
    if ty != NLMSG_ERROR {
        return Err(libc::EPROTO);
    }
    let code = i32::from_ne_bytes([b[16], b[17], b[18], b[19]]);
    if code == 0 { Ok(()) } else { Err(-code) }
}

/// Flushes every conntrack entry of `ns` (IPv4 and IPv6), like
/// `conntrack -F` run inside it.
pub fn flush_conntrack(ns: &Netns) -> Result<(), CtFlushError> {
    let name = ns.name().to_string();
    ns.run_sync(move || flush_here(&name))?
}

#[cfg(test)]
mod tests {
    #[test]
    fn request_layout() {
        let r = super::request();
        assert_eq!(u32::from_ne_bytes([r[0], r[1], r[2], r[3]]), 20);
        assert_eq!(u16::from_ne_bytes([r[4], r[5]]), 0x0102);
        assert_eq!(super::parse_ack(&[0; 20]), Err(libc::EPROTO));
    }
}
