//! Runs a failover or switchover step by step, in the order of DESIGN.md section 5,
//! through two small seams: [`Control`] (the MySQL side) and [`Decisions`] (the Raft
//! log). Every step is safe to repeat, so a new leader can run an unfinished recovery
//! again from the top with the candidate recorded in Raft. Every step checks its
//! post-condition; a recovery that cannot verify its outcome reports failure.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::time::{Duration, Instant};

use super::plan::{plan_failover, FailoverInput, FailoverPlan, ReplicaFacts};
use crate::state::{Command, CommandResult, PromotionRule, RecoveryKind, RecoveryStep};
use crate::topology::{InstanceKey, InstanceProbe, ThreadState};

/// The MySQL side of a recovery.
pub trait Control: Send + Sync {
    fn probe(&self, key: &InstanceKey) -> impl Future<Output = Result<InstanceProbe, String>> + Send;
    /// Read-only on, client connections killed.
    fn fence(&self, key: &InstanceKey) -> impl Future<Output = Result<(), String>> + Send;
    /// The replica's IO thread stopped: it receives (and acknowledges) nothing more.
    /// `source_refuses`: its master refused connections (a process that died, not one
    /// that hangs), so the thread holds no connection to it.
    fn stop_io_thread(
        &self,
        key: &InstanceKey,
        source_refuses: bool,
    ) -> impl Future<Output = Result<(), String>> + Send;
    /// The master side of semi-sync on, before any replica connects to it.
    fn enable_semi_sync(&self, key: &InstanceKey) -> impl Future<Output = Result<(), String>> + Send;
    /// Replication stopped and forgotten, writable (semi-sync master side on if asked).
    fn promote(&self, key: &InstanceKey, semi_sync: bool) -> impl Future<Output = Result<(), String>> + Send;
    /// Read-only, replicating from `source` with GTID auto-positioning.
    fn replicate_from(
        &self,
        key: &InstanceKey,
        source: &InstanceKey,
    ) -> impl Future<Output = Result<(), String>> + Send;
    /// A write as the application succeeds.
    fn verify_write(&self, key: &InstanceKey) -> impl Future<Output = Result<(), String>> + Send;
}

/// The Raft side: decisions are committed before they are acted on.
pub trait Decisions: Send + Sync {
    fn decide(&self, command: Command) -> impl Future<Output = Result<CommandResult, String>> + Send;
}

/// Hooks around a failover; `pre_failover` may veto it.
pub trait Hooks: Send + Sync {
    fn pre_failover(&self, facts: &HookFacts) -> impl Future<Output = Result<(), String>> + Send;
    fn post_failover(&self, facts: &HookFacts, success: bool) -> impl Future<Output = ()> + Send;
}

/// What hooks are told.
#[derive(Debug, Clone, Default)]
pub struct HookFacts {
    pub cluster: String,
    pub failed_master: String,
    pub reason: String,
    pub recovery_id: u64,
    pub epoch: u64,
    pub new_master: String,
    pub summary: String,
}

/// No hooks (tests, simulator).
pub struct NoHooks;

impl Hooks for NoHooks {
    async fn pre_failover(&self, _: &HookFacts) -> Result<(), String> {
        Ok(())
    }
    async fn post_failover(&self, _: &HookFacts, _: bool) {}
}

/// Bounds on the waiting steps.
#[derive(Debug, Clone)]
pub struct Timings {
    /// For the candidate to apply what it received.
    pub apply_wait: Duration,
    /// For repointed replicas to connect and the write check to pass.
    pub verify_wait: Duration,
    /// Between polls while waiting.
    pub poll: Duration,
    /// Between polls of the candidate applying its relay log: the promotion waits on
    /// it, and a writer's last transactions are still being applied at the freeze.
    pub apply_poll: Duration,
}

impl Default for Timings {
    fn default() -> Self {
        Self {
            apply_wait: Duration::from_secs(10),
            verify_wait: Duration::from_secs(5),
            poll: Duration::from_millis(20),
            apply_poll: Duration::from_millis(5),
        }
    }
}

