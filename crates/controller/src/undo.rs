//! Undoing vcfm's own edits, and only those.
//!
//! Restoring a whole backed-up object on rollback would also revert what
//! others changed during the migration: a source password rotated in
//! `vsphere-creds`, a label added to the Infrastructure. Instead an object is
//! seen as a set of *units* (a Secret key, a vCenter entry keyed by server, a
//! failure domain keyed by name, a field), and each write vcfm makes records,
//! next to the backup, the units it changed and the value it wrote
//! ([`ChangeRecord`]). Rollback then decides per recorded unit from three
//! values, the original (backup), what vcfm wrote and what is live now:
//!
//! | live is …           | then                                            |
//! |---------------------|-------------------------------------------------|
//! | the original        | already undone, nothing to do                   |
//! | what vcfm wrote     | put the original back (remove what vcfm added)  |
//! | anything else       | someone else changed it since: leave it, report |
//!
//! Units vcfm did not change are never written. Everything here is pure.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeSet;

/// One step of a unit's path: an object field, or the entry of a list whose
/// `key` field equals `value` (vCenters by `server`, failure domains by `name`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Step {
    Field(String),
    Entry { key: String, value: String },
}

/// Where a unit lives inside its object.
pub type Path = Vec<Step>;

pub fn field(name: &str) -> Step {
    Step::Field(name.to_string())
}

pub fn entry(key: &str, value: &str) -> Step {
    Step::Entry {
        key: key.to_string(),
        value: value.to_string(),
    }
}

/// A path for messages: `data[vc.example.com.username]`, `spec.platformSpec.vsphere.vcenters[server=vc]`.
pub fn describe(path: &[Step]) -> String {
    let mut out = String::new();
    for (i, s) in path.iter().enumerate() {
        match s {
            Step::Field(f) if i > 0 && f.contains('.') => out.push_str(&format!("[{f}]")),
            Step::Field(f) => {
                if i > 0 {
                    out.push('.');
                }
                out.push_str(f);
            }
            Step::Entry { key, value } => out.push_str(&format!("[{key}={value}]")),
        }
    }
    out
}

/// The value at `path`, if present.
pub fn get<'a>(v: &'a Value, path: &[Step]) -> Option<&'a Value> {
    let mut cur = v;
    for s in path {
        cur = match s {
            Step::Field(f) => cur.as_object()?.get(f)?,
            Step::Entry { key, value } => cur
                .as_array()?
                .iter()
                .find(|e| e.get(key).and_then(Value::as_str) == Some(value.as_str()))?,
        };
    }
    Some(cur)
}

/// Sets (`Some`) or removes (`None`) the value at `path`, creating parents as
/// needed; a new list entry is appended. Returns whether `v` changed.
pub fn set(v: &mut Value, path: &[Step], new: Option<Value>) -> bool {
    let Some((last, parents)) = path.split_last() else {
        return match new {
            Some(n) if *v != n => {
                *v = n;
                true
            }
            _ => false,
        };
    };
    let mut cur = v;
    for (i, s) in parents.iter().enumerate() {
        // The container the next step needs.
        let want_list = matches!(path[i + 1], Step::Entry { .. });
        let next = match s {
            Step::Field(f) => {
                let Some(o) = ensure_object(cur, new.is_some()) else {
                    return false;
                };
                if !o.contains_key(f) {
                    if new.is_none() {
                        return false;
                    }
                    o.insert(f.clone(), empty(want_list));
                }
                o.get_mut(f)
            }
            Step::Entry { key, value } => {
                let Some(a) = cur.as_array_mut() else {
                    return false;
                };
                let pos = a
                    .iter()
                    .position(|e| e.get(key).and_then(Value::as_str) == Some(value.as_str()));
                match pos {
                    Some(p) => a.get_mut(p),
                    None if new.is_none() => return false,
                    None => {
                        let mut e = Map::new();
                        e.insert(key.clone(), Value::String(value.clone()));
                        a.push(Value::Object(e));
                        a.last_mut()
                    }
                }
            }
        };
        let Some(next) = next else { return false };
        if next.is_null() && new.is_some() {
            *next = empty(want_list);
        }
        cur = next;
    }
    match last {
        Step::Field(f) => {
            let Some(o) = ensure_object(cur, new.is_some()) else {
                return false;
            };
            match new {
                Some(n) => o.insert(f.clone(), n.clone()).as_ref() != Some(&n),
                None => o.remove(f).is_some(),
            }
        }
        Step::Entry { key, value } => {
            if cur.is_null() && new.is_some() {
                *cur = Value::Array(vec![]);
            }
            let Some(a) = cur.as_array_mut() else {
                return false;
            };
            let pos = a
                .iter()
                .position(|e| e.get(key).and_then(Value::as_str) == Some(value.as_str()));
            match (pos, new) {
                (Some(p), Some(n)) => {
                    let changed = a[p] != n;
                    a[p] = n;
                    changed
                }
                (None, Some(n)) => {
                    a.push(n);
                    true
                }
                (Some(p), None) => {
                    a.remove(p);
                    true
                }
                (None, None) => false,
            }
        }
    }
}

