//! End to end: the peers' Raft group, with real `orchestrator` processes on their own
//! loopback addresses (ports 3000 and 10008 each).

use std::time::Duration;

use orch_tests::netfault::Partition;
use orch_tests::peer::Peer;
use orch_tests::peer::{http_client, poll_json};
use orch_tests::raft::{markers, raft_state, state_machine, wait_agreed_leader, write_marker};
use orch_tests::PeerBed;
use serde_json::Value;

const ELECTION: Duration = Duration::from_secs(10);
const CATCH_UP: Duration = Duration::from_secs(15);

/// Markers written so far, to give each a fresh made-up instance.
static WRITTEN: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(1);

async fn write_ok(bed: &PeerBed, through: u64, text: &str) -> u64 {
    let n = WRITTEN.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let (status, body) = write_marker(bed.peer(through), n, text).await.unwrap();
    assert_eq!(status, 200, "write through peer {through}: {body}");
    body["log_index"].as_u64().expect("log index")
}

/// Waits until `peer` has applied `n` markers; returns its state.
async fn wait_markers(peer: &Peer, n: usize, timeout: Duration) -> Value {
    let started = std::time::Instant::now();
    loop {
        if let Ok(s) = state_machine(peer).await {
            if markers(&s).len() >= n {
                return s;
            }
        }
        assert!(started.elapsed() < timeout, "peer {} did not apply {n} markers within {timeout:?}", peer.id);
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test]
async fn three_peers_elect_replicate_and_survive_a_leader_kill() {
    let mut bed = PeerBed::start(3, |_| {}).await.expect("peers");
    let all: Vec<_> = bed.peers.iter().collect();
    let leader = wait_agreed_leader(&all, ELECTION).await.unwrap();

    // Leader check answers 200 only on the leader.
    for p in &bed.peers {
        let status = http_client().get(p.url("/api/leader-check")).send().await.unwrap().status();
        assert_eq!(status.as_u16(), if p.id == leader { 200 } else { 404 }, "peer {}", p.id);
        // Health needs a ping round to every peer first.
        let (health, _) =
            poll_json(&p.url("/api/raft-health"), Duration::from_secs(5), |h| h["healthy"] == true)
                .await
                .unwrap_or_else(|last| panic!("peer {} never healthy: {last}", p.id));
        assert_eq!(health["role"], if p.id == leader { "leader" } else { "follower" });
    }
    let state = raft_state(bed.peer(leader)).await.unwrap();
    assert_eq!(state["role"], "leader");
    assert_eq!(state["members"].as_array().unwrap().len(), 3);

    // A write through a follower is forwarded, committed and applied everywhere.
    let follower = bed.peers.iter().find(|p| p.id != leader).unwrap().id;
    write_ok(&bed, follower, "through-a-follower").await;
    write_ok(&bed, leader, "through-the-leader").await;
    for p in &bed.peers {
        let s = wait_markers(p, 2, CATCH_UP).await;
        assert_eq!(markers(&s), vec!["through-a-follower", "through-the-leader"], "peer {}", p.id);
    }

    // kill -9 of the leader: a new one is elected and nothing committed is lost.
    bed.peer_mut(leader).kill();
    let survivors: Vec<_> = bed.running();
    let new_leader = wait_agreed_leader(&survivors, ELECTION).await.unwrap();
    assert_ne!(new_leader, leader);
    let other = survivors.iter().find(|p| p.id != new_leader).unwrap().id;
    write_ok(&bed, other, "after-the-leader-died").await;
    for p in bed.running() {
        let s = wait_markers(p, 3, CATCH_UP).await;
        assert_eq!(markers(&s)[..2], ["through-a-follower", "through-the-leader"]);
    }

    // The killed peer restarts with its log and catches up.
    bed.peer_mut(leader).spawn().unwrap();
    bed.peer(leader).wait_healthy(Duration::from_secs(10)).await.unwrap();
    let s = wait_markers(bed.peer(leader), 3, CATCH_UP).await;
    assert_eq!(markers(&s).last().map(String::as_str), Some("after-the-leader-died"));
    let metrics =
        http_client().get(bed.peer(leader).url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("orchestrator_raft_term "), "{metrics}");
    assert!(metrics.contains("orchestrator_raft_commit_index "), "{metrics}");
}

#[tokio::test]
async fn killing_every_peer_keeps_every_committed_command() {
    let mut bed = PeerBed::start(3, |_| {}).await.expect("peers");
    let all: Vec<_> = bed.peers.iter().collect();
    let leader = wait_agreed_leader(&all, ELECTION).await.unwrap();
    for i in 0..20 {
        write_ok(&bed, leader, &format!("n{i}")).await;
    }
    for p in &mut bed.peers {
        p.kill();
    }
    for p in &mut bed.peers {
        p.spawn().unwrap();
    }
    for p in &bed.peers {
        p.wait_healthy(Duration::from_secs(10)).await.unwrap();
    }
    let all: Vec<_> = bed.peers.iter().collect();
    wait_agreed_leader(&all, ELECTION).await.unwrap();
    let expected: Vec<String> = (0..20).map(|i| format!("n{i}")).collect();
    for p in &bed.peers {
        let s = wait_markers(p, 20, CATCH_UP).await;
        assert_eq!(markers(&s), expected, "peer {}", p.id);
    }
}

#[tokio::test]
async fn a_peer_behind_a_purged_log_catches_up_from_a_snapshot() {
    let mut bed = PeerBed::start(3, |spec| {
        spec.raft_settings = vec!["snapshot_every_logs = 20".into(), "logs_kept_after_snapshot = 5".into()];
    })
    .await
    .expect("peers");
    let all: Vec<_> = bed.peers.iter().collect();
    let leader = wait_agreed_leader(&all, ELECTION).await.unwrap();
    let lagging = bed.peers.iter().find(|p| p.id != leader).unwrap().id;
    let other = bed.peers.iter().find(|p| p.id != leader && p.id != lagging).unwrap().id;
    bed.peer_mut(lagging).kill();
    let mut last_index = 0;
    for i in 0..80 {
        last_index = write_ok(&bed, leader, &format!("s{i}")).await;
    }
    // A follower purges its log behind each snapshot at once (a leader keeps what a
    // replication stream still uses). Make that follower the leader: its log no longer
    // has what the stopped peer lacks, so only a snapshot can bring that peer back.
    let (state, _) = poll_json(&bed.peer(other).url("/api/raft-state"), CATCH_UP, |s| {
        s["purged_index"].as_u64().unwrap_or(0) > 10
    })
    .await
    .unwrap_or_else(|last| panic!("follower {other} never purged its log: {last}"));
    assert!(state["snapshot_index"].as_u64().unwrap() >= 60, "{state}");
    let resp = http_client()
        .post(bed.peer(other).url(&format!("/api/raft/transfer-leadership/{other}")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200, "{}", resp.text().await.unwrap());
    // The old leader must have stepped down, or it could still feed the stopped peer
    // from its unpurged log.
    let running: Vec<_> = bed.running();
    assert_eq!(wait_agreed_leader(&running, ELECTION).await.unwrap(), other);

    bed.peer_mut(lagging).spawn().unwrap();
    bed.peer(lagging).wait_healthy(Duration::from_secs(10)).await.unwrap();
    let s = wait_markers(bed.peer(lagging), 80, CATCH_UP).await;
    assert_eq!(markers(&s).last().map(String::as_str), Some("s79"));
    assert!(s["applied_index"].as_u64().unwrap() >= last_index);
    let log = std::fs::read_to_string(&bed.peer(lagging).log_path).unwrap();
    assert!(
        log.contains("installed snapshot from the leader"),
        "no snapshot install in log:\n{}",
        bed.peer(lagging).log_tail(40)
    );
}

#[tokio::test]
async fn five_peers_majority_keeps_working_and_the_minority_refuses_writes() {
    let mut bed = PeerBed::start(5, |_| {}).await.expect("peers");
    let all: Vec<_> = bed.peers.iter().collect();
    let leader = wait_agreed_leader(&all, ELECTION).await.unwrap();
    write_ok(&bed, leader, "before").await;

    // Cut two peers (one of them the leader, so the majority must elect anew) from the other three.
    let minority_ids: Vec<u64> = {
        let other = bed.peers.iter().find(|p| p.id != leader).unwrap().id;
        vec![leader, other]
    };
    let majority_ids: Vec<u64> =
        bed.peers.iter().map(|p| p.id).filter(|id| !minority_ids.contains(id)).collect();
    let hosts = |ids: &[u64]| ids.iter().map(|id| bed.peer(*id).host.clone()).collect::<Vec<_>>();
    let mut partition = Partition::cut(&hosts(&minority_ids), &hosts(&majority_ids)).expect("nft partition");

    let majority: Vec<_> = majority_ids.iter().map(|id| bed.peer(*id)).collect();
    let new_leader = wait_agreed_leader(&majority, ELECTION).await.unwrap();
    assert!(majority_ids.contains(&new_leader));
    write_ok(&bed, majority_ids[0], "majority-side").await;

    for id in &minority_ids {
        let (status, body) = write_marker(bed.peer(*id), 9000 + *id as u32, "minority-side").await.unwrap();
        assert_eq!(status, 503, "peer {id} accepted a write in the minority: {body}");
        let msg = body["error"].as_str().unwrap_or_default();
        assert!(
            msg.contains("majority") || msg.contains("quorum") || msg.contains("unreachable"),
            "unclear refusal: {msg}"
        );
        let health = http_client().get(bed.peer(*id).url("/api/raft-health")).send().await.unwrap();
        assert_eq!(health.status().as_u16(), 503, "minority peer {id} says it is healthy");
    }

    partition.heal().unwrap();
    for p in &bed.peers {
        let s = wait_markers(p, 2, CATCH_UP).await;
        assert_eq!(markers(&s), vec!["before", "majority-side"], "peer {}", p.id);
    }
    // Stopping two of five outright also leaves a working group.
    let stop: Vec<u64> = bed.peers.iter().map(|p| p.id).filter(|id| *id != new_leader).take(2).collect();
    for id in &stop {
        bed.peer_mut(*id).kill();
    }
    let running: Vec<_> = bed.running();
    let l = wait_agreed_leader(&running, ELECTION).await.unwrap();
    write_ok(&bed, l, "three-of-five").await;
}

#[tokio::test]
async fn membership_changes_and_leadership_transfer_through_the_api() {
    let mut bed = PeerBed::start(3, |_| {}).await.expect("peers");
    let all: Vec<_> = bed.peers.iter().collect();
    let leader = wait_agreed_leader(&all, ELECTION).await.unwrap();
    write_ok(&bed, leader, "one").await;

    // Transfer leadership to another peer, asking a third.
    let target = bed.peers.iter().find(|p| p.id != leader).unwrap().id;
    let asked = bed.peers.iter().find(|p| p.id != leader && p.id != target).unwrap().id;
    let resp = http_client()
        .post(bed.peer(asked).url(&format!("/api/raft/transfer-leadership/{target}")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200, "{}", resp.text().await.unwrap());
    let all: Vec<_> = bed.peers.iter().collect();
    assert_eq!(wait_agreed_leader(&all, ELECTION).await.unwrap(), target);

    // Remove a follower, wipe it, and add it back: it rejoins as learner then voter.
    let victim = bed.peers.iter().find(|p| p.id != target).unwrap().id;
    let resp = http_client()
        .post(bed.peer(victim).url(&format!("/api/raft/remove-peer/{victim}")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200, "{}", resp.text().await.unwrap());
    let state = raft_state(bed.peer(target)).await.unwrap();
    assert_eq!(state["members"].as_array().unwrap().len(), 2, "{state}");
    bed.peer_mut(victim).kill();
    bed.peer(victim).wipe_data().unwrap();
    write_ok(&bed, target, "two").await;
    bed.peer_mut(victim).spawn().unwrap();
    bed.peer(victim).wait_healthy(Duration::from_secs(10)).await.unwrap();
    let host = bed.peer(victim).host.clone();
    let body =
        serde_json::json!({ "id": victim, "raft": format!("{host}:10008"), "http": format!("{host}:3000") });
    let resp =
        http_client().post(bed.peer(target).url("/api/raft/add-peer")).json(&body).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 200, "{}", resp.text().await.unwrap());
    let s = wait_markers(bed.peer(victim), 2, CATCH_UP).await;
    assert_eq!(markers(&s), vec!["one", "two"]);
    let state = raft_state(bed.peer(target)).await.unwrap();
    let members = state["members"].as_array().unwrap();
    assert_eq!(members.len(), 3, "{state}");
    assert!(members.iter().all(|m| m["voter"] == true), "{state}");
    // The audit names who asked for each change of membership, from where; the
    // re-added peer has it too once it has applied the last entry.
    let ops = ["transfer_leadership", "remove_raft_peer", "add_raft_peer"];
    let has_all = |s: &Value| {
        let audit = s["state"]["audit"].as_array().cloned().unwrap_or_default();
        ops.iter().all(|op| audit.iter().any(|e| e["operation"] == *op))
    };
    let (sm, _) = poll_json(&bed.peer(victim).url("/api/raft/state-machine"), CATCH_UP, has_all)
        .await
        .unwrap_or_else(|last| panic!("the audit never reached peer {victim}: {last}"));
    let audit = sm["state"]["audit"].as_array().unwrap();
    for op in ops {
        let e = audit.iter().find(|e| e["operation"] == op).unwrap_or_else(|| panic!("no {op} in {audit:?}"));
        assert_eq!(e["who"], "test-admin", "{e}");
        assert_eq!(e["result"], "ok", "{e}");
        assert!(e["from"].as_str().unwrap().starts_with("127."), "{e}");
    }
}
