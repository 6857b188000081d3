//! Compiled code cached on disk, so a restart does not recompile.
//!
//! The key is the SHA-256 of the component's bytes plus the engine's
//! compatibility hash (wasmtime version and every setting that changes
//! generated code), so a changed component or a changed engine never loads
//! stale code.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use sha2::{Digest, Sha256};
use wasmtime::component::Component;
use wasmtime::Engine;

/// A directory of precompiled components.
pub struct CompiledCache {
    dir: PathBuf,
}

/// Whether a load compiled the component or found it in the cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CacheOutcome {
    /// Loaded precompiled code.
    Hit,
    /// Compiled and stored it.
    Miss,
}

impl CompiledCache {
    /// A cache in `dir` (created on first store).
    pub fn new(dir: PathBuf) -> Self {
        Self { dir }
    }

    /// Loads the component at `source`, from the cache when possible.
    pub fn load(&self, engine: &Engine, source: &Path) -> anyhow::Result<Component> {
        Ok(self.load_with_outcome(engine, source)?.0)
    }

    /// Like [`CompiledCache::load`], also telling whether it was a hit.
    pub fn load_with_outcome(
        &self,
        engine: &Engine,
        source: &Path,
    ) -> anyhow::Result<(Component, CacheOutcome)> {
        let wasm =
            std::fs::read(source).with_context(|| format!("reading {}", source.display()))?;
        let path = self.dir.join(format!("{}.cwasm", key(engine, &wasm)));
        if path.exists() {
            // SAFETY: the file was written by `Component::serialize` of an
            // engine with the same compatibility hash (it is in the file
            // name), in a directory only this runtime writes.
            match unsafe { Component::deserialize_file(engine, &path) } {
                Ok(component) => return Ok((component, CacheOutcome::Hit)),
                Err(e) => {
                    tracing::warn!(path = %path.display(), "ignoring unusable cache entry: {e}")
                }
            }
        }
        let component = Component::from_binary(engine, &wasm)?;
        if let Err(e) = self.store(&path, &component) {
            tracing::warn!(path = %path.display(), "could not cache compiled component: {e:#}");
        }
        Ok((component, CacheOutcome::Miss))
    }

    fn store(&self, path: &Path, component: &Component) -> anyhow::Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        let bytes = component.serialize()?;
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        std::fs::write(&tmp, bytes)?;
        std::fs::rename(&tmp, path)?;
        Ok(())
    }
}

fn key(engine: &Engine, wasm: &[u8]) -> String {
    let mut engine_hash = std::collections::hash_map::DefaultHasher::new();
    engine
        .precompile_compatibility_hash()
        .hash(&mut engine_hash);
    let mut sha = Sha256::new();
    sha.update(wasm);
    sha.update(engine_hash.finish().to_le_bytes());
    sha.finalize().iter().map(|b| format!("{b:02x}")).collect()
}
