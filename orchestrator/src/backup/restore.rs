//! Restore and point-in-time recovery onto the co-located server (which must be
//! empty): plan from the catalog (the newest complete chain before the point, the
//! archived segments after it), download each backup of the chain in parallel parts
//! into a staging directory beside the data directory, prepare (incrementals applied
//! in order), swap it in with the server stopped, start it, then replay the archived
//! transactions up to the point through the server's own binlog tool and client in one
//! session, and verify the executed GTID set is exactly the one planned.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use mysql_async::prelude::Queryable;
use serde::{Deserialize, Serialize};

use super::archive::{Point, Replayer, Segment};
use super::binlog;
use super::catalog::{self, RestorePlan};
use super::jobs::{Job, JobView};
use super::manifest::{format_micros, Manifest};
use super::parts::{decode, sha256_hex, EncryptionKey};
use super::service::{
    executed_set, human_bytes, server_facts, BackupError, BackupService, ClusterBackups, ServerFacts,
};
use super::store::ObjectStore;
use super::tools;
use crate::topology::gtid::GtidSet;
use crate::topology::InstanceKey;

/// What an operator asks for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RestoreRequest {
    pub cluster: String,
    /// The empty server to restore onto (this peer's co-located one).
    pub target: InstanceKey,
    pub point: PointSpec,
    /// Restore this backup (its chain) instead of the newest one before the point.
    pub backup: Option<String>,
    /// Only say what would be done.
    pub dry_run: bool,
    pub requested_by: String,
}

/// [`Point`] as it travels between peers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum PointSpec {
    Latest,
    /// Unix µs.
    Time(i64),
    Gtids {
        set: GtidSet,
        exclusive: bool,
    },
}

impl PointSpec {
    pub fn describe(&self) -> String {
        match self {
            PointSpec::Latest => "latest".into(),
            PointSpec::Time(t) => format_micros(*t),
            PointSpec::Gtids { set, exclusive: false } => format!("after {set}"),
            PointSpec::Gtids { set, exclusive: true } => format!("before {set}"),
        }
    }

    pub fn point(&self) -> Point {
        match self {
            PointSpec::Latest => Point::Latest,
            PointSpec::Time(t) => Point::Time(*t),
            PointSpec::Gtids { set, exclusive } => Point::Gtids { set: set.clone(), exclusive: *exclusive },
        }
    }

    /// `latest`, a UTC timestamp, or a GTID set.
    pub fn parse(text: &str, exclusive: bool) -> Result<PointSpec, String> {
        let t = text.trim();
        if t == "latest" {
            return Ok(PointSpec::Latest);
        }
        if t.len() >= 10
            && t.as_bytes()[4] == b'-'
            && t.as_bytes()[7] == b'-'
            && !t.contains(',')
            && t[..4].bytes().all(|c| c.is_ascii_digit())
            && (t.contains('T') || t.contains(' '))
        {
            return super::manifest::parse_timestamp(t).map(PointSpec::Time);
        }
        let set = GtidSet::parse(t)
            .map_err(|e| format!("`{t}` is neither latest, a UTC timestamp nor a GTID set: {e}"))?;
        if set.is_empty() {
            return Err("an empty GTID set names no point".into());
        }
        Ok(PointSpec::Gtids { set, exclusive })
    }
}

/// A plan in words (the dry run's answer and the job's first line).
pub fn describe_plan(plan: &RestorePlan<'_>) -> String {
    let chain: Vec<String> = plan.chain.iter().map(|m| format!("{} {}", m.kind, m.id)).collect();
    let tip = plan.tip();
    format!(
        "restore {} (consistent at {}, GTIDs {}), then replay {} archived segment(s) to {}; {} to download",
        chain.join(" + "),
        super::manifest::format_millis(tip.consistent_at_ms),
        tip.gtid_executed,
        plan.segments.len(),
        plan.point.describe(),
        human_bytes(plan.stored_bytes())
    )
}

