//! End to end in a real headless Chromium: an operator logs in to a peer's web UI with
//! a token, opens the topology of a running 3-node MariaDB cluster, is refused a
//! switchover to a lagging replica with the API's reason, switches over to another
//! from the UI (the plan shown first) and sees the new master drawn without a reload;
//! a read-only token sees no operation controls; and the topology page draws 50
//! instances (10 clusters of 5, given as data) without overlapping nodes, timed and
//! printed (the figure is reported, not asserted: a slow machine fails no test).
//! Screenshots are kept in `target/test-artifacts/webui/`.

use std::time::{Duration, Instant};

use orch_tests::browser::Browser;
use orch_tests::db::Flavor;
use orch_tests::peer::{OPERATE_TOKEN, READ_TOKEN};
use orch_tests::TestBed;
use serde_json::{json, Value};

const ALIAS: &str = "web";

/// Opens `url` (when given) and logs in with `token` at the login form.
async fn log_in(b: &Browser, url: Option<&str>, token: &str) {
    if let Some(url) = url {
        b.goto(url).await.unwrap();
    }
    let field = b.wait_for("#login:not([hidden]) #token", Duration::from_secs(10)).await.unwrap();
    field.send_keys(token).await.unwrap();
    b.click("#login button[type=submit]", Duration::from_secs(1)).await.unwrap();
    b.wait_for("#scope", Duration::from_secs(10)).await.unwrap();
}

async fn master_drawn(b: &Browser) -> String {
    let v = b
        .eval(
            "const m = document.querySelector('.cluster .node.master'); return m ? m.dataset.key : '';",
            vec![],
        )
        .await
        .unwrap();
    v.as_str().unwrap_or_default().to_string()
}

#[tokio::test]
async fn an_operator_switches_over_from_the_web_ui() {
    let bed = TestBed::start_with(Flavor::Mariadb, 3, ALIAS, |spec| {
        spec.recovery_settings = vec!["max_lag_on_failover_s = 5".into()]
    })
    .await
    .expect("test bed");
    bed.wait_registered(ALIAS).await.unwrap();
    let hosts: Vec<String> = bed.cluster.servers.iter().map(|s| s.key()).collect();
    let (master, r1, r2) = (hosts[0].clone(), hosts[1].clone(), hosts[2].clone());
    let base = format!("http://{}/", bed.peers[1].http_address());
    let b = Browser::start("webui", 1400, 1000).await.expect("chromium");

    // Log in; the cluster's tree is drawn with the master at its root.
    log_in(&b, Some(&base), OPERATE_TOKEN).await;
    assert_eq!(
        b.eval("return document.getElementById('scope').textContent", vec![]).await.unwrap(),
        "operate"
    );
    b.goto(&format!("{base}#/cluster/{ALIAS}")).await.unwrap();
    b.wait_for(&format!(".cluster .node.master[data-key='{master}']"), Duration::from_secs(15))
        .await
        .unwrap();
    for r in [&r1, &r2] {
        b.wait_for(&format!(".node.master + ul .node[data-key='{r}']"), Duration::from_secs(15))
            .await
            .unwrap();
    }
    b.wait_true(
        "return document.getElementById('live').textContent.includes('live')",
        Duration::from_secs(10),
    )
    .await
    .unwrap();
    // Marks this page: a reload would lose it.
    b.eval("window.__sameDocument = 'yes'; return true", vec![]).await.unwrap();
    let before = b.screenshot("topology-before").await.unwrap();
    eprintln!("screenshot: {}", before.display());

    // Replica 2 delayed past the 5 s limit: the dialog shows the API's refusal.
    let lagging = &bed.cluster.servers[2];
    lagging.exec(&Flavor::Mariadb.delay_sql(30)).await.unwrap();
    bed.cluster.master().exec("CREATE DATABASE IF NOT EXISTS app").await.unwrap();
    bed.cluster.master().exec("CREATE TABLE IF NOT EXISTS app.web (id INT PRIMARY KEY)").await.unwrap();
    bed.cluster.master().exec("INSERT INTO app.web VALUES (1)").await.unwrap();
    b.wait_true(
        &format!(
            "const n = document.querySelector(\".node[data-key='{r2}']\"); return !!n && /([6-9]|\\d\\d+) s lag/.test(n.textContent)"
        ),
        Duration::from_secs(30),
    )
    .await
    .unwrap();
    b.click(&format!("button[data-op=switchover][data-key='{r2}']"), Duration::from_secs(5)).await.unwrap();
    let refused = b.wait_for("#plan-refused", Duration::from_secs(10)).await.unwrap().text().await.unwrap();
    assert!(refused.contains("lag"), "the refusal does not give the reason: {refused}");
    assert_eq!(
        b.eval("return document.getElementById('dialog-confirm').disabled", vec![]).await.unwrap(),
        Value::Bool(true),
        "a refused switchover can still be confirmed"
    );
    b.screenshot("switchover-refused").await.unwrap();
    b.click("#dialog-cancel", Duration::from_secs(1)).await.unwrap();
    lagging.exec(&Flavor::Mariadb.delay_sql(0)).await.unwrap();

    // A switchover to replica 1: the plan first, then the new master drawn in place.
    b.click(&format!("button[data-op=switchover][data-key='{r1}']"), Duration::from_secs(5)).await.unwrap();
    b.wait_for("#dialog-confirm:not([disabled])", Duration::from_secs(15)).await.unwrap();
    let plan = b.eval("return document.getElementById('dialog-body').textContent", vec![]).await.unwrap();
    let plan = plan.as_str().unwrap().to_string();
    assert!(plan.contains(&r1) && plan.contains(&master), "the plan does not name the change: {plan}");
    let clicked = Instant::now();
    b.click("#dialog-confirm", Duration::from_secs(1)).await.unwrap();
    b.wait_true(
        &format!("const m = document.querySelector('.cluster .node.master'); return !!m && m.dataset.key === '{r1}'"),
        Duration::from_secs(30),
    )
    .await
    .unwrap_or_else(|e| panic!("the new master was never drawn: {e}"));
    eprintln!("new master {r1} drawn {:?} after the confirmation", clicked.elapsed());
    assert_eq!(master_drawn(&b).await, r1);
    assert_eq!(
        b.eval("return window.__sameDocument || 'reloaded'", vec![]).await.unwrap(),
        "yes",
        "the page was reloaded"
    );
    // The old master hangs under the new one.
    b.wait_for(&format!(".node.master + ul .node[data-key='{master}']"), Duration::from_secs(20))
        .await
        .unwrap();
    let after = b.screenshot("topology-after").await.unwrap();
    eprintln!("screenshot: {}", after.display());

    // A read-only token: the same page, no operation controls at all.
    b.click("#logout", Duration::from_secs(1)).await.unwrap();
    log_in(&b, None, READ_TOKEN).await;
    b.wait_for(".cluster .node.master", Duration::from_secs(10)).await.unwrap();
    assert_eq!(b.eval("return document.getElementById('scope').textContent", vec![]).await.unwrap(), "read");
    assert_eq!(b.count("button[data-op], select[data-op], .node[draggable=true]").await.unwrap(), 0);
    b.goto(&format!("{base}#/recoveries")).await.unwrap();
    b.wait_for("[data-recovery]", Duration::from_secs(10)).await.unwrap();
    assert_eq!(b.count("button[data-op]").await.unwrap(), 0);
    b.goto(&format!("{base}#/raft")).await.unwrap();
    b.wait_for("[data-peer]", Duration::from_secs(10)).await.unwrap();
    assert_eq!(b.count("button[data-op]").await.unwrap(), 0);
    b.close().await;
}

