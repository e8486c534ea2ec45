//! The only module that speaks SQL: probing an instance, per flavor (MySQL 8.0/8.4,
//! Percona, MariaDB).
//!
//! [`Prober`] is the seam the discovery loop uses; [`MysqlProber`] is its real
//! implementation over `mysql_async`, keeping one connection per instance and
//! dropping it on any error or timeout. Parsing of server output is done by pure
//! functions over [`RowMap`]s so both flavors' column names are table-tested without a
//! server.

pub mod admin;
pub mod credentials;

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, OptsBuilder, Row, Value};

use crate::topology::{
    FailureKind, Flavor, GtidSet, InstanceKey, InstanceProbe, ReplicationStatus, SemiSyncStatus, ThreadState,
};

/// Why a probe failed, in one line an operator can act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProbeError {
    #[error("cannot connect: {0}")]
    Connect(String),
    #[error("connect timed out after {0:?}")]
    ConnectTimeout(Duration),
    #[error("no answer within {0:?}")]
    ReadTimeout(Duration),
    #[error("query `{sql}` failed: {message}")]
    Query { sql: String, message: String },
    #[error("unexpected server output: {0}")]
    Unexpected(String),
    /// Reported by the peer on the server's own host (see [`crate::exit_watch`]).
    #[error("its process {0}")]
    ProcessExited(String),
}

impl ProbeError {
    /// What the failure says about the server.
    pub fn kind(&self) -> FailureKind {
        match self {
            ProbeError::ConnectTimeout(_) | ProbeError::ReadTimeout(_) => FailureKind::Timeout,
            ProbeError::Connect(msg) => {
                let m = msg.to_ascii_lowercase();
                if m.contains("refused") || m.contains("reset") || m.contains("broken pipe") {
                    FailureKind::Refused
                } else if m.contains("access denied") {
                    FailureKind::Rejected
                } else {
                    FailureKind::Other
                }
            }
            ProbeError::Query { .. } => FailureKind::Rejected,
            ProbeError::Unexpected(_) => FailureKind::Other,
            ProbeError::ProcessExited(_) => FailureKind::Exited,
        }
    }
}

/// Probes one instance. The discovery loop only knows this trait.
pub trait Prober: Send + Sync + 'static {
    fn probe(&self, key: &InstanceKey) -> impl Future<Output = Result<InstanceProbe, ProbeError>> + Send;
}

/// Login and timing for [`MysqlProber`].
#[derive(Clone)]
pub struct ProbeSettings {
    pub user: String,
    /// Its password is `credentials.current().orchestrator`.
    pub credentials: Arc<credentials::Credentials>,
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
    /// Port assumed for replicas found only through the processlist.
    pub default_port: u16,
}

impl std::fmt::Debug for ProbeSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProbeSettings")
            .field("user", &self.user)
            .field("connect_timeout", &self.connect_timeout)
            .field("read_timeout", &self.read_timeout)
            .finish()
    }
}

/// [`Prober`] over real connections, one kept open per instance.
pub struct MysqlProber {
    settings: ProbeSettings,
    connections: Mutex<HashMap<InstanceKey, Conn>>,
    /// Each instance's flavor as last probed: the next probe sends all its queries at
    /// once in that flavor's dialect.
    flavors: Mutex<HashMap<InstanceKey, Flavor>>,
}

impl MysqlProber {
    pub fn new(settings: ProbeSettings) -> Self {
        Self { settings, connections: Mutex::new(HashMap::new()), flavors: Mutex::new(HashMap::new()) }
    }

    /// Opens a new connection to `key`, bounded by the connect timeout.
    pub async fn connect(&self, key: &InstanceKey) -> Result<Conn, ProbeError> {
        let s = &self.settings;
        connect_with(&s.credentials, key, &s.user, |p| &p.orchestrator, s.connect_timeout).await
    }

