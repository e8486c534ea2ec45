//! `bench`: benchmarks that print figures (never timed tests).
//!
//! `bench failover`: kill -9 / SIGSTOP of the master to a write acknowledged by the new
//! master, to the write target group (moto) holding only the new master, and to a write
//! through the NLB stand-in; the write gap of planned switchovers; whether short
//! stalls cause failovers.
//!
//! `bench backup`: backup throughput and restore time against the plain
//! `mariadb-backup | zstd | aws s3 cp -` pipeline on the same data and moto, and the
//! binlog archive's recovery point under a steady writer.
//!
//! `bench raft`: leader-loss-to-new-leader time over N rounds of `kill -9` of the
//! leader at a random moment, commands committed per second through the leader, and
//! the peers' resident memory.

use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Parser, Subcommand};
use mysql_async::prelude::Queryable;
use orch_tests::db::Flavor;
use orch_tests::peer::http_client;
use orch_tests::raft::{raft_state, rss_kib, wait_agreed_leader};
use orch_tests::writer::Writer;
use orch_tests::{aws, AwsBed, PeerBed, NLB_TIME_SCALE};

#[path = "../bench_backup.rs"]
mod bench_backup;

#[derive(Parser, Debug)]
#[command(about = "Benchmarks of the orchestrator (figures, not pass/fail)")]
struct Args {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Backup throughput and restore time against the plain pipeline, and the binlog
    /// archive's recovery point (commit to archived) under a steady writer.
    Backup {
        #[arg(long, default_value = "mariadb", value_parser = ["mariadb", "mysql"])]
        flavor: String,
        /// Rows to load before the backups, in MiB.
        #[arg(long, default_value_t = 256)]
        size_mb: u64,
        /// How long the writer runs for the recovery point.
        #[arg(long, default_value_t = 60)]
        rpo_seconds: u64,
        /// Writes per second.
        #[arg(long, default_value_t = 50)]
        rate: u64,
        /// Backups and restores of each pipeline (medians are shown).
        #[arg(long, default_value_t = 3)]
        rounds: u8,
    },
    /// Raft leader failover time, write throughput and memory.
    Raft {
        /// Peers in the group (3, 5 or 7).
        #[arg(long, default_value_t = 3)]
        peers: u8,
        /// Leader kills to measure.
        #[arg(long, default_value_t = 20)]
        rounds: usize,
        /// Seconds of each throughput run.
        #[arg(long, default_value_t = 3)]
        write_seconds: u64,
    },
    /// Master failover on real MariaDB and/or MySQL 9.7 with 3, 5 or 7 hosts: kill -9 and
    /// SIGSTOP of the master at a random moment (kill to a write acknowledged by the
    /// new master), and the write gap of planned switchovers.
    Failover {
        /// Which server flavor: mariadb, mysql, or both (one after the other, figures
        /// side by side).
        #[arg(long, default_value = "mariadb", value_parser = ["mariadb", "mysql", "both"])]
        flavor: String,
        /// Rounds of each kind.
        #[arg(long, default_value_t = 10)]
        rounds: usize,
        /// Which kinds to run.
        #[arg(long, value_delimiter = ',', default_value = "kill,stop,partition,switchover,stall")]
        kinds: Vec<String>,
        /// Hosts in the cluster (a server and a peer each): 3, 5 or 7, or a list
        /// (`3,5,7`: one column of the table per size and flavor).
        #[arg(long, value_delimiter = ',', default_value = "3", value_parser = parse_nodes)]
        nodes: Vec<u8>,
    },
}

/// `--nodes`: a cluster of 3, 5 or 7 hosts.
fn parse_nodes(text: &str) -> Result<u8, String> {
    match text.parse::<u8>() {
        Ok(n @ (3 | 5 | 7)) => Ok(n),
        _ => Err(format!("`{text}`: give 3, 5 or 7")),
    }
}

/// Small xorshift generator: random kill moments without a dependency.
struct Rng(u64);

