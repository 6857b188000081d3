#!/usr/bin/env python3
"""Runs docs/WALKTHROUGH.md's commands against a running platform and puts
what they answered into the document. See walkthrough.sh."""

import argparse
import difflib
import os
import re
import select
import subprocess
import sys
import tempfile
import time

# The addresses and database the document's commands name.
DOC_BASE = "http://127.0.0.1:3000"
DOC_ADMIN = "http://127.0.0.1:9400"
DOC_DB = "bitvelocity"

# A line with this comment right before a ```sh fence: the block is shown,
# not run (starting the platform, dropping its database).
NOT_RUN = "<!-- walkthrough: not run -->"

# The longest a block may run.
BLOCK_TIMEOUT = 60

FENCE = re.compile(r"^```(\w*)\s*$")


def blocks(lines):
    """(start, end, lang) of every fenced block: lines[start] is the opening
    fence, lines[end] the closing one."""
    out = []
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if m and m.group(1):
            j = i + 1
            while j < len(lines) and lines[j].rstrip() != "```":
                j += 1
            out.append((i, j, m.group(1)))
            i = j + 1
        else:
            i += 1
    return out


def steps(lines):
    """(command block, its output block or None, run?) pairs: an output block
    (```text or ```json) belongs to the ```sh block right before it, with
    nothing but blank lines between them."""
    found = blocks(lines)
    out = []
    for n, (start, end, lang) in enumerate(found):
        if lang != "sh":
            continue
        output = None
        if n + 1 < len(found):
            o_start, o_end, o_lang = found[n + 1]
            between = lines[end + 1 : o_start]
            if o_lang in ("text", "json") and all(not l.strip() for l in between):
                output = (o_start, o_end)
        before = [l for l in lines[:start] if l.strip()]
        run = not (before and before[-1].strip() == NOT_RUN)
        out.append(((start, end), output, run))
    return out


