"""Fetching packages by name into a local cache, never installing them.

Debian packages: `apt-get download PKG` in CACHE/dl, then `dpkg-deb -x` into
CACHE/ex/PKG.  npm packages: `npm pack PKG` in CACHE/dl, then `tar -xzf` into
CACHE/ex/<name with @ dropped and / turned into ->.  An extracted tree is
marked complete by a `.ok` file holding the archive name, so a re-run reuses
it without touching the network.  Every failure raises FetchError naming the
package and the command that failed.
"""

import glob
import os
import shutil
import subprocess


class FetchError(Exception):
    pass


class Unavailable(FetchError):
    """The package does not exist in the configured apt sources / npm registry."""


def _run(cmd, cwd, what):
    try:
        p = subprocess.run(cmd, cwd=cwd, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)
    except FileNotFoundError as e:
        raise FetchError("%s: cannot run %s: %s" % (what, cmd[0], e))
    if p.returncode != 0:
        err = (p.stderr or p.stdout).strip().splitlines()
        err = [l for l in err if "Unknown user config" not in l and "unsandboxed" not in l]
        raise FetchError("%s: `%s` failed (exit %d): %s"
                         % (what, " ".join(cmd), p.returncode, " | ".join(err[-3:])))
    return p.stdout


def safe_name(pkg):
    return pkg.replace("@", "").replace("/", "-")


class Fetcher:
    def __init__(self, cache, log):
        self.cache = os.path.abspath(cache)
        self.dl = os.path.join(self.cache, "dl")
        self.ex = os.path.join(self.cache, "ex")
        os.makedirs(self.dl, exist_ok=True)
        os.makedirs(self.ex, exist_ok=True)
        self.log = log
        self.versions = {}      # pkg -> archive file name (records the version)

    # -- Debian -------------------------------------------------------------
    def _deb_archive(self, pkg):
        hits = sorted(glob.glob(os.path.join(self.dl, glob.escape(pkg) + "_*.deb")))
        return hits[-1] if hits else None

    def deb(self, pkg):
        """Return the root of the extracted tree of Debian package PKG."""
        dest = os.path.join(self.ex, pkg)
        ok = os.path.join(dest, ".ok")
        if os.path.exists(ok):
            with open(ok) as f:
                self.versions[pkg] = f.read().strip()
            return dest
        deb = self._deb_archive(pkg)
        if deb is None:
            out = _run(["apt-cache", "policy", pkg], self.dl, "apt package " + pkg)
            cand = [l.split(":", 1)[1].strip() for l in out.splitlines()
                    if l.strip().startswith("Candidate:")]
            if not cand or cand[0] == "(none)":
                raise Unavailable("apt package %s: no installable candidate "
                                  "(apt-cache policy shows none; try apt-get update)" % pkg)
            self.log("  downloading deb %s (%s)" % (pkg, cand[0]))
            _run(["apt-get", "download", pkg], self.dl, "apt package " + pkg)
            deb = self._deb_archive(pkg)
            if deb is None:
                raise FetchError("apt package %s: apt-get download left no %s_*.deb in %s"
                                 % (pkg, pkg, self.dl))
        self.log("  extracting %s" % os.path.basename(deb))
        shutil.rmtree(dest, ignore_errors=True)
        os.makedirs(dest)
        _run(["dpkg-deb", "-x", deb, dest], self.dl, "apt package " + pkg)
        with open(ok, "w") as f:
            f.write(os.path.basename(deb) + "\n")
        self.versions[pkg] = os.path.basename(deb)
        return dest

    # -- npm ----------------------------------------------------------------
    def _npm_archive(self, pkg):
        pat = safe_name(pkg) + "-[0-9]*.tgz"
        hits = sorted(glob.glob(os.path.join(self.dl, pat)))
        return hits[-1] if hits else None

    def npm(self, pkg):
        """Return the `package/` directory of the unpacked npm tarball of PKG."""
        dest = os.path.join(self.ex, safe_name(pkg))
        ok = os.path.join(dest, ".ok")
        if os.path.exists(ok):
            with open(ok) as f:
                self.versions[pkg] = f.read().strip()
            return os.path.join(dest, "package")
        tgz = self._npm_archive(pkg)
        if tgz is None:
            try:
                ver = _run(["npm", "view", pkg, "version"], self.dl, "npm package " + pkg).strip()
            except FetchError as e:
                if "E404" in str(e) or "404" in str(e):
                    raise Unavailable("npm package %s: not in the registry (%s)" % (pkg, e))
                raise
            self.log("  downloading npm %s (%s)" % (pkg, ver))
            _run(["npm", "pack", pkg], self.dl, "npm package " + pkg)
            tgz = self._npm_archive(pkg)
            if tgz is None:
                raise FetchError("npm package %s: npm pack left no %s-*.tgz in %s"
                                 % (pkg, safe_name(pkg), self.dl))
        self.log("  extracting %s" % os.path.basename(tgz))
        shutil.rmtree(dest, ignore_errors=True)
        os.makedirs(dest)
        _run(["tar", "-xzf", tgz, "-C", dest], self.dl, "npm package " + pkg)
        if not os.path.isdir(os.path.join(dest, "package")):
            raise FetchError("npm package %s: %s has no package/ folder" % (pkg, tgz))
        with open(ok, "w") as f:
            f.write(os.path.basename(tgz) + "\n")
        self.versions[pkg] = os.path.basename(tgz)
        return os.path.join(dest, "package")

    # -- selective tar extraction (linux-source) ----------------------------
    def untar(self, key, tarball, patterns):
        """Extract members of TARBALL matching shell PATTERNS into CACHE/ex/KEY."""
        dest = os.path.join(self.ex, key)
        ok = os.path.join(dest, ".ok")
        if os.path.exists(ok):
            return dest
        self.log("  extracting parts of %s" % os.path.basename(tarball))
        shutil.rmtree(dest, ignore_errors=True)
        os.makedirs(dest)
        _run(["tar", "-xf", tarball, "-C", dest, "--wildcards"] + list(patterns),
             dest, "tarball " + tarball)
        with open(ok, "w") as f:
            f.write(os.path.basename(tarball) + "\n")
        return dest
