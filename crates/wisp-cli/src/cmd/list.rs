//! `wisp list [--prefix P] [--json]`: follows continuation tokens to the end.

use anyhow::{bail, Result};
use serde_json::Value;

use super::{field, short_time, Ctx};
use crate::cli::ListArgs;

/// Stops a server that keeps returning `has_more` from looping forever.
const MAX_PAGES: usize = 10_000;

pub async fn run(ctx: &Ctx, args: ListArgs) -> Result<i32> {
    let client = ctx.client()?;
    let mut sprites: Vec<Value> = Vec::new();
    let mut token: Option<String> = None;
    for _ in 0..MAX_PAGES {
        let mut query: Vec<(&str, &str)> = Vec::new();
        if let Some(p) = args.prefix.as_deref() {
            query.push(("prefix", p));
        }
        if let Some(t) = token.as_deref() {
            query.push(("continuation_token", t));
        }
        let page = client.get_json("/v1/sprites", &query).await?;
        let Some(items) = page.get("sprites").and_then(Value::as_array) else {
            bail!("wispd sent a sprite list without a `sprites` array");
        };
        sprites.extend(items.iter().cloned());
        let next = page
            .get("next_continuation_token")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
            .map(str::to_string);
        let has_more = page.get("has_more").and_then(Value::as_bool) == Some(true);
        if !has_more || next.is_none() || next == token {
            break;
        }
        token = next;
    }

    if args.json {
        println!("{}", serde_json::to_string_pretty(&sprites)?);
        return Ok(0);
    }
    if sprites.is_empty() {
        eprintln!("no sprites");
        return Ok(0);
    }
    print!("{}", table(&sprites));
    Ok(0)
}

/// The NAME STATUS URL CREATED table, columns padded to their widest cell.
pub fn table(sprites: &[Value]) -> String {
    let mut rows: Vec<[String; 4]> = vec![[
        "NAME".into(),
        "STATUS".into(),
        "URL".into(),
        "CREATED".into(),
    ]];
    for s in sprites {
        rows.push([
            field(s, "name").to_string(),
            field(s, "status").to_string(),
            field(s, "url").to_string(),
            short_time(field(s, "created_at")),
        ]);
    }
    let mut widths = [0usize; 4];
    for r in &rows {
        for (w, cell) in widths.iter_mut().zip(r) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for r in &rows {
        let line: Vec<String> = r[..3]
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .chain(std::iter::once(r[3].clone()))
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
    fn table_layout() {
        let sprites = vec![
            serde_json::json!({"name":"a","status":"cold","url":"http://a","created_at":"2026-01-31T10:28:13.1Z"}),
            serde_json::json!({"name":"longer-name","status":"running","url":null}),
        ];
        assert_eq!(
            table(&sprites),
            "NAME         STATUS   URL       CREATED\n\
             a            cold     http://a  2026-01-31 10:28:13Z\n\
             longer-name  running  -         -\n"
        );
    }
}
