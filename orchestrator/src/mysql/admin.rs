//! The few commands recovery needs, per flavor: fence, promote, repoint, verify a
//! write as the application user. Each statement is bounded in time, and each command
//! is safe to repeat (recovery steps are retried and finished by new leaders).

use std::sync::Arc;
use std::time::Duration;

use mysql_async::prelude::Queryable;
use mysql_async::Conn;

use super::credentials::Credentials;
use super::{connect_with, one_line, ProbeError};
use crate::topology::{Flavor, InstanceKey};

/// Why a command did not take effect.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{instance}: {what}: {message}")]
pub struct AdminError {
    pub instance: String,
    pub what: String,
    pub message: String,
}

/// Credentials and limits for [`MysqlAdmin`].
#[derive(Clone)]
pub struct AdminSettings {
    pub user: String,
    pub replication_user: String,
    /// The passwords of `user`, `replication_user` and the write check's account.
    pub credentials: Arc<Credentials>,
    /// A non-privileged account (the application's) that proves the new master takes
    /// writes, and the table it writes to (`schema.table` with `id` and `at` columns).
    pub verify: Option<WriteCheck>,
    pub connect_timeout: Duration,
    /// Bound on each statement.
    pub statement_timeout: Duration,
    /// Connect timeout when fencing a master that failed: one that answers does so in
    /// milliseconds, and a hung one must not hold the failover up.
    pub fence_connect_timeout: Duration,
}

impl std::fmt::Debug for AdminSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminSettings")
            .field("user", &self.user)
            .field("replication_user", &self.replication_user)
            .field("verify", &self.verify.as_ref().map(|v| (&v.user, &v.table)))
            .finish_non_exhaustive()
    }
}

#[derive(Clone)]
pub struct WriteCheck {
    pub user: String,
    pub table: String,
}

