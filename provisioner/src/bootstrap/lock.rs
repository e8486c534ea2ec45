//! The bootstrap's DynamoDB items (DESIGN.md section 12): the fenced `bootstrap_lock`
//! (taken by a conditional write on what was read, renewed while the bootstrap runs,
//! released at its end, free once `expires_at` has passed if its holder died), the
//! `master_lock` the first master claims in one transaction with a check that it still
//! holds the lock with its token, and the leader's `topology` item (to choose a donor).

use std::collections::HashMap;
use std::time::Duration;

use anyhow::{bail, Context};
use aws_sdk_dynamodb::types::{AttributeValue, ConditionCheck, Put, TransactWriteItem};
use aws_sdk_dynamodb::Client;

use super::decide::{BootstrapLock, MasterRecord};

pub const BOOTSTRAP_LOCK: &str = "bootstrap_lock";
const MASTER_LOCK: &str = "master_lock";
const TOPOLOGY: &str = "topology";
/// How long the first master's own claim lasts; its peer's leader rewrites the
/// `master_lock` (fenced by Raft) as soon as it runs.
const CLAIM_TTL_S: i64 = 600;

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
fn refused<E: aws_sdk_dynamodb::error::ProvideErrorMetadata>(e: &E) -> bool {
    matches!(e.code(), Some("ConditionalCheckFailedException") | Some("TransactionCanceledException"))
}

pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// The cluster's table, as the bootstrap uses it.
#[derive(Clone)]
pub struct BootstrapTable {
    pub dynamodb: Client,
    pub table: String,
}

impl BootstrapTable {
    async fn get(&self, pk: &str) -> anyhow::Result<Option<HashMap<String, AttributeValue>>> {
        let out = self
            .dynamodb
            .get_item()
            .table_name(&self.table)
            .key("pk", s(pk))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| {
                anyhow::anyhow!("GetItem {pk} in {}: {}", self.table, aws_connect::error_line(&e))
            })?;
        Ok(out.item().cloned())
    }

    pub async fn read_lock(&self) -> anyhow::Result<Option<BootstrapLock>> {
        Ok(self.get(BOOTSTRAP_LOCK).await?.map(|item| BootstrapLock {
            holder: text(&item, "holder"),
            token: number(&item, "token").unwrap_or(0).max(0) as u64,
            started_at: number(&item, "started_at").unwrap_or(0),
            expires_at: number(&item, "expires_at").unwrap_or(0),
        }))
    }

    /// Takes the lock with `lock.token` if it is still as `found` was read. `Ok(false)`:
    /// another node wrote first.
    pub async fn take(&self, lock: &BootstrapLock, found: Option<&BootstrapLock>) -> anyhow::Result<bool> {
        let mut put = self
            .dynamodb
            .put_item()
            .table_name(&self.table)
            .item("pk", s(BOOTSTRAP_LOCK))
            .item("holder", s(&lock.holder))
            .item("token", n(lock.token as i64))
            .item("started_at", n(lock.started_at))
            .item("expires_at", n(lock.expires_at));
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
            Err(e) if e.as_service_error().is_some_and(refused) => Ok(false),
            Err(e) => bail!("PutItem {BOOTSTRAP_LOCK} in {}: {}", self.table, aws_connect::error_line(&e)),
        }
    }

    /// Extends the lock to `expires_at` if `lock` still holds it. `Ok(false)`: it was
    /// lost (expired and taken by another node).
    pub async fn renew(&self, lock: &BootstrapLock, expires_at: i64) -> anyhow::Result<bool> {
        let mut renewed = lock.clone();
        renewed.expires_at = expires_at;
        self.take(&renewed, Some(lock)).await
    }

    /// Frees the lock if `lock` still holds it: the item stays with its token and an
    /// `expires_at` in the past, so the next holder's token is higher (a fencing token
    /// never repeats).
    pub async fn release(&self, lock: &BootstrapLock) -> anyhow::Result<()> {
        let mut freed = lock.clone();
        freed.expires_at = 0;
        self.take(&freed, Some(lock)).await.map(|_| ())
    }

    pub async fn read_master(&self) -> anyhow::Result<Option<MasterRecord>> {
        Ok(self.get(MASTER_LOCK).await?.map(|item| MasterRecord {
            holder: text(&item, "holder"),
            leader_id: number(&item, "leader_id").unwrap_or(0).max(0) as u64,
            expires_at: number(&item, "expires_at").unwrap_or(0),
        }))
    }

    /// The leader's `topology` JSON, if it wrote one.
    pub async fn read_topology(&self) -> anyhow::Result<Option<String>> {
        Ok(self.get(TOPOLOGY).await?.map(|item| text(&item, "topology")).filter(|t| !t.is_empty()))
    }

    /// Records `instance` as the cluster's first master, in one transaction that also
    /// checks `lock` still holds the bootstrap lock: a node whose lock expired (it
    /// stalled) and was taken over can never claim. Fenced at epoch 0, Raft term 0, so
    /// the first write of the peers' leader replaces it. `Ok(false)`: refused (the lock
    /// was lost, or a master is already recorded).
    pub async fn claim_master(&self, lock: &BootstrapLock, instance: &str) -> anyhow::Result<bool> {
        let now = unix_now();
        let check = ConditionCheck::builder()
            .table_name(&self.table)
            .key("pk", s(BOOTSTRAP_LOCK))
            .condition_expression("#token = :token AND holder = :holder")
            .expression_attribute_names("#token", "token")
            .expression_attribute_values(":token", n(lock.token as i64))
            .expression_attribute_values(":holder", s(&lock.holder))
            .build()
            .context("building the lock check")?;
        let put = Put::builder()
            .table_name(&self.table)
            .item("pk", s(MASTER_LOCK))
            .item("holder", s(instance))
            .item("leader_id", n(0))
            .item("epoch", n(0))
            .item("raft_term", n(0))
            .item("updated_at", n(now))
            .item("expires_at", n(now + CLAIM_TTL_S))
            .item("claimed_by_bootstrap", s(&lock.holder))
            .condition_expression("attribute_not_exists(pk)")
            .build()
            .context("building the master claim")?;
        let result = self
            .dynamodb
            .transact_write_items()
            .transact_items(TransactWriteItem::builder().condition_check(check).build())
            .transact_items(TransactWriteItem::builder().put(put).build())
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(e) if e.as_service_error().is_some_and(refused) => Ok(false),
            Err(e) => bail!(
                "TransactWriteItems (claim {MASTER_LOCK}) in {}: {}",
                self.table,
                aws_connect::error_line(&e)
            ),
        }
    }
}

