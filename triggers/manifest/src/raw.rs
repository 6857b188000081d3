//! The serde layer: a strict, 1:1 image of `spin.toml` and
//! `runtime-config.toml`. Every struct denies unknown fields so typos are
//! reported (with their dotted path) instead of silently ignored; values that
//! Spin lets take several shapes get hand-written visitors so the error names
//! the field rather than serde's "did not match any variant".

use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};

use crate::{ComponentBvSettings, Template};
use bv_routes::RouteSpec;

/// Names the one key of a map that gets a strict schema.
pub(crate) trait SpecialKey {
    const KEY: &'static str;
}

pub(crate) struct Http;
impl SpecialKey for Http {
    const KEY: &'static str = "http";
}

pub(crate) struct Bv;
impl SpecialKey for Bv {
    const KEY: &'static str = "bv";
}

/// A map where the entry named `K::KEY` is parsed strictly as `S` and every
/// other entry is kept as `O` (raw, or ignored). Used for `trigger.*`,
/// `application.trigger.*` and `tool.*`, where bv owns one key and must pass
/// the others through untouched.
pub(crate) struct Keyed<K, S, O> {
    pub special: Option<S>,
    pub others: BTreeMap<String, O>,
    _key: PhantomData<K>,
}

impl<K, S, O> Default for Keyed<K, S, O> {
    fn default() -> Self {
        Keyed {
            special: None,
            others: BTreeMap::new(),
            _key: PhantomData,
        }
    }
}

