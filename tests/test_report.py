"""The report: statistics against independent computations, run discovery, incomplete runs, the CLI end to end."""

from __future__ import annotations

import csv
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from scipy.stats import mannwhitneyu, spearmanr, trim_mean

from rlplastic.logger import Logger, read_scalars_csv
from rlplastic.report import (
    EVAL_TAG,
    ReportError,
    aggregate_iqm,
    aggregate_mean,
    align_curves,
    area_under_curve,
    build_report,
    discover_runs,
    iqm,
    load_run,
    main,
    probability_of_improvement,
    probability_of_improvement_ci,
    stratified_bootstrap_ci,
)
from rlplastic.report.correlation import FIT_LOSS_TAG, correlate_task, weighted_spearman
from rlplastic.report.markdown import format_number
from rlplastic.report.plots import (
    MAX_MARKERS,
    SPARSE_POINTS,
    PlotContext,
    marker_style,
    plasticity_figure,
    returns_figure,
    rr_figure,
    scatter_figure,
)
from rlplastic.report.runs import variant_labels, variant_settings

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
FRAMES = np.arange(0, 10_001, 1000)


def write_run(
    root: Path,
    task: str,
    variant: str,
    seed: int,
    scalars: dict[str, list[tuple[int, float]]],
    complete: bool = True,
    config: bool = True,
) -> Path:
    """A run dir ``root/task/variant/seed<k>`` as the trainer leaves it: config, long CSV, completion marker."""
    run_dir = root / task / variant / f"seed{seed}"
    run_dir.mkdir(parents=True)
    if config:
        (run_dir / "config.yaml").write_text(yaml.safe_dump({"task_name": task, "seed": seed, "num_train_frames": 1}))
    if scalars:
        rows = sorted((frame, tag, value) for tag, pairs in scalars.items() for frame, value in pairs)
        with open(run_dir / "scalars.csv", "w", newline="") as f:
            csv.writer(f).writerows([("frame", "tag", "value"), *((fr, tag, repr(float(v))) for fr, tag, v in rows)])
    if complete:
        last = max(frame for pairs in scalars.values() for frame, _ in pairs)
        (run_dir / "run_complete.json").write_text(json.dumps({"status": "complete", "frame": last}))
    return run_dir


def linear_eval(top: float, frames: np.ndarray = FRAMES) -> dict[str, list[tuple[int, float]]]:
    """Eval return rising linearly from 0 to ``top`` over ``frames``: final ``top``, AUC ``top / 2``."""
    return {EVAL_TAG: [(int(f), top * f / frames[-1]) for f in frames]}


# -- statistics ----------------------------------------------------------------------------------------------------


def test_area_under_curve_hand_values():
    assert area_under_curve(FRAMES, 1000 * FRAMES / FRAMES[-1]) == pytest.approx(500.0, abs=1e-12)
    # 10 frames at mean 50, then 20 frames at 100: (500 + 2000) / 30
    assert area_under_curve([0, 10, 30], [0, 100, 100]) == pytest.approx(2500 / 30)
    assert area_under_curve([0, 10, 30], [7, 7, 7]) == pytest.approx(7.0)
    assert area_under_curve([5000], [321.0]) == 321.0
    with pytest.raises(ValueError, match="sorted"):
        area_under_curve([0, 20, 10], [1, 2, 3])


def test_iqm_hand_and_scipy():
    assert iqm(np.arange(1, 9)) == pytest.approx(np.mean([3, 4, 5, 6]))
    assert iqm([8, 1, 7, 2, 6, 3, 5, 4]) == pytest.approx(4.5)
    rng = np.random.default_rng(1)
    for n in range(1, 42):  # every remainder of n / 4: the cut is int(n / 4) at each end, as scipy's
        x = rng.normal(size=n) * rng.choice([1.0, 1000.0])
        assert iqm(x) == pytest.approx(trim_mean(x, 0.25), rel=1e-12)
    x = rng.normal(size=(7, 5))
    assert iqm(x) == pytest.approx(trim_mean(x.ravel(), 0.25))
    assert aggregate_iqm({"a": x[:, 0], "b": x[:, 1:].ravel()}) == pytest.approx(trim_mean(x.ravel(), 0.25))
    assert aggregate_mean({"a": np.array([0.0, 2.0]), "b": np.array([10.0])}) == pytest.approx(5.5)


