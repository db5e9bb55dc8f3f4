"""Pretrain the proxy vision-language model (a small Video-LLaVA on the proxy CLIP tower, plus its distilled draft)
on the synthetic generator's RGB video and save it as Hugging Face directories with a model card.

    python dataset_scripts/pretrain_proxy_vlm.py                        # the default model, cached
    python dataset_scripts/pretrain_proxy_vlm.py --tower towers/proxy --output-dir vlm --steps 200

Without ``--tower`` the tower is the proxy CLIP ``ensure_proxy_clip`` builds or finds. Without ``--output-dir`` the
model goes to the cache ``ensure_proxy_vlm`` reads (``$EVALIGN_HOME`` or ``~/.cache/evalign``, or ``--cache-dir``),
so the downstream study reuses it. A killed run resumes when rerun with the same flags. Prints the directory and the
held-out metrics (also in its README.md and proxy_vlm.json).
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

from modeling_evalign.utils.cli import ArgumentParser, run_cli

_LIST_FIELDS = {"photos": str, "render_size": int, "durations": float, "eval_durations": float}


def parse_args(argv=None):
    from modeling_evalign.downstream.proxy_vlm import ProxyVlmConfig

    defaults = ProxyVlmConfig()
    p = ArgumentParser(prog="pretrain_proxy_vlm.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--tower", default=None, help="CLIP directory of the vision tower (default: the proxy CLIP)")
    p.add_argument("--output-dir", default=None, help="write the model here instead of the cache")
    p.add_argument("--cache-dir", default=None, help="cache root (default: $EVALIGN_HOME or ~/.cache/evalign)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    for f in dataclasses.fields(ProxyVlmConfig):
        flag = "--" + f.name.replace("_", "-")
        value = getattr(defaults, f.name)
        if f.name in _LIST_FIELDS:
            p.add_argument(flag, nargs="+", type=_LIST_FIELDS[f.name], default=list(value), help=f"default {value}")
        else:
            p.add_argument(flag, type=type(value), default=value, help=f"default {value}")
    return p.parse_args(argv)


def main(argv=None) -> int:
    from modeling_evalign.downstream.proxy_vlm import (
        INFO_FILE,
        ProxyVlmConfig,
        build_proxy_vlm,
        ensure_proxy_vlm,
    )

    args = vars(parse_args(argv))
    tower, output_dir = args.pop("tower"), args.pop("output_dir")
    cache_dir, quiet = args.pop("cache_dir"), args.pop("quiet")
    config = ProxyVlmConfig(**args)
    if tower is None:
        from modeling_evalign.features.proxy_clip import ensure_proxy_clip

        tower = ensure_proxy_clip(cache_dir, progress=not quiet)
    elif not Path(tower).is_dir():
        raise FileNotFoundError(f"--tower {tower}: no such directory (expected a CLIP model directory)")
    if output_dir:
        done = Path(output_dir) / INFO_FILE
        path = Path(output_dir) if done.is_file() else build_proxy_vlm(output_dir, tower, config, progress=not quiet)
    else:
        path = ensure_proxy_vlm(tower, cache_dir, config, progress=not quiet)
    info = json.loads((path / INFO_FILE).read_text())
    print(path)
    print(json.dumps(info["metrics"], indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
