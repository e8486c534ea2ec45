//! What a cluster's AWS side should be, as a pure function of its spec and a few facts
//! read from AWS first (the VPC's CIDR, the AMI's root device). Every resource is a
//! [`Resource`]: its kind, its name (derived from `cluster_id`) and its attributes as
//! comparable text, references to other resources by name, never by id, so the
//! planner can diff them against what exists before anything is created. The order of
//! [`desired`] is the creation order.

use std::collections::BTreeMap;
use std::fmt;

use crate::iam_policy;
use crate::spec::{ClusterSpec, HealthChecks, ResourceNames, MANAGED_BY};

/// The kinds of resource one cluster owns, in creation order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    SecurityGroup,
    Role,
    InstanceProfile,
    Table,
    Bucket,
    Secret,
    TargetGroup,
    LoadBalancer,
    Listener,
    LaunchTemplate,
    AutoScalingGroup,
}

impl Kind {
    pub fn label(self) -> &'static str {
        match self {
            Kind::SecurityGroup => "security group",
            Kind::Role => "IAM role",
            Kind::InstanceProfile => "instance profile",
            Kind::Table => "DynamoDB table",
            Kind::Bucket => "S3 bucket",
            Kind::Secret => "secret",
            Kind::TargetGroup => "target group",
            Kind::LoadBalancer => "load balancer",
            Kind::Listener => "listener",
            Kind::LaunchTemplate => "launch template",
            Kind::AutoScalingGroup => "auto scaling group",
        }
    }

    /// Attributes that cannot change in place: a difference blocks the plan.
    pub fn immutable(self) -> &'static [&'static str] {
        match self {
            Kind::SecurityGroup => &["vpc", "description"],
            Kind::Table => &["key"],
            Kind::TargetGroup => &["protocol", "port", "vpc", "target_type"],
            Kind::LoadBalancer => &["type", "scheme"],
            Kind::Listener => &["load_balancer", "port"],
            _ => &[],
        }
    }

    /// Holds the cluster's data or credentials: kept by `destroy` unless asked.
    pub fn holds_data(self) -> bool {
        matches!(self, Kind::Bucket | Kind::Secret)
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// One resource: what identifies it and its attributes as text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resource {
    pub kind: Kind,
    pub name: String,
    pub attrs: BTreeMap<&'static str, String>,
}

impl Resource {
    pub fn new(kind: Kind, name: impl Into<String>) -> Resource {
        Resource { kind, name: name.into(), attrs: BTreeMap::new() }
    }

    pub fn with(mut self, key: &'static str, value: impl Into<String>) -> Resource {
        self.attrs.insert(key, value.into());
        self
    }

    pub fn attr(&self, key: &str) -> &str {
        self.attrs.get(key).map(String::as_str).unwrap_or("")
    }

    /// A list attribute's items (stored sorted, joined by `, `).
    pub fn list(&self, key: &str) -> Vec<String> {
        split_list(self.attr(key))
    }

    pub fn tags(&self) -> BTreeMap<String, String> {
        self.list("tags")
            .into_iter()
            .filter_map(|t| t.split_once('=').map(|(k, v)| (k.to_string(), v.to_string())))
            .collect()
    }
}

/// A sorted, de-duplicated list as one attribute value.
pub fn join_list<I: IntoIterator<Item = S>, S: Into<String>>(items: I) -> String {
    let mut v: Vec<String> = items.into_iter().map(Into::into).collect();
    v.sort();
    v.dedup();
    v.join(", ")
}

pub fn split_list(value: &str) -> Vec<String> {
    if value.is_empty() {
        return Vec::new();
    }
    value.split(", ").map(str::to_string).collect()
}

/// Tags as one attribute value (`k=v, ...`).
pub fn tag_list(tags: &BTreeMap<String, String>) -> String {
    join_list(tags.iter().map(|(k, v)| format!("{k}={v}")))
}

/// Facts read from AWS before planning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkFacts {
    pub vpc_cidr: String,
    /// The AMI's root device (`/dev/xvda`, `/dev/sda1`).
    pub root_device: String,
}

