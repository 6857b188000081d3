//! Which requests are traced, decided before any of their spans is made.
//!
//! The OpenTelemetry SDK decides whether a span is sampled when it builds
//! it, after `tracing-opentelemetry` has already done most of its per-span
//! work, and does that for every span of an unsampled trace too. An HTTP
//! request is the root of nearly all of bv's spans (its instantiation, its
//! statements and calls, the events it publishes), so bv decides there,
//! first, with the sampler the environment names (`OTEL_TRACES_SAMPLER`,
//! `OTEL_TRACES_SAMPLER_ARG`, as the SDK reads them). An unsampled request
//! gets the log-only span of tracing off (target [`UNSAMPLED_TARGET`],
//! which the OpenTelemetry layer never sees), and its guest a `traceparent`
//! whose sampled flag is off, so the requests it chains and the events it
//! publishes agree with the decision. The SDK's own sampler then takes
//! every server span as decided ([`EdgeDecided`]) and samples the other
//! roots (deliveries without a `traceparent`, cron ticks) as configured.

use opentelemetry::trace::{
    Link, SpanContext, SpanKind, TraceContextExt as _, TraceFlags, TraceId, TraceState,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::trace::{
    IdGenerator as _, RandomIdGenerator, Sampler, SamplingDecision, SamplingResult, ShouldSample,
};

/// The target of an unsampled request's span: filtered out of the
/// OpenTelemetry layer, kept by the log layer.
pub const UNSAMPLED_TARGET: &str = "bv::unsampled";

/// How a trace with no parent is sampled.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Root {
    On,
    Off,
    Ratio(f64),
}

/// The sampler the environment names, as bv applies it at the edge.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sampling {
    /// A caller's sampled flag decides (the `parentbased_*` samplers).
    parent_based: bool,
    root: Root,
}

impl Default for Sampling {
    /// `parentbased_always_on`, the OpenTelemetry (and Spin) default.
    fn default() -> Self {
        Self {
            parent_based: true,
            root: Root::On,
        }
    }
}

/// What the edge decided for one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Traced: make the request's spans.
    Record,
    /// Not traced: the log-only span, and this `traceparent` (sampled flag
    /// off) for the guest.
    Skip(String),
}

impl Sampling {
    /// The sampler `OTEL_TRACES_SAMPLER` and `OTEL_TRACES_SAMPLER_ARG` name;
    /// both were checked by [`crate::config::trace_config`]. As in the SDK,
    /// a ratio sampler without a valid argument samples everything.
    pub fn from_env(sampler: Option<&str>, arg: Option<&str>) -> Self {
        let ratio = || {
            Root::Ratio(
                arg.and_then(|a| a.trim().parse::<f64>().ok())
                    .filter(|r| (0.0..=1.0).contains(r))
                    .unwrap_or(1.0),
            )
        };
        let (parent_based, root) = match sampler.map(str::trim) {
            Some("always_on") => (false, Root::On),
            Some("always_off") => (false, Root::Off),
            Some("traceidratio") => (false, ratio()),
            Some("parentbased_always_off") => (true, Root::Off),
            Some("parentbased_traceidratio") => (true, ratio()),
            _ => (true, Root::On),
        };
        Self { parent_based, root }
    }

    /// Whether a caller's sampled flag decides.
    pub fn follows_callers(&self) -> bool {
        self.parent_based
    }

    /// Decides for a request that arrived with `traceparent` (the caller's,
    /// if any).
    pub fn decide(&self, traceparent: Option<&str>) -> Decision {
        let parent = traceparent.and_then(parse_traceparent);
        // The trace this request carries on: the caller's, or a new one
        // (made only when the decision or the guest's traceparent needs it).
        let mut trace_id = parent.map(|(id, _)| id);
        let mut trace =
            || *trace_id.get_or_insert_with(|| RandomIdGenerator::default().new_trace_id());
        let sampled = match (self.parent_based, parent) {
            (true, Some((_, sampled))) => sampled,
            _ => match self.root {
                Root::On => true,
                Root::Off => false,
                // The SDK's rule, on the trace id this request carries on.
                Root::Ratio(ratio) => by_ratio(ratio, trace()),
            },
        };
        if sampled {
            return Decision::Record;
        }
        let left_out = SpanContext::new(
            trace(),
            RandomIdGenerator::default().new_span_id(),
            TraceFlags::default(),
            false,
            TraceState::default(),
        );
        Decision::Skip(crate::format_traceparent(&left_out))
    }

