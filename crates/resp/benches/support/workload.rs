//! The inputs both the criterion bench (`benches/parse.rs`) and the callgrind driver
//! (`examples/parse_instructions.rs`) measure, defined once so the two numbers describe the same
//! work.

use cinnabar_resp::encode;

/// Commands (or replies) in one pipeline.
pub(crate) const COMMANDS: usize = 10_000;

/// `SET key:NNNNNN <64-byte value>`, `COMMANDS` times, as a client pipeline.
pub(crate) fn set_pipeline() -> Vec<u8> {
    let value = [b'v'; 64];
    let mut buf = Vec::new();
    for i in 0..COMMANDS {
        let key = format!("key:{i:06}");
        encode::command(&mut buf, &[b"SET", key.as_bytes(), &value]);
    }
    buf
}

/// A mix of what backends answer: `+OK`, a 64-byte bulk, an integer, a null, a 3-element
/// array of bulks, `COMMANDS` replies in all.
pub(crate) fn reply_pipeline() -> Vec<u8> {
    let mut buf = Vec::new();
    for i in 0..COMMANDS {
        match i % 5 {
            0 => encode::simple(&mut buf, b"OK"),
            1 => encode::bulk(&mut buf, &[b'v'; 64]),
            2 => encode::integer(&mut buf, i as i64),
            3 => encode::null(&mut buf, encode::Protocol::Resp2),
            _ => {
                encode::array_header(&mut buf, 3);
                for field in [&b"field"[..], b"value", b"another"] {
                    encode::bulk(&mut buf, field);
                }
            }
        }
    }
    buf
}
