"""Distributed analysis of capture archives on Dask (``detector analyze --cluster``).

Partitions are the archive's files (a rotating capture's files are its time partitions; each
capture point writes its own files). The run is exact, that is, it gives the flows and
alerts of one pass over the archive in order:

1. *Census* (parallel): each file is decoded and the flow hashes of its packets collected.
   A flow hash seen in more than one file belongs to a flow that may cross a file boundary.
2. *Partitions* (parallel): each file's packets of flows seen in no other file are accounted,
   inspected (L7) and turned into flow records and events from an empty state, which is
   exactly the state one pass would have had for them. The packets of the shared flows are
   copied out, in order. Records, events and shared packets are written to the work folder
   as each partition finishes (a restarted run reuses finished partitions).
3. *Reduce* (the client, streaming, in file order): the shared packets run through one flow
   table and L7 tap, which stitches every flow that crosses files into one record with the
   TCP state of one pass; the detectors see every record and event.

Flows still open at a partition's end end as one pass would end them: idle if the archive
goes on past their timeout, else at end of input. See :mod:`detector.dist.partition` and
:mod:`detector.dist.job`.
"""
