//! An owned tree of one RESP2/RESP3 reply, for the control plane and for tests. It is not for
//! the proxy's hot path (it allocates per element) and it must never recurse on input: parsing
//! and encoding use explicit stacks, so only [`Limits::max_depth`] bounds nesting.

use crate::encode::{self, Protocol};
use crate::error::ProtocolError;
use crate::lex::{Aggregate, Leaf, Token, next_token};
use crate::limits::Limits;

/// One RESP value, every RESP2 and RESP3 type, keeping the distinctions the wire makes (the
/// three nulls, simple versus bulk strings) so that encoding a parsed value gives back the
/// same bytes.
///
/// Equality is structural; as with `f64`, a `Double(NAN)` is not equal to itself.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `+text` simple string (no CR or LF).
    Simple(Vec<u8>),
    /// `-CODE message` simple error (no CR or LF).
    Error(Vec<u8>),
    /// `:n` integer.
    Integer(i64),
    /// `$len` bulk string.
    Bulk(Vec<u8>),
    /// `$-1`, RESP2's null bulk string.
    NullBulk,
    /// `*-1`, RESP2's null array.
    NullArray,
    /// `_`, RESP3's null.
    Null,
    /// `*n` array.
    Array(Vec<Value>),
    /// `%n` map, pairs in wire order (duplicates kept).
    Map(Vec<(Value, Value)>),
    /// `~n` set, elements in wire order.
    Set(Vec<Value>),
    /// `>n` push: an out-of-band message (pub/sub, client-side caching invalidation).
    Push(Vec<Value>),
    /// `|n` attribute pairs and the reply they annotate.
    Attribute {
        /// The attribute pairs.
        attributes: Vec<(Value, Value)>,
        /// The annotated reply.
        value: Box<Value>,
    },
    /// `,` double.
    Double(f64),
    /// `#t` / `#f` boolean.
    Boolean(bool),
    /// `(` big number: an optionally signed run of decimal digits, kept as text.
    BigNumber(Vec<u8>),
    /// `=len` verbatim string: a 3-byte format (`txt`, `mkd`) and the text.
    Verbatim {
        /// The format, e.g. `*b"txt"`.
        format: [u8; 3],
        /// The text after `fmt:`.
        text: Vec<u8>,
    },
    /// `!len` blob error.
    BlobError(Vec<u8>),
}

/// Parses the first complete reply in `buf` into a [`Value`].
///
/// Returns `Ok(Some((value, n)))` when `buf[..n]` is one complete reply (an attribute is
/// returned as [`Value::Attribute`] wrapping the reply it precedes), `Ok(None)` when `buf`
/// ends inside it. Accepts exactly what [`scan_reply`](crate::scan_reply) accepts, with the
/// same length. Not resumable: a partial reply is parsed again on the next call.
///
/// # Errors
///
/// The same [`ProtocolError`] as [`scan_reply`](crate::scan_reply) for invalid or over-limit
/// input.
pub fn parse_value(buf: &[u8], limits: &Limits) -> Result<Option<(Value, usize)>, ProtocolError> {
    /// An aggregate being filled.
    struct Frame {
        kind: Aggregate,
        items: Vec<Value>,
        remaining: u64,
    }
    let mut stack: Vec<Frame> = Vec::new();
    let mut pos = 0;
    loop {
        let mut value = match next_token(buf, pos, pos, limits)? {
            Token::Incomplete { .. } => return Ok(None),
            Token::Leaf { leaf, next } => {
                pos = next;
                leaf_value(buf, leaf)
            }
            Token::Open { kind, count, next } => {
                pos = next;
                if count > 0 {
                    if stack.len() >= limits.max_depth {
                        return Err(ProtocolError::TooDeep);
                    }
                    // Never trust a declared count for allocation.
                    let capacity = usize::try_from(count.min(64)).unwrap_or(64);
                    stack.push(Frame {
                        kind,
                        items: Vec::with_capacity(capacity),
                        remaining: count,
                    });
                    continue;
                }
                aggregate_value(kind, Vec::new())
            }
        };
        loop {
            let Some(frame) = stack.last_mut() else {
                return Ok(Some((value, pos)));
            };
            frame.items.push(value);
            frame.remaining -= 1;
            if frame.remaining > 0 {
                break;
            }
            let Some(frame) = stack.pop() else { break };
            value = aggregate_value(frame.kind, frame.items);
        }
    }
}

