//! `spin:key-value@3.0.0` for `bv`.
//!
//! Shape: [`KeyValueApp`] holds the stores an application may open (built
//! once from the manifest and the runtime config), [`KeyValueInstance`] is the
//! per-instance state (which labels this component may open, and its open
//! handles). Real I/O sits behind the [`Store`] trait: [`SqliteStore`] backs
//! the `default` store under `.spin/`, [`RedisStore`] any store the runtime
//! config declares with `type = "redis"`.

mod redis_store;
mod sqlite_store;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use bv_capability::{bv_faults, ComponentFaults};
use bv_manifest::{App, KeyValueStoreConfig, RuntimeConfig};
use bv_telemetry::CurrentSpan;
use wasmtime::component::{Accessor, HasData, Linker, Resource, ResourceTable};

pub use redis_store::RedisStore;
pub use sqlite_store::SqliteStore;

mod bindings {
    wasmtime::component::bindgen!({
        path: "../../wit",
        world: "bitvelocity:host/key-value-host",
        imports: { default: store | trappable },
        with: { "spin:key-value/key-value.store": crate::OpenStore },
    });
}

use bindings::spin::key_value::key_value::{self, Error as WitError};

/// A failure of a store's backend, reported to the guest as `error::other`.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct StoreError(pub String);

/// One key-value store. Implementations do real I/O; tests can swap them.
#[async_trait]
pub trait Store: Send + Sync {
    /// The value under `key`, if any.
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError>;
    /// Sets `key` to `value`, replacing any previous value.
    async fn set(&self, key: &str, value: &[u8]) -> Result<(), StoreError>;
    /// Removes `key`; removing a missing key is not an error.
    async fn delete(&self, key: &str) -> Result<(), StoreError>;
    /// Whether `key` has a value.
    async fn exists(&self, key: &str) -> Result<bool, StoreError>;
    /// All keys of the store.
    async fn keys(&self) -> Result<Vec<String>, StoreError>;
}

/// Per-application state: every store by label.
pub struct KeyValueApp {
    stores: HashMap<String, Arc<dyn Store>>,
}

impl KeyValueApp {
    /// Builds the stores the runtime config declares, plus the `default`
    /// store (SQLite at `<state_dir>/sqlite_key_value.db` unless overridden).
    pub fn new(app: &App, config: &RuntimeConfig, state_dir: &Path) -> anyhow::Result<Self> {
        let mut stores: HashMap<String, Arc<dyn Store>> = HashMap::new();
        let used: HashSet<&str> = app
            .components
            .values()
            .flat_map(|c| c.key_value_stores.iter().map(String::as_str))
            .collect();
        let mut configs = config.key_value_stores.clone();
        configs
            .entry("default".to_string())
            .or_insert(KeyValueStoreConfig::Spin { path: None });
        for (label, cfg) in configs {
            if !used.contains(label.as_str()) {
                continue;
            }
            let store: Arc<dyn Store> = match cfg {
                KeyValueStoreConfig::Spin { path } => {
                    let path = path.unwrap_or_else(|| state_dir.join("sqlite_key_value.db"));
                    Arc::new(SqliteStore::open(&path, &label)?)
                }
                KeyValueStoreConfig::Redis { url } => Arc::new(RedisStore::new(&url)?),
            };
            stores.insert(label, store);
        }
        Ok(Self { stores })
    }

    /// An application whose stores are given directly (used by tests).
    pub fn from_stores(stores: HashMap<String, Arc<dyn Store>>) -> Self {
        Self { stores }
    }

    /// The per-instance state for a component allowed to open `allowed`.
    pub fn instance(self: &Arc<Self>, allowed: Arc<HashSet<String>>) -> KeyValueInstance {
        KeyValueInstance {
            app: self.clone(),
            allowed,
            table: ResourceTable::new(),
            open: 0,
            faults: ComponentFaults::none(),
            span: CurrentSpan::default(),
        }
    }
}

/// An open store handle, as the guest holds it.
pub struct OpenStore(Arc<dyn Store>);

/// Per-instance state.
pub struct KeyValueInstance {
    app: Arc<KeyValueApp>,
    allowed: Arc<HashSet<String>>,
    table: ResourceTable,
    open: usize,
    faults: ComponentFaults,
    /// The span the instance works under (injected faults are marked on it).
    span: CurrentSpan,
}

/// Most stores a single instance may hold open at once.
const MAX_OPEN_STORES: usize = 256;

