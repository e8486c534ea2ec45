//! `bench backup`: the backup pipeline against the plain one, on the same data and the
//! same moto: a full backup's throughput (ours: `orchctl backup create --full`; plain:
//! `mariadb-backup --backup --stream=xbstream | zstd | aws s3 cp -`, or on MySQL a
//! local clone tarred into the same pipe), the restore time (ours: `orchctl backup
//! restore` onto a fresh server, started and verified; plain: `aws s3 cp - | zstd -d |
//! mbstream -x` and `mariadb-backup --prepare`, the server never started), and the
//! binlog archive's recovery point (commit to archived) under a steady writer.

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use orch_tests::backup::{backup_section, bucket, AckWriter, RestoreHost};
use orch_tests::ctl::Ctl;
use orch_tests::db::{find_program, Flavor, MysqlRoot, BACKUP_PASSWORD, BACKUP_USER};
use orch_tests::peer::ADMIN_TOKEN;
use orch_tests::{aws, AwsBed};
use orchestrator::backup::archive::Segment;
use orchestrator::backup::store::ObjectStore;

const ALIAS: &str = "bench";

/// `bash -c SCRIPT` with moto's credentials; fails with its output.
fn bash(script: &str, moto: &str) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let out = Command::new("bash")
        .args(["-c", &format!("set -euo pipefail; {script}")])
        .env("AWS_ACCESS_KEY_ID", aws::ACCESS_KEY_ID)
        .env("AWS_SECRET_ACCESS_KEY", aws::SECRET_ACCESS_KEY)
        .env("AWS_DEFAULT_REGION", aws::REGION)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("MOTO", moto)
        .output()?;
    if !out.status.success() {
        bail!("{script}: {}", String::from_utf8_lossy(&out.stderr).lines().last().unwrap_or_default());
    }
    Ok(started.elapsed())
}

fn run_ctl(ctl: &Ctl, args: &[&str]) -> anyhow::Result<serde_json::Value> {
    let mut all = vec!["-o", "json", "--yes", "--timeout", "600", "backup"];
    all.extend_from_slice(args);
    let run = ctl.run(&all);
    if run.code != 0 {
        bail!("orchctl {args:?}: {} {}", run.stdout, run.stderr);
    }
    let job = run.json();
    if job["status"] != "succeeded" {
        bail!("orchctl {args:?}: {job}");
    }
    Ok(job)
}

fn job_seconds(job: &serde_json::Value) -> Duration {
    let ms = job["ended_unix_ms"].as_i64().unwrap_or(0) - job["started_unix_ms"].as_i64().unwrap_or(0);
    Duration::from_millis(ms.max(0) as u64)
}

/// Percentile of sorted microsecond samples, in seconds.
fn pct(sorted: &[i64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1] as f64 / 1e6
}

/// One round's figures (seconds, bytes).
struct Round {
    ours_backup: f64,
    ours_raw: u64,
    ours_stored: u64,
    plain_backup: f64,
    plain_raw: u64,
    plain_stored: u64,
    ours_prepared: f64,
    ours_restore: f64,
    plain_restore: f64,
}

/// When the job entered the phase starting with `prefix` (seconds after its start).
fn phase_at(job: &serde_json::Value, prefix: &str) -> Option<f64> {
    let start = job["started_unix_ms"].as_i64()?;
    job["phases"].as_array()?.iter().find_map(|p| {
        let name = p["name"].as_str()?;
        name.starts_with(prefix)
            .then(|| (p["started_unix_ms"].as_i64().unwrap_or(start) - start) as f64 / 1000.0)
    })
}

