"""Scaling-law fits (recovery, intervals), runs tables (CSV / JSON lines / run folders) and `vavam eval scaling`."""

from __future__ import annotations

import json

import numpy as np
import pytest

from vavam.eval.scaling import eval_scaling, fit_power_law, read_runs, runs_from_folders

E, A, ALPHA = 1.8, 3556.0, 0.25
X = np.geomspace(1e15, 1e19, 12)


def law(x):
    return E + A * np.asarray(x) ** -ALPHA


def test_noiseless_points_recover_parameters():
    fit = fit_power_law(X, law(X), bootstrap=0)
    assert fit.E == pytest.approx(E, rel=1e-7)
    assert fit.A == pytest.approx(A, rel=1e-6)
    assert fit.alpha == pytest.approx(ALPHA, rel=1e-7)
    assert fit.rss < 1e-20
    np.testing.assert_allclose(fit.predict(1e21), law(1e21), rtol=1e-8)


def test_zero_irreducible_loss_stays_at_bound():
    x = np.geomspace(1e6, 1e9, 8)
    fit = fit_power_law(x, 50.0 * x**-0.3, bootstrap=0)
    assert 0.0 <= fit.E < 1e-6
    assert fit.alpha == pytest.approx(0.3, rel=1e-5)


def test_noisy_points_intervals_cover_truth():
    rng = np.random.default_rng(0)
    loss = law(X) * np.exp(rng.normal(0.0, 0.005, X.shape))  # 0.5 % multiplicative noise
    fit = fit_power_law(X, loss, bootstrap=300, seed=0)
    boot, cov = fit.bootstrap_ci(), fit.covariance_ci()
    for key, truth, estimate in (("E", E, fit.E), ("A", A, fit.A), ("alpha", ALPHA, fit.alpha)):
        for ci in (boot[key], cov[key]):
            assert ci[0] <= truth <= ci[1], (key, ci)
            assert ci[0] <= estimate <= ci[1], (key, ci)
    assert fit.E == pytest.approx(E, abs=0.05) and fit.alpha == pytest.approx(ALPHA, abs=0.03)
    for method in ("bootstrap", "delta"):
        lo, hi = fit.predict_ci(1e20, method=method)
        assert lo <= law(1e20) <= hi, method
    lo, hi = fit.reducible_ci(X)
    assert np.all(lo <= fit.reducible(X)) and np.all(fit.reducible(X) <= hi)


def test_bootstrap_is_seeded():
    rng = np.random.default_rng(1)
    loss = law(X) * np.exp(rng.normal(0.0, 0.01, X.shape))
    a, b, c = (fit_power_law(X, loss, bootstrap=20, seed=s).samples for s in (3, 3, 4))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_delta_method_prediction_without_bootstrap():
    rng = np.random.default_rng(2)
    loss = law(X) * np.exp(rng.normal(0.0, 0.005, X.shape))
    fit = fit_power_law(X, loss, bootstrap=0)
    assert fit.bootstrap_ci() is None
    with pytest.raises(ValueError, match="no bootstrap samples"):
        fit.predict_ci(1e16, method="bootstrap")
    lo, hi = fit.predict_ci(np.array([1e16, 1e20]))
    assert np.all(lo < fit.predict([1e16, 1e20])) and np.all(hi > fit.predict([1e16, 1e20]))
    assert (hi - lo)[1] > (hi - lo)[0]  # extrapolation is less certain than interpolation


@pytest.mark.parametrize(
    "x, loss, match",
    [
        ([1, 2, 3], [3, 2, 1], "at least 4 runs"),
        ([1, 1, 2, 2], [3, 2, 1, 1], "3 distinct"),
        ([1, 2, 3, -4], [3, 2, 1, 1], "x must be positive"),
        ([1, 2, 3, 4], [3, 2, 0, 1], "loss must be positive"),
        ([1, 2, 3, 4], [3, 2, 1], "same length"),
    ],
)
def test_fit_bad_input(x, loss, match):
    with pytest.raises(ValueError, match=match):
        fit_power_law(x, loss, bootstrap=0)


# ------------------------------------------------------------------------------ tables


def _write(path, text):
    path.write_text(text)
    return path


def test_csv_without_flops_column_uses_6nd(tmp_path):
    path = _write(tmp_path / "runs.csv", "name,params,tokens,loss\na,1e6,2e8,2.5\nb,4e6,2e8,2.3\n")
    table = read_runs(path)
    np.testing.assert_array_equal(table.flops, [6 * 1e6 * 2e8, 6 * 4e6 * 2e8])
    assert table.names == ["a", "b"] and any("6·N·D" in n for n in table.notes)


