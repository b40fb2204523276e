//! Spec checks the API server's schema and CEL rules cannot make; a failure becomes a
//! `Degraded` condition with [`SpecError::reason`], and nothing in the cluster changes.

use crate::crd::{ExposureMode, RedisClusterSpec, RedisClusterStatus, Topology};

/// An invalid spec: a machine-readable reason (CamelCase) and a sentence for people.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct SpecError {
    /// `OwnedDirective`, `UnsupportedImage`, `NoMemoryLimit`, `BadQuantity`, `BadAutoscaling`,
    /// `BadSyncSource`, `BadBackup`, `BadRestore`.
    pub reason: String,
    /// What is wrong and how to fix it.
    pub message: String,
}

fn invalid(reason: &str, message: String) -> SpecError {
    SpecError {
        reason: reason.to_owned(),
        message,
    }
}

/// `redis.conf` directives the operator sets itself; `redisConfig` may not touch them.
const OWNED: &[&str] = &[
    "port",
    "bind",
    "dir",
    "daemonize",
    "appendonly",
    "appendfsync",
    "appendfilename",
    "save",
    "maxmemory",
    "maxmemory-policy",
    "requirepass",
    "masterauth",
    "masteruser",
    "protected-mode",
    "logfile",
    "replicaof",
    "slaveof",
    "include",
    "replica-announce-ip",
];

/// Checks `spec`.
///
/// # Errors
/// The first problem found.
pub fn validate(spec: &RedisClusterSpec) -> Result<(), SpecError> {
    for key in spec.redis_config.keys() {
        let lower = key.to_ascii_lowercase();
        if OWNED.contains(&lower.as_str()) || lower.starts_with("cluster-") {
            return Err(invalid(
                "OwnedDirective",
                format!(
                    "redisConfig sets `{key}`, which the operator manages (use the spec's own \
                     fields: maxmemoryPercent, maxmemoryPolicy, persistence, …)"
                ),
            ));
        }
    }
    image_version(&spec.image)?;
    if spec.topology == Topology::Sentinel {
        sentinel_shape(spec)?;
    }
    let percent = spec.maxmemory_percent.unwrap_or(80);
    let limit = spec
        .resources
        .as_ref()
        .and_then(|r| r.limits.as_ref())
        .and_then(|l| l.get("memory"));
    if percent > 0 && spec.maxmemory_percent.is_some() && limit.is_none() {
        return Err(invalid(
            "NoMemoryLimit",
            "maxmemoryPercent is set but resources.limits.memory is not: maxmemory is derived \
             from the memory limit"
                .to_owned(),
        ));
    }
    if let Some(limit) = limit {
        quantity_bytes(&limit.0).ok_or_else(|| {
            invalid(
                "BadQuantity",
                format!(
                    "resources.limits.memory `{}` is not a memory quantity",
                    limit.0
                ),
            )
        })?;
    }
    if let Some(size) = &spec.persistence.size {
        quantity_bytes(size).ok_or_else(|| {
            invalid(
                "BadQuantity",
                format!("persistence.size `{size}` is not a quantity such as 10Gi"),
            )
        })?;
    }
    if let Some(auto) = &spec.proxy.autoscaling
        && auto.min_replicas > auto.max_replicas
    {
        return Err(invalid(
            "BadAutoscaling",
            format!(
                "proxy.autoscaling.minReplicas ({}) exceeds maxReplicas ({})",
                auto.min_replicas, auto.max_replicas
            ),
        ));
    }
    if let Some(auto) = spec.autoscaling.as_ref().and_then(|a| a.shards.as_ref()) {
        if auto.min == 0 || auto.min > auto.max {
            return Err(invalid(
                "BadAutoscaling",
                format!(
                    "autoscaling.shards: min ({}) must be at least 1 and at most max ({})",
                    auto.min, auto.max
                ),
            ));
        }
        if auto
            .memory_low_percent
            .is_some_and(|low| low >= auto.memory_high_percent)
        {
            return Err(invalid(
                "BadAutoscaling",
                "autoscaling.shards.memoryLowPercent must be below memoryHighPercent".to_owned(),
            ));
        }
    }
    if let Some(from) = &spec.sync_from {
        sync_address(&from.address)?;
        if let Some(db) = from.merge_dbs.iter().find(|db| from.skip_dbs.contains(db)) {
            return Err(invalid(
                "BadSyncSource",
                format!("syncFrom: database {db} is both in mergeDbs and in skipDbs"),
            ));
        }
        if from.merge_dbs.contains(&0) || from.skip_dbs.contains(&0) {
            return Err(invalid(
                "BadSyncSource",
                "syncFrom: database 0 is always copied; list only other databases in \
                 mergeDbs and skipDbs"
                    .to_owned(),
            ));
        }
    }
    if let Some(backup) = &spec.backup {
        store_url(&backup.url, "backup", "BadBackup")?;
        endpoint(backup.endpoint.as_deref(), "backup", "BadBackup")?;
        cron_schedule(&backup.schedule)?;
        if backup.keep == 0 {
            return Err(invalid(
                "BadBackup",
                "backup.keep must be at least 1 (the newest backup is always kept)".to_owned(),
            ));
        }
    }
    if let Some(from) = &spec.restore_from {
        store_url(&from.url, "restoreFrom", "BadRestore")?;
        endpoint(from.endpoint.as_deref(), "restoreFrom", "BadRestore")?;
        if from.backup.is_some() && from.at.is_some() {
            return Err(invalid(
                "BadRestore",
                "restoreFrom: set backup (a backup by name) or at (a point in time), not both"
                    .to_owned(),
            ));
        }
        if let Some(at) = &from.at
            && at.parse::<k8s_openapi::jiff::Timestamp>().is_err()
        {
            return Err(invalid(
                "BadRestore",
                format!(
                    "restoreFrom.at `{at}` is not an RFC 3339 time such as 2026-12-05T17:04:05Z"
                ),
            ));
        }
    }
    Ok(())
}

