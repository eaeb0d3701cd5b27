//! Sprite URLs (§3.10): `http://<name>.<url-base host>[:any port]/...` reaches the HTTP app
//! inside sprite `name` (port 8080, or the `http_port` of its service: [`target_port`]).
//!
//! * **Where.** A Host-dispatching layer in front of the API router: on the API listener,
//!   requests whose Host is a sprite's are proxied and everything else is the API. The
//!   optional `--ingress-listen` address (with optional TLS) serves sprite URLs only
//!   ([`server`]), for a port 80/443 in front of the world while the API stays private.
//! * **How.** wispd makes the TCP connection itself inside the sprite's network namespace
//!   ([`connect`]): no route, address or NAT to the sprite is needed, and `127.0.0.1` apps
//!   work. HTTP/1.1 upstream with keep-alive pooling per sprite ([`upstream`]), bodies
//!   streamed both ways with per-connection backpressure (a slow client holds only its own
//!   connection), `Upgrade` (WebSocket) passed through as a raw tunnel, `X-Forwarded-For`,
//!   `-Proto` and `-Host` set (overwritten: this is the edge), hop-by-hop headers dropped.
//! * **Auth** (`url_settings.auth`): `public` lets everything through untouched (the app's own
//!   `Authorization` included). `sprite` needs an org token of the sprite's org, as
//!   `Authorization: Bearer` (or Basic `bearer:<token>`), or a login cookie ([`session`]);
//!   the token header and the cookie are removed before the request reaches the app, so the
//!   app never sees org credentials. Unknown sprite or bad Host → 404 JSON; 401 otherwise.
//! * **Lifecycle.** A request counts as an operation in flight from before the wake until its
//!   response body ends (a WebSocket: until the tunnel closes), so a sleeping sprite wakes and
//!   the request waits for it; an idle keep-alive connection does not keep a sprite awake.

mod connect;
mod pages;
pub mod server;
pub mod session;
mod upstream;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Request, State};
use axum::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use axum::http::{Method, StatusCode, Uri, Version};
use axum::middleware::{from_fn_with_state, Next};
use axum::response::Response;
use axum::Router;
use hyper_util::rt::TokioIo;
use wisp_api::sprite::URL_AUTH_PUBLIC;

pub use connect::{connect_sprite, resolve};

use crate::activity::ActivityGuard;
use crate::api::ApiError;
use crate::auth::{token_from_headers, verify};
use crate::manager::SpriteManager;
use crate::store::{SpriteRow, SpriteState, Store};
use session::{cookie_value, session_allows, without_cookie, SessionKey, COOKIE};
use upstream::UpstreamClient;

/// The port a sprite URL reaches when no service claims one (§3.10).
pub const DEFAULT_HTTP_PORT: u16 = 8080;
const LOGIN_PATH: &str = "/.wisp/login";
const LOGOUT_PATH: &str = "/.wisp/logout";
/// Largest login form body.
const LOGIN_BODY_LIMIT: usize = 16 << 10;
/// `last_active_at` in the database is refreshed at most this often per sprite.
const DB_TOUCH_EVERY: Duration = Duration::from_secs(10);
/// A wake lease ends this long after the sprite URL's last request (see [`Lease`]).
const LEASE_IDLE: Duration = Duration::from_secs(1);

/// While requests keep coming, one wake serves them all: the lease holds an operation in
/// flight, so the idle timer cannot put the sprite to sleep under it, and requests skip the
/// wake (a keeper ping under the sprite's lock, which would serialize every request of the
/// sprite). A lease is void when the sprite was frozen since (`last_warming_at` changed: an
/// explicit sleep) or stopped (its init, whose network namespace the lease names, is gone),
/// and ends [`LEASE_IDLE`] after its last request.
struct Lease {
    _guard: ActivityGuard,
    warming_at: Option<String>,
    netns: std::path::PathBuf,
    /// [`target_port`] when the lease was taken.
    port: u16,
    last_used: Instant,
}

/// The sprite URL proxy, shared by every listener.
#[derive(Clone)]
pub struct Ingress {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<Store>,
    manager: Arc<SpriteManager>,
    /// Lowercase host of `--url-base`: sprite hosts are `<name>.<base_host>`.
    base_host: String,
    client: UpstreamClient,
    key: SessionKey,
    db_touched: Mutex<HashMap<String, Instant>>,
    leases: Mutex<HashMap<String, Lease>>,
}