impl Rng {
    fn seeded() -> Self {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1);
        Rng(t | 1)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

/// Waits until `peer` has the leader's last log entry and heard from it just now.
async fn wait_caught_up(
    peer: &orch_tests::peer::Peer,
    leader: &orch_tests::peer::Peer,
) -> anyhow::Result<()> {
    let started = Instant::now();
    loop {
        let (p, l) = (raft_state(peer).await?, raft_state(leader).await?);
        let fresh = p["last_leader_contact_ms"].as_u64().is_some_and(|ms| ms < 100);
        if fresh && p["last_log_index"] == l["last_log_index"] && p["term"] == l["term"] {
            return Ok(());
        }
        if started.elapsed() > Duration::from_secs(15) {
            anyhow::bail!("peer {} did not catch up: {p} vs leader {l}", peer.id);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Nearest-rank percentile of sorted samples.
fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    match Args::parse().command {
        Cmd::Backup { flavor, size_mb, rpo_seconds, rate, rounds } => {
            bench_backup::run(Flavor::parse(&flavor)?, size_mb, rpo_seconds, rate, rounds.max(1)).await
        }
        Cmd::Raft { peers, rounds, write_seconds } => raft(peers, rounds, write_seconds).await,
        Cmd::Failover { flavor, rounds, kinds, nodes } => {
            let flavors = match flavor.as_str() {
                "both" => Flavor::ALL.to_vec(),
                one => vec![Flavor::parse(one)?],
            };
            failover(&flavors, rounds, &kinds, &nodes).await
        }
    }
}

async fn raft(n: u8, rounds: usize, write_seconds: u64) -> anyhow::Result<()> {
    let mut bed = PeerBed::start(n, |_| {}).await.context("starting peers")?;
    let all: Vec<_> = bed.peers.iter().collect();
    wait_agreed_leader(&all, Duration::from_secs(15)).await?;
    println!("raft benchmark: {n} peers on loopback, heartbeat 50 ms, election timeout 150-300 ms");
    let mut rng = Rng::seeded();
    let mut samples = Vec::new();
    for round in 1..=rounds {
        let running: Vec<_> = bed.running();
        let leader = wait_agreed_leader(&running, Duration::from_secs(15)).await?;
        let old_term = raft_state(bed.peer(leader)).await?["term"].as_u64().unwrap_or(0);
        // Kill at a random moment relative to the heartbeat cycle.
        tokio::time::sleep(Duration::from_millis(100 + rng.below(400))).await;
        let killed_at = Instant::now();
        bed.peer_mut(leader).kill();
        let survivors: Vec<_> = bed.running();
        let took = loop {
            let mut elected = false;
            for p in &survivors {
                if let Ok(s) = raft_state(p).await {
                    if s["role"] == "leader" && s["term"].as_u64().unwrap_or(0) > old_term {
                        elected = true;
                    }
                }
            }
            if elected {
                break killed_at.elapsed();
            }
            if killed_at.elapsed() > Duration::from_secs(15) {
                anyhow::bail!("round {round}: no new leader within 15 s");
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        };
        println!("round {round:>2}: leader {leader} killed, new leader after {}", ms(took));
        samples.push(took);
        bed.peer_mut(leader).spawn()?;
        bed.peer(leader).wait_healthy(Duration::from_secs(15)).await?;
        let all: Vec<_> = bed.peers.iter().collect();
        let current = wait_agreed_leader(&all, Duration::from_secs(15)).await?;
        // Steady state before the next kill: the restarted peer has caught up and
        // hears from the leader, as every peer does before a real failure.
        wait_caught_up(bed.peer(leader), bed.peer(current)).await?;
    }
    samples.sort();
    println!();
    println!(
        "leader loss -> new leader over {} rounds: p50 {}  p99 {}  max {}",
        samples.len(),
        ms(percentile(&samples, 0.50)),
        ms(percentile(&samples, 0.99)),
        ms(percentile(&samples, 1.0))
    );

    let all: Vec<_> = bed.peers.iter().collect();
    let leader = wait_agreed_leader(&all, Duration::from_secs(15)).await?;
    // Each write is a typed operation (a downtime of a made-up instance): the
    // operation's checks, its Raft commit and its audit entry (a second commit).
    let base = bed.peer(leader).url("");
    for in_flight in [1usize, 16] {
        let deadline = Instant::now() + Duration::from_secs(write_seconds);
        let started = Instant::now();
        let mut latencies = Vec::new();
        let client = http_client();
        let workers = (0..in_flight).map(|w| {
            let (client, base) = (client.clone(), base.clone());
            async move {
                let mut lat = Vec::new();
                let mut i = 0u32;
                while Instant::now() < deadline {
                    let t = Instant::now();
                    let url = format!(
                        "{base}/api/begin-downtime/10.254.{w}.{}/3306/bench/w{w}-{i}/1h",
                        i % 250 + 1
                    );
                    let ok = client.post(&url).send().await.is_ok_and(|r| r.status().is_success());
                    if ok {
                        lat.push(t.elapsed());
                    }
                    i += 1;
                }
                lat
            }
        });
        for lat in futures::future::join_all(workers).await {
            latencies.extend(lat);
        }
        let elapsed = started.elapsed().as_secs_f64();
        latencies.sort();
        println!(
            "operations through the leader, {in_flight:>2} in flight: {:.0}/s (latency p50 {}, p99 {})",
            latencies.len() as f64 / elapsed,
            ms(percentile(&latencies, 0.5)),
            ms(percentile(&latencies, 0.99))
        );
    }
    let rss: Vec<String> = bed
        .peers
        .iter()
        .filter_map(|p| {
            p.pid().and_then(rss_kib).map(|k| format!("peer {}: {:.1} MiB", p.id, k as f64 / 1024.0))
        })
        .collect();
    println!("peer RSS: {}", rss.join(", "));
    Ok(())
}

const BENCH_ALIAS: &str = "bench";

/// A test bed whose cluster is registered in Raft, master on host 1, and whose
/// target groups hold it (write) and the replicas (read) in moto.
async fn failover_bed(flavor: Flavor, nodes: u8) -> anyhow::Result<AwsBed> {
    let bed = AwsBed::start(flavor, nodes, BENCH_ALIAS, |spec| {
        spec.recovery_settings = vec!["anti_flap_s = 0".into()];
    })
    .await?;
    bed.bed.wait_registered(BENCH_ALIAS).await?;
    let h: Vec<String> = bed.bed.cluster.servers.iter().map(|s| s.host.clone()).collect();
    let replicas: Vec<&str> = h[1..].iter().map(String::as_str).collect();
    aws::wait_members(&bed.clients, &bed.resources, &[&h[0]], &replicas, Duration::from_secs(20))
        .await
        .map_err(|last| anyhow::anyhow!("target groups never filled: {last}"))?;
    Ok(bed)
}

/// Time until the write target group holds exactly one instance other than `old_id`.
async fn until_write_group_moved(bed: &AwsBed, old_id: &str, since: Instant) -> anyhow::Result<Duration> {
    loop {
        if let Ok(members) = aws::members(&bed.clients, &bed.resources.write_target_group_arn).await {
            if members.len() == 1 && !members.contains(old_id) {
                return Ok(since.elapsed());
            }
        }
        if since.elapsed() > Duration::from_secs(60) {
            anyhow::bail!("the write target group did not move within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Time until `address` refuses TCP connections (a killed server's listening socket
/// closed), tried every millisecond for up to 10 s.
async fn until_refused(address: &str, since: Instant) -> Option<Duration> {
    while since.elapsed() < Duration::from_secs(10) {
        let attempt = tokio::time::timeout(Duration::from_millis(5), tokio::net::TcpStream::connect(address));
        if let Ok(Err(e)) = attempt.await {
            if e.kind() == std::io::ErrorKind::ConnectionRefused {
                return Some(since.elapsed());
            }
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    None
}

/// Time until a write as the application succeeds on one of `hosts`. Each host has
/// its own connection, kept while the server answers (a read-only server refuses
/// the INSERT and the connection stays), on which an INSERT is tried every
/// [`WRITABLE_POLL`]; a connection that breaks is opened again. One slow host does
/// not delay the answer of another.
///
/// A new connection per try (as before) cost about one of the two cores on its own
/// (1,200 logins a second against a 7-node group, measured at 90-115 % of a core
/// between the bench, the servers and the kernel): load that the recovery it
/// measures then had to share the machine with.
async fn until_writable(hosts: &[String], since: Instant) -> anyhow::Result<Duration> {
    let tries = hosts.iter().enumerate().map(|(i, host)| {
        let host = host.clone();
        Box::pin(async move {
            let mut id = 5_000_000_000 + i as u64 * 100_000_000;
            let mut conn: Option<mysql_async::Conn> = None;
            while since.elapsed() < Duration::from_secs(30) {
                if conn.is_none() {
                    conn = orch_tests::writer::connect_within(&host, Duration::from_millis(300)).await;
                }
                if let Some(c) = conn.as_mut() {
                    id += 1;
                    let insert = c.query_drop(format!("INSERT INTO app.writes (id) VALUES ({id})"));
                    match tokio::time::timeout(Duration::from_millis(300), insert).await {
                        Ok(Ok(())) => return Ok(since.elapsed()),
                        // Refused by the server (read-only): the connection is fine.
                        Ok(Err(mysql_async::Error::Server(_))) => {}
                        _ => conn = None,
                    }
                }
                tokio::time::sleep(WRITABLE_POLL).await;
            }
            Err(())
        })
    });
    futures::future::select_ok(tries)
        .await
        .map(|(at, _)| at)
        .map_err(|()| anyhow::anyhow!("no writable master 30 s after the fault"))
}

/// How often [`until_writable`] tries a write on each host.
const WRITABLE_POLL: Duration = Duration::from_millis(3);

/// The newest recovery of the state machine once it has ended: (started unix ms,
/// writable after ms, steps as text).
async fn ended_recovery(peer_url: &str) -> anyhow::Result<(i64, Option<u64>, Vec<String>)> {
    let (state, _) = orch_tests::peer::poll_json(peer_url, Duration::from_secs(30), |s| {
        s["state"]["recoveries"]
            .as_array()
            .and_then(|r| r.last())
            .is_some_and(|r| !r["ended_unix_ms"].is_null())
    })
    .await
    .map_err(|last| anyhow::anyhow!("the recovery never ended: {last}"))?;
    let last = &state["state"]["recoveries"].as_array().and_then(|r| r.last()).cloned().unwrap_or_default();
    let steps = last["steps"]
        .as_array()
        .map(|steps| {
            steps
                .iter()
                .map(|s| {
                    format!(
                        "{:>6} ms  {}",
                        s["at_ms"].as_u64().unwrap_or(0),
                        s["text"].as_str().unwrap_or("")
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    Ok((last["started_unix_ms"].as_i64().unwrap_or(0), last["writable_after_ms"].as_u64(), steps))
}

/// One row of the table: a measurement's name and its samples, or a count.
type Measurement = (String, Samples);

enum Samples {
    Times(Vec<Duration>),
    /// `n` events out of `of` rounds.
    Count {
        n: usize,
        of: usize,
        what: &'static str,
    },
}

impl Samples {
    fn figures(&self) -> String {
        match self {
            Samples::Times(t) => figures(t),
            Samples::Count { n, of, what } => format!("{n} {what} in {of} rounds"),
        }
    }
}

/// `n=10 p50 140 ms p99 198 ms max 198 ms` of one measurement.
fn figures(samples: &[Duration]) -> String {
    let mut sorted = samples.to_vec();
    sorted.sort();
    format!(
        "n={:<3} p50 {:>7} p99 {:>7} max {:>7}",
        sorted.len(),
        ms(percentile(&sorted, 0.5)),
        ms(percentile(&sorted, 0.99)),
        ms(percentile(&sorted, 1.0))
    )
}

/// Every measurement, one row each, one column of figures per flavor.
fn print_table(results: &[(String, Vec<Measurement>)]) {
    let names: Vec<&String> =
        results.first().map(|(_, r)| r.iter().map(|(n, _)| n).collect()).unwrap_or_default();
    let width = names.iter().map(|n| n.len()).max().unwrap_or(0).max(11);
    let mut header = format!("{:<width$}", "measurement");
    for (column, _) in results {
        header.push_str(&format!(" | {column:<42}"));
    }
    println!("{header}");
    println!("{}", "-".repeat(header.len()));
    for (i, name) in names.iter().enumerate() {
        let mut row = format!("{name:<width$}");
        for (_, r) in results {
            let cell = r.get(i).map(|(_, s)| s.figures()).unwrap_or_default();
            row.push_str(&format!(" | {cell:<42}"));
        }
        println!("{row}");
    }
}

async fn failover(flavors: &[Flavor], rounds: usize, kinds: &[String], sizes: &[u8]) -> anyhow::Result<()> {
    let mut results = Vec::new();
    for &flavor in flavors {
        let version = match flavor {
            Flavor::Mariadb => "MariaDB".to_string(),
            Flavor::Mysql => orch_tests::db::MysqlRoot::find()?.version()?,
        };
        for &nodes in sizes {
            println!(
                "failover benchmark on {version}: semi-sync AFTER_SYNC, {nodes} hosts (server + peer each), \
                 probe interval 1 s, {} build of the peers",
                if orch_tests::peer::built_with_release() { "release" } else { "debug" }
            );
            let column = format!("{} {nodes} nodes", flavor.name());
            results.push((column, failover_on(flavor, rounds, kinds, nodes).await?));
            println!();
        }
    }
    print_table(&results);
    println!(
        "\n(*) the stand-in health-checks {NLB_TIME_SCALE}x faster than the target groups say (10 s interval, \
         threshold 3, as the provisioner sets them); on AWS a newly registered target takes traffic only after ~30 s of passing checks"
    );
    Ok(())
}

async fn failover_on(
    flavor: Flavor,
    rounds: usize,
    kinds: &[String],
    nodes: u8,
) -> anyhow::Result<Vec<Measurement>> {
    let mut rng = Rng::seeded();
    let mut results: Vec<Measurement> = Vec::new();
    for kind in kinds {
        let mut samples = Vec::new();
        match kind.as_str() {
            "kill" | "stop" | "partition" => {
                let (mut group_samples, mut nlb_samples) = (Vec::new(), Vec::new());
                let (mut detect_samples, mut decided_samples) = (Vec::new(), Vec::new());
                let mut refused_samples = Vec::new();
                let (mut lost_writes, mut acknowledged_writes) = (0usize, 0usize);
                for round in 1..=rounds {
                    let bed = failover_bed(flavor, nodes).await?;
                    let others: Vec<String> =
                        bed.bed.cluster.servers[1..].iter().map(|s| s.host.clone()).collect();
                    let all: Vec<String> = bed.bed.cluster.servers.iter().map(|s| s.host.clone()).collect();
                    // The application writes throughout: every acknowledged write must be
                    // on the new master.
                    let writer = Writer::start(all, Duration::from_millis(2), Duration::from_secs(2));
                    // A random moment relative to the probe cycle.
                    tokio::time::sleep(Duration::from_millis(200 + rng.below(1000))).await;
                    let t0 = Instant::now();
                    let t0_unix_ms = orchestrator::unix_millis_now();
                    let mut cut = None;
                    match kind.as_str() {
                        // The signal alone: waiting here for the process to be reaped
                        // (as `kill()` does) held the bench's single thread, its probes,
                        // the application and the stand-in, for the whole teardown.
                        "kill" => bed.bed.cluster.servers[0].signal(libc::SIGKILL),
                        "stop" => bed.bed.cluster.servers[0].signal(libc::SIGSTOP),
                        _ => cut = Some(orch_tests::netfault::Partition::isolate(&bed.bed.hosts, 1)?),
                    }
                    let old_id = bed.resources.id_of(&bed.bed.cluster.servers[0].host).to_string();
                    let nlb = vec![bed.nlb_host().to_string()];
                    let killed = bed.bed.cluster.servers[0].key();
                    let (took, moved, through_nlb, refused) = tokio::join!(
                        until_writable(&others, t0),
                        until_write_group_moved(&bed, &old_id, t0),
                        until_writable(&nlb, t0),
                        async {
                            if kind == "kill" {
                                until_refused(&killed, t0).await
                            } else {
                                None
                            }
                        },
                    );
                    refused_samples.extend(refused);
                    let (took, moved, through_nlb) = (took?, moved?, through_nlb?);
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    let report = writer.stop().await;
                    let old_key = bed.bed.cluster.servers[0].key();
                    let (recorded, _) = orch_tests::peer::poll_json(
                        &bed.bed.peers[1].url("/api/raft/state-machine"),
                        Duration::from_secs(30),
                        |s| {
                            s["state"]["clusters"][BENCH_ALIAS]["master"]
                                .as_str()
                                .is_some_and(|m| m != old_key)
                        },
                    )
                    .await
                    .map_err(|last| anyhow::anyhow!("the new master was never recorded: {last}"))?;
                    let new_master = recorded["state"]["clusters"][BENCH_ALIAS]["master"]
                        .as_str()
                        .and_then(|k| k.rsplit_once(':').map(|(h, _)| h.to_string()))
                        .ok_or_else(|| anyhow::anyhow!("no master recorded: {recorded}"))?;
                    let (started_unix_ms, writable_after_ms, steps) =
                        ended_recovery(&bed.bed.peers[1].url("/api/raft/state-machine")).await?;
                    let detected = Duration::from_millis((started_unix_ms - t0_unix_ms).max(0) as u64);
                    detect_samples.push(detected);
                    if let Some(w) = writable_after_ms {
                        decided_samples.push(Duration::from_millis(w));
                    }
                    let on_master = orch_tests::writer::ids_on(&new_master).await?;
                    let lost = report.acknowledged.iter().filter(|id| !on_master.contains(id)).count();
                    lost_writes += lost;
                    acknowledged_writes += report.acknowledged.len();
                    println!(
                        "{:>7} {kind:>9} round {round:>2}: new master writable after {}, write group moved after {}, \
                         write through the NLB stand-in after {}; {} writes acknowledged, {lost} lost",
                        flavor.name(),
                        ms(took),
                        ms(moved),
                        ms(through_nlb),
                        report.acknowledged.len()
                    );
                    if std::env::var_os("BENCH_STEPS").is_some() {
                        println!("        recovery started {} after the fault:", ms(detected));
                        for step in &steps {
                            println!("        {step}");
                        }
                    }
                    samples.push(took);
                    group_samples.push(moved);
                    nlb_samples.push(through_nlb);
                    if kind == "stop" {
                        bed.bed.cluster.servers[0].signal(libc::SIGCONT);
                    }
                    if let Some(mut cut) = cut {
                        cut.heal()?;
                    }
                }
                let fault = match kind.as_str() {
                    "kill" => "kill -9",
                    "stop" => "SIGSTOP",
                    _ => "master host partitioned",
                };
                println!(
                    "{}: {fault}, {rounds} rounds: {acknowledged_writes} writes acknowledged, {lost_writes} lost",
                    flavor.name()
                );
                if lost_writes > 0 {
                    anyhow::bail!("{lost_writes} acknowledged write(s) lost after {fault}");
                }
                if kind == "kill" {
                    // Nothing on the network changes before the kernel closes the killed
                    // server's sockets, after it has freed its memory.
                    results.push((
                        format!("{fault} -> killed server's port refuses connections"),
                        Samples::Times(refused_samples),
                    ));
                }
                for (row, times) in [
                    (" -> write acknowledged by new master", samples),
                    (" -> recovery started (detection)", detect_samples),
                    (": recovery start -> writable (recorded)", decided_samples),
                    (" -> write target group converged", group_samples),
                    (" -> write through the NLB stand-in (*)", nlb_samples),
                ] {
                    results.push((format!("{fault}{row}"), Samples::Times(times)));
                }
                results.push((
                    format!("{fault}: acknowledged writes lost"),
                    Samples::Count { n: lost_writes, of: rounds, what: "lost" },
                ));
            }
            "switchover" => {
                let bed = failover_bed(flavor, nodes).await?;
                let hosts: Vec<String> = bed.bed.cluster.servers.iter().map(|s| s.host.clone()).collect();
                for round in 1..=rounds {
                    let target = &hosts[round % hosts.len()];
                    let writer =
                        Writer::start(hosts.clone(), Duration::from_millis(2), Duration::from_secs(2));
                    let writer_started = Instant::now();
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    let asked_at = writer_started.elapsed();
                    let url = bed.bed.peers[0]
                        .url(&format!("/api/graceful-master-takeover/{BENCH_ALIAS}/{target}/3306"));
                    let resp = http_client().post(&url).send().await?;
                    let ok = resp.status().is_success();
                    let body: serde_json::Value = resp.json().await.unwrap_or_default();
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    let report = writer.stop().await;
                    if !ok {
                        anyhow::bail!("switchover to {target} failed: {body}");
                    }
                    let gap_start = report.longest_gap_end.saturating_sub(report.longest_gap);
                    println!(
                        "{:>7} switchover round {round:>2} to {target}: write gap {} ({} writes acknowledged), \
                         from {:+.0} ms to {:+.0} ms of the request",
                        flavor.name(),
                        ms(report.longest_gap),
                        report.acknowledged.len(),
                        gap_start.as_secs_f64() * 1000.0 - asked_at.as_secs_f64() * 1000.0,
                        report.longest_gap_end.as_secs_f64() * 1000.0 - asked_at.as_secs_f64() * 1000.0,
                    );
                    if !report.slow.is_empty() {
                        println!(
                            "        slow client waits (since the writer started; request at {} ms): {}",
                            asked_at.as_millis(),
                            report.slow.join(", ")
                        );
                    }
                    if std::env::var_os("BENCH_STEPS").is_some() {
                        let (_, _, steps) =
                            ended_recovery(&bed.bed.peers[0].url("/api/raft/state-machine")).await?;
                        for step in &steps {
                            println!("        {step}");
                        }
                    }
                    samples.push(report.longest_gap);
                }
                results.push(("planned switchover: longest write gap".into(), Samples::Times(samples)));
            }
            "stall" => {
                // SIGSTOP for 0.9 s, then SIGCONT: no failover may follow.
                let bed = failover_bed(flavor, nodes).await?;
                let url = bed.bed.peers[0].url("/api/raft/state-machine");
                let mut failovers = 0;
                for round in 1..=rounds {
                    tokio::time::sleep(Duration::from_millis(200 + rng.below(1000))).await;
                    bed.bed.cluster.servers[0].signal(libc::SIGSTOP);
                    tokio::time::sleep(Duration::from_millis(900)).await;
                    bed.bed.cluster.servers[0].signal(libc::SIGCONT);
                    tokio::time::sleep(Duration::from_millis(2500)).await;
                    let s = orch_tests::peer::get_json(&url).await?;
                    let n = s["state"]["recoveries"].as_array().map(Vec::len).unwrap_or(0);
                    println!("stall round {round:>2}: 0.9 s SIGSTOP, recoveries so far: {n}");
                    failovers = n;
                }
                println!(
                    "\n{}: 0.9 s stalls, {rounds} rounds, {failovers} failover(s) caused",
                    flavor.name()
                );
                results.push((
                    "0.9 s SIGSTOP stalls: failovers caused".into(),
                    Samples::Count { n: failovers, of: rounds, what: "failovers" },
                ));
            }
            other => anyhow::bail!("unknown kind `{other}` (kill, stop, partition, switchover, stall)"),
        }
    }
    Ok(results)
}
