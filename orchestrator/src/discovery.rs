//! The discovery loop: probes every known instance each interval, follows masters and
//! replicas to find the rest of each cluster, and keeps the latest snapshot per cluster
//! in a [`TopologyStore`].
//!
//! Probes run concurrently and each is bounded in time, so one hung or unreachable
//! server shows up with its error and never delays the others.
//!
//! The Raft group's decisions reach the store as a [`Registry`] ([`TopologyStore::set_registry`],
//! kept current by [`follow_registry`]): each cluster's alias follows the master the
//! group recorded, seeds operators added are probed by every peer, and instances they
//! forgot are dropped and not followed again.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use futures::future::join_all;

use crate::metrics::Metrics;
use crate::mysql::{ProbeError, Prober};
use crate::topology::{
    build_clusters, ClusterInstance, ClusterSnapshot, FailureKind, InstanceKey, InstanceProbe, InstanceState,
    Registry, Role,
};
use crate::unix_millis_now;

/// How many discovery passes one round makes at most: each pass probes what the
/// previous one newly found, so a fresh seed yields its whole cluster in one round.
const MAX_PASSES_PER_ROUND: usize = 4;

/// Records one probe outcome into an instance's state; returns the instances the probe
/// named (its master and replicas).
pub fn apply_probe(
    state: &mut InstanceState,
    outcome: Result<InstanceProbe, ProbeError>,
    latency: Duration,
    now_unix_ms: i64,
) -> Vec<InstanceKey> {
    state.last_checked_unix_ms = now_unix_ms;
    state.probe_latency_ms = latency.as_secs_f64() * 1000.0;
    match outcome {
        Ok(probe) => {
            let mut named: Vec<InstanceKey> = probe.replicas.clone();
            if let Some(r) = &probe.replication {
                named.push(r.source.clone());
            }
            state.reachable = true;
            state.last_error = None;
            state.last_seen_unix_ms = Some(now_unix_ms);
            state.consecutive_failures = 0;
            state.failure = None;
            state.unreachable_since_unix_ms = None;
            state.last_probe = Some(probe);
            named
        }
        Err(e) => {
            let started = now_unix_ms - latency.as_millis() as i64;
            state.reachable = false;
            state.last_error = Some(e.to_string());
            // A process seen exiting on its host stays so until it answers again: its
            // open sockets time out meanwhile, which says less.
            let kind = e.kind();
            let exited = state.failure == Some(FailureKind::Exited) && kind != FailureKind::Refused;
            state.failure = Some(if exited { FailureKind::Exited } else { kind });
            state.consecutive_failures = state.consecutive_failures.saturating_add(1);
            state.unreachable_since_unix_ms.get_or_insert(started);
            Vec::new()
        }
    }
}

/// The latest view of every known instance and the clusters they form.
pub struct TopologyStore {
    inner: RwLock<StoreInner>,
    /// Bumped on every regrouping: the recovery loop wakes on it.
    version: tokio::sync::watch::Sender<u64>,
}

struct StoreInner {
    instances: BTreeMap<InstanceKey, InstanceState>,
    aliases: Vec<(String, Vec<InstanceKey>)>,
    registry: Registry,
    clusters: Vec<ClusterSnapshot>,
}

