//! Discovery documents (`/api`, `/apis`, APIResourceLists), the minimal OpenAPI v3
//! documents kubectl consults before it decides to use server-side field validation,
//! and `Table` rendering for `kubectl get` (including CRD printer columns).

use serde_json::{Value, json};

use crate::registry::{Column, Registry, ResourceDef};

/// Reported server version; matches the installed kubectl to avoid skew warnings.
pub(crate) const K8S_MINOR: &str = "32";

pub(crate) fn version() -> Value {
    json!({
        "major": "1",
        "minor": K8S_MINOR,
        "gitVersion": format!("v1.{K8S_MINOR}.0-kube-sim"),
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2026-01-01T00:00:00Z",
        "goVersion": "go1.23",
        "compiler": "gc",
        "platform": "linux/amd64",
    })
}

pub(crate) fn api_versions(server: &str) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server}],
    })
}

fn group_json(name: &str, versions: &[String]) -> Value {
    let vs: Vec<Value> = versions
        .iter()
        .map(|v| json!({"groupVersion": format!("{name}/{v}"), "version": v}))
        .collect();
    json!({
        "name": name,
        "versions": vs,
        "preferredVersion": vs.first().cloned().unwrap_or(json!({})),
    })
}

pub(crate) fn group_list(reg: &Registry) -> Value {
    let groups: Vec<Value> = reg
        .groups()
        .iter()
        .filter(|(g, _)| !g.is_empty())
        .map(|(g, vs)| group_json(g, vs))
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

pub(crate) fn group(reg: &Registry, name: &str) -> Option<Value> {
    reg.groups().iter().find(|(g, _)| g == name).map(|(g, vs)| {
        let mut v = group_json(g, vs);
        v["kind"] = json!("APIGroup");
        v["apiVersion"] = json!("v1");
        v
    })
}

const VERBS: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

pub(crate) fn resource_list(reg: &Registry, group: &str, version: &str) -> Option<Value> {
    let defs = reg.resources_in(group, version);
    if defs.is_empty() {
        return None;
    }
    let mut resources = Vec::new();
    for d in defs {
        let mut r = json!({
            "name": d.plural,
            "singularName": d.singular,
            "namespaced": d.namespaced,
            "kind": d.kind,
            "verbs": VERBS,
        });
        if !d.short_names.is_empty() {
            r["shortNames"] = json!(d.short_names);
        }
        if !d.categories.is_empty() {
            r["categories"] = json!(d.categories);
        }
        resources.push(r);
        let extra = match (d.group.as_str(), d.plural.as_str()) {
            ("", "pods") => Some(("eviction", "policy", "Eviction")),
            ("", "serviceaccounts") => Some(("token", "authentication.k8s.io", "TokenRequest")),
            _ => None,
        };
        if let Some((sub, g, kind)) = extra {
            resources.push(json!({
                "name": format!("{}/{sub}", d.plural),
                "singularName": "",
                "namespaced": true,
                "group": g,
                "version": "v1",
                "kind": kind,
                "verbs": ["create"],
            }));
        }
        if d.has_status(version) {
            resources.push(json!({
                "name": format!("{}/status", d.plural),
                "singularName": "",
                "namespaced": d.namespaced,
                "kind": d.kind,
                "verbs": ["get", "patch", "update"],
            }));
        }
        if d.version(version).is_some_and(|v| v.scale.is_some()) {
            resources.push(json!({
                "name": format!("{}/scale", d.plural),
                "singularName": "",
                "namespaced": d.namespaced,
                "group": "autoscaling",
                "version": "v1",
                "kind": "Scale",
                "verbs": ["get", "patch", "update"],
            }));
        }
    }
    let gv = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    Some(
        json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources}),
    )
}

