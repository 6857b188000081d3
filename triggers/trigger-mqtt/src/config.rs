//! `[application.trigger.mqtt]` and `[[trigger.mqtt]]`, parsed strictly with
//! the field names and types of the spin-trigger-mqtt plugin.

use bv_manifest::{App, Template};
use serde::Deserialize;

/// `[application.trigger.mqtt]`: the broker every subscription uses.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BrokerSettings {
    /// `mqtt://host[:port]` or `mqtts://...`; may be a `{{ variable }}`.
    pub address: Template,
    /// User name; empty for anonymous access.
    #[serde(default = "empty")]
    pub username: Template,
    /// Password (with a user name).
    #[serde(default = "empty")]
    pub password: Template,
    /// Keep-alive interval in seconds. The plugin takes a string ("30");
    /// an integer is accepted too.
    #[serde(default = "default_keep_alive")]
    pub keep_alive_interval: StringOrInt,
}

fn empty() -> Template {
    Template::parse("").expect("the empty template is valid")
}

fn default_keep_alive() -> StringOrInt {
    StringOrInt::Int(30)
}

/// A setting the plugin writes as a string but which is a number.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum StringOrInt {
    /// `"30"`, possibly a `{{ variable }}`.
    String(Template),
    /// `30`.
    Int(i64),
}

/// One `[[trigger.mqtt]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Subscription {
    /// The component that handles the messages.
    pub component: String,
    /// The topic (filter) to subscribe to; may be a `{{ variable }}`.
    pub topic: Template,
    /// The subscription's QoS: "0", "1" or "2" (the plugin's string form;
    /// an integer is accepted too).
    pub qos: StringOrInt,
    /// Optional trigger id (accepted as Spin does, unused).
    #[serde(default)]
    pub id: Option<String>,
}

/// The MQTT trigger's part of the manifest.
#[derive(Debug, Clone)]
pub struct MqttTriggerConfig {
    /// The broker.
    pub broker: BrokerSettings,
    /// `[[trigger.mqtt]]`, in manifest order.
    pub subscriptions: Vec<Subscription>,
}

impl MqttTriggerConfig {
    /// Reads the MQTT trigger's tables from `app`; errors name the field.
    pub fn from_app(app: &App) -> anyhow::Result<Self> {
        let Some(broker) = app.trigger_settings::<BrokerSettings>("mqtt")? else {
            anyhow::bail!(
                "application.trigger.mqtt: missing; [[trigger.mqtt]] needs [application.trigger.mqtt] with at least `address`"
            );
        };
        let subscriptions: Vec<Subscription> = app.trigger_entries("mqtt")?;
        for (i, sub) in subscriptions.iter().enumerate() {
            if sub.topic.as_str().is_empty() {
                anyhow::bail!("trigger.mqtt[{i}].topic: must not be empty");
            }
        }
        Ok(Self {
            broker,
            subscriptions,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app(text: &str) -> App {
        bv_manifest::parse(text, std::path::Path::new("/tmp/spin.toml")).unwrap()
    }

    const HEAD: &str = r#"spin_manifest_version = 2
[application]
name = "a"
[component.c]
source = "c.wasm"
"#;

    #[test]
    fn plugin_manifest_parses() {
        let a = app(&format!(
            r#"{HEAD}
[application.trigger.mqtt]
address = "mqtt://localhost:1883"
username = "admin"
password = "{{{{ password }}}}"
keep_alive_interval = "30"
[[trigger.mqtt]]
component = "c"
topic = "messages-in01"
qos = "1"
[variables]
password = {{ default = "pw" }}
"#
        ));
        let c = MqttTriggerConfig::from_app(&a).unwrap();
        assert_eq!(c.broker.address.as_str(), "mqtt://localhost:1883");
        assert_eq!(c.subscriptions.len(), 1);
        assert!(matches!(c.subscriptions[0].qos, StringOrInt::String(_)));
    }

    #[test]
    fn unknown_fields_are_named() {
        let a = app(&format!(
            r#"{HEAD}
[application.trigger.mqtt]
address = "mqtt://localhost:1883"
[[trigger.mqtt]]
component = "c"
topic = "t"
qos = "0"
chanel = "x"
"#
        ));
        let e = MqttTriggerConfig::from_app(&a).unwrap_err().to_string();
        assert!(
            e.contains("spin.toml: trigger.mqtt[0].chanel: unknown field"),
            "{e}"
        );
    }

    #[test]
    fn broker_settings_are_required() {
        let a = app(&format!(
            "{HEAD}\n[[trigger.mqtt]]\ncomponent = \"c\"\ntopic = \"t\"\nqos = \"0\"\n"
        ));
        let e = MqttTriggerConfig::from_app(&a).unwrap_err().to_string();
        assert!(e.contains("application.trigger.mqtt"), "{e}");
    }
}
