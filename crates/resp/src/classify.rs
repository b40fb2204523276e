//! Cheap looks at the first bytes of a reply: its type, whether it is an error the proxy must
//! act on, and the slot and address of a `MOVED`/`ASK` redirect. It must never scan past the
//! first line nor copy anything: every answer borrows from the reply.

use crate::scan::first_line;

/// The RESP2/RESP3 type of a reply, from its first byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReplyType {
    /// `+` simple string.
    Simple,
    /// `-` simple error.
    Error,
    /// `:` integer.
    Integer,
    /// `$` bulk string, including the RESP2 null `$-1`.
    Bulk,
    /// `*` array, including the RESP2 null `*-1`.
    Array,
    /// `_` RESP3 null.
    Null,
    /// `,` double.
    Double,
    /// `#` boolean.
    Boolean,
    /// `(` big number.
    BigNumber,
    /// `!` blob error.
    BlobError,
    /// `=` verbatim string.
    Verbatim,
    /// `%` map.
    Map,
    /// `~` set.
    Set,
    /// `>` push (out-of-band message: pub/sub, invalidation).
    Push,
    /// `|` attribute, followed by the reply it annotates.
    Attribute,
}

impl ReplyType {
    /// The type announced by a reply's first byte, or `None` for an empty buffer or an
    /// unknown byte.
    pub fn of(reply: &[u8]) -> Option<ReplyType> {
        Some(match reply.first()? {
            b'+' => ReplyType::Simple,
            b'-' => ReplyType::Error,
            b':' => ReplyType::Integer,
            b'$' => ReplyType::Bulk,
            b'*' => ReplyType::Array,
            b'_' => ReplyType::Null,
            b',' => ReplyType::Double,
            b'#' => ReplyType::Boolean,
            b'(' => ReplyType::BigNumber,
            b'!' => ReplyType::BlobError,
            b'=' => ReplyType::Verbatim,
            b'%' => ReplyType::Map,
            b'~' => ReplyType::Set,
            b'>' => ReplyType::Push,
            b'|' => ReplyType::Attribute,
            _ => return None,
        })
    }

    /// True for `-` and `!` errors.
    pub fn is_error(self) -> bool {
        matches!(self, ReplyType::Error | ReplyType::BlobError)
    }
}

/// The error codes a Redis Cluster proxy reacts to, from an error reply's first word.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorClass {
    /// `MOVED <slot> <addr>`: the slot lives elsewhere for good; refresh topology and retry.
    Moved,
    /// `ASK <slot> <addr>`: the slot is migrating; retry once at `addr` after `ASKING`.
    Ask,
    /// `TRYAGAIN`: a multi-key command hit a slot mid-migration; retry later.
    TryAgain,
    /// `CLUSTERDOWN`: the cluster cannot serve the slot right now.
    ClusterDown,
    /// `LOADING`: the node is loading its dataset.
    Loading,
    /// `MASTERDOWN`: a replica lost its master and `replica-serve-stale-data` is off.
    MasterDown,
    /// `READONLY`: a write reached a replica.
    ReadOnly,
    /// `BUSY`: a script or function is running.
    Busy,
    /// `NOREPLICAS`: a master with `min-replicas-to-write` has too few replicas in reach; the
    /// write did not run.
    NoReplicas,
    /// Any other error (`ERR`, `WRONGTYPE`, `NOSCRIPT`, ...).
    Other,
}

/// The first word of an error reply (`-MOVED 1 a:1\r\n` → `MOVED`), or `None` when the reply
/// is not a `-` or `!` error or its first line (or blob) has not fully arrived.
///
/// Looks at the reply's first element only: an attribute before an error is not skipped
/// (Redis never sends one).
pub fn error_code(reply: &[u8]) -> Option<&[u8]> {
    let text = match reply.first()? {
        b'-' => first_line(reply, usize::MAX)?,
        b'!' => blob_error_text(reply)?,
        _ => return None,
    };
    let end = text.iter().position(|&b| b == b' ').unwrap_or(text.len());
    text.get(..end)
}