def test_csv_partial_flops_filled_and_alias(tmp_path):
    path = _write(tmp_path / "runs.csv", "Name,Params,Tokens,Compute,Loss\na,1e6,2e8,5e15,2.5\nb,4e6,2e8,,2.3\n")
    table = read_runs(path)
    np.testing.assert_array_equal(table.flops, [5e15, 4.8e15])
    assert "b" in table.notes[0]


@pytest.mark.parametrize(
    "text, match",
    [
        ("name,params,tokens\na,1,2\n", "no 'loss' column"),
        ("name,params,tokens,loss\na,1e6,2e8,2.5\nb,,2e8,2.3\n", r"runs.csv line 3 \(run 'b'\): params is missing"),
        ("name,params,tokens,loss\na,1e6,2e8,-2.5\n", r"line 2 \(run 'a'\): loss must be positive"),
        ("name,params,tokens,loss\na,1e6,lots,2.5\n", r"line 2 \(run 'a'\): tokens must be a number"),
        ("name,params,flops,loss\na,1e6,,2.5\n", "flops is missing and cannot be computed"),
        ("name,loss\na,2.5,7\n", "more cells than header"),
        ("", "empty CSV"),
    ],
)
def test_csv_errors_name_file_and_row(tmp_path, text, match):
    path = _write(tmp_path / "runs.csv", text)
    with pytest.raises(ValueError, match=match):
        read_runs(path)


def test_jsonl_and_json(tmp_path):
    rows = [{"name": "a", "params": 1e6, "tokens": 1e8, "flops": 6e14, "loss": 2.5},
            {"name": "b", "params": 2e6, "tokens": 1e8, "flops": 1.2e15, "loss": 2.4}]
    jl = _write(tmp_path / "runs.jsonl", "\n".join(json.dumps(r) for r in rows) + "\n\n")
    js = _write(tmp_path / "runs.json", json.dumps({"runs": rows}))
    for path in (jl, js):
        table = read_runs(path)
        np.testing.assert_array_equal(table.loss, [2.5, 2.4])
        np.testing.assert_array_equal(table.flops, [6e14, 1.2e15])
        assert table.notes == ["flops: from the table"]


@pytest.mark.parametrize(
    "name, text, match",
    [
        ("runs.jsonl", '{"name": "a", "loss": 2.5}\n{"name": "b", loss: 2}\n', r"runs.jsonl line 2: not valid JSON"),
        ("runs.jsonl", '{"name": "a", "loss": true}\n', r"line 1 \(run 'a'\): loss must be a number"),
        ("runs.jsonl", '[1, 2]\n', "must be an object"),
        ("runs.json", '{"name": "a"}', "list of runs"),
        ("runs.json", "[]", "no runs"),
        ("runs.txt", "x", "unknown table format"),
    ],
)
def test_json_errors(tmp_path, name, text, match):
    with pytest.raises((ValueError, TypeError), match=match):
        read_runs(_write(tmp_path / name, text))


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.csv"):
        read_runs(tmp_path / "nope.csv")


def test_table_column_needed_by_law(tmp_path):
    table = read_runs(_write(tmp_path / "runs.csv", "name,flops,loss\na,1e15,2.5\n"))
    assert table.column("compute")[0] == 1e15
    with pytest.raises(ValueError, match="column 'params' is needed for the params law"):
        table.column("params")


# ------------------------------------------------------------------------------ run folders


def _fake_run(root, name, width, steps, batch, loss):
    from vavam.io import atomic_write_json

    run = root / name
    (run / "logs" / "version_0").mkdir(parents=True)
    config = {"width": width, "num_layers": 2, "head_dim": 32, "mlp_ratio": 4, "vocab_size": 1025,
              "num_frames": 2, "tokens_per_frame": 6, "init_std": 0.02, "base_width": 256}
    atomic_write_json(run / "summary.json", {"steps": steps, "metrics": {"val/loss": loss}, "config": config})
    (run / "logs" / "version_0" / "hparams.yaml").write_text(f"data:\n  batch_size: {batch}\n")
    return run


def test_runs_from_folders_hand_count(tmp_path):
    from vavam.config import VideoConfig
    from vavam.eval.flops import video_train_flops

    _fake_run(tmp_path, "w64", 64, steps=10, batch=4, loss=3.0)
    table = read_runs(tmp_path)
    d, layers = 64, 2
    n = 2 * 12 * d * d + 1025 * d
    assert table.params[0] == n
    assert table.tokens[0] == 10 * 4 * 12
    config = VideoConfig(width=64, num_layers=2, head_dim=32, vocab_size=1025, num_frames=2, tokens_per_frame=6)
    assert table.flops[0] == video_train_flops(config, 480) == 6 * n * 480 + 6 * layers * 12 * d * 480
    assert table.loss[0] == 3.0 and table.names == ["w64"]


