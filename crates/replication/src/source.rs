//! The byte source under the reader: reads exactly what the RDB needs from a `BufRead`, counts
//! offsets, feeds the CRC-64, and optionally captures a value's raw bytes for a DUMP payload.
//!
//! It must never read past the bytes it is asked for (the socket carries the command stream
//! right after the RDB) and never allocate from a declared length before the bytes arrive.

use std::io::{BufRead, ErrorKind};

use crate::crc64::Crc64;
use crate::error::RdbError;
use crate::lzf::LzfPieces;

/// Pieces of a long string are read this many bytes at a time when the caller wants it whole,
/// so a lying length costs at most this much before the input runs out.
const WHOLE_STRING_STEP: usize = 64 * 1024;

/// A length-encoded field: a plain length, or the marker of a specially encoded string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Length {
    /// A plain length or count.
    Plain(u64),
    /// A string stored as an 8-bit integer.
    Int8,
    /// A string stored as a 16-bit little-endian integer.
    Int16,
    /// A string stored as a 32-bit little-endian integer.
    Int32,
    /// An LZF-compressed string.
    Lzf,
}

/// Whether the bytes of the current value are being kept.
#[derive(Debug)]
enum Capture {
    Off,
    On(Vec<u8>),
    /// The value grew past the limit; its bytes were dropped.
    Overflowed,
}

/// The reader's view of its input.
#[derive(Debug)]
pub(crate) struct Source<R> {
    inner: R,
    offset: u64,
    crc: Crc64,
    capture: Capture,
    capture_limit: usize,
}

impl<R: BufRead> Source<R> {
    pub(crate) fn new(inner: R, capture_limit: usize) -> Self {
        Self {
            inner,
            offset: 0,
            crc: Crc64::new(),
            capture: Capture::Off,
            capture_limit,
        }
    }

    pub(crate) fn into_inner(self) -> R {
        self.inner
    }

    /// Bytes consumed so far.
    pub(crate) fn offset(&self) -> u64 {
        self.offset
    }

    /// The CRC-64 of every byte consumed so far.
    pub(crate) fn crc(&self) -> u64 {
        self.crc.value()
    }

    /// Starts keeping the bytes read from now on, after `prefix` (the value's type byte, which
    /// was read before the key).
    pub(crate) fn start_capture(&mut self, prefix: &[u8]) {
        self.capture = if prefix.len() <= self.capture_limit {
            // Most values are small: room for one up front saves a string of reallocations.
            let mut kept = Vec::with_capacity(CAPTURE_START.min(self.capture_limit));
            kept.extend_from_slice(prefix);
            Capture::On(kept)
        } else {
            Capture::Overflowed
        };
    }

    /// True while a capture is running and has not overflowed.
    pub(crate) fn capture_alive(&self) -> bool {
        matches!(self.capture, Capture::On(_))
    }

    /// How many more bytes a running capture can take; `None` when none runs.
    pub(crate) fn capture_room(&self) -> Option<u64> {
        match &self.capture {
            Capture::On(kept) => Some(self.capture_limit.saturating_sub(kept.len()) as u64),
            Capture::Off | Capture::Overflowed => None,
        }
    }

    /// Consumes `n` bytes without handing them over (they still count for the offset, the
    /// CRC and a running capture).
    pub(crate) fn skip(&mut self, mut n: u64) -> Result<(), RdbError> {
        while n > 0 {
            let available = match self.inner.fill_buf() {
                Ok(available) => available,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(source) => {
                    return Err(RdbError::Io {
                        offset: self.offset,
                        source,
                    });
                }
            };
            if available.is_empty() {
                return Err(RdbError::Truncated {
                    offset: self.offset,
                });
            }
            let take = available
                .len()
                .min(usize::try_from(n).unwrap_or(usize::MAX));
            note(
                &mut self.offset,
                &mut self.crc,
                &mut self.capture,
                self.capture_limit,
                &available[..take],
            );
            self.inner.consume(take);
            n -= take as u64;
        }
        Ok(())
    }

