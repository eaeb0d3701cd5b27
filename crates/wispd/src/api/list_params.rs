//! Query parameters of `GET /v1/sprites` and its continuation tokens.

use wisp_api::sprite::{LIST_DEFAULT_MAX, LIST_MAX};

use super::error::ApiError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListParams {
    pub prefix: String,
    pub max_results: usize,
    /// List names sorting after this one (decoded continuation token).
    pub after: Option<String>,
}

/// Parses decoded query pairs. `max_results` is clamped to 1..=50 (the SDKs' list-all helpers
/// send 100); a value that is not an integer is a 400. Unknown keys (`bulk_load`) are ignored.
pub fn parse_list_params(pairs: &[(String, String)]) -> Result<ListParams, ApiError> {
    let mut p = ListParams {
        prefix: String::new(),
        max_results: LIST_DEFAULT_MAX,
        after: None,
    };
    for (k, v) in pairs {
        match k.as_str() {
            "prefix" => p.prefix = v.clone(),
            "max_results" => {
                let n: i64 = v.trim().parse().map_err(|_| {
                    ApiError::bad_request(format!("invalid max_results {v:?}: expected an integer"))
                })?;
                p.max_results = n.clamp(1, LIST_MAX as i64) as usize;
            }
            "continuation_token" if !v.is_empty() => {
                p.after = Some(
                    decode_token(v)
                        .ok_or_else(|| ApiError::bad_request("invalid continuation_token"))?,
                );
            }
            _ => {}
        }
    }
    Ok(p)
}

/// Continuation tokens are opaque to clients: the hex of the last name returned.
pub fn encode_token(last_name: &str) -> String {
    hex::encode(last_name.as_bytes())
}

pub fn decode_token(token: &str) -> Option<String> {
    String::from_utf8(hex::decode(token).ok()?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(q: &[(&str, &str)]) -> Result<ListParams, ApiError> {
        let pairs: Vec<(String, String)> = q
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        parse_list_params(&pairs)
    }

    #[test]
    fn clamps_and_defaults() {
        assert_eq!(parse(&[]).unwrap().max_results, 50);
        assert_eq!(parse(&[("max_results", "100")]).unwrap().max_results, 50);
        assert_eq!(parse(&[("max_results", "0")]).unwrap().max_results, 1);
        assert_eq!(parse(&[("max_results", "-3")]).unwrap().max_results, 1);
        assert_eq!(parse(&[("max_results", "7")]).unwrap().max_results, 7);
        assert_eq!(parse(&[("max_results", "abc")]).unwrap_err().status, 400);
        assert_eq!(parse(&[("max_results", "1.5")]).unwrap_err().status, 400);
        assert_eq!(parse(&[("bulk_load", "true")]).unwrap().prefix, "");
    }

    #[test]
    fn tokens_round_trip() {
        let t = encode_token("my-sprite");
        assert_eq!(decode_token(&t).as_deref(), Some("my-sprite"));
        let p = parse(&[("continuation_token", &t), ("prefix", "my")]).unwrap();
        assert_eq!(p.after.as_deref(), Some("my-sprite"));
        assert_eq!(p.prefix, "my");
        assert_eq!(
            parse(&[("continuation_token", "zz")]).unwrap_err().status,
            400
        );
        assert_eq!(
            parse(&[("continuation_token", "ff")]).unwrap_err().status,
            400
        );
        assert_eq!(parse(&[("continuation_token", "")]).unwrap().after, None);
    }
}
