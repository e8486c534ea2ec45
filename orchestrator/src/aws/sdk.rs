//! The AWS SDK edge: ELBv2 target groups, EC2 instance lookup, the Auto Scaling
//! group's instances (protection, health) and the DynamoDB mirror table, each behind
//! a small trait the loops are generic over, and Secrets Manager (API tokens read at
//! start).
//!
//! Clients come from the shared [`aws_connect`] configuration: the standard chain
//! (credentials and region from the environment, profile or instance role) with the
//! config's region and `endpoint_url` on top. Every call is bounded by
//! `call_timeout_ms` (retries included), so a hung endpoint costs the controller a few
//! seconds and never the MySQL side anything.

use aws_sdk_dynamodb::types::{AttributeValue, ReturnValuesOnConditionCheckFailure};
use aws_sdk_elasticloadbalancingv2::types::TargetDescription;
use std::collections::HashMap;
use std::future::Future;

use super::mirror::{
    Fence, LockTable, MasterLock, PutOutcome, TopologyItem, FENCE_CONDITION, MASTER_LOCK, PK, TOPOLOGY,
};
use super::targets::Target;
use super::AwsError;
use crate::config::AwsConfig;
use crate::fleet::GroupInstance;

/// Register, deregister and list the targets of a target group.
pub trait TargetGroupApi: Send + Sync {
    fn targets(&self, group_arn: &str) -> impl Future<Output = Result<Vec<Target>, AwsError>> + Send;
    fn register(&self, group_arn: &str, id: &str) -> impl Future<Output = Result<(), AwsError>> + Send;
    fn deregister(&self, group_arn: &str, id: &str) -> impl Future<Output = Result<(), AwsError>> + Send;
}

/// Finds the EC2 instance that owns a private IP.
pub trait InstanceDirectory: Send + Sync {
    fn instance_by_private_ip(
        &self,
        ip: &str,
    ) -> impl Future<Output = Result<Option<String>, AwsError>> + Send;
}

/// Reads an Auto Scaling group's instances and changes their protection and health.
pub trait ScalingGroupApi: Send + Sync {
    /// The group's instances with their private addresses; an unknown group is an error.
    fn group_instances(
        &self,
        group: &str,
    ) -> impl Future<Output = Result<Vec<GroupInstance>, AwsError>> + Send;
    fn set_protection(
        &self,
        group: &str,
        ids: &[String],
        protected: bool,
    ) -> impl Future<Output = Result<(), AwsError>> + Send;
    fn set_unhealthy(&self, id: &str) -> impl Future<Output = Result<(), AwsError>> + Send;
}

/// One set of SDK clients sharing an HTTP connection pool.
#[derive(Clone, Debug)]
pub struct AwsClients {
    pub autoscaling: aws_sdk_autoscaling::Client,
    pub elb: aws_sdk_elasticloadbalancingv2::Client,
    pub dynamodb: aws_sdk_dynamodb::Client,
    pub ec2: aws_sdk_ec2::Client,
    pub secrets: aws_sdk_secretsmanager::Client,
}

impl AwsClients {
    /// Clients for `config`: the standard chain, then its region and endpoint.
    pub async fn load(config: &AwsConfig) -> AwsClients {
        Self::load_with(config, None).await
    }

    /// As [`AwsClients::load`], with fixed credentials instead of the chain's (tools
    /// and tests talking to moto).
    pub async fn load_with(config: &AwsConfig, credentials: Option<aws_connect::Credentials>) -> AwsClients {
        let shared = aws_connect::sdk_config(&config.connect_settings(), credentials).await;
        AwsClients {
            autoscaling: aws_sdk_autoscaling::Client::new(&shared),
            elb: aws_sdk_elasticloadbalancingv2::Client::new(&shared),
            dynamodb: aws_sdk_dynamodb::Client::new(&shared),
            ec2: aws_sdk_ec2::Client::new(&shared),
            secrets: aws_sdk_secretsmanager::Client::new(&shared),
        }
    }

    /// The string value of a Secrets Manager secret (by name or ARN). The error names
    /// the secret, never its value.
    pub async fn secret_string(&self, secret_id: &str) -> Result<String, AwsError> {
        let out = self
            .secrets
            .get_secret_value()
            .secret_id(secret_id)
            .send()
            .await
            .map_err(|e| sdk_error("GetSecretValue", e))?;
        out.secret_string()
            .map(str::to_string)
            .ok_or_else(|| AwsError::new("GetSecretValue", format!("secret {secret_id} has no string value")))
    }
}

