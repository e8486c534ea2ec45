//! `sandbox`: the local sandbox behind `deploy/sandbox`. On 127.0.1.8 the AWS emulator
//! (`moto_server`, port 5000) with the cluster's AWS side made by `provisioner apply`
//! (NLB, target groups, Auto Scaling group, DynamoDB table, secrets), and the NLB
//! stand-in (3306 writes, 3307 reads). Hosts 127.0.1.1-3 (up to .7 with `scale`) start
//! bare and become the cluster through `provisioner bootstrap` alone, as an Auto
//! Scaling group's instances do: each runs its database server (MariaDB by default,
//! MySQL 9.7 with `up --flavor mysql`) and its orchestrator peer on the production
//! ports, all left running in the background until `sandbox down`.
//!
//! It runs as production does: the peers read their API tokens from the cluster's
//! `api-tokens` secret (the provisioner's admin token and a read-only one added at
//! `up`, both also kept in files under `tokens/`), and talk Raft over mutual TLS with
//! certificates from the cluster's CA secret.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use mysql_async::prelude::Queryable;
use orch_tests::aws::{self, ClusterResources, Moto};
use orch_tests::bootstrap::BootstrapBed;
use orch_tests::db::Flavor;
use orch_tests::hosts::HostBlock;
use orch_tests::peer::{self, client_with_token, workspace_root};
use orch_tests::process::{kill_recorded, Lifetime};
use provisioner::bootstrap::peer::PEER_SERVICE;
use provisioner::bootstrap::server::MYSQLD_SERVICE;
use serde::{Deserialize, Serialize};

const PREFIX: [u8; 2] = [0, 1];
/// Host slots 127.0.1.1-7; the AWS emulator and the NLB stand-in on 127.0.1.8.
const MAX_HOSTS: u8 = 7;
const START_HOSTS: usize = 3;
const ALIAS: &str = "sandbox";

/// The peers' settings in the sandbox: quick, but not the test bed's hair triggers.
const SITE_CONFIG: &str = r#"
[discovery]
probe_interval_ms = 500
connect_timeout_ms = 300
read_timeout_ms = 400

[aws]
reconcile_interval_ms = 1000
topology_refresh_s = 5
call_timeout_ms = 2000

[auth]
open_metrics = true

[membership]
interval_ms = 1000
remove_after_s = 10
replace_after_s = 60
leave_timeout_s = 60
"#;

#[derive(Parser, Debug)]
#[command(
    about = "Local sandbox: database hosts made by `provisioner bootstrap`, their orchestrator peers and the AWS emulator on loopback"
)]
struct Args {
    /// Where the sandbox keeps its data and logs.
    #[arg(long, env = "ORCH_SANDBOX_DIR")]
    dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Provision the AWS side, bootstrap three bare hosts, wait until the cluster works.
    Up {
        /// The database servers: mariadb (MariaDB 10.11) or mysql (MySQL 9.7).
        #[arg(long, default_value = "mariadb", value_parser = ["mariadb", "mysql"])]
        flavor: String,
    },
    /// Grow or shrink the cluster to N nodes (3, 5 or 7): new hosts are bootstrapped,
    /// leaving ones stop their peer (which leaves the Raft group) and their instances
    /// leave the group (detached: moto never frees a terminated instance's address).
    Scale {
        #[arg(value_parser = ["3", "5", "7"])]
        nodes: String,
    },
    /// Show the hosts, their Raft membership and instances, and the topology.
    Status,
    /// Stop everything and delete the sandbox's data.
    Down,
    /// Run the NLB stand-in in the foreground (`up` starts it in the background).
    #[command(hide = true)]
    Nlb,
}

#[derive(Serialize, Deserialize, Debug)]
struct SandboxState {
    /// The cluster's hosts now (127.0.1.1 first); each host's processes are in the pid
    /// files under its directory.
    hosts: Vec<String>,
    /// `mariadb` or `mysql`.
    flavor: String,
    /// The AWS host: moto on port 5000, the NLB stand-in on 3306/3307.
    aws_host: String,
    moto_pid: u32,
    nlb_pid: u32,
    aws: ClusterResources,
    /// Where the admin and the read-only API tokens are.
    admin_token_file: PathBuf,
    read_token_file: PathBuf,
}

