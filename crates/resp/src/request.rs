//! The client → server direction: one command at a time from the front of a connection's read
//! buffer, as offsets into that buffer. It must never copy a multibulk argument, never allocate
//! once a connection's [`Request`] has warmed up, and never re-scan bytes it has already judged.

use std::ops::Range;

use crate::error::ProtocolError;
use crate::inline;
use crate::lex::{Len, crlf, read_len};
use crate::limits::Limits;

/// What [`RequestParser::parse`] found at the front of the buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parsed {
    /// One command is complete in the first `consumed` bytes; its arguments are in the
    /// [`Request`]. Drop `consumed` bytes from the buffer before parsing the next command.
    Complete {
        /// Bytes taken by the command, line terminators included.
        consumed: usize,
    },
    /// The first `consumed` bytes are an item Redis ignores: an empty or blank inline line,
    /// `*0\r\n` or `*-1\r\n`. There is no command to run; drop the bytes and parse again.
    Skipped {
        /// Bytes to drop.
        consumed: usize,
    },
    /// The buffer ends inside a command. Read more bytes, append them, and call `parse`
    /// again with the same [`Request`]: parsing resumes where it stopped.
    Incomplete,
}

/// Where a partial parse stopped, kept in the [`Request`] between calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum Resume {
    /// Start from the first byte.
    #[default]
    Fresh,
    /// Multibulk: the next argument's `$` header starts at `pos`; `remaining` arguments
    /// (this one included) are still to come.
    Header { pos: usize, remaining: u64 },
    /// Multibulk: the argument's data spans `start..end`; it needs `end + 2` bytes.
    Data {
        start: usize,
        end: usize,
        remaining: u64,
    },
    /// Inline: none of the first `searched` bytes is a `\n`.
    Inline { searched: usize },
}

/// One parsed command: argument offsets into the buffer given to [`RequestParser::parse`],
/// reused from command to command so parsing allocates nothing after warm-up.
///
/// Keep one `Request` per connection. Its accessors describe the last
/// [`Parsed::Complete`] command; after [`Parsed::Incomplete`] it holds partial state that
/// the next `parse` call resumes from.
///
/// **Where arguments live.** A multibulk argument is a range of the caller's buffer (no copy).
/// An inline command's arguments may need unescaping (`"a\x41\n"`), so all of them are written
/// into a scratch buffer owned by the `Request` (reused, at most
/// [`Limits::max_inline_len`] bytes) and [`Request::is_inline`] is true. Either way,
/// [`Request::arg`] returns the bytes; pass it the same buffer that was parsed.
#[derive(Debug, Clone, Default)]
pub struct Request {
    spans: Vec<(usize, usize)>,
    scratch: Vec<u8>,
    inline: bool,
    resume: Resume,
}

impl Request {
    /// An empty request; its argument list grows on first use and is then reused.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty request with room for `args` arguments before it first allocates.
    pub fn with_capacity(args: usize) -> Self {
        Request {
            spans: Vec::with_capacity(args),
            ..Self::default()
        }
    }

    /// Number of arguments, the command name included.
    pub fn len(&self) -> usize {
        self.spans.len()
    }

    /// True when there are no arguments (before the first complete parse).
    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// True when the command was an inline line: its arguments live in the request's own
    /// scratch buffer and [`Request::arg_range`] returns `None`.
    pub fn is_inline(&self) -> bool {
        self.inline
    }

    /// Argument `i` (0 is the command name), or `None` if there is no such argument or `buf`
    /// is not (a prefix-preserving extension of) the buffer that was parsed.
    #[inline]
    pub fn arg<'a>(&'a self, i: usize, buf: &'a [u8]) -> Option<&'a [u8]> {
        let &(start, end) = self.spans.get(i)?;
        let source = if self.inline { &self.scratch[..] } else { buf };
        source.get(start..end)
    }

