"""The built-in model files, installed as the package ``pyro_moe.models``.

Load one by name, ``pyro_moe.load_model("mixture_of_models")``; copy one anywhere, edit it
and load it by path. This file only makes the folder a package (see ``setup.py``).
"""
