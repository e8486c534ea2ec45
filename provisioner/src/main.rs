//! `provisioner`: node bootstrap helpers (and, in later issues, the AWS side).

use std::path::PathBuf;

use clap::{Parser, Subcommand};
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
}

fn main() {
    let args = Args::parse();
    match args.command {
        Command::RenderMysqlConfig { flavor, server_id, address, port, base_dir, writable } => {
            let mut c = MysqlServerConfig::small(flavor, server_id, &address, port, base_dir);
            c.read_only = !writable;
            c.innodb_buffer_pool_mb = 1024;
            print!("{}", render(&c));
        }
    }
}
