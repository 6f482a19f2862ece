"""IBM's `redstone` library (redstone 0.6.2) against Keyward: its IAM login through IAM's older
path `POST /oidc/token` (API-key and refresh-token grants, `response_type=cloud_iam`, Basic
`bx:bx`), its Resource Controller client (`GET /v2/resource_instances/{id}`) and its Key
Protect client (create, list, get, wrap, unwrap, delete)."""

from __future__ import annotations

import os

import pytest
from redstone import auth
from redstone.client import KeyProtect, ResourceController


def test_oidc_login_and_refresh(keyward):
    first = auth.auth(apikey=keyward.apikey, iam_endpoint=keyward.url)
    assert isinstance(first, dict), first
    assert first["token_type"] == "Bearer"
    assert first["expires_in"] == 3600
    assert first["access_token"] and first["refresh_token"]

    again = auth.auth(refresh_token=first["refresh_token"], iam_endpoint=keyward.url + "/")
    assert isinstance(again, dict), again
    assert again["access_token"] != first["access_token"]

    # failures come back as IAM's error body (redstone returns the text)
    bad = auth.auth(apikey="kw_not_a_key", iam_endpoint=keyward.url)
    assert isinstance(bad, str) and "BXNIM0415E" in bad
    bad = auth.auth(refresh_token=first["access_token"], iam_endpoint=keyward.url)
    assert isinstance(bad, str) and "BXNIM0407E" in bad


def test_key_protect_and_resource_controller_clients(keyward):
    tm = auth.TokenManager(keyward.apikey, iam_endpoint=keyward.url, use_refresh_token=True)
    rc = ResourceController(credentials=tm, endpoint_url=keyward.url)
    inst = rc.get_instance(keyward.instance)
    assert inst["guid"] == keyward.instance
    assert inst["state"] == "active"
    assert inst["extensions"]["endpoints"]["public"] == keyward.url
    assert rc.get_instance(keyward.instances["py-other"]) is None  # no role there: 404

    kp = KeyProtect(credentials=tm, endpoint_url=keyward.url, service_instance_id=keyward.instance)
    key = kp.create_key("redstone-root", root=True)
    assert key["name"] == "redstone-root" and key["extractable"] is False
    assert key["crn"].startswith(inst["crn"][: -len("::")] + ":key:")
    assert any(k["id"] == key["id"] for k in kp.list_keys())
    assert kp.get_key(key["id"])["name"] == "redstone-root"

    secret = os.urandom(32)
    wrapped = kp.wrap(key["id"], secret, aad=["redstone"])
    assert kp.unwrap(key["id"], wrapped["ciphertext"], aad=["redstone"]) == secret
    with pytest.raises(KeyProtect.KeyProtectError):
        kp.unwrap(key["id"], wrapped["ciphertext"], aad=["other"])

    kp.delete_key(key["id"])
    assert kp.get_key(key["id"])["state"] == 5