/// What to recover.
#[derive(Debug, Clone)]
pub struct RecoveryRequest {
    pub cluster: String,
    pub failed_master: InstanceKey,
    pub master_probe: Option<InstanceProbe>,
    /// Every other instance of the cluster.
    pub replicas: Vec<InstanceKey>,
    pub reason: String,
    pub kind: RecoveryKind,
    /// For a switchover: the replica to promote (else the best one).
    pub target: Option<InstanceKey>,
    pub rules: BTreeMap<InstanceKey, PromotionRule>,
    pub downtimed: BTreeSet<InstanceKey>,
    pub max_lag_s: u64,
    /// Turn semi-sync on for the new master (the cluster runs semi-sync).
    pub semi_sync: bool,
    /// The failed master refused connections when last probed: a process that died,
    /// whose replicas hold no connection to it (one that hangs accepts them).
    pub master_refuses: bool,
    /// An unfinished recovery to continue: (id, epoch, candidate recorded).
    pub resume: Option<(u64, u64, Option<InstanceKey>)>,
    /// The operator who asked (`None`: automatic).
    pub requested_by: Option<String>,
}

/// How it ended.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub id: Option<u64>,
    pub epoch: u64,
    pub success: bool,
    pub new_master: Option<InstanceKey>,
    pub summary: String,
    /// Each step with the milliseconds since the recovery began.
    pub steps: Vec<RecoveryStep>,
    /// When the new master passed its write check, since the recovery began.
    pub writable_after: Option<Duration>,
}

struct Log {
    started: Instant,
    steps: Vec<RecoveryStep>,
    writable_at: Option<Duration>,
}

impl Log {
    fn step(&mut self, what: impl Into<String>) {
        self.step_at(Instant::now(), what);
    }

    /// A step that happened at `at` (logged after it, once concurrent work is joined).
    fn step_at(&mut self, at: Instant, what: impl Into<String>) {
        let at_ms = at.saturating_duration_since(self.started).as_millis() as u64;
        let step = RecoveryStep { at_ms, text: what.into() };
        tracing::info!(step = %step, "recovery");
        self.steps.push(step);
    }
}

/// `k1 (why), k2 (why)`: replicas passed over, as operators read them.
pub fn show_passed_over(passed_over: &[(InstanceKey, String)]) -> String {
    if passed_over.is_empty() {
        return "none".into();
    }
    passed_over.iter().map(|(k, why)| format!("{k} ({why})")).collect::<Vec<_>>().join(", ")
}

async fn poll_until<F, Fut>(timings: &Timings, limit: Duration, check: F) -> Result<(), String>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<bool, String>>,
{
    poll_every(timings.poll, limit, check).await
}

/// Calls `check` every `every` until it answers `true` or `limit` has passed.
async fn poll_every<F, Fut>(every: Duration, limit: Duration, mut check: F) -> Result<(), String>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<bool, String>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    let mut last_error = String::from("condition not met");
    loop {
        match check().await {
            Ok(true) => return Ok(()),
            Ok(false) => {}
            Err(e) => last_error = e,
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(format!("{last_error} after {} ms", limit.as_millis()));
        }
        tokio::time::sleep(every).await;
    }
}

/// Whether `probe` has applied everything it received.
fn caught_up(probe: &InstanceProbe) -> bool {
    probe.replication.as_ref().is_none_or(|r| r.received.is_subset_of(&probe.gtid_executed))
}

