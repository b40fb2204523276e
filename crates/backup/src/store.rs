//! The object store a backup lives in, from a URL: `s3://bucket/prefix` (AWS or any
//! S3-compatible server) or `file:///path`. Blocking methods over the `object_store` crate's
//! asynchronous client, which runs on a small runtime owned here.
//!
//! S3 settings come from the environment as the AWS tools read them (`AWS_ACCESS_KEY_ID`,
//! `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_REGION`, `AWS_ENDPOINT_URL`, web identity
//! on Kubernetes, …), or credentials from a file named by `CINNABAR_S3_CREDENTIALS_FILE` (the
//! AWS shared-credentials format, `aws_access_key_id = …` lines; a mounted Secret). A custom
//! endpoint is addressed path-style (what S3-compatible servers expect), over plain HTTP only
//! when its URL says `http://`. Credentials are never printed: errors name the URL, the
//! bucket and the endpoint only.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{
    BackoffConfig, ObjectMeta, ObjectStore, ObjectStoreExt, PutPayload, RetryConfig, WriteMultipart,
};

use crate::error::BackupError;
use crate::transfer::{ObjectReader, ObjectWriter};

/// Environment variable naming a credentials file.
pub const CREDENTIALS_FILE_ENV: &str = "CINNABAR_S3_CREDENTIALS_FILE";

/// S3 settings given by the caller instead of the environment (tests, the operator).
#[derive(Clone, Default)]
pub struct S3Access {
    /// `http(s)://host:port` of an S3-compatible server; AWS when `None`.
    pub endpoint: Option<String>,
    /// The region (default `us-east-1`).
    pub region: Option<String>,
    /// Access key id.
    pub access_key_id: String,
    /// Secret access key.
    pub secret_access_key: String,
}

impl fmt::Debug for S3Access {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Access")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .finish_non_exhaustive()
    }
}

/// How hard to try before an operation fails, and where S3 settings come from.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Retries of one request after a server error or a dropped connection.
    pub max_retries: usize,
    /// No retry starts later than this after the first attempt.
    pub retry_timeout: Duration,
    /// Size of one multipart part (S3 needs at least 5 MiB, except the last).
    pub part_size: usize,
    /// S3 settings; `None`: from the environment (see the module docs).
    pub s3: Option<S3Access>,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            max_retries: 5,
            retry_timeout: Duration::from_secs(60),
            part_size: 8 * 1024 * 1024,
            s3: None,
        }
    }
}

/// An object store and the prefix every object of ours lives under.
pub struct Store {
    url: String,
    inner: Arc<dyn ObjectStore>,
    prefix: Path,
    runtime: tokio::runtime::Runtime,
    options: StoreOptions,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Opens the store `url` names and checks it can be listed (the bucket exists, the
    /// credentials are accepted, the endpoint answers).
    ///
    /// # Errors
    /// [`BackupError::Url`] for a URL of another kind, [`BackupError::Store`] naming what the
    /// store said.
    pub fn open(url: &str, options: StoreOptions) -> Result<Self, BackupError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("cinnabar-store")
            .enable_all()
            .build()
            .map_err(|e| BackupError::Url(format!("cannot start the store's runtime: {e}")))?;
        let (inner, prefix): (Arc<dyn ObjectStore>, Path) =
            if let Some(path) = url.strip_prefix("file://") {
                (Arc::new(open_local(url, path)?), Path::default())
            } else if let Some(rest) = url.strip_prefix("s3://") {
                let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
                if bucket.is_empty() {
                    return Err(BackupError::Url(format!(
                        "{url}: no bucket (use s3://BUCKET/PREFIX)"
                    )));
                }
                let prefix = Path::parse(prefix.trim_matches('/'))
                    .map_err(|e| BackupError::Url(format!("{url}: bad prefix: {e}")))?;
                (Arc::new(open_s3(url, bucket, &options)?), prefix)
            } else {
                return Err(BackupError::Url(format!(
                    "{url}: use s3://BUCKET/PREFIX or file:///PATH"
                )));
            };
        let store = Self {
            url: url.to_owned(),
            inner,
            prefix,
            runtime,
            options,
        };
        store.check()?;
        Ok(store)
    }

