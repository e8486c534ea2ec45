//! The mutating edge: one function per resource kind to create, update (only the
//! attributes the plan says changed) and delete it, resolving our names to the ids
//! and ARNs AWS wants through [`Ids`].

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use aws_sdk_autoscaling::types::{
    InstanceRefreshStatus, LaunchTemplateSpecification, RefreshPreferences, ScaleInProtectedInstances,
};
use aws_sdk_ec2::types::{
    IpPermission, IpRange, LaunchTemplateBlockDeviceMappingRequest, LaunchTemplateEbsBlockDeviceRequest,
    LaunchTemplateHttpTokensState, LaunchTemplateIamInstanceProfileSpecificationRequest,
    LaunchTemplateInstanceMetadataOptionsRequest, LaunchTemplateInstanceNetworkInterfaceSpecificationRequest,
    LaunchTemplateTagSpecificationRequest, RequestLaunchTemplateData, ResourceType, TagSpecification,
    UserIdGroupPair, VolumeType,
};
use aws_sdk_elasticloadbalancingv2::types::{
    Action as ForwardAction, ActionTypeEnum, LoadBalancerSchemeEnum, LoadBalancerTypeEnum, ProtocolEnum,
    TargetGroupAttribute, TargetTypeEnum,
};

use super::clients::Clients;
use super::observe::{error_code, role_policy_name};
use super::{call_error, Ids};
use crate::credentials;
use crate::desired::{self, Kind, Resource};
use crate::iam_policy;
use crate::spec::{parse_cidr, ClusterSpec, ResourceNames};

/// Changes resources, one call sequence per kind.
pub struct Changer<'a> {
    pub c: &'a Clients,
    pub spec: &'a ClusterSpec,
    pub names: ResourceNames,
    pub ids: Ids,
    /// The launch template's default version before this apply changed it.
    pub previous_template_version: Option<i64>,
}

fn ec2_tags(tags: &BTreeMap<String, String>) -> Vec<aws_sdk_ec2::types::Tag> {
    tags.iter().map(|(k, v)| aws_sdk_ec2::types::Tag::builder().key(k).value(v).build()).collect()
}

fn elb_tags(tags: &BTreeMap<String, String>) -> Vec<aws_sdk_elasticloadbalancingv2::types::Tag> {
    tags.iter()
        .map(|(k, v)| aws_sdk_elasticloadbalancingv2::types::Tag::builder().key(k).value(v).build())
        .collect()
}

fn iam_tags(tags: &BTreeMap<String, String>) -> anyhow::Result<Vec<aws_sdk_iam::types::Tag>> {
    tags.iter().map(|(k, v)| Ok(aws_sdk_iam::types::Tag::builder().key(k).value(v).build()?)).collect()
}

/// Tags to set and tag keys to remove, going from `old` to `new`.
fn tag_delta(old: &str, new: &Resource) -> (BTreeMap<String, String>, Vec<String>) {
    let old = Resource::new(new.kind, "").with("tags", old).tags();
    let new = new.tags();
    let set =
        new.iter().filter(|(k, v)| old.get(*k) != Some(v)).map(|(k, v)| (k.clone(), v.clone())).collect();
    let removed = old.keys().filter(|k| !new.contains_key(*k)).cloned().collect();
    (set, removed)
}

/// One ingress rule (`tcp 3306 from X`, `icmp from X`) as an EC2 permission.
fn permission(rule: &str, ids: &Ids) -> anyhow::Result<IpPermission> {
    let (what, source) = rule.split_once(" from ").with_context(|| format!("bad rule `{rule}`"))?;
    let mut p = IpPermission::builder();
    let ports = |text: &str| -> anyhow::Result<(i32, i32)> {
        let (a, b) = text.split_once('-').unwrap_or((text, text));
        Ok((a.parse()?, b.parse()?))
    };
    p = match what.split_once(' ') {
        _ if what == "icmp" => p.ip_protocol("icmp").from_port(-1).to_port(-1),
        _ if what == "all" => p.ip_protocol("-1"),
        Some((proto, "all")) => p.ip_protocol(proto),
        Some((proto, range)) => {
            let (from, to) = ports(range).with_context(|| format!("bad ports in `{rule}`"))?;
            p.ip_protocol(proto).from_port(from).to_port(to)
        }
        None => bail!("bad rule `{rule}`"),
    };
    p = if parse_cidr(source).is_ok() {
        p.ip_ranges(IpRange::builder().cidr_ip(source).build())
    } else if source.starts_with("sg-") {
        p.user_id_group_pairs(UserIdGroupPair::builder().group_id(source).build())
    } else {
        p.user_id_group_pairs(
            UserIdGroupPair::builder().group_id(ids.need(Kind::SecurityGroup, source)?).build(),
        )
    };
    Ok(p.build())
}