impl std::fmt::Debug for Ingress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ingress")
            .field("base_host", &self.inner.base_host)
            .finish_non_exhaustive()
    }
}

impl Ingress {
    pub fn new(
        store: Arc<Store>,
        manager: Arc<SpriteManager>,
        url_base: &str,
        key: SessionKey,
    ) -> Self {
        let client = upstream::client(manager.runtime().clone());
        let inner = Arc::new(Inner {
            store,
            manager,
            base_host: base_host(url_base),
            client,
            key,
            db_touched: Mutex::new(HashMap::new()),
            leases: Mutex::new(HashMap::new()),
        });
        tokio::spawn(end_leases(Arc::downgrade(&inner)));
        Ingress { inner }
    }
}

/// Drops wake leases whose last request is older than [`LEASE_IDLE`].
async fn end_leases(inner: std::sync::Weak<Inner>) {
    let mut tick = tokio::time::interval(LEASE_IDLE / 2);
    loop {
        tick.tick().await;
        let Some(inner) = inner.upgrade() else { return };
        let ended: Vec<Lease> = {
            let mut leases = inner.leases.lock().unwrap_or_else(|e| e.into_inner());
            let old: Vec<String> = leases
                .iter()
                .filter(|(_, l)| l.last_used.elapsed() >= LEASE_IDLE)
                .map(|(id, _)| id.clone())
                .collect();
            old.iter().filter_map(|id| leases.remove(id)).collect()
        };
        drop(ended);
    }
}

/// The API router behind the Host dispatch: sprite hosts go to the sprite, the rest to `api`.
pub fn wrap(api: Router, ingress: Ingress) -> Router {
    Router::new()
        .fallback_service(api)
        .layer(from_fn_with_state(
            Dispatch {
                ingress,
                https: false,
                serve_api: true,
            },
            dispatch,
        ))
}

/// Sprite URLs only (the `--ingress-listen` listener): other hosts are 404.
pub fn router_only(ingress: Ingress, https: bool) -> Router {
    Router::new()
        .fallback(|| async { StatusCode::NOT_FOUND })
        .layer(from_fn_with_state(
            Dispatch {
                ingress,
                https,
                serve_api: false,
            },
            dispatch,
        ))
}

#[derive(Clone)]
struct Dispatch {
    ingress: Ingress,
    https: bool,
    serve_api: bool,
}

/// `http://localhost:7575` → `localhost`; `https://Sprites.Example.com/` → `sprites.example.com`.
pub fn base_host(url_base: &str) -> String {
    let rest = url_base
        .split_once("://")
        .map(|(_, r)| r)
        .unwrap_or(url_base);
    let authority = rest.split('/').next().unwrap_or("");
    let authority = authority.rsplit('@').next().unwrap_or(authority);
    strip_port(authority)
        .trim_end_matches('.')
        .to_ascii_lowercase()
}

fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host.split_inclusive(']').next().unwrap_or(host);
    }
    match host.rsplit_once(':') {
        Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    }
}

#[derive(Debug, PartialEq, Eq)]
enum HostKind {
    /// Not a sprite's host: the API.
    Api,
    /// `<name>.<base>` with a valid sprite name.
    Sprite(String),
    /// Under the base host but not a sprite name (`a.b.<base>`, `Bad_Name.<base>`).
    Bad,
}

fn classify(host: Option<&str>, base: &str) -> HostKind {
    let Some(host) = host else {
        return HostKind::Api;
    };
    let host = strip_port(host.trim())
        .trim_end_matches('.')
        .to_ascii_lowercase();
    let Some(label) = host
        .strip_suffix(base)
        .and_then(|p| p.strip_suffix('.'))
        .filter(|_| !base.is_empty())
    else {
        return HostKind::Api;
    };
    if wisp_api::name::validate_sprite_name(label).is_ok() {
        HostKind::Sprite(label.to_string())
    } else {
        HostKind::Bad
    }
}

/// The Host of a request (the `:authority` for HTTP/2).
fn request_host(req: &Request) -> Option<String> {
    req.headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or_else(|| req.uri().authority().map(|a| a.to_string()))
}

