//! `sandbox`: the local sandbox behind `deploy/sandbox`. Three simulated hosts on
//! 127.0.1.1-3, each with a database server (MariaDB by default, MySQL 9.7 with
//! `up --flavor mysql`; 127.0.1.1 the master) and an orchestrator peer
//! on the production ports; on 127.0.1.4 the AWS emulator (`moto_server`, port 5000)
//! holding the cluster's NLB, target groups and DynamoDB table, which the peers
//! manage, and the NLB stand-in (3306 writes, 3307 reads). All left running in the
//! background until `sandbox down`.
//!
//! It runs as production does: the peers require API tokens (an admin and a read-only
//! one are made at `up`, kept in files under `tokens/`, hashed in the configs), and
//! talk Raft over mutual TLS with certificates of a CA made for the sandbox (`tls/`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use orch_tests::aws::{self, ClusterResources, Moto};
use orch_tests::db::{DbCluster, Flavor};
use orch_tests::hosts::HostBlock;
use orch_tests::peer::{self, client_with_token, workspace_root, PeerAws, PeerGroupSpec, TokenSpec};
use orch_tests::process::{kill_recorded, Lifetime};
use serde::{Deserialize, Serialize};

const PREFIX: [u8; 2] = [0, 1];
const HOSTS: u8 = 3;
const ALIAS: &str = "sandbox";

#[derive(Parser, Debug)]
#[command(about = "Local sandbox: 3 database servers, 3 orchestrator peers and the AWS emulator on loopback")]
struct Args {
    /// Where the sandbox keeps its data and logs.
    #[arg(long, env = "ORCH_SANDBOX_DIR")]
    dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Start everything and wait until the topology is discovered.
    Up {
        /// The database servers: mariadb (MariaDB 10.11) or mysql (MySQL 9.7).
        #[arg(long, default_value = "mariadb", value_parser = ["mariadb", "mysql"])]
        flavor: String,
    },
    /// Show processes, URLs and the topology as the peers see it.
    Status,
    /// Stop everything and delete the sandbox's data.
    Down,
    /// Run the NLB stand-in in the foreground (`up` starts it in the background).
    #[command(hide = true)]
    Nlb,
}

#[derive(Serialize, Deserialize, Debug)]
struct SandboxState {
    hosts: Vec<String>,
    /// `mariadb` or `mysql`.
    #[serde(default = "default_flavor")]
    flavor: String,
    #[serde(alias = "mariadbd_pids")]
    server_pids: Vec<u32>,
    peer_pids: Vec<u32>,
    /// The AWS host: moto on port 5000, the NLB stand-in on 3306/3307.
    #[serde(default)]
    aws_host: String,
    #[serde(default)]
    moto_pid: u32,
    #[serde(default)]
    nlb_pid: u32,
    #[serde(default)]
    aws: Option<ClusterResources>,
    /// Where the admin and the read-only API tokens are.
    #[serde(default)]
    admin_token_file: PathBuf,
    #[serde(default)]
    read_token_file: PathBuf,
}

fn default_flavor() -> String {
    "mariadb".into()
}

impl SandboxState {
    fn pids(&self) -> Vec<u32> {
        let mut pids = vec![self.nlb_pid];
        pids.extend(&self.peer_pids);
        pids.extend(&self.server_pids);
        pids.push(self.moto_pid);
        pids.retain(|p| *p != 0);
        pids
    }

    fn endpoint(&self) -> String {
        format!("http://{}:{}", self.aws_host, aws::MOTO_PORT)
    }
}

fn state_path(dir: &Path) -> PathBuf {
    dir.join("state.json")
}

fn read_state(dir: &Path) -> Option<SandboxState> {
    let text = std::fs::read_to_string(state_path(dir)).ok()?;
    serde_json::from_str(&text).ok()
}

use orch_tests::process::pid_alive as alive;

