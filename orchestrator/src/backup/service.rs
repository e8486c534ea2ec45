//! The peer's backup side (the shell around the pure modules): one per peer, for every
//! cluster with `[clusters.aws]`. It reads the catalog from the bucket, takes backups
//! of its co-located server when the leader asks (under the fenced `backup_lock`, with
//! the server downtimed and the downtime renewed while the copy runs), deletes and
//! verifies them; `restore.rs` restores onto the co-located server, `archiver.rs`
//! archives the co-located master's binary logs, `maintenance.rs` runs the schedule
//! and retention on the leader.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use futures::StreamExt;
use mysql_async::prelude::Queryable;
use tokio::io::AsyncRead;

use super::archive::{resolve_index, Segment};
use super::catalog::{self, Listing};
use super::jobs::{Job, JobView, Jobs};
use super::manifest::{self, BackupKind, Layout, Lsn, Manifest, Method, Part};
use super::parts::EncryptionKey;
use super::pipeline::{self, PipelineError, PipelineSettings};
use super::store::{ObjectStore, S3Store, StoreError};
use super::tools::{self, MysqlPrograms};
use crate::auth::{Caller, Identity, Scope};
use crate::aws::lease::{LeaseAccess, LeaseTable};
use crate::aws::AwsError;
use crate::config::Config;
use crate::discovery::DiscoveryHandle;
use crate::metrics::Metrics;
use crate::mysql::credentials::Credentials;
use crate::ops::{OpError, Operation, Operations};
use crate::raft::RaftNode;
use crate::topology::gtid::GtidSet;
use crate::topology::InstanceKey;

/// The audit's name for what backups do by themselves (downtimes, scheduled backups).
pub const BACKUP_IDENTITY: &str = "orchestrator:backup";
pub const BACKUP_LOCK: &str = "backup_lock";
pub const ARCHIVE_LOCK: &str = "binlog_archive_lock";
/// The source's downtime lasts this long past each renewal.
const DOWNTIME_S: u64 = 120;
/// Index entries and manifests fetched at once.
const READ_CONCURRENCY: usize = 16;

/// Why backup work failed or was refused, in one line.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BackupError {
    #[error("refused: {0}")]
    Refused(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Failed(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
    #[error(transparent)]
    Aws(#[from] AwsError),
    #[error(transparent)]
    Plan(#[from] catalog::PlanError),
}

impl From<BackupError> for OpError {
    fn from(e: BackupError) -> Self {
        match e {
            BackupError::Refused(m) => OpError::Refused(m),
            BackupError::NotFound(m) => OpError::NotFound(m),
            BackupError::Plan(p) => OpError::Refused(p.to_string()),
            other => OpError::Failed(other.to_string()),
        }
    }
}

/// One cluster's bucket and lock items.
pub struct ClusterBackups {
    pub alias: String,
    pub cluster_id: String,
    pub layout: Layout,
    pub store: Arc<S3Store>,
    pub backup_lock: LeaseTable,
    pub archive_lock: LeaseTable,
}

/// What the bucket holds for one cluster.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    pub manifests: Vec<Manifest>,
    /// Backups with objects but no manifest.
    pub incomplete: Vec<(BackupKind, String)>,
    pub segments: Vec<Segment>,
    /// Index entries not yet folded into a chunk.
    pub loose_entries: usize,
}

impl Catalog {
    pub fn listing(&self) -> Listing {
        catalog::listing(&self.manifests, &self.segments, self.incomplete.clone())
    }
}

/// What a leader asks the source's peer to start.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct BackupRequest {
    pub cluster: String,
    /// `None`: an incremental when one can be taken, else a full.
    pub kind: Option<BackupKind>,
    pub source: InstanceKey,
    /// Who asked (a token name, or `orchestrator:backup` for the schedule).
    pub requested_by: String,
}

/// The facts of a server the backup code needs.
#[derive(Debug, Clone)]
pub struct ServerFacts {
    pub version: String,
    pub mariadb: bool,
    pub datadir: PathBuf,
    pub socket: Option<PathBuf>,
    pub log_bin_basename: Option<PathBuf>,
    /// Which copy of the data the server runs on ([`data_incarnation`]); empty
    /// when it cannot be read.
    pub incarnation: String,
}

/// Names one incarnation of a data directory: the system tablespace's inode and
/// birth time. A server re-seeded (restored, cloned, bootstrapped again) at the same
/// address has another, so an incremental is never taken on a parent whose LSNs
/// belong to other data. Empty when the file cannot be read here.
pub fn data_incarnation(datadir: &Path) -> String {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = std::fs::metadata(datadir.join("ibdata1")) else { return String::new() };
    let born = meta
        .created()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{}-{}-{born}", meta.dev(), meta.ino())
}

impl ServerFacts {
    pub fn flavor(&self) -> &'static str {
        if self.mariadb {
            "mariadb"
        } else {
            "mysql"
        }
    }
}

/// Runs one query that answers one row of text columns.
pub async fn query_row(conn: &mut mysql_async::Conn, sql: &str) -> Result<Vec<Option<String>>, BackupError> {
    let row: Option<mysql_async::Row> =
        conn.query_first(sql).await.map_err(|e| BackupError::Failed(format!("{sql}: {e}")))?;
    let Some(row) = row else { return Ok(Vec::new()) };
    Ok((0..row.len())
        .map(|i| {
            row.as_ref(i).and_then(|v| match v {
                mysql_async::Value::NULL => None,
                mysql_async::Value::Bytes(b) => Some(String::from_utf8_lossy(b).into_owned()),
                other => Some(other.as_sql(true).trim_matches('\'').to_string()),
            })
        })
        .collect())
}

