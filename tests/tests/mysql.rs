//! End to end, MySQL 9.7 only: what MariaDB has no counterpart of. A tagged GTID
//! (`uuid:tag:N`) in the history is discovered, replicated and carried through a
//! failover without being taken for an errant transaction; semi-sync runs through the
//! `semisync_source` / `semisync_replica` plugins, never falls back to asynchronous
//! replication, and is set up again around the new master after a failover.

use std::time::Duration;

use mysql_async::prelude::Queryable;
use orch_tests::db::{DbServer, Flavor, APP_PASSWORD, APP_USER};
use orch_tests::peer::{get_json, poll_json};
use orch_tests::TestBed;
use serde_json::Value;

const ALIAS: &str = "my";

async fn start() -> TestBed {
    let bed = TestBed::start_with(Flavor::Mysql, 3, ALIAS, |_| {}).await.expect("test bed");
    bed.wait_registered(ALIAS).await.unwrap();
    bed
}

/// A status variable of `server` as text.
async fn status_variable(server: &DbServer, name: &str) -> String {
    let mut c = server.root().await.unwrap();
    let row: Option<(String, String)> =
        c.query_first(format!("SHOW GLOBAL STATUS LIKE '{name}'")).await.unwrap();
    c.disconnect().await.unwrap();
    row.map(|(_, v)| v).unwrap_or_default()
}

async fn wait_status_variable(server: &DbServer, name: &str, want: &str, timeout: Duration) {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let got = status_variable(server, name).await;
        if got == want {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "{}: {name} is {got}, want {want}", server.key());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn instance<'a>(cluster: &'a Value, key: &str) -> &'a Value {
    cluster["instances"]
        .as_array()
        .and_then(|a| a.iter().find(|i| i["key"] == key))
        .unwrap_or_else(|| panic!("{key} not in {cluster}"))
}

#[tokio::test]
async fn a_tagged_gtid_is_discovered_replicated_and_survives_a_failover() {
    let mut bed = start().await;
    let master = bed.cluster.master();
    let uuid = master.scalar("SELECT @@server_uuid").await.unwrap().unwrap();
    // A transaction with a tagged GTID (MySQL 8.4+), as tooling marks its own writes.
    master
        .exec("SET gtid_next = 'AUTOMATIC:orch_tag'; INSERT INTO app.writes (id) VALUES (1); SET gtid_next = 'AUTOMATIC'")
        .await
        .unwrap();
    let mut app = master.connect_as(APP_USER, APP_PASSWORD).await.unwrap();
    app.query_drop("INSERT INTO app.writes (id) VALUES (2)").await.unwrap();
    drop(app);
    bed.cluster.wait_replicated(Duration::from_secs(10)).await.unwrap();
    let executed = master.gtid_executed().await.unwrap();
    assert!(executed.contains(":orch_tag:1"), "{executed}");
    assert!(executed.starts_with(&uuid), "{executed}");

    // Every peer shows every instance with the set the servers print, the tag in it.
    let expected = executed.replace('\n', "");
    let url = bed.peers[2].url(&format!("/api/cluster/{ALIAS}"));
    let all_match = |c: &Value| {
        c["instances"].as_array().is_some_and(|a| {
            a.len() == 3 && a.iter().all(|i| i["last_probe"]["gtid_executed"] == expected.as_str())
        })
    };
    let (cluster, _) = poll_json(&url, Duration::from_secs(10), all_match)
        .await
        .unwrap_or_else(|last| panic!("peers never showed {expected}: {last}"));
    // Nothing errant: every replica's set is the master's.
    let problems = get_json(&bed.peers[0].url("/api/problems")).await.unwrap();
    assert!(!problems.to_string().contains("ErrantGTID"), "{problems}");
    for r in &bed.cluster.servers[1..] {
        let received = &instance(&cluster, &r.key())["last_probe"]["replication"]["received"];
        assert!(received.as_str().unwrap().contains(":orch_tag:1"), "{received}");
    }

    // A failover with the tagged transaction in the history: the new master has it.
    let old = master.key();
    bed.cluster.servers[0].kill();
    let (new_master, took) = bed.wait_new_master(ALIAS, &old, Duration::from_secs(15)).await.unwrap();
    eprintln!("kill -9 with a tagged GTID in the history: new master {new_master} after {took:?}");
    let new = bed.cluster.servers.iter().find(|s| s.key() == new_master).unwrap();
    let on_new = new.gtid_executed().await.unwrap();
    assert!(on_new.contains(":orch_tag:1"), "{on_new}");
    let ids: Vec<u64> =
        new.root().await.unwrap().query("SELECT id FROM app.writes ORDER BY id").await.unwrap();
    assert_eq!(ids, vec![1, 2]);
    let recoveries = get_json(&bed.peers[1].url("/api/recoveries")).await.unwrap();
    assert_eq!(recoveries["recoveries"][0]["success"], true, "{recoveries}");
}