impl SandboxState {
    fn endpoint(&self) -> String {
        format!("http://{}:{}", self.aws_host, aws::MOTO_PORT)
    }

    fn flavor(&self) -> anyhow::Result<Flavor> {
        Flavor::parse(&self.flavor)
    }
}

fn state_path(dir: &Path) -> PathBuf {
    dir.join("state.json")
}

fn read_state(dir: &Path) -> Option<SandboxState> {
    let text = std::fs::read_to_string(state_path(dir)).ok()?;
    serde_json::from_str(&text).ok()
}

fn write_state(dir: &Path, state: &SandboxState) -> anyhow::Result<()> {
    std::fs::write(state_path(dir), serde_json::to_string_pretty(state)?)?;
    Ok(())
}

/// The pid files' directory of the sandbox's address block.
fn block_state_dir() -> PathBuf {
    orch_tests::hosts::testbed_root().join("blocks").join(format!("127.{}.{}", PREFIX[0], PREFIX[1]))
}

/// The pids in host slot `i`'s pid files (1-based), peer first.
fn host_pids(dir: &Path, i: usize) -> Vec<u32> {
    let state = provisioner::bootstrap::facts::Layout::under(&dir.join(format!("host{i}"))).state;
    let mut files = provisioner::bootstrap::services::pid_files(&state);
    files.sort_by_key(|f| !f.ends_with(format!("{PEER_SERVICE}.pid")));
    files.iter().filter_map(|f| std::fs::read_to_string(f).ok()?.trim().parse().ok()).collect()
}

use orch_tests::process::pid_alive as alive;

/// The sandbox's hosts as bootstrap targets.
async fn bed(dir: &Path, state: &SandboxState) -> anyhow::Result<BootstrapBed> {
    BootstrapBed::detached(
        state.flavor()?,
        dir,
        &block_state_dir(),
        &state.endpoint(),
        state.aws.clone(),
        state.hosts.clone(),
        SITE_CONFIG,
    )
    .await
}

/// GET a JSON document from a peer with the sandbox's read-only token.
async fn get_json(state: &SandboxState, url: &str) -> anyhow::Result<serde_json::Value> {
    let token = std::fs::read_to_string(&state.read_token_file).unwrap_or_default();
    peer::get_json_with(&client_with_token(Some(token.trim())), url).await
}