    /// Stops capturing; the bytes kept, unless the value was too big.
    pub(crate) fn finish_capture(&mut self) -> Option<Vec<u8>> {
        match std::mem::replace(&mut self.capture, Capture::Off) {
            Capture::On(bytes) => Some(bytes),
            Capture::Off | Capture::Overflowed => None,
        }
    }

    /// Accounts for bytes just consumed.
    fn note(&mut self, bytes: &[u8]) {
        note(
            &mut self.offset,
            &mut self.crc,
            &mut self.capture,
            self.capture_limit,
            bytes,
        );
    }

    /// Fills `buf` completely, or fails with the exact offset where the input ended.
    pub(crate) fn read_exact(&mut self, buf: &mut [u8]) -> Result<(), RdbError> {
        let mut filled = 0;
        while filled < buf.len() {
            let available = match self.inner.fill_buf() {
                Ok(available) => available,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(source) => {
                    return Err(RdbError::Io {
                        offset: self.offset,
                        source,
                    });
                }
            };
            if available.is_empty() {
                return Err(RdbError::Truncated {
                    offset: self.offset,
                });
            }
            let n = available.len().min(buf.len() - filled);
            buf[filled..filled + n].copy_from_slice(&available[..n]);
            self.inner.consume(n);
            self.note(&buf[filled..filled + n]);
            filled += n;
        }
        Ok(())
    }

    pub(crate) fn read_array<const N: usize>(&mut self) -> Result<[u8; N], RdbError> {
        let mut buf = [0u8; N];
        self.read_exact(&mut buf)?;
        Ok(buf)
    }

    pub(crate) fn read_u8(&mut self) -> Result<u8, RdbError> {
        Ok(self.read_array::<1>()?[0])
    }

    pub(crate) fn read_u32_le(&mut self) -> Result<u32, RdbError> {
        Ok(u32::from_le_bytes(self.read_array()?))
    }

    pub(crate) fn read_u64_le(&mut self) -> Result<u64, RdbError> {
        Ok(u64::from_le_bytes(self.read_array()?))
    }

    /// A length-encoded field (the top two bits of the first byte choose the width).
    pub(crate) fn read_length(&mut self) -> Result<Length, RdbError> {
        let first = self.read_u8()?;
        let low_six = u64::from(first & 0x3f);
        Ok(match first >> 6 {
            0 => Length::Plain(low_six),
            1 => Length::Plain((low_six << 8) | u64::from(self.read_u8()?)),
            2 => match first {
                0x80 => Length::Plain(u64::from(u32::from_be_bytes(self.read_array()?))),
                0x81 => Length::Plain(u64::from_be_bytes(self.read_array()?)),
                _ => return Err(self.corrupt("length with an unknown 32/64-bit marker")),
            },
            _ => match first & 0x3f {
                0 => Length::Int8,
                1 => Length::Int16,
                2 => Length::Int32,
                3 => Length::Lzf,
                _ => return Err(self.corrupt("unknown string encoding")),
            },
        })
    }

    /// A plain length or count (an encoded-string marker here is corruption).
    pub(crate) fn read_len(&mut self) -> Result<u64, RdbError> {
        match self.read_length()? {
            Length::Plain(n) => Ok(n),
            _ => Err(self.corrupt("string encoding where a length was expected")),
        }
    }

    /// Starts reading a string that will be handed over in pieces, so a huge value is never
    /// held whole.
    pub(crate) fn string_pieces(&mut self) -> Result<StringPieces, RdbError> {
        Ok(match self.read_length()? {
            Length::Int8 => StringPieces::Once(i8::from_le_bytes(self.read_array()?).to_string()),
            Length::Int16 => StringPieces::Once(i16::from_le_bytes(self.read_array()?).to_string()),
            Length::Int32 => StringPieces::Once(i32::from_le_bytes(self.read_array()?).to_string()),
            Length::Lzf => {
                let compressed = self.read_len()?;
                let uncompressed = self.read_len()?;
                StringPieces::Lzf(LzfPieces::new(compressed, uncompressed))
            }
            Length::Plain(left) => StringPieces::Plain {
                left,
                started: false,
            },
        })
    }

