//! [`Endpoint`]: what a routed request is, decided once per request from its method, the route
//! it matched and (for key actions) the action it names. The [`classify`] middleware puts it in
//! the request's extensions; the metrics ([`crate::metrics`]), audit ([`crate::audit`]) and
//! rate-limit ([`crate::ratelimit`], via the `Auth` extractor) layers read it from there instead
//! of matching paths each on their own.

use axum::extract::{MatchedPath, Request};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;
use keyward_domain::Action;

use crate::ratelimit::Class;

/// A route of the router (its path template), which is also the `route` label of the
/// request metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Route {
    IdentityToken,
    Keys,
    KeyMetadata,
    Key,
    KeyVersions,
    KeyRestore,
    KeyPurge,
    KeyPolicies,
    KeyAlias,
    KeyRegistrations,
    AllRegistrations,
    KeyRegistration,
    EventAck,
    AllowedIpPort,
    KeysWithPolicyOverrides,
    InstancePolicies,
    KeyRings,
    KeyRing,
    KeyActionPath,
    ImportToken,
    /// Keyward's extension: the audit log table (`routes/xkeyward_audit.rs`).
    XKeywardAudit,
    Batch,
    OidcToken,
    ResourceInstance,
    KmipAdapters,
    KmipAdapter,
    KmipCerts,
    KmipCert,
    KmipObjects,
    KmipObject,
}

impl Route {
    /// Every route, for tests and for the router's table.
    pub const ALL: [Route; 30] = [
        Route::IdentityToken,
        Route::Keys,
        Route::KeyMetadata,
        Route::Key,
        Route::KeyVersions,
        Route::KeyRestore,
        Route::KeyPurge,
        Route::KeyPolicies,
        Route::KeyAlias,
        Route::KeyRegistrations,
        Route::AllRegistrations,
        Route::KeyRegistration,
        Route::EventAck,
        Route::AllowedIpPort,
        Route::KeysWithPolicyOverrides,
        Route::InstancePolicies,
        Route::KeyRings,
        Route::KeyRing,
        Route::KeyActionPath,
        Route::ImportToken,
        Route::XKeywardAudit,
        Route::Batch,
        Route::OidcToken,
        Route::ResourceInstance,
        Route::KmipAdapters,
        Route::KmipAdapter,
        Route::KmipCerts,
        Route::KmipCert,
        Route::KmipObjects,
        Route::KmipObject,
    ];

    /// The path template, as given to the router and shown as the `route` metrics label.
    pub const fn template(self) -> &'static str {
        match self {
            Route::IdentityToken => "/identity/token",
            Route::Keys => "/api/v2/keys",
            Route::KeyMetadata => "/api/v2/keys/{id}/metadata",
            Route::Key => "/api/v2/keys/{id}",
            Route::KeyVersions => "/api/v2/keys/{id}/versions",
            Route::KeyRestore => "/api/v2/keys/{id}/restore",
            Route::KeyPurge => "/api/v2/keys/{id}/purge",
            Route::KeyPolicies => "/api/v2/keys/{id}/policies",
            Route::KeyAlias => "/api/v2/keys/{id}/aliases/{alias}",
            Route::KeyRegistrations => "/api/v2/keys/{id}/registrations",
            Route::AllRegistrations => "/api/v2/keys/registrations",
            Route::KeyRegistration => "/api/v2/keys/{id}/registrations/{crn}",
            Route::EventAck => "/api/v2/event_ack",
            Route::AllowedIpPort => "/api/v2/instance/allowed_ip_port",
            Route::KeysWithPolicyOverrides => "/api/v2/keys_with_policy_overrides",
            Route::InstancePolicies => "/api/v2/instance/policies",
            Route::KeyRings => "/api/v2/key_rings",
            Route::KeyRing => "/api/v2/key_rings/{id}",
            Route::KeyActionPath => "/api/v2/keys/{id}/actions/{action}",
            Route::ImportToken => "/api/v2/import_token",
            Route::XKeywardAudit => "/api/v2/x-keyward/audit",
            Route::Batch => "/api/v2/x-keyward/batch",
            Route::OidcToken => "/oidc/token",
            Route::ResourceInstance => "/v2/resource_instances/{id}",
            Route::KmipAdapters => "/api/v2/kmip_adapters",
            Route::KmipAdapter => "/api/v2/kmip_adapters/{id}",
            Route::KmipCerts => "/api/v2/kmip_adapters/{id}/certificates",
            Route::KmipCert => "/api/v2/kmip_adapters/{id}/certificates/{cert_id}",
            Route::KmipObjects => "/api/v2/kmip_adapters/{id}/kmip_objects",
            Route::KmipObject => "/api/v2/kmip_adapters/{id}/kmip_objects/{object_id}",
        }
    }

    /// The route of a path template; `None` for a template this module does not know.
    pub fn of_template(template: &str) -> Option<Route> {
        Route::ALL.into_iter().find(|r| r.template() == template)
    }
}

