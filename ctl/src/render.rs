//! How answers are shown: tables for people (comfy-table), or the reply message as
//! JSON (`-o json`), exactly as the API sent it.

use comfy_table::{presets, Cell, ContentArrangement, Table};

/// `println!` to standard output; a reader that went away (`orchctl ... | head`) ends
/// orchctl quietly instead of a panic.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if writeln!(std::io::stdout(), $($arg)*).is_err() {
            std::process::exit(0);
        }
    }};
}
use orch_proto::v1 as pb;
use serde::Serialize;

/// `table` or `json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    Table,
    Json,
}

/// Writes `text` to standard output as it is (no newline).
pub fn say_raw(text: &str) {
    use std::io::Write as _;
    if write!(std::io::stdout(), "{text}").is_err() {
        std::process::exit(0);
    }
}

/// Prints `value` as pretty JSON.
pub fn json<T: Serialize>(value: &T) {
    match serde_json::to_string_pretty(value) {
        Ok(text) => say!("{text}"),
        Err(e) => eprintln!("orchctl: cannot encode the answer as JSON: {e}"),
    }
}

/// One JSON document per line (for `watch`).
pub fn json_line<T: Serialize>(value: &T) {
    if let Ok(text) = serde_json::to_string(value) {
        say!("{text}");
    }
}

fn table(header: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_preset(presets::NOTHING).set_content_arrangement(ContentArrangement::Disabled);
    t.set_header(header.iter().map(Cell::new));
    t
}

/// `12:34:56` (UTC) of a Unix-millisecond time, or `-`.
pub fn clock(unix_ms: i64) -> String {
    if unix_ms <= 0 {
        return "-".into();
    }
    let secs = unix_ms / 1000;
    let (h, m, s) = ((secs / 3600) % 24, (secs / 60) % 60, secs % 60);
    format!("{h:02}:{m:02}:{s:02}")
}

/// `2026-12-01 12:34:56 UTC` of a Unix-millisecond time, or `-`.
pub fn date_time(unix_ms: i64) -> String {
    if unix_ms <= 0 {
        return "-".into();
    }
    let days = unix_ms.div_euclid(86_400_000);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02} {} UTC", clock(unix_ms))
}

/// How long ago `unix_ms` was, as `0.4s ago` (this peer's last probe of an instance).
fn age(now_unix_ms: i64, unix_ms: i64) -> String {
    if unix_ms <= 0 {
        return "never".into();
    }
    format!("{:.1}s ago", (now_unix_ms - unix_ms).max(0) as f64 / 1000.0)
}

fn dash(s: &str) -> &str {
    if s.is_empty() {
        "-"
    } else {
        s
    }
}

pub fn status(s: &pb::StatusReply) {
    let leader = if s.leader_id == 0 { "none known".to_string() } else { format!("peer {}", s.leader_id) };
    say!(
        "peer {} at {} (version {}), Raft {} in term {}, leader {}",
        s.node_id,
        s.http_address,
        s.version,
        s.raft_role,
        s.raft_term,
        leader
    );
    say!(
        "up {} s; {} instances in {} clusters; {}",
        s.uptime_seconds,
        s.known_instances,
        s.clusters,
        if s.quorum_contact { "in contact with a quorum" } else { "OUT OF CONTACT with a quorum" }
    );
    say!("you are {} ({})", s.caller, s.caller_scope);
}

pub fn clusters(r: &pb::ListClustersReply) {
    let mut t = table(&["ALIAS", "MASTER", "RECORDED MASTER", "INSTANCES", "REACHABLE"]);
    for c in &r.clusters {
        t.add_row(vec![
            c.alias.clone(),
            c.master.clone(),
            dash(&c.recorded_master).to_string(),
            c.instances.to_string(),
            c.reachable.to_string(),
        ]);
    }
    say!("{t}");
}

