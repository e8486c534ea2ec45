//! `orchctl`: talks gRPC to any orchestrator peer (port 3000) and prints what it says.

use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use orch_proto::v1 as pb;
use orch_proto::v1::orchestrator_client::OrchestratorClient;
use tonic::transport::Channel;

#[derive(Parser, Debug)]
#[command(version, about = "Control the MySQL orchestrator peers")]
struct Args {
    /// Address of any peer (`host:port` of its HTTP/gRPC listener).
    #[arg(long, short = 'a', env = "ORCHCTL_ADDR", default_value = "127.0.0.1:3000", global = true)]
    addr: String,
    /// Seconds to wait for an answer.
    #[arg(long, default_value_t = 5, global = true)]
    timeout: u64,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Identity and health of the peer answering.
    Status,
    /// Clusters the peer has discovered.
    Clusters,
    /// Instances of one cluster (alias, master key or any member's host:port).
    Topology {
        cluster: String,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Add a seed instance (host:port) for the peer to discover from.
    Discover { instance: String },
}

#[tokio::main]
async fn main() {
    if let Err(e) = run(Args::parse()).await {
        eprintln!("orchctl: {e:#}");
        std::process::exit(1);
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let timeout = Duration::from_secs(args.timeout);
    let endpoint = Channel::from_shared(format!("http://{}", args.addr))
        .with_context(|| format!("`{}` is not a valid peer address", args.addr))?
        .connect_timeout(timeout)
        .timeout(timeout);
    let channel = endpoint.connect().await.with_context(|| format!("cannot reach peer at {}", args.addr))?;
    let mut client = OrchestratorClient::new(channel);
    match args.command {
        Command::Status => {
            let s = client.status(pb::StatusRequest {}).await.map_err(one_line)?.into_inner();
            println!("peer {} at {} (version {})", s.node_id, s.http_address, s.version);
            println!("up {} s; {} instances in {} clusters", s.uptime_seconds, s.known_instances, s.clusters);
        }
        Command::Clusters => {
            let r = client.list_clusters(pb::ListClustersRequest {}).await.map_err(one_line)?.into_inner();
            println!("{:<24} {:<24} {:>9} {:>9}", "ALIAS", "MASTER", "INSTANCES", "REACHABLE");
            for c in r.clusters {
                println!("{:<24} {:<24} {:>9} {:>9}", c.alias, c.master, c.instances, c.reachable);
            }
        }
        Command::Topology { cluster, json } => {
            let t = client
                .get_cluster(pb::GetClusterRequest { alias: cluster })
                .await
                .map_err(one_line)?
                .into_inner();
            if json {
                println!("{}", serde_json::to_string_pretty(&topology_json(&t))?);
            } else {
                print_topology(&t);
            }
        }
        Command::Discover { instance } => {
            let (host, port) = instance.rsplit_once(':').context("instance must be host:port")?;
            let port: u32 = port.parse().context("port must be a number")?;
            let r = client
                .discover(pb::DiscoverRequest { host: host.to_string(), port })
                .await
                .map_err(one_line)?
                .into_inner();
            println!("discovered {}", r.key);
        }
    }
    Ok(())
}

fn one_line(status: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{}: {}", status.code(), status.message())
}

fn print_topology(t: &pb::ClusterTopology) {
    println!("cluster {} (master {})", t.alias, t.master);
    println!(
        "{:<22} {:<8} {:<11} {:<3} {:<22} {:>5}  GTID EXECUTED",
        "INSTANCE", "ROLE", "STATE", "RO", "IO/SQL", "LAG"
    );
    for i in &t.instances {
        let (threads, lag) = match &i.replication {
            Some(r) => (
                format!("{}/{}", r.io_thread, r.sql_thread),
                if r.seconds_behind < 0 { "-".to_string() } else { format!("{}s", r.seconds_behind) },
            ),
            None => ("-".to_string(), "-".to_string()),
        };
        println!(
            "{:<22} {:<8} {:<11} {:<3} {:<22} {:>5}  {}",
            i.key,
            i.role,
            if i.reachable { "up" } else { "UNREACHABLE" },
            if i.read_only { "yes" } else { "no" },
            threads,
            lag,
            i.gtid_executed
        );
        if !i.last_error.is_empty() {
            println!("    error: {}", i.last_error);
        }
        if let Some(r) = &i.replication {
            for e in [&r.last_io_error, &r.last_sql_error] {
                if !e.is_empty() {
                    println!("    replication error: {e}");
                }
            }
        }
    }
}

fn topology_json(t: &pb::ClusterTopology) -> serde_json::Value {
    serde_json::json!({
        "alias": t.alias,
        "master": t.master,
        "snapshot_unix_ms": t.snapshot_unix_ms,
        "instances": t.instances.iter().map(|i| serde_json::json!({
            "key": i.key, "role": i.role, "reachable": i.reachable, "last_error": i.last_error,
            "server_id": i.server_id, "flavor": i.flavor, "version": i.version,
            "read_only": i.read_only, "gtid_executed": i.gtid_executed,
            "replication": i.replication.as_ref().map(|r| serde_json::json!({
                "source": r.source, "io_thread": r.io_thread, "sql_thread": r.sql_thread,
                "seconds_behind": r.seconds_behind, "last_io_error": r.last_io_error,
                "last_sql_error": r.last_sql_error,
            })),
        })).collect::<Vec<_>>(),
    })
}
