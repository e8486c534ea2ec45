//! End to end: access control on every port. Tokens and scopes on HTTP and gRPC (and
//! the routes open to load balancers and scrapers), size limits and random input,
//! mutual TLS between peers (a peer of another CA is kept out), TLS on port 3000, and
//! tokens from a file and from a Secrets Manager secret.

use std::time::Duration;

use orch_proto::v1 as pb;
use orch_proto::v1::orchestrator_client::OrchestratorClient;
use orch_tests::ctl::Ctl;
use orch_tests::peer::{
    self, client_with_token, http_client, PeerTlsFiles, ADMIN_TOKEN, OPERATE_TOKEN, READ_TOKEN,
};
use orch_tests::raft::wait_agreed_leader;
use orch_tests::PeerBed;
use serde_json::Value;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

const ELECTION: Duration = Duration::from_secs(10);

async fn grpc(address: &str) -> OrchestratorClient<Channel> {
    let channel = Endpoint::from_shared(format!("http://{address}")).unwrap().connect().await.unwrap();
    OrchestratorClient::new(channel)
}

fn with_token<T>(message: T, token: Option<&str>) -> tonic::Request<T> {
    let mut r = tonic::Request::new(message);
    if let Some(t) = token {
        r.metadata_mut().insert("authorization", format!("Bearer {t}").parse().unwrap());
    }
    r
}

