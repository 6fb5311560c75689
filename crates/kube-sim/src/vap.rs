//! ValidatingAdmissionPolicy (admissionregistration.k8s.io/v1), evaluated on
//! create and update like kube-apiserver's `validating` admission plugin
//! (kubernetes `staging/src/k8s.io/apiserver/pkg/admission/plugin/policy/validating`).
//!
//! Supported: `matchConstraints.resourceRules` (groups, versions, resources,
//! operations, `*`), `matchConditions`, `variables` (evaluated in order and
//! bound as `variables`), `validations` with `message`/`messageExpression`/
//! `reason`, `paramKind` with a binding's `paramRef` (by `name`, or by
//! `selector.matchLabels` in `namespace`; one evaluation per param object;
//! `parameterNotFoundAction`), `failurePolicy`, and the `Deny` action.
//! Expressions are CEL with the optional syntax (`a.?b.orValue(x)`) as the
//! apiserver compiles them. Not supported: namespace/object selectors with
//! expressions, `matchResources` on bindings, `auditAnnotations`, `Warn`/`Audit`
//! actions (ignored), `authorizer`. Denials carry the status reason of the
//! validation (422 for `Invalid`, else 403) and the apiserver's message
//! ("ValidatingAdmissionPolicy '<p>' with binding '<b>' denied request: ...").

use std::collections::HashMap;
use std::sync::Arc;

use kube_cel::cel::objects::{Key, Map};
use kube_cel::cel::{Context, Value as CelValue};
use serde_json::Value;

use crate::core::Core;
use crate::error::ApiError;
use crate::registry::{ResourceDef, res_key};

pub(crate) const GROUP: &str = "admissionregistration.k8s.io";
pub(crate) const POLICIES: &str = "validatingadmissionpolicies";
pub(crate) const BINDINGS: &str = "validatingadmissionpolicybindings";

