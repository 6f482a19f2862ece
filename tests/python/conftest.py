"""Session fixtures: one real `keyward serve` process driven by IBM's Python SDK.

The binary comes from $KEYWARD_BIN (default <repo>/target/debug/keyward). Instances and API
keys are made with `keyward admin --output json` on a fresh temporary data dir before the
server starts; the server listens on a free loopback port and is stopped at the end of the
session. When any test failed, the server's log is printed in the terminal summary.
"""

from __future__ import annotations

import json
import os
import shlex
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

import pytest
from ibm_cloud_sdk_core.authenticators import IAMAuthenticator
from keyprotect import IbmKeyProtectApiV2

REPO_ROOT = Path(__file__).resolve().parents[2]
HEALTH_TIMEOUT_S = 30.0
ADMIN_TIMEOUT_S = 120.0

# Instances made before the server starts: name -> roles that get an API key in it.
#   py         main instance of test_sdk_keys (Manager for everything, Reader for 403 checks)
#   py-other   a second tenant whose keys must be invisible from "py"
#   py-list    only the listing test creates keys here, so counts are exact
#   py-import  secure import tests (one import token per instance)
#   py-notoken never gets an import token
INSTANCES: Dict[str, List[str]] = {
    "py": ["Manager", "Reader"],
    "py-other": ["Manager"],
    "py-list": ["Manager"],
    "py-import": ["Manager", "Reader"],
    "py-notoken": ["Manager"],
}

_SERVER_LOG: Optional[Path] = None


@dataclass
class Principal:
    apikey: str
    iam_id: str
    role: str
    instance: str


@dataclass
class KeywardEnv:
    """What the tests get: server url, the main instance and a client factory."""

    url: str
    binary: str
    data_dir: Path
    instance: str
    apikey: str
    iam_id: str
    instances: Dict[str, str] = field(default_factory=dict)
    principals: Dict[tuple, Principal] = field(default_factory=dict)

    def principal(self, instance_name: str, role: str) -> Principal:
        return self.principals[(instance_name, role)]

    def client(self, apikey: Optional[str] = None) -> IbmKeyProtectApiV2:
        """A fresh SDK client authenticating through keyward's IAM endpoint."""
        auth = IAMAuthenticator(apikey or self.apikey, url=self.url)
        service = IbmKeyProtectApiV2(authenticator=auth)
        service.set_service_url(self.url)
        return service

    def client_for(self, instance_name: str, role: str = "Manager") -> IbmKeyProtectApiV2:
        return self.client(self.principal(instance_name, role).apikey)

    def admin(self, *args: str) -> dict:
        return run_admin(self.binary, self.data_dir, *args)


def find_binary() -> str:
    binary = os.environ.get("KEYWARD_BIN") or str(REPO_ROOT / "target" / "debug" / "keyward")
    if not (os.path.isfile(binary) and os.access(binary, os.X_OK)):
        pytest.fail(
            f"keyward binary not found at {binary}: run `cargo build -p keyward` or set KEYWARD_BIN",
            pytrace=False,
        )
    return binary


def _parse_json_stdout(stdout: str) -> dict:
    text = stdout.strip()
    try:
        value = json.loads(text)
        if isinstance(value, dict):
            return value
    except json.JSONDecodeError:
        pass
    for line in reversed(text.splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                value = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(value, dict):
                return value
    raise ValueError(f"no JSON object in admin output: {stdout!r}")


def run_admin(binary: str, data_dir: Path, *args: str) -> dict:
    cmd = [binary, "admin", "--data-dir", str(data_dir), "--output", "json", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=ADMIN_TIMEOUT_S)
    if proc.returncode != 0:
        pytest.fail(
            f"`{shlex.join(cmd)}` exited {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}",
            pytrace=False,
        )
    try:
        return _parse_json_stdout(proc.stdout)
    except ValueError as err:
        pytest.fail(f"`{shlex.join(cmd)}`: {err}\nstderr:\n{proc.stderr}", pytrace=False)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/healthz", timeout=2) as resp:
            return resp.status == 200
    except (urllib.error.URLError, ConnectionError, OSError):
        return False


def _log_tail(path: Path, lines: int = 200) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError as err:
        return f"(cannot read {path}: {err})"
    return "\n".join(text.splitlines()[-lines:])


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


def _start_server(binary: str, data_dir: Path, log_path: Path, args: Optional[List[str]] = None):
    extra = shlex.split(os.environ.get("KEYWARD_TEST_SERVE_ARGS", "")) + list(args or [])
    last_error = ""
    for _attempt in range(3):
        port = _free_port()
        url = f"http://127.0.0.1:{port}"
        cmd = [
            binary, "serve",
            "--listen", f"127.0.0.1:{port}",
            "--data-dir", str(data_dir),
            "--token-pool-size", "2",
            *extra,
        ]
        log = open(log_path, "ab")
        log.write(f"\n=== {shlex.join(cmd)}\n".encode())
        log.flush()
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env={**os.environ, "NO_COLOR": "1"})
        log.close()
        deadline = time.monotonic() + HEALTH_TIMEOUT_S
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                break
            if _healthy(url):
                return proc, url
            time.sleep(0.2)
        if proc.poll() is None:
            _stop(proc)
            pytest.fail(
                f"keyward serve not healthy within {HEALTH_TIMEOUT_S:.0f} s\n{_log_tail(log_path)}",
                pytrace=False,
            )
        last_error = _log_tail(log_path)
        if "in use" not in last_error.lower():
            break  # exited for another reason than a port race: do not retry
    pytest.fail(f"keyward serve exited early\n{last_error}", pytrace=False)


@pytest.fixture(scope="session")
def keyward(tmp_path_factory) -> KeywardEnv:
    global _SERVER_LOG
    binary = find_binary()
    base = tmp_path_factory.mktemp("keyward")
    data_dir = base / "data"
    data_dir.mkdir()
    log_path = base / "server.log"
    _SERVER_LOG = log_path

    instances: Dict[str, str] = {}
    principals: Dict[tuple, Principal] = {}
    for name, roles in INSTANCES.items():
        created = run_admin(binary, data_dir, "instance", "create", "--name", name)
        instance_id = created["id"]
        instances[name] = instance_id
        for role in roles:
            key = run_admin(
                binary, data_dir, "apikey", "create",
                "--instance", instance_id, "--role", role, "--name", f"{name}-{role.lower()}",
            )
            principals[(name, role)] = Principal(
                apikey=key["apikey"], iam_id=key.get("iam_id", ""), role=role, instance=instance_id
            )

    proc, url = _start_server(binary, data_dir, log_path)
    main = principals[("py", "Manager")]
    env = KeywardEnv(
        url=url,
        binary=binary,
        data_dir=data_dir,
        instance=main.instance,
        apikey=main.apikey,
        iam_id=main.iam_id,
        instances=instances,
        principals=principals,
    )
    try:
        yield env
    finally:
        _stop(proc)


@pytest.fixture(scope="session")
def kp(keyward: KeywardEnv) -> IbmKeyProtectApiV2:
    """SDK client with the Manager key of the main instance."""
    return keyward.client()


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "slow: waits on the real clock (e.g. the 30 s enable/restore rule); deselect with -m 'not slow'"
    )


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if _SERVER_LOG is None:
        return
    if not (terminalreporter.stats.get("failed") or terminalreporter.stats.get("error")):
        return
    terminalreporter.section("keyward server log (tail)")
    terminalreporter.write_line(_log_tail(_SERVER_LOG))
