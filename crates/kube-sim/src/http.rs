//! HTTP front end: request parsing into Kubernetes request attributes, authentication,
//! accounting, fault injection, RBAC, then dispatch to [`Core`]; watches are streamed
//! as newline-delimited JSON events like the real server.

use std::convert::Infallible;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc};

use crate::core::{Core, DeleteOpts, ListOpts, PatchType, at_version};
use crate::discovery;
use crate::error::{ApiError, Cause};
use crate::faults::{FaultAction, FaultRule, Faults, StatKey, Stats, Target};
use crate::rbac::{self, Attributes, Tokens, UserInfo};
use crate::registry::ResourceDef;
use crate::store::{Change, EventType};
use crate::util::{FieldSelector, LabelSelector, parse_query};

pub(crate) type Body = BoxBody<Bytes, std::io::Error>;

/// State shared by all connections.
pub(crate) struct Shared {
    pub core: Mutex<Core>,
    pub tokens: RwLock<Tokens>,
    pub rbac: bool,
    /// Identity of token-less requests (plain-HTTP mode only).
    pub plain_http_admin: Option<UserInfo>,
    pub faults: Faults,
    pub stats: Stats,
    pub bookmark_interval: Duration,
    /// The `WatchList` feature gate: whether a watch may ask for its initial
    /// state (`sendInitialEvents`).
    pub watch_list: bool,
    pub server_address: String,
    pub shutdown: tokio::sync::watch::Receiver<bool>,
    /// Bumped on every CRD change, used as the OpenAPI hash.
    pub epoch: std::sync::atomic::AtomicU64,
    /// Container log files by (namespace, pod, container, previous), served by
    /// `pods/log` as the kubelet serves the files under /var/log/pods.
    pub pod_logs:
        RwLock<std::collections::HashMap<(String, String, String, bool), std::path::PathBuf>>,
}

impl Shared {
    pub fn core(&self) -> std::sync::MutexGuard<'_, Core> {
        self.core.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into())
        .map_err(|never: Infallible| match never {})
        .boxed()
}

fn json_response(code: u16, v: &Value) -> Response<Body> {
    let body = serde_json::to_vec(v).unwrap_or_default();
    let mut r = Response::new(full(body));
    *r.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    r
}

fn error_response(e: &ApiError) -> Response<Body> {
    let mut r = json_response(e.code, &e.to_status());
    // Like API Priority and Fairness; 503s carry no hint so clients use their own backoff.
    if e.code == 429 {
        r.headers_mut()
            .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
    }
    r
}

/// Parsed resource request path.
#[derive(Debug, Clone, Default)]
struct ResPath {
    group: String,
    version: String,
    namespace: Option<String>,
    resource: String,
    name: Option<String>,
    sub: String,
}

enum Route {
    Version,
    Api,
    Apis,
    Group(String),
    Resources(String, String),
    OpenApiV3,
    OpenApiV3Doc(String, String),
    Health,
    Resource(ResPath),
    NotFound,
}

fn route(path: &str) -> Route {
    let parts: Vec<&str> = path
        .trim_matches('/')
        .split('/')
        .filter(|p| !p.is_empty())
        .collect();
    match parts.as_slice() {
        ["version"] => Route::Version,
        ["healthz"] | ["livez"] | ["readyz"] => Route::Health,
        ["api"] => Route::Api,
        ["apis"] => Route::Apis,
        ["apis", g] => Route::Group(g.to_string()),
        ["api", v] => Route::Resources(String::new(), v.to_string()),
        ["apis", g, v] => Route::Resources(g.to_string(), v.to_string()),
        ["openapi", "v3"] => Route::OpenApiV3,
        ["openapi", "v3", "api", v] => Route::OpenApiV3Doc(String::new(), v.to_string()),
        ["openapi", "v3", "apis", g, v] => Route::OpenApiV3Doc(g.to_string(), v.to_string()),
        ["api", v, rest @ ..] => res_path("", v, rest),
        ["apis", g, v, rest @ ..] => res_path(g, v, rest),
        _ => Route::NotFound,
    }
}

fn res_path(group: &str, version: &str, rest: &[&str]) -> Route {
    let mut p = ResPath {
        group: group.into(),
        version: version.into(),
        ..Default::default()
    };
    let mut rest = rest;
    if rest.first() == Some(&"namespaces")
        && rest.len() >= 3
        && !(rest.len() == 3 && ["status", "finalize"].contains(&rest[2]))
    {
        p.namespace = Some(rest[1].to_string());
        rest = &rest[2..];
    }
    match rest {
        [r] => p.resource = r.to_string(),
        [r, n] => {
            p.resource = r.to_string();
            p.name = Some(n.to_string());
        }
        [r, n, s] => {
            p.resource = r.to_string();
            p.name = Some(n.to_string());
            p.sub = s.to_string();
        }
        _ => return Route::NotFound,
    }
    Route::Resource(p)
}

fn q<'a>(query: &'a [(String, String)], k: &str) -> Option<&'a str> {
    query
        .iter()
        .find(|(qk, _)| qk == k)
        .map(|(_, v)| v.as_str())
}

/// Aggregated discovery (apidiscovery.k8s.io/v2), which kubectl asks for first.
fn wants_aggregated(accept: &str) -> bool {
    accept.split(',').any(|a| {
        let a = a.replace(' ', "");
        a.contains("g=apidiscovery.k8s.io")
            && a.contains("v=v2;")
            && a.contains("as=APIGroupDiscoveryList")
            || a.ends_with("g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList")
    })
}

fn wants_table(req_accept: &str) -> bool {
    req_accept
        .split(',')
        .next()
        .is_some_and(|first| first.contains("as=Table"))
}

fn manager_name(query: &[(String, String)], ua: &str) -> String {
    match q(query, "fieldManager") {
        Some(m) if !m.is_empty() => m.to_string(),
        _ => ua.split('/').next().unwrap_or("unknown").to_string(),
    }
}

