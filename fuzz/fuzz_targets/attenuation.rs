//! Attenuated tokens (`wisp1.<org>.<token-id>.<caveats>.<signature>`), parsed from every
//! request's `Authorization` header before anything is checked.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wisp_api::attenuation::{
    attenuate, secret_digest, AttenuatedToken, Caveat, Op, MAX_CAVEATS, MAX_TOKEN_LEN,
};

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(t) = AttenuatedToken::parse(s) else {
        return;
    };
    assert!(s.len() <= MAX_TOKEN_LEN);
    assert!(t.caveats.len() <= MAX_CAVEATS);
    assert!(!t.org_slug.is_empty() && !t.token_id.is_empty());

    // The text form round-trips.
    let text = t.encode();
    assert_eq!(AttenuatedToken::parse(&text).as_ref(), Ok(&t), "{text}");

    // Narrowing never widens: whatever the token allows after more caveats it allowed before,
    // and the narrowed token verifies exactly when the original does.
    let digest = secret_digest("fuzz-secret");
    let more = [Caveat::Ops(vec![Op::Read]), Caveat::Sprite("a".into())];
    if let Ok(narrow) = t.attenuate(&more) {
        assert_eq!(narrow.verify(&digest), t.verify(&digest));
        for now in [0, u64::MAX] {
            for op in Op::ALL {
                for sprite in [None, Some("a"), Some("b")] {
                    let after = narrow.restrictions().check(now, op, sprite).is_ok();
                    let before = t.restrictions().check(now, op, sprite).is_ok();
                    assert!(!after || before, "{op:?} {sprite:?} at {now}");
                }
            }
        }
        // Attenuating the text form continues the same chain.
        assert_eq!(attenuate(&text, &more).as_ref(), Ok(&narrow));
    }
});
