"""
The farm: how a job gets from a request to an image on disk, over the configured ComfyUI nodes.

One job's way through these modules::

    Scheduler.submit (scheduler.py)        check a node could run it, insert the batch's rows in the DB
            |
            v
    JobTable.queued (job_table.py)         the unfinished jobs in memory: queue, runs per node, batches
            |                              (every status change goes through job_state.transition)
            |   a node's pull loop wakes
            v
    router.choose (router.py)              pure: the queued job this free node should take (earliest finish),
            |                              or when to ask it again (a backlog elsewhere turning overdue)
            |
            v
    JobRunner.execute (job_runner.py)      upload inputs, post the prompt, follow its events to the end
            |
            v
    ComfyClient (comfy/client.py)          HTTP + WebSocket to one ComfyUI node; Registry (registry.py)
            |                              owns the clients, health checks and every node's NodeStats
            v
    JobRunner.deliver                      image into the ImageStore (store.py), row into the DB (db.py)
            |
            v
    EventBus (events.py)                   JobFinished, then BatchDone when the batch's last job ends

On the side:

- a failed run comes back to the scheduler, which judges it (settling.py): retry on another node, or fail;
- recovery.py, once at start: jobs a previous process left on a node are adopted, re-attached or requeued;
- backups.py + racing.py: an idle node copies a straggler; the first copy to deliver wins, the other stops;
- speculative.py + idle_lane.py + warmup.py: the idle-only lane (voting time): speculative jobs run only when no
  real job a node can run waits, are preempted for real work (the losing-copy way), and are adopted by a stage at
  Continue; idle nodes load the next stage's checkpoint;
- reconciler.py, every few seconds and whenever a node goes up or down: compares the DB's unfinished jobs
  with the job table and heals every difference (each heal is a bug found; a fault-free run heals nothing).
"""