    /// Runs the probe queries on `conn`, keeping it for next time only on success; on
    /// error it is dropped.
    async fn probe_with(&self, key: &InstanceKey, mut conn: Conn) -> Result<InstanceProbe, ProbeError> {
        let timeout = self.settings.read_timeout;
        let known = self.flavors.lock().ok().and_then(|f| f.get(key).copied());
        let result = tokio::time::timeout(timeout, probe_on(&mut conn, self.settings.default_port, known))
            .await
            .unwrap_or(Err(ProbeError::ReadTimeout(timeout)));
        if let Ok(probe) = &result {
            if let Ok(mut flavors) = self.flavors.lock() {
                flavors.insert(key.clone(), probe.flavor);
            }
            self.return_connection(key, conn);
        }
        result
    }

    fn take_connection(&self, key: &InstanceKey) -> Option<Conn> {
        self.connections.lock().ok()?.remove(key)
    }

    fn return_connection(&self, key: &InstanceKey, conn: Conn) {
        if let Ok(mut map) = self.connections.lock() {
            map.insert(key.clone(), conn);
        }
    }
}

/// How long a refused login waits for the credentials secret to be read again.
const REFRESH_WAIT: Duration = Duration::from_secs(1);

/// As [`connect`], with the password `which` picks from `credentials`; a refused
/// login reads the credentials secret again and, if the password changed, retries
/// once (a rotated password is picked up without a restart).
pub async fn connect_with(
    credentials: &credentials::Credentials,
    key: &InstanceKey,
    user: &str,
    which: fn(&credentials::Passwords) -> &String,
    timeout: Duration,
) -> Result<Conn, ProbeError> {
    let passwords = credentials.current();
    match connect(key, user, which(&passwords), timeout).await {
        // Bounded: a fence (150 ms connects) must not wait out a slow Secrets Manager.
        Err(e)
            if e.kind() == FailureKind::Rejected
                && tokio::time::timeout(REFRESH_WAIT, credentials.refresh_after_refusal(&passwords))
                    .await
                    .unwrap_or(false) =>
        {
            connect(key, user, which(&credentials.current()), timeout).await
        }
        other => other,
    }
}

/// Opens a TCP connection (never a local socket) to `key`.
pub async fn connect(
    key: &InstanceKey,
    user: &str,
    password: &str,
    timeout: Duration,
) -> Result<Conn, ProbeError> {
    let opts = OptsBuilder::default()
        .ip_or_hostname(key.host.clone())
        .tcp_port(key.port)
        .user(Some(user))
        .pass(Some(password))
        .prefer_socket(false)
        .stmt_cache_size(0);
    match tokio::time::timeout(timeout, Conn::new(opts)).await {
        Ok(Ok(conn)) => Ok(conn),
        Ok(Err(e)) => Err(ProbeError::Connect(one_line(&e.to_string()))),
        Err(_) => Err(ProbeError::ConnectTimeout(timeout)),
    }
}

impl Prober for MysqlProber {
    async fn probe(&self, key: &InstanceKey) -> Result<InstanceProbe, ProbeError> {
        if let Some(conn) = self.take_connection(key) {
            match self.probe_with(key, conn).await {
                // A kept connection can break for reasons of its own (server restarted,
                // idle timeout): retry at once on a fresh one, so the result says what
                // the server is like now rather than what the old socket was.
                Err(ProbeError::Query { .. }) => {}
                other => return other,
            }
        }
        let conn = self.connect(key).await?;
        self.probe_with(key, conn).await
    }
}

/// A result row as column name → text value (`None` for SQL NULL).
pub type RowMap = BTreeMap<String, Option<String>>;

fn value_text(v: &Value) -> Option<String> {
    match v {
        Value::NULL => None,
        Value::Bytes(b) => Some(String::from_utf8_lossy(b).into_owned()),
        Value::Int(i) => Some(i.to_string()),
        Value::UInt(u) => Some(u.to_string()),
        Value::Float(f) => Some(f.to_string()),
        Value::Double(d) => Some(d.to_string()),
        other => Some(other.as_sql(true)),
    }
}

fn row_map(row: &Row) -> RowMap {
    row.columns_ref()
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let value = row.as_ref(i).and_then(value_text);
            (c.name_str().into_owned(), value)
        })
        .collect()
}

