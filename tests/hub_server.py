"""A loopback stand-in for the Hugging Face Hub, enough for the real ``huggingface_hub`` client.

It implements what ``HfApi.create_repo``/``create_branch``/``upload_folder`` and the download paths
(``hf_hub_download``, ``snapshot_download``, ``from_pretrained``) call in huggingface_hub 2.4:

- ``POST /api/repos/create``                       -> ``{"url": ...}``; 409 when the repo exists
- ``POST /api/validate-yaml``                      -> no warnings, no errors
- ``GET  /api/whoami-v2``                          -> a write-token user "loopback-user"
- ``POST /api/{type}s/{repo}/preupload/{rev}``     -> every file in "regular" mode (content then
  arrives base64 in the commit), with the blob oid of an identical file already there
- ``POST /api/{type}s/{repo}/commit/{rev}``        -> NDJSON ``header``/``file``/``deletedFile``/
  ``deletedFolder`` lines; ``lfsFile`` is refused (never asked for)
- ``POST /api/{type}s/{repo}/branch/{branch}``     -> new branch from ``startingPoint`` or main
- ``GET  /api/{type}s/{repo}[/revision/{rev}]``    -> repo info with ``sha`` and ``siblings``
- ``GET  /api/{type}s/{repo}/tree/{rev}[/{path}]`` -> file/folder listing (``recursive`` honoured)
- ``POST /api/{type}s/{repo}/paths-info/{rev}``    -> entries of the listed paths
- ``HEAD/GET /{repo}/resolve/{rev}/{file}`` (and ``/datasets/...``) -> bytes with ``ETag`` (git
  blob sha1), ``X-Repo-Commit`` and ``Content-Length``; errors carry ``X-Error-Code``
  (``RepoNotFound``/``RevisionNotFound``/``EntryNotFound``) the way the client expects.

Repositories live in memory, bounded by ``max_bytes``. The server binds 127.0.0.1 only and stops on
``close()`` or after ``max_lifetime_s`` at the latest, so a crashed test never leaves it running.
Every request is recorded in ``requests`` (method, path, status) so tests can show what was called.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

_REPO = r"(?P<repo>[\w.\-]+/[\w.\-]+)"
_TYPE = r"(?P<type>model|dataset|space)s"
_API = re.compile(
    rf"^/api/{_TYPE}/{_REPO}(?:/(?P<op>revision|tree|paths-info|preupload|commit|branch)(?:/(?P<rest>.*))?)?$"
)
_RESOLVE = re.compile(rf"^/(?:(?P<type>dataset|space)s/)?{_REPO}/resolve/(?P<rev>[^/]+)/(?P<file>.+)$")


def git_blob_sha1(data: bytes) -> str:
    """The git object id of a blob, which the Hub reports as ``oid``/``ETag`` of a regular file."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class Repo:
    repo_type: str
    repo_id: str
    private: bool
    commits: dict[str, dict[str, bytes]] = field(default_factory=dict)  # sha -> {path: bytes}
    branches: dict[str, str] = field(default_factory=dict)  # branch -> sha
    messages: dict[str, str] = field(default_factory=dict)  # sha -> commit summary

    def resolve(self, revision: str) -> str | None:
        if revision in self.branches:
            return self.branches[revision]
        if revision in self.commits:
            return revision
        return None


class HubError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None, commit: str | None = None, **extra):
        super().__init__(message)
        self.status, self.code, self.commit, self.extra = status, code, commit, extra


