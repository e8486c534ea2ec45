//! The cluster spec (`cluster.toml`, every key documented in
//! `deploy/cluster.example.toml`): what one cluster's AWS side is made of. Parsing
//! refuses unknown keys; [`ClusterSpec::validate`] checks every value and says what is
//! wrong in one line naming the key, before any AWS call. The names of the resources
//! derive from `cluster_id` ([`ResourceNames`]).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::Path;

use serde::Deserialize;

/// The database server the nodes run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SpecFlavor {
    Percona,
    Mariadb,
}

impl SpecFlavor {
    pub fn as_str(self) -> &'static str {
        match self {
            SpecFlavor::Percona => "percona",
            SpecFlavor::Mariadb => "mariadb",
        }
    }
}

/// How the NLB checks its targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HealthChecks {
    /// A TCP connect to 3306: up means "mysqld listens", whatever its role.
    Tcp,
    /// HTTP on the peer's port 3000: `/health/primary` for the write group (only the
    /// writable master in contact with a quorum passes) and `/health/replica` for the
    /// read group, so the NLB drops a demoted master even if an API call is late.
    #[default]
    Http,
}

impl HealthChecks {
    pub fn as_str(self) -> &'static str {
        match self {
            HealthChecks::Tcp => "tcp",
            HealthChecks::Http => "http",
        }
    }
}

fn default_instance_type() -> String {
    "t3.medium".into()
}
fn default_root_volume_gb() -> u32 {
    100
}
fn default_retention_weeks() -> u32 {
    4
}
fn default_replica_max_lag_s() -> u32 {
    30
}

/// One cluster's AWS side.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSpec {
    pub cluster_id: String,
    #[serde(default)]
    pub region: Option<String>,
    pub vpc_id: String,
    pub subnet_ids: Vec<String>,
    /// Who may reach MySQL through the NLB (and directly); empty: the VPC's CIDR.
    #[serde(default)]
    pub client_cidrs: Vec<String>,
    #[serde(default)]
    pub client_security_group_ids: Vec<String>,
    #[serde(default = "default_instance_type")]
    pub instance_type: String,
    pub instance_count: u32,
    pub ami_id: String,
    #[serde(default = "default_root_volume_gb")]
    pub root_volume_gb: u32,
    pub flavor: SpecFlavor,
    pub server_version: String,
    #[serde(default = "default_retention_weeks")]
    pub backup_retention_weeks: u32,
    #[serde(default)]
    pub health_checks: HealthChecks,
    /// With `http` checks: replicas lagging more than this leave the read group.
    #[serde(default = "default_replica_max_lag_s")]
    pub replica_max_lag_s: u32,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
}

/// A spec that cannot be used, said in one line naming the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    #[error("cannot read {path}: {message}")]
    Read { path: String, message: String },
    #[error("{path}: {message}")]
    Parse { path: String, message: String },
    #[error("{key}: {message}")]
    Invalid { key: String, message: String },
}

fn invalid(key: impl Into<String>, message: impl Into<String>) -> SpecError {
    SpecError::Invalid { key: key.into(), message: message.into() }
}

/// The tag keys every resource carries; the spec's `tags` may not set them.
pub const OWN_TAG_KEYS: [&str; 3] = ["cluster", "component", "managed-by"];
/// Tags a spec may add (instances hold 50; the provisioner adds up to 13).
pub const MAX_SPEC_TAGS: usize = 37;
/// The `managed-by` tag's value.
pub const MANAGED_BY: &str = "orchestrator-provisioner";