/// Ten clusters of five instances (a master and four replicas) as the API gives them.
fn fixture() -> Value {
    let clusters: Vec<Value> = (0..10)
        .map(|c| {
            let key = |i: u32| format!("10.1.{c}.{}:3306", i + 1);
            let instances: Vec<Value> = (0..5)
                .map(|i| {
                    let replication = (i > 0).then(|| {
                        json!({"source": key(0), "io_thread": "running", "sql_thread": "running",
                               "seconds_behind": i, "gtid_mode": "ON"})
                    });
                    json!({
                        "key": key(i), "role": if i == 0 { "master" } else { "replica" }, "reachable": true,
                        "server_id": 100 * c + i, "version": "9.7.4", "flavor": "mysql", "read_only": i > 0,
                        "gtid_executed": format!("3e11fa47-71ca-11e1-9e33-c80aa9429{c:03}:1-{}", 1000 + i),
                        "replication": replication, "replicas": [], "semi_sync_master": i == 0,
                        "semi_sync_replica": i > 0, "downtimed": i == 4, "promotion_rule": "neutral",
                    })
                })
                .collect();
            json!({"alias": format!("fixture-{c:02}"), "master": key(0), "instances": instances,
                   "recorded_master": key(0), "open_recovery_id": 0, "fencing_epoch": 1})
        })
        .collect();
    Value::Array(clusters)
}

#[tokio::test]
async fn fifty_instances_render_fast_and_never_overlap() {
    // A cluster of three: the live one beside the fixture's fifty.
    let bed = TestBed::start(3, ALIAS).await.expect("test bed");
    let base = format!("http://{}/", bed.peers[0].http_address());
    let b = Browser::start("webui", 1400, 1000).await.expect("chromium");
    log_in(&b, Some(&base), READ_TOKEN).await;
    let mut times = Vec::new();
    for _ in 0..3 {
        let ms = b.eval("return orchUI.drawTopologies(arguments[0])", vec![fixture()]).await.unwrap();
        times.push(ms.as_f64().unwrap());
    }
    let nodes = b.count(".cluster .node").await.unwrap();
    assert!(nodes >= 50, "{nodes} nodes drawn");
    // No two instance cards overlap, and every one is inside the page's width.
    let overlaps = b
        .eval(
            "const r = [...document.querySelectorAll('.cluster .node')].map(n => n.getBoundingClientRect());
             let bad = 0;
             for (let i = 0; i < r.length; i++) for (let j = i + 1; j < r.length; j++) {
               const a = r[i], c = r[j];
               if (a.left < c.right && c.left < a.right && a.top < c.bottom && c.top < a.bottom) bad++;
             }
             return bad;",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(overlaps, json!(0), "instance cards overlap");
    let shot = b.screenshot("fifty-instances").await.unwrap();
    times.sort_by(f64::total_cmp);
    println!(
        "topology page with {nodes} instances (10 clusters of 5): drawn in {:.1} ms median (runs {:?} ms); screenshot {}",
        times[1],
        times.iter().map(|t| format!("{t:.1}")).collect::<Vec<_>>(),
        shot.display()
    );
    b.close().await;
}
