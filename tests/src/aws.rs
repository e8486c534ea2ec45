//! AWS in the test bed: a real `moto_server` on a simulated host, the cluster's AWS
//! side created in it with the SDK (VPC and subnet on the hosts' loopback /24, one EC2
//! instance per database host with that host's address as private IP, the internal
//! NLB with its write and read target groups and listeners, the DynamoDB table), and
//! helpers to read it back. The provisioner will own the creation; until then the
//! sandbox and the tests share this.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, KeySchemaElement, KeyType, PointInTimeRecoverySpecification,
    ScalarAttributeType, TimeToLiveSpecification,
};
use aws_sdk_elasticloadbalancingv2::types::{
    Action, ActionTypeEnum, LoadBalancerSchemeEnum, LoadBalancerTypeEnum, ProtocolEnum, TargetGroupAttribute,
    TargetTypeEnum,
};
use orchestrator::aws::{AwsClients, TargetGroupApi};
use orchestrator::config::AwsConfig;

use crate::process::{Lifetime, ManagedChild};

pub const REGION: &str = "us-east-1";
pub const MOTO_PORT: u16 = 5000;
/// moto accepts any credentials; peers get these through the environment.
pub const ACCESS_KEY_ID: &str = "moto-testing";
pub const SECRET_ACCESS_KEY: &str = "moto-testing-secret";
/// The read group's health check: replicas lagging more than this fail it.
pub const READ_MAX_LAG_S: u64 = 30;

/// A running `moto_server`.
pub struct Moto {
    child: ManagedChild,
    pub host: String,
    pub endpoint: String,
}

/// Finds `moto_server` on PATH (pip installs it there).
fn moto_program() -> anyhow::Result<std::path::PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    path.split(':').map(|d| Path::new(d).join("moto_server")).find(|p| p.is_file()).context(
        "`moto_server` not found on PATH: install it with `python3 -m pip install 'moto[server]'` (deploy/lib/ensure-deps.sh does)",
    )
}

