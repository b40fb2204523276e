//! Append-only RESP2/RESP3 writers into a `Vec<u8>`, for commands sent to backends and replies
//! sent to clients. They must never allocate beyond growing the output, never fail, and never
//! emit bytes that break the stream's framing (CR/LF inside a line become spaces).
//!
//! Functions whose RESP2 form differs from RESP3 take a [`Protocol`] and write what Redis
//! itself writes to a client on that protocol (a map becomes a flat array, a double a bulk
//! string, a boolean `:1`/`:0`, a null `$-1`).

/// The protocol a client negotiated with `HELLO` (RESP2 unless it said `HELLO 3`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Protocol {
    /// RESP2, the default of every connection.
    #[default]
    Resp2,
    /// RESP3, after `HELLO 3`.
    Resp3,
}

/// Appends a command: an array of bulk strings, `*N\r\n` then `$len\r\narg\r\n` per argument.
/// Reserves the exact size first, so it grows `out` at most once.
pub fn command(out: &mut Vec<u8>, args: &[&[u8]]) {
    let size = args.iter().fold(23usize, |size, arg| {
        size.saturating_add(arg.len()).saturating_add(25)
    });
    out.reserve(size);
    array_header(out, args.len());
    for arg in args {
        bulk(out, arg);
    }
}

/// Appends `*N\r\n`, the header of an array of `len` elements (a command or a reply).
pub fn array_header(out: &mut Vec<u8>, len: usize) {
    header(out, b'*', len);
}

/// Appends a map header for `pairs` key/value pairs: `%N\r\n` on RESP3, `*2N\r\n` on RESP2.
pub fn map_header(out: &mut Vec<u8>, pairs: usize, protocol: Protocol) {
    match protocol {
        Protocol::Resp3 => header(out, b'%', pairs),
        Protocol::Resp2 => header(out, b'*', pairs.saturating_mul(2)),
    }
}

/// Appends a set header: `~N\r\n` on RESP3, `*N\r\n` on RESP2.
pub fn set_header(out: &mut Vec<u8>, len: usize, protocol: Protocol) {
    let kind = if protocol == Protocol::Resp3 {
        b'~'
    } else {
        b'*'
    };
    header(out, kind, len);
}

/// Appends a push header: `>N\r\n` on RESP3, `*N\r\n` on RESP2 (pub/sub messages are plain
/// arrays there).
pub fn push_header(out: &mut Vec<u8>, len: usize, protocol: Protocol) {
    let kind = if protocol == Protocol::Resp3 {
        b'>'
    } else {
        b'*'
    };
    header(out, kind, len);
}

/// Appends a RESP3 attribute header `|N\r\n` for `pairs` pairs. RESP2 has no attributes: a
/// RESP2 writer must leave them out altogether.
pub fn attribute_header(out: &mut Vec<u8>, pairs: usize) {
    header(out, b'|', pairs);
}

/// Appends a bulk string `$len\r\ndata\r\n`.
pub fn bulk(out: &mut Vec<u8>, data: &[u8]) {
    header(out, b'$', data.len());
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}

/// Appends a simple string `+text\r\n`; CR and LF in `text` are written as spaces.
pub fn simple(out: &mut Vec<u8>, text: &[u8]) {
    line(out, b'+', text);
}

/// Appends a simple error `-text\r\n`, `text` starting with its code (`ERR unknown command`);
/// CR and LF in `text` are written as spaces, as Redis does.
pub fn error(out: &mut Vec<u8>, text: &[u8]) {
    line(out, b'-', text);
}

/// Appends a blob error `!len\r\ntext\r\n` on RESP3, a simple error on RESP2.
pub fn blob_error(out: &mut Vec<u8>, text: &[u8], protocol: Protocol) {
    match protocol {
        Protocol::Resp3 => {
            header(out, b'!', text.len());
            out.extend_from_slice(text);
            out.extend_from_slice(b"\r\n");
        }
        Protocol::Resp2 => error(out, text),
    }
}

