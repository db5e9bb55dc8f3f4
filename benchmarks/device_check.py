"""One-shot device check: the brief's latency claims and the real-size costs on one GPU, with baselines.

    python benchmarks/device_check.py --json device_check.json          # on a GPU machine (< 8 min)
    python benchmarks/device_check.py --quick --json /tmp/dc.json      # tiny sizes, seconds (the CPU test)

Every row is timed beside a baseline measured in the same run on the same device and dtype:

* lightweight adapter, pooled 1024->1024 at batch 1 and 256, and token level 577 (CLS + 24x24) -> 256
  (16x16, CLS dropped) for one window; baseline a bare ``addmm`` of the rows the adapter's linear sees;
  target < 1 ms;
* triple-modal forward (event head 1024 -> 1024 -> 768) at batch 1 and 256; baseline ``addmm`` 1024->768;
  target < 2 ms;
* FireNet and E2VID_lightweight, one recurrent step at 640x480, fp32 and bf16 (autocast); baseline one
  bare ``conv2d`` 32->32 k3 at 640x480; target < 15 ms for E2VID; the full reconstruction bridge
  (E2VID_lightweight + CLIP-L/14-336 tower, bf16) is timed too;
* CLIP-L/14-336 event-feature extraction (bf16 autocast, 8 windows x 5 frames per forward, EventGPT
  pooling): windows/s; baseline the time the tower's FLOPs take at a bare bf16 GEMM's rate;
* one contrastive_image LoRA training step (CLIP-L/14 at 224, LoRA r16 on q/v, batch 32, bf16 autocast,
  AdamW); baseline one forward of the frozen tower on the same batch.

GPU timing: warm-up calls, then CUDA events around each call (``torch.cuda.synchronize`` before reading),
median over the repeats; cudnn autotuning on. Without a GPU it says so ("no GPU found") and runs on CPU.
``--budget-s`` (default 420) stops starting new cases once spent; skipped rows say so. Random weights
from the public configs (``features.clip_configs``): nothing is downloaded.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

NO_GPU = "no GPU found: running on CPU (these are CPU numbers, not the GPU check)"
TARGETS_MS = {"adapter": 1.0, "triple": 2.0, "e2vid": 15.0}


@dataclass
class Row:
    id: str
    case: str
    dtype: str
    ms: float | None
    baseline: str
    baseline_ms: float | None
    target_ms: float | None = None
    throughput: str = ""
    note: str = ""

    @property
    def ratio(self) -> float | None:
        return self.ms / self.baseline_ms if self.ms and self.baseline_ms else None

    @property
    def meets_target(self) -> bool | None:
        return None if self.target_ms is None or self.ms is None else self.ms < self.target_ms

    def to_dict(self) -> dict:
        return {**asdict(self), "ratio": self.ratio, "meets_target": self.meets_target}


class Timer:
    """Median milliseconds of ``fn()`` after warm-up; CUDA events on a GPU, perf_counter on CPU."""

    def __init__(self, device: torch.device, repeats: int, warmup: int):
        self.device, self.repeats, self.warmup = device, repeats, warmup

    def scaled(self, divisor: int) -> int:
        """Fewer repeats for the slow cases: ``repeats // divisor``, at least ``min(5, repeats)``."""
        return max(min(5, self.repeats), self.repeats // divisor)

    def __call__(self, fn, repeats: int | None = None) -> float:
        repeats = repeats or self.repeats
        cuda = self.device.type == "cuda"
        for _ in range(self.warmup):
            fn()
        if cuda:
            torch.cuda.synchronize(self.device)
        times = []
        for _ in range(repeats):
            if cuda:
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                fn()
                end.record()
                torch.cuda.synchronize(self.device)
                times.append(start.elapsed_time(end))
            else:
                t0 = time.perf_counter()
                fn()
                times.append((time.perf_counter() - t0) * 1e3)
        return statistics.median(times)


def sizes(quick: bool) -> dict:
    if quick:
        return dict(dim=64, target=32, grid=(4, 2), hw=(32, 32), clip=dict(image_size=32, patch_size=8,
                    hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                    projection_dim=16), clip_target_size=32, windows=2, lora_batch=2, repeats=3, warmup=1)
    return dict(dim=1024, target=768, grid=(24, 16), hw=(480, 640), clip=None, clip_target_size=224,
                windows=8, lora_batch=32, repeats=100, warmup=10)


def _autocast(device: torch.device, dtype: torch.dtype):
    import contextlib

    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def _clip(sz: dict, image_size: int, device, seed: int, with_projection: bool = False):
    from transformers import CLIPVisionConfig, CLIPVisionModel, CLIPVisionModelWithProjection

    from modeling_evalign.features.clip_configs import CLIP_L14_VISION

    fields = sz["clip"] or {**CLIP_L14_VISION, "image_size": image_size}
    config = CLIPVisionConfig(**fields)
    cls = CLIPVisionModelWithProjection if with_projection else CLIPVisionModel
    with torch.random.fork_rng(devices=[]), torch.device(device):
        torch.manual_seed(seed)
        model = cls(config)
    return model.eval().requires_grad_(False)


def _addmm(x: torch.Tensor, d_out: int):
    w, b = torch.randn(d_out, x.shape[-1], device=x.device) * 0.02, torch.zeros(d_out, device=x.device)
    return lambda: torch.addmm(b, x, w.T)


def adapter_rows(sz, device, timer) -> list[Row]:
    from modeling_evalign.lightweight.configuration_lightweight import LightweightAlignmentConfig
    from modeling_evalign.lightweight.modeling_lightweight import LightweightAlignmentModule

    d, rows = sz["dim"], []
    pooled = LightweightAlignmentModule(LightweightAlignmentConfig(event_dim=d, target_dim=d)).to(device).eval()
    for batch in (1, 256):
        x = torch.randn(batch, d, device=device)
        rows.append(Row(f"adapter_pooled_b{batch}", f"adapter pooled {d}->{d}, batch {batch}", "float32",
                        timer(lambda x=x: pooled(event_features=x)), f"addmm {batch}x{d}->{d}",
                        timer(_addmm(x, d)), TARGETS_MS["adapter"]))
    src, dst = sz["grid"]
    cfg = LightweightAlignmentConfig(event_dim=d, target_dim=d, source_grid=[src, src], target_grid=[dst, dst],
                                     keep_cls_token=False)
    tokens = LightweightAlignmentModule(cfg).to(device).eval()
    x = torch.randn(1, 1 + src * src, d, device=device)
    rows.append(Row("adapter_tokens", f"adapter tokens {1 + src * src}->{dst * dst} (grid {src}->{dst}), 1 window",
                    "float32", timer(lambda: tokens(event_features=x)), f"addmm {dst * dst}x{d}->{d}",
                    timer(_addmm(torch.randn(dst * dst, d, device=device), d)), TARGETS_MS["adapter"]))
    return rows


def triple_rows(sz, device, timer) -> list[Row]:
    from modeling_evalign.triple_modal.configuration_triple_modal import TripleModalAlignmentConfig
    from modeling_evalign.triple_modal.modeling_triple_modal import TripleModalAlignmentModule

    d, t = sz["dim"], sz["target"]
    model = TripleModalAlignmentModule(TripleModalAlignmentConfig(event_dim=d, target_dim=t, hidden_dim=d))
    model = model.to(device).eval()
    rows = []
    for batch in (1, 256):
        x = torch.randn(batch, d, device=device)
        rows.append(Row(f"triple_b{batch}", f"triple-modal forward {d}->{d}->{t}, batch {batch}", "float32",
                        timer(lambda x=x: model(event_features=x)), f"addmm {batch}x{d}->{t}",
                        timer(_addmm(x, t)), TARGETS_MS["triple"]))
    return rows


def reconstruction_rows(sz, device, timer) -> list[Row]:
    from modeling_evalign.reconstruction.configuration_e2vid import E2VIDConfig
    from modeling_evalign.reconstruction.configuration_firenet import FireNetConfig
    from modeling_evalign.reconstruction.modeling_e2vid import E2VIDModel
    from modeling_evalign.reconstruction.modeling_firenet import FireNetModel

    h, w = sz["hw"]
    voxel = torch.randn(1, 5, h, w, device=device)
    conv = torch.nn.Conv2d(32, 32, 3, padding=1).to(device).eval()
    feat = torch.randn(1, 32, h, w, device=device)
    nets = {"firenet": FireNetModel(FireNetConfig()), "e2vid": E2VIDModel(E2VIDConfig.lightweight())}
    rows = []
    for name, net in nets.items():
        net = net.to(device).eval()
        for dtype in (torch.float32, torch.bfloat16):
            with _autocast(device, dtype):
                state = {"s": net(voxel).states}

                def step(net=net, state=state):
                    state["s"] = net(voxel, prev_states=state["s"]).states  # recurrent: state carried

                ms = timer(step, timer.scaled(3))
                base = timer(lambda: conv(feat), timer.scaled(3))
            label = "FireNet" if name == "firenet" else "E2VID_lightweight"
            rows.append(Row(f"{name}_{str(dtype)[6:]}", f"{label} step {w}x{h}", str(dtype)[6:], ms,
                            f"conv2d 32->32 k3 {w}x{h}", base, TARGETS_MS["e2vid"] if name == "e2vid" else None))
    return rows


def bridge_row(sz, device, timer, tower) -> Row:
    from modeling_evalign.reconstruction.configuration_e2vid import E2VIDConfig
    from modeling_evalign.reconstruction.configuration_reconstruction import ReconstructionAlignmentConfig
    from modeling_evalign.reconstruction.modeling_reconstruction import ReconstructionAlignmentModule

    h, w = sz["hw"]
    model = ReconstructionAlignmentModule(ReconstructionAlignmentConfig(
        reconstruction_config=E2VIDConfig.lightweight().to_dict())).to(device).eval()
    model.set_clip_tower(tower)
    voxel = torch.randn(1, 5, h, w, device=device)
    px = torch.randn(1, 3, tower.config.image_size, tower.config.image_size, device=device)
    with _autocast(device, torch.bfloat16):
        ms = timer(lambda: model(voxel), timer.scaled(5))
        base = timer(lambda: tower(pixel_values=px), timer.scaled(5))
    size = tower.config.image_size
    return Row("bridge_bf16", f"reconstruction bridge: E2VID_lightweight {w}x{h} + CLIP tower {size}", "bfloat16",
               ms, f"CLIP tower {size} alone", base, TARGETS_MS["e2vid"])


def gemm_ms(device, dtype, flops: int, timer, m: int = 4096, k: int = 1024) -> float:
    """Milliseconds ``flops`` take at the rate of a bare GEMM (m x k x m) in ``dtype``."""
    a = torch.randn(m, k, device=device, dtype=dtype)
    b = torch.randn(k, m, device=device, dtype=dtype)
    ms = timer(lambda: a @ b, timer.scaled(5))
    return flops / (2 * m * k * m / ms)


def extraction_row(sz, device, timer, tower) -> Row:
    from torch.utils.flop_counter import FlopCounterMode

    from modeling_evalign.features.extraction import ExtractionOptions, _encode_event_pixels

    n, size = sz["windows"], tower.config.image_size
    pixels = torch.randn(n, 5, 3, size, size, device=device)
    opts = ExtractionOptions(event_pooling="tokens")
    with torch.inference_mode():
        run = lambda: _encode_event_pixels(tower, pixels, opts, torch.bfloat16)  # noqa: E731
        with FlopCounterMode(display=False) as counter:
            run()
        ms = timer(run, timer.scaled(10))
        gemm = (4096, 1024) if sz["clip"] is None else (256, 256)
        base = gemm_ms(device, torch.bfloat16, counter.get_total_flops(), timer, *gemm)
    return Row("extraction_bf16", f"CLIP tower {size} event features, {n} windows x 5 frames per forward",
               "bfloat16", ms, "tower FLOPs at bare GEMM rate", base,
               throughput=f"{n / ms * 1e3:.1f} windows/s")


def lora_row(sz, device, timer) -> Row:
    from modeling_evalign.contrastive.configuration_contrastive_image import ContrastiveImageAlignmentConfig
    from modeling_evalign.contrastive.modeling_contrastive_image import ContrastiveImageAlignmentModel

    clip = _clip(sz, sz["clip_target_size"], device, seed=2, with_projection=True)
    model = ContrastiveImageAlignmentModel(ContrastiveImageAlignmentConfig(clip_model_id="random"),
                                           clip_model=clip).to(device).train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4)
    b, size = sz["lora_batch"], clip.config.image_size
    ev, px = torch.randn(b, 3, size, size, device=device), torch.randn(b, 3, size, size, device=device)

    def step():
        with _autocast(device, torch.bfloat16):
            loss = model(event_pixel_values=ev, pixel_values=px).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    ms = timer(step, timer.scaled(20))
    with torch.inference_mode(), _autocast(device, torch.bfloat16):
        base = timer(lambda: model.target_encoder(pixel_values=px), timer.scaled(20))
    n_lora = sum(p.numel() for p in params)
    return Row("lora_step_bf16", f"contrastive_image LoRA step, CLIP {size}, batch {b}", "bfloat16", ms,
               "frozen tower forward, same batch", base, note=f"{n_lora:,} trainable parameters")