    /// All arguments in order. Arguments that `buf` does not cover (wrong buffer) are skipped.
    pub fn args<'a>(&'a self, buf: &'a [u8]) -> impl ExactSizeIterator<Item = &'a [u8]> + 'a {
        let source = if self.inline { &self.scratch[..] } else { buf };
        self.spans
            .iter()
            .map(move |&(start, end)| source.get(start..end).unwrap_or_default())
    }

    /// Byte range of argument `i` in the parsed buffer, for multibulk commands only (`None`
    /// for inline commands, whose arguments are unescaped copies).
    pub fn arg_range(&self, i: usize) -> Option<Range<usize>> {
        if self.inline {
            return None;
        }
        self.spans.get(i).map(|&(start, end)| start..end)
    }

    /// The smallest buffer length that can make progress after [`Parsed::Incomplete`], when
    /// known: while waiting for a bulk argument's data it is the end of that data plus CRLF,
    /// so a caller can reserve the whole argument at once. `None` otherwise.
    pub fn needed_len(&self) -> Option<usize> {
        match self.resume {
            Resume::Data { end, .. } => end.checked_add(2),
            _ => None,
        }
    }

    /// Abandons a partial parse, so the next `parse` starts from the first byte of whatever
    /// buffer it is given. Needed only when a connection's buffer is replaced mid-command.
    pub fn reset(&mut self) {
        self.spans.clear();
        self.inline = false;
        self.resume = Resume::Fresh;
    }

    /// Appends the command in multibulk form (`*N\r\n$len\r\narg\r\n...`) to `out`, e.g. to
    /// forward an inline command to a backend. `buf` is the buffer that was parsed.
    pub fn write_multibulk(&self, buf: &[u8], out: &mut Vec<u8>) {
        crate::encode::array_header(out, self.len());
        for arg in self.args(buf) {
            crate::encode::bulk(out, arg);
        }
    }
}

/// Parses client commands (multibulk and inline) with the given [`Limits`].
///
/// The parser holds only configuration and may be shared by every connection of a worker;
/// per-connection state lives in [`Request`].
#[derive(Debug, Clone, Copy, Default)]
pub struct RequestParser {
    limits: Limits,
}

impl RequestParser {
    /// A parser enforcing `limits`.
    pub fn new(limits: Limits) -> Self {
        RequestParser { limits }
    }

    /// The limits this parser enforces.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Parses one command from the front of `buf` into `req`, the way Redis reads its query
    /// buffer: a first byte `*` means multibulk, anything else an inline line.
    ///
    /// Offsets in `req` are relative to `buf[0]`. After [`Parsed::Incomplete`], call again
    /// with the same `req` and a buffer that starts with the same bytes plus whatever arrived:
    /// parsing resumes where it stopped (a bulk argument's data is never scanned, so a large
    /// value arriving in many small reads costs O(1) per call; an inline line is searched for
    /// its `\n` only once). Call [`Request::reset`] if the buffer is replaced instead.
    ///
    /// Deviations from Redis, all stricter: the CRLF after a bulk argument and after every
    /// header is checked; `*-2` and lower are errors (Redis skips any count ≤ 0); an inline
    /// line is refused when longer than the limit even if its `\n` has arrived (Redis only
    /// checks while the `\n` is missing), so the outcome never depends on how the bytes were
    /// split into reads. Like Redis, an inline line ends at its first NUL byte.
    ///
    /// Redis's "too big mbulk count string" and "too big bulk count string" cannot happen
    /// here: header digits are checked as they arrive, so a header that would grow past 64 KiB
    /// fails far earlier as an invalid multibulk or bulk length.
    ///
    /// # Errors
    ///
    /// A [`ProtocolError`] when the bytes cannot be a valid command or exceed the limits:
    /// invalid multibulk or bulk length, `expected '$'`, missing CRLF after a bulk, too big
    /// inline request, unbalanced quotes. The connection is then out of sync and should be
    /// answered with `-ERR {error}` and closed. `req` is reset.
    #[inline]
    pub fn parse(&self, buf: &[u8], req: &mut Request) -> Result<Parsed, ProtocolError> {
        let resume = std::mem::take(&mut req.resume);
        let result = match resume {
            Resume::Fresh => self.start(buf, req),
            Resume::Header { pos, remaining } if pos <= buf.len() => {
                self.bulks(buf, req, pos, remaining)
            }
            Resume::Data {
                start,
                end,
                remaining,
            } if start <= buf.len() => self.data(buf, req, start, end, remaining),
            Resume::Inline { searched } if searched <= buf.len() => self.inline(buf, req, searched),
            // The caller broke the contract (a shorter buffer): start over rather than panic.
            _ => self.start(buf, req),
        };
        if result.is_err() {
            req.reset();
        }
        result
    }

