//! A PostgreSQL database of each test's own, on the machine's real server.

use std::sync::atomic::{AtomicUsize, Ordering};

use tokio_postgres::{Client, NoTls};

pub const ADMIN: &str = "host=127.0.0.1 port=5432 user=postgres dbname=postgres sslmode=disable";

pub async fn connect(config: &str) -> Client {
    let (client, connection) = tokio_postgres::connect(config, NoTls)
        .await
        .unwrap_or_else(|e| panic!("connecting natively to {config}: {e}"));
    tokio::spawn(connection);
    client
}

/// A database of the test's own, dropped (with its sessions) at the end.
pub struct TestDb {
    pub name: String,
}

impl TestDb {
    pub async fn new(tag: &str) -> Self {
        Self::with_options(tag, "").await
    }

    pub async fn with_options(tag: &str, options: &str) -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "bv_pg_{tag}_{}_{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        let admin = connect(ADMIN).await;
        admin
            .batch_execute(&format!("CREATE DATABASE {name} {options}"))
            .await
            .unwrap();
        Self { name }
    }

    pub fn url(&self) -> String {
        format!(
            "postgres://postgres@127.0.0.1:5432/{}?sslmode=disable",
            self.name
        )
    }

    pub async fn client(&self) -> Client {
        connect(&format!(
            "host=127.0.0.1 port=5432 user=postgres dbname={} sslmode=disable",
            self.name
        ))
        .await
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Drop it from a thread of its own: Drop cannot await.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let admin = connect(ADMIN).await;
                let _ = admin
                    .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .await;
            });
        })
        .join();
    }
}

/// Runs `bv events init` on the test's database.
pub async fn events_init(db: &TestDb) {
    let url = db.url();
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_bv"))
            .args(["events", "init", "--database", &url])
            .env_remove("BV_EVENTS_DATABASE")
            .env("RUST_LOG", "warn")
            .output()
            .expect("running bv events init")
    })
    .await
    .unwrap();
    assert!(output.status.success(), "bv events init: {output:?}");
}
