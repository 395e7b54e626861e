//! A thin typed wrapper over `rtnetlink` for the operations labs need.
//!
//! Every function here must run on a namespace worker (see [`crate::sys::netns`]):
//! it uses that thread's own netlink connection, which the kernel binds to the
//! thread's network namespace when the socket is created. Mirrors of the `ip`
//! commands are named in each function's docs; patchbay never shells out to
//! `ip`.

use std::cell::RefCell;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::RawFd;

use futures::TryStreamExt;
use rtnetlink::packet_route::link::{InfoData, InfoVeth, LinkAttribute, LinkMessage};
use rtnetlink::packet_route::neighbour::NeighbourState;
use rtnetlink::{
    Handle, LinkBridge, LinkDummy, LinkMessageBuilder, LinkUnspec, RouteMessageBuilder,
};

/// Errors of netlink operations, with the operation that failed.
#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    /// The netlink socket could not be opened.
    #[error("cannot open a netlink socket: {0}")]
    Socket(#[source] std::io::Error),
    /// The kernel rejected a request.
    #[error("netlink: {op} failed: {source}")]
    Request {
        /// What was attempted, in `ip` command terms.
        op: String,
        /// The kernel's answer.
        #[source]
        source: rtnetlink::Error,
    },
    /// A link was not found by name.
    #[error("netlink: no interface named {0}")]
    NoSuchLink(String),
}

thread_local! {
    static HANDLE: RefCell<Option<Handle>> = const { RefCell::new(None) };
}

/// The calling worker's netlink handle, opened on first use.
///
/// Must be called inside a namespace worker's runtime (it spawns the
/// connection task with `spawn_local`).
pub(crate) fn handle() -> Result<Handle, NetlinkError> {
    HANDLE.with(|h| {
        let mut h = h.borrow_mut();
        if let Some(handle) = h.as_ref() {
            return Ok(handle.clone());
        }
        let (conn, handle, _) = rtnetlink::new_connection().map_err(NetlinkError::Socket)?;
        tokio::task::spawn_local(conn);
        *h = Some(handle.clone());
        Ok(handle)
    })
}

impl NetlinkError {
    /// The errno the kernel answered with, if the kernel refused a request.
    pub fn errno(&self) -> Option<i32> {
        match self {
            NetlinkError::Request {
                source: rtnetlink::Error::NetlinkError(m),
                ..
            } => Some(-m.raw_code()),
            _ => None,
        }
    }
}

