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
        let address = app
            .trigger_settings::<AppSettings>("redis")?
            .and_then(|settings| settings.address);
        let subscriptions: Vec<Subscription> = app.trigger_entries("redis")?;
        for (i, sub) in subscriptions.iter().enumerate() {
            if sub.channel.is_empty() {
                anyhow::bail!("trigger.redis[{i}].channel: must not be empty");
            }
        }
        Ok(Self {
            address,
            subscriptions,
        })
    }
}
