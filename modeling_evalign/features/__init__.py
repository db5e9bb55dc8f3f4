"""Frozen-encoder feature extraction (CLIP preprocessing in torch, EventGPT pooling, resumable writer).

Import the concrete modules: ``clip_preprocessing``, ``pooling``, ``extraction``.
"""
