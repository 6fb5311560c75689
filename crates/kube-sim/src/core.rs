//! The API machinery proper: create/update/patch/delete/list semantics, admission
//! (built-in rules, CRD schemas, CEL), generation and resourceVersion bookkeeping,
//! finalizers, garbage collection and namespace termination. Everything here runs
//! under the server's single state lock, which makes each request atomic.

use std::collections::HashSet;
use std::sync::Arc;

use base64::Engine;
use serde_json::{Value, json};

use crate::error::{ApiError, Cause};
use crate::patch::{self, ApplyOutcome};
use crate::registry::{self, Registry, ResourceDef};
use crate::schema;
use crate::store::{EventType, Store};
use crate::util::{self, FieldSelector, LabelSelector, now_rfc3339};

/// Mutable server state guarded by one lock.
pub(crate) struct Core {
    pub registry: Registry,
    pub store: Store,
    validator: kube_cel::Validator,
    /// Set for the duration of a request with `fieldValidation=Strict`.
    pub strict_fields: bool,
}

/// How a request body patches an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PatchType {
    Json,
    Merge,
    Strategic,
    Apply,
}

/// Options of list requests.
#[derive(Debug, Default)]
pub(crate) struct ListOpts {
    pub labels: LabelSelector,
    pub fields: FieldSelector,
    pub limit: Option<usize>,
    pub continue_token: Option<String>,
    pub resource_version: Option<String>,
    pub rv_match: Option<String>,
}

/// Options of delete requests.
#[derive(Debug, Default)]
pub(crate) struct DeleteOpts {
    pub propagation: Option<String>,
    pub uid: Option<String>,
    pub resource_version: Option<String>,
}

fn meta_str<'a>(v: &'a Value, k: &str) -> &'a str {
    v.get("metadata")
        .and_then(|m| m.get(k))
        .and_then(Value::as_str)
        .unwrap_or("")
}

fn meta_mut(v: &mut Value) -> &mut serde_json::Map<String, Value> {
    if !v.get("metadata").is_some_and(Value::is_object) {
        v["metadata"] = json!({});
    }
    match v.get_mut("metadata") {
        Some(Value::Object(m)) => m,
        _ => unreachable!("metadata was just made an object"),
    }
}