impl ClusterSpec {
    /// Reads, parses and validates a spec file.
    pub fn load(path: &Path) -> Result<ClusterSpec, SpecError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| SpecError::Read { path: path.display().to_string(), message: e.to_string() })?;
        Self::parse(&text).map_err(|e| match e {
            SpecError::Parse { message, .. } => {
                SpecError::Parse { path: path.display().to_string(), message }
            }
            other => other,
        })
    }

    /// Parses and validates spec text.
    pub fn parse(text: &str) -> Result<ClusterSpec, SpecError> {
        let spec: ClusterSpec = toml::from_str(text)
            .map_err(|e| SpecError::Parse { path: "spec".into(), message: one_line_toml_error(text, &e) })?;
        spec.validate()?;
        Ok(spec)
    }

    /// Every value checked; the first problem found is returned.
    pub fn validate(&self) -> Result<(), SpecError> {
        let id = &self.cluster_id;
        let id_ok = !id.is_empty()
            && id.len() <= 24
            && id.starts_with(|c: char| c.is_ascii_lowercase())
            && !id.ends_with('-')
            && !id.contains("--")
            && id.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if !id_ok {
            return Err(invalid(
                "cluster_id",
                format!("`{id}` must be 1 to 24 lowercase letters, digits and single hyphens, starting with a letter (it names the NLB, the bucket and the table)"),
            ));
        }
        if let Some(region) = &self.region {
            let parts: Vec<&str> = region.split('-').collect();
            let ok = parts.len() >= 3
                && parts[..parts.len() - 1]
                    .iter()
                    .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_lowercase()))
                && parts[parts.len() - 1].parse::<u8>().is_ok();
            if !ok {
                return Err(invalid(
                    "region",
                    format!("`{region}` is not an AWS region name (e.g. eu-west-1)"),
                ));
            }
        }
        aws_id("vpc_id", &self.vpc_id, "vpc-")?;
        if self.subnet_ids.len() < 2 {
            return Err(invalid(
                "subnet_ids",
                format!(
                    "give at least two private subnets in different availability zones (got {})",
                    self.subnet_ids.len()
                ),
            ));
        }
        for (i, s) in self.subnet_ids.iter().enumerate() {
            aws_id(&format!("subnet_ids[{i}]"), s, "subnet-")?;
            if self.subnet_ids[..i].contains(s) {
                return Err(invalid(format!("subnet_ids[{i}]"), format!("`{s}` is listed twice")));
            }
        }
        for (i, c) in self.client_cidrs.iter().enumerate() {
            parse_cidr(c).map_err(|m| invalid(format!("client_cidrs[{i}]"), m))?;
        }
        for (i, g) in self.client_security_group_ids.iter().enumerate() {
            aws_id(&format!("client_security_group_ids[{i}]"), g, "sg-")?;
        }
        let (family, size) = self.instance_type.split_once('.').unwrap_or(("", ""));
        let type_ok = !family.is_empty()
            && !size.is_empty()
            && family.starts_with(|c: char| c.is_ascii_lowercase())
            && family.chars().any(|c| c.is_ascii_digit())
            && family
                .chars()
                .chain(size.chars())
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if !type_ok {
            return Err(invalid(
                "instance_type",
                format!("`{}` is not an EC2 instance type (e.g. t3.medium, i3en.xlarge)", self.instance_type),
            ));
        }
        if ![3, 5, 7].contains(&self.instance_count) {
            return Err(invalid(
                "instance_count",
                format!(
                    "{} nodes: give 3, 5 or 7 (an odd count keeps a Raft majority after any one loss)",
                    self.instance_count
                ),
            ));
        }
        aws_id("ami_id", &self.ami_id, "ami-")?;
        if !(20..=16384).contains(&self.root_volume_gb) {
            return Err(invalid("root_volume_gb", format!("{} GiB: give 20 to 16384", self.root_volume_gb)));
        }
        self.validate_server_version()?;
        if !(1..=52).contains(&self.backup_retention_weeks) {
            return Err(invalid(
                "backup_retention_weeks",
                format!("{} weeks: give 1 to 52", self.backup_retention_weeks),
            ));
        }
        if !(1..=86_400).contains(&self.replica_max_lag_s) {
            return Err(invalid(
                "replica_max_lag_s",
                format!("{} s: give 1 to 86400", self.replica_max_lag_s),
            ));
        }
        // Instances carry these, ours (3), Name and up to 9 node facts: 50 at most.
        if self.tags.len() > MAX_SPEC_TAGS {
            return Err(invalid(
                "tags",
                format!(
                    "{} tags: at most {MAX_SPEC_TAGS} (instances hold 50, the provisioner adds up to 13)",
                    self.tags.len()
                ),
            ));
        }
        for (k, v) in &self.tags {
            if OWN_TAG_KEYS.contains(&k.as_str()) || k == "Name" || k.starts_with("orchestrator:") {
                return Err(invalid(format!("tags.{k}"), "this tag is set by the provisioner"));
            }
            // Instance tags are readable through IMDS only with keys of these characters.
            let key_ok = !k.is_empty()
                && k.len() <= 128
                && !k.to_ascii_lowercase().starts_with("aws:")
                && k.chars().all(|c| c.is_ascii_alphanumeric() || "+-._:@".contains(c));
            if !key_ok {
                return Err(invalid(
                    format!("tags.{k}"),
                    "tag keys are 1 to 128 letters, digits and + - . _ : @, not starting with aws:",
                ));
            }
            if v.len() > 256 || v.contains(", ") || v.contains('\n') {
                return Err(invalid(
                    format!("tags.{k}"),
                    "tag values are at most 256 characters, without \", \" or line breaks",
                ));
            }
        }
        Ok(())
    }

    fn validate_server_version(&self) -> Result<(), SpecError> {
        let v = &self.server_version;
        let numbers: Vec<Option<u32>> = v.split('.').map(|p| p.parse().ok()).collect();
        let bad =
            |why: &str| Err(invalid("server_version", format!("`{v}` for {}: {why}", self.flavor.as_str())));
        if numbers.len() < 2 || numbers.len() > 3 || numbers.iter().any(Option::is_none) {
            return bad("give major.minor or major.minor.patch");
        }
        let n: Vec<u32> = numbers.into_iter().flatten().collect();
        match self.flavor {
            // The node config and the fence rely on 8.0.30+ (innodb_redo_log_capacity,
            // replica/source names); 8.4 is the next LTS.
            SpecFlavor::Percona => match (n[0], n[1], n.get(2)) {
                (8, 0, Some(p)) if *p >= 30 => Ok(()),
                (8, 0, None) => bad("give the patch release (8.0.30 or later)"),
                (8, 0, Some(_)) => bad("Percona Server before 8.0.30 is not supported"),
                (8, 4, _) => Ok(()),
                _ => bad("supported: Percona Server 8.0.30+ and 8.4"),
            },
            SpecFlavor::Mariadb => match (n[0], n[1]) {
                (10, m) if m >= 6 => Ok(()),
                (11, _) => Ok(()),
                _ => bad("supported: MariaDB 10.6 and later"),
            },
        }
    }

    /// Nodes of this type keep MySQL on local NVMe (instance store), encrypted with LUKS.
    pub fn uses_instance_store(&self) -> bool {
        instance_store_type(&self.instance_type)
    }

    pub fn names(&self) -> ResourceNames {
        ResourceNames::of(&self.cluster_id)
    }
}

