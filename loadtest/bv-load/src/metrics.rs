//! Reading bv's Prometheus exposition (`/metrics` on its admin address) for
//! the figures a client cannot see: event deliveries and lag.

use anyhow::Context as _;

use crate::client::Connection;
use crate::slo::Deliveries;

/// The delivery counters at one moment.
#[derive(Clone, Copy, Debug, Default)]
pub struct DeliveryCounters {
    /// `bv_events_deliveries_total{outcome="ok"}`, summed.
    pub ok: f64,
    /// `bv_events_deliveries_total`, summed over outcomes.
    pub all: f64,
    /// The largest `bv_events_lag`.
    pub max_lag: f64,
}

impl DeliveryCounters {
    /// What happened between `self` (earlier) and `later`.
    pub fn until(&self, later: &Self) -> Deliveries {
        Deliveries {
            ok: later.ok - self.ok,
            all: later.all - self.all,
            max_lag: later.max_lag,
        }
    }
}

/// Reads the counters from `url` (`http://host:port/metrics`).
pub async fn deliveries(url: &str) -> anyhow::Result<DeliveryCounters> {
    let uri: hyper::Uri = url
        .parse()
        .with_context(|| format!("metrics URL {url:?}"))?;
    let base = format!(
        "{}://{}",
        uri.scheme_str().unwrap_or("http"),
        uri.authority().context("metrics URL without a host")?
    );
    let mut conn = Connection::open(&base).await?;
    let answer = conn.send("GET", uri.path(), &[], None).await?;
    anyhow::ensure!(answer.status == 200, "GET {url}: {}", answer.status);
    Ok(parse(&answer.text()))
}

/// Sums the delivery series of an exposition.
pub fn parse(exposition: &str) -> DeliveryCounters {
    let mut c = DeliveryCounters::default();
    for line in exposition.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(value) = value.parse::<f64>() else {
            continue;
        };
        if series.starts_with("bv_events_deliveries_total{") {
            c.all += value;
            if series.contains("outcome=\"ok\"") {
                c.ok += value;
            }
        } else if series.starts_with("bv_events_lag{") || series == "bv_events_lag" {
            c.max_lag = c.max_lag.max(value);
        }
    }
    c
}

#[cfg(test)]
mod tests {
    #[test]
    fn sums_deliveries_and_takes_the_largest_lag() {
        let text = "# HELP x\n\
            bv_events_deliveries_total{subscription=\"a\",outcome=\"ok\"} 10\n\
            bv_events_deliveries_total{subscription=\"a\",outcome=\"error\"} 2\n\
            bv_events_deliveries_total{subscription=\"b\",outcome=\"ok\"} 5\n\
            bv_events_lag{subscription=\"a\"} 3\n\
            bv_events_lag{subscription=\"b\"} 7\n";
        let c = super::parse(text);
        assert_eq!((c.ok, c.all, c.max_lag), (15.0, 17.0, 7.0));
    }
}
