//! gRPC in components, built on tonic and spin-sdk's `grpc` feature.
//!
//! - [`inventory`]: the inventory service's contract
//!   (`proto/inventory.proto`): its messages, tonic's `inventory_server`
//!   (served by the `inventory` component) and `inventory_client` (the
//!   order saga's), and its descriptor set.
//! - [`status`]: the platform's problems (RFC 9457 over HTTP) as gRPC
//!   statuses and back, so a caller learns the same kind over either
//!   protocol.
//! - [`channel`]: a tonic channel over Spin's outbound HTTP, so a component
//!   calls `http://inventory.spin.internal` with tonic's generated client.
//! - [`reflection`]: gRPC server reflection (v1 and v1alpha), so `grpcurl`
//!   and other reflection clients list and call a component's services.
#![deny(missing_docs)]

pub use tonic::Code;

pub mod channel;
pub mod reflection;
pub mod status;

/// The inventory service (`proto/inventory.proto`), generated.
#[allow(missing_docs, clippy::all)]
pub mod inventory {
    tonic::include_proto!("bitvelocity.inventory.v1");

    /// The encoded `FileDescriptorSet` of `inventory.proto`, for server
    /// reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/inventory_descriptor.bin"));

    /// The service's full name, as gRPC paths and reflection name it.
    pub const SERVICE: &str = "bitvelocity.inventory.v1.Inventory";
}

/// Whether a request is a gRPC call (`content-type: application/grpc`,
/// with or without a `+proto` / `+json` suffix).
pub fn is_grpc(headers: &http::HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == "application/grpc" || v.starts_with("application/grpc+"))
}
