//! GTID sets for MySQL and MariaDB, with the set algebra the orchestrator needs to
//! compare replicas (behind / errant transactions / promotion candidates).
//!
//! This module owns:
//! - [`IntervalSet`]: a normalized set of transaction numbers (sorted, disjoint,
//!   non-adjacent inclusive intervals);
//! - [`GtidSource`]: where a transaction comes from (MySQL source UUID, optionally
//!   with a MySQL 8.4 tag, or a MariaDB replication domain);
//! - [`GtidSet`]: parsing of both text forms (`uuid:1-5:7-9,...` with tags, and
//!   MariaDB `domain-server-seq` lists), canonical display, serde as a string,
//!   and union / subtraction / intersection / subset checks.
//!
//! MariaDB positions are interpreted under `gtid_strict_mode`: `d-s-n` means domain
//! `d` executed sequence numbers `1..=n`. A domain that is not such a prefix (e.g.
//! after a subtraction) is written in the extended form `d:91-100`, which
//! [`GtidSet::parse`] accepts as well, so that parsing the display always gives the
//! set back.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

/// Where a transaction comes from: a MySQL source UUID (optionally tagged) or a MariaDB replication domain.
///
/// UUIDs and tags are stored lowercase. The derived ordering sorts UUID sources
/// first (by uuid, then untagged before tagged, then by tag), then domains.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum GtidSource {
    /// A MySQL server UUID, with the MySQL 8.4 tag if the GTIDs are tagged.
    Uuid {
        /// Lowercase `8-4-4-4-12` hexadecimal UUID.
        uuid: String,
        /// Lowercase tag, `None` for untagged GTIDs.
        tag: Option<String>,
    },
    /// A MariaDB replication domain id.
    Domain(u32),
}

/// Sorted, non-overlapping, non-adjacent inclusive intervals of transaction numbers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IntervalSet {
    ivs: Vec<(u64, u64)>,
}

impl IntervalSet {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds every number in `lo..=hi`, merging with overlapping or adjacent
    /// intervals. An empty range (`lo > hi`) is ignored.
    pub fn insert(&mut self, lo: u64, hi: u64) {
        if lo > hi {
            return;
        }
        // First interval that overlaps or touches [lo, hi] from the left...
        let start = self.ivs.partition_point(|&(_, h)| h.saturating_add(1) < lo);
        // ...and one past the last interval that overlaps or touches it from the right.
        let end = self.ivs.partition_point(|&(l, _)| l <= hi.saturating_add(1));
        if start == end {
            self.ivs.insert(start, (lo, hi));
            return;
        }
        let new_lo = lo.min(self.ivs[start].0);
        let new_hi = hi.max(self.ivs[end - 1].1);
        self.ivs.splice(start..end, std::iter::once((new_lo, new_hi)));
    }

    /// Numbers in `self` or in `o`.
    pub fn union(&self, o: &Self) -> Self {
        let (a, b) = (&self.ivs, &o.ivs);
        let mut out: Vec<(u64, u64)> = Vec::with_capacity(a.len() + b.len());
        let (mut i, mut j) = (0, 0);
        loop {
            let next = match (a.get(i), b.get(j)) {
                (Some(&x), Some(&y)) => {
                    if x.0 <= y.0 {
                        i += 1;
                        x
                    } else {
                        j += 1;
                        y
                    }
                }
                (Some(&x), None) => {
                    i += 1;
                    x
                }
                (None, Some(&y)) => {
                    j += 1;
                    y
                }
                (None, None) => break,
            };
            push_coalescing(&mut out, next);
        }
        Self { ivs: out }
    }

    /// Numbers in `self` that are not in `o`.
    pub fn subtract(&self, o: &Self) -> Self {
        let b = &o.ivs;
        let mut out = Vec::new();
        let mut j = 0;
        for &(lo, hi) in &self.ivs {
            while j < b.len() && b[j].1 < lo {
                j += 1;
            }
            let mut cur = lo;
            let mut covered_to_end = false;
            let mut k = j;
            while k < b.len() && b[k].0 <= hi {
                let (blo, bhi) = b[k];
                if blo > cur {
                    out.push((cur, blo - 1));
                }
                if bhi >= hi {
                    covered_to_end = true;
                    break;
                }
                // bhi < hi, so no overflow.
                cur = bhi + 1;
                k += 1;
            }
            if !covered_to_end {
                out.push((cur, hi));
            }
            j = k;
        }
        Self { ivs: out }
    }

    /// Numbers in both `self` and `o`.
    pub fn intersection(&self, o: &Self) -> Self {
        let (a, b) = (&self.ivs, &o.ivs);
        let mut out = Vec::new();
        let (mut i, mut j) = (0, 0);
        while i < a.len() && j < b.len() {
            let lo = a[i].0.max(b[j].0);
            let hi = a[i].1.min(b[j].1);
            if lo <= hi {
                out.push((lo, hi));
            }
            if a[i].1 < b[j].1 {
                i += 1;
            } else {
                j += 1;
            }
        }
        Self { ivs: out }
    }

    /// True when every number of `self` is in `o`.
    pub fn is_subset_of(&self, o: &Self) -> bool {
        // `o` has no adjacent intervals, so each interval of `self` must sit
        // inside a single interval of `o`.
        self.ivs.iter().all(|&(lo, hi)| {
            let idx = o.ivs.partition_point(|&(_, h)| h < lo);
            o.ivs.get(idx).is_some_and(|&(l, h)| l <= lo && hi <= h)
        })
    }

    /// True when `n` is in the set.
    pub fn contains(&self, n: u64) -> bool {
        let idx = self.ivs.partition_point(|&(_, h)| h < n);
        self.ivs.get(idx).is_some_and(|&(l, _)| l <= n)
    }

    /// True when the set holds no number.
    pub fn is_empty(&self) -> bool {
        self.ivs.is_empty()
    }

    /// How many numbers the set holds (saturating at `u64::MAX`).
    pub fn count(&self) -> u64 {
        self.ivs.iter().fold(0u64, |acc, &(lo, hi)| acc.saturating_add((hi - lo).saturating_add(1)))
    }

    /// The highest number in the set.
    pub fn max(&self) -> Option<u64> {
        self.ivs.last().map(|&(_, hi)| hi)
    }

    /// The intervals, sorted, disjoint and non-adjacent.
    pub fn intervals(&self) -> &[(u64, u64)] {
        &self.ivs
    }

    /// `Some(n)` when the set is exactly `1..=n`.
    fn as_prefix(&self) -> Option<u64> {
        match self.ivs.as_slice() {
            [(1, n)] => Some(*n),
            _ => None,
        }
    }
}

/// Intervals joined by `:`, e.g. `1-5:7`.
impl fmt::Display for IntervalSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, &iv) in self.ivs.iter().enumerate() {
            if i > 0 {
                f.write_str(":")?;
            }
            write_interval(f, iv)?;
        }
        Ok(())
    }
}

fn write_interval(f: &mut fmt::Formatter<'_>, (lo, hi): (u64, u64)) -> fmt::Result {
    if lo == hi {
        write!(f, "{lo}")
    } else {
        write!(f, "{lo}-{hi}")
    }
}

