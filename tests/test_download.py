"""Downloads, checksums and the `datasets` verb, against a local HTTP server (never the network)."""

from __future__ import annotations

import argparse
import gzip
import hashlib
import http.server
import socket
import struct
import threading
from pathlib import Path

import numpy as np
import pytest

from vqdraw.cli import datasets as datasets_cli
from vqdraw.data import DatasetError, load_dataset
from vqdraw.data import download as dl

PAYLOAD = bytes(range(256)) * 40  # 10 KiB
PAYLOAD_MD5 = hashlib.md5(PAYLOAD).hexdigest()


class _Handler(http.server.BaseHTTPRequestHandler):
    """Serves the server's `files` dict, honouring 'Range: bytes=N-' unless `ranges` is off."""

    def do_GET(self):  # noqa: N802 (http.server's naming)
        srv = self.server
        srv.requests.append((self.path, self.headers.get("Range")))
        body = srv.files.get(self.path.lstrip("/"))
        if body is None:
            self.send_error(404)
            return
        rng = self.headers.get("Range")
        if rng and srv.ranges:
            start = int(rng.removeprefix("bytes=").rstrip("-"))
            if start >= len(body):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
            body = body[start:]
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):  # keep test output quiet
        pass


@pytest.fixture
def server():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.files, srv.requests, srv.ranges = {"blob.bin": PAYLOAD}, [], True
    srv.base = f"http://127.0.0.1:{srv.server_address[1]}/"
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    watchdog = threading.Timer(60, srv.shutdown)  # never outlives a stuck test for long
    watchdog.daemon = True
    watchdog.start()
    yield srv
    watchdog.cancel()
    srv.shutdown()
    srv.server_close()
    thread.join(5)


def closed_port_url(name: str) -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/{name}"


def test_default_data_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("VQDRAW_DATA", str(tmp_path / "d"))
    assert dl.default_data_dir() == tmp_path / "d"
    assert dl.dataset_dir("svhn") == tmp_path / "d" / "svhn"
    monkeypatch.delenv("VQDRAW_DATA")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert dl.default_data_dir() == tmp_path / "cache" / "vqdraw"


def test_download_verifies_and_renames(server, tmp_path):
    dest = tmp_path / "x" / "blob.bin"
    dl.download_file(server.base + "blob.bin", dest, PAYLOAD_MD5, progress=False)
    assert dest.read_bytes() == PAYLOAD
    assert not dest.with_name("blob.bin.part").exists()


def test_download_resumes_a_partial_file(server, tmp_path):
    dest = tmp_path / "blob.bin"
    dest.with_name("blob.bin.part").write_bytes(PAYLOAD[:3000])
    dl.download_file(server.base + "blob.bin", dest, PAYLOAD_MD5, progress=False)
    assert dest.read_bytes() == PAYLOAD
    assert server.requests == [("/blob.bin", "bytes=3000-")]


def test_download_starts_over_when_range_is_ignored(server, tmp_path):
    server.ranges = False
    dest = tmp_path / "blob.bin"
    dest.with_name("blob.bin.part").write_bytes(b"junk" * 100)
    dl.download_file(server.base + "blob.bin", dest, PAYLOAD_MD5, progress=False)
    assert dest.read_bytes() == PAYLOAD


def test_download_of_an_already_complete_part(server, tmp_path):
    dest = tmp_path / "blob.bin"
    dest.with_name("blob.bin.part").write_bytes(PAYLOAD)  # server answers 416
    dl.download_file(server.base + "blob.bin", dest, PAYLOAD_MD5, progress=False)
    assert dest.read_bytes() == PAYLOAD


def test_md5_mismatch_leaves_no_file(server, tmp_path):
    dest = tmp_path / "blob.bin"
    with pytest.raises(DatasetError, match=r"blob.bin: downloaded from .* md5"):
        dl.download_file(server.base + "blob.bin", dest, "0" * 32, progress=False)
    assert not dest.exists() and not dest.with_name("blob.bin.part").exists()


def idx_gz(arr: np.ndarray, magic: int) -> bytes:
    head = struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in arr.shape)
    return gzip.compress(head + arr.astype(np.uint8).tobytes())


