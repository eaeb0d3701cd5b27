//! Extractors whose rejections are [`ApiError`]s, so that even malformed requests get the
//! one JSON error shape.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use axum::http::request::Parts;
use axum::http::StatusCode;
use serde::de::DeserializeOwned;

use super::error::ApiError;

/// Largest JSON body accepted.
pub const JSON_BODY_LIMIT: usize = 1 << 20;

/// A JSON body. The content type is not checked (curl `-d` sends a form type), and an empty
/// body reads as `{}`.
#[derive(Debug, Clone)]
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(req, state).await.map_err(|r| {
            if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("request body is larger than {JSON_BODY_LIMIT} bytes"),
                )
            } else {
                ApiError::new(r.status(), r.body_text())
            }
        })?;
        parse_json(&bytes).map(ApiJson)
    }
}

pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let bytes: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        bytes
    };
    serde_json::from_slice(bytes)
        .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))
}

/// Path parameters.
#[derive(Debug, Clone)]
pub struct ApiPath<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiPath<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(v)| ApiPath(v))
            .map_err(|r| ApiError::new(r.status(), r.body_text()))
    }
}

/// Decoded query pairs, in order, keys repeated as sent.
pub fn query_pairs(raw: Option<&str>) -> Vec<(String, String)> {
    raw.map(|q| {
        form_urlencoded::parse(q.as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect()
    })
    .unwrap_or_default()
}

/// Query pairs as the extractor yields them, for handler tests.
#[cfg(test)]
pub(crate) fn test_pairs(q: &[(&str, &str)]) -> Vec<(String, String)> {
    q.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize, PartialEq)]
    struct Body {
        #[serde(default)]
        name: Option<String>,
    }

    #[test]
    fn json_bodies() {
        assert_eq!(parse_json::<Body>(b"").unwrap(), Body { name: None });
        assert_eq!(parse_json::<Body>(b" \n").unwrap(), Body { name: None });
        assert_eq!(
            parse_json::<Body>(br#"{"name":"x"}"#)
                .unwrap()
                .name
                .as_deref(),
            Some("x")
        );
        let e = parse_json::<Body>(b"{nope").unwrap_err();
        assert_eq!(e.status, 400);
        assert!(e.body.error.starts_with("invalid JSON body"));
        assert_eq!(
            parse_json::<Body>(br#"{"name":5}"#).unwrap_err().status,
            400
        );
    }

    #[test]
    fn repeated_keys_survive() {
        let q = query_pairs(Some("cmd=echo&cmd=a%20b&env=A%3D1&cmd=%2Bc+d"));
        let cmds: Vec<_> = q
            .iter()
            .filter(|(k, _)| k == "cmd")
            .map(|(_, v)| v.as_str())
            .collect();
        assert_eq!(cmds, ["echo", "a b", "+c d"]);
        assert_eq!(q[2], ("env".to_string(), "A=1".to_string()));
        assert!(query_pairs(None).is_empty());
    }
}
