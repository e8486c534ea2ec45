//! The leader's recovery loop: registers discovered clusters in Raft, analyzes each
//! one, and acts: failover of a dead master (with a majority of peers agreeing),
//! fencing of instances that must not be writable, and rejoining a returned old master.
//!
//! Speed: it wakes on every change of the topology, and while a master looks down it
//! looks again at once (the master, its replicas, and every peer through `PeerView`)
//! instead of waiting for the next poll. A sentinel TCP connection to each master
//! notices a killed `mysqld` the moment its socket closes. A hung master is seen by
//! every peer's pinger ([`crate::liveness`]); the loop then wakes the moment the hang
//! window is reached, and neither probes the master again nor has the peers probe it
//! (against a hung server a probe lasts its whole read timeout).

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use orch_proto::raft::raft_client::RaftClient;
use orch_proto::raft::PeerViewRequest;
use tokio::io::AsyncReadExt;
use tonic::transport::Channel;

use super::executor::{
    choose, failover_input, plan_checked, replica_facts, run_recovery, HookFacts, Outcome, RecoveryRequest,
    Timings,
};
use super::plan::{assess, FailoverPlan};
use super::shell::{MysqlControl, ShellHooks};
use crate::analysis::{
    analyze, hung_from, AnalysisCode, AnalysisInput, AnalysisSettings, PeerObservation, Problem,
};
use crate::config::Config;
use crate::discovery::DiscoveryHandle;
use crate::mysql::admin::MysqlAdmin;
use crate::raft::{NodeId, RaftNode};
use crate::state::{ClusterState, Command, RecoveryKind, RecoveryRecord};
use crate::topology::{ClusterSnapshot, FailureKind, InstanceKey, InstanceState};
use crate::unix_millis_now;

/// How long a peer gets to send its stored view of an instance.
const STORED_VIEW_WAIT: Duration = Duration::from_millis(150);

/// The recovery loop's wake-up when nothing changes.
const IDLE_WAKE: Duration = Duration::from_millis(250);

/// What the loop last concluded, for the API.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct Findings {
    pub problems: BTreeMap<String, Vec<Problem>>,
    pub checked_unix_ms: i64,
}

/// An operator's request (API): switchover or forced failover.
#[derive(Debug, Clone)]
pub struct ManualRecovery {
    /// The alias, or any member's `host:port`.
    pub cluster: String,
    pub target: Option<InstanceKey>,
    pub kind: RecoveryKind,
    /// Refused unless Raft's master is this one (a stale command).
    pub expected_master: Option<InstanceKey>,
    /// The operator's token name.
    pub requested_by: Option<String>,
}

/// Why an operator's recovery was not started.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ManualError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Refused(String),
}

/// A dry run: the planner's answer from fresh probes, without acting.
#[derive(Debug, Clone)]
pub struct DryRun {
    pub master: InstanceKey,
    pub plan: Result<FailoverPlan, String>,
    /// Why each replica could not be the candidate (meaningful when `plan` failed).
    pub assessed: Vec<(InstanceKey, String)>,
}

pub struct RecoveryService {
    node: Arc<RaftNode>,
    discovery: DiscoveryHandle,
    admin: Arc<MysqlAdmin>,
    config: Arc<Config>,
    hooks: ShellHooks,
    findings: Mutex<Findings>,
    /// One recovery at a time on this peer.
    busy: tokio::sync::Mutex<()>,
    sentinels: Mutex<BTreeMap<InstanceKey, tokio::task::JoinHandle<()>>>,
    /// Problems already reported by hook/log, so each is announced once.
    announced: Mutex<BTreeSet<(String, AnalysisCode, InstanceKey)>>,
    /// Former masters (by recovery) already seen replicating from the current master or
    /// rejoined: never touched again for that recovery, so a new server at the same
    /// address (a node bootstrapping where the old one stood) is left to its bootstrap.
    settled_former_masters: Mutex<BTreeSet<(u64, InstanceKey)>>,
    /// When the recovery commands' connections to the masters' replicas were last
    /// looked after (see [`RecoveryService::keep_replicas_warm`]).
    warmed: Mutex<Option<std::time::Instant>>,
}

/// How often the leader looks after its connections to the masters' replicas.
const WARM_EVERY: Duration = Duration::from_secs(2);