/// The SDK error as one line, with its causes.
fn sdk_error<E: std::error::Error + 'static>(operation: &'static str, e: E) -> AwsError {
    AwsError::new(operation, aws_connect::error_line(&e))
}

impl TargetGroupApi for AwsClients {
    async fn targets(&self, group_arn: &str) -> Result<Vec<Target>, AwsError> {
        let out = self
            .elb
            .describe_target_health()
            .target_group_arn(group_arn)
            .send()
            .await
            .map_err(|e| sdk_error("DescribeTargetHealth", e))?;
        Ok(out
            .target_health_descriptions()
            .iter()
            .filter_map(|d| {
                let id = d.target()?.id()?.to_string();
                let state = d
                    .target_health()
                    .and_then(|h| h.state())
                    .map(|s| s.as_str().to_string())
                    .unwrap_or_default();
                Some(Target { id, state })
            })
            .collect())
    }

    async fn register(&self, group_arn: &str, id: &str) -> Result<(), AwsError> {
        self.elb
            .register_targets()
            .target_group_arn(group_arn)
            .targets(TargetDescription::builder().id(id).build())
            .send()
            .await
            .map_err(|e| sdk_error("RegisterTargets", e))?;
        Ok(())
    }

    async fn deregister(&self, group_arn: &str, id: &str) -> Result<(), AwsError> {
        self.elb
            .deregister_targets()
            .target_group_arn(group_arn)
            .targets(TargetDescription::builder().id(id).build())
            .send()
            .await
            .map_err(|e| sdk_error("DeregisterTargets", e))?;
        Ok(())
    }
}

impl InstanceDirectory for AwsClients {
    async fn instance_by_private_ip(&self, ip: &str) -> Result<Option<String>, AwsError> {
        let out = self
            .ec2
            .describe_instances()
            .filters(aws_sdk_ec2::types::Filter::builder().name("private-ip-address").values(ip).build())
            .send()
            .await
            .map_err(|e| sdk_error("DescribeInstances", e))?;
        let mut ids = out
            .reservations()
            .iter()
            .flat_map(|r| r.instances())
            .filter(|i| i.state().and_then(|s| s.name()).is_none_or(|n| n.as_str() != "terminated"))
            .filter_map(|i| i.instance_id().map(str::to_string));
        Ok(ids.next())
    }
}

impl ScalingGroupApi for AwsClients {
    async fn group_instances(&self, group: &str) -> Result<Vec<GroupInstance>, AwsError> {
        let out = self
            .autoscaling
            .describe_auto_scaling_groups()
            .auto_scaling_group_names(group)
            .send()
            .await
            .map_err(|e| sdk_error("DescribeAutoScalingGroups", e))?;
        let Some(described) = out.auto_scaling_groups().first() else {
            return Err(AwsError::new(
                "DescribeAutoScalingGroups",
                format!("no Auto Scaling group named {group}"),
            ));
        };
        let mut instances: Vec<GroupInstance> = described
            .instances()
            .iter()
            .filter_map(|i| {
                Some(GroupInstance {
                    id: i.instance_id()?.to_string(),
                    private_ip: None,
                    lifecycle: i.lifecycle_state().map(|s| s.as_str().to_string()).unwrap_or_default(),
                    health: i.health_status().unwrap_or_default().to_string(),
                    protected_from_scale_in: i.protected_from_scale_in().unwrap_or(false),
                })
            })
            .collect();
        if instances.is_empty() {
            return Ok(instances);
        }
        let ids: Vec<String> = instances.iter().map(|i| i.id.clone()).collect();
        let out = self
            .ec2
            .describe_instances()
            .set_instance_ids(Some(ids))
            .send()
            .await
            .map_err(|e| sdk_error("DescribeInstances", e))?;
        let ips: HashMap<String, String> = out
            .reservations()
            .iter()
            .flat_map(|r| r.instances())
            .filter_map(|i| Some((i.instance_id()?.to_string(), i.private_ip_address()?.to_string())))
            .collect();
        for i in &mut instances {
            i.private_ip = ips.get(&i.id).cloned();
        }
        Ok(instances)
    }

