//! `[application.trigger.postgres]` and `[[trigger.postgres]]`, parsed
//! strictly.

use std::collections::BTreeSet;

use bv_manifest::{App, Template};
use serde::Deserialize;

use crate::pattern;

/// The most events one subscription may have in flight: the batch read at
/// once.
pub const MAX_IN_FLIGHT: u32 = 128;

pub use bv_outbox::Start;

/// One `[[trigger.postgres]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    /// The component whose `handle-event` export receives the events.
    pub component: String,
    /// Event types to deliver; `*` matches any run of characters.
    pub events: Vec<String>,
    /// The subscription's name, the key of its position (default: the
    /// component id).
    #[serde(default)]
    pub subscription: Option<String>,
    /// The database, overriding the application's.
    #[serde(default)]
    pub address: Option<Template>,
    /// Deliveries of one event before it becomes a dead letter.
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// The first retry delay; each later one doubles, up to `retry_max_ms`.
    #[serde(default = "default_retry_initial_ms")]
    pub retry_initial_ms: u64,
    /// The longest retry delay.
    #[serde(default = "default_retry_max_ms")]
    pub retry_max_ms: u64,
    /// Where a new subscription starts.
    #[serde(default)]
    pub start: Start,
    /// Events handled at once: events of different subjects run side by
    /// side, each subject's in the order written; `1` delivers in outbox
    /// order.
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: u32,
    /// Optional trigger id (ignored, accepted as Spin does).
    #[serde(default)]
    pub id: Option<String>,
}

fn default_max_attempts() -> u32 {
    5
}
fn default_max_in_flight() -> u32 {
    4
}
fn default_retry_initial_ms() -> u64 {
    200
}
fn default_retry_max_ms() -> u64 {
    30_000
}
fn default_poll_interval_ms() -> u64 {
    1_000
}

/// A best-effort mirror of events to Redis or MQTT.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fanout {
    /// Names the mirror's subscription (`fanout:<name>`); default: its index.
    #[serde(default)]
    pub name: Option<String>,
    /// Event types to mirror; `*` matches any run of characters.
    pub events: Vec<String>,
    /// Publish to a Redis channel.
    #[serde(default)]
    pub redis: Option<RedisTarget>,
    /// Publish to an MQTT topic.
    #[serde(default)]
    pub mqtt: Option<MqttTarget>,
}

/// `redis = { address, channel }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisTarget {
    /// The server (`redis://…`, templates allowed).
    pub address: Template,
    /// The channel; `{type}`, `{subject}` and `{source}` are replaced.
    pub channel: String,
}

/// `mqtt = { address, topic, qos }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttTarget {
    /// The broker (`mqtt://host:port`, templates allowed).
    pub address: Template,
    /// The topic; `{type}`, `{subject}` and `{source}` are replaced.
    pub topic: String,
    /// 0, 1 (default) or 2.
    #[serde(default = "default_qos")]
    pub qos: u8,
}

