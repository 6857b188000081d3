//! Devices, their types and the metrics a type reports.

use serde::{Deserialize, Serialize};

/// The most metrics one device type may declare (the binary form numbers
/// them with one byte).
pub const MAX_METRICS: usize = 32;

/// A device's id: 3 to 64 characters of `a-z`, `0-9` and `-`, starting
/// with a letter. It is also the device's MQTT user name and part of its
/// topics, so nothing in it may mean something to MQTT (`/`, `+`, `#`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct DeviceId(String);

impl DeviceId {
    /// Parses an id; the error says what is wrong.
    pub fn parse(raw: &str) -> Result<Self, String> {
        if !(3..=64).contains(&raw.len()) {
            return Err(format!("must be 3 to 64 characters, got {}", raw.len()));
        }
        if !raw.starts_with(|c: char| c.is_ascii_lowercase()) {
            return Err("must start with a letter a-z".into());
        }
        if let Some(bad) = raw
            .chars()
            .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
        {
            return Err(format!("may hold only a-z, 0-9 and '-', found {bad:?}"));
        }
        Ok(Self(raw.to_string()))
    }

    /// The id.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Where the device publishes telemetry.
    pub fn telemetry_topic(&self) -> String {
        format!("{TOPIC_ROOT}/{}/telemetry", self.0)
    }

    /// Where the device receives commands.
    pub fn command_topic(&self) -> String {
        format!("{TOPIC_ROOT}/{}/commands", self.0)
    }

    /// Where the device acknowledges commands.
    pub fn ack_topic(&self) -> String {
        format!("{TOPIC_ROOT}/{}/acks", self.0)
    }

    /// The device a telemetry topic belongs to: `devices/<id>/telemetry`.
    pub fn from_telemetry_topic(topic: &str) -> Result<Self, String> {
        match Self::from_topic(topic)? {
            (id, Channel::Telemetry) => Ok(id),
            _ => Err(format!(
                "topic {topic:?} is not {TOPIC_ROOT}/<device>/telemetry"
            )),
        }
    }

    /// The device and channel of a topic a device publishes to:
    /// `devices/<id>/telemetry` or `devices/<id>/acks`.
    pub fn from_topic(topic: &str) -> Result<(Self, Channel), String> {
        let mut parts = topic.split('/');
        let channel = match (parts.next(), parts.next(), parts.next(), parts.next()) {
            (Some(TOPIC_ROOT), Some(id), Some("telemetry"), None) => (id, Channel::Telemetry),
            (Some(TOPIC_ROOT), Some(id), Some("acks"), None) => (id, Channel::Acks),
            _ => {
                return Err(format!(
                    "topic {topic:?} is not {TOPIC_ROOT}/<device>/telemetry or …/acks"
                ))
            }
        };
        let id = Self::parse(channel.0).map_err(|e| format!("topic {topic:?}: device id {e}"))?;
        Ok((id, channel.1))
    }
}

impl std::fmt::Display for DeviceId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a device publishes on a topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    /// Measurements.
    Telemetry,
    /// Acknowledgements of commands.
    Acks,
}

/// The first level of every device topic.
pub const TOPIC_ROOT: &str = "devices";

/// One metric a device type reports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MetricSpec {
    /// `a-z`, `0-9`, `_`; 1 to 32 characters.
    pub name: String,
    /// Free text, e.g. `°C`.
    #[serde(default)]
    pub unit: String,
    /// Values below are invalid (the message is parked).
    #[serde(
        default,
        deserialize_with = "number",
        skip_serializing_if = "Option::is_none"
    )]
    pub min: Option<f64>,
    /// Values above are invalid (the message is parked).
    #[serde(
        default,
        deserialize_with = "number",
        skip_serializing_if = "Option::is_none"
    )]
    pub max: Option<f64>,
    /// The fastest plausible change per second; faster is an anomaly
    /// (`rate`). None: no rate-of-change detection.
    #[serde(
        default,
        deserialize_with = "number",
        skip_serializing_if = "Option::is_none"
    )]
    pub max_rate_per_second: Option<f64>,
    /// The period of the metric's daily (or other) cycle, in seconds:
    /// the detector then judges each sample against the baseline of its
    /// phase in the cycle ([`crate::detect`]'s seasonal baseline). None:
    /// one baseline for all times.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seasonal_period_seconds: Option<u32>,
}

/// The shortest and longest cycle a seasonal baseline may have.
pub const SEASONAL_PERIOD_SECONDS: std::ops::RangeInclusive<u32> = 60..=7 * 86_400;