/// Whether an instance type's storage is instance store (`i3en.xlarge`, `m5d.large`,
/// `d3.2xlarge`): families `i*` and `d*`, or a `d` among the attribute letters after
/// the generation digit.
pub fn instance_store_type(instance_type: &str) -> bool {
    let family = instance_type.split('.').next().unwrap_or("");
    let letters: String = family.chars().take_while(|c| c.is_ascii_lowercase()).collect();
    let attributes: String = family.chars().skip(letters.len()).skip_while(|c| c.is_ascii_digit()).collect();
    // Storage-optimized i/im/is and d families, and the older ones with local disks.
    let storage_family = matches!(letters.as_str(), "i" | "im" | "is" | "d")
        || matches!(family, "h1" | "f1" | "x1" | "x1e" | "dl1");
    storage_family || attributes.contains('d')
}

fn aws_id(key: &str, value: &str, prefix: &str) -> Result<(), SpecError> {
    let rest = value.strip_prefix(prefix).unwrap_or("");
    if rest.is_empty() || !rest.chars().all(|c| c.is_ascii_alphanumeric()) {
        return Err(invalid(key, format!("`{value}` is not an id of the form {prefix}…")));
    }
    Ok(())
}

/// `a.b.c.d/n`, with no bits set past the prefix.
pub fn parse_cidr(text: &str) -> Result<(Ipv4Addr, u8), String> {
    let (addr, len) =
        text.split_once('/').ok_or_else(|| format!("`{text}` is not an IPv4 CIDR (a.b.c.d/n)"))?;
    let addr: Ipv4Addr = addr.parse().map_err(|_| format!("`{text}` is not an IPv4 CIDR (a.b.c.d/n)"))?;
    let len: u8 =
        len.parse().ok().filter(|l| *l <= 32).ok_or_else(|| format!("`{text}`: prefix length 0 to 32"))?;
    let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
    if u32::from(addr) & !mask != 0 {
        return Err(format!(
            "`{text}` has host bits set (did you mean {}/{len}?)",
            Ipv4Addr::from(u32::from(addr) & mask)
        ));
    }
    Ok((addr, len))
}

