//! End to end: real database servers (1 master, 2 replicas, GTID replication), three
//! orchestrator peers co-located with them, all on their own loopback addresses. What
//! discovery reads from the servers runs on both flavors; the API's own behaviour on
//! MariaDB only.

use std::time::{Duration, Instant};

use orch_tests::db::{Flavor, APP_PASSWORD, APP_USER};
use orch_tests::peer::{get_json, http_client, poll_json};
use orch_tests::{on_both_flavors, TestBed};
use serde_json::Value;

const ALIAS: &str = "it";

on_both_flavors!(
    every_peer_discovers_the_whole_topology_from_one_seed,
    gtid_sets_match_what_the_servers_report,
    stopped_sql_thread_and_killed_replica_show_up_quickly,
);

fn instances(cluster: &Value) -> &Vec<Value> {
    cluster["instances"].as_array().expect("instances array")
}

fn instance<'a>(cluster: &'a Value, key: &str) -> &'a Value {
    instances(cluster).iter().find(|i| i["key"] == key).unwrap_or_else(|| panic!("{key} not in {cluster}"))
}

/// Waits until peer `peer` shows the cluster with every instance reachable.
async fn wait_full_topology(bed: &TestBed, peer: usize) -> Value {
    let url = bed.peers[peer].url(&format!("/api/cluster/{ALIAS}"));
    let n = bed.cluster.servers.len();
    let full = |c: &Value| instances(c).len() == n && instances(c).iter().all(|i| i["reachable"] == true);
    match poll_json(&url, Duration::from_secs(20), full).await {
        Ok((c, _)) => c,
        Err(last) => panic!(
            "peer {} never saw the full topology; last answer: {last}\nlog:\n{}",
            bed.peers[peer].host,
            bed.peers[peer].log_tail(30)
        ),
    }
}

