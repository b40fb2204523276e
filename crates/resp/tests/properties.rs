//! Property tests: encode → parse round trips, split-at-every-byte equivalence, and arbitrary
//! bytes never panicking, for requests and replies.

use cinnabar_resp::{
    Limits, Parsed, ProtocolError, ReplyScanner, Request, RequestParser, Value, encode,
    parse_value, scan_reply,
};
use proptest::prelude::*;

fn line_bytes() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(
        any::<u8>().prop_filter("no CR/LF", |b| *b != b'\r' && *b != b'\n'),
        0..12,
    )
}

fn bytes() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), 0..24)
}

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        line_bytes().prop_map(Value::Simple),
        line_bytes().prop_map(Value::Error),
        any::<i64>().prop_map(Value::Integer),
        bytes().prop_map(Value::Bulk),
        Just(Value::NullBulk),
        Just(Value::NullArray),
        Just(Value::Null),
        any::<f64>()
            .prop_filter("NaN is not equal to itself", |d| !d.is_nan())
            .prop_map(Value::Double),
        any::<bool>().prop_map(Value::Boolean),
        "[-+]?[0-9]{1,40}".prop_map(|s| Value::BigNumber(s.into_bytes())),
        (any::<[u8; 3]>(), bytes()).prop_map(|(format, text)| Value::Verbatim { format, text }),
        bytes().prop_map(Value::BlobError),
    ]
}

fn value() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(4, 48, 5, |inner| {
        let items = proptest::collection::vec(inner.clone(), 0..5);
        let pairs = proptest::collection::vec((inner.clone(), inner.clone()), 0..3);
        prop_oneof![
            items.clone().prop_map(Value::Array),
            items.clone().prop_map(Value::Set),
            items.prop_map(Value::Push),
            pairs.clone().prop_map(Value::Map),
            (pairs, inner).prop_map(|(attributes, value)| Value::Attribute {
                attributes,
                value: Box::new(value)
            }),
        ]
    })
}

fn command() -> impl Strategy<Value = Vec<Vec<u8>>> {
    proptest::collection::vec(bytes(), 1..6)
}

/// An inline line for `args`: every argument double-quoted, escaping all but plain printables.
fn inline_line(args: &[Vec<u8>], crlf: bool) -> Vec<u8> {
    let mut line = Vec::new();
    for (i, arg) in args.iter().enumerate() {
        if i > 0 {
            line.push(b' ');
        }
        line.push(b'"');
        for &b in arg {
            if b.is_ascii_graphic() && b != b'"' && b != b'\\' || b == b' ' {
                line.push(b);
            } else {
                line.extend_from_slice(format!("\\x{b:02x}").as_bytes());
            }
        }
        line.push(b'"');
    }
    line.extend_from_slice(if crlf { b"\r\n" } else { b"\n" });
    line
}

/// Bytes biased towards RESP syntax so the parsers get past their first checks.
fn resp_ish() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        Just(b"*".to_vec()),
        Just(b"$".to_vec()),
        Just(b"\r\n".to_vec()),
        Just(b"\n".to_vec()),
        Just(b"1".to_vec()),
        Just(b"2".to_vec()),
        Just(b"0".to_vec()),
        Just(b"-1".to_vec()),
        Just(b"+OK".to_vec()),
        Just(b"-ERR".to_vec()),
        Just(b":".to_vec()),
        Just(b"%".to_vec()),
        Just(b"|".to_vec()),
        Just(b"~".to_vec()),
        Just(b">".to_vec()),
        Just(b"_".to_vec()),
        Just(b",1.5".to_vec()),
        Just(b"#t".to_vec()),
        Just(b"=".to_vec()),
        Just(b"txt:".to_vec()),
        Just(b"\"".to_vec()),
        Just(b"'".to_vec()),
        Just(b" ".to_vec()),
        Just(b"\\x4".to_vec()),
        any::<u8>().prop_map(|b| vec![b]),
    ];
    proptest::collection::vec(piece, 0..24).prop_map(|pieces| pieces.concat())
}

type Outcome = Result<(Parsed, Vec<Vec<u8>>), ProtocolError>;

fn parse_request(parser: &RequestParser, buf: &[u8], req: &mut Request) -> Outcome {
    let parsed = parser.parse(buf, req)?;
    let args = match parsed {
        Parsed::Complete { .. } => req.args(buf).map(<[u8]>::to_vec).collect(),
        _ => Vec::new(),
    };
    Ok((parsed, args))
}

fn small_limits() -> Limits {
    Limits {
        max_bulk_len: 16,
        max_array_len: 4,
        max_aggregate_len: 4,
        max_depth: 3,
        max_inline_len: 24,
        max_line_len: 8,
    }
}