async fn query_maps(conn: &mut Conn, sql: &str) -> Result<Vec<RowMap>, ProbeError> {
    let rows: Vec<Row> = conn
        .query(sql)
        .await
        .map_err(|e| ProbeError::Query { sql: sql.to_string(), message: one_line(&e.to_string()) })?;
    Ok(rows.iter().map(row_map).collect())
}

/// Case-insensitive lookup trying each name in turn (MySQL and MariaDB name the same
/// column differently: `Source_Host` / `Master_Host`).
pub fn column<'a>(row: &'a RowMap, names: &[&str]) -> Option<&'a str> {
    names.iter().find_map(|name| {
        row.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).and_then(|(_, v)| v.as_deref())
    })
}

fn required<'a>(row: &'a RowMap, names: &[&str]) -> Result<&'a str, ProbeError> {
    column(row, names).ok_or_else(|| ProbeError::Unexpected(format!("missing column {}", names[0])))
}

fn number<T: std::str::FromStr>(row: &RowMap, names: &[&str]) -> Result<T, ProbeError> {
    let text = required(row, names)?;
    text.trim()
        .parse()
        .map_err(|_| ProbeError::Unexpected(format!("{} = `{text}` is not a number", names[0])))
}

fn flag(text: &str) -> bool {
    matches!(text.trim().to_ascii_uppercase().as_str(), "1" | "ON" | "YES" | "TRUE")
}

/// The per-flavor SQL the prober runs.
pub struct Dialect;

impl Dialect {
    pub const IDENTITY: &'static str =
        "SELECT @@server_id AS server_id, @@version AS version, @@version_comment AS version_comment, \
         @@read_only AS read_only, @@log_bin AS log_bin";

    /// Server uuid, super_read_only and executed GTIDs.
    pub fn gtid_sql(flavor: Flavor) -> &'static str {
        if flavor.is_mariadb() {
            "SELECT NULL AS server_uuid, NULL AS super_read_only, \
             IF(@@log_bin, @@gtid_binlog_pos, @@gtid_current_pos) AS gtid_executed"
        } else {
            "SELECT @@server_uuid AS server_uuid, @@super_read_only AS super_read_only, \
             @@gtid_executed AS gtid_executed"
        }
    }

    pub fn replica_status_sql(flavor: Flavor) -> &'static str {
        if flavor.is_mariadb() {
            "SHOW SLAVE STATUS"
        } else {
            "SHOW REPLICA STATUS"
        }
    }

    pub fn replica_hosts_sql(flavor: Flavor) -> &'static str {
        if flavor.is_mariadb() {
            "SHOW SLAVE HOSTS"
        } else {
            "SHOW REPLICAS"
        }
    }

    pub const SEMI_SYNC_VARIABLES: &'static str = "SHOW GLOBAL VARIABLES LIKE 'rpl_semi_sync_%'";
    pub const SEMI_SYNC_STATUS: &'static str = "SHOW GLOBAL STATUS LIKE 'Rpl_semi_sync_%'";
    pub const BINLOG_DUMP_CLIENTS: &'static str =
        "SELECT HOST AS host FROM information_schema.PROCESSLIST WHERE COMMAND LIKE 'Binlog Dump%'";
}

/// The probe's queries after the identity, for `flavor`, sent as one batch.
fn probe_batch(flavor: Flavor) -> [&'static str; 6] {
    [
        Dialect::gtid_sql(flavor),
        Dialect::replica_status_sql(flavor),
        Dialect::replica_hosts_sql(flavor),
        Dialect::BINLOG_DUMP_CLIENTS,
        Dialect::SEMI_SYNC_VARIABLES,
        Dialect::SEMI_SYNC_STATUS,
    ]
}

