//! Authentication (bearer tokens) and RBAC authorisation against the Roles,
//! ClusterRoles and bindings stored in the server itself, evaluated per request the
//! way the real RBAC authoriser does (union of all matching rules, no denies).

use std::collections::HashMap;

use serde_json::Value;

use crate::store::Store;

/// An authenticated identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserInfo {
    /// User name, e.g. `system:serviceaccount:ns:name`.
    pub name: String,
    /// Groups the user belongs to.
    pub groups: Vec<String>,
}

impl UserInfo {
    /// The identity of a service account, with the groups the real server assigns.
    pub fn service_account(ns: &str, name: &str) -> Self {
        UserInfo {
            name: format!("system:serviceaccount:{ns}:{name}"),
            groups: vec![
                "system:serviceaccounts".into(),
                format!("system:serviceaccounts:{ns}"),
                "system:authenticated".into(),
            ],
        }
    }
    pub(crate) fn is_superuser(&self) -> bool {
        self.groups.iter().any(|g| g == "system:masters")
    }
}

/// Token to identity map.
#[derive(Debug, Default)]
pub(crate) struct Tokens(HashMap<String, UserInfo>);

impl Tokens {
    pub fn insert(&mut self, token: String, user: UserInfo) {
        self.0.insert(token, user);
    }
    pub fn lookup(&self, token: &str) -> Option<UserInfo> {
        self.0.get(token).cloned()
    }
}

/// What a request wants to do.
#[derive(Debug, Clone)]
pub(crate) struct Attributes {
    pub verb: String,
    pub group: String,
    pub resource: String,
    pub subresource: String,
    pub name: String,
    pub namespace: String,
    /// Set for non-resource requests (`/version`, `/healthz`).
    pub path: Option<String>,
}

fn strs(v: &Value, k: &str) -> Vec<String> {
    v.get(k)
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

fn has(list: &[String], want: &str) -> bool {
    list.iter().any(|x| x == "*" || x == want)
}

fn rule_allows(rule: &Value, a: &Attributes) -> bool {
    if !has(&strs(rule, "verbs"), &a.verb) {
        return false;
    }
    if let Some(path) = &a.path {
        return strs(rule, "nonResourceURLs").iter().any(|u| {
            u == "*" || u == path || (u.ends_with('*') && path.starts_with(u.trim_end_matches('*')))
        });
    }
    if !has(&strs(rule, "apiGroups"), &a.group) {
        return false;
    }
    let resources = strs(rule, "resources");
    let combined = if a.subresource.is_empty() {
        a.resource.clone()
    } else {
        format!("{}/{}", a.resource, a.subresource)
    };
    let res_ok = resources.iter().any(|r| {
        r == "*"
            || *r == combined
            || (a.subresource.is_empty() && r == &a.resource)
            || (!a.subresource.is_empty() && *r == format!("*/{}", a.subresource))
            || (a.subresource.is_empty()
                && r.ends_with("/*")
                && r.trim_end_matches("/*") == a.resource)
    });
    if !res_ok {
        return false;
    }
    let names = strs(rule, "resourceNames");
    names.is_empty() || (!a.name.is_empty() && names.contains(&a.name))
}

fn subject_matches(s: &Value, user: &UserInfo, binding_ns: &str) -> bool {
    let kind = s.get("kind").and_then(Value::as_str).unwrap_or("");
    let name = s.get("name").and_then(Value::as_str).unwrap_or("");
    match kind {
        "User" => name == user.name,
        "Group" => user.groups.iter().any(|g| g == name),
        "ServiceAccount" => {
            let ns = s
                .get("namespace")
                .and_then(Value::as_str)
                .filter(|n| !n.is_empty())
                .unwrap_or(binding_ns);
            user.name == format!("system:serviceaccount:{ns}:{name}")
        }
        _ => false,
    }
}

fn role_rules(store: &Store, binding: &Value, binding_ns: &str) -> Vec<Value> {
    let kind = binding
        .pointer("/roleRef/kind")
        .and_then(Value::as_str)
        .unwrap_or("");
    let name = binding
        .pointer("/roleRef/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    let role = match kind {
        "ClusterRole" => store.get("rbac.authorization.k8s.io/clusterroles", "", name),
        "Role" => store.get("rbac.authorization.k8s.io/roles", binding_ns, name),
        _ => None,
    };
    role.and_then(|r| r.get("rules").and_then(Value::as_array).cloned())
        .unwrap_or_default()
}

/// Whether `user` may do `a`, according to the RBAC objects in `store`.
pub(crate) fn authorize(store: &Store, user: &UserInfo, a: &Attributes) -> bool {
    if user.is_superuser() {
        return true;
    }
    // The default `system:basic-user` binding: anyone may ask what they may do.
    if a.verb == "create"
        && a.group == "authorization.k8s.io"
        && (a.resource == "selfsubjectaccessreviews" || a.resource == "selfsubjectrulesreviews")
    {
        return true;
    }
    // The default `system:discovery` / `system:public-info-viewer` bindings.
    if let Some(p) = &a.path
        && a.verb == "get"
        && (p == "/version"
            || p == "/api"
            || p == "/apis"
            || p.starts_with("/api/")
            || p.starts_with("/apis/")
            || p.starts_with("/openapi")
            || p == "/healthz"
            || p == "/livez"
            || p == "/readyz")
    {
        return true;
    }
    let check = |binding: &Value, bns: &str| {
        binding
            .get("subjects")
            .and_then(Value::as_array)
            .is_some_and(|subs| subs.iter().any(|s| subject_matches(s, user, bns)))
            && role_rules(store, binding, bns)
                .iter()
                .any(|r| rule_allows(r, a))
    };
    if let Some(crbs) = store.map("rbac.authorization.k8s.io/clusterrolebindings")
        && crbs.values().any(|b| check(b, ""))
    {
        return true;
    }
    if !a.namespace.is_empty()
        && let Some(rbs) = store.map("rbac.authorization.k8s.io/rolebindings")
    {
        use std::ops::Bound;
        let lower = Bound::Included((a.namespace.clone(), String::new()));
        for ((ns, _), b) in rbs.range((lower, Bound::Unbounded)) {
            if *ns != a.namespace {
                break;
            }
            if check(b, ns) {
                return true;
            }
        }
    }
    false
}

/// The real server's Forbidden message.
pub(crate) fn forbidden_message(user: &UserInfo, a: &Attributes) -> String {
    if let Some(p) = &a.path {
        return format!(
            "forbidden: User \"{}\" cannot {} path \"{p}\"",
            user.name, a.verb
        );
    }
    let res = if a.subresource.is_empty() {
        a.resource.clone()
    } else {
        format!("{}/{}", a.resource, a.subresource)
    };
    let qual = crate::error::qualified(&a.group, &a.resource);
    let subject = if a.name.is_empty() {
        format!("{qual} is forbidden")
    } else {
        format!("{qual} \"{}\" is forbidden", a.name)
    };
    let scope = if a.namespace.is_empty() {
        "at the cluster scope".to_string()
    } else {
        format!("in the namespace \"{}\"", a.namespace)
    };
    format!(
        "{subject}: User \"{}\" cannot {} resource \"{res}\" in API group \"{}\" {scope}",
        user.name, a.verb, a.group
    )
}
