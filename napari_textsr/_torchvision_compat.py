"""Let ``import torchvision`` succeed when its C extension cannot load.

PyPI's torchvision wheels are linked against CUDA builds of torch. With a
CPU-only torch (the wheel this project installs on machines without a GPU) the
extension fails to load, and torchvision then crashes at import on two fake-op
registrations that, unlike the others, are not guarded by ``_has_ops()``.
open_clip imports torchvision, so we declare those two op schemas and retry.
This package uses no torchvision C++ op; only its Python layers are needed.
"""

from __future__ import annotations

import sys
import threading

import torch

_lock = threading.Lock()
_library: torch.library.Library | None = None  # must stay referenced, or the schemas are dropped


def ensure_torchvision_importable() -> None:
    global _library
    with _lock:
        try:
            import torchvision  # noqa: F401

            return
        except RuntimeError as error:
            if "torchvision::" not in str(error):
                raise
        for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
            del sys.modules[name]
        if _library is None:
            _library = torch.library.Library("torchvision", "FRAGMENT")
            for op in ("nms", "qnms"):
                _library.define(f"{op}(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        import torchvision  # noqa: F401,F811
