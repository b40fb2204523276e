//! The OpenAPI file (`docs/console-openapi.json`) against the router's own table: every API
//! route is documented with its method, nothing documented is missing from the router, and
//! every documented action says which role it needs and takes the CSRF header.

use std::collections::BTreeSet;

use cinnabar_console::routes::ROUTES;
use serde_json::Value;

fn document() -> Value {
    serde_json::from_str(cinnabar_console::api::OPENAPI).expect("the OpenAPI file is JSON")
}

/// `(METHOD, path)` of every operation the document describes.
fn documented(doc: &Value) -> BTreeSet<(String, String)> {
    let paths = doc["paths"].as_object().expect("paths is an object");
    paths
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .expect("a path item is an object")
                .keys()
                .map(move |method| (method.to_ascii_uppercase(), path.clone()))
        })
        .collect()
}

#[test]
fn the_openapi_file_describes_exactly_the_routes_the_router_serves() {
    let doc = document();
    assert_eq!(doc["openapi"], "3.1.0");
    let served: BTreeSet<(String, String)> = ROUTES
        .iter()
        .filter(|r| r.path.starts_with("/api/"))
        .map(|r| (r.method.to_owned(), r.path.to_owned()))
        .collect();
    let described = documented(&doc);
    let undocumented: Vec<_> = served.difference(&described).collect();
    let phantom: Vec<_> = described.difference(&served).collect();
    assert!(
        undocumented.is_empty(),
        "routes missing from docs/console-openapi.json: {undocumented:?}"
    );
    assert!(phantom.is_empty(), "documented but not served: {phantom:?}");
}

#[test]
fn every_documented_change_needs_the_csrf_header_and_names_its_role() {
    let doc = document();
    for route in ROUTES.iter().filter(|r| r.path.starts_with("/api/")) {
        let operation = &doc["paths"][route.path][route.method.to_ascii_lowercase()];
        let Some(role) = route.role else {
            assert_eq!(
                operation["security"],
                serde_json::json!([]),
                "{} {} needs no login and must say so",
                route.method,
                route.path
            );
            continue;
        };
        if route.method == "GET" {
            continue;
        }
        let takes_csrf = operation["parameters"]
            .as_array()
            .is_some_and(|ps| ps.iter().any(|p| p["name"] == "X-CSRF-Token"));
        assert!(
            takes_csrf,
            "{} {} lacks the CSRF header",
            route.method, route.path
        );
        if route.path != "/api/v1/logout" {
            let description = operation["description"].as_str().unwrap_or_default();
            assert!(
                description.contains(&format!("the {} role", role.name())),
                "{} {} does not name the {} role",
                route.method,
                route.path,
                role.name()
            );
        }
    }
}
