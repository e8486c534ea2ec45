//! The MySQL users a node needs and the least privileges of each, per flavor.
//!
//! Three roles: the orchestrator's own user (probes, fences, promotes, repoints), the
//! replication user replicas connect as, and the application user (whose write the
//! orchestrator checks after a promotion). Each gets only what its statements need;
//! the end-to-end tests run every statement of the orchestrator as this user on real
//! MariaDB 10.11 and MySQL 9.7 servers, and check that the application user cannot
//! get around a fence (DESIGN.md section 7).

use crate::mysql_config::ServerFlavor;

/// What a user is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserRole {
    /// The orchestrator: reads status, turns `read_only` on and off, kills client
    /// connections and replication threads, changes replication sources.
    Orchestrator,
    /// Replicas connect to their source as this user.
    Replication,
    /// The application: reads and writes its own schema, nothing global.
    Application,
    /// Physical backups and seeding new nodes: `mariadb-backup` on MariaDB, the clone
    /// plugin's donor side (and XtraBackup) on MySQL.
    Backup,
    /// Read-only monitoring: process list and replication status.
    Monitor,
}

/// The global privileges of `role` on `flavor`, as they go in a `GRANT ... ON *.*`.
///
/// MariaDB 10.11 splits what `SUPER` once allowed into `READ_ONLY ADMIN` (turning
/// `read_only` off), `SLAVE MONITOR`, `REPLICATION SLAVE ADMIN`, `REPLICATION MASTER
/// ADMIN` (`SHOW SLAVE HOSTS`) and `BINLOG ADMIN`; MySQL 8.0+ into dynamic
/// privileges: `SYSTEM_VARIABLES_ADMIN` (`SET GLOBAL read_only`, semi-sync,
/// `offline_mode`), `CONNECTION_ADMIN` (killing other users' connections, setting
/// `offline_mode` and connecting while it is on), `REPLICATION_SLAVE_ADMIN`
/// (`CHANGE REPLICATION SOURCE`, `START/STOP REPLICA`); `RELOAD` is for `RESET
/// REPLICA`. The application must hold none of these (nor `SUPER` or `SYSTEM_USER`):
/// the fence relies on killing its sessions and keeping it out.
pub fn global_privileges(flavor: ServerFlavor, role: UserRole) -> &'static [&'static str] {
    match (flavor, role) {
        (ServerFlavor::Mariadb, UserRole::Orchestrator) => &[
            "SUPER",
            "PROCESS",
            "RELOAD",
            "REPLICATION SLAVE",
            "READ_ONLY ADMIN",
            "SLAVE MONITOR",
            "REPLICATION SLAVE ADMIN",
            "REPLICATION MASTER ADMIN",
            "BINLOG ADMIN",
            "BINLOG MONITOR",
        ],
        (ServerFlavor::Mysql, UserRole::Orchestrator) => &[
            "PROCESS",
            "RELOAD",
            "REPLICATION CLIENT",
            "REPLICATION SLAVE",
            "SYSTEM_VARIABLES_ADMIN",
            "CONNECTION_ADMIN",
            "REPLICATION_SLAVE_ADMIN",
        ],
        (ServerFlavor::Mariadb, UserRole::Backup) => {
            &["RELOAD", "PROCESS", "LOCK TABLES", "BINLOG MONITOR", "SLAVE MONITOR"]
        }
        (ServerFlavor::Mysql, UserRole::Backup) => {
            &["BACKUP_ADMIN", "RELOAD", "PROCESS", "LOCK TABLES", "REPLICATION CLIENT"]
        }
        (ServerFlavor::Mariadb, UserRole::Monitor) => &["PROCESS", "SLAVE MONITOR", "BINLOG MONITOR"],
        (ServerFlavor::Mysql, UserRole::Monitor) => &["PROCESS", "REPLICATION CLIENT"],
        (_, UserRole::Replication) => &["REPLICATION SLAVE"],
        (_, UserRole::Application) => &[],
    }
}

/// What the application user may do in its own schema.
pub const APPLICATION_SCHEMA_PRIVILEGES: &str = "SELECT, INSERT, UPDATE, DELETE";

/// The statements that create `user` for `role` (from any host, `'%'`) with its
/// privileges; `app_schema` is the application's schema. Run them with
/// `sql_log_bin = 0` on every node (users are not replicated: a node is set up before
/// it replicates).
pub fn create_user_statements(
    flavor: ServerFlavor,
    role: UserRole,
    user: &str,
    password: &str,
    app_schema: &str,
) -> Vec<String> {
    let account = format!("{}@'%'", quote(user));
    let mut statements = vec![format!("CREATE USER {account} IDENTIFIED BY {}", quote(password))];
    let global = global_privileges(flavor, role);
    if !global.is_empty() {
        statements.push(format!("GRANT {} ON *.* TO {account}", global.join(", ")));
    }
    if role == UserRole::Application {
        statements.push(format!(
            "GRANT {APPLICATION_SCHEMA_PRIVILEGES} ON {}.* TO {account}",
            quote_identifier(app_schema)
        ));
    }
    statements
}

/// A single-quoted SQL string literal.
pub(crate) fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "''"))
}

/// A backquoted SQL identifier.
fn quote_identifier(s: &str) -> String {
    format!("`{}`", s.replace('`', "``"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_orchestrator_needs_no_super_on_mysql() {
        let p = global_privileges(ServerFlavor::Mysql, UserRole::Orchestrator);
        assert!(!p.contains(&"SUPER"));
        assert!(p.contains(&"SYSTEM_VARIABLES_ADMIN"));
        let m = global_privileges(ServerFlavor::Mariadb, UserRole::Orchestrator);
        assert!(m.contains(&"READ_ONLY ADMIN"));
    }

    #[test]
    fn the_application_gets_its_schema_only() {
        let s = create_user_statements(ServerFlavor::Mysql, UserRole::Application, "app", "p'w", "app");
        assert_eq!(
            s,
            vec![
                "CREATE USER 'app'@'%' IDENTIFIED BY 'p''w'".to_string(),
                "GRANT SELECT, INSERT, UPDATE, DELETE ON `app`.* TO 'app'@'%'".to_string(),
            ]
        );
        let r = create_user_statements(ServerFlavor::Mariadb, UserRole::Replication, "repl", "x", "app");
        assert_eq!(r[1], "GRANT REPLICATION SLAVE ON *.* TO 'repl'@'%'");
    }
}
