"""One lock around the first import of transformers (and peft), which two threads must not race.

transformers 5 builds its top-level namespace lazily. When two threads first touch it at the same time, one can
see it half built and fail with `ImportError: cannot import name 'AutoConfig' from 'transformers'` (CPython's
import locks are per module; transformers' lazy module resolves names without a lock of its own). The workbench
did this on most fast starts: the model catalogue counts parameters on a worker thread while the first Generate
loads the model on the torch thread, and the Compare pane said "generation failed: ImportError …".

Every function that may be a thread's first user of transformers calls `ready()` before its own
`from transformers import …`; after the first call it returns at once.
"""

from __future__ import annotations

import threading

_lock = threading.Lock()
_ready: set[str] = set()

NAMES = ("AutoConfig", "AutoModelForCausalLM", "AutoTokenizer", "GenerationConfig", "LogitsProcessorList",
         "StoppingCriteria", "StoppingCriteriaList", "PreTrainedModel")
"""The top-level transformers names poetwb's threads use; importing them imports the modules behind them."""


def ready(peft: bool = False) -> None:
    """Import transformers' names (and peft, when asked) once per process, one thread at a time."""
    wanted = {"transformers", "peft"} if peft else {"transformers"}
    if wanted <= _ready:
        return
    with _lock:
        if "transformers" not in _ready:
            import transformers
            import transformers.models.auto.modeling_auto  # the catalogue reads its mapping

            for name in NAMES:
                getattr(transformers, name)
            _ready.add("transformers")
        if peft and "peft" not in _ready:
            import peft as _peft  # noqa: F401

            _ready.add("peft")
