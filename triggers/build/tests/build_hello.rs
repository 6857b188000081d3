//! Builds `components/hello` through `bv_build::build` on whichever toolchain
//! route this machine supports (installing the Debian one if needed), the way
//! `bv build` does.

use std::path::Path;
use std::time::Instant;

#[test]
fn builds_the_hello_component() {
    // `cargo test` may run with a CARGO_TARGET_DIR meant for the host crates;
    // `build` must not pass it on: the component lands in its own workspace's
    // target dir, where manifests expect it.
    let components = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../components")
        .canonicalize()
        .unwrap();
    let steps = [bv_build::BuildStep {
        component_id: "hello".into(),
        // The same command spin.toml uses, so this test and `bv build` share
        // build outputs instead of relinking each other's.
        command: "cargo build --target wasm32-wasip2 --release --workspace".into(),
        workdir: components.clone(),
    }];
    let mut progress = |msg: &str| eprintln!("{msg}");
    let toolchain = bv_build::detect_toolchain().unwrap();
    eprintln!("toolchain route: {toolchain:?}");
    bv_build::ensure_toolchain(toolchain, &mut progress).unwrap();

    let started = Instant::now();
    bv_build::build(&steps, toolchain, &mut progress).unwrap();
    eprintln!("built in {:?}", started.elapsed());

    let wasm = components.join("target/wasm32-wasip2/release/hello.wasm");
    let modified = std::fs::metadata(&wasm).unwrap().modified().unwrap();

    // Idempotent: building again with nothing changed leaves the output as it is.
    bv_build::build(&steps, toolchain, &mut progress).unwrap();
    assert_eq!(
        std::fs::metadata(&wasm).unwrap().modified().unwrap(),
        modified,
        "a rebuild with nothing changed rewrote {}",
        wasm.display()
    );

    let bytes = std::fs::read(&wasm).unwrap_or_else(|e| panic!("{}: {e}", wasm.display()));
    // A component (not a core module): `\0asm`, version 0x0d, layer 1.
    assert_eq!(
        bytes[..8],
        *b"\0asm\x0d\x00\x01\x00",
        "{} is not a component",
        wasm.display()
    );
    let export = b"wasi:http/handler@0.3.0";
    assert!(
        bytes.windows(export.len()).any(|w| w == export),
        "{} does not mention {}",
        wasm.display(),
        String::from_utf8_lossy(export)
    );
}
