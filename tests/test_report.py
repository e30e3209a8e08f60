"""The report: statistics against independent computations, run discovery, incomplete runs, the CLI end to end."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from scipy.stats import mannwhitneyu, trim_mean

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
