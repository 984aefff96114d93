"""Text in a video or image file's own metadata: a GIF comment, a PNG iTXt chunk, an MP4 comment tag.

minisora.provenance uses it to keep its record in the file when no C2PA signer is installed. Each format
has a place for free text that players ignore; `label` marks ours, so other comments are left alone.

    write_text(path, "org.minisora.generation", '{"prompt": ...}')   # in place, .gif/.png/.mp4
    read_text(path, "org.minisora.generation")                        # -> the text, or None

GIF and PNG are edited as bytes (formats: GIF89a Comment Extension; PNG iTXt, CRC-checked); MP4 goes
through the ffmpeg binary that imageio-ffmpeg ships, copying the streams unchanged.
"""

from __future__ import annotations

import os
import struct
import subprocess
import zlib
from pathlib import Path


def _png_chunks(data: bytes):
    pos = 8
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        yield pos, kind, data[pos + 8:pos + 8 + length]
        pos += 12 + length


def _png_write(data: bytes, label: str, text: str) -> bytes:
    payload = label.encode() + b"\0\0\0\0\0" + text.encode()  # iTXt: keyword, no compression, no language
    chunk = struct.pack(">I", len(payload)) + b"iTXt" + payload
    chunk += struct.pack(">I", zlib.crc32(b"iTXt" + payload) & 0xFFFFFFFF)
    end = next(pos for pos, kind, _ in _png_chunks(data) if kind == b"IEND")
    return data[:end] + chunk + data[end:]


def _png_read(data: bytes, label: str) -> str | None:
    for _, kind, body in _png_chunks(data):
        if kind == b"iTXt" and body.startswith(label.encode() + b"\0"):
            return body[len(label) + 5:].decode()
    return None


def _gif_header_end(data: bytes) -> int:
    flags = data[10]
    return 13 + (3 * 2 ** ((flags & 7) + 1) if flags & 0x80 else 0)  # header, screen descriptor, colour table


def _gif_write(data: bytes, label: str, text: str) -> bytes:
    body = (label + "\n" + text).encode()
    blocks = b"".join(bytes([len(body[i:i + 255])]) + body[i:i + 255] for i in range(0, len(body), 255))
    end = _gif_header_end(data)
    return data[:end] + b"\x21\xfe" + blocks + b"\x00" + data[end:]  # a Comment Extension


def _gif_read(data: bytes, label: str) -> str | None:
    pos, start = _gif_header_end(data), label.encode() + b"\n"
    while pos < len(data) and data[pos:pos + 2] == b"\x21\xfe" or data[pos:pos + 1] == b"\x21":
        kind, pos, body = data[pos + 1], pos + 2, b""
        while data[pos]:
            body, pos = body + data[pos + 1:pos + 1 + data[pos]], pos + 1 + data[pos]
        pos += 1
        if kind == 0xFE and body.startswith(start):
            return body[len(start):].decode()
    return None


def _ffmpeg() -> str:
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def _mp4_write(path: Path, label: str, text: str) -> None:
    tmp = path.with_name(f".{path.stem}.tagged{path.suffix}")
    subprocess.run([_ffmpeg(), "-v", "error", "-y", "-i", str(path), "-map", "0", "-c", "copy",
                    "-movflags", "use_metadata_tags", "-metadata", f"comment={label} {text}", str(tmp)],
                   check=True, capture_output=True)
    os.replace(tmp, path)


def _mp4_read(path: Path, label: str) -> str | None:
    out = subprocess.run([_ffmpeg(), "-v", "error", "-i", str(path), "-f", "ffmetadata", "-"],
                         capture_output=True, text=True).stdout
    lines = out.replace("\\\n", "\n").splitlines()
    for line in lines:
        if line.startswith(f"comment={label} "):
            return line[len(f"comment={label} "):].replace("\\=", "=").replace("\\;", ";").replace("\\#", "#") \
                .replace("\\\\", "\\")
    return None


def write_text(path: str | os.PathLike, label: str, text: str) -> None:
    """Put `text` under `label` into a .gif/.png/.mp4 file, in place (written aside, then renamed)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".mp4":
        return _mp4_write(path, label, text)
    data = path.read_bytes()
    data = _png_write(data, label, text) if suffix == ".png" else _gif_write(data, label, text)
    tmp = path.with_name(f".{path.stem}.tagged{path.suffix}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def read_text(path: str | os.PathLike, label: str) -> str | None:
    """The text stored under `label` in a .gif/.png/.mp4 file, or None."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".mp4":
        return _mp4_read(path, label)
    return (_png_read if suffix == ".png" else _gif_read)(path.read_bytes(), label)
