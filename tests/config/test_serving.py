"""``serve:`` and ``recommenders:`` in loopline.yaml: defaults, references, errors with paths."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest

from loopline.config import config_from_dict
from loopline.errors import ConfigError

DIGEST = hashlib.sha256(b"secret-key").hexdigest()


def serve(**section: Any) -> dict[str, Any]:
    return {"serve": {"models": [{"name": "churn"}], **section}}


def test_defaults_keep_the_server_local_closed_and_logging() -> None:
    cfg = config_from_dict(serve(), env={})
    assert (cfg.serve.host, cfg.serve.port, cfg.serve.workers) == ("127.0.0.1", 8000, 1)
    assert cfg.serve.models[0].alias == "champion"
    assert cfg.serve.cors.allow_origins == []
    assert not cfg.serve.auth.enabled
    assert cfg.serve.request_log.enabled
    assert cfg.serve.request_log.sample_rate == 1.0


def test_api_key_digest_is_normalised_and_enables_auth() -> None:
    keys = [{"name": "ci", "sha256": DIGEST.upper(), "rate_limit": 20}]
    cfg = config_from_dict(serve(auth={"keys": keys}), env={})
    assert cfg.serve.auth.enabled
    assert cfg.serve.auth.keys[0].sha256 == DIGEST


def test_a_plain_key_instead_of_its_digest_names_the_yaml_path() -> None:
    with pytest.raises(ConfigError, match=r"serve\.auth\.keys\[0\]\.sha256: .*SHA-256"):
        config_from_dict(serve(auth={"keys": [{"name": "ci", "sha256": "secret-key"}]}), env={})


def test_experiment_on_a_model_that_is_not_served_is_rejected() -> None:
    experiments = {"x": {"model": "housing", "variants": [{"name": "a", "alias": "champion"}]}}
    with pytest.raises(ConfigError, match="names model 'housing', which is not served"):
        config_from_dict(serve(experiments=experiments), env={})


def test_variant_needs_exactly_one_target() -> None:
    variants = [{"name": "a", "alias": "champion", "version": "3"}]
    with pytest.raises(ConfigError, match="exactly one of 'version', 'alias' or 'strategy'"):
        config_from_dict(serve(experiments={"x": {"model": "churn", "variants": variants}}), env={})


def test_recommender_experiments_take_strategies() -> None:
    section = serve(
        recommender={"model": "movies"},
        experiments={
            "ranking": {
                "variants": [{"name": "a", "strategy": "als"}, {"name": "b", "strategy": "blend"}],
                "outcome": "click",
            }
        },
    )
    cfg = config_from_dict(section, env={})
    assert [v.strategy for v in cfg.serve.experiments["ranking"].variants] == ["als", "blend"]
    with pytest.raises(ConfigError, match="needs a 'strategy'"):
        config_from_dict(
            serve(
                recommender={"model": "movies"},
                experiments={"r": {"variants": [{"name": "a", "alias": "champion"}]}},
            ),
            env={},
        )


def test_recommender_state_url_comes_from_the_environment() -> None:
    env = {"LOOPLINE_RECOMMENDER_STATE_URL": "redis://127.0.0.1:6379/3"}
    cfg = config_from_dict(serve(recommender={"model": "movies"}), env=env)
    assert cfg.serve.recommender is not None
    assert cfg.serve.recommender.state_url == "redis://127.0.0.1:6379/3"


def test_recommender_jobs_validate_their_split() -> None:
    cfg = config_from_dict({"recommenders": {"movies": {"table": "movielens"}}}, env={})
    assert cfg.recommenders["movies"].test_fraction == 0.2
    with pytest.raises(ConfigError, match=r"recommenders\.movies\.test_fraction"):
        config_from_dict(
            {"recommenders": {"movies": {"table": "movielens", "test_fraction": 1.5}}}, env={}
        )
