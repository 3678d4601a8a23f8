"""The session worker's logic, one part per module, each built with what it needs
(``wa_session_worker.main.build_worker``):

- :mod:`.sessions`: the sessions running here, starting and stopping them, the shard owner;
- :mod:`.recorder`: engine events → the store → events (every event is recorded there);
- :mod:`.instances`, :mod:`.messaging`, :mod:`.contacts`: the commands of an instance's shard;
- :mod:`.queries`, :mod:`.admin`: read queries, administration;
- :mod:`.access` (who may use an instance), :mod:`.guard` (the edge check), :mod:`.outbox`
  (the transactional outbox), :mod:`.views` (response bodies).

The bus side (routers, the per-instance lock, failure mapping) is :mod:`wa_session_worker.consumers`.
"""