def local_mnist(base: str, server) -> dl.DatasetSpec:
    """The MNIST spec, pointed at tiny files on the local server."""
    rng = np.random.default_rng(1)
    blobs = {
        "train-images-idx3-ubyte.gz": idx_gz(rng.integers(0, 256, (6, 28, 28)), 2051),
        "train-labels-idx1-ubyte.gz": idx_gz(np.arange(6), 2049),
        "t10k-images-idx3-ubyte.gz": idx_gz(rng.integers(0, 256, (2, 28, 28)), 2051),
        "t10k-labels-idx1-ubyte.gz": idx_gz(np.arange(2), 2049),
    }
    server.files.update(blobs)
    files = tuple(dl.RemoteFile(n, base + n, hashlib.md5(b).hexdigest(), (n[:-3],))
                  for n, b in blobs.items())
    return dl.DatasetSpec("mnist", "MNIST (local test copy)", files)


def test_ensure_downloaded_then_load(server, tmp_path, monkeypatch):
    monkeypatch.setitem(dl.CATALOGUE, "mnist", local_mnist(server.base, server))
    (tmp_path / "mnist").mkdir()
    (tmp_path / "mnist" / "train-images-idx3-ubyte.gz.part").write_bytes(b"")  # never counts
    assert dl.status("mnist", tmp_path).missing == [f.name for f in dl.CATALOGUE["mnist"].files]
    with pytest.raises(DatasetError, match="train-images-idx3-ubyte.gz"):
        load_dataset("mnist", "train", tmp_path)
    folder = dl.ensure_downloaded("mnist", tmp_path, progress=False)
    assert folder == tmp_path / "mnist" and dl.status("mnist", tmp_path).complete
    ds = load_dataset("mnist", "train", tmp_path)
    assert ds.data.shape == (6, 28, 28, 1) and ds.labels.tolist() == list(range(6))
    n = len(server.requests)
    dl.ensure_downloaded("mnist", tmp_path, progress=False)  # nothing missing: no request
    assert len(server.requests) == n
    assert all(ok for _, ok, _ in dl.verify("mnist", tmp_path))


def test_offline_message_names_url_files_and_folder(tmp_path, monkeypatch):
    url = closed_port_url("train_32x32.mat")
    files = (dl.RemoteFile("train_32x32.mat", url, "0" * 32),
             dl.RemoteFile("test_32x32.mat", url.replace("train", "test"), "0" * 32))
    monkeypatch.setitem(dl.CATALOGUE, "svhn", dl.DatasetSpec("svhn", "SVHN", files))
    with pytest.raises(DatasetError) as err:
        dl.ensure_downloaded("svhn", tmp_path, progress=False, timeout=5)
    msg = str(err.value)
    assert f"could not download {url}" in msg
    assert "train_32x32.mat" in msg and "test_32x32.mat" in msg
    assert str(tmp_path / "svhn") in msg and "\n" not in msg
    assert not (tmp_path / "svhn" / "train_32x32.mat").exists()


def test_http_error_is_reported(server, tmp_path, monkeypatch):
    files = (dl.RemoteFile("test_32x32.mat", server.base + "nope.mat", "0" * 32),)
    monkeypatch.setitem(dl.CATALOGUE, "svhn", dl.DatasetSpec("svhn", "SVHN", files))
    with pytest.raises(DatasetError, match=r"nope.mat \(HTTP 404"):
        dl.ensure_downloaded("svhn", tmp_path, progress=False)


def test_celeba_gets_the_manual_instruction(tmp_path):
    with pytest.raises(DatasetError, match=r"Google Drive.*img_align_celeba.zip.*list_eval"):
        dl.ensure_downloaded("celeba", tmp_path)


