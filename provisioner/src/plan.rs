//! The planner (pure): what must be created, changed or deleted to take what exists
//! to what the spec says, attribute by attribute, and its rendering as a readable
//! diff. An attribute that AWS cannot change in place blocks the plan with one line
//! instead of a silent replacement.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::desired::{split_list, Kind, Resource};

/// One attribute that differs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttrChange {
    pub key: &'static str,
    pub from: String,
    pub to: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Create,
    Update(Vec<AttrChange>),
    Delete,
}

/// One step of a plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub kind: Kind,
    pub name: String,
    pub action: Action,
    /// The desired resource (create, update) or the existing one (delete).
    pub resource: Resource,
}

impl Change {
    /// The changed attribute keys of an update (empty otherwise).
    pub fn changed_keys(&self) -> Vec<&'static str> {
        match &self.action {
            Action::Update(c) => c.iter().map(|c| c.key).collect(),
            _ => Vec::new(),
        }
    }
}

/// What apply (or destroy) will do, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    pub changes: Vec<Change>,
    /// Resources that are as they should be.
    pub unchanged: usize,
    /// Resources kept by destroy (data and credentials).
    pub kept: Vec<(Kind, String)>,
}

/// An attribute AWS cannot change in place.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind} {name}: {key} cannot change in place ({from} -> {to}); destroy the cluster's {kind} first or keep the old value in the spec")]
pub struct Blocked {
    pub kind: Kind,
    pub name: String,
    pub key: &'static str,
    pub from: String,
    pub to: String,
}

fn key_of(r: &Resource) -> (Kind, String) {
    (r.kind, r.name.clone())
}

/// The plan that takes `existing` to `desired`. Resources that exist but are not
/// desired (a LUKS secret after a move to EBS, say) are left alone: apply never
/// deletes; destroy does.
pub fn plan_apply(desired: &[Resource], existing: &[Resource]) -> Result<Plan, Blocked> {
    let existing: BTreeMap<(Kind, String), &Resource> = existing.iter().map(|r| (key_of(r), r)).collect();
    let mut plan = Plan::default();
    for want in desired {
        let Some(have) = existing.get(&key_of(want)) else {
            plan.changes.push(Change {
                kind: want.kind,
                name: want.name.clone(),
                action: Action::Create,
                resource: want.clone(),
            });
            continue;
        };
        let mut diffs = Vec::new();
        for (key, to) in &want.attrs {
            let from = have.attrs.get(key).cloned().unwrap_or_default();
            if &from != to {
                if want.kind.immutable().contains(key) {
                    return Err(Blocked {
                        kind: want.kind,
                        name: want.name.clone(),
                        key,
                        from,
                        to: to.clone(),
                    });
                }
                diffs.push(AttrChange { key, from, to: to.clone() });
            }
        }
        if diffs.is_empty() {
            plan.unchanged += 1;
        } else {
            plan.changes.push(Change {
                kind: want.kind,
                name: want.name.clone(),
                action: Action::Update(diffs),
                resource: want.clone(),
            });
        }
    }
    Ok(plan)
}

/// The plan that deletes what exists, in reverse creation order; data and credentials
/// are kept unless `delete_data`.
pub fn plan_destroy(existing: &[Resource], delete_data: bool) -> Plan {
    let mut plan = Plan::default();
    let mut ordered: Vec<&Resource> = existing.iter().collect();
    ordered.sort_by_key(|r| std::cmp::Reverse(r.kind));
    for r in ordered {
        if r.kind.holds_data() && !delete_data {
            plan.kept.push(key_of(r));
            continue;
        }
        plan.changes.push(Change {
            kind: r.kind,
            name: r.name.clone(),
            action: Action::Delete,
            resource: r.clone(),
        });
    }
    plan
}

/// Long values (user data, policies) are shown by length and a short digest.
fn show(value: &str) -> String {
    if value.is_empty() {
        return "(none)".into();
    }
    if value.len() <= 72 && !value.contains('\n') {
        return value.to_string();
    }
    let digest =
        value.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ b as u64).wrapping_mul(0x100_0000_01b3));
    format!("<{} bytes, #{:08x}>", value.len(), digest as u32)
}