impl BackupService {
    /// Plans a restore onto this peer's server and starts it as a job (a dry run
    /// answers the plan at once).
    pub async fn start_restore(self: &Arc<Self>, request: RestoreRequest) -> Result<JobView, BackupError> {
        self.cluster(&request.cluster)?;
        if self.local.as_ref() != Some(&request.target) {
            return Err(BackupError::Refused(format!(
                "peer {} runs beside {}, not {}: a restore runs on the target's host",
                self.node_id,
                self.local.as_ref().map(ToString::to_string).unwrap_or_else(|| "no server".into()),
                request.target
            )));
        }
        let catalog = self.catalog(&request.cluster).await?;
        let plan = catalog::plan_restore(
            &catalog.manifests,
            &catalog.segments,
            request.point.point(),
            request.backup.as_deref(),
        )?;
        for m in &plan.chain {
            EncryptionKey::check(self.key.as_deref(), m.encryption.as_ref())
                .map_err(|e| BackupError::Refused(format!("backup {}: {e}", m.id)))?;
        }
        let described = describe_plan(&plan);
        if request.dry_run {
            let job = self.jobs.start(
                "restore",
                &request.cluster,
                &request.target.to_string(),
                self.node_id,
                &self.http,
            );
            job.set_backup_id(&plan.tip().id);
            job.finish(Ok(format!("dry run: would {described}")));
            return Ok(job.view());
        }
        if self.restoring.swap(true, std::sync::atomic::Ordering::SeqCst) {
            return Err(BackupError::Refused(format!(
                "a restore onto {} is already running (see `orchctl backup job`)",
                request.target
            )));
        }
        let job = self.jobs.start(
            "restore",
            &request.cluster,
            &request.target.to_string(),
            self.node_id,
            &self.http,
        );
        job.set_backup_id(&plan.tip().id);
        job.set_total(plan.chain.iter().map(|m| m.raw_bytes).sum());
        let chain: Vec<Manifest> = plan.chain.iter().map(|m| (*m).clone()).collect();
        let segments: Vec<Segment> = plan.segments.iter().map(|s| (*s).clone()).collect();
        let all_segments = catalog.segments.clone();
        let (this, running) = (self.clone(), job.clone());
        tokio::spawn(async move {
            tracing::info!(target = %request.target, plan = %described, "restore starting");
            let started = Instant::now();
            let outcome = this.run_restore(&running, &request, &chain, &segments, &all_segments).await;
            this.restoring.store(false, std::sync::atomic::Ordering::SeqCst);
            match outcome {
                Ok(text) => {
                    tracing::info!(target = %request.target, seconds = started.elapsed().as_secs_f64(), "{text}");
                    running.finish(Ok(format!("{text} in {:.1} s", started.elapsed().as_secs_f64())))
                }
                Err(e) => {
                    tracing::warn!(target = %request.target, error = %e, "restore failed");
                    running.finish(Err(e.to_string()))
                }
            }
        });
        Ok(job.view())
    }

    /// Waits for the server to accept the restore user's connection.
    async fn wait_for_root(&self, socket: &Path, limit: Duration) -> Result<mysql_async::Conn, BackupError> {
        let started = Instant::now();
        loop {
            match self.root_connection(socket).await {
                Ok(conn) => return Ok(conn),
                Err(_) if started.elapsed() < limit => tokio::time::sleep(Duration::from_millis(50)).await,
                Err(e) => {
                    return Err(BackupError::Failed(format!(
                        "the server did not start on the restored data within {} s ({e})",
                        limit.as_secs()
                    )))
                }
            }
        }
    }

    async fn root_connection(&self, socket: &Path) -> Result<mysql_async::Conn, BackupError> {
        let user = self.config.backup.restore_user.clone();
        let password = self.credentials.current().root.clone();
        let opts = mysql_async::OptsBuilder::default()
            .socket(Some(socket.display().to_string()))
            .user(Some(user.clone()))
            .pass(Some(password))
            .stmt_cache_size(0);
        tokio::time::timeout(Duration::from_secs(5), mysql_async::Conn::new(opts))
            .await
            .map_err(|_| {
                BackupError::Failed(format!("connecting as {user} over {} timed out", socket.display()))
            })?
            .map_err(|e| BackupError::Failed(format!("connecting as {user} over {}: {e}", socket.display())))
    }