/// Runs one recovery to its end and records the outcome in Raft.
pub async fn run_recovery<C: Control, D: Decisions, H: Hooks>(
    control: &C,
    decisions: &D,
    hooks: &H,
    req: &RecoveryRequest,
    timings: &Timings,
) -> Outcome {
    let mut log = Log { started: Instant::now(), steps: Vec::new(), writable_at: None };
    // 1. The intent, with a new fencing epoch, before anything is touched.
    let (id, epoch, recorded_candidate) = match &req.resume {
        Some((id, epoch, candidate)) => {
            log.step(format!("resuming recovery {id} (epoch {epoch})"));
            (*id, *epoch, candidate.clone())
        }
        None => {
            let intent = Command::RecordRecoveryIntent {
                cluster: req.cluster.clone(),
                failed_master: req.failed_master.clone(),
                reason: req.reason.clone(),
                kind: req.kind,
                requested_by: req.requested_by.clone(),
            };
            match decisions.decide(intent).await {
                Ok(CommandResult::RecoveryOpened { id, epoch }) => {
                    log.step(format!("intent recorded: recovery {id}, epoch {epoch}"));
                    (id, epoch, None)
                }
                Ok(other) => return not_started(log, format!("intent not recorded: {other}")),
                Err(e) => return not_started(log, format!("intent not committed: {e}")),
            }
        }
    };
    let mut facts = HookFacts {
        cluster: req.cluster.clone(),
        failed_master: req.failed_master.to_string(),
        reason: req.reason.clone(),
        recovery_id: id,
        epoch,
        ..Default::default()
    };
    let result =
        steps(control, decisions, hooks, req, timings, &mut log, id, recorded_candidate, &mut facts).await;
    let (success, new_master, summary) = match result {
        Ok((new_master, problems)) if problems.is_empty() => {
            (true, Some(new_master.clone()), format!("promoted {new_master}"))
        }
        Ok((new_master, problems)) => {
            (false, Some(new_master.clone()), format!("promoted {new_master}, but: {}", problems.join("; ")))
        }
        Err(StepFailure { promoted, reason }) => (false, promoted, reason),
    };
    // A candidate the previous leader recorded may have been promoted by it: the state
    // must name it rather than the dead master, or nothing fences it (simulator seed 212).
    let new_master = new_master.or_else(|| req.resume.as_ref().and_then(|(_, _, c)| c.clone()));
    log.step(if success { "done".to_string() } else { format!("failed: {summary}") });
    let outcome = Command::RecordRecoveryOutcome {
        id,
        success,
        new_master: new_master.clone(),
        summary: summary.clone(),
        steps: log.steps.clone(),
        writable_after_ms: log.writable_at.map(|d| d.as_millis() as u64),
    };
    if let Err(e) = decisions.decide(outcome).await {
        log.step(format!("outcome not recorded ({e}); the next leader finishes this recovery"));
    }
    facts.new_master = new_master.as_ref().map(ToString::to_string).unwrap_or_default();
    facts.summary = summary.clone();
    hooks.post_failover(&facts, success).await;
    Outcome {
        id: Some(id),
        epoch,
        success,
        new_master,
        summary,
        steps: log.steps,
        writable_after: log.writable_at,
    }
}

fn not_started(log: Log, reason: String) -> Outcome {
    Outcome {
        id: None,
        epoch: 0,
        success: false,
        new_master: None,
        summary: reason,
        steps: log.steps,
        writable_after: None,
    }
}

/// Where the promotion is, for the repoints that wait on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// The candidate's record and catch-up.
    Preparing,
    /// Promoting and checking the write.
    Promoting,
    /// The write check is done (passed or not).
    Checked,
    /// Not recorded or not caught up: nothing is promoted.
    Failed,
}

struct StepFailure {
    promoted: Option<InstanceKey>,
    reason: String,
}

fn fail(reason: impl Into<String>) -> StepFailure {
    StepFailure { promoted: None, reason: reason.into() }
}

/// Stops every replica's IO thread, retrying failed calls a few times: a replica left
/// receiving could acknowledge commits of an old master that wakes up. Returns how many
/// were stopped (a replica the leader cannot reach at all cannot be stopped).
async fn freeze<C: Control>(
    control: &C,
    replicas: &[InstanceKey],
    source_refuses: bool,
    timings: &Timings,
) -> usize {
    let mut pending: Vec<&InstanceKey> = replicas.iter().collect();
    for attempt in 0..3 {
        if attempt > 0 {
            tokio::time::sleep(timings.poll * 2).await;
        }
        let results =
            futures::future::join_all(pending.iter().map(|k| control.stop_io_thread(k, source_refuses)))
                .await;
        pending = pending.into_iter().zip(results).filter(|(_, r)| r.is_err()).map(|(k, _)| k).collect();
        if pending.is_empty() {
            break;
        }
    }
    replicas.len() - pending.len()
}

/// `f`'s output and how long it took.
async fn timed<T>(f: impl std::future::Future<Output = T>) -> (T, Duration) {
    let started = std::time::Instant::now();
    let out = f.await;
    (out, started.elapsed())
}