async fn dispatch(State(d): State<Dispatch>, req: Request, next: Next) -> Response {
    let host = request_host(&req);
    match classify(host.as_deref(), &d.ingress.inner.base_host) {
        HostKind::Api if d.serve_api => next.run(req).await,
        HostKind::Api => pages::error(
            false,
            StatusCode::NOT_FOUND,
            &format!(
                "no sprite at host {:?}: sprite URLs are <name>.{}",
                host.unwrap_or_default(),
                d.ingress.inner.base_host
            ),
        ),
        HostKind::Bad => pages::error(
            false,
            StatusCode::NOT_FOUND,
            &format!(
                "no sprite at host {:?}: not a sprite name",
                host.unwrap_or_default()
            ),
        ),
        HostKind::Sprite(name) => d.ingress.serve(name, req, d.https).await,
    }
}

/// The port inside the sprite that its URL reaches (§3.10): that of the service that owns
/// `http_port` (at most one does), else [`DEFAULT_HTTP_PORT`]. Services start with the
/// sprite and are restarted by its keeper; one stopped on purpose is not started for a
/// request (the request gets a 502 saying nothing listens). The flag says whether a
/// service that should be running owns the port (then a request may wait for it to listen).
fn target_port(store: &Store, sprite: &SpriteRow) -> (u16, bool) {
    match store.services(&sprite.id) {
        Ok(services) => services
            .iter()
            .find_map(|s| {
                let port = u16::try_from(s.http_port?).ok().filter(|p| *p != 0)?;
                Some((port, !s.stopped))
            })
            .unwrap_or((DEFAULT_HTTP_PORT, false)),
        Err(e) => {
            tracing::warn!(sprite_id = %sprite.id, "reading services: {e}");
            (DEFAULT_HTTP_PORT, false)
        }
    }
}

/// How long a request waits for the `http_port` service to listen (it may just have been
/// started by the wake).
const SERVICE_LISTEN_WAIT: Duration = Duration::from_secs(10);

impl Ingress {
    async fn serve(&self, name: String, req: Request, https: bool) -> Response {
        let html = pages::accepts_html(req.headers());
        let row = match self.find(&name) {
            Ok(Some(row)) => row,
            Ok(None) => {
                return pages::error(
                    false,
                    StatusCode::NOT_FOUND,
                    &format!("sprite not found: {name}"),
                )
            }
            Err(e) => return api_error(html, e),
        };
        match req.uri().path() {
            LOGIN_PATH => return self.login(req, &row, https).await,
            LOGOUT_PATH => return pages::logged_out(https),
            _ => {}
        }
        let public = row.url_auth == URL_AUTH_PUBLIC;
        if !public && !self.authorized(req.headers(), &row) {
            let next = req
                .uri()
                .path_and_query()
                .map(|p| p.as_str())
                .unwrap_or("/");
            return pages::unauthorized(html, next);
        }
        self.forward(row, req, public, https, html).await
    }

    /// The ready sprite called `name`. Names are unique per org and URLs carry no org: a name
    /// that several orgs use is refused rather than guessed.
    fn find(&self, name: &str) -> Result<Option<SpriteRow>, ApiError> {
        let mut rows: Vec<SpriteRow> = self
            .inner
            .store
            .sprites_in_state(SpriteState::Ready)?
            .into_iter()
            .filter(|r| r.name == name)
            .collect();
        match rows.len() {
            0 => Ok(None),
            1 => Ok(rows.pop()),
            _ => Err(ApiError::not_found(format!(
                "sprite name {name} is used by several organizations; its URL is ambiguous"
            ))),
        }
    }

    /// A bearer token of the sprite's org, or a live login cookie for this sprite.
    fn authorized(&self, headers: &HeaderMap, row: &SpriteRow) -> bool {
        let store = &self.inner.store;
        if let Some(token) = token_from_headers(headers) {
            match crate::auth::verify_sprite_access(store, &token, &row.name) {
                Ok(Some(caller)) if caller.org_id == row.org_id => return true,
                Ok(_) => {}
                Err(e) => tracing::warn!("checking a URL token: {e}"),
            }
        }
        headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .filter_map(|v| cookie_value(v, COOKIE))
            .any(|v| session_allows(store, &self.inner.key, v, row))
    }

