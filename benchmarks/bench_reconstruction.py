"""Reconstruction speed: ms per frame of FireNet and E2VID_lightweight at 640x480 (DSEC's event sensor),
beside the FLOPs per frame and this machine's measured conv throughput, so the distance to the compute
floor is visible. Optionally the whole bridge (net + CLIP ViT-L/14-336 tower built from its config with
random weights: same compute as the real one, nothing downloaded).

    python benchmarks/bench_reconstruction.py [--device cpu|cuda] [--height 480 --width 640] [--repeats 5] [--clip]

Baseline measured in the same run: a single big conv2d (64->64, k3, on a 240x320 map), whose GFLOP/s is
taken as the achievable conv throughput. "x floor" = measured time / (FLOPs / that throughput).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from modeling_evalign.reconstruction.configuration_e2vid import E2VIDConfig
from modeling_evalign.reconstruction.configuration_firenet import FireNetConfig
from modeling_evalign.reconstruction.modeling_e2vid import E2VIDModel
from modeling_evalign.reconstruction.modeling_firenet import FireNetModel


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_it(fn, device, repeats, warmup=2):
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def count_flops(fn) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def conv_throughput(device, repeats) -> tuple[float, int]:
    """GFLOP/s of one big 3x3 conv (the baseline) and its FLOPs."""
    x = torch.randn(1, 64, 240, 320, device=device)
    conv = torch.nn.Conv2d(64, 64, 3, padding=1).to(device).eval()
    with torch.no_grad():
        flops = count_flops(lambda: conv(x))
        sec = time_it(lambda: conv(x), device, repeats)
    return flops / sec / 1e9, flops


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--clip", action="store_true", help="also time the full bridge with a CLIP-L/14-336 tower")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    torch.manual_seed(0)
    gflops_s, base_flops = conv_throughput(device, args.repeats)
    rows = [("conv2d 64->64 k3 240x320 (baseline)", base_flops, base_flops / gflops_s / 1e9 * 1e3)]
    voxel = torch.randn(1, 5, args.height, args.width, device=device)
    nets = {"FireNet": FireNetModel(FireNetConfig()), "E2VID_lightweight": E2VIDModel(E2VIDConfig.lightweight())}
    for name, net in nets.items():
        net = net.to(device).eval()
        with torch.no_grad():
            state = {"s": net(voxel).states}

            def step(net=net, state=state):
                state["s"] = net(voxel, prev_states=state["s"]).states  # recurrent: state carried

            flops = count_flops(step)
            sec = time_it(step, device, args.repeats)
        rows.append((f"{name} {args.width}x{args.height}", flops, sec * 1e3))
    if args.clip:
        from transformers import CLIPVisionConfig

        from modeling_evalign.reconstruction.configuration_reconstruction import ReconstructionAlignmentConfig
        from modeling_evalign.reconstruction.modeling_reconstruction import ReconstructionAlignmentModule

        vision = CLIPVisionConfig(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24,
                                  num_attention_heads=16, image_size=336, patch_size=14, projection_dim=768)
        model = ReconstructionAlignmentModule(ReconstructionAlignmentConfig(clip_config=vision.to_dict()))
        model = model.to(device).eval()
        model.clip_tower.to(device)
        with torch.no_grad():
            flops = count_flops(lambda: model(voxel))
            sec = time_it(lambda: model(voxel), device, max(2, args.repeats // 2), warmup=1)
        rows.append((f"bridge FireNet+CLIP-L/14-336 {args.width}x{args.height}", flops, sec * 1e3))
    print(f"device: {device} ({torch.get_num_threads()} threads); conv throughput {gflops_s:.1f} GFLOP/s")
    print(f"| {'what':<44} | {'GFLOP/frame':>11} | {'ms/frame':>9} | {'GFLOP/s':>8} | {'x floor':>7} |")
    print(f"|{'-' * 46}|{'-' * 13}|{'-' * 11}|{'-' * 10}|{'-' * 9}|")
    for what, flops, ms in rows:
        floor_ms = flops / gflops_s / 1e9 * 1e3
        print(f"| {what:<44} | {flops / 1e9:>11.2f} | {ms:>9.1f} | {flops / ms / 1e6:>8.1f} | {ms / floor_ms:>7.2f} |")


if __name__ == "__main__":
    main()
