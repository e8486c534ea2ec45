//! End to end: the AWS side of failover on a real `moto_server`. Three database hosts
//! with co-located peers manage the NLB target groups and the DynamoDB table; the
//! application writes through the NLB stand-in, which health-checks the peers'
//! `/health/primary` and `/health/replica` like an NLB. The `kill -9` test runs on
//! both flavors, the AWS-only ones on MariaDB.

use std::collections::BTreeSet;
use std::process::Command;
use std::time::{Duration, Instant};

use orch_tests::aws::{self, ClusterResources, Moto};
use orch_tests::db::Flavor;
use orch_tests::hosts::HostBlock;
use orch_tests::peer::{get_json, poll_json};
use orch_tests::process::Lifetime;
use orch_tests::writer::{ids_on, Writer};
use orch_tests::{on_both_flavors, test_dir, AwsBed};
use orchestrator::aws::mirror::{Fence, MasterLock};
use orchestrator::aws::{LockTable, PutOutcome};

const ALIAS: &str = "aws";

on_both_flavors!(kill_9_moves_the_target_groups_and_the_master_lock);

async fn start(flavor: Flavor) -> AwsBed {
    let bed = AwsBed::start(flavor, 3, ALIAS, |spec| {
        if let Some(aws) = spec.aws.as_mut() {
            aws.settings.push("reconcile_interval_ms = 1000".into());
        }
    })
    .await
    .expect("AWS test bed");
    let started = Instant::now();
    bed.bed.wait_registered(ALIAS).await.unwrap();
    eprintln!("cluster registered in Raft after {:?}", started.elapsed());
    bed
}

fn hosts(bed: &AwsBed) -> Vec<String> {
    bed.bed.cluster.servers.iter().map(|s| s.host.clone()).collect()
}

/// Waits until the groups hold exactly `write` and `read`; returns how long it took.
async fn converged(bed: &AwsBed, write: &str, read: &[&str], timeout: Duration) -> Duration {
    aws::wait_members(&bed.clients, &bed.resources, &[write], read, timeout)
        .await
        .unwrap_or_else(|last| panic!("target groups never held write {write}, read {read:?}; last: {last}"))
}

