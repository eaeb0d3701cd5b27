//! Checkpoints (§3.6): the object, the create body, the NDJSON progress events of create and
//! restore, and the fork source of `POST /v1/sprites` (a Wisp extension).

use serde::{Deserialize, Serialize};

/// A checkpoint as `GET .../checkpoints` and `GET .../checkpoints/{id}` return it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Checkpoint {
    /// `v0`, `v1`, … for user checkpoints, `auto-…` for automatic ones, `Current` for the
    /// live state's pseudo entry in lists.
    pub id: String,
    pub create_time: String,
    #[serde(default)]
    pub comment: String,
    #[serde(default)]
    pub is_auto: bool,
    /// The checkpoint the sprite's state descended from when this one was taken.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_id: Option<String>,
    /// Always an array: the Go SDK decodes it as `[]string`.
    #[serde(default)]
    pub history: Vec<String>,
    /// Empty when healthy.
    #[serde(default)]
    pub health: String,
}

/// The id of the pseudo entry for the live state.
pub const CURRENT: &str = "Current";

/// `POST .../checkpoint` body; the SDKs send `{}` when there is no comment.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CreateCheckpointRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
}

/// Longest checkpoint comment accepted.
pub const MAX_COMMENT_BYTES: usize = 1024;

/// One line of the NDJSON stream of checkpoint create and restore.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum StreamEvent {
    Info {
        data: String,
        time: String,
    },
    Error {
        error: String,
        time: String,
    },
    /// The last line of a successful operation. `id` is a Wisp addition (SDK parsers ignore
    /// unknown fields): the checkpoint created, or the one restored.
    Complete {
        data: String,
        time: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
    },
}

/// Whether `id` can name a stored checkpoint (`v<n>` or `auto-<suffix>`). Ids become path
/// components on the server, so nothing else is ever accepted.
pub fn is_valid_checkpoint_id(id: &str) -> bool {
    if let Some(n) = id.strip_prefix('v') {
        return !n.is_empty()
            && n.len() <= 10
            && n.bytes().all(|b| b.is_ascii_digit())
            && (n == "0" || !n.starts_with('0'));
    }
    if let Some(rest) = id.strip_prefix("auto-") {
        return !rest.is_empty()
            && rest.len() <= 40
            && rest.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    }
    false
}

/// `"from"` of `POST /v1/sprites` (a Wisp extension): create the new sprite as a fork of
/// another sprite's checkpoint, its latest one when `checkpoint` is omitted.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ForkSource {
    pub sprite: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids() {
        for ok in ["v0", "v1", "v42", "auto-20261128-174557-ab12"] {
            assert!(is_valid_checkpoint_id(ok), "{ok}");
        }
        for bad in [
            "", "v", "v01", "V1", "v-1", "../v1", "v1/..", "auto-", "auto-a/b", "Current", "x",
            "auto-..",
        ] {
            assert!(!is_valid_checkpoint_id(bad), "{bad}");
        }
    }

    #[test]
    fn event_shapes() {
        let e = StreamEvent::Complete {
            data: "Checkpoint v1 created successfully".into(),
            time: "t".into(),
            id: Some("v1".into()),
        };
        assert_eq!(
            serde_json::to_string(&e).unwrap(),
            r#"{"type":"complete","data":"Checkpoint v1 created successfully","time":"t","id":"v1"}"#
        );
        let e = StreamEvent::Error {
            error: "boom".into(),
            time: "t".into(),
        };
        assert_eq!(
            serde_json::to_string(&e).unwrap(),
            r#"{"type":"error","error":"boom","time":"t"}"#
        );
        let c: Checkpoint =
            serde_json::from_str(r#"{"id":"v1","create_time":"2026-01-01T00:00:00Z"}"#).unwrap();
        assert!(c.history.is_empty() && !c.is_auto);
    }
}
