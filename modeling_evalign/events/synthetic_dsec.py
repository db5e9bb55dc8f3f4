"""Write synthetic sequences in the real DSEC layout: photographs under a moving camera, events from
:class:`~.simulator.EventSimulator` at the sensor size, 20 Hz RGB images at the image size (same
camera path), plus ``evalign_synthetic.json`` recording the scene, its class label and the motion.

Each sequence is built in a temporary directory and renamed into place when complete, so a killed run
never leaves a half-written sequence and a rerun skips the complete ones. Deterministic per seed.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..utils.io_utils import atomic_directory
from .dsec_format import EVENTS_FILE, IMAGE_NAME, IMAGES_DIR, RECTIFY_MAP_FILE, TIMESTAMPS_FILE
from .dsec_writer import DsecEventWriter, write_rectify_map
from .scenes import PHOTOS, CameraMotion, PhotoScene, load_photo
from .simulator import EventSimulator, simulate_adaptive

__all__ = [
    "SyntheticDsecJob", "SyntheticDsecOptions", "start_synthetic_dsec", "write_synthetic_dsec",
    "write_synthetic_sequence",
]

INFO_FILE = "evalign_synthetic.json"
FORMAT_VERSION = 1


@dataclass
class SyntheticDsecOptions:
    """Simulation settings shared by all sequences (sizes are (width, height) like the CLI)."""

    image_size: tuple[int, int] = (1440, 1080)
    sensor_size: tuple[int, int] = (640, 480)
    image_rate_hz: float = 20.0
    contrast_threshold: float = 0.2
    threshold_sigma: float = 0.03
    refractory_us: int = 0
    hot_pixel_fraction: float = 1e-4
    hot_pixel_rate_hz: float = 20.0
    background_rate_hz: float = 0.05
    eps: float = 0.02  # log(I/255 + eps): a larger eps than ESIM's keeps dark noise from exploding
    blur_sigma: float = 1.0  # photo pixels (optics)
    speed_range: tuple[float, float] = (0.3, 1.0)
    min_dt_us: int = 200
    max_dt_us: int = 10_000
    chunk_events: int = 1 << 17
    png_compress_level: int = 1

    def __post_init__(self):
        for name in ("image_size", "sensor_size"):
            size = getattr(self, name)
            if len(size) != 2 or any(int(v) <= 0 for v in size):
                raise ValueError(f"{name} must be (width, height) with positive ints, got {size!r}")
            setattr(self, name, (int(size[0]), int(size[1])))
        if not self.image_rate_hz > 0:
            raise ValueError(f"image_rate_hz must be > 0, got {self.image_rate_hz}")


@contextlib.contextmanager
def _torch_threads(n: int) -> Iterator[None]:
    # many small tensor ops: OpenMP threads on a busy machine cost far more than they save
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def _sequence_plan(seed: int, index: int, photos: Sequence[str]) -> dict:
    rng = np.random.default_rng([seed, index])
    order = np.random.default_rng([seed]).permutation(len(photos))
    scene = photos[int(order[index % len(photos)])]
    return {"rng": rng, "scene": scene}


def write_synthetic_sequence(
    dest: str | os.PathLike,
    scene: str,
    seconds: float,
    seed: int,
    options: SyntheticDsecOptions | None = None,
    rng: np.random.Generator | None = None,
    progress: bool = True,
) -> Path:
    """Write one sequence to ``dest`` atomically (temp dir + rename); returns ``dest``."""
    import h5py  # noqa: F401  (fail early, before any work, when h5py is missing)
    from PIL import Image

    from ..utils.progress import progress_bar

    opt = options or SyntheticDsecOptions()
    if not seconds > 0:
        raise ValueError(f"seconds must be > 0, got {seconds}")
    rng = rng if rng is not None else np.random.default_rng(seed)
    speed = float(rng.uniform(*opt.speed_range))
    motion = CameraMotion.random(rng, speed=speed)
    t_offset = int(rng.integers(10, 1000)) * 1_000_000 + int(rng.integers(0, 1_000_000))
    sim_seed = int(rng.integers(0, 2**31 - 1))
    scene_obj = PhotoScene(load_photo(scene), motion, blur_sigma=opt.blur_sigma)
    sw, sh = opt.sensor_size
    iw, ih = opt.image_size
    end_us = int(round(seconds * 1e6))
    period = 1e6 / opt.image_rate_hz
    image_times = np.round(np.arange(0, end_us + 1e-6, period)).astype(np.int64)
    sim = EventSimulator(
        sh,
        sw,
        contrast_threshold=opt.contrast_threshold,
        threshold_sigma=opt.threshold_sigma,
        refractory_us=opt.refractory_us,
        hot_pixel_fraction=opt.hot_pixel_fraction,
        hot_pixel_rate_hz=opt.hot_pixel_rate_hz,
        background_rate_hz=opt.background_rate_hz,
        eps=opt.eps,
        seed=sim_seed,
    )
    dest = Path(dest)
    with _torch_threads(1), atomic_directory(dest) as tmp:
        (tmp / EVENTS_FILE).parent.mkdir(parents=True)
        (tmp / IMAGES_DIR).mkdir(parents=True)
        write_rectify_map(tmp / RECTIFY_MAP_FILE, sh, sw)
        writer = DsecEventWriter(tmp / EVENTS_FILE, t_offset=t_offset, chunk_events=opt.chunk_events)
        try:
            bar = progress_bar(
                total=len(image_times), desc=f"{dest.name} ({scene})", unit="img", disable=not progress
            )
            for i, t_img in enumerate(image_times):
                if i:  # events from the previous image to this one
                    for ev in simulate_adaptive(
                        lambda t: scene_obj.render(t, sh, sw),
                        sim,
                        int(image_times[i - 1]),
                        int(t_img),
                        min_dt_us=opt.min_dt_us,
                        max_dt_us=opt.max_dt_us,
                    ):
                        writer.append(ev.x, ev.y, ev.t, ev.p)
                frame = scene_obj.render(float(t_img), ih, iw, rgb=True)
                Image.fromarray(np.round(frame).astype(np.uint8)).save(
                    tmp / IMAGES_DIR / IMAGE_NAME.format(i), compress_level=opt.png_compress_level
                )
                bar.update(1)
            bar.close()
            num_events = len(writer)
            writer.close(end_us)
        except BaseException:
            writer.abort()
            raise
        (tmp / TIMESTAMPS_FILE).write_text("".join(f"{int(t) + t_offset}\n" for t in image_times))
        info = {
            "format_version": FORMAT_VERSION,
            "scene": scene,
            "label": PHOTOS[scene],
            "seed": seed,
            "speed": speed,
            "motion": motion.to_dict(),
            "t_offset_us": t_offset,
            "duration_us": end_us,
            "num_events": num_events,
            "num_images": int(len(image_times)),
            "simulator": {
                **{k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(opt).items()},
                "seed": sim_seed,
            },
        }
        (tmp / INFO_FILE).write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
    return dest


def _plan_tree(out, sequences, seconds, seed, image_size, sensor_size, photos, progress, options):
    """Checked options, every sequence's path, and the arguments of the ones still to write."""
    if sequences < 1:
        raise ValueError(f"sequences must be >= 1, got {sequences}")
    photos = list(photos) if photos is not None else sorted(PHOTOS)
    unknown = [p for p in photos if p not in PHOTOS]
    if unknown or not photos:
        raise KeyError(f"unknown photographs {unknown}; expected names from {sorted(PHOTOS)}")
    opt = SyntheticDsecOptions(image_size=tuple(image_size), sensor_size=tuple(sensor_size), **options)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths, pending = [], []
    for i in range(sequences):
        plan = _sequence_plan(seed, i, photos)
        dest = out / f"synthetic_{i:03d}_{plan['scene']}"
        if not (dest / INFO_FILE).is_file():
            pending.append((dest, plan["scene"], seconds, seed, opt, plan["rng"], progress))
        paths.append(dest)
    return paths, pending