impl KeyValueInstance {
    /// Opens the store `label`, if the component lists it and it exists.
    pub fn open(&mut self, label: &str) -> wasmtime::Result<Result<Resource<OpenStore>, WitError>> {
        if !self.allowed.contains(label) {
            return Ok(Err(WitError::AccessDenied));
        }
        let Some(store) = self.app.stores.get(label).cloned() else {
            return Ok(Err(WitError::NoSuchStore));
        };
        if self.open >= MAX_OPEN_STORES {
            return Ok(Err(WitError::StoreTableFull));
        }
        let handle = self.table.push(OpenStore(store))?;
        self.open += 1;
        Ok(Ok(handle))
    }

    /// The same instance, its calls subject to `faults` (marked on `span`).
    pub fn with_faults(self, faults: ComponentFaults, span: CurrentSpan) -> Self {
        Self {
            faults,
            span,
            ..self
        }
    }

    fn store(&self, handle: &Resource<OpenStore>) -> wasmtime::Result<Arc<dyn Store>> {
        Ok(self.table.get(handle)?.0.clone())
    }
}

fn other(err: StoreError) -> WitError {
    tracing::warn!(error = %err, "key-value store error");
    WitError::Other(err.0)
}

struct HasKeyValue;

impl HasData for HasKeyValue {
    type Data<'a> = &'a mut KeyValueInstance;
}

type Acc<'a, T> = &'a Accessor<T, HasKeyValue>;

/// The store behind `handle`, once the component's faults let the call
/// through (an injected failure is an `other` error).
async fn with_store<T>(
    accessor: Acc<'_, T>,
    handle: &Resource<OpenStore>,
) -> wasmtime::Result<Result<Arc<dyn Store>, WitError>> {
    let (store, faults, span) = accessor.with(|mut access| -> wasmtime::Result<_> {
        let state = access.get();
        Ok((
            state.store(handle)?,
            state.faults.clone(),
            state.span.clone(),
        ))
    })?;
    Ok(faults
        .inject(bv_faults::Capability::KeyValue, &span)
        .await
        .map(|()| store)
        .map_err(|e| WitError::Other(e.to_string())))
}

impl<T: Send> key_value::HostStoreWithStore<T> for HasKeyValue {
    async fn open(
        accessor: Acc<'_, T>,
        label: String,
    ) -> wasmtime::Result<Result<Resource<OpenStore>, WitError>> {
        accessor.with(|mut access| access.get().open(&label))
    }

    async fn get(
        accessor: Acc<'_, T>,
        this: Resource<OpenStore>,
        key: String,
    ) -> wasmtime::Result<Result<Option<Vec<u8>>, WitError>> {
        let store = match with_store(accessor, &this).await? {
            Ok(store) => store,
            Err(e) => return Ok(Err(e)),
        };
        Ok(store.get(&key).await.map_err(other))
    }

    async fn set(
        accessor: Acc<'_, T>,
        this: Resource<OpenStore>,
        key: String,
        value: Vec<u8>,
    ) -> wasmtime::Result<Result<(), WitError>> {
        let store = match with_store(accessor, &this).await? {
            Ok(store) => store,
            Err(e) => return Ok(Err(e)),
        };
        Ok(store.set(&key, &value).await.map_err(other))
    }

    async fn delete(
        accessor: Acc<'_, T>,
        this: Resource<OpenStore>,
        key: String,
    ) -> wasmtime::Result<Result<(), WitError>> {
        let store = match with_store(accessor, &this).await? {
            Ok(store) => store,
            Err(e) => return Ok(Err(e)),
        };
        Ok(store.delete(&key).await.map_err(other))
    }

    async fn exists(
        accessor: Acc<'_, T>,
        this: Resource<OpenStore>,
        key: String,
    ) -> wasmtime::Result<Result<bool, WitError>> {
        let store = match with_store(accessor, &this).await? {
            Ok(store) => store,
            Err(e) => return Ok(Err(e)),
        };
        Ok(store.exists(&key).await.map_err(other))
    }

    async fn get_keys(
        accessor: Acc<'_, T>,
        this: Resource<OpenStore>,
    ) -> wasmtime::Result<(
        wasmtime::component::StreamReader<String>,
        wasmtime::component::FutureReader<Result<(), WitError>>,
    )> {
        let (keys, result) = match with_store(accessor, &this).await? {
            Ok(store) => match store.keys().await {
                Ok(keys) => (keys, Ok(())),
                Err(e) => (Vec::new(), Err(other(e))),
            },
            Err(e) => (Vec::new(), Err(e)),
        };
        accessor.with(|mut access| {
            let stream = wasmtime::component::StreamReader::new(&mut access, keys)?;
            let future = wasmtime::component::FutureReader::new(&mut access, async move {
                Ok::<_, wasmtime::Error>(result)
            })?;
            Ok((stream, future))
        })
    }

