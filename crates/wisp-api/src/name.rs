//! Sprite name rules: a name becomes a DNS label in the sprite's URL.

/// Why a sprite name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("name is required")]
    Empty,
    #[error("invalid sprite name format: at most 63 characters")]
    TooLong,
    #[error("invalid sprite name format: only lowercase letters, digits and '-' are allowed")]
    BadChar,
    #[error("invalid sprite name format: must start and end with a letter or digit")]
    BadEdge,
}

/// Checks a sprite name: 1–63 characters of `[a-z0-9-]`, starting and ending alphanumeric.
pub fn validate_sprite_name(name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if name.len() > 63 {
        return Err(NameError::TooLong);
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err(NameError::BadChar);
    }
    if name.starts_with('-') || name.ends_with('-') {
        return Err(NameError::BadEdge);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_dns_labels() {
        for ok in ["a", "my-sprite", "x1", &"a".repeat(63)] {
            assert_eq!(validate_sprite_name(ok), Ok(()), "{ok}");
        }
    }

    #[test]
    fn rejects_everything_else() {
        assert_eq!(validate_sprite_name(""), Err(NameError::Empty));
        assert_eq!(
            validate_sprite_name(&"a".repeat(64)),
            Err(NameError::TooLong)
        );
        for bad in ["A", "a_b", "a.b", "a b", "ü", "../x", "a/b"] {
            assert_eq!(validate_sprite_name(bad), Err(NameError::BadChar), "{bad}");
        }
        assert_eq!(validate_sprite_name("-a"), Err(NameError::BadEdge));
        assert_eq!(validate_sprite_name("a-"), Err(NameError::BadEdge));
    }
}
