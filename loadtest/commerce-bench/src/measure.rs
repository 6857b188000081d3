//! What the driver reads around the measured checkouts: CPU time from
//! `/proc`, bv's request metrics from its admin `/metrics`, and the
//! database's own counters.

use std::collections::BTreeMap;

use anyhow::Context as _;
use tokio_postgres::Client;

/// CPU seconds (user + system) of a process, from `/proc/<pid>/stat`.
pub fn cpu_seconds(pid: u32, clk_tck: u64) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces: fields start after its `)`.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) as f64 / clk_tck as f64)
}

/// CPU seconds of the PostgreSQL backends serving `database` (their
/// process title names it), `except` the driver's own, split into those
/// of bv's Postgres trigger (`trigger`, by process id) and the rest (the
/// components' pooled connections). Backends that exited meanwhile are not
/// counted: bv keeps its pooled connections.
pub fn backend_cpu_seconds(
    database: &str,
    except: u32,
    trigger: &[u32],
    clk_tck: u64,
) -> (f64, f64) {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return (0.0, 0.0);
    };
    let needle = format!(" {database} ");
    dir.filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| pid != except)
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
                let title = String::from_utf8_lossy(&c);
                title.starts_with("postgres: ") && title.contains(&needle)
            })
        })
        .filter_map(|pid| Some((pid, cpu_seconds(pid, clk_tck)?)))
        .fold((0.0, 0.0), |(t, o), (pid, cpu)| {
            if trigger.contains(&pid) {
                (t + cpu, o)
            } else {
                (t, o + cpu)
            }
        })
}

/// The backends of bv's Postgres trigger (its connections name themselves
/// `bv postgres trigger`).
pub async fn trigger_backends(client: &Client) -> anyhow::Result<Vec<u32>> {
    let rows = client
        .query(
            "SELECT pid FROM pg_stat_activity
             WHERE datname = current_database() AND application_name = 'bv postgres trigger'",
            &[],
        )
        .await
        .context("reading pg_stat_activity")?;
    Ok(rows.iter().map(|r| r.get::<_, i32>(0) as u32).collect())
}

/// Busy and total jiffies of the whole machine (`/proc/stat`).
pub fn machine_jiffies() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = stat.lines().find(|l| l.starts_with("cpu ")) else {
        return (0, 0);
    };
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    (total - idle, total)
}

/// The value at quantile `p` of sorted samples (nearest rank).
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
}

/// Per component: requests answered, non-2xx among them, and seconds
/// spent (request to response headers), summed over its routes. Requests
/// a component sends to another over service chaining are counted at the
/// callee, so these add up the whole chain.
#[derive(Debug, Default, Clone)]
pub struct ComponentTimes {
    /// Requests.
    pub count: f64,
    /// Answers that were not 2xx.
    pub non_2xx: f64,
    /// Seconds.
    pub seconds: f64,
}

/// `label="value"` out of a Prometheus sample's label set.
fn label<'a>(labels: &'a str, name: &str) -> Option<&'a str> {
    let start = labels.find(&format!("{name}=\""))? + name.len() + 2;
    let len = labels[start..].find('"')?;
    Some(&labels[start..start + len])
}

/// Scrapes bv's `/metrics` (`admin` is `http://host:port`).
pub async fn scrape(admin: &str) -> anyhow::Result<BTreeMap<String, ComponentTimes>> {
    let mut conn = bv_load::client::Connection::open(admin).await?;
    let answer = conn.send("GET", "/metrics", &[], None).await?;
    anyhow::ensure!(
        answer.status == 200,
        "GET {admin}/metrics: {}",
        answer.status
    );
    let text = answer.text();
    let mut out: BTreeMap<String, ComponentTimes> = BTreeMap::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(value) = value.parse::<f64>() else {
            continue;
        };
        let Some((name, labels)) = series.split_once('{') else {
            continue;
        };
        let Some(component) = label(labels, "component") else {
            continue;
        };
        let entry = out.entry(component.to_string()).or_default();
        match name {
            "bv_http_request_duration_seconds_sum" => entry.seconds += value,
            "bv_http_request_duration_seconds_count" => entry.count += value,
            "bv_http_requests_total"
                if !label(labels, "status").is_some_and(|s| s.starts_with('2')) =>
            {
                entry.non_2xx += value;
            }
            _ => {}
        }
    }
    Ok(out)
}

/// `after − before`, per component.
pub fn delta(
    before: &BTreeMap<String, ComponentTimes>,
    after: &BTreeMap<String, ComponentTimes>,
) -> BTreeMap<String, ComponentTimes> {
    after
        .iter()
        .map(|(k, a)| {
            let b = before.get(k).cloned().unwrap_or_default();
            (
                k.clone(),
                ComponentTimes {
                    count: a.count - b.count,
                    non_2xx: a.non_2xx - b.non_2xx,
                    seconds: a.seconds - b.seconds,
                },
            )
        })
        .filter(|(_, d)| d.count > 0.0)
        .collect()
}

/// The database's counters of committed and rolled-back transactions
/// (every statement outside `BEGIN … COMMIT` is one) and rows written.
#[derive(Debug, Clone, Copy, Default)]
pub struct DbCounters {
    /// `xact_commit`.
    pub commits: i64,
    /// `xact_rollback`.
    pub rollbacks: i64,
    /// `tup_inserted + tup_updated + tup_deleted`.
    pub rows_written: i64,
    /// Rows in `bv_events.outbox` (exact, not a statistic).
    pub events: i64,
}

/// The counters of the current database. A backend reports its counts
/// when it goes idle, at most once a second, and an idle one within 10 s:
/// read them 11 s after the work to count it all.
pub async fn db_counters(client: &Client) -> anyhow::Result<DbCounters> {
    // A snapshot taken earlier in this transaction would be reused.
    client
        .batch_execute("SELECT pg_stat_clear_snapshot()")
        .await?;
    let row = client
        .query_one(
            "SELECT xact_commit, xact_rollback, tup_inserted + tup_updated + tup_deleted,
                    (SELECT count(*) FROM bv_events.outbox)
             FROM pg_stat_database WHERE datname = current_database()",
            &[],
        )
        .await
        .context("reading pg_stat_database")?;
    Ok(DbCounters {
        commits: row.get(0),
        rollbacks: row.get(1),
        rows_written: row.get(2),
        events: row.get(3),
    })
}
