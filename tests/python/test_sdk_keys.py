"""Key API through IBM's Python SDK (keyprotect 3.0.1): create, import, get, list, wrap,
unwrap, rewrap, rotate, delete, tenant isolation and roles."""

from __future__ import annotations

import json
import os
import re
import uuid
from datetime import datetime

import pytest
from ibm_cloud_sdk_core import ApiException
from ibm_cloud_sdk_core.authenticators import BearerTokenAuthenticator, IAMAuthenticator
from keyprotect import IbmKeyProtectApiV2

from kwhelpers import (
    KEY_TYPE,
    api_error,
    b64,
    create_key,
    decode_wrapped,
    error_body,
    error_msg,
    first_resource,
    jbody,
    key_envelope,
    reason_code,
    reasons,
    result,
    unb64,
    unique_name,
    unwrap,
    wrap,
)

UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def parse_date(value: str) -> datetime:
    assert isinstance(value, str) and value, value
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def is_uuid(value) -> bool:
    return isinstance(value, str) and UUID_RE.match(value) is not None


@pytest.fixture(scope="module")
def inst(keyward) -> str:
    return keyward.instance


@pytest.fixture(scope="module")
def root_key(kp, inst) -> dict:
    """A generated root key shared by the wrap/unwrap tests that do not rotate it."""
    return create_key(kp, inst, name=unique_name("wrap-root"), extractable=False)


# --------------------------------------------------------------------------------------------
# create / get / metadata
# --------------------------------------------------------------------------------------------


def test_create_generated_root_key(keyward, kp, inst):
    name = unique_name("gen-root")
    resp = kp.create_key(
        bluemix_instance=inst,
        key_create_body=key_envelope(name=name, description="generated root key", extractable=False),
        prefer="return=representation",
    )
    assert resp.get_status_code() == 201
    body = result(resp)
    assert body["metadata"]["collectionType"] == KEY_TYPE
    assert body["metadata"]["collectionTotal"] == 1
    assert len(body["resources"]) == 1
    key = body["resources"][0]
    assert key["type"] == KEY_TYPE
    assert is_uuid(key["id"]), key
    assert key["name"] == name
    assert key["description"] == "generated root key"
    assert key["extractable"] is False
    assert key["imported"] is False
    assert key["state"] == 1
    assert "payload" not in key, "root key material must never be returned"
    assert is_uuid(key["keyVersion"]["id"]), key
    assert key["crn"].startswith("crn:v1:")
    assert key["crn"].endswith(f":{inst}:key:{key['id']}"), key["crn"]
    assert key["keyRingID"] == "default"
    parse_date(key["creationDate"])
    if keyward.iam_id:
        assert key["createdBy"] == keyward.iam_id

    got = first_resource(kp.get_key(id=key["id"], bluemix_instance=inst))
    assert got["id"] == key["id"]
    assert got["state"] == 1
    assert "payload" not in got, "GET of a root key must not return material"


def test_responses_are_decoded_as_json_by_the_sdk(kp, inst):
    """decisions.md: every JSON response, errors included, is `application/json`, the only
    type for which the Python SDK decodes the body."""
    resp = kp.create_key(bluemix_instance=inst,
                         key_create_body=key_envelope(name=unique_name("ct"), extractable=False))
    assert resp.get_headers()["Content-Type"].startswith("application/json")
    assert isinstance(resp.get_result(), dict), type(resp.get_result())
    key_id = resp.get_result()["resources"][0]["id"]

    wrapped = kp.wrap_key(id=key_id, bluemix_instance=inst, key_action_wrap_body=jbody({}))
    assert isinstance(wrapped.get_result(), dict), type(wrapped.get_result())

    with pytest.raises(ApiException) as info:
        kp.get_key(id=str(uuid.uuid4()), bluemix_instance=inst)
    assert info.value.http_response.headers["Content-Type"].startswith("application/json")


def test_create_without_prefer_returns_key(kp, inst):
    """decisions.md: 201 with the full key envelope even without `prefer`."""
    resp = kp.create_key(bluemix_instance=inst,
                         key_create_body=key_envelope(name=unique_name("noprefer"), extractable=False))
    assert resp.get_status_code() == 201
    key = first_resource(resp)
    assert is_uuid(key["id"])
    assert key["state"] == 1
    assert "payload" not in key


