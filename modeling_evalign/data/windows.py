"""The DSEC window rule, the eight durations and the sequence split rule (pure functions, numpy only).

Window rule (per sequence, all times in µs on the image clock, i.e. event ``t + t_offset``):

* usable span ``[span_start, span_end)`` with ``span_start = max(recording start, first image timestamp)``
  and ``span_end = min(recording end, last image timestamp)``, the recording being the reader's
  ``time_range_us`` (``t_offset`` to ``t_offset +`` the later of last event + 1 and the ``ms_to_idx``
  extent); clipping to the image timestamps keeps every window's end inside the RGB stream, so its paired
  frame is at most half a frame period away;
* ``K = floor((span_end - span_start) / duration)`` non-overlapping consecutive windows
  ``[span_start + k*duration, span_start + (k+1)*duration)``, ``k = 0..K-1`` (the tail shorter than one
  duration is dropped);
* each window is paired with the RGB frame whose timestamp is nearest to the window END (ties -> the earlier
  frame).

Split rule (by sequence, so no window of a sequence is in two splits): sort the sequence names, permute them
with ``numpy.random.default_rng(seed)``, then the first ``n_test = floor(n * test_fraction + 0.5)`` go to
``test``, the next ``n_val = floor(n * val_fraction + 0.5)`` to ``validation`` and the rest to ``train``.
The same names, fractions and seed always give the same assignment.

Stratified variant (``groups``: name -> scene, e.g. DSEC's recordings of one place, or the photograph of a
synthetic sequence): the same ``n_test`` and ``n_val``, but taken one sequence per scene in turn (scenes in a
seeded order, each scene's sequences permuted by the same generator), never the last sequence of a scene while
another scene can give one; so every scene keeps a training sequence whenever there are enough sequences, and
held-out sequences show scenes seen in training from other paths.

Retrieval positives: consecutive windows of one sequence show nearly the same scene (the camera moves
little in one window), so "positive = same index" under-counts true matches. Use the sequence name (or
sequence plus a coarse time bin) as the positive group when scoring retrieval on these datasets.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

# config name -> window duration in µs; the sample counts are those of the brief (DSEC train sequences)
DURATIONS_US: dict[str, int] = {
    "200ms": 200_000,
    "500ms": 500_000,
    "1s": 1_000_000,
    "2s": 2_000_000,
    "4s": 4_000_000,
    "5s": 5_000_000,
    "10s": 10_000_000,
    "20s": 20_000_000,
}
SPLIT_NAMES = ("train", "validation", "test")
SPLIT_RULE = (
    "Splits are made by sequence, so no window of a sequence is in two splits: the sequence names are "
    "sorted and permuted with numpy.random.default_rng(split_seed); the first floor(n * test_fraction + 0.5) "
    "go to test, the next floor(n * val_fraction + 0.5) to validation, the rest to train."
)


def duration_us(name: str) -> int:
    """Window duration in µs of a config name such as ``"1s"``; raises ValueError listing the valid names."""
    if name not in DURATIONS_US:
        raise ValueError(f"duration {name!r} is not one of {list(DURATIONS_US)}")
    return DURATIONS_US[name]


def usable_span(
    event_start_us: int, event_end_us: int, image_timestamps_us: Sequence[int]
) -> tuple[int, int]:
    """``(span_start, span_end)`` of the window rule; ``event_end_us`` is EXCLUSIVE.

    Raises ValueError when the image timestamps are empty or not strictly increasing.
    """
    ts = np.asarray(image_timestamps_us, dtype=np.int64)
    if ts.ndim != 1 or ts.size == 0:
        raise ValueError(f"image timestamps: expected a non-empty 1-D list, got shape {ts.shape}")
    if ts.size > 1 and np.any(np.diff(ts) <= 0):
        bad = int(np.argmax(np.diff(ts) <= 0))
        raise ValueError(
            f"image timestamps must increase strictly; row {bad + 1} is {ts[bad + 1]} after {ts[bad]}"
        )
    start = max(int(event_start_us), int(ts[0]))
    end = min(int(event_end_us), int(ts[-1]))
    return start, max(start, end)


def window_bounds(span_start_us: int, span_end_us: int, window_us: int) -> np.ndarray:
    """int64 ``[K, 2]`` array of ``[start, end)`` µs of the consecutive windows fitting in the span."""
    if window_us <= 0:
        raise ValueError(f"window duration must be positive, got {window_us} µs")
    count = max(0, (int(span_end_us) - int(span_start_us)) // int(window_us))
    starts = int(span_start_us) + np.arange(count, dtype=np.int64) * int(window_us)
    return np.stack([starts, starts + int(window_us)], axis=1) if count else np.zeros((0, 2), np.int64)


def nearest_frame_index(
    image_timestamps_us: Sequence[int], times_us: Iterable[int] | np.ndarray
) -> np.ndarray:
    """Index of the image timestamp nearest to each time (ties -> the earlier frame), int64 like ``times_us``."""
    ts = np.asarray(image_timestamps_us, dtype=np.int64)
    t = np.asarray(times_us, dtype=np.int64)
    right = np.clip(np.searchsorted(ts, t, side="left"), 0, ts.size - 1)
    left = np.clip(right - 1, 0, ts.size - 1)
    take_left = np.abs(t - ts[left]) <= np.abs(ts[right] - t)
    return np.where(take_left, left, right).astype(np.int64)


def assign_splits(
    sequence_names: Iterable[str], val_fraction: float = 0.1, test_fraction: float = 0.1, seed: int = 0,
    groups: dict[str, str] | None = None,
) -> dict[str, str]:
    """Sequence name -> split name by the documented split rule (see the module docstring); ``groups`` (name
    -> scene) selects the stratified variant."""
    names = sorted(set(sequence_names))
    for field, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0.0 <= value < 1.0:
            raise ValueError(f"{field} must be in [0, 1), got {value}")
    n = len(names)
    n_test = int(np.floor(n * test_fraction + 0.5))
    n_val = int(np.floor(n * val_fraction + 0.5))
    if n - n_test - n_val < 1:
        raise ValueError(
            f"{n} sequence(s) cannot give a train split with val_fraction={val_fraction}, "
            f"test_fraction={test_fraction} ({n_val} validation + {n_test} test)"
        )
    if groups is not None:
        return _stratified(names, groups, n_test, n_val, seed)
    order = np.random.default_rng(seed).permutation(n)
    out = {}
    for rank, i in enumerate(order):
        out[names[i]] = "test" if rank < n_test else "validation" if rank < n_test + n_val else "train"
    return out


def _stratified(names: list[str], groups: dict[str, str], n_test: int, n_val: int, seed: int) -> dict[str, str]:
    missing = [name for name in names if name not in groups]
    if missing:
        raise KeyError(f"groups has no scene for sequence(s) {missing[:5]}")
    rng = np.random.default_rng(seed)
    scenes = sorted({str(groups[name]) for name in names})
    pools = {}
    for scene in scenes:
        members = [name for name in names if str(groups[name]) == scene]
        pools[scene] = [members[i] for i in rng.permutation(len(members))]
    order = [scenes[i] for i in rng.permutation(len(scenes))]
    out = dict.fromkeys(names, "train")
    turn = 0
    for split, count in (("test", n_test), ("validation", n_val)):
        for _ in range(count):
            # the next scene in turn that keeps a training sequence after giving one; else any non-empty scene
            ring = order[turn % len(order):] + order[: turn % len(order)]
            scene = next((s for s in ring if len(pools[s]) > 1), None) or next(s for s in ring if pools[s])
            out[pools[scene].pop()] = split
            turn = order.index(scene) + 1
    return out