/// The health check paths on port 3000.
pub const PRIMARY_HEALTH_PATH: &str = "/health/primary";
pub const REPLICA_HEALTH_PATH: &str = "/health/replica";
/// Seconds between NLB health checks and the thresholds both ways.
pub const HEALTH_CHECK_INTERVAL_S: u32 = 10;
pub const HEALTH_CHECK_TIMEOUT_S: u32 = 5;
pub const HEALTH_CHECK_THRESHOLD: u32 = 3;
pub const DEREGISTRATION_DELAY_S: u32 = 30;
/// Noncurrent object versions in the backup bucket expire after this many days.
pub const NONCURRENT_VERSION_DAYS: u32 = 7;

/// The keys of the credentials secret, one generated password each.
pub const CREDENTIAL_KEYS: [&str; 6] =
    ["backup", "monitor", "orchestrator", "replication", "root", "write_check"];

/// The instance tags that carry what a node needs to bootstrap itself.
pub mod node_tags {
    pub const CLUSTER_ID: &str = "orchestrator:cluster-id";
    pub const TABLE: &str = "orchestrator:table";
    pub const BUCKET: &str = "orchestrator:bucket";
    pub const CREDENTIALS_SECRET: &str = "orchestrator:credentials-secret";
    pub const LUKS_SECRET: &str = "orchestrator:luks-secret";
    pub const WRITE_TARGET_GROUP: &str = "orchestrator:write-target-group";
    pub const READ_TARGET_GROUP: &str = "orchestrator:read-target-group";
    pub const FLAVOR: &str = "orchestrator:flavor";
    pub const SERVER_VERSION: &str = "orchestrator:server-version";
    /// How long the peers keep backups (`backup_retention_weeks`, in days).
    pub const BACKUP_RETENTION_DAYS: &str = "orchestrator:backup-retention-days";
}

fn own_tags(spec: &ClusterSpec, component: &str) -> BTreeMap<String, String> {
    let mut tags = spec.tags.clone();
    tags.insert("cluster".into(), spec.cluster_id.clone());
    tags.insert("component".into(), component.into());
    tags.insert("managed-by".into(), MANAGED_BY.into());
    tags
}

/// What a generated secret other than the credentials holds, as plan and observe show
/// it (its value is never shown).
pub fn generated_secret_content(names: &ResourceNames, secret: &str) -> &'static str {
    if secret == names.peer_ca_secret {
        "generated certificate authority"
    } else if secret == names.api_tokens_secret {
        "generated API tokens"
    } else {
        "generated passphrase"
    }
}

/// The instances' facts as tags (see [`node_tags`]).
pub fn node_facts(spec: &ClusterSpec) -> BTreeMap<String, String> {
    let n = spec.names();
    let mut facts = BTreeMap::from([
        (node_tags::CLUSTER_ID.to_string(), spec.cluster_id.clone()),
        (node_tags::TABLE.to_string(), n.table.clone()),
        (node_tags::BUCKET.to_string(), n.bucket.clone()),
        (node_tags::CREDENTIALS_SECRET.to_string(), n.credentials_secret.clone()),
        (node_tags::WRITE_TARGET_GROUP.to_string(), n.write_target_group.clone()),
        (node_tags::READ_TARGET_GROUP.to_string(), n.read_target_group.clone()),
        (node_tags::FLAVOR.to_string(), spec.flavor.as_str().to_string()),
        (node_tags::SERVER_VERSION.to_string(), spec.server_version.clone()),
        (node_tags::BACKUP_RETENTION_DAYS.to_string(), (spec.backup_retention_weeks * 7).to_string()),
    ]);
    if spec.uses_instance_store() {
        facts.insert(node_tags::LUKS_SECRET.to_string(), n.luks_secret.clone());
    }
    facts
}

/// The cloud-init user data of every node: it runs the bootstrap, which reads the
/// node's facts from its instance tags.
pub fn user_data(spec: &ClusterSpec) -> String {
    format!(
        "#cloud-config\n\
         # {cluster}: written by the provisioner; the node reads its facts from its instance tags.\n\
         runcmd:\n  - [ /usr/local/bin/provisioner, bootstrap, --from-instance-metadata ]\n",
        cluster = spec.cluster_id
    )
}