pub fn topology(t: &pb::ClusterTopology) {
    let mut line = format!("cluster {} (master {}", t.alias, t.master);
    if !t.recorded_master.is_empty() && t.recorded_master != t.master {
        line += &format!(", Raft records {}", t.recorded_master);
    }
    if t.open_recovery_id != 0 {
        line += &format!(", RECOVERY {} RUNNING", t.open_recovery_id);
    }
    say!("{line}, epoch {})", t.fencing_epoch);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    let mut table = table(&[
        "INSTANCE",
        "ROLE",
        "STATE",
        "RO",
        "IO/SQL",
        "LAG",
        "SOURCE",
        "NOTES",
        "CHECKED",
        "GTID EXECUTED",
    ]);
    for i in &t.instances {
        let (threads, lag, source) = match &i.replication {
            Some(r) => (
                format!("{}/{}", r.io_thread, r.sql_thread),
                if r.seconds_behind < 0 { "-".to_string() } else { format!("{}s", r.seconds_behind) },
                r.source.clone(),
            ),
            None => ("-".into(), "-".into(), "-".into()),
        };
        let mut notes = Vec::new();
        if i.downtimed {
            notes.push("downtimed".to_string());
        }
        if i.promotion_rule != "neutral" && !i.promotion_rule.is_empty() {
            notes.push(i.promotion_rule.clone());
        }
        table.add_row(vec![
            i.key.clone(),
            i.role.clone(),
            if i.reachable { "up".into() } else { "UNREACHABLE".into() },
            if i.read_only { "yes".into() } else { "no".into() },
            threads,
            lag,
            source,
            dash(&notes.join(",")).to_string(),
            age(now, i.last_checked_unix_ms),
            i.gtid_executed.clone(),
        ]);
    }
    say!("{table}");
    for i in &t.instances {
        if !i.last_error.is_empty() {
            say!("  {}: {}", i.key, i.last_error);
        }
        if let Some(r) = &i.replication {
            for e in [&r.last_io_error, &r.last_sql_error] {
                if !e.is_empty() {
                    say!("  {}: replication: {e}", i.key);
                }
            }
        }
    }
}

pub fn instance(i: &pb::Instance) {
    let mut t = table(&["FIELD", "VALUE"]);
    let r = i.replication.clone().unwrap_or_default();
    let rows: Vec<(&str, String)> = vec![
        ("instance", i.key.clone()),
        ("role", i.role.clone()),
        ("reachable", i.reachable.to_string()),
        ("error", dash(&i.last_error).to_string()),
        ("version", format!("{} ({})", i.version, i.flavor)),
        ("server_id", i.server_id.to_string()),
        ("read_only", i.read_only.to_string()),
        ("source", dash(&r.source).to_string()),
        (
            "io/sql",
            if i.replication.is_some() { format!("{}/{}", r.io_thread, r.sql_thread) } else { "-".into() },
        ),
        (
            "lag",
            if r.seconds_behind < 0 || i.replication.is_none() {
                "-".into()
            } else {
                format!("{} s", r.seconds_behind)
            },
        ),
        ("gtid executed", i.gtid_executed.clone()),
        ("gtid received", dash(&i.gtid_received).to_string()),
        ("replicas", dash(&i.replicas.join(", ")).to_string()),
        ("semi-sync", format!("master {}, replica {}", i.semi_sync_master, i.semi_sync_replica)),
        ("downtimed", i.downtimed.to_string()),
        ("promotion rule", i.promotion_rule.clone()),
        ("last checked", date_time(i.last_checked_unix_ms)),
    ];
    for (k, v) in rows {
        t.add_row(vec![k.to_string(), v]);
    }
    say!("{t}");
}

pub fn problems(r: &pb::ListProblemsReply) {
    if r.problems.is_empty() {
        say!("no problems (leader's analysis at {})", clock(r.checked_unix_ms));
        return;
    }
    let mut t = table(&["CLUSTER", "CODE", "INSTANCE", "REASON"]);
    for p in &r.problems {
        t.add_row(vec![p.cluster.clone(), p.code.clone(), p.instance.clone(), p.reason.clone()]);
    }
    say!("{t}");
}