def test_generated_standard_key_returns_payload_on_get(kp, inst):
    key = create_key(kp, inst, extractable=True)
    assert key["extractable"] is True
    assert key["imported"] is False

    got = first_resource(kp.get_key(id=key["id"], bluemix_instance=inst))
    assert got["extractable"] is True
    assert len(unb64(got["payload"])) == 32, "generated keys are 256-bit"

    meta = first_resource(kp.get_key_metadata(id=key["id"], bluemix_instance=inst))
    assert meta["id"] == key["id"]
    assert "payload" not in meta, "metadata never carries material"


def test_omitted_extractable_means_standard_key(kp, inst):
    """decisions.md: `extractable` omitted on create -> true."""
    key = create_key(kp, inst, extractable=None)
    assert key["extractable"] is True


@pytest.mark.parametrize("size", [16, 24, 32])
def test_import_root_key_plain(kp, inst, size):
    material = os.urandom(size)
    key = create_key(kp, inst, extractable=False, payload=b64(material),
                     prefer="return=representation")
    assert key["imported"] is True
    assert key["extractable"] is False
    assert key["state"] == 1
    assert "payload" not in key

    got = first_resource(kp.get_key(id=key["id"], bluemix_instance=inst))
    assert got["imported"] is True
    assert "payload" not in got, "imported root material must never be returned"
    meta = first_resource(kp.get_key_metadata(id=key["id"], bluemix_instance=inst))
    assert "payload" not in meta

    dek = os.urandom(32)
    wrapped = wrap(kp, inst, key["id"], {"plaintext": b64(dek)})
    assert unb64(unwrap(kp, inst, key["id"], {"ciphertext": wrapped["ciphertext"]})["plaintext"]) == dek


@pytest.mark.parametrize("size", [8, 15, 17, 31, 33, 64])
def test_import_root_key_wrong_length_rejected(kp, inst, size):
    with api_error(400) as e:
        kp.create_key(bluemix_instance=inst,
                      key_create_body=key_envelope(name=unique_name("bad-len"), extractable=False,
                                                   payload=b64(os.urandom(size))))
    assert reason_code(e.err) in ("INVALID_FIELD_ERR", "BAD_BODY_ERR"), error_body(e.err)


@pytest.mark.parametrize("size", [1, 32, 1000, 7500])
def test_import_standard_key_returns_same_payload(kp, inst, size):
    material = os.urandom(size)
    key = create_key(kp, inst, extractable=True, payload=b64(material))
    assert key["imported"] is True
    assert key["extractable"] is True
    got = first_resource(kp.get_key(id=key["id"], bluemix_instance=inst))
    assert unb64(got["payload"]) == material
    meta = first_resource(kp.get_key_metadata(id=key["id"], bluemix_instance=inst))
    assert "payload" not in meta


def test_import_standard_key_over_7500_bytes_rejected(kp, inst):
    with api_error(400) as e:
        kp.create_key(bluemix_instance=inst,
                      key_create_body=key_envelope(name=unique_name("big"), extractable=True,
                                                   payload=b64(os.urandom(7501))))
    assert reason_code(e.err) in ("INVALID_FIELD_ERR", "BAD_BODY_ERR"), error_body(e.err)


def test_metadata_matches_get(kp, inst):
    key = create_key(kp, inst, extractable=True, payload=b64(os.urandom(48)),
                     description="meta check", tags=["alpha", "beta"])
    got = first_resource(kp.get_key(id=key["id"], bluemix_instance=inst))
    meta_resp = kp.get_key_metadata(id=key["id"], bluemix_instance=inst)
    assert meta_resp.get_status_code() == 200
    meta = first_resource(meta_resp)
    got.pop("payload")
    for field in ("id", "name", "description", "state", "extractable", "imported", "crn",
                  "creationDate", "keyVersion", "keyRingID"):
        assert meta.get(field) == got.get(field), field
    assert meta["description"] == "meta check"
    assert sorted(meta.get("tags", [])) == ["alpha", "beta"]


def test_get_unknown_key_is_404(kp, inst):
    with api_error(404, "KEY_NOT_FOUND_ERR"):
        kp.get_key(id=str(uuid.uuid4()), bluemix_instance=inst)
    with api_error(404, "KEY_NOT_FOUND_ERR"):
        kp.get_key_metadata(id=str(uuid.uuid4()), bluemix_instance=inst)


