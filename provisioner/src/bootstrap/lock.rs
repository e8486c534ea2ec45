//! The bootstrap's DynamoDB items (DESIGN.md section 12): the fenced `bootstrap_lock`
//! (an [`orchestrator::aws::lease`] lock: taken by a conditional write on what was
//! read, renewed while the bootstrap runs, released at its end, free once `expires_at`
//! has passed if its holder died), the `master_lock` the first master claims in one
//! transaction with a check that it still holds the lock with its token, and the
//! leader's `topology` item (to choose a donor).

use std::collections::HashMap;

use anyhow::{bail, Context};
use aws_sdk_dynamodb::types::{AttributeValue, ConditionCheck, Put, TransactWriteItem};
use aws_sdk_dynamodb::Client;
use orchestrator::aws::lease::{condition_refused, unix_now, Lease, LeaseTable};

use super::decide::MasterRecord;

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

/// The cluster's table, as the bootstrap uses it.
#[derive(Clone)]
pub struct BootstrapTable {
    pub dynamodb: Client,
    pub table: String,
}

impl BootstrapTable {
    /// The `bootstrap_lock` item of this table.
    pub fn lock(&self) -> LeaseTable {
        LeaseTable::new(self.dynamodb.clone(), &self.table, BOOTSTRAP_LOCK)
    }

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
    pub async fn claim_master(&self, lock: &Lease, instance: &str) -> anyhow::Result<bool> {
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
            Err(e) if e.as_service_error().is_some_and(condition_refused) => Ok(false),
            Err(e) => bail!(
                "TransactWriteItems (claim {MASTER_LOCK}) in {}: {}",
                self.table,
                aws_connect::error_line(&e)
            ),
        }
    }
}
