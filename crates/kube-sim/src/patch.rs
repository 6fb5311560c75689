//! Patch application: JSON merge patch (RFC 7386), JSON patch (RFC 6902), strategic
//! merge patch for the built-in list semantics that matter (containers by name,
//! conditions by type, ...), and a simplified server-side apply with field managers
//! and conflict detection.

use std::collections::BTreeSet;

use serde_json::{Map, Value, json};

use crate::error::ApiError;
use crate::util::now_rfc3339;

/// RFC 6902 patch with the apiserver's leniency: `test` of `null` passes on a missing
/// path (kube-rs' finalizer helper relies on it).
pub(crate) fn json_patch(doc: &mut Value, ops: &Value) -> Result<(), ApiError> {
    let list = ops
        .as_array()
        .ok_or_else(|| ApiError::bad_request("invalid JSON patch: expected an array"))?;
    for op in list {
        if op.get("op").and_then(Value::as_str) == Some("test")
            && op.get("value").is_some_and(Value::is_null)
        {
            let path = op.get("path").and_then(Value::as_str).unwrap_or("");
            if doc.pointer(path).is_none_or(Value::is_null) {
                continue;
            }
        }
        let one: json_patch::Patch = serde_json::from_value(Value::Array(vec![op.clone()]))
            .map_err(|e| ApiError::bad_request(format!("invalid JSON patch: {e}")))?;
        json_patch::patch(doc, &one).map_err(|e| {
            ApiError::new(
                422,
                "Invalid",
                format!("the server rejected our request due to an error in our request: {e}"),
            )
        })?;
    }
    Ok(())
}

/// The merge key a strategic merge patch uses for a built-in list field.
fn smp_key(field: &str, sample: Option<&Value>) -> Option<&'static str> {
    match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "volumes"
        | "env"
        | "imagePullSecrets" => Some("name"),
        "conditions" => Some("type"),
        "volumeMounts" => Some("mountPath"),
        "ownerReferences" => Some("uid"),
        "ports" => {
            if sample.and_then(|s| s.get("containerPort")).is_some() {
                Some("containerPort")
            } else {
                Some("port")
            }
        }
        _ => None,
    }
}

/// Apply a strategic merge patch to `target`.
pub(crate) fn strategic_merge(target: &mut Value, patch: &Value) {
    let Value::Object(pm) = patch else {
        *target = patch.clone();
        return;
    };
    if pm.get("$patch").and_then(Value::as_str) == Some("replace") {
        let mut p = pm.clone();
        p.remove("$patch");
        *target = Value::Object(p);
        return;
    }
    if !target.is_object() {
        *target = json!({});
    }
    let Value::Object(tm) = target else { return };
    for (k, pv) in pm {
        if k.starts_with('$') {
            continue;
        }
        if pv.is_null() {
            tm.remove(k);
            continue;
        }
        match pv {
            Value::Object(_) => {
                let entry = tm.entry(k.clone()).or_insert_with(|| json!({}));
                strategic_merge(entry, pv);
            }
            Value::Array(items) => {
                let key = smp_key(k, items.first());
                let existing = tm.get_mut(k);
                match (key, existing) {
                    (Some(key), Some(Value::Array(cur))) => merge_keyed_list(cur, items, key),
                    (None, Some(Value::Array(cur))) if k == "finalizers" => {
                        for it in items {
                            if !cur.contains(it) {
                                cur.push(it.clone());
                            }
                        }
                    }
                    _ => {
                        let cleaned: Vec<Value> = items
                            .iter()
                            .filter(|i| i.get("$patch").is_none())
                            .map(strip_directives)
                            .collect();
                        tm.insert(k.clone(), Value::Array(cleaned));
                    }
                }
            }
            other => {
                tm.insert(k.clone(), other.clone());
            }
        }
    }
}

fn strip_directives(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(k, _)| !k.starts_with('$'))
                .map(|(k, v)| (k.clone(), strip_directives(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(strip_directives).collect()),
        other => other.clone(),
    }
}