pub(crate) fn req(op: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> NetlinkError {
    let op = op.into();
    move |source| NetlinkError::Request { op, source }
}

/// One end of a veth pair to create.
#[derive(Debug, Clone)]
pub struct VethEnd {
    /// Interface name (at most 15 bytes).
    pub name: String,
    /// Interface index to request in its namespace (0 lets the kernel pick).
    pub index: u32,
    /// MAC address.
    pub mac: [u8; 6],
    /// The namespace it is created in.
    pub netns_fd: RawFd,
}

/// `ip link add A netns NSA type veth peer B netns NSB`: creates a veth pair
/// with each end directly in its namespace, with fixed MACs and indexes.
pub async fn create_veth(a: &VethEnd, b: &VethEnd) -> Result<(), NetlinkError> {
    let peer = LinkMessageBuilder::<LinkUnspec>::new()
        .name(b.name.clone())
        .index(b.index)
        .address(b.mac.to_vec())
        .setns_by_fd(b.netns_fd)
        .build();
    let msg = LinkMessageBuilder::<LinkUnspec>::new_with_info_kind(
        rtnetlink::packet_route::link::InfoKind::Veth,
    )
    .name(a.name.clone())
    .index(a.index)
    .address(a.mac.to_vec())
    .setns_by_fd(a.netns_fd)
    .set_info_data(InfoData::Veth(InfoVeth::Peer(peer)))
    .build();
    handle()?
        .link()
        .add(msg)
        .execute()
        .await
        .map_err(req(format!(
            "ip link add {} type veth peer {}",
            a.name, b.name
        )))
}

/// `ip link add NAME index IDX address MAC type bridge` in the calling
/// namespace, up. A fixed MAC keeps the bridge's address stable as ports
/// come and go, so pre-warmed neighbour entries stay valid.
pub async fn create_bridge(name: &str, index: u32, mac: [u8; 6]) -> Result<(), NetlinkError> {
    let msg = LinkBridge::new(name)
        .index(index)
        .address(mac.to_vec())
        .up()
        .build();
    handle()?
        .link()
        .add(msg)
        .execute()
        .await
        .map_err(req(format!("ip link add {name} type bridge")))
}

/// `ip link add NAME index IDX address MAC type dummy` in the calling namespace, up.
pub async fn create_dummy(name: &str, index: u32, mac: [u8; 6]) -> Result<(), NetlinkError> {
    let msg = LinkDummy::new(name)
        .index(index)
        .address(mac.to_vec())
        .up()
        .build();
    handle()?
        .link()
        .add(msg)
        .execute()
        .await
        .map_err(req(format!("ip link add {name} type dummy")))
}

/// `ip link set dev IDX master BRIDGE up`.
pub async fn set_master_up(index: u32, bridge: u32) -> Result<(), NetlinkError> {
    let msg = LinkUnspec::new_with_index(index)
        .controller(bridge)
        .up()
        .build();
    handle()?
        .link()
        .set(msg)
        .execute()
        .await
        .map_err(req(format!("ip link set dev #{index} master #{bridge} up")))
}

/// `ip link set dev IDX up` / `down`.
pub async fn set_up(index: u32, up: bool) -> Result<(), NetlinkError> {
    let b = LinkUnspec::new_with_index(index);
    let msg = if up { b.up() } else { b.down() }.build();
    handle()?
        .link()
        .set(msg)
        .execute()
        .await
        .map_err(req(format!(
            "ip link set dev #{index} {}",
            if up { "up" } else { "down" }
        )))
}

/// `ip addr add ADDR/PREFIX dev IDX`.
pub async fn add_addr(index: u32, addr: IpAddr, prefix: u8) -> Result<(), NetlinkError> {
    handle()?
        .address()
        .add(index, addr, prefix)
        .execute()
        .await
        .map_err(req(format!("ip addr add {addr}/{prefix} dev #{index}")))
}

/// Sends one route request: `ip route add` (or `replace`), named `op` in errors.
pub(crate) async fn send_route(
    msg: rtnetlink::packet_route::route::RouteMessage,
    replace: bool,
    op: String,
) -> Result<(), NetlinkError> {
    let req_ = handle()?.route().add(msg);
    let req_ = if replace { req_.replace() } else { req_ };
    req_.execute().await.map_err(req(op))
}

/// `ip route add DST/PREFIX via GW` (IPv4). A prefix of 0 is the default route.
pub async fn add_route_v4(dst: Ipv4Addr, prefix: u8, gw: Ipv4Addr) -> Result<(), NetlinkError> {
    let msg = RouteMessageBuilder::<Ipv4Addr>::new()
        .destination_prefix(dst, prefix)
        .gateway(gw)
        .build();
    send_route(msg, false, format!("ip route add {dst}/{prefix} via {gw}")).await
}

/// `ip -6 route add DST/PREFIX via GW`.
pub async fn add_route_v6(dst: Ipv6Addr, prefix: u8, gw: Ipv6Addr) -> Result<(), NetlinkError> {
    let msg = RouteMessageBuilder::<Ipv6Addr>::new()
        .destination_prefix(dst, prefix)
        .gateway(gw)
        .build();
    send_route(
        msg,
        false,
        format!("ip -6 route add {dst}/{prefix} via {gw}"),
    )
    .await
}

/// `ip neigh replace ADDR lladdr MAC dev IDX nud reachable`: an ordinary
/// (not permanent) entry that ages and is re-probed like a learned one.
pub async fn add_neigh(index: u32, addr: IpAddr, mac: [u8; 6]) -> Result<(), NetlinkError> {
    handle()?
        .neighbours()
        .add(index, addr)
        .link_layer_address(&mac)
        .state(NeighbourState::Reachable)
        .replace()
        .execute()
        .await
        .map_err(req(format!(
            "ip neigh replace {addr} lladdr {} dev #{index} nud reachable",
            fmt_mac(&mac)
        )))
}

/// Formats a MAC address as `aa:bb:cc:dd:ee:ff`.
pub fn fmt_mac(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Asks the kernel for the link state of `name` (`ETHTOOL_GLINK`, like
/// `ethtool IFACE`), which runs the link watcher for that device right away.
///
/// A device whose carrier comes up gets its queueing discipline from the
/// link watcher, which the kernel may delay by up to a second; until then
/// the device drops what it sends. Labs call this after bringing links up
/// so the first packets are not lost. Returns whether the carrier is up.
pub fn sync_carrier(name: &str) -> std::io::Result<bool> {
    #[repr(C)]
    struct EthtoolValue {
        cmd: u32,
        data: u32,
    }
    #[repr(C)]
    struct IfReq {
        name: [u8; libc::IFNAMSIZ],
        data: *mut EthtoolValue,
        _pad: [u8; 16],
    }
    const ETHTOOL_GLINK: u32 = 0x0000_000a;
    if name.len() >= libc::IFNAMSIZ {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "interface name too long",
        ));
    }
    let mut value = EthtoolValue {
        cmd: ETHTOOL_GLINK,
        data: 0,
    };
    let mut req = IfReq {
        name: [0; libc::IFNAMSIZ],
        data: &mut value,
        _pad: [0; 16],
    };
    req.name[..name.len()].copy_from_slice(name.as_bytes());
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    // SAFETY: socket(2) has no memory preconditions; the fd is owned below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor nobody else owns.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: SIOCETHTOOL reads the ifreq and writes the ethtool_value it
    // points to; both live until the call returns.
    let r = unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCETHTOOL, &mut req) };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(value.data != 0)
}

