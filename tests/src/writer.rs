//! The application in failover tests: a writer that inserts sequential ids as the
//! application user into whichever server takes writes, and records exactly which
//! inserts were acknowledged. Afterwards every acknowledged id must be on the new master.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, OptsBuilder};

use crate::db::{APP_PASSWORD, APP_USER};

/// What the writer saw.
#[derive(Debug, Clone, Default)]
pub struct WriterReport {
    /// Ids whose INSERT returned OK.
    pub acknowledged: Vec<u64>,
    /// Ids whose INSERT failed or timed out (may or may not have happened).
    pub unknown: Vec<u64>,
    /// The longest time between two acknowledged writes.
    pub longest_gap: Duration,
    /// When that gap ended (since the writer started).
    pub longest_gap_end: Duration,
    /// Client-side waits of 100 ms or more (a connect, a query, an insert), as
    /// `what host: ms at ms-since-start`: whether a gap was the writer's or the server's.
    pub slow: Vec<String>,
}

/// A writer running in the background until stopped.
pub struct Writer {
    stop: Arc<AtomicBool>,
    report: Arc<Mutex<WriterReport>>,
    task: tokio::task::JoinHandle<()>,
}

async fn connect(host: &str) -> Option<Conn> {
    connect_within(host, Duration::from_millis(500)).await
}

/// A connection to `host` as the application, if one is made within `timeout`.
pub async fn connect_within(host: &str, timeout: Duration) -> Option<Conn> {
    let opts = OptsBuilder::default()
        .ip_or_hostname(host.to_string())
        .tcp_port(3306)
        .user(Some(APP_USER))
        .pass(Some(APP_PASSWORD))
        .prefer_socket(false)
        .stmt_cache_size(0);
    tokio::time::timeout(timeout, Conn::new(opts)).await.ok()?.ok()
}

/// The first of `hosts` that answers and is writable, connected as the application.
pub async fn find_master(hosts: &[String]) -> Option<Conn> {
    find_master_noting(hosts, &mut Vec::new(), Instant::now()).await
}

/// As [`find_master`], noting in `slow` every connect or query of 100 ms or more. The
/// hosts are tried at once, as a client looking for the writable server would: one
/// host slow to answer (a fenced MySQL master can hold a new connection's handshake
/// for hundreds of ms) does not hide another that takes writes.
async fn find_master_noting(hosts: &[String], slow: &mut Vec<String>, since: Instant) -> Option<Conn> {
    let tries = hosts.iter().map(|h| async move {
        let mut noted = Vec::new();
        let t = Instant::now();
        let conn = connect(h).await;
        note_slow(&mut noted, "connect", h, t, since);
        let Some(mut c) = conn else { return (None, noted) };
        let t = Instant::now();
        let ro: Option<Option<i64>> =
            tokio::time::timeout(Duration::from_millis(500), c.query_first("SELECT @@read_only"))
                .await
                .ok()
                .and_then(Result::ok);
        note_slow(&mut noted, "read_only", h, t, since);
        (if ro == Some(Some(0)) { Some(c) } else { None }, noted)
    });
    let mut pending: futures::stream::FuturesUnordered<_> = tries.collect();
    use futures::StreamExt;
    while let Some((found, noted)) = pending.next().await {
        slow.extend(noted);
        if found.is_some() {
            return found;
        }
    }
    None
}

fn note_slow(slow: &mut Vec<String>, what: &str, host: &str, started: Instant, since: Instant) {
    let took = started.elapsed();
    if took >= Duration::from_millis(100) {
        slow.push(format!(
            "{what} {host}: {} ms at {} ms",
            took.as_millis(),
            started.saturating_duration_since(since).as_millis()
        ));
    }
}

impl Writer {
    /// Starts inserting into `app.writes`, every `pause`, on whichever of `hosts` is
    /// writable; an insert gets `timeout` to be acknowledged.
    pub fn start(hosts: Vec<String>, pause: Duration, timeout: Duration) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let report = Arc::new(Mutex::new(WriterReport::default()));
        let (s, r) = (stop.clone(), report.clone());
        let task = tokio::spawn(async move {
            let started = Instant::now();
            let mut last_ack = started;
            let mut conn: Option<Conn> = None;
            // Ids unique across writers on one cluster: start from the clock.
            let mut id: u64 = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_micros() as u64)
                .unwrap_or(1_000_000);
            while !s.load(Ordering::Relaxed) {
                if conn.is_none() {
                    let mut slow = Vec::new();
                    conn = find_master_noting(&hosts, &mut slow, started).await;
                    r.lock().expect("report").slow.extend(slow);
                    if conn.is_none() {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    }
                }
                id += 1;
                let c = conn.as_mut().expect("connected");
                let sql = format!("INSERT INTO app.writes (id) VALUES ({id})");
                let t = Instant::now();
                let inserted = tokio::time::timeout(timeout, c.query_drop(sql)).await;
                note_slow(&mut r.lock().expect("report").slow, "insert", "", t, started);
                match inserted {
                    Ok(Ok(())) => {
                        let now = Instant::now();
                        let mut rep = r.lock().expect("report");
                        rep.acknowledged.push(id);
                        if now - last_ack > rep.longest_gap {
                            rep.longest_gap = now - last_ack;
                            rep.longest_gap_end = now - started;
                        }
                        last_ack = now;
                    }
                    _ => {
                        r.lock().expect("report").unknown.push(id);
                        conn = None;
                    }
                }
                tokio::time::sleep(pause).await;
            }
        });
        Writer { stop, report, task }
    }

    /// Acknowledged writes so far.
    pub fn acknowledged(&self) -> usize {
        self.report.lock().map(|r| r.acknowledged.len()).unwrap_or(0)
    }

    /// Stops and returns what happened.
    pub async fn stop(self) -> WriterReport {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.task.await;
        self.report.lock().map(|r| r.clone()).unwrap_or_default()
    }
}

/// Ids in `app.writes` on `host` (read as the application).
pub async fn ids_on(host: &str) -> anyhow::Result<std::collections::BTreeSet<u64>> {
    let mut c = connect(host).await.ok_or_else(|| anyhow::anyhow!("cannot connect to {host}"))?;
    let ids: Vec<u64> = c.query("SELECT id FROM app.writes").await?;
    Ok(ids.into_iter().collect())
}
