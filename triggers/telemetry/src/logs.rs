//! Log lines: one JSON object per line (the default of `bv up`), or
//! tracing-subscriber's human-readable text.
//!
//! A JSON line holds `time` (RFC 3339, UTC), `level`, `target`, `message`,
//! the event's own fields, then `component` and `route` (from the event, or
//! else from the innermost enclosing span that has them: request and
//! delivery spans carry `bv.component` and `http.route`), and, when
//! tracing is on, the `trace_id` and `span_id` of the innermost span, so a
//! line can be found from its trace and the other way round.

use std::cell::RefCell;
use std::fmt::Write as _;
use std::io::Write as _;

use opentelemetry::trace::TraceContextExt as _;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

/// How log lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    /// One JSON object per line.
    Json,
    /// tracing-subscriber's human-readable lines.
    Text,
}

impl std::str::FromStr for LogFormat {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> anyhow::Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "json" => Ok(LogFormat::Json),
            "text" => Ok(LogFormat::Text),
            other => anyhow::bail!("log format `{other}` is not `json` or `text`"),
        }
    }
}

/// What a span contributes to the lines logged inside it.
#[derive(Default)]
struct SpanLogContext {
    component: Option<String>,
    route: Option<String>,
}

impl Visit for SpanLogContext {
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "component" | "bv.component" => self.component = Some(value.to_string()),
            "route" | "http.route" => self.route = Some(value.to_string()),
            _ => {}
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if matches!(
            field.name(),
            "component" | "bv.component" | "route" | "http.route"
        ) {
            self.record_str(field, &format!("{value:?}"));
        }
    }
}

/// Writes every event as one JSON line on stderr.
pub(crate) struct JsonLayer;

impl<S> Layer<S> for JsonLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut fields = SpanLogContext::default();
        attrs.record(&mut fields);
        if fields.component.is_some() || fields.route.is_some() {
            if let Some(span) = ctx.span(id) {
                span.extensions_mut().insert(fields);
            }
        }
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut update = SpanLogContext::default();
        values.record(&mut update);
        if update.component.is_none() && update.route.is_none() {
            return;
        }
        let mut extensions = span.extensions_mut();
        match extensions.get_mut::<SpanLogContext>() {
            Some(fields) => {
                if update.component.is_some() {
                    fields.component = update.component;
                }
                if update.route.is_some() {
                    fields.route = update.route;
                }
            }
            None => extensions.insert(update),
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let mut fields = EventFields::default();
        event.record(&mut fields);
        let innermost = ctx.event_span(event);
        if fields.component.is_none() || fields.route.is_none() {
            if let Some(scope) = ctx.event_scope(event) {
                for span in scope {
                    if let Some(found) = span.extensions().get::<SpanLogContext>() {
                        if fields.component.is_none() {
                            fields.component.clone_from(&found.component);
                        }
                        if fields.route.is_none() {
                            fields.route.clone_from(&found.route);
                        }
                    }
                    if fields.component.is_some() && fields.route.is_some() {
                        break;
                    }
                }
            }
        }
        let ids = match innermost {
            Some(span) if crate::tracing_enabled() => {
                // A left-out request's lines still name its trace, so logs
                // of one request correlate across services either way.
                let left_out = span
                    .extensions()
                    .get::<crate::LeftOut>()
                    .and_then(crate::LeftOut::ids);
                let id = span.id();
                drop(span);
                left_out.or_else(|| otel_ids(&id))
            }
            _ => None,
        };
        let meta = event.metadata();
        LINE.with(|line| {
            let mut line = line.borrow_mut();
            line.clear();
            line.push_str("{\"time\":\"");
            line.push_str(&chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true));
            line.push_str("\",\"level\":\"");
            line.push_str(meta.level().as_str());
            line.push_str("\",\"target\":");
            push_json_str(&mut line, meta.target());
            line.push_str(",\"message\":");
            push_json_str(&mut line, fields.message.as_deref().unwrap_or(""));
            line.push_str(&fields.rest);
            for (key, value) in [("component", &fields.component), ("route", &fields.route)] {
                if let Some(value) = value {
                    let _ = write!(line, ",\"{key}\":");
                    push_json_str(&mut line, value);
                }
            }
            if let Some((trace_id, span_id)) = ids {
                let _ = write!(
                    line,
                    ",\"trace_id\":\"{trace_id}\",\"span_id\":\"{span_id}\""
                );
            }
            line.push_str("}\n");
            // One write per line, so lines of concurrent events never mix.
            let _ = std::io::stderr().lock().write_all(line.as_bytes());
        });
    }
}

