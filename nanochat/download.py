"""
Resumable shard downloads for the climbmix data source: retries with back-off, HTTP Range resume
of a partial file, a progress bar, and an atomic rename so a half-written shard is never used.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import httpx
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn
from tenacity import retry, retry_if_exception_type, stop_after_attempt, wait_exponential_jitter

ATTEMPTS = 8
CHUNK = 1 << 16          # small enough that a broken transfer keeps nearly all it got
TIMEOUT = httpx.Timeout(30.0, read=120.0)


class DownloadError(RuntimeError):
    pass


@retry(retry=retry_if_exception_type((httpx.TransportError, DownloadError)),
       stop=stop_after_attempt(ATTEMPTS), wait=wait_exponential_jitter(multiplier=2, max=60), reraise=True)
def _fetch(url: str, dest: Path, progress: Progress) -> None:
    part = dest.with_suffix(dest.suffix + ".part")
    have = part.stat().st_size if part.exists() else 0
    headers = {"Range": f"bytes={have}-"} if have else {}
    with httpx.stream("GET", url, headers=headers, timeout=TIMEOUT, follow_redirects=True) as r:
        if r.status_code == 416:            # we already hold the whole file
            part.rename(dest)
            return
        if r.status_code >= 500 or r.status_code == 429:
            raise DownloadError(f"{url}: HTTP {r.status_code}")
        if r.status_code not in (200, 206):
            raise RuntimeError(f"{url}: HTTP {r.status_code}")   # 404 etc.: retrying won't help
        if r.status_code == 200:
            have = 0                         # the server ignored Range: start over
        total = have + int(r.headers.get("content-length", 0))
        task = progress.add_task(dest.name, total=total or None, completed=have)
        with open(part, "ab" if have else "wb") as f:
            for chunk in r.iter_bytes(CHUNK):
                f.write(chunk)
                progress.update(task, advance=len(chunk))
    part.rename(dest)


def download_shards(indices: list[int], out_dir: Path, base_url: str,
                    log: Callable[[str], None] = print) -> list[Path]:
    """Download shard_{i:05d}.parquet for each index (skipping those already complete)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f"shard_{i:05d}.parquet" for i in indices]
    missing = [p for p in paths if not p.exists()]
    if not missing:
        return paths
    log(f"[prepare] downloading {len(missing)} shard(s) to {out_dir}")
    with Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn()) as progress:
        for p in missing:
            try:
                _fetch(f"{base_url}/{p.name}", p, progress)
            except (httpx.TransportError, DownloadError) as e:
                raise RuntimeError(f"could not download {p.name} after {ATTEMPTS} attempts: {e}. "
                                   f"Check the network, or use --data builtin / a local path") from None
    return paths
