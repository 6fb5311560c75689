//! `/metrics` over TLS, answered only for callers the API server vouches for: the
//! bearer token must pass a TokenReview and the user a SubjectAccessReview for `get`
//! on the non-resource URL `/metrics`. This is what controller-runtime's secure metrics
//! server does (sigs.k8s.io/controller-runtime `pkg/metrics/server/server.go` with
//! `pkg/metrics/filters/filters.go` `WithAuthenticationAndAuthorization`), so Prometheus
//! scrapes vcfm the way it scrapes every OpenShift operator.
//!
//! Faithful to that source:
//! - certificate and key come from files (`tls.crt`/`tls.key` in a directory, e.g. the
//!   Secret OpenShift's service CA fills for the metrics Service); a changed file is
//!   picked up without a restart (controller-runtime's `certwatcher`); when the files
//!   are missing a self-signed certificate for `localhost`/127.0.0.1 is served instead;
//! - only `/metrics` is served; any other path is 404 before authentication;
//! - TokenReview results are cached for 1 minute, SubjectAccessReview results for
//!   5 minutes when allowed and 30 seconds when denied; each review is retried with
//!   the same backoff (500 ms, ×1.5, 5 steps) within 10 seconds; failures are not cached;
//! - no or unknown credentials: 401 `Unauthorized`; not allowed: 403
//!   `Authorization denied for user NAME`; the API server unreachable: 500.
//!
//! One deliberate difference: controller-runtime answers a token the TokenReview
//! refuses with 500, because k8s.io/apiserver's `request/bearertoken/bearertoken.go`
//! turns "not authenticated" into an error (`invalid bearer token`) that its filter
//! reports as a server failure. vcfm answers 401 there, as kube-apiserver's own
//! `endpoints/filters/authentication.go` does for the same result, so that Prometheus
//! shows a credentials problem as one.

use crate::metrics::Metrics;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::authorization::v1::{
    NonResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use kube::api::{Api, PostParams};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
use tokio_util::sync::CancellationToken;

/// Where and with which certificate to serve `/metrics` securely.
#[derive(Debug, Clone)]
pub struct SecureMetrics {
    /// Address to bind (e.g. `0.0.0.0:8443`).
    pub addr: SocketAddr,
    /// Directory holding the serving certificate and key; `None` (or missing files)
    /// serves a self-signed certificate.
    pub cert_dir: Option<PathBuf>,
    /// Certificate file name in `cert_dir` (default `tls.crt`).
    pub cert_name: String,
    /// Key file name in `cert_dir` (default `tls.key`).
    pub key_name: String,
}

impl SecureMetrics {
    /// Serves on `addr` with the certificate in `cert_dir` (`tls.crt`, `tls.key`).
    pub fn new(addr: SocketAddr, cert_dir: Option<PathBuf>) -> Self {
        Self {
            addr,
            cert_dir,
            cert_name: "tls.crt".into(),
            key_name: "tls.key".into(),
        }
    }
}

/// Why the secure metrics server could not start.
#[derive(Debug, thiserror::Error)]
pub enum SecureMetricsError {
    #[error("metrics server on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("metrics server TLS: {0}")]
    Tls(String),
}

/// controller-runtime `filters.go`: TokenReview cache TTL (success and failure).
const TOKEN_TTL: Duration = Duration::from_secs(60);
/// controller-runtime `filters.go`: SubjectAccessReview allow/deny cache TTLs.
const ALLOW_TTL: Duration = Duration::from_secs(300);
const DENY_TTL: Duration = Duration::from_secs(30);
/// controller-runtime `filters.go`: `TokenAccessReviewTimeout`; also bounds the SAR here.
const REVIEW_TIMEOUT: Duration = Duration::from_secs(10);
/// Entries kept per cache before expired ones are swept.
const CACHE_SWEEP_AT: usize = 1024;

/// Binds the listener (so that a taken port stops the process at start) and returns
/// the server to spawn.
pub async fn bind(opts: &SecureMetrics) -> Result<SecureServer, SecureMetricsError> {
    let resolver = Arc::new(CertSource::new(opts)?);
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| SecureMetricsError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    // HTTP/1.1 only, as kubebuilder's scaffolded main.go sets for the metrics server
    // (`enable-http2` false: the HTTP/2 Rapid Reset CVEs); the product links no HTTP/2.
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    let listener = tokio::net::TcpListener::bind(opts.addr)
        .await
        .map_err(|source| SecureMetricsError::Bind {
            addr: opts.addr,
            source,
        })?;
    Ok(SecureServer {
        listener,
        acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(cfg)),
    })
}

