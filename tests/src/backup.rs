//! Backups in the test bed: the `[backup]` section the cluster's peers run with (test
//! timings: short leases, a one-second archive flush, 1 MiB parts so a small database
//! still makes many), restore hosts outside the cluster (a fresh server and a peer
//! that only restores the cluster's backups, stopping and starting its server as a
//! service manager would), and a writer that records when each write was sent and
//! when it was acknowledged, so a point in time splits them exactly.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use mysql_async::prelude::Queryable;

use crate::ctl::Ctl;
use crate::db::{DbServer, Flavor, MysqlRoot};
use crate::peer::{self, Peer, PeerAws, PeerGroupSpec, ADMIN_TOKEN};
use crate::process::Lifetime;
use crate::AwsBed;

/// Microseconds since the Unix epoch.
pub fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

/// The `[backup]` section of a test peer; `extra` lines set more of its keys (a key
/// given there replaces the test default) or append tables (`[[backup.restore_from]]`).
pub fn backup_section(flavor: Flavor, extra: &[String]) -> anyhow::Result<String> {
    let mut keys: Vec<(String, String)> = [
        ("enabled", "true"),
        ("lock_lease_s", "4"),
        ("archive_lease_s", "3"),
        ("binlog_flush_s", "1"),
        ("part_size_mb", "1"),
        ("concurrency", "4"),
        ("tool_parallel", "2"),
        ("maintenance_interval_s", "2"),
        ("full_every_s", "0"),
        ("incremental_every_s", "0"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    if flavor == Flavor::Mysql {
        keys.push(("mysql_root".into(), format!("\"{}\"", MysqlRoot::find()?.dir.display())));
    }
    let mut tables = Vec::new();
    for line in extra {
        match line.split_once('=') {
            Some((k, v)) if !line.trim_start().starts_with('[') && !line.contains('\n') => {
                let (k, v) = (k.trim().to_string(), v.trim().to_string());
                match keys.iter_mut().find(|(key, _)| *key == k) {
                    Some(entry) => entry.1 = v,
                    None => keys.push((k, v)),
                }
            }
            _ => tables.push(line.clone()),
        }
    }
    let mut s = String::from("[backup]\n");
    for (k, v) in keys {
        s += &format!("{k} = {v}\n");
    }
    for t in tables {
        s += &t;
        s.push('\n');
    }
    Ok(s)
}

/// A TOML array of strings.
fn toml_list(items: &[String]) -> String {
    let quoted: Vec<String> =
        items.iter().map(|i| format!("\"{}\"", i.replace('\\', "\\\\").replace('"', "\\\""))).collect();
    format!("[{}]", quoted.join(", "))
}

/// `'...'` for `sh -c`.
fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// A host outside the cluster with an empty server and a peer that restores the
/// cluster's backups onto it (`[[backup.restore_from]]`); its server is stopped and
/// started through its pid file, as a service manager would.
pub struct RestoreHost {
    pub host: String,
    pub server: DbServer,
    pub peer: Peer,
    pub ctl: Ctl,
    pid_file: PathBuf,
}

impl RestoreHost {
    /// On spare host `spare` of `bed`, for the backups of `alias`; `extra`: more
    /// `[backup]` settings of its peer (an encryption key).
    pub async fn start(
        bed: &AwsBed,
        flavor: Flavor,
        spare: u8,
        alias: &str,
        extra: &[String],
    ) -> anyhow::Result<RestoreHost> {
        let host = bed.spare_host(spare);
        let base = bed.bed.path().join(format!("restore-{host}"));
        let mut server = DbServer::init(
            flavor,
            90 + spare as u32,
            &host,
            &base.join("mysql"),
            bed.bed.hosts.state_dir(),
            false,
            Lifetime::Test,
        )?;
        server.start().await?;
        server.create_users().await?;
        let pid_file = server.base.join("run/mysqld.pid");
        let pid = pid_file.display().to_string();
        let line: Vec<String> = server.command_line()?.iter().map(|a| shell_quote(a)).collect();
        let out = base.join("restored-server.out");
        let stop = vec![
            "sh".to_string(),
            "-c".into(),
            format!("kill $(cat {pid}) && while [ -e {pid} ]; do sleep 0.1; done"),
        ];
        let start = vec![
            "sh".to_string(),
            "-c".into(),
            format!(
                "nohup {} >> {} 2>&1 < /dev/null &",
                line.join(" "),
                shell_quote(&out.display().to_string())
            ),
        ];
        let mut spec = PeerGroupSpec::raft_only();
        spec.aws = Some(PeerAws::new(&bed.moto.endpoint, &bed.resources));
        let mut settings = vec![
            format!("server_stop_command = {}", toml_list(&stop)),
            format!("server_start_command = {}", toml_list(&start)),
        ];
        settings.extend(extra.iter().cloned());
        settings.push(format!(
            "\n[[backup.restore_from]]\nalias = \"{alias}\"\ncluster_id = \"{}\"",
            bed.resources.cluster_id
        ));
        spec.extra_config.push(backup_section(flavor, &settings)?);
        let peers = peer::start_peers(
            std::slice::from_ref(&host),
            &spec,
            &base.join("peer"),
            bed.bed.hosts.state_dir(),
            Lifetime::Test,
            &[None],
        )
        .await?;
        let peer = peers.into_iter().next().context("a restore peer")?;
        let ctl = Ctl::new(&base, vec![peer.http_address()], Some(ADMIN_TOKEN))?;
        Ok(RestoreHost { host, server, peer, ctl, pid_file })
    }

    /// The server's `host:port`.
    pub fn key(&self) -> String {
        format!("{}:3306", self.host)
    }
}

impl Drop for RestoreHost {
    fn drop(&mut self) {
        self.peer.kill();
        // The restored server runs detached (started by the peer's start command).
        if let Some(pid) =
            std::fs::read_to_string(&self.pid_file).ok().and_then(|p| p.trim().parse::<i32>().ok())
        {
            // SAFETY: a plain kill of a pid this test's server wrote.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
        }
        self.server.kill();
        if !std::thread::panicking() {
            if let Some(found) = peer::find_secret_in_logs(std::slice::from_ref(&self.peer), &peer::secrets())
            {
                panic!("{found}");
            }
        }
    }
}

/// One write the application made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Write {
    pub id: u64,
    pub sent_us: i64,
    /// 0 when no acknowledgement came (failed or timed out: it may or may not exist).
    pub acked_us: i64,
}

/// A writer inserting `app.writes` rows into whichever host is writable, one at a
/// time, recording each write's times; it can be paused (then it is idle: no write in
/// flight) to mark an exact point.
pub struct AckWriter {
    stop: Arc<AtomicBool>,
    pause: Arc<AtomicBool>,
    idle: Arc<AtomicBool>,
    log: Arc<Mutex<Vec<Write>>>,
    task: tokio::task::JoinHandle<()>,
}

impl AckWriter {
    /// Starts writing ids from `first`, one every `every`.
    pub fn start(hosts: Vec<String>, first: u64, every: Duration) -> AckWriter {
        let (stop, pause, idle) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicBool::new(false)),
        );
        let log = Arc::new(Mutex::new(Vec::new()));
        let task = tokio::spawn({
            let (stop, pause, idle, log) = (stop.clone(), pause.clone(), idle.clone(), log.clone());
            async move {
                let mut conn: Option<mysql_async::Conn> = None;
                let mut id = first;
                while !stop.load(Ordering::SeqCst) {
                    if pause.load(Ordering::SeqCst) {
                        idle.store(true, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(5)).await;
                        continue;
                    }
                    idle.store(false, Ordering::SeqCst);
                    if conn.is_none() {
                        conn = crate::writer::find_master(&hosts).await;
                        if conn.is_none() {
                            tokio::time::sleep(Duration::from_millis(20)).await;
                            continue;
                        }
                    }
                    let c = conn.as_mut().expect("connected");
                    let sent_us = now_us();
                    let sql = format!("INSERT INTO app.writes (id) VALUES ({id})");
                    let done = tokio::time::timeout(Duration::from_secs(2), c.query_drop(sql)).await;
                    let acked_us = match done {
                        Ok(Ok(())) => now_us(),
                        _ => {
                            conn = None;
                            0
                        }
                    };
                    log.lock().unwrap().push(Write { id, sent_us, acked_us });
                    id += 1;
                    tokio::time::sleep(every).await;
                }
            }
        });
        AckWriter { stop, pause, idle, log, task }
    }

    /// Stops writing and waits until no write is in flight.
    pub async fn pause(&self) {
        self.pause.store(true, Ordering::SeqCst);
        while !self.idle.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    pub fn resume(&self) {
        self.idle.store(false, Ordering::SeqCst);
        self.pause.store(false, Ordering::SeqCst);
    }

    /// Every write so far.
    pub fn writes(&self) -> Vec<Write> {
        self.log.lock().unwrap().clone()
    }

    pub async fn stop(self) -> Vec<Write> {
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.task.await;
        self.log.lock().unwrap().clone()
    }
}

