"""A rich progress bar over images, with images/s, for commands that evaluate large folders (stderr, transient)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator


@contextlib.contextmanager
def image_progress(description: str, enabled: bool = True) -> Iterator[Callable[[int, int], None]]:
    """Yield `update(done, total)`; a no-op when not `enabled`."""
    if not enabled:
        yield lambda done, total: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    start = time.perf_counter()
    bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("{task.fields[img_s]:>7.0f} images/s"), TimeElapsedColumn(), TimeRemainingColumn(),
                   console=Console(stderr=True), transient=True)
    with bar:
        task = bar.add_task(description, total=None, img_s=0.0)

        def update(done: int, total: int) -> None:
            elapsed = time.perf_counter() - start
            bar.update(task, completed=done, total=total, img_s=done / elapsed if elapsed > 0 else 0.0)

        yield update
