//! `bv-load proxy` (also `bv chaos proxy`): a TCP fault proxy between `bv`
//! and PostgreSQL, Redis or MQTT, for network faults a game day or a person
//! switches live: point the platform's address variable at `--listen`,
//! then type commands (one per line on standard input):
//!
//! | command | effect |
//! |---|---|
//! | `latency <ms>` | each chunk waits this long, both directions |
//! | `bandwidth <bytes/s>` / `bandwidth off` | a per-direction cap |
//! | `blackhole on` / `off` | hold every byte (connections stay open), then deliver |
//! | `reset` | cut every open connection with a TCP reset |
//! | `refuse on` / `off` | close new connections at once (a stopped server's port) |
//! | `clear` | no latency, no cap, no blackhole, accept again |
//! | `status` | the faults on and the open connections |
//!
//! Each command is answered with one line starting `ok` or `error`.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;
use bv_fault_proxy::{FaultProxy, NetFault};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

/// Applies one command line to `proxy`; the answer line.
pub fn apply(proxy: &FaultProxy, fault: &mut NetFault, refusing: &mut bool, line: &str) -> String {
    let words: Vec<&str> = line.split_whitespace().collect();
    let on_off = |w: Option<&&str>| match w.copied() {
        Some("on") => Ok(true),
        Some("off") => Ok(false),
        _ => Err("expected `on` or `off`"),
    };
    let result: Result<(), String> = match words.as_slice() {
        [] => return String::new(),
        ["latency", ms] => ms
            .parse::<u64>()
            .ok()
            .filter(|ms| *ms <= 600_000)
            .map(|ms| fault.latency = Duration::from_millis(ms))
            .ok_or_else(|| format!("latency: `{ms}` is not 0..=600000 ms")),
        ["bandwidth", "off"] => {
            fault.bytes_per_second = None;
            Ok(())
        }
        ["bandwidth", bps] => bps
            .parse::<u64>()
            .ok()
            .filter(|b| *b > 0)
            .map(|b| fault.bytes_per_second = Some(b))
            .ok_or_else(|| format!("bandwidth: `{bps}` is not a positive number of bytes/s")),
        ["blackhole", rest @ ..] => on_off(rest.first())
            .map(|on| fault.blackhole = on)
            .map_err(String::from),
        ["refuse", rest @ ..] => on_off(rest.first())
            .map(|on| *refusing = on)
            .map_err(String::from),
        ["reset"] => {
            proxy.reset();
            Ok(())
        }
        ["clear"] => {
            *fault = NetFault::default();
            *refusing = false;
            Ok(())
        }
        ["status"] => Ok(()),
        _ => Err(format!(
            "unknown command `{line}` (latency, bandwidth, blackhole, reset, refuse, clear, status)"
        )),
    };
    match result {
        Ok(()) => {
            proxy.set(*fault);
            proxy.refuse(*refusing);
            format!(
                "ok latency={}ms bandwidth={} blackhole={} refuse={} open={}",
                fault.latency.as_millis(),
                fault
                    .bytes_per_second
                    .map(|b| format!("{b}B/s"))
                    .unwrap_or_else(|| "off".into()),
                if fault.blackhole { "on" } else { "off" },
                if *refusing { "on" } else { "off" },
                proxy.open_connections()
            )
        }
        Err(e) => format!("error {e}"),
    }
}

/// Runs the proxy from `listen` to `upstream` until standard input ends.
pub async fn run(listen: SocketAddr, upstream: SocketAddr) -> anyhow::Result<()> {
    let proxy = FaultProxy::start_on(listen, upstream)
        .await
        .with_context(|| format!("listening on {listen}"))?;
    eprintln!(
        "bv-load proxy: {} -> {upstream}; commands on stdin: latency <ms>, bandwidth <B/s>|off, \
         blackhole on|off, reset, refuse on|off, clear, status",
        proxy.addr()
    );
    let (mut fault, mut refusing) = (NetFault::default(), false);
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let mut out = tokio::io::stdout();
    while let Some(line) = lines.next_line().await? {
        let answer = apply(&proxy, &mut fault, &mut refusing, line.trim());
        if !answer.is_empty() {
            out.write_all(format!("{answer}\n").as_bytes()).await?;
            out.flush().await?;
        }
    }
    Ok(())
}
