"""`Search`: one [run.search] of a plan, an Optuna study whose trials run through the
sweep's executor as <experiment>_t<k>; the objective is read from the results store, and
a trial below the median of earlier ones is pruned. scheduler.py hands it the run and
calls `step` (start trials), `prune` (while one runs) and `told` (when one has ended).

optuna is imported when a plan has a search, not before.
"""
import time
from collections import deque

import fine_tune.sweep.plan as plans
from fine_tune.errors import UserError
from fine_tune.sweep.runs import Launch, Outcome, say


class Search:
    """One [run.search]: trials asked from an Optuna study stored in the sweep folder
    (optuna.log, a journal file: a killed sweep resumes the study, finished trials are not
    repeated), each run as <experiment>_t<k> through the sweep's executor; the objective
    is the task's first metric on its dev split at the best checkpoint (the results
    store), and a trial whose scores during training fall below the median of earlier
    trials at the same step is pruned (stopped)."""

    def __init__(self, sweep, run: plans.Run):  # (sweep: the Sweep it runs in)
        import optuna
        from optuna.storages import JournalStorage
        from optuna.storages.journal import JournalFileBackend
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.sweep, self.run = sweep, run
        self.space = plans.space(sweep.plan.path, run)
        self.trials = run.search["trials"]
        sweep.folder.mkdir(parents=True, exist_ok=True)
        storage = JournalStorage(JournalFileBackend(str(sweep.folder / "optuna.log")))
        pruner = (optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0)
                  if run.search.get("pruner", "median") == "median" else optuna.pruners.NopPruner())
        self.study = optuna.create_study(
            study_name=f"{run.experiment}", storage=storage, direction="maximize",
            pruner=pruner, load_if_exists=True)
        # Seeded by the study's progress: a restarted search does not draw the values of
        # its first trials again.
        self.study.sampler = optuna.samplers.TPESampler(seed=len(self.study.trials))
        self.running = {}  # trial run number -> (optuna Trial, reported steps)
        # Trials a killed sweep left running: continue them (same values, --resume).
        from optuna.trial import TrialState
        self.stale = deque(t for t in self.study.get_trials(deepcopy=False)
                           if t.state == TrialState.RUNNING)
        # Trials that failed in an earlier start (whose cause the user may have fixed since)
        # are asked again, with the same values, unless a later trial already has them; a
        # failure in this start counts as finished, so a search never loops on one.
        trials = self.study.get_trials(deepcopy=False)
        self.failed_now = 0
        for trial in trials:
            later = [t.params for t in trials if t.number > trial.number]
            if trial.state == TrialState.FAIL and trial.params not in later:
                self.study.enqueue_trial(trial.params, skip_if_exists=False)
                say(f"search {run.number}: trial {trial.number} failed in an earlier start; "
                    f"asking its values again ({', '.join(f'{k} = {v}' for k, v in trial.params.items())})")
        # Trials an earlier start finished: in this sweep's table and report too.
        status = {TrialState.COMPLETE: "done", TrialState.PRUNED: "pruned"}
        for trial in trials:
            if trial.state in status:
                earlier = plans.trial_run(run, trial.number, trial.params)
                note = (f"{trial.value:.4f} (an earlier start)" if trial.value is not None
                        else "(an earlier start)")
                sweep.outcomes[earlier.number] = Outcome(earlier, status[trial.state], note=note)
        from fine_tune.results import dev_split
        self.task = run.task()
        self.split, self.metric = dev_split(self.task), self.task.metrics[0]

    def finished(self) -> int:
        """Trials completed or pruned, in any start, and those failed in this one."""
        from optuna.trial import TrialState
        return self.failed_now + sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED)
                                     for t in self.study.get_trials(deepcopy=False))

    def step(self) -> bool:
        """Start trials while slots are free; True when every trial has ended."""
        import optuna
        while self.finished() + len(self.running) < self.trials or self.stale:
            slot = self.sweep.executor.slots_for(self.run)
            if slot is None:
                break
            frozen = None
            if self.stale:
                frozen = self.stale.popleft()
                trial = optuna.trial.Trial(self.study, frozen._trial_id)
                k = frozen.number
            else:
                trial = self.study.ask(self.space)
                k = trial.number
            trial_run = plans.trial_run(self.run, k, trial.params)
            self.sweep.total_trials = getattr(self.sweep, "total_trials", 0) + 1
            launch = self.sweep.launch(trial_run, slot)
            if isinstance(launch, str):  # nothing started
                self.sweep.executor.release(slot)
                if launch == "elsewhere":  # another sweep runs this trial: look again later
                    if frozen is not None:
                        self.stale.appendleft(frozen)
                    break
                # done already: its objective is in the store; failed or conflict: a failure
                self.running[trial_run.number] = (trial, set())
                self.told(Launch(trial_run, [], self.sweep.log_path(trial_run)),
                          0 if launch == "done" else 1)
                continue
            self.running[trial_run.number] = (trial, set())
        if self.finished() >= self.trials and not self.running:
            best = self.study.best_trial if any(t.value is not None for t in self.study.trials) else None
            if best is not None:
                say(f"search {self.run.number}: best of {self.trials} trials: "
                    f"{self.run.experiment}_t{best.number} {self.metric} {best.value:.4f} with "
                    + ", ".join(f"{k} = {v}" for k, v in best.params.items()))
            return True
        return False

    def scores(self, launch: Launch) -> dict:
        from fine_tune.results import preferred_rows, read_results
        try:
            table = read_results(launch.run.folder(), self.split)
        except UserError:
            return {}
        if table is None or self.metric not in table.columns:
            return {}
        table = preferred_rows(table).dropna(subset=[self.metric])
        return dict(zip(table["step"].astype(int), table[self.metric].astype(float)))

    def prune(self, launch: Launch) -> bool:
        """Report new dev scores of a running trial; True when Optuna prunes it."""
        trial, reported = self.running.get(launch.run.number, (None, None))
        if trial is None:
            return False
        for step, value in sorted(self.scores(launch).items()):
            if step not in reported:
                trial.report(value, step)
                reported.add(step)
        if reported and trial.should_prune():
            import optuna
            self.study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            del self.running[launch.run.number]
            self.sweep.finish(launch.run, "pruned", time.time() - launch.started,
                              note=f"below the median of earlier trials at step {max(reported)}",
                              log=launch.log)
            return True
        return False

    def told(self, launch: Launch, code: int) -> None:
        import optuna
        trial, _ = self.running.pop(launch.run.number, (None, None))
        if trial is None:
            return
        from fine_tune.results import best_checkpoint
        best = best_checkpoint(launch.run.folder(), self.task) if code == 0 else None
        value = None if best is None else best.scores.get(self.metric)
        if value is None or value != value:
            self.study.tell(trial, state=optuna.trial.TrialState.FAIL)
            self.failed_now += 1
        else:
            self.study.tell(trial, value)
            outcome = self.sweep.outcomes.get(launch.run.number)
            if outcome is not None:
                outcome.note = f"{self.metric} {value:.4f} (best at step {best.step})"