# --------------------------------------------------------------------------------------------
# list
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def listing(keyward):
    """Instance py-list: 3 generated root keys (one deleted) and 2 standard keys."""
    client = keyward.client_for("py-list")
    instance = keyward.instances["py-list"]
    roots = [create_key(client, instance, name=unique_name(f"list-root{i}"), extractable=False)["id"]
             for i in range(3)]
    standards = [create_key(client, instance, name=unique_name(f"list-std{i}"), extractable=True)["id"]
                 for i in range(2)]
    deleted = roots.pop()
    resp = client.delete_key(id=deleted, bluemix_instance=instance)
    assert resp.get_status_code() in (200, 204)
    return {"client": client, "instance": instance, "roots": set(roots),
            "standards": set(standards), "deleted": deleted}


def list_ids(client, instance, **params):
    resp = client.get_keys(bluemix_instance=instance, **params)
    assert resp.get_status_code() == 200
    body = result(resp)
    assert body["metadata"]["collectionType"] == KEY_TYPE
    resources = body.get("resources") or []
    assert body["metadata"]["collectionTotal"] == len(resources)
    for key in resources:
        assert "payload" not in key, "GET /keys never returns material"
    return [k["id"] for k in resources], resources


def test_list_default_hides_deleted_and_sorts_by_id(listing):
    """`get_keys()` / `get_key_collection_metadata()` without `state` make keyprotect 3.0.1
    send an empty `state=` query parameter (convert_list of an empty list); it must mean
    "no state filter", i.e. the default list without deleted keys."""
    client, instance = listing["client"], listing["instance"]
    ids, resources = list_ids(client, instance)
    assert set(ids) == listing["roots"] | listing["standards"]
    assert listing["deleted"] not in ids
    assert ids == sorted(ids), "default sort is by id"
    assert all(k["state"] == 1 for k in resources)
    assert ids == list_ids(client, instance, limit=200, offset=0)[0]
    resp = client.get_key_collection_metadata(bluemix_instance=instance)
    assert resp.get_status_code() == 200
    assert resp.get_headers()["Key-Total"] == "4"


def test_list_limit_offset(listing):
    client, instance = listing["client"], listing["instance"]
    # explicit state=1 (all non-deleted keys here are active): see the test above for
    # the SDK's empty `state=` parameter
    full, _ = list_ids(client, instance, state=[1])
    assert len(full) == 4
    assert full == sorted(full)
    pages = [list_ids(client, instance, state=[1], limit=2, offset=off)[0] for off in (0, 2, 4)]
    assert [len(p) for p in pages] == [2, 2, 0]
    assert pages[0] + pages[1] == full
    assert list_ids(client, instance, state=[1], limit=3, offset=1)[0] == full[1:4]
    assert list_ids(client, instance, state=[1], limit=1)[0] == full[:1]


@pytest.mark.parametrize("limit", [0, 5001])
def test_list_limit_out_of_range(listing, limit):
    with api_error(400, "INVALID_QUERY_PARAM_ERR") as e:
        listing["client"].get_keys(bluemix_instance=listing["instance"], state=[1], limit=limit)
    assert reasons(e.err)[0].get("target", {}).get("name") == "limit", error_body(e.err)


def test_list_state_filter(listing):
    client, instance = listing["client"], listing["instance"]
    ids, resources = list_ids(client, instance, state=[5])
    assert ids == [listing["deleted"]]
    assert resources[0]["state"] == 5
    ids, _ = list_ids(client, instance, state=[1, 5])
    assert set(ids) == listing["roots"] | listing["standards"] | {listing["deleted"]}
    ids, _ = list_ids(client, instance, state=[1])
    assert set(ids) == listing["roots"] | listing["standards"]


def test_list_extractable_filter(listing):
    client, instance = listing["client"], listing["instance"]
    ids, resources = list_ids(client, instance, state=[1], extractable=True)
    assert set(ids) == listing["standards"]
    assert all(k["extractable"] is True for k in resources)
    ids, resources = list_ids(client, instance, state=[1], extractable=False)
    assert set(ids) == listing["roots"]
    assert all(k["extractable"] is False for k in resources)
    ids, _ = list_ids(client, instance, extractable=False, state=[1, 5])
    assert set(ids) == listing["roots"] | {listing["deleted"]}