    async fn run_restore(
        &self,
        job: &Arc<Job>,
        request: &RestoreRequest,
        chain: &[Manifest],
        segments: &[Segment],
        all_segments: &[Segment],
    ) -> Result<String, BackupError> {
        let c = self.cluster(&request.cluster)?;
        let target = &request.target;
        let tip = chain.last().expect("a chain holds its full");
        job.phase(format!("checking that {target} is empty"));
        let mut conn = self.connect_orchestrator(target).await?;
        let facts = server_facts(&mut conn).await?;
        drop(conn);
        if facts.flavor() != tip.flavor {
            return Err(BackupError::Refused(format!(
                "{target} runs {} ({}), the backup is of {}",
                facts.flavor(),
                facts.version,
                tip.flavor
            )));
        }
        let socket = facts.socket.clone().ok_or_else(|| {
            BackupError::Failed(format!("{target} reports no socket: the restore connects through it"))
        })?;
        let mut root = self.root_connection(&socket).await?;
        let schemas: Vec<String> = root
            .query("SELECT schema_name FROM information_schema.schemata WHERE schema_name NOT IN ('mysql', 'information_schema', 'performance_schema', 'sys', 'test')")
            .await
            .map_err(|e| BackupError::Failed(format!("listing the schemas of {target}: {e}")))?;
        if !schemas.is_empty() {
            return Err(BackupError::Refused(format!(
                "{target} is not empty (schemas {}): a restore replaces a server's data, so it only goes onto an empty one",
                schemas.join(", ")
            )));
        }
        drop(root);
        let datadir = facts.datadir.clone();
        let datadir = PathBuf::from(datadir.to_string_lossy().trim_end_matches('/'));
        let stage = PathBuf::from(format!("{}.restore-{}", datadir.display(), job.id()));
        let _ = std::fs::remove_dir_all(&stage);
        let io = |what: String, e: std::io::Error| BackupError::Failed(format!("{what}: {e}"));
        std::fs::create_dir_all(&stage).map_err(|e| io(format!("making {}", stage.display()), e))?;
        // The prepared copy is renamed into the data directory's place: both must be
        // on one filesystem (a data directory that is itself a mount point is not).
        {
            use std::os::unix::fs::MetadataExt;
            let dev = |p: &Path| {
                std::fs::metadata(p).map(|m| m.dev()).map_err(|e| io(format!("reading {}", p.display()), e))
            };
            if dev(&datadir)? != dev(&stage)? {
                let _ = std::fs::remove_dir_all(&stage);
                return Err(BackupError::Refused(format!(
                    "{} is a mount point: the restore prepares the copy beside it and renames it into place, so the data directory must be a directory of the mounted volume (as {}/data)",
                    datadir.display(),
                    datadir.display()
                )));
            }
        }
        let result = self
            .restore_into(job, c, request, chain, segments, all_segments, &facts, &datadir, &stage, &socket)
            .await;
        let _ = std::fs::remove_dir_all(&stage);
        result
    }