fn finalizers(v: &Value) -> Vec<String> {
    v.pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// Types whose objects carry `metadata.generation`.
fn has_generation(def: &ResourceDef) -> bool {
    def.custom
        || matches!(
            def.plural.as_str(),
            "deployments" | "customresourcedefinitions" | "pods"
        )
}

/// Everything but metadata (and status where it is a subresource): what bumps generation.
fn spec_part(v: &Value, strip_status: bool) -> Value {
    let mut c = v.clone();
    if let Some(m) = c.as_object_mut() {
        m.remove("metadata");
        if strip_status {
            m.remove("status");
        }
        m.remove("apiVersion");
        m.remove("kind");
    }
    c
}

fn same_ignoring_bookkeeping(a: &Value, b: &Value) -> bool {
    let strip = |v: &Value| {
        let mut c = v.clone();
        if let Some(m) = c.get_mut("metadata").and_then(Value::as_object_mut) {
            m.remove("resourceVersion");
            m.remove("managedFields");
        }
        if let Some(m) = c.as_object_mut() {
            m.remove("apiVersion");
        }
        c
    };
    strip(a) == strip(b)
}

/// Convert a dotted JSON path (`.spec.replicas`) into a JSON pointer.
fn pointer(path: &str) -> String {
    path.trim_start_matches('.')
        .split('.')
        .map(|p| format!("/{p}"))
        .collect()
}

fn set_pointer(v: &mut Value, path: &str, val: Value) {
    let parts: Vec<&str> = path.trim_start_matches('.').split('.').collect();
    let mut cur = v;
    for (i, p) in parts.iter().enumerate() {
        if !cur.is_object() {
            *cur = json!({});
        }
        let Value::Object(m) = cur else { return };
        if i + 1 == parts.len() {
            m.insert(p.to_string(), val);
            return;
        }
        cur = m.entry(p.to_string()).or_insert_with(|| json!({}));
    }
}

/// The object as served at `version` (no conversion: CRDs use strategy None).
pub(crate) fn at_version(obj: &Value, def: &ResourceDef, version: &str) -> Value {
    if def.is_event_view() {
        return crate::events::from_core(obj, version);
    }
    let mut o = obj.clone();
    o["apiVersion"] = json!(def.api_version(version));
    o["kind"] = json!(def.kind);
    o
}

impl Core {
    /// A copy that shares no channels with the live state, for `dryRun=All`.
    pub fn dry_run_copy(&self) -> Core {
        Core {
            registry: self.registry.clone(),
            store: self.store.scratch_copy(),
            validator: kube_cel::Validator::new(),
            strict_fields: self.strict_fields,
        }
    }

    pub fn new(store: Store) -> Self {
        Core {
            registry: Registry::new(),
            store,
            validator: kube_cel::Validator::new(),
            strict_fields: false,
        }
    }

    fn lookup_obj(&self, def: &ResourceDef, ns: &str, name: &str) -> Result<Arc<Value>, ApiError> {
        self.store
            .get(&def.storage_key(), ns, name)
            .ok_or_else(|| ApiError::not_found(&def.group, &def.plural, name))
    }

    pub fn get(
        &self,
        def: &ResourceDef,
        version: &str,
        ns: &str,
        name: &str,
    ) -> Result<Value, ApiError> {
        let o = self.lookup_obj(def, ns, name)?;
        Ok(at_version(&o, def, version))
    }

    fn namespace_usable(&self, ns: &str) -> Result<(), ApiError> {
        match self.store.get("/namespaces", "", ns) {
            None => Err(ApiError::not_found("", "namespaces", ns)),
            Some(n) if n.pointer("/metadata/deletionTimestamp").is_some() => {
                Err(ApiError::forbidden(format!(
                    "unable to create new content in namespace {ns} because it is being terminated"
                )))
            }
            Some(_) => Ok(()),
        }
    }

    /// Built-in and schema admission: mutates (fold, prune, default) then validates.
    fn admit(
        &self,
        def: &ResourceDef,
        version: &str,
        obj: &mut Value,
        old: Option<&Value>,
    ) -> Result<(), ApiError> {
        let name = meta_str(obj, "name").to_string();
        let mut causes = Vec::new();
        let name_check = match def.plural.as_str() {
            "namespaces" | "services" => util::check_dns_label(&name),
            "events" | "roles" | "clusterroles" | "rolebindings" | "clusterrolebindings" => None,
            _ => util::check_dns_subdomain(&name),
        };
        if let Some(msg) = name_check {
            causes.push(Cause::new(
                "FieldValueInvalid",
                "metadata.name",
                format!("Invalid value: \"{name}\": {msg}"),
            ));
        }
        if let Some(o) = old {
            let oldf = finalizers(o);
            let newf = finalizers(obj);
            let added: Vec<&String> = newf.iter().filter(|f| !oldf.contains(f)).collect();
            if o.pointer("/metadata/deletionTimestamp").is_some() && !added.is_empty() {
                let shown: Vec<String> = added.iter().map(|f| format!("\"{f}\"")).collect();
                causes.push(Cause::new(
                    "FieldValueForbidden",
                    "metadata.finalizers",
                    format!(
                        "Forbidden: no new finalizers can be added if the object is being deleted, found new finalizers []string{{{}}}",
                        shown.join(", ")
                    ),
                ));
            }
        }
        match (def.group.as_str(), def.plural.as_str()) {
            ("", "secrets") => {
                fold_secret(obj, &mut causes)?;
                if obj.get("type").is_none_or(Value::is_null) {
                    obj["type"] = json!("Opaque");
                }
            }
            ("", "configmaps") => {
                for field in ["data", "binaryData"] {
                    check_keys(obj, field, &mut causes);
                }
            }
            ("apiextensions.k8s.io", "customresourcedefinitions") => {
                if let Err(c) = registry::def_from_crd(obj) {
                    causes.extend(c);
                }
            }
            _ => {}
        }
        if def.custom
            && let Some(vdef) = def.version(version)
            && let Some(sch) = &vdef.schema
        {
            let dropped = schema::prune(sch, obj);
            if self.strict_fields && !dropped.is_empty() {
                let shown: Vec<String> = dropped
                    .iter()
                    .map(|d| format!("unknown field \"{d}\""))
                    .collect();
                return Err(ApiError::bad_request(format!(
                    "{} in version \"{version}\" cannot be handled as a {}: strict decoding error: {}",
                    def.kind,
                    def.kind,
                    shown.join(", ")
                )));
            }
            *obj = schema::default(sch, obj);
            causes.extend(schema::validate(sch, obj));
            if let Some(compiled) = &vdef.compiled {
                let ctx = kube_cel::RootContext {
                    api_version: def.api_version(version),
                    api_group: def.group.clone(),
                    kind: def.kind.clone(),
                };
                if let Err(errs) =
                    self.validator
                        .validate_compiled_with_context(compiled, obj, old, Some(&ctx))
                {
                    for e in errs {
                        let field = e.field_path.trim_start_matches('.').to_string();
                        let shown = util::get_path(obj, &field)
                            .map(schema::type_name)
                            .unwrap_or("object");
                        causes.push(Cause::new(
                            e.reason.as_deref().unwrap_or("FieldValueInvalid"),
                            field,
                            format!("Invalid value: \"{shown}\": {}", e.message),
                        ));
                    }
                }
            }
        }
        if causes.is_empty() {
            self.admit_policies(def, version, obj, old)
        } else {
            Err(ApiError::invalid(&def.group, &def.kind, &name, causes))
        }
    }

    /// Store a new or changed object and run the side effects of the change.
    fn commit(
        &mut self,
        def: &Arc<ResourceDef>,
        mut obj: Value,
        created: bool,
    ) -> Result<Arc<Value>, ApiError> {
        let ns = meta_str(&obj, "namespace").to_string();
        let name = meta_str(&obj, "name").to_string();
        if def.group == "apiextensions.k8s.io" && def.plural == "customresourcedefinitions" {
            self.establish_crd(&mut obj)?;
        }
        let rv = self.store.next_rv();
        meta_mut(&mut obj).insert("resourceVersion".into(), json!(rv.to_string()));
        if obj.pointer("/metadata/deletionTimestamp").is_some() && finalizers(&obj).is_empty() {
            if def.plural == "namespaces"
                && def.group.is_empty()
                && self.namespace_has_content(&name)
            {
                // Namespace stays Terminating until its content is gone.
            } else {
                self.finish_delete(def, &ns, &name, obj.clone());
                self.collect_garbage();
                return Ok(Arc::new(obj));
            }
        }
        let ty = if created {
            EventType::Added
        } else {
            EventType::Modified
        };
        Ok(self.store.put(&def.storage_key(), &ns, &name, rv, obj, ty))
    }

    fn establish_crd(&mut self, crd: &mut Value) -> Result<(), ApiError> {
        let def = registry::def_from_crd(crd).map_err(|c| {
            ApiError::invalid(
                "apiextensions.k8s.io",
                "CustomResourceDefinition",
                meta_str(crd, "name"),
                c,
            )
        })?;
        if let Some(existing) = self.registry.get(&def.group, &def.plural)
            && !existing.custom
        {
            return Err(ApiError::invalid(
                "apiextensions.k8s.io",
                "CustomResourceDefinition",
                meta_str(crd, "name"),
                vec![Cause::new(
                    "FieldValueInvalid",
                    "spec.names.plural",
                    "Invalid value: conflicts with a built-in resource",
                )],
            ));
        }
        let now = now_rfc3339();
        let since = |t: &str| {
            crd.pointer("/status/conditions")
                .and_then(Value::as_array)
                .and_then(|a| {
                    a.iter()
                        .find(|c| c.get("type").and_then(Value::as_str) == Some(t))
                })
                .and_then(|c| c.get("lastTransitionTime").cloned())
                .unwrap_or(json!(now))
        };
        let mut names = crd.pointer("/spec/names").cloned().unwrap_or(json!({}));
        names["singular"] = json!(def.singular);
        names["listKind"] = json!(def.list_kind);
        let mut stored: Vec<String> = crd
            .pointer("/status/storedVersions")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default();
        let sv = def.storage_version().to_string();
        if !stored.contains(&sv) {
            stored.push(sv);
        }
        crd["status"] = json!({
            "conditions": [
                {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts", "message": "no conflicts found", "lastTransitionTime": since("NamesAccepted")},
                {"type": "Established", "status": "True", "reason": "InitialNamesAccepted", "message": "the initial names have been accepted", "lastTransitionTime": since("Established")},
            ],
            "acceptedNames": names,
            "storedVersions": stored,
        });
        self.registry.install(def);
        Ok(())
    }

    pub fn create(
        &mut self,
        def: &Arc<ResourceDef>,
        version: &str,
        url_ns: &str,
        body: Value,
        manager: &str,
    ) -> Result<Arc<Value>, ApiError> {
        self.create_inner(def, version, url_ns, body, manager, None)
    }

    /// Create; `preset_managed` carries managedFields already computed by apply.
    fn create_inner(
        &mut self,
        def: &Arc<ResourceDef>,
        version: &str,
        url_ns: &str,
        mut body: Value,
        manager: &str,
        preset_managed: Option<Value>,
    ) -> Result<Arc<Value>, ApiError> {
        if !body.is_object() {
            return Err(ApiError::bad_request(
                "the object provided is not a JSON object",
            ));
        }
        if let Some(k) = body.get("kind").and_then(Value::as_str)
            && k != def.kind
        {
            return Err(ApiError::bad_request(format!(
                "the kind of the object ({k}) does not match the resource ({})",
                def.kind
            )));
        }
        body["apiVersion"] = json!(def.api_version(version));
        body["kind"] = json!(def.kind);
        if def.is_event_view() {
            body = crate::events::to_core(&body);
        }
        let meta = meta_mut(&mut body);
        if def.namespaced {
            let bns = meta.get("namespace").and_then(Value::as_str).unwrap_or("");
            if !bns.is_empty() && bns != url_ns {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ));
            }
            meta.insert("namespace".into(), json!(url_ns));
        } else {
            meta.remove("namespace");
        }
        let mut name = meta
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        if name.is_empty() {
            let gen_name = meta
                .get("generateName")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            if gen_name.is_empty() {
                return Err(ApiError::invalid(
                    &def.group,
                    &def.kind,
                    "",
                    vec![Cause::new(
                        "FieldValueRequired",
                        "metadata.name",
                        "Required value: name or generateName is required",
                    )],
                ));
            }
            loop {
                name = format!("{gen_name}{}", util::random_suffix(5));
                if self.store.get(&def.storage_key(), url_ns, &name).is_none() {
                    break;
                }
            }
            meta.insert("name".into(), json!(name));
        }
        for k in [
            "resourceVersion",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "managedFields",
            "selfLink",
        ] {
            meta.remove(k);
        }
        meta.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
        meta.insert("creationTimestamp".into(), json!(now_rfc3339()));
        if has_generation(def) {
            meta.insert("generation".into(), json!(1));
        } else {
            meta.remove("generation");
        }
        if def.namespaced {
            self.namespace_usable(url_ns)?;
        }
        if self.store.get(&def.storage_key(), url_ns, &name).is_some() {
            return Err(ApiError::already_exists(&def.group, &def.plural, &name));
        }
        if def.custom
            && def.has_status(version)
            && let Some(m) = body.as_object_mut()
        {
            m.remove("status");
        }
        if def.group.is_empty() && def.plural == "namespaces" {
            body["status"] = json!({"phase": "Active"});
        }
        if def.group.is_empty() && def.plural == "pods" && body.pointer("/status/phase").is_none() {
            body["status"] = json!({"phase": "Pending"});
        }
        self.admit(def, version, &mut body, None)?;
        match preset_managed {
            Some(mf) => {
                meta_mut(&mut body).insert("managedFields".into(), mf);
            }
            None => {
                let schema = def.version(version).and_then(|v| v.schema.clone());
                patch::track_update(
                    None,
                    &mut body,
                    manager,
                    schema.as_deref(),
                    &def.api_version(version),
                    "",
                );
            }
        }
        self.commit(def, body, true)
    }

    /// PUT semantics, shared by patch (which computes the body first). `manager` records
    /// field ownership; `None` means the body's managedFields are authoritative (apply).
    #[allow(clippy::too_many_arguments)]
    pub fn update(
        &mut self,
        def: &Arc<ResourceDef>,
        version: &str,
        ns: &str,
        name: &str,
        sub: &str,
        body: Value,
        manager: Option<&str>,
    ) -> Result<Arc<Value>, ApiError> {
        let old = self.lookup_obj(def, ns, name)?;
        if !body.is_object() {
            return Err(ApiError::bad_request(
                "the object provided is not a JSON object",
            ));
        }
        let bname = meta_str(&body, "name");
        if !bname.is_empty() && bname != name {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({bname}) does not match the name on the URL ({name})"
            )));
        }
        let brv = meta_str(&body, "resourceVersion");
        if !brv.is_empty() && brv != meta_str(&old, "resourceVersion") {
            return Err(ApiError::stale(&def.group, &def.plural, name));
        }
        let status_sub = def.has_status(version);
        let mut new = match sub {
            "status" => {
                let mut n = (*old).clone();
                match body.get("status") {
                    Some(s) => n["status"] = s.clone(),
                    None => {
                        if let Some(m) = n.as_object_mut() {
                            m.remove("status");
                        }
                    }
                }
                if manager.is_none() {
                    match body.pointer("/metadata/managedFields") {
                        Some(mf) => meta_mut(&mut n).insert("managedFields".into(), mf.clone()),
                        None => meta_mut(&mut n).remove("managedFields"),
                    };
                }
                n
            }
            _ => {
                let mut n = body;
                if status_sub {
                    match old.get("status") {
                        Some(s) => n["status"] = s.clone(),
                        None => {
                            if let Some(m) = n.as_object_mut() {
                                m.remove("status");
                            }
                        }
                    }
                }
                n
            }
        };
        new["apiVersion"] = json!(def.api_version(version));
        new["kind"] = json!(def.kind);
        if def.is_event_view() {
            new = crate::events::to_core(&new);
        }
        {
            let om = old.get("metadata").cloned().unwrap_or(json!({}));
            let m = meta_mut(&mut new);
            for k in [
                "name",
                "namespace",
                "uid",
                "creationTimestamp",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "generation",
            ] {
                match om.get(k) {
                    Some(v) => m.insert(k.into(), v.clone()),
                    None => m.remove(k),
                };
            }
            m.insert(
                "resourceVersion".into(),
                om.get("resourceVersion").cloned().unwrap_or(json!("")),
            );
            if let Some(mf) = om.get("managedFields")
                && manager.is_some()
            {
                m.insert("managedFields".into(), mf.clone());
            }
        }
        self.admit(def, version, &mut new, Some(&old))?;
        if has_generation(def) {
            let strip = status_sub || !def.custom;
            if spec_part(&old, strip) != spec_part(&new, strip) {
                let g = old
                    .pointer("/metadata/generation")
                    .and_then(Value::as_i64)
                    .unwrap_or(0)
                    + 1;
                meta_mut(&mut new).insert("generation".into(), json!(g));
            }
        }
        if let Some(mgr) = manager {
            let schema = def.version(version).and_then(|v| v.schema.clone());
            patch::track_update(
                Some(&old),
                &mut new,
                mgr,
                schema.as_deref(),
                &def.api_version(version),
                sub,
            );
        }
        let same_managers = manager.is_some()
            || old.pointer("/metadata/managedFields") == new.pointer("/metadata/managedFields");
        if same_managers && same_ignoring_bookkeeping(&old, &new) {
            return Ok(old);
        }
        self.commit(def, new, false)
    }

    #[allow(clippy::too_many_arguments)]
    pub fn patch(
        &mut self,
        def: &Arc<ResourceDef>,
        version: &str,
        ns: &str,
        name: &str,
        sub: &str,
        ptype: PatchType,
        body: &Value,
        manager: &str,
        force: bool,
    ) -> Result<(Arc<Value>, bool), ApiError> {
        let existing = self.store.get(&def.storage_key(), ns, name);
        let schema = def.version(version).and_then(|v| v.schema.clone());
        let Some(old) = existing else {
            if ptype == PatchType::Apply && sub.is_empty() {
                let api_version = def.api_version(version);
                let ApplyOutcome::Merged(mut created) = patch::server_side_apply(
                    &json!({}),
                    body,
                    manager,
                    force,
                    schema.as_deref(),
                    &api_version,
                    "",
                ) else {
                    return Err(ApiError::internal("apply conflict on a new object"));
                };
                meta_mut(&mut created).insert("name".into(), json!(name));
                if def.namespaced {
                    meta_mut(&mut created).insert("namespace".into(), json!(ns));
                }
                let mf = created
                    .pointer("/metadata/managedFields")
                    .cloned()
                    .unwrap_or(json!([]));
                let out = self.create_inner(def, version, ns, created, manager, Some(mf))?;
                return Ok((out, true));
            }
            return Err(ApiError::not_found(&def.group, &def.plural, name));
        };
        let cur = at_version(&old, def, version);
        let (new, track) = match ptype {
            PatchType::Merge => {
                let mut n = cur;
                json_patch::merge(&mut n, body);
                (n, true)
            }
            PatchType::Json => {
                let mut n = cur;
                patch::json_patch(&mut n, body)?;
                (n, true)
            }
            PatchType::Strategic => {
                if def.custom {
                    return Err(ApiError::new(
                        415,
                        "UnsupportedMediaType",
                        "strategic merge patch is not supported for custom resources; use application/merge-patch+json or application/apply-patch+yaml",
                    ));
                }
                let mut n = cur;
                patch::strategic_merge(&mut n, body);
                (n, true)
            }
            PatchType::Apply => {
                match patch::server_side_apply(
                    &cur,
                    body,
                    manager,
                    force,
                    schema.as_deref(),
                    &def.api_version(version),
                    sub,
                ) {
                    ApplyOutcome::Merged(m) => (m, false),
                    ApplyOutcome::Conflicts(c) => {
                        return Err(apply_conflict(&def.group, &def.plural, name, &c, version));
                    }
                }
            }
        };
        let track_mgr = if track { Some(manager) } else { None };
        let out = if track {
            self.update(def, version, ns, name, sub, new, track_mgr)?
        } else {
            self.update_keep_managed(def, version, ns, name, sub, new)?
        };
        Ok((out, false))
    }

    /// Update with the managedFields of `new` taken as computed (server-side apply).
    fn update_keep_managed(
        &mut self,
        def: &Arc<ResourceDef>,
        version: &str,
        ns: &str,
        name: &str,
        sub: &str,
        new: Value,
    ) -> Result<Arc<Value>, ApiError> {
        self.update(def, version, ns, name, sub, new, None)
    }

    pub fn list(
        &self,
        def: &ResourceDef,
        version: &str,
        ns: Option<&str>,
        opts: &ListOpts,
    ) -> Result<Value, ApiError> {
        let current = self.store.rv;
        if let Some(rv) = opts
            .resource_version
            .as_deref()
            .filter(|r| !r.is_empty() && *r != "0")
        {
            let n: u64 = rv
                .parse()
                .map_err(|_| ApiError::bad_request(format!("invalid resource version: {rv}")))?;
            if opts.rv_match.as_deref() == Some("Exact") && n != current {
                return Err(ApiError::gone(format!(
                    "too old resource version: {n} ({current})"
                )));
            }
            if n > current {
                return Err(ApiError::new(
                    504,
                    "Timeout",
                    format!("Too large resource version: {n}, current: {current}"),
                ));
            }
        }
        let mut start_after: Option<(String, String)> = None;
        let mut list_rv = current;
        if let Some(tok) = opts.continue_token.as_deref().filter(|t| !t.is_empty()) {
            let bad = || ApiError::bad_request("continue key is not valid");
            let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(tok)
                .map_err(|_| bad())?;
            let v: Value = serde_json::from_slice(&raw).map_err(|_| bad())?;
            let rv = v.get("rv").and_then(Value::as_u64).ok_or_else(bad)?;
            if rv < self.store.floor {
                return Err(ApiError::gone(
                    "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results. Continuing with the provided token results in an inconsistent list - objects that were created, modified, or deleted between the time the first chunk was returned and now may show up in the list.",
                ));
            }
            list_rv = rv;
            start_after = Some((
                v.get("ns").and_then(Value::as_str).unwrap_or("").into(),
                v.get("name").and_then(Value::as_str).unwrap_or("").into(),
            ));
        }
        let mut items = Vec::new();
        let mut next: Option<(String, String)> = None;
        let mut remaining = 0usize;
        if let Some(map) = self.store.map(&def.storage_key()) {
            use std::ops::Bound;
            let lower = match &start_after {
                Some(k) => Bound::Excluded(k.clone()),
                None => match ns {
                    Some(n) => Bound::Included((n.to_string(), String::new())),
                    None => Bound::Unbounded,
                },
            };
            let pinned = opts.fields.pinned_name();
            for ((ons, oname), obj) in map.range((lower, Bound::Unbounded)) {
                if let Some(n) = ns
                    && ons != n
                {
                    if ons.as_str() > n {
                        break;
                    }
                    continue;
                }
                if pinned.is_some_and(|p| p != oname) {
                    continue;
                }
                // Selectors apply to the object as this API serves it.
                let served = def.is_event_view().then(|| at_version(obj, def, version));
                let seen = served.as_ref().unwrap_or(obj);
                if !opts.labels.matches(seen) || !opts.fields.matches(seen) {
                    continue;
                }
                if let Some(l) = opts.limit
                    && l > 0
                    && items.len() >= l
                {
                    if next.is_none()
                        && let Some(last) = items.last()
                    {
                        next = Some((
                            meta_str(last, "namespace").to_string(),
                            meta_str(last, "name").to_string(),
                        ));
                    }
                    remaining += 1;
                    continue;
                }
                items.push(at_version(obj, def, version));
            }
        }
        let mut meta = json!({ "resourceVersion": list_rv.to_string() });
        if let Some((n, name)) = next {
            let tok = json!({"rv": list_rv, "ns": n, "name": name}).to_string();
            meta["continue"] = json!(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(tok));
            if opts.labels.is_empty() && opts.fields.pinned_name().is_none() {
                meta["remainingItemCount"] = json!(remaining);
            }
        }
        Ok(json!({
            "apiVersion": def.api_version(version),
            "kind": def.list_kind,
            "metadata": meta,
            "items": items,
        }))
    }

    pub fn delete(
        &mut self,
        def: &Arc<ResourceDef>,
        version: &str,
        ns: &str,
        name: &str,
        opts: &DeleteOpts,
    ) -> Result<Value, ApiError> {
        let old = self.lookup_obj(def, ns, name)?;
        if let Some(uid) = &opts.uid
            && uid != meta_str(&old, "uid")
        {
            return Err(ApiError::conflict(
                &def.group,
                &def.plural,
                name,
                &format!(
                    "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                    meta_str(&old, "uid")
                ),
            ));
        }
        if let Some(rv) = &opts.resource_version
            && rv != meta_str(&old, "resourceVersion")
        {
            return Err(ApiError::conflict(
                &def.group,
                &def.plural,
                name,
                &format!(
                    "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {}",
                    meta_str(&old, "resourceVersion")
                ),
            ));
        }
        let uid = meta_str(&old, "uid").to_string();
        let mut obj = (*old).clone();
        let policy = opts.propagation.as_deref().unwrap_or("Background");
        if policy == "Orphan" {
            self.orphan_dependents(&uid);
        }
        let mut fins = finalizers(&obj);
        if policy == "Foreground"
            && self.has_dependents(&uid)
            && !fins.iter().any(|f| f == "foregroundDeletion")
        {
            fins.push("foregroundDeletion".into());
            meta_mut(&mut obj).insert("finalizers".into(), json!(fins));
        }
        let is_ns = def.group.is_empty() && def.plural == "namespaces";
        if !fins.is_empty() || (is_ns && self.namespace_has_content(name)) {
            if obj.pointer("/metadata/deletionTimestamp").is_some() && obj == *old {
                return Ok(at_version(&old, def, version));
            }
            if obj.pointer("/metadata/deletionTimestamp").is_none() {
                let m = meta_mut(&mut obj);
                m.insert("deletionTimestamp".into(), json!(now_rfc3339()));
                m.insert("deletionGracePeriodSeconds".into(), json!(0));
                // Marking for deletion bumps a positive generation, so that
                // controllers filtering on generation see it (upstream:
                // k8s.io/apiserver/pkg/registry/generic/registry/store.go, markAsDeleting).
                if let Some(g) = m
                    .get("generation")
                    .and_then(Value::as_i64)
                    .filter(|g| *g > 0)
                {
                    m.insert("generation".into(), json!(g + 1));
                }
            }
            if is_ns {
                obj["status"] = json!({"phase": "Terminating"});
            }
            let rv = self.store.next_rv();
            meta_mut(&mut obj).insert("resourceVersion".into(), json!(rv.to_string()));
            let out = self
                .store
                .put(&def.storage_key(), ns, name, rv, obj, EventType::Modified);
            self.collect_garbage();
            let latest = self.store.get(&def.storage_key(), ns, name).unwrap_or(out);
            return Ok(at_version(&latest, def, version));
        }
        let rv = self.store.next_rv();
        meta_mut(&mut obj).insert("resourceVersion".into(), json!(rv.to_string()));
        self.finish_delete(def, ns, name, obj.clone());
        self.collect_garbage();
        Ok(at_version(&obj, def, version))
    }

    /// Remove an object for good, with the type-specific consequences.
    fn finish_delete(&mut self, def: &ResourceDef, ns: &str, name: &str, obj: Value) {
        let rv = obj
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
            .and_then(|s| s.parse().ok())
            .unwrap_or(self.store.rv);
        self.store
            .remove(&def.storage_key(), ns, name, rv, obj.clone());
        if def.group == "apiextensions.k8s.io" && def.plural == "customresourcedefinitions" {
            let group = obj
                .pointer("/spec/group")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            let plural = obj
                .pointer("/spec/names/plural")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            let key = registry::res_key(&group, &plural);
            let crs = self.store.take_all(&key);
            for cr in crs {
                let rv = self.store.next_rv();
                let mut last = (*cr).clone();
                meta_mut(&mut last).insert("resourceVersion".into(), json!(rv.to_string()));
                let cns = meta_str(&last, "namespace").to_string();
                let cname = meta_str(&last, "name").to_string();
                self.store.remove(&key, &cns, &cname, rv, last);
            }
            self.registry.remove(&group, &plural);
        }
    }

    fn has_dependents(&self, uid: &str) -> bool {
        self.store
            .all_maps()
            .any(|(_, m)| m.values().any(|o| owned_by(o, uid)))
    }

    fn namespace_has_content(&self, ns: &str) -> bool {
        self.store
            .all_maps()
            .any(|(k, m)| k != "/namespaces" && m.keys().any(|(n, _)| n == ns))
    }

    fn orphan_dependents(&mut self, uid: &str) {
        let deps: Vec<(String, Arc<Value>)> = self
            .store
            .all_maps()
            .flat_map(|(k, m)| {
                m.values()
                    .filter(|o| owned_by(o, uid))
                    .map(move |o| (k.clone(), o.clone()))
            })
            .collect();
        for (key, o) in deps {
            let mut n = (*o).clone();
            if let Some(refs) = n
                .pointer_mut("/metadata/ownerReferences")
                .and_then(Value::as_array_mut)
            {
                refs.retain(|r| r.get("uid").and_then(Value::as_str) != Some(uid));
            }
            let rv = self.store.next_rv();
            meta_mut(&mut n).insert("resourceVersion".into(), json!(rv.to_string()));
            let ns = meta_str(&n, "namespace").to_string();
            let name = meta_str(&n, "name").to_string();
            self.store.put(&key, &ns, &name, rv, n, EventType::Modified);
        }
    }

    /// The garbage collector and namespace controller, run to a fixed point after deletions.
    fn collect_garbage(&mut self) {
        for _ in 0..64 {
            let uids: HashSet<String> = self
                .store
                .all_maps()
                .flat_map(|(_, m)| m.values().map(|o| meta_str(o, "uid").to_string()))
                .collect();
            let foreground: HashSet<String> = self
                .store
                .all_maps()
                .flat_map(|(_, m)| m.values())
                .filter(|o| {
                    o.pointer("/metadata/deletionTimestamp").is_some()
                        && finalizers(o).iter().any(|f| f == "foregroundDeletion")
                })
                .map(|o| meta_str(o, "uid").to_string())
                .collect();
            let terminating: HashSet<String> = self
                .store
                .map("/namespaces")
                .map(|m| {
                    m.values()
                        .filter(|o| o.pointer("/metadata/deletionTimestamp").is_some())
                        .map(|o| meta_str(o, "name").to_string())
                        .collect()
                })
                .unwrap_or_default();
            let mut doomed: Vec<(String, String, String)> = Vec::new();
            let mut release: Vec<(String, String, String)> = Vec::new();
            for (key, m) in self.store.all_maps() {
                for ((ns, name), o) in m {
                    if o.pointer("/metadata/deletionTimestamp").is_some() {
                        let fg_done = foreground.contains(meta_str(o, "uid"))
                            && !self.has_dependents(meta_str(o, "uid"));
                        let ns_done = key == "/namespaces"
                            && finalizers(o).is_empty()
                            && !self.namespace_has_content(name);
                        if fg_done || ns_done {
                            release.push((key.clone(), ns.clone(), name.clone()));
                        }
                        continue;
                    }
                    let refs: Vec<String> = o
                        .pointer("/metadata/ownerReferences")
                        .and_then(Value::as_array)
                        .map(|a| {
                            a.iter()
                                .filter_map(|r| {
                                    r.get("uid").and_then(Value::as_str).map(String::from)
                                })
                                .collect()
                        })
                        .unwrap_or_default();
                    let orphaned = !refs.is_empty() && refs.iter().all(|u| !uids.contains(u));
                    let owner_fg = refs.iter().any(|u| foreground.contains(u));
                    if orphaned || owner_fg || terminating.contains(ns) {
                        doomed.push((key.clone(), ns.clone(), name.clone()));
                    }
                }
            }
            if doomed.is_empty() && release.is_empty() {
                return;
            }
            for (key, ns, name) in release {
                let Some(o) = self.store.get(&key, &ns, &name) else {
                    continue;
                };
                let mut n = (*o).clone();
                let fins: Vec<String> = finalizers(&n)
                    .into_iter()
                    .filter(|f| f != "foregroundDeletion")
                    .collect();
                meta_mut(&mut n).insert("finalizers".into(), json!(fins));
                if fins.is_empty() {
                    meta_mut(&mut n).remove("finalizers");
                }
                let Some(def) = self.def_for_key(&key) else {
                    continue;
                };
                let rv = self.store.next_rv();
                meta_mut(&mut n).insert("resourceVersion".into(), json!(rv.to_string()));
                if fins.is_empty() {
                    self.finish_delete(&def, &ns, &name, n);
                } else {
                    self.store.put(&key, &ns, &name, rv, n, EventType::Modified);
                }
            }
            for (key, ns, name) in doomed {
                let Some(def) = self.def_for_key(&key) else {
                    continue;
                };
                let _ = self.delete_marked(&def, &ns, &name);
            }
        }
    }

    /// GC deletion of one dependent: honours its finalizers (no recursion into GC).
    fn delete_marked(&mut self, def: &Arc<ResourceDef>, ns: &str, name: &str) -> Option<()> {
        let o = self.store.get(&def.storage_key(), ns, name)?;
        let mut n = (*o).clone();
        let rv = self.store.next_rv();
        meta_mut(&mut n).insert("resourceVersion".into(), json!(rv.to_string()));
        let is_ns = def.group.is_empty() && def.plural == "namespaces";
        if finalizers(&n).is_empty() && !(is_ns && self.namespace_has_content(name)) {
            self.finish_delete(def, ns, name, n);
        } else {
            let m = meta_mut(&mut n);
            m.insert("deletionTimestamp".into(), json!(now_rfc3339()));
            m.insert("deletionGracePeriodSeconds".into(), json!(0));
            self.store
                .put(&def.storage_key(), ns, name, rv, n, EventType::Modified);
        }
        Some(())
    }

    fn def_for_key(&self, key: &str) -> Option<Arc<ResourceDef>> {
        let (g, p) = key.split_once('/')?;
        self.registry.get(g, p)
    }

    pub fn delete_collection(
        &mut self,
        def: &Arc<ResourceDef>,
        version: &str,
        ns: Option<&str>,
        list: &ListOpts,
        opts: &DeleteOpts,
    ) -> Result<Value, ApiError> {
        let listed = self.list(def, version, ns, list)?;
        let mut items = Vec::new();
        for it in listed
            .get("items")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
        {
            let ins = meta_str(&it, "namespace").to_string();
            let iname = meta_str(&it, "name").to_string();
            if let Ok(o) = self.delete(def, version, &ins, &iname, opts) {
                items.push(o);
            }
        }
        Ok(
            json!({"apiVersion": def.api_version(version), "kind": def.list_kind, "metadata": {"resourceVersion": self.store.rv.to_string()}, "items": items}),
        )
    }

    pub fn get_scale(
        &self,
        def: &ResourceDef,
        version: &str,
        ns: &str,
        name: &str,
    ) -> Result<Value, ApiError> {
        let obj = self.lookup_obj(def, ns, name)?;
        let spec = def
            .version(version)
            .and_then(|v| v.scale.clone())
            .ok_or_else(ApiError::path_not_found)?;
        let replicas = obj
            .pointer(&pointer(&spec.spec_replicas))
            .cloned()
            .unwrap_or(if def.custom { json!(0) } else { json!(1) });
        let status_replicas = obj
            .pointer(&pointer(&spec.status_replicas))
            .cloned()
            .unwrap_or(json!(0));
        let selector = match &spec.label_selector {
            Some(p) => obj
                .pointer(&pointer(p))
                .and_then(Value::as_str)
                .map(String::from),
            None => obj
                .pointer("/spec/selector")
                .map(|s| LabelSelector::from_object(s).to_selector_string()),
        };
        let mut status = json!({ "replicas": status_replicas });
        if let Some(s) = selector {
            status["selector"] = json!(s);
        }
        let m = obj.get("metadata").cloned().unwrap_or(json!({}));
        let mut meta = json!({});
        for k in [
            "name",
            "namespace",
            "uid",
            "resourceVersion",
            "creationTimestamp",
        ] {
            if let Some(v) = m.get(k) {
                meta[k] = v.clone();
            }
        }
        Ok(
            json!({"apiVersion": "autoscaling/v1", "kind": "Scale", "metadata": meta, "spec": {"replicas": replicas}, "status": status}),
        )
    }

    pub fn update_scale(
        &mut self,
        def: &Arc<ResourceDef>,
        version: &str,
        ns: &str,
        name: &str,
        scale: &Value,
        manager: &str,
    ) -> Result<Value, ApiError> {
        let obj = self.lookup_obj(def, ns, name)?;
        let spec = def
            .version(version)
            .and_then(|v| v.scale.clone())
            .ok_or_else(ApiError::path_not_found)?;
        let rv = meta_str(scale, "resourceVersion");
        if !rv.is_empty() && rv != meta_str(&obj, "resourceVersion") {
            return Err(ApiError::stale(&def.group, &def.plural, name));
        }
        let replicas = scale.pointer("/spec/replicas").cloned().unwrap_or(json!(0));
        if !replicas.is_i64() || replicas.as_i64().is_some_and(|r| r < 0) {
            return Err(ApiError::invalid(
                "autoscaling",
                "Scale",
                name,
                vec![Cause::new(
                    "FieldValueInvalid",
                    "spec.replicas",
                    format!("Invalid value: {replicas}: must be greater than or equal to 0"),
                )],
            ));
        }
        let mut n = at_version(&obj, def, version);
        set_pointer(&mut n, &spec.spec_replicas, replicas);
        if let Some(m) = n.get_mut("metadata").and_then(Value::as_object_mut) {
            m.remove("resourceVersion");
        }
        self.update(def, version, ns, name, "", n, Some(manager))?;
        self.get_scale(def, version, ns, name)
    }
}

