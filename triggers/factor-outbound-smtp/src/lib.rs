//! `bitvelocity:smtp@0.1.0` for `bv`: components send email through an SMTP
//! server. Spin has no such interface; this one is `bv`'s own (documented
//! in docs/SPIN.md).
//!
//! Shape: [`SmtpApp`] (per application) holds the [`Mailer`] that does the
//! I/O ([`LettreMailer`], plain SMTP on lettre, is the real one);
//! [`SmtpInstance`] (per instance) checks `allowed_outbound_hosts`
//! (`smtp://host[:port]`) and makes the client span.

#![deny(missing_docs)]

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bv_outbound_networking::{AllowedHosts, OutboundUrl};
use bv_telemetry::CurrentSpan;
use tracing::Instrument as _;
use wasmtime::component::{Accessor, HasData, Linker};

mod bindings {
    wasmtime::component::bindgen!({
        path: "../../wit",
        world: "bitvelocity:host/smtp-host",
        imports: { default: store | trappable },
    });
}

use bindings::bitvelocity::smtp::smtp::{self, Error as WitError, Message as WitMessage};

/// An email to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mail {
    /// The sender.
    pub from: String,
    /// The recipients.
    pub to: Vec<String>,
    /// The subject line.
    pub subject: String,
    /// The text body.
    pub body: String,
}

/// Why a mail was not sent.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SmtpError {
    /// The mail cannot be sent as it is.
    #[error("{0}")]
    Invalid(String),
    /// The server was not reached or failed mid-way (transient).
    #[error("{0}")]
    Connection(String),
    /// The server refused it for good.
    #[error("{0}")]
    Rejected(String),
}

/// Sends mail to a server: the capability's I/O, swapped in tests.
#[async_trait]
pub trait Mailer: Send + Sync {
    /// Sends `mail` through the server at `host:port`.
    async fn send(&self, host: &str, port: u16, mail: &Mail) -> Result<(), SmtpError>;
}

/// How long a server has for the whole exchange of one mail.
const TIMEOUT: Duration = Duration::from_secs(10);

/// Plain SMTP on lettre, one connection per mail.
#[derive(Debug, Default)]
pub struct LettreMailer;

#[async_trait]
impl Mailer for LettreMailer {
    async fn send(&self, host: &str, port: u16, mail: &Mail) -> Result<(), SmtpError> {
        use lettre::message::{header::ContentType, Mailbox};
        use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
        let mailbox = |field: &str, raw: &str| {
            raw.parse::<Mailbox>()
                .map_err(|e| SmtpError::Invalid(format!("{field} `{raw}`: {e}")))
        };
        if mail.to.is_empty() {
            return Err(SmtpError::Invalid("no recipient".into()));
        }
        let mut builder = lettre::Message::builder()
            .from(mailbox("from", &mail.from)?)
            .subject(&mail.subject)
            .header(ContentType::TEXT_PLAIN);
        for to in &mail.to {
            builder = builder.to(mailbox("to", to)?);
        }
        let message = builder
            .body(mail.body.clone())
            .map_err(|e| SmtpError::Invalid(e.to_string()))?;
        let transport = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host)
            .port(port)
            .timeout(Some(TIMEOUT))
            .build();
        match transport.send(message).await {
            Ok(_) => Ok(()),
            Err(e) if e.is_permanent() => Err(SmtpError::Rejected(e.to_string())),
            Err(e) => Err(SmtpError::Connection(e.to_string())),
        }
    }
}

/// Per-application state: the mailer.
pub struct SmtpApp {
    mailer: Arc<dyn Mailer>,
}

/// Per-instance state.
pub struct SmtpInstance {
    app: Arc<SmtpApp>,
    component: Arc<str>,
    allowed: Arc<AllowedHosts>,
    span: CurrentSpan,
}

impl SmtpInstance {
    /// `address` as host and port, if it is an SMTP address the component
    /// may reach.
    fn admit(&self, address: &str) -> Result<OutboundUrl, WitError> {
        let url = OutboundUrl::parse(address)
            .ok()
            .filter(|u| u.scheme == "smtp")
            .ok_or_else(|| {
                WitError::AddressNotAllowed(format!("`{address}` is not smtp://host[:port]"))
            })?;
        if !self.allowed.allows(&url) {
            tracing::warn!(
                component = %self.component,
                address = %url,
                "outbound SMTP denied: {url} is not in allowed_outbound_hosts"
            );
            return Err(WitError::AddressNotAllowed(format!(
                "{url} is not permitted by allowed_outbound_hosts"
            )));
        }
        Ok(url)
    }

