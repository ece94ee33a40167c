"""What the golden-fixture scripts share to run one model out of a research repository: stub modules for the parts
they do not exercise (sequence parallelism, registries, fused-kernel libraries), and loading the model's own files
by path so the repository's package __init__ (and everything it imports) stays out."""

import importlib.util
import os
import sys
import types


def stub(name, **attributes):
    """A module `name` (a package, so submodules can hang under it) holding `attributes`."""
    module = types.ModuleType(name)
    module.__path__ = []
    for key, value in attributes.items():
        setattr(module, key, value)
    sys.modules[name] = module
    return module


def unused(*args, **kwargs):
    raise RuntimeError("sequence parallelism is not used here")


def load_modules(root, names):
    """Imports each dotted `name` from root/<name with / for .>.py, in order; returns the last module."""
    module = None
    for name in names:
        spec = importlib.util.spec_from_file_location(name, os.path.join(root, *name.split(".")) + ".py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return module
