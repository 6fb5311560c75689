//! The client: transport, sessions (SOAP cookie + REST token), re-login, retries, logging.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use reqwest::header::{CONTENT_TYPE, COOKIE, HeaderValue, SET_COOKIE};
use serde_json::Value;

use crate::error::{Error, RestErrorKind, Result};
use crate::observe::{Api, CallObserver, CallRecord, Secrets, emit};
use crate::tls::{self, TlsOptions};
use crate::xml::{self, Node};
use crate::{MoRef, ServiceContent};

/// SOAP namespace/version sent in `SOAPAction`; supported by vCenter 7.0 and 8.x.
const SOAP_ACTION: &str = "urn:vim25/7.0";
const SOAP_COOKIE: &str = "vmware_soap_session";
const REST_TOKEN_HEADER: &str = "vmware-api-session-id";

/// User name and password. `Debug` never shows the password.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    username: String,
    password: String,
}

impl Credentials {
    /// Credentials for a vCenter user (for example `administrator@vsphere.local`).
    pub fn new(username: impl Into<String>, password: impl Into<String>) -> Self {
        Self {
            username: username.into(),
            password: password.into(),
        }
    }

    /// The user name.
    pub fn username(&self) -> &str {
        &self.username
    }

    pub(crate) fn password(&self) -> &str {
        &self.password
    }
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"***")
            .finish()
    }
}

/// Retries with exponential backoff, applied only to transport failures of idempotent calls.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Total tries including the first (1 = no retry).
    pub attempts: u32,
    /// Delay before the first retry; doubles each time.
    pub initial_backoff: Duration,
    /// Upper bound of one delay.
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            attempts: 3,
            initial_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(2),
        }
    }
}

/// Everything needed to talk to one vCenter as one user.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Server name as in the Infrastructure/Secret (`vcenter.example.com`, `10.0.0.5`), optionally `:port`.
    pub server: String,
    /// vCenter user.
    pub credentials: Credentials,
    /// Certificate trust.
    pub tls: TlsOptions,
    /// Default per-call timeout (override per handle with [`Client::with_timeout`]).
    pub timeout: Duration,
    /// TCP+TLS connect timeout.
    pub connect_timeout: Duration,
    /// Retry policy for transport errors of idempotent calls.
    pub retry: RetryPolicy,
    /// First task poll interval (grows to 1 s).
    pub task_poll_interval: Duration,
}

impl ClientConfig {
    /// Defaults: verified TLS against system roots, 60 s per call, 10 s connect, 3 tries.
    pub fn new(server: impl Into<String>, credentials: Credentials) -> Self {
        Self {
            server: server.into(),
            credentials,
            tls: TlsOptions::default(),
            timeout: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(10),
            retry: RetryPolicy::default(),
            task_poll_interval: Duration::from_millis(100),
        }
    }

    /// Sets the trust options.
    pub fn with_tls(mut self, tls: TlsOptions) -> Self {
        self.tls = tls;
        self
    }

    /// Sets the default per-call timeout.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sets the retry policy.
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }
}

/// Session counters, for tests, benchmarks and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClientStats {
    /// Successful SOAP `Login` calls.
    pub soap_logins: u64,
    /// Successful REST session creations.
    pub rest_logins: u64,
    /// HTTP exchanges (all APIs, retries included).
    pub calls: u64,
    /// Request plus response body bytes of all exchanges.
    pub bytes: u64,
}

#[derive(Debug)]
struct SoapSession {
    cookie: String,
    generation: u64,
}

#[derive(Debug)]
struct RestSession {
    token: String,
    generation: u64,
}

struct Inner {
    server: String,
    base: String,
    credentials: Credentials,
    http: reqwest::Client,
    retry: RetryPolicy,
    poll: Duration,
    content: tokio::sync::OnceCell<ServiceContent>,
    soap: RwLock<Option<Arc<SoapSession>>>,
    soap_login: tokio::sync::Mutex<u64>,
    rest: RwLock<Option<Arc<RestSession>>>,
    rest_login: tokio::sync::Mutex<u64>,
    secrets: Secrets,
    soap_logins: AtomicU64,
    rest_logins: AtomicU64,
    calls: AtomicU64,
    bytes: AtomicU64,
}

