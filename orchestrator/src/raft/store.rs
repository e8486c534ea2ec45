//! RocksDB storage of the Raft log, vote, committed index and state-machine snapshots,
//! in the peer's data directory.
//!
//! Column families: `logs` (big-endian index → JSON entry), `meta` (vote, committed,
//! last purged log id), `snapshot` (the latest state-machine snapshot). Every write that
//! Raft must find again after a crash is synced to disk before it is acknowledged.
//!
//! The state machine itself lives in memory ([`StateMachineStore`]); after a restart it
//! starts from the last snapshot and openraft re-applies the committed log after it.

// openraft's trait methods return its `StorageError`, which is large; our helpers
// return the same type so errors pass through unchanged.
#![allow(clippy::result_large_err)]

use std::fmt::Debug;
use std::io::Cursor;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage, RaftStateMachine, Snapshot};
use openraft::{
    AnyError, Entry, EntryPayload, ErrorSubject, ErrorVerb, LogId, OptionalSend, RaftLogReader,
    RaftSnapshotBuilder, SnapshotMeta, StorageError, StorageIOError, StoredMembership, Vote,
};
use rocksdb::{ColumnFamilyDescriptor, Direction, IteratorMode, Options, WriteBatch, WriteOptions, DB};
use serde::{Deserialize, Serialize};

use super::{NodeId, PeerNode, TypeConfig};
use crate::state::{ClusterState, CommandResult};

const CF_LOGS: &str = "logs";
const CF_META: &str = "meta";
const CF_SNAPSHOT: &str = "snapshot";

const KEY_VOTE: &[u8] = b"vote";
const KEY_COMMITTED: &[u8] = b"committed";
const KEY_LAST_PURGED: &[u8] = b"last_purged";
const KEY_SNAPSHOT: &[u8] = b"current";

type StorageResult<T> = Result<T, StorageError<NodeId>>;

fn io_error(
    subject: ErrorSubject<NodeId>,
    verb: ErrorVerb,
    e: impl std::error::Error + 'static,
) -> StorageError<NodeId> {
    StorageIOError::new(subject, verb, AnyError::new(&e)).into()
}

fn index_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

fn key_index(key: &[u8]) -> u64 {
    let mut buf = [0u8; 8];
    buf.copy_from_slice(&key[..8]);
    u64::from_be_bytes(buf)
}

/// Opens (or creates) the peer's RocksDB at `dir`.
pub fn open_db(dir: &Path) -> Result<Arc<DB>, rocksdb::Error> {
    let mut opts = Options::default();
    opts.create_if_missing(true);
    opts.create_missing_column_families(true);
    let cfs = [CF_LOGS, CF_META, CF_SNAPSHOT]
        .into_iter()
        .map(|name| ColumnFamilyDescriptor::new(name, Options::default()));
    Ok(Arc::new(DB::open_cf_descriptors(&opts, dir, cfs)?))
}

fn synced() -> WriteOptions {
    let mut w = WriteOptions::default();
    w.set_sync(true);
    w
}

/// The Raft log and vote. Cheap to clone: clones share the database.
#[derive(Clone)]
pub struct LogStore {
    db: Arc<DB>,
    /// The last committed index Raft told us about (for `/api/raft-state`).
    committed_index: Arc<AtomicU64>,
}

impl LogStore {
    pub fn new(db: Arc<DB>) -> Self {
        Self { db, committed_index: Arc::new(AtomicU64::new(0)) }
    }

    /// Shared view of the committed index.
    pub fn committed_index(&self) -> Arc<AtomicU64> {
        self.committed_index.clone()
    }

    fn cf(&self, name: &str) -> &rocksdb::ColumnFamily {
        self.db.cf_handle(name).expect("column family created at open")
    }

    fn get_meta<T: for<'de> Deserialize<'de>>(
        &self,
        key: &[u8],
        subject: ErrorSubject<NodeId>,
    ) -> StorageResult<Option<T>> {
        let bytes = self
            .db
            .get_cf(self.cf(CF_META), key)
            .map_err(|e| io_error(subject.clone(), ErrorVerb::Read, e))?;
        bytes
            .map(|b| serde_json::from_slice(&b).map_err(|e| io_error(subject, ErrorVerb::Read, e)))
            .transpose()
    }

    fn put_meta<T: Serialize>(
        &self,
        key: &[u8],
        value: &T,
        subject: ErrorSubject<NodeId>,
    ) -> StorageResult<()> {
        let bytes = serde_json::to_vec(value).map_err(|e| io_error(subject.clone(), ErrorVerb::Write, e))?;
        self.db
            .put_cf_opt(self.cf(CF_META), key, bytes, &synced())
            .map_err(|e| io_error(subject, ErrorVerb::Write, e))
    }