/// The action a key-action request names (`/keys/{id}/actions/{action}` or the deprecated
/// `/keys/{id}?action=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyAction {
    Wrap,
    Unwrap,
    Rewrap,
    Rotate,
    Disable,
    Enable,
    SetKeyForDeletion,
    UnsetKeyForDeletion,
    Restore,
    Sync,
    /// `rewrapTo`, a Keyward extension: cross-key rewrap.
    RewrapTo,
}

impl KeyAction {
    /// The action of its wire name (case-sensitive, as the handlers dispatch).
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "wrap" => KeyAction::Wrap,
            "unwrap" => KeyAction::Unwrap,
            "rewrap" => KeyAction::Rewrap,
            "rotate" => KeyAction::Rotate,
            "disable" => KeyAction::Disable,
            "enable" => KeyAction::Enable,
            "setKeyForDeletion" => KeyAction::SetKeyForDeletion,
            "unsetKeyForDeletion" => KeyAction::UnsetKeyForDeletion,
            "restore" => KeyAction::Restore,
            "sync" => KeyAction::Sync,
            "rewrapTo" => KeyAction::RewrapTo,
            _ => return None,
        })
    }

    fn audited(self) -> Action {
        match self {
            KeyAction::Wrap => Action::Wrap,
            KeyAction::Unwrap => Action::Unwrap,
            KeyAction::Rewrap => Action::Rewrap,
            KeyAction::Rotate => Action::Rotate,
            KeyAction::Disable => Action::Disable,
            KeyAction::Enable => Action::Enable,
            KeyAction::SetKeyForDeletion => Action::SetKeyForDeletion,
            KeyAction::UnsetKeyForDeletion => Action::UnsetKeyForDeletion,
            KeyAction::Restore => Action::RestoreKey,
            KeyAction::Sync => Action::Sync,
            KeyAction::RewrapTo => Action::Rewrap,
        }
    }
}

/// What a request does on its route.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    IssueToken,
    ListKeys,
    HeadKeys,
    CreateKey,
    GetKeyMetadata,
    GetKey,
    DeleteKey,
    PatchKey,
    /// A key action; `None` when the name is missing or not one Keyward knows (the handler
    /// answers 400).
    KeyAction(Option<KeyAction>),
    ListVersions,
    RestoreKey,
    PurgeKey,
    GetKeyPolicies,
    PutKeyPolicies,
    CreateAlias,
    DeleteAlias,
    ListKeyRegistrations,
    ListAllRegistrations,
    /// Registration writes and event acknowledgements: for IBM's own services only.
    ServiceOnly,
    GetAllowedIpPort,
    GetInstancePolicies,
    PutInstancePolicies,
    ListKeyRings,
    CreateKeyRing,
    DeleteKeyRing,
    CreateImportToken,
    GetImportToken,
    ReadAudit,
    /// `POST /api/v2/x-keyward/batch`.
    Batch,
    /// `GET /v2/resource_instances/{id}` (the Resource Controller subset).
    GetResourceInstance,
    /// KMIP adapters, their certificates and objects.
    Kmip(Action),
    /// A method the route has no handler for.
    Other,
}