/// Appends an integer `:n\r\n`.
pub fn integer(out: &mut Vec<u8>, n: i64) {
    out.push(b':');
    write_i64(out, n);
    out.extend_from_slice(b"\r\n");
}

/// Appends a null: `_\r\n` on RESP3, the null bulk string `$-1\r\n` on RESP2.
pub fn null(out: &mut Vec<u8>, protocol: Protocol) {
    out.extend_from_slice(match protocol {
        Protocol::Resp3 => b"_\r\n",
        Protocol::Resp2 => b"$-1\r\n",
    });
}

/// Appends the null for a missing aggregate: `_\r\n` on RESP3, `*-1\r\n` on RESP2.
pub fn null_array(out: &mut Vec<u8>, protocol: Protocol) {
    out.extend_from_slice(match protocol {
        Protocol::Resp3 => b"_\r\n",
        Protocol::Resp2 => b"*-1\r\n",
    });
}

/// Appends a double: `,value\r\n` on RESP3 (`inf`, `-inf`, `nan` for the special values), a
/// bulk string of the same text on RESP2. The text is the shortest that parses back to the
/// same `f64`.
pub fn double(out: &mut Vec<u8>, value: f64, protocol: Protocol) {
    let mut text = [0u8; 40];
    let len = format_double(&mut text, value);
    let text = text.get(..len).unwrap_or_default();
    match protocol {
        Protocol::Resp3 => line(out, b',', text),
        Protocol::Resp2 => bulk(out, text),
    }
}

/// Appends a boolean: `#t\r\n`/`#f\r\n` on RESP3, `:1\r\n`/`:0\r\n` on RESP2.
pub fn boolean(out: &mut Vec<u8>, value: bool, protocol: Protocol) {
    out.extend_from_slice(match (protocol, value) {
        (Protocol::Resp3, true) => b"#t\r\n",
        (Protocol::Resp3, false) => b"#f\r\n",
        (Protocol::Resp2, true) => b":1\r\n",
        (Protocol::Resp2, false) => b":0\r\n",
    });
}

/// Appends a big number `(digits\r\n` on RESP3, a bulk string on RESP2. `digits` should be an
/// optionally signed run of decimal digits; CR and LF are written as spaces.
pub fn big_number(out: &mut Vec<u8>, digits: &[u8], protocol: Protocol) {
    match protocol {
        Protocol::Resp3 => line(out, b'(', digits),
        Protocol::Resp2 => bulk(out, digits),
    }
}

/// Appends a verbatim string `=len\r\nfmt:text\r\n` on RESP3 (`format` is e.g. `b"txt"` or
/// `b"mkd"`), a bulk string of `text` alone on RESP2.
pub fn verbatim(out: &mut Vec<u8>, format: [u8; 3], text: &[u8], protocol: Protocol) {
    match protocol {
        Protocol::Resp3 => {
            header(out, b'=', text.len() + 4);
            out.extend_from_slice(&format);
            out.push(b':');
            out.extend_from_slice(text);
            out.extend_from_slice(b"\r\n");
        }
        Protocol::Resp2 => bulk(out, text),
    }
}

/// Appends `<kind><n>\r\n`.
#[inline]
fn header(out: &mut Vec<u8>, kind: u8, n: usize) {
    // Nearly every length and count is below 100: one append of four or five bytes, not three
    // appends and a formatting loop (a split 10-key MSET writes some 40 headers).
    if n < 10 {
        out.extend_from_slice(&[kind, b'0' + n as u8, b'\r', b'\n']);
    } else if n < 100 {
        let pair = n * 2;
        out.extend_from_slice(&[kind, PAIRS[pair], PAIRS[pair + 1], b'\r', b'\n']);
    } else {
        out.push(kind);
        write_u64(out, n as u64);
        out.extend_from_slice(b"\r\n");
    }
}

