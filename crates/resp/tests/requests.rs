//! Byte-level specification of the request parser: what clients send, what comes out.

use cinnabar_resp::{Limits, Parsed, ProtocolError, Request, RequestParser};

fn parser() -> RequestParser {
    RequestParser::new(Limits::default())
}

/// Parses one command from `buf` with a fresh request; returns the outcome and the arguments.
fn parse(buf: &[u8]) -> Result<(Parsed, Vec<Vec<u8>>), ProtocolError> {
    parse_with(&parser(), buf)
}

fn parse_with(parser: &RequestParser, buf: &[u8]) -> Result<(Parsed, Vec<Vec<u8>>), ProtocolError> {
    let mut req = Request::new();
    let parsed = parser.parse(buf, &mut req)?;
    let args = match parsed {
        Parsed::Complete { .. } => req.args(buf).map(<[u8]>::to_vec).collect(),
        _ => Vec::new(),
    };
    Ok((parsed, args))
}

fn complete(consumed: usize, args: &[&str]) -> Result<(Parsed, Vec<Vec<u8>>), ProtocolError> {
    Ok((
        Parsed::Complete { consumed },
        args.iter().map(|a| a.as_bytes().to_vec()).collect(),
    ))
}

fn error(e: ProtocolError) -> Result<(Parsed, Vec<Vec<u8>>), ProtocolError> {
    Err(e)
}

#[test]
fn multibulk_command_arguments_are_ranges_of_the_callers_buffer() {
    let buf = b"*3\r\n$3\r\nSET\r\n$3\r\nkey\r\n$5\r\nvalue\r\n*1\r\n$4\r\nPING\r\n";
    let mut req = Request::new();
    let parsed = parser().parse(buf, &mut req).unwrap();
    assert_eq!(parsed, Parsed::Complete { consumed: 33 });
    assert_eq!(req.len(), 3);
    assert!(!req.is_inline());
    assert_eq!(req.arg(0, buf), Some(&b"SET"[..]));
    assert_eq!(req.arg(2, buf), Some(&b"value"[..]));
    assert_eq!(req.arg(3, buf), None);
    assert_eq!(req.arg_range(1), Some(17..20));
    assert_eq!(req.args(buf).len(), 3);
}

#[test]
fn the_request_is_reused_without_reallocating() {
    let buf = b"*2\r\n$3\r\nGET\r\n$1\r\na\r\n";
    let mut req = Request::with_capacity(8);
    let parser = parser();
    for _ in 0..3 {
        assert_eq!(
            parser.parse(buf, &mut req),
            Ok(Parsed::Complete {
                consumed: buf.len()
            })
        );
        assert_eq!(req.len(), 2);
    }
}

#[test]
fn binary_safe_arguments_may_hold_crlf_and_nul() {
    assert_eq!(
        parse(b"*1\r\n$4\r\n\r\n\0x\r\n"),
        complete(14, &["\r\n\0x"])
    );
    assert_eq!(
        parse(b"*2\r\n$0\r\n\r\n$0\r\n\r\n"),
        complete(16, &["", ""])
    );
}

#[test]
fn empty_and_null_multibulk_are_skipped_like_redis() {
    assert_eq!(
        parse(b"*0\r\n"),
        Ok((Parsed::Skipped { consumed: 4 }, vec![]))
    );
    assert_eq!(
        parse(b"*-1\r\n*1\r\n"),
        Ok((Parsed::Skipped { consumed: 5 }, vec![]))
    );
    // Any negative length is skipped, as Redis does (`ll <= 0`), and the connection goes on.
    assert_eq!(
        parse(b"*-10\r\n*1\r\n"),
        Ok((Parsed::Skipped { consumed: 6 }, vec![]))
    );
    assert_eq!(parse(b"*-10"), Ok((Parsed::Incomplete, vec![])));
    assert_eq!(parse(b"*-"), Ok((Parsed::Incomplete, vec![])));
}

#[test]
fn multibulk_length_must_be_a_canonical_decimal() {
    for buf in [
        &b"*x\r\n"[..],
        b"*-0\r\n",
        b"*-01\r\n",
        b"*-x\r\n",
        b"*-1x\r\n",
        b"*-99999999999999999999\r\n",
        b"*01\r\n",
        b"*+1\r\n",
        b"*1 \r\n",
        b"*\r\n",
        b"*1\rx",
    ] {
        assert_eq!(
            parse(buf),
            error(ProtocolError::InvalidMultibulkLength),
            "{buf:?}"
        );
    }
}

