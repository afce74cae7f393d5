//! Where vault objects live. Two stores, one contract: a local directory and S3 (through
//! `object_store`). Both pass the same test suite (tests/vault_store.rs).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::TryStreamExt;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

use crate::error::{Error, Result};

/// A flat namespace of immutable objects.
///
/// Contract:
/// - `put` is atomic and durable when it returns: a reader sees the whole object or none,
///   and a crash after `put` returned does not lose it. Putting the same name twice with the
///   same bytes is harmless (idempotent); names are content-addressed, so different bytes
///   under one name do not happen.
/// - `get` of a missing object returns `Ok(None)`; any other failure is an error, marked
///   transient when retrying may help.
/// - `get_range` returns the bytes of `range`, fewer when the object ends first (none when
///   it starts at or after the end); a missing object is `Ok(None)`.
/// - `list_sized` returns every name under the prefix (`/`-separated, no leading `/`),
///   sorted, with the object's size in bytes as the listing tells it (no object is read);
///   `list` the names alone.
/// - `delete` of a missing object succeeds.
#[async_trait]
pub trait Store: Send + Sync + std::fmt::Debug {
    async fn put(&self, name: &str, bytes: Bytes) -> Result<()>;
    async fn get(&self, name: &str) -> Result<Option<Bytes>>;
    async fn get_range(&self, name: &str, range: std::ops::Range<u64>) -> Result<Option<Bytes>>;
    async fn list_sized(&self, prefix: &str) -> Result<Vec<(String, u64)>>;
    async fn list(&self, prefix: &str) -> Result<Vec<String>> {
        Ok(self
            .list_sized(prefix)
            .await?
            .into_iter()
            .map(|(name, _)| name)
            .collect())
    }
    async fn delete(&self, name: &str) -> Result<()>;
    /// A description for messages: the URL it was opened from.
    fn describe(&self) -> String;
}

/// A directory on a local file system.
#[derive(Debug)]
pub struct LocalStore {
    root: PathBuf,
}

impl LocalStore {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        LocalStore { root: root.into() }
    }

    fn path(&self, name: &str) -> Result<PathBuf> {
        if name.is_empty()
            || name.starts_with('/')
            || name
                .split('/')
                .any(|p| p.is_empty() || p == "." || p == "..")
        {
            return Err(Error::vault(format!("invalid object name {name:?}")));
        }
        Ok(self.root.join(name))
    }
}

fn io_error(what: &str, path: &Path, e: std::io::Error) -> Error {
    // A full disk or a network file system that stopped answering may recover.
    let transient = io_error_is_transient(&e) || e.kind() == std::io::ErrorKind::StorageFull;
    let error = Error::vault(format!("{what} {}: {e}", path.display()));
    if transient {
        error.transient()
    } else {
        error
    }
}

#[async_trait]
impl Store for LocalStore {
    async fn put(&self, name: &str, bytes: Bytes) -> Result<()> {
        let path = self.path(name)?;
        tokio::task::spawn_blocking(move || write_atomically(&path, &bytes))
            .await
            .map_err(|e| Error::vault(format!("vault write task failed: {e}")))?
    }

    async fn get(&self, name: &str) -> Result<Option<Bytes>> {
        let path = self.path(name)?;
        match tokio::fs::read(&path).await {
            Ok(bytes) => Ok(Some(Bytes::from(bytes))),
            // A directory of other objects is no object by that name (as on S3).
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::IsADirectory
                ) =>
            {
                Ok(None)
            }
            Err(e) => Err(io_error("cannot read", &path, e)),
        }
    }

    async fn get_range(&self, name: &str, range: std::ops::Range<u64>) -> Result<Option<Bytes>> {
        use std::io::{Read, Seek, SeekFrom};
        let path = self.path(name)?;
        tokio::task::spawn_blocking(move || {
            let mut file = match std::fs::File::open(&path) {
                Ok(file) => file,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::NotFound | std::io::ErrorKind::IsADirectory
                    ) =>
                {
                    return Ok(None)
                }
                Err(e) => return Err(io_error("cannot read", &path, e)),
            };
            let mut bytes = Vec::new();
            file.seek(SeekFrom::Start(range.start))
                .and_then(|_| {
                    file.take(range.end.saturating_sub(range.start))
                        .read_to_end(&mut bytes)
                })
                .map_err(|e| io_error("cannot read", &path, e))?;
            Ok(Some(Bytes::from(bytes)))
        })
        .await
        .map_err(|e| Error::vault(format!("vault read task failed: {e}")))?
    }

    async fn list_sized(&self, prefix: &str) -> Result<Vec<(String, u64)>> {
        let root = self.root.clone();
        let prefix = prefix.to_string();
        tokio::task::spawn_blocking(move || {
            let mut names = Vec::new();
            let start = match prefix.rfind('/') {
                Some(i) => root.join(&prefix[..i]),
                None => root.clone(),
            };
            walk(&root, &start, &prefix, &mut names)?;
            names.sort();
            Ok(names)
        })
        .await
        .map_err(|e| Error::vault(format!("vault list task failed: {e}")))?
    }

    async fn delete(&self, name: &str) -> Result<()> {
        let path = self.path(name)?;
        match tokio::fs::remove_file(&path).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_error("cannot delete", &path, e)),
        }
    }

    fn describe(&self) -> String {
        format!("file://{}", self.root.display())
    }
}

