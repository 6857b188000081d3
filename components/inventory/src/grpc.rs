//! The inventory over gRPC: `bitvelocity.inventory.v1.Inventory`
//! (`shared/grpc/proto/inventory.proto`), served with tonic through
//! spin-sdk's `grpc` feature, and server reflection.
//!
//! Every method is the HTTP API's operation with the same rules and the
//! same problems, carried as gRPC statuses (`bv_grpc::status`): a
//! shortage is `FAILED_PRECONDITION` with the reason
//! `insufficient-stock`, an unreachable database `UNAVAILABLE`. The
//! reservation methods take the same callers as over HTTP: other
//! components over service chaining, or an administrator's bearer token in
//! the `authorization` metadata. `WatchStock` sends the stock at once, then
//! after every change (read every [`sse::POLL`]), until the caller ends the
//! call or its deadline passes.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};

use bv_grpc::inventory::inventory_server::{Inventory, InventoryServer};
use bv_grpc::inventory::{self as pb, GetStockRequest, ReservationRef, ReserveRequest};
use bv_grpc::reflection::{self, Registry};
use bv_service::{sse, Problem, Trace};
use futures::channel::{mpsc, oneshot};
use futures::{SinkExt, Stream};
use serde_json::json;
use spin_sdk::http::{box_body, grpc, BoxBody, HeaderMap, Request, Response};
use tonic::{Request as Call, Response as Answer, Status};

use crate::model::{self, NewReservation, ProductId, ReservationId};
use crate::store::Reserved;

/// Answers a gRPC request: reflection, or the inventory service (which
/// answers `UNIMPLEMENTED` for a method it does not have).
pub(crate) async fn serve(req: Request) -> Response<BoxBody> {
    let path = req.uri().path();
    if path.starts_with("/grpc.reflection.v1.ServerReflection/") {
        grpc::serve(reflection::v1::server(registry()), req)
            .await
            .map(box_body)
    } else if path.starts_with("/grpc.reflection.v1alpha.ServerReflection/") {
        grpc::serve(reflection::v1alpha::server(registry()), req)
            .await
            .map(box_body)
    } else {
        grpc::serve(InventoryServer::new(Service), req)
            .await
            .map(box_body)
    }
}

fn registry() -> Arc<Registry> {
    static REGISTRY: OnceLock<Arc<Registry>> = OnceLock::new();
    REGISTRY
        .get_or_init(|| {
            Arc::new(
                Registry::new(&[pb::FILE_DESCRIPTOR_SET])
                    .expect("the descriptor set compiled into this component decodes"),
            )
        })
        .clone()
}

struct Service;

type StockUpdates = Pin<Box<dyn Stream<Item = Result<pb::Stock, Status>> + Send>>;

#[tonic::async_trait]
impl Inventory for Service {
    async fn get_stock(&self, call: Call<GetStockRequest>) -> Result<Answer<pb::Stock>, Status> {
        let product = product_id(call.into_inner().product_id)?;
        on_instance(async move { crate::stock(&product).await.map(stock) })
            .await
            .map(Answer::new)
            .map_err(status)
    }

    async fn reserve(&self, call: Call<ReserveRequest>) -> Result<Answer<pb::Reservation>, Status> {
        let (headers, trace, request) = internal(call);
        let items: Vec<_> = request
            .items
            .iter()
            .map(|l| json!({ "productId": l.product_id, "quantity": l.quantity }))
            .collect();
        // The HTTP API's parsing: the same rules, the same field names.
        let body = json!({
            "reservationId": request.reservation_id,
            "orderId": request.order_id,
            "items": items,
        });
        authorized(headers, async move {
            let body: NewReservation = bv_service::parse_json(body.to_string().as_bytes())?;
            crate::reserve(&body, &trace)
                .await
                .map(|reserved| match reserved {
                    Reserved::Created(r) => reservation(r, false),
                    Reserved::Replayed(r) => reservation(r, true),
                })
        })
        .await
    }

    async fn get_reservation(
        &self,
        call: Call<ReservationRef>,
    ) -> Result<Answer<pb::Reservation>, Status> {
        let (headers, _, request) = internal(call);
        let id = reservation_id(request.reservation_id)?;
        authorized(headers, async move {
            crate::reservation(&id).await.map(|r| reservation(r, false))
        })
        .await
    }

    async fn release(&self, call: Call<ReservationRef>) -> Result<Answer<pb::Reservation>, Status> {
        moved(call, model::Status::Released).await
    }

