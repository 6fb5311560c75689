//! Bridges a difference between kube-cel 0.8 and the real API server.
//!
//! Kubernetes exposes a property such as `machines_v1beta1_machine_openshift_io`
//! to CEL under its own name (only `__`, `.`, `-`, `/` and reserved words are
//! escaped). kube-cel 0.8 escapes every single `_` to `__`, so a rule that reads
//! `self.machines_v1beta1_machine_openshift_io` — as OpenShift's
//! ControlPlaneMachineSet CRD does — never sees the field and rejects valid
//! objects. Until kube-cel matches the server, member names in rules are
//! rewritten into kube-cel's spelling before compilation.

use serde_json::Value;

/// A copy of `schema` whose `x-kubernetes-validations` rules use kube-cel's
/// spelling of member names that contain `_`.
pub fn adapt_schema(schema: &Value) -> Value {
    let mut out = schema.clone();
    walk(&mut out);
    out
}

fn walk(v: &mut Value) {
    match v {
        Value::Object(map) => {
            if let Some(Value::Array(rules)) = map.get_mut("x-kubernetes-validations") {
                for r in rules.iter_mut() {
                    if let Some(Value::String(rule)) = r.get_mut("rule") {
                        *rule = adapt_rule(rule);
                    }
                }
            }
            for (_, child) in map.iter_mut() {
                walk(child);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(walk),
        _ => {}
    }
}

/// Rewrites `.name_with_underscores` member accesses (not method calls, not
/// inside string literals) into kube-cel's escaped form.
pub fn adapt_rule(rule: &str) -> String {
    let chars: Vec<char> = rule.chars().collect();
    let mut out = String::with_capacity(rule.len() + 8);
    let mut i = 0;
    let mut quote: Option<char> = None;
    while i < chars.len() {
        let c = chars[i];
        if let Some(q) = quote {
            out.push(c);
            if c == '\\' && i + 1 < chars.len() {
                out.push(chars[i + 1]);
                i += 2;
                continue;
            }
            if c == q {
                quote = None;
            }
            i += 1;
            continue;
        }
        if c == '\'' || c == '"' {
            quote = Some(c);
            out.push(c);
            i += 1;
            continue;
        }
        if c == '.'
            && i + 1 < chars.len()
            && (chars[i + 1].is_ascii_alphabetic() || chars[i + 1] == '_')
        {
            let start = i + 1;
            let mut end = start;
            while end < chars.len() && (chars[end].is_ascii_alphanumeric() || chars[end] == '_') {
                end += 1;
            }
            let ident: String = chars[start..end].iter().collect();
            let mut next = end;
            while next < chars.len() && chars[next].is_whitespace() {
                next += 1;
            }
            let is_call = next < chars.len() && chars[next] == '(';
            out.push('.');
            if !is_call && ident.contains('_') && !ident.contains("__") {
                out.push_str(&ident.replace('_', "__"));
            } else {
                out.push_str(&ident);
            }
            i = end;
            continue;
        }
        out.push(c);
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_names_with_underscores_are_respelled() {
        assert_eq!(
            adapt_rule(
                "has(self.machineType) && self.machineType == 'machines_v1beta1_machine_openshift_io' ? has(self.machines_v1beta1_machine_openshift_io) : !has(self.machines_v1beta1_machine_openshift_io)"
            ),
            "has(self.machineType) && self.machineType == 'machines_v1beta1_machine_openshift_io' ? has(self.machines__v1beta1__machine__openshift__io) : !has(self.machines__v1beta1__machine__openshift__io)"
        );
    }

    #[test]
    fn macros_literals_and_plain_names_are_untouched() {
        let r = "self.items.exists_one(x, x.name == 'a_b') && self.plain.all(k, k != \"x_y\")";
        assert_eq!(adapt_rule(r), r);
        assert_eq!(adapt_rule("self.a_b.size() > 0"), "self.a__b.size() > 0");
        assert_eq!(adapt_rule("1.5 > 0.5"), "1.5 > 0.5");
    }

    #[test]
    fn the_openshift_cpms_rule_accepts_a_valid_template() {
        let schema = serde_json::json!({"type": "object", "properties": {"machineType": {"type": "string"}, "machines_v1beta1_machine_openshift_io": {"type": "object"}},
            "x-kubernetes-validations": [{"rule": "has(self.machineType) && self.machineType == 'machines_v1beta1_machine_openshift_io' ?  has(self.machines_v1beta1_machine_openshift_io) : !has(self.machines_v1beta1_machine_openshift_io)", "message": "m"}]});
        let ok = serde_json::json!({"machineType": "machines_v1beta1_machine_openshift_io", "machines_v1beta1_machine_openshift_io": {}});
        let missing = serde_json::json!({"machineType": "machines_v1beta1_machine_openshift_io"});
        let v = kube_cel::Validator::new();
        let adapted = adapt_schema(&schema);
        assert!(v.validate(&adapted, &ok, None).is_ok());
        assert!(v.validate(&adapted, &missing, None).is_err());
    }
}
