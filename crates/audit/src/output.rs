//! Where the writer thread puts bytes: standard output, a caller's `io::Write`, or a file
//! rotated by size. Used only by the writer thread; nothing here is on a client's path, and
//! nothing here panics on an I/O error: each one is returned for the writer to count.
//!
//! File rotation renames `audit.jsonl.{N-1}` → `.N` … `audit.jsonl` → `.1` and opens a new
//! `audit.jsonl`, deleting the oldest. Before each batch the writer checks that the path still
//! names the open file; if it was moved or deleted by someone else (logrotate without
//! `copytruncate`, an operator), the file is opened again at the path, so external rotation
//! needs no signal. Lines are not fsynced: they reach the kernel within milliseconds, which
//! survives a proxy crash but not a machine crash.

use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::{AuditConfig, AuditError, AuditOutput};

/// Audit lines may name keys: readable by the owner and its group (a log shipper), no one else.
const FILE_MODE: u32 = 0o640;

/// An open destination for lines.
pub(crate) enum Output {
    /// The process's standard output.
    Stdout(io::Stdout),
    /// Lines to a caller-supplied writer ([`crate::Auditor::start_with_writer`]).
    Writer(Box<dyn Write + Send>),
    /// A file rotated by size.
    File(RotatingFile),
}

impl Output {
    /// Opens the output `config` names.
    ///
    /// # Errors
    /// [`AuditError::Open`] if the file cannot be opened for appending.
    pub(crate) fn open(config: &AuditConfig) -> Result<Self, AuditError> {
        match &config.output {
            AuditOutput::Stdout => Ok(Self::Stdout(io::stdout())),
            AuditOutput::File(path) => RotatingFile::open(path, Limits::of(config))
                .map(Self::File)
                .map_err(|source| AuditError::Open {
                    path: path.clone(),
                    source,
                }),
        }
    }

    /// Whether `line` more bytes after `pending` buffered ones would take a file beyond its
    /// size, so the file must be rotated first. Never for a file still empty with nothing
    /// pending: a line larger than the limit gets a file of its own rather than being lost.
    pub(crate) fn must_rotate_before(&self, pending: usize, line: usize) -> bool {
        match self {
            Self::File(file) => {
                let before = file.size.saturating_add(pending as u64);
                before > 0 && before.saturating_add(line as u64) > file.limits.max_bytes
            }
            Self::Stdout(_) | Self::Writer(_) => false,
        }
    }

    /// Rotates a file output; nothing for the others.
    pub(crate) fn rotate(&mut self) -> io::Result<()> {
        match self {
            Self::File(file) => file.rotate(),
            Self::Stdout(_) | Self::Writer(_) => Ok(()),
        }
    }

    /// Makes sure a file output writes to the file its path names now (see the module doc).
    pub(crate) fn follow_path(&mut self) -> io::Result<()> {
        match self {
            Self::File(file) => file.follow_path(),
            Self::Stdout(_) | Self::Writer(_) => Ok(()),
        }
    }

    /// New rotation limits for a file output, applied from its next line.
    pub(crate) fn set_limits(&mut self, limits: Limits) {
        if let Self::File(file) = self {
            file.limits = limits;
        }
    }
}

impl Write for Output {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Self::Stdout(stdout) => stdout.lock().write(buf),
            Self::Writer(writer) => writer.write(buf),
            Self::File(file) => file.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Self::Stdout(stdout) => stdout.lock().flush(),
            Self::Writer(writer) => writer.flush(),
            // Writes go straight to the kernel; there is no user-space buffer to flush.
            Self::File(_) => Ok(()),
        }
    }
}

/// The rotation settings of a file output.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub(crate) max_bytes: u64,
    pub(crate) keep_files: u32,
}

impl Limits {
    pub(crate) fn of(config: &AuditConfig) -> Self {
        Self {
            max_bytes: config.max_file_bytes.get(),
            keep_files: config.keep_files,
        }
    }
}

/// An append-only file that knows its size and which file (device, inode) it has open.
pub(crate) struct RotatingFile {
    path: PathBuf,
    file: File,
    identity: (u64, u64),
    size: u64,
    limits: Limits,
}

impl RotatingFile {
    fn open(path: &Path, limits: Limits) -> io::Result<Self> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(FILE_MODE)
            .open(path)?;
        let meta = file.metadata()?;
        Ok(Self {
            path: path.to_owned(),
            file,
            identity: (meta.dev(), meta.ino()),
            size: meta.len(),
            limits,
        })
    }

    fn reopen(&mut self) -> io::Result<()> {
        *self = Self::open(&self.path, self.limits)?;
        Ok(())
    }

    /// `<path>.<n>`, keeping a non-UTF-8 path intact.
    fn numbered(&self, n: u32) -> PathBuf {
        let mut name = OsString::from(self.path.as_os_str());
        name.push(format!(".{n}"));
        PathBuf::from(name)
    }

    fn rotate(&mut self) -> io::Result<()> {
        let keep = self.limits.keep_files;
        if keep == 0 {
            ignore_missing(fs::remove_file(&self.path))?;
        } else {
            ignore_missing(fs::remove_file(self.numbered(keep)))?;
            for n in (1..keep).rev() {
                ignore_missing(fs::rename(self.numbered(n), self.numbered(n + 1)))?;
            }
            ignore_missing(fs::rename(&self.path, self.numbered(1)))?;
        }
        // If this fails, the old handle (now `.1`) stays in use and `follow_path` retries
        // before the next batch, so no line is lost to a failed open.
        self.reopen()
    }

    fn follow_path(&mut self) -> io::Result<()> {
        match fs::metadata(&self.path) {
            Ok(meta) if (meta.dev(), meta.ino()) == self.identity => {
                // Someone may have truncated it in place (logrotate's copytruncate).
                self.size = meta.len();
                Ok(())
            }
            Ok(_) => self.reopen(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => self.reopen(),
            Err(e) => Err(e),
        }
    }
}

impl Write for RotatingFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf)?;
        self.size += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn ignore_missing(result: io::Result<()>) -> io::Result<()> {
    match result {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}
