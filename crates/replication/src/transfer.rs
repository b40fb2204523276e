//! The framing around an RDB sent over replication: after `+FULLRESYNC`, a master sends
//! `$<length>\r\n` then the RDB (disk-based), or `$EOF:<40-byte mark>\r\n`, the RDB, then the
//! mark again (diskless). Before the header it may send bare newlines as keep-alives.
//!
//! It must never consume a byte past the header or the end mark: the RDB and then the command
//! stream follow on the same input.

use std::io::{self, BufRead};

/// Length of the random end mark of a diskless transfer.
pub const END_MARK_LEN: usize = 40;

/// How the end of the RDB that follows the header is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransferLength {
    /// The RDB is exactly this many bytes (no trailing CRLF).
    Sized(u64),
    /// The RDB is followed by this mark (diskless transfer); check it with [`read_end_mark`].
    EndMark([u8; END_MARK_LEN]),
}

/// Why a transfer's framing is wrong.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransferError {
    /// Reading failed.
    #[error("I/O error reading the replication transfer: {0}")]
    Io(#[from] io::Error),
    /// The connection closed before the header or the end mark was complete.
    #[error("replication transfer ended early")]
    Truncated,
    /// The header line is neither `$<length>` nor `$EOF:<40 bytes>`; the line is shown escaped
    /// and cut to 64 bytes.
    #[error("bad replication transfer header: {0}")]
    BadHeader(String),
    /// The bytes after the RDB are not the end mark announced in the header.
    #[error("the diskless transfer's end mark does not match its header")]
    EndMarkMismatch,
}

/// Reads the transfer header, skipping keep-alive newlines.
///
/// # Errors
/// [`TransferError`] when the input ends, fails, or the header is malformed.
pub fn read_transfer_header(input: &mut impl BufRead) -> Result<TransferLength, TransferError> {
    loop {
        let mut line = Vec::new();
        if input.read_until(b'\n', &mut line)? == 0 {
            return Err(TransferError::Truncated);
        }
        if !line.ends_with(b"\n") {
            return Err(TransferError::Truncated);
        }
        let body = line
            .strip_suffix(b"\r\n")
            .or_else(|| line.strip_suffix(b"\n"))
            .unwrap_or(&line);
        if body.is_empty() {
            continue;
        }
        return parse_header(body);
    }
}

fn parse_header(body: &[u8]) -> Result<TransferLength, TransferError> {
    let bad = || {
        let shown: String = body
            .iter()
            .take(64)
            .flat_map(|b| b.escape_ascii())
            .map(char::from)
            .collect();
        TransferError::BadHeader(shown)
    };
    let rest = body.strip_prefix(b"$").ok_or_else(bad)?;
    if let Some(mark) = rest.strip_prefix(b"EOF:") {
        return mark
            .try_into()
            .map(TransferLength::EndMark)
            .map_err(|_| bad());
    }
    std::str::from_utf8(rest)
        .ok()
        .filter(|text| !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|text| text.parse().ok())
        .map(TransferLength::Sized)
        .ok_or_else(bad)
}

/// Reads the end mark that closes a diskless transfer and checks it is `mark`.
///
/// # Errors
/// [`TransferError::EndMarkMismatch`] when the bytes differ, [`TransferError::Truncated`] when
/// the input ends first.
pub fn read_end_mark(
    input: &mut impl BufRead,
    mark: &[u8; END_MARK_LEN],
) -> Result<(), TransferError> {
    let mut got = [0u8; END_MARK_LEN];
    input.read_exact(&mut got).map_err(|e| {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            TransferError::Truncated
        } else {
            TransferError::Io(e)
        }
    })?;
    if &got == mark {
        Ok(())
    } else {
        Err(TransferError::EndMarkMismatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sized_header_after_keepalive_newlines() {
        let mut input: &[u8] = b"\n\n$1234\r\nREDIS";
        assert_eq!(
            read_transfer_header(&mut input).unwrap(),
            TransferLength::Sized(1234)
        );
        assert_eq!(input, b"REDIS");
    }

    #[test]
    fn diskless_header_and_its_end_mark() {
        let mark = [b'a'; END_MARK_LEN];
        let mut wire = b"$EOF:".to_vec();
        wire.extend_from_slice(&mark);
        wire.extend_from_slice(b"\r\n");
        let mut input: &[u8] = &wire;
        assert_eq!(
            read_transfer_header(&mut input).unwrap(),
            TransferLength::EndMark(mark)
        );
        let mut after: &[u8] = &[b'a'; END_MARK_LEN];
        read_end_mark(&mut after, &mark).unwrap();
        let mut wrong: &[u8] = &[b'b'; END_MARK_LEN];
        assert!(matches!(
            read_end_mark(&mut wrong, &mark),
            Err(TransferError::EndMarkMismatch)
        ));
    }

    #[test]
    fn malformed_headers_are_refused() {
        for wire in [&b"+OK\r\n"[..], b"$-1\r\n", b"$EOF:short\r\n", b"$\r\n"] {
            let mut input = wire;
            assert!(matches!(
                read_transfer_header(&mut input),
                Err(TransferError::BadHeader(_))
            ));
        }
    }
}