impl RecoveryService {
    pub fn new(
        node: Arc<RaftNode>,
        discovery: DiscoveryHandle,
        admin: Arc<MysqlAdmin>,
        config: Arc<Config>,
    ) -> Self {
        let hooks = ShellHooks { config: config.recovery.hooks.clone() };
        Self {
            node,
            discovery,
            admin,
            config,
            hooks,
            findings: Mutex::new(Findings::default()),
            busy: tokio::sync::Mutex::new(()),
            sentinels: Mutex::new(BTreeMap::new()),
            announced: Mutex::new(BTreeSet::new()),
            settled_former_masters: Mutex::new(BTreeSet::new()),
            warmed: Mutex::new(None),
        }
    }

    pub fn findings(&self) -> Findings {
        self.findings.lock().map(|f| f.clone()).unwrap_or_default()
    }

    fn settings(&self) -> AnalysisSettings {
        AnalysisSettings {
            hang_window_ms: self.config.recovery.hang_window_ms as i64,
            lag_threshold_s: self.config.recovery.lag_threshold_s,
            ..Default::default()
        }
    }

    fn timings(&self) -> Timings {
        Timings {
            apply_wait: Duration::from_millis(self.config.recovery.apply_wait_ms),
            ..Default::default()
        }
    }

    /// Runs until shutdown: wakes on topology changes, at least every 250 ms, and the
    /// moment a master failing by timeouts reaches the hang window.
    pub async fn run(self: Arc<Self>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        let mut changes = self.discovery.store().subscribe();
        loop {
            let wait = self.until_hang_window(unix_millis_now()).unwrap_or(IDLE_WAKE).min(IDLE_WAKE);
            tokio::select! {
                _ = shutdown.changed() => break,
                _ = changes.changed() => {}
                _ = tokio::time::sleep(wait) => {}
            }
            if !self.node.is_leader() || !self.node.has_quorum_contact() {
                self.stop_sentinels();
                continue;
            }
            self.tick().await;
        }
        self.stop_sentinels();
    }

    /// How long until the first master failing by timeouts has done so for the hang
    /// window (`None`: no master is timing out, or every one already reached it).
    fn until_hang_window(&self, now_unix_ms: i64) -> Option<Duration> {
        let window = self.config.recovery.hang_window_ms as i64;
        self.discovery
            .store()
            .clusters()
            .iter()
            .filter_map(|c| c.instance(&c.master))
            .filter_map(|m| hung_from(&m.state, window))
            .map(|hung_at| hung_at - now_unix_ms)
            .filter(|left| *left >= 0)
            .min()
            .map(|left| Duration::from_millis(left as u64 + 1))
    }

    async fn tick(self: &Arc<Self>) {
        // Nothing while a recovery runs on this peer (an operator's, say): its intent
        // is open in Raft and must not be "resumed" alongside it.
        let Ok(_running) = self.busy.try_lock() else { return };
        let (_, state) = self.node.state();
        // An unfinished recovery (its leader died) is finished first.
        if let Some(open) = state.recoveries.iter().find(|r| r.is_open()).cloned() {
            self.resume(&open, &state).await;
            return;
        }
        self.register_clusters(&state).await;
        let (_, state) = self.node.state();
        let mut findings = Findings { checked_unix_ms: unix_millis_now(), ..Default::default() };
        let masters: BTreeSet<InstanceKey> =
            state.clusters.values().filter_map(|c| c.master.clone()).collect();
        self.keep_sentinels(&masters);
        self.keep_replicas_warm(&state);
        for (alias, record) in &state.clusters {
            let Some(master) = &record.master else { continue };
            self.ensure_sentinel(master);
            let Some(snapshot) = self.discovery.store().cluster(alias) else { continue };
            let problems = self.analyze_cluster(alias, &snapshot, master, &state).await;
            findings.problems.insert(alias.clone(), problems.clone());
            self.act(alias, master, &problems, &state).await;
        }
        self.handle_former_masters(&state).await;
        if let Ok(mut f) = self.findings.lock() {
            *f = findings;
        }
    }