/// The lock while this node holds it: renewed in the background every third of the
/// lease; [`HeldLock::check`] fails once a renewal found the lock lost.
pub struct HeldLock {
    pub lock: BootstrapLock,
    lost: tokio::sync::watch::Receiver<Option<String>>,
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<BootstrapLock>,
}

impl HeldLock {
    pub fn start(table: BootstrapTable, lock: BootstrapLock, lease: Duration) -> HeldLock {
        let (lost_tx, lost) = tokio::sync::watch::channel(None);
        let (stop, mut stopped) = tokio::sync::watch::channel(false);
        let held = lock.clone();
        let task = tokio::spawn(async move {
            let mut current = held;
            let every = lease / 3;
            loop {
                tokio::select! {
                    _ = stopped.changed() => return current,
                    _ = tokio::time::sleep(every) => {}
                }
                let until = unix_now() + lease.as_secs() as i64;
                match table.renew(&current, until).await {
                    Ok(true) => current.expires_at = until,
                    Ok(false) => {
                        let _ = lost_tx.send(Some(format!(
                            "the bootstrap lock (token {}) was taken over: this bootstrap stalled past its lease",
                            current.token
                        )));
                        return current;
                    }
                    // A failed call is retried at the next tick; the lease covers two.
                    Err(e) => eprintln!("  renewing the bootstrap lock: {e:#}"),
                }
            }
        });
        HeldLock { lock, lost, stop, task }
    }

    /// Fails when the lock was lost.
    pub fn check(&self) -> anyhow::Result<()> {
        match self.lost.borrow().clone() {
            Some(why) => bail!("{why}"),
            None => Ok(()),
        }
    }

    /// Stops renewing; returns the lock as last renewed.
    pub async fn stop(self) -> BootstrapLock {
        let _ = self.stop.send(true);
        self.task.await.unwrap_or(self.lock)
    }
}