pub fn plan(p: &pb::RecoveryPlan) {
    say!(
        "dry run of a {} of cluster {} (master {}): nothing was changed",
        p.kind.replace('_', " "),
        p.cluster,
        p.master
    );
    if p.candidate.is_empty() {
        say!("would be REFUSED: {}", p.refused);
    } else {
        say!("would promote {}", p.candidate);
        if !p.donor.is_empty() {
            say!("after it catches up from {}", p.donor);
        }
        if !p.repoint.is_empty() {
            say!("and repoint {}", p.repoint.join(", "));
        }
    }
    if !p.passed_over.is_empty() {
        let mut t = table(&["PASSED OVER", "WHY"]);
        for o in &p.passed_over {
            t.add_row(vec![o.instance.clone(), o.reason.clone()]);
        }
        say!("{t}");
    }
}

pub fn recovery(r: &pb::Recovery) {
    let by = if r.requested_by.is_empty() {
        "automatic".to_string()
    } else {
        format!("requested by {}", r.requested_by)
    };
    say!(
        "recovery {} of {}: {} ({}, {by}), {}",
        r.id,
        r.cluster,
        r.kind.replace('_', " "),
        r.status,
        r.summary
    );
    say!(
        "failed master {}, new master {}, epoch {}, started {}, ended {}",
        dash(&r.failed_master),
        dash(&r.new_master),
        r.epoch,
        date_time(r.started_unix_ms),
        date_time(r.ended_unix_ms)
    );
    say!("reason: {}", r.reason);
    if r.writable_after_ms > 0 {
        say!("new master writable {} ms after the start", r.writable_after_ms);
    }
    if !r.acknowledged_by.is_empty() {
        say!("acknowledged by {}: {}", r.acknowledged_by, dash(&r.acknowledge_comment));
    }
    for s in &r.steps {
        say!("  {:>6} ms  {}", s.at_ms, s.text);
    }
}

pub fn recoveries(r: &pb::ListRecoveriesReply) {
    let mut t =
        table(&["ID", "CLUSTER", "KIND", "STATUS", "STARTED", "FAILED MASTER", "NEW MASTER", "BY", "ACK"]);
    for x in &r.recoveries {
        t.add_row(vec![
            x.id.to_string(),
            x.cluster.clone(),
            x.kind.clone(),
            x.status.clone(),
            date_time(x.started_unix_ms),
            dash(&x.failed_master).to_string(),
            dash(&x.new_master).to_string(),
            if x.requested_by.is_empty() { "auto".into() } else { x.requested_by.clone() },
            dash(&x.acknowledged_by).to_string(),
        ]);
    }
    say!("{t}");
}

pub fn downtimes(r: &pb::ListDowntimesReply) {
    if r.downtimes.is_empty() {
        say!("no downtime in force");
        return;
    }
    let mut t = table(&["INSTANCE", "OWNER", "UNTIL", "REASON"]);
    for d in &r.downtimes {
        t.add_row(vec![d.instance.clone(), d.owner.clone(), date_time(d.until_unix_ms), d.reason.clone()]);
    }
    say!("{t}");
}

pub fn promotion_rules(r: &pb::ListPromotionRulesReply) {
    if r.rules.is_empty() {
        say!("every instance is neutral");
        return;
    }
    let mut t = table(&["INSTANCE", "RULE"]);
    for x in &r.rules {
        t.add_row(vec![x.instance.clone(), x.rule.clone()]);
    }
    say!("{t}");
}

pub fn raft_state(s: &pb::RaftState) {
    let leader = if s.leader_id == 0 {
        "none known".to_string()
    } else {
        format!("{} ({})", s.leader_id, s.leader_http)
    };
    say!("peer {}: {} in term {}, leader {}", s.node_id, s.role, s.term, leader);
    say!(
        "log {} committed {} applied {}; {} other voters reachable; {}",
        s.last_log_index,
        s.committed_index,
        s.applied_index,
        s.reachable_peers,
        if s.quorum_contact { "in contact with a quorum" } else { "OUT OF CONTACT with a quorum" }
    );
    raft_members(s);
}

