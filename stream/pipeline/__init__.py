"""The pipeline: Kafka source -> prepare -> dedupe -> batch -> sender -> Meta, commit after ack.

`Pipeline` (in `runner`) wires the stages. It loads on first use, so a worker process that imports only
`stream.pipeline.prepare` does not load the Kafka and HTTP clients.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from stream.pipeline.runner import Pipeline

__all__ = ["Pipeline"]


def __getattr__(name: str) -> Any:
    if name == "Pipeline":
        return importlib.import_module("stream.pipeline.runner").Pipeline
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
