//! Decoding of the Kubernetes protobuf wire format for the few kinds kubectl's typed
//! clients send as protobuf (`kubectl create configmap|secret|namespace|serviceaccount|
//! role|rolebinding|clusterrole|clusterrolebinding`, `kubectl auth can-i`). Objects are
//! converted to JSON and take the normal path; responses are always JSON.

use base64::Engine;
use serde_json::{Map, Value, json};

#[derive(Clone, Copy)]
enum Kind {
    Str,
    Bytes,
    Int,
    Bool,
    Time,
    MapStr,
    MapBytes,
    Msg(&'static [Field]),
}

#[derive(Clone, Copy)]
struct Field {
    num: u64,
    name: &'static str,
    kind: Kind,
    repeated: bool,
}

const fn f(num: u64, name: &'static str, kind: Kind) -> Field {
    Field {
        num,
        name,
        kind,
        repeated: false,
    }
}

const fn r(num: u64, name: &'static str, kind: Kind) -> Field {
    Field {
        num,
        name,
        kind,
        repeated: true,
    }
}

const OWNER_REF: &[Field] = &[
    f(1, "kind", Kind::Str),
    f(3, "name", Kind::Str),
    f(4, "uid", Kind::Str),
    f(5, "apiVersion", Kind::Str),
    f(6, "controller", Kind::Bool),
    f(7, "blockOwnerDeletion", Kind::Bool),
];

const OBJECT_META: &[Field] = &[
    f(1, "name", Kind::Str),
    f(2, "generateName", Kind::Str),
    f(3, "namespace", Kind::Str),
    f(5, "uid", Kind::Str),
    f(6, "resourceVersion", Kind::Str),
    f(7, "generation", Kind::Int),
    f(8, "creationTimestamp", Kind::Time),
    f(11, "labels", Kind::MapStr),
    f(12, "annotations", Kind::MapStr),
    r(13, "ownerReferences", Kind::Msg(OWNER_REF)),
    r(14, "finalizers", Kind::Str),
];

const CONFIG_MAP: &[Field] = &[
    f(1, "metadata", Kind::Msg(OBJECT_META)),
    f(2, "data", Kind::MapStr),
    f(3, "binaryData", Kind::MapBytes),
    f(4, "immutable", Kind::Bool),
];

const SECRET: &[Field] = &[
    f(1, "metadata", Kind::Msg(OBJECT_META)),
    f(2, "data", Kind::MapBytes),
    f(3, "type", Kind::Str),
    f(4, "stringData", Kind::MapStr),
    f(5, "immutable", Kind::Bool),
];

const NAMESPACE: &[Field] = &[
    f(1, "metadata", Kind::Msg(OBJECT_META)),
    f(2, "spec", Kind::Msg(&[r(1, "finalizers", Kind::Str)])),
];

const OBJECT_REF: &[Field] = &[
    f(1, "kind", Kind::Str),
    f(2, "namespace", Kind::Str),
    f(3, "name", Kind::Str),
];

const SERVICE_ACCOUNT: &[Field] = &[
    f(1, "metadata", Kind::Msg(OBJECT_META)),
    r(2, "secrets", Kind::Msg(OBJECT_REF)),
    r(3, "imagePullSecrets", Kind::Msg(&[f(1, "name", Kind::Str)])),
    f(4, "automountServiceAccountToken", Kind::Bool),
];

const POLICY_RULE: &[Field] = &[
    r(1, "verbs", Kind::Str),
    r(2, "apiGroups", Kind::Str),
    r(3, "resources", Kind::Str),
    r(4, "resourceNames", Kind::Str),
    r(5, "nonResourceURLs", Kind::Str),
];

const ROLE: &[Field] = &[
    f(1, "metadata", Kind::Msg(OBJECT_META)),
    r(2, "rules", Kind::Msg(POLICY_RULE)),
];

const BINDING: &[Field] = &[
    f(1, "metadata", Kind::Msg(OBJECT_META)),
    r(
        2,
        "subjects",
        Kind::Msg(&[
            f(1, "kind", Kind::Str),
            f(2, "apiGroup", Kind::Str),
            f(3, "name", Kind::Str),
            f(4, "namespace", Kind::Str),
        ]),
    ),
    f(
        3,
        "roleRef",
        Kind::Msg(&[
            f(1, "apiGroup", Kind::Str),
            f(2, "kind", Kind::Str),
            f(3, "name", Kind::Str),
        ]),
    ),
];

const RESOURCE_ATTRS: &[Field] = &[
    f(1, "namespace", Kind::Str),
    f(2, "verb", Kind::Str),
    f(3, "group", Kind::Str),
    f(4, "version", Kind::Str),
    f(5, "resource", Kind::Str),
    f(6, "subresource", Kind::Str),
    f(7, "name", Kind::Str),
];

const SSAR: &[Field] = &[
    f(1, "metadata", Kind::Msg(OBJECT_META)),
    f(
        2,
        "spec",
        Kind::Msg(&[
            f(1, "resourceAttributes", Kind::Msg(RESOURCE_ATTRS)),
            f(
                2,
                "nonResourceAttributes",
                Kind::Msg(&[f(1, "path", Kind::Str), f(2, "verb", Kind::Str)]),
            ),
        ]),
    ),
];

const DELETE_OPTIONS: &[Field] = &[
    f(1, "gracePeriodSeconds", Kind::Int),
    f(
        2,
        "preconditions",
        Kind::Msg(&[f(1, "uid", Kind::Str), f(2, "resourceVersion", Kind::Str)]),
    ),
    f(3, "orphanDependents", Kind::Bool),
    f(4, "propagationPolicy", Kind::Str),
    r(5, "dryRun", Kind::Str),
];

const TYPE_META: &[Field] = &[f(1, "apiVersion", Kind::Str), f(2, "kind", Kind::Str)];
const UNKNOWN: &[Field] = &[
    f(1, "typeMeta", Kind::Msg(TYPE_META)),
    f(2, "raw", Kind::Bytes),
];

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn varint(&mut self) -> Option<u64> {
        let mut out = 0u64;
        for shift in (0..64).step_by(7) {
            let b = *self.buf.get(self.pos)?;
            self.pos += 1;
            out |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Some(out);
            }
        }
        None
    }
    fn bytes(&mut self) -> Option<&'a [u8]> {
        let n = usize::try_from(self.varint()?).ok()?;
        let buf: &'a [u8] = self.buf;
        let s = buf.get(self.pos..self.pos.checked_add(n)?)?;
        self.pos += n;
        Some(s)
    }
}

