"""The one thing pyproject.toml cannot say: the package list, found AND extended.

``models/`` stays at the top of the repository (users copy and edit a model file) and is
installed as the package ``pyro_moe.models``, so a wheel ships the built-in model files and
:func:`pyro_moe.load_model` finds them by name (``pyro_moe/model_file.py``). Every package
under ``pyro_moe/`` (namespace packages included) is found as before; all other metadata is
in pyproject.toml, but for the data files of :mod:`pyro_moe.datasets`. ``make wheel-check`` (``tests/wheel_check.py``) checks the wheel.
"""

from setuptools import find_namespace_packages, setup

setup(
    packages=[*find_namespace_packages(include=["pyro_moe", "pyro_moe.*"]), "pyro_moe.models"],
    package_dir={"pyro_moe.models": "models"},
    # the small data sets of pyro_moe.datasets (their sources and licences in data/README.md)
    package_data={"pyro_moe": ["data/*.csv", "data/README.md"]},
)
