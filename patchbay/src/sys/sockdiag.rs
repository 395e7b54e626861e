//! A minimal `NETLINK_SOCK_DIAG` query (what `ss -tano` does): the TCP state
//! and pending timer of the socket bound to a local port, including timewait
//! mini-sockets (an orphaned FIN-WAIT-2 socket is one, with substate
//! FIN-WAIT-2). Runs in the calling thread's network namespace. Linux 3.3+.

use std::io;
use std::time::Duration;

/// What sock_diag reports of one socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SockState {
    /// TCP state (`TCP_ESTABLISHED` = 1 … `TCP_LISTEN` = 10), the substate
    /// for a timewait mini-socket.
    pub state: u8,
    /// Time until the socket's pending timer fires (`idiag_expires`), if it
    /// has one: for a timewait mini-socket, when the kernel reclaims it.
    pub timer_in: Option<Duration>,
}

const SOCK_DIAG_BY_FAMILY: u16 = 20;
const NLMSG_DONE: u16 = 3;
const NLMSG_ERROR: u16 = 2;
const HDR: usize = 16;

/// The state of the IPv4 TCP socket with local port `port`, if any.
pub(crate) fn tcp_state_of_port(port: u16) -> io::Result<Option<SockState>> {
    // SAFETY: plain socket syscalls on a fd we own and buffers we own.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
            libc::NETLINK_SOCK_DIAG,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor owned from here on.
    let fd = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    let raw = std::os::fd::AsRawFd::as_raw_fd(&fd);
    let mut req = [0u8; HDR + 56];
    let len = req.len() as u32;
    req[0..4].copy_from_slice(&len.to_ne_bytes());
    req[4..6].copy_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    let flags = (libc::NLM_F_REQUEST | libc::NLM_F_DUMP) as u16;
    req[6..8].copy_from_slice(&flags.to_ne_bytes());
    req[HDR] = libc::AF_INET as u8;
    req[HDR + 1] = libc::IPPROTO_TCP as u8;
    req[HDR + 4..HDR + 8].copy_from_slice(&u32::MAX.to_ne_bytes()); // all states
    // SAFETY: req is a valid buffer of len bytes.
    if unsafe { libc::send(raw, req.as_ptr().cast(), req.len(), 0) } < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut buf = vec![0u8; 32 * 1024];
    let mut found = None;
    loop {
        // SAFETY: buf is a valid writable buffer.
        let n = unsafe { libc::recv(raw, buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let n = n as usize;
        let mut off = 0;
        while off + HDR <= n {
            let mlen =
                u32::from_ne_bytes([buf[off], buf[off + 1], buf[off + 2], buf[off + 3]]) as usize;
            let mtype = u16::from_ne_bytes([buf[off + 4], buf[off + 5]]);
            if mtype == NLMSG_DONE {
                return Ok(found);
            }
            if mtype == NLMSG_ERROR {
                return Err(io::Error::other("sock_diag returned an error message"));
            }
            if mlen < HDR || off + mlen > n {
                return Err(io::Error::other("malformed sock_diag reply"));
            }
            let body = &buf[off + HDR..off + mlen];
            if let Some(st) = parse_msg(body, port) {
                found = Some(st);
            }
            off += (mlen + 3) & !3;
        }
    }
}

/// Reads one `inet_diag_msg` (family, state, timer, retrans, then the 48-byte
/// sockid starting with sport and dport in network order, then expires in ms)
/// if it is the socket of local port `port`.
fn parse_msg(body: &[u8], port: u16) -> Option<SockState> {
    const EXPIRES: usize = 4 + 48;
    if body.len() < EXPIRES + 4 || u16::from_be_bytes([body[4], body[5]]) != port {
        return None;
    }
    let expires = u32::from_ne_bytes([
        body[EXPIRES],
        body[EXPIRES + 1],
        body[EXPIRES + 2],
        body[EXPIRES + 3],
    ]);
    Some(SockState {
        state: body[1],
        timer_in: (body[2] != 0).then(|| Duration::from_millis(u64::from(expires))),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_state_port_and_timer_of_one_message() {
        let mut m = [0u8; 72];
        m[1] = 5; // FIN-WAIT-2
        m[2] = 3; // the timewait timer
        m[4..6].copy_from_slice(&4242u16.to_be_bytes());
        m[52..56].copy_from_slice(&2500u32.to_ne_bytes());
        assert_eq!(
            parse_msg(&m, 4242),
            Some(SockState {
                state: 5,
                timer_in: Some(Duration::from_millis(2500))
            })
        );
        assert_eq!(parse_msg(&m, 4243), None, "another port");
        m[2] = 0;
        assert_eq!(
            parse_msg(&m, 4242).and_then(|s| s.timer_in),
            None,
            "no timer"
        );
        assert_eq!(parse_msg(&m[..40], 4242), None, "short");
    }

    #[test]
    fn finds_a_listening_socket_in_this_namespace() {
        let l = std::net::TcpListener::bind(("127.0.0.1", 0));
        let Ok(l) = l else { return };
        let Ok(port) = l.local_addr().map(|a| a.port()) else {
            return;
        };
        match super::tcp_state_of_port(port) {
            Ok(s) => assert_eq!(s.map(|s| s.state), Some(10), "LISTEN"),
            // sock_diag may be unavailable to unprivileged users in a sandbox.
            Err(e) => println!("PATCHBAY-SKIP: sock_diag unavailable: {e}"),
        }
    }
}