fn empty(list: bool) -> Value {
    if list {
        Value::Array(vec![])
    } else {
        Value::Object(Map::new())
    }
}

fn ensure_object(v: &mut Value, create: bool) -> Option<&mut Map<String, Value>> {
    if v.is_null() && create {
        *v = Value::Object(Map::new());
    }
    v.as_object_mut()
}

/// vcfm wrote `wrote` at `path` (`None`: it removed the unit).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Change {
    pub path: Path,
    pub wrote: Option<Value>,
}

/// Everything vcfm wrote to one object, kept in the backup Secret.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ChangeRecord {
    pub changes: Vec<Change>,
}

impl ChangeRecord {
    /// Adds `other`'s changes; a later write to the same unit replaces the
    /// earlier one. Returns whether anything was added or replaced.
    pub fn merge(&mut self, other: &ChangeRecord) -> bool {
        let mut changed = false;
        for c in &other.changes {
            match self.changes.iter_mut().find(|x| x.path == c.path) {
                Some(x) if x.wrote != c.wrote => {
                    x.wrote = c.wrote.clone();
                    changed = true;
                }
                Some(_) => {}
                None => {
                    self.changes.push(c.clone());
                    changed = true;
                }
            }
        }
        changed
    }

    /// For backups made before change records existed: assume the given units
    /// are vcfm's and that their live value is what it wrote (no conflict
    /// can be detected for them).
    pub fn assumed(live: &Value, paths: impl IntoIterator<Item = Path>) -> Self {
        Self {
            changes: paths
                .into_iter()
                .map(|p| Change {
                    wrote: get(live, &p).cloned(),
                    path: p,
                })
                .collect(),
        }
    }
}

/// The units whose value differs between `before` (live, before vcfm's
/// write) and `after` (what vcfm writes), among those `units` lists in either.
pub fn diff(units: impl Fn(&Value) -> Vec<Path>, before: &Value, after: &Value) -> ChangeRecord {
    let paths: BTreeSet<Path> = units(before).into_iter().chain(units(after)).collect();
    ChangeRecord {
        changes: paths
            .into_iter()
            .filter(|p| get(before, p) != get(after, p))
            .map(|p| Change {
                wrote: get(after, &p).cloned(),
                path: p,
            })
            .collect(),
    }
}

/// What to do with one recorded unit.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Live still holds what vcfm wrote: write the original (`None`: remove).
    Restore(Option<Value>),
    /// Live already holds the original.
    AlreadyUndone,
    /// Someone else changed the unit after vcfm: it is left as it is.
    Conflict,
}

/// The three-way rule of the module documentation.
pub fn verdict(original: Option<&Value>, wrote: Option<&Value>, live: Option<&Value>) -> Verdict {
    if live == original {
        Verdict::AlreadyUndone
    } else if live == wrote {
        Verdict::Restore(original.cloned())
    } else {
        Verdict::Conflict
    }
}

/// The verdict for each recorded unit.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Plan {
    pub steps: Vec<(Path, Verdict)>,
}

impl Plan {
    /// Plans undoing `record` on `live`, with `original` the backed-up object.
    pub fn new(original: &Value, record: &ChangeRecord, live: &Value) -> Self {
        Self {
            steps: record
                .changes
                .iter()
                .map(|c| {
                    let v = verdict(get(original, &c.path), c.wrote.as_ref(), get(live, &c.path));
                    (c.path.clone(), v)
                })
                .collect(),
        }
    }

    /// Applies the restores to `live`. Returns whether it changed.
    pub fn apply(&self, live: &mut Value) -> bool {
        let mut changed = false;
        for (p, v) in &self.steps {
            if let Verdict::Restore(orig) = v {
                changed |= set(live, p, orig.clone());
            }
        }
        changed
    }

    /// The units restored or removed, for messages.
    pub fn restored(&self) -> Vec<String> {
        self.described(|v| matches!(v, Verdict::Restore(_)))
    }

    /// The units left because someone else changed them, for messages.
    pub fn conflicts(&self) -> Vec<String> {
        self.described(|v| *v == Verdict::Conflict)
    }