def test_bootstrap_ci_covers_true_mean_shrinks_with_seeds_and_is_seeded():
    rng = np.random.default_rng(0)
    draws = {n: {"t1": rng.normal(500, 100, n), "t2": rng.normal(500, 100, n)} for n in (5, 50)}
    wide = stratified_bootstrap_ci(draws[5], aggregate_mean, reps=1000, seed=3)
    narrow = stratified_bootstrap_ci(draws[50], aggregate_mean, reps=1000, seed=3)
    assert narrow.low < 500 < narrow.high
    assert wide.low < 500 < wide.high
    assert wide.low <= wide.point <= wide.high
    assert narrow.point == pytest.approx(np.mean([draws[50]["t1"].mean(), draws[50]["t2"].mean()]))
    assert (narrow.high - narrow.low) < 0.6 * (wide.high - wide.low)  # ~ sqrt(5/50) ≈ 0.32 expected
    assert stratified_bootstrap_ci(draws[5], aggregate_iqm, reps=300, seed=7) == stratified_bootstrap_ci(
        draws[5], aggregate_iqm, reps=300, seed=7
    )
    assert stratified_bootstrap_ci(draws[5], aggregate_iqm, reps=300, seed=8) != stratified_bootstrap_ci(
        draws[5], aggregate_iqm, reps=300, seed=7
    )


def test_bootstrap_is_stratified_by_task():
    # constant scores within each task: resampling within tasks keeps every mean at 50, pooling would not
    ci = stratified_bootstrap_ci({"a": np.zeros(4), "b": np.full(4, 100.0)}, aggregate_iqm, reps=500, seed=0)
    assert ci == (50.0, 50.0, 50.0)


def test_probability_of_improvement():
    better = {"a": [10, 11, 12], "b": [500, 600]}
    worse = {"a": [1, 2], "b": [100, 200, 300]}
    assert probability_of_improvement(better, worse) == 1.0
    assert probability_of_improvement_ci(better, worse, reps=200) == (1.0, 1.0, 1.0)
    assert probability_of_improvement(worse, better) == 0.0
    assert probability_of_improvement(better, better) == 0.5
    # task "a" by hand: (2,1)=1 (2,2)=1/2 (2,4)=0 (4,1)=1 (4,2)=1 (4,4)=1/2 -> 4/6; task "b": 1; tasks averaged
    x, y = {"a": [2, 4], "b": [3.0]}, {"a": [1, 2, 4], "b": [1.0, 2.0]}
    assert probability_of_improvement(x, y) == pytest.approx((4 / 6 + 1) / 2)
    u = mannwhitneyu(x["a"], y["a"]).statistic  # U counts ties as 1/2
    assert probability_of_improvement({"a": x["a"]}, {"a": y["a"]}) == pytest.approx(u / 6)
    # only tasks both have count
    assert probability_of_improvement({**x, "c": [0.0]}, y) == pytest.approx((4 / 6 + 1) / 2)


def test_align_curves_uses_the_common_range_and_interpolates():
    a = (np.array([0, 10, 20, 30]), np.array([0.0, 10.0, 20.0, 30.0]))
    b = (np.array([5, 15, 25]), np.array([1.0, 1.0, 3.0]))
    grid, values = align_curves([a, b])
    np.testing.assert_array_equal(grid, [5, 10, 15, 20, 25])
    np.testing.assert_allclose(values, [[5, 10, 15, 20, 25], [1, 1, 1, 2, 3]])


# -- reading runs --------------------------------------------------------------------------------------------------


def test_known_curves_give_known_tables(tmp_path):
    tops = {("walker_walk", "default"): [600, 800, 1000], ("walker_walk", "aug=none"): [100, 200, 300],
            ("cheetah_run", "default"): [400, 500, 600], ("cheetah_run", "aug=none"): [0, 50, 100]}  # fmt: skip
    for (task, variant), values in tops.items():
        for seed, top in enumerate(values, start=1):
            write_run(tmp_path, task, variant, seed, linear_eval(top))
    bumpy = {EVAL_TAG: [(0, 0.0), (1000, 100.0), (3000, 100.0)]}
    write_run(tmp_path, "walker_walk", "aug=none", 4, bumpy)  # final 100, AUC (50·1000 + 100·2000) / 3000
    summary = build_report(discover_runs([tmp_path]), tmp_path / "out", reps=200)

    walker = summary["tasks"]["walker_walk"]
    assert walker["default"]["final_return"]["values"] == pytest.approx([600, 800, 1000])
    assert walker["default"]["auc"]["values"] == pytest.approx([300, 400, 500])
    assert walker["default"]["final_return"]["point"] == pytest.approx(800)
    assert walker["default"]["auc"]["point"] == pytest.approx(400)
    assert walker["aug=none"]["seeds"] == [1, 2, 3, 4]
    assert walker["aug=none"]["auc"]["values"] == pytest.approx([50, 100, 150, 250_000 / 3000])
    assert walker["aug=none"]["final_return"]["point"] == pytest.approx(np.mean([100, 200, 300, 100]))
    agg = summary["aggregates"]["default"]
    pooled = [600, 800, 1000, 400, 500, 600]
    assert agg["tasks"] == ["cheetah_run", "walker_walk"] and agg["n_runs"] == 6
    assert agg["final_return"]["iqm"]["point"] == pytest.approx(trim_mean(pooled, 0.25))
    assert agg["final_return"]["mean"]["point"] == pytest.approx((800 + 500) / 2)
    assert agg["auc"]["iqm"]["point"] == pytest.approx(trim_mean(np.array(pooled) / 2, 0.25))
    # two variants, no --compare: the second in sorted order ("default") against the first; default always wins
    comparison = summary["comparison"]
    assert (comparison["x"], comparison["y"], comparison["chosen"]) == ("default", "aug=none", "automatic")
    assert comparison["final_return"]["point"] == 1.0