/// `ip link show index IDX` on the calling worker.
async fn link_by_index(index: u32) -> Result<LinkMessage, NetlinkError> {
    let op = format!("ip link show index {index}");
    handle()?
        .link()
        .get()
        .match_index(index)
        .execute()
        .try_next()
        .await
        .map_err(req(op.clone()))?
        .ok_or_else(|| NetlinkError::NoSuchLink(format!("index {index}")))
}

/// The interface index of the other end of the veth with index `index`, as
/// seen from its own namespace (`IFLA_LINK`), or `None` if it is not a veth.
pub async fn veth_peer_index(index: u32) -> Result<Option<u32>, NetlinkError> {
    Ok(link_by_index(index)
        .await?
        .attributes
        .iter()
        .find_map(|a| match a {
            LinkAttribute::Link(p) => Some(*p),
            _ => None,
        }))
}

/// The name of the interface with index `index` on the calling worker.
pub async fn link_name(index: u32) -> Result<Option<String>, NetlinkError> {
    Ok(link_by_index(index)
        .await?
        .attributes
        .iter()
        .find_map(|a| match a {
            LinkAttribute::IfName(n) => Some(n.clone()),
            _ => None,
        }))
}

/// The index of the interface named `name` on the calling worker.
pub async fn index_of(name: &str) -> Result<u32, NetlinkError> {
    let mut links = handle()?
        .link()
        .get()
        .match_name(name.to_string())
        .execute();
    match links.try_next().await {
        Ok(Some(msg)) => Ok(msg.header.index),
        Ok(None) => Err(NetlinkError::NoSuchLink(name.to_string())),
        Err(source) => Err(NetlinkError::Request {
            op: format!("ip link show {name}"),
            source,
        }),
    }
}

/// `ip route add DST/PREFIX dev IDX` (IPv4, on-link).
pub async fn add_route_dev_v4(dst: Ipv4Addr, prefix: u8, index: u32) -> Result<(), NetlinkError> {
    let msg = RouteMessageBuilder::<Ipv4Addr>::new()
        .destination_prefix(dst, prefix)
        .output_interface(index)
        .build();
    send_route(
        msg,
        false,
        format!("ip route add {dst}/{prefix} dev #{index}"),
    )
    .await
}