impl<'de, K: SpecialKey, S: Deserialize<'de>, O: Deserialize<'de>> Deserialize<'de>
    for Keyed<K, S, O>
{
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyedVisitor<K, S, O>(PhantomData<(K, S, O)>);

        impl<'de, K: SpecialKey, S: Deserialize<'de>, O: Deserialize<'de>> Visitor<'de>
            for KeyedVisitor<K, S, O>
        {
            type Value = Keyed<K, S, O>;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a table")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut out = Keyed::default();
                while let Some(key) = map.next_key::<String>()? {
                    if key == K::KEY {
                        out.special = Some(map.next_value()?);
                    } else {
                        let value = map.next_value()?;
                        out.others.insert(key, value);
                    }
                }
                Ok(out)
            }
        }

        deserializer.deserialize_map(KeyedVisitor(PhantomData))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawManifest {
    #[allow(dead_code)] // checked before this struct is deserialized
    pub spin_manifest_version: toml::Value,
    pub application: RawApplication,
    #[serde(default)]
    pub variables: BTreeMap<String, RawVariable>,
    #[serde(default)]
    pub trigger: Keyed<Http, Vec<RawHttpTrigger>, Vec<toml::Table>>,
    #[serde(default)]
    pub component: BTreeMap<String, RawComponent>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawApplication {
    pub name: String,
    #[serde(default)]
    pub version: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub authors: Vec<String>,
    /// Spin deployment targets (`spin-up:3.3`, ...): meaningless to bv but
    /// valid in Spin manifests, so accepted and ignored.
    #[serde(default)]
    #[allow(dead_code)]
    pub targets: Vec<toml::Value>,
    #[serde(default)]
    pub trigger: Keyed<Http, RawAppHttp, toml::Table>,
    #[serde(default)]
    pub tool: Keyed<Bv, ComponentBvSettings, IgnoredAny>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAppHttp {
    #[serde(default)]
    pub base: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawVariable {
    #[serde(default)]
    pub default: Option<String>,
    #[serde(default)]
    pub required: bool,
    #[serde(default)]
    pub secret: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawHttpTrigger {
    #[serde(default)]
    pub id: Option<String>,
    pub route: RouteSpec,
    pub component: ComponentRef,
    #[serde(default, deserialize_with = "spin_executor")]
    #[allow(dead_code)]
    pub executor: Option<()>,
}

/// `executor = { type = "spin" }` is the only executor bv runs.
fn spin_executor<'de, D: Deserializer<'de>>(d: D) -> Result<Option<()>, D::Error> {
    let table = toml::Table::deserialize(d)?;
    match table.get("type").and_then(|t| t.as_str()) {
        Some("spin") => {
            if let Some(extra) = table.keys().find(|k| *k != "type") {
                return Err(de::Error::custom(format!(
                    "unknown field `{extra}` for the spin executor"
                )));
            }
            Ok(Some(()))
        }
        Some("wagi") => Err(de::Error::custom(
            "the wagi executor is not supported by bv; only `executor = { type = \"spin\" }` (or no executor) is",
        )),
        Some(other) => Err(de::Error::custom(format!(
            "unknown executor type `{other}`; only `{{ type = \"spin\" }}` is supported"
        ))),
        None => Err(de::Error::custom(
            "executor must be a table with `type = \"spin\"`",
        )),
    }
}

/// `component = "id"`; inline component tables are refused with a hint.
pub(crate) struct ComponentRef(pub String);

impl<'de> Deserialize<'de> for ComponentRef {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = ComponentRef;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a component id string")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ComponentRef, E> {
                Ok(ComponentRef(v.to_string()))
            }
            fn visit_map<A: MapAccess<'de>>(self, _: A) -> Result<ComponentRef, A::Error> {
                Err(de::Error::custom(
                    "inline component tables are not supported by bv; define the component as [component.<id>] and write `component = \"<id>\"`",
                ))
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawComponent {
    pub source: LocalSource,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub variables: BTreeMap<String, Template>,
    #[serde(default)]
    pub environment: BTreeMap<String, String>,
    #[serde(default)]
    pub files: Vec<RawFile>,
    #[serde(default)]
    pub exclude_files: Vec<String>,
    #[serde(default)]
    pub allowed_outbound_hosts: Vec<String>,
    /// Deprecated in Spin; reported with the replacement syntax.
    #[serde(default)]
    pub allowed_http_hosts: Option<Vec<String>>,
    #[serde(default)]
    pub key_value_stores: Vec<String>,
    #[serde(default)]
    pub sqlite_databases: Vec<String>,
    /// Not supported by bv; an error unless empty.
    #[serde(default)]
    pub ai_models: Vec<String>,
    #[serde(default)]
    pub build: Option<RawBuild>,
    #[serde(default)]
    pub tool: Keyed<Bv, ComponentBvSettings, IgnoredAny>,
    #[serde(default)]
    pub dependencies_inherit_configuration: bool,
    /// Not supported by bv; an error unless empty.
    #[serde(default)]
    pub dependencies: toml::Table,
}

/// `source = "path.wasm"`; remote and registry sources are refused.
pub(crate) struct LocalSource(pub String);

impl<'de> Deserialize<'de> for LocalSource {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = LocalSource;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a path to a .wasm file")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<LocalSource, E> {
                if v.is_empty() {
                    return Err(E::custom("the source path must not be empty"));
                }
                Ok(LocalSource(v.to_string()))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<LocalSource, A::Error> {
                let mut keys = Vec::new();
                while let Some(k) = map.next_key::<String>()? {
                    map.next_value::<IgnoredAny>()?;
                    keys.push(k);
                }
                if keys.iter().any(|k| k == "url") {
                    Err(de::Error::custom(
                        "remote sources (`{ url = ..., digest = ... }`) are not supported by bv; download the file and use a local path",
                    ))
                } else if keys.iter().any(|k| k == "registry" || k == "package") {
                    Err(de::Error::custom(
                        "registry sources are not supported by bv; use a local path",
                    ))
                } else {
                    Err(de::Error::custom("expected a path to a .wasm file"))
                }
            }
        }
        d.deserialize_any(V)
    }
}

/// A `files` entry: a glob pattern or a `{ source, destination }` table.
pub(crate) enum RawFile {
    Pattern(String),
    Placement(RawPlacement),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPlacement {
    pub source: String,
    pub destination: String,
}

impl<'de> Deserialize<'de> for RawFile {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawFile;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a glob pattern string or { source = \"...\", destination = \"/...\" }")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawFile, E> {
                Ok(RawFile::Pattern(v.to_string()))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<RawFile, A::Error> {
                RawPlacement::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map(RawFile::Placement)
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawBuild {
    pub command: Commands,
    #[serde(default)]
    pub workdir: Option<String>,
    #[serde(default)]
    pub watch: Vec<String>,
}

/// `command = "one"` or `command = ["one", "two"]`.
pub(crate) struct Commands(pub Vec<String>);

impl<'de> Deserialize<'de> for Commands {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Commands;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a command string or an array of command strings")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Commands, E> {
                Ok(Commands(vec![v.to_string()]))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Commands, A::Error> {
                let mut out = Vec::new();
                while let Some(c) = seq.next_element::<String>()? {
                    out.push(c);
                }
                Ok(Commands(out))
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRuntimeConfig {
    #[serde(default)]
    pub key_value_store: BTreeMap<String, RawKeyValueStore>,
    #[serde(default)]
    pub sqlite_database: BTreeMap<String, RawSqliteDatabase>,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub(crate) enum RawKeyValueStore {
    Spin {
        #[serde(default)]
        path: Option<String>,
    },
    Redis {
        url: String,
    },
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub(crate) enum RawSqliteDatabase {
    Spin {
        #[serde(default)]
        path: Option<String>,
    },
}

/// Deserializes a strictly positive integer; zero is meaningless for every
/// limit bv has (it would make the component unusable).
pub(crate) fn positive_u32<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    match u32::deserialize(d)? {
        0 => Err(de::Error::custom("must be greater than 0")),
        n => Ok(Some(n)),
    }
}

/// See [`positive_u32`].
pub(crate) fn positive_u64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    match u64::deserialize(d)? {
        0 => Err(de::Error::custom("must be greater than 0")),
        n => Ok(Some(n)),
    }
}