/// The shapes a Sentinel group can have, and what it does not support yet.
fn sentinel_shape(spec: &RedisClusterSpec) -> Result<(), SpecError> {
    let shape = |message: String| Err(invalid("BadTopology", message));
    if spec.shards != 1 {
        return shape(format!(
            "topology Sentinel is one master with its replicas: shards must be 1, not {} \
             (replicasPerShard counts the replicas; for more masters use topology Cluster)",
            spec.shards
        ));
    }
    if spec.replicas_per_shard == 0 {
        return shape(
            "topology Sentinel needs replicasPerShard of at least 1: Sentinel fails over to a \
             replica, and a group without one has nothing to fail over to"
                .to_owned(),
        );
    }
    if spec.sentinels < 3 || spec.sentinels.is_multiple_of(2) {
        return shape(format!(
            "sentinels must be odd and at least 3, not {}: a majority of them must survive the \
             loss of one to authorise a failover, and an even count adds no tolerance",
            spec.sentinels
        ));
    }
    let unsupported = [
        (
            spec.exposure.mode != ExposureMode::InCluster,
            "exposure.mode other than InCluster",
        ),
        (spec.sync_from.is_some(), "syncFrom"),
        (spec.backup.is_some(), "backup"),
        (spec.restore_from.is_some(), "restoreFrom"),
        (spec.autoscaling.is_some(), "autoscaling"),
    ];
    if let Some((_, what)) = unsupported.iter().find(|(set, _)| *set) {
        return Err(invalid(
            "UnsupportedForSentinel",
            format!("{what} is not supported with topology Sentinel yet; remove it"),
        ));
    }
    Ok(())
}

/// A spec whose topology differs from the one the objects were built for (the CEL rule
/// refuses the change at the API server; this guards objects from before the rule).
///
/// # Errors
/// `TopologyChange`, saying how to move instead.
pub fn topology_change(
    spec: &RedisClusterSpec,
    status: Option<&RedisClusterStatus>,
) -> Result<(), SpecError> {
    match status.and_then(|s| s.topology) {
        Some(built) if built != spec.topology => Err(invalid(
            "TopologyChange",
            format!(
                "topology is {:?} but this resource was created as {built:?}, and a topology \
                 cannot change in place (the data would have to move): set it back, and create \
                 another RedisCluster with syncFrom to move the data",
                spec.topology
            ),
        )),
        _ => Ok(()),
    }
}

