"""The detached service: a pool's engine in an agent process of its own, and its clients.

``bnb.Pool(name, ..., detached=True)`` starts the agent (:mod:`.service`):
the Dask scheduler, the nodes, the dispatcher, the extensions and the
ledger's writer run there, in a session of its own, so jobs go on when the
kernel that made them dies, restarts or is interrupted. The notebook holds
a client (:mod:`.client`): the same ``Pool``, ``Job`` and ``Task`` objects,
whose engine is a proxy that calls the agent (:mod:`.rpc`, over Dask's
comm on 127.0.0.1) and whose views hear the agent's events. Reads go to
the ledger file directly (SQLite WAL allows readers beside the writer);
every write goes through the agent. ``bnb.pools()`` lists the agents of
this machine (:mod:`.registry`).

Local, Slurm, gateway, address and Azure pools can be detached (the README's
"Detached pools" says where each one's agent runs).
"""
