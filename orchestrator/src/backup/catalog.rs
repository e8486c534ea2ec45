//! What the bucket's manifests and the binlog index mean together, pure: backup chains
//! (a full and the incrementals on it), which backup and which segments restore a
//! point, what `backup list` shows (chain complete or not, oldest restorable point),
//! which backup is due by the schedule, and retention that never deletes a parent or
//! a segment a kept backup needs.

use std::collections::BTreeMap;

use super::archive::{gaps, segments_to_replay, Gap, Point, ReplayError, Segment};
use super::manifest::{format_millis, BackupKind, Manifest};
use crate::topology::gtid::GtidSet;

/// A backup and the backups it needs, full first.
pub fn chain<'m>(manifests: &'m [Manifest], id: &str) -> Result<Vec<&'m Manifest>, String> {
    let by_id: BTreeMap<&str, &Manifest> = manifests.iter().map(|m| (m.id.as_str(), m)).collect();
    let mut out: Vec<&Manifest> = Vec::new();
    let mut next = Some(id);
    while let Some(current) = next {
        let m = by_id
            .get(current)
            .ok_or_else(|| match out.last() {
                None => format!("no complete backup {current}"),
                Some(child) => format!("backup {} needs {current}, which is missing", child.id),
            })
            .copied()?;
        if out.len() > manifests.len() {
            return Err(format!("backup {id}: its parents form a loop"));
        }
        if let Some(child) = out.last() {
            if m.method != child.method || m.flavor != child.flavor {
                return Err(format!(
                    "backup {} was taken by another method than its parent {}",
                    child.id, m.id
                ));
            }
        }
        out.push(m);
        next = match m.kind {
            BackupKind::Full => None,
            BackupKind::Incremental => Some(
                m.parent.as_deref().ok_or_else(|| format!("incremental backup {} names no parent", m.id))?,
            ),
        };
    }
    out.reverse();
    Ok(out)
}

/// One row of `backup list`.
#[derive(Debug, Clone, PartialEq)]
pub struct BackupRow {
    pub manifest: Manifest,
    /// Every backup it needs is there.
    pub chain_complete: bool,
    /// Why not.
    pub chain_problem: Option<String>,
    /// How many backups a restore of it downloads (1 for a full).
    pub chain_length: usize,
}

/// What the bucket holds, as `backup list` shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct Listing {
    /// Oldest first.
    pub backups: Vec<BackupRow>,
    /// Backups with parts but no manifest: running, failed or killed (never restorable).
    pub incomplete: Vec<(BackupKind, String)>,
    /// The oldest point a restore reaches: the consistent point of the oldest backup
    /// whose chain is complete (Unix ms).
    pub oldest_restorable_ms: Option<i64>,
    /// The newest archived transaction's commit time (Unix µs, latest estimate).
    pub latest_archived_micros: Option<i64>,
    pub segments: usize,
    pub archived_bytes: u64,
    pub gaps: Vec<Gap>,
}

pub fn listing(
    manifests: &[Manifest],
    segments: &[Segment],
    incomplete: Vec<(BackupKind, String)>,
) -> Listing {
    let mut sorted: Vec<&Manifest> = manifests.iter().collect();
    sorted.sort_by(|a, b| (a.started_at_ms, &a.id).cmp(&(b.started_at_ms, &b.id)));
    let backups: Vec<BackupRow> = sorted
        .iter()
        .map(|m| {
            let c = chain(manifests, &m.id);
            BackupRow {
                manifest: (*m).clone(),
                chain_complete: c.is_ok(),
                chain_length: c.as_ref().map(Vec::len).unwrap_or(0),
                chain_problem: c.err(),
            }
        })
        .collect();
    let oldest_restorable_ms =
        backups.iter().filter(|b| b.chain_complete).map(|b| b.manifest.consistent_at_ms).min();
    Listing {
        backups,
        incomplete,
        oldest_restorable_ms,
        latest_archived_micros: segments.iter().map(|s| s.last_commit.latest_micros()).max(),
        segments: segments.len(),
        archived_bytes: segments.iter().map(|s| s.stored_bytes).sum(),
        gaps: gaps(segments),
    }
}

/// The flavor records commit times to the second only (MariaDB): a backup's
/// consistent point then counts from the end of its second.
fn seconds_only(m: &Manifest) -> bool {
    m.flavor == "mariadb"
}