    fn described(&self, f: impl Fn(&Verdict) -> bool) -> Vec<String> {
        self.steps
            .iter()
            .filter(|(_, v)| f(v))
            .map(|(p, _)| describe(p))
            .collect()
    }
}

/// A one-line summary of an undo on `object`, naming units, never values.
pub fn summary(object: &str, plan: &Plan) -> String {
    let restored = plan.restored();
    let conflicts = plan.conflicts();
    let mut s = if restored.is_empty() {
        format!("{object}: nothing of vcfm's left to undo")
    } else {
        format!("{object}: undid vcfm's change to {}", restored.join(", "))
    };
    if !conflicts.is_empty() {
        s.push_str(&format!(
            "; left {} as changed by someone else after vcfm (conflict: check and fix by hand)",
            conflicts.join(", ")
        ));
    }
    s
}

// ------------------------------------------------------------- units per kind

/// A Secret's units: its `data` keys.
pub fn secret_units(v: &Value) -> Vec<Path> {
    keys(v.get("data"))
        .map(|k| vec![field("data"), field(&k)])
        .collect()
}

fn keys(v: Option<&Value>) -> impl Iterator<Item = String> + '_ {
    v.and_then(Value::as_object)
        .into_iter()
        .flat_map(|o| o.keys().cloned())
}

fn keyed(list: Option<&Value>, key: &str) -> Vec<String> {
    list.and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|e| e.get(key).and_then(Value::as_str).map(str::to_string))
        .collect()
}

/// The Infrastructure's units, all under `spec` (vcfm never writes its
/// metadata, so labels and annotations are never touched): each vCenter by
/// server, each failure domain by name, each `nodeNetworking` side, and every
/// other field of `spec.platformSpec.vsphere`, `spec.platformSpec` and `spec`
/// as a whole.
pub fn infrastructure_units(v: &Value) -> Vec<Path> {
    let mut out = vec![];
    let spec = v.get("spec");
    for k in keys(spec) {
        if k != "platformSpec" {
            out.push(vec![field("spec"), field(&k)]);
        }
    }
    let ps = spec.and_then(|s| s.get("platformSpec"));
    for k in keys(ps) {
        if k != "vsphere" {
            out.push(vec![field("spec"), field("platformSpec"), field(&k)]);
        }
    }
    let vs_path = || vec![field("spec"), field("platformSpec"), field("vsphere")];
    let vs = ps.and_then(|p| p.get("vsphere"));
    for k in keys(vs) {
        let mut p = vs_path();
        match k.as_str() {
            "vcenters" => {
                for s in keyed(vs.and_then(|x| x.get("vcenters")), "server") {
                    let mut p = p.clone();
                    p.extend([field("vcenters"), entry("server", &s)]);
                    out.push(p);
                }
            }
            "failureDomains" => {
                for n in keyed(vs.and_then(|x| x.get("failureDomains")), "name") {
                    let mut p = p.clone();
                    p.extend([field("failureDomains"), entry("name", &n)]);
                    out.push(p);
                }
            }
            "nodeNetworking" => {
                let nn = vs.and_then(|x| x.get("nodeNetworking"));
                for side in keys(nn) {
                    let mut p = p.clone();
                    p.extend([field("nodeNetworking"), field(&side)]);
                    out.push(p);
                }
            }
            _ => {
                p.push(field(&k));
                out.push(p);
            }
        }
    }
    out
}