/// Runs `statements` as one multi-statement query (one round trip; the server stops at
/// the first that fails) and returns each statement's rows, in order.
pub async fn query_sets<S: AsRef<str>>(
    conn: &mut Conn,
    statements: &[S],
) -> Result<Vec<Vec<Row>>, mysql_async::Error> {
    let sql = statements.iter().map(AsRef::as_ref).collect::<Vec<_>>().join("; ");
    let mut result = conn.query_iter(sql).await?;
    let mut sets = Vec::with_capacity(statements.len());
    for _ in statements {
        sets.push(result.collect::<Row>().await?);
    }
    result.drop_result().await?;
    Ok(sets)
}

/// [`query_sets`] with each row as a [`RowMap`].
async fn query_map_sets(conn: &mut Conn, statements: &[&str]) -> Result<Vec<Vec<RowMap>>, ProbeError> {
    let sets = query_sets(conn, statements)
        .await
        .map_err(|e| ProbeError::Query { sql: statements.join("; "), message: one_line(&e.to_string()) })?;
    Ok(sets.iter().map(|rows| rows.iter().map(row_map).collect()).collect())
}

/// Runs every probe query on an open connection: the identity and the rest in one
/// round trip when the flavor is known from an earlier probe (`known`), else the
/// identity first. A flavor that turns out different (another server on the same
/// address) is probed again with its own dialect.
async fn probe_on(
    conn: &mut Conn,
    default_port: u16,
    known: Option<Flavor>,
) -> Result<InstanceProbe, ProbeError> {
    if let Some(flavor) = known {
        let mut statements = vec![Dialect::IDENTITY];
        statements.extend(probe_batch(flavor));
        if let Ok(mut sets) = query_map_sets(conn, &statements).await {
            let rest = sets.split_off(1);
            let identity = first_row(sets.remove(0), "identity")?;
            if identity_flavor(&identity) == flavor {
                return probe_from_sets(flavor, &identity, rest, default_port);
            }
        }
    }
    let identity = first_row(query_maps(conn, Dialect::IDENTITY).await?, "identity")?;
    let flavor = identity_flavor(&identity);
    let sets = query_map_sets(conn, &probe_batch(flavor)).await?;
    probe_from_sets(flavor, &identity, sets, default_port)
}

fn first_row(rows: Vec<RowMap>, what: &str) -> Result<RowMap, ProbeError> {
    rows.into_iter().next().ok_or_else(|| ProbeError::Unexpected(format!("{what} query returned no row")))
}

fn identity_flavor(identity: &RowMap) -> Flavor {
    Flavor::detect(
        column(identity, &["version"]).unwrap_or(""),
        column(identity, &["version_comment"]).unwrap_or(""),
    )
}

/// An [`InstanceProbe`] from the identity row and the rows of [`probe_batch`].
fn probe_from_sets(
    flavor: Flavor,
    identity: &RowMap,
    sets: Vec<Vec<RowMap>>,
    default_port: u16,
) -> Result<InstanceProbe, ProbeError> {
    let [gtid, replica_status, replica_hosts, dumps, variables, status]: [Vec<RowMap>; 6] =
        sets.try_into()
            .map_err(|_| ProbeError::Unexpected("the probe batch returned too few results".into()))?;
    let gtid = first_row(gtid, "GTID")?;
    let mut replicas = parse_replica_hosts(&replica_hosts)?;
    if replicas.is_empty() {
        replicas = parse_binlog_dump_clients(&dumps, default_port);
    }
    assemble_probe(
        flavor,
        identity,
        &gtid,
        replica_status.first(),
        replicas,
        parse_semi_sync(&variables, &status),
    )
}

/// Builds an [`InstanceProbe`] from the rows the probe queries returned.
pub fn assemble_probe(
    flavor: Flavor,
    identity: &RowMap,
    gtid: &RowMap,
    replica_status: Option<&RowMap>,
    replicas: Vec<InstanceKey>,
    semi_sync: SemiSyncStatus,
) -> Result<InstanceProbe, ProbeError> {
    let gtid_executed = parse_gtid(column(gtid, &["gtid_executed"]).unwrap_or(""))?;
    let replication = match replica_status {
        Some(row) => Some(parse_replica_status(row)?),
        None => None,
    };
    Ok(InstanceProbe {
        server_id: number(identity, &["server_id"])?,
        server_uuid: column(gtid, &["server_uuid"]).map(str::to_string),
        version: required(identity, &["version"])?.to_string(),
        flavor,
        read_only: flag(required(identity, &["read_only"])?),
        super_read_only: column(gtid, &["super_read_only"]).map(flag),
        log_bin: column(identity, &["log_bin"]).map(flag).unwrap_or(false),
        gtid_executed,
        replication,
        replicas,
        semi_sync,
    })
}

