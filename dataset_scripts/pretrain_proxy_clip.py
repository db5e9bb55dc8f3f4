"""Pretrain the proxy CLIP tower (a small CLIPModel) on the synthetic generator's RGB frames and save it as a
normal Hugging Face directory with a model card.

    python dataset_scripts/pretrain_proxy_clip.py                       # the default tower, cached
    python dataset_scripts/pretrain_proxy_clip.py --output-dir towers/proxy --steps 600 --image-size 96

Without ``--output-dir`` the tower goes to the cache ``ensure_proxy_clip`` reads (``$EVALIGN_HOME`` or
``~/.cache/evalign``, or ``--cache-dir``), so the main job reuses it. A killed run resumes when rerun with
the same flags. Prints the directory and the held-out metrics (also in its README.md and proxy_clip.json).
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

from modeling_evalign.utils.cli import ArgumentParser, run_cli

_LIST_FIELDS = {"photos": str, "render_size": int, "crop_scale": float}


def parse_args(argv=None):
    from modeling_evalign.features.proxy_clip import ProxyClipConfig

    defaults = ProxyClipConfig()
    p = ArgumentParser(prog="pretrain_proxy_clip.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--output-dir", default=None, help="write the tower here instead of the cache")
    p.add_argument("--cache-dir", default=None, help="cache root (default: $EVALIGN_HOME or ~/.cache/evalign)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    for f in dataclasses.fields(ProxyClipConfig):
        flag = "--" + f.name.replace("_", "-")
        value = getattr(defaults, f.name)
        if f.name in _LIST_FIELDS:
            p.add_argument(flag, nargs="+", type=_LIST_FIELDS[f.name], default=list(value), help=f"default {value}")
        else:
            p.add_argument(flag, type=type(value), default=value, help=f"default {value}")
    return p.parse_args(argv)


def main(argv=None) -> int:
    from modeling_evalign.features.proxy_clip import ProxyClipConfig, build_proxy_clip, ensure_proxy_clip

    args = vars(parse_args(argv))
    output_dir, cache_dir, quiet = args.pop("output_dir"), args.pop("cache_dir"), args.pop("quiet")
    config = ProxyClipConfig(**args)
    if output_dir:
        done = Path(output_dir) / "proxy_clip.json"
        path = Path(output_dir) if done.is_file() else build_proxy_clip(output_dir, config, progress=not quiet)
    else:
        path = ensure_proxy_clip(cache_dir, config, progress=not quiet)
    info = json.loads((path / "proxy_clip.json").read_text())
    print(path)
    print(json.dumps(info["metrics"], indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
