//! The node's MySQL server during bootstrap: its option file, initializing the data
//! directory, starting it as a service, the root account, the cluster's users on the
//! first master, copying the data from a donor (MySQL's clone plugin; a MariaDB
//! backup stream unpacked by `mbstream` and prepared), and replication with GTID
//! auto-positioning. All SQL runs as root over the local socket.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, OptsBuilder};

use super::facts::{Layout, NodeFacts, ProgramsConfig};
use super::services::{Service, Services};
use crate::mysql_config::{render, MysqlServerConfig, ServerFlavor};
use crate::mysql_users::{create_user_statements, quote, UserRole};

/// The service name of the node's mysqld.
pub const MYSQLD_SERVICE: &str = "orchestrator-mysqld";
/// The schema and table of the orchestrator's write check (as the application).
pub const WRITE_CHECK_SCHEMA: &str = "orchestrator_check";
pub const WRITE_CHECK_TABLE: &str = "orchestrator_check.write_check";

/// The cluster's accounts: (secret key, user name, role).
pub const ACCOUNTS: [(&str, &str, UserRole); 5] = [
    ("orchestrator", "orchestrator", UserRole::Orchestrator),
    ("replication", "repl", UserRole::Replication),
    ("write_check", "write_check", UserRole::Application),
    ("backup", "backup", UserRole::Backup),
    ("monitor", "monitor", UserRole::Monitor),
];

/// The user an account's secret key logs in as.
pub fn account_user(key: &str) -> &'static str {
    ACCOUNTS.iter().find(|(k, _, _)| *k == key).map(|(_, u, _)| *u).unwrap_or("")
}

/// How to run the server's programs.
#[derive(Debug, Clone)]
pub struct Programs {
    pub flavor: ServerFlavor,
    pub config: ProgramsConfig,
}

impl Programs {
    fn mysql_root(&self) -> Option<&Path> {
        self.config.mysql_root.as_deref()
    }

    /// `program` (a path inside the MySQL root, e.g. `usr/bin/mysql`) run through the
    /// root's own loader and libraries: the loader and its arguments. Without a root,
    /// `/` + `program` with none.
    pub fn in_root(&self, program: &str) -> (PathBuf, Vec<String>) {
        orchestrator::backup::tools::MysqlPrograms { mysql_root: self.config.mysql_root.clone() }
            .in_root(program)
    }

    /// mysqld reading `config`, with the extra options a root needs.
    pub fn mysqld(&self, config: &Path) -> (PathBuf, Vec<String>) {
        let default = match self.flavor {
            ServerFlavor::Mariadb => "usr/sbin/mariadbd",
            ServerFlavor::Mysql => "usr/sbin/mysqld",
        };
        let (program, mut args) = match &self.config.mysqld {
            Some(explicit) => (explicit.clone(), Vec::new()),
            None => self.in_root(default),
        };
        // --defaults-file must come first.
        args.push(format!("--defaults-file={}", config.display()));
        if let Some(root) = self.mysql_root() {
            args.push(format!("--basedir={}", root.join("usr").display()));
            args.push(format!("--lc-messages-dir={}", root.join("usr/share/mysql").display()));
            args.push(format!("--plugin-dir={}", root.join("usr/lib/mysql/plugin").display()));
        }
        if self.flavor == ServerFlavor::Mysql {
            // No X protocol listener (it binds 33060 on every address), and no
            // server-side file import or export (its default directory need not exist).
            args.push("--mysqlx=OFF".into());
            args.push("--secure-file-priv=NULL".into());
        }
        (program, args)
    }

    pub fn install_db(&self) -> PathBuf {
        self.config.install_db.clone().unwrap_or_else(|| PathBuf::from("/usr/bin/mariadb-install-db"))
    }

    pub fn mariadb_backup(&self) -> PathBuf {
        self.config.mariadb_backup.clone().unwrap_or_else(|| PathBuf::from("/usr/bin/mariadb-backup"))
    }

    pub fn mbstream(&self) -> PathBuf {
        self.config.mbstream.clone().unwrap_or_else(|| PathBuf::from("/usr/bin/mbstream"))
    }
}

