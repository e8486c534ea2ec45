//! AWS in the test bed: a real `moto_server` on a simulated host, the network a
//! cluster is given (VPC and two subnets on the hosts' loopback /24), the cluster's
//! AWS side created in it by the provisioner library from a spec (so every end-to-end
//! test exercises it), one EC2 instance per database host at that host's address
//! standing in for the group's instances, and helpers to read it back.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use orchestrator::aws::{AwsClients, TargetGroupApi};
use orchestrator::config::AwsConfig;
use provisioner::spec::ClusterSpec;

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
    let credentials =
        aws_connect::Credentials::new(ACCESS_KEY_ID, SECRET_ACCESS_KEY, None, None, "orch-tests");
    let config = AwsConfig { call_timeout_ms, ..aws_config(endpoint) };
    AwsClients::load_with(&config, Some(credentials)).await
}

/// What [`provision`] created.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ClusterResources {
    pub cluster_id: String,
    pub vpc_id: String,
    pub subnet_ids: Vec<String>,
    pub load_balancer_arn: String,
    pub write_target_group_arn: String,
    pub read_target_group_arn: String,
    pub table: String,
    pub bucket: String,
    pub credentials_secret: String,
    pub auto_scaling_group: String,
    /// The spec the provisioner applied.
    pub spec_toml: String,
    /// EC2 instance id by database host address.
    pub instances: BTreeMap<String, String>,
    /// The subnet the hosts stand in from, and the template they are launched from.
    #[serde(default)]
    pub host_subnet: String,
    #[serde(default)]
    pub launch_template_id: String,
    /// Instances taken out of the group (by host), attached again when the host comes
    /// back: moto never frees a terminated instance's address.
    #[serde(default)]
    pub spare_instances: BTreeMap<String, String>,
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

    pub fn spec(&self) -> anyhow::Result<ClusterSpec> {
        Ok(ClusterSpec::parse(&self.spec_toml)?)
    }
}

/// moto's stock Amazon Linux AMI in us-east-1.
pub const MOTO_AMI: &str = "ami-12c6146b";

/// The network a cluster is given (the spec's inputs, made here as an operator's VPC
/// would be): a VPC on the hosts' loopback /24, two subnets for the Auto Scaling group
/// (`.64/26` and `.128/25`, in two zones), and a third (`.0/26`, returned last) where
/// the hosts stand in for the group's instances: moto gives the instances it launches
/// random addresses of the group's subnets and never frees them, so they must not be
/// the hosts' own.
pub async fn network(clients: &AwsClients, net: &str) -> anyhow::Result<(String, Vec<String>)> {
    let vpc_id = clients
        .ec2
        .create_vpc()
        .cidr_block(format!("{net}.0/24"))
        .send()
        .await
        .context("CreateVpc")?
        .vpc()
        .and_then(|v| v.vpc_id())
        .context("CreateVpc returned no id")?
        .to_string();
    let mut subnets = Vec::new();
    for (cidr, zone) in [
        (format!("{net}.64/26"), "us-east-1a"),
        (format!("{net}.128/25"), "us-east-1b"),
        (format!("{net}.0/26"), "us-east-1a"),
    ] {
        let id = clients
            .ec2
            .create_subnet()
            .vpc_id(&vpc_id)
            .cidr_block(&cidr)
            .availability_zone(zone)
            .send()
            .await
            .with_context(|| format!("CreateSubnet {cidr}"))?
            .subnet()
            .and_then(|s| s.subnet_id())
            .context("CreateSubnet returned no id")?
            .to_string();
        subnets.push(id);
    }
    Ok((vpc_id, subnets))
}

/// The test bed's spec: `count` MariaDB nodes (3, 5 or 7) in the given network, HTTP
/// health checks.
pub fn spec_toml(cluster_id: &str, vpc_id: &str, subnets: &[String], count: usize) -> String {
    let subnets: Vec<String> = subnets.iter().map(|s| format!("\"{s}\"")).collect();
    format!(
        "cluster_id = \"{cluster_id}\"\nregion = \"{REGION}\"\nvpc_id = \"{vpc_id}\"\n\
         subnet_ids = [{}]\ninstance_count = {count}\nami_id = \"{MOTO_AMI}\"\n\
         flavor = \"mariadb\"\nserver_version = \"10.11\"\nhealth_checks = \"http\"\n\
         replica_max_lag_s = {READ_MAX_LAG_S}\n[tags]\nsuite = \"orch-tests\"\n",
        subnets.join(", ")
    )
}

/// The provisioner's clients for the moto at `endpoint`, with the test credentials.
pub async fn provisioner_clients(endpoint: &str) -> provisioner::cloud::clients::Clients {
    provisioner::cloud::clients::Clients::new(&provisioner::cloud::Endpoint {
        region: Some(REGION.into()),
        endpoint_url: Some(endpoint.into()),
        credentials: Some(aws_connect::Credentials::new(
            ACCESS_KEY_ID,
            SECRET_ACCESS_KEY,
            None,
            None,
            "orch-tests",
        )),
    })
    .await
}

