//! End to end: backups to S3 (real `moto_server`), the continuous binlog archive across
//! a failover, and point-in-time restores onto fresh servers, with real MariaDB +
//! `mariadb-backup` and real MySQL 9.7 (the clone plugin + `mysqlbinlog`).
//!
//! A writer runs throughout and records when each write was sent and acknowledged.
//! The restores go to an exact GTID set and to a timestamp taken after a `kill -9`
//! failover; each restored server must hold exactly the writes acknowledged before
//! its point (none sent after it), its executed GTID set must be the planned one, and
//! its tables' checksums must equal the source's at that point.

use std::time::{Duration, Instant};

use orch_tests::backup::{backup_section, checksums, now_us, written_ids, AckWriter, RestoreHost, Write};
use orch_tests::ctl::Ctl;
use orch_tests::db::Flavor;
use orch_tests::peer::ADMIN_TOKEN;
use orch_tests::{on_both_flavors, AwsBed};

const ALIAS: &str = "bk";
const TABLES: [&str; 2] = ["app.writes", "app.bulk"];

on_both_flavors!(backups_the_archive_across_a_failover_and_point_in_time_restores);

async fn start(flavor: Flavor, spare: u8, extra: &[String]) -> AwsBed {
    let section = backup_section(flavor, extra).expect("backup settings");
    let bed = AwsBed::start_with_spare(flavor, 3, spare, ALIAS, |spec| spec.extra_config.push(section))
        .await
        .expect("AWS test bed");
    bed.bed.wait_registered(ALIAS).await.unwrap();
    bed
}

fn ctl(bed: &AwsBed) -> Ctl {
    let endpoints = bed.bed.peers.iter().filter(|p| p.is_running()).map(|p| p.http_address()).collect();
    Ctl::new(&bed.bed.path(), endpoints, Some(ADMIN_TOKEN)).unwrap()
}

/// Some data, so a backup has several 1 MiB parts.
async fn load(bed: &AwsBed, flavor: Flavor) {
    let master = bed.bed.cluster.master();
    let depth = match flavor {
        Flavor::Mariadb => "SET SESSION max_recursive_iterations = 100000",
        Flavor::Mysql => "SET SESSION cte_max_recursion_depth = 100000",
    };
    master
        .exec(&format!(
            "{depth}; USE app; CREATE TABLE app.bulk (id INT PRIMARY KEY, pad VARCHAR(200)); \
             INSERT INTO app.bulk WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 30000) \
             SELECT i, CONCAT(SHA2(i, 256), SHA2(i + 1, 256), SHA2(i + 2, 256)) FROM n"
        ))
        .await
        .unwrap();
}

/// Runs `orchctl -o json ARGS` and returns its JSON; panics with its output on failure.
fn backup_json(ctl: &Ctl, args: &[&str]) -> serde_json::Value {
    let mut all = vec!["-o", "json", "--yes", "--timeout", "120", "backup"];
    all.extend_from_slice(args);
    let run = ctl.run(&all);
    assert_eq!(run.code, 0, "orchctl {args:?}: {run:?}");
    run.json()
}

/// The writes a restore to a point must hold: every one acknowledged before the point,
/// none sent after it (a write in flight at the point may be either).
fn check_writes(what: &str, writes: &[Write], point_us: i64, present: &std::collections::BTreeSet<u64>) {
    for w in writes {
        if w.acked_us > 0 && w.acked_us < point_us {
            assert!(
                present.contains(&w.id),
                "{what}: write {} acknowledged before the point is missing",
                w.id
            );
        }
        if w.sent_us > point_us {
            assert!(!present.contains(&w.id), "{what}: write {} sent after the point is there", w.id);
        }
    }
}