    /// The URL it was opened with.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// `relative` under the prefix.
    pub(crate) fn path(&self, relative: &str) -> Path {
        relative
            .split('/')
            .filter(|part| !part.is_empty())
            .fold(self.prefix.clone(), |path, part| path.join(part))
    }

    /// `path` relative to the prefix, as shown to people.
    pub(crate) fn relative(&self, path: &Path) -> String {
        path.prefix_match(&self.prefix)
            .map(|parts| {
                parts
                    .map(|p| p.as_ref().to_owned())
                    .collect::<Vec<_>>()
                    .join("/")
            })
            .unwrap_or_else(|| path.to_string())
    }

    fn error(&self, doing: &str, error: &object_store::Error) -> BackupError {
        BackupError::Store {
            url: self.url.clone(),
            message: describe(doing, error),
        }
    }

    fn check(&self) -> Result<(), BackupError> {
        let prefix = self.prefix.clone();
        self.runtime
            .block_on(self.inner.list_with_delimiter(Some(&prefix)))
            .map(|_| ())
            .map_err(|e| self.error("listing", &e))
    }

    /// Writes a whole small object.
    ///
    /// # Errors
    /// [`BackupError::Store`].
    pub(crate) fn put(&self, relative: &str, bytes: Vec<u8>) -> Result<(), BackupError> {
        let path = self.path(relative);
        self.runtime
            .block_on(self.inner.put(&path, PutPayload::from(bytes)))
            .map(|_| ())
            .map_err(|e| self.error(&format!("writing {relative}"), &e))
    }

    /// Reads a whole small object; `None` when there is none.
    ///
    /// # Errors
    /// [`BackupError::Store`].
    pub(crate) fn get(&self, relative: &str) -> Result<Option<Vec<u8>>, BackupError> {
        let path = self.path(relative);
        let read = self.runtime.block_on(async {
            let got = self.inner.get(&path).await?;
            got.bytes().await
        });
        match read {
            Ok(bytes) => Ok(Some(bytes.to_vec())),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.error(&format!("reading {relative}"), &e)),
        }
    }

    /// Deletes an object (no error when it is already gone).
    ///
    /// # Errors
    /// [`BackupError::Store`].
    pub(crate) fn delete(&self, relative: &str) -> Result<(), BackupError> {
        let path = self.path(relative);
        match self.runtime.block_on(self.inner.delete(&path)) {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.error(&format!("deleting {relative}"), &e)),
        }
    }

    /// Every object under `relative` (recursively), paths relative to the prefix, sorted.
    ///
    /// # Errors
    /// [`BackupError::Store`].
    pub(crate) fn list(&self, relative: &str) -> Result<Vec<(String, ObjectMeta)>, BackupError> {
        let path = self.path(relative);
        let listed: Result<Vec<ObjectMeta>, object_store::Error> = self.runtime.block_on(async {
            let mut stream = self.inner.list(Some(&path));
            let mut all = Vec::new();
            while let Some(meta) = stream.next().await {
                all.push(meta?);
            }
            Ok(all)
        });
        let mut objects: Vec<(String, ObjectMeta)> = listed
            .map_err(|e| self.error(&format!("listing {relative}"), &e))?
            .into_iter()
            .map(|meta| (self.relative(&meta.location), meta))
            .collect();
        objects.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(objects)
    }

    /// The folders directly under `relative` (names only), sorted.
    ///
    /// # Errors
    /// [`BackupError::Store`].
    pub(crate) fn folders(&self, relative: &str) -> Result<Vec<String>, BackupError> {
        let path = self.path(relative);
        let listed = self
            .runtime
            .block_on(self.inner.list_with_delimiter(Some(&path)))
            .map_err(|e| self.error(&format!("listing {relative}"), &e))?;
        let mut names: Vec<String> = listed
            .common_prefixes
            .iter()
            .filter_map(|p| p.filename().map(str::to_owned))
            .collect();
        names.sort();
        Ok(names)
    }

    /// Starts a multipart upload of `relative`, written through the returned writer.
    ///
    /// # Errors
    /// [`BackupError::Store`].
    pub(crate) fn writer(&self, relative: &str) -> Result<ObjectWriter<'_>, BackupError> {
        let path = self.path(relative);
        let upload = self
            .runtime
            .block_on(self.inner.put_multipart(&path))
            .map_err(|e| self.error(&format!("starting the upload of {relative}"), &e))?;
        Ok(ObjectWriter::new(
            self,
            relative.to_owned(),
            WriteMultipart::new_with_chunk_size(upload, self.options.part_size),
        ))
    }

    /// Streams `relative` through the returned reader, hashing what it reads.
    ///
    /// # Errors
    /// [`BackupError::NotFound`] or [`BackupError::Store`].
    pub(crate) fn reader(&self, relative: &str) -> Result<ObjectReader<'_>, BackupError> {
        let path = self.path(relative);
        match self.runtime.block_on(self.inner.get(&path)) {
            Ok(got) => Ok(ObjectReader::new(
                self,
                relative.to_owned(),
                got.into_stream(),
            )),
            Err(object_store::Error::NotFound { .. }) => Err(BackupError::NotFound(format!(
                "object {relative} is missing from {}",
                self.url
            ))),
            Err(e) => Err(self.error(&format!("reading {relative}"), &e)),
        }
    }

    pub(crate) fn runtime(&self) -> &tokio::runtime::Runtime {
        &self.runtime
    }

    pub(crate) fn store_error(&self, doing: &str, error: &object_store::Error) -> BackupError {
        self.error(doing, error)
    }
}

