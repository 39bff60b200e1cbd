"""The read limits in force: the defaults of `ReadLimits`, overridden by FACEPIPE_<FIELD> variables."""

from __future__ import annotations

import os

from facepipe.pipeline.errors import FacepipeError
from facepipe.schemas.scan import ReadLimits


def read_limits() -> ReadLimits:
    """Read anew each call (cheap), so a changed environment takes effect without a restart."""
    values = {name: os.environ[f"FACEPIPE_{name.upper()}"] for name in ReadLimits.model_fields
              if f"FACEPIPE_{name.upper()}" in os.environ}
    try:
        return ReadLimits.model_validate(values)
    except ValueError as exc:
        raise FacepipeError(f"invalid FACEPIPE_* read limit in the environment: {exc}") from None
