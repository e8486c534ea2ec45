//! End to end: automatic failover and planned switchover on real MariaDB and real
//! MySQL 9.7 (semi-sync AFTER_SYNC) with three co-located peers, while a writer records
//! every acknowledged write. After each: exactly one writable master, the others
//! replicate from it, and every acknowledged write is on it. Every test runs once per
//! flavor (`mariadb::…`, `mysql::…`).

use std::time::{Duration, Instant};

use orch_tests::db::Flavor;
use orch_tests::netfault::Partition;
use orch_tests::peer::{get_json, http_client, poll_json, Peer};
use orch_tests::writer::{ids_on, Writer, WriterReport};
use orch_tests::{on_both_flavors, TestBed};
use serde_json::Value;

const ALIAS: &str = "fo";

on_both_flavors!(
    kill_9_of_the_master_fails_over_without_losing_a_write,
    a_killed_master_is_seen_dying_by_the_peer_on_its_host,
    a_hung_master_is_replaced_and_stays_fenced_when_it_wakes_up,
    a_master_host_cut_off_by_a_partition_is_replaced_and_fences_itself,
    a_new_leader_finishes_a_recovery_whose_leader_died,
    planned_switchover_loses_no_write_and_refuses_lagging_or_errant_candidates,
);

async fn start(flavor: Flavor, tune: impl FnOnce(&mut orch_tests::peer::PeerGroupSpec)) -> TestBed {
    let bed = TestBed::start_with(flavor, 3, ALIAS, tune).await.expect("test bed");
    wait_registered(&bed).await;
    bed
}

fn live_peer(bed: &TestBed) -> &Peer {
    bed.live_peer()
}

async fn wait_registered(bed: &TestBed) {
    bed.wait_registered(ALIAS).await.unwrap();
}

async fn wait_new_master(bed: &TestBed, old: &str, timeout: Duration) -> (String, Duration) {
    bed.wait_new_master(ALIAS, old, timeout).await.unwrap_or_else(|e| panic!("{e}"))
}