def test_runs_from_folders_errors(tmp_path):
    run = _fake_run(tmp_path, "r", 64, steps=10, batch=4, loss=3.0)
    with pytest.raises(ValueError, match="no metric 'val/other/loss'"):
        runs_from_folders([run], metric="val/other/loss")
    (run / "logs" / "version_0" / "hparams.yaml").write_text("lr: 1\n")
    with pytest.raises(ValueError, match="no batch size"):
        runs_from_folders([run])
    with pytest.raises(ValueError, match="no training run"):
        read_runs(tmp_path / "r" / "logs")


@pytest.mark.slow
def test_runs_table_from_a_real_training_run(tmp_path):
    from vavam.data.tokens import TokenStoreWriter
    from vavam.train.video import train_video

    rng = np.random.default_rng(0)
    for name in ("train", "val"):
        w = TokenStoreWriter(tmp_path / name, (2, 3), codebook_size=16, tokenizer={"name": "rand"}, fps=2.0,
                             resume=False)
        for k in range(2):
            w.write_scene(f"s{k}", rng.integers(0, 16, size=(6, 2, 3), dtype=np.uint16),
                          np.arange(6, dtype=np.int64) * 500_000)
    summary = train_video(tmp_path / "runs" / "a", tmp_path / "train", preset="vavim_tiny", num_frames=2, steps=2,
                          batch_size=3, global_batch=6, val_tokens=[tmp_path / "val"], val_every=1, progress=False)
    table = read_runs(tmp_path / "runs")
    assert table.tokens[0] == 2 * 6 * 12  # steps x global batch (3 windows x 2 accumulation passes) x positions
    assert table.loss[0] == pytest.approx(summary["metrics"]["val/loss"])
    # a cool-down from its last checkpoint counts the pretraining's tokens too
    start = sorted((tmp_path / "runs" / "a" / "checkpoints").glob("*.ckpt"))[-1]
    train_video(tmp_path / "runs" / "b", tmp_path / "train", num_frames=2, steps=3, batch_size=3, init_from=start,
                val_tokens=[tmp_path / "val"], val_every=1, progress=False)
    table = read_runs(tmp_path / "runs")
    tokens = dict(zip(table.names, table.tokens, strict=True))
    assert tokens["b"] == 3 * 3 * 12 + 2 * 6 * 12
    assert any("pretraining's tokens" in note for note in table.notes)


# ------------------------------------------------------------------------------ CLI


def test_eval_scaling_writes_evaluation_and_plots(tmp_path):
    rng = np.random.default_rng(0)
    lines = ["name,params,tokens,loss"]
    for i, (n, d) in enumerate((n, d) for n in (1e6, 4e6, 1.6e7) for d in (1e8, 4e8, 1.6e9)):
        lines.append(f"r{i},{n:g},{d:g},{law(6 * n * d) * np.exp(rng.normal(0, 0.003)):.6f}")
    runs = _write(tmp_path / "runs.csv", "\n".join(lines) + "\n")
    out = tmp_path / "out"
    results = eval_scaling(runs, out, bootstrap=30, seed=0, target=1e20)
    data = json.loads((out / "evaluation.json").read_text())
    assert data["kind"] == "scaling"
    assert set(data["results"]["laws"]) == {"compute", "params", "tokens"}
    compute = data["results"]["laws"]["compute"]
    assert compute["E"] == pytest.approx(results["laws"]["compute"]["E"])
    assert compute["ci_bootstrap"]["alpha"][0] <= compute["alpha"] <= compute["ci_bootstrap"]["alpha"][1]
    for key in ("ci_bootstrap", "ci_delta"):
        assert compute["target"][key][0] <= compute["target"]["loss"] <= compute["target"][key][1]
    assert "target" not in data["results"]["laws"]["params"]  # the target is a compute value
    assert any("6·N·D" in n for n in data["results"]["notes"])
    for law_name in ("compute", "params", "tokens"):
        png = out / f"scaling_{law_name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"scaling_{law_name}.png" in data["sections"][0]["figures"]
    assert "| compute | alpha |" in (out / "report.md").read_text()


def test_eval_scaling_single_law_on_flops_only_table(tmp_path):
    rows = "\n".join(f"r{i},{x:g},{law(x):.8f}" for i, x in enumerate(np.geomspace(1e15, 1e18, 5)))
    runs = _write(tmp_path / "runs.csv", "name,flops,loss\n" + rows + "\n")
    results = eval_scaling(runs, tmp_path / "out", x="compute", bootstrap=0)
    assert list(results["laws"]) == ["compute"]
    assert results["laws"]["compute"]["alpha"] == pytest.approx(ALPHA, rel=1e-4)
    with pytest.raises(ValueError, match="column 'params' is needed"):
        eval_scaling(runs, tmp_path / "out2", x="params", bootstrap=0)


# ------------------------------------------------------------------------------ audit regressions

