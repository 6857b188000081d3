#!/usr/bin/env python3
"""Runs the walkthrough (docs/WALKTHROUGH.md: accounts, catalogue, stock,
cart, checkout, replay, fulfilment, a declined card, cancellation) against
`bv up` on spin.toml and against real Spin (`spin up`) on the same
components, each with a database of its own, and compares what every step
answered. See spin-side-by-side.sh."""

import argparse
import datetime
import difflib
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import walkthrough  # noqa: E402

# The database spin.toml names where no variable reaches (the sweeper's
# `environment`).
SHIPPED_DB_URL = "postgres://postgres@127.0.0.1:5432/bitvelocity?sslmode=disable"

# Trigger types `spin up` has built in (others need a plugin or do not exist).
SPIN_TRIGGERS = {"http", "redis"}
# Components that import bv's own interfaces (bitvelocity:smtp): Spin cannot
# link them, and it refuses the whole application when one does not link.
BV_ONLY_COMPONENTS = {"notifications"}

HEADER = re.compile(r"^\[\[?([^\]]+)\]\]?\s*$")


def spin_manifest(text, base_dir):
    """spin.toml for `spin up`: only the trigger types Spin has built in,
    only the components they name, sources as absolute paths. Everything
    else is the shipped manifest, byte for byte."""
    sections = []  # (header name or None, lines)
    current = (None, [])
    for line in text.splitlines(keepends=True):
        m = HEADER.match(line.strip())
        if m:
            sections.append(current)
            current = (m.group(1).strip(), [line])
        else:
            current[1].append(line)
    sections.append(current)

    def trigger_kind(name):
        parts = name.split(".")
        if parts[0] == "trigger":
            return parts[1]
        if parts[:2] == ["application", "trigger"]:
            return parts[2]
        return None

    def named_component(lines):
        for line in lines:
            m = re.match(r'\s*component\s*=\s*"([^"]+)"', line)
            if m:
                return m.group(1)
        return None

    kept_components = set()
    for name, lines in sections:
        if name and name.startswith("trigger.") and trigger_kind(name) in SPIN_TRIGGERS:
            for line in lines:
                m = re.match(r'\s*component\s*=\s*"([^"]+)"', line)
                if m and m.group(1) not in BV_ONLY_COMPONENTS:
                    kept_components.add(m.group(1))
    out = []
    for name, lines in sections:
        if name is None:
            out.extend(lines)
            continue
        kind = trigger_kind(name)
        if kind is not None and kind not in SPIN_TRIGGERS:
            continue
        if kind is not None and named_component(lines) in BV_ONLY_COMPONENTS:
            continue
        if name.startswith("component."):
            component = name.split(".")[1]
            if component not in kept_components:
                continue
        out.extend(lines)
    return absolute_sources("".join(out), base_dir), sorted(kept_components)


def absolute_sources(manifest, base_dir):
    """`manifest` with every relative component source made absolute."""
    return re.sub(
        r'^(source\s*=\s*")(?!/)([^"]+)"',
        lambda m: f'{m.group(1)}{os.path.join(base_dir, m.group(2))}"',
        manifest,
        flags=re.M,
    )


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def dev_keys():
    """A throwaway Ed25519 key for the auth component, as up.sh makes one."""
    import base64

    def b64url(b):
        return base64.urlsafe_b64encode(b).rstrip(b"=").decode()

    with tempfile.TemporaryDirectory() as d:
        pem = os.path.join(d, "key.pem")
        subprocess.run(["openssl", "genpkey", "-algorithm", "ed25519", "-out", pem], check=True)
        seed = subprocess.run(["openssl", "pkey", "-in", pem, "-outform", "DER"],
                              check=True, capture_output=True).stdout[-32:]
        x = subprocess.run(["openssl", "pkey", "-in", pem, "-pubout", "-outform", "DER"],
                           check=True, capture_output=True).stdout[-32:]
    kid = "side-by-side"
    signing = f'[{{"kid":"{kid}","seed":"{b64url(seed)}"}}]'
    public = ('{"keys":[{"kty":"OKP","crv":"Ed25519","kid":"%s","x":"%s","alg":"EdDSA","use":"sig"}]}'
              % (kid, b64url(x)))
    return signing, public


