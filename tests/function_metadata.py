"""The Functions metadata the host reads, built once: `FunctionApp.get_functions()` refuses to run twice."""

from __future__ import annotations

import functools
import json
from typing import Any


@functools.cache
def function_bindings() -> dict[str, dict[str, Any]]:
    """Function name -> its function.json."""
    import function_app

    return {f.get_function_name(): json.loads(f.get_function_json()) for f in function_app.app.get_functions()}
