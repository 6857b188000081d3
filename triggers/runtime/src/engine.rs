use wasmtime::{
    Config, InstanceAllocationStrategy, OptLevel, PoolingAllocationConfig, ProfilingStrategy,
};

/// Engine-wide limits derived from the manifest.
#[derive(Clone, Debug)]
pub struct EngineLimits {
    /// The largest linear memory any component may grow to; each component's
    /// own (possibly smaller) cap is applied per store.
    pub max_memory_bytes: u64,
}

/// Instances (and memories, tables, stacks) the pooling allocator keeps slots
/// for by default. Each in-flight instance holds one slot.
const POOL_INSTANCES: u32 = 1000;

/// The environment variable that sets the number of pool slots instead.
///
/// Every memory slot reserves (not commits) about 4 GiB of address space so
/// that compiled code needs no bounds checks; where address space itself is
/// limited (`ulimit -v`, or `valgrind`, which offers a process well under
/// 64 GiB) the default pool cannot be reserved, and a smaller one can.
const POOL_INSTANCES_ENV: &str = "BV_POOL_INSTANCES";

fn pool_instances() -> anyhow::Result<u32> {
    match std::env::var(POOL_INSTANCES_ENV) {
        Err(std::env::VarError::NotPresent) => Ok(POOL_INSTANCES),
        Err(e) => anyhow::bail!("{POOL_INSTANCES_ENV}: {e}"),
        Ok(v) => match v.trim().parse::<u32>() {
            Ok(n) if n > 0 => Ok(n),
            _ => anyhow::bail!(
                "{POOL_INSTANCES_ENV} must be a whole number of instances above 0, not `{v}`"
            ),
        },
    }
}

/// The environment variable that makes compiled guest code visible to a
/// profiler: `perfmap` writes `/tmp/perf-<pid>.map`, so `perf record` and
/// `perf report` name the guest's functions instead of bare addresses.
const PROFILE_ENV: &str = "BV_PROFILE";

fn profiling_strategy() -> anyhow::Result<ProfilingStrategy> {
    match std::env::var(PROFILE_ENV) {
        Err(std::env::VarError::NotPresent) => Ok(ProfilingStrategy::None),
        Err(e) => anyhow::bail!("{PROFILE_ENV}: {e}"),
        Ok(v) => match v.trim() {
            "" | "none" => Ok(ProfilingStrategy::None),
            "perfmap" => Ok(ProfilingStrategy::PerfMap),
            _ => anyhow::bail!("{PROFILE_ENV} must be `perfmap` or `none`, not `{v}`"),
        },
    }
}

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

    config.profiler(profiling_strategy()?);

    let instances = pool_instances()?;
    let mut pool = PoolingAllocationConfig::default();
    pool.total_component_instances(instances)
        .total_core_instances(instances.saturating_mul(4))
        .total_memories(instances.saturating_mul(2))
        .total_tables(instances.saturating_mul(4))
        .total_stacks(instances)
        .max_memory_size(usize::try_from(limits.max_memory_bytes)?)
        .max_unused_warm_slots(instances.min(100))
        // Linear memory is handed back to the kernel on reuse: keeping even
        // 1 MiB resident made its memset the hottest symbol of strict mode
        // (see benches/instantiation.rs). Tables and async stacks are small
        // enough to reset in place.
        .table_keep_resident(64 << 10)
        .async_stack_keep_resident(64 << 10);
    config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    Ok(config)
}
