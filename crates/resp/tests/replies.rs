//! Byte-level specification of the reply scanner: every RESP2/RESP3 type and every error.

use cinnabar_resp::{Limits, ProtocolError, ReplyScanner, parse_value, scan_reply};

fn scan(buf: &[u8]) -> Result<Option<usize>, ProtocolError> {
    let scanned = scan_reply(buf, &Limits::default());
    // The value parser must always agree with the scanner.
    let parsed = parse_value(buf, &Limits::default()).map(|v| v.map(|(_, n)| n));
    assert_eq!(
        scanned, parsed,
        "scanner and value parser disagree on {buf:?}"
    );
    scanned
}

#[test]
fn every_resp2_and_resp3_type_is_scanned_to_its_end() {
    let replies: &[&[u8]] = &[
        b"+OK\r\n",
        b"+\r\n",
        b"-ERR unknown command\r\n",
        b":0\r\n",
        b":-9223372036854775808\r\n",
        b"$5\r\nhello\r\n",
        b"$0\r\n\r\n",
        b"$-1\r\n",
        b"*-1\r\n",
        b"*0\r\n",
        b"*2\r\n$1\r\na\r\n:1\r\n",
        b"_\r\n",
        b",3.14\r\n",
        b",-inf\r\n",
        b",nan\r\n",
        b"#t\r\n",
        b"(3492890328409238509324850943850943825024385\r\n",
        b"!21\r\nSYNTAX invalid syntax\r\n",
        b"=15\r\ntxt:Some string\r\n",
        b"%2\r\n+first\r\n:1\r\n+second\r\n:2\r\n",
        b"~2\r\n+a\r\n+b\r\n",
        b">3\r\n+message\r\n+chan\r\n$2\r\nhi\r\n",
        b"%0\r\n",
    ];
    for reply in replies {
        assert_eq!(scan(reply), Ok(Some(reply.len())), "{reply:?}");
        let mut followed = reply.to_vec();
        followed.extend_from_slice(b"+next\r\n");
        assert_eq!(scan(&followed), Ok(Some(reply.len())), "{reply:?}");
    }
}

#[test]
fn an_attribute_is_part_of_the_reply_it_precedes() {
    let reply = b"|1\r\n+key-popularity\r\n%2\r\n$1\r\na\r\n,0.19\r\n$1\r\nb\r\n,0.05\r\n*2\r\n:2\r\n:9\r\n";
    assert_eq!(scan(reply), Ok(Some(reply.len())));
    assert_eq!(scan(&reply[..reply.len() - 4]), Ok(None));
    assert_eq!(scan(b"|0\r\n+OK\r\n"), Ok(Some(9)));
    assert_eq!(scan(b"*2\r\n|1\r\n+a\r\n+b\r\n:1\r\n:2\r\n"), Ok(Some(24)));
}

#[test]
fn every_strict_prefix_of_a_reply_is_incomplete() {
    let reply = b"*3\r\n$3\r\nfoo\r\n%1\r\n+k\r\n,1.5\r\n*-1\r\n";
    for len in 0..reply.len() {
        assert_eq!(scan(&reply[..len]), Ok(None), "prefix {len}");
    }
}

#[test]
fn unknown_type_byte_is_a_protocol_error() {
    assert_eq!(
        scan(b"?\r\n"),
        Err(ProtocolError::InvalidReplyType { got: b'?' })
    );
    assert_eq!(
        scan(b"*1\r\nx"),
        Err(ProtocolError::InvalidReplyType { got: b'x' })
    );
}

#[test]
fn streamed_types_are_refused_not_awaited() {
    for reply in [
        &b"$?\r\n"[..],
        b"*?\r\n",
        b"%?\r\n",
        b"~?",
        b">?",
        b"|?",
        b"!?",
        b"=?",
        b";4\r\n",
        b".\r\n",
    ] {
        assert_eq!(
            scan(reply),
            Err(ProtocolError::StreamedUnsupported),
            "{reply:?}"
        );
    }
}

#[test]
fn bulk_lengths_must_be_canonical_and_within_the_limit() {
    for reply in [
        &b"$-2\r\n"[..],
        b"$01\r\nx\r\n",
        b"$x\r\n",
        b"!-1\r\n",
        b"=-1\r\n",
        b"$1x",
    ] {
        assert_eq!(
            scan(reply),
            Err(ProtocolError::InvalidBulkLength),
            "{reply:?}"
        );
    }
    let limits = Limits {
        max_bulk_len: 4,
        ..Limits::default()
    };
    assert_eq!(scan_reply(b"$4\r\nabcd\r\n", &limits), Ok(Some(10)));
    assert_eq!(
        scan_reply(b"$5\r\n", &limits),
        Err(ProtocolError::InvalidBulkLength)
    );
}

#[test]
fn bulk_data_not_followed_by_crlf_is_a_protocol_error() {
    assert_eq!(scan(b"$1\r\nab\r\n"), Err(ProtocolError::BulkNotTerminated));
}

