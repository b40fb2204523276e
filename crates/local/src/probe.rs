//! Is an endpoint serving? One raw `PING` over TCP, answered by `+PONG`, within a deadline.
//!
//! Used for the proxy, which has no process of its own to watch: only asking it tells whether
//! it serves. Every step has a timeout, so a listener that accepts and never answers cannot
//! hang `up` or `status`.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout};

/// How long one probe may take, connect and reply together.
pub const PING_TIMEOUT: Duration = Duration::from_secs(1);

/// Sends `PING` to `addr` and waits for `+PONG`.
///
/// # Errors
/// What went wrong, as a phrase for messages: `connection refused`, `no reply within 1s`, or the
/// reply it got instead.
pub async fn ping(addr: SocketAddr, limit: Duration) -> Result<(), String> {
    match timeout(limit, exchange(addr)).await {
        Ok(outcome) => outcome,
        Err(_) => Err(format!("no reply within {limit:?}")),
    }
}

/// Probes `addr` every 50 ms until it answers or `limit` has passed.
///
/// # Errors
/// The last probe's failure when the deadline passes first.
pub async fn wait_for_pong(addr: SocketAddr, limit: Duration) -> Result<(), String> {
    let deadline = Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let error = match ping(addr, left.min(PING_TIMEOUT)).await {
            Ok(()) => return Ok(()),
            Err(e) => e,
        };
        if Instant::now() >= deadline {
            return Err(error);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn exchange(addr: SocketAddr) -> Result<(), String> {
    let mut stream = TcpStream::connect(addr).await.map_err(|e| describe(&e))?;
    stream
        .write_all(b"*1\r\n$4\r\nPING\r\n")
        .await
        .map_err(|e| describe(&e))?;
    // Read up to the first line end: `+PONG\r\n`, or an error line worth quoting.
    let mut reply = Vec::with_capacity(16);
    let mut chunk = [0u8; 64];
    while !reply.ends_with(b"\r\n") && reply.len() < 512 {
        let n = stream.read(&mut chunk).await.map_err(|e| describe(&e))?;
        if n == 0 {
            return Err("the connection was closed without a reply".into());
        }
        reply.extend_from_slice(&chunk[..n]);
    }
    if reply.starts_with(b"+PONG\r\n") {
        Ok(())
    } else {
        Err(format!(
            "it replied {:?} instead of +PONG",
            String::from_utf8_lossy(&reply).trim_end()
        ))
    }
}

fn describe(error: &std::io::Error) -> String {
    match error.kind() {
        std::io::ErrorKind::ConnectionRefused => "connection refused".into(),
        _ => error.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_closed_port_is_refused_and_a_silent_listener_times_out() {
        let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = silent.local_addr().unwrap();
        let err = ping(addr, Duration::from_millis(200)).await.unwrap_err();
        assert!(err.contains("no reply within"), "{err}");
        drop(silent);
        let err = ping(addr, Duration::from_millis(200)).await.unwrap_err();
        assert_eq!(err, "connection refused");
    }

    #[tokio::test]
    async fn pong_is_success_and_anything_else_is_quoted() {
        for (reply, expected) in [
            (&b"+PONG\r\n"[..], Ok(())),
            (
                &b"-ERR nope\r\n"[..],
                Err("it replied \"-ERR nope\" instead of +PONG".to_owned()),
            ),
        ] {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let server = tokio::spawn(async move {
                let (mut conn, _) = listener.accept().await.unwrap();
                let mut request = [0u8; 14];
                conn.read_exact(&mut request).await.unwrap();
                conn.write_all(reply).await.unwrap();
            });
            assert_eq!(ping(addr, Duration::from_secs(2)).await, expected);
            server.await.unwrap();
        }
    }
}
