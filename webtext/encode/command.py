# Temporary: the stage's command still lives in pipeline.py until the split of this package lands.
from webtext.encode import pipeline as _impl
from webtext.encode.pipeline import *  # noqa: F401,F403
from webtext.encode.pipeline import EXAMPLE, add_arguments, main  # noqa: F401

__doc__ = _impl.__doc__
prepare = getattr(_impl, "prepare", None)
