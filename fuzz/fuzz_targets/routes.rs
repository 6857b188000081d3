//! The route matcher: the input's lines are an application base, routes, and
//! (last) a request path. Parsing, building and matching never panic, and a
//! match is consistent with the path it was asked about.
#![no_main]

use bv_routes::{RouteSpec, Router};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let lines: Vec<&str> = text.split('\n').collect();
    let [base, routes @ .., path] = lines.as_slice() else {
        return;
    };
    let _ = bv_routes::normalize_base(base);
    let specs: Vec<(RouteSpec, usize)> = routes
        .iter()
        .enumerate()
        .filter_map(|(i, r)| RouteSpec::parse(r).ok().map(|spec| (spec, i)))
        .collect();
    for (spec, _) in &specs {
        let _ = spec.canonical();
    }
    let Ok(router) = Router::build(base, specs) else {
        return;
    };
    if let Some(matched) = router.route(path) {
        assert!(*matched.target < routes.len());
        assert!(
            path.ends_with(&matched.path_info) || matched.path_info.is_empty(),
            "path info {:?} is not the end of {path:?}",
            matched.path_info
        );
        assert!(router
            .routes()
            .any(|(based, _)| based == matched.based_route));
    }
});