/// `CHECKSUM TABLE` of `tables` on `server` (as root), in order.
pub async fn checksums(server: &DbServer, tables: &[&str]) -> anyhow::Result<Vec<(String, Option<u64>)>> {
    let mut c = server.root().await?;
    let rows: Vec<(String, Option<u64>)> = c.query(format!("CHECKSUM TABLE {}", tables.join(", "))).await?;
    c.disconnect().await?;
    Ok(rows)
}

/// The ids in `app.writes` on `server`.
pub async fn written_ids(server: &DbServer) -> anyhow::Result<std::collections::BTreeSet<u64>> {
    let mut c = server.root().await?;
    let ids: Vec<u64> = c.query("SELECT id FROM app.writes").await?;
    c.disconnect().await?;
    Ok(ids.into_iter().collect())
}

/// The cluster's bucket, as the peers see it (moto, the test credentials).
pub async fn bucket(bed: &AwsBed) -> orchestrator::backup::store::S3Store {
    let credentials = aws_connect::Credentials::new(
        crate::aws::ACCESS_KEY_ID,
        crate::aws::SECRET_ACCESS_KEY,
        None,
        None,
        "orch-tests",
    );
    let settings = crate::aws::aws_config(&bed.moto.endpoint).connect_settings();
    let name = format!("percona-{}-backups", bed.resources.cluster_id);
    orchestrator::backup::store::S3Store::connect(
        &settings,
        Some(credentials),
        &name,
        Duration::from_secs(30),
    )
    .await
}
