//! Key lifecycle commands: disable/enable, delete/restore/purge, versions, dual-auth deletion,
//! sync, key policies, key rings and moves, aliases, instance policies.

use anyhow::{anyhow, bail, Context};
use reqwest::Method;
use serde_json::{json, Map, Value};

use crate::http::Client;
use crate::out::{emit, emit_json, fields, pick, policy_summary, table, OutputFormat};
use crate::resource::{first_resource, print_key, strip_payload, CT_JSON, CT_KEY, PREFER_REPR};
use crate::{AliasCmd, InstancePolicyCmd, InstancePolicySetArgs, KeyCmd, KeyPolicyCmd, KeyRingCmd};

/// Header naming a key ring (list filter, or the ring a key is in).
pub(crate) const KEY_RING_HEADER: &str = "x-kms-key-ring";
const POLICY_TYPE: &str = "application/vnd.ibm.kms.policy+json";

/// Query pairs of a list call: limit, offset, then each named option that is set.
pub(crate) fn list_query(
    limit: Option<u32>,
    offset: Option<u32>,
    extra: &[(&'static str, &Option<String>)],
) -> Vec<(&'static str, String)> {
    let mut q = Vec::new();
    if let Some(l) = limit {
        q.push(("limit", l.to_string()));
    }
    if let Some(o) = offset {
        q.push(("offset", o.to_string()));
    }
    for (name, v) in extra {
        if let Some(v) = v {
            q.push((*name, v.clone()));
        }
    }
    q
}

fn paging(limit: Option<u32>, offset: Option<u32>) -> Vec<(&'static str, String)> {
    list_query(limit, offset, &[])
}

/// After an action that returns no body: reads the key's metadata back and prints it. If
/// the read fails (e.g. a role that may act but not read), the action still succeeded, so a
/// note goes to stderr and a small object is printed.
pub(crate) async fn print_key_after(
    c: &mut Client,
    output: OutputFormat,
    id: &str,
    verb: &str,
) -> anyhow::Result<()> {
    let key = match c
        .call(Method::GET, &["keys", id, "metadata"], &[], &[], None)
        .await
        .and_then(|r| first_resource(r.body))
    {
        Ok(k) => strip_payload(k),
        Err(e) => {
            eprintln!("note: the key was {verb}, but reading it back failed: {e:#}");
            json!({"id": id, (verb): true})
        }
    };
    print_key(output, &key)
}

/// Prints a small object describing what was done (for calls answering 201/204 with no
/// body); human output keeps the order given.
fn print_done(output: OutputFormat, pairs: &[(&str, Value)]) -> anyhow::Result<()> {
    match output {
        OutputFormat::Json => emit_json(&Value::Object(
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.clone()))
                .collect(),
        )),
        OutputFormat::Human => {
            let rows: Vec<(String, String)> = pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), crate::out::scalar(v)))
                .collect();
            emit(&fields(&rows))
        }
    }
}