def test_tb_only_run_reads_the_same_as_csv(tmp_path):
    both = tmp_path / "a" / "walker_walk" / "default" / "seed1"
    logger = Logger(both)
    rng = np.random.default_rng(0)
    for frame in range(0, 5001, 1000):
        logger.scalars({EVAL_TAG: rng.uniform(0, 1000), "rr/value": 0.5, "plasticity/critic/fau": rng.random()}, frame)
    logger.scalars({"events/rr_switch": 2.0, "rr/value": 2.0}, 3000)  # a second rr/value at 3000: the last counts
    logger.close()
    (both / "config.yaml").write_text(yaml.safe_dump({"task_name": "walker_walk", "seed": 1}))
    tb_only = tmp_path / "b" / "walker_walk" / "default" / "seed1"
    tb_only.mkdir(parents=True)
    shutil.copytree(both / "tb", tb_only / "tb")
    shutil.copy(both / "config.yaml", tb_only / "config.yaml")

    from_csv, from_tb = load_run(both), load_run(tb_only)
    reference = read_scalars_csv(both / "scalars.csv")
    assert set(from_csv.series) == set(from_tb.series) == set(reference)
    for tag, (frames, values) in from_csv.series.items():
        last = dict(reference[tag])  # frame -> last value logged there
        np.testing.assert_array_equal(frames, sorted(last))
        np.testing.assert_array_equal(values, [last[f] for f in sorted(last)])
        np.testing.assert_array_equal(from_tb.series[tag][0], frames)
        np.testing.assert_allclose(from_tb.series[tag][1], values, rtol=1e-6)  # TB stores float32
    assert from_csv.series["rr/value"][1][3] == 2.0
    assert (from_tb.task, from_tb.variant, from_tb.seed, from_tb.last_frame) == ("walker_walk", "default", 1, 5000)


def test_discovery_from_any_level_with_dir_name_fallbacks(tmp_path):
    sweep = tmp_path / "sweeps"
    write_run(sweep / "root_a", "walker_walk", "default", 1, linear_eval(10))
    write_run(sweep / "root_a", "walker_walk", "rr=adaptive", 1, linear_eval(10))
    no_config = write_run(sweep / "root_b", "cheetah_run", "default", 7, linear_eval(10), config=False)
    (sweep / "root_a" / ".hydra").mkdir()
    (sweep / "root_a" / ".hydra" / "config.yaml").write_text("seed: 99\n")  # hidden: not a run dir
    runs = discover_runs([sweep])
    assert [(r.task, r.variant, r.seed) for r in runs] == [
        ("cheetah_run", "default", 7), ("walker_walk", "default", 1), ("walker_walk", "rr=adaptive", 1),
    ]  # fmt: skip
    assert runs[0].path == no_config and runs[0].complete
    assert [r.path for r in discover_runs([sweep / "root_a" / "walker_walk" / "default"])] == [runs[1].path]
    assert [r.path for r in discover_runs([runs[2].path, sweep / "root_a"])] == [runs[1].path, runs[2].path]
    summary = build_report(runs[:1], tmp_path / "out", reps=20)  # one run: a point, no interval
    assert summary["tasks"]["cheetah_run"]["default"]["final_return"] == {"values": [10.0], "point": 10.0,
                                                                          "low": None, "high": None}  # fmt: skip
    assert "| cheetah_run | `default` | 1 | 10.0 (1 run: no CI) |" in (tmp_path / "out" / "report.md").read_text()


def test_colliding_runs_are_an_error(tmp_path):
    write_run(tmp_path / "root_a", "walker_walk", "default", 1, linear_eval(10))
    write_run(tmp_path / "root_b", "walker_walk", "default", 1, linear_eval(20))
    with pytest.raises(ReportError, match=r"'walker_walk', variant 'default', seed 1: .*root_a.* and .*root_b"):
        discover_runs([tmp_path])


