//! The nodes' IAM policy: `deploy/iam/node-policy.json` (the one copy, reviewed as a
//! file) with `CLUSTER_ID` filled in, so every statement is scoped to this cluster's
//! target groups, table, bucket and secrets. A test checks that its actions are
//! exactly the AWS operations the node-side code calls.

use std::collections::BTreeSet;

/// The policy file as committed.
pub const NODE_POLICY_TEMPLATE: &str = include_str!("../../deploy/iam/node-policy.json");

/// The policy for `cluster_id`'s nodes, as compact canonical JSON.
pub fn node_policy(cluster_id: &str) -> String {
    canonical_json(&NODE_POLICY_TEMPLATE.replace("CLUSTER_ID", cluster_id))
        .expect("deploy/iam/node-policy.json is valid JSON")
}

/// JSON text in one canonical form (keys sorted, no whitespace), for comparing a
/// policy read back from IAM with the one we wrote.
pub fn canonical_json(text: &str) -> Result<String, serde_json::Error> {
    let value: serde_json::Value = serde_json::from_str(text)?;
    serde_json::to_string(&value)
}

/// Every `service:Operation` a policy allows.
pub fn actions(policy_json: &str) -> BTreeSet<String> {
    let value: serde_json::Value = serde_json::from_str(policy_json).unwrap_or_default();
    let mut out = BTreeSet::new();
    for statement in value["Statement"].as_array().into_iter().flatten() {
        match &statement["Action"] {
            serde_json::Value::String(a) => {
                out.insert(a.clone());
            }
            serde_json::Value::Array(list) => {
                out.extend(list.iter().filter_map(|a| a.as_str().map(str::to_string)))
            }
            _ => {}
        }
    }
    out
}

/// The trust policy that lets EC2 instances assume the nodes' role.
pub fn ec2_trust_policy() -> String {
    canonical_json(
        r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":"ec2.amazonaws.com"},"Action":"sts:AssumeRole"}]}"#,
    )
    .expect("static JSON")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_is_scoped_to_the_cluster() {
        let p = node_policy("orders");
        assert!(!p.contains("CLUSTER_ID"));
        assert!(p.contains("table/orders-orchestrator"));
        assert!(actions(&p).contains("dynamodb:PutItem"));
    }
}
