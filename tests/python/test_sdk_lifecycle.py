"""Key lifecycle through IBM's Python SDK (keyprotect 3.0.1), spec sections 2 and 6-8:
rotate and key versions, disable/enable, delete/restore/purge, key policies, dual-authorised
deletion, instance policies, key rings, aliases, list sort/search/filter, registrations.

Every test that changes instance-wide state works in an instance of its own, made with
`keyward admin` while the server runs, so these tests never touch the instances of the other
modules and can run in any order or alone. The 30-second cooldowns run on the real wall
clock: their error paths are tested right away, and one test marked `slow` waits 31 s once
for the success paths of enable and restore (deselect it with `-m "not slow"`)."""

from __future__ import annotations

import os
import re
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Dict, Iterator, List, Optional, Tuple

import pytest
from ibm_cloud_sdk_core import ApiException
from keyprotect import IbmKeyProtectApiV2

from kwhelpers import (
    KEY_TYPE,
    api_error,
    b64,
    create_key,
    error_body,
    first_resource,
    jbody,
    key_envelope,
    reason_code,
    result,
    unb64,
    unique_name,
    unwrap,
    wrap,
)

POLICY_TYPE = "application/vnd.ibm.kms.policy+json"
VERSION_TYPE = "application/vnd.ibm.kms.key.version+json"
ALIAS_TYPE = "application/vnd.ibm.kms.alias+json"
RING_TYPE = "application/vnd.ibm.kms.key_ring+json"
UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
COOLDOWN_WAIT_S = 31.5  # spec 6.4/6.5: enable and restore >= 30 s after the last action


def parse_date(value: str) -> datetime:
    assert isinstance(value, str) and value, value
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Refused:
    err: ApiException


@contextmanager
def client_error() -> Iterator[Refused]:
    """Any 4xx with the Key Protect error envelope: for refusals whose exact status the spec
    leaves open (it names the rule but not the code)."""
    box = Refused()
    with pytest.raises(ApiException) as info:
        yield box
    box.err = info.value
    text = info.value.http_response.text if info.value.http_response is not None else None
    assert 400 <= info.value.status_code < 500, f"expected a 4xx, got {info.value.status_code}: {text}"
    assert error_body(info.value)["metadata"]["collectionType"] == "application/vnd.ibm.kms.error+json", text


def close_to(value: str, expected: datetime, slack_s: float = 120.0) -> bool:
    return abs((parse_date(value) - expected).total_seconds()) <= slack_s


# --------------------------------------------------------------------------------------------
# tenants made on the fly
# --------------------------------------------------------------------------------------------


@dataclass
class Tenant:
    """An instance of its own with one API key per label (labels, not roles, so that two
    different principals can both be Managers)."""

    env: object
    instance: str
    apikeys: Dict[str, str] = field(default_factory=dict)
    iam_ids: Dict[str, str] = field(default_factory=dict)
    _clients: Dict[str, IbmKeyProtectApiV2] = field(default_factory=dict)

    def client(self, label: str = "manager") -> IbmKeyProtectApiV2:
        if label not in self._clients:
            self._clients[label] = self.env.client(self.apikeys[label])
        return self._clients[label]

    @property
    def kp(self) -> IbmKeyProtectApiV2:
        return self.client("manager")


DEFAULT_PRINCIPALS: Tuple[Tuple[str, str], ...] = (
    ("manager", "Manager"),
    ("manager2", "Manager"),
    ("reader", "Reader"),
    ("purger", "KeyPurge"),
)


def new_tenant(keyward, prefix: str, principals=DEFAULT_PRINCIPALS) -> Tenant:
    name = unique_name(prefix)
    instance = keyward.admin("instance", "create", "--name", name)["id"]
    tenant = Tenant(env=keyward, instance=instance)
    for label, role in principals:
        key = keyward.admin("apikey", "create", "--instance", instance, "--role", role,
                            "--name", f"{name}-{label}")
        tenant.apikeys[label] = key["apikey"]
        tenant.iam_ids[label] = key.get("iam_id", "")
    assert len(set(tenant.iam_ids.values())) == len(principals), "each API key is its own principal"
    return tenant


@pytest.fixture(scope="module")
def life(keyward) -> Tenant:
    """Shared instance for the per-key lifecycle tests (no instance policies are set here)."""
    return new_tenant(keyward, "py-life")


def new_root(t: Tenant, **resource) -> dict:
    return create_key(t.kp, t.instance, name=unique_name("life-root"), extractable=False, **resource)


def new_standard(t: Tenant, **resource) -> dict:
    return create_key(t.kp, t.instance, name=unique_name("life-std"), extractable=True, **resource)


def meta(t: Tenant, key_id: str, label: str = "manager") -> dict:
    return first_resource(t.client(label).get_key_metadata(id=key_id, bluemix_instance=t.instance))


def policy_envelope(*resources: dict) -> dict:
    return {
        "metadata": {"collectionType": POLICY_TYPE, "collectionTotal": len(resources)},
        "resources": [{"type": POLICY_TYPE, **r} for r in resources],
    }


def instance_policy_envelope(*policies: Tuple[str, dict]) -> dict:
    return {
        "metadata": {"collectionType": POLICY_TYPE, "collectionTotal": len(policies)},
        "resources": [{"policy_type": t, "policy_data": d} for t, d in policies],
    }


def put_instance_policy(t: Tenant, policy_type: Optional[str], *policies: Tuple[str, dict]) -> None:
    resp = t.kp.put_instance_policy(bluemix_instance=t.instance, policy=policy_type,
                                    instance_policy_put_body=instance_policy_envelope(*policies))
    assert resp.get_status_code() == 204, resp
    assert resp.get_result() is None


def instance_policies(t: Tenant, policy_type: Optional[str] = None) -> Dict[str, dict]:
    resp = t.kp.get_instance_policy(bluemix_instance=t.instance, policy=policy_type)
    assert resp.get_status_code() == 200
    body = result(resp)
    assert body["metadata"]["collectionType"] == POLICY_TYPE, body
    resources = body.get("resources") or []
    assert body["metadata"]["collectionTotal"] == len(resources), body
    by_type = {r["policy_type"]: r for r in resources}
    assert len(by_type) == len(resources), f"one resource per policy type: {body}"
    return by_type


def list_keys(client, instance, **params) -> List[dict]:
    resp = client.get_keys(bluemix_instance=instance, **params)
    assert resp.get_status_code() == 200
    body = result(resp)
    assert body["metadata"]["collectionType"] == KEY_TYPE, body
    resources = body.get("resources") or []
    assert body["metadata"]["collectionTotal"] == len(resources), body
    return resources


# --------------------------------------------------------------------------------------------
# rotate and key versions (spec 6.3)
# --------------------------------------------------------------------------------------------


