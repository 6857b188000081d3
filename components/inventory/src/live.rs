//! `GET /api/inventory/{productId}/stream`: a product's stock, live, as
//! Server-Sent Events. Each event is `event: stock` with the stock record
//! as `GET /api/inventory/{productId}` answers it: the first at once, then
//! one after every change (read every [`sse::POLL`]), and a comment line
//! after [`sse::HEARTBEAT`] without changes. Every event carries the whole
//! state, so a client that reconnects is up to date with its first event;
//! there is no `Last-Event-ID` to resume from.

use bv_service::{sse, Problem};
use bytes::Bytes;
use futures::SinkExt;
use spin_sdk::http::body::stream;
use spin_sdk::http::{BoxBody, Response};

use crate::model::ProductId;

/// The stream of `product`'s stock; 404 before it starts when the product
/// has no stock record.
pub(crate) async fn stock(product: ProductId) -> Result<Response<BoxBody>, Problem> {
    let first = crate::stock_json(&product).await?;
    let (mut tx, body) = stream::<Bytes>();
    spin_sdk::wasip3::spawn(async move {
        let mut last = first;
        if tx.send(sse::RETRY).await.is_err()
            || tx
                .send(sse::frame(None, "stock", &last.to_string()))
                .await
                .is_err()
        {
            return;
        }
        let mut heartbeat = sse::Heartbeat::default();
        loop {
            spin_sdk::time::sleep(sse::POLL).await;
            match crate::stock_json(&product).await {
                Ok(now) if now != last => {
                    if tx
                        .send(sse::frame(None, "stock", &now.to_string()))
                        .await
                        .is_err()
                    {
                        return;
                    }
                    heartbeat.sent();
                    last = now;
                    continue;
                }
                Ok(_) => {}
                // The next poll tries again.
                Err(e) => eprintln!("stock stream of {product}: {}", e.detail),
            }
            if heartbeat.waited(sse::POLL) && tx.send(sse::KEEP_ALIVE).await.is_err() {
                return;
            }
        }
    });
    Ok(sse::response(body))
}
