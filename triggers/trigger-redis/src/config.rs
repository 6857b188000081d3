//! `[application.trigger.redis]` and `[[trigger.redis]]`, parsed strictly.

use bv_manifest::{App, Template};
use serde::Deserialize;

/// The Redis trigger's part of the manifest.
#[derive(Debug, Clone, Default)]
pub struct RedisTriggerConfig {
    /// `[application.trigger.redis] address`: the default server.
    pub address: Option<Template>,
    /// `[[trigger.redis]]`, in manifest order.
    pub subscriptions: Vec<Subscription>,
}

/// One `[[trigger.redis]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Subscription {
    /// The channel to subscribe to.
    pub channel: String,
    /// The component that handles its messages.
    pub component: String,
    /// The server, overriding the application's.
    #[serde(default)]
    pub address: Option<Template>,
    /// Optional trigger id (ignored, accepted as Spin does).
    #[serde(default)]
    pub id: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AppSettings {
    #[serde(default)]
    address: Option<Template>,
}

impl RedisTriggerConfig {
    /// Reads the Redis trigger's tables from `app`; errors name the field.
    pub fn from_app(app: &App) -> anyhow::Result<Self> {
        let address = match app.application.trigger_settings.get("redis") {
            Some(table) => parse::<AppSettings>(table, "application.trigger.redis")?.address,
            None => None,
        };
        let mut subscriptions = Vec::new();
        for (i, table) in app
            .other_triggers
            .get("redis")
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .enumerate()
        {
            let sub: Subscription = parse(table, &format!("trigger.redis[{i}]"))?;
            if sub.channel.is_empty() {
                anyhow::bail!("trigger.redis[{i}].channel: must not be empty");
            }
            subscriptions.push(sub);
        }
        Ok(Self {
            address,
            subscriptions,
        })
    }
}

fn parse<T: serde::de::DeserializeOwned>(table: &toml::Table, at: &str) -> anyhow::Result<T> {
    serde_path_to_error::deserialize(toml::Value::Table(table.clone())).map_err(|e| {
        let path = e.path().to_string();
        let message = e.into_inner().to_string();
        let message = message.trim();
        if path == "." {
            anyhow::anyhow!("{at}: {message}")
        } else {
            anyhow::anyhow!("{at}.{path}: {message}")
        }
    })
}
