//! Structural-schema handling for custom resources: pruning of unknown fields,
//! defaulting (delegated to kube-cel's implementation of the apiserver algorithm)
//! and OpenAPI value validation with the real server's field paths and messages.

use std::collections::HashSet;

use serde_json::{Map, Value};

use crate::error::Cause;

const OBJECT_META_FIELDS: &[&str] = &[
    "name",
    "generateName",
    "namespace",
    "selfLink",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "labels",
    "annotations",
    "ownerReferences",
    "finalizers",
    "managedFields",
];

fn preserves(schema: &Value) -> bool {
    schema
        .get("x-kubernetes-preserve-unknown-fields")
        .and_then(Value::as_bool)
        == Some(true)
}

/// Drop fields the schema does not declare, like the apiserver does on every write;
/// returns the dropped paths (for `fieldValidation=Strict`).
pub(crate) fn prune(schema: &Value, v: &mut Value) -> Vec<String> {
    let mut dropped = Vec::new();
    prune_inner(schema, v, true, "", &mut dropped);
    dropped
}

fn prune_inner(schema: &Value, v: &mut Value, root: bool, path: &str, dropped: &mut Vec<String>) {
    match v {
        Value::Object(map) => {
            let embedded = root
                || schema
                    .get("x-kubernetes-embedded-resource")
                    .and_then(Value::as_bool)
                    == Some(true);
            let props = schema.get("properties").and_then(Value::as_object);
            let addl = schema.get("additionalProperties");
            let keep_all = preserves(schema) || matches!(addl, Some(Value::Bool(true)));
            let keys: Vec<String> = map.keys().cloned().collect();
            for k in keys {
                if embedded
                    && (k == "apiVersion" || k == "kind")
                    && props.is_none_or(|p| !p.contains_key(&k))
                {
                    continue;
                }
                if embedded && k == "metadata" {
                    if let Some(Value::Object(meta)) = map.get_mut("metadata") {
                        meta.retain(|mk, _| OBJECT_META_FIELDS.contains(&mk.as_str()));
                    }
                    continue;
                }
                let cp = child(path, &k);
                if let Some(sub) = props.and_then(|p| p.get(&k)) {
                    // Nulls of non-nullable fields are dropped (then defaulted), like the apiserver.
                    if map.get(&k).is_some_and(Value::is_null)
                        && sub.get("nullable").and_then(Value::as_bool) != Some(true)
                    {
                        map.remove(&k);
                        continue;
                    }
                    if let Some(c) = map.get_mut(&k) {
                        prune_inner(sub, c, false, &cp, dropped);
                    }
                } else if let Some(sub @ Value::Object(_)) = addl {
                    if let Some(c) = map.get_mut(&k) {
                        prune_inner(sub, c, false, &cp, dropped);
                    }
                } else if !keep_all {
                    map.remove(&k);
                    dropped.push(cp);
                }
            }
        }
        Value::Array(items) => {
            if let Some(sub) = schema.get("items") {
                for (i, it) in items.iter_mut().enumerate() {
                    prune_inner(sub, it, false, &format!("{path}[{i}]"), dropped);
                }
            }
        }
        _ => {}
    }
}

/// Apply schema defaults (the apiserver defaults on every read and write).
pub(crate) fn default(schema: &Value, v: &Value) -> Value {
    kube_cel::apply_defaults(schema, v)
}

/// The JSON type name used in the real server's messages.
pub(crate) fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_f64() => "number",
        Value::Number(_) => "integer",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn shown(v: &Value) -> String {
    match v {
        Value::String(s) => format!("\"{s}\""),
        Value::Object(_) | Value::Array(_) => format!("\"{}\"", type_name(v)),
        other => other.to_string(),
    }
}

fn child(path: &str, k: &str) -> String {
    if path.is_empty() {
        k.to_string()
    } else {
        format!("{path}.{k}")
    }
}

/// Validate a value against an OpenAPI v3 structural schema.
pub(crate) fn validate(schema: &Value, v: &Value) -> Vec<Cause> {
    let mut causes = Vec::new();
    validate_inner(schema, v, "", &mut causes, true);
    causes
}

fn invalid(causes: &mut Vec<Cause>, path: &str, v: &Value, msg: String) {
    causes.push(Cause::new(
        "FieldValueInvalid",
        path,
        format!("Invalid value: {}: {msg}", shown(v)),
    ));
}