    /// Keeps a recovery command connection (and the server's flavor) ready to every
    /// replica of a registered master, every [`WARM_EVERY`]: a master seen exiting on
    /// its host is failed over 3-10 ms after the signal, too soon for the connections
    /// opened when it looks down: in a 7-node MySQL group under load the freeze's new
    /// connections took 15-27 ms each. A kept connection costs a ping every 2.5-4.5 s.
    fn keep_replicas_warm(&self, state: &ClusterState) {
        let due = self.warmed.lock().is_ok_and(|mut w| match *w {
            Some(at) if at.elapsed() < WARM_EVERY => false,
            _ => {
                *w = Some(std::time::Instant::now());
                true
            }
        });
        if !due {
            return;
        }
        let replicas: Vec<InstanceKey> = state
            .clusters
            .keys()
            .filter_map(|alias| self.discovery.store().cluster(alias))
            .flat_map(|c| c.replica_keys())
            .collect();
        let admin = self.admin.clone();
        tokio::spawn(async move { admin.keep_warm(&replicas).await });
    }

    /// Clusters discovered with a writable master and at least one replica become
    /// registered in Raft, with that master. Former masters are never registered.
    async fn register_clusters(&self, state: &ClusterState) {
        let former: BTreeSet<&InstanceKey> =
            state.recoveries.iter().filter_map(|r| r.failed_master.as_ref()).collect();
        let known_masters: BTreeSet<&InstanceKey> =
            state.clusters.values().filter_map(|c| c.master.as_ref()).collect();
        for c in self.discovery.store().clusters() {
            if state.clusters.get(&c.alias).is_some_and(|r| r.master.is_some())
                || former.contains(&c.master)
                || known_masters.contains(&c.master)
            {
                continue;
            }
            let Some(m) = c.instance(&c.master) else { continue };
            let writable = m.state.reachable && m.state.last_probe.as_ref().is_some_and(|p| !p.read_only);
            let configured = self.config.clusters.iter().any(|cc| cc.alias == c.alias);
            if !writable || (c.instances.len() < 2 && !configured) {
                continue;
            }
            let command = Command::RegisterCluster {
                alias: c.alias.clone(),
                seeds: vec![c.master.clone()],
                master: Some(c.master.clone()),
            };
            match self.node.write(command).await {
                Ok(_) => tracing::info!(cluster = %c.alias, master = %c.master, "cluster registered"),
                Err(e) => tracing::warn!(cluster = %c.alias, error = %e, "cannot register cluster"),
            }
        }
    }

    async fn analyze_cluster(
        &self,
        alias: &str,
        snapshot: &ClusterSnapshot,
        raft_master: &InstanceKey,
        state: &ClusterState,
    ) -> Vec<Problem> {
        let downtimed = state.downtimed_at(unix_millis_now());
        let voters = self.node.status().members.iter().filter(|m| m.voter).count();
        let settings = self.settings();
        let master_state = snapshot.instance(&snapshot.master).map(|m| &m.state);
        let master_down = master_state.is_some_and(|m| !m.reachable);
        // A master failing by timeouts is watched by every peer's pinger (see
        // `liveness`): probing it again here would last the whole read timeout, and
        // the peers' views are current without a probe of their own.
        // Nor a master whose process was seen exiting on its host: it keeps its sockets
        // open, answering nothing, until the kernel has freed its memory.
        let answers_nothing = master_state
            .is_some_and(|m| matches!(m.failure, Some(FailureKind::Timeout | FailureKind::Exited)));
        // A master whose process exited is dead whatever the others see: the look
        // again (30-40 ms with six replicas and six peers under load) decides nothing.
        let exited = master_down && master_state.is_some_and(|m| m.failure == Some(FailureKind::Exited));
        if master_down {
            // What a recovery would ask each replica first, read now, beside the look.
            let admin = self.admin.clone();
            let learn = snapshot.replica_keys();
            tokio::spawn(async move { admin.learn(&learn).await });
        }
        let (snapshot, observations) = if master_down && !exited {
            // Look again now: the master, its replicas, and every other peer's eyes.
            let master = snapshot.master.clone();
            let replicas = snapshot.replica_keys();
            let (_, _, observations) = tokio::join!(
                async {
                    if !answers_nothing {
                        self.discovery.observe(&master).await;
                    }
                },
                futures::future::join_all(replicas.iter().map(|r| self.discovery.observe(r))),
                self.ask_peers(&master, !answers_nothing)
            );
            match self.discovery.store().cluster(alias) {
                Some(fresh) => (fresh, observations),
                None => (snapshot.clone(), observations),
            }
        } else {
            (snapshot.clone(), Vec::new())
        };
        analyze(&AnalysisInput {
            snapshot: &snapshot,
            raft_master: Some(raft_master),
            observations: &observations,
            voters,
            downtimed: &downtimed,
            settings: &settings,
            now_unix_ms: unix_millis_now(),
        })
    }