fn leaf_value(buf: &[u8], leaf: Leaf) -> Value {
    let bytes = |start: usize, end: usize| buf.get(start..end).unwrap_or_default().to_vec();
    match leaf {
        Leaf::Simple(s, e) => Value::Simple(bytes(s, e)),
        Leaf::Error(s, e) => Value::Error(bytes(s, e)),
        Leaf::Integer(n) => Value::Integer(n),
        Leaf::Bulk(s, e) => Value::Bulk(bytes(s, e)),
        Leaf::NullBulk => Value::NullBulk,
        Leaf::NullArray => Value::NullArray,
        Leaf::Null => Value::Null,
        Leaf::Double(d) => Value::Double(d),
        Leaf::Boolean(b) => Value::Boolean(b),
        Leaf::BigNumber(s, e) => Value::BigNumber(bytes(s, e)),
        Leaf::Verbatim(s, e) => {
            let mut format = [0u8; 3];
            if let Some(head) = buf.get(s..s + 3) {
                format.copy_from_slice(head);
            }
            Value::Verbatim {
                format,
                text: bytes(s + 4, e),
            }
        }
        Leaf::BlobError(s, e) => Value::BlobError(bytes(s, e)),
    }
}

/// Builds an aggregate from its children (for an attribute: the pairs, then the reply).
fn aggregate_value(kind: Aggregate, mut items: Vec<Value>) -> Value {
    match kind {
        Aggregate::Array => Value::Array(items),
        Aggregate::Set => Value::Set(items),
        Aggregate::Push => Value::Push(items),
        Aggregate::Map => Value::Map(pairs(items)),
        Aggregate::Attribute => {
            let value = Box::new(items.pop().unwrap_or(Value::Null));
            Value::Attribute {
                attributes: pairs(items),
                value,
            }
        }
    }
}

fn pairs(items: Vec<Value>) -> Vec<(Value, Value)> {
    let mut out = Vec::with_capacity(items.len() / 2);
    let mut items = items.into_iter();
    while let (Some(key), Some(value)) = (items.next(), items.next()) {
        out.push((key, value));
    }
    out
}

