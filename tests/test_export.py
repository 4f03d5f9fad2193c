"""`vqdraw export` (issue 33): the exported ONNX graphs, run by ONNX Runtime on the CPU, give
vqdraw's own greedy codes and decodings; model.json describes them; a model whose graph does not
export is refused in one line."""

import json

import numpy as np
import pytest
import torch

onnx = pytest.importorskip("onnx", reason="ONNX export needs the onnx package (pip install 'vqdraw[export]')")
ort = pytest.importorskip("onnxruntime", reason="running the exported graphs needs onnxruntime "
                          "(pip install 'vqdraw[export]')")

from vqdraw import VQDraw  # noqa: E402
from vqdraw.cli import main  # noqa: E402
from vqdraw.compress.export import DECODER, DESCRIPTION, ENCODER, OPSET, export  # noqa: E402
from vqdraw.core.config import ModelConfig, RefinerConfig  # noqa: E402
from vqdraw.data import load_dataset  # noqa: E402
from vqdraw.errors import ConfigError  # noqa: E402

ITEMS = 100  # embedded MNIST test digits


def session(path):
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1  # the tests share a busy machine
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def check_graphs(folder, model, x, *, atol=1e-4):
    """The exported encoder gives the model's greedy codes (>= 99.5% of items) and the exported
    decoder gives model.decode of those codes (and of random codes), within `atol`."""
    codes = model.encode(x)
    exported = session(folder / ENCODER).run(None, {"data": x.numpy()})[0]
    assert exported.dtype == np.int64 and exported.shape == tuple(codes.shape)
    differ = int((exported != codes.numpy()).any(axis=1).sum())
    assert differ <= 0.005 * len(x), f"{differ} of {len(x)} items got other codes from the exported encoder"

    decoder = session(folder / DECODER)
    random = torch.randint(0, model.options, (7, model.stages))
    for c in (codes, random, codes[:1]):  # any batch size
        out, stages = decoder.run(None, {"codes": c.numpy()})
        expected = model.decode(c).numpy()
        assert out.dtype == np.float32 and out.shape == expected.shape
        assert np.abs(out - expected).max() <= atol
        assert stages.shape == (len(c), model.stages, *expected.shape[1:]) and np.array_equal(stages[:, -1], out)
    for n in range(1, model.stages):  # the data after stage n: the decoding of the code's first n choices
        assert np.abs(stages[:, n - 1] - model.decode(c, stages=n).numpy()).max() <= atol


@pytest.fixture(scope="module")
def mnist_export(tmp_path_factory):
    """`vqdraw export pretrained:mnist -o DIR`, run once for the module: (DIR, exit code)."""
    folder = tmp_path_factory.mktemp("export") / "mnist"
    torch.set_num_threads(1)
    return folder, main(["export", "pretrained:mnist", "-o", str(folder)])


@pytest.fixture(scope="module")
def mnist():
    return VQDraw.from_pretrained("mnist").eval()


def test_cli_writes_both_graphs_and_model_json(mnist_export, mnist):
    folder, code = mnist_export
    assert code == 0
    assert {p.name for p in folder.iterdir()} == {DECODER, ENCODER, DESCRIPTION}
    meta = json.loads((folder / DESCRIPTION).read_text())
    cfg = mnist.config
    assert meta["format"] == "vqdraw-onnx" and meta["opset"] == OPSET
    assert meta["modality"] == "image" and meta["likelihood"] == "mse"
    assert meta["data_shape"] == [1, 28, 28]
    assert (meta["options"], meta["stages"]) == (cfg.options, cfg.stages) == (64, 10)
    assert meta["fingerprint"] == mnist.fingerprint().hex()
    assert meta["mean"] == list(cfg.mean) and meta["std"] == list(cfg.std)
    assert meta["decoder"]["input"] == {"name": "codes", "shape": ["B", 10], "dtype": "int64"}
    assert meta["decoder"]["stages"] == {"name": "stages", "shape": ["B", 10, 1, 28, 28], "dtype": "float32"}
    assert meta["encoder"]["output"] == {"name": "codes", "shape": ["B", 10], "dtype": "int64"}
    for name, graph in ((DECODER, "decoder"), (ENCODER, "encoder")):
        proto = onnx.load(str(folder / name))
        onnx.checker.check_model(proto)
        assert proto.graph.input[0].name == meta[graph]["input"]["name"]
        assert [o.name for o in proto.graph.output] == [meta[graph][k]["name"] for k in ("output", "stages")
                                                        if k in meta[graph]]
        assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param  # the batch axis is dynamic


def test_mnist_graphs_match_the_model(mnist_export, mnist):
    folder, code = mnist_export
    assert code == 0
    x = load_dataset("mnist-embedded", "test").batch(np.arange(ITEMS))
    check_graphs(folder, mnist, x)


