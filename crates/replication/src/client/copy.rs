//! A `BufRead` that hands every byte its reader consumes to a writer as well: the RDB of a
//! full resynchronisation goes to a backup exactly as the source sent it, while the
//! [`RdbReader`](crate::RdbReader) checks it. Only consumed bytes are copied, so nothing the
//! reader merely peeked at (and nothing after the RDB's last byte) reaches the copy.

use std::io::{self, BufRead, Read, Write};

/// Copies what is consumed from `inner` to `copy`. A failed write is kept and returned by the
/// next read, which ends the RDB read with that error.
pub(crate) struct CopyingReader<'a, R> {
    inner: R,
    copy: &'a mut dyn Write,
    failed: Option<io::Error>,
}

impl<'a, R: BufRead> CopyingReader<'a, R> {
    pub(crate) fn new(inner: R, copy: &'a mut dyn Write) -> Self {
        Self {
            inner,
            copy,
            failed: None,
        }
    }
}

impl<R: BufRead> Read for CopyingReader<'_, R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let available = self.fill_buf()?;
        let n = available.len().min(out.len());
        out[..n].copy_from_slice(&available[..n]);
        self.consume(n);
        Ok(n)
    }
}

impl<R: BufRead> BufRead for CopyingReader<'_, R> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        if let Some(error) = self.failed.take() {
            return Err(error);
        }
        self.inner.fill_buf()
    }

    fn consume(&mut self, amount: usize) {
        if amount == 0 {
            return;
        }
        if self.failed.is_none() {
            // The bytes being consumed were returned by the last `fill_buf` and are still
            // buffered, so this call does no I/O.
            match self.inner.fill_buf() {
                Ok(buffered) => {
                    let end = amount.min(buffered.len());
                    if let Err(error) = self.copy.write_all(&buffered[..end]) {
                        self.failed = Some(error);
                    }
                }
                Err(error) => self.failed = Some(error),
            }
        }
        self.inner.consume(amount);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_exactly_what_is_consumed() {
        let data = b"0123456789abcdef".to_vec();
        let mut copy = Vec::new();
        let mut reader = CopyingReader::new(io::BufReader::with_capacity(4, &data[..]), &mut copy);
        let mut first = [0u8; 6];
        reader.read_exact(&mut first).unwrap();
        // Peeking does not copy.
        assert_eq!(reader.fill_buf().unwrap(), b"67");
        reader.consume(1);
        drop(reader);
        assert_eq!(copy, b"0123456");
    }

    #[test]
    fn a_failed_write_ends_the_read() {
        struct Broken;
        impl Write for Broken {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(io::Error::other("store down"))
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let mut broken = Broken;
        let data = b"abcdef".to_vec();
        let mut reader = CopyingReader::new(&data[..], &mut broken);
        let mut two = [0u8; 2];
        reader.read_exact(&mut two).unwrap();
        let error = reader.read_exact(&mut two).unwrap_err();
        assert_eq!(error.to_string(), "store down");
    }
}