pub async fn server_facts(conn: &mut mysql_async::Conn) -> Result<ServerFacts, BackupError> {
    let row = query_row(conn, "SELECT @@version, @@datadir, @@socket, @@log_bin_basename").await?;
    let text = |i: usize| row.get(i).cloned().flatten().unwrap_or_default();
    let version = text(0);
    let datadir = PathBuf::from(text(1));
    Ok(ServerFacts {
        mariadb: version.contains("MariaDB"),
        version,
        incarnation: data_incarnation(&datadir),
        datadir,
        socket: row.get(2).cloned().flatten().filter(|s| !s.is_empty()).map(PathBuf::from),
        log_bin_basename: row.get(3).cloned().flatten().filter(|s| !s.is_empty()).map(PathBuf::from),
    })
}

/// The server's executed set as its binary log has it (MariaDB `@@gtid_binlog_pos`).
pub async fn executed_set(conn: &mut mysql_async::Conn, mariadb: bool) -> Result<GtidSet, BackupError> {
    let sql = if mariadb { "SELECT @@gtid_binlog_pos" } else { "SELECT @@gtid_executed" };
    let row = query_row(conn, sql).await?;
    let text = row.first().cloned().flatten().unwrap_or_default();
    GtidSet::parse(&text).map_err(|e| BackupError::Failed(format!("{sql}: {e}")))
}

/// [`directory_size`] off the async threads (a data directory may hold many files).
pub async fn directory_size_of(dir: &Path) -> u64 {
    let dir = dir.to_path_buf();
    tokio::task::spawn_blocking(move || directory_size(&dir)).await.unwrap_or(0)
}

/// Bytes under `dir` (an estimate of a copy's size).
pub fn directory_size(dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else { continue };
        for e in entries.flatten() {
            match e.metadata() {
                Ok(m) if m.is_dir() => stack.push(e.path()),
                Ok(m) => total += m.len(),
                Err(_) => {}
            }
        }
    }
    total
}

/// The backup side of one peer.
pub struct BackupService {
    pub node_id: u64,
    pub http: String,
    pub(crate) config: Arc<Config>,
    pub(crate) clusters: BTreeMap<String, ClusterBackups>,
    pub(crate) key: Option<Arc<EncryptionKey>>,
    pub(crate) credentials: Arc<Credentials>,
    pub(crate) local: Option<InstanceKey>,
    pub(crate) programs: MysqlPrograms,
    pub jobs: Jobs,
    pub(crate) raft: Arc<RaftNode>,
    pub(crate) discovery: DiscoveryHandle,
    pub(crate) ops: OnceLock<Operations>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) work_dir: PathBuf,
    /// Per cluster: the archiver's state on this peer, the leader's last maintenance.
    pub(crate) archive_status: Mutex<BTreeMap<String, super::archiver::ArchiveStatus>>,
    pub(crate) maintenance_status: Mutex<BTreeMap<String, super::maintenance::MaintenanceStatus>>,
    /// A restore onto this peer's server is running (one at a time).
    pub(crate) restoring: std::sync::atomic::AtomicBool,
}