/// The ingress rules of the nodes' group and of the NLB's group.
fn ingress_rules(
    spec: &ClusterSpec,
    facts: &NetworkFacts,
    names: &ResourceNames,
) -> (Vec<String>, Vec<String>) {
    let clients: Vec<String> =
        if spec.client_cidrs.is_empty() { vec![facts.vpc_cidr.clone()] } else { spec.client_cidrs.clone() };
    let sources: Vec<&String> = clients.iter().chain(&spec.client_security_group_ids).collect();
    let db = &names.node_security_group;
    let nlb = &names.nlb_security_group;
    let mut node = vec![
        format!("tcp 3306 from {db}"),
        format!("tcp 3306 from {nlb}"),
        format!("tcp 3000 from {db}"),
        format!("tcp 10008 from {db}"),
        format!("icmp from {}", facts.vpc_cidr),
    ];
    if spec.health_checks == HealthChecks::Http {
        // The NLB's health checks of the peers' /health paths.
        node.push(format!("tcp 3000 from {nlb}"));
    }
    node.extend(sources.iter().map(|s| format!("tcp 3306 from {s}")));
    let mut lb = Vec::new();
    for port in [3306, 3307] {
        lb.extend(sources.iter().map(|s| format!("tcp {port} from {s}")));
    }
    (node, lb)
}

/// One target group's desired attributes.
fn target_group(spec: &ClusterSpec, name: &str, path: &str) -> Resource {
    let r = Resource::new(Kind::TargetGroup, name)
        .with("protocol", "TCP")
        .with("port", "3306")
        .with("vpc", &spec.vpc_id)
        .with("target_type", "instance")
        .with("health_check_interval_s", HEALTH_CHECK_INTERVAL_S.to_string())
        .with("health_check_timeout_s", HEALTH_CHECK_TIMEOUT_S.to_string())
        .with("healthy_threshold", HEALTH_CHECK_THRESHOLD.to_string())
        .with("unhealthy_threshold", HEALTH_CHECK_THRESHOLD.to_string())
        .with("deregistration_delay_s", DEREGISTRATION_DELAY_S.to_string())
        .with("tags", tag_list(&own_tags(spec, "load-balancer")));
    match spec.health_checks {
        HealthChecks::Tcp => r.with("health_check", "TCP traffic-port"),
        HealthChecks::Http => r.with("health_check", format!("HTTP 3000 {path}")),
    }
}

/// The backup bucket's lifecycle rules that expire current objects: none. The peers'
/// retention (`backup_retention_weeks`, handed to them as an instance tag) deletes
/// backups and archived binary logs knowing which a kept backup still needs; an age
/// rule would delete a full backup its kept incrementals need, or the last backups
/// when new ones stop. Only what the peers deleted goes by age (noncurrent versions).
pub fn lifecycle_rules(_spec: &ClusterSpec) -> Vec<(String, String, u32)> {
    Vec::new()
}