/// Polls `url` until `accept` holds; the last answer as the error.
async fn poll_json(
    state: &SandboxState,
    url: &str,
    timeout: Duration,
    accept: impl Fn(&serde_json::Value) -> bool,
) -> Result<Duration, serde_json::Value> {
    let started = Instant::now();
    let mut last = serde_json::Value::Null;
    loop {
        if let Ok(v) = get_json(state, url).await {
            if accept(&v) {
                return Ok(started.elapsed());
            }
            last = v;
        }
        if started.elapsed() > timeout {
            return Err(last);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args = Args::parse();
    let dir = args.dir.unwrap_or_else(|| workspace_root().join(".sandbox"));
    let result = match args.command {
        Cmd::Up { flavor } => match Flavor::parse(&flavor) {
            Ok(flavor) => up(&dir, flavor).await,
            Err(e) => Err(e),
        },
        Cmd::Scale { nodes } => scale(&dir, nodes.parse().unwrap_or(3)).await,
        Cmd::Status => status(&dir).await,
        Cmd::Down => down(&dir),
        Cmd::Nlb => serve_nlb(&dir).await,
    };
    if let Err(e) = result {
        eprintln!("sandbox: {e:#}");
        std::process::exit(1);
    }
}

/// Adds a read-only token to the cluster's API tokens secret and writes both tokens
/// (the provisioner's admin one and the new one) to files.
async fn write_tokens(
    clients: &orchestrator::aws::AwsClients,
    cluster_id: &str,
    dir: &Path,
) -> anyhow::Result<(PathBuf, PathBuf)> {
    let secret = provisioner::spec::ResourceNames::of(cluster_id).api_tokens_secret;
    let json = clients.secret_string(&secret).await?;
    let mut tokens: Vec<serde_json::Value> = serde_json::from_str(&json).context("the API tokens secret")?;
    let admin = tokens
        .iter()
        .find(|t| t["scope"] == "admin")
        .and_then(|t| t["token"].as_str())
        .context("no admin token in the API tokens secret")?
        .to_string();
    let files = dir.join("tokens");
    std::fs::create_dir_all(&files)?;
    let (admin_file, read_file) = (files.join("admin.token"), files.join("read.token"));
    orchestrator::auth::tokens::write_token_file(&admin_file, &admin)?;
    let read = orchestrator::auth::tokens::write_new_token(&read_file)?;
    tokens.push(serde_json::json!({ "name": "sandbox-reader", "scope": "read", "token": read }));
    clients
        .secrets
        .put_secret_value()
        .secret_id(&secret)
        .secret_string(serde_json::to_string(&tokens)?)
        .send()
        .await
        .context("PutSecretValue")?;
    Ok((admin_file, read_file))
}

/// Bootstraps host slots `slots` at once, printing each one's steps as it finishes.
async fn bootstrap_hosts(bed: &BootstrapBed, slots: &[usize]) -> anyhow::Result<()> {
    let runs = slots.iter().map(|i| async move {
        let started = Instant::now();
        (*i, bed.bootstrap_ok(*i).await, started.elapsed())
    });
    let mut failed = Vec::new();
    for (i, result, took) in futures::future::join_all(runs).await {
        let host = &bed.hosts[i - 1];
        match result {
            Ok(out) => {
                println!("{host}: provisioner bootstrap finished in {:.1} s", took.as_secs_f64());
                for line in out.lines() {
                    println!("  {line}");
                }
            }
            Err(e) => failed.push(format!("{host}: {e:#}")),
        }
    }
    if !failed.is_empty() {
        bail!("bootstrap failed on {}", failed.join("\n"));
    }
    Ok(())
}

/// Waits until the peers report exactly `hosts` as Raft voters.
async fn wait_voters(state: &SandboxState, hosts: &[String], timeout: Duration) -> anyhow::Result<Duration> {
    let url = format!("http://{}:3000/api/raft-state", hosts[0]);
    let want: std::collections::BTreeSet<String> = hosts.iter().map(|h| format!("{h}:10008")).collect();
    let voters = |s: &serde_json::Value| -> std::collections::BTreeSet<String> {
        s["members"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|m| m["voter"] == true)
            .filter_map(|m| m["raft"].as_str().map(str::to_string))
            .collect()
    };
    let all = |s: &serde_json::Value| s["members"].as_array().map(Vec::len) == Some(hosts.len());
    poll_json(state, &url, timeout, |s| voters(s) == want && all(s)).await.map_err(|last| {
        anyhow::anyhow!(
            "the Raft group did not become {} voters within {timeout:?}; last answer: {last}",
            hosts.len()
        )
    })
}

async fn up(dir: &Path, flavor: Flavor) -> anyhow::Result<()> {
    if let Some(state) = read_state(dir) {
        let running =
            (1..=MAX_HOSTS as usize).flat_map(|i| host_pids(dir, i)).chain([state.moto_pid, state.nlb_pid]);
        if running.into_iter().any(|p| p != 0 && alive(p)) {
            println!("sandbox is already up ({}).", dir.display());
            return status(dir).await;
        }
    }
    if dir.exists() {
        down(dir)?;
    }
    let block = HostBlock::reserve_fixed(PREFIX, MAX_HOSTS + 1)?;
    let hosts: Vec<String> = (1..=START_HOSTS as u8).map(|i| block.host(i)).collect();
    let aws_host = block.host(MAX_HOSTS + 1);
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    println!("starting the AWS emulator (moto_server) on {aws_host}:{} ...", aws::MOTO_PORT);
    let moto = Moto::start(&aws_host, dir, block.state_dir(), Lifetime::Detached, None)
        .await
        .context("starting moto_server")?;
    let clients = aws::clients(&moto.endpoint).await;
    println!(
        "provisioning the cluster's AWS side (provisioner apply, spec in {}) ...",
        dir.join("cluster.toml").display()
    );
    let resources =
        aws::provision(&moto.endpoint, ALIAS, &hosts).await.context("provisioning the cluster's AWS side")?;
    std::fs::write(dir.join("cluster.toml"), &resources.spec_toml)?;
    println!(
        "created NLB {0}-nlb, target groups {0}-write (3306) and {0}-read (3307), Auto Scaling group {1} \
         (instances standing in for hosts {2}), table {3}, bucket {4}, secrets {5} and more",
        resources.cluster_id,
        resources.auto_scaling_group,
        hosts.join(", "),
        resources.table,
        resources.bucket,
        resources.credentials_secret
    );
    let (admin_token_file, read_token_file) = write_tokens(&clients, &resources.cluster_id, dir).await?;
    let mut state = SandboxState {
        hosts: hosts.clone(),
        flavor: flavor.name().to_string(),
        aws_host: aws_host.clone(),
        moto_pid: moto.detach(),
        nlb_pid: 0,
        aws: resources.clone(),
        admin_token_file,
        read_token_file,
    };
    write_state(dir, &state)?;
    let bed = bed(dir, &state).await?;
    // The first host alone, so that 127.0.1.1 is the first master; then the others.
    println!("bootstrapping {} from nothing but its facts (provisioner bootstrap) ...", hosts[0]);
    bootstrap_hosts(&bed, &[1]).await?;
    println!("bootstrapping {} at once ...", hosts[1..].join(" and "));
    bootstrap_hosts(&bed, &[2, 3]).await?;
    add_application_user(&bed).await?;

    let mut nlb = Command::new(std::env::current_exe()?);
    nlb.arg("--dir").arg(dir).arg("nlb");
    let nlb = orch_tests::process::ManagedChild::spawn(
        "NLB stand-in",
        nlb,
        &dir.join("nlb.log"),
        block.state_dir(),
        Lifetime::Detached,
        None,
    )?;
    state.nlb_pid = nlb.detach();
    write_state(dir, &state)?;

    let took = wait_voters(&state, &hosts, Duration::from_secs(30)).await?;
    println!("\nRaft group of 3 voters in {:.1} s", took.as_secs_f64());
    match aws::wait_members(
        &clients,
        &resources,
        &[&hosts[0]],
        &[&hosts[1], &hosts[2]],
        Duration::from_secs(30),
    )
    .await
    {
        Ok(took) => println!("the peers filled the target groups in {:.1} s\n", took.as_secs_f64()),
        Err(last) => bail!("the target groups did not fill within 30 s; last seen: {last}"),
    }
    status(dir).await
}

/// The application's account and schema on the first master (replicated).
async fn add_application_user(bed: &BootstrapBed) -> anyhow::Result<()> {
    let mut root = bed.root(1).await.context("root session on the first master")?;
    root.query_drop(format!(
        "CREATE DATABASE IF NOT EXISTS app; CREATE USER IF NOT EXISTS '{u}'@'%' IDENTIFIED BY '{p}'; \
         GRANT SELECT, INSERT, UPDATE, DELETE, CREATE, DROP, INDEX, ALTER ON app.* TO '{u}'@'%'",
        u = orch_tests::db::APP_USER,
        p = orch_tests::db::APP_PASSWORD
    ))
    .await?;
    Ok(())
}

async fn scale(dir: &Path, nodes: usize) -> anyhow::Result<()> {
    let mut state = read_state(dir).context("the sandbox is down: run `deploy/sandbox up` first")?;
    let current = state.hosts.len();
    let endpoint = state.endpoint();
    if nodes == current {
        println!("the sandbox already has {nodes} nodes.");
        return status(dir).await;
    }
    if nodes > current {
        let new: Vec<String> =
            (current + 1..=nodes).map(|i| format!("127.{}.{}.{i}", PREFIX[0], PREFIX[1])).collect();
        println!("resizing the Auto Scaling group to {nodes} (provisioner apply) ...");
        aws::resize(&endpoint, &mut state.aws, nodes).await?;
        let mut hosts = state.hosts.clone();
        hosts.extend(new.iter().cloned());
        aws::stand_in_hosts(&endpoint, &mut state.aws, &hosts).await?;
        state.hosts = hosts;
        write_state(dir, &state)?;
        println!("bootstrapping {} ...", new.join(" and "));
        let bed = bed(dir, &state).await?;
        bootstrap_hosts(&bed, &(current + 1..=nodes).collect::<Vec<_>>()).await?;
    } else {
        let bed = bed(dir, &state).await?;
        for i in (nodes + 1..=current).rev() {
            let host = state.hosts[i - 1].clone();
            println!("{host}: stopping its peer (it switches over if it holds the master, hands leadership over, leaves Raft) ...");
            let services = bed.services(i);
            let started = Instant::now();
            tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
                services.stop(PEER_SERVICE, Duration::from_secs(90))?;
                services.stop(MYSQLD_SERVICE, Duration::from_secs(60))
            })
            .await??;
            println!(
                "{host}: peer left and stopped, mysqld stopped in {:.1} s",
                started.elapsed().as_secs_f64()
            );
            aws::detach_host(&endpoint, &mut state.aws, &host).await?;
            println!("{host}: instance taken out of the Auto Scaling group");
            let _ = std::fs::remove_dir_all(bed.host_dir(i));
        }
        state.hosts.truncate(nodes);
        println!("resizing the Auto Scaling group to {nodes} (provisioner apply) ...");
        aws::resize(&endpoint, &mut state.aws, nodes).await?;
        write_state(dir, &state)?;
    }
    std::fs::write(dir.join("cluster.toml"), &state.aws.spec_toml)?;
    let took = wait_voters(&state, &state.hosts, Duration::from_secs(60)).await?;
    println!("\nRaft group of {nodes} voters in {:.1} s\n", took.as_secs_f64());
    status(dir).await
}

