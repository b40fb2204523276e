//! The HTTP plumbing: replies (with the security headers every response carries), cookies,
//! form and JSON bodies. No route or role logic here.
//!
//! Every response forbids framing and inline scripts (CSP `script-src 'self'`), so a value that
//! escaped into a page still could not run.

use std::collections::HashMap;

use bytes::Bytes;
use http_body_util::Full;
use hyper::Response;
use serde::Serialize;

use crate::error::ApiError;

/// The session cookie's name.
pub const SESSION_COOKIE: &str = "cinnabar_session";

/// A finished reply, before it becomes a hyper response.
#[derive(Debug)]
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// `Content-Type`.
    pub content_type: &'static str,
    /// Extra headers (`Location`, `Set-Cookie`).
    pub headers: Vec<(&'static str, String)>,
    /// The body.
    pub body: Bytes,
}

impl Reply {
    /// `status` with a JSON body.
    pub fn json<T: Serialize>(status: u16, value: &T) -> Reply {
        let body = serde_json::to_vec_pretty(value).unwrap_or_else(|e| {
            format!("{{\"error\":\"cannot encode the reply: {e}\"}}").into_bytes()
        });
        Reply {
            status,
            content_type: "application/json",
            headers: Vec::new(),
            body: Bytes::from(body),
        }
    }

    /// 200 with an HTML page.
    pub fn html(body: String) -> Reply {
        Reply {
            status: 200,
            content_type: "text/html; charset=utf-8",
            headers: Vec::new(),
            body: Bytes::from(body),
        }
    }

    /// 200 with an SVG picture (a drill's timeline, made by `cinnabar-drill`).
    pub fn svg(body: String) -> Reply {
        Reply {
            status: 200,
            content_type: "image/svg+xml",
            headers: Vec::new(),
            body: Bytes::from(body),
        }
    }

    /// 200 with static bytes of `content_type`.
    pub fn asset(content_type: &'static str, body: &'static str) -> Reply {
        Reply {
            status: 200,
            content_type,
            headers: vec![("cache-control", "no-cache".to_owned())],
            body: Bytes::from_static(body.as_bytes()),
        }
    }

    /// 303 to `location` (after a form POST, so a reload does not post again).
    pub fn redirect(location: &str) -> Reply {
        Reply {
            status: 303,
            content_type: "text/plain; charset=utf-8",
            headers: vec![("location", location.to_owned())],
            body: Bytes::new(),
        }
    }

    /// The JSON form of an error: `{"error": "..."}` with its status.
    pub fn error(error: &ApiError) -> Reply {
        Reply::json(
            error.status(),
            &serde_json::json!({ "error": error.to_string() }),
        )
    }

    /// Adds a header.
    #[must_use]
    pub fn with_header(mut self, name: &'static str, value: String) -> Reply {
        self.headers.push((name, value));
        self
    }

    /// The hyper response, with the headers every reply carries.
    pub fn into_response(self) -> Response<Full<Bytes>> {
        let mut builder = Response::builder()
            .status(self.status)
            .header("content-type", self.content_type)
            .header("x-content-type-options", "nosniff")
            .header("x-frame-options", "DENY")
            .header("referrer-policy", "same-origin")
            .header(
                "content-security-policy",
                "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; \
                 frame-ancestors 'none'; form-action 'self'",
            );
        if self.content_type.starts_with("application/json")
            || self.content_type.starts_with("text/html")
        {
            builder = builder.header("cache-control", "no-store");
        }
        for (name, value) in self.headers {
            builder = builder.header(name, value);
        }
        builder
            .body(Full::new(self.body))
            .unwrap_or_else(|_| Response::new(Full::new(Bytes::from_static(b"bad header"))))
    }
}

/// The `Set-Cookie` value that gives a browser its session: HttpOnly (no script reads it),
/// SameSite=Strict (no other site's page sends it).
pub fn session_cookie(token: &str) -> String {
    format!("{SESSION_COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict")
}

/// The `Set-Cookie` value that ends it.
pub fn cleared_cookie() -> String {
    format!("{SESSION_COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0")
}

/// The value of cookie `name` in a `Cookie` header.
pub fn cookie<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header.split(';').find_map(|pair| {
        let (key, value) = pair.trim().split_once('=')?;
        (key == name).then_some(value)
    })
}

/// The fields of an `application/x-www-form-urlencoded` body (or query string).
pub fn form(body: &[u8]) -> HashMap<String, String> {
    String::from_utf8_lossy(body)
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(key), percent_decode(value))
        })
        .collect()
}

/// `+` is a space and `%XX` a byte; invalid escapes stay as they are.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(high), Some(low)) => {
                    out.push(high << 4 | low);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            other => out.push(other),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(digit: u8) -> Option<u8> {
    char::from(digit)
        .to_digit(16)
        .and_then(|d| u8::try_from(d).ok())
}

/// A JSON body as `T` (an empty body as `{}`).
///
/// # Errors
/// [`ApiError::BadRequest`] naming what is wrong with it.
pub fn json_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let body = if body.iter().all(u8::is_ascii_whitespace) {
        b"{}".as_slice()
    } else {
        body
    };
    serde_json::from_slice(body)
        .map_err(|e| ApiError::BadRequest(format!("invalid JSON body: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_decode_plus_and_percent_escapes() {
        let fields = form(b"user=ann+b&password=p%26w%3D&x=%zz&y");
        assert_eq!(fields["user"], "ann b");
        assert_eq!(fields["password"], "p&w=");
        assert_eq!(fields["x"], "%zz");
        assert_eq!(fields["y"], "");
    }

    #[test]
    fn cookies_are_found_by_exact_name() {
        let header = "a=1; cinnabar_session=abc; cinnabar_session2=x";
        assert_eq!(cookie(header, SESSION_COOKIE), Some("abc"));
        assert_eq!(cookie(header, "b"), None);
        assert!(session_cookie("t").contains("HttpOnly; SameSite=Strict"));
    }
}