impl Moto {
    /// Starts `moto_server` on `host:5000` and waits until it answers.
    pub async fn start(
        host: &str,
        dir: &Path,
        state_dir: &Path,
        lifetime: Lifetime,
        cgroup: Option<&Path>,
    ) -> anyhow::Result<Moto> {
        let mut cmd = Command::new(moto_program()?);
        cmd.args(["-H", host, "-p", &MOTO_PORT.to_string()]);
        let child = ManagedChild::spawn(
            &format!("moto_server {host}"),
            cmd,
            &dir.join(format!("moto-{host}.log")),
            state_dir,
            lifetime,
            cgroup,
        )?;
        let moto = Moto { child, host: host.to_string(), endpoint: format!("http://{host}:{MOTO_PORT}") };
        let client = crate::peer::http_client();
        let started = Instant::now();
        loop {
            if client.get(format!("{}/moto-api/data.json", moto.endpoint)).send().await.is_ok() {
                return Ok(moto);
            }
            if started.elapsed() > Duration::from_secs(20) {
                bail!("moto_server on {host}:{MOTO_PORT} did not answer within 20 s");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// An AWS outage: the endpoint stops answering (connections hang) until [`Moto::resume`].
    pub fn pause(&self) {
        self.child.signal(libc::SIGSTOP);
    }

    pub fn resume(&self) {
        self.child.signal(libc::SIGCONT);
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.pid()
    }

    /// Leaves it running (the sandbox).
    pub fn detach(self) -> u32 {
        self.child.detach()
    }

    /// The `[aws]` settings that reach this moto.
    pub fn aws_config(&self) -> AwsConfig {
        aws_config(&self.endpoint)
    }
}

/// The `[aws]` settings for a moto at `endpoint`.
pub fn aws_config(endpoint: &str) -> AwsConfig {
    AwsConfig { region: Some(REGION.into()), endpoint_url: Some(endpoint.into()), ..AwsConfig::default() }
}

/// SDK clients for the moto at `endpoint`, with the test credentials and the
/// product's default bound on each call.
pub async fn clients(endpoint: &str) -> AwsClients {
    clients_bounded(endpoint, AwsConfig::default().call_timeout_ms).await
}

/// As [`clients`], for creating a cluster's AWS side: calls may take up to 20 s, since
/// moto builds a service's state on its first call (over 3 s for EC2 once, on a busy
/// machine).
pub async fn provisioning_clients(endpoint: &str) -> AwsClients {
    clients_bounded(endpoint, 20_000).await
}

async fn clients_bounded(endpoint: &str, call_timeout_ms: u64) -> AwsClients {
    let credentials = aws_sdk_dynamodb::config::Credentials::new(
        ACCESS_KEY_ID,
        SECRET_ACCESS_KEY,
        None,
        None,
        "orch-tests",
    );
    let config = AwsConfig { call_timeout_ms, ..aws_config(endpoint) };
    AwsClients::load_with(&config, Some(credentials)).await
}

/// What [`provision`] created.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ClusterResources {
    pub cluster_id: String,
    pub vpc_id: String,
    pub load_balancer_arn: String,
    pub write_target_group_arn: String,
    pub read_target_group_arn: String,
    pub table: String,
    /// EC2 instance id by database host address.
    pub instances: BTreeMap<String, String>,
}

impl ClusterResources {
    /// The database host of an instance id.
    pub fn host_of(&self, id: &str) -> Option<&str> {
        self.instances.iter().find(|(_, i)| *i == id).map(|(h, _)| h.as_str())
    }

    /// The instance id of a database host.
    pub fn id_of(&self, host: &str) -> &str {
        self.instances.get(host).map(String::as_str).unwrap_or("?")
    }
}

/// Creates the cluster's AWS side for database `hosts` (all in one loopback /24).
/// Target groups start empty: the peers fill them.
pub async fn provision(
    clients: &AwsClients,
    cluster_id: &str,
    hosts: &[String],
) -> anyhow::Result<ClusterResources> {
    let first = hosts.first().context("no hosts")?;
    let (net, _) = first.rsplit_once('.').context("host is not an IPv4 address")?;
    let cidr = format!("{net}.0/24");
    let vpc_id = clients
        .ec2
        .create_vpc()
        .cidr_block(&cidr)
        .send()
        .await
        .context("CreateVpc")?
        .vpc()
        .and_then(|v| v.vpc_id())
        .context("CreateVpc returned no id")?
        .to_string();
    let subnet_id = clients
        .ec2
        .create_subnet()
        .vpc_id(&vpc_id)
        .cidr_block(&cidr)
        .send()
        .await
        .context("CreateSubnet")?
        .subnet()
        .and_then(|s| s.subnet_id())
        .context("CreateSubnet returned no id")?
        .to_string();
    let mut instances = BTreeMap::new();
    for host in hosts {
        let out = clients
            .ec2
            .run_instances()
            .image_id("ami-12c6146b")
            .instance_type(aws_sdk_ec2::types::InstanceType::T3Micro)
            .min_count(1)
            .max_count(1)
            .subnet_id(&subnet_id)
            .private_ip_address(host)
            .send()
            .await
            .with_context(|| format!("RunInstances for {host}"))?;
        let id = out.instances().first().and_then(|i| i.instance_id()).context("RunInstances: no id")?;
        instances.insert(host.clone(), id.to_string());
    }
    let load_balancer_arn = clients
        .elb
        .create_load_balancer()
        .name(format!("{cluster_id}-nlb"))
        .r#type(LoadBalancerTypeEnum::Network)
        .scheme(LoadBalancerSchemeEnum::Internal)
        .subnets(&subnet_id)
        .send()
        .await
        .context("CreateLoadBalancer")?
        .load_balancers()
        .first()
        .and_then(|l| l.load_balancer_arn())
        .context("CreateLoadBalancer: no ARN")?
        .to_string();
    let mut groups = Vec::new();
    for (role, path) in [
        ("write", "/health/primary".to_string()),
        ("read", format!("/health/replica?max_lag={READ_MAX_LAG_S}")),
    ] {
        // The production settings (DESIGN.md section 6): TCP to 3306, an HTTP health
        // check of the role on port 3000.
        let arn = clients
            .elb
            .create_target_group()
            .name(format!("{cluster_id}-{role}"))
            .protocol(ProtocolEnum::Tcp)
            .port(3306)
            .vpc_id(&vpc_id)
            .target_type(TargetTypeEnum::Instance)
            .health_check_protocol(ProtocolEnum::Http)
            .health_check_port("3000")
            .health_check_path(path)
            .health_check_interval_seconds(5)
            .health_check_timeout_seconds(2)
            .healthy_threshold_count(2)
            .unhealthy_threshold_count(2)
            .send()
            .await
            .with_context(|| format!("CreateTargetGroup {role}"))?
            .target_groups()
            .first()
            .and_then(|g| g.target_group_arn())
            .context("CreateTargetGroup: no ARN")?
            .to_string();
        clients
            .elb
            .modify_target_group_attributes()
            .target_group_arn(&arn)
            .attributes(
                TargetGroupAttribute::builder()
                    .key("deregistration_delay.timeout_seconds")
                    .value("30")
                    .build(),
            )
            .send()
            .await
            .context("ModifyTargetGroupAttributes")?;
        groups.push(arn);
    }
    for (port, arn) in [(3306, &groups[0]), (3307, &groups[1])] {
        clients
            .elb
            .create_listener()
            .load_balancer_arn(&load_balancer_arn)
            .protocol(ProtocolEnum::Tcp)
            .port(port)
            .default_actions(Action::builder().r#type(ActionTypeEnum::Forward).target_group_arn(arn).build())
            .send()
            .await
            .with_context(|| format!("CreateListener {port}"))?;
    }
    let table = format!("{cluster_id}-orchestrator");
    clients
        .dynamodb
        .create_table()
        .table_name(&table)
        .billing_mode(BillingMode::PayPerRequest)
        .key_schema(KeySchemaElement::builder().attribute_name("pk").key_type(KeyType::Hash).build()?)
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name("pk")
                .attribute_type(ScalarAttributeType::S)
                .build()?,
        )
        .send()
        .await
        .context("CreateTable")?;
    clients
        .dynamodb
        .update_time_to_live()
        .table_name(&table)
        .time_to_live_specification(
            TimeToLiveSpecification::builder().attribute_name("expires_at").enabled(true).build()?,
        )
        .send()
        .await
        .context("UpdateTimeToLive")?;
    clients
        .dynamodb
        .update_continuous_backups()
        .table_name(&table)
        .point_in_time_recovery_specification(
            PointInTimeRecoverySpecification::builder().point_in_time_recovery_enabled(true).build()?,
        )
        .send()
        .await
        .context("UpdateContinuousBackups")?;
    let [write_target_group_arn, read_target_group_arn] =
        <[String; 2]>::try_from(groups).map_err(|_| anyhow::anyhow!("two target groups"))?;
    Ok(ClusterResources {
        cluster_id: cluster_id.to_string(),
        vpc_id,
        load_balancer_arn,
        write_target_group_arn,
        read_target_group_arn,
        table,
        instances,
    })
}

/// The instance ids in a target group that are not draining.
pub async fn members(clients: &AwsClients, group_arn: &str) -> anyhow::Result<BTreeSet<String>> {
    let targets = clients.targets(group_arn).await?;
    Ok(targets.into_iter().filter(|t| t.is_member()).map(|t| t.id).collect())
}

/// The target groups' members as database hosts: (write, read).
pub async fn member_hosts(
    clients: &AwsClients,
    resources: &ClusterResources,
) -> anyhow::Result<(BTreeSet<String>, BTreeSet<String>)> {
    let host = |id: String| resources.host_of(&id).map(str::to_string).unwrap_or(id);
    let write = members(clients, &resources.write_target_group_arn).await?.into_iter().map(host).collect();
    let read = members(clients, &resources.read_target_group_arn).await?.into_iter().map(host).collect();
    Ok((write, read))
}

/// Polls until the groups hold exactly `write` and `read` (hosts); returns how long it
/// took, or the last membership seen.
pub async fn wait_members(
    clients: &AwsClients,
    resources: &ClusterResources,
    write: &[&str],
    read: &[&str],
    timeout: Duration,
) -> Result<Duration, String> {
    let want = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<BTreeSet<String>>();
    let (want_write, want_read) = (want(write), want(read));
    let started = Instant::now();
    let mut last = String::from("nothing read yet");
    while started.elapsed() < timeout {
        match member_hosts(clients, resources).await {
            Ok((w, r)) if w == want_write && r == want_read => return Ok(started.elapsed()),
            Ok((w, r)) => last = format!("write {w:?}, read {r:?}"),
            Err(e) => last = format!("{e:#}"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Err(last)
}
