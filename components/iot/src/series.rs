//! Reading telemetry back: series at a step, anomalies, parked messages.

use bv_iot::message::{format_ms as rfc3339, rfc3339_ms};
use bv_service::{json, Problem, Reply};
use serde_json::{json, Value};
use spin_sdk::http::Request;
use spin_sdk::pg::ParameterValue;

use crate::registry::owned;
use crate::{column, open, query_params, rows};

/// The most points one answer holds.
const MAX_POINTS: i64 = 2000;
/// The range when `from` is not given: the hour before `to`.
const DEFAULT_RANGE_MS: i64 = 3_600_000;

/// Where a step's points come from.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Resolution {
    Raw,
    Minute,
    Hour,
}

impl Resolution {
    /// The coarsest table whose buckets divide the step.
    fn for_step(step_s: i64) -> Self {
        if step_s % 3600 == 0 {
            Resolution::Hour
        } else if step_s % 60 == 0 {
            Resolution::Minute
        } else {
            Resolution::Raw
        }
    }

    fn name(self) -> &'static str {
        match self {
            Resolution::Raw => "raw",
            Resolution::Minute => "1m",
            Resolution::Hour => "1h",
        }
    }
}

/// `30`, `30s`, `5m` or `1h`, in seconds.
fn parse_step(raw: &str) -> Option<i64> {
    let (digits, unit) = match raw.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => raw.split_at(i),
        None => (raw, "s"),
    };
    let n: i64 = digits.parse().ok().filter(|n| *n >= 1)?;
    let unit = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return None,
    };
    n.checked_mul(unit)
}

/// `GET /devices/{id}/series?metric=…&from=…&to=…&step=…`.
pub async fn series(req: &Request, segment: &str) -> Result<Reply, Problem> {
    let params = query_params(req, &["metric", "from", "to", "step"])?;
    let (conn, id, row) = owned(req, segment).await?;
    let metric = params
        .get("metric")
        .ok_or_else(|| Problem::invalid_parameter("metric", "required"))?;
    let ty: String = column(&row, "type")?;
    let known = rows(
        &conn,
        "SELECT 1 FROM iot.device_types WHERE name = $1 AND spec->'metrics' @> jsonb_build_array(jsonb_build_object('name', $2::text))",
        vec![ParameterValue::Str(ty.clone()), ParameterValue::Str(metric.clone())],
    )
    .await?;
    if known.is_empty() {
        return Err(Problem::invalid_parameter(
            "metric",
            format!("type {ty} has no metric {metric:?}"),
        ));
    }
    let instant = |name: &str| -> Result<Option<i64>, Problem> {
        params
            .get(name)
            .map(|v| {
                rfc3339_ms(v).ok_or_else(|| {
                    Problem::invalid_parameter(
                        name,
                        format!("must be an RFC 3339 timestamp, got {v:?}"),
                    )
                })
            })
            .transpose()
    };
    let to = match instant("to")? {
        Some(t) => t,
        None => now_ms(),
    };
    let from = instant("from")?.unwrap_or(to - DEFAULT_RANGE_MS);
    if from >= to {
        return Err(Problem::invalid_parameter("from", "must be before to"));
    }
    let span_s = (to - from + 999) / 1000;
    let step = match params.get("step") {
        Some(raw) => parse_step(raw).ok_or_else(|| {
            Problem::invalid_parameter(
                "step",
                format!("must be seconds, or a number with s, m, h or d (e.g. 5m), got {raw:?}"),
            )
        })?,
        None => default_step(span_s),
    };
    if span_s / step > MAX_POINTS {
        return Err(Problem::invalid_parameter(
            "step",
            format!(
                "{step} s over {span_s} s is more than {MAX_POINTS} points; take a larger step"
            ),
        ));
    }
    let resolution = Resolution::for_step(step);
    let sql = match resolution {
        Resolution::Raw => format!(
            "SELECT {BUCKET} AS bucket_ms, count(*)::bigint AS n, min(value) AS min, max(value) AS max,
                    avg(value) AS mean, percentile_cont(0.95) WITHIN GROUP (ORDER BY value) AS p95
             FROM iot.telemetry WHERE device_id = $1 AND metric = $2 AND ts >= {FROM} AND ts < {TO}
             GROUP BY 1 ORDER BY 1",
            BUCKET = bucket("ts"),
        ),
        Resolution::Minute | Resolution::Hour => format!(
            "SELECT {BUCKET} AS bucket_ms, sum(n)::bigint AS n, min(min) AS min, max(max) AS max,
                    sum(mean * n) / sum(n) AS mean, max(p95) AS p95
             FROM iot.rollup_{table} WHERE device_id = $1 AND metric = $2 AND bucket >= {FROM} AND bucket < {TO}
             GROUP BY 1 ORDER BY 1",
            BUCKET = bucket("bucket"),
            table = resolution.name(),
        ),
    };
    let found = rows(
        &conn,
        &sql,
        vec![
            ParameterValue::Str(id.to_string()),
            ParameterValue::Str(metric.clone()),
            ParameterValue::Int64(from),
            ParameterValue::Int64(to),
            ParameterValue::Int64(step),
        ],
    )
    .await?;
    let points: Vec<Value> = found
        .iter()
        .map(|r| {
            Ok(json!({
                "t": rfc3339(column::<i64>(r, "bucket_ms")?),
                "count": column::<i64>(r, "n")?,
                "min": column::<f64>(r, "min")?,
                "max": column::<f64>(r, "max")?,
                "mean": column::<f64>(r, "mean")?,
                "p95": column::<f64>(r, "p95")?,
            }))
        })
        .collect::<Result<_, Problem>>()?;
    Ok(json(
        200,
        &json!({
            "deviceId": id.as_str(), "metric": metric, "from": rfc3339(from), "to": rfc3339(to),
            "stepSeconds": step, "resolution": resolution.name(), "points": points,
        }),
    ))
}

