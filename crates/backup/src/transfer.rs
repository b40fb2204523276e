//! Blocking byte streams to and from the store: [`ObjectWriter`] is an `io::Write` that
//! uploads in parts as bytes arrive (a few parts in flight, so a slow store slows the source
//! down instead of filling memory), [`ObjectReader`] an `io::BufRead` over a download. Both
//! hash what passes through (SHA-256), so a backup's checksum costs no second read and a
//! restore checks what it applied.

use std::io::{self, BufRead, Read, Write};

use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use object_store::WriteMultipart;
use sha2::{Digest, Sha256};

use crate::error::BackupError;
use crate::store::Store;

/// Parts uploading at once per object.
const PARTS_IN_FLIGHT: usize = 4;

/// Lowercase hex of a digest.
pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::new(), |mut text, b| {
        let _ = write!(text, "{b:02x}");
        text
    })
}

/// Uploads one object. Dropping it unfinished aborts the upload (no object appears).
pub(crate) struct ObjectWriter<'s> {
    store: &'s Store,
    relative: String,
    upload: Option<WriteMultipart>,
    hasher: Sha256,
    bytes: u64,
    unwaited: usize,
    /// The store's error, kept to report it instead of the reader's view of it.
    failure: Option<String>,
}

impl<'s> ObjectWriter<'s> {
    pub(crate) fn new(store: &'s Store, relative: String, upload: WriteMultipart) -> Self {
        Self {
            store,
            relative,
            upload: Some(upload),
            hasher: Sha256::new(),
            bytes: 0,
            unwaited: 0,
            failure: None,
        }
    }

    /// Why the upload failed, if it did.
    pub(crate) fn failure(&self) -> Option<BackupError> {
        self.failure.as_ref().map(|message| BackupError::Store {
            url: self.store.url().to_owned(),
            message: message.clone(),
        })
    }

    /// Completes the upload; returns the object's SHA-256 (hex) and size.
    ///
    /// # Errors
    /// [`BackupError::Store`].
    pub(crate) fn finish(mut self) -> Result<(String, u64), BackupError> {
        if let Some(error) = self.failure() {
            return Err(error);
        }
        let upload = self.upload.take().expect("finish is called once");
        self.store
            .runtime()
            .block_on(upload.finish())
            .map_err(|e| {
                self.store
                    .store_error(&format!("completing {}", self.relative), &e)
            })?;
        Ok((hex(&self.hasher.clone().finalize()), self.bytes))
    }
}

impl Write for ObjectWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if let Some(message) = &self.failure {
            return Err(io::Error::other(message.clone()));
        }
        let Some(upload) = self.upload.as_mut() else {
            return Err(io::Error::other("the upload is finished"));
        };
        {
            // Parts are spawned on the store's runtime as they fill up.
            let _context = self.store.runtime().enter();
            upload.write(buf);
        }
        self.hasher.update(buf);
        self.bytes += buf.len() as u64;
        self.unwaited += buf.len();
        if self.unwaited >= 1024 * 1024 {
            self.unwaited = 0;
            if let Err(e) = self
                .store
                .runtime()
                .block_on(upload.wait_for_capacity(PARTS_IN_FLIGHT))
            {
                let message = format!("uploading {}: {e}", self.relative);
                self.failure = Some(message.clone());
                return Err(io::Error::other(message));
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for ObjectWriter<'_> {
    fn drop(&mut self) {
        if let Some(upload) = self.upload.take() {
            // Best effort: a store that failed may not take the abort either; S3 lifecycle
            // rules clean up incomplete uploads.
            let _ = self.store.runtime().block_on(upload.abort());
        }
    }
}

/// Downloads one object as a `BufRead`, hashing every byte fetched.
pub(crate) struct ObjectReader<'s> {
    store: &'s Store,
    relative: String,
    stream: BoxStream<'static, object_store::Result<Bytes>>,
    chunk: Bytes,
    position: usize,
    hasher: Sha256,
    bytes: u64,
    done: bool,
}

impl<'s> ObjectReader<'s> {
    pub(crate) fn new(
        store: &'s Store,
        relative: String,
        stream: BoxStream<'static, object_store::Result<Bytes>>,
    ) -> Self {
        Self {
            store,
            relative,
            stream,
            chunk: Bytes::new(),
            position: 0,
            hasher: Sha256::new(),
            bytes: 0,
            done: false,
        }
    }

    /// Reads what is left, then checks the whole object against `sha256` and `bytes`.
    ///
    /// # Errors
    /// [`BackupError::Corrupt`] naming the object, or a read failure.
    pub(crate) fn verify(mut self, sha256: &str, bytes: u64) -> Result<(), BackupError> {
        let mut rest = io::sink();
        io::copy(&mut self, &mut rest).map_err(|e| BackupError::Store {
            url: self.store.url().to_owned(),
            message: format!("reading {}: {e}", self.relative),
        })?;
        let actual = hex(&self.hasher.clone().finalize());
        if actual == sha256 && self.bytes == bytes {
            Ok(())
        } else {
            Err(BackupError::Corrupt {
                path: self.relative.clone(),
                expected: sha256.to_owned(),
                expected_bytes: bytes,
                actual,
                actual_bytes: self.bytes,
            })
        }
    }
}

impl Read for ObjectReader<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let available = self.fill_buf()?;
        let n = available.len().min(out.len());
        out[..n].copy_from_slice(&available[..n]);
        self.consume(n);
        Ok(n)
    }
}

impl BufRead for ObjectReader<'_> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        while self.position == self.chunk.len() && !self.done {
            match self.store.runtime().block_on(self.stream.next()) {
                Some(Ok(chunk)) => {
                    self.hasher.update(&chunk);
                    self.bytes += chunk.len() as u64;
                    self.chunk = chunk;
                    self.position = 0;
                }
                Some(Err(e)) => {
                    return Err(io::Error::other(format!("reading {}: {e}", self.relative)));
                }
                None => self.done = true,
            }
        }
        Ok(&self.chunk[self.position..])
    }

    fn consume(&mut self, amount: usize) {
        self.position = (self.position + amount).min(self.chunk.len());
    }
}