    async fn commit(&self, call: Call<ReservationRef>) -> Result<Answer<pb::Reservation>, Status> {
        moved(call, model::Status::Committed).await
    }

    type WatchStockStream = StockUpdates;

    async fn watch_stock(
        &self,
        call: Call<GetStockRequest>,
    ) -> Result<Answer<StockUpdates>, Status> {
        let product = product_id(call.into_inner().product_id)?;
        let first = {
            let product = product.clone();
            on_instance(async move { crate::stock(&product).await.map(stock) })
                .await
                .map_err(status)?
        };
        // The polling runs as the instance's task; the stream tonic sends
        // is the channel's receiving end. A send that fails means the
        // caller is gone, and ends the task.
        let (mut updates, received) = mpsc::channel(1);
        spin_sdk::wasip3::spawn(async move {
            let mut last = first.clone();
            if updates.send(Ok(first)).await.is_err() {
                return;
            }
            loop {
                spin_sdk::time::sleep(sse::POLL).await;
                match crate::stock(&product).await {
                    Ok(now) => {
                        let now = stock(now);
                        if now != last {
                            if updates.send(Ok(now.clone())).await.is_err() {
                                return;
                            }
                            last = now;
                        }
                    }
                    // The next poll tries again.
                    Err(e) => eprintln!("gRPC stock watch of {product}: {}", e.detail),
                }
                if updates.is_closed() {
                    return;
                }
            }
        });
        Ok(Answer::new(Box::pin(received)))
    }
}

/// Release or commit.
async fn moved(
    call: Call<ReservationRef>,
    to: model::Status,
) -> Result<Answer<pb::Reservation>, Status> {
    let (headers, trace, request) = internal(call);
    let id = reservation_id(request.reservation_id)?;
    authorized(headers, async move {
        crate::moved(&id, to, &trace)
            .await
            .map(|r| reservation(r, false))
    })
    .await
}

/// A reservation method's call: its metadata as headers, its trace (the
/// `traceparent`) and its message.
fn internal<T>(call: Call<T>) -> (HeaderMap, Trace, T) {
    let headers = call.metadata().clone().into_headers();
    let trace = Trace::from_headers(&headers);
    (headers, trace, call.into_inner())
}

/// [`on_instance`] for the reservation methods' callers only: internal, or
/// an administrator (`UNAUTHENTICATED` without a valid token,
/// `PERMISSION_DENIED` for a customer's).
async fn authorized<T: Send + 'static>(
    headers: HeaderMap,
    work: impl Future<Output = Result<T, Problem>> + 'static,
) -> Result<Answer<T>, Status> {
    on_instance(async move {
        bv_auth::require_internal_or_admin(&headers).await?;
        work.await
    })
    .await
    .map(Answer::new)
    .map_err(status)
}

/// Runs `work`, which holds the instance's handles (not `Send`), as a task
/// of the instance, and awaits its result: tonic's service traits want
/// `Send` futures.
async fn on_instance<T: Send + 'static>(work: impl Future<Output = T> + 'static) -> T {
    let (done, result) = oneshot::channel();
    spin_sdk::wasip3::spawn(async move {
        let _ = done.send(work.await);
    });
    result
        .await
        .expect("the instance runs its tasks to their end")
}

fn status(problem: Problem) -> Status {
    bv_grpc::status::from_problem(&problem.body())
}

/// The HTTP API's parsing of a product id (a bad one names no stock record).
fn product_id(raw: String) -> Result<ProductId, Status> {
    crate::product_id(&raw).map_err(status)
}

/// The HTTP API's parsing of a reservation id.
fn reservation_id(raw: String) -> Result<ReservationId, Status> {
    crate::reservation_id(&raw).map_err(status)
}

fn stock(s: model::Stock) -> pb::Stock {
    pb::Stock {
        available: s.available(),
        product_id: s.product_id,
        sku: s.sku,
        on_hand: s.on_hand,
        reserved: s.reserved,
    }
}

fn reservation(r: model::Reservation, replayed: bool) -> pb::Reservation {
    let status = match r.status {
        model::Status::Reserved => pb::ReservationStatus::Reserved,
        model::Status::Released => pb::ReservationStatus::Released,
        model::Status::Committed => pb::ReservationStatus::Committed,
    };
    pb::Reservation {
        reservation_id: r.id.as_str().to_string(),
        order_id: r.order_id,
        status: status.into(),
        items: r
            .items
            .into_iter()
            .map(|i| pb::Line {
                product_id: i.product_id,
                quantity: i.quantity,
            })
            .collect(),
        expires_at: r.expires_at,
        replayed,
    }
}
