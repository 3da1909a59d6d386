# Temporary: the stage's command still lives in train.py until the split of this package lands.
from webtext.tokenizer import train as _impl
from webtext.tokenizer.train import *  # noqa: F401,F403
from webtext.tokenizer.train import EXAMPLE, add_arguments, main  # noqa: F401

__doc__ = _impl.__doc__
prepare = getattr(_impl, "prepare", None)
