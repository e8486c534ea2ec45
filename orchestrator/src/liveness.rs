//! Liveness of the masters, on every peer: one connection to each master the Raft
//! state names, pinged every [`PING_EVERY`], one ping at a time. A ping (or a
//! connect) left unanswered for [`SILENCE_MARK`] is recorded in the topology store
//! as a failure by timeout that began when that ping was sent, and again every
//! [`SILENCE_MARK`] while the silence lasts: the hang window then counts from a
//! moment known to within one ping interval, and every peer's view of the master is
//! current without a probe of its own (which against a hung server lasts its whole
//! read timeout). An answer after a silence, and any ping while the store holds the
//! master failing by timeout, has the master probed again: only a full probe says it
//! is back. A refused or broken connection has it probed at once (a killed server).
//!
//! [`Silence`] is the pure part; [`LivenessWatch`] the tasks.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mysql_async::prelude::Queryable;

use crate::discovery::DiscoveryHandle;
use crate::mysql::{connect_with, ProbeError, ProbeSettings};
use crate::raft::RaftNode;
use crate::topology::{FailureKind, InstanceKey};
use crate::unix_millis_now;

/// How often a master is pinged (when its last ping was answered).
pub const PING_EVERY: Duration = Duration::from_millis(50);
/// A ping unanswered this long is recorded as a failure by timeout.
pub const SILENCE_MARK: Duration = Duration::from_millis(200);
/// The longest a connect attempt may last before it is given up and made again.
const CONNECT_LIMIT: Duration = Duration::from_secs(5);
/// How often the set of masters to watch is read from the Raft state.
const FOLLOW_EVERY: Duration = Duration::from_millis(250);

/// The silence of one master: since when a ping has been waiting for its answer.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Silence {
    /// When the unanswered ping (or connect) was sent, unix ms.
    waiting_since: Option<i64>,
    /// Whether this silence was recorded in the store, and when last.
    recorded: bool,
    last_recorded: i64,
}

/// What to do after a check of the silence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Nothing (no ping waits, or not for long).
    Quiet,
    /// Record a failure by timeout that began at this moment (unix ms).
    Record { since_unix_ms: i64 },
}

impl Silence {
    /// A ping (or a connect) was sent at `at`: a silence, if any, goes on counting from
    /// the first unanswered one.
    pub fn sent(&mut self, at_unix_ms: i64) {
        self.waiting_since.get_or_insert(at_unix_ms);
    }

    /// The server answered (or refused: an answer too). Returns whether the silence
    /// that ends was recorded (so the master must be probed again).
    pub fn answered(&mut self) -> bool {
        self.waiting_since = None;
        std::mem::take(&mut self.recorded)
    }

    /// At `now`: a ping waiting `mark` or longer is recorded, and again every half
    /// `mark` while it waits (keeping the store's view of the master current).
    pub fn check(&mut self, now_unix_ms: i64, mark: Duration) -> Verdict {
        let mark = mark.as_millis() as i64;
        match self.waiting_since {
            Some(since)
                if now_unix_ms - since >= mark
                    && (!self.recorded || now_unix_ms - self.last_recorded >= mark / 2) =>
            {
                self.recorded = true;
                self.last_recorded = now_unix_ms;
                Verdict::Record { since_unix_ms: since }
            }
            _ => Verdict::Quiet,
        }
    }
}

/// The pingers of this peer, one per master the Raft state names.
pub struct LivenessWatch {
    raft: Arc<RaftNode>,
    discovery: DiscoveryHandle,
    settings: ProbeSettings,
    pingers: Mutex<BTreeMap<InstanceKey, tokio::task::JoinHandle<()>>>,
}

impl LivenessWatch {
    pub fn new(raft: Arc<RaftNode>, discovery: DiscoveryHandle, settings: ProbeSettings) -> Self {
        Self { raft, discovery, settings, pingers: Mutex::new(BTreeMap::new()) }
    }

    /// Runs until shutdown: follows the masters of the Raft state.
    pub async fn run(self: Arc<Self>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        loop {
            let (_, state) = self.raft.state();
            let masters: Vec<InstanceKey> =
                state.clusters.values().filter_map(|c| c.master.clone()).collect();
            if let Ok(mut pingers) = self.pingers.lock() {
                pingers.retain(|k, task| {
                    let keep = masters.contains(k) && !task.is_finished();
                    if !keep {
                        task.abort();
                    }
                    keep
                });
                for master in masters {
                    if !pingers.contains_key(&master) {
                        let me = self.clone();
                        let key = master.clone();
                        pingers.insert(master, tokio::spawn(async move { me.ping_forever(key).await }));
                    }
                }
            }
            tokio::select! {
                _ = shutdown.changed() => break,
                _ = tokio::time::sleep(FOLLOW_EVERY) => {}
            }
        }
        if let Ok(mut pingers) = self.pingers.lock() {
            for (_, task) in std::mem::take(&mut *pingers) {
                task.abort();
            }
        }
    }

