use async_trait::async_trait;
use redis::AsyncCommands;
use tokio::sync::OnceCell;

use crate::{Store, StoreError};

/// A store kept in Redis. The connection is made on first use and then
/// shared (multiplexed) by every instance, and it reconnects by itself after
/// Redis restarts.
pub struct RedisStore {
    client: redis::Client,
    conn: OnceCell<redis::aio::ConnectionManager>,
}

impl RedisStore {
    /// A store at `url` (`redis://host:port/db`); nothing connects until the
    /// first operation.
    pub fn new(url: &str) -> anyhow::Result<Self> {
        let client = redis::Client::open(url)
            .map_err(|e| anyhow::anyhow!("invalid redis url for key-value store: {e}"))?;
        Ok(Self {
            client,
            conn: OnceCell::new(),
        })
    }

    async fn conn(&self) -> Result<redis::aio::ConnectionManager, StoreError> {
        self.conn
            .get_or_try_init(|| async {
                let config = redis::aio::ConnectionManagerConfig::new()
                    .set_connection_timeout(std::time::Duration::from_secs(2))
                    .set_response_timeout(std::time::Duration::from_secs(5));
                redis::aio::ConnectionManager::new_with_config(self.client.clone(), config).await
            })
            .await
            .cloned()
            .map_err(err)
    }
}

fn err(e: redis::RedisError) -> StoreError {
    StoreError(format!("redis: {e}"))
}

#[async_trait]
impl Store for RedisStore {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.conn().await?.get(key).await.map_err(err)
    }

    async fn set(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        self.conn().await?.set(key, value).await.map_err(err)
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.conn().await?.del(key).await.map_err(err)
    }

    async fn exists(&self, key: &str) -> Result<bool, StoreError> {
        self.conn().await?.exists(key).await.map_err(err)
    }

    async fn keys(&self) -> Result<Vec<String>, StoreError> {
        let mut conn = self.conn().await?;
        let mut keys: Vec<String> = Vec::new();
        let mut cursor: u64 = 0;
        loop {
            let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut conn)
                .await
                .map_err(err)?;
            keys.extend(batch);
            if next == 0 {
                break;
            }
            cursor = next;
        }
        keys.sort();
        Ok(keys)
    }
}
