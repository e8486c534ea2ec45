//! `orchctl`: the operators' client of the orchestrator peers (gRPC on port 3000).
//! Every operation of the API, tables for people and `-o json` for scripts, live
//! views, dry runs, confirmation before destructive operations, shell completions,
//! and stable exit codes.

#[macro_use]
mod render;
mod client;

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::Duration;

use clap::{CommandFactory, Parser, Subcommand};
use client::{Client, CtlError, Exit, FileConfig};
use orch_proto::v1 as pb;
use render::Output;

const EXIT_CODES: &str = "Exit codes: 0 ok, 1 failed, 2 usage (bad arguments), 3 refused by a precondition, \
4 not authenticated or not permitted, 5 no peer reachable (or none could act: no leader).";

#[derive(Parser, Debug)]
#[command(version, about = "Operate the MySQL orchestrator peers", after_help = EXIT_CODES)]
struct Args {
    /// Peers to talk to, host:port of their API (any one answers; the next is tried
    /// when one is down). Also ORCHCTL_ENDPOINTS or `endpoints` in the config file.
    #[arg(
        long,
        short = 'e',
        visible_alias = "addr",
        short_alias = 'a',
        env = "ORCHCTL_ENDPOINTS",
        value_delimiter = ',',
        global = true
    )]
    endpoints: Vec<String>,
    /// A file holding the API token (also ORCHCTL_TOKEN_FILE, or the token itself in
    /// ORCHCTL_TOKEN; never on the command line).
    #[arg(long, env = "ORCHCTL_TOKEN_FILE", global = true)]
    token_file: Option<PathBuf>,
    /// Talk TLS to the peers, trusting this CA certificate (PEM).
    #[arg(long, env = "ORCHCTL_CA_CERT", global = true)]
    ca_cert: Option<PathBuf>,
    /// The name the peers' certificates carry, when not their address.
    #[arg(long, env = "ORCHCTL_TLS_SERVER_NAME", global = true)]
    tls_server_name: Option<String>,
    /// The config file (default ~/.config/orchctl/config.toml).
    #[arg(long, env = "ORCHCTL_CONFIG", global = true)]
    config: Option<PathBuf>,
    /// Output format.
    #[arg(long, short = 'o', value_enum, default_value = "table", env = "ORCHCTL_OUTPUT", global = true)]
    output: Output,
    /// Seconds to wait for an answer (switchover and failover wait at least 120 s).
    #[arg(long, global = true)]
    timeout: Option<u64>,
    /// Do not ask before destructive operations.
    #[arg(long, short = 'y', global = true)]
    yes: bool,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// The answering peer: identity, Raft role, who you are.
    Status,
    /// Clusters the peer has discovered.
    Clusters,
    /// A cluster's instances (by alias or any member's host:port).
    Topology {
        cluster: String,
        /// Keep showing it as it changes.
        #[arg(long, short = 'w')]
        watch: bool,
    },
    /// One instance (host:port; port 3306 when left out).
    Instance { instance: String },
    /// Probe an instance and make every peer discover from it (admin).
    Discover { instance: String },
    /// Stop tracking an instance on every peer (admin).
    Forget { instance: String },
    /// What is wrong, from the leader's analysis.
    Problems {
        cluster: Option<String>,
        #[arg(long, short = 'w')]
        watch: bool,
    },
    /// Planned switchover to a replica (operate): the master is made read-only, the
    /// candidate catches up, is promoted, and the others follow it.
    Switchover(RecoveryArgs),
    /// Forced failover (admin): promote a replica whatever the master's state.
    Failover(RecoveryArgs),
    /// Recoveries: list, show, acknowledge.
    #[command(subcommand)]
    Recoveries(RecoveriesCmd),
    /// Downtime: instances that are neither promoted nor cause recoveries.
    #[command(subcommand)]
    Downtime(DowntimeCmd),
    /// Promotion rules: prefer, neutral, prefer_not, must_not.
    #[command(subcommand)]
    PromotionRule(PromotionRuleCmd),
    /// The switch for every automatic recovery (admin).
    GlobalRecoveries {
        #[arg(value_enum)]
        action: SwitchAction,
    },
    /// The Raft group of the peers.
    #[command(subcommand)]
    Raft(RaftCmd),
    /// The leader's view of the NLB target groups and the DynamoDB mirror.
    Aws,
    /// Every mutation: who, what, from where, the result.
    Audit {
        /// The newest N entries.
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// Print topology, problem and recovery events as they happen.
    Watch { cluster: Option<String> },
    /// Backups to S3, the binlog archive, restores and point-in-time recovery.
    #[command(subcommand)]
    Backup(BackupCmd),
    /// Print a completion script: `orchctl completion bash > /etc/bash_completion.d/orchctl`.
    Completion {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

#[derive(clap::Args, Debug)]
struct RecoveryArgs {
    cluster: String,
    /// The replica to promote (host:port); the best one when left out.
    #[arg(long)]
    to: Option<String>,
    /// Refuse unless this is still the master (default: the master shown when asking).
    #[arg(long)]
    expected_master: Option<String>,
    /// Show the plan (candidate, and why each other replica was passed over) only.
    #[arg(long)]
    dry_run: bool,
}

#[derive(Subcommand, Debug)]
enum BackupCmd {
    /// Take a backup now (operate): of a replica unless --source names an instance;
    /// shows its progress until it ends (--no-wait: the job only).
    Create {
        #[command(flatten)]
        cluster: ClusterArg,
        /// A full backup (default: incremental when a backup to build on exists).
        #[arg(long, conflicts_with = "incremental")]
        full: bool,
        /// An incremental on the newest backup (refused when there is none).
        #[arg(long)]
        incremental: bool,
        /// The instance to copy (host:port).
        #[arg(long)]
        source: Option<String>,
        #[arg(long)]
        no_wait: bool,
    },
    /// The backups in the bucket: size, duration, chain complete or not, the oldest
    /// restorable point, and the binlog archive.
    List {
        #[command(flatten)]
        cluster: ClusterArg,
    },
    /// Check every part's checksum (and that it opens) without restoring (operate).
    Verify {
        id: String,
        #[command(flatten)]
        cluster: ClusterArg,
        #[arg(long)]
        no_wait: bool,
    },
    /// Delete a backup (admin); refused while another backup needs it.
    Delete {
        id: String,
        #[command(flatten)]
        cluster: ClusterArg,
    },
    /// Restore onto an empty server, then replay the binlog archive to a point
    /// (admin): the newest backup before the point, downloaded, prepared, started and
    /// brought forward exactly to it, then verified.
    Restore {
        #[command(flatten)]
        cluster: ClusterArg,
        /// `latest`, a UTC time (`2026-12-04T18:50:00.123456Z`), or a GTID set
        /// (everything up to and including it; with --exclusive, up to before it).
        #[arg(long, default_value = "latest")]
        to: String,
        #[arg(long)]
        exclusive: bool,
        /// The empty server to restore onto (host:port; a peer runs on its host).
        #[arg(long)]
        target: String,
        /// Restore this backup instead of the newest one before the point.
        #[arg(long)]
        backup: Option<String>,
        /// Show the plan only.
        #[arg(long)]
        dry_run: bool,
        #[arg(long)]
        no_wait: bool,
    },
    /// Follow a backup job (as `create`, `verify` and `restore` do).
    Job { id: String },
}

#[derive(clap::Args, Debug)]
struct ClusterArg {
    /// The cluster (default: the only one the peer knows).
    #[arg(long, short = 'c')]
    cluster: Option<String>,
}

#[derive(Subcommand, Debug)]
enum RecoveriesCmd {
    /// Recent recoveries.
    List {
        #[arg(long)]
        cluster: Option<String>,
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
    /// One recovery with its steps and timings.
    Show { id: u64 },
    /// Acknowledge an ended recovery (lifts its anti-flap block).
    Ack {
        id: u64,
        #[arg(long, default_value = "")]
        comment: String,
    },
}

#[derive(Subcommand, Debug)]
enum DowntimeCmd {
    Begin {
        instance: String,
        /// `90s`, `15m`, `2h`, `1d`, `1h 30m`.
        #[arg(long)]
        duration: String,
        #[arg(long)]
        reason: String,
    },
    End {
        instance: String,
    },
    List,
}

#[derive(Subcommand, Debug)]
enum PromotionRuleCmd {
    Set { instance: String, rule: String },
    List,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum SwitchAction {
    Enable,
    Disable,
    Status,
}

#[derive(Subcommand, Debug)]
enum RaftCmd {
    /// Role, term, leader, indexes and members.
    State,
    /// The members.
    Members,
    /// Add a peer: a learner first, a voter once it caught up.
    Add {
        #[arg(long)]
        id: u64,
        /// host:10008
        #[arg(long)]
        raft: String,
        /// host:3000
        #[arg(long)]
        http: String,
    },
    /// Remove a peer from the group.
    Remove { id: u64 },
    /// Make peer ID the leader.
    TransferLeadership { id: u64 },
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args = Args::parse();
    let code = match run(args).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("orchctl: {e}");
            e.exit
        }
    };
    std::process::exit(code as i32);
}

/// `host` means `host:3306`.
fn instance_arg(s: &str) -> String {
    let has_port = match s.strip_prefix('[') {
        Some(rest) => rest.contains("]:"),
        None => s.contains(':'),
    };
    if has_port {
        s.to_string()
    } else {
        format!("{s}:3306")
    }
}

/// Asks on the terminal; without one, refuses unless `--yes`.
fn confirm(yes: bool, what: &str) -> Result<(), CtlError> {
    if yes {
        return Ok(());
    }
    if !std::io::stdin().is_terminal() {
        return Err(CtlError::usage(format!("{what}: not confirmed (no terminal); pass --yes")));
    }
    eprint!("{what}. Continue? [y/N] ");
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    std::io::stdin()
        .read_line(&mut answer)
        .map_err(|e| CtlError::usage(format!("cannot read the answer: {e}")))?;
    if matches!(answer.trim(), "y" | "Y" | "yes") {
        Ok(())
    } else {
        Err(CtlError::new(Exit::Failed, "not confirmed; nothing was done"))
    }
}

fn client(args: &Args) -> Result<Client, CtlError> {
    let (path, explicit) = match &args.config {
        Some(p) => (Some(p.clone()), true),
        None => (FileConfig::default_path(), false),
    };
    let file = match path {
        Some(p) => FileConfig::load(&p, explicit)?,
        None => FileConfig::default(),
    };
    let mut endpoints =
        if args.endpoints.is_empty() { file.endpoints.clone() } else { args.endpoints.clone() };
    if endpoints.is_empty() {
        endpoints.push("127.0.0.1:3000".into());
    }
    let token = match (
        std::env::var("ORCHCTL_TOKEN").ok().filter(|t| !t.is_empty()),
        &args.token_file,
        &file.token_file,
    ) {
        (_, Some(path), _) => Some(client::read_token(path)?),
        (Some(token), None, _) => Some(token),
        (None, None, Some(path)) => Some(client::read_token(path)?),
        (None, None, None) => None,
    };
    let ca = args.ca_cert.clone().or(file.ca_cert.clone());
    let server_name = args.tls_server_name.clone().or(file.tls_server_name.clone());
    let timeout = Duration::from_secs(args.timeout.or(file.timeout_s).unwrap_or(10).max(1));
    Client::new(endpoints, token, ca.as_deref(), server_name, timeout)
}

fn print<T: serde::Serialize>(output: Output, value: &T, table: impl FnOnce(&T)) {
    match output {
        Output::Json => render::json(value),
        Output::Table => table(value),
    }
}

macro_rules! call {
    ($c:expr, $read_only:expr, $timeout:expr, $method:ident, $msg:expr) => {{
        let c = &$c;
        let msg = $msg;
        c.call($read_only, $timeout, |mut client| {
            let request = c.request(msg.clone());
            async move { client.$method(request).await }
        })
        .await
    }};
}

async fn run(args: Args) -> Result<Exit, CtlError> {
    if let Cmd::Completion { shell } = &args.command {
        let mut script = Vec::new();
        clap_complete::generate(*shell, &mut Args::command(), "orchctl", &mut script);
        render::say_raw(&String::from_utf8_lossy(&script));
        return Ok(Exit::Ok);
    }
    rustls::crypto::ring::default_provider().install_default().ok();
    let c = client(&args)?;
    let out = args.output;
    let t = c.timeout;
    let long = t.max(Duration::from_secs(120));
    match &args.command {
        Cmd::Status => {
            let r = call!(c, true, t, status, pb::StatusRequest {})?;
            print(out, &r, render::status);
        }
        Cmd::Clusters => {
            let r = call!(c, true, t, list_clusters, pb::ListClustersRequest {})?;
            print(out, &r, render::clusters);
        }
        Cmd::Topology { cluster, watch } => {
            let r = call!(c, true, t, get_cluster, pb::GetClusterRequest { alias: cluster.clone() })?;
            print(out, &r, render::topology);
            if *watch {
                return watch_topology(&c, out, &r.alias).await;
            }
        }
        Cmd::Instance { instance } => {
            let r =
                call!(c, true, t, get_instance, pb::GetInstanceRequest { instance: instance_arg(instance) })?;
            print(out, &r, render::instance);
        }
        Cmd::Discover { instance } => {
            let r = call!(c, false, t, discover, pb::DiscoverRequest { instance: instance_arg(instance) })?;
            print(out, &r, |r| say!("discovered {}: every peer follows it now", r.key));
        }
        Cmd::Forget { instance } => {
            let instance = instance_arg(instance);
            confirm(args.yes, &format!("Every peer stops tracking {instance}"))?;
            let r = call!(c, false, t, forget, pb::ForgetRequest { instance })?;
            print(out, &r, render::operation);
        }
        Cmd::Problems { cluster, watch } => {
            let cluster = cluster.clone().unwrap_or_default();
            let r = call!(c, true, t, list_problems, pb::ListProblemsRequest { cluster: cluster.clone() })?;
            print(out, &r, render::problems);
            if *watch {
                return watch_events(&c, out, &cluster, true).await;
            }
        }
        Cmd::Switchover(a) | Cmd::Failover(a) => {
            let switchover = matches!(args.command, Cmd::Switchover(_));
            return recover(&c, out, args.yes, a, switchover, t, long).await;
        }
        Cmd::Recoveries(RecoveriesCmd::List { cluster, limit }) => {
            let q = pb::ListRecoveriesRequest { cluster: cluster.clone().unwrap_or_default(), limit: *limit };
            let r = call!(c, true, t, list_recoveries, q)?;
            print(out, &r, render::recoveries);
        }
        Cmd::Recoveries(RecoveriesCmd::Show { id }) => {
            let r = call!(c, true, t, get_recovery, pb::GetRecoveryRequest { id: *id })?;
            print(out, &r, render::recovery);
        }
        Cmd::Recoveries(RecoveriesCmd::Ack { id, comment }) => {
            let q = pb::AcknowledgeRecoveryRequest { id: *id, comment: comment.clone() };
            let r = call!(c, false, t, acknowledge_recovery, q)?;
            print(out, &r, render::operation);
        }
        Cmd::Downtime(DowntimeCmd::Begin { instance, duration, reason }) => {
            let q = pb::BeginDowntimeRequest {
                instance: instance_arg(instance),
                duration: duration.clone(),
                reason: reason.clone(),
            };
            let r = call!(c, false, t, begin_downtime, q)?;
            print(out, &r, render::operation);
        }
        Cmd::Downtime(DowntimeCmd::End { instance }) => {
            let r = call!(
                c,
                false,
                t,
                end_downtime,
                pb::EndDowntimeRequest { instance: instance_arg(instance) }
            )?;
            print(out, &r, render::operation);
        }
        Cmd::Downtime(DowntimeCmd::List) => {
            let r = call!(c, true, t, list_downtimes, pb::ListDowntimesRequest {})?;
            print(out, &r, render::downtimes);
        }
        Cmd::PromotionRule(PromotionRuleCmd::Set { instance, rule }) => {
            let q = pb::SetPromotionRuleRequest { instance: instance_arg(instance), rule: rule.clone() };
            let r = call!(c, false, t, set_promotion_rule, q)?;
            print(out, &r, render::operation);
        }
        Cmd::PromotionRule(PromotionRuleCmd::List) => {
            let r = call!(c, true, t, list_promotion_rules, pb::ListPromotionRulesRequest {})?;
            print(out, &r, render::promotion_rules);
        }
        Cmd::GlobalRecoveries { action: SwitchAction::Status } => {
            let r = call!(c, true, t, get_global_recoveries, pb::GetGlobalRecoveriesRequest {})?;
            print(out, &r, |r| {
                say!("automatic recoveries are {}", if r.enabled { "enabled" } else { "DISABLED" })
            });
        }
        Cmd::GlobalRecoveries { action } => {
            let enabled = matches!(action, SwitchAction::Enable);
            if !enabled {
                confirm(
                    args.yes,
                    "No cluster will be recovered automatically until recoveries are enabled again",
                )?;
            }
            let r = call!(c, false, t, set_global_recoveries, pb::SetGlobalRecoveriesRequest { enabled })?;
            print(out, &r, |r| {
                say!("automatic recoveries {}", if r.enabled { "enabled" } else { "disabled" })
            });
        }
        Cmd::Raft(RaftCmd::State) => {
            let r = call!(c, true, t, get_raft_state, pb::GetRaftStateRequest {})?;
            print(out, &r, render::raft_state);
        }
        Cmd::Raft(RaftCmd::Members) => {
            let r = call!(c, true, t, get_raft_state, pb::GetRaftStateRequest {})?;
            match out {
                Output::Json => render::json(&r.members),
                Output::Table => render::raft_members(&r),
            }
        }
        Cmd::Raft(RaftCmd::Add { id, raft, http }) => {
            let q = pb::AddRaftPeerRequest { id: *id, raft: raft.clone(), http: http.clone() };
            let r = call!(c, false, long, add_raft_peer, q)?;
            print(out, &r, render::operation);
        }
        Cmd::Raft(RaftCmd::Remove { id }) => {
            confirm(args.yes, &format!("Peer {id} leaves the Raft group"))?;
            let r = call!(c, false, long, remove_raft_peer, pb::RemoveRaftPeerRequest { id: *id })?;
            print(out, &r, render::operation);
        }
        Cmd::Raft(RaftCmd::TransferLeadership { id }) => {
            let r = call!(c, false, t, transfer_leadership, pb::TransferLeadershipRequest { to: *id })?;
            print(out, &r, render::operation);
        }
        Cmd::Aws => {
            let r = call!(c, true, t, get_aws, pb::GetAwsRequest {})?;
            print(out, &r, render::aws);
        }
        Cmd::Audit { limit } => {
            let r = call!(c, true, t, list_audit, pb::ListAuditRequest { limit: *limit })?;
            print(out, &r, render::audit);
        }
        Cmd::Watch { cluster } => {
            return watch_events(&c, out, cluster.as_deref().unwrap_or(""), false).await
        }
        Cmd::Backup(cmd) => return backup(&c, out, args.yes, cmd).await,
        Cmd::Completion { .. } => {}
    }
    Ok(Exit::Ok)
}

/// A switchover or forced failover: the plan for a dry run; otherwise confirmation
/// (naming the master it expects, which the peers then check) and the recovery.
async fn recover(
    c: &Client,
    out: Output,
    yes: bool,
    a: &RecoveryArgs,
    switchover: bool,
    t: Duration,
    long: Duration,
) -> Result<Exit, CtlError> {
    let target = a.to.as_deref().map(instance_arg).unwrap_or_default();
    let expected = match &a.expected_master {
        Some(m) => instance_arg(m),
        None if a.dry_run => String::new(),
        None => {
            let topology =
                call!(c, true, t, get_cluster, pb::GetClusterRequest { alias: a.cluster.clone() })?;
            if topology.recorded_master.is_empty() {
                topology.master
            } else {
                topology.recorded_master
            }
        }
    };
    let kind = if switchover { "Switch over" } else { "FORCE a failover of" };
    if !a.dry_run {
        let to = if target.is_empty() { "the best replica".to_string() } else { target.clone() };
        confirm(yes, &format!("{kind} cluster {} from {expected} to {to}", a.cluster))?;
    }
    let reply = if switchover {
        let q = pb::SwitchoverRequest {
            cluster: a.cluster.clone(),
            target,
            expected_master: expected,
            dry_run: a.dry_run,
        };
        call!(c, a.dry_run, long, switchover, q)?
    } else {
        let q = pb::ForceFailoverRequest {
            cluster: a.cluster.clone(),
            target,
            expected_master: expected,
            dry_run: a.dry_run,
        };
        call!(c, a.dry_run, long, force_failover, q)?
    };
    if out == Output::Json {
        render::json(&reply);
    }
    if let Some(plan) = &reply.plan {
        if out == Output::Table {
            render::plan(plan);
        }
        return Ok(if plan.candidate.is_empty() { Exit::Refused } else { Exit::Ok });
    }
    let Some(r) = &reply.recovery else { return Err(CtlError::failed("the peer sent no recovery")) };
    if out == Output::Table {
        render::recovery(r);
    }
    if r.status == "succeeded" {
        Ok(Exit::Ok)
    } else {
        if out == Output::Table {
            eprintln!("orchctl: recovery {} {}: {}", r.id, r.status, r.summary);
        }
        Ok(Exit::Failed)
    }
}

/// The cluster named, or the only one the peer knows.
async fn cluster_name(c: &Client, arg: &ClusterArg) -> Result<String, CtlError> {
    if let Some(name) = &arg.cluster {
        return Ok(name.clone());
    }
    let r = call!(c, true, c.timeout, list_clusters, pb::ListClustersRequest {})?;
    match r.clusters.as_slice() {
        [only] => Ok(only.alias.clone()),
        [] => Err(CtlError::usage("the peer knows no cluster: give --cluster")),
        many => Err(CtlError::usage(format!(
            "the peer knows {} clusters ({}): give --cluster",
            many.len(),
            many.iter().map(|c| c.alias.as_str()).collect::<Vec<_>>().join(", ")
        ))),
    }
}

async fn backup(c: &Client, out: Output, yes: bool, cmd: &BackupCmd) -> Result<Exit, CtlError> {
    let t = c.timeout;
    let long = t.max(Duration::from_secs(60));
    let job = match cmd {
        BackupCmd::List { cluster } => {
            let cluster = cluster_name(c, cluster).await?;
            let r = call!(c, true, long, list_backups, pb::ListBackupsRequest { cluster })?;
            print(out, &r, render::backups);
            return Ok(Exit::Ok);
        }
        BackupCmd::Delete { id, cluster } => {
            let cluster = cluster_name(c, cluster).await?;
            confirm(yes, &format!("Backup {id} of cluster {cluster} is deleted"))?;
            let q = pb::DeleteBackupRequest { cluster, id: id.clone() };
            let r = call!(c, false, long, delete_backup, q)?;
            print(out, &r, render::operation);
            return Ok(Exit::Ok);
        }
        BackupCmd::Job { id } => return follow_job(c, out, id).await,
        BackupCmd::Create { cluster, full, incremental, source, no_wait } => {
            let cluster = cluster_name(c, cluster).await?;
            let kind = if *full {
                "full"
            } else if *incremental {
                "incremental"
            } else {
                ""
            };
            let q = pb::CreateBackupRequest {
                cluster,
                kind: kind.into(),
                source: source.as_deref().map(instance_arg).unwrap_or_default(),
            };
            (call!(c, false, long, create_backup, q)?, *no_wait)
        }
        BackupCmd::Verify { id, cluster, no_wait } => {
            let cluster = cluster_name(c, cluster).await?;
            let q = pb::VerifyBackupRequest { cluster, id: id.clone() };
            (call!(c, false, long, verify_backup, q)?, *no_wait)
        }
        BackupCmd::Restore { cluster, to, exclusive, target, backup, dry_run, no_wait } => {
            let cluster = cluster_name(c, cluster).await?;
            let target = instance_arg(target);
            if !dry_run {
                confirm(
                    yes,
                    &format!("The data of {target} is replaced by a restore of cluster {cluster} to {to}"),
                )?;
            }
            let q = pb::RestoreBackupRequest {
                cluster,
                target,
                to: to.clone(),
                exclusive: *exclusive,
                backup_id: backup.clone().unwrap_or_default(),
                dry_run: *dry_run,
            };
            (call!(c, *dry_run, long, restore_backup, q)?, *no_wait)
        }
    };
    let (job, no_wait) = job;
    if no_wait || job.ended_unix_ms > 0 {
        print(out, &job, render::job);
        return Ok(if job.status == "failed" { Exit::Failed } else { Exit::Ok });
    }
    if out == Output::Table {
        say!("{} of {} on peer {} (job {})", job.kind, dash_or(&job.instance), job.runner, job.id);
    }
    follow_job(c, out, &job.id).await
}

fn dash_or(s: &str) -> &str {
    if s.is_empty() {
        "-"
    } else {
        s
    }
}

/// Shows a job's progress (a bar on a terminal: bytes, rate, ETA; its phases
/// otherwise) until it ends; the exit code says how it ended.
async fn follow_job(c: &Client, out: Output, id: &str) -> Result<Exit, CtlError> {
    let bar = indicatif::ProgressBar::new(0);
    let style = |total: bool| {
        let template = if total {
            "{spinner} {msg}\n  [{bar:40}] {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta}"
        } else {
            "{spinner} {msg}\n  {bytes} {binary_bytes_per_sec} {elapsed}"
        };
        indicatif::ProgressStyle::with_template(template)
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> ")
    };
    let show = out == Output::Table;
    if !show || !std::io::stderr().is_terminal() {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    bar.set_style(style(false));
    bar.enable_steady_tick(Duration::from_millis(200));
    let mut last_phase = String::new();
    let mut last: Option<pb::BackupJob> = None;
    let mut retries = 0;
    while last.as_ref().is_none_or(|j| j.ended_unix_ms == 0) {
        let (endpoint, mut stream) = c.watch_job(id).await?;
        loop {
            match stream.message().await {
                Ok(Some(j)) => {
                    if j.bytes_total > 0 && bar.length() != Some(j.bytes_total) {
                        bar.set_style(style(true));
                        bar.set_length(j.bytes_total);
                    }
                    bar.set_position(j.bytes_done.min(j.bytes_total.max(j.bytes_done)));
                    if j.phase != last_phase {
                        if show && bar.is_hidden() {
                            eprintln!("{}: {}", render::clock(orchestrator_now_ms()), j.phase);
                        }
                        bar.set_message(j.phase.clone());
                        last_phase = j.phase.clone();
                    }
                    last = Some(j);
                }
                Ok(None) => break,
                Err(s) if retries < 5 && s.code() == tonic::Code::Unavailable => {
                    retries += 1;
                    eprintln!("orchctl: following job {id} on {endpoint}: {}; again", s.message());
                    break;
                }
                Err(s) => {
                    bar.finish_and_clear();
                    return Err(CtlError::from_status(&endpoint, &s));
                }
            }
        }
        if last.as_ref().is_none_or(|j| j.ended_unix_ms == 0) {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    bar.finish_and_clear();
    let job = last.expect("a job was seen");
    print(out, &job, render::job);
    Ok(if job.status == "succeeded" { Exit::Ok } else { Exit::Failed })
}

fn orchestrator_now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Prints events as they come; reconnects (to any peer) when a stream ends.
async fn watch_events(c: &Client, out: Output, cluster: &str, problems_only: bool) -> Result<Exit, CtlError> {
    use pb::watch_event::Event;
    loop {
        let (endpoint, mut stream) = c.watch(cluster).await?;
        loop {
            match stream.message().await {
                Ok(Some(e)) => {
                    if problems_only && !matches!(e.event, Some(Event::Problems(_))) {
                        continue;
                    }
                    match out {
                        Output::Json => render::json_line(&e),
                        Output::Table => render::event(&e),
                    }
                    let _ = std::io::stdout().flush();
                }
                Ok(None) => break,
                Err(s)
                    if s.code() == tonic::Code::Unauthenticated
                        || s.code() == tonic::Code::PermissionDenied =>
                {
                    return Err(CtlError::from_status(&endpoint, &s));
                }
                Err(s) => {
                    eprintln!("orchctl: watch on {endpoint} ended ({}); reconnecting", s.message());
                    break;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Shows the cluster again whenever its topology changes.
async fn watch_topology(c: &Client, out: Output, alias: &str) -> Result<Exit, CtlError> {
    use pb::watch_event::Event;
    loop {
        let (endpoint, mut stream) = c.watch(alias).await?;
        while let Ok(Some(e)) = stream.message().await {
            if let Some(Event::Topology(t)) = &e.event {
                match out {
                    Output::Json => render::json_line(t),
                    Output::Table => {
                        if std::io::stdout().is_terminal() {
                            render::say_raw("\x1b[2J\x1b[H");
                        }
                        say!("-- {} (from {endpoint})", render::date_time(e.at_unix_ms));
                        render::topology(t);
                    }
                }
                let _ = std::io::stdout().flush();
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instances_default_to_port_3306() {
        assert_eq!(instance_arg("10.0.0.1"), "10.0.0.1:3306");
        assert_eq!(instance_arg("10.0.0.1:3307"), "10.0.0.1:3307");
        assert_eq!(instance_arg("[::1]"), "[::1]:3306");
        assert_eq!(instance_arg("[::1]:3307"), "[::1]:3307");
    }

    #[test]
    fn the_command_line_is_consistent() {
        Args::command().debug_assert();
    }
}