/// Entry point for one HTTP request.
pub(crate) async fn handle(
    shared: Arc<Shared>,
    req: Request<Incoming>,
) -> Result<Response<Body>, std::io::Error> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let query = parse_query(req.uri().query());
    let token = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.strip_prefix("Bearer "))
        .map(|s| s.trim().to_string());
    let user = match token {
        Some(t) => shared
            .tokens
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .lookup(&t),
        // client-go never sends bearer tokens over plain HTTP; like the old insecure
        // port, an unauthenticated plain-HTTP request is the admin.
        None => shared.plain_http_admin.clone(),
    };
    let r = route(&path);
    if matches!(r, Route::Health) {
        return Ok(Response::new(full("ok")));
    }
    let Some(user) = user else {
        shared.stats.record(StatKey {
            user: "anonymous".into(),
            verb: method.to_string(),
            resource: path.clone(),
        });
        return Ok(error_response(&ApiError::unauthorized()));
    };
    let user = match impersonate(&shared, &req, user) {
        Ok(u) => u,
        Err(e) => return Ok(error_response(&e)),
    };
    if let Some(rest) = path.strip_prefix("/_sim/") {
        if !user.is_superuser() {
            return Ok(error_response(&ApiError::forbidden(
                "the simulator admin API needs an admin token",
            )));
        }
        return Ok(sim_admin(&shared, &method, rest, req).await);
    }
    let attrs = attributes(&method, &path, &r, &query);
    shared.stats.record(StatKey {
        user: user.name.clone(),
        verb: attrs.verb.clone(),
        resource: if attrs.path.is_some() {
            path.clone()
        } else {
            let mut s = if attrs.group.is_empty() {
                attrs.resource.clone()
            } else {
                format!("{}/{}", attrs.group, attrs.resource)
            };
            if !attrs.subresource.is_empty() {
                s = format!("{s}/{}", attrs.subresource);
            }
            s
        },
    });
    if shared.faults.in_outage() {
        return Ok(error_response(&ApiError::new(
            503,
            "ServiceUnavailable",
            "the server is currently unable to handle the request",
        )));
    }
    let target = Target {
        verb: attrs.verb.clone(),
        resource: if attrs.subresource.is_empty() {
            attrs.resource.clone()
        } else {
            format!("{}/{}", attrs.resource, attrs.subresource)
        },
        name: attrs.name.clone(),
        namespace: attrs.namespace.clone(),
    };
    for action in shared.faults.take(&target) {
        match action {
            FaultAction::Delay { millis } => {
                tokio::time::sleep(Duration::from_millis(millis)).await
            }
            // Acts on open watches (see `watch`), not on requests.
            FaultAction::HoldEvents => {}
            FaultAction::Drop => return Ok(dropped_response()),
            FaultAction::Conflict => {
                return Ok(error_response(&ApiError::stale(
                    &attrs.group,
                    &attrs.resource,
                    &attrs.name,
                )));
            }
            FaultAction::Error { code } => {
                let reason = match code {
                    429 => "TooManyRequests",
                    503 => "ServiceUnavailable",
                    504 => "Timeout",
                    500 => "InternalError",
                    401 => "Unauthorized",
                    403 => "Forbidden",
                    404 => "NotFound",
                    409 => "Conflict",
                    410 => "Expired",
                    _ => "InternalError",
                };
                let msg = match code {
                    429 => "Too many requests, please try again later.".to_string(),
                    503 => "the server is currently unable to handle the request".to_string(),
                    _ => format!("injected fault ({code})"),
                };
                return Ok(error_response(&ApiError::new(code, reason, msg)));
            }
        }
    }
    if shared.rbac {
        let allowed = rbac::authorize(&shared.core().store, &user, &attrs);
        if !allowed {
            let mut e = ApiError::forbidden(rbac::forbidden_message(&user, &attrs));
            if attrs.path.is_none() {
                let mut d = json!({"kind": attrs.resource});
                if !attrs.name.is_empty() {
                    d["name"] = json!(attrs.name);
                }
                if !attrs.group.is_empty() {
                    d["group"] = json!(attrs.group);
                }
                e.details = Some(d);
            }
            return Ok(error_response(&e));
        }
    }
    let accept = req
        .headers()
        .get(header::ACCEPT)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("")
        .to_string();
    let result = match r {
        Route::Version => Ok(json_response(200, &discovery::version())),
        Route::Api | Route::Apis if wants_aggregated(&accept) => {
            let legacy = matches!(r, Route::Api);
            let doc = discovery::aggregated(&shared.core().registry, legacy);
            let mut resp = json_response(200, &doc);
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static(
                    "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList",
                ),
            );
            Ok(resp)
        }
        Route::Api => Ok(json_response(
            200,
            &discovery::api_versions(&shared.server_address),
        )),
        Route::Apis => Ok(json_response(
            200,
            &discovery::group_list(&shared.core().registry),
        )),
        Route::Group(g) => discovery::group(&shared.core().registry, &g)
            .map(|v| json_response(200, &v))
            .ok_or_else(ApiError::path_not_found),
        Route::Resources(g, v) => discovery::resource_list(&shared.core().registry, &g, &v)
            .map(|v| json_response(200, &v))
            .ok_or_else(ApiError::path_not_found),
        Route::OpenApiV3 => {
            let epoch = shared.epoch.load(std::sync::atomic::Ordering::Relaxed);
            Ok(json_response(
                200,
                &discovery::openapi_v3_root(&shared.core().registry, epoch),
            ))
        }
        Route::OpenApiV3Doc(g, v) => discovery::openapi_v3_doc(&shared.core().registry, &g, &v)
            .map(|v| json_response(200, &v))
            .ok_or_else(ApiError::path_not_found),
        Route::Health => Ok(Response::new(full("ok"))),
        Route::NotFound => Err(ApiError::path_not_found()),
        Route::Resource(p) => resource(&shared, &method, p, &query, &accept, &user, req).await,
    };
    Ok(result.unwrap_or_else(|e| error_response(&e)))
}