fn merge_keyed_list(cur: &mut Vec<Value>, items: &[Value], key: &str) {
    for it in items {
        let k = it.get(key);
        let pos = cur
            .iter()
            .position(|c| c.get(key).is_some() && c.get(key) == k);
        if it.get("$patch").and_then(Value::as_str) == Some("delete") {
            if let Some(p) = pos {
                cur.remove(p);
            }
            continue;
        }
        match pos {
            Some(p) => strategic_merge(&mut cur[p], it),
            None => cur.push(strip_directives(it)),
        }
    }
}

/// One step of a managed-field path.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum PathElem {
    Field(String),
    /// A keyed list item, as the JSON of its key fields.
    Key(String),
}

pub(crate) type FieldPath = Vec<PathElem>;
pub(crate) type FieldSet = BTreeSet<FieldPath>;

/// How a list is merged: by key fields, or atomically.
fn list_keys(schema: Option<&Value>, field: &str, items: &[Value]) -> Option<Vec<String>> {
    if let Some(s) = schema {
        if s.get("x-kubernetes-list-type").and_then(Value::as_str) == Some("map") {
            return s
                .get("x-kubernetes-list-map-keys")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|x| x.as_str().map(String::from))
                        .collect()
                });
        }
        if s.get("type").is_some() {
            return None;
        }
    }
    smp_key(field, items.first()).map(|k| vec![k.to_string()])
}

fn item_key(item: &Value, keys: &[String]) -> String {
    let m: Map<String, Value> = keys
        .iter()
        .map(|k| (k.clone(), item.get(k).cloned().unwrap_or(Value::Null)))
        .collect();
    Value::Object(m).to_string()
}

fn sub_schema<'a>(schema: Option<&'a Value>, k: &str) -> Option<&'a Value> {
    let s = schema?;
    s.pointer(&format!(
        "/properties/{}",
        k.replace('~', "~0").replace('/', "~1")
    ))
    .or_else(|| s.get("additionalProperties").filter(|a| a.is_object()))
}

/// Leaf field paths set by `v` (the fields an applier or writer owns).
pub(crate) fn leaves(v: &Value, schema: Option<&Value>) -> FieldSet {
    let mut out = FieldSet::new();
    if let Value::Object(m) = v {
        for (k, child) in m {
            match k.as_str() {
                "apiVersion" | "kind" => {}
                "metadata" => {
                    for mk in ["labels", "annotations"] {
                        if let Some(Value::Object(lm)) = child.get(mk) {
                            for lk in lm.keys() {
                                out.insert(vec![
                                    PathElem::Field("metadata".into()),
                                    PathElem::Field(mk.into()),
                                    PathElem::Field(lk.clone()),
                                ]);
                            }
                        }
                    }
                    for mk in ["finalizers", "ownerReferences"] {
                        if child.get(mk).is_some() {
                            out.insert(vec![
                                PathElem::Field("metadata".into()),
                                PathElem::Field(mk.into()),
                            ]);
                        }
                    }
                }
                _ => walk(
                    child,
                    sub_schema(schema, k),
                    k,
                    vec![PathElem::Field(k.clone())],
                    &mut out,
                ),
            }
        }
    }
    out
}

fn walk(v: &Value, schema: Option<&Value>, field: &str, prefix: FieldPath, out: &mut FieldSet) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, c) in m {
                let mut p = prefix.clone();
                p.push(PathElem::Field(k.clone()));
                walk(c, sub_schema(schema, k), k, p, out);
            }
        }
        Value::Array(items) if !items.is_empty() && items.iter().all(Value::is_object) => {
            match list_keys(schema, field, items) {
                Some(keys) => {
                    let item_schema = schema.and_then(|s| s.get("items"));
                    for it in items {
                        let mut p = prefix.clone();
                        p.push(PathElem::Key(item_key(it, &keys)));
                        let Value::Object(im) = it else { continue };
                        if im.keys().all(|k| keys.contains(k)) {
                            out.insert(p);
                            continue;
                        }
                        for (k, c) in im {
                            let mut pp = p.clone();
                            pp.push(PathElem::Field(k.clone()));
                            walk(c, sub_schema(item_schema, k), k, pp, out);
                        }
                    }
                }
                None => {
                    out.insert(prefix);
                }
            }
        }
        _ => {
            out.insert(prefix);
        }
    }
}

