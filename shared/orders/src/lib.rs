//! What the `order` component and the `order-sweeper` share: the tables,
//! the order's states, loading and moving orders (with their events),
//! the calls to the services a saga holds resources in, and the checkout
//! saga's steps with the pure classification of their answers. The
//! inventory's calls go over HTTP or gRPC ([`inventory_grpc`]).
#![deny(missing_docs)]

pub mod inventory_grpc;
pub mod model;
pub mod saga;
pub mod schema;
pub mod services;
pub mod store;
