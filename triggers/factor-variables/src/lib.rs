//! `spin:variables@3.0.0` for `bv`, and the same values through
//! `wasi:config/store` (as Spin offers them).
//!
//! Variables are resolved once, when the application starts: every
//! application variable gets its value from the first provider that knows it
//! (environment `SPIN_VARIABLE_*` first, then the manifest default), and every
//! component's `{{ }}` templates are rendered against those values. A missing
//! required variable therefore stops start-up instead of failing a request
//! later, and a guest's `get` is a map lookup.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::Arc;

use bv_manifest::App;
use wasmtime::component::{HasData, Linker};

mod bindings {
    wasmtime::component::bindgen!({
        path: "../../wit",
        world: "bitvelocity:host/variables-host",
        imports: {
            "spin:variables/variables.get": store | trappable,
            default: trappable,
        },
    });
}

use bindings::spin::variables::variables;
use bindings::wasi::config::store as config_store;

/// A source of variable values other than the manifest's defaults.
///
/// Providers are consulted in order; the first one that knows a name wins.
pub trait Provider: Send + Sync {
    /// The value for the application variable `name`, if this provider has one.
    fn get(&self, name: &str) -> Option<String>;
}

/// Reads `SPIN_VARIABLE_<NAME>` (upper-cased) from the process environment, as
/// `spin up` does.
pub struct EnvProvider {
    prefix: String,
    lookup: Box<Lookup>,
}

type Lookup = dyn Fn(&str) -> Option<String> + Send + Sync;

impl EnvProvider {
    /// The provider `spin up` uses: prefix `SPIN_VARIABLE`, the real environment.
    pub fn spin_default() -> Self {
        Self::with_lookup("SPIN_VARIABLE", |key| std::env::var(key).ok())
    }

    /// A provider reading through `lookup` instead of the process environment,
    /// so tests need not mutate global state.
    pub fn with_lookup(
        prefix: &str,
        lookup: impl Fn(&str) -> Option<String> + Send + Sync + 'static,
    ) -> Self {
        Self {
            prefix: prefix.to_string(),
            lookup: Box::new(lookup),
        }
    }
}

impl Provider for EnvProvider {
    fn get(&self, name: &str) -> Option<String> {
        (self.lookup)(&format!("{}_{}", self.prefix, name.to_ascii_uppercase()))
    }
}

/// Errors that stop an application from starting.
#[derive(Debug, thiserror::Error)]
pub enum VariablesError {
    /// A required variable has no value from any provider.
    #[error(
        "variable `{name}` is required but has no value: set SPIN_VARIABLE_{upper} or give it a default in spin.toml",
        upper = name.to_ascii_uppercase()
    )]
    MissingRequired {
        /// The application variable.
        name: String,
    },
    /// A component template could not be rendered.
    #[error("component `{component}` variable `{variable}`: {message}")]
    Template {
        /// The component id.
        component: String,
        /// The component variable.
        variable: String,
        /// Why rendering failed.
        message: String,
    },
}

/// A resolved value that remembers whether it is secret, so that it can never
/// end up in a log through `Debug`.
#[derive(Clone)]
pub struct Value {
    value: String,
    secret: bool,
}

impl Value {
    /// The value itself.
    pub fn expose(&self) -> &str {
        &self.value
    }

    /// Whether any secret variable contributed to this value.
    pub fn is_secret(&self) -> bool {
        self.secret
    }
}

impl fmt::Debug for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.secret {
            f.write_str("<redacted>")
        } else {
            fmt::Debug::fmt(&self.value, f)
        }
    }
}

/// Per-application state: the resolved variables of every component.
#[derive(Debug, Default)]
pub struct VariablesApp {
    app_values: BTreeMap<String, Value>,
    components: HashMap<String, Arc<ComponentVariables>>,
}

/// The variables one component may read.
#[derive(Debug, Default)]
pub struct ComponentVariables {
    values: HashMap<String, Value>,
}

impl ComponentVariables {
    /// The value of a component variable, if the component declares it.
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.values.get(name)
    }
}

