"""smartthumb's image work: a pure function of (input images, ThumbnailSpec).

Kept import-light on purpose: the API and operator import `smartthumb.runner.spec` without
pulling in the image pipeline. Use `smartthumb.runner.pipeline.make_thumbnail` for the work.
"""