#[test]
fn multibulk_length_over_limit_is_a_protocol_error() {
    let limits = Limits {
        max_array_len: 3,
        ..Limits::default()
    };
    let parser = RequestParser::new(limits);
    assert_eq!(
        parse_with(&parser, b"*3\r\n").map(|r| r.0),
        Ok(Parsed::Incomplete)
    );
    assert_eq!(
        parse_with(&parser, b"*4\r\n"),
        error(ProtocolError::InvalidMultibulkLength)
    );
    assert_eq!(
        parse(b"*99999999999999999999999\r\n"),
        error(ProtocolError::InvalidMultibulkLength)
    );
}

#[test]
fn argument_not_starting_with_dollar_is_expected_dollar_error() {
    assert_eq!(
        parse(b"*1\r\n:1\r\n"),
        error(ProtocolError::ExpectedBulk { got: b':' })
    );
    assert_eq!(
        ProtocolError::ExpectedBulk { got: b':' }.to_string(),
        "Protocol error: expected '$', got ':'"
    );
}

#[test]
fn bulk_length_must_be_a_canonical_non_negative_decimal() {
    for buf in [
        &b"*1\r\n$-1\r\n"[..],
        b"*1\r\n$x\r\n",
        b"*1\r\n$01\r\nx\r\n",
        b"*1\r\n$\r\n",
    ] {
        assert_eq!(
            parse(buf),
            error(ProtocolError::InvalidBulkLength),
            "{buf:?}"
        );
    }
}

#[test]
fn bulk_length_over_limit_is_a_protocol_error() {
    assert_eq!(
        parse(b"*1\r\n$536870912\r\n").map(|r| r.0),
        Ok(Parsed::Incomplete)
    );
    assert_eq!(
        parse(b"*1\r\n$536870913\r\n"),
        error(ProtocolError::InvalidBulkLength)
    );
    // Refused as soon as the digits exceed the limit, before the header ends.
    assert_eq!(
        parse(b"*1\r\n$5368709130"),
        error(ProtocolError::InvalidBulkLength)
    );
}

#[test]
fn bulk_data_not_followed_by_crlf_is_a_protocol_error() {
    assert_eq!(
        parse(b"*1\r\n$1\r\nab\r\n"),
        error(ProtocolError::BulkNotTerminated)
    );
    assert_eq!(
        parse(b"*1\r\n$1\r\na\rb"),
        error(ProtocolError::BulkNotTerminated)
    );
}

#[test]
fn a_partial_command_is_incomplete_and_resumes_with_the_same_request() {
    let full = b"*2\r\n$3\r\nGET\r\n$10\r\n0123456789\r\n";
    let parser = parser();
    let mut req = Request::new();
    assert_eq!(parser.parse(&full[..16], &mut req), Ok(Parsed::Incomplete));
    assert_eq!(parser.parse(&full[..20], &mut req), Ok(Parsed::Incomplete));
    assert_eq!(req.needed_len(), Some(full.len()));
    assert_eq!(
        parser.parse(&full[..full.len() - 1], &mut req),
        Ok(Parsed::Incomplete)
    );
    assert_eq!(
        parser.parse(full, &mut req),
        Ok(Parsed::Complete {
            consumed: full.len()
        })
    );
    assert_eq!(req.arg(1, full), Some(&b"0123456789"[..]));
}

#[test]
fn a_big_value_arriving_in_small_reads_costs_constant_work_per_read() {
    // 1 MiB value fed 100 bytes at a time: with the data's end known after the header, each
    // call only checks the buffer length, so this finishes instantly even in debug builds.
    let value = vec![b'v'; 1 << 20];
    let mut buf = b"*2\r\n$3\r\nSET\r\n$1048576\r\n".to_vec();
    buf.extend_from_slice(&value);
    buf.extend_from_slice(b"\r\n");
    let parser = parser();
    let mut req = Request::new();
    let mut fed = 0;
    while fed < buf.len() {
        fed = (fed + 100).min(buf.len());
        let parsed = parser.parse(&buf[..fed], &mut req).unwrap();
        if fed < buf.len() {
            assert_eq!(parsed, Parsed::Incomplete);
        } else {
            assert_eq!(
                parsed,
                Parsed::Complete {
                    consumed: buf.len()
                }
            );
        }
    }
    assert_eq!(req.arg(1, &buf).map(<[u8]>::len), Some(1 << 20));
}

