//! Deciding a DNS name against a sprite's network policy (Sprites API §6.8). Pure logic,
//! here rather than in the daemon so that it can be fuzzed against a reference matcher.
//!
//! No rules: unrestricted. Otherwise the most specific rule wins: an exact name, then the
//! `*.suffix` with the longest suffix, then `*`; two rules of the same pattern with
//! different actions deny. A name no rule matches is denied.

use std::collections::HashMap;

use crate::policy::{Action, NetworkPolicy, DEFAULTS_BUNDLE};

/// What `{"include":"defaults"}` stands for: the registries, forges and APIs a developer
/// sandbox needs most (after the list the Sprites base environment derives from Claude
/// Code's default web allowlist).
pub const DEFAULT_DOMAINS: &[&str] = &[
    // AI APIs
    "api.anthropic.com",
    "statsig.anthropic.com",
    "api.openai.com",
    "generativelanguage.googleapis.com",
    "api.githubcopilot.com",
    // Forges
    "github.com",
    "*.github.com",
    "api.github.com",
    "codeload.github.com",
    "*.githubusercontent.com",
    "ghcr.io",
    "pkg.github.com",
    "gitlab.com",
    "*.gitlab.com",
    "registry.gitlab.com",
    "bitbucket.org",
    "*.bitbucket.org",
    // Containers
    "registry-1.docker.io",
    "auth.docker.io",
    "index.docker.io",
    "production.cloudflare.docker.com",
    "docker.io",
    "quay.io",
    "gcr.io",
    "*.gcr.io",
    "mcr.microsoft.com",
    "public.ecr.aws",
    // JavaScript
    "registry.npmjs.org",
    "npmjs.com",
    "www.npmjs.com",
    "registry.yarnpkg.com",
    "yarnpkg.com",
    "nodejs.org",
    "bun.sh",
    "deno.land",
    "jsr.io",
    // Python
    "pypi.org",
    "files.pythonhosted.org",
    "pythonhosted.org",
    "bootstrap.pypa.io",
    "astral.sh",
    // Rust
    "crates.io",
    "index.crates.io",
    "static.crates.io",
    "static.rust-lang.org",
    "sh.rustup.rs",
    "rustup.rs",
    // Go
    "proxy.golang.org",
    "sum.golang.org",
    "go.dev",
    "golang.org",
    "storage.googleapis.com",
    // Java
    "repo.maven.apache.org",
    "repo1.maven.org",
    "central.sonatype.com",
    "plugins.gradle.org",
    "services.gradle.org",
    "downloads.gradle.org",
    // Ruby, PHP, Elixir
    "rubygems.org",
    "index.rubygems.org",
    "packagist.org",
    "repo.packagist.org",
    "hex.pm",
    "repo.hex.pm",
    // Operating system packages
    "deb.debian.org",
    "security.debian.org",
    "archive.ubuntu.com",
    "security.ubuntu.com",
    "ports.ubuntu.com",
    "dl-cdn.alpinelinux.org",
    // Infrastructure tooling
    "releases.hashicorp.com",
    "registry.terraform.io",
    "dl.k8s.io",
    "pkgs.k8s.io",
    "get.helm.sh",
    // Telemetry the tools above send
    "sentry.io",
    "*.sentry.io",
];

/// A policy ready for lookups.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Compiled {
    restricted: bool,
    exact: HashMap<String, Action>,
    /// `*.suffix` rules by suffix (without the `*.`).
    suffix: HashMap<String, Action>,
    any: Option<Action>,
}

fn merge(slot: &mut Option<Action>, a: Action) {
    *slot = Some(match (*slot, a) {
        (Some(Action::Deny), _) | (_, Action::Deny) => Action::Deny,
        _ => Action::Allow,
    });
}

fn put(map: &mut HashMap<String, Action>, key: &str, a: Action) {
    let mut cur = map.get(key).copied();
    merge(&mut cur, a);
    if let Some(v) = cur {
        map.insert(key.to_string(), v);
    }
}

impl Compiled {
    pub fn new(policy: &NetworkPolicy) -> Self {
        let mut c = Compiled {
            restricted: policy.is_restricted(),
            ..Default::default()
        };
        for rule in &policy.rules {
            match (&rule.domain, &rule.include) {
                (Some(d), _) => c.add(d, rule.action.unwrap_or(Action::Deny)),
                (None, Some(b)) if b == DEFAULTS_BUNDLE => {
                    for d in DEFAULT_DOMAINS {
                        c.add(d, rule.action.unwrap_or(Action::Allow));
                    }
                }
                _ => {}
            }
        }
        c
    }

    fn add(&mut self, pattern: &str, a: Action) {
        let p = pattern.trim_end_matches('.').to_ascii_lowercase();
        if p == "*" {
            merge(&mut self.any, a);
        } else if let Some(suffix) = p.strip_prefix("*.") {
            put(&mut self.suffix, suffix, a);
        } else {
            put(&mut self.exact, &p, a);
        }
    }

    pub fn is_restricted(&self) -> bool {
        self.restricted
    }

    /// Whether the sprite may resolve (and then reach) `name`.
    pub fn allows(&self, name: &str) -> bool {
        if !self.restricted {
            return true;
        }
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        if let Some(a) = self.exact.get(&name) {
            return *a == Action::Allow;
        }
        // Longest suffix first: walk the name's parents from the nearest one.
        let mut rest = name.as_str();
        while let Some((_, parent)) = rest.split_once('.') {
            if let Some(a) = self.suffix.get(parent) {
                return *a == Action::Allow;
            }
            rest = parent;
        }
        self.any == Some(Action::Allow)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::PolicyRule;

    fn policy(rules: &[(&str, Action)]) -> Compiled {
        Compiled::new(&NetworkPolicy {
            rules: rules
                .iter()
                .map(|(d, a)| PolicyRule::domain(d, *a))
                .collect(),
        })
    }

    #[test]
    fn unrestricted_without_rules() {
        let c = Compiled::new(&NetworkPolicy::default());
        assert!(!c.is_restricted());
        assert!(c.allows("anything.example"));
    }

    #[test]
    fn specificity() {
        use Action::*;
        let c = policy(&[
            ("*", Allow),
            ("*.example.com", Deny),
            ("*.api.example.com", Allow),
            ("open.example.com", Allow),
        ]);
        assert!(c.allows("other.org"));
        assert!(!c.allows("www.example.com"));
        assert!(c.allows("v1.api.example.com"));
        assert!(c.allows("OPEN.example.com."));
        // `*.example.com` does not cover example.com itself: `*` decides.
        assert!(c.allows("example.com"));
        let c = policy(&[("github.com", Allow)]);
        assert!(c.allows("github.com"));
        assert!(!c.allows("api.github.com"));
        assert!(!c.allows("example.org"));
        let c = policy(&[("a.com", Allow), ("a.com", Deny)]);
        assert!(!c.allows("a.com"));
    }

    #[test]
    fn defaults_bundle() {
        let c = Compiled::new(&NetworkPolicy {
            rules: vec![
                PolicyRule::include_defaults(),
                PolicyRule::domain("registry.npmjs.org", Action::Deny),
            ],
        });
        assert!(c.allows("api.anthropic.com"));
        assert!(c.allows("raw.githubusercontent.com"));
        assert!(c.allows("crates.io"));
        assert!(!c.allows("registry.npmjs.org"));
        assert!(!c.allows("example.com"));
        for d in DEFAULT_DOMAINS {
            crate::policy::validate_pattern(d).unwrap();
        }
    }
}
