//! Runs a capability's lifecycle against an inline manifest, for the unit
//! tests of capability crates.
//!
//! ```
//! use bv_capability::testing::TestApp;
//!
//! let app = TestApp::new(
//!     r#"
//!     spin_manifest_version = 2
//!     [application]
//!     name = "t"
//!     [component.web]
//!     source = "web.wasm"
//!     allowed_outbound_hosts = ["redis://127.0.0.1:6379"]
//!     "#,
//! )
//! .unwrap();
//! assert!(app.app().components.contains_key("web"));
//! ```

use std::sync::Arc;

use anyhow::Context as _;
use bv_manifest::{App, RuntimeConfig};
use bv_outbound_networking::AllowedHosts;
use bv_telemetry::CurrentSpan;

use crate::{AppContext, Capability, ComponentContext, InstanceContext};

/// An application parsed from manifest text, with its own state directory.
pub struct TestApp {
    app: App,
    runtime_config: RuntimeConfig,
    state_dir: tempfile::TempDir,
}

impl TestApp {
    /// Parses `manifest` (sources need not exist) with a default runtime
    /// config.
    pub fn new(manifest: &str) -> anyhow::Result<Self> {
        let state_dir = tempfile::tempdir()?;
        let app = bv_manifest::parse(manifest, &state_dir.path().join("spin.toml"))?;
        Ok(Self {
            app,
            runtime_config: RuntimeConfig::default(),
            state_dir,
        })
    }

    /// An application named `test` with `tables` (`[component.<id>]`,
    /// `[variables]`, …) after its header.
    pub fn with_tables(tables: &str) -> anyhow::Result<Self> {
        Self::new(&format!(
            "spin_manifest_version = 2\n[application]\nname = \"test\"\n{tables}"
        ))
    }

    /// Uses `runtime_config` (TOML text of a runtime config file).
    pub fn with_runtime_config(mut self, runtime_config: &str) -> anyhow::Result<Self> {
        self.runtime_config = bv_manifest::parse_runtime_config(
            runtime_config,
            &self.state_dir.path().join("runtime-config.toml"),
        )?;
        Ok(self)
    }

    /// The parsed manifest.
    pub fn app(&self) -> &App {
        &self.app
    }

    /// The state directory (removed when the test app is dropped).
    pub fn state_dir(&self) -> &std::path::Path {
        self.state_dir.path()
    }

    /// Runs `capability`'s `init`, then `prepare` for `component`, and
    /// returns what it takes to make instances of it.
    pub fn prepare<C: Capability>(
        &self,
        capability: C,
        component: &str,
    ) -> anyhow::Result<Prepared<C>> {
        let app_state = capability.init(&AppContext {
            app: &self.app,
            runtime_config: &self.runtime_config,
            state_dir: self.state_dir.path(),
        })?;
        let entry = self
            .app
            .components
            .get(component)
            .with_context(|| format!("no component `{component}` in the test manifest"))?;
        let id: Arc<str> = Arc::from(component);
        let allowed_hosts = Arc::new(AllowedHosts::parse(&entry.allowed_outbound_hosts)?);
        let component_state = capability.prepare(
            &app_state,
            &ComponentContext {
                id: &id,
                component: entry,
                allowed_hosts: &allowed_hosts,
            },
        )?;
        Ok(Prepared {
            capability,
            app_state,
            component_state,
            id,
            allowed_hosts,
        })
    }
}

/// A capability initialised for a test app and prepared for one component.
pub struct Prepared<C: Capability> {
    capability: C,
    /// The per-application state.
    pub app_state: C::AppState,
    /// The component's state.
    pub component_state: C::ComponentState,
    id: Arc<str>,
    allowed_hosts: Arc<AllowedHosts>,
}

impl<C: Capability> Prepared<C> {
    /// A new instance's state.
    pub fn instance(&self) -> C::InstanceState {
        self.capability.instance(
            &self.app_state,
            &self.component_state,
            &InstanceContext {
                id: &self.id,
                allowed_hosts: &self.allowed_hosts,
                span: &CurrentSpan::default(),
                faults: &crate::ComponentFaults::none(),
            },
        )
    }
}