/// toml's errors span several lines (a snippet of the file): keep the message and
/// the line number.
fn one_line_toml_error(text: &str, e: &toml::de::Error) -> String {
    let message = e.message().trim().replace('\n', " ");
    let Some(span) = e.span() else { return message };
    let line_no = text[..span.start.min(text.len())].matches('\n').count() + 1;
    let line = text.lines().nth(line_no - 1).unwrap_or("");
    match line.split_once('=') {
        // A bad value: name its key.
        Some((key, _)) if !message.contains('`') || message.starts_with("invalid") => {
            format!("{}: {message} (line {line_no})", key.trim())
        }
        _ => format!("{message} (line {line_no})"),
    }
}

/// What every resource of a cluster is called.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceNames {
    pub cluster_id: String,
    pub load_balancer: String,
    pub write_target_group: String,
    pub read_target_group: String,
    pub node_security_group: String,
    pub nlb_security_group: String,
    pub launch_template: String,
    pub auto_scaling_group: String,
    pub table: String,
    pub bucket: String,
    pub credentials_secret: String,
    pub luks_secret: String,
    /// The CA that signs the peers' certificates (JSON `cert`, `key`), read by each
    /// node's bootstrap to certify itself.
    pub peer_ca_secret: String,
    /// The peers' API tokens (JSON list, `auth.tokens_secret`), with an `admin` token
    /// made by the first apply.
    pub api_tokens_secret: String,
    pub role: String,
    pub instance_profile: String,
}

