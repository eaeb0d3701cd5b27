//! Attenuated tokens: a holder narrows a token offline, and nobody can widen it again.
//!
//! The design is a macaroon-style HMAC chain. For the token with id `T` and secret `S`
//! (the full token is `org-slug/org-id/T/S`), the chain key starts as
//!
//! ```text
//! k0 = HMAC-SHA256(key = sha256(S), "wisp-attenuation-v1:" + T)
//! ```
//!
//! and each caveat `c_i`, in its canonical JSON form, advances it: `k_{i+1} = HMAC(k_i, c_i)`.
//! The attenuated token is
//!
//! ```text
//! wisp1.<org-slug>.<T>.<base64url(JSON array of the caveats)>.<hex(k_n)>
//! ```
//!
//! The holder of the full token knows `S` and so `k0`; wispd stores `sha256(S)` already (to
//! check full tokens), so it recomputes the chain without storing anything new. Adding a
//! caveat needs only `k_n` (which the attenuated token carries): attenuating an attenuated
//! token continues the chain. Removing, reordering or altering a caveat changes the chain's
//! end, and computing a shorter chain's key from a longer one would invert HMAC-SHA256.
//! Every caveat must hold, so more caveats can only narrow. A caveat type this code does not
//! know makes the whole token invalid (a newer client's restriction is never ignored).
//!
//! Dependencies: `hmac` + `sha2` (the RustCrypto implementations; the chain needs a real
//! keyed MAC, which is not something to hand-roll in a shared crate), `base64` and `hex` for the
//! token's text form, `subtle` for the constant-time comparison of the chain's end. They are
//! pure computation (no I/O), which keeps this crate what it is: codecs shared by the daemon
//! and the CLI.

use base64::Engine;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The first dot-separated part of every attenuated token.
pub const TOKEN_PREFIX: &str = "wisp1";
/// Domain separation of the chain's first key.
const KEY_CONTEXT: &str = "wisp-attenuation-v1:";
/// Most caveats one token may carry (bounds the work of a check).
pub const MAX_CAVEATS: usize = 64;
/// Longest attenuated token accepted.
pub const MAX_TOKEN_LEN: usize = 16 * 1024;

/// A class of operations on sprites. Token and organization management belongs to none of
/// them: an attenuated token may never do it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Op {
    /// Looking: GET/HEAD of sprites, checkpoints, services, policies, file reads and lists.
    Read,
    /// Running things: exec, attach, session kill, control, TCP proxy, ports, the sprite URL.
    Exec,
    /// Changing things: create, update, delete, sleep, checkpoint, restore, file writes,
    /// services, policy changes.
    Write,
}

impl Op {
    pub const ALL: [Op; 3] = [Op::Read, Op::Exec, Op::Write];

    pub fn as_str(self) -> &'static str {
        match self {
            Op::Read => "read",
            Op::Exec => "exec",
            Op::Write => "write",
        }
    }

    /// `read`, `exec` or `write`.
    pub fn parse(s: &str) -> Option<Op> {
        Op::ALL.into_iter().find(|o| o.as_str() == s.trim())
    }
}

/// One restriction. The JSON form is an object with exactly one key: `{"sprite": "box"}`,
/// `{"sprite_prefix": "ci-"}`, `{"ops": ["read", "exec"]}`, `{"expires": 1767225600}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Caveat {
    /// Only the sprite with exactly this name.
    Sprite(String),
    /// Only sprites whose names start with this.
    SpritePrefix(String),
    /// Only these classes of operations.
    Ops(Vec<Op>),
    /// Not at or after this instant (Unix seconds).
    Expires(u64),
}

impl Caveat {
    /// The bytes the chain signs: the caveat's canonical (serde) JSON.
    pub fn canonical(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a caveat always serializes")
    }
}

/// Why an operation is refused by a token's caveats.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    #[error("the token has expired")]
    Expired,
    #[error("the token does not allow {0} operations")]
    Op(&'static str),
    #[error("the token does not allow access to sprite {0:?}")]
    Sprite(String),
}

