//! Pure planning of a failover: which replica to promote and what to do with the rest.
//!
//! Data first: the candidate must end up with everything any reachable replica has
//! received (with semi-sync AFTER_SYNC, every acknowledged commit is in some replica's
//! relay log). Among the replicas that have it all, promotion rules decide
//! (prefer > neutral > prefer_not; must_not never). If none of those may be promoted,
//! the best eligible replica first catches up from the most advanced one (the donor).

use std::collections::BTreeSet;

use crate::analysis::errant_gtids;
use crate::state::PromotionRule;
use crate::topology::{GtidSet, InstanceKey, InstanceProbe};

/// What planning knows of one replica of the failed master.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplicaFacts {
    pub key: InstanceKey,
    /// Its latest probe, `None` when unreachable.
    pub probe: Option<InstanceProbe>,
    pub downtimed: bool,
    pub rule: PromotionRule,
}

impl ReplicaFacts {
    /// Executed plus received: what it will have once its SQL thread catches up.
    fn has(&self) -> GtidSet {
        self.probe.as_ref().map(InstanceProbe::gtid_received_or_executed).unwrap_or_default()
    }

    fn lag_s(&self) -> u64 {
        self.probe.as_ref().and_then(|p| p.replication.as_ref()).and_then(|r| r.seconds_behind).unwrap_or(0)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct FailoverInput<'a> {
    pub failed_master: &'a InstanceKey,
    /// The failed master's last successful probe, for errant-GTID checks.
    pub master_probe: Option<&'a InstanceProbe>,
    pub replicas: &'a [ReplicaFacts],
    /// Lag and errant-GTID limits do not apply (an operator's forced failover).
    pub force: bool,
    pub max_lag_s: u64,
    /// A candidate chosen earlier for this recovery (recorded in Raft): kept.
    pub chosen: Option<&'a InstanceKey>,
    /// The replica an operator asked for: the only one considered, and it must be
    /// eligible like any other.
    pub target: Option<&'a InstanceKey>,
}

/// The plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailoverPlan {
    pub candidate: InstanceKey,
    /// A more advanced replica the candidate must catch up from before promotion.
    pub donor: Option<InstanceKey>,
    /// Reachable replicas to repoint to the candidate (the donor included).
    pub repoint: Vec<InstanceKey>,
    /// Replicas that could not be reached: repointed later, when they come back.
    pub unreachable: Vec<InstanceKey>,
    /// Why each other reachable replica was not chosen.
    pub passed_over: Vec<(InstanceKey, String)>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("master {0} has no reachable replica to promote")]
    NoReachableReplica(InstanceKey),
    #[error("no replica of {master} may be promoted: {reasons}")]
    NoCandidate { master: InstanceKey, reasons: String },
    /// The candidate an earlier leader recorded (and may have promoted) does not
    /// answer: it is never silently replaced (simulator seed 479).
    #[error("the recorded candidate {0} does not answer")]
    CandidateUnreachable(InstanceKey),
}

fn rule_rank(rule: PromotionRule) -> u8 {
    match rule {
        PromotionRule::Prefer => 0,
        PromotionRule::Neutral => 1,
        PromotionRule::PreferNot => 2,
        PromotionRule::MustNot => 3,
    }
}

/// Why `r` may not be promoted, if it may not.
fn ineligible(r: &ReplicaFacts, input: &FailoverInput) -> Option<String> {
    let probe = r.probe.as_ref()?;
    if r.downtimed {
        return Some("downtimed".into());
    }
    if r.rule == PromotionRule::MustNot {
        return Some("promotion rule must_not".into());
    }
    if !input.force {
        if r.lag_s() > input.max_lag_s {
            return Some(format!("lagging {} s (limit {} s)", r.lag_s(), input.max_lag_s));
        }
        if let Some(master) = input.master_probe {
            let errant = errant_gtids(probe, master);
            if !errant.is_empty() {
                return Some(format!("errant GTIDs {errant}"));
            }
        }
    }
    None
}

