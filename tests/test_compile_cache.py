"""JAX's persistent compilation cache: on under vtabkit's cache folder, counted, listed."""

import json
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np

from vtabkit import cache_cli, compile_cache, paths

# A fresh process that enables the cache, compiles one probe solve and reports its counts.
CHILD = textwrap.dedent("""
    import json
    import jax.numpy as jnp
    import numpy as np
    from vtabkit import compile_cache
    from vtabkit.protocols.linear import fit_path
    compile_cache.enable()
    counter = compile_cache.CompileCounter()
    x = jnp.asarray(np.random.default_rng(0).normal(size=(40, 7)), jnp.float32)
    y = jnp.asarray(np.arange(40) % 3)
    fit_path(x, y, jnp.ones(40), jnp.asarray([1.0, 0.1]), num_classes=3, max_iter=5, tol=1e-4, gap_tol=1e-3,
             standardize=True)[0].block_until_ready()
    print(json.dumps(counter.take()))
""")


def _child(env):
    done = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_second_process_loads_the_solver_from_the_persistent_cache(tmp_path):
    env = dict(os.environ, VTABKIT_CACHE=str(tmp_path / "cache"))
    env.pop("JAX_COMPILATION_CACHE_DIR", None)
    first = _child(env)
    assert first["compilations"] >= 1 and first["compile_cache_hits"] == 0
    written = list((tmp_path / "cache" / "jax").glob("*-cache"))
    assert written, "the solver's compile should have been written under VTABKIT_CACHE/jax"
    second = _child(env)
    assert second["compile_cache_hits"] >= 1
    assert second["compilations"] < first["compilations"]  # the solver (the costly one) came from disk


def test_enable_uses_vtabkit_cache_and_keeps_a_users_folder(tmp_path, monkeypatch):
    before = jax.config.jax_compilation_cache_dir
    try:
        assert compile_cache.enable() == paths.cache_dir() / "jax"
        assert jax.config.jax_compilation_cache_dir == str(paths.cache_dir() / "jax")
        # vtabkit's own setting follows VTABKIT_CACHE ...
        monkeypatch.setenv("VTABKIT_CACHE", str(tmp_path / "elsewhere"))
        assert compile_cache.enable() == tmp_path / "elsewhere" / "jax"
        # ... but a folder the user chose is left alone.
        jax.config.update("jax_compilation_cache_dir", str(tmp_path / "mine"))
        assert compile_cache.enable() == tmp_path / "mine"
        assert jax.config.jax_compilation_cache_dir == str(tmp_path / "mine")
    finally:
        jax.config.update("jax_compilation_cache_dir", before)


def test_counter_counts_new_compiles_only():
    small, larger = jnp.asarray(np.ones(11, np.float32)), jnp.asarray(np.ones(13, np.float32))
    f = jax.jit(lambda v: jnp.sin(v) * 3.0 + 1.25)
    counter = compile_cache.CompileCounter()
    f(small).block_until_ready()
    f(small).block_until_ready()  # same shape: no new compile
    assert counter.take()["compilations"] == 1
    f(larger).block_until_ready()
    assert counter.take()["compilations"] == 1


def test_cache_ls_shows_the_compilation_cache(tmp_path, capsys):
    folder = tmp_path / "jaxcache"
    folder.mkdir()
    (folder / "abc-cache").write_bytes(b"x" * 2_000_000)
    (folder / "abc-atime").write_bytes(b"t")
    assert compile_cache.summary(folder) == f"JAX compilation cache: 1 entries, 2.0 MB in {folder}"
    args = type("Args", (), {"cache_dir": tmp_path / "features", "action": "ls"})()
    cache_cli.main(args)
    assert "JAX compilation cache:" in capsys.readouterr().out
