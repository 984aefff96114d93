"""Provenance: every generated file says it was generated (C2PA when c2pa-python is installed, file metadata
otherwise), `python -m minisora provenance FILE` reads it back, and an edited file fails to verify."""

import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest

from minisora import provenance, world
from minisora.__main__ import main
from minisora.pipeline import MiniSora

ASSETS = Path(__file__).resolve().parents[1] / "assets" / "tiny-shapes"
FORMATS = (".gif", ".png", ".mp4")
needs_c2pa = pytest.mark.skipif(not provenance.c2pa_available(), reason="needs c2pa-python (the provenance extra)")


def video():
    return world.render("a red circle hits a blue square", 9, 32, 32, seed=1).video


def write(path: Path, sign: bool) -> Path:
    rec = provenance.record(None, prompt="a red circle hits a blue square", seed=3, steps=4, guidance=2.0,
                            mode="generate")
    frames = video()
    return provenance.save(frames[0] if path.suffix == ".png" else frames, path, rec, sign=sign)


def edit_png_pixel(path: Path) -> None:
    """Change one pixel of a PNG and rewrite its image data with a valid CRC: the file still decodes."""
    data = bytearray(path.read_bytes())
    pos, chunks = 8, []
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        chunks.append((kind, bytes(data[pos + 8:pos + 8 + length])))
        pos += 12 + length
    raw = bytearray(zlib.decompress(b"".join(body for kind, body in chunks if kind == b"IDAT")))
    raw[1 + 3 * 40] ^= 0xFF  # first row, after its filter byte: one channel of one pixel
    out, done = bytearray(data[:8]), False
    for kind, body in chunks:
        if kind == b"IDAT":
            if done:
                continue
            kind, body, done = b"IDAT", zlib.compress(bytes(raw)), True
        out += struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)
    path.write_bytes(bytes(out))


@pytest.mark.parametrize("suffix", FORMATS)
def test_metadata_record_written_and_read_back(tmp_path, suffix):
    path = write(tmp_path / f"clip{suffix}", sign=False)
    info = provenance.read(path)
    assert info is not None and not info["signed"] and info["valid"]
    rec = info["record"]
    assert rec["generator"] == "minisora" and rec["label"] == "AI-generated" and rec["prompt"].startswith("a red")
    assert rec["seed"] == 3 and rec["steps"] == 4 and rec["guidance"] == 2.0 and rec["mode"] == "generate"
    assert rec["created"].endswith("+00:00") and "version" in rec and "model_hash" in rec


def test_metadata_record_detects_edited_frames(tmp_path):
    path = write(tmp_path / "clip.png", sign=False)
    edit_png_pixel(path)
    info = provenance.read(path)
    assert info is not None and not info["valid"]
    assert main(["provenance", str(path)]) == 1


@needs_c2pa
@pytest.mark.parametrize("suffix", FORMATS)
def test_c2pa_manifest_signed_and_verified(tmp_path, suffix, capsys):
    plain = tmp_path / f"plain{suffix}"
    provenance.save(video()[0] if suffix == ".png" else video(), plain, {}, sign=False)  # for the size only
    path = write(tmp_path / f"clip{suffix}", sign=True)
    info = provenance.read(path)
    assert info["signed"] and info["valid"] and not info["trusted"], info
    assert info["record"]["digital_source_type"] == "trainedAlgorithmicMedia"
    assert info["record"]["label"] == "AI-generated" and info["record"]["prompt"] == "a red circle hits a blue square"
    overhead = path.stat().st_size - plain.stat().st_size
    print(f"{suffix}: {plain.stat().st_size} -> {path.stat().st_size} bytes")
    assert overhead < 20_000  # no thumbnail: a few KB, not hundreds
    assert main(["provenance", str(path)]) == 0
    assert "AI-generated" in capsys.readouterr().out


@needs_c2pa
def test_c2pa_tampered_pixels_fail(tmp_path, capsys):
    path = write(tmp_path / "clip.png", sign=True)
    edit_png_pixel(path)
    info = provenance.read(path)
    assert info["signed"] and not info["valid"] and info["problems"], info
    assert main(["provenance", str(path)]) == 1
    assert "DOES NOT VERIFY" in capsys.readouterr().out


@needs_c2pa
def test_c2pa_tampered_video_bytes_fail(tmp_path):
    path = write(tmp_path / "clip.gif", sign=True)
    data = bytearray(path.read_bytes())
    data[-20] ^= 0x01  # inside the last frame's image data
    path.write_bytes(bytes(data))
    assert not provenance.read(path)["valid"]


def test_no_record_exits_1(tmp_path, capsys):
    import imageio.v3 as iio

    path = tmp_path / "real.png"
    iio.imwrite(path, video()[0])
    assert provenance.read(path) is None
    assert main(["provenance", str(path)]) == 1
    assert "no provenance record" in capsys.readouterr().out


@needs_c2pa
def test_user_key_and_local_key(tmp_path, monkeypatch):
    key, chain = provenance.local_credentials(tmp_path / "mine")  # stands in for a user's own key
    assert (tmp_path / "mine" / "ca.cert.pem").exists() and oct(key.stat().st_mode)[-3:] == "600"
    monkeypatch.setenv("MINISORA_PROVENANCE_KEY", str(key))
    monkeypatch.setenv("MINISORA_PROVENANCE_CERT", str(chain))
    path = write(tmp_path / "clip.gif", sign=True)
    assert provenance.read(path)["valid"]
    monkeypatch.delenv("MINISORA_PROVENANCE_CERT")
    with pytest.raises(ValueError, match="both"):
        provenance.credentials()


def test_cli_sample_and_image_carry_provenance(tmp_path):
    gif, png = tmp_path / "s.gif", tmp_path / "i.png"
    common = ["--model", str(ASSETS), "--prompt", "a red circle moves to the right", "--steps", "2", "--seed", "5"]
    assert main(["sample", *common, "--out", str(gif)]) == 0
    assert main(["image", *common, "--out", str(png), "--no-progress"]) == 0
    model_hash = provenance.model_hash(MiniSora.from_pretrained(ASSETS))
    for path, mode in ((gif, "generate"), (png, "image")):
        info = provenance.read(path)
        assert info["valid"] and info["record"]["mode"] == mode and info["record"]["seed"] == 5
        assert info["record"]["model_hash"] == model_hash and info["record"]["steps"] == 2
    json.dumps(provenance.read(gif)["record"])  # JSON-ready


def test_model_card_says_it(tmp_path):
    card = MiniSora.from_preset("tiny").model_card()
    assert "AI-generated" in card and "python -m minisora provenance" in card
    assert "AI-generated" in (ASSETS / "README.md").read_text()


def test_studio_save_carries_provenance(tmp_path):
    from minisora.widgets import Studio

    model = MiniSora.from_pretrained(ASSETS)
    studio = Studio(model, prompt="a blue square moves up", seed=7)
    with pytest.raises(ValueError, match="Generate"):
        studio.save(tmp_path / "none.gif")
    studio.steps.value = 2
    assert studio.generate()
    info = provenance.read(studio.save(tmp_path / "studio.gif"))
    assert info["valid"] and info["record"]["prompt"] == "a blue square moves up" and info["record"]["seed"] == 7
