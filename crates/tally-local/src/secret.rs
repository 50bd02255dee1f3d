//! [`LinkSecretStore`] in a file of the data directory: the key that signs
//! report links locally (`tally serve` checks them, `tally summarize` and
//! `tally report-link` sign them; all three read the same file).
//!
//! # Layout
//! ```text
//! <data-dir>/report-link.secret   64 hex characters (32 random bytes) and a newline, mode 0600
//! ```
//! The file is made on first use: written whole to a temp file created with
//! mode 0600 (never readable by others, not even for a moment), fsynced,
//! then hard-linked to its name — `link` fails if the name exists, so two
//! processes starting together keep the first one's secret and both read
//! it. Deleting the file rotates the secret: every link made before stops
//! working (their 403 page says how to get a fresh one).

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use tally_core::ports::{LinkSecretStore, SecretError};
use tally_core::report_link::LinkSecret;

/// The secret file's name in the data directory.
pub const SECRET_FILE: &str = "report-link.secret";

/// The report-link secret in `<dir>/report-link.secret`.
#[derive(Debug, Clone)]
pub struct FileLinkSecret {
    path: PathBuf,
}

impl FileLinkSecret {
    /// The secret of the data directory `dir` (created on first load).
    pub fn in_dir(dir: impl AsRef<Path>) -> Self {
        Self { path: dir.as_ref().join(SECRET_FILE) }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn load_blocking(&self) -> Result<LinkSecret, SecretError> {
        match fs::read_to_string(&self.path) {
            Ok(text) => {
                warn_if_shared(&self.path);
                return LinkSecret::from_text(&text)
                    .map_err(|e| SecretError::Invalid { message: format!("{}: {e}", self.path.display()) });
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(self.unavailable("cannot read", e)),
        }
        let dir = self.path.parent().unwrap_or(Path::new("."));
        fs::create_dir_all(dir).map_err(|e| self.unavailable("cannot create the directory of", e))?;
        // Unique per process and call: concurrent loads never share a temp file.
        static CALLS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tmp = dir.join(format!(".{SECRET_FILE}.{}-{n}.tmp", std::process::id()));
        let written = write_private(&tmp, &format!("{}\n", LinkSecret::generate_text()));
        let linked = written.and_then(|()| fs::hard_link(&tmp, &self.path));
        let _ = fs::remove_file(&tmp);
        match linked {
            // Made here, or by a process that won the race: read what is there.
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(self.unavailable("cannot create", e)),
        }
        if let Ok(dir) = fs::File::open(dir) {
            let _ = dir.sync_all();
        }
        let text = fs::read_to_string(&self.path).map_err(|e| self.unavailable("cannot read", e))?;
        LinkSecret::from_text(&text)
            .map_err(|e| SecretError::Invalid { message: format!("{}: {e}", self.path.display()) })
    }

    fn unavailable(&self, what: &str, e: io::Error) -> SecretError {
        SecretError::Unavailable {
            message: format!(
                "{what} the report link secret {}; check the data directory's permissions (--data-dir)",
                self.path.display()
            ),
            source: Some(Box::new(e)),
        }
    }
}

#[async_trait]
impl LinkSecretStore for FileLinkSecret {
    async fn load(&self) -> Result<LinkSecret, SecretError> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || this.load_blocking()).await.map_err(|e| SecretError::Unavailable {
            message: "the task reading the report link secret failed".into(),
            source: Some(Box::new(e)),
        })?
    }
}

/// Writes `text` to a new file at `path` that only its owner may read.
fn write_private(path: &Path, text: &str) -> io::Result<()> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()
}

/// Logs a warning when others than the owner may read the secret.
fn warn_if_shared(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = fs::metadata(path) {
            if meta.permissions().mode() & 0o077 != 0 {
                tracing::warn!(
                    path = %path.display(),
                    "the report link secret can be read by other users: run chmod 600 on it (anyone who reads it can make report links)"
                );
            }
        }
    }
    #[cfg(not(unix))]
    let _ = path;
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_file_store_passes_the_secret_contract_with_or_without_a_file() {
        let dir = tempfile::tempdir().unwrap();
        // No file yet: the first load makes it.
        tally_core::testing::link_secret_contract(
            &FileLinkSecret::in_dir(dir.path()),
            &FileLinkSecret::in_dir(dir.path()),
        )
        .await;
        // A file already there (a restart): the same secret.
        let before = FileLinkSecret::in_dir(dir.path()).load().await.unwrap();
        tally_core::testing::link_secret_contract(
            &FileLinkSecret::in_dir(dir.path()),
            &FileLinkSecret::in_dir(dir.path()),
        )
        .await;
        assert_eq!(FileLinkSecret::in_dir(dir.path()).load().await.unwrap(), before);
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn the_secret_file_is_made_once_readable_by_its_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let store = FileLinkSecret::in_dir(dir.path().join("new-data-dir"));
        // Many loads at once, as a server and a summarize starting together.
        let loads: Vec<_> = (0..8).map(|_| store.load()).collect();
        let secrets = futures::future::join_all(loads).await;
        assert!(secrets.iter().all(|s| s.as_ref().unwrap() == secrets[0].as_ref().unwrap()));
        let meta = fs::metadata(store.path()).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        let text = fs::read_to_string(store.path()).unwrap();
        assert_eq!(text.len(), 65, "64 hex digits and a newline");
        let names: Vec<_> =
            fs::read_dir(dir.path().join("new-data-dir")).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from(SECRET_FILE)], "no temp file left behind");
    }

    #[tokio::test]
    async fn deleting_the_file_rotates_the_secret_and_a_short_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileLinkSecret::in_dir(dir.path());
        let first = store.load().await.unwrap();
        fs::remove_file(store.path()).unwrap();
        assert_ne!(FileLinkSecret::in_dir(dir.path()).load().await.unwrap(), first);
        fs::write(store.path(), "short\n").unwrap();
        let err = FileLinkSecret::in_dir(dir.path()).load().await.unwrap_err();
        assert!(matches!(err, SecretError::Invalid { .. }), "{err:?}");
        assert!(err.to_string().contains("report-link.secret"), "{err}");
    }
}