fn strs(v: Option<&Value>) -> Vec<&str> {
    v.and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

fn any_or(list: &[&str], want: &str) -> bool {
    list.iter().any(|x| *x == "*" || *x == want)
}

/// Whether a policy's `matchConstraints.resourceRules` select this request.
fn rules_match(policy: &Value, def: &ResourceDef, version: &str, op: &str) -> bool {
    let Some(rules) = policy
        .pointer("/spec/matchConstraints/resourceRules")
        .and_then(Value::as_array)
    else {
        return false;
    };
    rules.iter().any(|r| {
        any_or(&strs(r.get("apiGroups")), &def.group)
            && any_or(&strs(r.get("apiVersions")), version)
            && any_or(&strs(r.get("resources")), &def.plural)
            && any_or(&strs(r.get("operations")), op)
    })
}

fn compile(src: &str) -> Result<kube_cel::cel::IdedExpr, String> {
    kube_cel::cel::parser::Parser::new()
        .enable_optional_syntax(true)
        .parse(&desugar_optional(src))
        .map_err(|e| format!("compilation failed: {e}"))
}

/// The `cel` crate (0.13) fails `a.?b.c` chains (an absent `b` is an error,
/// and nothing may follow the optional selection), which the apiserver's CEL
/// evaluates to `optional.none()`. Policies use them as
/// `root.?f.g["k"].orValue(d)`: each such chain is rewritten into
/// `__optGet(root, ["f", "g", "k"], d)`, a function with the same meaning.
pub(crate) fn desugar_optional(src: &str) -> String {
    let b = src.as_bytes();
    let mut out = String::with_capacity(src.len());
    let mut i = 0;
    let ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    while i < b.len() {
        if b[i] == b'"' {
            // Copy a string literal unchanged.
            let start = i;
            i += 1;
            while i < b.len() && b[i] != b'"' {
                i += if b[i] == b'\\' { 2 } else { 1 };
            }
            i = (i + 1).min(b.len());
            out.push_str(&src[start..i]);
            continue;
        }
        if b[i] == b'.' && b.get(i + 1) == Some(&b'?') {
            // Root: the identifier just before.
            let mut r = out.len();
            let ob = out.as_bytes();
            while r > 0 && ident(ob[r - 1]) {
                r -= 1;
            }
            let root = out[r..].to_string();
            let mut j = i + 2;
            let mut path: Vec<String> = vec![];
            loop {
                if j < b.len() && ident(b[j]) {
                    let s0 = j;
                    while j < b.len() && ident(b[j]) {
                        j += 1;
                    }
                    path.push(src[s0..j].to_string());
                } else if b.get(j) == Some(&b'[') && b.get(j + 1) == Some(&b'"') {
                    let s0 = j + 2;
                    let Some(end) = src[s0..].find("\"]") else {
                        break;
                    };
                    path.push(src[s0..s0 + end].to_string());
                    j = s0 + end + 2;
                } else {
                    break;
                }
                if src[j..].starts_with(".orValue(") {
                    break;
                }
                if b.get(j) == Some(&b'.') {
                    j += 1;
                }
            }
            if !root.is_empty() && !path.is_empty() && src[j..].starts_with(".orValue(") {
                let args = j + ".orValue(".len();
                let mut depth = 1;
                let mut k = args;
                while k < b.len() && depth > 0 {
                    match b[k] {
                        b'(' | b'[' => depth += 1,
                        b')' | b']' => depth -= 1,
                        b'"' => {
                            k += 1;
                            while k < b.len() && b[k] != b'"' {
                                k += 1;
                            }
                        }
                        _ => {}
                    }
                    k += 1;
                }
                let default = desugar_optional(&src[args..k - 1]);
                out.truncate(r);
                let keys: Vec<String> = path.iter().map(|p| format!("{p:?}")).collect();
                out.push_str(&format!(
                    "__optGet({root}, [{}], {default})",
                    keys.join(", ")
                ));
                i = k;
                continue;
            }
        }
        out.push(b[i] as char);
        i += 1;
    }
    out
}

/// `__optGet(root, keys, default)`: the value at `keys` under `root`, or `default`.
fn opt_get(root: CelValue, keys: CelValue, default: CelValue) -> kube_cel::cel::ResolveResult {
    let CelValue::List(keys) = keys else {
        return Ok(default);
    };
    let mut cur = root;
    for k in keys.iter() {
        let CelValue::String(k) = k else {
            return Ok(default);
        };
        let next = match &cur {
            CelValue::Map(m) => m.map.get(&Key::String(k.clone())).cloned(),
            _ => None,
        };
        match next {
            Some(CelValue::Null) | None => return Ok(default),
            Some(v) => cur = v,
        }
    }
    Ok(cur)
}

fn eval(ctx: &Context, src: &str) -> Result<CelValue, String> {
    let expr = compile(src)?;
    ctx.resolve(&expr).map_err(|e| e.to_string())
}

fn json_to_cel(v: &Value) -> CelValue {
    // The same conversion the CEL crate applies to serde values.
    kube_cel::cel::to_value(v).unwrap_or(CelValue::Null)
}

/// The param objects a binding selects; `None` when its `paramRef` selects none.
fn params(core: &Core, policy: &Value, binding: &Value) -> Option<Vec<Arc<Value>>> {
    let kind = policy.pointer("/spec/paramKind")?;
    let api_version = kind.get("apiVersion")?.as_str()?;
    let group = api_version.rsplit_once('/').map_or("", |(g, _)| g);
    let def = core.registry.by_kind(group, kind.get("kind")?.as_str()?)?;
    let pref = binding.pointer("/spec/paramRef")?;
    let ns = pref.get("namespace").and_then(Value::as_str).unwrap_or("");
    let map = core.store.map(&res_key(&def.group, &def.plural))?;
    let name = pref.get("name").and_then(Value::as_str);
    let labels = pref
        .pointer("/selector/matchLabels")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let found: Vec<Arc<Value>> = map
        .iter()
        .filter(|((o_ns, o_name), o)| {
            (!def.namespaced || o_ns == ns)
                && name.is_none_or(|n| n == o_name)
                && labels
                    .iter()
                    .all(|(k, v)| o.pointer("/metadata/labels").and_then(|l| l.get(k)) == Some(v))
        })
        .map(|(_, o)| o.clone())
        .collect();
    (!found.is_empty()).then_some(found)
}

fn denial(policy: &str, binding: &str, reason: &str, msg: &str) -> ApiError {
    let code = match reason {
        "Invalid" => 422,
        "BadRequest" => 400,
        "Unauthorized" => 401,
        "RequestEntityTooLarge" => 413,
        _ => 403,
    };
    ApiError {
        code,
        reason: reason.to_string(),
        message: format!(
            "ValidatingAdmissionPolicy '{policy}' with binding '{binding}' denied request: {msg}"
        ),
        details: None,
    }
}

/// One evaluation of a policy with one (or no) param object.
fn evaluate(
    policy: &Value,
    object: &Value,
    old: Option<&Value>,
    param: Option<&Value>,
    req: &Value,
) -> Result<Option<(String, String)>, String> {
    let mut ctx = Context::default();
    kube_cel::KubeCelExt::register_all(&mut ctx);
    ctx.add_function("__optGet", opt_get);
    ctx.add_variable_from_value("object", json_to_cel(object));
    ctx.add_variable_from_value("oldObject", old.map(json_to_cel).unwrap_or(CelValue::Null));
    ctx.add_variable_from_value("request", json_to_cel(req));
    if let Some(p) = param {
        ctx.add_variable_from_value("params", json_to_cel(p));
    }
    for c in policy
        .pointer("/spec/matchConditions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let src = c
            .get("expression")
            .and_then(Value::as_str)
            .unwrap_or("true");
        match eval(&ctx, src)? {
            CelValue::Bool(true) => {}
            CelValue::Bool(false) => return Ok(None),
            other => return Err(format!("matchCondition returned {other:?}")),
        }
    }
    let mut vars: HashMap<Key, CelValue> = HashMap::new();
    for v in policy
        .pointer("/spec/variables")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let (Some(name), Some(src)) = (
            v.get("name").and_then(Value::as_str),
            v.get("expression").and_then(Value::as_str),
        ) else {
            continue;
        };
        let val = eval(&ctx, src)?;
        vars.insert(Key::String(Arc::new(name.to_string())), val);
        ctx.add_variable_from_value(
            "variables",
            CelValue::Map(Map {
                map: Arc::new(vars.clone()),
            }),
        );
    }
    for v in policy
        .pointer("/spec/validations")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let src = v
            .get("expression")
            .and_then(Value::as_str)
            .unwrap_or("true");
        match eval(&ctx, src)? {
            CelValue::Bool(true) => {}
            CelValue::Bool(false) => {
                let msg = v
                    .get("messageExpression")
                    .and_then(Value::as_str)
                    .and_then(|m| match eval(&ctx, m) {
                        Ok(CelValue::String(s)) => Some((*s).clone()),
                        _ => None,
                    })
                    .or_else(|| v.get("message").and_then(Value::as_str).map(String::from))
                    .unwrap_or_else(|| format!("failed expression: {src}"));
                let reason = v
                    .get("reason")
                    .and_then(Value::as_str)
                    .unwrap_or("Forbidden")
                    .to_string();
                return Ok(Some((reason, msg)));
            }
            other => return Err(format!("validation returned {other:?}")),
        }
    }
    Ok(None)
}

