"""Where the shipped data (embedded model, demo clip, presets) lives.

A source checkout or an editable install reads `assets/` and `configs/` beside the package;
a wheel carries them inside the package as `hetcache_cli/_data/{assets,configs}`.
"""

from pathlib import Path

_PACKAGE_DIR = Path(__file__).resolve().parent


def _data_dir(name: str) -> Path:
    for candidate in (_PACKAGE_DIR / "_data" / name, _PACKAGE_DIR.parent / name):
        if candidate.is_dir():
            return candidate
    return _PACKAGE_DIR.parent / name


def assets_dir() -> Path:
    return _data_dir("assets")


def configs_dir() -> Path:
    return _data_dir("configs")


EMBEDDED_MODEL = "embedded"  # what `--model` names the embedded model (or leave it out)


def embedded_model_dir() -> Path:
    return assets_dir() / "model"


def demo_dir() -> Path:
    return assets_dir() / "demo"