/// Appends an interval that starts at or after the start of the last one, merging
/// when they overlap or touch.
fn push_coalescing(out: &mut Vec<(u64, u64)>, (lo, hi): (u64, u64)) {
    if let Some(last) = out.last_mut() {
        if lo <= last.1.saturating_add(1) {
            last.1 = last.1.max(hi);
            return;
        }
    }
    out.push((lo, hi));
}

/// Why a GTID set text was rejected. Every message starts with
/// ``invalid GTID set `<input>`: `` and names the offending part.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GtidParseError {
    /// A transaction interval (`a-b` or `n`) is malformed.
    #[error("invalid GTID set `{input}`: bad interval `{interval}` ({reason})")]
    BadInterval {
        /// The whole input (shortened when very long).
        input: String,
        /// The offending interval text.
        interval: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A MySQL source UUID is malformed.
    #[error("invalid GTID set `{input}`: bad uuid `{uuid}` (expected 8-4-4-4-12 hexadecimal digits)")]
    BadUuid {
        /// The whole input (shortened when very long).
        input: String,
        /// The offending uuid text.
        uuid: String,
    },
    /// A MySQL 8.4 GTID tag is malformed or has no intervals.
    #[error("invalid GTID set `{input}`: bad tag `{tag}` ({reason})")]
    BadTag {
        /// The whole input (shortened when very long).
        input: String,
        /// The offending tag text.
        tag: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A MariaDB `domain-server-seq` GTID (or extended `domain:intervals` element) is malformed.
    #[error("invalid GTID set `{input}`: bad MariaDB GTID `{gtid}` ({reason})")]
    BadMariadbGtid {
        /// The whole input (shortened when very long).
        input: String,
        /// The offending element.
        gtid: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A comma-separated element is neither form, or is empty.
    #[error("invalid GTID set `{input}`: bad element `{element}` ({reason})")]
    BadElement {
        /// The whole input (shortened when very long).
        input: String,
        /// The offending element.
        element: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// `parse_mysql` got a MariaDB element or `parse_mariadb` got a MySQL one.
    #[error("invalid GTID set `{input}`: element `{element}` is not a {expected} GTID")]
    WrongForm {
        /// The whole input (shortened when very long).
        input: String,
        /// The offending element.
        element: String,
        /// `"MySQL"` or `"MariaDB"`.
        expected: &'static str,
    },
    /// One string mixes MySQL and MariaDB elements.
    #[error("invalid GTID set `{input}`: mixes MySQL GTID `{mysql}` and MariaDB GTID `{mariadb}`")]
    MixedForms {
        /// The whole input (shortened when very long).
        input: String,
        /// The first MySQL element.
        mysql: String,
        /// The first MariaDB element.
        mariadb: String,
    },
}

/// A set of GTIDs: per source, the transaction numbers executed.
///
/// For MariaDB domains it also remembers the server_id of the domain's highest
/// transaction, as metadata used only for display; it does not take part in
/// equality or subset checks.
#[derive(Debug, Clone, Default)]
pub struct GtidSet {
    /// No empty interval sets.
    sets: BTreeMap<GtidSource, IntervalSet>,
    /// domain -> server_id of the domain's highest transaction. Only present for
    /// domains in `sets`, and only when that server_id is known.
    server_ids: BTreeMap<u32, u32>,
}

impl PartialEq for GtidSet {
    fn eq(&self, other: &Self) -> bool {
        self.sets == other.sets
    }
}

impl Eq for GtidSet {}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Auto,
    MySql,
    MariaDb,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ElementKind {
    /// `uuid:...`
    MySql,
    /// `d-s-n`
    MariaDbTriple,
    /// `d:intervals`
    MariaDbExtended,
}

const MAX_INPUT_IN_ERROR: usize = 200;

/// The input as quoted in error messages: cut when very long.
fn shorten(input: &str) -> String {
    match input.char_indices().nth(MAX_INPUT_IN_ERROR) {
        Some((idx, _)) => format!("{}...", &input[..idx]),
        None => input.to_string(),
    }
}

fn is_uuid(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, &c)| match i {
            8 | 13 | 18 | 23 => c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}

fn tag_problem(tag: &str) -> Option<&'static str> {
    let mut chars = tag.chars();
    match chars.next() {
        None => return Some("empty tag"),
        Some(c) if c.is_ascii_alphabetic() || c == '_' => {}
        Some(_) => return Some("must start with a letter or underscore"),
    }
    if !chars.all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Some("only letters, digits and underscore are allowed");
    }
    if tag.len() > 32 {
        return Some("longer than 32 characters");
    }
    None
}

fn parse_number(s: &str) -> Result<u64, &'static str> {
    if s.is_empty() {
        return Err("missing number");
    }
    if !s.bytes().all(|c| c.is_ascii_digit()) {
        return Err("not a number");
    }
    let n: u64 = s.parse().map_err(|_| "number out of range")?;
    if n == 0 {
        return Err("transaction numbers start at 1");
    }
    Ok(n)
}

/// `a-b` or `n`, numbers >= 1, `a <= b`.
fn parse_interval(piece: &str) -> Result<(u64, u64), &'static str> {
    let (a, b) = match piece.split_once('-') {
        Some((a, b)) => (a.trim(), b.trim()),
        None => (piece, piece),
    };
    let lo = parse_number(a)?;
    let hi = parse_number(b)?;
    if lo > hi {
        return Err("start after end");
    }
    Ok((lo, hi))
}

fn classify(part: &str) -> Option<ElementKind> {
    if let Some((head, _)) = part.split_once(':') {
        let head = head.trim();
        if !head.is_empty() && head.bytes().all(|c| c.is_ascii_digit()) {
            Some(ElementKind::MariaDbExtended)
        } else {
            Some(ElementKind::MySql)
        }
    } else if part.contains('-') && part.chars().all(|c| c.is_ascii_digit() || c == '-' || c.is_whitespace())
    {
        Some(ElementKind::MariaDbTriple)
    } else {
        None
    }
}

impl GtidSet {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Parses either form, detected per element: an element with `:` is MySQL
    /// (`uuid[:tag]:intervals...`) unless it starts with a number (`domain:intervals`,
    /// the extended MariaDB form this module displays); `d-s-n` is MariaDB. Mixing
    /// MySQL and MariaDB elements is an error. Blank input is the empty set; empty
    /// elements (`a,,b`, a trailing comma) are skipped, as MySQL does.
    pub fn parse(s: &str) -> Result<Self, GtidParseError> {
        Self::parse_with(s, Mode::Auto)
    }

    /// Parses a MySQL GTID set (`@@gtid_executed`, `@@gtid_purged`, ...).
    pub fn parse_mysql(s: &str) -> Result<Self, GtidParseError> {
        Self::parse_with(s, Mode::MySql)
    }