/// Everything the cluster should have, in creation order.
pub fn desired(spec: &ClusterSpec, facts: &NetworkFacts) -> Vec<Resource> {
    let n = spec.names();
    let (node_rules, nlb_rules) = ingress_rules(spec, facts, &n);
    let count = spec.instance_count.to_string();
    let mut out = vec![
        Resource::new(Kind::SecurityGroup, &n.nlb_security_group)
            .with("vpc", &spec.vpc_id)
            .with("description", format!("MySQL clients to the {} NLB", spec.cluster_id))
            .with("ingress", join_list(nlb_rules))
            .with("tags", tag_list(&own_tags(spec, "load-balancer"))),
        Resource::new(Kind::SecurityGroup, &n.node_security_group)
            .with("vpc", &spec.vpc_id)
            .with("description", format!("{} database nodes", spec.cluster_id))
            .with("ingress", join_list(node_rules))
            .with("tags", tag_list(&own_tags(spec, "database"))),
        Resource::new(Kind::Role, &n.role)
            .with("trust", "ec2.amazonaws.com")
            .with("policy", iam_policy::node_policy(&spec.cluster_id))
            .with("tags", tag_list(&own_tags(spec, "database"))),
        Resource::new(Kind::InstanceProfile, &n.instance_profile)
            .with("role", &n.role)
            .with("tags", tag_list(&own_tags(spec, "database"))),
        Resource::new(Kind::Table, &n.table)
            .with("key", "pk (S)")
            .with("billing", "PAY_PER_REQUEST")
            .with("ttl", "expires_at")
            .with("point_in_time_recovery", "enabled")
            .with("encryption", "KMS")
            .with("tags", tag_list(&own_tags(spec, "orchestrator"))),
        Resource::new(Kind::Bucket, &n.bucket)
            .with("versioning", "Enabled")
            .with("encryption", "AES256")
            .with("public_access", "all blocked")
            .with(
                "lifecycle",
                join_list(
                    lifecycle_rules(spec)
                        .into_iter()
                        .map(|(_, prefix, days)| format!("{prefix} after {days} days"))
                        .chain([format!("noncurrent versions after {NONCURRENT_VERSION_DAYS} days")]),
                ),
            )
            .with("tags", tag_list(&own_tags(spec, "backups"))),
        Resource::new(Kind::Secret, &n.credentials_secret)
            .with("content", format!("generated passwords: {}", join_list(CREDENTIAL_KEYS)))
            .with("tags", tag_list(&own_tags(spec, "credentials"))),
    ];
    out.push(
        Resource::new(Kind::Secret, &n.peer_ca_secret)
            .with("content", generated_secret_content(&n, &n.peer_ca_secret))
            .with("tags", tag_list(&own_tags(spec, "credentials"))),
    );
    out.push(
        Resource::new(Kind::Secret, &n.api_tokens_secret)
            .with("content", generated_secret_content(&n, &n.api_tokens_secret))
            .with("tags", tag_list(&own_tags(spec, "credentials"))),
    );
    if spec.uses_instance_store() {
        out.push(
            Resource::new(Kind::Secret, &n.luks_secret)
                .with("content", generated_secret_content(&n, &n.luks_secret))
                .with("tags", tag_list(&own_tags(spec, "storage"))),
        );
    }
    out.push(target_group(spec, &n.write_target_group, PRIMARY_HEALTH_PATH));
    out.push(target_group(
        spec,
        &n.read_target_group,
        &format!("{REPLICA_HEALTH_PATH}?max_lag={}", spec.replica_max_lag_s),
    ));
    out.push(
        Resource::new(Kind::LoadBalancer, &n.load_balancer)
            .with("type", "network")
            .with("scheme", "internal")
            .with("subnets", join_list(spec.subnet_ids.clone()))
            .with("security_groups", &n.nlb_security_group)
            .with("tags", tag_list(&own_tags(spec, "load-balancer"))),
    );
    for (port, group) in [(3306, &n.write_target_group), (3307, &n.read_target_group)] {
        out.push(
            Resource::new(Kind::Listener, listener_name(&n, port))
                .with("load_balancer", &n.load_balancer)
                .with("port", port.to_string())
                .with("protocol", "TCP")
                .with("target_group", group),
        );
    }
    out.push(
        Resource::new(Kind::LaunchTemplate, &n.launch_template)
            .with("ami", &spec.ami_id)
            .with("instance_type", &spec.instance_type)
            .with("root_volume", format!("{} gp3 {} GiB encrypted", facts.root_device, spec.root_volume_gb))
            .with("metadata", "IMDSv2 required")
            .with("public_ip", "none")
            .with("security_groups", &n.node_security_group)
            .with("instance_profile", &n.instance_profile)
            .with("user_data", user_data(spec))
            .with("instance_tags", tag_list(&instance_tags(spec)))
            .with("tags", tag_list(&own_tags(spec, "database"))),
    );
    out.push(
        Resource::new(Kind::AutoScalingGroup, &n.auto_scaling_group)
            .with("launch_template", format!("{} $Default", n.launch_template))
            .with("min_size", &count)
            .with("max_size", &count)
            .with("desired_capacity", &count)
            .with("subnets", join_list(spec.subnet_ids.clone()))
            .with("target_groups", &n.read_target_group)
            .with("health_check", "EC2 300 s grace")
            .with("tags", tag_list(&own_tags(spec, "database"))),
    );
    out
}

/// The instances' tags: ours, the spec's, and the node facts.
pub fn instance_tags(spec: &ClusterSpec) -> BTreeMap<String, String> {
    let mut tags = own_tags(spec, "database");
    tags.insert("Name".into(), format!("{}-node", spec.cluster_id));
    tags.extend(node_facts(spec));
    tags
}