/// A long list attribute's change as its added (`+`) and removed (`-`) items.
fn list_delta(from: &str, to: &str) -> Option<String> {
    if from.len().max(to.len()) <= 72
        || from.contains('\n')
        || to.contains('\n')
        || !(from.contains(", ") || to.contains(", "))
    {
        return None;
    }
    let (old, new) = (split_list(from), split_list(to));
    let mut parts: Vec<String> = new.iter().filter(|x| !old.contains(x)).map(|x| format!("+ {x}")).collect();
    parts.extend(old.iter().filter(|x| !new.contains(x)).map(|x| format!("- {x}")));
    Some(parts.join(", "))
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }

    /// The plan as a diff: `+` create, `~` change (each attribute old -> new), `-`
    /// delete, then a count line.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for c in &self.changes {
            match &c.action {
                Action::Create => {
                    let _ = writeln!(out, "+ {} {}", c.kind, c.name);
                    for (k, v) in &c.resource.attrs {
                        let _ = writeln!(out, "    {k} = {}", show(v));
                    }
                }
                Action::Update(diffs) => {
                    let _ = writeln!(out, "~ {} {}", c.kind, c.name);
                    for d in diffs {
                        match list_delta(&d.from, &d.to) {
                            Some(delta) => {
                                let _ = writeln!(out, "    {}: {delta}", d.key);
                            }
                            None => {
                                let _ = writeln!(out, "    {}: {} -> {}", d.key, show(&d.from), show(&d.to));
                            }
                        }
                    }
                }
                Action::Delete => {
                    let _ = writeln!(out, "- {} {}", c.kind, c.name);
                }
            }
        }
        for (kind, name) in &self.kept {
            let _ = writeln!(out, "= {kind} {name} kept (holds data; --delete-data deletes it)");
        }
        let count = |f: fn(&Action) -> bool| self.changes.iter().filter(|c| f(&c.action)).count();
        if self.is_empty() {
            let _ = writeln!(out, "no changes ({} resources as they should be)", self.unchanged);
        } else {
            let _ = writeln!(
                out,
                "{} to create, {} to change, {} to delete, {} unchanged",
                count(|a| matches!(a, Action::Create)),
                count(|a| matches!(a, Action::Update(_))),
                count(|a| matches!(a, Action::Delete)),
                self.unchanged
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(kind: Kind, name: &str, attrs: &[(&'static str, &str)]) -> Resource {
        attrs.iter().fold(Resource::new(kind, name), |r, (k, v)| r.with(k, *v))
    }

    #[test]
    fn nothing_exists_everything_is_created_in_order() {
        let want = vec![r(Kind::SecurityGroup, "a", &[("vpc", "v")]), r(Kind::Table, "t", &[])];
        let p = plan_apply(&want, &[]).unwrap();
        assert_eq!(p.changes.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(), ["a", "t"]);
        assert!(p.render().contains("+ security group a\n    vpc = v\n"));
        assert!(p.render().ends_with("2 to create, 0 to change, 0 to delete, 0 unchanged\n"));
    }

    #[test]
    fn equal_means_no_changes() {
        let want = vec![r(Kind::Table, "t", &[("ttl", "expires_at")])];
        let p = plan_apply(&want, &want).unwrap();
        assert!(p.is_empty());
        assert_eq!(p.render(), "no changes (1 resources as they should be)\n");
    }

    #[test]
    fn a_changed_attribute_is_an_update_showing_both_values() {
        let want = vec![r(Kind::LaunchTemplate, "lt", &[("instance_type", "m5.large"), ("ami", "ami-1")])];
        let have = vec![r(Kind::LaunchTemplate, "lt", &[("instance_type", "t3.medium"), ("ami", "ami-1")])];
        let p = plan_apply(&want, &have).unwrap();
        assert_eq!(p.changes[0].changed_keys(), ["instance_type"]);
        assert!(p.render().contains("~ launch template lt\n    instance_type: t3.medium -> m5.large\n"));
    }

    #[test]
    fn immutable_attributes_block() {
        let want = vec![r(Kind::TargetGroup, "g", &[("vpc", "vpc-2")])];
        let have = vec![r(Kind::TargetGroup, "g", &[("vpc", "vpc-1")])];
        let e = plan_apply(&want, &have).unwrap_err().to_string();
        assert!(e.starts_with("target group g: vpc cannot change in place (vpc-1 -> vpc-2)"), "{e}");
    }

    #[test]
    fn destroy_reverses_and_keeps_data() {
        let have = vec![
            r(Kind::SecurityGroup, "sg", &[]),
            r(Kind::Bucket, "b", &[]),
            r(Kind::Secret, "s", &[]),
            r(Kind::AutoScalingGroup, "asg", &[]),
        ];
        let p = plan_destroy(&have, false);
        assert_eq!(p.changes.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(), ["asg", "sg"]);
        assert_eq!(p.kept.len(), 2);
        let all = plan_destroy(&have, true);
        assert_eq!(all.changes.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(), ["asg", "s", "b", "sg"]);
    }

    #[test]
    fn long_lists_show_what_was_added_and_removed() {
        let from = "cluster=orders, component=database, managed-by=orchestrator-provisioner, team=a";
        let to = "cluster=orders, component=database, managed-by=orchestrator-provisioner, team=b, tier=1";
        let want = vec![r(Kind::Table, "t", &[("tags", to)])];
        let have = vec![r(Kind::Table, "t", &[("tags", from)])];
        let text = plan_apply(&want, &have).unwrap().render();
        assert!(text.contains("    tags: + team=b, + tier=1, - team=a\n"), "{text}");
    }

    #[test]
    fn long_values_are_digested() {
        assert!(show(&"x".repeat(200)).starts_with("<200 bytes, #"));
        assert_eq!(show(""), "(none)");
    }
}
