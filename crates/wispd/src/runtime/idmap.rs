//! How a sprite's ids (0..65535) sit on the host: read from its init's `uid_map` (the keeper
//! writes the same map for gids). wispd keeps no copy: the running sprite is the truth, so
//! a wispd restart never disagrees with a keeper that outlived it.

/// How the sprite's ids (0..65535) sit on the host: the first line of its init's `uid_map`.
/// A sprite with its own user namespace has root at some high host id; one without
/// (`--no-hardening`) has the identity map.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdMap {
    pub base: u32,
    pub count: u32,
}

impl IdMap {
    pub const IDENTITY: IdMap = IdMap {
        base: 0,
        count: u32::MAX,
    };

    /// Parses `uid_map` text; only a map from inside id 0 is ours to understand.
    pub fn parse(text: &str) -> Option<IdMap> {
        let f: Vec<u32> = text
            .lines()
            .next()?
            .split_whitespace()
            .map(|w| w.parse().ok())
            .collect::<Option<_>>()?;
        match f.as_slice() {
            [0, base, count] if *count > 0 => Some(IdMap {
                base: *base,
                count: *count,
            }),
            _ => None,
        }
    }

    /// The host id of the sprite's id `id`; `None` when the sprite has no such id.
    pub fn to_host(self, id: u32) -> Option<u32> {
        (id < self.count).then(|| self.base.checked_add(id))?
    }

    /// The sprite's id for a host id; ids the sprite cannot see show as `nobody` (65534),
    /// as the kernel shows them inside.
    pub fn to_sprite(self, host: u32) -> u32 {
        match host.checked_sub(self.base) {
            Some(id) if id < self.count => id,
            _ => 65534,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::IdMap;

    #[test]
    fn maps_sprite_ids_to_the_host_and_back() {
        let m = IdMap::parse("         0 1573978112      65536\n").unwrap();
        assert_eq!(m.to_host(0), Some(1_573_978_112));
        assert_eq!(m.to_host(1000), Some(1_573_979_112));
        assert_eq!(m.to_host(65536), None);
        assert_eq!(m.to_sprite(1_573_979_112), 1000);
        assert_eq!(m.to_sprite(0), 65534);
        assert_eq!(m.to_sprite(1_573_978_112 + 65536), 65534);
        let identity = IdMap::parse("0 0 4294967295\n").unwrap();
        assert_eq!(identity.to_host(1000), Some(1000));
        assert_eq!(identity.to_sprite(1000), 1000);
        assert_eq!(IdMap::parse("1 0 5\n"), None);
        assert_eq!(IdMap::parse(""), None);
        assert_eq!(IdMap::parse("0 x 5"), None);
    }
}