class LoopbackHub:
    """Threaded in-memory Hub on ``http://127.0.0.1:<free port>``; use as a context manager."""

    def __init__(self, *, max_bytes: int = 64 * 2**20, max_lifetime_s: float = 600.0):
        self.max_bytes = max_bytes
        self.repos: dict[tuple[str, str], Repo] = {}
        self.requests: list[tuple[str, str, int]] = []
        self._lock = threading.Lock()
        hub = self

        class Handler(_Handler):
            server_hub = hub

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.endpoint = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
        self._timer = threading.Timer(max_lifetime_s, self.close)
        self._timer.daemon = True
        self._closed = False

    def start(self) -> LoopbackHub:
        self._thread.start()
        self._timer.start()
        return self

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._timer.cancel()
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> LoopbackHub:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    # ---- state -------------------------------------------------------------------------------
    def stored_bytes(self) -> int:
        return sum(len(b) for r in self.repos.values() for files in r.commits.values() for b in files.values())

    def files(self, repo_id: str, revision: str = "main", repo_type: str = "model") -> dict[str, bytes]:
        """Files of a repo at a revision (for assertions)."""
        repo = self._repo(repo_type, repo_id)
        return dict(repo.commits[self._sha(repo, revision)])

    def _repo(self, repo_type: str, repo_id: str) -> Repo:
        repo = self.repos.get((repo_type, repo_id))
        if repo is None:
            raise HubError(404, f"Repository {repo_type}/{repo_id} not found", "RepoNotFound")
        return repo

    def _sha(self, repo: Repo, revision: str) -> str:
        sha = repo.resolve(unquote(revision))
        if sha is None:
            raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        return sha

    def _new_commit(self, repo: Repo, files: dict[str, bytes], message: str) -> str:
        sha = hashlib.sha1(f"{repo.repo_id}:{uuid.uuid4()}".encode()).hexdigest()
        repo.commits[sha] = files
        repo.messages[sha] = message
        return sha

    def _url(self, repo: Repo) -> str:
        prefix = "" if repo.repo_type == "model" else f"{repo.repo_type}s/"
        return f"{self.endpoint}/{prefix}{repo.repo_id}"

    # ---- endpoints ---------------------------------------------------------------------------
    def create_repo(self, body: dict) -> tuple[int, dict]:
        name, org = body.get("name"), body.get("organization")
        if not name:
            raise HubError(400, "missing repo name")
        repo_id = f"{org}/{name}" if org else f"user/{name}"
        repo_type = body.get("type") or "model"
        with self._lock:
            if (repo_type, repo_id) in self.repos:
                # like the Hub, a 409 still carries the repo url (create_repo(exist_ok=True) reads it)
                existing = self.repos[(repo_type, repo_id)]
                raise HubError(409, f"You already created this {repo_type} repo", url=self._url(existing))
            repo = Repo(repo_type, repo_id, private=body.get("visibility") == "private")
            gitattributes = b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n"
            repo.branches["main"] = self._new_commit(repo, {".gitattributes": gitattributes}, "initial commit")
            self.repos[(repo_type, repo_id)] = repo
        return 200, {"url": self._url(repo), "name": repo_id}

    def preupload(self, repo: Repo, revision: str, body: dict) -> dict:
        current = repo.commits[self._sha(repo, revision)]
        out = []
        for f in body.get("files", []):
            path = f["path"]
            out.append(
                {
                    "path": path,
                    "uploadMode": "regular",
                    "shouldIgnore": False,
                    "oid": git_blob_sha1(current[path]) if path in current else None,
                }
            )
        return {"files": out, "commitOid": self._sha(repo, revision)}

    def commit(self, repo: Repo, revision: str, raw: bytes) -> dict:
        branch = unquote(revision)
        if branch not in repo.branches:
            raise HubError(404, f"Invalid rev id: {branch} (commits go to a branch)", "RevisionNotFound")
        lines = [json.loads(line) for line in raw.splitlines() if line.strip()]
        if not lines or lines[0].get("key") != "header":
            raise HubError(400, "commit payload must start with a header line")
        header = lines[0]["value"]
        with self._lock:
            parent = repo.branches[branch]
            if header.get("parentCommit") and not parent.startswith(header["parentCommit"]):
                raise HubError(412, "A commit has happened since. Please refresh and try again.")
            files = dict(repo.commits[parent])
            for item in lines[1:]:
                key, value = item.get("key"), item.get("value", {})
                path = value.get("path", "")
                if key == "file":
                    if value.get("encoding") != "base64":
                        raise HubError(400, f"unsupported encoding for {path}")
                    files[path] = base64.b64decode(value["content"])
                elif key == "deletedFile":
                    if path not in files:
                        raise HubError(404, f"A file with this name doesn't exist: {path}", "EntryNotFound")
                    del files[path]
                elif key == "deletedFolder":
                    prefix = path.rstrip("/") + "/"
                    files = {p: b for p, b in files.items() if not p.startswith(prefix)}
                else:
                    raise HubError(400, f"unsupported commit operation {key!r} (this server answers 'regular')")
            added = sum(len(b) for b in files.values()) - sum(len(b) for b in repo.commits[parent].values())
            if self.stored_bytes() + max(added, 0) > self.max_bytes:
                raise HubError(413, f"loopback hub is limited to {self.max_bytes} bytes")
            sha = self._new_commit(repo, files, header.get("summary", ""))
            repo.branches[branch] = sha
        return {"commitUrl": f"{self._url(repo)}/commit/{sha}", "commitOid": sha, "pullRequestUrl": None}

    def create_branch(self, repo: Repo, branch: str, body: dict) -> dict:
        branch = unquote(branch)
        with self._lock:
            if branch in repo.branches:
                raise HubError(409, f"Reference already exists: {branch}")
            repo.branches[branch] = self._sha(repo, body.get("startingPoint") or "main")
        return {}

    def info(self, repo: Repo, revision: str) -> dict:
        sha = self._sha(repo, revision)
        return {
            "id": repo.repo_id,
            "modelId": repo.repo_id,
            "author": repo.repo_id.split("/")[0],
            "sha": sha,
            "private": repo.private,
            "disabled": False,
            "gated": False,
            "lastModified": "2026-01-01T00:00:00.000Z",
            "tags": [],
            "siblings": [{"rfilename": p} for p in sorted(repo.commits[sha])],
        }

    def _entries(self, files: dict[str, bytes], paths: list[str]) -> list[dict]:
        out = []
        for path in paths:
            if path in files:
                out.append({"type": "file", "path": path, "size": len(files[path]), "oid": git_blob_sha1(files[path])})
            else:
                out.append({"type": "directory", "path": path, "oid": hashlib.sha1(path.encode()).hexdigest()})
        return out

    def tree(self, repo: Repo, rest: str, query: dict) -> list[dict]:
        revision, _, path = rest.partition("/")
        files = repo.commits[self._sha(repo, revision)]
        path = unquote(path).strip("/")
        prefix = path + "/" if path else ""
        recursive = query.get("recursive", ["False"])[0].lower() in ("1", "true")
        if path and not any(p.startswith(prefix) for p in files):
            raise HubError(404, f"Path {path} not found", "EntryNotFound")
        listed: set[str] = set()
        for p in files:
            if not p.startswith(prefix):
                continue
            parts = p[len(prefix):].split("/")
            if recursive:
                listed.update(prefix + "/".join(parts[: i + 1]) for i in range(len(parts)))
            else:
                listed.add(prefix + parts[0])
        return self._entries(files, sorted(listed))

    def paths_info(self, repo: Repo, revision: str, form: dict) -> list[dict]:
        files = repo.commits[self._sha(repo, revision)]
        wanted = [p.strip("/") for p in form.get("paths", [])]
        folders = {"/".join(p.split("/")[:i]) for p in files for i in range(1, p.count("/") + 1)}
        return self._entries(files, [p for p in wanted if p in files or p in folders])

    def resolve(self, repo_type: str, repo_id: str, revision: str, filename: str) -> tuple[bytes, str]:
        repo = self._repo(repo_type, repo_id)
        sha = self._sha(repo, revision)
        files = repo.commits[sha]
        filename = unquote(filename)
        if filename not in files:
            raise HubError(404, f"Entry not found: {filename}", "EntryNotFound", commit=sha)
        return files[filename], sha