    /// Records a silence of `master` that began at `since` as a failure by timeout.
    fn record_silence(&self, master: &InstanceKey, since_unix_ms: i64) {
        let now = unix_millis_now();
        let silent_for = Duration::from_millis((now - since_unix_ms).max(0) as u64);
        let store = self.discovery.store();
        store.record(master, Err(ProbeError::ReadTimeout(silent_for)), silent_for, now);
        store.rebuild(now);
    }

    /// Whether the store holds `master` failing by timeout (a ping answering then means
    /// a full probe must look again).
    fn store_says_timing_out(&self, master: &InstanceKey) -> bool {
        self.discovery
            .store()
            .instance(master)
            .is_some_and(|i| !i.state.reachable && i.state.failure == Some(FailureKind::Timeout))
    }

    async fn ping_forever(&self, master: InstanceKey) {
        let mut silence = Silence::default();
        let mut conn: Option<mysql_async::Conn> = None;
        let mut tick = tokio::time::interval(PING_EVERY / 2);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            silence.sent(unix_millis_now());
            // One ping (or connect), with the silence checked while it waits.
            let result = {
                let attempt = ping_or_connect(&self.settings, &master, conn.take());
                tokio::pin!(attempt);
                loop {
                    tokio::select! {
                        r = &mut attempt => break r,
                        _ = tick.tick() => {
                            if let Verdict::Record { since_unix_ms } = silence.check(unix_millis_now(), SILENCE_MARK) {
                                self.record_silence(&master, since_unix_ms);
                            }
                        }
                    }
                }
            };
            let was_recorded = silence.answered();
            match result {
                Ok(c) => {
                    conn = Some(c);
                    if was_recorded || self.store_says_timing_out(&master) {
                        self.discovery.observe(&master).await;
                    }
                    tokio::time::sleep(PING_EVERY).await;
                }
                Err(error) => {
                    // Refused, reset, or a connect that timed out: a full probe says
                    // which, now (a killed server is seen at once).
                    tracing::debug!(%master, %error, "liveness ping failed");
                    self.discovery.observe(&master).await;
                    tokio::time::sleep(PING_EVERY * 2).await;
                }
            }
        }
    }
}

/// Pings on `conn`, or opens a connection when there is none; the connection back
/// when the server answered.
async fn ping_or_connect(
    settings: &ProbeSettings,
    master: &InstanceKey,
    conn: Option<mysql_async::Conn>,
) -> Result<mysql_async::Conn, String> {
    match conn {
        Some(mut c) => c.ping().await.map(|_| c).map_err(|e| e.to_string()),
        None => {
            connect_with(&settings.credentials, master, &settings.user, |p| &p.orchestrator, CONNECT_LIMIT)
                .await
                .map_err(|e| e.to_string())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MARK: Duration = Duration::from_millis(200);

    #[test]
    fn a_silence_counts_from_the_first_unanswered_ping() {
        let mut s = Silence::default();
        s.sent(1_000);
        assert_eq!(s.check(1_199, MARK), Verdict::Quiet);
        assert_eq!(s.check(1_200, MARK), Verdict::Record { since_unix_ms: 1_000 });
        // Recorded again every half mark while the silence lasts.
        assert_eq!(s.check(1_250, MARK), Verdict::Quiet);
        assert_eq!(s.check(1_300, MARK), Verdict::Record { since_unix_ms: 1_000 });
        // A connect after a failed ping does not move the start.
        s.sent(1_300);
        assert_eq!(s.check(1_900, MARK), Verdict::Record { since_unix_ms: 1_000 });
        assert!(s.answered(), "the silence was recorded: the master is probed again");
        assert_eq!(s.check(5_000, MARK), Verdict::Quiet);
    }

    #[test]
    fn answered_pings_record_nothing() {
        let mut s = Silence::default();
        for at in (0..2_000).step_by(50) {
            s.sent(at);
            assert_eq!(s.check(at + 3, MARK), Verdict::Quiet);
            assert!(!s.answered());
        }
    }

    #[test]
    fn a_stall_shorter_than_the_mark_leaves_no_trace() {
        let mut s = Silence::default();
        s.sent(0);
        assert_eq!(s.check(150, MARK), Verdict::Quiet);
        assert!(!s.answered());
    }
}
