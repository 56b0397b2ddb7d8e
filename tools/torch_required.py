"""The PyTorch scripts that ctest runs exit 77 (reported as skipped) when torch cannot be
imported -- unless VKRNN_REQUIRE_TORCH=1 (CI), where they fail."""

import os
import sys


def require_torch(script):
    try:
        import numpy  # noqa: F401
        import torch  # noqa: F401
    except ImportError as e:
        if os.environ.get("VKRNN_REQUIRE_TORCH") == "1":
            sys.exit(f"{script}: VKRNN_REQUIRE_TORCH=1 but torch cannot be imported ({e})")
        print(f"{script}: skipped, torch cannot be imported ({e})")
        sys.exit(77)