/// A store URL: `s3://BUCKET[/PREFIX]`. Not `file://`: the pods that run backups and restores
/// have a read-only root filesystem and no volume for them, so a file store would be refused
/// only when the first Job failed.
fn store_url(url: &str, field: &str, reason: &str) -> Result<(), SpecError> {
    if url.starts_with("file://") {
        return Err(invalid(
            reason,
            format!(
                "{field}.url `{url}`: file:// stores are for the local platform; on Kubernetes \
                 the backup and restore pods have no storage of their own, use s3://BUCKET/PREFIX"
            ),
        ));
    }
    let bucket = match url.split_once("://") {
        Some(("s3", rest)) => rest.split('/').next().filter(|b| !b.is_empty()),
        _ => None,
    };
    if let Some(bucket) = bucket
        && !valid_bucket(bucket)
    {
        // S3 refuses it only when the first Job runs (seen on a real control plane: three
        // failed attempts before anyone learnt why).
        return Err(invalid(
            reason,
            format!(
                "{field}.url `{url}`: the bucket name `{bucket}` is not valid for S3 (3 to 63 \
                 lowercase letters, digits, '.' and '-', starting and ending with a letter or digit)"
            ),
        ));
    }
    if bucket.is_some() && !url.chars().any(char::is_whitespace) {
        Ok(())
    } else {
        Err(invalid(
            reason,
            format!("{field}.url `{url}` must be s3://BUCKET/PREFIX"),
        ))
    }
}

/// S3's rule for bucket names (the one every S3-compatible store follows).
fn valid_bucket(bucket: &str) -> bool {
    (3..=63).contains(&bucket.len())
        && bucket
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
        && bucket.starts_with(|c: char| c.is_ascii_alphanumeric())
        && bucket.ends_with(|c: char| c.is_ascii_alphanumeric())
}

/// An S3 endpoint, when set: an `http://` or `https://` URL.
fn endpoint(endpoint: Option<&str>, field: &str, reason: &str) -> Result<(), SpecError> {
    match endpoint {
        Some(e) if !(e.starts_with("http://") || e.starts_with("https://")) => Err(invalid(
            reason,
            format!("{field}.endpoint `{e}` must be an http:// or https:// URL"),
        )),
        _ => Ok(()),
    }
}

/// A CronJob schedule: five fields, or a `@hourly`-style macro. The CronJob controller has the
/// final word; this catches what would otherwise only show up as a CronJob that never runs.
fn cron_schedule(schedule: &str) -> Result<(), SpecError> {
    let macros = [
        "@yearly",
        "@annually",
        "@monthly",
        "@weekly",
        "@daily",
        "@midnight",
        "@hourly",
    ];
    let fields: Vec<&str> = schedule.split_whitespace().collect();
    let field_ok = |f: &&str| {
        f.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '*' | ',' | '-' | '/' | '?'))
    };
    if macros.contains(&schedule.trim()) || (fields.len() == 5 && fields.iter().all(field_ok)) {
        Ok(())
    } else {
        Err(invalid(
            "BadBackup",
            format!(
                "backup.schedule `{schedule}` is not a cron schedule (five fields such as                  `0 * * * *`, or @hourly, @daily, …)"
            ),
        ))
    }
}

/// `(host, port)` of a sync source address: `HOST:PORT` or `[IPV6]:PORT`, port 1–65535.
///
/// # Errors
/// `BadSyncSource`, saying what a good address looks like.
pub fn sync_address(address: &str) -> Result<(&str, u16), SpecError> {
    let bad = || {
        invalid(
            "BadSyncSource",
            format!(
                "syncFrom.address `{address}` is not HOST:PORT (such as redis.legacy.svc:6379 \
                 or [fd00::5]:6379)"
            ),
        )
    };
    let (host, port) = address.rsplit_once(':').ok_or_else(bad)?;
    let host = match host.strip_prefix('[') {
        Some(inner) => inner.strip_suffix(']').ok_or_else(bad)?,
        None if host.contains(':') => return Err(bad()),
        None => host,
    };
    let port: u16 = port.parse().map_err(|_| bad())?;
    if host.is_empty() || port == 0 || host.chars().any(char::is_whitespace) {
        return Err(bad());
    }
    Ok((host, port))
}

/// The server and major version an image runs: `redis` 7 or `valkey` 8 (tags such as `7.2`,
/// `7.2.5-alpine`, `8.0`, with any registry and an optional digest).
///
/// # Errors
/// `UnsupportedImage` for anything else, `latest` and untagged images included.
pub fn image_version(image: &str) -> Result<(&'static str, u32), SpecError> {
    let without_digest = image.split('@').next().unwrap_or(image);
    let (repository, tag) = match without_digest.rsplit_once(':') {
        Some((repo, tag)) if !tag.contains('/') => (repo, tag),
        _ => (without_digest, ""),
    };
    let name = repository.rsplit('/').next().unwrap_or(repository);
    let major: Option<u32> = tag.split(['.', '-']).next().and_then(|m| m.parse().ok());
    match (name, major) {
        ("redis", Some(7)) => Ok(("redis", 7)),
        ("valkey", Some(8)) => Ok(("valkey", 8)),
        _ => Err(invalid(
            "UnsupportedImage",
            format!(
                "image `{image}` is not a supported server: use redis 7.x (`redis:7.2`) or valkey \
                 8.x (`valkey/valkey:8.0`) with an explicit version tag"
            ),
        )),
    }
}