def _check_workers(workers) -> int:
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be an integer >= 1, got {workers!r}")
    return workers


class SyntheticDsecJob:
    """Sequences being written by worker processes (:func:`start_synthetic_dsec`). ``result()`` waits and
    returns every sequence's path, re-raising a worker's error; ``cancel()`` drops the ones not started.
    A finished sequence stays whatever happens to the others (each is written atomically)."""

    def __init__(self, pool, futures, paths: list[Path]):
        self._pool, self._futures, self.paths = pool, futures, paths

    def result(self) -> list[Path]:
        try:
            for future in self._futures:
                future.result()
        finally:
            self._pool.shutdown(cancel_futures=True)
        return self.paths

    def cancel(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def start_synthetic_dsec(
    out: str | os.PathLike,
    sequences: int = 2,
    seconds: float = 2.0,
    seed: int = 0,
    image_size: tuple[int, int] = (1440, 1080),
    sensor_size: tuple[int, int] = (640, 480),
    photos: Sequence[str] | None = None,
    workers: int = 1,
    on_sequence: Callable[[Path, int, int], None] | None = None,
    **options,
) -> SyntheticDsecJob:
    """Start :func:`write_synthetic_dsec` in ``workers`` spawned processes and return at once, so the caller can
    do other work (the main job pretrains its towers, which need no tree, meanwhile). Arguments are checked
    here, before any process starts. ``on_sequence(path, done, total)`` is called as each sequence lands
    (from a pool thread); the workers draw no progress bars."""
    import concurrent.futures
    import multiprocessing

    workers = _check_workers(workers)
    paths, pending = _plan_tree(out, sequences, seconds, seed, image_size, sensor_size, photos, False, options)
    # spawn, not fork: the parent may hold torch/OpenMP threads, which a forked child inherits broken
    pool = concurrent.futures.ProcessPoolExecutor(max(1, min(workers, len(pending))),
                                                  mp_context=multiprocessing.get_context("spawn"))
    futures = [pool.submit(write_synthetic_sequence, *args) for args in pending]
    if on_sequence is not None:
        done = [len(paths) - len(pending)]

        def report(future) -> None:
            if not future.cancelled() and future.exception() is None:
                done[0] += 1
                on_sequence(future.result(), done[0], len(paths))

        for future in futures:
            future.add_done_callback(report)
    return SyntheticDsecJob(pool, futures, paths)


def write_synthetic_dsec(
    out: str | os.PathLike,
    sequences: int = 2,
    seconds: float = 2.0,
    seed: int = 0,
    image_size: tuple[int, int] = (1440, 1080),
    sensor_size: tuple[int, int] = (640, 480),
    photos: Sequence[str] | None = None,
    progress: bool = True,
    workers: int = 1,
    **options,
) -> list[Path]:
    """Write ``sequences`` DSEC-format sequences of ``seconds`` each under ``out`` and return their paths.

    Sequence ``i`` is ``out/synthetic_{i:03d}_{scene}``; scenes cycle through ``photos`` (default: all
    of :data:`~.scenes.PHOTOS`) in a seed-dependent order. ``image_size``/``sensor_size`` are
    ``(width, height)``. Extra keyword arguments set :class:`SyntheticDsecOptions` fields. Complete
    sequences already present are skipped, so an interrupted run resumes where it stopped.
    ``workers > 1`` writes sequences in that many processes (no progress bars); every sequence draws from
    its own seeded generator, so the tree is byte-identical to ``workers=1``.
    """
    if _check_workers(workers) > 1:
        return start_synthetic_dsec(out, sequences, seconds, seed, image_size, sensor_size, photos, workers,
                                    **options).result()
    paths, pending = _plan_tree(out, sequences, seconds, seed, image_size, sensor_size, photos, progress, options)
    for args in pending:
        write_synthetic_sequence(*args)
    return paths
