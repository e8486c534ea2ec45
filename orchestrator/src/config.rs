//! The peer's configuration: one TOML file, a few environment overrides, and
//! validation that names the offending key or file in one line.
//!
//! ```toml
//! node_id = 1
//! http_listen = "127.0.1.1:3000"
//! raft_listen = "127.0.1.1:10008"
//! data_dir = "/var/lib/orchestrator"
//!
//! [[peers]]
//! id = 1
//! http = "127.0.1.1:3000"
//! raft = "127.0.1.1:10008"
//!
//! [mysql]
//! user = "orchestrator"
//! password_env = "ORCH_MYSQL_PASSWORD"
//!
//! [[clusters]]
//! alias = "main"
//! seeds = ["127.0.1.1:3306"]
//!
//! [[auth.tokens]]
//! name = "alice"
//! scope = "admin"
//! sha256 = "…"                 # `orchestrator token new` prints it
//!
//! [tls.raft]
//! ca_file = "/etc/orchestrator/tls/ca.crt"
//! cert_file = "/etc/orchestrator/tls/node.crt"
//! key_file = "/etc/orchestrator/tls/node.key"
//! ```
//!
//! Environment overrides (applied after the file): `ORCH_NODE_ID`, `ORCH_HTTP_LISTEN`,
//! `ORCH_MYSQL_USER`, `ORCH_MYSQL_PASSWORD`.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::topology::InstanceKey;

/// A configuration that cannot be used, said in one line.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("config file {path}, line {line}: {message}")]
    Parse { path: PathBuf, line: usize, message: String },
    #[error("config {origin}: `{key}`: {message}")]
    Invalid { origin: String, key: String, message: String },
}

/// The whole configuration of one peer.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// This peer's id; must be one of `peers`.
    pub node_id: u64,
    /// Where the HTTP API, web UI and gRPC listen (production port 3000).
    #[serde(default = "default_http_listen")]
    pub http_listen: SocketAddr,
    /// Where Raft listens (production port 10008).
    #[serde(default = "default_raft_listen")]
    pub raft_listen: SocketAddr,
    /// Raft log and state live here.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// Every peer of the group, this one included; an odd count (1, 3, 5, 7). With
    /// `join`, the members to ask (any count) plus this peer's own entry.
    pub peers: Vec<PeerConfig>,
    /// This peer joins a running group (the node bootstrap sets it): it never
    /// initializes a group of its own; until it is a member it asks the leader, through
    /// the peers listed, to add it (as a learner; the leader makes it a voter when the
    /// voters can stay an odd count).
    #[serde(default)]
    pub join: bool,
    pub mysql: MysqlConfig,
    #[serde(default)]
    pub discovery: DiscoveryConfig,
    /// Clusters to discover, each from one or more seed instances.
    #[serde(default)]
    pub clusters: Vec<ClusterConfig>,
    #[serde(default)]
    pub raft: RaftTuning,
    #[serde(default)]
    pub recovery: RecoveryConfig,
    /// The AWS side (NLB target groups, DynamoDB); off unless a cluster has `[clusters.aws]`.
    #[serde(default)]
    pub aws: AwsConfig,
    /// Who may call the API (bearer tokens).
    #[serde(default)]
    pub auth: AuthConfig,
    /// TLS on port 3000 (optional) and mutual TLS on the Raft port.
    #[serde(default)]
    pub tls: TlsConfig,
    /// Serving a copy of the co-located server's data to a bootstrapping node.
    #[serde(default)]
    pub donor: DonorConfig,
    /// How this peer leaves, and how the group follows the Auto Scaling group.
    #[serde(default)]
    pub membership: MembershipConfig,
    /// Backups to S3, the binlog archive and restores (off unless `enabled`).
    #[serde(default)]
    pub backup: BackupConfig,
}

/// Backups, the continuous binlog archive and point-in-time restore (DESIGN.md section
/// 13), for every cluster with `[clusters.aws]`: objects go to its bucket
/// (`percona-{cluster_id}-backups`), the `backup_lock` to its table.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct BackupConfig {
    pub enabled: bool,
    /// Another bucket than `percona-{cluster_id}-backups` (one cluster only).
    pub bucket: Option<String>,
    /// Which instance a backup copies: `replica` (the replicating, least lagging,
    /// not downtimed one; preferring one whose promotion rule is not `prefer`), `master`,
    /// or a `host:port`. It is downtimed while the backup runs.
    pub source: String,
    /// `auto` (mariadb-backup on MariaDB, the clone plugin on MySQL), `mariadb_backup`,
    /// `xtrabackup` (Percona Server / MySQL 8.0 with XtraBackup installed) or `clone`.
    pub method: String,
    /// Stream bytes per stored part.
    pub part_size_mb: u64,
    /// Parts compressed and uploaded (or downloaded and opened) at once.
    pub concurrency: usize,
    /// zstd level (1-19): 1 by default, as XtraBackup's zstd compression, since a
    /// backup is bound by CPU and upload, not by the few percent a higher level saves.
    pub compression_level: i32,
    /// The backup tool's own copy threads (`--parallel`).
    pub tool_parallel: u32,
    /// Limit the physical backup tool's reads to this many I/O operations per second
    /// (`--throttle`), to spare a busy source (0: no limit).
    pub tool_throttle: u32,
    /// Seal every part with AES-256-GCM with the key (32 bytes, base64 or hex) in this
    /// Secrets Manager secret, or in this file (mode 0600).
    pub encryption_key_secret: Option<String>,
    pub encryption_key_file: Option<PathBuf>,
    /// The `backup_lock` lasts this long past each renewal (renewed every third).
    pub lock_lease_s: u64,
    /// Bound on one object upload or download.
    pub call_timeout_s: u64,
    /// A full backup at least this often, an incremental at least this often between
    /// them (0: none by schedule; the leader runs the schedule).
    pub full_every_s: u64,
    pub incremental_every_s: u64,
    /// Backups younger than this are kept, and always the newest `keep_full` full ones
    /// with their incrementals; the archive keeps every binlog a kept backup needs.
    pub retention_days: u64,
    pub keep_full: usize,
    /// How often the leader checks the schedule and retention and reads the catalog.
    pub maintenance_interval_s: u64,
    /// Archive the current master's binary logs continuously.
    pub binlog_archive: bool,
    /// The open binary log is archived at least this often (the recovery point).
    pub binlog_flush_s: u64,
    /// A segment holds at most this much of a binary log.
    pub binlog_segment_mb: u64,
    /// The archiver's lease (`binlog_archive_lock`): a new master's archiver takes
    /// over at most this long after the old one stopped renewing.
    pub archive_lease_s: u64,
    /// Work files (tool logs, option files, LSN files, restores' staging).
    pub work_dir: Option<PathBuf>,
    /// MySQL programs (`mysqld`, `mysql`, `mysqlbinlog`) from a minimal root (DESIGN.md
    /// section 7), run through its own loader; unset: the system's.
    pub mysql_root: Option<PathBuf>,
    pub mariadb_backup: PathBuf,
    pub mbstream: PathBuf,
    pub xtrabackup: PathBuf,
    pub xbstream: PathBuf,
    /// The account a restore replays binary logs as (it writes every table and sets
    /// GTIDs); its password is the credentials secret's `root`, or this file.
    pub restore_user: String,
    pub restore_password_file: Option<PathBuf>,
    /// How a restore stops and starts the co-located mysqld (argv); defaults to
    /// `systemctl stop|start orchestrator-mysqld`, the unit the node bootstrap writes.
    pub server_stop_command: Vec<String>,
    pub server_start_command: Vec<String>,
    /// Clusters whose backups this peer restores without managing them (a restore
    /// host outside the cluster: no discovery, no recovery, only their bucket).
    pub restore_from: Vec<RestoreFrom>,
}