    #[allow(clippy::too_many_arguments)]
    async fn restore_into(
        &self,
        job: &Arc<Job>,
        c: &ClusterBackups,
        request: &RestoreRequest,
        chain: &[Manifest],
        segments: &[Segment],
        all_segments: &[Segment],
        facts: &ServerFacts,
        datadir: &Path,
        stage: &Path,
        socket: &Path,
    ) -> Result<String, BackupError> {
        let target = &request.target;
        let tip = chain.last().expect("a chain holds its full");
        let io = |what: String, e: std::io::Error| BackupError::Failed(format!("{what}: {e}"));
        // 1. Download the chain and prepare it.
        let prepared = stage.join("data");
        let copy_stage = stage.join("work");
        super::materialize::materialize(
            c.store.clone(),
            &c.layout,
            chain,
            &prepared,
            &copy_stage,
            &self.copy_tools(),
            super::materialize::Report { phase: &|phase| job.phase(phase), stream: &|| job.stream() },
        )
        .await?;
        // 3. Swap it in with the server stopped.
        job.phase(format!("stopping {target}"));
        run_command(&self.config.backup.server_stop_command, "stopping the server").await?;
        wait_until(Duration::from_secs(120), || async {
            tokio::net::TcpStream::connect(target.to_string()).await.is_err()
        })
        .await
        .map_err(|_| {
            BackupError::Failed(format!("{target} still accepts connections after the stop command"))
        })?;
        let aside = PathBuf::from(format!("{}.before-restore-{}", datadir.display(), job.id()));
        let failed = PathBuf::from(format!("{}.failed-restore-{}", datadir.display(), job.id()));
        let swapped = {
            let (datadir, aside, prepared) = (datadir.to_path_buf(), aside.clone(), prepared.clone());
            tokio::task::spawn_blocking(move || swap_in(&datadir, &aside, &prepared))
                .await
                .map_err(|e| BackupError::Failed(format!("swapping the data directory: {e}")))
                .and_then(|r| r)
        };
        let started_on_copy = match swapped {
            Ok(()) => {
                job.phase(format!("starting {target} on the restored data"));
                match run_command(&self.config.backup.server_start_command, "starting the server").await {
                    Ok(()) => self.wait_for_root(socket, Duration::from_secs(120)).await,
                    Err(e) => Err(e),
                }
            }
            Err(e) => Err(e),
        };
        let mut root = match started_on_copy {
            Ok(conn) => conn,
            Err(e) => {
                // The server goes back to the data it had, and runs again.
                job.phase(format!("putting {target}'s own data back after: {e}"));
                let _ = run_command(&self.config.backup.server_stop_command, "stopping the server").await;
                let put_back = {
                    let (datadir, aside, failed) = (datadir.to_path_buf(), aside.clone(), failed.clone());
                    tokio::task::spawn_blocking(move || put_back(&datadir, &aside, &failed)).await
                };
                let restarted =
                    run_command(&self.config.backup.server_start_command, "starting the server").await;
                let kept = if failed.exists() {
                    format!("; the restored copy is kept at {}", failed.display())
                } else {
                    String::new()
                };
                let back = match (put_back, restarted) {
                    (Ok(Ok(())), Ok(())) => format!("{target} runs on its own data again"),
                    (Ok(Err(pe)), _) => format!("putting its own data back failed too: {pe}"),
                    (Err(pe), _) => format!("putting its own data back failed too: {pe}"),
                    (_, Err(se)) => format!("its own data is back but it did not start: {se}"),
                };
                return Err(BackupError::Failed(format!("{e}; {back}{kept}")));
            }
        };
        let aside_gone = aside.clone();
        let _ = tokio::task::spawn_blocking(move || std::fs::remove_dir_all(&aside_gone)).await;
        let forget = if facts.mariadb {
            "STOP ALL SLAVES; RESET SLAVE ALL"
        } else {
            "STOP REPLICA; RESET REPLICA ALL"
        };
        root.query_drop(forget)
            .await
            .map_err(|e| BackupError::Failed(format!("{forget} on {target}: {e}")))?;
        // 4. The GTID state of the copy.
        if tip.flavor == "mariadb" {
            let position = tip.gtid_position_text.replace('\'', "");
            for sql in [
                "RESET MASTER".to_string(),
                format!("SET GLOBAL gtid_binlog_state = '{position}'"),
                format!("SET GLOBAL gtid_slave_pos = '{position}'"),
            ] {
                root.query_drop(&sql)
                    .await
                    .map_err(|e| BackupError::Failed(format!("{sql} on {target}: {e}")))?;
            }
        }
        let start = executed_set(&mut root, facts.mariadb).await?;
        // 5. Replay the archive to the point.
        let mut replayer = Replayer::new(request.point.point(), start.clone(), all_segments);
        let replay_dir = stage.join("binlogs");
        std::fs::create_dir_all(&replay_dir)
            .map_err(|e| io(format!("making {}", replay_dir.display()), e))?;
        let mut files = Vec::new();
        let mut transactions = 0usize;
        if !segments.is_empty() {
            job.phase(format!("downloading {} archived binlog segment(s)", segments.len()));
        }
        let fetched = futures::stream::iter(segments.iter().cloned())
            .map(|s| {
                let (store, key) = (c.store.clone(), self.key.clone());
                async move {
                    let stored = store.get(&s.key).await?;
                    if sha256_hex(&stored) != s.sha256 {
                        return Err(BackupError::Failed(format!(
                            "binlog segment {} ({}) does not match its checksum",
                            s.seq, s.key
                        )));
                    }
                    let raw_len = s.raw_bytes as usize;
                    let raw = tokio::task::spawn_blocking(move || decode(&stored, raw_len, key.as_deref()))
                        .await
                        .map_err(|e| BackupError::Failed(e.to_string()))?
                        .map_err(|e| BackupError::Failed(format!("binlog segment {}: {e}", s.seq)))?;
                    Ok::<_, BackupError>((s, raw))
                }
            })
            .buffered(self.config.backup.concurrency.max(1));
        futures::pin_mut!(fetched);
        while let Some(next) = fetched.next().await {
            let (s, raw) = next?;
            let scan = binlog::scan(&raw, 0, None)
                .map_err(|e| BackupError::Failed(format!("binlog segment {}: {e}", s.seq)))?;
            let format = scan.format.clone().ok_or_else(|| {
                BackupError::Failed(format!("binlog segment {} has no format description", s.seq))
            })?;
            let chosen = replayer.choose(s.seq, &scan.transactions);
            if !chosen.is_empty() {
                transactions += chosen.len();
                let bytes =
                    binlog::assemble(&format, chosen.iter().map(|t| &raw[t.start as usize..t.end as usize]));
                let path = replay_dir.join(format!("{:012}.binlog", s.seq));
                std::fs::write(&path, bytes).map_err(|e| io(format!("writing {}", path.display()), e))?;
                files.push(path);
            }
            if replayer.done() {
                break;
            }
        }
        if !files.is_empty() {
            job.phase(format!("replaying {transactions} transaction(s) from {} segment(s)", files.len()));
            self.replay(&mut root, facts, socket, &files, &stage.join("replay.log")).await?;
        }
        // 6. Verify.
        job.phase("verifying the executed GTID set");
        let expected = start.union(&replayer.applied);
        let have = executed_set(&mut root, facts.mariadb).await?;
        if tip.flavor == "mariadb" {
            let sql = "SET GLOBAL gtid_slave_pos = @@gtid_binlog_pos";
            root.query_drop(sql).await.map_err(|e| BackupError::Failed(format!("{sql} on {target}: {e}")))?;
        }
        if have != expected {
            return Err(BackupError::Failed(format!(
                "after the replay {target} has executed {have}, where {expected} was planned"
            )));
        }
        let last = match &replayer.last_applied {
            Some((gtid, at)) => format!("up to {gtid} (committed {})", format_micros(at.micros)),
            None => "nothing to replay".into(),
        };
        let chain_text: Vec<String> = chain.iter().map(|m| format!("{} {}", m.kind, m.id)).collect();
        Ok(format!(
            "restored {} onto {target} and replayed {transactions} transaction(s) {last}; executed GTID set {have}",
            chain_text.join(" + ")
        ))
    }