def test_head_keys_total(listing):
    client, instance = listing["client"], listing["instance"]
    resp = client.get_key_collection_metadata(bluemix_instance=instance, state=[1])
    assert resp.get_status_code() == 200
    assert resp.get_result() is None
    assert resp.get_headers()["Key-Total"] == "4"
    resp = client.get_key_collection_metadata(bluemix_instance=instance, state=[1, 5])
    assert resp.get_headers()["Key-Total"] == "5"
    resp = client.get_key_collection_metadata(bluemix_instance=instance, state=[1], extractable=True)
    assert resp.get_headers()["Key-Total"] == "2"


# --------------------------------------------------------------------------------------------
# wrap / unwrap / rewrap / rotate
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("body", [None, {}], ids=["no-body", "empty-object"])
def test_wrap_without_plaintext_generates_dek(kp, inst, root_key, body):
    wrapped = wrap(kp, inst, root_key["id"], body)
    dek = unb64(wrapped["plaintext"])
    assert len(dek) == 32
    assert is_uuid(wrapped["keyVersion"]["id"])
    out = unwrap(kp, inst, root_key["id"], {"ciphertext": wrapped["ciphertext"]})
    assert unb64(out["plaintext"]) == dek


def test_wrap_unwrap_plaintext(kp, inst, root_key):
    dek = os.urandom(32)
    wrapped = wrap(kp, inst, root_key["id"], {"plaintext": b64(dek)})
    assert wrapped["keyVersion"]["id"] == root_key["keyVersion"]["id"]
    out = unwrap(kp, inst, root_key["id"], {"ciphertext": wrapped["ciphertext"]})
    assert unb64(out["plaintext"]) == dek
    assert out["keyVersion"]["id"] == root_key["keyVersion"]["id"]
    again = wrap(kp, inst, root_key["id"], {"plaintext": b64(dek)})
    assert again["ciphertext"] != wrapped["ciphertext"], "each wrap uses a fresh IV"


def test_wrapped_ciphertext_format(kp, inst, root_key):
    dek = os.urandom(24)
    wrapped = wrap(kp, inst, root_key["id"], {"plaintext": b64(dek)})
    outer = decode_wrapped(wrapped["ciphertext"])
    assert outer["version"] == "5.0.0"
    assert outer["handle"] == wrapped["keyVersion"]["id"]
    assert len(unb64(outer["iv"])) == 12
    assert len(unb64(outer["salt"])) == 32, "a key derived for this wrap alone (docs/design.md)"
    assert len(unb64(outer["ciphertext"])) == len(dek) + 16, "AES-GCM: ciphertext || 16-byte tag"


def test_wrap_plaintext_size_limits(kp, inst, root_key):
    dek = os.urandom(7500)
    wrapped = wrap(kp, inst, root_key["id"], {"plaintext": b64(dek)})
    assert unb64(unwrap(kp, inst, root_key["id"], {"ciphertext": wrapped["ciphertext"]})["plaintext"]) == dek
    with api_error(400, "INVALID_FIELD_ERR"):
        kp.wrap_key(id=root_key["id"], bluemix_instance=inst,
                    key_action_wrap_body=jbody({"plaintext": b64(os.urandom(7501))}))


def test_wrap_plaintext_not_base64(kp, inst, root_key):
    with api_error(400, "INVALID_FIELD_ERR") as e:
        kp.wrap_key(id=root_key["id"], bluemix_instance=inst,
                    key_action_wrap_body=jbody({"plaintext": "not*base64!"}))
    assert reasons(e.err)[0].get("target", {}).get("name") == "plaintext", error_body(e.err)