def fresh_database(name):
    psql = ["psql", "-h", "127.0.0.1", "-U", "postgres", "-d", "postgres", "-qc"]
    subprocess.run(psql + [f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'], check=True)
    subprocess.run(psql + [f'CREATE DATABASE "{name}"'], check=True)


def wait_ready(base, proc, log, what):
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            with open(log) as f:
                raise SystemExit(f"side-by-side: {what} exited ({proc.returncode}):\n{f.read()}")
        try:
            with urllib.request.urlopen(f"{base}/hello/", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.3)
    raise SystemExit(f"side-by-side: {what} did not answer {base}/hello/ within 180 s")


def stop(proc):
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=40)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def outputs(doc_lines, generated):
    """(command, normalized output) of every step that runs and shows an
    output; the generated document has the same blocks in the same order."""
    commands = [
        "".join(doc_lines[c_start + 1 : c_end]).strip()
        for (c_start, c_end), output, run in walkthrough.steps(doc_lines)
        if run and output is not None
    ]
    texts = [
        "".join(walkthrough.normalized(generated[start + 1 : end]))
        for _, (start, end), run in (
            s for s in walkthrough.steps(generated) if s[2] and s[1] is not None
        )
    ]
    return list(zip(commands, texts))


def version(binary):
    try:
        return subprocess.run([binary, "--version"], capture_output=True, text=True,
                              timeout=20).stdout.strip()
    except OSError as e:
        return f"unknown ({e})"


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("spin", nargs="?", help="path of the spin binary")
    p.add_argument("--print-manifest", action="store_true",
                   help="only print spin.toml as `spin up` can run it (HTTP and Redis triggers)")
    p.add_argument("--bv", default=os.environ.get("BV", "bv"), help="path of the bv binary")
    p.add_argument("--record", help="write the comparison as Markdown to this file")
    p.add_argument("--spin-note", default="",
                   help="said of the spin binary in the record (e.g. the commit it was built from)")
    a = p.parse_args()
    if a.print_manifest:
        with open("spin.toml") as f:
            manifest, _ = spin_manifest(f.read(), os.getcwd())
        sys.stdout.write(manifest)
        return
    if not a.spin:
        p.error("the path of the spin binary is required")
    spin = shutil.which(a.spin) or a.spin
    if not os.access(spin, os.X_OK):
        raise SystemExit(f"side-by-side: {a.spin} is not an executable spin binary")
    repo = os.getcwd()
    with open("spin.toml") as f:
        shipped = f.read()
    if SHIPPED_DB_URL not in shipped:
        raise SystemExit(f"side-by-side: spin.toml no longer names {SHIPPED_DB_URL}; update SHIPPED_DB_URL")
    work = tempfile.mkdtemp(prefix="bv-side-by-side-")
    _, components = spin_manifest(shipped, repo)
    print(f"==> Spin runs the HTTP components: {', '.join(components)}", file=sys.stderr)

    signing, public = dev_keys()
    common = dict(os.environ)
    common.update({
        "SPIN_VARIABLE_AUTH_SIGNING_KEYS": signing,
        "SPIN_VARIABLE_AUTH_PUBLIC_KEYS": public,
        "SPIN_VARIABLE_AUTH_ADMIN_EMAILS": "admin@shop.example",
        "RUST_LOG": "warn",
    })
    with open("docs/WALKTHROUGH.md") as f:
        doc = f.readlines()

    results = {}
    for side in ("bv", "spin"):
        db = f"bv_side_by_side_{side}"
        fresh_database(db)
        env = dict(common)
        db_url = f"postgres://postgres@127.0.0.1:5432/{db}?sslmode=disable"
        env["SPIN_VARIABLE_DB_URL"] = db_url
        # The sweeper's cron half reads its database from `environment`
        # (see spin.toml), which no variable reaches: point it at this
        # side's database too.
        text = shipped.replace(SHIPPED_DB_URL, db_url)
        app_dir = os.path.join(work, f"{side}-app")
        os.makedirs(app_dir)
        if side == "spin":
            text, _ = spin_manifest(text, repo)
        else:
            text = absolute_sources(text, repo)
        with open(os.path.join(app_dir, "spin.toml"), "w") as f:
            f.write(text)
        port, admin_port = free_port(), free_port()
        base = f"http://127.0.0.1:{port}"
        log = os.path.join(work, f"{side}.log")
        if side == "bv":
            cmd = [a.bv, "up", "--from", os.path.join(app_dir, "spin.toml"),
                   "--listen", f"127.0.0.1:{port}", "--admin-listen", f"127.0.0.1:{admin_port}"]
        else:
            cmd = [spin, "up", "--from", os.path.join(app_dir, "spin.toml"),
                   "--listen", f"127.0.0.1:{port}"]
        print(f"==> {side}: {' '.join(cmd)}", file=sys.stderr)
        with open(log, "w") as out:
            proc = subprocess.Popen(cmd, cwd=app_dir, env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            wait_ready(base, proc, log, side)
            print(f"==> {side}: running the walkthrough", file=sys.stderr)
            generated = walkthrough.generate(
                doc, base, f"http://127.0.0.1:{admin_port}", db, repo, env)
        finally:
            stop(proc)
        results[side] = outputs(doc, generated)

    rows, diffs = [], []
    for n, ((command, bv_out), (_, spin_out)) in enumerate(
            zip(results["bv"], results["spin"]), start=1):
        same = bv_out == spin_out
        first = command.splitlines()[0]
        rows.append((n, first, same))
        if not same:
            diff = difflib.unified_diff(
                bv_out.splitlines(keepends=True), spin_out.splitlines(keepends=True),
                "bv", "spin", n=1)
            diffs.append((n, command, "".join(diff)))

    same = sum(1 for r in rows if r[2])
    lines = [
        "# Side by side: `bv` and Spin on the walkthrough\n\n",
        "Generated by `bash infra/scripts/spin-side-by-side.sh <spin>`: every step of\n",
        "[WALKTHROUGH.md](WALKTHROUGH.md) run against `bv up` on `spin.toml` and against\n",
        "`spin up` on the same components (the HTTP triggers; Spin has no Postgres\n",
        "or cron trigger built in), each on a fresh database, outputs normalized as\n",
        "the walkthrough check does (ids, tokens, times). [SPIN.md](SPIN.md) explains\n",
        "each difference.\n\n",
        f"- date: {datetime.date.today().isoformat()}\n",
        f"- spin: `{version(spin)}`{(' ' + a.spin_note) if a.spin_note else ''}\n",
        f"- bv: `{version(a.bv)}`\n",
        f"- components under Spin: {', '.join(components)}\n",
        f"- steps answered the same: **{same} of {len(rows)}**\n\n",
        "| step | command | same |\n| ---: | --- | --- |\n",
    ]
    for n, first, ok in rows:
        cmd = first.replace("|", "\\|").replace("http://127.0.0.1:3000", "")
        if len(cmd) > 90:
            cmd = cmd[:87] + "..."
        lines.append(f"| {n} | `{cmd}` | {'yes' if ok else '**no**'} |\n")
    for n, command, diff in diffs:
        lines.append(f"\n## Step {n}\n\n```sh\n{command}\n```\n\n```diff\n{diff.rstrip()}\n```\n")
    report = "".join(lines)
    if a.record:
        with open(a.record, "w") as f:
            f.write(report)
        print(f"==> written to {a.record}", file=sys.stderr)
    else:
        sys.stdout.write(report)
    print(f"==> {same} of {len(rows)} steps answered the same", file=sys.stderr)
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
