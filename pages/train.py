"""Train: the few settings that matter in view (the rest under Advanced), start a training child process,
follow it live (batch by batch), stop it, evaluate a stopped run, resume it, list and compare runs."""

import pandas as pd
import streamlit as st

import app_components as ui
from app_train_settings import settings_form, settings_summary
from cxr import charts, datasets, jobs, live_progress, run_text, runs, stopped_runs
from cxr.config import TrainingConfig

REFRESH_SECONDS = 2  # how often the live panel re-reads the run directory: fresh enough, cheap (a few small files)
COMPARE_METRICS = {"auc": "ROC AUC", "accuracy": "Accuracy", "loss": "Loss"}


def estimate_section(config: TrainingConfig, num_train_images: int) -> None:
    """The estimated time per epoch from the backend's estimate, else from earlier runs of the same model."""
    seconds, basis = None, ""
    with ui.guarded("Estimating the time per epoch"):
        seconds, basis = ui.estimate_epoch_seconds(config, num_train_images)
    if seconds is None:
        st.caption("Estimated time per epoch: unknown until a first run of this model and size has finished an "
                   "epoch (then it is measured).")
    else:
        st.metric("Estimated time per epoch", run_text.format_seconds(seconds), help=basis, border=True)


def start_section(summaries: list) -> None:
    st.subheader("Settings")
    entries = datasets.list_datasets()
    if not entries:
        st.info("No data set to train on yet: import one on the Data page first.")
        ui.link_to("data")
        return
    names = [entry.name for entry in entries]
    wanted = st.session_state.get(ui.KEY_DATASET)
    name = st.selectbox("Data set", names, index=names.index(wanted) if wanted in names else 0,
                        key="train_dataset", help="The imported data set to train on (import more on the Data "
                                                  "page). Its images' size is the model's input size.")
    entry = entries[names.index(name)]
    image_size = entry.image_size or TrainingConfig().image_size
    counts = entry.counts
    num_train = entry.split_size("train")
    st.caption(f"{image_size} px images; " + ", ".join(f"{split}: {sum(c.values()):,}" for split, c in counts.items()))
    values, summary_slot = settings_form(image_size)
    config = None
    with ui.guarded("Checking the settings"):
        config = TrainingConfig(**values)
    if config is None:
        return
    st.session_state[ui.KEY_TRAINING_CONFIG] = config
    summary_slot.caption("Advanced: " + settings_summary(config))
    estimate_section(config, num_train)
    going = [summary for summary in summaries
             if summary.dataset == name and summary.state in ui.ACTIVE_STATES]
    reason = (f"A run on {name} is going ({run_text.run_name(going[0])}): Start is available again when it "
              "ends. Stop it below to start another now." if going else None)
    if st.button("Start training", type="primary", icon=":material/play_arrow:", disabled=bool(going),
                 help=reason):
        run_id = None
        with ui.guarded("Starting the training"):
            run_id = jobs.start_training(name, config)
        if run_id is not None:
            st.session_state[ui.KEY_FOLLOWED_RUN] = str(run_id)
            st.toast(f"Training {run_id} started.", icon=":material/play_arrow:")
            st.rerun()  # the page again, Start disabled and the new run followed
    if reason:
        st.caption(reason)


def history_charts(history: pd.DataFrame, epochs: int | None) -> None:
    if history is None or "epoch" not in history or history["epoch"].dropna().empty:
        st.caption("The per-epoch charts appear when the first epoch ends.")
        return
    left, right = st.columns(2)
    with left:
        st.altair_chart(charts.history_chart(history, "loss", epochs=epochs), width="stretch")
        st.altair_chart(charts.history_chart(history, "auc", epochs=epochs), width="stretch")
    with right:
        st.altair_chart(charts.history_chart(history, "accuracy", epochs=epochs), width="stretch")
        if "learning_rate" in history and history["learning_rate"].notna().any():
            st.altair_chart(charts.learning_rate_chart(history, epochs=epochs), width="stretch")
    st.caption(f"{len(history)} epoch(s) finished.")


def batch_charts(run_id: str, status: dict) -> None:
    """Loss and accuracy batch by batch in the epoch that is running (from the run's batch log)."""
    epoch = int(status.get("epoch") or 0)
    batches = live_progress.read_batch_log(run_id, epoch=epoch) if epoch else None
    if batches is None or batches.empty:
        # A line in the charts' place, so the page does not jump when they appear.
        st.caption(f"The loss and accuracy of epoch {epoch or 1}, batch by batch, appear after its first batches.")
        return
    left, right = st.columns(2)
    per_epoch = status.get("batches")
    left.altair_chart(charts.batch_chart(batches, "loss", batches_per_epoch=per_epoch), width="stretch")
    if batches["accuracy"].notna().any():
        right.altair_chart(charts.batch_chart(batches, "accuracy", batches_per_epoch=per_epoch), width="stretch")


