"""What a Hub visitor meets: every card the main job writes loads, says what it must, names no machine path, and
its usage snippet runs at the stated shapes; the summary and sample figures match their data files."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
from pathlib import Path

import h5py
import hdf5plugin  # noqa: F401  (Blosc filter for the synthetic events.h5)
import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from test_pipeline import FIRENET, _config

from modeling_evalign.hub.paths import hub_repo_id, strip_machine_paths

# an absolute POSIX path (not a URL's '//', not 'e2t/R@1'), or a home-relative one: written independently of
# hub.paths.find_machine_paths so the check does not trust the code it checks
ABSOLUTE = re.compile(r"(?<![\w:/.@-])/(?:[\w.+-]+/)+[\w.+-]*|~/")
PLACEHOLDERS = ("...", "[More Information Needed]", "TODO", "<your", "path/to/")
REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*$")


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    """The tiny main job of test_pipeline, run once for every check here."""
    from modeling_evalign.pipeline.job import run_pipeline

    root = tmp_path_factory.mktemp("cards")
    cfg = _config(root / "demo")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run_pipeline(cfg)
    finally:
        torch.set_num_threads(threads)
    return root, cfg


def _finals(out: Path) -> list[Path]:
    finals = sorted(p for p in (out / "runs").glob("*/*/final") if (p / "config.json").is_file())
    assert finals, f"no checkpoint under {out / 'runs'}"
    return finals


def _machine_paths(text: str, root: Path) -> list[str]:
    literal = [s for s in (str(root), str(root.resolve()), str(Path.home()), ".cache/evalign") if s in text]
    return literal + ABSOLUTE.findall(text)


def _snippet(card_text: str) -> str:
    blocks = re.findall(r"```python\n(.*?)```", card_text, flags=re.S)
    assert len(blocks) == 1, f"expected one python usage block, found {len(blocks)}"
    return blocks[0]


@pytest.mark.slow
def test_every_card_loads_and_is_honest(job):
    from huggingface_hub import ModelCard

    root, cfg = job
    out = Path(cfg.output_dir)
    finals = _finals(out)
    assert {p.parent.name for p in finals} >= {"lightweight", "contrastive", "triple_modal", "contrastive_image"}
    for final in finals:
        # no .md/.json file of the checkpoint (adapter/ included) names a machine path
        for f in sorted([*final.rglob("*.json"), *final.rglob("*.md")]):
            found = _machine_paths(f.read_text(), root)
            assert not found, f"{f.relative_to(out)} contains machine paths {found[:3]}"
        card = ModelCard.load(final / "README.md")
        meta = card.data.to_dict()
        assert meta.get("base_model") is None or REPO_ID.match(meta["base_model"]), meta.get("base_model")
        assert meta.get("base_model") is None  # the proxy tower is local: described in the text, not a repo id
        assert "synthetic-data" in meta["tags"] and "dsec" not in (meta.get("datasets") or [])
        results = card.data.eval_results
        assert results and all(r.dataset_split == "validation" for r in results)
        info = json.loads((final / "training_info.json").read_text())
        n = info["counts"]["val"]
        assert f"n = {n} pairs" in card.text and f"R@1 = {1 / n:.3g}" in card.text  # split, n and chance stated
        assert "Rule: strict retrieval" in card.text
        assert "**Trained and evaluated on synthetic data**" in card.text and "**Synthetic DSEC**" in card.text
        assert f"training pairs: {info['counts']['train']}" in card.text
        assert "proxy_clip-" in card.text and "## Limitations" in card.text
        for placeholder in PLACEHOLDERS:
            assert placeholder not in card.text, f"{final.name}: placeholder {placeholder!r} in the card"
        images = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", card.text)
        assert images, f"{final.parent.name}: the card embeds no plot"
        for image in images:
            assert (final / image).is_file() and (final / image).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
            assert (final / (image + ".json")).is_file()  # the plot's data beside it


@pytest.mark.slow
def test_usage_snippets_run_at_the_stated_shapes(job, monkeypatch):
    from transformers import AutoConfig

    root, cfg = job
    out = Path(cfg.output_dir)
    monkeypatch.setenv("EVALIGN_HOME", str(Path(cfg.proxy_cache_dir)))  # where the card's proxy tower is cached
    train_events = load_file(str(out / "features" / "1s" / "train" / "event_features.safetensors"))
    stored = next(iter(train_events.values()))
    for final in _finals(out):
        card_text = (final / "README.md").read_text()
        code = _snippet(card_text)
        model_id = re.search(r'AutoModel\.from_pretrained\("([^"]+)"', code).group(1)
        stated = re.search(r"torch\.randn\(([\d, ]+)\)", code).group(1)
        shape = [int(v) for v in stated.split(",")]
        expected = re.search(r"# torch\.Size\((\[[\d, ]+\])\)", code).group(1)
        if final.parent.name == "contrastive_image":  # CLIP-preprocessed images at the tower's size
            tower_size = AutoConfig.from_pretrained(final).clip_model_id
            assert shape[1:] == [3, 32, 32] and tower_size.startswith("proxy_clip-")
        else:  # the features the model was trained on: [batch, patches, hidden] as stored on disk
            assert shape[1:] == list(stored.shape[1:]), (final.parent.name, shape, stored.shape)
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            exec(compile(code.replace(f'"{model_id}"', repr(str(final))), str(final / "README.md"), "exec"), {})
        printed = buf.getvalue().strip().splitlines()[-1]
        assert printed == f"torch.Size({expected})", (final.parent.name, printed, expected)
        assert json.loads(expected)[0] == shape[0]


@pytest.mark.slow
def test_summary_and_sample_figures_match_their_data(job):
    root, cfg = job
    out = Path(cfg.output_dir)
    results = json.loads((out / "results.json").read_text())
    md = (out / "results.md").read_text()
    assert md.index("![summary.png](summary.png)") < md.index("| duration | strategy |")  # at the top
    summary = json.loads((out / "summary.png.json").read_text())
    assert Image.open(out / "summary.png").size[0] > 200
    rows = results["rows"]
    (panel,) = summary["panels"]
    assert panel["strategies"] == [r["strategy"] for r in rows]
    np.testing.assert_allclose(panel["values"], [100 * r["metrics"]["mean/R@1"] for r in rows], rtol=1e-6)
    assert panel["chance"] == pytest.approx(100 / rows[0]["metrics"]["n_test"])
    assert panel["unaligned"] == pytest.approx(100 * rows[0]["metrics"]["mean/R@1"]) and rows[0]["strategy"] == "unaligned"

    # the sample panel: its arrays recomputed from the raw files with a slow loop
    meta = json.loads((out / "samples_1s.png.json").read_text())
    assert "![samples_1s.png](samples_1s.png)" in md and (out / "samples_1s.png").is_file()
    arrays = np.load(out / meta["arrays"])
    seq = out / "dsec" / meta["sequence"]
    with h5py.File(seq / "events" / "left" / "events.h5", "r") as f:
        t = f["events/t"][:].astype(np.int64) + int(np.asarray(f["t_offset"]).reshape(-1)[0])
        keep = (t >= meta["window_start_us"]) & (t < meta["window_end_us"])
        x, y, p = f["events/x"][:][keep], f["events/y"][:][keep], f["events/p"][:][keep]
    width, height = cfg.sensor_size
    frames = np.full((5, height, width, 3), 255, np.uint8)
    per = len(x) // 5
    for k in range(5):
        end = len(x) if k == 4 else (k + 1) * per
        for i in range(k * per, end):
            frames[k, y[i], x[i]] = (255, 0, 0) if p[i] == 1 else (0, 0, 255)
    assert meta["num_events"] == len(x) and np.array_equal(arrays["event_frames"], frames)
    stamps = np.loadtxt(seq / "images" / "timestamps.txt", dtype=np.int64)
    k = int(np.argmin(np.abs(stamps - meta["window_end_us"])))
    rgb = np.asarray(Image.open(seq / "images" / "left" / "rectified" / f"{k:06d}.png").convert("RGB"))
    assert meta["rgb_index"] == k and np.array_equal(arrays["rgb"], rgb)
    if FIRENET.is_file():
        rec = arrays["reconstruction"]
        assert rec.shape == (height, width) and rec.min() >= 0.0 and rec.max() <= 1.0 and rec.std() > 0.01
        assert meta["panels"][-1] == "FireNet reconstruction"


def test_summary_draws_the_downstream_panel(tmp_path):
    from modeling_evalign.pipeline.figures import plot_summary

    def row(duration, strategy, r1, n):
        return {"duration": duration, "strategy": strategy, "metrics": {"mean/R@1": r1, "n_test": n}, "note": ""}

    results = {"rows": [row("1s", "unaligned", 0.1, 40), row("1s", "contrastive", 0.6, 40),
                        row("200ms", "unaligned", 0.05, 200), row("200ms", "contrastive", 0.3, 200)]}
    base = plot_summary(results, tmp_path / "base.png")
    results["downstream"] = [
        {"duration": d, "condition": c, "accuracy": a, "accuracy_by_type": {"scene": a}, "agreement": 0.5,
         "alpha": 0.4, "n": 30}
        for d, c, a in (("1s", "rgb", 0.9), ("1s", "aligned_events", 0.7), ("200ms", "aligned_events", 0.55))
    ]
    results["speculative"] = {"1s": {"speedup": 1.3, "tokens_identical": True, "alpha": 0.4, "gamma": 4,
                                     "cost_ratio": 0.3, "condition": "aligned_events"}}
    path = plot_summary(results, tmp_path / "down.png")
    data = json.loads((tmp_path / "down.png.json").read_text())
    assert [p["duration"] for p in data["panels"]] == ["1s", "200ms"]
    assert data["panels"][1]["values"] == pytest.approx([5.0, 30.0]) and data["panels"][1]["chance"] == 0.5
    got = {(d["duration"], d["condition"]): d["accuracy"] for d in data["downstream"]}
    assert got == pytest.approx({("1s", "rgb"): 90.0, ("1s", "aligned_events"): 70.0,
                                 ("200ms", "aligned_events"): 55.0})
    assert "downstream" not in json.loads((tmp_path / "base.png.json").read_text())
    assert Image.open(path).size[0] > Image.open(base).size[0]  # one more panel
    with pytest.raises(ValueError, match="no rows"):
        plot_summary({"rows": []}, tmp_path / "x.png")


def test_paths_become_relative_or_names(tmp_path, monkeypatch):
    project = tmp_path / "work" / "proj"
    final = project / "runs" / "1s" / "final"
    (final / "adapter").mkdir(parents=True)
    (project / "features" / "1s" / "train").mkdir(parents=True)
    home_tower = Path.home() / ".cache" / "evalign" / "proxy_clip-abc"
    info = {"train_dir": str(project / "features" / "1s" / "train"), "adapter": str(final / "adapter"),
            "tower": str(home_tower), "home": "~/data/x", "url": "https://huggingface.co/openai/clip-vit-large-patch14",
            "repo": "openai/clip-vit-large-patch14", "metric": "e2t/R@1", "nested": [{"p": str(final)}], "n": 3}
    got = strip_machine_paths(info, final)
    assert got == {"train_dir": "../../../features/1s/train", "adapter": "adapter", "tower": "proxy_clip-abc",
                   "home": "x", "url": info["url"], "repo": info["repo"], "metric": "e2t/R@1",
                   "nested": [{"p": "."}], "n": 3}
    assert strip_machine_paths(info, final, name_only=True)["train_dir"] == "train"
    assert hub_repo_id("openai/clip-vit-large-patch14") == "openai/clip-vit-large-patch14"
    assert hub_repo_id(str(home_tower)) is None and hub_repo_id("proxy_clip-abc") is None
    monkeypatch.chdir(tmp_path)
    (tmp_path / "org" / "local").mkdir(parents=True)
    assert hub_repo_id("org/local") is None  # an existing local directory is not a repo id
    assert not ABSOLUTE.findall(json.dumps(got))
    assert os.path.isabs(info["tower"])


def test_base_model_is_the_hub_tower_or_absent(tmp_path):
    from huggingface_hub import ModelCard

    from modeling_evalign.hub.card_facts import eval_facts, tower_facts
    from modeling_evalign.hub.cards import write_model_card

    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    metrics = {"mean/R@1": 0.5, "mean/R@5": 1.0}
    hub = {"tower": tower_facts("openai/clip-vit-large-patch14-336", "main"), "evaluation": eval_facts(metrics, 40, "test")}
    card = ModelCard.load(write_model_card(ckpt, model_id="org/m", strategy="contrastive", metrics=metrics, facts=hub))
    assert card.data.base_model == "openai/clip-vit-large-patch14-336"
    assert "at revision `main`" in card.text and "R@1 = 0.025, R@5 = 0.125" in card.text and "n = 40 pairs" in card.text
    local = tmp_path / "org" / "tower"  # a local directory shaped like a repo id is not one
    local.mkdir(parents=True)
    facts = {"tower": tower_facts(str(local), None)}
    card = ModelCard.load(write_model_card(ckpt, model_id="org/m", strategy="contrastive", metrics=metrics,
                                           facts=facts, base_model=str(local)))
    assert card.data.base_model is None and "local CLIP directory named `tower`" in card.text
    assert str(tmp_path) not in card.text
