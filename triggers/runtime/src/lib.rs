//! The `bv` engine, shared by every trigger.
//!
//! [`AppRuntime::load`] turns a parsed manifest into ready-to-run components:
//! it configures one wasmtime [`Engine`](wasmtime::Engine) (pooling allocator,
//! component-model-async, epoch interruption), compiles each component once
//! (or loads it from the on-disk [`cache`]), links every capability and
//! pre-instantiates it. Triggers then ask for a fresh
//! [`Store`](wasmtime::Store) per instance with [`AppRuntime::new_store`].
//!
//! Capabilities are separate crates (`bv-factor-*`), each implementing
//! [`bv_capability::Capability`]; [`capabilities`] lists them once, and
//! `load`, `new_store` and [`link`] iterate over that list. Adding one means
//! a crate and a line there.

pub mod cache;
pub mod capabilities;
mod engine;
mod files;
mod guest_output;
mod state;
pub mod trigger;
mod trigger_kind;

pub use capabilities::{Capabilities, CapabilityInstances, CapabilityStates};
pub use engine::{engine_config, EngineLimits};
pub use state::InstanceState;
pub use trigger_kind::{Drained, Listed, Trigger, TriggerKind};

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use bv_capability::{AppContext, ComponentContext, InstanceContext};
use bv_factor_outbound_http::LocalService;
use bv_factor_variables::{VariablesApp, VariablesCapability};
use bv_manifest::{App, BvSettings, RuntimeConfig};
use bv_outbound_networking::AllowedHosts;
use wasmtime::component::{Component, InstancePre, Linker};
use wasmtime::{Engine, Store, StoreLimitsBuilder};
use wasmtime_wasi::WasiCtxBuilder;

/// Options that come from the command line rather than the manifest.
#[derive(Clone, Debug, Default)]
pub struct RuntimeOptions {
    /// Where the runtime keeps its state (key-value data, compiled code);
    /// defaults to `.spin/` next to the manifest.
    pub state_dir: Option<PathBuf>,
    /// Overrides `[application.tool.bv] instance_policy` for every component.
    pub instance_policy: Option<bv_manifest::InstancePolicy>,
    /// Extra variable providers consulted before the environment (tests).
    pub extra_variables: Vec<(String, String)>,
    /// Where compiled code is cached (default: `<state_dir>/cache`); several
    /// applications may share one.
    pub cache_dir: Option<PathBuf>,
}

/// One component, compiled, linked and pre-instantiated.
pub struct ComponentRuntime {
    /// The component id from the manifest.
    pub id: Arc<str>,
    /// The pre-instantiated component.
    pub pre: InstancePre<InstanceState>,
    /// Its effective limits and instance policy.
    pub settings: BvSettings,
    allowed_hosts: Arc<AllowedHosts>,
    capabilities: capabilities::ComponentStates,
    environment: Vec<(String, String)>,
    mounts: files::Mounts,
    faults: bv_faults::ComponentFaults,
}

/// A loaded application.
pub struct AppRuntime {
    engine: Engine,
    app: App,
    components: HashMap<String, Arc<ComponentRuntime>>,
    capabilities: Capabilities,
    capability_states: CapabilityStates,
    state_dir: PathBuf,
    metrics: std::sync::Mutex<prometheus_client::registry::Registry>,
    /// What components report with metric lines (see [`guest_output`]).
    app_metrics: Arc<guest_output::AppMetrics>,
    /// The faults switched on (a chaos file, the admin API).
    faults: Arc<bv_faults::Faults>,
    /// Held while an instance is made (see [`AppRuntime::instantiate_alone`]).
    instantiating: tokio::sync::Mutex<()>,
}

