"""Issue 31, one boundary: each argument is checked where it enters, once, with one wording.

The CLI's numbers are checked by argparse (cli/common.py); what depends on the model or the file is
checked by the library's public functions (core/inputs.py, compress/codec.py), and the command shows
that same message. An input folder is walked once per command (vqdraw.data.walk).
"""

import pytest
import torch

from vqdraw import VQDraw
from vqdraw.cli import main
from vqdraw.errors import VQDrawError


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("checks") / "model"
    torch.manual_seed(0)
    VQDraw.from_preset("mnist", options=4, stages=2, segment=2).save(path)
    return path


def digits(folder, count=3):
    """`count` 28x28 greyscale PNGs (dark background, a light square) in `folder`/sub/."""
    from PIL import Image

    (folder / "sub").mkdir(parents=True)
    for i in range(count):
        im = Image.new("L", (28, 28), 0)
        im.paste(255, (8 + i, 8, 20, 20))
        im.save(folder / "sub" / f"{i}.png")
    return folder


def test_an_image_folder_is_walked_once_per_encode(tmp_path, monkeypatch):
    from vqdraw.data import walk

    folder = digits(tmp_path / "digits")
    walked = []
    real = walk._walk
    monkeypatch.setattr(walk, "_walk", lambda p: walked.append(p) or real(p))
    assert main(["encode", "pretrained:mnist", str(folder), "-o", str(tmp_path / "x.vqd"), "--no-progress"]) == 0
    assert walked == [folder]
    # outside a command each call lists the folder afresh (a program sees files added since)
    from vqdraw.data.images import expand_image_paths

    assert len(expand_image_paths([folder])) == 3
    assert len(walked) == 2


def test_path_modality_lists_a_folder_once(tmp_path, monkeypatch):
    from vqdraw.data import walk
    from vqdraw.modalities import path_modality

    folder = digits(tmp_path / "digits")
    walked = []
    real = walk._walk
    monkeypatch.setattr(walk, "_walk", lambda p: walked.append(p) or real(p))
    assert path_modality(folder) == "image"
    assert walked == [folder]  # four modalities asked, one listing


def _encoded(model_dir, tmp_path, stages):
    """A .vqd file of one digit with `stages` stages, made through the CLI."""
    folder = digits(tmp_path / f"d{stages}", count=1)
    out = tmp_path / f"s{stages}.vqd"
    assert main(["encode", str(model_dir), str(folder), "-o", str(out), "--stages", str(stages),
                 "--no-progress"]) == 0
    return out


# (CLI argv with {M} = model, {I} = an image folder, {V} = a .vqd file of 1 stage, {O} = an output folder;
#  the same request through the Python API)
SAME_MESSAGE = [
    ("encode: more stages than the model has",
     ["encode", "{M}", "{I}", "-o", "{O}/x.vqd", "--stages", "5"],
     lambda model, x, vqd: __import__("vqdraw.compress.codec", fromlist=["compress"]).compress(model, x, stages=5)),
    ("decode: more stages than the file stores",
     ["decode", "{M}", "{V}", "-o", "{O}/out", "--stages", "2"],
     lambda model, x, vqd: __import__("vqdraw.compress.codec", fromlist=["decompress"]).decompress(model, vqd,
                                                                                                     stages=2)),
]


@pytest.mark.parametrize("name,argv,call", SAME_MESSAGE, ids=[row[0] for row in SAME_MESSAGE])
def test_the_same_bad_value_gets_the_same_message_from_the_cli_and_the_api(name, argv, call, model_dir,
                                                                          tmp_path, capsys):
    from vqdraw.data.images import expand_image_paths, load_images

    folder = digits(tmp_path / "in", count=2)
    vqd = _encoded(model_dir, tmp_path, 1)
    capsys.readouterr()
    fill = {"{M}": str(model_dir), "{I}": str(folder), "{V}": str(vqd), "{O}": str(tmp_path)}
    args = [fill.get(a, a).replace("{O}", str(tmp_path)) for a in argv]
    assert main(args + (["--no-progress"] if args[0] in ("encode", "decode") else [])) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    model = VQDraw.load(model_dir)
    x = load_images(expand_image_paths([folder]), model.config.data_shape)
    with pytest.raises(VQDrawError) as info:
        call(model, x, vqd.read_bytes())
    assert err[0] == f"vqdraw {args[0]}: error: {info.value}"


# ---------------------------------------------------------------- one options object, CLI -> codec


