//! The continuous binlog archive (DESIGN.md section 13): the peer beside the master
//! the Raft group recorded holds the fenced `binlog_archive_lock` and reads its
//! server's binary logs from disk as they grow, transaction by transaction. Whole
//! transactions go into a segment, uploaded when the binary log rotates, when the
//! segment is full, or `binlog_flush_s` after its first transaction was read (so the
//! recovery point is seconds, not a rotation). Each segment's index entry (GTID sets,
//! commit times, source, checksum) is written after its data.
//!
//! After a failover the new master's peer takes the lock (at once when the old
//! holder saw the change and let go, else when its lease runs out) and starts where
//! the archive's history ends in the new master's own binary logs, skipping what is
//! archived already (its binary log holds the old master's transactions too) and
//! discarding archived transactions it never received; transactions purged before
//! they were archived are a gap, seen in the index.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mysql_async::prelude::Queryable;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use super::archive::{archived_history, takeover, Segment, SourceFile};
use super::binlog::{self, FormatDescription, Transaction};
use super::parts::{encode, sha256_hex};
use super::service::{executed_set, server_facts, BackupError, BackupService, ClusterBackups};
use super::store::ObjectStore;
use crate::aws::lease::{HeldLease, LeaseAccess};
use crate::topology::gtid::GtidSet;
use crate::topology::InstanceKey;

/// Index entries folded into one chunk object.
const CHUNK_ENTRIES: usize = 500;
/// How often an idle binary log's server is asked whether it moved on to a newer
/// file without saying so in this one.
const ABANDONED_CHECK_EVERY: Duration = Duration::from_secs(1);

/// How often a growing binary log is read.
const READ_EVERY: Duration = Duration::from_millis(200);
/// Bytes read from a binary log at once.
const READ_BYTES: usize = 8 << 20;

/// The archiver's state on this peer, for `backup list` and `/metrics`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ArchiveStatus {
    /// This peer archives the cluster now.
    pub active: bool,
    pub source: String,
    pub file: String,
    pub offset: u64,
    pub segments_written: u64,
    pub last_seq: u64,
    pub last_archived_ms: i64,
    /// The newest archived transaction's commit time (Unix µs).
    pub last_commit_micros: i64,
    /// Transactions purged from the source before they were archived.
    pub missing: String,
    pub error: String,
}

/// What a segment in the making holds.
#[derive(Default)]
struct Pending {
    bytes: Vec<u8>,
    transactions: Vec<Transaction>,
    before: GtidSet,
    first_read: Option<Instant>,
    file: String,
}

impl Pending {
    fn is_empty(&self) -> bool {
        self.transactions.is_empty()
    }
}

/// One binary log file being read.
struct OpenFile {
    name: String,
    path: PathBuf,
    /// Bytes read and not yet consumed start at this offset.
    offset: u64,
    buffer: Vec<u8>,
    format: Option<FormatDescription>,
}

impl BackupService {
    /// Runs until `stop`: archives every cluster whose recorded master is this peer's
    /// server, and lets go of those whose master moved elsewhere.
    pub async fn run_archiver(self: Arc<Self>, mut stop: tokio::sync::watch::Receiver<bool>) {
        let Some(local) = self.local.clone() else { return };
        if !self.config.backup.binlog_archive {
            return;
        }
        let mut running: BTreeMap<String, (tokio::sync::watch::Sender<bool>, tokio::task::JoinHandle<()>)> =
            BTreeMap::new();
        loop {
            for alias in self.cluster_aliases() {
                let master = self.raft.with_state(|s| s.clusters.get(&alias).and_then(|c| c.master.clone()));
                let ours = master.as_ref() == Some(&local);
                let live = running.get(&alias).is_some_and(|(_, task)| !task.is_finished());
                if ours && !live {
                    let (tx, rx) = tokio::sync::watch::channel(false);
                    let task = tokio::spawn(self.clone().archive_cluster(alias.clone(), rx));
                    running.insert(alias.clone(), (tx, task));
                } else if !ours {
                    if let Some((tx, task)) = running.remove(&alias) {
                        let _ = tx.send(true);
                        let _ = task.await;
                    }
                }
            }
            tokio::select! {
                _ = stop.changed() => break,
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            }
        }
        for (_, (tx, task)) in running {
            let _ = tx.send(true);
            let _ = task.await;
        }
    }

