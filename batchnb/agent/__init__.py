"""The detached service: a pool's engine in an agent process of its own, and its clients.

``bnb.Pool(name, ..., detached=True)`` starts the agent (:mod:`.service`):
the Dask scheduler, the nodes, the dispatcher, the extensions and the
ledger's writer run there, in a session of its own, so jobs go on when the
kernel that made them dies, restarts or is interrupted. The notebook holds
a client (:mod:`.client`): the same ``Pool``, ``Job`` and ``Task`` objects,
whose engine is a proxy that calls the agent (:mod:`.rpc`, over Dask's
comm, TLS) and whose views hear the agent's events. A client opens none
of the agent's files: its ledger reads, its tasks' output and results are
asked of the agent too (:mod:`.reads`), so it may run where those files are
not. ``bnb.pools()`` lists the agents of this machine (:mod:`.registry`).

Local, Slurm, gateway, address and Azure pools can be detached (the README's
"Detached pools" says where each one's agent runs).
"""
