//! The provisioner against a real `moto_server`: `apply` from nothing creates every
//! resource with the attributes of DESIGN.md section 6 (read back through the SDK and
//! the `aws` CLI), a second `apply` changes nothing, a changed instance type makes a
//! new launch template version, `destroy` keeps the data unless told, bad specs fail
//! before any call; and a peer logs in to MariaDB with the password it reads from the
//! provisioned secret, picking up a rotation.

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Command, Output};
use std::time::Duration;

use orch_tests::aws::{self, Moto};
use orch_tests::db::{DbServer, Flavor, ORCH_USER};
use orch_tests::hosts::HostBlock;
use orch_tests::peer::{self, PeerAws, PeerGroupSpec};
use orch_tests::process::Lifetime;
use orch_tests::test_dir;
use provisioner::mysql_users::{create_user_statements, UserRole};

fn provisioner_command(endpoint: &str, args: &[&str]) -> Output {
    let bin = peer::binary("provisioner").expect("provisioner binary");
    Command::new(bin)
        .args(args)
        .args(["--endpoint-url", endpoint])
        .env("AWS_ACCESS_KEY_ID", aws::ACCESS_KEY_ID)
        .env("AWS_SECRET_ACCESS_KEY", aws::SECRET_ACCESS_KEY)
        .env_remove("AWS_PROFILE")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run provisioner")
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn run_ok(endpoint: &str, args: &[&str]) -> String {
    let o = provisioner_command(endpoint, args);
    assert!(o.status.success(), "provisioner {args:?} failed:\n{}", text(&o));
    text(&o)
}

/// `aws` CLI JSON output against moto.
fn aws_cli(endpoint: &str, args: &[&str]) -> serde_json::Value {
    let o = Command::new("aws")
        .args(["--endpoint-url", endpoint, "--region", aws::REGION, "--output", "json"])
        .args(args)
        .env("AWS_ACCESS_KEY_ID", aws::ACCESS_KEY_ID)
        .env("AWS_SECRET_ACCESS_KEY", aws::SECRET_ACCESS_KEY)
        .output()
        .expect("the aws CLI (pip install awscli; deploy/lib/ensure-deps.sh does)");
    assert!(o.status.success(), "aws {args:?}: {}", text(&o));
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("aws {args:?}: {e}: {}", text(&o)))
}

struct Bed {
    moto: Moto,
    _block: HostBlock,
    _dir: tempfile::TempDir,
    spec_path: std::path::PathBuf,
    vpc_id: String,
    subnets: Vec<String>,
}

async fn bed(cluster_id: &str) -> Bed {
    let block = HostBlock::reserve(1).unwrap();
    let dir = test_dir("orch-provisioner-").unwrap();
    let moto =
        Moto::start(&block.host(1), dir.path(), block.state_dir(), Lifetime::Test, None).await.unwrap();
    let clients = aws::provisioning_clients(&moto.endpoint).await;
    let (vpc_id, mut subnets) = aws::network(&clients, "10.31.7").await.unwrap();
    subnets.truncate(2); // the group's two; the third is for stand-in hosts

    let spec_path = dir.path().join("cluster.toml");
    std::fs::write(&spec_path, aws::spec_toml(cluster_id, &vpc_id, &subnets, 3)).unwrap();
    Bed { moto, _block: block, _dir: dir, spec_path, vpc_id, subnets }
}

