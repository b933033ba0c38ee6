#!/usr/bin/env python3
"""Checks the include rule of docs/architecture.md: a header under include/otlpconc includes only
headers of its own layer or of layers below it.

Usage: check_include_layers.py INCLUDE_DIR
Every header must be in LAYERS (or under telemetry/, layer 7): a new header fails the check until it
is given its layer here, which is the point.
"""
import pathlib
import re
import sys

LAYERS = {
    "cache_padded.hpp": 0,
    "detail/config.hpp": 0,
    "detail/schedule_noise.hpp": 0,
    "counter.hpp": 1,
    "detail/counter_cells.hpp": 1,
    "hazard_pointer.hpp": 2,
    "detail/asymmetric_fence.hpp": 2,
    "detail/sync.hpp": 2,
    "detail/cache_handshake.hpp": 2,
    "detail/backoff.hpp": 2,
    "ms_queue.hpp": 3,
    "chase_lev_deque.hpp": 3,
    "detail/node_cache.hpp": 3,
    "work_stealing_pool.hpp": 4,
    "detail/event_count.hpp": 4,
    "detail/pool_task.hpp": 4,
    "sharded_lru.hpp": 5,
    "detail/lru_support.hpp": 5,
    "detail/lru_chain.hpp": 5,
    "detail/park_lock.hpp": 5,
    "topology.hpp": 6,
    "object_pool.hpp": 6,
    "detail/pool_threads.hpp": 6,
}
TELEMETRY = 7
INCLUDE = re.compile(r'^\s*#\s*include\s+"otlpconc/([^"]+)"', re.M)


def layer_of(rel):
    if rel.startswith("telemetry/"):
        return TELEMETRY
    return LAYERS.get(rel)


def main(root):
    base = pathlib.Path(root) / "otlpconc"
    problems = []
    headers = sorted(p for p in base.rglob("*.hpp"))
    if not headers:
        sys.exit(f"check_include_layers: no headers under {base}")
    for path in headers:
        rel = path.relative_to(base).as_posix()
        layer = layer_of(rel)
        if layer is None:
            problems.append(f"{rel}: no layer (add it to LAYERS in {__file__})")
            continue
        for target in INCLUDE.findall(path.read_text(encoding="utf-8")):
            target_layer = layer_of(target)
            if target_layer is None:
                problems.append(f"{rel} includes {target}, which has no layer")
            elif target_layer > layer:
                problems.append(f"{rel} (layer {layer}) includes {target} (layer {target_layer}), a layer above it")
    if problems:
        sys.exit("check_include_layers:\n  " + "\n  ".join(problems))
    print(f"check_include_layers: {len(headers)} headers, every include is of the same layer or below")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