/// A classified request: its route and what it does there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Endpoint {
    pub route: Route,
    pub op: Op,
}

/// The first `action` query parameter, decoded.
fn action_param(query: Option<&str>) -> Option<String> {
    form_urlencoded::parse(query?.as_bytes())
        .find(|(k, _)| k == "action")
        .map(|(_, v)| v.into_owned())
}

impl Endpoint {
    /// Classifies a request that matched `route`. `HEAD` is what `GET` is on routes without a
    /// `HEAD` handler of their own (the router answers it with the `GET` handler).
    /// `last_segment` is the path's last segment and `query` its query string, read only for
    /// key actions.
    pub fn parse(method: &Method, route: Route, last_segment: &str, query: Option<&str>) -> Self {
        let m = method.as_str();
        let get = m == "GET" || m == "HEAD";
        let op = match (route, m) {
            (Route::IdentityToken | Route::OidcToken, "POST") => Op::IssueToken,
            (Route::ResourceInstance, _) if get => Op::GetResourceInstance,
            (Route::Keys, "GET") => Op::ListKeys,
            (Route::Keys, "HEAD") => Op::HeadKeys,
            (Route::Keys, "POST") | (Route::KeysWithPolicyOverrides, "POST") => Op::CreateKey,
            (Route::KeyMetadata, _) if get => Op::GetKeyMetadata,
            (Route::Key, _) if get => Op::GetKey,
            (Route::Key, "DELETE") => Op::DeleteKey,
            (Route::Key, "PATCH") => Op::PatchKey,
            (Route::Key, "POST") => {
                Op::KeyAction(action_param(query).as_deref().and_then(KeyAction::parse))
            }
            (Route::KeyActionPath, "POST") => Op::KeyAction(KeyAction::parse(last_segment)),
            (Route::KeyVersions, _) if get => Op::ListVersions,
            (Route::KeyRestore, "POST") => Op::RestoreKey,
            (Route::KeyPurge, "DELETE") => Op::PurgeKey,
            (Route::KeyPolicies, _) if get => Op::GetKeyPolicies,
            (Route::KeyPolicies, "PUT") => Op::PutKeyPolicies,
            (Route::KeyAlias, "POST") => Op::CreateAlias,
            (Route::KeyAlias, "DELETE") => Op::DeleteAlias,
            (Route::KeyRegistrations, _) if get => Op::ListKeyRegistrations,
            (Route::AllRegistrations, _) if get => Op::ListAllRegistrations,
            (Route::KeyRegistration, "POST" | "PUT" | "PATCH" | "DELETE")
            | (Route::EventAck, "POST") => Op::ServiceOnly,
            (Route::AllowedIpPort, _) if get => Op::GetAllowedIpPort,
            (Route::InstancePolicies, _) if get => Op::GetInstancePolicies,
            (Route::InstancePolicies, "PUT") => Op::PutInstancePolicies,
            (Route::KeyRings, _) if get => Op::ListKeyRings,
            (Route::KeyRing, "POST") => Op::CreateKeyRing,
            (Route::KeyRing, "DELETE") => Op::DeleteKeyRing,
            (Route::ImportToken, "POST") => Op::CreateImportToken,
            (Route::ImportToken, _) if get => Op::GetImportToken,
            (Route::XKeywardAudit, _) if get => Op::ReadAudit,
            (Route::Batch, "POST") => Op::Batch,
            (Route::KmipAdapters, _) if get => Op::Kmip(Action::ListKmipAdapters),
            (Route::KmipAdapters, "POST") => Op::Kmip(Action::CreateKmipAdapter),
            (Route::KmipAdapter, _) if get => Op::Kmip(Action::GetKmipAdapter),
            (Route::KmipAdapter, "DELETE") => Op::Kmip(Action::DeleteKmipAdapter),
            (Route::KmipCerts, _) if get => Op::Kmip(Action::ListKmipCerts),
            (Route::KmipCerts, "POST") => Op::Kmip(Action::CreateKmipCert),
            (Route::KmipCert, _) if get => Op::Kmip(Action::GetKmipCert),
            (Route::KmipCert, "DELETE") => Op::Kmip(Action::DeleteKmipCert),
            (Route::KmipObjects, _) if get => Op::Kmip(Action::ListKmipObjects),
            (Route::KmipObject, _) if get => Op::Kmip(Action::GetKmipObject),
            (Route::KmipObject, "DELETE") => Op::Kmip(Action::DeleteKmipObject),
            _ => Op::Other,
        };
        Endpoint { route, op }
    }

