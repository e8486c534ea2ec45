//! The AWS edge of the provisioner: [`plan`], [`apply`], [`destroy`] and [`status`]
//! of one cluster. Each reads what exists ([`observe`]), asks the pure planner what
//! to do, and (apply, destroy) carries it out resource by resource ([`change`]),
//! reporting progress through a callback and counting the calls that changed
//! something ([`clients::CallLog`]).

pub mod change;
pub mod clients;
pub mod observe;

use std::collections::BTreeMap;

use anyhow::Context;

use crate::desired::{self, Kind, Resource};
use crate::plan::{self, Action, Plan};
use crate::spec::ClusterSpec;
use change::{Changer, RefreshOutcome};
use clients::Clients;
pub use clients::Endpoint;
use observe::Observed;

/// The ids (or ARNs) of existing resources by kind and name.
#[derive(Debug, Clone, Default)]
pub struct Ids(BTreeMap<(Kind, String), String>);

impl Ids {
    pub fn insert(&mut self, kind: Kind, name: &str, id: impl Into<String>) {
        self.0.insert((kind, name.to_string()), id.into());
    }

    pub fn get(&self, kind: Kind, name: &str) -> Option<&str> {
        self.0.get(&(kind, name.to_string())).map(String::as_str)
    }

    /// The id of a resource an operation depends on.
    pub fn need(&self, kind: Kind, name: &str) -> anyhow::Result<&str> {
        self.get(kind, name).with_context(|| format!("{kind} {name} does not exist (yet)"))
    }

    /// Our name for an id of ours.
    pub fn name_of(&self, kind: Kind, id: &str) -> Option<&str> {
        self.0.iter().find(|((k, _), v)| *k == kind && v.as_str() == id).map(|((_, n), _)| n.as_str())
    }

    pub fn remove(&mut self, kind: Kind, name: &str) {
        self.0.remove(&(kind, name.to_string()));
    }
}

/// An SDK error as one line naming the operation.
pub(crate) fn call_error<E: std::error::Error + 'static>(operation: &str, e: E) -> anyhow::Error {
    anyhow::anyhow!("AWS {operation}: {}", aws_connect::error_line(&e))
}

/// What exists and what apply would do about it.
pub struct Planned {
    pub plan: Plan,
    pub observed: Observed,
    pub desired: Vec<Resource>,
}

/// The plan for `spec` (reads only).
pub async fn plan(c: &Clients, spec: &ClusterSpec) -> anyhow::Result<Planned> {
    let facts = observe::network_facts(c, spec).await?;
    let desired = desired::desired(spec, &facts);
    let mut observed = observe::observe(c, spec).await?;
    // The secret's value lacking keys shows as a content change; otherwise the content
    // of an existing secret is what we want by definition (its values are not ours to
    // compare).
    for r in observed.resources.iter_mut().filter(|r| r.kind == Kind::Secret) {
        if !(observed.credentials_missing_keys && r.name == spec.names().credentials_secret) {
            if let Some(want) = desired.iter().find(|d| d.kind == Kind::Secret && d.name == r.name) {
                r.attrs.insert("content", want.attr("content").to_string());
            }
        }
    }
    let plan = plan::plan_apply(&desired, &observed.resources)?;
    Ok(Planned { plan, observed, desired })
}

/// The cluster's endpoints and resources, as apply and status print them.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Summary {
    pub cluster_id: String,
    pub region: String,
    pub load_balancer_arn: String,
    pub dns_name: String,
    pub write_target_group_arn: String,
    pub read_target_group_arn: String,
    pub table: String,
    pub bucket: String,
    pub credentials_secret: String,
    pub credentials_secret_arn: String,
    pub auto_scaling_group: String,
    pub launch_template_id: String,
    pub node_security_group_id: String,
    pub instance_profile: String,
    pub vpc_id: String,
}

