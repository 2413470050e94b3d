"""Keep TensorFlow's start-up lines off the terminal.

``import tensorflow`` (2.21) writes, from C++ and before any Python setting can reach it, an absl notice and the
oneDNN and CPU-feature lines — twice per process, in every process that imports it. ``TF_CPP_MIN_LOG_LEVEL`` does not
silence them (absl's logging is not initialised yet). :func:`hide_import_noise` makes the first ``import tensorflow``
of the process write its stderr into a temporary file, and passes on every line that is not one of those.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import os
import re
import sys
import tempfile

NOISE = re.compile(
    r"All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    r"|\] oneDNN custom operations are on\."
    r"|cpu_feature_guard\.cc:\d+\] This TensorFlow binary is optimized"
    r"|^To enable the following instructions: .*rebuild TensorFlow with the appropriate compiler flags\.$"
)
"""The lines dropped (anything else TensorFlow writes while importing is passed on)."""


class _QuietLoader(importlib.abc.Loader):
    """Runs the ``tensorflow`` package's import with file descriptor 2 on a temporary file."""

    def __init__(self, loader: importlib.abc.Loader) -> None:
        self.loader = loader

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module) -> None:
        sys.stderr.flush()
        saved = os.dup(2)
        with tempfile.TemporaryFile() as captured:
            os.dup2(captured.fileno(), 2)
            try:
                self.loader.exec_module(module)
            finally:
                os.dup2(saved, 2)
                os.close(saved)
                captured.seek(0)
                kept = [line for line in captured.read().decode(errors="replace").splitlines() if not NOISE.search(line)]
                if kept:
                    sys.stderr.write("\n".join(kept) + "\n")


class _QuietFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name != "tensorflow":
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is not None and spec.loader is not None:
            spec.loader = _QuietLoader(spec.loader)
        return spec


def hide_import_noise() -> None:
    """Filter the start-up lines of this process's first ``import tensorflow`` (no effect once it is imported)."""
    if "tensorflow" not in sys.modules and not any(isinstance(f, _QuietFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _QuietFinder())
