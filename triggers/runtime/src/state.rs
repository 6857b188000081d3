use bv_factor_key_value::KeyValueInstance;
use bv_factor_outbound_http::OutboundHttp;
use bv_factor_outbound_mqtt::MqttInstance;
use bv_factor_outbound_pg::PostgresInstance;
use bv_factor_outbound_redis::RedisInstance;
use bv_factor_sqlite::SqliteInstance;
use bv_factor_variables::VariablesInstance;
use wasmtime::component::ResourceTable;
use wasmtime::StoreLimits;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

/// Everything one component instance owns: the WASI context, the HTTP
/// context and hooks, each capability's per-instance state, and its limits.
/// Dropped with the store, so nothing outlives the instance.
pub struct InstanceState {
    /// Resources shared by WASI and wasi:http.
    pub table: ResourceTable,
    /// WASI CLI, clocks, random, filesystem, sockets.
    pub wasi: WasiCtx,
    /// wasi:http settings.
    pub http: WasiHttpCtx,
    /// Outbound HTTP policy and service chaining.
    pub outbound_http: OutboundHttp,
    /// spin:variables.
    pub variables: VariablesInstance,
    /// spin:key-value.
    pub key_value: KeyValueInstance,
    /// spin:postgres (outbound).
    pub postgres: PostgresInstance,
    /// spin:redis (outbound).
    pub redis: RedisInstance,
    /// spin:sqlite.
    pub sqlite: SqliteInstance,
    /// spin:mqtt (outbound).
    pub mqtt: MqttInstance,
    /// Memory and instance limits.
    pub limits: StoreLimits,
    /// The span the instance is working under (set by the trigger).
    pub span: bv_telemetry::CurrentSpan,
}

impl WasiView for InstanceState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for InstanceState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.outbound_http,
        }
    }
}