impl Summary {
    fn of(spec: &ClusterSpec, region: &str, ids: &Ids, dns_name: Option<&str>) -> Summary {
        let n = spec.names();
        let id = |k, name: &str| ids.get(k, name).unwrap_or("").to_string();
        Summary {
            cluster_id: spec.cluster_id.clone(),
            region: region.to_string(),
            load_balancer_arn: id(Kind::LoadBalancer, &n.load_balancer),
            dns_name: dns_name.unwrap_or("").to_string(),
            write_target_group_arn: id(Kind::TargetGroup, &n.write_target_group),
            read_target_group_arn: id(Kind::TargetGroup, &n.read_target_group),
            table: n.table.clone(),
            bucket: n.bucket.clone(),
            credentials_secret: n.credentials_secret.clone(),
            credentials_secret_arn: id(Kind::Secret, &n.credentials_secret),
            auto_scaling_group: n.auto_scaling_group.clone(),
            launch_template_id: id(Kind::LaunchTemplate, &n.launch_template),
            node_security_group_id: id(Kind::SecurityGroup, &n.node_security_group),
            instance_profile: n.instance_profile.clone(),
            vpc_id: spec.vpc_id.clone(),
        }
    }

    /// The closing lines of apply.
    pub fn render(&self) -> String {
        format!(
            "cluster {id} in {region}\n  \
             NLB            {dns}\n  \
             writes         {dns}:3306 (the master)\n  \
             reads          {dns}:3307 (the replicas)\n  \
             write group    {write}\n  \
             read group     {read}\n  \
             table          {table}\n  \
             bucket         {bucket}\n  \
             credentials    {secret} ({secret_arn})\n  \
             nodes          {asg} (launch template {lt})\n",
            id = self.cluster_id,
            region = self.region,
            dns = self.dns_name,
            write = self.write_target_group_arn,
            read = self.read_target_group_arn,
            table = self.table,
            bucket = self.bucket,
            secret = self.credentials_secret,
            secret_arn = self.credentials_secret_arn,
            asg = self.auto_scaling_group,
            lt = self.launch_template_id,
        )
    }
}

/// What apply did.
#[derive(Debug, Clone)]
pub struct Applied {
    pub plan: Plan,
    pub summary: Summary,
    pub refresh: Option<RefreshOutcome>,
    /// The calls sent that changed something.
    pub changing_calls: Vec<String>,
}

/// Takes the cluster to `spec`: creates what is missing, changes what differs, in
/// dependency order; starts an instance refresh when the launch template changed
/// under a running group. `progress` gets one line per resource.
pub async fn apply(
    c: &Clients,
    spec: &ClusterSpec,
    progress: &mut dyn FnMut(&str),
) -> anyhow::Result<Applied> {
    c.log.clear();
    let Planned { plan, observed, .. } = plan(c, spec).await?;
    let old: BTreeMap<(Kind, String), Resource> =
        observed.resources.iter().map(|r| ((r.kind, r.name.clone()), r.clone())).collect();
    let mut changer =
        Changer { c, spec, names: spec.names(), ids: observed.ids.clone(), previous_template_version: None };
    let total = plan.changes.len();
    let mut template_changed = false;
    let mut group_created = false;
    for (i, change) in plan.changes.iter().enumerate() {
        let step = format!("[{}/{total}]", i + 1);
        match &change.action {
            Action::Create => {
                progress(&format!("{step} creating {} {}", change.kind, change.name));
                if let Err(e) = changer.create(&change.resource).await {
                    let e = e.context(format!("creating {} {}", change.kind, change.name));
                    return Err(undo_template_version(&changer, e).await);
                }
                group_created |= change.kind == Kind::AutoScalingGroup;
            }
            Action::Update(diffs) => {
                let keys: Vec<&str> = diffs.iter().map(|d| d.key).collect();
                progress(&format!("{step} updating {} {} ({})", change.kind, change.name, keys.join(", ")));
                let before = &old[&(change.kind, change.name.clone())].attrs;
                if let Err(e) = changer.update(&change.resource, before).await {
                    let e = e.context(format!("updating {} {}", change.kind, change.name));
                    return Err(undo_template_version(&changer, e).await);
                }
                // Tags alone replace no instance (running ones are retagged).
                template_changed |= change.kind == Kind::LaunchTemplate
                    && keys.iter().any(|k| !["tags", "instance_tags"].contains(k));
            }
            Action::Delete => unreachable!("apply never deletes"),
        }
    }
    let mut refresh = None;
    if template_changed
        && !group_created
        && changer.ids.get(Kind::AutoScalingGroup, &spec.names().auto_scaling_group).is_some()
    {
        let outcome = match changer.start_instance_refresh().await {
            Ok(outcome) => outcome,
            Err(e) => {
                return Err(undo_template_version(&changer, e.context("starting the instance refresh")).await)
            }
        };
        match &outcome {
            RefreshOutcome::Started(id) => progress(&format!("instance refresh {id} started: nodes are replaced one at a time, never below n-1 healthy; an instance protected from scale-in (the master, once the orchestrator protects it) waits until its protection moves")),
            RefreshOutcome::Unsupported(op) => progress(&format!("instance refresh not started: the endpoint does not implement {op}; new instances use the new launch template version, running ones keep theirs until replaced")),
        }
        refresh = Some(outcome);
    }
    let dns = match observed.dns_name {
        Some(d) => Some(d),
        None => load_balancer_dns(c, &changer.ids, spec).await?,
    };
    let summary = Summary::of(spec, &c.region, &changer.ids, dns.as_deref());
    Ok(Applied { plan, summary, refresh, changing_calls: c.log.changing_calls() })
}

