//! Unit tests of the runner's pure parts.

use super::*;

#[test]
fn mem_validation() {
    assert!(validate_mem("512M").is_ok());
    assert!(validate_mem("1024").is_ok());
    for bad in ["", "M", "512MM", "5x", "-1M"] {
        assert!(validate_mem(bad).is_err(), "{bad}");
    }
}

#[test]
fn clock_parsing() {
    assert_eq!(
        parse_clock("300000000000 302000000256\n"),
        Some(Duration::from_nanos(2_000_000_256))
    );
    assert_eq!(parse_clock("5 4"), None);
}

#[test]
fn uptime_parsing() {
    let (a, b) = parse_uptime("0.41 30.42\n").expect("parses");
    assert_eq!(a, Duration::from_millis(410));
    assert_eq!(b, Duration::from_millis(30420));
    assert!(parse_uptime("x").is_none());
}

#[test]
fn panic_excerpt_ends_at_the_panic_line() {
    let console = "a\nb cause\nKernel panic - not syncing: x\nCall Trace:\n";
    assert_eq!(
        panic_excerpt(console).as_deref(),
        Some("a\nb cause\nKernel panic - not syncing: x")
    );
    assert!(panic_excerpt("fine\n").is_none());
}

#[test]
fn missing_env_binary_is_named() {
    let err = VtError::UmlNotFound {
        searched: "a/*/linux".into(),
    };
    assert!(err.to_string().contains("cargo xtask build-uml"));
}
