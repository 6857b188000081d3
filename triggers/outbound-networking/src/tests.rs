use super::*;

fn hosts(entries: &[&str]) -> AllowedHosts {
    let entries: Vec<String> = entries.iter().map(|s| s.to_string()).collect();
    AllowedHosts::parse(&entries).unwrap_or_else(|e| panic!("{e}"))
}

fn url(s: &str) -> OutboundUrl {
    OutboundUrl::parse(s).unwrap_or_else(|e| panic!("{e}"))
}

fn allows(entries: &[&str], u: &str) -> bool {
    hosts(entries).allows(&url(u))
}

fn parse_err(entry: &str) -> AllowedHostError {
    AllowedHost::parse(entry).expect_err(entry)
}

#[test]
fn exact_host_with_default_ports() {
    let h = hosts(&["https://example.com"]);
    assert_eq!(h.entries()[0].port, PortPattern::Exact(443));
    assert!(h.allows(&url("https://example.com/path?q=1")));
    assert!(h.allows(&url("https://example.com:443")));
    assert!(h.allows(&url("HTTPS://EXAMPLE.com")), "case-insensitive");
    assert!(!h.allows(&url("http://example.com")), "scheme differs");
    assert!(!h.allows(&url("https://example.com:8443")), "port differs");
    assert!(!h.allows(&url("https://www.example.com")), "host differs");
    assert!(!h.allows(&url("https://example.com.evil.org")));
    assert!(hosts(&["HTTPS://Example.COM"]).allows(&url("https://example.com")));
}

#[test]
fn every_known_scheme_has_its_default_port() {
    for (scheme, port) in [
        ("http", 80),
        ("https", 443),
        ("postgres", 5432),
        ("redis", 6379),
        ("rediss", 6380),
        ("mqtt", 1883),
        ("mqtts", 8883),
        ("mysql", 3306),
    ] {
        let h = AllowedHost::parse(&format!("{scheme}://db.internal")).unwrap();
        assert_eq!(h.port, PortPattern::Exact(port), "{scheme}");
        assert_eq!(
            url(&format!("{scheme}://db.internal/x")).port,
            port,
            "{scheme}"
        );
        assert!(h.allows(&url(&format!("{scheme}://user:pw@db.internal/x"))));
    }
}

#[test]
fn unknown_scheme_requires_a_port() {
    let e = parse_err("foo://example.com");
    assert!(e.reason.contains("no known default port"), "{e}");
    assert!(allows(&["foo://example.com:99"], "foo://example.com:99"));
    assert!(OutboundUrl::parse("foo://example.com").is_err());
    let e = parse_err("*://example.com");
    assert!(e.reason.contains("port is required"), "{e}");
}

#[test]
fn wildcards() {
    assert!(allows(&["*://*:*"], "postgres://anything:1"));
    assert!(allows(&["*://*:*"], "http://[::1]:8080"));
    assert!(allows(&["https://*"], "https://a.b.c"));
    assert!(!allows(&["https://*"], "https://a.b.c:8443"));
    assert!(allows(&["*://example.com:*"], "redis://example.com:1234"));
    assert!(!allows(&["*://example.com:*"], "redis://other.com:1234"));
    assert!(allows(&["https://*:*"], "https://x:1"));
    assert!(!allows(&["https://*:*"], "http://x:1"));
}

#[test]
fn subdomain_wildcard() {
    let h = hosts(&["https://*.example.com"]);
    assert!(h.allows(&url("https://api.example.com")));
    assert!(h.allows(&url("https://a.b.example.com")));
    assert!(
        !h.allows(&url("https://example.com")),
        "strict subdomains only"
    );
    assert!(!h.allows(&url("https://badexample.com")));
}

#[test]
fn ports_and_ranges() {
    assert!(allows(
        &["http://localhost:3000"],
        "http://localhost:3000/x"
    ));
    assert!(!allows(&["http://localhost:3000"], "http://localhost"));
    let h = hosts(&["http://localhost:1000..2000"]);
    assert_eq!(h.entries()[0].port, PortPattern::Range(1000, 2000));
    assert!(h.allows(&url("http://localhost:1000")));
    assert!(h.allows(&url("http://localhost:1999")));
    assert!(
        !h.allows(&url("http://localhost:2000")),
        "end is exclusive, like Spin"
    );
    assert!(!h.allows(&url("http://localhost:999")));
}