def test_rotate_twice_and_list_versions(life):
    kp, inst = life.kp, life.instance
    key = new_root(life)
    v1 = key["keyVersion"]["id"]
    aad = ["lifecycle", "rotate"]
    dek = os.urandom(32)
    old = wrap(kp, inst, key["id"], {"plaintext": b64(dek), "aad": aad})
    assert old["keyVersion"]["id"] == v1

    resp = kp.rotate_key(id=key["id"], bluemix_instance=inst)
    assert resp.get_status_code() == 204
    after = meta(life, key["id"])
    v2 = after["keyVersion"]["id"]
    assert UUID_RE.match(v2) and v2 != v1, after
    assert close_to(after["lastRotateDate"], utcnow())
    assert after["id"] == key["id"] and after["state"] == 1 and after["name"] == key["name"]

    # spec 6.3: at most one rotation per hour
    with api_error(409, "KEY_ROTATION_NOT_PERMITTED"):
        kp.rotate_key(id=key["id"], bluemix_instance=inst)
    with api_error(409, "KEY_ROTATION_NOT_PERMITTED"):
        kp.rotate_key(id=key["id"], bluemix_instance=inst, key_action_rotate_body=jbody({}))
    assert meta(life, key["id"])["keyVersion"]["id"] == v2, "a refused rotation makes no version"

    # versions: newest first, totalCount on request
    resp = kp.get_key_versions(id=key["id"], bluemix_instance=inst, total_count=True)
    assert resp.get_status_code() == 200
    body = result(resp)
    assert body["metadata"]["collectionType"] == VERSION_TYPE, body
    assert body["metadata"]["collectionTotal"] == 2, body
    assert body["metadata"]["totalCount"] == 2, body
    versions = body["resources"]
    assert [v["id"] for v in versions] == [v2, v1]
    assert parse_date(versions[0]["creationDate"]) >= parse_date(versions[1]["creationDate"])

    body = result(kp.get_key_versions(id=key["id"], bluemix_instance=inst))
    assert [v["id"] for v in body["resources"]] == [v2, v1]
    assert "totalCount" not in body["metadata"], "totalCount only when asked for"

    page = result(kp.get_key_versions(id=key["id"], bluemix_instance=inst, limit=1, total_count=True))
    assert [v["id"] for v in page["resources"]] == [v2]
    assert page["metadata"]["collectionTotal"] == 1 and page["metadata"]["totalCount"] == 2, page
    page = result(kp.get_key_versions(id=key["id"], bluemix_instance=inst, limit=1, offset=1))
    assert [v["id"] for v in page["resources"]] == [v1]

    # the Reader role may list versions (spec 9)
    reader = life.client("reader")
    assert [v["id"] for v in result(reader.get_key_versions(id=key["id"], bluemix_instance=inst))["resources"]] == [v2, v1]

    # a pre-rotation ciphertext unwraps and comes back re-wrapped under the latest version
    out = unwrap(kp, inst, key["id"], {"ciphertext": old["ciphertext"], "aad": aad})
    assert unb64(out["plaintext"]) == dek
    assert out["keyVersion"]["id"] == v1
    assert out["rewrappedKeyVersion"]["id"] == v2
    assert out["ciphertext"] != old["ciphertext"]
    fresh = unwrap(kp, inst, key["id"], {"ciphertext": out["ciphertext"], "aad": aad})
    assert unb64(fresh["plaintext"]) == dek
    assert fresh["keyVersion"]["id"] == v2
    assert "rewrappedKeyVersion" not in fresh, "a current-version ciphertext is not re-wrapped"
    assert "ciphertext" not in fresh


def test_version_listing_of_new_key_and_unknown_key(life):
    key = new_root(life)
    body = result(life.kp.get_key_versions(id=key["id"], bluemix_instance=life.instance, total_count=True))
    assert [v["id"] for v in body["resources"]] == [key["keyVersion"]["id"]]
    assert body["metadata"]["totalCount"] == 1
    with api_error(404, "KEY_NOT_FOUND_ERR"):
        life.kp.get_key_versions(id="7b0a3a5e-0000-4000-8000-000000000000", bluemix_instance=life.instance)
    with api_error(400, "INVALID_QUERY_PARAM_ERR"):
        life.kp.get_key_versions(id=key["id"], bluemix_instance=life.instance, limit=0)


def test_rotate_standard_key_is_refused(life):
    key = new_standard(life)
    with api_error(400, "KEY_ROOT_REQ_ERR"):
        life.kp.rotate_key(id=key["id"], bluemix_instance=life.instance)


def test_rotate_imported_root_key_needs_payload(life):
    key = new_root(life, payload=b64(os.urandom(32)))
    assert key["imported"] is True
    with api_error(400, "KEY_PAYLOAD_REQ_ERR"):
        life.kp.rotate_key(id=key["id"], bluemix_instance=life.instance, key_action_rotate_body=jbody({}))
    resp = life.kp.rotate_key(id=key["id"], bluemix_instance=life.instance,
                              key_action_rotate_body=jbody({"payload": b64(os.urandom(32))}))
    assert resp.get_status_code() == 204
    assert meta(life, key["id"])["keyVersion"]["id"] != key["keyVersion"]["id"]


# --------------------------------------------------------------------------------------------
# disable / enable (spec 6.1, 6.4)
# --------------------------------------------------------------------------------------------


def test_disable_then_enable_too_early(life):
    kp, inst = life.kp, life.instance
    key = new_root(life)
    dek = os.urandom(32)
    wrapped = wrap(kp, inst, key["id"], {"plaintext": b64(dek)})

    resp = kp.disable_key(id=key["id"], bluemix_instance=inst)
    assert resp.get_status_code() == 204
    assert resp.get_result() is None
    assert meta(life, key["id"])["state"] == 2

    # Suspended: no wrap, unwrap, rewrap or rotate (spec 6.1)
    with api_error(409, "KEY_ACTION_INVALID_STATE_ERR"):
        kp.wrap_key(id=key["id"], bluemix_instance=inst, key_action_wrap_body=jbody({}))
    with api_error(409, "KEY_ACTION_INVALID_STATE_ERR"):
        kp.wrap_key(id=key["id"], bluemix_instance=inst,
                    key_action_wrap_body=jbody({"plaintext": b64(os.urandom(32))}))
    with api_error(409, "KEY_ACTION_INVALID_STATE_ERR"):
        kp.unwrap_key(id=key["id"], bluemix_instance=inst,
                      key_action_unwrap_body=jbody({"ciphertext": wrapped["ciphertext"]}))
    with api_error(409, "KEY_ACTION_INVALID_STATE_ERR"):
        kp.rewrap_key(id=key["id"], bluemix_instance=inst,
                      key_action_rewrap_body=jbody({"ciphertext": wrapped["ciphertext"]}))
    with api_error(409, "KEY_ACTION_INVALID_STATE_ERR"):
        kp.rotate_key(id=key["id"], bluemix_instance=inst)
    # disable of a key that is not active
    with api_error(409, "KEY_ACTION_INVALID_STATE_ERR"):
        kp.disable_key(id=key["id"], bluemix_instance=inst)
    # enable right away: the 30 s rule
    with api_error(409, "REQ_TOO_EARLY_ERR"):
        kp.enable_key(id=key["id"], bluemix_instance=inst)
    assert meta(life, key["id"])["state"] == 2

    # versions of a key that is not active: only with allKeyStates=true (spec 6.3)
    with api_error(409):
        kp.get_key_versions(id=key["id"], bluemix_instance=inst)
    body = result(kp.get_key_versions(id=key["id"], bluemix_instance=inst, all_key_states=True))
    assert [v["id"] for v in body["resources"]] == [key["keyVersion"]["id"]]

    # a suspended key is still readable and listed by default (spec 6.1)
    assert first_resource(kp.get_key(id=key["id"], bluemix_instance=inst))["state"] == 2
    assert key["id"] in {k["id"] for k in list_keys(kp, inst, state=[2], limit=5000)}
    assert key["id"] in {k["id"] for k in list_keys(kp, inst, limit=5000)}


