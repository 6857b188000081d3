//! The bridge's configuration: `[application.tool.kafka-bridge]` in the
//! app's `spin.toml` (Spin ignores tool tables), or a TOML file of its own
//! with the same fields at the top level.
//!
//! ```toml
//! [application.tool.kafka-bridge]
//! brokers = "127.0.0.1:9092"
//!
//! [[application.tool.kafka-bridge.out]]
//! events = ["com.bitvelocity.order.*"]          # topic by the naming rule
//!
//! [[application.tool.kafka-bridge.in]]
//! topic = "partner.orders"
//! wrap = { type = "com.bitvelocity.order.placed.v1", source = "/partner", subject = "key" }
//! ```

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Context as _;
use serde::Deserialize;

/// The default broker list.
pub const DEFAULT_BROKERS: &str = "127.0.0.1:9092";
/// The prefix of topics named by the rule ([`BridgeConfig::topic_for`]).
pub const DEFAULT_TOPIC_PREFIX: &str = "bv.";
/// Partitions of a topic the bridge creates.
pub const DEFAULT_PARTITIONS: i32 = 3;
/// The outbox subscription of the outbound half.
pub const DEFAULT_SUBSCRIPTION: &str = "kafka-bridge";
/// The consumer group of the inbound half.
pub const DEFAULT_GROUP: &str = "bv-kafka-bridge";

/// Everything the bridge is told.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BridgeConfig {
    /// `bootstrap.servers`.
    #[serde(default = "default_brokers")]
    pub brokers: String,
    /// The database holding the outbox; when unset, the app's `db_url`
    /// variable.
    #[serde(default)]
    pub db_url: Option<String>,
    /// Prefix of the topics named by the rule.
    #[serde(default = "default_prefix")]
    pub topic_prefix: String,
    /// Partitions of the topics the bridge creates.
    #[serde(default = "default_partitions")]
    pub partitions: i32,
    /// The outbox subscription the outbound half moves.
    #[serde(default = "default_subscription")]
    pub subscription: String,
    /// Further librdkafka properties for every client (e.g. TLS, SASL).
    #[serde(default)]
    pub kafka: BTreeMap<String, String>,
    /// Events to produce, by type.
    #[serde(default)]
    pub out: Vec<OutRoute>,
    /// Topics to consume into the outbox.
    #[serde(default, rename = "in")]
    pub inbound: Vec<InRoute>,
    /// Row changes of tables to Kafka (change data capture).
    #[serde(default)]
    pub cdc: Option<CdcConfig>,
}

/// Change data capture: chosen tables' row changes, read from PostgreSQL's
/// logical replication, to Kafka in Debezium's envelope.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CdcConfig {
    /// The tables, `schema.table`.
    pub tables: Vec<String>,
    /// The logical replication slot, created when missing.
    #[serde(default = "default_cdc_slot")]
    pub slot: String,
    /// The publication naming the tables, created (or set to exactly
    /// these tables) at start.
    #[serde(default = "default_cdc_slot")]
    pub publication: String,
    /// Topics are `<topic_prefix>.<schema>.<table>`; also the logical
    /// server name in each event's `source.name`.
    #[serde(default = "default_cdc_prefix")]
    pub topic_prefix: String,
    /// The database whose tables are read; when unset, the bridge's.
    #[serde(default)]
    pub db_url: Option<String>,
    /// How often the slot is read when it had nothing, in milliseconds.
    #[serde(default = "default_cdc_poll_ms")]
    pub poll_interval_ms: u64,
}

/// The default slot and publication of change data capture.
pub const DEFAULT_CDC_SLOT: &str = "bv_kafka_bridge";
/// The default prefix of change data capture's topics.
pub const DEFAULT_CDC_PREFIX: &str = "bv.cdc";

fn default_cdc_slot() -> String {
    DEFAULT_CDC_SLOT.into()
}
fn default_cdc_prefix() -> String {
    DEFAULT_CDC_PREFIX.into()
}
fn default_cdc_poll_ms() -> u64 {
    200
}

impl CdcConfig {
    /// Checks what serde cannot; the error starts with the field's name.
    fn check(&self) -> Result<(), String> {
        if self.tables.is_empty() {
            return Err("tables: give at least one `schema.table`".into());
        }
        for (i, table) in self.tables.iter().enumerate() {
            let parts: Vec<&str> = table.split('.').collect();
            if parts.len() != 2 || !parts.iter().all(|p| identifier(p)) {
                return Err(format!(
                    "tables[{i}]: `{table}` is not `schema.table` (letters, digits and `_`, not starting with a digit)"
                ));
            }
        }
        // PostgreSQL's rule for slot names; publications take the same here.
        for (field, name) in [("slot", &self.slot), ("publication", &self.publication)] {
            if name.is_empty()
                || name.len() > 63
                || !name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            {
                return Err(format!(
                    "{field}: `{name}` must be 1 to 63 of lower-case letters, digits and `_`"
                ));
            }
        }
        check_topic(&format!("{}.s.t", self.topic_prefix))
            .map_err(|e| format!("topic_prefix: {e}"))?;
        if !(10..=60_000).contains(&self.poll_interval_ms) {
            return Err(format!(
                "poll_interval_ms: {} is not within 10..=60000",
                self.poll_interval_ms
            ));
        }
        Ok(())
    }
}