async fn backups_the_archive_across_a_failover_and_point_in_time_restores(flavor: Flavor) {
    let started = Instant::now();
    // MariaDB's backups and archive are encrypted (a key file), MySQL's are not.
    let key_dir = tempfile::tempdir().unwrap();
    let key_file = key_dir.path().join("backup.key");
    std::fs::write(&key_file, format!("{}\n", "5a".repeat(32))).unwrap();
    let encryption: Vec<String> = match flavor {
        Flavor::Mariadb => vec![format!("encryption_key_file = \"{}\"", key_file.display())],
        Flavor::Mysql => Vec::new(),
    };
    let mut bed = start(flavor, 2, &encryption).await;
    load(&bed, flavor).await;
    let ctl = ctl(&bed);
    let hosts: Vec<String> = bed.bed.cluster.servers.iter().map(|s| s.host.clone()).collect();
    let writer = AckWriter::start(hosts.clone(), 1, Duration::from_millis(15));
    tokio::time::sleep(Duration::from_millis(500)).await;

    // A full backup, then an incremental (MariaDB) or a second full (the clone
    // method copies everything: MySQL refuses an incremental), while the writer runs.
    let full = backup_json(&ctl, &["create", "--full"]);
    assert_eq!(full["status"], "succeeded", "{full}");
    eprintln!("full backup: {} ({:?} into the test)", full["result"], started.elapsed());
    tokio::time::sleep(Duration::from_millis(500)).await;
    let second = if flavor == Flavor::Mariadb {
        backup_json(&ctl, &["create", "--incremental"])
    } else {
        let refused = ctl.run(&["backup", "create", "--incremental", "--yes"]);
        assert_eq!(refused.code, 3, "{refused:?}");
        assert!(refused.stderr.contains("full copies only"), "{}", refused.stderr);
        backup_json(&ctl, &["create"])
    };
    assert_eq!(second["status"], "succeeded", "{second}");
    eprintln!("second backup: {}", second["result"]);
    let list = backup_json(&ctl, &["list"]);
    let backups = list["backups"].as_array().unwrap();
    assert_eq!(backups.len(), 2, "{list}");
    assert!(backups.iter().all(|b| b["chain_complete"] == true), "{list}");
    assert!(backups.iter().all(|b| b["parts"].as_u64().unwrap() > 1), "{list}");
    if flavor == Flavor::Mariadb {
        assert_eq!(backups[1]["kind"], "incremental");
        assert_eq!(backups[1]["parent"], backups[0]["id"]);
        assert!(backups.iter().all(|b| b["encrypted"] == true), "{list}");
    } else {
        assert!(backups.iter().all(|b| b["staged_locally"] == true && b["method"] == "clone"), "{list}");
    }
    let archiver = list["archive"]["archiver"].as_str().unwrap_or_default().to_string();
    assert!(archiver.contains(&bed.bed.cluster.master().key()), "the master's peer archives: {list}");

    // kill -9 of the master in the middle of the archive.
    let old = bed.bed.cluster.master().key();
    bed.bed.cluster.servers[0].kill();
    let (new_master, took) = bed.bed.wait_new_master(ALIAS, &old, Duration::from_secs(30)).await.unwrap();
    eprintln!("failed over to {new_master} in {took:?}");
    let new_index = bed.bed.cluster.servers.iter().position(|s| s.key() == new_master).unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;

    // Point G: the writer paused, the new master's executed set and checksums.
    writer.pause().await;
    let g_us = now_us();
    let source = &bed.bed.cluster.servers[new_index];
    let gtid_g = source.gtid_executed().await.unwrap();
    let sums_g = checksums(source, &TABLES).await.unwrap();
    writer.resume();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // Point T: a time with no commit in its second or the next (MariaDB records seconds).
    writer.pause().await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let t_us = now_us();
    let sums_t = checksums(source, &TABLES).await.unwrap();
    let gtid_t = source.gtid_executed().await.unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    writer.resume();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let writes = writer.stop().await;
    let last_sent = writes.iter().map(|w| w.sent_us).max().unwrap();
    // The archive catches up (commit times are before the last write was sent).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let list = backup_json(&ctl, &["list"]);
        let latest = list["archive"]["latest_commit_unix_us"].as_i64().unwrap_or(0);
        if latest >= last_sent - 1_500_000
            && list["archive"]["archiver"].as_str().unwrap_or("").contains(&new_master)
        {
            eprintln!("archive: {}", list["archive"]);
            assert!(list["archive"]["gaps"].as_array().unwrap().is_empty(), "{list}");
            break;
        }
        assert!(Instant::now() < deadline, "the archive never caught up: {list}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    // Restore to G (a GTID set) and to T (a time), each onto a fresh server.
    let g_host = RestoreHost::start(&bed, flavor, 1, ALIAS, &encryption).await.unwrap();
    let t_host = RestoreHost::start(&bed, flavor, 2, ALIAS, &encryption).await.unwrap();
    let target_g = g_host.key();
    let g =
        backup_json(&g_host.ctl, &["restore", "--cluster", ALIAS, "--to", &gtid_g, "--target", &target_g]);
    assert_eq!(g["status"], "succeeded", "{g}");
    eprintln!("restore to {gtid_g}: {}", g["result"]);
    let to_t = orchestrator::backup::manifest::format_micros(t_us);
    let target_t = t_host.key();
    let t = backup_json(&t_host.ctl, &["restore", "--cluster", ALIAS, "--to", &to_t, "--target", &target_t]);
    assert_eq!(t["status"], "succeeded", "{t}");
    eprintln!("restore to {to_t}: {}", t["result"]);

    for (what, host, gtid, sums, point) in
        [("GTID", &g_host, &gtid_g, &sums_g, g_us), ("time", &t_host, &gtid_t, &sums_t, t_us)]
    {
        let restored = &host.server;
        assert_eq!(&restored.gtid_executed().await.unwrap(), gtid, "{what}: executed set");
        assert_eq!(&checksums(restored, &TABLES).await.unwrap(), sums, "{what}: checksums");
        check_writes(what, &writes, point, &written_ids(restored).await.unwrap());
    }
    drop(g_host);
    drop(t_host);
    eprintln!("whole test: {:?}", started.elapsed());
}

/// The job `id` as the peers report it.
async fn job(bed: &AwsBed, id: &str) -> serde_json::Value {
    let peer = bed.bed.peers.iter().find(|p| p.is_running()).unwrap();
    orch_tests::peer::get_json(&peer.url(&format!("/api/backup-jobs/{id}"))).await.unwrap()
}

#[tokio::test]
async fn one_backup_at_a_time_and_a_killed_one_leaves_nothing_restorable() {
    use orchestrator::backup::store::ObjectStore;
    let section = backup_section(Flavor::Mariadb, &["tool_throttle = 40".into()]).unwrap();
    let mut bed =
        AwsBed::start(Flavor::Mariadb, 3, ALIAS, |spec| spec.extra_config.push(section)).await.unwrap();
    bed.bed.wait_registered(ALIAS).await.unwrap();
    load(&bed, Flavor::Mariadb).await;
    let ctl = ctl(&bed);

    // A slow backup runs; a second one is refused, naming the holder.
    let first = backup_json(&ctl, &["create", "--full", "--no-wait"]);
    let id = first["id"].as_str().unwrap().to_string();
    let backup_id = first["backup_id"].as_str().unwrap().to_string();
    let runner = first["runner"].as_u64().unwrap();
    let refused = ctl.run(&["backup", "create", "--full", "--yes"]);
    assert_eq!(refused.code, 3, "{refused:?}");
    assert!(
        refused.stderr.contains("another backup is running")
            && refused.stderr.contains(&format!("peer {runner}")),
        "{}",
        refused.stderr
    );
    // Killed mid-upload.
    let deadline = Instant::now() + Duration::from_secs(30);
    while job(&bed, &id).await["stored_bytes"].as_u64().unwrap_or(0) == 0 {
        assert!(Instant::now() < deadline, "the backup never stored a part: {}", job(&bed, &id).await);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bed.bed.peers[runner as usize - 1].kill();
    let killed_at = Instant::now();
    let list = backup_json(&ctl, &["list"]);
    assert!(list["backups"].as_array().unwrap().is_empty(), "a killed backup is never complete: {list}");
    assert!(
        list["incomplete"].as_array().unwrap().iter().any(|i| i.as_str().unwrap().contains(&backup_id)),
        "{list}"
    );
    // Its lock expires (4 s lease), then a backup of the other replica runs.
    let other = bed.bed.cluster.servers.iter().map(|s| s.key()).find(|k| {
        !k.starts_with(&format!("{}:", bed.bed.peers[runner as usize - 1].host))
            && *k != bed.bed.cluster.master().key()
    });
    let other = other.unwrap();
    let next = loop {
        let run = ctl.run(&[
            "-o",
            "json",
            "--yes",
            "--timeout",
            "120",
            "backup",
            "create",
            "--full",
            "--source",
            &other,
        ]);
        if run.code == 0 {
            break run.json();
        }
        // 3: refused while the lock holds; 5: the killed peer led Raft and the
        // others are electing a new leader.
        assert!(run.code == 3 || run.code == 5, "{run:?}");
        assert!(
            killed_at.elapsed() < Duration::from_secs(20),
            "the killed holder's lock never expired: {run:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(next["status"], "succeeded", "{next}");
    eprintln!("the next backup finished {:?} after the kill: {}", killed_at.elapsed(), next["result"]);
    // The killed backup's parts are removed by the leader's upkeep.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let list = backup_json(&ctl, &["list"]);
        if list["incomplete"].as_array().unwrap().is_empty() {
            assert_eq!(list["backups"].as_array().unwrap().len(), 1, "{list}");
            break;
        }
        assert!(Instant::now() < deadline, "the killed backup's parts stay: {list}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // Verify reads every part; a changed part is named.
    let good = next["backup_id"].as_str().unwrap().to_string();
    let verified = backup_json(&ctl, &["verify", &good]);
    assert_eq!(verified["status"], "succeeded", "{verified}");
    let store = orch_tests::backup::bucket(&bed).await;
    let part = format!("{}/full/{good}/part-000002.zst", bed.resources.cluster_id);
    let mut bytes = store.get(&part).await.unwrap();
    bytes[10] ^= 0xff;
    store.put(&part, bytes).await.unwrap();
    let run = ctl.run(&["-o", "json", "--yes", "backup", "verify", &good]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.json()["result"].as_str().unwrap().contains("part-000002.zst"), "{}", run.stdout);

    // Delete: the manifest goes first, then the parts.
    let deleted = ctl.run(&["--yes", "backup", "delete", &good]);
    assert_eq!(deleted.code, 0, "{deleted:?}");
    assert!(store.list(&format!("{}/full/{good}/", bed.resources.cluster_id)).await.unwrap().is_empty());
    bed.bed.peers[runner as usize - 1].spawn().unwrap();
}

#[tokio::test]
async fn a_binlog_purged_before_it_was_archived_is_a_gap() {
    let mut bed = start(Flavor::Mariadb, 0, &[]).await;
    let ctl = ctl(&bed);
    let master = bed.bed.cluster.master();
    let archived = |list: &serde_json::Value| list["archive"]["segments"].as_u64().unwrap_or(0);
    let deadline = Instant::now() + Duration::from_secs(20);
    while archived(&backup_json(&ctl, &["list"])) == 0 {
        assert!(Instant::now() < deadline, "nothing archived");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The master's peer stops; meanwhile binary logs rotate and are purged.
    bed.bed.peers[0].kill();
    master.exec("INSERT INTO app.writes (id) VALUES (1), (2); FLUSH BINARY LOGS").await.unwrap();
    master.exec("INSERT INTO app.writes (id) VALUES (3); FLUSH BINARY LOGS").await.unwrap();
    bed.bed.cluster.wait_replicated(Duration::from_secs(10)).await.unwrap();
    let file: String = {
        use mysql_async::prelude::Queryable;
        let mut c = master.root().await.unwrap();
        let row: mysql_async::Row = c.query_first("SHOW MASTER STATUS").await.unwrap().expect("a binary log");
        row.get(0).unwrap()
    };
    master.exec(&format!("PURGE BINARY LOGS TO '{file}'")).await.unwrap();
    bed.bed.peers[0].spawn().unwrap();
    bed.bed.peers[0].wait_healthy(Duration::from_secs(20)).await.unwrap();
    master.exec("INSERT INTO app.writes (id) VALUES (4)").await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let list = loop {
        let list = backup_json(&ctl, &["list"]);
        if !list["archive"]["gaps"].as_array().unwrap().is_empty() {
            break list;
        }
        assert!(Instant::now() < deadline, "no gap reported: {list}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    let gap = list["archive"]["gaps"][0]["missing"].as_str().unwrap().to_string();
    eprintln!("gap: {gap}");
    // The leader's upkeep reports it as a problem and on /metrics.
    let problems_url = bed.bed.peers[1].url("/api/problems");
    let (problems, _) = orch_tests::peer::poll_json(&problems_url, Duration::from_secs(20), |v| {
        v["problems"][ALIAS].as_array().is_some_and(|p| p.iter().any(|p| p["code"] == "BinlogArchiveGap"))
    })
    .await
    .unwrap_or_else(|last| panic!("no BinlogArchiveGap problem: {last}"));
    eprintln!("problems: {}", problems["problems"][ALIAS]);
    let mut found = false;
    for p in &bed.bed.peers {
        let text = orch_tests::peer::http_client()
            .get(p.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        found |= text.contains(&format!("orchestrator_binlog_archive_gaps{{cluster=\"{ALIAS}\"}} 1"));
    }
    assert!(found, "no peer exports the gap");
}