    /// The SDK's sampler for what the edge does not decide.
    pub(crate) fn sdk_sampler(&self) -> EdgeDecided {
        let root = match self.root {
            Root::On => Sampler::AlwaysOn,
            Root::Off => Sampler::AlwaysOff,
            Root::Ratio(ratio) => Sampler::TraceIdRatioBased(ratio),
        };
        EdgeDecided(if self.parent_based {
            Sampler::ParentBased(Box::new(root))
        } else {
            root
        })
    }
}

/// The OpenTelemetry rule of `traceidratio`: the trace id's low 63 bits
/// below `ratio` of their range.
fn by_ratio(ratio: f64, trace_id: TraceId) -> bool {
    if ratio >= 1.0 {
        return true;
    }
    let bound = (ratio.max(0.0) * (1u64 << 63) as f64) as u64;
    let low = u64::from_be_bytes(trace_id.to_bytes()[8..].try_into().expect("8 bytes"));
    (low >> 1) < bound
}

/// Whether `traceparent` is a valid one whose sampled flag is off: a
/// trace someone chose to leave out.
pub fn is_unsampled(traceparent: &str) -> bool {
    parse_traceparent(traceparent).is_some_and(|(_, sampled)| !sampled)
}

/// `(trace id, sampled)` of a version-00 W3C `traceparent`; `None` when it
/// is not one (then the request is a root).
fn parse_traceparent(value: &str) -> Option<(TraceId, bool)> {
    let mut parts = value.trim().split('-');
    let (version, trace, span, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let hex = |s: &str, len: usize| s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit());
    if version != "00"
        || parts.next().is_some()
        || !hex(trace, 32)
        || !hex(span, 16)
        || !hex(flags, 2)
    {
        return None;
    }
    let trace_id = TraceId::from_hex(trace)
        .ok()
        .filter(|id| *id != TraceId::INVALID)?;
    if span.bytes().all(|b| b == b'0') {
        return None;
    }
    let flags = u8::from_str_radix(flags, 16).ok()?;
    Some((trace_id, flags & 1 == 1))
}

/// The SDK's sampler under an edge that decides server spans itself: a
/// server span exists only for a request the edge chose to trace, so it is
/// sampled; every other span goes to the configured sampler.
#[derive(Clone, Debug)]
pub(crate) struct EdgeDecided(Sampler);