def test_enable_of_active_key_and_disable_of_standard_key(life):
    kp, inst = life.kp, life.instance
    key = new_root(life)
    with api_error(409, "KEY_ACTION_INVALID_STATE_ERR"):
        kp.enable_key(id=key["id"], bluemix_instance=inst)
    std = new_standard(life)
    with api_error(400, "KEY_ROOT_REQ_ERR"):
        kp.disable_key(id=std["id"], bluemix_instance=inst)
    assert meta(life, std["id"])["state"] == 1


def test_disable_needs_manager(life):
    key = new_root(life)
    with api_error(403):
        life.client("reader").disable_key(id=key["id"], bluemix_instance=life.instance)
    with api_error(403):
        life.client("purger").disable_key(id=key["id"], bluemix_instance=life.instance)
    assert meta(life, key["id"])["state"] == 1


# --------------------------------------------------------------------------------------------
# delete / restore / purge (spec 6.5)
# --------------------------------------------------------------------------------------------


def test_delete_then_restore_too_early(life):
    kp, inst = life.kp, life.instance
    key = new_root(life)
    resp = kp.delete_key(id=key["id"], bluemix_instance=inst, prefer="return=representation")
    assert resp.get_status_code() == 200
    deleted = first_resource(resp)
    assert deleted["state"] == 5 and deleted["deleted"] is True
    deletion = parse_date(deleted["deletionDate"])
    assert close_to(deleted["deletionDate"], utcnow())
    if life.iam_ids["manager"]:
        assert deleted.get("deletedBy") == life.iam_ids["manager"]
    # restore / purge window info of a deleted key (spec 3)
    got = meta(life, key["id"])
    assert parse_date(got["restoreExpirationDate"]) == deletion + timedelta(days=30), got
    assert parse_date(got["purgeAllowedFrom"]) == deletion + timedelta(hours=4), got

    with api_error(409, "REQ_TOO_EARLY_ERR"):
        kp.restore_key(id=key["id"], bluemix_instance=inst)
    with api_error(409, "REQ_TOO_EARLY_ERR"):
        kp.restore_key(id=key["id"], bluemix_instance=inst, prefer="return=representation")
    assert meta(life, key["id"])["state"] == 5, "a refused restore leaves the key deleted"


def test_restore_of_active_key_is_refused(life):
    key = new_root(life)
    with api_error(409, "KEY_ACTION_INVALID_STATE_ERR"):
        life.kp.restore_key(id=key["id"], bluemix_instance=life.instance)
    with api_error(404, "KEY_NOT_FOUND_ERR"):
        life.kp.restore_key(id="0e7f0c4d-1111-4222-8333-444455556666", bluemix_instance=life.instance)


def test_restore_needs_manager(life):
    key = new_root(life)
    assert life.kp.delete_key(id=key["id"], bluemix_instance=life.instance).get_status_code() == 204
    with api_error(403):
        life.client("reader").restore_key(id=key["id"], bluemix_instance=life.instance)
    with api_error(403):
        life.client("purger").restore_key(id=key["id"], bluemix_instance=life.instance)


def test_purge_roles_and_too_early(life):
    kp, inst = life.kp, life.instance
    purger = life.client("purger")
    key = new_root(life)

    # purge of a key that is not deleted
    with api_error(409, "KEY_ACTION_INVALID_STATE_ERR"):
        purger.purge_key(id=key["id"], bluemix_instance=inst)

    assert kp.delete_key(id=key["id"], bluemix_instance=inst).get_status_code() == 204
    # KeyPurge is in no other role (spec 9): a Manager cannot purge
    with api_error(403):
        kp.purge_key(id=key["id"], bluemix_instance=inst)
    with api_error(403):
        life.client("reader").purge_key(id=key["id"], bluemix_instance=inst)
    # the KeyPurge principal can, but only 4 h after the deletion
    with api_error(409, "REQ_TOO_EARLY_ERR"):
        purger.purge_key(id=key["id"], bluemix_instance=inst)
    with api_error(409, "REQ_TOO_EARLY_ERR"):
        purger.purge_key(id=key["id"], bluemix_instance=inst, prefer="return=representation")
    # ... and nothing else
    with api_error(403):
        purger.get_key_metadata(id=key["id"], bluemix_instance=inst)
    with api_error(403):
        purger.get_keys(bluemix_instance=inst, state=[5])

    got = meta(life, key["id"])
    assert got["state"] == 5, "a refused purge keeps the key"
    with api_error(404, "KEY_NOT_FOUND_ERR"):
        purger.purge_key(id="5d3c1e2a-aaaa-4bbb-8ccc-dddddddddddd", bluemix_instance=inst)


# --------------------------------------------------------------------------------------------
# key policies (spec 7.1)
# --------------------------------------------------------------------------------------------


def test_key_policies_rotation_and_dual_auth(life):
    kp, inst = life.kp, life.instance
    key = new_root(life)

    resp = kp.put_policy(id=key["id"], bluemix_instance=inst, policy="rotation",
                         key_policy_put_body=policy_envelope({"rotation": {"enabled": True, "interval_month": 3}}))
    assert resp.get_status_code() == 200
    body = result(resp)
    assert body["metadata"]["collectionType"] == POLICY_TYPE
    assert body["metadata"]["collectionTotal"] == 1
    pol = body["resources"][0]
    assert pol["id"] == key["id"]
    assert pol["type"] == POLICY_TYPE
    assert pol["crn"] == key["crn"]
    assert pol["rotation"] == {"enabled": True, "interval_month": 3}
    assert "dualAuthDelete" not in pol
    parse_date(pol["creationDate"])
    parse_date(pol["lastUpdateDate"])
    if life.iam_ids["manager"]:
        assert pol["createdBy"] == life.iam_ids["manager"]
        assert pol["updatedBy"] == life.iam_ids["manager"]

    resp = kp.put_policy(id=key["id"], bluemix_instance=inst, policy="dualAuthDelete",
                         key_policy_put_body=policy_envelope({"dualAuthDelete": {"enabled": True}}))
    assert resp.get_status_code() == 200
    pol = first_resource(resp)
    assert pol["dualAuthDelete"] == {"enabled": True}
    assert "rotation" not in pol

    # GET without ?policy: one resource per policy type, each naming the key
    body = result(kp.get_policy(id=key["id"], bluemix_instance=inst))
    assert body["metadata"]["collectionType"] == POLICY_TYPE
    assert body["metadata"]["collectionTotal"] == 2
    assert all(r["id"] == key["id"] for r in body["resources"])
    rot = [r for r in body["resources"] if "rotation" in r]
    dual = [r for r in body["resources"] if "dualAuthDelete" in r]
    assert len(rot) == 1 and rot[0]["rotation"] == {"enabled": True, "interval_month": 3}, body
    assert len(dual) == 1 and dual[0]["dualAuthDelete"] == {"enabled": True}, body

    only = result(kp.get_policy(id=key["id"], bluemix_instance=inst, policy="rotation"))
    assert only["metadata"]["collectionTotal"] == 1
    assert only["resources"][0]["rotation"]["interval_month"] == 3
    only = result(kp.get_policy(id=key["id"], bluemix_instance=inst, policy="dualAuthDelete"))
    assert only["metadata"]["collectionTotal"] == 1
    assert only["resources"][0]["dualAuthDelete"]["enabled"] is True

    # the key itself carries both
    got = meta(life, key["id"])
    assert got["rotation"]["enabled"] is True and got["rotation"]["interval_month"] == 3, got
    assert got["dualAuthDelete"]["enabled"] is True, got
    assert got["dualAuthDelete"].get("keySetForDeletion") in (None, False), got

    # update of the interval keeps one rotation policy
    pol = first_resource(kp.put_policy(id=key["id"], bluemix_instance=inst, policy="rotation",
                                       key_policy_put_body=policy_envelope(
                                           {"rotation": {"enabled": True, "interval_month": 12}})))
    assert pol["rotation"] == {"enabled": True, "interval_month": 12}
    assert meta(life, key["id"])["rotation"]["interval_month"] == 12