    fn drop(
        mut access: wasmtime::component::Access<'_, T, Self>,
        this: Resource<OpenStore>,
    ) -> wasmtime::Result<()> {
        let state = access.get();
        state.table.delete(this)?;
        state.open -= 1;
        Ok(())
    }
}

impl key_value::HostStore for KeyValueInstance {}
impl key_value::Host for KeyValueInstance {}

/// The `spin:key-value` capability.
#[derive(Default)]
pub struct KeyValueCapability;

impl bv_capability::Capability for KeyValueCapability {
    type AppState = Arc<KeyValueApp>;
    /// The store labels the component lists.
    type ComponentState = Arc<HashSet<String>>;
    type InstanceState = KeyValueInstance;

    fn init(&self, ctx: &bv_capability::AppContext<'_>) -> anyhow::Result<Self::AppState> {
        Ok(Arc::new(KeyValueApp::new(
            ctx.app,
            ctx.runtime_config,
            ctx.state_dir,
        )?))
    }

    fn prepare(
        &self,
        _: &Self::AppState,
        ctx: &bv_capability::ComponentContext<'_>,
    ) -> anyhow::Result<Self::ComponentState> {
        Ok(Arc::new(
            ctx.component.key_value_stores.iter().cloned().collect(),
        ))
    }

    fn instance(
        &self,
        app: &Self::AppState,
        component: &Self::ComponentState,
        ctx: &bv_capability::InstanceContext<'_>,
    ) -> Self::InstanceState {
        app.instance(component.clone())
            .with_faults(ctx.faults.clone(), ctx.span.clone())
    }

    fn add_to_linker<T: Send + 'static>(
        linker: &mut Linker<T>,
        get: fn(&mut T) -> &mut Self::InstanceState,
    ) -> anyhow::Result<()> {
        key_value::add_to_linker::<T, HasKeyValue>(linker, get)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bv_capability::testing::TestApp;

    const MANIFEST: &str = r#"
        [component.web]
        source = "web.wasm"
        key_value_stores = ["default", "carts"]
        [component.other]
        source = "other.wasm"
        key_value_stores = ["default"]
    "#;

    fn test_app() -> TestApp {
        let app = TestApp::with_tables(MANIFEST).unwrap();
        let carts = app.state_dir().join("carts.db");
        app.with_runtime_config(&format!(
            "[key_value_store.carts]\ntype = \"spin\"\npath = {:?}\n",
            carts.display().to_string()
        ))
        .unwrap()
    }

    #[tokio::test]
    async fn a_component_opens_only_the_stores_it_lists() {
        let app = test_app();
        let mut web = app.prepare(KeyValueCapability, "web").unwrap().instance();
        let mut other = app.prepare(KeyValueCapability, "other").unwrap().instance();
        assert!(web.open("default").unwrap().is_ok());
        assert!(web.open("carts").unwrap().is_ok());
        assert!(matches!(
            other.open("carts").unwrap(),
            Err(WitError::AccessDenied)
        ));
        assert!(matches!(
            web.open("missing").unwrap(),
            Err(WitError::AccessDenied)
        ));
    }

    #[tokio::test]
    async fn stores_are_shared_by_instances_and_kept_apart_by_label() {
        let app = test_app();
        let prepared = app.prepare(KeyValueCapability, "web").unwrap();
        let mut first = prepared.instance();
        let handle = first.open("carts").unwrap().unwrap();
        first.store(&handle).unwrap().set("k", b"v").await.unwrap();

        let mut second = prepared.instance();
        let carts = second.open("carts").unwrap().unwrap();
        let default = second.open("default").unwrap().unwrap();
        let carts = second.store(&carts).unwrap();
        let default = second.store(&default).unwrap();
        assert_eq!(carts.get("k").await.unwrap(), Some(b"v".to_vec()));
        assert_eq!(default.get("k").await.unwrap(), None);
        assert!(app.state_dir().join("carts.db").exists());
        assert!(app.state_dir().join("sqlite_key_value.db").exists());
    }

    #[tokio::test]
    async fn an_instance_holds_a_bounded_number_of_open_stores() {
        let app = test_app();
        let mut web = app.prepare(KeyValueCapability, "web").unwrap().instance();
        for _ in 0..MAX_OPEN_STORES {
            web.open("default").unwrap().unwrap();
        }
        assert!(matches!(
            web.open("default").unwrap(),
            Err(WitError::StoreTableFull)
        ));
    }
}
