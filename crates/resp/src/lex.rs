//! Lexing of RESP length headers, reply lines and single reply elements, shared by the request
//! parser, the reply scanner and the value parser so they agree byte for byte on what is valid.
//! It must never allocate, never panic, and never read past the slice it is given.

use crate::error::ProtocolError;
use crate::limits::{Limits, cap};

/// A decoded `<length>\r\n` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Len {
    /// `-1`: a RESP2 null bulk string or null array.
    Null,
    /// A non-negative length.
    N(u64),
}

/// Checks for CRLF at `buf[i..]`: `Ok(Some(i + 2))` when present, `Ok(None)` when the buffer
/// ends before it could be decided, `Err(err)` otherwise.
#[inline(always)]
pub(crate) fn crlf(
    buf: &[u8],
    i: usize,
    err: ProtocolError,
) -> Result<Option<usize>, ProtocolError> {
    match buf.get(i) {
        None => Ok(None),
        Some(b'\r') => match buf.get(i + 1) {
            None => Ok(None),
            Some(b'\n') => Ok(Some(i + 2)),
            Some(_) => Err(err),
        },
        Some(_) => Err(err),
    }
}

/// Reads a length header starting at `buf[i]` (just after the type byte): a canonical
/// decimal (no sign, no leading zero) not above `limit`, or `-1` when `allow_null`, then CRLF.
///
/// Returns the length and the offset just past the CRLF, or `Ok(None)` if the buffer ends
/// first. Fails with `err` as soon as a byte makes the header invalid, so an overlong header
/// is refused without waiting for its end.
#[inline(always)]
pub(crate) fn read_len(
    buf: &[u8],
    mut i: usize,
    limit: u64,
    allow_null: bool,
    err: ProtocolError,
) -> Result<Option<(Len, usize)>, ProtocolError> {
    let Some(&first) = buf.get(i) else {
        return Ok(None);
    };
    let mut value = u64::from(first.wrapping_sub(b'0'));
    if value > 9 {
        if first == b'-' && allow_null {
            return match buf.get(i + 1) {
                None => Ok(None),
                Some(b'1') => Ok(crlf(buf, i + 2, err)?.map(|next| (Len::Null, next))),
                Some(_) => Err(err),
            };
        }
        return Err(err);
    }
    i += 1;
    if value != 0 {
        let limit = cap(limit);
        loop {
            let Some(&b) = buf.get(i) else {
                return Ok(None);
            };
            let digit = b.wrapping_sub(b'0');
            if digit > 9 {
                break;
            }
            value = value * 10 + u64::from(digit);
            if value > limit {
                return Err(err);
            }
            i += 1;
        }
    }
    if value > limit {
        return Err(err);
    }
    Ok(crlf(buf, i, err)?.map(|next| (Len::N(value), next)))
}

/// Where a reply line ends, or how far it has been searched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LineEnd {
    /// The content ends at this offset, which holds the `\r` of its CRLF.
    At(usize),
    /// No CRLF yet; every byte before this offset is valid content (resume the search here).
    Searched(usize),
}

/// Finds the CRLF that ends a line whose content starts at `start`, searching from `from`
/// (`from >= start`, used to resume). Content may not contain CR or LF and may not be longer
/// than `max_len`.
#[inline]
pub(crate) fn line_end(
    buf: &[u8],
    start: usize,
    from: usize,
    max_len: usize,
) -> Result<LineEnd, ProtocolError> {
    let limit = start.saturating_add(max_len);
    let mut i = from.max(start);
    while let Some(&b) = buf.get(i) {
        if b == b'\r' {
            return match buf.get(i + 1) {
                None => Ok(LineEnd::Searched(i)),
                Some(b'\n') => Ok(LineEnd::At(i)),
                Some(_) => Err(ProtocolError::InvalidLineEnd),
            };
        }
        if b == b'\n' {
            return Err(ProtocolError::InvalidLineEnd);
        }
        if i >= limit {
            return Err(ProtocolError::TooBigLine);
        }
        i += 1;
    }
    Ok(LineEnd::Searched(i))
}

