//! Real `mariadbd` servers and GTID replication topologies built from them.
//!
//! Each server gets its own data directory, its own loopback address and port 3306,
//! the node `my.cnf` from `provisioner::mysql_config`, and the users the product
//! expects (`orchestrator`, `repl`, `app`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, OptsBuilder};
use provisioner::mysql_config::{render, MysqlServerConfig, ServerFlavor};

use crate::process::{Lifetime, ManagedChild};

/// Credentials the test bed creates on every cluster.
pub const ORCH_USER: &str = "orchestrator";
pub const ORCH_PASSWORD: &str = "orch-pass";
pub const REPL_USER: &str = "repl";
pub const REPL_PASSWORD: &str = "repl-pass";
pub const APP_USER: &str = "app";
pub const APP_PASSWORD: &str = "app-pass";
/// The table the orchestrator writes to, as the application, to verify a promotion.
pub const WRITE_CHECK_TABLE: &str = "app.orchestrator_write_check";

/// One `mariadbd`.
pub struct MariaDbServer {
    pub server_id: u32,
    pub host: String,
    pub port: u16,
    pub base: PathBuf,
    config_file: PathBuf,
    state_dir: PathBuf,
    lifetime: Lifetime,
    /// The simulated host's cgroup (see `hosts::HostCgroup`).
    pub cgroup: Option<PathBuf>,
    process: Option<ManagedChild>,
}

/// Finds a program in PATH or the usual sbin directories.
pub fn find_program(name: &str) -> anyhow::Result<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    let found = path
        .split(':')
        .chain(["/usr/sbin", "/usr/bin", "/usr/local/sbin", "/sbin"])
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file());
    found.with_context(|| format!("`{name}` not found: install Debian's mariadb-server"))
}

impl MariaDbServer {
    /// Initialises a data directory under `base` and writes the config; does not start.
    pub fn init(
        server_id: u32,
        host: &str,
        base: &Path,
        state_dir: &Path,
        writable: bool,
        lifetime: Lifetime,
    ) -> anyhow::Result<MariaDbServer> {
        let mut cfg =
            MysqlServerConfig::small(ServerFlavor::Mariadb, server_id, host, 3306, base.to_path_buf());
        cfg.read_only = !writable;
        cfg.os_user = Some("root".into());
        std::fs::create_dir_all(&cfg.datadir)?;
        std::fs::create_dir_all(&cfg.run_dir)?;
        std::fs::create_dir_all(&cfg.tmp_dir)?;
        let config_file = base.join("my.cnf");
        std::fs::write(&config_file, render(&cfg))?;
        let install_log = base.join("install-db.log");
        let out = Command::new(find_program("mariadb-install-db")?)
            .arg(format!("--defaults-file={}", config_file.display()))
            .args(["--auth-root-authentication-method=normal", "--skip-test-db", "--skip-name-resolve"])
            .output()
            .context("cannot run mariadb-install-db")?;
        let _ = std::fs::write(&install_log, [out.stdout.as_slice(), out.stderr.as_slice()].concat());
        if !out.status.success() {
            let error_log = std::fs::read_to_string(cfg.run_dir.join("error.log")).unwrap_or_default();
            let reason = error_log.lines().rev().find(|l| l.contains("ERROR")).unwrap_or("no ERROR line");
            bail!("mariadb-install-db failed for {host}: {reason} (see {})", install_log.display());
        }
        Ok(MariaDbServer {
            server_id,
            host: host.to_string(),
            port: 3306,
            base: base.to_path_buf(),
            config_file,
            state_dir: state_dir.to_path_buf(),
            lifetime,
            cgroup: None,
            process: None,
        })
    }

    pub fn socket(&self) -> PathBuf {
        self.base.join("run").join("mysqld.sock")
    }

