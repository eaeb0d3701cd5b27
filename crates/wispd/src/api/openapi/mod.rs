//! The OpenAPI 3 document of the HTTP API, served unauthenticated at `GET /v1/openapi.json`.
//!
//! Every operation is the `#[utoipa::path]` attribute on its handler; this module gathers
//! them, adds what every operation shares (the bearer scheme, the `{"error": ...}` responses)
//! and serves the result. `tests/openapi.rs` checks that each route of the router is here.

pub mod params;
pub mod schemas;

use std::sync::LazyLock;

use axum::http::header;
use axum::response::IntoResponse;
use utoipa::openapi::response::{Response, ResponseBuilder};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{Content, RefOr};
use utoipa::{Modify, OpenApi};
use wisp_api::error::ErrorBody;

use super::{checkpoints, exec_http, exec_ws, fs, orgs, policy, ports, proxy, services};
use super::{control, sessions, sprites};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Wisp",
        description = "Linux sandboxes (sprites) behind the Sprites API. Every non-2xx \
                       response is JSON `{\"error\": ...}`. Long operations stream NDJSON.",
    ),
    paths(
        serve,
        super::organization,
        orgs::list, orgs::create, orgs::show, orgs::update,
        orgs::list_tokens, orgs::create_token, orgs::revoke_token,
        sprites::list, sprites::create, sprites::get, sprites::update, sprites::destroy,
        sprites::sleep,
        checkpoints::create, checkpoints::list, checkpoints::get, checkpoints::delete,
        checkpoints::restore,
        exec_ws::exec_get, exec_http::exec_post, exec_ws::exec_head, exec_ws::session_get,
        sessions::kill,
        control::control_get, proxy::proxy_get, ports::ports_watch,
        policy::get_network, policy::set_network,
        fs::read, fs::write, fs::list, fs::remove, fs::rename, fs::copy, fs::chmod, fs::chown,
        services::list, services::signal, services::get_one, services::put, services::delete,
        services::start, services::stop, services::restart, services::logs,
    ),
    components(schemas(
        ErrorBody,
        wisp_api::exec::TextMessage,
        schemas::PortsMessage,
    )),
    modifiers(&Shared),
    security(("bearer" = [])),
    tags(
        (name = "meta", description = "The document itself and the token check"),
        (name = "organizations", description = "Organizations and their tokens (Wisp extension)"),
        (name = "sprites", description = "Sprite lifecycle"),
        (name = "checkpoints", description = "Checkpoints and restores"),
        (name = "exec", description = "Commands and sessions"),
        (name = "network", description = "TCP proxy, ports and network policy"),
        (name = "fs", description = "The sprite's filesystem"),
        (name = "services", description = "Long-running processes in a sprite"),
    ),
)]
struct ApiDoc;

/// What every operation shares: the bearer scheme, 401 for the secured ones, and the JSON
/// error body as the `default` response.
struct Shared;

impl Modify for Shared {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "An API token, `org-slug/org-id/token-id/secret`; the first admin \
                         token is in `<data-dir>/admin-token`.",
                    ))
                    .build(),
            ),
        );
        for item in doc.paths.paths.values_mut() {
            for op in [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.head,
            ]
            .into_iter()
            .flatten()
            {
                // An empty requirement list (`security: [{}]`, as `serve` has) is public.
                let public = op
                    .security
                    .as_ref()
                    .is_some_and(|s| s.iter().all(|r| r == &Default::default()));
                let responses = &mut op.responses.responses;
                if !public {
                    responses
                        .entry("401".into())
                        .or_insert_with(|| error_response("Missing or invalid bearer token"));
                    responses.entry("403".into()).or_insert_with(|| {
                        error_response("The token may not do this (attenuated or another org)")
                    });
                }
                responses
                    .entry("default".into())
                    .or_insert_with(|| error_response("Any other error"));
            }
        }
    }
}

fn error_response(description: &str) -> RefOr<Response> {
    RefOr::T(
        ResponseBuilder::new()
            .description(description)
            .content(
                "application/json",
                Content::new(Some(RefOr::Ref(utoipa::openapi::Ref::from_schema_name(
                    "ErrorBody",
                )))),
            )
            .build(),
    )
}

/// The document, built once.
static DOCUMENT: LazyLock<String> = LazyLock::new(|| {
    ApiDoc::openapi()
        .to_json()
        .expect("the OpenAPI document serializes")
});

/// `GET /v1/openapi.json`: public, like any API's description.
#[utoipa::path(
    operation_id = "meta_serve",
    get,
    path = "/v1/openapi.json",
    tag = "meta",
    security(()),
    responses((status = 200, description = "This document", content_type = "application/json")),
)]
pub async fn serve() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        DOCUMENT.as_str(),
    )
}
