//! `provisioner`: the AWS side of a cluster (`plan`, `apply`, `destroy`, `status`
//! from a spec file), node bootstrap (`bootstrap`), and its helpers.

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use provisioner::bootstrap::facts::NodeFacts;
use provisioner::certs::{write_files, NodeSpec};
use provisioner::cloud::{self, clients::Clients, Endpoint};
use provisioner::mysql_config::{render, MysqlServerConfig, ServerFlavor};
use provisioner::spec::ClusterSpec;

#[derive(Parser, Debug)]
#[command(version, about = "Provision MySQL cluster nodes and their AWS resources")]
struct Args {
    /// One endpoint for every AWS service (moto serves them all on one port).
    #[arg(long, global = true, env = "AWS_ENDPOINT_URL")]
    endpoint_url: Option<String>,
    /// The AWS region (default: the spec's `region`, else the standard chain's).
    #[arg(long, global = true)]
    region: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Show what apply would create, change or delete (reads only).
    Plan {
        #[arg(long)]
        spec: PathBuf,
    },
    /// Create or update the cluster's AWS side to match the spec.
    Apply {
        #[arg(long)]
        spec: PathBuf,
    },
    /// Delete the cluster's AWS side; the backup bucket and the secrets are kept
    /// unless --delete-data.
    Destroy {
        #[arg(long)]
        spec: PathBuf,
        /// Do not ask for the cluster id to be typed.
        #[arg(long)]
        yes: bool,
        /// Also delete the backup bucket (every object version) and the secrets.
        #[arg(long)]
        delete_data: bool,
    },
    /// Show which resources exist, the nodes and their target groups.
    Status {
        #[arg(long)]
        spec: PathBuf,
    },
    /// Make this instance a member of its cluster: secrets, storage, MySQL, first
    /// master or replica (under the fenced bootstrap lock), the orchestrator peer in
    /// the Raft group. Idempotent: each step does only what is missing; a rerun after
    /// success does nothing. Run by cloud-init on every node.
    Bootstrap {
        /// Read the node's facts from instance metadata and its instance tags.
        #[arg(long, conflicts_with = "facts")]
        from_instance_metadata: bool,
        /// Read the node's facts from this TOML file (tests, the sandbox).
        #[arg(long, required_unless_present = "from_instance_metadata")]
        facts: Option<PathBuf>,
    },
    /// Print the my.cnf a node runs with.
    RenderMysqlConfig {
        #[arg(long, value_enum, default_value = "mariadb")]
        flavor: ServerFlavor,
        #[arg(long)]
        server_id: u32,
        /// The node's private address (bind and report_host).
        #[arg(long)]
        address: String,
        #[arg(long, default_value_t = 3306)]
        port: u16,
        /// Base directory: data/ and run/ below it.
        #[arg(long, default_value = "/var/lib/mysql-node")]
        base_dir: PathBuf,
        /// Start writable (the initial master only).
        #[arg(long)]
        writable: bool,
    },
    /// Make the cluster's CA and one certificate per node (mutual TLS between peers):
    /// ca.crt, ca.key, node-ID.crt, node-ID.key in --out (keys mode 0600; nothing is
    /// overwritten). With --ca-key, sign more node certificates with an existing CA.
    Certs {
        /// The cluster's name (part of every certificate's subject).
        #[arg(long)]
        cluster: String,
        /// Where to write the files.
        #[arg(long)]
        out: PathBuf,
        /// A node: ID=ADDRESS[,ADDRESS...], the addresses other peers reach it by.
        #[arg(long = "node", required = true)]
        nodes: Vec<NodeSpec>,
        /// How long node certificates are valid.
        #[arg(long, default_value_t = 825)]
        days: i64,
        /// The key of an existing CA of this cluster (ca.key) to sign with.
        #[arg(long)]
        ca_key: Option<PathBuf>,
    },
}

fn main() {
    if let Err(e) = run() {
        eprintln!("provisioner: {e:#}");
        std::process::exit(1);
    }
}

/// The spec and clients for an AWS command; the spec is checked before any call.
async fn connect(
    spec: &std::path::Path,
    args_region: Option<String>,
    endpoint_url: Option<String>,
) -> anyhow::Result<(ClusterSpec, Clients)> {
    let spec = ClusterSpec::load(spec)?;
    let region = match (args_region, &spec.region) {
        (Some(flag), Some(file)) if &flag != file => {
            anyhow::bail!("--region {flag} differs from the spec's region {file}")
        }
        (Some(flag), _) => Some(flag),
        (None, file) => file.clone(),
    };
    let clients = Clients::new(&Endpoint { region, endpoint_url, credentials: None }).await;
    anyhow::ensure!(
        !clients.region.is_empty(),
        "no AWS region: set `region` in the spec, --region, or AWS_REGION"
    );
    Ok((spec, clients))
}

fn progress(line: &str) {
    println!("{line}");
}