impl TopologyStore {
    /// A store that knows the configured seeds (alias → seed instances).
    pub fn new(aliases: Vec<(String, Vec<InstanceKey>)>) -> Self {
        let instances = aliases
            .iter()
            .flat_map(|(_, seeds)| seeds.iter())
            .map(|k| (k.clone(), InstanceState::new(k.clone())))
            .collect();
        Self {
            inner: RwLock::new(StoreInner {
                instances,
                aliases,
                registry: Registry::default(),
                clusters: Vec::new(),
            }),
            version: tokio::sync::watch::Sender::new(0),
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, StoreInner> {
        self.inner.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, StoreInner> {
        self.inner.write().unwrap_or_else(|e| e.into_inner())
    }

    pub fn known_keys(&self) -> Vec<InstanceKey> {
        self.read().instances.keys().cloned().collect()
    }

    /// Records a probe; returns instances it named that the store did not know yet
    /// (they are now known and will be probed).
    pub fn record(
        &self,
        key: &InstanceKey,
        outcome: Result<InstanceProbe, ProbeError>,
        latency: Duration,
        now_unix_ms: i64,
    ) -> Vec<InstanceKey> {
        let mut inner = self.write();
        if inner.registry.forgotten.contains(key) {
            return Vec::new();
        }
        let state = inner.instances.entry(key.clone()).or_insert_with(|| InstanceState::new(key.clone()));
        let named = apply_probe(state, outcome, latency, now_unix_ms);
        let mut new = Vec::new();
        for k in named {
            if !inner.instances.contains_key(&k) && !inner.registry.forgotten.contains(&k) {
                inner.instances.insert(k.clone(), InstanceState::new(k.clone()));
                new.push(k);
            }
        }
        new
    }

    /// Records that `key`'s process exited, as the peer on its host saw it (`pid`,
    /// `seen`: what it saw), and regroups. An instance the store does not know is not
    /// recorded (returns false).
    pub fn record_process_exit(&self, key: &InstanceKey, pid: u32, seen: &str, now_unix_ms: i64) -> bool {
        if self.instance(key).is_none() {
            return false;
        }
        let exited = Err(ProbeError::ProcessExited(format!("{pid} {seen}")));
        self.record(key, exited, Duration::ZERO, now_unix_ms);
        self.rebuild(now_unix_ms);
        true
    }

    /// Regroups instances into clusters.
    pub fn rebuild(&self, now_unix_ms: i64) {
        let mut inner = self.write();
        inner.clusters = build_clusters(&inner.instances, &inner.aliases, &inner.registry, now_unix_ms);
        drop(inner);
        self.version.send_modify(|v| *v += 1);
    }

    /// Takes the Raft group's decisions (see [`Registry`]) and regroups at once when
    /// they changed: forgotten instances are dropped, added seeds become known.
    pub fn set_registry(&self, registry: Registry) {
        let mut inner = self.write();
        if inner.registry == registry {
            return;
        }
        for key in &registry.forgotten {
            if inner.instances.remove(key).is_some() {
                tracing::info!(instance = %key, "instance forgotten: no longer tracked");
            }
        }
        // Seeds operators added, and every recorded master (a peer that just started
        // may not have found it yet), are probed from now on.
        let wanted = registry.seeds.iter().chain(registry.clusters.iter().map(|c| &c.master));
        for key in wanted.filter(|k| !registry.forgotten.contains(*k)) {
            if !inner.instances.contains_key(key) {
                inner.instances.insert(key.clone(), InstanceState::new(key.clone()));
            }
        }
        inner.registry = registry;
        drop(inner);
        self.rebuild(unix_millis_now());
    }

    /// Changes whenever the clusters are regrouped.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.version.subscribe()
    }

    /// Whether operators forgot `key` (it is not tracked).
    pub fn is_forgotten(&self, key: &InstanceKey) -> bool {
        self.read().registry.forgotten.contains(key)
    }

    pub fn clusters(&self) -> Vec<ClusterSnapshot> {
        self.read().clusters.clone()
    }

    /// A cluster by alias, by its master's key, or by the key of any member
    /// (orchestrator's "cluster hint").
    pub fn cluster(&self, hint: &str) -> Option<ClusterSnapshot> {
        let inner = self.read();
        let by_alias = inner.clusters.iter().find(|c| c.alias == hint);
        by_alias
            .or_else(|| {
                let key: InstanceKey = hint.parse().ok()?;
                inner.clusters.iter().find(|c| c.instance(&key).is_some())
            })
            .cloned()
    }

    /// One instance with its role, from the latest snapshot (or as just recorded, with
    /// role unknown, before the next regrouping).
    pub fn instance(&self, key: &InstanceKey) -> Option<ClusterInstance> {
        let inner = self.read();
        inner.clusters.iter().find_map(|c| c.instance(key).cloned()).or_else(|| {
            inner.instances.get(key).map(|s| ClusterInstance { role: Role::Unknown, state: s.clone() })
        })
    }

    pub fn cluster_count(&self) -> usize {
        self.read().clusters.len()
    }

    pub fn instance_count(&self) -> usize {
        self.read().instances.len()
    }
}

type ProbeFuture =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<InstanceProbe, ProbeError>> + Send>>;
type ProbeFn = Arc<dyn Fn(InstanceKey) -> ProbeFuture + Send + Sync>;

/// Probes on demand, outside the loop's rhythm (never waiting behind a round): the
/// API's discover, and the recovery's "look again now".
#[derive(Clone)]
pub struct DiscoveryHandle {
    probe: ProbeFn,
    store: Arc<TopologyStore>,
    metrics: Arc<Metrics>,
    /// Outer bound on one probe, in case a prober does not bound itself.
    deadline: Duration,
}

impl DiscoveryHandle {
    async fn probe_timed(&self, key: &InstanceKey) -> (Result<InstanceProbe, ProbeError>, Duration) {
        let started = Instant::now();
        let outcome = tokio::time::timeout(self.deadline, (self.probe)(key.clone()))
            .await
            .unwrap_or(Err(ProbeError::ReadTimeout(self.deadline)));
        let latency = started.elapsed();
        self.metrics.record_probe(key, outcome.is_ok(), latency);
        (outcome, latency)
    }

    /// Probes `key` now, records the result and regroups; returns what is known now.
    pub async fn observe(&self, key: &InstanceKey) -> ClusterInstance {
        let (outcome, latency) = self.probe_timed(key).await;
        self.store.record(key, outcome, latency, unix_millis_now());
        self.store.rebuild(unix_millis_now());
        self.store.instance(key).unwrap_or_else(|| ClusterInstance {
            role: Role::Unknown,
            state: InstanceState::new(key.clone()),
        })
    }

    /// Probes `key` now without recording it: whether it answers, and what it is.
    pub async fn probe_once(&self, key: &InstanceKey) -> Result<InstanceProbe, ProbeError> {
        self.probe_timed(key).await.0
    }

    /// Probes `key` now; on success it joins the known instances and its cluster is
    /// followed from then on (on this peer: [`crate::ops`] records a seed in Raft so
    /// every peer follows it).
    pub async fn discover(&self, key: InstanceKey) -> Result<ClusterInstance, ProbeError> {
        let (outcome, latency) = self.probe_timed(&key).await;
        let probe = outcome?;
        self.store.record(&key, Ok(probe), latency, unix_millis_now());
        self.store.rebuild(unix_millis_now());
        self.store.instance(&key).ok_or_else(|| ProbeError::Unexpected("instance vanished".into()))
    }

    pub fn store(&self) -> &Arc<TopologyStore> {
        &self.store
    }
}

/// The polling loop.
pub struct Discovery {
    handle: DiscoveryHandle,
    interval: Duration,
}

impl Discovery {
    pub fn new<P: Prober>(
        prober: P,
        store: Arc<TopologyStore>,
        metrics: Arc<Metrics>,
        interval: Duration,
        probe_deadline: Duration,
    ) -> (Self, DiscoveryHandle) {
        let prober = Arc::new(prober);
        let probe: ProbeFn = Arc::new(move |key: InstanceKey| {
            let prober = prober.clone();
            Box::pin(async move { prober.probe(&key).await })
        });
        let handle = DiscoveryHandle { probe, store, metrics, deadline: probe_deadline };
        (Self { handle: handle.clone(), interval }, handle)
    }

    /// Probes every known instance once (and whatever those probes newly name), then
    /// regroups clusters.
    pub async fn probe_round(&self) {
        let h = &self.handle;
        let mut pending: Vec<InstanceKey> = h.store.known_keys();
        let mut probed: BTreeSet<InstanceKey> = BTreeSet::new();
        for _ in 0..MAX_PASSES_PER_ROUND {
            if pending.is_empty() {
                break;
            }
            let results = join_all(pending.iter().map(|k| h.probe_timed(k))).await;
            let now = unix_millis_now();
            let mut found = Vec::new();
            for (key, (outcome, latency)) in pending.iter().zip(results) {
                if let Err(e) = &outcome {
                    tracing::debug!(instance = %key, error = %e, "probe failed");
                }
                for new in h.store.record(key, outcome, latency, now) {
                    tracing::info!(instance = %new, named_by = %key, "discovered instance");
                    found.push(new);
                }
                probed.insert(key.clone());
            }
            pending = found.into_iter().filter(|k| !probed.contains(k)).collect();
        }
        h.store.rebuild(unix_millis_now());
        h.metrics.set_topology_size(h.store.instance_count(), h.store.cluster_count());
    }

    /// Runs until `shutdown` resolves.
    pub async fn run(self, shutdown: impl std::future::Future<Output = ()>) {
        let mut ticks = tokio::time::interval(self.interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                _ = ticks.tick() => self.probe_round().await,
            }
        }
    }
}

/// Keeps `store` following the Raft group's decisions: on every change of `changes`
/// whose `version` (the applied log index) moved, hands `registry()` to the store.
pub async fn follow_registry<T: Send + Sync + 'static>(
    store: Arc<TopologyStore>,
    mut changes: tokio::sync::watch::Receiver<T>,
    version: impl Fn(&T) -> Option<u64>,
    registry: impl Fn() -> Registry,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let mut seen = None;
    loop {
        let now = version(&changes.borrow_and_update());
        if seen != Some(now) {
            seen = Some(now);
            store.set_registry(registry());
        }
        tokio::select! {
            _ = shutdown.changed() => break,
            changed = changes.changed() => if changed.is_err() { break },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topology::GtidSet;
    use std::collections::HashMap;
    use std::sync::Mutex;

    /// A scripted topology: key → probe answer. Unlisted keys refuse connections.
    struct ScriptedProber {
        answers: Arc<Mutex<HashMap<InstanceKey, Result<InstanceProbe, ProbeError>>>>,
        hang: BTreeSet<InstanceKey>,
    }

    impl Prober for ScriptedProber {
        async fn probe(&self, key: &InstanceKey) -> Result<InstanceProbe, ProbeError> {
            if self.hang.contains(key) {
                tokio::time::sleep(Duration::from_secs(3600)).await;
            }
            self.answers
                .lock()
                .unwrap()
                .get(key)
                .cloned()
                .unwrap_or_else(|| Err(ProbeError::Connect("Connection refused".into())))
        }
    }

    fn key(s: &str) -> InstanceKey {
        s.parse().unwrap()
    }

    fn probe(source: Option<&str>, replicas: &[&str]) -> InstanceProbe {
        let mut p = crate::topology::fixtures::probe(source);
        p.gtid_executed = GtidSet::parse("0-1-5").unwrap();
        p.replicas = replicas.iter().map(|r| key(r)).collect();
        p
    }

    fn discovery(prober: ScriptedProber, seeds: &[&str]) -> (Discovery, Arc<TopologyStore>) {
        let store =
            Arc::new(TopologyStore::new(vec![("main".into(), seeds.iter().map(|s| key(s)).collect())]));
        let (d, _handle) = Discovery::new(
            prober,
            store.clone(),
            Arc::new(Metrics::new()),
            Duration::from_secs(1),
            Duration::from_millis(200),
        );
        (d, store)
    }

    fn three_node_answers() -> HashMap<InstanceKey, Result<InstanceProbe, ProbeError>> {
        HashMap::from([
            (key("m:1"), Ok(probe(None, &["r1:1", "r2:1"]))),
            (key("r1:1"), Ok(probe(Some("m:1"), &[]))),
            (key("r2:1"), Ok(probe(Some("m:1"), &[]))),
        ])
    }

    #[tokio::test]
    async fn one_round_from_a_replica_seed_finds_the_whole_cluster() {
        let prober =
            ScriptedProber { answers: Arc::new(Mutex::new(three_node_answers())), hang: BTreeSet::new() };
        let (d, store) = discovery(prober, &["r2:1"]);
        d.probe_round().await;
        let c = store.cluster("main").expect("cluster main");
        assert_eq!(c.master, key("m:1"));
        assert_eq!(c.instances.len(), 3);
        assert!(c.instances.iter().all(|i| i.state.reachable));
        assert_eq!(store.cluster("r1:1").unwrap().alias, "main");
    }

    #[tokio::test]
    async fn a_hung_instance_times_out_without_stalling_the_round() {
        let prober = ScriptedProber {
            answers: Arc::new(Mutex::new(three_node_answers())),
            hang: BTreeSet::from([key("r1:1")]),
        };
        let (d, store) = discovery(prober, &["m:1"]);
        let started = Instant::now();
        d.probe_round().await;
        assert!(started.elapsed() < Duration::from_secs(2), "round took {:?}", started.elapsed());
        let hung = store.instance(&key("r1:1")).unwrap();
        assert!(!hung.state.reachable);
        assert!(hung.state.last_error.unwrap().contains("no answer within"));
        assert!(store.instance(&key("r2:1")).unwrap().state.reachable);
    }

    #[tokio::test]
    async fn an_instance_that_stops_answering_keeps_its_place_and_shows_its_error() {
        let answers = Arc::new(Mutex::new(three_node_answers()));
        let prober = ScriptedProber { answers: answers.clone(), hang: BTreeSet::new() };
        let (d, store) = discovery(prober, &["m:1"]);
        d.probe_round().await;
        answers.lock().unwrap().remove(&key("r2:1"));
        d.probe_round().await;
        d.probe_round().await;
        let r2 = store.instance(&key("r2:1")).unwrap();
        assert_eq!(r2.role, Role::Replica, "keeps its place from the last good probe");
        assert!(!r2.state.reachable);
        assert_eq!(r2.state.consecutive_failures, 2);
        assert_eq!(r2.state.last_error.as_deref(), Some("cannot connect: Connection refused"));
    }

    #[test]
    fn apply_probe_tracks_failures_and_recovery() {
        let mut st = InstanceState::new(key("a:1"));
        apply_probe(&mut st, Err(ProbeError::ConnectTimeout(Duration::from_millis(5))), Duration::ZERO, 10);
        assert!(!st.reachable);
        assert_eq!(st.consecutive_failures, 1);
        assert_eq!(st.last_seen_unix_ms, None);
        assert_eq!(st.failure, Some(crate::topology::FailureKind::Timeout));
        assert_eq!(st.unreachable_since_unix_ms, Some(10));
        apply_probe(
            &mut st,
            Err(ProbeError::ConnectTimeout(Duration::from_millis(5))),
            Duration::from_millis(4),
            30,
        );
        assert_eq!(st.unreachable_since_unix_ms, Some(10), "the streak keeps its start");
        let named = apply_probe(&mut st, Ok(probe(Some("m:1"), &["x:1"])), Duration::from_millis(3), 20);
        assert_eq!(named, vec![key("x:1"), key("m:1")]);
        assert!(st.reachable);
        assert_eq!(st.consecutive_failures, 0);
        assert_eq!(st.unreachable_since_unix_ms, None);
        assert_eq!(st.failure, None);
        assert_eq!(st.last_seen_unix_ms, Some(20));
        assert_eq!(st.probe_latency_ms, 3.0);
    }

    #[test]
    fn a_process_seen_exiting_stays_so_until_it_answers_or_refuses() {
        let mut st = InstanceState::new(key("a:1"));
        let exited = || Err(ProbeError::ProcessExited("4242 is exiting".into()));
        apply_probe(&mut st, exited(), Duration::ZERO, 10);
        assert_eq!(st.failure, Some(FailureKind::Exited));
        // Its open sockets time out meanwhile: that says less.
        apply_probe(&mut st, Err(ProbeError::ReadTimeout(Duration::from_millis(200))), Duration::ZERO, 20);
        assert_eq!(st.failure, Some(FailureKind::Exited));
        assert_eq!(st.unreachable_since_unix_ms, Some(10));
        // Its port refuses once the kernel has freed it.
        apply_probe(&mut st, Err(ProbeError::Connect("Connection refused".into())), Duration::ZERO, 90);
        assert_eq!(st.failure, Some(FailureKind::Refused));
        // Restarted: an answer clears it.
        apply_probe(&mut st, exited(), Duration::ZERO, 100);
        apply_probe(&mut st, Ok(probe(None, &[])), Duration::ZERO, 200);
        assert_eq!(st.failure, None);
        apply_probe(&mut st, Err(ProbeError::ReadTimeout(Duration::from_millis(200))), Duration::ZERO, 300);
        assert_eq!(st.failure, Some(FailureKind::Timeout));
    }
}