impl Core {
    /// Runs every bound policy matching this create (`old` = None) or update.
    pub(crate) fn admit_policies(
        &self,
        def: &ResourceDef,
        version: &str,
        obj: &Value,
        old: Option<&Value>,
    ) -> Result<(), ApiError> {
        let (Some(policies), Some(bindings)) = (
            self.store.map(&res_key(GROUP, POLICIES)),
            self.store.map(&res_key(GROUP, BINDINGS)),
        ) else {
            return Ok(());
        };
        let op = if old.is_some() { "UPDATE" } else { "CREATE" };
        let name = obj
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("");
        let ns = obj
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .unwrap_or("");
        let req = serde_json::json!({
            "operation": op, "name": name, "namespace": ns,
            "kind": {"group": def.group, "version": version, "kind": def.kind},
            "resource": {"group": def.group, "version": version, "resource": def.plural},
        });
        for binding in bindings.values() {
            let bname = binding
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or("");
            let Some(pname) = binding.pointer("/spec/policyName").and_then(Value::as_str) else {
                continue;
            };
            if !strs(binding.pointer("/spec/validationActions")).contains(&"Deny") {
                continue;
            }
            let Some(policy) = policies.get(&(String::new(), pname.to_string())) else {
                continue;
            };
            if !rules_match(policy, def, version, op) {
                continue;
            }
            let fail_open = policy
                .pointer("/spec/failurePolicy")
                .and_then(Value::as_str)
                == Some("Ignore");
            let param_list: Vec<Option<Arc<Value>>> = if policy.pointer("/spec/paramKind").is_some()
            {
                match params(self, policy, binding) {
                    Some(list) => list.into_iter().map(Some).collect(),
                    None => {
                        let action = binding
                            .pointer("/spec/paramRef/parameterNotFoundAction")
                            .and_then(Value::as_str)
                            .unwrap_or("Deny");
                        if action == "Allow" {
                            continue;
                        }
                        return Err(denial(
                            pname,
                            bname,
                            "Forbidden",
                            "no params found for policy binding with `Deny` parameterNotFoundAction",
                        ));
                    }
                }
            } else {
                vec![None]
            };
            for p in param_list {
                match evaluate(policy, obj, old, p.as_deref(), &req) {
                    Ok(None) => {}
                    Ok(Some((reason, msg))) => return Err(denial(pname, bname, &reason, &msg)),
                    Err(_) if fail_open => {}
                    Err(e) => {
                        return Err(denial(
                            pname,
                            bname,
                            "Forbidden",
                            &format!("expression evaluation failed: {e}"),
                        ));
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The shape of the machine API's Machine policy: optional field access,
    /// variables, a param object and a message expression.
    fn policy() -> Value {
        json!({"spec": {
            "matchConditions": [{"name": "vsphere",
                "expression": "object.?status.platformStatus.type.orValue(\"\") == \"VSphere\""}],
            "variables": [
                {"name": "fds", "expression": "object.?spec.platformSpec.vsphere.failureDomains.orValue([])"},
                {"name": "r", "expression": "params.?metadata.labels[\"machine.openshift.io/region\"].orValue(\"\")"},
                {"name": "z", "expression": "params.?metadata.labels[\"machine.openshift.io/zone\"].orValue(\"\")"}],
            "validations": [{
                "expression": "variables.r == \"\" || variables.z == \"\" || variables.fds.exists(fd, fd.region == variables.r && fd.zone == variables.z)",
                "messageExpression": "\"in use by Machine '\" + params.metadata.name + \"'\"",
                "reason": "Invalid"}]}})
    }

    fn infra(fds: Value) -> Value {
        json!({"spec": {"platformSpec": {"vsphere": {"failureDomains": fds}}},
            "status": {"platformStatus": {"type": "VSphere"}}})
    }

    #[test]
    fn optional_chains_are_desugared() {
        assert_eq!(
            desugar_optional(r#"object.?status.platformStatus.type.orValue("") == "VSphere""#),
            r#"__optGet(object, ["status", "platformStatus", "type"], "") == "VSphere""#
        );
        assert_eq!(
            desugar_optional(r#"params.?metadata.labels["machine.openshift.io/zone"].orValue("")"#),
            r#"__optGet(params, ["metadata", "labels", "machine.openshift.io/zone"], "")"#
        );
        assert_eq!(
            desugar_optional(r#"object.?spec.x.orValue([]) + ["a.?b"]"#),
            r#"__optGet(object, ["spec", "x"], []) + ["a.?b"]"#
        );
    }

    #[test]
    fn a_policy_with_params_and_variables_denies_and_allows() {
        let m = json!({"metadata": {"name": "w-1",
            "labels": {"machine.openshift.io/region": "r1", "machine.openshift.io/zone": "z1"}}});
        let kept = infra(json!([{"name": "a", "region": "r1", "zone": "z1"}]));
        let gone = infra(json!([{"name": "b", "region": "r2", "zone": "z2"}]));
        let req = json!({"operation": "UPDATE"});
        assert_eq!(evaluate(&policy(), &kept, None, Some(&m), &req), Ok(None));
        assert_eq!(
            evaluate(&policy(), &gone, None, Some(&m), &req),
            Ok(Some(("Invalid".into(), "in use by Machine 'w-1'".into())))
        );
        // Unlabelled Machines and other platforms pass.
        let bare = json!({"metadata": {"name": "x"}});
        assert_eq!(
            evaluate(&policy(), &gone, None, Some(&bare), &req),
            Ok(None)
        );
        let mut other = gone.clone();
        other["status"]["platformStatus"]["type"] = json!("AWS");
        assert_eq!(evaluate(&policy(), &other, None, Some(&m), &req), Ok(None));
        let d = denial("p", "b", "Invalid", "no");
        assert_eq!(d.code, 422);
        assert_eq!(
            d.message,
            "ValidatingAdmissionPolicy 'p' with binding 'b' denied request: no"
        );
    }
}