/// Chooses the candidate and the donor, if one is needed.
pub fn plan_failover(input: &FailoverInput) -> Result<FailoverPlan, PlanError> {
    let reachable: Vec<&ReplicaFacts> = input.replicas.iter().filter(|r| r.probe.is_some()).collect();
    let unreachable: Vec<InstanceKey> =
        input.replicas.iter().filter(|r| r.probe.is_none()).map(|r| r.key.clone()).collect();
    if reachable.is_empty() {
        return Err(PlanError::NoReachableReplica(input.failed_master.clone()));
    }
    let everything = reachable.iter().fold(GtidSet::new(), |acc, r| acc.union(&r.has()));
    let complete = |r: &ReplicaFacts| everything.is_subset_of(&r.has());
    let most_advanced: Vec<&ReplicaFacts> = {
        let full: Vec<&ReplicaFacts> = reachable.iter().copied().filter(|r| complete(r)).collect();
        if full.is_empty() {
            // Disjoint sets (someone has errant transactions): the largest wins.
            let max = reachable.iter().map(|r| r.has().transaction_count()).max().unwrap_or(0);
            reachable.iter().copied().filter(|r| r.has().transaction_count() == max).collect()
        } else {
            full
        }
    };
    let mut passed_over: Vec<(InstanceKey, String)> = Vec::new();
    let eligible: Vec<&ReplicaFacts> = reachable
        .iter()
        .copied()
        .filter(|r| input.target.is_none_or(|t| t == &r.key))
        .filter(|r| match ineligible(r, input) {
            Some(why) => {
                passed_over.push((r.key.clone(), why));
                false
            }
            None => true,
        })
        .collect();

    let order = |a: &&ReplicaFacts, b: &&ReplicaFacts| {
        (rule_rank(a.rule), std::cmp::Reverse(a.has().transaction_count()), &a.key).cmp(&(
            rule_rank(b.rule),
            std::cmp::Reverse(b.has().transaction_count()),
            &b.key,
        ))
    };
    let kept = match input.chosen {
        Some(c) => Some(
            reachable
                .iter()
                .copied()
                .find(|r| &r.key == c)
                .ok_or_else(|| PlanError::CandidateUnreachable(c.clone()))?,
        ),
        None => None,
    };
    let candidate = match kept {
        Some(c) => c,
        None => {
            let mut advanced_eligible: Vec<&ReplicaFacts> =
                eligible.iter().copied().filter(|r| most_advanced.iter().any(|m| m.key == r.key)).collect();
            advanced_eligible.sort_by(order);
            match advanced_eligible.first() {
                Some(c) => *c,
                None => {
                    let mut rest = eligible.clone();
                    rest.sort_by(order);
                    *rest.first().ok_or_else(|| PlanError::NoCandidate {
                        master: input.failed_master.clone(),
                        reasons: passed_over
                            .iter()
                            .map(|(k, why)| format!("{k}: {why}"))
                            .collect::<Vec<_>>()
                            .join("; "),
                    })?
                }
            }
        }
    };
    let donor = if complete(candidate) || most_advanced.iter().any(|m| m.key == candidate.key) {
        None
    } else {
        most_advanced.first().map(|m| m.key.clone())
    };
    let repoint: Vec<InstanceKey> =
        reachable.iter().filter(|r| r.key != candidate.key).map(|r| r.key.clone()).collect();
    let chosen: BTreeSet<&InstanceKey> = BTreeSet::from([&candidate.key]);
    passed_over.retain(|(k, _)| !chosen.contains(k));
    for r in &reachable {
        if r.key != candidate.key && !passed_over.iter().any(|(k, _)| k == &r.key) {
            passed_over.push((r.key.clone(), "another replica ranked higher".into()));
        }
    }
    passed_over.sort();
    Ok(FailoverPlan { candidate: candidate.key.clone(), donor, repoint, unreachable, passed_over })
}

