"""What the benchmark scripts share: timing a block of steps and naming the machine in their JSON."""

import os
import platform
import time

import pyro
import torch


def time_block(step, batches):
    """Mean seconds per call of ``step`` over ``batches``."""
    start = time.perf_counter()
    for x in batches:
        step(x)
    return (time.perf_counter() - start) / len(batches)


def time_block_cpu(step, batches):
    """``(wall, cpu)``: mean wall seconds and mean CPU seconds of the process per call of ``step`` over ``batches``.

    CPU time (``time.process_time``: every thread of the process, user + system)
    does not count the time the process waits for a core, so on a shared
    machine it is the steadier of the two; with one thread it equals the wall
    time of an unloaded machine.
    """
    wall, cpu = time.perf_counter(), time.process_time()
    for x in batches:
        step(x)
    return (time.perf_counter() - wall) / len(batches), (time.process_time() - cpu) / len(batches)


def add_binarized_mnist_dir(parser):
    """``--data-dir`` (default ``$BINARIZED_MNIST_DIR``): Larochelle's three ``.amat`` files."""
    parser.add_argument("--data-dir", default=os.environ.get("BINARIZED_MNIST_DIR"),
                        help="folder with binarized_mnist_{train,valid,test}.amat[.gz] (default: "
                             "$BINARIZED_MNIST_DIR)")


def parse_rows(parser, text, rows):
    """The comma-separated row names in ``text``, in order; a parser error names any not in ``rows``."""
    names = [r.strip() for r in text.split(",") if r.strip()]
    unknown = sorted(set(names) - set(rows))
    if unknown or not names:
        parser.error(f"unknown rows {unknown}; choose among {list(rows)}")
    return names


def load_average():
    """The 1, 5 and 15 minute load averages of the machine (``uptime``'s figures)."""
    return list(os.getloadavg())


def environment():
    """The versions and machine facts every benchmark prints beside its figures."""
    return {"torch": torch.__version__, "pyro": pyro.__version__, "threads": torch.get_num_threads(),
            "machine": platform.machine(), "cores": os.cpu_count()}