impl VariablesApp {
    /// Resolves every application variable and renders every component's
    /// templates.
    pub fn resolve(app: &App, providers: &[Box<dyn Provider>]) -> Result<Self, VariablesError> {
        let mut app_values = BTreeMap::new();
        for (name, var) in &app.variables {
            let value = providers
                .iter()
                .find_map(|p| p.get(name))
                .or_else(|| var.default.clone());
            match value {
                Some(value) => {
                    app_values.insert(
                        name.clone(),
                        Value {
                            value,
                            secret: var.secret,
                        },
                    );
                }
                None if var.required => {
                    return Err(VariablesError::MissingRequired { name: name.clone() })
                }
                None => {}
            }
        }
        let mut components = HashMap::new();
        for (id, component) in &app.components {
            let mut values = HashMap::new();
            for (name, template) in &component.variables {
                let mut secret = false;
                let rendered = template
                    .render(|var| {
                        let value = app_values.get(var)?;
                        secret |= value.secret;
                        Some(value.value.clone())
                    })
                    .map_err(|e| VariablesError::Template {
                        component: id.clone(),
                        variable: name.clone(),
                        message: e.to_string(),
                    })?;
                values.insert(
                    name.clone(),
                    Value {
                        value: rendered,
                        secret,
                    },
                );
            }
            components.insert(id.clone(), Arc::new(ComponentVariables { values }));
        }
        Ok(Self {
            app_values,
            components,
        })
    }

    /// The value of an application variable (used to render templates in
    /// other parts of the manifest, such as `allowed_outbound_hosts`).
    pub fn app_value(&self, name: &str) -> Option<&Value> {
        self.app_values.get(name)
    }

    /// The per-instance state for `component`.
    pub fn instance(&self, component: &str) -> VariablesInstance {
        VariablesInstance {
            vars: self.components.get(component).cloned().unwrap_or_default(),
        }
    }
}

/// Per-instance state: a shared handle on the component's resolved values.
#[derive(Clone, Default)]
pub struct VariablesInstance {
    vars: Arc<ComponentVariables>,
}

impl VariablesInstance {
    fn lookup(&self, name: &str) -> Result<String, variables::Error> {
        if !is_valid_name(name) {
            return Err(variables::Error::InvalidName(format!(
                "invalid variable name `{name}`: use lowercase letters, digits and underscores, starting with a letter"
            )));
        }
        match self.vars.get(name) {
            Some(value) => Ok(value.value.clone()),
            None => Err(variables::Error::Undefined(format!(
                "variable `{name}` is not defined for this component"
            ))),
        }
    }
}

impl variables::Host for VariablesInstance {}

/// `wasi:config/store`: a component's variables by name, synchronously. A
/// name the component does not declare is `none`, as the interface says; a
/// name no variable could have is an error that says so.
impl config_store::Host for VariablesInstance {
    fn get(
        &mut self,
        key: String,
    ) -> wasmtime::Result<Result<Option<String>, config_store::Error>> {
        Ok(match self.lookup(&key) {
            Ok(value) => Ok(Some(value)),
            Err(variables::Error::Undefined(_)) => Ok(None),
            Err(variables::Error::InvalidName(message)) => {
                Err(config_store::Error::Upstream(message))
            }
            Err(other) => Err(config_store::Error::Upstream(format!("{other:?}"))),
        })
    }

    fn get_all(&mut self) -> wasmtime::Result<Result<Vec<(String, String)>, config_store::Error>> {
        let mut all: Vec<(String, String)> = self
            .vars
            .values
            .iter()
            .map(|(name, value)| (name.clone(), value.value.clone()))
            .collect();
        all.sort();
        Ok(Ok(all))
    }
}

impl<T: Send> variables::HostWithStore<T> for HasVariables {
    async fn get(
        accessor: &wasmtime::component::Accessor<T, Self>,
        name: String,
    ) -> wasmtime::Result<Result<String, variables::Error>> {
        Ok(accessor.with(|mut access| access.get().lookup(&name)))
    }
}

fn is_valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

struct HasVariables;

impl HasData for HasVariables {
    type Data<'a> = &'a mut VariablesInstance;
}

/// The `spin:variables` capability: where values come from besides the
/// manifest's defaults.
pub struct VariablesCapability {
    providers: Vec<Box<dyn Provider>>,
}

impl Default for VariablesCapability {
    /// The environment (`SPIN_VARIABLE_*`), as `spin up` reads it.
    fn default() -> Self {
        Self {
            providers: vec![Box::new(EnvProvider::spin_default())],
        }
    }
}

impl VariablesCapability {
    /// Consults `overrides` (name, value) before the environment.
    pub fn with_overrides(overrides: Vec<(String, String)>) -> Self {
        let mut variables = Self::default();
        if !overrides.is_empty() {
            variables
                .providers
                .insert(0, Box::new(MapProvider(overrides.into_iter().collect())));
        }
        variables
    }

    /// Only `providers`, in order (no environment).
    pub fn with_providers(providers: Vec<Box<dyn Provider>>) -> Self {
        Self { providers }
    }
}

struct MapProvider(HashMap<String, String>);

impl Provider for MapProvider {
    fn get(&self, name: &str) -> Option<String> {
        self.0.get(name).cloned()
    }
}

