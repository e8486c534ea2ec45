//! Reads what exists of one cluster's AWS side into the same [`Resource`] form the
//! desired state uses (ids and ARNs translated back to our names), plus the ids and
//! ARNs apply needs to change them. Only reads: every call here is a
//! Describe/Get/List/Head.

use std::collections::BTreeMap;

use anyhow::{bail, Context};

use super::clients::Clients;
use super::{call_error, Ids};
use crate::desired::{
    join_list, listener_name, split_list, tag_list, Kind, NetworkFacts, Resource, CREDENTIAL_KEYS,
};
use crate::spec::{ClusterSpec, ResourceNames};
use crate::{credentials, iam_policy};

/// What exists, with the ids apply needs.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    pub resources: Vec<Resource>,
    pub ids: Ids,
    /// The NLB's DNS name, once it exists.
    pub dns_name: Option<String>,
    /// The credentials secret's value when it lacks keys (apply adds them).
    pub credentials_missing_keys: bool,
}

impl Observed {
    fn add(&mut self, r: Resource, id: impl Into<String>) {
        self.ids.insert(r.kind, &r.name, id);
        self.resources.push(r);
    }
}

/// The facts the desired state needs: the VPC's CIDR and the AMI's root device.
pub async fn network_facts(c: &Clients, spec: &ClusterSpec) -> anyhow::Result<NetworkFacts> {
    let vpcs = c
        .ec2
        .describe_vpcs()
        .vpc_ids(&spec.vpc_id)
        .send()
        .await
        .map_err(|e| call_error("DescribeVpcs", e))
        .with_context(|| format!("vpc_id: cannot read VPC {}", spec.vpc_id))?;
    let vpc_cidr = vpcs
        .vpcs()
        .first()
        .and_then(|v| v.cidr_block())
        .with_context(|| format!("vpc_id: VPC {} not found in {}", spec.vpc_id, c.region))?
        .to_string();
    let subnets = c
        .ec2
        .describe_subnets()
        .set_subnet_ids(Some(spec.subnet_ids.clone()))
        .send()
        .await
        .map_err(|e| call_error("DescribeSubnets", e))
        .context("subnet_ids: cannot read the subnets")?;
    for id in &spec.subnet_ids {
        let Some(s) = subnets.subnets().iter().find(|s| s.subnet_id() == Some(id.as_str())) else {
            bail!("subnet_ids: subnet {id} not found");
        };
        if s.vpc_id() != Some(spec.vpc_id.as_str()) {
            bail!("subnet_ids: subnet {id} is in {}, not in {}", s.vpc_id().unwrap_or("?"), spec.vpc_id);
        }
    }
    let zones: std::collections::BTreeSet<&str> =
        subnets.subnets().iter().filter_map(|s| s.availability_zone()).collect();
    if zones.len() < 2 {
        bail!(
            "subnet_ids: the subnets are all in {}: give subnets in at least two availability zones",
            zones.iter().next().unwrap_or(&"one zone")
        );
    }
    let images = c
        .ec2
        .describe_images()
        .image_ids(&spec.ami_id)
        .send()
        .await
        .map_err(|e| call_error("DescribeImages", e))
        .with_context(|| format!("ami_id: cannot read AMI {}", spec.ami_id))?;
    let root_device = images
        .images()
        .first()
        .with_context(|| format!("ami_id: AMI {} not found in {}", spec.ami_id, c.region))?
        .root_device_name()
        .unwrap_or("/dev/xvda")
        .to_string();
    Ok(NetworkFacts { vpc_cidr, root_device })
}