pub fn raft_members(s: &pb::RaftState) {
    // The instance columns only when the peers follow an Auto Scaling group.
    let fleet = s.members.iter().any(|m| !m.instance_state.is_empty());
    let mut headers = vec!["ID", "RAFT", "HTTP", "VOTER", "LEADER", "LAST CONTACT"];
    if fleet {
        headers.extend(["INSTANCE", "INSTANCE STATE"]);
    }
    let mut t = table(&headers);
    for m in &s.members {
        let mut row = vec![
            m.id.to_string(),
            m.raft.clone(),
            m.http.clone(),
            if m.voter { "yes".into() } else { "learner".into() },
            if m.id == s.leader_id { "*".into() } else { String::new() },
            match m.last_contact_ms {
                _ if m.id == s.node_id => "(this peer)".into(),
                ms if ms >= 0 => format!("{ms} ms ago"),
                _ => "never".into(),
            },
        ];
        if fleet {
            row.push(dash(&m.instance_id).to_string());
            row.push(dash(&m.instance_state).to_string());
        }
        t.add_row(row);
    }
    say!("{t}");
}

pub fn aws(v: &pb::AwsView) {
    for c in &v.clusters {
        say!(
            "cluster {}: {} (master_lock epoch {})",
            c.cluster,
            if c.converged { "target groups match Raft".to_string() } else { "CONVERGING".to_string() },
            c.master_lock_epoch
        );
        let mut t = table(&["GROUP", "DESIRED", "REGISTERED"]);
        t.add_row(vec![
            "write (3306)".into(),
            dash(&c.desired_write).to_string(),
            dash(&c.write_targets.join(", ")).to_string(),
        ]);
        t.add_row(vec![
            "read (3307)".into(),
            dash(&c.desired_read.join(", ")).to_string(),
            dash(&c.read_targets.join(", ")).to_string(),
        ]);
        say!("{t}");
        if !c.last_error.is_empty() {
            say!("  last error: {}", c.last_error);
        }
        if !c.mirror_rejected.is_empty() {
            say!("  DynamoDB refused: {}", c.mirror_rejected);
        }
    }
}

pub fn audit(r: &pb::ListAuditReply) {
    let mut t = table(&["TIME", "WHO", "FROM", "OPERATION", "ARGUMENTS", "RESULT", "DETAIL"]);
    for e in &r.entries {
        let args: Vec<String> = e
            .arguments
            .iter()
            .filter(|a| !a.value.is_empty() && a.value != "false")
            .map(|a| format!("{}={}", a.name, a.value))
            .collect();
        t.add_row(vec![
            date_time(e.at_unix_ms),
            e.who.clone(),
            e.from.clone(),
            e.operation.clone(),
            args.join(" "),
            e.result.clone(),
            e.detail.clone(),
        ]);
    }
    say!("{t}");
}

pub fn operation(r: &pb::OperationReply) {
    say!("{}", r.message);
    if !r.warning.is_empty() {
        say!("warning: {}", r.warning);
    }
}

/// One watch event on one line.
pub fn event(e: &pb::WatchEvent) {
    use pb::watch_event::Event;
    let at = clock(e.at_unix_ms);
    match &e.event {
        Some(Event::Topology(t)) => {
            let down = t.instances.iter().filter(|i| !i.reachable).count();
            say!(
                "{at} topology {}: master {}, {} instances, {down} unreachable",
                t.alias,
                t.master,
                t.instances.len()
            );
        }
        Some(Event::Master(m)) => say!("{at} master {}: {} -> {}", m.cluster, m.previous, m.current),
        Some(Event::Recovery(r)) => {
            say!("{at} recovery {} of {}: {} {}", r.id, r.cluster, r.status, r.summary)
        }
        Some(Event::Problems(p)) if p.problems.is_empty() => say!("{at} problems {}: none", p.cluster),
        Some(Event::Problems(p)) => {
            let list: Vec<String> = p.problems.iter().map(|x| format!("{} {}", x.code, x.instance)).collect();
            say!("{at} problems {}: {}", p.cluster, list.join(", "));
        }
        None => {}
    }
}