def write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def test_verify_reports_each_file(tmp_path, monkeypatch):
    files = (dl.RemoteFile("good.bin", None, PAYLOAD_MD5),
             dl.RemoteFile("bad.bin", None, PAYLOAD_MD5),
             dl.RemoteFile("gone.bin", None, PAYLOAD_MD5),
             dl.RemoteFile("packed.gz", None, PAYLOAD_MD5, ("packed",)))
    monkeypatch.setitem(dl.CATALOGUE, "svhn", dl.DatasetSpec("svhn", "SVHN", files))
    write(tmp_path / "svhn" / "good.bin", PAYLOAD)
    write(tmp_path / "svhn" / "bad.bin", PAYLOAD[:-1])
    write(tmp_path / "svhn" / "gone.bin.part", PAYLOAD)
    write(tmp_path / "svhn" / "packed", b"unpacked")
    got = {f: (ok, msg) for f, ok, msg in dl.verify("svhn", tmp_path)}
    assert got["good.bin"] == (True, "md5 ok")
    assert got["bad.bin"][0] is False and "does not match" in got["bad.bin"][1]
    assert got["gone.bin"] == (False, "missing")
    assert got["packed"][0] is None and "unverified" in got["packed"][1]  # no md5 for the stand-in
    st = dl.status("svhn", tmp_path)
    assert st.missing == ["gone.bin"] and not st.complete


def run_cli(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    datasets_cli.register(parser.add_subparsers())
    return parser.parse_args(["datasets", *argv])


def test_datasets_command_table_and_verify(tmp_path, capsys):
    write(tmp_path / "svhn" / "test_32x32.mat", b"not the real file")
    args = run_cli(["--data-dir", str(tmp_path), "--verify"])
    assert args.func(args) == 1  # one file present but not matching, one missing
    out = capsys.readouterr().out
    assert f"data folder: {tmp_path}" in out
    assert "svhn" in out and "partial, missing train_32x32.mat" in out
    assert str(tmp_path / "cifar10") in out and "mnist-embedded" in out
    assert "FAIL  test_32x32.mat: md5" in out
    args = run_cli(["--data-dir", str(tmp_path / "empty")])
    assert args.func(args) == 0
    with pytest.raises(DatasetError, match="cannot download 'imagenet'"):
        args = run_cli(["--data-dir", str(tmp_path), "--download", "imagenet"])
        args.func(args)


def _wikitext_zip() -> bytes:
    import io
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for split, n in (("train", 5), ("valid", 2), ("test", 2)):
            z.writestr(f"wikitext-2-raw/wiki.{split}.raw", (" = Valkyria Chronicles = \n" * 30)[: 128 * n + 7])
    return buf.getvalue()


def test_wikitext2_downloads_checks_sha256_and_reads_the_zip_in_place(server, tmp_path, monkeypatch):
    """The catalogue entry has the official name and SHA-256; the same code path with a local zip."""
    official = dl.CATALOGUE["wikitext2"].files[0]
    assert official.name == "wikitext-2-raw-v1.zip" and len(official.sha256) == 64 and official.url.startswith("https://")
    blob = _wikitext_zip()
    server.files["wikitext-2-raw-v1.zip"] = blob
    local = dl.RemoteFile(official.name, server.base + official.name, "", official.also,
                          sha256=hashlib.sha256(blob).hexdigest())
    monkeypatch.setitem(dl.CATALOGUE, "wikitext2", dl.DatasetSpec("wikitext2", "local", (local,)))
    with pytest.raises(DatasetError, match="wikitext-2-raw-v1.zip"):
        load_dataset("wikitext2", "train", tmp_path)
    dl.ensure_downloaded("wikitext2", tmp_path, progress=False)
    train, test = load_dataset("wikitext2", "train", tmp_path), load_dataset("wikitext2", "test", tmp_path)
    assert len(train) == 5 and len(test) == 2  # 128-character sequences; the 7 left over dropped
    assert dl.verify("wikitext2", tmp_path) == [("wikitext-2-raw-v1.zip", True, "sha256 ok")]
    # a wrong SHA-256: one line, no file left behind
    bad = dl.RemoteFile(official.name, server.base + official.name, "", sha256="0" * 64)
    with pytest.raises(DatasetError, match="sha256 .* does not match"):
        dl.download_file(bad.url, tmp_path / "other" / bad.name, "", progress=False, sha256=bad.sha256)
    assert not (tmp_path / "other" / bad.name).exists()
