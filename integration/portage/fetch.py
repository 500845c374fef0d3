#!/usr/bin/env python3
# fetch.py: run Portage's own fetch code (portage.package.ebuild.fetch.fetch, what emerge
# calls) once, outside any Gentoo system. Run it with the venv's python (see setup.sh):
#
#   VENV/bin/python integration/portage/fetch.py --distdir DIR [--ro-distdir DIR]...
#       --mirror http://127.0.0.1:PORT --file NAME=SOURCE_PATH [--file NAME:SIZE:BLAKE2B:SHA512]...
#       [--features=FEATURES]
#
# Each file's URI is MIRROR/NAME. Digests (size, BLAKE2B, SHA512, as in a Manifest) are computed
# from SOURCE_PATH, or given literally. Paths should be absolute (Portage ignores a relative
# PORTAGE_RO_DISTDIRS entry). Exit 0 when fetch() succeeded, 1 otherwise. All of Portage's and
# the fetcher's output goes to stderr; stdout stays empty.
#
# Settings (why):
# - PORTAGE_USERNAME=PORTAGE_GRPNAME=root: the same behaviour whether or not the machine has a
#   `portage` user (no "user or group missing" warning; files get group root, not portage).
# - FEATURES=-userfetch: with it, root first spawns a bash that creates/removes
#   DISTDIR/.__portage_test_write__ (and would run the fetcher as PORTAGE_USERNAME if that were
#   a real non-root user). distlocks stays on (as in make.globals, like emerge):
#   DISTDIR/.NAME.portage_lockfile and a hardlink of it, ..NAME.portage_lockfile.hardlock-HOST-PID,
#   exist briefly. --features is appended to FEATURES: write
#   --features=-distlocks (with "=", since argparse reads a bare "-distlocks" as an option).
# - GENTOO_MIRRORS="": make.globals says distfiles.gentoo.org; any http mirror there would also
#   make fetch GET MIRROR/distfiles/layout.conf and write .layout.conf.HOST and
#   .mirror-cache.json into DISTDIR.
# - FETCHCOMMAND/RESUMECOMMAND: make.globals' wget ones; curl's if wget is missing.
# - config_root is an empty temporary directory and PORTAGE_REPOSITORIES is empty: no
#   /etc/portage, make.conf, profile or repository is read; only the venv's make.globals.
import argparse
import hashlib
import os
import shlex
import shutil
import sys
import tempfile

ap = argparse.ArgumentParser()
ap.add_argument("--distdir", required=True)
ap.add_argument("--ro-distdir", action="append", default=[])
ap.add_argument("--mirror", required=True)
ap.add_argument("--file", action="append", default=[], required=True)
ap.add_argument("--features", default="")
args = ap.parse_args()

os.dup2(2, 1)  # the fetcher is spawned with fds 1 and 2 on our stdout: send it all to stderr
os.environ["PORTAGE_USERNAME"] = os.environ["PORTAGE_GRPNAME"] = "root"

import portage  # noqa: E402
from portage.package.ebuild.fetch import fetch  # noqa: E402

portage.output.nocolor()

uris, digests = {}, {}
for spec in args.file:
    if "=" in spec:
        name, src = spec.split("=", 1)
        blake, sha = hashlib.blake2b(), hashlib.sha512()
        with open(src, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                blake.update(chunk)
                sha.update(chunk)
        d = {"size": os.path.getsize(src), "BLAKE2B": blake.hexdigest(), "SHA512": sha.hexdigest()}
    else:
        name, size, b2, s512 = spec.rsplit(":", 3)
        d = {"size": int(size), "BLAKE2B": b2, "SHA512": s512}
    uris[name] = (args.mirror.rstrip("/") + "/" + name,)
    digests[name] = d

env = {
    "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
    "HOME": os.environ.get("HOME", "/root"),
    "DISTDIR": args.distdir,
    "PORTAGE_RO_DISTDIRS": " ".join(shlex.quote(d) for d in args.ro_distdir),
    "GENTOO_MIRRORS": "",
    "FEATURES": "-userfetch " + args.features,
    "PORTAGE_USERNAME": "root",
    "PORTAGE_GRPNAME": "root",
    "PORTAGE_REPOSITORIES": "",  # replaces repos.conf: no repository at all
}
if not shutil.which("wget") and shutil.which("curl"):
    curl = 'curl --retry 3 --connect-timeout 60 -Lf %s -o "${DISTDIR}/${FILE}" "${URI}"'
    env["FETCHCOMMAND"], env["RESUMECOMMAND"] = curl % "", curl % "-C -"

with tempfile.TemporaryDirectory(prefix="portage-root.") as root:
    settings = portage.config(config_root=root, target_root=root, env=env)
    ok = fetch(uris, settings, digests=digests, allow_missing_digests=False)
sys.exit(0 if ok else 1)