/// `Impersonate-User` / `Impersonate-Group` (kubectl `--as`, `--as-group`), allowed for
/// superusers and for users granted the `impersonate` verb, as in the real server.
fn impersonate(
    shared: &Shared,
    req: &Request<Incoming>,
    user: UserInfo,
) -> Result<UserInfo, ApiError> {
    let Some(name) = req
        .headers()
        .get("impersonate-user")
        .and_then(|h| h.to_str().ok())
    else {
        return Ok(user);
    };
    let mut groups: Vec<String> = req
        .headers()
        .get_all("impersonate-group")
        .iter()
        .filter_map(|h| h.to_str().ok().map(String::from))
        .collect();
    let (resource, namespace, short) = match name
        .strip_prefix("system:serviceaccount:")
        .and_then(|r| r.split_once(':'))
    {
        Some((ns, sa)) => ("serviceaccounts", ns.to_string(), sa.to_string()),
        None => ("users", String::new(), name.to_string()),
    };
    let may = |resource: &str, namespace: &str, n: &str| {
        !shared.rbac
            || user.is_superuser()
            || rbac::authorize(
                &shared.core().store,
                &user,
                &Attributes {
                    verb: "impersonate".into(),
                    group: String::new(),
                    resource: resource.into(),
                    subresource: String::new(),
                    name: n.into(),
                    namespace: namespace.into(),
                    path: None,
                },
            )
    };
    if !may(resource, &namespace, &short) || !groups.iter().all(|g| may("groups", "", g)) {
        return Err(ApiError::forbidden(format!(
            "{resource} \"{short}\" is forbidden: User \"{}\" cannot impersonate resource \"{resource}\" in API group \"\"",
            user.name
        )));
    }
    if resource == "serviceaccounts" {
        let sa = UserInfo::service_account(&namespace, &short);
        groups.extend(sa.groups);
    } else if !groups.iter().any(|g| g == "system:authenticated") {
        groups.push("system:authenticated".into());
    }
    Ok(UserInfo {
        name: name.to_string(),
        groups,
    })
}

fn attributes(method: &Method, path: &str, r: &Route, query: &[(String, String)]) -> Attributes {
    let Route::Resource(p) = r else {
        return Attributes {
            verb: method.as_str().to_lowercase(),
            group: String::new(),
            resource: String::new(),
            subresource: String::new(),
            name: String::new(),
            namespace: String::new(),
            path: Some(path.to_string()),
        };
    };
    let verb = match (method.as_str(), &p.name) {
        ("GET", Some(_)) => "get",
        ("GET", None) if q(query, "watch").is_some_and(|w| w == "true" || w == "1") => "watch",
        ("GET", None) => "list",
        ("POST", _) => "create",
        ("PUT", _) => "update",
        ("PATCH", _) => "patch",
        ("DELETE", Some(_)) => "delete",
        ("DELETE", None) => "deletecollection",
        (m, _) => {
            return Attributes {
                verb: m.to_lowercase(),
                group: p.group.clone(),
                resource: p.resource.clone(),
                subresource: p.sub.clone(),
                name: String::new(),
                namespace: String::new(),
                path: None,
            };
        }
    };
    let (namespace, name) = if p.resource == "namespaces" && p.namespace.is_none() {
        (
            p.name.clone().unwrap_or_default(),
            p.name.clone().unwrap_or_default(),
        )
    } else {
        (
            p.namespace.clone().unwrap_or_default(),
            p.name.clone().unwrap_or_default(),
        )
    };
    // Like the real RequestInfo: a list/watch pinned by `metadata.name=` carries the
    // name, so RBAC `resourceNames` can grant watching one object.
    let name = if name.is_empty() && (verb == "list" || verb == "watch") {
        q(query, "fieldSelector")
            .and_then(|f| FieldSelector::parse(f).ok())
            .and_then(|f| f.pinned_name().map(String::from))
            .unwrap_or_default()
    } else {
        name
    };
    Attributes {
        verb: verb.into(),
        group: p.group.clone(),
        resource: p.resource.clone(),
        subresource: p.sub.clone(),
        name,
        namespace,
        path: None,
    }
}

async fn read_body(req: Request<Incoming>) -> Result<(Bytes, String), ApiError> {
    let ct = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("")
        .to_string();
    let is_proto = ct.contains("protobuf");
    if ct.contains("cbor") {
        return Err(ApiError::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types include: application/json, application/yaml, application/vnd.kubernetes.protobuf; got {ct}"
            ),
        ));
    }
    let limited = http_body_util::Limited::new(req.into_body(), 3 * 1024 * 1024);
    let bytes = limited
        .collect()
        .await
        .map_err(|e| {
            ApiError::new(
                413,
                "RequestEntityTooLarge",
                format!("request body too large or unreadable: {e}"),
            )
        })?
        .to_bytes();
    if is_proto && !bytes.is_empty() {
        let obj = crate::proto::decode_object(&bytes)
            .map_err(|m| ApiError::new(415, "UnsupportedMediaType", m))?;
        return Ok((
            Bytes::from(serde_json::to_vec(&obj).unwrap_or_default()),
            "application/json".into(),
        ));
    }
    Ok((bytes, ct))
}

pub(crate) fn parse_doc(bytes: &[u8], ct: &str) -> Result<Value, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Value::Null);
    }
    match serde_json::from_slice::<Value>(bytes) {
        Ok(v) => Ok(v),
        Err(e) => {
            if ct.contains("yaml") {
                let s =
                    std::str::from_utf8(bytes).map_err(|e| ApiError::bad_request(e.to_string()))?;
                serde_saphyr::from_str::<Value>(s)
                    .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))
            } else {
                Err(ApiError::bad_request(format!(
                    "error decoding request body: {e}"
                )))
            }
        }
    }
}

