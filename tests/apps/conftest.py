"""Tiny checkpoints and data roots for the page tests; the pages find them through environment variables."""

from __future__ import annotations

import os

import pytest

from apps import demo_models as dm
from tests.apps import tiny


@pytest.fixture(autouse=True, scope="package")
def _streamlit_work_done_once():
    """Work every page run repeats that has the same result each time, done once for the page tests (none of
    them is about it; the pages run as they do on a server, where this work is shared too):

    - every ``AppTest`` scanned the installed packages' metadata for Streamlit v2 components on its first run
      (``BidiComponentManager.discover_and_register_components``, about 0.2 s of CPU: a third of a typical page
      test); the installed packages do not change during a test run;
    - every run compiled its page script afresh (``AppTest`` makes a new ``ScriptCache`` per run; a server keeps
      one): one cache here, keyed by the script's path, size and mtime, so an edited script is compiled again;
    - every run of a page keyed its ``st.cache_data`` / ``st.cache_resource`` functions by their source text
      (``inspect.getsource``): kept per code object (the same compiled script: the same source).
    """
    # Streamlit's internals (1.67): a version without them runs the page tests as they are, only slower
    try:
        from streamlit.components.v2 import manifest_scanner
        from streamlit.runtime.caching import cache_utils
        from streamlit.runtime.scriptrunner.script_cache import ScriptCache
        from streamlit.testing.v1 import app_test
    except ImportError:
        manifest_scanner = None
    make_key = getattr(cache_utils, "_make_function_key", None) if manifest_scanner else None
    if make_key is None or getattr(app_test, "ScriptCache", None) is not ScriptCache:
        yield
        return
    found = manifest_scanner.scan_component_manifests()
    compiled: dict = {}

    class SharedScriptCache(ScriptCache):
        def get_bytecode(self, script_path: str):
            path = os.path.abspath(script_path)
            stat = os.stat(path)
            key = (path, stat.st_size, stat.st_mtime_ns)
            if key not in compiled:
                compiled[key] = super().get_bytecode(path)
            return compiled[key]

    keys: dict = {}

    def function_key(cache_type, func):
        code = getattr(func, "__code__", None)
        if code is None:
            return make_key(cache_type, func)
        memo = (cache_type, func.__module__, func.__qualname__, code.co_filename, code)
        if memo not in keys:
            keys[memo] = make_key(cache_type, func)
        return keys[memo]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(manifest_scanner, "scan_component_manifests", lambda max_workers=None: list(found))
        patch.setattr(app_test, "ScriptCache", SharedScriptCache)
        patch.setattr(cache_utils, "_make_function_key", function_key)
        yield


@pytest.fixture(scope="session")
def demo_env(tmp_path_factory):
    """Build once per session; point SUITE_DEMO_CHECKPOINTS and the SUITE_*_DATA roots at it."""
    paths = tiny.build_all(tmp_path_factory.mktemp("demo"))
    values = {
        dm.ENV_CHECKPOINTS: str(paths["checkpoints"]),
        # the page tests run the tiny checkpoints; tests/apps/test_shipped_weights.py covers the shipped ones
        dm.ENV_WEIGHTS: str(paths["checkpoints"] / "no_shipped_weights"),
        dm.ENV_MEDICAL_DATA: str(paths["medical"]),
        dm.ENV_ANOMALY_DATA: str(paths["anomaly"]),
        dm.ENV_ACCIDENT_DATA: str(paths["accident"]),
    }
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    yield paths
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