/// Writes a new random token to `path` (mode 0600) and returns it.
fn new_token_file(path: &Path) -> anyhow::Result<String> {
    Ok(orchestrator::auth::tokens::write_new_token(path)?)
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
    let started = std::time::Instant::now();
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
        Cmd::Status => status(&dir).await,
        Cmd::Down => down(&dir),
        Cmd::Nlb => serve_nlb(&dir).await,
    };
    if let Err(e) = result {
        eprintln!("sandbox: {e:#}");
        std::process::exit(1);
    }
}

async fn up(dir: &Path, flavor: Flavor) -> anyhow::Result<()> {
    if let Some(state) = read_state(dir) {
        if state.pids().iter().any(|p| alive(*p)) {
            println!("sandbox is already up ({}).", dir.display());
            return status(dir).await;
        }
        down(dir)?;
    }
    let block = HostBlock::reserve_fixed(PREFIX, HOSTS + 1)?;
    let hosts: Vec<String> = (1..=HOSTS).map(|i| block.host(i)).collect();
    let aws_host = block.host(HOSTS + 1);
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
        "created NLB {0}-nlb, target groups {0}-write (3306) and {0}-read (3307), Auto Scaling group {1}, \
         table {2}, bucket {3}, secret {4}",
        resources.cluster_id,
        resources.auto_scaling_group,
        resources.table,
        resources.bucket,
        resources.credentials_secret
    );
    let server_name = match flavor {
        Flavor::Mariadb => "MariaDB".to_string(),
        Flavor::Mysql => orch_tests::db::MysqlRoot::find()?.version()?,
    };
    println!("starting 3 database servers on {} (port 3306): {server_name} ...", hosts.join(", "));
    let mut cluster = DbCluster::start(flavor, &hosts, dir, block.state_dir(), Lifetime::Detached, &[])
        .await
        .with_context(|| format!("starting the {} servers", flavor.name()))?;
    println!("replication: {} is master, {} replicate with GTID", hosts[0], hosts[1..].join(" and "));
    let tokens = dir.join("tokens");
    std::fs::create_dir_all(&tokens)?;
    let (admin_token_file, read_token_file) = (tokens.join("admin.token"), tokens.join("read.token"));
    let admin = new_token_file(&admin_token_file)?;
    let read = new_token_file(&read_token_file)?;
    println!("starting 3 orchestrator peers (ports 3000 and 10008, Raft over mutual TLS) ...");
    let mut spec = PeerGroupSpec::new(ALIAS, vec![cluster.master().key()]);
    spec.aws = Some(PeerAws::new(&moto.endpoint, &resources));
    spec.tokens = vec![
        TokenSpec::new("sandbox-admin", "admin", &admin),
        TokenSpec::new("sandbox-reader", "read", &read),
    ];
    let mut peers = peer::start_peers(&hosts, &spec, dir, block.state_dir(), Lifetime::Detached, &[])
        .await
        .context("starting orchestrator peers")?;
    let mut state = SandboxState {
        hosts: hosts.clone(),
        flavor: flavor.name().to_string(),
        server_pids: cluster.servers.iter_mut().filter_map(|s| s.detach()).collect(),
        peer_pids: peers.iter_mut().filter_map(|p| p.detach()).collect(),
        aws_host: aws_host.clone(),
        moto_pid: moto.detach(),
        nlb_pid: 0,
        aws: Some(resources.clone()),
        admin_token_file,
        read_token_file,
    };
    std::fs::write(state_path(dir), serde_json::to_string_pretty(&state)?)?;
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
    std::fs::write(state_path(dir), serde_json::to_string_pretty(&state)?)?;

    let url = format!("http://{}:3000/api/cluster/{ALIAS}", hosts[0]);
    let discovered = |c: &serde_json::Value| {
        c["instances"]
            .as_array()
            .is_some_and(|i| i.len() == hosts.len() && i.iter().all(|i| i["reachable"] == true))
    };
    match poll_json(&state, &url, Duration::from_secs(20), discovered).await {
        Ok(took) => println!("topology discovered in {:.1} s\n", took.as_secs_f64()),
        Err(last) => bail!("peers did not discover the topology within 20 s; last answer: {last}"),
    }
    let raft_url = format!("http://{}:3000/api/raft-state", hosts[0]);
    if let Err(last) =
        poll_json(&state, &raft_url, Duration::from_secs(10), |s| s["leader_id"].is_u64()).await
    {
        bail!("the peers elected no Raft leader within 10 s; last answer: {last}");
    }
    match aws::wait_members(
        &clients,
        &resources,
        &[&hosts[0]],
        &[&hosts[1], &hosts[2]],
        Duration::from_secs(20),
    )
    .await
    {
        Ok(took) => println!("the peers filled the target groups in {:.1} s\n", took.as_secs_f64()),
        Err(last) => bail!("the target groups did not fill within 20 s; last seen: {last}"),
    }
    status(dir).await
}

