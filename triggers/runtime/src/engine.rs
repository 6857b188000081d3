use wasmtime::{Config, InstanceAllocationStrategy, OptLevel, PoolingAllocationConfig};

/// Engine-wide limits derived from the manifest.
#[derive(Clone, Debug)]
pub struct EngineLimits {
    /// The largest linear memory any component may grow to; each component's
    /// own (possibly smaller) cap is applied per store.
    pub max_memory_bytes: u64,
}

/// Instances (and memories, tables, stacks) the pooling allocator keeps slots
/// for. Each in-flight instance holds one slot.
const POOL_INSTANCES: u32 = 1000;

/// The engine configuration `bv` runs every component with.
///
/// The pooling allocator makes instantiation a matter of reusing a warm slot
/// (copy-on-write memory images, no mmap per instance), which is what makes a
/// fresh instance per request affordable.
pub fn engine_config(limits: &EngineLimits) -> anyhow::Result<Config> {
    let mut config = Config::new();
    config
        .wasm_component_model(true)
        .wasm_component_model_async(true)
        .concurrency_support(true)
        .epoch_interruption(true)
        .cranelift_opt_level(OptLevel::Speed)
        .parallel_compilation(true);

    let mut pool = PoolingAllocationConfig::default();
    pool.total_component_instances(POOL_INSTANCES)
        .total_core_instances(POOL_INSTANCES * 4)
        .total_memories(POOL_INSTANCES * 2)
        .total_tables(POOL_INSTANCES * 4)
        .total_stacks(POOL_INSTANCES)
        .max_memory_size(usize::try_from(limits.max_memory_bytes)?)
        .max_unused_warm_slots(100)
        // Linear memory is handed back to the kernel on reuse: keeping even
        // 1 MiB resident made its memset the hottest symbol of strict mode
        // (see benches/instantiation.rs). Tables and async stacks are small
        // enough to reset in place.
        .table_keep_resident(64 << 10)
        .async_stack_keep_resident(64 << 10);
    config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    Ok(config)
}