def test_key_policies_both_in_one_resource(life):
    kp, inst = life.kp, life.instance
    key = new_root(life)
    resp = kp.put_policy(id=key["id"], bluemix_instance=inst,
                         key_policy_put_body=policy_envelope({"rotation": {"enabled": True, "interval_month": 1},
                                                              "dualAuthDelete": {"enabled": True}}))
    assert resp.get_status_code() == 200
    body = result(kp.get_policy(id=key["id"], bluemix_instance=inst))
    assert body["metadata"]["collectionTotal"] == 2, body
    got = meta(life, key["id"])
    assert got["rotation"]["interval_month"] == 1 and got["dualAuthDelete"]["enabled"] is True


def test_new_key_has_no_policies(life):
    key = new_root(life)
    body = result(life.kp.get_policy(id=key["id"], bluemix_instance=life.instance))
    assert body["metadata"]["collectionType"] == POLICY_TYPE
    assert body["metadata"]["collectionTotal"] == len(body.get("resources") or []) == 0, body
    assert key["dualAuthDelete"]["enabled"] is False
    assert "rotation" not in key


@pytest.mark.parametrize("interval", [13, 0, -1, 100])
def test_key_rotation_policy_interval_out_of_range(life, interval):
    key = new_root(life)
    with api_error(400) as e:
        life.kp.put_policy(id=key["id"], bluemix_instance=life.instance, policy="rotation",
                           key_policy_put_body=policy_envelope(
                               {"rotation": {"enabled": True, "interval_month": interval}}))
    assert reason_code(e.err) in ("INVALID_FIELD_ERR", "BAD_BODY_ERR"), error_body(e.err)
    assert "rotation" not in meta(life, key["id"]), "a refused policy is not stored"


def test_key_policy_body_must_match_query(life):
    key = new_root(life)
    with api_error(400, "BODY_QUERY_PARAM_MISMATCH_ERR"):
        life.kp.put_policy(id=key["id"], bluemix_instance=life.instance, policy="rotation",
                           key_policy_put_body=policy_envelope({"dualAuthDelete": {"enabled": True}}))
    with api_error(400, "BAD_BODY_ERR"):
        life.kp.put_policy(id=key["id"], bluemix_instance=life.instance,
                           key_policy_put_body=policy_envelope({"rotation": {"enabled": True, "interval_month": 2},
                                                                "colour": "blue"}))
    with api_error(400, "COLLECTION_TOTAL_MISMATCH_ERR"):
        env = policy_envelope({"dualAuthDelete": {"enabled": True}})
        env["metadata"]["collectionTotal"] = 2
        life.kp.put_policy(id=key["id"], bluemix_instance=life.instance, key_policy_put_body=env)
    assert meta(life, key["id"])["dualAuthDelete"]["enabled"] is False


def test_key_rotation_policy_only_for_generated_root_keys(life):
    for key in (new_standard(life), new_root(life, payload=b64(os.urandom(16)))):
        with api_error(400):
            life.kp.put_policy(id=key["id"], bluemix_instance=life.instance, policy="rotation",
                               key_policy_put_body=policy_envelope(
                                   {"rotation": {"enabled": True, "interval_month": 3}}))
        assert "rotation" not in meta(life, key["id"])


def test_dual_auth_policy_cannot_be_turned_off(life):
    key = new_root(life)
    life.kp.put_policy(id=key["id"], bluemix_instance=life.instance, policy="dualAuthDelete",
                       key_policy_put_body=policy_envelope({"dualAuthDelete": {"enabled": True}}))
    with client_error():
        life.kp.put_policy(id=key["id"], bluemix_instance=life.instance, policy="dualAuthDelete",
                           key_policy_put_body=policy_envelope({"dualAuthDelete": {"enabled": False}}))
    assert meta(life, key["id"])["dualAuthDelete"]["enabled"] is True


def test_key_policies_need_manager(life):
    key = new_root(life)
    reader = life.client("reader")
    with api_error(403):
        reader.get_policy(id=key["id"], bluemix_instance=life.instance)
    with api_error(403):
        reader.put_policy(id=key["id"], bluemix_instance=life.instance, policy="dualAuthDelete",
                          key_policy_put_body=policy_envelope({"dualAuthDelete": {"enabled": True}}))
    assert meta(life, key["id"])["dualAuthDelete"]["enabled"] is False


def test_key_policies_by_alias(life):
    key = new_root(life)
    alias = unique_name("pol-alias")
    assert life.kp.create_key_alias(id=key["id"], alias=alias, bluemix_instance=life.instance).get_status_code() == 201
    pol = first_resource(life.kp.put_policy(id=alias, bluemix_instance=life.instance, policy="rotation",
                                            key_policy_put_body=policy_envelope(
                                                {"rotation": {"enabled": True, "interval_month": 6}})))
    assert pol["id"] == key["id"]
    assert first_resource(life.kp.get_policy(id=alias, bluemix_instance=life.instance))["id"] == key["id"]


# --------------------------------------------------------------------------------------------
# dual authorisation delete (spec 6.5)
# --------------------------------------------------------------------------------------------


def dual_auth_key(t: Tenant) -> dict:
    key = new_root(t)
    resp = t.kp.put_policy(id=key["id"], bluemix_instance=t.instance, policy="dualAuthDelete",
                           key_policy_put_body=policy_envelope({"dualAuthDelete": {"enabled": True}}))
    assert resp.get_status_code() == 200
    return key


def test_dual_auth_delete(life):
    inst = life.instance
    a, b = life.client("manager"), life.client("manager2")
    key = dual_auth_key(life)

    # no authorisation yet: nobody can delete
    with api_error(409, "AUTHORIZATIONS_NOT_MET"):
        a.delete_key(id=key["id"], bluemix_instance=inst)
    with api_error(409, "AUTHORIZATIONS_NOT_MET"):
        b.delete_key(id=key["id"], bluemix_instance=inst)

    resp = a.set_key_for_deletion(id=key["id"], bluemix_instance=inst)
    assert resp.get_status_code() == 204
    got = meta(life, key["id"])
    assert got["state"] == 1, "the key stays active while set for deletion"
    assert got["dualAuthDelete"]["enabled"] is True
    assert got["dualAuthDelete"]["keySetForDeletion"] is True, got
    assert close_to(got["dualAuthDelete"]["authExpiration"], utcnow() + timedelta(days=7)), got
    # still usable
    wrap(a, inst, key["id"], {})

    # the same principal cannot give the second authorisation
    with api_error(409, "AUTHORIZATIONS_NOT_MET"):
        a.delete_key(id=key["id"], bluemix_instance=inst)

    # unset cancels it: now the other Manager cannot delete either
    resp = a.unset_key_for_deletion(id=key["id"], bluemix_instance=inst)
    assert resp.get_status_code() == 204
    assert meta(life, key["id"])["dualAuthDelete"].get("keySetForDeletion") in (False, None)
    with api_error(409, "AUTHORIZATIONS_NOT_MET"):
        b.delete_key(id=key["id"], bluemix_instance=inst)

    # authorise again; another Manager deletes
    assert a.set_key_for_deletion(id=key["id"], bluemix_instance=inst).get_status_code() == 204
    resp = b.delete_key(id=key["id"], bluemix_instance=inst, prefer="return=representation")
    assert resp.get_status_code() == 200
    deleted = first_resource(resp)
    assert deleted["state"] == 5 and deleted["deleted"] is True
    if life.iam_ids["manager2"]:
        assert deleted.get("deletedBy") == life.iam_ids["manager2"]
    with api_error(410, "KEY_DELETED_ERR"):
        a.delete_key(id=key["id"], bluemix_instance=inst)


