"""Distributed analysis of capture archives on Dask (``detector analyze --cluster``).

Partitions are the archive's files (a rotating capture's files are its time partitions; each
capture point writes its own files). The run is exact: it gives the flows and alerts of one
pass over the archive in order.

1. *Census* (a task per file): each file is decoded and the flow hashes of its packets
   collected. A flow hash seen in more than one file belongs to a flow that may cross a file
   boundary ("shared").
2. *Partitions* (a task per file): the packets of flows seen in no other file are accounted,
   inspected (L7) and turned into flow records and events from an empty state, which is
   exactly the state one pass has for them. The packets of shared flows are copied out, split
   by flow hash into one spool per stitching shard.
3. *Stitching* (a task per shard): each shard's copied packets run, file by file, through one
   flow table and L7 tap, so every flow that crosses files is one record with the TCP state
   one pass gives it. Flows never meet across shards, as in the threaded flow engine.
4. *Detectors* (a task per group of detectors): each group reads every record and event in
   file order and runs its detectors; detectors are independent of one another, so the
   groups' alerts together are one pass's alerts. Extra detectors (the report's collector)
   run in the client, which also writes ``--flows-out``.

Results go to the work folder as each task finishes (a restarted run reuses finished
partitions). Flows still open at a partition's end end as one pass would end them: idle if the
archive goes on past their timeout, else at end of input. The detectors are checked not to
depend on how records and events are grouped (``tests/test_dist.py``), which is what lets
partitions hand them over in other groupings than one pass does.
"""
