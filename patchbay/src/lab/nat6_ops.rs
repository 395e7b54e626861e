//! IPv6 modes on routers: address-family checks, NAT66/NPTv6 rules and the
//! NAT64 translator (`tayga`). Rule and configuration text come from
//! [`crate::nat`]; this layer gathers the router's state and applies it.

use std::net::Ipv6Addr;

use crate::addr::{self, IpSupport};
use crate::error::{Error, NetlinkContext, Result};
use crate::nat::{self, NAT64_TUN, NatV6Mode};
use crate::sys::{cmd, netlink, nft};

use super::router::Router;

impl super::node::Iface {
    /// The interface's IPv6 link-local address (`fe80::/64`, derived from
    /// its MAC as the kernel does). Every interface has one, whatever the
    /// LAN's [`IpSupport`]; use it with a scope, e.g. `fe80::…%eth0`.
    pub fn ll6(&self) -> Ipv6Addr {
        addr::link_local(self.mac)
    }
}

impl Router {
    /// Applies the build-time IPv6 mode.
    pub(crate) async fn configure_v6(&self, mode: NatV6Mode, lan_v6: Ipv6Addr) -> Result<()> {
        match mode {
            NatV6Mode::None => Ok(()),
            NatV6Mode::Masquerade | NatV6Mode::Nptv6 => {
                let ruleset =
                    nat::render_nat6(mode, "wan", lan_v6, addr::nptv6_external_of(lan_v6));
                let what = format!("IPv6 NAT ({}) of router {}", mode.name(), self.name());
                nft::apply(self.netns(), &what, ruleset).await?;
                Ok(())
            }
            NatV6Mode::Nat64 => self.start_nat64(lan_v6).await,
        }
    }

    /// The router's IPv6 NAT mode.
    pub fn nat_v6(&self) -> Result<NatV6Mode> {
        let lab = self.lab()?;
        let mut t = lab.topo();
        Ok(t.router_mut(self.name())?.nat_v6)
    }

    /// The address families of the router's LAN.
    pub fn ip_support(&self) -> Result<IpSupport> {
        let lab = self.lab()?;
        let mut t = lab.topo();
        Ok(t.router_mut(self.name())?.lan.ip)
    }

    /// The external IPv6 address an NPTv6 router maps a LAN address to
    /// (`None` unless the router's mode is [`NatV6Mode::Nptv6`] and `lan`
    /// is on its LAN).
    pub fn nptv6_external(&self, lan: Ipv6Addr) -> Option<Ipv6Addr> {
        let prefix = self.lan_ip6()?;
        if self.nat_v6().ok()? != NatV6Mode::Nptv6
            || u128::from(lan) >> 64 != u128::from(prefix) >> 64
        {
            return None;
        }
        let ext = addr::nptv6_external_of(prefix);
        Some(Ipv6Addr::from(
            (u128::from(ext) & !u128::from(u64::MAX)) | (u128::from(lan) & u128::from(u64::MAX)),
        ))
    }

    async fn start_nat64(&self, lan_v6: Ipv6Addr) -> Result<()> {
        let lab = self.lab()?;
        let dir = lab.state_dir()?;
        let conf = dir.join(format!("tayga-{}.conf", self.name()));
        std::fs::write(&conf, nat::render_tayga_conf(lan_v6)).map_err(|source| Error::Io {
            context: format!("writing {}", conf.display()),
            source,
        })?;
        let what = format!("NAT64 of router {}", self.name());
        // Creating the TUN device: a failure's CmdError names the command,
        // the namespace and what tayga said.
        cmd::run(
            self.netns(),
            "tayga",
            [
                std::ffi::OsStr::new("--mktun"),
                "--config".as_ref(),
                conf.as_os_str(),
            ],
            None,
        )
        .await?;
        let tayga6 = nat::tayga_v6(lan_v6);
        self.netns()
            .run(move || async move {
                let index = netlink::index_of(NAT64_TUN).await?;
                netlink::set_up(index, true).await?;
                netlink::add_route_dev_v4(nat::NAT64_POOL, 24, index).await?;
                netlink::add_route_dev_v6(nat::NAT64_PREFIX, 96, index).await?;
                netlink::add_route_dev_v6(tayga6, 128, index).await
            })
            .await?
            .ctx(|| what.clone())?;
        nft::apply(self.netns(), &what, nat::render_nat64_masq("wan")).await?;
        // tayga's own messages (start-up, refusals) go to a log next to
        // its configuration, for whoever debugs a NAT64 path.
        let log_path = dir.join(format!("tayga-{}.log", self.name()));
        let log = std::fs::File::create(&log_path).map_err(|source| Error::Io {
            context: format!("creating {}", log_path.display()),
            source,
        })?;
        let log2 = log.try_clone().map_err(|source| Error::Io {
            context: format!("duplicating {}", log_path.display()),
            source,
        })?;
        let mut tayga = tokio::process::Command::new("tayga");
        tayga
            .arg("-d")
            .arg("--config")
            .arg(&conf)
            .stdin(std::process::Stdio::null())
            .stdout(log)
            .stderr(log2);
        // Dropping the handle leaves the translator running (tokio reaps it
        // when it exits): it lives as long as the router, and the lab's
        // cgroup (or the worker's death signal) ends it with the lab.
        drop(self.spawn_command(tayga)?);
        Ok(())
    }
}
