"""What the benchmark scripts share: timing a block of steps and naming the machine in their JSON."""

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


def environment():
    """The versions and machine facts every benchmark prints beside its figures."""
    return {"torch": torch.__version__, "pyro": pyro.__version__, "threads": torch.get_num_threads(),
            "machine": platform.machine()}
