//! `redis-handler`: a Redis trigger handler for the runtime's tests.
//!
//! It records every message it receives by `RPUSH`-ing the payload onto a
//! Redis list, through outbound Redis at the address in the component
//! variable `redis_address`. The payload says which list: its first
//! space-separated word, or its second when the first is a command word:
//!
//! - `<list> ...`: recorded, `ok`;
//! - `fail <list> ...`: recorded, then the handler returns an error;
//! - `panic <list> ...`: recorded, then the handler panics (a trap);
//! - `hang <list> ...`: recorded, then the handler never returns.

use spin_sdk::redis::Connection;
use spin_sdk::redis_subscriber;

#[redis_subscriber]
async fn on_message(message: Vec<u8>) -> anyhow::Result<()> {
    let text = String::from_utf8_lossy(&message).into_owned();
    let mut words = text.split(' ');
    let first = words.next().unwrap_or_default();
    let (mode, list) = match first {
        "fail" | "panic" | "hang" => (first, words.next().unwrap_or_default()),
        _ => ("ok", first),
    };
    let address = spin_sdk::variables::get("redis_address")
        .await
        .map_err(|e| anyhow::anyhow!("redis_address: {e:?}"))?;
    let conn = Connection::open(address)
        .await
        .map_err(|e| anyhow::anyhow!("open: {e:?}"))?;
    conn.execute(
        "RPUSH",
        [
            spin_sdk::redis::RedisParameter::Binary(list.as_bytes().to_vec()),
            spin_sdk::redis::RedisParameter::Binary(message.clone()),
        ],
    )
    .await
    .map_err(|e| anyhow::anyhow!("rpush: {e:?}"))?;
    match mode {
        "fail" => anyhow::bail!("refusing message `{text}`"),
        "panic" => panic!("handler panic on `{text}`"),
        "hang" => loop {
            std::hint::black_box(0u64);
        },
        _ => Ok(()),
    }
}