fn walk(root: &Path, dir: &Path, prefix: &str, names: &mut Vec<(String, u64)>) -> Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_error("cannot list", dir, e)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| io_error("cannot list", dir, e))?;
        let path = entry.path();
        let file_type = entry
            .file_type()
            .map_err(|e| io_error("cannot stat", &path, e))?;
        if file_type.is_dir() {
            walk(root, &path, prefix, names)?;
        } else if file_type.is_file() {
            let Ok(relative) = path.strip_prefix(root) else {
                continue;
            };
            let name = relative.to_string_lossy().replace('\\', "/");
            // Temporary files of interrupted writes are not objects.
            if name.starts_with(prefix) && !name.ends_with(".tmp") {
                let size = entry
                    .metadata()
                    .map_err(|e| io_error("cannot stat", &path, e))?
                    .len();
                names.push((name, size));
            }
        }
    }
    Ok(())
}

/// Temporary file, fsync, rename into place, fsync the directory.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let dir = path
        .parent()
        .ok_or_else(|| Error::vault(format!("no parent directory for {}", path.display())))?;
    std::fs::create_dir_all(dir).map_err(|e| io_error("cannot create", dir, e))?;
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temp = dir.join(format!(".{file_name}.{}.tmp", std::process::id()));
    let mut file = std::fs::File::create(&temp).map_err(|e| io_error("cannot create", &temp, e))?;
    file.write_all(bytes)
        .map_err(|e| io_error("cannot write", &temp, e))?;
    file.sync_all()
        .map_err(|e| io_error("cannot fsync", &temp, e))?;
    drop(file);
    std::fs::rename(&temp, path).map_err(|e| io_error("cannot rename into", path, e))?;
    let dir_handle = std::fs::File::open(dir).map_err(|e| io_error("cannot open", dir, e))?;
    dir_handle
        .sync_all()
        .map_err(|e| io_error("cannot fsync", dir, e))?;
    Ok(())
}

/// How hard the S3 client retries a failed request by itself before the caller sees the
/// error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum S3Retries {
    /// `object_store`'s own policy (up to 10 retries within 3 minutes): for commands that
    /// run once and have no retry of their own.
    Client,
    /// A few quick retries within about 2 seconds, so that a blip is absorbed and an outage
    /// reaches the caller as a transient error soon: for capture, which retries with its
    /// own backoff and reports the episode.
    Brief,
}

/// An S3 bucket and prefix, through `object_store`.
#[derive(Debug)]
pub struct S3Store {
    inner: Arc<dyn ObjectStore>,
    prefix: String,
    url: String,
}

impl S3Store {
    pub fn new(
        bucket: &str,
        prefix: &str,
        endpoint: Option<&str>,
        region: Option<&str>,
    ) -> Result<Self> {
        Self::with_retries(bucket, prefix, endpoint, region, S3Retries::Client)
    }

    pub fn with_retries(
        bucket: &str,
        prefix: &str,
        endpoint: Option<&str>,
        region: Option<&str>,
        retries: S3Retries,
    ) -> Result<Self> {
        let mut builder = object_store::aws::AmazonS3Builder::from_env().with_bucket_name(bucket);
        if retries == S3Retries::Brief {
            builder = builder.with_retry(object_store::RetryConfig {
                backoff: object_store::BackoffConfig {
                    init_backoff: std::time::Duration::from_millis(100),
                    max_backoff: std::time::Duration::from_millis(800),
                    base: 2.0,
                },
                max_retries: 3,
                retry_timeout: std::time::Duration::from_secs(2),
            });
        }
        if let Some(endpoint) = endpoint {
            builder = builder
                .with_endpoint(endpoint)
                .with_allow_http(endpoint.starts_with("http://"));
        }
        if let Some(region) = region {
            builder = builder.with_region(region);
        }
        let inner = builder
            .build()
            .map_err(|e| Error::vault(format!("cannot open s3://{bucket}/{prefix}: {e}")))?;
        Ok(S3Store {
            inner: Arc::new(inner),
            prefix: prefix.trim_matches('/').to_string(),
            url: format!("s3://{bucket}/{prefix}"),
        })
    }