/// Bytes in a Kubernetes quantity (`1Gi`, `512Mi`, `2G`, `1000`); `None` when it is not one.
pub fn quantity_bytes(text: &str) -> Option<u64> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(split);
    let multiplier: u64 = match suffix {
        "" => 1,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        "k" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        "T" => 1_000_000_000_000,
        _ => return None,
    };
    if let Ok(whole) = number.parse::<u64>() {
        return whole.checked_mul(multiplier);
    }
    let value: f64 = number.parse().ok()?;
    // Fractional quantities (`1.5Gi`) round down to whole bytes, as Kubernetes does.
    let bytes = value * multiplier as f64;
    (bytes.is_finite() && bytes >= 0.0 && bytes < u64::MAX as f64).then_some(bytes as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(extra: serde_json::Value) -> RedisClusterSpec {
        let mut base = serde_json::json!({"shards": 3});
        if let (Some(base), Some(extra)) = (base.as_object_mut(), extra.as_object()) {
            for (k, v) in extra {
                base.insert(k.clone(), v.clone());
            }
        }
        serde_json::from_value(base).unwrap_or_else(|e| panic!("{e}"))
    }

    fn reason(spec: &RedisClusterSpec) -> String {
        validate(spec).err().map(|e| e.reason).unwrap_or_default()
    }

    #[test]
    fn each_bad_input_gets_its_reason() {
        assert_eq!(reason(&spec(serde_json::json!({}))), "");
        assert_eq!(
            reason(&spec(
                serde_json::json!({"redisConfig": {"cluster-node-timeout": "1"}})
            )),
            "OwnedDirective"
        );
        assert_eq!(
            reason(&spec(serde_json::json!({"redisConfig": {"PORT": "1"}}))),
            "OwnedDirective"
        );
        assert_eq!(
            reason(&spec(serde_json::json!({"image": "redis:latest"}))),
            "UnsupportedImage"
        );
        assert_eq!(
            reason(&spec(serde_json::json!({"maxmemoryPercent": 80}))),
            "NoMemoryLimit"
        );
        assert_eq!(
            reason(&spec(
                serde_json::json!({"persistence": {"size": "ten gigs"}})
            )),
            "BadQuantity"
        );
        assert_eq!(
            reason(&spec(
                serde_json::json!({"proxy": {"autoscaling": {"minReplicas": 5, "maxReplicas": 2}}})
            )),
            "BadAutoscaling"
        );
        for address in [
            "",
            "redis",
            ":6379",
            "redis:",
            "redis:0",
            "redis:99999",
            "a b:1",
            "::1:6379",
        ] {
            assert_eq!(
                reason(&spec(serde_json::json!({"syncFrom": {"address": address}}))),
                "BadSyncSource",
                "{address:?}"
            );
        }
        assert_eq!(
            reason(&spec(
                serde_json::json!({"syncFrom": {"address": "old:6379", "mergeDbs": [1], "skipDbs": [1]}})
            )),
            "BadSyncSource"
        );
        for address in ["old.legacy.svc:6379", "10.0.0.5:7000", "[fd00::5]:6379"] {
            assert_eq!(
                reason(&spec(serde_json::json!({"syncFrom": {"address": address}}))),
                "",
                "{address:?}"
            );
        }
    }

    #[test]
    fn impossible_sentinel_shapes_are_refused() {
        let sentinel = |extra: serde_json::Value| {
            let mut value = serde_json::json!({"topology": "Sentinel", "shards": 1});
            if let (Some(v), Some(e)) = (value.as_object_mut(), extra.as_object()) {
                v.extend(e.clone());
            }
            reason(&spec(value))
        };
        assert_eq!(sentinel(serde_json::json!({})), "");
        assert_eq!(sentinel(serde_json::json!({"sentinels": 5})), "");
        for bad in [
            serde_json::json!({"shards": 3}),
            serde_json::json!({"replicasPerShard": 0}),
            serde_json::json!({"sentinels": 4}),
            serde_json::json!({"sentinels": 1}),
        ] {
            assert_eq!(sentinel(bad.clone()), "BadTopology", "{bad}");
        }
        assert_eq!(
            sentinel(serde_json::json!({"backup": {"url": "s3://bucket/p"}})),
            "UnsupportedForSentinel"
        );
        assert_eq!(
            sentinel(serde_json::json!({"exposure": {"mode": "NodePort"}})),
            "UnsupportedForSentinel"
        );
        // A cluster does not care about `sentinels`.
        assert_eq!(reason(&spec(serde_json::json!({"sentinels": 4}))), "");
    }

    #[test]
    fn a_topology_change_is_refused_with_the_way_to_move() {
        let group = spec(serde_json::json!({"topology": "Sentinel", "shards": 1}));
        let built_as = |t: Topology| RedisClusterStatus {
            topology: Some(t),
            ..RedisClusterStatus::default()
        };
        assert!(topology_change(&group, None).is_ok());
        assert!(topology_change(&group, Some(&built_as(Topology::Sentinel))).is_ok());
        let refused = topology_change(&group, Some(&built_as(Topology::Cluster)))
            .err()
            .map(|e| (e.reason, e.message))
            .unwrap_or_default();
        assert_eq!(refused.0, "TopologyChange");
        assert!(refused.1.contains("syncFrom"), "{}", refused.1);
    }

    #[test]
    fn backup_and_restore_settings_are_checked() {
        let backup = |b: serde_json::Value| reason(&spec(serde_json::json!({"backup": b})));
        assert_eq!(backup(serde_json::json!({"url": "s3://bucket/redis"})), "");
        assert_eq!(
            backup(serde_json::json!({"url": "s3://bucket", "schedule": "@daily"})),
            ""
        );
        for url in [
            "",
            "s3://",
            "s3:///x",
            "http://b/x",
            "file://relative",
            "file:///backups",
            "s3://b/a b",
            "s3://bk/redis",
            "s3://Backups/redis",
            "s3://-backups/redis",
        ] {
            assert_eq!(
                backup(serde_json::json!({"url": url})),
                "BadBackup",
                "{url:?}"
            );
        }
        for schedule in ["hourly", "0 * * *", "0 * * * * *", "0 * * * ;"] {
            assert_eq!(
                backup(serde_json::json!({"url": "s3://bucket", "schedule": schedule})),
                "BadBackup",
                "{schedule:?}"
            );
        }
        assert_eq!(
            backup(serde_json::json!({"url": "s3://bucket", "endpoint": "minio:9000"})),
            "BadBackup"
        );
        assert_eq!(
            backup(serde_json::json!({"url": "s3://bucket", "keep": 0})),
            "BadBackup"
        );
        let restore = |r: serde_json::Value| reason(&spec(serde_json::json!({"restoreFrom": r})));
        assert_eq!(
            restore(serde_json::json!({"url": "s3://bucket/p", "at": "2026-12-05T17:04:05Z"})),
            ""
        );
        assert_eq!(
            restore(serde_json::json!({"url": "s3://bucket/p", "at": "yesterday"})),
            "BadRestore"
        );
        assert_eq!(
            restore(
                serde_json::json!({"url": "s3://bucket/p", "backup": "x", "at": "2026-12-05T17:04:05Z"})
            ),
            "BadRestore"
        );
        assert_eq!(restore(serde_json::json!({"url": "gs://b"})), "BadRestore");
    }

    #[test]
    fn images_of_both_servers_with_registries_and_digests_are_accepted() {
        assert_eq!(image_version("redis:7.2").ok(), Some(("redis", 7)));
        assert_eq!(
            image_version("registry.example.com:5000/mirror/redis:7.2.5-alpine@sha256:ab").ok(),
            Some(("redis", 7))
        );
        assert_eq!(image_version("valkey/valkey:8.0").ok(), Some(("valkey", 8)));
        assert!(image_version("redis").is_err());
        assert!(image_version("redis:6.2").is_err());
        assert!(image_version("valkey/valkey:7.2").is_err());
    }

    #[test]
    fn quantities_read_like_kubernetes() {
        assert_eq!(quantity_bytes("1Gi"), Some(1 << 30));
        assert_eq!(quantity_bytes("512Mi"), Some(512 << 20));
        assert_eq!(quantity_bytes("2G"), Some(2_000_000_000));
        assert_eq!(quantity_bytes("1.5Gi"), Some(1_610_612_736));
        assert_eq!(quantity_bytes("12"), Some(12));
        assert_eq!(quantity_bytes("1Zi"), None);
        assert_eq!(quantity_bytes("big"), None);
    }
}