    fn start(&self, buf: &[u8], req: &mut Request) -> Result<Parsed, ProtocolError> {
        req.spans.clear();
        req.inline = false;
        match buf.first() {
            None => Ok(Parsed::Incomplete),
            Some(b'*') if buf.get(1) == Some(&b'-') => negative_multibulk(buf),
            Some(b'*') => {
                let err = ProtocolError::InvalidMultibulkLength;
                match read_len(buf, 1, self.limits.max_array_len, true, err)? {
                    None => Ok(Parsed::Incomplete),
                    Some((Len::Null | Len::N(0), consumed)) => Ok(Parsed::Skipped { consumed }),
                    Some((Len::N(count), pos)) => self.bulks(buf, req, pos, count),
                }
            }
            Some(_) => self.inline(buf, req, 0),
        }
    }

    /// Reads `remaining` bulk arguments, the first header starting at `pos`.
    #[inline]
    fn bulks(
        &self,
        buf: &[u8],
        req: &mut Request,
        mut pos: usize,
        mut remaining: u64,
    ) -> Result<Parsed, ProtocolError> {
        let err = ProtocolError::InvalidBulkLength;
        while remaining > 0 {
            match buf.get(pos) {
                Some(b'$') => {}
                Some(&got) => return Err(ProtocolError::ExpectedBulk { got }),
                None => return Ok(self.suspend(req, Resume::Header { pos, remaining })),
            }
            let header = read_len(buf, pos + 1, self.limits.max_bulk_len, false, err)?;
            let Some((len, start)) = header else {
                return Ok(self.suspend(req, Resume::Header { pos, remaining }));
            };
            let Len::N(len) = len else { return Err(err) };
            let len = usize::try_from(len).map_err(|_| err)?;
            let end = start.checked_add(len).ok_or(err)?;
            let Some(next) = crlf(buf, end, ProtocolError::BulkNotTerminated)? else {
                return Ok(self.suspend(
                    req,
                    Resume::Data {
                        start,
                        end,
                        remaining,
                    },
                ));
            };
            req.spans.push((start, end));
            pos = next;
            remaining -= 1;
        }
        Ok(Parsed::Complete { consumed: pos })
    }

    /// Resumes while waiting for the data of the argument spanning `start..end`.
    fn data(
        &self,
        buf: &[u8],
        req: &mut Request,
        start: usize,
        end: usize,
        remaining: u64,
    ) -> Result<Parsed, ProtocolError> {
        match crlf(buf, end, ProtocolError::BulkNotTerminated)? {
            None => Ok(self.suspend(
                req,
                Resume::Data {
                    start,
                    end,
                    remaining,
                },
            )),
            Some(next) => {
                req.spans.push((start, end));
                self.bulks(buf, req, next, remaining.saturating_sub(1))
            }
        }
    }