/// Why a token string is not a valid attenuated token, or cannot be attenuated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("not a wisp token: expected org/org-id/token-id/secret or wisp1.…")]
    Malformed,
    #[error("attenuated token: {0}")]
    BadCaveats(String),
    #[error("attenuated token: more than {MAX_CAVEATS} caveats")]
    TooManyCaveats,
}

/// What a list of caveats allows. All must hold.
#[derive(Debug, Clone, Copy)]
pub struct Caveats<'a>(pub &'a [Caveat]);

impl Caveats<'_> {
    /// Whether an `expires` caveat has passed at `now` (Unix seconds).
    pub fn expired(&self, now: u64) -> bool {
        self.0
            .iter()
            .any(|c| matches!(c, Caveat::Expires(t) if now >= *t))
    }

    pub fn allows_op(&self, op: Op) -> bool {
        self.0.iter().all(|c| match c {
            Caveat::Ops(ops) => ops.contains(&op),
            _ => true,
        })
    }

    pub fn allows_sprite(&self, name: &str) -> bool {
        self.0.iter().all(|c| match c {
            Caveat::Sprite(n) => n == name,
            Caveat::SpritePrefix(p) => name.starts_with(p.as_str()),
            _ => true,
        })
    }

    /// Whether any caveat restricts sprite names.
    pub fn restricts_sprites(&self) -> bool {
        self.0
            .iter()
            .any(|c| matches!(c, Caveat::Sprite(_) | Caveat::SpritePrefix(_)))
    }

    /// Checks an operation of class `op`, on the sprite `sprite` when it names one.
    pub fn check(&self, now: u64, op: Op, sprite: Option<&str>) -> Result<(), Denied> {
        if self.expired(now) {
            return Err(Denied::Expired);
        }
        if !self.allows_op(op) {
            return Err(Denied::Op(op.as_str()));
        }
        if let Some(name) = sprite {
            if !self.allows_sprite(name) {
                return Err(Denied::Sprite(name.to_string()));
            }
        }
        Ok(())
    }
}

type HmacSha256 = Hmac<Sha256>;

fn hmac(key: &[u8], msg: &[u8]) -> [u8; 32] {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(msg);
    mac.finalize().into_bytes().into()
}

/// `sha256(secret)`: what wispd stores of a token, and the key of its chain.
pub fn secret_digest(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// `k0` of the token `token_id` whose secret has the digest `digest`.
pub fn root_key(digest: &[u8; 32], token_id: &str) -> [u8; 32] {
    hmac(digest, format!("{KEY_CONTEXT}{token_id}").as_bytes())
}

/// The chain's key after `caveats`, starting from `key`.
pub fn chain(key: &[u8; 32], caveats: &[Caveat]) -> [u8; 32] {
    caveats.iter().fold(*key, |k, c| hmac(&k, &c.canonical()))
}

/// A parsed `wisp1.…` token. Parsing checks the form only; [`AttenuatedToken::verify`] checks
/// the chain against the stored digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttenuatedToken {
    pub org_slug: String,
    pub token_id: String,
    pub caveats: Vec<Caveat>,
    /// `k_n`: the signature, and the key for further caveats.
    pub signature: [u8; 32],
}

/// Whether `token` has the attenuated form (it may still be invalid).
pub fn is_attenuated(token: &str) -> bool {
    token.starts_with("wisp1.")
}

