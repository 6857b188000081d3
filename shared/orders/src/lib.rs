//! What the `order` component and the `order-sweeper` share: the tables,
//! the order's states, loading and moving orders (with their events), and
//! the calls to the services a saga holds resources in.
#![deny(missing_docs)]

pub mod model;
pub mod schema;
pub mod services;
pub mod store;