/// A vCenter client. Cheap to clone: clones share the sessions.
///
/// Sessions are created lazily on the first call and re-created transparently when vCenter
/// reports them invalid (`NotAuthenticated`, HTTP 401: expiry, termination, restart).
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
    timeout: Duration,
    observer: Option<Arc<dyn CallObserver>>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("server", &self.inner.server)
            .field("user", &self.inner.credentials.username)
            .field("timeout", &self.timeout)
            .finish()
    }
}

fn rw<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn ww<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Client {
    /// Builds a client. No network traffic happens until the first call.
    pub fn new(config: ClientConfig) -> Result<Self> {
        if config.server.is_empty() || config.server.contains('/') {
            return Err(Error::Config(format!(
                "server {:?} must be a host name or address",
                config.server
            )));
        }
        let tls = tls::client_config(&config.tls)?;
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .connect_timeout(config.connect_timeout)
            .pool_idle_timeout(Duration::from_secs(60))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("vcfm-vsphere/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Error::Config(format!("HTTP client: {e}")))?;
        let secrets = Secrets::default();
        secrets.add(config.credentials.password());
        let inner = Inner {
            base: format!("https://{}", config.server),
            server: config.server,
            credentials: config.credentials,
            http,
            retry: config.retry,
            poll: config.task_poll_interval,
            content: tokio::sync::OnceCell::new(),
            soap: RwLock::new(None),
            soap_login: tokio::sync::Mutex::new(0),
            rest: RwLock::new(None),
            rest_login: tokio::sync::Mutex::new(0),
            secrets,
            soap_logins: AtomicU64::new(0),
            rest_logins: AtomicU64::new(0),
            calls: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
        };
        Ok(Self {
            inner: Arc::new(inner),
            timeout: config.timeout,
            observer: None,
        })
    }

    /// The server name.
    pub fn server(&self) -> &str {
        &self.inner.server
    }

    /// The user name.
    pub fn username(&self) -> &str {
        &self.inner.credentials.username
    }

    /// A handle sharing this client's sessions with a different per-call timeout.
    pub fn with_timeout(&self, timeout: Duration) -> Self {
        Self {
            timeout,
            ..self.clone()
        }
    }

    /// A handle sharing this client's sessions that reports every call to `observer`
    /// (for example a [`crate::CallLog`] owned by one phase).
    pub fn with_observer(&self, observer: Arc<dyn CallObserver>) -> Self {
        Self {
            observer: Some(observer),
            ..self.clone()
        }
    }

    /// Session and traffic counters.
    pub fn stats(&self) -> ClientStats {
        ClientStats {
            soap_logins: self.inner.soap_logins.load(Ordering::Relaxed),
            rest_logins: self.inner.rest_logins.load(Ordering::Relaxed),
            calls: self.inner.calls.load(Ordering::Relaxed),
            bytes: self.inner.bytes.load(Ordering::Relaxed),
        }
    }

    pub(crate) fn poll_interval(&self) -> Duration {
        self.inner.poll
    }

    /// Session keys a test call names are redacted like the client's own secrets.
    #[cfg(feature = "sim")]
    pub(crate) fn add_secret(&self, s: &str) {
        self.inner.secrets.add(s);
    }

    pub(crate) fn redact(&self, s: &str) -> String {
        self.inner.secrets.redact(s)
    }

    /// Logs in (SOAP and REST) now instead of on first use; proves the credentials work.
    pub async fn login(&self) -> Result<()> {
        self.soap_session().await?;
        self.rest_session().await?;
        Ok(())
    }

    /// Ends both sessions. Further calls log in again.
    pub async fn logout(&self) -> Result<()> {
        let soap = ww(&self.inner.soap).take();
        let rest = ww(&self.inner.rest).take();
        let mut result = Ok(());
        if let Some(s) = soap {
            let sm = self.service_content().await?.session_manager.clone();
            match self
                .soap_exchange("Logout", &sm, "", Some(&s.cookie), false)
                .await
            {
                Ok(_) | Err(Error::NotAuthenticated { .. }) => {}
                Err(e) => result = Err(e),
            }
        }
        if let Some(r) = rest {
            match self
                .rest_exchange(
                    reqwest::Method::DELETE,
                    "/com/vmware/cis/session",
                    None,
                    Some(&r.token),
                    false,
                )
                .await
            {
                Ok(_)
                | Err(Error::Rest {
                    kind: RestErrorKind::Unauthenticated,
                    ..
                }) => {}
                Err(e) => result = result.and(Err(e)),
            }
        }
        result
    }

    /// Test support: the live SOAP cookie value and REST token, so redaction tests can
    /// assert these exact values never reach a log. Only with the `sim` feature.
    #[cfg(feature = "sim")]
    #[doc(hidden)]
    pub fn session_secrets_for_test(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(s) = rw(&self.inner.soap).as_ref()
            && let Some((_, v)) = s.cookie.split_once('=')
        {
            out.push(v.trim_matches('"').to_string());
        }
        if let Some(r) = rw(&self.inner.rest).as_ref() {
            out.push(r.token.clone());
        }
        out
    }

    // ---------------------------------------------------------------- SOAP

    /// The `ServiceContent`, fetched once per client.
    pub async fn service_content(&self) -> Result<&ServiceContent> {
        self.inner
            .content
            .get_or_try_init(|| async {
                let node = self.retrieve_service_content().await?;
                ServiceContent::from_node(&node)
                    .ok_or_else(|| self.protocol("RetrieveServiceContent", "missing fields"))
            })
            .await
    }

    pub(crate) async fn retrieve_service_content(&self) -> Result<Node> {
        let si = MoRef::new("ServiceInstance", "ServiceInstance");
        let res = self
            .soap_exchange("RetrieveServiceContent", &si, "", None, true)
            .await?;
        res.child("returnval")
            .cloned()
            .ok_or_else(|| self.protocol("RetrieveServiceContent", "no returnval"))
    }

    async fn soap_session(&self) -> Result<Arc<SoapSession>> {
        if let Some(s) = rw(&self.inner.soap).clone() {
            return Ok(s);
        }
        self.soap_relogin(None).await
    }

    /// Logs in unless another task already replaced the session identified by `stale`.
    async fn soap_relogin(&self, stale: Option<u64>) -> Result<Arc<SoapSession>> {
        let mut generation = self.inner.soap_login.lock().await;
        if let Some(cur) = rw(&self.inner.soap).clone()
            && stale != Some(cur.generation)
        {
            return Ok(cur);
        }
        let sm = self.service_content().await?.session_manager.clone();
        let c = &self.inner.credentials;
        let args = format!(
            "{}{}",
            xml::el("userName", &c.username),
            xml::el("password", c.password())
        );
        let (res, cookie) = match self
            .soap_exchange_raw("Login", &sm, &args, None, true)
            .await
        {
            Ok(r) => r,
            Err(e) => return Err(e),
        };
        let cookie =
            cookie.ok_or_else(|| self.protocol("Login", "no session cookie in response"))?;
        if let Some(key) = res.path(&["returnval", "key"]) {
            self.inner.secrets.add(key.text.trim());
        }
        *generation += 1;
        let session = Arc::new(SoapSession {
            cookie,
            generation: *generation,
        });
        *ww(&self.inner.soap) = Some(session.clone());
        self.inner.soap_logins.fetch_add(1, Ordering::Relaxed);
        tracing::info!(target: "vcfm_vsphere::session", server = %self.inner.server, user = %c.username, "SOAP session created");
        Ok(session)
    }

    fn invalid_login(&self) -> Error {
        Error::InvalidLogin {
            server: self.inner.server.clone(),
            user: self.inner.credentials.username.clone(),
        }
    }

    /// Calls a vim25 method on `this` with pre-serialised arguments, re-logging in once when
    /// the session turns out to be invalid. Returns the `<MethodResponse>` element.
    pub(crate) async fn soap(
        &self,
        method: &str,
        this: &MoRef,
        args: &str,
        idempotent: bool,
    ) -> Result<Node> {
        let session = self.soap_session().await?;
        match self
            .soap_exchange(method, this, args, Some(&session.cookie), idempotent)
            .await
        {
            Err(Error::NotAuthenticated { .. }) => {
                tracing::info!(target: "vcfm_vsphere::session", server = %self.inner.server, method, "SOAP session invalid; logging in again");
                let session = self.soap_relogin(Some(session.generation)).await?;
                self.soap_exchange(method, this, args, Some(&session.cookie), idempotent)
                    .await
            }
            other => other,
        }
    }

    async fn soap_exchange(
        &self,
        method: &str,
        this: &MoRef,
        args: &str,
        cookie: Option<&str>,
        idempotent: bool,
    ) -> Result<Node> {
        self.soap_exchange_raw(method, this, args, cookie, idempotent)
            .await
            .map(|(n, _)| n)
    }

    async fn soap_exchange_raw(
        &self,
        method: &str,
        this: &MoRef,
        args: &str,
        cookie: Option<&str>,
        idempotent: bool,
    ) -> Result<(Node, Option<String>)> {
        let body = format!(
            concat!(
                r#"<?xml version="1.0" encoding="UTF-8"?>"#,
                r#"<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" "#,
                r#"xmlns:xsd="http://www.w3.org/2001/XMLSchema" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">"#,
                r#"<soapenv:Body><{m} xmlns="urn:vim25">{this}{args}</{m}></soapenv:Body></soapenv:Envelope>"#
            ),
            m = method,
            this = xml::moref_el("_this", this),
            args = args
        );
        let url = format!("{}/sdk", self.inner.base);
        let target = this.to_string();
        let mut attempt = 0;
        loop {
            attempt += 1;
            let started = Instant::now();
            let mut req = self
                .inner
                .http
                .post(&url)
                .timeout(self.timeout)
                .header(CONTENT_TYPE, "text/xml; charset=utf-8")
                .header("SOAPAction", SOAP_ACTION)
                .body(body.clone());
            if let Some(c) = cookie {
                req = req.header(COOKIE, c);
            }
            let outcome = match req.send().await {
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    let set_cookie = session_cookie(resp.headers().get_all(SET_COOKIE).iter());
                    match resp.text().await {
                        Ok(text) => Ok((status, text, set_cookie)),
                        Err(e) => Err(self.transport_error(method, e)),
                    }
                }
                Err(e) => Err(self.transport_error(method, e)),
            };
            if let Ok((_, _, Some(c))) = &outcome
                && let Some((_, v)) = c.split_once('=')
            {
                self.inner.secrets.add(v);
                self.inner.secrets.add(v.trim_matches('"'));
            }
            let result = match outcome {
                Ok((status, text, set_cookie)) => {
                    self.trace_body(Api::Soap, method, &body, &text);
                    let parsed = self
                        .parse_soap(method, this, status, &text)
                        .map(|n| (n, set_cookie));
                    (parsed, text.len())
                }
                Err(e) => (Err(e), 0),
            };
            let (parsed, resp_len) = result;
            self.record(
                Api::Soap,
                method,
                Some(target.clone()),
                started,
                &parsed,
                body.len(),
                resp_len,
                attempt,
            );
            match parsed {
                Err(e) if idempotent && e.is_transient() && attempt < self.inner.retry.attempts => {
                    tokio::time::sleep(self.backoff(attempt)).await;
                }
                other => return other,
            }
        }
    }

    fn parse_soap(&self, method: &str, this: &MoRef, status: u16, text: &str) -> Result<Node> {
        if matches!(status, 502..=504) {
            return Err(Error::Transport {
                server: self.inner.server.clone(),
                endpoint: method.to_string(),
                message: format!("HTTP {status} (vCenter services unavailable)"),
            });
        }
        if status == 401 {
            return Err(Error::NotAuthenticated {
                server: self.inner.server.clone(),
                method: method.to_string(),
            });
        }
        let root =
            xml::parse(text).map_err(|e| self.protocol(method, &format!("HTTP {status}: {e}")))?;
        let body = root
            .child("Body")
            .ok_or_else(|| self.protocol(method, &format!("HTTP {status}: no SOAP body")))?;
        if let Some(fault) = body.child("Fault") {
            return Err(self.map_fault(method, this, fault));
        }
        if status != 200 {
            return Err(self.protocol(method, &format!("HTTP {status}")));
        }
        body.children
            .first()
            .cloned()
            .ok_or_else(|| self.protocol(method, "empty SOAP body"))
    }

    /// Maps a SOAP fault (or a task's `LocalizedMethodFault.fault`) to an [`Error`].
    pub(crate) fn map_fault(&self, method: &str, this: &MoRef, fault: &Node) -> Error {
        let message = self.redact(fault.child_text("faultstring").unwrap_or_default());
        let detail = fault.child("detail").and_then(|d| d.children.first());
        self.map_fault_detail(method, this, detail, message)
    }

    pub(crate) fn map_fault_detail(
        &self,
        method: &str,
        this: &MoRef,
        detail: Option<&Node>,
        message: String,
    ) -> Error {
        let server = self.inner.server.clone();
        let method = method.to_string();
        let Some(d) = detail else {
            return Error::Fault {
                server,
                method,
                fault: "SOAP fault".into(),
                message,
            };
        };
        let kind = d
            .xsi_type
            .clone()
            .unwrap_or_else(|| d.name.strip_suffix("Fault").unwrap_or(&d.name).to_string());
        let text = |n: &str| d.child_text(n).map(|s| self.redact(s)).unwrap_or_default();
        let obj = |n: &str| {
            d.child(n)
                .and_then(Node::as_moref)
                .map_or_else(|| this.to_string(), |m| m.to_string())
        };
        match kind.as_str() {
            "NotAuthenticated" => Error::NotAuthenticated { server, method },
            "InvalidLogin" => Error::InvalidLogin {
                server,
                user: self.inner.credentials.username.clone(),
            },
            "NoPermission" => Error::NoPermission {
                server,
                method,
                object: obj("object"),
                privilege: text("privilegeId"),
            },
            "DuplicateName" => Error::DuplicateName {
                server,
                method,
                name: text("name"),
                parent: obj("object"),
            },
            "ManagedObjectNotFound" => Error::ManagedObjectNotFound {
                server,
                method,
                object: obj("obj"),
            },
            "InvalidArgument" => Error::InvalidArgument {
                server,
                method,
                property: text("invalidProperty"),
                message,
            },
            _ => Error::Fault {
                server,
                method,
                fault: kind,
                message,
            },
        }
    }

    // ---------------------------------------------------------------- REST

    async fn rest_session(&self) -> Result<Arc<RestSession>> {
        if let Some(s) = rw(&self.inner.rest).clone() {
            return Ok(s);
        }
        self.rest_relogin(None).await
    }

    async fn rest_relogin(&self, stale: Option<u64>) -> Result<Arc<RestSession>> {
        let mut generation = self.inner.rest_login.lock().await;
        if let Some(cur) = rw(&self.inner.rest).clone()
            && stale != Some(cur.generation)
        {
            return Ok(cur);
        }
        let token = match self
            .rest_exchange(
                reqwest::Method::POST,
                "/com/vmware/cis/session",
                None,
                None,
                true,
            )
            .await
        {
            Ok(v) => v
                .as_str()
                .map(str::to_string)
                .ok_or_else(|| self.protocol("POST /com/vmware/cis/session", "no token"))?,
            Err(Error::Rest {
                kind: RestErrorKind::Unauthenticated,
                ..
            }) => return Err(self.invalid_login()),
            Err(e) => return Err(e),
        };
        self.inner.secrets.add(&token);
        *generation += 1;
        let session = Arc::new(RestSession {
            token,
            generation: *generation,
        });
        *ww(&self.inner.rest) = Some(session.clone());
        self.inner.rest_logins.fetch_add(1, Ordering::Relaxed);
        tracing::info!(target: "vcfm_vsphere::session", server = %self.inner.server, user = %self.inner.credentials.username, "REST session created");
        Ok(session)
    }

    /// Calls a vAPI REST endpoint (`path` below `/rest`), re-logging in once on 401.
    /// Returns the response's `value` (Null when absent).
    pub(crate) async fn rest(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
        idempotent: bool,
    ) -> Result<Value> {
        let session = self.rest_session().await?;
        match self
            .rest_exchange(method.clone(), path, body, Some(&session.token), idempotent)
            .await
        {
            Err(Error::Rest {
                kind: RestErrorKind::Unauthenticated,
                ..
            }) => {
                tracing::info!(target: "vcfm_vsphere::session", server = %self.inner.server, path, "REST session invalid; logging in again");
                let session = self.rest_relogin(Some(session.generation)).await?;
                self.rest_exchange(method, path, body, Some(&session.token), idempotent)
                    .await
            }
            other => other,
        }
    }

    async fn rest_exchange(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
        token: Option<&str>,
        idempotent: bool,
    ) -> Result<Value> {
        let url = format!("{}/rest{}", self.inner.base, path);
        let endpoint = format!("{method} {path}");
        let body_text = body.map(Value::to_string).unwrap_or_default();
        let is_session = path == "/com/vmware/cis/session";
        let mut attempt = 0;
        loop {
            attempt += 1;
            let started = Instant::now();
            let mut req = self
                .inner
                .http
                .request(method.clone(), &url)
                .timeout(self.timeout);
            match token {
                Some(t) => match HeaderValue::from_str(t) {
                    Ok(mut v) => {
                        v.set_sensitive(true);
                        req = req.header(REST_TOKEN_HEADER, v);
                    }
                    Err(_) => {
                        return Err(
                            self.protocol(&endpoint, "session token is not a valid header value")
                        );
                    }
                },
                None if is_session && method == reqwest::Method::POST => {
                    let c = &self.inner.credentials;
                    req = req.basic_auth(&c.username, Some(c.password()));
                }
                None => {}
            }
            if body.is_some() {
                req = req
                    .header(CONTENT_TYPE, "application/json")
                    .body(body_text.clone());
            }
            let outcome = match req.send().await {
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    match resp.text().await {
                        Ok(text) => Ok((status, text)),
                        Err(e) => Err(self.transport_error(&endpoint, e)),
                    }
                }
                Err(e) => Err(self.transport_error(&endpoint, e)),
            };
            let (parsed, resp_len) = match outcome {
                Ok((status, text)) => {
                    let parsed = self.parse_rest(&endpoint, status, &text);
                    if is_session && let Ok(Value::String(t)) = &parsed {
                        self.inner.secrets.add(t);
                    }
                    self.trace_body(Api::Rest, &endpoint, &body_text, &text);
                    (parsed, text.len())
                }
                Err(e) => (Err(e), 0),
            };
            self.record(
                Api::Rest,
                &endpoint,
                None,
                started,
                &parsed,
                body_text.len(),
                resp_len,
                attempt,
            );
            match parsed {
                Err(e) if idempotent && e.is_transient() && attempt < self.inner.retry.attempts => {
                    tokio::time::sleep(self.backoff(attempt)).await;
                }
                other => return other,
            }
        }
    }

    fn parse_rest(&self, endpoint: &str, status: u16, text: &str) -> Result<Value> {
        let json: Option<Value> = serde_json::from_str(text).ok();
        if (200..300).contains(&status) {
            return Ok(json
                .and_then(|mut v| v.get_mut("value").map(Value::take))
                .unwrap_or(Value::Null));
        }
        if matches!(status, 502..=504) {
            return Err(Error::Transport {
                server: self.inner.server.clone(),
                endpoint: endpoint.to_string(),
                message: format!("HTTP {status} (vCenter services unavailable)"),
            });
        }
        let kind_str = json
            .as_ref()
            .and_then(|v| v.get("type"))
            .and_then(Value::as_str);
        let message = json
            .as_ref()
            .and_then(|v| v.pointer("/value/messages"))
            .and_then(Value::as_array)
            .map(|msgs| {
                msgs.iter()
                    .filter_map(|m| {
                        m.get("default_message")
                            .and_then(Value::as_str)
                            .or_else(|| m.as_str())
                    })
                    .collect::<Vec<_>>()
                    .join("; ")
            })
            .unwrap_or_default();
        Err(Error::Rest {
            server: self.inner.server.clone(),
            endpoint: endpoint.to_string(),
            kind: RestErrorKind::from_type(kind_str, status),
            status,
            message: self.redact(&message),
        })
    }

    // ---------------------------------------------------------------- plumbing

    fn backoff(&self, attempt: u32) -> Duration {
        let r = &self.inner.retry;
        r.initial_backoff
            .saturating_mul(1 << (attempt - 1).min(16))
            .min(r.max_backoff)
    }

    pub(crate) fn protocol(&self, endpoint: &str, message: &str) -> Error {
        Error::Protocol {
            server: self.inner.server.clone(),
            endpoint: endpoint.to_string(),
            message: message.to_string(),
        }
    }

    fn transport_error(&self, endpoint: &str, e: reqwest::Error) -> Error {
        let server = self.inner.server.clone();
        let endpoint = endpoint.to_string();
        if e.is_timeout() {
            return Error::Timeout {
                server,
                endpoint,
                after: self.timeout,
            };
        }
        if let Some(message) = tls_failure(&e) {
            return Error::Tls { server, message };
        }
        let mut src = std::error::Error::source(&e);
        let mut message = e.to_string();
        while let Some(s) = src {
            message.push_str(": ");
            message.push_str(&s.to_string());
            src = s.source();
        }
        if let Some(url) = e.url() {
            message = message.replace(&format!(" for url ({url})"), "");
        }
        // rustls errors may reach us only as text (wrapped in boxed connector errors).
        if let Some(i) = message
            .find("invalid peer certificate")
            .or_else(|| message.find("certificate thumbprint"))
        {
            return Error::Tls {
                server,
                message: message[i..].to_string(),
            };
        }
        Error::Transport {
            server,
            endpoint,
            message: self.redact(&message),
        }
    }

    fn trace_body(&self, api: Api, method: &str, request: &str, response: &str) {
        if tracing::enabled!(target: "vcfm_vsphere::body", tracing::Level::TRACE) {
            tracing::trace!(
                target: "vcfm_vsphere::body",
                server = %self.inner.server, api = %api, method,
                request = %self.redact(request), response = %self.redact(response),
                "vSphere call bodies"
            );
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn record<T>(
        &self,
        api: Api,
        method: &str,
        target: Option<String>,
        started: Instant,
        result: &Result<T>,
        request_bytes: usize,
        response_bytes: usize,
        attempt: u32,
    ) {
        self.inner.calls.fetch_add(1, Ordering::Relaxed);
        self.inner
            .bytes
            .fetch_add((request_bytes + response_bytes) as u64, Ordering::Relaxed);
        let fault = result.as_ref().err().map(fault_name);
        let record = CallRecord {
            server: self.inner.server.clone(),
            api,
            method: method.to_string(),
            // Morefs of session-scoped objects carry the session key.
            target: target.map(|t| self.redact(&t)),
            duration: started.elapsed(),
            ok: result.is_ok(),
            fault,
            request_bytes,
            response_bytes,
            attempt,
        };
        emit(&record, self.observer.as_ref());
    }
}

/// Short fault name for call records.
fn fault_name(e: &Error) -> String {
    match e {
        Error::InvalidLogin { .. } => "InvalidLogin".into(),
        Error::NotAuthenticated { .. } => "NotAuthenticated".into(),
        Error::NoPermission { privilege, .. } => format!("NoPermission({privilege})"),
        Error::DuplicateName { .. } => "DuplicateName".into(),
        Error::ManagedObjectNotFound { .. } => "ManagedObjectNotFound".into(),
        Error::InvalidArgument { property, .. } => format!("InvalidArgument({property})"),
        Error::Fault { fault, .. } => fault.clone(),
        Error::Rest { kind, status, .. } => format!("{kind} (HTTP {status})"),
        Error::Tls { .. } => "tls".into(),
        Error::Timeout { .. } => "timeout".into(),
        Error::Transport { .. } => "transport".into(),
        Error::Protocol { .. } => "protocol".into(),
        other => other.to_string(),
    }
}

/// Finds a certificate-verification failure in an error chain.
fn tls_failure(e: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(r) = err.downcast_ref::<rustls::Error>() {
            return Some(r.to_string());
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>()
            && let Some(r) = io.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>())
        {
            return Some(r.to_string());
        }
        cur = err.source();
    }
    None
}

