//! Reading requests, writing JSON answers.

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::Serialize;
use spin_sdk::http::body::IncomingBodyExt;
use spin_sdk::http::{FullBody, Request, Response};

use crate::Problem;

/// The response type of every component.
pub type Reply = Response<FullBody<Bytes>>;

/// A JSON answer.
pub fn json(status: u16, body: &impl Serialize) -> Reply {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(FullBody::new(Bytes::from(
            serde_json::to_vec(body).expect("serializable"),
        )))
        .expect("a valid status")
}

/// The part of the path after the component's route (`spin-path-info`),
/// without a trailing `/`.
pub fn path_info(req: &Request) -> String {
    req.headers()
        .get("spin-path-info")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .trim_end_matches('/')
        .to_string()
}

/// Reads the body as JSON into `T`: 415 without a JSON content type, 413
/// past `max_bytes`, 400 when it is not JSON, 422 naming the field when it
/// does not fit `T` (wrong type, missing field, unknown field where `T`
/// denies them, or a value `T`'s parsing refuses).
pub async fn read_json<T: DeserializeOwned>(req: Request, max_bytes: usize) -> Result<T, Problem> {
    let content_type = req
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    let media = content_type.split(';').next().unwrap_or("").trim();
    if media != "application/json" && !media.ends_with("+json") {
        return Err(Problem::new(
            415,
            "unsupported-media-type",
            "The body must be JSON",
            format!("content-type `{content_type}`: send application/json"),
        ));
    }
    if let Some(length) = req
        .headers()
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
    {
        if length > max_bytes {
            return Err(too_large(max_bytes));
        }
    }
    let bytes = req.into_body().bytes().await.map_err(|e| {
        Problem::new(
            400,
            "unreadable-body",
            "The body could not be read",
            format!("{e:?}"),
        )
    })?;
    if bytes.len() > max_bytes {
        return Err(too_large(max_bytes));
    }
    parse_json(&bytes)
}

/// Parses JSON bytes into `T` with [`read_json`]'s problems.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Problem> {
    // Syntax first, so that a broken document is 400, not 422.
    let value: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| Problem::malformed(e.to_string()))?;
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let message = e.into_inner().to_string();
        // A missing field is reported at its parent object: name the
        // field itself.
        let missing = message
            .strip_prefix("missing field `")
            .and_then(|rest| rest.split('`').next());
        let field = match (missing, path.as_str()) {
            (Some(name), ".") => name.to_string(),
            (Some(name), parent) => format!("{parent}.{name}"),
            (None, ".") => "$".to_string(),
            (None, _) => path,
        };
        Problem::invalid_field(&field, message)
    })
}

fn too_large(max: usize) -> Problem {
    Problem::new(
        413,
        "body-too-large",
        "The body is too large",
        format!("at most {max} bytes"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Money;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Item {
        sku: String,
        price: Money,
    }

    fn field(json: &str) -> (u16, String) {
        let p = parse_json::<Item>(json.as_bytes()).unwrap_err();
        (
            p.status,
            p.extensions
                .get("field")
                .map_or(String::new(), |f| f.as_str().unwrap().to_string()),
        )
    }

    #[test]
    fn problems_name_the_field() {
        assert_eq!(field("{"), (400, String::new()));
        assert_eq!(
            field(r#"{"price":{"amount":1,"currency":"EUR"}}"#),
            (422, "sku".into())
        );
        assert_eq!(
            field(r#"{"sku":"A","price":{"currency":"EUR"}}"#),
            (422, "price.amount".into())
        );
        assert_eq!(
            field(r#"{"sku":"A","price":{"amount":-1,"currency":"EUR"}}"#),
            (422, "price.amount".into())
        );
        assert_eq!(
            field(r#"{"sku":1,"price":{"amount":1,"currency":"EUR"}}"#),
            (422, "sku".into())
        );
        assert_eq!(
            field(r#"{"sku":"A","colour":"red","price":{"amount":1,"currency":"EUR"}}"#),
            (422, "colour".into())
        );
        assert_eq!(field("[]"), (422, "$".into()));
    }
}