impl AttenuatedToken {
    /// Parses `wisp1.<org-slug>.<token-id>.<caveats>.<signature>`.
    pub fn parse(token: &str) -> Result<Self, TokenError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(TokenError::Malformed);
        }
        let parts: Vec<&str> = token.split('.').collect();
        let [prefix, org_slug, token_id, caveats, sig] = parts[..] else {
            return Err(TokenError::Malformed);
        };
        if prefix != TOKEN_PREFIX || org_slug.is_empty() || token_id.is_empty() {
            return Err(TokenError::Malformed);
        }
        let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(caveats)
            .map_err(|_| TokenError::BadCaveats("caveats are not base64url".into()))?;
        let caveats: Vec<Caveat> = serde_json::from_slice(&json)
            .map_err(|e| TokenError::BadCaveats(format!("unknown or invalid caveat: {e}")))?;
        if caveats.len() > MAX_CAVEATS {
            return Err(TokenError::TooManyCaveats);
        }
        let mut signature = [0u8; 32];
        hex::decode_to_slice(sig, &mut signature).map_err(|_| TokenError::Malformed)?;
        Ok(AttenuatedToken {
            org_slug: org_slug.to_string(),
            token_id: token_id.to_string(),
            caveats,
            signature,
        })
    }

    /// The token's text form.
    pub fn encode(&self) -> String {
        let json = serde_json::to_vec(&self.caveats).expect("caveats always serialize");
        format!(
            "{TOKEN_PREFIX}.{}.{}.{}.{}",
            self.org_slug,
            self.token_id,
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json),
            hex::encode(self.signature)
        )
    }

    /// Whether the chain from the secret with digest `digest` ends in this signature
    /// (constant-time comparison).
    pub fn verify(&self, digest: &[u8; 32]) -> bool {
        let expected = chain(&root_key(digest, &self.token_id), &self.caveats);
        expected.ct_eq(&self.signature).into()
    }

    /// This token with `more` caveats appended (no secret needed).
    pub fn attenuate(&self, more: &[Caveat]) -> Result<Self, TokenError> {
        if self.caveats.len() + more.len() > MAX_CAVEATS {
            return Err(TokenError::TooManyCaveats);
        }
        let mut caveats = self.caveats.clone();
        caveats.extend_from_slice(more);
        Ok(AttenuatedToken {
            org_slug: self.org_slug.clone(),
            token_id: self.token_id.clone(),
            caveats,
            signature: chain(&self.signature, more),
        })
    }

    pub fn restrictions(&self) -> Caveats<'_> {
        Caveats(&self.caveats)
    }
}