/// Asks for the cluster id to be typed before a destroy.
fn confirm_destroy(cluster_id: &str) -> anyhow::Result<()> {
    let stdin = std::io::stdin();
    anyhow::ensure!(stdin.is_terminal(), "destroy needs the cluster id typed on a terminal, or --yes");
    print!("type the cluster id ({cluster_id}) to delete it: ");
    std::io::stdout().flush()?;
    let mut line = String::new();
    stdin.lock().read_line(&mut line)?;
    anyhow::ensure!(line.trim() == cluster_id, "not confirmed: nothing deleted");
    Ok(())
}

async fn aws_command(args: Args) -> anyhow::Result<()> {
    let (region, endpoint) = (args.region, args.endpoint_url);
    match args.command {
        Command::Plan { spec } => {
            let (spec, c) = connect(&spec, region, endpoint).await?;
            let planned = cloud::plan(&c, &spec).await?;
            print!("{}", planned.plan.render());
        }
        Command::Apply { spec } => {
            let (spec, c) = connect(&spec, region, endpoint).await?;
            let applied = cloud::apply(&c, &spec, &mut progress).await?;
            if applied.plan.is_empty() {
                println!("no changes ({} resources as they should be)", applied.plan.unchanged);
            } else {
                print!("{}", applied.plan.render());
            }
            println!("{} changing AWS calls", applied.changing_calls.len());
            print!("{}", applied.summary.render());
        }
        Command::Destroy { spec, yes, delete_data } => {
            let (spec, c) = connect(&spec, region, endpoint).await?;
            let (plan, _) = cloud::plan_destroy(&c, &spec, delete_data).await?;
            print!("{}", plan.render());
            if plan.is_empty() {
                return Ok(());
            }
            if !yes {
                confirm_destroy(&spec.cluster_id)?;
            }
            let done = cloud::destroy(&c, &spec, delete_data, &mut progress).await?;
            println!("destroyed {} resources of {}", done.changes.len(), spec.cluster_id);
        }
        Command::Status { spec } => {
            let (spec, c) = connect(&spec, region, endpoint).await?;
            let s = cloud::status(&c, &spec).await?;
            for (kind, name, exists) in &s.resources {
                println!("{:<20} {:<40} {}", kind.label(), name, if *exists { "exists" } else { "missing" });
            }
            if !s.summary.dns_name.is_empty() {
                print!("{}", s.summary.render());
            }
            println!("nodes ({}):", s.nodes.len());
            for n in &s.nodes {
                println!(
                    "  {} {:<15} {} {}{} {}",
                    n.instance_id,
                    n.private_ip,
                    n.lifecycle,
                    n.health,
                    if n.protected_from_scale_in { " protected" } else { "" },
                    if n.targets.is_empty() { "no target group".to_string() } else { n.targets.join(", ") }
                );
            }
            if s.pending > 0 {
                println!("{} changes pending: run plan to see them", s.pending);
            }
        }
        _ => unreachable!("not an AWS command"),
    }
    Ok(())
}

async fn bootstrap_command(
    from_instance_metadata: bool,
    facts_file: Option<PathBuf>,
    region: Option<String>,
    endpoint_url: Option<String>,
) -> anyhow::Result<()> {
    let mut facts = match (from_instance_metadata, facts_file) {
        (true, _) => provisioner::bootstrap::facts::from_instance_metadata().await?,
        (false, Some(path)) => NodeFacts::load(&path)?,
        (false, None) => anyhow::bail!("give --facts FILE or --from-instance-metadata"),
    };
    if region.is_some() {
        facts.region = region;
    }
    if endpoint_url.is_some() {
        facts.endpoint_url = endpoint_url;
    }
    let clients = Clients::new(&Endpoint {
        region: facts.region.clone(),
        endpoint_url: facts.endpoint_url.clone(),
        credentials: None,
    })
    .await;
    anyhow::ensure!(
        !clients.region.is_empty(),
        "no AWS region: set `region` in the facts, --region, or AWS_REGION"
    );
    provisioner::bootstrap::run(&facts, &clients).await
}

fn run() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Command::Bootstrap { from_instance_metadata, facts } = args.command {
        let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
        return runtime.block_on(bootstrap_command(
            from_instance_metadata,
            facts,
            args.region,
            args.endpoint_url,
        ));
    }
    if matches!(
        args.command,
        Command::Plan { .. } | Command::Apply { .. } | Command::Destroy { .. } | Command::Status { .. }
    ) {
        let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
        return runtime.block_on(aws_command(args));
    }
    match args.command {
        Command::Certs { cluster, out, nodes, days, ca_key } => {
            let ca_key = ca_key
                .map(|p| std::fs::read_to_string(&p).with_context(|| format!("cannot read {}", p.display())))
                .transpose()?;
            for path in write_files(&out, &cluster, &nodes, days, ca_key.as_deref())? {
                println!("wrote {}", path.display());
            }
        }
        Command::RenderMysqlConfig { flavor, server_id, address, port, base_dir, writable } => {
            let mut c = MysqlServerConfig::small(flavor, server_id, &address, port, base_dir);
            c.read_only = !writable;
            c.innodb_buffer_pool_mb = 1024;
            print!("{}", render(&c));
        }
        _ => unreachable!("AWS commands are handled above"),
    }
    Ok(())
}