def pick_device(name: str) -> tuple[torch.device, bool]:
    if name in ("auto", "cuda") and torch.cuda.is_available():
        return torch.device("cuda"), True
    return torch.device("cpu"), False


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="tiny sizes and few repeats (seconds; CPU test)")
    ap.add_argument("--device", default="auto", choices=["auto", "cuda", "cpu"])
    ap.add_argument("--json", default=None, help="write the rows and the environment here")
    ap.add_argument("--budget-s", type=float, default=420.0, help="start no new case after this many seconds")
    ap.add_argument("--threads", type=int, default=None, help="CPU threads (--quick default: 1, the tiny "
                    "ops run faster on one thread than on contended ones)")
    args = ap.parse_args(argv)
    threads = torch.get_num_threads()
    if args.threads or args.quick:
        torch.set_num_threads(args.threads or 1)
    try:
        return run(args)
    finally:
        torch.set_num_threads(threads)  # main() may be called in-process (the test)


def run(args) -> dict:
    started = time.perf_counter()
    device, gpu = pick_device(args.device)
    if not gpu:
        print(NO_GPU if args.device != "cpu" else "--device cpu: running on CPU", flush=True)
    else:
        torch.backends.cudnn.benchmark = True  # fixed shapes: let cudnn pick its fastest convolutions
    sz = sizes(args.quick)
    timer = Timer(device, sz["repeats"], sz["warmup"])
    torch.manual_seed(0)
    rows: list[Row] = []
    tower = None

    def extraction():
        nonlocal tower
        tower = _clip(sz, 336, device, seed=0)
        return [extraction_row(sz, device, timer, tower), bridge_row(sz, device, timer, tower)]

    cases = [
        ("adapters", lambda: adapter_rows(sz, device, timer),
         ["adapter_pooled_b1", "adapter_pooled_b256", "adapter_tokens"]),
        ("triple", lambda: triple_rows(sz, device, timer), ["triple_b1", "triple_b256"]),
        ("reconstruction", lambda: reconstruction_rows(sz, device, timer),
         ["firenet_float32", "firenet_bfloat16", "e2vid_float32", "e2vid_bfloat16"]),
        ("extraction", extraction, ["extraction_bf16", "bridge_bf16"]),
        ("lora", lambda: [lora_row(sz, device, timer)], ["lora_step_bf16"]),
    ]
    for name, fn, ids in cases:
        spent = time.perf_counter() - started
        if spent > args.budget_s:
            rows += [Row(i, i, "-", None, "-", None, note=f"skipped: time budget spent ({spent:.0f} s)") for i in ids]
            continue
        with torch.inference_mode(name != "lora"):
            rows += fn()
        print(f"[{time.perf_counter() - started:.0f} s] {name} done", file=sys.stderr, flush=True)
    report = {
        "device": str(device),
        "gpu": torch.cuda.get_device_name(device) if gpu else None,
        "no_gpu": not gpu,
        "quick": args.quick,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "host": platform.node(),
        "threads": torch.get_num_threads(),
        "seconds": time.perf_counter() - started,
        "rows": [r.to_dict() for r in rows],
    }
    print_table(report)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return report


def _fmt(v, spec=".3f") -> str:
    return "-" if v is None else format(v, spec)


def print_table(report: dict) -> None:
    where = report["gpu"] or f"CPU ({report['threads']} threads)"
    print(f"\ndevice check on {where}, torch {report['torch']}{' (quick sizes)' if report['quick'] else ''}, "
          f"{report['seconds']:.0f} s")
    print("| case | dtype | ms | baseline | baseline ms | ratio | target ms | meets | throughput / note |")
    print("|---|---|---:|---|---:|---:|---:|---|---|")
    for r in report["rows"]:
        meets = {True: "yes", False: "NO", None: "-"}[r["meets_target"]]
        extra = "; ".join(x for x in (r["throughput"], r["note"]) if x)
        print(f"| {r['case']} | {r['dtype']} | {_fmt(r['ms'])} | {r['baseline']} | {_fmt(r['baseline_ms'])} | "
              f"{_fmt(r['ratio'], '.2f')} | {_fmt(r['target_ms'], '.0f')} | {meets} | {extra} |")


if __name__ == "__main__":
    main()
