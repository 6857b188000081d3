//! Fault injection at the component boundary.
//!
//! `bv` can make the capability calls of a chosen component (Postgres,
//! Redis, key-value, MQTT, outbound HTTP, service chaining, SQLite) fail,
//! slow down or hang, for a share of the calls and for a time, without any
//! change to the component: each capability asks its instance's
//! [`ComponentFaults`] before it does the real I/O. Faults come from a chaos
//! file at start-up ([`Faults::load_file`]) and are switched live through
//! the admin API ([`admin`]). Every hit call is logged (target
//! `bv::faults`), counted (`bv_faults_injected_total{component,capability,
//! effect}`) and marked on the trace (an event on the span the instance
//! works under).
//!
//! This goes beyond Spin, which has no fault injection.
//!
//! ```
//! use bv_faults::{Capability, Faults};
//!
//! let faults = Faults::new(["product".to_string()]);
//! faults
//!     .load_str(
//!         r#"
//!         [[fault]]
//!         component = "product"
//!         capability = "postgres"
//!         effect = "fail"
//!         share = 0.5
//!         duration_s = 60
//!         "#,
//!     )
//!     .unwrap();
//! assert_eq!(faults.list()[0].spec.capability, Capability::Postgres);
//! ```

pub mod admin;
mod spec;

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Instant;

use bv_telemetry::CurrentSpan;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};

pub use spec::{Capability, Effect, EffectKind, Fault, FaultSpec, SpecError, MAX_DELAY_MS};

/// The faults switched on in one application, and their counters.
pub struct Faults {
    /// The application's component ids, which a fault may name.
    components: Vec<String>,
    /// Replaced whole on every change; readers clone the `Arc`.
    faults: RwLock<Arc<Vec<Arc<Fault>>>>,
    /// Whether any fault is switched on: the one check a call pays when
    /// none is.
    active: AtomicBool,
    next_id: AtomicU64,
    /// State of the generator that picks the share of calls hit.
    random: AtomicU64,
    injected: Family<InjectedLabels, Counter>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct InjectedLabels {
    component: String,
    capability: &'static str,
    effect: &'static str,
}

/// A fault as listed: what was asked, its id, how long it has left and the
/// calls it hit.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FaultStatus {
    /// Its id (for `DELETE /faults/{id}`).
    pub id: u64,
    /// As written.
    #[serde(flatten)]
    pub spec: FaultSpec,
    /// Seconds until it ends (`None`: until removed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remaining_s: Option<f64>,
    /// Calls hit so far.
    pub injected: u64,
}

