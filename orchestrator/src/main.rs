//! `orchestrator`: the peer daemon. Reads its config, starts Raft, discovery and
//! recovery, and serves the HTTP/gRPC API until SIGINT or SIGTERM. `orchestrator token`
//! makes and hashes API tokens.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Parser, Subcommand};
use orchestrator::api::{self, AppState};
use orchestrator::auth::layer::AuthSettings;
use orchestrator::auth::tokens::{self, TokenRegistry, TokenSpec};
use orchestrator::auth::{tls, Scope};
use orchestrator::aws::controller::AwsController;
use orchestrator::aws::fleet::{FleetLoop, FleetStatus};
use orchestrator::aws::AwsClients;
use orchestrator::config::Config;
use orchestrator::discovery::{follow_registry, Discovery, TopologyStore};
use orchestrator::metrics::Metrics;
use orchestrator::mysql::admin::{AdminSettings, MysqlAdmin, WriteCheck};
use orchestrator::mysql::credentials::{Credentials, Passwords, SecretReader, MIN_REFRESH_INTERVAL};
use orchestrator::mysql::{MysqlProber, ProbeSettings};
use orchestrator::ops::Operations;
use orchestrator::raft::RaftNode;
use orchestrator::recovery::detector::RecoveryService;
use orchestrator::recovery::fencing::guard_local_instance;

/// MySQL high-availability peer: discovery, Raft, failover, HTTP/gRPC API.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Path of the TOML config file.
    #[arg(long, short, env = "ORCH_CONFIG", default_value = "/etc/orchestrator/orchestrator.toml")]
    config: PathBuf,
    /// Validate the config and exit.
    #[arg(long)]
    check: bool,
    #[command(subcommand)]
    command: Option<Cmd>,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// API tokens.
    #[command(subcommand)]
    Token(TokenCmd),
}

#[derive(Subcommand, Debug)]
enum TokenCmd {
    /// Make a new random token: written to FILE (mode 0600), with the
    /// `[[auth.tokens]]` entry holding its hash printed for the config.
    New {
        /// The token's name: the identity the audit records.
        #[arg(long)]
        name: String,
        /// read, operate or admin.
        #[arg(long)]
        scope: Scope,
        /// Where to write the token (it is never printed).
        #[arg(long)]
        out: PathBuf,
    },
    /// Print the SHA-256 the config stores for a token read from standard input.
    Hash,
}

#[tokio::main]
async fn main() {
    if let Err(e) = run().await {
        eprintln!("orchestrator: {e:#}");
        std::process::exit(1);
    }
}

fn token_command(cmd: TokenCmd) -> anyhow::Result<()> {
    match cmd {
        TokenCmd::New { name, scope, out } => {
            anyhow::ensure!(
                tokens::valid_token_name(&name),
                "token name `{name}`: 1-64 letters, digits, `.`, `_`, `-` or `@`"
            );
            let token = tokens::write_new_token(&out)?;
            println!("# token {name} ({scope}) written to {}", out.display());
            println!(
                "[[auth.tokens]]\nname = \"{name}\"\nscope = \"{scope}\"\nsha256 = \"{}\"",
                tokens::hash_hex(&token)
            );
        }
        TokenCmd::Hash => {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .context("cannot read the token from standard input")?;
            let token = text.trim_end_matches(['\n', '\r']);
            anyhow::ensure!(!token.is_empty(), "no token on standard input");
            println!("{}", tokens::hash_hex(token));
        }
    }
    Ok(())
}

/// Warns when the config file holds a password inline and other users may read it.
fn warn_if_readable(path: &Path, config: &Config) {
    use std::os::unix::fs::PermissionsExt;
    let inline = config.mysql.password.is_some()
        || config.mysql.replication_password.is_some()
        || config.mysql.write_check.as_ref().is_some_and(|w| !w.password.is_empty());
    let readable = std::fs::metadata(path).is_ok_and(|m| m.permissions().mode() & 0o077 != 0);
    if inline && readable {
        tracing::warn!(config = %path.display(), "the config holds passwords and other users may read it: make it mode 0600");
    }
}

