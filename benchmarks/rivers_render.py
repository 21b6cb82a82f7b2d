"""Pictures per second of the ``rivers`` renderer on one CPU core.

Times drawing the inputs of pictures 0..N-1 of one seed and rendering them to
uint8 (:func:`pyrovae.data.rivers.draw_inputs` + :func:`~pyrovae.data.rivers.render`,
what ``load_dataset("rivers")`` does per split), and, separately, the parts of
the renderer: the polyline, the tree placement and the vectorised drawing. Also
times :meth:`RiversFactors.sample_observations_from_factors` (float32 pictures of
grid cells, what the disentanglement metrics call). Each figure is the median of
``--repeats`` runs, measured as CPU time of the process (``time.process_time``)
and as wall time; run it with ``OMP_NUM_THREADS=1`` for one core. Prints JSON.

    OMP_NUM_THREADS=1 python benchmarks/rivers_render.py [--num-images 20000] [--repeats 3]
"""

import argparse
import json
import os
import platform
import statistics
import time

import numpy as np

from common import environment
from pyrovae.data import rivers
from pyrovae.data.rivers import RiversFactors


def timed(fn):
    cpu, wall = time.process_time(), time.perf_counter()
    fn()
    return time.process_time() - cpu, time.perf_counter() - wall


def measure(fn, num, repeats):
    runs = [timed(fn) for _ in range(repeats)]
    cpu, wall = statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs)
    return {"images_per_s_cpu": num / cpu, "images_per_s_wall": num / wall, "cpu_s": cpu, "wall_s": wall,
            "cpu_s_per_repeat": [r[0] for r in runs]}


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor()


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--num-images", type=int, default=20_000)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    n, repeats = args.num_images, args.repeats
    index = np.arange(n)
    rivers.render(rivers.draw_inputs(0, index[:256]))  # warm-up

    inputs = rivers.draw_inputs(0, index)
    vertices = rivers.river_path(inputs)
    trees = rivers.tree_centres(inputs, vertices)
    colours = rivers.grass_colour(inputs.grass)

    def draw_only():
        for start in range(0, n, rivers._CHUNK):
            rows = slice(start, start + rivers._CHUNK)
            rivers._draw(vertices[rows], inputs.half_width[rows], trees[rows], colours[rows])

    grid = RiversFactors()
    cells = grid.sample_factors(n, np.random.default_rng(0))
    result = {
        "benchmark": "rivers_render",
        "num_images": n, "repeats": repeats,
        "draw_inputs_and_render": measure(lambda: rivers.render(rivers.draw_inputs(0, index)), n, repeats),
        "parts": {
            "draw_inputs": measure(lambda: rivers.draw_inputs(0, index), n, repeats),
            "river_path": measure(lambda: rivers.river_path(inputs), n, repeats),
            "tree_centres": measure(lambda: rivers.tree_centres(inputs, vertices), n, repeats),
            "draw_pixels": measure(draw_only, n, repeats),
        },
        "grid_cells_to_float_images": measure(lambda: grid.sample_observations_from_factors(cells), n, repeats),
        **environment(),
        "numpy": np.__version__, "omp_num_threads": os.environ.get("OMP_NUM_THREADS"), "cpu": cpu_model(),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