/// After a failed step: the launch template's default version goes back to what it
/// was, so no instance launches half-applied and the next apply sees the change again.
async fn undo_template_version(changer: &Changer<'_>, e: anyhow::Error) -> anyhow::Error {
    match changer.restore_template_version().await {
        Ok(Some(v)) => {
            e.context(format!("launch template default version set back to {v} (the next apply retries)"))
        }
        Ok(None) => e,
        Err(undo) => {
            e.context(format!("setting the launch template's default version back failed too ({undo:#})"))
        }
    }
}

async fn load_balancer_dns(c: &Clients, ids: &Ids, spec: &ClusterSpec) -> anyhow::Result<Option<String>> {
    let Some(arn) = ids.get(Kind::LoadBalancer, &spec.names().load_balancer) else { return Ok(None) };
    let out = c
        .elb
        .describe_load_balancers()
        .load_balancer_arns(arn)
        .send()
        .await
        .map_err(|e| call_error("DescribeLoadBalancers", e))?;
    Ok(out.load_balancers().first().and_then(|l| l.dns_name()).map(str::to_string))
}

/// The destroy plan (reads only).
pub async fn plan_destroy(
    c: &Clients,
    spec: &ClusterSpec,
    delete_data: bool,
) -> anyhow::Result<(Plan, Observed)> {
    let observed = observe::observe(c, spec).await?;
    Ok((plan::plan_destroy(&observed.resources, delete_data), observed))
}

/// Deletes the cluster's resources (the bucket and secrets only with `delete_data`).
pub async fn destroy(
    c: &Clients,
    spec: &ClusterSpec,
    delete_data: bool,
    progress: &mut dyn FnMut(&str),
) -> anyhow::Result<Plan> {
    let (plan, observed) = plan_destroy(c, spec, delete_data).await?;
    let mut changer =
        Changer { c, spec, names: spec.names(), ids: observed.ids.clone(), previous_template_version: None };
    let total = plan.changes.len();
    let mut rules_revoked = false;
    for (i, change) in plan.changes.iter().enumerate() {
        if change.kind == Kind::SecurityGroup && !rules_revoked {
            // Our two groups name each other: drop every rule first.
            for g in plan.changes.iter().filter(|c| c.kind == Kind::SecurityGroup) {
                changer
                    .revoke_ingress(&g.resource)
                    .await
                    .with_context(|| format!("revoking the rules of {}", g.name))?;
            }
            rules_revoked = true;
        }
        progress(&format!("[{}/{total}] deleting {} {}", i + 1, change.kind, change.name));
        changer
            .delete(&change.resource)
            .await
            .with_context(|| format!("deleting {} {}", change.kind, change.name))?;
    }
    for (kind, name) in &plan.kept {
        progress(&format!("kept {kind} {name} (holds data; --delete-data deletes it)"));
    }
    Ok(plan)
}