/// The cloud provider configuration seen as units: `vcenter.<server>` for each
/// vCenter entry (see `cloud_config::as_units`).
pub fn cloud_config_units(v: &Value) -> Vec<Path> {
    keys(v.get("vcenter"))
        .map(|s| vec![field("vcenter"), field(&s)])
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_three_way_rule() {
        let (o, w, x) = (json!("orig"), json!("vcfm"), json!("other"));
        assert_eq!(
            verdict(Some(&o), Some(&w), Some(&w)),
            Verdict::Restore(Some(o.clone()))
        );
        assert_eq!(verdict(None, Some(&w), Some(&w)), Verdict::Restore(None));
        assert_eq!(verdict(None, Some(&w), None), Verdict::AlreadyUndone);
        assert_eq!(
            verdict(Some(&o), Some(&w), Some(&o)),
            Verdict::AlreadyUndone
        );
        assert_eq!(verdict(Some(&o), Some(&w), Some(&x)), Verdict::Conflict);
        assert_eq!(verdict(None, Some(&w), Some(&x)), Verdict::Conflict);
        // vcfm removed a unit and someone re-created it differently.
        assert_eq!(verdict(Some(&o), None, Some(&x)), Verdict::Conflict);
        assert_eq!(verdict(Some(&o), None, None), Verdict::Restore(Some(o)));
    }

    #[test]
    fn paths_get_and_set_keyed_entries() {
        let mut v = json!({"spec": {"list": [{"name": "a", "x": 1}]}});
        let a = vec![field("spec"), field("list"), entry("name", "a")];
        let b = vec![field("spec"), field("list"), entry("name", "b")];
        assert_eq!(get(&v, &a), Some(&json!({"name": "a", "x": 1})));
        assert_eq!(get(&v, &b), None);
        assert!(set(&mut v, &b, Some(json!({"name": "b"}))));
        assert!(!set(&mut v, &b, Some(json!({"name": "b"}))));
        assert!(set(&mut v, &a, None));
        assert!(!set(&mut v, &a, None));
        assert_eq!(v, json!({"spec": {"list": [{"name": "b"}]}}));
        let deep = vec![field("n"), field("m"), entry("k", "v"), field("f")];
        let mut e = json!({});
        assert!(set(&mut e, &deep, Some(json!(3))));
        assert_eq!(e, json!({"n": {"m": [{"k": "v", "f": 3}]}}));
        assert!(!set(&mut json!({}), &deep, None), "removing nothing");
        assert_eq!(
            describe(&[field("data"), field("vc.example.com.password")]),
            "data[vc.example.com.password]"
        );
        assert_eq!(
            describe(&[field("spec"), field("vcenters"), entry("server", "s")]),
            "spec.vcenters[server=s]"
        );
    }

    fn creds(pairs: &[(&str, &str)]) -> Value {
        let data: Map<String, Value> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), json!(v)))
            .collect();
        json!({"metadata": {"name": "vsphere-creds"}, "data": data})
    }

    /// A source password rotated during the migration survives; the target
    /// keys vcfm added go; a target key someone else replaced stays, reported.
    #[test]
    fn secret_keys_undo_only_what_vcfm_added() {
        let original = creds(&[("src.username", "dTE="), ("src.password", "cDE=")]);
        let written = creds(&[
            ("src.username", "dTE="),
            ("src.password", "cDE="),
            ("tgt.username", "dTI="),
            ("tgt.password", "cDI="),
        ]);
        let record = diff(secret_units, &original, &written);
        assert_eq!(record.changes.len(), 2);
        assert!(
            record
                .changes
                .iter()
                .all(|c| describe(&c.path).starts_with("data[tgt."))
        );

        let mut live = written.clone();
        live["data"]["src.password"] = json!("cm90YXRlZA==");
        live["data"]["other.key"] = json!("eA==");
        let plan = Plan::new(&original, &record, &live);
        assert!(plan.conflicts().is_empty());
        assert!(plan.apply(&mut live));
        let mut want = original.clone();
        want["data"]["src.password"] = json!("cm90YXRlZA==");
        want["data"]["other.key"] = json!("eA==");
        assert_eq!(live, want);
        // Again: nothing left to do.
        let again = Plan::new(&original, &record, &live);
        assert!(!again.apply(&mut live.clone()));
        assert!(again.restored().is_empty());

        let mut live = written.clone();
        live["data"]["tgt.password"] = json!("bmV3");
        let plan = Plan::new(&original, &record, &live);
        assert_eq!(plan.conflicts(), ["data[tgt.password]"]);
        assert!(plan.apply(&mut live));
        assert_eq!(live["data"]["tgt.password"], json!("bmV3"));
        assert!(live["data"].get("tgt.username").is_none());
        let s = summary("kube-system/vsphere-creds", &plan);
        assert!(
            s.contains("conflict") && s.contains("data[tgt.password]"),
            "{s}"
        );
        assert!(!s.contains("bmV3"), "no values in messages: {s}");
    }

    fn infra() -> Value {
        json!({"metadata": {"name": "cluster"},
            "spec": {"cloudConfig": {"key": "config", "name": "cloud-provider-config"},
                "platformSpec": {"type": "VSphere", "vsphere": {
                    "apiServerInternalIPs": ["10.0.0.5"],
                    "nodeNetworking": {"external": {}, "internal": {"networkSubnetCidr": ["10.0.0.0/16"]}},
                    "vcenters": [{"server": "src", "port": 443, "datacenters": ["DC0"]}],
                    "failureDomains": [{"name": "fd0", "server": "src"}]}}}})
    }

    #[test]
    fn infrastructure_entries_undo_only_what_vcfm_added() {
        let original = infra();
        let mut written = original.clone();
        let vs = "/spec/platformSpec/vsphere";
        let w = written.pointer_mut(vs).unwrap();
        w["vcenters"]
            .as_array_mut()
            .unwrap()
            .push(json!({"server": "tgt", "port": 443, "datacenters": ["DC1"]}));
        w["failureDomains"]
            .as_array_mut()
            .unwrap()
            .push(json!({"name": "fd1", "server": "tgt"}));
        w["nodeNetworking"]["internal"]["networkSubnetCidr"] =
            json!(["10.0.0.0/16", "10.1.0.0/16"]);
        let record = diff(infrastructure_units, &original, &written);
        let changed: Vec<String> = record.changes.iter().map(|c| describe(&c.path)).collect();
        assert_eq!(
            changed,
            [
                "spec.platformSpec.vsphere.failureDomains[name=fd1]",
                "spec.platformSpec.vsphere.nodeNetworking.internal",
                "spec.platformSpec.vsphere.vcenters[server=tgt]",
            ]
        );

        // Meanwhile: a label, an ingress IP and the source entry edited by others.
        let mut live = written.clone();
        live["metadata"]["labels"] = json!({"team": "infra"});
        let l = live.pointer_mut(vs).unwrap();
        l["ingressIPs"] = json!(["10.0.0.6"]);
        l["vcenters"][0]["datacenters"] = json!(["DC0", "DC9"]);
        let plan = Plan::new(&original, &record, &live);
        assert!(plan.conflicts().is_empty());
        assert!(plan.apply(&mut live));
        let mut want = original.clone();
        want["metadata"]["labels"] = json!({"team": "infra"});
        let wv = want.pointer_mut(vs).unwrap();
        wv["ingressIPs"] = json!(["10.0.0.6"]);
        wv["vcenters"][0]["datacenters"] = json!(["DC0", "DC9"]);
        assert_eq!(live, want);

        // Someone edited the failure domain vcfm added: it is left, reported.
        let mut live = written.clone();
        live.pointer_mut(vs).unwrap()["failureDomains"][1]["zone"] = json!("z9");
        let plan = Plan::new(&original, &record, &live);
        assert_eq!(
            plan.conflicts(),
            ["spec.platformSpec.vsphere.failureDomains[name=fd1]"]
        );
        plan.apply(&mut live);
        assert_eq!(
            keyed(live.pointer(&format!("{vs}/failureDomains")), "name"),
            ["fd0", "fd1"]
        );
        assert_eq!(
            keyed(live.pointer(&format!("{vs}/vcenters")), "server"),
            ["src"]
        );
    }

    #[test]
    fn cloud_config_entries_undo_only_what_vcfm_added() {
        let original = json!({"vcenter": {"src": {"server": "src", "datacenters": ["DC0"]}}});
        let mut written = original.clone();
        written["vcenter"]["tgt"] = json!({"server": "tgt", "datacenters": ["DC1"]});
        let record = diff(cloud_config_units, &original, &written);
        assert_eq!(record.changes.len(), 1);
        let mut live = written.clone();
        live["vcenter"]["src"]["datacenters"] = json!(["DC0", "DC2"]);
        let plan = Plan::new(&original, &record, &live);
        assert_eq!(
            plan.steps,
            [(vec![field("vcenter"), field("tgt")], Verdict::Restore(None))]
        );
    }

    #[test]
    fn records_merge_later_writes_and_round_trip() {
        let mut r = ChangeRecord {
            changes: vec![Change {
                path: vec![field("data"), field("a")],
                wrote: Some(json!("1")),
            }],
        };
        let later = ChangeRecord {
            changes: vec![
                Change {
                    path: vec![field("data"), field("a")],
                    wrote: Some(json!("2")),
                },
                Change {
                    path: vec![field("spec"), field("l"), entry("server", "s")],
                    wrote: None,
                },
            ],
        };
        assert!(r.merge(&later));
        assert!(!r.merge(&later));
        assert_eq!(r, later);
        let text = serde_json::to_string(&r).unwrap();
        assert_eq!(serde_json::from_str::<ChangeRecord>(&text).unwrap(), r);
    }

    #[test]
    fn an_old_backup_without_a_record_removes_only_the_assumed_units() {
        let original = creds(&[("src.username", "dTE=")]);
        let mut live = creds(&[("src.username", "cm90"), ("tgt.username", "dTI=")]);
        let record = ChangeRecord::assumed(&live, [vec![field("data"), field("tgt.username")]]);
        let plan = Plan::new(&original, &record, &live);
        assert!(plan.apply(&mut live));
        assert_eq!(live, creds(&[("src.username", "cm90")]));
    }
}