    /// Replays `files` through the flavor's binlog tool into its client, one session,
    /// with the server's read-only switches off meanwhile (and put back after).
    async fn replay(
        &self,
        root: &mut mysql_async::Conn,
        facts: &ServerFacts,
        socket: &Path,
        files: &[PathBuf],
        log: &Path,
    ) -> Result<(), BackupError> {
        let read_only: Vec<Option<String>> = if facts.mariadb {
            super::service::query_row(root, "SELECT @@read_only").await?
        } else {
            super::service::query_row(root, "SELECT @@read_only, @@super_read_only").await?
        };
        let off = if facts.mariadb {
            "SET GLOBAL read_only = OFF"
        } else {
            "SET GLOBAL super_read_only = OFF, GLOBAL read_only = OFF"
        };
        root.query_drop(off).await.map_err(|e| BackupError::Failed(format!("{off}: {e}")))?;
        let replayed = self.replay_files(socket, facts, files, log).await;
        let back = match read_only.as_slice() {
            [Some(ro)] if ro == "1" => Some("SET GLOBAL read_only = ON".to_string()),
            [Some(ro), Some(sro)] if ro == "1" || sro == "1" => Some(format!(
                "SET GLOBAL read_only = {}, GLOBAL super_read_only = {}",
                if ro == "1" { "ON" } else { "OFF" },
                if sro == "1" { "ON" } else { "OFF" }
            )),
            _ => None,
        };
        if let Some(sql) = back {
            root.query_drop(&sql).await.map_err(|e| BackupError::Failed(format!("{sql}: {e}")))?;
        }
        replayed
    }