/// A bound, not yet serving, secure metrics server.
pub struct SecureServer {
    listener: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
}

impl std::fmt::Debug for SecureServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecureServer")
            .field("addr", &self.listener.local_addr().ok())
            .finish()
    }
}

impl SecureServer {
    /// Serves until `shutdown`; each connection on its own task, its handshake bounded.
    pub async fn serve(
        self,
        client: kube::Client,
        metrics: Arc<Metrics>,
        shutdown: CancellationToken,
    ) {
        let state = Arc::new(State {
            reviewer: Reviewer::new(client),
            metrics,
        });
        tracing::info!(addr = ?self.listener.local_addr().ok(), "serving /metrics over TLS with TokenReview/SubjectAccessReview");
        loop {
            let (tcp, _) = tokio::select! {
                _ = shutdown.cancelled() => return,
                r = self.listener.accept() => match r {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::warn!(error = %e, "metrics server: accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let acceptor = self.acceptor.clone();
            let state = state.clone();
            let stop = shutdown.clone();
            tokio::spawn(async move {
                let Ok(Ok(tls)) =
                    tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await
                else {
                    return;
                };
                let svc = hyper::service::service_fn(move |req| {
                    let state = state.clone();
                    async move { Ok::<_, std::convert::Infallible>(handle(req, &state).await) }
                });
                let mut builder = hyper_util::server::conn::auto::Builder::new(
                    hyper_util::rt::TokioExecutor::new(),
                );
                // controller-runtime's httpserver.New: headers within 32 s (no slowloris).
                builder
                    .http1()
                    .timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(Duration::from_secs(32));
                let conn = builder.serve_connection(hyper_util::rt::TokioIo::new(tls), svc);
                tokio::select! {
                    _ = conn => {}
                    _ = stop.cancelled() => {}
                }
            });
        }
    }
}

struct State {
    reviewer: Reviewer,
    metrics: Arc<Metrics>,
}

/// Go's `http.Error`: plain text, a trailing newline, no sniffing.
fn text(code: StatusCode, body: &str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(format!("{body}\n"))));
    *r.status_mut() = code;
    let h = r.headers_mut();
    h.insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h.insert(
        "x-content-type-options",
        hyper::header::HeaderValue::from_static("nosniff"),
    );
    r
}

async fn handle(req: Request<Incoming>, state: &State) -> Response<Full<Bytes>> {
    // controller-runtime registers the filtered handler on `/metrics` only.
    if req.uri().path() != "/metrics" {
        return text(StatusCode::NOT_FOUND, "404 page not found");
    }
    let user = match state.reviewer.authenticate(req.headers()).await {
        Ok(Some(u)) => u,
        Ok(None) => return text(StatusCode::UNAUTHORIZED, "Unauthorized"),
        Err(e) => {
            tracing::error!(error = %e, "metrics: authentication failed");
            return text(StatusCode::INTERNAL_SERVER_ERROR, "Authentication failed");
        }
    };
    let verb = req.method().as_str().to_ascii_lowercase();
    match state
        .reviewer
        .authorize(&user, &verb, req.uri().path())
        .await
    {
        Ok(true) => {
            let mut r = Response::new(Full::new(Bytes::from(state.metrics.encode())));
            r.headers_mut().insert(
                hyper::header::CONTENT_TYPE,
                hyper::header::HeaderValue::from_static(
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                ),
            );
            r
        }
        Ok(false) => {
            tracing::debug!(user = %user.username, "metrics: authorization denied");
            text(
                StatusCode::FORBIDDEN,
                &format!("Authorization denied for user {}", user.username),
            )
        }
        Err(e) => {
            let msg = format!("Authorization for user {} failed", user.username);
            tracing::error!(error = %e, "{msg}");
            text(StatusCode::INTERNAL_SERVER_ERROR, &msg)
        }
    }
}

/// Who the TokenReview said the caller is.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct User {
    username: String,
    uid: String,
    groups: Vec<String>,
    extra: BTreeMap<String, Vec<String>>,
}