/// A probe retried twice: one failed probe must not drop a replica that may hold the
/// only copy of acknowledged commits from the candidate choice.
async fn probe_retrying<C: Control>(
    control: &C,
    key: &InstanceKey,
    timings: &Timings,
) -> Result<InstanceProbe, String> {
    let mut last = Err(String::new());
    for attempt in 0..3 {
        if attempt > 0 {
            tokio::time::sleep(timings.poll).await;
        }
        last = control.probe(key).await;
        if last.is_ok() {
            break;
        }
    }
    last
}

/// Probes every replica of the request (each retried): what planning starts from.
pub async fn replica_facts<C: Control>(
    control: &C,
    req: &RecoveryRequest,
    timings: &Timings,
) -> Vec<ReplicaFacts> {
    let probes =
        futures::future::join_all(req.replicas.iter().map(|k| probe_retrying(control, k, timings))).await;
    req.replicas
        .iter()
        .zip(probes)
        .map(|(k, p)| ReplicaFacts {
            key: k.clone(),
            probe: p.ok(),
            downtimed: req.downtimed.contains(k),
            rule: req.rules.get(k).copied().unwrap_or_default(),
        })
        .collect()
}

/// The planner's input for `req` over `facts`.
pub fn failover_input<'a>(
    req: &'a RecoveryRequest,
    facts: &'a [ReplicaFacts],
    recorded_candidate: Option<&'a InstanceKey>,
    master_probe: Option<&'a InstanceProbe>,
) -> FailoverInput<'a> {
    FailoverInput {
        failed_master: &req.failed_master,
        master_probe,
        replicas: facts,
        force: req.kind == RecoveryKind::ForcedFailover,
        max_lag_s: req.max_lag_s,
        chosen: recorded_candidate,
        target: req.target.as_ref(),
    }
}

/// A plan and the probe of its candidate it was made from.
pub struct Chosen {
    pub plan: FailoverPlan,
    pub candidate_probe: Option<InstanceProbe>,
}

/// Probes the replicas and plans; a switchover target that cannot be promoted is an
/// error saying why.
pub async fn choose<C: Control>(
    control: &C,
    req: &RecoveryRequest,
    recorded_candidate: Option<&InstanceKey>,
    master_probe: Option<&InstanceProbe>,
    timings: &Timings,
) -> Result<Chosen, String> {
    let facts_of = replica_facts(control, req, timings).await;
    let plan = plan_checked(&failover_input(req, &facts_of, recorded_candidate, master_probe))?;
    let candidate_probe = facts_of.into_iter().find(|f| f.key == plan.candidate).and_then(|f| f.probe);
    Ok(Chosen { plan, candidate_probe })
}

/// [`plan_failover`], with a requested target that was not chosen an error saying why.
pub fn plan_checked(input: &FailoverInput) -> Result<FailoverPlan, String> {
    let plan = plan_failover(input).map_err(|e| e.to_string())?;
    let req_target = input.target;
    if let Some(target) = req_target {
        if &plan.candidate != target {
            let why = plan
                .passed_over
                .iter()
                .find(|(k, _)| k == target)
                .map(|(_, w)| w.clone())
                .unwrap_or_else(|| "not reachable".into());
            return Err(format!("{target} cannot be promoted: {why}"));
        }
    }
    Ok(plan)
}

