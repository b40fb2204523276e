//! A running sync's admin listener: `GET /metrics` (Prometheus text from the latest status) and
//! `GET /offsets` (the applied source offsets as they are now, JSON: what an online switch
//! polls while proxies hold their clients). A deliberately tiny HTTP/1.1 server on a thread of
//! its own, one request per connection; anything else gets 404.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::status::SyncStatus;
use crate::sync::LiveOffsets;

/// Binds `listen` and serves `latest` and `live` from a thread; returns the address bound
/// (`listen` may ask for port 0).
///
/// # Errors
/// The bind failure.
pub fn serve(
    listen: SocketAddr,
    latest: Arc<Mutex<SyncStatus>>,
    live: Arc<LiveOffsets>,
) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(listen)?;
    let bound = listener.local_addr()?;
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut stream = stream;
            let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
            let mut head = [0u8; 1024];
            let n = stream.read(&mut head).unwrap_or(0);
            let (status, kind, body) = if head[..n].starts_with(b"GET /metrics") {
                let body = latest.lock().map(|s| s.prometheus()).unwrap_or_default();
                ("200 OK", "text/plain; version=0.0.4", body)
            } else if head[..n].starts_with(b"GET /offsets") {
                ("200 OK", "application/json", live.json())
            } else {
                (
                    "404 Not Found",
                    "text/plain",
                    "not found; try /metrics or /offsets\n".to_owned(),
                )
            };
            let _ = write!(
                stream,
                "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    Ok(bound)
}