async fn every_peer_discovers_the_whole_topology_from_one_seed(flavor: Flavor) {
    let bed = TestBed::start_with(flavor, 3, ALIAS, |_| {}).await.expect("test bed");
    let master = bed.cluster.master().key();
    for peer in 0..bed.peers.len() {
        let c = wait_full_topology(&bed, peer).await;
        assert_eq!(c["alias"], ALIAS);
        assert_eq!(c["master"], master.as_str());
        let m = instance(&c, &master);
        assert_eq!(m["role"], "master");
        assert_eq!(m["last_probe"]["read_only"], false);
        assert_eq!(m["last_probe"]["flavor"], flavor.name());
        assert!(m["last_probe"]["replication"].is_null());
        let mut replicas_of_master: Vec<String> = m["last_probe"]["replicas"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect();
        replicas_of_master.sort();
        let mut expected: Vec<String> = bed.cluster.servers[1..].iter().map(|s| s.key()).collect();
        expected.sort();
        assert_eq!(replicas_of_master, expected);
        for r in &bed.cluster.servers[1..] {
            let i = instance(&c, &r.key());
            assert_eq!(i["role"], "replica", "{i}");
            assert_eq!(i["last_probe"]["read_only"], true);
            assert_eq!(i["last_probe"]["server_id"], r.server_id);
            let repl = &i["last_probe"]["replication"];
            assert_eq!(repl["source"], master.as_str());
            assert_eq!(repl["io_thread"], "running");
            assert_eq!(repl["sql_thread"], "running");
            let gtid_mode = match flavor {
                Flavor::Mariadb => "Slave_Pos",
                Flavor::Mysql => "auto_position",
            };
            assert_eq!(repl["gtid_mode"], gtid_mode);
            // MySQL may show a second of lag just after the set-up's last commit.
            assert!(repl["seconds_behind"].as_u64().is_some_and(|s| s <= 1), "{repl}");
        }
    }

    // The cluster list, instance lookup, and the cluster found by a member's key.
    let p = &bed.peers[0];
    let list = get_json(&p.url("/api/clusters")).await.unwrap();
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    assert_eq!(list[0]["alias"], ALIAS);
    assert_eq!(list[0]["instances"], 3);
    assert_eq!(list[0]["reachable"], 3);
    let replica = &bed.cluster.servers[2];
    let i = get_json(&p.url(&format!("/api/instance/{}/3306", replica.host))).await.unwrap();
    assert_eq!(i["role"], "replica");
    let by_member = get_json(&p.url(&format!("/api/cluster/{}", replica.key()))).await.unwrap();
    assert_eq!(by_member["alias"], ALIAS);

    // Metrics count probes per instance.
    let metrics = http_client().get(p.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(
        metrics.contains(&format!("orchestrator_probes_total{{instance=\"{master}\",outcome=\"ok\"}}")),
        "{metrics}"
    );
    assert!(metrics.contains("orchestrator_known_instances 3"), "{metrics}");
}

#[tokio::test]
async fn api_errors_are_json_with_4xx_status() {
    let bed = TestBed::start(3, ALIAS).await.expect("test bed");
    let p = &bed.peers[0];
    let client = http_client();
    for (path, status, needle) in [
        ("/api/cluster/nope", 404, "no cluster `nope`"),
        ("/api/instance/127.0.0.1/notaport", 400, "port"),
        ("/api/instance/127.0.0.1/0", 400, "port"),
        ("/api/instance/10.9.9.9/3306", 404, "not known"),
        ("/api/no/such/thing", 404, "no such path"),
    ] {
        let resp = client.get(p.url(path)).send().await.unwrap();
        assert_eq!(resp.status().as_u16(), status, "{path}");
        let body: Value = resp.json().await.unwrap();
        let msg = body["error"].as_str().unwrap_or_default();
        assert!(msg.contains(needle), "{path}: {body}");
    }
    // Discovering (through the leader) an address nobody listens on is refused with
    // the reason, and the address is not kept.
    let all: Vec<_> = bed.peers.iter().collect();
    orch_tests::raft::wait_agreed_leader(&all, Duration::from_secs(10)).await.unwrap();
    let resp = client.get(p.url("/api/discover/127.0.0.1/1")).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 409);
    let body: Value = resp.json().await.unwrap();
    assert!(body["error"].as_str().unwrap().contains("cannot connect"), "{body}");
    let resp = client.get(p.url("/api/instance/127.0.0.1/1")).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 404);
    // Discovering a live instance answers with it.
    let replica = &bed.cluster.servers[1];
    let i = get_json(&p.url(&format!("/api/discover/{}/3306", replica.host))).await.unwrap();
    assert_eq!(i["key"], replica.key().as_str());
    assert_eq!(i["instance"]["reachable"], true);
}

async fn gtid_sets_match_what_the_servers_report(flavor: Flavor) {
    let bed = TestBed::start_with(flavor, 3, ALIAS, |_| {}).await.expect("test bed");
    let master = bed.cluster.master();
    let mut app = master.connect_as(APP_USER, APP_PASSWORD).await.unwrap();
    use mysql_async::prelude::Queryable;
    for id in 0..25 {
        app.query_drop(format!("INSERT INTO app.writes (id) VALUES ({id})")).await.unwrap();
    }
    bed.cluster.wait_replicated(Duration::from_secs(10)).await.unwrap();
    let expected = master.gtid_executed().await.unwrap();
    match flavor {
        Flavor::Mariadb => assert!(expected.starts_with("0-1-"), "{expected}"),
        Flavor::Mysql => {
            let uuid = master.scalar("SELECT @@server_uuid").await.unwrap().unwrap();
            assert!(expected.starts_with(&format!("{uuid}:1-")), "{expected}");
        }
    }
    for s in &bed.cluster.servers {
        assert_eq!(s.gtid_executed().await.unwrap(), expected);
    }
    // The API prints sets in one canonical form: MySQL's own text breaks lines.
    let expected = expected.replace('\n', "");
    let url = bed.peers[1].url(&format!("/api/cluster/{ALIAS}"));
    let all_match = |c: &Value| {
        instances(c).len() == 3
            && instances(c).iter().all(|i| i["last_probe"]["gtid_executed"] == expected.as_str())
    };
    let seen = match poll_json(&url, Duration::from_secs(5), all_match).await {
        Ok((c, _)) => c,
        Err(last) => panic!("expected every gtid_executed = {expected}, API says {last}"),
    };
    for r in &bed.cluster.servers[1..] {
        let status = r.replica_status().await.unwrap().unwrap();
        let received = status.received_gtids().unwrap().replace('\n', "");
        let i = instance(&seen, &r.key());
        assert_eq!(i["last_probe"]["replication"]["received"], received.as_str());
    }
}