/// Appends `<kind><text>\r\n` with CR and LF in `text` replaced by spaces.
fn line(out: &mut Vec<u8>, kind: u8, text: &[u8]) {
    out.reserve(text.len() + 3);
    out.push(kind);
    if text.iter().any(|&b| b == b'\r' || b == b'\n') {
        out.extend(
            text.iter()
                .map(|&b| if b == b'\r' || b == b'\n' { b' ' } else { b }),
        );
    } else {
        out.extend_from_slice(text);
    }
    out.extend_from_slice(b"\r\n");
}

/// Two ASCII digits for every value 0..100, so formatting does half the divisions.
const PAIRS: &[u8; 200] = b"\
0001020304050607080910111213141516171819\
2021222324252627282930313233343536373839\
4041424344454647484950515253545556575859\
6061626364656667686970717273747576777879\
8081828384858687888990919293949596979899";

/// Appends `n` in decimal.
#[inline]
pub(crate) fn write_u64(out: &mut Vec<u8>, mut n: u64) {
    if n < 10 {
        out.push(b'0' + n as u8);
        return;
    }
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    while n >= 100 {
        let pair = (n % 100) as usize * 2;
        n /= 100;
        i -= 2;
        digits[i] = PAIRS[pair];
        digits[i + 1] = PAIRS[pair + 1];
    }
    if n >= 10 {
        let pair = n as usize * 2;
        i -= 2;
        digits[i] = PAIRS[pair];
        digits[i + 1] = PAIRS[pair + 1];
    } else {
        i -= 1;
        digits[i] = b'0' + n as u8;
    }
    out.extend_from_slice(&digits[i..]);
}

/// Appends `n` in decimal, with a `-` when negative (`i64::MIN` included).
#[inline]
pub(crate) fn write_i64(out: &mut Vec<u8>, n: i64) {
    if n < 0 {
        out.push(b'-');
    }
    write_u64(out, n.unsigned_abs());
}

