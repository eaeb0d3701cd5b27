//! What a request does, for checking it against a token's caveats: one of the op classes of
//! [`wisp_api::attenuation::Op`] on a named sprite, listing or creating sprites, the org check,
//! or management (organizations and tokens: never allowed to attenuated tokens).
//!
//! The class comes from the method and the *matched route template*, so a route added later
//! falls into a class by its method (GET/HEAD → read, anything else → write) unless its
//! sub-resource is one that runs things in the sprite (exec, control, proxy, ports), which are
//! exec whatever the method. A template outside `/v1/sprites…` and `/v1/organization` counts
//! as management, so nothing unforeseen opens up to attenuated tokens.

use axum::http::Method;
use wisp_api::attenuation::Op;

/// Sub-resources of a sprite whose every route runs something in it.
const EXEC_SUBRESOURCES: &[&str] = &["exec", "control", "proxy", "ports"];
/// Sub-resources whose handlers wake the sprite (start it when cold). A restore starts the
/// sprite too (its template ends in `/restore`).
const WAKING_SUBRESOURCES: &[&str] = &["exec", "control", "proxy", "ports", "fs", "services"];

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access<'a> {
    /// `GET /v1/organization`: which org a token belongs to; any valid token.
    OrgInfo,
    /// Organizations and tokens.
    Manage,
    /// `GET /v1/sprites` (read; the list is filtered by the caveats).
    ListSprites,
    /// `POST /v1/sprites` (write; the new name is checked by the handler).
    CreateSprite,
    /// An operation on the sprite named in the path (the raw, undecoded path segment).
    Sprite {
        name: &'a str,
        op: Op,
        /// The handler may start the sprite if it is cold.
        wakes: bool,
    },
}