/// A cluster's bucket and table, for a peer that only restores its backups.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RestoreFrom {
    /// The name `orchctl backup ... --cluster` uses.
    pub alias: String,
    pub cluster_id: String,
    /// DynamoDB table (default `{cluster_id}-orchestrator`).
    #[serde(default)]
    pub table: Option<String>,
}

impl Default for BackupConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            bucket: None,
            source: "replica".into(),
            method: "auto".into(),
            part_size_mb: 16,
            concurrency: 4,
            compression_level: 1,
            tool_parallel: 4,
            tool_throttle: 0,
            encryption_key_secret: None,
            encryption_key_file: None,
            lock_lease_s: 30,
            call_timeout_s: 120,
            full_every_s: 7 * 86_400,
            incremental_every_s: 86_400,
            retention_days: 28,
            keep_full: 2,
            maintenance_interval_s: 60,
            binlog_archive: true,
            binlog_flush_s: 5,
            binlog_segment_mb: 64,
            archive_lease_s: 10,
            work_dir: None,
            mysql_root: None,
            mariadb_backup: PathBuf::from("mariadb-backup"),
            mbstream: PathBuf::from("mbstream"),
            xtrabackup: PathBuf::from("xtrabackup"),
            xbstream: PathBuf::from("xbstream"),
            restore_user: "root".into(),
            restore_password_file: None,
            server_stop_command: vec!["systemctl".into(), "stop".into(), "orchestrator-mysqld".into()],
            server_start_command: vec!["systemctl".into(), "start".into(), "orchestrator-mysqld".into()],
            restore_from: Vec::new(),
        }
    }
}

/// Which instance a backup copies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackupSource {
    Replica,
    Master,
    Instance(InstanceKey),
}

impl BackupConfig {
    pub fn source(&self) -> Result<BackupSource, String> {
        match self.source.as_str() {
            "replica" => Ok(BackupSource::Replica),
            "master" => Ok(BackupSource::Master),
            other => other
                .parse()
                .map(BackupSource::Instance)
                .map_err(|_| format!("`{other}`: give replica, master or host:port")),
        }
    }

    pub fn method(&self) -> Result<Option<crate::backup::manifest::Method>, String> {
        use crate::backup::manifest::Method;
        match self.method.as_str() {
            "auto" => Ok(None),
            "mariadb_backup" => Ok(Some(Method::MariadbBackup)),
            "xtrabackup" => Ok(Some(Method::Xtrabackup)),
            "clone" => Ok(Some(Method::Clone)),
            other => Err(format!("`{other}`: give auto, mariadb_backup, xtrabackup or clone")),
        }
    }

    /// The work directory (default: `{data_dir}/backup`).
    pub fn work_dir(&self, data_dir: &Path) -> PathBuf {
        self.work_dir.clone().unwrap_or_else(|| data_dir.join("backup"))
    }

    /// The bucket of `cluster_id`.
    pub fn bucket_name(&self, cluster_id: &str) -> String {
        self.bucket.clone().unwrap_or_else(|| format!("percona-{cluster_id}-backups"))
    }
}

/// A node's life in the group (DESIGN.md section 12).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct MembershipConfig {
    /// On SIGTERM (systemd stop, instance shutdown) this peer first switches its
    /// mysqld over if it is a master, hands Raft leadership to another voter if it
    /// leads, then leaves the group; restarted with `join`, it asks to join again. Off:
    /// a stop is a plain stop (the peer stays a member). The node bootstrap turns it on.
    pub leave_on_stop: bool,
    /// The most a leave may take before the peer stops anyway.
    pub leave_timeout_s: u64,
    /// The Auto Scaling group whose instances the Raft members follow (the node
    /// bootstrap sets it): the leader removes members whose instance is terminating or
    /// gone, keeps the masters' instances protected from scale-in, and marks a replica
    /// whose mysqld stays down `Unhealthy`. Unset: none of that.
    pub auto_scaling_group: Option<String>,
    /// How often the group is read.
    pub interval_ms: u64,
    /// A member whose instance is terminating or gone this long is removed.
    pub remove_after_s: u64,
    /// A replica whose mysqld has been unreachable this long is marked `Unhealthy`, so
    /// the group replaces the instance (0: never).
    pub replace_after_s: u64,
}

impl Default for MembershipConfig {
    fn default() -> Self {
        Self {
            leave_on_stop: false,
            leave_timeout_s: 90,
            auto_scaling_group: None,
            interval_ms: 5000,
            remove_after_s: 30,
            replace_after_s: 600,
        }
    }
}

/// A new MariaDB node is seeded from a `mariadb-backup` stream the donor's peer serves
/// on the Raft port (mutual TLS: only holders of a cluster certificate get it). Needs
/// the `backup` password of `[mysql] credentials_secret`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DonorConfig {
    /// The account the backup runs as (BACKUP role of the provisioner's users).
    pub backup_user: String,
    /// The `mariadb-backup` program.
    pub mariadb_backup: PathBuf,
    /// The co-located server's option file (its `datadir` and InnoDB settings): serving
    /// backups is on when this is set.
    pub server_options: Option<PathBuf>,
}

