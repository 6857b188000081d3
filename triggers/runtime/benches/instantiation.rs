//! Instantiation cost of a component under `bv`'s engine configuration:
//! `AppRuntime::new_store` plus instantiating the pre-instantiated component,
//! the work a strict-policy request pays before the guest runs, and with the
//! store's drop, which returns the pooling slot (what it pays after).
//!
//! `cargo bench -p bv-runtime --bench instantiation [-- path/to/component.wasm]`
//! (default: `components/target/wasm32-wasip2/release/hello.wasm`).

use std::path::PathBuf;
use std::time::{Duration, Instant};

fn main() -> anyhow::Result<()> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let wasm = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("components/target/wasm32-wasip2/release/hello.wasm"));
    let dir = tempfile::tempdir()?;
    let manifest = dir.path().join("spin.toml");
    std::fs::write(
        &manifest,
        format!(
            "spin_manifest_version = 2\n[application]\nname = \"bench\"\n[[trigger.http]]\nroute = \"/...\"\ncomponent = \"c\"\n[component.c]\nsource = \"{}\"\n",
            wasm.canonicalize()?.display()
        ),
    )?;
    let app = bv_manifest::load(&manifest)?;
    let runtime = bv_runtime::AppRuntime::load(
        app,
        &bv_manifest::RuntimeConfig::default(),
        &bv_runtime::RuntimeOptions::default(),
    )?;
    let component = runtime.component("c").unwrap().clone();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;

    let iterations = 5000;
    let mut store_times = Vec::with_capacity(iterations);
    let mut total_times = Vec::with_capacity(iterations);
    let mut cycle_times = Vec::with_capacity(iterations);
    rt.block_on(async {
        for i in 0..iterations + 500 {
            let start = Instant::now();
            let mut store = runtime.new_store(&component)?;
            let after_store = start.elapsed();
            let _instance = component.pre.instantiate_async(&mut store).await?;
            let total = start.elapsed();
            drop(store);
            let cycle = start.elapsed();
            if i >= 500 {
                store_times.push(after_store);
                total_times.push(total);
                cycle_times.push(cycle);
            }
        }
        anyhow::Ok(())
    })?;
    report("new_store", &mut store_times);
    report("new_store + instantiate", &mut total_times);
    report("... + drop (slot reset)", &mut cycle_times);
    Ok(())
}

fn report(what: &str, times: &mut [Duration]) {
    times.sort();
    let at = |q: f64| times[((times.len() as f64 - 1.0) * q) as usize];
    println!(
        "{what:<26} n={} median={:?} p90={:?} p99={:?}",
        times.len(),
        at(0.5),
        at(0.9),
        at(0.99)
    );
}
