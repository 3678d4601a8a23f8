"""Public REST routes (the reference's contract); each module's ``router`` is included by main."""
