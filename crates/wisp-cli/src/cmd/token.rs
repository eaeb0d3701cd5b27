//! `wisp token create|list|revoke|attenuate`: an organization's API tokens.
//!
//! `create`, `list` and `revoke` act on the token's own organization unless `--org SLUG` names
//! another (admin tokens only). `attenuate` works offline: it narrows the configured token (a
//! full one or an already attenuated one) with caveats and prints the result; nobody can widen
//! it again (see `wisp_api::attenuation`).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use clap::Subcommand;
use serde_json::{json, Value};
use wisp_api::attenuation::{attenuate, Caveat, Op};

use super::{field, short_time, Ctx};
use crate::client::{Client, DEFAULT_TIMEOUT};
use crate::config;

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Mint a new token for the organization; prints it (it is shown only once)
    Create {
        /// What the token is for
        #[arg(long, value_name = "TEXT")]
        description: Option<String>,
        /// Organization slug (default: the current token's)
        #[arg(long, value_name = "SLUG")]
        org: Option<String>,
        /// The new token may manage every organization (admin tokens only)
        #[arg(long)]
        admin: bool,
        /// Print the whole answer as JSON
        #[arg(long)]
        json: bool,
    },
    /// List the organization's live tokens (ids and descriptions, never secrets)
    #[command(visible_alias = "ls")]
    List {
        /// Organization slug (default: the current token's)
        #[arg(long, value_name = "SLUG")]
        org: Option<String>,
        /// Print the token objects as a JSON array
        #[arg(long)]
        json: bool,
    },
    /// Revoke a token by id: it (and every token narrowed from it) stops working at once
    #[command(visible_alias = "rm")]
    Revoke {
        /// Token id (see `wisp token list`)
        id: String,
        /// Organization slug (default: the current token's)
        #[arg(long, value_name = "SLUG")]
        org: Option<String>,
    },
    /// Narrow the current token offline and print the result: only one sprite (or a name
    /// prefix), only some operations, only until some time. Works on narrowed tokens too
    Attenuate(AttenuateArgs),
}

#[derive(Debug, Clone, Default, clap::Args)]
pub struct AttenuateArgs {
    /// Only the sprite with this name
    #[arg(long, value_name = "NAME", conflicts_with = "prefix")]
    pub sprite: Option<String>,
    /// Only sprites whose names start with this
    #[arg(long, value_name = "PREFIX")]
    pub prefix: Option<String>,
    /// Only these operation classes, comma-separated: read, exec, write
    #[arg(long, value_name = "OPS", value_delimiter = ',')]
    pub ops: Vec<String>,
    /// Valid for this long from now (Go duration: 30m, 1h, 24h)
    #[arg(long, value_name = "DURATION")]
    pub expires: Option<String>,
}

pub async fn run(ctx: &Ctx, cmd: TokenCommand) -> Result<i32> {
    match cmd {
        TokenCommand::Create {
            description,
            org,
            admin,
            json,
        } => {
            let client = ctx.client()?;
            let slug = org_slug(&client, org).await?;
            let mut body = json!({"description": description.unwrap_or_default()});
            if admin {
                body["admin"] = json!(true);
            }
            let v = client
                .post_json(
                    &format!("/v1/organizations/{slug}/tokens"),
                    &body,
                    DEFAULT_TIMEOUT,
                )
                .await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                let Some(token) = v.get("token").and_then(Value::as_str) else {
                    bail!("wispd answered without a token: {v}");
                };
                println!("{token}");
                eprintln!(
                    "token {} for organization {slug}: keep it now, it is not shown again",
                    field(&v, "id")
                );
            }
            Ok(0)
        }
        TokenCommand::List { org, json } => {
            let client = ctx.client()?;
            let slug = org_slug(&client, org).await?;
            let v = client
                .get_json(&format!("/v1/organizations/{slug}/tokens"), &[])
                .await?;
            let tokens = v
                .get("tokens")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            if json {
                println!("{}", serde_json::to_string_pretty(&tokens)?);
            } else {
                print!("{}", table(&tokens));
            }
            Ok(0)
        }
        TokenCommand::Revoke { id, org } => {
            check_id(&id)?;
            let client = ctx.client()?;
            let slug = org_slug(&client, org).await?;
            client
                .delete(
                    &format!("/v1/organizations/{slug}/tokens/{id}"),
                    DEFAULT_TIMEOUT,
                )
                .await?;
            eprintln!("token {id} of organization {slug} revoked");
            Ok(0)
        }
        TokenCommand::Attenuate(args) => {
            let settings = config::load(ctx.api_url.as_deref(), ctx.token.as_deref())?;
            let Some(token) = settings.token else {
                bail!("no token to attenuate: pass --token TOKEN or set WISP_TOKEN");
            };
            println!("{}", attenuate_text(&token, &args, unix_now())?);
            Ok(0)
        }
    }
}