    async fn replay_files(
        &self,
        socket: &Path,
        facts: &ServerFacts,
        files: &[PathBuf],
        log: &Path,
    ) -> Result<(), BackupError> {
        let options = log.with_extension("cnf");
        let password = self.credentials.current().root.clone();
        let text = tools::option_file(
            "client",
            None,
            None,
            Some(socket),
            &self.config.backup.restore_user,
            &password,
        );
        tools::write_private(&options, &text)
            .map_err(|e| BackupError::Failed(format!("{}: {e}", options.display())))?;
        let (mut reader, mut client) = if facts.mariadb {
            (tokio::process::Command::new("mariadb-binlog"), tokio::process::Command::new("mariadb"))
        } else {
            (
                self.programs.command("usr/bin/mysqlbinlog", "mysqlbinlog"),
                self.programs.command("usr/bin/mysql", "mysql"),
            )
        };
        let log_file = || std::fs::OpenOptions::new().create(true).append(true).open(log);
        let mut binlog_tool = reader
            .arg("--no-defaults")
            .args(tools::replay_arguments(files))
            .stdout(std::process::Stdio::piped())
            .stderr(log_file().map_err(|e| BackupError::Failed(e.to_string()))?)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| BackupError::Failed(format!("cannot start the binlog tool: {e}")))?;
        let sql: std::process::Stdio = binlog_tool
            .stdout
            .take()
            .expect("stdout is piped")
            .try_into()
            .map_err(|e: std::io::Error| BackupError::Failed(e.to_string()))?;
        let mut session = client
            .args(tools::replay_client_arguments(&options))
            .stdin(sql)
            .stdout(log_file().map_err(|e| BackupError::Failed(e.to_string()))?)
            .stderr(log_file().map_err(|e| BackupError::Failed(e.to_string()))?)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| BackupError::Failed(format!("cannot start the client: {e}")))?;
        let (a, b) = tokio::join!(binlog_tool.wait(), session.wait());
        let _ = std::fs::remove_file(&options);
        let (a, b) = (
            a.map_err(|e| BackupError::Failed(e.to_string()))?,
            b.map_err(|e| BackupError::Failed(e.to_string()))?,
        );
        if !a.success() || !b.success() {
            return Err(BackupError::Failed(format!(
                "replaying the archived binlogs failed (binlog tool {a}, client {b}): {}",
                crate::donor::last_error_line(log)
            )));
        }
        Ok(())
    }
}

