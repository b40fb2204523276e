//! The one error type of the RDB reader: why a stream of bytes is not an RDB we can read.
//!
//! Every variant that comes from the input names the byte offset where reading failed, so an
//! operator can look at the file; an error must never carry a copy of a key or value.

use std::io;

/// What an [`EventSink`](crate::EventSink) returns to stop the reader.
pub type SinkError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Why reading an RDB stream failed. After any of these the stream is out of sync: the only
/// safe continuation is to start a new transfer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RdbError {
    /// The input ended before the RDB did.
    #[error("RDB truncated: input ended at byte offset {offset}")]
    Truncated {
        /// How many bytes were read before the end.
        offset: u64,
    },
    /// Reading the input failed.
    #[error("I/O error reading the RDB at byte offset {offset}: {source}")]
    Io {
        /// How many bytes were read before the failure.
        offset: u64,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The input does not start with `REDIS` followed by four digits.
    #[error("not an RDB: the first 9 bytes are not `REDIS` and a 4-digit version")]
    BadMagic,
    /// The RDB version is outside what this reader understands.
    #[error("unsupported RDB version {version} (this reader reads versions {min} to {max})")]
    UnsupportedVersion {
        /// The version in the header.
        version: u32,
        /// The oldest version this reader reads.
        min: u32,
        /// The newest version this reader reads.
        max: u32,
    },
    /// A byte where an opcode or a value type must be is neither.
    #[error("unknown RDB opcode or value type 0x{byte:02x} at byte offset {offset}")]
    UnknownType {
        /// The unknown byte.
        byte: u8,
        /// Where it is.
        offset: u64,
    },
    /// An opcode or type we know but deliberately do not read (for example the pre-release
    /// Redis 7.0 FUNCTION opcode).
    #[error("unsupported RDB {what} (0x{byte:02x}) at byte offset {offset}")]
    Unsupported {
        /// What the byte means.
        what: &'static str,
        /// The byte.
        byte: u8,
        /// Where it is.
        offset: u64,
    },
    /// A value or module auxiliary data written by a Redis module: its format is private to the
    /// module, so it can be neither read nor moved without it.
    #[error(
        "module data of module type `{name}` (encoding version {encoding_version}, id {id:#018x}) \
         at byte offset {offset}: values of module types cannot be read"
    )]
    ModuleType {
        /// The module type's 9-character name, decoded from the id.
        name: String,
        /// The module type's encoding version (low 10 bits of the id).
        encoding_version: u16,
        /// The raw 64-bit module type id.
        id: u64,
        /// Where the module data starts.
        offset: u64,
    },
    /// The checksum at the end of the RDB does not match its content.
    #[error("bad RDB checksum: the file says {expected:#018x}, its content gives {computed:#018x}")]
    BadChecksum {
        /// The CRC-64 written at the end of the file.
        expected: u64,
        /// The CRC-64 of everything before it.
        computed: u64,
    },
    /// A structure is malformed: a bad length, an encoded blob that does not parse, LZF data
    /// that does not decompress to its declared length.
    #[error("corrupt RDB: {what} at byte offset {offset}")]
    Corrupt {
        /// What is wrong.
        what: &'static str,
        /// Where the malformed structure ends or was noticed.
        offset: u64,
    },
    /// The event sink asked to stop.
    #[error("the RDB event sink stopped reading: {0}")]
    Sink(#[source] SinkError),
}