/// Everything archived before the first segment whose history meets `wanted` (plus
/// what the archive began from): a conservative prefix of the history, to judge
/// whether a backup lies before a point given by GTIDs.
fn history_before_first_meeting(segments: &[Segment], wanted: &GtidSet, cover: bool) -> GtidSet {
    let mut have = segments.first().map(|s| s.before.clone()).unwrap_or_default();
    if cover && wanted.is_subset_of(&have) {
        return have;
    }
    let discards = super::archive::discarded_after(segments);
    for s in segments {
        let none = GtidSet::new();
        let history = s.gtids.subtract(discards.get(&s.seq).unwrap_or(&none));
        let after = have.union(&history);
        let stops =
            if cover { wanted.is_subset_of(&after) } else { !history.intersection(wanted).is_empty() };
        if stops {
            return have;
        }
        have = after;
    }
    have
}

/// Whether a backup holding `m.gtid_executed` lies at or before `point`.
fn lies_before(m: &Manifest, segments: &[Segment], point: &Point) -> bool {
    let held = &m.gtid_executed;
    match point {
        Point::Latest => true,
        Point::Time(limit) => {
            let consistent_us = m.consistent_at_ms * 1000;
            let latest_us =
                if seconds_only(m) { (consistent_us / 1_000_000 + 1) * 1_000_000 - 1 } else { consistent_us };
            latest_us <= *limit
        }
        Point::Gtids { set, exclusive: false } => {
            let prefix = history_before_first_meeting(segments, set, true).union(set);
            held.is_subset_of(&prefix)
        }
        Point::Gtids { set, exclusive: true } => {
            held.intersection(set).is_empty()
                && held.is_subset_of(&history_before_first_meeting(segments, set, false))
        }
    }
}

/// Why no restore plan exists.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("no complete backup: take one first (`orchctl backup create`)")]
    NoBackup,
    #[error("backup {id}: {problem}")]
    BrokenChain { id: String, problem: String },
    #[error("no complete backup lies before {point}; the oldest restorable point is {oldest}")]
    TooEarly { point: String, oldest: String },
    #[error("backup {id} lies after {point}")]
    BackupAfterPoint { id: String, point: String },
    #[error(transparent)]
    Replay(#[from] ReplayError),
}

/// What a restore downloads and replays.
#[derive(Debug, Clone, PartialEq)]
pub struct RestorePlan<'a> {
    /// Full first, then incrementals in order.
    pub chain: Vec<&'a Manifest>,
    /// Binlog segments to read, in order.
    pub segments: Vec<&'a Segment>,
    pub point: Point,
}

impl RestorePlan<'_> {
    pub fn tip(&self) -> &Manifest {
        self.chain.last().expect("a chain holds its full")
    }

    /// Bytes to download.
    pub fn stored_bytes(&self) -> u64 {
        self.chain.iter().map(|m| m.stored_bytes).sum::<u64>()
            + self.segments.iter().map(|s| s.stored_bytes).sum::<u64>()
    }
}

/// The newest backup whose chain is complete and which lies before `point`, with the
/// archived segments that take it there; `backup` forces one.
pub fn plan_restore<'a>(
    manifests: &'a [Manifest],
    segments: &'a [Segment],
    point: Point,
    backup: Option<&str>,
) -> Result<RestorePlan<'a>, PlanError> {
    let mut tips: Vec<&Manifest> = manifests.iter().collect();
    tips.sort_by(|a, b| (b.consistent_at_ms, &b.id).cmp(&(a.consistent_at_ms, &a.id)));
    if let Some(id) = backup {
        let chain =
            chain(manifests, id).map_err(|problem| PlanError::BrokenChain { id: id.to_string(), problem })?;
        let tip = *chain.last().expect("a chain holds its full");
        if !lies_before(tip, segments, &point) {
            return Err(PlanError::BackupAfterPoint { id: id.to_string(), point: point.describe() });
        }
        let segs = segments_to_replay(segments, tip.held_at_least(), &point)?;
        return Ok(RestorePlan { chain, segments: segs, point });
    }
    let mut complete = 0;
    let mut last_error = None;
    for tip in tips {
        let Ok(chain) = chain(manifests, &tip.id) else { continue };
        complete += 1;
        if !lies_before(tip, segments, &point) {
            continue;
        }
        match segments_to_replay(segments, tip.held_at_least(), &point) {
            Ok(segs) => return Ok(RestorePlan { chain, segments: segs, point }),
            Err(e) => last_error = last_error.or(Some(e)),
        }
    }
    if let Some(e) = last_error {
        return Err(e.into());
    }
    if complete == 0 {
        return Err(PlanError::NoBackup);
    }
    let oldest = listing(manifests, segments, Vec::new())
        .oldest_restorable_ms
        .map(format_millis)
        .unwrap_or_else(|| "unknown".into());
    Err(PlanError::TooEarly { point: point.describe(), oldest })
}

