"""llama.cpp's own converter (``convert_hf_to_gguf.py``) for Hugging Face sources of ``painters deploy gguf``.

Mapping Hugging Face tensors to GGUF (names, the rotary permutation of q/k, tokenizers) is what llama.cpp's
converter does and keeps up to date, so painters does not re-implement it: a checkpoint source is deployed as
``hf`` (block-level plans) or ``nemotron-nas`` (sublayer drops; the converter's ``deci`` path) into a temporary
directory, converted there, and the GGUF is re-written once more to carry painters' provenance keys. The converter
ships in llama-cpp-python's *source* package (``vendor/llama.cpp``); it is fetched once with pip into the cache.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from painters.cache import cache_dir
from painters.plans import Plan
from painters.targets.common import DeployError

__all__ = ["LLAMA_CPP_PYTHON", "llamacpp_tree", "convert_checkpoint", "converted_checkpoint"]

LLAMA_CPP_PYTHON = "0.3.36"  # the source package whose vendored llama.cpp converts (the extra pins the same)
_MEMBERS = ("convert_hf_to_gguf.py", "conversion/", "gguf-py/")


def llamacpp_tree() -> Path:
    """``vendor/llama.cpp`` of llama-cpp-python's source package (converter, ``conversion/``, ``gguf-py``)."""
    root = cache_dir("llama-cpp-python", LLAMA_CPP_PYTHON)
    tree = root / "llama.cpp"
    if (tree / "convert_hf_to_gguf.py").is_file():
        return tree
    sdist = root / f"llama_cpp_python-{LLAMA_CPP_PYTHON}.tar.gz"
    if not sdist.is_file():
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "-q", "-d", str(root),
               f"llama-cpp-python=={LLAMA_CPP_PYTHON}"]
        result = subprocess.run(cmd, capture_output=True, text=True)
        if result.returncode != 0 or not sdist.is_file():
            raise DeployError(f"could not fetch llama-cpp-python {LLAMA_CPP_PYTHON}'s source package with pip "
                              f"({result.stderr.strip()[-200:]}); it carries llama.cpp's converter")
    prefix = f"llama_cpp_python-{LLAMA_CPP_PYTHON}/vendor/llama.cpp/"
    tmp = Path(tempfile.mkdtemp(dir=root))
    with tarfile.open(sdist) as tar:
        members = [m for m in tar.getmembers() if m.name.startswith(prefix)
                   and m.name[len(prefix):].startswith(_MEMBERS) and (m.isfile() or m.isdir())]
        for m in members:
            m.name = m.name[len(prefix):]
        tar.extractall(tmp, members=members, filter="data")
    if tree.exists():  # another process extracted it meanwhile

        shutil.rmtree(tmp, ignore_errors=True)
    else:
        os.replace(tmp, tree)
    return tree


def convert_checkpoint(directory: Path, out: Path, outtype: str = "f32") -> Path:
    """Run llama.cpp's ``convert_hf_to_gguf.py`` on ``directory``; raises :class:`DeployError` with its reason."""
    tree = llamacpp_tree()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tree / "gguf-py"), os.environ.get("PYTHONPATH", "")]))
    cmd = [sys.executable, str(tree / "convert_hf_to_gguf.py"), str(directory), "--outfile", str(out),
           "--outtype", outtype]
    result = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if result.returncode != 0 or not out.is_file():
        last = [line for line in result.stderr.strip().splitlines() if line.strip()][-1:] or ["no output"]
        raise DeployError(f"llama.cpp's converter refused {directory}: {last[0][-300:]}")
    return out


def converted_checkpoint(source: str | Path, plan: Plan, workdir: Path, outtype: str = "f32") -> Path:
    """``plan`` on a Hugging Face SRC deployed as hf / nemotron-nas in ``workdir``, then converted to a GGUF there."""
    from painters.targets.hf import deploy_hf
    from painters.targets.nemotron_nas import deploy_nemotron_nas

    sublayer = any(not (st.attn and st.mlp) for st in plan.stages())
    checkpoint = (deploy_nemotron_nas if sublayer else deploy_hf)(source, plan, workdir / "checkpoint")
    return convert_checkpoint(checkpoint, workdir / "converted.gguf", outtype)
