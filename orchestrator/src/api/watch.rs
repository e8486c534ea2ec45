//! The `Watch` stream: what changed in the topology, the problems and the recoveries,
//! as events. [`WatchView`] is what a watcher has seen; [`WatchView::events_since`] is
//! pure and tells what to send; [`run`] keeps it fresh on every change.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use orch_proto::v1 as pb;
use pb::watch_event::Event;

use super::pb as conv;
use super::AppState;
use crate::unix_millis_now;

/// At most this often per cluster a topology is sent again for changes of lag alone.
const TOPOLOGY_MIN_GAP: Duration = Duration::from_millis(500);
/// How often the leader's problems are looked at.
const PROBLEMS_EVERY: Duration = Duration::from_secs(1);

/// A cluster's problems: (code, instance) of each, and the messages.
type ProblemList = (Vec<(String, String)>, Vec<pb::Problem>);

/// What a watcher has been told.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WatchView {
    /// Per cluster: what identifies its shape (roles, reachability, threads, lag), and
    /// the topology.
    pub topologies: BTreeMap<String, (String, pb::ClusterTopology)>,
    /// Per cluster: the master Raft recorded.
    pub masters: BTreeMap<String, String>,
    /// Per recovery: (ended, acknowledged, steps recorded) and the record: a running
    /// recovery is sent again as its steps are recorded.
    pub recoveries: BTreeMap<u64, ((i64, String, usize), pb::Recovery)>,
    /// Per cluster: the problems (code and instance) and their full form.
    pub problems: BTreeMap<String, ProblemList>,
}

/// What identifies a topology's shape: it changes when an instance changes role,
/// reachability, read-only state, threads, source, lag or downtime.
pub fn shape_of(t: &pb::ClusterTopology) -> String {
    let mut s = format!("{} {}|", t.master, t.recorded_master);
    for i in &t.instances {
        let r = i.replication.as_ref();
        s += &format!(
            "{} {} {} {} {} {} {} {} {};",
            i.key,
            i.role,
            i.reachable,
            i.read_only,
            i.downtimed,
            r.map(|r| r.source.as_str()).unwrap_or("-"),
            r.map(|r| r.io_thread.as_str()).unwrap_or("-"),
            r.map(|r| r.sql_thread.as_str()).unwrap_or("-"),
            r.map(|r| r.seconds_behind).unwrap_or(-1),
        );
    }
    s
}

impl WatchView {
    /// The events that take a watcher from `self` to `now`. A first view (empty
    /// `self`) yields every topology, every cluster's problems and the running
    /// recoveries; recoveries that ended before the watch began are not replayed.
    pub fn events_since(&self, now: &WatchView, first: bool) -> Vec<Event> {
        let mut out = Vec::new();
        for (alias, (shape, t)) in &now.topologies {
            if self.topologies.get(alias).is_none_or(|(old, _)| old != shape) {
                out.push(Event::Topology(t.clone()));
            }
        }
        for (alias, current) in &now.masters {
            match self.masters.get(alias) {
                Some(previous) if previous != current => out.push(Event::Master(pb::MasterChanged {
                    cluster: alias.clone(),
                    previous: previous.clone(),
                    current: current.clone(),
                })),
                _ => {}
            }
        }
        for (id, (mark, r)) in &now.recoveries {
            let changed = match self.recoveries.get(id) {
                Some((old, _)) => old != mark,
                None => !first || r.ended_unix_ms == 0,
            };
            if changed {
                out.push(Event::Recovery(r.clone()));
            }
        }
        for (alias, (codes, problems)) in &now.problems {
            let before = self.problems.get(alias).map(|(c, _)| c);
            if before != Some(codes) && !(before.is_none() && codes.is_empty() && !first) {
                out.push(Event::Problems(pb::ProblemsChanged {
                    cluster: alias.clone(),
                    problems: problems.clone(),
                }));
            }
        }
        for (alias, (codes, _)) in &self.problems {
            if !codes.is_empty() && !now.problems.contains_key(alias) {
                out.push(Event::Problems(pb::ProblemsChanged {
                    cluster: alias.clone(),
                    problems: Vec::new(),
                }));
            }
        }
        out
    }
}

/// This peer's view now, limited to `cluster` when it is not empty. `problems` is the
/// leader's latest analysis (kept from before when it could not be had).
fn view_now(s: &AppState, cluster: &str, problems: &BTreeMap<String, Vec<pb::Problem>>) -> WatchView {
    let now = unix_millis_now();
    let wanted = |alias: &str| cluster.is_empty() || alias == cluster;
    let snapshots = s.store.clusters();
    s.raft.with_state(|state| {
        let mut v = WatchView::default();
        for c in snapshots.iter().filter(|c| wanted(&c.alias)) {
            let t = conv::topology(c, state, now);
            v.topologies.insert(c.alias.clone(), (shape_of(&t), t));
        }
        for (alias, record) in state.clusters.iter().filter(|(a, _)| wanted(a)) {
            if let Some(m) = &record.master {
                v.masters.insert(alias.clone(), m.to_string());
            }
        }
        for r in state.recoveries.iter().filter(|r| wanted(&r.cluster)) {
            let mark =
                (r.ended_unix_ms.unwrap_or(0), r.acknowledged_by.clone().unwrap_or_default(), r.steps.len());
            v.recoveries.insert(r.id, (mark, conv::recovery(r)));
        }
        for (alias, list) in problems.iter().filter(|(a, _)| wanted(a)) {
            let codes = list.iter().map(|p| (p.code.clone(), p.instance.clone())).collect();
            v.problems.insert(alias.clone(), (codes, list.clone()));
        }
        v
    })
}

