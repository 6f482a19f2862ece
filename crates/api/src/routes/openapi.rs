//! The OpenAPI 3.1 document of every route Keyward serves, built from the `keyward-wire`
//! types. Served at `GET /openapi.json` (no token) and committed as `docs/openapi.json`
//! (`crates/api/tests/openapi.rs` fails when the committed file is stale).
//!
//! Keyward's own endpoints and extensions of the Key Protect API carry `x-keyward: true`;
//! each error response lists its possible reason codes in `x-reason-codes`.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use keyward_service::ErrorCode;
use keyward_wire::{req, resp};
use utoipa::openapi::extensions::{Extensions, ExtensionsBuilder};
use utoipa::openapi::path::{
    HttpMethod, OperationBuilder, Parameter, ParameterBuilder, ParameterIn, PathItem,
};
use utoipa::openapi::request_body::RequestBodyBuilder;
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{
    Content, HeaderBuilder, InfoBuilder, OpenApi, OpenApiBuilder, Paths, Ref, RefOr, Required,
    ResponseBuilder, Schema,
};
use utoipa::OpenApi as _;

use crate::error::status_of;

/// The reason codes answered with `status` (deduplicated, in declaration order).
fn reason_codes(status: u16) -> Vec<&'static str> {
    let mut out: Vec<&'static str> = Vec::new();
    for c in ErrorCode::ALL {
        if status_of(c).as_u16() == status && !out.contains(&c.as_str()) {
            out.push(c.as_str());
        }
    }
    out
}

/// The component schemas, collected (with everything they name) from the wire types.
#[derive(utoipa::OpenApi)]
#[openapi(components(schemas(
    resp::KeyCollection,
    resp::VersionCollection,
    resp::KeyPolicyCollection,
    resp::InstancePolicyCollection,
    resp::AliasCollection,
    resp::KeyRingCollection,
    resp::RegistrationCollection,
    resp::AllowedIpPortCollection,
    resp::AuditRecordCollection,
    resp::ErrorCollection,
    resp::WrapResponse,
    resp::UnwrapResponse,
    resp::RewrapResponse,
    resp::BatchResponse,
    resp::KeyUsage,
    resp::LastUse,
    resp::BatchResult,
    resp::ImportToken,
    resp::IdentityToken,
    resp::IamError,
    resp::Health,
    resp::ResourceInstance,
    resp::KeyIdCollection,
    req::KeyCreateRequest,
    req::KeyCreateWithOverridesRequest,
    req::WrapRequest,
    req::UnwrapRequest,
    req::RewrapToRequest,
    req::BatchRequest,
    req::BatchItem,
    req::RotateRequest,
    req::EmptyRequest,
    req::RestoreRequest,
    req::PatchKeyRequest,
    req::KeyPoliciesRequest,
    req::InstancePoliciesRequest,
    req::ImportTokenRequest,
    req::IdentityTokenForm,
    keyward_wire::kmip::KmipAdapterCollection,
    keyward_wire::kmip::KmipCertificateCollection,
    keyward_wire::kmip::KmipObjectCollection,
    keyward_wire::kmip::KmipAdapterCreateRequest,
    keyward_wire::kmip::KmipCertificateCreateRequest,
)))]
struct Schemas;

fn schema_ref(name: &str) -> RefOr<Schema> {
    RefOr::Ref(Ref::from_schema_name(name))
}

fn scalar(t: Type) -> RefOr<Schema> {
    RefOr::T(Schema::Object(ObjectBuilder::new().schema_type(t).build()))
}

fn ext(keyward: bool, reason_codes: Option<Vec<&'static str>>) -> Option<Extensions> {
    let mut b = ExtensionsBuilder::new();
    let mut any = false;
    if keyward {
        b = b.add("x-keyward", true);
        any = true;
    }
    if let Some(codes) = reason_codes {
        b = b.add("x-reason-codes", codes);
        any = true;
    }
    any.then(|| b.build())
}

fn header_param(name: &str, required: bool, description: &str) -> Parameter {
    ParameterBuilder::new()
        .name(name)
        .parameter_in(ParameterIn::Header)
        .required(if required {
            Required::True
        } else {
            Required::False
        })
        .description(Some(description))
        .schema(Some(scalar(Type::String)))
        .build()
}

fn query(name: &str, t: Type, description: &str) -> Parameter {
    ParameterBuilder::new()
        .name(name)
        .parameter_in(ParameterIn::Query)
        .required(Required::False)
        .description(Some(description))
        .schema(Some(scalar(t)))
        .build()
}

/// A path parameter; `pattern` is the character set and length the server accepts.
fn path_param(name: &str, description: &str) -> Parameter {
    path_param_matching(name, description, None)
}

fn path_param_matching(name: &str, description: &str, pattern: Option<&str>) -> Parameter {
    let schema = ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(pattern)
        .build();
    ParameterBuilder::new()
        .name(name)
        .parameter_in(ParameterIn::Path)
        .required(Required::True)
        .description(Some(description))
        .schema(Some(RefOr::T(Schema::Object(schema))))
        .build()
}

/// Aliases (and so key ids, which are UUIDs or aliases): `crates/service/src/rings.rs`.
const ALIAS_PATTERN: &str = "^[A-Za-z0-9_-]{2,90}$";
const KEY_RING_PATTERN: &str = "^[A-Za-z0-9_-]{2,100}$";

/// A string query parameter matching `pattern`.
fn query_matching(name: &str, pattern: &str, description: &str) -> Parameter {
    let schema = ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some(pattern))
        .build();
    ParameterBuilder::new()
        .name(name)
        .parameter_in(ParameterIn::Query)
        .required(Required::False)
        .description(Some(description))
        .schema(Some(RefOr::T(Schema::Object(schema))))
        .build()
}

/// `state` of `GET/HEAD /keys`.
const STATE_PATTERN: &str = "^([01235](,[01235])*)?$";