def test_unwrap_with_aad(kp, inst, root_key):
    aad = ["tenant-7", "bucket/object 42"]
    dek = os.urandom(32)
    wrapped = wrap(kp, inst, root_key["id"], {"plaintext": b64(dek), "aad": aad})
    out = unwrap(kp, inst, root_key["id"], {"ciphertext": wrapped["ciphertext"], "aad": aad})
    assert unb64(out["plaintext"]) == dek

    wrong = [None, [], list(reversed(aad)), aad[:1], aad + ["x"], ["tenant-7", "bucket/object 43"]]
    for bad in wrong:
        body = {"ciphertext": wrapped["ciphertext"]}
        if bad is not None:
            body["aad"] = bad
        with api_error(422, "UNPROCESSABLE_CIPHERTEXT_ERR"):
            kp.unwrap_key(id=root_key["id"], bluemix_instance=inst, key_action_unwrap_body=jbody(body))


def test_aad_binding_is_length_prefixed(kp, inst, root_key):
    wrapped = wrap(kp, inst, root_key["id"], {"plaintext": b64(os.urandom(16)), "aad": ["a", "b"]})
    for bad in (["ab"], ["a", "b", ""], ["", "a", "b"], ["a\u0000b"]):
        with api_error(422, "UNPROCESSABLE_CIPHERTEXT_ERR"):
            kp.unwrap_key(id=root_key["id"], bluemix_instance=inst,
                          key_action_unwrap_body=jbody({"ciphertext": wrapped["ciphertext"], "aad": bad}))


def test_unwrap_rejects_aad_not_used_on_wrap(kp, inst, root_key):
    wrapped = wrap(kp, inst, root_key["id"], {"plaintext": b64(os.urandom(32))})
    with api_error(422, "UNPROCESSABLE_CIPHERTEXT_ERR"):
        kp.unwrap_key(id=root_key["id"], bluemix_instance=inst,
                      key_action_unwrap_body=jbody({"ciphertext": wrapped["ciphertext"], "aad": ["x"]}))


def test_unwrap_with_another_key_fails(kp, inst, root_key):
    other = create_key(kp, inst, extractable=False)
    wrapped = wrap(kp, inst, root_key["id"], {"plaintext": b64(os.urandom(32))})
    with api_error(422, "UNPROCESSABLE_CIPHERTEXT_ERR"):
        kp.unwrap_key(id=other["id"], bluemix_instance=inst,
                      key_action_unwrap_body=jbody({"ciphertext": wrapped["ciphertext"]}))


def test_unwrap_tampered_ciphertext_fails(kp, inst, root_key):
    wrapped = wrap(kp, inst, root_key["id"], {"plaintext": b64(os.urandom(32))})
    outer = decode_wrapped(wrapped["ciphertext"])
    inner = bytearray(unb64(outer["ciphertext"]))
    inner[0] ^= 0x01
    outer["ciphertext"] = b64(bytes(inner))
    forged = b64(json.dumps(outer).encode())
    with api_error(422, "UNPROCESSABLE_CIPHERTEXT_ERR"):
        kp.unwrap_key(id=root_key["id"], bluemix_instance=inst,
                      key_action_unwrap_body=jbody({"ciphertext": forged}))
    garbage = b64(os.urandom(80))
    with api_error(422, "UNPROCESSABLE_CIPHERTEXT_ERR"):
        kp.unwrap_key(id=root_key["id"], bluemix_instance=inst,
                      key_action_unwrap_body=jbody({"ciphertext": garbage}))


def test_rewrap_without_rotation(kp, inst, root_key):
    dek = os.urandom(32)
    wrapped = wrap(kp, inst, root_key["id"], {"plaintext": b64(dek)})
    resp = kp.rewrap_key(id=root_key["id"], bluemix_instance=inst,
                         key_action_rewrap_body=jbody({"ciphertext": wrapped["ciphertext"]}))
    assert resp.get_status_code() == 200
    out = result(resp)
    assert out["ciphertext"] != wrapped["ciphertext"]
    assert out["keyVersion"]["id"] == root_key["keyVersion"]["id"]
    assert out["rewrappedKeyVersion"]["id"] == root_key["keyVersion"]["id"]
    assert "plaintext" not in out, "rewrap must not reveal the DEK"
    assert unb64(unwrap(kp, inst, root_key["id"], {"ciphertext": out["ciphertext"]})["plaintext"]) == dek


