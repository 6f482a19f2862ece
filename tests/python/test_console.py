"""The web console (`/ui/`, crates/console, docs/console.md) in a real headless Chromium driven
by Selenium, against a real `keyward serve` started with the database audit sink.

What is checked: sign-in (a wrong API key shows the server's refusal), creating a root key,
the secure import wizard end to end (the material typed as hex never appears in any request
body the browser sent, read from Chrome's performance log, and the imported key wraps and
unwraps through the API), rotation, dual-authorised deletion (scheduled by one user, completed
by a second), the audit view, health, a 390 px wide layout, the dark theme, labels on every
control, sign-out clearing the token, no request to another origin, and no Content Security
Policy violation (browser log and `securitypolicyviolation` events). Screenshots of the main
screens go to target/console-screenshots/ (copies are committed in docs/console/).

Chromium and chromedriver are Debian's (`apt-get install chromium chromium-driver`); Selenium
Manager is never used (`SE_OFFLINE=true`, explicit driver path). Without them the tests skip,
or fail with KEYWARD_REQUIRE_SERVICES=1 (as CI sets).
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import shutil
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import pytest

from conftest import REPO_ROOT, _start_server, _stop, find_binary, run_admin

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
SHOTS = REPO_ROOT / "target" / "console-screenshots"
WAIT_S = 30
KEY_TYPE = "application/vnd.ibm.kms.key+json"
POLICY_TYPE = "application/vnd.ibm.kms.policy+json"


def _missing(what: str) -> None:
    msg = f"the console browser tests need {what}"
    if os.environ.get("KEYWARD_REQUIRE_SERVICES") == "1":
        pytest.fail(f"{msg} (KEYWARD_REQUIRE_SERVICES=1)", pytrace=False)
    pytest.skip(msg)


def _require_browser() -> None:
    for path in (CHROMIUM, CHROMEDRIVER):
        if not (os.path.isfile(path) and os.access(path, os.X_OK)):
            _missing(f"{path} (apt-get install chromium chromium-driver)")
    try:
        import selenium  # noqa: F401
    except ImportError:
        _missing("the selenium package (tests/python/requirements.txt)")


class Api:
    """A tiny HTTP client of the Key Protect API (urllib: no SDK between the test and wire)."""

    def __init__(self, url: str, instance: str, apikey: str) -> None:
        self.url, self.instance = url, instance
        form = urllib.parse.urlencode(
            {"grant_type": "urn:ibm:params:oauth:grant-type:apikey", "apikey": apikey}
        ).encode()
        with urllib.request.urlopen(urllib.request.Request(url + "/identity/token", data=form), timeout=30) as r:
            self.token = json.load(r)["access_token"]

    def call(self, method: str, path: str, body: Optional[dict] = None) -> Tuple[int, Any]:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + path, data=data, method=method, headers={
            "authorization": f"Bearer {self.token}", "bluemix-instance": self.instance,
            "content-type": "application/json", "prefer": "return=representation",
        })
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                text = r.read()
                return r.status, json.loads(text) if text else None
        except urllib.error.HTTPError as e:
            text = e.read()
            return e.code, json.loads(text) if text else None


@pytest.fixture(scope="module")
def console(tmp_path_factory) -> Dict[str, Any]:
    """A server with the database audit sink, one instance, two Manager API keys (for dual
    authorisation) and a Reader."""
    _require_browser()
    binary = find_binary()
    base = tmp_path_factory.mktemp("console")
    data_dir = base / "data"
    data_dir.mkdir()
    inst = run_admin(binary, data_dir, "instance", "create", "--name", "console")["id"]
    keys = {}
    for who, role in (("alice", "Manager"), ("bob", "Manager"), ("rita", "Reader")):
        keys[who] = run_admin(binary, data_dir, "apikey", "create", "--instance", inst,
                              "--role", role, "--name", f"console-{who}")["apikey"]
    log = base / "server.log"
    proc, url = _start_server(binary, data_dir, log, ["--audit-sink", "database"])
    try:
        yield {"url": url, "instance": inst, "keys": keys, "log": log}
    finally:
        _stop(proc)


@pytest.fixture(scope="module")
def browser(console):
    os.environ["SE_OFFLINE"] = "true"  # Selenium Manager never downloads anything
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    opts = Options()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1280,900", "--no-first-run", "--disable-extensions",
                "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--disable-default-apps", "--force-prefers-reduced-motion"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    opts.add_experimental_option("perfLoggingPrefs", {"enableNetwork": True, "enablePage": False})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    # Record CSP violations from the first script of every document on (a DevTools script is
    # not subject to the page's policy, so it sees what the page cannot hide).
    driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": """
        window.__csp = [];
        document.addEventListener('securitypolicyviolation', (e) => {
          window.__csp.push(e.violatedDirective + ' ' + e.blockedURI);
        });
    """})
    SHOTS.mkdir(parents=True, exist_ok=True)
    state = {"driver": driver, "requests": [], "logs": [], "csp": []}
    try:
        yield state
    finally:
        driver.quit()


# ---------------------------------------------------------------------------------------
# helpers

def wait(b, cond, what: str):
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait
    try:
        return WebDriverWait(b["driver"], WAIT_S, ignored_exceptions=(
            NoSuchElementException, StaleElementReferenceException)).until(lambda d: cond(d))
    except Exception as e:  # TimeoutException: say what was awaited, with the page's error
        d = b["driver"]
        err = d.execute_script("const e = document.getElementById('error'); return e && !e.hidden ? e.textContent : ''")
        raise AssertionError(f"waited for {what}; page error: {err!r}; url {d.current_url}") from e


def el(b, css: str):
    from selenium.webdriver.common.by import By
    return wait(b, lambda d: (lambda xs: xs[0] if xs and xs[0].is_displayed() else None)(
        d.find_elements(By.CSS_SELECTOR, css)), css)


def text_of(b, css: str) -> str:
    return el(b, css).text


def drain(b) -> None:
    """Moves the browser's logs and the recorded CSP violations into `b`."""
    d = b["driver"]
    for entry in d.get_log("performance"):
        msg = json.loads(entry["message"])["message"]
        if msg.get("method") == "Network.requestWillBeSent":
            req = msg["params"]["request"]
            post = req.get("postData")
            if post is None and req.get("hasPostData"):
                try:
                    post = d.execute_cdp_cmd("Network.getRequestPostData",
                                             {"requestId": msg["params"]["requestId"]})["postData"]
                except Exception:  # the request is gone from the buffer: count it unreadable
                    post = "<unreadable>"
            b["requests"].append({"url": req["url"], "method": req["method"], "body": post})
    b["logs"].extend(d.get_log("browser"))
    b["csp"].extend(d.execute_script("return window.__csp || []") or [])


