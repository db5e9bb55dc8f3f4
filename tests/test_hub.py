"""Push a trained checkpoint with the real huggingface_hub client to a loopback Hub and load it back.

The client runs in subprocesses because huggingface_hub reads HF_ENDPOINT/HF_HUB_OFFLINE at import
time and this test session is offline (conftest). The loading process cannot import modeling_evalign
(a meta-path finder blocks it), so the model must come from the bundled remote code.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from hub_server import LoopbackHub, git_blob_sha1
from package_blocker import without_package
from safetensors.torch import load_file, save_file

from modeling_evalign.hub.cards import write_model_card
from modeling_evalign.hub.push import push_to_hub
from modeling_evalign.lightweight.configuration_lightweight import LightweightAlignmentConfig
from modeling_evalign.lightweight.modeling_lightweight import LightweightAlignmentModule

REPO_ID = "evalign-test/lightweight-tiny"
METRICS = {"R@1": 0.75, "R@5": 1.0, "mse": 0.0125}
HISTORY = [{"epoch": e, "train_loss": 1.0 / e, "R@1": 0.2 * e} for e in range(1, 4)]

@pytest.fixture
def hub():
    with LoopbackHub(max_lifetime_s=300) as server:
        yield server


def _client_env(endpoint: str, hf_home: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        HF_ENDPOINT=endpoint,
        HF_HUB_OFFLINE="0",
        TRANSFORMERS_OFFLINE="0",
        HF_HOME=str(hf_home),
        HF_HUB_DISABLE_XET="1",
        HF_TOKEN="hf_dummy_loopback_token",
        HF_HUB_DISABLE_UPDATE_CHECK="1",
        NO_PROXY="127.0.0.1,localhost",
    )
    for proxy in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        env.pop(proxy, None)
    return env


def _run(code: str, env: dict[str, str], cwd: Path) -> dict:
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], env=env, cwd=cwd, capture_output=True, text=True, timeout=240
    )
    if proc.returncode != 0:
        raise AssertionError(f"client subprocess failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _trained_checkpoint(folder: Path) -> tuple[LightweightAlignmentModule, torch.Tensor]:
    """A lightweight adapter fitted in closed form on a noisy linear map, saved with its card."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(64, 8, generator=g)
    true_w = torch.randn(8, 6, generator=g)
    y = x @ true_w + 0.3 + 0.01 * torch.randn(64, 6, generator=g)
    model = LightweightAlignmentModule(LightweightAlignmentConfig(event_dim=8, target_dim=6, adapter_type="linear"))
    model.fit_closed_form(x, y, ridge=1e-3)
    model.eval()
    model.save_pretrained(folder)
    write_model_card(
        folder,
        model_id=REPO_ID,
        strategy="lightweight",
        metrics=METRICS,
        training_info={"epochs": 3, "learning_rate": 5e-4, "history": HISTORY},
        datasets=["evalign/dsec-synthetic"],
    )
    return model, torch.randn(5, 8, generator=g)