#[allow(clippy::too_many_arguments)]
async fn round_once(
    bed: &AwsBed,
    flavor: Flavor,
    ctl: &Ctl,
    source: &orch_tests::db::DbServer,
    work: &std::path::Path,
    moto: &str,
    bucket_name: &str,
    round: u8,
) -> anyhow::Result<Round> {
    // Each measurement starts with no dirty pages left by the one before.
    let settle = || {
        let _ = Command::new("sync").status();
    };
    // Ours.
    settle();
    let ours = run_ctl(ctl, &["create", "--full", "--source", &source.key()])?;
    let ours_time = job_seconds(&ours);
    eprintln!("ours: {}", ours["result"]);
    // The plain pipeline, on the same replica.
    let count = work.join("count");
    let key = format!("s3://{bucket_name}/plain/{round}/full.zst");
    let datadir = source.base.join("data");
    let plain_script = match flavor {
        Flavor::Mariadb => {
            let options = work.join("b.cnf");
            std::fs::write(
                &options,
                format!(
                    "[mariadb-backup]\nuser={BACKUP_USER}\npassword={BACKUP_PASSWORD}\nhost={}\nport=3306\n",
                    source.host
                ),
            )?;
            let _ = std::fs::remove_dir_all(work.join("t"));
            std::fs::create_dir_all(work.join("t"))?;
            format!(
                "{} --defaults-file={} --backup --stream=xbstream --target-dir={} --datadir={} 2>{}/tool.log \
                 | tee >(wc -c > {}) | zstd -q -3 | aws s3 cp - {key} --endpoint-url $MOTO",
                find_program("mariadb-backup")?.display(),
                options.display(),
                work.join("t").display(),
                datadir.display(),
                work.display(),
                count.display()
            )
        }
        Flavor::Mysql => {
            let root = MysqlRoot::find()?;
            let clone = work.join(format!("clone-{round}"));
            let mut mysql = root.command("usr/bin/mysql");
            mysql.args(["--no-defaults", "-uroot", &format!("--socket={}", source.socket().display())]);
            let line: Vec<String> = std::iter::once(mysql.get_program().to_string_lossy().into_owned())
                .chain(mysql.get_args().map(|a| a.to_string_lossy().into_owned()))
                .collect();
            format!(
                "{} -e \"CLONE LOCAL DATA DIRECTORY = '{}'\" && tar -C {} -cf - . | tee >(wc -c > {}) \
                 | zstd -q -3 | aws s3 cp - {key} --endpoint-url $MOTO && rm -rf {}",
                line.join(" "),
                clone.display(),
                clone.display(),
                count.display(),
                clone.display()
            )
        }
    };
    settle();
    let plain_time = bash(&plain_script, moto)?;
    std::thread::sleep(Duration::from_millis(200));
    let plain_raw: u64 = std::fs::read_to_string(&count)?.trim().parse().context("stream byte count")?;
    let plain_stored =
        bucket(bed).await.list(&format!("plain/{round}/")).await?.iter().map(|o| o.size).sum::<u64>();
    // Restores: ours onto a fresh server, the plain reverse into a directory.
    let host = RestoreHost::start(bed, flavor, round, ALIAS, &[]).await?;
    settle();
    let restored =
        run_ctl(&host.ctl, &["restore", "--cluster", ALIAS, "--to", "latest", "--target", &host.key()])?;
    eprintln!("ours: {}", restored["result"]);
    if let Some(phases) = restored["phases"].as_array() {
        let start = restored["started_unix_ms"].as_i64().unwrap_or(0);
        for p in phases {
            eprintln!(
                "  +{:.2}s {}",
                (p["started_unix_ms"].as_i64().unwrap_or(0) - start) as f64 / 1000.0,
                p["name"]
            );
        }
    }
    let into = work.join(format!("restore-{round}"));
    std::fs::create_dir_all(&into)?;
    let reverse = match flavor {
        Flavor::Mariadb => format!(
            "aws s3 cp {key} - --endpoint-url $MOTO | zstd -q -d | {} -x -C {} && {} --prepare --target-dir={} > {}/prepare.log 2>&1",
            find_program("mbstream")?.display(),
            into.display(),
            find_program("mariadb-backup")?.display(),
            into.display(),
            work.display()
        ),
        Flavor::Mysql => format!("aws s3 cp {key} - --endpoint-url $MOTO | zstd -q -d | tar -x -C {}", into.display()),
    };
    settle();
    let plain_restore = bash(&reverse, moto)?;
    let _ = std::fs::remove_dir_all(&into);
    drop(host);
    Ok(Round {
        ours_backup: ours_time.as_secs_f64(),
        ours_raw: ours["bytes_done"].as_u64().unwrap_or(0),
        ours_stored: ours["stored_bytes"].as_u64().unwrap_or(0),
        plain_backup: plain_time.as_secs_f64(),
        plain_raw,
        plain_stored,
        ours_prepared: phase_at(&restored, "stopping").unwrap_or(f64::NAN),
        ours_restore: job_seconds(&restored).as_secs_f64(),
        plain_restore: plain_restore.as_secs_f64(),
    })
}

