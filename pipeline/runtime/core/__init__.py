"""The stage engine's pure core: what a stage knows about its records, and the rules.

Nothing here imports asyncio or aiokafka, reads a clock or does I/O; the driver
(:mod:`pipeline.runtime.engine`) feeds it events — records taken, outputs issued and
acknowledged, partitions assigned and revoked, commits made — and performs what it
answers. Its invariants are model-checked in ``tests/unit/test_core_model.py``.

  offsets.py     one partition: unfinished offsets and the offset safe to commit
  lanes.py       key lanes: one record of a key in progress, the rest queued in order
  receipts.py    what an output record carries back to finish its input
  ledger.py      a stage's partitions, lanes, holds and in-flight total
  checkpoint.py  the commit rule and the drain barrier, for both guarantees
  decisions.py   a failed record's next step: retry here, climb, dead-letter, stop
"""
