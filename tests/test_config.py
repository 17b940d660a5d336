"""Sweep/trial config: validation errors name the key, domains expand to the right trial table."""

from pathlib import Path

import pytest
import yaml

from lamo_ray.config import (ConfigError, deep_merge, expand_trials, load_sweep, parse_override, resolve_trial,
                             validate_trial)

REPO = Path(__file__).resolve().parents[1]


def write(tmp_path: Path, data, name="s.yaml") -> Path:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return path


BASE = {"name": "t", "base": {"data": {"source": "lamo/reacher/mixed-v0"}}}


def test_defaults_follow_reference():
    cfg = validate_trial({"data": {"source": "x"}})
    assert (cfg.model.lora.rank, cfg.model.lora.alpha, cfg.model.lora.dropout) == (16, 32.0, 0.1)
    assert cfg.train.grad_clip == 0.25 and cfg.train.adam_eps == 1e-6 and cfg.train.lr == 1e-4
    assert cfg.train.warmup_steps == 2500 and cfg.train.batch_size == 64 and cfg.data.context_length == 20
    assert cfg.model.dropout == 0.1 and cfg.language.co_lambda == 0.0
    # LaMo's D4RL code: separate Q/K/V adapters with their bias, no position table, raw eval actions,
    # uniform down-sampling, DT's left-padded segments with the current reward in the return-to-go
    assert not cfg.model.lora.fused_qkv and cfg.model.lora.bias == "lora_only" and not cfg.model.position_embedding
    assert not cfg.eval.clip_actions
    assert (cfg.data.subsample, cfg.data.segments, cfg.data.rtg_includes_current_reward) == \
        ("uniform", "left_padded", True)


def test_unknown_key_did_you_mean():
    with pytest.raises(ConfigError) as err:
        validate_trial({"data": {"source": "x"}, "model": {"lora": {"rnak": 3}}})
    msg = str(err.value)
    assert "model.lora.rnak" in msg and "did you mean 'rank'" in msg


@pytest.mark.parametrize("section,key,value", [
    ("data", "sample_ratio", 0.0), ("data", "sample_ratio", 1.5), ("data", "context_length", 0),
    ("train", "lr", -1e-4), ("train", "steps", 0), ("eval", "episodes", 0),
])
def test_out_of_range_names_key(section, key, value):
    raw = {"data": {"source": "x"}}
    raw.setdefault(section, {})[key] = value
    with pytest.raises(ConfigError, match=f"{section}.{key}"):
        validate_trial(raw)


def test_lora_rank_zero_and_wrong_type():
    with pytest.raises(ConfigError, match="model.lora.rank"):
        validate_trial({"data": {"source": "x"}, "model": {"lora": {"rank": 0}}})
    with pytest.raises(ConfigError, match="train.batch_size"):
        validate_trial({"data": {"source": "x"}, "train": {"batch_size": "many"}})


def test_batch_must_split_over_workers():
    with pytest.raises(ConfigError, match="num_workers"):
        validate_trial({"data": {"source": "x"}, "train": {"batch_size": 63, "num_workers": 2}})


def test_launcher_in_trial_needs_one_worker():
    with pytest.raises(ConfigError, match=r"train\.launcher 'in_trial'.*num_workers 1 \(got 2\)"):
        validate_trial({"data": {"source": "x"}, "train": {"launcher": "in_trial", "num_workers": 2}})
    assert validate_trial({"data": {"source": "x"}}).train.resolved_launcher == "in_trial"  # auto, 1 worker
    assert not validate_trial({"data": {"source": "x"}, "train": {"num_workers": 2}}).train.in_trial
    assert not validate_trial({"data": {"source": "x"}, "train": {"launcher": "ray_train"}}).train.in_trial


def test_width_override_needs_random_init():
    with pytest.raises(ConfigError, match="n_embd"):
        validate_trial({"data": {"source": "x"}, "model": {"pretrained": True, "n_embd": 64}})


def test_malformed_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="malformed YAML"):
        load_sweep(write(tmp_path, "name: [unclosed\n"))
    with pytest.raises(ConfigError, match="not found"):
        load_sweep(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="mapping"):
        load_sweep(write(tmp_path, "- a\n- b\n"))


def test_error_in_variant_names_variant(tmp_path):
    data = dict(BASE, variants={"bad": {"model": {"finetune": "sideways"}}})
    with pytest.raises(ConfigError, match=r"variants\.bad\.model\.finetune"):
        load_sweep(write(tmp_path, data))


