//! A relay with a proxy's syscall pattern (client → relay → Redis → relay → client, one
//! upstream connection per client), written twice: on tokio (epoll, as the proxy's data path is
//! today) and on io_uring (every receive and send of every connection submitted to one ring,
//! one `io_uring_enter` per loop turn). `run.sh` drives both with redis-benchmark and reads
//! their CPU time, so the decision of issue 16 rests on a measurement of this kernel rather
//! than on the literature. Single-threaded, no parsing: only the I/O path differs.
//!
//! Usage: uring-probe epoll|uring|uring-tuned LISTEN_PORT UPSTREAM_HOST:PORT

use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsRawFd, RawFd};

use io_uring::{IoUring, opcode, types};

const BUFFER: usize = 16 * 1024;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 4 {
        eprintln!("usage: uring-probe epoll|uring LISTEN_PORT UPSTREAM_HOST:PORT");
        std::process::exit(2);
    }
    let (mode, port, upstream) = (args[1].as_str(), args[2].as_str(), args[3].clone());
    let listen = format!("127.0.0.1:{port}");
    match mode {
        "epoll" => epoll(&listen, upstream),
        "uring" => uring(
            &listen,
            &upstream,
            IoUring::new(4096).expect("io_uring_setup (is io_uring allowed here?)"),
        ),
        // The flags for one thread that owns its ring: completions' task work runs when the
        // thread enters the kernel anyway, not through interrupts.
        "uring-tuned" => uring(
            &listen,
            &upstream,
            IoUring::builder()
                .setup_coop_taskrun()
                .setup_single_issuer()
                .setup_defer_taskrun()
                .build(4096)
                .expect("io_uring_setup with DEFER_TASKRUN (kernel 6.1+)"),
        ),
        other => {
            eprintln!("unknown mode {other}");
            std::process::exit(2);
        }
    }
}

fn epoll(listen: &str, upstream: String) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .expect("runtime");
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(listen).await.expect("bind");
        loop {
            let Ok((mut client, _)) = listener.accept().await else {
                continue;
            };
            let upstream = upstream.clone();
            tokio::spawn(async move {
                let _ = client.set_nodelay(true);
                let Ok(mut up) = tokio::net::TcpStream::connect(&upstream).await else {
                    return;
                };
                let _ = up.set_nodelay(true);
                let _ =
                    tokio::io::copy_bidirectional_with_sizes(&mut client, &mut up, BUFFER, BUFFER)
                        .await;
            });
        }
    });
}

/// One direction of a relayed connection: receive from `from` into `buffer`, send it all to
/// `to`, receive again.
struct Pipe {
    from: RawFd,
    to: RawFd,
    buffer: Box<[u8]>,
    /// Bytes received and not yet sent: `sent..filled`.
    filled: usize,
    sent: usize,
    closed: bool,
}

struct Conn {
    client: TcpStream,
    up: TcpStream,
    pipes: [Pipe; 2],
}

const ACCEPT: u64 = u64::MAX;

fn token(conn: usize, pipe: usize, send: bool) -> u64 {
    ((conn as u64) << 2) | ((pipe as u64) << 1) | u64::from(send)
}

fn uring(listen: &str, upstream: &str, mut ring: IoUring) {
    let listener = TcpListener::bind(listen).expect("bind");
    let mut conns: Vec<Option<Conn>> = Vec::new();
    let accept = opcode::Accept::new(
        types::Fd(listener.as_raw_fd()),
        std::ptr::null_mut(),
        std::ptr::null_mut(),
    )
    .build()
    .user_data(ACCEPT);
    push(&mut ring, &accept);
    loop {
        ring.submit_and_wait(1).expect("io_uring_enter");
        let completions: Vec<(u64, i32)> = ring
            .completion()
            .map(|c| (c.user_data(), c.result()))
            .collect();
        for (data, result) in completions {
            if data == ACCEPT {
                push(&mut ring, &accept);
                if result < 0 {
                    continue;
                }
                // SAFETY: the kernel handed us this new descriptor; nothing else owns it.
                let client = unsafe { <TcpStream as std::os::fd::FromRawFd>::from_raw_fd(result) };
                let Ok(up) = TcpStream::connect(upstream) else {
                    continue;
                };
                let _ = client.set_nodelay(true);
                let _ = up.set_nodelay(true);
                let (c, u) = (client.as_raw_fd(), up.as_raw_fd());
                let pipe = |from, to| Pipe {
                    from,
                    to,
                    buffer: vec![0u8; BUFFER].into_boxed_slice(),
                    filled: 0,
                    sent: 0,
                    closed: false,
                };
                // Slots are never reused: a closed connection's buffers stay allocated, so an
                // operation still in flight never writes into freed or reused memory.
                conns.push(None);
                let index = conns.len() - 1;
                conns[index] = Some(Conn {
                    client,
                    up,
                    pipes: [pipe(c, u), pipe(u, c)],
                });
                for p in 0..2 {
                    recv(&mut ring, &mut conns, index, p);
                }
                continue;
            }
            let (index, p, is_send) = (
                (data >> 2) as usize,
                ((data >> 1) & 1) as usize,
                data & 1 == 1,
            );
            let Some(conn) = conns[index].as_mut() else {
                continue;
            };
            if conn.pipes.iter().all(|p| p.closed) {
                continue;
            }
            let pipe = &mut conn.pipes[p];
            if result <= 0 {
                pipe.closed = true;
                if conn.pipes.iter().all(|p| p.closed) || !is_send {
                    // Operations still pending on the sockets complete with errors and find the
                    // connection closed.
                    let _ = conn.client.shutdown(std::net::Shutdown::Both);
                    let _ = conn.up.shutdown(std::net::Shutdown::Both);
                    conn.pipes[0].closed = true;
                    conn.pipes[1].closed = true;
                }
                continue;
            }
            let n = result as usize;
            if is_send {
                pipe.sent += n;
                if pipe.sent < pipe.filled {
                    send(&mut ring, &mut conns, index, p);
                } else {
                    recv(&mut ring, &mut conns, index, p);
                }
            } else {
                pipe.filled = n;
                pipe.sent = 0;
                send(&mut ring, &mut conns, index, p);
            }
        }
    }
}

fn push(ring: &mut IoUring, entry: &io_uring::squeue::Entry) {
    // SAFETY: every buffer an entry points to lives in a boxed slice owned by `conns` for the
    // whole run (connections are never removed).
    unsafe {
        while ring.submission().push(entry).is_err() {
            ring.submit().expect("io_uring_enter");
        }
    }
}

fn recv(ring: &mut IoUring, conns: &mut [Option<Conn>], index: usize, p: usize) {
    let Some(conn) = conns[index].as_mut() else {
        return;
    };
    let pipe = &mut conn.pipes[p];
    let entry = opcode::Recv::new(
        types::Fd(pipe.from),
        pipe.buffer.as_mut_ptr(),
        BUFFER as u32,
    )
    .build()
    .user_data(token(index, p, false));
    push(ring, &entry);
}

fn send(ring: &mut IoUring, conns: &mut [Option<Conn>], index: usize, p: usize) {
    let Some(conn) = conns[index].as_mut() else {
        return;
    };
    let pipe = &mut conn.pipes[p];
    let pending = &pipe.buffer[pipe.sent..pipe.filled];
    let entry = opcode::Send::new(types::Fd(pipe.to), pending.as_ptr(), pending.len() as u32)
        .build()
        .user_data(token(index, p, true));
    push(ring, &entry);
}