fn parse_gtid(text: &str) -> Result<GtidSet, ProbeError> {
    GtidSet::parse(text).map_err(|e| ProbeError::Unexpected(e.to_string()))
}

/// One row of `SHOW REPLICA STATUS` (MySQL) or `SHOW SLAVE STATUS` (MariaDB).
pub fn parse_replica_status(row: &RowMap) -> Result<ReplicationStatus, ProbeError> {
    let host = required(row, &["Source_Host", "Master_Host"])?;
    let port: u16 = number(row, &["Source_Port", "Master_Port"])?;
    let gtid_mode = match column(row, &["Using_Gtid"]) {
        Some(mode) => mode.to_string(),
        None => match column(row, &["Auto_Position"]) {
            Some(v) if flag(v) => "auto_position".to_string(),
            _ => "No".to_string(),
        },
    };
    let received = parse_gtid(column(row, &["Retrieved_Gtid_Set", "Gtid_IO_Pos"]).unwrap_or(""))?;
    Ok(ReplicationStatus {
        source: InstanceKey::new(host, port),
        io_thread: ThreadState::from_status(
            column(row, &["Replica_IO_Running", "Slave_IO_Running"]).unwrap_or("No"),
        ),
        sql_thread: ThreadState::from_status(
            column(row, &["Replica_SQL_Running", "Slave_SQL_Running"]).unwrap_or("No"),
        ),
        last_io_errno: number(row, &["Last_IO_Errno"]).unwrap_or(0),
        last_io_error: column(row, &["Last_IO_Error"]).unwrap_or("").to_string(),
        last_sql_errno: number(row, &["Last_SQL_Errno"]).unwrap_or(0),
        last_sql_error: column(row, &["Last_SQL_Error"]).unwrap_or("").to_string(),
        seconds_behind: column(row, &["Seconds_Behind_Source", "Seconds_Behind_Master"])
            .and_then(|v| v.trim().parse().ok()),
        gtid_mode,
        received,
    })
}

/// Rows of `SHOW REPLICAS` / `SHOW SLAVE HOSTS`; rows without a reported host are
/// skipped (the processlist fallback finds those).
pub fn parse_replica_hosts(rows: &[RowMap]) -> Result<Vec<InstanceKey>, ProbeError> {
    let mut keys = Vec::new();
    for row in rows {
        let host = column(row, &["Host"]).unwrap_or("").trim();
        if host.is_empty() {
            continue;
        }
        let port: u16 = number(row, &["Port"])?;
        keys.push(InstanceKey::new(host, port));
    }
    keys.sort();
    keys.dedup();
    Ok(keys)
}

/// Processlist `HOST` values (`ip:client_port`) of binlog dump threads.
pub fn parse_binlog_dump_clients(rows: &[RowMap], default_port: u16) -> Vec<InstanceKey> {
    let mut keys: Vec<InstanceKey> = rows
        .iter()
        .filter_map(|row| column(row, &["host"]))
        .map(|h| h.rsplit_once(':').map(|(host, _)| host).unwrap_or(h))
        .filter(|h| !h.is_empty())
        .map(|h| InstanceKey::new(h, default_port))
        .collect();
    keys.sort();
    keys.dedup();
    keys
}

