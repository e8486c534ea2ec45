//! Whether this peer can reach a quorum of the group, independent of Raft roles: every
//! peer pings every other on port 10008 a few times a second and remembers who answered.
//!
//! A follower whose leader is cut off with it on the minority side still hears that
//! leader's heartbeats; only this tells it that it is on the minority side.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use orch_proto::raft::raft_client::RaftClient;
use orch_proto::raft::PingRequest;
use tonic::transport::Channel;

use super::NodeId;

/// Last successful ping per peer.
#[derive(Default)]
pub struct QuorumMonitor {
    last_answer: Mutex<BTreeMap<NodeId, Instant>>,
}

impl QuorumMonitor {
    fn record(&self, peer: NodeId) {
        if let Ok(mut m) = self.last_answer.lock() {
            m.insert(peer, Instant::now());
        }
    }

    /// Milliseconds since `peer` last answered this peer (`None`: never).
    pub fn last_contact_ms(&self, peer: NodeId) -> Option<u64> {
        let m = self.last_answer.lock().ok()?;
        m.get(&peer).map(|t| t.elapsed().as_millis() as u64)
    }

    /// Peers (other than `me`) among `members` that answered within `window`.
    pub fn reachable(&self, me: NodeId, members: &[NodeId], window: Duration) -> usize {
        let Ok(m) = self.last_answer.lock() else {
            return 0;
        };
        members
            .iter()
            .filter(|id| **id != me)
            .filter(|id| m.get(id).is_some_and(|t| t.elapsed() <= window))
            .count()
    }

    /// Whether `me` plus the peers it reached form a majority of `members`.
    pub fn has_quorum(&self, me: NodeId, members: &[NodeId], window: Duration) -> bool {
        let with_me = self.reachable(me, members, window) + usize::from(members.contains(&me));
        with_me * 2 > members.len()
    }

    /// Pings each of `peers` once, concurrently, each bounded by `timeout`.
    pub async fn ping_round(&self, me: NodeId, peers: Vec<(NodeId, RaftClient<Channel>)>, timeout: Duration) {
        let calls = peers.into_iter().map(|(id, mut client)| async move {
            let mut req = tonic::Request::new(PingRequest { from: me });
            req.set_timeout(timeout);
            (id, client.ping(req).await.is_ok())
        });
        for (id, ok) in futures::future::join_all(calls).await {
            if ok {
                self.record(id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn majority_counts_this_peer() {
        let m = QuorumMonitor::default();
        let members = [1, 2, 3, 4, 5];
        let window = Duration::from_secs(1);
        assert!(!m.has_quorum(1, &members, window));
        m.record(2);
        assert!(!m.has_quorum(1, &members, window), "2 of 5 is a minority");
        m.record(3);
        assert!(m.has_quorum(1, &members, window), "3 of 5 is a majority");
        assert!(m.has_quorum(1, &[1], window), "a group of one");
        assert_eq!(m.reachable(1, &members, Duration::ZERO), 0, "old answers expire");
    }
}
