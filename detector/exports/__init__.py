"""Flow exports read: NetFlow v5 and v9 (RFC 3954) and IPFIX (RFC 7011), as routers and
probes (softflowd, pmacct, nProbe) send them, decoded in bulk into flow records of the flow
table's schema."""