/// The node's server.
pub struct Server {
    pub flavor: ServerFlavor,
    pub ip: Ipv4Addr,
    pub layout: Layout,
    pub programs: Programs,
    pub services: Services,
    pub os_user: String,
    pub buffer_pool_mb: u32,
}

/// A line of `SHOW REPLICA STATUS` that matters here.
#[derive(Debug, Default)]
pub struct ReplicaState {
    pub io_running: String,
    pub sql_running: String,
    pub last_error: String,
    pub source: String,
}

impl Server {
    pub fn new(facts: &NodeFacts, services: Services) -> Server {
        Server {
            flavor: facts.flavor,
            ip: facts.private_ip,
            layout: facts.layout(),
            programs: Programs { flavor: facts.flavor, config: facts.programs.clone() },
            services,
            os_user: facts.layout.os_user.clone(),
            buffer_pool_mb: facts.layout.innodb_buffer_pool_mb,
        }
    }

    /// The node's settings; `for_init` leaves out the plugins `--initialize` cannot load.
    pub fn settings(&self, for_init: bool) -> MysqlServerConfig {
        let ip = self.ip.to_string();
        let mut c = MysqlServerConfig::small(
            self.flavor,
            super::decide::server_id(self.ip),
            &ip,
            3306,
            PathBuf::new(),
        );
        c.datadir = self.layout.mysql_datadir.clone();
        c.run_dir = self.layout.mysql_run.clone();
        c.tmp_dir = self.layout.mysql_tmp.clone();
        c.innodb_buffer_pool_mb = self.buffer_pool_mb;
        c.innodb_log_mb = 64.min(self.buffer_pool_mb);
        c.os_user = Some(self.os_user.clone());
        // Every node starts read-only; only the bootstrap of the first master, and
        // afterwards the orchestrator, makes one writable.
        c.read_only = true;
        c.clone_plugin = self.flavor == ServerFlavor::Mysql && !for_init;
        c.semi_sync = !for_init;
        c
    }

    fn socket(&self) -> PathBuf {
        self.layout.mysql_run.join("mysqld.sock")
    }

    fn error_log(&self) -> PathBuf {
        self.layout.mysql_run.join("error.log")
    }

    /// Writes the option file; returns whether it changed.
    pub fn write_config(&self) -> anyhow::Result<bool> {
        for d in [&self.layout.mysql_run, &self.layout.mysql_tmp, &self.layout.mysql_datadir] {
            std::fs::create_dir_all(d).with_context(|| format!("cannot create {}", d.display()))?;
        }
        self.chown(&self.layout.mysql_volume)?;
        self.chown(&self.layout.mysql_run)?;
        let text = render(&self.settings(false));
        if std::fs::read_to_string(&self.layout.mysql_config).ok().as_deref() == Some(text.as_str()) {
            return Ok(false);
        }
        if let Some(dir) = self.layout.mysql_config.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(&self.layout.mysql_config, text)
            .with_context(|| format!("cannot write {}", self.layout.mysql_config.display()))?;
        Ok(true)
    }

