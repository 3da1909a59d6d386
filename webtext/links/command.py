# Temporary: the stage's command still lives in pipeline.py until the split of this package lands.
from webtext.links import pipeline as _impl
from webtext.links.pipeline import *  # noqa: F401,F403
from webtext.links.pipeline import EXAMPLE, add_arguments, main  # noqa: F401

__doc__ = _impl.__doc__
prepare = getattr(_impl, "prepare", None)