/// An integer query parameter within `min..=max`.
fn int_query(name: &str, min: i64, max: Option<i64>, description: &str) -> Parameter {
    let schema = ObjectBuilder::new()
        .schema_type(Type::Integer)
        .minimum(Some(min))
        .maximum(max)
        .build();
    ParameterBuilder::new()
        .name(name)
        .parameter_in(ParameterIn::Query)
        .required(Required::False)
        .description(Some(description))
        .schema(Some(RefOr::T(Schema::Object(schema))))
        .build()
}

/// What one operation takes and answers.
struct Op {
    path: String,
    method: HttpMethod,
    id: &'static str,
    summary: &'static str,
    tag: &'static str,
    /// A Keyward endpoint or extension (not in Key Protect's API).
    keyward: bool,
    /// Key Protect API: bearer token, `Bluemix-Instance`, `Correlation-Id`.
    api: bool,
    /// A bearer token only (no `Bluemix-Instance`): the Resource Controller subset.
    bearer: bool,
    params: Vec<Parameter>,
    /// (schema name, required)
    body: Option<(&'static str, bool)>,
    /// (status, description, schema name or none)
    ok: Vec<(u16, &'static str, Option<&'static str>)>,
    errors: &'static [u16],
    deprecated: bool,
}

const KEY_ERRORS: &[u16] = &[400, 401, 403, 404, 409, 410, 429, 500, 503];
const BODY_KEY_ERRORS: &[u16] = &[400, 401, 403, 404, 409, 410, 413, 415, 422, 429, 500, 503];
const BODY_ERRORS: &[u16] = &[400, 401, 403, 404, 409, 413, 415, 429, 500, 503];
const PLAIN_ERRORS: &[u16] = &[400, 401, 403, 404, 409, 429, 500, 503];

fn error_description(status: u16) -> &'static str {
    match status {
        400 => "The request is malformed (body, field, query parameter or header).",
        401 => "The bearer token is missing, invalid or expired.",
        403 => "The caller has no role allowing this action on this instance.",
        404 => "The key, key ring, alias or import token does not exist.",
        409 => "The resource's state does not allow the action.",
        410 => "The key has been deleted.",
        413 => "The request body is larger than 64 KiB.",
        415 => "The request body is not JSON.",
        422 => "The ciphertext cannot be unwrapped with this key.",
        429 => "Too many requests for this caller and action class; see `Retry-After`.",
        500 => "Internal error (details are logged, never returned).",
        503 => "The store is unreachable, the service is sealed or at capacity; see `Retry-After`.",
        _ => "Error.",
    }
}

fn json_content(schema: &str) -> Content {
    Content::new(Some(schema_ref(schema)))
}

/// A request body that the server accepts, as the example of its schema (clients and
/// Schemathesis's examples phase start from these).
fn body_example(schema: &str) -> Option<serde_json::Value> {
    use serde_json::json;
    let meta = |t: &str| json!({"collectionType": t, "collectionTotal": 1});
    Some(match schema {
        "KeyCreateRequest" => json!({
            "metadata": meta(keyward_wire::KEY_TYPE),
            "resources": [{"type": keyward_wire::KEY_TYPE, "name": "example-root-key", "extractable": false}],
        }),
        "KeyCreateWithOverridesRequest" => json!({
            "metadata": meta(keyward_wire::KEY_TYPE),
            "resources": [{"type": keyward_wire::KEY_TYPE, "name": "example-override-key", "extractable": false}],
        }),
        "WrapRequest" => {
            json!({"plaintext": "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=", "aad": ["example"]})
        }
        "BatchRequest" => json!({"requests": [
            {"action": "wrap", "keyId": "00000000-0000-4000-8000-000000000000", "aad": ["example"]}
        ]}),
        "RotateRequest" | "EmptyRequest" => json!({}),
        "PatchKeyRequest" => json!({"keyRingID": "default"}),
        "ImportTokenRequest" => json!({"expiration": 600, "maxAllowedRetrievals": 1}),
        "KeyPoliciesRequest" => json!({
            "metadata": meta(keyward_wire::POLICY_TYPE),
            "resources": [{"type": keyward_wire::POLICY_TYPE, "rotation": {"enabled": true, "interval_month": 3}}],
        }),
        "InstancePoliciesRequest" => json!({
            "metadata": meta(keyward_wire::POLICY_TYPE),
            "resources": [{"policy_type": "rotation", "policy_data": {"enabled": true, "attributes": {"interval_month": 6}}}],
        }),
        _ => return None,
    })
}

fn json_content_with_example(schema: &str) -> Content {
    utoipa::openapi::content::ContentBuilder::new()
        .schema(Some(schema_ref(schema)))
        .example(body_example(schema))
        .build()
}

fn operation(op: Op) -> (String, PathItem) {
    let mut b = OperationBuilder::new()
        .operation_id(Some(op.id))
        .summary(Some(op.summary))
        .tag(op.tag)
        .extensions(ext(op.keyward, None));
    if op.deprecated {
        b = b.deprecated(Some(utoipa::openapi::Deprecated::True));
    }
    if op.bearer {
        b = b.security(SecurityRequirement::new("bearer", Vec::<String>::new()));
    }
    if op.api {
        b = b
            .security(SecurityRequirement::new("bearer", Vec::<String>::new()))
            .parameter(header_param(
                "Bluemix-Instance",
                true,
                "The instance (a UUID) the request acts on.",
            ))
            .parameter(header_param(
                "Correlation-Id",
                false,
                "An id (at most 128 printable characters) recorded in the audit log.",
            ));
    }
    for p in op.params {
        b = b.parameter(p);
    }
    if let Some((schema, required)) = op.body {
        let mut rb = RequestBodyBuilder::new().required(Some(if required {
            Required::True
        } else {
            Required::False
        }));
        rb = if schema == "IdentityTokenForm" {
            rb.content("application/x-www-form-urlencoded", json_content(schema))
        } else if required {
            rb.content("application/json", json_content_with_example(schema))
        } else {
            // An optional body may also be empty or JSON `null`: both read as no body.
            rb.content(
                "application/json",
                utoipa::openapi::content::ContentBuilder::new()
                    .schema(Some(RefOr::T(Schema::OneOf(
                        utoipa::openapi::schema::OneOfBuilder::new()
                            .item(schema_ref(schema))
                            .item(RefOr::T(Schema::Object(
                                ObjectBuilder::new().schema_type(Type::Null).build(),
                            )))
                            .build(),
                    ))))
                    .example(body_example(schema))
                    .build(),
            )
        };
        b = b.request_body(Some(rb.build()));
    }
    for (status, description, schema) in op.ok {
        let mut r = ResponseBuilder::new().description(description);
        if let Some(s) = schema {
            r = r.content("application/json", json_content(s));
        }
        if op.method == HttpMethod::Head {
            r = r.header(
                "Key-Total",
                HeaderBuilder::new()
                    .schema(scalar(Type::Integer))
                    .description(Some("The number of keys matching the query."))
                    .build(),
            );
        }
        b = b.response(status.to_string(), r.build());
    }
    let iam = op.path == "/identity/token" || op.path == "/oidc/token";
    for &status in op.errors {
        let name = if iam {
            format!("IamError{status}")
        } else {
            format!("Error{status}")
        };
        b = b.response(
            status.to_string(),
            RefOr::Ref(Ref::from_response_name(name)),
        );
    }
    (op.path, PathItem::new(op.method, b.build()))
}