fn owned_by(o: &Value, uid: &str) -> bool {
    o.pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .is_some_and(|a| {
            a.iter()
                .any(|r| r.get("uid").and_then(Value::as_str) == Some(uid))
        })
}

fn apply_conflict(
    group: &str,
    resource: &str,
    name: &str,
    conflicts: &[(String, String)],
    version: &str,
) -> ApiError {
    let gv = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    let lines: Vec<String> = conflicts
        .iter()
        .map(|(m, f)| format!("conflict with \"{m}\" using {gv}: {f}"))
        .collect();
    let msg = if conflicts.len() == 1 {
        format!("Apply failed with 1 conflict: {}", lines[0])
    } else {
        format!(
            "Apply failed with {} conflicts: {}",
            conflicts.len(),
            lines.join("\n")
        )
    };
    let mut e = ApiError::new(409, "Conflict", msg);
    let mut d = json!({"name": name, "kind": resource});
    if !group.is_empty() {
        d["group"] = json!(group);
    }
    d["causes"] = Value::Array(
        conflicts
            .iter()
            .map(|(m, f)| json!({"reason": "FieldManagerConflict", "message": format!("conflict with \"{m}\" using {gv}"), "field": f}))
            .collect(),
    );
    e.details = Some(d);
    e
}

const KEY_MSG: &str = "a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')";