def test_encode_and_decode_hand_one_options_object_down(model_dir, tmp_path, monkeypatch):
    from vqdraw.compress.codec import DecodeOptions, EncodeOptions
    from vqdraw.core.stageloop import Beam
    from vqdraw.modalities.image import ImageModality

    seen = {}
    for verb in ("encode", "decode"):
        real = getattr(ImageModality, verb)

        def spy(self, model, what, out, options, *rest, _real=real, _verb=verb, **kw):
            seen[_verb] = options
            return _real(self, model, what, out, options, *rest, **kw)

        monkeypatch.setattr(ImageModality, verb, spy)
    folder = digits(tmp_path / "in", count=3)
    vqd = tmp_path / "x.vqd"
    assert main(["encode", str(model_dir), str(folder), "-o", str(vqd), "--stages", "1", "--beam", "2",
                 "--batch", "2", "--no-progress"]) == 0
    options = seen["encode"]
    assert isinstance(options, EncodeOptions)
    assert (options.stages, options.batch, options.fit, options.prior, options.progress) == (1, 2, False, None, False)
    assert isinstance(options.policy, Beam) and options.policy.width == 2
    assert main(["decode", str(model_dir), str(vqd), "-o", str(tmp_path / "out"), "--batch", "2"]) == 0
    assert seen["decode"] == DecodeOptions(stages=None, batch=2, prior=None, progress=True)
    assert len(list((tmp_path / "out").glob("*.png"))) == 3


def test_options_are_checked_when_made_with_the_library_wording():
    from dataclasses import FrozenInstanceError

    from vqdraw.compress.codec import DecodeOptions, EncodeOptions
    from vqdraw.core.inputs import check_batch

    with pytest.raises(VQDrawError) as made:
        EncodeOptions(batch=0)
    with pytest.raises(VQDrawError) as checked:
        check_batch(0)
    assert str(made.value) == str(checked.value)
    with pytest.raises(VQDrawError, match="batch size"):
        DecodeOptions(batch=True)
    with pytest.raises(VQDrawError, match="Policy"):
        EncodeOptions(policy=8)
    with pytest.raises(FrozenInstanceError):
        EncodeOptions().stages = 3


def test_a_program_encodes_through_a_modality_with_options(model_dir, tmp_path):
    from vqdraw.compress.codec import DecodeOptions, EncodeOptions, decompress
    from vqdraw.core.stageloop import Beam
    from vqdraw.modalities import modality_for

    model = VQDraw.load(model_dir)
    modality = modality_for(model.config)
    folder = digits(tmp_path / "in", count=2)
    line = modality.encode(model, [str(folder)], tmp_path / "x.vqd", EncodeOptions(policy=Beam(2), progress=False))
    assert "2 images" in line
    images, vqd = decompress(model, (tmp_path / "x.vqd").read_bytes())
    assert images.shape == (2, 1, 28, 28) and vqd.stages == model.stages
    line = modality.decode(model, (tmp_path / "x.vqd").read_bytes(), tmp_path / "out", DecodeOptions(stages=1),
                           source="x.vqd")
    assert "1 of 2 stages" in line


def test_no_modality_takes_encoding_keywords():
    import inspect

    from vqdraw.modalities import REGISTRY

    for modality in REGISTRY.values():
        assert list(inspect.signature(modality.encode).parameters) == ["model", "files", "out", "options"]
        assert list(inspect.signature(modality.decode).parameters) == ["model", "data", "out", "options", "source"]


def test_data_is_refused_in_one_wording_by_every_public_entry(model_dir):
    """Out-of-range, NaN, integer and misshapen data: the same message from model.encode, the codec and
    a distilled encoder (each checks with core/inputs.check_data)."""
    from vqdraw.compress.codec import compress, encode_images
    from vqdraw.training.distill import DistilledConfig, build_encoder

    model = VQDraw.load(model_dir)
    encoder = build_encoder(DistilledConfig.for_model(model))
    x = torch.rand(2, 1, 28, 28)
    for bad in (x * 255, torch.full_like(x, float("nan")), (x * 255).to(torch.uint8), x[:, :, :20]):
        messages = set()
        for call in (model.encode, lambda d: compress(model, d), lambda d: encode_images(model, d, beam=2),
                     encoder.predict):
            with pytest.raises(VQDrawError) as info:
                call(bad)
            messages.add(str(info.value))
        assert len(messages) == 1, messages
