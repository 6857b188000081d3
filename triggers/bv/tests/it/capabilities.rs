//! The capability policy: every component of `spin.toml` reaches only the
//! outbound hosts `infra/security/capabilities.toml` allows it, and the
//! policy lists nothing the manifest no longer uses.

use std::collections::{BTreeMap, BTreeSet};

use bv_manifest::App;
use serde::Deserialize;

use crate::harness::repo_root;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Policy {
    components: BTreeMap<String, ComponentPolicy>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ComponentPolicy {
    allowed_outbound_hosts: BTreeSet<String>,
}

fn policy() -> Policy {
    let path = repo_root().join("infra/security/capabilities.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    toml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn manifest() -> App {
    bv_manifest::load(&repo_root().join("spin.toml")).unwrap()
}

/// Every difference between the manifest and the policy, one line each.
fn violations(app: &App, policy: &Policy) -> Vec<String> {
    let mut found = Vec::new();
    for (id, component) in &app.components {
        let Some(allowed) = policy.components.get(id) else {
            found.push(format!(
                "component `{id}` is not in the capability policy (its hosts: {:?})",
                component.allowed_outbound_hosts
            ));
            continue;
        };
        for host in &component.allowed_outbound_hosts {
            if !allowed.allowed_outbound_hosts.contains(host) {
                found.push(format!(
                    "component `{id}` is given `{host}`, which the capability policy does not allow"
                ));
            }
        }
        for host in &allowed.allowed_outbound_hosts {
            if !component.allowed_outbound_hosts.contains(host) {
                found.push(format!(
                    "the policy allows component `{id}` `{host}`, which it no longer uses; remove it"
                ));
            }
        }
    }
    for id in policy.components.keys() {
        if !app.components.contains_key(id) {
            found.push(format!(
                "the policy lists component `{id}`, which spin.toml does not have; remove it"
            ));
        }
    }
    found
}

#[test]
fn the_manifest_stays_within_the_capability_policy() {
    let found = violations(&manifest(), &policy());
    assert!(
        found.is_empty(),
        "spin.toml and infra/security/capabilities.toml disagree:\n  {}",
        found.join("\n  ")
    );
}

#[test]
fn a_widened_component_or_a_new_one_is_named() {
    let mut app = manifest();
    let cart = app.components.get_mut("cart").expect("the cart component");
    cart.allowed_outbound_hosts
        .push("https://attacker.example.com".into());
    let mut rogue = app.components["hello"].clone();
    rogue.id = "rogue".into();
    rogue.allowed_outbound_hosts = vec!["*://*:*".into()];
    app.components.insert("rogue".into(), rogue);

    let found = violations(&app, &policy());
    assert_eq!(found.len(), 2, "{found:#?}");
    assert!(found[0].contains("`cart`") && found[0].contains("https://attacker.example.com"));
    assert!(found[1].contains("`rogue` is not in the capability policy"));
}

#[test]
fn a_policy_wider_than_the_manifest_is_named() {
    let mut app = manifest();
    app.components
        .get_mut("product")
        .expect("the product component")
        .allowed_outbound_hosts
        .clear();
    app.components.remove("hello");
    let found = violations(&app, &policy());
    assert_eq!(found.len(), 2, "{found:#?}");
    assert!(found[0].contains("`product`") && found[0].contains("no longer uses"));
    assert!(found[1].contains("`hello`, which spin.toml does not have"));
}
