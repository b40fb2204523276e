//! `cinnabar sync status` and `cinnabar sync verify` as a user runs them, against real
//! redis-server processes.

// Helpers outside #[test] functions panic on purpose: a panic is the failure report.
#![allow(clippy::unwrap_used)]

use cinnabar_testkit::TestServer;

mod support;
use support::{cinnabar, stderr};

fn set(server: &TestServer, key: &str, value: &str) {
    let mut conn = redis::Client::open(server.url())
        .unwrap()
        .get_connection()
        .unwrap();
    redis::cmd("SET")
        .arg(key)
        .arg(value)
        .exec(&mut conn)
        .unwrap();
}

#[test]
fn verify_exits_0_on_identical_data_and_names_each_difference_otherwise() {
    let (source, target) = (TestServer::start(), TestServer::start());
    for (key, value) in [("a", "1"), ("b", "2"), ("c", "3")] {
        set(&source, key, value);
        set(&target, key, value);
    }
    let verify = || {
        cinnabar()
            .args(["sync", "verify", "--from"])
            .arg(source.addr().to_string())
            .arg("--to")
            .arg(target.addr().to_string())
            .output()
            .unwrap()
    };
    let out = verify();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{text}{}", stderr(&out));
    assert!(
        text.contains("3 keys compared, 0 difference(s): identical"),
        "{text}"
    );

    set(&source, "only-here", "x");
    set(&target, "b", "changed");
    let out = verify();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(1), "{text}{}", stderr(&out));
    assert!(text.contains("only-here: missing on the target"), "{text}");
    assert!(text.contains("b: value differs"), "{text}");
    assert!(text.contains("2 difference(s): NOT identical"), "{text}");
}

#[test]
fn status_without_a_running_sync_says_where_it_looked() {
    let dir = tempfile::tempdir().unwrap();
    let out = cinnabar()
        .args(["sync", "status", "--state"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("no sync status in"), "{err}");
}
