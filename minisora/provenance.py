"""Provenance: every file minisora writes from a model says that it was generated, by what, and how.

Sora's videos carry C2PA content credentials (the Coalition for Content Provenance and Authenticity's open
standard, https://c2pa.org/specifications/), so that a video that could pass for real can be recognised as
AI-generated. minisora's do too:

    rec = record(model, prompt="a red circle hits a blue square", seed=0, steps=20, guidance=4.0, mode="generate")
    stamp("clip.gif", rec)       # a signed C2PA manifest (with c2pa-python installed), else file metadata
    read("clip.gif")             -> {"record": {...}, "signed": True, "valid": True, "trusted": False, ...}
    python -m minisora provenance clip.gif      (exit 1 when there is no record or it fails to verify)

The record: generator "minisora" and its version, the model hash (sha256 of the weights), prompt, seed,
steps, guidance, mode (generate/animate/extend/...), UTC time and the words "AI-generated".

With `c2pa-python` (`pip install minisora[provenance]`) the record goes into a C2PA manifest whose
`c2pa.actions` assertion says "c2pa.created" with the IPTC digital source type "trainedAlgorithmicMedia",
signed with ES256. The key is the user's (MINISORA_PROVENANCE_KEY and MINISORA_PROVENANCE_CERT, PEM files:
the private key and the certificate chain, leaf first) or else a local one made on first use: a local CA and
a leaf certificate kept in MINISORA_PROVENANCE_DIR (default ~/.config/minisora/provenance). Verifiers report
such a signature valid but untrusted, as they should: nobody vouches for your local CA. No thumbnail is
embedded, so the manifest adds a few KB. Editing one pixel afterwards breaks the signature.

Without the package the record goes into the file's own metadata (a GIF comment, a PNG iTXt chunk, an MP4
comment tag) with the sha256 of the decoded frames, which `read` checks again: not a signature (anyone can
rewrite both), but an edited video no longer matches its record.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
from pathlib import Path

import numpy as np

from .file_metadata import read_text, write_text

AI_GENERATED = "AI-generated"
TRAINED_ALGORITHMIC_MEDIA = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"
LABEL = "org.minisora.generation"  # our C2PA assertion and the key of the plain-metadata record
MIME = {".gif": "image/gif", ".png": "image/png", ".mp4": "video/mp4"}


# ---------------------------------------------------------------------------------------------- the record
def version() -> str:
    try:
        from importlib.metadata import version as package_version

        return package_version("minisora")
    except Exception:  # running from a source tree that is not installed
        return "0.1.0"


def model_hash(model) -> str | None:
    """sha256 of a model's weights (every tensor of its state dict, in key order), cached on the model.

    A `MiniSora` hashes its VAE, DiT and text encoder; None for no model.
    """
    if model is None:
        return None
    cached = getattr(model, "_provenance_hash", None)
    if cached is not None:
        return cached
    digest = hashlib.sha256()
    modules = [getattr(model, name) for name in ("vae", "dit", "text_encoder") if hasattr(model, name)] or [model]
    for module in modules:
        for key, tensor in sorted(module.state_dict().items()):
            digest.update(key.encode())
            digest.update(tensor.detach().cpu().contiguous().view(-1).view(__import__("torch").uint8).numpy()
                          .tobytes())
    value = "sha256:" + digest.hexdigest()
    try:
        model._provenance_hash = value
    except AttributeError:
        pass
    return value


def record(model=None, prompt: str | None = None, seed: int | None = None, steps: int | None = None,
           guidance: float | None = None, mode: str = "generate", **extra) -> dict:
    """The provenance record of one generated file (JSON-ready). extra: more settings to keep (e.g. strength)."""
    config = getattr(model, "config", None)
    flow = getattr(config, "flow", None)
    return {
        "generator": "minisora", "version": version(), "label": AI_GENERATED, "mode": mode,
        "prompt": prompt, "seed": seed,
        "steps": steps if steps is not None else getattr(flow, "steps", None),
        "guidance": guidance if guidance is not None else getattr(flow, "guidance", None),
        "model_hash": model_hash(model), "model": getattr(config, "name", None),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        **{k: v for k, v in extra.items() if v is not None},
    }


def frames_hash(path: str | os.PathLike) -> str:
    """sha256 of a file's decoded frames (uint8 RGB), the content a plain-metadata record vouches for."""
    import imageio.v3 as iio

    digest = hashlib.sha256()
    for frame in iio.imiter(path):
        digest.update(np.ascontiguousarray(np.asarray(frame)[..., :3], dtype=np.uint8).tobytes())
    return "sha256:" + digest.hexdigest()