class _Handler(BaseHTTPRequestHandler):
    server_hub: LoopbackHub
    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args):  # quiet: the request list is the log
        pass

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(self, status: int, payload: bytes, headers: dict[str, str], head: bool = False) -> None:
        self.server_hub.requests.append((self.command, self.path, status))
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if not head:
            self.wfile.write(payload)

    def _json(self, status: int, obj, extra: dict[str, str] | None = None, head: bool = False) -> None:
        headers = {"Content-Type": "application/json", **(extra or {})}
        self._send(status, json.dumps(obj).encode(), headers, head)

    def _dispatch(self, method: str) -> None:
        hub = self.server_hub
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        path = url.path
        try:
            body = self._body() if method == "POST" else b""
            if method == "POST" and path == "/api/repos/create":
                status, obj = hub.create_repo(json.loads(body or b"{}"))
                return self._json(status, obj)
            if method == "GET" and path == "/api/whoami-v2":
                return self._json(200, {"type": "user", "name": "loopback-user", "orgs": [],
                                        "auth": {"type": "access_token", "accessToken": {"role": "write"}}})
            if method == "POST" and path == "/api/validate-yaml":
                return self._json(200, {"warnings": [], "errors": []})
            m = _RESOLVE.match(path)
            if m and method in ("GET", "HEAD"):
                data, sha = hub.resolve(m["type"] or "model", m["repo"], m["rev"], m["file"])
                headers = {
                    "Content-Type": "application/octet-stream",
                    "ETag": f'"{git_blob_sha1(data)}"',
                    "X-Repo-Commit": sha,
                    "Accept-Ranges": "bytes",
                }
                return self._send(200, data, headers, head=method == "HEAD")
            m = _API.match(path)
            if m:
                repo = hub._repo(m["type"], m["repo"])
                op, rest = m["op"], m["rest"] or ""
                if method == "GET" and op is None:
                    return self._json(200, hub.info(repo, "main"))
                if method == "GET" and op == "revision":
                    return self._json(200, hub.info(repo, rest))
                if method == "GET" and op == "tree":
                    return self._json(200, hub.tree(repo, rest, query))
                if method == "POST" and op == "paths-info":
                    return self._json(200, hub.paths_info(repo, rest, parse_qs(body.decode())))
                if method == "POST" and op == "preupload":
                    return self._json(200, hub.preupload(repo, rest, json.loads(body)))
                if method == "POST" and op == "commit":
                    return self._json(200, hub.commit(repo, rest, body))
                if method == "POST" and op == "branch":
                    return self._json(200, hub.create_branch(repo, rest, json.loads(body or b"{}")))
            raise HubError(404, f"loopback hub does not implement {method} {path}")
        except HubError as e:
            extra = {"X-Error-Message": str(e)}
            if e.code:
                extra["X-Error-Code"] = e.code
            if e.commit:
                extra["X-Repo-Commit"] = e.commit
            return self._json(e.status, {"error": str(e), **e.extra}, extra, head=method == "HEAD")
        except (ValueError, KeyError) as e:  # malformed request: report it rather than hang the client
            return self._json(400, {"error": f"{type(e).__name__}: {e}"}, head=method == "HEAD")

    def do_GET(self):
        self._dispatch("GET")

    def do_HEAD(self):
        self._dispatch("HEAD")

    def do_POST(self):
        self._dispatch("POST")


def serve_forever_in_foreground(seconds: float = 60.0) -> None:  # pragma: no cover - manual debugging aid
    with LoopbackHub() as hub:
        print(hub.endpoint, flush=True)
        time.sleep(seconds)
