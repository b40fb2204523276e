//! The server → client direction: finding where one complete reply ends, without building it,
//! so a proxy can forward the bytes untouched. It must never recurse, never allocate per reply
//! once warm, and never re-lex an element it has already passed.

use crate::error::ProtocolError;
use crate::lex::{LineEnd, Token, next_token};
use crate::limits::Limits;

/// Finds the length of the first complete reply in `buf`, any RESP2 or RESP3 type.
///
/// A convenience over [`ReplyScanner`] for one-off checks; it starts from scratch on every call
/// and may allocate for nested aggregates. A proxy's backend connection should keep a
/// `ReplyScanner` instead.
///
/// Returns `Ok(Some(n))` when `buf[..n]` is exactly one reply (an attribute `|` is included
/// with the reply it annotates), `Ok(None)` when `buf` ends inside it.
///
/// # Errors
///
/// A [`ProtocolError`] when the bytes are not valid RESP or exceed `limits`; streamed types
/// (`$?`, `*?`, ...) are refused with [`ProtocolError::StreamedUnsupported`].
pub fn scan_reply(buf: &[u8], limits: &Limits) -> Result<Option<usize>, ProtocolError> {
    ReplyScanner::new(*limits).scan(buf)
}

/// A resumable reply scanner: finds where each reply ends in a backend connection's buffer.
///
/// It validates every element (lengths, CRLFs, integer/double/boolean syntax, nesting depth)
/// but builds nothing. Between calls that return `Ok(None)` it remembers the element it stopped
/// at and the remaining element count of every open aggregate, so a reply arriving in many
/// small reads is lexed once in total, not once per read. Its only memory is a stack of one
/// `u64` per open aggregate, reused across replies.
#[derive(Debug, Clone, Default)]
pub struct ReplyScanner {
    limits: Limits,
    /// Elements still expected by each open aggregate, innermost last.
    stack: Vec<u64>,
    /// Offset of the element to lex next.
    pos: usize,
    /// Where a partly received line's CRLF search resumes.
    searched: usize,
}

impl ReplyScanner {
    /// A scanner enforcing `limits`.
    pub fn new(limits: Limits) -> Self {
        ReplyScanner {
            limits,
            stack: Vec::new(),
            pos: 0,
            searched: 0,
        }
    }

    /// The limits this scanner enforces.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Forgets a partial scan, so the next call starts at the first byte of its buffer.
    pub fn reset(&mut self) {
        self.stack.clear();
        self.pos = 0;
        self.searched = 0;
    }

    /// Looks for the end of the first reply in `buf`.
    ///
    /// Returns `Ok(Some(n))` when `buf[..n]` holds exactly one complete reply (an attribute
    /// `|` is part of the reply it precedes); the scanner is then reset, so drop (or skip) `n`
    /// bytes and call again for the next reply. Returns `Ok(None)` when `buf` ends inside the
    /// reply: call again with the same bytes plus more, and scanning resumes where it stopped.
    /// Call [`ReplyScanner::reset`] if the buffer is replaced instead.
    ///
    /// # Errors
    ///
    /// A [`ProtocolError`] for bytes that are not valid RESP2/RESP3, exceed the limits, or use
    /// streamed types. The scanner is reset; the connection is out of sync.
    pub fn scan(&mut self, buf: &[u8]) -> Result<Option<usize>, ProtocolError> {
        if self.pos > buf.len() || self.searched > buf.len() {
            // The caller broke the contract (a shorter buffer): start over rather than panic.
            self.reset();
        }
        let result = self.run(buf);
        if !matches!(result, Ok(None)) {
            self.reset();
        }
        result
    }

    fn run(&mut self, buf: &[u8]) -> Result<Option<usize>, ProtocolError> {
        let mut pos = self.pos;
        loop {
            let searched = self.searched.max(pos);
            match next_token(buf, pos, searched, &self.limits)? {
                Token::Incomplete { searched } => {
                    self.pos = pos;
                    self.searched = searched;
                    return Ok(None);
                }
                Token::Open { count, next, .. } if count > 0 => {
                    if self.stack.len() >= self.limits.max_depth {
                        return Err(ProtocolError::TooDeep);
                    }
                    self.stack.push(count);
                    pos = next;
                }
                Token::Open { next, .. } | Token::Leaf { next, .. } => {
                    pos = next;
                    if self.close_elements() {
                        return Ok(Some(pos));
                    }
                }
            }
            self.searched = 0;
        }
    }

    /// Counts one finished element against the open aggregates, closing those it completes.
    /// Returns true when the outermost reply is complete.
    fn close_elements(&mut self) -> bool {
        while let Some(top) = self.stack.last_mut() {
            *top -= 1;
            if *top > 0 {
                return false;
            }
            self.stack.pop();
        }
        true
    }
}

/// Returns the CRLF-terminated first line of a reply (after its type byte) when `buf` holds
/// it, for classifiers that look only at the first line.
pub(crate) fn first_line(buf: &[u8], max_len: usize) -> Option<&[u8]> {
    match crate::lex::line_end(buf, 1, 1, max_len) {
        Ok(LineEnd::At(end)) => buf.get(1..end),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scanning_allocates_nothing_after_warm_up() {
        let mut scanner = ReplyScanner::new(Limits::DEFAULT);
        let reply = b"*2\r\n*1\r\n:1\r\n%1\r\n+k\r\n$1\r\nv\r\n";
        assert_eq!(scanner.scan(reply), Ok(Some(reply.len())));
        let warm = (scanner.stack.as_ptr(), scanner.stack.capacity());
        for _ in 0..1000 {
            assert_eq!(scanner.scan(reply), Ok(Some(reply.len())));
        }
        assert_eq!(warm, (scanner.stack.as_ptr(), scanner.stack.capacity()));
    }

    #[test]
    fn a_declared_element_count_is_never_preallocated() {
        let mut scanner = ReplyScanner::new(Limits::DEFAULT);
        assert_eq!(scanner.scan(b"*4000000000\r\n:1\r\n"), Ok(None));
        assert!(scanner.stack.capacity() < 16);
    }
}