def test_dual_auth_second_principal_may_set_and_first_delete(life):
    inst = life.instance
    a, b = life.client("manager"), life.client("manager2")
    key = dual_auth_key(life)
    assert b.set_key_for_deletion(id=key["id"], bluemix_instance=inst).get_status_code() == 204
    with api_error(409, "AUTHORIZATIONS_NOT_MET"):
        b.delete_key(id=key["id"], bluemix_instance=inst)
    assert a.delete_key(id=key["id"], bluemix_instance=inst).get_status_code() == 204
    assert meta(life, key["id"])["state"] == 5


def test_set_for_deletion_without_dual_auth_policy(life):
    key = new_root(life)
    with api_error(409, "NOT_DUAL_AUTH_ERR"):
        life.kp.set_key_for_deletion(id=key["id"], bluemix_instance=life.instance)
    with api_error(409, "NOT_DUAL_AUTH_ERR"):
        life.kp.unset_key_for_deletion(id=key["id"], bluemix_instance=life.instance)
    # and a key without the policy is deleted by one principal
    assert life.kp.delete_key(id=key["id"], bluemix_instance=life.instance).get_status_code() == 204


def test_set_for_deletion_needs_writer(life):
    key = dual_auth_key(life)
    with api_error(403):
        life.client("reader").set_key_for_deletion(id=key["id"], bluemix_instance=life.instance)
    with api_error(403):
        life.client("reader").unset_key_for_deletion(id=key["id"], bluemix_instance=life.instance)
    assert meta(life, key["id"])["dualAuthDelete"].get("keySetForDeletion") in (False, None)


# --------------------------------------------------------------------------------------------
# instance policies (spec 7.2)
# --------------------------------------------------------------------------------------------


def test_instance_policy_dual_auth_delete(keyward):
    t = new_tenant(keyward, "py-ipol-dual")
    a, b = t.client("manager"), t.client("manager2")
    before = new_root(t)

    put_instance_policy(t, "dualAuthDelete", ("dualAuthDelete", {"enabled": True}))
    pols = instance_policies(t)
    assert set(pols) == {"dualAuthDelete"}, pols
    pol = pols["dualAuthDelete"]
    assert pol["policy_data"]["enabled"] is True
    assert "attributes" not in pol["policy_data"] or not pol["policy_data"]["attributes"]
    assert close_to(pol["creationDate"], utcnow())
    parse_date(pol["lastUpdated"])
    if t.iam_ids["manager"]:
        assert pol["createdBy"] == t.iam_ids["manager"] and pol["updatedBy"] == t.iam_ids["manager"]
    assert set(instance_policies(t, "dualAuthDelete")) == {"dualAuthDelete"}
    assert instance_policies(t, "rotation") == {}

    # keys created afterwards carry the policy; earlier keys do not
    after = new_root(t)
    assert after["dualAuthDelete"]["enabled"] is True, after
    std = new_standard(t)
    assert std["dualAuthDelete"]["enabled"] is True, std
    assert meta(t, before["id"])["dualAuthDelete"]["enabled"] is False
    key_pols = result(a.get_policy(id=after["id"], bluemix_instance=t.instance, policy="dualAuthDelete"))
    assert key_pols["resources"][0]["dualAuthDelete"]["enabled"] is True

    assert a.delete_key(id=before["id"], bluemix_instance=t.instance).get_status_code() == 204
    with api_error(409, "AUTHORIZATIONS_NOT_MET"):
        a.delete_key(id=after["id"], bluemix_instance=t.instance)
    assert a.set_key_for_deletion(id=after["id"], bluemix_instance=t.instance).get_status_code() == 204
    assert b.delete_key(id=after["id"], bluemix_instance=t.instance).get_status_code() == 204

    # turning it off affects only keys created afterwards
    put_instance_policy(t, "dualAuthDelete", ("dualAuthDelete", {"enabled": False}))
    assert instance_policies(t, "dualAuthDelete")["dualAuthDelete"]["policy_data"]["enabled"] is False
    assert new_root(t)["dualAuthDelete"]["enabled"] is False
    assert meta(t, std["id"])["dualAuthDelete"]["enabled"] is True


def test_instance_policy_rotation(keyward):
    t = new_tenant(keyward, "py-ipol-rot", principals=(("manager", "Manager"), ("reader", "Reader")))
    put_instance_policy(t, "rotation", ("rotation", {"enabled": True, "attributes": {"interval_month": 2}}))
    pol = instance_policies(t, "rotation")["rotation"]
    assert pol["policy_data"] == {"enabled": True, "attributes": {"interval_month": 2}}, pol

    root = new_root(t)
    assert root["rotation"] == {"enabled": True, "interval_month": 2}, root
    key_pol = result(t.kp.get_policy(id=root["id"], bluemix_instance=t.instance, policy="rotation"))
    assert key_pol["resources"][0]["rotation"] == {"enabled": True, "interval_month": 2}
    # rotation policies are for generated root keys only: other keys are created without one
    std = new_standard(t)
    assert "rotation" not in std or not std["rotation"].get("enabled"), std
    imported = new_root(t, payload=b64(os.urandom(32)))
    assert "rotation" not in imported or not imported["rotation"].get("enabled"), imported

    # changing the instance policy does not change existing keys
    put_instance_policy(t, "rotation", ("rotation", {"enabled": True, "attributes": {"interval_month": 5}}))
    assert meta(t, root["id"])["rotation"]["interval_month"] == 2
    assert new_root(t)["rotation"]["interval_month"] == 5

    for bad in (13, 0):
        with api_error(400) as e:
            t.kp.put_instance_policy(bluemix_instance=t.instance, policy="rotation",
                                     instance_policy_put_body=instance_policy_envelope(
                                         ("rotation", {"enabled": True, "attributes": {"interval_month": bad}})))
        assert reason_code(e.err) in ("INVALID_FIELD_ERR", "BAD_BODY_ERR"), error_body(e.err)
    # attributes are required when enabled
    with api_error(400):
        t.kp.put_instance_policy(bluemix_instance=t.instance, policy="rotation",
                                 instance_policy_put_body=instance_policy_envelope(("rotation", {"enabled": True})))
    assert instance_policies(t, "rotation")["rotation"]["policy_data"]["attributes"]["interval_month"] == 5

    # the Reader role has no access to instance policies (spec 9: Manager only, GET included)
    with api_error(403):
        t.client("reader").get_instance_policy(bluemix_instance=t.instance)
    with api_error(403):
        t.client("reader").put_instance_policy(
            bluemix_instance=t.instance, policy="dualAuthDelete",
            instance_policy_put_body=instance_policy_envelope(("dualAuthDelete", {"enabled": True})))
    assert "dualAuthDelete" not in instance_policies(t)