# loss flat in compute (1 % noise): α sits at its lower bound and log A is unconstrained (audit repro)
FLAT_RUNS = """flops,loss
1e15,1.702257176978348552
3.727593720314938e15,1.696097857301644529
1.389495494373136e16,1.687471777119068150
5.1794746792312232e16,1.696115927436256721
1.9306977288832454e17,1.700464477865638813
7.1968567300115277e17,1.695540294890554023
2.6826957952797164e18,1.722292016844078733
1e19,1.717301522681528692
"""


def _hparams_run(root, name, steps, data):
    """A run folder whose Lightning hparams hold ``data`` (as ``vavam train video`` records it)."""
    import yaml

    run = _fake_run(root, name, 64, steps=steps, batch=1, loss=3.0)
    (run / "logs" / "version_0" / "hparams.yaml").write_text(yaml.safe_dump({"data": data}))
    return run


def test_runs_from_folders_count_the_global_batch(tmp_path):
    seq = 2 * 6  # num_frames x tokens_per_frame of _fake_run's config
    recorded = _hparams_run(tmp_path, "recorded", 10, {"batch_size": 6, "world_size": 4, "accumulate": 2,
                                                       "global_batch": 48})
    derived = _hparams_run(tmp_path, "derived", 10, {"batch_size": 6, "world_size": 4, "accumulate": 2})
    table = runs_from_folders([recorded, derived])
    assert table.tokens.tolist() == [10 * 48 * seq, 10 * 48 * seq]  # not steps x per-device batch (10 x 6 x 12)
    note = next(n for n in table.notes if n.startswith("tokens:"))
    assert "global batch" in note and "recorded global_batch (recorded)" in note
    assert "batch_size x world_size x accumulate of the hparams (derived)" in note
    (recorded / "logs" / "version_0" / "hparams.yaml").write_text("data:\n  global_batch: 0\n")
    with pytest.raises(ValueError, match=r"hparams\.yaml: data\.global_batch must be a positive integer"):
        runs_from_folders([recorded])


def test_unidentified_alpha_gives_infinite_bounds_and_a_report(tmp_path):
    runs = _write(tmp_path / "flat.csv", FLAT_RUNS)
    results = eval_scaling(runs, tmp_path / "out", x="compute", bootstrap=0)  # OverflowError (math.exp) before
    entry = results["laws"]["compute"]
    assert entry["ci_covariance"]["A"][1] == float("inf") and entry["ci_covariance"]["A"][0] >= 0.0
    assert tuple(entry["ci_covariance"]["E"]) == (0.0, float("inf"))  # at α = 0 only E + A is determined
    assert entry["alpha_identified"] is False and entry["identification_issues"]
    data = json.loads((tmp_path / "out" / "evaluation.json").read_text())
    assert data["results"]["laws"]["compute"]["ci_covariance"]["A"][1] is None  # JSON has no inf
    assert "**α not identified**" in (tmp_path / "out" / "report.md").read_text()
    good = fit_power_law(X, law(X) * np.exp(np.random.default_rng(0).normal(0.0, 0.005, X.shape)), bootstrap=0)
    assert good.identification_issues() == [] and good.to_dict()["alpha_identified"]


def test_eval_scaling_all_skips_a_law_whose_column_does_not_vary(tmp_path):
    # runs of one model size trained for different steps (a folder of `vavam train video` runs): --x all used to
    # fail on the params law ("need at least 3 distinct x values", naming no law) instead of fitting tokens / compute
    for steps in (10, 20, 40, 80, 160):
        _fake_run(tmp_path / "runs", f"s{steps}", 64, steps=steps, batch=4, loss=float(law(steps * 1e15)))
    results = eval_scaling(tmp_path / "runs", tmp_path / "out", bootstrap=0)
    assert list(results["laws"]) == ["compute", "tokens"]
    assert results["skipped_laws"] and results["skipped_laws"][0].startswith("params law skipped")
    assert "params law skipped: params takes 1 distinct value" in (tmp_path / "out" / "report.md").read_text()
    with pytest.raises(ValueError, match=r"params law \(--x params, column 'params'\): need at least 3 distinct"):
        eval_scaling(tmp_path / "runs", tmp_path / "out2", x="params", bootstrap=0)
    assert not (tmp_path / "out2").exists()  # every law is fitted before anything is written
    for kwargs, message in (({"bootstrap": -1}, r"--bootstrap must be a non-negative integer \(0: covariance intervals only\), got -1"),
                            ({"target": 0.0}, "--target must be positive and finite, got 0.0"),
                            ({"x": "steps"}, "--x must be one of compute, params, tokens, all")):
        with pytest.raises(ValueError, match=message):
            eval_scaling(tmp_path / "runs", tmp_path / "out3", **kwargs)
        assert not (tmp_path / "out3").exists()