def shot(b, name: str) -> None:
    b["driver"].save_screenshot(str(SHOTS / f"{name}.png"))


def ready(b, hash_: str) -> None:
    wait(b, lambda d: d.execute_script("return document.getElementById('view').dataset.ready || ''") == hash_,
         f"view {hash_}")


def sign_in(b, console, who: str, keyboard: bool = False) -> None:
    from selenium.webdriver.common.keys import Keys
    d = b["driver"]
    d.get(console["url"] + "/ui/")
    wait(b, lambda d: d.execute_script("return document.body.dataset.ready") == "true", "the console")
    if d.find_element("id", "signout").is_displayed():
        d.find_element("id", "signout").click()
    key = el(b, "#apikey")
    key.clear()
    key.send_keys(console["keys"][who])
    inst = el(b, "#instance")
    inst.clear()
    if keyboard:
        # keyboard only: type, Tab to the instance field, Enter submits the form
        key.send_keys(Keys.TAB)
        d.switch_to.active_element.send_keys(console["instance"], Keys.ENTER)
    else:
        inst.send_keys(console["instance"])
        el(b, "#signin-btn").click()
    ready(b, "#/keys")


def go(b, console, hash_: str) -> None:
    b["driver"].get(console["url"] + "/ui/" + hash_)
    ready(b, hash_)