/// `ip -6 route add DST/PREFIX dev IDX` (on-link).
pub async fn add_route_dev_v6(dst: Ipv6Addr, prefix: u8, index: u32) -> Result<(), NetlinkError> {
    let msg = RouteMessageBuilder::<Ipv6Addr>::new()
        .destination_prefix(dst, prefix)
        .output_interface(index)
        .build();
    send_route(
        msg,
        false,
        format!("ip -6 route add {dst}/{prefix} dev #{index}"),
    )
    .await
}

/// `ip link del dev IDX` (deleting one end of a veth deletes both).
pub async fn del_link(index: u32) -> Result<(), NetlinkError> {
    handle()?
        .link()
        .del(index)
        .execute()
        .await
        .map_err(req(format!("ip link del dev #{index}")))
}

/// `ip addr del ADDR/PREFIX dev IDX`.
pub async fn del_addr(index: u32, addr: IpAddr, prefix: u8) -> Result<(), NetlinkError> {
    let mut msg = rtnetlink::packet_route::address::AddressMessage::default();
    msg.header.index = index;
    msg.header.prefix_len = prefix;
    msg.header.family = match addr {
        IpAddr::V4(_) => rtnetlink::packet_route::AddressFamily::Inet,
        IpAddr::V6(_) => rtnetlink::packet_route::AddressFamily::Inet6,
    };
    msg.attributes
        .push(rtnetlink::packet_route::address::AddressAttribute::Address(
            addr,
        ));
    if addr.is_ipv4() {
        msg.attributes
            .push(rtnetlink::packet_route::address::AddressAttribute::Local(
                addr,
            ));
    }
    handle()?
        .address()
        .del(msg)
        .execute()
        .await
        .map_err(req(format!("ip addr del {addr}/{prefix} dev #{index}")))
}

/// `ip route replace default via GW` and `ip -6 route replace default via
/// GW6`: points the default routes at a new gateway, for each family given
/// (a family without a gateway keeps its routes).
pub async fn replace_default(
    gw: Option<Ipv4Addr>,
    gw6: Option<Ipv6Addr>,
) -> Result<(), NetlinkError> {
    if let Some(gw) = gw {
        let msg = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(Ipv4Addr::UNSPECIFIED, 0)
            .gateway(gw)
            .build();
        send_route(msg, true, format!("ip route replace default via {gw}")).await?;
    }
    if let Some(gw6) = gw6 {
        let msg = RouteMessageBuilder::<Ipv6Addr>::new()
            .destination_prefix(Ipv6Addr::UNSPECIFIED, 0)
            .gateway(gw6)
            .build();
        send_route(msg, true, format!("ip -6 route replace default via {gw6}")).await?;
    }
    Ok(())
}

/// `ip route del DST/PREFIX via GW` (either family). `Ok(false)` when there
/// is no such route (the kernel's ESRCH): the gateway must match, so a
/// connected route to the same prefix is never touched.
pub async fn del_route_via(dst: IpAddr, prefix: u8, gw: IpAddr) -> Result<bool, NetlinkError> {
    let msg = match (dst, gw) {
        (IpAddr::V4(d), IpAddr::V4(g)) => RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(d, prefix)
            .gateway(g)
            .build(),
        (IpAddr::V6(d), IpAddr::V6(g)) => RouteMessageBuilder::<Ipv6Addr>::new()
            .destination_prefix(d, prefix)
            .gateway(g)
            .build(),
        _ => return Ok(false),
    };
    let op = format!("ip route del {dst}/{prefix} via {gw}");
    match handle()?.route().del(msg).execute().await.map_err(req(op)) {
        Ok(()) => Ok(true),
        Err(e) if e.errno() == Some(libc::ESRCH) => Ok(false),
        Err(e) => Err(e),
    }
}