async fn stopped_sql_thread_and_killed_replica_show_up_quickly(flavor: Flavor) {
    let mut bed = TestBed::start_with(flavor, 3, ALIAS, |_| {}).await.expect("test bed");
    wait_full_topology(&bed, 0).await;
    let url = bed.peers[0].url(&format!("/api/cluster/{ALIAS}"));
    let interval = Duration::from_millis(1000);

    // A replica's SQL thread stopped by hand.
    let replica = bed.cluster.servers[1].key();
    bed.cluster.servers[1].exec("STOP REPLICA SQL_THREAD").await.unwrap();
    let stopped_at = Instant::now();
    let sql_stopped = |c: &Value| {
        let r = &instance(c, &replica)["last_probe"]["replication"];
        r["sql_thread"] == "stopped" && r["io_thread"] == "running"
    };
    let (_, shown) = poll_json(&url, Duration::from_secs(5), sql_stopped)
        .await
        .unwrap_or_else(|last| panic!("stopped SQL thread never shown: {last}"));
    eprintln!("stopped SQL thread shown after {:?} (probe interval {interval:?})", stopped_at.elapsed());
    assert!(shown <= 3 * interval, "SQL thread stop took {shown:?} to show");

    // A replica killed with SIGKILL.
    let victim = bed.cluster.servers[2].key();
    bed.cluster.servers[2].kill();
    let killed_at = Instant::now();
    let unreachable = |c: &Value| {
        let i = instance(c, &victim);
        i["reachable"] == false && i["last_error"].as_str().is_some_and(|e| e.contains("cannot connect"))
    };
    poll_json(&url, 3 * interval, unreachable).await.unwrap_or_else(|last| {
        panic!("killed replica not shown unreachable within 3 probe intervals: {last}")
    });
    eprintln!("killed replica shown unreachable after {:?}", killed_at.elapsed());
    // It keeps its place in the cluster, and the others stay reachable.
    let c = get_json(&url).await.unwrap();
    assert_eq!(instance(&c, &victim)["role"], "replica");
    assert_eq!(instance(&c, &bed.cluster.master().key())["reachable"], true);
}

#[tokio::test]
async fn orchctl_prints_the_topology_over_grpc() {
    let bed = TestBed::start(3, ALIAS).await.expect("test bed");
    wait_full_topology(&bed, 2).await;
    let ctl = orch_tests::peer::binary("orchctl").unwrap();
    let run = |args: &[&str]| {
        let out = std::process::Command::new(&ctl)
            .arg("--addr")
            .arg(bed.peers[2].http_address())
            .env("ORCHCTL_TOKEN", orch_tests::peer::READ_TOKEN)
            .args(args)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let (ok, out, err) = run(&["topology", ALIAS, "-o", "json"]);
    assert!(ok, "{err}");
    let t: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(t["master"], bed.cluster.master().key().as_str());
    assert_eq!(t["instances"].as_array().unwrap().len(), 3);
    let (ok, out, _) = run(&["status"]);
    assert!(ok);
    assert!(out.contains("peer 3"), "{out}");
    let (ok, out, _) = run(&["topology", ALIAS]);
    assert!(ok);
    assert!(out.contains("master") && out.contains("running/running"), "{out}");
    let (ok, _, err) = run(&["topology", "nope"]);
    assert!(!ok);
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    assert!(err.contains("no cluster `nope`"), "{err}");
}