/// A value and until when it may be used.
type Cache<K, V> = HashMap<K, (V, Instant)>;

/// TokenReviews and SubjectAccessReviews with their caches.
struct Reviewer {
    client: kube::Client,
    /// By SHA-256 of the token (tokens themselves are not kept): the user, or none.
    tokens: Mutex<Cache<[u8; 32], Option<User>>>,
    /// By user and request: allowed, and until when.
    decisions: Mutex<Cache<(User, String, String), bool>>,
}

/// The bearer token of a request as k8s.io/apiserver's `bearertoken.go` reads it:
/// `Authorization: Bearer TOKEN`, the scheme case-insensitive, an empty token none.
fn bearer(headers: &hyper::HeaderMap) -> Option<&str> {
    let auth = headers
        .get(hyper::header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .trim();
    let mut parts = auth.split(' ');
    let scheme = parts.next()?;
    let token = parts.next()?;
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// The webhook retry rule of k8s.io/apiserver (`util/webhook/webhook.go`,
/// `DefaultShouldRetry`): transport errors, 500, 504 and 429 are transient.
fn transient(e: &kube::Error) -> bool {
    match e {
        kube::Error::Api(s) => matches!(s.code, 429 | 500 | 504),
        kube::Error::HyperError(_) | kube::Error::Service(_) => true,
        _ => false,
    }
}

/// Runs `call` with controller-runtime's review backoff (500 ms ×1.5, 5 steps),
/// all within [`REVIEW_TIMEOUT`].
async fn with_retries<T, F, Fut>(what: &str, mut call: F) -> Result<T, String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, kube::Error>>,
{
    let attempts = async {
        let mut delay = Duration::from_millis(500);
        let mut last = String::new();
        for step in 0..5 {
            match call().await {
                Ok(v) => return Ok(v),
                Err(e) if transient(&e) && step < 4 => {
                    last = e.to_string();
                    tokio::time::sleep(delay).await;
                    delay = delay.mul_f64(1.5);
                }
                Err(e) => return Err(format!("{what}: {e}")),
            }
        }
        Err(format!("{what}: {last}"))
    };
    tokio::time::timeout(REVIEW_TIMEOUT, attempts)
        .await
        .unwrap_or_else(|_| Err(format!("{what}: no answer in {REVIEW_TIMEOUT:?}")))
}

fn sweep<K, V>(map: &mut HashMap<K, (V, Instant)>) {
    if map.len() >= CACHE_SWEEP_AT {
        let now = Instant::now();
        map.retain(|_, (_, until)| *until > now);
    }
}

impl Reviewer {
    fn new(client: kube::Client) -> Self {
        Self {
            client,
            tokens: Mutex::default(),
            decisions: Mutex::default(),
        }
    }

    /// `Ok(None)`: no bearer token, or one the API server does not accept.
    async fn authenticate(&self, headers: &hyper::HeaderMap) -> Result<Option<User>, String> {
        let Some(token) = bearer(headers) else {
            return Ok(None);
        };
        let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if let Some((user, until)) = self
            .tokens
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
            && *until > Instant::now()
        {
            return Ok(user.clone());
        }
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: token.to_string(),
                audiences: None,
            },
            ..Default::default()
        };
        let api: Api<TokenReview> = Api::all(self.client.clone());
        let pp = PostParams::default();
        let out = with_retries("TokenReview", || api.create(&pp, &review)).await?;
        let status = out.status.unwrap_or_default();
        let user = match (status.authenticated, status.user) {
            (Some(true), Some(u)) => Some(User {
                username: u.username.unwrap_or_default(),
                uid: u.uid.unwrap_or_default(),
                groups: u.groups.unwrap_or_default(),
                extra: u.extra.unwrap_or_default(),
            }),
            _ => None,
        };
        let mut cache = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
        sweep(&mut cache);
        cache.insert(key, (user.clone(), Instant::now() + TOKEN_TTL));
        Ok(user)
    }

    /// Whether `user` may `verb` the non-resource URL `path`.
    async fn authorize(&self, user: &User, verb: &str, path: &str) -> Result<bool, String> {
        let key = (user.clone(), verb.to_string(), path.to_string());
        if let Some((allowed, until)) = self
            .decisions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
            && *until > Instant::now()
        {
            return Ok(*allowed);
        }
        let review = SubjectAccessReview {
            spec: SubjectAccessReviewSpec {
                user: Some(user.username.clone()),
                uid: (!user.uid.is_empty()).then(|| user.uid.clone()),
                groups: Some(user.groups.clone()),
                extra: (!user.extra.is_empty()).then(|| user.extra.clone()),
                non_resource_attributes: Some(NonResourceAttributes {
                    path: Some(path.to_string()),
                    verb: Some(verb.to_string()),
                }),
                ..Default::default()
            },
            ..Default::default()
        };
        let api: Api<SubjectAccessReview> = Api::all(self.client.clone());
        let pp = PostParams::default();
        let out = with_retries("SubjectAccessReview", || api.create(&pp, &review)).await?;
        let allowed = out.status.is_some_and(|s| s.allowed);
        let ttl = if allowed { ALLOW_TTL } else { DENY_TTL };
        let mut cache = self.decisions.lock().unwrap_or_else(|p| p.into_inner());
        sweep(&mut cache);
        cache.insert(key, (allowed, Instant::now() + ttl));
        Ok(allowed)
    }
}

