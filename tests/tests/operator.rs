//! End to end: an operator drives a 3-node real-MariaDB cluster only through `orchctl`
//! (answers read with `-o json`): status, topology, problems, a dry run and then a
//! real switchover, a stale switchover refused, downtime, recoveries and their
//! acknowledgement, a leadership transfer, the audit with the tokens' names, and a
//! `watch` that prints the new master.

use std::io::{BufRead, BufReader};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use orch_tests::ctl::Ctl;
use orch_tests::peer::{ADMIN_TOKEN, OPERATE_TOKEN, READ_TOKEN};
use orch_tests::TestBed;
use serde_json::Value;

const ALIAS: &str = "ops";

fn audit_entries(v: &Value) -> Vec<Value> {
    v["entries"].as_array().cloned().unwrap_or_default()
}

#[tokio::test]
async fn an_operator_runs_the_cluster_through_orchctl() {
    let bed = TestBed::start(3, ALIAS).await.expect("test bed");
    bed.wait_registered(ALIAS).await.unwrap();
    let hosts: Vec<String> = bed.cluster.servers.iter().map(|s| s.key()).collect();
    let (m, r1, r2) = (&hosts[0], &hosts[1], &hosts[2]);
    // The first endpoint is down: orchctl moves on to the next.
    let mut endpoints = vec!["127.0.0.1:1".to_string()];
    endpoints.extend(bed.peers.iter().map(|p| p.http_address()));
    let dir = bed.path();
    let admin = Ctl::new(&dir, endpoints.clone(), Some(ADMIN_TOKEN)).unwrap();
    let operator = admin.with_token(&dir, OPERATE_TOKEN).unwrap();
    let reader = admin.with_token(&dir, READ_TOKEN).unwrap();

    let status = reader.json(&["status"]);
    assert_eq!(status["caller"], "test-reader", "{status}");
    assert_eq!(status["caller_scope"], "read");

    // The topology as discovered, with the master Raft recorded.
    let deadline = Instant::now() + Duration::from_secs(20);
    let topology = loop {
        let t = reader.json(&["topology", ALIAS]);
        let up = t["instances"]
            .as_array()
            .is_some_and(|i| i.len() == 3 && i.iter().all(|i| i["reachable"] == true));
        if up && t["recorded_master"] == m.as_str() {
            break t;
        }
        assert!(Instant::now() < deadline, "topology never complete: {t}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(topology["master"], m.as_str());
    let table = reader.run(&["topology", ALIAS]);
    assert_eq!(table.code, 0, "{table:?}");
    assert!(
        table.stdout.contains(r1.as_str()) && table.stdout.contains("running/running"),
        "{}",
        table.stdout
    );
    let problems = reader.json(&["problems"]);
    assert!(problems["problems"].is_array() || problems.get("problems").is_none(), "{problems}");

    // Downtime: a downtimed replica is passed over by the planner.
    let begun = operator.json(&["downtime", "begin", r2, "--duration", "10m", "--reason", "disk check"]);
    assert!(begun["message"].as_str().unwrap().contains("downtimed"), "{begun}");
    let listed = reader.json(&["downtime", "list"]);
    let d = &listed["downtimes"][0];
    assert_eq!(
        (d["instance"].as_str(), d["owner"].as_str()),
        (Some(r2.as_str()), Some("test-operator")),
        "{listed}"
    );
    let plan = operator.json(&["switchover", ALIAS, "--dry-run"]);
    assert_eq!(plan["plan"]["candidate"], r1.as_str(), "{plan}");
    let passed = plan["plan"]["passed_over"].as_array().unwrap();
    assert!(passed.iter().any(|p| p["instance"] == r2.as_str() && p["reason"] == "downtimed"), "{plan}");
    // A dry run to the downtimed replica says it would be refused, and why (exit 3).
    let refused = operator.run(&["-o", "json", "switchover", ALIAS, "--to", r2, "--dry-run"]);
    assert_eq!(refused.code, 3, "{refused:?}");
    assert!(refused.json()["plan"]["refused"].as_str().unwrap().contains("downtimed"), "{refused:?}");
    operator.json(&["downtime", "end", r2]);
    let plan = operator.json(&["switchover", ALIAS, "--to", r2, "--dry-run"]);
    assert_eq!(plan["plan"]["candidate"], r2.as_str(), "{plan}");
    assert_eq!(
        bed.cluster.master().scalar("SELECT @@read_only").await.unwrap().as_deref(),
        Some("0"),
        "a dry run changes nothing"
    );

    // A stale command (the master is not the one named) is refused: exit 3, one line.
    let stale = operator.run(&["switchover", ALIAS, "--to", r1, "--expected-master", r2, "--yes"]);
    assert_eq!(stale.code, 3, "{stale:?}");
    assert_eq!(stale.stderr.trim().lines().count(), 1, "{stale:?}");
    assert!(stale.stderr.contains("stale") && stale.stderr.contains(m.as_str()), "{stale:?}");
    // Without a terminal to confirm on, and without --yes: refused as a usage error.
    let unconfirmed = operator.run(&["switchover", ALIAS, "--to", r1]);
    assert_eq!(unconfirmed.code, 2, "{unconfirmed:?}");
    // A read token may not switch over: exit 4.
    let denied = reader.run(&["switchover", ALIAS, "--to", r1, "--yes"]);
    assert_eq!(denied.code, 4, "{denied:?}");
    assert!(denied.stderr.contains("not permitted"), "{denied:?}");

    // A watcher, then the switchover for real.
    let mut watcher = reader.spawn(&["-o", "json", "watch", ALIAS]);
    let (tx, rx) = mpsc::channel::<String>();
    let stdout = watcher.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    // The watch sends the current state first.
    let first = rx.recv_timeout(Duration::from_secs(10)).expect("watch printed nothing");
    assert!(first.contains("\"topology\""), "{first}");
    let done = operator.json(&["switchover", ALIAS, "--to", r1, "--yes"]);
    let rec = &done["recovery"];
    assert_eq!(rec["status"], "succeeded", "{done}");
    assert_eq!(rec["new_master"], r1.as_str());
    assert_eq!(rec["requested_by"], "test-operator");
    assert!(rec["steps"].as_array().is_some_and(|s| s.len() >= 4), "{done}");
    let id = rec["id"].as_u64().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line =
            rx.recv_timeout(left).unwrap_or_else(|_| panic!("watch never printed the new master: {seen:#?}"));
        let e: Value = serde_json::from_str(&line).unwrap();
        if e["event"]["master"]["current"] == r1.as_str() {
            assert_eq!(e["event"]["master"]["previous"], m.as_str());
            break;
        }
        seen.push(line);
    }
    let _ = watcher.kill();
    let _ = watcher.wait();

    // The recovery: listed, shown with steps, acknowledged once.
    let list = reader.json(&["recoveries", "list"]);
    let listed = list["recoveries"].as_array().unwrap().iter().find(|r| r["id"] == id).cloned().unwrap();
    assert_eq!(listed["kind"], "switchover");
    let shown = reader.run(&["recoveries", "show", &id.to_string()]);
    assert!(shown.code == 0 && shown.stdout.contains("write check passed"), "{shown:?}");
    let ack = operator.json(&["recoveries", "ack", &id.to_string(), "--comment", "planned"]);
    assert!(ack["message"].as_str().unwrap().contains("acknowledged by test-operator"), "{ack}");
    let again = operator.run(&["recoveries", "ack", &id.to_string()]);
    assert_eq!(again.code, 3, "{again:?}");
    assert!(again.stderr.contains("already acknowledged by test-operator"), "{again:?}");

    // Raft: transfer leadership to another peer.
    let raft = reader.json(&["raft", "state"]);
    let leader = raft["leader_id"].as_u64().unwrap();
    let other = raft["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_u64().unwrap())
        .find(|id| *id != leader)
        .unwrap();
    let moved = admin.json(&["raft", "transfer-leadership", &other.to_string()]);
    assert!(moved["message"].as_str().unwrap().contains(&format!("peer {other} is the leader")), "{moved}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while reader.json(&["raft", "state"])["leader_id"].as_u64() != Some(other) {
        assert!(Instant::now() < deadline, "leadership did not move to {other}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let members = reader.json(&["raft", "members"]);
    assert_eq!(members.as_array().unwrap().len(), 3, "{members}");

    // Promotion rules and the global switch.
    operator.json(&["promotion-rule", "set", r2, "must_not"]);
    let rules = reader.json(&["promotion-rule", "list"]);
    assert_eq!(rules["rules"][0]["rule"], "must_not", "{rules}");
    let plan = operator.run(&["-o", "json", "switchover", ALIAS, "--to", r2, "--dry-run"]);
    assert_eq!(plan.code, 3, "{plan:?}");
    assert!(plan.json()["plan"]["refused"].as_str().unwrap().contains("must_not"), "{plan:?}");
    operator.json(&["promotion-rule", "set", r2, "neutral"]);
    assert_eq!(admin.run(&["global-recoveries", "disable"]).code, 2, "disabling needs confirmation");
    admin.json(&["global-recoveries", "disable", "--yes"]);
    assert_eq!(reader.json(&["global-recoveries", "status"])["enabled"], false);
    admin.json(&["global-recoveries", "enable"]);
    assert_eq!(reader.json(&["global-recoveries", "status"])["enabled"], true);

    // Forget and discover again: every peer follows; a master cannot be forgotten.
    let master_now = r1.as_str();
    let refused = admin.run(&["forget", master_now, "--yes"]);
    assert_eq!(refused.code, 3, "{refused:?}");
    assert!(refused.stderr.contains("is the master of cluster"), "{refused:?}");
    assert_eq!(admin.run(&["forget", "10.255.255.1", "--yes"]).code, 1, "an unknown instance");
    admin.json(&["forget", m, "--yes"]);
    for p in &bed.peers {
        let one = Ctl::new(&dir, vec![p.http_address()], Some(READ_TOKEN)).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while one.json(&["topology", ALIAS])["instances"]
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i["key"] == m.as_str())
        {
            assert!(Instant::now() < deadline, "peer {} still tracks the forgotten {m}", p.id);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let found = admin.json(&["discover", m]);
    assert_eq!(found["key"], m.as_str(), "{found}");
    for p in &bed.peers {
        let one = Ctl::new(&dir, vec![p.http_address()], Some(READ_TOKEN)).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !one.json(&["topology", ALIAS])["instances"]
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i["key"] == m.as_str())
        {
            assert!(Instant::now() < deadline, "peer {} does not track the rediscovered {m}", p.id);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    // Bad input and unreachable peers have their own exit codes.
    let bad = operator.run(&["downtime", "begin", r2, "--duration", "forever", "--reason", "x"]);
    assert_eq!(bad.code, 2, "{bad:?}");
    assert!(bad.stderr.contains("duration"), "{bad:?}");
    let nobody = Ctl::new(&dir, vec!["127.0.0.1:1".into()], Some(READ_TOKEN)).unwrap().run(&["status"]);
    assert_eq!(nobody.code, 5, "{nobody:?}");
    let completion = reader.run(&["completion", "bash"]);
    assert!(completion.code == 0 && completion.stdout.contains("orchctl"), "{completion:?}");

    // The audit names every token that changed something, and the refusals.
    let audit = audit_entries(&reader.json(&["audit", "--limit", "100"]));
    let find = |op: &str, who: &str, result: &str| {
        audit.iter().any(|e| e["operation"] == op && e["who"] == who && e["result"] == result)
    };
    assert!(find("begin_downtime", "test-operator", "ok"), "{audit:#?}");
    assert!(find("end_downtime", "test-operator", "ok"));
    assert!(find("switchover", "test-operator", "refused"), "the stale switchover: {audit:#?}");
    assert!(find("switchover", "test-reader", "denied"), "{audit:#?}");
    assert!(find("switchover", "test-operator", "ok"));
    assert!(find("acknowledge_recovery", "test-operator", "ok"));
    assert!(find("acknowledge_recovery", "test-operator", "refused"));
    assert!(find("transfer_leadership", "test-admin", "ok"), "{audit:#?}");
    assert!(
        !audit.iter().any(|e| e["arguments"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["name"] == "dry_run" && a["value"] == "true")),
        "dry runs are not audited"
    );
    let e = audit.iter().find(|e| e["operation"] == "switchover" && e["result"] == "ok").unwrap();
    assert!(e["from"].as_str().unwrap().starts_with("127."), "{e}");
    let table = reader.run(&["audit"]);
    assert!(table.code == 0 && table.stdout.contains("test-operator"), "{table:?}");
}