/// Moves the data directory aside and the prepared copy into its place (made the
/// directory owner's, its replication settings forgotten). On failure the data
/// directory is as it was.
fn swap_in(datadir: &Path, aside: &Path, prepared: &Path) -> Result<(), BackupError> {
    use std::os::unix::fs::MetadataExt;
    let io = |what: String, e: std::io::Error| BackupError::Failed(format!("{what}: {e}"));
    let owner = std::fs::metadata(datadir).map_err(|e| io(format!("reading {}", datadir.display()), e))?;
    // Owned before the swap: a failure here leaves the data directory untouched.
    chown_tree(prepared, owner.uid(), owner.gid())
        .map_err(|e| io(format!("giving {} to the data directory's owner", prepared.display()), e))?;
    // The copy of a replica holds its replication settings: a restored server must
    // not start replicating from the cluster (it would run past the point).
    forget_replication_files(prepared);
    std::fs::rename(datadir, aside).map_err(|e| io(format!("moving {} aside", datadir.display()), e))?;
    if let Err(e) = std::fs::rename(prepared, datadir) {
        let _ = std::fs::rename(aside, datadir);
        return Err(io(format!("moving the restored data to {}", datadir.display()), e));
    }
    Ok(())
}

/// Undoes [`swap_in`]: the restored copy goes to `failed`, the data directory's own
/// data back in place. Nothing to do when the swap never happened.
fn put_back(datadir: &Path, aside: &Path, failed: &Path) -> Result<(), String> {
    if !aside.exists() {
        return Ok(());
    }
    if datadir.exists() {
        std::fs::rename(datadir, failed)
            .map_err(|e| format!("moving {} to {}: {e}", datadir.display(), failed.display()))?;
    }
    std::fs::rename(aside, datadir)
        .map_err(|e| format!("moving {} back to {}: {e}", aside.display(), datadir.display()))
}

/// Runs `argv`, failing with its output's last line.
async fn run_command(argv: &[String], what: &str) -> Result<(), BackupError> {
    let (program, args) =
        argv.split_first().ok_or_else(|| BackupError::Failed(format!("{what}: no command configured")))?;
    let out = tokio::process::Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .map_err(|e| BackupError::Failed(format!("{what}: cannot run {program}: {e}")))?;
    if !out.status.success() {
        let text = String::from_utf8_lossy(&out.stderr);
        let line = text.lines().last().unwrap_or_default();
        return Err(BackupError::Failed(format!(
            "{what}: `{}` failed ({}): {line}",
            argv.join(" "),
            out.status
        )));
    }
    Ok(())
}

/// Polls `check` every 200 ms until it holds or `limit` passes.
async fn wait_until<F, Fut>(limit: Duration, mut check: F) -> Result<(), ()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    loop {
        if check().await {
            return Ok(());
        }
        if started.elapsed() > limit {
            return Err(());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Removes a copied replica's replication files (MariaDB keeps them as files; MySQL
/// in tables, reset once the server runs).
fn forget_replication_files(datadir: &Path) {
    let Ok(entries) = std::fs::read_dir(datadir) else { return };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if matches!(name.as_str(), "master.info" | "relay-log.info" | "multi-master.info")
            || name.contains("relay-bin")
        {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// Gives every file and directory under `dir` to `uid:gid`.
fn chown_tree(dir: &Path, uid: u32, gid: u32) -> std::io::Result<()> {
    std::os::unix::fs::lchown(dir, Some(uid), Some(gid))?;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            chown_tree(&entry.path(), uid, gid)?;
        } else {
            std::os::unix::fs::lchown(entry.path(), Some(uid), Some(gid))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn points_parse_from_what_operators_type() {
        assert_eq!(PointSpec::parse("latest", false), Ok(PointSpec::Latest));
        assert_eq!(
            PointSpec::parse("2026-12-04T18:50:48.5Z", false),
            Ok(PointSpec::Time(1_796_410_248_500_000))
        );
        assert_eq!(
            PointSpec::parse("2026-12-04 18:50:48", false),
            Ok(PointSpec::Time(1_796_410_248_000_000))
        );
        match PointSpec::parse("0-1-100", true).unwrap() {
            PointSpec::Gtids { set, exclusive } => {
                assert_eq!((set.to_string(), exclusive), ("0-1-100".into(), true))
            }
            other => panic!("{other:?}"),
        }
        assert!(PointSpec::parse("aa09fc88-f013-11f1-8e2a-02fc00000001:1-5", false).is_ok());
        assert!(PointSpec::parse("yesterday", false).unwrap_err().contains("neither latest"));
        assert!(PointSpec::parse("", false).is_err());
    }
}