/// The NLB stand-in for the sandbox, until killed.
async fn serve_nlb(dir: &Path) -> anyhow::Result<()> {
    let state = read_state(dir).context("no sandbox state")?;
    let resources = state.aws.clone().context("the sandbox has no AWS side")?;
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
    let server_column = if state.flavor == "mysql" { "MYSQLD :3306" } else { "MARIADBD :3306" };
    println!("{:<12} {:<22} {:<22}", "HOST", server_column, "ORCHESTRATOR :3000");
    for (i, host) in state.hosts.iter().enumerate() {
        let show = |pid: Option<&u32>| match pid {
            Some(p) if alive(*p) => format!("running (pid {p})"),
            Some(p) => format!("DOWN (was pid {p})"),
            None => "-".into(),
        };
        println!("{host:<12} {:<22} {:<22}", show(state.server_pids.get(i)), show(state.peer_pids.get(i)));
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
    if !state.aws_host.is_empty() {
        println!(
            "through NLB:   mariadb -h {} -P 3306 -u app -papp-pass app   (3307: replicas)",
            state.aws_host
        );
        println!("AWS emulator:  {}   (NLB stand-in {})", state.endpoint(), show_pid(state.nlb_pid));
    }
    println!("logs and data: {}", dir.display());
    println!();
    if let Some(resources) = &state.aws {
        aws_status(&state, resources).await;
    }
    let live_peer =
        state.hosts.iter().zip(&state.peer_pids).find(|(_, pid)| alive(**pid)).map(|(h, _)| h.clone());
    let Some(host) = live_peer else {
        println!("no orchestrator peer is running.");
        return Ok(());
    };
    match get_json(&state, &format!("http://{host}:3000/api/raft-state")).await {
        Ok(r) => println!(
            "raft:          leader peer {} (term {}, commit index {}, {} members)\n",
            r["leader_id"].as_u64().map(|id| id.to_string()).unwrap_or_else(|| "none yet".into()),
            r["term"],
            r["committed_index"],
            r["members"].as_array().map(Vec::len).unwrap_or(0)
        ),
        Err(e) => println!("raft:          cannot read state from {host}: {e}\n"),
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
    if let Some(state) = &state {
        let pids = state.pids();
        for pid in &pids {
            // SAFETY: plain kill(2) on processes this sandbox started.
            unsafe { libc::kill(*pid as i32, libc::SIGTERM) };
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        while pids.iter().any(|p| alive(*p)) && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        for pid in pids.iter().filter(|p| alive(**p)) {
            // SAFETY: as above.
            unsafe { libc::kill(*pid as i32, libc::SIGKILL) };
        }
    }
    kill_recorded(
        &orch_tests::hosts::testbed_root().join("blocks").join(format!("127.{}.{}", PREFIX[0], PREFIX[1])),
    );
    if dir.exists() {
        std::fs::remove_dir_all(dir).with_context(|| format!("cannot remove {}", dir.display()))?;
    }
    println!("sandbox is down{}.", if state.is_some() { "; data removed" } else { " (nothing was running)" });
    Ok(())
}
