//! The provisioner's SDK clients, built from the shared [`aws_connect`]
//! configuration, each with the [`CallLog`] interceptor that records every operation
//! sent, so `apply` can say how many calls changed something (none on a second apply).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::context::BeforeSerializationInterceptorContextRef;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use aws_smithy_types::config_bag::ConfigBag;

/// How the provisioner reaches AWS.
#[derive(Debug, Clone, Default)]
pub struct Endpoint {
    pub region: Option<String>,
    /// One endpoint for every service (moto).
    pub endpoint_url: Option<String>,
    /// Fixed credentials instead of the standard chain (tests).
    pub credentials: Option<aws_connect::Credentials>,
}

/// The operations sent, in order (`Service:Operation`).
#[derive(Debug, Clone, Default)]
pub struct CallLog(Arc<Mutex<Vec<String>>>);

impl CallLog {
    pub fn calls(&self) -> Vec<String> {
        self.0.lock().expect("call log").clone()
    }

    /// The calls that change something (everything but Describe/Get/List/Head).
    pub fn changing_calls(&self) -> Vec<String> {
        self.calls().into_iter().filter(|c| is_changing(c)).collect()
    }

    pub fn clear(&self) {
        self.0.lock().expect("call log").clear();
    }
}

/// Whether an operation (`Service:Operation` or `Operation`) changes state.
pub fn is_changing(call: &str) -> bool {
    let op = call.rsplit(':').next().unwrap_or(call);
    !["Describe", "Get", "List", "Head"].iter().any(|p| op.starts_with(p))
}

impl Intercept for CallLog {
    fn name(&self) -> &'static str {
        "CallLog"
    }

    fn read_before_execution(
        &self,
        _context: &BeforeSerializationInterceptorContextRef<'_>,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if let Some(m) = cfg.load::<Metadata>() {
            self.0.lock().expect("call log").push(format!("{}:{}", m.service(), m.name()));
        }
        Ok(())
    }
}

/// Every client the provisioner uses.
#[derive(Debug, Clone)]
pub struct Clients {
    pub ec2: aws_sdk_ec2::Client,
    pub elb: aws_sdk_elasticloadbalancingv2::Client,
    pub autoscaling: aws_sdk_autoscaling::Client,
    pub dynamodb: aws_sdk_dynamodb::Client,
    pub s3: aws_sdk_s3::Client,
    pub secrets: aws_sdk_secretsmanager::Client,
    pub iam: aws_sdk_iam::Client,
    pub log: CallLog,
    /// The region the clients talk to (part of the summary).
    pub region: String,
}

/// One provisioning call may take this long (moto builds a service's state on its
/// first call; real AWS answers creations in well under it).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);

impl Clients {
    pub async fn new(endpoint: &Endpoint) -> Clients {
        let settings = aws_connect::ConnectSettings {
            region: endpoint.region.clone(),
            endpoint_url: endpoint.endpoint_url.clone(),
            call_timeout: CALL_TIMEOUT,
            max_attempts: 3,
        };
        let shared = aws_connect::sdk_config(&settings, endpoint.credentials.clone()).await;
        let log = CallLog::default();
        let s3_config = aws_connect::s3_config(&shared, &settings).interceptor(log.clone()).build();
        Clients {
            ec2: aws_sdk_ec2::Client::from_conf(
                aws_sdk_ec2::config::Builder::from(&shared).interceptor(log.clone()).build(),
            ),
            elb: aws_sdk_elasticloadbalancingv2::Client::from_conf(
                aws_sdk_elasticloadbalancingv2::config::Builder::from(&shared)
                    .interceptor(log.clone())
                    .build(),
            ),
            autoscaling: aws_sdk_autoscaling::Client::from_conf(
                aws_sdk_autoscaling::config::Builder::from(&shared).interceptor(log.clone()).build(),
            ),
            dynamodb: aws_sdk_dynamodb::Client::from_conf(
                aws_sdk_dynamodb::config::Builder::from(&shared).interceptor(log.clone()).build(),
            ),
            s3: aws_sdk_s3::Client::from_conf(s3_config),
            secrets: aws_sdk_secretsmanager::Client::from_conf(
                aws_sdk_secretsmanager::config::Builder::from(&shared).interceptor(log.clone()).build(),
            ),
            iam: aws_sdk_iam::Client::from_conf(
                aws_sdk_iam::config::Builder::from(&shared).interceptor(log.clone()).build(),
            ),
            region: shared.region().map(|r| r.to_string()).unwrap_or_default(),
            log,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_are_not_changes() {
        for c in
            ["ec2:DescribeVpcs", "s3:GetBucketLifecycleConfiguration", "s3:HeadBucket", "iam:ListRoleTags"]
        {
            assert!(!is_changing(c), "{c}");
        }
        for c in ["ec2:CreateSecurityGroup", "s3:PutBucketVersioning", "autoscaling:UpdateAutoScalingGroup"] {
            assert!(is_changing(c), "{c}");
        }
    }
}
