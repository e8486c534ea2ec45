//! Real database servers of either flavor, and GTID replication topologies built from
//! them: MariaDB (`mariadbd` from Debian's `mariadb-server`) or MySQL 9.7 (`mysqld`
//! from Debian sid's `mysql-server-core`, run from a minimal root of its own through
//! that root's loader: DESIGN.md section 7).
//!
//! Each server gets its own data directory, its own loopback address and port 3306,
//! the node `my.cnf` from `provisioner::mysql_config`, and the users the product
//! expects (`orchestrator`, `repl`, `app`) with the privileges of
//! `provisioner::mysql_users`. MySQL servers start from a copy of one data directory
//! initialized once per test process (`mysqld --initialize` takes ~2 s).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, OptsBuilder};
use provisioner::mysql_config::{render, MysqlServerConfig, ServerFlavor};
use provisioner::mysql_users::{create_user_statements, UserRole};

use crate::process::{Lifetime, ManagedChild};

/// Credentials the test bed creates on every cluster.
pub const ORCH_USER: &str = "orchestrator";
pub const ORCH_PASSWORD: &str = "orch-pass";
pub const REPL_USER: &str = "repl";
pub const REPL_PASSWORD: &str = "repl-pass";
pub const APP_USER: &str = "app";
pub const APP_PASSWORD: &str = "app-pass";
pub const BACKUP_USER: &str = "backup";
pub const BACKUP_PASSWORD: &str = "backup-pass";
/// The table the orchestrator writes to, as the application, to verify a promotion.
pub const WRITE_CHECK_TABLE: &str = "app.orchestrator_write_check";

/// Which server family a test bed runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// MariaDB 10.11 from Debian's `mariadb-server`.
    Mariadb,
    /// Oracle MySQL 9.7 from its own Debian sid root.
    Mysql,
}

impl Flavor {
    pub const ALL: [Flavor; 2] = [Flavor::Mariadb, Flavor::Mysql];

    /// `mariadb` or `mysql`, as the orchestrator reports it.
    pub fn name(self) -> &'static str {
        match self {
            Flavor::Mariadb => "mariadb",
            Flavor::Mysql => "mysql",
        }
    }

    pub fn parse(text: &str) -> anyhow::Result<Flavor> {
        match text {
            "mariadb" => Ok(Flavor::Mariadb),
            "mysql" => Ok(Flavor::Mysql),
            other => bail!("unknown flavor `{other}`: use mariadb or mysql"),
        }
    }

    pub fn server_flavor(self) -> ServerFlavor {
        match self {
            Flavor::Mariadb => ServerFlavor::Mariadb,
            Flavor::Mysql => ServerFlavor::Mysql,
        }
    }

    /// The set of transactions a server has executed, as the server prints it.
    pub fn gtid_executed_sql(self) -> &'static str {
        match self {
            Flavor::Mariadb => "SELECT @@gtid_binlog_pos",
            Flavor::Mysql => "SELECT @@gtid_executed",
        }
    }

    /// Makes a running replica apply `seconds` behind its source.
    pub fn delay_sql(self, seconds: u32) -> String {
        match self {
            Flavor::Mariadb => format!("STOP SLAVE; CHANGE MASTER TO MASTER_DELAY = {seconds}; START SLAVE"),
            Flavor::Mysql => {
                format!("STOP REPLICA; CHANGE REPLICATION SOURCE TO SOURCE_DELAY = {seconds}; START REPLICA")
            }
        }
    }

    /// The status variable counting the master's semi-sync replicas.
    fn semi_sync_clients_variable(self) -> &'static str {
        match self {
            Flavor::Mariadb => "Rpl_semi_sync_master_clients",
            Flavor::Mysql => "Rpl_semi_sync_source_clients",
        }
    }

    /// Statements that run `sql` on a read-only replica as root anyway (an errant
    /// transaction, accounts): MySQL's `super_read_only` holds even root back, so it
    /// is lifted meanwhile and put back as it was.
    pub fn local_write_sql(self, sql: &str) -> String {
        match self {
            Flavor::Mariadb => sql.to_string(),
            Flavor::Mysql => format!(
                "SET @orch_super_read_only = @@GLOBAL.super_read_only; SET GLOBAL super_read_only = OFF; \
                 {sql}; SET GLOBAL super_read_only = @orch_super_read_only"
            ),
        }
    }
}

