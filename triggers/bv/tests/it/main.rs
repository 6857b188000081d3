//! Integration tests of `bv up`: each test starts its own `bv` process on its
//! own ports and state directory, serving the probe component built from
//! `components/testing/probe`.

mod harness;

mod analytics;
mod api_fuzz;
mod auth;
mod auth_bulkhead;
mod auth_support;
mod capabilities;
mod chaos;
mod chaos_support;
mod commerce_cart;
mod commerce_inventory;
mod commerce_order;
mod commerce_payment;
mod commerce_product;
mod component_logs;
mod cron;
mod events;
mod events_cli;
mod faults;
mod hardening;
mod host_interfaces;
mod lifecycle;
mod login_guard;
mod manifest_errors;
mod mqtt;
mod observability;
mod openapi;
mod otlp_support;
mod pg_support;
mod postgres;
mod rate_limit;
mod redis;
mod repo_manifest;
mod requests;
mod routing;
mod shutdown;
mod spin_compat;
mod sqlite;
mod suite_secrets;
mod tracing;
mod tracing_events;
mod walkthrough;