#[allow(clippy::too_many_arguments)]
async fn steps<C: Control, D: Decisions, H: Hooks>(
    control: &C,
    decisions: &D,
    hooks: &H,
    req: &RecoveryRequest,
    timings: &Timings,
    log: &mut Log,
    id: u64,
    recorded_candidate: Option<InstanceKey>,
    facts: &mut HookFacts,
) -> Result<(InstanceKey, Vec<String>), StepFailure> {
    let switchover = req.kind == RecoveryKind::Switchover;
    hooks.pre_failover(facts).await.map_err(|e| fail(format!("aborted by the pre-failover hook: {e}")))?;

    // 2. Fence the old master, when it answers at all. A switchover needs it, and
    //    checks its candidate first: a refused switchover leaves the master writable.
    if switchover {
        let chosen = choose(control, req, recorded_candidate.as_ref(), req.master_probe.as_ref(), timings)
            .await
            .map_err(fail)?;
        control
            .fence(&req.failed_master)
            .await
            .map_err(|e| fail(format!("cannot make {} read-only: {e}", req.failed_master)))?;
        log.step(format!("fenced {}", req.failed_master));
        // The candidate's probe predates the fence: its catch-up is read again.
        let plan = chosen.plan;
        return promote_steps(control, decisions, req, timings, log, id, recorded_candidate, plan, None)
            .await;
    }
    // A failover tries the fence beside everything else, waiting for it nowhere: a
    // hung or unreachable master makes it wait its whole connect timeout, and no
    // acknowledged write depends on it (the frozen replicas acknowledge nothing more).
    let (fenced, result) = tokio::join!(timed(control.fence(&req.failed_master)), async {
        // Freeze the replicas: with their IO threads stopped no replica receives, so
        // none acknowledges, anything more from the old master should it wake up. The
        // acknowledged writes are now all in some relay log the candidate choice sees.
        let frozen = freeze(control, &req.replicas, req.master_refuses, timings).await;
        log.step(format!("stopped the IO thread of {frozen} of {} replica(s)", req.replicas.len()));
        // 3. Choose the candidate from fresh probes.
        let Chosen { plan, candidate_probe } =
            choose(control, req, recorded_candidate.as_ref(), req.master_probe.as_ref(), timings)
                .await
                .map_err(fail)?;
        promote_steps(control, decisions, req, timings, log, id, recorded_candidate, plan, candidate_probe)
            .await
    });
    match fenced {
        (Ok(()), took) => log.step(format!("fenced {} ({} ms)", req.failed_master, took.as_millis())),
        (Err(e), _) => log.step(format!("old master not fenced ({e}); it is unreachable")),
    }
    result
}

