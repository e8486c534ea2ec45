//! Fenced, renewed, expiring locks in the cluster's DynamoDB table: `bootstrap_lock`
//! (a node's bootstrap) and `backup_lock` (one backup at a time). A lock is taken by a
//! conditional write on exactly what was read, renewed every third of its lease while
//! the work runs, and released by setting `expires_at` to 0 (never deleted), so its
//! fencing token only grows. A holder that dies stops renewing and the lock is free
//! once `expires_at` has passed (DynamoDB's TTL deletion lags, so the code checks the
//! time itself).

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_dynamodb::Client;

use super::AwsError;

/// One lock item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// Who holds it (an instance id, a peer).
    pub holder: String,
    /// The fencing token: one more than the previous holder's.
    pub token: u64,
    /// Unix seconds.
    pub started_at: i64,
    /// Unix seconds; free after this.
    pub expires_at: i64,
    /// What the holder is doing, for whoever finds it held (may be empty).
    pub detail: String,
}

/// What a would-be holder may do with the lock as it finds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseAccess {
    /// Free (never taken, released, or expired): take it with this token.
    Take { token: u64 },
    /// Someone else holds it.
    Held { by: String, since: i64, until: i64, detail: String },
}

/// The lock as found at `now` for `me`. A lock of `me` from an earlier run that died
/// is taken again with a new token, so that run's fence is void.
pub fn lease_access(found: Option<&Lease>, me: &str, now: i64) -> LeaseAccess {
    match found {
        None => LeaseAccess::Take { token: 1 },
        Some(l) if l.expires_at <= now || l.holder == me => LeaseAccess::Take { token: l.token + 1 },
        Some(l) => LeaseAccess::Held {
            by: l.holder.clone(),
            since: l.started_at,
            until: l.expires_at,
            detail: l.detail.clone(),
        },
    }
}

pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn s(v: &str) -> AttributeValue {
    AttributeValue::S(v.to_string())
}
fn n(v: i64) -> AttributeValue {
    AttributeValue::N(v.to_string())
}
fn number(item: &HashMap<String, AttributeValue>, key: &str) -> Option<i64> {
    item.get(key).and_then(|v| v.as_n().ok()).and_then(|v| v.parse().ok())
}
fn text(item: &HashMap<String, AttributeValue>, key: &str) -> String {
    item.get(key).and_then(|v| v.as_s().ok()).cloned().unwrap_or_default()
}

/// Whether an SDK error is DynamoDB refusing a condition (somebody else wrote first).
pub fn condition_refused<E: aws_sdk_dynamodb::error::ProvideErrorMetadata>(e: &E) -> bool {
    matches!(e.code(), Some("ConditionalCheckFailedException") | Some("TransactionCanceledException"))
}

/// One lock item of one table.
#[derive(Clone, Debug)]
pub struct LeaseTable {
    pub dynamodb: Client,
    pub table: String,
    /// The item's `pk`.
    pub item: String,
}

impl LeaseTable {
    pub fn new(dynamodb: Client, table: &str, item: &str) -> LeaseTable {
        LeaseTable { dynamodb, table: table.to_string(), item: item.to_string() }
    }

    fn error<E: std::error::Error + 'static>(&self, operation: &'static str, e: E) -> AwsError {
        AwsError::new(operation, format!("{} in {}: {}", self.item, self.table, aws_connect::error_line(&e)))
    }

    pub async fn read(&self) -> Result<Option<Lease>, AwsError> {
        let out = self
            .dynamodb
            .get_item()
            .table_name(&self.table)
            .key("pk", s(&self.item))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| self.error("GetItem", e))?;
        Ok(out.item().map(|item| Lease {
            holder: text(item, "holder"),
            token: number(item, "token").unwrap_or(0).max(0) as u64,
            started_at: number(item, "started_at").unwrap_or(0),
            expires_at: number(item, "expires_at").unwrap_or(0),
            detail: text(item, "detail"),
        }))
    }

    /// Writes `lease` if the item is still as `found` was read. `Ok(false)`: another
    /// holder wrote first.
    pub async fn take(&self, lease: &Lease, found: Option<&Lease>) -> Result<bool, AwsError> {
        let mut put = self
            .dynamodb
            .put_item()
            .table_name(&self.table)
            .item("pk", s(&self.item))
            .item("holder", s(&lease.holder))
            .item("token", n(lease.token as i64))
            .item("started_at", n(lease.started_at))
            .item("expires_at", n(lease.expires_at));
        if !lease.detail.is_empty() {
            put = put.item("detail", s(&lease.detail));
        }
        put = match found {
            None => put.condition_expression("attribute_not_exists(pk)"),
            Some(f) => put
                .condition_expression("#token = :token AND holder = :holder")
                .expression_attribute_names("#token", "token")
                .expression_attribute_values(":token", n(f.token as i64))
                .expression_attribute_values(":holder", s(&f.holder)),
        };
        match put.send().await {
            Ok(_) => Ok(true),
            Err(e) if e.as_service_error().is_some_and(condition_refused) => Ok(false),
            Err(e) => Err(self.error("PutItem", e)),
        }
    }

    /// Reads the lock and takes it if it is free, in one attempt: `Err(Held)` names
    /// who has it.
    pub async fn try_take(
        &self,
        me: &str,
        lease: Duration,
        detail: &str,
    ) -> Result<Result<Lease, LeaseAccess>, AwsError> {
        let found = self.read().await?;
        let now = unix_now();
        match lease_access(found.as_ref(), me, now) {
            LeaseAccess::Take { token } => {
                let taken = Lease {
                    holder: me.to_string(),
                    token,
                    started_at: now,
                    expires_at: now + lease.as_secs().max(1) as i64,
                    detail: detail.to_string(),
                };
                if self.take(&taken, found.as_ref()).await? {
                    Ok(Ok(taken))
                } else {
                    // Somebody took it between the read and the write.
                    Ok(Err(match self.read().await? {
                        Some(l) => LeaseAccess::Held {
                            by: l.holder,
                            since: l.started_at,
                            until: l.expires_at,
                            detail: l.detail,
                        },
                        None => LeaseAccess::Take { token: token + 1 },
                    }))
                }
            }
            held => Ok(Err(held)),
        }
    }

    /// Extends the lock to `expires_at` if `lease` still holds it. `Ok(false)`: it was
    /// lost (expired and taken by another holder).
    pub async fn renew(&self, lease: &Lease, expires_at: i64) -> Result<bool, AwsError> {
        let mut renewed = lease.clone();
        renewed.expires_at = expires_at;
        self.take(&renewed, Some(lease)).await
    }

    /// Frees the lock if `lease` still holds it: the item stays with its token and an
    /// `expires_at` of 0, so the next holder's token is higher.
    pub async fn release(&self, lease: &Lease) -> Result<(), AwsError> {
        let mut freed = lease.clone();
        freed.expires_at = 0;
        self.take(&freed, Some(lease)).await.map(|_| ())
    }
}