/// The MySQL root: a minimal Debian sid tree holding `mysql-server-core`, built by
/// `deploy/lib/ensure-deps.sh` (`ensure_mysql_root`) outside the repository.
#[derive(Debug, Clone)]
pub struct MysqlRoot {
    pub dir: PathBuf,
}

impl MysqlRoot {
    /// `ORCH_MYSQL_ROOT`, else `$XDG_CACHE_HOME/orch/mysql-root` (`~/.cache/...`), as
    /// the install step puts it.
    pub fn find() -> anyhow::Result<MysqlRoot> {
        let dir = match std::env::var_os("ORCH_MYSQL_ROOT") {
            Some(d) => PathBuf::from(d),
            None => {
                let cache = std::env::var_os("XDG_CACHE_HOME").map(PathBuf::from).unwrap_or_else(|| {
                    PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into())).join(".cache")
                });
                cache.join("orch").join("mysql-root")
            }
        };
        let root = MysqlRoot { dir };
        if !root.loader().is_file() || !root.dir.join("usr/sbin/mysqld").is_file() {
            bail!(
                "no MySQL root at {}: build it with `bash -c 'source deploy/lib/ensure-deps.sh && \
                 ensure_mysql_root'` (deploy/test and deploy/sandbox do it)",
                root.dir.display()
            );
        }
        Ok(root)
    }

    fn loader(&self) -> PathBuf {
        self.dir.join("lib64/ld-linux-x86-64.so.2")
    }

    fn programs(&self) -> provisioner::bootstrap::server::Programs {
        provisioner::bootstrap::server::Programs {
            flavor: ServerFlavor::Mysql,
            config: provisioner::bootstrap::facts::ProgramsConfig {
                mysql_root: Some(self.dir.clone()),
                ..Default::default()
            },
        }
    }

    /// A command running `program` (a path inside the root, e.g. `usr/bin/mysql`)
    /// with the root's own loader and libraries (as the node bootstrap runs them).
    pub fn command(&self, program: &str) -> Command {
        let (loader, args) = self.programs().in_root(program);
        let mut cmd = Command::new(loader);
        cmd.args(args);
        cmd
    }

    /// `mysqld` reading `config_file`, with the root's own base, messages and plugins:
    /// the node bootstrap's command line.
    pub fn mysqld(&self, config_file: &Path) -> Command {
        let (loader, args) = self.programs().mysqld(config_file);
        let mut cmd = Command::new(loader);
        cmd.args(args);
        cmd
    }

    /// `mysqld --version`'s line.
    pub fn version(&self) -> anyhow::Result<String> {
        let out = self.command("usr/sbin/mysqld").arg("--version").output()?;
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }
}

/// The data directory every MySQL server of this process starts from a copy of, with
/// the directory it lives in (removed when the process exits).
static MYSQL_TEMPLATE: Mutex<Option<PathBuf>> = Mutex::new(None);

