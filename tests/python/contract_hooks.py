"""Schemathesis hooks for tests/python/test_api_contract.py (loaded through SCHEMATHESIS_HOOKS).

Adds one check Schemathesis does not have: a request answered 4xx changed nothing. Before every
state-changing request (POST, PUT, PATCH, DELETE) the hooks take a snapshot of what the caller
can see (every key in every state, key rings, instance policies);
after a 4xx answer they take it again and fail the case when the two differ. Runs with one
worker, so no other request can change the state between the two snapshots.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from typing import Any, Dict, Optional

import schemathesis

MUTATING = {"POST", "PUT", "PATCH", "DELETE"}
BASE = os.environ["KEYWARD_CONTRACT_URL"]
HEADERS = {
    "Authorization": f"Bearer {os.environ['KEYWARD_CONTRACT_TOKEN']}",
    "Bluemix-Instance": os.environ["KEYWARD_CONTRACT_INSTANCE"],
    "Accept": "application/json",
}
_before: Dict[str, Any] = {}


def _get(path: str) -> Any:
    """The decoded body of a GET, or its status and error body (a deleted key answers its
    versions with an error: that answer is part of the state too)."""
    req = urllib.request.Request(BASE + path, headers=HEADERS)
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as err:
        return {"status": err.code, "error": json.loads(err.read() or b"null")}


def snapshot() -> Dict[str, Any]:
    # Each key's metadata names its state, current version, key ring, aliases, policies'
    # effect (rotation, dual authorisation) and lastUpdateDate, which every write moves.
    keys = _get("/api/v2/keys?limit=5000&state=0,1,2,3,5").get("resources", [])
    return {
        "keys": {k["id"]: k for k in keys},
        "rings": _get("/api/v2/key_rings").get("resources", []),
        "instance_policies": _get("/api/v2/instance/policies").get("resources", []),
    }


def _key(case) -> Optional[str]:
    return f"{case.method.upper()} {case.formatted_path}"


@schemathesis.hook
def before_call(context, case, kwargs):
    _before.clear()
    if case.method.upper() in MUTATING:
        _before[_key(case)] = snapshot()


@schemathesis.check
def rejected_request_changes_nothing(ctx, response, case):
    before = _before.get(_key(case))
    if before is None or not 400 <= response.status_code < 500:
        return None
    after = snapshot()
    if after != before:
        changed = sorted(
            k for k in set(before["keys"]) | set(after["keys"])
            if before["keys"].get(k) != after["keys"].get(k)
        )
        raise AssertionError(
            f"{case.method} {case.formatted_path} was answered {response.status_code} "
            f"but changed state (keys changed: {changed}; rings or instance policies "
            f"changed: {before['rings'] != after['rings'] or before['instance_policies'] != after['instance_policies']})"
        )
    return None
