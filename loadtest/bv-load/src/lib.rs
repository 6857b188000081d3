//! Load scenarios with an SLO gate, and game days.
//!
//! A scenario (`loadtest/scenarios/*.toml`, [`scenario::Scenario`]) names
//! user journeys ([`journey`]) and an arrival rate over time; a run seeds
//! data of its own ([`seed`]), starts journeys at the scenario's arrival
//! times whatever the answers take (an open model, [`driver`]), records
//! every request ([`record`]) and ends with a [`report::Report`]: per step
//! rate, p50/p95/p99 and errors by kind, and the verdict against the
//! objectives of `infra/observability/sli-targets.yaml` ([`slo`]), written
//! as text, JSON and PNG plots ([`plot`]).
//!
//! A game day ([`chaos`]) runs a scenario as its load, checks the
//! steady-state hypothesis, switches faults on through `bv`'s admin API (or
//! runs commands that kill and restart processes), holds, removes them,
//! checks recovery, and reconciles the books with the invariant checker
//! ([`invariants`]). [`proxy`] is a TCP fault proxy switched live from
//! standard input (latency, bandwidth, blackholes, resets, refusals).

pub mod chaos;
pub mod client;
pub mod driver;
pub mod invariants;
pub mod journey;
pub mod metrics;
pub mod plot;
pub mod proxy;
pub mod record;
pub mod report;
pub mod scenario;
pub mod seed;
pub mod slo;
pub mod token;