/// A person's sentence for an object-store error: which kind of failure, then the store's own
/// words (object_store never includes credentials in them).
fn describe(doing: &str, error: &object_store::Error) -> String {
    let text = error.to_string();
    let hint = match error {
        object_store::Error::Unauthenticated { .. }
        | object_store::Error::PermissionDenied { .. } => Some(
            "the store refused the credentials (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or CINNABAR_S3_CREDENTIALS_FILE)",
        ),
        _ if text.contains("NoSuchBucket") => Some("the bucket does not exist"),
        _ if text.contains("InvalidBucketName") => {
            Some("the bucket name is invalid (3 to 63 lowercase letters, digits, '.' and '-')")
        }
        _ if text.contains("InvalidAccessKeyId")
            || text.contains("SignatureDoesNotMatch")
            || text.contains("AccessDenied") =>
        {
            Some(
                "the store refused the credentials (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or CINNABAR_S3_CREDENTIALS_FILE)",
            )
        }
        _ if text.contains("error sending request")
            || text.contains("Connection refused")
            || text.contains("dns error") =>
        {
            Some("the store is unreachable")
        }
        _ => None,
    };
    match hint {
        Some(hint) => format!("{doing}: {hint}: {text}"),
        None => format!("{doing}: {text}"),
    }
}

fn open_local(url: &str, path: &str) -> Result<LocalFileSystem, BackupError> {
    if !path.starts_with('/') {
        return Err(BackupError::Url(format!(
            "{url}: a file URL needs an absolute path (file:///var/backups/redis)"
        )));
    }
    std::fs::create_dir_all(path)
        .map_err(|e| BackupError::Url(format!("{url}: cannot create {path}: {e}")))?;
    LocalFileSystem::new_with_prefix(path).map_err(|e| BackupError::Url(format!("{url}: {e}")))
}