    /// Reads an inline line; `searched` bytes are known to hold no `\n`.
    fn inline(
        &self,
        buf: &[u8],
        req: &mut Request,
        searched: usize,
    ) -> Result<Parsed, ProtocolError> {
        let max = self.limits.max_inline_len;
        // Content plus "\r\n" fits in `max + 2` bytes: never search further than that.
        let window = buf.len().min(max.saturating_add(2));
        let newline = buf
            .get(searched..window)
            .and_then(|rest| rest.iter().position(|&b| b == b'\n'))
            .map(|i| searched + i);
        let Some(newline) = newline else {
            if window < buf.len() {
                return Err(ProtocolError::TooBigInlineRequest);
            }
            // Content is at least every byte so far, less a final '\r' that may precede '\n'.
            let at_least = buf.len() - usize::from(buf.last() == Some(&b'\r'));
            if at_least > max {
                return Err(ProtocolError::TooBigInlineRequest);
            }
            return Ok(self.suspend(
                req,
                Resume::Inline {
                    searched: buf.len(),
                },
            ));
        };
        let mut end = newline;
        if end > 0 && buf.get(end - 1) == Some(&b'\r') {
            end -= 1;
        }
        if end > max {
            return Err(ProtocolError::TooBigInlineRequest);
        }
        let line = buf.get(..end).unwrap_or_default();
        inline::split_args(line, &mut req.scratch, &mut req.spans)?;
        let consumed = newline + 1;
        if req.spans.is_empty() {
            return Ok(Parsed::Skipped { consumed });
        }
        req.inline = true;
        Ok(Parsed::Complete { consumed })
    }

    #[inline]
    fn suspend(&self, req: &mut Request, resume: Resume) -> Parsed {
        req.resume = resume;
        Parsed::Incomplete
    }
}

/// `*-<n>\r\n`: Redis skips any negative multibulk length as it skips `*0` (the connection goes
/// on), but refuses one that is not a canonical decimal (`*-0`, `*-01`, `*-x`).
fn negative_multibulk(buf: &[u8]) -> Result<Parsed, ProtocolError> {
    let err = ProtocolError::InvalidMultibulkLength;
    // Beyond 19 digits the value overflows a 64-bit integer, which Redis refuses.
    const MAX_DIGITS: usize = 19;
    let mut i = 2;
    loop {
        match buf.get(i) {
            None => return Ok(Parsed::Incomplete),
            Some(b'1'..=b'9') => {}
            Some(b'0') if i > 2 => {}
            Some(_) if i > 2 => break,
            Some(_) => return Err(err),
        }
        i += 1;
        if i - 2 > MAX_DIGITS {
            return Err(err);
        }
    }
    match crate::lex::crlf(buf, i, err)? {
        None => Ok(Parsed::Incomplete),
        Some(consumed) => Ok(Parsed::Skipped { consumed }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parsing_allocates_nothing_after_warm_up() {
        let parser = RequestParser::default();
        let mut req = Request::new();
        let buf = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\nSET \"k\" v\r\n";
        let (first, rest) = buf.split_at(27);
        assert_eq!(
            parser.parse(first, &mut req),
            Ok(Parsed::Complete { consumed: 27 })
        );
        assert_eq!(
            parser.parse(rest, &mut req),
            Ok(Parsed::Complete {
                consumed: rest.len()
            })
        );
        let warm = (
            req.spans.as_ptr(),
            req.spans.capacity(),
            req.scratch.as_ptr(),
        );
        for _ in 0..1000 {
            assert!(matches!(
                parser.parse(first, &mut req),
                Ok(Parsed::Complete { .. })
            ));
            assert!(matches!(
                parser.parse(rest, &mut req),
                Ok(Parsed::Complete { .. })
            ));
        }
        assert_eq!(
            warm,
            (
                req.spans.as_ptr(),
                req.spans.capacity(),
                req.scratch.as_ptr()
            )
        );
    }

    #[test]
    fn a_declared_argument_count_is_never_preallocated() {
        let parser = RequestParser::default();
        let mut req = Request::new();
        assert_eq!(
            parser.parse(b"*1048576\r\n$1\r\na\r\n", &mut req),
            Ok(Parsed::Incomplete)
        );
        assert_eq!(req.len(), 1);
        assert!(req.spans.capacity() < 16);
    }
}
