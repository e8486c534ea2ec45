//! The continuous binlog archive's logic (DESIGN.md section 13), pure: the index entry
//! of each archived segment, the history the segments make together (a takeover after
//! a failover can discard transactions the old master archived but the cluster never
//! kept), gaps (transactions purged before they were archived), where a new source's
//! archiver starts so that nothing is archived twice or skipped, and which
//! transactions a replay applies to reach a point in time or a GTID set.
//!
//! Restores plan from this index, never from object listing times: every segment
//! records its GTID sets, first and last commit times and the source it came from.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::binlog::{CommitTime, Transaction};
use super::manifest::{format_micros, Encryption};
use crate::topology::gtid::GtidSet;

/// One archived piece of a source's binary log: whole transactions from `start` to
/// `end` of file `binlog`, stored as a binary log of its own (the file's format
/// description, then the transactions' events).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Segment {
    /// Position in the archive: 1, 2, 3, ... with no hole.
    pub seq: u64,
    /// The fencing token of the archiver that wrote it.
    pub token: u64,
    /// The data object.
    pub key: String,
    /// The instance it was read from, `host:port`, and its server id.
    pub source: String,
    pub server_id: u32,
    pub binlog: String,
    pub start: u64,
    pub end: u64,
    /// What the source had executed just before the segment's first transaction.
    pub before: GtidSet,
    /// The segment's transactions.
    pub gtids: GtidSet,
    pub first_gtid: String,
    pub last_gtid: String,
    pub first_commit: CommitTime,
    pub last_commit: CommitTime,
    pub transactions: u64,
    pub raw_bytes: u64,
    pub stored_bytes: u64,
    /// Hex SHA-256 of the stored object.
    pub sha256: String,
    /// Set by the first segment of a new source: transactions the archive took from an
    /// earlier source that this one does not have (a failed master's last commits that
    /// no replica received and no client saw acknowledged). They are not history:
    /// a replay skips them in the segments before this one.
    #[serde(default)]
    pub discarded: GtidSet,
    pub archived_at_ms: i64,
    #[serde(default)]
    pub encryption: Option<Encryption>,
    /// MariaDB: the last transaction of each domain in the segment, `domain-server-seq`
    /// (a new master's archiver finds where its history forked from the archive's by
    /// the server that committed it, which GTID sets do not keep).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub last_by_domain: Vec<String>,
}

impl Segment {
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a segment serializes")
    }

    pub fn from_json(bytes: &[u8]) -> Result<Segment, String> {
        serde_json::from_slice(bytes).map_err(|e| format!("unreadable binlog index entry: {e}"))
    }
}

/// The archive's segments from every index entry found: one per seq, and none written
/// by an archiver whose lease had passed to a newer one (an entry is void when an
/// entry at the same or an earlier seq carries a higher fencing token).
pub fn resolve_index(mut entries: Vec<Segment>) -> Vec<Segment> {
    entries.sort_by_key(|e| (e.seq, std::cmp::Reverse(e.token)));
    let mut out: Vec<Segment> = Vec::new();
    let mut newest_token = 0;
    let mut i = 0;
    while i < entries.len() {
        let seq = entries[i].seq;
        let best = entries[i].clone();
        let mut j = i;
        let mut seq_max = 0;
        while j < entries.len() && entries[j].seq == seq {
            seq_max = seq_max.max(entries[j].token);
            j += 1;
        }
        if best.token >= newest_token {
            out.push(best);
        }
        newest_token = newest_token.max(seq_max);
        i = j;
    }
    out
}

/// For each segment (by seq), the transactions later segments discarded: a
/// transaction of segment `i` is history unless a segment after `i` discarded it.
pub fn discarded_after(segments: &[Segment]) -> BTreeMap<u64, GtidSet> {
    let mut out = BTreeMap::new();
    let mut later = GtidSet::new();
    for s in segments.iter().rev() {
        out.insert(s.seq, later.clone());
        later = later.union(&s.discarded);
    }
    out
}

/// Every transaction the archive holds as history.
pub fn archived_history(segments: &[Segment]) -> GtidSet {
    let discards = discarded_after(segments);
    segments.iter().fold(GtidSet::new(), |acc, s| {
        acc.union(&s.gtids.subtract(discards.get(&s.seq).unwrap_or(&GtidSet::new())))
    })
}