fn valid_key(k: &str) -> bool {
    !k.is_empty()
        && k.len() <= 253
        && k.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
        && k != "."
        && k != ".."
}

fn check_keys(obj: &Value, field: &str, causes: &mut Vec<Cause>) {
    if let Some(m) = obj.get(field).and_then(Value::as_object) {
        for k in m.keys() {
            if !valid_key(k) {
                causes.push(Cause::new(
                    "FieldValueInvalid",
                    format!("{field}[{k}]"),
                    format!("Invalid value: \"{k}\": {KEY_MSG}"),
                ));
            }
        }
    }
}

/// `stringData` is write-only: fold it into base64 `data` like the real server.
fn fold_secret(obj: &mut Value, causes: &mut Vec<Cause>) -> Result<(), ApiError> {
    let engine = base64::engine::general_purpose::STANDARD;
    if let Some(Value::Object(sd)) = obj.as_object_mut().and_then(|m| m.remove("stringData")) {
        if !obj.get("data").is_some_and(Value::is_object) {
            obj["data"] = json!({});
        }
        for (k, v) in sd {
            let s = match v {
                Value::String(s) => s,
                other => other.to_string(),
            };
            obj["data"][k.as_str()] = json!(engine.encode(s.as_bytes()));
        }
    }
    if let Some(m) = obj.get("data").and_then(Value::as_object) {
        for (k, v) in m {
            if let Some(s) = v.as_str()
                && engine.decode(s).is_err()
            {
                return Err(ApiError::bad_request(format!(
                    "Secret in version \"v1\" cannot be handled as a Secret: illegal base64 data at input byte 0 (key {k})"
                )));
            }
        }
    }
    check_keys(obj, "data", causes);
    Ok(())
}
