"""Imported once by the extractor children's fork server (webtext.extract.sandbox): trafilatura imported,
quiet, its unkept metadata skipped and its lazy parts warmed up, for every child forked from it. A failure
here is not fatal: each child prepares itself again (`prepare_extractor`) and reports what fails there."""

import atexit
import os

try:
    from webtext.extract.sandbox import prepare_extractor

    prepare_extractor()
except Exception:  # noqa: BLE001 - a child that fails the same way says so, through the pool
    pass

# The fork server exits when its last user does. It holds nothing that needs its interpreter torn down
# (~0.2 s of CPU with trafilatura loaded), and its children leave by os._exit already.
atexit.register(os._exit, 0)