impl AppRuntime {
    /// Loads `app`: resolves variables (a missing required one is an error),
    /// opens the key-value stores, compiles or loads from cache every
    /// component, and pre-instantiates them.
    pub fn load(
        mut app: App,
        runtime_config: &RuntimeConfig,
        options: &RuntimeOptions,
    ) -> anyhow::Result<Self> {
        app.validate_runtime_config(runtime_config)?;
        app.check_sources()?;
        if let Some(policy) = options.instance_policy {
            app.bv.instance_policy = policy;
        }
        let state_dir = options
            .state_dir
            .clone()
            .unwrap_or_else(|| app.base_dir.join(".spin"));
        std::fs::create_dir_all(&state_dir)
            .with_context(|| format!("creating state directory {}", state_dir.display()))?;

        let capabilities = Capabilities {
            variables: VariablesCapability::with_overrides(options.extra_variables.clone()),
            ..Capabilities::default()
        };
        let capability_states = capabilities.init(&AppContext {
            app: &app,
            runtime_config,
            state_dir: &state_dir,
        })?;
        let variables: &VariablesApp = &capability_states.variables;

        let settings: HashMap<&str, BvSettings> = app
            .components
            .iter()
            .map(|(id, c)| (id.as_str(), c.bv.resolve(&app.bv)))
            .collect();
        let limits = EngineLimits {
            max_memory_bytes: settings
                .values()
                .map(|s| s.memory_limit_mb)
                .max()
                .unwrap_or(app.bv.memory_limit_mb)
                * 1024
                * 1024,
        };
        let engine = Engine::new(&engine_config(&limits)?)?;
        let mut linker = Linker::new(&engine);
        link(&mut linker)?;

        let cache = cache::CompiledCache::new(
            options
                .cache_dir
                .clone()
                .unwrap_or_else(|| state_dir.join("cache")),
        );

        let mut components = HashMap::new();
        let faults = bv_faults::Faults::new(app.components.keys().cloned());
        for (id, component) in &app.components {
            let (compiled, outcome) = cache
                .load_with_outcome(&engine, &component.source)
                .with_context(|| format!("component `{id}` ({})", component.source.display()))?;
            tracing::info!(component = %id, "compiled code: {}", match outcome {
                cache::CacheOutcome::Hit => "loaded from cache",
                cache::CacheOutcome::Miss => "compiled and cached",
            });
            let pre = linker
                .instantiate_pre(&compiled)
                .map_err(anyhow::Error::from)
                .with_context(|| {
                    format!("component `{id}` imports something bv does not provide")
                })?;
            let rendered: Vec<String> = component
                .allowed_outbound_hosts
                .iter()
                .map(|entry| render_host_template(entry, variables))
                .collect::<anyhow::Result<_>>()
                .with_context(|| format!("component.{id}.allowed_outbound_hosts"))?;
            let allowed_hosts = Arc::new(
                AllowedHosts::parse(&rendered)
                    .with_context(|| format!("component.{id}.allowed_outbound_hosts"))?,
            );
            let component_id: Arc<str> = Arc::from(id.as_str());
            let prepared = capabilities
                .prepare(
                    &capability_states,
                    &ComponentContext {
                        id: &component_id,
                        component,
                        allowed_hosts: &allowed_hosts,
                    },
                )
                .with_context(|| format!("component `{id}`"))?;
            let mounts = files::prepare(
                &app.base_dir,
                &state_dir,
                id,
                &component.files,
                &component.exclude_files,
            )
            .with_context(|| format!("component.{id}.files"))?;
            components.insert(
                id.clone(),
                Arc::new(ComponentRuntime {
                    faults: faults.for_component(&component_id),
                    id: component_id,
                    pre,
                    settings: settings[id.as_str()].clone(),
                    allowed_hosts,
                    capabilities: prepared,
                    environment: component
                        .environment
                        .iter()
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect(),
                    mounts,
                }),
            );
        }

        let app_metrics = Arc::new(guest_output::AppMetrics::default());
        let mut registry = prometheus_client::registry::Registry::with_prefix("bv");
        registry.register_collector(Box::new(app_metrics.clone()));
        faults.register(&mut registry);
        Ok(Self {
            engine,
            app,
            components,
            capabilities,
            capability_states,
            state_dir,
            metrics: std::sync::Mutex::new(registry),
            app_metrics,
            faults,
            instantiating: tokio::sync::Mutex::new(()),
        })
    }

