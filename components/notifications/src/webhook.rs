//! Webhook calls: a JSON `POST` signed with the customer's secret.
//!
//! Headers: `bv-delivery-id` (the same on every attempt: receivers dedupe
//! on it), `bv-event-type`, and `bv-signature: t=<unix seconds>,v1=<hex
//! HMAC-SHA256 of "<t>.<body>" keyed with the secret>`; a receiver checks
//! the MAC and refuses old `t` (replays).

use std::time::Duration;

use bytes::Bytes;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use spin_sdk::http::{FullBody, Request};

/// How long one attempt waits for the receiver's answer.
pub const TIMEOUT: Duration = Duration::from_secs(5);

/// `t=<t>,v1=<hex>` for `body` sent at `t`.
pub fn signature(secret: &str, t: u64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(format!("{t}.").as_bytes());
    mac.update(body);
    let hex: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("t={t},v1={hex}")
}

/// What one attempt came to.
pub enum Attempt {
    /// A 2xx.
    Delivered(u16),
    /// Another status, or no answer: why (worth another attempt).
    Failed(Option<u16>, String),
    /// Never going to work as it is: why (no more attempts).
    Refused(String),
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Sends `body` to `url` once.
pub async fn send(url: &str, secret: &str, delivery: &str, kind: &str, body: &[u8]) -> Attempt {
    let request = Request::builder()
        .method("POST")
        .uri(url)
        .header("content-type", "application/json")
        .header("bv-delivery-id", delivery)
        .header("bv-event-type", kind)
        .header("bv-signature", signature(secret, now(), body))
        .body(FullBody::new(Bytes::copy_from_slice(body)));
    let request = match request {
        Ok(request) => request,
        Err(e) => return Attempt::Failed(None, format!("bad request: {e}")),
    };
    let sent = bv_resilience::within(
        spin_sdk::http::send(request),
        spin_sdk::time::sleep(TIMEOUT),
    )
    .await;
    match sent {
        Ok(Ok(response)) if response.status().is_success() => {
            Attempt::Delivered(response.status().as_u16())
        }
        Ok(Ok(response)) => {
            let status = response.status().as_u16();
            Attempt::Failed(Some(status), format!("the receiver answered {status}"))
        }
        Ok(Err(e)) => Attempt::Failed(None, format!("{e:?}")),
        Err(_) => Attempt::Failed(None, format!("no answer within {} s", TIMEOUT.as_secs())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_hmac_sha256_of_time_dot_body() {
        // The value computed independently
        // (python3 -c 'import hmac,hashlib; print(hmac.new(b"key", b"1.{}", hashlib.sha256).hexdigest())').
        assert_eq!(
            signature("key", 1, b"{}"),
            "t=1,v1=1ba6b8171186efc613e8bcc0cbdab2748f24984d7c5a84faa2637afa0e40d224"
        );
    }
}