pub fn listener_name(names: &ResourceNames, port: u16) -> String {
    format!("{}:{port}", names.load_balancer)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(extra: &str) -> ClusterSpec {
        ClusterSpec::parse(&format!(
            "cluster_id = \"orders\"\nvpc_id = \"vpc-1\"\nsubnet_ids = [\"subnet-b\", \"subnet-a\"]\n\
             instance_count = 5\nami_id = \"ami-1\"\nflavor = \"mariadb\"\nserver_version = \"10.11\"\n{extra}"
        ))
        .unwrap()
    }

    fn facts() -> NetworkFacts {
        NetworkFacts { vpc_cidr: "10.1.0.0/16".into(), root_device: "/dev/xvda".into() }
    }

    fn find<'a>(all: &'a [Resource], kind: Kind, name: &str) -> &'a Resource {
        all.iter().find(|r| r.kind == kind && r.name == name).unwrap_or_else(|| panic!("{kind} {name}"))
    }

    #[test]
    fn clients_default_to_the_vpc_and_ports_are_scoped() {
        let all = desired(&spec(""), &facts());
        let db = find(&all, Kind::SecurityGroup, "orders-db").list("ingress");
        assert_eq!(
            db,
            [
                "icmp from 10.1.0.0/16",
                "tcp 10008 from orders-db",
                "tcp 3000 from orders-db",
                "tcp 3000 from orders-nlb",
                "tcp 3306 from 10.1.0.0/16",
                "tcp 3306 from orders-db",
                "tcp 3306 from orders-nlb",
            ]
        );
        let nlb = find(&all, Kind::SecurityGroup, "orders-nlb").list("ingress");
        assert_eq!(nlb, ["tcp 3306 from 10.1.0.0/16", "tcp 3307 from 10.1.0.0/16"]);
    }

    #[test]
    fn given_clients_replace_the_vpc_and_tcp_checks_close_3000_to_the_nlb() {
        let s = spec("client_cidrs = [\"10.9.0.0/24\"]\nclient_security_group_ids = [\"sg-app\"]\nhealth_checks = \"tcp\"");
        let all = desired(&s, &facts());
        let db = find(&all, Kind::SecurityGroup, "orders-db").list("ingress");
        assert!(db.contains(&"tcp 3306 from sg-app".to_string()));
        assert!(db.contains(&"tcp 3306 from 10.9.0.0/24".to_string()));
        assert!(!db.contains(&"tcp 3306 from 10.1.0.0/16".to_string()));
        assert!(!db.iter().any(|r| r == "tcp 3000 from orders-nlb"));
        let tg = find(&all, Kind::TargetGroup, "orders-write");
        assert_eq!(tg.attr("health_check"), "TCP traffic-port");
    }

    #[test]
    fn every_resource_is_tagged_and_named_from_the_cluster() {
        let all = desired(&spec("[tags]\nteam = \"payments\""), &facts());
        for r in all.iter().filter(|r| r.kind != Kind::Listener) {
            let tags = r.tags();
            assert_eq!(tags.get("cluster").map(String::as_str), Some("orders"), "{} {}", r.kind, r.name);
            assert_eq!(tags.get("managed-by").map(String::as_str), Some(MANAGED_BY));
            assert!(tags.contains_key("component"));
            assert_eq!(tags.get("team").map(String::as_str), Some("payments"));
            assert!(r.name.starts_with("orders") || r.name.starts_with("percona-orders"), "{}", r.name);
        }
    }

    #[test]
    fn instance_store_adds_the_luks_secret_and_tag() {
        let ebs = desired(&spec(""), &facts());
        assert!(!ebs.iter().any(|r| r.name == "orders-luks-passphrase"));
        let nvme = desired(&spec("instance_type = \"i3en.xlarge\""), &facts());
        find(&nvme, Kind::Secret, "orders-luks-passphrase");
        let lt = find(&nvme, Kind::LaunchTemplate, "orders-node");
        assert!(lt.attr("instance_tags").contains("orchestrator:luks-secret=orders-luks-passphrase"));
    }

    #[test]
    fn group_sizes_and_lifecycle_follow_the_spec() {
        let all = desired(&spec("backup_retention_weeks = 2"), &facts());
        let asg = find(&all, Kind::AutoScalingGroup, "orders-nodes");
        for k in ["min_size", "max_size", "desired_capacity"] {
            assert_eq!(asg.attr(k), "5");
        }
        assert_eq!(asg.attr("subnets"), "subnet-a, subnet-b");
        let bucket = find(&all, Kind::Bucket, "percona-orders-backups");
        // Current objects are the peers' retention's (it knows the chains); the
        // bucket expires only what they deleted.
        assert_eq!(bucket.list("lifecycle"), ["noncurrent versions after 7 days"]);
        let lt = find(&all, Kind::LaunchTemplate, "orders-node");
        assert!(lt.attr("instance_tags").contains("orchestrator:backup-retention-days=14"));
    }
}
