//! Hard bounds on what the parsers accept, so a hostile or broken peer costs bounded memory
//! and time. Nothing here may ever be used to preallocate: a declared length is a promise,
//! not a fact, and buffers only grow as bytes actually arrive.

/// Bounds applied by [`RequestParser`](crate::RequestParser), [`ReplyScanner`](crate::ReplyScanner)
/// and [`parse_value`](crate::parse_value). Exceeding any of them is a
/// [`ProtocolError`](crate::ProtocolError), never a panic or an allocation.
///
/// Lengths above 10^18 are treated as 10^18 (no real buffer comes close).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest bulk string accepted, in bytes, in requests and replies (`$`, `!`, `=`).
    /// Default 512 MiB, Redis's `proto-max-bulk-len`. Raise it together with the backends'.
    pub max_bulk_len: u64,
    /// Most arguments in one multibulk request (`*N`). Default 1,048,576 (2^20). Redis accepts
    /// up to `i32::MAX` but never preallocates more than 1 Mi entries; a proxy that buffers a
    /// whole request before routing it needs a tighter bound, and 1 Mi arguments (an `MSET` of
    /// half a million keys) is far beyond what any client library sends in one command.
    pub max_array_len: u64,
    /// Most elements in one reply aggregate (`*`, `~`, `>`; a map's or attribute's pair count).
    /// Default 2^32 - 1, hiredis's bound: replies come from trusted backends and may be huge
    /// (`KEYS *`, `LRANGE 0 -1`), and the scanner needs no memory per element.
    pub max_aggregate_len: u64,
    /// Most aggregates open at once in a reply (an attribute counts as one level). Default 128;
    /// Redis's deepest replies (`CLUSTER SHARDS`, `XINFO STREAM FULL`, `COMMAND DOCS`) are
    /// under 10 levels deep.
    pub max_depth: usize,
    /// Longest inline request line, in bytes, without its line terminator. Default 64 KiB,
    /// Redis's `PROTO_INLINE_MAX_SIZE`.
    pub max_inline_len: usize,
    /// Longest reply line (`+`, `-`, `:`, `_`, `,`, `#`, `(`), in bytes, without its CRLF.
    /// Default 1 MiB: error messages and status lines are short, but a broken backend must not
    /// make the proxy buffer forever while it waits for a CRLF.
    pub max_line_len: usize,
}

impl Limits {
    /// The defaults documented on each field.
    pub const DEFAULT: Limits = Limits {
        max_bulk_len: 512 * 1024 * 1024,
        max_array_len: 1024 * 1024,
        max_aggregate_len: (1 << 32) - 1,
        max_depth: 128,
        max_inline_len: 64 * 1024,
        max_line_len: 1024 * 1024,
    };
}

impl Default for Limits {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// Caps a configured length so `value * 10 + 9` can never overflow a `u64`.
pub(crate) const fn cap(limit: u64) -> u64 {
    const MAX: u64 = 1_000_000_000_000_000_000;
    if limit > MAX { MAX } else { limit }
}