    /// Parses a MariaDB GTID position (`@@gtid_current_pos`, `@@gtid_slave_pos`,
    /// `@@gtid_binlog_pos`), also accepting the extended `domain:intervals` elements.
    /// Several entries for one domain give it the highest seq and that entry's server_id.
    /// A seq of 0 (`0-1-0`) adds no transactions.
    pub fn parse_mariadb(s: &str) -> Result<Self, GtidParseError> {
        Self::parse_with(s, Mode::MariaDb)
    }

    fn parse_with(s: &str, mode: Mode) -> Result<Self, GtidParseError> {
        let mut set = GtidSet::new();
        let trimmed = s.trim();
        if trimmed.is_empty() {
            return Ok(set);
        }
        let mut first_mysql: Option<&str> = None;
        let mut first_mariadb: Option<&str> = None;
        for raw in trimmed.split(',') {
            let part = raw.trim();
            if part.is_empty() {
                // Like MySQL, tolerate empty elements (`a,,b`, trailing comma).
                continue;
            }
            let Some(kind) = classify(part) else {
                let reason = if is_uuid(part) {
                    "uuid without intervals"
                } else {
                    "expected `uuid:intervals` or `domain-server-seq`"
                };
                return Err(GtidParseError::BadElement {
                    input: shorten(s),
                    element: part.to_string(),
                    reason,
                });
            };
            let is_mysql = kind == ElementKind::MySql;
            match (mode, is_mysql) {
                (Mode::MySql, false) => {
                    return Err(GtidParseError::WrongForm {
                        input: shorten(s),
                        element: part.to_string(),
                        expected: "MySQL",
                    })
                }
                (Mode::MariaDb, true) => {
                    return Err(GtidParseError::WrongForm {
                        input: shorten(s),
                        element: part.to_string(),
                        expected: "MariaDB",
                    })
                }
                _ => {}
            }
            if is_mysql {
                first_mysql.get_or_insert(part);
            } else {
                first_mariadb.get_or_insert(part);
            }
            if let (Some(mysql), Some(mariadb)) = (first_mysql, first_mariadb) {
                return Err(GtidParseError::MixedForms {
                    input: shorten(s),
                    mysql: mysql.to_string(),
                    mariadb: mariadb.to_string(),
                });
            }
            match kind {
                ElementKind::MySql => set.add_mysql_element(s, part)?,
                ElementKind::MariaDbTriple => set.add_mariadb_triple(s, part)?,
                ElementKind::MariaDbExtended => set.add_mariadb_extended(s, part)?,
            }
        }
        Ok(set)
    }

    fn insert_interval(&mut self, source: GtidSource, (lo, hi): (u64, u64)) {
        self.sets.entry(source).or_default().insert(lo, hi);
    }

    /// `uuid[:intervals...][:tag:intervals...]...`
    fn add_mysql_element(&mut self, input: &str, part: &str) -> Result<(), GtidParseError> {
        let mut pieces = part.split(':');
        let raw_uuid = pieces.next().unwrap_or_default().trim();
        if !is_uuid(raw_uuid) {
            return Err(GtidParseError::BadUuid { input: shorten(input), uuid: raw_uuid.to_string() });
        }
        let uuid = raw_uuid.to_ascii_lowercase();
        let mut tag: Option<String> = None;
        // Whether the current (untagged or tagged) group got an interval yet.
        let mut has_interval = false;
        for piece in pieces {
            let piece = piece.trim();
            let starts_tag = piece.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
            if starts_tag {
                if let (Some(prev), false) = (&tag, has_interval) {
                    return Err(GtidParseError::BadTag {
                        input: shorten(input),
                        tag: prev.clone(),
                        reason: "no intervals after tag",
                    });
                }
                if let Some(reason) = tag_problem(piece) {
                    return Err(GtidParseError::BadTag {
                        input: shorten(input),
                        tag: piece.to_string(),
                        reason,
                    });
                }
                tag = Some(piece.to_ascii_lowercase());
                has_interval = false;
            } else {
                let iv = parse_interval(piece).map_err(|reason| GtidParseError::BadInterval {
                    input: shorten(input),
                    interval: piece.to_string(),
                    reason,
                })?;
                self.insert_interval(GtidSource::Uuid { uuid: uuid.clone(), tag: tag.clone() }, iv);
                has_interval = true;
            }
        }
        if !has_interval {
            return Err(match tag {
                Some(tag) => {
                    GtidParseError::BadTag { input: shorten(input), tag, reason: "no intervals after tag" }
                }
                None => GtidParseError::BadElement {
                    input: shorten(input),
                    element: part.to_string(),
                    reason: "uuid without intervals",
                },
            });
        }
        Ok(())
    }