def test_instance_policy_envelope_errors(keyward):
    t = new_tenant(keyward, "py-ipol-bad", principals=(("manager", "Manager"),))
    with api_error(400, "BODY_QUERY_PARAM_MISMATCH_ERR"):
        t.kp.put_instance_policy(bluemix_instance=t.instance, policy="rotation",
                                 instance_policy_put_body=instance_policy_envelope(
                                     ("dualAuthDelete", {"enabled": True})))
    with api_error(400, "NUM_COLLECTION_RESOURCE_ERR"):
        t.kp.put_instance_policy(bluemix_instance=t.instance, policy="dualAuthDelete",
                                 instance_policy_put_body=instance_policy_envelope(
                                     ("dualAuthDelete", {"enabled": True}),
                                     ("metrics", {"enabled": True})))
    with api_error(400, "BAD_BODY_ERR"):
        t.kp.put_instance_policy(bluemix_instance=t.instance, policy="dualAuthDelete",
                                 instance_policy_put_body=instance_policy_envelope(
                                     ("dualAuthDelete", {"enabled": True, "colour": "blue"})))
    with api_error(400, "BAD_BODY_ERR"):
        t.kp.put_instance_policy(bluemix_instance=t.instance, policy="keyCreateImportAccess",
                                 instance_policy_put_body=instance_policy_envelope(
                                     ("keyCreateImportAccess", {"enabled": True,
                                                                "attributes": {"create_root_keys": False}})))
    assert instance_policies(t) == {}, "refused policies are not stored"

    # several types at once without ?policy
    put_instance_policy(t, None, ("dualAuthDelete", {"enabled": True}),
                        ("rotation", {"enabled": True, "attributes": {"interval_month": 7}}))
    pols = instance_policies(t)
    assert set(pols) == {"dualAuthDelete", "rotation"}, pols
    assert pols["rotation"]["policy_data"]["attributes"]["interval_month"] == 7
    key = new_root(t)
    assert key["dualAuthDelete"]["enabled"] is True and key["rotation"]["interval_month"] == 7


def test_instance_policy_key_create_import_access(keyward):
    t = new_tenant(keyward, "py-ipol-kcia", principals=(("manager", "Manager"),))
    kp, inst = t.kp, t.instance
    attrs = {"create_root_key": True, "create_standard_key": False,
             "import_root_key": False, "import_standard_key": True, "enforce_token": False}
    put_instance_policy(t, "keyCreateImportAccess",
                        ("keyCreateImportAccess", {"enabled": True, "attributes": attrs}))
    pol = instance_policies(t, "keyCreateImportAccess")["keyCreateImportAccess"]
    assert pol["policy_data"]["enabled"] is True
    for k, v in attrs.items():
        assert pol["policy_data"]["attributes"].get(k) == v, pol

    def create(**res):
        return kp.create_key(bluemix_instance=inst, key_create_body=key_envelope(name=unique_name("kcia"), **res))

    with api_error(409, "KEY_CREATE_IMPORT_ACCESS_ERR"):
        create(extractable=True)
    with api_error(409, "KEY_CREATE_IMPORT_ACCESS_ERR"):
        create(extractable=False, payload=b64(os.urandom(32)))
    assert create(extractable=False).get_status_code() == 201
    assert create(extractable=True, payload=b64(os.urandom(100))).get_status_code() == 201

    # enforce_token: imports of root material only through an import token
    attrs.update(import_root_key=True, enforce_token=True)
    put_instance_policy(t, "keyCreateImportAccess",
                        ("keyCreateImportAccess", {"enabled": True, "attributes": attrs}))
    with api_error(409, "KEY_CREATE_IMPORT_ACCESS_ERR"):
        create(extractable=False, payload=b64(os.urandom(32)))
    assert instance_policies(t)["keyCreateImportAccess"]["policy_data"]["attributes"]["enforce_token"] is True

    # off: everything allowed again
    put_instance_policy(t, "keyCreateImportAccess", ("keyCreateImportAccess", {"enabled": False}))
    assert create(extractable=True).get_status_code() == 201
    assert create(extractable=False, payload=b64(os.urandom(16))).get_status_code() == 201
    with api_error(400):
        kp.put_instance_policy(bluemix_instance=inst, policy="keyCreateImportAccess",
                               instance_policy_put_body=instance_policy_envelope(
                                   ("keyCreateImportAccess", {"enabled": False, "attributes": attrs})))


# --------------------------------------------------------------------------------------------
# key rings (spec 8)
# --------------------------------------------------------------------------------------------


def ring_ids(t: Tenant, **params) -> List[str]:
    resp = t.kp.list_key_rings(bluemix_instance=t.instance, **params)
    assert resp.get_status_code() == 200
    body = result(resp)
    assert body["metadata"]["collectionType"] == RING_TYPE, body
    assert body["metadata"]["collectionTotal"] == len(body.get("resources") or []), body
    return [r["id"] for r in body.get("resources") or []]


def test_key_rings(keyward):
    t = new_tenant(keyward, "py-rings", principals=(("manager", "Manager"), ("reader", "Reader")))
    kp, inst = t.kp, t.instance

    assert ring_ids(t) == ["default"], "a new instance has only the default ring"
    ring = unique_name("ring").replace("-", "_")
    resp = kp.create_key_ring(key_ring_id=ring, bluemix_instance=inst)
    assert resp.get_status_code() == 201
    with api_error(409):
        kp.create_key_ring(key_ring_id=ring, bluemix_instance=inst)
    body = result(kp.list_key_rings(bluemix_instance=inst, total_count=True))
    assert body["metadata"]["totalCount"] == 2
    rings = {r["id"]: r for r in body["resources"]}
    assert set(rings) == {"default", ring}
    assert close_to(rings[ring]["creationDate"], utcnow())
    if t.iam_ids["manager"]:
        assert rings[ring]["createdBy"] == t.iam_ids["manager"]
    assert len(ring_ids(t, limit=1)) == 1
    assert set(ring_ids(t, limit=1) + ring_ids(t, limit=1, offset=1)) == {"default", ring}
    # the Reader role may list key rings (spec 9)
    assert set(r["id"] for r in result(t.client("reader").list_key_rings(bluemix_instance=inst))["resources"]) == {"default", ring}

    # create a key in the ring
    in_ring = first_resource(kp.create_key(bluemix_instance=inst, x_kms_key_ring=ring,
                                           key_create_body=key_envelope(name=unique_name("in-ring"), extractable=False)))
    assert in_ring["keyRingID"] == ring
    in_default = create_key(kp, inst, extractable=True)
    assert in_default["keyRingID"] == "default"
    assert meta(t, in_ring["id"])["keyRingID"] == ring
    assert [k["id"] for k in list_keys(kp, inst, x_kms_key_ring=ring)] == [in_ring["id"]]
    assert {k["id"] for k in list_keys(kp, inst)} == {in_ring["id"], in_default["id"]}

    # a ring that does not exist cannot receive keys
    with client_error():
        kp.create_key(bluemix_instance=inst, x_kms_key_ring="no_such_ring",
                      key_create_body=key_envelope(name=unique_name("nowhere"), extractable=False))

    # move a key: PATCH with the current ring in the header
    resp = kp.patch_key(id=in_default["id"], bluemix_instance=inst, x_kms_key_ring="default",
                        key_patch_body=jbody({"keyRingID": ring}))
    assert resp.get_status_code() == 200
    moved = first_resource(resp)
    assert moved["id"] == in_default["id"] and moved["keyRingID"] == ring
    assert "payload" not in moved
    assert meta(t, in_default["id"])["keyRingID"] == ring
    assert {k["id"] for k in list_keys(kp, inst, x_kms_key_ring=ring)} == {in_ring["id"], in_default["id"]}
    resp = kp.patch_key(id=in_default["id"], bluemix_instance=inst, x_kms_key_ring=ring,
                        key_patch_body=jbody({"keyRingID": "default"}))
    assert first_resource(resp)["keyRingID"] == "default"
    with api_error(403):
        t.client("reader").patch_key(id=in_default["id"], bluemix_instance=inst,
                                     key_patch_body=jbody({"keyRingID": ring}))

    # a ring holding a live key cannot be deleted, with or without force
    with api_error(409):
        kp.delete_key_ring(key_ring_id=ring, bluemix_instance=inst)
    with api_error(409):
        kp.delete_key_ring(key_ring_id=ring, bluemix_instance=inst, force=True)
    assert ring in ring_ids(t)

    # once its keys are deleted, force removes it; its deleted keys move to `default`
    assert kp.delete_key(id=in_ring["id"], bluemix_instance=inst).get_status_code() == 204
    resp = kp.delete_key_ring(key_ring_id=ring, bluemix_instance=inst, force=True)
    assert resp.get_status_code() == 204
    assert ring_ids(t) == ["default"]
    assert meta(t, in_ring["id"])["keyRingID"] == "default"

    # an empty ring is deleted without force; `default` cannot be deleted or created
    empty = unique_name("empty")
    assert kp.create_key_ring(key_ring_id=empty, bluemix_instance=inst).get_status_code() == 201
    assert kp.delete_key_ring(key_ring_id=empty, bluemix_instance=inst).get_status_code() == 204
    with client_error():
        kp.delete_key_ring(key_ring_id="default", bluemix_instance=inst)
    with client_error():
        kp.create_key_ring(key_ring_id="default", bluemix_instance=inst)
    with api_error(400):
        kp.create_key_ring(key_ring_id="x", bluemix_instance=inst)
    with api_error(403):
        t.client("reader").delete_key_ring(key_ring_id="default", bluemix_instance=inst)
    assert ring_ids(t) == ["default"]