/// Everything of the cluster that exists.
pub async fn observe(c: &Clients, spec: &ClusterSpec) -> anyhow::Result<Observed> {
    let n = spec.names();
    let mut o = Observed::default();
    security_groups(c, spec, &n, &mut o).await?;
    role(c, &n, &mut o).await?;
    instance_profile(c, &n, &mut o).await?;
    table(c, &n, &mut o).await?;
    bucket(c, &n, &mut o).await?;
    secrets(c, &n, &mut o).await?;
    target_groups(c, &n, &mut o).await?;
    load_balancer(c, &n, &mut o).await?;
    launch_template(c, &n, &mut o).await?;
    auto_scaling_group(c, &n, &mut o).await?;
    Ok(o)
}

fn ec2_tags(tags: &[aws_sdk_ec2::types::Tag]) -> String {
    tag_list(&tags.iter().filter_map(|t| Some((t.key()?.to_string(), t.value()?.to_string()))).collect())
}

async fn security_groups(
    c: &Clients,
    spec: &ClusterSpec,
    n: &ResourceNames,
    o: &mut Observed,
) -> anyhow::Result<()> {
    let out = c
        .ec2
        .describe_security_groups()
        .filters(aws_sdk_ec2::types::Filter::builder().name("tag:cluster").values(&spec.cluster_id).build())
        .filters(
            aws_sdk_ec2::types::Filter::builder()
                .name("group-name")
                .values(&n.node_security_group)
                .values(&n.nlb_security_group)
                .build(),
        )
        .send()
        .await
        .map_err(|e| call_error("DescribeSecurityGroups", e))?;
    let ours: BTreeMap<String, String> = out
        .security_groups()
        .iter()
        .filter_map(|g| Some((g.group_id()?.to_string(), g.group_name()?.to_string())))
        .collect();
    for g in out.security_groups() {
        let (Some(id), Some(name)) = (g.group_id(), g.group_name()) else { continue };
        let mut rules = Vec::new();
        for p in g.ip_permissions() {
            let what = match (p.ip_protocol(), p.from_port(), p.to_port()) {
                (Some("icmp"), _, _) => "icmp".to_string(),
                (Some("-1"), _, _) | (None, _, _) => "all".to_string(),
                (Some(proto), Some(from), Some(to)) if from == to => format!("{proto} {from}"),
                (Some(proto), Some(from), Some(to)) => format!("{proto} {from}-{to}"),
                (Some(proto), _, _) => format!("{proto} all"),
            };
            for r in p.ip_ranges() {
                rules.push(format!("{what} from {}", r.cidr_ip().unwrap_or("?")));
            }
            for pair in p.user_id_group_pairs() {
                let gid = pair.group_id().unwrap_or("?");
                rules.push(format!("{what} from {}", ours.get(gid).map(String::as_str).unwrap_or(gid)));
            }
        }
        let r = Resource::new(Kind::SecurityGroup, name)
            .with("vpc", g.vpc_id().unwrap_or(""))
            .with("description", g.description().unwrap_or(""))
            .with("ingress", join_list(rules))
            .with("tags", ec2_tags(g.tags()));
        o.add(r, id);
    }
    Ok(())
}

