#!/usr/bin/env python
"""S3 datasets: decoding once per node, then memory-mapping, against holding the pixels in RAM.

Uploads N RGB images (the bundled Fashion-MNIST images, tiled and coloured per index, resized to
``--size``) as WebDataset shards to a real S3 server (SeaweedFS, started on 127.0.0.1), then runs
each case in its own process, so memory figures do not mix:

* ``cold``: :func:`sslmem.data.s3.load_s3_dataset` on an empty node cache -- download, decode
  into the decoded file, map it;
* ``warm``: the same call again on that node -- list the bucket, map the decoded file;
* ``resident`` (baseline): the same pixels read whole into process memory, as an in-memory loader
  holds them (the loader before the decoded cache stacked a list of decoded images: at least
  this much, at its peak twice).

After loading, each case reads one epoch of shuffled batches (``images[index]`` gathers, what
the training loop does on the CPU). Reported: load seconds, epoch images/s, and peak *anonymous*
resident memory (``RssAnon``: private memory the process cannot give back; mapped file pages are
``RssFile``, shared by every process on the node and evictable), sampled every 5 ms.

Run:  .venv/bin/python benchmarks/s3_dataset.py [--images 50000] [--size 64] [--shard 1000]
      [--batch 256] [--json]
"""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    return 0


class PeakAnon:
    """Samples ``RssAnon`` in a thread; ``peak_mib`` is the largest value seen."""

    def __init__(self) -> None:
        self.peak = _status_kib("RssAnon")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, _status_kib("RssAnon"))

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _status_kib("RssAnon"))
        return self.peak / 1024


def _shards(images: int, size: int, per_shard: int) -> list[bytes]:
    """``images`` samples (RGB PNG + class) in tar shards of ``per_shard`` samples."""
    from PIL import Image

    from sslmem.data import load_dataset

    bundled = load_dataset("bundled").images[:, 0].numpy()
    shards = []
    for first in range(0, images, per_shard):
        out = io.BytesIO()
        with tarfile.open(fileobj=out, mode="w") as tar:
            for i in range(first, min(first + per_shard, images)):
                grey = bundled[i % len(bundled)]
                rgb = np.stack([grey, np.roll(grey, i % 28, axis=1), 255 - grey], axis=-1)
                png = io.BytesIO()
                picture = Image.fromarray(rgb.astype(np.uint8), mode="RGB").resize((size, size))
                picture.save(png, "PNG")
                for name, data in (
                    (f"{i:08d}.png", png.getvalue()),
                    (f"{i:08d}.cls", b"%d" % (i % 10)),
                ):
                    info = tarfile.TarInfo(name)
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
        shards.append(out.getvalue())
    return shards


def case(name: str, uri: str, cache: Path, batch: int) -> dict[str, Any]:
    """Run one case in this process; its figures."""
    import torch

    from sslmem.data.s3 import load_s3_dataset

    torch.set_num_threads(1)
    before = _status_kib("RssAnon") / 1024
    sampler = PeakAnon()
    started = time.perf_counter()
    data = load_s3_dataset(uri, cache_dir=cache)
    images = data.images
    if name == "resident":  # the baseline: every pixel in this process's own memory
        assert data.mapped_from is not None
        images = torch.from_numpy(np.fromfile(data.mapped_from, dtype=np.uint8)).view(images.shape)
    load_s = time.perf_counter() - started
    perm = torch.randperm(len(images), generator=torch.Generator().manual_seed(0))
    started = time.perf_counter()
    total = 0
    for start in range(0, len(perm) - batch + 1, batch):
        total += int(images[perm[start : start + batch]][:, :, 0, 0].sum())  # touch the batch
    epoch_s = time.perf_counter() - started
    peak = sampler.stop()
    return {
        "case": name,
        "images": len(images),
        "shape": list(images.shape),
        "decoded_mib": images.numel() / 2**20,
        "load_s": load_s,
        "epoch_images_per_s": (len(perm) // batch) * batch / epoch_s,
        "rss_anon_peak_mib": peak,
        "rss_anon_growth_mib": peak - before,
        "rss_file_end_mib": _status_kib("RssFile") / 1024,
        "checksum": total,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=50_000)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--shard", type=int, default=1000, help="samples per shard")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--case", help=argparse.SUPPRESS)
    parser.add_argument("--uri", help=argparse.SUPPRESS)
    parser.add_argument("--cache", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:  # child process: one case
        print(json.dumps(case(args.case, args.uri, args.cache, args.batch)))
        return 0

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from minio import Minio

    from tests.servers import start_seaweedfs

    root = Path(tempfile.mkdtemp(prefix="sslmem-s3-bench-"))
    with start_seaweedfs(root / "s3") as s3:
        bucket = s3.make_bucket("bench")
        client = Minio(
            s3.endpoint, access_key=s3.access_key, secret_key=s3.secret_key, secure=False
        )
        started = time.perf_counter()
        for k, shard in enumerate(_shards(args.images, args.size, args.shard)):
            client.put_object(bucket, f"wds/shard-{k:06d}.tar", io.BytesIO(shard), len(shard))
        upload_s = time.perf_counter() - started
        uri, cache = f"s3://{bucket}/wds/", root / "node-cache"
        env = {**s3.env(), "PATH": "/usr/bin:/bin"}
        results = []
        for name in ("cold", "warm", "resident"):
            command = [sys.executable, __file__, "--case", name, "--uri", uri]
            command += ["--cache", str(cache), "--batch", str(args.batch)]
            out = subprocess.run(command, env=env, check=True, capture_output=True, text=True)
            results.append(json.loads(out.stdout.strip().splitlines()[-1]))
    by = {r["case"]: r for r in results}
    summary = {
        "images": args.images,
        "size": args.size,
        "upload_s": upload_s,
        "warm_vs_cold_load_time": by["warm"]["load_s"] / by["cold"]["load_s"],
        "mapped_vs_resident_anon_growth": by["warm"]["rss_anon_growth_mib"]
        / by["resident"]["rss_anon_growth_mib"],
        "mapped_vs_resident_epoch_speed": by["warm"]["epoch_images_per_s"]
        / by["resident"]["epoch_images_per_s"],
        "checksums_equal": len({r["checksum"] for r in results}) == 1,
        "cases": results,
    }
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    print(f"{args.images} images {args.size}x{args.size} RGB, uploaded in {upload_s:.1f} s")
    print("case      load s   epoch img/s   RssAnon growth   RssFile")
    for r in results:
        print(
            f"{r['case']:<9} {r['load_s']:7.2f}   {r['epoch_images_per_s']:11.0f}   "
            f"{r['rss_anon_growth_mib']:10.0f} MiB   {r['rss_file_end_mib']:5.0f} MiB"
        )
    for key in ("warm_vs_cold_load_time", "mapped_vs_resident_anon_growth"):
        print(f"{key}: {summary[key]:.3f}")
    print(f"mapped_vs_resident_epoch_speed: {summary['mapped_vs_resident_epoch_speed']:.3f}")
    print(f"same pixels in every case: {summary['checksums_equal']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