    /// Registers metrics in the application's registry (every trigger adds
    /// its own; the admin `/metrics` serves them all).
    pub fn register_metrics<R>(
        &self,
        register: impl FnOnce(&mut prometheus_client::registry::Registry) -> R,
    ) -> R {
        register(&mut self.metrics.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Every registered metric, in the OpenMetrics text format.
    pub fn encode_metrics(&self) -> String {
        let mut out = String::new();
        let registry = self.metrics.lock().unwrap_or_else(|p| p.into_inner());
        prometheus_client::encoding::text::encode(&mut out, &registry)
            .expect("writing to a String cannot fail");
        out
    }

    /// The faults switched on: a chaos file loads into it at start-up, the
    /// admin API changes it live.
    pub fn faults(&self) -> &Arc<bv_faults::Faults> {
        &self.faults
    }

    /// The engine every component runs on.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The manifest this runtime was loaded from.
    pub fn app(&self) -> &App {
        &self.app
    }

    /// Where state (key-value data, compiled code) lives.
    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    /// The resolved value of the application variable `name` (for triggers
    /// whose settings are `{{ variable }}` templates, such as the Redis
    /// trigger's address).
    pub fn app_variable(&self, name: &str) -> Option<String> {
        let value = self.capability_states.variables.app_value(name)?;
        Some(value.expose().to_string())
    }

    /// A loaded component by id.
    pub fn component(&self, id: &str) -> Option<&Arc<ComponentRuntime>> {
        self.components.get(id)
    }

    /// Registers the handler for `http://<component>.spin.internal` requests
    /// (the HTTP trigger does this once it is built).
    pub fn set_local_service(&self, service: Arc<dyn LocalService>) {
        self.capability_states
            .outbound_http
            .set_local_service(service);
    }

    /// Every capability's per-application state (a trigger that publishes,
    /// such as the Postgres trigger's fan-out, shares their connections).
    pub fn capabilities(&self) -> &CapabilityStates {
        &self.capability_states
    }

    /// Runs `instantiate` (an `instantiate_async`) while no other instance
    /// of this application is being made. The pooling allocator's slots
    /// are shared by every component and trigger, and a component instance
    /// takes several core instances: instantiations running at the same
    /// time each held part of the slots, so under a burst larger than the
    /// pool every one of them could fail. One at a time, the pool fills
    /// with whole instances and only the rest are refused.
    pub async fn instantiate_alone<F: std::future::Future>(&self, instantiate: F) -> F::Output {
        let _one_at_a_time = self.instantiating.lock().await;
        instantiate.await
    }

    /// A new store for one instance of `component`, with every capability's
    /// per-instance state and the component's memory limit and epoch deadline
    /// (`deadline_ticks` epochs, after which the guest yields so the trigger
    /// can enforce its timeout).
    pub fn new_store(&self, component: &ComponentRuntime) -> anyhow::Result<Store<InstanceState>> {
        let span = bv_telemetry::CurrentSpan::default();
        let output = guest_output::OutputTarget::new(
            component.id.clone(),
            component.settings.log_level,
            span.clone(),
            self.app_metrics.clone(),
        );
        let mut wasi = WasiCtxBuilder::new();
        wasi.envs(&component.environment)
            .stdout(output.stream(guest_output::Stream::Stdout))
            .stderr(output.stream(guest_output::Stream::Stderr));
        if let Some(dir) = &component.mounts.root {
            wasi.preopened_dir(dir, "/", wasmtime_wasi::FsPerms::ReadOnly)?;
        }
        for (host, guest) in &component.mounts.dirs {
            wasi.preopened_dir(host, guest, wasmtime_wasi::FsPerms::ReadOnly)?;
        }
        let limits = StoreLimitsBuilder::new()
            .memory_size(component.settings.memory_limit_mb as usize * 1024 * 1024)
            .instances(64)
            .trap_on_grow_failure(false)
            .build();
        let capabilities = self.capabilities.instance(
            &self.capability_states,
            &component.capabilities,
            &InstanceContext {
                id: &component.id,
                allowed_hosts: &component.allowed_hosts,
                span: &span,
                faults: &component.faults,
            },
        );
        let state = InstanceState {
            table: Default::default(),
            wasi: wasi.build(),
            http: Default::default(),
            capabilities,
            limits,
            span,
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limits);
        // The guest yields to the host every epoch tick; the trigger's
        // request timeout then decides, outside the guest, when it is over.
        store.epoch_deadline_async_yield_and_update(1);
        Ok(store)
    }
}

/// How often the epoch advances: the granularity of request timeouts.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Starts the thread that advances `engine`'s epoch every [`EPOCH_TICK`]; it
/// stops when the returned guard is dropped.
pub fn start_epoch_ticker(engine: &Engine) -> EpochTicker {
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let engine = engine.clone();
    let flag = stop.clone();
    let handle = std::thread::Builder::new()
        .name("bv-epoch".into())
        .spawn(move || {
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                std::thread::sleep(EPOCH_TICK);
                engine.increment_epoch();
            }
        })
        .expect("spawning the epoch thread");
    EpochTicker {
        stop,
        handle: Some(handle),
    }
}

/// Guard for the epoch thread.
pub struct EpochTicker {
    stop: Arc<std::sync::atomic::AtomicBool>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

fn render_host_template(entry: &str, variables: &VariablesApp) -> anyhow::Result<String> {
    let template = bv_manifest::Template::parse(entry)?;
    Ok(template.render(|name| variables.app_value(name).map(|v| v.expose().to_string()))?)
}

/// Adds every interface `bv` provides to `linker`: WASI P2 and P3 (CLI,
/// clocks, random, filesystem, sockets), `wasi:http` P2 and P3, and the Spin
/// capabilities.
pub fn link(linker: &mut Linker<InstanceState>) -> anyhow::Result<()> {
    wasmtime_wasi::p2::add_to_linker_async(linker)?;
    wasmtime_wasi::p3::add_to_linker(linker)?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(linker)?;
    wasmtime_wasi_http::p3::add_to_linker(linker)?;
    Capabilities::add_to_linker(linker)
}

/// Compiles `wasm` for `engine` without the cache (used by benchmarks that
/// measure compilation itself).
pub fn compile(engine: &Engine, wasm: &[u8]) -> anyhow::Result<Component> {
    Ok(Component::from_binary(engine, wasm)?)
}
