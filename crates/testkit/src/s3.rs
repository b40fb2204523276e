//! A real S3-compatible server for tests: `s3s-fs` (the `s3s` project's file-backed server)
//! on a free loopback port, with its own credentials and one bucket, stopped and deleted on
//! drop.
//!
//! The binary is `$CINNABAR_S3S_FS`, else `tools/bin/s3s-fs` in the cargo target dir (where
//! `.ci/setup` installs it), else `s3s-fs` on the `PATH`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::ports::{PortReservation, reserve_port};

/// A running `s3s-fs`.
#[derive(Debug)]
pub struct S3Server {
    child: Option<Child>,
    root: tempfile::TempDir,
    port: PortReservation,
    /// The access key id it accepts.
    pub access_key: String,
    /// The secret key it accepts.
    pub secret_key: String,
    /// The bucket made at start.
    pub bucket: String,
}

/// Where the server binary is.
///
/// # Panics
/// When it is not installed, with the install command.
pub fn s3_server_binary() -> PathBuf {
    if let Some(explicit) = std::env::var_os("CINNABAR_S3S_FS") {
        return PathBuf::from(explicit);
    }
    // Test binaries live in <target dir>/<profile>/deps.
    if let Ok(exe) = std::env::current_exe()
        && let Some(target) = exe.parent().and_then(Path::parent).and_then(Path::parent)
    {
        let installed = target.join("tools/bin/s3s-fs");
        if installed.exists() {
            return installed;
        }
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            if dir.join("s3s-fs").exists() {
                return dir.join("s3s-fs");
            }
        }
    }
    panic!(
        "s3s-fs is missing: run `bash .ci/setup` with the same CARGO_TARGET_DIR as the tests (it runs \
         `cargo install s3s-fs --version 0.14.1 --features binary --locked --root <target dir>/tools`), \
         or set CINNABAR_S3S_FS to the binary"
    );
}

impl S3Server {
    /// Starts a server with a bucket named `backups`.
    ///
    /// # Panics
    /// When the binary is missing or the server does not answer within 20 s.
    pub fn start() -> Self {
        let root = tempfile::tempdir().expect("a temporary directory for the S3 server");
        let bucket = "backups".to_owned();
        std::fs::create_dir_all(root.path().join(&bucket)).expect("the bucket's folder");
        let port = reserve_port();
        let mut server = Self {
            child: None,
            root,
            port,
            access_key: format!("AK{}", rand::random::<u32>()),
            secret_key: format!("SK{}{}", rand::random::<u64>(), rand::random::<u64>()),
            bucket,
        };
        server.launch();
        server
    }

    fn launch(&mut self) {
        let child = Command::new(s3_server_binary())
            .arg("--host")
            .arg("127.0.0.1")
            .arg("--port")
            .arg(self.port.port().to_string())
            .arg("--access-key")
            .arg(&self.access_key)
            .arg("--secret-key")
            .arg(&self.secret_key)
            .arg(self.root.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting s3s-fs");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", self.port.port())).is_err() {
            assert!(
                Instant::now() < deadline,
                "s3s-fs did not listen within 20 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port.port())
    }

    /// `s3://backups/<prefix>`.
    pub fn url(&self, prefix: &str) -> String {
        format!("s3://{}/{prefix}", self.bucket)
    }

    /// Where it keeps objects (`<root>/<bucket>/<key>`), to corrupt one on purpose.
    pub fn root(&self) -> &Path {
        self.root.path()
    }

    /// Stops it (a store that fails); [`restart`](Self::restart) brings it back on the same
    /// port with the same data.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again after [`stop`](Self::stop).
    pub fn restart(&mut self) {
        self.stop();
        self.launch();
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.stop();
    }
}
