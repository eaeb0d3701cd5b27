//! What every exec entry point shares: query parsing and starting or attaching a session.

use wisp_api::exec::{ExecParams, ExecParamsError};

use super::error::ApiError;
use super::exec_bridge::BridgeOptions;
use super::AppState;
use crate::activity::ActivityGuard;
use crate::exec_env::spawn_spec;
use crate::runtime::{ExecStream, RuntimeError};
use crate::store::SpriteRow;

/// Parses exec query pairs; `attach_id` (from the path form) wins over `id`/`session_id`.
pub fn parse_exec_params(
    pairs: &[(String, String)],
    attach_id: Option<&str>,
) -> Result<ExecParams, ApiError> {
    let mut pairs: Vec<(&str, &str)> = pairs
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    if let Some(id) = attach_id {
        pairs.retain(|(k, _)| *k != "id" && *k != "session_id");
        pairs.push(("id", id));
    }
    // `cmd=` alone (an empty argv) names no command either.
    let attaching = pairs
        .iter()
        .any(|(k, v)| (*k == "id" || *k == "session_id") && !v.is_empty());
    let names_command = pairs
        .iter()
        .any(|(k, v)| matches!(*k, "cmd" | "cmd[]" | "path") && !v.is_empty());
    if !attaching && !names_command {
        return Err(ApiError::bad_request("No command specified"));
    }
    ExecParams::from_pairs(pairs).map_err(|e| match e {
        ExecParamsError::NoCommand => ApiError::bad_request("No command specified"),
        other => ApiError::bad_request(other.to_string()),
    })
}

/// A session to bridge, and whether this connection created it.
pub struct Started {
    pub stream: ExecStream,
    pub is_owner: bool,
    /// Keeps the sprite awake: hold it for as long as the session is bridged.
    pub activity: ActivityGuard,
}

/// Wakes the sprite, then spawns the command or attaches to the session. Runs before any
/// WebSocket upgrade, so that failures are real HTTP responses. The operation counts as in
/// flight from before the wake.
pub async fn start_session(
    st: &AppState,
    row: &SpriteRow,
    params: &ExecParams,
) -> Result<Started, ApiError> {
    let activity = st.manager.activity().begin(&row.id);
    st.manager.wake(row).await?;
    st.manager.touch_active(&row.id);
    let runtime = st.manager.runtime();
    match &params.attach_id {
        Some(id) => match runtime.attach(&row.id, id).await {
            Ok(stream) => Ok(Started {
                stream,
                is_owner: false,
                activity,
            }),
            Err(RuntimeError::SessionNotFound) => Err(ApiError::session_not_found(id)),
            Err(e) => Err(e.into()),
        },
        None => Ok(Started {
            stream: runtime.spawn(&row.id, spawn_spec(params)).await?,
            is_owner: true,
            activity,
        }),
    }
}

fn explicit_stdin(pairs: &[(String, String)]) -> bool {
    pairs
        .iter()
        .any(|(k, v)| k == "stdin" && matches!(v.as_str(), "true" | "1" | "True" | "TRUE" | "yes"))
}

/// How to bridge a started session. An attacher gets the session's own mode. Stdin flows to an
/// attached TTY session (keys typed into a re-attached shell); to a non-TTY one only with an
/// explicit stdin=true, so that an attacher's immediate EOF frame (Go sends one when it has no
/// stdin) cannot close the stdin of a command someone else feeds.
pub fn bridge_options(
    started: &Started,
    params: &ExecParams,
    pairs: &[(String, String)],
    control: bool,
) -> BridgeOptions {
    if started.is_owner {
        BridgeOptions {
            tty: params.tty,
            stdin: params.stdin,
            is_owner: true,
            control,
        }
    } else {
        let tty = started.stream.session.tty;
        BridgeOptions {
            tty,
            stdin: tty || explicit_stdin(pairs),
            is_owner: false,
            control,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::extract::test_pairs as pairs;

    #[test]
    fn no_command_message() {
        for q in [
            &[][..],
            &[("cmd", "")],
            &[("cmd", ""), ("path", "")],
            &[("tty", "true")],
        ] {
            let e = parse_exec_params(&pairs(q), None).unwrap_err();
            assert_eq!(
                (e.status.as_u16(), e.body.error.as_str()),
                (400, "No command specified")
            );
        }
        // An empty argument after a real one is fine.
        let p = parse_exec_params(&pairs(&[("cmd", "echo"), ("cmd", "")]), None).unwrap();
        assert_eq!(p.cmd, ["echo", ""]);
        let e = parse_exec_params(&pairs(&[("cmd", "x"), ("tty", "maybe")]), None).unwrap_err();
        assert_eq!(e.status, 400);
    }

    #[test]
    fn path_id_wins() {
        let p = parse_exec_params(&pairs(&[("id", "1"), ("cmd", "")]), Some("42")).unwrap();
        assert_eq!(p.attach_id.as_deref(), Some("42"));
        let p = parse_exec_params(&pairs(&[("session_id", "9")]), None).unwrap();
        assert_eq!(p.attach_id.as_deref(), Some("9"));
    }
}
