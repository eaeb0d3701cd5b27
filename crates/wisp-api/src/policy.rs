//! Network policy documents (`GET|POST /v1/sprites/{name}/policy/network`, Sprites API §3.9).
//!
//! `{"rules":[rule…]}` where a rule is exactly one of `{"domain": PATTERN, "action":
//! "allow"|"deny"}` or `{"include": "defaults"}` (with an optional `action`). Decoding is
//! strict, as the Sprites server's is: unknown fields, a missing `rules` key, a rule with both
//! or neither form, an unknown action or bundle, and malformed patterns are all refused.
//!
//! Patterns: an exact host name (`api.example.com`), `*.example.com` (its subdomains, not
//! `example.com` itself) or `*` (everything).

use serde::{Deserialize, Serialize};

/// The only bundle `include` accepts.
pub const DEFAULTS_BUNDLE: &str = "defaults";

/// What a matching rule does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Allow,
    Deny,
}

/// One rule as it travels on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct PolicyRule {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<Action>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(pattern = "^defaults$"))]
    pub include: Option<String>,
}

impl PolicyRule {
    pub fn domain(pattern: &str, action: Action) -> Self {
        PolicyRule {
            domain: Some(pattern.to_string()),
            action: Some(action),
            include: None,
        }
    }

    pub fn include_defaults() -> Self {
        PolicyRule {
            domain: None,
            action: None,
            include: Some(DEFAULTS_BUNDLE.to_string()),
        }
    }
}

/// A whole network policy. No rules: unrestricted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct NetworkPolicy {
    pub rules: Vec<PolicyRule>,
}

impl NetworkPolicy {
    /// Strict decode plus [`NetworkPolicy::validate`]; patterns come back lower-cased.
    pub fn from_json(bytes: &[u8]) -> Result<Self, String> {
        let mut p: NetworkPolicy = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        p.validate()?;
        for r in &mut p.rules {
            if let Some(d) = &mut r.domain {
                *d = d.to_ascii_lowercase();
            }
        }
        Ok(p)
    }

    /// Whether any enforcement applies (`{"rules":[]}` is unrestricted).
    pub fn is_restricted(&self) -> bool {
        !self.rules.is_empty()
    }

    pub fn validate(&self) -> Result<(), String> {
        for (i, r) in self.rules.iter().enumerate() {
            let n = i + 1;
            match (&r.domain, &r.include) {
                (Some(d), None) => {
                    if r.action.is_none() {
                        return Err(format!("rule {n}: \"action\" is required with \"domain\""));
                    }
                    validate_pattern(d).map_err(|e| format!("rule {n}: {e}"))?;
                }
                (None, Some(b)) => {
                    if b != DEFAULTS_BUNDLE {
                        return Err(format!(
                            "rule {n}: unknown bundle {b:?} (only \"{DEFAULTS_BUNDLE}\")"
                        ));
                    }
                }
                (Some(_), Some(_)) => {
                    return Err(format!(
                        "rule {n}: \"domain\" and \"include\" are mutually exclusive"
                    ))
                }
                (None, None) => {
                    return Err(format!("rule {n}: needs \"domain\" or \"include\""));
                }
            }
        }
        Ok(())
    }

    /// Adds or replaces the rule for exactly `pattern` (the CLI's `allow`/`deny`).
    pub fn set_domain(&mut self, pattern: &str, action: Action) {
        let pattern = pattern.to_ascii_lowercase();
        self.rules
            .retain(|r| r.domain.as_deref().map(str::to_ascii_lowercase) != Some(pattern.clone()));
        self.rules.push(PolicyRule::domain(&pattern, action));
    }
}

/// `*`, `*.example.com` or a host name: labels of letters, digits, `-` and `_`, 1–63 bytes
/// each, 253 at most in all.
pub fn validate_pattern(pattern: &str) -> Result<(), String> {
    if pattern == "*" {
        return Ok(());
    }
    let host = pattern.strip_prefix("*.").unwrap_or(pattern);
    let host = host.strip_suffix('.').unwrap_or(host);
    if host.is_empty() || host.len() > 253 {
        return Err(format!("invalid domain pattern {pattern:?}"));
    }
    for label in host.split('.') {
        let ok = !label.is_empty()
            && label.len() <= 63
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            && !label.starts_with('-')
            && !label.ends_with('-');
        if !ok {
            return Err(format!("invalid domain pattern {pattern:?}"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<NetworkPolicy, String> {
        NetworkPolicy::from_json(s.as_bytes())
    }

    #[test]
    fn good_documents() {
        assert_eq!(parse(r#"{"rules":[]}"#).unwrap(), NetworkPolicy::default());
        let p = parse(
            r#"{"rules":[{"domain":"GitHub.com","action":"allow"},{"include":"defaults"},
                {"domain":"*.example.com","action":"deny"},{"domain":"*","action":"deny"},
                {"include":"defaults","action":"allow"}]}"#,
        )
        .unwrap();
        assert_eq!(p.rules.len(), 5);
        assert_eq!(p.rules[0].domain.as_deref(), Some("github.com"));
        assert_eq!(p.rules[2].action, Some(Action::Deny));
        assert!(p.is_restricted());
        // Round trip: absent fields stay absent.
        let text = serde_json::to_string(&p).unwrap();
        assert!(
            text.starts_with(
                r#"{"rules":[{"domain":"github.com","action":"allow"},{"include":"defaults"}"#
            ),
            "{text}"
        );
    }

    #[test]
    fn bad_documents() {
        for bad in [
            r#"{}"#,
            r#"{"rules":null}"#,
            r#"{"rules":[],"extra":1}"#,
            r#"{"rules":[{}]}"#,
            r#"{"rules":[{"domain":"a.com"}]}"#,
            r#"{"rules":[{"domain":"a.com","action":"maybe"}]}"#,
            r#"{"rules":[{"domain":"a.com","action":"allow","port":1}]}"#,
            r#"{"rules":[{"include":"others"}]}"#,
            r#"{"rules":[{"include":"defaults","domain":"a.com","action":"allow"}]}"#,
            r#"{"rules":[{"domain":"","action":"allow"}]}"#,
            r#"{"rules":[{"domain":"a..com","action":"allow"}]}"#,
            r#"{"rules":[{"domain":"a.*.com","action":"allow"}]}"#,
            r#"{"rules":[{"domain":"exa mple.com","action":"allow"}]}"#,
            r#"{"rules":[{"domain":"*.","action":"allow"}]}"#,
            r#"["rules"]"#,
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn set_domain_replaces() {
        let mut p = NetworkPolicy::default();
        p.set_domain("A.com", Action::Allow);
        p.set_domain("b.com", Action::Allow);
        p.set_domain("a.com", Action::Deny);
        assert_eq!(
            p.rules,
            vec![
                PolicyRule::domain("b.com", Action::Allow),
                PolicyRule::domain("a.com", Action::Deny)
            ]
        );
    }
}