fn list_opts(query: &[(String, String)]) -> Result<ListOpts, ApiError> {
    Ok(ListOpts {
        labels: LabelSelector::parse(q(query, "labelSelector").unwrap_or(""))
            .map_err(ApiError::bad_request)?,
        fields: FieldSelector::parse(q(query, "fieldSelector").unwrap_or(""))
            .map_err(ApiError::bad_request)?,
        limit: q(query, "limit").and_then(|l| l.parse().ok()),
        continue_token: q(query, "continue").map(String::from),
        resource_version: q(query, "resourceVersion").map(String::from),
        rv_match: q(query, "resourceVersionMatch").map(String::from),
    })
}

#[allow(clippy::too_many_arguments)]
async fn resource(
    shared: &Arc<Shared>,
    method: &Method,
    p: ResPath,
    query: &[(String, String)],
    accept: &str,
    user: &UserInfo,
    req: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let ua = req
        .headers()
        .get(header::USER_AGENT)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("unknown")
        .to_string();
    if p.group == "authorization.k8s.io"
        && p.version == "v1"
        && *method == Method::POST
        && (p.resource == "selfsubjectaccessreviews" || p.resource == "subjectaccessreviews")
    {
        let (bytes, ct) = read_body(req).await?;
        let body = parse_doc(&bytes, &ct)?;
        return Ok(json_response(
            201,
            &access_review(shared, &p.resource, body, user),
        ));
    }
    if p.group == "authentication.k8s.io"
        && p.version == "v1"
        && p.resource == "tokenreviews"
        && p.namespace.is_none()
        && *method == Method::POST
    {
        let (bytes, ct) = read_body(req).await?;
        let body = parse_doc(&bytes, &ct)?;
        return Ok(json_response(201, &token_review(shared, body)?));
    }
    let def = shared
        .core()
        .registry
        .lookup(&p.group, &p.version, &p.resource)
        .ok_or_else(ApiError::path_not_found)?;
    // Cluster-scoped resources have no namespace segment; namespaced ones need it for single objects.
    if !def.namespaced && p.namespace.is_some() {
        return Err(ApiError::path_not_found());
    }
    if def.namespaced && p.namespace.is_none() && (p.name.is_some() || *method == Method::POST) {
        return Err(ApiError::path_not_found());
    }
    match p.sub.as_str() {
        "" => {}
        "status" if def.has_status(&p.version) => {}
        "scale" if def.version(&p.version).is_some_and(|v| v.scale.is_some()) => {}
        "eviction" if def.group.is_empty() && def.plural == "pods" && *method == Method::POST => {}
        "token"
            if def.group.is_empty()
                && def.plural == "serviceaccounts"
                && *method == Method::POST => {}
        "log" if def.group.is_empty() && def.plural == "pods" && *method == Method::GET => {}
        _ => return Err(ApiError::path_not_found()),
    }
    let ns = p.namespace.clone().unwrap_or_default();
    let version = p.version.clone();
    let table = wants_table(accept);
    let manager = manager_name(query, &ua);
    let strict = q(query, "fieldValidation") == Some("Strict");
    let dry_run = match q(query, "dryRun") {
        None | Some("") => false,
        Some("All") => true,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "Invalid dryRun value {other:?}: supported values: \"All\""
            )));
        }
    };
    match (method.as_str(), p.name.clone()) {
        ("GET", None) if q(query, "watch").is_some_and(|w| w == "true" || w == "1") => {
            watch(shared, def, &version, p.namespace.clone(), query, table)
        }
        ("GET", None) => {
            let opts = list_opts(query)?;
            let list = shared
                .core()
                .list(&def, &version, p.namespace.as_deref(), &opts)?;
            if table {
                let items = list
                    .get("items")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default();
                let meta = list.get("metadata").cloned().unwrap_or(json!({}));
                return Ok(json_response(
                    200,
                    &discovery::table(&def, &version, &items, meta, true),
                ));
            }
            Ok(json_response(200, &list))
        }
        ("GET", Some(name)) if p.sub == "log" => {
            let pod = shared.core().get(&def, &version, &ns, &name)?;
            pod_log(shared, &ns, &name, &pod, query)
        }
        ("GET", Some(name)) => {
            let core = shared.core();
            let obj = if p.sub == "scale" {
                core.get_scale(&def, &version, &ns, &name)?
            } else {
                core.get(&def, &version, &ns, &name)?
            };
            if table && p.sub.is_empty() {
                let rv = obj
                    .pointer("/metadata/resourceVersion")
                    .cloned()
                    .unwrap_or(json!(""));
                return Ok(json_response(
                    200,
                    &discovery::table(&def, &version, &[obj], json!({"resourceVersion": rv}), true),
                ));
            }
            Ok(json_response(200, &obj))
        }
        ("POST", Some(name)) if p.sub == "eviction" => {
            // PodDisruptionBudgets are honoured as the real server does (eviction.rs).
            read_body(req).await?;
            crate::eviction::evict(&mut shared.core(), &ns, &name)?;
            Ok(json_response(
                201,
                &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
            ))
        }
        ("POST", Some(name)) if p.sub == "token" => {
            let (bytes, ct) = read_body(req).await?;
            let body = parse_doc(&bytes, &ct)?;
            shared.core().get(&def, &version, &ns, &name)?;
            let token = format!("sa-{}", uuid::Uuid::new_v4().simple());
            shared
                .tokens
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .insert(token.clone(), UserInfo::service_account(&ns, &name));
            let secs = body
                .pointer("/spec/expirationSeconds")
                .and_then(Value::as_i64)
                .unwrap_or(3600);
            let exp = jiff::Timestamp::now()
                .checked_add(jiff::SignedDuration::from_secs(secs))
                .unwrap_or(jiff::Timestamp::MAX);
            let mut spec = body.get("spec").cloned().unwrap_or(json!({}));
            spec["expirationSeconds"] = json!(secs);
            Ok(json_response(
                201,
                &json!({
                    "apiVersion": "authentication.k8s.io/v1",
                    "kind": "TokenRequest",
                    "metadata": {"name": name, "namespace": ns, "creationTimestamp": crate::util::now_rfc3339()},
                    "spec": spec,
                    "status": {"token": token, "expirationTimestamp": exp.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()},
                }),
            ))
        }
        ("POST", None) => {
            let (bytes, ct) = read_body(req).await?;
            let body = parse_doc(&bytes, &ct)?;
            let mut guard = shared.core();
            // dryRun=All: run the full request against a throw-away copy of the state.
            let mut scratch = dry_run.then(|| guard.dry_run_copy());
            let core: &mut Core = match scratch.as_mut() {
                Some(c) => c,
                None => &mut guard,
            };
            core.strict_fields = strict;
            let res = core.create(&def, &version, &ns, body, &manager);
            core.strict_fields = false;
            let out = res?;
            let out_v = at_version(&out, &def, &version);
            if !dry_run {
                after_crd_change(shared, &def);
            }
            Ok(json_response(201, &out_v))
        }
        ("PUT", Some(name)) => {
            let (bytes, ct) = read_body(req).await?;
            let body = parse_doc(&bytes, &ct)?;
            let mut guard = shared.core();
            // dryRun=All: run the full request against a throw-away copy of the state.
            let mut scratch = dry_run.then(|| guard.dry_run_copy());
            let core: &mut Core = match scratch.as_mut() {
                Some(c) => c,
                None => &mut guard,
            };
            if p.sub == "scale" {
                let out = core.update_scale(&def, &version, &ns, &name, &body, &manager)?;
                return Ok(json_response(200, &out));
            }
            core.strict_fields = strict;
            let res = core.update(&def, &version, &ns, &name, &p.sub, body, Some(&manager));
            core.strict_fields = false;
            let out = res?;
            let out = at_version(&out, &def, &version);
            if !dry_run {
                after_crd_change(shared, &def);
            }
            Ok(json_response(200, &out))
        }
        ("PATCH", Some(name)) => {
            let (bytes, ct) = read_body(req).await?;
            let ptype = match ct.split(';').next().unwrap_or("").trim() {
                "application/json-patch+json" => PatchType::Json,
                "application/merge-patch+json" => PatchType::Merge,
                "application/strategic-merge-patch+json" => PatchType::Strategic,
                "application/apply-patch+yaml" | "application/apply-patch+cbor" => PatchType::Apply,
                other => return Err(ApiError::unsupported_media(other)),
            };
            let body = parse_doc(
                &bytes,
                if ptype == PatchType::Apply {
                    "yaml"
                } else {
                    &ct
                },
            )?;
            if ptype == PatchType::Apply && q(query, "fieldManager").is_none_or(str::is_empty) {
                return Err(ApiError::invalid(
                    "meta.k8s.io",
                    "PatchOptions",
                    "",
                    vec![crate::error::Cause::new(
                        "FieldValueRequired",
                        "fieldManager",
                        "Required value: is required for apply patch",
                    )],
                ));
            }
            let force = q(query, "force").is_some_and(|f| f == "true");
            let mut guard = shared.core();
            // dryRun=All: run the full request against a throw-away copy of the state.
            let mut scratch = dry_run.then(|| guard.dry_run_copy());
            let core: &mut Core = match scratch.as_mut() {
                Some(c) => c,
                None => &mut guard,
            };
            if p.sub == "scale" {
                let cur = core.get_scale(&def, &version, &ns, &name)?;
                let mut n = cur.clone();
                match ptype {
                    PatchType::Json => {
                        crate::patch::json_patch(&mut n, &body)?;
                    }
                    PatchType::Strategic => crate::patch::strategic_merge(&mut n, &body),
                    _ => json_patch::merge(&mut n, &body),
                }
                let out = core.update_scale(&def, &version, &ns, &name, &n, &manager)?;
                return Ok(json_response(200, &out));
            }
            core.strict_fields = strict;
            let res = core.patch(
                &def, &version, &ns, &name, &p.sub, ptype, &body, &manager, force,
            );
            core.strict_fields = false;
            let (out, created) = res?;
            let out = at_version(&out, &def, &version);
            if !dry_run {
                after_crd_change(shared, &def);
            }
            Ok(json_response(if created { 201 } else { 200 }, &out))
        }
        ("DELETE", name) => {
            let (bytes, ct) = read_body(req).await?;
            let body = parse_doc(&bytes, &ct)?;
            let opts = DeleteOpts {
                propagation: q(query, "propagationPolicy")
                    .map(String::from)
                    .or_else(|| {
                        body.get("propagationPolicy")
                            .and_then(Value::as_str)
                            .map(String::from)
                    })
                    .or_else(|| {
                        body.get("orphanDependents")
                            .and_then(Value::as_bool)
                            .filter(|o| *o)
                            .map(|_| "Orphan".to_string())
                    }),
                uid: body
                    .pointer("/preconditions/uid")
                    .and_then(Value::as_str)
                    .map(String::from),
                resource_version: body
                    .pointer("/preconditions/resourceVersion")
                    .and_then(Value::as_str)
                    .map(String::from),
            };
            // Delete carries dryRun in its DeleteOptions body.
            let dry_run = dry_run
                || body
                    .get("dryRun")
                    .and_then(Value::as_array)
                    .is_some_and(|a| a.iter().any(|d| d == "All"));
            let mut guard = shared.core();
            // dryRun=All: run the full request against a throw-away copy of the state.
            let mut scratch = dry_run.then(|| guard.dry_run_copy());
            let core: &mut Core = match scratch.as_mut() {
                Some(c) => c,
                None => &mut guard,
            };
            let out = match name {
                Some(n) => core.delete(&def, &version, &ns, &n, &opts)?,
                None => {
                    let lo = list_opts(query)?;
                    core.delete_collection(&def, &version, p.namespace.as_deref(), &lo, &opts)?
                }
            };
            if !dry_run {
                after_crd_change(shared, &def);
            }
            Ok(json_response(200, &out))
        }
        _ => Err(ApiError::method_not_allowed()),
    }
}

