//! The manifest parser on arbitrary text: it never panics, and a manifest it
//! accepts keeps the promises the triggers rely on without re-checking
//! (routes that build into a router, components that exist, settings that
//! resolve).
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = Path::new("/fuzz/spin.toml");
    if let Ok(app) = bv_manifest::parse(text, path) {
        let router = bv_routes::Router::build(
            &app.application.http_base,
            app.http_triggers
                .iter()
                .map(|t| (t.route.clone(), t.component.clone())),
        );
        assert!(
            router.is_ok(),
            "an accepted manifest's routes do not build: {router:?}"
        );
        for trigger in &app.http_triggers {
            assert!(app.components.contains_key(&trigger.component));
        }
        for id in app.components.keys() {
            let _ = app.bv_settings_for(id);
        }
    }
    let _ = bv_manifest::parse_runtime_config(text, Path::new("/fuzz/runtime-config.toml"));
});
