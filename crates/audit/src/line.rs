//! One [`AuditRecord`] as one JSON line: the stable field names and order, done on the writer
//! thread. It never writes a key beyond `max_keys`, a raw key when hashing is on, or the keys
//! and subcommand of a credential-carrying command.

use serde::Serialize;

use crate::keys::{self, KeyHasher};
use crate::record::{AuditRecord, Outcome};
use crate::timestamp;

/// Turns records into lines under the settings in force.
#[derive(Debug, Clone)]
pub(crate) struct LineFormat {
    pub(crate) max_keys: usize,
    /// `Some` when `hash_keys` is on.
    pub(crate) hasher: Option<KeyHasher>,
}

/// The line's fields, in the order written. Every field is always present (`null` when
/// absent), so every line has the same shape.
#[derive(Serialize)]
struct Line<'a> {
    time: String,
    client: String,
    user: &'a str,
    command: String,
    subcommand: Option<String>,
    key_count: usize,
    keys: Vec<String>,
    targets: &'a [String],
    outcome: Outcome,
    error: Option<&'a str>,
    latency_us: u64,
}

impl LineFormat {
    /// Appends `record` as JSON and a newline to `out`.
    ///
    /// # Errors
    /// Only if serde_json fails, which it cannot for these types; the caller counts it as a
    /// write error rather than trusting that.
    pub(crate) fn write(&self, record: &AuditRecord, out: &mut Vec<u8>) -> serde_json::Result<()> {
        let secret_args = record.carries_credentials();
        let keys = if secret_args {
            Vec::new()
        } else {
            record
                .keys
                .iter()
                .take(self.max_keys)
                .map(|key| match &self.hasher {
                    Some(hasher) => hasher.hash(key),
                    None => keys::plain(key),
                })
                .collect()
        };
        let line = Line {
            time: timestamp::rfc3339_millis(record.time),
            client: record.client.to_string(),
            user: &record.user,
            command: record.command.to_ascii_uppercase(),
            subcommand: record
                .subcommand
                .as_ref()
                .filter(|_| !secret_args)
                .map(|s| s.to_ascii_uppercase()),
            key_count: if secret_args { 0 } else { record.key_count },
            keys,
            targets: &record.targets,
            outcome: record.outcome,
            error: record.error.as_deref(),
            latency_us: u64::try_from(record.latency.as_micros()).unwrap_or(u64::MAX),
        };
        let start = out.len();
        match serde_json::to_writer(&mut *out, &line) {
            Ok(()) => {
                out.push(b'\n');
                Ok(())
            }
            Err(e) => {
                // Leave no half line behind for the next record to be glued to.
                out.truncate(start);
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use serde_json::{Value, json};

    use super::*;

    fn format(record: &AuditRecord, max_keys: usize, hasher: Option<KeyHasher>) -> Value {
        let mut out = Vec::new();
        LineFormat { max_keys, hasher }
            .write(record, &mut out)
            .unwrap();
        assert_eq!(out.last(), Some(&b'\n'));
        assert_eq!(out.iter().filter(|&&b| b == b'\n').count(), 1, "one line");
        serde_json::from_slice(&out).unwrap()
    }

    fn client() -> std::net::SocketAddr {
        "10.1.2.3:50123".parse().unwrap()
    }

    #[test]
    fn a_command_record_has_every_field_with_its_documented_name() {
        let record = AuditRecord::command(client(), "ops", "config")
            .with_time(UNIX_EPOCH + Duration::from_millis(1_709_251_199_999))
            .with_subcommand("set")
            .with_keys(["a", "b"], 16)
            .with_targets(["10.0.0.1:6379", "10.0.0.2:6379"])
            .with_outcome(Outcome::Error)
            .with_error("ERR unsupported parameter")
            .with_latency(Duration::from_micros(1234));
        let line = format(&record, 16, None);
        assert_eq!(
            line,
            json!({
                "time": "2024-02-29T23:59:59.999Z",
                "client": "10.1.2.3:50123",
                "user": "ops",
                "command": "CONFIG",
                "subcommand": "SET",
                "key_count": 2,
                "keys": ["a", "b"],
                "targets": ["10.0.0.1:6379", "10.0.0.2:6379"],
                "outcome": "error",
                "error": "ERR unsupported parameter",
                "latency_us": 1234,
            })
        );
    }

    #[test]
    fn fields_are_written_in_the_documented_order_and_absent_ones_as_null() {
        let record = AuditRecord::command("[::1]:7000".parse().unwrap(), "u", "FLUSHALL");
        let mut out = Vec::new();
        LineFormat {
            max_keys: 16,
            hasher: None,
        }
        .write(&record, &mut out)
        .unwrap();
        let text = String::from_utf8(out).unwrap();
        let order = [
            "time",
            "client",
            "user",
            "command",
            "subcommand",
            "key_count",
            "keys",
            "targets",
            "outcome",
            "error",
            "latency_us",
        ];
        let positions: Vec<usize> = order
            .iter()
            .map(|f| text.find(&format!("\"{f}\":")).unwrap())
            .collect();
        assert!(positions.is_sorted(), "{text}");
        let line: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(line["client"], "[::1]:7000");
        assert_eq!(line["subcommand"], Value::Null);
        assert_eq!(line["error"], Value::Null);
        assert_eq!(line["outcome"], "ok");
        assert_eq!(line["keys"], json!([]));
    }

    #[test]
    fn every_outcome_has_its_documented_name() {
        for (outcome, name) in [
            (Outcome::Ok, "ok"),
            (Outcome::Error, "error"),
            (Outcome::Denied, "denied"),
            (Outcome::AuthFailed, "auth_failed"),
        ] {
            let record = AuditRecord::command(client(), "u", "DEL").with_outcome(outcome);
            assert_eq!(format(&record, 16, None)["outcome"], name);
        }
    }

    #[test]
    fn key_count_stays_exact_when_keys_are_capped() {
        let keys: Vec<String> = (0..100).map(|i| format!("k{i}")).collect();
        // The caller copied 20; the writer's setting (3) caps what is written.
        let record = AuditRecord::command(client(), "u", "DEL").with_keys(&keys, 20);
        assert_eq!(record.keys.len(), 20);
        let line = format(&record, 3, None);
        assert_eq!(line["key_count"], 100);
        assert_eq!(line["keys"], json!(["k0", "k1", "k2"]));
        assert_eq!(format(&record, 0, None)["keys"], json!([]));
    }

    #[test]
    fn hashed_keys_never_contain_the_raw_key() {
        let raw = "customer:1234567:email";
        let record = AuditRecord::command(client(), "u", "UNLINK").with_keys([raw], 16);
        let hasher = KeyHasher::new(None);
        let mut out = Vec::new();
        LineFormat {
            max_keys: 16,
            hasher: Some(hasher.clone()),
        }
        .write(&record, &mut out)
        .unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(!text.contains("customer"), "{text}");
        assert!(!text.contains("1234567"), "{text}");
        let line: Value = serde_json::from_str(&text).unwrap();
        let written = line["keys"][0].as_str().unwrap();
        assert!(
            written.starts_with("sha256:") && written.len() == 7 + 16,
            "{written}"
        );
        assert!(written[7..].bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(
            written,
            hasher.hash(raw.as_bytes()),
            "stable within a process"
        );
        assert_eq!(line["key_count"], 1);
    }

    #[test]
    fn an_auth_failure_has_no_place_for_a_password_and_auth_arguments_are_never_written() {
        let line = format(&AuditRecord::auth_failure(client(), "alice"), 16, None);
        assert_eq!(line["command"], "AUTH");
        assert_eq!(line["user"], "alice");
        assert_eq!(line["outcome"], "auth_failed");
        assert_eq!(line["keys"], json!([]));
        // A caller that wrongly passes arguments still leaks nothing.
        for command in ["auth", "HELLO"] {
            let misuse = AuditRecord::command(client(), "alice", command)
                .with_subcommand("hunter2")
                .with_keys(["hunter2"], 16);
            let mut out = Vec::new();
            LineFormat {
                max_keys: 16,
                hasher: None,
            }
            .write(&misuse, &mut out)
            .unwrap();
            let text = String::from_utf8(out).unwrap();
            assert!(!text.contains("hunter2"), "{text}");
        }
    }

    #[test]
    fn text_that_needs_escaping_stays_one_valid_line() {
        let record = AuditRecord::command(client(), "we\"ird\nuser", "SET")
            .with_keys([b"line\nbreak".as_slice(), b"\xfe"], 16)
            .with_error("ERR \"quoted\"\r\n");
        let line = format(&record, 16, None);
        assert_eq!(line["user"], "we\"ird\nuser");
        assert_eq!(line["keys"], json!(["line\nbreak", "hex:fe"]));
        assert_eq!(line["error"], "ERR \"quoted\"\r\n");
    }
}
