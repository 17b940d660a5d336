"""Bad input for the ``online:`` section (issue 18): every mistake is a `ConfigError` naming the key
(also through a sweep file, naming the variant that made it), the step count of an online trial,
and the preflight check that the data can be collected online at all."""

from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from lamo_ray.config import ConfigError, load_sweep, validate_trial
from lamo_ray.preflight import check_online

ONLINE = {"method": "td3_odt", "iterations": 3, "target_return": 100.0}


def trial(online=None, model=None, train=None, eval=None):
    raw = {"data": {"source": "lamo/hopper/medium-v0"}}
    for key, value in (("online", online), ("model", model), ("train", train), ("eval", eval)):
        if value is not None:
            raw[key] = value
    return raw


def rejected(raw) -> str:
    with pytest.raises(ConfigError) as err:
        validate_trial(raw)
    return str(err.value)


# --------------------------------------------------------------------------- validate_trial


def test_a_valid_online_section_passes_and_counts_its_steps():
    """The control for the cases below, and ``total_steps``: the offline steps plus one per online actor update."""
    cfg = validate_trial(trial({**ONLINE, "updates_per_iteration": 7}, train={"steps": 100}))
    assert cfg.online.method == "td3_odt" and cfg.online.iterations == 3
    assert cfg.online_steps == 21 and cfg.total_steps == 100 + 3 * 7
    odt = validate_trial(trial({**ONLINE, "method": "odt"}, model={"action_head": "tanh_gaussian"}))
    assert odt.online.rl_coeff == 0.0 and odt.online.sup_coeff == 1.0  # odt's default: no critic term
    assert cfg.online.rl_coeff == 0.1                                  # the paper's for td3_odt / td3
    assert validate_trial(trial({**ONLINE, "method": "td3"})).online.sup_coeff == 0.0


def test_offline_trials_are_unchanged():
    cfg = validate_trial(trial(train={"steps": 123}))
    assert cfg.online is None and cfg.online_steps == 0 and cfg.total_steps == cfg.train.steps == 123


@pytest.mark.parametrize("key,value", [("rl_coeff", -0.1), ("replay_size", 0), ("iterations", 0),
                                       ("transitions_per_iteration", 0), ("updates_per_iteration", 0)])
def test_out_of_range_values_name_the_key(key, value):
    msg = rejected(trial({**ONLINE, key: value}))
    assert f"online.{key}" in msg and repr(value) in msg


def test_missing_required_keys_are_named():
    msg = rejected(trial({"method": "td3_odt", "iterations": 2}))
    assert "online.target_return" in msg and "Field required" in msg


def test_odt_needs_the_stochastic_head():
    msg = rejected(trial({**ONLINE, "method": "odt"}))
    assert "model.action_head" in msg and "tanh_gaussian" in msg and "'odt'" in msg


@pytest.mark.parametrize("method", ["td3_odt", "td3"])
def test_critic_methods_need_the_deterministic_head(method):
    msg = rejected(trial({**ONLINE, "method": method}, model={"action_head": "tanh_gaussian"}))
    assert "model.action_head" in msg and "deterministic" in msg and repr(method) in msg


@pytest.mark.parametrize("method, head", [("odt", "tanh_gaussian"), ("td3_odt", "deterministic"),
                                          ("td3", "deterministic")])
def test_a_dumped_online_config_validates_again_as_itself(method, head):
    """A checkpoint stores its trial's whole config (config.yaml, `model_dump`) and a resumed trial or
    `python -m lamo_ray.evaluate` validates it again. An ODT config's dump was refused (rl_coeff 0.1 read back
    as explicit), so a restarted ODT trial skipped its checkpoints and started over: found by --rehearse.
    odt's resolved 0 is the authors' ODT (actor_rl_coeff < 1e-10, main.py:42 of
    KaiYan289/RL_as_Vitamin_for_Online_Decision_Transformers; get_args.py:69's 0.1 for the TD3 arms)."""
    cfg = validate_trial(trial({**ONLINE, "method": method}, model={"action_head": head}))
    again = validate_trial(cfg.model_dump())
    assert again == cfg and again.online.rl_coeff == (0.0 if method == "odt" else 0.1)


def test_odt_with_an_explicit_rl_coeff_is_rejected():
    msg = rejected(trial({**ONLINE, "method": "odt", "rl_coeff": 0.2}, model={"action_head": "tanh_gaussian"}))
    assert "online.rl_coeff" in msg and "0.2" in msg and "td3_odt" in msg
    # an explicit 0 says the same as ODT's default: accepted
    assert validate_trial(trial({**ONLINE, "method": "odt", "rl_coeff": 0.0},
                                model={"action_head": "tanh_gaussian"})).online.rl_coeff == 0.0


@pytest.mark.parametrize("method", ["td3_odt", "td3"])
def test_critic_methods_need_a_positive_rl_coeff(method):
    msg = rejected(trial({**ONLINE, "method": method, "rl_coeff": 0}))
    assert "online.rl_coeff" in msg and repr(method) in msg


