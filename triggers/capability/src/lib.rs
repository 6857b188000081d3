//! The lifecycle every `bv` capability shares (what Spin calls a factor).
//!
//! A capability is one host interface a component may import
//! (`spin:postgres`, `spin:key-value`, …). Each lives in its own crate and
//! implements [`Capability`], which splits its state by lifetime:
//!
//! - [`Capability::init`]: per-application state, built once from the
//!   manifest and the runtime config (connection pools, store locations);
//! - [`Capability::prepare`]: per-component state, built once at load from
//!   the component's manifest entry (the stores it lists, its variables);
//! - [`Capability::instance`]: per-instance state, built for every store and
//!   dropped with it (open resources, the span the instance works under);
//! - [`Capability::add_to_linker`]: the imports, bound to the instance state.
//!
//! The runtime lists its capabilities once (`bv_runtime::capabilities!`)
//! and iterates over them when it loads an application, makes a store and
//! links; a capability's real I/O sits behind a small trait of its own crate
//! so that its unit tests run it against [`testing::TestApp`] without a
//! server.

use std::path::Path;
use std::sync::Arc;

pub use bv_faults::{self, ComponentFaults};
use bv_manifest::{App, Component, RuntimeConfig};
use bv_outbound_networking::AllowedHosts;
use bv_telemetry::CurrentSpan;
use wasmtime::component::Linker;

pub mod testing;

/// What [`Capability::init`] sees: the whole application.
pub struct AppContext<'a> {
    /// The parsed manifest.
    pub app: &'a App,
    /// The runtime config (`--runtime-config-file`), or its defaults.
    pub runtime_config: &'a RuntimeConfig,
    /// Where the runtime keeps state (key-value and SQLite files).
    pub state_dir: &'a Path,
}

/// What [`Capability::prepare`] sees: one component, at load.
pub struct ComponentContext<'a> {
    /// The component's id.
    pub id: &'a Arc<str>,
    /// Its manifest entry.
    pub component: &'a Component,
    /// Its `allowed_outbound_hosts`, templates rendered and parsed.
    pub allowed_hosts: &'a Arc<AllowedHosts>,
}

/// What [`Capability::instance`] sees: one instance about to start.
pub struct InstanceContext<'a> {
    /// The component's id.
    pub id: &'a Arc<str>,
    /// Its `allowed_outbound_hosts`.
    pub allowed_hosts: &'a Arc<AllowedHosts>,
    /// The span the instance will work under (the trigger sets it); client
    /// spans of outbound calls are its children.
    pub span: &'a CurrentSpan,
    /// The faults switched on for this component: a capability asks before
    /// each call's real I/O (see [`bv_faults`]).
    pub faults: &'a ComponentFaults,
}

/// One host capability's lifecycle. The value is the capability's
/// configuration (which I/O it uses, its timeouts); tests swap it.
pub trait Capability: Send + Sync + 'static {
    /// Shared by every instance of every component of the application.
    type AppState: Send + Sync + 'static;
    /// Shared by every instance of one component (`()` when there is
    /// nothing per component).
    type ComponentState: Default + Send + Sync + 'static;
    /// Owned by one instance; dropped with its store.
    type InstanceState: Send + 'static;

    /// Builds the per-application state. An error stops start-up, so bad
    /// configuration is reported before anything is served.
    fn init(&self, ctx: &AppContext<'_>) -> anyhow::Result<Self::AppState>;

    /// Builds the per-component state (by default, nothing).
    fn prepare(
        &self,
        app: &Self::AppState,
        ctx: &ComponentContext<'_>,
    ) -> anyhow::Result<Self::ComponentState> {
        let _ = (app, ctx);
        Ok(Self::ComponentState::default())
    }

    /// Builds the state of one new instance (cheap: called per request).
    fn instance(
        &self,
        app: &Self::AppState,
        component: &Self::ComponentState,
        ctx: &InstanceContext<'_>,
    ) -> Self::InstanceState;

    /// Adds the capability's imports to `linker`; `get` finds the instance
    /// state in the store's data.
    fn add_to_linker<T: Send + 'static>(
        linker: &mut Linker<T>,
        get: fn(&mut T) -> &mut Self::InstanceState,
    ) -> anyhow::Result<()>;
}