impl MetricSpec {
    /// What the detector needs to know of this metric.
    pub fn rules(&self) -> crate::detect::MetricRules {
        crate::detect::MetricRules {
            max_rate: self.max_rate_per_second,
            season_ms: self.seasonal_period_seconds.map(|s| i64::from(s) * 1000),
        }
    }
}

/// An optional number that may be left out but not given as `null`.
fn number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    f64::deserialize(d).map(Some)
}

/// A device type: its name and the metrics its telemetry carries. The
/// order of `metrics` is the binary form's numbering.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DeviceType {
    /// `a-z`, `0-9`, `-`; 1 to 64 characters.
    pub name: String,
    /// 1 to [`MAX_METRICS`], names unique.
    pub metrics: Vec<MetricSpec>,
}

impl DeviceType {
    /// Checks a type as a client sent it; the error names the field.
    pub fn check(&self) -> Result<(), (String, String)> {
        let name_ok = (1..=64).contains(&self.name.len())
            && self
                .name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if !name_ok {
            return Err((
                "name".into(),
                "1 to 64 characters of a-z, 0-9 and '-'".into(),
            ));
        }
        if self.metrics.is_empty() || self.metrics.len() > MAX_METRICS {
            return Err((
                "metrics".into(),
                format!("1 to {MAX_METRICS} metrics, got {}", self.metrics.len()),
            ));
        }
        for (i, m) in self.metrics.iter().enumerate() {
            let field = |f: &str| format!("metrics[{i}].{f}");
            let ok = (1..=32).contains(&m.name.len())
                && m.name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
            if !ok {
                return Err((
                    field("name"),
                    "1 to 32 characters of a-z, 0-9 and '_'".into(),
                ));
            }
            if self.metrics[..i].iter().any(|o| o.name == m.name) {
                return Err((field("name"), format!("{:?} is declared twice", m.name)));
            }
            if let (Some(lo), Some(hi)) = (m.min, m.max) {
                if lo >= hi {
                    return Err((field("max"), "must be greater than min".into()));
                }
            }
            if m.max_rate_per_second
                .is_some_and(|r| !(r > 0.0 && r.is_finite()))
            {
                return Err((
                    field("maxRatePerSecond"),
                    "must be a positive number".into(),
                ));
            }
            if m.seasonal_period_seconds
                .is_some_and(|p| !SEASONAL_PERIOD_SECONDS.contains(&p))
            {
                return Err((
                    field("seasonalPeriodSeconds"),
                    format!(
                        "a whole number of seconds from {} to {} (a week)",
                        SEASONAL_PERIOD_SECONDS.start(),
                        SEASONAL_PERIOD_SECONDS.end()
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The metric called `name`, with its position.
    pub fn metric(&self, name: &str) -> Option<(usize, &MetricSpec)> {
        self.metrics
            .iter()
            .enumerate()
            .find(|(_, m)| m.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_ids_parse() {
        assert!(DeviceId::parse("thermo-1").is_ok());
        assert!(DeviceId::parse("ab").is_err());
        assert!(DeviceId::parse("1abc").is_err());
        assert!(DeviceId::parse("a/b+c").unwrap_err().contains("'/'"));
        let id = DeviceId::from_telemetry_topic("devices/thermo-1/telemetry").unwrap();
        assert_eq!(id.as_str(), "thermo-1");
        assert!(DeviceId::from_telemetry_topic("devices/thermo-1/acks").is_err());
        assert_eq!(
            DeviceId::from_topic("devices/thermo-1/acks").unwrap().1,
            Channel::Acks
        );
        assert!(DeviceId::from_telemetry_topic("devices/a/b/telemetry").is_err());
    }

    #[test]
    fn types_are_checked_field_by_field() {
        let mut t: DeviceType = serde_json::from_value(serde_json::json!({
            "name": "thermostat",
            "metrics": [{"name": "temperature", "unit": "°C", "min": -40.0, "max": 85.0}]
        }))
        .unwrap();
        assert!(t.check().is_ok());
        t.metrics.push(t.metrics[0].clone());
        assert_eq!(t.check().unwrap_err().0, "metrics[1].name");
        t.metrics.pop();
        let null: Result<DeviceType, _> = serde_json::from_value(serde_json::json!({
            "name": "t", "metrics": [{"name": "a", "max": null}]
        }));
        assert!(null.is_err());
        t.metrics[0].seasonal_period_seconds = Some(30);
        assert_eq!(t.check().unwrap_err().0, "metrics[0].seasonalPeriodSeconds");
        t.metrics[0].seasonal_period_seconds = Some(86_400);
        assert!(t.check().is_ok());
        t.metrics[0].min = Some(100.0);
        assert_eq!(t.check().unwrap_err().0, "metrics[0].max");
    }
}