/// `SHOW GLOBAL VARIABLES/STATUS LIKE 'rpl_semi_sync_%'` rows (`Variable_name`, `Value`),
/// in either the source/replica or the master/slave naming.
pub fn parse_semi_sync(variables: &[RowMap], status: &[RowMap]) -> SemiSyncStatus {
    let lookup = |rows: &[RowMap], names: &[&str]| -> Option<String> {
        rows.iter().find_map(|r| {
            let name = column(r, &["Variable_name"])?;
            names
                .iter()
                .any(|n| n.eq_ignore_ascii_case(name))
                .then(|| column(r, &["Value"]).unwrap_or("").to_string())
        })
    };
    SemiSyncStatus {
        master_enabled: lookup(variables, &["rpl_semi_sync_source_enabled", "rpl_semi_sync_master_enabled"])
            .is_some_and(|v| flag(&v)),
        replica_enabled: lookup(variables, &["rpl_semi_sync_replica_enabled", "rpl_semi_sync_slave_enabled"])
            .is_some_and(|v| flag(&v)),
        master_active: lookup(status, &["Rpl_semi_sync_source_status", "Rpl_semi_sync_master_status"])
            .is_some_and(|v| flag(&v)),
        master_clients: lookup(status, &["Rpl_semi_sync_source_clients", "Rpl_semi_sync_master_clients"])
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0),
    }
}