impl Value {
    /// Appends the value's RESP encoding to `out`, each type in its own wire form (RESP3 types
    /// as RESP3). Simple strings, errors and big numbers have CR and LF written as spaces.
    /// Iterative: any nesting depth is safe.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let mut todo: Vec<&Value> = vec![self];
        while let Some(value) = todo.pop() {
            value.encode_head(out, &mut todo);
        }
    }

    /// The value's encoding as a new buffer.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode(&mut out);
        out
    }

    /// Writes this value's header (or whole leaf) and queues its children, last first.
    fn encode_head<'a>(&'a self, out: &mut Vec<u8>, todo: &mut Vec<&'a Value>) {
        let r3 = Protocol::Resp3;
        match self {
            Value::Simple(s) => encode::simple(out, s),
            Value::Error(s) => encode::error(out, s),
            Value::Integer(n) => encode::integer(out, *n),
            Value::Bulk(b) => encode::bulk(out, b),
            Value::NullBulk => encode::null(out, Protocol::Resp2),
            Value::NullArray => encode::null_array(out, Protocol::Resp2),
            Value::Null => encode::null(out, r3),
            Value::Array(items) => {
                encode::array_header(out, items.len());
                todo.extend(items.iter().rev());
            }
            Value::Set(items) => {
                encode::set_header(out, items.len(), r3);
                todo.extend(items.iter().rev());
            }
            Value::Push(items) => {
                encode::push_header(out, items.len(), r3);
                todo.extend(items.iter().rev());
            }
            Value::Map(pairs) => {
                encode::map_header(out, pairs.len(), r3);
                todo.extend(pairs.iter().rev().flat_map(|(k, v)| [v, k]));
            }
            Value::Attribute { attributes, value } => {
                encode::attribute_header(out, attributes.len());
                todo.push(value);
                todo.extend(attributes.iter().rev().flat_map(|(k, v)| [v, k]));
            }
            Value::Double(d) => encode::double(out, *d, r3),
            Value::Boolean(b) => encode::boolean(out, *b, r3),
            Value::BigNumber(digits) => encode::big_number(out, digits, r3),
            Value::Verbatim { format, text } => encode::verbatim(out, *format, text, r3),
            Value::BlobError(text) => encode::blob_error(out, text, r3),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(buf: &[u8]) -> Result<Option<(Value, usize)>, ProtocolError> {
        parse_value(buf, &Limits::DEFAULT)
    }

    fn bulk(s: &str) -> Value {
        Value::Bulk(s.as_bytes().to_vec())
    }

    #[test]
    fn every_leaf_type_parses_to_its_variant() {
        let cases: Vec<(&[u8], Value)> = vec![
            (b"+OK\r\n", Value::Simple(b"OK".to_vec())),
            (b"-ERR x\r\n", Value::Error(b"ERR x".to_vec())),
            (b":-42\r\n", Value::Integer(-42)),
            (b"$3\r\nfoo\r\n", bulk("foo")),
            (b"$0\r\n\r\n", bulk("")),
            (b"$-1\r\n", Value::NullBulk),
            (b"*-1\r\n", Value::NullArray),
            (b"_\r\n", Value::Null),
            (b",1.25\r\n", Value::Double(1.25)),
            (b"#t\r\n", Value::Boolean(true)),
            (b"#f\r\n", Value::Boolean(false)),
            (
                b"(-12345678901234567890\r\n",
                Value::BigNumber(b"-12345678901234567890".to_vec()),
            ),
            (
                b"=7\r\ntxt:abc\r\n",
                Value::Verbatim {
                    format: *b"txt",
                    text: b"abc".to_vec(),
                },
            ),
            (b"!5\r\nERR x\r\n", Value::BlobError(b"ERR x".to_vec())),
        ];
        for (bytes, expected) in cases {
            assert_eq!(
                parse(bytes),
                Ok(Some((expected.clone(), bytes.len()))),
                "{bytes:?}"
            );
            assert_eq!(expected.to_bytes(), bytes);
        }
    }

    #[test]
    fn aggregates_nest_and_attributes_wrap_the_reply_they_precede() {
        let bytes = b"|1\r\n+ttl\r\n:3\r\n%2\r\n+a\r\n*2\r\n:1\r\n~1\r\n#f\r\n+b\r\n>0\r\n";
        let expected = Value::Attribute {
            attributes: vec![(Value::Simple(b"ttl".to_vec()), Value::Integer(3))],
            value: Box::new(Value::Map(vec![
                (
                    Value::Simple(b"a".to_vec()),
                    Value::Array(vec![
                        Value::Integer(1),
                        Value::Set(vec![Value::Boolean(false)]),
                    ]),
                ),
                (Value::Simple(b"b".to_vec()), Value::Push(vec![])),
            ])),
        };
        assert_eq!(parse(bytes), Ok(Some((expected.clone(), bytes.len()))));
        assert_eq!(expected.to_bytes(), bytes);
    }

    #[test]
    fn trailing_bytes_after_the_first_reply_are_left_alone() {
        assert_eq!(
            parse(b"+a\r\n+b\r\n"),
            Ok(Some((Value::Simple(b"a".to_vec()), 4)))
        );
    }

    #[test]
    fn a_partial_reply_is_none() {
        assert_eq!(parse(b"*2\r\n:1\r\n"), Ok(None));
        assert_eq!(parse(b""), Ok(None));
    }

    #[test]
    fn nesting_beyond_max_depth_is_a_protocol_error_not_a_stack_overflow() {
        let limits = Limits {
            max_depth: 3,
            ..Limits::DEFAULT
        };
        assert!(matches!(
            parse_value(b"*1\r\n*1\r\n*1\r\n:1\r\n", &limits),
            Ok(Some(_))
        ));
        assert_eq!(
            parse_value(b"*1\r\n*1\r\n*1\r\n*1\r\n:1\r\n", &limits),
            Err(ProtocolError::TooDeep)
        );
    }

    #[test]
    fn encoding_a_very_deep_value_does_not_recurse() {
        let mut value = Value::Integer(1);
        for _ in 0..100_000 {
            value = Value::Array(vec![value]);
        }
        let bytes = value.to_bytes();
        assert_eq!(bytes.len(), 100_000 * 4 + 4);
        // Dropping is recursive in Rust; unwrap the nest by hand.
        while let Value::Array(mut items) = value {
            value = items.pop().unwrap_or(Value::Null);
        }
    }
}