/// Transactions the archive should hold but never got (purged from the source
/// before they were archived).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gap {
    /// The segment after which they are missing.
    pub after_seq: u64,
    pub missing: GtidSet,
}

/// Every gap, in order. What came before the first segment is where the archive
/// began, not a gap.
pub fn gaps(segments: &[Segment]) -> Vec<Gap> {
    let mut out = Vec::new();
    let Some(first) = segments.first() else { return out };
    let mut have = first.before.clone();
    let mut previous_seq = 0;
    for s in segments {
        let missing = s.before.subtract(&have);
        if !missing.is_empty() {
            out.push(Gap { after_seq: previous_seq, missing: missing.clone() });
            have = have.union(&missing);
        }
        have = have.union(&s.gtids);
        previous_seq = s.seq;
    }
    out
}

/// One binary log file of a source, as its archiver finds it.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceFile {
    pub name: String,
    /// The GTID state the file starts from (its `Previous_gtids` / `Gtid_list`).
    pub start_state: GtidSet,
}

/// Where a source's archiver starts.
#[derive(Debug, Clone, PartialEq)]
pub struct Takeover {
    /// The file to read from its start, skipping transactions already archived.
    pub file: String,
    /// Archived transactions this source does not have (see [`Segment::discarded`]).
    pub discarded: GtidSet,
    /// Transactions neither archived nor in the source's remaining files: purged
    /// before they could be archived (empty for a new archive).
    pub missing: GtidSet,
    /// What is archived and also in this source's history: skipped while reading.
    pub skip: GtidSet,
}

/// MariaDB: the archive's last history transaction of each domain, as (server id,
/// sequence number).
pub fn last_by_domain(segments: &[Segment]) -> BTreeMap<u32, (u32, u64)> {
    let discards = discarded_after(segments);
    let mut out = BTreeMap::new();
    for s in segments {
        let none = GtidSet::new();
        let later = discards.get(&s.seq).unwrap_or(&none);
        for g in &s.last_by_domain {
            let mut it = g.split('-').map(|v| v.parse::<u64>().ok());
            if let (Some(Some(d)), Some(Some(server)), Some(Some(n))) = (it.next(), it.next(), it.next()) {
                if !later.contains(&crate::topology::gtid::GtidSource::Domain(d as u32), n) {
                    out.insert(d as u32, (server as u32, n));
                }
            }
        }
    }
    out
}

/// MariaDB: where a new master's history leaves the archive's, per domain. GTIDs of
/// one domain are numbered in one sequence whichever server commits them (strict
/// mode), so a failed master's last archived `0-1-11` and the new master's own
/// `0-2-11` are different transactions with the same domain and number. The new
/// master's `gtid_binlog_state` (`source_state`: domain, server, last sequence
/// number of each server) tells how far it has the archive's last server's
/// transactions; a domain where that is short of the archive's last one forked there.
pub fn mariadb_forks(
    archive_last: &BTreeMap<u32, (u32, u64)>,
    source_state: &[(u32, u32, u64)],
) -> BTreeMap<u32, u64> {
    let mut forks = BTreeMap::new();
    for (domain, (server, last)) in archive_last {
        let had = source_state
            .iter()
            .filter(|(d, s, _)| d == domain && s == server)
            .map(|(_, _, n)| *n)
            .max()
            .unwrap_or(0);
        if had < *last {
            forks.insert(*domain, had);
        }
    }
    forks
}

/// Where the archiver of a source (a new master) starts: `files` are the source's
/// binary logs oldest first, `executed` its executed set, `archived` the archive's
/// history, `forks` (MariaDB) the sequence number after which a domain's archived
/// transactions are not the source's ([`mariadb_forks`]). It starts in the newest file
/// whose start state is all archived (so no transaction is skipped), or the oldest file
/// when none is (then what is neither archived nor in the files is a gap). `None` when
/// the source has no binary log.
pub fn takeover(
    files: &[SourceFile],
    executed: &GtidSet,
    archived: &GtidSet,
    forks: &BTreeMap<u32, u64>,
) -> Option<Takeover> {
    let oldest = files.first()?;
    let mut discarded = archived.subtract(executed);
    let mut skip = archived.intersection(executed);
    for (domain, after) in forks {
        let source = crate::topology::gtid::GtidSource::Domain(*domain);
        let Some(max) = archived.domain_position(*domain) else { continue };
        let mut beyond = GtidSet::new();
        beyond.add_range(source, after + 1, max);
        discarded = discarded.union(&archived.intersection(&beyond));
        skip = skip.subtract(&beyond);
    }
    let fresh_archive = archived.is_empty();
    let chosen = files.iter().rev().find(|f| f.start_state.is_subset_of(&skip));
    let (file, missing) = match chosen {
        Some(f) if !fresh_archive => (f.name.clone(), GtidSet::new()),
        _ if fresh_archive => (oldest.name.clone(), GtidSet::new()),
        _ => (oldest.name.clone(), oldest.start_state.subtract(&skip)),
    };
    Some(Takeover { file, discarded, missing, skip })
}