    /// Every other voter's view of `instance`: a fresh probe when `probe_now`, else
    /// what it holds (kept current by its pinger when `instance` is a master).
    async fn ask_peers(&self, instance: &InstanceKey, probe_now: bool) -> Vec<PeerObservation> {
        let members: Vec<(NodeId, String)> = self
            .node
            .status()
            .members
            .into_iter()
            .filter(|m| m.voter && m.id != self.node.id)
            .map(|m| (m.id, m.raft))
            .collect();
        // The shared control channels, kept connected by the pings: no handshake now.
        let calls: Vec<(NodeId, RaftClient<Channel>)> =
            members.into_iter().filter_map(|(id, _)| self.node.peer_client(id).map(|c| (id, c))).collect();
        let d = &self.config.discovery;
        // A fresh probe lasts up to its connect and read timeouts; a stored view answers
        // at once, and a peer that does not (cut off, say) must not hold up the others'.
        let timeout = if probe_now {
            d.connect_timeout() + d.read_timeout() + Duration::from_millis(300)
        } else {
            STORED_VIEW_WAIT
        };
        let asks = calls.into_iter().map(|(id, mut client)| {
            let instance = instance.to_string();
            async move {
                let mut req = tonic::Request::new(PeerViewRequest { instance, probe_now });
                req.set_timeout(timeout);
                let reply = client.peer_view(req).await.ok()?.into_inner();
                let states: Vec<InstanceState> = serde_json::from_slice(&reply.instances_json).ok()?;
                let s = states.into_iter().next()?;
                Some(PeerObservation {
                    peer: id,
                    instance: s.key,
                    reachable: s.reachable,
                    failure: s.failure,
                    checked_unix_ms: s.last_checked_unix_ms,
                })
            }
        });
        futures::future::join_all(asks).await.into_iter().flatten().collect()
    }

    /// Whether automatic recovery of `alias` is allowed now; why not otherwise.
    fn recovery_blocked(&self, alias: &str, master: &InstanceKey, state: &ClusterState) -> Option<String> {
        if !self.config.recovery.automatic {
            return Some("automatic recovery is off in the config".into());
        }
        if !state.recoveries_enabled {
            return Some("recoveries are disabled (API)".into());
        }
        let now = unix_millis_now();
        if state.is_downtimed(master, now) {
            return Some(format!("master {master} is downtimed"));
        }
        let anti_flap_ms = self.config.recovery.anti_flap_s as i64 * 1000;
        let recent = state.recoveries.iter().rev().find(|r| {
            r.kind != RecoveryKind::Switchover
                && r.cluster == alias
                && r.acknowledged_by.is_none()
                && r.ended_unix_ms.is_some_and(|end| now - end < anti_flap_ms)
        });
        recent.map(|r| {
            format!("recovery {} ended less than {} s ago and is not acknowledged", r.id, anti_flap_ms / 1000)
        })
    }

