//! Feeds arbitrary bytes to every parser of `cinnabar-resp`: the request parser (repeatedly,
//! consuming, whole and in chunks), the reply scanner (whole and resumed) and the value parser,
//! and checks they never panic and agree with each other.

#![no_main]

use cinnabar_resp::{
    Limits, Parsed, ProtocolError, ReplyScanner, Request, RequestParser, Value, error_class,
    parse_redirect, parse_value, scan_reply,
};
use libfuzzer_sys::fuzz_target;

/// Small limits so the fuzzer reaches every limit check with short inputs.
const LIMITS: Limits = Limits {
    max_bulk_len: 4096,
    max_array_len: 64,
    max_aggregate_len: 64,
    max_depth: 8,
    max_inline_len: 256,
    max_line_len: 256,
};

fuzz_target!(|data: &[u8]| {
    requests(data);
    replies(data);
});

/// One step of request parsing, with the arguments copied out for comparison.
type Step = Result<(Parsed, Vec<Vec<u8>>), ProtocolError>;

fn parse_request(parser: &RequestParser, buf: &[u8], req: &mut Request) -> Step {
    let parsed = parser.parse(buf, req)?;
    let args = match parsed {
        Parsed::Complete { consumed } => {
            assert!(consumed > 0 && consumed <= buf.len());
            assert!(!req.is_empty());
            let args: Vec<Vec<u8>> = req.args(buf).map(<[u8]>::to_vec).collect();
            assert_eq!(args.len(), req.len());
            args
        }
        Parsed::Skipped { consumed } => {
            assert!(consumed > 0 && consumed <= buf.len());
            Vec::new()
        }
        Parsed::Incomplete => Vec::new(),
    };
    Ok((parsed, args))
}

fn requests(data: &[u8]) {
    let parser = RequestParser::new(LIMITS);
    let mut req = Request::new();
    let mut rest = data;
    let chunk = usize::from(data.first().copied().unwrap_or(1) % 16) + 1;
    loop {
        let whole = parse_request(&parser, rest, &mut req);
        // The same bytes fed in chunks to a resuming parser give the same outcome, and every
        // strict prefix is either incomplete or already the same outcome.
        let mut resumed = Request::new();
        let mut fed = 0;
        let by_chunks = loop {
            fed = (fed + chunk).min(rest.len());
            let step = parse_request(&parser, &rest[..fed], &mut resumed);
            if fed == rest.len() || !matches!(step, Ok((Parsed::Incomplete, _))) {
                break step;
            }
        };
        assert_eq!(whole, by_chunks);
        match whole {
            Ok((Parsed::Complete { consumed } | Parsed::Skipped { consumed }, _)) => {
                rest = &rest[consumed..];
            }
            Ok((Parsed::Incomplete, _)) | Err(_) => break,
        }
    }
}

fn replies(data: &[u8]) {
    let scanned = scan_reply(data, &LIMITS);
    let parsed = parse_value(data, &LIMITS);
    match (&scanned, &parsed) {
        (Ok(None), Ok(None)) => {}
        (Ok(Some(n)), Ok(Some((value, m)))) => {
            assert_eq!(n, m, "scanner and value parser disagree on the length");
            canonical_encoding_round_trips(value);
            let _ = error_class(&data[..*n]);
            if let Some(redirect) = parse_redirect(&data[..*n]) {
                assert!(redirect.slot < 16384);
                let _ = redirect.host_port();
            }
        }
        (Err(a), Err(b)) => assert_eq!(a, b, "scanner and value parser disagree on the error"),
        _ => panic!("scanner {scanned:?} and value parser {parsed:?} disagree"),
    }
    // A resumed scanner, fed in chunks, agrees with the one-shot scan.
    let chunk = usize::from(data.last().copied().unwrap_or(1) % 16) + 1;
    let mut scanner = ReplyScanner::new(LIMITS);
    let mut fed = 0;
    let resumed = loop {
        fed = (fed + chunk).min(data.len());
        let step = scanner.scan(&data[..fed]);
        if fed == data.len() || !matches!(step, Ok(None)) {
            break step;
        }
    };
    assert_eq!(scanned, resumed);
}

/// Encoding a parsed value and parsing it again gives a value with the same encoding.
fn canonical_encoding_round_trips(value: &Value) {
    let bytes = value.to_bytes();
    let unlimited = Limits {
        max_aggregate_len: u64::MAX,
        max_bulk_len: u64::MAX,
        ..LIMITS
    };
    match parse_value(&bytes, &unlimited) {
        Ok(Some((again, n))) => {
            assert_eq!(n, bytes.len());
            assert_eq!(again.to_bytes(), bytes);
        }
        other => panic!("re-encoded {value:?} as {bytes:?}, which parses as {other:?}"),
    }
}