fn default_qos() -> u8 {
    1
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct AppSettings {
    #[serde(default)]
    address: Option<Template>,
    #[serde(default)]
    poll_interval_ms: Option<u64>,
    #[serde(default)]
    fanout: Vec<Fanout>,
}

/// The Postgres trigger's part of the manifest.
#[derive(Debug, Clone)]
pub struct PostgresTriggerConfig {
    /// `[application.trigger.postgres] address`: the default database.
    pub address: Option<Template>,
    /// How often to look for events when no notification came.
    pub poll_interval_ms: u64,
    /// `[[application.trigger.postgres.fanout]]`.
    pub fanout: Vec<Fanout>,
    /// `[[trigger.postgres]]`, in manifest order.
    pub entries: Vec<Entry>,
}

impl PostgresTriggerConfig {
    /// Reads the trigger's tables from `app`; errors name the field.
    pub fn from_app(app: &App) -> anyhow::Result<Self> {
        let settings = app
            .trigger_settings::<AppSettings>("postgres")?
            .unwrap_or_default();
        let entries: Vec<Entry> = app.trigger_entries("postgres")?;
        let mut names = BTreeSet::new();
        for (i, entry) in entries.iter().enumerate() {
            let field = format!("trigger.postgres[{i}]");
            check_events(&entry.events, &format!("{field}.events"))?;
            let name = entry.subscription.as_deref().unwrap_or(&entry.component);
            check_name(name, &format!("{field}.subscription"))?;
            if !names.insert(name.to_string()) {
                anyhow::bail!(
                    "{field}.subscription: `{name}` is used by another entry; give each entry of the same component its own `subscription`"
                );
            }
            if entry.max_attempts == 0 {
                anyhow::bail!("{field}.max_attempts: must be at least 1");
            }
            if !(1..=MAX_IN_FLIGHT).contains(&entry.max_in_flight) {
                anyhow::bail!("{field}.max_in_flight: must be 1 to {MAX_IN_FLIGHT}");
            }
            if entry.retry_initial_ms == 0 || entry.retry_initial_ms > entry.retry_max_ms {
                anyhow::bail!(
                    "{field}.retry_initial_ms: must be at least 1 and at most retry_max_ms ({})",
                    entry.retry_max_ms
                );
            }
            if entry.address.is_none() && settings.address.is_none() {
                anyhow::bail!(
                    "{field}.address: no database: set it here or in [application.trigger.postgres] address"
                );
            }
        }
        for (i, fanout) in settings.fanout.iter().enumerate() {
            let field = format!("application.trigger.postgres.fanout[{i}]");
            check_events(&fanout.events, &format!("{field}.events"))?;
            let name = fanout_name(fanout, i);
            check_name(&name, &format!("{field}.name"))?;
            if !names.insert(name.clone()) {
                anyhow::bail!("{field}.name: `{name}` is used twice");
            }
            match (&fanout.redis, &fanout.mqtt) {
                (Some(_), None) | (None, Some(_)) => {}
                _ => anyhow::bail!("{field}: set exactly one of `redis` or `mqtt`"),
            }
            if let Some(mqtt) = &fanout.mqtt {
                if mqtt.qos > 2 {
                    anyhow::bail!("{field}.mqtt.qos: must be 0, 1 or 2");
                }
            }
            if settings.address.is_none() {
                anyhow::bail!(
                    "{field}: fan-out reads the outbox of [application.trigger.postgres] address, which is not set"
                );
            }
        }
        let poll_interval_ms = settings
            .poll_interval_ms
            .unwrap_or_else(default_poll_interval_ms);
        if poll_interval_ms == 0 {
            anyhow::bail!("application.trigger.postgres.poll_interval_ms: must be at least 1");
        }
        Ok(Self {
            address: settings.address,
            poll_interval_ms,
            fanout: settings.fanout,
            entries,
        })
    }
}

/// The subscription name of fan-out entry `index`.
pub fn fanout_name(fanout: &Fanout, index: usize) -> String {
    format!(
        "fanout:{}",
        fanout.name.clone().unwrap_or_else(|| index.to_string())
    )
}

fn check_events(events: &[String], field: &str) -> anyhow::Result<()> {
    if events.is_empty() {
        anyhow::bail!("{field}: list at least one event type (`*` matches any run of characters)");
    }
    for (j, p) in events.iter().enumerate() {
        pattern::check(p).map_err(|e| anyhow::anyhow!("{field}[{j}]: {e}"))?;
    }
    Ok(())
}

fn check_name(name: &str, field: &str) -> anyhow::Result<()> {
    if name.is_empty() || name.len() > 200 || name.chars().any(|c| c.is_control()) {
        anyhow::bail!(
            "{field}: `{name}` is not a usable subscription name (1-200 printable characters)"
        );
    }
    Ok(())
}

/// Replaces `{type}`, `{subject}` and `{source}` in a channel or topic.
pub fn render_destination(template: &str, ty: &str, subject: Option<&str>, source: &str) -> String {
    template
        .replace("{type}", ty)
        .replace("{subject}", subject.unwrap_or(""))
        .replace("{source}", source)
}