/// The backup an incremental taken now applies on: the newest complete backup whose
/// chain is complete, of a method that takes incrementals.
pub fn incremental_parent<'m>(
    manifests: &'m [Manifest],
    source: &str,
    incarnation: &str,
) -> Option<&'m Manifest> {
    newest_incremental_base(manifests)
        .filter(|m| m.source == source && !incarnation.is_empty() && m.incarnation == incarnation)
}

/// The newest complete backup of a method that takes incrementals, of any source:
/// what the schedule counts the next incremental from, and whose source a backup
/// prefers so the chain goes on.
pub fn newest_incremental_base(manifests: &[Manifest]) -> Option<&Manifest> {
    manifests
        .iter()
        .filter(|m| m.method.incremental() && m.lsn.is_some() && chain(manifests, &m.id).is_ok())
        .max_by_key(|m| (m.started_at_ms, m.id.clone()))
}

/// When backups are due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schedule {
    /// A full backup at least this often (0: never by schedule).
    pub full_every_s: u64,
    /// An incremental at least this often between fulls (0: never).
    pub incremental_every_s: u64,
}

/// What the schedule asks for now, if anything.
pub fn due(
    manifests: &[Manifest],
    schedule: Schedule,
    now_ms: i64,
    incrementals: bool,
) -> Option<BackupKind> {
    let ms = |s: u64| s.saturating_mul(1000) as i64;
    let last_full = manifests.iter().filter(|m| m.kind == BackupKind::Full).max_by_key(|m| m.started_at_ms);
    let full_due = match last_full {
        None => schedule.full_every_s > 0,
        Some(f) => schedule.full_every_s > 0 && now_ms - f.started_at_ms >= ms(schedule.full_every_s),
    };
    if full_due {
        return Some(BackupKind::Full);
    }
    if !incrementals || schedule.incremental_every_s == 0 {
        return None;
    }
    let parent = newest_incremental_base(manifests)?;
    (now_ms - parent.started_at_ms >= ms(schedule.incremental_every_s)).then_some(BackupKind::Incremental)
}

/// How long backups are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Backups younger than this are kept.
    pub keep_days: u64,
    /// The newest this many full backups (with their incrementals) are kept whatever
    /// their age.
    pub keep_full: usize,
    /// A backup with parts but no manifest this old is a failed one: its parts go.
    pub incomplete_after_s: u64,
}

/// What retention deletes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetentionPlan {
    pub backups: Vec<(BackupKind, String)>,
    /// Failed backups (no manifest) whose parts go.
    pub incomplete: Vec<(BackupKind, String)>,
    /// Segments (by seq) no kept backup needs: the oldest part of the archive.
    pub segments: Vec<u64>,
}

