//! `files = [...]` of a component: what the guest sees under its filesystem.
//!
//! Glob patterns and plain paths are copied, keeping their relative paths,
//! into a per-component directory under the state dir that is mounted
//! read-only at `/` (as Spin does), leaving out what `exclude_files` globs
//! match; `{ source, destination }` directory mounts are mounted in place,
//! read-only.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use bv_manifest::FileMount;

/// What a component's instances get to see of the host filesystem.
#[derive(Default)]
pub(crate) struct Mounts {
    /// Copied files, mounted at `/`.
    pub root: Option<PathBuf>,
    /// Directories mounted in place: (host path, guest path).
    pub dirs: Vec<(PathBuf, String)>,
}

pub(crate) fn prepare(
    base_dir: &Path,
    state_dir: &Path,
    component: &str,
    mounts: &[FileMount],
    exclude: &[String],
) -> anyhow::Result<Mounts> {
    let excluded = exclude
        .iter()
        .map(|p| glob::Pattern::new(p).with_context(|| format!("invalid exclude_files `{p}`")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut root = None;
    let mut dirs = Vec::new();
    for mount in mounts {
        match mount {
            FileMount::Pattern(pattern) => {
                let root = root.get_or_insert_with(|| state_dir.join("files").join(component));
                copy_pattern(base_dir, pattern, &excluded, root)?;
            }
            FileMount::Placement {
                source,
                destination,
            } => {
                let source = base_dir.join(source);
                if source.is_dir() {
                    dirs.push((source, destination.clone()));
                } else {
                    let root = root.get_or_insert_with(|| state_dir.join("files").join(component));
                    let target = root.join(destination.trim_start_matches('/'));
                    copy_file(&source, &target)?;
                }
            }
        }
    }
    if let Some(root) = &root {
        std::fs::create_dir_all(root)?;
    }
    Ok(Mounts { root, dirs })
}

fn copy_pattern(
    base_dir: &Path,
    pattern: &str,
    excluded: &[glob::Pattern],
    root: &Path,
) -> anyhow::Result<()> {
    let full = base_dir.join(pattern);
    let full = full.to_str().context("file pattern is not UTF-8")?;
    let mut matched = false;
    for entry in glob::glob(full).with_context(|| format!("invalid pattern `{pattern}`"))? {
        let path = entry?;
        if path.is_file() {
            let rel = path.strip_prefix(base_dir).unwrap_or(&path);
            matched = true;
            if !excluded.iter().any(|x| x.matches_path(rel)) {
                copy_file(&path, &root.join(rel))?;
            }
        }
    }
    anyhow::ensure!(matched, "`{pattern}` matches no file");
    Ok(())
}

fn copy_file(from: &Path, to: &Path) -> anyhow::Result<()> {
    if let Some(dir) = to.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::copy(from, to).with_context(|| format!("copying {}", from.display()))?;
    Ok(())
}