    /// `domain-server-seq`
    fn add_mariadb_triple(&mut self, input: &str, part: &str) -> Result<(), GtidParseError> {
        let bad = |reason: &'static str| GtidParseError::BadMariadbGtid {
            input: shorten(input),
            gtid: part.to_string(),
            reason,
        };
        let fields: Vec<&str> = part.split('-').map(str::trim).collect();
        let [d, sid, seq] = fields.as_slice() else {
            return Err(bad("expected domain-server_id-seq"));
        };
        let all_digits = |x: &str| !x.is_empty() && x.bytes().all(|c| c.is_ascii_digit());
        if !all_digits(d) || !all_digits(sid) || !all_digits(seq) {
            return Err(bad("expected three numbers domain-server_id-seq"));
        }
        let domain: u32 = d.parse().map_err(|_| bad("domain id out of range"))?;
        let server_id: u32 = sid.parse().map_err(|_| bad("server_id out of range"))?;
        let seq: u64 = seq.parse().map_err(|_| bad("seq out of range"))?;
        if seq == 0 {
            return Ok(());
        }
        let previous_max = self.domain_position(domain);
        self.insert_interval(GtidSource::Domain(domain), (1, seq));
        match previous_max {
            Some(p) if p > seq => {}
            Some(p) if p == seq => {
                // Same seq listed twice: keep the first server_id seen.
                self.server_ids.entry(domain).or_insert(server_id);
            }
            _ => {
                self.server_ids.insert(domain, server_id);
            }
        }
        Ok(())
    }

    /// `domain:intervals...` (the form [`Display`](fmt::Display) uses for non-prefix domains).
    fn add_mariadb_extended(&mut self, input: &str, part: &str) -> Result<(), GtidParseError> {
        let mut pieces = part.split(':');
        let head = pieces.next().unwrap_or_default().trim();
        let domain: u32 = head.parse().map_err(|_| GtidParseError::BadMariadbGtid {
            input: shorten(input),
            gtid: part.to_string(),
            reason: "domain id out of range",
        })?;
        let previous_max = self.domain_position(domain);
        let mut any = false;
        for piece in pieces {
            let piece = piece.trim();
            let iv = parse_interval(piece).map_err(|reason| GtidParseError::BadInterval {
                input: shorten(input),
                interval: piece.to_string(),
                reason,
            })?;
            self.insert_interval(GtidSource::Domain(domain), iv);
            any = true;
        }
        if !any {
            // Unreachable through `classify` (a `:` is always present), kept for safety.
            return Err(GtidParseError::BadMariadbGtid {
                input: shorten(input),
                gtid: part.to_string(),
                reason: "no intervals after domain",
            });
        }
        // The server_id of the old highest transaction no longer applies if the
        // domain now goes further.
        if self.domain_position(domain) != previous_max {
            self.server_ids.remove(&domain);
        }
        Ok(())
    }

    /// Adds transaction `number` of `source`. For a MariaDB domain, `server_id` becomes
    /// the domain's when the transaction is its highest.
    pub fn add(&mut self, source: GtidSource, number: u64, server_id: Option<u32>) {
        if number == 0 {
            return;
        }
        if let (GtidSource::Domain(d), Some(sid)) = (&source, server_id) {
            if self.domain_position(*d).is_none_or(|max| max <= number) {
                self.server_ids.insert(*d, sid);
            }
        }
        self.insert_interval(source, (number, number));
    }

    /// Adds transactions `lo..=hi` of `source` (numbers start at 1).
    pub fn add_range(&mut self, source: GtidSource, lo: u64, hi: u64) {
        let previous = match &source {
            GtidSource::Domain(d) => self.domain_position(*d),
            _ => None,
        };
        self.insert_interval(source.clone(), (lo.max(1), hi));
        if let GtidSource::Domain(d) = source {
            if self.domain_position(d) != previous {
                self.server_ids.remove(&d);
            }
        }
    }

    /// Whether transaction `number` of `source` is in the set.
    pub fn contains(&self, source: &GtidSource, number: u64) -> bool {
        self.sets.get(source).is_some_and(|ivs| ivs.contains(number))
    }

    /// True when the set holds no transaction.
    pub fn is_empty(&self) -> bool {
        self.sets.is_empty()
    }

    /// Transactions in `self` or in `other`. For MariaDB domains, the server_id kept
    /// is the one of the side with the higher max seq (`self`'s on a tie).
    pub fn union(&self, other: &Self) -> Self {
        let mut sets = self.sets.clone();
        for (src, ivs) in &other.sets {
            match sets.get_mut(src) {
                Some(mine) => *mine = mine.union(ivs),
                None => {
                    sets.insert(src.clone(), ivs.clone());
                }
            }
        }
        Self::with_server_ids_from(sets, &[self, other])
    }

    /// Transactions in `self` that are not in `other`.
    pub fn subtract(&self, other: &Self) -> Self {
        let mut sets = BTreeMap::new();
        for (src, ivs) in &self.sets {
            let rest = match other.sets.get(src) {
                Some(theirs) => ivs.subtract(theirs),
                None => ivs.clone(),
            };
            if !rest.is_empty() {
                sets.insert(src.clone(), rest);
            }
        }
        Self::with_server_ids_from(sets, &[self])
    }

    /// Transactions in both `self` and `other`.
    pub fn intersection(&self, other: &Self) -> Self {
        let mut sets = BTreeMap::new();
        for (src, ivs) in &self.sets {
            if let Some(theirs) = other.sets.get(src) {
                let both = ivs.intersection(theirs);
                if !both.is_empty() {
                    sets.insert(src.clone(), both);
                }
            }
        }
        Self::with_server_ids_from(sets, &[self, other])
    }

    /// Builds a set from `sets`, taking each domain's server_id from the first of
    /// `inputs` whose highest transaction in that domain is the result's highest.
    fn with_server_ids_from(sets: BTreeMap<GtidSource, IntervalSet>, inputs: &[&GtidSet]) -> Self {
        let mut server_ids = BTreeMap::new();
        for (src, ivs) in &sets {
            let GtidSource::Domain(d) = *src else {
                continue;
            };
            let Some(max) = ivs.max() else { continue };
            let found = inputs.iter().find_map(|input| {
                if input.domain_position(d) == Some(max) {
                    input.server_ids.get(&d).copied()
                } else {
                    None
                }
            });
            if let Some(sid) = found {
                server_ids.insert(d, sid);
            }
        }
        Self { sets, server_ids }
    }

    /// True when every transaction of `self` is in `other`.
    pub fn is_subset_of(&self, other: &Self) -> bool {
        self.sets.iter().all(|(src, ivs)| other.sets.get(src).is_some_and(|theirs| ivs.is_subset_of(theirs)))
    }

    /// Number of transactions in the set (saturating at `u64::MAX`).
    pub fn transaction_count(&self) -> u64 {
        self.sets.values().fold(0u64, |acc, ivs| acc.saturating_add(ivs.count()))
    }

    /// The sources and their (non-empty) transaction numbers, in canonical order.
    pub fn sources(&self) -> impl Iterator<Item = (&GtidSource, &IntervalSet)> {
        self.sets.iter()
    }

    /// For MariaDB domains: the highest seq per domain (what `0-1-100` says), None for the domain if absent.
    pub fn domain_position(&self, domain: u32) -> Option<u64> {
        self.sets.get(&GtidSource::Domain(domain)).and_then(IntervalSet::max)
    }

    /// For MariaDB domains: the server_id of the domain's highest transaction, when known.
    pub fn domain_server_id(&self, domain: u32) -> Option<u32> {
        self.server_ids.get(&domain).copied()
    }

    /// True when non-empty and all sources are MariaDB domains.
    pub fn is_mariadb(&self) -> bool {
        !self.sets.is_empty() && self.sets.keys().all(|src| matches!(src, GtidSource::Domain(_)))
    }
}

/// Canonical text: MySQL sources as `uuid:1-5:7:tag:1-3` (untagged intervals
/// first, then each tag), MariaDB prefix domains as `domain-server_id-seq`
/// (server_id 0 when unknown), other domains as `domain:91-100`; joined by `,`.
/// The empty set is `""`.
impl fmt::Display for GtidSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut current_uuid: Option<&str> = None;
        for (i, (src, ivs)) in self.sets.iter().enumerate() {
            match src {
                GtidSource::Uuid { uuid, tag } => {
                    if current_uuid != Some(uuid.as_str()) {
                        if i > 0 {
                            f.write_str(",")?;
                        }
                        f.write_str(uuid)?;
                        current_uuid = Some(uuid);
                    }
                    if let Some(tag) = tag {
                        write!(f, ":{tag}")?;
                    }
                    write!(f, ":{ivs}")?;
                }
                GtidSource::Domain(d) => {
                    current_uuid = None;
                    if i > 0 {
                        f.write_str(",")?;
                    }
                    match ivs.as_prefix() {
                        Some(n) => {
                            let sid = self.server_ids.get(d).copied().unwrap_or(0);
                            write!(f, "{d}-{sid}-{n}")?;
                        }
                        None => write!(f, "{d}:{ivs}")?,
                    }
                }
            }
        }
        Ok(())
    }
}

impl FromStr for GtidSet {
    type Err = GtidParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// Serialized as the canonical string.
impl serde::Serialize for GtidSet {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// Deserialized from a GTID set string (either form).
impl<'de> serde::Deserialize<'de> for GtidSet {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct GtidSetVisitor;

        impl serde::de::Visitor<'_> for GtidSetVisitor {
            type Value = GtidSet;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a GTID set string")
            }

            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<GtidSet, E> {
                GtidSet::parse(v).map_err(E::custom)
            }
        }