def ended_section(run_id: str, status: dict, finished: int) -> None:
    """A stopped or interrupted run: evaluate its best epoch and use it, or resume it."""
    if stopped_runs.evaluation_is_current(run_id, status):
        st.success(f"Evaluated with the weights of epoch {status.get('finalized_epoch')} (its best validation "
                   "AUC): open it on the Evaluate and Predict pages, or resume training to continue.",
                   icon=":material/check_circle:")
        columns = st.columns(2)
        with columns[0]:
            ui.link_to("evaluate", "Evaluate this run")
        with columns[1]:
            ui.link_to("predict", "Predict with it")
        st.session_state[ui.KEY_EVALUATION_RUN] = run_id
        return
    allowed, reason = stopped_runs.can_finalize(run_id, status)
    if not allowed:
        st.info(f"{reason[0].upper()}{reason[1:]}. Resume it to train, or start a new run.")
        return
    info = runs.read_checkpoint_info(run_id) or {}
    best = (f" (epoch {info['best_epoch']}, validation AUC {info['best_value']:.3f})"
            if info.get("best_epoch") and isinstance(info.get("best_value"), (int, float)) else "")
    st.info(f"Its best epoch so far{best} can be evaluated and used as it is — the same evaluation as a "
            f"finished run, on validation and test — or resume training to continue from epoch {finished}.",
            icon=":material/info:")
    if st.button("Evaluate and use this run", key=f"finalize_{run_id}", type="primary", icon=":material/fact_check:"):
        done = None
        with st.spinner("Evaluating the best epoch on validation and test…"), ui.guarded("Evaluating the run"):
            done = stopped_runs.finalize_stopped_run(run_id)
        if done is not None:
            st.toast("Evaluated: the run can be used on the Evaluate and Predict pages.", icon=":material/check:")
            st.rerun()


def run_panel(run_id: str, name: str) -> None:
    """Status, progress, charts and the Stop/Resume/Evaluate buttons of one run (the live fragment's body)."""
    status = runs.read_status(run_id)
    state = status.get("state")
    # The fragment redraws only itself; when the state changes (queued -> running -> finished) the rest
    # of the page (Start, the timer) is stale, so redraw the whole page once. The state is stored
    # before the rerun, so the redraw sees no change and cannot loop.
    state_key = f"_panel_state_{run_id}"
    previous_state = st.session_state.get(state_key)
    st.session_state[state_key] = state
    if previous_state is not None and previous_state != state:
        st.rerun()
    finished = stopped_runs.finished_epochs(run_id)
    st.markdown(f"**{name}** — {run_text.state_text(status, finished)}")
    if state == "queued":
        position = jobs.queue_position(run_id)
        st.info(f"Waiting in the queue{f': position {position}' if position else ''}. It starts by itself when "
                "the training before it ends.", icon=":material/hourglass_top:")
    if state == "failed":
        st.error(f"This run failed: {status.get('error') or status.get('message') or 'no reason recorded'}. "
                 "Its finished epochs are kept; fix the cause and resume it, or start a new run.")
    fraction, text = run_text.progress(status, finished)
    st.progress(fraction, text=text)
    if state in ("stopped", "interrupted"):
        ended_section(run_id, status, finished)
    if state in ("queued", "running") and st.button("Stop", key=f"stop_{run_id}", icon=":material/stop:",
                                                     help="Stops after the current batch; the finished epochs "
                                                          "are kept, and the run can be evaluated or resumed."):
        with ui.guarded("Stopping the run"):
            jobs.stop(run_id)
            st.toast("Stop requested: the run stops after the current batch.", icon=":material/stop:")
    if state in ui.RESUMABLE_STATES and st.button("Resume", key=f"resume_{run_id}", icon=":material/play_arrow:",
                                                   help="Continue training from the last finished epoch."):
        new_run = None
        with ui.guarded("Resuming the run"):
            new_run = jobs.resume(run_id)
        if new_run is not None:
            st.session_state[ui.KEY_FOLLOWED_RUN] = str(new_run)
            st.rerun()
    if state in ("running", "stopping"):
        batch_charts(run_id, status)
    history = runs.read_history(run_id)
    # The x axis spans the planned epochs so the curves grow into it, but no more than twice the finished
    # ones (at least 10): 3 points on a 100-epoch axis would be a smudge.
    epochs = status.get("epochs")
    axis_epochs = min(int(epochs), max(10, 2 * len(history))) if epochs else None
    history_charts(history, axis_epochs)