# --------------------------------------------------------------------------------------------
# aliases (spec 8)
# --------------------------------------------------------------------------------------------


def test_aliases(keyward, life):
    kp, inst = life.kp, life.instance
    key = new_root(life)
    alias = unique_name("Alias_x")

    resp = kp.create_key_alias(id=key["id"], alias=alias, bluemix_instance=inst)
    assert resp.get_status_code() == 201
    body = result(resp)
    assert body["metadata"]["collectionType"] == ALIAS_TYPE, body
    assert body["metadata"]["collectionTotal"] == 1
    created = body["resources"][0]
    assert created["keyId"] == key["id"] and created["alias"] == alias
    assert close_to(created["creationDate"], utcnow())
    if life.iam_ids["manager"]:
        assert created["createdBy"] == life.iam_ids["manager"]

    # usable wherever {id} is
    got = first_resource(kp.get_key(id=alias, bluemix_instance=inst))
    assert got["id"] == key["id"]
    assert alias in got["aliases"]
    assert meta(life, alias)["id"] == key["id"]
    dek = os.urandom(32)
    wrapped = wrap(kp, inst, alias, {"plaintext": b64(dek)})
    assert unb64(unwrap(kp, inst, key["id"], {"ciphertext": wrapped["ciphertext"]})["plaintext"]) == dek
    assert unb64(unwrap(kp, inst, alias, {"ciphertext": wrapped["ciphertext"]})["plaintext"]) == dek
    assert key["id"] in {k["id"] for k in list_keys(kp, inst, search=f"alias:{alias}")}
    # aliases are case-sensitive
    with api_error(404, "KEY_NOT_FOUND_ERR"):
        kp.get_key(id=alias.upper(), bluemix_instance=inst)
    # and scoped to the instance
    with api_error(404, "KEY_NOT_FOUND_ERR"):
        keyward.client_for("py-other").get_key(id=alias, bluemix_instance=keyward.instances["py-other"])

    # up to 5 per key
    more = [unique_name(f"a{i}") for i in range(4)]
    for a in more:
        assert kp.create_key_alias(id=key["id"], alias=a, bluemix_instance=inst).get_status_code() == 201
    assert sorted(meta(life, key["id"])["aliases"]) == sorted([alias, *more])
    with api_error(400):
        kp.create_key_alias(id=key["id"], alias=unique_name("sixth"), bluemix_instance=inst)
    assert len(meta(life, key["id"])["aliases"]) == 5

    # unique per instance
    other = new_root(life)
    with client_error():
        kp.create_key_alias(id=other["id"], alias=alias, bluemix_instance=inst)
    assert first_resource(kp.get_key(id=alias, bluemix_instance=inst))["id"] == key["id"]

    # delete
    resp = kp.delete_key_alias(id=key["id"], alias=alias, bluemix_instance=inst)
    assert resp.get_status_code() == 204
    with api_error(404, "KEY_NOT_FOUND_ERR"):
        kp.get_key(id=alias, bluemix_instance=inst)
    assert alias not in meta(life, key["id"])["aliases"]
    # freed: now another key may take it, and the sixth slot is free again
    assert kp.create_key_alias(id=other["id"], alias=alias, bluemix_instance=inst).get_status_code() == 201
    assert first_resource(kp.get_key(id=alias, bluemix_instance=inst))["id"] == other["id"]
    assert kp.create_key_alias(id=key["id"], alias=unique_name("fifth"), bluemix_instance=inst).get_status_code() == 201


@pytest.mark.parametrize("alias", ["a", "x" * 91, "has space", "dot.ted", "keys", "versions", "wrap",
                                   "7d4b3c2a-1e0f-4a9b-8c7d-6e5f4a3b2c1d"])
def test_invalid_alias(life, alias):
    key = new_root(life)
    with api_error(400):
        life.kp.create_key_alias(id=key["id"], alias=alias, bluemix_instance=life.instance)
    assert "aliases" not in meta(life, key["id"]) or meta(life, key["id"])["aliases"] == []


def test_alias_needs_writer(life):
    key = new_root(life)
    with api_error(403):
        life.client("reader").create_key_alias(id=key["id"], alias=unique_name("rd"), bluemix_instance=life.instance)


# --------------------------------------------------------------------------------------------
# list with sort / search / filter (spec 1.7)
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def searchable(keyward) -> dict:
    """An instance of its own: alpha (root), beta (standard), gamma (root, aliased, disabled)."""
    t = new_tenant(keyward, "py-search", principals=(("manager", "Manager"),))
    tag = os.urandom(4).hex()
    alpha = create_key(t.kp, t.instance, name=f"Alpha-{tag}", extractable=False)
    beta = create_key(t.kp, t.instance, name=f"beta-{tag}", extractable=True)
    gamma = create_key(t.kp, t.instance, name=f"gamma-{tag}", extractable=False)
    assert t.kp.create_key_alias(id=gamma["id"], alias=f"galias-{tag}", bluemix_instance=t.instance).get_status_code() == 201
    assert t.kp.disable_key(id=gamma["id"], bluemix_instance=t.instance).get_status_code() == 204
    return {"t": t, "tag": tag, "alpha": alpha["id"], "beta": beta["id"], "gamma": gamma["id"]}


def ids_of(s, **params) -> List[str]:
    return [k["id"] for k in list_keys(s["t"].kp, s["t"].instance, **params)]