    /// Classifies a request by its matched path template; `None` for an unknown template.
    pub fn of_request(
        method: &Method,
        template: &str,
        path: &str,
        query: Option<&str>,
    ) -> Option<Self> {
        let route = Route::of_template(template)?;
        let last = path.rsplit('/').next().unwrap_or("");
        Some(Endpoint::parse(method, route, last, query))
    }

    /// The `route` label of the request metrics.
    pub fn metrics_label(&self) -> &'static str {
        self.route.template()
    }

    /// The audited action, if the request reads key material, uses a key or changes anything
    /// (plain reads of metadata are not audited).
    pub fn audited_action(&self) -> Option<Action> {
        Some(match self.op {
            Op::CreateKey => Action::CreateKey,
            Op::GetKey => Action::GetStandardKeyPayload,
            Op::DeleteKey => Action::DeleteKey,
            Op::PatchKey => Action::PatchKey,
            Op::KeyAction(a) => a?.audited(),
            Op::RestoreKey => Action::RestoreKey,
            Op::PurgeKey => Action::Purge,
            Op::PutKeyPolicies => Action::WriteKeyPolicies,
            Op::PutInstancePolicies => Action::WriteInstancePolicies,
            Op::CreateAlias => Action::CreateAlias,
            Op::DeleteAlias => Action::DeleteAlias,
            Op::CreateKeyRing => Action::CreateKeyRing,
            Op::DeleteKeyRing => Action::DeleteKeyRing,
            Op::CreateImportToken => Action::CreateImportToken,
            Op::GetImportToken => Action::GetImportToken,
            Op::Kmip(
                a @ (Action::CreateKmipAdapter
                | Action::DeleteKmipAdapter
                | Action::CreateKmipCert
                | Action::DeleteKmipCert
                | Action::DeleteKmipObject),
            ) => a,
            _ => return None,
        })
    }

    /// The rate-limit class the request counts against.
    pub fn class(&self) -> Class {
        match (self.route, self.op) {
            (Route::ImportToken, _) => Class::ImportToken,
            (
                _,
                Op::KeyAction(Some(
                    KeyAction::Wrap | KeyAction::Unwrap | KeyAction::Rewrap | KeyAction::RewrapTo,
                ))
                | Op::Batch,
            ) => Class::Crypto,
            _ => Class::Management,
        }
    }

    /// The creation sub-limit the request also counts against, if any.
    pub fn creation(&self) -> Option<Class> {
        match self.op {
            Op::CreateImportToken => Some(Class::ImportTokenCreate),
            Op::CreateKey => Some(Class::KeyCreate),
            _ => None,
        }
    }
}

