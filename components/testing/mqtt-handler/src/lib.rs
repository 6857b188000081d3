//! `mqtt-handler`: an MQTT trigger handler for the runtime's tests, written
//! with `bv-mqtt-trigger`.
//!
//! It records every message it receives by publishing a copy, at QoS 1, to
//! `<topic>/seen` through outbound MQTT (broker in the component variable
//! `mqtt_address`), and how many messages its instance has been given so far
//! (this one included) to `<topic>/uses`. Then a payload starting with
//! `slow-` makes it wait 3 s, one starting with `fail` makes it return an
//! error; any other payload succeeds.

use std::sync::atomic::{AtomicU32, Ordering};

use bv_mqtt_trigger::Metadata;
use spin_sdk::mqtt::{Connection, Qos};

/// Messages this instance has been given.
static USES: AtomicU32 = AtomicU32::new(0);

async fn on_message(payload: Vec<u8>, metadata: Metadata) -> anyhow::Result<()> {
    let uses = USES.fetch_add(1, Ordering::Relaxed) + 1;
    let address = spin_sdk::variables::get("mqtt_address")
        .await
        .map_err(|e| anyhow::anyhow!("mqtt_address: {e:?}"))?;
    let conn = Connection::open(address, "", "", 30)
        .await
        .map_err(|e| anyhow::anyhow!("open: {e:?}"))?;
    conn.publish(
        format!("{}/seen", metadata.topic),
        payload.clone(),
        Qos::AtLeastOnce,
    )
    .await
    .map_err(|e| anyhow::anyhow!("publish: {e:?}"))?;
    conn.publish(
        format!("{}/uses", metadata.topic),
        uses.to_string().into_bytes(),
        Qos::AtLeastOnce,
    )
    .await
    .map_err(|e| anyhow::anyhow!("publish: {e:?}"))?;
    if payload.starts_with(b"slow-") {
        spin_sdk::time::sleep(std::time::Duration::from_secs(3)).await;
    }
    if payload.starts_with(b"fail") {
        anyhow::bail!("refusing message `{}`", String::from_utf8_lossy(&payload));
    }
    Ok(())
}

bv_mqtt_trigger::mqtt_handler!(on_message);