/// Writes the RESP3 text of `value` into `buf` and returns its length: Rust's shortest
/// round-trip digits, in exponent form outside `1e-5..1e16` to keep the text short.
fn format_double(buf: &mut [u8; 40], value: f64) -> usize {
    use std::io::Write;
    let mut cursor = std::io::Cursor::new(&mut buf[..]);
    let written = if value.is_nan() {
        cursor.write_all(b"nan")
    } else if value.is_infinite() {
        cursor.write_all(if value > 0.0 { b"inf" } else { b"-inf" })
    } else if value == 0.0 || (1e-5..1e16).contains(&value.abs()) {
        write!(cursor, "{value}")
    } else {
        write!(cursor, "{value:e}")
    };
    // The longest text, e.g. "-2.2250738585072014e-308", is 24 bytes: the write cannot fail.
    debug_assert!(written.is_ok());
    cursor.position() as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    fn written(f: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
        let mut out = Vec::new();
        f(&mut out);
        out
    }

    #[test]
    fn headers_are_written_in_decimal_on_both_sides_of_the_short_cuts() {
        for n in [
            0,
            1,
            9,
            10,
            11,
            42,
            99,
            100,
            101,
            999,
            1000,
            65_536,
            usize::MAX,
        ] {
            assert_eq!(
                written(|o| array_header(o, n)),
                format!("*{n}\r\n").into_bytes()
            );
            let data = vec![b'x'; n.min(1000)];
            let expected = format!("${}\r\n{}\r\n", data.len(), "x".repeat(data.len()));
            assert_eq!(written(|o| bulk(o, &data)), expected.into_bytes());
        }
    }

    #[test]
    fn command_is_an_array_of_bulk_strings() {
        let out = written(|o| command(o, &[b"SET", b"k", b""]));
        assert_eq!(out, b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$0\r\n\r\n");
    }

    #[test]
    fn integers_are_written_without_any_formatting_machinery() {
        for n in [0, 7, 10, 99, 100, 12345, -1, -100, i64::MAX, i64::MIN] {
            let out = written(|o| integer(o, n));
            assert_eq!(out, format!(":{n}\r\n").as_bytes());
        }
        for n in [0, 9, 10, 11, 999, 1000, u64::MAX] {
            let out = written(|o| write_u64(o, n));
            assert_eq!(out, n.to_string().as_bytes());
        }
    }

    #[test]
    fn simple_strings_and_errors_never_break_framing() {
        assert_eq!(written(|o| simple(o, b"OK")), b"+OK\r\n");
        assert_eq!(written(|o| error(o, b"ERR a\r\nb")), b"-ERR a  b\r\n");
    }

    #[test]
    fn resp2_forms_match_what_redis_sends_to_resp2_clients() {
        let r2 = Protocol::Resp2;
        assert_eq!(written(|o| null(o, r2)), b"$-1\r\n");
        assert_eq!(written(|o| null_array(o, r2)), b"*-1\r\n");
        assert_eq!(written(|o| map_header(o, 2, r2)), b"*4\r\n");
        assert_eq!(written(|o| set_header(o, 2, r2)), b"*2\r\n");
        assert_eq!(written(|o| push_header(o, 3, r2)), b"*3\r\n");
        assert_eq!(written(|o| double(o, 1.5, r2)), b"$3\r\n1.5\r\n");
        assert_eq!(written(|o| boolean(o, true, r2)), b":1\r\n");
        assert_eq!(written(|o| boolean(o, false, r2)), b":0\r\n");
        assert_eq!(written(|o| big_number(o, b"123", r2)), b"$3\r\n123\r\n");
        assert_eq!(
            written(|o| verbatim(o, *b"txt", b"hi", r2)),
            b"$2\r\nhi\r\n"
        );
        assert_eq!(written(|o| blob_error(o, b"ERR x", r2)), b"-ERR x\r\n");
    }

    #[test]
    fn resp3_forms_use_their_own_type_bytes() {
        let r3 = Protocol::Resp3;
        assert_eq!(written(|o| null(o, r3)), b"_\r\n");
        assert_eq!(written(|o| null_array(o, r3)), b"_\r\n");
        assert_eq!(written(|o| map_header(o, 2, r3)), b"%2\r\n");
        assert_eq!(written(|o| set_header(o, 2, r3)), b"~2\r\n");
        assert_eq!(written(|o| push_header(o, 3, r3)), b">3\r\n");
        assert_eq!(written(|o| attribute_header(o, 1)), b"|1\r\n");
        assert_eq!(written(|o| boolean(o, true, r3)), b"#t\r\n");
        assert_eq!(written(|o| big_number(o, b"-123", r3)), b"(-123\r\n");
        assert_eq!(
            written(|o| verbatim(o, *b"txt", b"hi", r3)),
            b"=6\r\ntxt:hi\r\n"
        );
        assert_eq!(written(|o| blob_error(o, b"ERR x", r3)), b"!5\r\nERR x\r\n");
    }

    #[test]
    fn doubles_are_short_and_spell_specials_like_resp3() {
        let r3 = Protocol::Resp3;
        assert_eq!(written(|o| double(o, 1.5, r3)), b",1.5\r\n");
        assert_eq!(written(|o| double(o, 3.0, r3)), b",3\r\n");
        assert_eq!(written(|o| double(o, -0.0, r3)), b",-0\r\n");
        assert_eq!(written(|o| double(o, 1e300, r3)), b",1e300\r\n");
        assert_eq!(written(|o| double(o, -2.5e-10, r3)), b",-2.5e-10\r\n");
        assert_eq!(written(|o| double(o, f64::INFINITY, r3)), b",inf\r\n");
        assert_eq!(written(|o| double(o, f64::NEG_INFINITY, r3)), b",-inf\r\n");
        assert_eq!(written(|o| double(o, f64::NAN, r3)), b",nan\r\n");
        let longest = written(|o| double(o, -2.2250738585072014e-308, r3));
        assert_eq!(longest, b",-2.2250738585072014e-308\r\n");
    }
}