def c2pa_available() -> bool:
    try:
        import c2pa  # noqa: F401
    except ImportError:
        return False
    return True


# ------------------------------------------------------------------------------------------ keys and signing
def key_dir() -> Path:
    """Where the local signing key and certificates live: MINISORA_PROVENANCE_DIR or ~/.config/minisora/provenance."""
    if os.environ.get("MINISORA_PROVENANCE_DIR"):
        return Path(os.environ["MINISORA_PROVENANCE_DIR"])
    config = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return config / "minisora" / "provenance"


def local_credentials(folder: str | os.PathLike | None = None) -> tuple[Path, Path]:
    """(private key PEM, certificate chain PEM) of a local signer, made on first use (~10 ms).

    A local CA (ES256, keyCertSign) signs a leaf for signing content (digitalSignature, extended key usage
    emailProtection, key identifiers), as the C2PA trust model expects of a signing certificate.
    """
    folder = Path(folder) if folder is not None else key_dir()
    key_path, chain_path = folder / "signer.key.pem", folder / "signer.chain.pem"
    if key_path.exists() and chain_path.exists():
        return key_path, chain_path
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    user = os.environ.get("USER") or "user"

    def name(common: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common),
                          x509.NameAttribute(NameOID.ORGANIZATION_NAME, f"minisora local ({user})")])

    def usage(**bits) -> x509.KeyUsage:
        fields = ("digital_signature", "content_commitment", "key_encipherment", "data_encipherment",
                  "key_agreement", "key_cert_sign", "crl_sign", "encipher_only", "decipher_only")
        return x509.KeyUsage(**{f: bits.get(f, False) for f in fields})

    ca_key, leaf_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(name("minisora local CA")).issuer_name(name("minisora local CA"))
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=3650))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(usage(key_cert_sign=True, crl_sign=True), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    leaf = (x509.CertificateBuilder().subject_name(name("minisora generator")).issuer_name(ca.subject)
            .public_key(leaf_key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=730))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(usage(digital_signature=True), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(leaf_key.public_key()), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    folder.mkdir(parents=True, exist_ok=True)
    pem = serialization.Encoding.PEM
    key_bytes = leaf_key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # the key is readable by its owner only
    with os.fdopen(fd, "wb") as f:
        f.write(key_bytes)
    chain_path.write_bytes(leaf.public_bytes(pem) + ca.public_bytes(pem))
    (folder / "ca.cert.pem").write_bytes(ca.public_bytes(pem))
    return key_path, chain_path


def credentials(key: str | os.PathLike | None = None, cert: str | os.PathLike | None = None) -> tuple[Path, Path]:
    """The signing key and certificate chain: given, or MINISORA_PROVENANCE_KEY/_CERT, or the local ones."""
    key = key or os.environ.get("MINISORA_PROVENANCE_KEY")
    cert = cert or os.environ.get("MINISORA_PROVENANCE_CERT")
    if bool(key) != bool(cert):
        raise ValueError("give both a signing key and its certificate chain (MINISORA_PROVENANCE_KEY and "
                         "MINISORA_PROVENANCE_CERT), or neither to use a local key")
    if key:
        for p in (key, cert):
            if not Path(p).is_file():
                raise FileNotFoundError(f"no provenance key or certificate file at '{p}'")
        return Path(key), Path(cert)
    return local_credentials()


def _c2pa_context():
    import c2pa

    # No thumbnail: it would add hundreds of KB to a GIF of a few KB. Nothing is fetched from the network.
    return c2pa.Context(c2pa.Settings.from_dict({"builder": {"thumbnail": {"enabled": False}}}))


def _manifest(rec: dict) -> dict:
    return {
        "claim_generator_info": [{"name": "minisora", "version": rec.get("version", version())}],
        "title": f"minisora: {rec.get('prompt') or rec.get('mode')}",
        "assertions": [
            {"label": "c2pa.actions", "data": {"actions": [{
                "action": "c2pa.created", "digitalSourceType": TRAINED_ALGORITHMIC_MEDIA,
                "softwareAgent": {"name": "minisora", "version": rec.get("version", version())},
                "description": f"{AI_GENERATED} by minisora ({rec.get('mode')})"}]}},
            {"label": LABEL, "data": rec},
        ],
    }


def _sign(path: Path, rec: dict, key=None, cert=None) -> None:
    import c2pa

    key_path, chain_path = credentials(key, cert)
    info = c2pa.C2paSignerInfo(alg=b"es256", sign_cert=chain_path.read_bytes(),
                               private_key=key_path.read_bytes(), ta_url=None)
    mime = MIME[path.suffix.lower()]
    tmp = path.with_name(f".{path.stem}.signed{path.suffix}")
    with c2pa.Signer.from_info(info) as signer, c2pa.Builder(_manifest(rec), _c2pa_context()) as builder:
        with open(path, "rb") as src, open(tmp, "w+b") as dst:
            builder.sign(signer, mime, src, dst)
    os.replace(tmp, path)


def _write_metadata(path: Path, rec: dict) -> None:
    write_text(path, LABEL, json.dumps({**rec, "frames_sha256": frames_hash(path)}, sort_keys=True))


def _read_metadata(path: Path) -> dict | None:
    text = read_text(path, LABEL)
    return None if text is None else json.loads(text)


# ------------------------------------------------------------------------------------------------- the API
def stamp(path: str | os.PathLike, rec: dict, sign: bool | None = None, key=None, cert=None) -> Path:
    """Add a provenance record to a GIF/PNG/MP4 file in place; returns the path.

    sign: True = a signed C2PA manifest (needs c2pa-python), False = plain metadata, None = C2PA when installed.
    key, cert: PEM files of the signer (default: MINISORA_PROVENANCE_KEY/_CERT, else a local key).
    """
    path = Path(path)
    if path.suffix.lower() not in MIME:
        raise ValueError(f"provenance is written into .gif, .png and .mp4 files, not '{path.suffix}'")
    if sign is None:
        sign = c2pa_available()
    if sign:
        _sign(path, rec, key, cert)
    else:
        _write_metadata(path, rec)
    return path


def read(path: str | os.PathLike) -> dict | None:
    """The provenance of a file, or None when it has none:

    {"record": dict, "signed": bool, "valid": bool, "trusted": bool, "state": str, "problems": [str]}
    signed: a C2PA manifest; valid: its signature and content hashes verify (for plain metadata: the frames
    still match the recorded hash); trusted: the signer's CA is one the verifier trusts (never a local CA).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no file at '{path}'")
    if path.suffix.lower() not in MIME:
        raise ValueError(f"provenance is read from .gif, .png and .mp4 files, not '{path.suffix}'")
    if c2pa_available():
        found = _read_c2pa(path)
        if found is not None:
            return found
    rec = _read_metadata(path)
    if rec is None:
        return None
    expected = rec.pop("frames_sha256", None)
    try:
        valid = expected is not None and expected == frames_hash(path)
    except Exception:  # the edit broke the file's encoding: it certainly does not match
        valid = False
    return {"record": rec, "signed": False, "valid": valid, "trusted": False, "state": "Unsigned",
            "problems": [] if valid else ["the frames do not match the recorded hash: the file was edited"]}


def _read_c2pa(path: Path) -> dict | None:
    import c2pa

    try:
        with open(path, "rb") as f, c2pa.Reader(MIME[path.suffix.lower()], f) as reader:
            store = json.loads(reader.json())
    except c2pa.C2paError as err:
        if "ManifestNotFound" in type(err).__name__ or "no JUMBF" in str(err) or "not found" in str(err).lower():
            return None
        return {"record": {}, "signed": True, "valid": False, "trusted": False, "state": "Unreadable",
                "problems": [f"{type(err).__name__}: {err}"]}
    manifest = store.get("manifests", {}).get(store.get("active_manifest"), {})
    rec = next((a["data"] for a in manifest.get("assertions", []) if a.get("label") == LABEL), {})
    actions = next((a["data"]["actions"] for a in manifest.get("assertions", [])
                    if a.get("label", "").startswith("c2pa.actions")), [])
    if any(a.get("digitalSourceType") == TRAINED_ALGORITHMIC_MEDIA for a in actions):
        rec.setdefault("digital_source_type", "trainedAlgorithmicMedia")
    failures = [s for s in store.get("validation_status", []) or []]
    untrusted = [s for s in failures if s.get("code") == "signingCredential.untrusted"]
    problems = [f"{s.get('code')}: {s.get('explanation', '')}" for s in failures if s not in untrusted]
    state = store.get("validation_state", "Invalid" if problems else "Valid")
    return {"record": rec, "signed": True, "valid": not problems and state in ("Valid", "Trusted"),
            "trusted": state == "Trusted", "state": state, "problems": problems}


def describe(info: dict | None, path: str = "") -> str:
    """What `python -m minisora provenance FILE` prints."""
    if info is None:
        return f"{path}: no provenance record"
    rec, lines = info["record"], [f"{path}:"]
    for key in ("label", "generator", "version", "mode", "prompt", "seed", "steps", "guidance", "model",
                "model_hash", "created", "digital_source_type"):
        if key in rec:
            lines.append(f"  {key:<20} {rec[key]}")
    for key in sorted(set(rec) - {"label", "generator", "version", "mode", "prompt", "seed", "steps", "guidance",
                                  "model", "model_hash", "created", "digital_source_type"}):
        lines.append(f"  {key:<20} {rec[key]}")
    kind = "C2PA manifest, signed" if info["signed"] else "file metadata, unsigned"
    verdict = "verifies" if info["valid"] else "DOES NOT VERIFY"
    trust = " (signer not in a trust list: a local key)" if info["signed"] and info["valid"] and not info["trusted"] \
        else ""
    lines.append(f"  {'record':<20} {kind}; {verdict}{trust} [{info['state']}]")
    lines += [f"  problem: {p}" for p in info["problems"]]
    return "\n".join(lines)


def save(video, path: str | os.PathLike, rec: dict, fps: int = 8, scale: int | None = None, **stamp_options) -> Path:
    """Write a generated video (.gif/.mp4) or image (.png, one frame) with its provenance record."""
    path = Path(path)
    if path.suffix.lower() == ".png":
        import imageio.v3 as iio

        from .frames import display_scale, to_uint8, upscale

        if isinstance(video, np.ndarray) and video.ndim == 3:  # (H, W, 3): one image
            video = video[None]
        frames = to_uint8(video)
        frames = upscale(frames, display_scale(frames.shape[1]) if scale is None else scale)
        path.parent.mkdir(parents=True, exist_ok=True)
        iio.imwrite(path, frames[0])
    else:
        from .frames import save_video

        save_video(video, path, fps=fps, scale=scale)
    return stamp(path, rec, **stamp_options)