impl Default for DonorConfig {
    fn default() -> Self {
        Self {
            backup_user: "backup".into(),
            mariadb_backup: PathBuf::from("mariadb-backup"),
            server_options: None,
        }
    }
}

/// API authentication (DESIGN.md section 10). Without tokens the peer does not start,
/// unless `disabled` says so explicitly.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Every caller is an anonymous admin. Only for a throwaway lab.
    pub disabled: bool,
    /// `/metrics` answers without a token (Prometheus scrapers hold none).
    pub open_metrics: bool,
    pub tokens: Vec<TokenConfig>,
    /// A Secrets Manager secret (name or ARN) with more tokens, read at start: JSON
    /// `[{"name": "...", "scope": "read|operate|admin", "sha256": "..."}]` (or `token`).
    pub tokens_secret: Option<String>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self { disabled: false, open_metrics: true, tokens: Vec::new(), tokens_secret: None }
    }
}

/// One API token: its name (the identity in the audit), scope, and either its hash
/// or a file holding it.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    pub name: String,
    pub scope: crate::auth::Scope,
    /// Hex SHA-256 of the token.
    #[serde(default)]
    pub sha256: Option<String>,
    /// A file (mode 0600) holding the token itself.
    #[serde(default)]
    pub file: Option<PathBuf>,
}

/// Transport security.
#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// Serve port 3000 (HTTP, web UI and gRPC) over TLS.
    pub api: Option<ApiTlsConfig>,
    /// Mutual TLS on the Raft port: required unless `raft_insecure`.
    pub raft: Option<RaftTlsConfig>,
    /// Raft without TLS: anyone reaching port 10008 could send Raft RPCs. Only for a
    /// throwaway lab.
    pub raft_insecure: bool,
}

/// Server TLS for port 3000 (PEM files).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ApiTlsConfig {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

/// Mutual TLS between peers (PEM files; `provisioner certs` makes them).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RaftTlsConfig {
    /// The cluster's CA: the only issuer whose peers are accepted.
    pub ca_file: PathBuf,
    /// This peer's certificate (its address in the subject alternative names).
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

/// How the peer reaches AWS. Credentials come from the standard chain (environment,
/// profile, instance role); the region from here or that chain.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AwsConfig {
    pub region: Option<String>,
    /// Another endpoint for every service (moto in tests and the sandbox).
    pub endpoint_url: Option<String>,
    /// Bound on one AWS call, retries included.
    pub call_timeout_ms: u64,
    /// How often a converged leader checks AWS again.
    pub reconcile_interval_ms: u64,
    /// Longest wait between attempts while AWS does not match (errors back off to this).
    pub max_backoff_ms: u64,
    /// The `topology` item is written on change and at least this often.
    pub topology_refresh_s: u64,
    /// `master_lock.expires_at` lies this far after each write.
    pub master_lock_ttl_s: u64,
    /// Replicas lagging more than this leave the read target group.
    pub read_max_lag_s: u64,
    /// EC2 instance ids by MySQL instance (`"10.0.1.5:3306" = "i-0abc"`); instances not
    /// listed are looked up in EC2 by private IP.
    pub instance_ids: std::collections::BTreeMap<String, String>,
}

impl Default for AwsConfig {
    fn default() -> Self {
        Self {
            region: None,
            endpoint_url: None,
            call_timeout_ms: 3000,
            reconcile_interval_ms: 5000,
            max_backoff_ms: 5000,
            topology_refresh_s: 30,
            master_lock_ttl_s: 60,
            read_max_lag_s: 30,
            instance_ids: Default::default(),
        }
    }
}

impl AwsConfig {
    /// How the SDK reaches AWS with these settings.
    pub fn connect_settings(&self) -> aws_connect::ConnectSettings {
        aws_connect::ConnectSettings {
            region: self.region.clone(),
            endpoint_url: self.endpoint_url.clone(),
            ..aws_connect::ConnectSettings::new(std::time::Duration::from_millis(self.call_timeout_ms))
        }
    }
}

/// One cluster's AWS resources.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ClusterAwsConfig {
    /// The AWS-side name of the cluster (`{cluster_id}-orchestrator` table).
    pub cluster_id: String,
    /// NLB port 3306: the master only.
    pub write_target_group_arn: String,
    /// NLB port 3307: the replicas.
    pub read_target_group_arn: String,
    /// DynamoDB table (default `{cluster_id}-orchestrator`).
    #[serde(default)]
    pub table: Option<String>,
}

impl ClusterAwsConfig {
    pub fn table_name(&self) -> String {
        self.table.clone().unwrap_or_else(|| format!("{}-orchestrator", self.cluster_id))
    }
}

/// Raft timing and log compaction.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RaftTuning {
    /// Leader heartbeat period.
    pub heartbeat_interval_ms: u64,
    /// A follower that hears nothing for a random time in [min, max] starts an election.
    pub election_timeout_min_ms: u64,
    pub election_timeout_max_ms: u64,
    /// Build a state-machine snapshot after this many new log entries.
    pub snapshot_every_logs: u64,
    /// Log entries kept behind a snapshot (the rest are purged).
    pub logs_kept_after_snapshot: u64,
    /// How long a write may wait to be committed before it is refused.
    pub write_timeout_ms: u64,
}

impl Default for RaftTuning {
    fn default() -> Self {
        Self {
            heartbeat_interval_ms: 50,
            election_timeout_min_ms: 150,
            election_timeout_max_ms: 300,
            snapshot_every_logs: 1000,
            logs_kept_after_snapshot: 200,
            write_timeout_ms: 3000,
        }
    }
}

/// One member of the Raft group.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PeerConfig {
    pub id: u64,
    /// The peer's HTTP/gRPC address (`host:3000`).
    pub http: String,
    /// The peer's Raft address (`host:10008`).
    pub raft: String,
}