fn tags_of<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> BTreeMap<String, String> {
    pairs.into_iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn assert_ours(what: &str, tags: &BTreeMap<String, String>, cluster_id: &str) {
    assert_eq!(tags.get("cluster").map(String::as_str), Some(cluster_id), "{what}: {tags:?}");
    assert_eq!(
        tags.get("managed-by").map(String::as_str),
        Some("orchestrator-provisioner"),
        "{what}: {tags:?}"
    );
    assert!(tags.contains_key("component"), "{what}: {tags:?}");
    assert_eq!(tags.get("suite").map(String::as_str), Some("orch-tests"), "{what}: {tags:?}");
}

#[tokio::test]
async fn apply_creates_everything_and_a_second_apply_changes_nothing() {
    let id = "prov-e2e";
    let b = bed(id).await;
    let ep = b.moto.endpoint.clone();
    let spec = b.spec_path.to_str().unwrap().to_string();

    let plan = run_ok(&ep, &["plan", "--spec", &spec]);
    assert!(plan.contains("+ load balancer prov-e2e-nlb"), "{plan}");
    assert!(plan.contains("16 to create, 0 to change, 0 to delete, 0 unchanged"), "{plan}");

    let first = run_ok(&ep, &["apply", "--spec", &spec]);
    for line in ["[1/16] creating security group prov-e2e-nlb", "creating auto scaling group prov-e2e-nodes"]
    {
        assert!(first.contains(line), "no `{line}` in:\n{first}");
    }
    for line in [
        ":3306 (the master)",
        ":3307 (the replicas)",
        "table          prov-e2e-orchestrator",
        "bucket         percona-prov-e2e-backups",
        "credentials    prov-e2e/mysql-credentials",
    ] {
        assert!(first.contains(line), "summary lacks `{line}`:\n{first}");
    }

    let c = aws::provisioner_clients(&ep).await;
    // Load balancer and listeners.
    let lbs = c.elb.describe_load_balancers().names("prov-e2e-nlb").send().await.unwrap();
    let lb = &lbs.load_balancers()[0];
    assert_eq!(lb.r#type().unwrap().as_str(), "network");
    assert_eq!(lb.scheme().unwrap().as_str(), "internal");
    let lb_subnets: BTreeSet<&str> = lb.availability_zones().iter().filter_map(|z| z.subnet_id()).collect();
    assert_eq!(lb_subnets, b.subnets.iter().map(String::as_str).collect());
    let lb_tags = c.elb.describe_tags().resource_arns(lb.load_balancer_arn().unwrap()).send().await.unwrap();
    assert_ours(
        "NLB",
        &tags_of(lb_tags.tag_descriptions()[0].tags().iter().map(|t| (t.key().unwrap(), t.value().unwrap()))),
        id,
    );
    let groups =
        c.elb.describe_target_groups().names("prov-e2e-write").names("prov-e2e-read").send().await.unwrap();
    let by_name: BTreeMap<&str, _> =
        groups.target_groups().iter().map(|g| (g.target_group_name().unwrap(), g)).collect();
    for (name, path) in
        [("prov-e2e-write", "/health/primary"), ("prov-e2e-read", "/health/replica?max_lag=30")]
    {
        let g = by_name[name];
        assert_eq!(g.protocol().unwrap().as_str(), "TCP");
        assert_eq!(g.port(), Some(3306));
        assert_eq!(g.vpc_id(), Some(b.vpc_id.as_str()));
        assert_eq!(g.health_check_protocol().unwrap().as_str(), "HTTP");
        assert_eq!(g.health_check_port(), Some("3000"));
        assert_eq!(g.health_check_path(), Some(path));
        assert_eq!(g.health_check_interval_seconds(), Some(10));
        assert_eq!((g.healthy_threshold_count(), g.unhealthy_threshold_count()), (Some(3), Some(3)));
        let attrs = c
            .elb
            .describe_target_group_attributes()
            .target_group_arn(g.target_group_arn().unwrap())
            .send()
            .await
            .unwrap();
        let delay = attrs
            .attributes()
            .iter()
            .find(|a| a.key() == Some("deregistration_delay.timeout_seconds"))
            .unwrap();
        assert_eq!(delay.value(), Some("30"), "{name}");
    }
    let listeners =
        c.elb.describe_listeners().load_balancer_arn(lb.load_balancer_arn().unwrap()).send().await.unwrap();
    let forwards: BTreeMap<i32, &str> = listeners
        .listeners()
        .iter()
        .map(|l| (l.port().unwrap(), l.default_actions()[0].target_group_arn().unwrap()))
        .collect();
    assert_eq!(forwards[&3306], by_name["prov-e2e-write"].target_group_arn().unwrap());
    assert_eq!(forwards[&3307], by_name["prov-e2e-read"].target_group_arn().unwrap());

    // Security groups: clients and the group itself on 3306, 3000 and 10008 from the group only (and the NLB's checks).
    let sgs = c
        .ec2
        .describe_security_groups()
        .filters(
            aws_sdk_ec2::types::Filter::builder()
                .name("group-name")
                .values("prov-e2e-db")
                .values("prov-e2e-nlb")
                .build(),
        )
        .send()
        .await
        .unwrap();
    let sg_id: BTreeMap<&str, &str> =
        sgs.security_groups().iter().map(|g| (g.group_name().unwrap(), g.group_id().unwrap())).collect();
    let db = sgs.security_groups().iter().find(|g| g.group_name() == Some("prov-e2e-db")).unwrap();
    let mut rules = BTreeSet::new();
    for p in db.ip_permissions() {
        let what = format!("{}:{}", p.ip_protocol().unwrap(), p.from_port().unwrap_or(-1));
        for r in p.ip_ranges() {
            rules.insert(format!("{what} {}", r.cidr_ip().unwrap()));
        }
        for g in p.user_id_group_pairs() {
            let name = sg_id
                .iter()
                .find(|(_, id)| **id == g.group_id().unwrap())
                .map(|(n, _)| *n)
                .unwrap_or("other");
            rules.insert(format!("{what} {name}"));
        }
    }
    let want: BTreeSet<String> = [
        "tcp:3306 10.31.7.0/24",
        "tcp:3306 prov-e2e-db",
        "tcp:3306 prov-e2e-nlb",
        "tcp:3000 prov-e2e-db",
        "tcp:3000 prov-e2e-nlb",
        "tcp:10008 prov-e2e-db",
        "icmp:-1 10.31.7.0/24",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    assert_eq!(rules, want);
    assert_ours(
        "node security group",
        &tags_of(db.tags().iter().map(|t| (t.key().unwrap(), t.value().unwrap()))),
        id,
    );
    assert_eq!(lb.security_groups(), [sg_id["prov-e2e-nlb"].to_string()]);

    // Launch template and Auto Scaling group.
    let versions = c
        .ec2
        .describe_launch_template_versions()
        .launch_template_name("prov-e2e-node")
        .versions("$Default")
        .send()
        .await
        .unwrap();
    let data = versions.launch_template_versions()[0].launch_template_data().unwrap();
    assert_eq!(data.image_id(), Some(aws::MOTO_AMI));
    assert_eq!(data.instance_type().unwrap().as_str(), "t3.medium");
    let ebs = data.block_device_mappings()[0].ebs().unwrap();
    assert_eq!(
        (ebs.volume_type().unwrap().as_str(), ebs.volume_size(), ebs.encrypted()),
        ("gp3", Some(100), Some(true))
    );
    assert_eq!(data.metadata_options().unwrap().http_tokens().unwrap().as_str(), "required");
    assert_eq!(data.network_interfaces()[0].associate_public_ip_address(), Some(false));
    assert_eq!(data.network_interfaces()[0].groups(), [sg_id["prov-e2e-db"].to_string()]);
    assert_eq!(data.iam_instance_profile().unwrap().name(), Some("prov-e2e-node"));
    let user_data = {
        use base64::Engine as _;
        String::from_utf8(
            base64::engine::general_purpose::STANDARD.decode(data.user_data().unwrap()).unwrap(),
        )
        .unwrap()
    };
    assert!(user_data.starts_with("#cloud-config") && user_data.contains("bootstrap"), "{user_data}");
    let instance_tags: BTreeMap<&str, &str> = data
        .tag_specifications()
        .iter()
        .filter(|t| t.resource_type().map(|r| r.as_str()) == Some("instance"))
        .flat_map(|t| t.tags())
        .map(|t| (t.key().unwrap(), t.value().unwrap()))
        .collect();
    for (k, v) in [
        ("orchestrator:cluster-id", id),
        ("orchestrator:table", "prov-e2e-orchestrator"),
        ("orchestrator:bucket", "percona-prov-e2e-backups"),
        ("orchestrator:credentials-secret", "prov-e2e/mysql-credentials"),
        ("orchestrator:write-target-group", "prov-e2e-write"),
        ("orchestrator:read-target-group", "prov-e2e-read"),
        ("orchestrator:flavor", "mariadb"),
    ] {
        assert_eq!(instance_tags.get(k), Some(&v), "instance tag {k}");
    }
    let asgs = c
        .autoscaling
        .describe_auto_scaling_groups()
        .auto_scaling_group_names("prov-e2e-nodes")
        .send()
        .await
        .unwrap();
    let g = &asgs.auto_scaling_groups()[0];
    assert_eq!((g.min_size(), g.max_size(), g.desired_capacity()), (Some(3), Some(3), Some(3)));
    let zone_subnets: BTreeSet<&str> = g.vpc_zone_identifier().unwrap().split(',').collect();
    assert_eq!(zone_subnets, b.subnets.iter().map(String::as_str).collect());
    assert_eq!(g.target_group_arns(), [by_name["prov-e2e-read"].target_group_arn().unwrap().to_string()]);
    assert_eq!(g.launch_template().unwrap().launch_template_name(), Some("prov-e2e-node"));
    assert_ours("ASG", &tags_of(g.tags().iter().map(|t| (t.key().unwrap(), t.value().unwrap()))), id);

    // Table.
    let t = c.dynamodb.describe_table().table_name("prov-e2e-orchestrator").send().await.unwrap();
    let t = t.table().unwrap();
    assert_eq!(t.key_schema()[0].attribute_name(), "pk");
    assert_eq!(t.billing_mode_summary().unwrap().billing_mode().unwrap().as_str(), "PAY_PER_REQUEST");
    assert_eq!(t.sse_description().and_then(|s| s.status()).map(|s| s.as_str()), Some("ENABLED"));
    let pitr =
        c.dynamodb.describe_continuous_backups().table_name("prov-e2e-orchestrator").send().await.unwrap();
    let pitr = pitr.continuous_backups_description().unwrap().point_in_time_recovery_description().unwrap();
    assert_eq!(pitr.point_in_time_recovery_status().unwrap().as_str(), "ENABLED");

    // Bucket, with the aws CLI.
    let bucket = "percona-prov-e2e-backups";
    let versioning = aws_cli(&ep, &["s3api", "get-bucket-versioning", "--bucket", bucket]);
    assert_eq!(versioning["Status"], "Enabled");
    let encryption = aws_cli(&ep, &["s3api", "get-bucket-encryption", "--bucket", bucket]);
    assert_eq!(
        encryption["ServerSideEncryptionConfiguration"]["Rules"][0]["ApplyServerSideEncryptionByDefault"]
            ["SSEAlgorithm"],
        "AES256"
    );
    let public = aws_cli(&ep, &["s3api", "get-public-access-block", "--bucket", bucket]);
    for k in ["BlockPublicAcls", "IgnorePublicAcls", "BlockPublicPolicy", "RestrictPublicBuckets"] {
        assert_eq!(public["PublicAccessBlockConfiguration"][k], true, "{k}");
    }
    let lifecycle = aws_cli(&ep, &["s3api", "get-bucket-lifecycle-configuration", "--bucket", bucket]);
    let mut expiries = BTreeMap::new();
    for r in lifecycle["Rules"].as_array().unwrap() {
        if let Some(days) = r["Expiration"]["Days"].as_i64() {
            expiries.insert(r["Filter"]["Prefix"].as_str().unwrap().to_string(), days);
        }
        if let Some(days) = r["NoncurrentVersionExpiration"]["NoncurrentDays"].as_i64() {
            expiries.insert("noncurrent".into(), days);
        }
    }
    // Only noncurrent versions expire by age: the peers' retention deletes current
    // backups knowing which ones kept backups need.
    let want: BTreeMap<String, i64> = [("noncurrent", 7)].iter().map(|(k, v)| (k.to_string(), *v)).collect();
    assert_eq!(expiries, want);
    let cli_ttl =
        aws_cli(&ep, &["dynamodb", "describe-time-to-live", "--table-name", "prov-e2e-orchestrator"]);
    assert_eq!(cli_ttl["TimeToLiveDescription"]["AttributeName"], "expires_at");
    let cli_lb = aws_cli(&ep, &["elbv2", "describe-load-balancers", "--names", "prov-e2e-nlb"]);
    assert_eq!(cli_lb["LoadBalancers"][0]["Scheme"], "internal");

    // Secret: generated once, long, distinct.
    let secret_of = || async {
        c.secrets
            .get_secret_value()
            .secret_id("prov-e2e/mysql-credentials")
            .send()
            .await
            .unwrap()
            .secret_string()
            .unwrap()
            .to_string()
    };
    let secret = secret_of().await;
    let values: serde_json::Value = serde_json::from_str(&secret).unwrap();
    let keys: BTreeSet<&str> = values.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        ["backup", "monitor", "orchestrator", "replication", "root", "write_check"].into_iter().collect()
    );
    let distinct: BTreeSet<&str> =
        values.as_object().unwrap().values().map(|v| v.as_str().unwrap()).collect();
    assert_eq!(distinct.len(), 6);
    assert!(distinct.iter().all(|p| p.len() >= 32));
    assert!(!first.contains(values["root"].as_str().unwrap()), "apply printed a password");

    // IAM: the role EC2 assumes, the cluster-scoped policy, the profile.
    let role = c.iam.get_role().role_name("prov-e2e-node").send().await.unwrap();
    assert!(role.role().unwrap().assume_role_policy_document().unwrap().contains("ec2.amazonaws.com"));
    let policy =
        c.iam.get_role_policy().role_name("prov-e2e-node").policy_name("prov-e2e-node").send().await.unwrap();
    let doc = policy.policy_document();
    let decoded =
        if doc.starts_with('{') { doc.to_string() } else { provisioner::cloud::observe::url_decode(doc) };
    assert_eq!(
        provisioner::iam_policy::canonical_json(&decoded).unwrap(),
        provisioner::iam_policy::node_policy(id)
    );
    let profile = c.iam.get_instance_profile().instance_profile_name("prov-e2e-node").send().await.unwrap();
    assert_eq!(profile.instance_profile().unwrap().roles()[0].role_name(), "prov-e2e-node");

    // Again: nothing to do, no changing call, the secret untouched.
    let second = run_ok(&ep, &["apply", "--spec", &spec]);
    assert!(second.contains("no changes (16 resources as they should be)"), "{second}");
    assert!(second.contains("\n0 changing AWS calls\n"), "{second}");
    assert_eq!(secret_of().await, secret);

    // A new instance type: a new launch template version, and an instance refresh.
    let spec_text = std::fs::read_to_string(&b.spec_path).unwrap();
    std::fs::write(
        &b.spec_path,
        spec_text.replace("health_checks =", "instance_type = \"m5.large\"\nhealth_checks ="),
    )
    .unwrap();
    let plan = run_ok(&ep, &["plan", "--spec", &spec]);
    assert!(
        plan.contains("~ launch template prov-e2e-node\n    instance_type: t3.medium -> m5.large\n"),
        "{plan}"
    );
    assert!(plan.contains("0 to create, 1 to change, 0 to delete, 15 unchanged"), "{plan}");
    let third = run_ok(&ep, &["apply", "--spec", &spec]);
    assert!(
        third.contains("instance refresh not started: the endpoint does not implement")
            || third.contains("instance refresh ") && third.contains(" started"),
        "{third}"
    );
    let templates =
        c.ec2.describe_launch_templates().launch_template_names("prov-e2e-node").send().await.unwrap();
    assert_eq!(templates.launch_templates()[0].default_version_number(), Some(2));
    let versions = c
        .ec2
        .describe_launch_template_versions()
        .launch_template_name("prov-e2e-node")
        .versions("$Default")
        .send()
        .await
        .unwrap();
    assert_eq!(
        versions.launch_template_versions()[0]
            .launch_template_data()
            .unwrap()
            .instance_type()
            .unwrap()
            .as_str(),
        "m5.large"
    );
    assert!(run_ok(&ep, &["apply", "--spec", &spec]).contains("no changes"));

    // Status names what exists.
    let status = run_ok(&ep, &["status", "--spec", &spec]);
    assert!(status.contains("auto scaling group") && status.contains("nodes (3):"), "{status}");

    // Destroy asks first; then keeps the bucket and the secret; --delete-data removes them.
    let refused = provisioner_command(&ep, &["destroy", "--spec", &spec]);
    assert!(!refused.status.success());
    assert!(
        text(&refused).contains("destroy needs the cluster id typed on a terminal, or --yes"),
        "{}",
        text(&refused)
    );
    let destroyed = run_ok(&ep, &["destroy", "--spec", &spec, "--yes"]);
    assert!(destroyed.contains("kept S3 bucket percona-prov-e2e-backups"), "{destroyed}");
    assert!(destroyed.contains("kept secret prov-e2e/mysql-credentials"), "{destroyed}");
    let after = provisioner::cloud::observe::observe(
        &c,
        &provisioner::spec::ClusterSpec::load(&b.spec_path).unwrap(),
    )
    .await
    .unwrap();
    let left: Vec<String> = after.resources.iter().map(|r| format!("{} {}", r.kind, r.name)).collect();
    assert_eq!(
        left,
        [
            "S3 bucket percona-prov-e2e-backups",
            "secret prov-e2e/mysql-credentials",
            "secret prov-e2e/peer-ca",
            "secret prov-e2e/api-tokens"
        ]
    );
    assert!(c.elb.describe_load_balancers().names("prov-e2e-nlb").send().await.is_err());
    assert!(c.iam.get_role().role_name("prov-e2e-node").send().await.is_err());
    // Applying again brings the rest back with the same credentials.
    run_ok(&ep, &["apply", "--spec", &spec]);
    assert_eq!(secret_of().await, secret);
    run_ok(&ep, &["destroy", "--spec", &spec, "--yes", "--delete-data"]);
    let after = provisioner::cloud::observe::observe(
        &c,
        &provisioner::spec::ClusterSpec::load(&b.spec_path).unwrap(),
    )
    .await
    .unwrap();
    assert!(after.resources.is_empty(), "{:?}", after.resources);
}

/// Bad specs fail with one line naming the key, before any AWS call: the endpoint
/// here answers nothing, so a call would fail differently.
#[test]
fn bad_specs_fail_before_any_call() {
    let dir = test_dir("orch-spec-").unwrap();
    peer::binary("provisioner").expect("provisioner binary");
    let good = aws::spec_toml("bad-spec", "vpc-1", &["subnet-a".into(), "subnet-b".into()], 3);
    let cases = [
        (good.replace("instance_count = 3", "instance_count = 4"), "instance_count: 4 nodes: give 3, 5 or 7"),
        (
            good.replace("subnet_ids = [\"subnet-a\", \"subnet-b\"]", "subnet_ids = [\"subnet-a\"]"),
            "subnet_ids: give at least two private subnets",
        ),
        (good.replace("health_checks =", "colour = \"blue\"\nhealth_checks ="), "unknown field `colour`"),
    ];
    for (i, (spec, want)) in cases.iter().enumerate() {
        let path = dir.path().join(format!("bad-{i}.toml"));
        std::fs::write(&path, spec).unwrap();
        let started = std::time::Instant::now();
        let o = provisioner_command("http://127.0.0.1:9", &["apply", "--spec", path.to_str().unwrap()]);
        let err = String::from_utf8_lossy(&o.stderr).to_string();
        assert!(!o.status.success());
        assert!(err.contains(want), "want `{want}` in: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
        assert!(!err.contains("AWS"), "{err}");
        assert!(started.elapsed() < Duration::from_secs(5));
    }
}

/// A peer configured with `credentials_secret` logs in with the password the
/// provisioner generated, and picks up a rotated one after the server refuses the old.
#[tokio::test]
async fn peer_logs_in_with_the_password_from_the_secret_and_follows_a_rotation() {
    let block = HostBlock::reserve(2).unwrap();
    let dir = test_dir("orch-secret-").unwrap();
    let (db_host, aws_host) = (block.host(1), block.host(2));
    let moto = Moto::start(&aws_host, dir.path(), block.state_dir(), Lifetime::Test, None).await.unwrap();
    let resources =
        aws::provision(&moto.endpoint, "secret-peer", std::slice::from_ref(&db_host)).await.unwrap();
    let c = aws::provisioner_clients(&moto.endpoint).await;
    let read_secret = || async {
        let v = c.secrets.get_secret_value().secret_id(&resources.credentials_secret).send().await.unwrap();
        serde_json::from_str::<serde_json::Value>(v.secret_string().unwrap()).unwrap()
    };
    let secret = read_secret().await;
    let first_password = secret["orchestrator"].as_str().unwrap().to_string();

    let mut server = DbServer::init(
        Flavor::Mariadb,
        1,
        &db_host,
        &dir.path().join("db"),
        block.state_dir(),
        true,
        Lifetime::Test,
    )
    .unwrap();
    server.start().await.unwrap();
    let users = create_user_statements(
        Flavor::Mariadb.server_flavor(),
        UserRole::Orchestrator,
        ORCH_USER,
        &first_password,
        "app",
    );
    // Outside the binlog: semi-sync that never falls back would hold a logged commit
    // of this replica-less master forever.
    server.exec(&format!("SET sql_log_bin = 0; {}", users.join("; "))).await.unwrap();

    let mut spec = PeerGroupSpec::new("secret", vec![server.key()]);
    spec.aws = Some(PeerAws::new(&moto.endpoint, &resources));
    spec.mysql_credentials_secret = Some(resources.credentials_secret.clone());
    let peers = peer::start_peers(
        std::slice::from_ref(&db_host),
        &spec,
        dir.path(),
        block.state_dir(),
        Lifetime::Test,
        &[None],
    )
    .await
    .unwrap();
    let url = peers[0].url("/api/cluster/secret");
    let reachable = |v: &serde_json::Value| {
        v["instances"].as_array().is_some_and(|i| i.len() == 1 && i[0]["reachable"] == true)
    };
    if let Err(last) = peer::poll_json(&url, Duration::from_secs(20), reachable).await {
        panic!("the peer never logged in with the secret's password: {last}\n{}", peers[0].log_tail(30));
    }

    // Rotate: the secret first, then the account. The peer's next login is refused,
    // it reads the secret again and logs in with the new password.
    let second_password = provisioner::credentials::generate_password(40);
    let mut rotated = secret.clone();
    rotated["orchestrator"] = second_password.clone().into();
    c.secrets
        .put_secret_value()
        .secret_id(&resources.credentials_secret)
        .secret_string(rotated.to_string())
        .send()
        .await
        .unwrap();
    server
        .exec(&format!("SET sql_log_bin = 0; ALTER USER '{ORCH_USER}'@'%' IDENTIFIED BY '{second_password}'"))
        .await
        .unwrap();
    // Drop the peer's kept connection so the next probe logs in again.
    let sessions =
        format!("SELECT GROUP_CONCAT(id) FROM information_schema.processlist WHERE user = '{ORCH_USER}'");
    if let Some(ids) = server.scalar(&sessions).await.unwrap() {
        for id in ids.split(',') {
            let _ = server.exec(&format!("KILL {id}")).await;
        }
    }
    let log_path = peers[0].log_path.clone();
    let picked_up = peer::wait_until(Duration::from_secs(30), || async {
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        let Ok(v) = peer::get_json(&url).await else { return false };
        log.contains("MySQL credentials changed in the secret") && v["instances"][0]["reachable"] == true
    })
    .await;
    assert!(picked_up.is_ok(), "the peer did not pick up the rotated password:\n{}", peers[0].log_tail(30));
    // The connection it holds now was opened with the new password.
    let after = server.scalar(&sessions).await.unwrap();
    assert!(after.is_some(), "the peer holds no connection after the rotation:\n{}", peers[0].log_tail(30));
    let log = std::fs::read_to_string(&peers[0].log_path).unwrap();
    assert!(log.contains("MySQL credentials read from Secrets Manager"), "{log}");
    assert!(
        log.contains("MySQL credentials changed in the secret"),
        "the peer never re-read the secret:\n{log}"
    );
    for p in [&first_password, &second_password] {
        assert!(!log.contains(p.as_str()), "a password appears in the peer's log");
    }
}