/// Classifies an error reply by its code, or `None` if `reply` is not an error (see
/// [`error_code`]).
pub fn error_class(reply: &[u8]) -> Option<ErrorClass> {
    Some(match error_code(reply)? {
        b"MOVED" => ErrorClass::Moved,
        b"ASK" => ErrorClass::Ask,
        b"TRYAGAIN" => ErrorClass::TryAgain,
        b"CLUSTERDOWN" => ErrorClass::ClusterDown,
        b"LOADING" => ErrorClass::Loading,
        b"MASTERDOWN" => ErrorClass::MasterDown,
        b"READONLY" => ErrorClass::ReadOnly,
        b"BUSY" => ErrorClass::Busy,
        b"NOREPLICAS" => ErrorClass::NoReplicas,
        _ => ErrorClass::Other,
    })
}

fn blob_error_text(reply: &[u8]) -> Option<&[u8]> {
    let limits = crate::Limits::DEFAULT;
    match crate::lex::next_token(reply, 0, 0, &limits).ok()? {
        crate::lex::Token::Leaf {
            leaf: crate::lex::Leaf::BlobError(start, end),
            ..
        } => reply.get(start..end),
        _ => None,
    }
}

/// Which redirect a cluster node answered with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RedirectKind {
    /// `-MOVED`: permanent; update the slot map.
    Moved,
    /// `-ASK`: one-off; send `ASKING` then the command to the target, keep the slot map.
    Ask,
}

/// A parsed `-MOVED <slot> <addr>` or `-ASK <slot> <addr>` error, borrowing from the reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Redirect<'a> {
    /// `MOVED` or `ASK`.
    pub kind: RedirectKind,
    /// The hash slot, below 16384.
    pub slot: u16,
    /// The target as sent, `host:port`. The host may be empty (`:6380`, Redis's "same host
    /// as the node that answered", sent when it does not know its own address) or an IPv6
    /// address (`::1:6380`) or a hostname, per `cluster-preferred-endpoint-type`.
    pub addr: &'a [u8],
}

impl<'a> Redirect<'a> {
    /// Splits [`Redirect::addr`] at its last `:` into host and port, or `None` if the port is
    /// missing or not a number in `0..=65535`. The host may be empty (see `addr`).
    pub fn host_port(&self) -> Option<(&'a [u8], u16)> {
        let colon = self.addr.iter().rposition(|&b| b == b':')?;
        let host = self.addr.get(..colon)?;
        let port = parse_decimal(self.addr.get(colon + 1..)?, 65_535)?;
        Some((host, u16::try_from(port).ok()?))
    }
}

/// Parses a `-MOVED <slot> <addr>\r\n` or `-ASK <slot> <addr>\r\n` reply.
///
/// Returns `None` for any other reply, for a slot that is not a decimal below 16384, for an
/// empty address, or when the reply's first line has not fully arrived. Trailing fields after
/// the address (none today) are ignored.
pub fn parse_redirect(reply: &[u8]) -> Option<Redirect<'_>> {
    if reply.first() != Some(&b'-') {
        return None;
    }
    let line = first_line(reply, usize::MAX)?;
    let mut words = line.split(|&b| b == b' ');
    let kind = match words.next()? {
        b"MOVED" => RedirectKind::Moved,
        b"ASK" => RedirectKind::Ask,
        _ => return None,
    };
    let slot = u16::try_from(parse_decimal(words.next()?, 16_383)?).ok()?;
    let addr = words.next()?;
    if addr.is_empty() {
        return None;
    }
    Some(Redirect { kind, slot, addr })
}