    pub fn key(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    /// Starts `mariadbd` and waits until it accepts connections.
    pub async fn start(&mut self) -> anyhow::Result<()> {
        let mut cmd = Command::new(find_program("mariadbd")?);
        cmd.arg(format!("--defaults-file={}", self.config_file.display()));
        let log = self.base.join("mariadbd.out");
        self.process = Some(ManagedChild::spawn(
            &format!("mariadbd {}", self.host),
            cmd,
            &log,
            &self.state_dir,
            self.lifetime,
            self.cgroup.as_deref(),
        )?);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(c) = self.root().await {
                let _ = c.disconnect().await;
                return Ok(());
            }
            if self.process.as_mut().is_some_and(ManagedChild::has_exited) {
                bail!(
                    "mariadbd on {} exited at start; see {}",
                    self.host,
                    self.base.join("run/error.log").display()
                );
            }
            if Instant::now() > deadline {
                bail!("mariadbd on {} not ready after 30 s", self.host);
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// `kill -9` of the server.
    pub fn kill(&mut self) {
        if let Some(mut p) = self.process.take() {
            p.kill();
        }
    }

    /// Sends a signal (SIGSTOP / SIGCONT) to the running server.
    pub fn signal(&self, signal: i32) {
        if let Some(p) = &self.process {
            p.signal(signal);
        }
    }

    pub fn is_running(&mut self) -> bool {
        self.process.as_mut().is_some_and(|p| !p.has_exited())
    }

    /// Leaves the server running after this handle goes (the sandbox).
    pub fn detach(&mut self) -> Option<u32> {
        self.process.take().map(ManagedChild::detach)
    }

    /// A root connection over the unix socket.
    pub async fn root(&self) -> anyhow::Result<Conn> {
        let opts = OptsBuilder::default()
            .socket(Some(self.socket().display().to_string()))
            .user(Some("root"))
            .stmt_cache_size(0);
        let conn = tokio::time::timeout(Duration::from_secs(5), Conn::new(opts))
            .await
            .context("connect timed out")??;
        Ok(conn)
    }

    /// A TCP connection as `user`.
    pub async fn connect_as(&self, user: &str, password: &str) -> anyhow::Result<Conn> {
        let opts = OptsBuilder::default()
            .ip_or_hostname(self.host.clone())
            .tcp_port(self.port)
            .user(Some(user))
            .pass(Some(password))
            .prefer_socket(false)
            .stmt_cache_size(0);
        let conn = tokio::time::timeout(Duration::from_secs(5), Conn::new(opts))
            .await
            .with_context(|| format!("connect to {} timed out", self.key()))??;
        Ok(conn)
    }

    /// Runs statements as root.
    pub async fn exec(&self, sql: &str) -> anyhow::Result<()> {
        let mut c = self.root().await?;
        c.query_drop(sql).await.with_context(|| format!("on {}: {sql}", self.host))?;
        c.disconnect().await?;
        Ok(())
    }

    /// One scalar as text (`None` for NULL).
    pub async fn scalar(&self, sql: &str) -> anyhow::Result<Option<String>> {
        let mut c = self.root().await?;
        let v: Option<Option<String>> =
            c.query_first(sql).await.with_context(|| format!("on {}: {sql}", self.host))?;
        c.disconnect().await?;
        Ok(v.flatten())
    }

    /// `SHOW SLAVE STATUS` as column → value (`None` when not a replica).
    pub async fn slave_status(&self) -> anyhow::Result<Option<std::collections::BTreeMap<String, String>>> {
        let mut c = self.root().await?;
        let row: Option<mysql_async::Row> = c.query_first("SHOW SLAVE STATUS").await?;
        c.disconnect().await?;
        Ok(row.map(|r| {
            r.columns_ref()
                .iter()
                .enumerate()
                .map(|(i, col)| {
                    let v = match r.as_ref(i) {
                        Some(mysql_async::Value::Bytes(b)) => String::from_utf8_lossy(b).into_owned(),
                        Some(mysql_async::Value::NULL) | None => String::new(),
                        Some(other) => other.as_sql(true),
                    };
                    (col.name_str().into_owned(), v)
                })
                .collect()
        }))
    }

    /// Replicates from `master` with GTID (`MASTER_USE_GTID=slave_pos`).
    pub async fn replicate_from(&self, master: &MariaDbServer) -> anyhow::Result<()> {
        self.exec(&format!(
            "CHANGE MASTER TO MASTER_HOST='{}', MASTER_PORT={}, MASTER_USER='{REPL_USER}', \
             MASTER_PASSWORD='{REPL_PASSWORD}', MASTER_USE_GTID=slave_pos, MASTER_CONNECT_RETRY=1",
            master.host, master.port
        ))
        .await?;
        self.exec("START SLAVE").await
    }
}

/// The grants of the orchestrator's own user on MariaDB 10.11 (DESIGN.md section 7).
pub const ORCH_GRANTS: &str = "SUPER, PROCESS, REPLICATION SLAVE, RELOAD, READ_ONLY ADMIN, \
     SLAVE MONITOR, REPLICATION SLAVE ADMIN, REPLICATION MASTER ADMIN, BINLOG ADMIN, BINLOG MONITOR";

/// One master and `n - 1` replicas on hosts `127.X.Y.1..=n`, GTID replication running.
pub struct MariaDbCluster {
    pub servers: Vec<MariaDbServer>,
}

impl MariaDbCluster {
    /// Initialises, starts and wires `hosts.len()` servers; the first is the master.
    pub async fn start(
        hosts: &[String],
        dir: &Path,
        state_dir: &Path,
        lifetime: Lifetime,
        cgroups: &[Option<PathBuf>],
    ) -> anyhow::Result<MariaDbCluster> {
        let mut servers = Vec::new();
        for (i, host) in hosts.iter().enumerate() {
            let base = dir.join(format!("mysql-{host}"));
            let mut server = MariaDbServer::init(i as u32 + 1, host, &base, state_dir, i == 0, lifetime)?;
            server.cgroup = cgroups.get(i).cloned().flatten();
            servers.push(server);
        }
        for s in servers.iter_mut() {
            s.start().await?;
        }
        let cluster = MariaDbCluster { servers };
        // Users are created on every server outside the binlog: with semi-sync that
        // never falls back, a replicated commit before the replicas connect would wait.
        for s in &cluster.servers {
            s.exec(&format!(
                "SET sql_log_bin = 0; \
                 CREATE USER '{ORCH_USER}'@'%' IDENTIFIED BY '{ORCH_PASSWORD}'; \
                 GRANT {ORCH_GRANTS} ON *.* TO '{ORCH_USER}'@'%'; \
                 GRANT SELECT ON mysql.* TO '{ORCH_USER}'@'%'; \
                 CREATE USER '{REPL_USER}'@'%' IDENTIFIED BY '{REPL_PASSWORD}'; \
                 GRANT REPLICATION SLAVE ON *.* TO '{REPL_USER}'@'%'; \
                 CREATE USER '{APP_USER}'@'%' IDENTIFIED BY '{APP_PASSWORD}'; \
                 GRANT ALL ON app.* TO '{APP_USER}'@'%'; \
                 SET sql_log_bin = 1"
            ))
            .await?;
        }
        let master = &cluster.servers[0];
        for replica in &cluster.servers[1..] {
            replica.replicate_from(master).await?;
        }
        cluster.wait_semi_sync_clients(0, cluster.servers.len() - 1, Duration::from_secs(30)).await?;
        master
            .exec(
                "CREATE DATABASE app; \
                 CREATE TABLE app.writes (id BIGINT PRIMARY KEY, at TIMESTAMP(6) DEFAULT CURRENT_TIMESTAMP(6)); \
                 CREATE TABLE app.orchestrator_write_check (id INT PRIMARY KEY, at DATETIME(6))",
            )
            .await?;
        cluster.wait_replicated(Duration::from_secs(30)).await?;
        Ok(cluster)
    }

    /// Waits until server `master` has `clients` semi-sync replicas connected.
    pub async fn wait_semi_sync_clients(
        &self,
        master: usize,
        clients: usize,
        timeout: Duration,
    ) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let n = self.servers[master]
                .scalar(
                    "SELECT VARIABLE_VALUE FROM information_schema.GLOBAL_STATUS \
                     WHERE VARIABLE_NAME = 'RPL_SEMI_SYNC_MASTER_CLIENTS'",
                )
                .await?
                .and_then(|v| v.parse::<usize>().ok())
                .unwrap_or(0);
            if n >= clients {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("{} has {n} semi-sync replicas, expected {clients}", self.servers[master].host);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn master(&self) -> &MariaDbServer {
        &self.servers[0]
    }

    /// Waits until every running replica has executed the master's binlog position.
    pub async fn wait_replicated(&self, timeout: Duration) -> anyhow::Result<()> {
        let target = self.master().scalar("SELECT @@gtid_binlog_pos").await?.unwrap_or_default();
        let deadline = Instant::now() + timeout;
        for r in &self.servers[1..] {
            loop {
                let pos = r.scalar("SELECT @@gtid_slave_pos").await?.unwrap_or_default();
                if pos == target {
                    break;
                }
                if Instant::now() > deadline {
                    bail!("{} at `{pos}`, master at `{target}` after {timeout:?}", r.host);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        Ok(())
    }
}