fn key_id() -> Parameter {
    path_param_matching(
        "id",
        "The key's id (a UUID) or one of its aliases.",
        Some(ALIAS_PATTERN),
    )
}

fn key_ring_header(purpose: &str) -> Parameter {
    key_ring_header_matching(purpose, KEY_RING_PATTERN)
}

/// The list filter: an empty header counts as absent.
fn key_ring_filter_header(purpose: &str) -> Parameter {
    key_ring_header_matching(purpose, "^([A-Za-z0-9_-]{2,100})?$")
}

fn key_ring_header_matching(purpose: &str, pattern: &str) -> Parameter {
    let schema = ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some(pattern))
        .build();
    ParameterBuilder::new()
        .name("X-Kms-Key-Ring")
        .parameter_in(ParameterIn::Header)
        .required(Required::False)
        .description(Some(purpose))
        .schema(Some(RefOr::T(Schema::Object(schema))))
        .build()
}

fn prefer() -> Parameter {
    header_param(
        "Prefer",
        false,
        "`return=representation` or `return=minimal` (the forms of each operation: `crates/api/src/routes/keys.rs`, `Prefer`). Create: minimal answers the new key's `type` and `id` only (`KeyIdCollection`). Delete, rotate: no body unless representation. Restore, purge: no body (204) with minimal.",
    )
}

fn registration_query() -> Vec<Parameter> {
    let mut p = paging("200");
    p.push(query(
        "urlEncodedResourceCRNQuery",
        Type::String,
        "Only registrations of this resource CRN (URL-encoded; a segment `*`, or ending in `*`, matches any value or prefix; the all-keys listing allows `*` only in the last two segments).",
    ));
    p.push(query(
        "preventKeyDeletion",
        Type::Boolean,
        "Only registrations with this `preventKeyDeletion`.",
    ));
    p
}

fn paging(default_limit: &str) -> Vec<Parameter> {
    vec![
        int_query(
            "limit",
            1,
            Some(5000),
            &format!("At most this many resources (1 to 5000; default {default_limit})."),
        ),
        int_query(
            "offset",
            0,
            Some(i64::MAX),
            "Resources to skip (default 0).",
        ),
        query(
            "totalCount",
            Type::Boolean,
            "`true`: add `metadata.totalCount`, all matching resources.",
        ),
    ]
}

