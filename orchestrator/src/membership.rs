//! Raft membership decisions (pure): which learners the leader makes voters, so that
//! the voters stay an odd count (3, 5 or 7) and a learner becomes a voter only once it
//! holds the log. A fourth node waits as a learner until a fifth has caught up too (or
//! another voter leaves); voters are never demoted here.

use std::collections::BTreeSet;

use crate::raft::NodeId;

/// At most this many voters (DESIGN.md: 3, 5 or 7 nodes).
pub const MAX_VOTERS: usize = 7;

/// A learner this close to the leader's last log index counts as caught up.
pub const CATCH_UP_SLACK: u64 = 16;

/// One member as the leader sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemberView {
    pub id: NodeId,
    pub voter: bool,
    /// A learner holding the log up to [`CATCH_UP_SLACK`] entries behind the leader.
    pub caught_up: bool,
}

/// Whether a learner that holds `matched` of a log ending at `last` has caught up.
pub fn is_caught_up(matched: Option<u64>, last: Option<u64>) -> bool {
    match (matched, last) {
        (Some(m), Some(l)) => m + CATCH_UP_SLACK >= l,
        (_, None) => true,
        (None, Some(_)) => false,
    }
}

/// The learners to make voters now: as many caught-up learners (lowest ids first) as
/// bring the voters to the largest odd count the voters and caught-up learners allow,
/// at most [`MAX_VOTERS`]. Empty when nothing should change.
pub fn voters_to_promote(members: &[MemberView]) -> BTreeSet<NodeId> {
    let voters = members.iter().filter(|m| m.voter).count();
    let mut ready: Vec<NodeId> = members.iter().filter(|m| !m.voter && m.caught_up).map(|m| m.id).collect();
    ready.sort_unstable();
    let eligible = (voters + ready.len()).min(MAX_VOTERS);
    let target = if eligible % 2 == 1 { eligible } else { eligible.saturating_sub(1) };
    if target <= voters {
        return BTreeSet::new();
    }
    ready.into_iter().take(target - voters).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn view(voters: &[NodeId], learners: &[(NodeId, bool)]) -> Vec<MemberView> {
        voters
            .iter()
            .map(|&id| MemberView { id, voter: true, caught_up: true })
            .chain(learners.iter().map(|&(id, caught_up)| MemberView { id, voter: false, caught_up }))
            .collect()
    }

    #[test]
    fn learners_become_voters_in_pairs() {
        // (voters, learners with caught_up, promoted)
        type Case<'a> = (&'a [NodeId], &'a [(NodeId, bool)], &'a [NodeId]);
        let table: &[Case] = &[
            (&[1], &[], &[]),
            (&[1], &[(2, true)], &[]),
            (&[1], &[(2, true), (3, true)], &[2, 3]),
            (&[1, 2, 3], &[(4, true)], &[]),
            (&[1, 2, 3], &[(4, true), (5, false)], &[]),
            (&[1, 2, 3], &[(5, true), (4, true)], &[4, 5]),
            (&[1, 2, 3], &[(4, true), (5, true), (6, true)], &[4, 5]),
            // Four voters (an operator's add-peer): one learner makes five.
            (&[1, 2, 3, 4], &[(5, true)], &[5]),
            (&[1, 2, 3, 4, 5, 6, 7], &[(8, true), (9, true)], &[]),
            (&[1, 2, 3, 4, 5], &[(6, true), (7, true), (8, true)], &[6, 7]),
        ];
        for (voters, learners, want) in table {
            let got = voters_to_promote(&view(voters, learners));
            assert_eq!(got, want.iter().copied().collect(), "voters {voters:?} learners {learners:?}");
        }
    }

    #[test]
    fn catching_up_allows_some_slack() {
        assert!(is_caught_up(Some(100), Some(100)));
        assert!(is_caught_up(Some(90), Some(100)));
        assert!(!is_caught_up(Some(10), Some(100)));
        assert!(!is_caught_up(None, Some(3)));
        assert!(is_caught_up(None, None));
    }

    proptest! {
        #[test]
        fn voters_stay_odd_and_only_caught_up_learners_are_promoted(
            voters in 1usize..8,
            learners in proptest::collection::vec(any::<bool>(), 0..8),
        ) {
            let voter_ids: Vec<NodeId> = (1..=voters as u64).collect();
            let learner_ids: Vec<(NodeId, bool)> =
                learners.iter().enumerate().map(|(i, c)| (100 + i as u64, *c)).collect();
            let members = view(&voter_ids, &learner_ids);
            let promoted = voters_to_promote(&members);
            for id in &promoted {
                prop_assert!(members.iter().any(|m| m.id == *id && !m.voter && m.caught_up));
            }
            let after = voters + promoted.len();
            if !promoted.is_empty() {
                prop_assert!(after % 2 == 1 && after <= MAX_VOTERS);
            }
            prop_assert!(after >= voters);
        }
    }
}
