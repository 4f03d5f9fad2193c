"""The page of `vqdraw export --web` in a real browser: headless Chromium (driven by selenium through
chromedriver) loads the exported page of pretrained:mnist from a local HTTP server, decodes a .vqd
file as `vqdraw decode` does, and encodes a drawn stroke as the Python encoder does.

Needs Debian's ``chromium`` and ``chromium-driver`` (or VQDRAW_CHROMIUM / VQDRAW_CHROMEDRIVER),
selenium (the [test] extra) and onnxruntime-web's npm package: VQDRAW_ORT_WEB, else
``node_modules/onnxruntime-web`` or ``.ci-node/node_modules/onnxruntime-web`` in the repository
(``npm install --prefix .ci-node onnxruntime-web@1.31.1``, as .ci/run does). Skipped, with the
reason, when one is missing. VQDRAW_WEB_SCREENSHOT=PATH also saves the page as a PNG (the README's).
"""

from __future__ import annotations

import functools
import http.server
import os
import shutil
import struct
import threading
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("onnx", reason="ONNX export needs the onnx package (pip install 'vqdraw[export]')")
webdriver = pytest.importorskip("selenium.webdriver", reason="the browser test needs selenium (pip install selenium)")

from vqdraw import VQDraw  # noqa: E402
from vqdraw.cli import main  # noqa: E402
from vqdraw.compress.bitstream import VqdFormatError, read_vqd, write_vqd  # noqa: E402
from vqdraw.data import load_dataset  # noqa: E402
from vqdraw.data.images import save_image  # noqa: E402
from vqdraw.errors import ConfigError  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
ORT_WEB_VERSION = "1.31.1"  # the onnxruntime-web .ci/run installs
DIGITS = 6  # embedded MNIST test digits in the .vqd file
SERVER_SECONDS = 300  # the HTTP server stops by itself after this, whatever happens


def _which(env: str, *names: str) -> str | None:
    if os.environ.get(env):
        return os.environ[env] if Path(os.environ[env]).is_file() else None
    return next((p for p in map(shutil.which, names) if p), None)


def _ort_web() -> str | None:
    from vqdraw.compress.export import find_ort_web

    places = [os.environ["VQDRAW_ORT_WEB"]] if os.environ.get("VQDRAW_ORT_WEB") else [
        ROOT / "node_modules" / "onnxruntime-web", ROOT / ".ci-node" / "node_modules" / "onnxruntime-web"]
    for place in places:
        try:
            return str(find_ort_web(place))
        except ConfigError:
            pass
    return None


CHROMIUM = _which("VQDRAW_CHROMIUM", "chromium", "chromium-browser", "google-chrome")
CHROMEDRIVER = _which("VQDRAW_CHROMEDRIVER", "chromedriver")
ORT_WEB = _ort_web()
_missing = [why for why, ok in [
    ("no Chromium (apt-get install chromium, or set VQDRAW_CHROMIUM)", CHROMIUM),
    ("no chromedriver (apt-get install chromium-driver, or set VQDRAW_CHROMEDRIVER)", CHROMEDRIVER),
    (f"no onnxruntime-web (npm install --prefix .ci-node onnxruntime-web@{ORT_WEB_VERSION}, or set "
     "VQDRAW_ORT_WEB)", ORT_WEB),
] if not ok]
pytestmark = pytest.mark.skipif(bool(_missing), reason="; ".join(_missing))

PIXELS = """
const canvas = typeof arguments[0] === "string" ? document.querySelector(arguments[0]) : arguments[0];
const step = arguments[1], d = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
const out = [];
for (let y = Math.floor(step / 2); y < canvas.height; y += step)
  for (let x = Math.floor(step / 2); x < canvas.width; x += step) out.push(d[4 * (y * canvas.width + x)]);
return out;
"""
IDLE = "const done = arguments[arguments.length - 1]; window.vqdrawPage.idle().then(() => done(true));"


def pixels(driver, canvas, step=1) -> np.ndarray:
    """The red channel of a canvas (every `step`-th pixel, from the middle of each block), (H, W) uint8."""
    values = np.array(driver.execute_script(PIXELS, canvas, step), dtype=np.uint8)
    return values.reshape(28, 28)


def shown_codes(driver) -> list[int]:
    return [int(c) for c in driver.find_element("id", "code").get_attribute("data-codes").split(",")]


def idle(driver) -> None:
    driver.execute_async_script(IDLE)


def _serve(folder: Path):
    """An HTTP server of `folder` on 127.0.0.1 (a free port) in a thread, stopped by itself after
    SERVER_SECONDS; the server."""

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(folder)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    timer = threading.Timer(SERVER_SECONDS, server.shutdown)
    timer.daemon = True
    timer.start()
    server.timer = timer
    return server