    /// `/.wisp/login`: `GET ?token=T[&next=/p]`, or `POST` of the form fields `token` and
    /// `next`; without a token, the form.
    async fn login(&self, req: Request, row: &SpriteRow, https: bool) -> Response {
        let mut fields: Vec<(String, String)> = req
            .uri()
            .query()
            .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
            .unwrap_or_default();
        match *req.method() {
            Method::GET | Method::HEAD => {}
            Method::POST => {
                let body = match axum::body::to_bytes(req.into_body(), LOGIN_BODY_LIMIT).await {
                    Ok(b) => b,
                    Err(_) => {
                        return pages::error(
                            true,
                            StatusCode::PAYLOAD_TOO_LARGE,
                            "login form too large",
                        )
                    }
                };
                fields.extend(form_urlencoded::parse(&body).into_owned());
            }
            _ => {
                return pages::error(
                    false,
                    StatusCode::METHOD_NOT_ALLOWED,
                    "use GET or POST on /.wisp/login",
                )
            }
        }
        let field = |k: &str| {
            fields
                .iter()
                .rev()
                .find(|(key, v)| key == k && !v.is_empty())
                .map(|(_, v)| v.as_str())
        };
        let next = pages::safe_next(field("next"));
        let Some(token) = field("token") else {
            return pages::login_form(&next);
        };
        let caller = verify(&self.inner.store, token).ok().flatten();
        let parts = wisp_api::token::parse_token(token);
        match (caller, parts) {
            (Some(c), Some(parts)) if c.org_id == row.org_id => {
                let expiry = session::unix_now() + session::SESSION_TTL.as_secs();
                let value = self.inner.key.issue(&row.id, parts.token_id, expiry);
                pages::logged_in(&value, &next, https)
            }
            _ => pages::unauthorized(true, &next),
        }
    }

    /// Proxies the request to the app in the sprite, waking it first.
    async fn forward(
        &self,
        row: SpriteRow,
        mut req: Request,
        public: bool,
        https: bool,
        html: bool,
    ) -> Response {
        let manager = &self.inner.manager;
        let activity = manager.activity().begin(&row.id);
        let port = match self.use_lease(&row) {
            Some(port) => port,
            None => {
                if let Err(e) = manager.wake(&row).await {
                    return api_error(html, e.into());
                }
                let (port, service) = target_port(&self.inner.store, &row);
                if service {
                    self.wait_listening(&row, port).await;
                }
                self.take_lease(&row, port).await;
                self.touch_db(&row.id);
                port
            }
        };
        let upgrade = wants_upgrade(req.headers());
        let downstream = upgrade.then(|| hyper::upgrade::on(&mut req));
        let host = request_host(&req).unwrap_or_default();
        let (parts, body) = req.into_parts();
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip());
        let mut headers = parts.headers;
        request_headers(&mut headers, upgrade, public, https, &host, peer);
        let pq = parts
            .uri
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/");
        let uri: Uri = match format!("http://{}:{port}{pq}", row.id).parse() {
            Ok(u) => u,
            Err(e) => return pages::error(html, StatusCode::BAD_REQUEST, &e.to_string()),
        };
        let mut up = axum::http::Request::new(body);
        *up.method_mut() = parts.method;
        *up.uri_mut() = uri;
        *up.version_mut() = Version::HTTP_11;
        *up.headers_mut() = headers;