/// An unsigned decimal of 1 to 5 digits not above `max`.
fn parse_decimal(digits: &[u8], max: u32) -> Option<u32> {
    if digits.is_empty() || digits.len() > 5 {
        return None;
    }
    let mut value: u32 = 0;
    for &b in digits {
        if !b.is_ascii_digit() {
            return None;
        }
        value = value * 10 + u32::from(b - b'0');
    }
    (value <= max).then_some(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn moved_redirect_gives_slot_and_address_borrowed_from_the_reply() {
        let reply = b"-MOVED 3999 127.0.0.1:6381\r\n";
        let redirect = parse_redirect(reply).unwrap();
        assert_eq!(redirect.kind, RedirectKind::Moved);
        assert_eq!(redirect.slot, 3999);
        assert_eq!(redirect.addr, b"127.0.0.1:6381");
        assert_eq!(redirect.host_port(), Some((&b"127.0.0.1"[..], 6381)));
    }

    #[test]
    fn ask_redirect_is_told_apart_from_moved() {
        let redirect = parse_redirect(b"-ASK 16383 redis-2.svc:7000\r\n").unwrap();
        assert_eq!(redirect.kind, RedirectKind::Ask);
        assert_eq!(redirect.slot, 16383);
        assert_eq!(redirect.host_port(), Some((&b"redis-2.svc"[..], 7000)));
    }

    #[test]
    fn redirect_hosts_may_be_empty_or_ipv6() {
        let empty = parse_redirect(b"-MOVED 1 :6380\r\n").unwrap();
        assert_eq!(empty.host_port(), Some((&b""[..], 6380)));
        let v6 = parse_redirect(b"-MOVED 1 ::1:6380\r\n").unwrap();
        assert_eq!(v6.host_port(), Some((&b"::1"[..], 6380)));
    }

    #[test]
    fn malformed_or_partial_redirects_are_not_redirects() {
        for reply in [
            &b"-MOVED 16384 a:1\r\n"[..],
            b"-MOVED -1 a:1\r\n",
            b"-MOVED 1\r\n",
            b"-MOVED 1 \r\n",
            b"-MOVED x a:1\r\n",
            b"-MOVED 1 a:1",
            b"+MOVED 1 a:1\r\n",
            b"-ERR MOVED 1 a:1\r\n",
            b"",
        ] {
            assert_eq!(parse_redirect(reply), None, "{reply:?}");
        }
        let bad_port = parse_redirect(b"-MOVED 1 a:70000\r\n").unwrap();
        assert_eq!(bad_port.host_port(), None);
    }

    #[test]
    fn error_class_reads_the_first_word_of_simple_and_blob_errors() {
        assert_eq!(error_class(b"-MOVED 1 a:1\r\n"), Some(ErrorClass::Moved));
        assert_eq!(error_class(b"-ASK 1 a:1\r\n"), Some(ErrorClass::Ask));
        assert_eq!(
            error_class(b"-TRYAGAIN Multiple keys\r\n"),
            Some(ErrorClass::TryAgain)
        );
        assert_eq!(
            error_class(b"-CLUSTERDOWN Hash slot not served\r\n"),
            Some(ErrorClass::ClusterDown)
        );
        assert_eq!(error_class(b"-LOADING x\r\n"), Some(ErrorClass::Loading));
        assert_eq!(
            error_class(b"-MASTERDOWN x\r\n"),
            Some(ErrorClass::MasterDown)
        );
        assert_eq!(error_class(b"-READONLY x\r\n"), Some(ErrorClass::ReadOnly));
        assert_eq!(error_class(b"-BUSY x\r\n"), Some(ErrorClass::Busy));
        assert_eq!(error_class(b"-ERR unknown\r\n"), Some(ErrorClass::Other));
        assert_eq!(
            error_class(b"!10\r\nTRYAGAIN x\r\n"),
            Some(ErrorClass::TryAgain)
        );
        assert_eq!(
            error_code(b"-WRONGTYPE Operation\r\n"),
            Some(&b"WRONGTYPE"[..])
        );
        assert_eq!(error_code(b"-ERR\r\n"), Some(&b"ERR"[..]));
        assert_eq!(error_class(b"+OK\r\n"), None);
        assert_eq!(error_class(b"-MOVED 1 a:1"), None);
    }

    #[test]
    fn reply_type_comes_from_the_first_byte() {
        assert_eq!(ReplyType::of(b"+OK\r\n"), Some(ReplyType::Simple));
        assert_eq!(ReplyType::of(b"|1\r\n"), Some(ReplyType::Attribute));
        assert_eq!(ReplyType::of(b"?"), None);
        assert_eq!(ReplyType::of(b""), None);
        assert!(ReplyType::Error.is_error() && ReplyType::BlobError.is_error());
        assert!(!ReplyType::Simple.is_error());
    }
}