/// The lock was taken over while its holder worked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct LeaseLost(pub String);

/// A lock while it is held: renewed in the background every third of the lease;
/// [`HeldLease::check`] fails once a renewal found it lost.
pub struct HeldLease {
    pub lease: Lease,
    lost: tokio::sync::watch::Receiver<Option<String>>,
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<Lease>,
}

impl HeldLease {
    pub fn start(table: LeaseTable, lease: Lease, duration: Duration) -> HeldLease {
        let (lost_tx, lost) = tokio::sync::watch::channel(None);
        let (stop, mut stopped) = tokio::sync::watch::channel(false);
        let held = lease.clone();
        let task = tokio::spawn(async move {
            let mut current = held;
            let every = (duration / 3).max(Duration::from_millis(100));
            let margin_s = (duration.as_secs() / 6).max(1) as i64;
            loop {
                tokio::select! {
                    _ = stopped.changed() => return current,
                    _ = tokio::time::sleep(every) => {}
                }
                let until = unix_now() + duration.as_secs().max(1) as i64;
                match table.renew(&current, until).await {
                    Ok(true) => current.expires_at = until,
                    Ok(false) => {
                        let _ = lost_tx.send(Some(format!(
                            "the {} (token {}) was taken over: its holder stalled past its lease",
                            table.item, current.token
                        )));
                        return current;
                    }
                    // A failed call is retried at the next tick; the lease covers two.
                    // Once it is about to run out unrenewed, another holder may take
                    // it: the work stops here rather than run on unfenced.
                    Err(e) if unix_now() >= current.expires_at - margin_s => {
                        let _ = lost_tx.send(Some(format!(
                            "the {} (token {}) could not be renewed before its lease ran out: {e}",
                            table.item, current.token
                        )));
                        return current;
                    }
                    Err(e) => tracing::warn!(lock = %table.item, error = %e, "renewing a lock failed"),
                }
            }
        });
        HeldLease { lease, lost, stop, task }
    }

    /// Fails when the lock was lost.
    pub fn check(&self) -> Result<(), LeaseLost> {
        match self.lost.borrow().clone() {
            Some(why) => Err(LeaseLost(why)),
            None => Ok(()),
        }
    }

    /// Resolves when the lock is lost.
    pub fn lost(&self) -> tokio::sync::watch::Receiver<Option<String>> {
        self.lost.clone()
    }

    /// Stops renewing; returns the lock as last renewed.
    pub async fn stop(self) -> Lease {
        let _ = self.stop.send(true);
        self.task.await.unwrap_or(self.lease)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(holder: &str, token: u64, expires_at: i64) -> Lease {
        Lease { holder: holder.into(), token, started_at: 0, expires_at, detail: "d".into() }
    }

    #[test]
    fn the_lock_is_taken_when_free_expired_or_our_own_and_the_token_always_grows() {
        let table = [
            (None, LeaseAccess::Take { token: 1 }),
            (
                Some(lease("i-b", 4, 200)),
                LeaseAccess::Held { by: "i-b".into(), since: 0, until: 200, detail: "d".into() },
            ),
            (Some(lease("i-b", 4, 100)), LeaseAccess::Take { token: 5 }),
            (Some(lease("i-b", 4, 99)), LeaseAccess::Take { token: 5 }),
            (Some(lease("i-b", 4, 0)), LeaseAccess::Take { token: 5 }),
            (Some(lease("i-a", 7, 500)), LeaseAccess::Take { token: 8 }),
        ];
        for (found, want) in table {
            assert_eq!(lease_access(found.as_ref(), "i-a", 100), want, "{found:?}");
        }
    }
}