/// Where a replay stops.
#[derive(Debug, Clone, PartialEq)]
pub enum Point {
    /// Everything archived.
    Latest,
    /// Every transaction committed at or before this Unix µs (the archive's order is
    /// followed: the replay stops at the first transaction committed later). A time
    /// recorded to the second counts as the end of that second.
    Time(i64),
    /// MySQL's `SQL_AFTER_GTIDS` (inclusive: stop once all of the set is applied) or
    /// `SQL_BEFORE_GTIDS` (exclusive: stop before the first transaction of the set).
    Gtids { set: GtidSet, exclusive: bool },
}

impl Point {
    pub fn describe(&self) -> String {
        match self {
            Point::Latest => "the latest archived transaction".into(),
            Point::Time(t) => format!("{} (commits at or before it)", format_micros(*t)),
            Point::Gtids { set, exclusive: false } => format!("after GTID set {set}"),
            Point::Gtids { set, exclusive: true } => format!("before GTID set {set}"),
        }
    }
}

/// Decides, transaction by transaction in archive order, what a replay applies.
#[derive(Debug, Clone)]
pub struct Replayer {
    point: Point,
    /// What the restored server holds so far (the backup, then what was chosen).
    have: GtidSet,
    discards: BTreeMap<u64, GtidSet>,
    reached: bool,
    /// The last transaction chosen.
    pub last_applied: Option<(String, CommitTime)>,
    pub applied: GtidSet,
}

impl Replayer {
    /// `start`: what the restored server holds before the replay.
    pub fn new(point: Point, start: GtidSet, segments: &[Segment]) -> Replayer {
        let reached = match &point {
            Point::Gtids { set, exclusive: false } => set.is_subset_of(&start),
            _ => false,
        };
        Replayer {
            point,
            have: start,
            discards: discarded_after(segments),
            reached,
            last_applied: None,
            applied: GtidSet::new(),
        }
    }

    /// The point is reached: nothing more is applied.
    pub fn done(&self) -> bool {
        self.reached
    }

    pub fn have(&self) -> &GtidSet {
        &self.have
    }

    /// The transactions of segment `seq` (all of them, in file order) to apply.
    pub fn choose<'t>(&mut self, seq: u64, transactions: &'t [Transaction]) -> Vec<&'t Transaction> {
        let none = GtidSet::new();
        let discarded = self.discards.get(&seq).unwrap_or(&none).clone();
        let mut chosen = Vec::new();
        for t in transactions {
            if self.reached {
                break;
            }
            let source = &t.gtid.source;
            if self.have.contains(source, t.gtid.number) || discarded.contains(source, t.gtid.number) {
                continue;
            }
            match &self.point {
                Point::Time(limit) if t.committed.latest_micros() > *limit => {
                    self.reached = true;
                    break;
                }
                Point::Gtids { set, exclusive: true } if set.contains(source, t.gtid.number) => {
                    self.reached = true;
                    break;
                }
                _ => {}
            }
            self.have.add(source.clone(), t.gtid.number, Some(t.gtid.server_id));
            self.applied.add(source.clone(), t.gtid.number, Some(t.gtid.server_id));
            self.last_applied = Some((t.gtid.to_string(), t.committed));
            chosen.push(t);
            if let Point::Gtids { set, exclusive: false } = &self.point {
                if set.is_subset_of(&self.have) {
                    self.reached = true;
                }
            }
        }
        chosen
    }
}

/// Why a replay cannot reach its point.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplayError {
    #[error("the binlog archive misses transactions {missing} after segment {after_seq} (purged from the source before they were archived): a replay from this backup cannot go past segment {after_seq}")]
    Gap { after_seq: u64, missing: GtidSet },
    #[error("the archive does not reach {point}: it holds nothing after {last}")]
    NotReached { point: String, last: String },
}

