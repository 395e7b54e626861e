#![allow(clippy::unwrap_used, reason = "tests")]

use super::*;

#[derive(Deserialize)]
struct Doc {
    link: LinkCondition,
}

fn parse(s: &str) -> Result<LinkCondition, toml::de::Error> {
    toml::from_str::<Doc>(s).map(|d| d.link)
}

#[test]
fn presets_by_name_and_table_overrides() {
    assert_eq!(parse("link = \"wifi\"").unwrap(), Preset::Wifi.condition());
    let c = parse("link = { preset = \"4g\", delay = \"1500us\", loss = \"2%\" }").unwrap();
    assert_eq!(c.delay, Duration::from_micros(1500));
    assert_eq!(c.loss, 2.0);
    assert_eq!(c.rate, Some(30_000_000));
    let c = parse("link = { rate = \"10mbit\" }").unwrap();
    assert!(!c.needs_netem());
    assert_eq!(c.rate, Some(10_000_000));
}

#[test]
fn bad_input_is_named() {
    let e = parse("link = \"5g\"").unwrap_err().to_string();
    assert!(e.contains("unknown link preset \"5g\""), "{e}");
    let e = parse("link = { loss = \"150%\" }").unwrap_err().to_string();
    assert!(e.contains("loss = 150% is out of range"), "{e}");
    let e = parse("link = { delay = \"-5ms\" }")
        .unwrap_err()
        .to_string();
    assert!(e.contains("negative duration \"-5ms\""), "{e}");
    let e = parse("link = { jitter = \"5ms\" }")
        .unwrap_err()
        .to_string();
    assert!(e.contains("jitter needs a delay"), "{e}");
    let e = parse("link = { delya = \"5ms\" }").unwrap_err().to_string();
    assert!(e.contains("unknown field `delya`"), "{e}");
    assert!(LinkCondition::default().loss(101.0).validate().is_err());
}

#[test]
fn timing_scales_delay_down_and_rate_up() {
    let c = Preset::Satellite.condition();
    let t = c
        .timing()
        .scaled(crate::compress::TimeScale::new(10.0).expect("k"));
    assert_eq!(t.delay_us, 30_000);
    assert_eq!(t.jitter_us, 2_000);
    assert_eq!(t.rate_bps, Some(100_000_000));
    let back = c.with_timing(t);
    assert_eq!(back.loss, c.loss);
    assert_eq!(back.delay, Duration::from_millis(30));
}

#[test]
fn serializes_round_trip() {
    let c = Preset::ThreeG.condition();
    let s = toml::to_string(&Doc2 { link: c.clone() }).unwrap();
    assert_eq!(parse(&s).unwrap(), c);
}

#[derive(Serialize)]
struct Doc2 {
    link: LinkCondition,
}
