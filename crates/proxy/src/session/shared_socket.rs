//! The writing half of a plain TCP client's socket, shared between its session and the
//! backend connections of its worker, so a backend can write a reply straight to the client
//! (see `Ticket::direct`) instead of waking the session to copy and write it.
//!
//! The session reads through tokio's own `OwnedReadHalf`, whose read clears the socket's
//! readiness after a short read (no `EAGAIN` system call per request), and writes through
//! tokio's own `OwnedWriteHalf`, reached through the `RefCell` in `ClientSocket`: it is borrowed
//! only inside one synchronous poll, and a backend runs on the same thread, never in between.

use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use tokio::io::AsyncWrite;

use crate::ticket::ClientSocket;

/// The session's writing half.
pub(super) struct SharedWrite(pub(super) Rc<ClientSocket>);

impl AsyncWrite for SharedWrite {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.0.writer.borrow_mut()).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0.writer.borrow_mut()).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0.writer.borrow_mut()).poll_shutdown(cx)
    }
}
