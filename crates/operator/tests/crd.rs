//! The checked-in CRD matches the Rust types, the examples are valid `RedisCluster`s, and the Helm
//! chart's values and RBAC are what the operator expects.

#![allow(clippy::unwrap_used)]

use std::path::Path;

use cinnabar_operator::RedisCluster;
use cinnabar_operator::objects::{BuildOptions, build};
use kube::CustomResourceExt;
use serde_json::Value;

fn repo(path: &str) -> String {
    let full = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{}: {e}", full.display()))
}

#[test]
fn the_checked_in_crd_is_what_the_types_generate() {
    let generated = cinnabar_operator::crd::crd_yaml().unwrap();
    for copy in [
        "deploy/crds/redisclusters.cinnabar.io.yaml",
        "deploy/helm/cinnabar/crds/redisclusters.cinnabar.io.yaml",
    ] {
        assert!(
            repo(copy) == generated,
            "{copy} is stale; regenerate it with `cargo run --bin cinnabar -- crd > {copy}`"
        );
    }
}

#[test]
fn the_examples_are_valid_clusters_that_build() {
    for file in [
        "examples/redis-cluster-small.yaml",
        "examples/redis-cluster-production.yaml",
        "examples/redis-cluster-migration.yaml",
        "examples/redis-cluster-online-move.yaml",
        "examples/redis-cluster-backup.yaml",
        "examples/redis-cluster-restore.yaml",
        "examples/redis-sentinel.yaml",
    ] {
        let cluster: RedisCluster =
            serde_saphyr::from_str(&repo(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
        let options = BuildOptions {
            proxy_image: "cinnabar:test".into(),
        };
        build(&cluster, &options).unwrap_or_else(|e| panic!("{file}: {e}"));
    }
}

/// The `openAPIV3Schema` of the generated CRD, as the API server will hold it.
fn crd_schema() -> Value {
    let crd = serde_json::to_value(RedisCluster::crd()).unwrap();
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone()
}

/// What the API server's structural schema would refuse in `value` (unknown fields, which a
/// strict `kubectl apply` rejects and the server otherwise drops; types; enums; bounds; required
/// fields). CEL rules are left to the server: they need a CEL evaluator.
fn schema_problems(schema: &Value, value: &Value, path: &str, problems: &mut Vec<String>) {
    let mut refuse = |why: String| problems.push(format!("{path}: {why}"));
    if value.is_null() {
        if schema["nullable"] != true {
            refuse("null is not allowed".into());
        }
        return;
    }
    if schema["x-kubernetes-int-or-string"] == true {
        if !(value.is_string() || value.is_i64() || value.is_u64()) {
            refuse(format!("{value} is neither an integer nor a string"));
        }
        return;
    }
    if let Some(allowed) = schema["enum"].as_array()
        && !allowed.contains(value)
    {
        refuse(format!("{value} is not one of {allowed:?}"));
    }
    let bounds = |v: f64| {
        schema["minimum"].as_f64().is_none_or(|min| v >= min)
            && schema["maximum"].as_f64().is_none_or(|max| v <= max)
    };
    match schema["type"].as_str() {
        Some("object") => {
            let Some(fields) = value.as_object() else {
                return refuse(format!("{value} is not an object"));
            };
            for required in schema["required"].as_array().into_iter().flatten() {
                if let Some(name) = required.as_str()
                    && !fields.contains_key(name)
                {
                    refuse(format!("{name} is required"));
                }
            }
            for (name, field) in fields {
                let inner = format!("{path}.{name}");
                if let Some(property) = schema["properties"].get(name) {
                    schema_problems(property, field, &inner, problems);
                } else if schema["additionalProperties"].is_object() {
                    schema_problems(&schema["additionalProperties"], field, &inner, problems);
                } else if schema["additionalProperties"] != true
                    && schema["x-kubernetes-preserve-unknown-fields"] != true
                {
                    problems.push(format!("{inner}: unknown field"));
                }
            }
        }
        Some("array") => match value.as_array() {
            Some(items) => {
                for (i, item) in items.iter().enumerate() {
                    schema_problems(&schema["items"], item, &format!("{path}[{i}]"), problems);
                }
            }
            None => refuse(format!("{value} is not an array")),
        },
        Some("string") if !value.is_string() => refuse(format!("{value} is not a string")),
        Some("boolean") if !value.is_boolean() => refuse(format!("{value} is not a boolean")),
        Some("integer") if !(value.is_i64() || value.is_u64()) => {
            refuse(format!("{value} is not an integer"));
        }
        Some("integer" | "number") if !value.as_f64().is_some_and(bounds) => {
            refuse(format!("{value} is out of bounds"));
        }
        _ => {}
    }
}

/// The schema problems of one `RedisCluster` document; the envelope (`apiVersion`, `kind`,
/// `metadata`) is the API server's own.
fn problems_of(document: &Value) -> Vec<String> {
    let mut body = document.clone();
    for envelope in ["apiVersion", "kind", "metadata"] {
        body.as_object_mut().unwrap().remove(envelope);
    }
    let mut problems = Vec::new();
    schema_problems(&crd_schema(), &body, "", &mut problems);
    problems
}

#[test]
fn the_examples_pass_the_crd_schema_with_no_unknown_field() {
    for file in [
        "examples/redis-cluster-small.yaml",
        "examples/redis-cluster-production.yaml",
        "examples/redis-cluster-migration.yaml",
        "examples/redis-cluster-online-move.yaml",
        "examples/redis-cluster-backup.yaml",
        "examples/redis-cluster-restore.yaml",
        "examples/redis-sentinel.yaml",
    ] {
        let document: Value = serde_saphyr::from_str(&repo(file)).unwrap();
        assert_eq!(document["apiVersion"], "cinnabar.io/v1alpha1", "{file}");
        assert_eq!(document["kind"], "RedisCluster", "{file}");
        assert_eq!(problems_of(&document), Vec::<String>::new(), "{file}");
    }
}

#[test]
fn the_schema_check_refuses_typos_bad_enums_and_out_of_range_numbers() {
    let spec =
        |spec: Value| serde_json::json!({"apiVersion": "cinnabar.io/v1alpha1", "spec": spec});
    assert_eq!(
        problems_of(&spec(serde_json::json!({"shards": 3}))),
        Vec::<String>::new()
    );
    for (bad, expected) in [
        (
            serde_json::json!({"shards": 3, "replicaPerShard": 1}),
            ".spec.replicaPerShard: unknown field",
        ),
        (
            serde_json::json!({"shards": 3, "proxy": {"replica": 2}}),
            ".spec.proxy.replica: unknown field",
        ),
        (
            serde_json::json!({"shards": 3, "persistence": {"aof": "sometimes"}}),
            ".spec.persistence.aof",
        ),
        (
            serde_json::json!({"shards": 0}),
            ".spec.shards: 0 is out of bounds",
        ),
        (
            serde_json::json!({"shards": "3"}),
            ".spec.shards: \"3\" is not an integer",
        ),
        (
            serde_json::json!({"replicasPerShard": 1}),
            ".spec: shards is required",
        ),
        (
            serde_json::json!({"shards": 3, "syncFrom": {"adress": "old:6379"}}),
            ".spec.syncFrom: address is required",
        ),
        (
            serde_json::json!({"shards": 3, "syncFrom": {"address": "old:6379", "maxLagSeconds": 0}}),
            ".spec.syncFrom.maxLagSeconds: 0 is out of bounds",
        ),
    ] {
        let problems = problems_of(&spec(bad.clone()));
        assert!(
            problems.iter().any(|p| p.starts_with(expected)),
            "{bad}: {problems:?}"
        );
    }
}

/// The flow-style lists of one rule line (`  verbs: ["get", "list"]`), if `line` is `key`'s.
fn flow_list(line: &str, key: &str) -> Option<Vec<String>> {
    let list = line.trim().trim_start_matches("- ").strip_prefix(key)?;
    let list = list.trim().strip_prefix('[')?.strip_suffix(']')?;
    Some(
        list.split(',')
            .map(|item| item.trim().trim_matches('"').to_owned())
            .collect(),
    )
}

/// Every (API group, resource, verbs) the RBAC template grants, in order, templating ignored.
fn rbac_rules(rbac: &str) -> Vec<(String, String, String)> {
    let mut rules = Vec::new();
    let (mut groups, mut resources) = (Vec::new(), Vec::new());
    for line in rbac.lines() {
        if let Some(list) = flow_list(line, "apiGroups:") {
            groups = list;
        } else if let Some(list) = flow_list(line, "resources:") {
            resources = list;
        } else if let Some(verbs) = flow_list(line, "verbs:") {
            for group in &groups {
                for resource in &resources {
                    rules.push((group.clone(), resource.clone(), verbs.join(" ")));
                }
            }
        }
    }
    rules
}

#[test]
fn the_chart_values_follow_its_schema_and_its_rbac_grants_exactly_what_the_operator_calls() {
    let values_schema: Value =
        serde_json::from_str(&repo("deploy/helm/cinnabar/values.schema.json")).unwrap();
    let mut problems = Vec::new();
    schema_problems(
        &values_schema,
        &serde_json::json!({"replica": 2}),
        "",
        &mut problems,
    );
    assert_eq!(problems, [".replica: unknown field"], "typos are refused");
    for file in [
        "values.yaml",
        "values-sandbox.yaml",
        "values-stage.yaml",
        "values-production.yaml",
    ] {
        let text = repo(&format!("deploy/helm/cinnabar/{file}"));
        let values: Value = serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{file}: {e}"));
        // The chart's values.schema.json (which helm itself enforces) uses only what the
        // structural check knows: types, properties, additionalProperties, enums, bounds.
        let mut problems = Vec::new();
        schema_problems(&values_schema, &values, "", &mut problems);
        assert_eq!(problems, Vec::<String>::new(), "{file}");
    }
    let rbac = repo("deploy/helm/cinnabar/templates/rbac.yaml");
    // What the operator calls: add a verb here and in rbac.yaml together, never a wildcard.
    let expected = [
        ("cinnabar.io", "redisclusters", "get list watch patch"),
        ("cinnabar.io", "redisclusters/status", "patch"),
        ("cinnabar.io", "redisclusters/finalizers", "update"),
        ("apps", "statefulsets", "get list watch create patch delete"),
        ("apps", "deployments", "create patch delete"),
        ("", "services", "list watch create patch delete"),
        ("", "configmaps", "create patch"),
        ("", "secrets", "get create patch"),
        ("", "pods", "get list watch delete"),
        (
            "",
            "persistentvolumeclaims",
            "list create patch delete deletecollection",
        ),
        ("batch", "cronjobs", "create patch delete"),
        ("batch", "jobs", "get list watch create deletecollection"),
        ("policy", "poddisruptionbudgets", "create patch"),
        ("autoscaling", "horizontalpodautoscalers", "create patch"),
        ("events.k8s.io", "events", "create patch"),
        ("monitoring.coreos.com", "servicemonitors", "create patch"),
        ("coordination.k8s.io", "leases", "get create update"),
    ];
    assert_eq!(
        rbac_rules(&rbac),
        expected
            .iter()
            .map(|(group, resource, verbs)| (
                group.to_string(),
                resource.to_string(),
                verbs.to_string()
            ))
            .collect::<Vec<_>>()
    );
    assert!(!rbac.contains("\"*\""), "no wildcards");
    let chart = repo("deploy/helm/cinnabar/Chart.yaml");
    assert!(chart.contains("apiVersion: v2") && chart.contains("name: cinnabar"));
}