fn validate_inner(schema: &Value, v: &Value, path: &str, causes: &mut Vec<Cause>, root: bool) {
    let Some(s) = schema.as_object() else { return };
    if v.is_null() {
        if s.get("nullable").and_then(Value::as_bool) == Some(true) || s.is_empty() {
            return;
        }
        if s.get("type").is_some() {
            let t = s.get("type").and_then(Value::as_str).unwrap_or("");
            invalid(
                causes,
                path,
                v,
                format!("{path} in body must be of type {t}: \"null\""),
            );
        }
        return;
    }
    let int_or_string = s.get("x-kubernetes-int-or-string").and_then(Value::as_bool) == Some(true);
    if let Some(t) = s.get("type").and_then(Value::as_str) {
        let ok = match t {
            "object" => v.is_object(),
            "array" => v.is_array(),
            "string" => v.is_string(),
            "integer" => v.is_i64() || v.is_u64(),
            "number" => v.is_number(),
            "boolean" => v.is_boolean(),
            _ => true,
        };
        if !ok {
            invalid(
                causes,
                path,
                v,
                format!("{path} in body must be of type {t}: \"{}\"", type_name(v)),
            );
            return;
        }
    } else if int_or_string && !(v.is_string() || v.is_i64() || v.is_u64()) {
        invalid(
            causes,
            path,
            v,
            format!(
                "{path} in body must be of type integer,string: \"{}\"",
                type_name(v)
            ),
        );
        return;
    }
    if let Some(en) = s.get("enum").and_then(Value::as_array)
        && !en.contains(v)
    {
        let sup: Vec<String> = en.iter().map(|e| e.to_string()).collect();
        causes.push(Cause::new(
            "FieldValueNotSupported",
            path,
            format!(
                "Unsupported value: {}: supported values: {}",
                v,
                sup.join(", ")
            ),
        ));
    }
    match v {
        Value::String(st) => validate_string(s, st, v, path, causes),
        Value::Number(n) => {
            let x = n.as_f64().unwrap_or(0.0);
            if let Some(max) = s.get("maximum").and_then(Value::as_f64) {
                let excl = s.get("exclusiveMaximum").and_then(Value::as_bool) == Some(true);
                if x > max || (excl && x >= max) {
                    let rel = if excl {
                        "less than"
                    } else {
                        "less than or equal to"
                    };
                    invalid(
                        causes,
                        path,
                        v,
                        format!("{path} in body should be {rel} {max}"),
                    );
                }
            }
            if let Some(min) = s.get("minimum").and_then(Value::as_f64) {
                let excl = s.get("exclusiveMinimum").and_then(Value::as_bool) == Some(true);
                if x < min || (excl && x <= min) {
                    let rel = if excl {
                        "greater than"
                    } else {
                        "greater than or equal to"
                    };
                    invalid(
                        causes,
                        path,
                        v,
                        format!("{path} in body should be {rel} {min}"),
                    );
                }
            }
            if let Some(m) = s.get("multipleOf").and_then(Value::as_f64)
                && m != 0.0
                && (x / m).fract() != 0.0
            {
                invalid(
                    causes,
                    path,
                    v,
                    format!("{path} in body should be a multiple of {m}"),
                );
            }
        }
        Value::Array(items) => validate_array(s, items, v, path, causes),
        Value::Object(map) => validate_object(s, map, path, causes, root),
        _ => {}
    }
    validate_junctors(s, v, path, causes);
}

fn validate_string(
    s: &Map<String, Value>,
    st: &str,
    v: &Value,
    path: &str,
    causes: &mut Vec<Cause>,
) {
    let len = st.chars().count() as u64;
    if let Some(max) = s.get("maxLength").and_then(Value::as_u64)
        && len > max
    {
        causes.push(Cause::new(
            "FieldValueTooLong",
            path,
            format!("Too long: may not be more than {max} bytes"),
        ));
    }
    if let Some(min) = s.get("minLength").and_then(Value::as_u64)
        && len < min
    {
        invalid(
            causes,
            path,
            v,
            format!("{path} in body should be at least {min} chars long"),
        );
    }
    if let Some(p) = s.get("pattern").and_then(Value::as_str)
        && let Ok(re) = regex::Regex::new(p)
        && !re.is_match(st)
    {
        invalid(
            causes,
            path,
            v,
            format!("{path} in body should match '{p}'"),
        );
    }
    if let Some(f) = s.get("format").and_then(Value::as_str)
        && let Some(msg) = check_format(f, st)
    {
        invalid(
            causes,
            path,
            v,
            format!("{path} in body must be of type {f}: \"{st}\"{msg}"),
        );
    }
}

/// Cheap checks for the formats the apiserver enforces; `None` if valid or unchecked.
fn check_format(f: &str, s: &str) -> Option<&'static str> {
    let ok = match f {
        "date-time" => s.parse::<jiff::Timestamp>().is_ok(),
        "ipv4" => s.parse::<std::net::Ipv4Addr>().is_ok(),
        "ipv6" => s.parse::<std::net::Ipv6Addr>().is_ok(),
        "uuid" => uuid::Uuid::parse_str(s).is_ok(),
        "byte" => {
            use base64::Engine;
            base64::engine::general_purpose::STANDARD.decode(s).is_ok()
        }
        _ => true,
    };
    if ok { None } else { Some("") }
}