/// The NLB stand-in for the sandbox, until killed.
async fn serve_nlb(dir: &Path) -> anyhow::Result<()> {
    let state = read_state(dir).context("no sandbox state")?;
    let resources = state.aws.clone();
    let clients = aws::clients(&state.endpoint()).await;
    let _nlb =
        orch_tests::nlb::NlbStandIn::start(clients, &resources, &state.aws_host, orch_tests::NLB_TIME_SCALE)
            .await?;
    std::future::pending::<()>().await;
    Ok(())
}

async fn status(dir: &Path) -> anyhow::Result<()> {
    let Some(state) = read_state(dir) else {
        println!("sandbox is down (no {}).", state_path(dir).display());
        return Ok(());
    };
    // Each host's processes, and the Raft group as a live peer reports it.
    let bed = bed(dir, &state).await?;
    let running = |i: usize, name: &str| bed.services(i).is_running(name);
    let live_peer =
        (1..=state.hosts.len()).find(|i| running(*i, PEER_SERVICE)).map(|i| state.hosts[i - 1].clone());
    let raft = match &live_peer {
        Some(host) => get_json(&state, &format!("http://{host}:3000/api/raft-state")).await.ok(),
        None => None,
    };
    let members: Vec<serde_json::Value> =
        raft.as_ref().and_then(|r| r["members"].as_array().cloned()).unwrap_or_default();
    let server_column = if state.flavor == "mysql" { "MYSQLD :3306" } else { "MARIADBD :3306" };
    println!(
        "{:<12} {server_column:<15} {:<19} {:<14} {:<22} INSTANCE STATE",
        "HOST", "ORCHESTRATOR :3000", "RAFT", "INSTANCE"
    );
    for (i, host) in state.hosts.iter().enumerate() {
        let show = |name: &str| if running(i + 1, name) { "running" } else { "DOWN" };
        let member = members.iter().find(|m| m["raft"].as_str() == Some(&format!("{host}:10008")));
        let role = match member {
            Some(m) if raft.as_ref().is_some_and(|r| r["leader_id"] == m["id"]) => {
                "voter, leader".to_string()
            }
            Some(m) if m["voter"] == true => "voter".to_string(),
            Some(_) => "learner".to_string(),
            None if raft.is_some() => "not a member".to_string(),
            None => "?".to_string(),
        };
        let field = |key: &str| member.and_then(|m| m[key].as_str()).unwrap_or("-").to_string();
        println!(
            "{host:<12} {:<15} {:<19} {role:<14} {:<22} {}",
            show(MYSQLD_SERVICE),
            show(PEER_SERVICE),
            field("instance_id"),
            field("instance_state")
        );
    }
    println!();
    let endpoints: Vec<String> = state.hosts.iter().map(|h| format!("{h}:3000")).collect();
    let ctl = workspace_root().join("target/debug/orchctl");
    println!("admin token:   {}", state.admin_token_file.display());
    println!("read token:    {}   (read-only)", state.read_token_file.display());
    println!(
        "orchctl:       {} --endpoints {} --token-file {} topology {ALIAS}",
        ctl.display(),
        endpoints.join(","),
        state.admin_token_file.display()
    );
    println!("web UI:        http://{}:3000/   (log in with a token)", state.hosts[0]);
    println!(
        "clusters:      curl -H \"Authorization: Bearer $(cat {})\" http://{}:3000/api/clusters",
        state.read_token_file.display(),
        state.hosts[0]
    );
    println!("metrics:       curl http://{}:3000/metrics", state.hosts[0]);
    println!("mysql:         mariadb -h {} -u app -papp-pass app", state.hosts[0]);
    println!("through NLB:   mariadb -h {} -P 3306 -u app -papp-pass app   (3307: replicas)", state.aws_host);
    println!("AWS emulator:  {}   (NLB stand-in {})", state.endpoint(), show_pid(state.nlb_pid));
    println!("scale:         deploy/sandbox scale 5   (3, 5 or 7 nodes)");
    println!("logs and data: {}   (host N: hostN/, its bootstrap: bootstrap-N.log)", dir.display());
    println!();
    aws_status(&state, &state.aws).await;
    let Some(host) = live_peer else {
        println!("no orchestrator peer is running.");
        return Ok(());
    };
    match &raft {
        Some(r) => println!(
            "raft:          leader peer {} (term {}, commit index {}, {} members)\n",
            r["leader_id"].as_u64().map(|id| id.to_string()).unwrap_or_else(|| "none yet".into()),
            r["term"],
            r["committed_index"],
            members.len()
        ),
        None => println!("raft:          cannot read state from {host}\n"),
    }
    let ctl = peer::binary("orchctl")?;
    let out = Command::new(ctl)
        .arg("--endpoints")
        .arg(endpoints.join(","))
        .arg("--token-file")
        .arg(&state.read_token_file)
        .args(["topology", ALIAS])
        .output()
        .context("cannot run orchctl")?;
    print!("{}", String::from_utf8_lossy(&out.stdout));
    if !out.status.success() {
        eprint!("{}", String::from_utf8_lossy(&out.stderr));
        let clusters = get_json(&state, &format!("http://{host}:3000/api/clusters")).await?;
        println!("clusters known to {host}: {clusters}");
    }
    Ok(())
}