/// The target group's instance ids as the `aws` CLI sees them (an independent client).
fn cli_members(moto: &Moto, group_arn: &str) -> BTreeSet<String> {
    let out = Command::new("aws")
        .args(["elbv2", "describe-target-health", "--target-group-arn", group_arn, "--output", "json"])
        .args(["--endpoint-url", &moto.endpoint, "--region", aws::REGION])
        .env("AWS_ACCESS_KEY_ID", aws::ACCESS_KEY_ID)
        .env("AWS_SECRET_ACCESS_KEY", aws::SECRET_ACCESS_KEY)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .output()
        .expect("the aws CLI runs (pip install awscli)");
    assert!(out.status.success(), "aws CLI: {}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("aws CLI JSON");
    v["TargetHealthDescriptions"]
        .as_array()
        .expect("TargetHealthDescriptions")
        .iter()
        .filter(|d| d["TargetHealth"]["State"] != "draining")
        .map(|d| d["Target"]["Id"].as_str().unwrap().to_string())
        .collect()
}

fn ids(resources: &ClusterResources, hosts: &[&str]) -> BTreeSet<String> {
    hosts.iter().map(|h| resources.id_of(h).to_string()).collect()
}

async fn fencing_epoch(bed: &AwsBed) -> u64 {
    let s = get_json(&bed.bed.live_peer().url("/api/raft/state-machine")).await.unwrap();
    s["state"]["fencing_epochs"][ALIAS].as_u64().unwrap_or(0)
}

async fn kill_9_moves_the_target_groups_and_the_master_lock(flavor: Flavor) {
    let mut bed = start(flavor).await;
    let h = hosts(&bed);
    let took = converged(&bed, &h[0], &[&h[1], &h[2]], Duration::from_secs(20)).await;
    eprintln!("target groups filled {took:?} after registration");
    bed.bed.wait_health_roles(&bed.bed.cluster.master().key(), &[], Duration::from_secs(10)).await.unwrap();
    wait_master_lock(&bed, &bed.bed.cluster.master().key()).await;

    // A downtimed replica leaves the read group, and comes back when the downtime ends.
    let client = orch_tests::peer::http_client();
    let peer = bed.bed.live_peer();
    let begin = format!("/api/begin-downtime/{}/3306/test/maintenance/600", h[2]);
    assert!(client.post(peer.url(&begin)).send().await.unwrap().status().is_success());
    converged(&bed, &h[0], &[&h[1]], Duration::from_secs(10)).await;
    let end = format!("/api/end-downtime/{}/3306", h[2]);
    assert!(client.post(peer.url(&end)).send().await.unwrap().status().is_success());
    converged(&bed, &h[0], &[&h[1], &h[2]], Duration::from_secs(10)).await;

    // The application writes through the NLB stand-in.
    let w = Writer::start(vec![bed.nlb_host().to_string()], Duration::from_millis(5), Duration::from_secs(2));
    let deadline = Instant::now() + Duration::from_secs(10);
    while w.acknowledged() < 20 {
        assert!(Instant::now() < deadline, "no write went through the NLB stand-in");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let old = bed.bed.cluster.master().key();
    let killed = Instant::now();
    bed.bed.cluster.servers[0].kill();
    let (new_master, took) = bed.bed.wait_new_master(ALIAS, &old, Duration::from_secs(15)).await.unwrap();
    eprintln!("kill -9: new master {new_master} recorded after {took:?}");
    let new_host = new_master.split(':').next().unwrap().to_string();
    let other = h[1..].iter().find(|x| **x != new_host).unwrap().clone();
    converged(&bed, &new_host, &[&other], Duration::from_secs(20)).await;
    eprintln!(
        "kill -9: write group holds only {new_host}, read group the other replica, {:?} after the kill",
        killed.elapsed()
    );

    // An independent client sees the same.
    assert_eq!(
        cli_members(&bed.moto, &bed.resources.write_target_group_arn),
        ids(&bed.resources, &[&new_host])
    );
    assert_eq!(cli_members(&bed.moto, &bed.resources.read_target_group_arn), ids(&bed.resources, &[&other]));
    bed.bed.wait_health_roles(&new_master, &[0], Duration::from_secs(10)).await.unwrap();

    // Writes resume through the NLB on the new master, and none acknowledged is lost.
    let before = w.acknowledged();
    let deadline = Instant::now() + Duration::from_secs(15);
    while w.acknowledged() < before + 20 {
        assert!(Instant::now() < deadline, "writes did not resume through the NLB stand-in");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let report = w.stop().await;
    let on_master = ids_on(&new_host).await.unwrap();
    let lost: Vec<u64> = report.acknowledged.iter().copied().filter(|id| !on_master.contains(id)).collect();
    assert!(lost.is_empty(), "{} acknowledged writes missing on {new_master}: {lost:?}", lost.len());
    eprintln!(
        "writer through the NLB: {} acknowledged, none lost, longest gap {:?}",
        report.acknowledged.len(),
        report.longest_gap
    );

    // DynamoDB mirrors the decision under its fencing epoch...
    let epoch = fencing_epoch(&bed).await;
    assert!(epoch >= 1);
    let lock = wait_master_lock(&bed, &new_master).await;
    assert_eq!(lock.fence.epoch, epoch);
    assert!(lock.is_live(orchestrator::unix_millis_now() / 1000), "{lock:?}");

    // ...and a deposed leader's late write (the decision before this one) is refused.
    let stale = MasterLock {
        holder: old.clone(),
        leader_id: 9,
        fence: Fence { epoch: epoch - 1, raft_term: lock.fence.raft_term + 5 },
        updated_at: 0,
        expires_at: i64::MAX,
    };
    let outcome = bed.clients.put_master_lock(&bed.resources.table, &stale).await.unwrap();
    assert_eq!(outcome, PutOutcome::Rejected { stored: Some(lock.fence) });
    let after = bed.clients.get_master_lock(&bed.resources.table).await.unwrap().unwrap();
    assert_eq!(after.holder, new_master, "the stale write replaced the lock");

    // The leader measured the master change reaching the write group.
    let converges = metric_sum(&bed, "orchestrator_aws_write_group_converge_seconds_count").await;
    assert!(converges >= 1.0, "no write-group convergence measured");
}

/// Waits up to 10 s until DynamoDB's `master_lock` names `holder`.
async fn wait_master_lock(bed: &AwsBed, holder: &str) -> MasterLock {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let lock = bed.clients.get_master_lock(&bed.resources.table).await.unwrap();
        match lock {
            Some(lock) if lock.holder == holder => return lock,
            _ if Instant::now() > deadline => panic!("master_lock never named {holder}: {lock:?}"),
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// The sum of a metric's samples over all running peers.
async fn metric_sum(bed: &AwsBed, name: &str) -> f64 {
    let mut sum = 0.0;
    for p in bed.bed.peers.iter().filter(|p| p.is_running()) {
        let text = orch_tests::peer::http_client()
            .get(p.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        sum += text
            .lines()
            .filter(|l| l.starts_with(name))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>();
    }
    sum
}

#[tokio::test]
async fn an_aws_outage_delays_only_the_target_groups() {
    let mut bed = start(Flavor::Mariadb).await;
    let h = hosts(&bed);
    converged(&bed, &h[0], &[&h[1], &h[2]], Duration::from_secs(20)).await;

    // AWS stops answering (calls hang), then the master dies.
    bed.moto.pause();
    let old = bed.bed.cluster.master().key();
    bed.bed.cluster.servers[0].kill();
    let (new_master, took) = bed.bed.wait_new_master(ALIAS, &old, Duration::from_secs(15)).await.unwrap();
    eprintln!("AWS down: new master {new_master} recorded after {took:?}");
    let new_index = bed.bed.cluster.servers.iter().position(|s| s.key() == new_master).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let ro = bed.bed.cluster.servers[new_index].scalar("SELECT @@read_only").await.unwrap();
        if ro.as_deref() == Some("0") {
            break;
        }
        assert!(Instant::now() < deadline, "the new master never became writable while AWS was down");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The peer asked may apply the outcome a moment after the one that showed it.
    let ended = |r: &serde_json::Value| {
        r["recoveries"].as_array().and_then(|a| a.last()).is_some_and(|x| !x["ended_unix_ms"].is_null())
    };
    let (recoveries, _) =
        poll_json(&bed.bed.live_peer().url("/api/recoveries"), Duration::from_secs(5), ended)
            .await
            .unwrap_or_else(|last| panic!("the recovery never ended while AWS was down: {last}"));
    let last = recoveries["recoveries"].as_array().unwrap().last().cloned().unwrap();
    assert_eq!(last["success"], true, "the recovery waited on AWS or failed: {last}");
    eprintln!("AWS down: new master writable {took:?} after the kill; recovery done without AWS");

    // Still down: the controller keeps failing (each call times out after 3 s), and
    // says so.
    let url = bed.bed.live_peer().url("/api/aws");
    let (status, _) = poll_json(&url, Duration::from_secs(15), |s| s[ALIAS]["last_error"].is_string())
        .await
        .unwrap_or_else(|last| panic!("/api/aws never reported the outage: {last}"));
    assert_eq!(status[ALIAS]["converged"], false, "{status}");

    bed.moto.resume();
    let resumed = Instant::now();
    let new_host = new_master.split(':').next().unwrap().to_string();
    let other = h[1..].iter().find(|x| **x != new_host).unwrap().clone();
    let took = converged(&bed, &new_host, &[&other], Duration::from_secs(30)).await;
    eprintln!(
        "AWS back: target groups converged {took:?} (polled), {:?} after it returned",
        resumed.elapsed()
    );
    let errors = metric_sum(&bed, "orchestrator_aws_call_errors_total").await;
    assert!(errors > 0.0, "the outage left no trace in orchestrator_aws_call_errors_total");
}

/// The fence on its own, against moto's DynamoDB: writes from an older decision or an
/// older leader of the same decision are refused; a refresh or a newer one passes.
#[tokio::test]
async fn master_lock_refuses_a_deposed_leader() {
    let block = HostBlock::reserve(1).unwrap();
    let dir = test_dir("orch-moto-").unwrap();
    let moto =
        Moto::start(&block.host(1), dir.path(), block.state_dir(), Lifetime::Test, None).await.unwrap();
    let clients = aws::clients(&moto.endpoint).await;
    let resources = aws::provision(&moto.endpoint, "fence", &[block.host(1)]).await.unwrap();
    let table = &resources.table;
    let lock = |holder: &str, epoch, raft_term| MasterLock {
        holder: holder.into(),
        leader_id: 1,
        fence: Fence { epoch, raft_term },
        updated_at: 1,
        expires_at: 2,
    };
    assert_eq!(clients.put_master_lock(table, &lock("a:3306", 2, 5)).await.unwrap(), PutOutcome::Written);
    let stored = Some(Fence { epoch: 2, raft_term: 5 });
    for (holder, epoch, term) in [("old:3306", 1, 9), ("old:3306", 2, 4)] {
        assert_eq!(
            clients.put_master_lock(table, &lock(holder, epoch, term)).await.unwrap(),
            PutOutcome::Rejected { stored },
            "epoch {epoch} term {term}"
        );
    }
    assert_eq!(clients.get_master_lock(table).await.unwrap().unwrap().holder, "a:3306");
    for (holder, epoch, term) in [("a:3306", 2, 5), ("a:3306", 2, 6), ("b:3306", 3, 1)] {
        assert_eq!(
            clients.put_master_lock(table, &lock(holder, epoch, term)).await.unwrap(),
            PutOutcome::Written
        );
    }
    let now = clients.get_master_lock(table).await.unwrap().unwrap();
    assert_eq!((now.holder.as_str(), now.fence), ("b:3306", Fence { epoch: 3, raft_term: 1 }));
    // TTL is not trusted to delete: readers check expires_at.
    assert!(!now.is_live(3));
}