/// How the peer logs in to MySQL.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MysqlConfig {
    pub user: String,
    /// The password inline (fine for a sandbox; prefer `password_file` or `password_env`).
    #[serde(default)]
    pub password: Option<String>,
    /// Read the password from this file (trailing newline ignored).
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// Read the password from this environment variable.
    #[serde(default)]
    pub password_env: Option<String>,
    /// Read every password (`orchestrator`, `replication`, `write_check`) from this
    /// Secrets Manager secret (the provisioner's `{cluster_id}/mysql-credentials`),
    /// again whenever a server refuses a login, so a rotation needs no restart.
    /// Excludes the other password settings.
    #[serde(default)]
    pub credentials_secret: Option<String>,
    /// Port assumed for replicas found through the processlist (no `report_port`).
    #[serde(default = "default_mysql_port")]
    pub default_port: u16,
    /// The account replicas use to connect to their master (set when repointing).
    #[serde(default = "default_replication_user")]
    pub replication_user: String,
    /// Its password (env override `ORCH_REPLICATION_PASSWORD`).
    #[serde(default)]
    pub replication_password: Option<String>,
    /// The backup account's password (`[donor] backup_user`; env override
    /// `ORCH_BACKUP_PASSWORD`) when no credentials secret holds it.
    #[serde(default)]
    pub backup_password: Option<String>,
    /// An application account without `SUPER`/`READ ONLY ADMIN` that proves a promoted
    /// master takes writes (our own account can write through `read_only`).
    #[serde(default)]
    pub write_check: Option<WriteCheckConfig>,
}

/// How a promotion is verified: this account writes one row to `table`
/// (`CREATE TABLE app.orchestrator_write_check (id INT PRIMARY KEY, at DATETIME(6))`).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct WriteCheckConfig {
    pub user: String,
    #[serde(default)]
    pub password: String,
    pub table: String,
}

/// Failure detection and recovery.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RecoveryConfig {
    /// Recover dead masters automatically (operators can still fail over by hand).
    pub automatic: bool,
    /// A master failing only by timeouts this long counts as hung, i.e. dead.
    pub hang_window_ms: u64,
    /// How long to wait for the candidate to apply what it received.
    pub apply_wait_ms: u64,
    /// A replica lagging more than this is not promoted unless the failover is forced.
    pub max_lag_on_failover_s: u64,
    /// No automatic recovery of a cluster this long after the last one, unless acknowledged.
    pub anti_flap_s: u64,
    /// A peer out of contact with a quorum this long makes its co-located master read-only.
    pub fencing_timeout_ms: u64,
    /// The mysqld on this host (default: this peer's address, port 3306).
    pub local_instance: Option<InstanceKey>,
    /// While the local instance is a master, how often its process is looked at in
    /// `/proc` (a killed mysqld is seen at once, long before its port refuses); 0: never.
    pub exit_poll_ms: u64,
    /// Replica lag above this is reported (`ReplicaLagging`).
    pub lag_threshold_s: u64,
    /// Commands run with the facts in `ORCH_*` environment variables.
    pub hooks: HooksConfig,
}

impl Default for RecoveryConfig {
    fn default() -> Self {
        Self {
            automatic: true,
            hang_window_ms: 1200,
            apply_wait_ms: 10_000,
            max_lag_on_failover_s: 60,
            anti_flap_s: 300,
            fencing_timeout_ms: 2000,
            local_instance: None,
            exit_poll_ms: 5,
            lag_threshold_s: 10,
            hooks: HooksConfig::default(),
        }
    }
}

/// Hook commands (run with `sh -c`); each empty by default.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HooksConfig {
    pub on_failure_detection: Vec<String>,
    /// A non-zero exit aborts the failover.
    pub pre_failover: Vec<String>,
    pub post_failover: Vec<String>,
    pub post_unsuccessful_failover: Vec<String>,
    /// A hook running longer is killed (and, before a failover, counts as a veto).
    pub timeout_ms: u64,
}

impl Default for HooksConfig {
    fn default() -> Self {
        Self {
            on_failure_detection: Vec::new(),
            pre_failover: Vec::new(),
            post_failover: Vec::new(),
            post_unsuccessful_failover: Vec::new(),
            timeout_ms: 10_000,
        }
    }
}

/// The probing loop's timing.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DiscoveryConfig {
    /// How often every instance is probed.
    #[serde(default = "default_probe_interval_ms")]
    pub probe_interval_ms: u64,
    /// Bound on opening a connection to an instance.
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// Bound on the probe queries once connected.
    #[serde(default = "default_read_timeout_ms")]
    pub read_timeout_ms: u64,
}

impl Default for DiscoveryConfig {
    fn default() -> Self {
        Self {
            probe_interval_ms: default_probe_interval_ms(),
            connect_timeout_ms: default_connect_timeout_ms(),
            read_timeout_ms: default_read_timeout_ms(),
        }
    }
}

impl DiscoveryConfig {
    pub fn probe_interval(&self) -> Duration {
        Duration::from_millis(self.probe_interval_ms)
    }
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }
    pub fn read_timeout(&self) -> Duration {
        Duration::from_millis(self.read_timeout_ms)
    }
}

/// A named cluster and where to start discovering it.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    pub alias: String,
    pub seeds: Vec<InstanceKey>,
    /// Its NLB target groups and DynamoDB table, when the peers manage them.
    #[serde(default)]
    pub aws: Option<ClusterAwsConfig>,
}

fn default_http_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 3000))
}
fn default_raft_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 10008))
}
fn default_data_dir() -> PathBuf {
    PathBuf::from("/var/lib/orchestrator")
}
fn default_mysql_port() -> u16 {
    3306
}
fn default_replication_user() -> String {
    "repl".into()
}
fn default_probe_interval_ms() -> u64 {
    1000
}
fn default_connect_timeout_ms() -> u64 {
    500
}
fn default_read_timeout_ms() -> u64 {
    800
}

