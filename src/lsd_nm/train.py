"""The train loop of a network folder: ``python train.py ITERATION`` trains until ITERATION, resuming.

Outputs in the folder: ``train_net_checkpoint_<n>/`` every ``save_every`` iterations and at the end (and on Ctrl-C,
SIGTERM or SIGHUP: a scheduler's time limit, a closed terminal), ``snapshots/batch_<n>.hdf``, TensorBoard logs in
``log/``, ``loss.tsv`` (iteration, loss, seconds) and ``loss.png`` (refreshed at every checkpoint).
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .checkpoints import latest_readable_checkpoint
from .datasets import DATA_DIR
from .device import check_device
from .locks import hold_lock
from .experiment import NetworkFolder

logger = logging.getLogger(__name__)

LOSS_LOG = "loss.tsv"
LOSS_PLOT = "loss.png"
TRAIN_LOCK = "train.lock"
"""The lock file of a network folder while it trains (:func:`lsd_nm.locks.hold_lock`)."""


def read_losses(folder: Path) -> list[tuple[int, float, float]]:
    """(iteration, loss, seconds) rows of a folder's ``loss.tsv`` (complete rows only: a run that is training may be
    writing the last one)."""
    path = Path(folder) / LOSS_LOG
    if not path.exists():
        return []
    text = path.read_text()
    rows = []
    for line in text[: text.rfind("\n") + 1].splitlines()[1:]:
        it, loss, seconds = line.split("\t")
        rows.append((int(it), float(loss), float(seconds)))
    return rows


def _truncate_losses(folder: Path, until: int) -> None:
    """Drop logged iterations after ``until`` (a run that crashed after its last checkpoint redoes them)."""
    rows = [r for r in read_losses(folder) if r[0] <= until]
    lines = ["iteration\tloss\tseconds"] + [f"{it}\t{loss:.6g}\t{s:.4f}" for it, loss, s in rows]
    (Path(folder) / LOSS_LOG).write_text("\n".join(lines) + "\n")


def plot_losses(folder: Path) -> Path:
    """Write ``loss.png``: the training loss per iteration and its running mean."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    rows = read_losses(folder)
    fig, ax = plt.subplots(figsize=(7, 4), constrained_layout=True)
    if rows:
        it = np.array([r[0] for r in rows])
        loss = np.array([r[1] for r in rows])
        ax.plot(it, loss, color="0.75", linewidth=0.8, label="loss")
        window = max(1, len(loss) // 50)
        if window > 1:
            smooth = np.convolve(loss, np.ones(window) / window, mode="valid")
            ax.plot(it[window - 1 :], smooth, color="C0", label=f"running mean ({window})")
        ax.set_yscale("log")
    folder = Path(folder)
    ax.set_title(f"{folder.parent.name}/{folder.name}")
    ax.set_xlabel("iteration")
    ax.set_ylabel("training loss")
    ax.legend(loc="upper right")
    path = folder / LOSS_PLOT
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


class Terminated(KeyboardInterrupt):
    """Training was stopped by a signal other than Ctrl-C (SIGTERM, SIGHUP); handled as Ctrl-C is: a checkpoint is
    saved and the command exits with ``128 + signum``."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@contextmanager
def _stop_signals_as_interrupts() -> Iterator[None]:
    """SIGTERM and SIGHUP raise :class:`Terminated` in the training process, once (a second one while the
    checkpoint is written is ignored, so that the save completes). The processes forked meanwhile (gunpowder's
    PreCache pool, whose watchdog ends its workers with SIGTERM) inherit the handler and keep the signal's default
    action: they end at once."""
    trainer = os.getpid()
    received: list[int] = []

    def handler(signum, frame) -> None:
        if os.getpid() != trainer:
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        if not received:
            received.append(signum)
            raise Terminated(signum)

    signums = (signal.SIGTERM, signal.SIGHUP)
    previous = {s: signal.signal(s, handler) for s in signums}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def _abandon_precache(pipeline) -> None:
    """End the PreCache pools of a pipeline without their orderly stop (:meth:`PreCache.abandon`)."""
    from .nodes import PreCache

    pipeline.traverse(lambda node: node.output.abandon() if isinstance(node.output, PreCache) else None)


def _run_phase(folder: NetworkFolder, first: int, last: int, phase: str, device: str | None, data_dir: Path) -> int:
    """Train iterations ``first``..``last`` of one phase; returns the last iteration done."""
    import gunpowder as gp
    from tqdm import tqdm

    from .pipelines import build_train_pipeline

    setup = build_train_pipeline(folder, last, first_iteration=first, phase=phase, device=device, data_dir=data_dir)
    bar = None

    def saved(iteration: int, path: Path) -> None:
        plot_losses(folder.path)
        line = f"iteration {iteration}: checkpoint {path.name}, loss {setup.train_node.last_loss:.4g}"
        (bar.write if bar is not None else print)(line)

    setup.train_node.on_save = saved
    # the train node logs each iteration before it may checkpoint it: a kill never loses a logged iteration
    setup.train_node.loss_log = folder.path / LOSS_LOG
    done = first - 1
    with _stop_signals_as_interrupts():
        build = gp.build(setup.pipeline)
        build.__enter__()
        stopped = False
        try:
            if first > 1:
                print(f"{folder.name}: resuming after iteration {first - 1}", flush=True)
            bar = tqdm(total=last, initial=first - 1, desc=f"{folder.name} ({phase})", unit="it", dynamic_ncols=True)
            for _ in range(first, last + 1):
                start = time.time()
                batch = setup.pipeline.request_batch(setup.request)
                seconds = time.time() - start
                done = batch.iteration
                bar.set_postfix(loss=f"{batch.loss:.4g}", s_per_it=f"{seconds:.2f}")
                bar.update(1)
        except KeyboardInterrupt as e:
            stopped = True
            if bar is not None:
                bar.close()
            how = f"terminated ({e.args[0]})" if isinstance(e, Terminated) else "interrupted"
            if done >= first:
                path = setup.train_node.save()
                print(f"{how}: saved {path}; run the same command again to resume", flush=True)
            raise
        finally:
            if bar is not None:
                bar.close()
            if stopped:
                # no pipeline teardown: gunpowder's stops the PreCache pool through a lock and a queue that a
                # process stopped by the same signal may have left held or full (it would wait for good)
                setup.train_node.stop()
                _abandon_precache(setup.pipeline)
            else:
                build.__exit__(None, None, None)
    return done


def train(
    folder: NetworkFolder, max_iteration: int, device: str | None = None, data_dir: Path = DATA_DIR, seed: int | None = None
) -> int:
    """Train a network folder until ``max_iteration``, resuming from its latest checkpoint; returns the iteration.
    ``seed`` seeds Python, NumPy (the augmentations) and TensorFlow (the initial weights) first.

    malis trains with MSE until ``train.malis_phase_switch`` and with the constrained MALIS loss after it; unlike
    the original, the iteration count is recomputed after the switch.
    """
    if seed is not None:
        import keras

        keras.utils.set_random_seed(seed)  # Python, NumPy (augmentations) and TensorFlow (initial weights)
    import dask

    check_device(device)  # a GPU that is not here: one line now, not a traceback after the pipeline is built
    # our messages and gunpowder's profiling statistics; not gunpowder's per-iteration chatter
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    for name in ("lsd_nm", "gunpowder.nodes.print_profiling_stats"):
        logging.getLogger(name).setLevel(logging.INFO)
    # dask's threaded scheduler does not survive PreCache's fork (a known hang): compute in the calling thread
    dask.config.set(scheduler="synchronous")
    # two trainings of one folder would write the same checkpoints and loss log
    with hold_lock(folder.path / TRAIN_LOCK, f"'{folder.path}' is being trained"):
        config = folder.config
        # a damaged newest checkpoint is moved aside: training resumes from the newest one that reads in full
        trained_until, _ = latest_readable_checkpoint(folder.path, say=lambda line: print(line, file=sys.stderr, flush=True))
        if trained_until >= max_iteration:
            print(f"{folder.name}: trained until {trained_until} already (≥ {max_iteration}); nothing to do")
            return trained_until
        _truncate_losses(folder.path, trained_until)
        phase = "euclid"
        if config.network == "malis":
            switch = config.train.malis_phase_switch
            if trained_until < switch < max_iteration:
                trained_until = _run_phase(folder, trained_until + 1, switch, "euclid", device, data_dir)
            phase = "euclid" if max_iteration <= switch else "malis"
        done = _run_phase(folder, trained_until + 1, max_iteration, phase, device, data_dir)
        plot_losses(folder.path)
        return done