    async fn act(
        self: &Arc<Self>,
        alias: &str,
        master: &InstanceKey,
        problems: &[Problem],
        state: &ClusterState,
    ) {
        let mut newly_dead = false;
        for p in problems {
            let fresh = self
                .announced
                .lock()
                .map(|mut a| a.insert((alias.to_string(), p.code, p.instance.clone())))
                .unwrap_or(false);
            if fresh {
                tracing::warn!(cluster = alias, code = %p.code, instance = %p.instance, reason = %p.reason, "problem");
                newly_dead |= p.needs_failover && &p.instance == master;
            }
            match p.code {
                AnalysisCode::MultipleWriteableMasters | AnalysisCode::ReplicaIsWritable
                    if &p.instance != master =>
                {
                    match self.admin.fence(&p.instance).await {
                        Ok(()) => {
                            tracing::warn!(instance = %p.instance, "fenced: writable but not the master");
                            // Seen read-only now, so the next look does not fence it again.
                            self.discovery.observe(&p.instance).await;
                        }
                        Err(e) => tracing::error!(instance = %p.instance, error = %e, "cannot fence"),
                    }
                }
                _ => {}
            }
        }
        if let Ok(mut a) = self.announced.lock() {
            a.retain(|(c, code, k)| {
                c != alias || problems.iter().any(|p| p.code == *code && &p.instance == k)
            });
        }
        let Some(dead) = problems.iter().find(|p| p.needs_failover && &p.instance == master) else { return };
        if newly_dead {
            let facts = HookFacts {
                cluster: alias.to_string(),
                failed_master: master.to_string(),
                reason: dead.reason.clone(),
                ..Default::default()
            };
            self.hooks.on_detection(&facts).await;
        }
        if let Some(why) = self.recovery_blocked(alias, master, state) {
            tracing::warn!(cluster = alias, code = %dead.code, reason = %why, "not recovering");
            return;
        }
        let request = self.request(
            alias,
            master,
            state,
            RecoveryKind::Failover,
            None,
            format!("{}: {}", dead.code, dead.reason),
        );
        self.execute(request).await;
    }

    fn request(
        &self,
        alias: &str,
        master: &InstanceKey,
        state: &ClusterState,
        kind: RecoveryKind,
        target: Option<InstanceKey>,
        reason: String,
    ) -> RecoveryRequest {
        let snapshot = self.discovery.store().cluster(alias);
        let master_state = self.discovery.store().instance(master).map(|i| i.state);
        let replicas: Vec<InstanceKey> =
            snapshot.iter().flat_map(|s| s.replica_keys()).filter(|k| k != master).collect();
        let master_refuses =
            master_state.as_ref().is_some_and(|s| !s.reachable && s.failure == Some(FailureKind::Refused));
        let master_probe = master_state.and_then(|s| s.last_probe);
        let semi_sync = master_probe.as_ref().is_some_and(|p| p.semi_sync.master_enabled);
        RecoveryRequest {
            cluster: alias.to_string(),
            failed_master: master.clone(),
            master_probe,
            replicas,
            reason,
            kind,
            target,
            rules: state.promotion_rules.clone(),
            downtimed: state.downtimed_at(unix_millis_now()),
            max_lag_s: self.config.recovery.max_lag_on_failover_s,
            semi_sync,
            master_refuses,
            resume: None,
            requested_by: None,
        }
    }

    /// Runs a recovery; the caller holds `busy`.
    async fn execute(&self, request: RecoveryRequest) -> Outcome {
        let control = MysqlControl { discovery: self.discovery.clone(), admin: self.admin.clone() };
        let outcome =
            run_recovery(&control, self.node.as_ref(), &self.hooks, &request, &self.timings()).await;
        let steps: Vec<String> = outcome.steps.iter().map(|s| s.to_string()).collect();
        tracing::info!(
            cluster = %request.cluster,
            success = outcome.success,
            new_master = %outcome.new_master.as_ref().map(ToString::to_string).unwrap_or_else(|| "none".into()),
            summary = %outcome.summary,
            steps = %steps.join(" | "),
            "recovery finished"
        );
        outcome
    }

    /// Finishes a recovery a previous leader left open.
    async fn resume(&self, open: &RecoveryRecord, state: &ClusterState) {
        let Some(master) = open.failed_master.clone() else { return };
        tracing::warn!(recovery = open.id, cluster = %open.cluster, "finishing a recovery left open by another leader");
        let mut request = self.request(&open.cluster, &master, state, open.kind, None, open.reason.clone());
        request.resume = Some((open.id, open.epoch, open.candidate.clone()));
        self.execute(request).await;
    }