impl Config {
    /// Reads, overrides from the process environment, and validates.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
        let mut config = Config::parse(&text, path)?;
        config.apply_env(|name| std::env::var(name).ok(), &path.display().to_string())?;
        config.validate(&path.display().to_string())?;
        Ok(config)
    }

    /// Parses TOML text; `path` only names the file in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        toml::from_str(text).map_err(|e| {
            let line = e
                .span()
                .map(|span| text[..span.start.min(text.len())].matches('\n').count() + 1)
                .unwrap_or(0);
            ConfigError::Parse {
                path: path.to_path_buf(),
                line,
                message: e.message().trim().replace('\n', " "),
            }
        })
    }

    /// Applies `ORCH_*` overrides read through `env`.
    pub fn apply_env(
        &mut self,
        env: impl Fn(&str) -> Option<String>,
        origin: &str,
    ) -> Result<(), ConfigError> {
        let invalid = |key: &str, message: String| ConfigError::Invalid {
            origin: origin.to_string(),
            key: key.to_string(),
            message,
        };
        if let Some(v) = env("ORCH_NODE_ID") {
            self.node_id =
                v.parse().map_err(|_| invalid("ORCH_NODE_ID", format!("`{v}` is not a number")))?;
        }
        if let Some(v) = env("ORCH_HTTP_LISTEN") {
            self.http_listen =
                v.parse().map_err(|_| invalid("ORCH_HTTP_LISTEN", format!("`{v}` is not ip:port")))?;
        }
        if let Some(v) = env("ORCH_MYSQL_USER") {
            self.mysql.user = v;
        }
        if let Some(v) = env("ORCH_REPLICATION_PASSWORD") {
            self.mysql.replication_password = Some(v);
        }
        if let Some(v) = env("ORCH_BACKUP_PASSWORD") {
            self.mysql.backup_password = Some(v);
        }
        if let Some(v) = env("ORCH_MYSQL_PASSWORD") {
            self.mysql.password = Some(v);
            self.mysql.password_file = None;
            self.mysql.password_env = None;
        }
        Ok(())
    }

    /// Checks what serde cannot: peer count and membership, timings, names.
    pub fn validate(&self, origin: &str) -> Result<(), ConfigError> {
        let invalid = |key: &str, message: String| ConfigError::Invalid {
            origin: origin.to_string(),
            key: key.to_string(),
            message,
        };
        let n = self.peers.len();
        if n.is_multiple_of(2) && !self.join {
            return Err(invalid(
                "peers",
                format!("{n} peers configured; a Raft group needs an odd number (1, 3, 5 or 7)"),
            ));
        }
        if n > 7 {
            return Err(invalid("peers", format!("{n} peers configured; at most 7")));
        }
        let mut ids = BTreeSet::new();
        let mut addrs = BTreeSet::new();
        for p in &self.peers {
            if !ids.insert(p.id) {
                return Err(invalid("peers.id", format!("peer id {} appears twice", p.id)));
            }
            for addr in [&p.http, &p.raft] {
                if addr.rsplit_once(':').and_then(|(_, port)| port.parse::<u16>().ok()).is_none() {
                    return Err(invalid(
                        "peers",
                        format!("peer {}: address `{addr}` is not host:port", p.id),
                    ));
                }
                if !addrs.insert(addr.clone()) {
                    return Err(invalid("peers", format!("address `{addr}` appears twice")));
                }
            }
        }
        if !ids.contains(&self.node_id) {
            return Err(invalid(
                "node_id",
                format!("{} is not the id of any entry in [[peers]]", self.node_id),
            ));
        }
        if self.mysql.user.is_empty() {
            return Err(invalid("mysql.user", "must not be empty".into()));
        }
        let sources = [
            self.mysql.password.is_some(),
            self.mysql.password_file.is_some(),
            self.mysql.password_env.is_some(),
        ];
        if sources.iter().filter(|s| **s).count() > 1 {
            return Err(invalid(
                "mysql.password",
                "set only one of password, password_file, password_env".into(),
            ));
        }
        if self.mysql.credentials_secret.is_some() {
            let inline_write_check = self.mysql.write_check.as_ref().is_some_and(|w| !w.password.is_empty());
            if sources.contains(&true)
                || self.mysql.replication_password.is_some()
                || self.mysql.backup_password.is_some()
                || inline_write_check
            {
                return Err(invalid(
                    "mysql.credentials_secret",
                    "the secret holds every password: remove password, password_file, password_env, replication_password, backup_password and write_check.password".into(),
                ));
            }
        }
        let m = &self.membership;
        if m.auto_scaling_group.is_some() && m.interval_ms < 100 {
            return Err(invalid(
                "membership.interval_ms",
                format!("{} ms is below the 100 ms minimum", m.interval_ms),
            ));
        }
        if m.auto_scaling_group.is_some() && self.clusters.iter().all(|c| c.aws.is_none()) {
            return Err(invalid(
                "membership.auto_scaling_group",
                "following an Auto Scaling group needs the AWS side: give a cluster [clusters.aws]".into(),
            ));
        }
        if m.leave_on_stop && m.leave_timeout_s == 0 {
            return Err(invalid("membership.leave_timeout_s", "must be above 0".into()));
        }
        let d = &self.discovery;
        if d.probe_interval_ms < 100 {
            return Err(invalid(
                "discovery.probe_interval_ms",
                format!("{} ms is below the 100 ms minimum", d.probe_interval_ms),
            ));
        }
        for (key, value) in [
            ("discovery.connect_timeout_ms", d.connect_timeout_ms),
            ("discovery.read_timeout_ms", d.read_timeout_ms),
        ] {
            if value == 0 || value >= d.probe_interval_ms {
                return Err(invalid(
                    key,
                    format!(
                        "{value} ms must be above 0 and below probe_interval_ms ({} ms)",
                        d.probe_interval_ms
                    ),
                ));
            }
        }
        let r = &self.raft;
        if r.heartbeat_interval_ms == 0 || r.heartbeat_interval_ms >= r.election_timeout_min_ms {
            return Err(invalid(
                "raft.heartbeat_interval_ms",
                format!(
                    "{} ms must be above 0 and below election_timeout_min_ms ({} ms)",
                    r.heartbeat_interval_ms, r.election_timeout_min_ms
                ),
            ));
        }
        if r.election_timeout_max_ms <= r.election_timeout_min_ms {
            return Err(invalid(
                "raft.election_timeout_max_ms",
                format!(
                    "{} ms must be above election_timeout_min_ms ({} ms)",
                    r.election_timeout_max_ms, r.election_timeout_min_ms
                ),
            ));
        }
        if r.snapshot_every_logs == 0 || r.write_timeout_ms == 0 {
            return Err(invalid("raft", "snapshot_every_logs and write_timeout_ms must be above 0".into()));
        }
        let rc = &self.recovery;
        if rc.hang_window_ms < d.read_timeout_ms {
            return Err(invalid(
                "recovery.hang_window_ms",
                format!(
                    "{} ms is below discovery.read_timeout_ms ({} ms)",
                    rc.hang_window_ms, d.read_timeout_ms
                ),
            ));
        }
        if rc.fencing_timeout_ms <= self.raft.election_timeout_max_ms {
            return Err(invalid(
                "recovery.fencing_timeout_ms",
                format!(
                    "{} ms must exceed raft.election_timeout_max_ms ({} ms), or every election fences the master",
                    rc.fencing_timeout_ms, self.raft.election_timeout_max_ms
                ),
            ));
        }
        let mut aliases = BTreeSet::new();
        for c in &self.clusters {
            if c.alias.is_empty() || c.alias.contains('/') {
                return Err(invalid(
                    "clusters.alias",
                    format!("`{}` must be non-empty and contain no `/`", c.alias),
                ));
            }
            if !aliases.insert(c.alias.clone()) {
                return Err(invalid("clusters.alias", format!("`{}` appears twice", c.alias)));
            }
            if c.seeds.is_empty() {
                return Err(invalid("clusters.seeds", format!("cluster `{}` has no seed instance", c.alias)));
            }
            if let Some(a) = &c.aws {
                for (key, value) in [
                    ("clusters.aws.cluster_id", &a.cluster_id),
                    ("clusters.aws.write_target_group_arn", &a.write_target_group_arn),
                    ("clusters.aws.read_target_group_arn", &a.read_target_group_arn),
                ] {
                    if value.is_empty() {
                        return Err(invalid(key, format!("cluster `{}`: must not be empty", c.alias)));
                    }
                }
                if a.write_target_group_arn == a.read_target_group_arn {
                    return Err(invalid(
                        "clusters.aws.read_target_group_arn",
                        format!("cluster `{}`: the read and write target groups must differ", c.alias),
                    ));
                }
            }
        }
        let a = &self.aws;
        for (key, value) in [
            ("aws.call_timeout_ms", a.call_timeout_ms),
            ("aws.reconcile_interval_ms", a.reconcile_interval_ms),
            ("aws.max_backoff_ms", a.max_backoff_ms),
            ("aws.topology_refresh_s", a.topology_refresh_s),
            ("aws.master_lock_ttl_s", a.master_lock_ttl_s),
        ] {
            if value == 0 {
                return Err(invalid(key, "must be above 0".into()));
            }
        }
        for key in a.instance_ids.keys() {
            if key.parse::<InstanceKey>().is_err() {
                return Err(invalid("aws.instance_ids", format!("`{key}` is not host:port")));
            }
        }
        let auth = &self.auth;
        if !auth.disabled && auth.tokens.is_empty() && auth.tokens_secret.is_none() {
            return Err(invalid(
                "auth.tokens",
                "no API token configured: add [[auth.tokens]] (`orchestrator token new` makes one) \
                 or auth.tokens_secret, or set auth.disabled = true for a throwaway lab"
                    .into(),
            ));
        }
        let mut names = BTreeSet::new();
        for t in &auth.tokens {
            if !crate::auth::tokens::valid_token_name(&t.name) {
                return Err(invalid(
                    "auth.tokens.name",
                    format!("`{}`: 1-64 letters, digits, `.`, `_`, `-` or `@`", t.name),
                ));
            }
            if !names.insert(t.name.clone()) {
                return Err(invalid("auth.tokens.name", format!("`{}` appears twice", t.name)));
            }
            if t.sha256.is_some() == t.file.is_some() {
                return Err(invalid(
                    "auth.tokens",
                    format!("token `{}`: give exactly one of sha256, file", t.name),
                ));
            }
        }
        let b = &self.backup;
        if b.enabled {
            if self.clusters.iter().all(|c| c.aws.is_none()) && b.restore_from.is_empty() {
                return Err(invalid(
                    "backup.enabled",
                    "backups go to the cluster's bucket: give a cluster [clusters.aws] (or [[backup.restore_from]])".into(),
                ));
            }
            for r in &b.restore_from {
                if r.alias.is_empty() || r.cluster_id.is_empty() {
                    return Err(invalid("backup.restore_from", "give alias and cluster_id".into()));
                }
                if self.clusters.iter().any(|c| c.alias == r.alias) {
                    return Err(invalid(
                        "backup.restore_from",
                        format!("`{}` is a cluster this peer manages already", r.alias),
                    ));
                }
            }
            if b.bucket.is_some() && self.clusters.iter().filter(|c| c.aws.is_some()).count() > 1 {
                return Err(invalid(
                    "backup.bucket",
                    "one bucket cannot hold several clusters' backups: leave it unset".into(),
                ));
            }
            b.source().map_err(|m| invalid("backup.source", m))?;
            b.method().map_err(|m| invalid("backup.method", m))?;
            for (key, value) in [
                ("backup.part_size_mb", b.part_size_mb),
                ("backup.concurrency", b.concurrency as u64),
                ("backup.lock_lease_s", b.lock_lease_s),
                ("backup.call_timeout_s", b.call_timeout_s),
                ("backup.maintenance_interval_s", b.maintenance_interval_s),
                ("backup.binlog_flush_s", b.binlog_flush_s),
                ("backup.binlog_segment_mb", b.binlog_segment_mb),
                ("backup.archive_lease_s", b.archive_lease_s),
                ("backup.keep_full", b.keep_full as u64),
            ] {
                if value == 0 {
                    return Err(invalid(key, "must be above 0".into()));
                }
            }
            if b.part_size_mb > 1024 {
                return Err(invalid("backup.part_size_mb", format!("{} MiB: at most 1024", b.part_size_mb)));
            }
            if !(1..=19).contains(&b.compression_level) {
                return Err(invalid(
                    "backup.compression_level",
                    format!("{}: give 1 to 19", b.compression_level),
                ));
            }
            if b.encryption_key_secret.is_some() && b.encryption_key_file.is_some() {
                return Err(invalid(
                    "backup.encryption_key_secret",
                    "give the key in a secret or a file, not both".into(),
                ));
            }
            if b.server_stop_command.is_empty() || b.server_start_command.is_empty() {
                return Err(invalid("backup.server_start_command", "restores need both commands".into()));
            }
        }
        if self.tls.raft.is_none() && !self.tls.raft_insecure {
            return Err(invalid(
                "tls.raft",
                "Raft on port 10008 needs mutual TLS: set [tls.raft] ca_file, cert_file and key_file \
                 (`provisioner certs` makes them), or tls.raft_insecure = true for a throwaway lab"
                    .into(),
            ));
        }
        Ok(())
    }

    /// The MySQL password from whichever source is configured (empty when none).
    pub fn mysql_password(&self) -> Result<String, ConfigError> {
        let m = &self.mysql;
        if let Some(p) = &m.password {
            return Ok(p.clone());
        }
        if let Some(path) = &m.password_file {
            let text = std::fs::read_to_string(path)
                .map_err(|source| ConfigError::Read { path: path.clone(), source })?;
            return Ok(text.trim_end_matches(['\n', '\r']).to_string());
        }
        if let Some(var) = &m.password_env {
            return std::env::var(var).map_err(|_| ConfigError::Invalid {
                origin: "environment".into(),
                key: "mysql.password_env".into(),
                message: format!("variable {var} is not set"),
            });
        }
        Ok(String::new())
    }

    /// The address this peer's outgoing connections to other peers leave from: the
    /// host's own address when `http_listen` names one (not `0.0.0.0`).
    pub fn source_ip(&self) -> Option<std::net::IpAddr> {
        let ip = self.http_listen.ip();
        (!ip.is_unspecified()).then_some(ip)
    }

    /// The mysqld co-located with this peer.
    pub fn local_instance(&self) -> Option<InstanceKey> {
        self.recovery
            .local_instance
            .clone()
            .or_else(|| self.source_ip().map(|ip| InstanceKey::new(ip.to_string(), 3306)))
    }

    /// This peer's own entry in `peers`.
    pub fn this_peer(&self) -> Option<&PeerConfig> {
        self.peers.iter().find(|p| p.id == self.node_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
node_id = 2
http_listen = "127.0.1.2:3000"

[[peers]]
id = 1
http = "127.0.1.1:3000"
raft = "127.0.1.1:10008"
[[peers]]
id = 2
http = "127.0.1.2:3000"
raft = "127.0.1.2:10008"
[[peers]]
id = 3
http = "127.0.1.3:3000"
raft = "127.0.1.3:10008"

[mysql]
user = "orchestrator"
password = "secret"

[discovery]
probe_interval_ms = 500
connect_timeout_ms = 200
read_timeout_ms = 300

[[clusters]]
alias = "main"
seeds = ["127.0.1.1:3306"]

[[auth.tokens]]
name = "ops"
scope = "admin"
sha256 = "0000000000000000000000000000000000000000000000000000000000000000"

[tls]
raft_insecure = true
"#;

    fn parse_and_validate(text: &str) -> Result<Config, ConfigError> {
        let c = Config::parse(text, Path::new("test.toml"))?;
        c.validate("test.toml")?;
        Ok(c)
    }

    #[test]
    fn good_config_parses_with_defaults() {
        let c = parse_and_validate(GOOD).unwrap();
        assert_eq!(c.node_id, 2);
        assert_eq!(c.raft_listen, "0.0.0.0:10008".parse().unwrap());
        assert_eq!(c.mysql.default_port, 3306);
        assert_eq!(c.discovery.probe_interval(), Duration::from_millis(500));
        assert_eq!(c.clusters[0].seeds[0], InstanceKey::new("127.0.1.1", 3306));
        assert_eq!(c.this_peer().unwrap().http, "127.0.1.2:3000");
        assert_eq!(c.mysql_password().unwrap(), "secret");
    }

    fn error_of(text: &str) -> String {
        let e = parse_and_validate(text).unwrap_err().to_string();
        assert!(!e.contains('\n'), "error must be one line: {e}");
        e
    }

    #[test]
    fn unknown_key_is_named_with_its_line() {
        let text = GOOD.replace("read_timeout_ms = 300", "read_timeout_ms = 300\nprobe_intervall = 3");
        let e = error_of(&text);
        assert!(e.contains("probe_intervall"), "{e}");
        assert!(e.contains("test.toml, line 26"), "{e}");
    }

    #[test]
    fn even_peer_count_is_rejected() {
        let cut = GOOD.find("[[peers]]\nid = 3").unwrap();
        let end = GOOD.find("[mysql]").unwrap();
        let text = format!("{}{}", &GOOD[..cut], &GOOD[end..]);
        let e = error_of(&text);
        assert!(e.contains("`peers`") && e.contains("odd number"), "{e}");
    }

    #[test]
    fn credentials_secret_alone_is_accepted() {
        let text = GOOD.replace("password = \"secret\"", "credentials_secret = \"c/mysql-credentials\"");
        let c = parse_and_validate(&text).unwrap();
        assert_eq!(c.mysql.credentials_secret.as_deref(), Some("c/mysql-credentials"));
    }

    #[test]
    fn invalid_values_are_named() {
        let cases = [
            (GOOD.replace("node_id = 2", "node_id = 9"), "node_id"),
            (GOOD.replace("probe_interval_ms = 500", "probe_interval_ms = 50"), "probe_interval_ms"),
            (GOOD.replace("read_timeout_ms = 300", "read_timeout_ms = 900"), "read_timeout_ms"),
            (GOOD.replace("127.0.1.1:3306", "nohost"), "nohost"),
            (GOOD.replace("id = 3", "id = 2"), "appears twice"),
            (GOOD.replace("alias = \"main\"", "alias = \"\""), "clusters.alias"),
            (GOOD.replace("password = \"secret\"", "password = \"x\"\npassword_env = \"Y\""), "only one of"),
            (
                GOOD.replace(
                    "password = \"secret\"",
                    "password = \"x\"\ncredentials_secret = \"c/mysql-credentials\"",
                ),
                "`mysql.credentials_secret`: the secret holds every password",
            ),
        ];
        for (text, needle) in cases {
            let e = error_of(&text);
            assert!(e.contains(needle), "expected `{needle}` in: {e}");
        }
    }

    #[test]
    fn auth_and_tls_are_required_unless_explicitly_off() {
        let no_tokens = GOOD.replace("[[auth.tokens]]", "[[auth.not_tokens]]");
        assert!(error_of(&no_tokens).contains("unknown field"), "a typo is refused");
        let cut = |text: &str, from: &str, to: &str| {
            let (a, b) = (text.find(from).unwrap(), text.find(to).unwrap());
            format!("{}{}", &text[..a], &text[b..])
        };
        let without_tokens = cut(GOOD, "[[auth.tokens]]", "[tls]");
        assert!(error_of(&without_tokens).contains("no API token configured"));
        assert!(parse_and_validate(&format!("{without_tokens}\n[auth]\ndisabled = true\n")).is_ok());
        let without_tls = GOOD.replace("raft_insecure = true", "");
        assert!(error_of(&without_tls).contains("tls.raft"));
        let both = GOOD.replace("sha256 = \"0000", "file = \"/t\"\nsha256 = \"0000");
        assert!(error_of(&both).contains("exactly one of sha256, file"));
        let bad_scope = GOOD.replace("scope = \"admin\"", "scope = \"root\"");
        assert!(error_of(&bad_scope).contains("root"));
        let c = parse_and_validate(GOOD).unwrap();
        assert!(c.auth.open_metrics, "metrics are open by default");
    }

    #[test]
    fn unreadable_file_is_named() {
        let e = Config::load(Path::new("/nonexistent/orch.toml")).unwrap_err().to_string();
        assert!(e.starts_with("cannot read config file /nonexistent/orch.toml"), "{e}");
    }

    #[test]
    fn env_overrides_apply_and_bad_values_are_named() {
        let mut c = parse_and_validate(GOOD).unwrap();
        let env = |k: &str| match k {
            "ORCH_MYSQL_PASSWORD" => Some("from-env".to_string()),
            "ORCH_HTTP_LISTEN" => Some("127.0.0.9:3000".to_string()),
            _ => None,
        };
        c.apply_env(env, "t").unwrap();
        assert_eq!(c.mysql_password().unwrap(), "from-env");
        assert_eq!(c.http_listen, "127.0.0.9:3000".parse().unwrap());
        let e = c.apply_env(|k| (k == "ORCH_NODE_ID").then(|| "x".to_string()), "t").unwrap_err().to_string();
        assert!(e.contains("ORCH_NODE_ID"), "{e}");
    }

    #[test]
    fn password_file_is_read_without_newline() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pw");
        std::fs::write(&file, "s3cret\n").unwrap();
        let text = GOOD.replace("password = \"secret\"", &format!("password_file = \"{}\"", file.display()));
        let c = parse_and_validate(&text).unwrap();
        assert_eq!(c.mysql_password().unwrap(), "s3cret");
    }

    #[test]
    fn example_config_in_deploy_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/orchestrator.example.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        let c = parse_and_validate(&text).unwrap();
        let aws = c.clusters[0].aws.as_ref().expect("[clusters.aws] in the example");
        assert_eq!(aws.table_name(), "main-orchestrator");
    }

    #[test]
    fn backup_settings_are_checked() {
        let with = |backup: &str, aws: bool| {
            let (head, clusters) = GOOD.split_at(GOOD.find("[[clusters]]").unwrap());
            let aws_table = if aws {
                "\n[clusters.aws]\ncluster_id = \"c\"\nwrite_target_group_arn = \"w\"\nread_target_group_arn = \"r\"\n"
            } else {
                ""
            };
            format!("{head}[backup]\n{backup}\n\n{clusters}{aws_table}")
        };
        let c = parse_and_validate(&with("enabled = true", true)).unwrap();
        assert_eq!(c.backup.bucket_name("c"), "percona-c-backups");
        assert_eq!(c.backup.source().unwrap(), BackupSource::Replica);
        assert_eq!(c.backup.work_dir(Path::new("/d")), PathBuf::from("/d/backup"));
        assert!(parse_and_validate(&with("enabled = false", false)).is_ok(), "off needs nothing");
        let cases = [
            (with("enabled = true", false), "backup.enabled"),
            (with("enabled = true\nsource = \"nowhere\"", true), "backup.source"),
            (with("enabled = true\nmethod = \"rsync\"", true), "backup.method"),
            (with("enabled = true\npart_size_mb = 0", true), "backup.part_size_mb"),
            (with("enabled = true\ncompression_level = 30", true), "backup.compression_level"),
            (with("enabled = true\nserver_start_command = []", true), "backup.server_start_command"),
            (
                with("enabled = true\nencryption_key_secret = \"s\"\nencryption_key_file = \"/k\"", true),
                "backup.encryption_key_secret",
            ),
            (with("enabled = true\nlock_leas_s = 3", true), "lock_leas_s"),
        ];
        for (text, needle) in cases {
            let e = error_of(&text);
            assert!(e.contains(needle), "expected `{needle}` in: {e}");
        }
        let restore_only = GOOD.replace("[[clusters]]\nalias = \"main\"\nseeds = [\"127.0.1.1:3306\"]\n", "")
            + "\n[backup]\nenabled = true\n[[backup.restore_from]]\nalias = \"main\"\ncluster_id = \"prod\"\n";
        let c = parse_and_validate(&restore_only).unwrap();
        assert_eq!(c.backup.restore_from[0].cluster_id, "prod");
    }

    #[test]
    fn aws_settings_are_checked() {
        // `section` goes before [[clusters]], `aws` into its [clusters.aws].
        let with_aws = |aws: &str, section: &str| {
            let (head, clusters) = GOOD.split_at(GOOD.find("[[clusters]]").unwrap());
            format!("{head}{section}\n\n{clusters}\n[clusters.aws]\n{aws}\n")
        };
        let good = "cluster_id = \"c\"\nwrite_target_group_arn = \"w\"\nread_target_group_arn = \"r\"";
        let c = parse_and_validate(&with_aws(good, "")).unwrap();
        assert_eq!(c.clusters[0].aws.as_ref().unwrap().table_name(), "c-orchestrator");
        assert_eq!(c.aws.reconcile_interval_ms, 5000);
        let cases = [
            (with_aws(&good.replace("\"r\"", "\"w\""), ""), "must differ"),
            (with_aws(&good.replace("\"c\"", "\"\""), ""), "clusters.aws.cluster_id"),
            (with_aws(good, "[aws]\ncall_timeout_ms = 0"), "aws.call_timeout_ms"),
            (with_aws(good, "[aws.instance_ids]\n\"nohost\" = \"i-1\""), "aws.instance_ids"),
            (with_aws(good, "[aws]\nendpoint = \"x\""), "endpoint"),
        ];
        for (text, needle) in cases {
            let e = error_of(&text);
            assert!(e.contains(needle), "expected `{needle}` in: {e}");
        }
    }
}