@pytest.mark.slow
def test_push_then_load_without_package(tmp_path, hub):
    ckpt = tmp_path / "ckpt"
    model, probe = _trained_checkpoint(ckpt)
    with torch.no_grad():
        expected = model(probe).aligned_features
    save_file({"probe": probe}, tmp_path / "probe.safetensors")
    env = _client_env(hub.endpoint, tmp_path / "hf_home")

    pushed = _run(
        f"""
        import json
        from modeling_evalign.hub.push import push_to_hub
        main = push_to_hub({str(ckpt)!r}, {REPO_ID!r}, token="hf_dummy")
        same = push_to_hub({str(ckpt)!r}, {REPO_ID!r})  # nothing changed: no new commit
        open({str(ckpt / "notes.txt")!r}, "w").write("branch only")
        branch = push_to_hub({str(ckpt)!r}, {REPO_ID!r}, revision="v1", commit_message="to a branch")
        from huggingface_hub import HfApi
        user = HfApi().whoami()["name"]
        print(json.dumps({{"url": main.commit_url, "oid": main.oid, "same": same.oid, "branch_oid": branch.oid,
                          "user": user}}))
        """,
        env,
        tmp_path,
    )
    # the server holds exactly the local files, byte for byte, on main and on the new branch
    # (but evalign's local manifest of what it wrote, which push_to_hub leaves out)
    local = {p.name: p.read_bytes() for p in ckpt.iterdir() if p.is_file() and p.name != ".evalign-manifest.json"}
    assert {"config.json", "model.safetensors", "README.md", "training_curve.png", "notes.txt"} <= set(local)
    on_main = {k: v for k, v in local.items() if k != "notes.txt"}
    assert {k: v for k, v in hub.files(REPO_ID, "main").items() if k != ".gitattributes"} == on_main
    assert {k: v for k, v in hub.files(REPO_ID, "v1").items() if k != ".gitattributes"} == local
    assert pushed["url"] == f"{hub.endpoint}/{REPO_ID}/commit/{pushed['oid']}"
    repo = hub.repos[("model", REPO_ID)]
    assert repo.branches == {"main": pushed["oid"], "v1": pushed["branch_oid"]}
    assert pushed["same"] == pushed["oid"] and pushed["user"] == "loopback-user"
    assert repo.messages[pushed["branch_oid"]] == "to a branch" and len(repo.commits) == 3  # initial, main, v1

    loaded = _run(
        without_package(f"""
        import json, sys
        import torch
        from safetensors.torch import load_file, save_file
        from transformers import AutoModel
        from huggingface_hub import ModelCard, hf_hub_download, snapshot_download
        model = AutoModel.from_pretrained({REPO_ID!r}, trust_remote_code=True).eval()
        with torch.no_grad():
            out = model(load_file("probe.safetensors")["probe"]).aligned_features
        state = {{f"param.{{k}}": v.contiguous() for k, v in model.state_dict().items()}}
        save_file({{"out": out.contiguous(), **state}}, "out.safetensors")
        card = ModelCard.load({REPO_ID!r})
        results = [dict(name=r.metric_name, type=r.metric_type, value=r.metric_value, task=r.task_type,
                        dataset=r.dataset_name) for r in card.data.eval_results]
        snap = snapshot_download({REPO_ID!r}, revision="v1")
        head_cfg = hf_hub_download({REPO_ID!r}, "config.json", revision="v1")
        missing = None
        try:
            hf_hub_download({REPO_ID!r}, "no_such_file.json")
        except Exception as e:
            missing = type(e).__name__
        print(json.dumps({{
            "package_imported": any(m.split(".")[0] == "modeling_evalign" for m in sys.modules),
            "model_module": type(model).__module__,
            "results": results, "tags": card.data.tags, "library": card.data.library_name,
            "datasets": card.data.datasets, "text": card.text,
            "snapshot_files": sorted(p.name for p in __import__("pathlib").Path(snap).iterdir()),
            "config_bytes": open(head_cfg, "rb").read().decode(), "missing": missing,
        }}))
        """),
        env,
        tmp_path,
    )
    assert loaded["package_imported"] is False
    assert loaded["model_module"].startswith("transformers_modules")
    got = load_file(tmp_path / "out.safetensors")
    params = {k.removeprefix("param."): v for k, v in got.items() if k.startswith("param.")}
    assert params.keys() == model.state_dict().keys()
    assert all(torch.equal(params[k], v) for k, v in model.state_dict().items())  # bit-identical weights
    # same weights, another process: matmul may pick another kernel/thread split, so not bit-equal
    torch.testing.assert_close(got["out"], expected, rtol=1e-6, atol=1e-6)

    by_name = {r["name"]: r for r in loaded["results"]}
    assert set(by_name) == set(METRICS)
    for name, value in METRICS.items():
        assert by_name[name]["value"] == pytest.approx(value)
        assert by_name[name]["dataset"] == "evalign/dsec-synthetic"
    assert by_name["R@1"]["task"] == "retrieval" and by_name["R@1"]["type"] == "recall_at_1"
    assert by_name["mse"]["task"] == "feature-extraction"
    assert {"evalign", "event-camera", "lightweight"} <= set(loaded["tags"])
    assert loaded["library"] == "transformers" and loaded["datasets"] == ["evalign/dsec-synthetic"]
    assert f'AutoModel.from_pretrained("{REPO_ID}", trust_remote_code=True)' in loaded["text"]
    assert "| R@1 | R@5 | mse |" in loaded["text"] and "| 0.75 | 1 | 0.0125 |" in loaded["text"]
    assert "![Training curve](training_curve.png)" in loaded["text"]
    assert set(local) <= set(loaded["snapshot_files"])  # v1 has notes.txt
    assert loaded["config_bytes"].encode() == local["config.json"]
    assert loaded["missing"] in ("EntryNotFoundError", "RemoteEntryNotFoundError")
    assert ("POST", "/api/repos/create", 200) in hub.requests


def test_loopback_server_errors_and_blob_ids(hub):
    """The server answers the way the client's error mapping expects (independent of the client)."""
    import http.client

    status, _ = hub.create_repo({"name": "x", "organization": "o"})
    assert status == 200
    conn = http.client.HTTPConnection("127.0.0.1", int(hub.endpoint.rsplit(":", 1)[1]), timeout=10)
    conn.request("POST", "/api/repos/create", body=json.dumps({"name": "x", "organization": "o"}))
    r = conn.getresponse()
    r.read()
    assert r.status == 409
    for path, code in [
        ("/o/missing/resolve/main/config.json", "RepoNotFound"),
        ("/o/x/resolve/nope/config.json", "RevisionNotFound"),
        ("/o/x/resolve/main/config.json", "EntryNotFound"),
    ]:
        conn.request("HEAD", path)
        r = conn.getresponse()
        r.read()
        assert (r.status, r.getheader("X-Error-Code")) == (404, code)
    conn.request("GET", "/o/x/resolve/main/.gitattributes")
    r = conn.getresponse()
    body = r.read()
    assert r.status == 200 and r.getheader("ETag") == f'"{git_blob_sha1(body)}"'
    assert r.getheader("X-Repo-Commit") == hub.repos[("model", "o/x")].branches["main"]
    assert int(r.getheader("Content-Length")) == len(body)
    # git's blob id of "hello\n" (independent reference: `printf 'hello\n' | git hash-object --stdin`)
    assert git_blob_sha1(b"hello\n") == "ce013625030ba8dba906f756967f9e9ca394464a"
    conn.close()


