//! The product cache's counters in Prometheus' text format. The runtime's
//! own `/metrics` only knows the host, so the component keeps its counters
//! in Redis (shared by every instance) and serves them itself.

use bytes::Bytes;
use spin_sdk::http::{FullBody, Response};

use bv_service::Reply;

/// The exposition of `hits` and `misses`.
pub fn exposition(hits: u64, misses: u64) -> String {
    let lookups = hits + misses;
    let ratio = if lookups == 0 {
        0.0
    } else {
        hits as f64 / lookups as f64
    };
    format!(
        "# HELP cart_product_cache_hits_total Product lookups the cart answered from its cache.\n\
         # TYPE cart_product_cache_hits_total counter\n\
         cart_product_cache_hits_total {hits}\n\
         # HELP cart_product_cache_misses_total Product lookups the cart had to ask the product service for.\n\
         # TYPE cart_product_cache_misses_total counter\n\
         cart_product_cache_misses_total {misses}\n\
         # HELP cart_product_cache_hit_ratio Hits over all product lookups so far (0 before the first).\n\
         # TYPE cart_product_cache_hit_ratio gauge\n\
         cart_product_cache_hit_ratio {ratio}\n"
    )
}

/// The 200 answer.
pub fn reply(hits: u64, misses: u64) -> Reply {
    Response::builder()
        .status(200)
        .header("content-type", "text/plain; version=0.0.4; charset=utf-8")
        .body(FullBody::new(Bytes::from(exposition(hits, misses))))
        .expect("a valid status")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposes_counters_and_ratio() {
        let text = exposition(0, 0);
        assert!(
            text.contains("\ncart_product_cache_hit_ratio 0\n"),
            "{text}"
        );
        let text = exposition(3, 1);
        assert!(
            text.contains("\ncart_product_cache_hits_total 3\n"),
            "{text}"
        );
        assert!(
            text.contains("\ncart_product_cache_misses_total 1\n"),
            "{text}"
        );
        assert!(
            text.contains("\ncart_product_cache_hit_ratio 0.75\n"),
            "{text}"
        );
        assert_eq!(text.matches("# TYPE ").count(), 3);
    }
}