pub async fn run(
    flavor: Flavor,
    size_mb: u64,
    rpo_seconds: u64,
    rate: u64,
    rounds: u8,
) -> anyhow::Result<()> {
    let part_mb = std::env::var("BENCH_PART_MB").unwrap_or_else(|_| "16".into());
    let settings = [
        format!("part_size_mb = {part_mb}"),
        "binlog_flush_s = 5".into(),
        "tool_parallel = 4".into(),
        format!("concurrency = {}", std::env::var("BENCH_CONCURRENCY").unwrap_or_else(|_| "4".into())),
        "call_timeout_s = 300".into(),
    ];
    let section = backup_section(flavor, &settings)?;
    let bed =
        AwsBed::start_with_spare(flavor, 3, rounds, ALIAS, |spec| spec.extra_config.push(section)).await?;
    bed.bed.wait_registered(ALIAS).await?;
    let master = bed.bed.cluster.master();
    eprintln!("loading {size_mb} MiB of rows");
    let depth = match flavor {
        Flavor::Mariadb => "SET SESSION max_recursive_iterations = 10000000",
        Flavor::Mysql => "SET SESSION cte_max_recursion_depth = 10000000",
    };
    // Eight tables (a tool copies files in parallel); each row a quarter random bytes
    // and the rest text, so the data compresses about 3.5:1, as typical table data.
    let tables = 8u64;
    for t in 0..tables {
        master
            .exec(&format!("USE app; CREATE TABLE app.bulk{t} (id INT PRIMARY KEY, pad VARCHAR(1200))"))
            .await?;
    }
    let rows_per_batch = 4096u64;
    let batches = (size_mb * 1024).div_ceil(rows_per_batch);
    for b in 0..batches {
        let lo = b * rows_per_batch;
        master
            .exec(&format!(
                "{depth}; USE app; INSERT INTO app.bulk{} WITH RECURSIVE n(i) AS (SELECT {lo} UNION ALL SELECT i + 1 FROM n \
                 WHERE i < {}) SELECT i, CONCAT(TO_BASE64(RANDOM_BYTES(192)), REPEAT(CONCAT('row ', i, ' of the benchmark '), 22)) FROM n",
                b % tables,
                lo + rows_per_batch - 1
            ))
            .await?;
    }
    bed.bed.cluster.wait_replicated(Duration::from_secs(600)).await?;
    let _ = Command::new("sync").status();
    let endpoints = bed.bed.peers.iter().map(|p| p.http_address()).collect();
    let ctl = Ctl::new(&bed.bed.path(), endpoints, Some(ADMIN_TOKEN))?;
    let source = &bed.bed.cluster.servers[1];
    let moto = bed.moto.endpoint.clone();
    let bucket_name = format!("percona-{}-backups", bed.resources.cluster_id);

    let work = bed.bed.path().join("plain");
    std::fs::create_dir_all(&work)?;
    let mut rows = Vec::new();
    for round in 1..=rounds {
        eprintln!("round {round} of {rounds}");
        rows.push(round_once(&bed, flavor, &ctl, source, &work, &moto, &bucket_name, round).await?);
    }
    // The recovery point under a steady writer.
    let hosts: Vec<String> = bed.bed.cluster.servers.iter().map(|s| s.host.clone()).collect();
    let writer_started_ms = orch_tests::backup::now_us() / 1000;
    let writer = AckWriter::start(hosts, 1_000_000, Duration::from_millis(1000 / rate.max(1)));
    tokio::time::sleep(Duration::from_secs(rpo_seconds)).await;
    let writes = writer.stop().await;
    tokio::time::sleep(Duration::from_secs(7)).await;
    let store = bucket(&bed).await;
    let prefix = format!("{}/binlogs/index/", bed.resources.cluster_id);
    let mut samples = Vec::new();
    for o in store.list(&prefix).await? {
        let entries: Vec<Segment> = if o.key.contains("/chunk-") {
            serde_json::from_slice(&store.get(&o.key).await?)?
        } else {
            vec![Segment::from_json(&store.get(&o.key).await?).map_err(anyhow::Error::msg)?]
        };
        for s in entries.into_iter().filter(|s| s.archived_at_ms >= writer_started_ms) {
            let raw =
                orchestrator::backup::parts::decode(&store.get(&s.key).await?, s.raw_bytes as usize, None)?;
            let scan = orchestrator::backup::binlog::scan(&raw, 0, None)?;
            for t in scan.transactions {
                samples.push(s.archived_at_ms * 1000 - t.committed.micros);
            }
        }
    }
    samples.sort_unstable();
    let acked = writes.iter().filter(|w| w.acked_us > 0).count();

    let median = |f: &dyn Fn(&Round) -> f64| {
        let mut v: Vec<f64> = rows.iter().map(f).collect();
        v.sort_by(|a, b| a.total_cmp(b));
        v[v.len() / 2]
    };
    let all =
        |f: &dyn Fn(&Round) -> f64| rows.iter().map(|r| format!("{:.2}", f(r))).collect::<Vec<_>>().join(" ");
    let r0 = &rows[0];
    println!();
    println!(
        "backup benchmark, {} ({} MiB of rows in 8 tables, same replica, same moto, {} rounds; ours: zstd level 1 in \
         parallel frames, 4 parts at once, tool --parallel=4; plain: the tools' defaults, zstd -3)",
        flavor.name(),
        size_mb,
        rounds
    );
    println!("{:<48} {:>10} {:>10} {:>10} {:>12}  rounds", "", "stream", "stored", "median", "throughput");
    println!(
        "{:<48} {:>6.1} MiB {:>6.1} MiB {:>8.2} s {:>6.1} MiB/s  {}",
        "backup: ours (orchctl backup create --full)",
        r0.ours_raw as f64 / 1048576.0,
        r0.ours_stored as f64 / 1048576.0,
        median(&|r| r.ours_backup),
        r0.ours_raw as f64 / 1048576.0 / median(&|r| r.ours_backup),
        all(&|r| r.ours_backup)
    );
    println!(
        "{:<48} {:>6.1} MiB {:>6.1} MiB {:>8.2} s {:>6.1} MiB/s  {}",
        "backup: plain | zstd | aws s3 cp -",
        r0.plain_raw as f64 / 1048576.0,
        r0.plain_stored as f64 / 1048576.0,
        median(&|r| r.plain_backup),
        r0.plain_raw as f64 / 1048576.0 / median(&|r| r.plain_backup),
        all(&|r| r.plain_backup)
    );
    println!(
        "{:<48} {:>44.2}x",
        "backup throughput, ours / plain (medians)",
        (r0.ours_raw as f64 / median(&|r| r.ours_backup))
            / (r0.plain_raw as f64 / median(&|r| r.plain_backup))
    );
    println!(
        "{:<48} {:>32.2} s  {}",
        "restore: ours, to prepared data",
        median(&|r| r.ours_prepared),
        all(&|r| r.ours_prepared)
    );
    println!(
        "{:<48} {:>32.2} s  {}",
        "restore: ours, started, replayed, verified",
        median(&|r| r.ours_restore),
        all(&|r| r.ours_restore)
    );
    println!(
        "{:<48} {:>32.2} s  {}",
        "restore: plain reverse, to prepared data",
        median(&|r| r.plain_restore),
        all(&|r| r.plain_restore)
    );
    println!(
        "{:<44} {:>38}",
        format!("recovery point ({} writes/s, {} s, {} acknowledged)", rate, rpo_seconds, acked),
        format!(
            "p50 {:.2} s  p99 {:.2} s  max {:.2} s  ({} txns)",
            pct(&samples, 0.5),
            pct(&samples, 0.99),
            pct(&samples, 1.0),
            samples.len()
        )
    );
    if flavor == Flavor::Mariadb {
        println!("(MariaDB records commit times in whole seconds: each recovery point counts from the start of its commit's second)");
    }
    Ok(())
}