/// The serving certificate: the files when present (reloaded when they change, as
/// controller-runtime's `certwatcher` does after the service CA rotates them), else
/// a self-signed one made at start.
#[derive(Debug)]
struct CertSource {
    files: Option<(PathBuf, PathBuf)>,
    loaded: Mutex<Option<Loaded>>,
    self_signed: Arc<CertifiedKey>,
}

#[derive(Debug)]
struct Loaded {
    stamp: (Option<SystemTime>, Option<SystemTime>),
    key: Arc<CertifiedKey>,
}

fn mtime(p: &std::path::Path) -> Option<SystemTime> {
    std::fs::metadata(p).and_then(|m| m.modified()).ok()
}

fn load_pair(cert: &std::path::Path, key: &std::path::Path) -> Result<CertifiedKey, String> {
    let cert_pem = std::fs::read(cert).map_err(|e| format!("{}: {e}", cert.display()))?;
    let key_pem = std::fs::read(key).map_err(|e| format!("{}: {e}", key.display()))?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{}: {e}", cert.display()))?;
    if chain.is_empty() {
        return Err(format!("{}: no certificate", cert.display()));
    }
    let der =
        PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| format!("{}: {e}", key.display()))?;
    let signer = rustls::crypto::ring::sign::any_supported_type(&der)
        .map_err(|e| format!("{}: {e}", key.display()))?;
    Ok(CertifiedKey::new(chain, signer))
}