/// IAM returns policy documents URL-encoded.
pub fn url_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Some(b) =
                std::str::from_utf8(&bytes[i + 1..i + 3]).ok().and_then(|h| u8::from_str_radix(h, 16).ok())
            {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(if bytes[i] == b'+' { b' ' } else { bytes[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn policy_text(doc: &str) -> String {
    let decoded = if doc.trim_start().starts_with('{') { doc.to_string() } else { url_decode(doc) };
    iam_policy::canonical_json(&decoded).unwrap_or(decoded)
}

fn iam_tags(tags: &[aws_sdk_iam::types::Tag]) -> String {
    tag_list(&tags.iter().map(|t| (t.key().to_string(), t.value().to_string())).collect())
}

/// The inline policy on the nodes' role is named like the role.
pub fn role_policy_name(n: &ResourceNames) -> String {
    n.role.clone()
}

async fn role(c: &Clients, n: &ResourceNames, o: &mut Observed) -> anyhow::Result<()> {
    let out = match c.iam.get_role().role_name(&n.role).send().await {
        Ok(out) => out,
        Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_entity_exception()) => return Ok(()),
        Err(e) => return Err(call_error("GetRole", e)),
    };
    let Some(role) = out.role() else { return Ok(()) };
    let trust_doc = policy_text(role.assume_role_policy_document().unwrap_or(""));
    let trust: serde_json::Value = serde_json::from_str(&trust_doc).unwrap_or_default();
    let services: Vec<String> = trust["Statement"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|s| match &s["Principal"]["Service"] {
            serde_json::Value::String(x) => vec![x.clone()],
            serde_json::Value::Array(v) => v.iter().filter_map(|x| x.as_str().map(str::to_string)).collect(),
            _ => vec![],
        })
        .collect();
    let policy =
        match c.iam.get_role_policy().role_name(&n.role).policy_name(role_policy_name(n)).send().await {
            Ok(p) => policy_text(p.policy_document()),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_entity_exception()) => String::new(),
            Err(e) => return Err(call_error("GetRolePolicy", e)),
        };
    let tags =
        c.iam.list_role_tags().role_name(&n.role).send().await.map_err(|e| call_error("ListRoleTags", e))?;
    let r = Resource::new(Kind::Role, &n.role)
        .with("trust", join_list(services))
        .with("policy", policy)
        .with("tags", iam_tags(tags.tags()));
    o.add(r, role.arn());
    Ok(())
}

async fn instance_profile(c: &Clients, n: &ResourceNames, o: &mut Observed) -> anyhow::Result<()> {
    let out = match c.iam.get_instance_profile().instance_profile_name(&n.instance_profile).send().await {
        Ok(out) => out,
        Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_entity_exception()) => return Ok(()),
        Err(e) => return Err(call_error("GetInstanceProfile", e)),
    };
    let Some(p) = out.instance_profile() else { return Ok(()) };
    let r = Resource::new(Kind::InstanceProfile, &n.instance_profile)
        .with("role", join_list(p.roles().iter().map(|r| r.role_name().to_string())))
        .with("tags", iam_tags(p.tags()));
    o.add(r, p.arn());
    Ok(())
}

async fn table(c: &Clients, n: &ResourceNames, o: &mut Observed) -> anyhow::Result<()> {
    let out = match c.dynamodb.describe_table().table_name(&n.table).send().await {
        Ok(out) => out,
        Err(e) if e.as_service_error().is_some_and(|s| s.is_resource_not_found_exception()) => return Ok(()),
        Err(e) => return Err(call_error("DescribeTable", e)),
    };
    let Some(t) = out.table() else { return Ok(()) };
    let arn = t.table_arn().unwrap_or("").to_string();
    let types: BTreeMap<&str, &str> =
        t.attribute_definitions().iter().map(|a| (a.attribute_name(), a.attribute_type().as_str())).collect();
    let key = join_list(
        t.key_schema()
            .iter()
            .map(|k| format!("{} ({})", k.attribute_name(), types.get(k.attribute_name()).unwrap_or(&"?"))),
    );
    let billing = t
        .billing_mode_summary()
        .and_then(|b| b.billing_mode())
        .map(|b| b.as_str().to_string())
        .unwrap_or_else(|| "PROVISIONED".into());
    let ttl = c
        .dynamodb
        .describe_time_to_live()
        .table_name(&n.table)
        .send()
        .await
        .map_err(|e| call_error("DescribeTimeToLive", e))?;
    let ttl = ttl
        .time_to_live_description()
        // ENABLING is on its way: asking again would be refused.
        .filter(|d| d.time_to_live_status().is_some_and(|s| matches!(s.as_str(), "ENABLED" | "ENABLING")))
        .and_then(|d| d.attribute_name())
        .unwrap_or("")
        .to_string();
    let backups = c
        .dynamodb
        .describe_continuous_backups()
        .table_name(&n.table)
        .send()
        .await
        .map_err(|e| call_error("DescribeContinuousBackups", e))?;
    let pitr = backups
        .continuous_backups_description()
        .and_then(|d| d.point_in_time_recovery_description())
        .and_then(|p| p.point_in_time_recovery_status())
        .map(|s| if s.as_str() == "ENABLED" { "enabled" } else { "disabled" })
        .unwrap_or("disabled");
    let encryption = t
        .sse_description()
        .filter(|s| s.status().is_some_and(|s| matches!(s.as_str(), "ENABLED" | "ENABLING" | "UPDATING")))
        .and_then(|s| s.sse_type())
        .map(|s| s.as_str().to_string())
        .unwrap_or_else(|| "AWS owned key".into());
    let tags = c
        .dynamodb
        .list_tags_of_resource()
        .resource_arn(&arn)
        .send()
        .await
        .map_err(|e| call_error("ListTagsOfResource", e))?;
    let tags = tag_list(&tags.tags().iter().map(|t| (t.key().to_string(), t.value().to_string())).collect());
    let r = Resource::new(Kind::Table, &n.table)
        .with("key", key)
        .with("billing", billing)
        .with("ttl", ttl)
        .with("point_in_time_recovery", pitr)
        .with("encryption", encryption)
        .with("tags", tags);
    o.add(r, arn);
    Ok(())
}

async fn bucket(c: &Clients, n: &ResourceNames, o: &mut Observed) -> anyhow::Result<()> {
    match c.s3.head_bucket().bucket(&n.bucket).send().await {
        Ok(_) => {}
        Err(e) if e.as_service_error().is_some_and(|s| s.is_not_found()) => return Ok(()),
        Err(e) if e.raw_response().is_some_and(|r| r.status().as_u16() == 404) => return Ok(()),
        Err(e) if e.raw_response().is_some_and(|r| r.status().as_u16() == 403) => {
            bail!("S3 bucket {} exists but belongs to another account (bucket names are global): pick another cluster_id", n.bucket)
        }
        Err(e) => return Err(call_error("HeadBucket", e)),
    }
    let b = &n.bucket;
    let versioning = match c.s3.get_bucket_versioning().bucket(b).send().await {
        Ok(out) => out.status().map(|s| s.as_str().to_string()).unwrap_or_else(|| "Disabled".into()),
        // moto 5.2 names the answer's root element GetBucketVersioningResponse, which
        // the SDK refuses; the status in a successful answer is still the status.
        Err(e) => match e
            .raw_response()
            .filter(|r| r.status().is_success())
            .and_then(|r| r.body().bytes())
            .map(versioning_status)
        {
            Some(status) => status,
            None => return Err(call_error("GetBucketVersioning", e)),
        },
    };
    let encryption = match c.s3.get_bucket_encryption().bucket(b).send().await {
        Ok(out) => out
            .server_side_encryption_configuration()
            .and_then(|c| c.rules().first())
            .and_then(|r| r.apply_server_side_encryption_by_default())
            .map(|d| d.sse_algorithm().as_str().to_string())
            .unwrap_or_default(),
        Err(e) if error_code(&e) == Some("ServerSideEncryptionConfigurationNotFoundError") => String::new(),
        Err(e) => return Err(call_error("GetBucketEncryption", e)),
    };
    let public = match c.s3.get_public_access_block().bucket(b).send().await {
        Ok(out) => {
            let blocked = out.public_access_block_configuration().is_some_and(|p| {
                p.block_public_acls() == Some(true)
                    && p.ignore_public_acls() == Some(true)
                    && p.block_public_policy() == Some(true)
                    && p.restrict_public_buckets() == Some(true)
            });
            if blocked { "all blocked" } else { "partly open" }.to_string()
        }
        Err(e) if error_code(&e) == Some("NoSuchPublicAccessBlockConfiguration") => "open".into(),
        Err(e) => return Err(call_error("GetPublicAccessBlock", e)),
    };
    let lifecycle = match c.s3.get_bucket_lifecycle_configuration().bucket(b).send().await {
        Ok(out) => {
            let mut rules = Vec::new();
            for r in out.rules().iter().filter(|r| r.status().as_str() == "Enabled") {
                if let Some(days) = r.expiration().and_then(|e| e.days()) {
                    let prefix = r.filter().and_then(|f| f.prefix()).unwrap_or("");
                    rules.push(format!("{prefix} after {days} days"));
                }
                if let Some(days) = r.noncurrent_version_expiration().and_then(|e| e.noncurrent_days()) {
                    rules.push(format!("noncurrent versions after {days} days"));
                }
            }
            join_list(rules)
        }
        Err(e) if error_code(&e) == Some("NoSuchLifecycleConfiguration") => String::new(),
        Err(e) => return Err(call_error("GetBucketLifecycleConfiguration", e)),
    };
    let tags = match c.s3.get_bucket_tagging().bucket(b).send().await {
        Ok(out) => {
            tag_list(&out.tag_set().iter().map(|t| (t.key().to_string(), t.value().to_string())).collect())
        }
        Err(e) if error_code(&e) == Some("NoSuchTagSet") => String::new(),
        Err(e) => return Err(call_error("GetBucketTagging", e)),
    };
    let r = Resource::new(Kind::Bucket, b)
        .with("versioning", versioning)
        .with("encryption", encryption)
        .with("public_access", public)
        .with("lifecycle", lifecycle)
        .with("tags", tags);
    o.add(r, b.clone());
    Ok(())
}

/// The `<Status>` of a GetBucketVersioning answer (`Disabled` without one).
fn versioning_status(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    text.split_once("<Status>")
        .and_then(|(_, rest)| rest.split_once("</Status>"))
        .map(|(status, _)| status.trim().to_string())
        .unwrap_or_else(|| "Disabled".into())
}

/// The service's error code (`NoSuchTagSet`, ...), when it sent one.
pub(crate) fn error_code<E, R>(e: &aws_smithy_runtime_api::client::result::SdkError<E, R>) -> Option<&str>
where
    E: aws_smithy_types::error::metadata::ProvideErrorMetadata,
{
    e.as_service_error().and_then(|s| s.code())
}

async fn secrets(c: &Clients, n: &ResourceNames, o: &mut Observed) -> anyhow::Result<()> {
    for name in [&n.credentials_secret, &n.peer_ca_secret, &n.api_tokens_secret, &n.luks_secret] {
        let out = match c.secrets.describe_secret().secret_id(name).send().await {
            Ok(out) => out,
            Err(e) if e.as_service_error().is_some_and(|s| s.is_resource_not_found_exception()) => continue,
            Err(e) => return Err(call_error("DescribeSecret", e)),
        };
        if out.deleted_date().is_some() {
            bail!(
                "secret {name} is scheduled for deletion: restore it (aws secretsmanager restore-secret --secret-id {name}) or wait until it is gone"
            );
        }
        let content = if name == &n.credentials_secret {
            let value = c
                .secrets
                .get_secret_value()
                .secret_id(name)
                .send()
                .await
                .map_err(|e| call_error("GetSecretValue", e))?;
            let keys = credentials::credential_keys(value.secret_string().unwrap_or(""));
            let present: Vec<&str> =
                CREDENTIAL_KEYS.iter().copied().filter(|k| keys.iter().any(|x| x == k)).collect();
            o.credentials_missing_keys = present.len() < CREDENTIAL_KEYS.len();
            format!("generated passwords: {}", join_list(present))
        } else {
            crate::desired::generated_secret_content(n, name).to_string()
        };
        let tags = tag_list(
            &out.tags().iter().filter_map(|t| Some((t.key()?.to_string(), t.value()?.to_string()))).collect(),
        );
        let r = Resource::new(Kind::Secret, name.as_str()).with("content", content).with("tags", tags);
        o.add(r, out.arn().unwrap_or(name));
    }
    Ok(())
}

async fn elb_tags(c: &Clients, arn: &str) -> anyhow::Result<String> {
    let out =
        c.elb.describe_tags().resource_arns(arn).send().await.map_err(|e| call_error("DescribeTags", e))?;
    Ok(tag_list(
        &out.tag_descriptions()
            .iter()
            .flat_map(|d| d.tags())
            .filter_map(|t| Some((t.key()?.to_string(), t.value().unwrap_or("").to_string())))
            .collect(),
    ))
}

async fn target_groups(c: &Clients, n: &ResourceNames, o: &mut Observed) -> anyhow::Result<()> {
    for name in [&n.write_target_group, &n.read_target_group] {
        let out = match c.elb.describe_target_groups().names(name).send().await {
            Ok(out) => out,
            Err(e) if e.as_service_error().is_some_and(|s| s.is_target_group_not_found_exception()) => {
                continue
            }
            Err(e) => return Err(call_error("DescribeTargetGroups", e)),
        };
        let Some(g) = out.target_groups().first() else { continue };
        let arn = g.target_group_arn().unwrap_or("").to_string();
        let attributes = c
            .elb
            .describe_target_group_attributes()
            .target_group_arn(&arn)
            .send()
            .await
            .map_err(|e| call_error("DescribeTargetGroupAttributes", e))?;
        let delay = attributes
            .attributes()
            .iter()
            .find(|a| a.key() == Some("deregistration_delay.timeout_seconds"))
            .and_then(|a| a.value())
            .unwrap_or("300")
            .to_string();
        let protocol = g.health_check_protocol().map(|p| p.as_str().to_string()).unwrap_or_default();
        let check = if protocol == "TCP" {
            format!("TCP {}", g.health_check_port().unwrap_or("traffic-port"))
        } else {
            format!(
                "{protocol} {} {}",
                g.health_check_port().unwrap_or(""),
                g.health_check_path().unwrap_or("")
            )
        };
        let text = |v: Option<i32>| v.map(|v| v.to_string()).unwrap_or_default();
        let r = Resource::new(Kind::TargetGroup, name.as_str())
            .with("protocol", g.protocol().map(|p| p.as_str()).unwrap_or(""))
            .with("port", text(g.port()))
            .with("vpc", g.vpc_id().unwrap_or(""))
            .with("target_type", g.target_type().map(|t| t.as_str()).unwrap_or(""))
            .with("health_check", check)
            .with("health_check_interval_s", text(g.health_check_interval_seconds()))
            .with("health_check_timeout_s", text(g.health_check_timeout_seconds()))
            .with("healthy_threshold", text(g.healthy_threshold_count()))
            .with("unhealthy_threshold", text(g.unhealthy_threshold_count()))
            .with("deregistration_delay_s", delay)
            .with("tags", elb_tags(c, &arn).await?);
        o.add(r, arn);
    }
    Ok(())
}

async fn load_balancer(c: &Clients, n: &ResourceNames, o: &mut Observed) -> anyhow::Result<()> {
    let out = match c.elb.describe_load_balancers().names(&n.load_balancer).send().await {
        Ok(out) => out,
        Err(e) if e.as_service_error().is_some_and(|s| s.is_load_balancer_not_found_exception()) => {
            return Ok(())
        }
        Err(e) => return Err(call_error("DescribeLoadBalancers", e)),
    };
    let Some(lb) = out.load_balancers().first() else { return Ok(()) };
    let arn = lb.load_balancer_arn().unwrap_or("").to_string();
    let groups = lb
        .security_groups()
        .iter()
        .map(|id| o.ids.name_of(Kind::SecurityGroup, id).unwrap_or(id).to_string());
    let r = Resource::new(Kind::LoadBalancer, &n.load_balancer)
        .with("type", lb.r#type().map(|t| t.as_str()).unwrap_or(""))
        .with("scheme", lb.scheme().map(|s| s.as_str()).unwrap_or(""))
        .with("subnets", join_list(lb.availability_zones().iter().filter_map(|z| z.subnet_id())))
        .with("security_groups", join_list(groups.collect::<Vec<_>>()))
        .with("tags", elb_tags(c, &arn).await?);
    o.dns_name = lb.dns_name().map(str::to_string);
    o.add(r, &arn);
    let listeners = c
        .elb
        .describe_listeners()
        .load_balancer_arn(&arn)
        .send()
        .await
        .map_err(|e| call_error("DescribeListeners", e))?;
    for l in listeners.listeners() {
        let Some(port) = l.port() else { continue };
        let group = l
            .default_actions()
            .iter()
            .find_map(|a| a.target_group_arn())
            .map(|arn| o.ids.name_of(Kind::TargetGroup, arn).unwrap_or(arn).to_string())
            .unwrap_or_default();
        let r = Resource::new(Kind::Listener, listener_name(n, port as u16))
            .with("load_balancer", &n.load_balancer)
            .with("port", port.to_string())
            .with("protocol", l.protocol().map(|p| p.as_str()).unwrap_or(""))
            .with("target_group", group);
        o.add(r, l.listener_arn().unwrap_or(""));
    }
    Ok(())
}

async fn launch_template(c: &Clients, n: &ResourceNames, o: &mut Observed) -> anyhow::Result<()> {
    let out = match c.ec2.describe_launch_templates().launch_template_names(&n.launch_template).send().await {
        Ok(out) => out,
        Err(e) if error_code(&e).is_some_and(|c| c.contains("NotFound")) => return Ok(()),
        Err(e) => return Err(call_error("DescribeLaunchTemplates", e)),
    };
    let Some(lt) = out.launch_templates().first() else { return Ok(()) };
    let id = lt.launch_template_id().unwrap_or("").to_string();
    let versions = c
        .ec2
        .describe_launch_template_versions()
        .launch_template_id(&id)
        .versions("$Default")
        .send()
        .await
        .map_err(|e| call_error("DescribeLaunchTemplateVersions", e))?;
    let data = versions.launch_template_versions().first().and_then(|v| v.launch_template_data());
    let mut r = Resource::new(Kind::LaunchTemplate, &n.launch_template).with("tags", ec2_tags(lt.tags()));
    if let Some(d) = data {
        let root = d
            .block_device_mappings()
            .first()
            .map(|b| {
                let ebs = b.ebs();
                format!(
                    "{} {} {} GiB {}",
                    b.device_name().unwrap_or("?"),
                    ebs.and_then(|e| e.volume_type()).map(|t| t.as_str()).unwrap_or("?"),
                    ebs.and_then(|e| e.volume_size()).unwrap_or(0),
                    if ebs.and_then(|e| e.encrypted()) == Some(true) { "encrypted" } else { "unencrypted" }
                )
            })
            .unwrap_or_default();
        let metadata = match d.metadata_options().and_then(|m| m.http_tokens()).map(|t| t.as_str()) {
            Some("required") => "IMDSv2 required",
            _ => "IMDSv1 allowed",
        };
        let interface = d.network_interfaces().first();
        let public_ip = match interface.and_then(|i| i.associate_public_ip_address()) {
            Some(false) => "none",
            _ => "subnet default",
        };
        let groups: Vec<String> = interface
            .map(|i| i.groups().to_vec())
            .filter(|g| !g.is_empty())
            .unwrap_or_else(|| d.security_group_ids().to_vec())
            .iter()
            .map(|id| o.ids.name_of(Kind::SecurityGroup, id).unwrap_or(id).to_string())
            .collect();
        let profile = d
            .iam_instance_profile()
            .and_then(|p| {
                p.name()
                    .map(str::to_string)
                    .or_else(|| p.arn().map(|a| a.rsplit('/').next().unwrap_or(a).to_string()))
            })
            .unwrap_or_default();
        let user_data = d
            .user_data()
            .map(|u| {
                use base64::Engine as _;
                base64::engine::general_purpose::STANDARD
                    .decode(u)
                    .map(|b| String::from_utf8_lossy(&b).into_owned())
                    .unwrap_or_default()
            })
            .unwrap_or_default();
        let instance_tags: BTreeMap<String, String> = d
            .tag_specifications()
            .iter()
            .filter(|t| t.resource_type().is_some_and(|r| r.as_str() == "instance"))
            .flat_map(|t| t.tags())
            .filter_map(|t| Some((t.key()?.to_string(), t.value()?.to_string())))
            .collect();
        r = r
            .with("ami", d.image_id().unwrap_or(""))
            .with("instance_type", d.instance_type().map(|t| t.as_str()).unwrap_or(""))
            .with("root_volume", root)
            .with("metadata", metadata)
            .with("public_ip", public_ip)
            .with("security_groups", join_list(groups))
            .with("instance_profile", profile)
            .with("user_data", user_data)
            .with("instance_tags", tag_list(&instance_tags));
    }
    o.add(r, id);
    Ok(())
}

async fn auto_scaling_group(c: &Clients, n: &ResourceNames, o: &mut Observed) -> anyhow::Result<()> {
    let out = c
        .autoscaling
        .describe_auto_scaling_groups()
        .auto_scaling_group_names(&n.auto_scaling_group)
        .send()
        .await
        .map_err(|e| call_error("DescribeAutoScalingGroups", e))?;
    let Some(g) = out.auto_scaling_groups().first() else { return Ok(()) };
    if g.status().is_some_and(|s| s.contains("Delete")) {
        bail!(
            "auto scaling group {} is being deleted: wait until it is gone, then apply again",
            n.auto_scaling_group
        );
    }
    let template = g
        .launch_template()
        .map(|t| format!("{} {}", t.launch_template_name().unwrap_or("?"), t.version().unwrap_or("$Default")))
        .unwrap_or_default();
    let text = |v: Option<i32>| v.map(|v| v.to_string()).unwrap_or_default();
    let groups =
        g.target_group_arns().iter().map(|a| o.ids.name_of(Kind::TargetGroup, a).unwrap_or(a).to_string());
    let tags = tag_list(
        &g.tags()
            .iter()
            .filter_map(|t| Some((t.key()?.to_string(), t.value().unwrap_or("").to_string())))
            .collect(),
    );
    let r = Resource::new(Kind::AutoScalingGroup, &n.auto_scaling_group)
        .with("launch_template", template)
        .with("min_size", text(g.min_size()))
        .with("max_size", text(g.max_size()))
        .with("desired_capacity", text(g.desired_capacity()))
        .with("subnets", join_list(split_list(&g.vpc_zone_identifier().unwrap_or("").replace(',', ", "))))
        .with("target_groups", join_list(groups.collect::<Vec<_>>()))
        .with(
            "health_check",
            format!(
                "{} {} s grace",
                g.health_check_type().unwrap_or("EC2"),
                g.health_check_grace_period().unwrap_or(0)
            ),
        )
        .with("tags", tags);
    o.add(r, g.auto_scaling_group_arn().unwrap_or(&n.auto_scaling_group));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versioning_status_from_either_root() {
        assert_eq!(
            versioning_status(
                b"<GetBucketVersioningResponse><Status>Enabled</Status></GetBucketVersioningResponse>"
            ),
            "Enabled"
        );
        assert_eq!(versioning_status(b"<VersioningConfiguration/>"), "Disabled");
    }

    #[test]
    fn url_decoding_of_policy_documents() {
        assert_eq!(url_decode("%7B%22a%22%3A%20%22b%2Fc%22%7D"), "{\"a\": \"b/c\"}");
        assert_eq!(policy_text("%7B%22b%22%3A1%2C%22a%22%3A2%7D"), "{\"a\":2,\"b\":1}");
        assert_eq!(url_decode("100%"), "100%");
    }
}
