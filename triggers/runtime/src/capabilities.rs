//! The capabilities `bv` provides, listed once.
//!
//! [`capabilities!`] turns the list into the types the runtime iterates
//! over: [`Capabilities`] (each capability's configuration),
//! [`CapabilityStates`] (their per-application state),
//! `ComponentStates` (per component) and [`CapabilityInstances`] (per
//! instance, a field of [`InstanceState`](crate::InstanceState)). Adding a
//! capability is a crate implementing [`Capability`] and one line in the
//! list below.

use anyhow::Context as _;
use bv_capability::{AppContext, Capability, ComponentContext, InstanceContext};
use wasmtime::component::Linker;

use crate::InstanceState;

macro_rules! capabilities {
    ($($(#[doc = $doc:literal])* $field:ident: $ty:ty,)*) => {
        /// Every capability's configuration (which I/O it uses, its
        /// timeouts). Tests replace a field to swap a capability's I/O.
        #[derive(Default)]
        pub struct Capabilities {
            $($(#[doc = $doc])* pub $field: $ty,)*
        }

        /// Every capability's per-application state.
        pub struct CapabilityStates {
            $($(#[doc = $doc])* pub $field: <$ty as Capability>::AppState,)*
        }

        /// Every capability's per-component state.
        pub(crate) struct ComponentStates {
            $($field: <$ty as Capability>::ComponentState,)*
        }

        /// Every capability's per-instance state.
        pub struct CapabilityInstances {
            $($(#[doc = $doc])* pub $field: <$ty as Capability>::InstanceState,)*
        }

        impl Capabilities {
            pub(crate) fn init(&self, ctx: &AppContext<'_>) -> anyhow::Result<CapabilityStates> {
                Ok(CapabilityStates {
                    $($field: self.$field.init(ctx)?,)*
                })
            }

            pub(crate) fn prepare(
                &self,
                states: &CapabilityStates,
                ctx: &ComponentContext<'_>,
            ) -> anyhow::Result<ComponentStates> {
                Ok(ComponentStates {
                    $($field: self.$field.prepare(&states.$field, ctx)
                        .context(concat!("preparing ", stringify!($field)))?,)*
                })
            }

            pub(crate) fn instance(
                &self,
                states: &CapabilityStates,
                component: &ComponentStates,
                ctx: &InstanceContext<'_>,
            ) -> CapabilityInstances {
                CapabilityInstances {
                    $($field: self.$field.instance(&states.$field, &component.$field, ctx),)*
                }
            }

            /// Adds every capability's imports to `linker`.
            pub fn add_to_linker(linker: &mut Linker<InstanceState>) -> anyhow::Result<()> {
                $(<$ty as Capability>::add_to_linker(linker, |s| &mut s.capabilities.$field)?;)*
                Ok(())
            }
        }
    };
}

capabilities! {
    /// `spin:variables`.
    variables: bv_factor_variables::VariablesCapability,
    /// Outbound `wasi:http` and service chaining.
    outbound_http: bv_factor_outbound_http::OutboundHttpCapability,
    /// `spin:key-value`.
    key_value: bv_factor_key_value::KeyValueCapability,
    /// `spin:postgres` (outbound).
    postgres: bv_factor_outbound_pg::OutboundPgCapability,
    /// `spin:redis` (outbound).
    redis: bv_factor_outbound_redis::OutboundRedisCapability,
    /// `spin:mqtt` (outbound).
    mqtt: bv_factor_outbound_mqtt::OutboundMqttCapability,
    /// `bitvelocity:smtp` (outbound email; beyond Spin).
    smtp: bv_factor_outbound_smtp::OutboundSmtpCapability,
    /// `spin:sqlite`.
    sqlite: bv_factor_sqlite::SqliteCapability,
}