def follow_section(summaries: list, labels: dict) -> None:
    st.subheader("Live run")
    if not summaries:
        st.caption("No run yet: choose the settings above and press Start training.")
        return
    ids = [summary.run_id for summary in summaries]
    states = {summary.run_id: summary.state for summary in summaries}
    followed = st.session_state.get(ui.KEY_FOLLOWED_RUN)
    if followed not in ids:
        # After a refresh or from another browser: the run that is going on, else the newest.
        active = [run_id for run_id in ids if states[run_id] in ui.ACTIVE_STATES]
        followed = active[0] if active else ids[0]
    # No widget key: KEY_FOLLOWED_RUN stays a plain value that Start and Resume may set at any time.
    run_id = st.selectbox("Run to follow", ids, index=ids.index(followed),
                          format_func=lambda choice: labels.get(choice, choice),
                          help="Runs are named by model, data set and start time (UTC), with their best "
                               "validation AUC.")
    st.session_state[ui.KEY_FOLLOWED_RUN] = run_id
    names = {summary.run_id: run_text.run_name(summary) for summary in summaries}
    active = runs.read_status(run_id).get("state") in ui.ACTIVE_STATES

    @st.fragment(run_every=REFRESH_SECONDS if active else None)
    def live_panel() -> None:
        with ui.guarded("Following the run"):
            run_panel(run_id, names[run_id])

    live_panel()


def runs_table(summaries: list) -> pd.DataFrame:
    """One row per run in words: no "epoch 0" or empty figures while a run trains."""
    rows = []
    for summary in summaries:
        run_id = summary.run_id
        status = {"state": summary.state, "epochs": summary.epochs, "epoch": summary.epoch,
                  "message": summary.message}
        try:
            finished = stopped_runs.finished_epochs(run_id)
            training = runs.read_config(run_id).get("training", {})
            status = runs.read_status(run_id)
        except (ValueError, OSError):
            finished, training = 0, {}
        state = summary.state
        if state in ("running", "stopping"):
            progress = f"epoch {status.get('epoch') or 1} of {status.get('epochs')}"
        elif state == "queued":
            progress = "waiting"
        else:
            progress = f"{finished} of {status.get('epochs')} epochs"

        def figure(value) -> str:
            return f"{value:.3f}" if isinstance(value, (int, float)) and value == value else "—"

        rows.append({"run": run_text.run_name(summary),
                     "state": run_text.state_text(status, finished) if state not in ui.ACTIVE_STATES
                     else {"queued": "waiting in the queue", "stopping": "stopping"}.get(state, "training"),
                     "progress": progress, "best val AUC": figure(summary.best_val_auc),
                     "best val accuracy": figure(summary.best_val_accuracy),
                     "test AUC": figure(summary.test_auc), "test accuracy": figure(summary.test_accuracy),
                     "settings": ", ".join(f"{name} {training[name]:g}" if isinstance(training.get(name), float)
                                           else f"{name} {training.get(name)}"
                                           for name in ("optimizer", "learning_rate", "batch_size",
                                                        "class_weighting") if name in training),
                     "run id": run_id})
    return pd.DataFrame(rows)


def runs_section() -> None:
    st.subheader("Runs")
    summaries = ui.list_runs()
    if not summaries:
        st.caption("No run yet.")
        return
    active = any(summary.state in ui.ACTIVE_STATES for summary in summaries)

    # The table and the comparison follow the runs as they train: read again on every refresh.
    @st.fragment(run_every=REFRESH_SECONDS if active else None)
    def live_runs() -> None:
        with ui.guarded("Listing the runs"):
            current = ui.list_runs()
            labels = run_text.run_labels(current)
            st.dataframe(runs_table(current), hide_index=True)
            queue = [summary.run_id for summary in current if summary.state in ui.ACTIVE_STATES]
            if len(queue) > 1:
                st.caption("Queue: " + " → ".join(labels[run_id] for run_id in queue))
            compare_section(current, labels)

    live_runs()


def compare_section(summaries: list, labels: dict) -> None:
    st.markdown("**Compare runs**")
    ids = [summary.run_id for summary in summaries]
    default = [run_id for run_id in ids if run_id in st.session_state.get(ui.KEY_COMPARE_RUNS, [])] or ids[:2]
    # No widget key: a label changes while its run trains (AUC, state), and a keyed multiselect then fails to
    # restore its stored choice; the choice is kept as plain run ids instead.
    chosen = st.multiselect("Runs", ids, default=default, format_func=lambda run_id: labels.get(run_id, run_id),
                            help="Their curves share one chart: one colour per run, solid for validation, "
                                 "dashed for train.")
    st.session_state[ui.KEY_COMPARE_RUNS] = chosen
    metric = st.segmented_control("Metric", list(COMPARE_METRICS), default="auc",
                                  format_func=COMPARE_METRICS.get, key="compare_metric") or "auc"
    if chosen:
        histories = {labels[run_id]: runs.read_history(run_id) for run_id in chosen}
        frame = charts.compare_runs_frame(histories, metric)
        if frame.empty:
            st.caption("None of the chosen runs has finished an epoch yet.")
        else:
            st.altair_chart(charts.compare_runs_chart(histories, metric), width="stretch")


def main() -> None:
    st.title("Train")
    summaries = []
    with ui.guarded("Reading the runs"):
        summaries = ui.list_runs()
    labels = run_text.run_labels(summaries)
    start_section(summaries)
    follow_section(summaries, labels)
    runs_section()


ui.run_page(main, key="train")