def click_action(b, name: str) -> None:
    el(b, f'#key-actions button[data-action="{name}"]').click()


def confirm(b) -> None:
    el(b, "#confirm-ok").click()


def api(console, who: str = "alice") -> Api:
    return Api(console["url"], console["instance"], console["keys"][who])


# ---------------------------------------------------------------------------------------
# tests (in file order, one browser: each signs in as it needs)

def test_a_wrong_api_key_shows_the_refusal(console, browser):
    d = browser["driver"]
    d.get(console["url"] + "/ui/")
    el(browser, "#apikey").send_keys("not-a-real-api-key-" + secrets.token_hex(8))
    el(browser, "#instance").send_keys(console["instance"])
    shot(browser, "signin")
    el(browser, "#signin-btn").click()
    err = text_of(browser, "#signin-error")
    assert "Sign-in failed" in err and "400" in err and "API key could not be found" in err, err
    assert d.execute_script("return sessionStorage.getItem('keyward.session')") is None
    drain(browser)


def test_keys_create_rotate_and_dual_authorised_deletion(console, browser):
    d = browser["driver"]
    sign_in(browser, console, "alice", keyboard=True)
    assert "Manager" in text_of(browser, "#whoami")
    token_where = d.execute_script(
        "return [sessionStorage.getItem('keyward.session') !== null, localStorage.length]")
    assert token_where == [True, 0], token_where

    # create a root key
    name = "console-root-" + secrets.token_hex(4)
    el(browser, "#create-name").send_keys(name)
    el(browser, "#create-btn").click()
    wait(browser, lambda d: name in d.find_element("id", "key-title").text, "the new key's detail")
    key_id = el(browser, "#key-detail").get_attribute("data-key-id")
    status, body = api(console).call("GET", f"/api/v2/keys/{key_id}/metadata")
    assert status == 200 and body["resources"][0]["name"] == name and not body["resources"][0]["extractable"]

    # rotate: a second version
    click_action(browser, "rotate")
    wait(browser, lambda d: "Rotate: done" in d.find_element("id", "status").text, "rotation")
    status, body = api(console).call("GET", f"/api/v2/keys/{key_id}/versions?totalCount=true")
    assert status == 200 and body["metadata"]["totalCount"] == 2, body
    ready(browser, f"#/keys/{key_id}")
    wait(browser, lambda d: len(d.find_elements("css selector", "#key-versions tbody tr")) == 2, "two versions")

    # the list: search finds the key (server-side)
    go(browser, console, "#/keys")
    el(browser, "#keys-search").send_keys(name)
    el(browser, "#keys-apply").click()
    wait(browser, lambda d: d.find_elements("css selector", f'#keys-list a[data-key-id="{key_id}"]'), "the key in the list")
    shot(browser, "keys")

    # dual authorisation: require it, alice schedules the deletion
    go(browser, console, f"#/keys/{key_id}")
    click_action(browser, "dual-auth")
    confirm(browser)
    wait(browser, lambda d: d.find_elements("css selector", '#key-actions button[data-action="schedule"]'), "dual auth on")
    click_action(browser, "schedule")
    confirm(browser)
    wait(browser, lambda d: "authorised for deletion" in d.find_element("id", "dual-auth").text, "scheduled")
    shot(browser, "key-detail")
    # alice cannot complete it herself: the server's refusal is shown
    click_action(browser, "delete")
    confirm(browser)
    err = text_of(browser, "#error")
    assert "The server refused (409" in err, err
    assert api(console).call("GET", f"/api/v2/keys/{key_id}/metadata")[1]["resources"][0]["state"] == 1

    # sign out clears the token; bob signs in and completes the deletion
    el(browser, "#signout").click()
    el(browser, "#apikey")
    assert d.execute_script("return sessionStorage.getItem('keyward.session')") is None
    sign_in(browser, console, "bob")
    go(browser, console, f"#/keys/{key_id}")
    click_action(browser, "delete")
    confirm(browser)
    wait(browser, lambda d: "Delete: done" in d.find_element("id", "status").text, "bob's deletion")
    status, body = api(console, "bob").call("GET", f"/api/v2/keys/{key_id}/metadata")
    assert status == 200 and body["resources"][0]["state"] == 5 and body["resources"][0]["deleted"], body
    console["deleted_key"] = key_id
    drain(browser)