/// The tokens of `[auth]`: hashes, token files, and the Secrets Manager secret.
async fn load_tokens(config: &Config) -> anyhow::Result<TokenRegistry> {
    let auth = &config.auth;
    if auth.disabled {
        tracing::warn!("API authentication is disabled (auth.disabled): every caller is an admin");
        return Ok(TokenRegistry::disabled());
    }
    let mut specs = Vec::new();
    for t in &auth.tokens {
        specs.push(match (&t.sha256, &t.file) {
            (Some(hash), _) => TokenSpec::hashed(&t.name, t.scope, hash)?,
            (None, Some(file)) => TokenSpec::plain(&t.name, t.scope, &tokens::read_token_file(file)?)?,
            (None, None) => anyhow::bail!("token `{}`: give sha256 or file", t.name),
        });
    }
    if let Some(secret) = &auth.tokens_secret {
        let clients = AwsClients::load(&config.aws).await;
        let json = clients
            .secret_string(secret)
            .await
            .with_context(|| format!("reading API tokens from secret {secret}"))?;
        specs.extend(TokenSpec::from_secret(&tokens::parse_secret(&json)?)?);
    }
    let registry = TokenRegistry::new(specs)?;
    tracing::info!(tokens = %registry.names().join(", "), "API tokens loaded");
    Ok(registry)
}

/// The MySQL passwords: from `[mysql] credentials_secret` (read now, and again when a
/// server refuses a login), else from the config's password settings.
async fn mysql_credentials(config: &Config) -> anyhow::Result<Arc<Credentials>> {
    let Some(secret) = config.mysql.credentials_secret.clone() else {
        return Ok(Credentials::fixed(Passwords {
            orchestrator: config.mysql_password()?,
            replication: config.mysql.replication_password.clone().unwrap_or_default(),
            write_check: config.mysql.write_check.as_ref().map(|w| w.password.clone()).unwrap_or_default(),
            backup: config.mysql.backup_password.clone().unwrap_or_default(),
            root: match &config.backup.restore_password_file {
                Some(path) => std::fs::read_to_string(path)
                    .with_context(|| format!("reading backup.restore_password_file {}", path.display()))?
                    .trim_end_matches(['\n', '\r'])
                    .to_string(),
                None => String::new(),
            },
        }));
    };
    let clients = AwsClients::load(&config.aws).await;
    let id = secret.clone();
    let read: SecretReader = Box::new(move || {
        let (clients, id) = (clients.clone(), id.clone());
        Box::pin(async move { clients.secret_string(&id).await.map_err(|e| e.to_string()) })
    });
    let credentials = Credentials::from_secret(&secret, read, MIN_REFRESH_INTERVAL).await?;
    tracing::info!(secret = %secret, "MySQL credentials read from Secrets Manager");
    Ok(credentials)
}

