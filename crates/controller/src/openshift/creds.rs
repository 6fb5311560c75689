//! `kube-system/vsphere-creds` and the target credentials Secret: one
//! `<server>.username` / `<server>.password` pair per vCenter. Values are
//! read, never printed: every message names keys only.

use k8s_openapi::api::core::v1::Secret;
use vcfm_vsphere::Credentials;

pub const CREDS_NAMESPACE: &str = "kube-system";
pub const CREDS_NAME: &str = "vsphere-creds";

pub fn username_key(server: &str) -> String {
    format!("{server}.username")
}

pub fn password_key(server: &str) -> String {
    format!("{server}.password")
}

fn value(secret: &Secret, key: &str) -> Option<String> {
    if let Some(v) = secret.data.as_ref().and_then(|d| d.get(key)) {
        return String::from_utf8(v.0.clone()).ok();
    }
    secret
        .string_data
        .as_ref()
        .and_then(|d| d.get(key))
        .cloned()
}

fn secret_name(secret: &Secret) -> String {
    format!(
        "{}/{}",
        secret.metadata.namespace.as_deref().unwrap_or(""),
        secret.metadata.name.as_deref().unwrap_or("")
    )
}

/// Which of the two keys for `server` are missing or empty.
pub fn missing_keys(secret: &Secret, server: &str) -> Vec<String> {
    [username_key(server), password_key(server)]
        .into_iter()
        .filter(|k| value(secret, k).is_none_or(|v| v.is_empty()))
        .collect()
}

/// The credentials for `server`, or a message naming the Secret and the missing keys.
pub fn credentials_for(secret: &Secret, server: &str) -> Result<Credentials, String> {
    let missing = missing_keys(secret, server);
    if !missing.is_empty() {
        return Err(format!(
            "Secret {} has no usable credentials for vCenter {server}: missing or empty key(s) {}",
            secret_name(secret),
            missing.join(", ")
        ));
    }
    match (
        value(secret, &username_key(server)),
        value(secret, &password_key(server)),
    ) {
        (Some(u), Some(p)) => Ok(Credentials::new(u.trim(), p.trim_end_matches(['\r', '\n']))),
        _ => Err(format!(
            "Secret {} has credentials for {server} that are not UTF-8",
            secret_name(secret)
        )),
    }
}

/// vCenter servers that have a credential pair in the Secret.
pub fn servers(secret: &Secret) -> Vec<String> {
    let mut out: Vec<String> = secret
        .data
        .iter()
        .flat_map(|d| d.keys())
        .filter_map(|k| k.strip_suffix(".username").map(str::to_string))
        .collect();
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;
    use std::collections::BTreeMap;

    fn secret(pairs: &[(&str, &str)]) -> Secret {
        let mut data = BTreeMap::new();
        for (k, v) in pairs {
            data.insert(k.to_string(), ByteString(v.as_bytes().to_vec()));
        }
        Secret {
            metadata: kube::api::ObjectMeta {
                name: Some("t".into()),
                namespace: Some("ns".into()),
                ..Default::default()
            },
            data: Some(data),
            ..Default::default()
        }
    }

    #[test]
    fn missing_password_is_named_without_values() {
        let s = secret(&[
            ("vc.example.com.username", "admin"),
            ("vc.example.com.password", ""),
        ]);
        let err = credentials_for(&s, "vc.example.com").unwrap_err();
        assert!(
            err.contains("ns/t") && err.contains("vc.example.com.password"),
            "{err}"
        );
        assert!(!err.contains("admin"), "{err}");
    }

    #[test]
    fn credentials_and_servers_are_found() {
        let s = secret(&[
            ("a.username", "u1"),
            ("a.password", "p1\n"),
            ("b.username", "u2"),
            ("b.password", "p2"),
        ]);
        let c = credentials_for(&s, "a").unwrap();
        assert_eq!(c.username(), "u1");
        assert_eq!(servers(&s), ["a", "b"]);
        assert!(credentials_for(&s, "c").is_err());
    }
}