/// Exactly one writable server among those running (the new master); the other
/// running ones replicate from it with both threads running.
async fn assert_one_master(bed: &TestBed, master: &str, skip: &[usize]) {
    for (i, s) in bed.cluster.servers.iter().enumerate() {
        if skip.contains(&i) {
            continue;
        }
        let ro = s.scalar("SELECT @@read_only").await.unwrap().unwrap();
        if s.key() == master {
            assert_eq!(ro, "0", "new master {master} is read-only");
            continue;
        }
        assert_eq!(ro, "1", "{} is writable besides the master", s.key());
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let st = s.replica_status().await.ok().flatten().unwrap_or_default();
            let want_host = master.split(':').next().unwrap();
            if st.source_host() == Some(want_host) && st.threads_running() {
                break;
            }
            assert!(Instant::now() < deadline, "{} does not replicate from {master}: {:?}", s.key(), st.0);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Waits up to 10 s until server `index` is read-only; fails with `why` otherwise.
async fn wait_read_only(bed: &TestBed, index: usize, why: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let ro = bed.cluster.servers[index].scalar("SELECT @@read_only").await.ok().flatten();
        if ro.as_deref() == Some("1") {
            return;
        }
        assert!(Instant::now() < deadline, "{why}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every acknowledged write is on the new master.
async fn assert_no_lost_write(report: &WriterReport, master: &str) {
    assert!(report.acknowledged.len() > 10, "the writer barely wrote: {report:?}");
    let host = master.split(':').next().unwrap();
    let ids = ids_on(host).await.unwrap();
    let lost: Vec<u64> = report.acknowledged.iter().copied().filter(|id| !ids.contains(id)).collect();
    assert!(lost.is_empty(), "{} acknowledged writes missing on {master}: {lost:?}", lost.len());
    eprintln!(
        "writer: {} acknowledged, {} unknown, none lost; longest gap {:?}",
        report.acknowledged.len(),
        report.unknown.len(),
        report.longest_gap
    );
}

async fn recovery(bed: &TestBed, id: u64) -> Value {
    let r = get_json(&live_peer(bed).url("/api/recoveries")).await.unwrap();
    r["recoveries"].as_array().unwrap().iter().find(|x| x["id"] == id).cloned().expect("recovery")
}

fn writer(bed: &TestBed) -> Writer {
    let hosts = bed.cluster.servers.iter().map(|s| s.host.clone()).collect();
    Writer::start(hosts, Duration::from_millis(5), Duration::from_secs(2))
}

async fn kill_9_of_the_master_fails_over_without_losing_a_write(flavor: Flavor) {
    let mut bed = start(flavor, |_| {}).await;
    let old = bed.cluster.master().key();
    let w = writer(&bed);
    tokio::time::sleep(Duration::from_millis(700)).await;
    bed.cluster.servers[0].kill();
    let (new_master, took) = wait_new_master(&bed, &old, Duration::from_secs(15)).await;
    eprintln!("kill -9: new master {new_master} recorded after {took:?}");
    // On every peer the alias follows the recorded master at once: the new master and
    // its replicas under the alias, the dead old master beside them as such.
    for p in &bed.peers[1..] {
        let url = p.url(&format!("/api/cluster/{ALIAS}"));
        let shown = |c: &Value| {
            let role_of = |k: &str| {
                c["instances"]
                    .as_array()
                    .and_then(|a| a.iter().find(|i| i["key"] == k))
                    .map(|i| i["role"].clone())
            };
            c["master"] == new_master.as_str()
                && role_of(&new_master) == Some("master".into())
                && role_of(&old) == Some("former_master".into())
                && c["instances"].as_array().is_some_and(|a| a.len() == 3)
        };
        let (_, after) = poll_json(&url, Duration::from_secs(2), shown)
            .await
            .unwrap_or_else(|last| panic!("peer {} does not show {ALIAS} led by {new_master}: {last}", p.id));
        eprintln!("peer {}: /api/cluster/{ALIAS} named the new master {after:?} after Raft did", p.id);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let report = w.stop().await;
    assert_one_master(&bed, &new_master, &[0]).await;
    assert_no_lost_write(&report, &new_master).await;
    let r = recovery(&bed, 1).await;
    assert_eq!(r["success"], true, "{r}");
    assert_eq!(r["failed_master"], old.as_str());
    assert!(r["reason"].as_str().unwrap().starts_with("DeadMaster"), "{r}");

    // The role health checks a load balancer uses follow the new roles.
    bed.wait_health_roles(&new_master, &[0], Duration::from_secs(5)).await.unwrap();

    // The old master comes back: never writable; it rejoins, or stays fenced with
    // errant GTIDs (a commit it wrote to its binlog but no replica received).
    bed.cluster.servers[0].start().await.unwrap();
    let old_server = &bed.cluster.servers[0];
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut rejoined = false;
    while Instant::now() < deadline {
        let ro = old_server.scalar("SELECT @@read_only").await.unwrap();
        let status = old_server.replica_status().await.ok().flatten().unwrap_or_default();
        if ro.as_deref() == Some("1") && status.source_host() == Some(new_master.split(':').next().unwrap()) {
            rejoined = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let ro = old_server.scalar("SELECT @@read_only").await.unwrap();
    assert_eq!(ro.as_deref(), Some("1"), "the old master came back writable and stayed so");
    eprintln!(
        "old master after restart: {}",
        if rejoined { "rejoined as a replica" } else { "fenced (errant GTIDs)" }
    );
}

/// A killed mysqld keeps its sockets open until the kernel has freed its memory
/// (seconds for a large buffer pool). Here its port is silenced as it is killed, so
/// nothing over the network tells a death from a hang until the hang window: the
/// recovery comes from the peer on its host, which sees the process exit in `/proc`.
async fn a_killed_master_is_seen_dying_by_the_peer_on_its_host(flavor: Flavor) {
    let mut bed = start(flavor, |_| {}).await;
    let old = bed.cluster.master().key();
    let w = writer(&bed);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut silent = Partition::silence(&bed.cluster.servers[0].host, 3306).expect("nft");
    bed.cluster.servers[0].kill();
    let (new_master, took) = wait_new_master(&bed, &old, Duration::from_secs(15)).await;
    eprintln!("kill -9 behind a silent port: new master {new_master} recorded after {took:?}");
    let report = w.stop().await;
    silent.heal().unwrap();
    assert_one_master(&bed, &new_master, &[0]).await;
    assert_no_lost_write(&report, &new_master).await;
    let r = recovery(&bed, 1).await;
    assert_eq!(r["success"], true, "{r}");
    let reason = r["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("DeadMaster")
            && reason.contains("its mysqld process exited, seen by the peer on its host"),
        "the recovery did not come from the exit seen on the master's host: {reason}"
    );
}

async fn a_hung_master_is_replaced_and_stays_fenced_when_it_wakes_up(flavor: Flavor) {
    let bed = start(flavor, |_| {}).await;
    let old = bed.cluster.master().key();
    let w = writer(&bed);
    tokio::time::sleep(Duration::from_millis(700)).await;
    bed.cluster.servers[0].signal(libc::SIGSTOP);
    let (new_master, took) = wait_new_master(&bed, &old, Duration::from_secs(20)).await;
    eprintln!("SIGSTOP: new master {new_master} recorded after {took:?}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    bed.cluster.servers[0].signal(libc::SIGCONT);
    // Awake again, it must be made read-only and never take a write acknowledged.
    wait_read_only(&bed, 0, "the woken old master stays writable").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let report = w.stop().await;
    assert_one_master(&bed, &new_master, &[0]).await;
    assert_no_lost_write(&report, &new_master).await;
}

async fn a_master_host_cut_off_by_a_partition_is_replaced_and_fences_itself(flavor: Flavor) {
    let bed = start(flavor, |_| {}).await;
    let old = bed.cluster.master().key();
    let w = writer(&bed);
    tokio::time::sleep(Duration::from_millis(700)).await;
    let mut cut = Partition::isolate(&bed.hosts, 1).expect("partition");
    let (new_master, took) = wait_new_master(&bed, &old, Duration::from_secs(20)).await;
    eprintln!("partition: new master {new_master} recorded after {took:?}");
    // On the minority side, the old master's own peer makes it read-only.
    wait_read_only(&bed, 0, "the cut-off master was not fenced by its own peer").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let report = w.stop().await;
    cut.heal().unwrap();
    assert_one_master(&bed, &new_master, &[0]).await;
    assert_no_lost_write(&report, &new_master).await;
}

async fn a_new_leader_finishes_a_recovery_whose_leader_died(flavor: Flavor) {
    // The pre-failover hook holds every recovery for 2 s: time to kill its leader.
    let mut bed = start(flavor, |spec| spec.hooks = vec![r#"pre_failover = ["sleep 2"]"#.into()]).await;
    let old = bed.cluster.master().key();
    let w = writer(&bed);
    tokio::time::sleep(Duration::from_millis(500)).await;
    bed.cluster.servers[0].kill();
    // Wait for the intent in Raft, then kill the leader that recorded it.
    let url = live_peer(&bed).url("/api/recoveries");
    let (rec, _) = poll_json(&url, Duration::from_secs(15), |r| {
        r["recoveries"].as_array().is_some_and(|a| a.iter().any(|x| x["ended_unix_ms"].is_null()))
    })
    .await
    .unwrap_or_else(|last| panic!("no recovery intent: {last}"));
    eprintln!("intent: {}", rec["recoveries"][0]);
    let leader =
        get_json(&live_peer(&bed).url("/api/raft-state")).await.unwrap()["leader_id"].as_u64().unwrap();
    bed.peers[leader as usize - 1].kill();
    eprintln!("killed the Raft leader, peer {leader}, during the recovery");
    let (new_master, took) = wait_new_master(&bed, &old, Duration::from_secs(30)).await;
    eprintln!("new master {new_master} after {took:?}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let report = w.stop().await;
    assert_one_master(&bed, &new_master, &[0]).await;
    assert_no_lost_write(&report, &new_master).await;
    let r = recovery(&bed, 1).await;
    assert_eq!(r["success"], true, "the new leader did not finish the recovery: {r}");
}

async fn takeover(bed: &TestBed, target: &str) -> (u16, Value) {
    let resp = http_client()
        .post(live_peer(bed).url(&format!("/api/graceful-master-takeover/{ALIAS}/{target}/3306")))
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap())
}

async fn planned_switchover_loses_no_write_and_refuses_lagging_or_errant_candidates(flavor: Flavor) {
    let bed = start(flavor, |spec| spec.recovery_settings = vec!["max_lag_on_failover_s = 5".into()]).await;
    let p = live_peer(&bed);

    // Replica 2 delayed by 30 s: lagging beyond the 5 s limit, refused.
    let target = &bed.cluster.servers[1];
    target.exec(&flavor.delay_sql(30)).await.unwrap();
    bed.cluster.master().exec("INSERT INTO app.writes (id) VALUES (7)").await.unwrap();
    let lag_url = p.url(&format!("/api/instance/{}/3306", target.host));
    poll_json(&lag_url, Duration::from_secs(20), |i| {
        i["last_probe"]["replication"]["seconds_behind"].as_u64().is_some_and(|s| s > 5)
    })
    .await
    .unwrap_or_else(|last| panic!("replica never lagged: {last}"));
    let (status, body) = takeover(&bed, &target.host).await;
    assert_eq!(status, 409, "{body}");
    assert!(body["error"].as_str().unwrap().contains("lagging"), "{body}");
    assert_eq!(bed.cluster.master().scalar("SELECT @@read_only").await.unwrap().as_deref(), Some("0"));
    target.exec(&flavor.delay_sql(0)).await.unwrap();
    poll_json(&lag_url, Duration::from_secs(20), |i| i["last_probe"]["replication"]["seconds_behind"] == 0)
        .await
        .unwrap_or_else(|last| panic!("replica never caught up: {last}"));

    // A switchover to replica 2 while the writer runs.
    let w = writer(&bed);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (status, body) = takeover(&bed, &target.host).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["recovery"]["new_master"], target.key().as_str(), "{body}");
    assert_eq!(body["recovery"]["requested_by"], "test-admin", "{body}");
    eprintln!("switchover steps: {}", body["recovery"]["steps"]);
    tokio::time::sleep(Duration::from_millis(700)).await;
    let report = w.stop().await;
    assert_one_master(&bed, &target.key(), &[]).await;
    assert_no_lost_write(&report, &target.key()).await;
    eprintln!("switchover write gap: {:?}", report.longest_gap);

    // An errant transaction on replica 3 (written locally as root, through read_only): refused.
    let errant = &bed.cluster.servers[2];
    errant.write_locally("INSERT INTO app.writes (id) VALUES (42)").await.unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (status, body) = takeover(&bed, &errant.host).await;
    assert_eq!(status, 409, "{body}");
    assert!(body["error"].as_str().unwrap().contains("errant"), "{body}");
    assert_eq!(
        target.scalar("SELECT @@read_only").await.unwrap().as_deref(),
        Some("0"),
        "master stays writable"
    );
}