impl bv_capability::Capability for VariablesCapability {
    type AppState = Arc<VariablesApp>;
    type ComponentState = VariablesInstance;
    type InstanceState = VariablesInstance;

    fn init(&self, ctx: &bv_capability::AppContext<'_>) -> anyhow::Result<Self::AppState> {
        Ok(Arc::new(VariablesApp::resolve(ctx.app, &self.providers)?))
    }

    fn prepare(
        &self,
        app: &Self::AppState,
        ctx: &bv_capability::ComponentContext<'_>,
    ) -> anyhow::Result<Self::ComponentState> {
        Ok(app.instance(ctx.id))
    }

    fn instance(
        &self,
        _: &Self::AppState,
        component: &Self::ComponentState,
        _: &bv_capability::InstanceContext<'_>,
    ) -> Self::InstanceState {
        component.clone()
    }

    fn add_to_linker<T: Send + 'static>(
        linker: &mut Linker<T>,
        get: fn(&mut T) -> &mut Self::InstanceState,
    ) -> anyhow::Result<()> {
        variables::add_to_linker::<T, HasVariables>(linker, get)?;
        config_store::add_to_linker::<T, HasVariables>(linker, get)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bv_capability::testing::TestApp;

    const MANIFEST: &str = r#"
        [variables]
        greeting = { default = "hello" }
        token = { required = true, secret = true }
        [component.web]
        source = "web.wasm"
        [component.web.variables]
        message = "{{ greeting }}, {{ token }}"
        plain = "fixed"
    "#;

    fn provider(pairs: &[(&str, &str)]) -> VariablesCapability {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        VariablesCapability::with_providers(vec![Box::new(MapProvider(map))])
    }

    #[test]
    fn a_component_reads_its_templates_rendered_from_providers_and_defaults() {
        let app = TestApp::with_tables(MANIFEST).unwrap();
        let prepared = app
            .prepare(provider(&[("token", "s3cret")]), "web")
            .unwrap();
        let instance = prepared.instance();
        assert_eq!(instance.lookup("message").unwrap(), "hello, s3cret");
        assert_eq!(instance.lookup("plain").unwrap(), "fixed");
        assert!(prepared.app_state.app_value("token").unwrap().secret);
    }

    #[test]
    fn a_provider_wins_over_the_default() {
        let app = TestApp::with_tables(MANIFEST).unwrap();
        let prepared = app
            .prepare(provider(&[("token", "t"), ("greeting", "bonjour")]), "web")
            .unwrap();
        assert_eq!(prepared.instance().lookup("message").unwrap(), "bonjour, t");
    }

    #[test]
    fn a_missing_required_variable_stops_start_up() {
        let app = TestApp::with_tables(MANIFEST).unwrap();
        let err = app.prepare(provider(&[]), "web").err().unwrap();
        assert!(err.to_string().contains("token"), "{err}");
    }

    #[test]
    fn undeclared_and_badly_named_variables_are_told_apart() {
        let app = TestApp::with_tables(MANIFEST).unwrap();
        let instance = app
            .prepare(provider(&[("token", "t")]), "web")
            .unwrap()
            .instance();
        assert!(matches!(
            instance.lookup("greeting"),
            Err(variables::Error::Undefined(_))
        ));
        assert!(matches!(
            instance.lookup("Bad-Name"),
            Err(variables::Error::InvalidName(_))
        ));
    }

    #[test]
    fn wasi_config_reads_the_same_values() {
        let app = TestApp::with_tables(MANIFEST).unwrap();
        let mut instance = app
            .prepare(provider(&[("token", "t")]), "web")
            .unwrap()
            .instance();
        use config_store::Host as _;
        assert_eq!(
            instance.get("message".into()).unwrap().unwrap(),
            Some("hello, t".into())
        );
        assert_eq!(instance.get("greeting".into()).unwrap().unwrap(), None);
        assert!(matches!(
            instance.get("Bad-Name".into()).unwrap(),
            Err(config_store::Error::Upstream(m)) if m.contains("Bad-Name")
        ));
        assert_eq!(
            instance.get_all().unwrap().unwrap(),
            [
                ("message".to_string(), "hello, t".to_string()),
                ("plain".to_string(), "fixed".to_string())
            ]
        );
    }

    #[test]
    fn overrides_come_before_the_environment() {
        let app = TestApp::with_tables(MANIFEST).unwrap();
        let instance = app
            .prepare(
                VariablesCapability::with_overrides(vec![("token".into(), "over".into())]),
                "web",
            )
            .unwrap()
            .instance();
        assert_eq!(instance.lookup("message").unwrap(), "hello, over");
    }
}