    fn full(&self, name: &str) -> object_store::path::Path {
        if self.prefix.is_empty() {
            object_store::path::Path::from(name)
        } else {
            object_store::path::Path::from(format!("{}/{name}", self.prefix))
        }
    }

    fn error(&self, what: &str, name: &str, e: object_store::Error) -> Error {
        let transient = s3_error_is_transient(&e);
        let hint = match &e {
            object_store::Error::PermissionDenied { .. }
            | object_store::Error::Unauthenticated { .. } => {
                " (check the S3 credentials and the bucket's policy)"
            }
            _ => "",
        };
        let error = Error::vault(format!("{what} {name} in {}: {e}{hint}", self.url));
        if transient {
            error.transient()
        } else {
            error
        }
    }

    /// An object's bytes (or those `options` name), or `None` when there is no such object.
    async fn fetch(&self, name: &str, options: object_store::GetOptions) -> Result<Option<Bytes>> {
        match self.inner.get_opts(&self.full(name), options).await {
            Ok(result) => Ok(Some(
                result
                    .bytes()
                    .await
                    .map_err(|e| self.error("cannot read", name, e))?,
            )),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.error("cannot read", name, e)),
        }
    }
}

#[async_trait]
impl Store for S3Store {
    async fn put(&self, name: &str, bytes: Bytes) -> Result<()> {
        self.inner
            .put(&self.full(name), PutPayload::from_bytes(bytes))
            .await
            .map_err(|e| self.error("cannot write", name, e))?;
        Ok(())
    }

    async fn get(&self, name: &str) -> Result<Option<Bytes>> {
        self.fetch(name, object_store::GetOptions::default()).await
    }

    async fn get_range(&self, name: &str, range: std::ops::Range<u64>) -> Result<Option<Bytes>> {
        if range.is_empty() {
            return Ok(Some(Bytes::new()));
        }
        self.fetch(
            name,
            object_store::GetOptions::default().with_range(Some(range)),
        )
        .await
    }

    async fn list_sized(&self, prefix: &str) -> Result<Vec<(String, u64)>> {
        // object_store lists whole path segments: list the prefix's directory, then filter.
        let dir = match prefix.rfind('/') {
            Some(i) => &prefix[..i],
            None => "",
        };
        let listing_root = if dir.is_empty() {
            if self.prefix.is_empty() {
                None
            } else {
                Some(object_store::path::Path::from(self.prefix.as_str()))
            }
        } else {
            Some(self.full(dir))
        };
        let metas: Vec<object_store::ObjectMeta> = self
            .inner
            .list(listing_root.as_ref())
            .try_collect()
            .await
            .map_err(|e| self.error("cannot list", prefix, e))?;
        let strip = if self.prefix.is_empty() {
            String::new()
        } else {
            format!("{}/", self.prefix)
        };
        let mut names: Vec<(String, u64)> = metas
            .into_iter()
            .filter_map(|m| {
                let name = m.location.as_ref().strip_prefix(&strip)?.to_string();
                Some((name, m.size))
            })
            .filter(|(n, _)| n.starts_with(prefix))
            .collect();
        names.sort();
        Ok(names)
    }

    async fn delete(&self, name: &str) -> Result<()> {
        match self.inner.delete(&self.full(name)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.error("cannot delete", name, e)),
        }
    }

    fn describe(&self) -> String {
        self.url.clone()
    }
}

