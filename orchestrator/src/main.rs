//! `orchestrator`: the peer daemon. Reads its config, starts discovery and serves the
//! HTTP/gRPC API until SIGINT or SIGTERM.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use orchestrator::api::{self, AppState};
use orchestrator::aws::controller::AwsController;
use orchestrator::aws::AwsClients;
use orchestrator::config::Config;
use orchestrator::discovery::{Discovery, TopologyStore};
use orchestrator::metrics::Metrics;
use orchestrator::mysql::admin::{AdminSettings, MysqlAdmin, WriteCheck};
use orchestrator::mysql::{MysqlProber, ProbeSettings};
use orchestrator::raft::RaftNode;
use orchestrator::recovery::detector::RecoveryService;
use orchestrator::recovery::fencing::guard_local_instance;

/// MySQL high-availability peer: discovery, HTTP/gRPC API.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Path of the TOML config file.
    #[arg(long, short, env = "ORCH_CONFIG", default_value = "/etc/orchestrator/orchestrator.toml")]
    config: PathBuf,
    /// Validate the config and exit.
    #[arg(long)]
    check: bool,
}

#[tokio::main]
async fn main() {
    if let Err(e) = run().await {
        eprintln!("orchestrator: {e:#}");
        std::process::exit(1);
    }
}

async fn run() -> anyhow::Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("ORCH_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,openraft=warn")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let config = Config::load(&args.config)?;
    if args.check {
        println!("{}: ok", args.config.display());
        return Ok(());
    }
    let password = config.mysql_password()?;

    let aliases = config.clusters.iter().map(|c| (c.alias.clone(), c.seeds.clone())).collect();
    let store = Arc::new(TopologyStore::new(aliases));
    let metrics = Arc::new(Metrics::new());
    let d = &config.discovery;
    let admin = Arc::new(MysqlAdmin::new(AdminSettings {
        user: config.mysql.user.clone(),
        password: password.clone(),
        replication_user: config.mysql.replication_user.clone(),
        replication_password: config.mysql.replication_password.clone().unwrap_or_default(),
        verify: config.mysql.write_check.as_ref().map(|w| WriteCheck {
            user: w.user.clone(),
            password: w.password.clone(),
            table: w.table.clone(),
        }),
        connect_timeout: d.connect_timeout(),
        statement_timeout: Duration::from_secs(5),
        fence_connect_timeout: Duration::from_millis(150),
    }));
    if config.mysql.write_check.is_none() {
        tracing::warn!("no [mysql.write_check] account: promotions are verified by read_only only");
    }
    let prober = MysqlProber::new(ProbeSettings {
        user: config.mysql.user.clone(),
        password,
        connect_timeout: d.connect_timeout(),
        read_timeout: d.read_timeout(),
        default_port: config.mysql.default_port,
    });
    let (discovery, handle) = Discovery::new(
        prober,
        store.clone(),
        metrics.clone(),
        d.probe_interval(),
        d.connect_timeout() + d.read_timeout(),
    );

    let listener = tokio::net::TcpListener::bind(config.http_listen)
        .await
        .with_context(|| format!("cannot listen on {} (http_listen)", config.http_listen))?;
    tracing::info!(
        node_id = config.node_id,
        http = %config.http_listen,
        peers = config.peers.len(),
        clusters = config.clusters.len(),
        "orchestrator peer starting"
    );

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let raft = RaftNode::start(&config, handle.clone(), metrics.clone(), stop_rx.clone()).await?;
    tracing::info!(raft = %config.raft_listen, data_dir = %config.data_dir.display(), "Raft started");
    let discovery_task = tokio::spawn({
        let mut stop = stop_rx.clone();
        async move {
            discovery
                .run(async move {
                    let _ = stop.changed().await;
                })
                .await
        }
    });
    let config = Arc::new(config);
    let recovery =
        Arc::new(RecoveryService::new(raft.clone(), handle.clone(), admin.clone(), config.clone()));
    tokio::spawn(recovery.clone().run(stop_rx.clone()));
    match config.local_instance() {
        Some(local) => {
            tracing::info!(instance = %local, "guarding the co-located mysqld");
            tokio::spawn(guard_local_instance(
                raft.clone(),
                handle.clone(),
                admin.clone(),
                local,
                Duration::from_millis(config.recovery.fencing_timeout_ms),
                stop_rx.clone(),
            ));
        }
        None => tracing::warn!("no local instance known (set recovery.local_instance): self-fencing is off"),
    }
    // The NLB target groups and DynamoDB, when a cluster names them.
    let aws = if config.clusters.iter().any(|c| c.aws.is_some()) {
        let clients = AwsClients::load(&config.aws).await;
        let controller =
            AwsController::new(clients, raft.clone(), store.clone(), metrics.clone(), &config).map(Arc::new);
        if let Some(c) = &controller {
            tracing::info!(endpoint = ?config.aws.endpoint_url, "managing NLB target groups and DynamoDB");
            tokio::spawn(c.clone().run(stop_rx.clone()));
        }
        controller
    } else {
        None
    };
    let state = AppState {
        node_id: config.node_id,
        http_address: config.http_listen,
        started: Instant::now(),
        store,
        discovery: handle,
        metrics,
        raft: raft.clone(),
        recovery,
        local_instance: config.local_instance(),
        http_client: orchestrator::raft::network::peer_http_client(
            config.source_ip(),
            Duration::from_secs(10),
        ),
        aws,
    };
    let server = tokio::spawn({
        let mut stop = stop_rx.clone();
        api::serve(listener, state, async move {
            let _ = stop.changed().await;
        })
    });

    shutdown_signal().await;
    tracing::info!("shutting down");
    let _ = stop_tx.send(true);
    server.await.context("API server task failed")?.context("API server failed")?;
    discovery_task.await.context("discovery task failed")?;
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = term.recv() => {},
    }
}