#[test]
fn ip_literals_and_cidr() {
    assert!(allows(&["http://127.0.0.1:8080"], "http://127.0.0.1:8080"));
    assert!(!allows(&["http://127.0.0.1:8080"], "http://127.0.0.2:8080"));
    let h = hosts(&["postgres://10.0.0.0/8"]);
    assert!(h.allows(&url("postgres://10.1.2.3/db")));
    assert!(!h.allows(&url("postgres://11.0.0.1/db")));
    assert!(!h.allows(&url("postgres://db.example.com/db")));
    // Host bits in the network address are ignored, like Spin's truncation.
    assert!(allows(
        &["http://192.168.1.77/24:*"],
        "http://192.168.1.5:1"
    ));
    // IPv6, bracketed.
    assert!(allows(&["http://[::1]:8080"], "http://[::1]:8080/x"));
    assert!(allows(&["http://[::1]"], "http://[::1]"));
    assert!(allows(&["http://[fd00::/8]:*"], "http://[fd12::1]:9"));
    assert!(!allows(&["http://[fd00::/8]:*"], "http://[fe80::1]:9"));
    assert!(!allows(&["http://[::1]:*"], "http://127.0.0.1:1"));
}

#[test]
fn trailing_slash_is_tolerated_paths_are_not() {
    assert!(allows(&["https://example.com/"], "https://example.com"));
    assert!(allows(
        &["https://example.com:8443/"],
        "https://example.com:8443"
    ));
    for entry in [
        "https://example.com/api",
        "https://example.com:443/api",
        "https://example.com//",
        "https://example.com/?x=1",
        "https://example.com#frag",
    ] {
        let e = parse_err(entry);
        assert_eq!(e.entry, entry);
        assert!(
            e.reason.contains("path") || e.reason.contains("query"),
            "{entry}: {e}"
        );
    }
}

#[test]
fn self_allows_any_component_of_the_app() {
    let h = hosts(&["http://self"]);
    assert_eq!(h.entries()[0].host, HostPattern::SelfApp);
    assert!(h.allows_chaining_to("api"));
    assert!(h.allows_chaining_to("other"));
    assert!(h.allows(&url("http://api.spin.internal/x")));
    assert!(!h.allows(&url("http://example.com")));
    assert!(hosts(&["https://self"]).allows_chaining_to("api"));
}

#[test]
fn chaining_to_named_components() {
    let h = hosts(&["http://api.spin.internal"]);
    assert!(h.allows_chaining_to("api"));
    assert!(
        h.allows_chaining_to("API"),
        "hosts compare case-insensitively"
    );
    assert!(!h.allows_chaining_to("other"));
    assert!(hosts(&["http://*.spin.internal"]).allows_chaining_to("x"));
    assert!(hosts(&["*://*:*"]).allows_chaining_to("x"));
    assert!(!hosts(&["https://example.com"]).allows_chaining_to("x"));
    assert!(!AllowedHosts::default().allows_chaining_to("x"));
    assert_eq!(service_chaining_target("api.spin.internal:80"), Some("api"));
    assert_eq!(service_chaining_target("api.example.com"), None);
}

#[test]
fn empty_list_denies_everything() {
    let h = AllowedHosts::default();
    assert!(h.is_empty());
    assert!(!h.allows(&url("https://example.com")));
    assert_eq!(AllowedHosts::parse(&[]).unwrap(), h);
}

#[test]
fn bad_entries_are_named_and_explained() {
    for (entry, reason) in [
        ("example.com", "missing scheme"),
        ("*", "missing scheme"),
        ("", "missing scheme"),
        ("insecure:allow-all", "*://*:*"),
        ("ht tp://example.com", "invalid scheme"),
        ("1http://example.com", "invalid scheme"),
        ("https://", "host is empty"),
        ("https://:443", "host is empty"),
        ("https://ex*ample.com", "wildcards are only allowed"),
        ("https://*.*.example.com", "first label"),
        ("https://*.", "invalid host"),
        ("https://exa mple.com", "invalid host"),
        ("https://{{ host }}", "template"),
        ("https://user@example.com", "user information"),
        ("https://example.com:http", "not a number"),
        ("https://example.com:70000", "not a number"),
        ("https://example.com:10..5", "is empty"),
        ("https://example.com:1..x", "invalid port"),
        ("https://10.0.0.0/33", "CIDR prefix"),
        ("https://::1", "brackets"),
        ("https://[::1", "unclosed"),
        ("https://[::1]x", "path"),
    ] {
        let e = parse_err(entry);
        assert_eq!(e.entry, entry);
        assert!(e.reason.contains(reason), "{entry}: {e}");
        assert!(e.to_string().contains(&format!("`{entry}`")));
    }
    // The list parser reports the offending entry.
    let e = AllowedHosts::parse(&["https://ok.com".into(), "bad".into()]).unwrap_err();
    assert_eq!(e.entry, "bad");
}

#[test]
fn outbound_url_parsing() {
    let u = url("https://user:p%40ss@Example.COM:8443/a?b#c");
    assert_eq!(
        u,
        OutboundUrl {
            scheme: "https".into(),
            host: "example.com".into(),
            port: 8443
        }
    );
    assert_eq!(url("http://[::1]/").host, "::1");
    assert_eq!(url("http://[::1]/").to_string(), "http://[::1]:80");
    assert_eq!(url("redis://cache").port, 6379);
    assert!(OutboundUrl::parse("not a url").is_err());
    assert!(OutboundUrl::parse("data:text/plain,hi").is_err());
}
