//! The nodes' IAM policy (`deploy/iam/node-policy.json`) allows exactly the AWS
//! operations the node-side code calls: every `client.operation()` on an SDK client in
//! the node-side sources must be in it, and nothing else may be.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// The sources that run on a node with the nodes' role: the orchestrator peer and the
/// node bootstrap.
const NODE_SIDE: &[&str] = &["orchestrator/src", "provisioner/src/bootstrap"];

/// Calls IAM authorizes as other actions: a DynamoDB transaction needs the action of
/// each of its items.
const AUTHORIZED_AS: &[(&str, &[&str])] = &[
    ("dynamodb:TransactWriteItems", &["dynamodb:PutItem", "dynamodb:ConditionCheckItem"]),
    ("s3:ListObjectsV2", &["s3:ListBucket"]),
    ("s3:DeleteObjects", &["s3:DeleteObject"]),
];

/// Our client field names and the IAM service prefix of each.
const CLIENTS: &[(&str, &str)] = &[
    ("elb", "elasticloadbalancing"),
    ("ec2", "ec2"),
    ("dynamodb", "dynamodb"),
    ("secrets", "secretsmanager"),
    ("s3", "s3"),
    ("autoscaling", "autoscaling"),
    ("iam", "iam"),
];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn camel(snake: &str) -> String {
    snake
        .split('_')
        .map(|w| {
            let mut c = w.chars();
            c.next().map(|f| f.to_ascii_uppercase().to_string() + c.as_str()).unwrap_or_default()
        })
        .collect()
}

/// `service:Operation` for every `.client.operation(` in `source` (whitespace and
/// line breaks of builder chains ignored).
fn operations_called(source: &str) -> BTreeSet<String> {
    let flat: String = source.chars().filter(|c| !c.is_whitespace()).collect();
    let mut found = BTreeSet::new();
    for (field, service) in CLIENTS {
        let needle = format!(".{field}.");
        let mut rest = flat.as_str();
        while let Some(at) = rest.find(&needle) {
            rest = &rest[at + needle.len()..];
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
                .collect();
            // `.clone()` copies a client; it calls nothing.
            if !name.is_empty() && name != "clone" && rest[name.len()..].starts_with("()") {
                let call = format!("{service}:{}", camel(&name));
                match AUTHORIZED_AS.iter().find(|(c, _)| *c == call) {
                    Some((_, actions)) => found.extend(actions.iter().map(|a| a.to_string())),
                    None => {
                        found.insert(call);
                    }
                }
            }
        }
    }
    found
}

#[test]
fn the_policy_allows_exactly_what_the_nodes_call() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let mut called = BTreeSet::new();
    for dir in NODE_SIDE {
        let mut files = Vec::new();
        rust_files(&root.join(dir), &mut files);
        for f in files {
            called.extend(operations_called(&std::fs::read_to_string(&f).unwrap()));
        }
    }
    assert!(called.contains("dynamodb:PutItem"), "the scan found nothing: {called:?}");
    let allowed = provisioner::iam_policy::actions(provisioner::iam_policy::NODE_POLICY_TEMPLATE);
    let missing: Vec<&String> = called.difference(&allowed).collect();
    let unused: Vec<&String> = allowed.difference(&called).collect();
    assert!(missing.is_empty(), "deploy/iam/node-policy.json lacks operations the nodes call: {missing:?}");
    assert!(
        unused.is_empty(),
        "deploy/iam/node-policy.json allows operations no node code calls: {unused:?}"
    );
}

#[test]
fn the_scan_reads_builder_chains() {
    let src = "self\n    .elb\n    .register_targets()\n    .x(); c.dynamodb.get_item().y; a.secrets .get_secret_value ()";
    let got: Vec<String> = operations_called(src).into_iter().collect();
    assert_eq!(
        got,
        ["dynamodb:GetItem", "elasticloadbalancing:RegisterTargets", "secretsmanager:GetSecretValue"]
    );
}
