//! The TOML schema of lab files, with validation.

use serde::{Deserialize, Serialize};

use super::step::Step;

/// A whole lab file.
#[derive(Debug, Clone, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct LabFile {
    /// Lab-wide options.
    #[serde(default)]
    pub(crate) lab: LabSection,
    /// Routers, in build order.
    #[serde(default, rename = "router")]
    pub(crate) routers: Vec<RouterSpec>,
    /// Devices, built after the routers.
    #[serde(default, rename = "device")]
    pub(crate) devices: Vec<DeviceSpec>,
    /// Steps, executed in order.
    #[serde(default, rename = "step")]
    pub(crate) steps: Vec<Step>,
    /// Names: hosts entries, nameservers, DNS servers.
    #[serde(default)]
    pub(crate) dns: Option<super::dns::DnsSection>,
    /// Regions (`[region.NAME]`), built before the routers.
    #[serde(default, rename = "region")]
    pub(crate) regions: std::collections::BTreeMap<String, RegionSpec>,
}

/// A `[region.NAME]` table.
#[derive(Debug, Clone, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RegionSpec {
    /// Links to other regions: region name → link condition (a preset or
    /// a table such as `{ delay = "40ms" }`, applied to both ends).
    #[serde(default)]
    pub links: std::collections::BTreeMap<String, crate::native::LinkCondition>,
}

/// The `[lab]` table.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct LabSection {
    /// Label of the lab.
    #[serde(default)]
    pub label: Option<String>,
    /// Pre-warm neighbour entries (default true).
    #[serde(default = "yes")]
    pub prewarm_neighbors: bool,
    /// Time scale k (default 1 = real time).
    #[serde(default)]
    pub time_scale: Option<f64>,
    /// `real` (default, possibly compressed by `time-scale`) or `virtual`
    /// (the CLI runs the lab inside a User-Mode-Linux kernel).
    #[serde(default)]
    pub time: Option<TimeMode>,
    /// Seed of a virtual-time run: the same seed repeats the run byte for byte
    /// (docs/determinism.md); default a random one, printed for replay.
    #[serde(default)]
    pub seed: Option<u64>,
    /// Collect eBPF TCP telemetry (default: on when k > 1).
    #[serde(default)]
    pub telemetry: Option<bool>,
    /// Compress by sysctls only, without eBPF.
    #[serde(default)]
    pub sysctl_only: bool,
    /// `tcp_syn_retries` in every namespace.
    #[serde(default)]
    pub tcp_syn_retries: Option<u8>,
    /// `tcp_retries2` in every namespace.
    #[serde(default)]
    pub tcp_retries2: Option<u8>,
    /// Output directory for run artifacts (see `docs/artifacts.md`).
    #[serde(default)]
    pub outdir: Option<std::path::PathBuf>,
    /// Keep the output directory after a passing run too.
    #[serde(default)]
    pub keep: bool,
    /// Interfaces (`node.iface`) captured to pcapng for the whole run
    /// (needs `outdir`).
    #[serde(default)]
    pub capture: Vec<String>,
}

impl Default for LabSection {
    fn default() -> Self {
        LabSection {
            label: None,
            prewarm_neighbors: true,
            time_scale: None,
            time: None,
            seed: None,
            telemetry: None,
            sysctl_only: false,
            tcp_syn_retries: None,
            tcp_retries2: None,
            outdir: None,
            keep: false,
            capture: vec![],
        }
    }
}

fn yes() -> bool {
    true
}

/// How a lab's time runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum TimeMode {
    /// Wall-clock time, divided by `time-scale` when it is above 1.
    Real,
    /// Virtual time inside a User-Mode-Linux kernel (exact, any speed).
    Virtual,
}

