"""smartthumb's image work: a pure function of (input images, ThumbnailSpec)."""

from smartthumb.runner.errors import BadInputError, RunnerError
from smartthumb.runner.pipeline import make_thumbnail
from smartthumb.runner.spec import Mode, OutputFormat, RunResult, ThumbnailSpec

__all__ = [
    "BadInputError",
    "Mode",
    "OutputFormat",
    "RunResult",
    "RunnerError",
    "ThumbnailSpec",
    "make_thumbnail",
]