    fn last_purged(&self) -> StorageResult<Option<LogId<NodeId>>> {
        self.get_meta(KEY_LAST_PURGED, ErrorSubject::Store)
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> StorageResult<Vec<Entry<TypeConfig>>> {
        let start = match range.start_bound() {
            Bound::Included(i) => *i,
            Bound::Excluded(i) => i + 1,
            Bound::Unbounded => 0,
        };
        let mut entries = Vec::new();
        let iter =
            self.db.iterator_cf(self.cf(CF_LOGS), IteratorMode::From(&index_key(start), Direction::Forward));
        for item in iter {
            let (key, value) = item.map_err(|e| io_error(ErrorSubject::Logs, ErrorVerb::Read, e))?;
            let index = key_index(&key);
            if !range.contains(&index) {
                break;
            }
            let entry: Entry<TypeConfig> = serde_json::from_slice(&value)
                .map_err(|e| io_error(ErrorSubject::Logs, ErrorVerb::Read, e))?;
            entries.push(entry);
        }
        Ok(entries)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> StorageResult<LogState<TypeConfig>> {
        let last_purged_log_id = self.last_purged()?;
        let last = self.db.iterator_cf(self.cf(CF_LOGS), IteratorMode::End).next();
        let last_log_id = match last {
            Some(item) => {
                let (_, value) = item.map_err(|e| io_error(ErrorSubject::Logs, ErrorVerb::Read, e))?;
                let entry: Entry<TypeConfig> = serde_json::from_slice(&value)
                    .map_err(|e| io_error(ErrorSubject::Logs, ErrorVerb::Read, e))?;
                Some(entry.log_id)
            }
            None => last_purged_log_id,
        };
        Ok(LogState { last_purged_log_id, last_log_id })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> StorageResult<()> {
        self.put_meta(KEY_VOTE, vote, ErrorSubject::Vote)
    }

    async fn read_vote(&mut self) -> StorageResult<Option<Vote<NodeId>>> {
        self.get_meta(KEY_VOTE, ErrorSubject::Vote)
    }

    async fn save_committed(&mut self, committed: Option<LogId<NodeId>>) -> StorageResult<()> {
        if let Some(c) = committed {
            self.committed_index.store(c.index, Ordering::Relaxed);
        }
        self.put_meta(KEY_COMMITTED, &committed, ErrorSubject::Store)
    }

    async fn read_committed(&mut self) -> StorageResult<Option<LogId<NodeId>>> {
        let committed: Option<Option<LogId<NodeId>>> = self.get_meta(KEY_COMMITTED, ErrorSubject::Store)?;
        let committed = committed.flatten();
        if let Some(c) = committed {
            self.committed_index.store(c.index, Ordering::Relaxed);
        }
        Ok(committed)
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> StorageResult<()>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut batch = WriteBatch::default();
        for entry in entries {
            let bytes =
                serde_json::to_vec(&entry).map_err(|e| io_error(ErrorSubject::Logs, ErrorVerb::Write, e))?;
            batch.put_cf(self.cf(CF_LOGS), index_key(entry.log_id.index), bytes);
        }
        let result = self.db.write_opt(batch, &synced());
        let io_result = result.as_ref().map(|_| ()).map_err(|e| std::io::Error::other(e.to_string()));
        callback.log_io_completed(io_result);
        result.map_err(|e| io_error(ErrorSubject::Logs, ErrorVerb::Write, e))
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> StorageResult<()> {
        self.db
            .delete_range_cf(self.cf(CF_LOGS), index_key(log_id.index), index_key(u64::MAX))
            .map_err(|e| io_error(ErrorSubject::Logs, ErrorVerb::Delete, e))?;
        // delete_range excludes the upper bound.
        self.db
            .delete_cf_opt(self.cf(CF_LOGS), index_key(u64::MAX), &synced())
            .map_err(|e| io_error(ErrorSubject::Logs, ErrorVerb::Delete, e))
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> StorageResult<()> {
        self.put_meta(KEY_LAST_PURGED, &log_id, ErrorSubject::Store)?;
        self.db
            .delete_range_cf(self.cf(CF_LOGS), index_key(0), index_key(log_id.index + 1))
            .map_err(|e| io_error(ErrorSubject::Logs, ErrorVerb::Delete, e))
    }
}

/// What a snapshot holds, as stored and as sent to a lagging peer.
#[derive(Serialize, Deserialize, Default, Clone)]
struct SnapshotBody {
    last_applied: Option<LogId<NodeId>>,
    membership: StoredMembership<NodeId, PeerNode>,
    state: ClusterState,
}

#[derive(Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta<NodeId, PeerNode>,
    data: Vec<u8>,
}

/// The in-memory state machine and the applied position.
#[derive(Default)]
pub struct AppliedState {
    pub last_applied: Option<LogId<NodeId>>,
    pub membership: StoredMembership<NodeId, PeerNode>,
    pub state: ClusterState,
}

/// The state machine side of storage. Cheap to clone.
#[derive(Clone)]
pub struct StateMachineStore {
    db: Arc<DB>,
    applied: Arc<RwLock<AppliedState>>,
    snapshots_built: Arc<AtomicU64>,
}

impl StateMachineStore {
    /// Loads the last snapshot, if any, as the starting state.
    pub fn open(db: Arc<DB>) -> Result<Self, StorageError<NodeId>> {
        let store = Self {
            db,
            applied: Arc::new(RwLock::new(AppliedState::default())),
            snapshots_built: Arc::new(AtomicU64::new(0)),
        };
        if let Some(stored) = store.read_stored_snapshot()? {
            let body: SnapshotBody = serde_json::from_slice(&stored.data)
                .map_err(|e| io_error(ErrorSubject::StateMachine, ErrorVerb::Read, e))?;
            *store.write() = AppliedState {
                last_applied: body.last_applied,
                membership: body.membership,
                state: body.state,
            };
        }
        Ok(store)
    }

    /// Read access for the API.
    pub fn applied(&self) -> Arc<RwLock<AppliedState>> {
        self.applied.clone()
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, AppliedState> {
        self.applied.write().unwrap_or_else(|e| e.into_inner())
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, AppliedState> {
        self.applied.read().unwrap_or_else(|e| e.into_inner())
    }

    fn cf(&self) -> &rocksdb::ColumnFamily {
        self.db.cf_handle(CF_SNAPSHOT).expect("column family created at open")
    }

    fn read_stored_snapshot(&self) -> StorageResult<Option<StoredSnapshot>> {
        let bytes = self
            .db
            .get_cf(self.cf(), KEY_SNAPSHOT)
            .map_err(|e| io_error(ErrorSubject::Snapshot(None), ErrorVerb::Read, e))?;
        bytes
            .map(|b| {
                serde_json::from_slice(&b)
                    .map_err(|e| io_error(ErrorSubject::Snapshot(None), ErrorVerb::Read, e))
            })
            .transpose()
    }

    fn write_stored_snapshot(&self, snapshot: &StoredSnapshot) -> StorageResult<()> {
        let subject = ErrorSubject::Snapshot(Some(snapshot.meta.signature()));
        let bytes =
            serde_json::to_vec(snapshot).map_err(|e| io_error(subject.clone(), ErrorVerb::Write, e))?;
        self.db
            .put_cf_opt(self.cf(), KEY_SNAPSHOT, bytes, &synced())
            .map_err(|e| io_error(subject, ErrorVerb::Write, e))
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachineStore {
    async fn build_snapshot(&mut self) -> StorageResult<Snapshot<TypeConfig>> {
        let body = {
            let a = self.read();
            SnapshotBody {
                last_applied: a.last_applied,
                membership: a.membership.clone(),
                state: a.state.clone(),
            }
        };
        let data = serde_json::to_vec(&body)
            .map_err(|e| io_error(ErrorSubject::StateMachine, ErrorVerb::Read, e))?;
        let n = self.snapshots_built.fetch_add(1, Ordering::Relaxed) + 1;
        let snapshot_id = match body.last_applied {
            Some(l) => format!("{}-{}-{n}", l.leader_id, l.index),
            None => format!("none-{n}"),
        };
        let meta =
            SnapshotMeta { last_log_id: body.last_applied, last_membership: body.membership, snapshot_id };
        self.write_stored_snapshot(&StoredSnapshot { meta: meta.clone(), data: data.clone() })?;
        tracing::info!(snapshot = %meta.snapshot_id, bytes = data.len(), "built state-machine snapshot");
        Ok(Snapshot { meta, snapshot: Box::new(Cursor::new(data)) })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = Self;

    async fn applied_state(
        &mut self,
    ) -> StorageResult<(Option<LogId<NodeId>>, StoredMembership<NodeId, PeerNode>)> {
        let a = self.read();
        Ok((a.last_applied, a.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> StorageResult<Vec<CommandResult>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut a = self.write();
        let mut results = Vec::new();
        for entry in entries {
            a.last_applied = Some(entry.log_id);
            let result = match entry.payload {
                EntryPayload::Blank => CommandResult::Done,
                EntryPayload::Normal(proposal) => a.state.apply(&proposal),
                EntryPayload::Membership(m) => {
                    tracing::info!(index = entry.log_id.index, membership = %m, "membership applied");
                    a.membership = StoredMembership::new(Some(entry.log_id), m);
                    CommandResult::Done
                }
            };
            results.push(result);
        }
        Ok(results)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> StorageResult<Box<Cursor<Vec<u8>>>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, PeerNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> StorageResult<()> {
        let data = snapshot.into_inner();
        let body: SnapshotBody = serde_json::from_slice(&data)
            .map_err(|e| io_error(ErrorSubject::Snapshot(Some(meta.signature())), ErrorVerb::Read, e))?;
        self.write_stored_snapshot(&StoredSnapshot { meta: meta.clone(), data })?;
        *self.write() = AppliedState {
            last_applied: meta.last_log_id,
            membership: meta.last_membership.clone(),
            state: body.state,
        };
        tracing::info!(snapshot = %meta.snapshot_id, "installed snapshot from the leader");
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> StorageResult<Option<Snapshot<TypeConfig>>> {
        Ok(self
            .read_stored_snapshot()?
            .map(|s| Snapshot { meta: s.meta, snapshot: Box::new(Cursor::new(s.data)) }))
    }
}