/// The value at a managed-field path.
pub(crate) fn value_at<'a>(v: &'a Value, path: &[PathElem]) -> Option<&'a Value> {
    let mut cur = v;
    for e in path {
        cur = match e {
            PathElem::Field(f) => cur.get(f)?,
            PathElem::Key(k) => {
                let key: Map<String, Value> = serde_json::from_str(k).ok()?;
                cur.as_array()?
                    .iter()
                    .find(|it| key.iter().all(|(kk, kv)| it.get(kk) == Some(kv)))?
            }
        };
    }
    Some(cur)
}

fn remove_at(v: &mut Value, path: &[PathElem]) {
    let Some((last, parent_path)) = path.split_last() else {
        return;
    };
    let mut cur = v;
    for e in parent_path {
        let next = match e {
            PathElem::Field(f) => cur.get_mut(f),
            PathElem::Key(k) => {
                let Ok(key) = serde_json::from_str::<Map<String, Value>>(k) else {
                    return;
                };
                cur.as_array_mut().and_then(|a| {
                    a.iter_mut()
                        .find(|it| key.iter().all(|(kk, kv)| it.get(kk) == Some(kv)))
                })
            }
        };
        match next {
            Some(n) => cur = n,
            None => return,
        }
    }
    match last {
        PathElem::Field(f) => {
            if let Some(m) = cur.as_object_mut() {
                m.remove(f);
            }
        }
        PathElem::Key(k) => {
            if let (Ok(key), Some(a)) = (
                serde_json::from_str::<Map<String, Value>>(k),
                cur.as_array_mut(),
            ) {
                a.retain(|it| !key.iter().all(|(kk, kv)| it.get(kk) == Some(kv)));
            }
        }
    }
}

/// Merge an applied configuration into the live object (objects recursively, keyed
/// lists by key, everything else replaced).
fn apply_merge(live: &mut Value, applied: &Value, schema: Option<&Value>, field: &str) {
    match (live, applied) {
        (Value::Object(lm), Value::Object(am)) => {
            for (k, av) in am {
                let sub = sub_schema(schema, k);
                match lm.get_mut(k) {
                    Some(lv) if !av.is_null() => apply_merge(lv, av, sub, k),
                    _ => {
                        lm.insert(k.clone(), av.clone());
                    }
                }
            }
        }
        (Value::Array(la), Value::Array(aa))
            if aa.iter().all(Value::is_object) && !aa.is_empty() =>
        {
            match list_keys(schema, field, aa) {
                Some(keys) => {
                    let item_schema = schema.and_then(|s| s.get("items"));
                    for it in aa {
                        let k = item_key(it, &keys);
                        match la.iter_mut().find(|l| item_key(l, &keys) == k) {
                            Some(l) => apply_merge(l, it, item_schema, ""),
                            None => la.push(it.clone()),
                        }
                    }
                }
                None => *la = aa.clone(),
            }
        }
        (l, a) => *l = a.clone(),
    }
}

/// A field manager's ownership as stored in `metadata.managedFields`.
#[derive(Debug, Clone)]
pub(crate) struct Manager {
    pub manager: String,
    pub operation: String,
    pub subresource: String,
    pub api_version: String,
    pub fields: FieldSet,
    /// Last change by this manager; `None` means "now".
    pub time: Option<String>,
}

fn path_to_json(fields: &FieldSet) -> Value {
    let mut root = json!({});
    for p in fields {
        let mut cur = &mut root;
        for e in p {
            let k = match e {
                PathElem::Field(f) => format!("f:{f}"),
                PathElem::Key(k) => format!("k:{k}"),
            };
            let Value::Object(m) = cur else { break };
            cur = m.entry(k).or_insert_with(|| json!({}));
        }
    }
    root
}