/// Whether an S3 failure may go away by itself: the server or the network failed (5xx,
/// 429 and 408 answers, refused, reset or timed-out connections, a body cut short). An
/// answer that refuses the request (403, 401, 404 on a write, any other 4xx, a redirect to
/// another region) fails the same way when retried.
pub fn s3_error_is_transient(e: &object_store::Error) -> bool {
    use object_store::Error as E;
    match e {
        E::Generic { source, .. } => {
            let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(source.as_ref());
            while let Some(current) = cause {
                // A transport failure: the request got no answer.
                if current
                    .downcast_ref::<object_store::client::HttpError>()
                    .is_some()
                {
                    return true;
                }
                if let Some(io) = current.downcast_ref::<std::io::Error>() {
                    return io_error_is_transient(io);
                }
                cause = current.source();
            }
            let text = source.to_string();
            // A 200 whose body is an S3 error (InternalError, SlowDown): retried as a 5xx.
            if text.contains("Server returned error response") {
                return true;
            }
            match http_status_in(&text) {
                Some(status) => status >= 500 || status == 429 || status == 408,
                None => false,
            }
        }
        _ => false,
    }
}

/// The HTTP status that `object_store` names in a failed request's message.
fn http_status_in(text: &str) -> Option<u16> {
    let at = text.find("status code: ")? + "status code: ".len();
    text.get(at..at + 3)?.parse().ok()
}

/// Network failures that a later attempt may not meet.
pub fn io_error_is_transient(e: &std::io::Error) -> bool {
    use std::io::ErrorKind as K;
    matches!(
        e.kind(),
        K::ConnectionRefused
            | K::ConnectionReset
            | K::ConnectionAborted
            | K::NotConnected
            | K::BrokenPipe
            | K::TimedOut
            | K::UnexpectedEof
            | K::Interrupted
            | K::WouldBlock
            | K::HostUnreachable
            | K::NetworkUnreachable
            | K::NetworkDown
            | K::ResourceBusy
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Text(&'static str);
    impl std::fmt::Display for Text {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }
    impl std::error::Error for Text {}

    fn generic(text: &'static str) -> object_store::Error {
        object_store::Error::Generic {
            store: "S3",
            source: Box::new(Text(text)),
        }
    }

    #[test]
    fn s3_server_failures_are_transient_and_refusals_permanent() {
        let status = |code: &str| -> object_store::Error {
            let text: &'static str = Box::leak(
                format!(
                    "Error performing PUT http://127.0.0.1/b/o in 3ms - Server returned \
                     non-2xx status code: {code}: body"
                )
                .into_boxed_str(),
            );
            generic(text)
        };
        for code in [
            "500 Internal Server Error",
            "503 Service Unavailable",
            "429 Too Many Requests",
            "408 Request Timeout",
        ] {
            assert!(s3_error_is_transient(&status(code)), "{code}");
        }
        for code in ["400 Bad Request", "409 Conflict", "301 Moved Permanently"] {
            assert!(!s3_error_is_transient(&status(code)), "{code}");
        }
        assert!(s3_error_is_transient(&generic(
            "Error performing PUT http://x in 1ms - Server returned error response: <Error><Code>SlowDown</Code></Error>"
        )));
        assert!(!s3_error_is_transient(&generic(
            "Error performing GET http://x in 1ms - Received redirect without LOCATION, this normally indicates an incorrectly configured region"
        )));
        // A transport failure anywhere in the chain: no answer at all.
        let transport = object_store::Error::Generic {
            store: "S3",
            source: Box::new(object_store::client::HttpError::new(
                object_store::client::HttpErrorKind::Connect,
                std::io::Error::from(std::io::ErrorKind::ConnectionRefused),
            )),
        };
        assert!(s3_error_is_transient(&transport));
        let denied = object_store::Error::PermissionDenied {
            path: "p".into(),
            source: Box::new(Text("403 AccessDenied")),
        };
        assert!(!s3_error_is_transient(&denied));
        let unauthenticated = object_store::Error::Unauthenticated {
            path: "p".into(),
            source: Box::new(Text("401")),
        };
        assert!(!s3_error_is_transient(&unauthenticated));
        let missing = object_store::Error::NotFound {
            path: "p".into(),
            source: Box::new(Text("NoSuchBucket")),
        };
        assert!(!s3_error_is_transient(&missing));
    }

    #[test]
    fn network_io_errors_are_transient_and_others_not() {
        use std::io::{Error as IoError, ErrorKind as K};
        for kind in [
            K::ConnectionRefused,
            K::ConnectionReset,
            K::TimedOut,
            K::BrokenPipe,
            K::UnexpectedEof,
        ] {
            assert!(io_error_is_transient(&IoError::from(kind)), "{kind:?}");
        }
        for kind in [
            K::PermissionDenied,
            K::NotFound,
            K::InvalidData,
            K::StorageFull,
        ] {
            assert!(!io_error_is_transient(&IoError::from(kind)), "{kind:?}");
        }
    }
}
