//! `wisp org create|list|limits`: organizations (creating one and setting limits take an admin
//! token; listing shows an admin every organization, anyone else their own).

use anyhow::{bail, Result};
use clap::Subcommand;
use serde_json::{json, Map, Value};

use super::{field, short_time, Ctx};
use crate::client::DEFAULT_TIMEOUT;

#[derive(Debug, Subcommand)]
pub enum OrgCommand {
    /// Create an organization (admin token); then `wisp token create --org SLUG`
    Create {
        /// Lowercase letters, digits and '-'
        slug: String,
        /// Display name (default: the slug)
        #[arg(long)]
        name: Option<String>,
    },
    /// List organizations with their limits
    #[command(visible_alias = "ls")]
    List {
        /// Print the organization objects as a JSON array
        #[arg(long)]
        json: bool,
    },
    /// Set an organization's limits (admin token). Each takes a number, `unlimited`, or
    /// `default` (the daemon's setting)
    Limits {
        slug: String,
        /// Most sprites running or warm at once
        #[arg(long, value_name = "N")]
        running: Option<String>,
        /// Most sprites created per window
        #[arg(long, value_name = "N")]
        create_rate: Option<String>,
        /// The create-rate window in seconds
        #[arg(long, value_name = "SECONDS")]
        window: Option<String>,
    },
}

pub async fn run(ctx: &Ctx, cmd: OrgCommand) -> Result<i32> {
    let client = ctx.client()?;
    match cmd {
        OrgCommand::Create { slug, name } => {
            check_slug(&slug)?;
            let mut body = json!({"slug": slug});
            if let Some(n) = name {
                body["name"] = json!(n);
            }
            let v = client
                .post_json("/v1/organizations", &body, DEFAULT_TIMEOUT)
                .await?;
            eprintln!(
                "organization {} created ({})",
                field(&v, "slug"),
                field(&v, "id")
            );
            Ok(0)
        }
        OrgCommand::List { json } => {
            let v = client.get_json("/v1/organizations", &[]).await?;
            let orgs = v
                .get("organizations")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            if json {
                println!("{}", serde_json::to_string_pretty(&orgs)?);
            } else {
                print!("{}", table(&orgs));
            }
            Ok(0)
        }
        OrgCommand::Limits {
            slug,
            running,
            create_rate,
            window,
        } => {
            check_slug(&slug)?;
            let mut body = Map::new();
            for (key, v) in [
                ("running_limit", running),
                ("create_rate_limit", create_rate),
                ("create_rate_window_seconds", window),
            ] {
                if let Some(v) = v {
                    body.insert(key.to_string(), limit_value(key, &v)?);
                }
            }
            if body.is_empty() {
                bail!("nothing to set: give --running, --create-rate and/or --window");
            }
            let bytes = serde_json::to_vec(&body)?;
            let resp = client
                .send_raw(
                    reqwest::Method::PUT,
                    &format!("/v1/organizations/{slug}"),
                    &[],
                    Some(reqwest::Body::from(bytes)),
                    DEFAULT_TIMEOUT,
                )
                .await?;
            if !resp.status().is_success() {
                return Err(client.error_of(resp).await);
            }
            let v = client.json_of(resp).await?;
            print!("{}", table(&[v]));
            Ok(0)
        }
    }
}

fn check_slug(slug: &str) -> Result<()> {
    let ok = !slug.is_empty()
        && slug.len() <= 63
        && slug
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !slug.starts_with('-')
        && !slug.ends_with('-');
    if !ok {
        bail!("invalid organization slug {slug:?}: lowercase letters, digits and '-'");
    }
    Ok(())
}

/// `12` → 12, `unlimited`, `default`.
fn limit_value(key: &str, v: &str) -> Result<Value> {
    match v {
        "default" => Ok(json!("default")),
        "unlimited" if key != "create_rate_window_seconds" => Ok(json!("unlimited")),
        n => match n.parse::<u64>() {
            Ok(n) => Ok(json!(n)),
            Err(_) => bail!("{key}: expected a number, unlimited or default, not {v:?}"),
        },
    }
}

fn limit_cell(v: &Value, key: &str) -> String {
    match v.get(key) {
        Some(Value::Number(n)) => n.to_string(),
        _ => "unlimited".to_string(),
    }
}

/// SLUG NAME RUNNING-LIMIT CREATE-RATE CREATED
fn table(orgs: &[Value]) -> String {
    let mut rows: Vec<[String; 5]> = vec![[
        "SLUG".into(),
        "NAME".into(),
        "RUNNING LIMIT".into(),
        "CREATE RATE".into(),
        "CREATED".into(),
    ]];
    for o in orgs {
        let rate = match o.get("create_rate_limit") {
            Some(Value::Number(n)) => format!(
                "{n}/{}s",
                o.get("create_rate_window_seconds")
                    .and_then(Value::as_u64)
                    .unwrap_or(60)
            ),
            _ => "unlimited".to_string(),
        };
        rows.push([
            field(o, "slug").to_string(),
            field(o, "name").to_string(),
            limit_cell(o, "running_limit"),
            rate,
            short_time(field(o, "created_at")),
        ]);
    }
    let mut widths = [0usize; 5];
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

    #[test]
    fn values_and_table() {
        assert_eq!(limit_value("running_limit", "3").unwrap(), json!(3));
        assert_eq!(
            limit_value("running_limit", "unlimited").unwrap(),
            json!("unlimited")
        );
        assert_eq!(
            limit_value("create_rate_window_seconds", "default").unwrap(),
            json!("default")
        );
        assert!(limit_value("create_rate_window_seconds", "unlimited").is_err());
        assert!(limit_value("running_limit", "-1").is_err());
        assert!(check_slug("acme").is_ok() && check_slug("Acme").is_err());
        let orgs = vec![json!({
            "slug": "acme", "name": "Acme", "running_limit": 3, "create_rate_limit": 10,
            "create_rate_window_seconds": 60, "created_at": "2026-01-31T10:28:13.1Z"
        })];
        assert_eq!(
            table(&orgs),
            "SLUG  NAME  RUNNING LIMIT  CREATE RATE  CREATED\n\
             acme  Acme  3              10/60s       2026-01-31 10:28:13Z\n"
        );
    }
}