/// Quotes a string literal for SQL (single quotes, backslashes).
pub fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// `text` with the quoted value after every `PASSWORD=` (any case) replaced by `'…'`,
/// so a statement or a server error quoting it can be logged.
pub fn redact_passwords(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.to_ascii_uppercase().find("PASSWORD=") {
        let (before, after) = rest.split_at(at + "PASSWORD=".len());
        out.push_str(before);
        let mut chars = after.char_indices();
        match chars.next() {
            Some((_, q)) if q == '\'' || q == '"' => {
                let mut end = after.len();
                let mut escaped = false;
                for (i, c) in chars {
                    if escaped {
                        escaped = false;
                    } else if c == '\\' {
                        escaped = true;
                    } else if c == q {
                        end = i + c.len_utf8();
                        break;
                    }
                }
                out.push_str("'…'");
                rest = &after[end..];
            }
            _ => {
                // Unquoted: up to the next separator.
                let end = after.find([',', ' ', ';', ')']).unwrap_or(after.len());
                out.push('…');
                rest = &after[end..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// What an instance about to be repointed is now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RepointFrom {
    /// No replication configured: a former master.
    FormerMaster,
    /// A replica; `auto_position`: already with GTID auto-positioning.
    Replica { auto_position: bool },
}

/// The statements that make `key` replicate from `source` with GTID auto-positioning.
///
/// A MySQL replica already auto-positioned keeps its applier running: with only its
/// receiver stopped, the source's address and login can change, and the applier goes
/// on with its relay log. That saves the applier's stop and start and the relay log
/// purge, the slow part of a repoint (measured on MySQL 9.7, idle: STOP REPLICA,
/// CHANGE, START 25-34 ms; receiver only 13-23 ms, of which CHANGE 0.6-1.5 ms and
/// START 0.3 ms). MariaDB refuses a `CHANGE MASTER` while any thread runs.
pub fn repoint_statements(
    flavor: Flavor,
    source: &InstanceKey,
    user: &str,
    password: &str,
    from: RepointFrom,
) -> Vec<String> {
    let (host, port, user, password) = (quote(&source.host), source.port, quote(user), quote(password));
    if flavor.is_mariadb() {
        let mut s = vec!["STOP SLAVE".to_string()];
        if from == RepointFrom::FormerMaster {
            // Its own binlog is what it has executed: start replicating after it.
            s.push("SET GLOBAL gtid_slave_pos = @@GLOBAL.gtid_binlog_pos".into());
        }
        s.push(format!(
            "CHANGE MASTER TO MASTER_HOST={host}, MASTER_PORT={port}, MASTER_USER={user}, \
             MASTER_PASSWORD={password}, MASTER_USE_GTID=slave_pos, MASTER_CONNECT_RETRY=1"
        ));
        s.push("START SLAVE".into());
        s
    } else if from == (RepointFrom::Replica { auto_position: true }) {
        vec![
            "STOP REPLICA IO_THREAD".into(),
            format!(
                "CHANGE REPLICATION SOURCE TO SOURCE_HOST={host}, SOURCE_PORT={port}, SOURCE_USER={user}, \
                 SOURCE_PASSWORD={password}, SOURCE_CONNECT_RETRY=1, GET_SOURCE_PUBLIC_KEY=1"
            ),
            "START REPLICA".into(),
        ]
    } else {
        vec![
            "STOP REPLICA".into(),
            format!(
                "CHANGE REPLICATION SOURCE TO SOURCE_HOST={host}, SOURCE_PORT={port}, SOURCE_USER={user}, \
                 SOURCE_PASSWORD={password}, SOURCE_AUTO_POSITION=1, SOURCE_CONNECT_RETRY=1, \
                 GET_SOURCE_PUBLIC_KEY=1"
            ),
            "START REPLICA".into(),
        ]
    }
}

/// The statements that turn a replica into a writable master, and those that forget
/// its old source afterwards. The first part never waits on replication threads: the
/// candidate's IO thread is killed and told to stop, its SQL thread has applied all it
/// received and gets nothing more, but `STOP SLAVE` (even `SQL_THREAD`) waits for the
/// killed IO thread, whose reconnect attempt to a hung master lasts up to
/// `slave_net_timeout` (measured: 2 s). The second part runs after, in the background.
/// On MySQL, whose IO thread is not killed first ([`kills_io_thread_first`]), the first
/// part opens with `STOP REPLICA IO_THREAD` (a no-op after a failover's freeze).
pub fn promote_statements(flavor: Flavor, semi_sync_source: Option<&str>) -> (Vec<String>, Vec<String>) {
    let mut now = Vec::new();
    if !kills_io_thread_first(flavor) {
        now.push("STOP REPLICA IO_THREAD".into());
    }
    if let Some(variable) = semi_sync_source {
        now.push(format!("SET GLOBAL {variable} = ON"));
    }
    if flavor.is_mariadb() {
        now.push("SET GLOBAL read_only = OFF".into());
        (now, vec!["STOP SLAVE".into(), "RESET SLAVE ALL".into()])
    } else {
        // A fenced former master is offline too.
        now.push("SET GLOBAL offline_mode = OFF".into());
        now.push("SET GLOBAL super_read_only = OFF".into());
        now.push("SET GLOBAL read_only = OFF".into());
        (now, vec!["STOP REPLICA".into(), "RESET REPLICA ALL".into()])
    }
}

/// The variable that turns the master side of semi-sync on, from the names of the
/// server's `rpl_semi_sync_%` variables: `rpl_semi_sync_source_enabled` (MySQL and
/// Percona 8.0.26+, plugin `semisync_source`), `rpl_semi_sync_master_enabled` (MariaDB,
/// and MySQL/Percona before 8.0.26 with plugin `semisync_master`); `None` when no
/// semi-sync plugin is loaded.
pub fn semi_sync_source_variable<'a>(names: impl IntoIterator<Item = &'a str>) -> Option<&'static str> {
    let names: Vec<String> = names.into_iter().map(str::to_ascii_lowercase).collect();
    ["rpl_semi_sync_source_enabled", "rpl_semi_sync_master_enabled"]
        .into_iter()
        .find(|v| names.iter().any(|n| n == v))
}

/// MySQL only: the statement that comes before a fence through semi-sync waits.
/// `offline_mode` turns away new connections of accounts without `CONNECTION_ADMIN`
/// (the application's), so no client can start a commit between the kill of the
/// clients and `super_read_only`.
pub fn fence_admission_statements(flavor: Flavor) -> Vec<String> {
    if flavor.is_mariadb() {
        Vec::new()
    } else {
        vec!["SET GLOBAL offline_mode = ON".into()]
    }
}

/// How long a plain MySQL fence may take before the master is taken for one whose
/// commits wait for semi-sync acknowledgements (a healthy one answers in milliseconds).
pub const PLAIN_FENCE_WAIT: Duration = Duration::from_millis(500);

/// MySQL: client sessions still alive after the kill, but the orchestrator's own
/// (other peers probe all the time, and never write): any of them could commit without
/// an acknowledgement once the semi-sync waits are released.
pub fn surviving_sessions_sql(orchestrator_user: &str) -> String {
    format!(
        "SELECT ID, USER FROM information_schema.PROCESSLIST WHERE {} AND COMMAND <> 'Killed'",
        client_filter(orchestrator_user)
    )
}

/// MySQL only: what releases commits waiting for a semi-sync acknowledgement once
/// their clients are killed. On MySQL (measured on 9.7) `KILL` does not end that
/// wait, and the waiting commit holds the lock `SET GLOBAL super_read_only` waits
/// for: the fence would hang as long as the master has no replica. With the source
/// side off the commit completes locally, never acknowledged (its client's socket was
/// closed by the kill): an errant transaction of the old master, which keeps it from
/// rejoining. MariaDB ends the wait on `KILL` itself.
pub fn release_semi_sync_waits(flavor: Flavor, semi_sync_source: Option<&str>) -> Vec<String> {
    match semi_sync_source {
        Some(variable) if !flavor.is_mariadb() => vec![format!("SET GLOBAL {variable} = OFF")],
        _ => Vec::new(),
    }
}

/// The statement that stops an instance from taking writes.
pub fn fence_statements(flavor: Flavor) -> Vec<String> {
    if flavor.is_mariadb() {
        vec!["SET GLOBAL read_only = ON".into()]
    } else {
        vec!["SET GLOBAL super_read_only = ON".into()]
    }
}

/// Client connections to kill when fencing: everything but replication, system
/// threads and the orchestrator's own sessions (probes, and other peers fencing the
/// same instance at the same time: killing each other's statements, two fencers
/// would never finish; none of them writes).
pub fn client_connections_sql(orchestrator_user: &str) -> String {
    format!("SELECT ID FROM information_schema.PROCESSLIST WHERE {}", client_filter(orchestrator_user))
}

/// The `WHERE` condition of [`client_connections_sql`]: another session of an
/// application (or operator), not a replication or system thread, not the
/// orchestrator's.
fn client_filter(orchestrator_user: &str) -> String {
    format!(
        "ID <> CONNECTION_ID() AND USER NOT IN ('system user', 'event_scheduler', {}) \
         AND COMMAND NOT IN ('Binlog Dump', 'Binlog Dump GTID', 'Daemon', 'Slave_IO', 'Slave_SQL', \
         'Slave_worker', 'Connect')",
        quote(orchestrator_user)
    )
}

/// The replication IO threads (MariaDB `Slave_IO`; MySQL shows `Connect`), with their
/// states.
pub const IO_THREADS: &str = "SELECT ID, STATE FROM information_schema.PROCESSLIST \
     WHERE USER = 'system user' AND (COMMAND = 'Slave_IO' OR STATE LIKE 'Waiting for %source to send event%' \
     OR STATE LIKE 'Waiting for master to send event%' OR STATE LIKE 'Reconnecting%' OR STATE LIKE 'Connecting%')";

/// How long [`MysqlAdmin::stop_io_thread`] waits for its `STOP SLAVE IO_THREAD`.
const IO_STOP_WAIT: Duration = Duration::from_millis(100);

/// MariaDB: the pause between killing a semi-sync replica's IO thread and `STOP SLAVE`.
/// An exiting semi-sync IO thread first connects to its master to kill its dump
/// thread there (`rpl_semi_sync_slave_kill_conn_timeout`, 5 s by default, against a
/// hung master). Only `STOP SLAVE`'s signal interrupts that connect, and the STOP
/// signals again only every 2 s: a STOP that arrives before the killed thread has
/// started connecting waits 2 s, one that arrives after returns at once. Measured on
/// MariaDB 10.11 with the master stopped mid-write: STOP right after KILL waited 2 s
/// in most rounds, STOP 5, 30 or 100 ms after KILL returned in about 1 ms in every
/// round (30 of 30). MySQL's replica has no such step (STOP measured 1-7 ms).
const MARIADB_KILL_SETTLE: Duration = Duration::from_millis(10);

/// Whether a killed IO thread in `state` may still be in a connection to its master
/// (and so, on MariaDB, about to open the kill connection [`MARIADB_KILL_SETTLE`] is
/// about). One waiting to reconnect has none: its master closed it (a master that
/// died), and its kill connection is refused at once.
pub fn may_hold_master_connection(state: &str) -> bool {
    !state.trim_start().to_ascii_lowercase().starts_with("waiting to reconnect")
}

/// Whether the IO thread is killed before it is stopped. MariaDB's `STOP SLAVE` waits
/// for an IO thread blocked reading from a hung master; MySQL's `STOP REPLICA` shuts
/// that thread's connection itself (2-8 ms against a SIGSTOPped master, measured with
/// and without the kill alike), so there the kill is two round trips for nothing.
fn kills_io_thread_first(flavor: Flavor) -> bool {
    flavor.is_mariadb()
}

/// Waits [`MARIADB_KILL_SETTLE`] after a MariaDB IO thread was killed.
async fn settle_after_kill(flavor: Flavor, killed: usize) {
    if flavor.is_mariadb() && killed > 0 {
        tokio::time::sleep(MARIADB_KILL_SETTLE).await;
    }
}

/// A recovery statement taking this long or more is logged with its duration.
const SLOW_STATEMENT: Duration = Duration::from_millis(100);

/// Runs recovery commands on real servers.
pub struct MysqlAdmin {
    settings: AdminSettings,
    /// What each instance was found to be, read once: a recovery's steps each open a
    /// connection to the same servers, and every round trip saved is on its path.
    known: std::sync::Mutex<std::collections::HashMap<InstanceKey, KnownServer>>,
    /// Connections kept after a command succeeded, one per instance and account: the
    /// next command on the same server (a recovery touches each server two or three
    /// times within milliseconds) skips the connect and login round trips.
    idle: Arc<IdleConnections>,
}

/// Connections kept between commands, by instance and account, with when each was
/// last used.
#[derive(Default)]
struct IdleConnections(
    std::sync::Mutex<std::collections::HashMap<(InstanceKey, String), (Conn, std::time::Instant)>>,
);

impl IdleConnections {
    fn take(&self, key: &InstanceKey, user: &str) -> Option<(Conn, Duration)> {
        let (conn, used) = self.0.lock().ok()?.remove(&(key.clone(), user.to_string()))?;
        Some((conn, used.elapsed()))
    }

    /// How long the kept connection of `user` to `key` has been idle, if there is one.
    fn idle_for(&self, key: &InstanceKey, user: &str) -> Option<Duration> {
        self.0.lock().ok()?.get(&(key.clone(), user.to_string())).map(|(_, used)| used.elapsed())
    }

    /// Keeps `conn` (a connection already kept for the same instance and account
    /// stays, this one is closed).
    fn keep(&self, key: &InstanceKey, user: &str, conn: Conn) {
        if let Ok(mut idle) = self.0.lock() {
            idle.entry((key.clone(), user.to_string())).or_insert((conn, std::time::Instant::now()));
        }
    }
}

/// A kept connection idle longer than this is pinged before use (the server may have
/// restarted, or closed it); one used more recently is used as it is.
const IDLE_PING_AFTER: Duration = Duration::from_secs(5);

/// Facts about a server that do not change while it runs.
#[derive(Debug, Clone, Copy, Default)]
struct KnownServer {
    flavor: Option<Flavor>,
    /// The semi-sync source variable, once a plugin providing it was seen loaded (a
    /// server without one is asked again: the plugin may be installed later).
    semi_sync_source: Option<&'static str>,
    /// When [`MysqlAdmin::learn`] last asked (it asks a server again after 10 s).
    learned_unix_ms: i64,
}

impl MysqlAdmin {
    pub fn new(settings: AdminSettings) -> Self {
        Self { settings, known: Default::default(), idle: Default::default() }
    }

    /// Reads what is not yet known of each of `keys` (flavor, semi-sync variable) and
    /// keeps a connection to each, so a recovery about to start neither asks for it
    /// nor connects on its path; errors are ignored. A kept connection is left alone
    /// unless a command would ping it first: taken for a ping now, a recovery starting
    /// meanwhile would open another.
    pub async fn learn(&self, keys: &[InstanceKey]) {
        self.learn_refreshing(keys, IDLE_PING_AFTER).await
    }

    /// [`MysqlAdmin::learn`], run every few seconds: a kept connection idle for half the
    /// time after which a command pings it is pinged now, so none is pinged on a
    /// recovery's path.
    pub async fn keep_warm(&self, keys: &[InstanceKey]) {
        self.learn_refreshing(keys, IDLE_PING_AFTER / 2).await
    }

    async fn learn_refreshing(&self, keys: &[InstanceKey], refresh_after: Duration) {
        futures::future::join_all(keys.iter().map(|key| async move {
            let known = self.known(key);
            let now = crate::unix_millis_now();
            if known.flavor.is_some()
                && (known.semi_sync_source.is_some() || now - known.learned_unix_ms < 10_000)
            {
                // Known: a connection is opened, or a kept one idle `refresh_after`
                // pinged.
                let user = &self.settings.user;
                if self.idle.idle_for(key, user).is_some_and(|idle| idle < refresh_after) {
                    return;
                }
                if let Ok(conn) = self.open_pinging_after(key, refresh_after).await {
                    self.keep(key, conn);
                }
                return;
            }
            self.remember(key, |k| k.learned_unix_ms = now);
            let Ok(mut conn) = self.open(key).await else { return };
            let flavor = self.flavor(key, &mut conn).await;
            let variable = self.semi_sync_source_variable(key, &mut conn).await;
            if flavor.is_ok() && variable.is_ok() {
                self.keep(key, conn);
            }
        }))
        .await;
    }

    fn known(&self, key: &InstanceKey) -> KnownServer {
        self.known.lock().ok().and_then(|k| k.get(key).copied()).unwrap_or_default()
    }

    fn remember(&self, key: &InstanceKey, update: impl FnOnce(&mut KnownServer)) {
        if let Ok(mut known) = self.known.lock() {
            update(known.entry(key.clone()).or_default());
        }
    }

    pub fn settings(&self) -> &AdminSettings {
        &self.settings
    }

    fn error(key: &InstanceKey, what: &str, message: impl std::fmt::Display) -> AdminError {
        AdminError {
            instance: key.to_string(),
            what: what.to_string(),
            message: one_line(&message.to_string()),
        }
    }

    /// `text` with every `PASSWORD=` value and every password this peer knows replaced
    /// by `…`: what may be logged of a statement or a server's error about it.
    fn scrub(&self, text: &str) -> String {
        let passwords = self.settings.credentials.current();
        passwords
            .all()
            .into_iter()
            .filter(|p| p.len() >= 3)
            .fold(redact_passwords(text), |t, p| t.replace(p, "…"))
    }

    /// A connection to `key` as the orchestrator's account: one kept from an earlier
    /// command (pinged first when it was idle a while), else a new one.
    async fn open(&self, key: &InstanceKey) -> Result<Conn, AdminError> {
        self.open_pinging_after(key, IDLE_PING_AFTER).await
    }

    /// [`MysqlAdmin::open`], a kept connection pinged first when idle `ping_after`.
    async fn open_pinging_after(&self, key: &InstanceKey, ping_after: Duration) -> Result<Conn, AdminError> {
        let s = &self.settings;
        if let Some(conn) = self.kept(key, &s.user, ping_after).await {
            return Ok(conn);
        }
        connect_with(&s.credentials, key, &s.user, |p| &p.orchestrator, s.connect_timeout)
            .await
            .map_err(|e: ProbeError| Self::error(key, "connect", e))
    }

    /// A kept connection of `user` to `key` that still answers (pinged first when idle
    /// `ping_after`).
    async fn kept(&self, key: &InstanceKey, user: &str, ping_after: Duration) -> Option<Conn> {
        let (mut conn, idle) = self.idle.take(key, user)?;
        if idle < ping_after {
            return Some(conn);
        }
        match tokio::time::timeout(self.settings.statement_timeout, conn.ping()).await {
            Ok(Ok(())) => Some(conn),
            _ => None,
        }
    }

    /// Keeps `conn` (of the orchestrator's account) for the next command on `key`.
    fn keep(&self, key: &InstanceKey, conn: Conn) {
        self.idle.keep(key, &self.settings.user, conn);
    }

    /// [`super::query_sets`] bounded by the statement timeout, logged when slow, its
    /// error naming the statements with passwords redacted.
    async fn run_batch(
        &self,
        key: &InstanceKey,
        conn: &mut Conn,
        statements: &[String],
    ) -> Result<Vec<Vec<mysql_async::Row>>, AdminError> {
        let sql = statements.join("; ");
        let started = std::time::Instant::now();
        let timeout = self.settings.statement_timeout;
        let result = tokio::time::timeout(timeout, super::query_sets(conn, statements)).await;
        let took = started.elapsed();
        if took >= SLOW_STATEMENT {
            tracing::info!(instance = %key, sql = %self.scrub(&sql), took_ms = took.as_millis() as u64, "slow recovery statement");
        }
        match result {
            Ok(Ok(sets)) => Ok(sets),
            Ok(Err(e)) => Err(Self::error(key, &self.scrub(&sql), self.scrub(&e.to_string()))),
            Err(_) => Err(Self::error(
                key,
                &self.scrub(&sql),
                format!("no answer within {} ms", timeout.as_millis()),
            )),
        }
    }

    /// Runs one statement. An error names the statement with any password in it (and
    /// in the server's message, which may quote it) replaced by `'…'`.
    async fn run(&self, key: &InstanceKey, conn: &mut Conn, sql: &str) -> Result<(), AdminError> {
        let timeout = self.settings.statement_timeout;
        match self.run_within(key, conn, sql, timeout).await? {
            Some(()) => Ok(()),
            None => Err(Self::error(
                key,
                &self.scrub(sql),
                format!("no answer within {} ms", timeout.as_millis()),
            )),
        }
    }

    /// As [`MysqlAdmin::run`], bounded by `timeout`; `None` when it ran out (the
    /// statement may still be running on the server).
    async fn run_within(
        &self,
        key: &InstanceKey,
        conn: &mut Conn,
        sql: &str,
        timeout: Duration,
    ) -> Result<Option<()>, AdminError> {
        let started = std::time::Instant::now();
        let result = tokio::time::timeout(timeout, conn.query_drop(sql)).await;
        let took = started.elapsed();
        if took >= SLOW_STATEMENT {
            tracing::info!(instance = %key, sql = %self.scrub(sql), took_ms = took.as_millis() as u64, "slow recovery statement");
        }
        match result {
            Ok(Ok(())) => Ok(Some(())),
            Ok(Err(e)) => Err(Self::error(key, &self.scrub(sql), self.scrub(&e.to_string()))),
            Err(_) => Ok(None),
        }
    }

    /// A connection for fencing: bounded by the short fence connect timeout.
    async fn open_for_fence(&self, key: &InstanceKey) -> Result<Conn, AdminError> {
        let s = &self.settings;
        connect_with(&s.credentials, key, &s.user, |p| &p.orchestrator, s.fence_connect_timeout)
            .await
            .map_err(|e: ProbeError| Self::error(key, "connect", e))
    }

    async fn flavor(&self, key: &InstanceKey, conn: &mut Conn) -> Result<Flavor, AdminError> {
        if let Some(flavor) = self.known(key).flavor {
            return Ok(flavor);
        }
        let row: Option<(String, String)> = tokio::time::timeout(
            self.settings.statement_timeout,
            conn.query_first("SELECT @@version, @@version_comment"),
        )
        .await
        .map_err(|_| Self::error(key, "version", "no answer"))?
        .map_err(|e| Self::error(key, "version", e))?;
        let (version, comment) = row.unwrap_or_default();
        let flavor = Flavor::detect(&version, &comment);
        self.remember(key, |k| k.flavor = Some(flavor));
        Ok(flavor)
    }

    /// Makes `key` read-only and kills its client connections. Writes in flight get an
    /// error, never an acknowledgement: semi-sync is left as it is, so a commit waiting
    /// for a replica's acknowledgement is not released by the fence.
    ///
    /// On MySQL a `KILL` does not end such a wait (measured on 9.7), and the waiting
    /// commit holds up `SET GLOBAL super_read_only` as long as the master has no
    /// replica: when the plain fence does not finish within [`PLAIN_FENCE_WAIT`],
    /// [`MysqlAdmin::fence_through_semi_sync_waits`] takes over.
    pub async fn fence(&self, key: &InstanceKey) -> Result<(), AdminError> {
        let mut conn = self.open_for_fence(key).await?;
        let flavor = self.flavor(key, &mut conn).await?;
        // Kill first: on MariaDB a commit waiting for semi-sync holds the commit lock
        // that `SET GLOBAL read_only` waits for, and the kill ends that wait.
        self.kill_clients(key, &mut conn).await?;
        if flavor.is_mariadb() {
            for sql in fence_statements(flavor) {
                self.run(key, &mut conn, &sql).await?;
            }
        } else {
            let wait = PLAIN_FENCE_WAIT.min(self.settings.statement_timeout);
            let mut finished = true;
            for sql in fence_statements(flavor) {
                if self.run_within(key, &mut conn, &sql, wait).await?.is_none() {
                    finished = false;
                    break;
                }
            }
            if !finished {
                // The statement still waits on the server (harmlessly: it holds new
                // writes back, and finishes once the waits are released).
                drop(conn);
                self.fence_through_semi_sync_waits(key, flavor).await?;
                conn = self.open_for_fence(key).await?;
            }
        }
        self.kill_clients(key, &mut conn).await?;
        let read_only: Option<i64> = conn
            .query_first("SELECT @@read_only")
            .await
            .map_err(|e| Self::error(key, "check read_only", e))?;
        if read_only != Some(1) {
            return Err(Self::error(key, "fence", "read_only is still off"));
        }
        Ok(())
    }

    /// MySQL: fences a master whose commits wait for semi-sync acknowledgements that
    /// will not come. `offline_mode` first, so the application (which must not hold
    /// `CONNECTION_ADMIN` or `SUPER`) cannot connect again; then every client is
    /// killed (their sockets close: nothing they wait for can be acknowledged to
    /// them); then, only if no session but the orchestrator's survived the kill, the
    /// source side of semi-sync is turned off so the waiting commits finish locally
    /// (errant transactions of the old master), `super_read_only` goes on, and the
    /// source side is turned on again. `offline_mode` stays on until the instance
    /// rejoins as a replica or is promoted.
    async fn fence_through_semi_sync_waits(
        &self,
        key: &InstanceKey,
        flavor: Flavor,
    ) -> Result<(), AdminError> {
        let s = &self.settings;
        let mut conn =
            connect_with(&s.credentials, key, &s.user, |p| &p.orchestrator, s.fence_connect_timeout)
                .await
                .map_err(|e: ProbeError| Self::error(key, "connect", e))?;
        for sql in fence_admission_statements(flavor) {
            self.run(key, &mut conn, &sql).await?;
        }
        self.kill_clients(key, &mut conn).await?;
        let sql = surviving_sessions_sql(&s.user);
        let survivors: Vec<(u64, String)> = tokio::time::timeout(s.statement_timeout, conn.query(&sql))
            .await
            .map_err(|_| Self::error(key, "list surviving sessions", "no answer"))?
            .map_err(|e| Self::error(key, "list surviving sessions", e))?;
        if let Some((id, user)) = survivors.first() {
            return Err(Self::error(
                key,
                "fence",
                format!(
                    "session {id} of `{user}` survived the kill (an account with SYSTEM_USER or \
                     CONNECTION_ADMIN?): its commits would be acknowledged without a replica, so the \
                     semi-sync waits are not released and super_read_only cannot be set"
                ),
            ));
        }
        let variable = self.semi_sync_source_variable(key, &mut conn).await?;
        for sql in release_semi_sync_waits(flavor, variable) {
            self.run(key, &mut conn, &sql).await?;
        }
        let fenced = async {
            for sql in fence_statements(flavor) {
                self.run(key, &mut conn, &sql).await?;
            }
            Ok::<(), AdminError>(())
        }
        .await;
        // Nothing can commit any more: the source side goes back as it was, so a
        // failed switchover leaves semi-sync as it found it.
        if let Some(variable) = variable {
            self.run(key, &mut conn, &format!("SET GLOBAL {variable} = ON")).await?;
        }
        fenced
    }

    /// Which variable turns on the master side of semi-sync on `key`, if any.
    async fn semi_sync_source_variable(
        &self,
        key: &InstanceKey,
        conn: &mut Conn,
    ) -> Result<Option<&'static str>, AdminError> {
        if let Some(variable) = self.known(key).semi_sync_source {
            return Ok(Some(variable));
        }
        let sql = "SHOW GLOBAL VARIABLES LIKE 'rpl_semi_sync_%enabled'";
        let rows: Vec<(String, String)> =
            tokio::time::timeout(self.settings.statement_timeout, conn.query(sql))
                .await
                .map_err(|_| Self::error(key, sql, "no answer"))?
                .map_err(|e| Self::error(key, sql, e))?;
        let variable = semi_sync_source_variable(rows.iter().map(|(name, _)| name.as_str()));
        if variable.is_some() {
            self.remember(key, |k| k.semi_sync_source = variable);
        }
        Ok(variable)
    }

    async fn kill_clients(&self, key: &InstanceKey, conn: &mut Conn) -> Result<(), AdminError> {
        let ids: Vec<u64> = tokio::time::timeout(
            self.settings.statement_timeout,
            conn.query(client_connections_sql(&self.settings.user)),
        )
        .await
        .map_err(|_| Self::error(key, "list connections", "no answer"))?
        .map_err(|e| Self::error(key, "list connections", e))?;
        for id in ids {
            // The connection may be gone already.
            let _ = self.run(key, conn, &format!("KILL CONNECTION {id}")).await;
        }
        Ok(())
    }

    /// Kills the replication IO thread; returns how many threads it killed. `STOP
    /// SLAVE` waits for it, and an IO thread blocked reading from a hung master only
    /// notices after `slave_net_timeout`; a killed one leaves its read at once.
    ///
    /// Counts only the killed threads that [`may_hold_master_connection`].
    async fn kill_io_thread(&self, key: &InstanceKey, conn: &mut Conn) -> usize {
        let threads: Result<Vec<(u64, Option<String>)>, _> = conn.query(IO_THREADS).await;
        self.kill_threads(key, conn, threads.unwrap_or_default()).await
    }

    /// Kills `threads` (id, state); returns how many of the killed ones
    /// [`may_hold_master_connection`].
    async fn kill_threads(
        &self,
        key: &InstanceKey,
        conn: &mut Conn,
        threads: Vec<(u64, Option<String>)>,
    ) -> usize {
        let mut killed = 0;
        for (id, state) in threads {
            if self.run(key, conn, &format!("KILL {id}")).await.is_ok()
                && may_hold_master_connection(state.as_deref().unwrap_or(""))
            {
                killed += 1;
            }
        }
        killed
    }

    /// Stops the replication IO thread. On MariaDB it is killed first (its connection
    /// to the master breaks at once), then `STOP SLAVE IO_THREAD` makes it exit instead
    /// of reconnecting; see [`kills_io_thread_first`] for MySQL. Waits for the STOP up to
    /// [`IO_STOP_WAIT`]; a STOP still running then goes on in the background (nothing
    /// needs to wait for it: the killed thread reads nothing more).
    ///
    /// `source_refuses`: the master refuses connections (it died), so a semi-sync IO
    /// thread's kill connection is refused at once and the STOP need not wait.
    pub async fn stop_io_thread(&self, key: &InstanceKey, source_refuses: bool) -> Result<(), AdminError> {
        let mut conn = self.open(key).await?;
        let flavor = self.flavor(key, &mut conn).await?;
        if kills_io_thread_first(flavor) {
            let killed = self.kill_io_thread(key, &mut conn).await;
            if !source_refuses {
                settle_after_kill(flavor, killed).await;
            }
        }
        let sql = if flavor.is_mariadb() { "STOP SLAVE IO_THREAD" } else { "STOP REPLICA IO_THREAD" };
        let timeout = self.settings.statement_timeout * 2;
        let instance = key.clone();
        let (idle, user) = (self.idle.clone(), self.settings.user.clone());
        let stop = tokio::spawn(async move {
            let started = std::time::Instant::now();
            match tokio::time::timeout(timeout, conn.query_drop(sql)).await {
                Ok(Ok(())) => idle.keep(&instance, &user, conn),
                Ok(Err(e)) => tracing::warn!(%instance, error = %e, "STOP SLAVE IO_THREAD failed"),
                Err(_) => tracing::warn!(
                    %instance,
                    "STOP SLAVE IO_THREAD still running after {} ms",
                    timeout.as_millis()
                ),
            }
            let took = started.elapsed();
            if took >= SLOW_STATEMENT {
                tracing::info!(%instance, took_ms = took.as_millis() as u64, "slow STOP SLAVE IO_THREAD");
            }
        });
        let _ = tokio::time::timeout(IO_STOP_WAIT, stop).await;
        Ok(())
    }

    /// Turns on the master side of semi-sync, before replicas connect to `key`: a
    /// replica that connects while it is off never acknowledges.
    pub async fn enable_semi_sync_master(&self, key: &InstanceKey) -> Result<(), AdminError> {
        let mut conn = self.open(key).await?;
        let Some(variable) = self.semi_sync_source_variable(key, &mut conn).await? else {
            return Err(Self::error(key, "semi-sync", "no semi-sync plugin is loaded"));
        };
        self.run(key, &mut conn, &format!("SET GLOBAL {variable} = ON")).await?;
        self.keep(key, conn);
        Ok(())
    }

    /// Stops replication on `key`, forgets its source and makes it writable. The write
    /// check's connection is opened meanwhile and kept for [`MysqlAdmin::verify_write`].
    pub async fn promote(&self, key: &InstanceKey, semi_sync: bool) -> Result<(), AdminError> {
        let (promoted, ()) = tokio::join!(self.promote_only(key, semi_sync), self.open_write_check(key));
        promoted
    }

    async fn promote_only(&self, key: &InstanceKey, semi_sync: bool) -> Result<(), AdminError> {
        let mut conn = self.open(key).await?;
        let flavor = self.flavor(key, &mut conn).await?;
        let killed =
            if kills_io_thread_first(flavor) { self.kill_io_thread(key, &mut conn).await } else { 0 };
        let semi_sync_source = if semi_sync {
            match self.semi_sync_source_variable(key, &mut conn).await? {
                Some(variable) => Some(variable),
                None => return Err(Self::error(key, "promote", "no semi-sync plugin is loaded")),
            }
        } else {
            None
        };
        let (now, after) = promote_statements(flavor, semi_sync_source);
        self.run_batch(key, &mut conn, &now).await?;
        // Forget the old source once the IO thread has exited (it is killed and told
        // to stop; it exits at the latest when its reconnect attempt times out).
        let timeout = self.settings.statement_timeout * 3;
        let instance = key.clone();
        let (idle, user) = (self.idle.clone(), self.settings.user.clone());
        tokio::spawn(async move {
            settle_after_kill(flavor, killed).await;
            for sql in after {
                match tokio::time::timeout(timeout, conn.query_drop(&sql)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => {
                        let error = redact_passwords(&e.to_string());
                        tracing::warn!(%instance, sql, %error, "promoted master: clean-up statement failed");
                        return;
                    }
                    Err(_) => {
                        let waited = timeout.as_millis();
                        tracing::warn!(%instance, sql, "promoted master: clean-up statement still running after {waited} ms");
                        return;
                    }
                }
            }
            idle.keep(&instance, &user, conn);
        });
        Ok(())
    }

    /// Opens (and keeps) the write check's connection to `key`, unless one is kept;
    /// a failure is left for the check itself to report.
    async fn open_write_check(&self, key: &InstanceKey) {
        let Some(check) = &self.settings.verify else { return };
        if let Some(conn) = self.kept(key, &check.user, IDLE_PING_AFTER).await {
            self.idle.keep(key, &check.user, conn);
            return;
        }
        let s = &self.settings;
        if let Ok(conn) =
            connect_with(&s.credentials, key, &check.user, |p| &p.write_check, s.connect_timeout).await
        {
            self.idle.keep(key, &check.user, conn);
        }
    }

    /// Points `key` at `source` with GTID auto-positioning and starts replication.
    /// Makes it read-only first (it may be a former master). Two batches of statements
    /// (three on MariaDB, which kills the IO thread between them): read-only, semi-sync's master
    /// side off, the replication status and the IO thread; then the repoint.
    pub async fn replicate_from(&self, key: &InstanceKey, source: &InstanceKey) -> Result<(), AdminError> {
        let mut conn = self.open(key).await?;
        let flavor = self.flavor(key, &mut conn).await?;
        let mut first = fence_statements(flavor);
        // A replica must not wait for acknowledgements of its own.
        if let Some(variable) = self.semi_sync_source_variable(key, &mut conn).await? {
            first.push(format!("SET GLOBAL {variable} = OFF"));
        }
        first.push(super::Dialect::replica_status_sql(flavor).to_string());
        let kill_first = kills_io_thread_first(flavor);
        if kill_first {
            first.push(IO_THREADS.to_string());
        }
        let mut sets = self.run_batch(key, &mut conn, &first).await?;
        let io_threads = if kill_first { sets.pop().unwrap_or_default() } else { Vec::new() };
        let from = match sets.pop().unwrap_or_default().first() {
            None => RepointFrom::FormerMaster,
            Some(status) => RepointFrom::Replica {
                auto_position: status
                    .get_opt::<Option<String>, _>("Auto_Position")
                    .and_then(Result::ok)
                    .flatten()
                    .is_some_and(|v| v.trim() == "1"),
            },
        };
        let threads = io_threads
            .into_iter()
            .filter_map(|row| Some((row.get::<u64, _>(0)?, row.get::<Option<String>, _>(1).flatten())))
            .collect();
        let killed = self.kill_threads(key, &mut conn, threads).await;
        settle_after_kill(flavor, killed).await;
        let s = &self.settings;
        let mut repoint = repoint_statements(
            flavor,
            source,
            &s.replication_user,
            &s.credentials.current().replication,
            from,
        );
        if !flavor.is_mariadb() {
            // A former master fenced through its semi-sync waits was taken offline;
            // replicating again, it serves reads.
            repoint.push("SET GLOBAL offline_mode = OFF".into());
        }
        self.run_batch(key, &mut conn, &repoint).await?;
        self.keep(key, conn);
        Ok(())
    }

    /// Proves `key` takes writes from the application's account (not ours, which can
    /// write through `read_only`). Without a configured account, checks `read_only`.
    pub async fn verify_write(&self, key: &InstanceKey) -> Result<(), AdminError> {
        let Some(check) = &self.settings.verify else {
            let mut conn = self.open(key).await?;
            let ro: Option<i64> =
                conn.query_first("SELECT @@read_only").await.map_err(|e| Self::error(key, "read_only", e))?;
            return if ro == Some(0) { Ok(()) } else { Err(Self::error(key, "verify", "read_only is on")) };
        };
        let mut conn = match self.kept(key, &check.user, IDLE_PING_AFTER).await {
            Some(conn) => conn,
            None => connect_with(
                &self.settings.credentials,
                key,
                &check.user,
                |p| &p.write_check,
                self.settings.connect_timeout,
            )
            .await
            .map_err(|e| Self::error(key, "connect as the write-check user", e))?,
        };
        let sql = format!(
            "REPLACE INTO {} (id, at) VALUES (@@server_id, NOW(6))",
            check.table.split('.').map(|p| format!("`{}`", p.replace('`', ""))).collect::<Vec<_>>().join(".")
        );
        self.run(key, &mut conn, &sql).await?;
        self.idle.keep(key, &check.user, conn);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repoint_per_flavor() {
        let src = InstanceKey::new("10.0.0.2", 3306);
        let m = repoint_statements(Flavor::MariaDb, &src, "repl", "p'w", RepointFrom::FormerMaster);
        assert_eq!(m[0], "STOP SLAVE");
        assert_eq!(m[1], "SET GLOBAL gtid_slave_pos = @@GLOBAL.gtid_binlog_pos");
        assert!(m[2].contains("MASTER_HOST='10.0.0.2'"), "{}", m[2]);
        assert!(m[2].contains("MASTER_PASSWORD='p\\'w'"), "{}", m[2]);
        assert!(m[2].contains("MASTER_USE_GTID=slave_pos"));
        assert_eq!(m[3], "START SLAVE");
        for auto_position in [false, true] {
            let m = repoint_statements(
                Flavor::MariaDb,
                &src,
                "repl",
                "pw",
                RepointFrom::Replica { auto_position },
            );
            assert_eq!(m.len(), 3, "a replica keeps its slave position");
            assert_eq!(m[0], "STOP SLAVE", "MariaDB changes its master with every thread stopped");
        }
        let y = repoint_statements(Flavor::Percona, &src, "repl", "pw", RepointFrom::FormerMaster);
        assert_eq!(y[0], "STOP REPLICA");
        assert!(y[1].starts_with("CHANGE REPLICATION SOURCE TO SOURCE_HOST='10.0.0.2', SOURCE_PORT=3306"));
        assert!(y[1].contains("SOURCE_AUTO_POSITION=1"));
        assert_eq!(y[2], "START REPLICA");
        let not_yet = repoint_statements(
            Flavor::MySql,
            &src,
            "repl",
            "pw",
            RepointFrom::Replica { auto_position: false },
        );
        assert_eq!(not_yet, y, "a replica without auto-positioning gets it, with every thread stopped");
        // An auto-positioned MySQL replica keeps applying: only the receiver stops, and
        // auto-positioning (which needs the applier stopped to change) is not named.
        let kept = repoint_statements(
            Flavor::MySql,
            &src,
            "repl",
            "pw",
            RepointFrom::Replica { auto_position: true },
        );
        assert_eq!(kept[0], "STOP REPLICA IO_THREAD");
        assert!(kept[1].starts_with("CHANGE REPLICATION SOURCE TO SOURCE_HOST='10.0.0.2', SOURCE_PORT=3306"));
        assert!(!kept[1].contains("AUTO_POSITION"), "{}", kept[1]);
        assert_eq!(kept[2], "START REPLICA");
    }

    #[test]
    fn promote_and_fence_per_flavor() {
        let (now, after) = promote_statements(Flavor::MariaDb, Some("rpl_semi_sync_master_enabled"));
        assert_eq!(now, vec!["SET GLOBAL rpl_semi_sync_master_enabled = ON", "SET GLOBAL read_only = OFF"]);
        assert_eq!(after, vec!["STOP SLAVE", "RESET SLAVE ALL"]);
        let (my, after) = promote_statements(Flavor::MySql, None);
        assert_eq!(
            my,
            vec![
                "STOP REPLICA IO_THREAD",
                "SET GLOBAL offline_mode = OFF",
                "SET GLOBAL super_read_only = OFF",
                "SET GLOBAL read_only = OFF"
            ]
        );
        let (percona, _) = promote_statements(Flavor::Percona, Some("rpl_semi_sync_source_enabled"));
        assert_eq!(percona[1], "SET GLOBAL rpl_semi_sync_source_enabled = ON");
        assert!(!my.iter().any(|s| s.contains("semi_sync")));
        assert_eq!(after, vec!["STOP REPLICA", "RESET REPLICA ALL"]);
        assert_eq!(fence_statements(Flavor::MySql), vec!["SET GLOBAL super_read_only = ON"]);
        assert_eq!(fence_statements(Flavor::MariaDb), vec!["SET GLOBAL read_only = ON"]);
        assert_eq!(fence_admission_statements(Flavor::MySql), vec!["SET GLOBAL offline_mode = ON"]);
        assert!(fence_admission_statements(Flavor::MariaDb).is_empty());
        assert_eq!(
            release_semi_sync_waits(Flavor::Percona, Some("rpl_semi_sync_master_enabled")),
            vec!["SET GLOBAL rpl_semi_sync_master_enabled = OFF"]
        );
        assert!(release_semi_sync_waits(Flavor::MariaDb, Some("rpl_semi_sync_master_enabled")).is_empty());
        assert!(release_semi_sync_waits(Flavor::MySql, None).is_empty());
        let survivors = surviving_sessions_sql("orch'x");
        assert!(survivors.contains("COMMAND <> 'Killed'"), "{survivors}");
        assert!(survivors.contains("'orch\\'x'"), "{survivors}");
    }

    #[test]
    fn semi_sync_variable_names_of_every_version() {
        // MySQL 8.0.26+ / 9.x with semisync_source.so (recorded on 9.7.4).
        let mysql_9 = ["rpl_semi_sync_replica_enabled", "rpl_semi_sync_source_enabled"];
        assert_eq!(semi_sync_source_variable(mysql_9), Some("rpl_semi_sync_source_enabled"));
        // Percona Server 8.0 before 8.0.26 / MariaDB: the master/slave names.
        let percona_80 = ["rpl_semi_sync_master_enabled", "rpl_semi_sync_slave_enabled"];
        assert_eq!(semi_sync_source_variable(percona_80), Some("rpl_semi_sync_master_enabled"));
        assert_eq!(
            semi_sync_source_variable(["Rpl_Semi_Sync_Master_Enabled"]),
            Some("rpl_semi_sync_master_enabled")
        );
        // No plugin loaded.
        assert_eq!(semi_sync_source_variable([]), None);
    }

    #[test]
    fn passwords_are_redacted_from_statements_and_errors() {
        let src = InstanceKey::new("10.0.0.2", 3306);
        for flavor in [Flavor::MariaDb, Flavor::MySql] {
            for sql in repoint_statements(flavor, &src, "repl", "s3cr'e\\t, x", RepointFrom::FormerMaster) {
                let shown = redact_passwords(&sql);
                assert!(!shown.contains("s3cr") && !shown.contains(", x'"), "{shown}");
                if sql.contains("PASSWORD") {
                    assert!(
                        shown.contains("PASSWORD='…'") && shown.contains("_AUTO_POSITION")
                            || shown.contains("MASTER_USE_GTID"),
                        "{shown}"
                    );
                }
            }
        }
        let error = "syntax error near 'MASTER_PASSWORD='hunter2', MASTER_USE_GTID=slave_pos' at line 1";
        assert_eq!(
            redact_passwords(error),
            "syntax error near 'MASTER_PASSWORD='…', MASTER_USE_GTID=slave_pos' at line 1"
        );
        assert_eq!(redact_passwords("identified by password=abc, next"), "identified by password=…, next");
        assert_eq!(redact_passwords("no secret here"), "no secret here");
    }

    #[test]
    fn only_an_io_thread_that_may_be_connected_waits_before_its_stop() {
        for (state, may) in [
            ("Waiting for master to send event", true),
            ("Connecting to master", true),
            ("Reconnecting after a failed master event read", true),
            ("Waiting to reconnect after a failed master event read", false),
            ("Waiting to reconnect after a failed registration on master", false),
            ("", true),
        ] {
            assert_eq!(may_hold_master_connection(state), may, "{state}");
        }
    }

    #[test]
    fn quoting() {
        assert_eq!(quote("a'b\\c"), "'a\\'b\\\\c'");
    }
}
