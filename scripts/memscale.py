#!/usr/bin/env python3
"""Server memory with many keys: RSS of a release `keyward serve` (SQLite) while it holds
--keys root keys and wraps once with each of --distinct of them.

Usage (from the repository root, after `cargo build --release -p keyward`):
  scripts/memscale.py --keys 200000 --distinct 200000 [--keep DIR] [--reuse DIR]
      [--serve-arg=--cache-entries=20000 ...] [--env MALLOC_ARENA_MAX=2 ...]

--keep DIR fills DIR (data dir + key ids) and keeps it; --reuse DIR starts on such a DIR
(copied to a scratch dir first, so the original stays as filled) and skips the fill.
Prints one JSON object: RSS (VmRSS, KiB) after start, after the fill, along the wraps, at the
end and after a pause, with the server's cache metrics. Traffic goes to 127.0.0.1 only.
"""

import argparse
import base64
import http.client
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

KEY_CT = "application/vnd.ibm.kms.key+json"
WRAP_CT = "application/vnd.ibm.kms.key_action_wrap+json"


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return None


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def admin(keyward, data_dir, *args):
    out = subprocess.run(
        [keyward, "admin", "--data-dir", data_dir, "--output", "json", *args],
        check=True,
        capture_output=True,
        stdin=subprocess.DEVNULL,
    )
    return json.loads(out.stdout)


class Client:
    def __init__(self, port, bearer, instance):
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        self.headers = {"authorization": bearer, "bluemix-instance": instance}

    def post(self, path, ct, body):
        h = dict(self.headers)
        h["content-type"] = ct
        self.conn.request("POST", path, body=json.dumps(body), headers=h)
        r = self.conn.getresponse()
        data = r.read()
        if r.status >= 300:
            raise RuntimeError(f"{path}: {r.status} {data[:200]!r}")
        return json.loads(data) if data else None

    def get(self, path):
        self.conn.request("GET", path, headers=self.headers)
        r = self.conn.getresponse()
        return r.status, r.read()