def test_push_refuses_offline_and_unreachable(tmp_path, hub):
    ckpt = tmp_path / "ckpt"
    _trained_checkpoint(ckpt)
    # this session imported huggingface_hub with HF_HUB_OFFLINE=1 (conftest)
    with pytest.raises(ConnectionError, match="offline"):
        push_to_hub(ckpt, REPO_ID)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead_port = s.getsockname()[1]
    env = _client_env(f"http://127.0.0.1:{dead_port}", tmp_path / "hf_home")
    result = _run(
        f"""
        import json
        from modeling_evalign.hub.push import push_to_hub
        try:
            push_to_hub({str(ckpt)!r}, {REPO_ID!r})
            print(json.dumps({{"error": None}}))
        except ConnectionError as e:
            print(json.dumps({{"error": str(e)}}))
        """,
        env,
        tmp_path,
    )
    assert result["error"] and f"127.0.0.1:{dead_port}" in result["error"]


def test_push_rejects_bad_input(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        push_to_hub(tmp_path / "missing", REPO_ID)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="config.json"):
        push_to_hub(tmp_path / "empty", REPO_ID)
    (tmp_path / "empty" / "config.json").write_text("{}")
    with pytest.raises(ValueError, match="namespace/name"):
        push_to_hub(tmp_path / "empty", "no-namespace")


def test_model_card_metadata_tables_and_plot(tmp_path):
    """The card parses back with ModelCard.load; every metric is a model-index result; tables match."""
    from huggingface_hub import ModelCard

    from modeling_evalign.evaluation.plots import plot_training_curve

    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "config.json").write_text(json.dumps({"event_dim": 12}))
    curve = plot_training_curve(HISTORY, tmp_path / "elsewhere" / "curve.png")
    metrics = {"1s": {"val/mean/R@1": 0.5, "mse": 0.25}, "20s": {"val/mean/R@1": 0.125}}
    readme = write_model_card(ckpt, model_id="org/m", strategy="contrastive", metrics=metrics,
                              training_info={"epochs": 2, "lr": 0.0005, "nested": {"x": 1}, "durations": ["1s"],
                                             "losses": [0.5] * 100, "resumed_from": None},
                              datasets="org/dsec", plot_path=curve, base_model="openai/clip-vit-large-patch14")
    assert (ckpt / "curve.png").read_bytes() == curve.read_bytes()  # copied next to the card
    card = ModelCard.load(readme)
    got = {(r.dataset_config, r.metric_name): (r.metric_value, r.task_type, r.metric_type) for r in card.data.eval_results}
    assert got == {
        ("1s", "val/mean/R@1"): (0.5, "retrieval", "val_mean_recall_at_1"),
        ("1s", "mse"): (0.25, "feature-extraction", "mse"),
        ("20s", "val/mean/R@1"): (0.125, "retrieval", "val_mean_recall_at_1"),
    }
    assert card.data.base_model == "openai/clip-vit-large-patch14" and card.data.datasets == ["org/dsec"]
    assert "| config | val/mean/R@1 | mse |" in card.text
    assert "| 1s | 0.5 | 0.25 |" in card.text and "| 20s | 0.125 | - |" in card.text
    assert "| epochs | 2 |" in card.text and "| lr | 0.0005 |" in card.text and "| durations | 1s |" in card.text
    assert "nested" not in card.text and "losses" not in card.text and "resumed_from" not in card.text
    assert "![Training curve](curve.png)" in card.text and "torch.randn(4, 12)" in card.text
    with pytest.raises(ValueError, match=r"metrics\['R@1'\]='high' is invalid"):
        write_model_card(ckpt, model_id="org/m", strategy="x", metrics={"R@1": "high"})
    # a metric that could not be computed stays out of model-index and shows as n/a
    card = ModelCard.load(write_model_card(ckpt, model_id="org/m", strategy="x",
                                           metrics={"R@1": 0.5, "R@10": float("nan")}))
    assert [r.metric_name for r in card.data.eval_results] == ["R@1"] and "| 0.5 | n/a |" in card.text
    with pytest.raises(FileNotFoundError, match="plot_path"):
        write_model_card(ckpt, model_id="org/m", strategy="x", metrics={}, plot_path=tmp_path / "none.png")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        write_model_card(tmp_path / "nope", model_id="org/m", strategy="x", metrics={})
