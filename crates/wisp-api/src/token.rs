//! API tokens in the hosted system's four-part form: `org-slug/org-id/token-id/secret`.

/// A token split into its parts. The secret is the only part that proves anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenParts<'a> {
    pub org_slug: &'a str,
    pub org_id: &'a str,
    pub token_id: &'a str,
    pub secret: &'a str,
}

/// Splits a bearer token; `None` when it does not have four non-empty parts.
pub fn parse_token(token: &str) -> Option<TokenParts<'_>> {
    let mut it = token.split('/');
    let parts = TokenParts {
        org_slug: it.next()?,
        org_id: it.next()?,
        token_id: it.next()?,
        secret: it.next()?,
    };
    if it.next().is_some()
        || [parts.org_slug, parts.org_id, parts.token_id, parts.secret]
            .iter()
            .any(|p| p.is_empty())
    {
        return None;
    }
    Some(parts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn four_parts() {
        let t = parse_token("acme/o1/t1/s3cret").unwrap();
        assert_eq!(t.org_slug, "acme");
        assert_eq!(t.secret, "s3cret");
        assert!(parse_token("a/b/c").is_none());
        assert!(parse_token("a/b/c/d/e").is_none());
        assert!(parse_token("a//c/d").is_none());
    }
}