/// Every strict prefix of `buf` parses as Incomplete (fresh and resumed), and the whole as
/// `whole`.
fn assert_prefixes_incomplete(buf: &[u8], whole: &Outcome) -> Result<(), TestCaseError> {
    let parser = RequestParser::default();
    let mut resumed = Request::new();
    for len in 0..buf.len() {
        let prefix = &buf[..len];
        prop_assert_eq!(
            parse_request(&parser, prefix, &mut Request::new()),
            Ok((Parsed::Incomplete, vec![]))
        );
        prop_assert_eq!(
            parse_request(&parser, prefix, &mut resumed),
            Ok((Parsed::Incomplete, vec![]))
        );
    }
    prop_assert_eq!(&parse_request(&parser, buf, &mut resumed), whole);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn any_value_round_trips_through_encode_and_parse(v in value()) {
        let bytes = v.to_bytes();
        prop_assert_eq!(parse_value(&bytes, &Limits::default()), Ok(Some((v, bytes.len()))));
        prop_assert_eq!(scan_reply(&bytes, &Limits::default()), Ok(Some(bytes.len())));
    }

    #[test]
    fn every_strict_prefix_of_a_reply_is_incomplete_and_the_whole_is_complete(v in value()) {
        let bytes = v.to_bytes();
        let mut scanner = ReplyScanner::new(Limits::default());
        for len in 0..bytes.len() {
            prop_assert_eq!(scan_reply(&bytes[..len], &Limits::default()), Ok(None));
            prop_assert_eq!(parse_value(&bytes[..len], &Limits::default()), Ok(None));
            prop_assert_eq!(scanner.scan(&bytes[..len]), Ok(None));
        }
        prop_assert_eq!(scanner.scan(&bytes), Ok(Some(bytes.len())));
    }

    #[test]
    fn any_command_round_trips_through_encode_and_parse(args in command()) {
        let slices: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
        let mut buf = Vec::new();
        encode::command(&mut buf, &slices);
        let whole = parse_request(&RequestParser::default(), &buf, &mut Request::new());
        prop_assert_eq!(&whole, &Ok((Parsed::Complete { consumed: buf.len() }, args)));
        assert_prefixes_incomplete(&buf, &whole)?;
    }

    #[test]
    fn any_quoted_inline_command_round_trips(args in command(), crlf in any::<bool>()) {
        let buf = inline_line(&args, crlf);
        let whole = parse_request(&RequestParser::default(), &buf, &mut Request::new());
        prop_assert_eq!(&whole, &Ok((Parsed::Complete { consumed: buf.len() }, args)));
        assert_prefixes_incomplete(&buf, &whole)?;
    }

    #[test]
    fn a_pipeline_parses_to_its_commands_in_order(commands in proptest::collection::vec(command(), 1..5)) {
        let mut buf = Vec::new();
        for args in &commands {
            let slices: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
            encode::command(&mut buf, &slices);
        }
        let parser = RequestParser::default();
        let mut req = Request::new();
        let mut at = 0;
        let mut parsed = Vec::new();
        while let Parsed::Complete { consumed } = parser.parse(&buf[at..], &mut req).unwrap() {
            parsed.push(req.args(&buf[at..]).map(<[u8]>::to_vec).collect::<Vec<_>>());
            at += consumed;
        }
        prop_assert_eq!(at, buf.len());
        prop_assert_eq!(parsed, commands);
    }

    #[test]
    fn arbitrary_bytes_never_panic_and_prefixes_never_disagree_with_the_whole(
        buf in prop_oneof![resp_ish(), proptest::collection::vec(any::<u8>(), 0..64)],
        small in any::<bool>(),
    ) {
        let limits = if small { small_limits() } else { Limits::default() };
        let parser = RequestParser::new(limits);
        let whole = parse_request(&parser, &buf, &mut Request::new());
        let scanned = scan_reply(&buf, &limits);
        let valued = parse_value(&buf, &limits).map(|v| v.map(|(_, n)| n));
        prop_assert_eq!(&scanned, &valued);
        // Fed every prefix in turn: these resume across Incomplete answers, and start afresh
        // after any other answer, which then must be the whole buffer's answer again.
        let mut resumed_req = Request::new();
        let mut resumed_scan = ReplyScanner::new(limits);
        for len in 0..=buf.len() {
            let prefix = &buf[..len];
            for outcome in [
                parse_request(&parser, prefix, &mut Request::new()),
                parse_request(&parser, prefix, &mut resumed_req),
            ] {
                if outcome != Ok((Parsed::Incomplete, vec![])) {
                    prop_assert_eq!(&outcome, &whole, "prefix {}", len);
                }
            }
            for outcome in [scan_reply(prefix, &limits), resumed_scan.scan(prefix)] {
                if outcome != Ok(None) {
                    prop_assert_eq!(&outcome, &scanned, "prefix {}", len);
                }
            }
        }
    }
}

#[test]
fn nan_round_trips_as_nan() {
    let bytes = Value::Double(f64::NAN).to_bytes();
    assert_eq!(bytes, b",nan\r\n");
    match parse_value(&bytes, &Limits::default()) {
        Ok(Some((Value::Double(d), 6))) => assert!(d.is_nan()),
        other => panic!("{other:?}"),
    }
}
