//! The shape every trigger has, so `bv up` starts and stops them all in one
//! loop: a [`TriggerKind`] names a `[[trigger.<type>]]` table and builds the
//! trigger from the loaded application (checking its entries, so a bad table
//! stops start-up before anything listens); the built [`Trigger`] lists what
//! it serves, prepares, runs until told to stop and then drains.
//!
//! Adding a trigger is a crate that exports one `TriggerKind`, one line in
//! `bv`'s list of kinds and one in its table of what runs where (a test
//! checks the two agree).

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::AppRuntime;

/// How the drain at shutdown ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Drained {
    /// Everything in flight finished.
    Complete,
    /// The drain timeout passed; this many connections (or deliveries) were
    /// cut unfinished.
    Cut(usize),
}

/// One line of the start-up listing: what a trigger serves, for whom.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listed {
    /// The component that handles it.
    pub component: String,
    /// What it is: `http://127.0.0.1:3000/api/...`, `redis channel orders`…
    pub what: String,
}

impl Listed {
    /// A listing line for `component`.
    pub fn new(component: impl Into<String>, what: impl Into<String>) -> Self {
        Self {
            component: component.into(),
            what: what.into(),
        }
    }
}

/// A built trigger, ready to run.
#[async_trait::async_trait]
pub trait Trigger: Send + Sync + 'static {
    /// The manifest's trigger type (`http`, `redis`, …).
    fn kind(&self) -> &'static str;

    /// What it serves, printed at start-up.
    fn listing(&self) -> Vec<Listed>;

    /// Work that must be done before any trigger serves (creating schemas a
    /// producer may write to at once). Nothing by default.
    async fn prepare(&self) {}

    /// Serves until `stop` is cancelled, then drains; an error (or a return
    /// before `stop`) stops the whole application.
    async fn run(self: Box<Self>, stop: CancellationToken) -> anyhow::Result<Drained>;
}

/// A trigger type `bv` can run: its `[[trigger.<name>]]` and how to build
/// it from the loaded application.
#[derive(Clone, Copy)]
pub struct TriggerKind {
    /// The trigger type, as in `[[trigger.<name>]]`.
    pub name: &'static str,
    /// Builds the trigger from every `[[trigger.<name>]]` entry of the
    /// application, or says which field is wrong.
    pub build: fn(Arc<AppRuntime>) -> anyhow::Result<Box<dyn Trigger>>,
}

impl std::fmt::Debug for TriggerKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TriggerKind")
            .field("name", &self.name)
            .finish()
    }
}
