//! `cron-probe`: a cron trigger handler for the runtime's tests.
//!
//! It exports `handle-cron-event` of the spin-trigger-cron plugin's world
//! (`fermyon:spin-cron@2.0.0`) and records each firing as one line on
//! stdout, `cron-probe <CRON_PROBE_NAME> fired at <timestamp>`, which the
//! tests read from `bv`'s output. The component's environment chooses what
//! else it does:
//!
//! - `CRON_PROBE_FAIL=1`: returns an error after recording the firing;
//! - `CRON_PROBE_SLEEP_MS=<n>`: sleeps that long before returning.

wit_bindgen::generate!({
    world: "fermyon:spin-cron/spin-cron@2.0.0",
    path: "../../../wit/deps/spin-cron@2.0.0",
});

struct Probe;

impl Guest for Probe {
    fn handle_cron_event(metadata: Metadata) -> Result<(), Error> {
        let name = std::env::var("CRON_PROBE_NAME").unwrap_or_default();
        println!("cron-probe {name} fired at {}", metadata.timestamp);
        if let Some(ms) = std::env::var("CRON_PROBE_SLEEP_MS")
            .ok()
            .and_then(|v| v.parse().ok())
        {
            std::thread::sleep(std::time::Duration::from_millis(ms));
        }
        if std::env::var("CRON_PROBE_FAIL").is_ok_and(|v| v == "1") {
            return Err(Error::Other(format!("cron-probe {name} asked to fail")));
        }
        Ok(())
    }
}

export!(Probe);