/// The aggregated discovery document for `/api` (`legacy`) or `/apis`.
pub(crate) fn aggregated(reg: &Registry, legacy: bool) -> Value {
    let mut items = Vec::new();
    for (g, versions) in reg.groups() {
        if g.is_empty() != legacy {
            continue;
        }
        let mut vs = Vec::new();
        for v in &versions {
            let mut resources = Vec::new();
            for d in reg.resources_in(&g, v) {
                let mut subs = Vec::new();
                if d.has_status(v) {
                    subs.push(json!({"subresource": "status", "responseKind": {"group": g, "version": v, "kind": d.kind}, "verbs": ["get", "patch", "update"]}));
                }
                if d.version(v).is_some_and(|x| x.scale.is_some()) {
                    subs.push(json!({"subresource": "scale", "responseKind": {"group": "autoscaling", "version": "v1", "kind": "Scale"}, "verbs": ["get", "patch", "update"]}));
                }
                match (d.group.as_str(), d.plural.as_str()) {
                    ("", "pods") => subs.push(json!({"subresource": "eviction", "responseKind": {"group": "policy", "version": "v1", "kind": "Eviction"}, "verbs": ["create"]})),
                    ("", "serviceaccounts") => subs.push(json!({"subresource": "token", "responseKind": {"group": "authentication.k8s.io", "version": "v1", "kind": "TokenRequest"}, "verbs": ["create"]})),
                    _ => {}
                }
                let mut r = json!({
                    "resource": d.plural,
                    "responseKind": {"group": "", "version": "", "kind": d.kind},
                    "scope": if d.namespaced { "Namespaced" } else { "Cluster" },
                    "singularResource": d.singular,
                    "verbs": VERBS,
                });
                if !d.short_names.is_empty() {
                    r["shortNames"] = json!(d.short_names);
                }
                if !d.categories.is_empty() {
                    r["categories"] = json!(d.categories);
                }
                if !subs.is_empty() {
                    r["subresources"] = json!(subs);
                }
                resources.push(r);
            }
            vs.push(json!({"version": v, "resources": resources, "freshness": "Current"}));
        }
        let mut meta = json!({"creationTimestamp": null});
        if !g.is_empty() {
            meta["name"] = json!(g);
        }
        items.push(json!({"metadata": meta, "versions": vs}));
    }
    json!({"kind": "APIGroupDiscoveryList", "apiVersion": "apidiscovery.k8s.io/v2", "metadata": {}, "items": items})
}

/// `/openapi/v3`: one document per group-version.
pub(crate) fn openapi_v3_root(reg: &Registry, epoch: u64) -> Value {
    let mut paths = serde_json::Map::new();
    for (g, vs) in reg.groups() {
        for v in vs {
            let p = if g.is_empty() {
                format!("api/{v}")
            } else {
                format!("apis/{g}/{v}")
            };
            paths.insert(
                p.clone(),
                json!({"serverRelativeURL": format!("/openapi/v3/{p}?hash={epoch:016X}")}),
            );
        }
    }
    json!({"paths": paths})
}

/// An OpenAPI v3 document declaring the PATCH operations and the `fieldValidation`
/// parameter, which is what kubectl checks to use server-side validation.
pub(crate) fn openapi_v3_doc(reg: &Registry, group: &str, version: &str) -> Option<Value> {
    let defs = reg.resources_in(group, version);
    if defs.is_empty() {
        return None;
    }
    let prefix = if group.is_empty() {
        format!("/api/{version}")
    } else {
        format!("/apis/{group}/{version}")
    };
    let mut paths = serde_json::Map::new();
    let mut schemas = serde_json::Map::new();
    for d in defs {
        let gvk = json!({"group": group, "version": version, "kind": d.kind});
        let params = json!([
            {"name": "fieldValidation", "in": "query", "schema": {"type": "string", "uniqueItems": true}},
            {"name": "fieldManager", "in": "query", "schema": {"type": "string", "uniqueItems": true}},
            {"name": "dryRun", "in": "query", "schema": {"type": "string", "uniqueItems": true}},
        ]);
        let op = |action: &str| {
            json!({
                "operationId": format!("{action}{}", d.kind),
                "x-kubernetes-action": action,
                "x-kubernetes-group-version-kind": gvk,
                "parameters": params,
                "responses": {"200": {"description": "OK"}},
            })
        };
        let item = if d.namespaced {
            format!("{prefix}/namespaces/{{namespace}}/{}/{{name}}", d.plural)
        } else {
            format!("{prefix}/{}/{{name}}", d.plural)
        };
        let coll = if d.namespaced {
            format!("{prefix}/namespaces/{{namespace}}/{}", d.plural)
        } else {
            format!("{prefix}/{}", d.plural)
        };
        paths.insert(item, json!({"get": op("get"), "put": op("put"), "patch": op("patch"), "delete": op("delete")}));
        paths.insert(coll, json!({"get": op("list"), "post": op("post")}));
        let mut s = d
            .version(version)
            .and_then(|v| v.schema.as_deref().cloned())
            .unwrap_or(json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true}));
        s["x-kubernetes-group-version-kind"] = json!([gvk]);
        let name = if group.is_empty() {
            format!("io.k8s.api.core.{version}.{}", d.kind)
        } else {
            format!(
                "{}.{version}.{}",
                group.split('.').rev().collect::<Vec<_>>().join("."),
                d.kind
            )
        };
        // Built-in schemas are left out so kubectl keeps using its compiled-in patch metadata.
        if d.custom {
            schemas.insert(name, s);
        }
    }
    Some(json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": format!("v1.{K8S_MINOR}.0")},
        "paths": paths,
        "components": {"schemas": schemas},
    }))
}