def test_list_sort(searchable):
    s = searchable
    everything = {s["alpha"], s["beta"], s["gamma"]}
    asc = ids_of(s, sort="id")
    assert asc == sorted(everything)
    assert ids_of(s, sort="-id") == sorted(everything, reverse=True)
    by_state = list_keys(s["t"].kp, s["t"].instance, sort="-state,id")
    assert [k["state"] for k in by_state] == [2, 1, 1]
    assert [k["id"] for k in by_state] == [s["gamma"], *sorted([s["alpha"], s["beta"]])]
    by_extractable = ids_of(s, sort="extractable,id")
    assert by_extractable[-1] == s["beta"]
    with api_error(400, "INVALID_QUERY_PARAM_ERR"):
        s["t"].kp.get_keys(bluemix_instance=s["t"].instance, sort="colour")


def test_list_search(searchable):
    s, tag = searchable, searchable["tag"]
    assert ids_of(s, search="ALPHA") == [s["alpha"]], "search is case-insensitive"
    assert set(ids_of(s, search=tag)) == {s["alpha"], s["beta"], s["gamma"]}
    assert ids_of(s, search=f"exact:beta-{tag}") == [s["beta"]]
    assert ids_of(s, search="exact:beta") == []
    assert ids_of(s, search=f"alias:galias-{tag}") == [s["gamma"]]
    assert ids_of(s, search=f"name:galias-{tag}") == []
    assert ids_of(s, search="galias") == [s["gamma"]], "search covers aliases"
    assert set(ids_of(s, search="not:alpha")) == {s["beta"], s["gamma"]}
    assert ids_of(s, search=s["beta"]) == [s["beta"]], "a full UUID finds the key"
    resp = s["t"].kp.get_keys(bluemix_instance=s["t"].instance, search="alpha")
    sq = result(resp)["metadata"].get("searchQuery")
    if sq is not None:
        assert sq.get("query") == "alpha", sq


def test_list_filter(searchable):
    s = searchable
    t = s["t"]
    assert ids_of(s, filter="extractable=true") == [s["beta"]]
    assert set(ids_of(s, filter="extractable=false")) == {s["alpha"], s["gamma"]}
    assert ids_of(s, filter="state=2") == [s["gamma"]]
    assert ids_of(s, filter="state=1 extractable=false") == [s["alpha"]]
    assert set(ids_of(s, filter="lastRotateDate=none")) == {s["alpha"], s["beta"], s["gamma"]}
    yesterday = (utcnow() - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    tomorrow = (utcnow() + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert set(ids_of(s, filter=f'creationDate=gt:"{yesterday}"')) == {s["alpha"], s["beta"], s["gamma"]}
    assert ids_of(s, filter=f'creationDate=gte:"{tomorrow}"') == []
    resp = t.kp.get_key_collection_metadata(bluemix_instance=t.instance, filter="extractable=false")
    assert resp.get_status_code() == 200
    assert resp.get_headers()["Key-Total"] == "2"
    # state/extractable both as plain parameter and in the filter
    with api_error(400):
        t.kp.get_keys(bluemix_instance=t.instance, state=[1], filter="state=1")


# --------------------------------------------------------------------------------------------
# registrations (spec 9): none can exist in keyward without integrated services
# --------------------------------------------------------------------------------------------


def test_registrations_are_empty(life):
    key = new_root(life)
    for client in (life.kp, life.client("reader")):
        resp = client.get_registrations(id=key["id"], bluemix_instance=life.instance, total_count=True)
        assert resp.get_status_code() == 200
        body = result(resp)
        assert body["metadata"]["collectionType"] == "application/vnd.ibm.kms.registration+json", body
        assert body["metadata"]["collectionTotal"] == 0
        assert not body.get("resources")
        assert body["metadata"].get("totalCount", 0) == 0, body
    resp = life.kp.get_registrations_all_keys(bluemix_instance=life.instance)
    assert resp.get_status_code() == 200
    assert not result(resp).get("resources")
    with api_error(404, "KEY_NOT_FOUND_ERR"):
        life.kp.get_registrations(id="11111111-2222-4333-8444-555555555555", bluemix_instance=life.instance)
    # a key without registrations is deleted without force
    assert life.kp.delete_key(id=key["id"], bluemix_instance=life.instance).get_status_code() == 204


# --------------------------------------------------------------------------------------------
# the one slow test: success paths of the 30-second rules (waits once, ~31 s)
# --------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_slow_enable_and_restore_after_30s(keyward):
    """Waits COOLDOWN_WAIT_S once on the real clock, for both enable and restore."""
    t = new_tenant(keyward, "py-slow", principals=(("manager", "Manager"),))
    kp, inst = t.kp, t.instance

    disabled = new_root(t)
    dek1 = os.urandom(32)
    w1 = wrap(kp, inst, disabled["id"], {"plaintext": b64(dek1)})
    assert kp.disable_key(id=disabled["id"], bluemix_instance=inst).get_status_code() == 204

    root = new_root(t)
    aad = ["restore"]
    dek2 = os.urandom(32)
    w2 = wrap(kp, inst, root["id"], {"plaintext": b64(dek2), "aad": aad})
    alias = unique_name("restored")
    assert kp.create_key_alias(id=root["id"], alias=alias, bluemix_instance=inst).get_status_code() == 201
    kp.put_policy(id=root["id"], bluemix_instance=inst, policy="rotation",
                  key_policy_put_body=policy_envelope({"rotation": {"enabled": True, "interval_month": 4}}))
    assert kp.delete_key(id=root["id"], bluemix_instance=inst).get_status_code() == 204

    material = os.urandom(64)
    std = new_standard(t, payload=b64(material))
    assert kp.delete_key(id=std["id"], bluemix_instance=inst).get_status_code() == 204

    with api_error(409, "REQ_TOO_EARLY_ERR"):
        kp.enable_key(id=disabled["id"], bluemix_instance=inst)
    with api_error(409, "REQ_TOO_EARLY_ERR"):
        kp.restore_key(id=root["id"], bluemix_instance=inst)

    time.sleep(COOLDOWN_WAIT_S)

    resp = kp.enable_key(id=disabled["id"], bluemix_instance=inst)
    assert resp.get_status_code() == 204
    assert meta(t, disabled["id"])["state"] == 1
    assert unb64(unwrap(kp, inst, disabled["id"], {"ciphertext": w1["ciphertext"]})["plaintext"]) == dek1
    wrap(kp, inst, disabled["id"], {})
    with api_error(409, "KEY_ACTION_INVALID_STATE_ERR"):
        kp.enable_key(id=disabled["id"], bluemix_instance=inst)

    resp = kp.restore_key(id=root["id"], bluemix_instance=inst)
    assert resp.get_status_code() == 201
    restored = first_resource(resp)
    assert restored["id"] == root["id"]
    assert restored["state"] == 1
    assert restored.get("deleted") in (False, None)
    assert "payload" not in restored, "root key material is never returned"
    assert restored["keyVersion"]["id"] == root["keyVersion"]["id"]
    # attributes, aliases and policies come back with the key
    got = meta(t, root["id"])
    assert got["name"] == root["name"] and got["state"] == 1
    assert alias in got.get("aliases", [])
    assert got["rotation"] == {"enabled": True, "interval_month": 4}
    assert unb64(unwrap(kp, inst, alias, {"ciphertext": w2["ciphertext"], "aad": aad})["plaintext"]) == dek2
    with api_error(409, "KEY_ACTION_INVALID_STATE_ERR"):
        kp.restore_key(id=root["id"], bluemix_instance=inst)

    resp = kp.restore_key(id=std["id"], bluemix_instance=inst, prefer="return=representation")
    assert resp.get_status_code() == 201
    assert first_resource(resp)["state"] == 1
    assert unb64(first_resource(kp.get_key(id=std["id"], bluemix_instance=inst))["payload"]) == material
