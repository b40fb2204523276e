//! The one error type of the crate: a malformed or over-limit input, worded so a proxy can send
//! it back verbatim as `-ERR <message>`. It must never carry a copy of the input.

use std::fmt;

/// Why bytes are not valid RESP (or exceed a [`Limits`](crate::Limits) bound).
///
/// `Display` starts with `Protocol error: ` and mirrors Redis's own wording where Redis has one,
/// so a proxy can answer a client with `-ERR {error}\r\n` and close the connection, exactly like
/// Redis does. The message never contains CR or LF: offending bytes are shown escaped.
///
/// After any of these errors the stream is out of sync; the only safe continuation is to close
/// the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    /// An aggregate count (`*N` in a request; `*`, `%`, `~`, `>` or `|` in a reply) is not a
    /// canonical decimal, is negative other than `*-1`, or exceeds the configured maximum.
    #[error("Protocol error: invalid multibulk length")]
    InvalidMultibulkLength,
    /// A bulk length (`$N`, `!N`, `=N`) is not a canonical decimal, is negative (other than a
    /// reply's `$-1`), or exceeds [`Limits::max_bulk_len`](crate::Limits::max_bulk_len).
    #[error("Protocol error: invalid bulk length")]
    InvalidBulkLength,
    /// A multibulk request has something other than `$` where an argument must start.
    #[error("Protocol error: expected '$', got '{}'", ByteDisplay(*got))]
    ExpectedBulk {
        /// The byte found instead of `$`.
        got: u8,
    },
    /// A bulk string's data is not followed by CRLF.
    #[error("Protocol error: bulk string not terminated by CRLF")]
    BulkNotTerminated,
    /// An inline request line is longer than
    /// [`Limits::max_inline_len`](crate::Limits::max_inline_len).
    #[error("Protocol error: too big inline request")]
    TooBigInlineRequest,
    /// An inline request has an unterminated quote, or a closing quote not followed by a space.
    #[error("Protocol error: unbalanced quotes in request")]
    UnbalancedQuotes,
    /// A reply starts with a byte that is not a RESP2/RESP3 type.
    #[error("Protocol error: invalid reply type byte '{}'", ByteDisplay(*got))]
    InvalidReplyType {
        /// The unknown type byte.
        got: u8,
    },
    /// A reply line (`+`, `-`, `:`, `_`, `,`, `#`, `(`) contains a bare CR or LF.
    #[error("Protocol error: reply line not terminated by CRLF")]
    InvalidLineEnd,
    /// A reply line is longer than [`Limits::max_line_len`](crate::Limits::max_line_len).
    #[error("Protocol error: too big reply line")]
    TooBigLine,
    /// An integer reply (`:`) is not a decimal that fits in an `i64`.
    #[error("Protocol error: invalid integer")]
    InvalidInteger,
    /// A double reply (`,`) is not a decimal, `inf`, `-inf` or `nan`.
    #[error("Protocol error: invalid double")]
    InvalidDouble,
    /// A boolean reply (`#`) is neither `t` nor `f`.
    #[error("Protocol error: invalid boolean")]
    InvalidBoolean,
    /// A RESP3 null (`_`) has content before its CRLF.
    #[error("Protocol error: invalid null")]
    InvalidNull,
    /// A big number reply (`(`) is not an optionally signed run of digits.
    #[error("Protocol error: invalid big number")]
    InvalidBigNumber,
    /// A verbatim string (`=`) is shorter than 4 bytes or lacks the `:` after its format.
    #[error("Protocol error: invalid verbatim string")]
    InvalidVerbatim,
    /// Aggregates are nested deeper than [`Limits::max_depth`](crate::Limits::max_depth).
    #[error("Protocol error: nesting too deep")]
    TooDeep,
    /// A RESP3 streamed string or aggregate (`$?`, `*?`, `;`, `.`, ...). Redis never sends
    /// them, so they are refused rather than buffered without bound.
    #[error("Protocol error: streamed types are not supported")]
    StreamedUnsupported,
}

/// Shows one byte as itself when printable ASCII, else as `\xHH`, so that error messages
/// stay on one line.
struct ByteDisplay(u8);

impl fmt::Display for ByteDisplay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_ascii_graphic() || self.0 == b' ' {
            write!(f, "{}", char::from(self.0))
        } else {
            write!(f, "\\x{:02x}", self.0)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_mirror_redis_wording() {
        assert_eq!(
            ProtocolError::InvalidMultibulkLength.to_string(),
            "Protocol error: invalid multibulk length"
        );
        assert_eq!(
            ProtocolError::InvalidBulkLength.to_string(),
            "Protocol error: invalid bulk length"
        );
        assert_eq!(
            ProtocolError::ExpectedBulk { got: b'x' }.to_string(),
            "Protocol error: expected '$', got 'x'"
        );
        assert_eq!(
            ProtocolError::TooBigInlineRequest.to_string(),
            "Protocol error: too big inline request"
        );
        assert_eq!(
            ProtocolError::UnbalancedQuotes.to_string(),
            "Protocol error: unbalanced quotes in request"
        );
    }

    #[test]
    fn unprintable_bytes_in_messages_are_escaped_so_the_error_line_stays_framed() {
        assert_eq!(
            ProtocolError::ExpectedBulk { got: b'\r' }.to_string(),
            "Protocol error: expected '$', got '\\x0d'"
        );
        assert_eq!(
            ProtocolError::InvalidReplyType { got: 0xff }.to_string(),
            "Protocol error: invalid reply type byte '\\xff'"
        );
    }
}