    async fn set_protection(&self, group: &str, ids: &[String], protected: bool) -> Result<(), AwsError> {
        self.autoscaling
            .set_instance_protection()
            .auto_scaling_group_name(group)
            .set_instance_ids(Some(ids.to_vec()))
            .protected_from_scale_in(protected)
            .send()
            .await
            .map_err(|e| sdk_error("SetInstanceProtection", e))?;
        Ok(())
    }

    async fn set_unhealthy(&self, id: &str) -> Result<(), AwsError> {
        self.autoscaling
            .set_instance_health()
            .instance_id(id)
            .health_status("Unhealthy")
            .should_respect_grace_period(false)
            .send()
            .await
            .map_err(|e| sdk_error("SetInstanceHealth", e))?;
        Ok(())
    }
}

fn n(v: impl ToString) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

fn number(item: &HashMap<String, AttributeValue>, key: &str) -> Option<i64> {
    item.get(key)?.as_n().ok()?.parse().ok()
}

fn fence_of(item: &HashMap<String, AttributeValue>) -> Option<Fence> {
    Some(Fence { epoch: number(item, "epoch")? as u64, raft_term: number(item, "raft_term")? as u64 })
}

impl AwsClients {
    /// Puts `item` under [`FENCE_CONDITION`]; a failed condition is an outcome, not an error.
    async fn put_fenced(
        &self,
        table: &str,
        fence: Fence,
        item: HashMap<String, AttributeValue>,
    ) -> Result<PutOutcome, AwsError> {
        let result = self
            .dynamodb
            .put_item()
            .table_name(table)
            .set_item(Some(item))
            .condition_expression(FENCE_CONDITION)
            .expression_attribute_values(":epoch", n(fence.epoch))
            .expression_attribute_values(":term", n(fence.raft_term))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match result {
            Ok(_) => Ok(PutOutcome::Written),
            Err(e) => match e.as_service_error() {
                Some(service) if service.is_conditional_check_failed_exception() => {
                    let stored = match service {
                        aws_sdk_dynamodb::operation::put_item::PutItemError::ConditionalCheckFailedException(
                            c,
                        ) => c.item().and_then(fence_of),
                        _ => None,
                    };
                    Ok(PutOutcome::Rejected { stored })
                }
                _ => Err(sdk_error("PutItem", e)),
            },
        }
    }
}

impl LockTable for AwsClients {
    async fn put_master_lock(&self, table: &str, lock: &MasterLock) -> Result<PutOutcome, AwsError> {
        let item = HashMap::from([
            (PK.to_string(), s(MASTER_LOCK)),
            ("holder".to_string(), s(&lock.holder)),
            ("leader_id".to_string(), n(lock.leader_id)),
            ("epoch".to_string(), n(lock.fence.epoch)),
            ("raft_term".to_string(), n(lock.fence.raft_term)),
            ("updated_at".to_string(), n(lock.updated_at)),
            ("expires_at".to_string(), n(lock.expires_at)),
        ]);
        self.put_fenced(table, lock.fence, item).await
    }

    async fn put_topology(&self, table: &str, topology: &TopologyItem) -> Result<PutOutcome, AwsError> {
        let item = HashMap::from([
            (PK.to_string(), s(TOPOLOGY)),
            ("epoch".to_string(), n(topology.fence.epoch)),
            ("raft_term".to_string(), n(topology.fence.raft_term)),
            ("updated_at".to_string(), n(topology.updated_at)),
            ("topology".to_string(), s(&topology.json)),
        ]);
        self.put_fenced(table, topology.fence, item).await
    }

    async fn get_master_lock(&self, table: &str) -> Result<Option<MasterLock>, AwsError> {
        let out = self
            .dynamodb
            .get_item()
            .table_name(table)
            .key(PK, s(MASTER_LOCK))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| sdk_error("GetItem", e))?;
        let Some(item) = out.item() else { return Ok(None) };
        let text = |k: &str| item.get(k).and_then(|v| v.as_s().ok()).cloned().unwrap_or_default();
        Ok(Some(MasterLock {
            holder: text("holder"),
            leader_id: number(item, "leader_id").unwrap_or(0) as u64,
            fence: fence_of(item).unwrap_or_default(),
            updated_at: number(item, "updated_at").unwrap_or(0),
            expires_at: number(item, "expires_at").unwrap_or(0),
        }))
    }
}