def test_incomplete_and_logless_runs_are_listed_by_path(tmp_path):
    for seed in (1, 2):
        write_run(tmp_path, "walker_walk", "default", seed, linear_eval(1000))
    short = FRAMES[FRAMES <= 5000]
    partial = write_run(tmp_path, "walker_walk", "default", 3, linear_eval(500, short), complete=False)  # same line
    (partial / "checkpoint.json").write_text(json.dumps({"frame": 4000, "bytes": 1}))
    logless = write_run(tmp_path, "walker_walk", "default", 4, {}, complete=False)
    out = tmp_path / "out"
    assert main([str(tmp_path / "walker_walk"), "--out", str(out), "--reps", "100"]) == 0
    report = (out / "report.md").read_text()
    listed = report.split("## Incomplete or failed runs")[1]
    assert f"`{partial}`: in progress or crashed at frame 5000 (last checkpoint at frame 4000)" in listed
    assert f"`{logless}`: no logs: expected scalars.csv or tb/ event files (config.yaml only)" in listed
    assert "`--include-partial` adds them" in report
    summary = json.loads((out / "summary.json").read_text())
    cell = summary["tasks"]["walker_walk"]["default"]
    assert cell["seeds"] == [1, 2] and cell["final_return"]["point"] == pytest.approx(1000)
    assert sorted(cell["not_counted"]) == sorted([str(partial), str(logless)])

    runs = discover_runs([tmp_path / "walker_walk"])
    summary = build_report(runs, tmp_path / "out2", reps=50, include_partial=True)
    cell = summary["tasks"]["walker_walk"]["default"]
    assert cell["seeds"] == [1, 2, 3] and cell["final_return"]["values"] == pytest.approx([1000, 1000, 500])
    assert cell["auc"]["values"] == pytest.approx([500, 500, 250])  # the partial run's own span
    assert "counted in the tables (--include-partial)" in (tmp_path / "out2" / "report.md").read_text()


# -- the command line ----------------------------------------------------------------------------------------------


def test_end_to_end_writes_tables_and_plots(tmp_path):
    runs_root = tmp_path / "runs"
    rng = np.random.default_rng(0)
    for variant, rr in (("default", 0.5), ("rr=adaptive", None)):
        for seed in (1, 2, 3):
            scalars = linear_eval(rng.uniform(300, 900))
            scalars["rr/value"] = [(int(f), rr or (0.5 if f < 6000 else 2.0)) for f in FRAMES[1:]]
            scalars["plasticity/critic/fau"] = [(int(f), rng.uniform(0.4, 0.6)) for f in FRAMES[1:]]
            scalars["plasticity/critic/dormant"] = [(int(f), rng.uniform(0, 0.1)) for f in FRAMES[1::3]]
            scalars["plasticity/critic/Q1.1/fau"] = [(int(f), 0.5) for f in FRAMES[1:]]
            if rr is None:
                scalars["events/rr_switch"] = [(6000, 2.0)]
                scalars["events/heads_reset"] = [(4000, 1.0), (8000, 1.0)]
                scalars["events/heads_reset/params"] = [(4000, 123.0), (8000, 123.0)]
            write_run(runs_root, "walker_walk", variant, seed, scalars)
    out = tmp_path / "report"
    assert main([str(runs_root), "--out", str(out), "--reps", "200", "--compare", "rr=adaptive", "default"]) == 0

    for name in ("returns_walker_walk.png", "plasticity_walker_walk.png", "rr_walker_walk.png"):
        assert (out / name).read_bytes()[:8] == PNG_MAGIC
    report = (out / "report.md").read_text()
    assert "`default`" in report and "`rr=adaptive`" in report
    assert "![eval return on walker_walk](returns_walker_walk.png)" in report
    assert "![replay ratio on walker_walk](rr_walker_walk.png)" in report
    assert "X = `rr=adaptive`, Y = `default` (given by `--compare`)" in report
    assert "None: every run finished." in report
    summary = json.loads((out / "summary.json").read_text())
    assert summary["runs"][3]["events"] == {"heads_reset": [4000, 8000], "rr_switch": [6000]}  # no sub-tag
    with open(out / "summary.csv", newline="") as f:
        table = list(csv.reader(f))
    assert {len(row) for row in table} == {10}
    rows = [dict(zip(table[0], row, strict=True)) for row in table[1:]]
    assert len(rows) == 2 * 2 + 2 * 2 * 2 + 2  # per task x variant x metric, aggregates (iqm, mean), comparisons
    scopes = {(r["scope"], r["variant"], r["metric"], r["statistic"]) for r in rows}
    assert ("aggregate", "rr=adaptive", "final_return", "iqm") in scopes
    assert ("comparison", "rr=adaptive > default", "auc", "probability_of_improvement") in scopes
    task_row = next(r for r in rows if r["scope"] == "task" and r["variant"] == "default" and r["metric"] == "auc")
    assert float(task_row["point"]) == pytest.approx(summary["tasks"]["walker_walk"]["default"]["auc"]["point"])
    assert float(task_row["ci_low"]) <= float(task_row["point"]) <= float(task_row["ci_high"])


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("missing", "path does not exist: {tmp}/nope"),
        ("empty", "empty run dir: {tmp}/empty"),
        ("config_only", "no logs: expected scalars.csv or tb/ event files"),
        ("compare", "unknown variant(s) in --compare: 'rr=bogus'; known variants: aug=none, default"),
        ("reps", "--reps must be at least 1, got 0"),
        ("tags", "unknown tag(s) in --tags: plasticity/critic/nope"),
    ],
)
def test_bad_input_is_one_clear_error(tmp_path, capsys, case, expected):
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    write_run(tmp_path / "only_config", "walker_walk", "default", 1, {}, complete=False)
    write_run(tmp_path / "good", "walker_walk", "default", 1, linear_eval(10))
    write_run(tmp_path / "good", "walker_walk", "aug=none", 1, linear_eval(10))
    good, out = str(tmp_path / "good"), str(tmp_path / "out")
    argv = {
        "missing": [str(tmp_path / "nope"), "--out", out],
        "empty": [good, str(tmp_path / "empty"), "--out", out],
        "config_only": [str(tmp_path / "only_config"), "--out", out],
        "compare": [good, "--out", out, "--compare", "rr=bogus", "default"],
        "reps": [good, "--out", out, "--reps", "0"],
        "tags": [good, "--out", out, "--tags", "plasticity/critic/nope"],
    }[case]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("rlplastic.report: error: ")
    assert expected.format(tmp=tmp_path) in err
    assert not (tmp_path / "out" / "report.md").exists()


