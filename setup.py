"""Build hook: a wheel carries the shipped data (embedded model, demo clip, presets).

A source checkout or an editable install reads `assets/` and `configs/` beside the package;
a regular wheel (`pip install .`, `pip install git+URL`) gets copies under
`hetcache_cli/_data/`, where `hetcache_cli/resources.py` looks first.
"""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
DATA = ("assets", "configs")


class BuildPyWithData(build_py):
    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):
            return
        for name in DATA:
            target = Path(self.build_lib) / "hetcache_cli" / "_data" / name
            shutil.rmtree(target, ignore_errors=True)
            # outputs of the quick start (input_edited.mp4, its stats) are not shipped data
            shutil.copytree(ROOT / name, target, ignore=shutil.ignore_patterns("*_edited*", "__pycache__"))


setup(cmdclass={"build_py": BuildPyWithData})