    /// A whole string (keys, members, encoded blobs), grown as its bytes arrive.
    pub(crate) fn read_string(&mut self) -> Result<Vec<u8>, RdbError> {
        let mut pieces = self.string_pieces()?;
        let mut whole = pieces
            .next_piece(self, WHOLE_STRING_STEP)?
            .unwrap_or_default();
        while let Some(piece) = pieces.next_piece(self, WHOLE_STRING_STEP)? {
            whole.extend_from_slice(&piece);
        }
        Ok(whole)
    }

    /// A score of the oldest sorted-set type: a length byte then ASCII, with three reserved
    /// lengths for NaN and the infinities.
    pub(crate) fn read_ascii_double(&mut self) -> Result<f64, RdbError> {
        let len = self.read_u8()?;
        match len {
            253 => Ok(f64::NAN),
            254 => Ok(f64::INFINITY),
            255 => Ok(f64::NEG_INFINITY),
            _ => {
                let mut text = vec![0u8; usize::from(len)];
                self.read_exact(&mut text)?;
                std::str::from_utf8(&text)
                    .ok()
                    .and_then(|t| t.parse::<f64>().ok())
                    .ok_or_else(|| self.corrupt("sorted set score is not a number"))
            }
        }
    }

    /// A binary little-endian IEEE 754 double.
    pub(crate) fn read_binary_double(&mut self) -> Result<f64, RdbError> {
        Ok(f64::from_le_bytes(self.read_array()?))
    }

    /// A corruption error at the current offset.
    pub(crate) fn corrupt(&self, what: &'static str) -> RdbError {
        RdbError::Corrupt {
            what,
            offset: self.offset,
        }
    }
}

/// First capacity of a capture buffer.
const CAPTURE_START: usize = 256;

/// Accounts for bytes just consumed (a free function, so [`Source::skip`] can call it while the
/// input's buffer is borrowed).
fn note(offset: &mut u64, crc: &mut Crc64, capture: &mut Capture, limit: usize, bytes: &[u8]) {
    *offset += bytes.len() as u64;
    crc.update(bytes);
    if let Capture::On(kept) = capture {
        if kept.len() + bytes.len() > limit {
            *capture = Capture::Overflowed;
        } else {
            kept.extend_from_slice(bytes);
        }
    }
}

/// A string being read piece by piece (see [`Source::string_pieces`]).
#[derive(Debug)]
pub(crate) enum StringPieces {
    /// An integer-encoded string, not yet handed over.
    Once(String),
    /// A plain string with `left` bytes to go.
    Plain { left: u64, started: bool },
    /// An LZF-compressed string.
    Lzf(LzfPieces),
    /// Everything was handed over.
    Done,
}

impl StringPieces {
    /// The encoded bytes still to read, before any piece was taken (`None` for an integer
    /// encoding, which is already read, or once reading started).
    pub(crate) fn encoded_left(&self) -> Option<u64> {
        match self {
            Self::Plain {
                left,
                started: false,
            } => Some(*left),
            Self::Lzf(lzf) => lzf.untouched_compressed(),
            Self::Plain { .. } | Self::Once(_) | Self::Done => None,
        }
    }

    /// The next piece of at most `piece_bytes` bytes, or `None` at the end. There is at least
    /// one piece, even for an empty string.
    pub(crate) fn next_piece<R: BufRead>(
        &mut self,
        src: &mut Source<R>,
        piece_bytes: usize,
    ) -> Result<Option<Vec<u8>>, RdbError> {
        let piece_bytes = piece_bytes.max(1);
        match self {
            Self::Done => Ok(None),
            Self::Once(text) => {
                let bytes = std::mem::take(text).into_bytes();
                *self = Self::Done;
                Ok(Some(bytes))
            }
            Self::Lzf(lzf) => lzf.next_piece(src, piece_bytes),
            Self::Plain { left, started } => {
                if *left == 0 && *started {
                    return Ok(None);
                }
                let step = usize::try_from(*left)
                    .unwrap_or(usize::MAX)
                    .min(piece_bytes);
                let mut piece = vec![0u8; step];
                src.read_exact(&mut piece)?;
                *left -= step as u64;
                *started = true;
                Ok(Some(piece))
            }
        }
    }
}
