//! The trivial component: `200 Hello from BitVelocity` for any request.
//! Used by the benchmarks, so it does as little as possible.

use spin_sdk::http::{IntoResponse, Request, Response};
use spin_sdk::http_service;

#[http_service]
async fn handle(_req: Request) -> impl IntoResponse {
    Response::builder()
        .status(200)
        .header("content-type", "text/plain")
        .body("Hello from BitVelocity\n".to_string())
        .unwrap()
}