# -- sparse and dense data ------------------------------------------------------------------------------------------


def _context(tmp_path: Path, runs: list, tags: tuple[str, ...] = ()) -> PlotContext:
    variants = sorted({r.variant for r in runs})
    return PlotContext(out=tmp_path, reps=50, seed=0, include_partial=False, tags=tags,
                       colors={v: f"C{i}" for i, v in enumerate(variants)}, labels=variant_labels(runs))  # fmt: skip


def _groups(runs: list) -> dict:
    return {v: [r for r in runs if r.variant == v] for v in sorted({r.variant for r in runs})}


def _has_marker(line) -> bool:
    return line.get_marker() not in (None, "", "None", " ")


def test_a_single_probe_and_500_probes_are_both_drawn_with_markers(tmp_path):
    for seed in (1, 2):
        scalars = linear_eval(100.0)
        scalars["plasticity/critic/fau"] = [(5000, 0.4 + 0.1 * seed)]  # one probe per run, at the same frame
        dense = np.linspace(10, 10_000, 500).astype(int)
        scalars["plasticity/critic/dormant"] = [(int(f), f / 1e5) for f in dense]
        write_run(tmp_path / "runs", "walker_walk", "default", seed, scalars)
    unfinished = linear_eval(100.0)
    unfinished["plasticity/critic/fau"] = [(3000, 0.9)]
    write_run(tmp_path / "runs", "walker_walk", "default", 3, unfinished, complete=False)
    runs = discover_runs([tmp_path / "runs"])
    tags = ("plasticity/critic/fau", "plasticity/critic/dormant")
    fig = plasticity_figure("walker_walk", _groups(runs), list(tags), _context(tmp_path, runs, tags))
    single, dense_ax = fig.axes[0], fig.axes[1]

    at_probe = [ln for ln in single.lines if list(ln.get_xdata()) == [5000]]
    mean_point = [ln for ln in at_probe if ln.get_marker() == "o"]
    assert len(mean_point) == 1 and mean_point[0].get_markersize() >= 5  # the mean of the two seeds
    assert mean_point[0].get_ydata()[0] == pytest.approx(0.55)
    caps = sorted(float(ln.get_ydata()[0]) for ln in at_probe if ln.get_marker() == "_")
    assert caps == pytest.approx([0.5, 0.6])  # its error bar: with 2 seeds the bootstrap CI is [min, max]
    partial = [ln for ln in single.lines if list(ln.get_xdata()) == [3000]]
    assert len(partial) == 1 and _has_marker(partial[0]) and partial[0].get_linestyle() == "--"

    (line,) = [ln for ln in dense_ax.lines if len(ln.get_xdata()) == 500]
    assert _has_marker(line)
    every = line.get_markevery()
    assert every == math.ceil(500 / MAX_MARKERS) and len(range(0, 500, every)) <= MAX_MARKERS  # thinned