#[test]
fn aggregate_lengths_must_be_canonical_and_within_the_limit() {
    for reply in [
        &b"*-2\r\n"[..],
        b"%-1\r\n",
        b"~-1\r\n",
        b">01\r\n",
        b"|x\r\n",
        b"*1 \r\n",
    ] {
        assert_eq!(
            scan(reply),
            Err(ProtocolError::InvalidMultibulkLength),
            "{reply:?}"
        );
    }
    let limits = Limits {
        max_aggregate_len: 2,
        ..Limits::default()
    };
    assert_eq!(scan_reply(b"%2\r\n", &limits), Ok(None));
    assert_eq!(
        scan_reply(b"*3\r\n", &limits),
        Err(ProtocolError::InvalidMultibulkLength)
    );
}

#[test]
fn nesting_deeper_than_the_limit_is_a_protocol_error() {
    let limits = Limits {
        max_depth: 2,
        ..Limits::default()
    };
    assert_eq!(scan_reply(b"*1\r\n*1\r\n:1\r\n", &limits), Ok(Some(12)));
    assert_eq!(
        scan_reply(b"*1\r\n*1\r\n*1\r\n", &limits),
        Err(ProtocolError::TooDeep)
    );
    assert_eq!(
        scan_reply(b"|1\r\n+a\r\n+b\r\n*1\r\n*1\r\n:1\r\n", &limits),
        Err(ProtocolError::TooDeep)
    );
    // Default depth 128: 10,000 nested arrays are refused without recursion.
    let deep = b"*1\r\n".repeat(10_000);
    assert_eq!(scan(&deep), Err(ProtocolError::TooDeep));
}

#[test]
fn lines_with_bare_cr_or_lf_are_protocol_errors() {
    assert_eq!(scan(b"+O\nK\r\n"), Err(ProtocolError::InvalidLineEnd));
    assert_eq!(scan(b"+O\rK\r\n"), Err(ProtocolError::InvalidLineEnd));
    assert_eq!(scan(b"+OK\r"), Ok(None));
}

#[test]
fn lines_longer_than_the_limit_are_protocol_errors() {
    let limits = Limits {
        max_line_len: 3,
        ..Limits::default()
    };
    assert_eq!(scan_reply(b"+abc\r\n", &limits), Ok(Some(6)));
    assert_eq!(
        scan_reply(b"+abcd", &limits),
        Err(ProtocolError::TooBigLine)
    );
}

#[test]
fn typed_lines_must_hold_valid_content() {
    assert_eq!(scan(b":1.5\r\n"), Err(ProtocolError::InvalidInteger));
    assert_eq!(scan(b":\r\n"), Err(ProtocolError::InvalidInteger));
    assert_eq!(
        scan(b":9223372036854775808\r\n"),
        Err(ProtocolError::InvalidInteger)
    );
    assert_eq!(scan(b",abc\r\n"), Err(ProtocolError::InvalidDouble));
    assert_eq!(scan(b"#x\r\n"), Err(ProtocolError::InvalidBoolean));
    assert_eq!(scan(b"#\r\n"), Err(ProtocolError::InvalidBoolean));
    assert_eq!(scan(b"_x\r\n"), Err(ProtocolError::InvalidNull));
    assert_eq!(scan(b"(12a\r\n"), Err(ProtocolError::InvalidBigNumber));
    assert_eq!(scan(b"(\r\n"), Err(ProtocolError::InvalidBigNumber));
    assert_eq!(scan(b"=3\r\ntxt\r\n"), Err(ProtocolError::InvalidVerbatim));
    assert_eq!(scan(b"=4\r\ntxtx\r\n"), Err(ProtocolError::InvalidVerbatim));
}

#[test]
fn a_resumed_scanner_finds_the_same_end_as_a_whole_scan() {
    let mut reply = b"*3\r\n+a\r\n".to_vec();
    reply.extend_from_slice(b"$1000\r\n");
    reply.extend_from_slice(&[b'x'; 1000]);
    reply.extend_from_slice(b"\r\n*2\r\n:1\r\n+a long status line\r\n");
    let mut scanner = ReplyScanner::new(Limits::default());
    for fed in 1..reply.len() {
        assert_eq!(scanner.scan(&reply[..fed]), Ok(None), "prefix {fed}");
    }
    assert_eq!(scanner.scan(&reply), Ok(Some(reply.len())));
    // Reset after a complete reply: the next call starts at offset 0.
    assert_eq!(scanner.scan(b"+OK\r\n"), Ok(Some(5)));
}

#[test]
fn a_pipelined_buffer_of_replies_is_scanned_one_reply_at_a_time() {
    let buf = b"+OK\r\n:1\r\n$-1\r\n*2\r\n+a\r\n+b\r\n";
    let mut scanner = ReplyScanner::new(Limits::default());
    let mut ends = Vec::new();
    let mut at = 0;
    while let Some(n) = scanner.scan(&buf[at..]).unwrap() {
        at += n;
        ends.push(at);
    }
    assert_eq!(ends, [5, 9, 14, buf.len()]);
}

#[test]
fn a_huge_flat_array_needs_no_memory_per_element() {
    let limits = Limits::default();
    // Declared 4 billion elements: scanning only counts them as they arrive.
    assert_eq!(
        scan_reply(b"*4294967295\r\n:1\r\n:2\r\n", &limits),
        Ok(None)
    );
    assert_eq!(
        scan_reply(b"*4294967296\r\n", &limits),
        Err(ProtocolError::InvalidMultibulkLength)
    );
}