def test_cli_refuses_a_bad_model_in_one_line(tmp_path, capsys):
    assert main(["export", str(tmp_path / "missing"), "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("vqdraw export: error:")
    assert not (tmp_path / "out").exists()


def tiny_text_model() -> VQDraw:
    """The author's text refiner made tiny (softmax input, dilated blocks, LayerNorm), two segments."""
    torch.manual_seed(0)
    refiner = RefinerConfig(down=(), body=(16,), up=(), pre_head=(16,), head_kernel=1, res_expand=2,
                            dilations=(1, 2), softmax_input=True)
    cfg = ModelConfig((1, 32), 8, 4, 2, mean=(0.5,), std=(0.5,), likelihood="categorical", categories=256,
                      refiner=refiner)
    return VQDraw(cfg).eval()


def tiny_volume_model() -> VQDraw:
    torch.manual_seed(0)
    cfg = ModelConfig((1, 8, 8, 8), 8, 4, 2, likelihood="bernoulli",
                      refiner=RefinerConfig(down=(8,), body=(8,), up=(8,)))
    return VQDraw(cfg).eval()


def tiny_progressive_gaussian_model() -> VQDraw:
    torch.manual_seed(0)
    cfg = ModelConfig((3, 16, 16), 8, 4, 2, mean=(0.5,) * 3, std=(0.25,) * 3, likelihood="gaussian",
                      refiner=RefinerConfig(down=(8,), body=(8,), up=(8,), progressive=1))
    return VQDraw(cfg).eval()


def tiny_non_residual_model() -> VQDraw:
    """The paper's "no residual outputs" ablation: each stage replaces the canvas."""
    torch.manual_seed(0)
    cfg = ModelConfig((1, 8, 8), 8, 4, 2, residual=False, refiner=RefinerConfig(down=(8,), body=(8,), up=(8,)))
    return VQDraw(cfg).eval()


@pytest.mark.parametrize("make, data", [
    (tiny_text_model, lambda g: torch.randint(0, 256, (40, 1, 32), generator=g).float() / 255),
    (tiny_volume_model, lambda g: (torch.rand(40, 1, 8, 8, 8, generator=g) > 0.5).float()),
    (tiny_progressive_gaussian_model, lambda g: torch.rand(40, 3, 16, 16, generator=g)),
    (tiny_non_residual_model, lambda g: torch.rand(40, 1, 8, 8, generator=g)),
], ids=["text", "volume", "image-gaussian-progressive", "image-non-residual"])
def test_other_modalities_and_likelihoods_export(tmp_path, capsys, make, data):
    model = make()
    result = export(model, tmp_path)
    assert capsys.readouterr() == ("", "")  # the library prints nothing
    assert result.description["likelihood"] == model.config.likelihood
    assert json.loads((tmp_path / DESCRIPTION).read_text())["data_shape"] == list(model.config.data_shape)
    check_graphs(tmp_path, model, data(torch.Generator().manual_seed(0)))


def tiny_audio_model() -> VQDraw:
    refiner = RefinerConfig(down=(), body=(8,), up=(), pre_head=(8,), head_kernel=1, res_expand=2, dilations=(1, 2))
    return VQDraw(ModelConfig((1, 64), 8, 2, 2, mean=(0.5,), std=(0.25,), refiner=refiner,
                              likelihood="discretized-logistic", modality="audio", sample_rate=8000)).eval()


def test_a_model_that_does_not_export_is_refused_in_one_line(tmp_path, capsys):
    with pytest.raises(ConfigError, match="discretized-logistic likelihood does not export"):
        export(tiny_audio_model(), tmp_path / "lib")
    assert not (tmp_path / "lib").exists()  # refused before anything is written
    tiny_audio_model().save(tmp_path / "audio")
    assert main(["export", str(tmp_path / "audio"), "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "does not export to ONNX" in err[0]
    assert not (tmp_path / "out").exists()


def fake_ort_web(folder):
    """A stand-in for onnxruntime-web's npm package: the files the page needs, in dist/."""
    from vqdraw.compress.export import ORT_WEB_FILES

    (folder / "dist").mkdir(parents=True)
    for name in ORT_WEB_FILES:
        (folder / "dist" / name).write_text(f"// {name}\n")
    return folder


def test_web_page_is_written_beside_the_graphs(tmp_path, capsys):
    import re

    from vqdraw.compress.export import ORT_WEB_FILES, WEB_FILES

    torch.manual_seed(0)
    VQDraw(ModelConfig((1, 8, 8), 4, 2, 2, refiner=RefinerConfig(down=(8,), body=(8,), up=(8,)))).save(
        tmp_path / "model")
    ort_web = fake_ort_web(tmp_path / "onnxruntime-web")
    out = tmp_path / "page"
    assert main(["export", str(tmp_path / "model"), "-o", str(out), "--web", "--ort-web", str(ort_web)]) == 0
    names = {p.name for p in out.iterdir()}
    assert names == {DECODER, ENCODER, DESCRIPTION, *WEB_FILES, *ORT_WEB_FILES}
    for name in ORT_WEB_FILES:  # copied as they are
        assert (out / name).read_bytes() == (ort_web / "dist" / name).read_bytes()
    html = (out / "index.html").read_text()
    assert set(re.findall(r'src="([^"]+)"', html)) <= names  # every script the page loads is there
    app = (out / "app.js").read_text()
    assert "model.json" in app and "meta.encoder.file" in app and "meta.decoder.file" in app
    assert "http.server" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["--web", "--ort-web", "{tmp}/nowhere"], "no onnxruntime-web"),
    (["--ort-web", "{tmp}/nowhere"], "add --web"),
    (["--web", "--ort-web", "{ort}"], "the web page draws grey or colour images; this is a text model"),
])
def test_web_page_refusals_in_one_line(tmp_path, capsys, argv, message):
    tiny_text_model().save(tmp_path / "text")
    ort_web = fake_ort_web(tmp_path / "onnxruntime-web")
    argv = [a.format(tmp=tmp_path, ort=ort_web) for a in argv]
    assert main(["export", str(tmp_path / "text"), "-o", str(tmp_path / "out"), *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert not (tmp_path / "out").exists()