/// Human readable age, as the server renders `date` columns.
pub(crate) fn age(ts: &str) -> String {
    let Ok(t) = ts.parse::<jiff::Timestamp>() else {
        return "<unknown>".into();
    };
    let secs = (jiff::Timestamp::now().as_second() - t.as_second()).max(0);
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 600 => format!("{}m{}s", s / 60, s % 60),
        s if s < 3 * 3600 => format!("{}m", s / 60),
        s if s < 48 * 3600 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    }
}

/// Evaluate the JSONPath subset used by printer columns.
pub(crate) fn jsonpath(v: &Value, path: &str) -> Vec<Value> {
    let mut cur = vec![v.clone()];
    let p = path
        .trim()
        .trim_start_matches('{')
        .trim_end_matches('}')
        .trim_start_matches('$');
    let mut rest = p;
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix('.') {
            let end = r.find(['.', '[']).unwrap_or(r.len());
            let key = &r[..end];
            rest = &r[end..];
            if key.is_empty() {
                continue;
            }
            cur = cur.iter().filter_map(|c| c.get(key).cloned()).collect();
        } else if let Some(r) = rest.strip_prefix('[') {
            let Some(end) = r.find(']') else {
                return vec![];
            };
            let sel = &r[..end];
            rest = &r[end + 1..];
            if sel == "*" {
                cur = cur
                    .iter()
                    .flat_map(|c| c.as_array().cloned().unwrap_or_default())
                    .collect();
            } else if let Ok(i) = sel.parse::<usize>() {
                cur = cur.iter().filter_map(|c| c.get(i).cloned()).collect();
            } else if let Some(f) = sel.strip_prefix("?(@.").and_then(|f| f.strip_suffix(')')) {
                let Some((k, val)) = f.split_once("==") else {
                    return vec![];
                };
                let want = val.trim().trim_matches(|c| c == '"' || c == '\'');
                cur = cur
                    .iter()
                    .flat_map(|c| c.as_array().cloned().unwrap_or_default())
                    .filter(|it| {
                        crate::util::scalar_string(crate::util::get_path(it, k.trim())) == want
                    })
                    .collect();
            } else {
                return vec![];
            }
        } else {
            return vec![];
        }
    }
    cur
}

fn col(name: &str, t: &str, format: &str, desc: &str, priority: i64) -> Value {
    json!({"name": name, "type": t, "format": format, "description": desc, "priority": priority})
}

fn columns_for(def: &ResourceDef, version: &str) -> Vec<Column> {
    let cols = def
        .version(version)
        .map(|v| v.columns.clone())
        .unwrap_or_default();
    if def.custom && !cols.is_empty() {
        return cols;
    }
    let c = |name: &str, t: &str, path: &str| Column {
        name: name.into(),
        type_: t.into(),
        format: String::new(),
        description: String::new(),
        json_path: path.into(),
        priority: 0,
    };
    // `#...` paths are computed cells, mirroring the built-in printers of the real server.
    let mut out = match (def.group.as_str(), def.plural.as_str()) {
        ("", "pods") => vec![
            c("Ready", "string", "#pod-ready"),
            c("Status", "string", ".status.phase"),
            c("Restarts", "integer", "#pod-restarts"),
        ],
        ("", "nodes") => vec![
            c("Status", "string", "#node-status"),
            c("Roles", "string", "#node-roles"),
        ],
        ("", "namespaces") => vec![c("Status", "string", ".status.phase")],
        ("", "secrets") => vec![
            c("Type", "string", ".type"),
            c("Data", "integer", "#data-count"),
        ],
        ("", "configmaps") => vec![c("Data", "integer", "#data-count")],
        ("", "services") => vec![
            c("Type", "string", ".spec.type"),
            c("Cluster-IP", "string", ".spec.clusterIP"),
        ],
        ("", "persistentvolumeclaims") => {
            vec![
                c("Status", "string", ".status.phase"),
                c("Volume", "string", ".spec.volumeName"),
            ]
        }
        ("", "persistentvolumes") => vec![c("Status", "string", ".status.phase")],
        ("apps", "deployments") => vec![
            c("Ready", "string", "#deploy-ready"),
            c("Up-to-date", "integer", "#updated"),
            c("Available", "integer", "#available"),
        ],
        ("coordination.k8s.io", "leases") => vec![c("Holder", "string", ".spec.holderIdentity")],
        _ => vec![],
    };
    if def.plural == "customresourcedefinitions" {
        out.push(c("Created At", "date", ".metadata.creationTimestamp"));
    } else {
        out.push(c("Age", "date", ".metadata.creationTimestamp"));
    }
    if def.group.is_empty() && def.plural == "nodes" {
        out.push(c("Version", "string", ".status.nodeInfo.kubeletVersion"));
    }
    out
}

