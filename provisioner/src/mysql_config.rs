//! Renders the `my.cnf` of one cluster node, per flavor (DESIGN.md section 7).
//!
//! Every node is configured alike, ready to be master or replica: GTID replication,
//! ROW binlogs, `log_slave_updates` / `log_replica_updates`, short replica timeouts so a dead master is noticed
//! in seconds, and `read_only` unless it starts as the master.

use std::fmt::Write;
use std::path::PathBuf;

/// Semi-sync timeout: a year. Falling back to asynchronous replication would let the
/// master acknowledge commits no replica has; we would rather block writes
/// (`LockedSemiSyncMaster`) than lose them.
pub const SEMI_SYNC_NEVER_FALL_BACK_MS: u64 = 31_536_000_000;

/// Which server family the file is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ServerFlavor {
    /// MariaDB 10.11 (domain-server-seq GTIDs).
    Mariadb,
    /// MySQL 8.0/8.4 or Percona Server 8.0 (uuid GTIDs).
    Mysql,
}

/// One node's server settings.
#[derive(Debug, Clone)]
pub struct MysqlServerConfig {
    pub flavor: ServerFlavor,
    pub server_id: u32,
    pub bind_address: String,
    pub port: u16,
    /// What replicas report to their master (`SHOW SLAVE HOSTS`); the node's address.
    pub report_host: String,
    pub datadir: PathBuf,
    /// Socket, pid file and error log go here.
    pub run_dir: PathBuf,
    /// The server's own temporary directory. Servers sharing one (`/tmp`) collide on
    /// temporary table names: seen with parallel `mariadb-install-db` runs here.
    pub tmp_dir: PathBuf,
    /// Start read-only (every node but the initial master).
    pub read_only: bool,
    /// Seconds without data before a replica's IO thread reconnects.
    pub replica_net_timeout_s: u32,
    pub innodb_buffer_pool_mb: u32,
    /// InnoDB redo log: `innodb_log_file_size` on MariaDB, `innodb_redo_log_capacity`
    /// on MySQL.
    pub innodb_log_mb: u32,
    /// Run the server as this OS user (`root` in the test bed).
    pub os_user: Option<String>,
    /// Semi-synchronous replication, AFTER_SYNC, never falling back to asynchronous:
    /// a commit is acknowledged to the client only once a replica has it in its relay
    /// log, so a failover to the most advanced replica loses no acknowledged write.
    pub semi_sync: bool,
    /// MySQL: load the clone plugin (a new node copies a donor's data with it).
    pub clone_plugin: bool,
}

impl MysqlServerConfig {
    /// Settings for a small test or sandbox node.
    pub fn small(flavor: ServerFlavor, server_id: u32, address: &str, port: u16, base: PathBuf) -> Self {
        Self {
            flavor,
            server_id,
            bind_address: address.to_string(),
            port,
            report_host: address.to_string(),
            datadir: base.join("data"),
            run_dir: base.join("run"),
            tmp_dir: base.join("tmp"),
            read_only: true,
            replica_net_timeout_s: 4,
            innodb_buffer_pool_mb: 32,
            innodb_log_mb: 16,
            os_user: None,
            semi_sync: true,
            clone_plugin: false,
        }
    }
}