#[allow(clippy::too_many_arguments)]
fn api(
    path: &str,
    method: HttpMethod,
    id: &'static str,
    summary: &'static str,
    tag: &'static str,
    params: Vec<Parameter>,
    body: Option<(&'static str, bool)>,
    ok: Vec<(u16, &'static str, Option<&'static str>)>,
    errors: &'static [u16],
) -> Op {
    Op {
        path: path.to_string(),
        method,
        id,
        summary,
        tag,
        keyward: false,
        api: true,
        bearer: false,
        params,
        body,
        ok,
        errors,
        deprecated: false,
    }
}

fn keyward_op(mut op: Op) -> Op {
    op.keyward = true;
    op
}

fn ops() -> Vec<Op> {
    use HttpMethod::*;
    let keys = "Keys";
    let actions = "Key actions";
    let mut v = vec![
        api(
            "/api/v2/keys",
            Get,
            "listKeys",
            "List keys",
            keys,
            vec![
                int_query("limit", 1, Some(5000), "At most this many keys (1 to 5000; default 200)."),
                int_query("offset", 0, Some(i64::MAX), "Keys to skip (default 0)."),
                query_matching("state", STATE_PATTERN, "Comma-separated states: 0, 1, 2, 3, 5."),
                query("extractable", Type::Boolean, "`true`: standard keys; `false`: root keys."),
                query("sort", Type::String, "Comma-separated fields, each optionally prefixed by `-` (descending): id, state, extractable, imported, creationDate, lastUpdateDate, lastRotateDate, deletionDate, expirationDate."),
                query("search", Type::String, "Search by name, alias or id (`fuzzy:`, `exact:`, `not:`, `escape:`, `alias:`, `name:` prefixes)."),
                query("filter", Type::String, "Space-separated `property=operator:value` terms. Keyward also accepts `lastUsed` (x-keyward): a key never used counts as used before every date."),
                key_ring_filter_header("Only keys of this key ring."),
            ],
            None,
            vec![(200, "The keys.", Some("KeyCollection"))],
            PLAIN_ERRORS,
        ),
        api(
            "/api/v2/keys",
            Head,
            "countKeys",
            "Count keys (`Key-Total` header)",
            keys,
            vec![
                query_matching("state", STATE_PATTERN, "Comma-separated states: 0, 1, 2, 3, 5."),
                query("extractable", Type::Boolean, "`true`: standard keys; `false`: root keys."),
                query("search", Type::String, "Search by name, alias or id."),
                query("filter", Type::String, "Space-separated `property=operator:value` terms. Keyward also accepts `lastUsed` (x-keyward): a key never used counts as used before every date."),
                key_ring_filter_header("Only keys of this key ring."),
            ],
            None,
            vec![(200, "The count, in `Key-Total`; no body.", None)],
            PLAIN_ERRORS,
        ),
        api(
            "/api/v2/keys",
            Post,
            "createKey",
            "Create or import a key",
            keys,
            vec![
                prefer(),
                key_ring_header("The key ring of the new key (default: `default`)."),
            ],
            Some(("KeyCreateRequest", true)),
            vec![(201, "The new key.", Some("KeyCollection"))],
            BODY_ERRORS,
        ),
        keyward_op(api(
            "/api/v2/keys_with_policy_overrides",
            Post,
            "createKeyWithPolicyOverrides",
            "Create a key whose policies override the instance's",
            keys,
            vec![
                prefer(),
                key_ring_header("The key ring of the new key (default: `default`)."),
            ],
            Some(("KeyCreateWithOverridesRequest", true)),
            vec![(201, "The new key.", Some("KeyCollection"))],
            BODY_ERRORS,
        )),
        api(
            "/api/v2/keys/{id}",
            Get,
            "getKey",
            "Retrieve a key (with its material for a standard key)",
            keys,
            vec![key_id()],
            None,
            vec![(200, "The key.", Some("KeyCollection"))],
            KEY_ERRORS,
        ),
        api(
            "/api/v2/keys/{id}/metadata",
            Get,
            "getKeyMetadata",
            "Retrieve a key's metadata",
            keys,
            vec![
                key_id(),
                query(
                    "usage",
                    Type::Boolean,
                    "Keyward extension (x-keyward): `true` adds `usage`, the key's last wrap, unwrap and rewrap with the principal.",
                ),
            ],
            None,
            vec![(200, "The key, without material.", Some("KeyCollection"))],
            KEY_ERRORS,
        ),
        api(
            "/api/v2/keys/{id}",
            Delete,
            "deleteKey",
            "Delete a key",
            keys,
            vec![
                key_id(),
                query("force", Type::Boolean, "`true`: delete even with registrations that do not prevent it."),
                prefer(),
            ],
            None,
            vec![
                (200, "The deleted key (`Prefer: return=representation`).", Some("KeyCollection")),
                (204, "Deleted.", None),
            ],
            KEY_ERRORS,
        ),
        api(
            "/api/v2/keys/{id}",
            Patch,
            "patchKey",
            "Move a key to another key ring",
            keys,
            vec![key_id()],
            Some(("PatchKeyRequest", true)),
            vec![(200, "The key.", Some("KeyCollection"))],
            BODY_KEY_ERRORS,
        ),
        api(
            "/api/v2/keys/{id}/versions",
            Get,
            "listKeyVersions",
            "List a key's versions",
            keys,
            {
                let mut p = vec![key_id()];
                p.extend(paging("200"));
                p.push(query("allKeyStates", Type::Boolean, "`true`: also versions of a deleted key."));
                p
            },
            None,
            vec![(200, "The versions, newest first.", Some("VersionCollection"))],
            KEY_ERRORS,
        ),
        api(
            "/api/v2/keys/{id}/restore",
            Post,
            "restoreKey",
            "Restore a deleted key",
            keys,
            vec![key_id(), prefer()],
            Some(("RestoreRequest", false)),
            vec![
                (201, "The restored key.", Some("KeyCollection")),
                (204, "Restored (`Prefer: return=minimal`).", None),
            ],
            BODY_KEY_ERRORS,
        ),
        api(
            "/api/v2/keys/{id}/purge",
            Delete,
            "purgeKey",
            "Purge a deleted key (4 hours after deletion)",
            keys,
            vec![key_id(), prefer()],
            None,
            vec![
                (200, "The purged key.", Some("KeyCollection")),
                (204, "Purged (`Prefer: return=minimal`).", None),
            ],
            KEY_ERRORS,
        ),
        api(
            "/api/v2/keys/{id}/policies",
            Get,
            "getKeyPolicies",
            "Retrieve a key's policies",
            "Policies",
            vec![key_id(), query("policy", Type::String, "rotation or dualAuthDelete.")],
            None,
            vec![(200, "The policies.", Some("KeyPolicyCollection"))],
            KEY_ERRORS,
        ),
        api(
            "/api/v2/keys/{id}/policies",
            Put,
            "putKeyPolicies",
            "Set a key's policies",
            "Policies",
            vec![key_id(), query("policy", Type::String, "rotation or dualAuthDelete.")],
            Some(("KeyPoliciesRequest", true)),
            vec![(200, "The policies.", Some("KeyPolicyCollection"))],
            BODY_KEY_ERRORS,
        ),
        api(
            "/api/v2/instance/policies",
            Get,
            "getInstancePolicies",
            "Retrieve the instance's policies",
            "Policies",
            vec![query("policy", Type::String, "rotation, dualAuthDelete, allowedNetwork, allowedIP, keyCreateImportAccess or metrics.")],
            None,
            vec![(200, "The policies.", Some("InstancePolicyCollection"))],
            PLAIN_ERRORS,
        ),
        api(
            "/api/v2/instance/policies",
            Put,
            "putInstancePolicies",
            "Set instance policies",
            "Policies",
            vec![query("policy", Type::String, "rotation, dualAuthDelete, allowedNetwork, allowedIP, keyCreateImportAccess or metrics.")],
            Some(("InstancePoliciesRequest", true)),
            vec![(204, "Set.", None)],
            BODY_ERRORS,
        ),
        api(
            "/api/v2/instance/allowed_ip_port",
            Get,
            "getAllowedIpPort",
            "The private endpoint port for the allowedIP policy",
            "Policies",
            vec![],
            None,
            vec![(200, "The port.", Some("AllowedIpPortCollection"))],
            PLAIN_ERRORS,
        ),
        api(
            "/api/v2/keys/{id}/aliases/{alias}",
            Post,
            "createKeyAlias",
            "Create an alias of a key",
            "Aliases",
            vec![key_id(), path_param_matching("alias", "The alias (2 to 90 characters).", Some(ALIAS_PATTERN))],
            None,
            vec![(201, "The alias.", Some("AliasCollection"))],
            KEY_ERRORS,
        ),
        api(
            "/api/v2/keys/{id}/aliases/{alias}",
            Delete,
            "deleteKeyAlias",
            "Delete an alias of a key",
            "Aliases",
            vec![key_id(), path_param_matching("alias", "The alias.", Some(ALIAS_PATTERN))],
            None,
            vec![(204, "Deleted.", None)],
            KEY_ERRORS,
        ),
        api(
            "/api/v2/key_rings",
            Get,
            "listKeyRings",
            "List key rings",
            "Key rings",
            paging("100"),
            None,
            vec![(200, "The key rings.", Some("KeyRingCollection"))],
            PLAIN_ERRORS,
        ),
        api(
            "/api/v2/key_rings/{id}",
            Post,
            "createKeyRing",
            "Create a key ring",
            "Key rings",
            vec![path_param_matching("id", "The key ring's id (2 to 100 of a-z, A-Z, 0-9, -, _).", Some(KEY_RING_PATTERN))],
            None,
            vec![(201, "Created; no body.", None)],
            PLAIN_ERRORS,
        ),
        api(
            "/api/v2/key_rings/{id}",
            Delete,
            "deleteKeyRing",
            "Delete a key ring",
            "Key rings",
            vec![
                path_param_matching("id", "The key ring's id.", Some(KEY_RING_PATTERN)),
                query("force", Type::Boolean, "`true`: delete even when it holds only deleted keys (they move to `default`)."),
            ],
            None,
            vec![(204, "Deleted.", None)],
            PLAIN_ERRORS,
        ),
        api(
            "/api/v2/kmip_adapters",
            Get,
            "listKmipAdapters",
            "List KMIP adapters",
            "KMIP",
            paging("100"),
            None,
            vec![(200, "The KMIP adapters.", Some("KmipAdapterCollection"))],
            PLAIN_ERRORS,
        ),
        api(
            "/api/v2/kmip_adapters",
            Post,
            "createKmipAdapter",
            "Create a KMIP adapter bound to a root key",
            "KMIP",
            vec![],
            Some(("KmipAdapterCreateRequest", true)),
            vec![(201, "The adapter.", Some("KmipAdapterCollection"))],
            BODY_ERRORS,
        ),
        api(
            "/api/v2/kmip_adapters/{id}",
            Get,
            "getKmipAdapter",
            "Get a KMIP adapter (by id or name)",
            "KMIP",
            vec![path_param("id", "The adapter's id or name.")],
            None,
            vec![(200, "The adapter.", Some("KmipAdapterCollection"))],
            PLAIN_ERRORS,
        ),
        api(
            "/api/v2/kmip_adapters/{id}",
            Delete,
            "deleteKmipAdapter",
            "Delete a KMIP adapter (only without objects that are not destroyed)",
            "KMIP",
            vec![path_param("id", "The adapter's id or name.")],
            None,
            vec![(204, "Deleted.", None)],
            PLAIN_ERRORS,
        ),
        api(
            "/api/v2/kmip_adapters/{id}/certificates",
            Get,
            "listKmipClientCertificates",
            "List the client certificates of a KMIP adapter",
            "KMIP",
            [vec![path_param("id", "The adapter's id or name.")], paging("100")].concat(),
            None,
            vec![(200, "The certificates (without their PEM).", Some("KmipCertificateCollection"))],
            PLAIN_ERRORS,
        ),
        api(
            "/api/v2/kmip_adapters/{id}/certificates",
            Post,
            "createKmipClientCertificate",
            "Register a client certificate on a KMIP adapter",
            "KMIP",
            vec![path_param("id", "The adapter's id or name.")],
            Some(("KmipCertificateCreateRequest", true)),
            vec![(201, "The certificate.", Some("KmipCertificateCollection"))],
            BODY_ERRORS,
        ),
        api(
            "/api/v2/kmip_adapters/{id}/certificates/{cert_id}",
            Get,
            "getKmipClientCertificate",
            "Get a client certificate (by id or name)",
            "KMIP",
            vec![
                path_param("id", "The adapter's id or name."),
                path_param("cert_id", "The certificate's id or name."),
            ],
            None,
            vec![(200, "The certificate.", Some("KmipCertificateCollection"))],
            PLAIN_ERRORS,
        ),
        api(
            "/api/v2/kmip_adapters/{id}/certificates/{cert_id}",
            Delete,
            "deleteKmipClientCertificate",
            "Remove a client certificate (its client is refused from its next request)",
            "KMIP",
            vec![
                path_param("id", "The adapter's id or name."),
                path_param("cert_id", "The certificate's id or name."),
            ],
            None,
            vec![(204, "Deleted.", None)],
            PLAIN_ERRORS,
        ),
        api(
            "/api/v2/kmip_adapters/{id}/kmip_objects",
            Get,
            "listKmipObjects",
            "List the objects KMIP clients created through an adapter",
            "KMIP",
            [vec![path_param("id", "The adapter's id or name.")], paging("100")].concat(),
            None,
            vec![(200, "The objects.", Some("KmipObjectCollection"))],
            PLAIN_ERRORS,
        ),
        api(
            "/api/v2/kmip_adapters/{id}/kmip_objects/{object_id}",
            Get,
            "getKmipObject",
            "Get a KMIP object",
            "KMIP",
            vec![
                path_param("id", "The adapter's id or name."),
                path_param("object_id", "The object's Unique Identifier."),
            ],
            None,
            vec![(200, "The object.", Some("KmipObjectCollection"))],
            PLAIN_ERRORS,
        ),
        api(
            "/api/v2/kmip_adapters/{id}/kmip_objects/{object_id}",
            Delete,
            "deleteKmipObject",
            "Destroy a KMIP object (its material is erased; the record stays, state 5)",
            "KMIP",
            vec![
                path_param("id", "The adapter's id or name."),
                path_param("object_id", "The object's Unique Identifier."),
            ],
            None,
            vec![(204, "Destroyed.", None)],
            PLAIN_ERRORS,
        ),
        api(
            "/api/v2/keys/{id}/registrations",
            Get,
            "listKeyRegistrations",
            "List a key's registrations",
            "Registrations",
            {
                let mut p = vec![key_id()];
                p.extend(registration_query());
                p
            },
            None,
            vec![(200, "The registrations.", Some("RegistrationCollection"))],
            KEY_ERRORS,
        ),
        api(
            "/api/v2/keys/registrations",
            Get,
            "listRegistrations",
            "List the instance's registrations",
            "Registrations",
            registration_query(),
            None,
            vec![(200, "The registrations.", Some("RegistrationCollection"))],
            PLAIN_ERRORS,
        ),
        api(
            "/api/v2/import_token",
            Post,
            "createImportToken",
            "Create an import token",
            "Import tokens",
            vec![],
            Some(("ImportTokenRequest", false)),
            vec![(200, "The token (without its public key).", Some("ImportToken"))],
            BODY_ERRORS,
        ),
        api(
            "/api/v2/import_token",
            Get,
            "getImportToken",
            "Retrieve the import token with its public key and nonce",
            "Import tokens",
            vec![],
            None,
            vec![(200, "The token.", Some("ImportToken"))],
            PLAIN_ERRORS,
        ),
        keyward_op(api(
            "/api/v2/x-keyward/audit",
            Get,
            "listAuditRecords",
            "Audit records of the instance, newest first (Manager; needs `--audit-sink database`, else 404)",
            "x-keyward",
            vec![
                query_matching("action", "^[A-Za-z0-9._-]{1,64}$", "Only records of this action, e.g. `kms.secrets.wrap`."),
                query_matching("keyId", "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$", "Only records of this key (its UUID)."),
                query_matching("outcome", "^(attempt|success|failure)$", "Only records with this outcome."),
                query("since", Type::String, "Records at or after this RFC 3339 time."),
                query("until", Type::String, "Records at or before this RFC 3339 time (not before `since`)."),
                int_query("limit", 1, Some(crate::routes::xkeyward_audit::MAX_LIMIT), "At most this many records (1 to 500; default 50)."),
                int_query("offset", 0, Some(crate::routes::xkeyward_audit::MAX_OFFSET), "Records to skip (0 to 100000; default 0)."),
            ],
            None,
            vec![(200, "The records.", Some("AuditRecordCollection"))],
            PLAIN_ERRORS,
        )),
    ];
    // Registration writes and event acknowledgements: integrated cloud services only.
    for (m, id) in [
        (Post, "createRegistration"),
        (Put, "replaceRegistration"),
        (Patch, "updateRegistration"),
        (Delete, "deleteRegistration"),
    ] {
        v.push(api(
            "/api/v2/keys/{id}/registrations/{crn}",
            m,
            id,
            "Registration writes: refused (integrated cloud services only)",
            "Registrations",
            vec![
                key_id(),
                path_param("crn", "The registered resource's CRN."),
            ],
            None,
            vec![],
            &[400, 401, 403, 429, 500, 503],
        ));
    }
    v.push(api(
        "/api/v2/event_ack",
        Post,
        "eventAcknowledge",
        "Event acknowledgement: refused (integrated cloud services only)",
        "Registrations",
        vec![],
        None,
        vec![],
        &[400, 401, 403, 429, 500, 503],
    ));
    // One path per action, so each documents its own body.
    type Action = (
        &'static str,
        &'static str,
        &'static str,
        Option<(&'static str, bool)>,
        u16,
        Option<&'static str>,
    );
    let body_actions: [Action; 10] = [
        (
            "wrap",
            "wrapKey",
            "Wrap data (or a generated key) with a root key",
            Some(("WrapRequest", false)),
            200,
            Some("WrapResponse"),
        ),
        (
            "unwrap",
            "unwrapKey",
            "Unwrap a ciphertext",
            Some(("UnwrapRequest", true)),
            200,
            Some("UnwrapResponse"),
        ),
        (
            "rewrap",
            "rewrapKey",
            "Rewrap a ciphertext under the key's latest version",
            Some(("UnwrapRequest", true)),
            200,
            Some("RewrapResponse"),
        ),
        (
            "rotate",
            "rotateKey",
            "Rotate a key (new material for an imported key)",
            Some(("RotateRequest", false)),
            204,
            None,
        ),
        (
            "enable",
            "enableKey",
            "Enable a disabled key",
            Some(("EmptyRequest", false)),
            204,
            None,
        ),
        (
            "disable",
            "disableKey",
            "Disable a key",
            Some(("EmptyRequest", false)),
            204,
            None,
        ),
        (
            "setKeyForDeletion",
            "setKeyForDeletion",
            "Authorize the deletion of a dual-authorization key",
            Some(("EmptyRequest", false)),
            204,
            None,
        ),
        (
            "unsetKeyForDeletion",
            "unsetKeyForDeletion",
            "Withdraw a deletion authorization",
            Some(("EmptyRequest", false)),
            204,
            None,
        ),
        (
            "sync",
            "syncKey",
            "Sync a key's registrations (nothing to sync in Keyward)",
            Some(("EmptyRequest", false)),
            204,
            None,
        ),
        (
            "restore",
            "restoreKeyAction",
            "Restore a deleted key",
            Some(("EmptyRequest", false)),
            201,
            Some("KeyCollection"),
        ),
    ];
    for (action, id, summary, body, status, schema) in body_actions {
        let mut ok = vec![(
            status,
            if status == 204 {
                "Done; no body."
            } else {
                "Done."
            },
            schema,
        )];
        let mut params = vec![key_id()];
        match action {
            "rotate" => {
                params.push(prefer());
                ok.push((
                    200,
                    "The rotated key (`Prefer: return=representation`).",
                    Some("KeyCollection"),
                ));
            }
            "restore" => {
                params.push(prefer());
                ok.push((204, "Restored (`Prefer: return=minimal`).", None));
            }
            _ => {}
        }
        v.push(api(
            &format!("/api/v2/keys/{{id}}/actions/{action}"),
            Post,
            id,
            summary,
            actions,
            params,
            body,
            ok,
            BODY_KEY_ERRORS,
        ));
    }
    v.push(keyward_op(api(
        "/api/v2/keys/{id}/actions/rewrapTo",
        Post,
        "rewrapToKey",
        "Cross-key rewrap (Keyward): unwrap under this key and wrap the same DEK under `targetKeyId`, with the same AAD, in one call; the DEK never leaves the server",
        actions,
        vec![key_id()],
        Some(("RewrapToRequest", true)),
        vec![(
            200,
            "Done: `keyVersion` is the source key's version, `rewrappedKeyVersion` the target key's current version.",
            Some("RewrapResponse"),
        )],
        BODY_KEY_ERRORS,
    )));
    v.push(keyward_op(api(
        "/api/v2/x-keyward/batch",
        Post,
        "batchKeyActions",
        "Batch (Keyward): up to 100 wrap, unwrap, rewrap and rewrapTo operations, each answered with the status and body its single request would get",
        actions,
        vec![],
        Some(("BatchRequest", true)),
        vec![(200, "One result per operation, in order.", Some("BatchResponse"))],
        BODY_ERRORS,
    )));
    let mut legacy = api(
        "/api/v2/keys/{id}",
        Post,
        "keyActionLegacy",
        "Key action (deprecated form of `/keys/{id}/actions/{action}`)",
        actions,
        vec![
            key_id(),
            ParameterBuilder::new()
                .name("action")
                .parameter_in(ParameterIn::Query)
                .required(Required::True)
                .description(Some("wrap, unwrap, rewrap, rotate, disable, enable, setKeyForDeletion, unsetKeyForDeletion, sync, restore, or Keyward's rewrapTo."))
                .schema(Some(RefOr::T(Schema::Object(
                    ObjectBuilder::new()
                        .schema_type(Type::String)
                        .pattern(Some("^(wrap|unwrap|rewrap|rotate|disable|enable|setKeyForDeletion|unsetKeyForDeletion|sync|restore|rewrapTo)$"))
                        .build(),
                ))))
                .build(),
        ],
        Some(("WrapRequest", false)),
        vec![
            (200, "wrap, unwrap, rewrap: the result (see the `/actions/` paths).", None),
            (201, "restore: the key.", Some("KeyCollection")),
            (204, "Other actions: done.", None),
        ],
        BODY_KEY_ERRORS,
    );
    legacy.deprecated = true;
    v.push(legacy);
    // Keyward's own endpoints.
    let own = |path: &str, method, id, summary, tag, body, ok, errors| Op {
        path: path.to_string(),
        method,
        id,
        summary,
        tag,
        keyward: true,
        api: false,
        bearer: false,
        params: vec![],
        body,
        ok,
        errors,
        deprecated: false,
    };
    v.push(own(
        "/identity/token",
        Post,
        "identityToken",
        "Exchange an API key for an access token (IAM's API, served by Keyward)",
        "Identity",
        Some(("IdentityTokenForm", true)),
        vec![(200, "The access token.", Some("IdentityToken"))],
        &[400, 413, 429, 503],
    ));
    v.push(own(
        "/oidc/token",
        Post,
        "oidcToken",
        "IAM's older login path: the same grants as `/identity/token` (IBM's `redstone` library)",
        "Identity",
        Some(("IdentityTokenForm", true)),
        vec![(200, "The access token.", Some("IdentityToken"))],
        &[400, 413, 429, 503],
    ));
    let mut rc = own(
        "/v2/resource_instances/{id}",
        Get,
        "getResourceInstance",
        "An instance as IBM Cloud's Resource Controller describes it (what Terraform's provider reads)",
        "Resource Controller",
        None,
        vec![(200, "The instance.", Some("ResourceInstance"))],
        &[400, 401, 404, 429, 503],
    );
    rc.params = vec![path_param_matching(
        "id",
        "The instance's GUID or CRN.",
        None,
    )];
    rc.bearer = true;
    v.push(rc);
    v.push(own(
        "/healthz",
        Get,
        "healthz",
        "Liveness",
        "Operations",
        None,
        vec![(200, "Alive: `{\"status\":\"ok\"}`.", Some("Health"))],
        &[503],
    ));
    v.push(own(
        "/readyz",
        Get,
        "readyz",
        "Readiness (the store answers)",
        "Operations",
        None,
        vec![(200, "Ready.", Some("Health"))],
        &[503],
    ));
    v.push(own(
        "/metrics",
        Get,
        "metrics",
        "Prometheus metrics (text exposition format)",
        "Operations",
        None,
        vec![(200, "Metrics (`text/plain; version=0.0.4`).", None)],
        &[],
    ));
    v.push(own(
        "/openapi.json",
        Get,
        "openapi",
        "This OpenAPI document",
        "Operations",
        None,
        vec![(200, "The OpenAPI 3.1 document.", None)],
        &[],
    ));
    v
}

/// The OpenAPI document.
pub fn document() -> OpenApi {
    let mut paths = Paths::new();
    for op in ops() {
        let (path, item) = operation_with_health(op);
        match paths.paths.get_mut(&path) {
            Some(existing) => existing.merge_operations(item),
            None => {
                paths.paths.insert(path, item);
            }
        }
    }
    let mut components = Schemas::openapi().components.unwrap_or_default();
    components.responses.extend(error_responses());
    components.add_security_scheme(
        "bearer",
        SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
    );
    OpenApiBuilder::new()
        .info(
            InfoBuilder::new()
                .title("Keyward")
                .version(env!("CARGO_PKG_VERSION"))
                .description(Some(
                    "A self-hosted key management service speaking the IBM Key Protect REST API. \
                     Every `/api/v2` operation takes `Authorization: Bearer <token>` (from \
                     `POST /identity/token`) and `Bluemix-Instance`. Errors are the Key Protect \
                     error envelope; `x-reason-codes` lists each status's reason codes. \
                     `x-keyward: true` marks Keyward's own endpoints and extensions.",
                ))
                .build(),
        )
        .paths(paths)
        .components(Some(components))
        .build()
}

/// Links for stateful clients (and Schemathesis's stateful phase): from a created key to
/// every operation on `/api/v2/keys/{id}...` whose only path parameter is the key's id, and
/// from a created key ring to its deletion. Added to the JSON form of the document because
/// utoipa 5 serialises a link's `operationId` under the wrong name.
fn add_links(doc: &mut serde_json::Value) {
    use serde_json::{json, Value};
    const METHODS: [&str; 6] = ["get", "put", "post", "delete", "patch", "head"];
    let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) else {
        return;
    };
    let mut key_ops: Vec<String> = Vec::new();
    for (path, item) in paths.iter() {
        if !path.starts_with("/api/v2/keys/{id}") || path.matches('{').count() != 1 {
            continue;
        }
        for m in METHODS {
            if let Some(id) = item
                .pointer(&format!("/{m}/operationId"))
                .and_then(Value::as_str)
            {
                key_ops.push(id.to_string());
            }
        }
    }
    key_ops.sort();
    for item in paths.values_mut() {
        for m in METHODS {
            let Some(op) = item.get_mut(m) else { continue };
            let id = op
                .get("operationId")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            let links: serde_json::Map<String, Value> = match id.as_str() {
                "createKey" | "createKeyWithPolicyOverrides" => key_ops
                    .iter()
                    .map(|t| {
                        (
                            t.clone(),
                            json!({"operationId": t, "parameters": {"id": "$response.body#/resources/0/id"}}),
                        )
                    })
                    .collect(),
                "createKeyRing" => [(
                    "deleteKeyRing".to_string(),
                    json!({"operationId": "deleteKeyRing", "parameters": {"id": "$request.path.id"}}),
                )]
                .into_iter()
                .collect(),
                _ => continue,
            };
            if let Some(created) = op.pointer_mut("/responses/201") {
                created["links"] = Value::Object(links);
            }
        }
    }
}

/// Fields that Keyward adds to Key Protect's bodies (schema, property): each gets
/// `x-keyward: true`. A client that does not send them sees Key Protect's behaviour.
const EXTENSION_FIELDS: &[(&str, &str)] = &[
    ("Key", "usage"),
    ("ImportTokenRequest", "algorithm"),
    ("ImportToken", "algorithm"),
    ("ImportToken", "id"),
];

fn mark_extension_fields(doc: &mut serde_json::Value) {
    for (schema, field) in EXTENSION_FIELDS {
        if let Some(p) =
            doc.pointer_mut(&format!("/components/schemas/{schema}/properties/{field}"))
        {
            p["x-keyward"] = serde_json::Value::Bool(true);
        }
    }
}

/// The shared error responses, `Error{status}` (the Key Protect envelope, with the status's
/// reason codes) and `IamError{status}` (`/identity/token`).
fn error_responses() -> Vec<(String, RefOr<utoipa::openapi::Response>)> {
    let mut out = Vec::new();
    for status in [
        400u16, 401, 403, 404, 409, 410, 413, 415, 422, 429, 500, 503,
    ] {
        let codes = reason_codes(status);
        let mut r = ResponseBuilder::new()
            .description(format!(
                "{} Reason codes: {}.",
                error_description(status),
                codes.join(", ")
            ))
            .content("application/json", json_content("ErrorCollection"))
            .extensions(ext(false, Some(codes)));
        if matches!(status, 429 | 503) {
            r = r.header("Retry-After", retry_after());
        }
        out.push((format!("Error{status}"), RefOr::T(r.build())));
    }
    for status in [400u16, 413, 429, 503] {
        let mut r = ResponseBuilder::new()
            .description(error_description(status))
            .content("application/json", json_content("IamError"));
        if status == 429 {
            r = r.header("Retry-After", retry_after());
        }
        out.push((format!("IamError{status}"), RefOr::T(r.build())));
    }
    out
}

fn retry_after() -> utoipa::openapi::Header {
    HeaderBuilder::new()
        .schema(scalar(Type::Integer))
        .description(Some("Seconds to wait before retrying."))
        .build()
}

/// `/healthz` and `/readyz` answer 503 with `Health`, not the error envelope.
fn operation_with_health(op: Op) -> (String, PathItem) {
    let health = matches!(op.path.as_str(), "/healthz" | "/readyz");
    let (path, mut item) = operation(op);
    if health {
        for o in [&mut item.get].into_iter().flatten() {
            o.responses.responses.insert(
                "503".into(),
                RefOr::T(
                    ResponseBuilder::new()
                        .description("Not ready, or sealed: `{\"status\":\"sealed\"}`.")
                        .content("application/json", json_content("Health"))
                        .build(),
                ),
            );
        }
    }
    (path, item)
}

/// The document as served and committed: pretty-printed, members in byte order.
pub fn document_json() -> String {
    let doc = document();
    let mut sorted = serde_json::to_value(&doc).unwrap_or_default();
    add_links(&mut sorted);
    mark_extension_fields(&mut sorted);
    let mut s = serde_json::to_string_pretty(&sorted).unwrap_or_default();
    s.push('\n');
    s
}

/// `GET /openapi.json`.
pub async fn serve() -> Response {
    static DOC: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let body = DOC.get_or_init(document_json).clone();
    let mut resp = (StatusCode::OK, body).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_responses_list_their_reason_codes() {
        assert!(reason_codes(400).contains(&"BAD_BODY_ERR"));
        assert_eq!(reason_codes(410), vec!["KEY_DELETED_ERR"]);
        let doc = document_json();
        assert!(doc.contains("\"x-reason-codes\""));
        assert!(doc.contains("\"openapi\": \"3.1.0\""));
    }
}