/// A `[[router]]` entry.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RouterSpec {
    /// Unique node name.
    pub name: String,
    /// Router whose LAN the uplink joins; absent: the exchange.
    #[serde(default)]
    pub upstream: Option<String>,
    /// NAT mode (default `none`).
    #[serde(default)]
    pub nat: Option<crate::native::Nat>,
    /// Hairpinning on the NAT.
    #[serde(default)]
    pub hairpin: Option<bool>,
    /// Conntrack timeouts of this router (scaled by the lab's k).
    #[serde(default)]
    pub conntrack: Option<crate::native::ConntrackTimeouts>,
    /// Firewall of the router (inbound = arriving on `wan`).
    #[serde(default)]
    pub firewall: Option<crate::native::Firewall>,
    /// Address families of the LAN: `v4-only`, `v6-only`, `dual-stack`.
    #[serde(default)]
    pub ip_support: Option<crate::IpSupport>,
    /// IPv6 NAT: `none`, `nptv6`, `masquerade`, `nat64`.
    #[serde(default)]
    pub nat_v6: Option<crate::NatV6Mode>,
    /// A router preset; the other keys override its values.
    #[serde(default)]
    pub preset: Option<crate::native::RouterPreset>,
    /// The region the router joins (instead of `upstream`).
    #[serde(default)]
    pub region: Option<String>,
    /// MTU of the uplink (both ends) and the LAN bridge.
    #[serde(default)]
    pub mtu: Option<u32>,
    /// Drop ICMP "fragmentation needed" / "packet too big" (PMTU black hole).
    #[serde(default)]
    pub block_icmp_frag_needed: bool,
}

/// A `[[device]]` entry.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct DeviceSpec {
    /// Unique node name.
    pub name: String,
    /// Interfaces (at least one).
    #[serde(default, rename = "iface")]
    pub ifaces: Vec<IfaceSpec>,
    /// Interface carrying the default route (default: the first).
    #[serde(default)]
    pub default_via: Option<String>,
    /// Firewall of the device (inbound = arriving on any interface).
    #[serde(default)]
    pub firewall: Option<crate::native::Firewall>,
    /// Nameserver of the device: an IP address or a node name.
    #[serde(default)]
    pub nameserver: Option<String>,
}

/// One device interface.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct IfaceSpec {
    /// Interface name inside the device (at most 15 bytes).
    pub name: String,
    /// The router whose LAN it joins.
    pub router: String,
    /// Link condition: a preset name or a table (delay, jitter, loss, rate…).
    #[serde(default)]
    pub link: Option<crate::native::LinkCondition>,
    /// Which direction `link` shapes: `out` (egress), `in` (ingress) or
    /// `both` (default).
    #[serde(default)]
    pub link_direction: Option<crate::Direction>,
    /// MTU of the link (both ends).
    #[serde(default)]
    pub mtu: Option<u32>,
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::Duration;

    use crate::labfile::{LabFile, StepKind};

    const GOOD: &str = r#"
[lab]
label = "t"

[[router]]
name = "isp"

[[router]]
name = "home"
upstream = "isp"

[[device]]
name = "server"
iface = [{ name = "eth0", router = "isp" }]

[[device]]
name = "client"
iface = [{ name = "eth0", router = "home" }]

[[step]]
run = "server"
cmd = "sleep 1"
background = "srv"

[[step]]
run = "client"
cmd = ["echo", "${server.ip}"]
expect-output = "198."

[[step]]
sleep = "150ms"

