use super::*;

fn r(s: &str) -> RouteSpec {
    RouteSpec::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
}

fn router(base: &str, routes: &[&str]) -> Router<String> {
    Router::build(base, routes.iter().map(|s| (r(s), s.to_string()))).unwrap()
}

/// The raw route that handles `path`, or "" when nothing does.
fn target(router: &Router<String>, path: &str) -> String {
    router
        .route(path)
        .map(|m| m.target.clone())
        .unwrap_or_default()
}

#[test]
fn exact_routes() {
    let rt = router("/", &["/", "/foo", "/foo/bar"]);
    assert_eq!(target(&rt, "/"), "/");
    assert_eq!(target(&rt, "/foo"), "/foo");
    assert_eq!(
        target(&rt, "/foo/"),
        "/foo",
        "one trailing slash is tolerated"
    );
    assert_eq!(target(&rt, "/foo/bar"), "/foo/bar");
    assert_eq!(target(&rt, "/foo/baz"), "");
    assert_eq!(target(&rt, "/foobar"), "");
    assert_eq!(target(&rt, "/foo//"), "");
    assert_eq!(target(&rt, "foo"), "", "paths must be absolute");

    let m = rt.route("/foo/bar").unwrap();
    assert_eq!(m.raw_route, "/foo/bar");
    assert_eq!(m.based_route, "/foo/bar");
    assert_eq!(m.component_route, "/foo/bar");
    assert_eq!(m.path_info, "");
    assert!(m.params.is_empty());
    assert_eq!(m.base, "/");

    let m = rt.route("/").unwrap();
    assert_eq!(m.based_route, "/");
    assert_eq!(m.component_route, "/");
}

#[test]
fn exact_route_does_not_match_deeper_paths() {
    let rt = router("/", &["/"]);
    assert_eq!(target(&rt, "/x"), "");
}

#[test]
fn params() {
    let rt = router("/", &["/users/:id", "/users/:id/posts/:post_id"]);
    let m = rt.route("/users/42").unwrap();
    assert_eq!(m.target, "/users/:id");
    assert_eq!(m.params, vec![("id".to_string(), "42".to_string())]);
    assert_eq!(m.path_info, "");

    let m = rt.route("/users/7/posts/abc").unwrap();
    assert_eq!(
        m.params,
        vec![
            ("id".to_string(), "7".to_string()),
            ("post_id".to_string(), "abc".to_string())
        ]
    );
    // An empty segment is not a parameter value.
    assert_eq!(target(&rt, "/users/"), "");
    assert_eq!(target(&rt, "/users//posts/x"), "");
}

#[test]
fn params_with_wildcard_like_spin_named_wildcards() {
    let rt = router("/", &["/foo/:userid/..."]);
    let m = rt.route("/foo/42/bar").unwrap();
    assert_eq!(m.based_route, "/foo/:userid/...");
    assert_eq!(m.raw_route, "/foo/:userid/...");
    assert_eq!(m.component_route, "/foo/:userid");
    assert_eq!(m.path_info, "/bar");
    assert_eq!(m.params, vec![("userid".to_string(), "42".to_string())]);
}

#[test]
fn wildcard_path_info_matches_spin() {
    let rt = router("/", &["/test/..."]);
    let info = |p: &str| rt.route(p).map(|m| m.path_info);
    assert_eq!(info("/test").as_deref(), Some(""));
    assert_eq!(info("/test/").as_deref(), Some("/"));
    assert_eq!(info("/test/hello").as_deref(), Some("/hello"));
    assert_eq!(info("/test/hello/").as_deref(), Some("/hello/"));
    assert_eq!(info("/test/a/b/c").as_deref(), Some("/a/b/c"));
    assert_eq!(info("/testing"), None, "wildcards match whole segments");
    assert_eq!(info("/"), None);

    let m = rt.route("/test/x").unwrap();
    assert_eq!(m.component_route, "/test");
    assert_eq!(m.based_route, "/test/...");
    assert_eq!(m.raw_route, "/test/...");
}

#[test]
fn root_wildcard_matches_everything() {
    let rt = router("/", &["/..."]);
    for p in ["/", "/foo/bar", "/abc/", "/1/2/3"] {
        assert_eq!(target(&rt, p), "/...", "{p}");
    }
    let m = rt.route("/1/2/3").unwrap();
    assert_eq!(m.path_info, "/1/2/3");
    assert_eq!(m.component_route, "", "Spin strips '/...' leaving ''");
    assert_eq!(rt.route("/").unwrap().path_info, "/");
}