const FROM: &str = "to_timestamp($3::bigint / 1000.0)";
const TO: &str = "to_timestamp($4::bigint / 1000.0)";

/// The start of `column`'s step-wide bucket (aligned to the epoch), in ms.
fn bucket(column: &str) -> String {
    format!(
        "(extract(epoch FROM date_bin(make_interval(secs => $5::bigint), {column}, TIMESTAMPTZ '1970-01-01 00:00:00+00')) * 1000)::bigint"
    )
}

/// About 120 points, on a round step.
fn default_step(span_s: i64) -> i64 {
    const STEPS: [i64; 10] = [1, 10, 30, 60, 300, 900, 3600, 6 * 3600, 86_400, 7 * 86_400];
    STEPS
        .into_iter()
        .find(|s| span_s / s <= 120)
        .unwrap_or(7 * 86_400)
}

/// `GET /devices/{id}/anomalies`: the newest first.
pub async fn anomalies(req: &Request, segment: &str) -> Result<Reply, Problem> {
    query_params(req, &[])?;
    let (conn, id, _) = owned(req, segment).await?;
    let found = rows(
        &conn,
        &format!(
            "SELECT id, metric, kind, value, score, baseline, {} AS opened_at, {} AS cleared_at
             FROM iot.anomalies WHERE device_id = $1 ORDER BY opened_at DESC, id DESC LIMIT 200",
            text_time!("opened_at"),
            text_time!("cleared_at")
        ),
        vec![ParameterValue::Str(id.to_string())],
    )
    .await?;
    let list: Vec<Value> = found
        .iter()
        .map(|r| {
            Ok(json!({
                "id": column::<i64>(r, "id")?,
                "metric": column::<String>(r, "metric")?,
                "kind": column::<String>(r, "kind")?,
                "value": column::<f64>(r, "value")?,
                "score": column::<f64>(r, "score")?,
                "baseline": column::<f64>(r, "baseline")?,
                "openedAt": column::<String>(r, "opened_at")?,
                "clearedAt": r.get::<String>("cleared_at"),
            }))
        })
        .collect::<Result<_, Problem>>()?;
    Ok(json(
        200,
        &json!({ "deviceId": id.as_str(), "anomalies": list }),
    ))
}

/// `GET /parked` (administrators): the newest parked messages.
pub async fn parked(req: &Request) -> Result<Reply, Problem> {
    query_params(req, &[])?;
    bv_auth::require_admin(req.headers()).await?;
    let conn = open().await?;
    let found = rows(
        &conn,
        &format!(
            "SELECT id, topic, device_id, reason, encode(payload, 'base64') AS payload, {} AS received_at
             FROM iot.parked ORDER BY id DESC LIMIT 200",
            text_time!("received_at")
        ),
        vec![],
    )
    .await?;
    let list: Vec<Value> = found
        .iter()
        .map(|r| {
            Ok(json!({
                "id": column::<i64>(r, "id")?,
                "topic": column::<String>(r, "topic")?,
                "deviceId": r.get::<String>("device_id"),
                "reason": column::<String>(r, "reason")?,
                "payloadBase64": column::<String>(r, "payload")?.replace('\n', ""),
                "receivedAt": column::<String>(r, "received_at")?,
            }))
        })
        .collect::<Result<_, Problem>>()?;
    Ok(json(200, &json!({ "parked": list })))
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_and_resolutions() {
        assert_eq!(parse_step("30"), Some(30));
        assert_eq!(parse_step("5m"), Some(300));
        assert_eq!(parse_step("1h"), Some(3600));
        assert_eq!(parse_step("0s"), None);
        assert_eq!(parse_step("5w"), None);
        assert_eq!(Resolution::for_step(30), Resolution::Raw);
        assert_eq!(Resolution::for_step(300), Resolution::Minute);
        assert_eq!(Resolution::for_step(7200), Resolution::Hour);
        assert_eq!(rfc3339(1_796_637_600_250), "2026-12-07T10:00:00.250Z");
        assert_eq!(rfc3339_ms(&rfc3339(951_782_400_000)), Some(951_782_400_000));
    }
}
