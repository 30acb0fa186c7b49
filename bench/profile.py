"""Sample every service with py-spy while the pipeline runs, and say where the time goes.

Used by `python -m bench.run --profile-after S --profile-seconds D`: D seconds of samples from each
service process, S seconds after the first upload, written as collapsed stacks (one
`frame;frame;frame count` line per stack) to `.relief/bench/profiles/` and summarised as the
functions with the most samples on top of the stack (self) and anywhere in it (inclusive).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path


def py_spy() -> str | None:
    found = Path(sys.executable).with_name("py-spy")
    return str(found) if found.exists() else shutil.which("py-spy")


def record(pids: dict[str, int], seconds: int, out_dir: Path) -> dict[str, Path]:
    """Sample each process for `seconds`, all at once; return the raw stack files written."""
    tool = py_spy()
    if tool is None:
        print("bench: py-spy is not installed; no profile taken", file=sys.stderr)
        return {}
    out_dir.mkdir(parents=True, exist_ok=True)

    def one(item: tuple[str, int]) -> tuple[str, Path | None]:
        name, pid = item
        path = out_dir / f"{name}.txt"
        command = [tool, "record", "--pid", str(pid), "--duration", str(seconds), "--rate", "50"]
        command += ["--nonblocking", "--gil", "--format", "raw", "--output", str(path)]
        done = subprocess.run(command, capture_output=True, timeout=seconds + 60, check=False)
        return name, path if done.returncode == 0 and path.exists() else None

    with ThreadPoolExecutor(max(1, len(pids))) as pool:
        return {name: path for name, path in pool.map(one, pids.items()) if path is not None}


def summarise(path: Path, top: int = 12) -> dict[str, object]:
    """The busiest functions of one collapsed-stack file, as shares of all samples."""
    own: Counter[str] = Counter()
    anywhere: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_short(frame) for frame in stack.split(";")]
        total += count
        own[frames[-1]] += count
        for frame in set(frames):
            anywhere[frame] += count
    share = lambda n: round(100.0 * n / total, 1) if total else 0.0  # noqa: E731
    return {
        "samples": total,
        "self_percent": {frame: share(n) for frame, n in own.most_common(top)},
        "inclusive_percent": {frame: share(n) for frame, n in anywhere.most_common(top * 4) if _ours(frame)},
    }


def _short(frame: str) -> str:
    """`apply_payments (services/intake/handlers.py:456)` → `apply_payments (services/intake/handlers.py)`."""
    name, _, where = frame.partition(" (")
    where = where.rstrip(")").rsplit(":", 1)[0]
    for marker in ("site-packages/", "lib/python3.11/", "/services/", "/shared/", "/relief_cli/"):
        if marker in where:
            kept = where.split(marker, 1)[1]
            where = f"{marker.strip('/')}/{kept}" if marker.startswith("/") else kept
            break
    return f"{name} ({where})" if where else name


def _ours(frame: str) -> bool:
    return any(f"({package}/" in frame for package in ("services", "shared"))
