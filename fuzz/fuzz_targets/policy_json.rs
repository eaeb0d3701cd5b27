//! Network policy documents as `POST .../policy/network` receives them.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wisp_api::policy::{validate_pattern, NetworkPolicy};
use wisp_api::policy_match::Compiled;

fuzz_target!(|data: &[u8]| {
    let Ok(p) = NetworkPolicy::from_json(data) else {
        return;
    };
    // Accepted documents are valid, lower-cased, and survive being stored and read back.
    p.validate().unwrap();
    for r in &p.rules {
        if let Some(d) = &r.domain {
            assert_eq!(d, &d.to_ascii_lowercase());
            validate_pattern(d).unwrap();
        }
    }
    let stored = serde_json::to_vec(&p).unwrap();
    assert_eq!(NetworkPolicy::from_json(&stored).as_ref(), Ok(&p));
    // Compiling it is deterministic, and a pattern's own name obeys its rule.
    let c = Compiled::new(&p);
    assert_eq!(c, Compiled::new(&p));
    assert_eq!(c.is_restricted(), p.is_restricted());
});