/// Sends events to `tx` until the watcher goes away.
pub async fn run(s: AppState, cluster: String, tx: tokio::sync::mpsc::Sender<pb::WatchEvent>) {
    let mut topology = s.store.subscribe();
    let mut raft = s.raft.watch();
    let mut seen = WatchView::default();
    let mut first = true;
    let mut problems: BTreeMap<String, Vec<pb::Problem>> = BTreeMap::new();
    let mut problems_at: Option<Instant> = None;
    let mut sent_topology: BTreeMap<String, Instant> = BTreeMap::new();
    loop {
        if problems_at.is_none_or(|t| t.elapsed() >= PROBLEMS_EVERY) {
            if let Ok(f) = s.ops.problems().await {
                problems = f
                    .problems
                    .iter()
                    .map(|(alias, list)| {
                        (alias.clone(), list.iter().map(|p| conv::problem(alias, p)).collect())
                    })
                    .collect();
            }
            problems_at = Some(Instant::now());
        }
        let mut now = view_now(&s, &cluster, &problems);
        // Lag-only changes at most every TOPOLOGY_MIN_GAP: keep the old shape until then.
        for (alias, (shape, t)) in now.topologies.iter_mut() {
            let recent = sent_topology.get(alias).is_some_and(|at| at.elapsed() < TOPOLOGY_MIN_GAP);
            if let Some((old_shape, old)) = seen.topologies.get(alias) {
                let same_roles = old.instances.len() == t.instances.len()
                    && old.master == t.master
                    && old.recorded_master == t.recorded_master;
                if recent && same_roles && shape_without_lag(old_shape) == shape_without_lag(shape) {
                    *shape = old_shape.clone();
                }
            }
        }
        for event in seen.events_since(&now, first) {
            if let Event::Topology(t) = &event {
                sent_topology.insert(t.alias.clone(), Instant::now());
            }
            let message = pb::WatchEvent { at_unix_ms: unix_millis_now(), event: Some(event) };
            if tx.send(message).await.is_err() {
                return;
            }
        }
        seen = now;
        first = false;
        tokio::select! {
            _ = tx.closed() => return,
            r = topology.changed() => if r.is_err() { return },
            r = raft.changed() => if r.is_err() { return },
            _ = tokio::time::sleep(Duration::from_millis(250)) => {}
        }
        // Let a burst of changes settle into one look.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The shape with every instance's lag left out.
fn shape_without_lag(shape: &str) -> String {
    shape.split(';').map(|i| i.rsplit_once(' ').map_or(i, |(rest, _)| rest)).collect::<Vec<_>>().join(";")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topo(master: &str, lag: i64) -> pb::ClusterTopology {
        pb::ClusterTopology {
            alias: "main".into(),
            master: master.into(),
            recorded_master: master.into(),
            instances: vec![pb::Instance {
                key: "b:1".into(),
                role: "replica".into(),
                reachable: true,
                replication: Some(pb::Replication { seconds_behind: lag, ..Default::default() }),
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    fn view(master: &str, lag: i64, recovery_ended: i64) -> WatchView {
        let t = topo(master, lag);
        let mut v = WatchView::default();
        v.topologies.insert("main".into(), (shape_of(&t), t));
        v.masters.insert("main".into(), master.into());
        let r = pb::Recovery { id: 1, ended_unix_ms: recovery_ended, ..Default::default() };
        v.recoveries.insert(1, ((recovery_ended, String::new(), 0), r));
        v
    }

    #[test]
    fn first_view_sends_the_state_then_only_changes() {
        let a = view("a:1", 0, 0);
        let first = WatchView::default().events_since(&a, true);
        assert!(matches!(first[0], Event::Topology(_)));
        assert!(first.iter().any(|e| matches!(e, Event::Recovery(r) if r.id == 1)), "the running recovery");
        assert!(a.events_since(&a, false).is_empty(), "nothing changed, nothing sent");
        let b = view("b:1", 0, 99);
        let events = a.events_since(&b, false);
        assert!(events
            .iter()
            .any(|e| matches!(e, Event::Master(m) if m.previous == "a:1" && m.current == "b:1")));
        assert!(events.iter().any(|e| matches!(e, Event::Recovery(r) if r.id == 1)), "the recovery ended");
        let ended_before = WatchView::default().events_since(&b, true);
        assert!(
            !ended_before.iter().any(|e| matches!(e, Event::Recovery(_))),
            "old recoveries are not replayed"
        );
    }

    #[test]
    fn lag_is_part_of_the_shape_and_can_be_left_out() {
        let (a, b) = (shape_of(&topo("a:1", 0)), shape_of(&topo("a:1", 5)));
        assert_ne!(a, b);
        assert_eq!(shape_without_lag(&a), shape_without_lag(&b));
    }

    #[test]
    fn problems_that_clear_are_sent_empty() {
        let mut with = WatchView::default();
        let p = pb::Problem { code: "DeadReplica".into(), instance: "b:1".into(), ..Default::default() };
        with.problems.insert("main".into(), (vec![("DeadReplica".into(), "b:1".into())], vec![p]));
        let mut cleared = WatchView::default();
        cleared.problems.insert("main".into(), (vec![], vec![]));
        let events = with.events_since(&cleared, false);
        assert!(matches!(&events[..], [Event::Problems(p)] if p.problems.is_empty()));
    }
}
