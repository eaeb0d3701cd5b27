//! `wisp policy get|set FILE|allow DOMAIN|deny DOMAIN`: a sprite's egress policy (§3.9).
//!
//! `get` prints the policy document as JSON; `set` replaces it with a file's (`-` reads
//! stdin); `allow` and `deny` add or replace the rule for one domain pattern (`example.com`,
//! `*.example.com`, `*`). Any rule restricts egress to what the rules allow, so the first
//! `allow` on an unrestricted sprite says so.

use std::io::Read;

use anyhow::{bail, Context, Result};
use wisp_api::policy::{validate_pattern, Action, NetworkPolicy};

use super::Ctx;
use crate::cli::PolicyCommand;
use crate::client::{sprite_path, Client, SLOW_TIMEOUT};

fn policy_path(name: &str) -> String {
    format!("{}/policy/network", sprite_path(name))
}

async fn fetch(client: &Client, name: &str) -> Result<NetworkPolicy> {
    let v = client.get_json(&policy_path(name), &[]).await?;
    serde_json::from_value(v).context("wispd sent a policy this client does not understand")
}

async fn store(client: &Client, name: &str, policy: &NetworkPolicy) -> Result<()> {
    let body = serde_json::to_vec(policy)?;
    let resp = client
        .send_raw(
            reqwest::Method::POST,
            &policy_path(name),
            &[],
            Some(body.into()),
            SLOW_TIMEOUT,
        )
        .await?;
    if !resp.status().is_success() {
        return Err(client.error_of(resp).await);
    }
    Ok(())
}

/// Reads and checks a policy document (the daemon checks it again).
pub fn parse_file(text: &[u8], what: &str) -> Result<NetworkPolicy> {
    NetworkPolicy::from_json(text).map_err(|e| anyhow::anyhow!("{what}: invalid policy: {e}"))
}

pub async fn run(ctx: &Ctx, cmd: PolicyCommand) -> Result<i32> {
    let name = ctx.sprite(None)?;
    let client = ctx.client()?;
    match cmd {
        PolicyCommand::Get => {
            let p = fetch(&client, &name).await?;
            println!("{}", serde_json::to_string_pretty(&p)?);
            if !p.is_restricted() {
                eprintln!("no rules: egress of {name} is unrestricted");
            }
        }
        PolicyCommand::Set { file } => {
            let text = if file == "-" {
                let mut b = Vec::new();
                std::io::stdin()
                    .read_to_end(&mut b)
                    .context("reading the policy from stdin")?;
                b
            } else {
                std::fs::read(&file).with_context(|| format!("reading {file}"))?
            };
            let p = parse_file(&text, &file)?;
            store(&client, &name, &p).await?;
            eprintln!("policy of {name} set ({} rules)", p.rules.len());
        }
        PolicyCommand::Allow { domain } => change(&client, &name, &domain, Action::Allow).await?,
        PolicyCommand::Deny { domain } => change(&client, &name, &domain, Action::Deny).await?,
    }
    Ok(0)
}

async fn change(client: &Client, name: &str, domain: &str, action: Action) -> Result<()> {
    if let Err(e) = validate_pattern(&domain.to_ascii_lowercase()) {
        bail!("{e}: expected a host name, *.DOMAIN or *");
    }
    let mut p = fetch(client, name).await?;
    let was_open = !p.is_restricted();
    p.set_domain(domain, action);
    store(client, name, &p).await?;
    let verb = match action {
        Action::Allow => "allowed",
        Action::Deny => "denied",
    };
    eprintln!("{domain} {verb} for {name}");
    if was_open {
        eprintln!(
            "note: {name} had no rules; now only what the rules allow is reachable (names that match no rule are denied)"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_are_checked_locally() {
        assert!(parse_file(br#"{"rules":[{"domain":"a.com","action":"allow"}]}"#, "f").is_ok());
        let e = parse_file(br#"{"rules":[{"domain":"a.com"}]}"#, "f.json")
            .unwrap_err()
            .to_string();
        assert!(e.contains("f.json") && e.contains("action"), "{e}");
    }
}