impl CertSource {
    fn new(opts: &SecureMetrics) -> Result<Self, SecureMetricsError> {
        // controller-runtime: certutil.GenerateSelfSignedCertKeyWithFixtures("localhost", 127.0.0.1).
        let ss = rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()])
            .map_err(|e| SecureMetricsError::Tls(e.to_string()))?;
        let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(ss.signing_key.serialize_der()));
        let signer = rustls::crypto::ring::sign::any_supported_type(&der)
            .map_err(|e| SecureMetricsError::Tls(e.to_string()))?;
        let self_signed = Arc::new(CertifiedKey::new(vec![ss.cert.der().clone()], signer));
        let files = opts
            .cert_dir
            .as_ref()
            .map(|d| (d.join(&opts.cert_name), d.join(&opts.key_name)));
        let src = Self {
            files,
            loaded: Mutex::new(None),
            self_signed,
        };
        if let Some((c, k)) = &src.files
            && c.exists()
            && k.exists()
        {
            // Present but unusable at start is a configuration error, not a fallback.
            load_pair(c, k).map_err(SecureMetricsError::Tls)?;
        } else {
            tracing::info!("no metrics serving certificate found; serving a self-signed one");
        }
        Ok(src)
    }

    fn current(&self) -> Arc<CertifiedKey> {
        let Some((cert, key)) = &self.files else {
            return self.self_signed.clone();
        };
        let stamp = (mtime(cert), mtime(key));
        let mut loaded = self.loaded.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(l) = loaded.as_ref()
            && l.stamp == stamp
        {
            return l.key.clone();
        }
        if stamp.0.is_none() || stamp.1.is_none() {
            return loaded
                .as_ref()
                .map(|l| l.key.clone())
                .unwrap_or_else(|| self.self_signed.clone());
        }
        match load_pair(cert, key) {
            Ok(k) => {
                let k = Arc::new(k);
                tracing::info!(cert = %cert.display(), "loaded the metrics serving certificate");
                *loaded = Some(Loaded {
                    stamp,
                    key: k.clone(),
                });
                k
            }
            // Half-written during a rotation: keep serving what worked.
            Err(e) => {
                tracing::warn!(error = %e, "metrics serving certificate not reloaded");
                loaded
                    .as_ref()
                    .map(|l| l.key.clone())
                    .unwrap_or_else(|| self.self_signed.clone())
            }
        }
    }
}

impl ResolvesServerCert for CertSource {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn headers(auth: &str) -> hyper::HeaderMap {
        let mut h = hyper::HeaderMap::new();
        h.insert(
            hyper::header::AUTHORIZATION,
            hyper::header::HeaderValue::from_str(auth).unwrap(),
        );
        h
    }

    #[test]
    fn bearer_tokens_are_read_as_the_apiserver_reads_them() {
        assert_eq!(bearer(&headers("Bearer abc")), Some("abc"));
        assert_eq!(bearer(&headers("bearer abc")), Some("abc"));
        assert_eq!(bearer(&headers("  Bearer abc  ")), Some("abc"));
        assert_eq!(bearer(&headers("Basic abc")), None);
        assert_eq!(bearer(&headers("Bearer")), None);
        // bearertoken.go splits on single spaces: a doubled space leaves an empty token.
        assert_eq!(bearer(&headers("Bearer  abc")), None);
        assert_eq!(bearer(&hyper::HeaderMap::new()), None);
    }

    fn write_pair(dir: &std::path::Path, name: &str) -> Vec<u8> {
        let c = rcgen::generate_simple_self_signed(vec![name.to_string()]).unwrap();
        std::fs::write(dir.join("tls.key"), c.signing_key.serialize_pem()).unwrap();
        std::fs::write(dir.join("tls.crt"), c.cert.pem()).unwrap();
        c.cert.der().to_vec()
    }

    fn served(src: &CertSource) -> Vec<u8> {
        src.current().cert[0].to_vec()
    }

    #[test]
    fn the_certificate_files_are_served_and_reloaded_when_they_change() {
        let dir = std::env::temp_dir().join(format!("vcfm-metrics-cert-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let opts = SecureMetrics::new("127.0.0.1:0".parse().unwrap(), Some(dir.clone()));
        // No files yet: the self-signed fallback, then the files once they appear.
        let src = CertSource::new(&opts).unwrap();
        let fallback = served(&src);
        let first = write_pair(&dir, "a.example");
        assert_eq!(served(&src), first);
        assert_ne!(first, fallback);
        // Rotated: the new pair (mtime resolution is coarse on some filesystems).
        std::thread::sleep(Duration::from_millis(1100));
        let second = write_pair(&dir, "b.example");
        assert_eq!(served(&src), second);
        // Half-written during a rotation: the last good pair stays.
        std::thread::sleep(Duration::from_millis(1100));
        std::fs::write(dir.join("tls.crt"), "not a certificate").unwrap();
        assert_eq!(served(&src), second);
        // Unusable files at start are a configuration error.
        assert!(CertSource::new(&opts).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