fn validate_array(
    s: &Map<String, Value>,
    items: &[Value],
    v: &Value,
    path: &str,
    causes: &mut Vec<Cause>,
) {
    let n = items.len() as u64;
    if let Some(max) = s.get("maxItems").and_then(Value::as_u64)
        && n > max
    {
        causes.push(Cause::new(
            "FieldValueTooMany",
            path,
            format!("Too many: {n}: must have at most {max} items"),
        ));
    }
    if let Some(min) = s.get("minItems").and_then(Value::as_u64)
        && n < min
    {
        invalid(
            causes,
            path,
            v,
            format!("{path} in body should have at least {min} items"),
        );
    }
    match s.get("x-kubernetes-list-type").and_then(Value::as_str) {
        Some("set") => {
            let mut seen = HashSet::new();
            for (i, it) in items.iter().enumerate() {
                if !seen.insert(it.to_string()) {
                    causes.push(Cause::new(
                        "FieldValueDuplicate",
                        format!("{path}[{i}]"),
                        format!("Duplicate value: {it}"),
                    ));
                }
            }
        }
        Some("map") => {
            let keys: Vec<String> = s
                .get("x-kubernetes-list-map-keys")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|k| k.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default();
            let mut seen = HashSet::new();
            for (i, it) in items.iter().enumerate() {
                let key: Vec<String> = keys
                    .iter()
                    .map(|k| it.get(k).map(|x| x.to_string()).unwrap_or_default())
                    .collect();
                if !seen.insert(key) {
                    let shown: Vec<String> = keys
                        .iter()
                        .map(|k| format!("\"{k}\":{}", it.get(k).unwrap_or(&Value::Null)))
                        .collect();
                    causes.push(Cause::new(
                        "FieldValueDuplicate",
                        format!("{path}[{i}]"),
                        format!(
                            "Duplicate value: map[string]interface {{}}{{{}}}",
                            shown.join(", ")
                        ),
                    ));
                }
            }
        }
        _ => {}
    }
    if let Some(sub) = s.get("items") {
        for (i, it) in items.iter().enumerate() {
            validate_inner(sub, it, &format!("{path}[{i}]"), causes, false);
        }
    }
}

fn validate_object(
    s: &Map<String, Value>,
    map: &Map<String, Value>,
    path: &str,
    causes: &mut Vec<Cause>,
    root: bool,
) {
    if let Some(req) = s.get("required").and_then(Value::as_array) {
        for r in req.iter().filter_map(Value::as_str) {
            if !map.contains_key(r) {
                causes.push(Cause::new(
                    "FieldValueRequired",
                    child(path, r),
                    "Required value",
                ));
            }
        }
    }
    let n = map.len() as u64;
    if let Some(max) = s.get("maxProperties").and_then(Value::as_u64)
        && n > max
    {
        causes.push(Cause::new(
            "FieldValueTooMany",
            path,
            format!("Too many: {n}: must have at most {max} items"),
        ));
    }
    if let Some(min) = s.get("minProperties").and_then(Value::as_u64)
        && n < min
    {
        causes.push(Cause::new(
            "FieldValueInvalid",
            path,
            format!("Invalid value: {n}: {path} in body should have at least {min} properties"),
        ));
    }
    let props = s.get("properties").and_then(Value::as_object);
    for (k, val) in map {
        if root
            && (k == "metadata" || k == "apiVersion" || k == "kind")
            && props.is_none_or(|p| !p.contains_key(k))
        {
            continue;
        }
        if root && k == "metadata" {
            // Only name-related constraints of metadata are honoured, as in the real server.
            if let (Some(ms), Some(name)) = (props.and_then(|p| p.get("metadata")), val.get("name"))
                && let Some(ns) = ms.pointer("/properties/name")
            {
                validate_inner(ns, name, "metadata.name", causes, false);
            }
            continue;
        }
        if let Some(sub) = props.and_then(|p| p.get(k)) {
            validate_inner(sub, val, &child(path, k), causes, false);
        } else if let Some(sub @ Value::Object(_)) = s.get("additionalProperties") {
            validate_inner(sub, val, &format!("{}[{k}]", path), causes, false);
        }
    }
}

fn validate_junctors(s: &Map<String, Value>, v: &Value, path: &str, causes: &mut Vec<Cause>) {
    let passes = |sub: &Value| {
        let mut c = Vec::new();
        validate_inner(sub, v, path, &mut c, false);
        c.is_empty()
    };
    if let Some(all) = s.get("allOf").and_then(Value::as_array) {
        for sub in all {
            validate_inner(sub, v, path, causes, false);
        }
    }
    if let Some(any) = s.get("anyOf").and_then(Value::as_array)
        && !any.iter().any(passes)
    {
        let mut first = Vec::new();
        if let Some(sub) = any.first() {
            validate_inner(sub, v, path, &mut first, false);
        }
        causes.extend(first);
    }
    if let Some(one) = s.get("oneOf").and_then(Value::as_array) {
        let n = one.iter().filter(|sub| passes(sub)).count();
        if n != 1 {
            invalid(
                causes,
                path,
                v,
                format!("{path} in body must validate one and only one schema (oneOf)"),
            );
        }
    }
    if let Some(not) = s.get("not")
        && passes(not)
    {
        invalid(
            causes,
            path,
            v,
            format!("{path} in body should not be valid against the 'not' schema"),
        );
    }
}