def test_online_needs_one_training_worker():
    msg = rejected(trial(ONLINE, train={"num_workers": 2}))
    assert "train.num_workers" in msg and "got 2" in msg
    assert validate_trial(trial(train={"num_workers": 2})).train.num_workers == 2  # offline DDP is fine


def test_unknown_key_inside_online_gets_a_did_you_mean():
    msg = rejected(trial({**ONLINE, "replay_sise": 10}))
    assert "online.replay_sise" in msg and "unknown key 'replay_sise'" in msg
    assert "did you mean 'replay_size'" in msg  # as model.lora.rnak gets 'rank'


def test_unknown_method_lists_the_methods():
    msg = rejected(trial({**ONLINE, "method": "sac"}))
    assert "online.method" in msg and "'sac'" in msg and "td3_odt" in msg


# --------------------------------------------------------------------------- through a sweep file


def sweep_file(tmp_path, variants, base_online=ONLINE, base_model=None):
    base = {"data": {"source": "lamo/hopper/medium-v0"}, "online": base_online}
    if base_model is not None:
        base["model"] = base_model
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump({"name": "online", "base": base, "variants": variants}))
    return path


def sweep_rejected(path) -> str:
    with pytest.raises(ConfigError) as err:
        load_sweep(path)
    return str(err.value)


def test_sweep_names_the_variant_that_sets_a_bad_online_value(tmp_path):
    path = sweep_file(tmp_path, {"td3_odt": {}, "greedy": {"online.rl_coeff": -1}})
    msg = sweep_rejected(path)
    assert str(path) in msg and "variants.greedy.online.rl_coeff" in msg
    assert ": base" not in msg  # not blamed on base


def test_sweep_names_the_variant_whose_method_does_not_fit_the_head(tmp_path):
    """A cross-section rule (online.method vs model.action_head) broken by a variant's own override:
    the message names that variant, as for a single bad value."""
    path = sweep_file(tmp_path, {"td3_odt": {}, "odt": {"online": {"method": "odt"}}})
    msg = sweep_rejected(path)
    assert "model.action_head" in msg and "variants.odt" in msg


def test_sweep_total_steps_include_the_online_updates(tmp_path):
    path = sweep_file(tmp_path, {"short": {"online.iterations": 2}, "long": {"online.iterations": 4}},
                      base_online={**ONLINE, "updates_per_iteration": 5})
    sweep = load_sweep(path)
    by_variant = {r["variant"]: r["config"].total_steps for r in sweep.trials}
    steps = sweep.trials[0]["config"].train.steps
    assert by_variant == {"short": steps + 10, "long": steps + 20}


# --------------------------------------------------------------------------- preflight: check_online


def configs(online=ONLINE, eval=None, model=None):
    return [validate_trial(trial(online, eval=eval, model=model))]


SOURCE = "lamo/hopper/medium-v0"


def test_check_online_rejects_discrete_actions():
    ds = SimpleNamespace(env_id="ALE/Breakout-v5", discrete_actions=True)
    (check,) = check_online(configs(), {SOURCE: ds})
    assert check.kind == "online" and not check.ok and not check.obtainable
    assert "online.method" in check.detail and "discrete" in check.detail and SOURCE in check.detail


def test_check_online_needs_an_environment():
    ds = SimpleNamespace(env_id=None, discrete_actions=False)
    (check,) = check_online(configs(), {SOURCE: ds})
    assert not check.ok and "eval.env_id" in check.detail
    assert "environment" in check.detail and "simulator" in check.detail
    # eval.env_id supplies the simulator the data does not name
    (named,) = check_online(configs(eval={"env_id": "Hopper-v5"}), {SOURCE: ds})
    assert named.ok and "Hopper-v5" in named.detail


def test_check_online_passes_continuous_data_with_an_env_and_skips_offline_trials():
    ds = SimpleNamespace(env_id="Hopper-v5", discrete_actions=False)
    (check,) = check_online(configs(), {SOURCE: ds})
    assert check.ok and "Hopper-v5" in check.detail
    assert check_online([validate_trial(trial())], {SOURCE: SimpleNamespace(env_id=None, discrete_actions=True)}) == []
    # one check per (data, method), however many seeds or grid points share it
    assert len(check_online(configs() * 3, {SOURCE: ds})) == 1



@pytest.mark.parametrize("path", sorted((Path(__file__).resolve().parents[1] / "sweeps").glob("*.yaml")),
                         ids=lambda p: p.name)
def test_every_shipped_sweep_s_trial_configs_survive_their_checkpoint_round_trip(path):
    """What a checkpoint stores (the whole config, dumped) validates back to the same config, for every
    trial of every sweep file shipped: a derived default that reads back as an explicit value (as odt's
    rl_coeff did) would make a resumed trial or `lamo_ray.evaluate` refuse the checkpoint."""
    from lamo_ray.config import load_sweep

    sweep = load_sweep(path, [])
    for row in sweep.trials:
        assert validate_trial(row["config"].model_dump()) == row["config"], (row["variant"], row["params"])