/// Retries `f` while AWS says something still depends on the resource (instances
/// and NLB interfaces take minutes to go away), up to `limit`.
async fn while_in_use<F, Fut>(what: &str, limit: Duration, mut f: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let started = Instant::now();
    loop {
        match f().await {
            Ok(()) => return Ok(()),
            Err(e)
                if ["DependencyViolation", "ResourceInUse"].iter().any(|c| format!("{e:#}").contains(c))
                    && started.elapsed() < limit =>
            {
                tracing::info!("{what} still in use; retrying");
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

impl Changer<'_> {
    pub async fn create(&mut self, r: &Resource) -> anyhow::Result<()> {
        match r.kind {
            Kind::SecurityGroup => self.create_security_group(r).await,
            Kind::Role => self.create_role(r).await,
            Kind::InstanceProfile => self.create_instance_profile(r).await,
            Kind::Table => self.create_table(r).await,
            Kind::Bucket => self.create_bucket(r).await,
            Kind::Secret => self.create_secret(r).await,
            Kind::TargetGroup => self.create_target_group(r).await,
            Kind::LoadBalancer => self.create_load_balancer(r).await,
            Kind::Listener => self.create_listener(r).await,
            Kind::LaunchTemplate => self.create_launch_template(r).await,
            Kind::AutoScalingGroup => self.create_auto_scaling_group(r).await,
        }
    }

    /// Applies the changed attributes `changed` (old values in `old`).
    pub async fn update(&mut self, r: &Resource, old: &BTreeMap<&'static str, String>) -> anyhow::Result<()> {
        let changed: Vec<&str> =
            r.attrs.iter().filter(|(k, v)| old.get(*k) != Some(v)).map(|(k, _)| *k).collect();
        let old_tags = old.get("tags").map(String::as_str).unwrap_or("");
        let tags_changed = changed.contains(&"tags");
        let id = self.ids.need(r.kind, &r.name)?.to_string();
        match r.kind {
            Kind::SecurityGroup => {
                if changed.contains(&"ingress") {
                    let before = desired::split_list(old.get("ingress").map(String::as_str).unwrap_or(""));
                    let after = r.list("ingress");
                    let added: Vec<IpPermission> = after
                        .iter()
                        .filter(|x| !before.contains(x))
                        .map(|x| permission(x, &self.ids))
                        .collect::<anyhow::Result<_>>()?;
                    let removed: Vec<IpPermission> = before
                        .iter()
                        .filter(|x| !after.contains(x))
                        .map(|x| permission(x, &self.ids))
                        .collect::<anyhow::Result<_>>()?;
                    if !added.is_empty() {
                        self.c
                            .ec2
                            .authorize_security_group_ingress()
                            .group_id(&id)
                            .set_ip_permissions(Some(added))
                            .send()
                            .await
                            .map_err(|e| call_error("AuthorizeSecurityGroupIngress", e))?;
                    }
                    if !removed.is_empty() {
                        self.c
                            .ec2
                            .revoke_security_group_ingress()
                            .group_id(&id)
                            .set_ip_permissions(Some(removed))
                            .send()
                            .await
                            .map_err(|e| call_error("RevokeSecurityGroupIngress", e))?;
                    }
                }
                if tags_changed {
                    self.retag(&id, old_tags, r).await?;
                }
            }
            Kind::Role => {
                if changed.contains(&"trust") {
                    self.c
                        .iam
                        .update_assume_role_policy()
                        .role_name(&r.name)
                        .policy_document(iam_policy::ec2_trust_policy())
                        .send()
                        .await
                        .map_err(|e| call_error("UpdateAssumeRolePolicy", e))?;
                }
                if changed.contains(&"policy") {
                    self.put_role_policy(r).await?;
                }
                if tags_changed {
                    self.retag(&id, old_tags, r).await?;
                }
            }
            Kind::InstanceProfile => {
                if changed.contains(&"role") {
                    for role in desired::split_list(old.get("role").map(String::as_str).unwrap_or("")) {
                        self.c
                            .iam
                            .remove_role_from_instance_profile()
                            .instance_profile_name(&r.name)
                            .role_name(role)
                            .send()
                            .await
                            .map_err(|e| call_error("RemoveRoleFromInstanceProfile", e))?;
                    }
                    self.add_role_to_profile(r).await?;
                }
                if tags_changed {
                    self.retag(&id, old_tags, r).await?;
                }
            }
            Kind::Table => {
                if changed.contains(&"billing") {
                    self.c
                        .dynamodb
                        .update_table()
                        .table_name(&r.name)
                        .billing_mode(aws_sdk_dynamodb::types::BillingMode::PayPerRequest)
                        .send()
                        .await
                        .map_err(|e| call_error("UpdateTable", e))?;
                }
                if changed.contains(&"encryption") {
                    self.c
                        .dynamodb
                        .update_table()
                        .table_name(&r.name)
                        .sse_specification(
                            aws_sdk_dynamodb::types::SseSpecification::builder().enabled(true).build(),
                        )
                        .send()
                        .await
                        .map_err(|e| call_error("UpdateTable", e))?;
                }
                if changed.contains(&"ttl") {
                    self.table_ttl(&r.name).await?;
                }
                if changed.contains(&"point_in_time_recovery") {
                    self.table_pitr(&r.name).await?;
                }
                if tags_changed {
                    self.retag(&id, old_tags, r).await?;
                }
            }
            Kind::Bucket => {
                for key in &changed {
                    self.bucket_setting(r, key).await?;
                }
            }
            Kind::Secret => {
                if changed.contains(&"content") && r.name == self.names.credentials_secret {
                    let value = self
                        .c
                        .secrets
                        .get_secret_value()
                        .secret_id(&r.name)
                        .send()
                        .await
                        .map_err(|e| call_error("GetSecretValue", e))?;
                    let merged = credentials::with_missing_keys(value.secret_string().unwrap_or(""))
                        .map_err(|e| anyhow::anyhow!("secret {}: {e}", r.name))?;
                    if let Some(merged) = merged {
                        self.c
                            .secrets
                            .put_secret_value()
                            .secret_id(&r.name)
                            .secret_string(merged)
                            .send()
                            .await
                            .map_err(|e| call_error("PutSecretValue", e))?;
                    }
                }
                if tags_changed {
                    self.retag(&id, old_tags, r).await?;
                }
            }
            Kind::TargetGroup => {
                if changed.iter().any(|k| k.starts_with("health_check") || k.ends_with("threshold")) {
                    let mut m = self.c.elb.modify_target_group().target_group_arn(&id);
                    m = health_check_modify(m, r);
                    m.send().await.map_err(|e| call_error("ModifyTargetGroup", e))?;
                }
                if changed.contains(&"deregistration_delay_s") {
                    self.target_group_delay(&id, r).await?;
                }
                if tags_changed {
                    self.retag(&id, old_tags, r).await?;
                }
            }
            Kind::LoadBalancer => {
                if changed.contains(&"subnets") {
                    self.c
                        .elb
                        .set_subnets()
                        .load_balancer_arn(&id)
                        .set_subnets(Some(r.list("subnets")))
                        .send()
                        .await
                        .map_err(|e| call_error("SetSubnets", e))?;
                }
                if changed.contains(&"security_groups") {
                    let groups = r
                        .list("security_groups")
                        .iter()
                        .map(|g| self.ids.need(Kind::SecurityGroup, g).map(str::to_string))
                        .collect::<anyhow::Result<Vec<_>>>()?;
                    self.c
                        .elb
                        .set_security_groups()
                        .load_balancer_arn(&id)
                        .set_security_groups(Some(groups))
                        .send()
                        .await
                        .map_err(|e| call_error("SetSecurityGroups", e))?;
                }
                if tags_changed {
                    self.retag(&id, old_tags, r).await?;
                }
            }
            Kind::Listener => {
                let group = self.ids.need(Kind::TargetGroup, r.attr("target_group"))?.to_string();
                self.c
                    .elb
                    .modify_listener()
                    .listener_arn(&id)
                    .protocol(ProtocolEnum::Tcp)
                    .default_actions(forward(&group))
                    .send()
                    .await
                    .map_err(|e| call_error("ModifyListener", e))?;
            }
            Kind::LaunchTemplate => {
                if changed.iter().any(|k| *k != "tags") {
                    let current = self
                        .c
                        .ec2
                        .describe_launch_templates()
                        .launch_template_ids(&id)
                        .send()
                        .await
                        .map_err(|e| call_error("DescribeLaunchTemplates", e))?;
                    self.previous_template_version =
                        current.launch_templates().first().and_then(|t| t.default_version_number());
                    let data = self.launch_template_data(r)?;
                    let out = self
                        .c
                        .ec2
                        .create_launch_template_version()
                        .launch_template_id(&id)
                        .launch_template_data(data)
                        .version_description(format!("provisioner: {}", changed.join(", ")))
                        .send()
                        .await
                        .map_err(|e| call_error("CreateLaunchTemplateVersion", e))?;
                    let version = out
                        .launch_template_version()
                        .and_then(|v| v.version_number())
                        .context("CreateLaunchTemplateVersion returned no version")?;
                    self.c
                        .ec2
                        .modify_launch_template()
                        .launch_template_id(&id)
                        .default_version(version.to_string())
                        .send()
                        .await
                        .map_err(|e| call_error("ModifyLaunchTemplate", e))?;
                }
                if tags_changed {
                    self.retag(&id, old_tags, r).await?;
                }
                if changed.contains(&"instance_tags") {
                    // Running nodes get the new tags now; no instance is replaced for a tag.
                    let old_instance = old.get("instance_tags").map(String::as_str).unwrap_or("");
                    let wanted =
                        Resource::new(Kind::LaunchTemplate, "").with("tags", r.attr("instance_tags"));
                    for instance in self.group_instances().await? {
                        self.retag(&instance, old_instance, &wanted).await?;
                    }
                }
            }
            Kind::AutoScalingGroup => {
                if changed.iter().any(|k| {
                    ["launch_template", "min_size", "max_size", "desired_capacity", "subnets", "health_check"]
                        .contains(k)
                }) {
                    let count = self.spec.instance_count as i32;
                    self.c
                        .autoscaling
                        .update_auto_scaling_group()
                        .auto_scaling_group_name(&r.name)
                        .launch_template(self.template_spec())
                        .min_size(count)
                        .max_size(count)
                        .desired_capacity(count)
                        .vpc_zone_identifier(r.list("subnets").join(","))
                        .health_check_type("EC2")
                        .health_check_grace_period(300)
                        .send()
                        .await
                        .map_err(|e| call_error("UpdateAutoScalingGroup", e))?;
                }
                if changed.contains(&"target_groups") {
                    let before =
                        desired::split_list(old.get("target_groups").map(String::as_str).unwrap_or(""));
                    let after = r.list("target_groups");
                    let arns = |names: Vec<&String>| -> anyhow::Result<Vec<String>> {
                        names
                            .into_iter()
                            .map(|n| Ok(self.ids.get(Kind::TargetGroup, n).unwrap_or(n).to_string()))
                            .collect()
                    };
                    let add = arns(after.iter().filter(|g| !before.contains(g)).collect())?;
                    let drop = arns(before.iter().filter(|g| !after.contains(g)).collect())?;
                    if !add.is_empty() {
                        self.c
                            .autoscaling
                            .attach_load_balancer_target_groups()
                            .auto_scaling_group_name(&r.name)
                            .set_target_group_arns(Some(add))
                            .send()
                            .await
                            .map_err(|e| call_error("AttachLoadBalancerTargetGroups", e))?;
                    }
                    if !drop.is_empty() {
                        self.c
                            .autoscaling
                            .detach_load_balancer_target_groups()
                            .auto_scaling_group_name(&r.name)
                            .set_target_group_arns(Some(drop))
                            .send()
                            .await
                            .map_err(|e| call_error("DetachLoadBalancerTargetGroups", e))?;
                    }
                }
                if tags_changed {
                    self.retag(&id, old_tags, r).await?;
                }
            }
        }
        Ok(())
    }

    pub async fn delete(&mut self, r: &Resource) -> anyhow::Result<()> {
        let id = self.ids.need(r.kind, &r.name)?.to_string();
        match r.kind {
            Kind::AutoScalingGroup => {
                self.c
                    .autoscaling
                    .delete_auto_scaling_group()
                    .auto_scaling_group_name(&r.name)
                    .force_delete(true)
                    .send()
                    .await
                    .map_err(|e| call_error("DeleteAutoScalingGroup", e))?;
                self.wait_gone("auto scaling group", &r.name, Duration::from_secs(900), || async {
                    let out = self
                        .c
                        .autoscaling
                        .describe_auto_scaling_groups()
                        .auto_scaling_group_names(&r.name)
                        .send()
                        .await
                        .map_err(|e| call_error("DescribeAutoScalingGroups", e))?;
                    Ok(!out.auto_scaling_groups().is_empty())
                })
                .await?;
            }
            Kind::LaunchTemplate => {
                self.c
                    .ec2
                    .delete_launch_template()
                    .launch_template_id(&id)
                    .send()
                    .await
                    .map_err(|e| call_error("DeleteLaunchTemplate", e))?;
            }
            Kind::Listener => {
                self.c
                    .elb
                    .delete_listener()
                    .listener_arn(&id)
                    .send()
                    .await
                    .map_err(|e| call_error("DeleteListener", e))?;
            }
            Kind::LoadBalancer => {
                self.c
                    .elb
                    .delete_load_balancer()
                    .load_balancer_arn(&id)
                    .send()
                    .await
                    .map_err(|e| call_error("DeleteLoadBalancer", e))?;
                self.wait_gone("load balancer", &r.name, Duration::from_secs(300), || async {
                    match self.c.elb.describe_load_balancers().load_balancer_arns(&id).send().await {
                        Ok(out) => Ok(!out.load_balancers().is_empty()),
                        Err(e)
                            if e.as_service_error()
                                .is_some_and(|s| s.is_load_balancer_not_found_exception()) =>
                        {
                            Ok(false)
                        }
                        Err(e) => Err(call_error("DescribeLoadBalancers", e)),
                    }
                })
                .await?;
            }
            Kind::TargetGroup => {
                while_in_use(&r.name, Duration::from_secs(300), || async {
                    self.c
                        .elb
                        .delete_target_group()
                        .target_group_arn(&id)
                        .send()
                        .await
                        .map(|_| ())
                        .map_err(|e| call_error("DeleteTargetGroup", e))
                })
                .await?;
            }
            Kind::Secret => {
                self.c
                    .secrets
                    .delete_secret()
                    .secret_id(&id)
                    .force_delete_without_recovery(true)
                    .send()
                    .await
                    .map_err(|e| call_error("DeleteSecret", e))?;
            }
            Kind::Bucket => self.empty_and_delete_bucket(&r.name).await?,
            Kind::Table => {
                self.c
                    .dynamodb
                    .delete_table()
                    .table_name(&r.name)
                    .send()
                    .await
                    .map_err(|e| call_error("DeleteTable", e))?;
                self.wait_gone("table", &r.name, Duration::from_secs(300), || async {
                    match self.c.dynamodb.describe_table().table_name(&r.name).send().await {
                        Ok(_) => Ok(true),
                        Err(e)
                            if e.as_service_error().is_some_and(|s| s.is_resource_not_found_exception()) =>
                        {
                            Ok(false)
                        }
                        Err(e) => Err(call_error("DescribeTable", e)),
                    }
                })
                .await?;
            }
            Kind::InstanceProfile => {
                for role in r.list("role") {
                    self.c
                        .iam
                        .remove_role_from_instance_profile()
                        .instance_profile_name(&r.name)
                        .role_name(role)
                        .send()
                        .await
                        .map_err(|e| call_error("RemoveRoleFromInstanceProfile", e))?;
                }
                self.c
                    .iam
                    .delete_instance_profile()
                    .instance_profile_name(&r.name)
                    .send()
                    .await
                    .map_err(|e| call_error("DeleteInstanceProfile", e))?;
            }
            Kind::Role => {
                if !r.attr("policy").is_empty() {
                    self.c
                        .iam
                        .delete_role_policy()
                        .role_name(&r.name)
                        .policy_name(role_policy_name(&self.names))
                        .send()
                        .await
                        .map_err(|e| call_error("DeleteRolePolicy", e))?;
                }
                self.c
                    .iam
                    .delete_role()
                    .role_name(&r.name)
                    .send()
                    .await
                    .map_err(|e| call_error("DeleteRole", e))?;
            }
            Kind::SecurityGroup => {
                while_in_use(&r.name, Duration::from_secs(600), || async {
                    self.c
                        .ec2
                        .delete_security_group()
                        .group_id(&id)
                        .send()
                        .await
                        .map(|_| ())
                        .map_err(|e| call_error("DeleteSecurityGroup", e))
                })
                .await?;
            }
        }
        self.ids.remove(r.kind, &r.name);
        Ok(())
    }

    /// The instance ids in the cluster's Auto Scaling group (none when it does not exist).
    async fn group_instances(&self) -> anyhow::Result<Vec<String>> {
        let out = self
            .c
            .autoscaling
            .describe_auto_scaling_groups()
            .auto_scaling_group_names(&self.names.auto_scaling_group)
            .send()
            .await
            .map_err(|e| call_error("DescribeAutoScalingGroups", e))?;
        Ok(out
            .auto_scaling_groups()
            .iter()
            .flat_map(|g| g.instances())
            .filter_map(|i| i.instance_id().map(str::to_string))
            .collect())
    }

    /// Makes the launch template's previous version the default again (an instance
    /// refresh could not start: the next apply sees the change and tries again).
    pub async fn restore_template_version(&self) -> anyhow::Result<Option<i64>> {
        let (Some(version), Some(id)) =
            (self.previous_template_version, self.ids.get(Kind::LaunchTemplate, &self.names.launch_template))
        else {
            return Ok(None);
        };
        self.c
            .ec2
            .modify_launch_template()
            .launch_template_id(id)
            .default_version(version.to_string())
            .send()
            .await
            .map_err(|e| call_error("ModifyLaunchTemplate", e))?;
        Ok(Some(version))
    }

    /// Removes a group's ingress rules (before the groups are deleted, so that rules
    /// naming one of them do not hold the other back).
    pub async fn revoke_ingress(&self, r: &Resource) -> anyhow::Result<()> {
        let rules = r.list("ingress");
        if rules.is_empty() {
            return Ok(());
        }
        let id = self.ids.need(Kind::SecurityGroup, &r.name)?;
        let permissions =
            rules.iter().map(|x| permission(x, &self.ids)).collect::<anyhow::Result<Vec<_>>>()?;
        self.c
            .ec2
            .revoke_security_group_ingress()
            .group_id(id)
            .set_ip_permissions(Some(permissions))
            .send()
            .await
            .map_err(|e| call_error("RevokeSecurityGroupIngress", e))?;
        Ok(())
    }

    async fn wait_gone<F, Fut>(
        &self,
        what: &str,
        name: &str,
        limit: Duration,
        mut exists: F,
    ) -> anyhow::Result<()>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = anyhow::Result<bool>>,
    {
        let started = Instant::now();
        while exists().await? {
            if started.elapsed() > limit {
                bail!("{what} {name} still exists after {} s", limit.as_secs());
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
        Ok(())
    }

    /// Sets the tags `r` has and `old` lacks, removes those `old` has and `r` lacks,
    /// with the tagging calls of the resource's service (`id`: its id or ARN).
    async fn retag(&self, id: &str, old: &str, r: &Resource) -> anyhow::Result<()> {
        let (set, removed) = tag_delta(old, r);
        match r.kind {
            Kind::SecurityGroup | Kind::LaunchTemplate => {
                if !set.is_empty() {
                    self.c
                        .ec2
                        .create_tags()
                        .resources(id)
                        .set_tags(Some(ec2_tags(&set)))
                        .send()
                        .await
                        .map_err(|e| call_error("CreateTags", e))?;
                }
                if !removed.is_empty() {
                    let gone =
                        removed.iter().map(|k| aws_sdk_ec2::types::Tag::builder().key(k).build()).collect();
                    self.c
                        .ec2
                        .delete_tags()
                        .resources(id)
                        .set_tags(Some(gone))
                        .send()
                        .await
                        .map_err(|e| call_error("DeleteTags", e))?;
                }
            }
            Kind::TargetGroup | Kind::LoadBalancer | Kind::Listener => {
                if !set.is_empty() {
                    self.c
                        .elb
                        .add_tags()
                        .resource_arns(id)
                        .set_tags(Some(elb_tags(&set)))
                        .send()
                        .await
                        .map_err(|e| call_error("AddTags", e))?;
                }
                if !removed.is_empty() {
                    self.c
                        .elb
                        .remove_tags()
                        .resource_arns(id)
                        .set_tag_keys(Some(removed))
                        .send()
                        .await
                        .map_err(|e| call_error("RemoveTags", e))?;
                }
            }
            Kind::Role => {
                if !set.is_empty() {
                    self.c
                        .iam
                        .tag_role()
                        .role_name(&r.name)
                        .set_tags(Some(iam_tags(&set)?))
                        .send()
                        .await
                        .map_err(|e| call_error("TagRole", e))?;
                }
                if !removed.is_empty() {
                    self.c
                        .iam
                        .untag_role()
                        .role_name(&r.name)
                        .set_tag_keys(Some(removed))
                        .send()
                        .await
                        .map_err(|e| call_error("UntagRole", e))?;
                }
            }
            Kind::InstanceProfile => {
                if !set.is_empty() {
                    self.c
                        .iam
                        .tag_instance_profile()
                        .instance_profile_name(&r.name)
                        .set_tags(Some(iam_tags(&set)?))
                        .send()
                        .await
                        .map_err(|e| call_error("TagInstanceProfile", e))?;
                }
                if !removed.is_empty() {
                    self.c
                        .iam
                        .untag_instance_profile()
                        .instance_profile_name(&r.name)
                        .set_tag_keys(Some(removed))
                        .send()
                        .await
                        .map_err(|e| call_error("UntagInstanceProfile", e))?;
                }
            }
            Kind::Table => {
                if !set.is_empty() {
                    self.c
                        .dynamodb
                        .tag_resource()
                        .resource_arn(id)
                        .set_tags(Some(dynamo_tags(&set)?))
                        .send()
                        .await
                        .map_err(|e| call_error("TagResource", e))?;
                }
                if !removed.is_empty() {
                    self.c
                        .dynamodb
                        .untag_resource()
                        .resource_arn(id)
                        .set_tag_keys(Some(removed))
                        .send()
                        .await
                        .map_err(|e| call_error("UntagResource", e))?;
                }
            }
            Kind::Secret => {
                if !set.is_empty() {
                    self.c
                        .secrets
                        .tag_resource()
                        .secret_id(id)
                        .set_tags(Some(secret_tags(&set)))
                        .send()
                        .await
                        .map_err(|e| call_error("TagResource", e))?;
                }
                if !removed.is_empty() {
                    self.c
                        .secrets
                        .untag_resource()
                        .secret_id(id)
                        .set_tag_keys(Some(removed))
                        .send()
                        .await
                        .map_err(|e| call_error("UntagResource", e))?;
                }
            }
            Kind::AutoScalingGroup => {
                if !set.is_empty() {
                    self.c
                        .autoscaling
                        .create_or_update_tags()
                        .set_tags(Some(asg_tags(&r.name, &set)?))
                        .send()
                        .await
                        .map_err(|e| call_error("CreateOrUpdateTags", e))?;
                }
                if !removed.is_empty() {
                    let gone = removed
                        .iter()
                        .map(|k| asg_tag(&r.name, k, ""))
                        .collect::<anyhow::Result<Vec<_>>>()?;
                    self.c
                        .autoscaling
                        .delete_tags()
                        .set_tags(Some(gone))
                        .send()
                        .await
                        .map_err(|e| call_error("DeleteTags", e))?;
                }
            }
            Kind::Bucket => bail!("bucket {}: tags are set with the bucket's settings", r.name),
        }
        Ok(())
    }

    async fn create_security_group(&mut self, r: &Resource) -> anyhow::Result<()> {
        let out = self
            .c
            .ec2
            .create_security_group()
            .group_name(&r.name)
            .description(r.attr("description"))
            .vpc_id(r.attr("vpc"))
            .tag_specifications(
                TagSpecification::builder()
                    .resource_type(ResourceType::SecurityGroup)
                    .set_tags(Some(ec2_tags(&r.tags())))
                    .build(),
            )
            .send()
            .await
            .map_err(|e| call_error("CreateSecurityGroup", e))?;
        let id = out.group_id().context("CreateSecurityGroup returned no id")?;
        self.ids.insert(Kind::SecurityGroup, &r.name, id);
        let permissions =
            r.list("ingress").iter().map(|x| permission(x, &self.ids)).collect::<anyhow::Result<Vec<_>>>()?;
        if !permissions.is_empty() {
            self.c
                .ec2
                .authorize_security_group_ingress()
                .group_id(id)
                .set_ip_permissions(Some(permissions))
                .send()
                .await
                .map_err(|e| call_error("AuthorizeSecurityGroupIngress", e))?;
        }
        Ok(())
    }

    async fn put_role_policy(&self, r: &Resource) -> anyhow::Result<()> {
        self.c
            .iam
            .put_role_policy()
            .role_name(&r.name)
            .policy_name(role_policy_name(&self.names))
            .policy_document(r.attr("policy"))
            .send()
            .await
            .map_err(|e| call_error("PutRolePolicy", e))?;
        Ok(())
    }

    async fn create_role(&mut self, r: &Resource) -> anyhow::Result<()> {
        let out = self
            .c
            .iam
            .create_role()
            .role_name(&r.name)
            .description(format!(
                "{} database nodes (orchestrator, bootstrap, backups)",
                self.spec.cluster_id
            ))
            .assume_role_policy_document(iam_policy::ec2_trust_policy())
            .set_tags(Some(iam_tags(&r.tags())?))
            .send()
            .await
            .map_err(|e| call_error("CreateRole", e))?;
        self.ids.insert(Kind::Role, &r.name, out.role().map(|x| x.arn()).unwrap_or(&r.name));
        self.put_role_policy(r).await
    }

    async fn add_role_to_profile(&self, r: &Resource) -> anyhow::Result<()> {
        self.c
            .iam
            .add_role_to_instance_profile()
            .instance_profile_name(&r.name)
            .role_name(r.attr("role"))
            .send()
            .await
            .map_err(|e| call_error("AddRoleToInstanceProfile", e))?;
        Ok(())
    }

    async fn create_instance_profile(&mut self, r: &Resource) -> anyhow::Result<()> {
        let out = self
            .c
            .iam
            .create_instance_profile()
            .instance_profile_name(&r.name)
            .set_tags(Some(iam_tags(&r.tags())?))
            .send()
            .await
            .map_err(|e| call_error("CreateInstanceProfile", e))?;
        self.ids.insert(
            Kind::InstanceProfile,
            &r.name,
            out.instance_profile().map(|p| p.arn()).unwrap_or(&r.name),
        );
        self.add_role_to_profile(r).await
    }

    async fn table_ttl(&self, table: &str) -> anyhow::Result<()> {
        self.c
            .dynamodb
            .update_time_to_live()
            .table_name(table)
            .time_to_live_specification(
                aws_sdk_dynamodb::types::TimeToLiveSpecification::builder()
                    .attribute_name("expires_at")
                    .enabled(true)
                    .build()?,
            )
            .send()
            .await
            .map_err(|e| call_error("UpdateTimeToLive", e))?;
        Ok(())
    }

    async fn table_pitr(&self, table: &str) -> anyhow::Result<()> {
        self.c
            .dynamodb
            .update_continuous_backups()
            .table_name(table)
            .point_in_time_recovery_specification(
                aws_sdk_dynamodb::types::PointInTimeRecoverySpecification::builder()
                    .point_in_time_recovery_enabled(true)
                    .build()?,
            )
            .send()
            .await
            .map_err(|e| call_error("UpdateContinuousBackups", e))?;
        Ok(())
    }

    async fn create_table(&mut self, r: &Resource) -> anyhow::Result<()> {
        use aws_sdk_dynamodb::types::{
            AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType,
            SseSpecification,
        };
        let out = self
            .c
            .dynamodb
            .create_table()
            .table_name(&r.name)
            .billing_mode(BillingMode::PayPerRequest)
            .key_schema(KeySchemaElement::builder().attribute_name("pk").key_type(KeyType::Hash).build()?)
            .attribute_definitions(
                AttributeDefinition::builder()
                    .attribute_name("pk")
                    .attribute_type(ScalarAttributeType::S)
                    .build()?,
            )
            .sse_specification(SseSpecification::builder().enabled(true).build())
            .set_tags(Some(dynamo_tags(&r.tags())?))
            .send()
            .await
            .map_err(|e| call_error("CreateTable", e))?;
        let arn = out.table_description().and_then(|t| t.table_arn()).unwrap_or(&r.name).to_string();
        self.ids.insert(Kind::Table, &r.name, &arn);
        // TTL and backups need the table ACTIVE.
        let started = Instant::now();
        loop {
            let t = self
                .c
                .dynamodb
                .describe_table()
                .table_name(&r.name)
                .send()
                .await
                .map_err(|e| call_error("DescribeTable", e))?;
            if t.table().and_then(|t| t.table_status()).is_some_and(|s| s.as_str() == "ACTIVE") {
                break;
            }
            if started.elapsed() > Duration::from_secs(300) {
                bail!("table {} not ACTIVE after 300 s", r.name);
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
        self.table_ttl(&r.name).await?;
        self.table_pitr(&r.name).await
    }

    async fn bucket_setting(&self, r: &Resource, key: &str) -> anyhow::Result<()> {
        use aws_sdk_s3::types::{
            BucketLifecycleConfiguration, BucketVersioningStatus, ExpirationStatus, LifecycleExpiration,
            LifecycleRule, LifecycleRuleFilter, NoncurrentVersionExpiration, PublicAccessBlockConfiguration,
            ServerSideEncryption, ServerSideEncryptionByDefault, ServerSideEncryptionConfiguration,
            ServerSideEncryptionRule, Tagging, VersioningConfiguration,
        };
        let b = &r.name;
        let s3 = &self.c.s3;
        match key {
            "versioning" => {
                s3.put_bucket_versioning()
                    .bucket(b)
                    .versioning_configuration(
                        VersioningConfiguration::builder().status(BucketVersioningStatus::Enabled).build(),
                    )
                    .send()
                    .await
                    .map_err(|e| call_error("PutBucketVersioning", e))?;
            }
            "encryption" => {
                let rule = ServerSideEncryptionRule::builder()
                    .apply_server_side_encryption_by_default(
                        ServerSideEncryptionByDefault::builder()
                            .sse_algorithm(ServerSideEncryption::Aes256)
                            .build()?,
                    )
                    .build();
                s3.put_bucket_encryption()
                    .bucket(b)
                    .server_side_encryption_configuration(
                        ServerSideEncryptionConfiguration::builder().rules(rule).build()?,
                    )
                    .send()
                    .await
                    .map_err(|e| call_error("PutBucketEncryption", e))?;
            }
            "public_access" => {
                s3.put_public_access_block()
                    .bucket(b)
                    .public_access_block_configuration(
                        PublicAccessBlockConfiguration::builder()
                            .block_public_acls(true)
                            .ignore_public_acls(true)
                            .block_public_policy(true)
                            .restrict_public_buckets(true)
                            .build(),
                    )
                    .send()
                    .await
                    .map_err(|e| call_error("PutPublicAccessBlock", e))?;
            }
            "lifecycle" => {
                let mut rules = Vec::new();
                for (id, prefix, days) in desired::lifecycle_rules(self.spec) {
                    rules.push(
                        LifecycleRule::builder()
                            .id(id)
                            .status(ExpirationStatus::Enabled)
                            .filter(LifecycleRuleFilter::builder().prefix(prefix).build())
                            .expiration(LifecycleExpiration::builder().days(days as i32).build())
                            .build()?,
                    );
                }
                rules.push(
                    LifecycleRule::builder()
                        .id("expire-noncurrent-versions")
                        .status(ExpirationStatus::Enabled)
                        .filter(LifecycleRuleFilter::builder().prefix("").build())
                        .noncurrent_version_expiration(
                            NoncurrentVersionExpiration::builder()
                                .noncurrent_days(desired::NONCURRENT_VERSION_DAYS as i32)
                                .build(),
                        )
                        .build()?,
                );
                s3.put_bucket_lifecycle_configuration()
                    .bucket(b)
                    .lifecycle_configuration(
                        BucketLifecycleConfiguration::builder().set_rules(Some(rules)).build()?,
                    )
                    .send()
                    .await
                    .map_err(|e| call_error("PutBucketLifecycleConfiguration", e))?;
            }
            "tags" => {
                let tags = r
                    .tags()
                    .iter()
                    .map(|(k, v)| Ok(aws_sdk_s3::types::Tag::builder().key(k).value(v).build()?))
                    .collect::<anyhow::Result<Vec<_>>>()?;
                s3.put_bucket_tagging()
                    .bucket(b)
                    .tagging(Tagging::builder().set_tag_set(Some(tags)).build()?)
                    .send()
                    .await
                    .map_err(|e| call_error("PutBucketTagging", e))?;
            }
            other => bail!("bucket {b}: no way to change {other}"),
        }
        Ok(())
    }

    async fn create_bucket(&mut self, r: &Resource) -> anyhow::Result<()> {
        let mut req = self.c.s3.create_bucket().bucket(&r.name);
        if !self.c.region.is_empty() && self.c.region != "us-east-1" {
            req = req.create_bucket_configuration(
                aws_sdk_s3::types::CreateBucketConfiguration::builder()
                    .location_constraint(aws_sdk_s3::types::BucketLocationConstraint::from(
                        self.c.region.as_str(),
                    ))
                    .build(),
            );
        }
        match req.send().await {
            Ok(_) => {}
            Err(e) if error_code(&e) == Some("BucketAlreadyExists") => {
                bail!("S3 bucket {} belongs to another account (bucket names are global): pick another cluster_id", r.name)
            }
            Err(e) => return Err(call_error("CreateBucket", e)),
        }
        self.ids.insert(Kind::Bucket, &r.name, &r.name);
        for key in ["public_access", "versioning", "encryption", "lifecycle", "tags"] {
            self.bucket_setting(r, key).await?;
        }
        Ok(())
    }

    async fn empty_and_delete_bucket(&self, bucket: &str) -> anyhow::Result<()> {
        use aws_sdk_s3::types::{Delete, ObjectIdentifier};
        loop {
            let page = self
                .c
                .s3
                .list_object_versions()
                .bucket(bucket)
                .max_keys(1000)
                .send()
                .await
                .map_err(|e| call_error("ListObjectVersions", e))?;
            let mut objects = Vec::new();
            for v in page.versions() {
                objects.push(
                    ObjectIdentifier::builder()
                        .key(v.key().unwrap_or(""))
                        .set_version_id(v.version_id().map(str::to_string))
                        .build()?,
                );
            }
            for m in page.delete_markers() {
                objects.push(
                    ObjectIdentifier::builder()
                        .key(m.key().unwrap_or(""))
                        .set_version_id(m.version_id().map(str::to_string))
                        .build()?,
                );
            }
            if objects.is_empty() {
                break;
            }
            let deleted = self
                .c
                .s3
                .delete_objects()
                .bucket(bucket)
                .delete(Delete::builder().set_objects(Some(objects)).quiet(true).build()?)
                .send()
                .await
                .map_err(|e| call_error("DeleteObjects", e))?;
            if let Some(e) = deleted.errors().first() {
                bail!(
                    "bucket {bucket}: cannot delete {} ({}): {}",
                    e.key().unwrap_or("?"),
                    e.code().unwrap_or("?"),
                    e.message().unwrap_or("")
                );
            }
        }
        self.c.s3.delete_bucket().bucket(bucket).send().await.map_err(|e| call_error("DeleteBucket", e))?;
        Ok(())
    }

    async fn create_secret(&mut self, r: &Resource) -> anyhow::Result<()> {
        let (value, description) = if r.name == self.names.credentials_secret {
            (
                credentials::new_credentials(),
                "MySQL passwords of the cluster's accounts (generated once, kept on every apply)",
            )
        } else if r.name == self.names.peer_ca_secret {
            (
                credentials::new_peer_ca(&self.names.cluster_id)?,
                "The CA that signs the orchestrator peers' certificates (mutual TLS on port 10008)",
            )
        } else if r.name == self.names.api_tokens_secret {
            (
                credentials::new_api_tokens(),
                "API tokens of the orchestrator peers (auth.tokens_secret); `admin` is the operators' first token",
            )
        } else {
            (
                credentials::generate_password(credentials::PASSPHRASE_LEN),
                "LUKS passphrase of the nodes' instance store",
            )
        };
        let out = self
            .c
            .secrets
            .create_secret()
            .name(&r.name)
            .description(description)
            .secret_string(value)
            .set_tags(Some(secret_tags(&r.tags())))
            .send()
            .await
            .map_err(|e| call_error("CreateSecret", e))?;
        self.ids.insert(Kind::Secret, &r.name, out.arn().unwrap_or(&r.name));
        Ok(())
    }

    async fn target_group_delay(&self, arn: &str, r: &Resource) -> anyhow::Result<()> {
        self.c
            .elb
            .modify_target_group_attributes()
            .target_group_arn(arn)
            .attributes(
                TargetGroupAttribute::builder()
                    .key("deregistration_delay.timeout_seconds")
                    .value(r.attr("deregistration_delay_s"))
                    .build(),
            )
            .send()
            .await
            .map_err(|e| call_error("ModifyTargetGroupAttributes", e))?;
        Ok(())
    }

    async fn create_target_group(&mut self, r: &Resource) -> anyhow::Result<()> {
        let mut req = self
            .c
            .elb
            .create_target_group()
            .name(&r.name)
            .protocol(ProtocolEnum::Tcp)
            .port(3306)
            .vpc_id(r.attr("vpc"))
            .target_type(TargetTypeEnum::Instance)
            .set_tags(Some(elb_tags(&r.tags())));
        let (protocol, port, path) = health_check_parts(r);
        req = req
            .health_check_protocol(protocol)
            .health_check_port(port)
            .set_health_check_path(path)
            .health_check_interval_seconds(num(r, "health_check_interval_s"))
            .health_check_timeout_seconds(num(r, "health_check_timeout_s"))
            .healthy_threshold_count(num(r, "healthy_threshold"))
            .unhealthy_threshold_count(num(r, "unhealthy_threshold"));
        let out = req.send().await.map_err(|e| call_error("CreateTargetGroup", e))?;
        let arn = out
            .target_groups()
            .first()
            .and_then(|g| g.target_group_arn())
            .context("CreateTargetGroup returned no ARN")?;
        self.ids.insert(Kind::TargetGroup, &r.name, arn);
        self.target_group_delay(arn, r).await
    }

    async fn create_load_balancer(&mut self, r: &Resource) -> anyhow::Result<()> {
        let groups = r
            .list("security_groups")
            .iter()
            .map(|g| self.ids.need(Kind::SecurityGroup, g).map(str::to_string))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let out = self
            .c
            .elb
            .create_load_balancer()
            .name(&r.name)
            .r#type(LoadBalancerTypeEnum::Network)
            .scheme(LoadBalancerSchemeEnum::Internal)
            .set_subnets(Some(r.list("subnets")))
            .set_security_groups(Some(groups))
            .set_tags(Some(elb_tags(&r.tags())))
            .send()
            .await
            .map_err(|e| call_error("CreateLoadBalancer", e))?;
        let arn = out
            .load_balancers()
            .first()
            .and_then(|l| l.load_balancer_arn())
            .context("CreateLoadBalancer returned no ARN")?;
        self.ids.insert(Kind::LoadBalancer, &r.name, arn);
        Ok(())
    }

    async fn create_listener(&mut self, r: &Resource) -> anyhow::Result<()> {
        let lb = self.ids.need(Kind::LoadBalancer, r.attr("load_balancer"))?.to_string();
        let group = self.ids.need(Kind::TargetGroup, r.attr("target_group"))?.to_string();
        let out = self
            .c
            .elb
            .create_listener()
            .load_balancer_arn(lb)
            .protocol(ProtocolEnum::Tcp)
            .port(num(r, "port"))
            .default_actions(forward(&group))
            .send()
            .await
            .map_err(|e| call_error("CreateListener", e))?;
        let arn = out
            .listeners()
            .first()
            .and_then(|l| l.listener_arn())
            .context("CreateListener returned no ARN")?;
        self.ids.insert(Kind::Listener, &r.name, arn);
        Ok(())
    }

    fn launch_template_data(&self, r: &Resource) -> anyhow::Result<RequestLaunchTemplateData> {
        use base64::Engine as _;
        let group = self.ids.need(Kind::SecurityGroup, r.attr("security_groups"))?.to_string();
        let instance_tags = Resource::new(r.kind, "").with("tags", r.attr("instance_tags")).tags();
        let device = r.attr("root_volume").split(' ').next().unwrap_or("/dev/xvda").to_string();
        Ok(RequestLaunchTemplateData::builder()
            .image_id(r.attr("ami"))
            .instance_type(aws_sdk_ec2::types::InstanceType::from(r.attr("instance_type")))
            .block_device_mappings(
                LaunchTemplateBlockDeviceMappingRequest::builder()
                    .device_name(device)
                    .ebs(
                        LaunchTemplateEbsBlockDeviceRequest::builder()
                            .volume_type(VolumeType::Gp3)
                            .volume_size(self.spec.root_volume_gb as i32)
                            .encrypted(true)
                            .delete_on_termination(true)
                            .build(),
                    )
                    .build(),
            )
            .metadata_options(
                LaunchTemplateInstanceMetadataOptionsRequest::builder()
                    .http_tokens(LaunchTemplateHttpTokensState::Required)
                    // The bootstrap reads the node's facts from its tags through IMDS.
                    .instance_metadata_tags(
                        aws_sdk_ec2::types::LaunchTemplateInstanceMetadataTagsState::Enabled,
                    )
                    .http_put_response_hop_limit(1)
                    .build(),
            )
            .network_interfaces(
                LaunchTemplateInstanceNetworkInterfaceSpecificationRequest::builder()
                    .device_index(0)
                    .associate_public_ip_address(false)
                    .delete_on_termination(true)
                    .groups(group)
                    .build(),
            )
            .iam_instance_profile(
                LaunchTemplateIamInstanceProfileSpecificationRequest::builder()
                    .name(r.attr("instance_profile"))
                    .build(),
            )
            .user_data(base64::engine::general_purpose::STANDARD.encode(r.attr("user_data")))
            .tag_specifications(
                LaunchTemplateTagSpecificationRequest::builder()
                    .resource_type(ResourceType::Instance)
                    .set_tags(Some(ec2_tags(&instance_tags)))
                    .build(),
            )
            .tag_specifications(
                LaunchTemplateTagSpecificationRequest::builder()
                    .resource_type(ResourceType::Volume)
                    .set_tags(Some(ec2_tags(&r.tags())))
                    .build(),
            )
            .build())
    }

    async fn create_launch_template(&mut self, r: &Resource) -> anyhow::Result<()> {
        let data = self.launch_template_data(r)?;
        let out = self
            .c
            .ec2
            .create_launch_template()
            .launch_template_name(&r.name)
            .launch_template_data(data)
            .tag_specifications(
                TagSpecification::builder()
                    .resource_type(ResourceType::LaunchTemplate)
                    .set_tags(Some(ec2_tags(&r.tags())))
                    .build(),
            )
            .send()
            .await
            .map_err(|e| call_error("CreateLaunchTemplate", e))?;
        let id = out
            .launch_template()
            .and_then(|t| t.launch_template_id())
            .context("CreateLaunchTemplate returned no id")?;
        self.ids.insert(Kind::LaunchTemplate, &r.name, id);
        Ok(())
    }

    fn template_spec(&self) -> LaunchTemplateSpecification {
        LaunchTemplateSpecification::builder()
            .launch_template_name(&self.names.launch_template)
            .version("$Default")
            .build()
    }

    async fn create_auto_scaling_group(&mut self, r: &Resource) -> anyhow::Result<()> {
        let count = self.spec.instance_count as i32;
        let groups = r
            .list("target_groups")
            .iter()
            .map(|g| self.ids.need(Kind::TargetGroup, g).map(str::to_string))
            .collect::<anyhow::Result<Vec<_>>>()?;
        self.c
            .autoscaling
            .create_auto_scaling_group()
            .auto_scaling_group_name(&r.name)
            .launch_template(self.template_spec())
            .min_size(count)
            .max_size(count)
            .desired_capacity(count)
            .vpc_zone_identifier(r.list("subnets").join(","))
            .set_target_group_arns(Some(groups))
            .health_check_type("EC2")
            .health_check_grace_period(300)
            .new_instances_protected_from_scale_in(false)
            .set_tags(Some(asg_tags(&r.name, &r.tags())?))
            .send()
            .await
            .map_err(|e| call_error("CreateAutoScalingGroup", e))?;
        self.ids.insert(Kind::AutoScalingGroup, &r.name, &r.name);
        Ok(())
    }

    /// Starts replacing the group's instances with the new launch template version,
    /// one at a time, never below `count - 1` healthy, waiting for the master's
    /// scale-in protection to move (a switchover) before replacing it. A refresh still
    /// running from an earlier apply is cancelled first.
    pub async fn start_instance_refresh(&self) -> anyhow::Result<RefreshOutcome> {
        let asg = &self.names.auto_scaling_group;
        let running = match self
            .c
            .autoscaling
            .describe_instance_refreshes()
            .auto_scaling_group_name(asg)
            .send()
            .await
        {
            Ok(out) => out.instance_refreshes().iter().any(|r| r.status().is_some_and(refresh_running)),
            Err(e) if unsupported(&e) => return Ok(RefreshOutcome::Unsupported("DescribeInstanceRefreshes")),
            Err(e) => return Err(call_error("DescribeInstanceRefreshes", e)),
        };
        if running {
            self.cancel_instance_refresh().await?;
            // Cancelling takes a while; a new refresh is refused until it is over.
            self.wait_gone("instance refresh of", asg, Duration::from_secs(600), || async {
                let out = self
                    .c
                    .autoscaling
                    .describe_instance_refreshes()
                    .auto_scaling_group_name(asg)
                    .send()
                    .await
                    .map_err(|e| call_error("DescribeInstanceRefreshes", e))?;
                Ok(out.instance_refreshes().iter().any(|r| r.status().is_some_and(refresh_running)))
            })
            .await?;
        }
        let count = self.spec.instance_count;
        let min_healthy = ((count - 1) * 100 / count) as i32;
        let result = self
            .c
            .autoscaling
            .start_instance_refresh()
            .auto_scaling_group_name(asg)
            .preferences(
                RefreshPreferences::builder()
                    .min_healthy_percentage(min_healthy)
                    .instance_warmup(300)
                    .skip_matching(true)
                    .scale_in_protected_instances(ScaleInProtectedInstances::Wait)
                    .build(),
            )
            .send()
            .await;
        match result {
            Ok(out) => Ok(RefreshOutcome::Started(out.instance_refresh_id().unwrap_or("?").to_string())),
            Err(e) if unsupported(&e) => Ok(RefreshOutcome::Unsupported("StartInstanceRefresh")),
            Err(e) => Err(call_error("StartInstanceRefresh", e)),
        }
    }

    /// Cancels a refresh this apply started (a later step failed).
    pub async fn cancel_instance_refresh(&self) -> anyhow::Result<()> {
        self.c
            .autoscaling
            .cancel_instance_refresh()
            .auto_scaling_group_name(&self.names.auto_scaling_group)
            .send()
            .await
            .map_err(|e| call_error("CancelInstanceRefresh", e))?;
        Ok(())
    }
}

/// A refresh in one of these states blocks a new one.
fn refresh_running(status: &InstanceRefreshStatus) -> bool {
    matches!(
        status,
        InstanceRefreshStatus::Pending
            | InstanceRefreshStatus::InProgress
            | InstanceRefreshStatus::Cancelling
            | InstanceRefreshStatus::RollbackInProgress
            | InstanceRefreshStatus::Baking
    )
}

/// What became of the instance refresh a launch template change asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefreshOutcome {
    Started(String),
    /// The endpoint does not implement the call (moto): said in one line.
    Unsupported(&'static str),
}

/// The endpoint answered that it does not implement the operation.
fn unsupported<E>(
    e: &aws_smithy_runtime_api::client::result::SdkError<E, aws_smithy_runtime_api::http::Response>,
) -> bool
where
    E: aws_smithy_types::error::metadata::ProvideErrorMetadata,
{
    let code = error_code(e).unwrap_or("");
    if ["NotImplemented", "InvalidAction", "UnknownOperationException", "InvalidActionException"]
        .contains(&code)
    {
        return true;
    }
    // moto answers an action it lacks with Werkzeug's HTML 500 page (AWS's APIs answer
    // errors in XML or JSON, never HTML), other emulators with a 404 or 501.
    e.raw_response().is_some_and(|r| {
        let html = r.headers().get("content-type").is_some_and(|t| t.starts_with("text/html"));
        matches!(r.status().as_u16(), 404 | 501) || (r.status().as_u16() == 500 && html)
    })
}

fn num(r: &Resource, key: &str) -> i32 {
    r.attr(key).parse().unwrap_or(0)
}

fn health_check_parts(r: &Resource) -> (ProtocolEnum, String, Option<String>) {
    let check = r.attr("health_check");
    let mut parts = check.splitn(3, ' ');
    match (parts.next(), parts.next(), parts.next()) {
        (Some("HTTP"), Some(port), Some(path)) => {
            (ProtocolEnum::Http, port.to_string(), Some(path.to_string()))
        }
        _ => (ProtocolEnum::Tcp, "traffic-port".to_string(), None),
    }
}

fn health_check_modify(
    m: aws_sdk_elasticloadbalancingv2::operation::modify_target_group::builders::ModifyTargetGroupFluentBuilder,
    r: &Resource,
) -> aws_sdk_elasticloadbalancingv2::operation::modify_target_group::builders::ModifyTargetGroupFluentBuilder
{
    let (protocol, port, path) = health_check_parts(r);
    m.health_check_protocol(protocol)
        .health_check_port(port)
        .set_health_check_path(path)
        .health_check_interval_seconds(num(r, "health_check_interval_s"))
        .health_check_timeout_seconds(num(r, "health_check_timeout_s"))
        .healthy_threshold_count(num(r, "healthy_threshold"))
        .unhealthy_threshold_count(num(r, "unhealthy_threshold"))
}

fn forward(group_arn: &str) -> ForwardAction {
    ForwardAction::builder().r#type(ActionTypeEnum::Forward).target_group_arn(group_arn).build()
}

fn dynamo_tags(tags: &BTreeMap<String, String>) -> anyhow::Result<Vec<aws_sdk_dynamodb::types::Tag>> {
    tags.iter().map(|(k, v)| Ok(aws_sdk_dynamodb::types::Tag::builder().key(k).value(v).build()?)).collect()
}

fn secret_tags(tags: &BTreeMap<String, String>) -> Vec<aws_sdk_secretsmanager::types::Tag> {
    tags.iter().map(|(k, v)| aws_sdk_secretsmanager::types::Tag::builder().key(k).value(v).build()).collect()
}

fn asg_tag(group: &str, key: &str, value: &str) -> anyhow::Result<aws_sdk_autoscaling::types::Tag> {
    Ok(aws_sdk_autoscaling::types::Tag::builder()
        .resource_id(group)
        .resource_type("auto-scaling-group")
        .key(key)
        .value(value)
        .propagate_at_launch(true)
        .build())
}

fn asg_tags(
    group: &str,
    tags: &BTreeMap<String, String>,
) -> anyhow::Result<Vec<aws_sdk_autoscaling::types::Tag>> {
    tags.iter().map(|(k, v)| asg_tag(group, k, v)).collect()
}