fn resources(body: &Value) -> Vec<Value> {
    body.get("resources")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

/// The key object of a key envelope, or (no body) the key read back.
async fn print_key_response(
    c: &mut Client,
    output: OutputFormat,
    id: &str,
    verb: &str,
    body: Value,
) -> anyhow::Result<()> {
    if body.is_null() {
        print_key_after(c, output, id, verb).await
    } else {
        print_key(output, &strip_payload(first_resource(body)?))
    }
}

/// The `POST /keys/{id}/actions/<action>` calls that take no body and answer 204.
fn bodiless_action(cmd: &KeyCmd) -> Option<(&str, &'static str, &'static str)> {
    match cmd {
        KeyCmd::Disable { id } => Some((id, "disable", "disabled")),
        KeyCmd::Enable { id } => Some((id, "enable", "enabled")),
        KeyCmd::SetForDeletion { id } => Some((id, "setKeyForDeletion", "setForDeletion")),
        KeyCmd::UnsetForDeletion { id } => Some((id, "unsetKeyForDeletion", "unsetForDeletion")),
        KeyCmd::Sync { id } => Some((id, "sync", "synced")),
        _ => None,
    }
}

pub(crate) async fn key_cmd(
    c: &mut Client,
    output: OutputFormat,
    cmd: &KeyCmd,
) -> anyhow::Result<()> {
    if let Some((id, action, verb)) = bodiless_action(cmd) {
        c.call(
            Method::POST,
            &["keys", id, "actions", action],
            &[],
            &[],
            None,
        )
        .await?;
        return print_key_after(c, output, id, verb).await;
    }
    match cmd {
        KeyCmd::Restore { id } => {
            let resp = c
                .call(
                    Method::POST,
                    &["keys", id, "restore"],
                    &[],
                    &[PREFER_REPR],
                    None,
                )
                .await?;
            print_key_response(c, output, id, "restored", resp.body).await
        }
        KeyCmd::Purge { id } => {
            let resp = c
                .call(
                    Method::DELETE,
                    &["keys", id, "purge"],
                    &[],
                    &[PREFER_REPR],
                    None,
                )
                .await?;
            let key = if resp.body.is_null() {
                json!({"id": id, "purged": true})
            } else {
                strip_payload(first_resource(resp.body)?)
            };
            print_key(output, &key)
        }
        KeyCmd::Versions {
            id,
            all_key_states,
            limit,
            offset,
        } => {
            let mut q = paging(*limit, *offset);
            if *all_key_states {
                q.push(("allKeyStates", "true".to_owned()));
            }
            let resp = c
                .call(Method::GET, &["keys", id, "versions"], &q, &[], None)
                .await?;
            match output {
                OutputFormat::Json => emit_json(&resp.body),
                OutputFormat::Human => {
                    let rows: Vec<Vec<String>> = resources(&resp.body)
                        .iter()
                        .map(|v| {
                            vec![
                                v.get("id").map(crate::out::scalar).unwrap_or_default(),
                                v.get("creationDate")
                                    .map(crate::out::scalar)
                                    .unwrap_or_default(),
                            ]
                        })
                        .collect();
                    emit(&table(&["VERSION ID", "CREATED"], &rows))
                }
            }
        }
        KeyCmd::Policy(p) => key_policy_cmd(c, output, p).await,
        KeyCmd::Move {
            id,
            key_ring,
            current_key_ring,
        } => {
            let mut headers = Vec::new();
            if let Some(r) = current_key_ring {
                headers.push((KEY_RING_HEADER, r.as_str()));
            }
            let body = json!({"keyRingID": key_ring});
            let resp = c
                .call(
                    Method::PATCH,
                    &["keys", id],
                    &[],
                    &headers,
                    Some((CT_KEY, &body)),
                )
                .await?;
            print_key_response(c, output, id, "moved", resp.body).await
        }
        _ => bail!("internal error: this key command is handled elsewhere"),
    }
}

// ---------------------------------------------------------------------------------------------
// key policies

/// The PUT body of `key policy set`: one resource per policy.
pub(crate) fn key_policy_body(
    rotation_interval_months: Option<u8>,
    no_rotation: bool,
    dual_auth_delete: bool,
) -> anyhow::Result<Value> {
    let mut res = Vec::new();
    match (rotation_interval_months, no_rotation) {
        (Some(_), true) => bail!("--rotation-interval-months and --no-rotation exclude each other"),
        (Some(n), false) => {
            if !(1..=12).contains(&n) {
                bail!("--rotation-interval-months must be 1 to 12");
            }
            res.push(
                json!({"type": POLICY_TYPE, "rotation": {"enabled": true, "interval_month": n}}),
            );
        }
        (None, true) => res.push(json!({"type": POLICY_TYPE, "rotation": {"enabled": false}})),
        (None, false) => {}
    }
    if dual_auth_delete {
        res.push(json!({"type": POLICY_TYPE, "dualAuthDelete": {"enabled": true}}));
    }
    if res.is_empty() {
        bail!(
            "nothing to set: pass --rotation-interval-months, --no-rotation or --dual-auth-delete"
        );
    }
    Ok(collection(res))
}

fn collection(resources: Vec<Value>) -> Value {
    json!({
        "metadata": {"collectionType": POLICY_TYPE, "collectionTotal": resources.len()},
        "resources": resources,
    })
}

/// Human lines of a key policy envelope: `rotation: enabled; interval_month=3`.
fn key_policy_rows(body: &Value) -> Vec<(String, String)> {
    let mut rows = Vec::new();
    for r in resources(body) {
        for name in ["rotation", "dualAuthDelete"] {
            if let Some(p) = r.get(name).filter(|p| p.is_object()) {
                rows.push((name.to_owned(), policy_summary(p)));
            }
        }
    }
    rows
}

fn print_key_policies(output: OutputFormat, body: &Value) -> anyhow::Result<()> {
    match output {
        OutputFormat::Json => emit_json(body),
        OutputFormat::Human => {
            let rows = key_policy_rows(body);
            if rows.is_empty() {
                emit("no key policies")
            } else {
                emit(&fields(&rows))
            }
        }
    }
}

async fn key_policy_cmd(
    c: &mut Client,
    output: OutputFormat,
    cmd: &KeyPolicyCmd,
) -> anyhow::Result<()> {
    match cmd {
        KeyPolicyCmd::Show { id, policy } => {
            let q: Vec<(&str, String)> = policy
                .iter()
                .map(|p| ("policy", p.wire_name().to_owned()))
                .collect();
            let resp = c
                .call(Method::GET, &["keys", id, "policies"], &q, &[], None)
                .await?;
            print_key_policies(output, &resp.body)
        }
        KeyPolicyCmd::Set {
            id,
            rotation_interval_months,
            no_rotation,
            dual_auth_delete,
        } => {
            let body = key_policy_body(*rotation_interval_months, *no_rotation, *dual_auth_delete)?;
            let resp = c
                .call(
                    Method::PUT,
                    &["keys", id, "policies"],
                    &[],
                    &[],
                    Some((CT_JSON, &body)),
                )
                .await?;
            if resp.body.is_null() {
                let resp = c
                    .call(Method::GET, &["keys", id, "policies"], &[], &[], None)
                    .await?;
                return print_key_policies(output, &resp.body);
            }
            print_key_policies(output, &resp.body)
        }
    }
}

// ---------------------------------------------------------------------------------------------
// key rings and aliases

pub(crate) async fn key_ring_cmd(
    c: &mut Client,
    output: OutputFormat,
    cmd: &KeyRingCmd,
) -> anyhow::Result<()> {
    match cmd {
        KeyRingCmd::List { limit, offset } => {
            let q = paging(*limit, *offset);
            let resp = c.call(Method::GET, &["key_rings"], &q, &[], None).await?;
            match output {
                OutputFormat::Json => emit_json(&resp.body),
                OutputFormat::Human => {
                    let cell =
                        |r: &Value, f: &str| r.get(f).map(crate::out::scalar).unwrap_or_default();
                    let rows: Vec<Vec<String>> = resources(&resp.body)
                        .iter()
                        .map(|r| vec![cell(r, "id"), cell(r, "creationDate"), cell(r, "createdBy")])
                        .collect();
                    emit(&table(&["ID", "CREATED", "CREATED BY"], &rows))
                }
            }
        }
        KeyRingCmd::Create { id } => {
            c.call(Method::POST, &["key_rings", id], &[], &[], None)
                .await?;
            print_done(output, &[("id", json!(id)), ("created", json!(true))])
        }
        KeyRingCmd::Delete { id, force } => {
            let q = if *force {
                vec![("force", "true".to_owned())]
            } else {
                Vec::new()
            };
            c.call(Method::DELETE, &["key_rings", id], &q, &[], None)
                .await?;
            print_done(output, &[("id", json!(id)), ("deleted", json!(true))])
        }
    }
}

pub(crate) async fn alias_cmd(
    c: &mut Client,
    output: OutputFormat,
    cmd: &AliasCmd,
) -> anyhow::Result<()> {
    match cmd {
        AliasCmd::Create { key, alias } => {
            let resp = c
                .call(
                    Method::POST,
                    &["keys", key, "aliases", alias],
                    &[],
                    &[],
                    None,
                )
                .await?;
            let v = if resp.body.is_null() {
                json!({"keyId": key, "alias": alias})
            } else {
                first_resource(resp.body)?
            };
            match output {
                OutputFormat::Json => emit_json(&v),
                OutputFormat::Human => emit(&fields(&pick(
                    &v,
                    &["alias", "keyId", "creationDate", "createdBy"],
                ))),
            }
        }
        AliasCmd::Delete { key, alias } => {
            c.call(
                Method::DELETE,
                &["keys", key, "aliases", alias],
                &[],
                &[],
                None,
            )
            .await?;
            print_done(
                output,
                &[
                    ("alias", json!(alias)),
                    ("key", json!(key)),
                    ("deleted", json!(true)),
                ],
            )
        }
    }
}

// ---------------------------------------------------------------------------------------------
// instance policies

fn instance_policy(
    policy_type: &str,
    enabled: bool,
    attributes: Option<Map<String, Value>>,
) -> Value {
    let mut data = Map::new();
    data.insert("enabled".into(), json!(enabled));
    if let Some(a) = attributes.filter(|_| enabled) {
        data.insert("attributes".into(), Value::Object(a));
    }
    json!({"policy_type": policy_type, "policy_data": data})
}

fn attrs(pairs: impl IntoIterator<Item = (&'static str, Value)>) -> Map<String, Value> {
    pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
}

/// The resources of an `instance-policy set` PUT. `current_kcia` is the attribute object of
/// the current keyCreateImportAccess policy when it is enabled: attributes not given keep
/// those values.
pub(crate) fn instance_policy_resources(
    a: &InstancePolicySetArgs,
    current_kcia: Option<&Map<String, Value>>,
) -> anyhow::Result<Vec<Value>> {
    let mut out = Vec::new();
    if let Some(v) = a.dual_auth_delete {
        out.push(instance_policy("dualAuthDelete", v.is_on(), None));
    }
    if let Some(n) = a.rotation_interval_months {
        if !(1..=12).contains(&n) {
            bail!("--rotation-interval-months must be 1 to 12");
        }
        out.push(instance_policy(
            "rotation",
            true,
            Some(attrs([("interval_month", json!(n))])),
        ));
    } else if a.no_rotation {
        out.push(instance_policy("rotation", false, None));
    }
    if !a.allowed_ip.is_empty() {
        let cidrs: Vec<&str> = a
            .allowed_ip
            .iter()
            .map(|s| s.trim())
            .filter(|s| !s.is_empty())
            .collect();
        if cidrs.is_empty() {
            bail!(
                "--allowed-ip needs at least one CIDR (use --no-allowed-ip to disable the policy)"
            );
        }
        out.push(instance_policy(
            "allowedIP",
            true,
            Some(attrs([("allowed_ip", json!(cidrs))])),
        ));
    } else if a.no_allowed_ip {
        out.push(instance_policy("allowedIP", false, None));
    }
    if let Some(n) = a.allowed_network {
        out.push(instance_policy(
            "allowedNetwork",
            true,
            Some(attrs([("allowed_network", json!(n.wire_name()))])),
        ));
    } else if a.no_allowed_network {
        out.push(instance_policy("allowedNetwork", false, None));
    }
    if let Some(v) = a.metrics {
        out.push(instance_policy("metrics", v.is_on(), None));
    }
    let kcia = a.key_create_import_access();
    if !kcia.is_empty() {
        let mut m = current_kcia.cloned().unwrap_or_default();
        for (k, v) in kcia {
            m.insert(k.to_owned(), json!(v));
        }
        out.push(instance_policy("keyCreateImportAccess", true, Some(m)));
    } else if a.no_key_create_import_access {
        out.push(instance_policy("keyCreateImportAccess", false, None));
    }
    if out.is_empty() {
        bail!("nothing to set: name at least one policy (see --help)");
    }
    Ok(out)
}

/// The attributes of the current keyCreateImportAccess policy, when it is enabled.
async fn current_kcia(c: &mut Client) -> anyhow::Result<Option<Map<String, Value>>> {
    let resp = c
        .call(
            Method::GET,
            &["instance", "policies"],
            &[("policy", "keyCreateImportAccess".to_owned())],
            &[],
            None,
        )
        .await
        .context(
            "reading the current keyCreateImportAccess policy (to keep the attributes not given)",
        )?;
    Ok(resources(&resp.body)
        .into_iter()
        .find(|r| r.get("policy_type").and_then(Value::as_str) == Some("keyCreateImportAccess"))
        .and_then(|r| r.get("policy_data").cloned())
        .filter(|d| d.get("enabled").and_then(Value::as_bool) == Some(true))
        .and_then(|d| d.get("attributes").and_then(Value::as_object).cloned()))
}

fn instance_policy_rows(body: &Value) -> Vec<(String, String)> {
    resources(body)
        .iter()
        .map(|r| {
            let name = r
                .get("policy_type")
                .map(crate::out::scalar)
                .unwrap_or_else(|| "?".to_owned());
            let summary = r.get("policy_data").map(policy_summary).unwrap_or_default();
            (name, summary)
        })
        .collect()
}

fn print_instance_policies(output: OutputFormat, body: &Value) -> anyhow::Result<()> {
    match output {
        OutputFormat::Json => emit_json(body),
        OutputFormat::Human => {
            let rows = instance_policy_rows(body);
            if rows.is_empty() {
                emit("no instance policies set")
            } else {
                emit(&fields(&rows))
            }
        }
    }
}

pub(crate) async fn instance_policy_cmd(
    c: &mut Client,
    output: OutputFormat,
    cmd: &InstancePolicyCmd,
) -> anyhow::Result<()> {
    match cmd {
        InstancePolicyCmd::Show { policy } => {
            let q: Vec<(&str, String)> = policy
                .iter()
                .map(|p| ("policy", p.wire_name().to_owned()))
                .collect();
            let resp = c
                .call(Method::GET, &["instance", "policies"], &q, &[], None)
                .await?;
            print_instance_policies(output, &resp.body)
        }
        InstancePolicyCmd::Set(a) => {
            let current = if a.key_create_import_access().is_empty() {
                None
            } else {
                current_kcia(c).await?
            };
            let body = collection(instance_policy_resources(a, current.as_ref())?);
            c.call(
                Method::PUT,
                &["instance", "policies"],
                &[],
                &[],
                Some((CT_JSON, &body)),
            )
            .await?;
            let resp = c
                .call(Method::GET, &["instance", "policies"], &[], &[], None)
                .await
                .map_err(|e| {
                    anyhow!("the policies were set, but reading them back failed: {e:#}")
                })?;
            print_instance_policies(output, &resp.body)
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use crate::{AllowedNetwork, OnOff};

    #[test]
    fn list_query_keeps_order_and_skips_unset() {
        let q = list_query(
            Some(5),
            None,
            &[
                ("state", &Some("1,5".into())),
                ("search", &None),
                ("filter", &Some("state=1".into())),
                ("sort", &Some("-id".into())),
            ],
        );
        let want: Vec<(&str, String)> = vec![
            ("limit", "5".into()),
            ("state", "1,5".into()),
            ("filter", "state=1".into()),
            ("sort", "-id".into()),
        ];
        assert_eq!(q, want);
        assert!(paging(None, None).is_empty());
        assert_eq!(paging(None, Some(3)), vec![("offset", "3".to_owned())]);
    }

    #[test]
    fn key_policy_bodies() {
        let b = key_policy_body(Some(3), false, true).unwrap();
        assert_eq!(b["metadata"]["collectionTotal"], 2);
        assert_eq!(
            b["resources"][0]["rotation"],
            json!({"enabled": true, "interval_month": 3})
        );
        assert_eq!(b["resources"][0]["type"], POLICY_TYPE);
        assert_eq!(
            b["resources"][1]["dualAuthDelete"],
            json!({"enabled": true})
        );
        let b = key_policy_body(None, true, false).unwrap();
        assert_eq!(b["metadata"]["collectionTotal"], 1);
        assert_eq!(b["resources"][0]["rotation"], json!({"enabled": false}));
        assert!(key_policy_body(None, false, false).is_err());
        assert!(key_policy_body(Some(3), true, false).is_err());
        assert!(key_policy_body(Some(13), false, false).is_err());
    }

    #[test]
    fn instance_policy_bodies() {
        let a = InstancePolicySetArgs {
            dual_auth_delete: Some(OnOff::Off),
            rotation_interval_months: Some(2),
            allowed_ip: vec!["10.0.0.0/8".into(), " ::1/128 ".into()],
            allowed_network: Some(AllowedNetwork::PrivateOnly),
            metrics: Some(OnOff::On),
            enforce_token: Some(OnOff::On),
            create_root_key: Some(OnOff::Off),
            ..Default::default()
        };
        let mut current = Map::new();
        current.insert("import_root_key".into(), json!(false));
        current.insert("enforce_token".into(), json!(false));
        let r = instance_policy_resources(&a, Some(&current)).unwrap();
        let by_type = |t: &str| r.iter().find(|p| p["policy_type"] == t).unwrap().clone();
        assert_eq!(r.len(), 6);
        assert_eq!(
            by_type("dualAuthDelete")["policy_data"],
            json!({"enabled": false})
        );
        assert_eq!(
            by_type("rotation")["policy_data"],
            json!({"enabled": true, "attributes": {"interval_month": 2}})
        );
        assert_eq!(
            by_type("allowedIP")["policy_data"]["attributes"]["allowed_ip"],
            json!(["10.0.0.0/8", "::1/128"])
        );
        assert_eq!(
            by_type("allowedNetwork")["policy_data"]["attributes"]["allowed_network"],
            "private-only"
        );
        assert_eq!(by_type("metrics")["policy_data"], json!({"enabled": true}));
        // given flags override, the others keep their current values
        assert_eq!(
            by_type("keyCreateImportAccess")["policy_data"],
            json!({"enabled": true, "attributes": {
                "import_root_key": false, "enforce_token": true, "create_root_key": false}})
        );

        let off = InstancePolicySetArgs {
            no_rotation: true,
            no_allowed_ip: true,
            no_allowed_network: true,
            no_key_create_import_access: true,
            ..Default::default()
        };
        let r = instance_policy_resources(&off, Some(&current)).unwrap();
        assert_eq!(r.len(), 4);
        for p in &r {
            assert_eq!(p["policy_data"], json!({"enabled": false}), "{p}");
        }

        assert!(instance_policy_resources(&InstancePolicySetArgs::default(), None).is_err());
        let empty_ip = InstancePolicySetArgs {
            allowed_ip: vec![" ".into()],
            ..Default::default()
        };
        assert!(instance_policy_resources(&empty_ip, None).is_err());
    }

    #[test]
    fn policy_rows() {
        let body = json!({"resources": [
            {"id": "k", "rotation": {"enabled": true, "interval_month": 3}},
            {"id": "k", "dualAuthDelete": {"enabled": true}},
        ]});
        assert_eq!(
            key_policy_rows(&body),
            vec![
                (
                    "rotation".to_owned(),
                    "enabled; interval_month=3".to_owned()
                ),
                ("dualAuthDelete".to_owned(), "enabled".to_owned()),
            ]
        );
        let body = json!({"resources": [
            {"policy_type": "allowedIP", "policy_data": {"enabled": true, "attributes": {"allowed_ip": ["127.0.0.0/8"]}}},
            {"policy_type": "dualAuthDelete", "policy_data": {"enabled": false}},
        ]});
        assert_eq!(
            instance_policy_rows(&body),
            vec![
                (
                    "allowedIP".to_owned(),
                    "enabled; allowed_ip=127.0.0.0/8".to_owned()
                ),
                ("dualAuthDelete".to_owned(), "disabled".to_owned()),
            ]
        );
    }
}