#[test]
fn star_is_a_trailing_wildcard() {
    let rt = router("/", &["/files/*"]);
    let m = rt.route("/files/a/b").unwrap();
    assert_eq!(m.path_info, "/a/b");
    assert_eq!(m.raw_route, "/files/*");
}

#[test]
fn percent_encoded_paths_match_raw() {
    let rt = router("/", &["/a%20b", "/p/:x"]);
    assert_eq!(target(&rt, "/a%20b"), "/a%20b");
    assert_eq!(target(&rt, "/a b"), "");
    let m = rt.route("/p/x%2Fy").unwrap();
    assert_eq!(m.params[0].1, "x%2Fy");
}

#[test]
fn precedence_is_independent_of_insertion_order() {
    let routes = [
        "/...",
        "/one/...",
        "/one/two/...",
        "/one/two/three/...",
        "/one",
        "/one/:x",
        "/one/:x/...",
        "/one/two",
        "/:a/two",
    ];
    let cases = [
        ("/one/two/three/four", "/one/two/three/..."),
        ("/one/two/three", "/one/two/three/..."),
        ("/one/two/x", "/one/two/..."),
        ("/one/two", "/one/two"),
        ("/one/zzz", "/one/:x"),
        ("/one/zzz/q", "/one/:x/..."),
        ("/one", "/one"),
        ("/one/", "/one"),
        ("/nope", "/..."),
        ("/", "/..."),
        ("/uno/two", "/:a/two"),
    ];
    // Try every rotation, forwards and backwards.
    for rot in 0..routes.len() {
        let mut order: Vec<&str> = routes.to_vec();
        order.rotate_left(rot);
        for reversed in [false, true] {
            if reversed {
                order.reverse();
            }
            let rt = router("/", &order);
            for (path, want) in cases {
                assert_eq!(target(&rt, path), want, "path {path} order {order:?}");
            }
        }
    }
}

#[test]
fn literal_beats_param_beats_wildcard_per_segment() {
    // `/a/...` beats `/:x` for `/a`: the first segment decides.
    let rt = router("/", &["/:x", "/a/..."]);
    assert_eq!(target(&rt, "/a"), "/a/...");
    assert_eq!(target(&rt, "/b"), "/:x");
    // A parameter after a literal beats a shorter wildcard prefix.
    let rt = router("/", &["/a/...", "/a/:x/..."]);
    assert_eq!(target(&rt, "/a/b/c"), "/a/:x/...");
    assert_eq!(target(&rt, "/a"), "/a/...");
}

#[test]
fn base_path_is_prefixed() {
    let rt = router("/base", &["/foo", "/foo/bar", "/hello/...", "/"]);
    assert_eq!(target(&rt, "/base/foo"), "/foo");
    assert_eq!(target(&rt, "/base/foo/bar"), "/foo/bar");
    assert_eq!(target(&rt, "/foo"), "");
    assert_eq!(target(&rt, "/base"), "/");
    let m = rt.route("/base/hello/x").unwrap();
    assert_eq!(m.raw_route, "/hello/...");
    assert_eq!(m.based_route, "/base/hello/...");
    assert_eq!(m.component_route, "/base/hello");
    assert_eq!(m.path_info, "/x");
    assert_eq!(m.base, "/base");

    // A trailing slash on the base is dropped, as Spin does.
    let rt = router("/base/", &["/foo"]);
    assert_eq!(rt.routes().next().unwrap().0, "/base/foo");
    assert_eq!(target(&rt, "/base/foo"), "/foo");
}

#[test]
fn invalid_bases_are_rejected() {
    for base in ["base", "/a//b", "/:x", "/a/..."] {
        let err = Router::<()>::build(base, []).unwrap_err();
        assert!(
            matches!(&err, RouteError::InvalidBase { base: b, .. } if b == base),
            "{base}: {err}"
        );
    }
    assert_eq!(normalize_base("/").unwrap(), "");
    assert_eq!(normalize_base("/x/").unwrap(), "/x");
}

#[test]
fn private_routes_are_not_routable() {
    let rt = Router::build(
        "/",
        [
            (r("/a"), "a"),
            (RouteSpec::Private, "private"),
            (RouteSpec::Private, "private2"),
        ],
    )
    .unwrap();
    assert_eq!(rt.len(), 1);
    assert!(rt.routes().all(|(_, t)| !t.starts_with("private")));
    assert!(rt.route("/").is_none());

    let rt = Router::build("/", [(RouteSpec::Private, ())]).unwrap();
    assert!(rt.is_empty());
}

