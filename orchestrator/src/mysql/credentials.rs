//! The MySQL passwords the peer logs in with: fixed (from the config) or read from a
//! Secrets Manager secret (`[mysql] credentials_secret`, the JSON the provisioner
//! writes: `orchestrator`, `replication`, `write_check`, ...) and read again when a
//! server refuses a login, so a rotated password is picked up without a restart.
//! Nothing here formats a password: the `Debug` output is redacted.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

/// The passwords of the peer's accounts.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Passwords {
    /// The orchestrator's own account (`[mysql] user`).
    pub orchestrator: String,
    /// The account replicas connect to their master with.
    pub replication: String,
    /// The application account of the write check.
    pub write_check: String,
    /// The account backups (and a donor's copy) run as (`[donor] backup_user`).
    pub backup: String,
    /// The account a restore replays binary logs as (`[backup] restore_user`).
    pub root: String,
}

impl std::fmt::Debug for Passwords {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Passwords(<redacted>)")
    }
}

impl Passwords {
    /// Every password, for scrubbing them out of messages.
    pub fn all(&self) -> [&str; 5] {
        [&self.orchestrator, &self.replication, &self.write_check, &self.backup, &self.root]
    }
}

/// Reads the secret's text (the edge: Secrets Manager in production).
pub type SecretReader =
    Box<dyn Fn() -> Pin<Box<dyn Future<Output = Result<String, String>> + Send>> + Send + Sync>;

/// Why the secret could not be used, in one line that never holds a value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialsError {
    #[error("reading MySQL credentials from secret {secret}: {message}")]
    Read { secret: String, message: String },
    #[error("secret {secret} is not a JSON object of passwords")]
    NotJson { secret: String },
    #[error("secret {secret} has no `{key}` password")]
    Missing { secret: String, key: &'static str },
}

/// Parses the credentials secret. `orchestrator` is required; `replication`,
/// `write_check` and `backup` default to empty (accounts not configured).
pub fn parse_secret(secret: &str, json: &str) -> Result<Passwords, CredentialsError> {
    let value: serde_json::Value =
        serde_json::from_str(json).map_err(|_| CredentialsError::NotJson { secret: secret.into() })?;
    let map = value.as_object().ok_or_else(|| CredentialsError::NotJson { secret: secret.into() })?;
    let text = |k: &str| map.get(k).and_then(|v| v.as_str()).map(str::to_string);
    Ok(Passwords {
        orchestrator: text("orchestrator")
            .ok_or(CredentialsError::Missing { secret: secret.into(), key: "orchestrator" })?,
        replication: text("replication").unwrap_or_default(),
        write_check: text("write_check").unwrap_or_default(),
        backup: text("backup").unwrap_or_default(),
        root: text("root").unwrap_or_default(),
    })
}

/// A refused login reads the secret again at most this often.
pub const MIN_REFRESH_INTERVAL: Duration = Duration::from_secs(5);

struct Source {
    secret: String,
    read: SecretReader,
    min_interval: Duration,
    last_read: tokio::sync::Mutex<Instant>,
}

/// The current passwords, shared by the prober and the admin.
pub struct Credentials {
    current: RwLock<Arc<Passwords>>,
    source: Option<Source>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials").field("secret", &self.source.as_ref().map(|s| &s.secret)).finish()
    }
}

impl Credentials {
    /// Passwords that never change (from the config).
    pub fn fixed(passwords: Passwords) -> Arc<Credentials> {
        Arc::new(Credentials { current: RwLock::new(Arc::new(passwords)), source: None })
    }

    /// Reads `secret` now (a failure stops the start) and keeps `read` for refreshes,
    /// at most one per `min_interval` ([`MIN_REFRESH_INTERVAL`] in production).
    pub async fn from_secret(
        secret: &str,
        read: SecretReader,
        min_interval: Duration,
    ) -> Result<Arc<Credentials>, CredentialsError> {
        let json =
            read().await.map_err(|message| CredentialsError::Read { secret: secret.into(), message })?;
        let passwords = parse_secret(secret, &json)?;
        Ok(Arc::new(Credentials {
            current: RwLock::new(Arc::new(passwords)),
            source: Some(Source {
                secret: secret.to_string(),
                read,
                min_interval,
                last_read: tokio::sync::Mutex::new(Instant::now()),
            }),
        }))
    }