@pytest.fixture(scope="module")
def model():
    return VQDraw.from_pretrained("mnist").eval()


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    """The exported page of pretrained:mnist, served and opened in headless Chromium: the driver."""
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.support.ui import WebDriverWait

    folder = tmp_path_factory.mktemp("web") / "web"
    assert main(["export", "pretrained:mnist", "-o", str(folder), "--web", "--ort-web", ORT_WEB]) == 0
    server = _serve(folder)
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1000,1180", "--force-device-scale-factor=1"):
        options.add_argument(arg)
    try:
        driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    except WebDriverException as exc:  # installed but unable to start here (a sandbox, a version mismatch)
        server.shutdown()
        server.timer.cancel()
        pytest.skip(f"headless Chromium did not start: {str(exc.msg or exc).strip().splitlines()[0][:200]}")
    try:
        driver.set_script_timeout(60)
        driver.get(f"http://127.0.0.1:{server.server_address[1]}/")
        WebDriverWait(driver, 60).until(lambda d: d.execute_script(
            "return document.body.dataset.ready === 'yes' || document.getElementById('about').className === 'error'"))
        about = driver.find_element("id", "about")
        assert about.get_attribute("class") != "error", about.text
        yield driver
    finally:
        driver.quit()
        server.shutdown()
        server.timer.cancel()


@pytest.fixture(scope="module")
def vqd_files(tmp_path_factory):
    """`vqdraw encode pretrained:mnist` of DIGITS test digits (all stages, and the first 4) and
    `vqdraw decode` of each: [(file, [decoded PNG pixels (28, 28) uint8])]."""
    tmp = tmp_path_factory.mktemp("vqd")
    digits = load_dataset("mnist-embedded", "test").batch(np.arange(DIGITS) * 50)  # digits 0, 1, ..., 5
    names = []
    for i, digit in enumerate(digits):
        names.append(str(tmp / f"digit{i}.png"))
        save_image(digit, names[-1])
    out = []
    for stages in ([], ["--stages", "4"]):
        vqd = tmp / f"digits{len(out)}.vqd"
        assert main(["encode", "pretrained:mnist", *names, "-o", str(vqd), "--no-progress", *stages]) == 0
        decoded = tmp / f"decoded{len(out)}"
        assert main(["decode", "pretrained:mnist", str(vqd), "-o", str(decoded), "--no-progress"]) == 0
        images = [np.asarray(Image.open(decoded / f"{i:06d}.png").convert("L")) for i in range(DIGITS)]
        out.append((vqd, images))
    return out


def test_the_page_decodes_a_vqd_file_as_vqdraw_decode_does(page, vqd_files, model):
    for vqd, expected in vqd_files:
        file = read_vqd(vqd.read_bytes())
        page.find_element("id", "vqd").send_keys(str(vqd))
        idle(page)
        items = page.find_elements("css selector", "#items canvas.item")
        assert len(items) == DIGITS, page.find_element("id", "vqdinfo").text
        for item, png in zip(items, expected):
            got = pixels(page, item)
            assert np.abs(got.astype(int) - png).max() <= 1  # within 1/255 per pixel
        # the first item is shown: its code (a prefix for the --stages 4 file) and the big canvas
        assert shown_codes(page) == file.codes[0].tolist()
        assert np.abs(pixels(page, "#output", 10).astype(int) - expected[0]).max() <= 1
        items[2].click()
        idle(page)
        assert shown_codes(page) == file.codes[2].tolist()
        assert np.abs(pixels(page, "#output", 10).astype(int) - expected[2]).max() <= 1
        value = int("".join(f"{c:06b}" for c in file.codes[2]), 2)  # K = 64: six bits per stage
        assert int(page.find_element("id", "hex").text, 16) == value


def test_the_page_encodes_a_stroke_as_the_python_encoder_does(page, model):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.support.ui import Select

    page.find_element("id", "clear").click()
    idle(page)
    canvas = page.find_element("id", "draw")  # 280 x 280, its centre is (0, 0) for the actions
    actions = ActionChains(page).move_to_element_with_offset(canvas, -60, -80).click_and_hold()
    for dx, dy in ((60, 0), (40, 0), (-30, 60), (-20, 50), (-10, 50)):  # a 7
        actions.move_by_offset(dx, dy)
    actions.release().perform()
    idle(page)
    seen = pixels(page, "#input")  # what the page gave its encoder: (28, 28) values k / 255
    assert seen.sum() > 255 * 20, "the stroke did not reach the canvas"
    x = torch.from_numpy((seen.astype(np.float64) / 255).astype(np.float32)).view(1, 1, 28, 28)
    codes = model.encode(x)[0].tolist()
    assert shown_codes(page) == codes
    decoded = (model.decode(torch.tensor([codes]))[0, 0] * 255).round().numpy()
    assert np.abs(pixels(page, "#output", 10).astype(int) - decoded).max() <= 1
    if os.environ.get("VQDRAW_WEB_SCREENSHOT"):
        page.save_screenshot(os.environ["VQDRAW_WEB_SCREENSHOT"])

    # change one stage's choice: the page shows the decoding of the new code, stage by stage
    changed = list(codes)
    changed[1] = (codes[1] + 1) % model.options
    Select(page.find_elements("css selector", "#code select")[1]).select_by_value(str(changed[1]))
    idle(page)
    assert shown_codes(page) == changed
    stages = page.find_elements("css selector", "#stages canvas")
    for n in (1, 2, model.stages):
        after = (model.decode(torch.tensor([changed]), stages=n)[0, 0] * 255).round().numpy()
        assert np.abs(pixels(page, stages[n - 1]).astype(int) - after).max() <= 1
    assert np.abs(pixels(page, "#output", 10).astype(int) - after).max() <= 1

    page.find_element("id", "sample").click()
    idle(page)
    sampled = shown_codes(page)
    assert len(sampled) == model.stages and all(0 <= c < model.options for c in sampled)


