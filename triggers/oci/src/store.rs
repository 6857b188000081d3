//! The local blob cache: pulled layers by digest, checked when written and
//! when read, so a corrupted cache is fetched again rather than run.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;

use crate::lock::sha256_digest;

/// Blobs under `<root>/blobs/sha256/<hex>`.
#[derive(Debug, Clone)]
pub struct BlobStore {
    root: PathBuf,
}

impl BlobStore {
    /// A store rooted at `root` (created on first write).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The store's directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where the blob with `digest` lives; refuses anything but a
    /// well-formed `sha256:<64 hex>`, since the digest comes from a registry
    /// and becomes a path.
    pub fn path(&self, digest: &str) -> anyhow::Result<PathBuf> {
        let hex = digest
            .strip_prefix("sha256:")
            .filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
            .with_context(|| format!("unsupported digest `{digest}` (expected sha256:<64 hex>)"))?;
        Ok(self.root.join("blobs").join("sha256").join(hex))
    }

    /// The blob's path if it is present and its content matches `digest`;
    /// a mismatching file is removed.
    pub fn get(&self, digest: &str) -> anyhow::Result<Option<PathBuf>> {
        let path = self.path(digest)?;
        match std::fs::read(&path) {
            Ok(data) if sha256_digest(&data) == digest => Ok(Some(path)),
            Ok(_) => {
                tracing::warn!(%digest, "cached blob does not match its digest; fetching it again");
                let _ = std::fs::remove_file(&path);
                Ok(None)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }

    /// Stores `data` as `digest`, refusing content that does not match.
    pub fn put(&self, digest: &str, data: &[u8]) -> anyhow::Result<PathBuf> {
        let path = self.path(digest)?;
        let actual = sha256_digest(data);
        anyhow::ensure!(
            actual == digest,
            "content does not match its digest: expected {digest}, got {actual}"
        );
        let dir = path.parent().expect("blob paths have a parent");
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        // Written beside and renamed, so a crash never leaves a partial blob
        // under the digest's name.
        let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
        tmp.write_all(data)?;
        tmp.as_file().sync_all()?;
        tmp.persist(&path)
            .with_context(|| format!("writing {}", path.display()))?;
        Ok(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_blob_is_kept_only_under_its_own_digest() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::new(dir.path());
        let digest = sha256_digest(b"hello");
        let path = store.put(&digest, b"hello").unwrap();
        assert_eq!(store.get(&digest).unwrap(), Some(path.clone()));

        let other = sha256_digest(b"other");
        let err = store.put(&other, b"hello").unwrap_err().to_string();
        assert!(err.contains("does not match its digest"), "{err}");

        // A file changed on disk is not served, and is dropped.
        std::fs::write(&path, b"tampered").unwrap();
        assert_eq!(store.get(&digest).unwrap(), None);
        assert!(!path.exists());
    }

    #[test]
    fn digests_that_are_not_sha256_hex_are_refused() {
        let store = BlobStore::new("/tmp/unused");
        for bad in ["sha256:../../etc", "md5:abc", "sha256:xyz"] {
            assert!(store.path(bad).is_err(), "{bad}");
        }
    }
}