/// One instance of the cluster's group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeStatus {
    pub instance_id: String,
    pub private_ip: String,
    pub lifecycle: String,
    pub health: String,
    pub protected_from_scale_in: bool,
    /// `write` / `read` target group membership with the target's health.
    pub targets: Vec<String>,
}

/// What exists and how it is doing.
#[derive(Debug, Clone)]
pub struct Status {
    pub resources: Vec<(Kind, String, bool)>,
    pub summary: Summary,
    pub nodes: Vec<NodeStatus>,
    pub pending: usize,
}

/// Reads the cluster: which resources exist, the group's instances and their targets.
pub async fn status(c: &Clients, spec: &ClusterSpec) -> anyhow::Result<Status> {
    let Planned { plan, observed, desired } = plan(c, spec).await?;
    let resources = desired
        .iter()
        .map(|d| (d.kind, d.name.clone(), observed.ids.get(d.kind, &d.name).is_some()))
        .collect();
    let summary = Summary::of(spec, &c.region, &observed.ids, observed.dns_name.as_deref());
    let mut nodes = Vec::new();
    let n = spec.names();
    let groups = c
        .autoscaling
        .describe_auto_scaling_groups()
        .auto_scaling_group_names(&n.auto_scaling_group)
        .send()
        .await
        .map_err(|e| call_error("DescribeAutoScalingGroups", e))?;
    let mut targets: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (role, arn) in [("write", &summary.write_target_group_arn), ("read", &summary.read_target_group_arn)]
    {
        if arn.is_empty() {
            continue;
        }
        let health = c
            .elb
            .describe_target_health()
            .target_group_arn(arn)
            .send()
            .await
            .map_err(|e| call_error("DescribeTargetHealth", e))?;
        for d in health.target_health_descriptions() {
            let Some(id) = d.target().and_then(|t| t.id()) else { continue };
            let state =
                d.target_health().and_then(|h| h.state()).map(|s| s.as_str().to_string()).unwrap_or_default();
            targets.entry(id.to_string()).or_default().push(format!("{role} ({state})"));
        }
    }
    if let Some(g) = groups.auto_scaling_groups().first() {
        let ids: Vec<String> =
            g.instances().iter().filter_map(|i| i.instance_id().map(str::to_string)).collect();
        let mut ips = BTreeMap::new();
        if !ids.is_empty() {
            let out = c
                .ec2
                .describe_instances()
                .set_instance_ids(Some(ids))
                .send()
                .await
                .map_err(|e| call_error("DescribeInstances", e))?;
            for i in out.reservations().iter().flat_map(|r| r.instances()) {
                if let (Some(id), Some(ip)) = (i.instance_id(), i.private_ip_address()) {
                    ips.insert(id.to_string(), ip.to_string());
                }
            }
        }
        for i in g.instances() {
            let id = i.instance_id().unwrap_or("").to_string();
            nodes.push(NodeStatus {
                private_ip: ips.get(&id).cloned().unwrap_or_default(),
                lifecycle: i.lifecycle_state().map(|s| s.as_str().to_string()).unwrap_or_default(),
                health: i.health_status().unwrap_or("").to_string(),
                protected_from_scale_in: i.protected_from_scale_in().unwrap_or(false),
                targets: targets.remove(&id).unwrap_or_default(),
                instance_id: id,
            });
        }
    }
    Ok(Status { resources, summary, nodes, pending: plan.changes.len() })
}
