//! Feeds arbitrary bytes to the streaming RDB reader of `cinnabar-replication`, whole and one
//! byte per read, and checks it never panics, gives the same events and outcome both ways, and
//! never reports a batch larger than its limits.

#![no_main]

use std::io::BufReader;

use cinnabar_replication::{Event, RdbReader, ReaderOptions, ValuePieces};
use libfuzzer_sys::fuzz_target;

/// Small limits so batches and captures overflow with short inputs.
fn options() -> ReaderOptions {
    ReaderOptions {
        batch_max_items: 3,
        batch_max_bytes: 16,
        raw_capture_limit: 64,
        value_pieces: ValuePieces::Always,
    }
}

/// Every event and the outcome (`Ok` summary or the error's message).
fn read(input: impl std::io::BufRead) -> (Vec<Event>, Result<String, String>) {
    let mut events = Vec::new();
    let outcome = RdbReader::new(input, options())
        .read_all(&mut |event: Event| {
            events.push(event);
            Ok(())
        })
        .map(|summary| format!("{summary:?}"))
        .map_err(|e| e.to_string());
    (events, outcome)
}

fuzz_target!(|data: &[u8]| {
    let whole = read(data);
    let trickled = read(BufReader::with_capacity(1, data));
    assert_eq!(whole, trickled);
    for event in &whole.0 {
        assert!(event.element_count() <= 3);
        if let Event::StringChunk(chunk) = event {
            assert!(chunk.len() <= 16);
        }
    }
    // Also with a valid header in front, so the fuzzer need not find it first.
    let mut with_header = b"REDIS0011".to_vec();
    with_header.extend_from_slice(data);
    let _ = read(with_header.as_slice());
});