/// Folds a driver error onto one line and drops the repeated prefixes it nests
/// ("Input/output error: Input/output error: Connection refused").
pub(crate) fn one_line(s: &str) -> String {
    let flat = s.split_whitespace().collect::<Vec<_>>().join(" ");
    let mut parts: Vec<&str> = Vec::new();
    for part in flat.split(": ") {
        if parts.last() != Some(&part) {
            parts.push(part);
        }
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(pairs: &[(&str, Option<&str>)]) -> RowMap {
        pairs.iter().map(|(k, v)| (k.to_string(), v.map(str::to_string))).collect()
    }

    #[test]
    fn mariadb_slave_status_parses() {
        let r = row(&[
            ("Master_Host", Some("127.0.3.1")),
            ("Master_Port", Some("3306")),
            ("Slave_IO_Running", Some("Yes")),
            ("Slave_SQL_Running", Some("No")),
            ("Last_IO_Errno", Some("0")),
            ("Last_IO_Error", Some("")),
            ("Last_SQL_Errno", Some("1062")),
            ("Last_SQL_Error", Some("Duplicate entry")),
            ("Seconds_Behind_Master", None),
            ("Using_Gtid", Some("Slave_Pos")),
            ("Gtid_IO_Pos", Some("0-1-42")),
        ]);
        let s = parse_replica_status(&r).unwrap();
        assert_eq!(s.source, InstanceKey::new("127.0.3.1", 3306));
        assert_eq!(s.io_thread, ThreadState::Running);
        assert_eq!(s.sql_thread, ThreadState::Stopped);
        assert_eq!(s.last_sql_errno, 1062);
        assert_eq!(s.seconds_behind, None);
        assert_eq!(s.gtid_mode, "Slave_Pos");
        assert_eq!(s.received.to_string(), "0-1-42");
        assert!(!s.is_replicating());
    }

    #[test]
    fn mysql_replica_status_parses() {
        let uuid = "3e11fa47-71ca-11e1-9e33-c80aa9429562";
        let r = row(&[
            ("Source_Host", Some("10.0.0.5")),
            ("Source_Port", Some("3306")),
            ("Replica_IO_Running", Some("Connecting")),
            ("Replica_SQL_Running", Some("Yes")),
            ("Last_IO_Errno", Some("2003")),
            ("Last_IO_Error", Some("error connecting to source")),
            ("Seconds_Behind_Source", Some("7")),
            ("Auto_Position", Some("1")),
            ("Retrieved_Gtid_Set", Some(&format!("{uuid}:1-10"))),
        ]);
        let s = parse_replica_status(&r).unwrap();
        assert_eq!(s.io_thread, ThreadState::Connecting);
        assert_eq!(s.last_io_errno, 2003);
        assert_eq!(s.seconds_behind, Some(7));
        assert_eq!(s.gtid_mode, "auto_position");
        assert_eq!(s.received.transaction_count(), 10);
    }

    /// `SHOW SLAVE STATUS` of Percona Server 8.0 before 8.0.22: the master/slave column
    /// names, `Executed_Gtid_Set` broken over lines as the server prints it. (The
    /// prober sends `SHOW REPLICA STATUS` to MySQL, so servers that old are not
    /// supported; the parser still reads either naming.)
    #[test]
    fn percona_80_slave_status_parses() {
        let (a, b) = ("9a511b7b-7059-11eb-9a9e-0242ac110002", "a3b0e6f1-7059-11eb-9d34-0242ac110003");
        let retrieved = format!("{a}:1-1042");
        let executed = format!("{a}:1-1040,\n{b}:1-3");
        let r = row(&[
            ("Slave_IO_State", Some("Waiting for master to send event")),
            ("Master_Host", Some("10.0.1.17")),
            ("Master_User", Some("repl")),
            ("Master_Port", Some("3306")),
            ("Connect_Retry", Some("1")),
            ("Master_Log_File", Some("binlog.000012")),
            ("Read_Master_Log_Pos", Some("93412")),
            ("Slave_IO_Running", Some("Yes")),
            ("Slave_SQL_Running", Some("Yes")),
            ("Last_Errno", Some("0")),
            ("Last_Error", Some("")),
            ("Seconds_Behind_Master", Some("2")),
            ("Last_IO_Errno", Some("0")),
            ("Last_IO_Error", Some("")),
            ("Last_SQL_Errno", Some("0")),
            ("Last_SQL_Error", Some("")),
            ("Master_Server_Id", Some("1")),
            ("Master_UUID", Some(a)),
            ("Retrieved_Gtid_Set", Some(&retrieved)),
            ("Executed_Gtid_Set", Some(&executed)),
            ("Auto_Position", Some("1")),
            ("Get_master_public_key", Some("1")),
        ]);
        let s = parse_replica_status(&r).unwrap();
        assert_eq!(s.source, InstanceKey::new("10.0.1.17", 3306));
        assert!(s.is_replicating());
        assert_eq!(s.seconds_behind, Some(2));
        assert_eq!(s.gtid_mode, "auto_position");
        assert_eq!(s.received.transaction_count(), 1042);
    }

    /// `SHOW REPLICA STATUS` of MySQL 9.7.4 (recorded in the test bed), tagged GTIDs in
    /// the received set.
    #[test]
    fn mysql_97_replica_status_parses() {
        let uuid = "94d60be4-edde-11f1-92d1-02fc00000001";
        let received = format!("{uuid}:1-4:orch_tag:1");
        let r = row(&[
            ("Replica_IO_State", Some("Waiting for source to send event")),
            ("Source_Host", Some("127.0.1.1")),
            ("Source_User", Some("repl")),
            ("Source_Port", Some("3306")),
            ("Connect_Retry", Some("1")),
            ("Replica_IO_Running", Some("Yes")),
            ("Replica_SQL_Running", Some("Yes")),
            ("Seconds_Behind_Source", Some("0")),
            ("Last_IO_Errno", Some("0")),
            ("Last_SQL_Errno", Some("0")),
            ("Source_UUID", Some(uuid)),
            ("Retrieved_Gtid_Set", Some(&received)),
            ("Executed_Gtid_Set", Some(&received)),
            ("Auto_Position", Some("1")),
            ("Get_Source_public_key", Some("1")),
        ]);
        let s = parse_replica_status(&r).unwrap();
        assert!(s.is_replicating());
        assert_eq!(s.received.transaction_count(), 5);
    }

    #[test]
    fn replica_status_without_host_is_an_error() {
        let e = parse_replica_status(&row(&[("Slave_IO_Running", Some("Yes"))])).unwrap_err();
        assert!(e.to_string().contains("Source_Host"), "{e}");
    }

    #[test]
    fn replica_hosts_and_processlist_fallback() {
        let rows = vec![
            row(&[("Server_id", Some("3")), ("Host", Some("127.0.3.3")), ("Port", Some("3306"))]),
            row(&[("Server_Id", Some("2")), ("Host", Some("127.0.3.2")), ("Port", Some("3306"))]),
            row(&[("Server_id", Some("4")), ("Host", Some("")), ("Port", Some("3306"))]),
        ];
        let keys = parse_replica_hosts(&rows).unwrap();
        assert_eq!(keys, vec![InstanceKey::new("127.0.3.2", 3306), InstanceKey::new("127.0.3.3", 3306)]);
        let dumps = vec![row(&[("host", Some("10.1.1.1:51234"))]), row(&[("host", Some("10.1.1.1:5"))])];
        assert_eq!(parse_binlog_dump_clients(&dumps, 3306), vec![InstanceKey::new("10.1.1.1", 3306)]);
    }

    #[test]
    fn semi_sync_in_both_namings() {
        let vars = |a: &str, b: &str, on: &str| {
            vec![
                row(&[("Variable_name", Some(a)), ("Value", Some(on))]),
                row(&[("Variable_name", Some(b)), ("Value", Some("OFF"))]),
            ]
        };
        let status = vec![
            row(&[("Variable_name", Some("Rpl_semi_sync_master_status")), ("Value", Some("ON"))]),
            row(&[("Variable_name", Some("Rpl_semi_sync_master_clients")), ("Value", Some("2"))]),
        ];
        let s = parse_semi_sync(
            &vars("rpl_semi_sync_master_enabled", "rpl_semi_sync_slave_enabled", "ON"),
            &status,
        );
        assert_eq!(
            s,
            SemiSyncStatus {
                master_enabled: true,
                replica_enabled: false,
                master_active: true,
                master_clients: 2
            }
        );
        let s = parse_semi_sync(
            &vars("rpl_semi_sync_source_enabled", "rpl_semi_sync_replica_enabled", "ON"),
            &[],
        );
        assert!(s.master_enabled && !s.master_active);
    }

    #[test]
    fn probe_assembles_for_mysql_and_mariadb() {
        let identity = row(&[
            ("server_id", Some("7")),
            ("version", Some("8.0.36-28")),
            ("version_comment", Some("Percona Server (GPL)")),
            ("read_only", Some("1")),
            ("log_bin", Some("1")),
        ]);
        let gtid = row(&[
            ("server_uuid", Some("3e11fa47-71ca-11e1-9e33-c80aa9429562")),
            ("super_read_only", Some("1")),
            ("gtid_executed", Some("3e11fa47-71ca-11e1-9e33-c80aa9429562:1-5,\n")),
        ]);
        let p = assemble_probe(Flavor::Percona, &identity, &gtid, None, vec![], Default::default()).unwrap();
        assert_eq!(p.server_id, 7);
        assert!(p.read_only);
        assert_eq!(p.super_read_only, Some(true));
        assert_eq!(p.gtid_executed.transaction_count(), 5);
        assert!(p.replication.is_none());

        let gtid = row(&[("server_uuid", None), ("super_read_only", None), ("gtid_executed", Some("0-1-9"))]);
        let p = assemble_probe(Flavor::MariaDb, &identity, &gtid, None, vec![], Default::default()).unwrap();
        assert_eq!(p.server_uuid, None);
        assert_eq!(p.super_read_only, None);
        assert_eq!(p.gtid_executed.to_string(), "0-1-9");
    }

    #[test]
    fn driver_errors_fold_to_one_line_without_repeats() {
        assert_eq!(
            one_line("Input/output error: Input/output error: Connection refused (os error 111)"),
            "Input/output error: Connection refused (os error 111)"
        );
        assert_eq!(one_line("a\n  b: c"), "a b: c");
    }

    #[test]
    fn garbage_gtid_is_an_unexpected_output_error() {
        let identity = row(&[("server_id", Some("1")), ("version", Some("x")), ("read_only", Some("0"))]);
        let gtid = row(&[("gtid_executed", Some("not a gtid"))]);
        let e =
            assemble_probe(Flavor::MySql, &identity, &gtid, None, vec![], Default::default()).unwrap_err();
        assert!(matches!(e, ProbeError::Unexpected(_)), "{e}");
    }
}