/// Expired backups go with all their incrementals, never a parent of a kept one;
/// archived segments go only while everything in them is in the oldest kept full
/// backup (so every kept backup still replays to any later point). `in_progress` is
/// the backup the lock holder is taking (its parts are kept).
pub fn plan_retention(
    manifests: &[Manifest],
    segments: &[Segment],
    incomplete: &[(BackupKind, String)],
    in_progress: Option<&str>,
    retention: Retention,
    now_ms: i64,
) -> RetentionPlan {
    let mut plan = RetentionPlan::default();
    let cutoff = now_ms - (retention.keep_days as i64) * 86_400_000;
    let mut fulls: Vec<&Manifest> = manifests.iter().filter(|m| m.kind == BackupKind::Full).collect();
    fulls.sort_by(|a, b| (b.started_at_ms, &b.id).cmp(&(a.started_at_ms, &a.id)));
    let kept_fulls: Vec<&Manifest> = fulls
        .iter()
        .enumerate()
        .filter(|(i, m)| *i < retention.keep_full || m.started_at_ms >= cutoff)
        .map(|(_, m)| *m)
        .collect();
    let kept_ids: std::collections::BTreeSet<&str> = kept_fulls.iter().map(|m| m.id.as_str()).collect();
    for m in manifests {
        let keep = match chain(manifests, &m.id) {
            Ok(c) => kept_ids.contains(c[0].id.as_str()),
            // A broken chain restores nothing: kept while young, for an operator to see.
            Err(_) => m.started_at_ms >= cutoff,
        };
        if !keep {
            plan.backups.push((m.kind, m.id.clone()));
        }
    }
    plan.backups.sort();
    for (kind, id) in incomplete {
        let old = super::manifest::backup_id_time(id)
            .is_none_or(|t| now_ms - t >= (retention.incomplete_after_s as i64) * 1000);
        if old && in_progress != Some(id.as_str()) {
            plan.incomplete.push((*kind, id.clone()));
        }
    }
    // The archive's oldest segments, while a kept full backup already holds all of them.
    if let Some(oldest) = kept_fulls.iter().min_by_key(|m| (m.consistent_at_ms, m.id.clone())) {
        let held = oldest.held_at_least();
        for s in segments {
            // Segments go in order while each is wholly in the backup, so everything
            // archived up to the last one deleted is too (a segment holding
            // transactions a fork discarded stops it: kept, never lost).
            if !s.gtids.is_subset_of(held) {
                break;
            }
            plan.segments.push(s.seq);
        }
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backup::archive::tests::{segment, set};
    use crate::backup::manifest::{Lsn, Method, MANIFEST_FORMAT};

    fn backup(id: &str, kind: BackupKind, parent: Option<&str>, gtid: &str, at_s: i64) -> Manifest {
        Manifest {
            format: MANIFEST_FORMAT,
            id: id.into(),
            cluster_id: "c".into(),
            kind,
            method: Method::MariadbBackup,
            parent: parent.map(Into::into),
            flavor: "mariadb".into(),
            server_version: "10.11".into(),
            source: "10.0.0.2:3306".into(),
            incarnation: "2049-12-1".into(),
            gtid_executed: set(gtid),
            gtid_at_least: None,
            gtid_position_text: gtid.into(),
            lsn: Some(Lsn { from: 0, to: 10, last: 11 }),
            consistent_at_ms: at_s * 1000,
            started_at_ms: at_s * 1000 - 500,
            finished_at_ms: at_s * 1000 + 100,
            stream_format: "xbstream".into(),
            compression: "zstd".into(),
            compression_level: 3,
            encryption: None,
            parts: vec![],
            raw_bytes: 100,
            stored_bytes: 10,
            staged_locally: false,
        }
    }

    /// Segments 1..=3 hold transactions 1-10, 11-20, 21-30 (transaction n committed at
    /// second n); full F1 at 5 (second 5), incremental I1 at 15, full F2 at 25.
    fn world() -> (Vec<Manifest>, Vec<Segment>) {
        let m = vec![
            backup("F1", BackupKind::Full, None, "0-1-5", 5),
            backup("I1", BackupKind::Incremental, Some("F1"), "0-1-15", 15),
            backup("F2", BackupKind::Full, None, "0-1-25", 25),
        ];
        (m, vec![segment(1, 1, 1, 10), segment(2, 1, 11, 20), segment(3, 1, 21, 30)])
    }

    fn ids(p: &RestorePlan) -> (Vec<String>, Vec<u64>) {
        (p.chain.iter().map(|m| m.id.clone()).collect(), p.segments.iter().map(|s| s.seq).collect())
    }

    #[test]
    fn chains_follow_parents_and_name_what_is_missing() {
        let (m, _) = world();
        let c: Vec<&str> = chain(&m, "I1").unwrap().iter().map(|m| m.id.as_str()).collect();
        assert_eq!(c, vec!["F1", "I1"]);
        let orphan = vec![m[1].clone()];
        assert_eq!(chain(&orphan, "I1").unwrap_err(), "backup I1 needs F1, which is missing");
        let l = listing(&orphan, &[], vec![(BackupKind::Full, "F9".into())]);
        assert!(!l.backups[0].chain_complete);
        assert_eq!(l.oldest_restorable_ms, None);
        let l = listing(&m, &world().1, vec![]);
        assert_eq!(l.oldest_restorable_ms, Some(5000));
        assert_eq!(l.latest_archived_micros, Some(30_000_000));
    }

    #[test]
    fn a_restore_takes_the_newest_backup_before_the_point() {
        let (m, s) = world();
        let plan = |p: Point| ids(&plan_restore(&m, &s, p, None).unwrap());
        assert_eq!(plan(Point::Latest), (vec!["F2".into()], vec![3]));
        assert_eq!(plan(Point::Time(18_000_000)), (vec!["F1".into(), "I1".into()], vec![2]));
        // The backup at second 15 counts from the end of its second (MariaDB).
        assert_eq!(plan(Point::Time(15_500_000)), (vec!["F1".into()], vec![1, 2]));
        assert_eq!(
            plan(Point::Gtids { set: set("0-1-17"), exclusive: false }),
            (vec!["F1".into(), "I1".into()], vec![2])
        );
        assert_eq!(plan(Point::Gtids { set: set("0:12"), exclusive: true }), (vec!["F1".into()], vec![1, 2]));
        let early = plan_restore(&m, &s, Point::Time(3_000_000), None).unwrap_err();
        assert!(matches!(early, PlanError::TooEarly { .. }), "{early}");
        let forced = plan_restore(&m, &s, Point::Time(18_000_000), Some("F2")).unwrap_err();
        assert!(matches!(forced, PlanError::BackupAfterPoint { .. }));
        assert_eq!(plan_restore(&[], &s, Point::Latest, None).unwrap_err(), PlanError::NoBackup);
    }

    #[test]
    fn the_schedule_asks_for_a_full_then_incrementals() {
        let day = 86_400;
        let s = Schedule { full_every_s: 7 * day, incremental_every_s: day };
        assert_eq!(due(&[], s, 0, true), Some(BackupKind::Full));
        let f = backup("F", BackupKind::Full, None, "0-1-1", 1000);
        let at = |d: u64| 1_000_000 + (d * day * 1000) as i64;
        assert_eq!(due(std::slice::from_ref(&f), s, at(0), true), None);
        assert_eq!(due(std::slice::from_ref(&f), s, at(1), true), Some(BackupKind::Incremental));
        assert_eq!(due(std::slice::from_ref(&f), s, at(1), false), None);
        assert_eq!(due(std::slice::from_ref(&f), s, at(7), true), Some(BackupKind::Full));
    }

    #[test]
    fn an_incremental_applies_only_on_the_same_copy_of_the_same_server() {
        let (m, _) = world();
        let source = "10.0.0.2:3306";
        assert_eq!(incremental_parent(&m, source, "2049-12-1").map(|p| p.id.as_str()), Some("F2"));
        // Another replica, or the same one re-seeded (its LSNs are of other data).
        assert_eq!(incremental_parent(&m, "10.0.0.3:3306", "2049-12-1"), None);
        assert_eq!(incremental_parent(&m, source, "2049-77-1"), None);
        // Unknown here: never guessed.
        assert_eq!(incremental_parent(&m, source, ""), None);
    }

    #[test]
    fn retention_keeps_parents_and_the_segments_kept_backups_need() {
        let (m, s) = world();
        let r = Retention { keep_days: 1, keep_full: 1, incomplete_after_s: 3600 };
        let far = 400 * 86_400_000;
        let plan = plan_retention(&m, &s, &[(BackupKind::Full, "19700101T000000Z".into())], None, r, far);
        assert_eq!(
            plan.backups,
            vec![(BackupKind::Full, "F1".to_string()), (BackupKind::Incremental, "I1".to_string())]
        );
        assert_eq!(plan.incomplete, vec![(BackupKind::Full, "19700101T000000Z".to_string())]);
        // F2 holds 1..=25: segments 1 (1-10) and 2 (11-20) go, 3 (21-30) stays.
        assert_eq!(plan.segments, vec![1, 2]);
        // Keeping two fulls keeps F1 and I1, and every segment F1 needs.
        let two = plan_retention(&m, &s, &[], None, Retention { keep_full: 2, ..r }, far);
        assert!(two.backups.is_empty());
        assert!(two.segments.is_empty());
        // An incremental whose parent is kept is never deleted before it.
        let young = plan_retention(&m, &s, &[], None, Retention { keep_days: 10_000, ..r }, far);
        assert!(young.backups.is_empty());
        // Nothing archived is deleted while no backup is kept.
        assert!(plan_retention(&[], &s, &[], None, r, far).segments.is_empty());
        // The backup being taken keeps its parts.
        let running = plan_retention(
            &[],
            &[],
            &[(BackupKind::Full, "19700101T000000Z".into())],
            Some("19700101T000000Z"),
            r,
            far,
        );
        assert!(running.incomplete.is_empty());
    }
}