fn json_to_paths(v: &Value, prefix: FieldPath, out: &mut FieldSet) {
    let Value::Object(m) = v else { return };
    let children: Vec<_> = m.iter().filter(|(k, _)| k.as_str() != ".").collect();
    if children.is_empty() && !prefix.is_empty() {
        out.insert(prefix);
        return;
    }
    for (k, c) in children {
        let e = if let Some(f) = k.strip_prefix("f:") {
            PathElem::Field(f.to_string())
        } else if let Some(kk) = k.strip_prefix("k:") {
            PathElem::Key(kk.to_string())
        } else {
            continue;
        };
        let mut p = prefix.clone();
        p.push(e);
        json_to_paths(c, p, out);
    }
}

/// Read `metadata.managedFields`.
pub(crate) fn read_managers(obj: &Value) -> Vec<Manager> {
    obj.pointer("/metadata/managedFields")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map(|e| {
                    let mut fields = FieldSet::new();
                    if let Some(f) = e.get("fieldsV1") {
                        json_to_paths(f, vec![], &mut fields);
                    }
                    Manager {
                        manager: e
                            .get("manager")
                            .and_then(Value::as_str)
                            .unwrap_or("")
                            .into(),
                        operation: e
                            .get("operation")
                            .and_then(Value::as_str)
                            .unwrap_or("Update")
                            .into(),
                        subresource: e
                            .get("subresource")
                            .and_then(Value::as_str)
                            .unwrap_or("")
                            .into(),
                        api_version: e
                            .get("apiVersion")
                            .and_then(Value::as_str)
                            .unwrap_or("")
                            .into(),
                        fields,
                        time: e.get("time").and_then(Value::as_str).map(String::from),
                    }
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Write `metadata.managedFields`, dropping managers that own nothing.
pub(crate) fn write_managers(obj: &mut Value, managers: &[Manager]) {
    let entries: Vec<Value> = managers
        .iter()
        .filter(|m| !m.fields.is_empty())
        .map(|m| {
            let mut e = json!({
                "manager": m.manager,
                "operation": m.operation,
                "apiVersion": m.api_version,
                "time": m.time.clone().unwrap_or_else(now_rfc3339),
                "fieldsType": "FieldsV1",
                "fieldsV1": path_to_json(&m.fields),
            });
            if !m.subresource.is_empty() {
                e["subresource"] = json!(m.subresource);
            }
            e
        })
        .collect();
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        if entries.is_empty() {
            meta.remove("managedFields");
        } else {
            meta.insert("managedFields".into(), Value::Array(entries));
        }
    }
}

fn overlaps(a: &[PathElem], b: &[PathElem]) -> bool {
    a.starts_with(b) || b.starts_with(a)
}

fn path_string(p: &[PathElem]) -> String {
    let mut s = String::new();
    for e in p {
        match e {
            PathElem::Field(f) => {
                s.push('.');
                s.push_str(f);
            }
            PathElem::Key(k) => {
                s.push('[');
                s.push_str(
                    &k.trim_start_matches('{')
                        .trim_end_matches('}')
                        .replace(':', "="),
                );
                s.push(']');
            }
        }
    }
    s
}

/// Outcome of a server-side apply.
pub(crate) enum ApplyOutcome {
    Merged(Value),
    /// Conflicts as (manager, field path) pairs.
    Conflicts(Vec<(String, String)>),
}

/// Server-side apply `applied` from `manager` onto `live`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn server_side_apply(
    live: &Value,
    applied: &Value,
    manager: &str,
    force: bool,
    schema: Option<&Value>,
    api_version: &str,
    subresource: &str,
) -> ApplyOutcome {
    let mut managers = read_managers(live);
    let new_set = leaves(applied, schema);
    let mut conflicts = Vec::new();
    for m in managers.iter_mut() {
        if m.manager == manager && m.subresource == subresource {
            continue;
        }
        let mut lost = Vec::new();
        for p in &new_set {
            for owned in m.fields.iter().filter(|o| overlaps(o, p)) {
                let same = value_at(live, owned) == value_at(applied, owned)
                    && value_at(applied, owned).is_some();
                if !same {
                    if force {
                        lost.push(owned.clone());
                    } else {
                        conflicts.push((m.manager.clone(), path_string(owned)));
                    }
                } else if m.operation == "Update" {
                    // Shared ownership only exists among appliers; updaters hand it over.
                }
            }
        }
        for l in lost {
            m.fields.remove(&l);
        }
    }
    if !conflicts.is_empty() {
        conflicts.sort();
        conflicts.dedup();
        return ApplyOutcome::Conflicts(conflicts);
    }
    let prev: FieldSet = managers
        .iter()
        .filter(|m| m.manager == manager && m.operation == "Apply" && m.subresource == subresource)
        .flat_map(|m| m.fields.iter().cloned())
        .collect();
    let mut result = live.clone();
    for p in prev.difference(&new_set) {
        let owned_by_other = managers
            .iter()
            .filter(|m| !(m.manager == manager && m.subresource == subresource))
            .any(|m| m.fields.iter().any(|o| o.starts_with(p)));
        if !owned_by_other {
            remove_at(&mut result, p);
        }
    }
    let mut body = applied.clone();
    if let Some(m) = body.as_object_mut() {
        // Identity and server-owned metadata are never taken from the applied config.
        if let Some(Value::Object(meta)) = m.get_mut("metadata") {
            meta.retain(|k, _| {
                ["labels", "annotations", "finalizers", "ownerReferences"].contains(&k.as_str())
            });
        }
    }
    apply_merge(&mut result, &body, schema, "");
    let strip = |v: &Value| {
        let mut c = v.clone();
        if let Some(m) = c.get_mut("metadata").and_then(Value::as_object_mut) {
            m.remove("managedFields");
        }
        c
    };
    if prev == new_set && strip(&result) == strip(live) {
        // Re-applying the same configuration is a no-op, ownership and timestamps included.
        return ApplyOutcome::Merged(live.clone());
    }
    managers.retain(|m| {
        !(m.manager == manager && m.operation == "Apply" && m.subresource == subresource)
    });
    managers.push(Manager {
        manager: manager.into(),
        operation: "Apply".into(),
        subresource: subresource.into(),
        api_version: api_version.into(),
        fields: new_set,
        time: None,
    });
    write_managers(&mut result, &managers);
    ApplyOutcome::Merged(result)
}

/// Record that `manager` (a non-apply writer) changed fields between `old` and `new`.
pub(crate) fn track_update(
    old: Option<&Value>,
    new: &mut Value,
    manager: &str,
    schema: Option<&Value>,
    api_version: &str,
    subresource: &str,
) {
    let mut managers = old.map(read_managers).unwrap_or_default();
    let changed: FieldSet = leaves(new, schema)
        .into_iter()
        .filter(|p| old.is_none_or(|o| value_at(o, p) != value_at(new, p)))
        .collect();
    // Fields that vanished are no longer owned by anybody.
    for m in managers.iter_mut() {
        m.fields.retain(|p| value_at(new, p).is_some());
        if !(m.manager == manager && m.operation == "Update" && m.subresource == subresource) {
            m.fields.retain(|p| !changed.iter().any(|c| overlaps(c, p)));
        }
    }
    if !changed.is_empty() {
        match managers.iter_mut().find(|m| {
            m.manager == manager && m.operation == "Update" && m.subresource == subresource
        }) {
            Some(m) => {
                m.fields.extend(changed);
                m.time = None;
            }
            None => managers.push(Manager {
                manager: manager.into(),
                operation: "Update".into(),
                subresource: subresource.into(),
                api_version: api_version.into(),
                fields: changed,
                time: None,
            }),
        }
    }
    write_managers(new, &managers);
}