/// Cells the real server computes rather than reads from one path.
fn computed_cell(obj: &Value, what: &str) -> Value {
    let n = |p: &str| obj.pointer(p).and_then(Value::as_i64).unwrap_or(0);
    match what {
        "#pod-ready" => {
            let statuses = obj
                .pointer("/status/containerStatuses")
                .and_then(Value::as_array);
            let ready = statuses
                .map(|a| a.iter().filter(|c| c["ready"] == true).count())
                .unwrap_or(0);
            let total = obj
                .pointer("/spec/containers")
                .and_then(Value::as_array)
                .map(Vec::len)
                .unwrap_or(0);
            json!(format!("{ready}/{total}"))
        }
        "#pod-restarts" => json!(
            obj.pointer("/status/containerStatuses")
                .and_then(Value::as_array)
                .map(|a| a
                    .iter()
                    .filter_map(|c| c["restartCount"].as_i64())
                    .sum::<i64>())
                .unwrap_or(0)
        ),
        "#node-status" => {
            let ready = obj
                .pointer("/status/conditions")
                .and_then(Value::as_array)
                .and_then(|a| a.iter().find(|c| c["type"] == "Ready"))
                .map(|c| c["status"] == "True");
            let mut st = match ready {
                Some(true) => "Ready".to_string(),
                Some(false) => "NotReady".to_string(),
                None => "Unknown".to_string(),
            };
            if obj.pointer("/spec/unschedulable") == Some(&json!(true)) {
                st.push_str(",SchedulingDisabled");
            }
            json!(st)
        }
        "#node-roles" => {
            let mut roles: Vec<String> = obj
                .pointer("/metadata/labels")
                .and_then(Value::as_object)
                .map(|l| {
                    l.keys()
                        .filter_map(|k| {
                            k.strip_prefix("node-role.kubernetes.io/").map(String::from)
                        })
                        .collect()
                })
                .unwrap_or_default();
            roles.sort();
            json!(if roles.is_empty() {
                "<none>".to_string()
            } else {
                roles.join(",")
            })
        }
        "#data-count" => {
            let count = |k: &str| {
                obj.get(k)
                    .and_then(Value::as_object)
                    .map(|m| m.len())
                    .unwrap_or(0)
            };
            json!(count("data") + count("binaryData"))
        }
        "#deploy-ready" => {
            let want = obj
                .pointer("/spec/replicas")
                .and_then(Value::as_i64)
                .unwrap_or(1);
            json!(format!("{}/{want}", n("/status/readyReplicas")))
        }
        "#updated" => json!(n("/status/updatedReplicas")),
        "#available" => json!(n("/status/availableReplicas")),
        _ => Value::Null,
    }
}

fn row(obj: &Value, cols: &[Column]) -> Value {
    let mut cells = vec![json!(
        obj.pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("")
    )];
    for c in cols {
        if c.json_path.starts_with('#') {
            cells.push(computed_cell(obj, &c.json_path));
            continue;
        }
        let vals = jsonpath(obj, &c.json_path);
        let cell = match vals.first() {
            None => Value::Null,
            Some(Value::String(s)) if c.type_ == "date" => json!(age(s)),
            Some(v @ (Value::Number(_) | Value::Bool(_))) if c.type_ != "string" => v.clone(),
            Some(_) => {
                let parts: Vec<String> = vals
                    .iter()
                    .map(|v| match v {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    })
                    .collect();
                json!(parts.join(","))
            }
        };
        cells.push(cell);
    }
    json!({
        "cells": cells,
        "object": {
            "kind": "PartialObjectMetadata",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": obj.get("metadata").cloned().unwrap_or(json!({})),
        },
    })
}

/// Render objects as a `meta.k8s.io/v1` Table.
pub(crate) fn table(
    def: &ResourceDef,
    version: &str,
    objs: &[Value],
    list_meta: Value,
    with_defs: bool,
) -> Value {
    let cols = columns_for(def, version);
    let mut defs = vec![col(
        "Name",
        "string",
        "name",
        "Name must be unique within a namespace.",
        0,
    )];
    for c in &cols {
        let t = if c.type_ == "date" {
            "string"
        } else {
            c.type_.as_str()
        };
        defs.push(col(&c.name, t, &c.format, &c.description, c.priority));
    }
    let rows: Vec<Value> = objs.iter().map(|o| row(o, &cols)).collect();
    let mut t = json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": list_meta,
        "rows": rows,
    });
    if with_defs {
        t["columnDefinitions"] = json!(defs);
    } else {
        t["columnDefinitions"] = json!([]);
    }
    t
}
