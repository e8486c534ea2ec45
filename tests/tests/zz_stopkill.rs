use mysql_async::prelude::Queryable;
use orch_tests::db::{DbCluster, Flavor};
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread")]
async fn stop_after_kill() {
    let flavor = match std::env::var("FLAVOR").as_deref() {
        Ok("mysql") => Flavor::Mysql,
        _ => Flavor::Mariadb,
    };
    let n: usize = std::env::var("NODES").ok().and_then(|r| r.parse().ok()).unwrap_or(3);
    let delay: u64 = std::env::var("DELAY").ok().and_then(|r| r.parse().ok()).unwrap_or(0);
    let stop_io = if flavor == Flavor::Mysql { "STOP REPLICA IO_THREAD" } else { "STOP SLAVE IO_THREAD" };
    for round in 0..3 {
        let block = orch_tests::hosts::HostBlock::reserve(n as u8).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let addrs: Vec<String> = (1..=n as u8).map(|i| block.host(i)).collect();
        let mut cl = DbCluster::start(
            flavor,
            &addrs,
            dir.path(),
            block.state_dir(),
            orch_tests::process::Lifetime::Test,
            &[],
        )
        .await
        .unwrap();
        let w = orch_tests::writer::Writer::start(
            vec![cl.servers[0].host.clone()],
            Duration::from_millis(2),
            Duration::from_secs(2),
        );
        let mut conns = Vec::new();
        for r in &cl.servers[1..] {
            conns.push(r.root().await.unwrap());
        }
        tokio::time::sleep(Duration::from_millis(800)).await;
        cl.servers[0].kill();
        let t0 = Instant::now();
        tokio::time::sleep(Duration::from_millis(delay)).await;
        let hs: Vec<_> = conns
            .into_iter()
            .map(|mut c| {
                tokio::spawn(async move {
                    let t = Instant::now();
                    let _ = c.query_drop(stop_io).await;
                    t.elapsed().as_millis()
                })
            })
            .collect();
        let mut each = Vec::new();
        for h in hs {
            each.push(h.await.unwrap());
        }
        println!("round {round} {flavor:?} n={n} delay={delay}: STOP IO each {each:?} ms, all done {} ms after kill", t0.elapsed().as_millis());
        drop(w);
    }
}