    fn set_status(&self, alias: &str, update: impl FnOnce(&mut ArchiveStatus)) {
        let mut all = self.archive_status.lock().unwrap_or_else(|e| e.into_inner());
        update(all.entry(alias.to_string()).or_default());
    }

    pub fn archive_status(&self, alias: &str) -> Option<ArchiveStatus> {
        self.archive_status.lock().unwrap_or_else(|e| e.into_inner()).get(alias).cloned()
    }

    async fn archive_cluster(self: Arc<Self>, alias: String, mut stop: tokio::sync::watch::Receiver<bool>) {
        loop {
            match self.archive_under_lock(&alias, &mut stop).await {
                Ok(()) => break,
                Err(e) => {
                    tracing::warn!(cluster = %alias, error = %e, "binlog archive interrupted; retrying");
                    self.set_status(&alias, |s| {
                        s.active = false;
                        s.error = e.to_string();
                    });
                }
            }
            tokio::select! {
                _ = stop.changed() => break,
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
        self.set_status(&alias, |s| s.active = false);
    }

    async fn archive_under_lock(
        &self,
        alias: &str,
        stop: &mut tokio::sync::watch::Receiver<bool>,
    ) -> Result<(), BackupError> {
        let c = self.cluster(alias)?;
        let local = self.local.clone().ok_or_else(|| BackupError::Failed("no local server".into()))?;
        let holder = format!("peer {} ({local})", self.node_id);
        let duration = Duration::from_secs(self.config.backup.archive_lease_s);
        let mut waited = false;
        let lease = loop {
            match c.archive_lock.try_take(&holder, duration, &format!("binlog archive of {local}")).await? {
                Ok(lease) => break lease,
                Err(LeaseAccess::Held { by, until, .. }) => {
                    if !waited {
                        tracing::info!(cluster = %alias, holder = %by, until, "waiting for the binlog archive lock");
                        waited = true;
                    }
                }
                Err(LeaseAccess::Take { .. }) => {}
            }
            tokio::select! {
                _ = stop.changed() => return Ok(()),
                _ = tokio::time::sleep(Duration::from_millis(300)) => {}
            }
        };
        let held = HeldLease::start(c.archive_lock.clone(), lease, duration);
        let result = self.archive_with_lease(alias, c, &local, &held, stop).await;
        let lease = held.stop().await;
        if let Err(e) = c.archive_lock.release(&lease).await {
            tracing::warn!(cluster = %alias, error = %e, "releasing the binlog archive lock failed (it expires)");
        }
        result
    }

    async fn archive_with_lease(
        &self,
        alias: &str,
        c: &ClusterBackups,
        local: &InstanceKey,
        held: &HeldLease,
        stop: &mut tokio::sync::watch::Receiver<bool>,
    ) -> Result<(), BackupError> {
        let token = held.lease.token;
        let (segments, loose) = self.read_index(c).await?;
        let mut next_seq = segments.last().map(|s| s.seq + 1).unwrap_or(1);
        if loose >= CHUNK_ENTRIES {
            self.fold_loose_entries(c, token).await?;
        }
        let archived = archived_history(&segments);
        let mut conn = self.connect_orchestrator(local).await?;
        let facts = server_facts(&mut conn).await?;
        let basename = facts
            .log_bin_basename
            .clone()
            .ok_or_else(|| BackupError::Failed(format!("{local} has no binary log (log_bin is off)")))?;
        let dir = basename.parent().unwrap_or(Path::new("/")).to_path_buf();
        let server_id: Option<u32> = conn.query_first("SELECT @@server_id").await.unwrap_or(None);
        let names: Vec<String> = conn
            .query_map("SHOW BINARY LOGS", |row: mysql_async::Row| {
                row.get::<String, usize>(0).unwrap_or_default()
            })
            .await
            .map_err(|e| BackupError::Failed(format!("SHOW BINARY LOGS on {local}: {e}")))?;
        let executed = executed_set(&mut conn, facts.mariadb).await?;
        let forks = if facts.mariadb {
            let state: Option<String> = conn.query_first("SELECT @@gtid_binlog_state").await.unwrap_or(None);
            super::archive::mariadb_forks(
                &super::archive::last_by_domain(&segments),
                &parse_binlog_state(&state.unwrap_or_default()),
            )
        } else {
            Default::default()
        };
        drop(conn);
        let mut files = Vec::new();
        for name in &names {
            let path = dir.join(name);
            files.push(SourceFile { name: name.clone(), start_state: start_state(&path).await? });
        }
        let plan = takeover(&files, &executed, &archived, &forks)
            .ok_or_else(|| BackupError::Failed(format!("{local} lists no binary log")))?;
        if !plan.missing.is_empty() {
            tracing::warn!(cluster = %alias, missing = %plan.missing, "binlog archive gap: these transactions were purged before they were archived");
        }
        if !plan.discarded.is_empty() {
            tracing::warn!(cluster = %alias, discarded = %plan.discarded, "the archive holds transactions the new master never had: they are not history");
        }
        tracing::info!(cluster = %alias, source = %local, file = %plan.file, next_seq, "archiving binary logs");
        let start =
            files.iter().find(|f| f.name == plan.file).map(|f| f.start_state.clone()).unwrap_or_default();
        self.set_status(alias, |s| {
            *s = ArchiveStatus {
                active: true,
                source: local.to_string(),
                file: plan.file.clone(),
                missing: plan.missing.to_string(),
                last_seq: next_seq.saturating_sub(1),
                ..Default::default()
            }
        });
        let mut have = start;
        let mut discarded = Some(plan.discarded.clone());
        let mut file = OpenFile {
            name: plan.file.clone(),
            path: dir.join(&plan.file),
            offset: 0,
            buffer: Vec::new(),
            format: None,
        };
        let mut pending = Pending::default();
        let flush_after = Duration::from_secs(self.config.backup.binlog_flush_s);
        let segment_max = (self.config.backup.binlog_segment_mb as usize) << 20;
        let mut written_this_session: Vec<(u64, String)> = Vec::new();
        // A file the server left without a rotate or stop event (it crashed and
        // started a new one): seen idle, then a newer file listed, then still
        // nothing more to read.
        let mut idle_since: Option<Instant> = None;
        let mut listed_after: Option<String> = None;
        loop {
            let stopping = *stop.borrow();
            held.check().map_err(|e| BackupError::Failed(e.to_string()))?;
            let read = read_more(&mut file).await?;
            let scan = binlog::scan(&file.buffer, file.offset, file.format.as_ref())
                .map_err(|e| BackupError::Failed(format!("{}: {e}", file.path.display())))?;
            if let Some(f) = &scan.format {
                file.format = Some(f.clone());
            }
            for t in &scan.transactions {
                let source = &t.gtid.source;
                // Archived already (from this source or the one before it).
                if plan.skip.contains(source, t.gtid.number) {
                    have.add(source.clone(), t.gtid.number, Some(t.gtid.server_id));
                    continue;
                }
                if pending.is_empty() {
                    pending.before = have.clone();
                    pending.first_read = Some(Instant::now());
                    pending.file = file.name.clone();
                }
                let from = (t.start - file.offset) as usize;
                let to = (t.end - file.offset) as usize;
                pending.bytes.extend_from_slice(&file.buffer[from..to]);
                pending.transactions.push(t.clone());
                have.add(source.clone(), t.gtid.number, Some(t.gtid.server_id));
            }
            let consumed = (scan.consumed - file.offset) as usize;
            file.buffer.drain(..consumed);
            file.offset = scan.consumed;
            let due = pending.first_read.is_some_and(|at| at.elapsed() >= flush_after);
            let full = pending.bytes.len() >= segment_max;
            // A file that ends with a stop event (the server restarted) goes on in the
            // next file the server lists.
            let rotated = match (&scan.rotated_to, scan.stopped) {
                (Some(next), _) => Some(next.clone()),
                (None, true) => self.binlog_after(local, &file.name).await?,
                (None, false) if read > 0 => {
                    idle_since = None;
                    listed_after = None;
                    None
                }
                (None, false) => match listed_after.take() {
                    Some(next) => {
                        tracing::warn!(cluster = %alias, file = %file.name, next = %next, "binary log ended without a rotate event (the server crashed): going on in the next one");
                        Some(next)
                    }
                    None => {
                        let since = *idle_since.get_or_insert_with(Instant::now);
                        if since.elapsed() >= ABANDONED_CHECK_EVERY {
                            idle_since = Some(Instant::now());
                            listed_after = self.binlog_after(local, &file.name).await?;
                        }
                        None
                    }
                },
            };
            if rotated.is_some() {
                idle_since = None;
                listed_after = None;
            }
            if !pending.is_empty() && (due || full || rotated.is_some() || stopping) {
                let format =
                    file.format.clone().ok_or_else(|| BackupError::Failed("no format description".into()))?;
                let entry = self
                    .flush_segment(
                        c,
                        held,
                        local,
                        server_id.unwrap_or(0),
                        next_seq,
                        &format,
                        std::mem::take(&mut pending),
                        discarded.take().unwrap_or_default(),
                    )
                    .await?;
                written_this_session.push((entry.seq, c.layout.segment_index_key(entry.seq, token)));
                next_seq += 1;
                self.metrics.binlog_segment_archived(alias, entry.stored_bytes, entry.last_commit.micros);
                self.set_status(alias, |s| {
                    s.segments_written += 1;
                    s.last_seq = entry.seq;
                    s.last_archived_ms = entry.archived_at_ms;
                    s.last_commit_micros = entry.last_commit.micros;
                    s.error.clear();
                });
                if written_this_session.len() >= CHUNK_ENTRIES {
                    self.fold_loose_entries(c, token).await?;
                    written_this_session.clear();
                }
            }
            if stopping {
                return Ok(());
            }
            if let Some(next) = rotated {
                tracing::debug!(cluster = %alias, from = %file.name, to = %next, "binary log rotated");
                file = OpenFile {
                    path: dir.join(&next),
                    name: next,
                    offset: 0,
                    buffer: Vec::new(),
                    format: None,
                };
                self.set_status(alias, |s| s.file = file.name.clone());
                continue;
            }
            self.set_status(alias, |s| s.offset = file.offset);
            if read == 0 {
                tokio::select! {
                    _ = stop.changed() => {}
                    _ = tokio::time::sleep(READ_EVERY) => {}
                }
            }
        }
    }

    /// The binary log the server lists after `name`, if any yet.
    async fn binlog_after(&self, local: &InstanceKey, name: &str) -> Result<Option<String>, BackupError> {
        let mut conn = self.connect_orchestrator(local).await?;
        let names: Vec<String> = conn
            .query_map("SHOW BINARY LOGS", |row: mysql_async::Row| {
                row.get::<String, usize>(0).unwrap_or_default()
            })
            .await
            .map_err(|e| BackupError::Failed(format!("SHOW BINARY LOGS on {local}: {e}")))?;
        Ok(names.iter().skip_while(|n| n.as_str() != name).nth(1).cloned())
    }

    #[allow(clippy::too_many_arguments)]
    async fn flush_segment(
        &self,
        c: &ClusterBackups,
        held: &HeldLease,
        local: &InstanceKey,
        server_id: u32,
        seq: u64,
        format: &FormatDescription,
        pending: Pending,
        discarded: GtidSet,
    ) -> Result<Segment, BackupError> {
        let token = held.lease.token;
        let first = pending.transactions.first().expect("a segment holds a transaction").clone();
        let last = pending.transactions.last().expect("a segment holds a transaction").clone();
        let mut gtids = GtidSet::new();
        let mut last_by_domain = std::collections::BTreeMap::new();
        for t in &pending.transactions {
            gtids.add(t.gtid.source.clone(), t.gtid.number, Some(t.gtid.server_id));
            if let crate::topology::gtid::GtidSource::Domain(d) = t.gtid.source {
                last_by_domain.insert(d, t.gtid.to_string());
            }
        }
        let raw_bytes = (binlog::MAGIC.len() + format.event.len() + pending.bytes.len()) as u64;
        let (level, key, format) = (self.config.backup.compression_level, self.key.clone(), format.clone());
        let pieces = pending.bytes;
        let (stored, sha256) = tokio::task::spawn_blocking(move || {
            let bytes = binlog::assemble(&format, [pieces.as_slice()]);
            encode(&bytes, level, key.as_deref()).map(|stored| {
                let sha = sha256_hex(&stored);
                (stored, sha)
            })
        })
        .await
        .map_err(|e| BackupError::Failed(e.to_string()))?
        .map_err(|e| BackupError::Failed(format!("compressing a binlog segment: {e}")))?;
        let entry = Segment {
            seq,
            token,
            key: c.layout.segment_key(seq, token),
            source: local.to_string(),
            server_id,
            binlog: pending.file.clone(),
            start: first.start,
            end: last.end,
            before: pending.before,
            first_gtid: first.gtid.to_string(),
            last_gtid: last.gtid.to_string(),
            first_commit: first.committed,
            last_commit: last.committed,
            transactions: pending.transactions.len() as u64,
            raw_bytes,
            stored_bytes: stored.len() as u64,
            sha256,
            gtids,
            discarded,
            archived_at_ms: 0,
            encryption: self.key.as_ref().map(|k| k.describe()),
            last_by_domain: last_by_domain.into_values().collect(),
        };
        held.check().map_err(|e| BackupError::Failed(e.to_string()))?;
        c.store.put(&entry.key, stored).await?;
        let mut entry = entry;
        entry.archived_at_ms = crate::unix_millis_now();
        held.check().map_err(|e| BackupError::Failed(e.to_string()))?;
        c.store.put(&c.layout.segment_index_key(seq, token), entry.to_json()).await?;
        Ok(entry)
    }

    /// Folds every loose index entry into one chunk object, then deletes them.
    async fn fold_loose_entries(&self, c: &ClusterBackups, token: u64) -> Result<(), BackupError> {
        let objects = c.store.list(&c.layout.segment_index_prefix()).await?;
        let loose: Vec<String> =
            objects.into_iter().map(|o| o.key).filter(|k| !k.contains("/chunk-")).collect();
        if loose.is_empty() {
            return Ok(());
        }
        let mut entries = Vec::new();
        for key in &loose {
            entries.push(Segment::from_json(&c.store.get(key).await?).map_err(BackupError::Failed)?);
        }
        entries.sort_by_key(|e| (e.seq, e.token));
        let (first, last) = (entries[0].seq, entries[entries.len() - 1].seq);
        let body = serde_json::to_vec(&entries).map_err(|e| BackupError::Failed(e.to_string()))?;
        c.store.put(&c.layout.index_chunk_key(first, last, token), body).await?;
        c.store.delete(&loose).await?;
        tracing::info!(entries = loose.len(), first, last, "folded binlog index entries into a chunk");
        Ok(())
    }
}

/// MariaDB's `gtid_binlog_state` (`0-1-10,0-2-15`): (domain, server, last sequence
/// number) for each server of each domain.
pub fn parse_binlog_state(text: &str) -> Vec<(u32, u32, u64)> {
    text.split(',')
        .filter_map(|g| {
            let mut it = g.trim().split('-');
            Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?, it.next()?.parse().ok()?))
        })
        .collect()
}