impl ShouldSample for EdgeDecided {
    fn should_sample(
        &self,
        parent_context: Option<&Context>,
        trace_id: TraceId,
        name: &str,
        span_kind: &SpanKind,
        attributes: &[KeyValue],
        links: &[Link],
    ) -> SamplingResult {
        if *span_kind == SpanKind::Server {
            let trace_state = parent_context
                .filter(|cx| cx.has_active_span())
                .map(|cx| cx.span().span_context().trace_state().clone())
                .unwrap_or_default();
            return SamplingResult {
                decision: SamplingDecision::RecordAndSample,
                attributes: Vec::new(),
                trace_state,
            };
        }
        self.0
            .should_sample(parent_context, trace_id, name, span_kind, attributes, links)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

    fn parent(sampled: bool) -> String {
        format!("00-{TRACE}-00f067aa0ba902b7-0{}", u8::from(sampled))
    }

    #[test]
    fn the_default_follows_the_caller_and_traces_roots() {
        let s = Sampling::from_env(None, None);
        assert_eq!(s, Sampling::default());
        assert_eq!(s.decide(Some(&parent(true))), Decision::Record);
        assert_eq!(s.decide(None), Decision::Record);
        let Decision::Skip(tp) = s.decide(Some(&parent(false))) else {
            panic!("an unsampled caller is followed");
        };
        // The caller's trace goes on, under a span id of its own, unsampled.
        assert!(tp.starts_with(&format!("00-{TRACE}-")), "{tp}");
        assert!(tp.ends_with("-00"), "{tp}");
        assert_eq!(tp.len(), 55);
        assert!(!tp.contains("00f067aa0ba902b7"));
    }

    #[test]
    fn a_ratio_samples_about_its_share_of_roots_and_follows_callers() {
        let s = Sampling::from_env(Some("parentbased_traceidratio"), Some("0.25"));
        let traced = (0..4000)
            .filter(|_| s.decide(None) == Decision::Record)
            .count();
        assert!((800..1200).contains(&traced), "{traced} of 4000");
        assert_eq!(s.decide(Some(&parent(true))), Decision::Record);
        assert!(matches!(s.decide(Some(&parent(false))), Decision::Skip(_)));
        // Every unsampled root still hands on a valid trace of its own.
        for _ in 0..50 {
            if let Decision::Skip(tp) = s.decide(None) {
                assert_eq!(parse_traceparent(&tp).map(|p| p.1), Some(false), "{tp}");
            }
        }
    }

    #[test]
    fn samplers_that_ignore_the_caller_decide_alone() {
        let on = Sampling::from_env(Some("always_on"), None);
        assert_eq!(on.decide(Some(&parent(false))), Decision::Record);
        let off = Sampling::from_env(Some("always_off"), None);
        assert!(matches!(off.decide(Some(&parent(true))), Decision::Skip(_)));
        let never = Sampling::from_env(Some("parentbased_always_off"), None);
        assert!(matches!(never.decide(None), Decision::Skip(_)));
        assert_eq!(never.decide(Some(&parent(true))), Decision::Record);
    }

    #[test]
    fn malformed_traceparents_are_roots() {
        let s = Sampling::from_env(Some("parentbased_always_off"), None);
        for bad in [
            "",
            "garbage",
            &format!("01-{TRACE}-00f067aa0ba902b7-01"),
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            &format!("00-{TRACE}-0000000000000000-01"),
            &format!("00-{TRACE}-00f067aa0ba902b7-01-extra"),
            &format!("00-{TRACE}-00f067aa0ba902bz-01"),
        ] {
            assert!(matches!(s.decide(Some(bad)), Decision::Skip(_)), "{bad}");
        }
    }

    #[test]
    fn the_ratio_rule_is_the_sdks() {
        let low = |n: u64| {
            let mut bytes = [0u8; 16];
            bytes[0] = 1;
            bytes[8..].copy_from_slice(&n.to_be_bytes());
            TraceId::from_bytes(bytes)
        };
        for (ratio, n) in [
            (0.5, 0),
            (0.5, u64::MAX),
            (0.0, 0),
            (1.0, u64::MAX),
            (0.1, 1 << 59),
        ] {
            let sdk = Sampler::TraceIdRatioBased(ratio).should_sample(
                None,
                low(n),
                "x",
                &SpanKind::Internal,
                &[],
                &[],
            );
            assert_eq!(
                by_ratio(ratio, low(n)),
                sdk.decision == SamplingDecision::RecordAndSample,
                "ratio {ratio}, low bits {n:#x}"
            );
        }
    }

    #[test]
    fn server_spans_are_taken_as_decided_and_others_are_sampled_as_configured() {
        let off = Sampling::from_env(Some("always_off"), None).sdk_sampler();
        let decide = |kind: SpanKind| {
            off.should_sample(
                None,
                TraceId::from_hex(TRACE).unwrap(),
                "x",
                &kind,
                &[],
                &[],
            )
            .decision
        };
        assert_eq!(decide(SpanKind::Server), SamplingDecision::RecordAndSample);
        assert_eq!(decide(SpanKind::Consumer), SamplingDecision::Drop);
    }
}