/// Middleware (outermost of the routed layers): classifies the request once and puts its
/// [`Endpoint`] in the request's extensions.
pub async fn classify(mut req: Request, next: Next) -> Response {
    let endpoint = req.extensions().get::<MatchedPath>().and_then(|m| {
        Endpoint::of_request(
            req.method(),
            m.as_str(),
            req.uri().path(),
            req.uri().query(),
        )
    });
    if let Some(e) = endpoint {
        req.extensions_mut().insert(e);
    }
    next.run(req).await
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn ep(method: &str, template: &str, path: &str, query: Option<&str>) -> Endpoint {
        Endpoint::of_request(&method.parse().unwrap(), template, path, query).unwrap()
    }

    #[test]
    fn every_route_template_round_trips() {
        for r in Route::ALL {
            assert_eq!(Route::of_template(r.template()), Some(r));
        }
        assert_eq!(Route::of_template("/api/v2/nothing"), None);
        // the router uses exactly these templates (the router test in lib.rs routes them)
        let mut seen: Vec<_> = Route::ALL.iter().map(|r| r.template()).collect();
        seen.sort();
        seen.dedup();
        assert_eq!(seen.len(), Route::ALL.len());
    }

    type Case = (
        &'static str,
        &'static str,
        &'static str,
        Option<&'static str>,
        Op,
        Option<Action>,
        Class,
        Option<Class>,
    );

    /// Every (method, route) of the router, with what it is classified as: the op, the audited
    /// action, the rate-limit class and the creation sub-limit. `{id}` in a path is a key id.
    #[rustfmt::skip]
    const CASES: &[Case] = {
        use Class::*;
        use Op::*;
        use super::KeyAction as A;
        &[
            ("POST", "/identity/token", "/identity/token", None, IssueToken, None, Management, None),
            ("POST", "/oidc/token", "/oidc/token", None, IssueToken, None, Management, None),
            ("GET", "/v2/resource_instances/{id}", "/v2/resource_instances/x", None, GetResourceInstance, None, Management, None),
            ("GET", "/api/v2/keys", "/api/v2/keys", None, ListKeys, None, Management, None),
            ("HEAD", "/api/v2/keys", "/api/v2/keys", None, HeadKeys, None, Management, None),
            ("POST", "/api/v2/keys", "/api/v2/keys", None, CreateKey, Some(Action::CreateKey), Management, Some(KeyCreate)),
            ("POST", "/api/v2/keys_with_policy_overrides", "/api/v2/keys_with_policy_overrides", None, CreateKey, Some(Action::CreateKey), Management, Some(KeyCreate)),
            ("GET", "/api/v2/keys/{id}/metadata", "{id}/metadata", None, GetKeyMetadata, None, Management, None),
            ("GET", "/api/v2/keys/{id}", "{id}", None, GetKey, Some(Action::GetStandardKeyPayload), Management, None),
            ("HEAD", "/api/v2/keys/{id}", "{id}", None, GetKey, Some(Action::GetStandardKeyPayload), Management, None),
            ("DELETE", "/api/v2/keys/{id}", "{id}", None, DeleteKey, Some(Action::DeleteKey), Management, None),
            ("PATCH", "/api/v2/keys/{id}", "{id}", None, PatchKey, Some(Action::PatchKey), Management, None),
            ("POST", "/api/v2/keys/{id}", "{id}", Some("action=wrap"), KeyAction(Some(A::Wrap)), Some(Action::Wrap), Crypto, None),
            ("POST", "/api/v2/keys/{id}", "{id}", Some("x=1&action=unwrap&action=rotate"), KeyAction(Some(A::Unwrap)), Some(Action::Unwrap), Crypto, None),
            ("POST", "/api/v2/keys/{id}", "{id}", Some("action=set%4BeyForDeletion"), KeyAction(Some(A::SetKeyForDeletion)), Some(Action::SetKeyForDeletion), Management, None),
            ("POST", "/api/v2/keys/{id}", "{id}", Some("action=explode"), KeyAction(None), None, Management, None),
            ("POST", "/api/v2/keys/{id}", "{id}", None, KeyAction(None), None, Management, None),
            ("GET", "/api/v2/keys/{id}/versions", "{id}/versions", None, ListVersions, None, Management, None),
            ("POST", "/api/v2/keys/{id}/restore", "{id}/restore", None, RestoreKey, Some(Action::RestoreKey), Management, None),
            ("DELETE", "/api/v2/keys/{id}/purge", "{id}/purge", None, PurgeKey, Some(Action::Purge), Management, None),
            ("GET", "/api/v2/keys/{id}/policies", "{id}/policies", None, GetKeyPolicies, None, Management, None),
            ("PUT", "/api/v2/keys/{id}/policies", "{id}/policies", None, PutKeyPolicies, Some(Action::WriteKeyPolicies), Management, None),
            ("POST", "/api/v2/keys/{id}/aliases/{alias}", "{id}/aliases/a", None, CreateAlias, Some(Action::CreateAlias), Management, None),
            ("DELETE", "/api/v2/keys/{id}/aliases/{alias}", "{id}/aliases/a", None, DeleteAlias, Some(Action::DeleteAlias), Management, None),
            ("GET", "/api/v2/keys/{id}/registrations", "{id}/registrations", None, ListKeyRegistrations, None, Management, None),
            ("GET", "/api/v2/keys/registrations", "/api/v2/keys/registrations", None, ListAllRegistrations, None, Management, None),
            ("POST", "/api/v2/keys/{id}/registrations/{crn}", "{id}/registrations/crn", None, ServiceOnly, None, Management, None),
            ("PUT", "/api/v2/keys/{id}/registrations/{crn}", "{id}/registrations/crn", None, ServiceOnly, None, Management, None),
            ("PATCH", "/api/v2/keys/{id}/registrations/{crn}", "{id}/registrations/crn", None, ServiceOnly, None, Management, None),
            ("DELETE", "/api/v2/keys/{id}/registrations/{crn}", "{id}/registrations/crn", None, ServiceOnly, None, Management, None),
            ("POST", "/api/v2/event_ack", "/api/v2/event_ack", None, ServiceOnly, None, Management, None),
            ("GET", "/api/v2/instance/allowed_ip_port", "/api/v2/instance/allowed_ip_port", None, GetAllowedIpPort, None, Management, None),
            ("GET", "/api/v2/instance/policies", "/api/v2/instance/policies", None, GetInstancePolicies, None, Management, None),
            ("PUT", "/api/v2/instance/policies", "/api/v2/instance/policies", None, PutInstancePolicies, Some(Action::WriteInstancePolicies), Management, None),
            ("GET", "/api/v2/key_rings", "/api/v2/key_rings", None, ListKeyRings, None, Management, None),
            ("POST", "/api/v2/key_rings/{id}", "/api/v2/key_rings/r", None, CreateKeyRing, Some(Action::CreateKeyRing), Management, None),
            ("DELETE", "/api/v2/key_rings/{id}", "/api/v2/key_rings/r", None, DeleteKeyRing, Some(Action::DeleteKeyRing), Management, None),
            ("POST", "/api/v2/keys/{id}/actions/{action}", "{id}/actions/wrap", None, KeyAction(Some(A::Wrap)), Some(Action::Wrap), Crypto, None),
            ("POST", "/api/v2/keys/{id}/actions/{action}", "{id}/actions/unwrap", Some("action=rotate"), KeyAction(Some(A::Unwrap)), Some(Action::Unwrap), Crypto, None),
            ("POST", "/api/v2/keys/{id}/actions/{action}", "{id}/actions/rewrap", None, KeyAction(Some(A::Rewrap)), Some(Action::Rewrap), Crypto, None),
            ("POST", "/api/v2/keys/{id}/actions/{action}", "{id}/actions/rotate", None, KeyAction(Some(A::Rotate)), Some(Action::Rotate), Management, None),
            ("POST", "/api/v2/keys/{id}/actions/{action}", "{id}/actions/disable", None, KeyAction(Some(A::Disable)), Some(Action::Disable), Management, None),
            ("POST", "/api/v2/keys/{id}/actions/{action}", "{id}/actions/enable", None, KeyAction(Some(A::Enable)), Some(Action::Enable), Management, None),
            ("POST", "/api/v2/keys/{id}/actions/{action}", "{id}/actions/setKeyForDeletion", None, KeyAction(Some(A::SetKeyForDeletion)), Some(Action::SetKeyForDeletion), Management, None),
            ("POST", "/api/v2/keys/{id}/actions/{action}", "{id}/actions/unsetKeyForDeletion", None, KeyAction(Some(A::UnsetKeyForDeletion)), Some(Action::UnsetKeyForDeletion), Management, None),
            ("POST", "/api/v2/keys/{id}/actions/{action}", "{id}/actions/restore", None, KeyAction(Some(A::Restore)), Some(Action::RestoreKey), Management, None),
            ("POST", "/api/v2/keys/{id}/actions/{action}", "{id}/actions/sync", None, KeyAction(Some(A::Sync)), Some(Action::Sync), Management, None),
            ("POST", "/api/v2/keys/{id}/actions/{action}", "{id}/actions/Wrap", None, KeyAction(None), None, Management, None),
            ("GET", "/api/v2/import_token", "/api/v2/import_token", None, GetImportToken, Some(Action::GetImportToken), ImportToken, None),
            ("HEAD", "/api/v2/import_token", "/api/v2/import_token", None, GetImportToken, Some(Action::GetImportToken), ImportToken, None),
            ("POST", "/api/v2/import_token", "/api/v2/import_token", None, CreateImportToken, Some(Action::CreateImportToken), ImportToken, Some(ImportTokenCreate)),
            ("GET", "/api/v2/x-keyward/audit", "/api/v2/x-keyward/audit", None, ReadAudit, None, Management, None),
            ("POST", "/api/v2/keys/{id}/actions/{action}", "{id}/actions/rewrapTo", None, KeyAction(Some(A::RewrapTo)), Some(Action::Rewrap), Crypto, None),
            ("POST", "/api/v2/x-keyward/batch", "/api/v2/x-keyward/batch", None, Batch, None, Crypto, None),
            ("GET", "/api/v2/kmip_adapters", "/api/v2/kmip_adapters", None, Kmip(Action::ListKmipAdapters), None, Management, None),
            ("POST", "/api/v2/kmip_adapters", "/api/v2/kmip_adapters", None, Kmip(Action::CreateKmipAdapter), Some(Action::CreateKmipAdapter), Management, None),
            ("GET", "/api/v2/kmip_adapters/{id}", "/api/v2/kmip_adapters/a", None, Kmip(Action::GetKmipAdapter), None, Management, None),
            ("DELETE", "/api/v2/kmip_adapters/{id}", "/api/v2/kmip_adapters/a", None, Kmip(Action::DeleteKmipAdapter), Some(Action::DeleteKmipAdapter), Management, None),
            ("GET", "/api/v2/kmip_adapters/{id}/certificates", "/api/v2/kmip_adapters/a/certificates", None, Kmip(Action::ListKmipCerts), None, Management, None),
            ("POST", "/api/v2/kmip_adapters/{id}/certificates", "/api/v2/kmip_adapters/a/certificates", None, Kmip(Action::CreateKmipCert), Some(Action::CreateKmipCert), Management, None),
            ("GET", "/api/v2/kmip_adapters/{id}/certificates/{cert_id}", "/api/v2/kmip_adapters/a/certificates/c", None, Kmip(Action::GetKmipCert), None, Management, None),
            ("DELETE", "/api/v2/kmip_adapters/{id}/certificates/{cert_id}", "/api/v2/kmip_adapters/a/certificates/c", None, Kmip(Action::DeleteKmipCert), Some(Action::DeleteKmipCert), Management, None),
            ("GET", "/api/v2/kmip_adapters/{id}/kmip_objects", "/api/v2/kmip_adapters/a/kmip_objects", None, Kmip(Action::ListKmipObjects), None, Management, None),
            ("GET", "/api/v2/kmip_adapters/{id}/kmip_objects/{object_id}", "/api/v2/kmip_adapters/a/kmip_objects/o", None, Kmip(Action::GetKmipObject), None, Management, None),
            ("DELETE", "/api/v2/kmip_adapters/{id}/kmip_objects/{object_id}", "/api/v2/kmip_adapters/a/kmip_objects/o", None, Kmip(Action::DeleteKmipObject), Some(Action::DeleteKmipObject), Management, None),
            // methods without a handler
            ("PUT", "/api/v2/keys", "/api/v2/keys", None, Other, None, Management, None),
            ("GET", "/api/v2/keys/{id}/actions/{action}", "{id}/actions/wrap", None, Other, None, Management, None),
        ]
    };

    #[test]
    fn every_route_of_the_router() {
        let id = "/api/v2/keys/0f1e2d3c-4b5a-4968-8776-655443322110";
        for &(method, template, path, query, op, action, class, creation) in CASES {
            let path = path.replace("{id}", id);
            let e = ep(method, template, &path, query);
            let what = format!("{method} {path}?{query:?}");
            assert_eq!(e.op, op, "{what}");
            assert_eq!(e.metrics_label(), template, "{what}");
            assert_eq!(e.audited_action(), action, "{what}");
            assert_eq!(e.class(), class, "{what}");
            assert_eq!(e.creation(), creation, "{what}");
        }
        // every route has at least one case
        for r in Route::ALL {
            assert!(CASES.iter().any(|c| c.1 == r.template()), "{r:?}");
        }
    }

    /// The router routes every template of [`Route::ALL`] and classifies each request.
    #[tokio::test]
    async fn the_router_puts_an_endpoint_on_every_route() {
        use std::sync::{Arc, Mutex};
        use tower::ServiceExt;
        let seen: Arc<Mutex<Vec<Endpoint>>> = Arc::default();
        let s = seen.clone();
        let mut router = axum::Router::new();
        for r in Route::ALL {
            router = router.route(r.template(), axum::routing::any(|| async { "" }));
        }
        let router = router
            .route_layer(axum::middleware::from_fn(
                move |req: Request, next: Next| {
                    let s = s.clone();
                    async move {
                        if let Some(e) = req.extensions().get::<Endpoint>() {
                            s.lock().unwrap().push(*e);
                        }
                        next.run(req).await
                    }
                },
            ))
            .route_layer(axum::middleware::from_fn(classify));
        let paths = [
            ("/identity/token", Route::IdentityToken),
            ("/api/v2/keys", Route::Keys),
            ("/api/v2/keys/k/metadata", Route::KeyMetadata),
            ("/api/v2/keys/k", Route::Key),
            ("/api/v2/keys/k/versions", Route::KeyVersions),
            ("/api/v2/keys/k/restore", Route::KeyRestore),
            ("/api/v2/keys/k/purge", Route::KeyPurge),
            ("/api/v2/keys/k/policies", Route::KeyPolicies),
            ("/api/v2/keys/k/aliases/a", Route::KeyAlias),
            ("/api/v2/keys/k/registrations", Route::KeyRegistrations),
            ("/api/v2/keys/registrations", Route::AllRegistrations),
            ("/api/v2/keys/k/registrations/c", Route::KeyRegistration),
            ("/api/v2/event_ack", Route::EventAck),
            ("/api/v2/instance/allowed_ip_port", Route::AllowedIpPort),
            (
                "/api/v2/keys_with_policy_overrides",
                Route::KeysWithPolicyOverrides,
            ),
            ("/api/v2/instance/policies", Route::InstancePolicies),
            ("/api/v2/key_rings", Route::KeyRings),
            ("/api/v2/key_rings/r", Route::KeyRing),
            ("/api/v2/keys/k/actions/wrap", Route::KeyActionPath),
            ("/api/v2/import_token", Route::ImportToken),
            ("/api/v2/x-keyward/audit", Route::XKeywardAudit),
            ("/api/v2/x-keyward/batch", Route::Batch),
            ("/oidc/token", Route::OidcToken),
            ("/v2/resource_instances/x", Route::ResourceInstance),
            ("/api/v2/kmip_adapters", Route::KmipAdapters),
            ("/api/v2/kmip_adapters/a", Route::KmipAdapter),
            ("/api/v2/kmip_adapters/a/certificates", Route::KmipCerts),
            ("/api/v2/kmip_adapters/a/certificates/c", Route::KmipCert),
            ("/api/v2/kmip_adapters/a/kmip_objects", Route::KmipObjects),
            ("/api/v2/kmip_adapters/a/kmip_objects/o", Route::KmipObject),
        ];
        assert_eq!(paths.len(), Route::ALL.len());
        for (path, route) in paths {
            let req = axum::http::Request::post(path)
                .body(axum::body::Body::empty())
                .unwrap();
            router.clone().oneshot(req).await.unwrap();
            let got = seen.lock().unwrap().pop();
            assert_eq!(got.map(|e| e.route), Some(route), "{path}");
        }
    }
}