def test_trials_are_variants_x_grid_x_seeds(tmp_path):
    data = {"name": "t", "seeds": [0, 1, 2],
            "base": {"data": {"source": "x", "sample_ratio": {"grid": [0.1, 0.5]}},
                     "train": {"lr": {"loguniform": [1e-5, 1e-3]}}},
            "variants": {"lamo": {"model": {"finetune": "lora"}}, "dt": {"model.finetune": "full"}}}
    sweep = load_sweep(write(tmp_path, data))
    rows = expand_trials(sweep)
    assert len(rows) == 2 * 2 * 3
    assert {(r["variant"], r["params"]["data.sample_ratio"], r["seed"]) for r in rows} == {
        (v, r, s) for v in ("lamo", "dt") for r in (0.1, 0.5) for s in (0, 1, 2)}
    dt = next(r for r in rows if r["variant"] == "dt")["config"]
    assert dt.model.finetune == "full"
    assert rows[0]["params"]["train.lr"] == {"loguniform": [1e-5, 1e-3]}


TASKS = {"name": "t", "seeds": [0, 1],
         "base": {"data": {"source": "x", "context_length": 20}, "task": {"grid": ["hop", "pen"]}},
         "tasks": {"hop": {"data": {"source": "hop-data"}, "eval": {"target_returns": [3600]}},
                   "pen": {"data": {"source": "pen-data", "context_length": 5}, "eval": {"target_returns": [12000]}}},
         "variants": {"odt": {}, "short": {"data": {"context_length": 1}}}}


def test_tasks_cross_variants_and_merge_between_base_and_variant(tmp_path):
    rows = expand_trials(load_sweep(write(tmp_path, TASKS)))
    assert len(rows) == 2 * 2 * 2
    got = {(r["variant"], r["params"]["task"], r["seed"]): r["config"] for r in rows}
    pen = got[("odt", "pen", 1)]
    assert (pen.task, pen.data.source, pen.data.context_length, pen.eval.target_returns) == ("pen", "pen-data", 5, [12000])
    hop = got[("odt", "hop", 0)]
    assert (hop.data.source, hop.data.context_length, hop.eval.target_returns) == ("hop-data", 20, [3600])
    assert got[("short", "pen", 0)].data.context_length == 1        # the variant wins over the task
    one = expand_trials(load_sweep(write(tmp_path, TASKS), ["task=pen"]))   # --set picks one task
    assert {r["config"].task for r in one} == {"pen"} and len(one) == 4


@pytest.mark.parametrize("change, match", [
    (lambda d: d["base"].update(task={"grid": ["hop", "pem"]}), r"base\.task: unknown task 'pem'; did you mean 'pen'"),
    (lambda d: d["base"].pop("task"), r"base\.task does not choose one"),
    (lambda d: d.pop("tasks"), r"no tasks: section"),
    (lambda d: d["tasks"]["pen"].update(eval={"episods": 3}), r"tasks\.pen\.eval\.episods: unknown key.*'episodes'"),
    (lambda d: d["tasks"]["hop"].update(eval={"episodes": 0}), r"tasks\.hop\.eval\.episodes"),
    (lambda d: d["base"]["data"].update(sample_ratio={"grid": [0.1, 1.0]}) or d["tasks"]["hop"]["data"].update(
        sample_ratio=0.5), r"tasks\.hop sets data\.sample_ratio, which base sweeps"),
    (lambda d: d["tasks"]["hop"].update(train={"lr": {"grid": [1e-4]}}), r"tasks\.hop: search domains belong in base"),
])
def test_bad_tasks_name_the_key(tmp_path, change, match):
    import copy
    data = copy.deepcopy(TASKS)
    change(data)
    with pytest.raises(ConfigError, match=match):
        load_sweep(write(tmp_path, data))


def test_grid_value_out_of_range_is_caught_before_compute(tmp_path):
    data = {"name": "t", "base": {"data": {"source": "x", "sample_ratio": {"grid": [0.5, 2.0]}}}}
    with pytest.raises(ConfigError, match="data.sample_ratio"):
        load_sweep(write(tmp_path, data))


def test_bad_domain_bounds(tmp_path):
    data = {"name": "t", "base": {"data": {"source": "x"}, "train": {"lr": {"loguniform": [0, 1e-3]}}}}
    with pytest.raises(ConfigError, match="loguniform"):
        load_sweep(write(tmp_path, data))