def test_rotate_then_rewrap_and_unwrap(kp, inst):
    key = create_key(kp, inst, extractable=False)
    v1 = key["keyVersion"]["id"]
    aad = ["rotate-test"]
    dek = os.urandom(32)
    old = wrap(kp, inst, key["id"], {"plaintext": b64(dek), "aad": aad})
    assert old["keyVersion"]["id"] == v1

    resp = kp.rotate_key(id=key["id"], bluemix_instance=inst)
    assert resp.get_status_code() == 204

    meta = first_resource(kp.get_key_metadata(id=key["id"], bluemix_instance=inst))
    v2 = meta["keyVersion"]["id"]
    assert is_uuid(v2) and v2 != v1
    parse_date(meta["lastRotateDate"])
    assert meta["id"] == key["id"] and meta["state"] == 1

    # unwrap of a ciphertext made before the rotation still works and offers a fresh one
    out = unwrap(kp, inst, key["id"], {"ciphertext": old["ciphertext"], "aad": aad})
    assert unb64(out["plaintext"]) == dek
    assert out["rewrappedKeyVersion"]["id"] == v2
    fresh = unwrap(kp, inst, key["id"], {"ciphertext": out["ciphertext"], "aad": aad})
    assert unb64(fresh["plaintext"]) == dek
    assert fresh["keyVersion"]["id"] == v2

    # rewrap moves the DEK to the latest version
    resp = kp.rewrap_key(id=key["id"], bluemix_instance=inst,
                         key_action_rewrap_body=jbody({"ciphertext": old["ciphertext"], "aad": aad}))
    rewrapped = result(resp)
    assert rewrapped["keyVersion"]["id"] == v1
    assert rewrapped["rewrappedKeyVersion"]["id"] == v2
    assert decode_wrapped(rewrapped["ciphertext"])["handle"] == v2
    latest = unwrap(kp, inst, key["id"], {"ciphertext": rewrapped["ciphertext"], "aad": aad})
    assert unb64(latest["plaintext"]) == dek
    assert latest["keyVersion"]["id"] == v2

    with api_error(422, "UNPROCESSABLE_CIPHERTEXT_ERR"):
        kp.rewrap_key(id=key["id"], bluemix_instance=inst,
                      key_action_rewrap_body=jbody({"ciphertext": old["ciphertext"]}))

    assert wrap(kp, inst, key["id"], {"plaintext": b64(dek)})["keyVersion"]["id"] == v2


# --------------------------------------------------------------------------------------------
# delete
# --------------------------------------------------------------------------------------------


def test_delete_key(kp, inst):
    key = create_key(kp, inst, extractable=False)
    wrapped = wrap(kp, inst, key["id"], {"plaintext": b64(os.urandom(32))})

    resp = kp.delete_key(id=key["id"], bluemix_instance=inst)
    assert resp.get_status_code() == 204
    assert resp.get_result() is None

    got = first_resource(kp.get_key(id=key["id"], bluemix_instance=inst))
    assert got["state"] == 5
    assert got["deleted"] is True
    parse_date(got["deletionDate"])

    with api_error(410, "KEY_DELETED_ERR"):
        kp.delete_key(id=key["id"], bluemix_instance=inst)

    ids, _ = list_ids(kp, inst, state=[5], limit=5000)
    assert key["id"] in ids

    # data under a deleted key is unusable at once
    with pytest.raises(ApiException) as info:
        kp.unwrap_key(id=key["id"], bluemix_instance=inst,
                      key_action_unwrap_body=jbody({"ciphertext": wrapped["ciphertext"]}))
    assert 400 <= info.value.status_code < 500
    with pytest.raises(ApiException) as info:
        kp.wrap_key(id=key["id"], bluemix_instance=inst, key_action_wrap_body=jbody({}))
    assert 400 <= info.value.status_code < 500


def test_delete_key_with_representation(kp, inst):
    key = create_key(kp, inst, extractable=True)
    resp = kp.delete_key(id=key["id"], bluemix_instance=inst, prefer="return=representation")
    assert resp.get_status_code() == 200
    deleted = first_resource(resp)
    assert deleted["id"] == key["id"]
    assert deleted["state"] == 5
    assert deleted["deleted"] is True
    assert "payload" not in deleted
    with api_error(410, "KEY_DELETED_ERR"):
        kp.delete_key(id=key["id"], bluemix_instance=inst, prefer="return=representation")


# --------------------------------------------------------------------------------------------
# tenants, roles, authentication
# --------------------------------------------------------------------------------------------