    /// Checks an operator's request against the replicated state and the topology:
    /// the cluster (by alias or member) is registered, its master is the expected one,
    /// no recovery of it runs, the target is one of its replicas, and a switchover's
    /// master answers. Returns the alias, the master and the request to run.
    fn check_manual(&self, m: &ManualRecovery, state: &ClusterState) -> Result<RecoveryRequest, ManualError> {
        let alias = if state.clusters.contains_key(&m.cluster) {
            m.cluster.clone()
        } else {
            self.discovery
                .store()
                .cluster(&m.cluster)
                .map(|c| c.alias)
                .filter(|a| state.clusters.contains_key(a))
                .ok_or_else(|| ManualError::NotFound(format!("no registered cluster `{}`", m.cluster)))?
        };
        let master = state.clusters[&alias]
            .master
            .clone()
            .ok_or_else(|| ManualError::Refused(format!("cluster {alias} has no master recorded")))?;
        if let Some(expected) = &m.expected_master {
            if expected != &master {
                return Err(ManualError::Refused(format!(
                    "the master of cluster {alias} is {master}, not {expected}: the command is stale"
                )));
            }
        }
        if let Some(open) = state.open_recovery(&alias) {
            return Err(ManualError::Refused(format!("recovery {} of {alias} is still running", open.id)));
        }
        let reason = match m.kind {
            RecoveryKind::Switchover => "planned switchover requested by an operator".to_string(),
            _ => "forced failover requested by an operator".to_string(),
        };
        let mut request = self.request(&alias, &master, state, m.kind, m.target.clone(), reason);
        request.requested_by = m.requested_by.clone();
        if let Some(target) = &m.target {
            if target == &master {
                return Err(ManualError::Refused(format!("{target} is already the master of {alias}")));
            }
            if !request.replicas.contains(target) {
                return Err(ManualError::NotFound(format!("{target} is not a replica of cluster {alias}")));
            }
        }
        if m.kind == RecoveryKind::Switchover {
            let reachable = self.discovery.store().instance(&master).is_some_and(|i| i.state.reachable);
            if !reachable {
                return Err(ManualError::Refused(format!(
                    "master {master} is unreachable: a switchover needs a live master (a forced failover does not)"
                )));
            }
        }
        Ok(request)
    }

    /// Runs an operator's switchover or forced failover now.
    pub async fn manual(&self, m: ManualRecovery) -> Result<Outcome, ManualError> {
        let _running = self.busy.lock().await;
        let (_, state) = self.node.state();
        let request = self.check_manual(&m, &state)?;
        if m.kind == RecoveryKind::Switchover {
            // Refuse before anything is recorded or touched.
            let control = MysqlControl { discovery: self.discovery.clone(), admin: self.admin.clone() };
            let plan = choose(&control, &request, None, request.master_probe.as_ref(), &self.timings())
                .await
                .map_err(ManualError::Refused)?
                .plan;
            tracing::info!(cluster = %request.cluster, candidate = %plan.candidate, "switchover accepted");
        }
        Ok(self.execute(request).await)
    }

    /// What [`RecoveryService::manual`] would do, from fresh probes, changing nothing.
    pub async fn dry_run(&self, m: &ManualRecovery) -> Result<DryRun, ManualError> {
        let (_, state) = self.node.state();
        let request = self.check_manual(m, &state)?;
        let control = MysqlControl { discovery: self.discovery.clone(), admin: self.admin.clone() };
        let facts = replica_facts(&control, &request, &self.timings()).await;
        let input = failover_input(&request, &facts, None, request.master_probe.as_ref());
        Ok(DryRun {
            master: request.failed_master.clone(),
            plan: plan_checked(&input),
            assessed: assess(&input),
        })
    }