thread_local! {
    static LINE: RefCell<String> = RefCell::new(String::with_capacity(256));
}

/// Trace and span id of the span `id`, from the OpenTelemetry layer.
fn otel_ids(id: &Id) -> Option<(String, String)> {
    tracing::dispatcher::get_default(|dispatch| {
        let context = tracing_opentelemetry::get_otel_context(id, dispatch)?;
        let span = context.span();
        let sc = span.span_context();
        sc.is_valid().then(|| crate::hex_ids(sc))
    })
}

fn push_json_str(out: &mut String, s: &str) {
    // Serialising a &str cannot fail.
    out.push_str(&serde_json::to_string(s).unwrap_or_default());
}

/// An event's fields: the message, `component`/`route` (kept apart so a
/// span's cannot repeat them) and the rest, already as `,"key":value`.
#[derive(Default)]
struct EventFields {
    message: Option<String>,
    component: Option<String>,
    route: Option<String>,
    rest: String,
}

impl EventFields {
    fn push(&mut self, field: &Field, value: serde_json::Value) {
        let name = field.name();
        let name = match name {
            // Keep the fixed keys unambiguous.
            "time" | "level" | "target" | "trace_id" | "span_id" => {
                self.push_raw(&format!("field.{name}"), &value);
                return;
            }
            _ => name,
        };
        self.push_raw(name, &value);
    }

    fn push_raw(&mut self, name: &str, value: &serde_json::Value) {
        self.rest.push(',');
        push_json_str(&mut self.rest, name);
        self.rest.push(':');
        self.rest.push_str(&value.to_string());
    }
}

impl Visit for EventFields {
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "message" => self.message = Some(value.to_string()),
            "component" | "bv.component" => self.component = Some(value.to_string()),
            "route" | "http.route" => self.route = Some(value.to_string()),
            // The other members of a component's JSON log line, kept as
            // an object.
            "guest_fields" => match serde_json::from_str(value) {
                Ok(object @ serde_json::Value::Object(_)) => self.push(field, object),
                _ => self.push(field, value.into()),
            },
            _ => self.push(field, value.into()),
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.record_str(field, &format!("{value:?}"));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.push(field, value.into());
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.push(field, value.into());
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.push(field, value.into());
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.push(field, value.into());
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.record_str(field, &value.to_string());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::layer::SubscriberExt as _;

    #[test]
    fn formats_parse() {
        assert_eq!("JSON".parse::<LogFormat>().unwrap(), LogFormat::Json);
        assert_eq!("text".parse::<LogFormat>().unwrap(), LogFormat::Text);
        assert!("yaml".parse::<LogFormat>().is_err());
    }

    /// Captures what the layer's visitors produce for one event inside a
    /// span (the writing itself goes to stderr).
    #[test]
    fn span_fields_reach_events() {
        type Seen = Vec<(Option<String>, Option<String>)>;
        struct Capture(std::sync::Arc<std::sync::Mutex<Seen>>);
        impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Capture {
            fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
                let mut found = (None, None);
                for span in ctx.event_scope(event).into_iter().flatten() {
                    if let Some(f) = span.extensions().get::<SpanLogContext>() {
                        found.0 = found.0.or(f.component.clone());
                        found.1 = found.1.or(f.route.clone());
                    }
                }
                self.0.lock().unwrap().push(found);
            }
        }
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let subscriber = tracing_subscriber::registry()
            .with(JsonLayer)
            .with(Capture(seen.clone()));
        tracing::subscriber::with_default(subscriber, || {
            let outer = tracing::info_span!(
                "request",
                bv.component = "cart",
                http.route = tracing::field::Empty
            );
            outer.record("http.route", "/cart/...");
            let _outer = outer.enter();
            let _inner = tracing::info_span!("instantiate").entered();
            tracing::info!(answer = 42, "hello \"world\"");
        });
        assert_eq!(
            seen.lock().unwrap().as_slice(),
            [(Some("cart".to_string()), Some("/cart/...".to_string()))]
        );
    }

    #[test]
    fn event_fields_are_json() {
        let mut fields = EventFields {
            message: Some("m".into()),
            ..Default::default()
        };
        fields.push_raw("failures", &serde_json::json!(3));
        fields.push_raw("error", &serde_json::json!("a \"quoted\" thing"));
        let line = format!("{{\"message\":\"m\"{}}}", fields.rest);
        let parsed: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(parsed["failures"], 3);
        assert_eq!(parsed["error"], "a \"quoted\" thing");
    }
}
