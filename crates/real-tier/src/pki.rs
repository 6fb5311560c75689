//! The control plane's throw-away PKI: one CA that signs the apiserver's serving
//! certificate and every client certificate (the apiserver's `--client-ca-file`), and the
//! service-account signing key. Client certificates are how a test becomes any user
//! (`CN` = user name, `O` = group), exactly as envtest's `AddUser` does.

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

use crate::Error;

fn tls_err(e: impl std::fmt::Display) -> Error {
    Error::Pki(e.to_string())
}

/// The CA and what the apiserver needs from it.
pub(crate) struct Pki {
    ca: CertifiedIssuer<'static, KeyPair>,
    pub ca_pem: String,
    pub serving_cert_pem: String,
    pub serving_key_pem: String,
    pub sa_key_pem: String,
    pub sa_pub_pem: String,
}

/// A signed client certificate and its key, PEM.
pub(crate) struct ClientCert {
    pub cert_pem: String,
    pub key_pem: String,
}

impl Pki {
    pub(crate) fn generate() -> Result<Self, Error> {
        let ca_key = KeyPair::generate().map_err(tls_err)?;
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(tls_err)?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "vcfm-real-tier-ca");
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca = CertifiedIssuer::self_signed(ca_params, ca_key).map_err(tls_err)?;

        let key = KeyPair::generate().map_err(tls_err)?;
        let mut params = CertificateParams::new(vec![
            "localhost".to_string(),
            "127.0.0.1".to_string(),
            // The in-cluster name pods use (kube-rs' in-cluster config, TokenRequest audiences).
            "kubernetes.default.svc".to_string(),
        ])
        .map_err(tls_err)?;
        params
            .distinguished_name
            .push(DnType::CommonName, "kube-apiserver");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        let cert = params.signed_by(&key, &ca).map_err(tls_err)?;
        let sa_key = KeyPair::generate().map_err(tls_err)?;
        Ok(Self {
            ca_pem: ca.pem(),
            serving_cert_pem: cert.pem(),
            serving_key_pem: key.serialize_pem(),
            sa_key_pem: sa_key.serialize_pem(),
            sa_pub_pem: sa_key.public_key_pem(),
            ca,
        })
    }

    /// A serving certificate for webhooks the real operators serve on loopback.
    pub(crate) fn serving_cert(&self, hosts: &[&str]) -> Result<ClientCert, Error> {
        let key = KeyPair::generate().map_err(tls_err)?;
        let mut params =
            CertificateParams::new(hosts.iter().map(|h| h.to_string()).collect::<Vec<_>>())
                .map_err(tls_err)?;
        params.distinguished_name.push(
            DnType::CommonName,
            hosts.first().copied().unwrap_or("webhook"),
        );
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let cert = params.signed_by(&key, &self.ca).map_err(tls_err)?;
        Ok(ClientCert {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// A client certificate for `user` in `group` (the apiserver adds `system:authenticated`).
    pub(crate) fn client_cert(&self, user: &str, group: Option<&str>) -> Result<ClientCert, Error> {
        let key = KeyPair::generate().map_err(tls_err)?;
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(tls_err)?;
        params.distinguished_name.push(DnType::CommonName, user);
        if let Some(g) = group {
            params.distinguished_name.push(DnType::OrganizationName, g);
        }
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let cert = params.signed_by(&key, &self.ca).map_err(tls_err)?;
        Ok(ClientCert {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}