fn show_pid(pid: u32) -> String {
    if alive(pid) {
        format!("running, pid {pid}")
    } else {
        format!("DOWN, was pid {pid}")
    }
}

/// Target-group membership and the DynamoDB master lock, as moto holds them.
async fn aws_status(state: &SandboxState, resources: &ClusterResources) {
    use orchestrator::aws::{LockTable, TargetGroupApi};
    if !alive(state.moto_pid) {
        println!("AWS emulator is DOWN (was pid {}).\n", state.moto_pid);
        return;
    }
    let clients = aws::clients(&state.endpoint()).await;
    for (name, arn) in [
        ("write TG :3306", &resources.write_target_group_arn),
        ("read TG  :3307", &resources.read_target_group_arn),
    ] {
        match clients.targets(arn).await {
            Ok(targets) => {
                let shown: Vec<String> = targets
                    .iter()
                    .map(|t| format!("{} {} ({})", resources.host_of(&t.id).unwrap_or("?"), t.id, t.state))
                    .collect();
                println!("{name}: {}", if shown.is_empty() { "empty".into() } else { shown.join(", ") });
            }
            Err(e) => println!("{name}: cannot read: {e}"),
        }
    }
    let provisioned = aws::provisioner_clients(&state.endpoint()).await;
    match resources.spec() {
        Ok(spec) => match provisioner::cloud::status(&provisioned, &spec).await {
            Ok(status) => {
                let missing: Vec<String> = status
                    .resources
                    .iter()
                    .filter(|(_, _, e)| !e)
                    .map(|(k, n, _)| format!("{k} {n}"))
                    .collect();
                println!(
                    "provisioned:    {} of {} resources ({})",
                    status.resources.len() - missing.len(),
                    status.resources.len(),
                    if missing.is_empty() {
                        "none missing".to_string()
                    } else {
                        format!("missing: {}", missing.join(", "))
                    }
                );
                let nodes: Vec<String> = status
                    .nodes
                    .iter()
                    .map(|n| {
                        format!(
                            "{} {} {}{}",
                            resources.host_of(&n.instance_id).unwrap_or(&n.private_ip),
                            n.instance_id,
                            n.lifecycle,
                            if n.protected_from_scale_in { " protected" } else { "" }
                        )
                    })
                    .collect();
                println!("ASG {}: {}", resources.auto_scaling_group, nodes.join(", "));
                println!("bucket:         {}", resources.bucket);
                println!("secret:         {}", resources.credentials_secret);
                println!("NLB DNS name:   {}", status.summary.dns_name);
            }
            Err(e) => println!("provisioned:    cannot read: {e:#}"),
        },
        Err(e) => println!("provisioned:    bad spec: {e}"),
    }
    match clients.get_master_lock(&resources.table).await {
        Ok(Some(lock)) => println!(
            "master_lock:    {} (epoch {}, raft term {}, written by peer {})",
            lock.holder, lock.fence.epoch, lock.fence.raft_term, lock.leader_id
        ),
        Ok(None) => println!("master_lock:    not written yet"),
        Err(e) => println!("master_lock:    cannot read: {e}"),
    }
    println!();
}

