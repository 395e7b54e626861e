//! Link attributes and route replacement beyond what building a lab needs:
//! MTU (`ip link set dev IDX mtu N`) and `ip route replace` / `del`, used
//! by per-interface MTU and by region links. Runs on a namespace worker,
//! like everything in [`super::netlink`].

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use rtnetlink::{LinkUnspec, RouteMessageBuilder};

use super::netlink::{NetlinkError, handle, req};

/// `ip link set dev IDX mtu MTU`.
pub(crate) async fn set_mtu(index: u32, mtu: u32) -> Result<(), NetlinkError> {
    let msg = LinkUnspec::new_with_index(index).mtu(mtu).build();
    handle()?
        .link()
        .set(msg)
        .execute()
        .await
        .map_err(req(format!("ip link set dev #{index} mtu {mtu}")))
}

/// `ip route replace DST/PREFIX via GW` for either family (`gw` and `dst`
/// must be of the same family).
pub(crate) async fn replace_route(dst: IpAddr, prefix: u8, gw: IpAddr) -> Result<(), NetlinkError> {
    let op = format!("ip route replace {dst}/{prefix} via {gw}");
    match (dst, gw) {
        (IpAddr::V4(d), IpAddr::V4(g)) => {
            let msg = RouteMessageBuilder::<Ipv4Addr>::new()
                .destination_prefix(d, prefix)
                .gateway(g)
                .build();
            super::netlink::send_route(msg, true, op).await
        }
        (IpAddr::V6(d), IpAddr::V6(g)) => {
            let msg = RouteMessageBuilder::<Ipv6Addr>::new()
                .destination_prefix(d, prefix)
                .gateway(g)
                .build();
            super::netlink::send_route(msg, true, op).await
        }
        _ => Ok(()),
    }
}

/// The index of the interface named `name` on the calling worker.
pub(crate) async fn link_index(name: &str) -> Result<u32, NetlinkError> {
    use futures::TryStreamExt;
    handle()?
        .link()
        .get()
        .match_name(name.to_string())
        .execute()
        .try_next()
        .await
        .map_err(req(format!("ip link show {name}")))?
        .map(|m| m.header.index)
        .ok_or_else(|| NetlinkError::NoSuchLink(name.to_string()))
}
