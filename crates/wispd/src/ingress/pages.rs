//! What the sprite URL answers by itself: errors (JSON, or HTML for browsers), the login form
//! and its redirects.

use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use wisp_api::error::ErrorBody;

use super::session::{COOKIE, SESSION_TTL};

/// Whether the client prefers HTML (a browser) over JSON.
pub fn accepts_html(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("text/html"))
}

pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn html_page(status: StatusCode, title: &str, body: &str) -> Response {
    let page = format!(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>{t}</title></head>\
         <body style=\"font-family:sans-serif;max-width:40em;margin:3em auto\">\
         <h1>{t}</h1>{body}</body></html>\n",
        t = escape(title)
    );
    let mut res = (status, page).into_response();
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    res.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

/// An error as `{"error": message}`, or as a small HTML page for a browser.
pub fn error(html: bool, status: StatusCode, message: &str) -> Response {
    if html {
        let title = format!(
            "{} {}",
            status.as_u16(),
            status.canonical_reason().unwrap_or("")
        );
        html_page(status, &title, &format!("<p>{}</p>", escape(message)))
    } else {
        (status, Json(ErrorBody::new(message))).into_response()
    }
}

pub const UNAUTHORIZED: &str = "authentication required: this sprite's URL needs an org token \
     (Authorization: Bearer <token>) or a login at /.wisp/login";

/// 401 for a sprite URL in `sprite` auth mode; browsers get the login form.
pub fn unauthorized(html: bool, next: &str) -> Response {
    let mut res = if html {
        html_page(
            StatusCode::UNAUTHORIZED,
            "Sign in to this sprite",
            &login_form_body(next, true),
        )
    } else {
        error(false, StatusCode::UNAUTHORIZED, UNAUTHORIZED)
    };
    res.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"wisp sprite\""),
    );
    res
}

fn login_form_body(next: &str, failed: bool) -> String {
    format!(
        "{}<form method=\"post\" action=\"/.wisp/login\">\
         <input type=\"hidden\" name=\"next\" value=\"{}\">\
         <label>Org token <input type=\"password\" name=\"token\" size=\"60\" autofocus></label> \
         <button type=\"submit\">Sign in</button></form>",
        if failed {
            "<p>This sprite's URL is private to its organization. Sign in with an org token \
             (<code>wisp</code> reads it from your config), or send \
             <code>Authorization: Bearer &lt;token&gt;</code>.</p>"
        } else {
            ""
        },
        escape(next)
    )
}

/// `GET /.wisp/login` without a token.
pub fn login_form(next: &str) -> Response {
    html_page(
        StatusCode::OK,
        "Sign in to this sprite",
        &login_form_body(next, true),
    )
}

/// `next` if it is a path on this host, else `/` (no open redirects).
pub fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n)
            if n.starts_with('/')
                && !n.starts_with("//")
                && !n.contains('\\')
                && !n.chars().any(|c| c.is_control()) =>
        {
            n.to_string()
        }
        _ => "/".to_string(),
    }
}

fn cookie_attrs(https: bool) -> &'static str {
    if https {
        "; Path=/; HttpOnly; SameSite=Lax; Secure"
    } else {
        "; Path=/; HttpOnly; SameSite=Lax"
    }
}

/// 303 to `next`, setting the session cookie.
pub fn logged_in(value: &str, next: &str, https: bool) -> Response {
    let cookie = format!(
        "{COOKIE}={value}; Max-Age={}{}",
        SESSION_TTL.as_secs(),
        cookie_attrs(https)
    );
    redirect_with_cookie(next, &cookie)
}

/// `/.wisp/logout`: clears the cookie.
pub fn logged_out(https: bool) -> Response {
    let cookie = format!("{COOKIE}=; Max-Age=0{}", cookie_attrs(https));
    let mut res = html_page(StatusCode::OK, "Signed out", "");
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        res.headers_mut().insert(header::SET_COOKIE, v);
    }
    res
}

fn redirect_with_cookie(next: &str, cookie: &str) -> Response {
    let mut res = Response::new(Body::empty());
    *res.status_mut() = StatusCode::SEE_OTHER;
    let h = res.headers_mut();
    if let Ok(v) = HeaderValue::from_str(next) {
        h.insert(header::LOCATION, v);
    }
    if let Ok(v) = HeaderValue::from_str(cookie) {
        h.insert(header::SET_COOKIE, v);
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_paths() {
        assert_eq!(safe_next(None), "/");
        assert_eq!(safe_next(Some("/a?b=c")), "/a?b=c");
        assert_eq!(safe_next(Some("//evil.example")), "/");
        assert_eq!(safe_next(Some("https://evil.example")), "/");
        assert_eq!(safe_next(Some("/\\evil")), "/");
        assert_eq!(safe_next(Some("/a\r\nb")), "/");
    }

    #[test]
    fn escaping() {
        assert_eq!(
            escape("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
    }
}