def test_secure_import_wizard_sends_only_ciphertext(console, browser):
    d = browser["driver"]
    sign_in(browser, console, "alice")
    go(browser, console, "#/import")
    drain(browser)  # only the requests from here on are the import's
    before = len(browser["requests"])
    material = secrets.token_bytes(32)
    hexed = material.hex()
    el(browser, "#imp-create-token").click()
    wait(browser, lambda d: d.find_elements("id", "imp-remaining") and d.find_element("id", "imp-remaining").text == "0",
         "the token retrieved (1 retrieval allowed, 0 left)")
    assert text_of(browser, "#imp-expires").endswith("Z")
    el(browser, "#imp-material").send_keys(hexed)
    name = "console-imported-" + secrets.token_hex(4)
    el(browser, "#imp-name").send_keys(name)
    el(browser, "#imp-run").click()
    link = el(browser, "#imp-key-link")
    key_id = link.find_element("xpath", "..").get_attribute("data-key-id")
    steps = text_of(browser, "#imp-steps")
    assert "RSA-OAEP" in steps and "AES-GCM" in steps and "only the ciphertexts" in steps, steps
    assert el(browser, "#imp-material").get_attribute("value") == ""
    shot(browser, "import")

    # the imported key works through the API
    kw = api(console)
    status, meta = kw.call("GET", f"/api/v2/keys/{key_id}/metadata")
    assert status == 200 and meta["resources"][0]["imported"] is True and meta["resources"][0]["name"] == name
    dek = secrets.token_bytes(32)
    status, wrapped = kw.call("POST", f"/api/v2/keys/{key_id}/actions/wrap",
                              {"plaintext": base64.b64encode(dek).decode(), "aad": ["console"]})
    assert status == 200, wrapped
    status, plain = kw.call("POST", f"/api/v2/keys/{key_id}/actions/unwrap",
                            {"ciphertext": wrapped["ciphertext"], "aad": ["console"]})
    assert status == 200 and base64.b64decode(plain["plaintext"]) == dek, plain

    # no request body of the browser held the material, in any encoding
    drain(browser)
    sent = browser["requests"][before:]
    imports = [r for r in sent if r["method"] == "POST" and r["url"].endswith("/api/v2/keys")]
    assert len(imports) == 1 and imports[0]["body"] and "encryptedNonce" in imports[0]["body"], sent
    forms = {hexed, hexed.upper(), base64.b64encode(material).decode(),
             base64.urlsafe_b64encode(material).decode().rstrip("="), material.decode("latin-1")}
    for r in sent:
        body = r["body"] or ""
        assert body != "<unreadable>", r
        for f in forms:
            assert f not in body, f"the key material was sent in the clear to {r['url']}"
    console["imported_key"] = key_id

    # the key detail shows Keyward's key usage: the API's wrap and unwrap just now
    go(browser, console, f"#/keys/{key_id}")
    wait(browser, lambda d: d.find_elements("id", "key-usage") and "unwrap" in d.find_element("id", "key-usage").text,
         "the last unwrap shown")
    usage = text_of(browser, "#key-usage")
    assert "wrap" in usage and " by " in usage, usage


