//! The IoT telemetry domain, free of any host, shared by the `iot` and
//! `iot-ingest` components, the device simulator and the benchmark:
//!
//! - [`device`]: device ids (also MQTT user names) and topics, device
//!   types and their metrics;
//! - [`message`]: the JSON and compact binary telemetry forms, parsed into
//!   [`message::Telemetry`] (parse, don't validate: a message that parses
//!   is within its type's ranges);
//! - [`detect`]: the streaming anomaly detector (EWMA baseline, spike,
//!   level, rate and flatline detectors, hysteresis);
//! - [`batch`]: the I/O-free parts of ingesting many messages together;
//! - [`sim`]: a signal generator with labelled anomalies, and the
//!   detector's precision and recall against the labels.
#![deny(missing_docs)]

pub mod batch;
pub mod credentials;
pub mod detect;
pub mod device;
pub mod message;
pub mod schema;
pub mod sim;
