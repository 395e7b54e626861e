//! Golden tests: the rendered rulesets are compared with files under
//! `golden/`. Set `PATCHBAY_BLESS=1` to rewrite them after a deliberate
//! change, then review the diff.

#![allow(clippy::unwrap_used, reason = "tests")]

use std::time::Duration;

use super::*;
use crate::nat::ConntrackTimeouts;

fn spec(mode: Nat, hairpin: bool) -> NatSpec {
    NatSpec {
        mode,
        hairpin,
        wan: "wan".into(),
        lan: "lan".into(),
        lan_net: "10.0.0.0".parse().unwrap(),
        lan_prefix: 24,
        wan_ip: "198.18.0.5".parse().unwrap(),
        timeouts: ConntrackTimeouts {
            udp: Duration::from_secs(3),
            ..Default::default()
        },
    }
}

fn golden(name: &str, got: &str) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("src/nat/render/golden")
        .join(format!("{name}.nft"));
    if std::env::var_os("PATCHBAY_BLESS").is_some() {
        std::fs::write(&path, got).unwrap();
    }
    let want = std::fs::read_to_string(&path).unwrap_or_default();
    assert_eq!(got, want, "golden file {} differs", path.display());
}

#[test]
fn golden_rulesets() {
    golden("none", &render_nat(&spec(Nat::None, false)));
    golden("full-cone", &render_nat(&spec(Nat::FullCone, false)));
    golden(
        "address-restricted",
        &render_nat(&spec(Nat::AddressRestricted, false)),
    );
    golden(
        "port-restricted-hairpin",
        &render_nat(&spec(Nat::PortRestricted, true)),
    );
    golden("symmetric", &render_nat(&spec(Nat::Symmetric, false)));
}

#[test]
fn every_timeout_comes_from_the_config() {
    let mut s = spec(Nat::AddressRestricted, true);
    s.timeouts.eim_map = Some(Duration::from_millis(2500));
    let r = render_nat(&s);
    assert_eq!(r.matches("2500ms").count(), 4, "{r}");
    assert!(!r.contains("3000ms"), "{r}");
    let k = s
        .timeouts
        .scaled(crate::compress::TimeScale::new(10.0).expect("k"));
    s.timeouts = k;
    assert!(render_nat(&s).contains("timeout 250ms"));
}

#[test]
fn upstream_names_render_as_their_rfc_modes_and_cgnat_is_eif() {
    let r = |m| render_nat(&spec(m, false));
    assert_eq!(r(Nat::Home), r(Nat::PortRestricted));
    assert_eq!(r(Nat::Corporate), r(Nat::Symmetric));
    assert_eq!(r(Nat::CloudNat), r(Nat::Symmetric));
    assert_eq!(
        r(Nat::Cgnat),
        r(Nat::FullCone),
        "CGNAT is EIM + EIF (RFC 6888)"
    );
}