class Shell:
    """One bash for the whole walkthrough, so that variables carry over."""

    def __init__(self, cwd, env):
        self.dir = tempfile.mkdtemp(prefix="bv-walkthrough-")
        self.proc = subprocess.Popen(
            ["bash", "--norc", "--noprofile"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            env=env,
            text=True,
        )
        self.n = 0

    def run(self, script):
        self.n += 1
        path = os.path.join(self.dir, f"{self.n}.sh")
        out = os.path.join(self.dir, f"{self.n}.out")
        with open(path, "w") as f:
            f.write(script)
        marker = f"__walkthrough_block_{self.n}_done__"
        self.proc.stdin.write(f"source {path} >{out} 2>&1 </dev/null; echo {marker}\n")
        self.proc.stdin.flush()
        deadline = time.monotonic() + BLOCK_TIMEOUT
        while True:
            left = deadline - time.monotonic()
            ready, _, _ = select.select([self.proc.stdout], [], [], max(left, 0))
            if not ready:
                self.proc.kill()
                with open(out) as f:
                    printed = f.read()
                raise SystemExit(
                    f"walkthrough: a block still ran after {BLOCK_TIMEOUT} s:\n{script}\n"
                    f"it had printed:\n{printed}"
                )
            line = self.proc.stdout.readline()
            if not line:
                raise SystemExit(f"walkthrough: the shell ended during block {self.n}:\n{script}")
            if line.strip() == marker:
                break
        with open(out) as f:
            return f.read()

    def close(self):
        self.proc.stdin.close()
        self.proc.wait()


def localize(script, base, admin, db):
    """The document's command, aimed at this run's platform."""
    return (
        script.replace(DOC_BASE, base)
        .replace(DOC_BASE.replace("http://", "ws://"), base.replace("http://", "ws://"))
        .replace(DOC_ADMIN, admin)
        .replace(f"-d {DOC_DB} ", f"-d {db} ")
    )


def positions(listing):
    """The POSITION column of a `bv events list`, or None when it has none."""
    rows = [l.split() for l in listing.splitlines()]
    if not rows or rows[0][:3] != ["SUBSCRIPTION", "COMPONENT", "POSITION"]:
        return None
    return [r[2] for r in rows[1:] if len(r) > 2]


def settled(shell, script, db):
    """What `script` prints; for a `bv events list`, once every subscription
    has moved past the last event in the outbox. A subscription wakes only for
    the event types it takes and moves past the others at its next poll, so
    right after a checkout every one may still stand behind the last event:
    the document shows the log at rest."""
    printed = shell.run(script)
    if "events list" not in script:
        return printed
    last_event = (
        f"psql -h 127.0.0.1 -U postgres -d {db} -Atc "
        "'SELECT coalesce(max(seq), 0) FROM bv_events.outbox'\n"
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        seen = positions(printed)
        if seen is None or set(seen) == {shell.run(last_event).strip()}:
            break
        time.sleep(0.2)
        printed = shell.run(script)
    return printed


def generate(lines, base, admin, db, cwd, env):
    """The document with every run block's output replaced by what it printed."""
    shell = Shell(cwd, env)
    shell.run("set -o pipefail\n")
    out = list(lines)
    # Replace from the end so that earlier line numbers stay right.
    results = []
    for (c_start, c_end), output, run in steps(lines):
        if not run:
            continue
        script = localize("".join(lines[c_start + 1 : c_end]), base, admin, db)
        printed = settled(shell, script, db).replace(base, DOC_BASE).replace(admin, DOC_ADMIN)
        if output is None:
            if printed.strip():
                raise SystemExit(
                    f"walkthrough: line {c_start + 1}: the block printed something, "
                    f"but the document has no output block after it:\n{printed}"
                )
            continue
        # Blank lines at the end (psql ends its tables with one) are not shown.
        printed = printed.rstrip("\n") + "\n" if printed.strip() else ""
        results.append((output, printed))
    shell.close()
    for (o_start, o_end), printed in reversed(results):
        out[o_start + 1 : o_end] = printed.splitlines(keepends=True)
    return out


# What differs from one run to the next, and what it stands for.
VOLATILE = [
    (re.compile(r"eyJ[\w-]+\.[\w-]+\.[\w-]+"), "<jwt>"),
    (re.compile(r'("refreshToken": ?")[\w-]+(")'), r"\1<token>\2"),
    (re.compile(r'("kid": ?")[^"]*(")'), r"\1<kid>\2"),
    (re.compile(r'("(?:exp|iat|nbf)": ?)\d+'), r"\1<n>"),
    (re.compile(r'("authorizationCode": ?")[^"]*(")'), r"\1<code>\2"),
    # Ids, except the demo catalogue's fixed ones.
    (re.compile(r"\b(?!5eed0000-)[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b"), "<uuid>"),
    (re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:\d\d)"), "<time>"),
    (re.compile(r"^(date: ).*$", re.M), r"\1<date>"),
    # A listing's ETag is a hash of the page, timestamps included.
    (re.compile(r'^(etag: ")[0-9a-f]{16}(")$', re.M), r"\1<hash>\2"),
    # Counts that depend on how long the platform has been up, or on
    # whether a product lookup fell within the cache's 30 s.
    (re.compile(r"^(bv_cron_messages_total\{.*\}) \d+$", re.M), r"\1 <n>"),
    (re.compile(r"^(cart_product_cache_\w+) [\d.]+$", re.M), r"\1 <n>"),
    # What is left of a rate limit depends on what else this address sent.
    (re.compile(r'^(ratelimit: "[^"]*";r=)\d+(;t=)\d+$', re.M), r"\1<n>\2<n>"),
]


def normalized(lines):
    text = "".join(lines)
    for pattern, replacement in VOLATILE:
        text = pattern.sub(replacement, text)
    return [l.rstrip() + "\n" for l in text.splitlines()]


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--write", action="store_true", help="rewrite the document in place")
    p.add_argument("--check", action="store_true",
                   help="compare with the document (ids, tokens and times normalized); exit 1 on a difference")
    p.add_argument("--doc", default="docs/WALKTHROUGH.md")
    a = p.parse_args()
    base = os.environ.get("WALKTHROUGH_BASE", DOC_BASE).rstrip("/")
    admin = os.environ.get("WALKTHROUGH_ADMIN", DOC_ADMIN).rstrip("/")
    db = os.environ.get("WALKTHROUGH_DB", DOC_DB)
    with open(a.doc) as f:
        lines = f.readlines()
    fresh = generate(lines, base, admin, db, os.getcwd(), dict(os.environ))
    if a.check:
        diff = list(
            difflib.unified_diff(
                normalized(lines), normalized(fresh), a.doc, "this run", n=2
            )
        )
        if diff:
            sys.stdout.writelines(diff)
            print(
                f"\n{a.doc} does not say what the platform answers: "
                "regenerate it with infra/scripts/walkthrough.sh --write",
                file=sys.stderr,
            )
            sys.exit(1)
        print(f"{a.doc}: every transcript matches this run", file=sys.stderr)
    elif a.write:
        with open(a.doc, "w") as f:
            f.writelines(fresh)
    else:
        sys.stdout.writelines(fresh)


if __name__ == "__main__":
    main()