        let mut res = match self.inner.client.request(up).await {
            Ok(r) => r,
            Err(e) => return bad_gateway(html, &row.name, port, &e),
        };
        if res.status() == StatusCode::SWITCHING_PROTOCOLS {
            let Some(downstream) = downstream else {
                return pages::error(
                    html,
                    StatusCode::BAD_GATEWAY,
                    "the app switched protocols without being asked to",
                );
            };
            let upstream = hyper::upgrade::on(&mut res);
            tokio::spawn(tunnel(downstream, upstream, activity));
            let (parts, _) = res.into_parts();
            return Response::from_parts(parts, Body::empty());
        }
        let (mut parts, body) = res.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        Response::from_parts(
            parts,
            Body::new(Guarded {
                inner: body,
                guard: Some(activity),
            }),
        )
    }

    /// The target port if a live lease lets this request skip the wake (and renews it).
    fn use_lease(&self, row: &SpriteRow) -> Option<u16> {
        let mut leases = self.inner.leases.lock().unwrap_or_else(|e| e.into_inner());
        match leases.get_mut(&row.id) {
            Some(l)
                if l.warming_at == row.last_warming_at
                    && l.last_used.elapsed() < LEASE_IDLE
                    && std::fs::read_link(&l.netns).is_ok() =>
            {
                l.last_used = Instant::now();
                Some(l.port)
            }
            Some(_) => {
                leases.remove(&row.id);
                None
            }
            None => None,
        }
    }

    /// Records a wake that just succeeded as a lease.
    async fn take_lease(&self, row: &SpriteRow, port: u16) {
        let manager = &self.inner.manager;
        let Ok(netns) = manager.runtime().netns_path(&row.id).await else {
            return;
        };
        let lease = Lease {
            _guard: manager.activity().begin(&row.id),
            warming_at: row.last_warming_at.clone(),
            netns,
            port,
            last_used: Instant::now(),
        };
        let old = self
            .inner
            .leases
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(row.id.clone(), lease);
        drop(old);
    }

    /// Waits (at most [`SERVICE_LISTEN_WAIT`]) until something accepts on `port` in the
    /// sprite: a service started by the wake takes a moment to listen.
    async fn wait_listening(&self, row: &SpriteRow, port: u16) {
        let runtime = self.inner.manager.runtime();
        let deadline = Instant::now() + SERVICE_LISTEN_WAIT;
        loop {
            match connect_sprite(runtime, &row.id, &connect::localhost(port)).await {
                Err(e) if e.is_refused() && Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await
                }
                _ => return,
            }
        }
    }

    /// `last_active_at` for the sprite object, without a database write per request.
    fn touch_db(&self, id: &str) {
        let now = Instant::now();
        {
            let mut map = self
                .inner
                .db_touched
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if map
                .get(id)
                .is_some_and(|t| now.duration_since(*t) < DB_TOUCH_EVERY)
            {
                return;
            }
            map.insert(id.to_string(), now);
        }
        let manager = self.inner.manager.clone();
        let id = id.to_string();
        tokio::task::spawn_blocking(move || manager.touch_active(&id));
    }
}

fn api_error(html: bool, e: ApiError) -> Response {
    pages::error(html, e.status, &e.body.error)
}

fn bad_gateway(
    html: bool,
    name: &str,
    port: u16,
    e: &hyper_util::client::legacy::Error,
) -> Response {
    let msg = match upstream::connect_error(e) {
        Some(c) if c.is_refused() => format!(
            "nothing is listening on port {port} in sprite {name} (start a server on \
             0.0.0.0:{port} or 127.0.0.1:{port})"
        ),
        Some(c) => format!("cannot reach port {port} in sprite {name}: {c}"),
        None => format!(
            "the app on port {port} in sprite {name} did not answer properly: {}",
            root_cause(e)
        ),
    };
    tracing::debug!("{msg}");
    pages::error(html, StatusCode::BAD_GATEWAY, &msg)
}

fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

/// Both halves of an upgraded connection, relayed until either side closes.
async fn tunnel(
    downstream: hyper::upgrade::OnUpgrade,
    upstream: hyper::upgrade::OnUpgrade,
    activity: ActivityGuard,
) {
    let (d, u) = tokio::join!(downstream, upstream);
    match (d, u) {
        (Ok(d), Ok(u)) => {
            let mut d = TokioIo::new(d);
            let mut u = TokioIo::new(u);
            if let Err(e) = tokio::io::copy_bidirectional(&mut d, &mut u).await {
                tracing::debug!("sprite URL tunnel ended: {e}");
            }
        }
        (d, u) => tracing::debug!(
            "sprite URL upgrade failed: client {:?}, app {:?}",
            d.err(),
            u.err()
        ),
    }
    drop(activity);
}

fn wants_upgrade(h: &HeaderMap) -> bool {
    h.contains_key(header::UPGRADE)
        && h.get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
}

/// Hop-by-hop headers (RFC 9110 §7.6.1) are this connection's, not the app's.
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Removes hop-by-hop headers and those named in `Connection`; returns `Upgrade`.
fn strip_hop_by_hop(h: &mut HeaderMap) -> Option<HeaderValue> {
    let upgrade = h.get(header::UPGRADE).cloned();
    let named: Vec<HeaderName> = h
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .collect();
    for n in named {
        h.remove(n);
    }
    for n in HOP_BY_HOP {
        h.remove(n);
    }
    upgrade
}