/// From a chosen candidate to a verified new master: catch-up, promotion, repoints,
/// the write check and the replicas' checks. `candidate_probe`: the candidate as probed
/// after the freeze, when the plan was made (a candidate that had applied everything
/// it received then, with its IO thread stopped, is not probed again for it).
#[allow(clippy::too_many_arguments)]
async fn promote_steps<C: Control, D: Decisions>(
    control: &C,
    decisions: &D,
    req: &RecoveryRequest,
    timings: &Timings,
    log: &mut Log,
    id: u64,
    recorded_candidate: Option<InstanceKey>,
    plan: FailoverPlan,
    candidate_probe: Option<InstanceProbe>,
) -> Result<(InstanceKey, Vec<String>), StepFailure> {
    let switchover = req.kind == RecoveryKind::Switchover;
    let master_now = if switchover { control.probe(&req.failed_master).await.ok() } else { None };
    let candidate = plan.candidate.clone();
    log.step(format!("candidate {candidate} (passed over: {})", show_passed_over(&plan.passed_over)));
    // The candidate is recorded in Raft before it is touched: a leader that takes over
    // resumes with it. Waiting for it to apply its relay log only reads, so the record
    // goes beside that wait; a catch-up from a donor changes its source, so after.
    let resumed = recorded_candidate.is_some();
    let record = {
        let candidate = candidate.clone();
        async move {
            if resumed {
                return Ok(None);
            }
            decisions
                .decide(Command::SetRecoveryCandidate { id, candidate })
                .await
                .map(|_| Some(Instant::now()))
                .map_err(|e| fail(format!("candidate not recorded in Raft: {e}")))
        }
    };
    // In a switchover the old master is alive (read-only now) and the candidate still
    // receives from it: it gets the rest from there, never from a donor.
    let donor = plan.donor.as_ref().filter(|_| !switchover);
    let (record, recorded_before) = match donor {
        Some(_) => (None, record.await?),
        None => (Some(record), None),
    };

    // A resumed recovery whose candidate the previous leader already promoted goes
    // straight on to repointing: catching a writable master up from a donor would
    // demote it (simulator seeds 14529, 14975). A promoted candidate forgets its old
    // source in the background, after its IO thread has exited: writable with no
    // IO thread running is promoted.
    let already_promoted = recorded_candidate.is_some()
        && control.probe(&candidate).await.is_ok_and(|p| {
            !p.read_only && p.replication.as_ref().is_none_or(|r| r.io_thread != ThreadState::Running)
        });
    if already_promoted {
        log.step(format!("{candidate} was already promoted by the previous leader"));
    }

    // 4. Catch up: from a donor if one has more, then apply the relay log; in a
    //    switchover, everything the (now read-only) master executed.
    if let Some(donor) = donor.filter(|_| !already_promoted) {
        poll_until(timings, timings.apply_wait, || async {
            control.probe(donor).await.map(|p| caught_up(&p))
        })
        .await
        .map_err(|e| fail(format!("donor {donor} did not apply its relay log: {e}")))?;
        control
            .replicate_from(&candidate, donor)
            .await
            .map_err(|e| fail(format!("catch-up from {donor}: {e}")))?;
        let donor_has = control.probe(donor).await.map_err(fail)?.gtid_executed;
        poll_until(timings, timings.apply_wait, || async {
            control.probe(&candidate).await.map(|p| donor_has.is_subset_of(&p.gtid_executed))
        })
        .await
        .map_err(|e| fail(format!("{candidate} did not catch up from {donor}: {e}")))?;
        log.step(format!("{candidate} caught up from {donor}"));
    }
    let must_have = master_now.as_ref().map(|m| m.gtid_executed.clone());
    // Applied at the plan's probe: its IO thread was stopped then (the freeze), so what
    // it had received was all it will receive.
    let applied_at_plan = donor.is_none()
        && must_have.is_none()
        && candidate_probe.as_ref().is_some_and(|p| {
            caught_up(p) && p.replication.as_ref().is_none_or(|r| r.io_thread != ThreadState::Running)
        });
    let applied = async {
        if applied_at_plan {
            return Ok(Instant::now());
        }
        let limit = if already_promoted { Duration::ZERO } else { timings.apply_wait };
        poll_every(timings.apply_poll, limit, || async {
            let p = control.probe(&candidate).await?;
            Ok(caught_up(&p) && must_have.as_ref().is_none_or(|m| m.is_subset_of(&p.gtid_executed)))
        })
        .await
        .map(|()| Instant::now())
        .map_err(|e| fail(format!("{candidate} did not apply everything it received: {e}")))
    };
    // (when the candidate was recorded in Raft, when it had applied its relay log)
    let prepared = async {
        match record {
            Some(record) => {
                let (recorded, applied) = tokio::join!(record, applied);
                Ok::<_, StepFailure>((recorded?, applied?))
            }
            None => Ok((recorded_before, applied.await?)),
        }
    };

    // 5. Promote, and repoint the others (and, in a switchover, the old master).
    let mut to_repoint = plan.repoint.clone();
    if switchover {
        to_repoint.push(req.failed_master.clone());
    }
    let semi_sync = req.semi_sync && !to_repoint.is_empty();
    let repoint = |k: &InstanceKey| {
        let candidate = &candidate;
        let k = k.clone();
        async move {
            let (r, took) = timed(control.replicate_from(&k, candidate)).await;
            (k, r, took, Instant::now())
        }
    };
    // The first replica is repointed at once, beside the candidate's Raft record,
    // catch-up and promotion: by the write check it is connected, and the check's
    // commit has its acknowledgement without waiting for a repoint. The master side
    // of semi-sync goes on first (a replica that connects while it is off never
    // acknowledges). Neither touches what the record guards, a candidate read-only
    // until recorded. A candidate catching up from a donor replicates from it until
    // then: with a donor the first repoint waits for the catch-up (it is done here).
    //
    // The rest are repointed once the write check is done: on two shared cores five
    // repoints at once made each take 56-188 ms (MySQL, 7 nodes), the first included.
    // Should the first repoint fail, the rest start with the promotion, so the check
    // has another replica to wait for; should the record or the catch-up fail, none
    // of the rest is repointed.
    let (stage_tx, stage_rx) = tokio::sync::watch::channel(Stage::Preparing);
    let promoted = |reason: String| StepFailure { promoted: Some(candidate.clone()), reason };
    let promote_and_check = async {
        let (recorded_at, applied_at) = match prepared.await {
            Ok(at) => at,
            Err(e) => {
                stage_tx.send_replace(Stage::Failed);
                return Err(e);
            }
        };
        stage_tx.send_replace(Stage::Promoting);
        let checked = async {
            let (promotion, took) = timed(control.promote(&candidate, semi_sync)).await;
            // From here a failure still names the candidate as the new master: a
            // promotion whose answer was lost may have taken effect (simulator seed 83).
            promotion.map_err(|e| promoted(format!("promote {candidate}: {e}")))?;
            let promoted_at = Instant::now();
            let checked = poll_until(timings, timings.verify_wait, || async {
                control.verify_write(&candidate).await.map(|_| true)
            })
            .await
            .map(|_| Instant::now());
            Ok::<_, StepFailure>((recorded_at, applied_at, promoted_at, took, checked))
        }
        .await;
        stage_tx.send_replace(Stage::Checked);
        checked
    };
    let repoints = async {
        let Some((first, rest)) = to_repoint.split_first() else { return Vec::new() };
        let mut done = Vec::new();
        let semi_sync_on = !semi_sync || control.enable_semi_sync(&candidate).await.is_ok();
        let mut pending: Vec<&InstanceKey> = rest.iter().collect();
        let first_ok = if semi_sync_on {
            let first = repoint(first).await;
            let ok = first.1.is_ok();
            done.push(first);
            ok
        } else {
            // The promotion turns semi-sync on itself: the first waits for it too.
            pending.insert(0, first);
            false
        };
        let mut stage = stage_rx.clone();
        let go = stage
            .wait_for(|s| match s {
                Stage::Preparing => false,
                Stage::Promoting => !first_ok,
                Stage::Checked | Stage::Failed => true,
            })
            .await
            .map(|s| *s != Stage::Failed)
            .unwrap_or(false);
        if go {
            done.extend(futures::future::join_all(pending.into_iter().map(repoint)).await);
        }
        done
    };
    let (promotion, repointed) = tokio::join!(promote_and_check, repoints);
    let (recorded_at, applied_at, promoted_at, promote_took, checked) = match promotion {
        Ok(p) => p,
        Err(e) => {
            for (k, r, _, _) in &repointed {
                if r.is_ok() {
                    log.step(format!("repointed {k} to {candidate} before the recovery failed"));
                }
            }
            return Err(e);
        }
    };
    if let Some(at) = recorded_at {
        log.step_at(at, format!("candidate {candidate} recorded in Raft"));
    }
    log.step_at(applied_at, format!("{candidate} applied everything it received"));
    log.step_at(promoted_at, format!("promoted {candidate} ({} ms)", promote_took.as_millis()));
    let mut problems = Vec::new();
    for (k, r, took, at) in repointed {
        match r {
            Ok(()) => log.step_at(at, format!("repointed {k} ({} ms)", took.as_millis())),
            Err(e) => problems.push(format!("repoint {k}: {e}")),
        }
    }
    log.step(format!("repointed {} replica(s) to {candidate}", to_repoint.len() - problems.len()));

    // 6. Post-conditions: a write as the application, replicas connected.
    let checked_at =
        checked.map_err(|e| promoted(format!("{candidate} was promoted but does not take writes: {e}")))?;
    log.writable_at = Some(checked_at.saturating_duration_since(log.started));
    log.step_at(checked_at, format!("write check passed on {candidate}"));
    // All at once: the outcome (which moves the master in Raft, and so the NLB) waits
    // for the slowest replica, not for the sum of them.
    let connected = futures::future::join_all(to_repoint.iter().map(|k| {
        poll_until(timings, timings.verify_wait, || async {
            let p = control.probe(k).await?;
            Ok(p.replication
                .as_ref()
                .is_some_and(|r| r.source == candidate && r.io_thread == ThreadState::Running))
        })
    }))
    .await;
    for (k, c) in to_repoint.iter().zip(connected) {
        if let Err(e) = c {
            problems.push(format!("{k} not replicating from {candidate}: {e}"));
        }
    }
    log.step("replicas verified");
    Ok((candidate, problems))
}