fn open_s3(
    url: &str,
    bucket: &str,
    options: &StoreOptions,
) -> Result<object_store::aws::AmazonS3, BackupError> {
    let base = match &options.s3 {
        Some(_) => AmazonS3Builder::new(),
        None => AmazonS3Builder::from_env(),
    };
    let mut builder = base.with_bucket_name(bucket).with_retry(RetryConfig {
        backoff: BackoffConfig {
            init_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            base: 2.0,
        },
        max_retries: options.max_retries,
        retry_timeout: options.retry_timeout,
    });
    if let Some(access) = &options.s3 {
        builder = builder
            .with_region(
                access
                    .region
                    .clone()
                    .unwrap_or_else(|| "us-east-1".to_owned()),
            )
            .with_access_key_id(access.access_key_id.clone())
            .with_secret_access_key(access.secret_access_key.clone());
        if let Some(endpoint) = &access.endpoint {
            builder = builder
                .with_allow_http(endpoint.starts_with("http://"))
                .with_endpoint(endpoint.clone());
        }
        return builder
            .build()
            .map_err(|e| BackupError::Url(format!("{url}: {e}")));
    }
    if std::env::var_os("AWS_REGION").is_none() && std::env::var_os("AWS_DEFAULT_REGION").is_none()
    {
        builder = builder.with_region("us-east-1");
    }
    let endpoint = std::env::var("AWS_ENDPOINT_URL_S3")
        .or_else(|_| std::env::var("AWS_ENDPOINT_URL"))
        .or_else(|_| std::env::var("AWS_ENDPOINT"))
        .ok();
    if let Some(endpoint) = endpoint {
        builder = builder
            .with_allow_http(endpoint.starts_with("http://"))
            .with_endpoint(endpoint);
    }
    if let Some(file) = std::env::var_os(CREDENTIALS_FILE_ENV) {
        let text = std::fs::read_to_string(&file).map_err(|e| {
            BackupError::Url(format!(
                "{CREDENTIALS_FILE_ENV}={}: {e}",
                std::path::Path::new(&file).display()
            ))
        })?;
        let credentials = parse_credentials(&text).ok_or_else(|| {
            BackupError::Url(format!(
                "{CREDENTIALS_FILE_ENV}={}: no aws_access_key_id and aws_secret_access_key lines",
                std::path::Path::new(&file).display()
            ))
        })?;
        builder = builder
            .with_access_key_id(credentials.0)
            .with_secret_access_key(credentials.1);
        if let Some(token) = credentials.2 {
            builder = builder.with_token(token);
        }
    }
    builder
        .build()
        .map_err(|e| BackupError::Url(format!("{url}: {e}")))
}

/// `(key id, secret, session token)` from the AWS shared-credentials format: `key = value`
/// lines, the `[default]` section (or lines before any section).
fn parse_credentials(text: &str) -> Option<(String, String, Option<String>)> {
    let mut section_ok = true;
    let (mut id, mut secret, mut token) = (None, None, None);
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(section) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section_ok = section.trim() == "default";
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        if !section_ok {
            continue;
        }
        let value = value.trim().to_owned();
        match key.trim().to_ascii_lowercase().as_str() {
            "aws_access_key_id" => id = Some(value),
            "aws_secret_access_key" => secret = Some(value),
            "aws_session_token" => token = Some(value),
            _ => {}
        }
    }
    Some((id?, secret?, token))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_files_are_read_like_the_aws_tools() {
        let text = "[other]\naws_access_key_id = no\n[default]\n# comment\naws_access_key_id = AKID\naws_secret_access_key=s3cret\n";
        assert_eq!(
            parse_credentials(text),
            Some(("AKID".into(), "s3cret".into(), None))
        );
        assert_eq!(parse_credentials("aws_access_key_id = x\n"), None);
    }

    #[test]
    fn urls_of_other_kinds_are_refused() {
        for url in ["http://x/y", "s3:///prefix", "file://relative/path"] {
            let error = Store::open(url, StoreOptions::default()).unwrap_err();
            assert!(matches!(error, BackupError::Url(_)), "{url}: {error}");
        }
    }

    #[test]
    fn a_file_store_keeps_objects_under_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("file://{}", dir.path().display());
        let store = Store::open(&url, StoreOptions::default()).unwrap();
        store
            .put("backups/a/manifest.json", b"{}".to_vec())
            .unwrap();
        assert!(dir.path().join("backups/a/manifest.json").exists());
        assert_eq!(
            store.get("backups/a/manifest.json").unwrap().unwrap(),
            b"{}"
        );
        assert_eq!(store.get("backups/b/manifest.json").unwrap(), None);
        assert_eq!(store.folders("backups").unwrap(), vec!["a".to_owned()]);
        store.delete("backups/a/manifest.json").unwrap();
        store.delete("backups/a/manifest.json").unwrap();
        assert!(store.list("backups").unwrap().is_empty());
    }
}