fn bytes(n: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < units.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", units[unit])
    }
}

/// `2026-12-04 18:50:48.123456 UTC` of a Unix-microsecond time.
fn micros_time(us: i64) -> String {
    if us <= 0 {
        return "-".into();
    }
    format!("{}.{:06} UTC", date_time(us / 1000).trim_end_matches(" UTC"), us.rem_euclid(1_000_000))
}

pub fn job(j: &pb::BackupJob) {
    say!("{} {}: {}", j.kind, j.status, if j.result.is_empty() { &j.phase } else { &j.result });
    if !j.backup_id.is_empty() {
        say!("  backup {}", j.backup_id);
    }
    for (i, p) in j.phases.iter().enumerate() {
        let until = j.phases.get(i + 1).map(|n| n.started_unix_ms).unwrap_or(j.ended_unix_ms);
        if until > 0 {
            say!("  {:>7.2}s  {}", (until - p.started_unix_ms) as f64 / 1000.0, p.name);
        }
    }
    let took = if j.ended_unix_ms > 0 { (j.ended_unix_ms - j.started_unix_ms) as f64 / 1000.0 } else { 0.0 };
    if took > 0.0 {
        say!(
            "  {} in {took:.1} s ({} stored, {}/s)",
            bytes(j.bytes_done),
            bytes(j.stored_bytes),
            bytes((j.bytes_done as f64 / took) as u64)
        );
    }
}

pub fn backups(r: &pb::BackupListing) {
    say!("cluster {}  bucket {}", r.cluster, r.bucket);
    let mut t = table(&[
        "ID", "KIND", "METHOD", "PARENT", "SOURCE", "STARTED", "DURATION", "DATA", "STORED", "CHAIN", "GTID",
    ]);
    for b in &r.backups {
        let mut method = b.method.clone();
        if b.staged_locally {
            method.push_str(" (staged locally)");
        }
        if b.encrypted {
            method.push_str(" encrypted");
        }
        let chain =
            if b.chain_complete { "complete".to_string() } else { format!("BROKEN: {}", b.chain_problem) };
        let gtid: String = b.gtid_executed.chars().take(60).collect();
        t.add_row(vec![
            b.id.clone(),
            b.kind.clone(),
            method,
            dash(&b.parent).to_string(),
            b.source.clone(),
            date_time(b.started_unix_ms),
            format!("{:.1}s", b.duration_ms as f64 / 1000.0),
            bytes(b.raw_bytes),
            bytes(b.stored_bytes),
            chain,
            gtid,
        ]);
    }
    if r.backups.is_empty() {
        say!("no complete backup");
    } else {
        say!("{t}");
    }
    for i in &r.incomplete {
        say!("incomplete (no manifest, never restorable): {i}");
    }
    if !r.running.is_empty() {
        say!("running: {}", r.running);
    }
    say!("oldest restorable point: {}", date_time(r.oldest_restorable_unix_ms));
    if let Some(a) = &r.archive {
        say!(
            "binlog archive: {} segments, {}, newest commit {}, archiver {}",
            a.segments,
            bytes(a.stored_bytes),
            micros_time(a.latest_commit_unix_us),
            dash(&a.archiver)
        );
        for g in &a.gaps {
            say!(
                "  GAP after segment {}: {} were purged before they were archived",
                g.after_segment,
                g.missing
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_utc() {
        assert_eq!(date_time(0), "-");
        assert_eq!(date_time(1_796_000_000_000), "2026-11-30 00:53:20 UTC");
        assert_eq!(clock(3_723_000), "01:02:03");
    }
}