/// Narrows `token` (a full `org/org-id/token-id/secret` token or an attenuated one) by
/// `more` caveats, offline.
pub fn attenuate(token: &str, more: &[Caveat]) -> Result<AttenuatedToken, TokenError> {
    let token = token.trim();
    if is_attenuated(token) {
        return AttenuatedToken::parse(token)?.attenuate(more);
    }
    let parts = crate::token::parse_token(token).ok_or(TokenError::Malformed)?;
    let root = AttenuatedToken {
        org_slug: parts.org_slug.to_string(),
        token_id: parts.token_id.to_string(),
        caveats: Vec::new(),
        signature: root_key(&secret_digest(parts.secret), parts.token_id),
    };
    root.attenuate(more)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FULL: &str = "acme/o1234/tabcd/s3cret";

    fn digest() -> [u8; 32] {
        secret_digest("s3cret")
    }

    fn tamper_caveats(t: &AttenuatedToken, caveats: Vec<Caveat>) -> AttenuatedToken {
        AttenuatedToken {
            caveats,
            ..t.clone()
        }
    }

    #[test]
    fn caveat_json_forms() {
        let cs = vec![
            Caveat::Sprite("box".into()),
            Caveat::SpritePrefix("ci-".into()),
            Caveat::Ops(vec![Op::Read, Op::Exec]),
            Caveat::Expires(1767225600),
        ];
        assert_eq!(
            serde_json::to_string(&cs).unwrap(),
            r#"[{"sprite":"box"},{"sprite_prefix":"ci-"},{"ops":["read","exec"]},{"expires":1767225600}]"#
        );
        for bad in [
            r#"[{"host":"x"}]"#,
            r#"[{"sprite":"a","ops":["read"]}]"#,
            r#"[{"ops":["read","sudo"]}]"#,
            r#"[{"expires":"soon"}]"#,
            r#"[{}]"#,
            r#"{"sprite":"a"}"#,
        ] {
            assert!(serde_json::from_str::<Vec<Caveat>>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn narrowing_verifies_and_round_trips() {
        let t = attenuate(FULL, &[Caveat::Sprite("box".into())]).unwrap();
        assert_eq!(
            (t.org_slug.as_str(), t.token_id.as_str()),
            ("acme", "tabcd")
        );
        let text = t.encode();
        assert!(text.starts_with("wisp1.acme.tabcd."));
        assert!(is_attenuated(&text));
        let parsed = AttenuatedToken::parse(&text).unwrap();
        assert_eq!(parsed, t);
        assert!(parsed.verify(&digest()));
        assert!(!parsed.verify(&secret_digest("other")));

        // Attenuating the attenuated token continues the chain: same result as doing both at
        // once from the full token.
        let more = attenuate(&text, &[Caveat::Ops(vec![Op::Read])]).unwrap();
        assert!(more.verify(&digest()));
        let both = attenuate(
            FULL,
            &[Caveat::Sprite("box".into()), Caveat::Ops(vec![Op::Read])],
        )
        .unwrap();
        assert_eq!(more, both);

        // No caveats: still a valid (attenuated-form) token.
        let none = attenuate(FULL, &[]).unwrap();
        assert!(none.verify(&digest()));
        assert!(AttenuatedToken::parse(&none.encode())
            .unwrap()
            .verify(&digest()));
    }

    #[test]
    fn removing_reordering_altering_fail() {
        let a = Caveat::Sprite("box".into());
        let b = Caveat::Ops(vec![Op::Read]);
        let c = Caveat::Expires(u64::MAX);
        let t = attenuate(FULL, &[a.clone(), b.clone(), c.clone()]).unwrap();
        assert!(t.verify(&digest()));
        // Removed (last, first, all).
        assert!(!tamper_caveats(&t, vec![a.clone(), b.clone()]).verify(&digest()));
        assert!(!tamper_caveats(&t, vec![b.clone(), c.clone()]).verify(&digest()));
        assert!(!tamper_caveats(&t, vec![]).verify(&digest()));
        // Reordered.
        assert!(!tamper_caveats(&t, vec![b.clone(), a.clone(), c.clone()]).verify(&digest()));
        // Altered.
        assert!(!tamper_caveats(
            &t,
            vec![Caveat::Sprite("other".into()), b.clone(), c.clone()]
        )
        .verify(&digest()));
        assert!(!tamper_caveats(
            &t,
            vec![a.clone(), Caveat::Ops(vec![Op::Read, Op::Write]), c.clone()]
        )
        .verify(&digest()));
        // Another token id under the same secret.
        let other_id = AttenuatedToken {
            token_id: "tother".into(),
            ..t.clone()
        };
        assert!(!other_id.verify(&digest()));
        // Signature bits flipped.
        for i in [0, 15, 31] {
            let mut bad = t.clone();
            bad.signature[i] ^= 1;
            assert!(!bad.verify(&digest()));
        }
        // Text-level tampering: each part of the string.
        let text = t.encode();
        let parts: Vec<&str> = text.split('.').collect();
        let alt_caveats = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(serde_json::to_vec(&vec![a.clone(), c.clone()]).unwrap());
        let forged = format!(
            "{}.{}.{}.{}.{}",
            parts[0], parts[1], parts[2], alt_caveats, parts[4]
        );
        assert!(!AttenuatedToken::parse(&forged).unwrap().verify(&digest()));
    }

    #[test]
    fn malformed_tokens() {
        for bad in [
            "",
            "wisp1",
            "wisp1.a.b.W10",
            "wisp1.a.b.W10.00",
            "wisp1..b.W10.",
            "wisp2.a.b.W10.0000000000000000000000000000000000000000000000000000000000000000",
            "wisp1.a.b.!!.0000000000000000000000000000000000000000000000000000000000000000",
            "wisp1.a.b.W10.0000000000000000000000000000000000000000000000000000000000000000.x",
        ] {
            assert!(AttenuatedToken::parse(bad).is_err(), "{bad}");
        }
        let ok = "wisp1.a.b.W10.0000000000000000000000000000000000000000000000000000000000000000";
        assert!(AttenuatedToken::parse(ok).is_ok());
        // An unknown caveat type rejects the token.
        let unknown =
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(br#"[{"ip":"1.2.3.4"}]"#);
        let t = format!("wisp1.a.b.{unknown}.{}", "00".repeat(32));
        assert!(matches!(
            AttenuatedToken::parse(&t),
            Err(TokenError::BadCaveats(_))
        ));
        assert_eq!(attenuate("a/b/c", &[]), Err(TokenError::Malformed));
        let many = vec![Caveat::Expires(1); MAX_CAVEATS + 1];
        assert_eq!(attenuate(FULL, &many), Err(TokenError::TooManyCaveats));
    }

    #[test]
    fn expiry() {
        let cs = [Caveat::Expires(100)];
        let c = Caveats(&cs);
        assert!(!c.expired(99));
        assert!(c.expired(100));
        assert_eq!(c.check(99, Op::Read, None), Ok(()));
        assert_eq!(c.check(100, Op::Read, None), Err(Denied::Expired));
        // The earliest expiry wins whatever the order.
        let cs = [Caveat::Expires(200), Caveat::Expires(100)];
        assert!(Caveats(&cs).expired(150));
    }

    #[test]
    fn op_classes() {
        let cs = [Caveat::Ops(vec![Op::Read, Op::Exec])];
        let c = Caveats(&cs);
        assert!(c.allows_op(Op::Read) && c.allows_op(Op::Exec) && !c.allows_op(Op::Write));
        assert_eq!(c.check(0, Op::Write, None), Err(Denied::Op("write")));
        // Two ops caveats: the intersection.
        let cs = [
            Caveat::Ops(vec![Op::Read, Op::Exec]),
            Caveat::Ops(vec![Op::Exec, Op::Write]),
        ];
        let c = Caveats(&cs);
        assert!(c.allows_op(Op::Exec) && !c.allows_op(Op::Read) && !c.allows_op(Op::Write));
        // No ops caveat: every class.
        assert!(Op::ALL.iter().all(|o| Caveats(&[]).allows_op(*o)));
        assert_eq!(Op::parse("exec"), Some(Op::Exec));
        assert_eq!(Op::parse("admin"), None);
    }

    #[test]
    fn sprite_and_prefix_matching() {
        let cs = [Caveat::SpritePrefix("ci-".into())];
        let c = Caveats(&cs);
        assert!(c.restricts_sprites());
        assert!(c.allows_sprite("ci-1") && c.allows_sprite("ci-"));
        assert!(!c.allows_sprite("ci") && !c.allows_sprite("prod-ci-1"));
        let cs = [
            Caveat::SpritePrefix("ci-".into()),
            Caveat::Sprite("ci-7".into()),
        ];
        let c = Caveats(&cs);
        assert!(c.allows_sprite("ci-7") && !c.allows_sprite("ci-8"));
        assert_eq!(
            c.check(0, Op::Read, Some("ci-8")),
            Err(Denied::Sprite("ci-8".into()))
        );
        assert_eq!(c.check(0, Op::Read, None), Ok(()));
        // Disjoint sprite caveats allow nothing.
        let cs = [Caveat::Sprite("a".into()), Caveat::Sprite("b".into())];
        assert!(!Caveats(&cs).allows_sprite("a") && !Caveats(&cs).allows_sprite("b"));
        assert!(!Caveats(&[]).restricts_sprites());
        assert!(Caveats(&[]).allows_sprite("anything"));
    }
}
