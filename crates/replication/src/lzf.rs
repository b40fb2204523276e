//! LZF decompression, streamed: compressed bytes are pulled from the [`Source`] and the output is
//! handed over in pieces, keeping only the 8 KiB window LZF back-references can reach.
//!
//! It must never trust the declared sizes for allocation, and never accept output that differs
//! from the declared uncompressed length.

use std::io::BufRead;

use crate::error::RdbError;
use crate::source::Source;

/// The farthest back an LZF back-reference reaches.
const WINDOW: usize = 8192;

/// An LZF-compressed string being decompressed piece by piece.
#[derive(Debug)]
pub(crate) struct LzfPieces {
    compressed: u64,
    uncompressed: u64,
    consumed: u64,
    produced: u64,
    /// The window (already handed over) followed by the output not yet handed over.
    out: Vec<u8>,
    handed_over: usize,
    pieces: usize,
}

impl LzfPieces {
    pub(crate) fn new(compressed: u64, uncompressed: u64) -> Self {
        Self {
            compressed,
            uncompressed,
            consumed: 0,
            produced: 0,
            out: Vec::new(),
            handed_over: 0,
            pieces: 0,
        }
    }

    /// The compressed length, while nothing of it was read yet.
    pub(crate) fn untouched_compressed(&self) -> Option<u64> {
        (self.consumed == 0 && self.pieces == 0).then_some(self.compressed)
    }

    /// The next piece of at most `piece_bytes` bytes, or `None` when all were handed over (there
    /// is at least one piece, even for an empty string).
    pub(crate) fn next_piece<R: BufRead>(
        &mut self,
        src: &mut Source<R>,
        piece_bytes: usize,
    ) -> Result<Option<Vec<u8>>, RdbError> {
        let piece_bytes = piece_bytes.max(1);
        while self.out.len() - self.handed_over < piece_bytes && self.consumed < self.compressed {
            self.decode_one(src)?;
        }
        let ready = self.out.len() - self.handed_over;
        if self.consumed == self.compressed && self.produced != self.uncompressed {
            return Err(src.corrupt("LZF output shorter than declared"));
        }
        if ready == 0 && self.pieces > 0 {
            return Ok(None);
        }
        let take = ready.min(piece_bytes);
        let piece = self.out[self.handed_over..self.handed_over + take].to_vec();
        self.handed_over += take;
        self.pieces += 1;
        if self.handed_over > 2 * WINDOW {
            let drop = self.handed_over - WINDOW;
            self.out.drain(..drop);
            self.handed_over -= drop;
        }
        Ok(Some(piece))
    }

    /// Decodes one literal run or back-reference.
    fn decode_one<R: BufRead>(&mut self, src: &mut Source<R>) -> Result<(), RdbError> {
        let control = usize::from(src.read_u8()?);
        self.consumed += 1;
        let produced = if control < 32 {
            let literal = control + 1;
            self.consumed += literal as u64;
            if self.consumed > self.compressed {
                return Err(src.corrupt("LZF literal runs past the compressed length"));
            }
            let start = self.out.len();
            self.out.resize(start + literal, 0);
            src.read_exact(&mut self.out[start..])?;
            literal
        } else {
            let mut len = control >> 5;
            if len == 7 {
                len += usize::from(src.read_u8()?);
                self.consumed += 1;
            }
            let back = (((control & 0x1f) << 8) | usize::from(src.read_u8()?)) + 1;
            self.consumed += 1;
            if self.consumed > self.compressed {
                return Err(src.corrupt("LZF back-reference runs past the compressed length"));
            }
            if back > self.out.len() {
                return Err(src.corrupt("LZF back-reference before the start of the output"));
            }
            // Byte by byte: a reference may overlap the bytes it produces.
            for _ in 0..len + 2 {
                let byte = self.out[self.out.len() - back];
                self.out.push(byte);
            }
            len + 2
        };
        self.produced += produced as u64;
        if self.produced > self.uncompressed {
            return Err(src.corrupt("LZF output longer than declared"));
        }
        Ok(())
    }
}