def test_audit_view_filters_records(console, browser):
    sign_in(browser, console, "alice")
    go(browser, console, "#/audit")
    wait(browser, lambda d: len(d.find_elements("css selector", "#audit-table tbody tr")) > 0, "audit rows")
    el(browser, "#audit-action").send_keys("kms.secrets.delete")
    el(browser, "#audit-key").send_keys(console["deleted_key"])
    el(browser, "#audit-apply").click()

    def rows(d):
        trs = d.find_elements("css selector", "#audit-table tbody tr")
        texts = [t.text for t in trs]
        return texts if texts and all("kms.secrets.delete" in t for t in texts) else None
    texts = wait(browser, rows, "the deletion's records")
    # alice's refused attempt and bob's success
    assert any("success" in t for t in texts) and any("failure" in t for t in texts), texts
    shot(browser, "audit")
    # a bad filter is refused with the server's reason
    from selenium.webdriver.support.ui import Select
    el(browser, "#audit-key").clear()
    el(browser, "#audit-key").send_keys("not-a-uuid")
    Select(el(browser, "#audit-outcome")).select_by_value("success")
    el(browser, "#audit-apply").click()
    err = text_of(browser, "#error")
    assert "INVALID_QUERY_PARAM_ERR" in err and "keyId" in err, err


def test_audit_route_needs_manager(console):
    status, body = api(console, "rita").call("GET", "/api/v2/x-keyward/audit")
    assert status == 403, body
    status, body = api(console).call("GET", "/api/v2/x-keyward/audit?limit=1")
    assert status == 200 and len(body["resources"]) == 1, body


def test_health_rings_policies_and_layouts(console, browser):
    d = browser["driver"]
    sign_in(browser, console, "alice")
    go(browser, console, "#/health")
    assert text_of(browser, "#health-live") == "ok"
    assert text_of(browser, "#health-sealed") == "unsealed"
    assert "keypairs ready" in text_of(browser, "#health-pool")
    el(browser, "#health-refresh").click()
    wait(browser, lambda d: "requests/s" in d.find_element("id", "health-rate").text, "a request rate")
    shot(browser, "health")
    go(browser, console, "#/rings")
    ring = "ring" + secrets.token_hex(3)
    el(browser, "#ring-id").send_keys(ring)
    el(browser, "#ring-create").click()
    wait(browser, lambda d: ring in d.find_element("id", "rings-table").text, "the new key ring")
    go(browser, console, "#/policies")
    el(browser, "#policies-table")

    # every control has a label; the dark theme; 390 px without horizontal scrolling
    for hash_ in ("#/keys", "#/import", "#/audit"):
        go(browser, console, hash_)
        unlabelled = d.execute_script("""
            return [...document.querySelectorAll('input, select, textarea')]
              .filter((e) => e.type !== 'hidden' && !(e.labels && e.labels.length) && !e.getAttribute('aria-label'))
              .map((e) => e.id || e.outerHTML);""")
        assert unlabelled == [], (hash_, unlabelled)
    go(browser, console, "#/keys")
    el(browser, "#theme").click()
    assert d.execute_script("return document.documentElement.dataset.theme") == "dark"
    assert el(browser, "#theme").get_attribute("aria-pressed") == "true"
    shot(browser, "keys-dark")
    d.set_window_size(390, 844)
    go(browser, console, "#/keys")
    overflow = d.execute_script("return document.documentElement.scrollWidth - document.documentElement.clientWidth")
    assert overflow <= 0, f"the page scrolls sideways by {overflow} px at 390 px"
    shot(browser, "keys-390px")
    el(browser, "#theme").click()
    d.set_window_size(1280, 900)
    drain(browser)


def test_no_csp_violation_and_no_other_origin(console, browser):
    """Runs last: everything the browser did in this module."""
    drain(browser)
    assert browser["requests"], "the performance log recorded no request: the checks would be empty"
    assert browser["csp"] == [], browser["csp"]
    csp_logs = [e["message"] for e in browser["logs"] if "Content Security Policy" in e["message"]
                or "Content-Security-Policy" in e["message"]]
    assert csp_logs == [], csp_logs
    foreign = [r["url"] for r in browser["requests"]
               if not r["url"].startswith(console["url"] + "/") and not r["url"].startswith("data:")]
    assert foreign == [], foreign
    docs = REPO_ROOT / "docs" / "console"
    if os.environ.get("KEYWARD_UPDATE_SCREENSHOTS") == "1":
        docs.mkdir(parents=True, exist_ok=True)
        for p in SHOTS.glob("*.png"):
            shutil.copy(p, docs / p.name)