/// Why a chaos file was refused.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// It could not be read.
    #[error("reading the chaos file: {0}")]
    Read(#[from] std::io::Error),
    /// It is not TOML of the expected shape.
    #[error("the chaos file is not valid: {0}")]
    Toml(#[from] toml::de::Error),
    /// A fault in it is refused.
    #[error("fault {index} of the chaos file: {error}")]
    Fault {
        /// 1-based position of the `[[fault]]` table.
        index: usize,
        /// Why.
        error: SpecError,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ChaosFile {
    #[serde(default)]
    fault: Vec<FaultSpec>,
}

impl Faults {
    /// No fault switched on, for an application of `components`.
    pub fn new(components: impl IntoIterator<Item = String>) -> Arc<Self> {
        Arc::new(Self {
            components: components.into_iter().collect(),
            faults: RwLock::default(),
            active: AtomicBool::new(false),
            next_id: AtomicU64::new(1),
            random: AtomicU64::new(seed()),
            injected: Family::default(),
        })
    }

    /// The handle `component`'s instances ask.
    pub fn for_component(self: &Arc<Self>, component: &Arc<str>) -> ComponentFaults {
        ComponentFaults {
            faults: Some(self.clone()),
            component: component.clone(),
        }
    }

    /// Registers `faults_injected` (with the registry's prefix,
    /// `bv_faults_injected_total`).
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "faults_injected",
            "Capability calls hit by an injected fault",
            self.injected.clone(),
        );
    }

    /// Switches on the faults of the chaos file at `path` (TOML, one
    /// `[[fault]]` table per fault); all or none.
    pub fn load_file(&self, path: &Path) -> Result<Vec<u64>, FileError> {
        self.load_str(&std::fs::read_to_string(path)?)
    }

    /// As [`Faults::load_file`], from the file's text.
    pub fn load_str(&self, text: &str) -> Result<Vec<u64>, FileError> {
        let file: ChaosFile = toml::from_str(text)?;
        self.add(file.fault)
            .map_err(|(index, error)| FileError::Fault {
                index: index + 1,
                error,
            })
    }

    /// Switches on `specs` besides the faults already on, all or none (the
    /// error names the 0-based index of the first refused spec). Returns
    /// their ids.
    pub fn add(&self, specs: Vec<FaultSpec>) -> Result<Vec<u64>, (usize, SpecError)> {
        self.change(specs, false)
    }

    /// Replaces every fault with `specs`, all or none.
    pub fn replace(&self, specs: Vec<FaultSpec>) -> Result<Vec<u64>, (usize, SpecError)> {
        self.change(specs, true)
    }

    fn change(&self, specs: Vec<FaultSpec>, replace: bool) -> Result<Vec<u64>, (usize, SpecError)> {
        let now = Instant::now();
        let parsed = specs
            .into_iter()
            .enumerate()
            .map(|(i, spec)| Fault::parse(0, spec, &self.components, now).map_err(|e| (i, e)))
            .collect::<Result<Vec<_>, _>>()?;
        let mut current = self.faults.write().unwrap_or_else(|p| p.into_inner());
        let mut next: Vec<Arc<Fault>> = if replace {
            Vec::new()
        } else {
            current.iter().filter(|f| !f.ended(now)).cloned().collect()
        };
        let mut ids = Vec::with_capacity(parsed.len());
        for mut fault in parsed {
            fault.id = self.next_id.fetch_add(1, Ordering::Relaxed);
            ids.push(fault.id);
            tracing::warn!(
                target: "bv::faults",
                fault_id = fault.id,
                component = %fault.spec.component,
                capability = fault.spec.capability.as_str(),
                effect = fault.spec.effect.as_str(),
                share = fault.spec.share,
                "fault switched on"
            );
            next.push(Arc::new(fault));
        }
        self.store(&mut current, next);
        Ok(ids)
    }

    /// Switches off the fault `id`; `false` when there is none.
    pub fn remove(&self, id: u64) -> bool {
        let mut current = self.faults.write().unwrap_or_else(|p| p.into_inner());
        if !current.iter().any(|f| f.id == id) {
            return false;
        }
        let next = current.iter().filter(|f| f.id != id).cloned().collect();
        self.store(&mut current, next);
        tracing::warn!(target: "bv::faults", fault_id = id, "fault switched off");
        true
    }

    /// Switches every fault off.
    pub fn clear(&self) {
        let mut current = self.faults.write().unwrap_or_else(|p| p.into_inner());
        self.store(&mut current, Vec::new());
        tracing::warn!(target: "bv::faults", "every fault switched off");
    }

    fn store(&self, current: &mut Arc<Vec<Arc<Fault>>>, next: Vec<Arc<Fault>>) {
        self.active.store(!next.is_empty(), Ordering::Release);
        *current = Arc::new(next);
    }

    /// The faults switched on and not yet ended.
    pub fn list(&self) -> Vec<FaultStatus> {
        let now = Instant::now();
        self.snapshot()
            .iter()
            .filter(|f| !f.ended(now))
            .map(|f| FaultStatus {
                id: f.id,
                spec: f.spec.clone(),
                remaining_s: f
                    .until
                    .map(|until| until.saturating_duration_since(now).as_secs_f64()),
                injected: f.injected.load(Ordering::Relaxed),
            })
            .collect()
    }

    fn snapshot(&self) -> Arc<Vec<Arc<Fault>>> {
        self.faults
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// A number in `[0, 1)` (splitmix64 over a shared counter: uniform
    /// enough to pick a share of calls, and lock-free).
    fn uniform(&self) -> f64 {
        let mut z = self
            .random
            .fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed)
            .wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn seed() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// A capability call refused by an injected fault; each capability turns it
/// into its own error (a Postgres `connection-failed`, an HTTP
/// `connection-refused`, …).
#[derive(Debug, Clone, thiserror::Error)]
#[error("injected fault {id}: the {capability} call failed (bv fault injection)")]
pub struct Injected {
    /// The fault's id.
    pub id: u64,
    /// `postgres`, `redis`, …
    pub capability: &'static str,
}

/// What one component's instances ask before each capability call.
#[derive(Clone)]
pub struct ComponentFaults {
    faults: Option<Arc<Faults>>,
    component: Arc<str>,
}

impl std::fmt::Debug for ComponentFaults {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ComponentFaults({})", self.component)
    }
}

impl ComponentFaults {
    /// A handle that never injects anything (capabilities' unit tests).
    pub fn none() -> Self {
        Self {
            faults: None,
            component: Arc::from(""),
        }
    }

    /// Applies the faults that hit this component's calls to `capability`:
    /// waits for a `delay`, never returns for a `hang`, and is an error for
    /// a `fail`. Each hit is logged and marked on `span`'s current span.
    /// Nothing but one atomic load when no fault is on.
    pub async fn inject(&self, capability: Capability, span: &CurrentSpan) -> Result<(), Injected> {
        let Some(faults) = &self.faults else {
            return Ok(());
        };
        if !faults.active.load(Ordering::Acquire) {
            return Ok(());
        }
        let now = Instant::now();
        for fault in faults.snapshot().iter() {
            if !fault.applies(&self.component, capability, now)
                || (fault.spec.share < 1.0 && faults.uniform() >= fault.spec.share)
            {
                continue;
            }
            fault.injected.fetch_add(1, Ordering::Relaxed);
            let effect = fault.spec.effect.as_str();
            faults
                .injected
                .get_or_create(&InjectedLabels {
                    component: self.component.to_string(),
                    capability: capability.as_str(),
                    effect,
                })
                .inc();
            tracing::warn!(
                target: "bv::faults",
                parent: &span.get(),
                fault_id = fault.id,
                fault_effect = effect,
                component = %self.component,
                capability = capability.as_str(),
                "fault injected"
            );
            match fault.effect {
                Effect::Fail => {
                    return Err(Injected {
                        id: fault.id,
                        capability: capability.as_str(),
                    })
                }
                Effect::Delay(d) => tokio::time::sleep(d).await,
                Effect::Hang => std::future::pending::<()>().await,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn faults() -> Arc<Faults> {
        Faults::new(["product".to_string(), "cart".to_string()])
    }

    fn spec(component: &str, effect: EffectKind) -> FaultSpec {
        FaultSpec {
            component: component.into(),
            capability: Capability::Postgres,
            effect,
            delay_ms: None,
            share: 1.0,
            duration_s: None,
        }
    }

    #[tokio::test]
    async fn a_fail_fault_fails_only_its_components_calls_and_is_counted() {
        let faults = faults();
        let product = faults.for_component(&Arc::from("product"));
        let cart = faults.for_component(&Arc::from("cart"));
        let span = CurrentSpan::default();
        assert!(product.inject(Capability::Postgres, &span).await.is_ok());

        let ids = faults.add(vec![spec("product", EffectKind::Fail)]).unwrap();
        let err = product
            .inject(Capability::Postgres, &span)
            .await
            .unwrap_err();
        assert_eq!(err.id, ids[0]);
        assert!(product.inject(Capability::Redis, &span).await.is_ok());
        assert!(cart.inject(Capability::Postgres, &span).await.is_ok());
        assert_eq!(faults.list()[0].injected, 1);

        let mut registry = Registry::with_prefix("bv");
        faults.register(&mut registry);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(
            text.contains(
                r#"bv_faults_injected_total{component="product",capability="postgres",effect="fail"} 1"#
            ),
            "{text}"
        );

        assert!(faults.remove(ids[0]));
        assert!(!faults.remove(ids[0]));
        assert!(product.inject(Capability::Postgres, &span).await.is_ok());
    }

    #[tokio::test]
    async fn a_share_hits_about_that_share_of_calls() {
        let faults = faults();
        let mut half = spec("*", EffectKind::Fail);
        half.share = 0.3;
        faults.add(vec![half]).unwrap();
        let cart = faults.for_component(&Arc::from("cart"));
        let span = CurrentSpan::default();
        let mut failed = 0;
        for _ in 0..10_000 {
            if cart.inject(Capability::Postgres, &span).await.is_err() {
                failed += 1;
            }
        }
        assert!((2_700..3_300).contains(&failed), "{failed} of 10,000");
    }

    #[tokio::test(start_paused = true)]
    async fn delays_wait_and_hangs_never_answer() {
        let faults = faults();
        let mut delay = spec("product", EffectKind::Delay);
        delay.delay_ms = Some(250);
        faults.replace(vec![delay]).unwrap();
        let product = faults.for_component(&Arc::from("product"));
        let span = CurrentSpan::default();
        let start = tokio::time::Instant::now();
        product.inject(Capability::Postgres, &span).await.unwrap();
        assert_eq!(start.elapsed(), Duration::from_millis(250));

        faults
            .replace(vec![spec("product", EffectKind::Hang)])
            .unwrap();
        let hung = tokio::time::timeout(
            Duration::from_secs(3600),
            product.inject(Capability::Postgres, &span),
        )
        .await;
        assert!(hung.is_err(), "a hang never answers");
    }

    #[test]
    fn a_bad_fault_changes_nothing() {
        let faults = faults();
        faults.add(vec![spec("product", EffectKind::Fail)]).unwrap();
        let err = faults
            .replace(vec![
                spec("cart", EffectKind::Fail),
                spec("nope", EffectKind::Fail),
            ])
            .unwrap_err();
        assert_eq!(err, (1, SpecError::UnknownComponent("nope".into())));
        let listed = faults.list();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].spec.component, "product");

        let err = faults
            .load_str(
                "[[fault]]\ncomponent = \"cart\"\ncapability = \"postgres\"\neffect = \"delay\"\n",
            )
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "fault 1 of the chaos file: effect `delay` needs `delay_ms`"
        );
        let err = faults
            .load_str("[[fault]]\ncomponent = \"cart\"\ncapability = \"pg\"\neffect = \"fail\"\n")
            .unwrap_err();
        assert!(err.to_string().contains("unknown variant `pg`"), "{err}");
        assert_eq!(faults.list().len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_fault_with_a_duration_ends_by_itself() {
        let faults = faults();
        let mut brief = spec("product", EffectKind::Fail);
        brief.duration_s = Some(2);
        faults.add(vec![brief]).unwrap();
        let product = faults.for_component(&Arc::from("product"));
        let span = CurrentSpan::default();
        assert!(product.inject(Capability::Postgres, &span).await.is_err());
        assert!(faults.list()[0].remaining_s.unwrap() <= 2.0);
        // `Instant` is the std clock, which pausing tokio does not move.
        std::thread::sleep(Duration::from_millis(2_050));
        assert!(product.inject(Capability::Postgres, &span).await.is_ok());
        assert!(faults.list().is_empty());
    }
}
