//! `provisioner bootstrap` end to end, on both flavors: hosts that start with nothing
//! but their facts (and the cluster's AWS side in moto) become a replicating cluster
//! with a Raft group, filled target groups and a `master_lock`; more hosts join (the
//! first replicas copy a donor, the later ones seed from the latest backup); a
//! rerun on a finished node changes nothing; an instance terminated in the Auto
//! Scaling group leaves Raft. Two hosts racing on an empty table make exactly one
//! master, also when the lock holder dies mid-bootstrap. Stopping the master host's
//! peer switches over and leaves the group with no acknowledged write lost; the
//! master's instance is protected from scale-in (and the protection moves); a replica
//! whose mysqld stays dead is marked `Unhealthy`.

use std::time::{Duration, Instant};

use orch_tests::bootstrap::{BootstrapBed, LOCK_LEASE_S, REPLACE_AFTER_S};
use orch_tests::db::Flavor;
use orch_tests::on_both_flavors;

on_both_flavors!(three_bare_hosts_become_a_cluster_and_two_more_join);

/// Waits until host `i` holds row `id` of `app.t` with `want`.
async fn wait_row(bed: &BootstrapBed, i: usize, id: u32, want: &str) {
    let started = Instant::now();
    let mut last = String::new();
    while started.elapsed() < Duration::from_secs(20) {
        match bed.query(i, &format!("SELECT v FROM app.t WHERE id = {id}")).await {
            Ok(Some(v)) if v == want => return,
            Ok(v) => last = format!("{v:?}"),
            Err(e) => last = format!("{e:#}"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("host {i} lacks row {id} ({want}) after 20 s: {last}");
}

/// Waits until host `i`'s peer reports exactly `want` (hosts) as voters and no learner.
async fn wait_voters(bed: &BootstrapBed, i: usize, want: &[String]) {
    let started = Instant::now();
    let mut last = String::new();
    while started.elapsed() < Duration::from_secs(30) {
        match bed.raft_members(i).await {
            Ok((voters, learners)) if voters == want && learners.is_empty() => return,
            Ok((voters, learners)) => last = format!("voters {voters:?}, learners {learners:?}"),
            Err(e) => last = format!("{e:#}"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("{} Raft voters not reached within 30 s: {last}", want.len());
}

/// Polls `check` every 200 ms until it holds, for at most `limit`; returns how long.
async fn wait_for<F, Fut>(what: &str, limit: Duration, mut check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<bool, String>>,
{
    let started = Instant::now();
    let mut last = String::from("not checked yet");
    while started.elapsed() < limit {
        match check().await {
            Ok(true) => return started.elapsed(),
            Ok(false) => last = "not yet".into(),
            Err(e) => last = e,
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("{what}: not within {limit:?} ({last})");
}

/// Waits until host `i`'s peer shows an audit naming all of `words`.
async fn wait_audit(bed: &BootstrapBed, i: usize, words: &[&str]) {
    wait_for(&format!("audit with {words:?}"), Duration::from_secs(10), || async move {
        let audit = bed.api(i, "/api/audit").await.map_err(|e| format!("{e:#}"))?.to_string();
        Ok(words.iter().all(|w| audit.contains(w)))
    })
    .await;
}

/// Waits until host `i`'s instance is (or is not) protected from scale-in.
async fn wait_protection(bed: &BootstrapBed, i: usize, protected: bool) -> Duration {
    wait_for(&format!("host {i} protected = {protected}"), Duration::from_secs(20), || async move {
        let (_, _, p) = bed.group_instance(i).await.map_err(|e| format!("{e:#}"))?;
        Ok(p == protected)
    })
    .await
}

async fn three_bare_hosts_become_a_cluster_and_two_more_join(flavor: Flavor) {
    let bed = BootstrapBed::start(flavor, 5).await.expect("bed");
    eprintln!("bootstrap bed in {}", bed.path().display());
    let started = Instant::now();
    // The first three at once: the lock takes them one by one.
    let (a, b, c) = tokio::join!(bed.bootstrap_ok(1), bed.bootstrap_ok(2), bed.bootstrap_ok(3));
    let outputs = [a.expect("host 1"), b.expect("host 2"), c.expect("host 3")];
    eprintln!("three hosts bootstrapped in {:?}", started.elapsed());
    let masters: Vec<usize> = outputs
        .iter()
        .enumerate()
        .filter(|(_, o)| o.contains("is the cluster's first master"))
        .map(|(i, _)| i + 1)
        .collect();
    assert_eq!(masters.len(), 1, "exactly one first master: {outputs:#?}");
    let m = masters[0];
    let master = format!("{}:3306", bed.hosts[m - 1]);
    assert_eq!(bed.master_holder().await.unwrap().as_deref(), Some(master.as_str()));
    for (i, out) in outputs.iter().enumerate() {
        if i + 1 != m {
            assert!(out.contains(&format!("replicating from {master}")), "host {}: {out}", i + 1);
        }
    }

    // Data written on the master reaches the replicas.
    let mut conn = bed.root(m).await.unwrap();
    use mysql_async::prelude::Queryable;
    conn.query_drop("CREATE DATABASE app; CREATE TABLE app.t (id INT PRIMARY KEY, v TEXT)").await.unwrap();
    conn.query_drop("INSERT INTO app.t VALUES (1, 'before the joiners')").await.unwrap();
    drop(conn);
    for i in (1..=3).filter(|i| *i != m) {
        wait_row(&bed, i, 1, "before the joiners").await;
    }

    // Three voters, the target groups filled by the peers.
    wait_voters(&bed, m, &bed.hosts[..3]).await;
    let replicas: Vec<&str> = (1..=3).filter(|i| *i != m).map(|i| bed.hosts[i - 1].as_str()).collect();
    orch_tests::aws::wait_members(
        &bed.clients,
        &bed.resources,
        &[bed.hosts[m - 1].as_str()],
        &replicas,
        Duration::from_secs(30),
    )
    .await
    .expect("target groups: write = master, read = replicas");

    // A full backup (of a replica), then more writes: the joiners seed from the backup
    // and catch up from the master's binary log.
    let backup = bed.full_backup(m).await.expect("a full backup");
    eprintln!("backup: {}", backup["result"]);
    let mut conn = bed.root(m).await.unwrap();
    conn.query_drop("INSERT INTO app.t VALUES (20, 'after the backup')").await.unwrap();
    drop(conn);

    // Two more join: five voters, both replicating with the first three's data.
    let (d, e) = tokio::join!(bed.bootstrap_ok(4), bed.bootstrap_ok(5));
    for (host, out) in [(4, d.expect("host 4")), (5, e.expect("host 5"))] {
        assert!(out.contains("seeded from backup full"), "host {host} seeds from the backup: {out}");
    }
    for i in [4, 5] {
        wait_row(&bed, i, 1, "before the joiners").await;
        wait_row(&bed, i, 20, "after the backup").await;
    }
    let mut conn = bed.root(m).await.unwrap();
    conn.query_drop("INSERT INTO app.t VALUES (2, 'after')").await.unwrap();
    drop(conn);
    for i in (1..=5).filter(|i| *i != m) {
        wait_row(&bed, i, 2, "after").await;
    }
    wait_voters(&bed, m, &bed.hosts).await;

    // A second run on a finished node changes nothing.
    let config = bed.layout(2).orchestrator_config;
    let before = std::fs::metadata(&config).unwrap().modified().unwrap();
    let again = bed.bootstrap_ok(2).await.unwrap();
    assert!(again.contains("nothing to do"), "{again}");
    assert_eq!(std::fs::metadata(&config).unwrap().modified().unwrap(), before);

    // Each member shows its instance; the master's is protected from scale-in.
    let state = bed.api(m, "/api/raft-state").await.unwrap();
    for member in state["members"].as_array().unwrap() {
        let host = member["raft"].as_str().unwrap().rsplit_once(':').unwrap().0;
        assert_eq!(member["instance_id"].as_str(), Some(bed.resources.id_of(host)), "{member}");
        assert_eq!(member["instance_state"].as_str(), Some("InService, Healthy"), "{member}");
    }
    wait_protection(&bed, m, true).await;

    // An instance terminated in the group (the host gone at once) leaves Raft.
    let gone = (1..=5).rev().find(|i| *i != m).unwrap();
    bed.kill_host(gone);
    bed.clients
        .autoscaling
        .terminate_instance_in_auto_scaling_group()
        .instance_id(bed.resources.id_of(&bed.hosts[gone - 1]))
        .should_decrement_desired_capacity(true)
        .send()
        .await
        .expect("TerminateInstanceInAutoScalingGroup");
    let terminated = Instant::now();
    let rest: Vec<String> = (1..=5).filter(|i| *i != gone).map(|i| bed.hosts[i - 1].clone()).collect();
    wait_voters(&bed, m, &rest).await;
    eprintln!(
        "terminated instance left Raft {:?} after TerminateInstanceInAutoScalingGroup",
        terminated.elapsed()
    );
    // The removal's audit entry is committed just after the membership change.
    wait_audit(&bed, m, &["orchestrator:fleet", "remove_raft_peer"]).await;
    eprintln!("whole test in {:?}", started.elapsed());
}

/// Two hosts bootstrap at once against an empty table, ten times: exactly one claims
/// the master each time. In the last round whichever takes the lock first is killed
/// at once (with what it started): the other takes over once the lock's lease has run
/// out and becomes the master; the killed one, run again, becomes its replica.
#[tokio::test]
async fn racing_bootstraps_make_exactly_one_master() {
    use tokio::io::AsyncBufReadExt;
    for round in 1..=10 {
        let bed = BootstrapBed::start(Flavor::Mariadb, 2).await.expect("bed");
        let kill_the_holder = round == 10;
        let mut children = Vec::new();
        let mut lines = Vec::new();
        for i in [1, 2] {
            let mut child =
                tokio::process::Command::from(bed.command(i).unwrap()).kill_on_drop(true).spawn().unwrap();
            lines.push(tokio::io::BufReader::new(child.stdout.take().unwrap()).lines());
            children.push(child);
        }
        let (mut first, mut second) = {
            let mut it = lines.into_iter();
            (it.next().unwrap(), it.next().unwrap())
        };
        let mut outputs = [String::new(), String::new()];
        let mut open = [true, true];
        let mut killed: Option<(usize, Instant)> = None;
        while open.iter().any(|o| *o) {
            let (i, line) = tokio::select! {
                l = first.next_line(), if open[0] => (0, l),
                l = second.next_line(), if open[1] => (1, l),
            };
            match line {
                Ok(Some(line)) => {
                    if kill_the_holder && killed.is_none() && line.contains("took the lock") {
                        children[i].kill().await.unwrap();
                        bed.kill_host(i + 1);
                        killed = Some((i, Instant::now()));
                        open[i] = false;
                    }
                    outputs[i] += &line;
                    outputs[i].push('\n');
                }
                _ => open[i] = false,
            }
        }
        let mut succeeded = Vec::new();
        for (i, child) in children.iter_mut().enumerate() {
            if killed.is_some_and(|(k, _)| k == i) {
                continue;
            }
            let status = child.wait().await.unwrap();
            assert!(status.success(), "round {round}, host {}: {}", i + 1, outputs[i]);
            succeeded.push(i);
        }
        let masters: Vec<usize> =
            (0..2).filter(|i| outputs[*i].contains("is the cluster's first master")).collect();
        assert_eq!(masters.len(), 1, "round {round}: {outputs:#?}");
        let master = format!("{}:3306", bed.hosts[masters[0]]);
        assert_eq!(bed.master_holder().await.unwrap(), Some(master.clone()), "round {round}");
        if let Some((k, at)) = killed {
            let other = 1 - k;
            assert_eq!(masters[0], other, "the survivor is the master: {outputs:#?}");
            assert!(
                outputs[other].contains("expired"),
                "it took the lock once it expired: {}",
                outputs[other]
            );
            assert!(at.elapsed() >= Duration::from_secs(LOCK_LEASE_S - 1));
            let again = bed.bootstrap_ok(k + 1).await.unwrap();
            assert!(again.contains(&format!("replicating from {master}")), "{again}");
            eprintln!(
                "round {round}: the lock holder was killed; the other became master, the first its replica"
            );
        } else {
            let replica = 1 - masters[0];
            assert!(outputs[replica].contains(&format!("replicating from {master}")), "{}", outputs[replica]);
            eprintln!("round {round}: one master");
        }
    }
}

/// A three-node MariaDB cluster from bare hosts; its master host's peer is stopped
/// (SIGTERM, as `systemctl stop` does) while a writer runs: it switches over, hands
/// leadership over if it led, and leaves the group; no acknowledged write is lost and
/// the scale-in protection moves to the new master. Then the old master's mysqld (now
/// a replica) dies for good: after `replace_after_s` its instance is `Unhealthy`.
#[tokio::test]
async fn the_master_host_leaves_and_a_dead_replica_is_marked_unhealthy() {
    use mysql_async::prelude::Queryable;
    let bed = BootstrapBed::start(Flavor::Mariadb, 3).await.expect("bed");
    eprintln!("bootstrap bed in {}", bed.path().display());
    let (a, b, c) = tokio::join!(bed.bootstrap_ok(1), bed.bootstrap_ok(2), bed.bootstrap_ok(3));
    let outputs = [a.expect("host 1"), b.expect("host 2"), c.expect("host 3")];
    let m = outputs.iter().position(|o| o.contains("is the cluster's first master")).unwrap() + 1;
    wait_voters(&bed, m, &bed.hosts).await;
    let protected_in = wait_protection(&bed, m, true).await;
    eprintln!("master's instance protected {protected_in:?} after the three voters");

    let mut root = bed.root(m).await.unwrap();
    root.query_drop(format!(
        "CREATE DATABASE app; CREATE TABLE app.writes (id BIGINT PRIMARY KEY); \
         CREATE USER '{u}'@'%' IDENTIFIED BY '{p}'; GRANT SELECT, INSERT ON app.* TO '{u}'@'%'",
        u = orch_tests::db::APP_USER,
        p = orch_tests::db::APP_PASSWORD
    ))
    .await
    .unwrap();
    drop(root);
    let writer = orch_tests::writer::Writer::start(
        bed.hosts.clone(),
        Duration::from_millis(10),
        Duration::from_secs(2),
    );
    wait_for("first acknowledged writes", Duration::from_secs(10), || {
        let n = writer.acknowledged();
        async move { Ok(n > 20) }
    })
    .await;

    // Stop the master host's peer the way systemd does, and wait for it to exit.
    let stopping = Instant::now();
    let services = bed.services(m);
    tokio::task::spawn_blocking(move || {
        services.stop(provisioner::bootstrap::peer::PEER_SERVICE, Duration::from_secs(80))
    })
    .await
    .unwrap()
    .expect("the peer stops within its leave timeout");
    eprintln!("master host's peer left and stopped in {:?}", stopping.elapsed());
    let old_master = format!("{}:3306", bed.hosts[m - 1]);
    let others: Vec<usize> = (1..=3).filter(|i| *i != m).collect();
    wait_for("a new master in master_lock", Duration::from_secs(20), || {
        let (bed, old) = (&bed, old_master.clone());
        async move {
            let h = bed.master_holder().await.map_err(|e| format!("{e:#}"))?.unwrap_or_default();
            Ok(!h.is_empty() && h != old)
        }
    })
    .await;
    let holder = bed.master_holder().await.unwrap().unwrap();
    let n = others
        .iter()
        .copied()
        .find(|i| holder == format!("{}:3306", bed.hosts[i - 1]))
        .expect("the new master is one of the other hosts");
    let remaining: Vec<String> = others.iter().map(|i| bed.hosts[i - 1].clone()).collect();
    wait_voters(&bed, n, &remaining).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let report = writer.stop().await;
    let on_new = orch_tests::writer::ids_on(&bed.hosts[n - 1]).await.unwrap();
    let lost: Vec<u64> = report.acknowledged.iter().copied().filter(|id| !on_new.contains(id)).collect();
    eprintln!(
        "writer: {} acknowledged, {} unknown, longest gap {:?}; lost {}",
        report.acknowledged.len(),
        report.unknown.len(),
        report.longest_gap,
        lost.len()
    );
    assert!(lost.is_empty(), "acknowledged writes missing on the new master: {lost:?}");
    wait_audit(&bed, n, &["orchestrator:leave", "switchover", "remove_raft_peer"]).await;

    // The protection moved with the master.
    wait_protection(&bed, n, true).await;
    wait_protection(&bed, m, false).await;

    // The old master (a replica now, its peer gone) loses its mysqld for good.
    bed.kill_service(m, provisioner::bootstrap::server::MYSQLD_SERVICE);
    let killed = Instant::now();
    let took = wait_for(
        "the dead replica's instance marked Unhealthy",
        Duration::from_secs(REPLACE_AFTER_S + 20),
        || async {
            let (_, health, _) = bed.group_instance(m).await.map_err(|e| format!("{e:#}"))?;
            Ok(health == "Unhealthy")
        },
    )
    .await;
    assert!(killed.elapsed() >= Duration::from_secs(REPLACE_AFTER_S), "not before replace_after_s");
    eprintln!("replica with a dead mysqld marked Unhealthy {took:?} after the kill (replace_after_s = {REPLACE_AFTER_S})");
    for i in &others {
        let (_, health, _) = bed.group_instance(*i).await.unwrap();
        assert_eq!(health, "Healthy", "host {i}");
    }
}
