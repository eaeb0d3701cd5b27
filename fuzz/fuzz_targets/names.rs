//! Names and small values that come straight from requests: sprite and service names,
//! checkpoint ids, bearer tokens, Go-style durations.
#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use wisp_api::checkpoint::is_valid_checkpoint_id;
use wisp_api::duration::parse_duration;
use wisp_api::name::validate_sprite_name;
use wisp_api::service::validate_service_name;
use wisp_api::token::parse_token;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    names(s);
    token(s);
    duration(s);
});

/// Names become DNS labels, file names and path components: an accepted one is a DNS label
/// made of `[a-z0-9-]` that cannot walk a path, no other spelling of it (case) is accepted, and
/// the stricter and looser rules agree with each other.
fn names(s: &str) {
    let ok = validate_sprite_name(s).is_ok();
    if ok {
        assert!((1..=63).contains(&s.len()));
        assert!(s
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'));
        assert!(!s.starts_with('-') && !s.ends_with('-'));
        // Host names are case-insensitive: no second valid name may reach the same URL.
        assert_eq!(s.to_ascii_lowercase(), s);
        assert!(
            validate_sprite_name(&s.to_ascii_uppercase()).is_err()
                || !s.contains(|c: char| c.is_ascii_lowercase())
        );
        // A sprite name is a host name label, so the policy's pattern rules take it too.
        assert!(wisp_api::policy::validate_pattern(s).is_ok());
    }
    // Service names are sprite names minus the reserved ones.
    if validate_service_name(s).is_ok() {
        assert!(ok);
    }
    if is_valid_checkpoint_id(s) {
        assert!(s.len() <= 45);
        assert!(s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'));
        assert!(s != "." && s != "..");
    }
}

/// A four-part token splits into non-empty parts without `/` that join back to the token.
fn token(s: &str) {
    let Some(t) = parse_token(s) else {
        return;
    };
    let parts = [t.org_slug, t.org_id, t.token_id, t.secret];
    for p in parts {
        assert!(!p.is_empty() && !p.contains('/'));
    }
    assert_eq!(parts.join("/"), s);
}

/// Durations are below the parser's bound, and an accepted one written back in seconds parses
/// to (nearly) the same value.
fn duration(s: &str) {
    let Ok(d) = parse_duration(s) else {
        return;
    };
    assert!(d < Duration::from_secs(1_000_000_000_000));
    let again = parse_duration(&format!("{}s", d.as_secs_f64()))
        .unwrap_or_else(|e| panic!("{d:?} from {s:?} does not parse back: {e}"));
    let diff = again.abs_diff(d);
    assert!(
        diff <= Duration::from_micros(1) + d / 1_000_000_000,
        "{s:?}: {d:?} != {again:?}"
    );
}