def test_overrides_apply_to_base_and_sweep(tmp_path):
    sweep = load_sweep(write(tmp_path, BASE), ["train.steps=7", "scheduler.grace_period=5", "seeds=[3, 4]", "model.embedding=linear"])
    assert sweep.seeds == [3, 4]
    cfg = expand_trials(sweep)[0]["config"]
    assert cfg.train.steps == 7 and cfg.model.embedding == "linear"
    with pytest.raises(ConfigError, match="key.path=value"):
        parse_override("train.steps")


def test_duplicate_seeds_rejected(tmp_path):
    with pytest.raises(ConfigError, match="seeds"):
        load_sweep(write(tmp_path, dict(BASE, seeds=[1, 1])))


def test_deep_merge_keeps_siblings():
    merged = deep_merge({"model": {"lora": {"rank": 16, "alpha": 32}}}, {"model": {"lora": {"rank": 8}}})
    assert merged == {"model": {"lora": {"rank": 8, "alpha": 32}}}


def test_resolve_unknown_variant(tmp_path):
    sweep = load_sweep(write(tmp_path, BASE))
    with pytest.raises(ConfigError, match="unknown variant"):
        resolve_trial(sweep, "nope", 0, {})


@pytest.mark.parametrize("path", sorted((REPO / "sweeps").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_sweeps_validate(path):
    assert expand_trials(load_sweep(path))


PAPER_SCALE = ("kitchen.yaml", "mujoco.yaml", "atari.yaml")


@pytest.mark.parametrize("name", PAPER_SCALE)
def test_paper_scale_comparisons_train_every_seed_to_the_end(name):
    """A method comparison scores every seed of every arm (docs/references/lamo.md "Evaluation"): FIFO, no ASHA."""
    assert load_sweep(REPO / "sweeps" / name).scheduler.type == "fifo"


@pytest.mark.parametrize("name", ["kitchen.yaml", "mujoco.yaml"])
def test_paper_scale_d4rl_sweeps_use_lamos_method_and_dt_baseline(name):
    """docs/references/lamo.md "LoRA" / "Baseline DT": LaMo = GPT-2 + separate Q/K/V LoRA r16; DT = LaMo's 3 x 128 x 1 ReLU GPT-2
    with AdamW's default eps."""
    rows = expand_trials(load_sweep(REPO / "sweeps" / name))
    for row in rows:
        cfg = row["config"]
        if row["variant"].startswith("dt"):
            m = cfg.model
            assert (m.pretrained, m.n_layer, m.n_embd, m.n_head, m.activation, m.finetune, m.embedding) == \
                (False, 3, 128, 1, "relu", "full", "linear"), row["variant"]
            assert cfg.train.adam_eps == 1e-8 and not m.position_embedding
        elif cfg.model.finetune == "lora":
            assert cfg.model.pretrained and cfg.model.backbone == "gpt2"
            assert (cfg.model.lora.rank, cfg.model.lora.alpha, cfg.model.lora.fused_qkv, cfg.model.lora.bias) == \
                (16, 32.0, False, "lora_only")
            assert cfg.train.adam_eps == 1e-6


@pytest.mark.parametrize("name", ["atari.yaml", "atari_local.yaml"])
def test_atari_sweeps_follow_lamos_atari_code(name):
    """docs/references/lamo.md "Atari": fused-c_attn LoRA r = alpha = 32 without bias, wpe added, length-weighted
    down-sampling, full-window segments, return-to-go after the current reward."""
    for row in expand_trials(load_sweep(REPO / "sweeps" / name)):
        cfg = row["config"]
        assert cfg.model.position_embedding
        assert (cfg.data.subsample, cfg.data.segments, cfg.data.rtg_includes_current_reward) == \
            ("length_weighted", "full_window", False)
        if cfg.model.finetune == "lora":
            assert (cfg.model.lora.rank, cfg.model.lora.alpha, cfg.model.lora.fused_qkv, cfg.model.lora.bias) == \
                (32, 32.0, True, "none")


def test_grace_period_longer_than_training_is_an_error(tmp_path):
    data = dict(BASE, scheduler={"type": "asha", "grace_period": 500})
    data["base"] = {"data": {"source": "x"}, "train": {"steps": 100}}
    with pytest.raises(ConfigError, match="scheduler.grace_period"):
        load_sweep(write(tmp_path, data))