    /// Old masters that came back: fenced at once if writable, then rejoined as replicas
    /// of the current master when they have nothing it lacks, or left fenced with their
    /// errant GTIDs reported.
    async fn handle_former_masters(&self, state: &ClusterState) {
        for r in state.recoveries.iter().filter(|r| !r.is_open()) {
            let (Some(old), Some(current)) =
                (r.failed_master.as_ref(), state.clusters.get(&r.cluster).and_then(|c| c.master.as_ref()))
            else {
                continue;
            };
            if old == current {
                continue;
            }
            let settled = (r.id, old.clone());
            if self.settled_former_masters.lock().is_ok_and(|s| s.contains(&settled)) {
                continue;
            }
            let Some(seen) = self.discovery.store().instance(old) else { continue };
            let Some(probe) = seen.state.last_probe.as_ref().filter(|_| seen.state.reachable) else {
                continue;
            };
            if probe.replication.as_ref().is_some_and(|rep| &rep.source == current) {
                if let Ok(mut s) = self.settled_former_masters.lock() {
                    s.insert(settled);
                }
                continue;
            }
            if !probe.read_only {
                match self.admin.fence(old).await {
                    Ok(()) => tracing::warn!(instance = %old, "former master came back writable: fenced"),
                    Err(e) => {
                        tracing::error!(instance = %old, error = %e, "cannot fence former master");
                        continue;
                    }
                }
            }
            // What it has executed, looked at now that it is read-only: the last probe
            // may predate a commit it made just before it was fenced (an older master
            // probe only makes the check stricter).
            let fresh = self.discovery.observe(old).await.state;
            let Some(probe) = fresh.last_probe.as_ref().filter(|p| fresh.reachable && p.read_only) else {
                continue;
            };
            let Some(master_probe) =
                self.discovery.store().instance(current).and_then(|i| i.state.last_probe)
            else {
                continue;
            };
            let extra = probe.gtid_executed.subtract(&master_probe.gtid_executed);
            if !extra.is_empty() {
                let key = (r.cluster.clone(), AnalysisCode::ErrantGtid, old.clone());
                if self.announced.lock().map(|mut a| a.insert(key)).unwrap_or(false) {
                    tracing::error!(instance = %old, errant = %extra, "ErrantGTID: former master has transactions the new master lacks; left fenced");
                }
                continue;
            }
            match self.admin.replicate_from(old, current).await {
                Ok(()) => {
                    tracing::info!(instance = %old, master = %current, "former master rejoined as a replica");
                    if let Ok(mut s) = self.settled_former_masters.lock() {
                        s.insert(settled);
                    }
                    // Seen replicating now, so the next look does not rejoin it again.
                    self.discovery.observe(old).await;
                }
                Err(e) => tracing::error!(instance = %old, error = %e, "cannot rejoin former master"),
            }
        }
    }

    fn ensure_sentinel(self: &Arc<Self>, master: &InstanceKey) {
        let Ok(mut sentinels) = self.sentinels.lock() else { return };
        if sentinels.get(master).is_some_and(|task| !task.is_finished()) {
            return;
        }
        let me = self.clone();
        let key = master.clone();
        sentinels.insert(master.clone(), tokio::spawn(async move { me.sentinel(key).await }));
    }

    /// Stops the sentinels of instances that are no longer masters.
    fn keep_sentinels(&self, masters: &BTreeSet<InstanceKey>) {
        if let Ok(mut sentinels) = self.sentinels.lock() {
            sentinels.retain(|k, task| {
                let keep = masters.contains(k);
                if !keep {
                    task.abort();
                }
                keep
            });
        }
    }

    fn stop_sentinels(&self) {
        if let Ok(mut sentinels) = self.sentinels.lock() {
            for (_, task) in std::mem::take(&mut *sentinels) {
                task.abort();
            }
        }
    }

    /// Watches a master more closely than the poll: probes it every 250 ms (a hang is
    /// seen within a quarter second of starting), and holds an idle TCP connection to it
    /// (a killed `mysqld` closes every socket at once: probed the same millisecond).
    async fn sentinel(&self, master: InstanceKey) {
        tokio::join!(self.watch_close(master.clone()), self.watch_often(master));
    }

    async fn watch_often(&self, master: InstanceKey) {
        loop {
            self.discovery.observe(&master).await;
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    async fn watch_close(&self, master: InstanceKey) {
        let source = self.config.source_ip();
        loop {
            match sentinel_connect(&master, source).await {
                Ok(mut stream) => {
                    let mut buf = [0u8; 512];
                    // The server greets, then closes after its handshake timeout or death.
                    while let Ok(n) = stream.read(&mut buf).await {
                        if n == 0 {
                            break;
                        }
                    }
                    self.discovery.observe(&master).await;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }
}

async fn sentinel_connect(
    master: &InstanceKey,
    source: Option<IpAddr>,
) -> std::io::Result<tokio::net::TcpStream> {
    let addr: SocketAddr = tokio::net::lookup_host((master.host.as_str(), master.port))
        .await?
        .next()
        .ok_or_else(|| std::io::Error::other("no address"))?;
    let socket =
        if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    if let Some(ip) = source.filter(|ip| ip.is_ipv4() == addr.is_ipv4()) {
        socket.bind(SocketAddr::new(ip, 0))?;
    }
    tokio::time::timeout(Duration::from_millis(500), socket.connect(addr))
        .await
        .map_err(|_| std::io::Error::other("connect timeout"))?
}
