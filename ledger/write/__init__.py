"""The write path, one mechanism a module; ``ledger.engine.Engine`` puts them together.

- ``ports``: what the write path needs from an event store (``Store``, ``KeyRecord``, ``Sent``).
- ``preparation``: a command parsed once: its model, its keys, its fingerprint (``Prepared``).
- ``aggregates``: the aggregates one engine keeps in memory (cache, hot ones, unrecorded ones).
- ``decision``: ``Tx`` (what one attempt works on), the handlers' registry (``handles``) and
  ``Decider``, which runs a batch's commands against a ``Tx`` (authorisation, replays).
- ``combining``: what writers of a hot aggregate in several processes hand each other when
  they commit for each other (posted commands, answers).
- ``attempts``: one batch written exactly once (optimistic attempt, locked retries, hot
  aggregates: guarded writes and turns, lost races, unknown commits).
- ``group_commit``: concurrent callers share transactions (queue, leader, hand-off, asyncio).
- ``calls``: what one call's commands become before they queue (parts; the atomic bound).
- ``arrivals``: a leader's wait for a write's answer, cut short when a caller queues.
- ``pipeline``: on a pipelined store, the next group is decided while the last one is written.
- ``gc_pause``: the cyclic collector paused while long batches run.
- ``command_log``: the one log line per command.

Each module imports only those above it in this list (and ``ledger``'s domain), never
``ledger.engine`` nor the handlers: handlers import ``decision``, and the engine is handed the
authorisation function by the composition root.
"""