def test_marker_style_thins_dense_series_and_skips_dense_eval_curves():
    assert marker_style(1)["markevery"] == 1 and marker_style(1)["marker"] == "o"
    assert marker_style(SPARSE_POINTS)["markevery"] == 1
    assert marker_style(SPARSE_POINTS + 1) == {}  # a dense eval curve: a plain line
    assert marker_style(4000, always=True)["markevery"] == 100  # a dense probe curve: 40 markers


def test_events_are_marked_on_the_return_and_rr_axes(tmp_path):
    for variant in ("default", "rr=adaptive"):
        scalars = linear_eval(500.0)
        scalars["rr/value"] = [(int(f), 0.5) for f in FRAMES[1:]]
        scalars["events/task_switch"] = [(5000, 1.0)]
        if variant == "rr=adaptive":
            scalars["events/rr_switch"] = [(6000, 2.0)]
            scalars["events/redo"] = [(int(f), 1.0) for f in range(100, 10_000, 100)]  # 99 firings: dense
        write_run(tmp_path / "runs", "walker_walk", variant, 1, scalars)
    runs = discover_runs([tmp_path / "runs"])
    ctx = _context(tmp_path, runs)
    for figure in (returns_figure, rr_figure):
        ax = figure("walker_walk", _groups(runs), ctx).axes[0]
        drawn = {}
        for collection in ax.collections:
            if (gid := collection.get_gid() or "").startswith("events/"):
                drawn.setdefault(gid, []).extend(collection.get_segments())
        assert sorted(drawn) == ["events/redo", "events/rr_switch", "events/task_switch"]
        assert [s[0][0] for s in drawn["events/rr_switch"]] == [6000]
        assert [s[0][0] for s in drawn["events/task_switch"]] == [5000, 5000]  # one line per run
        assert all(s[0][1] == 0.0 and s[1][1] == 1.0 for s in drawn["events/rr_switch"])  # full height
        assert len(drawn["events/redo"]) == 99
        assert all(s[1][1] - s[0][1] < 0.1 for s in drawn["events/redo"])  # short ticks, not 99 full lines
        legend = [t.get_text() for t in ax.get_legend().get_texts()]
        assert {"events/rr_switch", "events/task_switch", "events/redo"} <= set(legend)


