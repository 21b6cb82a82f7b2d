"""Time to draw every picture of a run's report (what ``pyrovae train`` does after training).

Loads a run folder (``pyrovae.app.runs.load_run``) and redraws all its pictures
with ``pyrovae.app.pictures.write_run_pictures(run, overwrite=True)``, then the
report page (``write_report(..., pictures=False)``), ``--repeats`` times. Each
picture is timed on its own (the ``viz`` drawing functions are wrapped for the
measurement only). Prints JSON: wall and CPU seconds (``time.process_time``, all
threads of the process) per repeat and per picture, the median, the machine's
load average before and after. Train a 64x64 run first, e.g. the main job's:

    pyrovae train --num-train 2000 --epochs 1 --out /tmp/pictures-run
    python benchmarks/report_pictures.py /tmp/pictures-run [--repeats 3]
"""

import argparse
import functools
import json
import statistics
import time

from common import environment, load_average
from pyrovae.app import pictures, viz
from pyrovae.app.report import write_report
from pyrovae.app.runs import load_run


def _timing(table, name, fn):
    @functools.wraps(fn)
    def timed(*args, **kwargs):
        wall, cpu = time.perf_counter(), time.process_time()
        try:
            return fn(*args, **kwargs)
        finally:
            row = table.setdefault(name, [0.0, 0.0])
            row[0] += time.perf_counter() - wall
            row[1] += time.process_time() - cpu
    return timed


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", help="a run folder (64x64 images for the issue's figure)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    run = load_run(args.run)
    per_picture = {}
    for name in dir(viz):
        if name.startswith("save_") and callable(getattr(viz, name)):
            setattr(viz, name, _timing(per_picture, name, getattr(viz, name)))
    repeats, before = [], load_average()
    for _ in range(args.repeats):
        per_picture.clear()
        wall, cpu = time.perf_counter(), time.process_time()
        with run.scope():
            drawn = pictures.write_run_pictures(run, overwrite=True)
        write_report(args.run, run=None, pictures=False)
        repeats.append({"wall_s": time.perf_counter() - wall, "cpu_s": time.process_time() - cpu,
                        "pictures": drawn["pictures"], "skipped": drawn["pictures_skipped"],
                        "per_picture": {k: {"wall_s": v[0], "cpu_s": v[1]} for k, v in per_picture.items()}})
    print(json.dumps({"benchmark": "report_pictures", "run": args.run, "image_shape": list(run.data.event_shape),
                      "median_wall_s": statistics.median(r["wall_s"] for r in repeats),
                      "median_cpu_s": statistics.median(r["cpu_s"] for r in repeats), "repeats": repeats,
                      "load_average_before": before, "load_average_after": load_average(), **environment()},
                     indent=1))


if __name__ == "__main__":
    main()