def _vqd(version: int, fingerprint: bytes, shape, K: int, n: int, count: int, payload: bytes,
         flags: int = 0, modality: int = 1) -> bytes:
    """A .vqd file put together by hand (docs/vqd-format.md), with its CRC."""
    if version == 1:
        head = struct.pack("<4sBB16s3HHHI", b"VQDR", 1, flags, fingerprint, *shape, K, n, count)
    else:
        head = struct.pack(f"<4sBB16sBB{len(shape)}HHHI", b"VQDR", version, flags, fingerprint, modality,
                           len(shape), *shape, K, n, count)
    body = head + payload
    return body + struct.pack("<I", zlib.crc32(body))


def test_the_page_reads_vqd_files_by_the_format_rules(page, model):
    """The page's reader accepts what vqdraw's reads (with the same codes) and refuses what it
    refuses, with the same one-line message."""
    fp, shape, K, N = model.fingerprint(), (1, 28, 28), model.options, model.stages
    codes = np.random.default_rng(0).integers(0, K, (3, N))
    good = write_vqd(codes, K, shape, fp)
    payload = good[36:-4]
    other = bytes(16 - len(fp)) + bytes(b ^ 0xFF for b in fp)
    cases = {
        "good": good,
        "version 2": _vqd(2, fp, shape, K, N, 3, payload),
        "prefix": write_vqd(codes[:, :4], K, shape, fp),
        "none": write_vqd(codes[:0], K, shape, fp),
        "empty": b"",
        "magic": b"\x89PNG" + good[4:],
        "short": good[:3],
        "truncated": good[:-1],
        "garbage": good + b"\0",
        "crc": good[:40] + bytes([good[40] ^ 1]) + good[41:],
        "version 9": good[:4] + b"\x09" + good[5:],
        "flags": _vqd(1, fp, shape, K, N, 3, payload, flags=1),
        "K": _vqd(1, fp, shape, 1, N, 0, b""),
        "n": _vqd(1, fp, shape, K, 0, 0, b""),
        "zero dim": _vqd(1, fp, (1, 0, 28), K, N, 0, b""),
        "model": write_vqd(codes, K, shape, other),
        "shape": write_vqd(codes, K, (1, 28, 27), fp),
        "options": write_vqd(codes % 32, 32, shape, fp),
        "stages": write_vqd(np.zeros((1, N + 1), dtype=np.int64), K, shape, fp),
        "volume": write_vqd(codes, K, (1, 4, 4, 4), fp),
        "modality": _vqd(2, fp, shape, K, N, 3, payload, modality=9),
        "dims": _vqd(2, fp, (1, 28), K, N, 3, payload),
        "padding": _vqd(1, fp, shape, K, N, 3, payload[:-1] + bytes([payload[-1] | 1])),
    }
    page_says = {"version 9": "unsupported .vqd format version 9 (this page reads versions 1 and 2)"}
    meta = page.execute_script("return fetch('model.json').then((r) => r.json())")
    for name, data in cases.items():
        try:
            expected = read_vqd(data, fp, data_shape=shape, K=K, max_stages=N, modality="image").codes.tolist()
        except VqdFormatError as exc:
            expected = str(exc)
        expected = page_says.get(name, expected)
        got = page.execute_script(
            "try { return window.vqdrawPage.readVqd(new Uint8Array(arguments[0]), arguments[1]).codes; }"
            " catch (e) { return e instanceof window.vqdrawPage.VqdFormatError ? e.message : 'other: ' + e; }",
            list(data), meta)
        assert got == expected, (name, got, expected)
    v3 = good[:4] + b"\x03" + good[5:]
    got = page.execute_script("try { window.vqdrawPage.readVqd(new Uint8Array(arguments[0]), arguments[1]); }"
                              " catch (e) { return e.message; }", list(v3), meta)
    assert "version 3" in got and "vqdraw decode" in got