/// Parses an integer reply's content: an optional sign and at least one digit, within `i64`.
pub(crate) fn parse_integer(s: &[u8]) -> Result<i64, ProtocolError> {
    let (negative, digits) = match s {
        [b'-', rest @ ..] => (true, rest),
        [b'+', rest @ ..] => (false, rest),
        _ => (false, s),
    };
    if digits.is_empty() {
        return Err(ProtocolError::InvalidInteger);
    }
    // Accumulate as a negative number so i64::MIN is representable.
    let mut value: i64 = 0;
    for &b in digits {
        let digit = b.wrapping_sub(b'0');
        if digit > 9 {
            return Err(ProtocolError::InvalidInteger);
        }
        value = value
            .checked_mul(10)
            .and_then(|v| v.checked_sub(i64::from(digit)))
            .ok_or(ProtocolError::InvalidInteger)?;
    }
    if negative {
        Ok(value)
    } else {
        value.checked_neg().ok_or(ProtocolError::InvalidInteger)
    }
}

/// Parses a double reply's content: `inf`, `-inf`, `nan` (any sign, any case), or a decimal
/// with optional sign, fraction and exponent.
pub(crate) fn parse_double(s: &[u8]) -> Result<f64, ProtocolError> {
    let unsigned = match s {
        [b'-' | b'+', rest @ ..] => rest,
        _ => s,
    };
    if unsigned.eq_ignore_ascii_case(b"inf") || unsigned.eq_ignore_ascii_case(b"nan") {
        // Rust's parser accepts exactly these spellings (and "infinity", refused above).
    } else if unsigned.is_empty()
        || !unsigned
            .iter()
            .all(|&b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'-' | b'+'))
    {
        return Err(ProtocolError::InvalidDouble);
    }
    std::str::from_utf8(s)
        .ok()
        .and_then(|text| text.parse::<f64>().ok())
        .ok_or(ProtocolError::InvalidDouble)
}

/// Checks a big number reply's content: an optional sign and at least one digit.
pub(crate) fn check_big_number(s: &[u8]) -> Result<(), ProtocolError> {
    let digits = match s {
        [b'-' | b'+', rest @ ..] => rest,
        _ => s,
    };
    if !digits.is_empty() && digits.iter().all(u8::is_ascii_digit) {
        Ok(())
    } else {
        Err(ProtocolError::InvalidBigNumber)
    }
}

/// Aggregate reply kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Aggregate {
    Array,
    Map,
    Set,
    Push,
    Attribute,
}

/// A reply element that is complete in itself, with its payload as offsets into the buffer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Leaf {
    Simple(usize, usize),
    Error(usize, usize),
    Integer(i64),
    Bulk(usize, usize),
    NullBulk,
    NullArray,
    Null,
    Double(f64),
    Boolean(bool),
    BigNumber(usize, usize),
    Verbatim(usize, usize),
    BlobError(usize, usize),
}

/// One lexed reply element.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Token {
    /// The buffer ends inside this element. For a line element, `searched` is where the CRLF
    /// search may resume; otherwise it is the element's start.
    Incomplete { searched: usize },
    /// A complete non-aggregate element ending just before `next`.
    Leaf { leaf: Leaf, next: usize },
    /// An aggregate header: `count` child elements follow (already doubled for maps, and
    /// `2 * pairs + 1` for an attribute, whose last child is the attributed reply).
    Open {
        kind: Aggregate,
        count: u64,
        next: usize,
    },
}