#[test]
fn routes_preserve_insertion_order() {
    let rt = router("/", &["/", "/foo", "/bar", "/whee/..."]);
    let listed: Vec<&str> = rt.routes().map(|(r, _)| r).collect();
    assert_eq!(listed, ["/", "/foo", "/bar", "/whee/..."]);
}

#[test]
fn duplicates_are_rejected() {
    let dup = |routes: &[&str]| Router::build("/", routes.iter().map(|s| (r(s), ()))).map(|_| ());
    for (routes, second) in [
        (&["/foo", "/foo"][..], "/foo"),
        (&["/a/:x", "/a/:y"][..], "/a/:y"),
        (&["/a/...", "/a/..."][..], "/a/..."),
        (&["/a/...", "/a/*"][..], "/a/*"),
        (&["/a", "/a/"][..], "/a/"),
        (&["/...", "/b", "/..."][..], "/..."),
    ] {
        assert_eq!(
            dup(routes),
            Err(RouteError::Duplicate {
                route: second.to_string()
            }),
            "{routes:?}"
        );
    }
    // Different shapes are not duplicates.
    assert_eq!(dup(&["/a/:x", "/a/b", "/a/...", "/a"]), Ok(()));
    assert!(RouteError::Duplicate { route: "/x".into() }
        .to_string()
        .contains("duplicate route `/x`"));
}

#[test]
fn malformed_routes_are_rejected() {
    for (route, reason) in [
        ("", "must start with '/'"),
        ("foo", "must start with '/'"),
        ("//", "empty path segment"),
        ("/a//b", "empty path segment"),
        ("/.../a", "only allowed as the final segment"),
        ("/a/*/b", "only allowed as the final segment"),
        ("/:", "invalid parameter name"),
        ("/:1x", "invalid parameter name"),
        ("/:a.b", "invalid parameter name"),
        ("/:x/:x", "used twice"),
        ("/a?b=c", "query string"),
    ] {
        match RouteSpec::parse(route) {
            Err(RouteError::Invalid {
                route: r,
                reason: why,
            }) => {
                assert_eq!(r, route);
                assert!(why.contains(reason), "{route}: {why}");
            }
            other => panic!("{route}: expected error, got {other:?}"),
        }
    }
    // Building from an unvalidated `RouteSpec::Route` still validates.
    let err = Router::build("/", [(RouteSpec::Route("nope".into()), ())]).unwrap_err();
    assert!(matches!(err, RouteError::Invalid { .. }));
}

#[test]
fn valid_routes_parse() {
    for route in [
        "/",
        "/a",
        "/a/",
        "/...",
        "/a/...",
        "/a/:id",
        "/a/:id/...",
        "/*",
        "/a-b/c_d.e",
    ] {
        assert_eq!(r(route), RouteSpec::Route(route.to_string()));
    }
}

#[test]
fn canonical_erases_param_names() {
    assert_eq!(r("/a/:x").canonical(), r("/a/:y").canonical());
    assert_eq!(r("/a/*").canonical().as_deref(), Some("/a/..."));
    assert_eq!(r("/").canonical().as_deref(), Some("/"));
    assert_eq!(RouteSpec::Private.canonical(), None);
}

#[derive(serde::Deserialize, Debug)]
struct Wrapper {
    route: RouteSpec,
}

fn de(text: &str) -> Result<RouteSpec, String> {
    toml::from_str::<Wrapper>(text)
        .map(|w| w.route)
        .map_err(|e| e.message().to_string())
}

#[test]
fn deserialize_from_string_or_private_table() {
    assert_eq!(de(r#"route = "/a/...""#), Ok(r("/a/...")));
    assert_eq!(de("route = { private = true }"), Ok(RouteSpec::Private));
    let err = de("route = { private = false }").unwrap_err();
    assert!(err.contains("private = false"), "{err}");
    let err = de(r#"route = "nope""#).unwrap_err();
    assert!(err.contains("must start with '/'"), "{err}");
    let err = de("route = { public = true }").unwrap_err();
    assert!(err.contains("unknown field `public`"), "{err}");
    let err = de("route = {}").unwrap_err();
    assert!(err.contains("missing field `private`"), "{err}");
    let err = de("route = 3").unwrap_err();
    assert!(err.contains("route string"), "{err}");
}