/// Why each replica could not be the candidate (for a plan that failed): unreachable,
/// not the requested target, or why it is not eligible.
pub fn assess(input: &FailoverInput) -> Vec<(InstanceKey, String)> {
    let mut out: Vec<(InstanceKey, String)> = input
        .replicas
        .iter()
        .map(|r| {
            let why = if r.probe.is_none() {
                "unreachable".to_string()
            } else if let Some(why) = ineligible(r, input) {
                why
            } else if input.target.is_some_and(|t| t != &r.key) {
                "not the requested target".to_string()
            } else {
                "eligible".to_string()
            };
            (r.key.clone(), why)
        })
        .collect();
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topology::ThreadState;

    fn key(s: &str) -> InstanceKey {
        s.parse().unwrap()
    }

    /// A replica of the dead master `m:1`, its IO thread reconnecting.
    fn probe(executed: &str, received: &str, lag: u64) -> InstanceProbe {
        let mut p = crate::topology::fixtures::probe(Some("m:1"));
        p.gtid_executed = GtidSet::parse(executed).unwrap();
        let r = p.replication.as_mut().unwrap();
        r.io_thread = ThreadState::Connecting;
        r.last_io_errno = 2003;
        r.seconds_behind = Some(lag);
        r.received = GtidSet::parse(received).unwrap();
        p
    }

    fn replica(k: &str, executed: &str, received: &str, rule: PromotionRule) -> ReplicaFacts {
        ReplicaFacts { key: key(k), probe: Some(probe(executed, received, 0)), downtimed: false, rule }
    }

    fn plan(replicas: &[ReplicaFacts]) -> Result<FailoverPlan, PlanError> {
        let m = key("m:1");
        let master = probe("0-1-100", "", 0);
        plan_failover(&FailoverInput {
            failed_master: &m,
            master_probe: Some(&master),
            replicas,
            force: false,
            max_lag_s: 60,
            chosen: None,
            target: None,
        })
    }

    use PromotionRule::*;

    #[test]
    fn the_replica_that_received_the_most_wins_over_preference() {
        let p =
            plan(&[replica("a:1", "0-1-90", "0-1-100", Neutral), replica("b:1", "0-1-98", "0-1-98", Prefer)])
                .unwrap();
        assert_eq!(p.candidate, key("a:1"), "a has the acknowledged commits 99-100 in its relay log");
        assert_eq!(p.donor, None);
        assert_eq!(p.repoint, vec![key("b:1")]);
    }

    #[test]
    fn among_complete_replicas_the_promotion_rule_decides() {
        let p = plan(&[
            replica("a:1", "0-1-100", "0-1-100", PreferNot),
            replica("b:1", "0-1-100", "0-1-100", Neutral),
            replica("c:1", "0-1-100", "0-1-100", Prefer),
        ])
        .unwrap();
        assert_eq!(p.candidate, key("c:1"));
        assert_eq!(p.repoint, vec![key("a:1"), key("b:1")]);
    }

    #[test]
    fn a_must_not_replica_with_the_most_data_becomes_the_donor() {
        let p = plan(&[
            replica("a:1", "0-1-100", "0-1-100", MustNot),
            replica("b:1", "0-1-97", "0-1-97", Neutral),
        ])
        .unwrap();
        assert_eq!(p.candidate, key("b:1"));
        assert_eq!(p.donor, Some(key("a:1")));
        assert_eq!(p.repoint, vec![key("a:1")]);
        assert_eq!(p.passed_over, vec![(key("a:1"), "promotion rule must_not".into())]);
    }

    #[test]
    fn lagging_errant_and_downtimed_replicas_are_passed_over() {
        let mut lagging = replica("a:1", "0-1-100", "0-1-100", Prefer);
        lagging.probe.as_mut().unwrap().replication.as_mut().unwrap().seconds_behind = Some(120);
        let errant = replica("b:1", "0-1-100,1-2-3", "0-1-100", Prefer);
        let mut down = replica("c:1", "0-1-100", "0-1-100", Prefer);
        down.downtimed = true;
        let ok = replica("d:1", "0-1-100", "0-1-100", PreferNot);
        let p = plan(&[lagging.clone(), errant.clone(), down.clone(), ok]).unwrap();
        assert_eq!(p.candidate, key("d:1"));
        let reasons: Vec<&str> = p.passed_over.iter().map(|(_, w)| w.as_str()).collect();
        assert!(reasons.iter().any(|w| w.contains("lagging 120 s")), "{reasons:?}");
        assert!(reasons.iter().any(|w| w.contains("errant GTIDs 1-2-3")), "{reasons:?}");
        assert!(reasons.contains(&"downtimed"), "{reasons:?}");
        let err = plan(&[lagging.clone(), errant.clone(), down.clone()]).unwrap_err();
        assert!(matches!(err, PlanError::NoCandidate { .. }), "{err}");
        assert!(err.to_string().contains("lagging"), "{err}");

        // A dry run that fails says why for every replica, the unreachable one too.
        let gone = ReplicaFacts { key: key("e:1"), probe: None, downtimed: false, rule: Neutral };
        let (m, master) = (key("m:1"), probe("0-1-100", "", 0));
        let replicas = [lagging, errant, down, gone];
        let target = key("a:1");
        let input = FailoverInput {
            failed_master: &m,
            master_probe: Some(&master),
            replicas: &replicas,
            force: false,
            max_lag_s: 60,
            chosen: None,
            target: Some(&target),
        };
        let why: Vec<(String, String)> =
            assess(&input).into_iter().map(|(k, w)| (k.to_string(), w)).collect();
        assert!(why[0].0 == "a:1" && why[0].1.contains("lagging 120 s"), "{why:?}");
        assert!(why[1].1.contains("errant GTIDs"), "{why:?}");
        assert_eq!(why[2].1, "downtimed");
        assert_eq!(why[3].1, "unreachable");
    }

    #[test]
    fn forced_failover_ignores_lag_and_errant_gtids() {
        let mut lagging = replica("a:1", "0-1-100", "0-1-100", Neutral);
        lagging.probe.as_mut().unwrap().replication.as_mut().unwrap().seconds_behind = Some(500);
        let m = key("m:1");
        let p = plan_failover(&FailoverInput {
            failed_master: &m,
            master_probe: None,
            replicas: &[lagging],
            force: true,
            max_lag_s: 60,
            chosen: None,
            target: None,
        })
        .unwrap();
        assert_eq!(p.candidate, key("a:1"));
    }

    #[test]
    fn unreachable_replicas_are_listed_and_none_reachable_is_an_error() {
        let gone = ReplicaFacts { key: key("x:1"), probe: None, downtimed: false, rule: Neutral };
        let p = plan(&[gone.clone(), replica("a:1", "0-1-100", "0-1-100", Neutral)]).unwrap();
        assert_eq!(p.unreachable, vec![key("x:1")]);
        assert_eq!(plan(&[gone]).unwrap_err(), PlanError::NoReachableReplica(key("m:1")));
    }

    #[test]
    fn an_operators_target_must_be_eligible() {
        let mut lagging = replica("a:1", "0-1-100", "0-1-100", Neutral);
        lagging.probe.as_mut().unwrap().replication.as_mut().unwrap().seconds_behind = Some(90);
        let replicas = [lagging, replica("b:1", "0-1-100", "0-1-100", Neutral)];
        let (m, a, b) = (key("m:1"), key("a:1"), key("b:1"));
        let input = |target| FailoverInput {
            failed_master: &m,
            master_probe: None,
            replicas: &replicas,
            force: false,
            max_lag_s: 60,
            chosen: None,
            target: Some(target),
        };
        let err = plan_failover(&input(&a)).unwrap_err().to_string();
        assert!(err.contains("a:1: lagging 90 s"), "{err}");
        assert_eq!(plan_failover(&input(&b)).unwrap().candidate, b);
    }

    #[test]
    fn a_candidate_chosen_earlier_is_kept() {
        let replicas =
            [replica("a:1", "0-1-100", "0-1-100", Neutral), replica("b:1", "0-1-100", "0-1-100", Prefer)];
        let m = key("m:1");
        let chosen = key("a:1");
        let p = plan_failover(&FailoverInput {
            failed_master: &m,
            master_probe: None,
            replicas: &replicas,
            force: false,
            max_lag_s: 60,
            chosen: Some(&chosen),
            target: None,
        })
        .unwrap();
        assert_eq!(p.candidate, chosen);
    }
}