#[tokio::test]
async fn semi_sync_runs_through_the_plugins_and_never_falls_back() {
    let mut bed = start().await;
    let master = bed.cluster.master();
    // Both plugins are loaded and the master waits for its two replicas.
    let plugins: Vec<(String, String)> = master
        .root()
        .await
        .unwrap()
        .query(
            "SELECT PLUGIN_NAME, PLUGIN_STATUS FROM information_schema.PLUGINS \
             WHERE PLUGIN_NAME LIKE 'rpl_semi_sync_%' ORDER BY PLUGIN_NAME",
        )
        .await
        .unwrap();
    assert_eq!(
        plugins,
        vec![
            ("rpl_semi_sync_replica".to_string(), "ACTIVE".to_string()),
            ("rpl_semi_sync_source".to_string(), "ACTIVE".to_string())
        ]
    );
    assert_eq!(status_variable(master, "Rpl_semi_sync_source_status").await, "ON");
    assert_eq!(status_variable(master, "Rpl_semi_sync_source_clients").await, "2");
    // The peers read it under the source/replica names.
    let url = bed.peers[0].url(&format!("/api/cluster/{ALIAS}"));
    let shown = |c: &Value| {
        let s = &instance(c, &bed.cluster.master().key())["last_probe"]["semi_sync"];
        s["master_enabled"] == true && s["master_active"] == true && s["master_clients"] == 2
    };
    poll_json(&url, Duration::from_secs(10), shown)
        .await
        .unwrap_or_else(|last| panic!("semi-sync of the master not shown: {last}"));

    // Without a replica receiving, a commit is never acknowledged: it waits (it does
    // not fall back to asynchronous replication) until a replica is back.
    for r in &bed.cluster.servers[1..] {
        r.exec("STOP REPLICA IO_THREAD").await.unwrap();
    }
    wait_status_variable(master, "Rpl_semi_sync_source_clients", "0", Duration::from_secs(10)).await;
    let mut app = master.connect_as(APP_USER, APP_PASSWORD).await.unwrap();
    let insert =
        tokio::spawn(
            async move { app.query_drop("INSERT INTO app.writes (id) VALUES (10)").await.map(|_| app) },
        );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(!insert.is_finished(), "a commit was acknowledged with no replica receiving");
    bed.cluster.servers[1].exec("START REPLICA IO_THREAD").await.unwrap();
    let app = tokio::time::timeout(Duration::from_secs(10), insert)
        .await
        .expect("the commit is acknowledged once a replica is back")
        .unwrap()
        .unwrap();
    drop(app);
    bed.cluster.servers[2].exec("START REPLICA IO_THREAD").await.unwrap();
    wait_status_variable(bed.cluster.master(), "Rpl_semi_sync_source_clients", "2", Duration::from_secs(10))
        .await;

    // After a failover the new master waits for the remaining replica, which
    // acknowledges through its replica plugin.
    let old = bed.cluster.master().key();
    bed.cluster.servers[0].kill();
    let (new_master, _) = bed.wait_new_master(ALIAS, &old, Duration::from_secs(15)).await.unwrap();
    let new = bed.cluster.servers.iter().find(|s| s.key() == new_master).unwrap();
    assert_eq!(new.scalar("SELECT @@rpl_semi_sync_source_enabled").await.unwrap().as_deref(), Some("1"));
    wait_status_variable(new, "Rpl_semi_sync_source_clients", "1", Duration::from_secs(10)).await;
    let other = bed.cluster.servers[1..].iter().find(|s| s.key() != new_master).unwrap();
    assert_eq!(status_variable(other, "Rpl_semi_sync_replica_status").await, "ON");
    let mut app = new.connect_as(APP_USER, APP_PASSWORD).await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), app.query_drop("INSERT INTO app.writes (id) VALUES (11)"))
        .await
        .expect("a write on the new master is acknowledged")
        .unwrap();
    assert_eq!(status_variable(new, "Rpl_semi_sync_source_status").await, "ON");
}

#[tokio::test]
async fn a_master_whose_commits_wait_for_semi_sync_is_fenced_through_them() {
    let bed = start().await;
    let master = bed.cluster.master();
    // No replica receives: the application's next commit waits for an acknowledgement
    // that will not come, and on MySQL a KILL does not end that wait.
    for r in &bed.cluster.servers[1..] {
        r.exec("STOP REPLICA IO_THREAD").await.unwrap();
    }
    wait_status_variable(master, "Rpl_semi_sync_source_clients", "0", Duration::from_secs(10)).await;
    let mut app = master.connect_as(APP_USER, APP_PASSWORD).await.unwrap();
    let insert = tokio::spawn(async move { app.query_drop("INSERT INTO app.writes (id) VALUES (20)").await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!insert.is_finished(), "the commit did not wait");

    // A forced failover fences the live master first.
    let url = bed.peers[0].url(&format!("/api/force-master-failover/{ALIAS}"));
    let resp = orch_tests::peer::http_client().post(&url).send().await.unwrap();
    let status = resp.status().as_u16();
    let body: Value = resp.json().await.unwrap();
    assert_eq!(status, 200, "{body}");
    eprintln!("forced failover steps: {}", body["recovery"]["steps"]);
    let new_master = body["recovery"]["new_master"].as_str().unwrap().to_string();
    assert_ne!(new_master, master.key());

    // The waiting commit was never acknowledged to its client.
    let outcome =
        tokio::time::timeout(Duration::from_secs(5), insert).await.expect("the commit ended").unwrap();
    assert!(outcome.is_err(), "a commit no replica has was acknowledged");
    // The old master: read-only, offline to the application, semi-sync as it was.
    assert_eq!(master.scalar("SELECT @@super_read_only").await.unwrap().as_deref(), Some("1"));
    assert_eq!(master.scalar("SELECT @@offline_mode").await.unwrap().as_deref(), Some("1"));
    assert_eq!(master.scalar("SELECT @@rpl_semi_sync_source_enabled").await.unwrap().as_deref(), Some("1"));
    assert!(master.connect_as(APP_USER, APP_PASSWORD).await.is_err(), "the application still connects");
    // The new master never had the unacknowledged row.
    let new = bed.cluster.servers.iter().find(|s| s.key() == new_master).unwrap();
    let ids: Vec<u64> =
        new.root().await.unwrap().query("SELECT id FROM app.writes WHERE id = 20").await.unwrap();
    assert!(ids.is_empty());
}
