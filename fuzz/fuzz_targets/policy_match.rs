//! Deciding DNS names against a network policy, checked against a plain reference matcher
//! written from the rules in Sprites API §6.8: the most specific matching rule wins (an exact
//! name, then the longest `*.suffix`, then `*`), rules of the same pattern that disagree deny,
//! and with rules present a name no rule matches is denied.
#![no_main]

use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use wisp_api::policy::{Action, NetworkPolicy, PolicyRule, DEFAULTS_BUNDLE};
use wisp_api::policy_match::{Compiled, DEFAULT_DOMAINS};

/// Labels from a small vocabulary, so that rules and names share suffixes often.
const LABELS: &[&str] = &[
    "a",
    "b",
    "com",
    "example",
    "github",
    "api",
    "x-y",
    "_srv",
    "io",
    "Com",
    "*",
    "",
    "github.com",
];

#[derive(Arbitrary, Debug)]
struct Name {
    labels: Vec<u8>,
    trailing_dot: bool,
}

impl Name {
    fn text(&self) -> String {
        let labels: Vec<&str> = self
            .labels
            .iter()
            .take(6)
            .map(|&i| LABELS[i as usize % LABELS.len()])
            .collect();
        let mut s = labels.join(".");
        if self.trailing_dot {
            s.push('.');
        }
        s
    }
}

#[derive(Arbitrary, Debug)]
enum Rule {
    Exact(Name, bool),
    Suffix(Name, bool),
    Any(bool),
    Defaults(Option<bool>),
}

#[derive(Arbitrary, Debug)]
struct Input {
    rules: Vec<Rule>,
    names: Vec<Name>,
    raw_names: Vec<String>,
}

fn action(allow: bool) -> Action {
    if allow {
        Action::Allow
    } else {
        Action::Deny
    }
}

fn to_rule(r: &Rule) -> PolicyRule {
    match r {
        Rule::Exact(n, a) => PolicyRule::domain(&n.text(), action(*a)),
        Rule::Suffix(n, a) => PolicyRule::domain(&format!("*.{}", n.text()), action(*a)),
        Rule::Any(a) => PolicyRule::domain("*", action(*a)),
        Rule::Defaults(a) => PolicyRule {
            domain: None,
            action: a.map(action),
            include: Some(DEFAULTS_BUNDLE.to_string()),
        },
    }
}

fn normal(s: &str) -> String {
    s.trim_end_matches('.').to_ascii_lowercase()
}

/// The reference: every rule (with the bundle expanded) is tried against the name.
fn reference(policy: &NetworkPolicy, name: &str) -> bool {
    if policy.rules.is_empty() {
        return true;
    }
    let mut patterns: Vec<(String, Action)> = Vec::new();
    for r in &policy.rules {
        match (&r.domain, &r.include) {
            (Some(d), _) => patterns.push((d.clone(), r.action.unwrap_or(Action::Deny))),
            (None, Some(_)) => {
                for d in DEFAULT_DOMAINS {
                    patterns.push((d.to_string(), r.action.unwrap_or(Action::Allow)));
                }
            }
            (None, None) => {}
        }
    }
    let name = normal(name);
    // (specificity, action): exact beats any suffix, a longer suffix beats a shorter one,
    // any suffix beats `*`.
    let mut best: Option<(usize, Action)> = None;
    for (p, a) in patterns {
        let p = normal(&p);
        let rank = if p == "*" {
            Some(0)
        } else if let Some(suffix) = p.strip_prefix("*.") {
            name.ends_with(&format!(".{suffix}"))
                .then_some(1 + suffix.len())
        } else {
            (p == name).then_some(usize::MAX)
        };
        let Some(rank) = rank else { continue };
        best = match best {
            Some((r, _)) if r > rank => best,
            Some((r, prev)) if r == rank => Some((
                r,
                if prev == Action::Deny || a == Action::Deny {
                    Action::Deny
                } else {
                    Action::Allow
                },
            )),
            _ => Some((rank, a)),
        };
    }
    best.is_some_and(|(_, a)| a == Action::Allow)
}

fuzz_target!(|input: Input| {
    let policy = NetworkPolicy {
        rules: input.rules.iter().take(16).map(to_rule).collect(),
    };
    let compiled = Compiled::new(&policy);
    let names = input
        .names
        .iter()
        .take(8)
        .map(Name::text)
        .chain(input.raw_names.iter().take(4).cloned());
    for name in names {
        let allows = compiled.allows(&name);
        assert_eq!(
            allows,
            reference(&policy, &name),
            "{name:?} under {policy:?}"
        );
        // Case and the final dot never change the answer.
        assert_eq!(
            compiled.allows(&name.to_ascii_uppercase()),
            allows,
            "{name:?}"
        );
        assert_eq!(compiled.allows(&format!("{name}.")), allows, "{name:?}");
    }
});