async fn run() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(Cmd::Token(cmd)) = args.command {
        return token_command(cmd);
    }
    tls::install_crypto_provider();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("ORCH_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,openraft=warn")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let config = Config::load(&args.config)?;
    let raft_tls = config.tls.raft.as_ref().map(tls::raft_tls).transpose()?;
    let api_tls = config.tls.api.as_ref().map(tls::api_server_config).transpose()?;
    if args.check {
        println!("{}: ok", args.config.display());
        return Ok(());
    }
    warn_if_readable(&args.config, &config);
    let tokens = Arc::new(load_tokens(&config).await?);
    if raft_tls.is_none() {
        tracing::warn!("Raft port without TLS (tls.raft_insecure): any host reaching it can send Raft RPCs");
    }
    let credentials = mysql_credentials(&config).await?;
    let credentials_for_backups = credentials.clone();
    let donor = match (&config.donor.server_options, config.local_instance()) {
        (Some(options), Some(local)) => {
            tracing::info!(instance = %local, "serving backups of the co-located server to new nodes");
            Some(Arc::new(orchestrator::donor::Donor::new(
                config.donor.mariadb_backup.clone(),
                config.donor.backup_user.clone(),
                credentials.clone(),
                local,
                options.clone(),
                config.data_dir.join("donor"),
            )))
        }
        _ => None,
    };

    let aliases = config.clusters.iter().map(|c| (c.alias.clone(), c.seeds.clone())).collect();
    let store = Arc::new(TopologyStore::new(aliases));
    let metrics = Arc::new(Metrics::new());
    let d = &config.discovery;
    let admin = Arc::new(MysqlAdmin::new(AdminSettings {
        user: config.mysql.user.clone(),
        replication_user: config.mysql.replication_user.clone(),
        credentials: credentials.clone(),
        verify: config
            .mysql
            .write_check
            .as_ref()
            .map(|w| WriteCheck { user: w.user.clone(), table: w.table.clone() }),
        connect_timeout: d.connect_timeout(),
        statement_timeout: Duration::from_secs(5),
        fence_connect_timeout: Duration::from_millis(150),
    }));
    if config.mysql.write_check.is_none() {
        tracing::warn!("no [mysql.write_check] account: promotions are verified by read_only only");
    }
    let probe_settings = ProbeSettings {
        user: config.mysql.user.clone(),
        credentials,
        connect_timeout: d.connect_timeout(),
        read_timeout: d.read_timeout(),
        default_port: config.mysql.default_port,
    };
    let prober = MysqlProber::new(probe_settings.clone());
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
    match orchestrator::leave::set_aside_after_leave(&config.data_dir) {
        Ok(true) if config.join => {
            tracing::info!("this peer left the Raft group at its last stop: its old Raft state is set aside and it asks to join again")
        }
        Ok(true) => tracing::warn!(
            "this peer left the Raft group at its last stop and its Raft state is set aside; without `join = true` it waits to be added back (orchctl raft add-peer)"
        ),
        Ok(false) => {}
        Err(e) => anyhow::bail!("cannot set aside the Raft state of a peer that left ({}): {e}", config.data_dir.display()),
    }
    let raft =
        RaftNode::start(&config, raft_tls, handle.clone(), donor, metrics.clone(), stop_rx.clone()).await?;
    tracing::info!(
        raft = %config.raft_listen,
        data_dir = %config.data_dir.display(),
        mutual_tls = config.tls.raft.is_some(),
        "Raft started"
    );
    tokio::spawn(follow_registry(
        store.clone(),
        raft.watch(),
        |m| m.last_applied.map(|l| l.index),
        {
            let raft = raft.clone();
            move || raft.with_state(|s| s.registry())
        },
        stop_rx.clone(),
    ));
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
    let liveness = Arc::new(orchestrator::liveness::LivenessWatch::new(
        raft.clone(),
        handle.clone(),
        probe_settings.clone(),
    ));
    tokio::spawn(liveness.run(stop_rx.clone()));
    match config.local_instance() {
        Some(local) => {
            tracing::info!(instance = %local, "guarding the co-located mysqld");
            if config.recovery.exit_poll_ms > 0 {
                let watch = orchestrator::exit_watch::ExitWatch::new(
                    raft.clone(),
                    handle.clone(),
                    probe_settings.clone(),
                    local.clone(),
                    Duration::from_millis(config.recovery.exit_poll_ms),
                );
                tokio::spawn(Arc::new(watch).run(stop_rx.clone()));
            }
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
    // One set of AWS clients for the target-group loop and the Auto Scaling loop.
    let aws_clients =
        match config.clusters.iter().any(|c| c.aws.is_some()) || !config.backup.restore_from.is_empty() {
            true => Some(AwsClients::load(&config.aws).await),
            false => None,
        };
    let aws = if let Some(clients) = aws_clients.clone() {
        let controller =
            AwsController::new(clients, raft.clone(), store.clone(), metrics.clone(), &config).map(Arc::new);
        if let Some(c) = &controller {
            tracing::info!(
                endpoint = %config.aws.endpoint_url.as_deref().unwrap_or("AWS"),
                "managing NLB target groups and DynamoDB"
            );
            tokio::spawn(c.clone().run(stop_rx.clone()));
        }
        controller
    } else {
        None
    };
    // Backups, the binlog archive and restores (`[backup] enabled`; validation made
    // sure a cluster has `[clusters.aws]`, so the AWS clients exist).
    let backups = match (&aws_clients, config.backup.enabled) {
        (Some(clients), true) => {
            let service = orchestrator::backup::service::BackupService::new(
                config.clone(),
                clients,
                credentials_for_backups.clone(),
                raft.clone(),
                handle.clone(),
                metrics.clone(),
            )
            .await?;
            tracing::info!(clusters = %service.cluster_aliases().join(", "), "backups and the binlog archive are on");
            Some(service)
        }
        _ => None,
    };
    let ops =
        Arc::new(Operations::new(raft.clone(), handle.clone(), recovery, aws, backups.clone(), &config));
    raft.set_forward_handler(ops.clone());
    if let Some(b) = &backups {
        b.set_operations((*ops).clone());
        tokio::spawn(b.clone().run_archiver(stop_rx.clone()));
        tokio::spawn(b.clone().run_maintenance(stop_rx.clone()));
    }
    // Raft members, scale-in protection and instance health follow the Auto Scaling group.
    // (`membership.auto_scaling_group` is refused without `[clusters.aws]`.)
    let fleet = match (&config.membership.auto_scaling_group, aws_clients) {
        (Some(group), Some(clients)) => {
            let status = Arc::new(FleetStatus::default());
            tracing::info!(group = %group, "Raft members follow the Auto Scaling group");
            let fleet = FleetLoop::new(
                clients,
                group.clone(),
                config.membership.clone(),
                raft.clone(),
                store.clone(),
                ops.clone(),
                status.clone(),
            );
            tokio::spawn(fleet.run(stop_rx.clone()));
            Some(status)
        }
        _ => None,
    };
    let state = AppState {
        node_id: config.node_id,
        http_address: config.http_listen,
        started: Instant::now(),
        store,
        discovery: handle,
        metrics,
        raft: raft.clone(),
        ops: ops.clone(),
        local_instance: config.local_instance(),
        watchers: Arc::new(tokio::sync::Semaphore::new(api::MAX_WATCHERS)),
        fleet,
    };
    let auth = Arc::new(AuthSettings::new(tokens, config.auth.open_metrics, config.node_id));
    if api_tls.is_some() {
        tracing::info!(http = %config.http_listen, "API served over TLS");
    }
    let server = tokio::spawn({
        let mut stop = stop_rx.clone();
        api::serve(listener, api::router(state, auth), api_tls, async move {
            let _ = stop.changed().await;
        })
    });

    shutdown_signal().await;
    if config.membership.leave_on_stop {
        let timeout = Duration::from_secs(config.membership.leave_timeout_s);
        tracing::info!(
            timeout_s = timeout.as_secs(),
            "stopping: leaving the Raft group first (membership.leave_on_stop)"
        );
        let local = config.local_instance();
        let leave = orchestrator::leave::leave(&ops, &raft, local.as_ref(), &config.data_dir, timeout);
        let report = tokio::select! {
            report = leave => report,
            _ = shutdown_signal() => {
                tracing::warn!("second stop signal: stopping without finishing the leave");
                Default::default()
            }
        };
        for problem in &report.problems {
            tracing::warn!(problem = %problem, "leave incomplete");
        }
        tracing::info!(
            switched_over = %report.switched_over.join(", "),
            handed_over_to = %report.handed_over_to.map(|id| id.to_string()).unwrap_or_else(|| "-".into()),
            removed = report.removed,
            "leave finished"
        );
    }
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
