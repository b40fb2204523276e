//! TLS on the client listener, with real TLS clients (`redis-cli --tls`) and a certificate made
//! by `openssl` for the test: encrypted clients are served, plain ones are not, and bad files are
//! named at start.

// Helpers outside #[test] functions panic on purpose: a panic is the failure report.
#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use cinnabar_proxy::ProxyConfig;
use cinnabar_proxy::tls::TlsFiles;
use cinnabar_testkit::TestCluster;

/// A self-signed certificate for 127.0.0.1, made with `openssl`.
fn certificate(dir: &Path) -> TlsFiles {
    let files = TlsFiles {
        cert_file: dir.join("cert.pem"),
        key_file: dir.join("key.pem"),
    };
    let made = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args([
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ])
        .arg("-keyout")
        .arg(&files.key_file)
        .arg("-out")
        .arg(&files.cert_file)
        .output()
        .expect("openssl (Debian package openssl) makes the test certificate");
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    files
}

fn redis_cli_tls(port: u16, ca: &Path, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(["--tls", "--cacert"])
        .arg(ca)
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_clients_are_served_and_plain_ones_are_not() {
    let cluster = TestCluster::start(2, 0).await;
    let tmp = tempfile::tempdir().unwrap();
    let files = certificate(tmp.path());
    let mut config = ProxyConfig::new("127.0.0.1:0".parse().unwrap(), cluster.seeds());
    config.tls = Some(files.clone());
    config.audit.enabled = false;
    let proxy = cinnabar_proxy::start(config).unwrap();
    let port = proxy.local_addr().port();

    assert_eq!(
        redis_cli_tls(port, &files.cert_file, &["SET", "secret", "v"]).trim(),
        "OK"
    );
    assert_eq!(
        redis_cli_tls(port, &files.cert_file, &["GET", "secret"]).trim(),
        "v"
    );

    // A plain client gets no Redis reply: the proxy waits for a TLS hello and gives up.
    let mut plain = TcpStream::connect(proxy.local_addr()).unwrap();
    plain
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    plain.write_all(b"PING\r\n").unwrap();
    let mut buf = [0u8; 64];
    let got = plain.read(&mut buf).unwrap_or(0);
    assert!(!buf[..got].starts_with(b"+PONG"), "served in plain text");
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !proxy
        .metrics()
        .contains("cinnabar_tls_handshake_failures_total 1")
    {
        assert!(std::time::Instant::now() < deadline, "{}", proxy.metrics());
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn unusable_certificate_files_are_named_at_start() {
    let cluster = TestCluster::start(2, 0).await;
    let tmp = tempfile::tempdir().unwrap();
    let files = certificate(tmp.path());
    let start = |tls: TlsFiles| {
        let mut config = ProxyConfig::new("127.0.0.1:0".parse().unwrap(), cluster.seeds());
        config.tls = Some(tls);
        cinnabar_proxy::start(config).unwrap_err().to_string()
    };
    let missing = start(TlsFiles {
        cert_file: tmp.path().join("nope.pem"),
        key_file: files.key_file.clone(),
    });
    assert!(missing.contains("nope.pem"), "{missing}");
    std::fs::write(tmp.path().join("empty.pem"), "").unwrap();
    let empty = start(TlsFiles {
        cert_file: files.cert_file.clone(),
        key_file: tmp.path().join("empty.pem"),
    });
    assert!(empty.contains("empty.pem"), "{empty}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reload_picks_up_a_renewed_certificate_for_new_connections() {
    let cluster = TestCluster::start(2, 0).await;
    let tmp = tempfile::tempdir().unwrap();
    let (old_dir, new_dir) = (tmp.path().join("old"), tmp.path().join("new"));
    std::fs::create_dir_all(&old_dir).unwrap();
    std::fs::create_dir_all(&new_dir).unwrap();
    let old = certificate(&old_dir);
    let renewed = certificate(&new_dir);
    // The settings file names fixed paths; renewal replaces the files behind them.
    let live = TlsFiles {
        cert_file: tmp.path().join("cert.pem"),
        key_file: tmp.path().join("key.pem"),
    };
    std::fs::copy(&old.cert_file, &live.cert_file).unwrap();
    std::fs::copy(&old.key_file, &live.key_file).unwrap();
    let file = tmp.path().join("cinnabar.toml");
    std::fs::write(
        &file,
        format!(
            "[audit]\nenabled = false\n\n[tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
            live.cert_file.display(),
            live.key_file.display()
        ),
    )
    .unwrap();
    let mut config = ProxyConfig::new("127.0.0.1:0".parse().unwrap(), cluster.seeds());
    cinnabar_proxy::file::ProxyFile::read(&file)
        .unwrap()
        .apply_to(&mut config);
    config.config_file = Some(file);
    let proxy = cinnabar_proxy::start(config).unwrap();
    let port = proxy.local_addr().port();
    assert_eq!(
        redis_cli_tls(port, &old.cert_file, &["PING"]).trim(),
        "PONG"
    );

    std::fs::copy(&renewed.cert_file, &live.cert_file).unwrap();
    std::fs::copy(&renewed.key_file, &live.key_file).unwrap();
    proxy.reload_from_file().unwrap();
    assert_eq!(
        redis_cli_tls(port, &renewed.cert_file, &["PING"]).trim(),
        "PONG"
    );
    assert_ne!(
        redis_cli_tls(port, &old.cert_file, &["PING"]).trim(),
        "PONG",
        "the old certificate is no longer presented"
    );

    // A broken renewal changes nothing.
    std::fs::write(&live.key_file, "not a key").unwrap();
    assert!(proxy.reload_from_file().is_err());
    assert_eq!(
        redis_cli_tls(port, &renewed.cert_file, &["PING"]).trim(),
        "PONG"
    );
}
