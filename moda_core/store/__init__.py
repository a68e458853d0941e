"""The run store: one human-readable folder per training run.

::

    RUN/config.json              everything needed to rebuild the model and the data
    RUN/model.safetensors        weights after the last committed epoch (metadata: epoch)
    RUN/optimizer.safetensors    optimizer state for resuming (metadata: epoch)
    RUN/history.csv              one row per epoch: losses, accuracies, seconds
    RUN/metrics.json             final figures of the last committed epoch
    RUN/commit.json              the commit record: which epoch the files above belong to
    RUN/checkpoints/epoch-0005.safetensors   periodic weights, addressed as ``RUN@5``
    RUN/.lock                    held (flock) by the process training into the run

Every file is written to a temporary name in the same folder and renamed into place, so a crash never leaves a
half-written file; weights are safetensors and metadata is JSON, so loading a run never unpickles code. A folder
without ``model.safetensors`` (no epoch finished yet) does not load.

One module per job, each imported on its own (this package imports none of them, so ``names`` and ``summary`` stay
free of torch):

- ``names``: the files' names, run names (``check_run_name``), epoch numbers, ``RunRef`` (``RUN`` / ``RUN@EPOCH``);
- ``records``: config.json, history.csv and metrics.json, read and checked;
- ``commit``: one epoch = one commit (``commit_epoch``, ``resolve_files``, ``recover``, ``weights_epoch``);
- ``lock``: the training lock (``RunLock``, ``training_pid``);
- ``lifecycle``: ``create_run`` / ``open_for_resume`` (an ``OpenRun``), ``discard_run``;
- ``checks`` and ``loading``: ``load_run`` (a ``Run``), ``resume_state``, ``run_dataset``, ``list_checkpoints``;
- ``summary`` and ``listing``: ``list_runs`` / ``summarize_run`` (a ``RunSummary`` with a ``RunStatus``).

``moda_core.runs`` re-exports the public names.
"""
