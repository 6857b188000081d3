//! Spin's locked application (`spin.lock`, `spin_lock_version` 0/1): the
//! JSON an OCI artifact carries as its `application/vnd.fermyon.spin.application.v1+config`
//! layer. Written from Spin's documented format; fields bv does not use are
//! kept in the `metadata` maps so nothing is dropped on a round trip.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// A locked application.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LockedApp {
    /// 0 unless the app has host requirements, as Spin writes it.
    pub spin_lock_version: u32,
    /// Features a host must understand to run the app; bv understands none
    /// beyond the basics and refuses an app that lists any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub must_understand: Vec<String>,
    /// Application metadata: name, version, description, authors,
    /// `triggers` (application-level trigger settings) and, from bv, `tool`.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub metadata: Map<String, Value>,
    /// Host requirements (`local_service_chaining`).
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub host_requirements: Map<String, Value>,
    /// Application variables.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub variables: BTreeMap<String, Variable>,
    /// Every trigger, of every kind.
    pub triggers: Vec<LockedTrigger>,
    /// Every component.
    pub components: Vec<LockedComponent>,
}

/// An application variable.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Variable {
    /// What the variable is for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The default; without one the variable is required.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<String>,
    /// Whether the value must not be logged.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub secret: bool,
}

/// A trigger: its kind and its manifest table (with `component` named).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LockedTrigger {
    /// Unique within the application.
    pub id: String,
    /// `http`, `redis`, `postgres`, `cron`, ...
    pub trigger_type: String,
    /// The `[[trigger.<type>]]` table as JSON.
    pub trigger_config: Value,
}

/// A component with its code and files named by content.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LockedComponent {
    /// The component id.
    pub id: String,
    /// `description`, `allowed_outbound_hosts`, `key_value_stores`,
    /// `databases` (SQLite), and from bv `tool`.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub metadata: Map<String, Value>,
    /// The Wasm component.
    pub source: LockedSource,
    /// Environment variables.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Files, each at its guest path relative to `/`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<ContentPath>,
    /// Component variables (templates over application variables).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub config: BTreeMap<String, String>,
    /// Component dependencies: bv runs none and refuses a component with any.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub dependencies: Map<String, Value>,
    /// Per-component host requirements.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub host_requirements: Map<String, Value>,
}

/// A component's code.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LockedSource {
    /// `application/wasm`.
    pub content_type: String,
    /// Where the bytes are.
    #[serde(flatten)]
    pub content: ContentRef,
}

/// A file and where the guest sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContentPath {
    /// Where the bytes are.
    #[serde(flatten)]
    pub content: ContentRef,
    /// The guest path, relative to the mount root `/`.
    pub path: String,
}

/// Content named by digest, by URL, or carried inline.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ContentRef {
    /// A URL (`file://...`) for content not yet in a registry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// The bytes themselves, base64: small files are carried in the config
    /// rather than as layers (some registries refuse tiny blobs).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "inline_base64"
    )]
    pub inline: Option<Vec<u8>>,
    /// `sha256:<hex>` of the content.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
}

mod inline_base64 {
    use base64::Engine as _;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        match bytes {
            Some(b) => s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(b)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
        let text: Option<String> = Option::deserialize(d)?;
        text.map(|t| {
            base64::engine::general_purpose::STANDARD
                .decode(t)
                .map_err(serde::de::Error::custom)
        })
        .transpose()
    }
}
