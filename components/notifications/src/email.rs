//! Email, through `bv`'s `bitvelocity:smtp` interface (Spin has no SMTP;
//! docs/NOTIFICATIONS.md).

mod bindings {
    wit_bindgen::generate!({
        world: "bitvelocity:smtp/smtp-client@0.1.0",
        path: "../../wit/deps/bitvelocity-smtp@0.1.0",
    });
}

use bindings::bitvelocity::smtp::smtp::{self, Error, Message};

/// What one attempt came to.
pub enum Sent {
    /// The server accepted it.
    Accepted,
    /// Worth another attempt (the server was not reached).
    Transient(String),
    /// Never going to work as it is (refused, malformed, not allowed).
    Permanent(String),
}

/// Sends one plain-text email to `to` through the server at `server`.
pub async fn send(server: &str, from: &str, to: &str, subject: &str, body: &str) -> Sent {
    let message = Message {
        from: from.to_owned(),
        to: vec![to.to_owned()],
        subject: subject.to_owned(),
        body: body.to_owned(),
    };
    match smtp::send(server.to_owned(), message).await {
        Ok(()) => Sent::Accepted,
        Err(Error::ConnectionFailed(why)) => Sent::Transient(why),
        Err(Error::AddressNotAllowed(why)) => Sent::Permanent(format!("the mail server: {why}")),
        Err(Error::InvalidMessage(why)) | Err(Error::Rejected(why)) => Sent::Permanent(why),
    }
}