def test_groups_with_fewer_than_five_seeds_are_flagged(tmp_path, capsys):
    for seed in (1, 2):
        write_run(tmp_path / "runs", "walker_walk", "default", seed, linear_eval(100.0 * seed))
    for seed in range(1, 6):
        write_run(tmp_path / "runs", "walker_walk", "aug=none", seed, linear_eval(10.0 * seed))
    out = tmp_path / "out"
    assert main([str(tmp_path / "runs"), "--out", str(out), "--reps", "50"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["few_seeds"] == [{"task": "walker_walk", "variant": "default", "n": 2}]
    (warning,) = summary["warnings"]
    assert "1 group(s) have fewer than 5 seeds: walker_walk default (n=2)" in warning
    assert "[min, max]" in warning
    report = (out / "report.md").read_text()
    assert f"> **Warning:** {warning}" in report.split("## Protocol")[0]  # under the header
    assert f"rlplastic.report: warning: {warning}" in capsys.readouterr().err
    # with 2 seeds the percentile bootstrap interval of the mean is exactly [min, max]
    assert summary["tasks"]["walker_walk"]["default"]["final_return"]["low"] == pytest.approx(100.0)
    assert summary["tasks"]["walker_walk"]["default"]["final_return"]["high"] == pytest.approx(200.0)


def _write_config(run_dir: Path, **groups) -> None:
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    base = {"aug": {"name": "shift", "pad": 4}, "rr": {"name": "static", "ratio": 0.5}, "intervention": {},
            "lr": 1e-4, "device": "cuda", "run_dir": str(run_dir)}  # fmt: skip
    (run_dir / "config.yaml").write_text(yaml.safe_dump({**config, **base, **groups}))


def test_variant_labels_say_what_each_variant_is(tmp_path):
    settings = {
        "default": {},
        "aug=none": {"aug": {"name": "none"}},
        "rr=static_2": {"rr": {"name": "static", "ratio": 2}},
        "rr=adaptive": {"rr": {"name": "adaptive", "low": 0.5, "high": 2.0, "signal": "critic/episode_fau"}},
        "intervention=[redo,l2_init]": {"intervention": {"redo": {"tau": 0.1}, "l2_init": {"coef": 0.01}}},
    }
    for variant, groups in settings.items():
        for seed in (1, 2):  # device and run_dir differ per run and never count
            _write_config(write_run(tmp_path / "runs", "walker_walk", variant, seed, linear_eval(100.0)), **groups)
    runs = discover_runs([tmp_path / "runs"])
    assert variant_settings(runs) == {
        "aug=none": "intervention=none, rr=static 0.5",
        "default": "aug=shift, intervention=none, rr=static 0.5",
        "intervention=[redo,l2_init]": "aug=shift, rr=static 0.5",  # the name says what the interventions are
        "rr=adaptive": "aug=shift, intervention=none",
        "rr=static_2": "aug=shift, intervention=none, rr=static 2",  # the config file name is not the setting
    }
    out = tmp_path / "out"
    summary = build_report(runs, out, reps=20, compare=["rr=adaptive", "default"])
    assert summary["variants"]["default"]["label"] == "default (aug=shift, intervention=none, rr=static 0.5)"
    report = (out / "report.md").read_text()
    assert "| walker_walk | `default` (aug=shift, intervention=none, rr=static 0.5) | 2 |" in report
    assert "| `rr=adaptive` (aug=shift, intervention=none) | 1 | 2 |" in report  # the across-task table
    ax = returns_figure("walker_walk", _groups(runs), _context(tmp_path, runs)).axes[0]
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "default (aug=shift, intervention=none, rr=static 0.5) (n=2)" in legend


def test_labels_only_where_configs_say_more_than_the_name(tmp_path):
    for variant, groups in (("default", {}), ("aug=none", {"aug": {"name": "none"}})):
        _write_config(write_run(tmp_path, "walker_walk", variant, 1, linear_eval(1.0)), **groups)
    write_run(tmp_path, "cheetah_run", "default", 1, linear_eval(1.0))  # no other variant on its task to differ from
    assert variant_labels(discover_runs([tmp_path])) == {"aug=none": "aug=none", "default": "default (aug=shift)"}


def test_a_single_run_dir_is_reported_as_it_stands(tmp_path, capsys):
    run_dir = write_run(tmp_path / "runs", "walker_walk", "default", 3, linear_eval(400.0), complete=False)
    assert main([str(run_dir), "--reps", "50"]) == 0  # no --out: the report goes into the run dir
    out = run_dir / "report"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["runs"][0]["counted"] and summary["protocol"]["include_partial"]
    cell = summary["tasks"]["walker_walk"]["default"]
    assert cell["seeds"] == [3] and cell["final_return"]["point"] == pytest.approx(400.0)
    assert (out / "returns_walker_walk.png").read_bytes()[:8] == PNG_MAGIC
    assert "a single run dir, counted as it stands" in capsys.readouterr().out
    assert [r.path for r in discover_runs([tmp_path / "runs"])] == [run_dir]  # its report is not a run dir

    explicit = tmp_path / "my_experiment"  # a run placed with run_dir=...: named by its own dir
    explicit.mkdir()
    shutil.copy(run_dir / "scalars.csv", explicit / "scalars.csv")
    (explicit / "config.yaml").write_text(yaml.safe_dump({"task_name": "cheetah_run", "seed": 1}))
    run = load_run(explicit)
    assert (run.task, run.variant, run.seed) == ("cheetah_run", "my_experiment", 1)
    assert main([str(explicit), str(run_dir), "--reps", "20"]) == 2
    assert "--out is required with several paths" in capsys.readouterr().err


def test_numbers_have_three_significant_digits(tmp_path):
    assert [format_number(x) for x in (0.0123, 812.345, 55.55, 10.0, 1234.4, 0.0, -0.5, 1.234e-5)] == [
        "0.0123", "812", "55.5", "10.0", "1234", "0", "-0.500", "1.23e-05",
    ]  # fmt: skip
    write_run(tmp_path, "cartpole_balance_sparse", "default", 1, {EVAL_TAG: [(0, 0.0), (1000, 0.0123)]})
    build_report(discover_runs([tmp_path]), tmp_path / "out", reps=20)
    report = (tmp_path / "out" / "report.md").read_text()
    assert "| cartpole_balance_sparse | `default` | 1 | 0.0123 (1 run: no CI) | 0.00615 (1 run: no CI) |" in report


# -- which signal predicts plasticity loss -------------------------------------------------------------------------


def test_weighted_spearman_is_spearmanr_of_the_repeated_pairs():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 6, 50).astype(float)  # many ties
    y = x + rng.normal(0, 2, 50)
    y[:8] = y[0]
    weights = rng.integers(0, 4, (5, 50))
    expected = [spearmanr(np.repeat(x, w), np.repeat(y, w)).statistic for w in weights]
    np.testing.assert_allclose(weighted_spearman(x, y, weights), expected, rtol=1e-12)
    assert float(weighted_spearman(x, y)) == pytest.approx(spearmanr(x, y).statistic, rel=1e-12)
    assert np.isnan(weighted_spearman(np.ones(5), np.arange(5.0)))  # a constant variable has no rank correlation


def _probe_runs(root: Path, with_fit_loss: bool = True) -> None:
    """6 runs on one task: ``monotone`` is a monotone function of the fit loss, ``null`` independent of it,
    ``gain`` equals the return gain of the eval window that follows each probe."""
    rng = np.random.default_rng(1)
    evals = np.arange(0, 21_000, 1000)
    for i, variant in enumerate(("default", "aug=none")):
        for seed in (1, 2, 3):
            returns = np.cumsum(rng.uniform(0, 50, evals.size))
            probes = evals[:-1] + 500  # one probe inside every eval window
            loss = rng.uniform(0.1, 2.0, probes.size)
            scalars = {EVAL_TAG: list(zip(evals.tolist(), returns.tolist(), strict=True))}
            scalars["plasticity/critic/monotone"] = list(zip(probes.tolist(), np.log(loss + i).tolist(), strict=True))
            scalars["plasticity/critic/null"] = list(zip(probes.tolist(), rng.normal(size=probes.size).tolist(),
                                                          strict=True))  # fmt: skip
            scalars["plasticity/critic/gain"] = list(zip(probes.tolist(), (2 * np.diff(returns)).tolist(), strict=True))
            # a log-window signal (like FAU): logged 300 frames after each probe, at the end of its window
            scalars["plasticity/critic/window"] = list(zip((probes + 300).tolist(), (loss + i).tolist(), strict=True))
            if with_fit_loss:
                scalars[FIT_LOSS_TAG] = list(zip(probes.tolist(), (loss + i).tolist(), strict=True))
            write_run(root, "walker_walk", variant, seed, scalars)


def test_signals_are_ranked_by_their_rank_correlation_with_the_fit_loss(tmp_path):
    _probe_runs(tmp_path / "runs")
    runs = discover_runs([tmp_path / "runs"])
    rows = {r["signal"]: r for r in correlate_task(runs, reps=300, seed=0)}
    monotone, null, gain = (rows[f"plasticity/critic/{s}"] for s in ("monotone", "null", "gain"))
    assert monotone["fit_loss"] == {"rho": pytest.approx(1.0), "low": pytest.approx(1.0), "high": pytest.approx(1.0),
                                    "n_pairs": 6 * 20, "n_runs": 6}  # fmt: skip
    assert null["fit_loss"]["low"] < 0 < null["fit_loss"]["high"]  # a null relation: the CI covers 0
    assert abs(null["fit_loss"]["rho"]) < 0.3
    assert gain["return_gain"]["rho"] == pytest.approx(1.0) and gain["return_gain"]["n_pairs"] == 6 * 20
    assert null["return_gain"]["low"] < 0 < null["return_gain"]["high"]
    assert [r["signal"] for r in correlate_task(runs, reps=50)][0] == "plasticity/critic/monotone"
    assert "plasticity/critic/fit_loss" not in rows  # the target is not its own predictor
    window = rows["plasticity/critic/window"]["fit_loss"]  # paired with the window containing each probe
    assert window["rho"] == pytest.approx(1.0) and window["n_pairs"] == 6 * 20

    out = tmp_path / "out"
    summary = build_report(runs, out, reps=100)
    section = (out / "report.md").read_text().split("## Which signal predicts plasticity loss")[1]
    assert "| 1 | `plasticity/critic/monotone` | 1.00 [1.00, 1.00] |" in section
    image = "![plasticity/critic/monotone against plasticity loss on walker_walk](corr_walker_walk_critic_monotone.png)"
    assert image in section
    assert summary["correlation"]["skipped"] is None
    for _, name in summary["correlation"]["plots"]["walker_walk"]:
        assert (out / name).read_bytes()[:8] == PNG_MAGIC
    ctx = _context(tmp_path, runs)
    fig = scatter_figure("walker_walk", runs, rows["plasticity/critic/monotone"], ctx)
    points = [c for c in fig.axes[0].collections if len(c.get_offsets())]
    assert sorted(len(c.get_offsets()) for c in points) == [60, 60]  # one colour per variant, 3 runs x 20 probes
    assert "ρ = 1.00 [1.00, 1.00]" in fig.axes[0].get_title()


def test_the_correlation_section_is_skipped_without_a_fit_loss(tmp_path):
    _probe_runs(tmp_path / "runs", with_fit_loss=False)
    summary = build_report(discover_runs([tmp_path / "runs"]), tmp_path / "out", reps=20)
    assert summary["correlation"] == {"target": FIT_LOSS_TAG, "skipped": f"no run logged {FIT_LOSS_TAG}",
                                      "tasks": {}, "plots": {}}  # fmt: skip
    report = (tmp_path / "out" / "report.md").read_text()
    assert f"## Which signal predicts plasticity loss\n\nSkipped: no run logged {FIT_LOSS_TAG}." in report
    assert not list((tmp_path / "out").glob("corr_*.png"))
