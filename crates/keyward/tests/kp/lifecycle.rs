//! `keyward kp` lifecycle commands: the key lifecycle, dual authorization, aliases, listing
//! and instance policies.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde_json::Value;

use crate::Server;

fn ids(list: &Value) -> Vec<String> {
    list["resources"]
        .as_array()
        .unwrap_or_else(|| panic!("no resources: {list}"))
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .collect()
}

/// The brief's sequence: create → alias → disable → enable (too early) → versions → rotate →
/// versions → key policy → key ring → move → list by ring → delete → restore (too early) →
/// purge (Manager: 403; KeyPurge: too early) → forced key-ring delete.
#[test]
fn key_lifecycle_from_the_command_line() {
    let mut s = Server::start(0);

    // create + alias, then address the key by its alias
    let a = s.create("lc-a");
    let al = s.kp(&["alias", "create", &a, "lc-alias"]);
    assert_eq!(al["alias"], "lc-alias", "{al}");
    assert_eq!(al["keyId"], a.as_str(), "{al}");
    let shown = s.kp(&["key", "show", "lc-alias"]);
    assert_eq!(shown["id"], a.as_str());
    assert_eq!(shown["aliases"], serde_json::json!(["lc-alias"]));

    // disable (via the alias) → suspended; enable right away → 409 REQ_TOO_EARLY_ERR
    let d = s.kp(&["key", "disable", "lc-alias"]);
    assert_eq!(d["id"], a.as_str(), "{d}");
    assert_eq!(d["state"], 2, "{d}");
    s.fail(&["key", "enable", &a])
        .expect(409, "REQ_TOO_EARLY_ERR");
    assert_eq!(s.kp(&["key", "show", &a])["state"], 2);
    let text = s.human(&["key", "show", &a]);
    assert!(
        text.contains("state:") && text.contains("2 (suspended)"),
        "{text}"
    );
    // disabling again: wrong state
    s.fail(&["key", "disable", &a])
        .expect(409, "KEY_ACTION_INVALID_STATE_ERR");

    // versions of a suspended key need --all-key-states; rotate is refused in state 2
    s.fail(&["key", "versions", &a])
        .expect(409, "KEY_ACTION_INVALID_STATE_ERR");
    let v = s.kp(&["key", "versions", &a, "--all-key-states"]);
    assert_eq!(
        ids(&v),
        [shown["keyVersion"]["id"].as_str().unwrap()],
        "{v}"
    );
    s.fail(&["key", "rotate", &a])
        .expect(409, "KEY_ACTION_INVALID_STATE_ERR");

    // an active key: versions → rotate → versions shows 2, newest first
    let b = s.create("lc-b");
    let before = s.kp(&["key", "versions", &b]);
    assert_eq!(ids(&before).len(), 1, "{before}");
    let rotated = s.kp(&["key", "rotate", &b]);
    let new_version = rotated["keyVersion"]["id"].as_str().unwrap().to_owned();
    assert_ne!(new_version, ids(&before)[0]);
    let after = s.kp(&["key", "versions", &b]);
    assert_eq!(
        ids(&after),
        [new_version.clone(), ids(&before)[0].clone()],
        "{after}"
    );
    let text = s.human(&["key", "versions", &b]);
    assert!(text.starts_with("VERSION ID"), "{text}");
    assert!(
        text.contains(&new_version) && text.contains(&ids(&before)[0]),
        "{text}"
    );
    // a second rotation within the hour
    s.fail(&["key", "rotate", &b])
        .expect(409, "KEY_ROTATION_NOT_PERMITTED");

    // key policy set / show
    let p = s.kp(&[
        "key",
        "policy",
        "set",
        &b,
        "--rotation-interval-months",
        "3",
    ]);
    let rot = p["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r.get("rotation").is_some())
        .unwrap_or_else(|| panic!("{p}"));
    assert_eq!(rot["rotation"]["enabled"], true, "{p}");
    assert_eq!(rot["rotation"]["interval_month"], 3, "{p}");
    let shown = s.kp(&["key", "policy", "show", &b, "--policy", "rotation"]);
    assert_eq!(
        shown["resources"][0]["rotation"]["interval_month"], 3,
        "{shown}"
    );
    assert_eq!(shown["resources"][0]["id"], b.as_str(), "{shown}");
    let text = s.human(&["key", "policy", "show", &b]);
    assert!(
        text.contains("rotation:") && text.contains("enabled; interval_month=3"),
        "{text}"
    );
    let text = s.human(&["key", "policy", "show", &b, "--policy", "dualAuthDelete"]);
    assert_eq!(text.trim(), "no key policies");
    assert_eq!(s.kp(&["key", "show", &b])["rotation"]["interval_month"], 3);
    // nothing to set: usage error, exit 2, nothing sent
    assert_eq!(s.fail(&["key", "policy", "set", &b]).code, 2);

    // key ring create → list → move → list by ring
    let r = s.kp(&["key-ring", "create", "ring-1"]);
    assert_eq!(r, serde_json::json!({"id": "ring-1", "created": true}));
    s.fail(&["key-ring", "create", "ring-1"])
        .expect(409, "KEY_RING_CONFLICT_ERR");
    let rings = s.kp(&["key-ring", "list"]);
    assert_eq!(ids(&rings), ["default", "ring-1"], "{rings}");
    let text = s.human(&["key-ring", "create", "ring-2"]);
    assert_eq!(text, "id:      ring-2\ncreated: true\n");
    s.kp(&["key-ring", "delete", "ring-2"]);
    let text = s.human(&["key-ring", "list"]);
    assert!(text.starts_with("ID ") && text.contains("ring-1"), "{text}");
    let moved = s.kp(&["key", "move", &b, "--key-ring", "ring-1"]);
    assert_eq!(moved["id"], b.as_str(), "{moved}");
    assert_eq!(moved["keyRingID"], "ring-1", "{moved}");
    s.fail(&["key", "move", &b, "--key-ring", "no-such-ring"])
        .expect(404, "KEY_RING_NOT_FOUND_ERR");
    assert_eq!(
        ids(&s.kp(&["key", "list", "--key-ring", "ring-1"])),
        [b.as_str()]
    );
    assert_eq!(
        ids(&s.kp(&["key", "list", "--key-ring", "default"])),
        [a.as_str()]
    );
    s.fail(&["key-ring", "delete", "ring-1"])
        .expect(409, "KEY_RING_NOT_EMPTY_ERR");

    // delete → restore too early → purge: a Manager is refused (403), KeyPurge is too early
    let del = s.kp(&["key", "delete", &b]);
    assert_eq!(del["state"], 5, "{del}");
    assert_eq!(del["deleted"], true, "{del}");
    s.fail(&["key", "delete", &b])
        .expect(410, "KEY_DELETED_ERR");
    let text = s.human(&["key", "show", &b]);
    assert!(
        text.contains("5 (destroyed)") && text.contains("purgeAllowedFrom:"),
        "{text}"
    );
    s.fail(&["key", "restore", &b])
        .expect(409, "REQ_TOO_EARLY_ERR");
    s.fail(&["key", "purge", &b])
        .expect(403, "UNAUTHORIZED_ERR");
    let purger = s.new_apikey("KeyPurge", "kp-purger");
    s.fail_as(&purger, &["key", "purge", &b])
        .expect(409, "REQ_TOO_EARLY_ERR");
    s.fail_as(&purger, &["key", "purge", &a])
        .expect(409, "KEY_ACTION_INVALID_STATE_ERR");
    let deleted = s.kp(&["key", "list", "--state", "5"]);
    assert_eq!(ids(&deleted), [b.as_str()], "{deleted}");

    // the ring now holds only a deleted key: --force removes it
    let r = s.kp(&["key-ring", "delete", "ring-1", "--force"]);
    assert_eq!(r, serde_json::json!({"id": "ring-1", "deleted": true}));
    assert_eq!(ids(&s.kp(&["key-ring", "list"])), ["default"]);
    s.fail(&["key-ring", "delete", "default"])
        .expect(409, "KEY_RING_CONFLICT_ERR");

    // alias delete; the alias no longer resolves
    let gone = s.kp(&["alias", "delete", &a, "lc-alias"]);
    assert_eq!(gone["deleted"], true, "{gone}");
    s.fail(&["key", "show", "lc-alias"])
        .expect(404, "KEY_NOT_FOUND_ERR");
}

/// Dual-authorization deletion with two Managers, sync, aliases that are refused, and the new
/// `key list` options.
#[test]
fn dual_auth_sync_aliases_and_listing() {
    let mut s = Server::start(0);
    let second = s.new_apikey("Manager", "kp-second-manager");

    let d = s.create("dual-key");
    let p = s.kp(&["key", "policy", "set", &d, "--dual-auth-delete"]);
    assert!(
        p["resources"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["dualAuthDelete"]["enabled"] == true),
        "{p}"
    );
    let set = s.kp(&["key", "set-for-deletion", &d]);
    assert_eq!(set["dualAuthDelete"]["enabled"], true, "{set}");
    assert_eq!(set["dualAuthDelete"]["keySetForDeletion"], true, "{set}");
    let text = s.human(&["key", "show", &d]);
    assert!(
        text.contains("dualAuthDelete:") && text.contains("keySetForDeletion=true"),
        "{text}"
    );
    // the same user cannot give the second authorization
    s.fail(&["key", "delete", &d])
        .expect(409, "AUTHORIZATIONS_NOT_MET");
    let unset = s.kp(&["key", "unset-for-deletion", &d]);
    assert_eq!(
        unset["dualAuthDelete"]["keySetForDeletion"], false,
        "{unset}"
    );
    s.fail_as(&second, &["key", "delete", &d])
        .expect(409, "AUTHORIZATIONS_NOT_MET");
    s.kp(&["key", "set-for-deletion", &d]);
    let del = s.kp_as(&second, &["key", "delete", &d]);
    assert_eq!(del["state"], 5, "{del}");

    // a key without the policy
    let plain = s.create("plain-key");
    s.fail(&["key", "set-for-deletion", &plain])
        .expect(409, "NOT_DUAL_AUTH_ERR");
    s.fail(&["key", "unset-for-deletion", &plain])
        .expect(409, "NOT_DUAL_AUTH_ERR");
    let synced = s.kp(&["key", "sync", &plain]);
    assert_eq!(synced["id"], plain.as_str(), "{synced}");
    let text = s.human(&["key", "sync", &plain]);
    assert!(
        text.contains(&plain) && text.contains("1 (active)"),
        "{text}"
    );

    // disable / enable on a standard key: root keys only
    let std_key = s.kp(&["key", "create", "--name", "std-key", "--standard"]);
    let sid = std_key["id"].as_str().unwrap();
    s.fail(&["key", "disable", sid])
        .expect(400, "KEY_ROOT_REQ_ERR");

    // aliases: reserved word, UUID, duplicate; human output
    s.fail(&["alias", "create", &plain, "keys"])
        .expect(400, "INVALID_FIELD_ERR");
    s.fail(&["alias", "create", &plain, &d])
        .expect(400, "INVALID_FIELD_ERR");
    let text = s.human(&["alias", "create", &plain, "alpha-alias"]);
    assert!(
        text.contains("alias:") && text.contains("alpha-alias"),
        "{text}"
    );
    assert!(text.contains(&plain), "{text}");
    s.fail(&["alias", "create", sid, "alpha-alias"])
        .expect(409, "KEY_ALIAS_NOT_UNIQUE_ERR");

    // list: --search over names and aliases, --filter, --sort (with a leading '-')
    let one = s.create("alpha-one");
    let two = s.create("alpha-two");
    let mut want = vec![one.clone(), two.clone(), plain.clone()]; // plain has alias alpha-alias
    want.sort();
    let mut got = ids(&s.kp(&["key", "list", "--search", "alpha"]));
    got.sort();
    assert_eq!(got, want);
    assert_eq!(
        ids(&s.kp(&["key", "list", "--search", "exact:name:alpha-two"])),
        [two.as_str()]
    );
    assert_eq!(
        ids(&s.kp(&["key", "list", "--search", "alias:alpha-alias"])),
        [plain.as_str()]
    );
    let root_active = ids(&s.kp(&["key", "list", "--filter", "state=1 extractable=false"]));
    assert!(
        !root_active.contains(&sid.to_owned()) && !root_active.contains(&d),
        "{root_active:?}"
    );
    assert!(root_active.contains(&one), "{root_active:?}");
    let desc = ids(&s.kp(&["key", "list", "--sort", "-id"]));
    let mut sorted = desc.clone();
    sorted.sort();
    sorted.reverse();
    assert_eq!(desc, sorted);
    assert_eq!(desc.len(), 4, "active keys only: {desc:?}");
    s.fail(&["key", "list", "--sort", "name"])
        .expect(400, "INVALID_QUERY_PARAM_ERR");
    s.fail(&["key", "list", "--filter", "state=1", "--state", "1"])
        .expect(400, "INVALID_QUERY_PARAM_ERR");
    let text = s.human(&["key", "list", "--search", "alpha-two"]);
    assert!(
        text.starts_with("ID ") && text.contains(&two) && !text.contains(&one),
        "{text}"
    );
}

/// Instance policies: set several at once, show all / one, their effect on new keys and
/// imports, keyCreateImportAccess attributes kept across calls, and turning them off.
#[test]
fn instance_policies_from_the_command_line() {
    let s = Server::start(0);
    let empty = s.kp(&["instance-policy", "show"]);
    assert_eq!(empty["resources"], serde_json::json!([]), "{empty}");
    assert_eq!(
        s.human(&["instance-policy", "show"]).trim(),
        "no instance policies set"
    );

    let all = s.kp(&[
        "instance-policy",
        "set",
        "--dual-auth-delete",
        "on",
        "--rotation-interval-months",
        "2",
        "--enforce-token",
        "on",
        "--allowed-ip",
        "127.0.0.0/8,::1/128",
    ]);
    let policy = |v: &Value, t: &str| -> Value {
        v["resources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["policy_type"] == t)
            .unwrap_or_else(|| panic!("no {t}: {v}"))["policy_data"]
            .clone()
    };
    assert_eq!(policy(&all, "dualAuthDelete")["enabled"], true, "{all}");
    assert_eq!(
        policy(&all, "rotation")["attributes"]["interval_month"],
        2,
        "{all}"
    );
    assert_eq!(
        policy(&all, "keyCreateImportAccess")["attributes"]["enforce_token"],
        true,
        "{all}"
    );
    assert_eq!(
        policy(&all, "allowedIP")["attributes"]["allowed_ip"],
        serde_json::json!(["127.0.0.0/8", "::1/128"]),
        "{all}"
    );
    let one = s.kp(&["instance-policy", "show", "--policy", "allowedIP"]);
    assert_eq!(one["resources"].as_array().unwrap().len(), 1, "{one}");
    let text = s.human(&["instance-policy", "show"]);
    for line in [
        "dualAuthDelete:",
        "rotation:",
        "interval_month=2",
        "enforce_token=true",
        "allowed_ip=127.0.0.0/8,::1/128",
    ] {
        assert!(text.contains(line), "{line}: {text}");
    }

    // effects: new keys get dual auth and rotation; a plain import is refused
    let k = s.kp(&["key", "create", "--name", "after-policy"]);
    assert_eq!(k["dualAuthDelete"]["enabled"], true, "{k}");
    assert_eq!(k["rotation"]["interval_month"], 2, "{k}");
    let file = s.write("m.bin", &keyward_crypto::random_bytes(32).unwrap());
    s.fail(&["key", "import", "--name", "plain", "--material-file", &file])
        .expect(409, "KEY_CREATE_IMPORT_ACCESS_ERR");

    // one more attribute: the others are kept
    let merged = s.kp(&["instance-policy", "set", "--create-standard-key", "off"]);
    let attrs = policy(&merged, "keyCreateImportAccess")["attributes"].clone();
    assert_eq!(attrs["enforce_token"], true, "{merged}");
    assert_eq!(attrs["create_standard_key"], false, "{merged}");
    s.fail(&["key", "create", "--name", "std", "--standard"])
        .expect(409, "KEY_CREATE_IMPORT_ACCESS_ERR");

    // bad input is the server's to judge: a reason code naming the field
    let f = s.fail(&["instance-policy", "set", "--allowed-ip", "not-a-cidr"]);
    f.expect(400, "INVALID_FIELD_ERR");
    assert!(f.stderr.contains("allowed_ip"), "{}", f.stderr);
    // usage errors exit 2
    assert_eq!(s.fail(&["instance-policy", "set"]).code, 2);
    assert_eq!(
        s.fail(&["instance-policy", "set", "--enforce-token", "yes"])
            .code,
        2
    );

    // everything off
    let off = s.kp(&[
        "instance-policy",
        "set",
        "--dual-auth-delete",
        "off",
        "--no-rotation",
        "--no-key-create-import-access",
        "--no-allowed-ip",
    ]);
    for t in ["dualAuthDelete", "rotation", "allowedIP"] {
        assert_eq!(
            policy(&off, t),
            serde_json::json!({"enabled": false}),
            "{t}: {off}"
        );
    }
    // keyCreateImportAccess is always shown with the attributes in force (Key Protect's
    // defaults when it is off: Terraform's provider reads them without a nil check)
    assert_eq!(
        policy(&off, "keyCreateImportAccess"),
        serde_json::json!({"enabled": false, "attributes": {
            "create_root_key": true, "create_standard_key": true, "import_root_key": true,
            "import_standard_key": true, "enforce_token": false}}),
        "{off}"
    );
    let text = s.human(&[
        "instance-policy",
        "show",
        "--policy",
        "keyCreateImportAccess",
    ]);
    assert_eq!(text.trim(), "keyCreateImportAccess: disabled");
    let k = s.kp(&["key", "import", "--name", "plain", "--material-file", &file]);
    assert_eq!(k["imported"], true, "{k}");
    let w = s.kp(&["key", "wrap", k["id"].as_str().unwrap()]);
    assert_eq!(
        B64.decode(w["plaintext"].as_str().unwrap()).unwrap().len(),
        32
    );
}