        deserializer.deserialize_str(GtidSetVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    const U1: &str = "3e11fa47-71ca-11e1-9e33-c80aa9429562";
    const U2: &str = "4a3f8c10-0b2e-11ef-8a1d-0242ac120002";
    const U3: &str = "f81d4fae-7dec-11d0-a765-00a0c91e6bf6";

    fn p(s: &str) -> GtidSet {
        match GtidSet::parse(s) {
            Ok(set) => set,
            Err(e) => panic!("parse({s:?}) failed: {e}"),
        }
    }

    fn err(s: &str) -> String {
        match GtidSet::parse(s) {
            Ok(set) => panic!("parse({s:?}) unexpectedly gave {set}"),
            Err(e) => e.to_string(),
        }
    }

    fn uuid_src(uuid: &str, tag: Option<&str>) -> GtidSource {
        GtidSource::Uuid { uuid: uuid.to_string(), tag: tag.map(str::to_string) }
    }

    // ---------- parsing and display (table tests) ----------

    #[test]
    fn parse_display_table() {
        let upper = U1.to_ascii_uppercase();
        let cases: Vec<(String, String)> = vec![
            ("".into(), "".into()),
            ("  \n ".into(), "".into()),
            (format!("{U1}:1-5:7-9"), format!("{U1}:1-5:7-9")),
            (format!("{upper}:1-5:7-9"), format!("{U1}:1-5:7-9")),
            // @@gtid_executed with newlines after commas, sources out of order.
            (format!("{U2}:1-100,\n{upper}:1-5:7-9"), format!("{U1}:1-5:7-9,{U2}:1-100")),
            (format!("{U1}:1-5,\r\n  {U2}:3\n"), format!("{U1}:1-5,{U2}:3")),
            // Same uuid across elements, overlapping / adjacent / singletons.
            (format!("{U1}:1-3,{U1}:4-6"), format!("{U1}:1-6")),
            (format!("{U1}:7:7-7"), format!("{U1}:7")),
            (format!("{U1}:5-9:1-6:11"), format!("{U1}:1-9:11")),
            // Whitespace around pieces.
            (format!("{U1} : 1 - 5 : 7"), format!("{U1}:1-5:7")),
            // MySQL 8.4 tagged GTIDs.
            (format!("{U1}:1-5:tag1:3-4"), format!("{U1}:1-5:tag1:3-4")),
            (format!("{U1}:TAG_1:3-4:6"), format!("{U1}:tag_1:3-4:6")),
            (format!("{U1}:_x:1"), format!("{U1}:_x:1")),
            (format!("{U1}:zz:1:aa:2,{U1}:5"), format!("{U1}:5:aa:2:zz:1")),
            (format!("{U2}:t:1,{U1}:t:1-2:3"), format!("{U1}:t:1-3,{U2}:t:1")),
            (format!("{U1}:Tag:1,{U1}:tag:2"), format!("{U1}:tag:1-2")),
            // MariaDB.
            ("0-1-100".into(), "0-1-100".into()),
            ("0-1-100,1-2-50".into(), "0-1-100,1-2-50".into()),
            ("1-2-50,\n0-1-100".into(), "0-1-100,1-2-50".into()),
            // @@gtid_binlog_pos with several server_ids for one domain.
            ("0-1-10,0-2-12".into(), "0-2-12".into()),
            ("0-2-12,0-1-10".into(), "0-2-12".into()),
            ("0-1-10,0-2-12,1-5-3".into(), "0-2-12,1-5-3".into()),
            ("0-3-10,0-2-10".into(), "0-3-10".into()),
            (
                "4294967295-4294967295-18446744073709551615".into(),
                "4294967295-4294967295-18446744073709551615".into(),
            ),
            // Empty elements are skipped.
            (format!("{U1}:1-5,\n"), format!("{U1}:1-5")),
            (format!(",{U1}:1-5,,\n{U2}:2,"), format!("{U1}:1-5,{U2}:2")),
            (",0-1-5,,1-1-5,".into(), "0-1-5,1-1-5".into()),
            (" , ".into(), "".into()),
            // seq 0 adds nothing.
            ("0-1-0".into(), "".into()),
            ("0-1-0,1-1-4".into(), "1-1-4".into()),
            // Extended MariaDB form.
            ("0:91-100".into(), "0:91-100".into()),
            ("0:1-100".into(), "0-0-100".into()),
            ("0-1-100,0:150-160".into(), "0:1-100:150-160".into()),
            ("0-1-100,0:101-110".into(), "0-0-110".into()),
            ("0:5,0-7-10".into(), "0-7-10".into()),
            ("0-7-10,0:5".into(), "0-7-10".into()),
        ];
        for (input, want) in cases {
            let set = p(&input);
            assert_eq!(set.to_string(), want, "display of parse({input:?})");
            let again = p(&want);
            assert_eq!(again, set, "parse(display) for {input:?}");
            assert_eq!(again.to_string(), want, "display stable for {input:?}");
        }
    }

    #[test]
    fn parse_structure_of_tagged_set() {
        let set = p(&format!("{}:1-5:Tag1:3-4", U1.to_ascii_uppercase()));
        let sources: Vec<_> = set.sources().map(|(s, ivs)| (s.clone(), ivs.intervals().to_vec())).collect();
        assert_eq!(
            sources,
            vec![(uuid_src(U1, None), vec![(1, 5)]), (uuid_src(U1, Some("tag1")), vec![(3, 4)]),]
        );
        assert_eq!(set.transaction_count(), 7);
        assert!(!set.is_mariadb());
    }

    #[test]
    fn parse_structure_of_mariadb_binlog_pos() {
        let set = p("0-1-10,0-2-12,\n1-3-5");
        assert!(set.is_mariadb());
        assert_eq!(set.domain_position(0), Some(12));
        assert_eq!(set.domain_server_id(0), Some(2));
        assert_eq!(set.domain_position(1), Some(5));
        assert_eq!(set.domain_server_id(1), Some(3));
        assert_eq!(set.domain_position(2), None);
        assert_eq!(set.domain_server_id(2), None);
        assert_eq!(set.transaction_count(), 17);
        let sources: Vec<_> = set.sources().map(|(s, _)| s.clone()).collect();
        assert_eq!(sources, vec![GtidSource::Domain(0), GtidSource::Domain(1)]);
    }

    #[test]
    fn parse_mysql_and_mariadb_entry_points() {
        let mysql = format!("{U1}:1-5");
        assert_eq!(GtidSet::parse_mysql(&mysql), Ok(p(&mysql)));
        assert_eq!(GtidSet::parse_mariadb("0-1-5,0:9"), Ok(p("0-1-5,0:9")));
        assert_eq!(GtidSet::parse_mysql(""), Ok(GtidSet::new()));
        assert_eq!(GtidSet::parse_mariadb(" "), Ok(GtidSet::new()));

        let e = GtidSet::parse_mysql("0-1-100").unwrap_err().to_string();
        assert_eq!(e, "invalid GTID set `0-1-100`: element `0-1-100` is not a MySQL GTID");
        let e = GtidSet::parse_mysql("0:5").unwrap_err();
        assert!(matches!(e, GtidParseError::WrongForm { expected: "MySQL", .. }), "{e}");
        let e = GtidSet::parse_mariadb(&mysql).unwrap_err().to_string();
        assert_eq!(e, format!("invalid GTID set `{mysql}`: element `{mysql}` is not a MariaDB GTID"));
    }

    #[test]
    fn from_str_is_parse() {
        let s = format!("{U1}:1-5");
        let set: GtidSet = s.parse().unwrap();
        assert_eq!(set, p(&s));
        assert!("nonsense".parse::<GtidSet>().is_err());
    }

    #[test]
    fn error_messages() {
        let cases: Vec<(String, String)> = vec![
            (
                format!("{U1}:5-3"),
                format!("invalid GTID set `{U1}:5-3`: bad interval `5-3` (start after end)"),
            ),
            (
                format!("{U1}:0"),
                format!("invalid GTID set `{U1}:0`: bad interval `0` (transaction numbers start at 1)"),
            ),
            (
                format!("{U1}:0-5"),
                format!("invalid GTID set `{U1}:0-5`: bad interval `0-5` (transaction numbers start at 1)"),
            ),
            (
                format!("{U1}:7-"),
                format!("invalid GTID set `{U1}:7-`: bad interval `7-` (missing number)"),
            ),
            (
                format!("{U1}:1-5:"),
                format!("invalid GTID set `{U1}:1-5:`: bad interval `` (missing number)"),
            ),
            (
                format!("{U1}:9tag:1"),
                format!("invalid GTID set `{U1}:9tag:1`: bad interval `9tag` (not a number)"),
            ),
            (
                format!("{U1}:-5"),
                format!("invalid GTID set `{U1}:-5`: bad interval `-5` (missing number)"),
            ),
            (
                format!("{U1}:99999999999999999999"),
                format!("invalid GTID set `{U1}:99999999999999999999`: bad interval `99999999999999999999` (number out of range)"),
            ),
            (
                "3e11fa47-71ca-11e1-9e33-c80aa942956z:1-5".into(),
                "invalid GTID set `3e11fa47-71ca-11e1-9e33-c80aa942956z:1-5`: bad uuid `3e11fa47-71ca-11e1-9e33-c80aa942956z` (expected 8-4-4-4-12 hexadecimal digits)".into(),
            ),
            (
                "hello:1-5".into(),
                "invalid GTID set `hello:1-5`: bad uuid `hello` (expected 8-4-4-4-12 hexadecimal digits)".into(),
            ),
            (
                format!("{U1}:tag"),
                format!("invalid GTID set `{U1}:tag`: bad tag `tag` (no intervals after tag)"),
            ),
            (
                format!("{U1}:a:b:1"),
                format!("invalid GTID set `{U1}:a:b:1`: bad tag `a` (no intervals after tag)"),
            ),
            (
                format!("{U1}:ta-g:1"),
                format!("invalid GTID set `{U1}:ta-g:1`: bad tag `ta-g` (only letters, digits and underscore are allowed)"),
            ),
            (
                format!("{U1}:{}:1", "a".repeat(33)),
                format!("invalid GTID set `{U1}:{}:1`: bad tag `{}` (longer than 32 characters)", "a".repeat(33), "a".repeat(33)),
            ),
            (
                U1.to_string(),
                format!("invalid GTID set `{U1}`: bad element `{U1}` (uuid without intervals)"),
            ),
            (
                format!("{U1}:1,garbage"),
                format!("invalid GTID set `{U1}:1,garbage`: bad element `garbage` (expected `uuid:intervals` or `domain-server-seq`)"),
            ),
            (
                format!("{U1}:1-5,0-1-100"),
                format!("invalid GTID set `{U1}:1-5,0-1-100`: mixes MySQL GTID `{U1}:1-5` and MariaDB GTID `0-1-100`"),
            ),
            (
                format!("0:5,{U1}:1"),
                format!("invalid GTID set `0:5,{U1}:1`: mixes MySQL GTID `{U1}:1` and MariaDB GTID `0:5`"),
            ),
            (
                "0-1".into(),
                "invalid GTID set `0-1`: bad MariaDB GTID `0-1` (expected domain-server_id-seq)".into(),
            ),
            (
                "0-1-2-3".into(),
                "invalid GTID set `0-1-2-3`: bad MariaDB GTID `0-1-2-3` (expected domain-server_id-seq)".into(),
            ),
            (
                "0--5".into(),
                "invalid GTID set `0--5`: bad MariaDB GTID `0--5` (expected three numbers domain-server_id-seq)".into(),
            ),
            (
                "4294967296-1-5".into(),
                "invalid GTID set `4294967296-1-5`: bad MariaDB GTID `4294967296-1-5` (domain id out of range)".into(),
            ),
            (
                "0-4294967296-5".into(),
                "invalid GTID set `0-4294967296-5`: bad MariaDB GTID `0-4294967296-5` (server_id out of range)".into(),
            ),
            (
                "0-1-18446744073709551616".into(),
                "invalid GTID set `0-1-18446744073709551616`: bad MariaDB GTID `0-1-18446744073709551616` (seq out of range)".into(),
            ),
            (
                "0-1-x".into(),
                "invalid GTID set `0-1-x`: bad element `0-1-x` (expected `uuid:intervals` or `domain-server-seq`)".into(),
            ),
            (
                "4294967296:5".into(),
                "invalid GTID set `4294967296:5`: bad MariaDB GTID `4294967296:5` (domain id out of range)".into(),
            ),
            (
                "0:5-1".into(),
                "invalid GTID set `0:5-1`: bad interval `5-1` (start after end)".into(),
            ),
            (
                "0:abc".into(),
                "invalid GTID set `0:abc`: bad interval `abc` (not a number)".into(),
            ),
        ];
        for (input, want) in cases {
            assert_eq!(err(&input), want, "error for {input:?}");
        }
    }

    #[test]
    fn error_variants_and_long_input_is_shortened() {
        assert!(matches!(
            GtidSet::parse(&format!("{U1}:5-3")),
            Err(GtidParseError::BadInterval { reason: "start after end", .. })
        ));
        assert!(matches!(GtidSet::parse("zz:1"), Err(GtidParseError::BadUuid { .. })));
        let long = format!("{}{U1}:5-3", format!("{U2}:1,").repeat(20));
        let e = GtidSet::parse(&long).unwrap_err();
        let GtidParseError::BadInterval { input, interval, .. } = &e else {
            panic!("unexpected error {e:?}");
        };
        assert!(input.ends_with("..."), "{input}");
        assert_eq!(input.chars().count(), MAX_INPUT_IN_ERROR + 3);
        assert_eq!(interval, "5-3");
        assert!(e.to_string().contains("bad interval `5-3` (start after end)"));
    }

    // ---------- algebra examples ----------

    #[test]
    fn mysql_algebra_examples() {
        let a = p(&format!("{U1}:1-10"));
        let b = p(&format!("{U1}:3-5,{U2}:1"));
        assert_eq!(a.union(&b).to_string(), format!("{U1}:1-10,{U2}:1"));
        assert_eq!(a.subtract(&b).to_string(), format!("{U1}:1-2:6-10"));
        assert_eq!(b.subtract(&a).to_string(), format!("{U2}:1"));
        assert_eq!(a.intersection(&b).to_string(), format!("{U1}:3-5"));
        assert!(!b.is_subset_of(&a));
        assert!(!a.is_subset_of(&b));
        assert!(p(&format!("{U1}:3-5")).is_subset_of(&a));
        assert!(GtidSet::new().is_subset_of(&a));
        assert!(GtidSet::new().is_subset_of(&GtidSet::new()));
        assert_eq!(a.union(&b).transaction_count(), 11);

        // Tagged and untagged GTIDs of one uuid are different transactions.
        let untagged = p(&format!("{U1}:1-5"));
        let tagged = p(&format!("{U1}:t:1-5"));
        assert!(!untagged.is_subset_of(&tagged));
        assert!(untagged.intersection(&tagged).is_empty());
        assert_eq!(untagged.union(&tagged).to_string(), format!("{U1}:1-5:t:1-5"));
        assert_eq!(tagged.subtract(&untagged), tagged);

        // Replica missing a purged range in the middle.
        let master = p(&format!("{U1}:1-100,\n{U2}:1-50"));
        let replica = p(&format!("{U1}:1-40:61-100,{U2}:1-50"));
        assert!(replica.is_subset_of(&master));
        let missing = master.subtract(&replica);
        assert_eq!(missing.to_string(), format!("{U1}:41-60"));
        assert_eq!(missing.transaction_count(), 20);
    }

    #[test]
    fn mariadb_replica_behind() {
        let master = p("0-1-100");
        let replica = p("0-1-90");
        assert!(replica.is_subset_of(&master));
        assert!(!master.is_subset_of(&replica));
        let behind = master.subtract(&replica);
        assert_eq!(behind.transaction_count(), 10);
        assert_eq!(behind.to_string(), "0:91-100");
        assert_eq!(p(&behind.to_string()), behind);
        assert!(replica.subtract(&master).is_empty());
        assert_eq!(master.union(&replica).to_string(), "0-1-100");
        assert_eq!(master.intersection(&replica).to_string(), "0-1-90");
    }

    #[test]
    fn mariadb_errant_transactions() {
        let replica = p("0-1-100,1-3-5");
        let master = p("0-1-100");
        let errant = replica.subtract(&master);
        assert!(!errant.is_empty());
        assert_eq!(errant.to_string(), "1-3-5");
        assert_eq!(errant.transaction_count(), 5);
        assert!(!replica.is_subset_of(&master));
        assert!(master.is_subset_of(&replica));
    }

    #[test]
    fn mariadb_server_id_metadata() {
        // union keeps the server_id of the higher seq, whatever the order.
        assert_eq!(p("0-1-10").union(&p("0-2-12")).to_string(), "0-2-12");
        assert_eq!(p("0-2-12").union(&p("0-1-10")).to_string(), "0-2-12");
        // tie: self's.
        assert_eq!(p("0-1-10").union(&p("0-2-10")).to_string(), "0-1-10");
        // intersection takes it from the side whose max survives.
        assert_eq!(p("0-1-100").intersection(&p("0-2-90")).to_string(), "0-2-90");
        // subtraction that lowers the max loses the server_id.
        let s = p("0-5-100").subtract(&p("0:50-100"));
        assert_eq!(s.to_string(), "0-0-49");
        assert_eq!(s.domain_server_id(0), None);
        // Metadata does not take part in equality or subset checks.
        assert_eq!(p("0-1-10"), p("0-2-10"));
        assert!(p("0-1-10").is_subset_of(&p("0-2-10")));
        assert_ne!(p("0-1-10"), p("0-1-11"));
    }

    #[test]
    fn domain_position_and_is_mariadb() {
        assert_eq!(p("0-1-100,1-2-50").domain_position(1), Some(50));
        assert_eq!(p("0:91-100").domain_position(0), Some(100));
        assert!(p("0:91-100").is_mariadb());
        assert!(!GtidSet::new().is_mariadb());
        assert!(GtidSet::new().is_empty());
        assert!(!p(&format!("{U1}:1")).is_mariadb());
        let mixed = p(&format!("{U1}:1")).union(&p("0-1-1"));
        assert!(!mixed.is_mariadb());
        assert_eq!(mixed.domain_position(0), Some(1));
    }

    #[test]
    fn serde_as_canonical_string() {
        let set = p(&format!("{}:1-5:7-9,\n{U2}:T:3", U1.to_ascii_uppercase()));
        let json = serde_json::to_string(&set).unwrap();
        assert_eq!(json, format!("\"{U1}:1-5:7-9,{U2}:t:3\""));
        let back: GtidSet = serde_json::from_str(&json).unwrap();
        assert_eq!(back, set);

        let maria: GtidSet = serde_json::from_str("\"0-1-10,0-2-12\"").unwrap();
        assert_eq!(serde_json::to_string(&maria).unwrap(), "\"0-2-12\"");
        let empty: GtidSet = serde_json::from_str("\"\"").unwrap();
        assert!(empty.is_empty());

        let e = serde_json::from_str::<GtidSet>("\"0-1\"").unwrap_err();
        assert!(e.to_string().contains("bad MariaDB GTID `0-1`"), "{e}");
        assert!(serde_json::from_str::<GtidSet>("42").is_err());
    }

    // ---------- IntervalSet examples ----------

    #[test]
    fn interval_set_examples() {
        let mut s = IntervalSet::new();
        assert!(s.is_empty());
        assert_eq!(s.max(), None);
        s.insert(5, 7);
        s.insert(1, 2);
        s.insert(10, 10);
        assert_eq!(s.intervals(), &[(1, 2), (5, 7), (10, 10)]);
        s.insert(3, 4); // adjacent on both sides
        assert_eq!(s.intervals(), &[(1, 7), (10, 10)]);
        s.insert(9, 8); // empty range ignored
        assert_eq!(s.intervals(), &[(1, 7), (10, 10)]);
        s.insert(0, 20);
        assert_eq!(s.intervals(), &[(0, 20)]);
        assert_eq!(s.count(), 21);
        assert_eq!(s.max(), Some(20));
        assert!(s.contains(0) && s.contains(20) && !s.contains(21));
        assert_eq!(s.to_string(), "0-20");

        let mut big = IntervalSet::new();
        big.insert(u64::MAX, u64::MAX);
        big.insert(0, 0);
        big.insert(1, u64::MAX - 1);
        assert_eq!(big.intervals(), &[(0, u64::MAX)]);
        assert_eq!(big.count(), u64::MAX); // saturates
        let mut top = IntervalSet::new();
        top.insert(u64::MAX - 1, u64::MAX);
        assert_eq!(big.subtract(&top).intervals(), &[(0, u64::MAX - 2)]);
        assert!(top.is_subset_of(&big));
    }

    // ---------- property tests ----------

    const UUIDS: [&str; 3] = [U1, U2, U3];
    const TAGS: [Option<&str>; 3] = [None, Some("a"), Some("tag_b")];

    fn interval_set_strategy() -> impl Strategy<Value = IntervalSet> {
        prop::collection::vec((1u64..200, 0u64..30), 0..6).prop_map(|ivs| {
            let mut set = IntervalSet::new();
            for (lo, len) in ivs {
                set.insert(lo, (lo + len).min(199));
            }
            set
        })
    }

    fn build(entries: Vec<(GtidSource, IntervalSet, u32)>) -> GtidSet {
        let mut set = GtidSet::new();
        for (src, ivs, sid) in entries {
            if ivs.is_empty() {
                continue;
            }
            let merged = match set.sets.get(&src) {
                Some(old) => old.union(&ivs),
                None => ivs,
            };
            if let GtidSource::Domain(d) = src {
                set.server_ids.insert(d, sid);
            }
            set.sets.insert(src, merged);
        }
        set
    }

    fn mysql_set() -> impl Strategy<Value = GtidSet> {
        prop::collection::vec((0usize..3, 0usize..3, interval_set_strategy()), 0..5).prop_map(|entries| {
            build(entries.into_iter().map(|(u, t, ivs)| (uuid_src(UUIDS[u], TAGS[t]), ivs, 0)).collect())
        })
    }

    fn mariadb_set() -> impl Strategy<Value = GtidSet> {
        // Half of the domains are prefixes 1..=n (the usual MariaDB position).
        let domain_ivs = prop_oneof![
            interval_set_strategy(),
            (1u64..200).prop_map(|n| {
                let mut s = IntervalSet::new();
                s.insert(1, n);
                s
            }),
        ];
        prop::collection::vec((0u32..3, domain_ivs, 1u32..4), 0..4).prop_map(|entries| {
            build(entries.into_iter().map(|(d, ivs, sid)| (GtidSource::Domain(d), ivs, sid)).collect())
        })
    }

    /// One flavour per set: what servers produce, and what round-trips through text.
    fn single_flavour_set() -> impl Strategy<Value = GtidSet> {
        prop_oneof![mysql_set(), mariadb_set()]
    }

    /// Any mix: the algebra does not care about flavours.
    fn any_set() -> impl Strategy<Value = GtidSet> {
        prop_oneof![mysql_set(), mariadb_set(), (mysql_set(), mariadb_set()).prop_map(|(a, b)| a.union(&b)),]
    }

    fn check_invariants(ivs: &[(u64, u64)]) -> Result<(), TestCaseError> {
        for &(lo, hi) in ivs {
            prop_assert!(lo <= hi, "interval {lo}-{hi} inverted in {ivs:?}");
        }
        for w in ivs.windows(2) {
            prop_assert!(w[0].1.saturating_add(1) < w[1].0, "not sorted/disjoint/non-adjacent: {ivs:?}");
        }
        Ok(())
    }

    fn expand(ivs: &IntervalSet) -> BTreeSet<u64> {
        ivs.intervals().iter().flat_map(|&(lo, hi)| lo..=hi).collect()
    }

    proptest! {
        #[test]
        fn prop_display_parse_round_trip(a in single_flavour_set()) {
            let text = a.to_string();
            let back = GtidSet::parse(&text);
            prop_assert_eq!(back.as_ref(), Ok(&a), "text {:?}", text);
            // Metadata that the text carries survives too.
            prop_assert_eq!(back.map(|b| b.to_string()), Ok(text));
        }

        #[test]
        fn prop_serde_round_trip(a in single_flavour_set()) {
            let json = serde_json::to_string(&a).unwrap();
            let back: GtidSet = serde_json::from_str(&json).unwrap();
            prop_assert_eq!(back, a);
        }

        #[test]
        fn prop_union_contains_both(a in any_set(), b in any_set()) {
            let u = a.union(&b);
            prop_assert!(a.is_subset_of(&u));
            prop_assert!(b.is_subset_of(&u));
        }

        #[test]
        fn prop_difference_disjoint_from_subtrahend(a in any_set(), b in any_set()) {
            prop_assert!(a.subtract(&b).intersection(&b).is_empty());
        }

        #[test]
        fn prop_difference_union_restores(a in any_set(), b in any_set()) {
            prop_assert_eq!(a.subtract(&b).union(&b), a.union(&b));
        }

        #[test]
        fn prop_subset_iff_difference_empty(a in any_set(), b in any_set()) {
            prop_assert_eq!(a.is_subset_of(&b), a.subtract(&b).is_empty());
            // and with a subset made by construction
            let i = a.intersection(&b);
            prop_assert!(i.is_subset_of(&a) && i.is_subset_of(&b));
        }

        #[test]
        fn prop_union_commutative_associative(a in any_set(), b in any_set(), c in any_set()) {
            prop_assert_eq!(a.union(&b), b.union(&a));
            prop_assert_eq!(a.union(&b).union(&c), a.union(&b.union(&c)));
        }

        #[test]
        fn prop_inclusion_exclusion(a in any_set(), b in any_set()) {
            prop_assert_eq!(
                a.union(&b).transaction_count() + a.intersection(&b).transaction_count(),
                a.transaction_count() + b.transaction_count()
            );
        }

        #[test]
        fn prop_no_empty_entries_and_metadata_consistent(a in any_set(), b in any_set()) {
            for s in [a.union(&b), a.subtract(&b), a.intersection(&b)] {
                for (_, ivs) in s.sources() {
                    prop_assert!(!ivs.is_empty());
                    check_invariants(ivs.intervals())?;
                }
                for d in s.server_ids.keys() {
                    prop_assert!(s.domain_position(*d).is_some());
                }
            }
        }

        #[test]
        fn prop_interval_insert_matches_model(
            ops in prop::collection::vec((0u64..300, 0u64..300), 0..40)
        ) {
            let mut set = IntervalSet::new();
            let mut model = BTreeSet::new();
            for (lo, hi) in ops {
                set.insert(lo, hi);
                model.extend(lo..=hi); // empty when lo > hi, like insert
                check_invariants(set.intervals())?;
                prop_assert_eq!(expand(&set), model.clone());
            }
            prop_assert_eq!(set.count(), model.len() as u64);
            prop_assert_eq!(set.max(), model.last().copied());
            prop_assert_eq!(set.is_empty(), model.is_empty());
        }

        #[test]
        fn prop_interval_ops_match_model(a in interval_set_strategy(), b in interval_set_strategy()) {
            let (ma, mb) = (expand(&a), expand(&b));
            let u = a.union(&b);
            let d = a.subtract(&b);
            let i = a.intersection(&b);
            for s in [&u, &d, &i] {
                check_invariants(s.intervals())?;
            }
            prop_assert_eq!(expand(&u), ma.union(&mb).copied().collect::<BTreeSet<_>>());
            prop_assert_eq!(expand(&d), ma.difference(&mb).copied().collect::<BTreeSet<_>>());
            prop_assert_eq!(expand(&i), ma.intersection(&mb).copied().collect::<BTreeSet<_>>());
            prop_assert_eq!(a.is_subset_of(&b), ma.is_subset(&mb));
            for n in 0..=200 {
                prop_assert_eq!(a.contains(n), ma.contains(&n));
            }
        }
    }
}