def test_key_of_another_instance_is_invisible(keyward, kp, inst):
    other_client = keyward.client_for("py-other")
    other_inst = keyward.instances["py-other"]
    foreign = create_key(other_client, other_inst, extractable=True)

    with api_error(404, "KEY_NOT_FOUND_ERR") as seen:
        kp.get_key(id=foreign["id"], bluemix_instance=inst)
    with api_error(404, "KEY_NOT_FOUND_ERR") as unknown:
        kp.get_key(id=str(uuid.uuid4()), bluemix_instance=inst)
    # no existence oracle: same answer as for a key that never existed
    assert error_msg(seen.err) == error_msg(unknown.err)
    assert reasons(seen.err)[0].get("message") == reasons(unknown.err)[0].get("message")

    with api_error(404, "KEY_NOT_FOUND_ERR"):
        kp.get_key_metadata(id=foreign["id"], bluemix_instance=inst)
    with api_error(404, "KEY_NOT_FOUND_ERR"):
        kp.wrap_key(id=foreign["id"], bluemix_instance=inst, key_action_wrap_body=jbody({}))
    with api_error(404, "KEY_NOT_FOUND_ERR"):
        kp.delete_key(id=foreign["id"], bluemix_instance=inst)
    ids, _ = list_ids(kp, inst, state=[0, 1, 2, 3, 5], limit=5000)
    assert foreign["id"] not in ids

    still = first_resource(other_client.get_key(id=foreign["id"], bluemix_instance=other_inst))
    assert still["state"] == 1


def test_instance_without_access_looks_like_unknown_instance(keyward, kp):
    with api_error(403) as other:
        kp.get_keys(bluemix_instance=keyward.instances["py-other"], state=[1])
    with api_error(403) as unknown:
        kp.get_keys(bluemix_instance=str(uuid.uuid4()), state=[1])
    assert reason_code(other.err) == reason_code(unknown.err)
    assert error_msg(other.err) == error_msg(unknown.err)


def test_reader_cannot_create_or_delete(keyward, kp, inst):
    reader = keyward.client_for("py", "Reader")
    name = unique_name("reader-made")
    with api_error(403) as e:
        reader.create_key(bluemix_instance=inst,
                          key_create_body=key_envelope(name=name, extractable=False))
    assert error_body(e.err)["metadata"]["collectionType"] == "application/vnd.ibm.kms.error+json"
    _, resources = list_ids(kp, inst, state=[0, 1, 2, 3, 5], limit=5000)
    assert name not in {k["name"] for k in resources}, "a refused create must not store a key"

    key = create_key(kp, inst, extractable=False)
    with api_error(403):
        reader.delete_key(id=key["id"], bluemix_instance=inst)
    assert first_resource(kp.get_key_metadata(id=key["id"], bluemix_instance=inst))["state"] == 1


def test_reader_can_read_and_wrap(keyward, kp, inst, root_key):
    reader = keyward.client_for("py", "Reader")
    meta = first_resource(reader.get_key_metadata(id=root_key["id"], bluemix_instance=inst))
    assert meta["id"] == root_key["id"]
    ids, _ = list_ids(reader, inst, state=[1], limit=5000)
    assert root_key["id"] in ids
    dek = os.urandom(32)
    wrapped = wrap(reader, inst, root_key["id"], {"plaintext": b64(dek)})
    assert unb64(unwrap(reader, inst, root_key["id"], {"ciphertext": wrapped["ciphertext"]})["plaintext"]) == dek


def test_invalid_bearer_token_is_401(keyward, inst):
    client = IbmKeyProtectApiV2(authenticator=BearerTokenAuthenticator("not.a.valid-token"))
    client.set_service_url(keyward.url)
    with api_error(401, "UNAUTHORIZED_ERR"):
        client.get_keys(bluemix_instance=inst, state=[1])


def test_unknown_apikey_gets_no_token(keyward, inst):
    client = IbmKeyProtectApiV2(authenticator=IAMAuthenticator("kw_" + "0" * 40, url=keyward.url))
    client.set_service_url(keyward.url)
    with pytest.raises(ApiException) as info:
        client.get_keys(bluemix_instance=inst, state=[1])
    assert info.value.status_code in (400, 401), info.value