/// Lexes the reply element whose type byte is at `buf[pos]`. `searched` resumes a line search
/// (pass `pos` when starting afresh).
#[inline]
pub(crate) fn next_token(
    buf: &[u8],
    pos: usize,
    searched: usize,
    limits: &Limits,
) -> Result<Token, ProtocolError> {
    let Some(&kind) = buf.get(pos) else {
        return Ok(Token::Incomplete { searched: pos });
    };
    match kind {
        b'+' | b'-' | b':' | b'_' | b',' | b'#' | b'(' => {
            line_token(buf, pos, searched, kind, limits)
        }
        b'$' | b'!' | b'=' => blob_token(buf, pos, kind, limits),
        b'*' | b'%' | b'~' | b'>' | b'|' => aggregate_token(buf, pos, kind, limits),
        b';' | b'.' => Err(ProtocolError::StreamedUnsupported),
        got => Err(ProtocolError::InvalidReplyType { got }),
    }
}

fn line_token(
    buf: &[u8],
    pos: usize,
    searched: usize,
    kind: u8,
    limits: &Limits,
) -> Result<Token, ProtocolError> {
    let start = pos + 1;
    let end = match line_end(buf, start, searched, limits.max_line_len)? {
        LineEnd::At(end) => end,
        LineEnd::Searched(searched) => return Ok(Token::Incomplete { searched }),
    };
    let content = buf.get(start..end).unwrap_or_default();
    let leaf = match kind {
        b'+' => Leaf::Simple(start, end),
        b'-' => Leaf::Error(start, end),
        b':' => Leaf::Integer(parse_integer(content)?),
        b'_' if content.is_empty() => Leaf::Null,
        b'_' => return Err(ProtocolError::InvalidNull),
        b',' => Leaf::Double(parse_double(content)?),
        b'#' => match content {
            b"t" => Leaf::Boolean(true),
            b"f" => Leaf::Boolean(false),
            _ => return Err(ProtocolError::InvalidBoolean),
        },
        _ => {
            check_big_number(content)?;
            Leaf::BigNumber(start, end)
        }
    };
    Ok(Token::Leaf {
        leaf,
        next: end + 2,
    })
}

fn blob_token(buf: &[u8], pos: usize, kind: u8, limits: &Limits) -> Result<Token, ProtocolError> {
    let incomplete = Ok(Token::Incomplete { searched: pos });
    if buf.get(pos + 1) == Some(&b'?') {
        return Err(ProtocolError::StreamedUnsupported);
    }
    let err = ProtocolError::InvalidBulkLength;
    let Some((len, start)) = read_len(buf, pos + 1, limits.max_bulk_len, kind == b'$', err)? else {
        return incomplete;
    };
    let len = match len {
        Len::Null => {
            return Ok(Token::Leaf {
                leaf: Leaf::NullBulk,
                next: start,
            });
        }
        Len::N(len) => usize::try_from(len).map_err(|_| err)?,
    };
    let end = start.checked_add(len).ok_or(err)?;
    let Some(next) = crlf(buf, end, ProtocolError::BulkNotTerminated)? else {
        return incomplete;
    };
    let leaf = match kind {
        b'$' => Leaf::Bulk(start, end),
        b'!' => Leaf::BlobError(start, end),
        _ => {
            if len < 4 || buf.get(start + 3) != Some(&b':') {
                return Err(ProtocolError::InvalidVerbatim);
            }
            Leaf::Verbatim(start, end)
        }
    };
    Ok(Token::Leaf { leaf, next })
}

fn aggregate_token(
    buf: &[u8],
    pos: usize,
    kind: u8,
    limits: &Limits,
) -> Result<Token, ProtocolError> {
    if buf.get(pos + 1) == Some(&b'?') {
        return Err(ProtocolError::StreamedUnsupported);
    }
    let err = ProtocolError::InvalidMultibulkLength;
    let Some((len, next)) = read_len(buf, pos + 1, limits.max_aggregate_len, kind == b'*', err)?
    else {
        return Ok(Token::Incomplete { searched: pos });
    };
    let n = match len {
        Len::Null => {
            return Ok(Token::Leaf {
                leaf: Leaf::NullArray,
                next,
            });
        }
        Len::N(n) => n,
    };
    // `n` is capped at 10^18, so doubling cannot overflow.
    let (kind, count) = match kind {
        b'*' => (Aggregate::Array, n),
        b'%' => (Aggregate::Map, 2 * n),
        b'~' => (Aggregate::Set, n),
        b'>' => (Aggregate::Push, n),
        _ => (Aggregate::Attribute, 2 * n + 1),
    };
    Ok(Token::Open { kind, count, next })
}

