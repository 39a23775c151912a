"""Fleet model updates: releases on every board, health-gated activation, rollouts, rollback, status.

    release.py   the host's view of a release (files by sha256, manifest, health reference)
    board/       fleet.sh, the board-side release store (POSIX sh, sent with each command)
    boardcmd.py  the host end of fleet.sh: the locked session and the read-only listing
    upload.py    resumable SFTP upload of missing blobs
    health.py    run the stored release on the board, gate its output against the host's
    ops.py       per-board operations (deploy, rollback, list) returning BoardResult
    fanout.py    many boards through any concurrent.futures.Executor, bounded, stoppable
    executor.py  local thread pool or a Dask cluster (dask://HOST:PORT)
    rollout.py   waves, failure budget, bake, resumable state, rollback of a rollout
    service.py   the commands as a library: config -> plan -> operations -> report
"""
