"""The API against its own contract: Schemathesis drives a live `keyward serve` from the
OpenAPI document the server publishes at `/openapi.json` (committed as `docs/openapi.json`).

Every operation is exercised with schema examples, boundary and negative values (the coverage
phase), generated data, and stateful sequences along the document's links, with a fixed seed
and a fixed example budget (`KEYWARD_CONTRACT_EXAMPLES`, default 10 per operation) so CI stays
fast and a failure reproduces. It passes only when:
- no response is a 5xx;
- every response conforms to the document (status, content type, headers, body schema);
- requests the document forbids are rejected with a 4xx, missing credentials refused, and
  deleted resources stay gone (Schemathesis's own checks; see the comment on
  `positive_data_acceptance` below for the one left out);
- no request that was answered 4xx changed state (`contract_hooks.py`).

The server runs alone, on its own data directory, with rate limits and the auth-failure cap
raised so that the volume of generated requests is not answered 429.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from conftest import REPO_ROOT, _start_server, _stop, find_binary, run_admin

EXAMPLES = int(os.environ.get("KEYWARD_CONTRACT_EXAMPLES", "10"))
SEED = os.environ.get("KEYWARD_CONTRACT_SEED", "20261207")
HIGH = "100000/100000"


def _token(url: str, apikey: str) -> str:
    body = urllib.parse.urlencode(
        {"grant_type": "urn:ibm:params:oauth:grant-type:apikey", "apikey": apikey}
    ).encode()
    req = urllib.request.Request(
        url + "/identity/token",
        data=body,
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())["access_token"]


@pytest.fixture(scope="module")
def contract_server(tmp_path_factory):
    binary = find_binary()
    base = tmp_path_factory.mktemp("contract")
    data_dir = base / "data"
    data_dir.mkdir()
    inst = run_admin(binary, data_dir, "instance", "create", "--name", "contract")["id"]
    key = run_admin(
        binary, data_dir, "apikey", "create", "--instance", inst, "--role", "Manager",
        "--name", "contract-manager",
    )["apikey"]
    log = base / "server.log"
    proc, url = _start_server(binary, data_dir, log, [
        "--rate-limit-crypto", HIGH,
        "--rate-limit-management", HIGH,
        "--rate-limit-import-token", HIGH,
        "--rate-limit-import-token-create", HIGH,
        "--rate-limit-key-create", HIGH,
        "--auth-failure-limit", HIGH,
        "--import-failure-limit", "0",
    ])
    try:
        yield url, inst, _token(url, key), base, log
    finally:
        _stop(proc)


def test_openapi_document_is_served_and_committed(contract_server):
    url, _inst, _tok, _base, _log = contract_server
    with urllib.request.urlopen(url + "/openapi.json", timeout=30) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("application/json")
        served = json.loads(resp.read())
    committed = json.loads((REPO_ROOT / "docs" / "openapi.json").read_text())
    assert served == committed, "docs/openapi.json differs from what the server serves: regenerate it with `KEYWARD_BLESS=1 cargo test -p keyward-api --test openapi`"
    assert served["openapi"].startswith("3.1")


def test_schemathesis(contract_server):
    url, inst, token, base, log = contract_server
    report = base / "report"
    cmd = [
        str(Path(sys.executable).parent / "schemathesis"), "run", url + "/openapi.json",
        "--url", url,
        "--checks", "all",
        # Not checked: that every request the document allows is accepted. Some rules are not
        # JSON Schema (a date in the future, base64 that decodes to 16, 24 or 32 bytes, an
        # alias that is not a reserved word, a policy's attributes only when it is enabled),
        # so a schema-valid request may rightly get a 400. Every other check runs, the
        # rejection of schema-invalid requests included.
        "--exclude-checks", "positive_data_acceptance",
        "--max-examples", str(EXAMPLES),
        "--seed", SEED,
        "--workers", "1",
        "--phases", "examples,coverage,fuzzing,stateful",
        "--generation-database", "none",
        "--suppress-health-check", "all",
        "--request-timeout", "30",
        "--no-color",
        "--report", "junit",
        "--report-dir", str(report),
        "-H", f"Authorization: Bearer {token}",
        "-H", f"Bluemix-Instance: {inst}",
    ]
    env = {
        **os.environ,
        "PYTHONPATH": str(Path(__file__).parent),
        "SCHEMATHESIS_HOOKS": "contract_hooks",
        "KEYWARD_CONTRACT_URL": url,
        "KEYWARD_CONTRACT_TOKEN": token,
        "KEYWARD_CONTRACT_INSTANCE": inst,
    }
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=base, timeout=1800)
    out = proc.stdout + proc.stderr
    if proc.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-80:])
        pytest.fail(f"schemathesis exited {proc.returncode}\n{out}\n--- server log tail ---\n{tail}",
                    pytrace=False)
    print(out[-4000:])