extern "C" fn remove_mysql_template() {
    // Never wait at exit for a thread still initializing.
    if let Ok(guard) = MYSQL_TEMPLATE.try_lock() {
        if let Some(dir) = guard.as_ref().and_then(|d| d.parent()) {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// Initializes (once per process) the template data directory and returns it.
fn mysql_template(root: &MysqlRoot) -> anyhow::Result<PathBuf> {
    let mut guard = MYSQL_TEMPLATE.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(dir) = guard.as_ref() {
        return Ok(dir.clone());
    }
    let parent = std::env::temp_dir().join("orch-testbed");
    std::fs::create_dir_all(&parent)?;
    // Templates of earlier processes that died without cleaning up.
    for entry in std::fs::read_dir(&parent)?.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(pid) = name.strip_prefix("mysql-template-").and_then(|p| p.parse::<u32>().ok()) {
            if !crate::process::pid_alive(pid) {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
    let base = parent.join(format!("mysql-template-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&base);
    let mut cfg = MysqlServerConfig::small(ServerFlavor::Mysql, 1, "127.0.0.1", 3306, base.clone());
    cfg.os_user = Some("root".into());
    // `--initialize` loads no plugin, so knows no semi-sync variable.
    cfg.semi_sync = false;
    for d in [&cfg.datadir, &cfg.run_dir, &cfg.tmp_dir] {
        std::fs::create_dir_all(d)?;
    }
    let config_file = base.join("my.cnf");
    std::fs::write(&config_file, render(&cfg))?;
    let started = Instant::now();
    let out = root
        .mysqld(&config_file)
        .arg("--initialize-insecure")
        .output()
        .context("cannot run mysqld --initialize-insecure")?;
    if !out.status.success() {
        let reason = error_line(&cfg.run_dir.join("error.log"), false);
        bail!("mysqld --initialize-insecure failed: {reason} (see {})", base.display());
    }
    // Every copy must make its own server_uuid.
    let _ = std::fs::remove_file(cfg.datadir.join("auto.cnf"));
    eprintln!("mysql template initialized in {:?} ({})", started.elapsed(), root.version()?);
    // SAFETY: registers a plain extern "C" function to run at process exit.
    unsafe { libc::atexit(remove_mysql_template) };
    *guard = Some(cfg.datadir.clone());
    Ok(cfg.datadir)
}

/// An `ERROR` line of a server's error log, or a note that there is none: the first
/// (the cause, before `Aborting`) of a log one run wrote, or the newest of a log that
/// earlier runs of the server appended to.
fn error_line(log: &Path, newest: bool) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let mut errors = text.lines().filter(|l| l.contains("ERROR"));
    let line = if newest { errors.next_back() } else { errors.next() };
    line.unwrap_or("no ERROR line in the error log").to_string()
}

/// `cp -a` of a directory tree to `to` (replaced if it exists; reflinked where the
/// file system can).
fn copy_tree(from: &Path, to: &Path) -> anyhow::Result<()> {
    if to.exists() {
        std::fs::remove_dir_all(to).with_context(|| format!("cannot remove {}", to.display()))?;
    }
    let out = Command::new("cp")
        .arg("-aT")
        .arg("--reflink=auto")
        .arg(from)
        .arg(to)
        .output()
        .context("cannot run cp")?;
    if !out.status.success() {
        bail!(
            "copying {} to {} failed: {}",
            from.display(),
            to.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// One database server.
pub struct DbServer {
    pub flavor: Flavor,
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

impl DbServer {
    /// Initialises a data directory under `base` and writes the config; does not start.
    pub fn init(
        flavor: Flavor,
        server_id: u32,
        host: &str,
        base: &Path,
        state_dir: &Path,
        writable: bool,
        lifetime: Lifetime,
    ) -> anyhow::Result<DbServer> {
        let mut cfg =
            MysqlServerConfig::small(flavor.server_flavor(), server_id, host, 3306, base.to_path_buf());
        cfg.read_only = !writable;
        cfg.os_user = Some("root".into());
        // Backups of MySQL copy with the clone plugin.
        cfg.clone_plugin = flavor == Flavor::Mysql;
        std::fs::create_dir_all(&cfg.run_dir)?;
        std::fs::create_dir_all(&cfg.tmp_dir)?;
        let config_file = base.join("my.cnf");
        std::fs::write(&config_file, render(&cfg))?;
        match flavor {
            Flavor::Mariadb => {
                std::fs::create_dir_all(&cfg.datadir)?;
                let install_log = base.join("install-db.log");
                let out = Command::new(find_program("mariadb-install-db")?)
                    .arg(format!("--defaults-file={}", config_file.display()))
                    .args([
                        "--auth-root-authentication-method=normal",
                        "--skip-test-db",
                        "--skip-name-resolve",
                    ])
                    .output()
                    .context("cannot run mariadb-install-db")?;
                let _ = std::fs::write(&install_log, [out.stdout.as_slice(), out.stderr.as_slice()].concat());
                if !out.status.success() {
                    let reason = error_line(&cfg.run_dir.join("error.log"), true);
                    bail!("mariadb-install-db failed for {host}: {reason} (see {})", install_log.display());
                }
            }
            Flavor::Mysql => {
                let template = mysql_template(&MysqlRoot::find()?)?;
                copy_tree(&template, &cfg.datadir)?;
            }
        }
        Ok(DbServer {
            flavor,
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

    /// The server program's name (`mariadbd`, `mysqld`).
    pub fn program_name(&self) -> &'static str {
        match self.flavor {
            Flavor::Mariadb => "mariadbd",
            Flavor::Mysql => "mysqld",
        }
    }

    /// Starts the server and waits until it accepts connections.
    pub async fn start(&mut self) -> anyhow::Result<()> {
        let line = self.command_line()?;
        let mut cmd = Command::new(&line[0]);
        cmd.args(&line[1..]);
        let program = self.program_name();
        let log = self.base.join(format!("{program}.out"));
        self.process = Some(ManagedChild::spawn(
            &format!("{program} {}", self.host),
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
                let reason = error_line(&self.base.join("run/error.log"), true);
                bail!(
                    "{program} on {} exited at start: {reason} (see {})",
                    self.host,
                    self.base.join("run/error.log").display()
                );
            }
            if Instant::now() > deadline {
                bail!("{program} on {} not ready after 30 s", self.host);
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

    /// What this server has executed (`@@gtid_binlog_pos` / `@@gtid_executed`).
    pub async fn gtid_executed(&self) -> anyhow::Result<String> {
        Ok(self.scalar(self.flavor.gtid_executed_sql()).await?.unwrap_or_default())
    }

    /// The accounts the product expects (`orchestrator`, `repl`, `app`, `backup`) with
    /// their least privileges, outside the binary log.
    pub async fn create_users(&self) -> anyhow::Result<()> {
        let f = self.flavor.server_flavor();
        let mut users = vec!["SET sql_log_bin = 0".to_string()];
        for (role, user, password) in [
            (UserRole::Orchestrator, ORCH_USER, ORCH_PASSWORD),
            (UserRole::Replication, REPL_USER, REPL_PASSWORD),
            (UserRole::Application, APP_USER, APP_PASSWORD),
            (UserRole::Backup, BACKUP_USER, BACKUP_PASSWORD),
        ] {
            users.extend(create_user_statements(f, role, user, password, "app"));
        }
        users.push("SET sql_log_bin = 1".into());
        // super_read_only holds back account changes too: lifted meanwhile.
        self.write_locally(&users.join("; ")).await
    }

    /// The command line that starts this server (program first).
    pub fn command_line(&self) -> anyhow::Result<Vec<String>> {
        let cmd = match self.flavor {
            Flavor::Mariadb => {
                let mut cmd = Command::new(find_program("mariadbd")?);
                cmd.arg(format!("--defaults-file={}", self.config_file.display()));
                cmd
            }
            Flavor::Mysql => MysqlRoot::find()?.mysqld(&self.config_file),
        };
        let mut line = vec![cmd.get_program().to_string_lossy().into_owned()];
        line.extend(cmd.get_args().map(|a| a.to_string_lossy().into_owned()));
        Ok(line)
    }

    /// Runs `sql` as root on this server even when it is a read-only replica (an
    /// errant transaction).
    pub async fn write_locally(&self, sql: &str) -> anyhow::Result<()> {
        self.exec(&self.flavor.local_write_sql(sql)).await
    }

    /// `SHOW REPLICA STATUS`, which both flavors take (`None` when not a replica).
    pub async fn replica_status(&self) -> anyhow::Result<Option<ReplicaStatus>> {
        let mut c = self.root().await?;
        let row: Option<mysql_async::Row> = c.query_first("SHOW REPLICA STATUS").await?;
        c.disconnect().await?;
        Ok(row.map(|r| {
            ReplicaStatus(
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
                    .collect(),
            )
        }))
    }

    /// Replicates from `source` with GTID auto-positioning.
    pub async fn replicate_from(&self, source: &DbServer) -> anyhow::Result<()> {
        match self.flavor {
            Flavor::Mariadb => {
                self.exec(&format!(
                    "CHANGE MASTER TO MASTER_HOST='{}', MASTER_PORT={}, MASTER_USER='{REPL_USER}', \
                     MASTER_PASSWORD='{REPL_PASSWORD}', MASTER_USE_GTID=slave_pos, MASTER_CONNECT_RETRY=1",
                    source.host, source.port
                ))
                .await?;
                self.exec("START SLAVE").await
            }
            Flavor::Mysql => {
                self.exec(&format!(
                    "CHANGE REPLICATION SOURCE TO SOURCE_HOST='{}', SOURCE_PORT={}, SOURCE_USER='{REPL_USER}', \
                     SOURCE_PASSWORD='{REPL_PASSWORD}', SOURCE_AUTO_POSITION=1, SOURCE_CONNECT_RETRY=1, \
                     GET_SOURCE_PUBLIC_KEY=1",
                    source.host, source.port
                ))
                .await?;
                self.exec("START REPLICA").await
            }
        }
    }

    /// Whether this server has executed every transaction of `set` (a set printed by
    /// [`DbServer::gtid_executed`] on another server of the cluster).
    pub async fn has_executed(&self, set: &str) -> anyhow::Result<bool> {
        match self.flavor {
            // Replicas keep the replicated position in gtid_slave_pos; with one
            // domain and strict mode, equal text is equal position.
            Flavor::Mariadb => Ok(self.scalar("SELECT @@gtid_slave_pos").await?.unwrap_or_default() == set),
            Flavor::Mysql => {
                let v = self
                    .scalar(&format!("SELECT GTID_SUBSET('{}', @@gtid_executed)", set.replace('\'', "")))
                    .await?;
                Ok(v.as_deref() == Some("1"))
            }
        }
    }
}

/// One `SHOW REPLICA STATUS` row, column → value, read under either flavor's names.
#[derive(Debug, Clone, Default)]
pub struct ReplicaStatus(pub BTreeMap<String, String>);

impl ReplicaStatus {
    /// The first of `names` the row has.
    pub fn get(&self, names: &[&str]) -> Option<&str> {
        names.iter().find_map(|n| self.0.get(*n)).map(String::as_str)
    }

    /// The host it replicates from.
    pub fn source_host(&self) -> Option<&str> {
        self.get(&["Source_Host", "Master_Host"])
    }

    /// Both replication threads running.
    pub fn threads_running(&self) -> bool {
        self.get(&["Replica_IO_Running", "Slave_IO_Running"]) == Some("Yes")
            && self.get(&["Replica_SQL_Running", "Slave_SQL_Running"]) == Some("Yes")
    }

    /// What the IO thread has received (`Retrieved_Gtid_Set` / `Gtid_IO_Pos`).
    pub fn received_gtids(&self) -> Option<&str> {
        self.get(&["Retrieved_Gtid_Set", "Gtid_IO_Pos"])
    }
}

/// One master and `n - 1` replicas on hosts `127.X.Y.1..=n`, GTID replication running.
pub struct DbCluster {
    pub flavor: Flavor,
    pub servers: Vec<DbServer>,
}

impl DbCluster {
    /// Initialises, starts and wires `hosts.len()` servers; the first is the master.
    pub async fn start(
        flavor: Flavor,
        hosts: &[String],
        dir: &Path,
        state_dir: &Path,
        lifetime: Lifetime,
        cgroups: &[Option<PathBuf>],
    ) -> anyhow::Result<DbCluster> {
        let mut servers = Vec::new();
        for (i, host) in hosts.iter().enumerate() {
            let base = dir.join(format!("mysql-{host}"));
            let mut server = DbServer::init(flavor, i as u32 + 1, host, &base, state_dir, i == 0, lifetime)?;
            server.cgroup = cgroups.get(i).cloned().flatten();
            servers.push(server);
        }
        for s in servers.iter_mut() {
            s.start().await?;
        }
        let cluster = DbCluster { flavor, servers };
        // Users are created on every server outside the binlog: with semi-sync that
        // never falls back, a replicated commit before the replicas connect would wait.
        for s in &cluster.servers {
            s.create_users().await?;
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
        let sql = format!("SHOW GLOBAL STATUS LIKE '{}'", self.flavor.semi_sync_clients_variable());
        loop {
            let mut c = self.servers[master].root().await?;
            let row: Option<(String, String)> = c.query_first(&sql).await?;
            c.disconnect().await?;
            let n = row.and_then(|(_, v)| v.parse::<usize>().ok()).unwrap_or(0);
            if n >= clients {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("{} has {n} semi-sync replicas, expected {clients}", self.servers[master].host);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn master(&self) -> &DbServer {
        &self.servers[0]
    }

    /// Waits until every running replica has executed what the master has.
    pub async fn wait_replicated(&self, timeout: Duration) -> anyhow::Result<()> {
        let target = self.master().gtid_executed().await?;
        let deadline = Instant::now() + timeout;
        for r in &self.servers[1..] {
            loop {
                if r.has_executed(&target).await? {
                    break;
                }
                if Instant::now() > deadline {
                    bail!("{} has not executed `{target}` after {timeout:?}", r.host);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        Ok(())
    }
}