    /// A client span for one mail; `None` when tracing is off or the
    /// request is not traced.
    fn span(&self, url: &OutboundUrl) -> Option<tracing::Span> {
        let parent = self.span.get();
        if !bv_telemetry::records(&parent) {
            return None;
        }
        Some(tracing::info_span!(
            parent: &parent,
            "smtp.send",
            otel.name = "smtp send",
            otel.kind = "client",
            otel.status_code = tracing::field::Empty,
            server.address = %url.host,
            server.port = i64::from(url.port),
            bv.component = &*self.component,
        ))
    }
}

/// The capability; `mailer` does the I/O.
pub struct OutboundSmtpCapability {
    /// Sends the mail.
    pub mailer: Arc<dyn Mailer>,
}

impl Default for OutboundSmtpCapability {
    fn default() -> Self {
        Self {
            mailer: Arc::new(LettreMailer),
        }
    }
}

impl bv_capability::Capability for OutboundSmtpCapability {
    type AppState = Arc<SmtpApp>;
    type ComponentState = ();
    type InstanceState = SmtpInstance;

    fn init(&self, _: &bv_capability::AppContext<'_>) -> anyhow::Result<Self::AppState> {
        Ok(Arc::new(SmtpApp {
            mailer: self.mailer.clone(),
        }))
    }

    fn instance(
        &self,
        app: &Self::AppState,
        _: &(),
        ctx: &bv_capability::InstanceContext<'_>,
    ) -> SmtpInstance {
        SmtpInstance {
            app: app.clone(),
            component: ctx.id.clone(),
            allowed: ctx.allowed_hosts.clone(),
            span: ctx.span.clone(),
        }
    }

    fn add_to_linker<T: Send + 'static>(
        linker: &mut Linker<T>,
        get: fn(&mut T) -> &mut SmtpInstance,
    ) -> anyhow::Result<()> {
        smtp::add_to_linker::<T, HasSmtp>(linker, get)?;
        Ok(())
    }
}

struct HasSmtp;

impl HasData for HasSmtp {
    type Data<'a> = &'a mut SmtpInstance;
}

impl<T: Send> smtp::HostWithStore<T> for HasSmtp {
    async fn send(
        accessor: &Accessor<T, Self>,
        address: String,
        message: WitMessage,
    ) -> wasmtime::Result<Result<(), WitError>> {
        let (app, component, admitted, span) = accessor.with(|mut access| {
            let s = access.get();
            let admitted = s.admit(&address);
            let span = admitted.as_ref().ok().and_then(|url| s.span(url));
            (s.app.clone(), s.component.clone(), admitted, span)
        });
        let url = match admitted {
            Ok(url) => url,
            Err(e) => return Ok(Err(e)),
        };
        let mail = Mail {
            from: message.from,
            to: message.to,
            subject: message.subject,
            body: message.body,
        };
        let send = app.mailer.send(&url.host, url.port, &mail);
        let result = match &span {
            Some(span) => send.instrument(span.clone()).await,
            None => send.await,
        };
        if let Err(e) = &result {
            if let Some(span) = &span {
                span.record("otel.status_code", "error");
            }
            tracing::debug!(component = %component, address = %url, error = %e, "outbound SMTP failed");
        }
        Ok(result.map_err(|e| match e {
            SmtpError::Invalid(why) => WitError::InvalidMessage(why),
            SmtpError::Connection(why) => WitError::ConnectionFailed(why),
            SmtpError::Rejected(why) => WitError::Rejected(why),
        }))
    }
}

impl smtp::Host for SmtpInstance {}

#[cfg(test)]
mod tests {
    use super::*;
    use bv_capability::testing::TestApp;

    #[test]
    fn a_component_reaches_only_the_smtp_servers_it_lists() {
        let app = TestApp::with_tables(
            r#"
            [component.notifier]
            source = "notifier.wasm"
            allowed_outbound_hosts = ["smtp://127.0.0.1:2525", "smtp://relay.example"]
            "#,
        )
        .unwrap();
        let notifier = app
            .prepare(OutboundSmtpCapability::default(), "notifier")
            .unwrap()
            .instance();
        assert_eq!(
            notifier.admit("smtp://127.0.0.1:2525").ok().map(|u| u.port),
            Some(2525)
        );
        // Port 25 when none is given, on both sides.
        assert_eq!(
            notifier.admit("smtp://relay.example").ok().map(|u| u.port),
            Some(25)
        );
        for refused in [
            "smtp://127.0.0.1:25",
            "smtp://10.0.0.1:2525",
            "http://127.0.0.1:2525",
            "nonsense",
        ] {
            assert!(
                matches!(notifier.admit(refused), Err(WitError::AddressNotAllowed(_))),
                "{refused}"
            );
        }
    }
}