enum Raw<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
}

fn fields(buf: &[u8]) -> Option<Vec<(u64, Raw<'_>)>> {
    let mut r = Reader { buf, pos: 0 };
    let mut out = Vec::new();
    while r.pos < buf.len() {
        let key = r.varint()?;
        let (num, wire) = (key >> 3, key & 7);
        match wire {
            0 => out.push((num, Raw::Varint(r.varint()?))),
            1 => r.pos += 8,
            2 => out.push((num, Raw::Bytes(r.bytes()?))),
            5 => r.pos += 4,
            _ => return None,
        }
    }
    Some(out)
}

fn decode(buf: &[u8], schema: &[Field]) -> Option<Value> {
    let mut obj = Map::new();
    for (num, raw) in fields(buf)? {
        let Some(fd) = schema.iter().find(|fd| fd.num == num) else {
            continue;
        };
        let v = match (fd.kind, raw) {
            (Kind::Str, Raw::Bytes(b)) => json!(String::from_utf8_lossy(b)),
            (Kind::Bytes, Raw::Bytes(b)) => {
                json!(base64::engine::general_purpose::STANDARD.encode(b))
            }
            (Kind::Int, Raw::Varint(n)) => json!(n as i64),
            (Kind::Bool, Raw::Varint(n)) => json!(n != 0),
            (Kind::Time, Raw::Bytes(b)) => {
                let secs = fields(b)?
                    .into_iter()
                    .find_map(|(n, r)| match (n, r) {
                        (1, Raw::Varint(s)) => Some(s as i64),
                        _ => None,
                    })
                    .unwrap_or(0);
                match jiff::Timestamp::from_second(secs) {
                    Ok(t) => json!(t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()),
                    Err(_) => Value::Null,
                }
            }
            (Kind::MapStr | Kind::MapBytes, Raw::Bytes(b)) => {
                let mut k = String::new();
                let mut val = Value::String(String::new());
                for (n, r) in fields(b)? {
                    if let Raw::Bytes(x) = r {
                        match n {
                            1 => k = String::from_utf8_lossy(x).into_owned(),
                            2 if matches!(fd.kind, Kind::MapBytes) => {
                                val = json!(base64::engine::general_purpose::STANDARD.encode(x))
                            }
                            2 => val = json!(String::from_utf8_lossy(x)),
                            _ => {}
                        }
                    }
                }
                let entry = obj.entry(fd.name).or_insert_with(|| json!({}));
                if let Some(m) = entry.as_object_mut() {
                    m.insert(k, val);
                }
                continue;
            }
            (Kind::Msg(sub), Raw::Bytes(b)) => decode(b, sub)?,
            _ => return None,
        };
        if fd.repeated {
            let entry = obj.entry(fd.name).or_insert_with(|| json!([]));
            if let Some(a) = entry.as_array_mut() {
                a.push(v);
            }
        } else {
            obj.insert(fd.name.to_string(), v);
        }
    }
    Some(Value::Object(obj))
}

/// Decode a `k8s\0`-prefixed protobuf body into a JSON object, if its kind is known.
pub(crate) fn decode_object(body: &[u8]) -> Result<Value, String> {
    let inner = body
        .strip_prefix(b"k8s\0")
        .ok_or("missing the k8s protobuf envelope prefix")?;
    let unknown = decode(inner, UNKNOWN).ok_or("malformed protobuf envelope")?;
    let api_version = unknown
        .pointer("/typeMeta/apiVersion")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let kind = unknown
        .pointer("/typeMeta/kind")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let raw = unknown
        .get("raw")
        .and_then(Value::as_str)
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
        .unwrap_or_default();
    let schema = match kind.as_str() {
        "ConfigMap" => CONFIG_MAP,
        "Secret" => SECRET,
        "Namespace" => NAMESPACE,
        "ServiceAccount" => SERVICE_ACCOUNT,
        "Role" | "ClusterRole" => ROLE,
        "RoleBinding" | "ClusterRoleBinding" => BINDING,
        "SelfSubjectAccessReview" => SSAR,
        "DeleteOptions" => DELETE_OPTIONS,
        other => {
            return Err(format!(
                "protobuf is not supported by kube-sim for kind {other:?}; use JSON"
            ));
        }
    };
    let mut obj = decode(&raw, schema).ok_or("malformed protobuf object")?;
    obj["apiVersion"] = json!(api_version);
    obj["kind"] = json!(kind);
    Ok(obj)
}