#[cfg(test)]
mod tests {
    use super::*;

    const E: ProtocolError = ProtocolError::InvalidBulkLength;

    #[test]
    fn length_headers_are_canonical_decimals() {
        assert_eq!(
            read_len(b"0\r\n", 0, 10, false, E),
            Ok(Some((Len::N(0), 3)))
        );
        assert_eq!(
            read_len(b"10\r\n", 0, 10, false, E),
            Ok(Some((Len::N(10), 4)))
        );
        assert_eq!(
            read_len(b"-1\r\n", 0, 10, true, E),
            Ok(Some((Len::Null, 4)))
        );
        for bad in [
            &b"01\r\n"[..],
            b"-1\r\n",
            b"+1\r\n",
            b"\r\n",
            b"1 \r\n",
            b"1\rx",
            b"-0\r\n",
        ] {
            assert_eq!(read_len(bad, 0, 10, false, E), Err(E), "{bad:?}");
        }
        assert_eq!(read_len(b"-2\r\n", 0, 10, true, E), Err(E));
        assert_eq!(read_len(b"-11\r\n", 0, 10, true, E), Err(E));
    }

    #[test]
    fn length_over_limit_fails_before_the_header_ends() {
        assert_eq!(read_len(b"11", 0, 10, false, E), Err(E));
        assert_eq!(read_len(b"1", 0, 10, false, E), Ok(None));
        assert_eq!(read_len(&[b'9'; 40], 0, u64::MAX, false, E), Err(E));
    }

    #[test]
    fn integers_cover_the_whole_i64_range_and_nothing_more() {
        assert_eq!(parse_integer(b"-9223372036854775808"), Ok(i64::MIN));
        assert_eq!(parse_integer(b"9223372036854775807"), Ok(i64::MAX));
        assert_eq!(parse_integer(b"+7"), Ok(7));
        for bad in [
            &b"9223372036854775808"[..],
            b"-9223372036854775809",
            b"",
            b"-",
            b"1.0",
        ] {
            assert_eq!(
                parse_integer(bad),
                Err(ProtocolError::InvalidInteger),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn doubles_accept_resp3_spellings_only() {
        assert_eq!(parse_double(b"1.5"), Ok(1.5));
        assert_eq!(parse_double(b"-inf"), Ok(f64::NEG_INFINITY));
        assert_eq!(parse_double(b"1e+300"), Ok(1e300));
        assert!(parse_double(b"nan").is_ok_and(f64::is_nan));
        for bad in [&b""[..], b"infinity", b"1.5x", b"0x10", b" 1", b"e", b"--1"] {
            assert_eq!(
                parse_double(bad),
                Err(ProtocolError::InvalidDouble),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn line_search_resumes_where_it_stopped() {
        assert_eq!(line_end(b"+hello", 1, 1, 100), Ok(LineEnd::Searched(6)));
        assert_eq!(line_end(b"+hello\r", 1, 6, 100), Ok(LineEnd::Searched(6)));
        assert_eq!(line_end(b"+hello\r\n", 1, 6, 100), Ok(LineEnd::At(6)));
        assert_eq!(
            line_end(b"+he\nllo", 1, 1, 100),
            Err(ProtocolError::InvalidLineEnd)
        );
        assert_eq!(line_end(b"+hello", 1, 1, 4), Err(ProtocolError::TooBigLine));
        assert_eq!(line_end(b"+hell\r\n", 1, 1, 4), Ok(LineEnd::At(5)));
    }
}