/// Creates the cluster's AWS side for database `hosts` (all in one loopback /24) with
/// the provisioner, then stands the hosts in for the group's instances: moto launches
/// instances at addresses of its choosing, so each host gets an instance at its own
/// address from the launch template, attached to the group in place of moto's.
/// Target groups are left to the peers (moto registers the group's instances in the
/// read group, as AWS does at launch).
pub async fn provision(
    endpoint: &str,
    cluster_id: &str,
    hosts: &[String],
) -> anyhow::Result<ClusterResources> {
    let clients = provisioning_clients(endpoint).await;
    let first = hosts.first().context("no hosts")?;
    let (net, _) = first.rsplit_once('.').context("host is not an IPv4 address")?;
    let (vpc_id, mut subnet_ids) = network(&clients, net).await?;
    let host_subnet = subnet_ids.pop().context("no host subnet")?;
    let count = [3, 5, 7].into_iter().find(|c| *c >= hosts.len()).context("at most 7 hosts")?;
    let spec_toml = spec_toml(cluster_id, &vpc_id, &subnet_ids, count);
    let spec = ClusterSpec::parse(&spec_toml)?;
    let applied = provisioner::cloud::apply(&provisioner_clients(endpoint).await, &spec, &mut |_| {})
        .await
        .context("provisioner apply")?;
    let summary = applied.summary;
    let mut resources = ClusterResources {
        cluster_id: cluster_id.to_string(),
        vpc_id,
        subnet_ids,
        load_balancer_arn: summary.load_balancer_arn,
        write_target_group_arn: summary.write_target_group_arn,
        read_target_group_arn: summary.read_target_group_arn,
        table: summary.table,
        bucket: summary.bucket,
        credentials_secret: summary.credentials_secret,
        auto_scaling_group: summary.auto_scaling_group,
        spec_toml,
        instances: BTreeMap::new(),
        host_subnet,
        launch_template_id: summary.launch_template_id,
        spare_instances: BTreeMap::new(),
    };
    stand_in_hosts(endpoint, &mut resources, hosts).await?;
    Ok(resources)
}

/// Resizes the group to `count` instances (3, 5 or 7) through `provisioner apply` of
/// the spec with the new count; moto's own instances are then replaced by
/// [`stand_in_hosts`].
pub async fn resize(endpoint: &str, resources: &mut ClusterResources, count: usize) -> anyhow::Result<()> {
    let spec_toml = spec_toml(&resources.cluster_id, &resources.vpc_id, &resources.subnet_ids, count);
    let spec = ClusterSpec::parse(&spec_toml)?;
    provisioner::cloud::apply(&provisioner_clients(endpoint).await, &spec, &mut |_| {})
        .await
        .context("provisioner apply")?;
    resources.spec_toml = spec_toml;
    Ok(())
}

/// Takes `host`'s instance out of the group (the group shrinks) and keeps it aside for
/// [`stand_in_hosts`] to bring back (the sandbox's scale-in; moto would never let a
/// new instance have a terminated one's address).
pub async fn detach_host(endpoint: &str, resources: &mut ClusterResources, host: &str) -> anyhow::Result<()> {
    let c = provisioner_clients(endpoint).await;
    let id = resources.instances.get(host).with_context(|| format!("{host} has no instance"))?.clone();
    c.autoscaling
        .detach_instances()
        .auto_scaling_group_name(&resources.auto_scaling_group)
        .instance_ids(&id)
        .should_decrement_desired_capacity(true)
        .send()
        .await
        .context("DetachInstances")?;
    resources.instances.remove(host);
    resources.spare_instances.insert(host.to_string(), id);
    Ok(())
}

/// Replaces the group's moto-made instances with one per new host, launched from the
/// cluster's launch template at the host's address, and records their ids.
pub async fn stand_in_hosts(
    endpoint: &str,
    resources: &mut ClusterResources,
    hosts: &[String],
) -> anyhow::Result<()> {
    let c = provisioner_clients(endpoint).await;
    let group = &resources.auto_scaling_group;
    let subnet = &resources.host_subnet;
    let described = c
        .autoscaling
        .describe_auto_scaling_groups()
        .auto_scaling_group_names(group)
        .send()
        .await
        .context("DescribeAutoScalingGroups")?;
    let moto_made: Vec<String> = described
        .auto_scaling_groups()
        .iter()
        .flat_map(|g| g.instances())
        .filter_map(|i| i.instance_id().map(str::to_string))
        .filter(|id| !resources.instances.values().any(|ours| ours == id))
        .collect();
    // moto's own instances go first: it gives them random addresses in the subnet,
    // which may be a host's (RunInstances at a taken address fails).
    if !moto_made.is_empty() {
        c.autoscaling
            .detach_instances()
            .auto_scaling_group_name(group)
            .set_instance_ids(Some(moto_made.clone()))
            .should_decrement_desired_capacity(true)
            .send()
            .await
            .context("DetachInstances")?;
        c.ec2
            .terminate_instances()
            .set_instance_ids(Some(moto_made))
            .send()
            .await
            .context("TerminateInstances")?;
    }
    let mut instances = BTreeMap::new();
    for host in hosts.iter().filter(|h| !resources.instances.contains_key(*h)) {
        if let Some(id) = resources.spare_instances.remove(host) {
            instances.insert(host.clone(), id);
            continue;
        }
        let out = c
            .ec2
            .run_instances()
            .launch_template(
                aws_sdk_ec2::types::LaunchTemplateSpecification::builder()
                    .launch_template_id(&resources.launch_template_id)
                    .version("$Default")
                    .build(),
            )
            .min_count(1)
            .max_count(1)
            .subnet_id(subnet)
            .private_ip_address(host)
            .send()
            .await
            .with_context(|| format!("RunInstances for {host}"))?;
        let id = out.instances().first().and_then(|i| i.instance_id()).context("RunInstances: no id")?;
        instances.insert(host.clone(), id.to_string());
    }
    if instances.is_empty() {
        return Ok(());
    }
    c.autoscaling
        .attach_instances()
        .auto_scaling_group_name(group)
        .set_instance_ids(Some(instances.values().cloned().collect()))
        .send()
        .await
        .context("AttachInstances")?;
    resources.instances.extend(instances);
    Ok(())
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
