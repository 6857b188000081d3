//! The CloudEvents envelope parser on arbitrary text: it never panics, an
//! envelope it accepts survives a round trip unchanged, and schema
//! validation of any accepted envelope never panics either.
#![no_main]

use bv_events::CloudEvent;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(event) = CloudEvent::parse(text) else {
        return;
    };
    let again = CloudEvent::parse(&event.to_json()).expect("a written event parses");
    assert_eq!(event, again);
    let _ = bv_events::decode(text);
});