    /// Gives the tree to the server's OS user (when it is not root).
    pub fn chown(&self, dir: &Path) -> anyhow::Result<()> {
        if self.os_user == "root" || !dir.exists() {
            return Ok(());
        }
        let out = Command::new("chown").arg("-R").arg(format!("{0}:{0}", self.os_user)).arg(dir).output()?;
        if !out.status.success() {
            bail!(
                "chown {} to {}: {}",
                dir.display(),
                self.os_user,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    }

    /// Whether the data directory holds a server's data.
    pub fn has_data(&self) -> bool {
        self.layout.mysql_datadir.join("mysql").is_dir()
    }

    /// Empties the data directory (before a copy from a donor).
    pub fn clear_data(&self) -> anyhow::Result<()> {
        let dir = &self.layout.mysql_datadir;
        if dir.exists() {
            std::fs::remove_dir_all(dir).with_context(|| format!("cannot empty {}", dir.display()))?;
        }
        std::fs::create_dir_all(dir)?;
        self.chown(dir)
    }

    /// Initializes an empty data directory (root without a password, on the socket).
    pub fn initialize(&self) -> anyhow::Result<()> {
        let init_config = self.layout.state.join("init.cnf");
        std::fs::create_dir_all(&self.layout.state)?;
        std::fs::write(&init_config, render(&self.settings(true)))?;
        let out = match self.flavor {
            ServerFlavor::Mariadb => Command::new(self.programs.install_db())
                .arg(format!("--defaults-file={}", init_config.display()))
                .args(["--auth-root-authentication-method=normal", "--skip-test-db", "--skip-name-resolve"])
                .output()
                .context("cannot run mariadb-install-db")?,
            ServerFlavor::Mysql => {
                let (program, args) = self.programs.mysqld(&init_config);
                Command::new(program)
                    .args(args)
                    .arg("--initialize-insecure")
                    .output()
                    .context("cannot run mysqld --initialize-insecure")?
            }
        };
        if !out.status.success() {
            bail!(
                "initializing {} failed: {} {}",
                self.layout.mysql_datadir.display(),
                String::from_utf8_lossy(&out.stderr).lines().last().unwrap_or(""),
                error_line(&self.error_log())
            );
        }
        // Every copy of a MySQL datadir makes its own server_uuid.
        let _ = std::fs::remove_file(self.layout.mysql_datadir.join("auto.cnf"));
        self.chown(&self.layout.mysql_volume)
    }

    pub fn service(&self) -> Service {
        let (program, args) = self.programs.mysqld(&self.layout.mysql_config);
        Service {
            name: MYSQLD_SERVICE.into(),
            description: "MySQL server of the orchestrator cluster node".into(),
            program,
            args,
            stop_timeout_s: 600,
        }
    }

    /// Starts the server (if it is not running) and waits until root can log in.
    pub async fn start(&self, root_password: &str) -> anyhow::Result<bool> {
        let started = self.services.start(&self.service())?;
        self.wait_ready(root_password, Duration::from_secs(120)).await?;
        Ok(started)
    }

    pub fn stop(&self) -> anyhow::Result<()> {
        self.services.stop(MYSQLD_SERVICE, Duration::from_secs(600))
    }

    /// Waits until root logs in (with `root_password`, or without one on a fresh
    /// data directory).
    pub async fn wait_ready(&self, root_password: &str, patience: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + patience;
        loop {
            match self.root(root_password).await {
                Ok(conn) => {
                    let _ = conn.disconnect().await;
                    return Ok(());
                }
                Err(e) => {
                    if !self.services.is_running(MYSQLD_SERVICE) {
                        bail!("mysqld stopped: {}", error_line(&self.error_log()));
                    }
                    if Instant::now() >= deadline {
                        bail!("mysqld did not accept root within {} s: {e:#}", patience.as_secs());
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A root session on the socket: with `password`, or (a fresh data directory)
    /// without one.
    pub async fn root(&self, password: &str) -> anyhow::Result<Conn> {
        let opts = |pass: Option<String>| {
            OptsBuilder::default()
                .socket(Some(self.socket().display().to_string()))
                .user(Some("root"))
                .pass(pass)
                .prefer_socket(true)
        };
        match Conn::new(opts(Some(password.to_string()))).await {
            Ok(c) => Ok(c),
            Err(with_password) => match Conn::new(opts(None)).await {
                Ok(c) => Ok(c),
                Err(_) => Err(anyhow::anyhow!("root login on {}: {with_password}", self.socket().display())),
            },
        }
    }

    /// Sets root's password when it has none yet; returns whether it did.
    pub async fn secure_root(&self, password: &str) -> anyhow::Result<bool> {
        let opts = OptsBuilder::default()
            .socket(Some(self.socket().display().to_string()))
            .user(Some("root"))
            .prefer_socket(true);
        let Ok(mut conn) = Conn::new(opts).await else { return Ok(false) };
        let alter = format!("ALTER USER 'root'@'localhost' IDENTIFIED BY {}", quote(password));
        let sql = match self.flavor {
            // Not replicated, and past a read-only that holds even root back.
            ServerFlavor::Mysql => format!(
                "SET SESSION sql_log_bin = 0; SET GLOBAL super_read_only = OFF; {alter}; \
                 SET GLOBAL super_read_only = ON"
            ),
            ServerFlavor::Mariadb => format!("SET SESSION sql_log_bin = 0; {alter}"),
        };
        conn.query_drop(sql).await.context("setting root's password")?;
        let _ = conn.disconnect().await;
        Ok(true)
    }

    /// The first master: writable, the cluster's users and the write-check table,
    /// created outside the binlog (they come to replicas with the data).
    pub async fn setup_first_master(
        &self,
        root_password: &str,
        password_of: impl Fn(&str) -> anyhow::Result<String>,
    ) -> anyhow::Result<usize> {
        let mut conn = self.root(root_password).await?;
        conn.query_drop("SET SESSION sql_log_bin = 0").await?;
        if self.flavor == ServerFlavor::Mysql {
            conn.query_drop("SET GLOBAL super_read_only = OFF").await?;
        }
        conn.query_drop("SET GLOBAL read_only = OFF").await?;
        let mut created = 0;
        for (key, user, role) in ACCOUNTS {
            let exists: Option<u32> =
                conn.exec_first("SELECT 1 FROM mysql.user WHERE user = ? AND host = '%'", (user,)).await?;
            if exists.is_some() {
                continue;
            }
            let password = password_of(key)?;
            for statement in create_user_statements(self.flavor, role, user, &password, WRITE_CHECK_SCHEMA) {
                conn.query_drop(&statement)
                    .await
                    .with_context(|| format!("creating user {user}: {}", redact(&statement, &password)))?;
            }
            created += 1;
        }
        conn.query_drop(format!(
            "CREATE DATABASE IF NOT EXISTS {WRITE_CHECK_SCHEMA}; \
             CREATE TABLE IF NOT EXISTS {WRITE_CHECK_TABLE} (id INT PRIMARY KEY, at DATETIME(6))"
        ))
        .await?;
        let semi_sync = match self.flavor {
            ServerFlavor::Mariadb => "SET GLOBAL rpl_semi_sync_master_enabled = ON",
            ServerFlavor::Mysql => "SET GLOBAL rpl_semi_sync_source_enabled = ON",
        };
        conn.query_drop(semi_sync).await?;
        let _ = conn.disconnect().await;
        Ok(created)
    }

    /// MySQL: replaces this server's data with `donor`'s through the clone plugin,
    /// then starts the server again (it stops itself after a clone when no supervisor
    /// restarts it).
    pub async fn clone_from(
        &self,
        donor: &str,
        backup_password: &str,
        root_password: &str,
    ) -> anyhow::Result<()> {
        let (host, port) = donor.rsplit_once(':').context("donor is not host:port")?;
        let mut conn = self.root(root_password).await?;
        conn.query_drop("SET GLOBAL super_read_only = OFF").await?;
        conn.query_drop(format!("SET GLOBAL clone_valid_donor_list = {}", quote(donor))).await?;
        let statement = format!(
            "CLONE INSTANCE FROM {}@{}:{port} IDENTIFIED BY {}",
            quote(account_user("backup")),
            quote(host),
            quote(backup_password)
        );
        let result = conn.query_drop(&statement).await;
        drop(conn);
        match result {
            Ok(()) => {}
            // 3707: cloned, but the server cannot restart itself without a supervisor.
            Err(mysql_async::Error::Server(e)) if e.code == 3707 => {}
            // The server went down at the end of the clone: the status tells.
            Err(mysql_async::Error::Io(_)) | Err(mysql_async::Error::Driver(_)) => {}
            Err(e) => bail!("CLONE INSTANCE FROM {donor}: {}", redact(&e.to_string(), backup_password)),
        }
        // It stops itself after a clone; still up means the clone failed before
        // replacing anything or a supervisor restarted it: the status says which.
        self.services.wait_exit(MYSQLD_SERVICE, Duration::from_secs(120));
        self.start(root_password).await?;
        let mut conn = self.root(root_password).await?;
        let state: Option<(String, Option<String>)> = conn
            .query_first(
                "SELECT state, error_message FROM performance_schema.clone_status ORDER BY id DESC LIMIT 1",
            )
            .await?;
        let _ = conn.disconnect().await;
        match state {
            Some((s, _)) if s == "Completed" => Ok(()),
            Some((s, message)) => {
                bail!("clone from {donor}: {s}: {}", redact(&message.unwrap_or_default(), backup_password))
            }
            None => bail!("clone from {donor}: no clone status recorded"),
        }
    }

    /// MariaDB: prepares a backup unpacked into the (stopped) server's data directory
    /// and returns the GTID position it recorded.
    pub fn prepare_backup(&self) -> anyhow::Result<String> {
        let datadir = &self.layout.mysql_datadir;
        let log = self.layout.state.join("prepare.log");
        let out = Command::new(self.programs.mariadb_backup())
            .arg("--prepare")
            .arg(format!("--target-dir={}", datadir.display()))
            .output()
            .context("cannot run mariadb-backup --prepare")?;
        let _ = std::fs::write(&log, [out.stdout.as_slice(), out.stderr.as_slice()].concat());
        if !out.status.success() {
            let text = String::from_utf8_lossy(&out.stderr);
            bail!(
                "mariadb-backup --prepare failed: {} (see {})",
                text.lines().last().unwrap_or(""),
                log.display()
            );
        }
        let info = ["mariadb_backup_binlog_info", "xtrabackup_binlog_info"]
            .iter()
            .find_map(|f| std::fs::read_to_string(datadir.join(f)).ok())
            .context("the backup holds no binlog position (mariadb_backup_binlog_info)")?;
        let gtid = super::decide::backup_gtid_position(&info).map_err(anyhow::Error::msg)?;
        self.chown(&self.layout.mysql_volume)?;
        Ok(gtid)
    }

    /// Replicates from `master` with GTID auto-positioning (on MariaDB from `gtid`,
    /// the copied data's position, when given) and waits until both threads run.
    pub async fn replicate_from(
        &self,
        master: &str,
        replication_password: &str,
        root_password: &str,
        gtid: Option<&str>,
    ) -> anyhow::Result<()> {
        let (host, port) = master.rsplit_once(':').context("master is not host:port")?;
        let user = quote(account_user("replication"));
        let mut conn = self.root(root_password).await?;
        let statements = match self.flavor {
            ServerFlavor::Mariadb => {
                let mut s = vec!["STOP SLAVE".to_string(), "RESET SLAVE ALL".to_string()];
                if let Some(g) = gtid {
                    // The copy's position also as this server's binlog state, as on a
                    // replica that applied those transactions itself: its executed set
                    // (`gtid_binlog_pos`) then holds everything it has, and it can be
                    // promoted (its binlog is empty but for its own setup writes).
                    s.push("RESET MASTER".into());
                    s.push(format!("SET GLOBAL gtid_binlog_state = {}", quote(g)));
                    s.push(format!("SET GLOBAL gtid_slave_pos = {}", quote(g)));
                }
                s.push(format!(
                    "CHANGE MASTER TO MASTER_HOST = {}, MASTER_PORT = {port}, MASTER_USER = {user}, \
                     MASTER_PASSWORD = {}, MASTER_USE_GTID = slave_pos, MASTER_CONNECT_RETRY = 1",
                    quote(host),
                    quote(replication_password)
                ));
                s.push("START SLAVE".into());
                s
            }
            ServerFlavor::Mysql => vec![
                "STOP REPLICA".to_string(),
                "RESET REPLICA ALL".to_string(),
                format!(
                    "CHANGE REPLICATION SOURCE TO SOURCE_HOST = {}, SOURCE_PORT = {port}, SOURCE_USER = {user}, \
                     SOURCE_PASSWORD = {}, SOURCE_AUTO_POSITION = 1, GET_SOURCE_PUBLIC_KEY = 1, \
                     SOURCE_CONNECT_RETRY = 1",
                    quote(host),
                    quote(replication_password)
                ),
                "START REPLICA".to_string(),
            ],
        };
        for statement in &statements {
            conn.query_drop(statement)
                .await
                .map_err(|e| anyhow::anyhow!("{}: {}", redact(statement, replication_password), e))?;
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let state = self.replica_state(&mut conn).await?;
            if state.io_running == "Yes" && state.sql_running == "Yes" {
                break;
            }
            // A thread that stopped with an error (the master purged what this copy
            // lacks: 1236) does not start by waiting.
            let stopped = state.io_running == "No" || state.sql_running == "No";
            if Instant::now() >= deadline || (stopped && !state.last_error.is_empty()) {
                bail!(
                    "replication from {master} did not start within 60 s (IO {}, SQL {}): {}",
                    state.io_running,
                    state.sql_running,
                    redact(&state.last_error, replication_password)
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let _ = conn.disconnect().await;
        Ok(())
    }

    /// The replication threads' state, under either flavor's column names.
    pub async fn replica_state(&self, conn: &mut Conn) -> anyhow::Result<ReplicaState> {
        let sql = match self.flavor {
            ServerFlavor::Mariadb => "SHOW SLAVE STATUS",
            ServerFlavor::Mysql => "SHOW REPLICA STATUS",
        };
        let row: Option<mysql_async::Row> = conn.query_first(sql).await?;
        let Some(row) = row else { return Ok(ReplicaState::default()) };
        let get = |names: &[&str]| -> String {
            names
                .iter()
                .find_map(|n| row.get_opt::<Option<String>, _>(*n).and_then(|r| r.ok()).flatten())
                .unwrap_or_default()
        };
        Ok(ReplicaState {
            io_running: get(&["Slave_IO_Running", "Replica_IO_Running"]),
            sql_running: get(&["Slave_SQL_Running", "Replica_SQL_Running"]),
            last_error: [get(&["Last_IO_Error"]), get(&["Last_SQL_Error"])].join(" ").trim().to_string(),
            source: format!(
                "{}:{}",
                get(&["Master_Host", "Source_Host"]),
                get(&["Master_Port", "Source_Port"])
            ),
        })
    }

    /// Whether this server replicates from `master` with both threads running.
    pub async fn replicates_from(&self, master: &str, root_password: &str) -> bool {
        let Ok(mut conn) = self.root(root_password).await else { return false };
        let ok = self
            .replica_state(&mut conn)
            .await
            .is_ok_and(|s| s.io_running == "Yes" && s.sql_running == "Yes" && s.source == master);
        let _ = conn.disconnect().await;
        ok
    }
}

/// `text` with `secret` replaced, for messages.
fn redact(text: &str, secret: &str) -> String {
    if secret.is_empty() {
        text.to_string()
    } else {
        text.replace(secret, "<redacted>")
    }
}

/// The newest `ERROR` line of a server's error log that says why (not `Aborting`).
fn error_line(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let errors: Vec<&str> = text.lines().filter(|l| l.contains("ERROR")).collect();
    errors
        .iter()
        .rev()
        .find(|l| !l.contains("Aborting"))
        .or(errors.last())
        .map(|l| l.chars().take(300).collect())
        .unwrap_or_else(|| format!("no ERROR line in {}", log.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mysql_root_runs_mysqld_through_its_loader() {
        let p = Programs {
            flavor: ServerFlavor::Mysql,
            config: ProgramsConfig { mysql_root: Some("/opt/r".into()), ..Default::default() },
        };
        let (program, args) = p.mysqld(Path::new("/etc/mysql/node.cnf"));
        assert_eq!(program, PathBuf::from("/opt/r/lib64/ld-linux-x86-64.so.2"));
        assert_eq!(args[2], "/opt/r/usr/sbin/mysqld");
        assert_eq!(args[3], "--defaults-file=/etc/mysql/node.cnf");
        assert!(args.contains(&"--plugin-dir=/opt/r/usr/lib/mysql/plugin".to_string()));
        assert!(args.contains(&"--mysqlx=OFF".to_string()));
        let m = Programs { flavor: ServerFlavor::Mariadb, config: ProgramsConfig::default() };
        let (program, args) = m.mysqld(Path::new("/c"));
        assert_eq!(program, PathBuf::from("/usr/sbin/mariadbd"));
        assert_eq!(args, vec!["--defaults-file=/c".to_string()]);
    }

    #[test]
    fn every_account_has_a_secret_key() {
        for (key, _, _) in ACCOUNTS {
            assert!(crate::desired::CREDENTIAL_KEYS.contains(&key), "{key}");
        }
        assert_eq!(account_user("replication"), "repl");
        assert_eq!(redact("IDENTIFIED BY 'pw'", "pw"), "IDENTIFIED BY '<redacted>'");
    }
}