fn identifier(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Events of matching types go to one topic.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutRoute {
    /// Event type patterns (`*` matches any run of characters).
    pub events: Vec<String>,
    /// The topic; when unset, each type's topic by the naming rule.
    #[serde(default)]
    pub topic: Option<String>,
}

/// A topic consumed into the outbox.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InRoute {
    /// The topic.
    pub topic: String,
    /// The consumer group.
    #[serde(default = "default_group")]
    pub group: String,
    /// Where records that cannot be taken go; default `<topic>.dead-letters`.
    #[serde(default)]
    pub dead_letter_topic: Option<String>,
    /// How a record that is not a CloudEvent becomes one; without it such a
    /// record is dead-lettered.
    #[serde(default)]
    pub wrap: Option<Wrap>,
}

impl InRoute {
    /// The dead-letter topic.
    pub fn dead_letters(&self) -> String {
        self.dead_letter_topic
            .clone()
            .unwrap_or_else(|| format!("{}.dead-letters", self.topic))
    }
}

/// The envelope given to a foreign record. Each of `type`, `source` and
/// `subject` is a literal, `key` (the record's key) or `header:<name>`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Wrap {
    /// The event type.
    #[serde(rename = "type")]
    pub ty: String,
    /// The event source.
    pub source: String,
    /// The subject; none when unset.
    #[serde(default)]
    pub subject: Option<String>,
}

fn default_brokers() -> String {
    DEFAULT_BROKERS.into()
}
fn default_prefix() -> String {
    DEFAULT_TOPIC_PREFIX.into()
}
fn default_partitions() -> i32 {
    DEFAULT_PARTITIONS
}
fn default_subscription() -> String {
    DEFAULT_SUBSCRIPTION.into()
}
fn default_group() -> String {
    DEFAULT_GROUP.into()
}

/// The configuration read from a file, and the app's default database.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The bridge's table.
    pub config: BridgeConfig,
    /// The default of the app's `db_url` variable, if the file is an app.
    pub app_db_url: Option<String>,
}

/// Reads `path`: an app manifest with `[application.tool.kafka-bridge]`, or
/// a file of the bridge's own.
pub fn load(path: &Path) -> anyhow::Result<Loaded> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    parse(&text).with_context(|| format!("in {}", path.display()))
}

/// [`load`] on the text of the file.
pub fn parse(text: &str) -> anyhow::Result<Loaded> {
    let doc: toml::Table = toml::from_str(text)?;
    let is_app = doc.contains_key("spin_manifest_version") || doc.contains_key("application");
    let (table, field) = if is_app {
        let table = doc
            .get("application")
            .and_then(|a| a.get("tool"))
            .and_then(|t| t.get("kafka-bridge"))
            .cloned()
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "the manifest has no [application.tool.kafka-bridge] table: nothing to bridge"
                )
            })?;
        (table, "application.tool.kafka-bridge")
    } else {
        (toml::Value::Table(doc.clone()), "the bridge's file")
    };
    let config: BridgeConfig = table
        .try_into()
        .map_err(|e: toml::de::Error| anyhow::anyhow!("{field}: {}", e.message()))?;
    config.check().map_err(|e| anyhow::anyhow!("{field}.{e}"))?;
    let app_db_url = doc
        .get("variables")
        .and_then(|v| v.get("db_url"))
        .and_then(|v| v.get("default"))
        .and_then(|v| v.as_str())
        .map(str::to_string);
    Ok(Loaded { config, app_db_url })
}

