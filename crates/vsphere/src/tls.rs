//! rustls configuration (ring provider only: aws-lc is too heavy to build on our machines).

use std::sync::Arc;

use rustls::DigitallySignedStruct;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use sha2::{Digest, Sha256};

use crate::error::Error;

/// How the client trusts the vCenter certificate.
///
/// Verification is on by default against the system roots. A CA bundle replaces the system
/// roots (vCenter usually presents a VMCA-issued certificate). A thumbprint pin accepts
/// exactly the certificate with that SHA-256 fingerprint, as `govc --thumbprint` does, which
/// is how administrators trust self-signed vCenters without a CA.
#[derive(Clone, Default)]
pub struct TlsOptions {
    /// PEM bundle of trusted CAs; when set, system roots are not used.
    pub ca_pem: Option<Vec<u8>>,
    /// SHA-256 thumbprint of the server's leaf certificate (hex, colons optional).
    pub thumbprint_sha256: Option<String>,
    /// Accept any certificate. Explicit opt-in for labs only; logged as a warning.
    pub insecure: bool,
}

impl std::fmt::Debug for TlsOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsOptions")
            .field(
                "ca_pem",
                &self.ca_pem.as_ref().map(|p| format!("{} bytes", p.len())),
            )
            .field("thumbprint_sha256", &self.thumbprint_sha256)
            .field("insecure", &self.insecure)
            .finish()
    }
}

impl TlsOptions {
    /// Trust exactly the CAs in this PEM bundle.
    pub fn with_ca_pem(pem: impl Into<Vec<u8>>) -> Self {
        Self {
            ca_pem: Some(pem.into()),
            ..Self::default()
        }
    }

    /// Pin the server certificate's SHA-256 thumbprint.
    pub fn with_thumbprint(thumbprint: impl Into<String>) -> Self {
        Self {
            thumbprint_sha256: Some(thumbprint.into()),
            ..Self::default()
        }
    }

    /// Disable verification (explicit opt-in).
    pub fn insecure() -> Self {
        Self {
            insecure: true,
            ..Self::default()
        }
    }

    /// Stable fingerprint of the trust settings, for the session cache key.
    pub(crate) fn fingerprint(&self) -> String {
        let mut h = Sha256::new();
        h.update(self.ca_pem.as_deref().unwrap_or_default());
        h.update([0]);
        h.update(self.thumbprint_sha256.as_deref().unwrap_or_default());
        h.update([u8::from(self.insecure)]);
        hex::encode(h.finalize())
    }
}

/// SHA-256 thumbprint of a DER certificate, as lowercase hex without separators.
pub fn thumbprint_sha256(der: &[u8]) -> String {
    hex::encode(Sha256::digest(der))
}

fn normalise_thumbprint(t: &str) -> Result<Vec<u8>, Error> {
    let clean: String = t.chars().filter(|c| !matches!(c, ':' | ' ')).collect();
    let bytes = hex::decode(clean.to_ascii_lowercase())
        .map_err(|_| Error::Config(format!("thumbprint {t:?} is not hex")))?;
    if bytes.len() != 32 {
        return Err(Error::Config(format!(
            "thumbprint {t:?} is not a SHA-256 thumbprint (32 bytes)"
        )));
    }
    Ok(bytes)
}

pub(crate) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Builds the rustls client configuration for the given trust options.
pub(crate) fn client_config(opts: &TlsOptions) -> Result<rustls::ClientConfig, Error> {
    let provider = provider();
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Config(format!("TLS setup: {e}")))?;
    let algs = provider.signature_verification_algorithms;
    let config = if opts.insecure {
        tracing::warn!("TLS verification disabled by explicit insecure opt-in");
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Verifier { pin: None, algs }))
            .with_no_client_auth()
    } else if let Some(t) = &opts.thumbprint_sha256 {
        let pin = normalise_thumbprint(t)?;
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Verifier {
                pin: Some(pin),
                algs,
            }))
            .with_no_client_auth()
    } else {
        let mut roots = rustls::RootCertStore::empty();
        if let Some(pem) = &opts.ca_pem {
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem)
                .collect::<Result<_, _>>()
                .map_err(|e| Error::Config(format!("CA bundle is not valid PEM: {e}")))?;
            if certs.is_empty() {
                return Err(Error::Config("CA bundle contains no certificate".into()));
            }
            for c in certs {
                roots
                    .add(c)
                    .map_err(|e| Error::Config(format!("CA bundle certificate rejected: {e}")))?;
            }
        } else {
            let native = rustls_native_certs::load_native_certs();
            let (added, _) = roots.add_parsable_certificates(native.certs);
            if added == 0 {
                return Err(Error::Config(
                    "no system CA certificates found; provide the vCenter CA bundle".into(),
                ));
            }
        }
        let webpki = rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            provider.clone(),
        )
        .build()
        .map_err(|e| Error::Config(format!("TLS verifier: {e}")))?;
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Annotating { inner: webpki }))
            .with_no_client_auth()
    };
    Ok(config)
}

/// Standard WebPKI verification whose failures name the presented certificate's thumbprint,
/// so an administrator can check it and pin it or fetch the right CA.
#[derive(Debug)]
struct Annotating {
    inner: Arc<rustls::client::WebPkiServerVerifier>,
}

#[derive(Debug)]
struct Annotated(String);

impl std::fmt::Display for Annotated {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Annotated {}

impl ServerCertVerifier for Annotating {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.inner
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
            .map_err(|e| {
                let inner = match &e {
                    rustls::Error::InvalidCertificate(c) => c.to_string(),
                    other => other.to_string(),
                };
                rustls::Error::InvalidCertificate(rustls::CertificateError::Other(
                    rustls::OtherError(Arc::new(Annotated(format!(
                        "{inner} (server certificate SHA-256 thumbprint {})",
                        thumbprint_sha256(end_entity)
                    )))),
                ))
            })
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// Verifier for thumbprint pinning (`pin: Some`) and the insecure opt-in (`pin: None`).
/// Handshake signatures are still checked, so a pinned certificate proves key possession.
#[derive(Debug)]
struct Verifier {
    pin: Option<Vec<u8>>,
    algs: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match &self.pin {
            None => Ok(ServerCertVerified::assertion()),
            Some(pin) if Sha256::digest(end_entity.as_ref()).as_slice() == pin.as_slice() => {
                Ok(ServerCertVerified::assertion())
            }
            Some(_) => Err(rustls::Error::General(format!(
                "certificate thumbprint {} does not match the pinned thumbprint",
                thumbprint_sha256(end_entity)
            ))),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.algs.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thumbprints_accept_colons_and_case() {
        let t = "AB:".repeat(31) + "AB";
        assert_eq!(normalise_thumbprint(&t).unwrap(), vec![0xab; 32]);
        assert!(normalise_thumbprint("abcd").is_err());
        assert!(normalise_thumbprint("zz").is_err());
    }

    #[test]
    fn garbage_ca_bundle_is_a_config_error() {
        let err = client_config(&TlsOptions::with_ca_pem(b"not a pem".to_vec())).unwrap_err();
        assert!(matches!(err, Error::Config(_)), "{err}");
    }
}