fn after_crd_change(shared: &Shared, def: &ResourceDef) {
    if def.plural == "customresourcedefinitions" {
        shared
            .epoch
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// `GET pods/NAME/log`, as kube-apiserver validates it (kubernetes
/// pkg/registry/core/pod/rest/log.go, pkg/registry/core/pod/strategy.go `LogLocation`):
/// the container may be omitted only when the pod has one; an unknown container, or
/// `previous` without a terminated instance, is a bad request; the body is plain text.
/// `tailLines` and `limitBytes` are honoured; `follow` is not (the log as it is now).
fn pod_log(
    shared: &Shared,
    ns: &str,
    name: &str,
    pod: &Value,
    query: &[(String, String)],
) -> Result<Response<Body>, ApiError> {
    let containers: Vec<String> = pod
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .map(|cs| {
            cs.iter()
                .filter_map(|c| c.get("name").and_then(Value::as_str).map(String::from))
                .collect()
        })
        .unwrap_or_default();
    let container = match q(query, "container") {
        Some(c) if !c.is_empty() => c.to_string(),
        _ if containers.len() == 1 => containers[0].clone(),
        _ => {
            return Err(ApiError::bad_request(format!(
                "a container name must be specified for pod {name}, choose one of: [{}]",
                containers.join(" ")
            )));
        }
    };
    if !containers.contains(&container) {
        return Err(ApiError::bad_request(format!(
            "container {container} is not valid for pod {name}"
        )));
    }
    let previous = q(query, "previous").is_some_and(|v| v == "true" || v == "1");
    let file = shared
        .pod_logs
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .get(&(
            ns.to_string(),
            name.to_string(),
            container.clone(),
            previous,
        ))
        .cloned();
    let mut text = match (file, previous) {
        (Some(f), _) => std::fs::read_to_string(&f).unwrap_or_default(),
        (None, true) => {
            return Err(ApiError::bad_request(format!(
                "previous terminated container \"{container}\" in pod \"{name}\" not found"
            )));
        }
        (None, false) => String::new(),
    };
    if let Some(n) = q(query, "tailLines").and_then(|n| n.parse::<usize>().ok()) {
        let lines: Vec<&str> = text.lines().collect();
        let start = lines.len().saturating_sub(n);
        text = lines[start..].iter().map(|l| format!("{l}\n")).collect();
    }
    if let Some(n) = q(query, "limitBytes").and_then(|n| n.parse::<usize>().ok())
        && text.len() > n
    {
        let mut cut = n;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
    }
    let mut r = Response::new(full(text));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain"),
    );
    Ok(r)
}

/// Answer a TokenReview with the tokens this server accepts, as kube-apiserver does
/// (kubernetes pkg/registry/authentication/tokenreview/storage.go): 201 with
/// `status.authenticated` and the user, or `authenticated: false` and the
/// authenticator's error; an empty token is a bad request.
fn token_review(shared: &Shared, mut review: Value) -> Result<Value, ApiError> {
    let token = review
        .pointer("/spec/token")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    if token.is_empty() {
        return Err(ApiError::bad_request(
            "token is required for TokenReview in authentication",
        ));
    }
    let user = shared
        .tokens
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .lookup(&token);
    review["apiVersion"] = json!("authentication.k8s.io/v1");
    review["kind"] = json!("TokenReview");
    review["status"] = match user {
        Some(u) => json!({"authenticated": true, "user": {"username": u.name, "groups": u.groups}}),
        None => json!({"authenticated": false, "error": "invalid bearer token"}),
    };
    Ok(review)
}

/// Answer a (Self)SubjectAccessReview with the same authoriser that guards requests.
fn access_review(shared: &Shared, resource: &str, mut review: Value, caller: &UserInfo) -> Value {
    let spec = review.get("spec").cloned().unwrap_or(json!({}));
    let subject = if resource == "selfsubjectaccessreviews" {
        caller.clone()
    } else {
        UserInfo {
            name: spec
                .get("user")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
            groups: spec
                .get("groups")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|g| g.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default(),
        }
    };
    let s = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    let attrs = if let Some(ra) = spec.get("resourceAttributes") {
        Attributes {
            verb: s(ra, "verb"),
            group: s(ra, "group"),
            resource: s(ra, "resource"),
            subresource: s(ra, "subresource"),
            name: s(ra, "name"),
            namespace: s(ra, "namespace"),
            path: None,
        }
    } else {
        let nra = spec
            .get("nonResourceAttributes")
            .cloned()
            .unwrap_or(json!({}));
        Attributes {
            verb: s(&nra, "verb"),
            group: String::new(),
            resource: String::new(),
            subresource: String::new(),
            name: String::new(),
            namespace: String::new(),
            path: Some(s(&nra, "path")),
        }
    };
    let allowed = !shared.rbac || rbac::authorize(&shared.core().store, &subject, &attrs);
    review["apiVersion"] = json!("authorization.k8s.io/v1");
    review["kind"] = json!(if resource == "selfsubjectaccessreviews" {
        "SelfSubjectAccessReview"
    } else {
        "SubjectAccessReview"
    });
    review["status"] = if allowed {
        json!({"allowed": true, "reason": "RBAC: allowed"})
    } else {
        json!({"allowed": false})
    };
    review
}

/// Per-watch filter state.
struct WatchFilter {
    key: String,
    /// Selectors see `events.k8s.io` Events in that API's shape.
    event_view: Option<String>,
    ns: Option<String>,
    labels: LabelSelector,
    fields: FieldSelector,
}

impl WatchFilter {
    fn matches(&self, o: &Value) -> bool {
        if let Some(v) = &self.event_view {
            let served = crate::events::from_core(o, v);
            return self.labels.matches(&served) && self.fields.matches(&served);
        }
        self.labels.matches(o) && self.fields.matches(o)
    }
    /// The event type this watcher sees for a change, if any (selector transitions included).
    fn translate(&self, c: &Change) -> Option<EventType> {
        if c.res != self.key || self.ns.as_deref().is_some_and(|n| n != c.ns) {
            return None;
        }
        let now = self.matches(&c.obj);
        match c.ty {
            EventType::Added => now.then_some(EventType::Added),
            EventType::Deleted => now.then_some(EventType::Deleted),
            EventType::Modified => {
                let before = c.old.as_ref().is_some_and(|o| self.matches(o));
                match (before, now) {
                    (true, true) => Some(EventType::Modified),
                    (false, true) => Some(EventType::Added),
                    (true, false) => Some(EventType::Deleted),
                    (false, false) => None,
                }
            }
        }
    }
}

fn event_line(ty: &str, obj: &Value) -> Bytes {
    let mut v = serde_json::to_vec(&json!({"type": ty, "object": obj})).unwrap_or_default();
    v.push(b'\n');
    Bytes::from(v)
}

struct Encoder {
    def: Arc<ResourceDef>,
    version: String,
    api_version: String,
    table: bool,
}

impl Encoder {
    fn encode(&self, ty: EventType, obj: &Value) -> Bytes {
        if self.table {
            let rv = obj
                .pointer("/metadata/resourceVersion")
                .cloned()
                .unwrap_or(json!(""));
            let t = discovery::table(
                &self.def,
                &self.version,
                std::slice::from_ref(obj),
                json!({"resourceVersion": rv}),
                true,
            );
            return event_line(ty.as_str(), &t);
        }
        event_line(ty.as_str(), &at_version(obj, &self.def, &self.version))
    }
    fn encode_change(&self, ty: EventType, c: &Change) -> Bytes {
        let same_version =
            c.obj.get("apiVersion").and_then(Value::as_str) == Some(self.api_version.as_str());
        if !self.table && ty == c.ty && same_version && c.obj.get("kind").is_some() {
            return c
                .encoded
                .get_or_init(|| event_line(ty.as_str(), &c.obj))
                .clone();
        }
        self.encode(ty, &c.obj)
    }
}

/// The checks of a watch's options the real server makes before it serves
/// one (k8s.io/apimachinery `pkg/apis/meta/internalversion/validation/validation.go`,
/// `validateWatchOptions`, called from k8s.io/apiserver
/// `pkg/endpoints/handlers/get.go` with the `WatchList` gate; a present
/// `sendInitialEvents` counts, whatever its value). Its defaulting of a legacy
/// watch to a streaming one (`internalversion/defaults.go`) changes nothing
/// here: kube-sim answers both alike.
fn validate_watch_options(
    query: &[(String, String)],
    opts: &ListOpts,
    watch_list: bool,
) -> Result<(), ApiError> {
    let send_initial = q(query, "sendInitialEvents").is_some();
    let rv_match = opts.rv_match.as_deref().unwrap_or("");
    let forbidden = |field: &str, message: &str| {
        Cause::new(
            "FieldValueForbidden",
            field,
            format!("Forbidden: {message}"),
        )
    };
    let mut causes = vec![];
    if send_initial {
        if rv_match != "NotOlderThan" {
            causes.push(forbidden(
                "resourceVersionMatch",
                "sendInitialEvents requires setting resourceVersionMatch to NotOlderThan",
            ));
        }
        if !watch_list {
            causes.push(forbidden(
                "sendInitialEvents",
                "sendInitialEvents is forbidden for watch unless the WatchList feature gate is enabled",
            ));
        }
    }
    if !rv_match.is_empty() {
        if !send_initial {
            causes.push(forbidden(
                "resourceVersionMatch",
                "resourceVersionMatch is forbidden for watch unless sendInitialEvents is provided",
            ));
        }
        if rv_match != "NotOlderThan" {
            causes.push(Cause::new(
                "FieldValueNotSupported",
                "resourceVersionMatch",
                format!("Unsupported value: \"{rv_match}\": supported values: \"NotOlderThan\""),
            ));
        }
    }
    if causes.is_empty() {
        Ok(())
    } else {
        Err(ApiError::invalid("meta.k8s.io", "ListOptions", "", causes))
    }
}

fn watch(
    shared: &Arc<Shared>,
    def: Arc<ResourceDef>,
    version: &str,
    ns: Option<String>,
    query: &[(String, String)],
    table: bool,
) -> Result<Response<Body>, ApiError> {
    let opts = list_opts(query)?;
    validate_watch_options(query, &opts, shared.watch_list)?;
    let bookmarks = q(query, "allowWatchBookmarks") == Some("true");
    let send_initial = q(query, "sendInitialEvents") == Some("true");
    let timeout = q(query, "timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .unwrap_or(1800);
    let filter = WatchFilter {
        key: def.storage_key(),
        event_view: def.is_event_view().then(|| version.to_string()),
        ns: ns.clone(),
        labels: opts.labels.clone(),
        fields: opts.fields.clone(),
    };
    let enc = Encoder {
        def: def.clone(),
        version: version.to_string(),
        api_version: def.api_version(version),
        table,
    };
    let (tx, rx) = mpsc::channel::<Bytes>(1024);
    let mut initial: Vec<Bytes> = Vec::new();
    let mut last_rv;
    let mut sub: broadcast::Receiver<Arc<Change>>;
    {
        let core = shared.core();
        last_rv = core.store.rv;
        sub = core.store.subscribe();
        let rv = opts.resource_version.clone().unwrap_or_default();
        if rv.is_empty() || rv == "0" || send_initial {
            let list = core.list(
                &def,
                version,
                ns.as_deref(),
                &ListOpts {
                    labels: opts.labels.clone(),
                    fields: opts.fields.clone(),
                    ..Default::default()
                },
            )?;
            for it in list
                .get("items")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                initial.push(enc.encode(EventType::Added, it));
            }
            if send_initial && bookmarks {
                let bm = json!({"kind": def.kind, "apiVersion": def.api_version(version), "metadata": {"resourceVersion": last_rv.to_string(), "annotations": {"k8s.io/initial-events-end": "true"}}});
                initial.push(event_line("BOOKMARK", &bm));
            }
        } else {
            let n: u64 = rv
                .parse()
                .map_err(|_| ApiError::bad_request(format!("invalid resource version: {rv}")))?;
            match core.store.since(n, &def.storage_key()) {
                Some(events) => {
                    for c in events {
                        if let Some(ty) = filter.translate(&c) {
                            initial.push(enc.encode_change(ty, &c));
                        }
                    }
                }
                None => {
                    let e = ApiError::gone(format!(
                        "too old resource version: {n} ({})",
                        core.store.floor
                    ));
                    initial.push(event_line("ERROR", &e.to_status()));
                    let (etx, erx) = mpsc::channel::<Bytes>(4);
                    for b in initial {
                        let _ = etx.try_send(b);
                    }
                    drop(etx);
                    return Ok(stream_response(erx));
                }
            }
        }
    }
    let faults = shared.faults.clone();
    let target = Target {
        verb: "watch".into(),
        resource: def.plural.clone(),
        name: opts.fields.pinned_name().unwrap_or_default().to_string(),
        namespace: ns.clone().unwrap_or_default(),
    };
    let mut shutdown = shared.shutdown.clone();
    let interval = shared.bookmark_interval;
    let kind = def.kind.clone();
    let api_version = def.api_version(version);
    tokio::spawn(async move {
        for b in initial {
            if tx.send(b).await.is_err() {
                return;
            }
        }
        let deadline = tokio::time::sleep(Duration::from_secs(timeout));
        tokio::pin!(deadline);
        let mut ticker = tokio::time::interval(interval);
        ticker.tick().await;
        loop {
            tokio::select! {
                _ = &mut deadline => break,
                _ = shutdown.changed() => break,
                _ = tx.closed() => break,
                _ = ticker.tick(), if bookmarks => {
                    let bm = json!({"kind": kind, "apiVersion": api_version, "metadata": {"resourceVersion": last_rv.to_string()}});
                    if tx.send(event_line("BOOKMARK", &bm)).await.is_err() { break; }
                }
                msg = sub.recv() => match msg {
                    Ok(c) => {
                        last_rv = c.rv;
                        let Some(ty) = filter.translate(&c) else { continue };
                        // Later changes queue behind this one in `sub`, so order is
                        // kept, as in the cacher's per-watcher queue (`FaultAction::HoldEvents`).
                        if let Some(until) = faults.held_until(&target) {
                            tokio::select! {
                                _ = tokio::time::sleep_until(until.into()) => {}
                                _ = shutdown.changed() => break,
                            }
                        }
                        if tx.send(enc.encode_change(ty, &c)).await.is_err() {
                            break;
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        let e = ApiError::gone(format!("too old resource version: {last_rv}: watcher fell behind"));
                        let _ = tx.send(event_line("ERROR", &e.to_status())).await;
                        break;
                    }
                    Err(broadcast::error::RecvError::Closed) => break,
                }
            }
        }
    });
    Ok(stream_response(rx))
}

/// Headers, then a body that fails: the connection dies mid-response, which clients
/// cannot transparently retry (unlike a refused request).
fn dropped_response() -> Response<Body> {
    let stream = futures::stream::once(async {
        Err::<Frame<Bytes>, _>(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "fault: connection dropped",
        ))
    });
    let mut r = Response::new(BodyExt::boxed(StreamBody::new(stream)));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    r
}

fn stream_response(rx: mpsc::Receiver<Bytes>) -> Response<Body> {
    let stream =
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|b| (b, rx)) })
            .map(|b| Ok::<_, std::io::Error>(Frame::data(b)));
    let mut r = Response::new(BodyExt::boxed(StreamBody::new(stream)));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-cache, private"),
    );
    r
}