/// The headers the app gets.
fn request_headers(
    h: &mut HeaderMap,
    upgrade: bool,
    public: bool,
    https: bool,
    host: &str,
    peer: Option<std::net::IpAddr>,
) {
    let up = strip_hop_by_hop(h);
    if upgrade {
        if let Some(up) = up {
            h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
            h.insert(header::UPGRADE, up);
        }
    }
    // Org credentials are wisp's, never the app's.
    if !public && token_from_headers(h).is_some() {
        h.remove(header::AUTHORIZATION);
    }
    let cookies: Vec<String> = h
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| without_cookie(v, COOKIE))
        .collect();
    h.remove(header::COOKIE);
    for c in cookies {
        if let Ok(v) = HeaderValue::from_str(&c) {
            h.append(header::COOKIE, v);
        }
    }
    if let Ok(v) = HeaderValue::from_str(host) {
        if !h.contains_key(header::HOST) {
            h.insert(header::HOST, v.clone());
        }
        h.insert("x-forwarded-host", v);
    }
    match peer {
        Some(ip) => {
            if let Ok(v) = HeaderValue::from_str(&ip.to_string()) {
                h.insert("x-forwarded-for", v);
            }
        }
        None => {
            h.remove("x-forwarded-for");
        }
    }
    h.insert(
        "x-forwarded-proto",
        HeaderValue::from_static(if https { "https" } else { "http" }),
    );
}

/// A response body from the app that keeps the sprite's operation in flight until it ends.
struct Guarded {
    inner: hyper::body::Incoming,
    guard: Option<ActivityGuard>,
}

impl http_body::Body for Guarded {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, hyper::Error>>> {
        let res = Pin::new(&mut self.inner).poll_frame(cx);
        match &res {
            Poll::Ready(None) | Poll::Ready(Some(Err(_))) => self.guard = None,
            Poll::Ready(Some(Ok(_))) => {
                if let Some(g) = &self.guard {
                    g.touch();
                }
            }
            Poll::Pending => {}
        }
        res
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_hosts() {
        assert_eq!(base_host("http://localhost:7575"), "localhost");
        assert_eq!(
            base_host("https://Sprites.Example.com/x"),
            "sprites.example.com"
        );
        assert_eq!(base_host("example.com"), "example.com");
        assert_eq!(base_host("http://[::1]:80"), "[::1]");
    }

    #[test]
    fn host_kinds() {
        let b = "localhost";
        assert_eq!(
            classify(Some("web.localhost:7575"), b),
            HostKind::Sprite("web".into())
        );
        assert_eq!(
            classify(Some("WEB.LocalHost."), b),
            HostKind::Sprite("web".into())
        );
        assert_eq!(classify(Some("localhost:7575"), b), HostKind::Api);
        assert_eq!(classify(Some("127.0.0.1:7575"), b), HostKind::Api);
        assert_eq!(classify(None, b), HostKind::Api);
        assert_eq!(classify(Some("xlocalhost"), b), HostKind::Api);
        assert_eq!(classify(Some("a.b.localhost"), b), HostKind::Bad);
        assert_eq!(classify(Some("bad_name.localhost"), b), HostKind::Bad);
        assert_eq!(classify(Some(".localhost"), b), HostKind::Bad);
    }

    #[test]
    fn headers_for_the_app() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("close, x-hop"));
        h.insert("x-hop", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("5"));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer a/b/c/d"),
        );
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("wisp_session=s; app=1"),
        );
        h.insert("x-forwarded-for", HeaderValue::from_static("6.6.6.6"));
        h.insert(header::HOST, HeaderValue::from_static("web.localhost:1"));
        request_headers(
            &mut h,
            false,
            false,
            false,
            "web.localhost:1",
            Some("127.0.0.1".parse().unwrap()),
        );
        assert!(h.get("x-hop").is_none() && h.get("keep-alive").is_none());
        assert!(h.get(header::CONNECTION).is_none());
        assert!(h.get(header::AUTHORIZATION).is_none());
        assert_eq!(h[header::COOKIE], "app=1");
        assert_eq!(h["x-forwarded-for"], "127.0.0.1");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-forwarded-host"], "web.localhost:1");

        // Public: the app's own Authorization stays; an upgrade keeps its headers.
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer app"),
        );
        h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        assert!(wants_upgrade(&h));
        request_headers(&mut h, true, true, true, "w.localhost", None);
        assert_eq!(h[header::AUTHORIZATION], "Bearer app");
        assert_eq!(h[header::CONNECTION], "upgrade");
        assert_eq!(h[header::UPGRADE], "websocket");
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(h[header::HOST], "w.localhost");
    }
}
