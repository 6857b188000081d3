//! CORS from `[application.tool.bv.cors]`.
//!
//! The host, not each component, owns the policy: it answers preflights
//! itself (components never see them) and sets the CORS headers of every
//! response, removing any a component set. An origin that is not allowed gets
//! no CORS headers at all, so the browser keeps the response from the page;
//! its preflight is answered 403.

use std::collections::HashSet;

use http::header::{
    ACCESS_CONTROL_ALLOW_CREDENTIALS, ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS,
    ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_EXPOSE_HEADERS, ACCESS_CONTROL_MAX_AGE,
    ACCESS_CONTROL_REQUEST_HEADERS, ACCESS_CONTROL_REQUEST_METHOD, ORIGIN, VARY,
};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use wasmtime_wasi_http::WasiBody;

use bv_manifest::CorsSettings;

use crate::problem;

/// The compiled policy.
pub(crate) struct Cors {
    any_origin: bool,
    origins: HashSet<String>,
    methods: HeaderValue,
    /// `None`: `"*"`, allow what the preflight asks for.
    headers: Option<HeaderValue>,
    expose: Option<HeaderValue>,
    max_age: Option<HeaderValue>,
    credentials: bool,
}

fn no_content() -> Response<WasiBody> {
    let mut response = Response::new(
        http_body_util::Empty::new()
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
    *response.status_mut() = StatusCode::NO_CONTENT;
    response
}

fn joined(items: &[String]) -> anyhow::Result<HeaderValue> {
    Ok(HeaderValue::from_str(&items.join(", "))?)
}

impl Cors {
    /// Compiles validated settings.
    pub(crate) fn new(settings: &CorsSettings) -> anyhow::Result<Self> {
        Ok(Self {
            any_origin: settings.allowed_origins.iter().any(|o| o == "*"),
            origins: settings.allowed_origins.iter().cloned().collect(),
            methods: joined(&settings.allowed_methods)?,
            headers: if settings.allowed_headers.iter().any(|h| h == "*") {
                None
            } else {
                Some(joined(&settings.allowed_headers)?)
            },
            expose: (!settings.expose_headers.is_empty())
                .then(|| joined(&settings.expose_headers))
                .transpose()?,
            max_age: settings.max_age.map(HeaderValue::from),
            credentials: settings.allow_credentials,
        })
    }

    fn allows(&self, origin: &HeaderValue) -> bool {
        self.any_origin || origin.to_str().is_ok_and(|o| self.origins.contains(o))
    }

    /// Whether every origin gets the same answer (`*`): any origin is
    /// allowed and no credentials are.
    fn star(&self) -> bool {
        self.any_origin && !self.credentials
    }

    /// The `Access-Control-Allow-Origin` value for an allowed `origin`: the
    /// origin itself, or `*` when any origin is allowed without credentials.
    fn allow_origin(&self, origin: &HeaderValue) -> HeaderValue {
        if self.star() {
            HeaderValue::from_static("*")
        } else {
            origin.clone()
        }
    }

    /// The answer to `req` if it is a CORS preflight: 204 with the policy for
    /// an allowed origin, 403 without CORS headers for another.
    pub(crate) fn preflight<B>(&self, req: &Request<B>) -> Option<Response<WasiBody>> {
        if req.method() != Method::OPTIONS
            || !req.headers().contains_key(ACCESS_CONTROL_REQUEST_METHOD)
        {
            return None;
        }
        let origin = req.headers().get(ORIGIN)?;
        if !self.allows(origin) {
            let mut response = problem::response(
                StatusCode::FORBIDDEN,
                "cors-origin-not-allowed",
                "Forbidden",
                "this origin may not make cross-origin requests to the application",
            );
            response
                .headers_mut()
                .insert(VARY, HeaderValue::from_static("origin"));
            return Some(response);
        }
        let mut response = no_content();
        let headers = response.headers_mut();
        headers.insert(ACCESS_CONTROL_ALLOW_ORIGIN, self.allow_origin(origin));
        headers.insert(ACCESS_CONTROL_ALLOW_METHODS, self.methods.clone());
        let allow_headers = match &self.headers {
            Some(list) => Some(list.clone()),
            None => req.headers().get(ACCESS_CONTROL_REQUEST_HEADERS).cloned(),
        };
        if let Some(list) = allow_headers {
            headers.insert(ACCESS_CONTROL_ALLOW_HEADERS, list);
        }
        if let Some(max_age) = &self.max_age {
            headers.insert(ACCESS_CONTROL_MAX_AGE, max_age.clone());
        }
        if self.credentials {
            headers.insert(
                ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
        headers.insert(
            VARY,
            HeaderValue::from_static(
                "origin, access-control-request-method, access-control-request-headers",
            ),
        );
        Some(response)
    }

    /// Sets the CORS headers of a response to a request from `origin`.
    pub(crate) fn apply(&self, origin: Option<&HeaderValue>, headers: &mut HeaderMap) {
        for name in [
            ACCESS_CONTROL_ALLOW_ORIGIN,
            ACCESS_CONTROL_ALLOW_CREDENTIALS,
            ACCESS_CONTROL_EXPOSE_HEADERS,
            ACCESS_CONTROL_ALLOW_METHODS,
            ACCESS_CONTROL_ALLOW_HEADERS,
            ACCESS_CONTROL_MAX_AGE,
        ] {
            headers.remove(name);
        }
        if !self.star() {
            // The answer depends on the origin: caches must keep them apart.
            headers.append(VARY, HeaderValue::from_static("origin"));
        }
        let Some(origin) = origin.filter(|o| self.allows(o)) else {
            return;
        };
        headers.insert(ACCESS_CONTROL_ALLOW_ORIGIN, self.allow_origin(origin));
        if self.credentials {
            headers.insert(
                ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
        if let Some(expose) = &self.expose {
            headers.insert(ACCESS_CONTROL_EXPOSE_HEADERS, expose.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cors(origins: &[&str], credentials: bool) -> Cors {
        Cors::new(&CorsSettings {
            allowed_origins: origins.iter().map(|s| s.to_string()).collect(),
            allowed_methods: vec!["GET".into(), "POST".into()],
            allowed_headers: vec!["content-type".into()],
            expose_headers: vec!["etag".into()],
            max_age: Some(600),
            allow_credentials: credentials,
        })
        .unwrap()
    }

    fn preflight(origin: &str) -> Request<()> {
        Request::builder()
            .method("OPTIONS")
            .header(ORIGIN, origin)
            .header(ACCESS_CONTROL_REQUEST_METHOD, "POST")
            .body(())
            .unwrap()
    }

    #[test]
    fn preflight_from_an_allowed_origin_gets_the_policy() {
        let cors = cors(&["https://a.example"], true);
        let response = cors.preflight(&preflight("https://a.example")).unwrap();
        assert_eq!(response.status(), StatusCode::NO_CONTENT);
        let h = response.headers();
        assert_eq!(h[ACCESS_CONTROL_ALLOW_ORIGIN], "https://a.example");
        assert_eq!(h[ACCESS_CONTROL_ALLOW_METHODS], "GET, POST");
        assert_eq!(h[ACCESS_CONTROL_ALLOW_HEADERS], "content-type");
        assert_eq!(h[ACCESS_CONTROL_MAX_AGE], "600");
        assert_eq!(h[ACCESS_CONTROL_ALLOW_CREDENTIALS], "true");
    }

    #[test]
    fn preflight_from_another_origin_gets_no_cors_headers() {
        let cors = cors(&["https://a.example"], false);
        let response = cors.preflight(&preflight("https://evil.example")).unwrap();
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
        assert!(!response
            .headers()
            .keys()
            .any(|k| k.as_str().starts_with("access-control-")));
    }

    #[test]
    fn plain_options_is_not_a_preflight() {
        let cors = cors(&["*"], false);
        let req = Request::builder()
            .method("OPTIONS")
            .header(ORIGIN, "https://a.example")
            .body(())
            .unwrap();
        assert!(cors.preflight(&req).is_none());
    }

    #[test]
    fn responses_get_headers_only_for_allowed_origins() {
        let cors = cors(&["https://a.example"], false);
        let mut headers = HeaderMap::new();
        headers.insert(ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
        cors.apply(
            Some(&HeaderValue::from_static("https://b.example")),
            &mut headers,
        );
        assert!(
            !headers.contains_key(ACCESS_CONTROL_ALLOW_ORIGIN),
            "the component's is removed"
        );
        assert_eq!(headers[VARY], "origin");

        let mut headers = HeaderMap::new();
        cors.apply(
            Some(&HeaderValue::from_static("https://a.example")),
            &mut headers,
        );
        assert_eq!(headers[ACCESS_CONTROL_ALLOW_ORIGIN], "https://a.example");
        assert_eq!(headers[ACCESS_CONTROL_EXPOSE_HEADERS], "etag");
        assert!(!headers.contains_key(ACCESS_CONTROL_ALLOW_CREDENTIALS));
    }

    #[test]
    fn any_origin_without_credentials_is_a_star() {
        let cors = cors(&["*"], false);
        let mut headers = HeaderMap::new();
        cors.apply(
            Some(&HeaderValue::from_static("https://z.example")),
            &mut headers,
        );
        assert_eq!(headers[ACCESS_CONTROL_ALLOW_ORIGIN], "*");
        assert!(!headers.contains_key(VARY));
    }
}