/// The `my.cnf` text.
pub fn render(c: &MysqlServerConfig) -> String {
    let mut s = String::new();
    let run = &c.run_dir;
    let mut line = |k: &str, v: &dyn std::fmt::Display| {
        let _ = writeln!(s, "{k} = {v}");
    };
    line("datadir", &c.datadir.display());
    line("socket", &run.join("mysqld.sock").display());
    line("pid-file", &run.join("mysqld.pid").display());
    line("log-error", &run.join("error.log").display());
    line("tmpdir", &c.tmp_dir.display());
    line("bind-address", &c.bind_address);
    line("port", &c.port);
    line("server-id", &c.server_id);
    line("report-host", &c.report_host);
    line("report-port", &c.port);
    line("log-bin", &"binlog");
    line("binlog-format", &"ROW");
    line("skip-name-resolve", &"ON");
    line("read-only", &if c.read_only { "ON" } else { "OFF" });
    line("innodb-buffer-pool-size", &format!("{}M", c.innodb_buffer_pool_mb));
    line("max-connections", &200);
    if let Some(user) = &c.os_user {
        line("user", user);
    }
    match c.flavor {
        ServerFlavor::Mariadb => {
            line("log-slave-updates", &"ON");
            line("slave-net-timeout", &c.replica_net_timeout_s);
            line("gtid-strict-mode", &"ON");
            line("gtid-domain-id", &0);
            line("innodb-log-file-size", &format!("{}M", c.innodb_log_mb));
            if c.semi_sync {
                // Only the master waits for acknowledgements: a replica with the
                // master side on would hold its own SQL thread waiting for replicas
                // it does not have. Promotion turns it on, demotion off.
                line("rpl-semi-sync-master-enabled", &if c.read_only { "OFF" } else { "ON" });
                line("rpl-semi-sync-slave-enabled", &"ON");
                line("rpl-semi-sync-master-wait-point", &"AFTER_SYNC");
                line("rpl-semi-sync-master-wait-no-slave", &"ON");
                line("rpl-semi-sync-master-timeout", &SEMI_SYNC_NEVER_FALL_BACK_MS);
            }
        }
        ServerFlavor::Mysql => {
            // The names of 8.0.26 and later (the old ones are gone in 9.x), and the
            // redo log setting of 8.0.30 and later: MySQL / Percona 8.0.30+.
            line("log-replica-updates", &"ON");
            line("replica-net-timeout", &c.replica_net_timeout_s);
            line("innodb-redo-log-capacity", &format!("{}M", c.innodb_log_mb));
            line("gtid-mode", &"ON");
            line("enforce-gtid-consistency", &"ON");
            line("super-read-only", &if c.read_only { "ON" } else { "OFF" });
            line("replica-preserve-commit-order", &"ON");
            if c.clone_plugin {
                line("plugin-load-add", &"mysql_clone.so");
            }
            if c.semi_sync {
                // The plugins' variables exist only once the plugins are loaded, and
                // `mysqld --initialize` loads none: initialize with `semi_sync` off.
                // (No `loose-` prefix: a node whose plugin fails to load must not
                // start and silently replicate asynchronously.)
                line("plugin-load-add", &"semisync_source.so");
                line("plugin-load-add", &"semisync_replica.so");
                line("rpl-semi-sync-source-enabled", &if c.read_only { "OFF" } else { "ON" });
                line("rpl-semi-sync-replica-enabled", &"ON");
                line("rpl-semi-sync-source-wait-point", &"AFTER_SYNC");
                line("rpl-semi-sync-source-wait-no-replica", &"ON");
                line("rpl-semi-sync-source-timeout", &SEMI_SYNC_NEVER_FALL_BACK_MS);
            }
        }
    }
    format!("[mysqld]\n{s}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mariadb_config_has_gtid_and_replication_settings() {
        let mut c = MysqlServerConfig::small(ServerFlavor::Mariadb, 7, "127.0.9.1", 3306, "/tmp/n1".into());
        c.os_user = Some("root".into());
        let text = render(&c);
        for needle in [
            "[mysqld]\n",
            "server-id = 7\n",
            "bind-address = 127.0.9.1\n",
            "report-host = 127.0.9.1\n",
            "gtid-strict-mode = ON\n",
            "log-slave-updates = ON\n",
            "binlog-format = ROW\n",
            "read-only = ON\n",
            "datadir = /tmp/n1/data\n",
            "socket = /tmp/n1/run/mysqld.sock\n",
            "user = root\n",
            "tmpdir = /tmp/n1/tmp\n",
            "rpl-semi-sync-master-wait-point = AFTER_SYNC\n",
            "rpl-semi-sync-master-timeout = 31536000000\n",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in\n{text}");
        }
        assert!(!text.contains("gtid-mode"));
    }

    #[test]
    fn mysql_config_uses_gtid_mode_and_super_read_only() {
        let mut c = MysqlServerConfig::small(ServerFlavor::Mysql, 1, "10.0.0.1", 3306, "/d".into());
        c.read_only = false;
        let text = render(&c);
        assert!(text.contains("gtid-mode = ON\n"));
        assert!(text.contains("enforce-gtid-consistency = ON\n"));
        assert!(text.contains("super-read-only = OFF\n"));
        assert!(text.contains("read-only = OFF\n"));
        assert!(!text.contains("gtid-strict-mode"));
        // MySQL 9.x knows only the new names.
        assert!(text.contains("log-replica-updates = ON\n"));
        assert!(text.contains("replica-net-timeout = 4\n"));
        assert!(!text.contains("slave"));
        assert!(text.contains("\nrpl-semi-sync-source-wait-point = AFTER_SYNC\n"));
        assert!(!text.contains("loose-"));
        assert!(text.contains("innodb-redo-log-capacity = 16M\n"));
    }
}