/// Reads what was appended to the file since the last read; returns the byte count.
async fn read_more(file: &mut OpenFile) -> Result<usize, BackupError> {
    let mut f = tokio::fs::File::open(&file.path)
        .await
        .map_err(|e| BackupError::Failed(format!("opening {}: {e}", file.path.display())))?;
    let at = file.offset + file.buffer.len() as u64;
    f.seek(std::io::SeekFrom::Start(at)).await.map_err(|e| BackupError::Failed(e.to_string()))?;
    let mut chunk = vec![0u8; READ_BYTES];
    let n = f
        .read(&mut chunk)
        .await
        .map_err(|e| BackupError::Failed(format!("reading {}: {e}", file.path.display())))?;
    file.buffer.extend_from_slice(&chunk[..n]);
    Ok(n)
}

/// The GTID state a binary log starts from (its `Previous_gtids` / `Gtid_list`).
async fn start_state(path: &Path) -> Result<GtidSet, BackupError> {
    let mut f = tokio::fs::File::open(path)
        .await
        .map_err(|e| BackupError::Failed(format!("opening {}: {e}", path.display())))?;
    let mut head = vec![0u8; 1 << 20];
    let mut filled = 0;
    loop {
        let n = f.read(&mut head[filled..]).await.map_err(|e| BackupError::Failed(e.to_string()))?;
        if n == 0 || filled + n == head.len() {
            filled += n;
            break;
        }
        filled += n;
    }
    head.truncate(filled);
    let scan =
        binlog::scan(&head, 0, None).map_err(|e| BackupError::Failed(format!("{}: {e}", path.display())))?;
    Ok(scan.start_state.unwrap_or_default())
}
