//! End to end, on both flavors: the users of `provisioner::mysql_users` hold no more
//! than their role needs. (That the orchestrator's privileges are enough is what every
//! failover and switchover test shows: they run as that user.) The application user
//! cannot get around a fence; the replication user and the orchestrator cannot touch
//! the application's data.

use std::collections::BTreeSet;

use mysql_async::prelude::Queryable;
use orch_tests::db::{
    DbCluster, Flavor, APP_PASSWORD, APP_USER, ORCH_PASSWORD, ORCH_USER, REPL_PASSWORD, REPL_USER,
};
use orch_tests::hosts::HostBlock;
use orch_tests::on_both_flavors;
use orch_tests::process::Lifetime;
use provisioner::mysql_users::{global_privileges, UserRole};

on_both_flavors!(every_user_holds_only_what_its_role_needs);

/// The global privileges `SHOW GRANTS` lists (`GRANT a, b ON *.* TO ...` lines; MySQL
/// puts its dynamic privileges on a line of their own).
fn global_grants(lines: &[String]) -> BTreeSet<String> {
    lines
        .iter()
        .filter_map(|l| l.strip_prefix("GRANT ")?.split_once(" ON *.* ").map(|(p, _)| p.to_string()))
        .flat_map(|p| p.split(',').map(|x| x.trim().to_string()).collect::<Vec<_>>())
        .collect()
}

fn expected(flavor: Flavor, role: UserRole) -> BTreeSet<String> {
    global_privileges(flavor.server_flavor(), role).iter().map(|p| p.to_string()).collect()
}

/// Runs `sql` as `user` on `server`; the server's error text when refused.
async fn try_as(
    server: &orch_tests::db::DbServer,
    user: &str,
    password: &str,
    sql: &str,
) -> Result<(), String> {
    let mut c = server.connect_as(user, password).await.map_err(|e| format!("{e:#}"))?;
    let result = c.query_drop(sql).await.map_err(|e| e.to_string());
    let _ = c.disconnect().await;
    result
}

async fn every_user_holds_only_what_its_role_needs(flavor: Flavor) {
    let hosts = HostBlock::reserve(2).unwrap();
    let dir = orch_tests::test_dir("orch-grants-").unwrap();
    let addrs = vec![hosts.host(1), hosts.host(2)];
    let mut cluster =
        DbCluster::start(flavor, &addrs, dir.path(), hosts.state_dir(), Lifetime::Test, &[]).await.unwrap();
    let (master, replica) = (&cluster.servers[0], &cluster.servers[1]);

    // The grants are the provisioner's, no more.
    let grants: Vec<String> =
        master.root().await.unwrap().query(format!("SHOW GRANTS FOR '{ORCH_USER}'@'%'")).await.unwrap();
    assert_eq!(global_grants(&grants), expected(flavor, UserRole::Orchestrator), "{grants:?}");
    let grants: Vec<String> =
        master.root().await.unwrap().query(format!("SHOW GRANTS FOR '{REPL_USER}'@'%'")).await.unwrap();
    assert_eq!(global_grants(&grants), expected(flavor, UserRole::Replication), "{grants:?}");
    let grants: Vec<String> =
        master.root().await.unwrap().query(format!("SHOW GRANTS FOR '{APP_USER}'@'%'")).await.unwrap();
    assert_eq!(global_grants(&grants), BTreeSet::from(["USAGE".to_string()]), "{grants:?}");

    // The application writes its schema on the master...
    try_as(master, APP_USER, APP_PASSWORD, "INSERT INTO app.writes (id) VALUES (1)").await.unwrap();
    cluster.wait_replicated(std::time::Duration::from_secs(10)).await.unwrap();
    // ...but cannot write a read-only server, nor lift read_only, nor kill others.
    let refused = try_as(replica, APP_USER, APP_PASSWORD, "INSERT INTO app.writes (id) VALUES (2)").await;
    assert!(
        refused.as_ref().is_err_and(|e| e.contains("read-only") || e.contains("read_only")),
        "{refused:?}"
    );
    for sql in ["SET GLOBAL read_only = OFF", "CREATE DATABASE other", "SELECT * FROM mysql.user"] {
        let refused = try_as(master, APP_USER, APP_PASSWORD, sql).await;
        assert!(refused.is_err(), "the application may run `{sql}`");
    }

    // Replication and the orchestrator do not touch the application's data.
    for (user, password) in [(REPL_USER, REPL_PASSWORD), (ORCH_USER, ORCH_PASSWORD)] {
        for sql in
            ["SELECT * FROM app.writes", "INSERT INTO app.writes (id) VALUES (3)", "DROP TABLE app.writes"]
        {
            let refused = try_as(master, user, password, sql).await;
            assert!(refused.is_err(), "{user} may run `{sql}`");
        }
    }
    let refused = try_as(master, REPL_USER, REPL_PASSWORD, "SET GLOBAL read_only = ON").await;
    assert!(refused.is_err(), "the replication user may set read_only");
    // The orchestrator can do its own job: turn read_only on and off again.
    try_as(master, ORCH_USER, ORCH_PASSWORD, "SET GLOBAL read_only = ON").await.unwrap();
    try_as(master, ORCH_USER, ORCH_PASSWORD, "SET GLOBAL read_only = OFF").await.unwrap();
    for s in &mut cluster.servers {
        s.kill();
    }
}