async fn sim_admin(
    shared: &Shared,
    method: &Method,
    rest: &str,
    req: Request<Incoming>,
) -> Response<Body> {
    match (method.as_str(), rest) {
        ("GET", "stats") => json_response(200, &shared.stats.to_json()),
        ("DELETE", "stats") => {
            shared.stats.reset();
            json_response(200, &json!({}))
        }
        ("GET", "faults") => json_response(200, &json!(shared.faults.active())),
        ("DELETE", "faults") => {
            shared.faults.clear();
            json_response(200, &json!({}))
        }
        ("POST", "faults") => {
            let (bytes, ct) = match read_body(req).await {
                Ok(b) => b,
                Err(e) => return error_response(&e),
            };
            let v = match parse_doc(&bytes, &ct) {
                Ok(v) => v,
                Err(e) => return error_response(&e),
            };
            match serde_json::from_value::<FaultRule>(v) {
                Ok(rule) => {
                    shared.faults.inject(rule);
                    json_response(201, &json!(shared.faults.active()))
                }
                Err(e) => error_response(&ApiError::bad_request(e.to_string())),
            }
        }
        ("POST", "outage") => {
            let (bytes, ct) = match read_body(req).await {
                Ok(b) => b,
                Err(e) => return error_response(&e),
            };
            let ms = parse_doc(&bytes, &ct)
                .ok()
                .and_then(|v| v.get("durationMs").and_then(Value::as_u64))
                .unwrap_or(1000);
            shared.faults.outage(Duration::from_millis(ms));
            json_response(200, &json!({"durationMs": ms}))
        }
        _ => error_response(&ApiError::path_not_found()),
    }
}