impl BridgeConfig {
    /// Checks what serde cannot; the error starts with the field's path.
    fn check(&self) -> Result<(), String> {
        if self.out.is_empty() && self.inbound.is_empty() && self.cdc.is_none() {
            return Err(
                "out: nothing to bridge: give at least one [[out]] or [[in]] entry, or [cdc]"
                    .into(),
            );
        }
        if let Some(cdc) = &self.cdc {
            cdc.check().map_err(|e| format!("cdc.{e}"))?;
        }
        if self.brokers.trim().is_empty() {
            return Err("brokers: must not be empty".into());
        }
        if !(1..=1000).contains(&self.partitions) {
            return Err(format!(
                "partitions: {} is not within 1..=1000",
                self.partitions
            ));
        }
        check_topic(&format!("{}x", self.topic_prefix))
            .map_err(|e| format!("topic_prefix: {e}"))?;
        for (i, route) in self.out.iter().enumerate() {
            if route.events.is_empty() {
                return Err(format!(
                    "out[{i}].events: give at least one event type pattern"
                ));
            }
            for (j, p) in route.events.iter().enumerate() {
                bv_outbox::pattern::check(p).map_err(|e| format!("out[{i}].events[{j}]: {e}"))?;
            }
            if let Some(topic) = &route.topic {
                check_topic(topic).map_err(|e| format!("out[{i}].topic: {e}"))?;
            }
        }
        for (i, route) in self.inbound.iter().enumerate() {
            check_topic(&route.topic).map_err(|e| format!("in[{i}].topic: {e}"))?;
            check_topic(&route.dead_letters())
                .map_err(|e| format!("in[{i}].dead_letter_topic: {e}"))?;
            if route.dead_letters() == route.topic {
                return Err(format!(
                    "in[{i}].dead_letter_topic: must differ from the topic it takes records from"
                ));
            }
            if route.group.trim().is_empty() {
                return Err(format!("in[{i}].group: must not be empty"));
            }
            if let Some(wrap) = &route.wrap {
                for (name, value) in [("type", Some(&wrap.ty)), ("source", Some(&wrap.source))]
                    .into_iter()
                    .chain([("subject", wrap.subject.as_ref())])
                {
                    if let Some(value) = value {
                        Field::parse(value).map_err(|e| format!("in[{i}].wrap.{name}: {e}"))?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Every pattern of the outbound routes, in order.
    pub fn out_patterns(&self) -> Vec<String> {
        self.out.iter().flat_map(|r| r.events.clone()).collect()
    }

    /// The topic of events of type `ty`: the first route that takes it
    /// decides; a route without a topic uses the naming rule — the type
    /// without `com.bitvelocity.`, after [`BridgeConfig::topic_prefix`],
    /// every character Kafka does not allow in a name replaced by `_`
    /// (`com.bitvelocity.order.placed.v1` → `bv.order.placed.v1`).
    pub fn topic_for(&self, ty: &str) -> Option<String> {
        let route = self
            .out
            .iter()
            .find(|r| r.events.iter().any(|p| bv_outbox::pattern::matches(p, ty)))?;
        Some(route.topic.clone().unwrap_or_else(|| {
            let name = ty.strip_prefix(bv_events::TYPE_PREFIX).unwrap_or(ty);
            let mut topic: String = format!("{}{name}", self.topic_prefix)
                .chars()
                .map(|c| if topic_char(c) { c } else { '_' })
                .collect();
            topic.truncate(249);
            topic
        }))
    }
}

fn topic_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')
}

/// Kafka's rule for a topic name: 1–249 of `[a-zA-Z0-9._-]`, not `.` or `..`.
fn check_topic(topic: &str) -> Result<(), String> {
    if topic.is_empty() || topic.len() > 249 {
        return Err(format!("topic `{topic}` must have 1 to 249 characters"));
    }
    if topic == "." || topic == ".." {
        return Err(format!("`{topic}` is not a topic name"));
    }
    if let Some(c) = topic.chars().find(|c| !topic_char(*c)) {
        return Err(format!(
            "topic `{topic}` contains {c:?}; Kafka allows letters, digits, `.`, `_` and `-`"
        ));
    }
    Ok(())
}

/// Where a wrapped record's attribute comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Field {
    /// This text.
    Literal(String),
    /// The record's key.
    Key,
    /// A header of the record.
    Header(String),
}

impl Field {
    /// `key`, `header:<name>` or a literal.
    pub fn parse(value: &str) -> Result<Self, String> {
        if value == "key" {
            return Ok(Self::Key);
        }
        if let Some(name) = value.strip_prefix("header:") {
            if name.is_empty() {
                return Err("`header:` needs a header name after it".into());
            }
            return Ok(Self::Header(name.into()));
        }
        if value.is_empty() {
            return Err("must not be empty".into());
        }
        Ok(Self::Literal(value.into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const APP: &str = r#"
spin_manifest_version = 2
[application]
name = "shop"
[variables]
db_url = { default = "postgres://x/shop" }
[application.tool.kafka-bridge]
brokers = "k:9092"
[[application.tool.kafka-bridge.out]]
events = ["com.bitvelocity.order.*"]
[[application.tool.kafka-bridge.out]]
events = ["com.bitvelocity.*"]
topic = "everything-else"
[[application.tool.kafka-bridge.in]]
topic = "partner.orders"
wrap = { type = "com.bitvelocity.order.placed.v1", source = "/partner", subject = "key" }
"#;

    #[test]
    fn reads_the_app_table_and_the_apps_database() {
        let loaded = parse(APP).unwrap();
        assert_eq!(loaded.app_db_url.as_deref(), Some("postgres://x/shop"));
        let c = loaded.config;
        assert_eq!(c.brokers, "k:9092");
        assert_eq!(c.subscription, DEFAULT_SUBSCRIPTION);
        assert_eq!(c.inbound[0].group, DEFAULT_GROUP);
        assert_eq!(c.inbound[0].dead_letters(), "partner.orders.dead-letters");
        assert_eq!(c.out_patterns().len(), 2);
    }

    #[test]
    fn the_first_matching_route_names_the_topic() {
        let c = parse(APP).unwrap().config;
        assert_eq!(
            c.topic_for("com.bitvelocity.order.placed.v1").as_deref(),
            Some("bv.order.placed.v1")
        );
        assert_eq!(
            c.topic_for("com.bitvelocity.product.created.v1").as_deref(),
            Some("everything-else")
        );
        assert_eq!(c.topic_for("org.other.thing"), None);
    }

    #[test]
    fn the_naming_rule_replaces_what_kafka_does_not_allow() {
        let c = parse("[[out]]\nevents = [\"*\"]\n").unwrap().config;
        assert_eq!(c.topic_for("a/b c:v1").as_deref(), Some("bv.a_b_c_v1"));
    }

    #[test]
    fn bad_settings_are_named() {
        for (text, want) in [
            ("brokers = \"k\"\n", "out: nothing to bridge"),
            ("[[out]]\nevents = []\n", "out[0].events: give at least one"),
            ("[[out]]\nevents = [\"a b\"]\n", "out[0].events[0]:"),
            (
                "[[out]]\nevents = [\"*\"]\ntopic = \"a/b\"\n",
                "out[0].topic: topic `a/b` contains '/'",
            ),
            (
                "[[in]]\ntopic = \"t\"\ndead_letter_topic = \"t\"\n",
                "in[0].dead_letter_topic: must differ",
            ),
            (
                "[[in]]\ntopic = \"t\"\nwrap = { type = \"header:\", source = \"/s\" }\n",
                "in[0].wrap.type:",
            ),
            (
                "[[out]]\nevents = [\"*\"]\nbogus = 1\n",
                "unknown field `bogus`",
            ),
            (
                "partitions = 0\n[[out]]\nevents = [\"*\"]\n",
                "partitions: 0 is not within",
            ),
            ("[cdc]\ntables = []\n", "cdc.tables: give at least one"),
            (
                "[cdc]\ntables = [\"orders\"]\n",
                "cdc.tables[0]: `orders` is not `schema.table`",
            ),
            (
                "[cdc]\ntables = [\"public.orders; drop\"]\n",
                "cdc.tables[0]:",
            ),
            (
                "[cdc]\ntables = [\"public.orders\"]\nslot = \"Bad-Slot\"\n",
                "cdc.slot: `Bad-Slot` must be",
            ),
            (
                "[cdc]\ntables = [\"public.orders\"]\npoll_interval_ms = 0\n",
                "cdc.poll_interval_ms: 0 is not within",
            ),
        ] {
            let e = format!("{:#}", parse(text).unwrap_err());
            assert!(e.contains(want), "{text:?}: {e}");
        }
        let e = format!(
            "{:#}",
            parse("spin_manifest_version = 2\n[application]\nname = \"x\"\n").unwrap_err()
        );
        assert!(e.contains("no [application.tool.kafka-bridge]"), "{e}");
    }

    #[test]
    fn change_data_capture_alone_is_something_to_bridge() {
        let c = parse("[cdc]\ntables = [\"public.orders\", \"shop.line_items\"]\n")
            .unwrap()
            .config;
        let cdc = c.cdc.unwrap();
        assert_eq!(cdc.slot, DEFAULT_CDC_SLOT);
        assert_eq!(cdc.publication, DEFAULT_CDC_SLOT);
        assert_eq!(cdc.topic_prefix, DEFAULT_CDC_PREFIX);
    }

    #[test]
    fn wrap_fields() {
        assert_eq!(Field::parse("key"), Ok(Field::Key));
        assert_eq!(
            Field::parse("header:x-type"),
            Ok(Field::Header("x-type".into()))
        );
        assert_eq!(
            Field::parse("/partner"),
            Ok(Field::Literal("/partner".into()))
        );
        assert!(Field::parse("").is_err());
    }
}