    pub fn current(&self) -> Arc<Passwords> {
        self.current.read().expect("credentials lock").clone()
    }

    /// After a server refused a login: reads the secret again (at most every
    /// [`MIN_REFRESH_INTERVAL`]; concurrent callers wait for one read) and returns
    /// whether the passwords changed, so the caller retries once.
    pub async fn refresh_after_refusal(&self, refused: &Passwords) -> bool {
        let Some(source) = &self.source else { return false };
        let mut last = source.last_read.lock().await;
        if *self.current() != *refused {
            // Another caller already picked up new passwords.
            return true;
        }
        if last.elapsed() < source.min_interval {
            return false;
        }
        *last = Instant::now();
        let fresh = match (source.read)().await {
            Ok(json) => parse_secret(&source.secret, &json),
            Err(message) => Err(CredentialsError::Read { secret: source.secret.clone(), message }),
        };
        match fresh {
            Ok(p) if p != *refused => {
                tracing::info!(secret = %source.secret, "MySQL credentials changed in the secret; using the new ones");
                *self.current.write().expect("credentials lock") = Arc::new(p);
                true
            }
            Ok(_) => false,
            Err(e) => {
                tracing::warn!("{e}");
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn reader(values: Arc<std::sync::Mutex<String>>, reads: Arc<AtomicUsize>) -> SecretReader {
        Box::new(move || {
            let v = values.lock().unwrap().clone();
            reads.fetch_add(1, Ordering::SeqCst);
            Box::pin(async move { Ok(v) })
        })
    }

    #[test]
    fn parse_requires_the_orchestrator_password_and_never_shows_values() {
        let p = parse_secret("c/mysql-credentials", r#"{"orchestrator":"o1","replication":"r1"}"#).unwrap();
        assert_eq!(
            (p.orchestrator.as_str(), p.replication.as_str(), p.write_check.as_str()),
            ("o1", "r1", "")
        );
        assert!(!format!("{p:?}").contains("o1"));
        let e = parse_secret("c/x", r#"{"root":"r00t"}"#).unwrap_err().to_string();
        assert_eq!(e, "secret c/x has no `orchestrator` password");
        let e = parse_secret("c/x", "not json r00t").unwrap_err().to_string();
        assert!(!e.contains("r00t"), "{e}");
    }

    #[tokio::test]
    async fn a_refusal_rereads_the_secret_at_most_every_interval() {
        let value = Arc::new(std::sync::Mutex::new(r#"{"orchestrator":"old"}"#.to_string()));
        let reads = Arc::new(AtomicUsize::new(0));
        let interval = Duration::from_millis(50);
        let c = Credentials::from_secret("s", reader(value.clone(), reads.clone()), interval).await.unwrap();
        assert_eq!(c.current().orchestrator, "old");
        *value.lock().unwrap() = r#"{"orchestrator":"new"}"#.to_string();
        let refused = (*c.current()).clone();
        // Too soon after the first read: no read.
        assert!(!c.refresh_after_refusal(&refused).await);
        assert_eq!(reads.load(Ordering::SeqCst), 1);
        tokio::time::sleep(interval).await;
        assert!(c.refresh_after_refusal(&refused).await);
        assert_eq!(c.current().orchestrator, "new");
        // A caller holding the old passwords learns they changed without a read.
        assert!(c.refresh_after_refusal(&refused).await);
        assert_eq!(reads.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn fixed_credentials_never_refresh() {
        let c = Credentials::fixed(Passwords { orchestrator: "x".into(), ..Default::default() });
        assert!(!c.refresh_after_refusal(&c.current()).await);
    }
}
