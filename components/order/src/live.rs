//! `GET /api/orders/{id}/events`: the order's status changes as
//! Server-Sent Events, read from the durable event log (`bv_events.outbox`,
//! the events the saga and the order's moves publish with the order as
//! their subject).
//!
//! Each event is sent as `id: <outbox position>`, `event: <type>` and
//! `data: <the CloudEvent, JSON>`. A client that reconnects with
//! `Last-Event-ID` (as `EventSource` does by itself) gets every event after
//! that one and nothing twice; `?lastEventId=` does the same for clients
//! that cannot set the header. The stream polls the log every
//! [`sse::POLL`] while the order can still change, sends a comment line
//! after [`sse::HEARTBEAT`] without events, and ends after the order's final event (fulfilled,
//! cancelled or failed). The runtime ends it cleanly when it shuts down;
//! the client then reconnects and resumes.

use bv_orders::model::{CustomerId, OrderId, Status};
use bv_service::{sse, Problem};
use bytes::Bytes;
use futures::SinkExt;
use spin_sdk::http::body::stream;
use spin_sdk::http::{BoxBody, Request, Response};
use spin_sdk::pg::ParameterValue;

/// Events read per query.
const PAGE: i64 = 100;

/// The order events after which nothing more happens to an order.
const FINAL: &[&str] = &[
    "com.bitvelocity.order.fulfilled.v1",
    "com.bitvelocity.order.cancelled.v1",
    "com.bitvelocity.order.failed.v1",
];

/// Where a stream starts: after this outbox position (0: from the first).
fn resume_after(req: &Request) -> Result<i64, Problem> {
    let header = req.headers().get("last-event-id");
    let (field, value) = match header {
        Some(v) => (
            "Last-Event-ID",
            v.to_str()
                .map_err(|_| Problem::invalid_field("Last-Event-ID", "must be visible ASCII"))?
                .to_string(),
        ),
        None => match req.uri().query().and_then(|q| {
            q.split('&')
                .filter_map(|p| p.split_once('='))
                .find(|(k, _)| *k == "lastEventId")
                .map(|(_, v)| v.to_string())
        }) {
            Some(v) => ("lastEventId", v),
            None => return Ok(0),
        },
    };
    match value.trim().parse::<i64>() {
        Ok(n) if n >= 0 => Ok(n),
        _ => Err(Problem::invalid_field(
            field,
            format!("`{value}` is not an event id of this stream (a whole number, 0 or more)"),
        )),
    }
}

/// The stream of order `id`, once the caller may see the order.
pub(crate) async fn events(req: &Request, id: &OrderId) -> Result<Response<BoxBody>, Problem> {
    let caller = crate::caller(req).await?;
    let owner = (!caller.is_admin()).then(|| CustomerId::from(caller.subject.as_str()));
    let after = resume_after(req)?;
    // An order already final has nothing more to come: its stream ends
    // once the log is read to its end.
    let already_final = {
        let conn = crate::open().await?;
        let order = crate::owned(&conn, id, owner.as_ref()).await?;
        matches!(
            order.status,
            Status::Fulfilled | Status::Cancelled | Status::Failed
        )
    };
    let (mut tx, body) = stream::<Bytes>();
    let id = id.to_string();
    spin_sdk::wasip3::spawn(async move {
        if tx.send(sse::RETRY).await.is_err() {
            return;
        }
        let mut after = after;
        let mut heartbeat = sse::Heartbeat::default();
        loop {
            let page = match read(&id, after).await {
                Ok(page) => page,
                Err(e) => {
                    // The next poll tries again; the client loses nothing.
                    eprintln!("order {id}: event stream: reading the log: {e}");
                    spin_sdk::time::sleep(sse::POLL).await;
                    continue;
                }
            };
            let mut finished = false;
            for (seq, ty, event) in &page {
                if tx.send(sse::frame(Some(*seq), ty, event)).await.is_err() {
                    return;
                }
                heartbeat.sent();
                after = *seq;
                finished |= FINAL.contains(&ty.as_str());
            }
            if finished || (already_final && (page.len() as i64) < PAGE) {
                return;
            }
            if page.len() as i64 == PAGE {
                continue;
            }
            spin_sdk::time::sleep(sse::POLL).await;
            if heartbeat.waited(sse::POLL) && tx.send(sse::KEEP_ALIVE).await.is_err() {
                return;
            }
        }
    });
    Ok(sse::response(body))
}

/// The order's events after position `after`, oldest first, at most
/// [`PAGE`]: `(position, type, CloudEvent JSON)`. The connection is held
/// only for the query: a stream lives long, the pool is shared.
async fn read(id: &str, after: i64) -> Result<Vec<(i64, String, String)>, String> {
    let conn = bv_orders::store::open()
        .await
        .map_err(|e| format!("{e:?}"))?;
    let rows = conn
        .query(
            "SELECT seq, type, event::text FROM bv_events.outbox
             WHERE subject = $1 AND type LIKE 'com.bitvelocity.order.%' AND seq > $2
             ORDER BY seq LIMIT $3",
            vec![
                ParameterValue::Str(id.to_string()),
                ParameterValue::Int64(after),
                ParameterValue::Int64(PAGE),
            ],
        )
        .await
        .map_err(|e| format!("{e:?}"))?
        .collect()
        .await
        .map_err(|e| format!("{e:?}"))?;
    rows.iter()
        .map(|r| {
            let column = |c: &str| format!("bv_events.outbox.{c} is missing");
            Ok((
                r.get::<i64>("seq").ok_or_else(|| column("seq"))?,
                r.get::<String>("type").ok_or_else(|| column("type"))?,
                r.get::<String>("event").ok_or_else(|| column("event"))?,
            ))
        })
        .collect()
}