fn down(dir: &Path) -> anyhow::Result<()> {
    let state = read_state(dir);
    // Peers first, with SIGKILL: a stopped peer would leave the group (leave_on_stop),
    // pointless when everything goes. Then the servers, moto and the NLB stand-in.
    let mut others = Vec::new();
    for i in 1..=MAX_HOSTS as usize {
        let mut pids = host_pids(dir, i).into_iter();
        let peer_file = provisioner::bootstrap::facts::Layout::under(&dir.join(format!("host{i}")))
            .state
            .join(format!("{PEER_SERVICE}.pid"));
        if peer_file.exists() {
            if let Some(peer) = pids.next() {
                // SAFETY: plain kill(2) on a process this sandbox started.
                unsafe { libc::kill(peer as i32, libc::SIGKILL) };
            }
        }
        others.extend(pids);
    }
    if let Some(state) = &state {
        others.extend([state.moto_pid, state.nlb_pid]);
    }
    others.retain(|p| *p != 0);
    for pid in &others {
        // SAFETY: plain kill(2) on processes this sandbox started.
        unsafe { libc::kill(*pid as i32, libc::SIGTERM) };
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    while others.iter().any(|p| alive(*p)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    for pid in others.iter().filter(|p| alive(**p)) {
        // SAFETY: as above.
        unsafe { libc::kill(*pid as i32, libc::SIGKILL) };
    }
    kill_recorded(&block_state_dir());
    if dir.exists() {
        std::fs::remove_dir_all(dir).with_context(|| format!("cannot remove {}", dir.display()))?;
    }
    println!("sandbox is down{}.", if state.is_some() { "; data removed" } else { " (nothing was running)" });
    Ok(())
}