/// Extracts `vmware_soap_session=...` from `Set-Cookie` headers.
fn session_cookie<'a>(headers: impl Iterator<Item = &'a HeaderValue>) -> Option<String> {
    headers
        .filter_map(|h| h.to_str().ok())
        .filter_map(|h| h.split(';').next())
        .map(str::trim)
        .find(|c| c.starts_with(SOAP_COOKIE) && c[SOAP_COOKIE.len()..].starts_with('='))
        .map(str::to_string)
}

impl Drop for Inner {
    fn drop(&mut self) {
        let soap = ww(&self.soap).take();
        let rest = ww(&self.rest).take();
        if soap.is_none() && rest.is_none() {
            return;
        }
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let http = self.http.clone();
        let base = self.base.clone();
        let sm = self.content.get().map(|c| c.session_manager.clone());
        let server = self.server.clone();
        handle.spawn(async move {
            if let (Some(s), Some(sm)) = (soap, sm) {
                let body = format!(
                    r#"<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/"><soapenv:Body><Logout xmlns="urn:vim25">{}</Logout></soapenv:Body></soapenv:Envelope>"#,
                    xml::moref_el("_this", &sm)
                );
                let _ = http
                    .post(format!("{base}/sdk"))
                    .timeout(Duration::from_secs(5))
                    .header(CONTENT_TYPE, "text/xml; charset=utf-8")
                    .header("SOAPAction", SOAP_ACTION)
                    .header(COOKIE, s.cookie.as_str())
                    .body(body)
                    .send()
                    .await;
            }
            if let Some(r) = rest
                && let Ok(mut v) = HeaderValue::from_str(&r.token)
            {
                v.set_sensitive(true);
                let _ = http
                    .delete(format!("{base}/rest/com/vmware/cis/session"))
                    .timeout(Duration::from_secs(5))
                    .header(REST_TOKEN_HEADER, v)
                    .send()
                    .await;
            }
            tracing::debug!(target: "vcfm_vsphere::session", server = %server, "best-effort logout on drop done");
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_soap_session_cookie() {
        let hs = [
            HeaderValue::from_static("other=1; Path=/"),
            HeaderValue::from_static("vmware_soap_session=\"52a1\"; Path=/; HttpOnly; Secure"),
        ];
        assert_eq!(
            session_cookie(hs.iter()).as_deref(),
            Some("vmware_soap_session=\"52a1\"")
        );
        assert_eq!(
            session_cookie([HeaderValue::from_static("vmware_soap_sessionx=1")].iter()),
            None
        );
    }

    #[test]
    fn credentials_debug_hides_password() {
        let c = Credentials::new("u", "s3cr3t-pw");
        assert!(!format!("{c:?}").contains("s3cr3t-pw"));
    }

    #[test]
    fn rest_error_kinds_map_from_vapi_types_and_status() {
        assert_eq!(
            RestErrorKind::from_type(Some("com.vmware.vapi.std.errors.already_exists"), 400),
            RestErrorKind::AlreadyExists
        );
        assert_eq!(RestErrorKind::from_type(None, 404), RestErrorKind::NotFound);
        assert_eq!(
            RestErrorKind::from_type(Some("com.vmware.vapi.std.errors.unauthorized"), 403),
            RestErrorKind::Unauthorized
        );
        assert_eq!(
            RestErrorKind::from_type(None, 401),
            RestErrorKind::Unauthenticated
        );
    }
}