async fn status_of(client: &reqwest::Client, method: reqwest::Method, url: &str) -> (u16, Value) {
    let resp = client.request(method, url).send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn every_route_needs_a_token_with_the_right_scope_but_the_open_ones() {
    let bed = PeerBed::start(3, |_| {}).await.expect("peers");
    let all: Vec<_> = bed.peers.iter().collect();
    wait_agreed_leader(&all, ELECTION).await.unwrap();
    let p = &bed.peers[1];
    let (none, wrong) = (client_with_token(None), client_with_token(Some("orch_not_a_real_token")));
    let (read, operate, admin) =
        (client_with_token(Some(READ_TOKEN)), client_with_token(Some(OPERATE_TOKEN)), http_client());
    use reqwest::Method;

    // HTTP: no token or a wrong one is 401 (JSON, with WWW-Authenticate); the scope
    // decides the rest.
    for path in ["/api/clusters", "/api/raft-state", "/api/audit", "/api/raft/state-machine", "/api/status"] {
        let resp = none.get(p.url(path)).send().await.unwrap();
        assert_eq!(resp.status().as_u16(), 401, "{path}");
        assert_eq!(resp.headers()["www-authenticate"], "Bearer");
        let body: Value = resp.json().await.unwrap();
        assert!(body["error"].as_str().unwrap().contains("no bearer token"), "{body}");
        let (status, body) = status_of(&wrong, Method::GET, &p.url(path)).await;
        assert_eq!(status, 401, "{path}: {body}");
        assert!(body["error"].as_str().unwrap().contains("not valid"), "{body}");
        assert_eq!(status_of(&read, Method::GET, &p.url(path)).await.0, 200, "{path}");
    }
    let downtime = p.url("/api/begin-downtime/10.255.9.9/3306/x/maintenance/1h");
    let (status, body) = status_of(&none, Method::POST, &downtime).await;
    assert_eq!(status, 401, "{body}");
    let (status, body) = status_of(&read, Method::POST, &downtime).await;
    assert_eq!(status, 403, "{body}");
    assert!(body["error"].as_str().unwrap().contains("scope read; begin_downtime needs operate"), "{body}");
    assert_eq!(status_of(&operate, Method::POST, &downtime).await.0, 200);
    let (status, body) = status_of(&operate, Method::POST, &p.url("/api/disable-global-recoveries")).await;
    assert_eq!(status, 403, "admin only: {body}");
    let (status, body) = status_of(&operate, Method::POST, &p.url("/api/force-master-failover/x")).await;
    assert_eq!(status, 403, "admin only: {body}");
    assert_eq!(status_of(&admin, Method::POST, &p.url("/api/disable-global-recoveries")).await.0, 200);
    assert_eq!(status_of(&admin, Method::POST, &p.url("/api/enable-global-recoveries")).await.0, 200);
    // No raw state-machine write exists, for anyone.
    let raw = admin
        .post(p.url("/api/raft/apply"))
        .json(&serde_json::json!({"type": "record_recovery_intent", "cluster": "x", "failed_master": "a:1", "reason": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(raw.status().as_u16(), 404);

    // Open without a token: liveness, the load balancer's role checks, metrics, the UI page.
    for (path, want) in [
        ("/api/health", 200),
        ("/health/primary", 503),
        ("/health/replica", 503),
        ("/metrics", 200),
        ("/", 200),
        ("/ui/app.js", 200),
        ("/ui/app.css", 200),
        // The UI's data is not open: the live feed and the reads need a token.
        ("/api/events", 401),
        ("/api/v1/topology/x", 401),
        ("/ui/other.js", 401),
    ] {
        assert_eq!(none.get(p.url(path)).send().await.unwrap().status().as_u16(), want, "{path}");
    }
    // The page may talk to this peer only.
    let page = none.get(p.url("/")).send().await.unwrap();
    let policy = page.headers()["content-security-policy"].to_str().unwrap().to_string();
    assert!(policy.contains("default-src 'none'") && policy.contains("connect-src 'self'"), "{policy}");

    // Sizes and strict parsing: a large body is 413, a bad argument 400 naming it.
    // Over HTTP/2, so the early answer arrives while the client still sends (HTTP/1.1
    // closes the connection under a client still writing).
    let big = serde_json::json!({ "id": 9, "raft": "x".repeat(200_000), "http": "h:1" });
    let h2 = reqwest::Client::builder().http2_prior_knowledge().no_proxy().build().unwrap();
    assert_eq!(
        h2.post(p.url("/api/raft/add-peer"))
            .header("authorization", format!("Bearer {ADMIN_TOKEN}"))
            .json(&big)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16(),
        413
    );
    let (status, body) = status_of(&admin, Method::POST, &p.url("/api/raft/add-peer")).await;
    assert_eq!(status, 400, "no body: {body}");
    let (status, body) =
        status_of(&admin, Method::POST, &p.url("/api/graceful-master-takeover/c?colour=red")).await;
    assert_eq!(status, 400, "{body}");
    let (status, body) =
        status_of(&admin, Method::POST, &p.url("/api/begin-downtime/a%20b/3306/x/y/1h")).await;
    assert_eq!(status, 400, "{body}");
    assert!(body["error"].as_str().unwrap().starts_with("instance: "), "{body}");

    // gRPC: the same rules.
    let mut g = grpc(&p.http_address()).await;
    let e = g.status(with_token(pb::StatusRequest {}, None)).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unauthenticated, "{e:?}");
    let e = g.status(with_token(pb::StatusRequest {}, Some("orch_wrong"))).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unauthenticated, "{e:?}");
    let me = g.status(with_token(pb::StatusRequest {}, Some(READ_TOKEN))).await.unwrap().into_inner();
    assert_eq!((me.caller.as_str(), me.caller_scope.as_str()), ("test-reader", "read"));
    let begin = || pb::BeginDowntimeRequest {
        instance: "10.255.9.8:3306".into(),
        duration: "1h".into(),
        reason: "r".into(),
    };
    let e = g.begin_downtime(with_token(begin(), Some(READ_TOKEN))).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");
    let ok = g.begin_downtime(with_token(begin(), Some(OPERATE_TOKEN))).await.unwrap().into_inner();
    assert!(ok.log_index > 0);
    let e = g
        .force_failover(with_token(
            pb::ForceFailoverRequest { cluster: "x".into(), ..Default::default() },
            Some(OPERATE_TOKEN),
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");
    let e = g
        .force_failover(with_token(
            pb::ForceFailoverRequest { cluster: "x".into(), ..Default::default() },
            Some(ADMIN_TOKEN),
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound, "{e:?}");
    let huge = pb::BeginDowntimeRequest { reason: "x".repeat(100_000), ..begin() };
    let e = g.begin_downtime(with_token(huge, Some(ADMIN_TOKEN))).await.unwrap_err();
    assert!(matches!(e.code(), tonic::Code::OutOfRange | tonic::Code::ResourceExhausted), "{e:?}");
    let e = g
        .begin_downtime(with_token(
            pb::BeginDowntimeRequest { duration: "1 fortnight".into(), ..begin() },
            Some(ADMIN_TOKEN),
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    assert!(e.message().starts_with("duration: "), "{e:?}");

    // The audit shows who did what, the refusals included.
    let audit = http_client().get(p.url("/api/audit")).send().await.unwrap().json::<Value>().await.unwrap();
    let entries = audit["entries"].as_array().unwrap();
    assert!(entries
        .iter()
        .any(|e| e["who"] == "test-reader" && e["result"] == "denied" && e["operation"] == "begin_downtime"));
    assert!(entries
        .iter()
        .any(|e| e["who"] == "test-operator" && e["result"] == "ok" && e["operation"] == "begin_downtime"));
    assert!(entries.iter().any(|e| e["who"] == "test-admin" && e["operation"] == "set_global_recoveries"));
}

/// A small deterministic generator for the random requests.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    /// A random path segment: printable junk, unicode, percent-escapes, or empty.
    fn junk(&mut self) -> String {
        const PIECES: [&str; 16] = [
            "a",
            "%00",
            "%ff",
            "..",
            "%2F",
            "é",
            "💥",
            " ",
            ":",
            "0",
            "-1",
            "99999999999999999999999",
            "%",
            "'",
            "\"",
            "[::",
        ];
        (0..self.below(5)).map(|_| PIECES[self.below(PIECES.len())]).collect()
    }
}

#[tokio::test]
async fn random_requests_get_a_clear_answer_and_never_hurt_a_peer() {
    let bed = PeerBed::start(3, |_| {}).await.expect("peers");
    let all: Vec<_> = bed.peers.iter().collect();
    wait_agreed_leader(&all, ELECTION).await.unwrap();
    let p = &bed.peers[0];
    let client = http_client();
    // Each route with the number of segments it takes: the junk then reaches its parsers.
    const ROUTES: [(&str, usize); 22] = [
        ("api/cluster", 1),
        ("api/instance", 2),
        ("api/discover", 2),
        ("api/forget", 2),
        ("api/begin-downtime", 5),
        ("api/end-downtime", 2),
        ("api/register-candidate", 3),
        ("api/graceful-master-takeover", 1),
        ("api/graceful-master-takeover", 3),
        ("api/force-master-failover", 1),
        ("api/ack-recovery", 1),
        ("api/raft/add-peer", 0),
        ("api/raft/remove-peer", 1),
        ("api/raft/transfer-leadership", 1),
        ("api/recoveries", 1),
        ("api/audit", 0),
        ("api/problems", 0),
        ("health/replica", 0),
        ("api/force-master-takeover", 3),
        ("api/downtimed", 0),
        ("api", 2),
        ("x", 1),
    ];
    let seed =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64 | 1;
    eprintln!("random requests, seed {seed}");
    let mut rng = Rng(seed);
    let mut by_status = std::collections::BTreeMap::<u16, usize>::new();
    for _ in 0..400 {
        let (route, segments) = ROUTES[rng.below(ROUTES.len())];
        let mut path = format!("/{route}");
        let segments = if rng.below(5) == 0 { rng.below(6) } else { segments };
        for _ in 0..segments {
            path.push('/');
            path.push_str(&rng.junk());
        }
        if rng.below(3) == 0 {
            path += &format!("?{}={}&limit={}", rng.junk(), rng.junk(), rng.junk());
        }
        let method =
            [reqwest::Method::GET, reqwest::Method::POST, reqwest::Method::POST, reqwest::Method::DELETE]
                [rng.below(4)]
            .clone();
        let body: Vec<u8> = (0..rng.below(300)).map(|_| rng.next() as u8).collect();
        let Ok(url) = reqwest::Url::parse(&format!("http://{}{path}", p.http_address())) else { continue };
        let mut req = client.request(method, url).body(body);
        if rng.below(2) == 0 {
            req = req.header("content-type", "application/json");
        }
        let resp = req.send().await.unwrap_or_else(|e| panic!("{path}: no answer: {e}"));
        let status = resp.status().as_u16();
        *by_status.entry(status).or_default() += 1;
        // A health check of a host whose mysqld is not known answers 503 by design.
        assert!((200..500).contains(&status) || status == 503, "{path}: status {status}");
        if status >= 400 {
            let body: Value =
                resp.json().await.unwrap_or_else(|e| panic!("{path}: {status} without a JSON body: {e}"));
            assert!(body["error"].is_string() || body["healthy"] == false, "{path}: {body}");
        }
    }
    // Random bytes as gRPC messages of every method: an error status, never a crash.
    let methods = [
        "Status",
        "GetCluster",
        "Switchover",
        "ForceFailover",
        "BeginDowntime",
        "SetPromotionRule",
        "AddRaftPeer",
        "Discover",
        "ListAudit",
    ];
    for i in 0..200 {
        let method = methods[i % methods.len()];
        let len = rng.below(200);
        let mut frame = vec![0u8];
        // The length prefix is usually right, sometimes not.
        let declared = if rng.below(4) == 0 { rng.next() as u32 } else { len as u32 };
        frame.extend_from_slice(&declared.to_be_bytes());
        frame.extend((0..len).map(|_| rng.next() as u8));
        let h2 = reqwest::Client::builder().http2_prior_knowledge().no_proxy().build().unwrap();
        let resp = h2
            .post(format!("http://{}/orchestrator.v1.Orchestrator/{method}", p.http_address()))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .header("authorization", format!("Bearer {ADMIN_TOKEN}"))
            .body(frame)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{method}: no answer: {e}"));
        assert_eq!(resp.status().as_u16(), 200, "{method}: gRPC answers carry their status in the trailers");
    }
    eprintln!("HTTP statuses of the random requests: {by_status:?}");
    // Still healthy, still leading or following, nothing panicked.
    assert_eq!(http_client().get(p.url("/api/raft-health")).send().await.unwrap().status().as_u16(), 200);
    let log = std::fs::read_to_string(&p.log_path).unwrap();
    assert!(!log.contains("panicked"), "{}", p.log_tail(30));
}

fn tls_client(files: &PeerTlsFiles) -> ClientTlsConfig {
    let ca = Certificate::from_pem(std::fs::read(&files.ca).unwrap());
    let identity =
        Identity::from_pem(std::fs::read(&files.cert).unwrap(), std::fs::read(&files.key).unwrap());
    ClientTlsConfig::new().ca_certificate(ca).identity(identity)
}

/// A Ping to `raft_address` with `tls` (none: plain h2c).
async fn ping(raft_address: &str, tls: Option<ClientTlsConfig>) -> Result<(), String> {
    let scheme = if tls.is_some() { "https" } else { "http" };
    let mut e =
        Endpoint::from_shared(format!("{scheme}://{raft_address}")).unwrap().timeout(Duration::from_secs(2));
    if let Some(t) = tls {
        e = e.tls_config(t).unwrap();
    }
    let channel = e.connect().await.map_err(|e| format!("connect: {e}"))?;
    let mut c = orch_proto::raft::raft_client::RaftClient::new(channel);
    c.ping(orch_proto::raft::PingRequest { from: 99 }).await.map(|_| ()).map_err(|s| format!("{s:?}"))
}

#[tokio::test]
async fn mutual_tls_keeps_out_a_peer_of_another_ca() {
    rustls::crypto::ring::default_provider().install_default().ok();
    let bed = PeerBed::start_with_spare(3, 1, |_| {}).await.expect("peers");
    let all: Vec<_> = bed.peers.iter().collect();
    let leader = wait_agreed_leader(&all, ELECTION).await.unwrap();
    let term =
        peer::get_json(&bed.peer(leader).url("/api/raft-state")).await.unwrap()["term"].as_u64().unwrap();
    let hosts: Vec<String> = (1..=4).map(|i| bed.hosts.host(i)).collect();
    let ours = PeerTlsFiles {
        ca: bed.dir.path().join("tls/ca.crt"),
        cert: bed.dir.path().join("tls/node-1.crt"),
        key: bed.dir.path().join("tls/node-1.key"),
    };
    // Another CA (same cluster name) signs certificates for every address.
    let foreign = peer::make_certs(&bed.dir.path().join("foreign-tls"), "test", &hosts).unwrap();
    let raft1 = format!("{}:10008", hosts[0]);

    // Our CA's certificate gets an answer; no certificate, or another CA's, does not.
    ping(&raft1, Some(tls_client(&ours))).await.expect("a member's certificate is accepted");
    let plain = ping(&raft1, None).await.unwrap_err();
    eprintln!("plain connection: {plain}");
    let no_cert =
        ClientTlsConfig::new().ca_certificate(Certificate::from_pem(std::fs::read(&ours.ca).unwrap()));
    let e = ping(&raft1, Some(no_cert)).await.unwrap_err();
    eprintln!("TLS without a client certificate: {e}");
    let e = ping(&raft1, Some(tls_client(&foreign[3]))).await.unwrap_err();
    eprintln!("another CA's certificate: {e}");

    // Our CA's certificate for an address that is not a member (a removed peer, say):
    // it may talk Raft, but not hand the leader anything in an operator's name.
    let ca_key = std::fs::read_to_string(bed.dir.path().join("tls/ca.key")).unwrap();
    let outsider = provisioner::certs::CertAuthority::from_key_pem("test", &ca_key)
        .unwrap()
        .node(&provisioner::certs::NodeSpec { id: 4, names: vec![hosts[3].clone()] }, 1)
        .unwrap();
    let dir = bed.dir.path().join("outsider");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("node.crt"), &outsider.cert).unwrap();
    std::fs::write(dir.join("node.key"), &outsider.key).unwrap();
    let outsider =
        PeerTlsFiles { ca: ours.ca.clone(), cert: dir.join("node.crt"), key: dir.join("node.key") };
    ping(&raft1, Some(tls_client(&outsider))).await.expect("a certificate of our CA talks Raft");
    let channel = Endpoint::from_shared(format!("https://{raft1}"))
        .unwrap()
        .tls_config(tls_client(&outsider))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut c = orch_proto::raft::raft_client::RaftClient::new(channel);
    let payload = br#"{"Operation":{"caller":{"identity":{"name":"x","scope":"admin"},"from":"x","peer":1},"operation":{"operation":"set_global_recoveries","enabled":false}}}"#;
    let e = c.forward(orch_proto::raft::RaftPayload { payload: payload.to_vec() }).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");
    assert!(e.message().contains("names no member"), "{e:?}");
    let e = c.pause_heartbeats(orch_proto::raft::PauseHeartbeatsRequest { millis: 1000 }).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");
    let enabled =
        http_client().get(bed.peer(leader).url("/api/check-global-recoveries")).send().await.unwrap();
    assert_eq!(enabled.json::<Value>().await.unwrap()["recoveries_enabled"], true);

    // The intruder: a peer with another CA's certificate that believes it belongs to
    // a group of five with the members. It campaigns; the group never hears of it.
    let mut members = hosts.clone();
    members.push("127.0.0.250".into());
    let spec = orch_tests::peer::PeerGroupSpec::raft_only();
    let base = bed.dir.path().join("intruder");
    let config = peer::peer_config(4, &members, &spec, &base.join("data"), Some(&foreign[3]));
    let bin = peer::binary("orchestrator").unwrap();
    let intruder = peer::spawn_peer(
        &bin,
        4,
        &hosts[3],
        &base,
        &config,
        bed.hosts.state_dir(),
        orch_tests::process::Lifetime::Test,
        None,
    )
    .unwrap();
    intruder.wait_healthy(Duration::from_secs(20)).await.unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let all: Vec<_> = bed.peers.iter().collect();
    assert_eq!(wait_agreed_leader(&all, ELECTION).await.unwrap(), leader, "the intruder disturbed the group");
    let now = peer::get_json(&bed.peer(leader).url("/api/raft-state")).await.unwrap();
    assert_eq!(now["term"].as_u64().unwrap(), term, "an election happened: {now}");

    // Asked to add it, the leader cannot replicate to it: refused, and it is not kept.
    let ctl = Ctl::new(bed.dir.path(), vec![bed.peer(leader).http_address()], Some(ADMIN_TOKEN)).unwrap();
    let add = ctl.run(&[
        "raft",
        "add",
        "--id",
        "4",
        "--raft",
        &format!("{}:10008", hosts[3]),
        "--http",
        &format!("{}:3000", hosts[3]),
    ]);
    assert_ne!(add.code, 0, "{add:?}");
    assert!(add.stderr.contains("did not catch up") && add.stderr.contains("certificate"), "{add:?}");
    let state = peer::get_json(&bed.peer(leader).url("/api/raft-state")).await.unwrap();
    let ids: Vec<u64> =
        state["members"].as_array().unwrap().iter().map(|m| m["id"].as_u64().unwrap()).collect();
    assert_eq!(ids, vec![1, 2, 3], "{state}");
    // The group still works.
    let (status, body) =
        orch_tests::raft::write_marker(bed.peer(leader), 7, "after-the-intruder").await.unwrap();
    assert_eq!(status, 200, "{body}");
    // The intruder never led anything: no peer answered its votes.
    let its = peer::get_json(&intruder.url("/api/raft-state")).await.unwrap();
    assert_ne!(its["role"], "leader", "{its}");
    assert!(its["term"].as_u64().unwrap() > 0, "it campaigned: {its}");
    drop(intruder);
}

#[tokio::test]
async fn the_api_port_can_serve_tls() {
    let bed = PeerBed::start(3, |spec| spec.api_tls = true).await.expect("peers");
    let endpoints: Vec<String> = bed.peers.iter().map(|p| p.http_address()).collect();
    let mut ctl = Ctl::new(bed.dir.path(), endpoints.clone(), Some(READ_TOKEN)).unwrap();
    let plain = ctl.run(&["status"]);
    assert_eq!(plain.code, 5, "plaintext to a TLS port: {plain:?}");
    ctl.global = vec!["--ca-cert".into(), bed.dir.path().join("tls/ca.crt").display().to_string()];
    let deadline = std::time::Instant::now() + ELECTION;
    loop {
        let status = ctl.run(&["-o", "json", "status"]);
        assert_eq!(status.code, 0, "{status:?}");
        if status.json()["leader_id"].as_u64().unwrap_or(0) > 0 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no leader: {status:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let admin = ctl.with_token(bed.dir.path(), ADMIN_TOKEN).unwrap();
    let done = admin.json(&["downtime", "begin", "10.255.1.1:3306", "--duration", "1h", "--reason", "tls"]);
    assert!(done["warning"].as_str().unwrap().contains("not known"), "{done}");
}

#[tokio::test]
async fn tokens_come_from_files_and_from_a_secrets_manager_secret() {
    let file_token = "orch_from_a_file_7d1e2c3b4a5f6e7d8c9b0a1f2e3d4c5b";
    let secret_token = "orch_from_the_secret_0a9b8c7d6e5f4a3b2c1d0e9f8a7b6c5d";
    let hashed_secret_token = "orch_hashed_in_the_secret_1b2c3d4e5f6a7b8c9d0e1f2a3b4c";
    let bed = {
        let hosts = orch_tests::hosts::HostBlock::reserve(1).unwrap();
        let dir = orch_tests::test_dir("orch-secret-").unwrap();
        let moto = orch_tests::aws::Moto::start(
            &hosts.host(1),
            dir.path(),
            hosts.state_dir(),
            orch_tests::process::Lifetime::Test,
            None,
        )
        .await
        .unwrap();
        let clients = orch_tests::aws::clients(&moto.endpoint).await;
        let json = serde_json::json!([
            { "name": "from-secret", "scope": "operate", "token": secret_token },
            { "name": "hashed-in-secret", "scope": "read", "sha256": orchestrator::auth::tokens::hash_hex(hashed_secret_token) },
        ]);
        clients
            .secrets
            .create_secret()
            .name("orch/tokens")
            .secret_string(json.to_string())
            .send()
            .await
            .unwrap();
        let token_path = dir.path().join("file-token");
        std::fs::write(&token_path, format!("{file_token}\n")).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&token_path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let endpoint = moto.endpoint.clone();
        let bed = PeerBed::start(3, move |spec| {
            spec.auth_settings = vec!["tokens_secret = \"orch/tokens\"".into()];
            spec.extra_config = vec![
                format!("[aws]\nregion = \"{}\"\nendpoint_url = \"{endpoint}\"", orch_tests::aws::REGION),
                format!(
                    "[[auth.tokens]]\nname = \"from-file\"\nscope = \"admin\"\nfile = \"{}\"",
                    token_path.display()
                ),
            ];
        })
        .await
        .expect("peers");
        (bed, moto, hosts, dir)
    };
    let (bed, _moto, _hosts, _dir) = &bed;
    let all: Vec<_> = bed.peers.iter().collect();
    wait_agreed_leader(&all, ELECTION).await.unwrap();
    let p = &bed.peers[2];
    let mut g = grpc(&p.http_address()).await;
    for (token, name, scope) in [
        (file_token, "from-file", "admin"),
        (secret_token, "from-secret", "operate"),
        (hashed_secret_token, "hashed-in-secret", "read"),
        (READ_TOKEN, "test-reader", "read"),
    ] {
        let me = g.status(with_token(pb::StatusRequest {}, Some(token))).await.unwrap().into_inner();
        assert_eq!((me.caller.as_str(), me.caller_scope.as_str()), (name, scope));
    }
    let found = peer::find_secret_in_logs(&bed.peers, &[file_token, secret_token, hashed_secret_token]);
    assert!(found.is_none(), "{found:?}");
}