def parallel(n_threads, items, work):
    """Runs work(client_index, item) over items on n_threads threads; returns errors."""
    lock = threading.Lock()
    it = iter(items)
    errors = []

    def run(i):
        while True:
            with lock:
                try:
                    item = next(it)
                except StopIteration:
                    return
            try:
                work(i, item)
            except Exception as e:  # noqa: BLE001 - counted and reported
                with lock:
                    errors.append(str(e))
                    if len(errors) > 20:
                        return

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return errors


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--keyward", default="target/release/keyward")
    ap.add_argument("--keys", type=int, default=200_000)
    ap.add_argument("--distinct", type=int, default=200_000)
    ap.add_argument("--connections", type=int, default=16)
    ap.add_argument("--pause", type=float, default=30.0)
    ap.add_argument("--keep")
    ap.add_argument("--reuse")
    ap.add_argument("--serve-arg", action="append", default=[])
    ap.add_argument("--env", action="append", default=[])
    a = ap.parse_args()

    keyward = os.path.abspath(a.keyward)
    scratch = tempfile.mkdtemp(prefix="memscale-")
    root = a.keep or scratch
    if a.reuse:
        root = os.path.join(scratch, "copy")
        shutil.copytree(a.reuse, root)
    data_dir = os.path.join(root, "data")
    os.makedirs(data_dir, exist_ok=True)
    port = free_port()
    env = dict(os.environ)
    for kv in a.env:
        k, v = kv.split("=", 1)
        env[k] = v
    log = open(os.path.join(scratch, "serve.log"), "w")
    serve = subprocess.Popen(
        [keyward, "serve", "--listen", f"127.0.0.1:{port}", "--data-dir", data_dir,
         "--rate-limit-key-create=0", *a.serve_arg],
        stdout=log, stderr=log, stdin=subprocess.DEVNULL, env=env,
    )
    out = {"serve_args": a.serve_arg, "env": a.env, "keys": a.keys, "distinct": a.distinct}
    try:
        for _ in range(600):
            try:
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                c.request("GET", "/healthz")
                if c.getresponse().status == 200:
                    break
            except OSError:
                pass
            if serve.poll() is not None:
                raise RuntimeError("serve exited: " + open(log.name).read()[-2000:])
            time.sleep(0.1)
        ids_file = os.path.join(root, "key_ids.txt")
        setup_file = os.path.join(root, "setup.json")
        if a.reuse:
            setup = json.load(open(setup_file))
            ids = open(ids_file).read().split()
        else:
            inst = admin(keyward, data_dir, "instance", "create", "--name", "memscale")["id"]
            apikey = admin(keyward, data_dir, "apikey", "create", "--instance", inst,
                           "--role", "Manager", "--name", "memscale")["apikey"]
            setup = {"instance": inst, "apikey": apikey}
            json.dump(setup, open(setup_file, "w"))
            ids = None
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        c.request("POST", "/identity/token",
                  body=f"grant_type=urn%3Aibm%3Aparams%3Aoauth%3Agrant-type%3Aapikey&apikey={setup['apikey']}",
                  headers={"content-type": "application/x-www-form-urlencoded",
                           "accept": "application/json"})
        bearer = "Bearer " + json.loads(c.getresponse().read())["access_token"]
        clients = [Client(port, bearer, setup["instance"]) for _ in range(a.connections)]
        out["rss_kib_start"] = rss_kib(serve.pid)

        if ids is None:
            ids = [None] * a.keys
            t0 = time.time()

            def create(i, n):
                r = clients[i].post("/api/v2/keys", KEY_CT, {
                    "metadata": {"collectionType": KEY_CT, "collectionTotal": 1},
                    "resources": [{"type": KEY_CT, "name": f"k{n}", "extractable": False}],
                })
                ids[n] = r["resources"][0]["id"]

            errs = parallel(a.connections, range(a.keys), create)
            if errs:
                raise RuntimeError(f"creation errors: {errs[:3]}")
            out["fill_s"] = round(time.time() - t0, 1)
            with open(ids_file, "w") as f:
                f.write("\n".join(ids))
        out["rss_kib_filled"] = rss_kib(serve.pid)

        samples = []
        stop = threading.Event()

        def sampler():
            t0 = time.time()
            while not stop.wait(5):
                samples.append([round(time.time() - t0), rss_kib(serve.pid)])

        st = threading.Thread(target=sampler)
        st.start()
        dek = base64.b64encode(os.urandom(32)).decode()
        t0 = time.time()

        def wrap(i, n):
            clients[i].post(f"/api/v2/keys/{ids[n]}/actions/wrap", WRAP_CT, {"plaintext": dek})

        errs = parallel(a.connections, range(min(a.distinct, len(ids))), wrap)
        out["wrap_s"] = round(time.time() - t0, 1)
        stop.set()
        st.join()
        if errs:
            raise RuntimeError(f"wrap errors: {errs[:3]}")
        out["rss_kib_after_wraps"] = rss_kib(serve.pid)
        out["rss_samples"] = samples
        out["rss_kib_peak_hwm"] = int(
            [l for l in open(f"/proc/{serve.pid}/status") if l.startswith("VmHWM:")][0].split()[1])
        time.sleep(a.pause)
        out["rss_kib_after_pause"] = rss_kib(serve.pid)
        status, body = clients[0].get("/metrics")
        out["metrics"] = [l for l in body.decode().splitlines()
                          if l.startswith("keyward_cache_") or l.startswith("keyward_memory")
                          or l.startswith("keyward_sqlite")]
    finally:
        serve.terminate()
        try:
            serve.wait(10)
        except subprocess.TimeoutExpired:
            serve.kill()
        shutil.rmtree(scratch, ignore_errors=True)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    sys.exit(main())
