//! `provisioner`: node bootstrap helpers (and, in later issues, the AWS side).

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use provisioner::certs::{write_files, NodeSpec};
use provisioner::mysql_config::{render, MysqlServerConfig, ServerFlavor};

#[derive(Parser, Debug)]
#[command(version, about = "Provision MySQL cluster nodes and their AWS resources")]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
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

fn run() -> anyhow::Result<()> {
    let args = Args::parse();
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
    }
    Ok(())
}
