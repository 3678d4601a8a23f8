"""The session worker's logic (see :mod:`.core`) and response bodies (:mod:`.views`)."""