/// The segments a replay from `start` (a backup's set) to `point` reads, in order:
/// every segment holding a transaction the backup lacks, up to where the point lies
/// (decided from the index alone). Refused when a gap lies on the way.
pub fn segments_to_replay<'s>(
    segments: &'s [Segment],
    start: &GtidSet,
    point: &Point,
) -> Result<Vec<&'s Segment>, ReplayError> {
    let discards = discarded_after(segments);
    let mut have = start.clone();
    let mut out: Vec<&Segment> = Vec::new();
    let target_reached = |have: &GtidSet| match point {
        Point::Gtids { set, exclusive: false } => set.is_subset_of(have),
        _ => false,
    };
    if target_reached(&have) {
        return Ok(out);
    }
    for s in segments {
        let none = GtidSet::new();
        let history = s.gtids.subtract(discards.get(&s.seq).unwrap_or(&none));
        let new = history.subtract(&have);
        if new.is_empty() {
            continue;
        }
        match point {
            // The first transaction after the backup is later than the point: the
            // backup alone is the state at the point.
            Point::Time(limit) if s.first_commit.latest_micros() > *limit => break,
            _ => {}
        }
        let missing = s.before.subtract(&have);
        if !missing.is_empty() {
            return Err(ReplayError::Gap { after_seq: s.seq.saturating_sub(1), missing });
        }
        have = have.union(&history);
        out.push(s);
        match point {
            Point::Gtids { set, exclusive: true } if !set.intersection(&new).is_empty() => return Ok(out),
            _ if target_reached(&have) => return Ok(out),
            _ => {}
        }
    }
    match point {
        // Exclusive: the set's first transaction was never archived, so everything
        // archived lies before it.
        Point::Latest | Point::Time(_) => Ok(out),
        // The set's first transaction lies after every archived one, or was never
        // archived (a typo is likelier than a set of the future): refused.
        Point::Gtids { set, exclusive: true } if !set.intersection(&have).is_empty() => Ok(out),
        Point::Gtids { .. } => Err(ReplayError::NotReached {
            point: point.describe(),
            last: out.last().map(|s| s.last_gtid.clone()).unwrap_or_else(|| "the backup".into()),
        }),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::backup::binlog::Gtid;
    use crate::topology::gtid::GtidSource;

    pub fn set(text: &str) -> GtidSet {
        GtidSet::parse(text).unwrap()
    }

    fn at(s: i64) -> CommitTime {
        CommitTime { micros: s * 1_000_000, precise: true }
    }

    /// A segment of domain-0 MariaDB transactions `lo..=hi` from `server`, committed
    /// at second `n` for transaction `n`.
    pub fn segment(seq: u64, server: u32, lo: u64, hi: u64) -> Segment {
        Segment {
            seq,
            token: 1,
            key: format!("k{seq}"),
            source: format!("10.0.0.{server}:3306"),
            server_id: server,
            binlog: "binlog.000001".into(),
            start: 0,
            end: 0,
            before: if lo > 1 { set(&format!("0-{server}-{}", lo - 1)) } else { GtidSet::new() },
            gtids: set(&format!("0:{lo}-{hi}")),
            first_gtid: format!("0-{server}-{lo}"),
            last_gtid: format!("0-{server}-{hi}"),
            first_commit: at(lo as i64),
            last_commit: at(hi as i64),
            transactions: hi - lo + 1,
            raw_bytes: 0,
            stored_bytes: 0,
            sha256: String::new(),
            discarded: GtidSet::new(),
            archived_at_ms: 0,
            encryption: None,
            last_by_domain: Vec::new(),
        }
    }

    fn txns(server: u32, lo: u64, hi: u64) -> Vec<Transaction> {
        (lo..=hi)
            .map(|n| Transaction {
                gtid: Gtid { source: GtidSource::Domain(0), number: n, server_id: server },
                start: n,
                end: n + 1,
                committed: at(n as i64),
            })
            .collect()
    }

    #[test]
    fn a_failover_discards_what_the_old_master_archived_alone() {
        // Server 1 archived 1..=12; the new master (2) had only 1..=10 and went on
        // with its own 11..=15 (same domain and numbers, another server).
        let old = vec![segment(1, 1, 1, 5), segment(2, 1, 6, 12)];
        let files = vec![
            SourceFile { name: "b.1".into(), start_state: GtidSet::new() },
            SourceFile { name: "b.2".into(), start_state: set("0-1-4") },
            SourceFile { name: "b.3".into(), start_state: set("0-1-9") },
        ];
        let t = takeover(&files, &set("0-1-10"), &archived_history(&old), &BTreeMap::new()).unwrap();
        assert_eq!(t.file, "b.3");
        assert_eq!(t.discarded, set("0:11-12"));
        assert!(t.missing.is_empty());
        let mut new = segment(3, 2, 11, 15);
        new.before = set("0-1-10");
        new.discarded = t.discarded.clone();
        let all = vec![old[0].clone(), old[1].clone(), new];
        assert_eq!(archived_history(&all), set("0-2-15"));
        assert!(gaps(&all).is_empty());
        // A replay from a backup at 0-1-3 to the end applies 4..=10 from server 1, then
        // 11..=15 from server 2: never the discarded 11 and 12 of server 1.
        let mut r = Replayer::new(Point::Latest, set("0-1-3"), &all);
        let a: Vec<String> = r.choose(1, &txns(1, 1, 5)).iter().map(|t| t.gtid.to_string()).collect();
        let b: Vec<String> = r.choose(2, &txns(1, 6, 12)).iter().map(|t| t.gtid.to_string()).collect();
        let c: Vec<String> = r.choose(3, &txns(2, 11, 15)).iter().map(|t| t.gtid.to_string()).collect();
        assert_eq!(a, vec!["0-1-4", "0-1-5"]);
        assert_eq!(b, vec!["0-1-6", "0-1-7", "0-1-8", "0-1-9", "0-1-10"]);
        assert_eq!(c, vec!["0-2-11", "0-2-12", "0-2-13", "0-2-14", "0-2-15"]);
        assert_eq!(r.have(), &set("0-2-15"));
    }

    #[test]
    fn a_mariadb_failover_forks_by_server_even_when_the_numbers_match() {
        // Server 1 archived 0-1-1..=12; the new master (2) had 0-1-1..=10 and committed
        // 0-2-11..=15 before its archiver started: the same numbers 11 and 12 are other
        // transactions, and only the servers in gtid_binlog_state tell them apart.
        let mut a = segment(1, 1, 1, 12);
        a.last_by_domain = vec!["0-1-12".into()];
        let old = vec![a];
        let last = last_by_domain(&old);
        assert_eq!(last, BTreeMap::from([(0, (1, 12))]));
        let forks = mariadb_forks(&last, &[(0, 1, 10), (0, 2, 15)]);
        assert_eq!(forks, BTreeMap::from([(0, 10)]));
        let files = vec![SourceFile { name: "b.2".into(), start_state: set("0-1-9") }];
        let t = takeover(&files, &set("0-2-15"), &archived_history(&old), &forks).unwrap();
        assert_eq!(t.discarded, set("0:11-12"));
        assert_eq!(t.skip, set("0-1-10"));
        assert!(!t.skip.contains(&GtidSource::Domain(0), 11), "the new master's 0-2-11 is archived");
        // No fork when the new master has the archive's last transaction.
        assert!(mariadb_forks(&last, &[(0, 1, 12), (0, 2, 15)]).is_empty());
    }

    #[test]
    fn a_source_missing_purged_transactions_is_a_gap_and_a_replay_refuses_to_cross_it() {
        let old = vec![segment(1, 1, 1, 5)];
        let files = vec![SourceFile { name: "b.7".into(), start_state: set("0-1-8") }];
        let t = takeover(&files, &set("0-1-20"), &archived_history(&old), &BTreeMap::new()).unwrap();
        assert_eq!((t.file.as_str(), t.missing.clone()), ("b.7", set("0:6-8")));
        let mut next = segment(2, 1, 9, 20);
        next.before = set("0-1-8");
        let all = vec![old[0].clone(), next];
        assert_eq!(gaps(&all), vec![Gap { after_seq: 1, missing: set("0:6-8") }]);
        let err = segments_to_replay(&all, &set("0-1-2"), &Point::Latest).unwrap_err();
        assert!(matches!(err, ReplayError::Gap { after_seq: 1, .. }), "{err}");
        // A backup that already holds the missing transactions crosses it.
        let from_later = segments_to_replay(&all, &set("0-1-8"), &Point::Latest).unwrap();
        assert_eq!(from_later.iter().map(|s| s.seq).collect::<Vec<_>>(), vec![2]);
    }

    #[test]
    fn a_stale_archivers_entries_lose_to_the_newer_token() {
        let mut a5 = segment(5, 1, 41, 50);
        a5.token = 3;
        let mut b5 = segment(5, 2, 41, 48);
        b5.token = 4;
        let mut a6 = segment(6, 1, 51, 60);
        a6.token = 3;
        let mut b6 = segment(6, 2, 49, 55);
        b6.token = 4;
        let mut old = segment(4, 1, 31, 40);
        old.token = 3;
        let resolved = resolve_index(vec![a6, b5.clone(), old.clone(), a5, b6.clone()]);
        assert_eq!(resolved, vec![old.clone(), b5.clone(), b6]);
        // A late entry of the old holder after the takeover is void too.
        let mut late = segment(7, 1, 61, 70);
        late.token = 3;
        assert_eq!(resolve_index(vec![old.clone(), b5.clone(), late]), vec![old, b5]);
    }

    #[test]
    fn a_new_archive_starts_at_the_oldest_file_without_a_gap() {
        let files = vec![
            SourceFile { name: "b.3".into(), start_state: set("0-1-40") },
            SourceFile { name: "b.4".into(), start_state: set("0-1-50") },
        ];
        let t = takeover(&files, &set("0-1-60"), &GtidSet::new(), &BTreeMap::new()).unwrap();
        assert_eq!(t.file, "b.3");
        assert!(t.missing.is_empty() && t.discarded.is_empty());
        assert_eq!(takeover(&[], &set("0-1-1"), &GtidSet::new(), &BTreeMap::new()), None);
    }

    #[test]
    fn the_point_decides_the_segments_and_the_transactions() {
        let segs = vec![segment(1, 1, 1, 10), segment(2, 1, 11, 20), segment(3, 1, 21, 30)];
        let seqs = |p: Point, start: &str| -> Vec<u64> {
            segments_to_replay(&segs, &set(start), &p).unwrap().iter().map(|s| s.seq).collect()
        };
        assert_eq!(seqs(Point::Latest, "0-1-12"), vec![2, 3]);
        assert_eq!(seqs(Point::Time(15_000_000), "0-1-5"), vec![1, 2]);
        assert_eq!(seqs(Point::Gtids { set: set("0-1-14"), exclusive: false }, "0-1-5"), vec![1, 2]);
        assert_eq!(seqs(Point::Gtids { set: set("0:21"), exclusive: true }, "0-1-5"), vec![1, 2, 3]);
        assert_eq!(seqs(Point::Gtids { set: set("0-1-4"), exclusive: false }, "0-1-5"), Vec::<u64>::new());
        let err =
            segments_to_replay(&segs, &set("0-1-5"), &Point::Gtids { set: set("0-1-31"), exclusive: false });
        assert!(matches!(err, Err(ReplayError::NotReached { .. })));

        let pick = |p: Point, start: &str| -> Vec<u64> {
            let mut r = Replayer::new(p, set(start), &segs);
            let mut out = Vec::new();
            for (seq, lo) in [(1, 1), (2, 11), (3, 21)] {
                out.extend(r.choose(seq, &txns(1, lo, lo + 9)).iter().map(|t| t.gtid.number));
            }
            out
        };
        assert_eq!(pick(Point::Time(13_000_000), "0-1-9"), vec![10, 11, 12, 13]);
        assert_eq!(
            pick(Point::Gtids { set: set("0-1-13"), exclusive: false }, "0-1-9"),
            vec![10, 11, 12, 13]
        );
        assert_eq!(pick(Point::Gtids { set: set("0:13"), exclusive: true }, "0-1-9"), vec![10, 11, 12]);
        assert_eq!(pick(Point::Latest, "0-1-28").len(), 2);
        // Seconds-resolution commit times count as the end of their second.
        let mut coarse = txns(1, 10, 12);
        for t in &mut coarse {
            t.committed.precise = false;
        }
        let mut r = Replayer::new(Point::Time(11_500_000), set("0-1-9"), &segs);
        let chosen: Vec<u64> = r.choose(1, &coarse).iter().map(|t| t.gtid.number).collect();
        assert_eq!(chosen, vec![10]);
        assert!(r.done());
    }
}