impl BackupService {
    /// The service for `config` (backups must be enabled); reads the encryption key.
    #[allow(clippy::too_many_arguments)]
    pub async fn new(
        config: Arc<Config>,
        clients: &crate::aws::AwsClients,
        credentials: Arc<Credentials>,
        raft: Arc<RaftNode>,
        discovery: DiscoveryHandle,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<Arc<BackupService>> {
        let b = &config.backup;
        let settings = config.aws.connect_settings();
        let mut clusters = BTreeMap::new();
        let managed = config
            .clusters
            .iter()
            .filter_map(|c| c.aws.as_ref().map(|a| (c.alias.clone(), a.cluster_id.clone(), a.table_name())));
        let restore_only = b.restore_from.iter().map(|r| {
            let table = r.table.clone().unwrap_or_else(|| format!("{}-orchestrator", r.cluster_id));
            (r.alias.clone(), r.cluster_id.clone(), table)
        });
        for (alias, cluster_id, table) in managed.chain(restore_only) {
            let bucket = b.bucket_name(&cluster_id);
            let store =
                S3Store::connect(&settings, None, &bucket, Duration::from_secs(b.call_timeout_s)).await;
            clusters.insert(
                alias.clone(),
                ClusterBackups {
                    alias,
                    layout: Layout::new(&cluster_id),
                    cluster_id,
                    store: Arc::new(store),
                    backup_lock: LeaseTable::new(clients.dynamodb.clone(), &table, BACKUP_LOCK),
                    archive_lock: LeaseTable::new(clients.dynamodb.clone(), &table, ARCHIVE_LOCK),
                },
            );
        }
        let key = match (&b.encryption_key_secret, &b.encryption_key_file) {
            (Some(secret), _) => {
                let text = clients.secret_string(secret).await.map_err(|e| {
                    anyhow::anyhow!("reading the backup encryption key from secret {secret}: {e}")
                })?;
                Some(Arc::new(
                    EncryptionKey::parse(&text).map_err(|e| anyhow::anyhow!("secret {secret}: {e}"))?,
                ))
            }
            (None, Some(file)) => {
                let text = std::fs::read_to_string(file).map_err(|e| {
                    anyhow::anyhow!("reading backup.encryption_key_file {}: {e}", file.display())
                })?;
                Some(Arc::new(
                    EncryptionKey::parse(&text).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?,
                ))
            }
            (None, None) => None,
        };
        let http =
            config.this_peer().map(|p| p.http.clone()).unwrap_or_else(|| config.http_listen.to_string());
        // What a previous run left (a backup stopped with its process): nothing in it
        // is resumed.
        let work_dir = b.work_dir(&config.data_dir);
        if work_dir.exists() {
            let stale = work_dir.clone();
            let _ = tokio::task::spawn_blocking(move || std::fs::remove_dir_all(&stale)).await;
        }
        Ok(Arc::new(BackupService {
            node_id: config.node_id,
            http,
            local: config.local_instance(),
            programs: MysqlPrograms { mysql_root: b.mysql_root.clone() },
            work_dir,
            clusters,
            key,
            credentials,
            jobs: Jobs::default(),
            raft,
            discovery,
            ops: OnceLock::new(),
            metrics,
            archive_status: Mutex::default(),
            maintenance_status: Mutex::default(),
            restoring: std::sync::atomic::AtomicBool::new(false),
            config,
        }))
    }

    /// Operations (for the downtimes backups take) are made after this service.
    pub fn set_operations(&self, ops: Operations) {
        let _ = self.ops.set(ops);
    }

    pub fn cluster(&self, alias: &str) -> Result<&ClusterBackups, BackupError> {
        self.clusters.get(alias).ok_or_else(|| {
            BackupError::NotFound(format!(
                "cluster {alias} has no backups here (backups need [clusters.aws] and [backup] enabled)"
            ))
        })
    }

    pub fn cluster_aliases(&self) -> Vec<String> {
        self.clusters.keys().cloned().collect()
    }

    pub(crate) fn pipeline_settings(&self) -> PipelineSettings {
        let b = &self.config.backup;
        PipelineSettings {
            part_size: (b.part_size_mb as usize) << 20,
            concurrency: b.concurrency,
            compression_level: b.compression_level,
            key: self.key.clone(),
        }
    }

    pub(crate) fn copy_tools(&self) -> super::materialize::CopyTools {
        let b = &self.config.backup;
        super::materialize::CopyTools {
            mariadb_backup: b.mariadb_backup.clone(),
            mbstream: b.mbstream.clone(),
            xtrabackup: b.xtrabackup.clone(),
            xbstream: b.xbstream.clone(),
            settings: self.pipeline_settings(),
        }
    }

    pub(crate) fn caller(&self) -> Caller {
        Caller {
            identity: Identity { name: BACKUP_IDENTITY.into(), scope: Scope::Admin },
            from: format!("peer {}", self.node_id),
            peer: self.node_id,
        }
    }

    /// Connects to `key` as the backup account.
    pub(crate) async fn connect_backup_user(
        &self,
        key: &InstanceKey,
    ) -> Result<mysql_async::Conn, BackupError> {
        let user = self.config.donor.backup_user.clone();
        crate::mysql::connect_with(&self.credentials, key, &user, |p| &p.backup, Duration::from_secs(5))
            .await
            .map_err(|e| BackupError::Failed(format!("connecting to {key} as {user}: {e}")))
    }

    /// Connects to `key` as the orchestrator's own account.
    pub(crate) async fn connect_orchestrator(
        &self,
        key: &InstanceKey,
    ) -> Result<mysql_async::Conn, BackupError> {
        let user = self.config.mysql.user.clone();
        crate::mysql::connect_with(&self.credentials, key, &user, |p| &p.orchestrator, Duration::from_secs(5))
            .await
            .map_err(|e| BackupError::Failed(format!("connecting to {key} as {user}: {e}")))
    }

    /// Everything the bucket holds for `cluster`.
    pub async fn catalog(&self, cluster: &str) -> Result<Catalog, BackupError> {
        let c = self.cluster(cluster)?;
        let (manifests, incomplete) = super::materialize::read_manifests(&c.store, &c.layout).await?;
        let (segments, loose_entries) = self.read_index(c).await?;
        Ok(Catalog { manifests, incomplete, segments, loose_entries })
    }

    /// The archive's index: chunks and loose entries, resolved. The archiver folds loose
    /// entries into a chunk (chunk written first, entries deleted after) and retention
    /// deletes entries, both while this reads: an object listed but gone by the time it
    /// is read means the listing is stale, so the index is listed again.
    pub(crate) async fn read_index(&self, c: &ClusterBackups) -> Result<(Vec<Segment>, usize), BackupError> {
        const ATTEMPTS: usize = 5;
        let mut attempt = 0;
        loop {
            attempt += 1;
            match read_index_once(&c.store, &c.layout).await? {
                IndexRead::Complete { segments, loose } => return Ok((segments, loose)),
                IndexRead::Vanished(key) if attempt >= ATTEMPTS => {
                    return Err(BackupError::Failed(format!(
                        "s3://{}/{key} vanished while reading the binlog index, {ATTEMPTS} times in a row",
                        c.store.bucket()
                    )));
                }
                IndexRead::Vanished(key) => {
                    tracing::debug!(%key, attempt, "a binlog index object went while it was read; listing again");
                }
            }
        }
    }

    /// Starts a backup of this peer's server (asked by the leader): takes the
    /// `backup_lock` first, so a second backup is refused here, at once.
    pub async fn start_backup(self: &Arc<Self>, request: BackupRequest) -> Result<JobView, BackupError> {
        let c = self.cluster(&request.cluster)?;
        if self.local.as_ref() != Some(&request.source) {
            return Err(BackupError::Refused(format!(
                "peer {} runs beside {}, not {}",
                self.node_id,
                self.local.as_ref().map(ToString::to_string).unwrap_or_else(|| "no server".into()),
                request.source
            )));
        }
        let plan = self.plan_backup(&request).await?;
        let (id, started_ms) = self.unused_id(c).await?;
        let kind_text = if plan.parent.is_some() { "incremental" } else { "full" };
        // One holder per attempt: a second backup asked of the same peer is another
        // holder (and is refused while this one runs).
        let holder =
            format!("peer {} ({}) attempt {:08x}", self.node_id, request.source, rand::random::<u32>());
        let detail =
            format!("{kind_text} backup {id} of {} asked by {}", request.source, request.requested_by);
        let lease = Duration::from_secs(self.config.backup.lock_lease_s);
        let lock = match c.backup_lock.try_take(&holder, lease, &detail).await? {
            Ok(lock) => lock,
            Err(LeaseAccess::Held { by, since, until, detail }) => {
                return Err(BackupError::Refused(format!(
                    "another backup is running: {} (held by {by} since {}; if its holder died the lock expires at {})",
                    if detail.is_empty() { "no details".to_string() } else { detail },
                    manifest::format_millis(since * 1000),
                    manifest::format_millis(until * 1000)
                )))
            }
            Err(LeaseAccess::Take { .. }) => {
                return Err(BackupError::Refused("another backup took the lock at the same moment".into()))
            }
        };
        let held = crate::aws::lease::HeldLease::start(c.backup_lock.clone(), lock, lease);
        let job = self.jobs.start(
            &format!("backup {kind_text}"),
            &request.cluster,
            &request.source.to_string(),
            self.node_id,
            &self.http,
        );
        job.set_backup_id(&id);
        let this = self.clone();
        let running = job.clone();
        tokio::spawn(async move {
            let outcome = this.run_backup(&running, &request, plan, &id, started_ms, &held).await;
            let lease = held.stop().await;
            if let Ok(c) = this.cluster(&request.cluster) {
                if let Err(e) = c.backup_lock.release(&lease).await {
                    tracing::warn!(error = %e, "releasing the backup lock failed (it expires by itself)");
                }
            }
            match outcome {
                Ok(m) => {
                    this.metrics.backup_finished(
                        &request.cluster,
                        m.kind.name(),
                        true,
                        m.duration_ms(),
                        m.stored_bytes,
                    );
                    running.finish(Ok(format!(
                        "{} backup {} of {}: {} in {} parts ({} stored), {:.1} s",
                        m.kind,
                        m.id,
                        m.source,
                        human_bytes(m.raw_bytes),
                        m.parts.len(),
                        human_bytes(m.stored_bytes),
                        m.duration_ms() as f64 / 1000.0
                    )))
                }
                Err(e) => {
                    this.metrics.backup_finished(&request.cluster, kind_text, false, 0, 0);
                    tracing::warn!(cluster = %request.cluster, error = %e, "backup failed");
                    running.finish(Err(e.to_string()))
                }
            }
        });
        Ok(job.view())
    }

    /// A backup id no object in the bucket has yet (ids are start times to the second:
    /// a backup that ended this second has the current one), with its time.
    async fn unused_id(&self, c: &ClusterBackups) -> Result<(String, i64), BackupError> {
        loop {
            let now = crate::unix_millis_now();
            let id = manifest::backup_id(now);
            let mut used = false;
            for kind in [BackupKind::Full, BackupKind::Incremental] {
                used |= !c.store.list(&c.layout.backup_prefix(kind, &id)).await?.is_empty();
            }
            if !used {
                return Ok((id, now));
            }
            tokio::time::sleep(Duration::from_millis((1000 - now.rem_euclid(1000)) as u64 + 5)).await;
        }
    }

    /// Keeps `source` downtimed while `work` runs (renewed every third of the
    /// downtime), and ends the downtime after. The master is never downtimed (that
    /// would hold up its failover for the backup's length), and neither is an
    /// instance an operator downtimed: their downtime is left as it is. A renewal or
    /// the end touches the downtime only while it is still the backup's own.
    async fn downtimed<T>(
        &self,
        cluster: &str,
        source: &InstanceKey,
        reason: &str,
        work: impl std::future::Future<Output = Result<T, BackupError>>,
    ) -> Result<T, BackupError> {
        let ops = self.ops.get().ok_or_else(|| BackupError::Failed("operations are not ready".into()))?;
        if ops.is_master(cluster, source) {
            tracing::info!(instance = %source, "backing up the master: it is not downtimed");
            return work.await;
        }
        let ours =
            |d: &Option<crate::state::Downtime>| d.as_ref().is_some_and(|d| d.owner == BACKUP_IDENTITY);
        let now = crate::unix_millis_now();
        if let Some(d) =
            ops.downtime_of(source).filter(|d| d.owner != BACKUP_IDENTITY && d.until_unix_ms > now)
        {
            tracing::info!(instance = %source, owner = %d.owner, "the backup's source is already downtimed; that downtime is left as it is");
            return work.await;
        }
        let begin = || Operation::BeginDowntime {
            instance: source.clone(),
            duration_s: DOWNTIME_S,
            reason: reason.to_string(),
        };
        let caller = self.caller();
        ops.run_boxed(&caller, begin())
            .await
            .map_err(|e| BackupError::Refused(format!("cannot downtime {source} for the backup: {e}")))?;
        let renew = async {
            loop {
                tokio::time::sleep(Duration::from_secs(DOWNTIME_S / 3)).await;
                if !ours(&ops.downtime_of(source)) {
                    tracing::info!(instance = %source, "the backup's downtime was ended or replaced by an operator: no longer renewed");
                    std::future::pending::<()>().await;
                }
                if let Err(e) = ops.run_boxed(&caller, begin()).await {
                    tracing::warn!(instance = %source, error = %e, "renewing the backup's downtime failed");
                }
            }
        };
        let result = tokio::select! {
            r = work => r,
            _ = renew => unreachable!("the renewal loop never ends"),
        };
        if ours(&ops.downtime_of(source)) {
            if let Err(e) = ops.run_boxed(&caller, Operation::EndDowntime { instance: source.clone() }).await
            {
                tracing::warn!(instance = %source, error = %e, "ending the backup's downtime failed (it ends by itself)");
            }
        }
        result
    }

    /// What a backup of this peer's server will be: refusals come here, before the
    /// lock and any job.
    async fn plan_backup(&self, request: &BackupRequest) -> Result<BackupPlan, BackupError> {
        let catalog = self.catalog(&request.cluster).await?;
        let mut conn = self.connect_orchestrator(&request.source).await?;
        let facts = server_facts(&mut conn).await?;
        drop(conn);
        let method = match self.config.backup.method().map_err(BackupError::Failed)? {
            Some(m) => m,
            None if facts.mariadb => Method::MariadbBackup,
            None => Method::Clone,
        };
        let parent = match request.kind {
            Some(BackupKind::Full) => None,
            Some(BackupKind::Incremental) if !method.incremental() => {
                return Err(BackupError::Refused(format!(
                    "the {} method takes full copies only; the binlog archive covers the time between them",
                    method.name()
                )))
            }
            Some(BackupKind::Incremental) => Some(
                catalog::incremental_parent(&catalog.manifests, &request.source.to_string(), &facts.incarnation)
                    .cloned()
                    .ok_or_else(|| {
                        BackupError::Refused(format!(
                            "no complete backup of {} as its data is now to take an incremental on: take a full one first",
                            request.source
                        ))
                    })?,
            ),
            None if method.incremental() => {
                catalog::incremental_parent(&catalog.manifests, &request.source.to_string(), &facts.incarnation)
                    .cloned()
            }
            None => None,
        };
        if let Some(p) = &parent {
            if p.flavor != facts.flavor() {
                return Err(BackupError::Refused(format!(
                    "the newest backup {} is of {}, this server runs {}: take a full backup",
                    p.id,
                    p.flavor,
                    facts.flavor()
                )));
            }
        }
        Ok(BackupPlan { facts, method, parent })
    }

    #[allow(clippy::too_many_arguments)]
    async fn run_backup(
        self: &Arc<Self>,
        job: &Arc<Job>,
        request: &BackupRequest,
        plan: BackupPlan,
        id: &str,
        started_ms: i64,
        held: &crate::aws::lease::HeldLease,
    ) -> Result<Manifest, BackupError> {
        let c = self.cluster(&request.cluster)?;
        let BackupPlan { facts, method, parent } = plan;
        let kind = if parent.is_some() { BackupKind::Incremental } else { BackupKind::Full };
        let prefix = c.layout.backup_prefix(kind, id);
        let reason = format!("{kind} backup {id}");
        let copied = self
            .downtimed(&request.cluster, &request.source, &reason, async {
                held.check().map_err(|e| BackupError::Failed(e.to_string()))?;
                let mut lost = held.lost();
                let copy = self.copy(job, c, &request.source, &facts, method, parent.as_ref(), &prefix, id);
                tokio::select! {
                    r = copy => r,
                    _ = lost.wait_for(|l| l.is_some()) => Err(BackupError::Failed(
                        "the backup lock was lost (its renewals failed past the lease): backup stopped".into(),
                    )),
                }
            })
            .await;
        let copied = match copied {
            Ok(c) => c,
            Err(e) => {
                job.phase("removing the parts of the failed backup");
                self.delete_prefix(c, &prefix).await;
                return Err(e);
            }
        };
        job.phase("writing the manifest");
        held.check().map_err(|e| BackupError::Failed(e.to_string()))?;
        let m = Manifest {
            format: manifest::MANIFEST_FORMAT,
            id: id.to_string(),
            cluster_id: c.cluster_id.clone(),
            kind,
            method,
            parent: parent.as_ref().map(|p| p.id.clone()),
            flavor: facts.flavor().into(),
            server_version: facts.version.clone(),
            source: request.source.to_string(),
            incarnation: facts.incarnation.clone(),
            gtid_executed: copied.gtid_executed,
            gtid_at_least: copied.gtid_at_least,
            gtid_position_text: copied.gtid_text,
            lsn: copied.lsn,
            consistent_at_ms: copied.consistent_at_ms,
            started_at_ms: started_ms,
            finished_at_ms: crate::unix_millis_now(),
            stream_format: method.stream_format().into(),
            compression: "zstd".into(),
            compression_level: self.config.backup.compression_level,
            encryption: self.key.as_ref().map(|k| k.describe()),
            raw_bytes: copied.parts.iter().map(|p| p.raw_bytes).sum(),
            stored_bytes: copied.parts.iter().map(|p| p.stored_bytes).sum(),
            parts: copied.parts,
            staged_locally: method.staged_locally(),
        };
        if let Err(e) = c.store.put(&c.layout.manifest_key(kind, id), m.to_json()).await {
            self.delete_prefix(c, &prefix).await;
            return Err(e.into());
        }
        tracing::info!(cluster = %request.cluster, id, %kind, source = %request.source, bytes = m.stored_bytes, "backup complete");
        Ok(m)
    }

    /// Removes every object under `prefix` (a failed backup's parts).
    pub(crate) async fn delete_prefix(&self, c: &ClusterBackups, prefix: &str) {
        let keys = match c.store.list(prefix).await {
            Ok(objects) => objects.into_iter().map(|o| o.key).collect::<Vec<_>>(),
            Err(e) => {
                tracing::warn!(prefix, error = %e, "cannot list the parts to remove");
                return;
            }
        };
        if let Err(e) = c.store.delete(&keys).await {
            tracing::warn!(prefix, error = %e, "cannot remove the parts (retention removes them later)");
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn copy(
        &self,
        job: &Arc<Job>,
        c: &ClusterBackups,
        source: &InstanceKey,
        facts: &ServerFacts,
        method: Method,
        parent: Option<&Manifest>,
        prefix: &str,
        id: &str,
    ) -> Result<Copied, BackupError> {
        let work = self.work_dir.join(id);
        let _ = std::fs::remove_dir_all(&work);
        std::fs::create_dir_all(&work).map_err(|e| {
            BackupError::Failed(format!("cannot make work directory {}: {e}", work.display()))
        })?;
        let result = match method {
            Method::MariadbBackup | Method::Xtrabackup => {
                self.copy_with_tool(job, c, source, facts, method, parent, prefix, &work).await
            }
            Method::Clone => self.copy_with_clone(job, c, source, facts, prefix, id).await,
        };
        let _ = std::fs::remove_dir_all(&work);
        result
    }

    #[allow(clippy::too_many_arguments)]
    async fn copy_with_tool(
        &self,
        job: &Arc<Job>,
        c: &ClusterBackups,
        source: &InstanceKey,
        facts: &ServerFacts,
        method: Method,
        parent: Option<&Manifest>,
        prefix: &str,
        work: &Path,
    ) -> Result<Copied, BackupError> {
        let b = &self.config.backup;
        let (program, section) = match method {
            Method::Xtrabackup => (b.xtrabackup.clone(), "xtrabackup"),
            _ => (b.mariadb_backup.clone(), "mariadb-backup"),
        };
        let password = self.credentials.current().backup.clone();
        if password.is_empty() {
            return Err(BackupError::Failed(
                "no password for the backup account (the credentials secret's `backup`, or [mysql] backup_password)".into(),
            ));
        }
        let io = |what: &str, e: std::io::Error| BackupError::Failed(format!("{what}: {e}"));
        let options = work.join("backup.cnf");
        let text = tools::option_file(
            section,
            self.config.donor.server_options.as_deref(),
            Some(source),
            None,
            &self.config.donor.backup_user,
            &password,
        );
        tools::write_private(&options, &text).map_err(|e| io("writing the tool's option file", e))?;
        let (target, lsn_dir) = (work.join("target"), work.join("lsn"));
        for d in [&target, &lsn_dir] {
            std::fs::create_dir_all(d).map_err(|e| io("making the tool's directories", e))?;
        }
        let from_lsn = parent.and_then(|p| p.lsn).map(|l| l.to);
        let args = tools::backup_arguments(
            &options,
            Some(&facts.datadir),
            &target,
            &lsn_dir,
            from_lsn,
            b.tool_parallel,
            b.tool_throttle,
        );
        if parent.is_none() {
            job.set_total(directory_size_of(&facts.datadir).await);
        }
        let log_path = work.join("tool.log");
        let log = std::fs::File::create(&log_path).map_err(|e| io("creating the tool's log", e))?;
        job.phase(format!("copying {} with {}", source, method.name()));
        let mut child = tokio::process::Command::new(&program)
            .args(&args)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::from(log))
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| BackupError::Failed(format!("cannot start {}: {e}", program.display())))?;
        let stdout = child.stdout.take().expect("stdout is piped");
        tools::widen_pipe(std::os::fd::AsRawFd::as_raw_fd(&stdout));
        let uploaded = self.upload(job, c, prefix, stdout).await;
        let status = match &uploaded {
            Ok(_) => child.wait().await.map_err(|e| io("waiting for the tool", e))?,
            Err(_) => {
                let _ = child.kill().await;
                return Err(uploaded.expect_err("an error"));
            }
        };
        if !status.success() {
            return Err(BackupError::Failed(format!(
                "{} failed ({status}): {}",
                method.name(),
                crate::donor::last_error_line(&log_path)
            )));
        }
        let parts = uploaded?;
        let read = |name: &str| {
            std::fs::read_to_string(lsn_dir.join(name))
                .map_err(|e| BackupError::Failed(format!("the tool left no {name}: {e}")))
        };
        let lsn: Lsn =
            manifest::parse_checkpoints(&read("xtrabackup_checkpoints")?).map_err(BackupError::Failed)?;
        let info = read("xtrabackup_info")?;
        // Without the position a restore could not say which transactions to replay.
        let gtid_text = manifest::parse_info_gtid(&info).ok_or_else(|| {
            BackupError::Failed(format!(
                "{} recorded no binlog_pos (GTID position) in xtrabackup_info: is the binary log on, with GTIDs?",
                method.name()
            ))
        })?;
        let gtid_executed = GtidSet::parse(&gtid_text)
            .map_err(|e| BackupError::Failed(format!("xtrabackup_info's GTID position: {e}")))?;
        Ok(Copied {
            parts,
            gtid_executed,
            gtid_at_least: None,
            gtid_text,
            lsn: Some(lsn),
            consistent_at_ms: crate::unix_millis_now(),
        })
    }

    async fn copy_with_clone(
        &self,
        job: &Arc<Job>,
        c: &ClusterBackups,
        source: &InstanceKey,
        facts: &ServerFacts,
        prefix: &str,
        id: &str,
    ) -> Result<Copied, BackupError> {
        let parent = facts.datadir.parent().unwrap_or(Path::new("/")).to_path_buf();
        let dir = parent.join(format!(".orchestrator-clone-{id}"));
        // A clone left by a killed peer (only one backup runs at a time: the lock).
        let stale: Vec<PathBuf> = std::fs::read_dir(&parent)
            .map(|entries| {
                entries
                    .flatten()
                    .filter(|e| e.file_name().to_string_lossy().starts_with(".orchestrator-clone-"))
                    .map(|e| e.path())
                    .collect()
            })
            .unwrap_or_default();
        for old in stale {
            tracing::info!(dir = %old.display(), "removing a clone a stopped backup left");
            let removed = old.clone();
            tokio::task::spawn_blocking(move || std::fs::remove_dir_all(&removed))
                .await
                .map_err(|e| BackupError::Failed(format!("removing an old clone: {e}")))?
                .map_err(|e| BackupError::Failed(format!("removing an old clone {}: {e}", old.display())))?;
        }
        let mut conn = self.connect_backup_user(source).await?;
        let before = executed_set(&mut conn, false).await?;
        job.phase(format!("cloning {source} into {} (staged locally)", dir.display()));
        let mut progress_conn = self.connect_backup_user(source).await?;
        let clone = conn.query_drop(tools::clone_statement(&dir));
        let watch = async {
            loop {
                tokio::time::sleep(Duration::from_millis(250)).await;
                let row: Option<(Option<u64>, Option<u64>)> = progress_conn
                    .query_first("SELECT SUM(ESTIMATE), SUM(DATA) FROM performance_schema.clone_progress")
                    .await
                    .unwrap_or(None);
                if let Some((Some(estimate), _)) = row {
                    job.set_total(estimate);
                }
            }
        };
        let cloned = tokio::select! {
            r = clone => r,
            _ = watch => unreachable!("the progress loop never ends"),
        };
        if let Err(e) = cloned {
            let _ = std::fs::remove_dir_all(&dir);
            return Err(BackupError::Failed(format!("CLONE LOCAL DATA DIRECTORY on {source}: {e}")));
        }
        let after = executed_set(&mut conn, false).await?;
        let consistent_at_ms = crate::unix_millis_now();
        drop(conn);
        job.set_total(directory_size_of(&dir).await);
        job.phase(format!("streaming the clone of {source} to S3, each file removed once read"));
        let (reader, writer) = tokio::io::duplex(1 << 20);
        let tar_dir = dir.clone();
        let tar = tokio::task::spawn_blocking(move || stream_tar(&tar_dir, writer));
        let uploaded = self.upload(job, c, prefix, reader).await;
        let tarred = tar.await.map_err(|e| BackupError::Failed(format!("tar stream: {e}")))?;
        let _ = std::fs::remove_dir_all(&dir);
        let parts = uploaded?;
        tarred.map_err(|e| BackupError::Failed(format!("streaming the clone directory: {e}")))?;
        Ok(Copied {
            parts,
            gtid_text: after.to_string(),
            gtid_executed: after,
            gtid_at_least: Some(before),
            lsn: None,
            consistent_at_ms,
        })
    }

    async fn upload<R: AsyncRead + Unpin + Send>(
        &self,
        job: &Arc<Job>,
        c: &ClusterBackups,
        prefix: &str,
        reader: R,
    ) -> Result<Vec<Part>, BackupError> {
        let progress = job.stream();
        Ok(pipeline::upload(c.store.clone(), prefix, reader, &self.pipeline_settings(), progress).await?)
    }

    /// Deletes a backup: its manifest first (it stops counting as complete at once),
    /// then its parts. Refused while a kept backup needs it.
    pub async fn delete(&self, cluster: &str, id: &str) -> Result<String, BackupError> {
        let c = self.cluster(cluster)?;
        // A running backup may be taking an incremental on the one named, or be it.
        let now_s = crate::unix_millis_now() / 1000;
        if let Some(l) = c.backup_lock.read().await?.filter(|l| l.expires_at > now_s) {
            return Err(BackupError::Refused(format!(
                "a backup is running ({}, held by {} since {}): delete when it ends",
                if l.detail.is_empty() { "no details" } else { l.detail.as_str() },
                l.holder,
                manifest::format_millis(l.started_at * 1000)
            )));
        }
        let catalog = self.catalog(cluster).await?;
        let Some(m) = catalog.manifests.iter().find(|m| m.id == id) else {
            if let Some((kind, _)) = catalog.incomplete.iter().find(|(_, i)| i == id) {
                self.delete_prefix(c, &c.layout.backup_prefix(*kind, id)).await;
                return Ok(format!("removed the parts of incomplete backup {id}"));
            }
            return Err(BackupError::NotFound(format!("no backup {id} in cluster {cluster}")));
        };
        let dependents: Vec<&str> = catalog
            .manifests
            .iter()
            .filter(|d| d.parent.as_deref() == Some(id))
            .map(|d| d.id.as_str())
            .collect();
        if !dependents.is_empty() {
            return Err(BackupError::Refused(format!(
                "backup {id} is the parent of {}: delete those first",
                dependents.join(", ")
            )));
        }
        c.store.delete(&[c.layout.manifest_key(m.kind, id)]).await?;
        self.delete_prefix(c, &c.layout.backup_prefix(m.kind, id)).await;
        Ok(format!("deleted {} backup {id} ({})", m.kind, human_bytes(m.stored_bytes)))
    }

    /// Checks every part of a backup (size, SHA-256, and that it opens and
    /// decompresses), without restoring; a job.
    pub async fn start_verify(self: &Arc<Self>, cluster: &str, id: &str) -> Result<JobView, BackupError> {
        let catalog = self.catalog(cluster).await?;
        let m =
            catalog.manifests.iter().find(|m| m.id == id).cloned().ok_or_else(|| {
                BackupError::NotFound(format!("no complete backup {id} in cluster {cluster}"))
            })?;
        super::parts::EncryptionKey::check(self.key.as_deref(), m.encryption.as_ref())
            .map_err(|e| BackupError::Refused(e.to_string()))?;
        let job = self.jobs.start("verify", cluster, &m.source, self.node_id, &self.http);
        job.set_backup_id(id);
        job.set_total(m.raw_bytes);
        let (this, running, cluster) = (self.clone(), job.clone(), cluster.to_string());
        tokio::spawn(async move {
            let outcome = async {
                let c = this.cluster(&cluster)?;
                running.phase(format!("checking {} parts", m.parts.len()));
                let prefix = c.layout.backup_prefix(m.kind, &m.id);
                let problems = pipeline::verify(
                    c.store.clone(),
                    &prefix,
                    &m.parts,
                    &this.pipeline_settings(),
                    true,
                    running.stream(),
                )
                .await;
                if problems.is_empty() {
                    Ok(format!(
                        "backup {}: all {} parts match their checksums and open ({} stored, {} of data)",
                        m.id,
                        m.parts.len(),
                        human_bytes(m.stored_bytes),
                        human_bytes(m.raw_bytes)
                    ))
                } else {
                    let lines: Vec<String> = problems.iter().take(5).map(ToString::to_string).collect();
                    Err(BackupError::Failed(format!(
                        "backup {}: {} of {} parts are bad: {}",
                        m.id,
                        problems.len(),
                        m.parts.len(),
                        lines.join("; ")
                    )))
                }
            }
            .await;
            running.finish(outcome.map_err(|e| e.to_string()));
        });
        Ok(job.view())
    }
}

/// What a backup about to start copies, and how.
struct BackupPlan {
    facts: ServerFacts,
    method: Method,
    /// The backup an incremental applies on (`None`: a full one).
    parent: Option<Manifest>,
}

/// What one copy produced.
struct Copied {
    parts: Vec<Part>,
    gtid_executed: GtidSet,
    gtid_at_least: Option<GtidSet>,
    gtid_text: String,
    lsn: Option<Lsn>,
    consistent_at_ms: i64,
}

/// Writes `dir` as a tar stream into `out`, removing each file once it is in the
/// stream (the clone method's local copy never lives twice on disk).
fn stream_tar(dir: &Path, out: tokio::io::DuplexStream) -> std::io::Result<()> {
    // Large writes into the bridge: each one is a wake-up of the runtime.
    let writer = std::io::BufWriter::with_capacity(1 << 20, tokio_util::io::SyncIoBridge::new(out));
    let mut builder = tar::Builder::new(writer);
    builder.mode(tar::HeaderMode::Complete);
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let abs = dir.join(&rel);
        let mut entries: Vec<_> = std::fs::read_dir(&abs)?.flatten().collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let name = rel.join(e.file_name());
            let meta = e.metadata()?;
            if meta.is_dir() {
                builder.append_dir(&name, e.path())?;
                stack.push(name);
            } else {
                builder.append_path_with_name(e.path(), &name)?;
                std::fs::remove_file(e.path())?;
            }
        }
    }
    let mut writer = builder.into_inner()?.into_inner().map_err(|e| e.into_error())?;
    std::io::Write::flush(&mut writer)?;
    writer.shutdown()?;
    Ok(())
}