#[test]
fn reset_abandons_a_partial_command() {
    let parser = parser();
    let mut req = Request::new();
    assert_eq!(
        parser.parse(b"*2\r\n$3\r\nGET\r\n", &mut req),
        Ok(Parsed::Incomplete)
    );
    req.reset();
    assert_eq!(
        parser.parse(b"PING\r\n", &mut req),
        Ok(Parsed::Complete { consumed: 6 })
    );
    assert_eq!(req.arg(0, b"PING\r\n"), Some(&b"PING"[..]));
}

#[test]
fn a_shorter_buffer_than_promised_restarts_instead_of_panicking() {
    let parser = parser();
    let mut req = Request::new();
    assert_eq!(
        parser.parse(b"*2\r\n$3\r\nGET\r\n$1", &mut req),
        Ok(Parsed::Incomplete)
    );
    assert_eq!(parser.parse(b"*1\r\n", &mut req), Ok(Parsed::Incomplete));
}

#[test]
fn inline_commands_are_split_on_spaces_into_the_requests_scratch() {
    let buf = b"SET  key\t\"a b\\x41\"\r\n";
    let mut req = Request::new();
    let parsed = parser().parse(buf, &mut req).unwrap();
    assert_eq!(
        parsed,
        Parsed::Complete {
            consumed: buf.len()
        }
    );
    assert!(req.is_inline());
    assert_eq!(req.arg_range(0), None);
    let args: Vec<&[u8]> = req.args(buf).collect();
    assert_eq!(args, [&b"SET"[..], b"key", b"a bA"]);
}

#[test]
fn inline_commands_may_end_with_a_bare_newline_like_telnet() {
    assert_eq!(parse(b"PING\nPING\n"), complete(5, &["PING"]));
    assert_eq!(parse(b"PING\r\r\n"), complete(7, &["PING"]));
}

#[test]
fn empty_and_blank_inline_lines_are_skipped() {
    assert_eq!(
        parse(b"\r\nPING\r\n"),
        Ok((Parsed::Skipped { consumed: 2 }, vec![]))
    );
    assert_eq!(parse(b"\n"), Ok((Parsed::Skipped { consumed: 1 }, vec![])));
    assert_eq!(
        parse(b" \t \r\n"),
        Ok((Parsed::Skipped { consumed: 5 }, vec![]))
    );
}

#[test]
fn inline_without_newline_is_incomplete_until_it_grows_too_big() {
    assert_eq!(parse(b"PING").map(|r| r.0), Ok(Parsed::Incomplete));
    let limits = Limits {
        max_inline_len: 8,
        ..Limits::default()
    };
    let parser = RequestParser::new(limits);
    assert_eq!(
        parse_with(&parser, b"12345678\r").map(|r| r.0),
        Ok(Parsed::Incomplete)
    );
    assert_eq!(
        parse_with(&parser, b"12345678\r\n"),
        complete(10, &["12345678"])
    );
    assert_eq!(
        parse_with(&parser, b"123456789"),
        error(ProtocolError::TooBigInlineRequest)
    );
    assert_eq!(
        parse_with(&parser, b"123456789\n"),
        error(ProtocolError::TooBigInlineRequest)
    );
}

#[test]
fn default_inline_limit_is_64_kib() {
    let mut line = vec![b'a'; 64 * 1024];
    assert_eq!(parse(&line).map(|r| r.0), Ok(Parsed::Incomplete));
    line.push(b'a');
    assert_eq!(parse(&line), error(ProtocolError::TooBigInlineRequest));
}

#[test]
fn inline_with_unbalanced_quotes_is_a_protocol_error() {
    assert_eq!(
        parse(b"SET \"a\r\n"),
        error(ProtocolError::UnbalancedQuotes)
    );
    assert_eq!(
        parse(b"SET 'a'b\r\n"),
        error(ProtocolError::UnbalancedQuotes)
    );
    assert_eq!(
        ProtocolError::UnbalancedQuotes.to_string(),
        "Protocol error: unbalanced quotes in request"
    );
}

#[test]
fn write_multibulk_turns_an_inline_command_into_a_backend_command() {
    let buf = b"GET 'k 1'\n";
    let mut req = Request::new();
    parser().parse(buf, &mut req).unwrap();
    let mut out = Vec::new();
    req.write_multibulk(buf, &mut out);
    assert_eq!(out, b"*2\r\n$3\r\nGET\r\n$3\r\nk 1\r\n");
}

#[test]
fn after_an_error_the_request_starts_afresh() {
    let parser = parser();
    let mut req = Request::new();
    assert!(parser.parse(b"*1\r\n$x", &mut req).is_err());
    assert_eq!(
        parser.parse(b"*1\r\n$1\r\na\r\n", &mut req),
        Ok(Parsed::Complete { consumed: 11 })
    );
}