impl ResourceNames {
    pub fn of(cluster_id: &str) -> ResourceNames {
        let id = cluster_id;
        ResourceNames {
            cluster_id: id.to_string(),
            load_balancer: format!("{id}-nlb"),
            write_target_group: format!("{id}-write"),
            read_target_group: format!("{id}-read"),
            node_security_group: format!("{id}-db"),
            nlb_security_group: format!("{id}-nlb"),
            launch_template: format!("{id}-node"),
            auto_scaling_group: format!("{id}-nodes"),
            table: format!("{id}-orchestrator"),
            bucket: format!("percona-{id}-backups"),
            credentials_secret: format!("{id}/mysql-credentials"),
            luks_secret: format!("{id}-luks-passphrase"),
            peer_ca_secret: format!("{id}/peer-ca"),
            api_tokens_secret: format!("{id}/api-tokens"),
            role: format!("{id}-node"),
            instance_profile: format!("{id}-node"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub const GOOD: &str = r#"
cluster_id = "orders"
region = "eu-west-1"
vpc_id = "vpc-0abc"
subnet_ids = ["subnet-0a", "subnet-0b"]
instance_count = 3
ami_id = "ami-0123"
flavor = "percona"
server_version = "8.0.36"
"#;

    #[test]
    fn defaults_fill_the_rest() {
        let s = ClusterSpec::parse(GOOD).unwrap();
        assert_eq!(s.instance_type, "t3.medium");
        assert_eq!(s.root_volume_gb, 100);
        assert_eq!(s.backup_retention_weeks, 4);
        assert_eq!(s.health_checks, HealthChecks::Http);
        assert!(s.client_cidrs.is_empty());
        assert!(!s.uses_instance_store());
        assert_eq!(s.names().bucket, "percona-orders-backups");
        assert_eq!(s.names().credentials_secret, "orders/mysql-credentials");
    }

    #[test]
    fn every_bad_value_is_one_line_naming_its_key() {
        let cases: &[(&str, &str, &str)] = &[
            ("instance_count = 3", "instance_count = 4", "instance_count: 4 nodes: give 3, 5 or 7"),
            ("instance_count = 3", "instance_count = 1", "instance_count:"),
            (
                r#"subnet_ids = ["subnet-0a", "subnet-0b"]"#,
                r#"subnet_ids = ["subnet-0a"]"#,
                "subnet_ids: give at least two",
            ),
            (
                r#"subnet_ids = ["subnet-0a", "subnet-0b"]"#,
                r#"subnet_ids = ["subnet-0a", "subnet-0a"]"#,
                "subnet_ids[1]:",
            ),
            (r#"cluster_id = "orders""#, r#"cluster_id = "Orders""#, "cluster_id:"),
            (r#"cluster_id = "orders""#, r#"cluster_id = "a-very-long-cluster-name-x""#, "cluster_id:"),
            (r#"vpc_id = "vpc-0abc""#, r#"vpc_id = "0abc""#, "vpc_id:"),
            (r#"ami_id = "ami-0123""#, r#"ami_id = "ami-""#, "ami_id:"),
            (r#"region = "eu-west-1""#, r#"region = "europe""#, "region:"),
            (
                r#"server_version = "8.0.36""#,
                r#"server_version = "8.0.22""#,
                "server_version: `8.0.22` for percona",
            ),
            (r#"server_version = "8.0.36""#, r#"server_version = "5.7""#, "server_version:"),
            (
                r#"flavor = "percona""#,
                "flavor = \"mariadb\"\nserver_version_x = 1",
                "unknown field `server_version_x`",
            ),
            (r#"flavor = "percona""#, r#"flavor = "oracle""#, "unknown variant `oracle`"),
            ("instance_count = 3", "instance_count = 3\nroot_volume_gb = 10", "root_volume_gb: 10 GiB"),
            (
                "instance_count = 3",
                "instance_count = 3\nbackup_retention_weeks = 0",
                "backup_retention_weeks:",
            ),
            (
                "instance_count = 3",
                "instance_count = 3\nclient_cidrs = [\"10.0.0.1/16\"]",
                "client_cidrs[0]: `10.0.0.1/16` has host bits set (did you mean 10.0.0.0/16?)",
            ),
            (
                "instance_count = 3",
                "instance_count = 3\nclient_security_group_ids = [\"web\"]",
                "client_security_group_ids[0]:",
            ),
            ("instance_count = 3", "instance_count = 3\ninstance_type = \"large\"", "instance_type:"),
            ("instance_count = 3", "instance_count = 3\nhealth_checks = \"icmp\"", "unknown variant `icmp`"),
            (
                r#"server_version = "8.0.36""#,
                "server_version = \"8.0.36\"\n[tags]\ncluster = \"x\"",
                "tags.cluster: this tag is set by the provisioner",
            ),
        ];
        for (from, to, want) in cases {
            let text = GOOD.replace(from, to);
            assert_ne!(text, GOOD, "{from}");
            let e = ClusterSpec::parse(&text).unwrap_err().to_string();
            assert!(e.contains(want), "{to}: got `{e}`, want `{want}`");
            assert!(!e.contains('\n'), "{to}: `{e}` spans lines");
        }
    }

    #[test]
    fn a_value_of_the_wrong_type_names_its_key() {
        let e = ClusterSpec::parse(&GOOD.replace("instance_count = 3", "instance_count = \"3\""))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("spec: instance_count: invalid type"), "{e}");
        let e = ClusterSpec::parse(&(GOOD.to_string() + "[tags]\n\"cost center\" = \"x\"\n"))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("tags.cost center: tag keys are"), "{e}");
        let e =
            ClusterSpec::parse(&(GOOD.to_string() + "[tags]\nteam = \"a, b\"\n")).unwrap_err().to_string();
        assert!(e.starts_with("tags.team: tag values"), "{e}");
    }

    #[test]
    fn missing_required_key_is_named() {
        let e = ClusterSpec::parse(&GOOD.replace("ami_id = \"ami-0123\"\n", "")).unwrap_err().to_string();
        assert!(e.contains("missing field `ami_id`"), "{e}");
    }

    #[test]
    fn instance_store_types() {
        for t in [
            "i3en.xlarge",
            "i4i.large",
            "m5d.large",
            "m6id.xlarge",
            "c5ad.large",
            "d3.2xlarge",
            "x2iedn.xlarge",
            "is4gen.large",
            "x1e.xlarge",
            "h1.2xlarge",
        ] {
            assert!(instance_store_type(t), "{t}");
        }
        for t in ["t3.medium", "m5.large", "r6g.xlarge", "c5n.large", "m7i.large", "r5b.large", "inf2.xlarge"]
        {
            assert!(!instance_store_type(t), "{t}");
        }
    }

    #[test]
    fn mariadb_versions() {
        let s = |v: &str| GOOD.replace("percona", "mariadb").replace("8.0.36", v);
        assert!(ClusterSpec::parse(&s("10.11")).is_ok());
        assert!(ClusterSpec::parse(&s("11.4.2")).is_ok());
        assert!(ClusterSpec::parse(&s("10.5")).is_err());
    }
}
