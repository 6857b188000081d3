use crate::capabilities::CapabilityInstances;
use wasmtime::component::ResourceTable;
use wasmtime::StoreLimits;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

/// Everything one component instance owns: the WASI context, the HTTP
/// context, each capability's per-instance state, and its limits.
/// Dropped with the store, so nothing outlives the instance.
pub struct InstanceState {
    /// Resources shared by WASI and wasi:http.
    pub table: ResourceTable,
    /// WASI CLI, clocks, random, filesystem, sockets.
    pub wasi: WasiCtx,
    /// wasi:http settings.
    pub http: WasiHttpCtx,
    /// Each capability's per-instance state (outbound HTTP's is the hooks
    /// `wasi:http` calls).
    pub capabilities: CapabilityInstances,
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
            hooks: &mut self.capabilities.outbound_http,
        }
    }
}