/// Classifies a request from its method, its route template (`/v1/sprites/{name}/exec`) and
/// its path.
pub fn classify<'a>(method: &Method, template: &str, path: &'a str) -> Access<'a> {
    let read = *method == Method::GET || *method == Method::HEAD;
    match template {
        "/v1/organization" => return Access::OrgInfo,
        "/v1/sprites" => {
            return if read {
                Access::ListSprites
            } else {
                Access::CreateSprite
            }
        }
        _ => {}
    }
    let Some(rest) = template.strip_prefix("/v1/sprites/{name}") else {
        return Access::Manage;
    };
    if !(rest.is_empty() || rest.starts_with('/')) {
        return Access::Manage;
    }
    // The name as sent: `/v1/sprites/<name>/...`.
    let Some(name) = path
        .strip_prefix("/v1/sprites/")
        .map(|r| r.split('/').next().unwrap_or(""))
    else {
        return Access::Manage;
    };
    let sub = rest.trim_start_matches('/').split('/').next().unwrap_or("");
    let op = if EXEC_SUBRESOURCES.contains(&sub) {
        Op::Exec
    } else if read {
        Op::Read
    } else {
        Op::Write
    };
    Access::Sprite {
        name,
        op,
        wakes: WAKING_SUBRESOURCES.contains(&sub) || rest.ends_with("/restore"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c<'a>(m: Method, t: &str, p: &'a str) -> Access<'a> {
        classify(&m, t, p)
    }

    fn sprite(name: &str, op: Op, wakes: bool) -> Access<'_> {
        Access::Sprite { name, op, wakes }
    }

    #[test]
    fn classes() {
        use Method as M;
        assert_eq!(
            c(M::GET, "/v1/organization", "/v1/organization"),
            Access::OrgInfo
        );
        assert_eq!(c(M::GET, "/v1/sprites", "/v1/sprites"), Access::ListSprites);
        assert_eq!(
            c(M::POST, "/v1/sprites", "/v1/sprites"),
            Access::CreateSprite
        );
        for (m, t, p) in [
            (M::GET, "/v1/organizations", "/v1/organizations"),
            (M::POST, "/v1/organizations", "/v1/organizations"),
            (
                M::POST,
                "/v1/organizations/{slug}/tokens",
                "/v1/organizations/a/tokens",
            ),
            (
                M::DELETE,
                "/v1/organizations/{slug}/tokens/{id}",
                "/v1/organizations/a/tokens/t1",
            ),
            (M::GET, "/v1/something-new", "/v1/something-new"),
            (M::GET, "/v1/sprites/{name}x", "/v1/sprites/ax"),
        ] {
            assert_eq!(c(m, t, p), Access::Manage, "{t}");
        }
        let t = "/v1/sprites/{name}";
        assert_eq!(
            c(M::GET, t, "/v1/sprites/box"),
            sprite("box", Op::Read, false)
        );
        assert_eq!(
            c(M::PUT, t, "/v1/sprites/box"),
            sprite("box", Op::Write, false)
        );
        assert_eq!(
            c(M::DELETE, t, "/v1/sprites/box"),
            sprite("box", Op::Write, false)
        );
        for (m, t, op, wakes) in [
            (M::GET, "/v1/sprites/{name}/exec", Op::Exec, true),
            (M::POST, "/v1/sprites/{name}/exec", Op::Exec, true),
            (M::HEAD, "/v1/sprites/{name}/exec", Op::Exec, true),
            (
                M::GET,
                "/v1/sprites/{name}/exec/{session_id}",
                Op::Exec,
                true,
            ),
            (
                M::POST,
                "/v1/sprites/{name}/exec/{session_id}/kill",
                Op::Exec,
                true,
            ),
            (M::GET, "/v1/sprites/{name}/control", Op::Exec, true),
            (M::GET, "/v1/sprites/{name}/proxy", Op::Exec, true),
            (M::GET, "/v1/sprites/{name}/ports/watch", Op::Exec, true),
            (M::GET, "/v1/sprites/{name}/fs/read", Op::Read, true),
            (M::GET, "/v1/sprites/{name}/fs/list", Op::Read, true),
            (M::PUT, "/v1/sprites/{name}/fs/write", Op::Write, true),
            (M::DELETE, "/v1/sprites/{name}/fs/delete", Op::Write, true),
            (M::POST, "/v1/sprites/{name}/fs/chmod", Op::Write, true),
            (M::GET, "/v1/sprites/{name}/services", Op::Read, true),
            (M::PUT, "/v1/sprites/{name}/services/{svc}", Op::Write, true),
            (
                M::POST,
                "/v1/sprites/{name}/services/{svc}/stop",
                Op::Write,
                true,
            ),
            (
                M::GET,
                "/v1/sprites/{name}/services/{svc}/logs",
                Op::Read,
                true,
            ),
            (M::GET, "/v1/sprites/{name}/checkpoints", Op::Read, false),
            (M::POST, "/v1/sprites/{name}/checkpoint", Op::Write, false),
            (
                M::GET,
                "/v1/sprites/{name}/checkpoints/{id}",
                Op::Read,
                false,
            ),
            (
                M::DELETE,
                "/v1/sprites/{name}/checkpoints/{id}",
                Op::Write,
                false,
            ),
            (
                M::POST,
                "/v1/sprites/{name}/checkpoints/{id}/restore",
                Op::Write,
                true,
            ),
            (M::POST, "/v1/sprites/{name}/sleep", Op::Write, false),
            (M::GET, "/v1/sprites/{name}/policy/network", Op::Read, false),
            (
                M::POST,
                "/v1/sprites/{name}/policy/network",
                Op::Write,
                false,
            ),
        ] {
            let path = t.replace("{name}", "box");
            assert_eq!(c(m.clone(), t, &path), sprite("box", op, wakes), "{m} {t}");
        }
        // The raw segment, not decoded: a percent-encoded name is not a valid name.
        assert_eq!(
            c(M::GET, t, "/v1/sprites/b%6Fx"),
            sprite("b%6Fx", Op::Read, false)
        );
    }
}