[[step]]
wait = "srv"
"#;

    #[test]
    fn parses_a_good_file() {
        let f = LabFile::parse(GOOD, Path::new("good.toml")).unwrap();
        assert_eq!(f.routers.len(), 2);
        assert_eq!(
            f.steps[2].kind().unwrap(),
            StepKind::Sleep(Duration::from_millis(150))
        );
        assert_eq!(
            f.steps[0].kind().unwrap(),
            StepKind::Spawn {
                node: "server".into(),
                name: "srv".into()
            }
        );
    }

    fn err(text: &str) -> String {
        LabFile::parse(text, Path::new("x.toml"))
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn syntax_errors_have_line_and_column() {
        let text = "[[router]]\nname = \"a\"\nupstream = \n";
        let parsed = LabFile::parse(text, Path::new("x.toml"));
        assert!(
            matches!(
                parsed,
                Err(crate::labfile::LabFileError::Parse { line: Some(3), .. })
            ),
            "{parsed:?}"
        );
        let e = err(text);
        assert!(e.contains("line 3"), "{e}");
        assert!(e.contains("column"), "{e}");
    }

    #[test]
    fn schema_errors_name_the_field() {
        let e = err("[[router]]\nname = \"a\"\nnmae = \"b\"\n");
        assert!(e.contains("nmae"), "{e}");
        assert!(e.contains("line 3"), "{e}");
    }

    #[test]
    fn reference_errors_are_clear() {
        assert!(
            err("[[router]]\nname=\"a\"\n[[router]]\nname=\"a\"\n").contains("duplicate node name")
        );
        assert!(
            err("[[router]]\nname=\"a\"\n[[device]]\nname=\"d\"\n").contains("has no interface")
        );
        assert!(
            err("[[router]]\nname=\"a\"\n[[device]]\nname=\"d\"\niface=[{name=\"e\",router=\"zz\"}]\n")
                .contains("unknown router \"zz\"")
        );
        assert!(err("[[step]]\nwait=\"nope\"\n").contains("no background step named"));
        assert!(err("[[step]]\nsleep=\"1s\"\nwait=\"x\"\n").contains("exactly one"));
        assert!(err("[[step]]\nsleep=\"-1s\"\n").contains("non-negative"));
        assert!(err("[[step]]\nsleep=\"1 fortnight\"\n").contains("unknown unit"));
    }

    #[test]
    fn realism_keys_validate_with_both_parts_named() {
        let e = err("[region.eu]\nlinks = { mars = { delay = \"40ms\" } }\n");
        assert!(
            e.contains("region \"eu\" links to unknown region \"mars\""),
            "{e}"
        );
        let e =
            err("[region.eu]\nlinks = { us = \"lan\" }\n[region.us]\nlinks = { eu = \"lan\" }\n");
        assert!(e.contains("declared in both"), "{e}");
        let e = err("[[router]]\nname = \"r\"\nregion = \"nowhere\"\n");
        assert!(e.contains("unknown region \"nowhere\""), "{e}");
        let e = err("[[router]]\nname = \"r\"\nmtu = 1000\n");
        assert!(e.contains("router \"r\"") && e.contains("1280"), "{e}");
        let e = err(
            "[[router]]\nname = \"r\"\n[[device]]\nname = \"d\"\niface = [{ name = \"eth0\", router = \"r\", mtu = 1200 }]\n",
        );
        assert!(e.contains("\"eth0\"") && e.contains("1280"), "{e}");
        let e = err("[[step]]\nbreak-region-link = [\"eu\", \"us\"]\n");
        assert!(
            e.contains("region link eu–us names an unknown region"),
            "{e}"
        );
        let ok = LabFile::parse(
            "[region.eu]\nlinks = { us = { delay = \"40ms\" } }\n[region.us]\n[[router]]\nname = \"home\"\npreset = \"home\"\nregion = \"eu\"\nmtu = 1400\nblock-icmp-frag-needed = true\nfirewall = { preset = \"corporate\", outbound = { udp = \"block-all\" } }\n[[device]]\nname = \"d\"\niface = [{ name = \"eth0\", router = \"region-us\", link = \"wifi-bad\", link-direction = \"out\" }]\n[[step]]\nlink = \"d.eth0\"\ncondition = { corrupt = \"1%\" }\ndirection = \"in\"\n[[step]]\nbreak-region-link = [\"eu\", \"us\"]\n",
            Path::new("ok.toml"),
        );
        assert!(ok.is_ok(), "{ok:?}");
    }
}