/// `1.5 GiB`.
pub fn human_bytes(n: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < units.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", units[unit])
    }
}

/// One pass over the binlog index.
enum IndexRead {
    Complete {
        segments: Vec<Segment>,
        loose: usize,
    },
    /// An object listed was gone when read (folded into a chunk or deleted by retention).
    Vanished(String),
}

async fn read_index_once<S: ObjectStore>(store: &Arc<S>, layout: &Layout) -> Result<IndexRead, BackupError> {
    let objects = store.list(&layout.segment_index_prefix()).await?;
    let loose = objects.iter().filter(|o| !o.key.contains("/chunk-")).count();
    let read: Vec<Result<Result<Vec<Segment>, String>, BackupError>> = futures::stream::iter(objects)
        .map(|o| {
            let store = store.clone();
            async move {
                let bytes = match store.get(&o.key).await {
                    Ok(bytes) => bytes,
                    Err(StoreError::NotFound { .. }) => return Ok(Err(o.key)),
                    Err(e) => return Err(BackupError::from(e)),
                };
                let bad = |e: String| BackupError::Failed(format!("s3://{}/{}: {e}", store.bucket(), o.key));
                if o.key.contains("/chunk-") {
                    serde_json::from_slice::<Vec<Segment>>(&bytes).map(Ok).map_err(|e| bad(e.to_string()))
                } else {
                    Segment::from_json(&bytes).map(|s| Ok(vec![s])).map_err(bad)
                }
            }
        })
        .buffer_unordered(READ_CONCURRENCY)
        .collect()
        .await;
    let mut entries = Vec::new();
    for r in read {
        match r? {
            Ok(segments) => entries.extend(segments),
            Err(vanished) => return Ok(IndexRead::Vanished(vanished)),
        }
    }
    Ok(IndexRead::Complete { segments: resolve_index(entries), loose })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backup::archive::tests::segment;
    use crate::backup::store::ObjectInfo;

    /// A bucket in memory whose first listing of the index is taken just before the
    /// archiver folds its loose entries into a chunk (the chunk is written first, the
    /// entries deleted after), as S3 can show it to a reader.
    struct FoldingBucket {
        objects: Mutex<BTreeMap<String, Vec<u8>>>,
        fold: Mutex<Option<Fold>>,
    }

    /// The chunk written (key, body), then the loose entries deleted.
    struct Fold {
        chunk: String,
        body: Vec<u8>,
        loose: Vec<String>,
    }

    impl ObjectStore for FoldingBucket {
        fn bucket(&self) -> &str {
            "b"
        }
        async fn put(&self, key: &str, body: Vec<u8>) -> Result<(), StoreError> {
            self.objects.lock().unwrap().insert(key.to_string(), body);
            Ok(())
        }
        async fn get(&self, key: &str) -> Result<Vec<u8>, StoreError> {
            self.objects
                .lock()
                .unwrap()
                .get(key)
                .cloned()
                .ok_or_else(|| StoreError::NotFound { bucket: "b".into(), key: key.into() })
        }
        async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StoreError> {
            let mut objects = self.objects.lock().unwrap();
            let listed = objects
                .iter()
                .filter(|(k, _)| k.starts_with(prefix))
                .map(|(k, v)| ObjectInfo { key: k.clone(), size: v.len() as u64 })
                .collect();
            if let Some(Fold { chunk, body, loose }) = self.fold.lock().unwrap().take() {
                objects.insert(chunk, body);
                for key in loose {
                    objects.remove(&key);
                }
            }
            Ok(listed)
        }
        async fn delete(&self, keys: &[String]) -> Result<(), StoreError> {
            let mut objects = self.objects.lock().unwrap();
            for key in keys {
                objects.remove(key);
            }
            Ok(())
        }
    }

    #[tokio::test]
    async fn the_index_is_listed_again_when_a_fold_races_the_read() {
        let layout = Layout::new("c");
        let segments = [segment(1, 1, 1, 5), segment(2, 1, 6, 9)];
        let loose: Vec<String> = segments.iter().map(|s| layout.segment_index_key(s.seq, s.token)).collect();
        let objects = loose.iter().zip(&segments).map(|(k, s)| (k.clone(), s.to_json())).collect();
        let chunk = serde_json::to_vec(&segments).unwrap();
        let bucket = Arc::new(FoldingBucket {
            objects: Mutex::new(objects),
            fold: Mutex::new(Some(Fold { chunk: layout.index_chunk_key(1, 2, 1), body: chunk, loose })),
        });
        // The first pass sees entries that are gone when read ...
        assert!(matches!(read_index_once(&bucket, &layout).await.unwrap(), IndexRead::Vanished(_)));
        // ... the next listing sees the chunk, and the same segments.
        match read_index_once(&bucket, &layout).await.unwrap() {
            IndexRead::Complete { segments: read, loose } => {
                assert_eq!(loose, 0);
                assert_eq!(read, segments.to_vec());
            }
            IndexRead::Vanished(key) => panic!("{key} vanished on the second pass"),
        }
    }
}
