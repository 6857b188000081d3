//! Write an MQTT trigger handler as one async function.
//!
//! A component for the MQTT trigger exports `handle-message` from the
//! `spin:mqtt-trigger@3.0.0` world `spin-mqtt` (the spin-trigger-mqtt
//! plugin's interface, which `bv`'s MQTT trigger calls). This crate holds
//! the bindings; [`mqtt_handler!`] names the function that implements the
//! export:
//!
//! ```ignore
//! use bv_mqtt_trigger::Metadata;
//!
//! async fn on_message(payload: Vec<u8>, metadata: Metadata) -> anyhow::Result<()> {
//!     println!("{}: {} bytes", metadata.topic, payload.len());
//!     Ok(())
//! }
//!
//! bv_mqtt_trigger::mqtt_handler!(on_message);
//! ```
//!
//! (`ignore` only because the export exists for wasm32 components; the
//! test component `components/testing/mqtt-handler` is this example, built
//! with the other components.)
//!
//! An `Err` becomes the WIT `error::other` with the error's text (its whole
//! chain); the trigger then logs and counts it and does not acknowledge
//! the message. The handler may use any other Spin API (spin-sdk 7), which
//! shares this crate's wit-bindgen runtime.
#![deny(missing_docs)]

// The generated code names the runtime through this crate's own path, so
// that components need no direct wit-bindgen dependency.
extern crate self as bv_mqtt_trigger;

#[doc(hidden)]
pub use wit_bindgen as __wit_bindgen;

#[doc(hidden)]
pub mod __bindings {
    #![allow(missing_docs)]
    wit_bindgen::generate!({
        world: "spin:mqtt-trigger/spin-mqtt@3.0.0",
        path: "../../wit/deps/spin-mqtt-trigger@3.0.0",
        runtime_path: "::bv_mqtt_trigger::__wit_bindgen::rt",
        pub_export_macro: true,
        export_macro_name: "__export_spin_mqtt",
        default_bindings_module: "::bv_mqtt_trigger::__bindings",
    });
}

pub use __bindings::spin::mqtt_trigger::spin_mqtt_types::{Error, Metadata, Payload};

/// Exports `handle-message`, implemented by the async function `$handler`
/// with the signature
/// `async fn(Vec<u8>, bv_mqtt_trigger::Metadata) -> anyhow::Result<()>`.
/// Use it once per component, at the crate root or in any module.
#[macro_export]
macro_rules! mqtt_handler {
    ($handler:path) => {
        #[doc(hidden)]
        pub struct __BvMqttHandler;

        impl $crate::__bindings::Guest for __BvMqttHandler {
            async fn handle_message(
                message: $crate::Payload,
                metadata: $crate::Metadata,
            ) -> ::std::result::Result<(), $crate::Error> {
                $handler(message, metadata)
                    .await
                    .map_err(|e: $crate::__anyhow::Error| $crate::Error::Other(format!("{e:#}")))
            }
        }

        $crate::__bindings::__export_spin_mqtt!(__BvMqttHandler with_types_in $crate::__bindings);
    };
}

#[doc(hidden)]
pub use anyhow as __anyhow;