/// The caveats the flags ask for; at least one.
pub fn caveats(args: &AttenuateArgs, now: u64) -> Result<Vec<Caveat>> {
    let mut out = Vec::new();
    if let Some(name) = &args.sprite {
        crate::selection::check_name(name)?;
        out.push(Caveat::Sprite(name.clone()));
    }
    if let Some(p) = &args.prefix {
        if p.is_empty()
            || !p
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            bail!("invalid --prefix {p:?}: lowercase letters, digits and '-' only");
        }
        out.push(Caveat::SpritePrefix(p.clone()));
    }
    if !args.ops.is_empty() {
        let mut ops = Vec::new();
        for o in &args.ops {
            let Some(op) = Op::parse(o) else {
                bail!("invalid --ops entry {o:?}: use read, exec and/or write");
            };
            if !ops.contains(&op) {
                ops.push(op);
            }
        }
        out.push(Caveat::Ops(ops));
    }
    if let Some(e) = &args.expires {
        let d = wisp_api::duration::parse_duration(e).context("--expires")?;
        if d < Duration::from_secs(1) {
            bail!("--expires must be at least 1s");
        }
        out.push(Caveat::Expires(now.saturating_add(d.as_secs())));
    }
    if out.is_empty() {
        bail!("nothing to narrow: give --sprite, --prefix, --ops and/or --expires");
    }
    Ok(out)
}

/// The narrowed form of `token`.
pub fn attenuate_text(token: &str, args: &AttenuateArgs, now: u64) -> Result<String> {
    let cs = caveats(args, now)?;
    Ok(attenuate(token, &cs)
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .encode())
}

/// `--org`, or the slug of the token's own organization (`GET /v1/organization`).
async fn org_slug(client: &Client, org: Option<String>) -> Result<String> {
    if let Some(o) = org {
        if o.is_empty()
            || !o
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            bail!("invalid --org {o:?}");
        }
        return Ok(o);
    }
    let v = client.get_json("/v1/organization", &[]).await?;
    match v.get("organization").and_then(Value::as_str) {
        Some(s) if !s.is_empty() => Ok(s.to_string()),
        _ => bail!("wispd did not say which organization the token belongs to: {v}"),
    }
}

fn check_id(id: &str) -> Result<()> {
    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_alphanumeric()) {
        bail!("invalid token id {id:?}");
    }
    Ok(())
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// ID DESCRIPTION CREATED ADMIN
fn table(tokens: &[Value]) -> String {
    let mut rows: Vec<[String; 4]> = vec![[
        "ID".into(),
        "DESCRIPTION".into(),
        "CREATED".into(),
        "ADMIN".into(),
    ]];
    for t in tokens {
        let admin = t.get("admin").and_then(Value::as_bool) == Some(true);
        rows.push([
            field(t, "id").to_string(),
            field(t, "description").to_string(),
            short_time(field(t, "created_at")),
            if admin { "yes" } else { "" }.to_string(),
        ]);
    }
    let mut widths = [0usize; 4];
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    for r in &rows {
        let line: Vec<String> = r
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use wisp_api::attenuation::{secret_digest, AttenuatedToken};

    const FULL: &str = "acme/o1/tabc/s3cret";

    fn args(
        sprite: Option<&str>,
        prefix: Option<&str>,
        ops: &[&str],
        exp: Option<&str>,
    ) -> AttenuateArgs {
        AttenuateArgs {
            sprite: sprite.map(str::to_string),
            prefix: prefix.map(str::to_string),
            ops: ops.iter().map(|s| s.to_string()).collect(),
            expires: exp.map(str::to_string),
        }
    }

    #[test]
    fn flags_to_caveats() {
        let cs = caveats(
            &args(Some("box"), None, &["read", "exec", "read"], Some("1h")),
            1000,
        )
        .unwrap();
        assert_eq!(
            cs,
            vec![
                Caveat::Sprite("box".into()),
                Caveat::Ops(vec![Op::Read, Op::Exec]),
                Caveat::Expires(4600),
            ]
        );
        let cs = caveats(&args(None, Some("ci-"), &[], None), 0).unwrap();
        assert_eq!(cs, vec![Caveat::SpritePrefix("ci-".into())]);
        for bad in [
            args(None, None, &[], None),
            args(Some("Bad_Name"), None, &[], None),
            args(None, Some("a.b"), &[], None),
            args(None, None, &["admin"], None),
            args(None, None, &[], Some("soon")),
            args(None, None, &[], Some("0")),
        ] {
            assert!(caveats(&bad, 0).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn attenuates_full_and_narrowed_tokens_offline() {
        let t = attenuate_text(FULL, &args(Some("box"), None, &[], None), 0).unwrap();
        let parsed = AttenuatedToken::parse(&t).unwrap();
        assert!(parsed.verify(&secret_digest("s3cret")));
        assert_eq!(parsed.caveats, vec![Caveat::Sprite("box".into())]);
        let t2 = attenuate_text(&t, &args(None, None, &["read"], None), 0).unwrap();
        let parsed = AttenuatedToken::parse(&t2).unwrap();
        assert!(parsed.verify(&secret_digest("s3cret")));
        assert_eq!(parsed.caveats.len(), 2);
        assert!(attenuate_text("not-a-token", &args(Some("box"), None, &[], None), 0).is_err());
    }

    #[test]
    fn token_table() {
        let t = vec![
            json!({"id": "t1", "description": "admin", "created_at": "2026-01-31T10:28:13.1Z", "admin": true}),
            json!({"id": "t22", "description": "", "created_at": "2026-02-01T00:00:00.0Z", "admin": false}),
        ];
        assert_eq!(
            table(&t),
            "ID   DESCRIPTION  CREATED               ADMIN\n\
             t1   admin        2026-01-31 10:28:13Z  yes\n\
             t22  -            2026-02-01 00:00:00Z\n"
        );
    }
}
